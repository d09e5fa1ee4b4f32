"""Resolve `[data]`: the data stage's settings and the checks that need the whole recipe.

The stage itself runs in the training script (or `recipec data`); what can be known at
build time is checked here, so a glob that matches nothing or a filter that cannot work
with the recipe's tokenizer fails in the first second.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..runtime import stage_request
from ..schema.filters import DecontaminateFilter, LengthFilter, ScoreFilter, ScoreSampleFilter

if TYPE_CHECKING:  # pragma: no cover
    from . import _Builder
    from ..schema import Recipe
    from ..schema.data import Source


def source_dicts(sources: list[Source]) -> list[dict[str, Any]]:
    """Sources as the data stage reads them: what is set, filters with every default spelled out."""
    out = []
    for src in sources:
        d = src.model_dump(exclude_none=True, exclude={"text_field"} if src.builtin else None)
        d["filters"] = [f.model_dump() for f in src.filters]
        out.append(d)
    return out


def filter_dicts(recipe: Recipe) -> list[dict[str, Any]]:
    """`[[data.filters]]` with every default spelled out, in chain order."""
    return [f.model_dump() for f in recipe.data.filters]


def data_settings(b: _Builder, recipe: Recipe, files_root: Path | None) -> None:
    """Add the data stage's settings to the plan and check what needs the whole recipe.

    Args:
        b: the plan builder, in its "data" section.
        recipe: the validated recipe.
        files_root: the project directory, to check that globs match; None skips that check.
    """
    d = recipe.data
    b.add("sources", source_dicts(d.sources), "data.sources", b.origin(("data", "sources")))
    b.add("filters", filter_dicts(recipe), "data.filters (after each source's own)", b.origin(("data", "filters")))
    for name in stage_request.DATA_FIELDS:
        b.key(name, ("data", name))

    trained = recipe.tokenizer.train is not None
    chains: list[tuple[tuple[Any, ...], list[Any]]] = [(("data", "filters"), list(d.filters))]
    chains += [(("data", "sources", i, "filters"), list(src.filters)) for i, src in enumerate(d.sources)]
    for path, chain in chains:
        for j, f in enumerate(chain):
            if isinstance(f, LengthFilter) and f.unit == "tokens" and trained:
                b.error(
                    path + (j, "unit"),
                    "a length filter in tokens needs the tokenizer before the data is filtered, "
                    "but [tokenizer.train] trains it on the filtered data",
                    'use unit = "words" or "chars", or load a tokenizer with [tokenizer] path',
                )
            if isinstance(f, (ScoreFilter, ScoreSampleFilter)) and path == ("data", "filters"):
                for i, src in enumerate(d.sources):
                    if src.builtin is not None:
                        b.error(
                            path + (j, "field"),
                            f"sources[{i}] is the builtin {src.builtin!r}, which has no score field {f.field!r}",
                            "put the filter in the scored source's own [[data.sources.filters]]",
                        )
            if isinstance(f, DecontaminateFilter) and files_root is not None:
                _check_globs(b, path + (j, "path"), f.path, files_root)
    if files_root is not None:
        for i, src in enumerate(d.sources):
            if src.path is not None:
                _check_globs(b, ("data", "sources", i, "path"), src.path, files_root, directory=src.format == "datasets")


def _check_globs(b: _Builder, path: tuple[Any, ...], patterns: str | list[str], root: Path, directory: bool = False) -> None:
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        # the same expansion as the readers' (recipec/runtime/readers.py, _Paths.full), without
        # importing them: the compiler stays free of the runtime's libraries
        full = pattern if os.path.isabs(pattern) else os.path.join(glob.escape(str(root)), pattern)
        matches = glob.glob(full, recursive=True)
        if directory:
            if not any(os.path.isdir(m) for m in matches):
                b.error(
                    path,
                    f"{pattern!r} is not a directory (paths are relative to the directory recipec runs in)",
                    "a `datasets` source names the directory that save_to_disk wrote",
                )
        elif not any(os.path.isfile(m) for m in matches):
            b.error(
                path,
                f"{pattern!r} matches no file (paths are relative to the directory recipec runs in)",
                "`**` matches across directories, e.g. \"data/**/*.jsonl\"",
            )
