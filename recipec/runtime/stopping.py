"""Early stopping on a held-out metric (``train.early_stopping_patience``), and the best value of it
whose model ``output.save_best`` keeps (``train.best_metric``, ``eval_loss`` by default).

The rule is transformers' ``EarlyStoppingCallback`` with ``metric_for_best_model`` and
``greater_is_better``: at each evaluation but the first the value is compared with the best of the
evaluations before it; it counts as an improvement when it is better (lower, or higher when greater
is better) by more than the threshold, which resets the count, and anything else (a smaller step, a
worse value, NaN) adds one to it. The run stops once the count reaches the patience. The best value is
updated whenever a value is better, however slightly, as the Trainer updates ``best_metric``. The state is a few numbers, which
checkpoints keep (``accelerator.register_for_checkpointing``), so a resumed run stops where
the uninterrupted one would.

This module is stdlib-only.
"""

from __future__ import annotations

import math
from typing import Any

METRIC = "eval_loss"


def greater_is_better(metric: str) -> bool:
    """transformers' default for ``greater_is_better``: lower is better for a loss, higher for anything else."""
    return not metric.endswith("loss")


def _better(value: float, best: float | None, greater: bool) -> bool:
    """``value`` is better than ``best`` (None: nothing yet; NaN is never better, nor beaten by NaN)."""
    if best is None:
        return not math.isnan(value)
    return value > best if greater else value < best


class EarlyStopping:
    """Counts the evaluations since the watched metric last improved, and says when to stop.

    Args:
        patience: evaluations in a row without an improvement that stop the run (at least 1).
        threshold: how much better than the best so far a value must be to be an improvement.
        metric: the key of the evaluation's metrics to watch.
        greater: higher is better (unset: lower for a loss, higher for anything else).
    """

    def __init__(self, patience: int, threshold: float = 0.0, metric: str = METRIC, greater: bool | None = None) -> None:
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        if not threshold >= 0:
            raise ValueError(f"threshold must be 0 or more, got {threshold}")
        self.patience, self.threshold, self.metric = patience, threshold, metric
        self.greater = greater_is_better(metric) if greater is None else greater
        self.evaluations = 0
        self.best: float | None = None  # the best value so far (None: none yet, or only NaN)
        self.best_step: int | None = None  # the step of its evaluation
        self.waited = 0  # evaluations since the last improvement
        self.stopped_at: int | None = None  # the step whose evaluation stopped the run

    def update(self, step: int, metrics: dict[str, Any]) -> bool:
        """Take one evaluation's metrics; True when the run should stop after this step. An evaluation without
        the watched key (no held-out rows to score) does not count."""
        if self.metric not in metrics:
            return self.stopped
        value = float(metrics[self.metric])
        # the Trainer's best_metric after its first evaluation is -inf / inf until a value beats it
        best = (-math.inf if self.greater else math.inf) if self.best is None else self.best
        if self.evaluations == 0 or (_better(value, best, self.greater) and abs(value - best) > self.threshold):
            self.waited = 0
        else:
            self.waited += 1
        if _better(value, best, self.greater):
            self.best, self.best_step = value, step
        self.evaluations += 1
        if self.waited >= self.patience:
            self.stopped_at = step
        return self.stopped_at is not None

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def describe(self) -> str:
        """One line on why the run stopped (or how far it is from stopping)."""
        best = "none" if self.best is None else ("nan" if math.isnan(self.best) else f"{self.best:.6g}")
        by = f" by more than {self.threshold:g}" if self.threshold else ""
        where = f"stopped early at step {self.stopped_at}: " if self.stopped else ""
        return (
            f"{where}{self.metric} has not improved on its {'highest' if self.greater else 'lowest'} ({best} at step {self.best_step}){by} "
            f"for {self.waited} evaluation{'s' if self.waited != 1 else ''} (patience {self.patience})"
        )

    def record(self) -> dict[str, Any]:
        """What run.json keeps of a run that stopped early."""
        return {
            "step": self.stopped_at,
            "metric": self.metric,
            "best": self.best,
            "best_step": self.best_step,
            "patience": self.patience,
            "threshold": self.threshold,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"evaluations": self.evaluations, "best": self.best, "best_step": self.best_step, "waited": self.waited, "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.evaluations, self.best, self.best_step = state["evaluations"], state["best"], state["best_step"]
        self.waited, self.stopped_at = state["waited"], state["stopped_at"]


class Lowest:
    """The best held-out value so far and the step of its evaluation (``output.save_best``): an evaluation whose
    value is better than every one before it (NaN never is) is the new best. Checkpoints keep it, so a resumed run
    saves the best model where the uninterrupted one would.

    Args:
        metric: the key of the evaluation's metrics to watch.
        greater: higher is better (unset: lower for a loss, higher for anything else).
    """

    def __init__(self, metric: str = METRIC, greater: bool | None = None) -> None:
        self.metric = metric
        self.greater = greater_is_better(metric) if greater is None else greater
        self.value: float | None = None
        self.step: int | None = None

    def update(self, step: int, metrics: dict[str, Any]) -> bool:
        """Take one evaluation's metrics; True when its value is the best so far (never without the watched key)."""
        if self.metric not in metrics:
            return False
        value = float(metrics[self.metric])
        if _better(value, self.value, self.greater):
            self.value, self.step = value, step
            return True
        return False

    def record(self) -> dict[str, Any]:
        """What run.json and model_best/best.json keep."""
        return {"step": self.step, self.metric: self.value}

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value, self.step = state["value"], state["step"]
