"""Generated scripts really train: the quickstart through `recipec run`, and exact resume.

These tests build recipes into tmp_path and run the generated train.py on CPU with a tiny
model, so they take tens of seconds; they are marked `slow`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import forkrun
from conftest import accelerate_launch
from recipec.compiler import build

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# A tiny model on a few documents, so that a run of a few steps crosses epoch
# boundaries, accumulates gradients over 2 micro-batches and uses dropout (whose random
# numbers must be restored exactly on resume).
TINY = """
[recipe]
name = "tiny"
seed = 7

[model]
init = "llama"

[model.config]
hidden_size = 32
intermediate_size = 64
num_hidden_layers = 2
num_attention_heads = 2
max_position_embeddings = 64
attention_dropout = 0.1

[tokenizer]
train = {kind = "bpe", vocab_size = 400}

[data]
seq_len = 32
eval_fraction = 0.25

[[data.sources]]
builtin = "python-docs"
max_documents = 4

[optim]
lr = 1e-2

[schedule]
warmup = 2

[train]
micro_batch_size = 4
batch_size = 8
max_steps = 8
log_every = 1
eval_every = 4
eval_batches = 2
save_every = 2
keep_last = 2

[launch]
cpu = true
"""

KILLER = """
import os, runpy, signal, sys

build_dir, kill_at, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, build_dir)
from recipec_runtime import checkpoint

commit = checkpoint.commit


def commit_then_die(tmp, ckpt_dir, step):
    if step == kill_at and mode == "before-commit":
        os.kill(os.getpid(), signal.SIGKILL)  # the checkpoint is written but not yet renamed
    path = commit(tmp, ckpt_dir, step)
    if step == kill_at and mode == "after-commit":
        os.kill(os.getpid(), signal.SIGKILL)
    return path


