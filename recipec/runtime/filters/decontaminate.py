"""`type = "decontaminate"`: drop documents that share a word n-gram with evaluation files.

The n-grams are those of :func:`.words.shingle_hashes` over dedup words, so
case, punctuation and formatting do not hide a leaked passage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .base import DocumentFilter, Documents
from .text import _segment_sums
from .words import _shingles, _words


def ngram_set(texts: Sequence[str], n: int) -> np.ndarray:
    """All word n-gram hashes of some texts (the evaluation sets to keep out of training).

    n-grams are :func:`shingle_hashes` of :func:`word_hashes` with size
    ``n``: a text with fewer than ``n`` words (but some) contributes one
    hash of all its words.

    Args:
        texts: Evaluation documents.
        n: Words per n-gram, >= 1.

    Returns:
        Sorted unique uint64 array.

    Raises:
        ValueError: If ``n < 1``.
    """
    hashes, _, offsets = _words(texts)
    grams = np.sort(_shingles(hashes, offsets, n)[0])
    if grams.size:
        grams = grams[np.concatenate(([True], grams[1:] != grams[:-1]))]
    return grams


def contaminated(texts: Sequence[str], ngrams: np.ndarray, n: int) -> np.ndarray:
    """Which texts share a word n-gram with an evaluation set.

    Args:
        texts: Training documents.
        ngrams: Sorted unique uint64 hashes from :func:`ngram_set`.
        n: The n-gram size ``ngrams`` was built with.

    Returns:
        bool array, True where some n-gram of the text (its single shingle
        when it has fewer than ``n`` words) is in ``ngrams``.

    Raises:
        ValueError: If ``n < 1`` or ``ngrams`` is not a sorted unique 1-D array.
    """
    ngrams = np.asarray(ngrams, np.uint64)
    if ngrams.ndim != 1 or (ngrams.size > 1 and not (ngrams[1:] > ngrams[:-1]).all()):
        raise ValueError("ngrams must be a sorted 1-D array of unique hashes (use ngram_set)")
    hashes, _, offsets = _words(texts)
    grams, bounds = _shingles(hashes, offsets, n)
    if not ngrams.size or not grams.size:
        return np.zeros(len(texts), bool)
    at = np.searchsorted(ngrams, grams)
    at[at == ngrams.size] = 0
    return _segment_sums(ngrams[at] == grams, bounds) > 0


class Decontaminate(DocumentFilter):
    """Drops a document that :func:`contaminated` finds in the evaluation files' n-gram set.

    The evaluation files are :meth:`input_source`; the stage reads them and hands
    their texts to :meth:`prepare` before the documents are filtered.
    """

    type = "decontaminate"
    keys = ("path", "text_field", "ngram")

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.ngrams: np.ndarray | None = None

    def input_source(self) -> dict[str, Any]:
        return {"path": self.settings["path"], "text_field": self.settings["text_field"]}

    def prepare(self, texts: list[str]) -> None:
        self.ngrams = ngram_set(texts, int(self.settings["ngram"]))

    def verdicts(self, docs: Documents) -> np.ndarray:
        if self.ngrams is None:
            raise ValueError("decontaminate filter: prepare() was not given the evaluation texts")
        return contaminated(docs.texts, self.ngrams, int(self.settings["ngram"])).astype(np.int8)
