"""`recipec import --from axolotl`: each fixture (mirroring axolotl's shipped examples) imports
to a recipe that validates, with the keys that map only approximately and the keys that are
not imported spelt out; the schedules match transformers' (and axolotl's own) step for step."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import pytest

from recipec.compiler import plan_recipe
from recipec.diagnostics import RecipeError
from recipec.importers import Options, axolotl, import_config
from recipec.runtime import schedule as runtime

from conftest import scheduler_lrs

CONFIGS = Path(__file__).resolve().parent / "configs" / "axolotl"

NFT = "not-for-training"

EXPECTED: dict[str, dict] = {
    # approx: keys whose meaning differs; dropped: key -> reason. Every other key is exact.
    "lora-1b.yaml": {
        "approx": {
            "bf16",  # "auto": bf16 only where the GPU has it
            "warmup_ratio",  # rounded down by axolotl, up by recipec
        },
        "dropped": {"loss_watchdog_threshold": NFT, "loss_watchdog_patience": NFT},
    },
    "qlora-1b.yaml": {
        "approx": {"bf16", "warmup_ratio"},
        "dropped": {"dataset_prepared_path": NFT, "loss_watchdog_threshold": NFT, "loss_watchdog_patience": NFT},
    },
    "mistral-lora.yaml": {
        "approx": {"bf16", "tokenizer_type", "warmup_ratio"},
        "dropped": {"dataset_prepared_path": NFT, "loss_watchdog_threshold": NFT, "loss_watchdog_patience": NFT},
    },
    "fft-8b-zero3.yaml": {
        "approx": {
            "bf16",
            "datasets[0].split",  # a slice of the split
            "deepspeed",  # ZeRO-3 with paged_adamw_8bit becomes FSDP full_shard (recipec's DeepSpeed runs AdamW)
            "warmup_ratio",
        },
        "dropped": {"dataset_prepared_path": NFT},
    },
    "dpo-chatml-intel.yaml": {
        "approx": {
            "bf16",
            "tokenizer_type",
            "datasets[0].type",  # axolotl writes the ChatML turns itself
            "special_tokens.bos_token",
            "warmup_ratio",
        },
        "dropped": {},
    },
    "pretrain-qwen2.yaml": {
        "approx": {"bf16", "sample_packing"},
        "dropped": {"wandb_name": NFT},
    },
    "gemma2-linear-warmup.yaml": {
        "approx": {
            "bf16",
            "chat_template",  # axolotl's gemma template refuses a system message: not written out
            "eot_tokens",
            "warmup_ratio",
            "datasets[0].drop_system_message",  # axolotl drops a leading system message only, recipec every one
        },
        "dropped": {},
    },
    "gemma2-reward-model.yaml": {
        "approx": {
            "chat_template",  # axolotl's gemma template refuses a system message: not written out
            "warmup_ratio",
        },
        "dropped": {"eval_max_new_tokens": NFT},
        "warnings": ["`flash_attention: true` is the old spelling", "`debug` was removed in axolotl 0.5.0"],
    },
    "gemma3-1b-qlora.yaml": {
        "approx": {"bf16", "eot_tokens", "warmup_ratio"},  # chat_template gemma3: written out
        # unfrozen_parameters with the adapter: axolotl matches the PEFT model's names (base_model.model.…), none here
        "dropped": {"ddp_find_unused_parameters": NFT, "unfrozen_parameters": "no-equivalent"},
        "warnings": ["`unfrozen_parameters` with an adapter is not imported"],
    },
    "cpt-cosine-min-lr.yaml": {
        "approx": {"sample_packing"},  # text: recipec packs a stream of documents
        "dropped": {"dataset_prepared_path": NFT},
    },
    "lora-1b-deduplicate-sft.yaml": {
        "approx": {
            "bf16",
            "dataset_exact_deduplication",  # tokenized rows vs the documents' text
            "warmup_ratio",
        },
        "dropped": {"evals_per_epoch": "ignored-by-tool"},  # val_set_size 0: never evaluated
        "warnings": ["evaluation is configured but there is no held-out data"],
    },
    "rewarm-cosine-constant.yaml": {
        "approx": {"sample_packing"},
        "dropped": {},
        "warnings": ["`flash_attention: true` is the old spelling of `attn_implementation: flash_attention_2`"],
    },
    "alst-fsdp2-cp8.yaml": {
        "approx": {
            "context_parallel_size",  # ring-flash-attn becomes torch's ring attention (cp_size)
            "attn_implementation",  # flash_attention_2 becomes sdpa, which the ring attention replaces
            "optimizer",
            "bf16",
            "sample_packing",
            "activation_offloading",
            "plugins",  # Cut Cross Entropy becomes the chunked cross-entropy
        },
        "dropped": {
            "evals_per_epoch": "ignored-by-tool",
            "min_sample_len": "no-equivalent",
            "dataset_prepared_path": NFT,
        },
        "warnings": ["evaluation is configured but there is no held-out data", "launch.num_processes is 8, not the 1"],
    },
    "alst-deepspeed-cp8.yaml": {
        # the 8-bit optimizer takes the run to FSDP (recipec's DeepSpeed trains AdamW), where the split is cp_size
        "approx": {"context_parallel_size", "attn_implementation", "deepspeed", "optimizer", "bf16", "sample_packing", "activation_offloading", "plugins"},
        "dropped": {
            "evals_per_epoch": "ignored-by-tool",
            "min_sample_len": "no-equivalent",
            "dataset_prepared_path": NFT,
        },
        "warnings": ["evaluation is configured but there is no held-out data", "launch.num_processes is 8, not the 1"],
    },
    "hsdp-tp-llama.yaml": {
        "approx": {"warmup_ratio"},
        "dropped": {"dataset_prepared_path": NFT, "plugins": "missing-feature"},
        "warnings": ["launch.num_processes is 16, not the 1"],
    },
    "fsdp-tp-cp-qwen3.yaml": {
        "approx": {"warmup_ratio"},
        # alpaca examples: recipec's ring attention needs text records
        "dropped": {"dataset_prepared_path": NFT, "plugins": "missing-feature", "context_parallel_size": "missing-feature"},
        "warnings": ["`context_parallel_size: 2` is not imported", "launch.num_processes is 4, not the 1"],
    },
}


def test_every_fixture_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_imports_and_validates(imported, name):
    got = imported("axolotl", name)
    assert got.approx == EXPECTED[name]["approx"]
    assert got.dropped == EXPECTED[name]["dropped"]
    assert got.result.draft.pending() == []
    warnings = [w for w, _ in got.result.draft.warnings]
    expected = EXPECTED[name].get("warnings", [])
    assert len(warnings) == len(expected) and all(e in w for e, w in zip(expected, warnings)), warnings
    counts = got.result.draft.counts()
    assert counts["approx"] == len(EXPECTED[name]["approx"])
    assert f"Keys mapped exactly: {counts['exact']};" in got.result.text


def test_lora_1b_values(imported):
    r = imported("axolotl", "lora-1b.yaml").recipe
    assert r["model"] == {
        "gradient_checkpointing": True,
        "path": "NousResearch/Llama-3.2-1B",
        "dtype": "bfloat16",
        "attention": "flash_attention_2",
    }
    assert r["peft"] == {
        "method": "lora",
        "r": 16,
        "alpha": 32,
        "dropout": 0.05,
        "target_modules": ["gate_proj", "down_proj", "up_proj", "q_proj", "v_proj", "k_proj", "o_proj"],
    }
    (src,) = r["data"].pop("sources")
    assert r["data"] == {"seq_len": 2048, "packing": True, "overflow": "drop", "eval_fraction": 0.1}
    # type: alpaca: Stanford Alpaca's prompt text then the output, as axolotl's AlpacaPrompter writes it; no chat template
    assert src == {"hub": {"repo": "teknium/GPT4-LLM-Cleaned"}, "records": "alpaca", "prompt_style": "alpaca"}
    assert "chat_template" not in r.get("tokenizer", {})
    assert r["optim"] == {"name": "adamw_8bit", "lr": 0.0002, "weight_decay": 0.0, "grad_clip": 1.0, "betas": [0.9, 0.999], "eps": 1e-08}
    assert r["schedule"] == {"decay": "cosine", "min_lr_ratio": 0.0, "warmup": 0.1}
    assert r["train"] == {
        "epochs": 1,
        "micro_batch_size": 2,
        "batch_size": 4,
        "save_every": "1 epoch",  # saves_per_epoch 1 of num_epochs 1: save_strategy "epoch"
        "keep_last": 4,
        "eval_every": "1/4 epoch",  # evals_per_epoch 4: eval_steps 1 / (4 * 1) of the run
        "eval_at_start": True,  # axolotl turns on eval_on_start with evals_per_epoch
        "log_every": 1,
    }
    assert r["launch"] == {"mixed_precision": "bf16", "tf32": False}
    assert r["recipe"]["seed"] == 42


def test_num_processes_makes_the_global_batch(imported):
    r = imported("axolotl", "qlora-1b.yaml", num_processes=4).recipe
    assert r["train"]["batch_size"] == 2 * 4 * 4
    assert r["launch"]["num_processes"] == 4
    assert r["peft"]["quantize"] == "4bit"
    assert r["peft"]["r"] == 32 and r["peft"]["alpha"] == 16


def test_mistral_lora_8bit_all_linear(imported):
    r = imported("axolotl", "mistral-lora.yaml").recipe
    assert r["peft"]["quantize"] == "8bit"
    assert r["peft"]["target_modules"] == "all-linear"  # lora_target_linear wins over the list
    assert r["data"]["packing"] is True and r["data"]["seq_len"] == 8192


def test_fft_zero3_chat_template(imported):
    r = imported("axolotl", "fft-8b-zero3.yaml").recipe
    assert "peft" not in r
    (src,) = r["data"]["sources"]
    assert src["hub"] == {"repo": "mlabonne/FineTome-100k", "split": "train"}
    assert src["records"] == "messages"
    assert src["fields"] == {"messages": "conversations", "role": "from", "content": "value"}
    assert src["roles"] == {"human": "user", "gpt": "assistant"}
    assert src["train_on"] == "assistant"
    assert r["tokenizer"]["chat_template"].startswith("{% if not add_generation_prompt is defined %}")
    assert "<|start_header_id|>" in r["tokenizer"]["chat_template"]
    assert r["launch"]["strategy"] == "fsdp"
    assert r["launch"]["fsdp"] == {"sharding_strategy": "full_shard"}
    assert r["optim"]["name"] == "paged_adamw_8bit"


def test_gemma3_chat_template(imported):
    r = imported("axolotl", "gemma3-1b-qlora.yaml").recipe
    assert r["tokenizer"]["chat_template"] == axolotl.TEMPLATES["gemma3"]
    assert r["data"]["sources"][0]["train_on"] == "assistant"


def test_dpo_chatml_intel(imported):
    r = imported("axolotl", "dpo-chatml-intel.yaml").recipe
    assert r["preference"] == {"objective": "dpo", "beta": 0.1}
    (src,) = r["data"]["sources"]
    assert src == {"hub": {"repo": "Intel/orca_dpo_pairs", "split": "train"}, "records": "preference", "fields": {"prompt": "question"}, "as_chat": True}
    assert "<|im_start|>" in r["tokenizer"]["chat_template"]
    assert r["peft"]["modules_to_save"] == ["embed_tokens", "lm_head"]
    assert r["output"]["trackers"] == ["wandb"]


def test_dpo_under_deepspeed_stays_deepspeed(tmp_path, imported):
    """DPO with axolotl's ZeRO-3 config stays DeepSpeed with its live reference: with an adapter the base model
    (adapter disabled); fully fine-tuned, a frozen copy partitioned as the policy is."""
    text = (CONFIGS / "dpo-chatml-intel.yaml").read_text(encoding="utf-8").replace("adamw_bnb_8bit", "adamw_torch")
    text += "deepspeed: deepspeed_configs/zero3_bf16.json\n"
    path = tmp_path / "dpo-z3.yaml"
    path.write_text(text.replace("load_in_4bit: true", "load_in_4bit: false").replace("adapter: qlora", "adapter: lora"), encoding="utf-8")
    r = imported("axolotl", path).recipe
    assert r["launch"]["strategy"] == "deepspeed" and r["launch"]["deepspeed"]["zero_stage"] == 3
    assert r["peft"]["method"] == "lora" and r["preference"] == {"objective": "dpo", "beta": 0.1}
    full = "\n".join(line for line in text.splitlines() if not line.startswith(("adapter:", "lora_", " - ", "load_in_4bit")))
    path.write_text(full + "\n", encoding="utf-8")
    r = imported("axolotl", path).recipe
    assert r["launch"]["strategy"] == "deepspeed" and "peft" not in r
    assert r["preference"] == {"objective": "dpo", "beta": 0.1}


def test_overrides_of_model_config(tmp_path, imported):
    """overrides_of_model_config -> [model.config]; RoPE's legacy keys into rope_parameters (transformers 5
    reads them only from there once a config is built); a key that sizes the weights is not imported."""
    text = (CONFIGS / "lora-1b.yaml").read_text(encoding="utf-8") + (
        "overrides_of_model_config:\n  rope_theta: 500000\n  rope_scaling:\n    type: linear\n    factor: 2.0\n"
        "  attention_dropout: 0.1\n  hidden_size: 12\n"
    )
    path = tmp_path / "overrides.yaml"
    path.write_text(text, encoding="utf-8")
    got = imported("axolotl", path)
    assert got.recipe["model"]["config"] == {
        "attention_dropout": 0.1,
        "rope_parameters": {"rope_theta": 500000.0, "rope_type": "linear", "factor": 2.0},
    }
    ledger = got.result.draft.ledger
    assert ledger["overrides_of_model_config.attention_dropout"].how == "exact"
    assert ledger["overrides_of_model_config.rope_theta"].how == "approx"
    assert ledger["overrides_of_model_config.hidden_size"].how == "dropped"


def test_pretraining_dataset_streams(imported):
    r = imported("axolotl", "pretrain-qwen2.yaml").recipe
    (src,) = r["data"]["sources"]
    assert src["hub"] == {"repo": "allenai/c4", "subset": "en", "split": "train", "streaming": True}
    assert src["max_tokens"] == 305 * 4 * 2048
    assert r["train"]["max_steps"] == 305 and "epochs" not in r["train"]
    assert r["schedule"]["warmup"] == 10
    assert r["data"]["packing"] is True and r["data"]["cross_document_attention"] is False  # sample_packing: attention within each
    assert r["launch"]["strategy"] == "fsdp"
    assert r["launch"]["fsdp"] == {
        "version": 2,
        "cpu_offload": False,
        "state_dict_type": "full",
        "transformer_layer_cls": ["Qwen2DecoderLayer"],
        "auto_wrap_policy": "transformer_layer",
    }
    assert r["data"]["eval_fraction"] == 0.0 and r["train"]["eval_every"] == 0
    assert r["optim"]["implementation"] == "fused"


def test_cosine_min_lr_and_completion(imported):
    r = imported("axolotl", "cpt-cosine-min-lr.yaml").recipe
    assert r["schedule"] == {"decay": "cosine", "min_lr_ratio": 0.1, "warmup": 100}
    (src,) = r["data"]["sources"]
    assert src == {"hub": {"repo": "wikimedia/wikipedia", "subset": "20231101.simple"}, "records": "text"}
    assert r["optim"]["betas"] == [0.9, 0.95]
    assert r["train"]["eval_every"] == 500 and r["train"]["save_every"] == 1000 and r["train"]["keep_last"] == 2


def test_exact_deduplication(imported):
    r = imported("axolotl", "lora-1b-deduplicate-sft.yaml").recipe
    assert r["data"]["filters"] == [{"type": "exact_dedup", "normalize": False}]
    assert len(r["data"]["sources"]) == 2
    assert r["peft"]["quantize"] == "8bit"


def test_cosine_constant_phases(imported):
    r = imported("axolotl", "rewarm-cosine-constant.yaml").recipe
    assert r["schedule"]["phases"] == [
        {"name": "warmup", "shape": "linear", "start": 0.0, "end": 1.0, "steps": 50},
        {"name": "decay", "shape": "cosine", "end": 0.1, "steps": 1550},
        {"name": "constant", "shape": "constant", "start": 0.1, "steps": 400},
    ]


# -- the LR at every step ---------------------------------------------------------------


def _recipe_lrs(path: Path, steps: int) -> list[float]:
    """The imported recipe's LR multipliers over a run of `steps` optimizer steps."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^(epochs|max_steps) = .*$", f"max_steps = {steps}", text, count=1, flags=re.M)
    out = path.with_name(f"{path.stem}-{steps}.toml")
    out.write_text(text, encoding="utf-8")
    plan, _ = plan_recipe(out, ())
    return runtime.values(plan["schedule_phases"], steps)


