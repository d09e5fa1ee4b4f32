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


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONHASHSEED="0")
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
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


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
    assert record["hardware"]["device"] == "cpu"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(uninterrupted / "model")
    tokenizer = AutoTokenizer.from_pretrained(uninterrupted / "model")
    assert model.config.vocab_size == len(tokenizer) == 400


@pytest.mark.parametrize("mode,resumes_from", [("after-commit", 4), ("before-commit", 2)])
def test_kill_and_resume_gives_bitwise_identical_weights(
    tmp_path: Path, uninterrupted: Path, mode: str, resumes_from: int
) -> None:
    project = _project(tmp_path, TINY)
    build_dir = _build(project)
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    killed = subprocess.run(
        [sys.executable, str(killer), str(build_dir), "4", mode], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    run_dir = project / "runs" / "tiny"
    assert not (run_dir / "model").exists()
    resumed = _train(build_dir)
    assert f"at step {resumes_from}" in resumed.stdout + resumed.stderr
    _assert_same_weights(uninterrupted, run_dir)
    # the log of the resumed run is the log of the uninterrupted one, step for step
    strip = lambda ms: [{k: v for k, v in m.items() if k != "tokens_per_s"} for m in ms]  # noqa: E731
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
    recipe = TINY.replace('builtin = "python-docs"\nmax_documents = 4', 'path = "data/*.jsonl"')
    _project(tmp_path, recipe)
    proc = subprocess.run(
        [sys.executable, "-m", "recipec", "run", "recipes/tiny.toml"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode not in (0, 2)
    assert "data/*.jsonl" in proc.stderr
    assert "build/tiny/train.py" in proc.stderr.splitlines()[-1]


def test_two_processes_on_cpu_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    """DDP over gloo: 2 processes x micro 4 give the same losses as 1 process x micro 4 x accum 2."""
    one = _project(tmp_path / "one", TINY.replace("attention_dropout = 0.1", "attention_dropout = 0.0"))
    two = _project(tmp_path / "two", TINY.replace("attention_dropout = 0.1", "attention_dropout = 0.0"))
    settings = ["train.max_steps=3", "train.save_every=0", "train.eval_every=0"]
    _train(_build(one, *settings))
    build_two = _build(two, *settings, "launch.num_processes=2")
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(build_two / "accelerate_config.yaml"),
         str(build_two / "train.py")],
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    a = [m["loss"] for m in _metrics(one / "runs" / "tiny") if "loss" in m]
    b = [m["loss"] for m in _metrics(two / "runs" / "tiny") if "loss" in m]
    assert len(a) == len(b) == 3
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)


def test_fine_tune_a_local_pretrained_model_with_its_own_tokenizer_unpacked(tmp_path: Path, uninterrupted: Path) -> None:
    recipe = TINY.split("[model]")[0] + textwrap.dedent(
        f"""
        [model]
        path = "{uninterrupted / 'model'}"

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
    _train(build_dir)
    run_dir = project / "runs" / "tiny"
    assert [m["step"] for m in _metrics(run_dir) if "loss" in m] == [1, 2, 3]
    before, after = _weights(uninterrupted), _weights(run_dir)
    assert before.keys() == after.keys()
    import torch

    assert any(not torch.equal(before[k], after[k]) for k in before), "fine-tuning changed no weight"
