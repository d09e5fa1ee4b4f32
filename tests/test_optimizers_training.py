"""Optimizers through the generated script (slow): Muon under two DDP processes equals one
process; Muon and schedule-free AdamW killed after a checkpoint resume to the same weights
bit for bit; schedule-free evaluates (and saves) its averaged weights; `optim.trainable`
trains what it picks and nothing else, on one process and two."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import accelerate_launch
import forkrun  # noqa: E402
from test_training import TINY, _assert_killed_run_resumes_bitwise, _assert_same_weights, _build, _env, _kill, _metrics, _project, _train, _weights, uninterrupted  # noqa: F401

pytestmark = pytest.mark.slow

OPTIM = {
    "muon": '[optim]\nname = "muon"\nlr = 0.02\nadamw_lr = 1e-2\n',
    "schedule_free_adamw": '[optim]\nname = "schedule_free_adamw"\nlr = 1e-2\n',
}


def recipe(name: str) -> str:
    text = TINY.replace("[optim]\nlr = 1e-2\n", OPTIM[name])
    if name == "schedule_free_adamw":
        text = text.replace("[schedule]\nwarmup = 2\n", '[schedule]\nwarmup = 2\ndecay = "constant"\n')
    return text.replace("attention_dropout = 0.1", "attention_dropout = 0.0")


def test_muon_on_two_processes_matches_one(tmp_path: Path) -> None:
    one = _project(tmp_path / "one", recipe("muon"))
    two = _project(tmp_path / "two", recipe("muon"))
    settings = ["train.max_steps=3", "train.save_every=0", "train.eval_every=0"]
    proc = _train(_build(one, *settings))
    assert re.search(r"muon: 14 hidden matrices; adamw: \d+ embedding, output, norm and bias tensors", proc.stdout + proc.stderr)
    build_two = _build(two, *settings, "launch.num_processes=2")
    proc = forkrun.run(
        accelerate_launch(build_two / "accelerate_config.yaml", str(build_two / "train.py")),
        env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    a = [m["loss"] for m in _metrics(one / "runs" / "tiny") if "loss" in m]
    b = [m["loss"] for m in _metrics(two / "runs" / "tiny") if "loss" in m]
    assert len(a) == len(b) == 3
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", ["muon", "schedule_free_adamw"])
def test_killed_after_a_checkpoint_resumes_bitwise(tmp_path: Path, name: str) -> None:
    _assert_killed_run_resumes_bitwise(tmp_path, recipe(name))


def test_schedule_free_evaluates_and_saves_its_averaged_weights(tmp_path: Path) -> None:
    """The step-4 eval_loss is the loss of the step-4 checkpoint's weights, and those are the average x: the
    point y the optimizer steps (rebuilt from x and the saved z, y = lerp(x, z, 1 - beta1)) gives another loss.
    The final eval_loss is the saved model's loss."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    project = _project(tmp_path / "sf", recipe("schedule_free_adamw"))
    build_dir = _build(project)
    _train(build_dir)
    run = project / "runs" / "tiny"
    evals = {m["step"]: m["eval_loss"] for m in _metrics(run) if "eval_loss" in m}
    sys.path.insert(0, str(build_dir))
    try:
        from recipec_runtime import data, stage
    finally:
        sys.path.remove(str(build_dir))
    entry = json.loads((run / "run.json").read_text())["data"]["cache_entry"]
    eval_ds = stage.load_sequences(project / ".recipec" / "data" / entry / "eval.arrow")
    batches = [data.collate([eval_ds[j] for j in range(i, min(i + 4, len(eval_ds)))]) for i in range(0, min(len(eval_ds), 8), 4)]

    def loss_of(model) -> float:
        with torch.no_grad():
            return sum(model(**b, use_cache=False).loss.item() for b in batches) / len(batches)

    final = AutoModelForCausalLM.from_pretrained(run / "model").eval()
    assert loss_of(final) == pytest.approx(evals[8], abs=1e-5)

    checkpoint = run / "checkpoints" / "step_00000004"
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    model.load_state_dict(load_file(str(checkpoint / "model.safetensors")), strict=False)
    assert loss_of(model) == pytest.approx(evals[4], abs=1e-5)
    state = torch.load(checkpoint / "optimizer.bin", weights_only=True)
    beta1 = state["param_groups"][0]["betas"][0]
    params = [p for p in model.parameters() if p.ndim >= 2] + [p for p in model.parameters() if p.ndim < 2]
    with torch.no_grad():
        for i, p in enumerate(params):
            p.lerp_(state["state"][i]["z"], 1 - beta1)
    assert abs(loss_of(model) - evals[4]) > 1e-4


