"""Checkpoint directories are committed atomically and found by step number."""

import collections
import json
import os
import pathlib
import subprocess
import sys

import pytest

from recipec.runtime import checkpoint
from recipec.runtime.checkpoint import STATE_FILE

REPO = pathlib.Path(__file__).resolve().parents[2]


def _save(ckpt_dir, step, payload="weights"):
    """Simulate the training script: save_state into the temp dir, state file, commit."""
    tmp = checkpoint.temp_dir(ckpt_dir, step)
    tmp.mkdir()  # accelerate's save_state creates it
    (tmp / "model.safetensors").write_text(payload)
    checkpoint.write_state(tmp, {"step": step, "payload": payload})
    return checkpoint.commit(tmp, ckpt_dir, step)


def test_checkpoint_name():
    assert checkpoint.checkpoint_name(100) == "step_00000100"
    assert checkpoint.checkpoint_name(0) == "step_00000000"
    assert checkpoint.checkpoint_name(123456789) == "step_123456789"
    with pytest.raises(ValueError):
        checkpoint.checkpoint_name(-1)


def test_temp_dir_creates_parent_only_and_clears_stale(tmp_path):
    ckpt_dir = tmp_path / "run" / "checkpoints"
    tmp = checkpoint.temp_dir(ckpt_dir, 100)
    assert tmp == ckpt_dir / ".tmp-step_00000100"
    assert ckpt_dir.is_dir() and not tmp.exists()
    tmp.mkdir()
    (tmp / "half-written").write_text("x")
    again = checkpoint.temp_dir(ckpt_dir, 100)
    assert again == tmp and not tmp.exists()


def test_save_commit_latest_read_state(tmp_path):
    final = _save(tmp_path, 100)
    assert final == tmp_path / "step_00000100"
    assert (final / "model.safetensors").read_text() == "weights"
    assert not (tmp_path / ".tmp-step_00000100").exists()
    assert checkpoint.latest(tmp_path) == final
    # the state file also lists every other file with its size
    assert checkpoint.read_state(final) == {"step": 100, "payload": "weights", "files": {"model.safetensors": 7}}


def test_write_state_format_and_no_leftovers(tmp_path):
    checkpoint.write_state(tmp_path, {"b": 1, "a": {"y": 2, "x": [1, 2]}})
    text = (tmp_path / STATE_FILE).read_text()
    assert text == json.dumps({"b": 1, "a": {"y": 2, "x": [1, 2]}, "files": {}}, sort_keys=True, indent=2) + "\n"
    checkpoint.write_state(tmp_path, {"step": 2})
    assert checkpoint.read_state(tmp_path) == {"step": 2, "files": {}}
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


def test_latest_ignores_incomplete(tmp_path):
    assert checkpoint.latest(tmp_path / "missing") is None
    assert checkpoint.latest(tmp_path) is None
    good = _save(tmp_path, 5)
    # a crash mid-save: the temp dir even has a state file, still not complete
    crashed = tmp_path / ".tmp-step_00000010"
    crashed.mkdir()
    checkpoint.write_state(crashed, {"step": 10})
    # a step dir without the state file
    (tmp_path / "step_00000020").mkdir()
    # unrelated entries
    (tmp_path / "step_00000030.txt").write_text("x")
    (tmp_path / "notes").mkdir()
    assert checkpoint.latest(tmp_path) == good


def test_latest_orders_by_number_not_string(tmp_path):
    small = 99_999_999
    big = 100_000_000
    assert checkpoint.checkpoint_name(small) > checkpoint.checkpoint_name(big)  # as strings
    _save(tmp_path, big)
    _save(tmp_path, small)
    assert checkpoint.latest(tmp_path).name == checkpoint.checkpoint_name(big)
    pruned = checkpoint.prune(tmp_path, keep_last=1)
    assert [p.name for p in pruned] == [checkpoint.checkpoint_name(small)]


