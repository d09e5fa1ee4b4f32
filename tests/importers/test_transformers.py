"""`recipec import --from transformers`: TrainingArguments saved as JSON."""

from __future__ import annotations

import re

import json
from pathlib import Path

import pytest

from recipec.diagnostics import RecipeError
from recipec.importers import Options, import_config
from recipec.importers.core import read_config

CONFIGS = Path(__file__).resolve().parent / "configs"

NFT = "not-for-training"

EXPECTED = {
    # a full `to_json_string()` dump of transformers 5.25 for the run_clm.py README command
    "run-clm-wikitext.json": {
        "approx": {
            "dataloader_drop_last",
            "eval_strategy",
            "eval_steps",
        },
        "dropped": {
            "train_sampling_strategy": "no-equivalent",
            "average_tokens_across_devices": "no-equivalent",
            "accelerator_config.even_batches": "no-equivalent",
            "accelerator_config.use_seedable_sampler": "no-equivalent",
            "dataloader_in_order": "no-equivalent",
            "hub_token": NFT,
            "logging_nan_inf_filter": NFT,
            "length_column_name": NFT,
            "log_level": NFT,
            "logging_strategy": NFT,
            "log_level_replica": NFT,
            "do_train": NFT,
            "hub_strategy": NFT,
            "eval_do_concat_batches": NFT,
            "log_on_each_node": NFT,
            "project": NFT,
            "remove_unused_columns": NFT,
            "do_eval": NFT,
            "skip_memory_metrics": NFT,
            "local_rank": NFT,
        },
    },
    # stanford_alpaca's README command (torchrun on 4 GPUs, FSDP), as a 4.x args file
    "stanford-alpaca.json": {
        "approx": {"evaluation_strategy", "fsdp_transformer_layer_cls_to_wrap"},
        "dropped": {"logging_dir": NFT, "do_train": NFT},
    },
    # a SmolLM-style pretraining run with transformers' warmup_stable_decay
    "smollm-wsd-pretrain.json": {
        "approx": {"eval_strategy", "eval_steps"},
        "dropped": {"num_train_epochs": "ignored-by-tool", "hub_model_id": NFT, "run_name": NFT, "push_to_hub": NFT},
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_imports_with_the_expected_ledger(imported, name):
    got = _import(imported, name)
    want = EXPECTED[name]
    assert got.approx == want["approx"]
    assert got.dropped == want["dropped"]
    everything = set(read_config(CONFIGS / "transformers" / name).leaves())
    assert got.exact == everything - want["approx"] - set(want["dropped"])


def _import(imported, name):
    return imported("transformers", name, model="org/model", data="org/data", num_processes=4 if "alpaca" in name else 1)


def test_alpaca_values(imported):
    r = _import(imported, "stanford-alpaca.json").recipe
    assert r["train"] == {"epochs": 3, "micro_batch_size": 4, "batch_size": 128, "eval_micro_batch_size": 4, "log_every": 1, "eval_every": 0, "save_every": 2000, "keep_last": 1}
    assert r["schedule"] == {"warmup": 0.03, "decay": "cosine", "min_lr_ratio": 0.0}
    assert r["optim"] == {"name": "adamw", "implementation": "auto", "lr": 2e-5, "weight_decay": 0.0, "grad_clip": 1.0, "betas": [0.9, 0.999], "eps": 1e-8}
    assert r["launch"] == {"mixed_precision": "bf16", "tf32": True, "strategy": "fsdp", "num_processes": 4, "fsdp": {"sharding_strategy": "full_shard"}}
    assert r["recipe"]["seed"] == 42  # transformers' default, written
    assert r["data"]["eval_fraction"] == 0.0  # the Trainer trains on all of its train dataset


def test_wsd_values_and_the_ignored_epochs(imported):
    got = _import(imported, "smollm-wsd-pretrain.json")
    r = got.recipe
    assert r["schedule"] == {"warmup": 2000, "decay": "wsd", "min_lr_ratio": 0.0, "cooldown": 4000, "cooldown_shape": "1-sqrt"}
    assert r["train"]["max_steps"] == 20000 and "epochs" not in r["train"]
    assert r["optim"]["betas"] == [0.9, 0.95] and r["optim"]["implementation"] == "fused"
    assert any("num_train_epochs" in msg for msg, _ in got.result.draft.warnings)
    assert "# ~ eval_strategy" not in got.result.text  # the comment of a mapped line names its keys
    assert "max_steps = 20000" in got.result.text and "# max_steps" in got.result.text


def test_header_lists_what_was_not_imported_and_the_defaults(imported):
    text = _import(imported, "stanford-alpaca.json").result.text
    header = text.split("\n\n[recipe]")[0]
    assert "# Keys mapped exactly: 19; approximately: 2; not imported: 2." in header
    assert "`logging_dir: output/alpaca-7b/runs`" in header
    assert "# Defaults of transformers 5.25.0 applied" in header
    assert "`max_grad_norm`" in header and "`seed`" in header


@pytest.mark.parametrize("on_start", [True, False])
def test_eval_on_start_is_eval_at_start(imported, tmp_path, on_start):
    path = _with(tmp_path, "run-clm-wikitext.json", eval_on_start=on_start)
    got = imported("transformers", path, model="org/model", data="org/data")
    assert got.recipe["train"]["eval_at_start"] is on_start
    if on_start:  # the Trainer evaluates again when a run resumes; recipec does not
        assert "eval_on_start" in got.approx and "eval_on_start" not in got.exact
        assert "transformers evaluates again each time a run resumes" in got.result.text
    else:
        assert "eval_on_start" in got.exact
        assert re.search(r"eval_at_start = false +# eval_on_start\n", got.result.text)  # the comments of a table align


def test_eval_on_start_left_out_is_transformers_default_when_the_arguments_evaluate(imported, tmp_path):
    got = _import(imported, "smollm-wsd-pretrain.json")  # eval_strategy "steps", no eval_on_start
    assert got.recipe["train"]["eval_at_start"] is False
    assert ("eval_on_start", "no evaluation before the first step") in got.result.draft.defaults
    assert re.search(r"eval_at_start = false +# default of transformers 5.25.0 for `eval_on_start`", got.result.text)
    # evaluation_strategy "no": the arguments never evaluate, so no line for it
    assert "eval_at_start" not in _import(imported, "stanford-alpaca.json").recipe["train"]


def test_dataloader_worker_settings(imported, tmp_path):
    """dataloader_persistent_workers and dataloader_prefetch_factor -> [data], with workers; without, torch's
    DataLoader refuses them: not imported, with a warning."""
    workers = {"dataloader_num_workers": 4, "dataloader_persistent_workers": True, "dataloader_prefetch_factor": 8}
    got = imported("transformers", _with(tmp_path, "run-clm-wikitext.json", **workers), model="org/model", data="org/data")
    data = got.recipe["data"]
    assert (data["num_workers"], data["persistent_workers"], data["prefetch_factor"]) == (4, True, 8)
    assert {"dataloader_persistent_workers", "dataloader_prefetch_factor"} <= set(got.exact)
    got = imported("transformers", _with(tmp_path, "run-clm-wikitext.json", **{**workers, "dataloader_num_workers": 0}), model="org/model", data="org/data")
    assert "persistent_workers" not in got.recipe["data"] and "prefetch_factor" not in got.recipe["data"]
    assert got.result.draft.ledger["dataloader_prefetch_factor"].how == "dropped"
    assert any("dataloader_num_workers is 0" in m for m, _ in got.result.draft.warnings)


def test_data_seed_is_the_data_s_own_seed(imported, tmp_path):
    got = imported("transformers", _with(tmp_path, "run-clm-wikitext.json", seed=3, data_seed=11), model="org/model", data="org/data")
    assert (got.recipe["recipe"]["seed"], got.recipe["data"]["seed"]) == (3, 11) and "data_seed" in got.exact
    got = imported("transformers", _with(tmp_path, "run-clm-wikitext.json", seed=3, data_seed=None), model="org/model", data="org/data")
    assert "seed" not in got.recipe["data"] and "data_seed" in got.exact  # null: the data follow seed, as in recipec


def test_a_subclass_field_is_an_unknown_key(tmp_path):
    """stanford_alpaca's TrainingArguments subclass adds model_max_length: not transformers'."""
    data = json.loads((CONFIGS / "transformers" / "stanford-alpaca.json").read_text())
    path = tmp_path / "args.json"
    path.write_text(json.dumps({**data, "model_max_length": 512}, indent=2), encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        import_config(path, "transformers", Options(name="args"))
    (d,) = info.value.diagnostics
    assert d.message == "unknown key `model_max_length`: transformers has no such setting"
    line = path.read_text(encoding="utf-8").splitlines().index('  "model_max_length": 512') + 1
    assert d.location.file == path.as_posix() and d.location.line == line


def test_without_model_and_data_the_notes_say_what_to_pass(tmp_path):
    result = import_config(CONFIGS / "transformers" / "smollm-wsd-pretrain.json", "transformers", Options(name="x"))
    assert any("--model" in n for n in result.draft.notes) and any("--data" in n for n in result.draft.notes)


def test_every_field_of_the_installed_training_arguments_is_known():
    """A newer transformers with a new field fails here, not on a user's config."""
    transformers = pytest.importorskip("transformers")
    import dataclasses

    from recipec.importers import hf

    fields = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    assert fields - set(hf.TRAINING_ARGUMENTS) == set()


# -- the device mesh: parallelism_config (accelerate's ParallelismConfig, as to_json writes it) --


def _with(tmp_path, name, **changes):
    data = json.loads((CONFIGS / "transformers" / name).read_text(encoding="utf-8"))
    data.update(changes)
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


PC = {"dp_replicate_size": 1, "dp_shard_size": 2, "tp_size": 2, "cp_size": 1, "cp_backend": "torch", "sp_size": 1, "sp_backend": "deepspeed", "cp_handler": None, "sp_handler": None}


def test_parallelism_config_tensor_parallel(imported, tmp_path):
    path = _with(tmp_path, "stanford-alpaca.json", parallelism_config=PC)
    got = imported("transformers", path, model="org/model", data="org/data", num_processes=4)
    assert got.recipe["launch"]["parallelism"] == {"tp_size": 2}
    assert got.recipe["launch"]["num_processes"] == 4
    assert got.recipe["train"]["batch_size"] == 4 * 8 * 2  # micro x accumulation x (4 processes / tp 2)
    assert {k for k in got.exact if k.startswith("parallelism_config.")} == {f"parallelism_config.{k}" for k in PC}
    # the only warning is the 4.x file's old name, not the mesh's
    assert [keys for _, keys in got.result.draft.warnings] == [("evaluation_strategy",)]


def test_parallelism_config_shard_size_fills_the_world(imported, tmp_path):
    path = _with(tmp_path, "stanford-alpaca.json", parallelism_config={**PC, "dp_shard_size": 4})
    got = imported("transformers", path, model="org/model", data="org/data", num_processes=4)
    assert got.recipe["launch"]["num_processes"] == 8  # dp_shard 4 x tp 2
    assert got.recipe["train"]["batch_size"] == 4 * 8 * 4
    assert any("launch.num_processes is 8, not the 4" in w for w, _ in got.result.draft.warnings)


def test_parallelism_config_context_parallel_under_ddp_is_not_imported(imported, tmp_path):
    path = _with(tmp_path, "run-clm-wikitext.json", parallelism_config={**PC, "tp_size": 1, "dp_shard_size": None, "cp_size": 2})
    got = imported("transformers", path, model="org/model", data="org/data")
    assert got.dropped["parallelism_config.cp_size"] == "missing-feature"
    assert "parallelism" not in got.recipe["launch"]
    assert got.recipe["train"]["batch_size"] == 8  # one process, as given
    assert any("`parallelism_config.cp_size: 2` is not imported" in w for w, _ in got.result.draft.warnings)


def test_tp_size_of_older_transformers(imported, tmp_path):
    path = _with(tmp_path, "run-clm-wikitext.json", tp_size=2)
    got = imported("transformers", path, model="org/model", data="org/data")
    assert got.recipe["launch"]["parallelism"] == {"tp_size": 2}
    assert got.recipe["launch"]["num_processes"] == 2 and got.recipe["train"]["batch_size"] == 8
    path = _with(tmp_path, "run-clm-wikitext.json", tp_size=2)
    got = imported("transformers", path, model="org/model", data="org/data", num_processes=4)
    assert got.dropped["tp_size"] == "missing-feature"  # DDP replicas with tensor parallelism
    assert got.recipe["train"]["batch_size"] == 32


def test_parallelism_config_sequence_parallel_under_deepspeed(imported, tmp_path):
    pc = {**PC, "tp_size": 1, "dp_shard_size": None, "sp_size": 4, "sp_handler": {"sp_seq_length": None, "sp_seq_length_is_variable": True, "sp_attn_implementation": "sdpa"}}
    path = _with(tmp_path, "run-clm-wikitext.json", parallelism_config=pc, deepspeed="ds_config_zero3.json")
    got = imported("transformers", path, model="org/model", data="org/data", num_processes=8)
    launch = got.recipe["launch"]
    assert launch["strategy"] == "deepspeed" and launch["parallelism"] == {"sp_size": 4}
    assert got.recipe["train"]["batch_size"] == 8 * 2  # micro x (8 processes / sp 4)
    assert {
        "parallelism_config.sp_size",
        "parallelism_config.sp_backend",
        "parallelism_config.sp_handler.sp_seq_length_is_variable",
        "parallelism_config.sp_handler.sp_attn_implementation",  # sdpa, the recipe's attention
    } <= got.exact


def test_neftune_noise_alpha(imported, tmp_path):
    """The Trainer's NEFTune -> train.neftune_noise_alpha (the same hook of transformers'); null: exact, no noise."""
    got = imported("transformers", _with(tmp_path, "run-clm-wikitext.json", neftune_noise_alpha=5), model="org/model", data="org/data")
    assert got.recipe["train"]["neftune_noise_alpha"] == 5.0 and "neftune_noise_alpha" in got.exact
    got = _import(imported, "run-clm-wikitext.json")
    assert "neftune_noise_alpha" not in got.recipe["train"] and "neftune_noise_alpha" in got.exact


def test_label_smoothing_factor(imported, tmp_path):
    """The Trainer's LabelSmoother -> loss.label_smoothing (the same loss, tests/runtime/test_loss.py); 0: exact, none."""
    got = imported("transformers", _with(tmp_path, "run-clm-wikitext.json", label_smoothing_factor=0.1), model="org/model", data="org/data")
    assert got.recipe["loss"]["label_smoothing"] == 0.1 and "label_smoothing_factor" in got.exact
    got = _import(imported, "run-clm-wikitext.json")
    assert "loss" not in got.recipe and "label_smoothing_factor" in got.exact


@pytest.mark.parametrize(
    ("changes", "save_every", "eval_every", "approx"),
    [
        ({"save_strategy": "epoch", "evaluation_strategy": "epoch"}, "1 epoch", "1 epoch", set()),
        # a share of the run: ceil(share * max_steps); with 3 epochs, 0.1 of the run is 3/10 of an epoch
        ({"save_steps": 0.1, "evaluation_strategy": "steps", "eval_steps": 0.25}, "3/10 epoch", "3/4 epoch", set()),
        ({"save_steps": 0.1, "max_steps": 1000}, 100, 0, set()),
        # 2.5 epochs: the Trainer's max_steps is rounded up before the share is taken
        ({"save_steps": 0.1, "num_train_epochs": 2.5}, "1/4 epoch", 0, {"save_steps"}),
    ],
)
def test_save_and_eval_strategies_in_epochs_and_shares_of_the_run(imported, tmp_path, changes, save_every, eval_every, approx):
    path = _with(tmp_path, "stanford-alpaca.json", **changes)
    got = imported("transformers", path, model="org/model", data="org/data", num_processes=4)
    assert (got.recipe["train"]["save_every"], got.recipe["train"]["eval_every"]) == (save_every, eval_every)
    assert got.approx & {"save_strategy", "save_steps"} == approx
    for k in got.approx & {"evaluation_strategy", "eval_steps"}:  # for the held-out data the arguments lack, not the cadence
        assert "epoch" not in got.result.draft.ledger[k].why.replace("evaluation_strategy", "")
