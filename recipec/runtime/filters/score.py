"""Filters on a numeric field and sampling: `score`, `score_sample` and `sample`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .base import DocumentFilter, Documents, SelectFilter


class Score(DocumentFilter):
    """`type = "score"`: drops documents whose ``field`` is below ``min`` or above ``max`` (None: no bound)."""

    type = "score"
    keys = ("field", "min", "max")

    @property
    def field(self) -> str:
        return self.settings["field"]

    def verdicts(self, docs: Documents) -> np.ndarray:
        scores = np.asarray(docs.fields[self.field], dtype=np.float64)
        keep = np.ones(len(docs.texts), dtype=bool)
        if self.settings["min"] is not None:
            keep &= scores >= self.settings["min"]
        if self.settings["max"] is not None:
            keep &= scores <= self.settings["max"]
        return (~keep).astype(np.int8)


class Sample(SelectFilter):
    """`type = "sample"`: keeps each document with probability ``rate``, by a seeded uniform draw."""

    type = "sample"
    keys = ("rate",)

    def drop(
        self, docs: np.ndarray, n_docs: int, seed: list[int], scores: Callable[[str], np.ndarray]
    ) -> np.ndarray:
        u = np.random.default_rng(seed + [0x5A4D]).random(n_docs)
        return u[docs] >= float(self.settings["rate"])


class ScoreSample(SelectFilter):
    """`type = "score_sample"`: keeps ``rate`` of the documents, sampled without replacement with
    probabilities proportional to exp(score / ``temperature``) (QuRating).

    The Gumbel top-k trick: the kept documents are those with the largest score /
    temperature plus a seeded Gumbel draw.
    """

    type = "score_sample"
    keys = ("field", "rate", "temperature")

    @property
    def field(self) -> str:
        return self.settings["field"]

    def drop(
        self, docs: np.ndarray, n_docs: int, seed: list[int], scores: Callable[[str], np.ndarray]
    ) -> np.ndarray:
        keep_n = int(round(float(self.settings["rate"]) * len(docs)))
        gumbel = np.random.default_rng(seed + [0x5C0E]).gumbel(size=n_docs)
        keys = scores(self.field) / float(self.settings["temperature"]) + gumbel[docs]
        drop = np.ones(len(docs), dtype=bool)
        drop[np.argsort(-keys, kind="stable")[:keep_n]] = False
        return drop
