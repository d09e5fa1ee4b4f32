"""Configs written for older releases of the tools: each old key is treated as the tool treats
it today. An old name the tool still reads gives the recipe its new name gives, with a
warning that names both; a removed key the tool refuses is refused, with the release that
removed it and what replaced it; a removed key the tool drops unread is not imported."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from recipec.diagnostics import RecipeError
from recipec.importers import Options, import_config

CONFIGS = Path(__file__).resolve().parent / "configs"
LEGACY = CONFIGS / "legacy"


def _import(tmp_path: Path, tool: str, text: str, name: str = "cfg.yaml", **options):
    folder = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return import_config(path, tool, Options(name="legacy", **options))


def _same(tmp_path: Path, tool: str, old_text: str, new_text: str, old: str, new: str, name: str = "cfg.yaml", **options):
    """Import both spellings; the recipes are equal and the old key ends as the new one does."""
    got = _import(tmp_path, tool, old_text, name, **options)
    want = _import(tmp_path, tool, new_text, name, **options)
    assert tomllib.loads(got.text) == tomllib.loads(want.text)
    assert _state(got, old) == _state(want, new)
    assert not [k for k in got.draft.values if k not in got.draft.ledger]
    return got, want


def _state(result, key: str) -> list[tuple[str, str | None]]:
    """How the key (or each key of the table) ended in the ledger."""
    return sorted((e.how, e.reason) for k, e in result.draft.ledger.items() if k == key or k.startswith(key + "."))


def _refused(tmp_path: Path, tool: str, text: str, name: str = "cfg.yaml", **options):
    with pytest.raises(RecipeError) as info:
        _import(tmp_path, tool, text, name, **options)
    return info.value.diagnostics


def _named(result, old: str, new: str) -> None:
    """The recipe, past its warnings, names both keys: on the line the old key wrote, or where
    the header lists it as approximate or not imported."""
    text = result.text
    if "# Warnings" in text:
        head, rest = text.split("# Warnings", 1)
        text = head + rest.split("\n#\n", 1)[1]
    assert f"`{old}" in text and "is the old" in text and f"`{new}" in text, text


def _warned(result, *parts: str) -> str:
    hits = [w for w, _ in result.draft.warnings if all(p in w for p in parts)]
    assert hits, result.draft.warnings
    return hits[0]


# -- axolotl ------------------------------------------------------------------------------

AXOLOTL = """base_model: NousResearch/Llama-3.2-1B
datasets:
  - path: teknium/GPT4-LLM-Cleaned
    type: alpaca
