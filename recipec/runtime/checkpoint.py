"""Crash-safe checkpoint directories.

A checkpoint is a directory ``<ckpt_dir>/step_00000100`` holding whatever
``accelerate``'s ``save_state`` writes plus :data:`STATE_FILE`. It is written
under a hidden temporary name (``.tmp-step_00000100``), :data:`STATE_FILE` is
written last, and the directory is then renamed into place. A crash at any
point therefore leaves either the previous checkpoints untouched or a
``.tmp-*`` directory that :func:`latest` ignores and :func:`prune` removes —
never a half-written directory that looks complete. :data:`STATE_FILE` also lists
every other file of the checkpoint with its size, so a checkpoint damaged later
(a file deleted or cut short) is named as such by :func:`problems` and skipped
by :func:`resume_point` instead of failing deep inside a load. Old checkpoints
are renamed aside before they are deleted, so a crash mid-prune never leaves a
half-deleted one behind under its real name.

Typical use from a training script (main process does the bookkeeping)::

    tmp = checkpoint.temp_dir(ckpt_dir, step, clean=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))          # every rank (RNG states)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoint.write_state(tmp, {"step": step, ...})
        checkpoint.commit(tmp, ckpt_dir, step)
        checkpoint.prune(ckpt_dir, keep_last)

and, before the first step, :func:`check_writable` and :func:`preflight` so that
a read-only or too small output directory stops the run before it spends compute.

This module is stdlib-only; the compiler imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any

STATE_FILE = "trainer_state.json"

_PREFIX = "step_"
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
_NAME_RE = re.compile(r"^step_(\d+)$")
MANIFEST_KEY = "files"
"""The :data:`STATE_FILE` entry listing ``{relative path: size in bytes}`` of the checkpoint's other files."""

PathLike = str | os.PathLike


class CheckpointError(Exception):
    """A checkpoint directory that cannot be resumed from, or an output directory unfit to hold one."""


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


