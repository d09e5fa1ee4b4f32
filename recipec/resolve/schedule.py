"""Resolve `[schedule]`: the peak LR, and the schedule as a list of phases.

The shorthand (`warmup`, `decay`, ...) and explicit `[[schedule.phases]]` both become a
phase spec: dicts with a shape, start and end multipliers of the peak LR, and a length
as steps, fraction or tokens. `recipec_runtime.schedule.layout` turns lengths into steps;
the compiler calls it when the run's length is known, the generated script when it is
derived from the data (`train.epochs`). One function, both sides, the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

from ..runtime import schedule as runtime_schedule
from ..schema import Recipe
from ..schema.schedule import Phase
from ..source import KeyPath
from .builder import PlanBuilder
from .continual import rewarm

# transformers' default timescale for an inverse-sqrt decay without warmup
INVERSE_SQRT_TIMESCALE = 10_000

WARMUP_SHORT_FRACTION, WARMUP_SHORT_STEPS = 0.01, 100
"""A warmup is short when it is under this fraction of the run and under this many steps
(large runs warm up for a few thousand steps: a small fraction of millions)."""
WARMUP_LONG = 0.5
"""A warmup is long when it is over this fraction of the run."""
WARMUP_CHECKED_FROM = 100
"""Runs shorter than this many steps get no warning about their warmup's length."""


def schedule_settings(b: PlanBuilder) -> None:
    """The phases over the run's steps, or their spec for the script to lay out once the data
    fixes the length (`train.epochs`); and the checks of the floor and the warmup."""
    r = b.recipe
    s = r.schedule
    lr, max_steps = b["lr"], b.get("max_steps")
    b.section("schedule")
    start = rewarm(b, lr) if r.continual is not None and b.parent is not None else None
    spec = phase_spec(r, lr, max_steps, start)
    note = "derived: [[schedule.phases]]" if s.phases is not None else _shorthand_note(r)
    if max_steps is not None:
        phases = _lay_out(b, spec, max_steps, b["tokens_per_step"])
        if phases is not None:
            b.derived("schedule_phases", phases, note + " (see schedule.png)")
            _check_lengths(b, max_steps, warmup_steps_of(phases))
    else:
        b.derived("schedule_spec", spec, note + "; laid out once max_steps is known")
        b.formula(
            "schedule_phases",
            "schedule.layout(schedule_spec, max_steps, tokens_per_step)",
            "derived: phase lengths in steps (recipec_runtime/schedule.py)",
        )
    if s.min_lr is not None and s.min_lr > lr:
        b.error(
            ("schedule", "min_lr"),
            f"schedule.min_lr {s.min_lr} is above the peak LR {lr:g}",
            "the floor must be at most the peak; use min_lr_ratio for a fraction of the peak",
        )
    else:
        _check_floor(b, spec)


def _floor_key(recipe: Recipe) -> KeyPath | None:
    """The key that sets the floor (`min_lr` or `min_lr_ratio`), or None when it is the default."""
    s = recipe.schedule
    if s.min_lr is not None:
        return ("schedule", "min_lr")
    return ("schedule", "min_lr_ratio") if "min_lr_ratio" in s.model_fields_set else None


def _floor_text(recipe: Recipe) -> str:
    s = recipe.schedule
    return f"schedule.min_lr {s.min_lr:g}" if s.min_lr is not None else f"schedule.min_lr_ratio {s.min_lr_ratio:g}"


def _check_floor(b: PlanBuilder, spec: list[dict[str, Any]]) -> None:
    """Warn where the floor contradicts the schedule: never reached, or equal to the peak of a decay."""
    r = b.recipe
    s = r.schedule
    key = _floor_key(r)
    # the phases whose end is the floor: the shorthand's decay, explicit phases that leave `end` out
    if s.phases is None:
        to_floor = [] if s.decay == "constant" else [len(spec) - 1]
    else:
        to_floor = [i for i, p in enumerate(s.phases) if p.end is None and p.shape != "constant"]
    if key is not None and not to_floor:
        why = (
            'decay "constant" holds the LR at its peak'
            if s.phases is None
            else "every phase sets its own `end` or is constant"
        )
        b.warn(
            key,
            f"{_floor_text(r)} is never reached: {why}",
            "remove it, or choose a decaying shape"
            if s.phases is None
            else "remove it, or leave `end` out on the phase that decays to it",
        )
        return
    for i in to_floor:
        p = spec[i]
        if p["start"] != p["end"]:
            continue
        what = f'decay "{s.decay}"' if s.phases is None else f"phase {p['name']!r} ({p['shape']})"
        b.warn(
            key or ("schedule", "phases", i),
            f"{what} goes from {p['start']:g} to the floor {p['end']:g} ({_floor_text(r)}): it stays flat",
            'lower the floor, or say so with decay = "constant"'
            if s.phases is None
            else 'lower the floor or the start, or say so with shape = "constant"',
        )


