"""A training run killed with SIGKILL anywhere resumes to bitwise the same weights.

One uninterrupted reference run (a fresh process, every checkpoint kept) is compared with
runs that are killed, resumed, killed again, and so on until one finishes:

- at deterministic points inside the writing of a checkpoint: before or after each of the
  files accelerate writes, in the middle of one (the file cut to half its size), before
  the state file, before the rename, after the rename but before pruning, and in the
  middle of deleting a pruned checkpoint;
- at random moments (seeded), uniformly over what is left of the run: the training loop
  from the resume point, its checkpoint saves and the final save;
- at random moments inside a checkpoint save (a save of the run picked at random, a
  moment uniformly within that save's duration: a run's first save, or its longest
  later one), since saves are a small part of the run and uniform kills rarely land in one.

The tests after it delete each file of the newest checkpoint in turn (the run names the
file, falls back to the checkpoint before and still ends bitwise the same), and stop a
run before its first step for a disk too small for one checkpoint, or for the checkpoints
it keeps (free space reported by a patched shutil.disk_usage in the run's process) and for an output directory that
cannot be written (a path under a regular file: tests may run as root, for whom a
read-only mode stops nothing).

After every kill: every ``step_*`` directory is intact, the checkpoint a resume picks is
the newest one, is never newer than the save that was cut short, and its files are
byte for byte those of the reference run's checkpoint of the same step. After the last
run: the final weights are bitwise the reference's and no ``.tmp-``/``.old-`` leftover
remains.

Importing torch and transformers takes most of a run's few seconds, so the killed runs
are forked from one process that has imported them (the "zygote" below); each run is
still a process of its own, killed from outside with SIGKILL. The reference run is an
ordinary fresh process, so the fork cannot hide a difference.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import forkrun
from recipec.compiler import build
from recipec.runtime import checkpoint
from test_training import _env as training_env

pytestmark = pytest.mark.slow

SAVE_EVERY = 2
MAX_STEPS = 16
# dropout draws random numbers, so the RNG state in a checkpoint must come back exactly
RECIPE = f"""
[recipe]
name = "tiny"
seed = 11

[model]
init = "llama"

[model.config]
hidden_size = 32
intermediate_size = 64
num_hidden_layers = 1
num_attention_heads = 2
max_position_embeddings = 64
attention_dropout = 0.1

[tokenizer]
train = {{kind = "bpe", vocab_size = 400}}

[data]
seq_len = 32
eval_fraction = 0.25

[[data.sources]]
builtin = "python-docs"
max_documents = 4

[optim]
lr = 1e-2

[train]
micro_batch_size = 4
batch_size = 8
max_steps = {MAX_STEPS}
log_every = 1
eval_every = 0
eval_batches = 2
save_every = {SAVE_EVERY}
keep_last = 2

