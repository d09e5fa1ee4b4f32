"""`recipec import --from litgpt`: LitGPT 0.5.13 configs (config_hub's style) as recipes.

The expectations below are what LitGPT's scripts do with each key (litgpt/finetune/lora.py,
full.py, litgpt/pretrain.py, litgpt/args.py, litgpt/data/*), written by hand: every key not
listed under `approx` or `dropped` must be mapped exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from recipec.diagnostics import RecipeError
from recipec.importers import import_config
from recipec.runtime import schedule as runtime

from conftest import scheduler_lrs

CONFIGS = Path(__file__).resolve().parent / "configs" / "litgpt"


# In every fine-tuning config: the prompt text, the data seed, the steps of an epoch (LitGPT
# keeps the last short micro-batch and runs a few steps past its cosine), log_interval, which
# LitGPT counts in micro-batches, and the final validation (the whole validation set).
FINETUNE_DROPPED = {"train.min_lr": "ignored-by-tool", "eval.max_new_tokens": "not-for-training"}

EXPECTED = {
    "llama-2-7b-lora.yaml": {
        "approx": {"train.epochs", "train.log_interval", "eval.final_validation"},
        "dropped": FINETUNE_DROPPED,
        "files": [],
    },
    "llama-3-8b-qlora.yaml": {
        "approx": {
            "data.init_args.val_split_fraction",
            "train.epochs",
            "train.log_interval",
            "eval.final_validation",
        },
        "dropped": {**FINETUNE_DROPPED, "data.init_args.download_dir": "not-for-training"},
        "files": [],
    },
    "llama-2-7b-full.yaml": {
        "approx": {"train.epochs", "train.log_interval", "eval.final_validation"},
        "dropped": FINETUNE_DROPPED,
        "files": [],
    },
    "phi-2-lora.yaml": {
        "approx": {
            "data.init_args.val_split_fraction",
            "train.epochs",
            "train.log_interval",
            "eval.final_validation",
        },
        "dropped": FINETUNE_DROPPED,
        "files": [],
    },
    "mistral-7b-lora-json.yaml": {
        # both lengths: LitGPT stops at whichever comes first
        "approx": {
            "data.init_args.val_split_fraction",
            "train.epochs",
            "train.max_steps",
            "eval.final_validation",
        },
        "dropped": {**FINETUNE_DROPPED, "log.project": "not-for-training"},
        "files": ["data/my_data.json"],
    },
    "tinyllama-pretrain.yaml": {
        # devices auto; litdata chunks of the hub sets; GPT-NeoX init; tokens rounded down; LR per micro-batch
        # final_validation false: recipec evaluates at the end all the same
        "approx": {"devices", "data", "model_name", "train.max_tokens", "train.lr_warmup_steps", "eval.final_validation"},
        "dropped": {},
        "files": [],
    },
    "pythia-160m-continued.yaml": {
        # TextFiles holds out its first file; the data seed; LR per micro-batch (4 of them)
        "approx": {"data.class_path", "train.lr_warmup_steps"},
        "dropped": {},
        "files": ["custom_pretraining_data/part-0.txt"],
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_imports_and_validates(imported, name):
    exp = EXPECTED[name]
    got = imported("litgpt", name, files=exp["files"])
    assert got.approx == exp["approx"]
    assert got.dropped == exp["dropped"]
    # every leaf key of the file is accounted for
    assert set(got.result.draft.ledger) == set(got.result.draft.values)


def test_lora_values(imported):
    r = imported("litgpt", "llama-2-7b-lora.yaml").recipe
    assert r["model"] == {"path": "meta-llama/Llama-2-7b-hf", "dtype": "bfloat16"}
    assert r["launch"]["mixed_precision"] == "no"
    assert r["peft"] == {"method": "lora", "r": 32, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
    assert r["data"]["sources"] == [{"hub": {"repo": "mhenrichsen/alpaca_2k_test"}, "records": "alpaca", "train_on": "all", "prompt_style": "alpaca"}]
    assert r["data"]["packing"] is False and r["data"]["seq_len"] == 512
    assert r["train"]["batch_size"] == 8 and r["train"]["micro_batch_size"] == 2 and r["train"]["epochs"] == 4
    assert r["optim"]["grad_clip"] == 0.0  # the fine-tuning scripts do not clip
    assert r["optim"]["betas"] == [0.9, 0.95] and r["optim"]["weight_decay"] == 0.0
    assert r["optim"]["eps"] == 1e-8  # torch's default, written
    assert r["schedule"] == {"warmup": 10, "warmup_start_ratio": 0.0, "decay": "cosine", "min_lr_ratio": 0.0}
    assert r["recipe"]["seed"] == 1337 and r["data"]["seed"] == 42  # data.init_args.seed: the split and the shuffle


def test_qlora_phi_and_full_values(imported):
    q = imported("litgpt", "llama-3-8b-qlora.yaml").recipe
    assert q["peft"]["quantize"] == "4bit"
    assert q["data"]["eval_fraction"] == 0.05
    phi = imported("litgpt", "phi-2-lora.yaml").recipe
    assert phi["peft"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2", "lm_head"]
    full = imported("litgpt", "llama-2-7b-full.yaml").recipe
    assert "peft" not in full
    assert full["launch"]["num_processes"] == 4 and full["launch"]["strategy"] == "fsdp"
    assert full["train"]["batch_size"] == 64 and full["train"]["micro_batch_size"] == 4
    assert full["train"]["eval_every"] == 25


def test_mistral_json_values(imported):
    got = imported("litgpt", "mistral-7b-lora-json.yaml", files=["data/my_data.json"])
    r = got.recipe
    assert r["data"]["sources"] == [{"path": "data/my_data.json", "records": "alpaca", "train_on": "assistant", "prompt_style": "alpaca"}]
    assert r["peft"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert r["train"]["max_steps"] == 400 and "epochs" not in r["train"]
    assert r["launch"]["num_processes"] == 2
    # 16 / 2 devices / 2 micro = 4 micro-batches per step: 4 iterations = 1 step
    assert r["train"]["log_every"] == 1
    assert r["output"]["trackers"] == ["wandb"]
    assert r["optim"]["decay"] == "all"


def test_pretrain_values(imported):
    got = imported("litgpt", "tinyllama-pretrain.yaml")
    r = got.recipe
    assert r["model"]["init"] == "llama"
    assert r["model"]["config"]["num_hidden_layers"] == 22 and r["model"]["config"]["num_key_value_heads"] == 4
    assert r["tokenizer"]["path"] == "meta-llama/Llama-2-7b-hf"
    assert r["launch"]["mixed_precision"] == "bf16" and r["model"]["dtype"] == "float32"
    assert r["train"]["tokens"] == 3_000_000_000_000 and r["train"]["batch_size"] == 512
    assert r["schedule"]["min_lr"] == 4e-5 and r["schedule"]["warmup"] == 2000
    assert r["optim"]["grad_clip"] == 1.0
    repos = [s["hub"]["repo"] for s in r["data"]["sources"]]
    assert repos == ["cerebras/SlimPajama-627B", "bigcode/starcoderdata", "cerebras/SlimPajama-627B"]
    assert [s.get("weight") for s in r["data"]["sources"]] == [0.693584, 0.306416, None]
    assert r["data"]["sources"][2]["split"] == "eval"
    assert any("pretrain.py" in n for n in got.result.draft.notes)


def test_continued_pretraining_values(imported):
    got = imported("litgpt", "pythia-160m-continued.yaml", files=["custom_pretraining_data/part-0.txt"])
    r = got.recipe
    assert r["model"]["path"] == "EleutherAI/pythia-160m" and "init" not in r["model"]
    assert r["data"]["sources"] == [{"path": "custom_pretraining_data/*.txt", "format": "text"}]
    assert r["train"]["tokens"] == 1_048_576  # 1048576 = 128 steps of 32 x 512 tokens: exact
    assert "train.max_tokens" in got.exact
    assert any("initial_checkpoint_dir" in n for n in got.result.draft.notes)


# -- the finetune LR schedule, step by step, against torch's schedulers as LitGPT builds them


def _litgpt_finetune_lrs(torch, warmup: int, max_steps: int, lr: float) -> list[float]:
    """litgpt/finetune/lora.py's get_lr_scheduler, stepped once per optimizer step as fit() does."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    s1 = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: step / warmup)
    s2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=(max_steps - warmup))
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [s1, s2], milestones=[warmup])
    return scheduler_lrs(opt, sched, max_steps)


