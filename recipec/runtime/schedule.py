"""Learning-rate schedules as plain multipliers of the peak learning rate.

Convention: step 0 is the first optimizer update, and the LR the optimizer uses
at update ``s`` is ``peak * multiplier(s)``. This is what transformers'
``get_*_schedule*`` helpers give when driven by ``torch.optim.lr_scheduler.LambdaLR``
and stepped after each optimizer step (the generated train.py does exactly
that with :func:`phase_lambda`).

The module stays stdlib-only: the compiler imports it (to lay out, validate and
plot a schedule) and must never import torch; the build copies it as
``recipec_runtime/schedule.py`` for the generated script.

Phases
------
A schedule is a list of phases, each a plain dict (see :func:`layout`)::

    {"name": "warmup", "shape": "linear", "start": 0.0, "end": 1.0, "steps": 100}

:func:`layout` turns lengths (``steps``, ``fraction`` of the run, ``tokens``, or
none: the rest of the run) into ``steps`` and ``first_step`` and validates the
phases. With ``k = step - first_step`` and ``p = k / steps`` (0 <= p < 1), each
shape gives a multiplier of the peak (``start`` and ``end`` are in [0, 1]):

=================  ==========================================================
constant           start
linear             start + (end - start) * p
cosine             end + (start - end) * 0.5 * (1 + cos(pi * p))
exponential        start * (end / start) ** p          (start, end > 0)
1-sqrt             start + (end - start) * sqrt(p)     (WSD's cooldown)
polynomial         end + (start - end) * (1 - p) ** power      (power: 1.0)
inverse_sqrt       max(end, start * sqrt(timescale / (timescale + k)))
                   (timescale: 1)
cyclic             triangular, from low = end up to high = start in
                   ``half_cycle`` steps and back: torch's CyclicLR
                   (mode="triangular", step_size_up=half_cycle)
cosine_restarts    end + (start - end) * 0.5 * (1 + cos(pi * T_cur / T_i)),
                   SGDR as torch's CosineAnnealingWarmRestarts(T_0=period,
                   T_mult=period_mult (1), eta_min=end * peak)
=================  ==========================================================

From the end of the last phase on, the multiplier stays at that phase's value
at its end: ``end`` for the decays (linear, cosine, exponential, 1-sqrt,
polynomial), ``start`` for constant, and for the others the formula at
``k = steps``, where a cosine_restarts cycle that ends exactly there counts as
finished (``end``, not a restart).

How the references map (each is checked step by step in
tests/runtime/test_schedule_reference.py; ``m`` is a minimum ratio, ``W`` the
warmup steps, ``T`` the training steps):

* transformers' linear, cosine (``num_cycles=0.5``), cosine with ``min_lr_rate``,
  polynomial (``lr_end = end * peak``) and constant schedules with warmup:
  [linear 0 -> 1, W steps] + [the decay, T - W steps]. They agree at every
  update 0..T-1 and at T. After T transformers' cosine rises again; ours stays
  at ``end``. With W = T (no decay phase) transformers' linear drops to 0
  after the run; ours stays at 1.
* transformers' ``get_inverse_sqrt_schedule(W, timescale)`` is
  [linear 0 -> 1, W steps] + [inverse_sqrt 1 -> 0, ``timescale``]; its default
  timescale is W (10_000 without warmup), which gives the classic
  ``sqrt(W / step)``. Our default timescale is 1: set it. Transformers keeps
  decaying after the run; ours holds the value at the last step's end.
* transformers' ``get_wsd_schedule``: its warmup starts at ``min_lr_ratio``, not
  0. Its "linear" and "cosine" warmups are our linear and cosine from m to 1;
  its "1-sqrt" warmup is ``1 - sqrt(1 - p)``, which is our *polynomial* with
  power 0.5 from m to 1 (our 1-sqrt shape from m to 1 would be
  ``m + (1 - m) * sqrt(p)``, a different curve). Its decays are our linear,
  cosine and 1-sqrt from 1 to m. Only ``num_cycles=0.5`` maps.
* transformers' ``get_cosine_with_hard_restarts_schedule_with_warmup`` with
  ``num_cycles = c`` is [linear 0 -> 1, W] + [cosine_restarts 1 -> 0,
  period = (T - W) / c, period_mult 1] when c divides T - W. At some restart
  steps its float arithmetic (``(c * k / (T - W)) % 1.0`` giving 0.999...)
  puts the LR at about 0 instead of restarting at the peak; ours counts the
  cycle in integers and restarts exactly at ``first_step + j * period``.
* ``get_cosine_with_min_lr_schedule_with_warmup_lr_rate`` runs one step ahead
  (its warmup is ``(s + 1) / W`` and its decay progress ``(k + 1) / (T - W)``):
  it equals [linear 1/W (or ``warmup_lr_rate``) -> 1, W - 1 steps] + [cosine
  1 -> m, T - W steps] laid out over T - 1 steps, whose value after the end
  (m) is its LR at update T - 1.
* torch's ``CyclicLR`` and ``CosineAnnealingWarmRestarts`` go on cycling
  forever; ours holds after the end. CyclicLR computes the triangle from
  ``1 + k / (2 * half_cycle) - cycle`` in floats; ours from ``k % (2 *
  half_cycle)`` in integers (same values to a few ulps).

"""

