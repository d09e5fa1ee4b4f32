"""The pipeline as functions the CLI and tests call: read -> validate -> resolve -> render -> write.

`plan_recipe` (what `validate`, `explain` and `check` need) imports neither the templates
nor the build writer; `build_plan` imports them when a build is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .chat_templates import read_chat_templates
from .diagnostics import Diagnostic, RecipeError
from .local_files import check_local_files
from .pretrained_files import check_pretrained_files
from .migrate import migrate
from .parent import read_parent
from .saved_adapter import SavedAdapter, read_adapter
from .resolve import Plan, default_build_dir, resolve
from .schema.model import LOCAL_PREFIXES
from .source import SourceMap, read_recipe
from .validate import validate

if TYPE_CHECKING:
    from .build import Build
    from .schema import Recipe


PLOT_CACHE = ".recipec/plots"
"""Drawings of schedule.png, by content, under the project directory (see `recipec.plot.cached`)."""


def load(
    recipe_path: str | os.PathLike[str], overrides: Sequence[str] = ()
) -> tuple[Recipe, SourceMap, list[Diagnostic]]:
    """read + migrate + validate.

    Returns:
        The recipe, its source map and the warnings about keys read under their new name.

    Raises:
        RecipeError: for a missing file, bad TOML, a bad override or an invalid recipe
            (with the migration warnings after the errors).
    """
    data, source = read_recipe(recipe_path, overrides)
    data, source, migrated = migrate(data, source)
    try:
        return validate(data, source), source, migrated
    except RecipeError as exc:
        raise RecipeError(exc.diagnostics + migrated) from None


def plan_recipe(
    recipe_path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    build_dir: str | os.PathLike[str] | None = None,
    project: str | os.PathLike[str] = ".",
) -> tuple[Plan, SourceMap]:
    """read + migrate + validate + the recipe's local files + resolve, relative to the project directory.

    Args:
        recipe_path: the recipe file, as the user names it.
        overrides: `--set key=value` arguments.
        build_dir: where the build will go; default build/<recipe.name>.
        project: the project directory that relative recipe paths are resolved against.
    """
    recipe, source, migrated = load(recipe_path, overrides)
    project = Path(project)
    missing = check_local_files(recipe, source, project)
    try:
        parent = read_parent(recipe, source, project)
        recipe, adapter = read_adapter(recipe, source, project)
        chat, unreadable = read_chat_templates(recipe, source, project, _local_tokenizer(recipe, parent.model_dir if parent else None, adapter, parent.base_revision if parent else None))
        missing += unreadable
        rel_build = _relative(build_dir, project) if build_dir is not None else default_build_dir(recipe)
        plan = resolve(
            recipe,
            source,
            recipe_file=_relative(recipe_path, project),
            build_dir=rel_build,
            project_dir=_relative(project, project / rel_build),
            overrides=tuple(overrides),
            **_local_model_config(
                recipe, project, (parent.base_model or parent.model_dir) if parent else None, parent.base_revision if parent else None
            ),
            parent=parent,
            chat=chat,
            adapter=adapter,
        )
    except RecipeError as exc:
        raise RecipeError(missing + exc.diagnostics + migrated) from None
    if missing:
        raise RecipeError(missing + list(plan.warnings) + migrated)
    unfound = check_pretrained_files(recipe, source, project)
    return replace(plan, warnings=(*migrated, *plan.warnings, *unfound)), source


def build(
    recipe_path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    build_dir: str | os.PathLike[str] | None = None,
    project: str | os.PathLike[str] = ".",
    force: bool = False,
) -> tuple[Build, Plan]:
    """The whole compile: plan, render, and write the build directory.

    `force` overwrites generated files of an earlier build that were edited by hand
    (without it, such a build is an error that names them).
    """
    plan, source = plan_recipe(recipe_path, overrides, build_dir, project)
    return build_plan(plan, source, project, force=force), plan


def build_plan(plan: Plan, source: SourceMap, project: str | os.PathLike[str] = ".", force: bool = False) -> Build:
    """render + write: the build directory of a plan that `plan_recipe` made from `source`.

    Raises:
        RecipeError: the build directory is not one recipec may write to, or holds
            generated files edited by hand (without `force`).
    """
    from .build import check_output_dir, write_build
    from .plot import cached as cached_plot
    from .render import render

    check_output_dir(plan, source, Path(project))
    plot = cached_plot(Path(project) / PLOT_CACHE)
    return write_build(plan, render(plan, plot), source, Path(project) / plan.build_dir, project=project, force=force)


def _relative(path: str | os.PathLike[str], start: str | os.PathLike[str]) -> str:
    """`path` relative to `start`, POSIX-style, so that no absolute path reaches a build."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(start))).as_posix()


def _local_tokenizer(
    recipe: Recipe, parent_model: str | None, adapter: SavedAdapter | None = None, parent_revision: str | None = None
) -> str | None:
    """The directory of the tokenizer the run loads, when it is local or a hub id in the local cache: its chat
    template can be read."""
    t = recipe.tokenizer
    if t.train is not None:
        return None
    if t.path is not None:
        return _readable(t.path, recipe.model.revision)
    if adapter is not None and adapter.tokenizer:
        return adapter.path
    if parent_model is not None:
        return _readable(parent_model, parent_revision)
    return _readable(recipe.model.path, recipe.model.revision)


def _readable(path: str | None, revision: str | None) -> str | None:
    """The directory the build reads of a model or tokenizer: a local path as it is, a hub id's snapshot at
    `revision` in the local Hugging Face cache (what a download left there; no network), or None."""
    if path is None or path.startswith(LOCAL_PREFIXES):
        return path
    from .runtime.hub import cached_snapshot  # here: its module imports the data readers, which validate does not need

    return cached_snapshot(path, revision)


def _local_model_config(recipe: Recipe, project: Path, parent_model: str | None, parent_revision: str | None = None) -> dict[str, Any]:
    """config.json of the pretrained model (a local directory, or a hub id's snapshot in the local cache), so
    resolve can check seq_len, the mesh and `[model.config]` against it and estimate its memory: resolve's
    `model_config` and `model_config_source` (where it was read), or {} when it was not."""
    name, revision = (parent_model, parent_revision) if parent_model is not None else (recipe.model.path, recipe.model.revision)
    path = _readable(name, revision)
    if name is None or path is None:
        return {}
    try:
        config = json.loads((project / Path(path).expanduser() / "config.json").read_text())
    except (OSError, ValueError, RuntimeError):  # RuntimeError: ~user that does not exist
        return {}
    if not isinstance(config, dict):
        return {}
    where = f"{name.rstrip('/')}/config.json" if name.startswith(LOCAL_PREFIXES) else f"{name} at commit {Path(path).name[:12]} (the local hub cache)"
    return {"model_config": config, "model_config_source": where}
