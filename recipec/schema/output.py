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

    @model_validator(mode="after")
    def check_trackers_unique(self) -> OutputTable:
        repeated = sorted({t for t in self.trackers if self.trackers.count(t) > 1})
        if repeated:
            raise key_error("trackers", f"{repeated[0]!r} is named twice", "name each tracker once")
        return self
