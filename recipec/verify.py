"""verify: does a build still match what its lock says produced it?

`recipec verify BUILD_DIR` reads BUILD_DIR/recipe.lock.json, compiles the recipe it names
again (with the same `--set` overrides, from the current directory, which must be the
project directory the build was made from), renders it without writing anything, and
compares every hash: the recipe, the templates, the generated files on disk and as they
would be rendered now, the data sources' content fingerprints, the pretrained model,
tokenizer and adapter and the data filters' scoring models (a hub id's commit in the local
cache, a local directory's files),
the installed training packages and recipec's own version. Each difference is printed on its own line as
``KIND: DETAIL``::

    recipe edited: recipes/tiny.toml
    generated file hand-edited: train.py
    package versions drifted: torch 2.13.0 -> 2.14.0
    3 drifts: build/tiny no longer matches its recipe, generated files and packages

Lines starting ``note:`` say what git records of the build (made from uncommitted
changes, or made at another commit than the project is at now); they are not drifts and
do not change the exit status.

Exit status: 0 when nothing drifted, 1 when something did, 2 when BUILD_DIR is not a
build or its recipe is now invalid (the diagnostics are printed).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from . import report
from .build import LOCK_FILE, build_files, hand_edited, make_lock, read_lock
from .diagnostics import Diagnostic, RecipeError
from .runtime.file_hashes import changed_files, rehashing

RECIPE_EDITED = "recipe edited"
TEMPLATE_CHANGED = "template changed"
HAND_EDITED = "generated file hand-edited"
WOULD_CHANGE = "generated file would change"
DATA_CHANGED = "data changed"
MODEL_CHANGED = "model changed"
PACKAGES_DRIFTED = "package versions drifted"
VERSION_DIFFERS = "recipec version differs"
KINDS = (RECIPE_EDITED, TEMPLATE_CHANGED, HAND_EDITED, WOULD_CHANGE, DATA_CHANGED, MODEL_CHANGED, PACKAGES_DRIFTED, VERSION_DIFFERS)
"""Every kind of drift, in the order they are reported."""


@dataclass(frozen=True)
class Drift:
    """One difference between a build's lock and the present."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def find_drift(
    build_dir: Path, lock: dict[str, Any], project: str | os.PathLike[str] = ".", notes: list[str] | None = None
) -> list[Drift]:
    """Compare a build's lock with the recipe, templates, data and packages as they are now.

    Args:
        build_dir: the build directory, as a path from the current directory.
        lock: its lock (`recipec.build.read_lock`).
        project: the project directory the lock's recipe path is relative to.
        notes: when given, gets what `git_notes` says of the build's git state.

    Returns:
        Every drift, grouped by kind in the order of `KINDS`; empty when the build matches.

    Raises:
        RecipeError: when the lock does not name a recipe, or the recipe is now invalid.
    """
    from .compiler import plan_recipe
    from .render import render

    recipe_file, overrides = _recorded_recipe(build_dir, lock)
    plan, source = plan_recipe(Path(project) / recipe_file, overrides, build_dir, project)
    now = make_lock(plan, source, build_files(plan, render(plan)), project)

    drifts: list[Drift] = []
    if lock["recipe"].get("sha256") != now["recipe"]["sha256"]:
        drifts.append(Drift(RECIPE_EDITED, recipe_file))
    drifts += _changed_entries(TEMPLATE_CHANGED, lock.get("templates"), now["templates"])
    for rel, how in hand_edited(build_dir, lock):
        drifts.append(Drift(HAND_EDITED, rel if how == "edited" else f"{rel} (deleted)"))
    drifts += _changed_entries(WOULD_CHANGE, lock["files"], now["files"])
    if "data" in lock:
        drifts += _data_drift(lock["data"], now["data"])
    for what in PRETRAINED:
        drifts += _pretrained_drift(what, lock.get(what), now.get(what))
    scorers = (lock.get("scorers") or {}, now.get("scorers") or {})
    for label in sorted(set(scorers[0]) | set(scorers[1])):  # the models a data filter scores with: they decide the data
        drifts += _pretrained_drift(label, scorers[0].get(label), scorers[1].get(label), DATA_CHANGED)
    if isinstance(lock.get("packages"), dict):
        for name in sorted(set(lock["packages"]) | set(now["packages"])):
            old, new = lock["packages"].get(name), now["packages"].get(name)
            if old != new:
                drifts.append(Drift(PACKAGES_DRIFTED, f"{name} {_version(old)} -> {_version(new)}"))
    if lock.get("recipec_version") != now["recipec_version"]:
        drifts.append(Drift(VERSION_DIFFERS, f"{_version(lock.get('recipec_version'))} -> {now['recipec_version']}"))
    if notes is not None:
        notes += git_notes(lock.get("git"), now.get("git"))
    return drifts


