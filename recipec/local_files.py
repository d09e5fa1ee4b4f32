"""read, for the files a recipe names: that each local path and data glob finds something.

Paths in a recipe are relative to the project directory (the one `recipec` runs in). A
local model or tokenizer (`./`, `../`, `/`, `~`) must be a directory, a data source's
glob must match a file (a `datasets` source a directory, an `mds` source a directory holding
an MDS index.json), and so must a decontamination
filter's. Checked when the recipe is read, beside `recipec.parent`, so that a typo fails
in the first second and not after the data stage; resolve itself reads no files.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .diagnostics import Diagnostic
from .schema import Recipe
from .schema.filters import DecontaminateFilter
from .schema.model import LOCAL_PREFIXES
from .source import KeyPath, SourceMap

Report = Callable[..., None]
"""`error(key, message, help=None)`: records an error at a recipe key."""


def check_local_files(recipe: Recipe, source: SourceMap, project: Path) -> list[Diagnostic]:
    """Errors, at the recipe key, for every local path and glob of the recipe that finds nothing.

    Args:
        recipe: the validated recipe.
        source: its source map.
        project: the project directory that relative paths are resolved against.
    """
    errors: list[Diagnostic] = []

    def error(path: KeyPath, message: str, help: str | None = None) -> None:
        errors.append(Diagnostic("error", message, source.locate(path), help))

    root = project.resolve()
    for table in ("model", "tokenizer"):
        path = getattr(recipe, table).path
        if path is not None and path.startswith(LOCAL_PREFIXES):
            _check_directory(error, (table, "path"), path, root)
    d = recipe.data
    chains: list[tuple[KeyPath, list[Any]]] = [(("data", "filters"), list(d.filters))]
    chains += [(("data", "sources", i, "filters"), list(src.filters)) for i, src in enumerate(d.sources)]
    for key, chain in chains:
        for j, f in enumerate(chain):
            if isinstance(f, DecontaminateFilter):
                _check_globs(error, key + (j, "path"), f.path, root)
    for i, src in enumerate(d.sources):
        if src.path is not None:
            _check_globs(error, ("data", "sources", i, "path"), src.path, root, directory=src.format == "datasets", mds=src.format in (None, "mds"), only_mds=src.format == "mds")
        if src.tokenizer is not None and src.tokenizer.startswith(LOCAL_PREFIXES):
            _check_directory(error, ("data", "sources", i, "tokenizer"), src.tokenizer, root)
    return errors


def _check_directory(error: Report, key: KeyPath, path: str, root: Path) -> None:
    """A local model or tokenizer: a directory, as save_pretrained writes it."""
    table = "tokenizer" if key[-1] == "tokenizer" else key[0]  # a token source's tokenizer, or [model] / [tokenizer] path
    name = "`tokenizer`" if key[-1] == "tokenizer" else f"`{table}.path`"
    try:
        full = root / Path(path).expanduser()
        exists, is_dir = full.exists(), full.is_dir()
    except RuntimeError:  # ~user for a user that does not exist
        error(key, f"{name} starts with {path.split('/')[0]!r}, a user that does not exist")
        return
    except OSError as exc:  # a name too long for the file system, and the like
        error(key, f"{name} is not a usable path: {exc.strerror or exc}")
        return
    hub = "a hub id has no leading ./, ../, / or ~"
    if not exists:
        error(
            key,
            f"{path!r} does not exist (paths are relative to the directory recipec runs in)",
            f"a local {table} is a directory that save_pretrained wrote; {hub}",
        )
    elif not is_dir:
        error(key, f"{path!r} is a file; a local {table} is a directory that save_pretrained wrote", hub)


def _is_mds_dir(path: str) -> bool:
    """A directory of MDS shards: it holds their index.json (recipec/runtime/mds.py)."""
    return os.path.isfile(os.path.join(path, "index.json"))


def _check_globs(
    error: Report, key: KeyPath, patterns: str | list[str], root: Path, directory: bool = False, mds: bool = False, only_mds: bool = False
) -> None:
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        # the same expansion as the readers' (recipec/runtime/readers.py, _Paths.full), without
        # importing them: the compiler stays free of the runtime's libraries
        full = pattern if os.path.isabs(pattern) else os.path.join(glob.escape(str(root)), pattern)
        matches = glob.glob(full, recursive=True)
        if only_mds:
            if not any(_is_mds_dir(m) for m in matches):
                error(
                    key,
                    f"{pattern!r} is not a directory holding an MDS index.json (paths are relative to the directory recipec runs in)",
                    "an `mds` source names the directory of index.json and its shards: the split's directory when there are splits",
                )
        elif mds and any(_is_mds_dir(m) for m in matches):
            continue
        elif directory:
            if not any(os.path.isdir(m) for m in matches):
                error(
                    key,
                    f"{pattern!r} is not a directory (paths are relative to the directory recipec runs in)",
                    "a `datasets` source names the directory that save_to_disk wrote",
                )
        elif not any(os.path.isfile(m) for m in matches):
            error(
                key,
                f"{pattern!r} matches no file (paths are relative to the directory recipec runs in)",
                "`**` matches across directories, e.g. \"data/**/*.jsonl\"",
            )