def _axolotl_warmup(cfg: dict, total: int) -> int:
    # core/builders/base.py _configure_warmup_and_logging
    if cfg.get("warmup_steps") is not None:
        w = cfg["warmup_steps"]
    elif cfg.get("warmup_ratio") is not None:
        w = max(int(cfg["warmup_ratio"] * total), 0)
    else:
        w = min(int(0.03 * total), 100)
    return 2 if w == 1 else w


def _transformers_lrs(name: str, warmup: int, total: int, kwargs: dict) -> list[float]:
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = transformers.get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total, scheduler_specific_kwargs=kwargs)
    return scheduler_lrs(opt, sched, total)


TRANSFORMERS_SCHEDULES = ["lora-1b.yaml", "lora-1b-deduplicate-sft.yaml", "qlora-1b.yaml", "mistral-lora.yaml", "fft-8b-zero3.yaml", "dpo-chatml-intel.yaml", "pretrain-qwen2.yaml", "gemma2-linear-warmup.yaml"]


@pytest.mark.parametrize("total", [200, 1000])
@pytest.mark.parametrize("name", TRANSFORMERS_SCHEDULES)
def test_schedule_matches_transformers(imported, name, total):
    import yaml

    cfg = yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))
    got = imported("axolotl", name)
    ours = _recipe_lrs(got.path, total)
    expected = _transformers_lrs(cfg.get("lr_scheduler") or "cosine", _axolotl_warmup(cfg, total), total, cfg.get("lr_scheduler_kwargs") or {})
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-15)


