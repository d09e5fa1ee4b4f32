"""`recipec import --from torchtune`: the fixtures after torchtune's shipped configs, the LR
schedule against torchtune's own formula, unknown keys, configs of other tools, warnings."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from recipec.compiler import plan_recipe
from recipec.diagnostics import RecipeError
from recipec.importers import Options, detect, import_config
from recipec.importers.core import read_config
from recipec.runtime.schedule import values

CONFIGS = Path(__file__).resolve().parent / "configs"


PROFILER: dict[str, str] = {}
"""The profiler table every shipped config carries is turned off (`enabled: False`): mapped,
since no profiler runs in recipec either."""

DISK_LOGGER = {
    "metric_logger._component_": "not-for-training",
    "metric_logger.log_dir": "not-for-training",
    "log_peak_memory_stats": "not-for-training",
}

HUB_DIR = "checkpointer.checkpoint_dir"  # /tmp/<name>/ of `tune download`: loaded by its hub id (approx)
NULL_SEQ = "tokenizer.max_seq_len"  # null: bounded by the model's context
NULL_SEED = "seed"  # null: a random seed in torchtune
CHUNKED = "loss._component_"  # CEWithChunkedOutputLoss: chunks of the sequence vs chunk_size tokens

EXPECTED: dict[str, dict[str, Any]] = {
    "llama3_2-1B-full-single-device.yaml": {
        "approx": {HUB_DIR, NULL_SEQ, NULL_SEED, CHUNKED},
        "dropped": {**PROFILER, **DISK_LOGGER},
        "values": {
            "optim.step_in_backward": True,  # optimizer_in_bwd
            "model.path": "meta-llama/Llama-3.2-1B-Instruct",
            "model.dtype": "bfloat16",
            "data.sources[0].prompt_style": "alpaca_chat",  # alpaca_dataset: the Alpaca prompt text as the user turn
            "optim.name": "paged_adamw_8bit",
            "optim.lr": 2e-5,
            "optim.weight_decay": 0.01,  # bitsandbytes' default
            "optim.betas": [0.9, 0.999],
            "optim.grad_clip": 0.0,  # clip_grad_norm: null
            "schedule.decay": "constant",  # no lr_scheduler
            "schedule.warmup": 0,
            "train.micro_batch_size": 4,
            "train.batch_size": 4,
            "train.epochs": 1,
            "data.packing": False,
            "data.seq_len": 131072,
            "data.eval_fraction": 0.0,
            "data.sources[0].hub.repo": "tatsu-lab/alpaca",
            "data.sources[0].records": "alpaca",
            "data.sources[0].train_on": "all",  # alpaca_dataset's train_on_input=True
            "loss.cross_entropy": "chunked",
            "output.dir": "/tmp/torchtune/llama3_2_1B/full_single_device",
        },
        "absent": ["peft", "launch"],
    },
    "llama3_2-1B-lora-single-device.yaml": {
        "approx": {HUB_DIR, NULL_SEQ, NULL_SEED, CHUNKED},
        "dropped": {**PROFILER, **DISK_LOGGER},
        "values": {
            "peft.method": "lora",
            "peft.target_modules": ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            "peft.r": 64,
            "peft.alpha": 128,
            "peft.dropout": 0.0,
            "peft.save_merged": True,
            "optim.name": "adamw",
            "optim.lr": 3e-4,
            "optim.implementation": "fused",
            "optim.decay": {"include": ["*"]},
            "optim.eps": 1e-8,
            "schedule.warmup": 100,
            "schedule.decay": "cosine",
            "schedule.min_lr_ratio": 0.0,
            "schedule.warmup_start_ratio": 0.0,
            "train.batch_size": 32,
            "train.micro_batch_size": 4,
            "data.sources[0].hub.repo": "yahma/alpaca-cleaned",
        },
        "absent": ["peft.quantize", "launch"],
    },
    "llama3_1-8B-qlora-single-device.yaml": {
        "approx": {HUB_DIR, NULL_SEQ, NULL_SEED, CHUNKED, "model._component_"},
        "dropped": {**PROFILER, **DISK_LOGGER},  # low_cpu_ram: False, turned off
        "values": {
            "model.path": "meta-llama/Meta-Llama-3.1-8B-Instruct",
            "model.gradient_checkpointing": True,
            "peft.quantize": "4bit",
            "peft.r": 8,
            "peft.alpha": 16,
            "train.batch_size": 16,
        },
    },
    "llama3_3-70B-full-tp8.yaml": {
        "num_processes": 16,  # 2 nodes x 8 GPUs
        # the plan: transformers' own for the model type, which keeps the embeddings whole
        "approx": {HUB_DIR, NULL_SEQ, NULL_SEED, CHUNKED, "tensor_parallel_plan._component_"},
        "dropped": {**PROFILER, **DISK_LOGGER, "custom_sharded_layers": "no-equivalent"},
        "values": {
            "launch.num_processes": 16,
            "launch.strategy": "fsdp",
            "launch.fsdp.version": 2,
            "launch.parallelism": {"tp_size": 8},
            "train.micro_batch_size": 2,
            "train.batch_size": 4,  # 2 * 1 * (16 processes / tp 8)
            "loss.cross_entropy": "plain",  # the chunks would need the whole output projection
            "model.path": "meta-llama/Llama-3.3-70B-Instruct",
        },
    },
    "llama3_1-8B-full.yaml": {
        "num_processes": 4,
        "approx": {HUB_DIR, NULL_SEQ, NULL_SEED, CHUNKED},
        "dropped": {**PROFILER, **DISK_LOGGER, "custom_sharded_layers": "no-equivalent"},
        "values": {
            "launch.num_processes": 4,
            "launch.strategy": "fsdp",
            "launch.fsdp.version": 2,
            "launch.fsdp.sharding_strategy": "full_shard",
            "loss.cross_entropy": "chunked",  # under FSDP 2 too
            "train.micro_batch_size": 2,
            "train.batch_size": 8,  # 2 * 1 * 4 processes
            "optim.weight_decay": 0.01,  # torch.optim.AdamW's default
            "optim.lr": 2e-5,
        },
        "absent": ["peft"],
    },
    "llama3_1-8B-lora-dpo.yaml": {
        "num_processes": 2,
        "approx": {HUB_DIR, "dataset._component_", NULL_SEED, "epochs", "max_steps_per_epoch"},
        "dropped": {**DISK_LOGGER, "compile": "ignored-by-tool"},  # lora_dpo_distributed never reads compile
        "warnings": 1,
        "values": {
            "preference.objective": "dpo",
            "preference.beta": 0.1,
            "preference.label_smoothing": 0.0,
            "preference.reference": "live",
            "data.sources[0].records": "preference",
            "data.sources[0].hub.repo": "lvwerra/stack-exchange-paired",
            "data.sources[0].hub.data_files": "data/rl/*",
            "data.sources[0].fields": {"prompt": "question", "chosen": "response_j", "rejected": "response_k"},
            "data.seq_len": 1024,
            "data.packing": False,
            "train.max_steps": 1000,
            "train.batch_size": 64,  # 4 * 8 * 2 processes
            "optim.grad_clip": 0.0,  # the DPO recipes never clip
            "optim.weight_decay": 0.05,
            "launch.strategy": "fsdp",
        },
        "absent": ["train.epochs", "model.compile"],
    },
    "llama3_2-1B-chat-sft.yaml": {
        "approx": {HUB_DIR, CHUNKED, "dataset.packed", "metric_logger._component_", "seed"},  # seed: data order
        "dropped": {"metric_logger.project": "not-for-training"},  # log_peak_memory_stats: False
        "values": {
            "recipe.seed": 42,
            "data.sources[0].hub.repo": "Open-Orca/SlimOrca-Dedup",
            "data.sources[0].hub.split": "train",
            "data.sources[0].records": "sharegpt",
            "data.sources[0].train_on": "assistant",
            "data.packing": True,
            "data.seq_len": 2048,
            "peft.target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            "peft.dropout": 0.05,
            "peft.save_merged": False,
            "optim.grad_clip": 1.0,
            "model.compile": True,
            "train.epochs": 3,
            "train.log_every": 10,
            "output.trackers": ["wandb"],
        },
        "absent": ["data.sources[0].fields", "data.cross_document_attention"],  # packed examples: apart already
    },
    "llama3_1-8B-text-completion.yaml": {
        "files": ["odyssey.json"],
        "approx": {HUB_DIR, "dataset.packed", "epochs", "max_steps_per_epoch", "seed", CHUNKED, "enable_activation_offloading"},
        "dropped": {**DISK_LOGGER},
        "values": {
            "optim.step_in_backward": True,  # optimizer_in_bwd
            "model.activation_offloading": True,
            "model.path": "meta-llama/Meta-Llama-3.1-8B",
            "data.sources[0].path": "odyssey.json",
            "data.sources[0].text_field": "input",
            "data.packing": True,
            "data.cross_document_attention": False,  # PackedDataset's block-causal mask
            "data.seq_len": 8192,
            "train.max_steps": 1000,  # 2 epochs * 500
            "schedule.warmup": 20,
            "recipe.seed": 1234,
        },
        "absent": ["data.sources[0].records", "data.sources[0].hub"],
    },
}


def _lookup(recipe: dict[str, Any], key: str) -> Any:
    node: Any = recipe
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        if part.startswith("["):
            node = node[int(part[1:-1])]
        else:
            node = node[part]
    return node


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture(imported, name: str) -> None:
    spec = EXPECTED[name]
    got = imported("torchtune", name, num_processes=spec.get("num_processes", 1), files=spec.get("files", ()))
    assert got.approx == spec["approx"]
    assert got.dropped == spec["dropped"]
    assert len(got.result.draft.warnings) == spec.get("warnings", 0), got.result.draft.warnings
    assert not got.result.draft.pending()
    for key, value in spec["values"].items():
        assert _lookup(got.recipe, key) == value, key
    for key in spec.get("absent", []):
        with pytest.raises((KeyError, IndexError)):
            _lookup(got.recipe, key)
    assert "recipec import does not map this key" not in got.result.text


def test_fixtures_are_all_listed() -> None:
    assert {p.name for p in (CONFIGS / "torchtune").glob("*.yaml")} == set(EXPECTED)


def test_defaults_are_written(imported) -> None:
    got = imported("torchtune", "llama3_2-1B-lora-single-device.yaml")
    defaults = dict(got.result.draft.defaults)
    assert set(defaults) == {
        "model.apply_lora_to_output",
        "dataset.source",
        "dataset.train_on_input",
        "optimizer.betas",
        "optimizer.eps",
    }
    assert "default of torchtune 0.6.1 for `optimizer.betas`" in got.result.text


# -- the LR schedule ---------------------------------------------------------------------------


def _torchtune_cosine(step: int, warmup: int, total: int, cycles: float = 0.5) -> float:
    """torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup's lr_lambda (0.6.1)."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress)))


