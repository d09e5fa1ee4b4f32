"""sha256 of the files a lock pins, remembered for large files so that a rebuild does not read them again.

A lock records the sha256 of every file of a local pretrained model (its weights included)
and of a saved PEFT adapter; `recipec verify` computes them again, and so does the generated
script for a local model (`DirectoryDigests`, in a thread beside the training). For a 70B model that
is some 140 GB, minutes of reading at each build. Like git's index, the digest of a file of
64 MiB or more is kept beside what the file system says of it (device, inode, size,
modification and change times, in nanoseconds): while all five are unchanged the file has
not been written, and the kept digest is used. Any write moves the change time (which no
tool can set back), so an edited, replaced or renamed-over file is read again.

The digests are kept in ``$XDG_CACHE_HOME/recipec/file-sha256.json`` (``~/.cache`` when
XDG_CACHE_HOME is unset). ``RECIPEC_HASH_CACHE`` names another file, or ``0`` turns the
cache off; ``recipec verify --rehash`` reads every file whatever the cache says (for
damage the file system does not see, such as a failing disk).

A file is remembered only once its times are a few seconds old, so one being written
while it is hashed (or twice within one tick of a coarse clock) is read again next time.
The cache is rewritten whole through a temporary file and a rename: concurrent builds
lose at most each other's new entries, never the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CACHED_FROM = 64 * 1024**2
"""Files smaller than this are read each time: that costs less than a lookup is worth."""

SETTLED_NS = 3 * 10**9
"""How old a file's modification and change times must be before its digest is kept."""

MAX_ENTRIES = 20_000
"""The cache keeps the digests of at most this many files, the most recently used."""

_BLOCK = 1 << 20
_DAY_NS = 86_400 * 10**9
_rehash = False


def cache_file() -> Path | None:
    """Where the digests are kept; None when ``RECIPEC_HASH_CACHE=0`` turns the cache off."""
    setting = os.environ.get("RECIPEC_HASH_CACHE", "")
    if setting.strip().lower() in ("0", "off", "false", "no"):
        return None
    if setting:
        return Path(setting).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "recipec" / "file-sha256.json"


@contextlib.contextmanager
def rehashing() -> Iterator[None]:
    """Every `file_sha256` inside reads its file whatever the cache holds (and refreshes the cache)."""
    global _rehash
    before, _rehash = _rehash, True
    try:
        yield
    finally:
        _rehash = before


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's content; a large file's is taken from the cache while the file is unchanged.

    Raises:
        OSError: the file cannot be read (the cache is never the reason).
    """
    path = Path(path)
    where = cache_file()
    if where is None:
        return _read_sha256(path)
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        if before.st_size < CACHED_FROM:
            return _digest(f)
        key, identity = str(path.resolve()), _identity(before)
        entries = _load(where)
        entry = entries.get(key)
        if not _rehash and isinstance(entry, dict) and entry.get("identity") == identity and isinstance(entry.get("sha256"), str):
            if time.time_ns() - int(entry.get("used", 0)) > _DAY_NS:  # keeps it among the most recently used
                entry["used"] = time.time_ns()
                _store(where, entries)
            return entry["sha256"]
        digest = _digest(f)
        after = os.fstat(f.fileno())
    now = time.time_ns()
    settled = now - max(after.st_mtime_ns, after.st_ctime_ns) >= SETTLED_NS
    if _identity(after) == identity and settled:  # not written while it was read, nor too recently to tell
        entries = _load(where)  # again: another build may have added entries meanwhile
        entries[key] = {"identity": identity, "sha256": digest, "used": now}
        _store(where, entries)
    return digest


def directory_sha256(directory: Path) -> dict[str, str]:
    """{name: sha256} of each file at a directory's top level, hidden files aside: what the lock records of a
    local pretrained model (config, weights, tokenizer, a continual parent's optimizer state).

    Raises:
        OSError: the directory or one of its files cannot be read.
    """
    directory = Path(directory)
    names = sorted(p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    return {name: file_sha256(directory / name) for name in names}


def changed_files(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """The names whose digest differs: ``model.safetensors``, ``notes.txt (new)``, ``tokenizer.json (gone)``."""
    return [
        name if name in before and name in now else f"{name} ({'new' if name in now else 'gone'})"
        for name in sorted(before.keys() | now.keys())
        if before.get(name) != now.get(name)
    ]


class DirectoryDigests:
    """`directory_sha256` of a local pretrained model, computed in a thread beside the training (hashlib
    releases the GIL while it reads), so that a large model's files cost the run no time before its first step;
    a file the cache knows is not read at all.

    Args:
        directory: the model's directory.
        locked: its ``files`` in the build's lock, to compare with; None to compare with nothing.
        warn: called once with a message when the files differ from ``locked`` or cannot be read.
    """

    def __init__(self, directory: Path, locked: dict[str, str] | None, warn: Any) -> None:
        self.directory, self.locked, self._warn = Path(directory), locked, warn
        self.files: dict[str, str] | None = None
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="recipec-model-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.files = directory_sha256(self.directory)
        except OSError as exc:
            self.error = f"cannot read {exc.filename or self.directory}: {exc.strerror or exc}"
            self._warn(f"warning: {self.error}; run.json records no digests of the model's files")
            return
        if self.locked is not None and self.files != self.locked:
            self._warn(
                f"warning: the model's files are not those the lock recorded when the script was built: "
                f"{', '.join(changed_files(self.locked, self.files))} (run.json records the digests read now)"
            )

    def record(self) -> dict[str, Any]:
        """What run.json records: ``{"files": {name: sha256}}`` (waiting for the thread), or ``{"error": ...}``."""
        self._thread.join()
        return {"files": self.files} if self.files is not None else {"error": self.error}


def _read_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return _digest(f)


def _digest(f: Any) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(_BLOCK), b""):
        digest.update(block)
    return digest.hexdigest()


def _identity(st: os.stat_result) -> list[int]:
    """What the file system says changes whenever a file's content does."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _load(where: Path) -> dict[str, Any]:
    """The cache's entries; empty when it is missing or unreadable (it is only ever a shortcut)."""
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = data.get("files") if isinstance(data, dict) and data.get("version") == 1 else None
    return entries if isinstance(entries, dict) else {}


def _store(where: Path, entries: dict[str, Any]) -> None:
    """Writes the cache (the most recently used MAX_ENTRIES); a cache that cannot be written is skipped."""
    if len(entries) > MAX_ENTRIES:
        newest = sorted(entries, key=lambda k: entries[k].get("used", 0) if isinstance(entries[k], dict) else 0)
        entries = {k: entries[k] for k in newest[-MAX_ENTRIES:]}
    tmp = where.with_name(f".{where.name}.{os.getpid()}.tmp")
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": 1, "files": entries}, sort_keys=True), encoding="utf-8")
        os.replace(tmp, where)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