def ceil_product(fraction: float, steps: int) -> int:
    """ceil(fraction * steps) without float noise: 0.07 * 100 is 7, not 8."""
    return math.ceil(round(fraction * steps, 6))


def peak_lr(recipe: Recipe) -> tuple[float, str | None]:
    """The peak LR and, when it is derived by batch-size scaling, the derivation."""
    scaling = recipe.optim.scaling
    if scaling is None:
        return recipe.optim.lr, None
    batch, b0, lr0 = recipe.train.batch_size, scaling.reference_batch, scaling.reference_lr
    if scaling.rule == "linear":
        return lr0 * batch / b0, f"derived: optim.scaling.reference_lr {lr0} * batch_size {batch} / reference_batch {b0}"
    if scaling.rule == "sqrt":
        return (
            lr0 * math.sqrt(batch / b0),
            f"derived: optim.scaling.reference_lr {lr0} * sqrt(batch_size {batch} / reference_batch {b0})",
        )
    return lr0, f"derived: optim.scaling.reference_lr {lr0} (rule none: not scaled with the batch)"


def floor_ratio(recipe: Recipe, lr: float) -> float:
    """min_lr_ratio, or min_lr as a fraction of the peak."""
    s = recipe.schedule
    # a min_lr above the peak is reported by resolve; the layout goes on with the peak as floor
    return min(1.0, s.min_lr / lr) if s.min_lr is not None else s.min_lr_ratio


def shorthand_warmup_steps(recipe: Recipe, max_steps: int | None) -> int | None:
    """Warmup steps of the shorthand: an integer as is, a fraction rounded up (None if unknown yet)."""
    w = recipe.schedule.warmup
    if isinstance(w, int):
        return w
    return ceil_product(w, max_steps) if max_steps is not None else None


def phase_spec(recipe: Recipe, lr: float, max_steps: int | None, rewarm: float | None = None) -> list[dict[str, Any]]:
    """`[schedule]` as phases whose lengths may still be fractions or tokens.

    Args:
        recipe: the recipe.
        lr: the peak LR.
        max_steps: the run's length, when known at compile time.
        rewarm: with `[continual]`, where the warmup starts (a multiplier of the peak):
            the shorthand warmup's start, or the first phase's start when it sets none.
    """
    s = recipe.schedule
    floor = floor_ratio(recipe, lr)
    if s.phases is not None:
        return _explicit(s.phases, floor, 1.0 if rewarm is None else rewarm)
    phases: list[dict[str, Any]] = []
    warmup_steps = shorthand_warmup_steps(recipe, max_steps)
    if s.warmup:
        length = {"steps": warmup_steps} if warmup_steps is not None else {"fraction": s.warmup}
        start = s.warmup_start_ratio if rewarm is None else rewarm
        phases.append({"name": "warmup", "shape": s.warmup_shape, "start": start, "end": 1.0, **length})
    decay: dict[str, Any] = {"name": "decay", "shape": s.decay, "start": 1.0, "end": floor}
    if s.decay == "constant":
        if phases and warmup_steps == max_steps:
            return phases  # all warmup: there is no constant stretch left to spell out
        decay.update(name="constant", end=1.0)
    elif s.decay == "polynomial":
        decay["power"] = s.power
    elif s.decay == "inverse_sqrt":
        decay["timescale"] = s.timescale or warmup_steps or INVERSE_SQRT_TIMESCALE
    elif s.decay == "cyclic":
        decay.update(name="cyclic", half_cycle=s.half_cycle)
    elif s.decay == "cosine_restarts":
        decay.update(name="restarts", period=s.restart_period, period_mult=s.restart_mult)
    elif s.decay == "wsd":
        phases.append({"name": "stable", "shape": "constant", "start": 1.0, "end": 1.0})
        length = {"steps": s.cooldown} if isinstance(s.cooldown, int) else {"fraction": s.cooldown}
        decay.update(name="cooldown", shape=s.cooldown_shape, **length)
    phases.append(decay)
    return phases


