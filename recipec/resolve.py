"""resolve: `Recipe` -> `Plan`, the checks that span tables and every derived number.

A Plan is what the templates render: an ordered list of settings, each a script
variable with its value and a note naming the recipe key or the derivation, plus the
few values that depend on the data and so are computed by the generated script with a
visible formula. resolve is pure: it reads no files and no machine state; whatever it
needs from outside (the pretrained model's config, the path from the build directory back
to the project) is passed in.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .diagnostics import Diagnostic, RecipeError
from .resolve_schedule import error_key, peak_lr, phase_spec, shorthand_warmup_steps, warmup_steps_of
from .runtime import schedule as runtime_schedule
from .schema import Recipe
from .source import KeyPath, SourceMap


PLAIN_PATH = re.compile(r"^[\w./+@:~-]+$")
"""Paths that may be written into a generated docstring and shell line as they are."""


@dataclass(frozen=True)
class Setting:
    """One variable of the generated script's config block."""

    name: str
    value: Any
    note: str
    """Trailing comment: the recipe key, or `derived: <formula with numbers>`."""
    section: str
    origin: str
    """Where the value came from, for `explain`: `file:line`, `--set ...`, `default` or `derived`."""


@dataclass(frozen=True)
class Formula:
    """A value the generated script computes once the data is loaded."""

    name: str
    expr: str
    """Python expression over config variables; built here from names and literals only."""
    note: str


@dataclass(frozen=True)
class Plan:
    """Everything render needs, resolved and checked."""

    recipe: Recipe
    recipe_file: str
    build_dir: str
    project_dir: str
    """The project directory as seen from the build directory (relative where possible)."""
    overrides: tuple[str, ...]
    settings: tuple[Setting, ...]
    formulas: tuple[Formula, ...]
    warnings: tuple[Diagnostic, ...] = field(default=())
    version: str = __version__

    def __getitem__(self, name: str) -> Any:
        for s in self.settings:
            if s.name == name:
                return s.value
        raise KeyError(name)

    @property
    def name(self) -> str:
        return self.recipe.recipe.name

    @property
    def launch_command(self) -> str:
        """The exact command that starts training, from the project directory."""
        build = self.build_dir.rstrip("/")
        return f"accelerate launch --config_file {build}/accelerate_config.yaml {build}/train.py"


def default_build_dir(recipe: Recipe) -> str:
    """build/<recipe.name>, relative to the project directory."""
    return f"build/{recipe.recipe.name}"


