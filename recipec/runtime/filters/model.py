"""Filters that score documents with pretrained language models: `perplexity` and `color_filter`.

Both run in the main process (role ``model``, :mod:`.base`), over the documents still kept
when the chain reaches them, so the cheap filters before them spare the model their
documents. The scoring itself (loading each model, batching, the loss) is
:mod:`..model_scores`; what these classes decide from the scores is numpy alone. A score
is a document's mean negative log-likelihood per predicted token (nats) of its first
``max_tokens`` tokens under a model; a document too short to have one (under 2 tokens) is
dropped as ``unscored``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import MODEL, Filter


def keep_lowest(values: np.ndarray, rate: float) -> np.ndarray:
    """Which of ``values`` (NaN: unscored, never kept) are the ``rate`` share of the scored ones with the lowest value.

    ``round(rate x scored)`` are kept; ties go to the earlier document.
    """
    scored = np.flatnonzero(~np.isnan(values))
    n_keep = int(round(rate * len(scored)))
    keep = np.zeros(len(values), dtype=bool)
    keep[scored[np.argsort(values[scored], kind="stable")[:n_keep]]] = True
    return keep


class ModelFilter(Filter):
    """A filter that scores documents with the pretrained causal language models of its settings."""

    role = MODEL
    model_keys: tuple[str, ...] = ()
    """The settings that name a model, each beside its revision key (``revision_keys``)."""
    revision_keys: tuple[str, ...] = ()
    scored: tuple[str, ...] = ()
    """The names of the per-document values :meth:`decide` derives, first the one it selects on."""

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.project_dir: str | None = None

    def models(self) -> list[tuple[str, str, str | None]]:
        """``(key, path, revision)`` of each model, as the recipe names it."""
        return [(k, self.settings[k], self.settings[r]) for k, r in zip(self.model_keys, self.revision_keys)]

    def locate(self, project_dir: str) -> None:
        """Where a local model's path starts from (the project directory)."""
        self.project_dir = project_dir

    def decide(self, nll: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Reason codes (0: kept) from each model's mean loss per token (``{key: nll}``, NaN: unscored), and the
        per-document values the decision was made on (by ``scored`` name)."""
        raise NotImplementedError


class Perplexity(ModelFilter):
    """`type = "perplexity"`: keep documents whose perplexity under ``model`` is within [``min``, ``max``], or the
    ``rate`` of them with the lowest perplexity."""

    type = "perplexity"
    keys = ("model", "revision", "min", "max", "rate", "max_tokens", "batch_size", "dtype")
    rules = ("unscored", "below_min", "above_max", "outside_rate")
    model_keys = ("model",)
    revision_keys = ("revision",)
    scored = ("perplexity",)

    def decide(self, nll: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        perplexity = np.exp(nll["model"])
        codes = np.zeros(len(perplexity), dtype=np.int8)
        unscored = np.isnan(perplexity)
        codes[unscored] = 1
        low, high, rate = self.settings["min"], self.settings["max"], self.settings["rate"]
        if rate is not None:
            codes[~unscored & ~keep_lowest(perplexity, float(rate))] = 4
        else:
            if low is not None:
                codes[~unscored & (perplexity < low)] = 2
            if high is not None:
                codes[~unscored & (perplexity > high)] = 3
        return codes, {"perplexity": perplexity}


class ColorFilter(ModelFilter):
    """`type = "color_filter"`: keep the ``rate`` of the documents with the largest CoLoR score, the prior model's
    mean loss minus the conditional model's (Brandfonbrener et al., 2024)."""

    type = "color_filter"
    keys = (
        "prior_model",
        "prior_revision",
        "conditional_model",
        "conditional_revision",
        "rate",
        "max_tokens",
        "batch_size",
        "dtype",
    )
    rules = ("unscored", "outside_rate")
    model_keys = ("prior_model", "conditional_model")
    revision_keys = ("prior_revision", "conditional_revision")
    scored = ("color_score", "prior_nll", "conditional_nll")

    def decide(self, nll: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        score = nll["prior_model"] - nll["conditional_model"]
        codes = np.zeros(len(score), dtype=np.int8)
        unscored = np.isnan(score)
        codes[unscored] = 1
        codes[~unscored & ~keep_lowest(-score, float(self.settings["rate"]))] = 2
        return codes, {"color_score": score, "prior_nll": nll["prior_model"], "conditional_nll": nll["conditional_model"]}