def _explicit(phases: list[Phase], floor: float, first_start: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    previous_end = first_start
    for p in phases:
        start = p.start if p.start is not None else previous_end
        end = p.end if p.end is not None else (start if p.shape == "constant" else floor)
        spec: dict[str, Any] = {"name": p.name, "shape": p.shape, "start": start, "end": end}
        for key in ("steps", "fraction", "tokens", "power", "timescale", "half_cycle", "period", "period_mult"):
            value = getattr(p, key)
            if value is not None:
                spec[key] = value
        out.append(spec)
        previous_end = end
    return out


def error_key(recipe: Recipe, spec: list[dict[str, Any]], error: runtime_schedule.ScheduleError) -> KeyPath:
    """The recipe key a layout error is about."""
    if recipe.schedule.phases is not None:
        if error.phase is None:
            return ("schedule", "phases")
        return ("schedule", "phases", error.phase) + ((error.key,) if error.key else ())
    name = spec[error.phase]["name"] if error.phase is not None else None
    # the stable phase takes what warmup and cooldown leave: when that is nothing, the cooldown is too long
    keys = {"warmup": ("schedule", "warmup"), "cooldown": ("schedule", "cooldown"), "stable": ("schedule", "cooldown")}
    return keys.get(name, ("schedule", "decay"))


def warmup_steps_of(phases: list[dict[str, Any]]) -> int:
    """Steps of the leading phases that raise the LR (the warmup, however it is spelt)."""
    steps = 0
    for p in phases:
        if p["end"] <= p["start"] or p["shape"] in ("cyclic", "cosine_restarts"):
            break
        steps += p["steps"]
    return steps


def describe(phases: list[dict[str, Any]]) -> str:
    """One line for `explain`: `warmup 15 steps (linear 0 -> 1), decay 285 steps (cosine 1 -> 0.1)`."""
    return ", ".join(
        f"{p['name']} {p['steps']} step{'s' if p['steps'] != 1 else ''} ({p['shape']} {p['start']:g} -> {p['end']:g})"
        for p in phases
    )


def _shorthand_note(recipe: Recipe) -> str:
    s = recipe.schedule
    parts = [f"schedule.warmup {s.warmup}", f"decay {s.decay!r}"]
    if s.decay == "wsd":
        parts.append(f"cooldown {s.cooldown} ({s.cooldown_shape})")
    return "derived: " + ", ".join(parts)


def _lay_out(b: PlanBuilder, spec: list[dict[str, Any]], max_steps: int, tokens_per_step: int) -> list[dict[str, Any]] | None:
    """Phase lengths in steps, or None after recording why they do not fit the run."""
    recipe = b.recipe
    s = recipe.schedule
    if s.phases is None:
        warmup = shorthand_warmup_steps(recipe, max_steps) or 0
        if warmup >= max_steps and s.decay != "constant":
            written = b.source.is_set(("schedule", "warmup"))
            b.error(
                ("schedule", "warmup") if written else length_key(recipe),
                f"warmup ({steps_text(warmup)}) is not shorter than the run ({steps_text(max_steps)})",
                "shorten the warmup or lengthen the run; the decay needs at least one step"
                + ("" if written else " (the warmup is the default schedule.warmup = 0.03 of the run)"),
            )
            return None
    try:
        return runtime_schedule.layout(spec, max_steps, tokens_per_step)
    except runtime_schedule.ScheduleError as exc:
        b.error(error_key(recipe, spec, exc), str(exc))
        return None


def _check_lengths(b: PlanBuilder, max_steps: int, warmup_steps: int) -> None:
    """Warn about a warmup that is short or long for the run, and saves or evals that never happen."""
    t = b.recipe.train
    if max_steps >= WARMUP_CHECKED_FROM and warmup_steps:
        share = warmup_steps / max_steps
        short = share < WARMUP_SHORT_FRACTION and warmup_steps < WARMUP_SHORT_STEPS
        if short or share > WARMUP_LONG:
            where = ("schedule", "warmup") if b.recipe.schedule.phases is None else ("schedule", "phases", 0)
            b.warn(
                where,
                f"warmup is {percent(share)} of the run ({warmup_steps} of {steps_text(max_steps)})",
                f"under {WARMUP_SHORT_FRACTION:.0%} of the run and under {WARMUP_SHORT_STEPS} steps, the LR reaches its peak "
                "before AdamW's moment estimates settle"
                if short
                else f"over {WARMUP_LONG:.0%} of the run trains below the peak LR",
            )
    if isinstance(t.save_every, int) and t.save_every > max_steps:
        b.warn(
            ("train", "save_every"),
            f"save_every {t.save_every} is longer than the run ({steps_text(max_steps)}): only the final model is saved",
        )
    if isinstance(t.eval_every, int) and t.eval_every > max_steps:
        when = "before the first step and at the end" if t.eval_at_start else "at the end"
        b.warn(("train", "eval_every"), f"eval_every {t.eval_every} is longer than the run: evaluation runs {when} only")


def percent(share: float) -> str:
    """A share as a percentage: one decimal from 1% up, two significant digits below (0.04%, never 0.0%)."""
    value = 100 * share
    if value >= 1:
        return f"{value:.1f}%"
    digits = 1 - math.floor(math.log10(value))
    return f"{value:.{digits}f}".rstrip("0") + "%"


def steps_text(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def length_key(recipe: Recipe) -> KeyPath:
    """The [train] key that sets the run's length."""
    t = recipe.train
    return ("train", "max_steps" if t.max_steps is not None else "tokens" if t.tokens is not None else "epochs")
