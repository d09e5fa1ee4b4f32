"""`type = "length"`: keep documents whose length, in characters, words or tokens, is within bounds."""

from __future__ import annotations

import numpy as np

from .base import DocumentFilter, Documents
from .words import count_words


def length_keep(lengths: np.ndarray, min: int | None, max: int | None) -> np.ndarray:
    """Which documents have a length inside the bounds.

    Args:
        lengths: Document lengths, in the unit the caller measured (words
            from :func:`count_words`, characters, tokens).
        min: Smallest length kept, inclusive; None for no lower bound.
        max: Largest length kept, inclusive; None for no upper bound.

    Returns:
        bool array, True where ``min <= length <= max``.
    """
    lengths = np.asarray(lengths)
    keep = np.ones(lengths.shape, bool)
    if min is not None:
        keep &= lengths >= min
    if max is not None:
        keep &= lengths <= max
    return keep


class Length(DocumentFilter):
    """Drops documents shorter than ``min`` or longer than ``max`` ``unit``\\ s.

    ``words`` are counted by :func:`.words.count_words`; ``tokens`` are the stage
    tokenizer's ids (without special tokens).
    """

    type = "length"
    keys = ("unit", "min", "max")

    def verdicts(self, docs: Documents) -> np.ndarray:
        unit = self.settings["unit"]
        if unit == "chars":
            lengths = np.fromiter((len(t) for t in docs.texts), dtype=np.int64, count=len(docs.texts))
        elif unit == "words":
            lengths = count_words(docs.texts)
        elif unit == "tokens":
            lengths = np.array([len(ids) for ids in docs.token_ids()], dtype=np.int64)
        else:
            raise ValueError(f"length filter: unknown unit {unit!r}; expected chars, words or tokens")
        return (~length_keep(lengths, self.settings["min"], self.settings["max"])).astype(np.int8)
