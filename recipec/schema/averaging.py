"""`[ema]` and `[merge]`: running averages of the weights, saved beside the final model."""

from __future__ import annotations

from pydantic import Field, model_validator

from .base import Table, key_error


class EmaTable(Table):
    """`[ema]`: an exponential moving average of the weights, saved as `model_ema/` beside `model/`."""

    decay: float = Field(gt=0, lt=1)
    """EMA decay per update (e.g. 0.999), at `reference_batch`."""

    reference_batch: int | None = Field(None, ge=1)
    """The global batch `decay` was tuned at. The decay used is decay ** (train.batch_size / reference_batch), so the EMA spans the same number of samples at any batch ("How to Scale Your EMA"). Unset: `decay` as is."""

    every: int = Field(1, ge=1)
    """Update the average every this many optimizer steps."""


class MergeTable(Table):
    """`[merge]`: checkpoint merging (WSM, "Warmup-Stable and Merge"): the mean of the weights at every `every`-th step of the run's last `window`, saved as `model_merged/`. With a constant schedule it stands in for the decay phase."""

    window: int | float = 0.2
    """The merge window at the end of the run: an integer is steps, a float in (0, 1] a fraction of the run (rounded up). The window matters more than the interval."""

    every: int = Field(10, ge=1)
    """Take a snapshot every this many optimizer steps inside the window."""

    @model_validator(mode="after")
    def check_window(self) -> MergeTable:
        if isinstance(self.window, int) and self.window < 1:
            raise key_error("window", "the merge window must be at least 1 step")
        if isinstance(self.window, float) and not 0 < self.window <= 1:
            raise key_error("window", f"a merge window fraction must be in (0, 1], got {self.window}")
        return self
