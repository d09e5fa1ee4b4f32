"""Data sources on the Hugging Face hub: found in the hub cache, read with ``datasets``.

A hub source is ``{"hub": {"repo", "subset", "split", "revision", "data_files",
"streaming"}, ...}`` (the recipe's ``[data.sources.hub]``). It is read with
``datasets.load_dataset`` from the repository's snapshot in the hub cache,
``HF_HUB_CACHE/datasets--ORG--NAME/snapshots/<commit>/``: the layout that ``hf download``
writes, and that ``datasets`` itself downloads into. Its revision resolves to a commit
there, through ``refs/<revision>`` (a branch or tag) or a ``snapshots/<commit>`` directory.

* Online, the revision is resolved on the hub (which records it in ``refs/``), the files of
  the split are downloaded into the cache (``huggingface_hub.hf_hub_download``, as
  ``datasets`` does), and the split is then read from the snapshot as offline. A streamed
  source online is streamed from the hub at the resolved commit, and nothing is downloaded.
* Offline (``HF_HUB_OFFLINE=1``, or a hub that cannot be reached), only the cache is read.
  ``load_dataset("org/name")`` itself would look only for datasets that it prepared earlier,
  not in the hub cache; ``load_dataset(<snapshot directory>)`` reads the repository's files
  and its README's ``configs`` (the subsets) exactly as the hub does.

The records go through :class:`.readers._Reader`'s handling of Arrow batches, as those of a
parquet file (``text_field``, ``records``, ``fields``, ``on_error``), with locators
``org/name[subset]:split#ROW`` (``org/name:split#ROW`` without a subset). A file that
``datasets`` cannot parse (a line that is not JSON) is an error naming it either way.

:func:`fingerprint` gives what the data stage's cache key holds of a source: the commit and,
for each data file of the split, its path in the repository, size and content hash (only
the path for a file streamed from the hub: the commit fixes its content).

Imports: the standard library and :mod:`.readers` at the top (the compiler calls :func:`lock_entry` for a
build's lock without importing ``datasets``); ``datasets`` and ``huggingface_hub`` inside
the functions that resolve and read.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .file_hashes import DirectoryDigests
from .readers import DataError

if TYPE_CHECKING:  # pragma: no cover
    from .readers import _Reader

_COMMIT = re.compile(r"[0-9a-f]{40}")
_LOCAL = ("./", "../", "/", "~")  # a local path, as recipec.schema.model.LOCAL_PREFIXES

_CHUNK = 1 << 20


def hub_cache_dir() -> str:
    """The hub cache directory, by huggingface_hub's rule: ``HF_HUB_CACHE``, else ``HF_HOME/hub``."""
    default_home = os.path.join(os.path.expanduser("~"), ".cache")
    home = os.path.expandvars(
        os.path.expanduser(os.getenv("HF_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", default_home), "huggingface")))
    )
    cache = os.getenv("HF_HUB_CACHE", os.getenv("HUGGINGFACE_HUB_CACHE", os.path.join(home, "hub")))
    return os.path.expandvars(os.path.expanduser(cache))


def repo_folder(repo: str, kind: str = "datasets") -> str:
    """A repository's folder in the hub cache: a dataset's (``kind="datasets"``), or a model's (``"models"``)."""
    return os.path.join(hub_cache_dir(), f"{kind}--" + repo.replace("/", "--"))


def cached_revision(repo: str, revision: str, kind: str = "datasets") -> str | None:
    """The commit that ``revision`` (branch, tag or commit sha) is at in the hub cache, or None.

    Only a commit whose snapshot directory exists counts. ``kind``: ``"datasets"`` or ``"models"``
    (a model or a PEFT adapter).
    """
    folder = repo_folder(repo, kind)
    if _COMMIT.fullmatch(revision) and os.path.isdir(os.path.join(folder, "snapshots", revision)):
        return revision
    try:
        with open(os.path.join(folder, "refs", revision), encoding="utf-8") as f:
            commit = f.read().strip()
    except (OSError, ValueError):
        return None
    return commit if _COMMIT.fullmatch(commit) and os.path.isdir(os.path.join(folder, "snapshots", commit)) else None


def cached_snapshot(repo: str, revision: str | None) -> str | None:
    """The snapshot directory of a model repository at ``revision`` (None: main) in the hub cache, or None.

    It holds the files downloaded so far at that commit (what ``from_pretrained`` reads offline); the
    caller checks for the ones it needs.
    """
    commit = cached_revision(repo, revision or "main", "models")
    return None if commit is None else os.path.join(repo_folder(repo, "models"), "snapshots", commit)


