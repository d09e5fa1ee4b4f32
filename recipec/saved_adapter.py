"""read, for `peft.adapter`: the saved adapter a recipe goes on training.

A local adapter is a directory `save_pretrained` wrote: adapter_config.json and its weights
(adapter_model.safetensors, or .bin from older peft). A recipec PEFT run directory names its
`model/`. Its config is read here, beside `recipec.parent`, so that the recipe's `[peft]`
keys can be checked against it at build time and the keys the recipe leaves unset take the
adapter's values: resolved.toml, `explain` and the memory estimate then show what trains.
A hub id is looked up in the local Hugging Face cache; one not there is checked by the
script as it starts (`recipec_runtime/adapters.py`, `load`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .diagnostics import Diagnostic, RecipeError
from .runtime.file_hashes import file_sha256
from .parent import _relative  # spelt as continual.from's parent is, so the two compare
from .runtime.adapters import saved_config_problems, saved_values  # stdlib only
from .schema import Recipe
from .schema.model import LOCAL_PREFIXES
from .source import SourceMap

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
TOKENIZER = ("tokenizer_config.json", "tokenizer.json")


@dataclass(frozen=True)
class SavedAdapter:
    """The adapter `peft.adapter` names."""

    path: str
    """As the script loads it: a project-relative directory spelt ./..., or the hub id."""
    local: bool
    config: dict[str, Any] | None
    """Its adapter_config.json; None for a hub id not in the local cache."""
    files: dict[str, str] = field(default_factory=dict)
    """{file name: sha256} of its config and weights (a local adapter), for the lock."""
    tokenizer: bool = False
    """A tokenizer was saved beside it (a local adapter)."""
    revision: str | None = None
    """A hub adapter's `peft.adapter_revision`."""


def task_type(recipe: Recipe) -> str:
    """peft's task type of the run: a reward model trains a sequence classifier."""
    pref = recipe.preference
    return "SEQ_CLS" if pref is not None and pref.objective == "reward" else "CAUSAL_LM"


def recipe_spec(recipe: Recipe) -> dict[str, Any]:
    """The `[peft]` keys the recipe itself sets (with `method`), as the adapter spec spells them."""
    peft = recipe.peft
    assert peft is not None
    skip = {"adapter", "adapter_revision", "save_merged", "quantize", "method"}
    return {"method": peft.method, **{k: getattr(peft, k) for k in sorted(peft.model_fields_set - skip)}}


def read_adapter(recipe: Recipe, source: SourceMap, project: Path) -> tuple[Recipe, SavedAdapter | None]:
    """Read the adapter `peft.adapter` names, check the recipe against it and fill its unset keys.

    Returns:
        The recipe (its `[peft]` keys that the recipe leaves unset taken from the adapter's
        config, when that config could be read) and the adapter; (recipe, None) without
        `peft.adapter`.

    Raises:
        RecipeError: the directory holds no adapter, its config is unreadable, or the recipe
            disagrees with it (an error at each `[peft]` key that does).
    """
    peft = recipe.peft
    if peft is None or peft.adapter is None:
        return recipe, None
    name = peft.adapter
    where = source.locate(("peft", "adapter"))

    def fail(message: str, help: str | None = None) -> RecipeError:
        return RecipeError([Diagnostic("error", message, where, help)])

    if name.startswith(LOCAL_PREFIXES):
        try:
            given = Path(name).expanduser()
            path = given if given.is_absolute() else project / given
            if not (path / CONFIG).is_file() and (path / "model" / CONFIG).is_file():  # a recipec PEFT run
                path = path / "model"
            found = (path / CONFIG).is_file()
        except RuntimeError:  # ~user for a user that does not exist
            raise fail(f"`peft.adapter` starts with {name.split('/')[0]!r}, a user that does not exist") from None
        except OSError as exc:
            raise fail(f"`peft.adapter` is not a usable path: {exc.strerror or exc}") from None
        if not found:
            what = "does not exist" if not path.exists() else f"holds no {CONFIG}"
            raise fail(
                f"{name!r} {what} (paths are relative to the directory recipec runs in)",
                "name the directory peft's save_pretrained wrote (a recipec PEFT run's model/, or the run directory); a hub id has no leading ./, ../, / or ~",
            )
        weights = [w for w in WEIGHTS if (path / w).is_file()]
        if not weights:
            raise fail(f"{_relative(path, project)} holds {CONFIG} but no adapter weights ({' or '.join(WEIGHTS)})")
        config = _config(path / CONFIG, fail)
        files = {f: file_sha256(path / f) for f in (CONFIG, weights[0])}
        adapter = SavedAdapter(_relative(path, project), True, config, files, any((path / t).is_file() for t in TOKENIZER))
    else:
        cached = _cached(name, peft.adapter_revision)
        adapter = SavedAdapter(name, False, _config(Path(cached), fail) if cached else None, revision=peft.adapter_revision)
    if adapter.config is None:
        return recipe, adapter
    problems = saved_config_problems(recipe_spec(recipe), adapter.config, task_type=task_type(recipe))
    if problems:
        raise RecipeError(
            [
                Diagnostic(
                    "error",
                    f"peft.{key}: {sentence} ({adapter.path}/{CONFIG})" if adapter.local else f"peft.{key}: {sentence} ({adapter.path})",
                    source.locate(("peft", key)) if key in peft.model_fields_set or key == "method" else where,
                    "remove the key to take the adapter's value, or name the adapter this recipe means",
                )
                for key, sentence in problems
            ]
        )
    values = saved_values(peft.method, adapter.config)
    fill = {k: v for k, v in values.items() if k not in peft.model_fields_set and v is not None and k in type(peft).model_fields}
    filled = peft.model_copy(update=fill)
    return recipe.model_copy(update={"peft": filled}), adapter


def _config(path: Path, fail) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read {path.name}: {exc}") from None
    if not isinstance(value, dict):
        raise fail(f"{path.name} holds no JSON object")
    return value


def _cached(repo: str, revision: str | None = None) -> str | None:
    """adapter_config.json of a hub adapter (at this revision: a branch, tag or commit) in the local Hugging Face cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    from .runtime.hub import hub_cache_dir  # HF_HUB_CACHE as it is now (huggingface_hub reads it once, on import)

    try:
        found = try_to_load_from_cache(repo, CONFIG, cache_dir=hub_cache_dir(), revision=revision)
    except Exception:  # a malformed repo id: the script's own download names it
        return None
    return found if isinstance(found, str) else None
