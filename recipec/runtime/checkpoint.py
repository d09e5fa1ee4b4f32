"""Crash-safe checkpoint directories.

A checkpoint is a directory ``<ckpt_dir>/step_00000100`` holding whatever
``accelerate``'s ``save_state`` writes plus :data:`STATE_FILE`. It is written
under a hidden temporary name (``.tmp-step_00000100``), :data:`STATE_FILE` is
written last, and the directory is then renamed into place. A crash at any
point therefore leaves either the previous checkpoints untouched or a
``.tmp-*`` directory that :func:`latest` ignores and :func:`prune` removes —
never a half-written directory that looks complete.

Typical use from a training script (main process does the bookkeeping)::

    tmp = checkpoint.temp_dir(ckpt_dir, step, clean=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))          # every rank (RNG states)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoint.write_state(tmp, {"step": step, ...})
        checkpoint.commit(tmp, ckpt_dir, step)
        checkpoint.prune(ckpt_dir, keep_last)

This module is stdlib-only; the compiler imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil

STATE_FILE = "trainer_state.json"

_PREFIX = "step_"
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
_NAME_RE = re.compile(r"^step_(\d+)$")

PathLike = str | os.PathLike


def checkpoint_name(step: int) -> str:
    """Return the directory name of the checkpoint for ``step``.

    Args:
        step: Optimizer step (>= 0).

    Returns:
        ``"step_%08d" % step``, e.g. ``"step_00000100"``.

    Raises:
        ValueError: If ``step`` is negative or not an integer.
    """
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"checkpoint step must be a non-negative integer, got {step!r}")
    return f"{_PREFIX}{step:08d}"


def _fsync_dir(path: pathlib.Path) -> None:
    """Flush a directory entry to disk where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _rmtree(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def temp_dir(ckpt_dir: PathLike, step: int, *, clean: bool = True) -> pathlib.Path:
    """Return the temporary directory to save the checkpoint of ``step`` into.

    With ``clean`` (the main process), creates ``ckpt_dir`` if needed and removes
    a stale temporary directory for the same step left by an earlier crash;
    the other processes pass ``clean=False`` and only get the path. The
    temporary directory itself is not created: ``accelerator.save_state``
    creates it. Synchronise after this call, before saving.

    Args:
        ckpt_dir: Directory holding all checkpoints of the run.
        step: Optimizer step being saved.
        clean: Create ``ckpt_dir`` and remove a stale temporary directory.

    Returns:
        ``<ckpt_dir>/.tmp-step_XXXXXXXX``.
    """
    ckpt_dir = pathlib.Path(ckpt_dir)
    tmp = ckpt_dir / (_TMP_PREFIX + checkpoint_name(step))
    if clean:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        _rmtree(tmp)
    return tmp


def write_state(directory: PathLike, state: dict) -> None:
    """Atomically write ``state`` as JSON to ``<directory>/STATE_FILE``.

    The JSON is written to a temporary file, fsynced and renamed over the
    target, so readers see either the old or the new file, never a partial one.

    Args:
        directory: Checkpoint (or temporary checkpoint) directory; created if missing.
        state: JSON-serialisable dict (step, tokens seen, data fingerprint, ...).

    Raises:
        TypeError: If ``state`` is not JSON-serialisable.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(state, sort_keys=True, indent=2) + "\n"
    target = directory / STATE_FILE
    tmp = directory / (STATE_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    _fsync_dir(directory)


def read_state(directory: PathLike) -> dict:
    """Read the state written by :func:`write_state`.

    Args:
        directory: A checkpoint directory.

    Returns:
        The decoded state dict.

    Raises:
        FileNotFoundError: If the directory has no :data:`STATE_FILE`.
    """
    with open(pathlib.Path(directory) / STATE_FILE, encoding="utf-8") as f:
        return json.load(f)


def commit(tmp: PathLike, ckpt_dir: PathLike, step: int) -> pathlib.Path:
    """Move a fully written temporary checkpoint into its final place.

    If a checkpoint for ``step`` already exists (the same step saved again
    after a resume), it is first renamed aside, the new one renamed in, and
    only then the old one deleted, so a complete checkpoint for the step
    exists at every moment except between two renames.

    Args:
        tmp: The temporary directory returned by :func:`temp_dir`, already
            holding :data:`STATE_FILE`.
        ckpt_dir: Directory holding all checkpoints.
        step: Optimizer step of the checkpoint.

    Returns:
        The final checkpoint path ``<ckpt_dir>/step_XXXXXXXX``.

    Raises:
        FileNotFoundError: If ``tmp`` does not exist.
        ValueError: If ``tmp`` has no :data:`STATE_FILE` (it would never be
            recognised as complete).
    """
    tmp = pathlib.Path(tmp)
    ckpt_dir = pathlib.Path(ckpt_dir)
    if not tmp.is_dir():
        raise FileNotFoundError(f"temporary checkpoint directory {tmp} does not exist")
    if not (tmp / STATE_FILE).is_file():
        raise ValueError(f"{tmp} has no {STATE_FILE}; call write_state() before commit()")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / checkpoint_name(step)
    old = None
    if final.exists() or final.is_symlink():
        old = ckpt_dir / (_OLD_PREFIX + final.name)
        _rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(ckpt_dir)
    if old is not None:
        _rmtree(old)
    return final


def _complete(ckpt_dir: pathlib.Path) -> list[tuple[int, pathlib.Path]]:
    """Complete checkpoints in ``ckpt_dir`` as ``(step, path)``, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = []
    for entry in ckpt_dir.iterdir():
        m = _NAME_RE.match(entry.name)
        if m and entry.is_dir() and (entry / STATE_FILE).is_file():
            found.append((int(m.group(1)), entry))
    found.sort(key=lambda item: (item[0], item[1].name))
    return found


def latest(ckpt_dir: PathLike) -> pathlib.Path | None:
    """Return the newest complete checkpoint, or None if there is none.

    Complete means a ``step_*`` directory (never a ``.tmp-*`` one) that
    contains :data:`STATE_FILE`. Steps are compared as numbers.

    Args:
        ckpt_dir: Directory holding all checkpoints (may not exist yet).

    Returns:
        Path of the checkpoint with the highest step, or None.
    """
    found = _complete(pathlib.Path(ckpt_dir))
    return found[-1][1] if found else None


def prune(ckpt_dir: PathLike, keep_last: int) -> list[pathlib.Path]:
    """Delete old checkpoints and leftovers of interrupted saves.

    Keeps the newest ``keep_last`` complete checkpoints and deletes the other
    complete ones, plus any ``.tmp-*`` / ``.old-*`` directories left by a
    crash. ``step_*`` directories without :data:`STATE_FILE` are not ours to
    judge and are left alone. Do not call while a save is in progress.

    Args:
        ckpt_dir: Directory holding all checkpoints (may not exist).
        keep_last: Number of complete checkpoints to keep; ``<= 0`` keeps all.

    Returns:
        The deleted paths.
    """
    ckpt_dir = pathlib.Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    deleted: list[pathlib.Path] = []
    for entry in sorted(ckpt_dir.iterdir()):
        if entry.name.startswith((_TMP_PREFIX + _PREFIX, _OLD_PREFIX + _PREFIX)):
            _rmtree(entry)
            deleted.append(entry)
    found = _complete(ckpt_dir)
    if keep_last > 0 and len(found) > keep_last:
        for _, path in found[:-keep_last]:
            _rmtree(path)
            deleted.append(path)
    return deleted


def truncate_metrics(path: PathLike, step: int) -> None:
    """Drop the lines of a metrics.jsonl file logged after ``step``.

    A resumed run repeats the steps after its checkpoint; without this, the
    lines of the interrupted attempt would stay in the file beside the
    repeated ones. The file is rewritten atomically; a missing file is fine.

    Args:
        path: The metrics.jsonl file, one JSON object with a ``step`` per line.
        step: The step the run resumes from.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by the crash
        if record.get("step", 0) <= step:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


RECIPE_FILE = "resolved.toml"  # the resolved recipe of the build that wrote a checkpoint


def build_sha256(lock: dict) -> str:
    """sha256 of a build's lock without its git state: what a resume compares.

    A new commit elsewhere in the repository changes the lock's git entry but not what the
    build trains, so it must not stop a resume; everything else in the lock (the recipe,
    templates, generated files, data fingerprints, package versions) does.
    """
    kept = {key: value for key, value in lock.items() if key != "git"}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def build_change(directory: PathLike, lock_sha256: str, resolved_toml: PathLike) -> str | None:
    """Why resuming from ``directory`` would train a different build, or None if it would not.

    A checkpoint records :func:`build_sha256` of the lock of the build that wrote it, and
    a copy of that build's resolved recipe. Resuming under another build would silently
    continue with other settings (an LR, a batch, data or package versions), so the caller
    stops unless told otherwise.

    Args:
        directory: The checkpoint to resume from.
        lock_sha256: :func:`build_sha256` of the current build's lock.
        resolved_toml: The current build's resolved.toml.

    Returns:
        A message with a unified diff of the two resolved recipes (empty if only the lock's
        other contents differ: templates, packages, data), or None when the locks match
        or the checkpoint predates lock hashes.
    """
    import difflib

    directory = pathlib.Path(directory)
    recorded = read_state(directory).get("build_sha256")
    if recorded is None or recorded == lock_sha256:
        return None
    before = directory / RECIPE_FILE
    old = before.read_text(encoding="utf-8").splitlines(keepends=True) if before.is_file() else []
    new = pathlib.Path(resolved_toml).read_text(encoding="utf-8").splitlines(keepends=True)
    diff = "".join(difflib.unified_diff(old, new, f"{directory.name}/{RECIPE_FILE}", f"build/{RECIPE_FILE}"))
    detail = diff if diff else "the resolved recipes are the same; the lock differs in templates, data or package versions\n"
    return (
        f"{directory} was written by the build with lock {recorded[:12]}, and this build's lock is {lock_sha256[:12]}:\n"
        f"{detail}"
        "resuming would continue the run with these changes; pass --allow-changed to do so, "
        "or set output.dir to start a new run"
    )

