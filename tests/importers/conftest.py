"""Shared by the importer tests: import a fixture config, write the recipe, validate it."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from recipec.compiler import plan_recipe
from recipec.importers import Options, Result, import_config, recipe_name

CONFIGS = Path(__file__).resolve().parent / "configs"


@dataclass
class Imported:
    result: Result
    recipe: dict[str, Any]
    """The written recipe, parsed."""
    path: Path
    """Where the recipe was written."""

    @property
    def approx(self) -> set[str]:
        return {k for k, e in self.result.draft.ledger.items() if e.how == "approx"}

    @property
    def dropped(self) -> dict[str, str]:
        """Not imported: key -> reason."""
        return {k: e.reason or "" for k, e in self.result.draft.ledger.items() if e.how == "dropped"}

    @property
    def exact(self) -> set[str]:
        return {k for k, e in self.result.draft.ledger.items() if e.how == "exact"}


@pytest.fixture
def imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Imported]:
    """`imported("axolotl", "lora-8b.yaml")`: import tests/importers/configs/axolotl/lora-8b.yaml
    (or any path), write the recipe into tmp_path and validate it there (recipec validate's
    check: the plan resolves with no error). Local data files the recipe names must be
    created in tmp_path first (pass `files=["data/x.jsonl"]` to create empty ones)."""

    def run(
        tool: str,
        config: str | Path,
        *,
        num_processes: int = 1,
        files: tuple[str, ...] | list[str] = (),
        model: str | None = None,
        data: str | None = None,
    ) -> Imported:
        path = Path(config)
        if not path.is_absolute():
            path = CONFIGS / tool / path
        monkeypatch.chdir(tmp_path)
        for f in files:
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / f).write_text('{"text": "x"}\n', encoding="utf-8")
        result = import_config(path, tool, Options(name=recipe_name(path), num_processes=num_processes, model=model, data=data))
        out = tmp_path / f"{path.stem}.toml"
        out.write_text(result.text, encoding="utf-8")
        plan_recipe(out, ())  # raises RecipeError when the recipe does not validate
        return Imported(result, tomllib.loads(result.text), out)

    return run
