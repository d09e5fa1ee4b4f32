"""The file-hash cache: a large file's digest is read again whenever the file system says it was written."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from recipec.runtime import file_hashes
from recipec.runtime.file_hashes import file_sha256, rehashing

FAKE = "f" * 64


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of its own that remembers every file, however small and however recent."""
    where = tmp_path / "cache" / "file-sha256.json"
    monkeypatch.setenv("RECIPEC_HASH_CACHE", str(where))
    monkeypatch.setattr(file_hashes, "CACHED_FROM", 0)
    monkeypatch.setattr(file_hashes, "SETTLED_NS", 0)
    return where


def _real(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entries(where: Path) -> dict:
    return json.loads(where.read_text())["files"]


def _lie(where: Path, path: Path, digest: str = FAKE) -> None:
    """Puts another digest beside the file's current identity: what a cache hit returns, unread."""
    data = json.loads(where.read_text())
    data["files"][str(path.resolve())]["sha256"] = digest
    where.write_text(json.dumps(data))


def test_an_unchanged_file_is_not_read_again(cache: Path, tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(os.urandom(4096))
    assert file_sha256(weights) == _real(weights)
    [entry] = _entries(cache).values()
    assert entry["sha256"] == _real(weights)
    _lie(cache, weights)
    assert file_sha256(weights) == FAKE  # the kept digest, not a read


def test_a_write_that_keeps_size_and_modification_time_is_seen(cache: Path, tmp_path: Path) -> None:
    """The change time moves with any write and cannot be set back: the file is read again."""
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 4096)
    file_sha256(weights)
    _lie(cache, weights)
    before = weights.stat()
    time.sleep(0.02)
    weights.write_bytes(b"b" * 4096)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_size == before.st_size and weights.stat().st_mtime_ns == before.st_mtime_ns
    assert file_sha256(weights) == _real(weights) == hashlib.sha256(b"b" * 4096).hexdigest()


def test_a_file_renamed_over_is_read_again(cache: Path, tmp_path: Path) -> None:
    weights, other = tmp_path / "model.safetensors", tmp_path / "other"
    weights.write_bytes(b"a" * 4096)
    file_sha256(weights)
    _lie(cache, weights)
    other.write_bytes(b"c" * 4096)
    os.replace(other, weights)
    assert file_sha256(weights) == _real(weights)


def test_rehashing_reads_every_file_and_mends_the_cache(cache: Path, tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(os.urandom(4096))
    file_sha256(weights)
    _lie(cache, weights)
    with rehashing():
        assert file_sha256(weights) == _real(weights)
    assert file_sha256(weights) == _real(weights)


def test_small_and_recent_files_are_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below CACHED_FROM a file is read each time; one written less than SETTLED_NS ago may still be written
    within the same tick of the clock, so it is read next time too."""
    where = tmp_path / "cache.json"
    monkeypatch.setenv("RECIPEC_HASH_CACHE", str(where))
    small = tmp_path / "config.json"
    small.write_text("{}")
    assert file_sha256(small) == _real(small) and not where.exists()
    monkeypatch.setattr(file_hashes, "CACHED_FROM", 0)
    assert file_sha256(small) == _real(small) and not where.exists()  # written just now
    monkeypatch.setattr(file_hashes, "SETTLED_NS", 0)
    assert file_sha256(small) == _real(small) and list(_entries(where)) == [str(small.resolve())]


def test_the_cache_can_be_turned_off_or_be_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_hashes, "CACHED_FROM", 0)
    monkeypatch.setattr(file_hashes, "SETTLED_NS", 0)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(os.urandom(4096))
    monkeypatch.setenv("RECIPEC_HASH_CACHE", "0")
    assert file_hashes.cache_file() is None and file_sha256(weights) == _real(weights)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("RECIPEC_HASH_CACHE", str(blocker / "cache.json"))
    assert file_sha256(weights) == _real(weights)
    monkeypatch.setenv("RECIPEC_HASH_CACHE", str(blocker))  # a file that is not a cache: read as empty, replaced
    assert file_sha256(weights) == _real(weights)
    assert list(_entries(blocker)) == [str(weights.resolve())]
    monkeypatch.delenv("RECIPEC_HASH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert file_hashes.cache_file() == tmp_path / "xdg" / "recipec" / "file-sha256.json"


def test_the_cache_keeps_the_most_recently_used(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_hashes, "MAX_ENTRIES", 2)
    paths = [tmp_path / f"shard-{i}" for i in range(3)]
    for path in paths:
        path.write_bytes(path.name.encode())
        file_sha256(path)
    assert sorted(_entries(cache)) == sorted(str(p.resolve()) for p in paths[1:])


def test_a_directorys_digests_in_a_thread_are_compared_with_the_lock(tmp_path: Path) -> None:
    """What the script does with a local model: each top-level file's digest (hidden files and folders aside),
    the names that differ from the lock's, one warning, and run.json's record; an unreadable directory says so."""
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(os.urandom(1024))
    (model / ".cache").write_text("hidden")
    (model / "sub" / "x").write_text("nested")
    locked = file_hashes.directory_sha256(model)
    assert locked == {name: _real(model / name) for name in ("config.json", "model.safetensors")}

    warnings: list[str] = []
    assert file_hashes.DirectoryDigests(model, locked, warnings.append).record() == {"files": locked}
    assert warnings == []
    (model / "config.json").write_text('{"edited": true}')
    (model / "model.safetensors").unlink()
    (model / "notes.txt").write_text("new")
    assert file_hashes.changed_files(locked, file_hashes.directory_sha256(model)) == [
        "config.json", "model.safetensors (gone)", "notes.txt (new)"
    ]
    digests = file_hashes.DirectoryDigests(model, locked, warnings.append)
    assert digests.record() == {"files": file_hashes.directory_sha256(model)}
    assert warnings == [
        "warning: the model's files are not those the lock recorded when the script was built: config.json, "
        "model.safetensors (gone), notes.txt (new) (run.json records the digests read now)"
    ]
    assert file_hashes.DirectoryDigests(model, None, warnings.append).record()["files"] and len(warnings) == 1
    gone = file_hashes.DirectoryDigests(tmp_path / "absent", locked, warnings.append).record()
    assert gone["error"].startswith(f"cannot read {tmp_path / 'absent'}") and warnings[-1].startswith("warning: cannot read")
