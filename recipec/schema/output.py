"""`[output]`: where the run writes checkpoints, metrics and the final model, and which trackers it feeds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Table, key_error


class OutputTable(Table):
    """`[output]`"""

    dir: str | None = Field(None, min_length=1)
    """Run directory, relative to the directory `recipec` runs in. Unset: runs/<recipe.name>."""

    trackers: list[Literal["tensorboard", "wandb", "mlflow", "aim"]] = Field(default_factory=list)
    """Experiment trackers that get every metrics.jsonl line and the resolved recipe as the run's config, all on local disk under <run dir>/trackers/: tensorboard event files, a wandb run in offline mode (`wandb sync` uploads it), an mlflow SQLite store, an aim repository. Each needs its package (`pip install 'recipec[trackers]'`). metrics.jsonl is always written."""

    save_best: bool = False
    """Also keep the model of the evaluation with the best `train.best_metric` so far (the lowest held-out loss, `eval_loss`, by default) in model_best/ of the run directory, replaced (whole or not at all) at each new best, with best.json naming its step and value; the final model stays in model/. transformers' `load_best_model_at_end` with `metric_for_best_model`, which puts it in the final model's place instead. Every evaluation counts, the one before the first step (`train.eval_at_start`) and the final one included. Under [peft] the adapter, as model/ has it."""

    @model_validator(mode="after")
    def check_trackers_unique(self) -> OutputTable:
        repeated = sorted({t for t in self.trackers if self.trackers.count(t) > 1})
        if repeated:
            raise key_error("trackers", f"{repeated[0]!r} is named twice", "name each tracker once")
        return self
