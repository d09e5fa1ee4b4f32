"""`type = "regex"`: keep documents that match an include pattern (if any) and no exclude pattern."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np

from .base import DocumentFilter, Documents


@functools.lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...], ignore_case: bool) -> tuple[re.Pattern, ...]:
    flags = re.IGNORECASE if ignore_case else 0
    return tuple(re.compile(p, flags) for p in patterns)


def regex_keep(
    texts: Sequence[str], include: Sequence[str], exclude: Sequence[str], ignore_case: bool
) -> np.ndarray:
    """Which documents pass include and exclude regular expressions.

    A document is kept when some ``include`` pattern matches somewhere in it
    (or ``include`` is empty) and no ``exclude`` pattern matches anywhere
    (``re.search``). Compiled patterns are cached per pattern tuple.

    Args:
        texts: Documents.
        include: Python regular expressions, any of which must match.
        exclude: Python regular expressions, none of which may match.
        ignore_case: Compile the patterns with ``re.IGNORECASE``.

    Returns:
        bool array, True for kept documents.

    Raises:
        re.error: If a pattern does not compile.
    """
    inc = _compiled(tuple(include), ignore_case)
    exc = _compiled(tuple(exclude), ignore_case)
    keep = np.ones(len(texts), bool)
    for i, text in enumerate(texts):
        if (inc and not any(p.search(text) for p in inc)) or any(p.search(text) for p in exc):
            keep[i] = False
    return keep


class Regex(DocumentFilter):
    """Drops documents that :func:`regex_keep` does not keep."""

    type = "regex"
    keys = ("include", "exclude", "ignore_case")

    def verdicts(self, docs: Documents) -> np.ndarray:
        s = self.settings
        return (~regex_keep(docs.texts, s["include"], s["exclude"], s["ignore_case"])).astype(np.int8)