@pytest.mark.parametrize("steps_per_epoch", [25, 37])
def test_finetune_lr_matches_litgpt_at_every_step(imported, steps_per_epoch):
    torch = pytest.importorskip("torch")
    from recipec.compiler import plan_recipe

    got = imported("litgpt", "llama-2-7b-lora.yaml")  # warmup 10, epochs 4, lr 2e-4, min_lr 6e-5 ignored
    plan, _ = plan_recipe(got.path, ())
    total = 4 * steps_per_epoch  # lr_max_steps = epochs * steps_per_epoch
    phases = runtime.layout(plan["schedule_spec"], total)  # as the script lays it out once the data fixes the length
    ours = [2e-4 * m for m in runtime.values(phases, total)]
    theirs = _litgpt_finetune_lrs(torch, warmup=10, max_steps=total, lr=2e-4)
    assert theirs[0] == 0.0 and ours[0] == 0.0
    # CosineAnnealingLR's recursive form against the closed form: float rounding only
    assert max(abs(a - b) for a, b in zip(ours, theirs)) <= 1e-15 * 2e-4
    assert min(theirs[10:]) > 0  # the run ends above 0, never at min_lr


def test_finetune_lr_with_max_steps_matches(imported, tmp_path):
    torch = pytest.importorskip("torch")
    from recipec.compiler import plan_recipe

    got = imported("litgpt", "mistral-7b-lora-json.yaml", files=["data/my_data.json"])
    plan, _ = plan_recipe(got.path, ())
    ours = [2e-4 * m for m in runtime.values(plan["schedule_phases"], 400)]
    theirs = _litgpt_finetune_lrs(torch, warmup=20, max_steps=400, lr=2e-4)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-15)


