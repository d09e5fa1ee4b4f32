"""read, for `[continual]`: what the parent run left behind.

A recipec run directory holds `run.json`, `resolved.toml` and `recipe.lock.json` (copied
there by the generated script when it starts), `model/` when it finished, and
`checkpoints/step_*/` (each a loadable model: config, weights, tokenizer, plus accelerate's
optimizer and RNG state). From them the compiler learns the parent's recipe (data
sources, split, schedule), its lock hash and the LR it would have used next. This is the
only part of compilation besides reading the recipe that touches the disk; resolve gets
the result as plain data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .diagnostics import Diagnostic, RecipeError
from .schema import Recipe
from .source import SourceMap, parse_recipe

STATE_FILE = "trainer_state.json"


@dataclass(frozen=True)
class ParentRun:
    """The run a `[continual]` recipe starts from."""

    run_dir: str
    """The parent's run directory, relative to the project."""
    model_dir: str
    """What is loaded: the run's `model/` or a checkpoint directory, relative to the project."""
    kind: str
    """"run" (a finished run's final model) or "checkpoint"."""
    step: int
    """Optimizer steps the parent had done when `model_dir` was written."""
    lock_sha256: str
    lr: float
    """The LR the parent used at update `step` (its last update, for a finished run), from its schedule.csv."""
    recipe: Recipe
    """The parent's resolved recipe (its resolved.toml)."""
    source: SourceMap
    base_model: str | None = None
    """A PEFT parent that saved no merged model: the model its adapter (`model_dir`) was trained on, which
    the script loads and merges the adapter into (project-relative, or a hub id); None otherwise."""
    base_revision: str | None = None


def read_parent(recipe: Recipe, source: SourceMap, project: Path) -> ParentRun | None:
    """Read the parent run named by `continual.from`, or None without `[continual]`.

    Raises:
        RecipeError: pointing at `continual.from` when the parent cannot be used.
    """
    continual = recipe.continual
    if continual is None:
        return None
    where = source.locate(("continual", "from"))

    def fail(message: str, help: str | None = None) -> RecipeError:
        return RecipeError([Diagnostic("error", message, where, help)])

    try:
        given = Path(continual.from_).expanduser()
        path = given if given.is_absolute() else project / given
        is_checkpoint, is_run = (path / STATE_FILE).is_file(), (path / "run.json").is_file()
    except RuntimeError:  # ~user for a user that does not exist
        raise fail(f"`continual.from` starts with {continual.from_.split('/')[0]!r}, a user that does not exist") from None
    except OSError as exc:  # a name too long for the file system, and the like: is_file() raises only for ENOENT-ish
        raise fail(f"`continual.from` is not a usable path: {exc.strerror or exc}") from None
    if is_checkpoint:
        kind, model_dir, run_dir = "checkpoint", path, path.parent.parent
        step = _json(path / STATE_FILE).get("step")
    elif is_run:
        kind, model_dir, run_dir = "run", path / "model", path
        record = _json(path / "run.json")
        adapter = (model_dir / "adapter_config.json").is_file()
        if adapter and (path / "model_full" / "config.json").is_file():  # a PEFT run's merged model
            model_dir, adapter = path / "model_full", False
        if record.get("status") != "completed" or not (model_dir / ("adapter_config.json" if adapter else "config.json")).is_file():
            raise fail(
                f"the parent run {continual.from_} has not finished: it has no final model",
                "continue from one of its checkpoints instead: from = \"" + continual.from_.rstrip("/") + '/checkpoints/step_..."',
            )
        step = record.get("steps")
    else:
        raise fail(
            f"{continual.from_} is neither a recipec run directory (with run.json) nor one of its checkpoints",
            "train the parent recipe first (recipec run ...), then point `from` at its output directory",
        )
    adapter = kind == "run" and (model_dir / "adapter_config.json").is_file()
    if not isinstance(step, int):
        raise fail(f"cannot tell how many steps the parent had done at {continual.from_}")
    if kind == "checkpoint" and not (model_dir / "config.json").is_file():
        raise fail(
            f"the checkpoint {continual.from_} holds no model config (written by an older recipec)",
            "continue from the finished run directory instead",
        )
    resolved, lock, csv = run_dir / "resolved.toml", run_dir / "recipe.lock.json", run_dir / "schedule.csv"
    if not (resolved.is_file() and lock.is_file() and csv.is_file()):
        raise fail(f"the parent run {_relative(run_dir, project)} lacks resolved.toml, recipe.lock.json or schedule.csv")
    lrs = [float(line.split(",")[1]) for line in csv.read_text(encoding="utf-8").splitlines()[1:] if line]
    if not lrs:
        raise fail(f"the parent's schedule.csv in {_relative(run_dir, project)} is empty")
    try:
        from .validate import validate

        data, parent_source = parse_recipe(resolved.read_text(encoding="utf-8"), str(resolved))
        parent_recipe = validate(data, parent_source)
    except RecipeError as exc:
        raise fail(f"the parent's resolved.toml does not validate: {exc.diagnostics[0].message}") from None
    base_model, base_revision = None, None
    if adapter:  # a PEFT run that saved no merged model: its adapter is merged into its base model by the script
        base_model, base_revision = parent_recipe.model.path, parent_recipe.model.revision
        if parent_recipe.continual is not None:  # the base is what that run continued from, as its run.json names it
            base_model, base_revision = (_json(run_dir / "run.json").get("parent") or {}).get("model"), None
            if base_model is None or (project / base_model / "adapter_config.json").is_file() or not (project / base_model / "config.json").is_file():
                raise fail(
                    f"the parent run {continual.from_} trained a PEFT adapter on another run's model, which is not a "
                    "saved full model here (an adapter itself, or moved)",
                    "set peft.save_merged = true in the parent recipe and train it again; continue from its model_full/",
                )
        if base_model is None:
            raise fail(
                f"the parent run {continual.from_} trained a PEFT adapter on a model it built from scratch, and saved no merged model",
                "set peft.save_merged = true in the parent recipe and train it again; continue from its model_full/",
            )
    return ParentRun(
        run_dir=_relative(run_dir, project),
        model_dir=_relative(model_dir, project),
        kind=kind,
        step=step,
        lock_sha256=hashlib.sha256(lock.read_bytes()).hexdigest(),
        lr=lrs[min(step, len(lrs) - 1)],
        recipe=parent_recipe,
        source=parent_source,
        base_model=base_model,
        base_revision=base_revision,
    )


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _relative(path: Path, project: Path) -> str:
    """A project-relative path spelt as a local path (./...) so it is never taken for a hub id."""
    import os

    rel = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(project))).as_posix()
    return rel if rel.startswith("../") else "./" + rel