def test_parameter_groups_count_as_check_says_and_resume_bitwise(tmp_path: Path) -> None:
    """`recipec check` prints each group's parameter count on the meta model; the script logs
    the same lines for the real one. A run with groups killed after a checkpoint resumes to
    the same weights, and its logged LR is the optimizer's, not a group's multiple."""
    groups = (
        'optim.decay={include=["*"], exclude=["norms", "biases"]}',
        'optim.groups=[{params=["embeddings"], lr_scale=0.1}, {params=["output", "*.mlp.*"], lr_scale=2.0, weight_decay=0.0}]',
    )
    straight = _project(tmp_path / "straight", TINY.replace("attention_dropout = 0.1", "attention_dropout = 0.0"))
    sets = [x for g in groups for x in ("--set", g)]
    check = subprocess.run(
        [sys.executable, "-m", "recipec", "check", "recipes/tiny.toml", *sets], cwd=straight, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert check.returncode == 0, check.stderr
    checked = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("param group ")]
    assert [line.split(":")[0] for line in checked] == [
        "param group default, decayed",
        "param group default, not decayed",
        "param group groups[0] (embeddings), decayed",
        "param group groups[1] (output, *.mlp.*)",
    ]
    proc = _train(_build(straight, *groups))
    logged = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("param group ")]
    assert logged == checked
    lrs = [m["lr"] for m in _metrics(straight / "runs" / "tiny") if "lr" in m]
    assert max(lrs) == pytest.approx(1e-2)

    killed = _project(tmp_path / "killed", straight.joinpath("recipes", "tiny.toml").read_text())
    build_dir = _build(killed, *groups)
    _kill(tmp_path, build_dir, 4, "after-commit")
    assert "resumed from" in (lambda p: p.stdout + p.stderr)(_train(build_dir))
    _assert_same_weights(straight / "runs" / "tiny", killed / "runs" / "tiny")


FROZEN = """
[model]
path = "{parent}"
gradient_checkpointing = true

[model.config]
attention_dropout = 0.0  # the parent trained with dropout, whose masks differ between one process and two

[optim]
lr = 1e-2
trainable = {{include = ["layers[-1]", "norms"], exclude = ["layers[-1].mlp.*"]}}

[[optim.groups]]
params = ["layers[-1].self_attn.*"]
lr_scale = 0.5
"""


def test_trainable_trains_what_it_picks_counts_as_check_says_and_runs_on_two_processes(tmp_path: Path, uninterrupted: Path) -> None:
    """A pretrained model fine-tuned with `optim.trainable` (and a group among what trains, and
    activation checkpointing, whose frozen embedding gives the first layer no input gradient): the
    frozen parameters are saved as they were loaded, every picked one moved; `recipec check` counts
    what the script counts; two processes under DDP and under FSDP give the losses of one; a run
    killed after a checkpoint resumes to the same weights. A layer past the model's stops the
    script before it reads the data."""
    text = TINY.replace("attention_dropout = 0.1", "attention_dropout = 0.0")
    head, rest = text.split("[model]")
    text = head + FROZEN.format(parent=uninterrupted / "model") + "\n[data]" + rest.split("[data]")[1].replace("[optim]\nlr = 1e-2\n", "")
    text = text.replace("[tokenizer]\ntrain = {kind = \"bpe\", vocab_size = 400}\n", "")
    one = _project(tmp_path / "one", text)
    bad = _train(_build(one, 'optim.trainable={include=["layers[-1]", "layers[2]"]}', build_dir="build/bad"), expect=1)
    assert "error: optim.trainable.include[1]: 'layers[2]' matches no parameter (the model has 2 decoder layers)" in bad.stderr
    assert "documents:" not in bad.stdout  # stopped on the meta model, before the data was read
    check = subprocess.run([sys.executable, "-m", "recipec", "check", "recipes/tiny.toml"], cwd=one, env=_env(), capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr
    counted = re.search(r"^trainable: ([\d,]+) \(", check.stdout + check.stderr, re.M)
    assert counted, check.stdout + check.stderr
    proc = _train(_build(one, "train.save_every=0"))
    out = proc.stdout + proc.stderr
    logged = re.search(r"^trainable: ([\d,]+) of ([\d,]+) parameters train", out, re.M)
    assert logged and logged[1] == counted[1], out[-3000:]
    assert "param group groups[0] (layers[-1].self_attn.*), decayed" in out
    before, after = _weights(uninterrupted), _weights(one / "runs" / "tiny")
    picked = {k for k in before if (k.startswith("model.layers.1.") and ".mlp." not in k) or "norm" in k}
    moved = {k for k in before if not __import__("torch").equal(before[k], after[k])}
    assert moved == picked
    assert sum(before[k].numel() for k in picked) == int(logged[1].replace(",", ""))

    for strategy in ("ddp", "fsdp"):  # FSDP2 renames the blocks' classes, which layers[...] reads
        two = _project(tmp_path / strategy, text)
        build_two = _build(two, "train.save_every=0", "launch.num_processes=2", f"launch.strategy={strategy}")
        proc = forkrun.run(
            accelerate_launch(build_two / "accelerate_config.yaml", str(build_two / "train.py")),
            env=_env(), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-6000:]
        losses = [[m["loss"] for m in _metrics(p / "runs" / "tiny") if "loss" in m] for p in (one, two)]
        assert len(losses[0]) == 8 and losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-6), strategy

    straight, killed = _project(tmp_path / "straight", text), _project(tmp_path / "killed", text)
    _train(_build(straight))
    build_dir = _build(killed)
    _kill(tmp_path, build_dir, 4, "after-commit")
    assert "resumed from" in (lambda p: p.stdout + p.stderr)(_train(build_dir))
    _assert_same_weights(straight / "runs" / "tiny", killed / "runs" / "tiny")
