"""LLaMA-Factory's training YAML (`llamafactory-cli train config.yaml`).

Its keys are the fields of LLaMA-Factory's argument dataclasses (src/llamafactory/hparams:
ModelArguments, DataArguments, FinetuningArguments, GeneratingArguments) and of its
TrainingArguments, which is transformers' `Seq2SeqTrainingArguments` plus a few of its own:
the transformers part is mapped by :mod:`.hf`, the rest here.

Datasets are names of `dataset_info.json` in `dataset_dir`: a `dataset_info.json` found there
(relative to the directory `recipec import` runs in, or to the config's own directory) is
read; otherwise the entries that LLaMA-Factory ships for its common names are used
(:data:`DATASETS`). A hub entry becomes a hub source, a file entry a local path under
`dataset_dir`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import hf
from .core import Draft, Legacy, OldValue, Removed, num
from .llama_factory_templates import NOT_WRITTEN, SENTENCEPIECE, TEMPLATES, chat_template

VERSION = "LLaMA-Factory 0.9.5"

MODEL_ARGUMENTS: tuple[str, ...] = (
    # ModelArguments and its bases (model_args.py); compute_dtype, device_map, model_max_length
    # and block_diag_attn are init=False: not settable
    "model_name_or_path", "adapter_name_or_path", "adapter_folder", "cache_dir", "use_fast_tokenizer",
    "resize_vocab", "split_special_tokens", "add_tokens", "add_special_tokens", "new_special_tokens_config",
    "init_special_tokens", "model_revision", "low_cpu_mem_usage", "rope_scaling", "flash_attn", "shift_attn",
    "mixture_of_depths", "use_unsloth", "use_unsloth_gc", "enable_liger_kernel", "moe_aux_loss_coef",
    "disable_gradient_checkpointing", "use_reentrant_gc", "upcast_layernorm", "upcast_lmhead_output",
    "train_from_scratch", "infer_backend", "offload_folder", "use_kv_cache", "use_v1_kernels", "infer_dtype",
    "hf_hub_token", "ms_hub_token", "om_hub_token", "print_param_status", "trust_remote_code",
    "quantization_method", "quantization_bit", "quantization_type", "double_quantization",
    "quantization_device_map", "image_max_pixels", "image_min_pixels", "image_do_pan_and_scan", "crop_to_patches",
    "video_max_pixels", "video_min_pixels", "video_fps", "video_maxlen", "use_audio_in_video",
    "audio_sampling_rate", "export_dir", "export_size", "export_device", "export_quantization_bit",
    "export_quantization_dataset", "export_quantization_nsamples", "export_quantization_maxlen",
    "export_legacy_format", "export_hub_model_id", "vllm_maxlen", "vllm_gpu_util", "vllm_enforce_eager",
    "vllm_max_lora_rank", "vllm_config", "vllm_config.*", "sglang_maxlen", "sglang_mem_fraction", "sglang_tp_size",
    "sglang_config", "sglang_config.*", "sglang_lora_backend", "use_kt", "kt_weight_path", "kt_expert_checkpoint_path",
    "kt_use_lora_experts", "kt_lora_expert_num", "kt_lora_expert_intermediate_size", "rope_scaling.*",
    "new_special_tokens_config.*",
)
DATA_ARGUMENTS: tuple[str, ...] = (
    "template", "dataset", "eval_dataset", "dataset_dir", "media_dir", "cutoff_len", "train_on_prompt",
    "mask_history", "streaming", "buffer_size", "mix_strategy", "interleave_probs", "overwrite_cache",
    "preprocessing_batch_size", "preprocessing_num_workers", "max_samples", "eval_num_beams",
    "ignore_pad_token_for_loss", "val_size", "eval_on_each_dataset", "packing", "neat_packing", "tool_format",
    "default_system", "enable_thinking", "preserve_thinking", "tokenized_path", "data_shared_file_system",
)
FINETUNING_ARGUMENTS: tuple[str, ...] = (
    "freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules", "additional_target",
    "lora_alpha", "lora_dropout", "lora_rank", "lora_target", "loraplus_lr_ratio", "loraplus_lr_embedding",
    "use_rslora", "use_dora", "pissa_init", "pissa_iter", "pissa_convert", "create_new_adapter", "module_dropout",
    "oft_rank", "oft_block_size", "oft_target", "pref_beta", "pref_ftx", "pref_bco_weight", "pref_loss",
    "dpo_label_smoothing", "kto_chosen_weight", "kto_rejected_weight", "simpo_gamma", "ppo_buffer_size",
    "ppo_epochs", "ppo_score_norm", "ppo_target", "ppo_whiten_rewards", "ref_model", "ref_model_adapters",
    "ref_model_quantization_bit", "reward_model", "reward_model_adapters", "reward_model_quantization_bit",
    "reward_model_type", "ld_alpha", "use_galore", "galore_target", "galore_rank", "galore_update_interval",
    "galore_scale", "galore_proj_type", "galore_layerwise", "use_apollo", "apollo_target", "apollo_rank",
    "apollo_update_interval", "apollo_scale", "apollo_proj", "apollo_proj_type", "apollo_scale_type",
    "apollo_layerwise", "apollo_scale_front", "use_badam", "badam_mode", "badam_start_block", "badam_switch_mode",
    "badam_switch_interval", "badam_update_ratio", "badam_mask_mode", "badam_verbose", "use_swanlab",
    "swanlab_project", "swanlab_workspace", "swanlab_run_name", "swanlab_mode", "swanlab_api_key",
    "swanlab_logdir", "swanlab_lark_webhook_url", "swanlab_lark_secret", "pure_bf16", "stage", "finetuning_type",
    "use_llama_pro", "use_adam_mini", "use_mca", "use_hyper_parallel", "hyper_parallel_args", "hyper_parallel_args.*",
    "use_muon", "use_dft_loss", "use_asft_loss", "asft_alpha", "use_eaft_loss", "eaft_alpha", "freeze_vision_tower",
    "freeze_multi_modal_projector", "freeze_language_model", "compute_accuracy", "disable_shuffling",
    "early_stopping_steps", "plot_loss", "include_effective_tokens_per_second",
)
GENERATING_ARGUMENTS: tuple[str, ...] = (
    "do_sample", "temperature", "top_p", "top_k", "num_beams", "max_length", "max_new_tokens",
    "repetition_penalty", "length_penalty", "skip_special_tokens",
)
TRAINING_ARGUMENTS: tuple[str, ...] = (
    # LLaMA-Factory's own fields beside Seq2SeqTrainingArguments' (training_args.py)
    "ray_num_workers", "ray_init_kwargs", "ray_init_kwargs.*", "master_addr", "master_port",
    "enable_torch_profiler", "profiler_output_dir", "profiler_wait_steps", "profiler_warmup_steps",
    "profiler_active_steps", "profiler_repeat", "profiler_record_shapes", "profiler_profile_memory",
    "profiler_with_stack", "profile_modules", "fp8", "fp8_backend", "fp8_enable_fsdp_float8_all_gather",
    "overwrite_output_dir",
)
KNOWN: tuple[str, ...] = (
    MODEL_ARGUMENTS + DATA_ARGUMENTS + FINETUNING_ARGUMENTS + GENERATING_ARGUMENTS + TRAINING_ARGUMENTS
    + hf.TRAINING_ARGUMENTS + ("deepspeed.*", "fsdp_config.*", "lr_scheduler_kwargs.*", "gradient_checkpointing_kwargs.*",
                               "accelerator_config.*", "report_to")
)
MARKERS = ("model_name_or_path", "stage", "finetuning_type", "template", "cutoff_len", "lora_target", "quantization_bit", "pref_beta")


def _lf(since: str, by: str = "") -> Removed:
    return Removed(f"LLaMA-Factory {since}", by)


LEGACY: dict[str, Legacy] = {
    # LLaMA-Factory's arguments of older releases: HfArgumentParser refuses a key of no
    # dataclass ("Some specified arguments are not used by the HfArgumentParser"), and 0.9.5
    # renames none of them (hparams/parser.py)
    "use_auth_token": _lf("0.2.1", "`hf_hub_token`"),
    "hf_auth_token": _lf("0.2.1", "`hf_hub_token`"),
    "checkpoint_dir": _lf("0.4.0", "`adapter_name_or_path`"),
    "resume_lora_training": _lf("0.4.0", "`create_new_adapter` (true for a new adapter)"),
    "ref_model_checkpoint": _lf("0.4.0", "`ref_model_adapters`"),
    "reward_model_checkpoint": _lf("0.4.0", "`reward_model_adapters`"),
    "neft_alpha": _lf("0.4.0", "`neftune_noise_alpha`"),
    "system_prompt": _lf("0.4.0", "a `system` column of the dataset"),
    "sft_packing": _lf("0.6.0", "`packing`"),
    "lora_bf16_mode": _lf("0.6.0", "`pure_bf16`"),
    "disable_version_checking": _lf("0.6.0", "the environment variable DISABLE_VERSION_CHECK=1"),
    "ppo_logger": _lf("0.6.1", "`report_to`"),
    "cache_path": _lf("0.6.2", "`tokenized_path`"),
    "name_module_trainable": _lf("0.7.1", "`freeze_trainable_modules`"),
    "num_layer_trainable": _lf("0.7.1", "`freeze_trainable_layers`"),
    "badam_switch_block_every": _lf("0.7.1", "`badam_switch_interval`"),
    "dpo_beta": _lf("0.8.0", "`pref_beta`"),
    "dpo_loss": _lf("0.8.0", "`pref_loss`"),
    "dpo_ftx": _lf("0.8.0", "`pref_ftx`"),
    "orpo_beta": _lf("0.8.0", "`pref_beta` with `pref_loss: orpo`"),
    "vllm_dtype": _lf("0.8.2", "`infer_dtype`"),
    "reserved_label_len": _lf("0.8.3"),
    "split": _lf("0.8.3"),
    "visual_inputs": _lf("0.9.0"),
    "image_resolution": _lf("0.9.2", "`image_max_pixels`"),
    "video_resolution": _lf("0.9.2", "`video_max_pixels`"),
    "image_dir": _lf("0.9.2", "`media_dir`"),
    "train_mm_proj_only": _lf("0.9.2", "`freeze_language_model` with `freeze_vision_tower`"),
    "new_special_tokens": _lf("0.9.3", "`add_special_tokens`"),
    # TrainingArguments: 0.9.5 runs on transformers 4.55 to 5.6; what transformers 4.51 removed
    # every one of them refuses, what 5.0 removed 4.55 to 4.57 still read as the new names
    "evaluation_strategy": Removed("transformers 4.51", "`eval_strategy`"),
    "dispatch_batches": Removed("transformers 4.51", "`accelerator_config: {dispatch_batches: ...}`"),
    "split_batches": Removed("transformers 4.51", "`accelerator_config: {split_batches: ...}`"),
    **hf.renamed_4x("LLaMA-Factory 0.9.5 on transformers 4.55 to 4.57 reads it as the new one (on transformers 5 it refuses it)"),
}
"""Keys of LLaMA-Factory's older releases (src/llamafactory/hparams/*.py, formerly
src/llmtuner/hparams/*.py) and of older transformers, with the release that removed each (the
first tag holding the commit that removed it) and what replaced it."""

LEGACY_VALUES: dict[str, tuple[OldValue, ...]] = {
    # 0.9.5 runs only the stages it knows (train/tuner.py: "Unknown task"); ORPO became a loss of
    # the dpo stage (commit b0d99666, "support SimPO")
    "stage": (OldValue("orpo", "LLaMA-Factory 0.8.0", by="`stage: dpo` with `pref_loss: orpo`"),),
    # a boolean until 0.6.3 (true: FlashAttention-2, false: eager); "off" until 0.8.2, which YAML
    # reads as false (commit 16e95045); 0.9.5's configure_attn_implementation raises on any value
    # that is no AttentionFunction ("Unknown attention type")
    "flash_attn": (
        OldValue(True, "LLaMA-Factory 0.7.0", by="`flash_attn: fa2`"),
        OldValue(False, "LLaMA-Factory 0.7.0", by="`flash_attn: disabled`", shown="`flash_attn: false` (or `off`, which YAML reads as false)"),
        OldValue("off", "LLaMA-Factory 0.8.3", by="`flash_attn: disabled`"),
    ),
    # "none" evaluated the base model (training with it was refused); 0.9.5's FinetuningArguments
    # asserts one of lora, oft, freeze, full (commit f5ba2190)
    "finetuning_type": (OldValue("none", "LLaMA-Factory 0.2.1"),),
    # templates 0.9.5 has not: get_template_and_fix_tokenizer raises "Template ... does not exist."
    "template": (
        *(OldValue(name, "LLaMA-Factory 0.2.1") for name in ("linly", "billa")),  # commit d602f068
        OldValue("chatglm3_raw", "LLaMA-Factory 0.5.0", by="`template: chatglm3` (tool calls)"),  # commit a423274f
        OldValue("vanilla", "LLaMA-Factory 0.6.3", by="`template: empty` or `template: fewshot`"),  # commit f8e219dc
        OldValue("chatglm3_system", "LLaMA-Factory 0.8.3", by="`template: chatglm3`"),  # commit 4513a2cc, a duplicate
        *(
            OldValue(name, "LLaMA-Factory 0.9.5 (obsolete models)")  # commit 5cccaeec
            for name in (
                "aquila", "atom", "baichuan", "baichuan2", "belle", "bluelm", "chatglm2", "codegeex2", "codegeex4",
                "cpm", "cpm3", "intern", "marco", "orion", "skywork_o1", "telechat", "xverse", "yayi", "ziya",
            )
        ),
    ),
}
"""Values of LLaMA-Factory's older releases that 0.9.5 refuses, with the first release holding
the change."""

DATASETS: dict[str, dict[str, Any]] = {
    # entries of LLaMA-Factory 0.9.5's data/dataset_info.json (the hub mirrors on ModelScope
    # and Modelers left out)
    'identity': {'file_name': 'identity.json'},
    'alpaca_en_demo': {'file_name': 'alpaca_en_demo.json'},
    'alpaca_zh_demo': {'file_name': 'alpaca_zh_demo.json'},
    'glaive_toolcall_en_demo': {'file_name': 'glaive_toolcall_en_demo.json', 'formatting': 'sharegpt', 'columns': {'messages': 'conversations', 'tools': 'tools'}},
    'dpo_en_demo': {'file_name': 'dpo_en_demo.json', 'ranking': True, 'formatting': 'sharegpt', 'columns': {'messages': 'conversations', 'chosen': 'chosen', 'rejected': 'rejected'}},
    'dpo_zh_demo': {'file_name': 'dpo_zh_demo.json', 'ranking': True, 'formatting': 'sharegpt', 'columns': {'messages': 'conversations', 'chosen': 'chosen', 'rejected': 'rejected'}},
    'kto_en_demo': {'file_name': 'kto_en_demo.json', 'formatting': 'sharegpt', 'columns': {'messages': 'messages', 'kto_tag': 'label'}, 'tags': {'role_tag': 'role', 'content_tag': 'content', 'user_tag': 'user', 'assistant_tag': 'assistant'}},
    'c4_demo': {'file_name': 'c4_demo.jsonl', 'columns': {'prompt': 'text'}},
    'wiki_demo': {'file_name': 'wiki_demo.txt', 'columns': {'prompt': 'text'}},
    'alpaca_en': {'hf_hub_url': 'llamafactory/alpaca_en'},
    'alpaca_zh': {'hf_hub_url': 'llamafactory/alpaca_zh'},
    'alpaca_gpt4_en': {'hf_hub_url': 'llamafactory/alpaca_gpt4_en'},
    'alpaca_gpt4_zh': {'hf_hub_url': 'llamafactory/alpaca_gpt4_zh'},
    'codealpaca': {'hf_hub_url': 'sahil2801/CodeAlpaca-20k'},
    'lima': {'hf_hub_url': 'llamafactory/lima', 'formatting': 'sharegpt'},
    'slimorca': {'hf_hub_url': 'Open-Orca/SlimOrca', 'formatting': 'sharegpt'},
    'ultrachat_200k': {'hf_hub_url': 'HuggingFaceH4/ultrachat_200k', 'split': 'train_sft', 'formatting': 'sharegpt', 'columns': {'messages': 'messages'}, 'tags': {'role_tag': 'role', 'content_tag': 'content', 'user_tag': 'user', 'assistant_tag': 'assistant'}},
    'open_thoughts': {'hf_hub_url': 'llamafactory/OpenThoughts-114k', 'formatting': 'sharegpt', 'columns': {'messages': 'messages'}, 'tags': {'role_tag': 'role', 'content_tag': 'content', 'user_tag': 'user', 'assistant_tag': 'assistant', 'system_tag': 'system'}},
    'openo1_sft': {'hf_hub_url': 'llamafactory/OpenO1-SFT', 'columns': {'prompt': 'prompt', 'response': 'response'}},
    'magpie_ultra': {'hf_hub_url': 'argilla/magpie-ultra-v0.1', 'columns': {'prompt': 'instruction', 'response': 'response'}},
    'evol_instruct': {'hf_hub_url': 'WizardLM/WizardLM_evol_instruct_V2_196k', 'formatting': 'sharegpt'},
    'sharegpt4': {'hf_hub_url': 'shibing624/sharegpt_gpt4', 'formatting': 'sharegpt'},
    'glaive_toolcall_en': {'hf_hub_url': 'llamafactory/glaive_toolcall_en', 'formatting': 'sharegpt', 'columns': {'messages': 'conversations', 'tools': 'tools'}},
    'dpo_mix_en': {'hf_hub_url': 'llamafactory/DPO-En-Zh-20k', 'subset': 'en', 'ranking': True, 'formatting': 'sharegpt', 'columns': {'messages': 'conversations', 'chosen': 'chosen', 'rejected': 'rejected'}},
    'dpo_mix_zh': {'hf_hub_url': 'llamafactory/DPO-En-Zh-20k', 'subset': 'zh', 'ranking': True, 'formatting': 'sharegpt', 'columns': {'messages': 'conversations', 'chosen': 'chosen', 'rejected': 'rejected'}},
    'ultrafeedback': {'hf_hub_url': 'llamafactory/ultrafeedback_binarized', 'ranking': True, 'columns': {'prompt': 'instruction', 'chosen': 'chosen', 'rejected': 'rejected'}},
    'orca_pairs': {'hf_hub_url': 'Intel/orca_dpo_pairs', 'ranking': True, 'columns': {'prompt': 'question', 'chosen': 'chosen', 'rejected': 'rejected', 'system': 'system'}},
    'kto_mix_en': {'hf_hub_url': 'argilla/kto-mix-15k', 'formatting': 'sharegpt', 'columns': {'messages': 'completion', 'kto_tag': 'label'}, 'tags': {'role_tag': 'role', 'content_tag': 'content', 'user_tag': 'user', 'assistant_tag': 'assistant'}},
    'fineweb': {'hf_hub_url': 'HuggingFaceFW/fineweb', 'columns': {'prompt': 'text'}},
    'fineweb_edu': {'hf_hub_url': 'HuggingFaceFW/fineweb-edu', 'columns': {'prompt': 'text'}},
    'refinedweb': {'hf_hub_url': 'tiiuae/falcon-refinedweb', 'columns': {'prompt': 'content'}},
    'redpajama_v2': {'hf_hub_url': 'togethercomputer/RedPajama-Data-V2', 'columns': {'prompt': 'raw_content'}, 'subset': 'default'},
    'wikipedia_en': {'hf_hub_url': 'olm/olm-wikipedia-20221220', 'columns': {'prompt': 'text'}},
    'the_stack': {'hf_hub_url': 'bigcode/the-stack', 'columns': {'prompt': 'content'}},
}
"""The dataset names LLaMA-Factory ships (data/dataset_info.json), for configs whose
`dataset_dir` is not at hand."""

OBJECTIVES = {"sigmoid": "dpo", "ipo": "ipo", "hinge": "hinge", "orpo": "orpo", "simpo": "simpo"}
"""pref_loss -> recipec's preference objective."""

ATTENTION = {"auto": "sdpa", "sdpa": "sdpa", "fa2": "flash_attention_2", "fa3": "flash_attention_3", "disabled": "eager"}

_LORA_KEYS = (
    "lora_rank", "lora_alpha", "lora_dropout", "lora_target", "additional_target", "use_rslora", "use_dora",
    "pissa_init", "pissa_iter", "pissa_convert", "loraplus_lr_ratio", "loraplus_lr_embedding", "create_new_adapter",
)

_NOT_FOR_TRAINING = (
    "overwrite_cache", "preprocessing_batch_size", "eval_num_beams", "eval_on_each_dataset", "plot_loss",
    "include_effective_tokens_per_second", "compute_accuracy", "hf_hub_token", "ms_hub_token", "om_hub_token",
    "print_param_status", "low_cpu_mem_usage", "offload_folder", "use_kv_cache", "infer_backend", "infer_dtype",
    "data_shared_file_system", "use_swanlab", "swanlab_project", "swanlab_workspace", "swanlab_run_name",
    "swanlab_mode", "swanlab_api_key", "swanlab_logdir", "swanlab_lark_webhook_url", "swanlab_lark_secret",
    "ray_num_workers", "ray_init_kwargs", "master_addr", "master_port", "enable_torch_profiler",
    "profiler_output_dir", "profiler_wait_steps", "profiler_warmup_steps", "profiler_active_steps",
    "profiler_repeat", "profiler_record_shapes", "profiler_profile_memory", "profiler_with_stack",
    "profile_modules", "quantization_device_map", "use_fast_tokenizer", "tokenized_path", "badam_verbose",
) + GENERATING_ARGUMENTS + tuple(k for k in MODEL_ARGUMENTS if k.startswith(("export_", "vllm_", "sglang_")))

_MISSING = {
    # key -> why (dropped as missing-feature when set to something other than its default)
    "enable_liger_kernel": "recipec has no Liger kernels; its `loss.cross_entropy = \"chunked\"` saves the logits' memory.",
    "use_unsloth": "recipec has no Unsloth kernels; the same model trains with transformers' own.",
    "use_unsloth_gc": "Unsloth's offloaded gradient checkpointing; recipec's is transformers'.",
    "upcast_layernorm": "recipec does not upcast the norms to float32 apart from mixed precision.",
    "upcast_lmhead_output": "recipec does not upcast the output layer's logits apart from mixed precision.",
    "shift_attn": "LongLoRA's shifted short attention.",
    "mixture_of_depths": "recipec has no mixture-of-depths conversion.",
    "rope_scaling": "recipec does not change the model's RoPE scaling.",
    "resize_vocab": "recipec grows the embeddings only for `tokenizer.special_tokens`.",
    "add_tokens": "new tokens: recipec's `tokenizer.special_tokens` adds special tokens only.",
    "add_special_tokens": "set them as `tokenizer.special_tokens`.",
    "new_special_tokens_config": "set the tokens as `tokenizer.special_tokens`.",
    "split_special_tokens": "recipec tokenizes special tokens whole.",
    "moe_aux_loss_coef": "",
    "train_from_scratch": "",
    "adapter_name_or_path": "recipec goes on training a saved adapter (peft.adapter) under LoRA only.",
    "adapter_folder": "recipec loads an adapter from its directory or hub id (peft.adapter), not from a subfolder.",
    "create_new_adapter": "a new adapter over merged ones: recipec merges only a [continual] parent's adapter.",
    "use_galore": "recipec has no GaLore optimizer.",
    "use_apollo": "recipec has no APOLLO optimizer.",
    "use_badam": "recipec has no BAdam (block-wise) optimizer.",
    "use_adam_mini": "recipec has no Adam-mini optimizer.",
    "use_llama_pro": "recipec has no LLaMA Pro block expansion.",
    "use_mca": "recipec has no Megatron-Core backend.",
    "use_hyper_parallel": "the external HyperParallel backend, whose FSDP/TP layout is in the JSON file hyper_parallel_args names (not read); recipec's mesh is [launch.parallelism].",
    "use_muon": "LLaMA-Factory's Muon (with AdamW for the rest) has its own settings; set `optim.name = \"muon\"`.",
    "use_asft_loss": "recipec has no ASFT loss.",
    "use_eaft_loss": "recipec has no EAFT loss.",
    "pref_ftx": "recipec adds a supervised term (preference.sft_weight) to DPO, IPO, hinge and SimPO only.",
    "pref_bco_weight": "recipec has no BCO loss term.",
    "ld_alpha": "recipec's LD-DPO (preference.ld_alpha) applies to DPO, IPO and hinge.",
    "ref_model": "recipec's reference model is the model it starts from.",
    "ref_model_adapters": "recipec's reference model is the model it starts from.",
    "ref_model_quantization_bit": "recipec's reference model is the model it starts from.",
    "fp8": "recipec has no FP8 training.",
    "disable_shuffling": "recipec shuffles the training data in its seeded order.",
    "use_kt": "recipec has no KTransformers backend.",
    "streaming": "",
    "default_system": "recipec's chat template decides the system prompt; put it into `tokenizer.chat_template`.",
    "tool_format": "recipec's chat template renders tool calls.",
    "preserve_thinking": "",
    "use_v1_kernels": "LLaMA-Factory's own fused kernels; recipec runs transformers' modules.",
}
_DEFAULTS = {
    # LLaMA-Factory's defaults of the keys above, where not false/None
    "use_fast_tokenizer": True, "low_cpu_mem_usage": True, "use_kv_cache": True, "use_reentrant_gc": True,
    "double_quantization": True, "quantization_type": "nf4", "quantization_method": "bnb", "model_revision": "main",
    "freeze_vision_tower": True, "freeze_multi_modal_projector": True, "ignore_pad_token_for_loss": True,
    "enable_thinking": True, "init_special_tokens": "noise_init", "pissa_iter": 16, "loraplus_lr_embedding": 1e-6,
    "kto_chosen_weight": 1.0, "kto_rejected_weight": 1.0, "simpo_gamma": 0.5, "dpo_label_smoothing": 0.0,
    "pref_ftx": 0.0, "pref_bco_weight": 0.0, "buffer_size": 16384, "mix_strategy": "concat",
    "dataset_dir": "data", "flash_attn": "auto", "fp8_backend": "auto", "media_dir": None,
    "pref_beta": 0.1, "pref_loss": "sigmoid",
}


def _split(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _is_default(d: Draft, key: str) -> bool:
    value = d.get(key)
    return value == _DEFAULTS.get(key) or (key not in _DEFAULTS and value in (None, False, "", [], {}, 0))


def _dataset_info(d: Draft, dataset_dir: str) -> tuple[dict[str, Any], str | None]:
    """The dataset_info.json of dataset_dir when it can be found, else the shipped names."""
    for base in (Path.cwd(), Path(d.config.path).parent):
        path = base / dataset_dir / "dataset_info.json"
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8")), path.as_posix()
            except (OSError, json.JSONDecodeError):
                break
    return DATASETS, None


def convert(d: Draft, options) -> None:  # noqa: ANN001 (Options: no import cycle)
    stage = str(d.get("stage", "sft"))
    _model(d, options)
    hf.training_args(d, options.num_processes, defaults=hf.DEFAULTS)
    _gradient_checkpointing(d)
    records = _stage(d, stage)
    _dft(d, stage)
    _peft(d, stage)
    _data(d, stage, records)
    _kto_batch(d, records, options.num_processes)
    hf.mesh(d, options.num_processes, defaults=hf.DEFAULTS)
    _rest(d)


def _dft(d: Draft, stage: str) -> None:
    """`use_dft_loss`: LLaMA-Factory's supervised trainer computes Dynamic Fine-Tuning's loss (loss.type "dft"), unless
    the Trainer's label smoother (label_smoothing_factor) computes the loss first; other stages do not read it."""
    if not d.has("use_dft_loss"):
        return
    if not d.get("use_dft_loss"):
        d.exact("use_dft_loss")
        return
    if stage != "sft":
        _ignored(d, "use_dft_loss", f"stage {stage} does not read it (its trainer computes its own loss)")
    elif d.value("loss.label_smoothing"):
        _ignored(d, "use_dft_loss", "the Trainer's label smoother (label_smoothing_factor) computes the loss instead")
    else:
        d.set("loss.type", "dft", "use_dft_loss")


def _kto_batch(d: Draft, records: str, num_processes: int) -> None:
    """recipec's KTO estimates its KL term within a micro-batch: at least 2 examples."""
    micro = d.value("train.micro_batch_size")
    batch = d.value("train.batch_size")
    if records != "kto" or micro is None or micro >= 2:
        return
    key = "per_device_train_batch_size"
    if batch % (2 * num_processes) == 0:
        d.set("train.micro_batch_size", 2, *([key] if d.has(key) else []),
              approx="KTO's KL term needs at least 2 examples per micro-batch; 2, with the same global batch")
        d.warn(f"{key} {micro} leaves KTO's KL term a single example per device batch (TRL refuses it); the recipe uses micro batches of 2 and the same global batch", key)


def _model(d: Draft, options) -> None:  # noqa: ANN001
    if d.has("model_name_or_path"):
        d.set("model.path", str(d.get("model_name_or_path")), "model_name_or_path")
    elif getattr(options, "model", None):
        d.set("model.path", options.model, note="--model")
    else:
        d.note("The config names no model (`model_name_or_path`): set model.path.")
    if d.has("trust_remote_code"):
        d.set("model.trust_remote_code", bool(d.get("trust_remote_code")), "trust_remote_code")
    if d.has("model_revision"):
        if d.get("model_revision") in (None, "main"):
            d.exact("model_revision")
        else:
            d.set("model.revision", str(d.get("model_revision")), "model_revision")
    if d.has("flash_attn"):
        value = str(d.get("flash_attn"))
        if value in ATTENTION:
            note = "transformers' own choice: sdpa where the model supports it" if value == "auto" else ""
            d.set("model.attention", ATTENTION[value], "flash_attn", note=note)
        else:
            d.drop("flash_attn", "no-equivalent", f"unknown attention {value!r}.")
    if d.has("pure_bf16"):
        if d.get("pure_bf16"):
            d.set("model.dtype", "bfloat16", "pure_bf16", note="weights and optimizer state in bfloat16")
        else:
            d.exact("pure_bf16")


def _gradient_checkpointing(d: Draft) -> None:
    """LLaMA-Factory turns gradient checkpointing on unless disable_gradient_checkpointing."""
    off = bool(d.get("disable_gradient_checkpointing", False))
    if d.has("disable_gradient_checkpointing"):
        d.set("model.gradient_checkpointing", not off, "disable_gradient_checkpointing")
    elif not (d.has("gradient_checkpointing") and d.get("gradient_checkpointing")):
        d.default("model.gradient_checkpointing", True, "disable_gradient_checkpointing", "gradient checkpointing on")
    if d.has("gradient_checkpointing") and not d.get("gradient_checkpointing") and not off:
        d.drop("gradient_checkpointing", "ignored-by-tool", "LLaMA-Factory turns checkpointing on itself unless `disable_gradient_checkpointing`.")
        d.warn("`gradient_checkpointing: false` is ignored: LLaMA-Factory checkpoints unless `disable_gradient_checkpointing: true`", "gradient_checkpointing")
    if d.has("use_reentrant_gc"):
        if d.get("use_reentrant_gc"):
            d.exact("use_reentrant_gc")
        else:
            d.approx("recipec's gradient checkpointing uses transformers' defaults (reentrant)", "use_reentrant_gc")


def _stage(d: Draft, stage: str) -> str:
    """The training objective from `stage` (and pref_loss); returns the kind of records the
    data holds: "text", "examples", "preference" or "kto"."""
    if stage == "pt":
        if d.has("stage"):
            d.exact("stage")
        return "text"
    if stage == "sft":
        if d.has("stage"):
            d.exact("stage")
        return "examples"
    if stage == "dpo":
        loss = str(d.get("pref_loss", "sigmoid"))
        objective = OBJECTIVES.get(loss)
        keys = [k for k in ("stage", "pref_loss") if d.has(k)]
        if objective is None:
            d.set("preference.objective", "dpo", *keys, approx=f"pref_loss {loss!r} has no recipec objective; DPO's sigmoid loss is written")
        else:
            d.set("preference.objective", objective, *keys)
        objective = objective or "dpo"
        _beta(d)
        if objective == "simpo":
            if d.has("simpo_gamma"):
                d.set("preference.gamma", float(num(d.get("simpo_gamma"))), "simpo_gamma")
            else:
                d.default("preference.gamma", 0.5, "simpo_gamma", "SimPO's target margin 0.5")
        elif d.has("simpo_gamma"):
            _ignored(d, "simpo_gamma", f"pref_loss is {loss!r}, not simpo")
        smoothing = num(d.get("dpo_label_smoothing", 0.0))
        if d.has("dpo_label_smoothing"):
            if objective == "dpo" and smoothing:
                d.set("preference.label_smoothing", float(smoothing), "dpo_label_smoothing")
            else:
                d.exact("dpo_label_smoothing")
        ftx = num(d.get("pref_ftx", 0.0))
        if d.has("pref_ftx") and ftx and objective in ("dpo", "ipo", "hinge", "simpo"):
            d.set("preference.sft_weight", float(ftx), "pref_ftx")
            d.set("preference.sft_average", "sequences", note="LLaMA-Factory averages each chosen completion's log-probabilities, then the pairs")
        if d.get("ld_alpha") is not None and objective in ("dpo", "ipo", "hinge"):
            d.set(
                "preference.ld_alpha", float(num(d.get("ld_alpha"))), "ld_alpha",
                approx="LLaMA-Factory desensitises the policy's log-probabilities only; recipec (as TRL) the reference model's too",
            )  # fmt: skip
        return "preference"
    if stage == "kto":
        d.set("preference.objective", "kto", "stage")
        _beta(d)
        for key, target in (("kto_chosen_weight", "desirable_weight"), ("kto_rejected_weight", "undesirable_weight")):
            if d.has(key):
                d.set(f"preference.{target}", float(num(d.get(key))), key)
        return "kto"
    if stage == "rm":
        d.set(
            "preference.objective",
            "reward",
            "stage",
            approx="LLaMA-Factory's reward model is the causal LM with trl's value head (dropout 0.1, then a linear layer "
            "with a bias), scored at each side's last token; recipec's is transformers' sequence classifier (a score head "
            "without a bias or dropout, at the last token that is not padding); both train -log sigmoid(chosen - rejected)",
        )
        for key in ("pref_beta", "pref_loss"):
            if d.has(key):
                _ignored(d, key, "stage rm trains a reward model, with no beta or preference loss")
        return "preference"
    # ppo: no such training in recipec
    d.drop("stage", "missing-feature", f"recipec has no {'PPO (rollouts scored by a reward model)' if stage == 'ppo' else stage}; the recipe is supervised fine-tuning on the same data.")
    d.warn(f"stage {stage!r} cannot be imported: the recipe is supervised fine-tuning on the same data", "stage")
    for key in ("reward_model", "reward_model_adapters", "reward_model_quantization_bit", "reward_model_type",
                "ppo_buffer_size", "ppo_epochs", "ppo_score_norm", "ppo_target", "ppo_whiten_rewards"):
        if d.has(key):
            d.drop(key, "missing-feature", "recipec has no PPO training.")
    return "examples"


def _beta(d: Draft) -> None:
    if d.has("pref_beta"):
        d.set("preference.beta", float(num(d.get("pref_beta"))), "pref_beta")
    else:
        d.default("preference.beta", 0.1, "pref_beta", "beta 0.1")


def _ignored(d: Draft, key: str, why: str) -> None:
    d.drop(key, "ignored-by-tool", why[0].upper() + why[1:] + ".")
    d.warn(f"`{key}: {d.get(key)}` is ignored: {why}", key)


_MOE = re.compile(r"(?i)moe|mixtral|dbrx|jamba|deepseek-v[23]|gpt-oss|-a\d+(\.\d+)?b\b")
"""Model names of mixture-of-experts models: numbered experts inside each layer."""


def _layer_count(d: Draft) -> int | None:
    """The decoder layers of a local model_name_or_path (its config.json), as LLaMA-Factory
    counts them (`_setup_freeze_tuning`); None when the config is not on this machine."""
    path = Path(str(d.get("model_name_or_path", ""))) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    config = config.get("text_config") or config
    count = config.get("num_hidden_layers") or config.get("num_layers") or config.get("n_layer")
    return int(count) if isinstance(count, int) and count > 0 else None


def _freeze(d: Draft) -> None:
    """finetuning_type "freeze" -> `optim.trainable.include`.

    LLaMA-Factory (model/adapter.py `_setup_freeze_tuning`) trains a parameter when its name
    holds `.{i}.{module}` for a trainable layer index i (the last `freeze_trainable_layers`,
    or the first -n; every stride-th with `use_llama_pro`) and module of
    `freeze_trainable_modules` (`all`: `.{i}.`), or holds one of `freeze_extra_modules` (a
    substring anywhere in the name); the rest gets requires_grad=False.
    """
    keys = [k for k in ("finetuning_type", "freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules") if d.has(k)]
    n = int(num(d.get("freeze_trainable_layers", 2)))
    modules = _split(d.get("freeze_trainable_modules", "all"))
    extras = [e for e in _split(d.get("freeze_extra_modules")) if e]
    caveats: list[str] = []
    if d.get("use_llama_pro"):
        count = _layer_count(d)
        if count is None or n <= 0 or count % n:
            why = (
                "with `use_llama_pro` LLaMA-Factory trains every (layers / freeze_trainable_layers)-th layer, the blocks its "
                "llama_pro.py added, which needs the model's layer count: its config.json is not on this machine"
                if count is None else f"LLaMA-Factory refuses `use_llama_pro` when freeze_trainable_layers {n} does not divide the {count} layers"
            )
            d.drop("finetuning_type", "missing-feature", why[0].upper() + why[1:] + "; the recipe trains every parameter.")
            d.warn(f"finetuning_type \"freeze\" is not imported: {why}", "finetuning_type", "use_llama_pro")
            for key in ("freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules", "use_llama_pro"):
                if d.has(key):
                    d.drop(key, "missing-feature", "the trainable layers of `use_llama_pro` need the model's layer count.")
            return
        stride = count // n
        slices = [f"layers[{i}]" for i in range(stride - 1, count + stride - 1, stride)]
        keys.append("use_llama_pro")
        caveat_note = f"use_llama_pro: every {stride}th of the {count} layers (config.json of model_name_or_path)"
    else:
        slices = [f"layers[-{n}:]"] if n > 0 else [f"layers[:{-n}]"] if n < 0 else []
        caveat_note = ""
    include = [s if m == "all" else f"{s}.{m}*" for m in modules for s in slices]
    include += [f"*{e}*" for e in extras if f"*{e}*" not in include]
    if not include:
        why = "freeze_trainable_layers 0 and no freeze_extra_modules: LLaMA-Factory leaves no parameter to train."
        d.drop("finetuning_type", "no-equivalent", why)
        d.warn(f"finetuning_type \"freeze\" is not imported: {why}", "finetuning_type")
        for key in ("freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules"):
            if d.has(key):
                d.drop(key, "no-equivalent", why)
        return
    if slices and "all" in modules and _MOE.search(str(d.get("model_name_or_path", ""))):
        caveats.append(
            "LLaMA-Factory picks a layer by `.{i}.` anywhere in the name, so on this mixture-of-experts model it also trains "
            "expert i of every layer; recipec trains the layers only"
        )
    for key, meaning in (("freeze_trainable_layers", "the last 2 decoder layers"), ("freeze_trainable_modules", "all of each trainable layer")):
        if not d.has(key):
            d.defaults.append((key, meaning))
    notes = [
        "LLaMA-Factory's layer and substring rule",
        "trainable weights in float32 as it upcasts them (the frozen ones too: memory only)",
    ]
    if d.get("pure_bf16"):
        notes[1] = "pure_bf16: every weight in bfloat16, as LLaMA-Factory keeps them"
    d.set("optim.trainable", {"include": include}, *keys, approx="; ".join(caveats) or None, note="; ".join(([caveat_note] if caveat_note else []) + notes))


def _peft(d: Draft, stage: str) -> None:
    kind = str(d.get("finetuning_type", "lora"))
    if kind == "full":
        d.exact("finetuning_type")
        for key in _LORA_KEYS + ("quantization_bit",):
            if d.has(key) and not _is_default(d, key):
                _ignored(d, key, "finetuning_type is \"full\"")
            elif d.has(key):
                d.exact(key)
        return
    if kind == "freeze":
        _freeze(d)
        return
    if kind == "oft":
        d.set("peft.method", "oft", "finetuning_type")
        if d.has("oft_rank") and num(d.get("oft_rank")):
            d.set("peft.r", int(num(d.get("oft_rank"))), "oft_rank")
            if d.has("oft_block_size"):
                d.exact("oft_block_size")
        else:
            size = int(num(d.get("oft_block_size", 32)))
            if d.has("oft_block_size"):
                d.set("peft.oft_block_size", size, "oft_block_size", *(["oft_rank"] if d.has("oft_rank") else []))
            else:
                d.default("peft.oft_block_size", 32, "oft_block_size", "blocks of 32")
        if d.has("module_dropout"):
            d.set("peft.module_dropout", float(num(d.get("module_dropout"))), "module_dropout")
        _targets(d, "oft_target")
        if d.get("quantization_bit") is None:
            _quantize(d)
            return
        for key in ("quantization_bit", "quantization_method", "quantization_type", "double_quantization"):
            if d.has(key):
                d.drop(key, "missing-feature", "recipec quantizes the base model under LoRA only.")
        return
    if d.has("finetuning_type"):
        d.set("peft.method", "lora", "finetuning_type")
    else:
        d.default("peft.method", "lora", "finetuning_type", "LoRA")
    if _resumes_adapter(d):
        _loraplus(d)
        _quantize(d)
        return
    rank = int(num(d.get("lora_rank", 8)))
    if d.has("lora_rank"):
        d.set("peft.r", rank, "lora_rank")
    else:
        d.default("peft.r", 8, "lora_rank", "rank 8")
    if d.has("lora_alpha") and d.get("lora_alpha") is not None:
        d.set("peft.alpha", num(d.get("lora_alpha")), "lora_alpha")
    else:
        d.default("peft.alpha", rank * 2, "lora_alpha", f"alpha = 2 * lora_rank = {rank * 2}")
        if d.has("lora_alpha"):
            d.exact("lora_alpha")
    if d.has("lora_dropout"):
        d.set("peft.dropout", float(num(d.get("lora_dropout"))), "lora_dropout")
    else:
        d.default("peft.dropout", 0.0, "lora_dropout", "no dropout")
    _targets(d, "lora_target")
    for key, target in (("use_rslora", "rslora"), ("use_dora", "dora")):
        if d.has(key):
            d.set(f"peft.{target}", bool(d.get(key)), key)
    if d.has("pissa_init"):
        if d.get("pissa_init"):
            iters = int(num(d.get("pissa_iter", 16)))
            if iters == -1:
                d.set("peft.init", "pissa", "pissa_init", *(["pissa_iter"] if d.has("pissa_iter") else []))
            else:
                d.set("peft.init", "pissa", "pissa_init", *(["pissa_iter"] if d.has("pissa_iter") else []),
                      approx=f"LLaMA-Factory's PiSSA uses a fast SVD of {iters} iterations (pissa_iter); recipec's the full SVD")
        else:
            d.exact("pissa_init")
            if d.has("pissa_iter"):
                d.exact("pissa_iter")
    elif d.has("pissa_iter"):
        d.exact("pissa_iter")
    if d.has("pissa_convert"):
        if d.get("pissa_convert"):
            d.drop("pissa_convert", "not-for-training", "the saved PiSSA adapter converted to a LoRA one; recipec saves it as trained.")
        else:
            d.exact("pissa_convert")
    _loraplus(d)
    _quantize(d)


def _loraplus(d: Draft) -> None:
    if d.has("loraplus_lr_ratio") and d.get("loraplus_lr_ratio") is not None:
        d.set("peft.loraplus_lr_ratio", float(num(d.get("loraplus_lr_ratio"))), "loraplus_lr_ratio")
        if d.has("loraplus_lr_embedding"):
            d.approx("recipec's LoRA+ gives the embedding adapters the rule of the others", "loraplus_lr_embedding")
    else:
        for key in ("loraplus_lr_ratio", "loraplus_lr_embedding"):
            if d.has(key):
                d.exact(key) if key == "loraplus_lr_ratio" else _ignored(d, key, "loraplus_lr_ratio is not set")


def _resumes_adapter(d: Draft) -> bool:
    """`adapter_name_or_path`: one adapter, and no `create_new_adapter`, is LoRA training resumed from it
    (`PeftModel.from_pretrained(..., is_trainable=True)` under the adapter's own config) -> `peft.adapter`.
    Several, or a new adapter over them, merge adapters into the model first, which recipec does only for a
    [continual] parent's: left to the missing features."""
    adapters = _split(d.get("adapter_name_or_path"))
    if len(adapters) != 1 or d.get("create_new_adapter") or d.has("adapter_folder") and d.get("adapter_folder"):
        if adapters:
            d.drop(
                "adapter_name_or_path", "missing-feature",
                "LLaMA-Factory merges these adapters into the model before training ("
                + ("create_new_adapter" if d.get("create_new_adapter") else "every adapter but the last")
                + "); recipec merges only a [continual] parent's adapter.",
            )
        return False
    where = adapters[0]
    hub = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", where) and not where.startswith(("saves/", "output"))
    d.set("peft.adapter", where if hub else _local_path(where), "adapter_name_or_path")
    if hub and d.get("model_revision") not in (None, "main"):  # init_adapter passes it to PeftModel.from_pretrained too
        d.set("peft.adapter_revision", str(d.get("model_revision")), "model_revision")
    if d.has("create_new_adapter"):
        d.exact("create_new_adapter")
    for key in ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "additional_target", "use_rslora", "use_dora", "pissa_init", "pissa_iter", "pissa_convert"):
        if d.has(key):
            d.drop(key, "ignored-by-tool", "with adapter_name_or_path LLaMA-Factory resumes the saved adapter under its own config; so does recipec's peft.adapter.")
    return True


def _local_path(path: str) -> str:
    return path if path.startswith(("./", "../", "/", "~")) else "./" + path


def _targets(d: Draft, key: str) -> None:
    targets = _split(d.get(key, "all"))
    if targets == ["all"]:
        if d.has(key):
            d.set("peft.target_modules", "all-linear", key, note="every linear layer but the output layer")
        else:
            d.default("peft.target_modules", "all-linear", key, "\"all\": every linear layer but the output layer")
    else:
        d.set("peft.target_modules", targets, key)
    if d.has("additional_target"):
        extra = _split(d.get("additional_target"))
        if extra:
            d.set("peft.modules_to_save", extra, "additional_target")
        else:
            d.exact("additional_target")


def _quantize(d: Draft) -> None:
    bits = d.get("quantization_bit")
    keys = ("quantization_method", "quantization_type", "double_quantization")
    if bits is None:
        for key in keys:
            if d.has(key):
                _ignored(d, key, "quantization_bit is not set") if not _is_default(d, key) else d.exact(key)
        if d.has("quantization_bit"):
            d.exact("quantization_bit")
        return
    method = str(d.get("quantization_method", "bnb"))
    bits = int(num(bits))
    if bits not in (4, 8):
        d.drop("quantization_bit", "missing-feature", f"recipec quantizes to 4 or 8 bits (bitsandbytes), not {bits}.")
        for key in keys:
            if d.has(key):
                d.drop(key, "missing-feature", f"recipec quantizes to 4 or 8 bits (bitsandbytes), not {bits}.")
        return
    differs: list[tuple[str, str]] = []
    if method != "bnb":
        differs.append(("quantization_method", f"{method} quantization on the fly becomes bitsandbytes' {bits}-bit"))
    qtype = str(d.get("quantization_type", "nf4"))
    if bits == 4 and qtype != "nf4":
        differs.append(("quantization_type", f"{qtype} 4-bit becomes recipec's NF4"))
    if bits == 4 and bool(d.get("double_quantization", True)):
        differs.append(("double_quantization", "LLaMA-Factory quantizes the quantization constants too (double_quantization, on by default); recipec's 4-bit does not"))
    d.set("peft.quantize", f"{bits}bit", "quantization_bit", approx="; ".join(w for _, w in differs) or None)
    for key in keys:
        if d.has(key):
            why = next((w for k, w in differs if k == key), None)
            d.approx(why, key) if why else d.exact(key)


def _source_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "eval"


def _data(d: Draft, stage: str, records: str) -> None:
    dataset_dir = str(d.get("dataset_dir", "data"))
    info, info_file = _dataset_info(d, dataset_dir)
    train = _split(d.get("dataset"))
    evals = _split(d.get("eval_dataset"))
    if not train:
        d.note("The config names no dataset (`dataset`): add a [[data.sources]] table.")
    i = 0
    approx_train: list[str] = []
    for name in train:
        approx_train += _source(d, i, name, info, info_file, dataset_dir, records, "dataset")
        i += 1
    approx_eval: list[str] = []
    for name in evals:
        approx_eval += _source(d, i, name, info, info_file, dataset_dir, records, "eval_dataset")
        d.set(f"data.sources[{i}].split", "eval", "eval_dataset")
        d.set(f"data.sources[{i}].name", _source_name(name), "eval_dataset")
        i += 1
    for key, whys in (("dataset", approx_train), ("eval_dataset", approx_eval)):
        for why in dict.fromkeys(whys):
            d.approx(why, key)
    if d.has("dataset_dir"):
        d.exact("dataset_dir")
    if info_file:
        d.note(f"Dataset names were read from {info_file}.")
    _mix(d, len(train))
    _length(d, records)
    _split_eval(d, bool(evals))
    if d.has("max_samples") and d.get("max_samples") is not None:
        for j in range(i):
            d.set(f"data.sources[{j}].max_documents", int(num(d.get("max_samples"))), "max_samples", note="per dataset")
    elif d.has("max_samples"):
        d.exact("max_samples")
    if d.has("preprocessing_num_workers"):
        workers = d.get("preprocessing_num_workers")
        if workers:
            d.set("data.num_proc", int(num(workers)), "preprocessing_num_workers")
        else:
            d.set("data.num_proc", 1, "preprocessing_num_workers", note="None: one process")
    else:
        d.default("data.num_proc", 1, "preprocessing_num_workers", "one data process")
    _train_on(d, i, records)
    _template(d, records)


def _source(d: Draft, i: int, name: str, info: Mapping[str, Any], info_file: str | None,
            dataset_dir: str, records: str, key: str) -> list[str]:
    """One [[data.sources]] table for a dataset name; returns what differs (approx)."""
    entry = info.get(name)
    src = f"data.sources[{i}]"
    keys = [key] + (["dataset_dir"] if d.has("dataset_dir") else [])
    differs: list[str] = []
    remote = dataset_dir[len("REMOTE:"):] if dataset_dir.startswith("REMOTE:") else None
    if dataset_dir == "ONLINE":  # the names are hub ids
        entry = {"hf_hub_url": name}
    if remote and entry is not None and entry.get("file_name"):
        d.set(f"{src}.hub.repo", remote, *keys)
        d.set(f"{src}.hub.data_files", entry["file_name"], *keys)
        differs.append(f"{name!r} looked up in the names LLaMA-Factory ships, not in {remote}'s own dataset_info.json")
    elif entry is None:
        differs.append(f"{name!r} is not in dataset_info.json here: written as {dataset_dir}/{name}.json; set the source by hand")
        d.set(f"{src}.path", f"{dataset_dir}/{name}.json", *keys, approx=differs[-1])
        d.warn(f"the dataset {name!r} is not a known name and no {dataset_dir}/dataset_info.json was found: check its source", key)
        entry = {}
    elif entry.get("hf_hub_url"):
        d.set(f"{src}.hub.repo", entry["hf_hub_url"], *keys)
        if entry.get("subset"):
            d.set(f"{src}.hub.subset", entry["subset"], *keys)
        if entry.get("split", "train") != "train":
            d.set(f"{src}.hub.split", entry["split"], *keys)
        if entry.get("revision"):
            d.set(f"{src}.hub.revision", entry["revision"], *keys)
        if entry.get("folder"):
            differs.append(f"the hub folder {entry['folder']!r} of {name!r} is not read apart; recipec reads the repository's split")
        if d.get("streaming"):
            d.set(f"{src}.hub.streaming", True, "streaming")
    elif entry.get("file_name"):
        file = f"{dataset_dir}/{entry['file_name']}"
        if file.endswith(".txt"):  # a .json file, one JSON array or JSON lines, reads as datasets reads it
            differs.append(f"LLaMA-Factory reads each line of {file} as a document; recipec reads a text file as one")
        d.set(f"{src}.path", file, *keys, approx=differs[-1] if differs else None)
    elif entry:
        where = entry.get("ms_hub_url") or entry.get("om_hub_url") or entry.get("script_url") or entry.get("cloud_file_name")
        differs.append(f"{name!r} is {where!r}, a source recipec cannot read; written as {dataset_dir}/{name}.json")
        d.set(f"{src}.path", f"{dataset_dir}/{name}.json", *keys, approx=differs[-1])
    columns = dict(entry.get("columns") or {})
    tags = dict(entry.get("tags") or {})
    formatting = entry.get("formatting", "alpaca")
    ranking = bool(entry.get("ranking"))
    messages_style = tags.get("role_tag", "from") == "role" and tags.get("content_tag", "value") == "content"
    if records == "text":
        column = columns.get("prompt", "text")
        if column != "text":
            d.set(f"{src}.text_field", column, *keys)
        return differs
    if records == "kto":
        msgs = columns.get("messages", "conversations" if formatting == "sharegpt" else "messages")
        d.set(f"{src}.records", "unpaired_preference", *keys)
        # one message list, its last message the completion (LLaMA-Factory's converter splits it so)
        fields = {"messages": msgs, "label": columns.get("kto_tag", "label")}
        if not messages_style:
            fields |= {"role": tags.get("role_tag", "from"), "content": tags.get("content_tag", "value")}
            d.set(f"{src}.roles", {tags.get("user_tag", "human"): "user", tags.get("assistant_tag", "gpt"): "assistant",
                                   tags.get("system_tag", "system"): "system"}, *keys)
        d.set(f"{src}.fields", fields, *keys)
        return differs
    if records == "preference" or ranking:
        d.set(f"{src}.records", "preference", *keys)
        if formatting == "sharegpt":
            msgs = columns.get("messages", "conversations")
            fields = {"prompt": msgs, "chosen": columns.get("chosen", "chosen"), "rejected": columns.get("rejected", "rejected")}
            if not messages_style:
                fields |= {"role": tags.get("role_tag", "from"), "content": tags.get("content_tag", "value")}
                d.set(f"{src}.roles", {tags.get("user_tag", "human"): "user", tags.get("assistant_tag", "gpt"): "assistant",
                                       tags.get("system_tag", "system"): "system"}, *keys)
            d.set(f"{src}.fields", fields, *keys)  # chosen and rejected are single messages, read as such
        else:
            fields = {"prompt": columns.get("prompt", "instruction"), "chosen": columns.get("chosen", "chosen"),
                      "rejected": columns.get("rejected", "rejected")}
            if columns.get("system", "system") != "system":
                fields["system"] = columns["system"]
            if "query" in columns:  # LLaMA-Factory's user turn: the prompt, then a non-empty query after a newline
                fields["input"] = columns["query"]
            d.set(f"{src}.fields", fields, *keys)
            if "query" in columns:
                d.set(f"{src}.input_separator", "\n", *keys, note="LLaMA-Factory joins the prompt and the query with a newline")
            # LLaMA-Factory's template renders the instruction as the user's turn and each answer as the assistant's
            d.set(f"{src}.as_chat", True, *keys)
        if records != "preference":
            d.warn(f"the dataset {name!r} holds preference pairs, which stage {d.get('stage', 'sft')!r} cannot train on", key)
        return differs
    if formatting == "sharegpt":
        msgs = columns.get("messages", "conversations")
        if messages_style:
            d.set(f"{src}.records", "messages", *keys)
            if msgs != "messages":
                d.set(f"{src}.fields", {"messages": msgs}, *keys)
            if tags.get("user_tag", "user") != "user" or tags.get("assistant_tag", "assistant") != "assistant":
                d.set(f"{src}.roles", {tags.get("user_tag", "user"): "user", tags.get("assistant_tag", "assistant"): "assistant"}, *keys)
        else:
            d.set(f"{src}.records", "sharegpt", *keys)
            fields = {}
            if msgs != "conversations":
                fields["messages"] = msgs
            if tags.get("role_tag", "from") != "from":
                fields["role"] = tags["role_tag"]
            if tags.get("content_tag", "value") != "value":
                fields["content"] = tags["content_tag"]
            if fields:
                d.set(f"{src}.fields", fields, *keys)
            roles = {tags.get("user_tag", "human"): "user", tags.get("assistant_tag", "gpt"): "assistant",
                     tags.get("system_tag", "system"): "system", tags.get("observation_tag", "observation"): "tool"}
            if roles != {"human": "user", "gpt": "assistant", "system": "system", "observation": "tool"}:
                d.set(f"{src}.roles", roles, *keys)
            else:
                d.set(f"{src}.roles", {"observation": "tool"}, *keys, note="LLaMA-Factory's tool results")
        if "tools" in columns:
            differs.append(f"{name!r}: the tools column and function-call turns are not rendered; recipec's chat template sees the turns only")
        if "system" in columns:
            differs.append(f"{name!r}: the system column is not read; recipec reads system turns")
        return differs
    d.set(f"{src}.records", "alpaca", *keys)
    names = {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}
    fields = {ours: columns[lf] for lf, ours in names.items() if lf in columns and columns[lf] != ours}
    if fields:
        d.set(f"{src}.fields", fields, *keys)
    # LLaMA-Factory's user turn: the instruction, then a non-empty input after one newline (recipec's default: a blank line)
    d.set(f"{src}.input_separator", "\n", *keys, note="LLaMA-Factory joins the instruction and the input with a newline")
    if "history" in columns:
        differs.append(f"{name!r}: the history column (earlier turns) is not read")
    return differs


def _mix(d: Draft, n: int) -> None:
    strategy = str(d.get("mix_strategy", "concat"))
    probs = [float(p) for p in _split(d.get("interleave_probs"))]
    if strategy == "concat":
        if d.has("mix_strategy"):
            d.exact("mix_strategy")
        if probs:
            _ignored(d, "interleave_probs", "mix_strategy is \"concat\"")
        return
    weights = probs if len(probs) == n else [1.0 / n] * n
    keys = [k for k in ("interleave_probs", "mix_strategy") if d.has(k)]
    why = "LLaMA-Factory interleaves examples with these probabilities; recipec's weights are shares of the training tokens"
    for i, w in enumerate(weights):
        d.set(f"data.sources[{i}].weight", w, *keys, approx=why)
    if probs and abs(sum(probs) - 1.0) > 1e-6:
        d.warn(f"interleave_probs {probs} do not sum to 1 (datasets' interleave_datasets requires it)", "interleave_probs")
    if strategy == "interleave_under":
        d.set("data.on_exhausted", "stop", "mix_strategy", note="stop at the first exhausted dataset")
    elif strategy == "interleave_over":
        d.set("data.on_exhausted", "repeat", "mix_strategy", note="repeat the datasets until every one is exhausted")
    else:
        d.set("data.on_exhausted", "stop", "mix_strategy", approx="interleave_once samples without replacement until all are used; recipec stops with the first source used up")


def _length(d: Draft, records: str) -> None:
    cutoff = int(num(d.get("cutoff_len", 2048)))
    neat = bool(d.get("neat_packing"))
    packing = d.get("packing")
    packing = True if neat else (records == "text" if packing is None else bool(packing))
    explicit = neat or bool(d.get("packing"))  # DataArguments takes one token off cutoff_len when packing is set
    seq = cutoff - 1 if explicit else cutoff
    keys = [k for k in ("cutoff_len", "packing", "neat_packing") if d.has(k) and (k == "cutoff_len" or explicit)]
    note = "cutoff_len - 1: LLaMA-Factory shortens it by one when packing is set" if explicit else ""
    if records == "text":
        if d.has("cutoff_len") or explicit:
            d.set("data.seq_len", seq, *keys, note=note)
        else:
            d.default("data.seq_len", seq, "cutoff_len", f"{seq} tokens")
        if d.has("packing"):
            d.set("data.packing", packing, "packing")
        else:
            d.default("data.packing", packing, "packing", f"packing {'on' if packing else 'off'} for stage pt")
        if d.has("neat_packing"):
            d.exact("neat_packing") if not neat else _ignored(d, "neat_packing", "neat_packing applies to stage sft")
        return
    # LLaMA-Factory cuts each turn's prompt and answer in proportion to their lengths (infer_seqlen): recipec's
    # truncate_turns, whose turns are the template's answer spans: LLaMA-Factory's own where recipec writes its template
    written = str(d.get("template")) in TEMPLATES
    turns = None if written else (
        "recipec cuts the turns where the tokenizer's own chat template's answers start and end, "
        "LLaMA-Factory where its template's answer slots do"
    )
    if d.has("cutoff_len") or explicit:
        keys = ["cutoff_len"] if d.has("cutoff_len") else keys
        d.set("data.seq_len", seq, *keys, approx=f"{note}; {turns}" if note and turns else turns, note=note)
    else:
        d.default("data.seq_len", seq, "cutoff_len", f"{seq} tokens")
    d.set("data.overflow", "truncate_turns", note="LLaMA-Factory cuts each turn's prompt and answer in proportion to their lengths")
    if packing and records in ("preference", "kto"):
        _ignored(d, "packing" if d.has("packing") else "neat_packing", "LLaMA-Factory packs only stage sft and pt")
        d.set("data.packing", False, note="LLaMA-Factory does not pack preference data")
        return
    if d.has("packing") or d.has("neat_packing"):
        keys = [k for k in ("packing", "neat_packing") if d.has(k)]
        if packing and not neat:
            d.set("data.packing", True, *keys, approx="LLaMA-Factory's packing lets attention cross from one example to the next (neat_packing stops it); recipec's never does")
        else:
            d.set("data.packing", packing, *keys)
    else:
        d.default("data.packing", False, "packing", "one example per sequence (packing is off but for stage pt)")


def _split_eval(d: Draft, has_eval_dataset: bool) -> None:
    size = num(d.get("val_size", 0.0)) or 0.0
    if d.has("val_size"):
        if 0 <= size < 1:
            d.set("data.eval_fraction", float(size), "val_size")
        else:
            d.drop("val_size", "no-equivalent", f"{int(size)} examples held out; recipec holds out a fraction (data.eval_fraction).")
            d.set("data.eval_fraction", 0.05, note="recipec's default: val_size is a count (see the header)")
    else:
        d.default("data.eval_fraction", 0.0, "val_size", "nothing held out" + (" (eval_dataset is the evaluation data)" if has_eval_dataset else ""))
    eval_on = d.get("eval_strategy", "no")
    if eval_on not in (None, "no") and not size and not has_eval_dataset:
        d.warn(f"eval_strategy {eval_on!r} but neither val_size nor eval_dataset: there is nothing to evaluate on (LLaMA-Factory refuses this)", "eval_strategy")


def _train_on(d: Draft, n: int, records: str) -> None:
    prompt, history = bool(d.get("train_on_prompt")), bool(d.get("mask_history"))
    if records in ("text", "preference", "kto"):
        for key in ("train_on_prompt", "mask_history"):
            if d.has(key):
                _ignored(d, key, f"stage {d.get('stage', 'sft')!r} does not mask by turns") if d.get(key) else d.exact(key)
        return
    keys = [k for k in ("train_on_prompt", "mask_history") if d.has(k)]
    for i in range(n):
        kind = d.value(f"data.sources[{i}].records")
        if kind in ("preference", "unpaired_preference", None):
            continue
        if prompt:
            value = "all"
        elif history and kind != "alpaca":
            value = "last_assistant"
        else:
            value = "assistant"
        if keys:
            d.set(f"data.sources[{i}].train_on", value, *keys)
        else:
            d.default(f"data.sources[{i}].train_on", value, "train_on_prompt", "the loss on the answers only")


def _template(d: Draft, records: str) -> None:
    if not d.has("template"):
        return
    name = str(d.get("template"))
    if records == "text":
        _ignored(d, "template", "stage pt reads plain text, with no chat template")
        return
    if name not in TEMPLATES:
        why = f": {NOT_WRITTEN[name]}" if name in NOT_WRITTEN else ""
        d.approx(f"LLaMA-Factory's {name!r} template is not written out{why}; recipec renders with the tokenizer's own chat template", "template")
        d.note(f"The chat template is the tokenizer's own: check that it renders as LLaMA-Factory's {name!r} template does.")
        return
    t = TEMPLATES[name]
    keys = ["template"] + (["default_system"] if d.has("default_system") else [])
    differs = [t["tokens"]] if t.get("tokens") else []
    model = str(d.get("model_name_or_path") or "")
    if not differs and SENTENCEPIECE.search(model):
        differs.append(f"LLaMA-Factory tokenizes each turn's slots on their own, and {model}'s SentencePiece tokenizer then "
                       "starts each answer with a word-start token; recipec tokenizes the rendered text, the same text")
    thinking = True
    if t.get("template_class") == "ReasoningTemplate":
        thinking = d.get("enable_thinking", True) is True
        if d.has("enable_thinking"):
            keys.append("enable_thinking")
        if not thinking:
            differs.append("enable_thinking off: LLaMA-Factory removes the thoughts from the answers; recipec's template "
                           "keeps an answer's thought, and puts the empty one in front of the others, unsupervised, as LLaMA-Factory does")
        if d.get("mask_history"):
            differs.append("mask_history: LLaMA-Factory removes the thoughts of the earlier answers and puts an empty one "
                           "in front of the last only")
        if records in ("preference", "kto"):
            differs.append("in a prompt with earlier answers LLaMA-Factory removes their thoughts and puts no empty one "
                           "in front of them; recipec's template renders them as in supervised fine-tuning")
    text = chat_template(name, d.get("default_system"), thinking)
    d.set("tokenizer.chat_template", text, *keys, approx="; ".join(differs) or None,
          note=f"LLaMA-Factory's {name} template as jinja")
    if t.get("special_tokens"):
        d.set("tokenizer.special_tokens", t["special_tokens"], "template", note="the template's markers")


_PARENTS = {
    # settings read only when another one is on
    **{k: "use_galore" for k in ("galore_target", "galore_rank", "galore_update_interval", "galore_scale", "galore_proj_type", "galore_layerwise")},
    **{k: "use_apollo" for k in ("apollo_target", "apollo_rank", "apollo_update_interval", "apollo_scale", "apollo_proj",
                                 "apollo_proj_type", "apollo_scale_type", "apollo_layerwise", "apollo_scale_front")},
    **{k: "use_badam" for k in ("badam_mode", "badam_start_block", "badam_switch_mode", "badam_switch_interval",
                                "badam_update_ratio", "badam_mask_mode")},
    **{k: "use_kt" for k in ("kt_weight_path", "kt_expert_checkpoint_path", "kt_use_lora_experts", "kt_lora_expert_num",
                             "kt_lora_expert_intermediate_size")},
    "fp8_backend": "fp8", "fp8_enable_fsdp_float8_all_gather": "fp8", "asft_alpha": "use_asft_loss",
    "eaft_alpha": "use_eaft_loss", "hyper_parallel_args": "use_hyper_parallel", "buffer_size": "streaming",
}


def _rest(d: Draft) -> None:
    for key, parent in _PARENTS.items():
        if not d.has(key) or all(k in d.ledger for k in d.keys_under(key)):
            continue
        if d.get(parent):
            d.drop(key, "missing-feature", f"a setting of `{parent}`, which recipec lacks.")
        elif _is_default(d, key):
            d.exact(key)
        else:
            _ignored(d, key, f"it is read only with `{parent}` on")
    for key in _NOT_FOR_TRAINING:
        if d.has(key) and key not in d.ledger:
            d.drop(key, "not-for-training", "")
    if d.has("early_stopping_steps"):
        if _is_default(d, "early_stopping_steps"):
            d.exact("early_stopping_steps")
        else:
            hf.early_stopping(d, "early_stopping_steps")
    hf.best_model(d)
    for key, why in _MISSING.items():
        if d.has(key) and key not in d.ledger:
            if _is_default(d, key):
                d.exact(key)
            else:
                d.drop(key, "missing-feature" if why else "no-equivalent", why or "recipec has no such setting.")
    for key in ("use_reentrant_gc", "ignore_pad_token_for_loss", "enable_thinking", "buffer_size",
                "freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model", "init_special_tokens",
                "cache_dir", "media_dir", "fp8_backend", "fp8_enable_fsdp_float8_all_gather", "asft_alpha", "eaft_alpha",
                "kt_weight_path", "kt_expert_checkpoint_path", "kt_use_lora_experts", "kt_lora_expert_num",
                "kt_lora_expert_intermediate_size", "hyper_parallel_args", "module_dropout", "oft_rank",
                "oft_block_size", "oft_target", "galore_target", "galore_rank", "galore_update_interval", "galore_scale",
                "galore_proj_type", "galore_layerwise", "apollo_target", "apollo_rank", "apollo_update_interval",
                "apollo_scale", "apollo_proj", "apollo_proj_type", "apollo_scale_type", "apollo_layerwise",
                "apollo_scale_front", "badam_mode", "badam_start_block", "badam_switch_mode", "badam_switch_interval",
                "badam_update_ratio", "badam_mask_mode", "kto_chosen_weight", "kto_rejected_weight",
                "simpo_gamma", "pref_beta", "pref_loss", "dpo_label_smoothing", "image_max_pixels", "image_min_pixels",
                "image_do_pan_and_scan", "crop_to_patches", "video_max_pixels", "video_min_pixels", "video_fps",
                "video_maxlen", "use_audio_in_video", "audio_sampling_rate", "freeze_trainable_layers",
                "freeze_trainable_modules", "freeze_extra_modules", "reward_model", "reward_model_adapters",
                "reward_model_quantization_bit", "reward_model_type", "ppo_buffer_size", "ppo_epochs",
                "ppo_score_norm", "ppo_target", "ppo_whiten_rewards", "use_v1_kernels"):
        keys = d.keys_under(key)
        if not keys or all(k in d.ledger for k in keys):
            continue
        if key in ("use_reentrant_gc", "ignore_pad_token_for_loss"):
            d.exact(key)
        elif key in ("cache_dir", "media_dir"):
            d.drop(key, "no-equivalent", "recipec keeps the hub cache in its usual place." if key == "cache_dir" else "recipec trains on text only.")
        elif _is_default(d, key):
            d.exact(key)
        elif key.startswith(("image_", "video_", "audio_", "crop_", "use_audio", "freeze_vision", "freeze_multi", "freeze_language")):
            d.drop(key, "missing-feature", "recipec trains text-only models.")
        elif key in ("pref_beta", "pref_loss", "simpo_gamma", "dpo_label_smoothing", "kto_chosen_weight", "kto_rejected_weight"):
            _ignored(d, key, f"stage is {d.get('stage', 'sft')!r}, not a preference stage")
        else:
            d.drop(key, "ignored-by-tool", "read only with a setting that is off.")