def test_pretrain_lr_lag_with_accumulation(imported):
    """pretrain.py sets the LR per micro-batch with get_lr; a step uses its last micro-batch's LR.
    With 4 micro-batches per step the recipe's per-step schedule differs in the warmup by at
    most 3 / (4 * warmup) of the peak (the approximation the recipe names), and not elsewhere
    by more than the cosine's slope over 3 micro-batches."""
    from recipec.compiler import plan_recipe

    got = imported("litgpt", "pythia-160m-continued.yaml", files=["custom_pretraining_data/part-0.txt"])
    plan, _ = plan_recipe(got.path, ())
    steps = 1_048_576 // (32 * 512)  # 64 steps
    ga, warm, lr, min_lr = 4, 10, 1e-4, 4e-5
    max_iters = steps * ga

    def get_lr(it: int) -> float:  # litgpt/pretrain.py
        if it < warm * ga:
            return lr * it / (warm * ga)
        ratio = (it - warm * ga) / (max_iters - warm * ga)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    theirs = [get_lr((j + 1) * ga - 1) for j in range(steps)]
    ours = [lr * m for m in runtime.values(plan["schedule_phases"], steps)]
    diff = [abs(a - b) for a, b in zip(ours, theirs)]
    assert max(diff[:warm]) == pytest.approx(lr * (ga - 1) / (ga * warm))
    assert max(diff) <= lr * (ga - 1) / (ga * warm) + 1e-12
    assert ours[-1] > min_lr and theirs[-1] > min_lr


# -- warnings, errors, detection -----------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


FT_HEAD = "checkpoint_dir: checkpoints/meta-llama/Llama-2-7b-hf\nout_dir: out/x\nlora_r: 8\n"