sequence_len: 1024
micro_batch_size: 2
num_epochs: 1
learning_rate: 0.0002
"""

CHAT = """base_model: NousResearch/Llama-3.2-1B
datasets:
  - path: org/conversations
    type: chat_template
    field_messages: conversations
{fields}sequence_len: 1024
micro_batch_size: 2
num_epochs: 1
"""

AXOLOTL_RENAMED = [
    # (old lines, new lines, old key, new key, the warning's release)
    ("val_set_size: 0.05\nevaluation_strategy: epoch\n", "val_set_size: 0.05\neval_strategy: epoch\n", "evaluation_strategy", "eval_strategy", "axolotl 0.5.1"),
    ("noisy_embedding_alpha: 5\n", "neftune_noise_alpha: 5\n", "noisy_embedding_alpha", "neftune_noise_alpha", "axolotl 0.5.0"),
    ("pretrain_multipack_buffer_size: 5000\n", "streaming_multipack_buffer_size: 5000\n", "pretrain_multipack_buffer_size", "streaming_multipack_buffer_size", "axolotl 0.13.0"),
    ("dataset_processes: 4\n", "dataset_num_proc: 4\n", "dataset_processes", "dataset_num_proc", "axolotl 0.13.0"),
    ("flash_attention: true\n", "attn_implementation: flash_attention_2\n", "flash_attention", "attn_implementation", "axolotl 0.17.0"),
    ("sdp_attention: true\n", "attn_implementation: sdpa\n", "sdp_attention", "attn_implementation", "axolotl 0.17.0"),
    ("eager_attention: true\n", "attn_implementation: eager\n", "eager_attention", "attn_implementation", "axolotl 0.17.0"),
]


@pytest.mark.parametrize(("old_text", "new_text", "old", "new", "since"), AXOLOTL_RENAMED, ids=[r[2] for r in AXOLOTL_RENAMED])
def test_axolotl_old_name_maps_as_the_new_one(tmp_path, old_text, new_text, old, new, since):
    got, _ = _same(tmp_path, "axolotl", AXOLOTL + old_text, AXOLOTL + new_text, old, new)
    warning = _warned(got, f"`{old}", "is the old", f"`{new}", f"renamed in {since}", "axolotl 0.18.0 still reads it as the new one, and so does this import")
    assert got.draft.warnings[[w for w, _ in got.draft.warnings].index(warning)][1] == (old,)
    _named(got, old, new)


def test_axolotl_dpo_beta_is_rl_beta(tmp_path):
    text = (CONFIGS / "axolotl" / "dpo-chatml-intel.yaml").read_text(encoding="utf-8")
    got, _ = _same(tmp_path, "axolotl", text.replace("rl_beta: 0.1", "dpo_beta: 0.2"), text.replace("rl_beta: 0.1", "rl_beta: 0.2"), "dpo_beta", "rl_beta")
    assert tomllib.loads(got.text)["preference"]["beta"] == 0.2
    assert "beta = 0.2" in got.text and "# dpo_beta (`dpo_beta` is the old name of `rl_beta`)" in got.text
    _warned(got, "`dpo_beta` is the old name of `rl_beta` (renamed in axolotl 0.5.0)")


def test_axolotl_sequence_parallel_degree_is_context_parallel_size(tmp_path):
    text = (CONFIGS / "axolotl" / "alst-fsdp2-cp8.yaml").read_text(encoding="utf-8")
    old = text.replace("context_parallel_size:", "sequence_parallel_degree:")
    got, _ = _same(tmp_path, "axolotl", old, text, "sequence_parallel_degree", "context_parallel_size", num_processes=8)
    assert tomllib.loads(got.text)["launch"]["parallelism"]["cp_size"] == 8
    _warned(got, "`sequence_parallel_degree` is the old name of `context_parallel_size` (renamed in axolotl 0.12.0)")


def test_axolotl_message_fields_are_property_mappings(tmp_path):
    old = CHAT.format(fields="    message_field_role: from\n    message_field_content: value\n")
    new = CHAT.format(fields="    message_property_mappings:\n      role: from\n      content: value\n")
    got, _ = _same(tmp_path, "axolotl", old, new, "datasets[0].message_field_role", "datasets[0].message_property_mappings.role")
    assert tomllib.loads(got.text)["data"]["sources"][0]["fields"] == {"messages": "conversations", "role": "from", "content": "value"}
    _warned(got, "`datasets[0].message_field_content` is the old name of `datasets[0].message_property_mappings.content`")


def test_axolotl_both_names_the_new_one_wins(tmp_path):
    got = _import(tmp_path, "axolotl", AXOLOTL + "val_set_size: 0.05\neval_strategy: epoch\nevaluation_strategy: steps\n")
    want = _import(tmp_path, "axolotl", AXOLOTL + "val_set_size: 0.05\neval_strategy: epoch\n")
    assert tomllib.loads(got.text) == tomllib.loads(want.text)
    entry = got.draft.ledger["evaluation_strategy"]
    assert (entry.how, entry.reason) == ("dropped", "ignored-by-tool")
    _warned(got, "both are set and axolotl reads `eval_strategy`: `evaluation_strategy` is ignored")


def test_axolotl_both_names_with_one_value_say_it_once(tmp_path):
    got = _import(tmp_path, "axolotl", AXOLOTL + "val_set_size: 0.05\neval_strategy: epoch\nevaluation_strategy: epoch\n")
    assert got.draft.ledger["evaluation_strategy"].how == "exact"
    assert not got.draft.warnings


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("noisy_embedding_alpha: 5\nneftune_noise_alpha: 5\n", "`noisy_embedding_alpha` is the old name of `neftune_noise_alpha` (axolotl 0.5.0), and `neftune_noise_alpha` is set too"),
        ("flash_attention: true\nattn_implementation: flash_attention_2\n", "`flash_attention: true` is the old spelling of `attn_implementation: flash_attention_2` (axolotl 0.17.0)"),
    ],
)
def test_axolotl_refuses_both_names_where_axolotl_does(tmp_path, extra, message):
    (diag,) = _refused(tmp_path, "axolotl", AXOLOTL + extra)
    assert message in diag.message and "axolotl 0.18.0 refuses the config" in diag.message
    assert diag.location.line == 9


def test_axolotl_conflicting_message_fields_are_refused(tmp_path):
    text = CHAT.format(fields="    message_field_role: from\n    message_property_mappings:\n      role: speaker\n")
    (diag,) = _refused(tmp_path, "axolotl", text)
    assert "`datasets[0].message_field_role` is the old name of `datasets[0].message_property_mappings.role`" in diag.message
    assert diag.location.line == 6


def test_axolotl_off_attention_flags_say_nothing(tmp_path):
    got = _import(tmp_path, "axolotl", AXOLOTL + "xformers_attention:\nflash_attention: false\nattn_implementation: sdpa\n")
    assert tomllib.loads(got.text)["model"]["attention"] == "sdpa"
    assert got.draft.ledger["flash_attention"].how == "exact" and got.draft.ledger["xformers_attention"].how == "exact"
    assert not got.draft.warnings


AXOLOTL_REFUSED = [
    # (line, the error's words, its help)
    ("max_packed_sequence_len: 2048", "`max_packed_sequence_len` was removed in axolotl 0.4.0, replaced by `sample_packing: true`", "write `sample_packing: true` instead"),
    ("rope_scaling:\n  type: linear\n  factor: 2.0", "`rope_scaling` was removed in axolotl 0.5.0, replaced by `overrides_of_model_config.rope_scaling`", "overrides_of_model_config.rope_scaling"),
    ("dpo_use_logits_to_keep: false", "`dpo_use_logits_to_keep` was removed in axolotl 0.15.0 (TRL 0.29)", "delete `dpo_use_logits_to_keep`"),
    ("dpo_generate_during_eval: true", "`dpo_generate_during_eval` was removed in axolotl 0.15.0 (TRL 0.29)", "delete"),
    ("dpo_norm_loss: true", "`dpo_norm_loss` was removed in axolotl 0.15.0 (TRL 0.29)", "delete"),
    ("rpo_alpha: 0.5", "`rpo_alpha` was removed in axolotl 0.16.0 (TRL 0.29)", "delete"),
    ("s2_attention: true", "`s2_attention` was removed in axolotl 0.17.0", "delete"),
    ("flash_attn_rms_norm: true", "`flash_attn_rms_norm` was removed in axolotl 0.17.0", "delete"),
    ("unsloth_lora_mlp: true", "`unsloth_lora_mlp` was removed in axolotl 0.17.0, replaced by `lora_mlp_kernel`, `lora_qkv_kernel` and `lora_o_kernel`", "lora_mlp_kernel"),
    ("unsloth_cross_entropy_loss: true", "`unsloth_cross_entropy_loss` was removed in axolotl 0.17.0", "lora_qkv_kernel"),
]


@pytest.mark.parametrize(("line", "message", "help"), AXOLOTL_REFUSED, ids=[r[0].split(":")[0] for r in AXOLOTL_REFUSED])
def test_axolotl_refuses_removed_keys_it_refuses(tmp_path, line, message, help):
    (diag,) = _refused(tmp_path, "axolotl", AXOLOTL + line + "\n")
    assert message in diag.message and diag.message.endswith("axolotl 0.18.0 refuses it")
    assert help in diag.help and diag.location.line == 9


def test_axolotl_refuses_sharegpt_datasets(tmp_path):
    (diag,) = _refused(tmp_path, "axolotl", AXOLOTL.replace("type: alpaca", "type: sharegpt:chat"))
    assert diag.message == "`datasets[0].type: sharegpt:chat` was removed in axolotl 0.5.0, replaced by `type: chat_template`: axolotl 0.18.0 refuses it"
    assert diag.location.line == 4


def test_axolotl_every_refusal_at_once_with_the_unknown_keys(tmp_path):
    diags = _refused(tmp_path, "axolotl", AXOLOTL + "rpo_alpha: 0.5\nlora_alpah: 16\ns2_attention: true\n")
    assert [d.location.line for d in diags] == [9, 10, 11]
    assert "unknown key `lora_alpah`" in diags[1].message


@pytest.mark.parametrize("line", ["max_packed_sequence_len:", "s2_attention: false", "unsloth_rope: false", "rope_scaling:", "dpo_norm_loss:"])
def test_axolotl_accepts_removed_keys_that_are_off(tmp_path, line):
    got = _import(tmp_path, "axolotl", AXOLOTL + line + "\n")
    key = line.split(":")[0]
    assert got.draft.ledger[key].how == "exact"
    assert tomllib.loads(got.text) == tomllib.loads(_import(tmp_path, "axolotl", AXOLOTL).text)
    _warned(got, f"`{key}` was removed in axolotl", "here it is off, so nothing is lost")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("relora_steps: 150", "`relora_steps` was removed in axolotl 0.12.0, replaced by `jagged_restart_steps` with `relora: true`"),
        ("relora_warmup_steps: 10", "`relora_warmup_steps` was removed in axolotl 0.12.0, replaced by `jagged_restart_warmup_steps`"),
        ("relora_anneal_steps: 10", "replaced by `jagged_restart_anneal_steps`"),
        ("eval_table_max_new_tokens: 128", "`eval_table_max_new_tokens` was removed in axolotl 0.5.0, replaced by `eval_max_new_tokens`"),
        ("flash_attn_fuse_qkv: true", "`flash_attn_fuse_qkv` was removed in axolotl 0.12.0"),
        ("gptq_groupsize: 128", "`gptq_groupsize` was removed in axolotl 0.3.0, replaced by `gptq: true`"),
        ("gptq_model_v1: true", "`gptq_model_v1` was removed in axolotl 0.3.0"),
        ("gptq_disable_exllama: true", "`gptq_disable_exllama` was removed in axolotl 0.5.0"),
        ("base_model_ignore_patterns: pytorch*", "`base_model_ignore_patterns` was removed in axolotl 0.3.0"),
        ("landmark_attention: true", "`landmark_attention` was removed in axolotl 0.4.0"),
        ("xpos_rope: true", "`xpos_rope` was removed in axolotl 0.4.0"),
        ("sample_packing_seq_len_multiplier: 2", "`sample_packing_seq_len_multiplier` was removed in axolotl 0.5.0"),
        ("debug: true", "`debug` was removed in axolotl 0.5.0, replaced by the `--debug` option of `axolotl preprocess`"),
    ],
)
def test_axolotl_removed_keys_it_drops_unread_are_not_imported(tmp_path, line, message):
    got = _import(tmp_path, "axolotl", AXOLOTL + line + "\n")
    key = line.split(":")[0]
    entry = got.draft.ledger[key]
    assert (entry.how, entry.reason) == ("dropped", "ignored-by-tool")
    assert tomllib.loads(got.text) == tomllib.loads(_import(tmp_path, "axolotl", AXOLOTL).text)
    _warned(got, message, "axolotl 0.18.0 ignores it, so the recipe does not have it either")


def test_axolotl_0_4_example(imported):
    got = imported("axolotl", LEGACY / "axolotl-0.4.0-llama-2-lora.yml")
    ledger = got.result.draft.ledger
    assert got.recipe["model"]["attention"] == "flash_attention_2"
    assert ledger["flash_attention"].how == "exact" and ledger["xformers_attention"].how == "exact"
    assert ledger["s2_attention"].how == "exact" and ledger["debug"].how == "exact"
    assert (ledger["eval_table_max_new_tokens"].how, ledger["eval_table_max_new_tokens"].reason) == ("dropped", "ignored-by-tool")
    warnings = [w for w, _ in got.result.draft.warnings]
    assert [w.split(" ", 1)[0] for w in warnings] == ["`flash_attention:", "`s2_attention`", "`eval_table_max_new_tokens`", "`debug`"]
    assert 'attention = "flash_attention_2"' in got.result.text
    assert "# flash_attention (`flash_attention: true` is the old spelling of `attn_implementation: flash_attention_2`)" in got.result.text


# -- transformers' TrainingArguments ------------------------------------------------------

ARGS = {"output_dir": "out", "learning_rate": 2e-5, "lr_scheduler_type": "cosine", "num_train_epochs": 1, "save_strategy": "no"}

TRANSFORMERS_RENAMED = [
    # (old, new, the release that renamed it); each alone, as a 4.x release wrote it
    ({"evaluation_strategy": "steps", "eval_steps": 100}, {"eval_strategy": "steps", "eval_steps": 100}, "transformers 4.41"),
    ({"no_cuda": True}, {"use_cpu": True}, "transformers 4.32"),
    ({"per_gpu_train_batch_size": 16}, {"per_device_train_batch_size": 16}, "transformers 3 (2020)"),
    ({"per_gpu_eval_batch_size": 16}, {"per_device_eval_batch_size": 16}, "transformers 3 (2020)"),
    ({"fp16_backend": "apex"}, {"half_precision_backend": "apex"}, "transformers 4 (2021)"),
    ({"push_to_hub_token": "hf_x"}, {"hub_token": "hf_x"}, "transformers 4 (2021)"),
    ({"include_inputs_for_metrics": True}, {"include_for_metrics": ["inputs"]}, "transformers 4.46"),
    ({"adafactor": True}, {"optim": "adafactor"}, "transformers 4 (2021)"),
    ({"gradient_checkpointing": True}, {"activation_checkpointing": True}, "transformers 5.23"),
    ({"gradient_checkpointing_kwargs": {"use_reentrant": False}}, {"activation_checkpointing_kwargs": {"use_reentrant": False}}, "transformers 5.23"),
]


def _args(**more) -> str:
    import json

    return json.dumps({**ARGS, **more}, indent=1)


def _hf(tmp_path, text):
    return _import(tmp_path, "transformers", text, "args.json", model="org/model", data="org/data")


@pytest.mark.parametrize(("old", "new", "since"), TRANSFORMERS_RENAMED, ids=[next(iter(r[0])) for r in TRANSFORMERS_RENAMED])
def test_transformers_old_name_maps_as_the_new_one(tmp_path, old, new, since):
    o, n = next(iter(old)), next(iter(new))
    got, _ = _same(tmp_path, "transformers", _args(**old), _args(**new), o, n, "args.json", model="org/model", data="org/data")
    _warned(got, f"`{o}", "is the old", f"`{n}", f"renamed in {since}", "and so does this import")
    _named(got, o, n)


def test_transformers_4x_per_gpu_batch_wins_over_per_device(tmp_path):
    """A 4.x file has both: per_gpu_train_batch_size set wins (TrainingArguments.train_batch_size)."""
    got = _hf(tmp_path, _args(per_gpu_train_batch_size=16, per_device_train_batch_size=8))
    want = _hf(tmp_path, _args(per_device_train_batch_size=16))
    assert tomllib.loads(got.text) == tomllib.loads(want.text)
    assert tomllib.loads(got.text)["train"]["micro_batch_size"] == 16
    assert got.draft.ledger["per_gpu_train_batch_size"].how == "exact"
    entry = got.draft.ledger["per_device_train_batch_size"]
    assert (entry.how, entry.reason) == ("dropped", "ignored-by-tool")
    _warned(got, "both are set and the old one wins", "`per_device_train_batch_size` is ignored")


def test_transformers_4x_file_with_both_names_and_one_value(tmp_path):
    """4.41 to 4.50 write both names, with one value: nothing to warn about."""
    got = _hf(tmp_path, _args(evaluation_strategy="steps", eval_strategy="steps", eval_steps=100, no_cuda=False, use_cpu=False, per_gpu_train_batch_size=None, per_device_train_batch_size=8, fp16_backend="auto", half_precision_backend="auto", adafactor=False, optim="adamw_torch"))
    assert not [w for w, _ in got.draft.warnings if "old" in w]
    for key in ("evaluation_strategy", "no_cuda", "per_gpu_train_batch_size", "fp16_backend", "adafactor"):
        assert got.draft.ledger[key].how == "exact", key


def test_transformers_5_25_mirrors_gradient_checkpointing(tmp_path):
    got = _hf(tmp_path, _args(activation_checkpointing=True, gradient_checkpointing=True))
    assert tomllib.loads(got.text)["model"]["gradient_checkpointing"] is True
    assert got.draft.ledger["gradient_checkpointing"].how == "exact" and got.draft.ledger["activation_checkpointing"].how == "exact"
    assert not got.draft.warnings
    # set apart, 5.25 reads the new name
    got = _hf(tmp_path, _args(activation_checkpointing=False, gradient_checkpointing=True))
    assert tomllib.loads(got.text)["model"]["gradient_checkpointing"] is False
    assert got.draft.ledger["gradient_checkpointing"].reason == "ignored-by-tool"
    _warned(got, "both are set and transformers reads `activation_checkpointing`")


def test_transformers_adafactor_flag_overrides_optim(tmp_path):
    got = _hf(tmp_path, _args(adafactor=True, optim="adamw_torch"))
    assert tomllib.loads(got.text)["optim"]["name"] == "adafactor"
    assert got.draft.ledger["optim"].reason == "ignored-by-tool"
    assert "~ adafactor: " in got.text and "`adafactor: true` is the old spelling of `optim: adafactor`" in got.text


# -- LLaMA-Factory ------------------------------------------------------------------------

LF = """model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
stage: sft
do_train: true
finetuning_type: lora
lora_target: all
dataset: alpaca_en_demo
template: llama3
cutoff_len: 1024
output_dir: saves/out
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 1.0
"""

LF_REFUSED = [
    # (old line, the release that removed it, the replacement the error names)
    ("dpo_beta: 0.1", "LLaMA-Factory 0.8.0", "`pref_beta`"),
    ("dpo_loss: sigmoid", "LLaMA-Factory 0.8.0", "`pref_loss`"),
    ("dpo_ftx: 1.0", "LLaMA-Factory 0.8.0", "`pref_ftx`"),
    ("orpo_beta: 0.1", "LLaMA-Factory 0.8.0", "`pref_beta` with `pref_loss: orpo`"),
    ("name_module_trainable: mlp", "LLaMA-Factory 0.7.1", "`freeze_trainable_modules`"),
    ("num_layer_trainable: 2", "LLaMA-Factory 0.7.1", "`freeze_trainable_layers`"),
    ("badam_switch_block_every: 50", "LLaMA-Factory 0.7.1", "`badam_switch_interval`"),
    ("sft_packing: true", "LLaMA-Factory 0.6.0", "`packing`"),
    ("lora_bf16_mode: true", "LLaMA-Factory 0.6.0", "`pure_bf16`"),
    ("disable_version_checking: true", "LLaMA-Factory 0.6.0", "DISABLE_VERSION_CHECK"),
    ("ppo_logger: wandb", "LLaMA-Factory 0.6.1", "`report_to`"),
    ("cache_path: cache", "LLaMA-Factory 0.6.2", "`tokenized_path`"),
    ("reserved_label_len: 1", "LLaMA-Factory 0.8.3", ""),
    ("split: train", "LLaMA-Factory 0.8.3", ""),
    ("visual_inputs: true", "LLaMA-Factory 0.9.0", ""),
    ("image_resolution: 512", "LLaMA-Factory 0.9.2", "`image_max_pixels`"),
    ("video_resolution: 128", "LLaMA-Factory 0.9.2", "`video_max_pixels`"),
    ("image_dir: data", "LLaMA-Factory 0.9.2", "`media_dir`"),
    ("train_mm_proj_only: true", "LLaMA-Factory 0.9.2", "`freeze_language_model` with `freeze_vision_tower`"),
    ("new_special_tokens: <a>", "LLaMA-Factory 0.9.3", "`add_special_tokens`"),
    ("vllm_dtype: auto", "LLaMA-Factory 0.8.2", "`infer_dtype`"),
    ("checkpoint_dir: saves/x", "LLaMA-Factory 0.4.0", "`adapter_name_or_path`"),
    ("resume_lora_training: false", "LLaMA-Factory 0.4.0", "`create_new_adapter`"),
    ("ref_model_checkpoint: saves/x", "LLaMA-Factory 0.4.0", "`ref_model_adapters`"),
    ("reward_model_checkpoint: saves/x", "LLaMA-Factory 0.4.0", "`reward_model_adapters`"),
    ("neft_alpha: 5", "LLaMA-Factory 0.4.0", "`neftune_noise_alpha`"),
    ("system_prompt: hi", "LLaMA-Factory 0.4.0", "a `system` column"),
    ("use_auth_token: true", "LLaMA-Factory 0.2.1", "`hf_hub_token`"),
    ("hf_auth_token: x", "LLaMA-Factory 0.2.1", "`hf_hub_token`"),
    ("evaluation_strategy: steps", "transformers 4.51", "`eval_strategy`"),
    ("dispatch_batches: false", "transformers 4.51", "`accelerator_config: {dispatch_batches: ...}`"),
    ("split_batches: true", "transformers 4.51", "`accelerator_config: {split_batches: ...}`"),
]


@pytest.mark.parametrize(("line", "since", "by"), LF_REFUSED, ids=[r[0].split(":")[0] for r in LF_REFUSED])
def test_llama_factory_refuses_removed_keys_naming_the_release_and_the_replacement(tmp_path, line, since, by):
    (diag,) = _refused(tmp_path, "llama-factory", LF + line + "\n")
    key = line.split(":")[0]
    assert diag.message.startswith(f"`{key}` was removed in {since}")
    assert diag.message.endswith("LLaMA-Factory 0.9.5 refuses it")
    assert by in diag.message and (by in diag.help if by else diag.help == f"delete `{key}`")
    assert diag.location.line == 14


@pytest.mark.parametrize(("old", "new"), [("no_cuda: true", "use_cpu: true"), ("per_gpu_train_batch_size: 4", "per_device_train_batch_size: 4"), ("adafactor: true", "optim: adafactor")])
def test_llama_factory_reads_transformers_4_names_as_transformers_4_57_does(tmp_path, old, new):
    base = LF.replace("per_device_train_batch_size: 1\n", "") if "per_" in old else LF
    got, _ = _same(tmp_path, "llama-factory", base + old + "\n", base + new + "\n", old.split(":")[0], new.split(":")[0])
    _warned(got, "LLaMA-Factory 0.9.5 on transformers 4.55 to 4.57 reads it as the new one (on transformers 5 it refuses it)")


def test_llama_factory_0_7_1_example(tmp_path, imported):
    path = LEGACY / "llama-factory-0.7.1-llama3_lora_dpo.yaml"
    with pytest.raises(RecipeError) as info:
        import_config(path, "llama-factory")
    assert [(d.location.line, d.message.split(" ", 1)[0]) for d in info.value.diagnostics] == [(12, "`dpo_ftx`"), (41, "`evaluation_strategy`")]
    # with the two keys LLaMA-Factory renamed since, the config imports
    fixed = path.read_text(encoding="utf-8").replace("dpo_ftx:", "pref_ftx:").replace("evaluation_strategy:", "eval_strategy:")
    (tmp_path / "fixed.yaml").write_text(fixed, encoding="utf-8")
    got = imported("llama-factory", tmp_path / "fixed.yaml", files=["data/orca_rlhf.json"])
    assert got.recipe["preference"]["objective"] == "dpo"
    # pref_ftx 1.0: the chosen completions' NLL, averaged per completion as LLaMA-Factory takes it
    assert got.recipe["preference"]["sft_weight"] == 1.0 and got.recipe["preference"]["sft_average"] == "sequences"


# -- torchtune ----------------------------------------------------------------------------

TORCHTUNE = CONFIGS / "torchtune"


def _tt(name: str, **changes) -> str:
    """A corpus config of torchtune 0.6.1 with `table.key` values changed (None deletes)."""
    import yaml

    data = yaml.safe_load((TORCHTUNE / name).read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        *head, last = dotted.split("__")
        node = data
        for p in head:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return yaml.safe_dump(data, sort_keys=False)


@pytest.mark.parametrize(
    ("config", "table", "old", "since", "new"),
    [
        ("llama3_2-1B-lora-single-device.yaml", "checkpointer", "torchtune.utils.FullModelHFCheckpointer", "0.3.0", "torchtune.training.FullModelHFCheckpointer"),
        ("llama3_2-1B-lora-single-device.yaml", "checkpointer", "torchtune.utils.FullModelMetaCheckpointer", "0.3.0", "torchtune.training.FullModelMetaCheckpointer"),
        ("llama3_2-1B-lora-single-device.yaml", "metric_logger", "torchtune.utils.metric_logging.DiskLogger", "0.3.0", "torchtune.training.metric_logging.DiskLogger"),
        ("llama3_2-1B-lora-single-device.yaml", "metric_logger", "torchtune.utils.metric_logging.WandBLogger", "0.3.0", "torchtune.training.metric_logging.WandBLogger"),
        ("llama3_2-1B-lora-single-device.yaml", "lr_scheduler", "torchtune.modules.get_cosine_schedule_with_warmup", "0.5.0", "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup"),
        ("llama3_2-1B-lora-single-device.yaml", "dataset", "torchtune.datasets.stack_exchanged_paired_dataset", "0.3.0", "torchtune.datasets.stack_exchange_paired_dataset"),
        ("llama3_1-8B-lora-dpo.yaml", "loss", "torchtune.modules.loss.DPOLoss", "0.3.0", "torchtune.rlhf.loss.DPOLoss"),
        ("llama3_1-8B-lora-dpo.yaml", "loss", "torchtune.modules.rlhf.loss.DPOLoss", "0.3.1", "torchtune.rlhf.loss.DPOLoss"),
        ("llama3_1-8B-lora-dpo.yaml", "loss", "torchtune.modules.rlhf.loss.RSOLoss", "0.3.1", "torchtune.rlhf.loss.RSOLoss"),
    ],
)
def test_torchtune_refuses_a_component_that_moved(tmp_path, config, table, old, since, new):
    (diag,) = _refused(tmp_path, "torchtune", _tt(config, **{f"{table}___component_": old}))
    assert diag.message == f"`{table}._component_: {old}` was removed in torchtune {since}, replaced by `{new}`: torchtune 0.6.1 refuses it"
    assert diag.help == f"write `{new}` instead"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dataset__max_seq_len": 1024}, "`dataset.max_seq_len` was removed in torchtune 0.3.0, replaced by `tokenizer.max_seq_len`"),
        ({"loss__loss_type": "sigmoid"}, "`loss.loss_type` was removed in torchtune 0.3.0, replaced by a loss class of its own"),
    ],
)
def test_torchtune_refuses_removed_keys(tmp_path, change, message):
    config = "llama3_1-8B-lora-dpo.yaml" if "loss__loss_type" in change else "llama3_2-1B-lora-single-device.yaml"
    (diag,) = _refused(tmp_path, "torchtune", _tt(config, **change))
    assert diag.message.startswith(message) and diag.message.endswith("torchtune 0.6.1 refuses it")


def test_torchtune_memory_efficient_fsdp_wrap_is_not_read(tmp_path):
    base = _tt("llama3_1-8B-full.yaml")
    got = _import(tmp_path, "torchtune", base + "memory_efficient_fsdp_wrap: true\n", num_processes=4)
    entry = got.draft.ledger["memory_efficient_fsdp_wrap"]
    assert (entry.how, entry.reason) == ("dropped", "ignored-by-tool")
    assert tomllib.loads(got.text) == tomllib.loads(_import(tmp_path, "torchtune", base, num_processes=4).text)
    _warned(got, "`memory_efficient_fsdp_wrap` was removed in torchtune 0.3.0, replaced by FSDP2's per-layer sharding: torchtune 0.6.1 ignores it")
    got = _import(tmp_path, "torchtune", base + "memory_efficient_fsdp_wrap: false\n", num_processes=4)
    assert got.draft.ledger["memory_efficient_fsdp_wrap"].how == "exact"


def test_torchtune_null_log_every_n_steps_is_every_step(tmp_path):
    """torchtune 0.1 read null as every step; 0.2.0 and later fail on it: approximate, warned."""
    text = _tt("llama3_2-1B-lora-single-device.yaml", log_every_n_steps=1).replace("log_every_n_steps: 1", "log_every_n_steps: null")
    got = _import(tmp_path, "torchtune", text)
    assert tomllib.loads(got.text)["train"]["log_every"] == 1
    assert got.draft.ledger["log_every_n_steps"].how == "approx"
    _warned(got, "`log_every_n_steps: null` meant every step in torchtune 0.1")


def test_torchtune_0_2_1_example(tmp_path):
    path = LEGACY / "torchtune-0.2.1-llama2-7B_lora_dpo_single_device.yaml"
    with pytest.raises(RecipeError) as info:
        import_config(path, "torchtune")
    got = [(d.location.line, d.message.split(" was removed in ")[1].split(",")[0]) for d in info.value.diagnostics]
    assert got == [(36, "torchtune 0.3.0"), (50, "torchtune 0.3.0"), (51, "torchtune 0.3.0"), (62, "torchtune 0.5.0"), (66, "torchtune 0.3.0"), (69, "torchtune 0.3.0"), (79, "torchtune 0.3.0")]
    # with every error's help applied, the config imports as a DPO recipe
    text = path.read_text(encoding="utf-8")
    for d in info.value.diagnostics:
        if "_component_" in d.message:
            old = d.message.split(": ", 1)[1].split("`", 1)[0]
            text = text.replace(old, d.help.split("`")[1])
    text = text.replace("  max_seq_len: 1024\n", "").replace("  loss_type: sigmoid\n", "")
    text = text.replace("  path: /tmp/Llama-2-7b-hf/tokenizer.model\n", "  path: /tmp/Llama-2-7b-hf/tokenizer.model\n  max_seq_len: 1024\n")
    recipe = tomllib.loads(_import(tmp_path, "torchtune", text).text)
    assert recipe["preference"]["objective"] == "dpo" and recipe["data"]["seq_len"] == 1024


# -- LitGPT -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "by"),
    [
        ("learning_rate", "optimizer.init_args.lr"),
        ("weight_decay", "optimizer.init_args.weight_decay"),
        ("beta1", "optimizer.init_args.betas"),
        ("beta2", "optimizer.init_args.betas"),
    ],
)
def test_litgpt_refuses_the_optimizer_fields_of_train_args(tmp_path, key, by):
    text = (CONFIGS / "litgpt" / "phi-2-lora.yaml").read_text(encoding="utf-8").replace("\ntrain:\n", f"\ntrain:\n  {key}: 0.1\n", 1)
    (diag,) = _refused(tmp_path, "litgpt", text)
    assert diag.message == f"`train.{key}` was removed in litgpt 0.4.0, replaced by `{by}`: litgpt 0.5.13 refuses it"
    assert diag.help == f"write `{by}` instead"


def test_litgpt_0_3_1_example(tmp_path, imported):
    path = LEGACY / "litgpt-0.3.1-llama-2-7b-lora.yaml"
    with pytest.raises(RecipeError) as info:
        import_config(path, "litgpt")
    assert [(d.location.line, d.message.split("`")[1]) for d in info.value.diagnostics] == [
        (90, "train.learning_rate"), (93, "train.weight_decay"), (96, "train.beta1"), (99, "train.beta2"),
    ]
    # moved into `optimizer`, as 0.4.0 wants them, the config imports
    text = path.read_text(encoding="utf-8")
    for line in ("  learning_rate: 0.0002\n", "  weight_decay: 0.0\n", "  beta1: 0.9\n", "  beta2: 0.95\n"):
        text = text.replace(line, "")
    text += "optimizer:\n  class_path: torch.optim.AdamW\n  init_args:\n    lr: 0.0002\n    weight_decay: 0.0\n    betas: [0.9, 0.95]\n"
    (tmp_path / "fixed.yaml").write_text(text, encoding="utf-8")
    recipe = imported("litgpt", tmp_path / "fixed.yaml").recipe
    assert recipe["optim"]["lr"] == 0.0002 and recipe["optim"]["betas"] == [0.9, 0.95]


# -- llm-foundry --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["global_seed", "data_local", "data_remote", "tokenizer_name", "model_name", "icl_max_seq_len"])
def test_llm_foundry_refuses_top_level_variables(tmp_path, name):
    text = (CONFIGS / "llm-foundry" / "mpt-125m.yaml").read_text(encoding="utf-8")
    (diag,) = _refused(tmp_path, "llm-foundry", f"{name}: x\n" + text, num_processes=8)
    assert diag.message == (
        f"`{name}` was removed in llm-foundry 0.10.0, replaced by `variables.{name}` (referred to as "
        f"`${{variables.{name}}}`): llm-foundry 0.21.0 refuses it"
    )
    assert diag.location.line == 1


def test_llm_foundry_0_8_0_example(tmp_path):
    path = LEGACY / "llm-foundry-0.8.0-mpt-125m.yaml"
    with pytest.raises(RecipeError) as info:
        import_config(path, "llm-foundry", Options(name="legacy", num_processes=8))
    assert [(d.location.line, d.message.split("`")[1]) for d in info.value.diagnostics] == [(3, "data_local"), (4, "data_remote"), (6, "global_seed")]
    # under `variables`, as 0.10.0 wants them, the config imports like 0.21.0's own
    text = path.read_text(encoding="utf-8")
    head = "variables:\n  data_local: ./my-copy-c4\n  data_remote:\n  global_seed: 17\n"
    for line in ("data_local: ./my-copy-c4\n", "data_remote:  # If blank, files must be present in data_local\n", "global_seed: 17\n"):
        text = text.replace(line, "")
    for name in ("data_local", "data_remote", "global_seed"):
        text = text.replace("${" + name + "}", "${variables." + name + "}")
    recipe = tomllib.loads(_import(tmp_path, "llm-foundry", head + text, num_processes=8).text)
    assert recipe["recipe"]["seed"] == 17


def test_axolotl_of_two_attention_flags_the_one_axolotl_prefers_is_read(tmp_path):
    """axolotl takes the first flag set in LEGACY_ATTN_FLAG_TO_IMPL's order (flash before sdp),
    whatever the file's order."""
    got = _import(tmp_path, "axolotl", AXOLOTL + "sdp_attention: true\nflash_attention: true\n")
    assert tomllib.loads(got.text)["model"]["attention"] == "flash_attention_2"
    entry = got.draft.ledger["sdp_attention"]
    assert (entry.how, entry.reason) == ("dropped", "ignored-by-tool")
    _warned(got, "`sdp_attention: true` is an old spelling of `attn_implementation: sdpa`, which `flash_attention` sets already")