[launch]
cpu = true
"""

# The files accelerate's save_state writes, in order; the runs count them as they go.
SAVED_FILES = 4  # model.safetensors, optimizer.bin, scheduler.bin, random_states_0.pkl
COMPARED = ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl")

ZYGOTE = r'''
import json, os, runpy, signal, sys, threading, time

import torch, accelerate, accelerate.checkpointing, safetensors.torch  # the slow imports, done once
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
import transformers.models.llama.modeling_llama
from torch.utils.data import DataLoader

protocol = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # nothing but the protocol on the original stdout


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def hooks(job, ready):
    """Kill this run at job["point"] of the save of step job["step"]; tell the parent when the loop starts."""
    from recipec_runtime import checkpoint

    point, at = job.get("point"), job.get("step")
    saving = {"step": None, "files": 0, "depth": 0, "pruning": False}

    def here(name):
        return point == name and saving["step"] == at

    temp_dir = checkpoint.temp_dir
    def temp_dir_hook(ckpt_dir, step, clean=True):
        os.write(ready, b"s")  # a save starts
        tmp = temp_dir(ckpt_dir, step, clean=clean)
        saving.update(step=step, files=0, dir=str(tmp))
        return tmp
    checkpoint.temp_dir = temp_dir_hook

    def counted(real):
        def write(obj, f, *args, **kwargs):
            saving["depth"] += 1
            try:
                if saving["depth"] == 1 and here(f"after-files-{saving['files']}"):
                    die()
                real(obj, f, *args, **kwargs)
            finally:
                saving["depth"] -= 1
            if saving["depth"] == 0 and saving["step"] is not None and str(f).startswith(saving["dir"] + os.sep):
                saving["files"] += 1
                if here(f"torn-file-{saving['files']}"):
                    os.truncate(f, os.path.getsize(f) // 2)  # the kill came mid-write
                    die()
        return write
    accelerate.checkpointing.save = counted(accelerate.checkpointing.save)
    torch.save = counted(torch.save)

    write_state = checkpoint.write_state
    def write_state_hook(directory, state):
        if here("before-state"):
            die()
        return write_state(directory, state)
    checkpoint.write_state = write_state_hook

    commit = checkpoint.commit
    def commit_hook(tmp, ckpt_dir, step):
        if here("before-commit"):
            die()
        final = commit(tmp, ckpt_dir, step)
        if here("after-commit"):
            die()
        return final
    checkpoint.commit = commit_hook

    prune = checkpoint.prune
    def prune_hook(ckpt_dir, keep_last):
        saving["pruning"] = True
        try:
            return prune(ckpt_dir, keep_last)
        finally:
            saving["pruning"] = False
            if saving["step"] is not None:
                os.write(ready, b"e")  # the save is over
    checkpoint.prune = prune_hook

    rmtree = checkpoint._rmtree
    def rmtree_hook(path):
        # a pruned checkpoint half deleted: its first file gone, then the kill
        if saving["pruning"] and here("mid-prune") and "step_" in path.name and not path.name.startswith(".tmp-"):
            sorted(p for p in path.iterdir() if p.is_file())[0].unlink()
            die()
        return rmtree(path)
    checkpoint._rmtree = rmtree_hook

    if job.get("free") is not None:  # a disk with this much free space
        import collections, shutil
        usage = collections.namedtuple("usage", "total used free")
        shutil.disk_usage = lambda path: usage(10 * 2**30, 10 * 2**30 - job["free"], job["free"])

    resume_point = checkpoint.resume_point
    def resume_point_hook(ckpt_dir):
        found = resume_point(ckpt_dir)
        os.write(ready, b"x")  # the loop starts now
        return found
    checkpoint.resume_point = resume_point_hook


for line in sys.stdin:
    job = json.loads(line)
    ready_r, ready_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            sys.path.insert(0, job["build"])
            hooks(job, ready_w)
            sys.argv = [os.path.join(job["build"], "train.py")]
            runpy.run_path(sys.argv[0], run_name="__main__")
            code = 0
        except SystemExit as e:  # as the interpreter does: a message goes to stderr, exit status 1
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(ready_w)
    # "x": the loop starts, "s"/"e": a save starts/ends; the kill is timed from job["after"]:
    # "loop" or "save-K" (the K-th save of this run), job["delay"] seconds later
    events, timer = [], None
    while True:
        event = os.read(ready_r, 1).decode()
        if not event:  # the run has ended
            break
        events.append((event, time.monotonic()))
        saves = sum(1 for e, _ in events if e == "s")
        trigger = "loop" if event == "x" else f"save-{saves}" if event == "s" else None
        if timer is None and job.get("delay") is not None and trigger == job.get("after", "loop"):
            timer = threading.Timer(job["delay"], os.kill, (pid, signal.SIGKILL))  # from outside the run
            timer.start()
    os.close(ready_r)
    _, status = os.waitpid(pid, 0)
    ended = time.monotonic()
    if timer is not None:
        timer.cancel()
        timer.join()
    starts = [t for e, t in events if e == "x"]
    save_s = [t1 - t0 for (e0, t0), (e1, t1) in zip(events, events[1:]) if (e0, e1) == ("s", "e")]
    protocol.write(json.dumps({
        "rc": os.waitstatus_to_exitcode(status),
        "loop_s": ended - starts[0] if starts else None,
        "save_s": save_s,
    }) + "\n")
'''


def _env() -> dict[str, str]:
    # one thread: the reference and the killed runs must sum in the same order, and a tiny
    # model on a shared two-core machine runs no faster with more
    return training_env(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


class Zygote:
    """A process that imports torch once and forks one training run per job."""

    def __init__(self, tmp: Path) -> None:
        script = tmp / "zygote.py"
        script.write_text(ZYGOTE)
        self.proc = subprocess.Popen(
            [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_env(), text=True
        )
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.runs = 0

    def run(self, build_dir: Path, **job) -> tuple[dict, str]:
        self.runs += 1
        log = self.logs / f"{self.runs:03d}.log"
        self.proc.stdin.write(json.dumps({"build": str(build_dir), "log": str(log), **job}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the zygote died\n{log.read_text() if log.exists() else ''}"
        return json.loads(line), log.read_text()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _ckpt_dir(project: Path, run: str) -> Path:
    return project / "runs" / run / "checkpoints"


def _step(path: Path | None) -> int:
    return -1 if path is None else checkpoint.read_state(path)["step"]


def _check_after_kill(ckpt_dir: Path, reference: Path, cut_short: int | None) -> int:
    """The invariants of a killed run's checkpoints; returns the step a resume starts from (-1: none)."""
    for step_dir in ckpt_dir.glob("step_*"):
        assert not checkpoint.problems(step_dir), f"a crash left a damaged {step_dir}: {checkpoint.problems(step_dir)}"
    picked, warnings = checkpoint.resume_point(ckpt_dir)
    assert not warnings, warnings
    assert picked == checkpoint.latest(ckpt_dir)
    step = _step(picked)
    if cut_short is not None:
        assert step < cut_short, f"the save of step {cut_short} was cut short, yet {picked} was picked"
    if picked is not None:
        assert picked.name.startswith("step_")
        want = reference / picked.name
        for name in COMPARED:
            assert (picked / name).read_bytes() == (want / name).read_bytes(), f"{picked / name} differs from the reference"
    return step