from __future__ import annotations

import bisect
import functools
import math
from typing import Any, Callable

# ---------------------------------------------------------------------------
# Phase-based schedules


SHAPES = (
    "constant",
    "linear",
    "cosine",
    "exponential",
    "1-sqrt",
    "polynomial",
    "inverse_sqrt",
    "cyclic",
    "cosine_restarts",
)
"""Every shape a phase may have."""

SHAPE_PARAMS = {
    "polynomial": ("power",),
    "inverse_sqrt": ("timescale",),
    "cyclic": ("half_cycle",),
    "cosine_restarts": ("period", "period_mult"),
}
"""The shape parameters each shape takes; a phase may carry only its own shape's."""

REQUIRED_PARAMS = {"cyclic": ("half_cycle",), "cosine_restarts": ("period",)}
"""Shape parameters without a default."""

PARAM_DEFAULTS = {"power": 1.0, "timescale": 1, "period_mult": 1}
"""Defaults :func:`layout` fills in for the optional shape parameters."""

LENGTH_KEYS = ("steps", "fraction", "tokens")
"""The ways to give a phase's length; at most one per phase."""

_COMMON_KEYS = ("name", "shape", "start", "end")
_NOT_LAID_OUT = "Phases must be laid out first: pass them through layout(), which adds first_step and steps."
_DECAYS_TO_END = ("linear", "cosine", "exponential", "1-sqrt", "polynomial")


