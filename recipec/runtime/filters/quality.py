"""`type = "gopher_quality"`: the quality heuristics of Gopher (Rae et al. 2021, appendix A).

Measured against datatrove 0.10.1 with spaCy on 2,786 documents (2,355 Python
files from site-packages, 140 markdown and text files, 291 pieces of the
Python docs and license texts), :func:`gopher_quality` gives datatrove's
decision (the same failing rule, or kept) for 97.7 % of the Python files,
99.3 % of the markdown and 99.0 % of the prose, and the same keep/drop
decision for 100 %, 100 % and 99.0 %. Where it differs from datatrove:

* Tokens are the quality tokens of :mod:`.words`, not spaCy's (datatrove's two Gopher
  filters, which tokenize with spaCy, ran at 0.2 MB/s on the documents
  above). spaCy also splits contractions (``do|n't``), ``.``
  between a lower- and an upper-case letter, and ``/`` ``:`` ``,`` between
  letters, and keeps URLs whole; each of those rules lowered the agreement or
  cost more than it gained.
* A datatrove "non-symbol word" is a token with a character outside its
  ``PUNCTUATION_SET``; here it is a word (a token with a letter or digit).
  So tokens of symbols outside that set (``→``, ``©``) count as symbols
  here, and words with ``_`` or fullwidth digits (in the set) as words.
* Ratios with an empty denominator are 0, where datatrove divides by zero
  (no tokens) or takes the mean of no words as NaN and keeps the document:
  here a document without words has mean word length 0 and alpha ratio 0,
  so it fails ``min_mean_word_length`` when ``min_words`` is disabled.
* A threshold of 0 is a threshold; only None disables a rule (datatrove
  tests truthiness, so 0 disables there).

As in datatrove: the rule order; ``#`` and ellipsis counts are over the raw
text and divided by all tokens (words and symbols); lines are
``str.splitlines``; the alpha ratio is words with a letter over all tokens;
stop words are matched case-sensitively and each counts once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .base import DocumentFilter, Documents, check_params, first_failures
from .text import _ratio
from .words import _quality_counts

# Reason code k of gopher_quality is GOPHER_QUALITY_RULES[k - 1]. The two
# max_symbol_word_ratio rules (``#`` and ellipses) share that one threshold.
GOPHER_QUALITY_RULES: tuple[str, ...] = (
    "min_words",
    "max_words",
    "min_mean_word_length",
    "max_mean_word_length",
    "max_symbol_word_ratio_hash",
    "max_symbol_word_ratio_ellipsis",
    "max_bullet_lines_ratio",
    "max_ellipsis_lines_ratio",
    "min_alpha_words_ratio",
    "min_stop_words",
)

GOPHER_QUALITY_PARAMS: tuple[str, ...] = (
    "min_words",
    "max_words",
    "min_mean_word_length",
    "max_mean_word_length",
    "max_symbol_word_ratio",
    "max_bullet_lines_ratio",
    "max_ellipsis_lines_ratio",
    "min_alpha_words_ratio",
    "min_stop_words",
    "stop_words",
)
"""The parameters of :func:`gopher_quality`: a threshold per rule (None: not checked), and the stop words."""

# the parameter that holds a rule's threshold, where the names differ
_QUALITY_PARAMS = {
    "max_symbol_word_ratio_hash": "max_symbol_word_ratio",
    "max_symbol_word_ratio_ellipsis": "max_symbol_word_ratio",
}


def gopher_quality(texts: Sequence[str], **params: object) -> np.ndarray:
    """Gopher quality rules (Rae et al. 2021, appendix A; datatrove's GopherQualityFilter).

    Rules in evaluation order (reason code = position + 1). A threshold of
    None disables its rule; a ratio whose denominator is 0 is 0.

    1. ``min_words``: fewer words than this (words as :func:`.words.count_words`).
    2. ``max_words``: more words than this.
    3. ``min_mean_word_length``: mean characters per word below this.
    4. ``max_mean_word_length``: mean characters per word above this.
    5. ``max_symbol_word_ratio_hash``: ``text.count("#")`` / tokens above
       ``max_symbol_word_ratio`` (tokens: words and symbol tokens).
    6. ``max_symbol_word_ratio_ellipsis``: ``text.count("...") +
       text.count("…")`` / tokens above ``max_symbol_word_ratio``.
    7. ``max_bullet_lines_ratio``: fraction of lines (``str.splitlines``)
       that start with ``•`` or ``-`` after leading whitespace, above this.
    8. ``max_ellipsis_lines_ratio``: fraction of lines that end with ``...``
       or ``…`` before trailing whitespace, above this.
    9. ``min_alpha_words_ratio``: words with a letter / tokens below this.
    10. ``min_stop_words``: fewer distinct ``stop_words`` than this
        (case-sensitive, whole words).

    See the module docstring for where this differs from datatrove.

    Args:
        texts: Documents.
        **params: Every one of :data:`GOPHER_QUALITY_PARAMS`: ``min_words``,
            ``max_words``, ``min_mean_word_length``, ``max_mean_word_length``,
            ``max_symbol_word_ratio``, ``max_bullet_lines_ratio``,
            ``max_ellipsis_lines_ratio``, ``min_alpha_words_ratio``,
            ``min_stop_words`` and ``stop_words`` (a sequence of words). There
            are no defaults: the recipe's are in its schema (`[[data.filters]]`).

    Returns:
        int8 array: 0 for kept documents, else the code of the first failing
        rule in :data:`GOPHER_QUALITY_RULES`.

    Raises:
        TypeError: If a parameter name is unknown or a parameter is missing.
    """
    check_params(params, GOPHER_QUALITY_PARAMS, "gopher_quality")
    p = params
    stop_words = tuple(p["stop_words"] or ()) if p["min_stop_words"] is not None else ()
    counts = _quality_counts(texts, all_rules=True, stop_words=stop_words)
    words, tokens = counts["words"], counts["tokens"]
    mean_length = _ratio(counts["word_chars"], words)
    hashes = np.fromiter((t.count("#") for t in texts), np.int64, len(texts))
    ellipses = counts["ellipses"] + np.fromiter((t.count("…") for t in texts), np.int64, len(texts))
    fails = {
        "min_words": lambda v: words < v,
        "max_words": lambda v: words > v,
        "min_mean_word_length": lambda v: mean_length < v,
        "max_mean_word_length": lambda v: mean_length > v,
        "max_symbol_word_ratio_hash": lambda v: _ratio(hashes, tokens) > v,
        "max_symbol_word_ratio_ellipsis": lambda v: _ratio(ellipses, tokens) > v,
        "max_bullet_lines_ratio": lambda v: _ratio(counts["bullet_lines"], counts["lines"]) > v,
        "max_ellipsis_lines_ratio": lambda v: _ratio(counts["ellipsis_lines"], counts["lines"]) > v,
        "min_alpha_words_ratio": lambda v: _ratio(counts["alpha_words"], tokens) < v,
        "min_stop_words": lambda v: counts["stop_words"] < v,
    }
    checks = [(rule, p[_QUALITY_PARAMS.get(rule, rule)], fails[rule]) for rule in GOPHER_QUALITY_RULES]
    return first_failures(len(texts), GOPHER_QUALITY_RULES, checks)



class GopherQuality(DocumentFilter):
    """:func:`gopher_quality` with the recipe's thresholds; the rules in ``skip`` are not checked."""

    type = "gopher_quality"
    keys = (*GOPHER_QUALITY_PARAMS, "skip")
    rules = GOPHER_QUALITY_RULES

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        params = {k: self.settings[k] for k in GOPHER_QUALITY_PARAMS}
        params["stop_words"] = tuple(params["stop_words"])
        unknown = [rule for rule in self.settings["skip"] if rule not in GOPHER_QUALITY_PARAMS]
        if unknown:
            raise ValueError(f"gopher_quality filter: skip names unknown rules {unknown}")
        for rule in self.settings["skip"]:
            params[rule] = None
        self.params = params
        """:func:`gopher_quality`'s keyword arguments."""

    def verdicts(self, docs: Documents) -> np.ndarray:
        return gopher_quality(docs.texts, **self.params)
