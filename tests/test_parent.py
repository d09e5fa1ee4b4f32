"""`[continual] from` a run that trained a PEFT adapter: its merged model is what continues, and
without one the script merges the adapter into the model it trained on (a training run checks that
both give the same losses)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import forkrun
from recipec.cli import main
from recipec.compiler import build, plan_recipe

from test_recipes import REPO, finished_parent


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    finished_parent(tmp_path, REPO / "recipes" / "dpo-chat.toml")  # sft-chat (LoRA, save_merged) and its parent
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_peft_parent_continues_from_its_merged_model(project: Path) -> None:
    plan, _ = plan_recipe("recipes/dpo-chat.toml", ())
    assert plan["model_path"] == "./runs/sft-chat/model_full"


def test_a_peft_parent_without_a_merged_model_continues_from_its_adapter(project: Path) -> None:
    """sft-chat continued pretrain-prose: its run.json names that model, which the adapter is merged into;
    the tokenizer (with sft-chat's markers) is the one saved beside the adapter."""
    shutil.rmtree(project / "runs" / "sft-chat" / "model_full")
    record = json.loads((project / "runs" / "sft-chat" / "run.json").read_text())
    record["parent"] = {"dir": "./runs/pretrain-prose", "model": "./runs/pretrain-prose/model"}
    (project / "runs" / "sft-chat" / "run.json").write_text(json.dumps(record))
    plan, _ = plan_recipe("recipes/dpo-chat.toml", ())
    assert plan["model_path"] == "./runs/pretrain-prose/model"
    assert plan["parent_adapter"] == "./runs/sft-chat/model"
    assert plan["tokenizer_path"] == "./runs/sft-chat/model"
    written, _ = build("recipes/dpo-chat.toml", (), project / "build" / "dpo-chat", project=project)
    script = (written.dir / "train.py").read_text()
    assert "model = PeftModel.from_pretrained(model, local(parent_adapter)).merge_and_unload()" in script
    assert "model.requires_grad_(True)" in script


def test_an_adapter_is_not_merged_into_a_model_zero3_partitions(project: Path) -> None:
    shutil.rmtree(project / "runs" / "sft-chat" / "model_full")
    record = json.loads((project / "runs" / "sft-chat" / "run.json").read_text())
    record["parent"] = {"dir": "./runs/pretrain-prose", "model": "./runs/pretrain-prose/model"}
    (project / "runs" / "sft-chat" / "run.json").write_text(json.dumps(record))
    zero3 = ["--set", 'launch.strategy="deepspeed"', "--set", "launch.deepspeed.zero_stage=3", "--set", "launch.cpu=false"]
    result = CliRunner().invoke(main, ["--no-color", "validate", "recipes/dpo-chat.toml", *zero3])
    assert result.exit_code == 2
    assert "the script merges it into the model as it loads, which ZeRO-3 builds partitioned" in result.output


def test_a_peft_parent_whose_base_is_gone_is_an_error(project: Path) -> None:
    shutil.rmtree(project / "runs" / "sft-chat" / "model_full")  # and its run.json names no parent model
    result = CliRunner().invoke(main, ["--no-color", "validate", "recipes/dpo-chat.toml"])
    assert result.exit_code == 2
    assert "trained a PEFT adapter on another run's model, which is not a saved full model here" in result.output
    assert "set peft.save_merged = true in the parent recipe" in result.output


CHILD = """
[recipe]
name = "child"
seed = 5

[continual]
from = "runs/chat"
rewarm_from = 1.0
eval_parent = false

[data]
seq_len = 256
eval_fraction = 0.125

[[data.sources]]
path = "data/dialogs.jsonl"
records = "messages"

[optim]
lr = 1e-3

[schedule]
warmup = 0

[train]
micro_batch_size = 8
batch_size = 8
max_steps = 2
log_every = 1
eval_every = 0
eval_batches = 0
save_every = 0

[launch]
cpu = true
"""


REWARD = """
[preference]
objective = "reward"
"""


@pytest.mark.slow
@pytest.mark.parametrize("reward", [False, True], ids=["sft", "reward"])
def test_the_merged_adapter_trains_as_the_saved_merged_model(reward: bool, tmp_path: Path) -> None:
    """A LoRA parent that saved its merged model: the child continued from model_full/, and again with
    model_full/ removed (the script merges the adapter into ./model itself), logs the same losses. Also when the
    child is a reward model (the supervised run's model under a new score head, on preference pairs): the adapter,
    trained for the causal LM, merges into the sequence classifier's same layers."""
    from test_preference_training import _pairs
    from test_sft import _env, _model, _project, _train

    _model(tmp_path / "model")
    _project(tmp_path, "./model")
    parent = tmp_path / "recipes" / "chat.toml"
    parent.write_text(parent.read_text() + '\n[peft]\nmethod = "lora"\nr = 4\nsave_merged = true\n')
    _train(tmp_path)
    child = tmp_path / "recipes" / "child.toml"
    if reward:
        _pairs(tmp_path / "data" / "pairs.jsonl")
        child.write_text(CHILD.replace('path = "data/dialogs.jsonl"\nrecords = "messages"', 'path = "data/pairs.jsonl"\nrecords = "preference"') + REWARD)
    else:
        child.write_text(CHILD)
    losses = {}
    for name in ("model_full", "adapter"):
        if name == "adapter":
            shutil.rmtree(tmp_path / "runs" / "chat" / "model_full")
        written, plan = build(child, (f'output.dir="runs/child-{name}"',), tmp_path / "build" / name, project=tmp_path)
        proc = forkrun.run([sys.executable, str(written.dir / "train.py")], env=_env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        metrics = [json.loads(line) for line in (tmp_path / "runs" / f"child-{name}" / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [(m["step"], m.get("loss"), m.get("eval_loss")) for m in metrics]
    assert plan["model_path"] == "./model" and plan["parent_adapter"] == "./runs/chat/model"
    assert plan.get("objective") == ("reward" if reward else None)
    assert len(losses["adapter"]) == 4  # the evaluations at step 0 and at the end, and two training steps
    for (step_a, loss_a, eval_a), (step_b, loss_b, eval_b) in zip(losses["adapter"], losses["model_full"], strict=True):
        assert step_a == step_b
        assert loss_a == pytest.approx(loss_b, abs=1e-6) if loss_b is not None else loss_a is None
        assert eval_a == pytest.approx(eval_b, abs=1e-6) if eval_b is not None else eval_a is None
