"""A run's results from its metrics.jsonl: the final and the best losses.

The generated script records them in run.json when the run ends; ``recipec runs`` shows
them, and computes them the same way for a run that has not ended (or has no run.json).

Typical use from a training script, on the main process::

    metrics = [json.loads(line) for line in open(output_dir / "metrics.jsonl")]
    run_record.update(summary.final_and_best(metrics, eval_keys=list(final_eval)))

This module is stdlib-only; the compiler imports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

EVAL_PREFIX = "eval_loss"
"""Held-out losses are logged under keys that start with this (eval_loss, eval_loss_parent)."""


def final_and_best(metrics: Sequence[dict[str, Any]], eval_keys: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """``final`` and ``best`` of run.json, from the lines of metrics.jsonl in order.

    ``final``: ``loss``, the last training loss (None before the first); and for each
    held-out loss its first and last value (``first_eval_loss``, ``eval_loss``). ``best``:
    the lowest value of the training loss and of each held-out loss, and the step of its
    line (``eval_loss_step``). A value of None (JSON null) is no value.

    Args:
        metrics: the lines of metrics.jsonl, as dicts with a ``step``.
        eval_keys: the held-out losses the run evaluates; None: every key of the lines
            that starts with ``eval_loss``, in the order they first appear.
    """
    if eval_keys is None:
        eval_keys = dict.fromkeys(k for m in metrics for k in m if k.startswith(EVAL_PREFIX))
    lines = {key: [m for m in metrics if m.get(key) is not None] for key in ("loss", *eval_keys)}
    evaluated = [key for key in lines if key != "loss" and lines[key]]
    final: dict[str, Any] = {"loss": lines["loss"][-1]["loss"] if lines["loss"] else None}
    final.update({f"first_{key}": lines[key][0][key] for key in evaluated})
    final.update({key: lines[key][-1][key] for key in evaluated})
    best: dict[str, Any] = {}
    for key, logged in lines.items():
        if logged:
            lowest = min(logged, key=lambda m: m[key])
            best.update({key: lowest[key], f"{key}_step": lowest["step"]})
    return {"final": final, "best": best}