checkpoint.commit = commit_then_die
sys.argv = [os.path.join(build_dir, "train.py")]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _env(**extra: str) -> dict[str, str]:
    """The environment of a training run: offline, a fixed hash seed, no ACCELERATE_USE_CPU; `extra` added."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONHASHSEED="0", **extra)
    env.pop("ACCELERATE_USE_CPU", None)
    return env


def _project(tmp_path: Path, recipe_text: str) -> Path:
    (tmp_path / "recipes").mkdir(parents=True)
    (tmp_path / "recipes" / "tiny.toml").write_text(recipe_text)
    return tmp_path


def _build(project: Path, *overrides: str, build_dir: str = "build/tiny") -> Path:
    written, _ = build(project / "recipes" / "tiny.toml", overrides, project / build_dir, project=project)
    return written.dir


def _train(build_dir: Path, *wrapper: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, *wrapper] if wrapper else [sys.executable, str(build_dir / "train.py")]
    proc = forkrun.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _launched(build_dir: Path) -> subprocess.CompletedProcess[str]:
    """`accelerate launch` of the build with its own accelerate config (the processes it names); it must succeed."""
    proc = forkrun.run(
        accelerate_launch(build_dir / "accelerate_config.yaml", str(build_dir / "train.py")),
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc


def _kill(tmp_path: Path, build_dir: Path, step: int, mode: str) -> None:
    """Run the build and SIGKILL it at the checkpoint of `step` (before or after its commit)."""
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    proc = forkrun.run(
        [sys.executable, str(killer), str(build_dir), str(step), mode], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == -9, proc.stderr[-3000:]


def _weights(run_dir: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model" / "model.safetensors"))


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_weights(a: Path, b: Path) -> None:
    import torch

    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ after resume: {different[:5]}"


def _assert_killed_run_resumes_bitwise(tmp_path: Path, recipe_text: str) -> None:
    """The recipe trained straight, and killed after its step-4 checkpoint and run again: it resumes, to the
    same weights and metrics bit for bit (timings aside)."""
    straight = _project(tmp_path / "straight", recipe_text)
    _train(_build(straight))
    killed = _project(tmp_path / "killed", recipe_text)
    build_dir = _build(killed)
    _kill(tmp_path, build_dir, 4, "after-commit")
    proc = _train(build_dir)
    assert "resumed from" in proc.stdout + proc.stderr
    _assert_same_weights(straight / "runs" / "tiny", killed / "runs" / "tiny")
    strip = lambda ms: [{k: v for k, v in m.items() if not k.endswith("_per_s")} for m in ms]  # noqa: E731 (timings differ)
    assert strip(_metrics(killed / "runs" / "tiny")) == strip(_metrics(straight / "runs" / "tiny"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = _project(tmp_path_factory.mktemp("straight"), TINY)
    _train(_build(project))
    return project / "runs" / "tiny"


def test_uninterrupted_run_writes_model_metrics_checkpoints_and_record(uninterrupted: Path) -> None:
    metrics = _metrics(uninterrupted)
    train_steps = [m["step"] for m in metrics if "loss" in m]
    assert train_steps == list(range(1, 9))
    assert [m["step"] for m in metrics if "eval_loss" in m] == [0, 4, 8]
    for m in metrics:
        if "loss" in m:
            assert set(m) >= {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s"}
            assert m["tokens"] == m["step"] * 8 * 32
    # the schedule in the log is the closed form: warmup 2 steps from 0, then cosine to 10%
    lrs = [m["lr"] for m in metrics if "loss" in m]
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(5e-3) and lrs[2] == pytest.approx(1e-2)
    assert lrs[-1] == pytest.approx(1e-3 + 9e-3 * 0.5 * (1 + __import__("math").cos(__import__("math").pi * 5 / 6)))
    # keep_last = 2 of the checkpoints at 2, 4, 6 (none at the final step: the model is saved)
    ckpts = sorted(p.name for p in (uninterrupted / "checkpoints").iterdir())
    assert ckpts == ["step_00000004", "step_00000006"]
    record = json.loads((uninterrupted / "run.json").read_text())
    lock = (uninterrupted.parent.parent / "build" / "tiny" / "recipe.lock.json").read_bytes()
    import hashlib

    assert record["status"] == "completed"
    assert record["lock_sha256"] == hashlib.sha256(lock).hexdigest()
    assert record["steps"] == 8 and record["tokens"] == 8 * 8 * 32
    assert record["final"]["eval_loss"] == metrics[-1]["eval_loss"]
    for key in ("loss", "eval_loss"):  # the lowest value over the run and its step
        lowest = min((m for m in metrics if key in m), key=lambda m: m[key])
        assert record["best"][key] == lowest[key] and record["best"][f"{key}_step"] == lowest["step"]
    assert record["hardware"]["device"] == "cpu"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(uninterrupted / "model")
    tokenizer = AutoTokenizer.from_pretrained(uninterrupted / "model")
    assert model.config.vocab_size == len(tokenizer) == 400


WORKERS = ("data.num_workers=2", "data.persistent_workers=true", "data.prefetch_factor=4")
"""Batches loaded by two worker processes kept across epochs and evaluations: the same batches, in the same order."""


def test_documents_kept_to_themselves_change_what_the_run_computes(tmp_path: Path) -> None:
    """`data.cross_document_attention = false` reaches the model: on short documents, several in every
    sequence, the same run (same seed, data and order) logs other losses from its first step on; the
    attention itself is checked against each document run alone in tests/runtime/test_document_positions.py."""
    import random

    rng = random.Random(0)
    words = "the a cat dog sat ran on under table mat quickly slowly red blue".split()
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(400)]
    recipe = TINY.replace('builtin = "python-docs"\nmax_documents = 4', 'path = "data/short.jsonl"')
    project = _project(tmp_path, recipe)
    (project / "data").mkdir()
    (project / "data" / "short.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    losses = {}
    for name, overrides in (("stream", ()), ("documents", ("data.cross_document_attention=false",))):
        build_dir = _build(project, *overrides, build_dir=f"build/{name}")
        script = (build_dir / "train.py").read_text()
        assert ("document_eos=tokenizer.eos_token_id" in script) == (name == "documents")
        _train(build_dir)
        run = project / "runs" / "tiny"
        losses[name] = [m["loss"] for m in _metrics(run) if "loss" in m]
        shutil.rmtree(run)
    assert len(losses["stream"]) == len(losses["documents"]) == 8
    assert all(abs(a - b) > 1e-4 for a, b in zip(losses["stream"], losses["documents"])), losses


def test_checkpoints_and_evaluations_in_epochs_fall_on_the_derived_steps(tmp_path: Path) -> None:
    """`save_every` and `eval_every` in epochs: train.py derives the steps from the rows it loaded, the same
    steps_per_epoch as `train.epochs`, so "1 epoch" saves at each epoch's last step."""
    import math

    recipe = TINY.replace("max_steps = 8", "epochs = 3").replace("save_every = 2", 'save_every = "1 epoch"')
    recipe = recipe.replace("eval_every = 4", 'eval_every = "1/2 epoch"').replace("keep_last = 2", "keep_last = 0")
    project = _project(tmp_path, recipe)
    proc = _train(_build(project))
    rows = int(proc.stdout.split("sequences of 32 tokens: ")[1].split(" train")[0])
    per_epoch = rows // 8
    assert per_epoch >= 2, f"{rows} rows: too few for the test to tell the cadences apart"
    max_steps = 3 * per_epoch
    run = project / "runs" / "tiny"
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == [f"step_{s:08d}" for s in (per_epoch, 2 * per_epoch)]
    every = math.ceil(per_epoch / 2)
    evals = [m["step"] for m in _metrics(run) if "eval_loss" in m]
    assert evals == [0, *range(every, max_steps, every), max_steps]
    assert max(m["step"] for m in _metrics(run)) == max_steps


@pytest.mark.parametrize(
    "mode,resumes_from,overrides",
    [("after-commit", 4, ()), ("before-commit", 2, ()), ("after-commit", 4, WORKERS)],
    ids=["after-commit", "before-commit", "workers"],
)
def test_kill_and_resume_gives_bitwise_identical_weights(
    tmp_path: Path, uninterrupted: Path, mode: str, resumes_from: int, overrides: tuple[str, ...]
) -> None:
    if overrides:  # the uninterrupted run of the same build
        straight = _project(tmp_path / "straight", TINY)
        _train(_build(straight, *overrides))
        uninterrupted = straight / "runs" / "tiny"
    project = _project(tmp_path / "killed", TINY)
    build_dir = _build(project, *overrides)
    _kill(tmp_path, build_dir, 4, mode)
    run_dir = project / "runs" / "tiny"
    assert not (run_dir / "model").exists()
    resumed = _train(build_dir)
    assert f"at step {resumes_from}" in resumed.stdout + resumed.stderr
    _assert_same_weights(uninterrupted, run_dir)
    # the log of the resumed run is the log of the uninterrupted one, step for step
    strip = lambda ms: [{k: v for k, v in m.items() if not k.endswith("_per_s")} for m in ms]  # noqa: E731 (timings differ)
    assert strip(_metrics(run_dir)) == strip(_metrics(uninterrupted))
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))