def _cosine_min_lr(step: int, warmup: int, total: int, m: float) -> float:
    # axolotl/utils/schedulers.py _get_cosine_schedule_with_min_lr_lambda
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return (1 - m) * 0.5 * (1.0 + math.cos(math.pi * progress)) + m


def _cosine_constant(step: int, warmup: int, total: int, m: float, c: float) -> float:
    # axolotl/utils/schedulers.py _get_cosine_schedule_with_warmup_decay_constant_lr_lambda
    if step < warmup:
        return step / max(1, warmup)
    constant = int(total * c)
    step = min(step, constant)
    progress = (step - warmup) / max(1, constant - warmup)
    return max(0, (1 - m) * 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))) + m


@pytest.mark.parametrize("total", [200, 1000])
def test_cosine_min_lr_ratio_matches_axolotl(imported, total):
    got = imported("axolotl", "cpt-cosine-min-lr.yaml")
    ours = _recipe_lrs(got.path, total)
    assert ours == pytest.approx([_cosine_min_lr(s, 100, total, 0.1) for s in range(total)], rel=1e-9, abs=1e-15)


def test_cosine_constant_lr_ratio_matches_axolotl(imported):
    got = imported("axolotl", "rewarm-cosine-constant.yaml")
    plan, _ = plan_recipe(got.path, ())
    ours = runtime.values(plan["schedule_phases"], 2000)
    assert ours == pytest.approx([_cosine_constant(s, 50, 2000, 0.1, 0.8) for s in range(2000)], rel=1e-9, abs=1e-15)


# -- errors, detection, warnings --------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


BASE = """base_model: NousResearch/Llama-3.2-1B
datasets:
  - path: teknium/GPT4-LLM-Cleaned
    type: alpaca
sequence_len: 1024
micro_batch_size: 2
num_epochs: 1
learning_rate: 0.0002
"""


@pytest.mark.parametrize(
    ("extra", "at_start"),
    [
        ("val_set_size: 0.05\neval_steps: 20\n", True),
        ("val_set_size: 0.05\nevals_per_epoch: 4\n", True),
        ("val_set_size: 0.05\neval_strategy: epoch\n", True),
        ("val_set_size: 0.05\neval_strategy: \"no\"\n", True),  # axolotl passes eval_on_start with it
        ("val_set_size: 0.05\n", False),  # no eval_steps nor eval_strategy: eval_on_start stays off
        ("eval_steps: 20\n", None),  # no held-out data: axolotl never evaluates
    ],
)
def test_eval_at_start_follows_axolotl_eval_on_start(tmp_path, extra, at_start):
    text = import_config(_write(tmp_path, BASE + extra), "axolotl").text
    train = tomllib.loads(text)["train"]
    assert train.get("eval_at_start") is at_start
    if at_start is False:
        assert re.search(r"eval_at_start = false +# default of axolotl 0.18.0 for `eval_steps`", text)