@pytest.mark.parametrize(
    ("text", "keys", "phrase"),
    [
        (FT_HEAD + "train:\n  epochs: 1\n  min_lr: 1.0e-5\n", ("train.min_lr",), "ignored by LitGPT's fine-tuning"),
        (FT_HEAD + "train:\n  epochs: 1\n  max_norm: 1.0\n", ("train.max_norm",), "refuse it"),
        (FT_HEAD + "train:\n  epochs: 1\n  max_tokens: 1000\n", ("train.max_tokens",), "refuse it"),
        (FT_HEAD + "train:\n  epochs: 1\n  lr_warmup_steps: 0\n", ("train.lr_warmup_steps",), "divides by it"),
        (FT_HEAD + "train:\n  epochs:\n  max_steps: 10\n", ("train.epochs",), "require train.epochs"),
        ("out_dir: out/x\nlora_r: 8\nlora_query: true\n", ("checkpoint_dir",), "no checkpoint_dir"),
        (FT_HEAD + "train:\n  epochs: 1\neval:\n  max_new_tokens:\n", ("eval.max_new_tokens",), "require eval.max_new_tokens"),
        (FT_HEAD + "quantize: bnb.nf4\ndevices: 2\ntrain:\n  epochs: 1\n", ("quantize", "devices"), "refuses quantize"),
        (
            "checkpoint_dir: checkpoints/meta-llama/Llama-2-7b-hf\nout_dir: out/x\nquantize: bnb.nf4\ntrain:\n  epochs: 1\n",
            ("quantize",),
            "adapter config",
        ),
        (
            FT_HEAD + "data:\n  class_path: litgpt.data.LIMA\ntrain:\n  epochs: 1\n",
            ("data.class_path",),
            "LIMA",
        ),
        (
            "model_name: pythia-14m\nout_dir: out/p\ntokenizer_dir: checkpoints/EleutherAI/pythia-14m\n"
            "train:\n  max_tokens: 100000\n  epochs: 2\n  max_steps: 5\n",
            ("model_name",),
            "sizes are not imported",
        ),
        (
            "model_name: tiny-llama-1.1b\nout_dir: out/p\ntrain:\n  max_tokens: 100000\n  epochs: 2\n",
            ("train.epochs",),
            "pretrain.py refuses it",
        ),
        (
            "model_name: tiny-llama-1.1b\nout_dir: out/p\ntrain:\n  max_tokens: 100000\n  max_steps: 5\n",
            ("train.max_steps",),
            "only warns",
        ),
        (
            "model_name: tiny-llama-1.1b\nout_dir: out/p\ntrain:\n  max_tokens: 100000\neval:\n  max_new_tokens: 10\n",
            ("eval.max_new_tokens",),
            "pretrain.py refuses it",
        ),
        (
            "model_name: tiny-llama-1.1b\nout_dir: out/p\ntrain:\n  global_batch_size: 1\n  micro_batch_size: 1\n",
            ("train.max_tokens",),
            "more than 10,000,000 steps",
        ),
        (
            "model_name: tiny-llama-1.1b\nout_dir: out/p\ntrain:\n  max_tokens: 100000\n  max_norm:\n",
            ("train.max_norm",),
            "requires train.max_norm",
        ),
        (
            "model_name: tiny-llama-1.1b\nout_dir: out/p\ndata:\n  class_path: litgpt.data.LitData\n"
            "  init_args:\n    data_path: s3://bucket/chunks\ntrain:\n  max_tokens: 100000\n",
            ("data.class_path",),
            "LitData",
        ),
        (
            "model_name: tiny-llama-1.1b\nout_dir: out/p\ntrain:\n  max_tokens:\n",
            ("train.max_tokens",),
            "requires train.max_tokens",
        ),
    ],
)
def test_warnings(tmp_path, text, keys, phrase):
    result = import_config(_write(tmp_path, text), "litgpt")
    hits = [(m, k) for m, k in result.draft.warnings if phrase in m]
    assert hits, result.draft.warnings
    assert hits[0][1] == keys
    assert phrase in result.text  # written into the header


def test_min_lr_dropped_and_warned_in_finetune_but_kept_in_pretrain(tmp_path):
    ft = import_config(_write(tmp_path, FT_HEAD + "train:\n  epochs: 1\n  min_lr: 1.0e-5\n"), "litgpt")
    assert ft.draft.ledger["train.min_lr"].how == "dropped"
    assert ft.draft.ledger["train.min_lr"].reason == "ignored-by-tool"
    assert "min_lr =" not in ft.text.split("[schedule]")[1].split("[")[0]
    pt = import_config(
        _write(tmp_path, "model_name: tiny-llama-1.1b\nout_dir: o\ntrain:\n  max_tokens: 4096000\n  min_lr: 1.0e-5\n", "p.yaml"), "litgpt"
    )
    assert pt.draft.ledger["train.min_lr"].how == "exact"
    assert "min_lr = 1e-05" in pt.text
    assert not pt.draft.warnings


def test_unknown_key_is_an_error_with_its_line(tmp_path):
    path = _write(tmp_path, FT_HEAD + "train:\n  epochs: 1\n  lr_warmup_step: 10\n")
    with pytest.raises(RecipeError) as info:
        import_config(path, "litgpt")
    (d,) = info.value.diagnostics
    assert "train.lr_warmup_step" in d.message
    assert d.location.file.endswith("cfg.yaml") and d.location.line == 6
    assert "lr_warmup_steps" in (d.help or "")


def test_a_litgpt_config_named_as_another_tool_is_detected():
    path = CONFIGS / "llama-2-7b-lora.yaml"
    with pytest.raises(RecipeError) as info:
        import_config(path, "torchtune")
    (d,) = info.value.diagnostics
    assert "looks like a litgpt config" in d.message
    assert "--from litgpt" in (d.help or "")


def test_kind_is_inferred_and_noted(tmp_path):
    full = import_config(CONFIGS / "llama-2-7b-full.yaml", "litgpt")
    assert any("finetune/full.py" in n for n in full.draft.notes)
    lora = import_config(CONFIGS / "llama-3-8b-qlora.yaml", "litgpt")
    assert any("finetune/lora.py" in n and "QLoRA" in n for n in lora.draft.notes)
    pre = import_config(CONFIGS / "pythia-160m-continued.yaml", "litgpt")
    assert any("pretrain.py" in n and "initial_checkpoint_dir" in n for n in pre.draft.notes)