def loaded_model(path: str, revision: str | None) -> dict:
    """What run.json records of the pretrained model a script loaded: a hub id with its revision (None: main) and
    the commit that revision is at in the hub cache (None when it is not there), which ``from_pretrained`` has just
    read; a local directory as its path (the lock holds the sha256 of its files)."""
    if path.startswith(_LOCAL):
        return {"path": path}
    return {"path": path, "revision": revision or "main", "commit": cached_revision(path, revision or "main", "models")}


def local_model_digests(path: str, directory: str | os.PathLike, lock: dict, warn: Any) -> DirectoryDigests | None:
    """A local model's files hashed in a thread beside the training and compared with the lock's (`warn` is called
    when they differ: the directory was written after the build); None for a hub id, whose commit fixes them."""
    if not path.startswith(_LOCAL):
        return None
    entry = lock.get("model")
    locked = entry.get("files") if isinstance(entry, dict) and isinstance(entry.get("files"), dict) else None
    return DirectoryDigests(Path(directory), locked, warn)


PINNED = {"model": "model.path", "tokenizer": "tokenizer.path", "peft_adapter": "peft.adapter"}
"""The lock's entries of what a script loads from the hub (`recipec.build`), and the recipe key that names each."""


def moved_since_build(lock: dict, entries: tuple[str, ...]) -> list[str]:
    """A warning for each of the lock's `entries` (keys of PINNED) whose hub revision is at another commit in the
    local cache than the one the lock recorded when the script was built: ``from_pretrained`` has just read the
    other one. Entries without a commit (a local directory, one the cache lacked at build time) say nothing."""
    warnings = []
    for what in entries:
        entry = lock.get(what)
        if not isinstance(entry, dict) or not isinstance(entry.get("commit"), str) or not isinstance(entry.get("path"), str):
            continue
        revision = entry.get("revision") or "main"
        now = cached_revision(entry["path"], revision, "models")
        if now != entry["commit"]:
            where = f"is at commit {now} now" if now else "is not in the local hub cache now"
            warnings.append(
                f"warning: {PINNED[what]} {entry['path']} (revision {revision}) {where}; "
                f"the lock recorded {entry['commit']} when the script was built"
            )
    return warnings


def shown(hub: dict) -> str:
    """How locators and messages name a hub source's split: ``org/name[subset]:split``."""
    subset = f"[{hub['subset']}]" if hub.get("subset") else ""
    return f"{hub['repo']}{subset}:{hub.get('split') or 'train'}"


def _revision(hub: dict) -> str:
    return hub.get("revision") or "main"


def _fetch_hint(hub: dict) -> str:
    revision = _revision(hub)
    flag = "" if revision == "main" else f" --revision {revision}"
    return (
        f"fetch it with `hf download --repo-type dataset {hub['repo']}{flag}`, or read it once online "
        "(`recipec data` with the hub reachable and HF_HUB_OFFLINE unset, or launch.hub_offline = false)"
    )


def _offline() -> bool:
    import datasets
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE)


@dataclass(frozen=True)
class Resolved:
    """A hub source's split, pinned to a commit.

    Attributes:
        commit: The commit sha the revision resolved to.
        root: The snapshot directory the split is read from, or None when it is streamed
            from the hub.
        files: ``(path in the repository, local path or None)`` of each data file of the
            split, in reading order.
    """

    commit: str
    root: str | None
    files: list[tuple[str, str | None]]


def resolve(source: dict, label: str) -> Resolved:
    """Pin a hub source to a commit and find the data files of its split.

    Online, the revision is resolved on the hub and, unless the source is streamed, the
    split's files are downloaded into the hub cache; offline, or when the hub cannot be
    reached, the cache alone is used.

    Raises:
        DataError: naming the source when the dataset, revision, subset or split does not
            exist (listing the subsets or splits there are), or is not in the cache offline.
    """
    hub = source["hub"]
    if not _offline():
        try:
            return _resolve_online(hub, label)
        except Exception as e:
            if not _unreachable(e):
                raise
            # the hub cannot be reached: read the cache, as offline
    return _resolve_cached(hub, label)