@pytest.mark.parametrize(
    ("extra", "save_every", "eval_every", "approx"),
    [
        ("val_set_size: 0.05\nevals_per_epoch: 4\nsaves_per_epoch: 2\n", "1/2 epoch", "1/4 epoch", set()),
        ("val_set_size: 0.05\neval_strategy: epoch\n", "1 epoch", "1 epoch", set()),  # save_strategy "epoch": the default
        ("val_set_size: 0.05\nsave_steps: 0.1\neval_steps: 0.25\n", "1/10 epoch", "1/4 epoch", set()),
        ("save_strategy: \"no\"\n", 0, 0, set()),
        # a share of 3 epochs: save_steps 0.1 is 3/10 of an epoch
        ("save_steps: 0.1\n", "3/10 epoch", 0, set()),
        # 1.5 epochs: transformers' max_steps rounds up first
        ("saves_per_epoch: 2\n", "1/2 epoch", 0, {"saves_per_epoch"}),
    ],
)
def test_shares_of_the_run_become_cadences_in_epochs(tmp_path, extra, save_every, eval_every, approx):
    base = BASE
    if "save_steps: 0.1\n" == extra:
        base = base.replace("num_epochs: 1\n", "num_epochs: 3\n")
    if "saves_per_epoch: 2\n" == extra:
        base = base.replace("num_epochs: 1\n", "num_epochs: 1.5\n")
    result = import_config(_write(tmp_path, base + extra), "axolotl")
    train = tomllib.loads(result.text)["train"]
    assert (train["save_every"], train["eval_every"]) == (save_every, eval_every)
    got = {k for k, e in result.draft.ledger.items() if e.how == "approx"} & {"saves_per_epoch", "evals_per_epoch", "save_steps", "eval_steps", "save_strategy", "eval_strategy"}
    assert got == approx


@pytest.mark.parametrize(
    ("extra", "patience", "reason"),
    [
        ("val_set_size: 0.05\neval_steps: 20\nearly_stopping_patience: 3\n", 3, None),
        ("val_set_size: 0.05\neval_steps: 20\nearly_stopping_patience: 3\nmetric_for_best_model: loss\n", 3, None),
        ("val_set_size: 0.05\neval_steps: 20\nearly_stopping_patience: 3\nmetric_for_best_model: eval_accuracy\ngreater_is_better: true\n", None, "no-equivalent"),
        ("eval_steps: 20\nearly_stopping_patience: 3\n", None, "ignored-by-tool"),  # no held-out data
        ("val_set_size: 0.05\neval_strategy: \"no\"\nearly_stopping_patience: 3\n", None, "ignored-by-tool"),
    ],
    ids=["eval-loss", "metric-loss", "other-metric", "no-held-out", "no-evaluation"],
)
def test_early_stopping_patience_is_the_recipes_on_the_eval_loss(tmp_path, extra, patience, reason):
    """axolotl's EarlyStoppingCallback on the eval loss is train.early_stopping_patience; on another metric, or with
    nothing evaluated while training, it is not imported, and the recipe validates either way."""
    result = import_config(_write(tmp_path, BASE + extra), "axolotl")
    assert tomllib.loads(result.text)["train"].get("early_stopping_patience") == patience
    entry = result.draft.ledger["early_stopping_patience"]
    assert (entry.how, entry.reason if reason else None) == (("dropped", reason) if reason else ("exact", None))
    path = tmp_path / "imported.toml"
    path.write_text(result.text)
    plan_recipe(path, ())


@pytest.mark.parametrize(
    ("extra", "save_best", "how"),
    [
        ("val_set_size: 0.05\neval_steps: 20\nload_best_model_at_end: true\n", True, "approx"),
        ("val_set_size: 0.05\neval_steps: 20\nload_best_model_at_end: false\n", None, "exact"),
        ("val_set_size: 0.05\neval_steps: 20\nload_best_model_at_end: true\nmetric_for_best_model: eval_accuracy\n", None, "dropped"),
        ("eval_steps: 20\nload_best_model_at_end: true\n", None, "dropped"),  # no held-out data
    ],
    ids=["eval-loss", "off", "other-metric", "no-held-out"],
)
def test_load_best_model_at_end_keeps_the_best_model_beside_the_final_one(tmp_path, extra, save_best, how):
    """The Trainer's load_best_model_at_end on the eval loss is output.save_best, approximately: recipec keeps the best
    model in model_best/ and the final one in model/."""
    result = import_config(_write(tmp_path, BASE + extra), "axolotl")
    assert tomllib.loads(result.text).get("output", {}).get("save_best") is save_best
    assert result.draft.ledger["load_best_model_at_end"].how == how
    path = tmp_path / "imported.toml"
    path.write_text(result.text)
    plan_recipe(path, ())


def test_unknown_key_names_file_and_line(tmp_path):
    path = _write(tmp_path, BASE + "lora_alpah: 16\n")
    with pytest.raises(RecipeError) as info:
        import_config(path, "axolotl")
    (diag,) = info.value.diagnostics
    assert "unknown key `lora_alpah`" in diag.message
    assert diag.location.file == path.as_posix() and diag.location.line == 9
    assert "lora_alpha" in (diag.help or "")


def test_unknown_dataset_key(tmp_path):
    path = _write(tmp_path, BASE.replace("    type: alpaca\n", "    type: alpaca\n    feild: text\n"))
    with pytest.raises(RecipeError) as info:
        import_config(path, "axolotl")
    (diag,) = info.value.diagnostics
    assert "unknown key `datasets[0].feild`" in diag.message and diag.location.line == 5


def test_an_axolotl_config_is_told_apart(tmp_path):
    with pytest.raises(RecipeError) as info:
        import_config(CONFIGS / "lora-1b.yaml", "transformers")
    assert "looks like a axolotl config" in info.value.diagnostics[0].message


def test_a_transformers_config_is_not_axolotl(tmp_path):
    path = _write(tmp_path, '{"per_device_train_batch_size": 8, "lr_scheduler_type": "cosine", "adam_epsilon": 1e-8}', "args.json")
    with pytest.raises(RecipeError) as info:
        import_config(path, "axolotl")
    assert "looks like a transformers config" in info.value.diagnostics[0].message


WARNINGS = [
    ("lora_r: 16\n", "set without an `adapter`", {"lora_r": "ignored-by-tool"}),
    ("lr_div_factor: 10\n", "`lr_div_factor` is ignored", {"lr_div_factor": "ignored-by-tool"}),
    ("lr_scheduler: constant\nwarmup_steps: 20\n", "`warmup_steps: 20` is ignored", {"warmup_steps": "ignored-by-tool"}),
    ("cosine_min_lr_ratio: 1.0\n", "a floor at the peak", {}),
    ("lr_scheduler: linear\ncosine_min_lr_ratio: 0.1\n", "`cosine_min_lr_ratio` is ignored", {"cosine_min_lr_ratio": "ignored-by-tool"}),
    ("lr_quadratic_warmup: true\ncosine_min_lr_ratio: 0.1\n", "lr_quadratic_warmup's cosine decays to 0", {"cosine_min_lr_ratio": "ignored-by-tool"}),
    ("cosine_constant_lr_ratio: 0.8\n", "without `cosine_min_lr_ratio`", {"cosine_constant_lr_ratio": "ignored-by-tool"}),
    ("rl_beta: 0.2\n", "`rl` is not", {"rl_beta": "ignored-by-tool"}),
    ("eval_steps: 50\n", "no held-out data", {"eval_steps": "ignored-by-tool"}),
    ("adapter: lora\nlora_alpha: 16\nlora_target_linear: true\n", "`lora_r` is not set", {}),
    ("adapter: lora\nlora_r: 8\nlora_alpha: 16\n", "no `lora_target_modules`", {}),
    ("warmup_steps: 10\nwarmup_ratio: 0.1\n", "`warmup_ratio: 0.1` is ignored", {"warmup_ratio": "ignored-by-tool"}),
    ("max_steps: 100\n", "`num_epochs: 1` is ignored", {"num_epochs": "ignored-by-tool"}),
]