def test_recipec_run_trains_the_quickstart(tmp_path: Path) -> None:
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    overrides = [
        "train.max_steps=3",
        "train.log_every=1",
        "train.eval_every=0",
        "train.eval_batches=2",
        "train.save_every=0",
        "data.seq_len=64",
        "tokenizer.train.vocab_size=1000",
    ]
    cmd = [sys.executable, "-m", "recipec", "run", "recipes/quickstart.toml"]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "build/quickstart/train.py" in proc.stderr
    run_dir = tmp_path / "runs" / "quickstart"
    metrics = _metrics(run_dir)
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3]
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert (run_dir / "tokenizer" / "tokenizer.json").is_file()
    lock = json.loads((tmp_path / "build" / "quickstart" / "recipe.lock.json").read_text())
    assert lock["overrides"] == overrides


def test_recipec_run_exits_with_the_training_exit_code(tmp_path: Path) -> None:
    """The data stage fails inside the run (a malformed line): the run's exit code, the file:line."""
    recipe = TINY.replace('builtin = "python-docs"\nmax_documents = 4', 'path = "data/*.jsonl"')
    _project(tmp_path, recipe)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text('{"text": "fine"}\n{"text": broken}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "recipec", "run", "recipes/tiny.toml"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode not in (0, 2)
    assert "data/a.jsonl:2: not valid JSON" in proc.stderr
    assert "build/tiny/train.py" in proc.stderr.splitlines()[-1]


def test_two_processes_on_cpu_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    """DDP over gloo: 2 processes x micro 4 give the same losses as 1 process x micro 4 x accum 2."""
    one = _project(tmp_path / "one", TINY.replace("attention_dropout = 0.1", "attention_dropout = 0.0"))
    two = _project(tmp_path / "two", TINY.replace("attention_dropout = 0.1", "attention_dropout = 0.0"))
    settings = ["train.max_steps=3", "train.save_every=0", "train.eval_every=0"]
    _train(_build(one, *settings))
    build_two = _build(two, *settings, "launch.num_processes=2")
    _launched(build_two)
    a = [m["loss"] for m in _metrics(one / "runs" / "tiny") if "loss" in m]
    b = [m["loss"] for m in _metrics(two / "runs" / "tiny") if "loss" in m]
    assert len(a) == len(b) == 3
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)