def _unreachable(e: BaseException) -> bool:
    """Whether ``e`` says that the hub could not be reached (rather than what it answered)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    if isinstance(e, (ConnectionError, TimeoutError, LocalEntryNotFoundError)):
        return True
    return any(kind.__name__ == "TransportError" for kind in type(e).__mro__)  # httpx's, whichever fork


def _resolve_online(hub: dict, label: str) -> Resolved:
    from huggingface_hub import HfApi, HfFileSystem, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    repo, revision, cache = hub["repo"], _revision(hub), hub_cache_dir()
    try:
        commit = HfApi().dataset_info(repo, revision=revision).sha
    except GatedRepoError:
        raise DataError(
            f"{label}: the dataset {repo} is gated: ask for access at https://huggingface.co/datasets/{repo} "
            "and log in with `hf auth login`"
        ) from None
    except RepositoryNotFoundError:
        raise DataError(f"{label}: the dataset {repo} does not exist on the hub, or cannot be accessed (`hf auth login`)") from None
    except RevisionNotFoundError:
        raise DataError(f"{label}: the dataset {repo} has no revision {revision!r}") from None
    try:  # records the revision's commit in refs/, for the offline runs that follow
        hf_hub_download(repo, "README.md", repo_type="dataset", revision=revision, cache_dir=cache)
    except EntryNotFoundError:
        pass  # no dataset card: the revision is recorded all the same
    files = _split_files(_builder(repo, hub, label, revision=commit), hub, label, cached=False)
    prefix = f"hf://datasets/{repo}@{commit}/"  # how datasets names the files of a commit
    in_repo = [url[len(prefix) :] if url.startswith(prefix) else HfFileSystem().resolve_path(url).path_in_repo for url in files]
    if hub.get("streaming"):  # nothing downloaded: the commit fixes the files' content
        return Resolved(commit, None, [(path, None) for path in in_repo])
    for path in in_repo:
        hf_hub_download(repo, path, repo_type="dataset", revision=commit, cache_dir=cache)
    return _resolve_snapshot(hub, label, commit)


def _resolve_cached(hub: dict, label: str) -> Resolved:
    commit = cached_revision(hub["repo"], _revision(hub))
    if commit is None:
        raise DataError(
            f"{label}: the dataset {hub['repo']} (revision {_revision(hub)}) is not in the hub cache "
            f"({hub_cache_dir()}), and the hub is offline; {_fetch_hint(hub)}"
        )
    return _resolve_snapshot(hub, label, commit)


def _resolve_snapshot(hub: dict, label: str, commit: str) -> Resolved:
    root = os.path.join(repo_folder(hub["repo"]), "snapshots", commit)
    files = _split_files(_builder(root, hub, label), hub, label, cached=True)
    return Resolved(commit, root, [(os.path.relpath(f, root).replace(os.sep, "/"), f) for f in files])


def _builder(path: str, hub: dict, label: str, revision: str | None = None) -> Any:
    """datasets' builder of the source's subset (``path``: a repository id, or a snapshot directory)."""
    import datasets

    repo, subset = hub["repo"], hub.get("subset")
    try:
        return datasets.load_dataset_builder(path, name=subset, revision=revision, data_files=hub.get("data_files"))
    except FileNotFoundError as e:  # datasets' DataFilesNotFoundError, EmptyDatasetError and DatasetNotFoundError among them
        which = "matching `data_files`" if hub.get("data_files") else f"of {shown(hub)}"
        where = "in the hub cache" if revision is None else "on the hub"
        hint = f"; {_fetch_hint(hub)}" if revision is None else ""
        raise DataError(f"{label}: no data files {which} {where} ({_reason(e)}){hint}") from None
    except ValueError as e:  # an unknown subset, or several and none chosen
        subsets = _subsets(path, revision)
        if subset is not None and subsets and subset not in subsets:
            raise DataError(f"{label}: the dataset {repo} has no subset {subset!r}; its subsets: {', '.join(subsets)}") from None
        if subset is None and len(subsets) > 1:
            raise DataError(
                f"{label}: the dataset {repo} has several subsets and no default one: {', '.join(subsets)}; "
                "choose one with `subset`"
            ) from None
        raise DataError(f"{label}: cannot read the dataset {repo}: {_reason(e)}") from None


def _subsets(path: str, revision: str | None) -> list[str]:
    import datasets

    try:
        return list(datasets.get_dataset_config_names(path, revision=revision))
    except Exception:  # the subsets are only named in the message: never hide the first error
        return []


def _split_files(builder: Any, hub: dict, label: str, *, cached: bool) -> list[str]:
    """The data files of the source's split, as datasets resolved them; an error naming the splits there are."""
    split = hub.get("split") or "train"
    data_files = {str(name): list(files) for name, files in (builder.config.data_files or {}).items()}
    if cached:  # a split none of whose files were downloaded is not in the cache
        data_files = {name: files for name, files in data_files.items() if files}
    if split not in data_files:
        what = f"{hub['repo']}" + (f" (subset {hub['subset']})" if hub.get("subset") else "")
        if not data_files:
            raise DataError(f"{label}: the files of {what} are not in the hub cache; {_fetch_hint(hub)}")
        where = " in the hub cache" if cached else ""
        raise DataError(
            f"{label}: the dataset {what} has no split {split!r}; its splits{where}: {', '.join(sorted(data_files))}"
            + ("" if not cached else f" (a split not yet downloaded is missing here; {_fetch_hint(hub)})")
        )
    return data_files[split]