# -- old values ---------------------------------------------------------------------------
# A key that kept its name but whose value changed: read as the tool reads it today (with a
# warning naming both spellings), or refused where the tool refuses it.


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("gradient_checkpointing: offload\n", "gradient_checkpointing: true\nactivation_offloading: true\n"),
        ("gradient_checkpointing: offload_disk\n", "gradient_checkpointing: true\nactivation_offloading: disk\n"),
    ],
    ids=["offload", "offload_disk"],
)
def test_axolotl_offloaded_gradient_checkpointing_is_activation_offloading(tmp_path, old, new):
    got, want = _same(tmp_path, "axolotl", AXOLOTL + old, AXOLOTL + new, "gradient_checkpointing", "activation_offloading")
    assert tomllib.loads(got.text)["model"]["gradient_checkpointing"] is True
    value = old.split(": ")[1].strip()
    said = f"`gradient_checkpointing: {value}` is the old spelling of `gradient_checkpointing: true` with `activation_offloading: {new.split(': ')[-1].strip()}`"
    _warned(got, said, "(changed in axolotl 0.12.0); axolotl 0.18.0 still reads it as the new one, and so does this import")
    assert f"# gradient_checkpointing ({said})" in got.text
    assert said in got.draft.ledger["gradient_checkpointing"].why  # offloading is approximate, as the new spelling's is