@pytest.mark.parametrize(("extra", "message", "dropped"), WARNINGS)
def test_warnings(tmp_path, extra, message, dropped):
    path = _write(tmp_path, BASE + extra)
    result = import_config(path, "axolotl")
    assert any(message in w for w, _ in result.draft.warnings), result.draft.warnings
    assert "# Warnings (contradictions and old keys in the source config):" in result.text
    got = {k: e.reason for k, e in result.draft.ledger.items() if e.how == "dropped"}
    assert dropped.items() <= got.items()


def test_dpo_sample_packing_warns(tmp_path):
    text = (CONFIGS / "dpo-chatml-intel.yaml").read_text(encoding="utf-8").replace("sample_packing: false", "sample_packing: true")
    result = import_config(_write(tmp_path, text), "axolotl")
    assert any("preference trainers do not pack" in w for w, _ in result.draft.warnings)


def test_warmup_from_ratio_is_whole_steps_with_max_steps(tmp_path):
    text = BASE + "max_steps: 333\nwarmup_ratio: 0.1\n"
    result = import_config(_write(tmp_path, text.replace("num_epochs: 1\n", "")), "axolotl")
    recipe = tomllib.loads(result.text)
    assert recipe["schedule"]["warmup"] == 33  # int(0.1 * 333), as axolotl rounds
    assert "warmup_ratio" not in {k for k, e in result.draft.ledger.items() if e.how == "approx"}


def test_default_warmup_with_max_steps(tmp_path):
    result = import_config(_write(tmp_path, (BASE + "max_steps: 5000\n").replace("num_epochs: 1\n", "")), "axolotl")
    assert tomllib.loads(result.text)["schedule"]["warmup"] == 100  # min(int(0.03 * 5000), 100)


def test_local_data_test_datasets_and_train_on_inputs(imported, tmp_path):
    config = _write(
        tmp_path,
        BASE.replace("  - path: teknium/GPT4-LLM-Cleaned\n", "  - path: data/train.jsonl\n    ds_type: json\n")
        + "train_on_inputs: true\ntest_datasets:\n  - path: data/eval.jsonl\n    ds_type: json\n    type: alpaca\neval_steps: 20\n",
    )
    got = imported("axolotl", config, files=["data/train.jsonl", "data/eval.jsonl"])
    train, held_out = got.recipe["data"]["sources"]
    assert train == {"path": "./data/train.jsonl", "format": "jsonl", "records": "alpaca", "prompt_style": "alpaca", "train_on": "all"}
    assert held_out["split"] == "eval" and held_out["name"] == "test0" and held_out["path"] == "./data/eval.jsonl"
    assert got.recipe["train"]["eval_every"] == 20
    assert got.recipe["data"]["eval_fraction"] == 0.0
    assert "train_on_inputs" in got.exact  # the prompt text and the output, every token, as axolotl


# -- the device mesh ---------------------------------------------------------------------


def test_alst_fsdp2_context_parallel(imported):
    r = imported("axolotl", "alst-fsdp2-cp8.yaml").recipe
    assert r["launch"]["parallelism"] == {"cp_size": 8}
    assert r["launch"]["num_processes"] == 8  # raised from 1: the sequence split needs 8
    assert "cross_document_attention" not in r["data"]  # ring attention attends over whole sequences
    assert r["launch"]["strategy"] == "fsdp" and r["launch"]["fsdp"]["version"] == 2
    assert r["model"]["attention"] == "sdpa"
    assert r["train"]["batch_size"] == 1  # 8 processes / cp 8 = one data-parallel rank, as axolotl counts
    r = imported("axolotl", "alst-fsdp2-cp8.yaml", num_processes=32).recipe
    assert r["launch"]["num_processes"] == 32 and r["launch"]["parallelism"] == {"cp_size": 8}
    assert r["train"]["batch_size"] == 4


def test_alst_deepspeed_runs_the_split_under_fsdp(imported):
    got = imported("axolotl", "alst-deepspeed-cp8.yaml")
    r = got.recipe
    assert r["launch"]["strategy"] == "fsdp"  # adamw_torch_8bit: recipec's DeepSpeed trains AdamW
    assert r["launch"]["parallelism"] == {"cp_size": 8} and r["launch"]["num_processes"] == 8


def test_alst_deepspeed_sequence_parallel(tmp_path, imported):
    text = (CONFIGS / "alst-deepspeed-cp8.yaml").read_text(encoding="utf-8").replace("adamw_torch_8bit", "adamw_torch")
    got = imported("axolotl", _write(tmp_path, text), num_processes=16)
    r = got.recipe
    assert r["launch"]["strategy"] == "deepspeed" and r["launch"]["deepspeed"]["zero_stage"] == 3
    assert r["launch"]["parallelism"] == {"sp_size": 8}
    assert "context_parallel_size" in got.approx  # a ring becomes Ulysses' all-to-all
    assert r["model"]["attention"] == "flash_attention_2"  # Ulysses wraps flash attention as it is
    assert r["train"]["batch_size"] == 2 and r["launch"]["num_processes"] == 16


@pytest.mark.parametrize(
    ("attention", "packing", "kept"),
    [
        ("flash_attention_2", "true", True),  # packed examples, kept apart by flash attention's position ids
        ("sdpa", "false", True),  # each example padded after its tokens
        ("sdpa", "true", False),  # sdpa under Ulysses would attend across a packed row's examples
    ],
)
def test_sequence_parallel_fine_tuning_on_examples(tmp_path, attention, packing, kept):
    text = (CONFIGS / "lora-1b.yaml").read_text(encoding="utf-8").replace("optimizer: adamw_8bit", "optimizer: adamw_torch")
    text = text.replace("attn_implementation: flash_attention_2", f"attn_implementation: {attention}")
    text = text.replace("sample_packing: true", f"sample_packing: {packing}")
    text += "deepspeed: deepspeed_configs/zero3_bf16.json\ncontext_parallel_size: 2\n"
    result = import_config(_write(tmp_path, text), "axolotl", Options(name="sp", num_processes=4))
    launch = tomllib.loads(result.text)["launch"]
    if kept:
        assert launch["strategy"] == "deepspeed" and launch["parallelism"] == {"sp_size": 2}
    else:
        assert "parallelism" not in launch
        assert "keeps packed examples apart with flash attention only" in result.draft.ledger["context_parallel_size"].why


def test_sequence_parallel_with_chunked_cross_entropy_keeps_both(tmp_path):
    text = (CONFIGS / "alst-deepspeed-cp8.yaml").read_text(encoding="utf-8").replace("adamw_torch_8bit", "adamw_torch")
    result = import_config(_write(tmp_path, text + "chunked_cross_entropy: true\n"), "axolotl")
    recipe = tomllib.loads(result.text)
    assert recipe["launch"]["parallelism"] == {"sp_size": 8} and recipe["loss"]["cross_entropy"] == "chunked"


