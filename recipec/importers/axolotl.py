"""An axolotl config (the YAML `axolotl train` reads): model, adapter, data, and the
`TrainingArguments` axolotl builds from it.

The training settings go through :func:`recipec.importers.hf.training_args` under axolotl's
spellings (`micro_batch_size`, `num_epochs`, `optimizer`, `lr_scheduler`, ...) with axolotl's
own defaults. What axolotl decides by itself before it builds the arguments is mapped here:

* the warmup (`_configure_warmup_and_logging`): `warmup_steps`, else `int(warmup_ratio *
  total steps)` (rounded down), else `min(int(0.03 * total steps), 100)`; one step becomes two;
* its own schedulers (`SchedulerMixin.create_scheduler`): cosine with `cosine_min_lr_ratio`
  (the same cosine, to that floor), with `cosine_constant_lr_ratio` too (the floor held from
  that share of the run on), `lr_quadratic_warmup`, `one_cycle` and `rex`;
* precision (`bf16: auto`, `tf32: auto`: on where the GPU has them; the weights are loaded in
  the training dtype), saving (every epoch, 4 kept, unless told otherwise), evaluation
  (`evals_per_epoch` and `saves_per_epoch` become shares of the run), trackers;
* the datasets: `type: chat_template`, `completion`, `alpaca`, the DPO types, a
  `pretraining_dataset`, `test_datasets`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

from ..runtime.formats import prompt_fields
from ..schema.preference import EXTRA_LOSSES
from . import hf
from .core import Draft, Legacy, OldValue, Removed, Renamed, epochs_cadence, num
from .regex_globs import NoGlob, regex_globs

VERSION = "axolotl 0.18.0"
"""The release whose schema (src/axolotl/utils/schemas) and defaults are applied; it builds
its TrainingArguments with transformers 5.14."""

_TOP = """
base_model base_model_config cls_model_config tokenizer_config tokenizer_use_fast
tokenizer_legacy tokenizer_use_mistral_common tokenizer_type processor_type processor_kwargs
tokenizer_save_jinja_files trust_remote_code experimental_skip_move_to_device use_kernels
model_quantization_config model_quantization_config_kwargs use_onebitllms output_dir
hub_model_id hub_strategy hub_revision save_safetensors load_in_8bit load_in_4bit adapter
lora_model_dir lora_r lora_alpha lora_fan_in_fan_out lora_target_modules lora_target_parameters
lora_target_linear lora_modules_to_save lora_rank_pattern lora_alpha_pattern lora_dropout
peft_layers_to_transform peft_layers_pattern peft peft_use_dora peft_use_rslora
peft_layer_replication peft_init_lora_weights peft_trainable_token_indices
peft_ensure_weight_tying peft_autocast_adapter_dtype qlora_sharded_model_loading lora_on_cpu
gptq bnb_config_kwargs loraplus_lr_ratio loraplus_lr_embedding merge_lora merge_method relora
relora_prune_ratio relora_prune_method relora_cpu_offload jagged_restart_steps
jagged_restart_warmup_steps jagged_restart_anneal_steps gradient_accumulation_steps
micro_batch_size batch_size eval_batch_size auto_find_batch_size train_on_inputs group_by_length
learning_rate embedding_lr embedding_lr_scale weight_decay optimizer optim_args
optim_target_modules torchdistx_path lr_scheduler lr_scheduler_kwargs lr_quadratic_warmup
cosine_min_lr_ratio cosine_constant_lr_ratio lr_div_factor lr_groups adam_epsilon adam_epsilon2
adam_beta1 adam_beta2 adam_beta3 dion_lr dion_momentum dion_rank_fraction dion_rank_multiple_of
qgalore_rank qgalore_update_proj_gap qgalore_scale qgalore_proj_type qgalore_proj_quant
qgalore_proj_bits qgalore_proj_group_size qgalore_cos_threshold qgalore_gamma_proj
qgalore_queue_size max_grad_norm num_epochs use_wandb wandb_name wandb_run_id wandb_mode
wandb_project wandb_entity wandb_watch wandb_log_model use_mlflow mlflow_tracking_uri
mlflow_experiment_name mlflow_run_name hf_mlflow_log_artifacts use_comet comet_api_key
comet_workspace comet_project_name comet_experiment_key comet_mode comet_online
comet_experiment_config use_trackio trackio_project_name trackio_run_name trackio_space_id
use_otel_metrics otel_metrics_host otel_metrics_port lisa_n_layers lisa_step_interval
lisa_layers_attribute gradio_title gradio_share gradio_server_name gradio_server_port
gradio_max_new_tokens gradio_temperature use_ray ray_run_name ray_num_workers
resources_per_worker image_size image_resize_algorithm role_boundaries overrides_of_model_config
model_config overrides_of_model_kwargs model_kwargs type_of_model model_type revision_of_model
model_revision max_packed_sequence_len rope_scaling noisy_embedding_alpha dpo_beta
evaluation_strategy eval_table_size eval_max_new_tokens dpo_use_logits_to_keep
dpo_generate_during_eval dpo_norm_loss rpo_alpha s2_attention flash_attn_rms_norm strict
resume_from_checkpoint auto_resume_from_checkpoints resize_token_embeddings_to_32x
mean_resizing_embeddings shrink_embeddings embeddings_skip_upcast reinit_weights trainer_cls rl
trl vllm ebft qat quantization reward_model dynamic_checkpoint process_reward_model
center_rewards_coefficient num_labels dpo_use_weighting dpo_label_smoothing
precompute_ref_log_probs dpo_use_liger_kernel dpo_padding_free dpo_loss_type dpo_loss_weights
datasets test_datasets shuffle_merged_datasets shuffle_before_merging_datasets
dataset_prepared_path dataset_shard_num dataset_shard_idx skip_prepare_dataset
num_dataset_shards_to_save pretraining_dataset dataset_processes dataset_num_proc
dataset_exact_deduplication dataset_keep_in_memory dataloader_pin_memory dataloader_num_workers
dataloader_prefetch_factor dataloader_drop_last accelerator_config remove_unused_columns
push_dataset_to_hub hf_use_auth_token device device_map world_size local_rank ddp seed
ddp_timeout ddp_bucket_cap_mb ddp_broadcast_buffers ddp_find_unused_parameters do_causal_lm_eval
eval_causal_lm_metrics do_bench_eval bench_dataset bench_split metric_for_best_model
greater_is_better loss_watchdog_threshold loss_watchdog_patience gc_steps
torch_empty_cache_steps gc_collect_steps bf16 fp16 fp8 fp8_enable_fsdp_float8_all_gather
bfloat16 float16 tf32 float32 gradient_checkpointing gradient_checkpointing_kwargs
selective_checkpointing activation_offloading layer_offloading freeze_mm_modules
unfrozen_parameters sequence_len excess_length_strategy eval_sequence_len min_sample_len
max_prompt_len sample_packing sample_packing_group_size sample_packing_bin_size
sample_packing_sequentially sample_packing_mp_start_method eval_sample_packing
pad_to_sequence_len pad_to_multiple_of curriculum_sampling multipack_real_batches
batch_flattening use_pose pose_split_on_token_ids pose_max_context_len pose_num_chunks
pretrain_multipack_buffer_size pretrain_multipack_attn pretraining_sample_concatenation
streaming streaming_multipack_buffer_size xformers_attention sdp_attention flex_attention
flex_attn_compile_kwargs flash_attention flash_attn_cross_entropy flash_attn_fuse_mlp
flash_optimum sage_attention eager_attention attn_implementation gemma4_hybrid_attn_impl
large_head_attention flash_attn_d512 sdpa_varlen fused_attn_kernel experts_implementation
quantize_moe_experts scaling_softmax scaling_softmax_factor scaling_softmax_bias lora_mlp_kernel
lora_qkv_kernel lora_o_kernel lora_embedding_kernel chunked_cross_entropy
chunked_cross_entropy_num_chunks use_eaft eaft_alpha eaft_k tiled_mlp tiled_mlp_num_shards
tiled_mlp_use_original_mlp llama4_linearized_experts deepspeed deepcompile fsdp fsdp_config
fsdp_version fp32_norms fp32_norm_classes fsdp_final_state_dict_type val_set_size dp_shard_size
dp_replicate_size sequence_parallel_degree context_parallel_size heads_k_stride ring_attn_func
tensor_parallel_size special_tokens tokens added_tokens_overrides torch_compile
torch_compile_backend torch_compile_mode torch_compile_options max_steps warmup_steps
warmup_ratio eval_steps evals_per_epoch eval_strategy save_steps saves_per_epoch save_strategy
save_total_limit save_first_step logging_steps early_stopping_patience load_best_model_at_end
save_only_model use_tensorboard profiler_steps profiler_steps_start include_tokens_per_second
include_tkps neftune_noise_alpha orpo_alpha simpo_gamma cpo_alpha kto_desirable_weight
kto_undesirable_weight rl_beta max_memory gpu_memory_limit low_cpu_mem_usage chat_template
chat_template_jinja chat_template_kwargs eot_tokens default_system_message fix_untrained_tokens
is_preprocess preprocess_iterable total_num_tokens total_supervised_tokens
sample_packing_eff_est axolotl_config_path is_falcon_derived_model is_llama_derived_model
is_mistral_derived_model is_qwen_derived_model plugins generate_samples num_generation_samples
generation_max_new_tokens generation_temperature generation_top_p generation_top_k
generation_prompt_ratio generation_do_sample
"""
"""The fields of `AxolotlInputConfig` and the models it inherits (schemas/config.py, model.py,
peft.py, training.py, integrations.py, multimodal.py, deprecated.py), aliases included."""

_FREE = """
processor_kwargs model_quantization_config_kwargs lora_rank_pattern lora_alpha_pattern
peft_trainable_token_indices bnb_config_kwargs optim_args lr_scheduler_kwargs
comet_experiment_config resources_per_worker overrides_of_model_config model_config
overrides_of_model_kwargs model_kwargs rope_scaling trl vllm ebft qat quantization
dynamic_checkpoint accelerator_config device device_map gradient_checkpointing_kwargs
selective_checkpointing flex_attn_compile_kwargs deepspeed added_tokens_overrides
torch_compile_options max_memory chat_template_kwargs
"""
"""Fields that are tables (dicts, or nested models read as a whole)."""

_PLUGINS = """
diffusion mora hatchery lm_eval_tasks lm_eval_batch_size lm_eval_post_train lm_eval_model
nemo_gym_enabled nemo_gym_dir nemo_gym_auto_clone nemo_gym_config_paths nemo_gym_head_port
nemo_gym_server_timeout nemo_gym_verify_timeout nemo_gym_run_timeout nemo_gym_datasets
nemo_gym_auto_start nemo_gym_model_name nemo_gym_multi_turn nemo_gym_max_turns use_swanlab
swanlab_project swanlab_experiment_name swanlab_description swanlab_mode swanlab_workspace
swanlab_api_key swanlab_log_model swanlab_web_host swanlab_api_host swanlab_lark_webhook_url
swanlab_lark_secret swanlab_log_completions swanlab_completion_log_interval
swanlab_completion_max_buffer expert_backend nonexpert_quantization moe_grouped_backend
moe_dequant_chunk_size moe_bnb_fast use_scattermoe use_sonicmoe use_dsv4_kernels
use_glm_dsa_kernels dsv4_fp8_nonexpert_mode dsv4_fp8_lora_kernel dsv4_shared_mlp_lora_kernel
dsv4_bf16_all dsv4_fp4_grouped_mode gemma4_fp8_nonexpert gemma4_nf4_nonexpert nvfp4_merge_aware
nvfp4_merge_aware_start_step kd_trainer kd_ce_alpha kd_alpha kd_temperature kd_beta
kd_normalize_topk kd_online_server_base_url kd_online_topk kd_online_server kd_online_timeout
kd_temperature_min dense_mixer expert_parallel_size expert_parallel_backend
expert_parallel_num_nvl_bytes expert_parallel_num_rdma_bytes expert_parallel_token_capacity
expert_parallel_fallback_on_unsupported spectrum_top_fraction spectrum_model_name llmcompressor
liger_rope liger_rms_norm liger_rms_norm_gated liger_layer_norm liger_swiglu
liger_glu_activation liger_cross_entropy liger_fused_linear_cross_entropy
liger_use_token_scaling grokfast_alpha grokfast_lamb cut_cross_entropy
"""
"""The arguments of the plugins axolotl ships (src/axolotl/integrations/*/args.py), accepted
when `plugins` names them."""

_DATASET = """
path split type input_transform shards shards_idx preprocess_shards conversation chat_template
chat_template_jinja data_files input_format name ds_type field field_human field_model
field_messages field_tools field_thinking template_thinking_key message_field_role
message_field_content message_property_mappings message_field_training
message_field_training_detail split_thinking logprobs_field temperature roles_to_train
train_on_eos train_on_eot roles drop_system_message trust_remote_code revision field_chosen
field_rejected step_separator max_completion_length train_on_last_step_only length
sequence_length min_input_id max_input_id seed
"""
"""The fields of a `datasets` entry: SFTDataset, DPODataset, KTODataset,
StepwiseSupervisedDataset and SyntheticDataset (schemas/datasets.py)."""

_PRETRAINING = "name path split text_column type trust_remote_code data_files skip"
"""PretrainingDataset's fields (a `pretraining_dataset` entry may also be an SFTDataset)."""

_FSDP = """
fsdp_version version activation_checkpointing offload_params sync_module_states
cpu_ram_efficient_loading cpu_offload_pin_memory use_orig_params state_dict_type
final_state_dict_type auto_wrap_policy transformer_layer_cls_to_wrap min_num_params
reshard_after_forward mixed_precision_policy
"""

_FSDP_IGNORED = "sharding_strategy limit_all_gathers backward_prefetch forward_prefetch"
"""FSDP-1 keys of older configs: FSDPConfig has no such field and drops them."""

_SPECIAL_TOKENS = "bos_token eos_token pad_token unk_token additional_special_tokens"


def _known() -> tuple[str, ...]:
    out = _TOP.split() + _PLUGINS.split()
    out += [f"{k}.*" for k in _FREE.split()]
    out += ["diffusion.*", "mora.*", "hatchery.*", "nemo_gym_datasets[*].*", "llmcompressor.*"]
    out += ["lr_groups[*].*", "role_boundaries[*].*", "peft.loftq_config.loftq_bits"]
    out += [f"special_tokens.{k}" for k in _SPECIAL_TOKENS.split()]
    for k in _FSDP.split() + _FSDP_IGNORED.split():
        out += [f"fsdp_config.{k}", f"fsdp_config.fsdp_{k}"]
    for table in ("datasets", "test_datasets"):
        out += [f"{table}[*].{k}" for k in _DATASET.split()]
        out += [f"{table}[*].{k}.*" for k in ("type", "message_property_mappings", "roles")]
    out += [f"pretraining_dataset[*].{k}" for k in dict.fromkeys(_PRETRAINING.split() + _DATASET.split())]
    out += [f"pretraining_dataset[*].{k}.*" for k in ("type", "message_property_mappings", "roles")]
    return tuple(dict.fromkeys(out))


KNOWN = _known()
MARKERS = (
    "base_model",
    "micro_batch_size",
    "num_epochs",
    "sequence_len",
    "sample_packing",
    "lora_target_linear",
    "val_set_size",
    "adapter",
    "pretraining_dataset",
)

LEGACY_ATTENTION = {
    "xformers_attention": "xformers",
    "sage_attention": "sage",
    "flex_attention": "flex_attention",
    "flash_attention": "flash_attention_2",
    "sdp_attention": "sdpa",
    "eager_attention": "eager",
}
"""The boolean attention flags axolotl 0.17.0 folded into `attn_implementation`, in the order
it picks one when several are set (schemas/enums.py LEGACY_ATTN_FLAG_TO_IMPL)."""

_TRL_029 = "axolotl 0.15.0 (TRL 0.29)"

LEGACY: dict[str, Legacy] = {
    # old names axolotl 0.18.0 still reads as the new ones (schemas/validation.py, config.py,
    # utils.py: the model validators that rename them)
    "evaluation_strategy": Renamed("eval_strategy", "axolotl 0.5.1"),
    "noisy_embedding_alpha": Renamed("neftune_noise_alpha", "axolotl 0.5.0", wins="error"),
    "dpo_beta": Renamed("rl_beta", "axolotl 0.5.0"),
    "sequence_parallel_degree": Renamed("context_parallel_size", "axolotl 0.12.0"),
    "pretrain_multipack_buffer_size": Renamed("streaming_multipack_buffer_size", "axolotl 0.13.0", wins="error"),
    "dataset_processes": Renamed("dataset_num_proc", "axolotl 0.13.0"),
    **{
        f"{table}[*].message_field_{name}": Renamed(f"{table}[*].message_property_mappings.{name}", "axolotl 0.7.0", wins="differ")
        for table in ("datasets", "test_datasets", "pretraining_dataset")
        for name in ("role", "content")
    },
    **{
        flag: Renamed("attn_implementation", "axolotl 0.17.0", wins="error", value=lambda v, impl=impl: impl if v else None)
        for flag, impl in LEGACY_ATTENTION.items()
    },
    # removed keys axolotl 0.18.0 refuses (a field validator that raises)
    "max_packed_sequence_len": Removed("axolotl 0.4.0", "`sample_packing: true`", refused="set"),
    "rope_scaling": Removed("axolotl 0.5.0", "`overrides_of_model_config.rope_scaling`", refused="set"),
    "dpo_use_logits_to_keep": Removed(_TRL_029, refused="not-null"),
    "dpo_generate_during_eval": Removed(_TRL_029, refused="not-null"),
    "dpo_norm_loss": Removed(_TRL_029, refused="not-null"),
    "rpo_alpha": Removed("axolotl 0.16.0 (TRL 0.29)", refused="not-null"),
    "s2_attention": Removed("axolotl 0.17.0", refused="set"),
    "flash_attn_rms_norm": Removed("axolotl 0.17.0", refused="set"),
    **{
        f"unsloth_{name}": Removed("axolotl 0.17.0", "`lora_mlp_kernel`, `lora_qkv_kernel` and `lora_o_kernel`", refused="set")
        for name in ("cross_entropy_loss", "lora_mlp", "lora_qkv", "lora_o", "rms_norm", "rope")
    },
    # removed keys that are no field of axolotl 0.18.0's schema: it drops them unread
    "debug": Removed("axolotl 0.5.0", "the `--debug` option of `axolotl preprocess`", refused=None),
    "gptq_groupsize": Removed("axolotl 0.3.0", "`gptq: true` (the quantization settings come from the model)", refused=None),
    "gptq_model_v1": Removed("axolotl 0.3.0", "`gptq: true` (the quantization settings come from the model)", refused=None),
    "gptq_disable_exllama": Removed("axolotl 0.5.0", refused=None),
    "base_model_ignore_patterns": Removed("axolotl 0.3.0", refused=None),
    "landmark_attention": Removed("axolotl 0.4.0", refused=None),
    "xpos_rope": Removed("axolotl 0.4.0", refused=None),
    "sample_packing_seq_len_multiplier": Removed("axolotl 0.5.0", refused=None),
    "eval_table_max_new_tokens": Removed("axolotl 0.5.0", "`eval_max_new_tokens`", refused=None),
    "flash_attn_fuse_qkv": Removed("axolotl 0.12.0", refused=None),
    "relora_steps": Removed("axolotl 0.12.0", "`jagged_restart_steps` with `relora: true`", refused=None),
    "relora_warmup_steps": Removed("axolotl 0.12.0", "`jagged_restart_warmup_steps`", refused=None),
    "relora_anneal_steps": Removed("axolotl 0.12.0", "`jagged_restart_anneal_steps`", refused=None),
}
"""Keys of axolotl's older releases and what 0.18.0 does with them. The version is the first
release with the change (the first tag holding the commit that made it)."""


def _dpo_loader(config: Mapping[str, Any]) -> bool:
    """Whether axolotl loads the preference datasets with its DPO strategies (utils/data/rl.py:
    every `rl` but orpo, kto and ebft)."""
    return config.get("rl") not in (None, False, "orpo", "kto", "ebft")


LEGACY_VALUES: dict[str, tuple[OldValue, ...]] = {
    # read as the new spelling: 0.18.0's check_gradient_checkpointing_w_offload (schemas/validation.py)
    "gradient_checkpointing": (
        OldValue("offload", "axolotl 0.12.0", new={"gradient_checkpointing": True, "activation_offloading": True}),
        OldValue("offload_disk", "axolotl 0.12.0", new={"gradient_checkpointing": True, "activation_offloading": "disk"}),
    ),
    # refused: `bf16: Literal["auto"] | bool` (schemas/config.py) since the pydantic config (commit
    # cc3cebfa); until 0.4.0 "full" loaded the weights in bfloat16 and evaluated in bfloat16
    # (bf16_full_eval) without mixed precision
    "bf16": (OldValue("full", "axolotl 0.5.0"),),
    # refused: RLType (schemas/enums.py) has no kto_pair since TRL dropped the loss (commit a159724e)
    "rl": (OldValue("kto_pair", "axolotl 0.5.0", by="`rl: kto` (TRL's KTO, on unpaired examples)"),),
    **{
        f"{table}[*].type": (
            # refused: deprecate_sharegpt_datasets raises (schemas/validation.py)
            OldValue(lambda v: str(v).startswith("sharegpt"), "axolotl 0.5.0", by="`type: chat_template`"),
            # refused: the DPO loader's chatml and llama3 modules renamed `argilla` to `default`
            # (commit 78ce2688), and utils/data/rl.py fails on a type it cannot load; KTO's
            # modules keep `argilla`, ORPO's and SFT's never had it
            *(
                OldValue(f"{base}.argilla", "axolotl 0.7.0", by=f"`type: {base}.default`", only=_dpo_loader)
                for base in ("chatml", "llama3")
            ),
        )
        for table in ("datasets", "test_datasets")
    },
    # refused: `tokens: list[str] | None` (schemas/config.py) takes no table; the table of special
    # tokens it was until May 2023 (models.py, commit bdbca8fa) is `special_tokens`
    "tokens": (OldValue(lambda v: isinstance(v, dict), "axolotl 0.1.0", by="`special_tokens`", shown="`tokens` as a table"),),
}
"""Values of axolotl's older releases that 0.18.0 reads otherwise or refuses, with the first
release holding the change."""

_S = "axolotl:"
"""Prefix of the names under which hf.training_args looks for the keys mapped here instead:
no config key has it, so the shared code sees them as absent."""

RENAME: dict[str, str] = {
    # TrainingArguments' name -> axolotl's key
    "num_train_epochs": "num_epochs",
    "per_device_train_batch_size": "micro_batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "optim": "optimizer",
    "lr_scheduler_type": "lr_scheduler",
    "lr_scheduler_kwargs": "lr_scheduler_kwargs",
    # decided by axolotl before the arguments are built: mapped here
    **{k: _S + k for k in (
        "warmup_steps", "warmup_ratio", "bf16", "fp16", "tf32", "logging_steps", "eval_strategy",
        "eval_steps", "save_steps", "save_strategy", "save_total_limit",
        "fsdp", "fsdp_config", "report_to", "gradient_checkpointing_kwargs",
    )},
}

DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in hf.DEFAULTS.items() if k not in ("logging_steps", "save_steps")},
    # schemas/training.py
    "lr_scheduler_type": "cosine",
    "optim": "adamw_torch_fused",
    "weight_decay": 0.0,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 1,
}
"""transformers' defaults, updated with axolotl's (schemas/training.py): cosine, fused AdamW,
no weight decay, 1 epoch, micro batch 1. `max_grad_norm`, the betas, eps and the seed are
left to transformers (axolotl passes them only when set)."""

DPO_TYPES: dict[str, tuple[str, dict[str, str]]] = {
    # type's function -> (the template it writes, recipec's fields)
    "intel": ("chatml", {"prompt": "question"}),
    "prompt_pairs": ("chatml", {}),
    "icr": ("chatml", {"prompt": "input"}),
    "argilla": ("chatml", {"prompt": "instruction", "chosen": "chosen_response", "rejected": "rejected_response"}),
}

TEMPLATE_SOURCE = "axolotl v0.18.0 (commit 2f5cb9da62a0fe763a1ddeb7798fc9acb2f4a417)"
"""Where the template files under templates/axolotl/ come from, byte for byte:
src/axolotl/utils/chat_templates/templates/<name>.jinja of that commit (Apache-2.0)."""

WRITTEN = (
    "alpaca", "aya", "chatml", "cohere", "deepseek_v2", "deepseek_v3", "exaone", "exaone4", "falcon_h1", "gemma3", "gemma3n",
    "jamba", "llama3", "llama3_2_vision", "llama4", "mistral_v1", "mistral_v7_tekken", "nemotron_h", "phi_3",
    "phi_35", "phi_4", "qwen2_vl", "qwen_25",
)
"""axolotl's named templates that recipec writes out (recipec takes the template itself): every
one of its templates that passes recipec's checks of a chat template (it renders the probe
conversation, turn by turn as prefixes of the whole or with {% generation %} markers, and
closes each answer with a special token)."""

NOT_WRITTEN: dict[str, str] = {
    # axolotl's other named templates, and why recipec cannot take them
    "gemma": "it refuses a system message, and recipec checks every chat template on a conversation that has one",
    **dict.fromkeys(
        ("mistral_v2v3", "mistral_v3_tekken", "pixtral"),
        "it writes the system message into the last user turn, so a turn renders differently once later turns "
        "follow, and recipec cannot find the assistant tokens turn by turn",
    ),
    **dict.fromkeys(
        ("qwen3", "qwen3_5"),
        "it writes an empty <think> block only into answers after the last user turn, so a turn renders "
        "differently once later turns follow, and recipec cannot find the assistant tokens turn by turn",
    ),
    **dict.fromkeys(
        ("command_a", "command_a_rag", "command_a_tool_use"),
        "it renders the last answer of a conversation differently from the earlier ones, and recipec cannot "
        "find the assistant tokens turn by turn",
    ),
    **dict.fromkeys(
        ("gemma4", "gemma4_unified"),
        "its generation prompt opens an empty thought channel that an answered turn does not have, and recipec "
        "cannot find the assistant tokens turn by turn",
    ),
    "metharme": "it writes EOS once, at the end of the conversation, so recipec cannot find the assistant tokens turn by turn",
    "llava": "it ends an answer with a space, no end-of-turn or EOS token, and recipec supervises an answer's closing token",
}
"""axolotl's named templates that are not written out (the tokenizer's own template is used,
approximately), with the reason."""


def _read_template(name: str) -> str:
    return (resources.files(__package__) / "templates" / "axolotl" / f"{name}.jinja").read_text(encoding="utf-8")


TEMPLATES: dict[str, str] = {name: _read_template(name) for name in WRITTEN}
"""The text of each template in :data:`WRITTEN`."""

def convert(d: Draft, options) -> None:  # noqa: ANN001 (Options: no import cycle)
    hf.training_args(d, options.num_processes, rename=RENAME, defaults=DEFAULTS)
    _clean_placeholders(d)
    _fill_nulls(d)
    total = num(d.get("max_steps")) if num(d.get("max_steps") or 0) > 0 else None
    _model(d)
    _precision(d)
    _attention(d)
    _peft(d)
    _data(d, total)
    _schedule(d, total)
    _save_eval_log(d, total)
    _parallel(d)
    _trackers(d)
    _preference(d)
    _unfrozen(d)
    _rest(d)
    _mesh(d, options.num_processes)


# -- unfrozen_parameters -------------------------------------------------------------------

_RANGE = re.compile(r"^(.+)\[([0-9]*)(?::([0-9]*))?\]$")
"""axolotl's row range after a pattern (`LayerNamePattern._parse_pattern`): `[:32000]`, `[5]`."""


def _unfrozen(d: Draft) -> None:
    """`unfrozen_parameters` -> `optim.trainable.include`.

    axolotl (train.py `setup_model_and_tokenizer`, utils/freeze.py `freeze_layers_except`)
    freezes every parameter of the loaded model but those a pattern matches: each pattern is
    `re.match`ed (anchored at the start of the name, not at its end) after every `.` not
    followed by `+` is made a literal dot (`.*` is "any number of dots"; `.+` stays "one or
    more of anything"), and a trailing `[start:end]` row range is no regex: it zeroes the
    gradient of the other rows. It runs on the model `ModelLoader.load` returns: with an
    adapter, the PEFT model (names `base_model.model.…`), except under DPO/IPO/KTO, whose
    adapter TRL adds afterwards.
    """
    key = "unfrozen_parameters"
    value = d.get(key)
    if not value:
        if d.has(key):
            d.exact(key)  # none: axolotl freezes nothing
        return
    patterns = [value] if isinstance(value, str) else [str(p) for p in value]
    adapter = d.get("adapter")
    if adapter:
        if d.get("rl") in ("dpo", "ipo", "kto") and not d.get("merge_lora"):
            why = (
                f"with `adapter: {adapter}` under `rl: {d.get('rl')}` axolotl freezes the base model before TRL adds the "
                "adapter, and peft then freezes every base weight again: only the adapter trains."
            )
            d.drop(key, "ignored-by-tool", why)
            d.warn(f"`{key}` is ignored: {why}", key)
            return
        why = (
            f"with `adapter: {adapter}` axolotl applies the patterns to the adapter-wrapped model (names `base_model.model.…`, "
            "matched from their start) and freezes everything else, the LoRA weights included; recipec's [peft] trains the "
            "adapter and cannot also choose `optim.trainable`."
        )
        if not any(p.startswith(("base_model", ".+")) for p in patterns):
            why += " No pattern here starts `base_model`: axolotl matched nothing and froze every parameter."
        d.drop(key, "no-equivalent", why)
        d.warn(f"`{key}` with an adapter is not imported: {why}", key)
        return
    globs: list[str] = []
    caveats: list[str] = []
    for pattern in patterns:
        name, rows = pattern, None
        m = _RANGE.match(pattern)
        if m:
            name, rows = m[1], f"[{m[2]}{'' if m[3] is None else ':' + m[3]}]"
        regex = re.sub(r"\.(?!\+)", "\\.", name)
        try:
            found, caveat = regex_globs(regex, search=False)
        except NoGlob as err:
            why = f"the pattern `{pattern}` has {err}, which no glob matches the same names as; write `optim.trainable.include` by hand."
            d.drop(key, "no-equivalent", why)
            d.warn(f"`{key}` is not imported: {why}", key)
            return
        if "\\" in name:
            caveats.append(f"`{pattern}` matches no name in axolotl (it escapes each `.` itself, so `\\.` becomes a backslash and any character); left out")
            continue
        if caveat:
            caveats.append(caveat)
        if rows:
            caveats.append(f"`{pattern}`: axolotl trains rows {rows} only (it zeroes the other rows' gradient; weight decay still moves them); recipec trains the whole parameter")
        globs += [g for g in found if g not in globs]
    if not globs:
        why = "no pattern matches a parameter name in axolotl: it froze the whole model."
        d.drop(key, "no-equivalent", why)
        d.warn(f"`{key}` is not imported: {why}", key)
        return
    note = "axolotl's regexes (re.match: from the start of the name) as globs"
    d.set("optim.trainable", {"include": globs}, key, approx="; ".join(caveats) or None, note=note)


# -- helpers ---------------------------------------------------------------------------


def _clean_placeholders(d: Draft) -> None:
    """Drop what hf.training_args wrote for the keys this module maps itself."""
    d.defaults[:] = [e for e in d.defaults if not e[0].startswith(_S)]
    for table in list(d.tables.values()):
        for name, line in list(table.items()):
            if any(k.startswith(_S) for k in line.keys):
                del table[name]


def _fill_nulls(d: Draft) -> None:
    """A key left empty (`weight_decay:`) is None, which axolotl does not pass on: the
    Trainer's default applies."""
    back = {v: k for k, v in RENAME.items()}
    for table in list(d.tables):
        for name, line in list(d.tables[table].items()):
            if line.value is not None or not line.keys:
                continue
            key = line.keys[0]
            hf_name = back.get(key, key)
            del d.tables[table][name]
            if hf_name in hf.DEFAULTS:
                value = hf.DEFAULTS[hf_name]
                d.default(f"{table}.{name}", float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and table == "optim" else value, key, f"empty: the Trainer's {hf_name} {value}")
            d.exact(*line.keys)


def _given(d: Draft, key: str) -> bool:
    """The file sets the key to something (an empty key is axolotl's default)."""
    return d.has(key) and d.get(key) not in (None, "", [], {})


def _empty(d: Draft, *keys: str) -> None:
    for k in keys:
        if d.has(k) and not _given(d, k):
            d.exact(k)


def _hub_id(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) is not None and not Path(text).exists()


def _local(text: str) -> str:
    return text if text.startswith(("./", "../", "/", "~")) else "./" + text


# -- model -------------------------------------------------------------------------------


def _model(d: Draft) -> None:
    base = str(d.get("base_model"))
    d.set("model.path", base if _hub_id(base) else _local(base), "base_model")
    for k in ("base_model_config", "tokenizer_config"):
        if not _given(d, k):
            _empty(d, k)
        elif str(d.get(k)) == base:
            d.exact(k)
        elif k == "tokenizer_config":
            v = str(d.get(k))
            d.set("tokenizer.path", v if _hub_id(v) else _local(v), k)
        else:
            d.drop(k, "no-equivalent", "recipec reads the model's config from `model.path`.")
    reward = bool(d.get("reward_model"))
    for k in ("model_type", "type_of_model"):
        if _given(d, k):
            v = str(d.get(k))
            if reward and v.endswith("ForSequenceClassification"):
                d.exact(k)  # preference.objective = "reward" loads AutoModelForSequenceClassification
            elif not v.endswith("ForSequenceClassification") and (v.startswith("Auto") or v.endswith("ForCausalLM")):
                d.exact(k)
            else:
                d.approx(f"recipec loads {'AutoModelForSequenceClassification' if reward else 'AutoModelForCausalLM'}, not {v}", k)
    if _given(d, "tokenizer_type"):
        v = str(d.get("tokenizer_type"))
        if v in ("AutoTokenizer", "PreTrainedTokenizerFast") or v.endswith("TokenizerFast"):
            d.exact("tokenizer_type")
        else:
            d.approx(f"recipec loads AutoTokenizer (the fast tokenizer), not {v}", "tokenizer_type")
    for k, target in (("trust_remote_code", "model.trust_remote_code"), ("model_revision", "model.revision"), ("revision_of_model", "model.revision")):
        if _given(d, k):
            d.set(target, d.get(k), k)
    _empty(d, "trust_remote_code", "model_type", "tokenizer_type", "model_revision")
    if _given(d, "tokenizer_use_fast"):
        if d.get("tokenizer_use_fast"):
            d.exact("tokenizer_use_fast")
        else:
            d.approx("recipec loads the fast tokenizer", "tokenizer_use_fast")
    if d.get("reinit_weights"):
        d.drop("reinit_weights", "missing-feature", "recipec initialises a new model only from `model.init` and [model.config], not from a pretrained model's config.")
    _config_overrides(d)


def _config_overrides(d: Draft) -> None:
    """`overrides_of_model_config` (or its older name `model_config`) -> [model.config]: both set keys of the
    loaded config before the weights load. axolotl sets each value whole where recipec replaces a table's
    keys one by one; RoPE's legacy keys, which transformers 5 reads only from `rope_parameters` once the
    config is built, go there; keys that size the weights, or are the tokenizer's, are not imported."""
    from ..model_types import TOKENIZER_KEYS
    from ..runtime.model_config import SHAPE_KEYS

    rope: dict[str, Any] = {}
    rope_keys: list[str] = []
    for k in ("model_config", "overrides_of_model_config"):
        if not (d.has(k) and _given(d, k)):
            continue
        value = d.get(k)
        if not isinstance(value, dict):
            d.drop(k, "no-equivalent", "not a table of config keys.")
            continue
        for top, v in value.items():
            leaves = d.keys_under(f"{k}.{top}")
            if top in SHAPE_KEYS or top in TOKENIZER_KEYS:
                for leaf in leaves:
                    d.drop(leaf, "no-equivalent", f"`{top}` sizes the weights: the checkpoint's own value is the one that loads.")
            elif top == "rope_theta":
                rope["rope_theta"] = float(num(v))
                rope_keys += leaves
            elif top == "rope_scaling" and isinstance(v, dict):
                rope.update({("rope_type" if sub == "type" else sub): x for sub, x in v.items()})
                rope_keys += leaves
            else:
                approx = "recipec replaces the table's keys one by one, axolotl the whole value" if isinstance(v, dict) else None
                d.set(f"model.config.{top}", v, *leaves, approx=approx)
    if rope:
        d.set("model.config.rope_parameters", rope, *rope_keys,
              approx="transformers 5 reads RoPE's settings from rope_parameters once the config is built: the legacy key set on the loaded config would change nothing")


def _precision(d: Draft) -> None:
    raw = d.get("bf16")
    bf16 = "auto" if raw is None else raw
    fp16 = d.get("fp16") or d.get("float16")
    if d.get("bfloat16"):
        bf16 = True
    keys = [k for k in ("bf16", "fp16", "bfloat16", "float16") if _given(d, k)]
    why = None
    if fp16 and bf16 is not True:
        mode, dtype = "fp16", "float16"
    elif bf16 == "auto":
        mode, dtype = "bf16", "bfloat16"
        why = "bf16 \"auto\": bf16 where the GPU supports it (Ampere and later), else fp16"
    elif bf16:
        mode, dtype = "bf16", "bfloat16"
    else:
        mode, dtype = "no", "float32"
    if raw is None and not fp16 and not d.get("bfloat16"):
        meaning = "bf16 \"auto\": bf16 where the GPU supports it (Ampere and later)"
        d.default("launch.mixed_precision", mode, "bf16", meaning)
        d.default("model.dtype", dtype, "bf16", "the weights loaded in the training dtype (axolotl's torch_dtype)")
        _empty(d, "bf16", "fp16", "bfloat16", "float16")
    else:
        d.set("launch.mixed_precision", mode, *keys)
        if mode != "no":
            d.set("model.dtype", dtype, *keys, note="axolotl loads the weights in the training dtype")
        if why:
            d.approx(why, "bf16")
    if d.get("float32"):
        d.exact("float32")
    _empty(d, "float32", "fp16", "bfloat16", "float16")
    tf32 = d.get("tf32", "auto") if d.get("tf32") is not None else "auto"
    if tf32 == "auto":
        if d.has("tf32") and d.get("tf32") is not None:
            d.set("launch.tf32", True, "tf32", approx="tf32 \"auto\": on where the GPU has TF32 (Ampere and later)")
        else:
            d.default("launch.tf32", True, "tf32", "tf32 \"auto\": on where the GPU has TF32 (Ampere and later)")
            _empty(d, "tf32")
    else:
        d.set("launch.tf32", bool(tf32), "tf32")
    if d.has("gradient_checkpointing_kwargs"):
        ur = (d.get("gradient_checkpointing_kwargs") or {}).get("use_reentrant") if isinstance(d.get("gradient_checkpointing_kwargs"), dict) else None
        if ur is False and set(d.get("gradient_checkpointing_kwargs")) == {"use_reentrant"}:
            d.exact("gradient_checkpointing_kwargs")  # axolotl's default too; the same gradients either way
        else:
            d.approx("recipec's gradient checkpointing uses its own checkpoint options", "gradient_checkpointing_kwargs")


def _attention(d: Draft) -> None:
    impl = d.get("attn_implementation")
    keys = [k for k in ("attn_implementation",) if d.has(k)]
    ours = {"flash_attention_2", "flash_attention_3", "sdpa", "eager", "flex_attention"}
    if impl is None:
        _empty(d, *keys)
        for k in keys:
            if d.get(k) is False:
                d.exact(k)
        return
    if impl in ours:
        d.set("model.attention", impl, *[k for k in keys if d.get(k)])
    elif "flash-attn3" in str(impl) or "flash_attn3" in str(impl):
        d.set("model.attention", "flash_attention_3", *[k for k in keys if d.get(k)], approx=f"the hub kernel {impl!r} becomes transformers' flash_attention_3")
    elif "flash" in str(impl):
        d.set("model.attention", "flash_attention_2", *[k for k in keys if d.get(k)], approx=f"the kernel {impl!r} becomes flash_attention_2")
    else:
        d.set("model.attention", "sdpa", *[k for k in keys if d.get(k)], approx=f"recipec has no {impl!r} attention; sdpa is written")
    for k in keys:
        if not d.get(k):
            d.exact(k)


# -- adapter -----------------------------------------------------------------------------


def _peft(d: Draft) -> None:
    adapter = d.get("adapter")
    q4, q8 = d.get("load_in_4bit"), d.get("load_in_8bit")
    if not adapter:
        _empty(d, "adapter", "lora_model_dir")
        for k in ("load_in_4bit", "load_in_8bit"):
            if d.has(k) and not d.get(k):
                d.exact(k)
        lora = [k for k in d.values if k.startswith(("lora_", "peft_")) and _given(d, k)]
        for k in lora:
            d.drop(k, "ignored-by-tool", "no `adapter`: a full fine-tune.")
        if lora:
            d.warn(f"{', '.join(f'`{k}`' for k in lora)} set without an `adapter`: axolotl trains the whole model and ignores them", *lora)
        return
    if adapter not in ("lora", "qlora"):
        d.drop("adapter", "missing-feature", f"recipec has no {adapter!r} adapter; a full fine-tune is written.")
        return
    d.set("peft.method", "lora", "adapter")
    if q4:
        d.set("peft.quantize", "4bit", "load_in_4bit", *(["adapter"] if adapter == "qlora" else []))
    elif q8:
        d.set("peft.quantize", "8bit", "load_in_8bit")
    for k in ("load_in_4bit", "load_in_8bit"):
        if d.has(k) and not d.get(k):
            d.exact(k)
    saved = _given(d, "lora_model_dir")
    if saved:  # axolotl loads the saved adapter (PeftModel.from_pretrained, trainable) with its own config
        where = str(d.get("lora_model_dir"))
        d.set("peft.adapter", where if _hub_id(where) else _local(where), "lora_model_dir")
        for k in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_target_linear", "lora_modules_to_save", "peft_use_rslora", "peft_use_dora", "peft_init_lora_weights"):
            if d.has(k):
                d.drop(k, "ignored-by-tool", "with `lora_model_dir` axolotl loads the saved adapter under its own config; so does recipec's peft.adapter.")
    else:
        for k, target, default in (("lora_r", "peft.r", None), ("lora_alpha", "peft.alpha", None), ("lora_dropout", "peft.dropout", 0.0)):
            if _given(d, k):
                v = num(d.get(k))
                d.set(target, float(v) if k == "lora_dropout" else v, k)
            elif default is not None:
                d.default(target, default, k, f"{k} {default}")
            else:
                d.warn(f"`{k}` is not set: axolotl passes None to peft's LoraConfig, which fails", k)
        mods = d.get("lora_target_modules")
        if d.get("lora_target_linear"):
            d.set("peft.target_modules", "all-linear", "lora_target_linear", *(["lora_target_modules"] if d.has("lora_target_modules") else []))
        elif mods:
            d.set("peft.target_modules", [mods] if isinstance(mods, str) else list(mods), "lora_target_modules")
        else:
            d.warn("no `lora_target_modules` and no `lora_target_linear`: axolotl gives peft an empty list of modules", "lora_target_modules")
        _empty(d, "lora_target_linear", "lora_target_modules", "lora_model_dir")
        if d.has("lora_target_linear") and d.get("lora_target_linear") is False:
            d.exact("lora_target_linear")
        if _given(d, "lora_modules_to_save"):
            d.set("peft.modules_to_save", list(d.get("lora_modules_to_save")), "lora_modules_to_save")
        for k, target in (("peft_use_rslora", "peft.rslora"), ("peft_use_dora", "peft.dora")):
            if d.has(k) and d.get(k) is not None:
                d.set(target, bool(d.get(k)), k)
    if _given(d, "loraplus_lr_ratio"):
        d.set("peft.loraplus_lr_ratio", float(num(d.get("loraplus_lr_ratio"))), "loraplus_lr_ratio")
        if d.has("loraplus_lr_embedding"):
            d.approx("LoRA+'s LR of the embedding adapters is peft's default", "loraplus_lr_embedding")
    elif d.has("loraplus_lr_embedding"):
        d.drop("loraplus_lr_embedding", "ignored-by-tool", "read only with loraplus_lr_ratio.")
    if d.get("merge_lora"):
        d.set("peft.save_merged", True, "merge_lora", approx="axolotl merges in a separate `axolotl merge-lora` step; recipec saves the merged model after training")
    if not saved and _given(d, "peft_init_lora_weights"):
        init = d.get("peft_init_lora_weights")
        if init in ("gaussian", "pissa", "olora"):
            d.set("peft.init", init, "peft_init_lora_weights")
        elif init is True:
            d.exact("peft_init_lora_weights")
        else:
            d.drop("peft_init_lora_weights", "missing-feature", f"recipec has no {init!r} LoRA initialisation.")


# -- data --------------------------------------------------------------------------------


def _data(d: Draft, total: int | None) -> None:
    seq = int(num(d.get("sequence_len", 512)))
    if d.has("sequence_len"):
        d.set("data.seq_len", seq, "sequence_len")
    else:
        d.default("data.seq_len", seq, "sequence_len", "sequence_len 512")
    pack = bool(d.get("sample_packing"))
    if d.has("sample_packing") and d.get("sample_packing") is not None:
        d.set("data.packing", pack, "sample_packing")
    else:
        d.default("data.packing", False, "sample_packing", "no sample packing")
        _empty(d, "sample_packing")
    if d.has("eval_sample_packing"):
        held_out = num(d.get("val_set_size")) or d.get("test_datasets")
        if d.get("eval_sample_packing") is None or bool(d.get("eval_sample_packing")) == pack or not held_out:
            d.exact("eval_sample_packing")
        else:
            d.approx("recipec packs the held-out examples as it packs the training ones", "eval_sample_packing")
    strategy = d.get("excess_length_strategy") or "drop"
    overflow = {"drop": "drop", "truncate": "truncate"}.get(strategy)
    d.tables.setdefault("data", {})
    sources: list[tuple[str, dict[str, Any]]] = []
    for table in ("datasets", "test_datasets"):
        for i, ds in enumerate(d.get(table) or []):
            if isinstance(ds, dict):
                sources.append((f"{table}[{i}]", ds))
    for i, ds in enumerate(d.get("pretraining_dataset") or []):
        if isinstance(ds, dict):
            sources.append((f"pretraining_dataset[{i}]", ds))
    examples = False
    templates: set[str] = set()
    for idx, (key, ds) in enumerate(sources):
        kind = _source(d, idx, key, ds, total, seq)
        examples |= kind not in ("text",)
        if kind.startswith("template:"):
            templates.add(kind.split(":", 1)[1])
    if pack and not examples and sources:
        why = ("axolotl packs whole documents (each cut at sequence_len) into sequences; recipec concatenates the documents "
               "and cuts the stream into full blocks, a document cut at a block's end going on in the next")
        if int(num(d.get("context_parallel_size") or 1)) > 1:
            why += "; axolotl's ring attention keeps each document to itself, recipec's split attends across them"
        else:
            d.set("data.cross_document_attention", False, note="axolotl's packed documents attend within themselves (their position ids)")
        d.approx(why, "sample_packing")
    if examples:
        if d.has("excess_length_strategy"):
            if overflow:
                d.set("data.overflow", overflow, "excess_length_strategy")
            else:
                d.set("data.overflow", "drop", "excess_length_strategy", approx="\"raise\" stops on a long example; recipec drops it and counts it")
        else:
            d.default("data.overflow", "drop", "excess_length_strategy", "examples longer than sequence_len are dropped")
    elif d.has("excess_length_strategy"):
        d.drop("excess_length_strategy", "ignored-by-tool", "only examples are fitted to sequence_len; text is cut into blocks.")
    _padding(d, examples, seq)
    _eval_split(d)
    _chat_template(d, templates)
    _special_tokens(d)
    if d.get("train_on_inputs") and not examples:
        d.exact("train_on_inputs")  # text is trained on every token anyway
    elif d.get("train_on_inputs"):
        for i, src in enumerate(d.sources):
            records = src.get("records")
            if records is not None and records.value in ("alpaca", "messages", "prompt_completion") and "train_on" not in src:
                style = src.get("prompt_style")
                # prompt and output as text: every token, as axolotl
                text = style is not None and style.value == "alpaca" or "prompt_format" in src
                d.set(f"data.sources[{i}].train_on", "all", "train_on_inputs", approx=None if text else "train_on_inputs: the prompt is trained on too, the template's own tokens as well")
    _empty(d, "train_on_inputs")
    if d.has("train_on_inputs") and d.get("train_on_inputs") is False:
        d.exact("train_on_inputs")


def _padding(d: Draft, examples: bool, seq: int) -> None:
    """`pad_to_sequence_len` and `pad_to_multiple_of` -> data.pad_to_multiple_of: axolotl's collator pads a
    micro-batch of examples to a multiple of 64 * ceil(sequence_len / 64) with pad_to_sequence_len, which is
    sequence_len itself when sequence_len is a multiple of 64."""
    keys = [k for k in ("pad_to_sequence_len", "pad_to_multiple_of") if d.has(k)]
    if not examples:
        d.exact(*keys)  # text rows are full sequence_len blocks already
        return
    multiple, key = (seq, "pad_to_sequence_len") if d.get("pad_to_sequence_len") else (d.get("pad_to_multiple_of"), "pad_to_multiple_of")
    if multiple is None:
        d.exact(*keys)  # pad_to_sequence_len: false, pad_to_multiple_of unset: each micro-batch to its longest
        return
    multiple = int(num(multiple))
    if int(num(d.get("context_parallel_size") or 1)) > 1:
        d.approx("under context or sequence parallelism recipec pads every row of examples to sequence_len", *keys)
        return
    if key == "pad_to_sequence_len":
        d.exact("pad_to_multiple_of")  # pad_to_sequence_len decides
        why = None if seq % 64 == 0 else f"axolotl pads to 64 * ceil(sequence_len / 64) = {-(-seq // 64) * 64}; recipec never pads past sequence_len"
        d.set("data.pad_to_multiple_of", seq, key, approx=why)
    elif multiple > seq:
        d.set("data.pad_to_multiple_of", seq, key, approx=f"{multiple} is past sequence_len {seq}, which recipec never pads past")
    else:
        d.set("data.pad_to_multiple_of", multiple, key)


def _user_defined(d: Draft, src: str, key: str, typ: dict[str, Any]) -> None:
    """A user-defined prompt format (`type: {format, no_input_format, field_*, system_*}`) -> `prompt_format`.

    axolotl's prompt is ``system_format`` filled with the record's ``field_system`` (else ``system_prompt``)
    when that is non-empty, then ``format`` filled with the instruction and the input when the input is
    non-empty, else ``no_input_format`` with the instruction (`UserDefinedPrompter`); the output and EOS
    follow, tokenized apart. recipec's formats name the record's fields, so `{instruction}` and `{input}`
    become the fields they are read from, and the list tries the format with the system and the input first.
    """
    fields = {name: typ.get(f"field_{name}") or name for name in ("instruction", "input", "output", "system")}
    rename = lambda text: text.replace("{instruction}", "{" + fields["instruction"] + "}").replace("{input}", "{" + fields["input"] + "}")  # noqa: E731
    turn = typ.get("format")
    if not turn:
        d.drop(key, "missing-feature", "a user-defined prompt type without `format` has no prompt to build")
        return
    turns = [rename(turn), rename(typ.get("no_input_format") or turn)]
    system_format = typ.get("system_format") if typ.get("system_format") is not None else "{system}"
    constant = typ.get("system_prompt") or ""
    used = [f"{key}.{k}" for k in ("format", "no_input_format", "field_instruction", "field_input", "field_output", "system_format") if k in typ]
    if typ.get("field_system") and system_format:  # the record's system field, when it has one
        head = system_format.replace("{system}", "{" + fields["system"] + "}")
        formats = [head + t for t in turns] + turns
        used.append(f"{key}.field_system")
        if constant:
            d.drop(f"{key}.system_prompt", "missing-feature", "axolotl puts it in the place of an empty system field; recipec leaves the system out of such a record's prompt")
    elif constant and system_format:  # the same system text before every prompt
        head = system_format.format(system=constant).replace("{", "{{").replace("}", "}}")
        formats = [head + t for t in turns]
        used.append(f"{key}.system_prompt")
    else:
        formats = turns
        used += [f"{key}.{k}" for k in ("system_prompt", "field_system") if k in typ]
    formats = list(dict.fromkeys(formats))
    try:
        prompt_fields(formats)
    except ValueError as e:  # a field name str.format cannot take as a key ("a.b", "0"), a brace of axolotl's own
        d.drop(key, "missing-feature", f"the format does not make a recipec prompt_format: {e}")
        return
    d.set(f"{src}.records", "prompt_completion", key, note="a user-defined prompt format: the prompt built from the record's fields, then the output")
    d.set(f"{src}.prompt_format", formats[0] if len(formats) == 1 else formats, *used)
    if fields["output"] != "completion":
        d.set(f"{src}.fields", {"completion": fields["output"]}, *([f"{key}.field_output"] if "field_output" in typ else []))
    if typ.get("field") is not None:
        d.drop(f"{key}.field", "ignored-by-tool", "read by the completion type only.")


def _source(d: Draft, i: int, key: str, ds: dict[str, Any], total: int | None, seq: int) -> str:
    """One `[[data.sources]]` from a `datasets` / `test_datasets` / `pretraining_dataset` entry;
    returns its kind: "text", "examples" or "template:<name>" (examples that name a template)."""
    src = f"data.sources[{i}]"
    path = str(ds.get("path") or "")
    pre = key.startswith("pretraining_dataset")
    hub = _hub_id(path) and not ds.get("ds_type")
    if hub:
        d.set(f"{src}.hub.repo", path, f"{key}.path")
        for k, target in (("name", "subset"), ("split", "split"), ("revision", "revision"), ("data_files", "data_files")):
            if ds.get(k) is None:
                continue
            m = re.fullmatch(r"(\w+)\[(.*)\]", str(ds[k])) if k == "split" else None
            if m:
                d.set(f"{src}.hub.split", m.group(1), f"{key}.split", approx=f"the slice [{m.group(2)}] of the split; recipec reads the split whole (max_documents takes its first records)")
            else:
                d.set(f"{src}.hub.{target}", ds[k], f"{key}.{k}")
        if pre:
            d.set(f"{src}.hub.streaming", True, f"{key}.path", note="axolotl streams a pretraining_dataset")
    else:
        target = ds.get("data_files") or path
        d.set(f"{src}.path", _local(str(target)) if isinstance(target, str) else [_local(str(t)) for t in target], f"{key}.path", *([f"{key}.data_files"] if ds.get("data_files") else []))
        for k in ("name", "split", "revision"):
            if ds.get(k) is not None:
                d.approx("a local file is read whole", f"{key}.{k}")
        if ds.get("ds_type"):
            fmt = {"json": "jsonl", "parquet": "parquet", "arrow": "arrow", "text": "text"}.get(str(ds["ds_type"]))
            if fmt:
                d.set(f"{src}.format", fmt, f"{key}.ds_type")
    for k in ("trust_remote_code",):
        if k in ds:
            if ds[k]:
                d.drop(f"{key}.{k}", "missing-feature", "recipec reads hub datasets' data files; it runs no dataset script.")
            else:
                d.exact(f"{key}.{k}")
    for k in ("shards", "shards_idx", "preprocess_shards", "skip"):
        if ds.get(k) is not None:
            d.drop(f"{key}.{k}", "missing-feature", "recipec reads the whole split; take part of it with max_documents.")
    if key.startswith("test_datasets"):
        d.set(f"{src}.split", "eval", f"{key}.path", note="test_datasets: evaluated, never trained on")
        d.set(f"{src}.name", "test" + key[len("test_datasets["):-1], note="an evaluation source needs a name")
    typ = ds.get("type")
    if pre:
        text = ds.get("text_column") or ds.get("field") or "text"
        if text != "text":
            d.set(f"{src}.text_field", text, *[f"{key}.{k}" for k in ("text_column", "field") if k in ds])
        else:
            for k in ("text_column", "field"):
                if k in ds:
                    d.exact(f"{key}.{k}")
        if typ in (None, "pretrain"):
            if typ is not None:
                d.exact(f"{key}.type")
        else:
            d.approx(f"the type {typ!r} is read as plain text", f"{key}.type")
        if total:
            d.set(f"{src}.max_tokens", total * int(d.value("train.batch_size") or 1) * seq, note="a streamed source needs a bound: the tokens the run trains on (max_steps * batch * sequence_len)")
        return "text"
    if isinstance(typ, dict):
        _user_defined(d, src, f"{key}.type", typ)
        return "examples"
    typ = str(typ or "")
    base, _, fn = typ.partition(".")
    rl = d.get("rl")
    if rl in ("dpo", "ipo", "orpo", "simpo") and base in ("chatml", "llama3") and fn in DPO_TYPES:
        template, fields = DPO_TYPES[fn]
        template = "llama3" if base == "llama3" else template
        d.set(f"{src}.records", "preference", f"{key}.type", note=f"{typ}: prompt, chosen and rejected strings rendered in {template}")
        if fields:
            d.set(f"{src}.fields", fields, f"{key}.type")
        # axolotl writes the turns as text ([system], user, then the answer closed by the end-of-turn marker);
        # recipec renders the same turns, the record's system among them, with the template
        d.set(
            f"{src}.as_chat", True, f"{key}.type",
            approx=f"axolotl writes the {template} turns itself, the answer closed by its end-of-turn marker alone; recipec renders the same turns with the {template} template",
        )
        return "template:" + template
    if d.get("reward_model") and base == "bradley_terry" and fn == "chat_template":
        # BTChatTemplateStrategy: [system], user `input`, assistant `chosen` / `rejected`, in the config's chat template
        d.set(f"{src}.records", "preference", f"{key}.type", note=f"{typ}: the input, chosen and rejected strings of each pair")
        d.set(f"{src}.fields", {"prompt": "input"}, f"{key}.type")
        d.set(f"{src}.as_chat", True, f"{key}.type", note="[system], user `input`, assistant `chosen` / `rejected`, in the chat template")
        return "examples"
    if rl in ("dpo", "ipo", "orpo", "simpo") and base == "chat_template":
        fields = {"prompt": ds.get("field_messages") or "messages", "chosen": ds.get("field_chosen") or "chosen", "rejected": ds.get("field_rejected") or "rejected"}
        mapping = ds.get("message_property_mappings") or {}
        fields.update({k: v for k, v in mapping.items() if k in ("role", "content")})
        d.set(f"{src}.records", "preference", f"{key}.type", approx="the conversation is the prompt and the last message of chosen/rejected the answer; recipec reads chosen/rejected as strings or message lists")
        d.set(f"{src}.fields", fields, *[f"{key}.{k}" for k in ("field_messages", "field_chosen", "field_rejected") if k in ds], *([f"{key}.message_property_mappings"] if mapping else []))
        _roles(d, src, key, ds)
        return "template:" + str(ds["chat_template"]) if ds.get("chat_template") else "examples"
    if base == "chat_template":
        d.set(f"{src}.records", "messages", f"{key}.type")
        fields: dict[str, str] = {}
        if ds.get("field_messages") not in (None, "messages"):
            fields["messages"] = ds["field_messages"]
        mapping = dict(ds.get("message_property_mappings") or {})
        for name in ("role", "content"):
            if mapping.get(name, name) != name:
                fields[name] = mapping[name]
        extra = [k for k in mapping if k not in ("role", "content")]
        used = [f"{key}.{k}" for k in ("field_messages",) if k in ds]
        if "message_property_mappings" in ds:
            used.append(f"{key}.message_property_mappings")
        if fields:
            d.set(f"{src}.fields", fields, *used)
        else:
            d.exact(*used)
        for k in extra:
            d.drop(f"{key}.message_property_mappings.{k}", "missing-feature", "recipec's messages carry a role and a content only.")
        _roles(d, src, key, ds)
        _train_on(d, src, key, ds)
        if ds.get("drop_system_message"):
            d.set(
                f"{src}.system",
                "drop",
                f"{key}.drop_system_message",
                approx="axolotl drops a conversation's leading system message, recipec every system message: "
                "the same for records with no system message after the first turn",
            )
        elif "drop_system_message" in ds:
            d.exact(f"{key}.drop_system_message")
        for k in ("field_thinking", "template_thinking_key", "split_thinking", "field_tools", "message_field_training", "message_field_training_detail"):
            if ds.get(k) is not None:
                d.drop(f"{key}.{k}", "missing-feature", "recipec's messages carry a role and a content: no reasoning, tools or per-turn training flags.")
        return "template:" + str(ds["chat_template"]) if ds.get("chat_template") else "examples"
    if base == "completion":
        field = ds.get("field") or "text"
        d.set(f"{src}.records", "text", f"{key}.type")
        if field != "text":
            d.set(f"{src}.text_field", field, f"{key}.field")
        elif "field" in ds:
            d.exact(f"{key}.field")
        return "text"
    if base == "alpaca":  # AlpacaPrompter, prompt style "instruct": Stanford Alpaca's prompt, then the output and EOS
        d.set(f"{src}.records", "alpaca", f"{key}.type")
        d.set(f"{src}.prompt_style", "alpaca", f"{key}.type")
        if ds.get("field") is not None:
            d.drop(f"{key}.field", "ignored-by-tool", "read by the completion type only.")
        return "examples"
    if base in ("alpaca_chat", "alpaca_w_system"):
        d.set(f"{src}.records", "alpaca", f"{key}.type", approx="axolotl writes its alpaca prompt ('Below is an instruction...', ### Instruction / ### Input / ### Response); recipec renders the records with axolotl's `alpaca` chat template (### Instruction / ### Response, the input after the instruction, no preamble)")
        if ds.get("field") is not None:
            d.drop(f"{key}.field", "ignored-by-tool", "read by the completion type only.")
        return "template:alpaca"
    if rl in ("dpo", "ipo", "orpo", "simpo"):
        d.set(f"{src}.records", "preference", f"{key}.type", approx=f"axolotl's {typ!r} reshapes the records; recipec reads prompt, chosen and rejected")
    elif rl == "kto":
        d.set(f"{src}.records", "unpaired_preference", f"{key}.type", approx=f"axolotl's {typ!r} reshapes the records; recipec reads prompt, completion and label")
    else:
        d.set(f"{src}.records", "messages", f"{key}.type", approx=f"axolotl's prompt format {typ!r} has no recipec equivalent; the records are read as conversations")
    return "examples"


def _roles(d: Draft, src: str, key: str, ds: dict[str, Any]) -> None:
    roles = ds.get("roles")
    if roles:
        mapping = {s: t for t, sources in roles.items() for s in (sources or []) if s != t}
        if mapping:
            d.set(f"{src}.roles", mapping, f"{key}.roles")
        else:
            d.exact(f"{key}.roles")
    else:
        d.default(f"{src}.roles", {"human": "user", "gpt": "assistant"}, f"{key}.roles", "role names human and gpt are read as user and assistant")


def _train_on(d: Draft, src: str, key: str, ds: dict[str, Any]) -> None:
    roles = ds.get("roles_to_train", ["assistant"])
    eos = ds.get("train_on_eos") or "turn"
    keys = [f"{key}.{k}" for k in ("roles_to_train", "train_on_eos", "train_on_eot") if k in ds]
    if d.get("train_on_inputs"):
        d.set(f"{src}.train_on", "all", "train_on_inputs", *keys, approx="train_on_inputs: every turn is trained on, the template's own tokens too")
        return
    why = []
    if roles != ["assistant"]:
        why.append(f"roles_to_train {roles}: recipec trains the assistant's turns")
    if eos != "turn":
        why.append(f"train_on_eos {eos!r}: recipec supervises the token that closes each trained turn")
    if ds.get("train_on_eot") not in (None, eos):
        why.append("train_on_eot: recipec supervises the token that closes each trained turn")
    if keys:
        d.set(f"{src}.train_on", "assistant", *keys, approx="; ".join(why) or None)
    else:
        d.default(f"{src}.train_on", "assistant", f"{key}.roles_to_train", "roles_to_train [\"assistant\"], train_on_eos \"turn\": the assistant's turns and their end token")


def _eval_split(d: Draft) -> None:
    v = num(d.get("val_set_size"))
    if v is None:
        d.default("data.eval_fraction", 0.0, "val_set_size", "val_set_size 0: no held-out split")
        _empty(d, "val_set_size")
    elif 0 <= v < 1:
        d.set("data.eval_fraction", float(v), "val_set_size")
    else:
        d.set("data.eval_fraction", 0.05, "val_set_size", approx=f"{v} held-out rows; recipec holds out a fraction (0.05 written)")


def _chat_template(d: Draft, from_data: set[str]) -> None:
    """`tokenizer.chat_template` from `chat_template` (or the template a dataset names).

    A template's markers are not added to `tokenizer.special_tokens`: axolotl adds to the
    tokenizer only what the config lists (`special_tokens`, `tokens`; see `_special_tokens`),
    so a marker the tokenizer lacks is text in axolotl's run too.
    """
    top = d.get("chat_template")
    jinja = d.get("chat_template_jinja")
    named = [t for t in from_data if t not in ("tokenizer_default",)]
    keys = [k for k in ("chat_template", "chat_template_jinja") if _given(d, k)]
    ds_keys = [k for k in d.values if re.fullmatch(r"(datasets|test_datasets)\[\d+\]\.chat_template(_jinja)?", k)]
    name = None
    if top == "jinja" and jinja:
        d.set("tokenizer.chat_template", str(jinja), *keys)
        return
    if top and top != "tokenizer_default":
        name = str(top)
    elif named:
        name = sorted(named)[0]
    if name is None:
        d.exact(*keys, *ds_keys)
        return
    text = TEMPLATES.get(name)
    src = keys + ds_keys
    data_only = name in ("alpaca", "chatml", "llama3") and not src
    if text is not None:
        if data_only:
            d.set("tokenizer.chat_template", text, note=f"axolotl's {name} template, which the dataset type renders")
        else:
            d.set("tokenizer.chat_template", text, *src, note=f"axolotl's {name} template")
    elif name in NOT_WRITTEN:
        d.approx(f"axolotl's {name} template is not written out: {NOT_WRITTEN[name]}; the tokenizer's own template is used", *src)
    elif name.startswith("tokenizer_default_fallback_"):
        d.approx(f"axolotl uses the tokenizer's own template, or its {name[len('tokenizer_default_fallback_'):]} template when the tokenizer has none; recipec uses the tokenizer's own", *src)
    else:
        d.approx(f"axolotl's named template {name!r} is not written out; the tokenizer's own template is used", *src)
    if len(set(named) | ({name} if top else set())) > 1:
        d.approx("datasets with different chat templates: recipec renders every source with one template", *ds_keys)


def _special_tokens(d: Draft) -> None:
    add = []
    if _given(d, "special_tokens.pad_token"):
        d.exact("special_tokens.pad_token")  # padding never reaches the loss; recipec pads as it needs
    for k in ("bos_token", "eos_token", "unk_token"):
        key = f"special_tokens.{k}"
        if _given(d, key):
            d.approx(f"recipec keeps the tokenizer's own {k}; it adds new tokens only as whole special tokens", key)
    extra = d.get("special_tokens.additional_special_tokens") or []
    add += list(extra)
    if extra:
        d.exact("special_tokens.additional_special_tokens")
    toks = d.get("tokens") or []
    add += list(toks)
    if toks:
        d.exact("tokens")
    if add:
        old = d.value("tokenizer.special_tokens") or []
        keys = [k for k in ("special_tokens.additional_special_tokens", "tokens") if _given(d, k)]
        d.set("tokenizer.special_tokens", list(dict.fromkeys([*old, *add])), *keys)
    _empty(d, "special_tokens", "tokens", "eot_tokens")
    if _given(d, "eot_tokens"):
        d.approx("recipec supervises the token that closes each turn as the template writes it", "eot_tokens")


# -- schedule ----------------------------------------------------------------------------


def warmup_steps(d: Draft, total: int) -> int:
    """axolotl's warmup for a run of `total` steps (core/builders/base.py)."""
    steps, ratio = num(d.get("warmup_steps")), num(d.get("warmup_ratio"))
    if steps is not None:
        w = int(steps)
    elif ratio is not None:
        w = max(int(ratio * total), 0)
    else:
        w = min(int(0.03 * total), 100)
    return 2 if w == 1 else w


def _schedule(d: Draft, total: int | None) -> None:
    name = d.get("lr_scheduler") or "cosine"
    min_ratio = num(d.get("cosine_min_lr_ratio"))
    const_ratio = num(d.get("cosine_constant_lr_ratio"))
    quadratic = d.get("lr_quadratic_warmup") is True
    for k in ("cosine_min_lr_ratio", "cosine_constant_lr_ratio", "lr_quadratic_warmup"):
        if d.has(k) and d.get(k) is None:
            d.exact(k)
    if d.has("lr_div_factor"):
        d.drop("lr_div_factor", "ignored-by-tool", "axolotl reads it nowhere (one_cycle takes div_factor from lr_scheduler_kwargs).")
        if d.get("lr_div_factor") is not None:
            d.warn("`lr_div_factor` is ignored: axolotl never reads it; one_cycle takes `div_factor` from lr_scheduler_kwargs", "lr_div_factor")
    if name in ("one_cycle", "rex"):
        _alternate(d, name, total)
        return
    if name == "constant":
        for k in ("warmup_steps", "warmup_ratio"):
            if _given(d, k) and num(d.get(k)):
                d.drop(k, "ignored-by-tool", "transformers' constant schedule has no warmup; use constant_with_warmup.")
                d.warn(f"`{k}: {d.get(k)}` is ignored: lr_scheduler 'constant' has no warmup", k, "lr_scheduler")
            elif d.has(k):
                d.exact(k)
    else:
        _warmup(d, total)
    if name != "cosine":
        for k in ("cosine_min_lr_ratio", "cosine_constant_lr_ratio", "lr_quadratic_warmup"):
            if _given(d, k):
                d.drop(k, "ignored-by-tool", f"read only with lr_scheduler cosine, not {name!r}.")
                d.warn(f"`{k}` is ignored: axolotl reads it only with lr_scheduler cosine", k, "lr_scheduler")
        return
    if quadratic:
        d.set("schedule.decay", "cosine", "lr_quadratic_warmup", *(["lr_scheduler"] if d.has("lr_scheduler") else []))
        d.set("schedule.min_lr_ratio", 0.0, "lr_quadratic_warmup")
        d.approx("a quadratic warmup ((s / W) ** 2); recipec's warmup is linear", "lr_quadratic_warmup")
        for k in ("cosine_min_lr_ratio", "cosine_constant_lr_ratio"):
            if _given(d, k):
                d.drop(k, "ignored-by-tool", "lr_quadratic_warmup wins: its cosine decays to 0.")
                d.warn(f"`{k}` is ignored: lr_quadratic_warmup's cosine decays to 0", k, "lr_quadratic_warmup")
        return
    if min_ratio and const_ratio:
        _cosine_constant(d, float(min_ratio), float(const_ratio), total)
        return
    if min_ratio:
        # get_cosine_schedule_with_min_lr: (1 - m) * cosine + m, the same as recipec's cosine to m
        d.set("schedule.min_lr_ratio", float(min_ratio), "cosine_min_lr_ratio")
        if min_ratio >= 1:
            d.warn(f"`cosine_min_lr_ratio: {min_ratio}` is a floor at the peak: the LR never decays", "cosine_min_lr_ratio")
        if d.has("lr_scheduler_kwargs"):
            d.drop("lr_scheduler_kwargs", "ignored-by-tool", "axolotl's cosine with cosine_min_lr_ratio takes no kwargs.")
    elif d.has("cosine_min_lr_ratio"):
        d.exact("cosine_min_lr_ratio")
    if d.has("cosine_constant_lr_ratio") and not const_ratio:
        d.exact("cosine_constant_lr_ratio")  # 0: no constant part
    if const_ratio and not min_ratio:
        d.drop("cosine_constant_lr_ratio", "ignored-by-tool", "read only with cosine_min_lr_ratio.")
        d.warn("`cosine_constant_lr_ratio` is ignored without `cosine_min_lr_ratio`", "cosine_constant_lr_ratio")


def _warmup(d: Draft, total: int | None) -> None:
    ks, kr = "warmup_steps", "warmup_ratio"
    steps, ratio = num(d.get(ks)), num(d.get(kr))
    if steps is not None:
        w = 2 if int(steps) == 1 else int(steps)
        d.set("schedule.warmup", w, ks, note="axolotl makes one warmup step two" if w != steps else "")
        if _given(d, kr):
            d.drop(kr, "ignored-by-tool", "warmup_steps wins over warmup_ratio.")
            d.warn(f"`{kr}: {ratio}` is ignored: `{ks}: {steps}` is set and wins", kr, ks)
        _empty(d, kr)
    elif ratio is not None:
        _empty(d, ks)
        if total is not None:
            d.set("schedule.warmup", warmup_steps(d, total), kr, "max_steps", note=f"int({ratio} * {total} steps)")
        elif ratio == 0:
            d.set("schedule.warmup", 0, kr)
        else:
            d.set("schedule.warmup", float(ratio), kr, approx="axolotl rounds ratio * steps down (one step becomes two), recipec up: one step more when it is not whole")
    else:
        _empty(d, ks, kr)
        if total is not None:
            d.default("schedule.warmup", warmup_steps(d, total), ks, f"min(int(0.03 * {total} steps), 100)")
        else:
            d.default("schedule.warmup", 0.03, ks, "axolotl's warmup min(int(0.03 * steps), 100): 3% of the run up to 3,333 steps (recipec rounds up, axolotl down; longer runs warm up for 100 steps)")


def _cosine_constant(d: Draft, m: float, c: float, total: int | None) -> None:
    """get_cosine_schedule_with_warmup_decay_constant: warmup, cosine to m until
    int(total * c), then m: explicit phases."""
    w = d.value("schedule.warmup")
    phases: list[dict[str, Any]] = []
    if w:
        phases.append({"name": "warmup", "shape": "linear", "start": 0.0, "end": 1.0, **({"steps": w} if isinstance(w, int) else {"fraction": w})})
    if total is not None:
        phases.append({"name": "decay", "shape": "cosine", "end": m, "steps": int(total * c) - (w if isinstance(w, int) else 0)})
        phases.append({"name": "constant", "shape": "constant", "start": m, "steps": total - int(total * c)})
        approx = None
    else:
        phases.append({"name": "decay", "shape": "cosine", "end": m})
        phases.append({"name": "constant", "shape": "constant", "start": m, "fraction": round(1 - c, 12)})
        approx = "the constant part starts at int(steps * cosine_constant_lr_ratio) (rounded down); recipec rounds the fraction to the nearest step"
    d.unset("schedule.warmup")
    d.unset("schedule.decay")
    d.unset("schedule.min_lr_ratio")
    d.set("schedule.min_lr_ratio", m, "cosine_min_lr_ratio")
    d.set("schedule.phases", phases, "cosine_constant_lr_ratio", "cosine_min_lr_ratio", *[k for k in ("warmup_steps", "warmup_ratio", "lr_scheduler") if _given(d, k)], approx=approx)


def _alternate(d: Draft, name: str, total: int | None) -> None:
    kw = d.get("lr_scheduler_kwargs") or {}
    _warmup(d, total)
    if name == "one_cycle":
        div = float(num(kw.get("div_factor", 25.0)))
        final = float(num(kw.get("final_div_factor", 1e4)))
        w = d.value("schedule.warmup") or 0
        d.unset("schedule.warmup")
        d.unset("schedule.decay")
        d.unset("schedule.min_lr_ratio")
        up = {"steps": w} if isinstance(w, int) else {"fraction": w}
        phases = [
            {"name": "warmup", "shape": "cosine", "start": 1.0 / div, "end": 1.0, **up},
            {"name": "anneal", "shape": "cosine", "end": 1.0 / (div * final)},
        ]
        d.set("schedule.min_lr_ratio", 1.0 / (div * final), "lr_scheduler")
        d.set("schedule.phases", phases, "lr_scheduler", approx="torch's OneCycleLR (cosine up from lr / div_factor, cosine down to lr / (div_factor * final_div_factor)); its phases end one step early")
    else:
        d.set("schedule.decay", "linear", "lr_scheduler", approx="the REX decay (1 - p) / (0.1 + 0.9 (1 - p)) is written as a linear decay")
        m = num(d.get("cosine_min_lr_ratio")) or 0.0
        d.set("schedule.min_lr_ratio", float(m), *(["cosine_min_lr_ratio"] if d.has("cosine_min_lr_ratio") else ["lr_scheduler"]))
    if d.has("lr_scheduler_kwargs"):
        d.exact("lr_scheduler_kwargs")


# -- saving, evaluation, logging -------------------------------------------------------------


def _epochs(d: Draft) -> float:
    return float(num(d.get("num_epochs")) or 1.0)


def _share_in_epochs(d: Draft, steps_key: str, per_epoch: Any, epochs: float) -> Fraction:
    """A share of the run (`save_steps` or `eval_steps` below 1, or 1 / (per_epoch * num_epochs)) in epochs."""
    if _given(d, steps_key):
        return Fraction(str(num(d.get(steps_key)))) * Fraction(str(epochs))
    return 1 / Fraction(str(per_epoch))


def _epochs_rounding(epochs: float, what: str) -> str | None:
    """Why a share of the run in epochs is approximate: None when num_epochs is whole.

    transformers takes ceil(share * max_steps), max_steps = ceil(num_epochs * steps per epoch); recipec
    ceil(share * num_epochs * steps_per_epoch): the same number when num_epochs is whole."""
    if float(epochs).is_integer():
        return None
    return (
        f"transformers places a {what} every ceil(share * ceil({epochs:g} * steps per epoch)) steps, recipec every "
        f"ceil(share * {epochs:g} * steps_per_epoch): a step apart at most"
    )


def _save_eval_log(d: Draft, total: int | None) -> None:
    epochs = _epochs(d)
    # logging
    if _given(d, "logging_steps"):
        d.set("train.log_every", int(num(d.get("logging_steps"))), "logging_steps")
    else:
        every = max(min(int(0.005 * total), 10), 1) if total is not None else 10
        d.default("train.log_every", every, "logging_steps", "max(min(int(0.005 * steps), 10), 1): every 10 steps from 2,000 steps on")
        _empty(d, "logging_steps")
    # saving (core/builders/base.py _configure_save_and_eval_strategy)
    save_steps = num(d.get("save_steps"))
    spe = num(d.get("saves_per_epoch"))
    if spe and not save_steps:
        frac = 1.0 / (spe * epochs)
        if frac < 1:
            save_steps = frac
    if save_steps:
        keys = [k for k in ("save_steps", "saves_per_epoch") if _given(d, k)]
        if save_steps >= 1:
            d.set("train.save_every", int(save_steps), *keys)
            if _given(d, "saves_per_epoch") and _given(d, "save_steps"):
                d.drop("saves_per_epoch", "ignored-by-tool", "save_steps wins.")
        elif total is not None:
            d.set("train.save_every", math.ceil(total * save_steps), *keys, note=f"ceil({save_steps:g} * {total} steps)")
        else:
            share = _share_in_epochs(d, "save_steps", spe, epochs)
            d.set("train.save_every", epochs_cadence(share), *keys, approx=_epochs_rounding(epochs, "checkpoint"))
        if d.has("save_strategy"):
            d.drop("save_strategy", "ignored-by-tool", "save_steps wins.")
    else:
        strategy = d.get("save_strategy") or "epoch"
        keys = [k for k in ("save_strategy", "saves_per_epoch") if d.has(k)]
        if strategy == "no":
            d.set("train.save_every", 0, *keys)
        elif keys:
            d.set("train.save_every", "1 epoch", *keys)
        else:
            d.default("train.save_every", "1 epoch", "save_strategy", "save_strategy \"epoch\": a checkpoint at the end of each epoch")
        _empty(d, "save_steps")
    limit = d.get("save_total_limit")
    if limit:
        d.set("train.keep_last", int(limit), "save_total_limit")
    else:
        d.default("train.keep_last", 4, "save_total_limit", "the 4 newest checkpoints kept")
        _empty(d, "save_total_limit")
    # evaluation
    has_eval = bool(num(d.get("val_set_size")) or d.get("test_datasets"))
    epe = num(d.get("evals_per_epoch"))
    eval_steps = num(d.get("eval_steps"))
    eval_keys = [k for k in ("eval_steps", "evals_per_epoch", "eval_strategy") if d.has(k)]
    if not has_eval:
        given = [k for k in eval_keys if _given(d, k) and d.get(k) not in (0, "no")]
        for k in given:
            d.drop(k, "ignored-by-tool", "no held-out data (val_set_size 0, no test_datasets): nothing is evaluated.")
        for k in eval_keys:
            if k not in given:
                d.exact(k)
        if given:
            d.warn("evaluation is configured but there is no held-out data (val_set_size 0, no test_datasets): axolotl never evaluates", *given)
        _empty(d, *eval_keys)
        d.set("train.eval_every", 0, *[k for k in ("val_set_size",) if d.has(k)], note="no held-out data")
        return
    if epe and not eval_steps:
        frac = 1.0 / (epe * epochs)
        if frac < 1:
            eval_steps = frac
    strategy = d.get("eval_strategy")
    if eval_steps:
        keys = [k for k in ("eval_steps", "evals_per_epoch") if _given(d, k)]
        if eval_steps >= 1:
            d.set("train.eval_every", int(eval_steps), *keys)
        elif total is not None:
            d.set("train.eval_every", math.ceil(total * eval_steps), *keys, note=f"ceil({eval_steps:g} * {total} steps)")
        else:
            share = _share_in_epochs(d, "eval_steps", epe, epochs)
            d.set("train.eval_every", epochs_cadence(share), *keys, approx=_epochs_rounding(epochs, "evaluation"))
        if _given(d, "evals_per_epoch") and _given(d, "eval_steps"):
            d.drop("evals_per_epoch", "ignored-by-tool", "eval_steps wins.")
        if d.has("eval_strategy"):
            d.drop("eval_strategy", "ignored-by-tool", "eval_steps wins.")
    elif strategy == "epoch":
        keys = [k for k in ("eval_strategy", "evals_per_epoch") if d.has(k)]
        d.set("train.eval_every", "1 epoch", *keys)
    elif strategy and strategy != "no":
        keys = [k for k in ("eval_strategy", "evals_per_epoch") if d.has(k)]
        d.set("train.eval_every", 0, *keys, approx=f"eval_strategy {strategy!r}; recipec evaluates every so many steps, written as only at the end")
    else:
        keys = [k for k in ("eval_strategy", "evals_per_epoch") if d.has(k)]
        if keys:
            d.set("train.eval_every", 0, *keys, approx="transformers' eval_strategy \"no\": axolotl evaluates before the first step only; recipec at the end too")
        else:
            d.default("train.eval_every", 0, "eval_steps", "eval_strategy \"no\": no evaluation during training")
    # core/builders/base.py turns on transformers' eval_on_start with eval_steps or eval_strategy
    if eval_steps or strategy:
        d.set("train.eval_at_start", True, note="axolotl sets eval_on_start with eval_steps or eval_strategy")
    else:
        d.default("train.eval_at_start", False, "eval_steps", "no evaluation before the first step (eval_on_start stays off)")
    _empty(d, *eval_keys)


# -- launch, trackers ----------------------------------------------------------------------


RING = "axolotl splits the sequence with ring-flash-attn (a ring of flash-attention kernels, its own sequence split)"


def _mesh(d: Draft, given: int) -> None:
    """axolotl's device mesh (utils/distributed.py, build_parallelism_config): tensor_parallel_size,
    context_parallel_size, dp_replicate_size and dp_shard_size.
    axolotl splits the sequence with ring-flash-attn under FSDP and DeepSpeed alike: under FSDP 2
    that is recipec's context parallelism (torch's ring attention), under DeepSpeed its sequence
    parallelism (Ulysses); the global batch counts the data-parallel ranks, as axolotl's
    (world_size / context_parallel_size / tensor_parallel_size)."""
    from .mesh import Dim, Mesh, place

    m = Mesh()
    cp_key = "context_parallel_size" if _given(d, "context_parallel_size") else None
    cp = int(num(d.get(cp_key))) if cp_key else 1
    if cp_key:
        if d.value("launch.strategy") == "deepspeed":
            m.sp_size = Dim(cp, (cp_key,), approx=f"{RING}; recipec's sp_size is DeepSpeed's Ulysses, which exchanges attention heads all-to-all: the same attention, other communication, and the heads must divide by sp_size")
        else:
            m.cp_size = Dim(cp, (cp_key,), approx=f"{RING}; recipec's cp_size runs torch's ring attention over sdpa: the same attention, other kernels")
    if _given(d, "tensor_parallel_size"):
        m.tp_size = Dim(int(num(d.get("tensor_parallel_size"))), ("tensor_parallel_size",))
    if _given(d, "dp_replicate_size"):
        m.dp_replicate_size = Dim(int(num(d.get("dp_replicate_size"))), ("dp_replicate_size",))
    if _given(d, "dp_shard_size"):
        m.shard = Dim(int(num(d.get("dp_shard_size"))), ("dp_shard_size",))
    if m.asked() or m.shard is not None:
        place(d, given, m, lambda dp, note: hf.batch(d, dp, RENAME, DEFAULTS, ranks=note))
    split = m.kept.get("cp_size", 1) > 1 or m.kept.get("sp_size", 1) > 1
    for k, default in (("heads_k_stride", 1), ("ring_attn_func", None)):
        if not _given(d, k):
            continue
        v = d.get(k)
        if cp <= 1:
            d.drop(k, "ignored-by-tool", "read only with context_parallel_size above 1.")
        elif not split:
            d.drop(k, "no-equivalent", f"tunes the ring attention of `{cp_key}`, which is not imported.")
        elif v == default or (k == "ring_attn_func" and v == ("varlen_llama3" if d.value("data.packing") else "batch_ring")):
            d.exact(k)  # axolotl's default, and a setting of ring-flash-attn's kernels only
        else:
            d.drop(k, "no-equivalent", "a setting of ring-flash-attn's kernels (how the K/V heads or the sequence are exchanged); recipec's split runs its own.")


def _plugins(d: Draft) -> None:
    """`plugins`: Cut Cross Entropy -> `loss.cross_entropy = "chunked"`; any other plugin is not imported.

    axolotl's CutCrossEntropyPlugin turns `cut_cross_entropy` on unless the config sets it to
    false (CutCrossEntropyArgs, default true): a Triton kernel computes the loss without the
    logits. recipec's chunked cross-entropy computes the same loss with one chunk of logits at
    a time, but not with tensor parallelism (the mesh is kept instead).
    """
    plugins = d.get("plugins")
    names = [str(p) for p in plugins] if isinstance(plugins, list) else [str(plugins)]
    others = [n.rsplit(".", 1)[-1] for n in names if not n.endswith("CutCrossEntropyPlugin")]
    if others:
        d.drop("plugins", "missing-feature", f"axolotl's plugins {', '.join(others)} change kernels recipec does not have.")
        return
    if d.get("cut_cross_entropy") is False:
        d.exact("plugins")  # loaded, and turned off
        return
    if int(num(d.get("tensor_parallel_size") or 1)) > 1:
        d.drop("plugins", "missing-feature", "recipec's chunked cross-entropy, its stand-in for Cut Cross Entropy, does not run with tensor_parallel_size above 1.")
        return
    if d.value("launch.strategy") == "fsdp" and d.value("launch.fsdp.version") == 1:
        d.drop("plugins", "missing-feature", "recipec's chunked cross-entropy, its stand-in for Cut Cross Entropy, runs under FSDP 2, and this config uses FSDP 1.")
        return
    d.set(
        "loss.cross_entropy", "chunked", "plugins",
        approx="Cut Cross Entropy computes the loss in a kernel that never holds the logits; recipec's chunked cross-entropy computes "
        "the same loss and gradients with loss.chunk_size tokens of logits at a time",
    )


def _parallel(d: Draft) -> None:
    _deepspeed(d)
    fsdp, cfg = d.get("fsdp"), d.get("fsdp_config")
    if not fsdp and not cfg:
        _empty(d, "fsdp", "fsdp_config", "fsdp_version")
        return
    if d.value("launch.strategy") == "deepspeed":
        d.drop("fsdp_config" if cfg else "fsdp", "ignored-by-tool", "deepspeed is set too.")
        return
    keys = [k for k in ("fsdp", "fsdp_config") if _given(d, k)]
    d.set("launch.strategy", "fsdp", *keys)
    cfg = cfg if isinstance(cfg, dict) else {}
    get = lambda k: cfg.get(k, cfg.get("fsdp_" + k))  # noqa: E731
    version = get("version") if get("version") is not None else d.get("fsdp_version")
    for k in ("fsdp_config.fsdp_version", "fsdp_config.version", "fsdp_version"):
        if d.has(k):
            d.set("launch.fsdp.version", int(num(d.get(k))), k)
    if version is None:
        d.set("launch.fsdp.version", 1, *keys, note="FSDP version 1 unless fsdp_version says 2")
    words = fsdp if isinstance(fsdp, list) else str(fsdp or "").split()
    for w in words:
        if w in ("full_shard", "shard_grad_op", "hybrid_shard", "no_shard"):
            d.set("launch.fsdp.sharding_strategy", w, "fsdp")
        elif w == "offload":
            d.set("launch.fsdp.cpu_offload", True, "fsdp")
    for k, v in cfg.items():
        name = k[5:] if k.startswith("fsdp_") and k != "fsdp_version" else k
        key = f"fsdp_config.{k}"
        if name in ("fsdp_version", "version"):
            continue
        if name == "offload_params":
            d.set("launch.fsdp.cpu_offload", bool(v), key)
        elif name == "state_dict_type" or name == "final_state_dict_type":
            d.set("launch.fsdp.state_dict_type", "sharded" if v == "SHARDED_STATE_DICT" else "full", key, approx=None if v != "LOCAL_STATE_DICT" else "a local state dict is written as a sharded one")
        elif name == "auto_wrap_policy":
            d.set("launch.fsdp.auto_wrap_policy", "size" if v == "SIZE_BASED_WRAP" else "transformer_layer", key)
        elif name == "transformer_layer_cls_to_wrap":
            d.set("launch.fsdp.transformer_layer_cls", [c.strip() for c in v.split(",")] if isinstance(v, str) else list(v), key)
        elif name == "min_num_params":
            d.set("launch.fsdp.min_num_params", int(v), key)
        elif name == "activation_checkpointing":
            d.set("launch.fsdp.activation_checkpointing", bool(v), key)
            if v and d.value("model.gradient_checkpointing"):
                d.set("model.gradient_checkpointing", False, "gradient_checkpointing", approx="FSDP's activation checkpointing recomputes the layers already; recipec does it once")
        elif name == "reshard_after_forward":
            if v is False:
                d.approx("parameters stay gathered after the forward pass (ZeRO-2 style); recipec reshards", key)
            else:
                d.exact(key)
        elif name in _FSDP_IGNORED.split():
            d.drop(key, "ignored-by-tool", "axolotl's FSDPConfig has no such field and drops it.")
            d.warn(f"`{key}` is ignored: axolotl's fsdp_config has no `{name}`", key)
        elif name in ("cpu_ram_efficient_loading", "sync_module_states", "use_orig_params", "cpu_offload_pin_memory"):
            d.exact(key)  # loading and bookkeeping: the same training
        else:
            d.approx("recipec's FSDP uses its own setting", key)


def _deepspeed(d: Draft) -> None:
    """recipec's DeepSpeed runs AdamW: with another optimizer the ZeRO stage becomes FSDP's matching
    sharding."""
    if d.value("launch.strategy") != "deepspeed":
        return
    optim = d.value("optim.name")
    if optim == "adamw":
        return
    stage = d.value("launch.deepspeed.zero_stage") or 2
    d.tables.pop("launch.deepspeed", None)
    d.set("launch.strategy", "fsdp", "deepspeed", approx=f"DeepSpeed ZeRO-{stage} becomes FSDP: recipec's DeepSpeed does not train with the optimizer {optim!r}")
    d.set("launch.fsdp.sharding_strategy", "full_shard" if stage == 3 else "shard_grad_op", "deepspeed", approx=f"ZeRO-{stage}'s sharding")


def _trackers(d: Draft) -> None:
    trackers = []
    on = {
        "wandb": bool(d.get("wandb_project")) or d.get("use_wandb") is True,
        "mlflow": bool(d.get("mlflow_experiment_name")) or d.get("use_mlflow") is True,
        "tensorboard": d.get("use_tensorboard") is True,
    }
    for name, yes in on.items():
        if yes:
            trackers.append(name)
    keys = [k for k in d.values if re.match(r"(use_)?(wandb|mlflow|tensorboard)", k) and _given(d, k)]
    if trackers:
        d.set("output.trackers", trackers, *[k for k in keys if k in ("wandb_project", "use_wandb", "mlflow_experiment_name", "use_mlflow", "use_tensorboard")], note="written offline under the run directory")
    for k in d.values:
        if re.match(r"(use_)?(wandb|mlflow|comet|trackio|swanlab|otel|hf_mlflow)", k) and k not in d.ledger:
            if _given(d, k):
                d.drop(k, "not-for-training", "")
            else:
                d.exact(k)


# -- preference ---------------------------------------------------------------------------


def _preference(d: Draft) -> None:
    rl = d.get("rl")
    if d.has("reward_model") and d.get("reward_model") is False:
        d.exact("reward_model")  # the default: no reward model
    if d.get("reward_model") and not rl:
        # axolotl's RewardTrainer is TRL's: a one-label sequence classifier, -log sigmoid(chosen - rejected)
        d.set("preference.objective", "reward", "reward_model")
        if _given(d, "num_labels"):
            if num(d.get("num_labels")) == 1:
                d.exact("num_labels")
            else:
                d.drop("num_labels", "no-equivalent", "a reward model has one label; recipec builds it with num_labels = 1.")
        if _given(d, "center_rewards_coefficient"):
            d.set("preference.center_rewards_coefficient", float(num(d.get("center_rewards_coefficient"))), "center_rewards_coefficient")
        _empty(d, "rl", "num_labels", "center_rewards_coefficient")
        return
    if not rl:
        _empty(d, "rl")
        for k in ("rl_beta", "orpo_alpha", "simpo_gamma", "kto_desirable_weight", "kto_undesirable_weight"):
            if _given(d, k):
                d.drop(k, "ignored-by-tool", "no `rl`: supervised training.")
                d.warn(f"`{k}` is set but `rl` is not: axolotl trains with the supervised loss", k)
            _empty(d, k)
        return
    if rl not in ("dpo", "ipo", "orpo", "simpo", "kto"):
        d.drop("rl", "missing-feature", f"recipec has no {rl!r} trainer; the supervised loss is written.")
        return
    d.set("preference.objective", rl, "rl")
    beta_key = next((k for k in ("rl_beta", "orpo_alpha") if _given(d, k)), None)
    if rl == "simpo":
        beta = num(d.get(beta_key)) if beta_key == "rl_beta" else 0.1
        if beta_key == "rl_beta":
            d.set("preference.beta", float(beta), beta_key)
        else:
            d.default("preference.beta", 0.1, "rl_beta", "TRL's CPOConfig beta 0.1")
        gamma = num(d.get("simpo_gamma"))
        if gamma is not None:
            d.set("preference.gamma", float(gamma), "simpo_gamma")
        else:
            d.default("preference.gamma", 0.5, "simpo_gamma", "TRL's simpo_gamma 0.5")
        # CPO-SimPO: TRL's CPOTrainer adds cpo_alpha x the chosen completions' NLL, 1.0 unless the config says otherwise
        if not _given(d, "cpo_alpha"):
            _empty(d, "cpo_alpha")
            d.default("preference.sft_weight", 1.0, "cpo_alpha", "TRL's CPOConfig cpo_alpha 1.0: SimPO plus the chosen completions' NLL (CPO-SimPO)")
        elif num(d.get("cpo_alpha")):
            d.set("preference.sft_weight", float(num(d.get("cpo_alpha"))), "cpo_alpha")
        else:
            d.exact("cpo_alpha")
    elif beta_key:
        d.set("preference.beta", float(num(d.get(beta_key))), beta_key)
    else:
        d.default("preference.beta", 0.1, "rl_beta", "TRL's beta 0.1")
    for k in ("rl_beta", "orpo_alpha"):
        if _given(d, k) and k != beta_key and k not in d.ledger:
            d.drop(k, "ignored-by-tool", f"`{beta_key}` wins.")
    if rl == "kto":
        for k, target in (("kto_desirable_weight", "preference.desirable_weight"), ("kto_undesirable_weight", "preference.undesirable_weight")):
            if _given(d, k):
                d.set(target, float(num(d.get(k))), k)
    objective = _dpo_loss_type(d) if rl == "dpo" else rl
    if objective in SMOOTHED and _given(d, "dpo_label_smoothing"):
        d.set("preference.label_smoothing", float(num(d.get("dpo_label_smoothing"))), "dpo_label_smoothing")
    elif rl == "dpo" and _given(d, "dpo_label_smoothing") and num(d.get("dpo_label_smoothing")):
        d.drop("dpo_label_smoothing", "ignored-by-tool", f"TRL's {objective} loss reads no label_smoothing.")
    if rl == "dpo" and _given(d, "dpo_use_weighting"):
        if not d.get("dpo_use_weighting"):
            d.exact("dpo_use_weighting")
        elif objective in ("aot", "aot_unpaired"):
            d.drop("dpo_use_weighting", "no-equivalent", "TRL refuses WPO's weights with its aot losses (they sort the pairs).")
        else:
            d.set("preference.wpo", True, "dpo_use_weighting")
    if d.get("precompute_ref_log_probs"):
        d.set("preference.reference", "precomputed", "precompute_ref_log_probs")
    if rl in ("dpo", "ipo") and d.get("sample_packing"):
        d.warn("`sample_packing` with `rl`: axolotl's preference trainers do not pack", "sample_packing", "rl")


TRL_LOSS_TYPES = {
    "sigmoid": "dpo", "ipo": "ipo", "hinge": "hinge", "robust": "robust", "bco_pair": "bco_pair", "nca_pair": "nca_pair",
    "sppo_hard": "sppo_hard", "apo_zero": "apo_zero", "apo_down": "apo_down", "sigmoid_norm": "dpo_norm", "exo_pair": "exo_pair",
    "aot": "aot", "aot_unpaired": "aot_unpaired", "discopop": "discopop",
}
"""TRL's DPOTrainer loss types that are recipec objectives (its "sft" is `preference.sft_weight`)."""

SMOOTHED = ("dpo", "robust", "exo_pair", "aot", "aot_unpaired")
"""The objectives that read `label_smoothing` (axolotl's `dpo_label_smoothing`, TRL's `label_smoothing`)."""


def _dpo_loss_type(d: Draft) -> str:
    """`rl: dpo`'s `dpo_loss_type` (TRL's loss_type) and `dpo_loss_weights`: the first loss of :data:`TRL_LOSS_TYPES`
    is the objective (its weight `objective_weight`), the others `extra_losses` with their weights, and "sft" with
    its weight `sft_weight`; returns the objective written."""
    types, weights = d.get("dpo_loss_type"), d.get("dpo_loss_weights")
    if not _given(d, "dpo_loss_type"):
        _empty(d, "dpo_loss_type", "dpo_loss_weights")
        return "dpo"
    types = [str(t) for t in types] if isinstance(types, list) else [str(types)]
    weights = [float(num(w)) for w in weights] if isinstance(weights, list) else [1.0] * len(types)
    main = [(t, w) for t, w in zip(types, weights) if t != "sft"]
    sft = [w for t, w in zip(types, weights) if t == "sft"]
    keys = [k for k in ("dpo_loss_type", "dpo_loss_weights") if _given(d, k)]
    extras = [(TRL_LOSS_TYPES.get(t), w) for t, w in main[1:]]
    summed = len(main) > 1 or (main and main[0][1] != 1.0)
    if (
        not main or main[0][0] not in TRL_LOSS_TYPES or len(sft) > 1
        or any(name not in EXTRA_LOSSES for name, _ in extras)
        or len({name for name, _ in extras} | {TRL_LOSS_TYPES[main[0][0]]}) != len(main)
        or (summed and TRL_LOSS_TYPES[main[0][0]] in ("aot", "aot_unpaired"))
    ):  # fmt: skip
        for k in keys:
            d.drop(
                k, "missing-feature",
                f"recipec's objective is one of TRL's losses ({', '.join(TRL_LOSS_TYPES)}), plus perhaps other losses of "
                f"{', '.join(k for k, v in TRL_LOSS_TYPES.items() if v in EXTRA_LOSSES)} and its sft loss, each once; not {types} weighted {weights}.",
            )  # fmt: skip
        d.warn(f"`dpo_loss_type: {types}` cannot be imported: the recipe trains DPO's sigmoid loss", *keys)
        return "dpo"
    objective = TRL_LOSS_TYPES[main[0][0]]
    if objective == "exo_pair" and not num(d.get("dpo_label_smoothing") or 0):
        for k in keys:
            d.drop(k, "no-equivalent", "TRL refuses its exo_pair loss with label_smoothing 0 (set dpo_label_smoothing, e.g. 1e-3, as the EXO paper does).")
        d.warn("`dpo_loss_type: exo_pair` cannot be imported without `dpo_label_smoothing` (TRL refuses it): the recipe trains DPO's sigmoid loss", *keys)
        return "dpo"
    if objective == "robust" and not num(d.get("dpo_label_smoothing") or 0):
        objective = "dpo"  # robust DPO with no flipped labels is DPO, and recipec's robust needs a share
        d.set("preference.objective", objective, "rl", *keys, note="TRL's robust loss with label_smoothing 0 is DPO's sigmoid loss")
    else:
        d.set("preference.objective", objective, "rl", *keys)
    if summed:
        if main[0][1] != 1.0:
            d.set("preference.objective_weight", main[0][1], *keys)
        if extras:
            d.set("preference.extra_losses", dict(extras), *keys)
    if sft and sft[0]:
        d.set("preference.sft_weight", sft[0], *keys)
    return objective


# -- the rest -----------------------------------------------------------------------------

_NOT_FOR_TRAINING = (
    "hub_model_id hub_strategy hub_revision save_safetensors dataset_prepared_path push_dataset_to_hub "
    "hf_use_auth_token strict loss_watchdog_threshold loss_watchdog_patience gc_steps gc_collect_steps "
    "dataset_processes dataset_num_proc dataset_keep_in_memory is_preprocess preprocess_iterable "
    "axolotl_config_path profiler_steps profiler_steps_start include_tkps save_first_step "
    "gradio_title gradio_share gradio_server_name gradio_server_port gradio_max_new_tokens gradio_temperature "
    "do_causal_lm_eval eval_causal_lm_metrics do_bench_eval bench_dataset bench_split eval_table_size "
    "eval_max_new_tokens generate_samples num_generation_samples generation_max_new_tokens "
    "generation_temperature generation_top_p generation_top_k generation_prompt_ratio generation_do_sample "
    "tokenizer_save_jinja_files experimental_skip_move_to_device low_cpu_mem_usage device device_map "
    "max_memory gpu_memory_limit world_size ddp merge_method lora_on_cpu qlora_sharded_model_loading "
    "num_dataset_shards_to_save sample_packing_mp_start_method sample_packing_group_size "
    "sample_packing_bin_size skip_prepare_dataset eval_sequence_len"
).split()


_LACKS: dict[str, tuple[str, str]] = {
    # key prefix -> (reason, why)
    **dict.fromkeys(("trl", "vllm", "ebft", "diffusion", "hatchery", "nemo_gym"), ("missing-feature", "online RL (GRPO), EBFT and diffusion training: recipec has no such trainer.")),
    **dict.fromkeys(("processor_type", "processor_kwargs", "image_size", "image_resize_algorithm", "role_boundaries", "freeze_mm_modules"), ("missing-feature", "recipec trains text-only causal language models.")),
    **dict.fromkeys(("quantize_moe_experts", "use_scattermoe", "use_sonicmoe", "experts_implementation", "expert_parallel", "llama4_linearized_experts", "moe_", "dsv4_", "use_dsv4_kernels", "use_glm_dsa_kernels", "gemma4_", "nvfp4_", "fused_attn_kernel", "use_onebitllms", "expert_backend", "nonexpert_quantization", "dense_mixer", "scaling_softmax", "large_head_attention", "flash_attn_d512", "sdpa_varlen", "use_eaft", "eaft_"), ("missing-feature", "a kernel or expert layout of axolotl's; recipec runs the model's own modules.")),
    **dict.fromkeys(("qat", "quantization", "model_quantization_config", "gptq"), ("missing-feature", "quantization-aware training and pre-quantized models; recipec quantizes only under [peft].")),
    **dict.fromkeys(("process_reward_model",), ("missing-feature", "process reward models (a score per step of the answer): recipec trains outcome reward models only ([preference] objective = \"reward\").")),
    **dict.fromkeys(("reward_model", "num_labels", "center_rewards_coefficient"), ("ignored-by-tool", "read only with `reward_model: true` and no `rl`.")),
    **dict.fromkeys(("lora_target_parameters", "lora_rank_pattern", "lora_alpha_pattern", "peft_layers_to_transform", "peft_layers_pattern", "peft_layer_replication", "peft_trainable_token_indices", "lora_fan_in_fan_out", "peft"), ("missing-feature", "a LoRA layout recipec's [peft] does not have.")),
    **dict.fromkeys(("relora", "lisa_", "jagged_restart", "lr_groups", "embedding_lr"), ("missing-feature", "training some parameters only, or at their own LR, by axolotl's rules.")),
    **dict.fromkeys(("tokenizer_use_mistral_common",), ("missing-feature", "recipec loads the transformers tokenizer.")),
    **dict.fromkeys(("resize_token_embeddings_to_32x", "mean_resizing_embeddings", "shrink_embeddings", "embeddings_skip_upcast", "fix_untrained_tokens"), ("no-equivalent", "recipec sizes and initialises the embeddings itself.")),
    **dict.fromkeys(("min_sample_len", "streaming_multipack_buffer_size", "pretrain_multipack_buffer_size", "multipack_real_batches", "curriculum_sampling", "batch_flattening", "sample_packing_sequentially"), ("no-equivalent", "recipec prepares and orders its batches its own way.")),
    **dict.fromkeys(("flex_attn_compile_kwargs", "pretrain_multipack_attn", "streaming", "use_ray", "ray_", "resources_per_worker"), ("no-equivalent", "how axolotl runs its data or attention stage; recipec's own stage does the same work.")),
    **dict.fromkeys(("fp8",), ("missing-feature", "recipec trains in bf16, fp16 or fp32.")),
    **dict.fromkeys(("bnb_config_kwargs",), ("no-equivalent", "recipec's bitsandbytes settings are its own (nf4, double quantization).")),
}


def _rest(d: Draft) -> None:
    if d.get("dataset_exact_deduplication"):
        d.set("data.filters", [{"type": "exact_dedup", "normalize": False}], "dataset_exact_deduplication", approx="axolotl drops repeated rows of the tokenized datasets (train and eval); recipec drops repeated documents by their text")
    for k in list(d.values):
        if k in d.ledger:
            continue
        hit = next((v for p, v in _LACKS.items() if k == p or k.startswith(p) and (p.endswith("_") or k[len(p)] in ".[_")), None)
        if hit:
            d.drop(k, hit[0], hit[1])
    if _given(d, "shuffle_merged_datasets"):
        if d.get("shuffle_merged_datasets"):
            d.exact("shuffle_merged_datasets")
        else:
            d.approx("recipec shuffles the training examples", "shuffle_merged_datasets")
    for k in _NOT_FOR_TRAINING:
        if d.has(k) and not all(x in d.ledger for x in d.keys_under(k)):
            if _given(d, k):
                d.drop(k, "not-for-training", "")
            else:
                d.exact(k)
    if _given(d, "early_stopping_patience"):
        hf.early_stopping(d, "early_stopping_patience")
    hf.best_model(d)
    if _given(d, "plugins"):
        _plugins(d)
    for k in ("cut_cross_entropy", "chunked_cross_entropy"):
        if _given(d, k) and d.get(k):
            d.set("loss.cross_entropy", "chunked", k, approx="a fused or chunked cross-entropy: recipec's chunked cross-entropy gives the same loss with the logits in chunks")
    liger = [k for k in d.values if k.startswith("liger_") and k not in d.ledger]
    for k in liger:
        if d.get(k):
            d.drop(k, "missing-feature", "recipec has no Liger kernels; the model's own modules compute the same values.")
        else:
            d.exact(k)
    for k in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel", "use_kernels", "flash_attn_cross_entropy", "flash_attn_rms_norm", "flash_attn_fuse_mlp"):
        if d.has(k) and k not in d.ledger:
            if d.get(k):
                d.drop(k, "missing-feature", "a fused kernel; recipec runs the model's own modules (the same values).")
            else:
                d.exact(k)
    if d.has("tiled_mlp"):
        if d.get("tiled_mlp"):
            # ALST's TiledMLP: the same values, the MLP's activations recomputed a tile at a time
            d.set("model.tiled_mlp", True, "tiled_mlp")
            if d.get("tiled_mlp_num_shards") is not None:
                d.set("model.tiled_mlp_shards", int(num(d.get("tiled_mlp_num_shards"))), "tiled_mlp_num_shards")
            elif d.has("tiled_mlp_num_shards"):
                d.exact("tiled_mlp_num_shards")  # null: ceil(seqlen / hidden_size), recipec's default too
            if d.has("tiled_mlp_use_original_mlp"):
                if d.get("tiled_mlp_use_original_mlp") is False:
                    d.approx("axolotl tiles a generic Llama MLP; recipec tiles the model's own MLP (the same values for a SwiGLU MLP)", "tiled_mlp_use_original_mlp")
                else:
                    d.exact("tiled_mlp_use_original_mlp")
        else:
            d.exact("tiled_mlp")
            for k in ("tiled_mlp_num_shards", "tiled_mlp_use_original_mlp"):
                if d.has(k):
                    d.drop(k, "ignored-by-tool", "read only with `tiled_mlp: true`.")
    if d.get("activation_offloading"):
        how = d.get("activation_offloading")
        where = "to disk" if how == "disk" else "with its own hooks"
        d.set(
            "model.activation_offloading",
            True,
            "activation_offloading",
            approx=f"axolotl offloads activations {where}; recipec copies them to host memory on the compute stream, "
            "parameters kept on the device (the same values; the memory and time each saves may differ)",
        )
    for k in d.values:
        if k not in d.ledger and not _given(d, k):
            d.exact(k)  # an empty key: axolotl's default, which the recipe has