def resolve(
    recipe: Recipe,
    source: SourceMap,
    *,
    recipe_file: str,
    build_dir: str | None = None,
    project_dir: str = "../..",
    overrides: tuple[str, ...] = (),
    model_config: dict[str, Any] | None = None,
) -> Plan:
    """Check the recipe as a whole and derive every number the script needs.

    Args:
        recipe: the validated recipe.
        source: its source map, so errors and origins point at lines.
        recipe_file: the recipe path as the user gave it (recorded in the build).
        build_dir: where the build goes, relative to the project directory.
        project_dir: the project directory seen from the build directory.
        overrides: the `--set` arguments, recorded in the build.
        model_config: the pretrained model's config.json, when it is local and known.

    Raises:
        RecipeError: with every cross-table error found.
    """
    b = _Builder(recipe, source)
    r = recipe
    build_dir = build_dir or default_build_dir(recipe)
    if not PLAIN_PATH.match(build_dir):
        b.errors.append(
            Diagnostic(
                "error",
                f"build directory {build_dir!r} has characters that cannot go into the generated launch command",
                None,
                "choose a build directory (-o) of letters, digits and ./_-+@:~",
            )
        )
    t, d, s, launch = r.train, r.data, r.schedule, r.launch

    b.section("run")
    b.key("name", ("recipe", "name"))
    b.key("description", ("recipe", "description"))
    b.key("seed", ("recipe", "seed"))
    if r.output.dir is not None:
        b.key("output_dir", ("output", "dir"))
    else:
        b.derived("output_dir", f"runs/{r.recipe.name}", "derived: runs/<recipe.name>")

    b.section("model")
    if r.model.path is None and r.model.init is None:
        b.error(
            ("model",),
            "[model] needs exactly one of `path` and `init`, got neither",
            'load a model with path = "org/name" or "./dir", or start from scratch with init = "llama"',
        )
    b.key("model_init", ("model", "init"))
    b.key("model_path", ("model", "path"))
    b.key("model_revision", ("model", "revision"))
    if r.model.init is not None:
        config = r.model.config.model_dump(exclude_none=True)
        b.add("model_config", config, "model.config", b.origin(("model", "config")))
        max_positions = r.model.config.max_position_embeddings
        positions_key: KeyPath = ("model", "config", "max_position_embeddings")
    else:
        mc = model_config or {}
        max_positions = mc.get("max_position_embeddings", mc.get("n_positions"))
        positions_key = ("model", "path")
    b.key("model_dtype", ("model", "dtype"))
    b.key("gradient_checkpointing", ("model", "gradient_checkpointing"))
    b.key("trust_remote_code", ("model", "trust_remote_code"))

    b.section("tokenizer")
    if r.tokenizer.train is not None:
        b.add("tokenizer_path", None, "tokenizer.train: trained before the run", "derived")
        b.add("tokenizer_train", r.tokenizer.train.model_dump(), "tokenizer.train", b.origin(("tokenizer", "train")))
    elif r.tokenizer.path is not None:
        b.key("tokenizer_path", ("tokenizer", "path"))
        b.add("tokenizer_train", None, "tokenizer.train (unset)", "default")
    elif r.model.path is not None:
        b.derived("tokenizer_path", r.model.path, "derived: the model's own tokenizer (model.path)")
        b.add("tokenizer_train", None, "tokenizer.train (unset)", "default")
    elif r.model.init is not None:
        b.error(
            ("model", "init"),
            "a from-scratch model (`model.init`) has no tokenizer of its own",
            'add [tokenizer] with train = {kind = "bpe", vocab_size = 8192}, or a tokenizer path',
        )

    b.section("data")
    sources = [src.model_dump(exclude_none=True, exclude={"text_field"} if src.builtin else None) for src in d.sources]
    b.add("sources", sources, "data.sources", b.origin(("data", "sources")))
    b.key("seq_len", ("data", "seq_len"))
    b.key("packing", ("data", "packing"))
    b.key("eval_fraction", ("data", "eval_fraction"))
    b.key("num_workers", ("data", "num_workers"))
    if max_positions is not None and d.seq_len > max_positions:
        b.error(
            ("data", "seq_len"),
            f"data.seq_len {d.seq_len} is longer than the model's {max_positions} positions",
            f"lower data.seq_len to at most {max_positions}"
            + (", or raise model.config.max_position_embeddings" if positions_key[-1] != "path" else ""),
        )

    b.section("optim")
    lr, lr_note = peak_lr(r)
    if lr_note is None:
        b.key("lr", ("optim", "lr"))
    else:
        b.derived("lr", lr, lr_note)
        if lr > 1:
            b.error(("optim", "scaling"), f"batch-size scaling gives a peak LR of {lr:g}, above 1", "check the reference")
    for k in ("betas", "eps", "weight_decay", "grad_clip"):
        b.key(k, ("optim", k))

    b.section("train")
    b.key("micro_batch_size", ("train", "micro_batch_size"))
    b.key("batch_size", ("train", "batch_size"))
    per_step = t.micro_batch_size * launch.num_processes
    if t.batch_size % per_step:
        lower = max(per_step, t.batch_size // per_step * per_step)
        b.error(
            ("train", "batch_size"),
            f"train.batch_size {t.batch_size} is not a multiple of micro_batch_size {t.micro_batch_size} "
            f"* launch.num_processes {launch.num_processes} = {per_step}",
            f"use batch_size = {lower} or {lower + per_step}, or change micro_batch_size",
        )
    grad_accum = max(1, t.batch_size // per_step)
    b.derived(
        "grad_accum_steps",
        grad_accum,
        f"derived: batch_size {t.batch_size} / (micro_batch_size {t.micro_batch_size} * num_processes {launch.num_processes})",
    )
    tokens_per_step = t.batch_size * d.seq_len
    b.derived("tokens_per_step", tokens_per_step, f"derived: batch_size {t.batch_size} * seq_len {d.seq_len}")

    formulas: list[Formula] = []
    max_steps: int | None
    if t.max_steps is not None:
        max_steps = t.max_steps
        b.key("max_steps", ("train", "max_steps"))
    elif t.tokens is not None:
        max_steps = math.ceil(t.tokens / tokens_per_step)
        b.derived("max_steps", max_steps, f"derived: ceil(train.tokens {t.tokens} / tokens_per_step {tokens_per_step})")
    else:
        max_steps = None
        b.key("epochs", ("train", "epochs"))
        formulas.append(
            Formula("steps_per_epoch", "len(train_ds) // batch_size", "derived: training sequences // batch_size")
        )
        formulas.append(
            Formula("max_steps", "math.ceil(epochs * steps_per_epoch)", "derived: ceil(train.epochs * steps_per_epoch)")
        )
    for k in ("log_every", "eval_every", "eval_batches", "save_every", "keep_last"):
        b.key(k, ("train", k))

    b.section("schedule")
    spec = phase_spec(r, lr, max_steps)
    schedule_note = "derived: [[schedule.phases]]" if s.phases is not None else _shorthand_note(r)
    phases = None
    if max_steps is not None:
        phases = _lay_out(b, r, spec, max_steps, tokens_per_step)
        if phases is not None:
            b.derived("schedule_phases", phases, schedule_note + " (see schedule.png)")
            _check_lengths(b, recipe, max_steps, warmup_steps_of(phases))
    else:
        b.derived("schedule_spec", spec, schedule_note + "; laid out once max_steps is known")
        formulas.append(
            Formula(
                "schedule_phases",
                "schedule.layout(schedule_spec, max_steps, tokens_per_step)",
                "derived: phase lengths in steps (recipec_runtime/schedule.py)",
            )
        )
    if s.min_lr is not None and s.min_lr > lr:
        b.error(
            ("schedule", "min_lr"),
            f"schedule.min_lr {s.min_lr} is above the peak LR {lr:g}",
            "the floor must be at most the peak; use min_lr_ratio for a fraction of the peak",
        )

    b.section("launch")
    for k in ("num_processes", "mixed_precision", "cpu", "hub_offline"):
        b.key(k, ("launch", k))

    if r.data.eval_fraction == 0 and t.eval_every > 0:
        b.warn(("train", "eval_every"), "data.eval_fraction is 0: there is no held-out split, so no evaluation runs")
    if r.model.trust_remote_code:
        b.warn(("model", "trust_remote_code"), "trust_remote_code runs Python code that comes with the model")

    if b.errors:
        raise RecipeError(b.errors + b.warnings)
    return Plan(
        recipe=recipe,
        recipe_file=recipe_file,
        build_dir=build_dir,
        project_dir=project_dir,
        overrides=tuple(overrides),
        settings=tuple(b.settings),
        formulas=tuple(formulas),
        warnings=tuple(b.warnings),
    )


def _shorthand_note(recipe: Recipe) -> str:
    s = recipe.schedule
    parts = [f"schedule.warmup {s.warmup}", f"decay {s.decay!r}"]
    if s.decay == "wsd":
        parts.append(f"cooldown {s.cooldown} ({s.cooldown_shape})")
    return "derived: " + ", ".join(parts)


def _lay_out(
    b: _Builder, recipe: Recipe, spec: list[dict[str, Any]], max_steps: int, tokens_per_step: int
) -> list[dict[str, Any]] | None:
    """Phase lengths in steps, or None after recording why they do not fit the run."""
    s = recipe.schedule
    if s.phases is None:
        warmup = shorthand_warmup_steps(recipe, max_steps) or 0
        if warmup >= max_steps and s.decay != "constant":
            written = b.source.is_set(("schedule", "warmup"))
            b.error(
                ("schedule", "warmup") if written else _length_key(recipe),
                f"warmup ({_steps(warmup)}) is not shorter than the run ({_steps(max_steps)})",
                "shorten the warmup or lengthen the run; the decay needs at least one step"
                + ("" if written else " (the warmup is the default schedule.warmup = 0.03 of the run)"),
            )
            return None
    try:
        return runtime_schedule.layout(spec, max_steps, tokens_per_step)
    except runtime_schedule.ScheduleError as exc:
        b.error(error_key(recipe, spec, exc), str(exc))
        return None


def _check_lengths(b: _Builder, recipe: Recipe, max_steps: int, warmup_steps: int) -> None:
    t = recipe.train
    if max_steps >= 100 and warmup_steps and not 0.01 <= warmup_steps / max_steps <= 0.5:
        share = 100 * warmup_steps / max_steps
        where = ("schedule", "warmup") if recipe.schedule.phases is None else ("schedule", "phases", 0)
        b.warn(where, f"warmup is {share:.1f}% of the run ({warmup_steps} of {_steps(max_steps)})")
    if t.save_every > max_steps:
        b.warn(
            ("train", "save_every"),
            f"save_every {t.save_every} is longer than the run ({_steps(max_steps)}): only the final model is saved",
        )
    if t.eval_every > max_steps:
        b.warn(("train", "eval_every"), f"eval_every {t.eval_every} is longer than the run: evaluation runs at the end only")


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def _length_key(recipe: Recipe) -> KeyPath:
    """The [train] key that sets the run's length."""
    t = recipe.train
    return ("train", "max_steps" if t.max_steps is not None else "tokens" if t.tokens is not None else "epochs")


class _Builder:
    """Collects settings, errors and warnings in script order."""

    def __init__(self, recipe: Recipe, source: SourceMap) -> None:
        self.recipe = recipe
        self.source = source
        self.settings: list[Setting] = []
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self._section = ""

    def section(self, name: str) -> None:
        self._section = name

    def origin(self, path: KeyPath) -> str:
        return self.source.origin(path) or "default"

    def add(self, name: str, value: Any, note: str, origin: str) -> None:
        self.settings.append(Setting(name, value, note, self._section, origin))

    def key(self, name: str, path: KeyPath) -> None:
        value: Any = self.recipe
        for seg in path:
            value = getattr(value, seg)
        self.add(name, value, ".".join(path), self.origin(path))

    def derived(self, name: str, value: Any, note: str) -> None:
        self.add(name, value, note, "derived")

    def error(self, path: KeyPath, message: str, help: str | None = None) -> None:
        self.errors.append(Diagnostic("error", message, self.source.locate(path), help))

    def warn(self, path: KeyPath, message: str, help: str | None = None) -> None:
        self.warnings.append(Diagnostic("warning", message, self.source.locate(path), help))