def test_axolotl_offload_overrides_the_files_activation_offloading(tmp_path):
    """axolotl's check_gradient_checkpointing_w_offload sets activation_offloading whatever the file says."""
    got = _import(tmp_path, "axolotl", AXOLOTL + "gradient_checkpointing: offload_disk\nactivation_offloading: legacy\n")
    want = _import(tmp_path, "axolotl", AXOLOTL + "gradient_checkpointing: true\nactivation_offloading: disk\n")
    assert tomllib.loads(got.text) == tomllib.loads(want.text)
    entry = got.draft.ledger["activation_offloading"]
    assert (entry.how, entry.reason) == ("dropped", "ignored-by-tool")
    _warned(got, "`gradient_checkpointing: offload_disk` sets `activation_offloading: disk` as axolotl reads it: the file's `activation_offloading` is ignored")


def test_axolotl_refuses_tokens_as_a_table(tmp_path):
    (diag,) = _refused(tmp_path, "axolotl", AXOLOTL + "tokens:\n  pad_token: <pad>\n")
    assert diag.message == "`tokens` as a table was removed in axolotl 0.1.0, replaced by `special_tokens`: axolotl 0.18.0 refuses it"
    assert diag.help == "write `special_tokens` instead" and diag.location.line == 9
    # the list it is today imports
    got = _import(tmp_path, "axolotl", AXOLOTL + "tokens:\n  - <pad>\n")
    assert not got.draft.warnings