def test_hsdp_tensor_parallel(imported):
    got = imported("axolotl", "hsdp-tp-llama.yaml")
    r = got.recipe
    assert r["launch"]["parallelism"] == {"dp_replicate_size": 2, "tp_size": 2}
    assert r["launch"]["num_processes"] == 16  # replicate 2 x shard 4 x tp 2
    assert r["train"]["batch_size"] == 8  # 16 processes / tp 2
    assert "dp_shard_size" not in got.approx  # 16 / (2 x 2) = 4, the file's
    got = imported("axolotl", "hsdp-tp-llama.yaml", num_processes=32)
    assert got.recipe["launch"]["num_processes"] == 32 and got.recipe["train"]["batch_size"] == 16
    assert "dp_shard_size" in got.approx  # recipec derives 8
    assert any("`dp_shard_size: 4` differs" in w for w, _ in got.result.draft.warnings)


def test_tensor_parallel_with_context_parallel_on_examples(imported):
    got = imported("axolotl", "fsdp-tp-cp-qwen3.yaml")
    r = got.recipe
    assert r["launch"]["parallelism"] == {"tp_size": 2}
    assert r["launch"]["num_processes"] == 4 and r["train"]["batch_size"] == 2
    assert r["model"]["attention"] == "flash_attention_2"  # no context parallelism: the attention stays


@pytest.mark.parametrize(
    ("extra", "state"),
    [
        ("heads_k_stride: 1\nring_attn_func: varlen_llama3\n", {"heads_k_stride": "exact", "ring_attn_func": "exact"}),
        ("heads_k_stride: 4\nring_attn_func: batch_zigzag\n", {"heads_k_stride": "no-equivalent", "ring_attn_func": "no-equivalent"}),
    ],
)
def test_ring_attention_settings(tmp_path, extra, state):
    text = (CONFIGS / "alst-fsdp2-cp8.yaml").read_text(encoding="utf-8") + extra
    draft = import_config(_write(tmp_path, text), "axolotl").draft
    got = {k: draft.ledger[k].reason or draft.ledger[k].how for k in state}
    assert got == state


def test_ring_attention_settings_without_the_split(tmp_path):
    draft = import_config(_write(tmp_path, BASE + "heads_k_stride: 2\n"), "axolotl").draft
    assert draft.ledger["heads_k_stride"].reason == "ignored-by-tool"


def test_tensor_parallel_under_deepspeed_is_not_imported(tmp_path):
    text = (CONFIGS / "alst-deepspeed-cp8.yaml").read_text(encoding="utf-8").replace("adamw_torch_8bit", "adamw_torch")
    text = text.replace("context_parallel_size: 8", "tensor_parallel_size: 2")
    result = import_config(_write(tmp_path, text), "axolotl")
    assert result.draft.ledger["tensor_parallel_size"].reason == "missing-feature"
    assert "parallelism" not in tomllib.loads(result.text)["launch"]


def test_sequence_parallel_preference_pairs(tmp_path):
    """DPO under DeepSpeed with a sequence split: recipec's Ulysses takes preference pairs (each side a row of its
    own, padded to seq_len), so the split is kept as sp_size."""
    text = (CONFIGS / "dpo-chatml-intel.yaml").read_text(encoding="utf-8")
    text = text.replace("load_in_4bit: true", "load_in_4bit: false").replace("adapter: qlora", "adapter: lora")
    text = text.replace("optimizer: adamw_bnb_8bit", "optimizer: adamw_torch")
    text += "deepspeed: deepspeed_configs/zero3_bf16.json\ncontext_parallel_size: 2\n"
    result = import_config(_write(tmp_path, text), "axolotl", Options(name="sp", num_processes=4))
    recipe = tomllib.loads(result.text)
    assert recipe["preference"]["objective"] == "dpo"
    assert recipe["launch"]["strategy"] == "deepspeed" and recipe["launch"]["parallelism"] == {"sp_size": 2}


@pytest.mark.parametrize(
    ("extra", "multiple", "how"),
    [
        ("pad_to_sequence_len: true\n", 1024, "exact"),  # 64 * ceil(1024 / 64): sequence_len itself
        ("pad_to_sequence_len: true\nsample_packing: true\n", 1024, "exact"),  # packed rows padded to sequence_len too
        ("pad_to_sequence_len: true\nsequence_len: 1000\n", 1000, "approx"),  # axolotl: 1024, past sequence_len
        ("pad_to_multiple_of: 64\n", 64, "exact"),
        ("pad_to_multiple_of: 4096\n", 1024, "approx"),  # past sequence_len
        ("pad_to_sequence_len: false\n", None, "exact"),
        ("", None, None),
    ],
)
def test_padding_to_sequence_len_or_a_multiple(tmp_path, extra, multiple, how):
    """axolotl's pad_to_sequence_len pads every micro-batch to sequence_len: data.pad_to_multiple_of = sequence_len."""
    text = BASE.replace("sequence_len: 1024\n", "") if "sequence_len: 1000" in extra else BASE
    result = import_config(_write(tmp_path, text + extra), "axolotl")
    data = tomllib.loads(result.text)["data"]
    assert data.get("pad_to_multiple_of") == multiple
    key = next(iter(k for k in ("pad_to_sequence_len", "pad_to_multiple_of") if k in extra), None)
    if key is not None:
        assert result.draft.ledger[key].how == how
    assert result.draft.pending() == []


def test_padding_of_text_is_full_blocks_already(tmp_path):
    text = BASE.replace("    type: alpaca\n", "    type: completion\n") + "pad_to_sequence_len: true\npad_to_multiple_of: 64\n"
    result = import_config(_write(tmp_path, text), "axolotl")
    assert "pad_to_multiple_of" not in tomllib.loads(result.text)["data"]
    assert result.draft.ledger["pad_to_sequence_len"].how == result.draft.ledger["pad_to_multiple_of"].how == "exact"


def test_eval_batch_size_is_eval_micro_batch_size(tmp_path):
    draft = import_config(_write(tmp_path, BASE + "eval_batch_size: 3\n"), "axolotl")
    assert tomllib.loads(draft.text)["train"]["eval_micro_batch_size"] == 3
    assert draft.draft.ledger["eval_batch_size"].how == "exact"


def test_a_reward_model_trains_on_its_bradley_terry_pairs(imported, tmp_path):
    got = imported("axolotl", "gemma2-reward-model.yaml")
    r = got.recipe
    assert r["preference"] == {"objective": "reward"}
    (src,) = r["data"]["sources"]
    assert src == {"hub": {"repo": "argilla/distilabel-intel-orca-dpo-pairs"}, "records": "preference", "fields": {"prompt": "input"}, "as_chat": True}
    assert got.result.draft.ledger["datasets[0].type"].how == "exact"  # the record's system read too
    ledger = got.result.draft.ledger
    assert ledger["model_type"].how == "exact" and ledger["num_labels"].how == "exact" and ledger["reward_model"].how == "exact"
    text = (CONFIGS / "gemma2-reward-model.yaml").read_text(encoding="utf-8")
    path = tmp_path / "rm.yaml"
    path.write_text(text.replace("num_labels: 1", "num_labels: 1\ncenter_rewards_coefficient: 0.01"), encoding="utf-8")
    assert imported("axolotl", path).recipe["preference"] == {"objective": "reward", "center_rewards_coefficient": 0.01}
    path.write_text(text.replace("num_labels: 1", "num_labels: 2"), encoding="utf-8")
    assert imported("axolotl", path).result.draft.ledger["num_labels"].reason == "no-equivalent"
    # without reward_model a sequence classifier is not what recipec builds: approximate, and the pairs' type unread
    path.write_text(text.replace("reward_model: true", "reward_model: false").replace("type: bradley_terry.chat_template", "type: chat_template"), encoding="utf-8")
    plain = imported("axolotl", path).result.draft
    assert plain.ledger["reward_model"].how == "exact" and plain.ledger["model_type"].how == "approx"
    assert "AutoModelForCausalLM" in plain.ledger["model_type"].why and plain.ledger["num_labels"].reason == "ignored-by-tool"