def test_prune(tmp_path):
    for step in (10, 20, 30, 40):
        _save(tmp_path, step)
    stale = tmp_path / ".tmp-step_00000050"
    stale.mkdir()
    incomplete = tmp_path / "step_00000060"
    incomplete.mkdir()

    deleted = checkpoint.prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in deleted) == sorted([".tmp-step_00000050", "step_00000010", "step_00000020"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000030", "step_00000040", "step_00000060"]
    assert checkpoint.latest(tmp_path).name == "step_00000040"

    assert checkpoint.prune(tmp_path, keep_last=2) == []
    assert checkpoint.prune(tmp_path / "missing", keep_last=1) == []


def test_prune_keep_all(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, step)
    (tmp_path / ".tmp-step_00000004").mkdir()
    for keep in (0, -1):
        deleted = checkpoint.prune(tmp_path, keep_last=keep)
        assert all(p.name.startswith(".tmp-") for p in deleted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001", "step_00000002", "step_00000003"]


def test_recommit_same_step_replaces(tmp_path):
    _save(tmp_path, 100, payload="first")
    (tmp_path / "step_00000100" / "only-in-old").write_text("x")
    final = _save(tmp_path, 100, payload="second")
    assert (final / "model.safetensors").read_text() == "second"
    assert not (final / "only-in-old").exists()
    assert checkpoint.read_state(final)["payload"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000100"]


def test_commit_requires_state_file(tmp_path):
    tmp = checkpoint.temp_dir(tmp_path, 7)
    tmp.mkdir()
    with pytest.raises(ValueError, match=STATE_FILE):
        checkpoint.commit(tmp, tmp_path, 7)
    assert checkpoint.latest(tmp_path) is None
    with pytest.raises(FileNotFoundError):
        checkpoint.commit(tmp_path / "nope", tmp_path, 7)


def test_compiler_side_modules_do_not_import_torch():
    code = (
        "import sys, recipec.runtime, recipec.runtime.schedule, recipec.runtime.checkpoint\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'tokenizers', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_runtime_works_copied_alone_as_recipec_runtime(tmp_path):
    """Build directories get a copy named recipec_runtime, with no recipec installed."""
    import shutil

    shutil.copytree(
        REPO / "recipec" / "runtime", tmp_path / "recipec_runtime", ignore=shutil.ignore_patterns("__pycache__")
    )
    code = (
        "import sys\n"
        "sys.path = [p for p in sys.path if p != %r]\n"
        "from recipec_runtime import schedule, checkpoint, data, tokenizer\n"
        "assert not [m for m in sys.modules if m == 'recipec' or m.startswith('recipec.')]\n"
        "assert 'torch' not in sys.modules  # heavy imports happen inside functions\n"
        "phases = schedule.layout([{'shape': 'linear', 'start': 1.0, 'end': 0.0}], 10)\n"
        "assert schedule.multiplier(5, phases) == 0.5\n"
    ) % str(REPO)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_temp_dir_without_clean_only_names_the_path(tmp_path):
    stale = tmp_path / "ckpt" / ".tmp-step_00000003"
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")
    path = checkpoint.temp_dir(tmp_path / "ckpt", 3, clean=False)
    assert path == stale
    assert (stale / "junk").exists()  # another process's view: nothing deleted
    assert checkpoint.temp_dir(tmp_path / "ckpt", 3) == stale
    assert not stale.exists()


def test_truncate_metrics_drops_lines_after_the_resume_step(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"step": 0, "eval_loss": 9.0}, {"step": 2, "loss": 5.0}, {"step": 4, "loss": 4.0}, {"step": 6, "loss": 3.0}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 8, "lo')
    checkpoint.truncate_metrics(metrics, 4)
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == [0, 2, 4]
    checkpoint.truncate_metrics(tmp_path / "missing.jsonl", 4)  # no file: nothing to do


def test_build_sha256_ignores_git_state_and_nothing_else():
    lock = {"recipe": {"sha256": "a"}, "packages": {"torch": "2.13.0"}, "git": {"commit": "1", "dirty": False}}
    same = dict(lock, git={"commit": "2", "dirty": True})
    assert checkpoint.build_sha256(lock) == checkpoint.build_sha256(same)
    assert checkpoint.build_sha256(lock) != checkpoint.build_sha256(dict(lock, packages={"torch": "2.14.0"}))


def test_build_change_names_the_locks_and_diffs_the_recipes(tmp_path):
    ckpt = tmp_path / "step_00000004"
    checkpoint.write_state(ckpt, {"step": 4, "build_sha256": "a" * 64})
    (ckpt / checkpoint.RECIPE_FILE).write_text("[optim]\nlr = 0.01\n")
    now = tmp_path / "resolved.toml"
    now.write_text("[optim]\nlr = 0.005\n")
    assert checkpoint.build_change(ckpt, "a" * 64, now) is None
    message = checkpoint.build_change(ckpt, "b" * 64, now)
    assert "aaaaaaaaaaaa" in message and "bbbbbbbbbbbb" in message
    assert "-lr = 0.01" in message and "+lr = 0.005" in message and "--allow-changed" in message
    now.write_text("[optim]\nlr = 0.01\n")  # same recipe: the rest of the lock changed
    assert "templates, data or package versions" in checkpoint.build_change(ckpt, "b" * 64, now)
    checkpoint.write_state(ckpt, {"step": 4})  # a checkpoint from before build hashes: nothing to compare
    assert checkpoint.build_change(ckpt, "b" * 64, now) is None


def _full(ckpt_dir, step):
    """A checkpoint with the files the training script writes."""
    tmp = checkpoint.temp_dir(ckpt_dir, step)
    tmp.mkdir()
    for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "config.json"):
        (tmp / name).write_text(f"{name} of step {step}")
    checkpoint.write_state(tmp, {"step": step})
    return checkpoint.commit(tmp, ckpt_dir, step)


@pytest.mark.parametrize(
    "name", ["model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "config.json", STATE_FILE]
)
def test_a_checkpoint_missing_a_file_is_named_and_skipped(tmp_path, name):
    previous, newest = _full(tmp_path, 2), _full(tmp_path, 4)
    assert checkpoint.problems(newest) == []
    (newest / name).unlink()
    assert checkpoint.problems(newest) == [f"{name} is missing"]
    assert checkpoint.latest(tmp_path) == previous
    found, warnings = checkpoint.resume_point(tmp_path)
    assert found == previous
    assert warnings == [f"checkpoint {newest} is incomplete ({name} is missing); resuming from step_00000002 instead"]
    # the old checkpoint is not counted as a complete one to keep, nor deleted
    assert checkpoint.prune(tmp_path, keep_last=1) == []
    assert newest.is_dir()


def test_a_file_cut_short_or_an_unreadable_state_is_named(tmp_path):
    ckpt = _full(tmp_path, 2)
    (ckpt / "optimizer.bin").write_text("cut")
    assert checkpoint.problems(ckpt) == [f"optimizer.bin has 3 bytes, {len('optimizer.bin of step 2')} were written"]
    (ckpt / STATE_FILE).write_text('{"step": ')
    assert checkpoint.problems(ckpt)[0].startswith(f"{STATE_FILE} cannot be read")
    (ckpt / STATE_FILE).write_text('{"files": {}}')
    assert checkpoint.problems(ckpt) == [f"{STATE_FILE} has no step"]


def test_resume_point_stops_when_no_checkpoint_is_intact(tmp_path):
    assert checkpoint.resume_point(tmp_path / "missing") == (None, [])
    assert checkpoint.resume_point(tmp_path) == (None, [])
    one, two = _full(tmp_path, 2), _full(tmp_path, 4)
    (one / "optimizer.bin").unlink()
    (two / "random_states_0.pkl").unlink()
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.resume_point(tmp_path)
    message = str(e.value)
    assert f"{two}: random_states_0.pkl is missing" in message and f"{one}: optimizer.bin is missing" in message
    assert "step 0" in message


def test_a_checkpoint_from_before_the_file_list_is_still_intact(tmp_path):
    ckpt = _full(tmp_path, 2)
    state = json.loads((ckpt / STATE_FILE).read_text())
    del state["files"]
    (ckpt / STATE_FILE).write_text(json.dumps(state))
    assert checkpoint.problems(ckpt) == [] and checkpoint.latest(tmp_path) == ckpt


def test_prune_renames_a_checkpoint_aside_before_deleting_it(tmp_path, monkeypatch):
    for step in (2, 4, 6):
        _full(tmp_path, step)

    def killed(path):
        (sorted(path.iterdir())[0]).unlink()  # half deleted, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.prune(tmp_path, keep_last=2)
    monkeypatch.undo()
    # no step_* directory is left half deleted under its own name
    assert sorted(p.name for p in tmp_path.iterdir()) == [".old-step_00000002", "step_00000004", "step_00000006"]
    assert all(checkpoint.problems(p) == [] for p in tmp_path.glob("step_*"))
    checkpoint.prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000004", "step_00000006"]


def test_write_json_is_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    checkpoint.write_json(path, {"status": "running"})
    assert json.loads(path.read_text()) == {"status": "running"}

    def killed(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.write_json(path, {"status": "completed"})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"status": "running"}


def test_check_writable_names_the_directory(tmp_path):
    assert checkpoint.check_writable(tmp_path / "a" / "b") is None
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert checkpoint.check_writable(blocker / "run") == f"output directory {blocker / 'run'} is not writable: Not a directory"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through a read-only mode")
def test_check_writable_read_only_directory(tmp_path):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        assert checkpoint.check_writable(read_only) == f"output directory {read_only} is not writable: Permission denied"
    finally:
        read_only.chmod(0o700)


class _Param:
    def __init__(self, n, size, trainable=True):
        self.n, self.size, self.requires_grad = n, size, trainable

    def numel(self):
        return self.n

    def element_size(self):
        return self.size


def test_checkpoint_bytes_counts_weights_optimizer_state_copies_and_a_margin():
    params = [_Param(1000, 2), _Param(10, 4), _Param(500, 2, trainable=False)]
    need = checkpoint.checkpoint_bytes(params)
    assert need["parameters"] == 1510
    assert need["weights"] == 1000 * 2 + 10 * 4 + 500 * 2
    assert need["optimizer"] == 1000 * 2 * 2 + 10 * 4 * 2  # AdamW: two moments at each trainable parameter's dtype
    assert need["copies"] == 0
    assert need["margin"] == (need["weights"] + need["optimizer"]) // 20 + 8 * 2**20
    assert need["total"] == need["weights"] + need["optimizer"] + need["margin"]
    assert checkpoint.checkpoint_bytes(params, optimizer=None)["optimizer"] == 0
    # Muon: one momentum on the parameters it steps (by id), AdamW's two moments on the rest
    assert checkpoint.checkpoint_bytes(params, optimizer="muon", hidden={id(params[0])})["optimizer"] == 1000 * 2 + 10 * 4 * 2
    assert checkpoint.checkpoint_bytes(params, optimizer="lion")["optimizer"] == 1000 * 2 + 10 * 4
    assert checkpoint.checkpoint_bytes(params, optimizer="sgd", momentum=0.9)["optimizer"] == 1000 * 2 + 10 * 4
    assert checkpoint.checkpoint_bytes(params, optimizer="sgd", momentum=0.0)["optimizer"] == 0
    assert checkpoint.checkpoint_bytes(params, optimizer="adamw_8bit")["optimizer"] == (1000 + 10) * 2  # flat, any dtype
    # copies of every parameter: at a fixed size, or at the parameter's own (None)
    need = checkpoint.checkpoint_bytes(params, copies={"EMA": 4, "reference": None})
    assert need["copy EMA"] == 1510 * 4 and need["copy reference"] == need["weights"]
    assert need["copies"] == need["copy EMA"] + need["copy reference"]
    assert need["total"] == need["weights"] + need["optimizer"] + need["copies"] + need["margin"]
    assert need["margin"] == (need["weights"] + need["optimizer"] + need["copies"]) // 20 + 8 * 2**20
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        checkpoint.checkpoint_bytes(params, optimizer="adam")


def test_a_partitioned_parameter_counts_its_whole_size():
    part = _Param(0, 2)  # ZeRO-3 leaves an empty tensor and the whole size in ds_numel
    part.ds_numel = 1000
    assert checkpoint.checkpoint_bytes([part])["weights"] == 2000


def test_every_optimizer_of_the_schema_has_a_state_size():
    from recipec.schema.optim import OPTIMIZER_TABLES

    names = {t.model_fields["name"].annotation.__args__[0] for t in OPTIMIZER_TABLES}
    assert names == set(checkpoint.OPTIMIZER_STATE) | set(checkpoint.FLAT_STATE_BYTES) == set(checkpoint.OPTIMIZER_NAMES)


def _free(monkeypatch, gib):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: usage(100 * 2**30, 100 * 2**30 - int(gib * 2**30), int(gib * 2**30)))


def test_preflight_reports_directory_estimate_and_free_space(tmp_path, monkeypatch):
    params = [_Param(10**9, 2)]  # 1B parameters in bf16: 2 GB of weights, 4 GB of AdamW state (bf16 moments)
    _free(monkeypatch, 5)
    message = checkpoint.preflight(tmp_path, params)
    assert message.startswith(f"output directory {tmp_path} has 5.0 GiB free, but one checkpoint of this model needs about 5.9 GiB")
    assert "1,000,000,000 parameters: 1.9 GiB of weights + 3.7 GiB of AdamW state + 294.1 MiB margin)" in message
    message = checkpoint.preflight(tmp_path, params, optimizer="muon", hidden={id(params[0])}, copies={"the EMA weights (float32)": 4})
    assert "1.9 GiB of weights + 1.9 GiB of Muon state + 3.7 GiB of the EMA weights (float32) + " in message
    # without checkpoints only the final model is saved
    assert checkpoint.preflight(tmp_path, params, optimizer=None) is None
    _free(monkeypatch, 1)
    message = checkpoint.preflight(tmp_path, params, optimizer=None)
    assert message == (
        f"output directory {tmp_path} has 1.0 GiB free, but this run holds about 2.0 GiB there at once, at the end: "
        "model/ 2.0 GiB; free some space or set output.dir to a larger disk"
    )
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "not writable" in checkpoint.preflight(blocker, params)


def test_checkpoints_at_once_is_what_commit_and_prune_leave(tmp_path):
    """The script's save: a temporary directory written, committed, then the old ones pruned; counted at each moment."""
    for max_steps, save_every, keep_last in [(300, 100, 2), (1000, 100, 2), (1000, 100, 0), (1000, 100, 1), (100, 100, 2), (10, 0, 2), (7, 1, 3)]:
        ckpt_dir = tmp_path / f"{max_steps}-{save_every}-{keep_last}"
        while_saving = after = 0
        for step in range(1, max_steps):
            if save_every and step % save_every == 0:
                tmp = checkpoint.temp_dir(ckpt_dir, step)
                tmp.mkdir()
                complete = len(list(ckpt_dir.glob("step_*")))
                while_saving = max(while_saving, complete + 1)  # the new one beside them
                (tmp / "model.safetensors").write_text("w")
                checkpoint.write_state(tmp, {"step": step})
                checkpoint.commit(tmp, ckpt_dir, step)
                while_saving = max(while_saving, len(list(ckpt_dir.glob("step_*"))))  # committed, not yet pruned
                checkpoint.prune(ckpt_dir, keep_last)
                after = len(list(ckpt_dir.glob("step_*")))
        assert checkpoint.checkpoints_at_once(max_steps, save_every, keep_last) == (while_saving, after), (max_steps, save_every, keep_last)


def test_run_bytes_is_the_largest_of_saving_replacing_the_best_and_the_end():
    margin = lambda n: n + n // 20 + 8 * 2**20  # noqa: E731
    C, M = 10 * 2**30, 2**30
    # two checkpoints after a save, three while one is written; model/ at the end
    need = checkpoint.run_bytes(C, checkpoints=(3, 2), models={"model": M})
    assert need == {"checkpoints": 3, "peak": 3 * C, "moment": 0, "model": margin(M)}
    # a final model larger than a checkpoint: the end holds the most
    need = checkpoint.run_bytes(C, checkpoints=(3, 2), models={"model": M, "model_full": 12 * 2**30})
    assert need["peak"] == 2 * C + margin(M) + margin(12 * 2**30)
    # model_best/ is there while checkpoints are written, and twice while it is replaced
    need = checkpoint.run_bytes(C, checkpoints=(1, 1), models={"model": 8 * 2**30, "model_best": 8 * 2**30}, best="model_best")
    assert need["peak"] == max(C + margin(8 * 2**30), C + 2 * margin(8 * 2**30), C + 2 * margin(8 * 2**30)) == C + 2 * margin(8 * 2**30)
    assert checkpoint.run_bytes(C, checkpoints=(0, 0), models={"model": M})["peak"] == margin(M)


def test_preflight_counts_the_checkpoints_kept_and_the_saved_models(tmp_path, monkeypatch):
    params = [_Param(10**9, 2)]  # one checkpoint: 5.9 GiB (above)
    models = {"model": 2 * 10**9, "model_best": 2 * 10**9}
    _free(monkeypatch, 16)
    message = checkpoint.preflight(tmp_path, params, checkpoints=(3, 2), keep_last=2, models={"model": 2 * 10**9})
    assert message == (
        f"output directory {tmp_path} has 16.0 GiB free, but this run holds about 17.6 GiB there at once, while a "
        "checkpoint is written: 3 checkpoints of 5.9 GiB (train.keep_last 2, and the new one before the oldest is "
        "deleted); lower train.keep_last, free some space or set output.dir to a larger disk"
    )
    lines = []
    assert checkpoint.preflight(tmp_path, params, checkpoints=(2, 1), keep_last=1, models={"model": 2 * 10**9}, report=lines.append) is None
    assert lines == [
        f"disk: this run holds at most about 11.8 GiB in {tmp_path} at once, while a checkpoint is written: 2 checkpoints "
        "of 5.9 GiB (train.keep_last 1, and the new one before the oldest is deleted); 16.0 GiB free"
    ]
    _free(monkeypatch, 15)  # 2 checkpoints and model_best/ twice: 15.5 GiB
    message = checkpoint.preflight(tmp_path, params, checkpoints=(2, 2), models=models, best="model_best")
    assert message.endswith(
        "while model_best/ is replaced: 2 checkpoints of 5.9 GiB + model_best/ twice (the new one is written beside the "
        "old); set train.keep_last (0 keeps every checkpoint), free some space or set output.dir to a larger disk"
    )
    message = checkpoint.preflight(tmp_path, params, checkpoints=(2, 2), models={**models, "model_full": 4 * 10**9}, best="model_best")
    assert "at the end: 2 checkpoints of 5.9 GiB + model_best/ 2.0 GiB + model/ 2.0 GiB + model_full/ 3.9 GiB; " in message  # with their margins
    # a resumed run: the checkpoints and models already there are pruned or overwritten, so their bytes count as free
    (tmp_path / "checkpoints" / "step_00000100").mkdir(parents=True)
    with open(tmp_path / "checkpoints" / "step_00000100" / "model.safetensors", "wb") as f:
        f.truncate(2 * 2**30)  # sparse: no disk taken, 2 GiB counted
    message = checkpoint.preflight(tmp_path, params, checkpoints=(3, 2), keep_last=2, models={"model": 2 * 10**9})
    assert "has 15.0 GiB free (and 2.0 GiB in the checkpoints and models the run replaces), but" in message
    (tmp_path / "model").mkdir()
    with open(tmp_path / "model" / "model.safetensors", "wb") as f:
        f.truncate(2 * 2**30)
    assert checkpoint.preflight(tmp_path, params, checkpoints=(3, 2), keep_last=2, models={"model": 2 * 10**9}) is None


def test_model_bytes_is_what_the_saves_write(tmp_path):
    """save_pretrained of the model, adapters.save of an adapter (PiSSA: converted to twice the rank) and of the merged
    model, and a weight average's save_pretrained, against model_bytes."""
    import torch

    from recipec.runtime import adapters, averaging

    def written(directory, name):  # the safetensors header (the tensors' names and shapes) is the rest
        return (directory / name).stat().st_size

    for dtype in ("float32", "bfloat16"):
        model = _tiny_llama(getattr(torch, dtype))
        model.save_pretrained(tmp_path / dtype)
        assert written(tmp_path / dtype, "model.safetensors") == pytest.approx(checkpoint.model_bytes(model.parameters())["all"], rel=0.01, abs=16 * 1024)
        ema = averaging.WeightAverage(model, "ema", decay=0.9)
        ema.update(model, 1)
        ema.save_pretrained(model, tmp_path / f"{dtype}-ema")
        assert written(tmp_path / f"{dtype}-ema", "model.safetensors") == pytest.approx(checkpoint.model_bytes(model.parameters())["all float32"], rel=0.01, abs=16 * 1024)
    for init in (None, "pissa"):
        model = adapters.apply(_tiny_llama(torch.float32), {"method": "lora", "r": 8, "target_modules": "all-linear", **({"init": init} if init else {})})
        saved = checkpoint.model_bytes(model.parameters())
        adapters.save(model, tmp_path / f"adapter-{init}", merged_directory=tmp_path / f"merged-{init}")
        factor = adapters.saved_rank_factor(model)
        assert factor == (2 if init else 1)
        assert written(tmp_path / f"adapter-{init}", "adapter_model.safetensors") == pytest.approx(saved["trainable"] * factor, rel=0.01, abs=16 * 1024)
        assert written(tmp_path / f"merged-{init}", "model.safetensors") == pytest.approx(saved["frozen"], rel=0.01, abs=16 * 1024)
    ema = averaging.WeightAverage(model, "ema", decay=0.9)
    ema.update(model, 1)
    ema.save_pretrained(model, tmp_path / "adapter-ema")
    assert written(tmp_path / "adapter-ema", "adapter_model.safetensors") == pytest.approx(saved["trainable float32"], rel=0.01, abs=16 * 1024)
    # ZeRO: the engine's 16-bit weights, a partitioned parameter at its whole size
    part = _Param(0, 4)
    part.ds_numel = 1000
    assert checkpoint.model_bytes([part], zero_stage=3, half=True)["all"] == 2000


def _tiny_llama(dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, vocab_size=2000)
    return LlamaForCausalLM(config).to(dtype)


OPTIMIZER_SPECS = {
    "adamw": {"betas": (0.9, 0.95), "eps": 1e-8},
    "muon": {"momentum": 0.95, "nesterov": True, "ns_steps": 5, "adjust_lr": None, "adamw_lr": 1e-3, "adamw_betas": (0.9, 0.95), "adamw_eps": 1e-8},
    "lion": {"betas": (0.9, 0.99)},
    "sgd": {"momentum": 0.9, "nesterov": False},
    "schedule_free_adamw": {"betas": (0.9, 0.95), "eps": 1e-8, "weight_lr_power": 2.0},
    "adafactor": {"beta2_decay": -0.8, "eps": 1e-3, "d": 1.0},
}  # fmt: skip


@pytest.mark.parametrize(
    "name, dtype, copies",
    [
        ("adamw", "float32", {}),
        ("adamw", "bfloat16", {"the EMA weights (float32)": 4}),
        ("muon", "float32", {}),
        ("lion", "float32", {}),
        ("sgd", "float32", {}),
        ("sgd", "float32", {"momentum": 0.0}),
        ("schedule_free_adamw", "float32", {}),
        ("adafactor", "float32", {}),
        ("adamw", "float32", {"the TR-DPO reference copy": None, "the WSM average (float32)": 4}),
    ],
    ids=["adamw", "adamw-bf16-ema", "muon", "lion", "sgd", "sgd-no-momentum", "schedule-free", "adafactor", "adamw-reference-wsm"],
)
def test_the_estimate_is_what_save_state_writes(tmp_path, name, dtype, copies):
    """A real checkpoint after one step: accelerate's save_state of the model, the optimizer of
    recipec_runtime/optimizers.py and the registered copies, against checkpoint_bytes."""
    import torch
    from accelerate import Accelerator

    from recipec.runtime import averaging, optimizers

    copies = dict(copies)
    momentum = copies.pop("momentum", None)
    model = _tiny_llama(getattr(torch, dtype))
    spec = {"name": name, "lr": 1e-3, "weight_decay": 0.1, **OPTIMIZER_SPECS[name]}
    if momentum is not None:
        spec["momentum"] = momentum
    optimizer = optimizers.build(model, spec)
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    model(input_ids=torch.randint(0, 2000, (2, 16)), labels=torch.randint(0, 2000, (2, 16))).loss.backward()
    optimizer.step()
    for what in copies:  # the script's copies: weight averages in float32, the reference a copy at the model's dtype
        if "reference" in what:
            accelerator.register_for_checkpointing(_tiny_llama(getattr(torch, dtype)))
        else:
            accelerator.register_for_checkpointing(averaging.WeightAverage(model, "ema", decay=0.9))
    accelerator.save_state(str(tmp_path / "ckpt"))
    written = {p.name: p.stat().st_size for p in (tmp_path / "ckpt").iterdir()}

    hidden = {id(p) for n, p in model.named_parameters() if n in set(optimizer.optimizer.split["muon"])} if name == "muon" else frozenset()
    need = checkpoint.checkpoint_bytes(model.parameters(), optimizer=name, hidden=hidden, momentum=spec.get("momentum"), copies=copies)
    assert written["model.safetensors"] == pytest.approx(need["weights"], rel=0.01)
    assert written["optimizer.bin"] == pytest.approx(need["optimizer"], rel=0.02, abs=64 * 1024)  # pickled step counts
    held = sum(size for file, size in written.items() if file.startswith("custom_checkpoint_"))
    assert held == pytest.approx(need["copies"], rel=0.01, abs=16 * 1024)
    assert sum(written.values()) <= need["total"]


# A DeepSpeed engine per case, in one process of its own (DeepSpeed starts torch.distributed, over gloo on the
# CPU); accelerate's save_state under DeepSpeed writes the engine's save_checkpoint, whose files each case sizes.
_DEEPSPEED_CASES = """
import json, os, pathlib, sys
import deepspeed, torch
sys.path[:0] = [os.environ["CASES_DIR"], os.environ["TESTS_DIR"]]
import forkrun
forkrun.skip_shared_memory_collective()
from case_model import tiny_llama
out = {}
for name, stage, half, freeze, optim in json.loads(sys.argv[1]):
    model = tiny_llama(freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3) if optim == "adamw" else torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    config = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": stage}, "bf16": {"enabled": half}, "zero_allow_untested_optimizer": True}
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    loss = engine(input_ids=torch.randint(0, 2000, (2, 16)), labels=torch.randint(0, 2000, (2, 16))).loss
    engine.backward(loss)
    engine.step()
    engine.save_checkpoint(str(pathlib.Path(sys.argv[2]) / name), tag="ckpt")
    files = (pathlib.Path(sys.argv[2]) / name / "ckpt").iterdir()
    out[name] = {p.name: p.stat().st_size for p in files}
print("SIZES " + json.dumps(out))
"""

_CASE_MODEL = """
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(freeze):
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, vocab_size=2000)
    model = LlamaForCausalLM(config)
    if freeze:
        model.model.embed_tokens.requires_grad_(False)
    return model
"""


@pytest.mark.slow
def test_the_estimate_is_what_deepspeed_saves(tmp_path):
    """Under DeepSpeed a checkpoint holds a float32 master copy of what trains beside the optimizer's state (itself
    float32), and the weights at the engine's dtype (at ZeRO-3 only the frozen ones): each ZeRO stage, bf16 and
    float32, with a frozen embedding, AdamW and SGD, against checkpoint_bytes of the model as loaded (float32)."""
    pytest.importorskip("deepspeed")
    import socket

    (tmp_path / "case_model.py").write_text(_CASE_MODEL)
    sys.path.insert(0, str(tmp_path))
    try:
        from case_model import tiny_llama
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("case_model", None)
    cases = [
        ("zero2-bf16", 2, True, False, "adamw"),
        ("zero3-bf16-frozen", 3, True, True, "adamw"),
        ("zero2-fp32-frozen", 2, False, True, "adamw"),
        ("zero1-bf16-sgd", 1, True, False, "sgd"),
    ]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", CASES_DIR=str(tmp_path), TESTS_DIR=str(pathlib.Path(__file__).parents[1]))
    env.pop("ACCELERATE_USE_CPU", None)
    proc = subprocess.run(
        [sys.executable, "-c", _DEEPSPEED_CASES, json.dumps(cases), str(tmp_path / "ckpt")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    sizes = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("SIZES "))[6:])
    for name, stage, half, freeze, optim in cases:
        written = sizes[name]
        model = tiny_llama(freeze)
        need = checkpoint.checkpoint_bytes(model.parameters(), optimizer=optim, momentum=0.9, zero_stage=stage, half=half)
        weights = sum(size for file, size in written.items() if file.endswith("model_states.pt"))
        states = sum(size for file, size in written.items() if file.endswith("optim_states.pt"))
        assert weights == pytest.approx(need["weights"], rel=0.02, abs=32 * 1024), (name, written)
        assert states == pytest.approx(need["optimizer"], rel=0.01), (name, written)
        assert sum(written.values()) <= need["total"], name


def test_replace_directory_puts_the_new_one_in_place_and_cleans_a_crashs_leftover(tmp_path):
    """output.save_best's model_best/: a new directory replaces the old whole; a first one needs no old; an old one a
    crash left aside between the two renames is deleted by the next replacement."""
    dest = tmp_path / "model_best"
    for n in range(3):
        tmp = tmp_path / ".tmp-model_best"
        tmp.mkdir()
        (tmp / "weights").write_text(str(n))
        if n == 2:  # a crash between the renames of the last call left the one before aside
            (tmp_path / ".old-model_best").mkdir()
        assert checkpoint.replace_directory(tmp, dest) == dest
        assert (dest / "weights").read_text() == str(n) and not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_best"]
