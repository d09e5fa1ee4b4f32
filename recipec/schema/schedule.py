"""`[schedule]`: how the learning rate moves from step to step.

Two spellings, one meaning. The shorthand (`warmup`, `decay` and the decay's own keys)
covers the usual schedules in a line or two; `[[schedule.phases]]` spells any schedule
out as a list of phases. resolve turns the shorthand into phases, so the script, the plot
and `explain` only ever see phases: each a length and a shape that moves a multiplier of
the peak LR (`optim.lr`) from `start` to `end`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

# the shapes and the keys each takes are the runtime's, which lays phases out
from ..runtime.schedule import REQUIRED_PARAMS, SHAPE_PARAMS, SHAPES
from .base import Table, key_error

DECAYS = ("constant", "linear", "cosine", "inverse_sqrt", "polynomial", "wsd", "cyclic", "cosine_restarts")
# shorthand keys that belong to one decay
DECAY_KEYS = {
    "polynomial": ("power",),
    "wsd": ("cooldown", "cooldown_shape"),
    "cyclic": ("half_cycle",),
    "cosine_restarts": ("restart_period", "restart_mult"),
    "inverse_sqrt": ("timescale",),
}
SHORTHAND_KEYS = (
    "warmup",
    "warmup_shape",
    "warmup_start_ratio",
    "decay",
    "power",
    "cooldown",
    "cooldown_shape",
    "half_cycle",
    "restart_period",
    "restart_mult",
    "timescale",
)


class Phase(Table):
    """`[[schedule.phases]]`: one stretch of the schedule.

    Give its length as one of `steps`, `fraction` and `tokens`; leave all three out on
    one phase and it takes the rest of the run.
    """

    name: str = Field(min_length=1, max_length=40)
    """Name shown in the plot and in `explain`, e.g. "warmup", "stable", "anneal"."""

    shape: Literal[SHAPES]
    """How the multiplier moves from `start` to `end`: constant, linear, cosine, exponential, 1-sqrt (start + (end - start) * sqrt(p)), polynomial (with `power`), inverse_sqrt (start * sqrt(timescale / (timescale + k)), floored at `end`), cyclic (triangular between `end` and `start`, every `half_cycle` steps) or cosine_restarts (SGDR with `period` and `period_mult`)."""

    steps: int | None = Field(None, ge=1)
    """Length in optimizer steps."""

    fraction: float | None = Field(None, gt=0, le=1)
    """Length as a fraction of the run (rounded to whole steps)."""

    tokens: int | None = Field(None, ge=1)
    """Length in training tokens (rounded up to whole steps)."""

    start: float | None = Field(None, ge=0, le=1)
    """Multiplier of the peak LR at the phase's first step. Unset: where the previous phase ended (1.0 for the first phase)."""

    end: float | None = Field(None, ge=0, le=1)
    """Multiplier the phase moves towards. Unset: `start` for a constant phase, else `schedule.min_lr_ratio`."""

    power: float | None = Field(None, gt=0)
    """Exponent of a polynomial phase (1 is linear)."""

    timescale: int | None = Field(None, ge=1)
    """Timescale of an inverse_sqrt phase: k steps in, f = start * sqrt(timescale / (timescale + k)). Unset: 1."""

    half_cycle: int | None = Field(None, ge=1)
    """Steps from the low to the high point of a cyclic phase."""

    period: int | None = Field(None, ge=1)
    """First cycle length of a cosine_restarts phase (SGDR's T_0)."""

    period_mult: int | None = Field(None, ge=1)
    """Growth of each cosine_restarts cycle over the last (SGDR's T_mult). Unset: 1."""

    @model_validator(mode="after")
    def check_length_and_shape_keys(self) -> Phase:
        lengths = [k for k in ("steps", "fraction", "tokens") if getattr(self, k) is not None]
        if len(lengths) > 1:
            raise key_error(lengths[1], f"give a phase's length once, got {' and '.join(lengths)}")
        allowed = SHAPE_PARAMS.get(self.shape, ())
        for shape_keys in SHAPE_PARAMS.values():
            for key in shape_keys:
                if getattr(self, key) is not None and key not in allowed:
                    raise key_error(key, f"`{key}` does not apply to a {self.shape} phase")
        for key in REQUIRED_PARAMS.get(self.shape, ()):
            if getattr(self, key) is None:
                raise key_error("shape", f"a {self.shape} phase needs `{key}`")
        if self.shape == "exponential" and (self.start == 0 or self.end == 0):
            raise key_error(
                "start" if self.start == 0 else "end",
                "an exponential phase cannot start or end at 0",
                "start from a small ratio, e.g. start = 0.01",
            )
        return self


