"""`[continual]`: continue pre-training from an earlier recipec run (rewarm, re-decay, replay)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Table, key_error


class ContinualTable(Table):
    """`[continual]`: start from an earlier recipec run.

    The parent's model, tokenizer, data sources and schedule are read from the run
    directory (`model/`, `resolved.toml`, `recipe.lock.json`, `run.json`) when the recipe
    is built, and its lock hash and step are recorded in this run's lock and run.json.
    """

    from_: str = Field(alias="from", min_length=1)
    """The parent: a finished recipec run directory (its final `model/` is loaded), or one of its checkpoints (`runs/x/checkpoints/step_00000500`). Relative to the directory `recipec` runs in."""

    optimizer: bool = False
    """Also restore the parent's optimizer state (AdamW moments). Needs a checkpoint `from`; weights only by default."""

    rewarm_from: Literal["parent"] | float = "parent"
    """Where the warmup (the rewarm) starts: "parent" is the LR the parent would have used next, as a fraction of the new peak; a number is a multiplier of the new peak. Sets `schedule.warmup_start_ratio`."""

    continues: bool = False
    """This run claims to continue the parent's schedule (e.g. re-running only the cooldown of a warmup-stable-decay run from a stable-phase checkpoint): its first LR must equal the LR the parent would have used next. Checked at build time."""

    replay: float = Field(0.0, ge=0, lt=1)
    """Share of the training sequences replayed from the parent's training data (with packing, the share of tokens). About 0.05 for a weak distribution shift, up to 0.25 for a strong one."""

    eval_parent: bool = True
    """Also evaluate on the parent's held-out split (`eval_loss_parent` in metrics.jsonl), to see forgetting."""

    @model_validator(mode="after")
    def check_rewarm(self) -> ContinualTable:
        if isinstance(self.rewarm_from, float) and not 0 <= self.rewarm_from <= 1:
            raise key_error("rewarm_from", f"rewarm_from must be a multiplier in [0, 1], got {self.rewarm_from}")
        return self