def test_axolotl_0_11_example(tmp_path, imported):
    path = LEGACY / "axolotl-0.11.0-qwen3-32b-qlora.yaml"
    got = imported("axolotl", path)
    text = path.read_text(encoding="utf-8")
    new = text.replace("gradient_checkpointing: offload\n", "gradient_checkpointing: true\nactivation_offloading: true\n")
    new = new.replace("flash_attention: true\n", "attn_implementation: flash_attention_2\n")
    (tmp_path / "new.yaml").write_text(new, encoding="utf-8")
    want = imported("axolotl", tmp_path / "new.yaml")
    assert got.recipe == {**want.recipe, "recipe": {**want.recipe["recipe"], "name": got.recipe["recipe"]["name"]}}
    assert got.recipe["model"]["gradient_checkpointing"] is True and got.recipe["model"]["attention"] == "flash_attention_2"
    warnings = [w for w, _ in got.result.draft.warnings]
    assert warnings[0].startswith("`gradient_checkpointing: offload` is the old spelling") and warnings[1].startswith("`flash_attention: true` is the old spelling")
    assert not [k for k in got.result.draft.values if k not in got.result.draft.ledger]


LF_OLD_VALUES = [
    # (line, the error's words, its help)
    ("stage: orpo", "`stage: orpo` was removed in LLaMA-Factory 0.8.0, replaced by `stage: dpo` with `pref_loss: orpo`", "write `stage: dpo` with `pref_loss: orpo` instead"),
    ("flash_attn: true", "`flash_attn: true` was removed in LLaMA-Factory 0.7.0, replaced by `flash_attn: fa2`", "write `flash_attn: fa2` instead"),
    ("flash_attn: false", "`flash_attn: false` (or `off`, which YAML reads as false) was removed in LLaMA-Factory 0.7.0, replaced by `flash_attn: disabled`", "write `flash_attn: disabled` instead"),
    ("flash_attn: off", "`flash_attn: false` (or `off`, which YAML reads as false) was removed in LLaMA-Factory 0.7.0", "write `flash_attn: disabled` instead"),
    ("flash_attn: 'off'", "`flash_attn: off` was removed in LLaMA-Factory 0.8.3, replaced by `flash_attn: disabled`", "write `flash_attn: disabled` instead"),
]