def _assert_finished_like_reference(project: Path, reference_run: Path) -> None:
    a = (project / "runs" / "tiny" / "model" / "model.safetensors").read_bytes()
    b = (reference_run / "model" / "model.safetensors").read_bytes()
    assert a == b, "final weights differ from the uninterrupted run"
    leftovers = [p.name for p in _ckpt_dir(project, "tiny").iterdir() if p.name.startswith((".tmp-", ".old-"))]
    assert not leftovers, leftovers


DETERMINISTIC = [
    # (where the run dies, during the save of which step, the step it must resume from)
    ("torn-file-1", 2, -1),  # the first checkpoint's weights half written: nothing to resume from
    ("after-files-0", 2, -1),
    ("after-files-1", 2, -1),
    ("torn-file-2", 4, 2),  # optimizer state half written
    ("after-files-2", 4, 2),
    ("after-files-3", 4, 2),  # all but the RNG state
    ("torn-file-4", 4, 2),  # the RNG state half written
    ("before-state", 4, 2),  # every file but the state file
    ("before-commit", 4, 2),  # complete, not yet renamed into place
    ("after-commit", 4, 4),  # renamed, not yet pruned
    ("mid-prune", 6, 6),  # step 2 pruned after step 6 was committed: half deleted
    ("torn-file-3", 8, 6),
    ("after-commit", 10, 10),
    ("before-commit", 14, 12),  # the last checkpoint before the end
    ("mid-prune", 14, 14),
]
RANDOM_KILLS = 12
RANDOM_SAVE_KILLS = 8


