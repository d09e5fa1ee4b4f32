"""`recipec import --from llm-foundry`: each fixture mirrors a YAML shipped in
mosaicml/llm-foundry scripts/train/yamls (v0.21.0); the expected ledgers say what llm-foundry
does with each key and what recipec can and cannot express."""

from __future__ import annotations

import re

import math
import tomllib
from pathlib import Path

import pytest

import recipec.importers as importers
from recipec.compiler import plan_recipe
from recipec.diagnostics import RecipeError
from recipec.importers import Options, detect, import_config
from recipec.importers.core import read_config
from recipec.runtime import schedule as runtime

CONFIGS = Path(__file__).resolve().parent / "configs" / "llm-foundry"
TOOL = "llm-foundry"


MDS = "missing-feature"
LOG = "not-for-training"
NOEQ = "no-equivalent"
MONITORS = {
    "callbacks.speed_monitor.window_size": LOG,
    "callbacks.lr_monitor": LOG,
    "callbacks.memory_monitor": LOG,
    "callbacks.runtime_estimator": LOG,
    "log_to_console": LOG,
}
# progress_bar: false and run_name: null are settings turned off: mapped (recipec draws no bar)
# local + split -> an MDS source (remote: null, the shards are local); streaming shuffles with shuffle_seed by its
# own algorithm (approx), and not at all with shuffle: false (the eval loader's seed is ignored)
TEXT_LOADER_APPROX = {"train_loader.dataset.shuffle_seed"}
EVAL_TEXT_LOADER = {"eval_loader.dataset.shuffle_seed": "ignored-by-tool"}
# prefetch_factor and persistent_workers -> [data] (num_workers above 0); the eval loader's worker settings equal
# the train loader's, which recipec's evaluation takes: mapped exactly; its drop_last: true, recipec's evaluation
# reads every held-out row
LOADER_PERF: dict[str, str] = {}
EVAL_LOADER: dict[str, str] = {}
EVAL_LOADER_FULL = {"eval_loader.drop_last": NOEQ}
MPT_APPROX = {"model.name", "model.vocab_size"}
FSDP_APPROX = {"fsdp_config.mixed_precision"}

EXPECTED = {
    "mpt-125m.yaml": {
        "approx": MPT_APPROX | FSDP_APPROX | TEXT_LOADER_APPROX,
        "dropped": {
            "model.attn_config.attn_impl": NOEQ,
            "model.init_device": NOEQ,
            **EVAL_TEXT_LOADER,
            **EVAL_LOADER,
            "fsdp_config.limit_all_gathers": NOEQ,
            "run_name": LOG,
            **MONITORS,
        },
    },
    "llama-scratch.yaml": {
        "approx": FSDP_APPROX
        | TEXT_LOADER_APPROX
        | {
            "model.pretrained",
            "model.pretrained_model_name_or_path",
            "variables.model_name",
            "device_train_microbatch_size",
        },
        "dropped": {
            "model.init_device": NOEQ,
            "model.use_auth_token": LOG,
            **LOADER_PERF,
            "fsdp_config.limit_all_gathers": NOEQ,
            "fsdp_config.backward_prefetch": NOEQ,
            "expandable_segments": NOEQ,
            "run_name": LOG,
            **MONITORS,
        },
    },
    "mpt-7b_dolly_sft.yaml": {
        "approx": FSDP_APPROX | {"train_loader.dataset.hf_name", "eval_loader.dataset.hf_name"},
        "dropped": {
            **LOADER_PERF,
            "train_loader.timeout": NOEQ,
            **EVAL_LOADER_FULL,
            "eval_loader.timeout": NOEQ,
            "fsdp_config.limit_all_gathers": NOEQ,
            "run_name": LOG,
            **MONITORS,
        },
    },
    "1b_local_data_sft.yaml": {
        "approx": MPT_APPROX
        | FSDP_APPROX
        | {f"{loader}.dataset.{k}" for loader in ("train_loader", "eval_loader") for k in ("hf_name", "hf_kwargs.data_dir", "split")},
        "dropped": {
            "model.attn_config.attn_impl": NOEQ,
            "model.init_device": NOEQ,
            "train_loader.dataset.preprocessing_fn": MDS,
            "eval_loader.dataset.preprocessing_fn": MDS,
            **LOADER_PERF,
            "train_loader.timeout": NOEQ,
            **EVAL_LOADER_FULL,
            "eval_loader.timeout": NOEQ,
            "fsdp_config.limit_all_gathers": NOEQ,
            "load_path": MDS,
            "load_weights_only": MDS,
            **MONITORS,
        },
    },
    "lora-llama-3-8b_dolly.yaml": {
        "approx": FSDP_APPROX
        | {
            "train_loader.dataset.hf_name",
            "eval_loader.dataset.hf_name",
            "train_loader.dataset.packing_ratio",
            "scheduler.t_warmup",  # 0.02dur of an epoch-long run
        },
        "dropped": {
            "model.init_device": NOEQ,
            "model.use_auth_token": LOG,
            "train_loader.dataset.eos_token_id": NOEQ,
            **LOADER_PERF,
            **EVAL_LOADER_FULL,
            "fsdp_config.limit_all_gathers": NOEQ,
            "expandable_segments": NOEQ,
            "icl_seq_len": LOG,
            "variables.icl_seq_len": LOG,
            "run_name": LOG,
            "callbacks.hf_checkpointer.overwrite": LOG,
            "callbacks.hf_checkpointer.precision": LOG,
            "callbacks.hf_checkpointer.save_folder": LOG,
            "callbacks.hf_checkpointer.save_interval": LOG,
            **{k: v for k, v in MONITORS.items()},
        },
    },
    "llama-3-8b_domain_adapt.yaml": {
        "approx": FSDP_APPROX | TEXT_LOADER_APPROX,
        "dropped": {
            # MPT's keys on a Llama: LlamaConfig has neither, and hf_causal_lm raises on them
            "model.config_overrides.max_seq_len": NOEQ,
            "model.config_overrides.attn_config.attn_impl": NOEQ,
            "model.use_auth_token": LOG,
            **EVAL_TEXT_LOADER,
            **EVAL_LOADER,
            "fsdp_config.limit_all_gathers": NOEQ,
            "save_folder": NOEQ,
            "load_weights_only": "ignored-by-tool",
            **MONITORS,
        },
    },
}