def test_defaults_of_the_script_are_written(tmp_path):
    """A LoRA config that leaves nearly everything out: lora.py's own defaults."""
    result = import_config(_write(tmp_path, "checkpoint_dir: checkpoints/mistralai/Mistral-7B-v0.1\nlora_r: 4\n"), "litgpt")
    text = result.text
    for line in (
        "alpha = 16",
        "dropout = 0.05",
        'target_modules = ["q_proj", "v_proj"]',
        "batch_size = 16",
        "micro_batch_size = 1",
        "epochs = 5",
        "warmup = 100",
        "lr = 0.001",
        "weight_decay = 0.01",
        "betas = [0.9, 0.999]",
        "seed = 1337",
        'repo = "yahma/alpaca-cleaned"',
    ):
        assert line in text, line
    assert "default of litgpt 0.5.13" in text


@pytest.mark.parametrize(
    ("name", "initial", "how"),
    [
        ("tinyllama-pretrain.yaml", True, "exact"),
        ("tinyllama-pretrain.yaml", False, "exact"),
        ("llama-2-7b-lora.yaml", True, "approx"),  # fine-tuning validates on the whole set first
        ("llama-2-7b-lora.yaml", False, "exact"),
        ("llama-2-7b-lora.yaml", None, "default"),
    ],
)
def test_initial_validation_is_eval_at_start(imported, tmp_path, name, initial, how):
    text = (CONFIGS / name).read_text(encoding="utf-8")
    assert "  initial_validation: false\n" in text
    written = "" if initial is None else f"  initial_validation: {str(initial).lower()}\n"
    got = imported("litgpt", _write(tmp_path, text.replace("  initial_validation: false\n", written), name))
    assert got.recipe["train"]["eval_at_start"] is bool(initial)  # left out: EvalArgs' False
    if how == "default":
        assert ("eval.initial_validation", "no validation before the first step") in got.result.draft.defaults
    else:
        assert "eval.initial_validation" in (got.approx if how == "approx" else got.exact)
        assert "eval.initial_validation" not in got.dropped


def test_fused_qkv_is_approximate_and_adapter_is_full(imported, tmp_path):
    falcon = _write(
        tmp_path,
        "checkpoint_dir: checkpoints/tiiuae/falcon-7b\nlora_query: true\nlora_key: false\nlora_value: true\n"
        "data: Deita\ntrain:\n  epochs: 1\n",
        "falcon.yaml",
    )
    got = imported("litgpt", falcon)
    assert got.recipe["peft"]["target_modules"] == ["query_key_value"]
    assert {"lora_query", "lora_key", "lora_value"} <= got.approx
    assert got.recipe["data"]["sources"][0]["hub"] == {"repo": "HuggingFaceH4/deita-10k-v0-sft", "split": "train_sft"}
    adapter = _write(
        tmp_path,
        "checkpoint_dir: checkpoints/meta-llama/Llama-2-7b-hf\nout_dir: out/adapter\nquantize: bnb.nf4\ntrain:\n  epochs: 1\n",
        "adapter.yaml",
    )
    got = imported("litgpt", adapter)
    assert "peft" not in got.recipe
    assert got.dropped == {"quantize": "missing-feature"}
    assert got.recipe["data"]["sources"][0]["hub"]["repo"] == "yahma/alpaca-cleaned"  # the default Alpaca


def test_a_run_that_ends_inside_the_warmup(imported, tmp_path):
    """config_hub's phi-2/full.yaml: lr_warmup_steps 200, max_steps 100. LitGPT's SequentialLR
    never reaches its milestone: the LR ramps k / 200 for the whole run."""
    torch = pytest.importorskip("torch")
    from recipec.compiler import plan_recipe

    cfg = _write(
        tmp_path,
        FT_HEAD.replace("lora_r: 8\n", "") + "train:\n  lr_warmup_steps: 200\n  epochs: 1\n  max_steps: 100\n  min_lr: 6.0e-05\n",
        "short.yaml",
    )
    got = imported("litgpt", cfg)
    assert got.dropped == {"train.min_lr": "ignored-by-tool"}
    warned = [m for m, _ in got.result.draft.warnings]
    assert any("only warms up" in m for m in warned) and any("min_lr" in m for m in warned)
    plan, _ = plan_recipe(got.path, ())
    ours = runtime.values(plan["schedule_phases"], 100)
    theirs = _litgpt_finetune_lrs(torch, warmup=200, max_steps=100, lr=1.0)
    assert max(abs(a - b) for a, b in zip(ours, theirs)) <= 1e-15