class ScheduleTable(Table):
    """`[schedule]`: warmup, then a decay to a floor; or explicit `[[schedule.phases]]`.

    The LR at optimizer step `s` (0-based: step 0 is the first update) is
    `optim.lr * f(s)`, as with transformers' schedulers: with a linear warmup from 0,
    f(0) = `warmup_start_ratio` = 0.
    """

    warmup: int | float = 0.03
    """Warmup length: an integer is a number of optimizer steps, a float in [0, 1) a fraction of the run (rounded up to whole steps). 0 turns warmup off."""

    warmup_shape: Literal["linear", "exponential"] = "linear"
    """Warmup shape: linear, or exponential (geometric, needs `warmup_start_ratio` > 0)."""

    warmup_start_ratio: float = Field(0.0, ge=0, le=1)
    """Multiplier of the peak LR at the first warmup step."""

    decay: Literal[DECAYS] = "cosine"
    """Shape after warmup: constant, linear (to the floor; with `min_lr_ratio = 0` decay-to-zero), cosine, inverse_sqrt (with `timescale`), polynomial (with `power`), wsd (warmup-stable-decay: flat at the peak, then a `cooldown` of shape `cooldown_shape`), cyclic (triangular between the peak and the floor, with `half_cycle`) or cosine_restarts (SGDR, with `restart_period` and `restart_mult`)."""

    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """The floor every decaying shape ends at, as a fraction of the peak LR (0.1 is the usual "10x decay")."""

    min_lr: float | None = Field(None, ge=0)
    """The floor as an absolute LR instead of `min_lr_ratio`; must not exceed the peak LR."""

    power: float = Field(1.0, gt=0)
    """decay = "polynomial": the exponent (transformers' polynomial decay; 1 is linear)."""

    cooldown: int | float = 0.2
    """decay = "wsd": length of the final decay: an integer is steps, a float in (0, 1) a fraction of the run."""

    cooldown_shape: Literal["linear", "cosine", "1-sqrt"] = "linear"
    """decay = "wsd": shape of the cooldown."""

    half_cycle: int | None = Field(None, ge=1)
    """decay = "cyclic": steps from the floor to the peak (torch CyclicLR's step_size_up)."""

    restart_period: int | None = Field(None, ge=1)
    """decay = "cosine_restarts": steps of the first cosine cycle (SGDR's T_0)."""

    restart_mult: int = Field(1, ge=1)
    """decay = "cosine_restarts": each cycle is this many times longer than the last (SGDR's T_mult)."""

    timescale: int | None = Field(None, ge=1)
    """decay = "inverse_sqrt": f = sqrt(timescale / (timescale + k)) k steps after warmup. Unset: the warmup length (transformers' default), or 1 without warmup."""

    phases: list[Phase] | None = None
    """The schedule spelt out, as `[[schedule.phases]]` tables; replaces the shorthand keys above (except the floor)."""

    @model_validator(mode="after")
    def check_shorthand(self) -> ScheduleTable:
        if self.phases is not None:
            for key in SHORTHAND_KEYS:
                if key in self.model_fields_set:
                    raise key_error(
                        key,
                        f"`{key}` is shorthand; with [[schedule.phases]] the phases say everything",
                        "remove it, or describe it as a phase",
                    )
            if not self.phases:
                raise key_error("phases", "[[schedule.phases]] is empty")
            return self
        if isinstance(self.warmup, int) and self.warmup < 0:
            raise key_error("warmup", "warmup cannot be negative")
        if isinstance(self.warmup, float) and not 0 <= self.warmup < 1:
            raise key_error(
                "warmup",
                f"a warmup fraction must be in [0, 1), got {self.warmup}",
                f"write an integer for a number of steps: warmup = {int(self.warmup)}",
            )
        if self.warmup_shape == "exponential" and self.warmup_start_ratio == 0:
            raise key_error(
                "warmup_start_ratio",
                "an exponential warmup cannot start at 0",
                "set warmup_start_ratio, e.g. 0.01",
            )
        if isinstance(self.cooldown, int) and self.cooldown < 1:
            raise key_error("cooldown", "a cooldown of steps must be at least 1 (a zero-length decay)")
        if isinstance(self.cooldown, float) and not 0 < self.cooldown < 1:
            raise key_error("cooldown", f"a cooldown fraction must be in (0, 1), got {self.cooldown}")
        for decay, keys in DECAY_KEYS.items():
            for key in keys:
                if key in self.model_fields_set and self.decay != decay:
                    raise key_error(key, f'`{key}` applies only to decay = "{decay}", not "{self.decay}"')
        if self.decay == "cyclic" and self.half_cycle is None:
            raise key_error("decay", 'decay = "cyclic" needs `half_cycle` (steps from the floor to the peak)')
        if self.decay == "cosine_restarts" and self.restart_period is None:
            raise key_error("decay", 'decay = "cosine_restarts" needs `restart_period` (steps of the first cycle)')
        if self.min_lr is not None and "min_lr_ratio" in self.model_fields_set:
            raise key_error("min_lr", "set `min_lr` or `min_lr_ratio`, not both")
        return self
