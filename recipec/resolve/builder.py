"""The plan under construction, shared by the steps of `resolve`."""

from __future__ import annotations

from typing import Any

from ..chat_templates import ChatTemplates
from ..diagnostics import Diagnostic, RecipeError
from ..memory import MemoryEstimate
from ..parent import ParentRun
from ..saved_adapter import SavedAdapter
from ..schema import Recipe
from ..source import KeyPath, SourceMap
from .plan import Formula, Launch, Plan, Setting, Settings


class PlanBuilder(Settings):
    """Collects settings, formulas, errors and warnings in script order.

    Each step of `resolve` adds the settings of its concern and reports what is wrong at
    the recipe key. A step reads what an earlier one derived by the setting's name
    (`b["lr"]`, `b.get("max_steps")`), as the script and the templates do.
    """

    def __init__(
        self,
        recipe: Recipe,
        source: SourceMap,
        *,
        build_dir: str,
        model_config: dict[str, Any] | None = None,
        model_config_source: str | None = None,
        parent: ParentRun | None = None,
        chat: ChatTemplates | None = None,
        adapter: SavedAdapter | None = None,
    ) -> None:
        self.recipe = recipe
        self.source = source
        self.build_dir = build_dir
        self.model_config = model_config
        """The pretrained model's config.json, when it is local (or in the hub cache) and known."""
        self.model_config_source = model_config_source
        """Where model_config was read (a file, or a hub id at a commit of the local cache)."""
        self.parent = parent
        """With `[continual]`, the parent run."""
        self.chat = chat or ChatTemplates()
        """The chat templates the read side found (`recipec.chat_templates`)."""
        self.adapter = adapter
        """With `peft.adapter`, the saved adapter (`recipec.saved_adapter`)."""
        self.settings: list[Setting] = []
        self.formulas: list[Formula] = []
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self.launch: Launch | None = None
        self.memory: MemoryEstimate | None = None
        self.memory_unknown: str | None = None
        self._section = ""

    def section(self, name: str) -> None:
        """Start a section of the config block; the settings added next belong to it."""
        self._section = name

    def origin(self, path: KeyPath) -> str:
        return self.source.origin(path) or "default"

    def add(self, name: str, value: Any, note: str, origin: str) -> None:
        self.settings.append(Setting(name, value, note, self._section, origin))

    def key(self, name: str, path: KeyPath) -> None:
        """A setting that is the recipe key's value as it is."""
        value: Any = self.recipe
        for seg in path:
            value = getattr(value, seg)
        self.add(name, value, ".".join(path), self.origin(path))

    def derived(self, name: str, value: Any, note: str) -> None:
        self.add(name, value, note, "derived")

    def formula(self, name: str, expr: str, note: str) -> None:
        """A value the script computes once the data is loaded (see `Formula`)."""
        self.formulas.append(Formula(name, expr, note))

    def error(self, path: KeyPath, message: str, help: str | None = None) -> None:
        self.errors.append(Diagnostic("error", message, self.source.locate(path), help))

    def warn(self, path: KeyPath, message: str, help: str | None = None) -> None:
        self.warnings.append(Diagnostic("warning", message, self.source.locate(path), help))

    def plan(self, *, recipe_file: str, project_dir: str, overrides: tuple[str, ...]) -> Plan:
        """The finished plan.

        Raises:
            RecipeError: with every error found, and the warnings found alongside.
        """
        if self.errors:
            raise RecipeError(self.errors + self.warnings)
        assert self.launch is not None, "the launch step sets it"
        return Plan(
            recipe=self.recipe,
            recipe_file=recipe_file,
            build_dir=self.build_dir,
            project_dir=project_dir,
            overrides=overrides,
            settings=tuple(self.settings),
            formulas=tuple(self.formulas),
            launch=self.launch,
            warnings=tuple(self.warnings),
            memory=self.memory,
            memory_unknown=self.memory_unknown,
            model_config_source=self.model_config_source,
        )