CCE = "plugins:\n  - axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin\n"


@pytest.mark.parametrize(
    "extra, loss, how, why",
    [
        ("", "chunked", "approx", "never holds the logits"),  # the plugin turns cut_cross_entropy on by default
        ("cut_cross_entropy: false\n", None, "exact", ""),
        ("tensor_parallel_size: 2\n", None, "dropped", "tensor_parallel_size above 1"),
        ("plugins:\n  - axolotl.integrations.liger.LigerPlugin\n", None, "dropped", "LigerPlugin"),
    ],
)
def test_the_cut_cross_entropy_plugin_is_the_chunked_cross_entropy(tmp_path, extra, loss, how, why):
    text = (CONFIGS / "gemma2-reward-model.yaml").read_text(encoding="utf-8")
    text = re.sub(r"^(reward_model|rl|model_type|num_labels|center_rewards_coefficient):.*\n", "", text, flags=re.M)
    text = re.sub(r"type: bradley_terry\.chat_template", "type: chat_template", text)
    text += ("" if extra.startswith("plugins") else CCE) + extra
    result = import_config(_write(tmp_path, text), "axolotl", Options(name="cce", num_processes=2 if "parallel" in extra else 1))
    entry = result.draft.ledger["plugins"]
    assert entry.how == how and why in entry.why, entry
    assert tomllib.loads(result.text).get("loss", {}).get("cross_entropy") == loss


def test_the_long_context_configs_split_the_sequence_with_the_chunked_cross_entropy(imported):
    """axolotl's ALST examples: context parallelism 8 (ring attention under FSDP 2, where the 8-bit optimizer takes the
    DeepSpeed one too) and Cut Cross Entropy, both kept; tensor parallelism keeps its mesh and leaves the plugin out."""
    for name, dim in (("alst-deepspeed-cp8.yaml", "cp_size"), ("alst-fsdp2-cp8.yaml", "cp_size")):
        got = imported("axolotl", name)
        assert got.recipe["launch"]["parallelism"].get(dim) == 8 and got.recipe["loss"]["cross_entropy"] == "chunked", name
        assert got.result.draft.ledger["plugins"].how == "approx", name
    got = imported("axolotl", "hsdp-tp-llama.yaml")
    assert "loss" not in got.recipe and got.recipe["launch"]["parallelism"]["tp_size"] == 2
    assert got.result.draft.ledger["plugins"].how == "dropped"


@pytest.mark.parametrize(
    ("extra", "model", "how"),
    [
        ("tiled_mlp: true\n", {"tiled_mlp": True}, {"tiled_mlp": "exact"}),
        ("tiled_mlp: true\ntiled_mlp_num_shards: 8\n", {"tiled_mlp": True, "tiled_mlp_shards": 8}, {"tiled_mlp_num_shards": "exact"}),
        ("tiled_mlp: true\ntiled_mlp_use_original_mlp: false\n", {"tiled_mlp": True}, {"tiled_mlp_use_original_mlp": "approx"}),
        ("tiled_mlp: false\ntiled_mlp_num_shards: 8\n", {}, {"tiled_mlp": "exact", "tiled_mlp_num_shards": "dropped"}),
    ],
)
def test_tiled_mlp(tmp_path, extra, model, how):
    result = import_config(_write(tmp_path, BASE + extra), "axolotl")
    got = tomllib.loads(result.text)["model"]
    assert {k: v for k, v in got.items() if k.startswith("tiled")} == model
    assert {k: result.draft.ledger[k].how for k in how} == how


# -- DPO's loss types ----------------------------------------------------------------------

DPO_CONFIG = CONFIGS / "dpo-chatml-intel.yaml"


@pytest.mark.parametrize(
    ("extra", "preference", "dropped"),
    [
        ('dpo_loss_type: ["apo_zero"]\n', {"objective": "apo_zero"}, set()),
        ('dpo_loss_type: ["sigmoid", "sft"]\ndpo_loss_weights: [1.0, 0.3]\n', {"objective": "dpo", "sft_weight": 0.3}, set()),
        ('dpo_loss_type: ["robust"]\ndpo_label_smoothing: 0.1\n', {"objective": "robust", "label_smoothing": 0.1}, set()),
        ('dpo_loss_type: ["robust"]\n', {"objective": "dpo"}, set()),  # no flipped labels: DPO itself
        ('dpo_loss_type: ["ipo"]\ndpo_label_smoothing: 0.1\n', {"objective": "ipo"}, {"dpo_label_smoothing"}),
        ('dpo_loss_type: ["sigmoid", "hinge"]\n', {"objective": "dpo", "extra_losses": {"hinge": 1.0}}, set()),
        (  # MPO
            'dpo_loss_type: ["sigmoid", "bco_pair", "sft"]\ndpo_loss_weights: [0.8, 0.2, 1.0]\n',
            {"objective": "dpo", "objective_weight": 0.8, "extra_losses": {"bco_pair": 0.2}, "sft_weight": 1.0}, set(),
        ),
        ('dpo_loss_type: ["sigmoid", "robust"]\n', {"objective": "dpo"}, {"dpo_loss_type"}),  # robust takes options
        ('dpo_loss_type: ["aot", "ipo"]\n', {"objective": "dpo"}, {"dpo_loss_type"}),  # aot sorts: alone
        ('dpo_loss_type: ["ipo", "ipo"]\n', {"objective": "dpo"}, {"dpo_loss_type"}),  # twice
        ('dpo_loss_type: ["exo_pair"]\n', {"objective": "dpo"}, {"dpo_loss_type"}),  # TRL refuses EXO without smoothing
        ('dpo_loss_type: ["exo_pair"]\ndpo_label_smoothing: 0.001\n', {"objective": "exo_pair", "label_smoothing": 0.001}, set()),
        ('dpo_loss_type: ["aot"]\ndpo_label_smoothing: 0.1\n', {"objective": "aot", "label_smoothing": 0.1}, set()),
        ('dpo_loss_type: ["aot_unpaired"]\n', {"objective": "aot_unpaired"}, set()),
        ('dpo_loss_type: ["sigmoid_norm", "sft"]\ndpo_loss_weights: [1.0, 0.2]\n', {"objective": "dpo_norm", "sft_weight": 0.2}, set()),
        ('dpo_loss_type: ["discopop"]\n', {"objective": "discopop"}, set()),
        ('dpo_loss_type: ["discopop"]\ndpo_label_smoothing: 0.1\n', {"objective": "discopop"}, {"dpo_label_smoothing"}),
        ('dpo_use_weighting: true\n', {"objective": "dpo", "wpo": True}, set()),  # WPO (TRL's use_weighting)
        ('dpo_loss_type: ["ipo"]\ndpo_use_weighting: true\n', {"objective": "ipo", "wpo": True}, set()),
        ('dpo_use_weighting: false\n', {"objective": "dpo"}, set()),
        ('dpo_loss_type: ["aot"]\ndpo_use_weighting: true\n', {"objective": "aot"}, {"dpo_use_weighting"}),  # TRL refuses it
        ('dpo_loss_type: ["sigmoid"]\ndpo_loss_weights: [0.5]\n', {"objective": "dpo", "objective_weight": 0.5}, set()),
    ],
)
def test_dpo_loss_type_becomes_the_objective(tmp_path, extra, preference, dropped):
    """axolotl passes `dpo_loss_type` and `dpo_loss_weights` to TRL's DPOConfig: a loss recipec has, of weight 1, is the
    objective, and "sft" beside it is sft_weight; any other list is not imported (with a warning)."""
    result = import_config(_write(tmp_path, DPO_CONFIG.read_text(encoding="utf-8") + extra), "axolotl")
    got = tomllib.loads(result.text)["preference"]
    assert {k: got[k] for k in preference} == preference and set(got) - {"beta", "reference"} == set(preference)
    ledger = result.draft.ledger
    assert {k for k in ("dpo_loss_type", "dpo_loss_weights", "dpo_label_smoothing", "dpo_use_weighting") if k in ledger and ledger[k].how == "dropped"} == dropped
    if "dpo_loss_type" in dropped:
        assert any("cannot be imported" in message for message, _ in result.draft.warnings)