@pytest.mark.parametrize(("line", "message", "help"), LF_OLD_VALUES, ids=[r[0] for r in LF_OLD_VALUES])
def test_llama_factory_refuses_old_values(tmp_path, line, message, help):
    base = LF.replace("stage: sft\n", "") if line.startswith("stage") else LF
    (diag,) = _refused(tmp_path, "llama-factory", base + line + "\n")
    assert diag.message.startswith(message) and diag.message.endswith("LLaMA-Factory 0.9.5 refuses it")
    assert diag.help == help and diag.location.line == base.count("\n") + 1


@pytest.mark.parametrize("value", ["fa2", "disabled", "sdpa", "auto"])
def test_llama_factory_flash_attn_of_today_is_no_old_value(tmp_path, value):
    got = _import(tmp_path, "llama-factory", LF + f"flash_attn: {value}\n")
    assert got.draft.ledger["flash_attn"].how == "exact" and not got.draft.warnings


def test_llama_factory_0_7_1_orpo_example(tmp_path, imported):
    path = LEGACY / "llama-factory-0.7.1-llama3_lora_orpo.yaml"
    with pytest.raises(RecipeError) as info:
        import_config(path, "llama-factory")
    assert [(d.location.line, d.message.split(" was removed")[0]) for d in info.value.diagnostics] == [(8, "`stage: orpo`"), (40, "`evaluation_strategy`")]
    # as 0.8.0 and transformers 4.51 want them, the config imports as ORPO
    fixed = path.read_text(encoding="utf-8").replace("stage: orpo\n", "stage: dpo\npref_loss: orpo\n").replace("evaluation_strategy:", "eval_strategy:")
    (tmp_path / "fixed.yaml").write_text(fixed, encoding="utf-8")
    got = imported("llama-factory", tmp_path / "fixed.yaml", files=["data/orca_rlhf.json"])
    assert got.recipe["preference"]["objective"] == "orpo"