@pytest.mark.parametrize("total", [350, 101, 1000])
def test_cosine_schedule_matches_torchtune(imported, total: int) -> None:
    got = imported("torchtune", "llama3_2-1B-lora-single-device.yaml")  # num_warmup_steps: 100
    text = re.sub(r"(?m)^epochs = 1 .*$", f"max_steps = {total}", got.result.text)
    got.path.write_text(text, encoding="utf-8")
    plan, _ = plan_recipe(got.path, ())
    ours = values(plan["schedule_phases"], total)
    expected = [_torchtune_cosine(s, 100, total) for s in range(total)]
    assert ours == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_cosine_schedule_matches_transformers(imported) -> None:
    """torchtune's formula is transformers' get_cosine_schedule_with_warmup: the same LR at every step."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    got = imported("torchtune", "llama3_2-1B-chat-sft.yaml")  # num_warmup_steps: 50
    text = re.sub(r"(?m)^epochs = 3 .*$", "max_steps = 240", got.result.text)
    got.path.write_text(text, encoding="utf-8")
    plan, _ = plan_recipe(got.path, ())
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = transformers.get_cosine_schedule_with_warmup(opt, num_warmup_steps=50, num_training_steps=240)
    expected = []
    for _ in range(240):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert values(plan["schedule_phases"], 240) == pytest.approx(expected, rel=1e-12, abs=1e-15)


# -- errors ----------------------------------------------------------------------------------


def _variant(tmp_path: Path, base: str, change: dict[str, Any] | None = None, remove: tuple[str, ...] = (), name: str = "v.yaml") -> Path:
    """A copy of a fixture with some top-level or dotted keys changed or removed."""
    data = yaml.safe_load((CONFIGS / "torchtune" / base).read_text(encoding="utf-8"))
    for key, value in (change or {}).items():
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    for key in remove:
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node[p]
        del node[leaf]
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_unknown_key_names_file_and_line(tmp_path: Path) -> None:
    text = (CONFIGS / "torchtune" / "llama3_2-1B-lora-single-device.yaml").read_text(encoding="utf-8")
    text = text.replace("  lora_rank: 64\n", "  lora_rank: 64\n  lora_rnak: 32\n")
    path = tmp_path / "typo.yaml"
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index("  lora_rnak: 32") + 1
    with pytest.raises(RecipeError) as exc:
        import_config(path, "torchtune")
    shown = str(exc.value)
    assert "model.lora_rnak" in shown
    assert f"typo.yaml:{line}" in shown
    assert "Traceback" not in shown


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = _variant(tmp_path, "llama3_2-1B-full-single-device.yaml", {"max_steps": 100})
    with pytest.raises(RecipeError, match="unknown key `max_steps`"):
        import_config(path, "torchtune")


def test_markers_detect_a_torchtune_config() -> None:
    found = detect(read_config(CONFIGS / "torchtune" / "llama3_2-1B-lora-single-device.yaml"))
    assert len(found["torchtune"]) >= 2
    assert {"checkpointer", "metric_logger", "max_steps_per_epoch"} <= set(found["torchtune"])


def test_torchtune_config_imported_as_another_tool() -> None:
    path = CONFIGS / "torchtune" / "llama3_1-8B-full.yaml"
    with pytest.raises(RecipeError) as exc:
        import_config(path, "axolotl")
    assert "looks like a torchtune config" in str(exc.value)
    assert "--from torchtune" in str(exc.value)


def test_markers_are_torchtune_only() -> None:
    from recipec.importers import torchtune

    # keys of the other tools' configs (axolotl, LLaMA-Factory, litgpt, llm-foundry, TrainingArguments)
    others = {
        "base_model", "datasets", "micro_batch_size", "gradient_accumulation_steps", "num_epochs", "learning_rate",
        "lr_scheduler", "optimizer", "output_dir", "model_name_or_path", "stage", "finetuning_type", "dataset",
        "template", "cutoff_len", "per_device_train_batch_size", "checkpoint_dir", "out_dir", "precision", "train",
        "eval", "model", "tokenizer", "max_seq_len", "global_train_batch_size", "device_train_microbatch_size",
        "max_duration", "scheduler", "algorithms", "fsdp_config", "save_folder", "loggers", "callbacks", "seed",
        "resume_from_checkpoint", "max_grad_norm", "logging_steps", "bf16", "gradient_checkpointing",
    }  # fmt: skip
    assert not set(torchtune.MARKERS) & others


# -- warnings ----------------------------------------------------------------------------------

WARNINGS = [
    # (fixture, changed keys, removed keys, options, expected warning, key then dropped/how)
    ("llama3_1-8B-lora-dpo.yaml", {"compile": True}, (), 2, "never reads it", ("compile", "ignored-by-tool")),
    (
        "llama3_2-1B-lora-single-device.yaml",
        {"checkpointer.recipe_checkpoint": "recipe_state.pt"},
        (),
        1,
        "resume_from_checkpoint is False",
        ("checkpointer.recipe_checkpoint", "ignored-by-tool"),
    ),
    ("llama3_2-1B-lora-single-device.yaml", {}, ("lr_scheduler",), 1, "requires an lr_scheduler", None),
    (
        "llama3_2-1B-lora-single-device.yaml",
        {"lr_scheduler.num_cycles": 1.0},
        (),
        1,
        "num_cycles is 1.0",
        ("lr_scheduler.num_cycles", "missing-feature"),
    ),
    ("llama3_2-1B-lora-single-device.yaml", {"dataset.packed": True}, (), 1, "PackedDataset refuses", None),
    (
        "llama3_2-1B-full-single-device.yaml",
        {"model.lora_rank": 8},
        (),
        1,
        "not a LoRA builder",
        ("model.lora_rank", "ignored-by-tool"),
    ),
    (
        "llama3_2-1B-full-single-device.yaml",
        {"optimizer.fused": True},
        (),
        1,
        "has no such argument",
        ("optimizer.fused", "ignored-by-tool"),
    ),
    (
        "llama3_1-8B-lora-dpo.yaml",
        {"loss.num_output_chunks": 8},
        (),
        2,
        "DPOLoss has no such argument",
        ("loss.num_output_chunks", "ignored-by-tool"),
    ),
    (
        "llama3_1-8B-lora-dpo.yaml",
        {"dataset.packed": True},
        (),
        2,
        "DPO recipes do not pack",
        ("dataset.packed", "ignored-by-tool"),
    ),
    ("llama3_2-1B-lora-single-device.yaml", {}, ("gradient_accumulation_steps",), 1, "gradient_accumulation_steps is missing", None),
    (
        "llama3_2-1B-lora-single-device.yaml",
        {"optimizer._component_": "torch.optim.RMSprop"},
        (),
        1,
        "could not be imported",
        ("optimizer._component_", "missing-feature"),
    ),
    (
        "llama3_2-1B-lora-single-device.yaml",
        {"lr_scheduler._component_": "torch.optim.lr_scheduler.StepLR"},
        (),
        1,
        "could not be imported",
        ("lr_scheduler._component_", "missing-feature"),
    ),
    (
        "llama3_2-1B-lora-single-device.yaml",
        {"loss._component_": "torchtune.modules.loss.ForwardKLLoss"},
        (),
        1,
        "could not be imported",
        ("loss._component_", "missing-feature"),
    ),
]


@pytest.mark.parametrize("base,change,remove,nproc,message,dropped", WARNINGS, ids=[w[4] for w in WARNINGS])
def test_warning(tmp_path: Path, base: str, change: dict[str, Any], remove: tuple[str, ...], nproc: int, message: str, dropped) -> None:
    path = _variant(tmp_path, base, change, remove)
    result = import_config(path, "torchtune", Options(name="v", num_processes=nproc))
    messages = [m for m, _ in result.draft.warnings]
    assert any(message in m for m in messages), messages
    assert "# Warnings (contradictions and old keys in the source config):" in result.text
    if dropped:
        key, reason = dropped
        entry = result.draft.ledger[key]
        assert (entry.how, entry.reason) == ("dropped", reason)


def test_mixed_packing_warns(tmp_path: Path) -> None:
    data = yaml.safe_load((CONFIGS / "torchtune" / "llama3_2-1B-chat-sft.yaml").read_text(encoding="utf-8"))
    chat = data["dataset"]
    data["dataset"] = [chat, {"_component_": "torchtune.datasets.alpaca_cleaned_dataset", "packed": False}]
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    result = import_config(path, "torchtune")
    assert any("some datasets are packed" in m for m, _ in result.draft.warnings)
    assert "data.sources[1]" not in result.text or "alpaca-cleaned" in result.text


# -- smaller mappings ------------------------------------------------------------------------


def test_local_chat_dataset_and_seed(imported, tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "llama3_2-1B-chat-sft.yaml",
        {
            "dataset.source": "json",
            "dataset.data_files": "data/my_data.jsonl",
            "dataset.conversation_column": "dialog",
            "dataset.conversation_style": "openai",
            "dataset.train_on_input": True,
            "seed": 7,
        },
        name="local-chat.yaml",
    )
    got = imported("torchtune", path, files=["data/my_data.jsonl"])
    src = got.recipe["data"]["sources"][0]
    assert src["path"] == "data/my_data.jsonl"
    assert src["records"] == "messages"
    assert src["fields"] == {"messages": "dialog"}
    assert src["train_on"] == "all"
    assert "format" not in src
    assert got.recipe["recipe"]["seed"] == 7


def test_clip_and_reshard_and_offload(imported, tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "llama3_1-8B-full.yaml",
        {"clip_grad_norm": 1.0, "fsdp_reshard_after_forward": False, "fsdp_cpu_offload": True},
        name="full-clip.yaml",
    )
    got = imported("torchtune", path, num_processes=8)
    assert got.recipe["optim"]["grad_clip"] == 1.0
    assert got.recipe["launch"]["fsdp"] == {"version": 2, "sharding_strategy": "shard_grad_op", "cpu_offload": True}
    assert got.recipe["train"]["batch_size"] == 16


def test_split_slice_takes_a_head(imported, tmp_path: Path) -> None:
    path = _variant(tmp_path, "llama3_2-1B-chat-sft.yaml", {"dataset.split": "train[:1000]"}, name="head.yaml")
    got = imported("torchtune", path)
    src = got.recipe["data"]["sources"][0]
    assert src["hub"]["split"] == "train"
    assert src["max_documents"] == 1000


def test_local_checkpoint_dir_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _variant(tmp_path, "llama3_2-1B-full-single-device.yaml", {"checkpointer.checkpoint_dir": "./ckpt/my-run"})
    result = import_config(path, "torchtune")
    assert result.draft.ledger["checkpointer.checkpoint_dir"].how == "exact"
    assert 'path = "./ckpt/my-run"' in result.text
    assert result.draft.ledger["tokenizer.path"].how == "dropped"  # a tokenizer file outside the checkpoint


def test_instruct_dataset(imported, tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "llama3_2-1B-lora-single-device.yaml",
        {"dataset": {"_component_": "torchtune.datasets.instruct_dataset", "source": "org/qa", "column_map": {"input": "question", "output": "answer"}}},
        name="instruct.yaml",
    )
    got = imported("torchtune", path)
    src = got.recipe["data"]["sources"][0]
    assert src["records"] == "prompt_completion"
    assert src["fields"] == {"prompt": "question", "completion": "answer"}
    assert src["train_on"] == "completion"  # instruct_dataset's train_on_input=False
    assert got.result.draft.ledger["dataset.column_map.input"].how == "exact"


def test_rso_loss_is_hinge_and_dpo_ignores_clipping(imported, tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "llama3_1-8B-lora-dpo.yaml",
        {"loss": {"_component_": "torchtune.rlhf.loss.RSOLoss", "gamma": 0.2}, "clip_grad_norm": 1.0},
        name="rso.yaml",
    )
    got = imported("torchtune", path, num_processes=2)
    assert got.recipe["preference"] == {"objective": "hinge", "beta": 0.2, "reference": "live"}
    assert got.recipe["optim"]["grad_clip"] == 0.0
    assert got.dropped["clip_grad_norm"] == "ignored-by-tool"


# -- the device mesh ---------------------------------------------------------------------------


def test_tensor_parallel_raises_the_processes(imported) -> None:
    got = imported("torchtune", "llama3_3-70B-full-tp8.yaml")  # --num-processes 1
    assert got.recipe["launch"]["num_processes"] == 8
    assert got.recipe["launch"]["parallelism"] == {"tp_size": 8}
    assert got.recipe["train"]["batch_size"] == 2  # one data-parallel rank
    (warning,) = [w for w, _ in got.result.draft.warnings]
    assert "launch.num_processes is 8, not the 1" in warning


def test_tensor_parallel_dim_one_is_no_mesh(imported, tmp_path: Path) -> None:
    path = _variant(tmp_path, "llama3_3-70B-full-tp8.yaml", {"tensor_parallel_dim": 1})
    got = imported("torchtune", path, num_processes=8)
    assert "parallelism" not in got.recipe["launch"]
    assert got.recipe["train"]["batch_size"] == 16  # 2 * 1 * 8 processes
    assert got.dropped["tensor_parallel_plan._component_"] == "ignored-by-tool"


def test_the_lora_recipe_never_reads_tensor_parallel_dim(imported, tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "llama3_3-70B-full-tp8.yaml",
        {"model._component_": "torchtune.models.llama3_3.lora_llama3_3_70b", "model.lora_attn_modules": ["q_proj", "v_proj"], "model.lora_rank": 8, "model.lora_alpha": 16},
    )
    got = imported("torchtune", path, num_processes=16)
    assert "parallelism" not in got.recipe["launch"]  # lora_finetune_distributed (0.6.1) has no tensor parallelism
    assert got.dropped["tensor_parallel_dim"] == "ignored-by-tool"


def test_processes_not_a_multiple_of_the_mesh_are_rounded_up(imported) -> None:
    got = imported("torchtune", "llama3_3-70B-full-tp8.yaml", num_processes=12)
    assert got.recipe["launch"]["num_processes"] == 16
    assert got.recipe["train"]["batch_size"] == 4
    assert any("launch.num_processes is 16, not the 12" in w for w, _ in got.result.draft.warnings)


def test_new_system_prompt_replaces_the_records_own(imported, tmp_path: Path) -> None:
    """torchtune's OpenAIToMessages / ShareGPTToMessages skip the records' system messages and put
    `new_system_prompt` first, never trained on: `system = {replace = ...}`, exact unless
    train_on_input trains on every other turn; an instruct dataset's strings have no conversation."""
    changes = {"dataset.source": "json", "dataset.data_files": "data/chat.jsonl", "dataset.conversation_style": "openai", "dataset.new_system_prompt": "Be terse."}
    got = imported("torchtune", _variant(tmp_path, "llama3_2-1B-chat-sft.yaml", changes, name="sys.yaml"), files=["data/chat.jsonl"])
    assert got.recipe["data"]["sources"][0]["system"] == {"replace": "Be terse."}
    assert "dataset.new_system_prompt" in got.exact
    changes["dataset.train_on_input"] = True
    got = imported("torchtune", _variant(tmp_path, "llama3_2-1B-chat-sft.yaml", changes, name="sys-all.yaml"), files=["data/chat.jsonl"])
    assert "dataset.new_system_prompt" in got.approx
    path = _variant(
        tmp_path,
        "llama3_2-1B-lora-single-device.yaml",
        {"dataset": {"_component_": "torchtune.datasets.instruct_dataset", "source": "org/qa", "new_system_prompt": "Be terse."}},
        name="instruct-sys.yaml",
    )
    got = imported("torchtune", path)
    assert got.dropped["dataset.new_system_prompt"] == "missing-feature" and "system" not in got.recipe["data"]["sources"][0]
