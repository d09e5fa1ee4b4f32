"""`[schedule]`: how the learning rate moves from step to step."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Table, key_error


class ScheduleTable(Table):
    """`[schedule]`: linear warmup, then a decay to a floor.

    The LR at optimizer step `s` (0-based) is `optim.lr * f(s)`, with transformers'
    conventions: f(0) = `warmup_start_ratio` when there is a warmup.
    """

    warmup: int | float = 0.03
    """Warmup length: an integer is a number of optimizer steps, a float in [0, 1) a fraction of the run (rounded up to whole steps)."""

    warmup_start_ratio: float = Field(0.0, ge=0, le=1)
    """Multiplier of the peak LR at the first warmup step."""

    decay: Literal["cosine", "linear", "constant"] = "cosine"
    """Shape after warmup: `cosine` (half a cosine down to the floor), `linear` (straight line down to the floor; with a floor of 0 this is decay-to-zero) or `constant` (stay at the peak)."""

    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """The floor the decay ends at, as a fraction of the peak LR (0.1 is the usual "10x decay")."""

    min_lr: float | None = Field(None, ge=0)
    """The floor as an absolute LR instead of `min_lr_ratio`; must not exceed `optim.lr`."""

    @model_validator(mode="after")
    def check_warmup_and_floor(self) -> ScheduleTable:
        if isinstance(self.warmup, int) and self.warmup < 0:
            raise key_error("warmup", "warmup cannot be negative")
        if isinstance(self.warmup, float) and not 0 <= self.warmup < 1:
            raise key_error(
                "warmup",
                f"a warmup fraction must be in [0, 1), got {self.warmup}",
                f"write an integer for a number of steps: warmup = {int(self.warmup)}",
            )
        if self.min_lr is not None and "min_lr_ratio" in self.model_fields_set:
            raise key_error("min_lr", "set `min_lr` or `min_lr_ratio`, not both")
        return self
