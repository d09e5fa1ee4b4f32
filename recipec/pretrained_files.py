"""read, for the pretrained model, tokenizer and adapter a recipe loads (and the models its data filters score
with): will the script find their files?

A script runs offline by default (`launch.hub_offline = true`): a hub id it does not find in
the local Hugging Face cache stops it when it loads it, after the job has waited in the
queue. And `from_pretrained` needs every weight file: a download that did not finish leaves
a snapshot with the config and some of the shards, and a local directory may hold only a
config (enough for `recipec explain`). Each of these is a warning at the recipe key that
names the files, not an error: the cache on the training machines may not be this one, and
a config alone is a fine thing to estimate memory from. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .diagnostics import Diagnostic
from .schema import Recipe
from .schema.model import LOCAL_PREFIXES
from .source import KeyPath, SourceMap

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""The unsharded weight files `from_pretrained` loads, in the order it prefers them."""

WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
"""The indexes of sharded weights: each names its shards in `weight_map`."""


def check_pretrained_files(recipe: Recipe, source: SourceMap, project: Path) -> list[Diagnostic]:
    """Warnings, at the recipe key, for a hub model, tokenizer or adapter the offline script will not find in the
    local hub cache, and for a pretrained model whose directory (local, or its snapshot in the cache) lacks weights.

    Args:
        recipe: the validated recipe.
        source: its source map.
        project: the project directory that relative paths are resolved against.
    """
    warnings: list[Diagnostic] = []

    def warn(key: KeyPath, message: str, help: str | None = None) -> None:
        warnings.append(Diagnostic("warning", message, source.locate(key), help))

    model = recipe.model
    pretrained = model.path is not None and model.init is None and recipe.continual is None
    offline = recipe.launch.hub_offline
    hub_items: list[tuple[KeyPath, str, str | None, str]] = []
    if pretrained and not model.path.startswith(LOCAL_PREFIXES):
        hub_items.append((("model", "path"), model.path, model.revision, "model"))
    if recipe.tokenizer.path is not None and not recipe.tokenizer.path.startswith(LOCAL_PREFIXES):
        hub_items.append((("tokenizer", "path"), recipe.tokenizer.path, model.revision, "tokenizer"))
    adapter = recipe.peft.adapter if recipe.peft is not None else None
    if adapter is not None and not adapter.startswith(LOCAL_PREFIXES):
        hub_items.append((("peft", "adapter"), adapter, recipe.peft.adapter_revision, "adapter"))

    if pretrained and model.path.startswith(LOCAL_PREFIXES):
        try:
            directory = project / Path(model.path).expanduser()
            # without a config.json the directory is not a model yet: recipec check and the memory estimate say so
            missing = missing_weights(directory) if (directory / "config.json").is_file() else None
        except (OSError, RuntimeError):
            missing = None
        if missing is not None:
            warn(
                ("model", "path"),
                f"{model.path} {missing}: the script's from_pretrained needs them",
                "`recipec explain` estimates memory from config.json alone; put the weights there before the run",
            )
    for key, path, revision in scoring_models(recipe):
        if not path.startswith(LOCAL_PREFIXES):
            hub_items.append((key, path, revision, "scoring model"))
            continue
        directory = project / Path(path).expanduser()
        try:
            missing = (
                "is not a directory" if not directory.is_dir()
                else "has no config.json" if not (directory / "config.json").is_file()
                else missing_weights(directory)
            )
        except OSError as e:
            missing = f"cannot be read ({e.strerror or e})"
        if missing is not None:
            warn(key, f"the scoring model {path} {missing}: the data stage loads it with from_pretrained")
    if not hub_items:
        return warnings

    from .runtime.hub import cached_snapshot, hub_cache_dir  # here: its module imports the data readers

    for key, repo, revision, what in hub_items:
        shown = "" if revision in (None, "main") else f" --revision {revision}"
        snapshot = cached_snapshot(repo, revision)
        if snapshot is None:
            if offline:
                warn(
                    key,
                    f"the {what} {repo} (revision {revision or 'main'}) is not in the local hub cache ({hub_cache_dir()}), "
                    "and the script runs offline (launch.hub_offline = true): it stops when it loads it",
                    f"fetch it before the run with `hf download {repo}{shown}` (into the cache the training machines "
                    "read), or set launch.hub_offline = false to let the script download it",
                )
            continue
        if what in ("model", "scoring model") and offline:
            missing = "has no config.json" if not os.path.isfile(os.path.join(snapshot, "config.json")) else missing_weights(Path(snapshot))
            if missing is not None:
                warn(
                    key,
                    f"the model {repo} at commit {Path(snapshot).name[:12]} in the local hub cache {missing}, and the "
                    "script runs offline (launch.hub_offline = true): its from_pretrained stops there",
                    f"`hf download {repo}{shown}` fetches the rest (a download that did not finish leaves some files "
                    "out), or set launch.hub_offline = false",
                )
    return warnings


def scoring_models(recipe: Recipe) -> list[tuple[KeyPath, str, str | None]]:
    """``(key, path, revision)`` of each model a data filter scores documents with, in recipe order."""
    from .schema.filters import MODEL_FILTERS

    chains: list[tuple[KeyPath, list]] = [(("data", "filters"), list(recipe.data.filters))]
    chains += [(("data", "sources", i, "filters"), list(src.filters)) for i, src in enumerate(recipe.data.sources)]
    found = []
    for prefix, chain in chains:
        for j, f in enumerate(chain):
            for key, revision in MODEL_FILTERS.get(f.type, ()):
                found.append(((*prefix, j, key), getattr(f, key), getattr(f, revision)))
    return found


def missing_weights(directory: Path) -> str | None:
    """What of its weights a model directory lacks, as a phrase ("holds no weights (...)", "lacks 2 of the 4
    shards ..."), or None when `from_pretrained` finds them all: every shard an index names, or one unsharded file.
    A hub snapshot's files are links into the cache's blobs: one whose blob never arrived counts as missing."""
    for index in WEIGHT_INDEXES:
        path = directory / index
        if not path.is_file():
            continue
        try:
            weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return f"has an index {index} that cannot be read (no `weight_map` of shard files)"
        absent = [name for name in shards if not (directory / name).is_file()]
        if not absent:
            return None
        listed = ", ".join(absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        return f"lacks {len(absent)} of the {len(shards)} shards its {index} names ({listed})"
    if any((directory / name).is_file() for name in WEIGHT_FILES):
        return None
    return f"holds no weights (no {', '.join(WEIGHT_FILES)} or sharded index such as {WEIGHT_INDEXES[0]})"