def test_fine_tune_a_local_pretrained_model_with_its_own_tokenizer_unpacked(tmp_path: Path, uninterrupted: Path) -> None:
    recipe = TINY.split("[model]")[0] + textwrap.dedent(
        f"""
        [model]
        path = "{uninterrupted / 'model'}"
        gradient_checkpointing = true

        [data]
        seq_len = 32
        packing = false
        eval_fraction = 0.25

        [[data.sources]]
        path = "data/*.jsonl"

        [train]
        micro_batch_size = 2
        batch_size = 4
        max_steps = 3
        log_every = 1
        eval_every = 2
        eval_at_start = false
        save_every = 0

        [launch]
        cpu = true
        """
    )
    project = _project(tmp_path, recipe)
    (project / "data").mkdir()
    docs = [{"text": f"def f{i}(x):\n    return x * {i}\n", "id": i} for i in range(12)]
    (project / "data" / "code.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    build_dir = _build(project)
    assert "AutoConfig" not in (build_dir / "train.py").read_text()  # the from-scratch branch is not emitted
    proc = _train(build_dir)
    # model.gradient_checkpointing through transformers' current name, not its deprecated alias
    assert "gradient_checkpointing_enable` is deprecated" not in proc.stderr
    run_dir = project / "runs" / "tiny"
    assert [m["step"] for m in _metrics(run_dir) if "loss" in m] == [1, 2, 3]
    assert [m["step"] for m in _metrics(run_dir) if "eval_loss" in m] == [2, 3]  # eval_at_start = false: no step 0
    before, after = _weights(uninterrupted), _weights(run_dir)
    assert before.keys() == after.keys()
    import torch

    assert any(not torch.equal(before[k], after[k]) for k in before), "fine-tuning changed no weight"



def test_data_seed_fixes_the_data_and_its_order_whatever_recipe_seed_says(tmp_path: Path, uninterrupted: Path) -> None:
    """`data.seed` decides the split, the packing order and the loader's shuffle; `recipe.seed` the rest. From the
    same pretrained weights with no dropout, two runs whose recipe.seed differs and whose data.seed is the same
    log the same losses at every step, and the data stage the same order; another data.seed gives other losses."""
    recipe = TINY.split("[model]")[0] + textwrap.dedent(
        f"""
        [model]
        path = "{uninterrupted / 'model'}"

        [model.config]
        attention_dropout = 0.0

        [data]
        seq_len = 16
        eval_fraction = 0.2

        [[data.sources]]
        path = "data/*.jsonl"

        [optim]
        lr = 1e-2

        [train]
        micro_batch_size = 2
        batch_size = 4
        max_steps = 6
        log_every = 1
        eval_every = 3
        save_every = 0

        [launch]
        cpu = true
        """
    )
    project = _project(tmp_path, recipe)
    (project / "data").mkdir()
    docs = [{"text": f"def f{i}(x):\n    return x * {i} + {i * i}\n"} for i in range(40)]
    (project / "data" / "code.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    runs = {}
    for name, overrides in (
        ("a", ("recipe.seed=1", "data.seed=5")),
        ("b", ("recipe.seed=2", "data.seed=5")),
        ("c", ("recipe.seed=1",)),  # data.seed unset: recipe.seed's data
    ):
        _train(_build(project, *overrides, build_dir=f"build/{name}"))
        run = project / "runs" / "tiny"
        report = json.loads((run / "data_report.json").read_text())
        metrics = _metrics(run)
        runs[name] = (
            [m["loss"] for m in metrics if "loss" in m],
            [m["eval_loss"] for m in metrics if "eval_loss" in m],
            report["segments"][0]["document_order_sha256"],
        )
        shutil.rmtree(run)
    assert len(runs["a"][0]) == 6
    assert runs["a"] == runs["b"]  # the same data, the same order: the same losses, to the bit
    assert runs["c"][2] != runs["a"][2] and runs["c"][0] != runs["a"][0]

CPT = """
[recipe]
name = "tiny-cpt"
seed = 7

[continual]
from = "{parent}"
{continual}

[data]
seq_len = 32
eval_fraction = 0.25

[[data.sources]]
builtin = "python-stdlib"
max_documents = 4

[optim]
lr = 2e-2

{schedule}

[train]
micro_batch_size = 4
batch_size = 8
max_steps = 4
log_every = 1
eval_every = 2
eval_batches = 2
save_every = 0

[launch]
cpu = true
"""


def _cpt_project(tmp_path: Path, parent: Path, continual: str, schedule: str = "[schedule]\nwarmup = 2") -> Path:
    text = CPT.format(parent=parent.as_posix(), continual=continual, schedule=schedule)
    project = tmp_path / "cpt"
    (project / "recipes").mkdir(parents=True)
    (project / "recipes" / "tiny.toml").write_text(text)
    return project


def test_continual_from_a_finished_run_rewarms_replays_and_records_its_parent(
    tmp_path: Path, uninterrupted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    project = _cpt_project(tmp_path, uninterrupted, "replay = 0.25")
    written, plan = build(project / "recipes" / "tiny.toml", (), project / "build" / "cpt", project=project)
    parent_lock = hashlib.sha256((uninterrupted / "recipe.lock.json").read_bytes()).hexdigest()
    assert written.lock["parent"]["lock_sha256"] == parent_lock and written.lock["parent"]["step"] == 8
    # the rewarm starts at the LR of the parent's last update, as a fraction of the new peak
    parent_last_lr = float((uninterrupted / "schedule.csv").read_text().splitlines()[-1].split(",")[1])
    assert plan["schedule_phases"][0]["start"] == pytest.approx(parent_last_lr / 2e-2)
    # explain --data counts the replayed sequences as the script appends them
    from click.testing import CliRunner

    from recipec.cli import main

    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["--no-color", "explain", "recipes/tiny.toml", "--data", "--json"])
    assert result.exit_code == 0, result.output
    [segment] = json.loads(result.output[result.output.index("{") :])["data"]["segments"]
    proc = _train(written.dir)
    replayed = segment["replayed"]
    assert replayed > 0 and f"replay: {replayed} of {segment['rows'] + replayed} training sequences" in proc.stdout + proc.stderr
    run_dir = project / "runs" / "tiny-cpt"
    metrics = _metrics(run_dir)
    evals = [m for m in metrics if "eval_loss" in m]
    assert [m["step"] for m in evals] == [0, 2, 4]
    assert all("eval_loss_parent" in m for m in evals)  # forgetting is measured on the parent's held-out prose
    # at step 0 the model is the parent's: its loss on the parent's split is the parent's final eval loss
    # (up to the eval batches taken and this run's seq_len, the same here)
    parent_final = [m for m in _metrics(uninterrupted) if "eval_loss" in m][-1]["eval_loss"]
    assert evals[0]["eval_loss_parent"] == pytest.approx(parent_final, rel=1e-4)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["parent"]["lock_sha256"] == parent_lock and record["parent"]["step"] == 8
    assert (run_dir / "model" / "model.safetensors").is_file()


def test_continual_from_a_checkpoint_with_optimizer_state_checks_lr_continuity(
    tmp_path: Path, uninterrupted: Path
) -> None:
    from recipec.diagnostics import RecipeError

    ckpt = uninterrupted / "checkpoints" / "step_00000006"
    # the parent (lr 1e-2, 2 warmup steps, cosine to 10% by step 8) uses 1e-2 * 0.325 at update 6
    phases = '[[schedule.phases]]\nname = "cooldown"\nshape = "linear"\nsteps = 4\nstart = {start}\nend = 0.1'
    project = _cpt_project(
        tmp_path, ckpt, "optimizer = true\ncontinues = true", phases.format(start=0.1625)
    )  # 0.1625 * 2e-2 == 0.325 * 1e-2
    recipe = project / "recipes" / "tiny.toml"
    written, plan = build(recipe, (), project / "build" / "cpt", project=project)
    assert written.lock["parent"]["step"] == 6 and plan["model_path"].endswith("checkpoints/step_00000006")
    _train(written.dir)
    assert [m["step"] for m in _metrics(project / "runs" / "tiny-cpt") if "loss" in m] == [1, 2, 3, 4]
    # a schedule that jumps is refused before anything runs
    recipe.write_text(recipe.read_text().replace("start = 0.1625", "start = 1.0"))
    with pytest.raises(RecipeError) as info:
        build(recipe, (), project / "build" / "cpt", project=project)
    assert "claims to continue the parent's schedule" in info.value.diagnostics[0].message
    # an optimizer state over other parameters (the parent trained them all) is refused too
    recipe.write_text(recipe.read_text().replace("start = 1.0", "start = 0.1625"))
    with pytest.raises(RecipeError) as info:
        build(recipe, ('optim.trainable={include=["norms"]}',), project / "build" / "cpt", project=project)
    assert "the parent's optim.trainable, optim.decay or [[optim.groups]] differ from this run's" in info.value.diagnostics[0].message


AVERAGING = "\n[ema]\ndecay = 0.9\nreference_batch = 4\n\n[merge]\nwindow = 6\nevery = 1\n"


def test_ema_and_merged_weights_survive_kill_and_resume_bitwise(tmp_path: Path) -> None:
    """The running averages are checkpointed: a killed and resumed run saves the same model_ema/ and model_merged/."""
    import torch
    from safetensors.torch import load_file

    straight = _project(tmp_path / "straight", TINY + AVERAGING)
    _train(_build(straight))
    killed = _project(tmp_path / "killed", TINY + AVERAGING)
    build_dir = _build(killed)
    _kill(tmp_path, build_dir, 4, "after-commit")
    _train(build_dir)
    for name in ("model_ema", "model_merged"):
        a = load_file(str(straight / "runs" / "tiny" / name / "model.safetensors"))
        b = load_file(str(killed / "runs" / "tiny" / name / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    final = load_file(str(straight / "runs" / "tiny" / "model" / "model.safetensors"))
    ema = load_file(str(straight / "runs" / "tiny" / "model_ema" / "model.safetensors"))
    assert any(not torch.equal(final[k], ema[k]) for k in final), "the EMA is not the final model"


# an evaluation and a checkpoint after every step; stops once the held-out loss has fallen by no more than 0.04 for 3
# evaluations in a row (a dozen steps or so into its 24)
EARLY = (
    TINY.replace("max_steps = 8", "max_steps = 24").replace("eval_every = 4", "eval_every = 1").replace("save_every = 2", "save_every = 1")
    .replace("keep_last = 2", "keep_last = 2\nearly_stopping_patience = 3\nearly_stopping_threshold = 0.04")
)


def test_early_stopping_stops_where_transformers_would_and_resumes_to_the_same_stop(tmp_path: Path) -> None:
    """train.early_stopping_patience through the script: the run stops after the evaluation at which transformers'
    EarlyStoppingCallback (fed the same held-out losses) stops the Trainer, well before max_steps, saves its final
    model there without evaluating it again, and says so in run.json; killed after the checkpoint of the step before
    the stop, or of the stop itself, and run again, it stops at the same step with the same metrics and weights."""
    from runtime.test_stopping import trainer_stops

    straight = _project(tmp_path / "straight", EARLY)
    proc = _train(_build(straight))
    run = straight / "runs" / "tiny"
    evals = [m for m in _metrics(run) if "eval_loss" in m]
    stop = trainer_stops([m["eval_loss"] for m in evals], 3, 0.04).index(True)
    at = evals[stop]["step"]
    assert 3 <= at < 24 and evals[-1]["step"] == at  # nothing evaluated after the stop, the final evaluation included
    assert max(m["step"] for m in _metrics(run)) == at and f"stopped early at step {at}: eval_loss has not improved" in proc.stdout + proc.stderr
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["steps"] == at
    lowest = min(evals, key=lambda m: m["eval_loss"])
    assert record["stopped_early"] == {"step": at, "metric": "eval_loss", "best": lowest["eval_loss"], "best_step": lowest["step"], "patience": 3, "threshold": 0.04}
    assert record["final"]["eval_loss"] == evals[-1]["eval_loss"]
    strip = lambda ms: [{k: v for k, v in m.items() if not k.endswith("_per_s")} for m in ms]  # noqa: E731 (timings differ)
    for kill_at in (at - 1, at):
        killed = _project(tmp_path / f"killed-{kill_at}", EARLY)
        build_dir = _build(killed)
        _kill(tmp_path, build_dir, kill_at, "after-commit")
        proc = _train(build_dir)
        assert "resumed from" in proc.stdout + proc.stderr
        assert strip(_metrics(killed / "runs" / "tiny")) == strip(_metrics(run)), kill_at
        assert json.loads((killed / "runs" / "tiny" / "run.json").read_text())["stopped_early"] == record["stopped_early"]
        _assert_same_weights(run, killed / "runs" / "tiny")


def test_early_stopping_over_two_processes_stops_every_process_at_once(tmp_path: Path) -> None:
    """DDP over gloo: every process takes the same all-reduced held-out loss, so all of them stop after the same
    evaluation (the one transformers' callback picks from the logged losses) and the run ends, saved, without a
    process left waiting in a collective."""
    from runtime.test_stopping import trainer_stops

    project = _project(tmp_path / "two", EARLY.replace("attention_dropout = 0.1", "attention_dropout = 0.0"))
    build_dir = _build(project, "launch.num_processes=2", "train.save_every=0")
    _launched(build_dir)
    run = project / "runs" / "tiny"
    evals = [m for m in _metrics(run) if "eval_loss" in m]
    at = evals[trainer_stops([m["eval_loss"] for m in evals], 3, 0.04).index(True)]["step"]
    assert at < 24 and evals[-1]["step"] == at and max(m["step"] for m in _metrics(run)) == at
    assert json.loads((run / "run.json").read_text())["stopped_early"]["step"] == at and (run / "model" / "model.safetensors").exists()


# an LR high enough that the held-out loss turns up again before the end; every checkpoint kept
BEST = (
    TINY.replace("max_steps = 8", "max_steps = 12").replace("eval_every = 4", "eval_every = 1").replace("save_every = 2", "save_every = 1")
    .replace("keep_last = 2", "keep_last = 0").replace("lr = 1e-2", "lr = 5e-2")
    + "\n[output]\nsave_best = true\n"
)


def test_save_best_keeps_the_model_of_the_lowest_held_out_loss_across_a_resume(tmp_path: Path) -> None:
    """output.save_best: model_best/ holds the weights the run had at the evaluation with the lowest held-out loss
    (bitwise those of that step's checkpoint), its tokenizer and best.json, and run.json names that step, here one
    before the end; killed after the checkpoint of the step before that best (model_best/ then holds that step's
    model) or of the step after it (a resumed run must know its lowest loss, or it would take a later, higher one
    for the best) and run again, it ends with the same model_best/, nothing half-written left beside it."""
    import torch
    from safetensors.torch import load_file

    straight = _project(tmp_path / "straight", BEST)
    _train(_build(straight))
    runs = {"straight": straight / "runs" / "tiny"}
    lowest = min((m for m in _metrics(runs["straight"]) if "eval_loss" in m), key=lambda m: m["eval_loss"])
    best = lowest["step"]
    assert 1 < best < 12  # the loss turned up again after it
    for name, kill_at in (("killed-before", best - 1), ("killed-after", best + 1)):
        project = _project(tmp_path / name, BEST)
        build_dir = _build(project)
        run = project / "runs" / "tiny"
        _kill(tmp_path, build_dir, kill_at, "after-commit")
        kept = json.loads((run / "model_best" / "best.json").read_text())["step"]
        assert kept < best if kill_at < best else kept == best
        _train(build_dir)
        runs[name] = run
    for run in runs.values():
        assert json.loads((run / "model_best" / "best.json").read_text()) == {"step": best, "eval_loss": lowest["eval_loss"]}
        assert json.loads((run / "run.json").read_text())["model_best"] == {"step": best, "eval_loss": lowest["eval_loss"]}
        assert (run / "model_best" / "tokenizer.json").exists() and (run / "model_best" / "config.json").exists()
        assert sorted(p.name for p in run.iterdir() if "model_best" in p.name) == ["model_best"]
        kept = load_file(str(run / "model_best" / "model.safetensors"))
        at_best = load_file(str(run / "checkpoints" / f"step_{best:08d}" / "model.safetensors"))
        final = load_file(str(run / "model" / "model.safetensors"))
        assert kept.keys() == at_best.keys() and all(torch.equal(kept[k], at_best[k]) for k in kept)
        assert any(not torch.equal(kept[k], final[k]) for k in kept)  # not the final model


def test_save_best_keeps_the_highest_where_greater_is_better(tmp_path: Path) -> None:
    """train.greater_is_better = true on eval_loss (the direction reaches the script): model_best/ holds the model
    of the highest held-out loss, bitwise that step's checkpoint, and best.json says so."""
    import torch
    from safetensors.torch import load_file

    project = _project(tmp_path / "highest", BEST)
    # no evaluation before the first step: the highest loss is one after a step, which has a checkpoint (the first
    # step, at the warmup's LR 0, leaves the model as it started; the text the steps see ships with Python and
    # differs between its releases, so whether the loss first rises or falls is not fixed)
    _train(_build(project, "train.greater_is_better=true", "train.eval_at_start=false"))
    run = project / "runs" / "tiny"
    highest = max((m for m in _metrics(run) if "eval_loss" in m), key=lambda m: m["eval_loss"])
    lowest = min((m for m in _metrics(run) if "eval_loss" in m), key=lambda m: m["eval_loss"])
    assert 0 < highest["step"] < 12 and highest["step"] != lowest["step"]
    assert json.loads((run / "model_best" / "best.json").read_text()) == {"step": highest["step"], "eval_loss": highest["eval_loss"]}
    kept = load_file(str(run / "model_best" / "model.safetensors"))
    at = load_file(str(run / "checkpoints" / f"step_{highest['step']:08d}" / "model.safetensors"))
    assert all(torch.equal(kept[k], at[k]) for k in kept)


def test_save_best_under_fsdp_gathers_the_shards_of_every_process(tmp_path: Path) -> None:
    """output.save_best with the model sharded over 2 processes (torch's fully_shard over gloo): at each new lowest
    loss every process gathers its shards into the main process's model_best/, which ends as the lowest evaluation's,
    whole (every tensor of the final model, at its full shape), and the run ends without a process left waiting."""
    from safetensors.torch import load_file

    project = _project(tmp_path / "fsdp", BEST.replace("[launch]\ncpu = true", '[launch]\ncpu = true\nstrategy = "fsdp"\nnum_processes = 2'))
    build_dir = _build(project, "train.save_every=0")
    _launched(build_dir)
    run = project / "runs" / "tiny"
    evals = [m for m in _metrics(run) if "eval_loss" in m]
    lowest = min(evals, key=lambda m: m["eval_loss"])
    assert json.loads((run / "model_best" / "best.json").read_text()) == {"step": lowest["step"], "eval_loss": lowest["eval_loss"]}
    kept, final = load_file(str(run / "model_best" / "model.safetensors")), load_file(str(run / "model" / "model.safetensors"))
    assert kept.keys() == final.keys() and all(kept[k].shape == final[k].shape for k in kept)


ANNEAL_SOURCE = """
[[data.sources]]
builtin = "python-stdlib"
max_documents = 3
phases = ["cooldown"]
"""


@pytest.mark.parametrize("kill_at", [4, 6])
def test_a_source_added_in_the_cooldown_trains_there_and_resumes_bitwise(tmp_path: Path, kill_at: int) -> None:
    """wsd with 2 warmup, 3 stable and 3 cooldown steps; the stdlib joins the prose for the cooldown."""
    recipe = TINY.replace("warmup = 2", 'warmup = 2\ndecay = "wsd"\ncooldown = 3').replace(
        "max_documents = 4\n", "max_documents = 4\n" + ANNEAL_SOURCE
    )
    straight = _project(tmp_path / "straight", recipe)
    build_dir = _build(straight)
    assert "segments = [" in (build_dir / "train.py").read_text()
    from recipec.compiler import plan_recipe

    plan, _ = plan_recipe(straight / "recipes" / "tiny.toml", project=straight)
    assert plan["segments"] == [
        {"first_step": 0, "last_step": 5, "sources": [0], "weights": None, "phases": ["warmup", "stable"]},
        {"first_step": 5, "last_step": None, "sources": [0, 1], "weights": None, "phases": ["cooldown"]},
    ]
    proc = _train(build_dir)
    import re

    (first, second) = re.search(r"sequences of 32 tokens: (\d+) \+ (\d+) train", proc.stdout + proc.stderr).groups()
    assert int(second) > int(first)  # the cooldown trains on the prose and the stdlib source
    killed = _project(tmp_path / "killed", recipe)
    killed_build = _build(killed)
    _kill(tmp_path, killed_build, kill_at, "after-commit")
    _train(killed_build)
    _assert_same_weights(straight / "runs" / "tiny", killed / "runs" / "tiny")


LORA = """
[peft]
method = "lora"
r = 4
alpha = 8
dropout = 0.1
target_modules = "all-linear"
save_merged = true
"""


def test_lora_on_a_parent_run_resumes_bitwise_and_saves_a_loadable_adapter(tmp_path: Path, uninterrupted: Path) -> None:
    """PEFT with continual pre-training and resume: the adapter after kill-and-resume is bitwise the same."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    recipe = CPT.format(parent=uninterrupted.as_posix(), continual="", schedule="[schedule]\nwarmup = 2") + LORA
    recipe = recipe.replace("max_steps = 4", "max_steps = 6").replace("save_every = 0", "save_every = 2")
    runs = {}
    for label in ("straight", "killed"):
        project = tmp_path / label
        (project / "recipes").mkdir(parents=True)
        (project / "recipes" / "tiny.toml").write_text(recipe)
        written, plan = build(project / "recipes" / "tiny.toml", (), project / "build" / "lora", project=project)
        if label == "killed":
            _kill(tmp_path, written.dir, 4, "after-commit")
        proc = _train(written.dir)
        runs[label] = project / "runs" / "tiny-cpt"
    assert "peft lora: " in proc.stdout + proc.stderr
    a = load_file(str(runs["straight"] / "model" / "adapter_model.safetensors"))
    b = load_file(str(runs["killed"] / "model" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and a and all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads((runs["straight"] / "run.json").read_text())
    assert record["peft"]["method"] == "lora" and 0 < record["peft"]["trainable_params"] < record["peft"]["all_params"]
    # the adapter loads onto the parent's model, and the merged model gives the same logits
    ids = torch.arange(1, 17).reshape(1, 16)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(uninterrupted / "model"), runs["straight"] / "model")
    merged = AutoModelForCausalLM.from_pretrained(runs["straight"] / "model_full")
    adapted.eval(), merged.eval()
    with torch.no_grad():
        assert torch.allclose(adapted(ids).logits, merged(ids).logits, atol=1e-4)


def test_a_wrong_peft_target_stops_check_and_the_script_before_any_data_is_read(tmp_path: Path, uninterrupted: Path) -> None:
    recipe = CPT.format(parent=uninterrupted.as_posix(), continual="", schedule="") + LORA.replace(
        'target_modules = "all-linear"', 'target_modules = ["q_prj", "v_proj"]'
    )
    project = tmp_path / "bad"
    (project / "recipes").mkdir(parents=True)
    (project / "recipes" / "tiny.toml").write_text(recipe)
    check = subprocess.run(
        [sys.executable, "-m", "recipec", "--no-color", "check", "recipes/tiny.toml"],
        cwd=project, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert check.returncode == 2
    assert "target module 'q_prj' matches no module of LlamaForCausalLM; did you mean 'q_proj'?" in check.stderr
    assert "Traceback" not in check.stderr
    written, _ = build(project / "recipes" / "tiny.toml", (), project / "build" / "bad", project=project)
    proc = _train(written.dir, expect=1)
    assert "error: peft.target_modules: target module 'q_prj'" in proc.stderr
    assert "documents:" not in proc.stdout  # stopped before the data was read
    ok = subprocess.run(
        [sys.executable, "-m", "recipec", "check", "recipes/tiny.toml", "--set", 'peft.target_modules=["q_proj", "v_proj"]'],
        cwd=project, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ok.returncode == 0 and "trainable: 1,024 (" in ok.stderr


MIXTURE = TINY.replace(
    '[[data.sources]]\nbuiltin = "python-docs"\nmax_documents = 4\n',
    """[[data.sources]]
name = "docs"
builtin = "python-docs"
max_documents = 30
weight = 0.5
phase_weights = {cooldown = 0.9}

[[data.sources.filters]]
type = "gopher_quality"
min_words = 20
min_alpha_words_ratio = 0.6

[[data.sources]]
name = "notes"
path = "data/*.jsonl"
weight = 0.5
phase_weights = {cooldown = 0.1}

[[data.filters]]
type = "exact_dedup"

[[data.filters]]
type = "minhash_dedup"
""",
).replace("[schedule]\nwarmup = 2\n", '[schedule]\nwarmup = 2\ndecay = "wsd"\ncooldown = 0.5\n')


def test_a_filtered_weighted_mixture_trains_and_records_its_data(tmp_path: Path) -> None:
    """The data stage inside a real run: filters, dedup, per-phase weights, the report and hashes."""
    project = _project(tmp_path, MIXTURE)
    (project / "data").mkdir()
    notes = [f"note {i}: the cache keeps the packed sequences of every mixture for the next run." for i in range(40)]
    notes += notes[:5]  # exact duplicates, dropped by exact_dedup
    (project / "data" / "notes.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in notes))
    build_dir = _build(project)
    first = _train(build_dir)
    run_dir = project / "runs" / "tiny"
    report = json.loads((run_dir / "data_report.json").read_text())
    by_label = {f["label"]: f for f in report["filters"]}
    assert by_label["docs.filters[0]"]["docs_in"] == 30 and by_label["docs.filters[0]"]["docs_dropped"] > 0
    assert by_label["filters[0]"]["by_source"]["notes"] == {"in": 45, "dropped": 5}
    assert [s["asked"] for s in report["segments"]] == [{"docs": 0.5, "notes": 0.5}, {"docs": 0.9, "notes": 0.1}]
    for segment in report["segments"]:
        for label, share in segment["asked"].items():
            assert abs(segment["realised"][label] - share) < 0.05
    record = json.loads((run_dir / "run.json").read_text())
    assert record["data"]["sequences_sha256"] == [s["sequences_sha256"] for s in report["segments"]]
    assert "data: wrote" in first.stderr
    losses = [m["loss"] for m in _metrics(run_dir) if "loss" in m]
    # a second run of the same build finds the cache entry and trains on the same sequences
    shutil.rmtree(run_dir)
    second = _train(build_dir)
    assert "data: wrote" not in second.stderr
    assert json.loads((run_dir / "run.json").read_text())["data"] == record["data"]
    assert [m["loss"] for m in _metrics(run_dir) if "loss" in m] == losses


def test_resuming_under_a_changed_build_stops_with_the_diff_unless_allowed(tmp_path: Path) -> None:
    project = _project(tmp_path, TINY)
    build_dir = _build(project)
    _kill(tmp_path, build_dir, 4, "after-commit")
    checkpoints = project / "runs" / "tiny" / "checkpoints"
    assert (max(checkpoints.iterdir()) / "resolved.toml").is_file()
    changed = _build(project, "optim.lr=5e-3")
    stopped = _train(changed, expect=1)
    assert "resuming would continue the run with these changes" in stopped.stderr
    assert "-lr = 0.01" in stopped.stderr and "+lr = 0.005" in stopped.stderr
    assert "--allow-changed" in stopped.stderr
    allowed = forkrun.run(
        [sys.executable, str(changed / "train.py"), "--allow-changed"], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert allowed.returncode == 0, allowed.stderr[-4000:]
    assert "resuming under a changed build" in allowed.stdout + allowed.stderr
    assert json.loads((project / "runs" / "tiny" / "run.json").read_text())["status"] == "completed"