def test_axolotl_refuses_rl_kto_pair(tmp_path):
    text = (CONFIGS / "axolotl" / "dpo-chatml-intel.yaml").read_text(encoding="utf-8")
    assert "rl: dpo\n" in text
    (diag,) = _refused(tmp_path, "axolotl", text.replace("rl: dpo\n", "rl: kto_pair\n"))
    assert diag.message == "`rl: kto_pair` was removed in axolotl 0.5.0, replaced by `rl: kto` (TRL's KTO, on unpaired examples): axolotl 0.18.0 refuses it"
    assert diag.location.line == text.splitlines().index("rl: dpo") + 1


LF_OLD_TEMPLATES = [
    # (template, the release that removed it, the replacement the error names)
    ("baichuan2", "LLaMA-Factory 0.9.5 (obsolete models)", ""),
    ("chatglm2", "LLaMA-Factory 0.9.5 (obsolete models)", ""),
    ("intern", "LLaMA-Factory 0.9.5 (obsolete models)", ""),
    ("chatglm3_system", "LLaMA-Factory 0.8.3", "`template: chatglm3`"),
    ("vanilla", "LLaMA-Factory 0.6.3", "`template: empty` or `template: fewshot`"),
    ("chatglm3_raw", "LLaMA-Factory 0.5.0", "`template: chatglm3` (tool calls)"),
    ("linly", "LLaMA-Factory 0.2.1", ""),
]


@pytest.mark.parametrize(("name", "since", "by"), LF_OLD_TEMPLATES, ids=[r[0] for r in LF_OLD_TEMPLATES])
def test_llama_factory_refuses_templates_it_no_longer_has(tmp_path, name, since, by):
    (diag,) = _refused(tmp_path, "llama-factory", LF.replace("template: llama3", f"template: {name}"))
    instead = f", replaced by {by}" if by else ""
    assert diag.message == f"`template: {name}` was removed in {since}{instead}: LLaMA-Factory 0.9.5 refuses it"
    assert diag.help == (f"write {by} instead" if by else "delete `template`, or give it a value LLaMA-Factory 0.9.5 has")
    assert diag.location.line == 7