FILES = {"1b_local_data_sft.yaml": ["data/train.jsonl", "data/validation.jsonl"]}

MDS_DIRS = ["my-copy-c4/train", "my-copy-c4/val", "my-copy-c4/train_small", "my-adaptation-data/train_small", "my-adaptation-data/val_small"]
"""The local/split directories of the fixtures' MDS loaders."""


@pytest.fixture(autouse=True)
def mds_copies(tmp_path):
    """An index.json in each loader's local/split directory, where the imported recipe's path check looks
    (the `imported` fixture imports and validates in tmp_path)."""
    for d in MDS_DIRS:
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        (tmp_path / d / "index.json").write_text('{"version": 2, "shards": []}', encoding="utf-8")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_imports_and_validates(imported, name):
    got = imported(TOOL, CONFIGS / name, num_processes=8, files=FILES.get(name, []))
    assert got.approx == EXPECTED[name]["approx"]
    assert got.dropped == EXPECTED[name]["dropped"]
    assert not got.result.draft.pending()
    assert "recipec import does not map this key" not in got.result.text


def test_mpt_125m_values(imported):
    r = imported(TOOL, CONFIGS / "mpt-125m.yaml", num_processes=8).recipe
    assert r["model"]["init"] == "mpt"
    assert r["model"]["config"] == {
        "d_model": 768, "n_heads": 12, "n_layers": 12, "expansion_ratio": 4, "max_seq_len": 2048,
        "no_bias": False, "tie_word_embeddings": True,
    }  # fmt: skip
    assert r["data"]["seq_len"] == 2048  # ${variables.max_seq_len}
    assert r["recipe"]["seed"] == 17  # ${variables.global_seed}
    assert r["optim"] == {"name": "adamw", "lr": 6e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.0, "grad_clip": 1.0}
    assert r["schedule"] == {"decay": "cosine", "warmup_shape": "linear", "warmup_start_ratio": 0.0, "warmup": 100, "min_lr_ratio": 0.1}
    assert r["train"]["max_steps"] == 4800 and r["train"]["batch_size"] == 256 and r["train"]["micro_batch_size"] == 16
    assert r["launch"] == {
        "num_processes": 8, "mixed_precision": "bf16", "strategy": "fsdp",
        "fsdp": {"version": 1, "sharding_strategy": "full_shard", "activation_checkpointing": False},
    }  # fmt: skip
    assert r["data"]["sources"] == [
        {"path": "./my-copy-c4/train", "format": "mds"},  # local/split
        {"path": "./my-copy-c4/val", "format": "mds", "split": "eval", "name": "eval"},
    ]


def test_decoupled_weight_decay_is_divided_by_the_peak_lr(imported):
    r = imported(TOOL, CONFIGS / "llama-scratch.yaml", num_processes=8).recipe
    # Composer: p *= 1 - (lr_t / lr) * 6e-5; torch AdamW: p *= 1 - lr_t * wd  =>  wd = 6e-5 / 6e-4
    assert r["optim"]["weight_decay"] == pytest.approx(0.1, rel=1e-12)
    assert r["optim"]["decay"] == {"include": ["*"]}
    assert r["schedule"]["warmup"] == 200  # int(0.01 * 20000ba)
    assert r["model"]["init"] == "llama"
    assert r["model"]["config"]["num_key_value_heads"] == 4
    assert r["model"]["config"]["max_position_embeddings"] == 2048  # ${variables.max_seq_len}
    assert r["model"]["attention"] == "flash_attention_2"
    assert r["train"]["micro_batch_size"] == 64  # auto: the per-device batch 512 / 8
    assert r["train"]["save_every"] == 0  # save_folder: null


def test_finetuning_values(imported):
    r = imported(TOOL, CONFIGS / "mpt-7b_dolly_sft.yaml", num_processes=8).recipe
    train, ev = r["data"]["sources"]
    assert train["hub"] == {"repo": "mosaicml/dolly_hhrlhf", "split": "train"}
    assert train["records"] == "prompt_completion" and train["fields"] == {"completion": "response"}
    assert ev["hub"]["split"] == "test" and ev["split"] == "eval"
    assert r["data"]["packing"] is False and r["data"]["eval_fraction"] == 0.0
    # config_overrides -> [model.config]: set on the loaded config before the weights, as hf_causal_lm sets them
    config = {"max_seq_len": 2048, "attn_config": {"attn_impl": "flash", "attn_uses_sequence_id": False}}
    assert r["model"] == {"path": "mosaicml/mpt-7b", "trust_remote_code": True, "config": config}
    assert r["train"]["epochs"] == 2 and r["train"]["micro_batch_size"] == 6  # lowered to 48 / 8
    assert r["schedule"]["decay"] == "linear" and r["schedule"]["min_lr_ratio"] == 0 and r["schedule"]["warmup"] == 50
    assert r["optim"]["betas"] == [0.9, 0.999]
    assert r["launch"]["fsdp"]["activation_checkpointing"] is True


def test_loader_worker_settings(imported):
    r = imported(TOOL, CONFIGS / "lora-llama-3-8b_dolly.yaml", num_processes=8).recipe
    assert {k: r["data"][k] for k in ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor")} == {
        "num_workers": 8, "pin_memory": True, "persistent_workers": True, "prefetch_factor": 2,
    }


def test_local_jsonl_through_yaml_anchors(imported):
    got = imported(TOOL, CONFIGS / "1b_local_data_sft.yaml", num_processes=8, files=FILES["1b_local_data_sft.yaml"])
    train, ev = got.recipe["data"]["sources"]
    assert train["path"] == "./data/train*.jsonl"
    assert ev["path"] == "./data/validation*.jsonl" and ev["split"] == "eval"
    # the anchored table under `variables` is used where it is merged
    assert {"variables.dataset.hf_name", "variables.dataset.hf_kwargs.data_dir"} <= got.exact
    assert got.recipe["train"]["epochs"] == 1 and got.recipe["schedule"]["warmup"] == 0


