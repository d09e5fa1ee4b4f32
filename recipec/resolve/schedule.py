"""The schedule part of resolve: the peak LR, and `[schedule]` as a list of phases.

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

# transformers' default timescale for an inverse-sqrt decay without warmup
INVERSE_SQRT_TIMESCALE = 10_000


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