def _fsync_file(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
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


def _files(directory: pathlib.Path) -> dict[str, int]:
    """{relative posix path: size} of the regular files under ``directory``, less the state file."""
    found = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and not path.is_symlink() and rel not in (STATE_FILE, STATE_FILE + ".tmp"):
            found[rel] = path.stat().st_size
    return found


def write_state(directory: PathLike, state: dict) -> None:
    """Atomically write ``state`` as JSON to ``<directory>/STATE_FILE``.

    The JSON is written to a temporary file, fsynced and renamed over the
    target, so readers see either the old or the new file, never a partial one.
    It is written last: it also records, under :data:`MANIFEST_KEY`, every other
    file already in ``directory`` with its size, which :func:`problems` checks.

    Args:
        directory: Checkpoint (or temporary checkpoint) directory; created if missing.
        state: JSON-serialisable dict (step, tokens seen, data fingerprint, ...).

    Raises:
        TypeError: If ``state`` is not JSON-serialisable.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {**state, MANIFEST_KEY: _files(directory)}
    _write_atomic(directory / STATE_FILE, json.dumps(state, sort_keys=True, indent=2) + "\n")


def write_json(path: PathLike, record: dict) -> None:
    """Atomically write ``record`` as indented JSON to ``path`` (a run's run.json).

    A run killed while rewriting its record must not leave an empty or cut-off file
    that the next attempt then fails to read.
    """
    _write_atomic(pathlib.Path(path), json.dumps(record, indent=2) + "\n")


def _write_atomic(target: pathlib.Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``target``, fsync it and rename it over ``target``."""
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    _fsync_dir(target.parent)


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
    return replace_directory(tmp, ckpt_dir / checkpoint_name(step))


def replace_directory(tmp: PathLike, dest: PathLike) -> pathlib.Path:
    """Put the fully written directory ``tmp`` in the place of ``dest`` (a checkpoint, as :func:`commit`
    does it; ``output.save_best``'s model_best/).

    The files reach the disk before the name that says they are complete does (power loss), an
    existing ``dest`` is renamed aside (``.old-<name>``), ``tmp`` renamed in, and only then the old
    one deleted, so ``dest`` is whole, old or new, at every moment but between the two renames. An
    old one left aside by a crash there is deleted by the next call.
    """
    tmp, dest = pathlib.Path(tmp), pathlib.Path(dest)
    for rel in _files(tmp):
        _fsync_file(tmp / rel)
    _fsync_dir(tmp)
    old = dest.with_name(_OLD_PREFIX + dest.name)
    _rmtree(old)
    if dest.exists() or dest.is_symlink():
        os.replace(dest, old)
    os.replace(tmp, dest)
    _fsync_dir(dest.parent)
    _rmtree(old)
    return dest


def _step_dirs(ckpt_dir: pathlib.Path) -> list[tuple[int, pathlib.Path]]:
    """The ``step_*`` directories in ``ckpt_dir`` as ``(step, path)``, oldest first, intact or not."""
    if not ckpt_dir.is_dir():
        return []
    found = []
    for entry in ckpt_dir.iterdir():
        m = _NAME_RE.match(entry.name)
        if m and entry.is_dir() and not entry.is_symlink():
            found.append((int(m.group(1)), entry))
    found.sort(key=lambda item: (item[0], item[1].name))
    return found


def problems(directory: PathLike) -> list[str]:
    """What makes a committed checkpoint directory unfit to resume from; empty when it is intact.

    Checks that :data:`STATE_FILE` is there and readable, and that every file it lists
    (written by :func:`write_state`) exists with the size it had when the checkpoint was
    written. A checkpoint from before the list was recorded is checked for its state
    file only. Sizes, not hashes: the check must stay cheap for checkpoints of many GB.

    Args:
        directory: A ``step_*`` checkpoint directory.

    Returns:
        One line per problem, each naming the file, e.g. ``"optimizer.bin is missing"``.
    """
    directory = pathlib.Path(directory)
    try:
        state = read_state(directory)
    except FileNotFoundError:
        return [f"{STATE_FILE} is missing"]
    except (OSError, ValueError) as e:
        return [f"{STATE_FILE} cannot be read ({e})"]
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return [f"{STATE_FILE} has no step"]
    found = []
    listed = state.get(MANIFEST_KEY)
    for rel, size in sorted(listed.items() if isinstance(listed, dict) else []):
        try:
            actual = (directory / rel).stat().st_size
        except FileNotFoundError:
            found.append(f"{rel} is missing")
            continue
        except OSError as e:
            found.append(f"{rel} cannot be read ({e.strerror or e})")
            continue
        if actual != size:
            found.append(f"{rel} has {actual} bytes, {size} were written")
    return found


def latest(ckpt_dir: PathLike) -> pathlib.Path | None:
    """Return the newest complete checkpoint, or None if there is none.

    Complete means a ``step_*`` directory (never a ``.tmp-*`` one) that
    contains :data:`STATE_FILE` and every file it lists (:func:`problems` is
    empty). Steps are compared as numbers.

    Args:
        ckpt_dir: Directory holding all checkpoints (may not exist yet).

    Returns:
        Path of the checkpoint with the highest step, or None.
    """
    for _, path in reversed(_step_dirs(pathlib.Path(ckpt_dir))):
        if not problems(path):
            return path
    return None


def resume_point(ckpt_dir: PathLike) -> tuple[pathlib.Path | None, list[str]]:
    """The checkpoint a run resumes from, and a warning for each newer one that is damaged.

    A damaged checkpoint (a file deleted or cut short after it was written) is skipped
    for the newest intact one: that loses at most the steps between the two, while
    stopping would leave a preemptible job failing on every restart. When checkpoints
    exist but none is intact, the run stops instead of starting again from step 0, so
    that all of its progress is never thrown away without the user saying so.

    Args:
        ckpt_dir: Directory holding all checkpoints (may not exist yet).

    Returns:
        ``(checkpoint or None, warnings)``; None with no warnings means a fresh run.

    Raises:
        CheckpointError: When there are checkpoints and every one of them is damaged;
            the message names each one and its missing or short files.
    """
    damaged = []
    for _, path in reversed(_step_dirs(pathlib.Path(ckpt_dir))):
        found = problems(path)
        if not found:
            return path, [
                f"checkpoint {where} is incomplete ({problem}); resuming from {path.name} instead"
                for where, problem in damaged
            ]
        damaged.append((path, "; ".join(found)))
    if damaged:
        listing = "\n".join(f"  {where}: {problem}" for where, problem in damaged)
        raise CheckpointError(
            f"no complete checkpoint to resume from in {ckpt_dir}; these are incomplete:\n{listing}\n"
            "restore the missing files, or remove these directories to start the run again from step 0"
        )
    return None, []


def prune(ckpt_dir: PathLike, keep_last: int) -> list[pathlib.Path]:
    """Delete old checkpoints and leftovers of interrupted saves.

    Keeps the newest ``keep_last`` complete checkpoints and deletes the other
    complete ones, plus any ``.tmp-*`` / ``.old-*`` directories left by a
    crash. Each old checkpoint is renamed to ``.old-*`` before it is deleted,
    so a crash mid-delete leaves a leftover, never a half-deleted ``step_*``.
    ``step_*`` directories that are not complete are not ours to judge and are
    left alone. Do not call while a save is in progress.

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
    found = [(step, path) for step, path in _step_dirs(ckpt_dir) if not problems(path)]
    if keep_last > 0 and len(found) > keep_last:
        for _, path in found[:-keep_last]:
            aside = ckpt_dir / (_OLD_PREFIX + path.name)
            os.replace(path, aside)
            _rmtree(aside)
            deleted.append(path)
    return deleted


def check_writable(directory: PathLike) -> str | None:
    """Create ``directory`` if needed and try to write a file in it.

    Args:
        directory: The run's output directory.

    Returns:
        None when a file can be written there, else a message naming the directory and the reason.
    """
    directory = pathlib.Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as e:
        return f"output directory {directory} is not writable: {e.strerror or e}"
    return None


OPTIMIZER_STATE = {"adamw": 2.0, "muon": 1.0, "adafactor": 0.0, "lion": 1.0, "sgd": 1.0, "schedule_free_adamw": 2.0}
"""Optimizer state per trainable parameter, in units of the parameter's own bytes (AdamW: two moments at its dtype;
Muon: one momentum on the hidden matrices it steps, AdamW's two on the rest; SGD: one momentum buffer when its
momentum is not 0; Adafactor: factored second moments, rows + columns per matrix, not counted)."""

FLAT_STATE_BYTES = {"adamw_8bit": 2, "paged_adamw_8bit": 2}
"""Optimizer state per trainable parameter in bytes, whatever its dtype (two 8-bit moments)."""

OPTIMIZER_NAMES = {"adamw": "AdamW", "muon": "Muon", "adafactor": "Adafactor", "lion": "Lion", "sgd": "SGD", "schedule_free_adamw": "schedule-free AdamW", "adamw_8bit": "8-bit AdamW", "paged_adamw_8bit": "paged 8-bit AdamW"}  # fmt: skip


def checkpoint_bytes(
    parameters: Iterable,
    *,
    optimizer: str | None = "adamw",
    hidden: Container[int] = frozenset(),
    momentum: float | None = None,
    copies: Mapping[str, int | None] | None = None,
    zero_stage: int | None = None,
    half: bool = False,
) -> dict[str, int]:
    """Estimate the size of one checkpoint from the model's parameters.

    Weights at their own dtype, plus the optimizer's state per trainable parameter
    (:data:`OPTIMIZER_STATE`, :data:`FLAT_STATE_BYTES`), plus every other copy of the
    weights the checkpoint holds (an EMA, a WSM average, a reference model), plus a margin
    for the config, tokenizer, RNG and scheduler files and for serialisation overhead.
    Torch is not imported: anything with ``numel()``, ``element_size()`` and
    ``requires_grad`` will do. A parameter ZeRO-3 has partitioned counts its whole size
    (``ds_numel``): the checkpoint holds every rank's part.

    Args:
        parameters: ``model.parameters()``.
        optimizer: The optimizer whose state the checkpoint holds (``optim.name``), or None for
            none (a run that only saves the final model).
        hidden: For "muon", the ``id()`` of each parameter Muon steps (one momentum); the others
            carry AdamW's two moments.
        momentum: For "sgd", its momentum: 0 keeps no state.
        copies: Each other copy of every parameter the checkpoint holds, by what it is, with its
            bytes per parameter (None: the parameter's own, as a copy of the model at its dtype).
        zero_stage: DeepSpeed's ZeRO stage (``launch.deepspeed.zero_stage``), None when the run is
            not under DeepSpeed.
        half: Under DeepSpeed, whether its engine holds the weights in 16 bits
            (``launch.mixed_precision`` bf16 or fp16); the parameters passed are as loaded.

    Returns:
        ``{"parameters", "weights", "optimizer", "copies", "margin", "total"}``, sizes in bytes,
        and ``"copy <what>"`` for each copy.

    Raises:
        ValueError: On an optimizer this module does not know.
    """
    if optimizer is not None and optimizer not in OPTIMIZER_STATE and optimizer not in FLAT_STATE_BYTES:
        raise ValueError(f"unknown optimizer {optimizer!r}: one of {sorted([*OPTIMIZER_STATE, *FLAT_STATE_BYTES])} or None")
    copies = dict(copies or {})
    count = weights = states = 0
    copied = dict.fromkeys(copies, 0)
    for p in parameters:
        n, size = getattr(p, "ds_numel", None) or p.numel(), p.element_size()  # a ZeRO-3 parameter is empty here
        trains = optimizer is not None and p.requires_grad
        if zero_stage is not None:
            size = 2 if half else size  # the engine's weights
        count += n
        if zero_stage != 3 or not trains:  # at ZeRO-3 a checkpoint holds what trains only as its master copy
            weights += n * size
        for what, each in copies.items():
            copied[what] += n * (size if each is None else each)
        if not trains:
            continue
        state = size
        if zero_stage is not None:  # ZeRO steps a float32 master copy, which the checkpoint holds too
            states += n * 4
            state = 4
        if optimizer == "sgd" and momentum == 0:
            continue
        if optimizer in FLAT_STATE_BYTES:
            states += n * FLAT_STATE_BYTES[optimizer]
        elif optimizer == "muon" and id(p) not in hidden:
            states += int(n * state * OPTIMIZER_STATE["adamw"])
        else:
            states += int(n * state * OPTIMIZER_STATE[optimizer])
    extra = sum(copied.values())
    margin = _margin(weights + states + extra)
    need = {"parameters": count, "weights": weights, "optimizer": states, "copies": extra, "margin": margin}
    need["total"] = weights + states + extra + margin
    need.update({f"copy {what}": size for what, size in copied.items()})
    return need


def _margin(n: int) -> int:
    """The bytes counted beside ``n`` bytes of tensors for the config, tokenizer and state files and for serialisation."""
    return n // 20 + 8 * 2**20


def model_bytes(parameters: Iterable, *, zero_stage: int | None = None, half: bool = False) -> dict[str, int]:
    """The bytes of the weights a ``save_pretrained`` of the model writes, by which parameters it writes.

    Each parameter at its own dtype (under DeepSpeed with ``half``, 16 bits: what the engine
    gathers), its whole size where ZeRO-3 has partitioned it (``ds_numel``). A full model
    writes ``"all"``; a PEFT adapter ``"trainable"`` (the adapter's weights and
    ``modules_to_save``); a merged adapter about ``"frozen"`` (the base weights the adapter
    was merged into); a weight average (``[ema]``, ``[merge]``) 4 bytes a parameter of the
    model's (``"all float32"``) or of the adapter's (``"trainable float32"``). Torch is not
    imported: see :func:`checkpoint_bytes`.

    Args:
        parameters: ``model.parameters()``.
        zero_stage, half: As :func:`checkpoint_bytes` takes them.

    Returns:
        ``{"all", "trainable", "frozen", "all float32", "trainable float32"}``, in bytes.
    """
    sizes = dict.fromkeys(("all", "trainable", "frozen", "all float32", "trainable float32"), 0)
    for p in parameters:
        n = getattr(p, "ds_numel", None) or p.numel()
        size = 2 if zero_stage is not None and half else p.element_size()
        which = "trainable" if p.requires_grad else "frozen"
        sizes["all"] += n * size
        sizes[which] += n * size
        sizes["all float32"] += n * 4
        if p.requires_grad:
            sizes["trainable float32"] += n * 4
    return sizes


def checkpoints_at_once(max_steps: int, save_every: int, keep_last: int) -> tuple[int, int]:
    """How many checkpoints a run holds at most, while it saves one and after.

    A run saves at every ``save_every``-th step before ``max_steps`` (the final model is saved
    apart). A new checkpoint is committed before :func:`prune` deletes the oldest one, so
    while it is written the run holds ``keep_last + 1`` of them, and ``keep_last`` after.

    Args:
        max_steps: The run's last step.
        save_every: ``train.save_every`` in steps; 0 saves none.
        keep_last: ``train.keep_last``; 0 keeps every one.

    Returns:
        ``(while saving, after)``.
    """
    saves = (max_steps - 1) // save_every if save_every > 0 and max_steps > 0 else 0
    if keep_last <= 0:
        return saves, saves
    return min(saves, keep_last + 1), min(saves, keep_last)


def _tree_bytes(path: pathlib.Path) -> int:
    """The bytes of the files under ``path`` (0 where there is none)."""
    if not path.is_dir():
        return 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name), follow_symlinks=False).st_size
            except OSError:  # deleted meanwhile
                pass
    return total


def run_bytes(
    one_checkpoint: int,
    *,
    checkpoints: tuple[int, int] = (0, 0),
    models: Mapping[str, int] | None = None,
    best: str | None = None,
) -> dict[str, int]:
    """The most disk space a run's checkpoints and saved models take at one time.

    While a checkpoint is written the run holds ``checkpoints[0]`` of them (and the best
    model); while ``best`` is replaced, two of it (the new one is written beside the old)
    and ``checkpoints[1]`` checkpoints; at the end ``checkpoints[1]`` checkpoints, the best
    model and every final one. Each saved model counts a margin for its config and
    tokenizer files: a twentieth and 8 MiB.

    Args:
        one_checkpoint: The bytes of one checkpoint (:func:`checkpoint_bytes`' ``"total"``).
        checkpoints: :func:`checkpoints_at_once`.
        models: Each directory of saved weights (``"model"``, ``"model_best"``, ...), with the
            bytes of its weights (:func:`model_bytes`).
        best: The one of ``models`` replaced during the run (``"model_best"``), or None.

    Returns:
        ``{"checkpoints", "peak", "moment"}`` (the moment of the peak: 0 while a checkpoint is written, 1 while
        ``best`` is replaced, 2 at the end) and each of ``models`` with its margin, in bytes.
    """
    sized = {name: n + _margin(n) for name, n in (models or {}).items()}
    kept = sized.get(best, 0) if best else 0
    finals = sum(n for name, n in sized.items() if name != best)
    while_saving, after = checkpoints
    moments = (while_saving * one_checkpoint + kept if while_saving else 0, after * one_checkpoint + 2 * kept, after * one_checkpoint + kept + finals)
    peak = max(moments)
    return {"checkpoints": max(while_saving, after), "peak": peak, "moment": moments.index(peak), **sized}


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def preflight(
    directory: PathLike,
    parameters: Iterable,
    *,
    optimizer: str | None = "adamw",
    hidden: Container[int] = frozenset(),
    momentum: float | None = None,
    copies: Mapping[str, int | None] | None = None,
    zero_stage: int | None = None,
    half: bool = False,
    checkpoints: tuple[int, int] | None = None,
    keep_last: int = 0,
    models: Mapping[str, int] | None = None,
    best: str | None = None,
    checkpoint_dir: PathLike | None = None,
    report: Callable[[str], Any] | None = None,
) -> str | None:
    """Check before the first step that ``directory`` can take one checkpoint, and the whole run.

    First one checkpoint (the first save must not fail), then the most the run holds at one
    time (:func:`run_bytes`: its newest checkpoints and its saved models) against the free
    space plus what the run replaces (the checkpoints and model directories already there:
    a resumed run prunes the ones and overwrites the others).

    Args:
        directory: The run's output directory (checkpoints and the final model go under it).
        parameters: ``model.parameters()``, for :func:`checkpoint_bytes`; a sequence when
            ``models`` is given (read twice).
        optimizer: The optimizer whose state checkpoints hold, or None when the run saves no
            checkpoint (``save_every`` 0: only the final model).
        hidden, momentum, copies, zero_stage, half: As :func:`checkpoint_bytes` takes them.
        checkpoints: :func:`checkpoints_at_once`; None: one checkpoint (0 without an optimizer).
        keep_last: ``train.keep_last``, named in the message.
        models: Each directory of saved weights under ``directory`` with the bytes of its
            weights (:func:`model_bytes`); None: the whole model as ``"model"``.
        best: The one of ``models`` replaced during the run (``"model_best"``), or None.
        checkpoint_dir: Where the checkpoints go; None: ``directory / "checkpoints"``.
        report: Called with a line saying what the run holds at once and the free space, when it fits.

    Returns:
        None when it can, else a message naming the directory, the estimate and the free space.
    """
    problem = check_writable(directory)
    if problem:
        return problem
    directory = pathlib.Path(directory)
    parameters = list(parameters)
    need = checkpoint_bytes(parameters, optimizer=optimizer, hidden=hidden, momentum=momentum, copies=copies, zero_stage=zero_stage, half=half)
    free = shutil.disk_usage(directory).free
    if optimizer is not None and free < need["total"]:
        detail = f"{_size(need['weights'])} of weights"
        master = "DeepSpeed's float32 master weights and " if zero_stage is not None else ""
        detail += f" + {_size(need['optimizer'])} of {master}{OPTIMIZER_NAMES[optimizer]} state"
        for copy in copies or {}:
            detail += f" + {_size(need['copy ' + copy])} of {copy}"
        return (
            f"output directory {directory} has {_size(free)} free, but one checkpoint of this model needs about "
            f"{_size(need['total'])} ({need['parameters']:,} parameters: {detail} + {_size(need['margin'])} margin); "
            "free some space or set output.dir to a larger disk"
        )
    if optimizer is None:  # no checkpoint is saved
        checkpoints = (0, 0)
    elif checkpoints is None:
        checkpoints = (1, 1)
    if models is None:
        models = {"model": model_bytes(parameters, zero_stage=zero_stage, half=half)["all"]}
    whole = run_bytes(need["total"], checkpoints=checkpoints, models=models, best=best)
    ckpt_dir = pathlib.Path(checkpoint_dir) if checkpoint_dir is not None else directory / "checkpoints"
    present = _tree_bytes(ckpt_dir) + sum(_tree_bytes(directory / name) for name in models)
    while_saving, after = checkpoints
    finals = [name for name in models if name != best]
    each = f"of {_size(need['total'])}"
    if whole["moment"] == 0:
        when = f"while a checkpoint is written: {while_saving} checkpoints {each}"
        if keep_last > 0 and while_saving > after:
            when += f" (train.keep_last {keep_last}, and the new one before the oldest is deleted)"
        parts = [best] if best else []
    elif whole["moment"] == 1:
        when = f"while {best}/ is replaced: {after} checkpoints {each} + {best}/ twice (the new one is written beside the old)"
        parts = []
    else:
        when = f"at the end: {after} checkpoints {each}" if after else "at the end:"
        parts = [best] if best else []
        parts += finals
    for name in parts:
        when += f" + {name}/ {_size(whole[name])}" if when[-1] != ":" else f" {name}/ {_size(whole[name])}"
    replaced = f" (and {_size(present)} in the checkpoints and models the run replaces)" if present else ""
    if free + present >= whole["peak"]:
        if report is not None:
            report(f"disk: this run holds at most about {_size(whole['peak'])} in {directory} at once, {when}; {_size(free)} free{replaced}")
        return None
    hint = "free some space or set output.dir to a larger disk"
    if after:
        hint = ("set train.keep_last (0 keeps every checkpoint), " if keep_last <= 0 else "lower train.keep_last, ") + hint
    return (
        f"output directory {directory} has {_size(free)} free{replaced}, but this run holds about "
        f"{_size(whole['peak'])} there at once, {when}; {hint}"
    )


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