def git_notes(before: Any, now: Any) -> list[str]:
    """What a reviewer should know about the build's git state; never a drift.

    A new commit elsewhere in the project does not change what the build does (the
    hashes say that), but a build made from uncommitted changes cannot be found in git.

    Args:
        before: the lock's ``git`` entry (`recipec.build.git_state` at build time).
        now: the same, now.
    """
    if not isinstance(before, dict) or not isinstance(before.get("commit"), str):
        return []
    commit = before["commit"][:12]
    notes = []
    if before.get("recipe_modified"):
        notes.append(f"built from a recipe with changes not committed at {commit}: git does not hold that text")
    elif before.get("dirty"):
        notes.append(f"built at {commit} from a work tree with uncommitted changes to other files")
    if isinstance(now, dict) and now.get("commit") != before["commit"]:
        notes.append(f"the project is at commit {str(now.get('commit'))[:12]} now; the build was made at {commit}")
    elif now is None:
        notes.append(f"the build was made at commit {commit}; the project is not in a git work tree now")
    return notes


def _recorded_recipe(build_dir: Path, lock: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """The recipe path and overrides a lock records; a RecipeError when they are missing."""
    recipe = lock.get("recipe")
    overrides = lock.get("overrides", [])
    if (
        not isinstance(recipe, dict)
        or not isinstance(recipe.get("file"), str)
        or not isinstance(overrides, list)
        or not all(isinstance(o, str) for o in overrides)
        or not isinstance(lock.get("files"), dict)
    ):
        raise RecipeError(
            [
                Diagnostic(
                    "error",
                    f"{(build_dir / LOCK_FILE).as_posix()} does not record a recipe, its overrides and its files",
                    None,
                    "rebuild it with `recipec build RECIPE`",
                )
            ]
        )
    return recipe["file"], tuple(overrides)


def _changed_entries(kind: str, old: Any, new: dict[str, str]) -> list[Drift]:
    """One drift per name whose hash differs, appeared or disappeared."""
    return [Drift(kind, name) for name in changed_files(old if isinstance(old, dict) else {}, new)]


def _data_drift(old: Any, new: Sequence[dict[str, str]]) -> list[Drift]:
    """One drift per data source whose fingerprint (or readability) differs."""
    old = old if isinstance(old, list) else []
    drifts = []
    for index in range(max(len(old), len(new))):
        before = old[index] if index < len(old) and isinstance(old[index], dict) else None
        after = new[index] if index < len(new) else None
        if before == after:
            continue
        label = (after or before or {}).get("source", f"sources[{index}]")
        if before is None:
            detail = f"{label} (not in the lock)"
        elif after is None:
            detail = f"{label} (no longer in the recipe)"
        elif "error" in after:
            detail = f"{label} (cannot be read now: {after['error']})"
        elif "error" in before:
            detail = f"{label} (could not be read at build time: {before['error']})"
        else:
            detail = f"{label} (sha256 {str(before.get('sha256'))[:12]} -> {after['sha256'][:12]})"
        drifts.append(Drift(DATA_CHANGED, detail))
    return drifts


PRETRAINED = ("model", "tokenizer", "peft_adapter")
"""The lock's entries of what the run loads pretrained (`recipec.build.pretrained_entry`, the saved adapter's)."""


def _pretrained_drift(what: str, old: Any, new: Any, kind: str = MODEL_CHANGED) -> list[Drift]:
    """A drift when the pretrained model, tokenizer or adapter the lock records (or a data filter's scoring model,
    ``kind`` DATA_CHANGED) is not what the cache or directory holds now: another commit, a file edited, added or
    removed, or no longer readable."""
    if old == new or not isinstance(old, dict) and new is None:
        return []
    old = old if isinstance(old, dict) else {}
    new = new if isinstance(new, dict) else {}
    label = f"{what} {new.get('path') or old.get('path')}"
    if old.get("path") != new.get("path"):
        detail = f"{what} {old.get('path')} -> {new.get('path')}" if old and new else f"{label} ({'not in the lock' if new else 'no longer loaded'})"
    elif "error" in new and "error" not in old:
        detail = f"{label} (cannot be read now: {new['error']})"
    elif "error" in old and "error" not in new:
        detail = f"{label} (could not be read at build time: {old['error']})"
    elif old.get("commit") != new.get("commit") or old.get("revision") != new.get("revision"):
        detail = f"{label} (revision {old.get('revision')} at commit {str(old.get('commit'))[:12]} -> {new.get('revision')} at {str(new.get('commit'))[:12]})"
    elif isinstance(old.get("files", old.get("sha256")), dict) and isinstance(new.get("files", new.get("sha256")), dict):
        before, after = old.get("files", old.get("sha256")), new.get("files", new.get("sha256"))  # a local adapter's: "sha256"
        detail = f"{label}: {', '.join(d.detail for d in _changed_entries(kind, before, after))}"
    else:
        detail = f"{label} (its lock entry differs)"
    return [Drift(kind, detail)]


def _version(version: Any) -> str:
    return "not installed" if version is None else str(version)


@click.command(short_help="Check a build against its recipe, templates, data, model and packages.")
@click.argument("build_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--rehash",
    is_flag=True,
    help="Read every large model and adapter file again, whatever the file-hash cache holds "
    "(for damage the file system does not see; the cache otherwise skips files unchanged since they were hashed).",
)
def verify(build_dir: Path, rehash: bool) -> None:
    """Check that BUILD_DIR still matches what its lock says produced it.

    Run from the project directory the build was made from. The recipe recorded in
    BUILD_DIR/recipe.lock.json is compiled again with the same --set overrides (nothing is
    written) and every hash is compared. Each drift is printed on its own line as
    `KIND: DETAIL`, KIND one of: recipe edited, template changed, generated file
    hand-edited, generated file would change, data changed, model changed (the pretrained
    model, tokenizer or PEFT adapter: another commit in the hub cache, a file of a local
    directory), package versions drifted, recipec version differs.

    Lines starting `note:` tell what git says of the build (made from uncommitted
    changes, or the project has moved to another commit since); they are not drifts.

    Exit status: 0 nothing drifted, 1 something did, 2 BUILD_DIR is not a build or its
    recipe is now invalid.
    """
    shown = build_dir.as_posix()
    lock = read_lock(build_dir)
    if lock is None:
        report.fail(
            f"{shown} is not a recipec build: it has no readable {LOCK_FILE}",
            help="build one with `recipec build RECIPE -o BUILD_DIR`",
        )
    notes: list[str] = []
    try:
        with rehashing() if rehash else contextlib.nullcontext():
            drifts = find_drift(build_dir, lock, notes=notes)
    except RecipeError as exc:
        report.fail(exc)
    for note in notes:
        click.echo(f"note: {note}")
    if not drifts:
        click.echo(f"ok: {shown} matches its recipe, templates, data, model and packages")
        return
    for drift in drifts:
        click.echo(str(drift))
    plural = "s" if len(drifts) > 1 else ""
    click.echo(f"{len(drifts)} drift{plural}: {shown} no longer matches its {summary(drifts)}")
    sys.exit(report.EXIT_DIFFERENT)


_WHAT = {
    RECIPE_EDITED: "recipe",
    TEMPLATE_CHANGED: "templates",
    HAND_EDITED: "generated files",
    WOULD_CHANGE: "generated files",
    DATA_CHANGED: "data",
    MODEL_CHANGED: "pretrained model",
    PACKAGES_DRIFTED: "packages",
    VERSION_DIFFERS: "recipec version",
}


def summary(drifts: Sequence[Drift]) -> str:
    """What drifted, in the order of KINDS: ``recipe, generated files and pretrained model``."""
    parts = list(dict.fromkeys(_WHAT[kind] for kind in KINDS if any(d.kind == kind for d in drifts)))
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