@pytest.mark.parametrize(("extra", "weight"), [("", 1.0), ("cpo_alpha: 0.25\n", 0.25), ("cpo_alpha: 0\n", None)])
def test_simpo_takes_trls_cpo_alpha(tmp_path, extra, weight):
    """axolotl's `rl: simpo` runs TRL's CPOTrainer, whose cpo_alpha (1.0 unless the config sets it) adds the chosen
    completions' NLL: sft_weight (CPO-SimPO); cpo_alpha 0 is SimPO alone."""
    text = DPO_CONFIG.read_text(encoding="utf-8").replace("rl: dpo\n", "rl: simpo\n") + extra
    got = tomllib.loads(import_config(_write(tmp_path, text), "axolotl").text)["preference"]
    assert got["objective"] == "simpo" and got.get("sft_weight") == weight


def _saved_lora(directory: Path, r: int) -> None:
    """An adapter directory as peft's save_pretrained leaves it (the weights' bytes are only hashed here)."""
    from peft import LoraConfig

    LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM").save_pretrained(directory)
    (directory / "adapter_model.safetensors").write_bytes(b"weights")


def test_lora_model_dir_goes_on_training_the_saved_adapter_under_its_own_config(tmp_path, monkeypatch):
    """axolotl loads lora_model_dir with PeftModel.from_pretrained(..., is_trainable=True) and ignores lora_r and the
    rest: the recipe names the adapter (peft.adapter) and takes its config's values."""
    monkeypatch.chdir(tmp_path)
    _saved_lora(tmp_path / "out" / "sft", 16)  # there: a path, not a hub id
    extra = "adapter: lora\nlora_model_dir: out/sft\nlora_r: 32\nlora_alpha: 16\nlora_dropout: 0.05\nlora_target_linear: true\n"
    result = import_config(_write(tmp_path, BASE + extra), "axolotl")
    peft = tomllib.loads(result.text)["peft"]
    assert peft == {"method": "lora", "adapter": "./out/sft"}
    ledger = result.draft.ledger
    assert ledger["lora_model_dir"].how == "exact"
    for key in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_linear"):
        assert (ledger[key].how, ledger[key].reason) == ("dropped", "ignored-by-tool"), key
    path = tmp_path / "imported.toml"
    path.write_text(result.text)
    plan, _ = plan_recipe(path, ())
    assert plan["peft_adapter"] == "./out/sft"
    assert (plan["peft_spec"]["r"], plan["peft_spec"]["alpha"]) == (16, 32)  # the adapter's, not lora_r's


def _axolotl_user_defined_prompt(typ: dict, record: dict) -> str:
    """axolotl's UserDefinedPrompter (prompt_strategies/user_defined.py over SystemDataPrompter), as written there:
    the system field (else system_prompt) through system_format when non-empty, then format with the input or
    no_input_format without it."""
    f = {k: typ.get(f"field_{k}") or k for k in ("instruction", "input", "output", "system")}
    system = record[f["system"]] if f["system"] in record and typ.get("field_system") else (typ.get("system_prompt") or "")
    system_format = typ.get("system_format") if typ.get("system_format") is not None else "{system}"
    head = system_format.format(system=system) if system and system_format else ""
    instruction, extra = record[f["instruction"]], record.get(f["input"]) or ""
    if extra:
        return head + typ["format"].format(instruction=instruction, input=extra)
    return head + (typ.get("no_input_format") or typ["format"]).format(instruction=instruction)


@pytest.mark.parametrize(
    "typ",
    [
        {"field_instruction": "q", "field_input": "ctx", "field_output": "a", "format": "[INST] {instruction}\n{input} [/INST]", "no_input_format": "[INST] {instruction} [/INST]"},
        {"system_prompt": "Be {brief}.", "system_format": "<<SYS>>{system}<</SYS>>\n", "format": "Q: {instruction} ({input})\nA: ", "no_input_format": "Q: {instruction}\nA: "},
        {"field_system": "sys", "system_format": "### System:\n{system}\n", "format": "### User:\n{instruction}\n{input}\n", "no_input_format": "### User:\n{instruction}\n"},
    ],
)
def test_a_user_defined_prompt_format_builds_axolotls_prompt(tmp_path, imported, typ):
    """`type: {format, ...}` -> prompt_format: for records with and without an input (and a system field), the
    prompt recipec builds is the one axolotl's prompter writes."""
    import yaml

    from recipec.runtime.formats import to_example

    cfg = yaml.safe_load((CONFIGS / "lora-1b.yaml").read_text(encoding="utf-8"))
    cfg["datasets"] = [{"path": "data/qa.jsonl", "ds_type": "json", "type": typ}]
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    got = imported("axolotl", path, files=["data/qa.jsonl"])
    (src,) = got.recipe["data"]["sources"]
    assert src["records"] == "prompt_completion" and "prompt_format" in src
    assert got.result.draft.ledger["datasets[0].type.format"].how == "exact"
    f = {k: typ.get(f"field_{k}") or k for k in ("instruction", "input", "output", "system")}
    records = [
        {f["instruction"]: "Add 2 and 3.", f["input"]: "in words", f["output"]: "five", f["system"]: "Be terse."},
        {f["instruction"]: "Add 2 and 3.", f["input"]: "", f["output"]: "five", f["system"]: ""},
        {f["instruction"]: "Add {x}.", f["input"]: "x=1", f["output"]: "two", f["system"]: "S"},
        {f["instruction"]: "Why?", f["input"]: None, f["output"]: "because", f["system"]: "Be terse."},
    ]
    for record in records:
        ex = to_example(record, "prompt_completion", src.get("fields"), prompt_format=src["prompt_format"])
        assert ex == {"prompt": _axolotl_user_defined_prompt(typ, record), "completion": record[f["output"]]}