class Setup:
    """The project, its two builds, the reference run and the zygote, shared by the tests below."""

    def __init__(self, tmp: Path) -> None:
        self.project = tmp / "project"
        (self.project / "recipes").mkdir(parents=True)
        recipe = self.project / "recipes" / "tiny.toml"
        recipe.write_text(RECIPE)
        ref_build, _ = build(recipe, ["output.dir=runs/reference", "train.keep_last=0"], self.project / "build" / "reference", project=self.project)
        self.build, _ = build(recipe, [], self.project / "build" / "tiny", project=self.project)
        # the reference: a fresh process, never killed, every checkpoint kept
        proc = forkrun.run([sys.executable, str(ref_build.train_py)], env=_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        self.reference_run = self.project / "runs" / "reference"
        self.reference = _ckpt_dir(self.project, "reference")
        steps = range(SAVE_EVERY, MAX_STEPS, SAVE_EVERY)
        assert sorted(p.name for p in self.reference.iterdir()) == [checkpoint.checkpoint_name(s) for s in steps]
        self.zygote = Zygote(tmp)
        self.run_dir = self.project / "runs" / "tiny"
        self.ckpt_dir = _ckpt_dir(self.project, "tiny")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    made = Setup(tmp_path_factory.mktemp("crash"))
    yield made
    made.zygote.close()


def test_sigkill_anywhere_resumes_bitwise(setup: Setup) -> None:
    started = time.monotonic()
    project, run_build, reference_run, reference, zygote = setup.project, setup.build, setup.reference_run, setup.reference, setup.zygote
    outcomes: Counter[str] = Counter()
    # the same run through the zygote, never killed: the loop's duration, and proof that forking changes nothing
    result, log = zygote.run(run_build.dir)
    assert result["rc"] == 0, log[-4000:]
    _assert_finished_like_reference(project, reference_run)
    loop_s = result["loop_s"]
    assert len(result["save_s"]) == len(range(SAVE_EVERY, MAX_STEPS, SAVE_EVERY))
    # how long a save takes, from its temp_dir to the end of its prune: a run's first save pays what the process has not
    # done before (about a second), the later ones a few hundredths of it
    first_save_s, later_save_s = result["save_s"][0], max(result["save_s"][1:])
    shutil.rmtree(project / "runs" / "tiny")

    # deterministic points: one chain of runs, each killed at its point and resumed by the next
    for point, step, resumes_from in DETERMINISTIC:
        result, log = zygote.run(run_build.dir, point=point, step=step)
        assert result["rc"] == -9, f"{point} at step {step} never came: exit {result['rc']}\n{log[-4000:]}"
        picked = _check_after_kill(_ckpt_dir(project, "tiny"), reference, None if "commit" in point or point == "mid-prune" else step)
        assert picked == resumes_from, f"after {point} at step {step}: resumes from {picked}, not {resumes_from}"
        outcomes[f"deterministic {point}"] += 1
    result, log = zygote.run(run_build.dir)
    assert result["rc"] == 0, log[-4000:]
    assert f"at step {MAX_STEPS - SAVE_EVERY}" in log
    _assert_finished_like_reference(project, reference_run)
    shutil.rmtree(project / "runs" / "tiny")

    # random moments of the loop, the saves and the final save; chains of kills until a run finishes
    rng = random.Random(20240611)
    kills = 0
    while kills < RANDOM_KILLS:
        before = _step(checkpoint.latest(_ckpt_dir(project, "tiny")))
        # uniform over what is left of the run (the loop from the resume point, the final save)
        delay = rng.uniform(0, loop_s * (MAX_STEPS - max(before, 0)) / MAX_STEPS)
        result, log = zygote.run(run_build.dir, delay=delay)
        if result["rc"] == 0:  # finished before the kill: the chain is over
            if before >= 0:
                assert f"{checkpoint.checkpoint_name(before)} at step {before}" in log
            outcomes["random: finished before the kill"] += 1
            _assert_finished_like_reference(project, reference_run)
            shutil.rmtree(project / "runs" / "tiny")
            continue
        assert result["rc"] == -9, log[-4000:]
        kills += 1
        ckpt_dir = _ckpt_dir(project, "tiny")
        mid_save = ckpt_dir.is_dir() and any(p.name.startswith(".tmp-") for p in ckpt_dir.iterdir())
        after_loop = f"{MAX_STEPS}/{MAX_STEPS}" in log  # tqdm's last line: the final eval and save
        after = _check_after_kill(ckpt_dir, reference, None)
        assert after >= before, "a kill lost a committed checkpoint"
        if "resumed from" in log:  # it may have died before it said so
            assert f"{checkpoint.checkpoint_name(before)} at step {before}" in log
        where = "mid-save" if mid_save else "after the loop" if after_loop else "in the loop, not saving"
        outcomes[f"random: killed {where}"] += 1
    result, log = zygote.run(run_build.dir)
    assert result["rc"] == 0, log[-4000:]
    _assert_finished_like_reference(project, reference_run)
    shutil.rmtree(project / "runs" / "tiny")

    # random moments inside the saves: a save of the run picked at random, a moment uniformly within its duration
    kills = 0
    while kills < RANDOM_SAVE_KILLS:
        before = _step(checkpoint.latest(_ckpt_dir(project, "tiny")))
        left = (MAX_STEPS - 1 - max(before, 0)) // SAVE_EVERY  # saves this run will make
        if left == 0:
            result, log = zygote.run(run_build.dir)
            assert result["rc"] == 0, log[-4000:]
            _assert_finished_like_reference(project, reference_run)
            shutil.rmtree(project / "runs" / "tiny")
            continue
        k = rng.randint(1, left)
        delay = rng.uniform(0, first_save_s if k == 1 else later_save_s)  # a moment inside the k-th save of this run
        result, log = zygote.run(run_build.dir, after=f"save-{k}", delay=delay)
        assert result["rc"] in (0, -9), log[-4000:]
        if result["rc"] == 0:  # the kill came after the save and the rest of the run was too quick
            outcomes["random in a save: finished before the kill"] += 1
            _assert_finished_like_reference(project, reference_run)
            shutil.rmtree(project / "runs" / "tiny")
            continue
        kills += 1
        ckpt_dir = _ckpt_dir(project, "tiny")
        mid_save = ckpt_dir.is_dir() and any(p.name.startswith(".tmp-") for p in ckpt_dir.iterdir())
        assert _check_after_kill(ckpt_dir, reference, None) >= before, "a kill lost a committed checkpoint"
        outcomes["random in a save: killed " + ("before its rename" if mid_save else "after its rename")] += 1
    result, log = zygote.run(run_build.dir)
    assert result["rc"] == 0, log[-4000:]
    _assert_finished_like_reference(project, reference_run)
    shutil.rmtree(project / "runs" / "tiny")
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
    print(f"\nkill points: {summary}; {zygote.runs} runs, {time.monotonic() - started:.0f} s")


CHECKPOINT_FILES = ["model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", checkpoint.STATE_FILE, "config.json"]


def test_a_checkpoint_missing_a_file_is_named_and_the_run_falls_back_to_the_one_before(setup: Setup) -> None:
    """Each file of the newest checkpoint deleted in turn: a warning naming it, a resume from the previous one, the same weights."""
    result, log = setup.zygote.run(setup.build.dir)
    assert result["rc"] == 0, log[-4000:]
    newest, previous = (setup.ckpt_dir / checkpoint.checkpoint_name(s) for s in (MAX_STEPS - SAVE_EVERY, MAX_STEPS - 2 * SAVE_EVERY))
    saved = setup.project / "saved-checkpoints"
    shutil.copytree(setup.ckpt_dir, saved)
    tried = 0
    for name in CHECKPOINT_FILES:
        (newest / name).unlink()
        result, log = setup.zygote.run(setup.build.dir)
        tried += 1
        assert result["rc"] == 0, log[-4000:]
        assert f"warning: checkpoint {newest} is incomplete ({name} is missing); resuming from {previous.name} instead" in log
        assert f"at step {MAX_STEPS - 2 * SAVE_EVERY}" in log and "Traceback" not in log
        _assert_finished_like_reference(setup.project, setup.reference_run)
        assert not checkpoint.problems(newest)  # saved again by the resumed run
    # a file cut short is caught by its size
    with open(newest / "optimizer.bin", "r+b") as f:
        f.truncate(100)
    result, log = setup.zygote.run(setup.build.dir)
    tried += 1
    assert result["rc"] == 0 and "optimizer.bin has 100 bytes" in log, log[-4000:]
    # nothing intact left: the run stops with the names instead of starting again from step 0
    (newest / "random_states_0.pkl").unlink()
    (previous / "model.safetensors").unlink()
    result, log = setup.zygote.run(setup.build.dir)
    tried += 1
    assert result["rc"] == 1 and "Traceback" not in log, log[-4000:]
    assert f"error: no complete checkpoint to resume from in {setup.ckpt_dir}" in log
    assert f"{newest}: random_states_0.pkl is missing" in log and f"{previous}: model.safetensors is missing" in log
    shutil.rmtree(setup.run_dir)
    shutil.rmtree(saved)
    print(f"\ncorrupt checkpoints: {tried}")


def test_a_disk_too_small_for_one_checkpoint_or_the_kept_ones_stops_before_the_first_step(setup: Setup) -> None:
    real = sum(p.stat().st_size for p in (setup.reference / checkpoint.checkpoint_name(SAVE_EVERY)).iterdir())
    result, log = setup.zygote.run(setup.build.dir, free=real - 1)  # one byte short of a real checkpoint
    assert result["rc"] == 1 and "Traceback" not in log, log[-4000:]
    assert f"error: output directory {setup.run_dir} has " in log and "one checkpoint of this model needs about" in log
    assert "parameters:" in log and "AdamW state" in log
    assert not setup.ckpt_dir.exists() and not (setup.run_dir / "metrics.jsonl").exists()  # no step was taken
    # room for one checkpoint but not for the three the run holds while it saves a third (keep_last 2)
    one = float(re.search(r"one checkpoint of this model needs about ([0-9.]+) MiB", log).group(1)) * 2**20
    result, log = setup.zygote.run(setup.build.dir, free=int(1.5 * one))
    assert result["rc"] == 1 and "Traceback" not in log, log[-4000:]
    assert f"error: output directory {setup.run_dir} has " in log and "but this run holds about" in log
    assert "while a checkpoint is written: 3 checkpoints of " in log and "(train.keep_last 2, and the new one before the oldest is deleted); lower train.keep_last" in log
    assert not setup.ckpt_dir.exists() and not (setup.run_dir / "metrics.jsonl").exists()
    result, log = setup.zygote.run(setup.build.dir, free=2 * 2**30)
    assert result["rc"] == 0, log[-4000:]
    assert "disk: this run holds at most about " in log and f" in {setup.run_dir} at once, while a checkpoint is written: 3 checkpoints of " in log
    shutil.rmtree(setup.run_dir)


def test_an_output_directory_that_cannot_be_written_stops_before_the_first_step(setup: Setup, tmp_path: Path) -> None:
    # as root a read-only mode does not stop a write, but a path under a regular file fails for everyone
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    written, _ = build(
        setup.project / "recipes" / "tiny.toml", [f"output.dir={blocker}/run"], setup.project / "build" / "blocked", project=setup.project
    )
    result, log = setup.zygote.run(written.dir)
    assert result["rc"] == 1 and "Traceback" not in log, log[-4000:]
    assert f"error: output directory {blocker}/run is not writable: Not a directory" in log
    assert "sequences of" not in log  # stopped before the data was even loaded