def _reason(e: BaseException) -> str:
    """The first line of what went wrong, from the innermost cause (datasets wraps a parse error in its own)."""
    while e.__cause__ is not None:
        e = e.__cause__
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# --------------------------------------------------------------------------- reading


def documents(source: dict, reader: _Reader) -> Iterator[tuple[Any, str, tuple]]:
    """The records of a hub source's split, through ``reader``'s record handling.

    Yields:
        ``(text or example, "org/name[subset]:split#ROW", field values)``, as
        :meth:`.readers._Reader.rows` yields them.

    Raises:
        DataError: as :func:`resolve`, or when ``datasets`` cannot read the files.
    """
    import datasets
    import pyarrow as pa

    hub, label = source["hub"], reader.label
    where = shown(hub)
    resolved = resolve(source, label)
    streaming = bool(hub.get("streaming"))
    args = {"name": hub.get("subset"), "data_files": hub.get("data_files"), "split": hub.get("split") or "train"}
    failures = (OSError, ValueError, pa.ArrowException, datasets.exceptions.DatasetsError)
    try:
        if resolved.root is not None:
            ds = datasets.load_dataset(resolved.root, streaming=streaming, **args)
        else:
            ds = datasets.load_dataset(hub["repo"], revision=resolved.commit, streaming=True, **args)
    except failures as e:
        files = ", ".join(path for path, _ in resolved.files[:3]) + (" ..." if len(resolved.files) > 3 else "")
        raise DataError(f"{label}: {where}: cannot load the dataset from {files} ({_reason(e)})") from None
    reader.stats.files += len(resolved.files)
    try:
        if not streaming:
            columns = reader.columns(ds.data.schema, where)
            tables = ds.select_columns(columns).with_format("arrow").iter(batch_size=reader.batch_size)
        elif ds.features is not None:
            columns = reader.columns(ds.features.arrow_schema, where)
            tables = ds.select_columns(columns).with_format("arrow").iter(batch_size=reader.batch_size)
        else:  # a stream whose features are not known before its first batch
            tables = ds.with_format("arrow").iter(batch_size=reader.batch_size)
            first = next(tables, None)
            if first is None:
                return
            columns = reader.columns(first.schema, where)
            tables = (table.select(columns) for table in itertools.chain([first], tables))
        yield from reader.rows(tables, where)
    except failures as e:
        raise DataError(f"{label}: {where}: cannot read the dataset ({_reason(e)})") from None


# --------------------------------------------------------------------------- fingerprints


def fingerprint(source: dict, label: str) -> dict:
    """What the data stage's cache key holds of a hub source's content.

    Returns:
        ``{"commit": sha, "files": [[path in the repository, size, sha256], ...]}``; a file
        streamed from the hub is ``[path]`` alone (the commit fixes its content).

    Raises:
        DataError: as :func:`resolve`, or when a cached file cannot be read.
    """
    resolved = resolve(source, label)
    files: list[list] = []
    for path, local in resolved.files:
        if local is None:
            files.append([path])
            continue
        digest = hashlib.sha256()
        try:
            with open(local, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
        except OSError as e:
            raise DataError(f"{label}: {shown(source['hub'])}: cannot read {local} ({e.strerror or e})") from None
        files.append([path, size, digest.hexdigest()])
    return {"commit": resolved.commit, "files": files}


def lock_entry(source: dict) -> dict:
    """What a build's lock records of a hub source without reading it (no ``datasets``, no network).

    Returns:
        ``{"sha256": hash of the source's hub settings and commit, "commit": sha}``, the commit
        its revision is at in the hub cache; or ``{"error": message}`` when it is not there.
    """
    hub = source["hub"]
    commit = cached_revision(hub["repo"], _revision(hub))
    if commit is None:
        return {"error": f"the dataset {hub['repo']} (revision {_revision(hub)}) is not in the hub cache ({hub_cache_dir()})"}
    material = json.dumps({"hub": hub, "commit": commit}, sort_keys=True)
    return {"sha256": hashlib.sha256(material.encode("utf-8")).hexdigest(), "commit": commit}