def test_lora_values(imported):
    r = imported(TOOL, CONFIGS / "lora-llama-3-8b_dolly.yaml", num_processes=8).recipe
    assert r["peft"] == {"method": "lora", "r": 64, "alpha": 128, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    assert r["optim"]["name"] == "lion"
    assert r["optim"]["weight_decay"] == pytest.approx(1e-6 / 1e-4, rel=1e-12)
    assert r["data"]["packing"] is True
    assert r["schedule"]["warmup"] == 0.02
    assert r["launch"]["fsdp"]["state_dict_type"] == "sharded"


def test_continued_pretraining_values(imported):
    got = imported(TOOL, CONFIGS / "llama-3-8b_domain_adapt.yaml", num_processes=8)
    r = got.recipe
    assert r["model"]["path"] == "meta-llama/Meta-Llama-3-8B" and "init" not in r["model"]
    assert r["data"]["seq_len"] == 4096
    assert r["train"]["save_every"] == 1000 and r["train"]["keep_last"] == 1
    assert r["optim"]["lr"] == 5e-5
    warnings = [m for m, _ in got.result.draft.warnings]
    max_seq_len, attn_config, msg = warnings
    assert r["data"]["sources"][0] == {"path": "./my-adaptation-data/train_small", "format": "mds"}
    assert "load_weights_only" in msg and "load_path" in msg
    # MPT's config_overrides on a Llama: LlamaConfig has neither key (told from the name), and hf_causal_lm
    # refuses them too
    assert "config" not in r["model"]
    assert max_seq_len == "config_overrides.max_seq_len is not a key of transformers' llama config: llm-foundry's hf_causal_lm refuses it"
    assert attn_config.startswith("config_overrides.attn_config is not a key")


@pytest.mark.parametrize("first", [True, False, None])
def test_eval_first_is_eval_at_start(tmp_path, imported, first):
    text = (CONFIGS / "mpt-7b_dolly_sft.yaml").read_text(encoding="utf-8")
    assert "\neval_first: true\n" in text and "\neval_loader:\n" in text
    written = "" if first is None else f"eval_first: {str(first).lower()}\n"
    path = tmp_path / "first.yaml"
    path.write_text(text.replace("eval_first: true\n", written), encoding="utf-8")
    got = imported(TOOL, path, num_processes=8)
    assert got.recipe["train"]["eval_at_start"] is bool(first)  # left out: TrainConfig's eval_first = False
    if first is None:
        assert ("eval_first", "no evaluation before the first batch") in got.result.draft.defaults
        assert re.search(r"eval_at_start = false +# default of llm-foundry 0.21.0 for `eval_first`", got.result.text)
    else:
        assert "eval_first" in got.exact
        assert re.search(rf"eval_at_start = {str(first).lower()} +# eval_first\n", got.result.text)  # the comments of a table align


def test_eval_first_left_out_without_an_eval_loader_writes_nothing(tmp_path, imported):
    text = (CONFIGS / "llama-scratch.yaml").read_text(encoding="utf-8")
    assert "\neval_first: false\n" in text and "eval_loader" not in text
    path = tmp_path / "scratch.yaml"
    path.write_text(text.replace("eval_first: false\n", ""), encoding="utf-8")
    got = imported(TOOL, path, num_processes=8)
    assert "eval_at_start" not in got.recipe["train"]
    assert not any(key == "eval_first" for key, _ in got.result.draft.defaults)


def test_lora_defaults_of_peft(tmp_path, imported):
    text = (CONFIGS / "lora-llama-3-8b_dolly.yaml").read_text()
    text = text.replace("    lora_alpha: 128\n", "").replace("    lora_dropout: 0.05\n", "")
    path = tmp_path / "lora-defaults.yaml"
    path.write_text(text)
    got = imported(TOOL, path, num_processes=8)
    assert got.recipe["peft"]["alpha"] == 8 and got.recipe["peft"]["dropout"] == 0.0
    assert ("model.peft_config.lora_alpha", "LoraConfig's lora_alpha = 8") in got.result.draft.defaults


def test_defaults_for_left_out_keys(tmp_path, imported):
    path = tmp_path / "bare.yaml"
    path.write_text(
        "model:\n  name: hf_causal_lm\n  pretrained_model_name_or_path: gpt2\ntokenizer:\n  name: gpt2\n"
        "optimizer:\n  name: decoupled_adamw\nscheduler:\n  name: cosine_with_warmup\n  t_warmup: 10ba\n"
        "train_loader:\n  name: finetuning\n  dataset:\n    hf_name: mosaicml/dolly_hhrlhf\n    split: train\n"
        "    max_seq_len: 512\n  num_workers: 0\nmax_duration: 100ba\nmax_seq_len: 512\nglobal_train_batch_size: 8\n"
    )
    got = imported(TOOL, path)
    r = got.recipe
    assert r["optim"]["lr"] == 1e-3 and r["optim"]["betas"] == [0.9, 0.95] and r["optim"]["eps"] == 1e-8
    assert r["optim"]["weight_decay"] == pytest.approx(1e-5 / 1e-3)  # DecoupledAdamW's 1e-5, as torch's
    assert r["optim"]["grad_clip"] == 0.0  # no gradient_clipping algorithm
    assert r["schedule"]["min_lr_ratio"] == 0.0  # alpha_f = 0.0
    assert r["recipe"]["seed"] == 17
    assert r["launch"]["mixed_precision"] == "bf16"
    assert r["train"]["micro_batch_size"] == 8  # auto: the whole per-device batch
    assert "launch" in r and "strategy" not in r["launch"]


def composer_cosine_with_warmup(t: int, t_warmup: int, t_max: int, alpha_f: float) -> float:
    """composer.optim.scheduler.CosineAnnealingWithWarmupScheduler.__call__ at batch t (Composer 0.31)."""
    if t < t_warmup:  # LinearScheduler(alpha_i=0.0, alpha_f=1.0, t_max=t_warmup)
        return 0.0 + min(1.0, t / t_warmup) * (1.0 - 0.0)
    frac = (t - t_warmup) / (t_max - t_warmup) if t_max > t_warmup else 0.0
    frac = min(1.0, frac)
    return alpha_f + (1.0 - alpha_f) * (1 + math.cos(frac * math.pi)) / 2  # _cosine_anneal


def composer_linear_with_warmup(t: int, t_warmup: int, t_max: int, alpha_f: float) -> float:
    """LinearWithWarmupScheduler (alpha_i = 1.0) at batch t."""
    if t < t_warmup:
        return min(1.0, t / t_warmup)
    frac = min(1.0, (t - t_warmup) / (t_max - t_warmup)) if t_max > t_warmup else 0.0
    return 1.0 + frac * (alpha_f - 1.0)


@pytest.mark.parametrize(
    ("fixture", "oracle", "steps", "warmup", "alpha_f"),
    [
        ("mpt-125m.yaml", composer_cosine_with_warmup, 4800, 100, 0.1),
        ("llama-scratch.yaml", composer_cosine_with_warmup, 20000, 200, 0.1),  # t_warmup 0.01dur
        ("llama-3-8b_domain_adapt.yaml", composer_cosine_with_warmup, 3195, 100, 0.1),
    ],
)
def test_lr_matches_composer_at_every_step(imported, fixture, oracle, steps, warmup, alpha_f):
    """Composer steps its LambdaLR after every batch: the update at batch t uses lr * f(t),
    with f(0) = 0 (the warmup starts at 0), as recipec's multiplier at step t."""
    got = imported(TOOL, CONFIGS / fixture, num_processes=8)
    plan, _ = plan_recipe(got.path, ())
    ours = runtime.values(plan["schedule_phases"], steps)
    expected = [oracle(t, warmup, steps, alpha_f) for t in range(steps)]
    assert ours[0] == 0.0
    assert ours == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_linear_decay_matches_composer(tmp_path, imported):
    text = (CONFIGS / "mpt-7b_dolly_sft.yaml").read_text().replace("max_duration: 2ep", "max_duration: 1000ba")
    path = tmp_path / "dolly-steps.yaml"
    path.write_text(text)
    got = imported(TOOL, path, num_processes=8)
    plan, _ = plan_recipe(got.path, ())
    ours = runtime.values(plan["schedule_phases"], 1000)
    assert ours == pytest.approx([composer_linear_with_warmup(t, 50, 1000, 0.0) for t in range(1000)], rel=1e-12, abs=1e-15)


def test_warmup_longer_than_the_run(tmp_path, imported):
    """The shipped pretrain/hf-llama-3.1-8B.yaml runs 50ba with t_warmup 100ba: Composer's LR
    rises as t / 100 for the whole run. recipec's shorthand refuses a warmup that long; one
    linear phase gives the same LR at every step."""
    text = (CONFIGS / "llama-scratch.yaml").read_text()
    text = text.replace("max_duration: 20000ba", "max_duration: 50ba").replace("t_warmup: 0.01dur", "t_warmup: 100ba")
    path = tmp_path / "short.yaml"
    path.write_text(text)
    got = imported(TOOL, path, num_processes=8)
    assert got.recipe["schedule"] == {"phases": [{"name": "warmup", "shape": "linear", "start": 0.0, "end": 0.5, "steps": 50}]}
    plan, _ = plan_recipe(got.path, ())
    ours = runtime.values(plan["schedule_phases"], 50)
    assert ours == pytest.approx([composer_cosine_with_warmup(t, 100, 50, 0.1) for t in range(50)], rel=1e-12, abs=1e-15)
    assert got.dropped["scheduler.alpha_f"] == "ignored-by-tool"
    assert any("not shorter than max_duration" in m for m, _ in got.result.draft.warnings)


def test_mapping_breaks_the_oracle_when_wrong(imported, monkeypatch):
    """The step-by-step check fails when the warmup is mapped one step off."""
    import recipec.importers.llm_foundry as lf

    got = imported(TOOL, CONFIGS / "mpt-125m.yaml", num_processes=8)
    text = got.path.read_text().replace("warmup = 100 ", "warmup = 101 ")
    got.path.write_text(text)
    plan, _ = plan_recipe(got.path, ())
    ours = runtime.values(plan["schedule_phases"], 4800)
    assert ours != pytest.approx([composer_cosine_with_warmup(t, 100, 4800, 0.1) for t in range(4800)], rel=1e-9)
    assert lf.VERSION == "llm-foundry 0.21.0"


def test_interpolations_resolve_and_variables_follow_their_users():
    from recipec.importers.core import Draft
    from recipec.importers.llm_foundry import _Resolver

    res = _Resolver({"variables": {"a": 3, "b": "${variables.a}"}, "x": "${variables.b}", "y": "n${variables.a}k", "z": "${oc.env:HOME}"})
    assert res.resolve("x", "${variables.b}") == 3
    assert res.refs["x"] == {"variables.b", "variables.a"}
    assert res.resolve("y", "n${variables.a}k") == "n3k"
    assert res.resolve("z", "${oc.env:HOME}") == "${oc.env:HOME}"
    assert Draft  # imported for the type only


def test_a_reference_to_a_key_the_file_lacks_is_refused_at_its_line(tmp_path):
    """OmegaConf stops on `${variables.x}` when the file has no `variables.x`
    (InterpolationKeyError), so llm-foundry never starts: an error at the referring key."""
    text = (CONFIGS / "mpt-125m.yaml").read_text()
    assert "${variables.global_seed}" in text
    path = tmp_path / "dangling.yaml"
    path.write_text(text.replace("  global_seed: 17\n", ""))
    with pytest.raises(RecipeError) as err:
        import_config(path, TOOL, Options(name="d"))
    refs = {d.message.split("`")[1]: d for d in err.value.diagnostics if "refers to" in d.message}
    # each of the three keys that refer to it, at its own line
    assert set(refs) == {"seed", "train_loader.dataset.shuffle_seed", "eval_loader.dataset.shuffle_seed"}
    assert refs["seed"].message.startswith("`seed` refers to `${variables.global_seed}`, which the file does not set")
    assert refs["seed"].location.source_line.startswith("seed: ${variables.global_seed}")


def test_unreferenced_variable_is_warned(tmp_path, imported):
    text = (CONFIGS / "mpt-125m.yaml").read_text().replace("  global_seed: 17\n", "  global_seed: 17\n  unused_lr: 0.1\n")
    path = tmp_path / "unused.yaml"
    path.write_text(text)
    got = imported(TOOL, path, num_processes=8)
    assert got.dropped["variables.unused_lr"] == "ignored-by-tool"
    assert any("variables.unused_lr" in m for m, _ in got.result.draft.warnings)


def test_fsdp_on_one_process_is_ignored_and_warned(imported):
    got = imported(TOOL, CONFIGS / "mpt-125m.yaml")  # num_processes 1
    assert got.dropped["fsdp_config.sharding_strategy"] == "ignored-by-tool"
    assert "strategy" not in got.recipe["launch"]
    assert any("fsdp_config" in m for m, _ in got.result.draft.warnings)


def test_max_seq_len_contradiction_is_warned(tmp_path, imported):
    text = (CONFIGS / "mpt-7b_dolly_sft.yaml").read_text().replace("max_seq_len: ${variables.max_seq_len}\nrun_name", "max_seq_len: 1024\nrun_name")
    path = tmp_path / "seq.yaml"
    path.write_text(text)
    got = imported(TOOL, path, num_processes=8)
    assert got.dropped["max_seq_len"] == "ignored-by-tool"
    assert any("max_seq_len (1024)" in m for m, _ in got.result.draft.warnings)
    assert got.recipe["data"]["seq_len"] == 2048


def test_computed_batch_keys_are_warned(tmp_path, imported):
    text = (CONFIGS / "mpt-125m.yaml").read_text() + "device_train_batch_size: 4\n"
    path = tmp_path / "dtbs.yaml"
    path.write_text(text)
    got = imported(TOOL, path, num_processes=8)
    assert got.dropped["device_train_batch_size"] == "ignored-by-tool"
    assert any("device_train_batch_size" in m for m, _ in got.result.draft.warnings)


def test_indivisible_global_batch_is_warned(tmp_path, imported):
    got = imported(TOOL, CONFIGS / "mpt-7b_dolly_sft.yaml", num_processes=1)
    assert not any("divisible" in m for m, _ in got.result.draft.warnings)
    got = import_config(CONFIGS / "mpt-7b_dolly_sft.yaml", TOOL, Options(name="x", num_processes=5))
    assert any("not divisible by the 5 processes" in m for m, _ in got.draft.warnings)


def test_unknown_key_names_file_line_and_key(tmp_path):
    """The shipped 1b_local_data_sft.yaml keeps a `dataset` table at the top level, which
    TrainConfig refuses ("Unused parameters ['dataset'] found in cfg")."""
    path = tmp_path / "shipped.yaml"
    path.write_text("variables:\n  max_seq_len: 2048\ndataset:\n  hf_name: json\nmax_duration: 1ep\nglobal_train_batch_size: 8\n")
    with pytest.raises(RecipeError) as info:
        import_config(path, TOOL)
    (diag,) = info.value.diagnostics
    assert "unknown key `dataset`" in diag.message  # the table once, not each of its keys
    assert diag.location.line == 3 and diag.location.file.endswith("shipped.yaml")


def test_loggers_become_trackers(tmp_path, imported):
    text = (CONFIGS / "mpt-125m.yaml").read_text() + "loggers:\n  wandb:\n    project: mpt\n  inmemory: {}\n"
    path = tmp_path / "loggers.yaml"
    path.write_text(text)
    got = imported(TOOL, path, num_processes=8)
    assert got.recipe["output"]["trackers"] == ["wandb"]
    assert "loggers.wandb.project" in got.approx
    assert got.dropped["loggers.inmemory"] == "not-for-training"


def test_unknown_optimizer_key_is_an_error(tmp_path):
    text = (CONFIGS / "mpt-125m.yaml").read_text().replace("  weight_decay: 0.0", "  weight_decya: 0.0")
    path = tmp_path / "typo.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        import_config(path, TOOL)
    (diag,) = info.value.diagnostics
    assert "unknown key `optimizer.weight_decya`" in diag.message
    assert diag.help and "optimizer.weight_decay" in diag.help
    assert diag.location.line == text.splitlines().index("  weight_decya: 0.0") + 1


def test_markers_detect_an_llm_foundry_config():
    config = read_config(CONFIGS / "mpt-125m.yaml")
    hits = detect(config).get(TOOL, [])
    assert len(hits) >= 2 and {"max_duration", "global_train_batch_size", "train_loader"} <= set(hits)


@pytest.mark.parametrize("other", ["axolotl", "llama-factory", "torchtune", "litgpt", "transformers"])
def test_another_tool_is_told_it_is_an_llm_foundry_config(other):
    if other not in importers.TOOLS:
        pytest.skip(f"the {other} importer is not here")
    with pytest.raises(RecipeError) as info:
        import_config(CONFIGS / "mpt-125m.yaml", other)
    assert "looks like a llm-foundry config" in info.value.diagnostics[0].message


def test_written_text_parses():
    got = import_config(CONFIGS / "mpt-125m.yaml", TOOL, Options(name="mpt-125m", num_processes=8))
    assert tomllib.loads(got.text)["recipe"]["name"] == "mpt-125m"


def test_a_scheduler_that_cannot_be_imported_is_warned_and_none_is_constant(tmp_path, imported):
    text = (CONFIGS / "mpt-125m.yaml").read_text(encoding="utf-8")
    assert "name: cosine_with_warmup" in text
    (tmp_path / "inv.yaml").write_text(text.replace("name: cosine_with_warmup", "name: inv_sqrt_with_warmup"), encoding="utf-8")
    got = imported(TOOL, tmp_path / "inv.yaml", num_processes=8)
    assert any("inv_sqrt_with_warmup" in msg and "cannot be imported" in msg for msg, _ in got.result.draft.warnings)
    assert got.dropped["scheduler.name"] == "missing-feature"
    import yaml

    data = yaml.safe_load(text)
    del data["scheduler"]
    (tmp_path / "none.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    got = imported(TOOL, tmp_path / "none.yaml", num_processes=8)
    assert got.recipe["schedule"]["decay"] == "constant" and got.recipe["schedule"]["warmup"] == 0


# -- the device mesh: tp_config and the FSDP config's data-parallel degrees ---------------------

ADAPT = CONFIGS / "llama-3-8b_domain_adapt.yaml"


def _adapt(tmp_path: Path, extra: str, fsdp_extra: str = "") -> Path:
    text = ADAPT.read_text(encoding="utf-8")
    text = text.replace("  limit_all_gathers: true\n", "  limit_all_gathers: true\n" + fsdp_extra) + extra
    path = tmp_path / "adapt-tp.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_tp_config(tmp_path, imported):
    path = _adapt(tmp_path, "tp_config:\n  strategy: ffn\n  tensor_parallel_degree: 2\n")
    got = imported("llm-foundry", path, num_processes=16, files=["my-adaptation-data/index.json"])
    launch = got.recipe["launch"]
    assert launch["parallelism"] == {"tp_size": 2}
    assert launch["num_processes"] == 16 and launch["strategy"] == "fsdp" and launch["fsdp"]["version"] == 2
    assert got.recipe["train"]["batch_size"] == 512  # 1024 device samples, tensor-parallel pairs share theirs
    assert got.recipe["train"]["micro_batch_size"] == 8
    assert {"tp_config.tensor_parallel_degree", "tp_config.strategy", "global_train_batch_size"} <= got.approx


def test_tp_config_raises_the_processes(tmp_path, imported):
    path = _adapt(tmp_path, "tp_config:\n  strategy: ffn\n  tensor_parallel_degree: 4\n")
    got = imported("llm-foundry", path, num_processes=2, files=["my-adaptation-data/index.json"])
    assert got.recipe["launch"]["num_processes"] == 4
    assert got.recipe["train"]["batch_size"] == 256
    assert any("launch.num_processes is 4, not the 2" in w for w, _ in got.result.draft.warnings)


def test_fsdp_data_parallel_degrees(tmp_path, imported):
    path = _adapt(tmp_path, "", "  data_parallel_shard_degree: 8\n  data_parallel_replicate_degree: 2\n")
    got = imported("llm-foundry", path, num_processes=16, files=["my-adaptation-data/index.json"])
    launch = got.recipe["launch"]
    assert launch["parallelism"] == {"dp_replicate_size": 2} and launch["num_processes"] == 16
    assert launch["fsdp"]["version"] == 2
    assert got.recipe["train"]["batch_size"] == 1024  # every rank is data-parallel
    assert {"fsdp_config.data_parallel_shard_degree", "fsdp_config.data_parallel_replicate_degree"} <= got.exact


def test_tp_config_of_an_mpt_model_is_not_imported(tmp_path, imported):
    text = (CONFIGS / "mpt-125m.yaml").read_text(encoding="utf-8") + "tp_config:\n  strategy: ffn\n  tensor_parallel_degree: 2\n"
    path = tmp_path / "mpt-tp.yaml"
    path.write_text(text, encoding="utf-8")
    result = import_config(path, "llm-foundry", Options(name="mpt-tp", num_processes=8))
    assert result.draft.ledger["tp_config.tensor_parallel_degree"].reason == "missing-feature"
    assert "parallelism" not in tomllib.loads(result.text)["launch"]


# -- MDS (mosaicml-streaming) datasets -----------------------------------------------------

MDS_FIXTURES = Path(__file__).resolve().parent.parent / "data" / "mds"


def _mpt(tmp_path, old: str = "", new: str = "", name: str = "mds.yaml") -> Path:
    path = tmp_path / name
    path.write_text((CONFIGS / "mpt-125m.yaml").read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    return path


@pytest.mark.parametrize(("fixture", "dtype"), [("tokens", None), ("tokens_bytes", "int64")])
def test_shards_of_token_ids_are_a_token_source_of_the_tokenizer(tmp_path, imported, fixture, dtype):
    import shutil

    shutil.rmtree(tmp_path / "my-copy-c4" / "train")
    shutil.copytree(MDS_FIXTURES / fixture, tmp_path / "my-copy-c4" / "train")
    got = imported(TOOL, CONFIGS / "mpt-125m.yaml", num_processes=8)
    source = got.recipe["data"]["sources"][0]
    want = {"path": "./my-copy-c4/train", "format": "mds", "records": "tokens", "tokenizer": "EleutherAI/gpt-neox-20b"}
    assert source == (want if dtype is None else {**want, "token_dtype": dtype})


def test_a_local_copy_of_a_remote_dataset_is_read_and_the_remote_is_not(tmp_path, imported):
    path = _mpt(tmp_path, "  data_remote:  # If blank", "  data_remote: s3://bucket/c4  # If blank")
    got = imported(TOOL, path, num_processes=8)
    assert got.recipe["data"]["sources"][0] == {"path": "./my-copy-c4/train", "format": "mds"}
    assert got.dropped["train_loader.dataset.remote"] == MDS
    assert "copy them there from s3://bucket/c4 first" in got.result.draft.ledger["train_loader.dataset.remote"].why


def test_a_remote_dataset_without_a_local_copy_is_not_imported(tmp_path, imported):
    path = _mpt(tmp_path, "  data_local: ./my-copy-c4\n  data_remote:  # If blank", "  data_local:\n  data_remote: s3://bucket/c4  # If blank")
    got = imported(TOOL, path, num_processes=8)
    assert got.recipe["data"]["sources"] == [{"builtin": "python-docs"}]  # a placeholder, said in a warning
    for key in ("local", "remote", "split", "shuffle_seed"):
        assert got.dropped[f"train_loader.dataset.{key}"] == MDS
    assert "no local copy" in got.result.draft.ledger["train_loader.dataset.remote"].why
    assert any("MDS shards with no local copy (s3://bucket/c4)" in m for m, _ in got.result.draft.warnings)


def test_shuffle_seed_is_streaming_s_own_shuffle_approximately(imported):
    got = imported(TOOL, CONFIGS / "mpt-125m.yaml", num_processes=8)
    assert "train_loader.dataset.shuffle_seed" in got.approx and got.recipe["data"]["seed"] == 17
    assert "py1e" in got.result.draft.ledger["train_loader.dataset.shuffle_seed"].why
    assert got.dropped["eval_loader.dataset.shuffle_seed"] == "ignored-by-tool"  # shuffle: false


def test_a_streaming_finetuning_dataset_is_prompt_completion_mds(tmp_path, imported):
    import shutil

    text = (CONFIGS / "mpt-7b_dolly_sft.yaml").read_text(encoding="utf-8")
    start = text.index("train_loader:\n")
    block = text[start : text.index("\n\n", start)]
    dataset = block[block.index("    hf_name:") : block.index("    max_seq_len:")]
    path = tmp_path / "ft.yaml"
    path.write_text(text.replace(block, block.replace(dataset, "    local: ./ft\n    split: train\n")), encoding="utf-8")
    shutil.copytree(MDS_FIXTURES / "finetuning", tmp_path / "ft")
    got = imported(TOOL, path, num_processes=8)
    source = got.recipe["data"]["sources"][0]
    assert {k: source[k] for k in ("path", "format", "records", "fields")} == {
        "path": "./ft/train", "format": "mds", "records": "prompt_completion", "fields": {"completion": "response"},
    }  # fmt: skip
    assert "train_loader.dataset.local" not in got.dropped and "train_loader.dataset.split" not in got.dropped


def _finetuning_mds(tmp_path, fixture: str, targets: str = "") -> Path:
    """mpt-7b_dolly_sft.yaml with its train_loader reading the local MDS copy ./ft/train (the fixture `fixture`)."""
    import shutil

    text = (CONFIGS / "mpt-7b_dolly_sft.yaml").read_text(encoding="utf-8")
    start = text.index("train_loader:\n")
    block = text[start : text.index("\n\n", start)]
    dataset = block[block.index("    hf_name:") : block.index("    max_seq_len:")]
    path = tmp_path / "ft.yaml"
    path.write_text(text.replace(block, block.replace(dataset, "    local: ./ft\n    split: train\n" + targets)), encoding="utf-8")
    shutil.copytree(MDS_FIXTURES / fixture, tmp_path / "ft")
    return path


@pytest.mark.parametrize(
    ("targets", "train_on"),
    [
        ("", "last_assistant"),  # llm-foundry's defaults: target_prompts none, target_responses last
        ("    target_responses: all\n", "assistant"),
        ("    target_prompts: all\n    target_responses: all\n", "all"),
    ],
)
def test_chat_shards_are_messages_examples_supervised_as_the_targets_say(tmp_path, imported, targets, train_on):
    got = imported(TOOL, _finetuning_mds(tmp_path, "chat", targets), num_processes=8)
    source = got.recipe["data"]["sources"][0]
    assert {k: source.get(k) for k in ("path", "format", "records", "fields", "train_on")} == {
        "path": "./ft/train", "format": "mds", "records": "messages", "fields": None, "train_on": train_on,
    }  # fmt: skip
    for key in ("target_prompts", "target_responses"):
        assert f"train_loader.dataset.{key}" not in got.approx and f"train_loader.dataset.{key}" not in got.dropped


def test_chat_shards_with_prompts_by_length_are_approximate(tmp_path, imported):
    got = imported(TOOL, _finetuning_mds(tmp_path, "chat", "    target_prompts: length\n"), num_processes=8)
    assert got.recipe["data"]["sources"][0]["train_on"] == "all"
    assert "train_loader.dataset.target_prompts" in got.approx


def test_shards_of_tokenized_turns_are_not_imported(tmp_path, imported):
    path = _finetuning_mds(tmp_path, "chat")
    index = tmp_path / "ft" / "train" / "index.json"
    index.write_text(index.read_text(encoding="utf-8").replace('"messages"', '"turns"'), encoding="utf-8")
    got = imported(TOOL, path, num_processes=8)
    assert got.recipe["data"]["sources"][0] == {"builtin": "python-docs"}  # a placeholder, said in a warning
    assert got.dropped["train_loader.dataset.local"] == MDS
    assert "tokenized turns" in got.result.draft.ledger["train_loader.dataset.local"].why
    assert any("hold tokenized turns, which recipec does not read" in m for m, _ in got.result.draft.warnings)


def test_validate_hash_is_what_recipec_always_does(tmp_path, imported):
    """recipec checks every hash index.json lists as it reads a shard: streaming's validate_hash picks one of them."""
    got = imported(TOOL, _finetuning_mds(tmp_path, "chat", "    validate_hash: xxh64\n"), num_processes=8)
    assert "train_loader.dataset.validate_hash" in got.exact


@pytest.mark.parametrize(
    ("setting", "width", "how"),
    [
        ("    allow_pad_trimming: false\n", 2048, "exact"),  # every batch padded to max_seq_len
        ("", 2048, "default"),  # the collator's default: allow_pad_trimming false
        ("    allow_pad_trimming: true\n", 8, "approx"),  # the first batch max_seq_len, then trimmed to a multiple of 8
        ("    allow_pad_trimming: true\n    pad_to_longest: true\n", None, "exact"),  # the longest row: recipec's own default
    ],
)
def test_the_collator_s_padding_is_pad_to_multiple_of(tmp_path, imported, setting, width, how):
    text = (CONFIGS / "mpt-7b_dolly_sft.yaml").read_text(encoding="utf-8")
    start = text.index("train_loader:\n")
    block = text[start : text.index("\n\n", start)]
    path = tmp_path / "pad.yaml"
    path.write_text(text.replace(block, block.replace("    allow_pad_trimming: false\n", setting)), encoding="utf-8")
    got = imported(TOOL, path, num_processes=8)
    assert got.recipe["data"].get("pad_to_multiple_of") == width
    key = "train_loader.dataset.allow_pad_trimming"
    if how == "approx":
        assert key in got.approx and "trims every later one" in got.result.draft.ledger[key].why
    elif how == "exact":
        assert key in got.exact
    else:
        assert any(k == key for k, _ in got.result.draft.defaults)


def test_dist_timeout_is_the_collective_timeout(imported):
    """dist_timeout (seconds, Composer's process group timeout) -> launch.collective_timeout_minutes, exactly."""
    for name, minutes in (("llama-scratch.yaml", 100), ("lora-llama-3-8b_dolly.yaml", 60)):
        got = imported("llm-foundry", name)
        assert got.recipe["launch"]["collective_timeout_minutes"] == minutes
        assert got.result.draft.ledger["dist_timeout"].how == "exact"


@pytest.mark.parametrize(
    ("changes", "save_every", "eval_every"),
    [
        ({"eval_interval": "1ep"}, 1000, "1 epoch"),  # at each epoch's end (Composer's EPOCH_END)
        ({"save_interval": "2ep", "max_duration": "6ep"}, "2 epochs", 500),
        ({"save_interval": "1ep", "eval_interval": "3ep", "max_duration": "3ep"}, "1 epoch", 0),  # once, at the end
    ],
)
def test_intervals_in_epochs(imported, tmp_path, changes, save_every, eval_every):
    import yaml

    data = yaml.safe_load((CONFIGS / "llama-3-8b_domain_adapt.yaml").read_text())
    data.update(changes)
    path = tmp_path / "adapt.yaml"
    path.write_text(yaml.safe_dump(data))
    got = imported(TOOL, path, num_processes=8)
    assert (got.recipe["train"]["save_every"], got.recipe["train"]["eval_every"]) == (save_every, eval_every)
    assert {"save_interval", "eval_interval"} & set(changes) <= set(got.exact)


# -- several streams ---------------------------------------------------------------------------

STREAMS = """\
    streams:
      web:
        local: ./streams/web
{web}
      code:
        local: ./streams/code
        remote: s3://bucket/code
{code}
      books:
        local: ./streams/books
        split: all
{books}
"""


def _streams(tmp_path, web: str = "", code: str = "", books: str = "") -> Path:
    """mpt-125m with its train_loader reading three local streams (the token shards of tests/data/mds/tokens, 30
    samples each); `books` has its own split, the others take the dataset's (`train`)."""
    import shutil

    for directory in ("streams/web/train", "streams/code/train", "streams/books/all"):
        shutil.copytree(MDS_FIXTURES / "tokens", tmp_path / directory)
    text = STREAMS.format(web=web, code=code, books=books)
    return _mpt(tmp_path, "    local: ${variables.data_local}\n    remote: ${variables.data_remote}\n    split: train\n    shuffle: true",
                "    split: train\n" + text.rstrip("\n") + "\n    shuffle: true", name="streams.yaml")


def _sources(got) -> list[tuple[str, float | None]]:
    return [(s["path"], s.get("weight")) for s in got.recipe["data"]["sources"] if s.get("split") != "eval"]


def test_streams_without_shares_are_sources_in_their_natural_shares(tmp_path, imported):
    got = imported(TOOL, _streams(tmp_path), num_processes=8)
    assert _sources(got) == [("./streams/web/train", None), ("./streams/code/train", None), ("./streams/books/all", None)]
    first = got.recipe["data"]["sources"][0]
    assert first["format"] == "mds" and first["records"] == "tokens" and first["tokenizer"] == "EleutherAI/gpt-neox-20b"
    assert got.dropped["train_loader.dataset.streams.code.remote"] == MDS
    assert "train_loader.dataset.streams.web.local" not in got.dropped and "train_loader.dataset.streams.books.split" not in got.dropped


def test_stream_proportions_are_weights(tmp_path, imported):
    got = imported(TOOL, _streams(tmp_path, "        proportion: 0.5", "        proportion: 0.3", "        proportion: 0.2"), num_processes=8)
    assert _sources(got) == [("./streams/web/train", 0.5), ("./streams/code/train", 0.3), ("./streams/books/all", 0.2)]
    assert "train_loader.dataset.streams.web.proportion" in got.approx
    assert "recipec tokens" in got.result.draft.ledger["train_loader.dataset.streams.web.proportion"].why


def test_stream_repeats_weigh_the_samples_of_each_streams_index(tmp_path, imported):
    """repeat multiplies a stream's samples (30 in each fixture's index.json); a stream without it repeats once;
    choose is a number of samples."""
    got = imported(TOOL, _streams(tmp_path, "        repeat: 2", "", "        choose: 45"), num_processes=8)
    assert _sources(got) == [("./streams/web/train", 60.0), ("./streams/code/train", 30.0), ("./streams/books/all", 45.0)]


def test_streams_whose_shares_cannot_be_computed_are_left_unweighted_and_said(tmp_path, imported):
    import shutil

    path = _streams(tmp_path, "        repeat: 2")
    shutil.rmtree(tmp_path / "streams" / "code")  # not here: its samples cannot be counted (nor validated)
    (tmp_path / "streams" / "code" / "train").mkdir(parents=True)
    (tmp_path / "streams" / "code" / "train" / "index.json").write_text('{"version": 2}')
    got = imported(TOOL, path, num_processes=8)
    assert [w for _, w in _sources(got)] == [None, None, None]
    assert got.dropped["train_loader.dataset.streams.web.repeat"] == MDS
    assert any("code (its local index.json cannot be read here" in m for m, _ in got.result.draft.warnings)


def test_a_stream_without_a_local_copy_is_left_out_and_said(tmp_path, imported):
    path = _streams(tmp_path)
    path.write_text(path.read_text().replace("        local: ./streams/code\n", ""))
    got = imported(TOOL, path, num_processes=8)
    assert _sources(got) == [("./streams/web/train", None), ("./streams/books/all", None)]
    assert got.dropped["train_loader.dataset.streams.code.remote"] == MDS
    assert any("stream code has no local copy (s3://bucket/code)" in m for m, _ in got.result.draft.warnings)


def test_the_datasets_own_local_is_ignored_beside_streams(tmp_path, imported):
    path = _streams(tmp_path)
    path.write_text(path.read_text().replace("    split: train\n    streams:", "    local: ./my-copy-c4\n    split: train\n    streams:"))
    got = imported(TOOL, path, num_processes=8)
    assert got.dropped["train_loader.dataset.local"] == "ignored-by-tool"
    assert "./my-copy-c4/train" not in [p for p, _ in _sources(got)]