def test_llama_factory_old_templates_are_none_of_0_9_5s():
    """The templates refused as old are exactly those 0.9.5's template.py lacks; the ones recipec
    knows of 0.9.5 (written out, or not for a reason) are none of them."""
    from recipec.importers.llama_factory import LEGACY_VALUES
    from recipec.importers.llama_factory_templates import NOT_WRITTEN, TEMPLATES

    old = [e.old for e in LEGACY_VALUES["template"]]
    assert len(old) == len(set(old)) == 24
    assert not set(old) & (set(TEMPLATES) | set(NOT_WRITTEN))


def test_llama_factory_refuses_finetuning_type_none(tmp_path):
    (diag,) = _refused(tmp_path, "llama-factory", LF.replace("finetuning_type: lora", "finetuning_type: none"))
    assert diag.message == "`finetuning_type: none` was removed in LLaMA-Factory 0.2.1: LLaMA-Factory 0.9.5 refuses it"
    assert diag.location.line == 4


LLM_FOUNDRY_OLD_VALUES = [
    # (old text, new text, the error's words)
    ("    attn_impl: flash\n", "    attn_impl: triton\n", "`model.attn_config.attn_impl: triton` was removed in llm-foundry 0.7.0, replaced by `attn_impl: flash` (or `torch`)"),
    ("  name: decoupled_adamw\n", "  name: decoupled_lionw_8b\n", "`optimizer.name: decoupled_lionw_8b` was removed in llm-foundry 0.6.0"),
    ("  name: mpt_causal_lm\n", "  name: hf_prefix_lm\n", "`model.name: hf_prefix_lm` was removed in llm-foundry 0.7.0"),
    ("train_loader:\n  name: text\n", "train_loader:\n  name: text_denoising\n", "`train_loader.name: text_denoising` was removed in llm-foundry 0.7.0"),
]


@pytest.mark.parametrize(("old", "new", "message"), LLM_FOUNDRY_OLD_VALUES, ids=[r[1].split(": ")[-1].strip() for r in LLM_FOUNDRY_OLD_VALUES])
def test_llm_foundry_refuses_old_values(tmp_path, old, new, message):
    text = (CONFIGS / "llm-foundry" / "mpt-125m.yaml").read_text(encoding="utf-8")
    assert text.count(old) == 1
    (diag,) = _refused(tmp_path, "llm-foundry", text.replace(old, new), num_processes=8)
    assert diag.message.startswith(message) and diag.message.endswith("llm-foundry 0.21.0 refuses it")
    line = text[: text.index(old) + len(old)].count("\n")
    assert diag.location.line == line


@pytest.mark.parametrize("value", ["litgpt.data.Dolly", "Dolly"])
def test_litgpt_refuses_the_dolly_data_module(tmp_path, value):
    text = (CONFIGS / "litgpt" / "phi-2-lora.yaml").read_text(encoding="utf-8")
    import yaml

    data = yaml.safe_load(text)
    data["data"] = {"class_path": value} if "." in value else value
    (diag,) = _refused(tmp_path, "litgpt", yaml.safe_dump(data, sort_keys=False))
    key = "data.class_path" if "." in value else "data"
    assert diag.message.startswith(f"`{key}: {value}` was removed in litgpt 0.5.4, replaced by `litgpt.data.JSON`")
    assert diag.message.endswith("litgpt 0.5.13 refuses it")


def test_axolotl_refuses_bf16_full(tmp_path):
    (diag,) = _refused(tmp_path, "axolotl", AXOLOTL + "bf16: full\n")
    assert diag.message == "`bf16: full` was removed in axolotl 0.5.0: axolotl 0.18.0 refuses it"
    assert diag.help == "delete `bf16`, or give it a value axolotl 0.18.0 has" and diag.location.line == 9


@pytest.mark.parametrize("base", ["chatml", "llama3"])
def test_axolotl_refuses_the_dpo_argilla_type_but_not_ktos(tmp_path, base):
    """axolotl 0.7.0 renamed the DPO strategies' `argilla` to `default`; KTO's kept theirs."""
    text = (CONFIGS / "axolotl" / "dpo-chatml-intel.yaml").read_text(encoding="utf-8")
    assert text.count("type: chatml.intel\n") == 1
    old = text.replace("type: chatml.intel\n", f"type: {base}.argilla\n")
    (diag,) = _refused(tmp_path, "axolotl", old)
    assert diag.message == f"`datasets[0].type: {base}.argilla` was removed in axolotl 0.7.0, replaced by `type: {base}.default`: axolotl 0.18.0 refuses it"
    assert diag.location.line == text.splitlines().index("    type: chatml.intel") + 1
    # with the help applied it imports; under rl: kto the old name is today's
    _import(tmp_path, "axolotl", old.replace(f"{base}.argilla", f"{base}.default"))
    kto = _import(tmp_path, "axolotl", old.replace("rl: dpo\n", "rl: kto\n"))
    assert not [w for w, _ in kto.draft.warnings if "argilla" in w]


@pytest.mark.parametrize("name", ["vicuna-7b-v1.5", "lmsys/vicuna-7b-v1.5", "RedPajama-INCITE-Chat-3B-v1", "h2oai/h2o-danube2-1.8b-chat", "dolly-v2-3b"])
def test_litgpt_refuses_the_models_0_5_4_dropped(tmp_path, name):
    text = (CONFIGS / "litgpt" / "tinyllama-pretrain.yaml").read_text(encoding="utf-8")
    assert text.count("model_name: tiny-llama-1.1b\n") == 1
    (diag,) = _refused(tmp_path, "litgpt", text.replace("model_name: tiny-llama-1.1b\n", f"model_name: {name}\n"))
    assert diag.message == f"`model_name: {name}` was removed in litgpt 0.5.4: litgpt 0.5.13 refuses it"
    assert diag.location.line == text.splitlines().index("model_name: tiny-llama-1.1b") + 1


def test_litgpt_a_dropped_model_name_beside_a_model_config_is_not_read(tmp_path):
    """pretrain reads model_config instead of the name: nothing to refuse."""
    text = (CONFIGS / "litgpt" / "tinyllama-pretrain.yaml").read_text(encoding="utf-8")
    assert text.count("\nmodel_config:\n") == 1
    text = text.replace("model_name: tiny-llama-1.1b\n", "model_name: vicuna-7b-v1.5\n")
    text = text.replace("\nmodel_config:\n", "\nmodel_config:\n  n_layer: 2\n  n_embd: 64\n  n_head: 4\n")
    got = _import(tmp_path, "litgpt", text)
    assert got.draft.ledger["model_name"].how == "exact"


def test_torchtune_refuses_the_mistral_reward_model_type(tmp_path):
    (diag,) = _refused(tmp_path, "torchtune", _tt("llama3_2-1B-lora-single-device.yaml", checkpointer__model_type="MISTRAL_REWARD"))
    assert diag.message == "`checkpointer.model_type: MISTRAL_REWARD` was removed in torchtune 0.3.0, replaced by `model_type: REWARD`: torchtune 0.6.1 refuses it"
    assert diag.help == "write `model_type: REWARD` instead"