class ScheduleError(ValueError):
    """A schedule that cannot be laid out.

    Attributes:
        phase: 0-based index of the phase at fault in the list given to
            :func:`layout`, or None when the fault is not one phase's (the
            lengths do not add up, a bad ``max_steps``...).
        key: The phase key at fault (``"steps"``, ``"end"``, ``"shape"``,
            ``"half_cycle"``...), or None.

    The message is a full sentence that names the phase by its ``name`` (or,
    without one, as "phase 2 of 3", counting from 1).
    """

    def __init__(self, message: str, phase: int | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.phase = phase
        self.key = key

    def __reduce__(self):  # keep phase and key through pickling (e.g. multiprocessing)
        return (type(self), (str(self), self.phase, self.key))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _label(phases: list, i: int) -> str:
    """How messages name phase i: 'phase "warmup"', or 'phase 2 of 3' without a name."""
    raw = phases[i]
    name = raw.get("name") if isinstance(raw, dict) else None
    if isinstance(name, str) and name:
        return f'phase "{name}"'
    return f"phase {i + 1} of {len(phases)}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _round_half_away(x: float) -> int:
    """Round to the nearest integer, halves away from zero, after rounding x to 6 decimals."""
    x = round(x, 6)  # 0.07 * 100 = 7.000000000000001 is 7
    n = math.floor(abs(x) + 0.5)
    return int(n) if x >= 0 else -int(n)


def _ceil_div(tokens: int | float, tokens_per_step: int) -> int:
    if isinstance(tokens, float) and tokens.is_integer():
        tokens = int(tokens)
    if isinstance(tokens, int):
        return -(-tokens // tokens_per_step)
    return math.ceil(tokens / tokens_per_step)


def _check_phase(phases: list, i: int) -> dict:
    """Validate phase i's shape, start, end and shape parameters; return them in a new dict."""
    raw = {k: v for k, v in phases[i].items() if v is not None}
    who = _label(phases, i)
    Who = _sentence(who)

    shape = raw.get("shape")
    if shape is None:
        raise ScheduleError(f"{Who} has no shape; give one of {', '.join(SHAPES)}.", i, "shape")
    if shape not in SHAPES:
        raise ScheduleError(f"{Who} has an unknown shape {shape!r}; expected one of {', '.join(SHAPES)}.", i, "shape")

    takes = SHAPE_PARAMS.get(shape, ())
    for key in raw:
        if key in _COMMON_KEYS or key in LENGTH_KEYS or key == "first_step" or key in takes:
            continue
        owners = [s for s, params in SHAPE_PARAMS.items() if key in params]
        if owners:
            raise ScheduleError(
                f"{Who} is a {shape} phase, which does not take {key!r} "
                f"(a parameter of {' and '.join(owners)} phases); remove it.",
                i,
                key,
            )
        allowed = list(_COMMON_KEYS) + list(LENGTH_KEYS) + list(takes)
        raise ScheduleError(f"{Who} has an unknown key {key!r}; a {shape} phase takes {', '.join(allowed)}.", i, key)
    for key in REQUIRED_PARAMS.get(shape, ()):
        if key not in raw:
            what = {
                "half_cycle": "the number of steps from the low point (end) to the high point (start)",
                "period": "the length of the first cosine cycle in steps (SGDR's T_0)",
            }[key]
            raise ScheduleError(f"{Who} is a {shape} phase and needs {key!r}, {what}.", i, key)

    out: dict = {}
    if "name" in raw:
        out["name"] = raw["name"]
    out["shape"] = shape
    for key in ("start", "end"):
        if key == "end" and shape == "constant" and "end" not in raw:
            out["end"] = out["start"]
            continue
        if key not in raw:
            raise ScheduleError(
                f"{Who} has no {key!r} multiplier; give it as a fraction of the peak LR, from 0 to 1.", i, key
            )
        value = raw[key]
        if not _is_number(value):
            raise ScheduleError(
                f"{Who} has {key} = {value!r}; it must be a number from 0 to 1 (a fraction of the peak LR).", i, key
            )
        if value < 0:
            raise ScheduleError(
                f"{Who} has {key} = {value!r}, below 0; a multiplier of the peak LR is from 0 to 1.", i, key
            )
        if value > 1:
            what = "a minimum above the peak" if key == "end" else "a value above the peak"
            raise ScheduleError(
                f"{Who} has {key} = {value!r}, {what}: start and end are multipliers of the peak LR and must be at "
                f"most 1. Raise the peak LR instead.",
                i,
                key,
            )
        out[key] = float(value)
    if shape == "constant" and out["end"] != out["start"]:
        raise ScheduleError(
            f"{Who} is constant at start = {out['start']!r} but has end = {out['end']!r}; a constant phase "
            f"stays at its start. Leave end out (or equal to start), or use a decaying shape.",
            i,
            "end",
        )
    if shape == "exponential":
        for key in ("start", "end"):
            if out[key] == 0:
                raise ScheduleError(
                    f"{Who} is exponential and cannot {key} at 0 (the ratio end / start must be finite and positive); "
                    f"use a small positive value such as 0.01.",
                    i,
                    key,
                )
    if shape == "inverse_sqrt" and out["end"] > out["start"]:
        raise ScheduleError(
            f"{Who} is an inverse_sqrt decay from start = {out['start']!r} with a floor end = {out['end']!r} above it; "
            f"the floor must not exceed the start.",
            i,
            "end",
        )

    for key in takes:
        value = raw.get(key, PARAM_DEFAULTS.get(key))
        if key in ("power", "timescale"):
            if not _is_number(value) or value <= 0:
                raise ScheduleError(f"{Who} has {key} = {value!r}; it must be a positive number.", i, key)
        elif key == "period_mult":
            if not _is_int(value) or value < 1:
                raise ScheduleError(f"{Who} has period_mult = {value!r}; it must be a whole number, 1 or more.", i, key)
        elif not _is_int(value) or value < 1:  # half_cycle, period
            raise ScheduleError(f"{Who} has {key} = {value!r}; it must be a whole number of steps, 1 or more.", i, key)
        out[key] = value
    return out


def _length(phases: list, i: int, max_steps: int, tokens_per_step: int) -> int | None:
    """Phase i's length in steps, or None when it gives none (it takes the rest)."""
    raw = {k: v for k, v in phases[i].items() if v is not None}
    Who = _sentence(_label(phases, i))
    given = [k for k in LENGTH_KEYS if k in raw]
    if len(given) > 1:
        raise ScheduleError(
            f"{Who} gives its length more than once ({' and '.join(given)}); give one of steps, fraction and tokens, "
            f"or none so that it takes the rest of the run.",
            i,
            given[1],
        )
    if not given:
        return None
    key = given[0]
    value = raw[key]
    if key == "steps":
        if not _is_int(value):
            raise ScheduleError(f"{Who} has steps = {value!r}; it must be a whole number of optimizer steps.", i, key)
        n, how = value, f"steps = {value}"
    elif key == "fraction":
        if not _is_number(value):
            raise ScheduleError(
                f"{Who} has fraction = {value!r}; it must be a number from 0 to 1 (of max_steps).", i, key
            )
        if value > 1:
            raise ScheduleError(
                f"{Who} has fraction = {value!r}, more than the whole run; a fraction is of max_steps and at most 1.",
                i,
                key,
            )
        n = _round_half_away(value * max_steps)
        how = f"fraction = {value!r} of max_steps = {max_steps} rounds to {n} steps"
    else:
        if not _is_number(value):
            raise ScheduleError(f"{Who} has tokens = {value!r}; it must be a number of training tokens.", i, key)
        n = _ceil_div(value, tokens_per_step)
        how = f"tokens = {value!r} at {tokens_per_step} tokens per step is {n} steps"
    if n == 0:
        raise ScheduleError(
            f"{Who} is a zero-length phase ({how}); remove it or make it at least one step long.", i, key
        )
    if n < 0:
        raise ScheduleError(f"{Who} has a negative length ({how}); a phase is at least one step long.", i, key)
    return n


def layout(phases: list[dict], max_steps: int, tokens_per_step: int = 1) -> list[dict]:
    """Turn phase lengths into steps and validate the schedule.

    Args:
        phases: The phases, in order: dicts with ``shape``, ``start``, ``end``
            (optional for a constant phase), an optional ``name``, the shape's
            parameters (:data:`SHAPE_PARAMS`) and at most one length:
            ``steps``; ``fraction`` of ``max_steps`` (rounded half away from
            zero after rounding the product to 6 decimals, so 0.07 * 100 is 7);
            or ``tokens`` (``ceil(tokens / tokens_per_step)``). One phase may
            give no length and take what is left of the run. Keys set to None
            count as absent; a ``first_step`` key is ignored, so laying out an
            already laid-out schedule again gives the same result.
        max_steps: Optimizer steps in the run, at least 1.
        tokens_per_step: Training tokens per optimizer step (for ``tokens``).

    Returns:
        New dicts, one per phase, with ``name`` (if given), ``shape``,
        ``start`` and ``end`` (floats), the shape's parameters (defaults
        filled in: :data:`PARAM_DEFAULTS`), an int ``steps`` and an int
        ``first_step``. The steps add up to ``max_steps``.

    Raises:
        ScheduleError: If the schedule cannot be laid out: a phase without a
            shape or with an unknown one; a key the shape does not take; a
            missing required parameter (cyclic's ``half_cycle``,
            cosine_restarts' ``period``); ``start``/``end`` missing or outside
            [0, 1]; an exponential phase starting or ending at 0; a constant
            phase whose ``end`` differs from its ``start``; an inverse_sqrt
            floor above its start; a length given twice, zero or negative; two
            phases without a length; a rest phase left with less than one
            step; lengths that do not add up to ``max_steps``.
    """
    if not _is_int(max_steps) or max_steps < 1:
        raise ScheduleError(
            f"The run's max_steps must be a whole number of optimizer steps, 1 or more; got {max_steps!r}."
        )
    if not _is_int(tokens_per_step) or tokens_per_step < 1:
        raise ScheduleError(
            f"The tokens per optimizer step must be a whole number, 1 or more; got {tokens_per_step!r}."
        )
    if not isinstance(phases, (list, tuple)) or not phases:
        raise ScheduleError("A schedule needs at least one phase.")
    for i, raw in enumerate(phases):
        if not isinstance(raw, dict):
            raise ScheduleError(
                f"Phase {i + 1} of {len(phases)} must be a table of keys (a dict), not {type(raw).__name__}.", i
            )

    out: list[dict] = []
    lengths: list[int | None] = []
    rest: int | None = None
    for i in range(len(phases)):
        out.append(_check_phase(phases, i))
        n = _length(phases, i, max_steps, tokens_per_step)
        if n is None:
            if rest is not None:
                raise ScheduleError(
                    f"{_sentence(_label(phases, rest))} and {_label(phases, i)} both leave out their length, but only "
                    f"one phase may take the rest of the run; give the other a length (steps, fraction or tokens).",
                    i,
                )
            rest = i
        lengths.append(n)

    given = sum(n for n in lengths if n is not None)
    if rest is not None:
        left = max_steps - given
        if left < 1:
            raise ScheduleError(
                f"{_sentence(_label(phases, rest))} takes the rest of the run, but the other phases already take "
                f"{given} of the {max_steps} steps (max_steps), leaving {left}; shorten them or lengthen the run.",
                rest,
            )
        lengths[rest] = left
    elif given != max_steps:
        raise ScheduleError(
            f"The phase lengths add up to {given} steps, but the run has max_steps = {max_steps}. Leave one phase's "
            f"length out (no steps, fraction or tokens) so that it takes the rest of the run, or make them add up."
        )

    first = 0
    for phase, n in zip(out, lengths):
        phase["steps"] = n
        phase["first_step"] = first
        first += n
    return out


def _sgdr(k: int, period: int, period_mult: int) -> tuple[int, int]:
    """(T_cur, T_i) of SGDR k steps in, in integers (torch's step-by-step recurrence)."""
    if period_mult == 1:
        return k % period, period
    length = period
    while k >= length:
        k -= length
        length *= period_mult
    return k, length


def _phase_fn(phase: dict) -> Callable[[int], float]:
    """The multiplier k steps into a laid-out phase, for 0 <= k <= steps.

    Each shape is written as a convex combination ``start * w + end * (1 - w)``
    (with ``1 - w`` computed directly where that avoids cancellation), so the
    first step gives ``start`` exactly (cyclic: ``end``); the result is clamped
    to [min(start, end), max(start, end)] so rounding never leaves that range.
    """
    shape = phase["shape"]
    s = float(phase["start"])
    e = float(phase.get("end", s))
    n = phase["steps"]
    lo, hi = min(s, e), max(s, e)

    if shape == "constant":
        return lambda k: s
    if shape == "linear":
        def f(k):
            return s * ((n - k) / n) + e * (k / n)
    elif shape == "cosine":
        def f(k):
            c = math.cos(math.pi * (k / n))
            return s * (0.5 * (1.0 + c)) + e * (0.5 * (1.0 - c))
    elif shape == "exponential":
        ratio = e / s

        def f(k):
            return s * ratio ** (k / n)
    elif shape == "1-sqrt":
        def f(k):
            r = math.sqrt(k / n)
            return s * (1.0 - r) + e * r
    elif shape == "polynomial":
        power = phase.get("power", PARAM_DEFAULTS["power"])

        def f(k):
            w = ((n - k) / n) ** power
            return s * w + e * (1.0 - w)
    elif shape == "inverse_sqrt":
        tau = phase.get("timescale", PARAM_DEFAULTS["timescale"])

        def f(k):
            # start * sqrt(tau / (tau + k)), written as transformers does
            return max(e, s / math.sqrt((k + tau) / tau))
    elif shape == "cyclic":
        h = phase["half_cycle"]

        def f(k):
            # 1 - |k/h - 2*cycle + 1| with cycle = floor(1 + k / 2h), in integers
            w = (h - abs(k % (2 * h) - h)) / h
            return s * w + e * (1.0 - w)
    elif shape == "cosine_restarts":
        period = phase["period"]
        mult = phase.get("period_mult", PARAM_DEFAULTS["period_mult"])

        def f(k):
            t_cur, t_i = _sgdr(k, period, mult)
            c = math.cos(math.pi * t_cur / t_i)
            return s * (0.5 * (1.0 + c)) + e * (0.5 * (1.0 - c))
    else:
        raise ScheduleError(f"Unknown shape {shape!r}; expected one of {', '.join(SHAPES)}.", None, "shape")

    return lambda k: min(hi, max(lo, f(k)))


def _end_value(phase: dict) -> float:
    """The multiplier after a phase that is the last: its value at its end."""
    shape = phase["shape"]
    if shape == "constant":
        return float(phase["start"])
    if shape in _DECAYS_TO_END:
        return float(phase["end"])
    n = phase["steps"]
    if shape == "cosine_restarts":
        t_cur, _ = _sgdr(n, phase["period"], phase.get("period_mult", PARAM_DEFAULTS["period_mult"]))
        if t_cur == 0:  # the run ends with a finished cycle: its bottom, not a restart
            return float(phase["end"])
    return _phase_fn(phase)(n)  # inverse_sqrt, cyclic, cosine_restarts mid-cycle: the formula at k = steps


def _check_phase_step(step: int) -> None:
    if not _is_int(step) or step < 0:
        raise ValueError(f"step must be a whole number >= 0, got {step!r}")


def _first_step(phase: dict) -> int:
    return phase["first_step"]


def phase_at(step: int, phases: list[dict]) -> int:
    """Index of the phase that contains ``step`` (the last phase after the end).

    Args:
        step: 0-based optimizer step.
        phases: Phases as returned by :func:`layout`.
    """
    _check_phase_step(step)
    if not phases:
        raise ScheduleError("A schedule needs at least one phase.")
    try:
        i = bisect.bisect_right(phases, step, key=_first_step) - 1
    except (KeyError, TypeError):
        raise ScheduleError(_NOT_LAID_OUT) from None
    return max(i, 0)


def multiplier(step: int, phases: list[dict]) -> float:
    """The fraction of the peak LR used at optimizer update ``step`` (0-based).

    Args:
        step: 0-based optimizer step: step 0 is the first update.
        phases: Phases as returned by :func:`layout`.

    Returns:
        The multiplier. Inside a phase it follows the phase's shape; from the
        end of the last phase on it stays at that phase's value at its end.
    """
    phase = phases[phase_at(step, phases)]
    try:
        k = step - phase["first_step"]
        if k >= phase["steps"]:
            return _end_value(phase)
        return _phase_fn(phase)(k)
    except KeyError:
        raise ScheduleError(_NOT_LAID_OUT) from None


def values(phases: list[dict], max_steps: int) -> list[float]:
    """``[multiplier(s, phases) for s in range(max_steps)]``, phase by phase (linear time).

    ``max_steps`` may differ from the schedule's length: shorter cuts it,
    longer continues with the value after the end.
    """
    if not _is_int(max_steps) or max_steps < 0:
        raise ValueError(f"max_steps must be a whole number >= 0, got {max_steps!r}")
    if not phases:
        raise ScheduleError("A schedule needs at least one phase.")
    out: list[float] = []
    for phase in phases:
        n = min(phase["steps"], max_steps - len(out))
        if n <= 0:
            break
        f = _phase_fn(phase)
        out.extend([f(k) for k in range(n)])
    if len(out) < max_steps:
        out.extend([_end_value(phases[-1])] * (max_steps - len(out)))
    return out


def phase_lambda(phases: list[dict]) -> Callable[[int], float]:
    """Bind laid-out phases into a ``step -> multiplier`` callable for ``LambdaLR``.

    The phases are checked now (by laying them out again over their own total
    and comparing the steps), so a bad schedule fails before training starts.
    The result is a ``functools.partial`` of :func:`multiplier` over a private
    copy of the phases: it pickles, as ``LambdaLR.state_dict()`` needs.

    Raises:
        ScheduleError: If the phases are invalid or were not laid out.
    """
    if not isinstance(phases, (list, tuple)) or not phases:
        raise ScheduleError("A schedule needs at least one phase.")
    steps = [p.get("steps") if isinstance(p, dict) else None for p in phases]
    if not all(_is_int(n) and n >= 1 for n in steps) or any("first_step" not in p for p in phases):
        raise ScheduleError(_NOT_LAID_OUT)
    checked = layout(list(phases), sum(steps))
    for i, (given, laid) in enumerate(zip(phases, checked)):
        if given["first_step"] != laid["first_step"]:
            raise ScheduleError(
                f"{_sentence(_label(list(phases), i))} has first_step = {given['first_step']!r}, but the phases before "
                f"it end at step {laid['first_step']}; lay the phases out again.",
                i,
                "first_step",
            )
    return functools.partial(multiplier, phases=checked)


def lr_csv(phases: list[dict], max_steps: int, peak: float) -> str:
    """``step,lr`` for every optimizer step: the LR used at update ``step``.

    The build writes it as schedule.csv before training and the generated script
    writes it into the run directory, from this one function, so the two agree to
    the last digit (a continual run reads its parent's from there).
    """
    return "step,lr\n" + "".join(f"{step},{peak * f!r}\n" for step, f in enumerate(values(phases, max_steps)))
