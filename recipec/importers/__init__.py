"""`recipec import`: another tool's training config as a commented recipe.

One module per tool. Each has:

- ``VERSION``: the tool version whose defaults are applied ("axolotl 0.12.2");
- ``KNOWN``: patterns (fnmatch, ``[*]`` for any list index) of every key the tool accepts;
  a key matching none is an error, as the tool would refuse it or drop a typo;
- ``MARKERS``: keys that only this tool's configs have, to tell a config of another tool;
- ``LEGACY`` (optional): keys of the tool's older releases and what the tool does with them
  today (:class:`~recipec.importers.core.Renamed`, :class:`~recipec.importers.core.Removed`);
- ``LEGACY_VALUES`` (optional): values of the tool's older releases for keys that kept their
  names, and how the tool reads each today or that it refuses it
  (:class:`~recipec.importers.core.OldValue`);
- ``convert(draft, options)``: fills the :class:`~recipec.importers.core.Draft`.

:func:`import_config` runs one: read, detect, check the keys, convert, and account for
every key of the file. The compiler side: nothing here imports torch or transformers.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..diagnostics import Diagnostic, Location, RecipeError, sort_diagnostics
from .core import Config, Draft, migrate, read_config, restore_names, unknown_key_error, write_recipe

TOOLS: dict[str, str] = {
    "axolotl": "axolotl",
    "llama-factory": "llama_factory",
    "torchtune": "torchtune",
    "litgpt": "litgpt",
    "llm-foundry": "llm_foundry",
    "ludwig": "ludwig",
    "transformers": "hf_trainer",
}
"""`--from` names and their modules. `transformers` is a `TrainingArguments` saved as JSON
(`training_args.to_json_string()`, or the `args` a Trainer run writes). `ludwig` is a Ludwig
LLM fine-tuning config (`model_type: llm`)."""


@dataclass(frozen=True)
class Options:
    """What the file cannot say but the recipe needs."""

    name: str
    """recipe.name."""
    num_processes: int = 1
    """Processes the source run used (its global batch counts them)."""
    model: str | None = None
    """The model, for configs that do not name one (a `TrainingArguments`)."""
    data: str | None = None
    """The data, for configs that do not name it: a hub dataset id or a local file."""


@dataclass
class Result:
    draft: Draft
    text: str


def tool_module(tool: str) -> ModuleType:
    return importlib.import_module(f".{TOOLS[tool]}", __name__)


def detect(config: Config) -> dict[str, list[str]]:
    """For each tool, the marker keys of the config that only that tool uses."""
    found: dict[str, list[str]] = {}
    leaves = config.leaves()
    top = set(config.data)
    for tool in TOOLS:
        if importlib.util.find_spec(f"{__name__}.{TOOLS[tool]}") is None:
            continue
        markers = getattr(tool_module(tool), "MARKERS", ())
        hits = [m for m in markers if m in top or m in leaves or any(_under(k, m) for k in leaves)]
        if hits:
            found[tool] = hits
    return found


def _under(key: str, marker: str) -> bool:
    if marker.startswith("="):  # a value marker: "=key=value"
        return False
    return key.startswith(marker + ".") or key.startswith(marker + "[")


def recipe_name(path: str | Path) -> str:
    """A valid recipe.name from a file name."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-.") or "imported"
    return name[:64]


def import_config(path: str | Path, tool: str, options: Options | None = None) -> Result:
    """Import one config; raises RecipeError for input that cannot be imported."""
    if tool not in TOOLS:
        raise RecipeError([Diagnostic("error", f"unknown tool `{tool}`; one of {', '.join(TOOLS)}")])
    config = read_config(path)
    options = options or Options(name=recipe_name(path))
    found = detect(config)
    if tool not in found:
        others = {t: keys for t, keys in found.items() if len(keys) >= 2}
        if others:
            best = max(others, key=lambda t: len(others[t]))
            keys = ", ".join(f"`{k}`" for k in others[best][:4])
            raise RecipeError(
                [
                    Diagnostic(
                        "error",
                        f"{config.path} looks like a {best} config ({keys}), not {tool}",
                        Location(config.path, 0, 1, 1, ""),
                        help=f"recipec import {config.path} --from {best}",
                    )
                ]
            )
    module = tool_module(tool)
    draft = Draft(config, tool, module.VERSION, tuple(module.KNOWN))
    legacy = getattr(module, "LEGACY", {})
    errors = migrate(draft, legacy, getattr(module, "LEGACY_VALUES", {}))
    unknown = draft.unknown_keys()
    if unknown:
        errors += unknown_key_error(draft, unknown).diagnostics
        # keys this tool lacks, and another tool's markers outnumber this one's: most likely the wrong --from
        rivals = {t: keys for t, keys in found.items() if t != tool and len(keys) > len(found.get(tool, []))}
        if rivals:
            best = max(rivals, key=lambda t: len(rivals[t]))
            keys = ", ".join(f"`{k}`" for k in rivals[best][:4])
            errors.append(
                Diagnostic(
                    "error",
                    f"{config.path} looks more like a config for {best} ({keys}) than for {tool}",
                    Location(config.path, 0, 1, 1, ""),
                    help=f"recipec import {config.path} --from {best}",
                )
            )
    if errors:
        raise RecipeError(sort_diagnostics(errors))
    draft.set("recipe.name", options.name)
    draft.tables["recipe"]["name"].note = f"from the file name {Path(path).name}"
    module.convert(draft, options)
    for key in draft.pending():
        draft.drop(key, "no-equivalent", "recipec import does not map this key.")
    restore_names(draft, legacy)
    return Result(draft, write_recipe(draft))
