"""`type = "gopher_repetition"`: the repetition heuristics of Gopher (Rae et al. 2021, table A1).

:func:`gopher_repetition` follows the paper's n-gram definitions rather than
datatrove 0.10.1's, and is stricter: on the 2,786 documents of :mod:`.quality`'s
comparison it makes datatrove's keep/drop decision for 63 % of the Python files,
62 % of the markdown and 78 % of the prose. Where it differs from datatrove:

* n-gram ratios follow Rae et al. (2021): the denominator is the number of
  characters in the document's dedup words (datatrove: ``len(text)``); an
  n-gram's characters are those of its words (datatrove counts the spaces
  of the top n-gram); and the duplicate n-gram fraction counts every word
  character covered by an n-gram that occurs more than once, first
  occurrence included, each character once. datatrove walks the words
  once, counts only later occurrences and skips ``n`` words after each, so
  its fractions are lower (about half for a passage repeated twice).
* The top n-gram is the most frequent n-gram among those occurring at least
  twice (ties: the one with more characters); a document whose n-grams are
  all distinct has a top n-gram fraction of 0. datatrove takes the first
  most common n-gram even when it occurs once, which matters only for texts
  of a few words.
* Words are dedup words (:mod:`.words`: lowercased, punctuation dropped), not spaCy tokens.
* Lines are the non-empty pieces of ``re.split("\\n+", text)``: datatrove
  keeps the empty first and last piece of a text that starts and ends with a
  newline, and then counts the second as a duplicate line.
* An empty text passes (datatrove drops it as ``empty``): nothing in it
  repeats, and the length and quality filters remove it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .base import DocumentFilter, Documents, check_params, first_failures
from .text import _DOC_SALT, _U64, _WORD_BASE, _chunks, _fmix64, _ratio, _segment_sums, _sum_by_position
from .words import _words_chunk

# n-gram sizes with a reason code of their own; larger sizes share one per kind
NAMED_NGRAM_SIZES = tuple(range(1, 11))

# Reason code k of gopher_repetition is GOPHER_REPETITION_RULES[k - 1]. The
# n-gram rules come from the two dict parameters: one rule per size up to 10,
# and one for all larger sizes of each kind.
GOPHER_REPETITION_RULES: tuple[str, ...] = (
    "max_dup_para_ratio",
    "max_dup_para_char_ratio",
    "max_dup_line_ratio",
    "max_dup_line_char_ratio",
    *(f"max_top_{n}gram_char_ratio" for n in NAMED_NGRAM_SIZES),
    *(f"max_dup_{n}gram_char_ratio" for n in NAMED_NGRAM_SIZES),
    "max_top_ngram_char_ratio",
    "max_dup_ngram_char_ratio",
)

GOPHER_REPETITION_PARAMS: tuple[str, ...] = (
    "max_dup_para_ratio",
    "max_dup_para_char_ratio",
    "max_dup_line_ratio",
    "max_dup_line_char_ratio",
    "max_top_ngram_char_ratios",
    "max_dup_ngram_char_ratios",
)
"""The parameters of :func:`gopher_repetition`: a threshold per rule, or per n-gram size."""



def _duplicates(pieces: list[str], chars: int) -> tuple[int, int, int]:
    """``(non-empty pieces, pieces equal to an earlier piece, characters in those)``.

    ``chars`` is the number of characters in all ``pieces``.
    """
    unique = set(pieces)
    empty = "" in unique
    count = len(pieces) - pieces.count("") if empty else len(pieces)
    repeated = count - len(unique) + empty
    if not repeated:
        return count, 0, 0
    return count, repeated, chars - sum(map(len, unique))


def _line_paragraph_stats(text: str) -> tuple[int, int, int, int, int, int]:
    """``(paragraphs, duplicate paragraphs, their characters, lines, duplicate lines, their characters)``.

    Paragraphs are the non-empty pieces of ``re.split("\\n{2,}", text.strip())``
    and lines those of ``re.split("\\n+", text)``, computed with ``str.split``.
    """
    body = text.strip()
    paragraphs = body.split("\n\n")
    chars = len(body) - 2 * (len(paragraphs) - 1)
    if "\n\n\n" in body:  # pieces after an odd run of newlines start with one
        paragraphs = [p.lstrip("\n") for p in paragraphs]
        chars = sum(map(len, paragraphs))
    lines = text.split("\n")
    return (*_duplicates(paragraphs, chars), *_duplicates(lines, len(text) - len(lines) + 1))


def _occurrences(keys: np.ndarray) -> np.ndarray:
    """For each element of uint64 ``keys``, how many elements equal it (int64).

    Sorts the keys with their positions packed into the low bits (a plain
    sort is several times faster than ``argsort``); if two different keys
    share the kept high bits, which is rare, it falls back to ``argsort``.
    """
    size = keys.size
    bits = max(int(size - 1).bit_length(), 1)
    if size < 2 or bits > 32:
        return _occurrences_argsort(keys)
    packed = keys >> _U64(bits) << _U64(bits)
    packed |= np.arange(size, dtype=np.uint64)
    packed.sort()
    order = (packed & _U64((1 << bits) - 1)).astype(np.int64)
    ordered = keys[order]
    new = np.empty(size + 1, bool)
    new[0] = new[-1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:-1])
    high = packed >> _U64(bits)
    if (new[1:-1] & (high[1:] == high[:-1])).any():  # equal high bits, different keys
        return _occurrences_argsort(keys)
    run_length = np.diff(np.flatnonzero(new))
    counts = np.empty(size, np.int64)
    counts[order] = np.repeat(run_length, run_length)
    return counts


def _occurrences_argsort(keys: np.ndarray) -> np.ndarray:
    """:func:`_occurrences` by ``argsort``."""
    order = np.argsort(keys)
    ordered = keys[order]
    new = np.empty(keys.size + 1, bool)
    new[0] = new[-1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:-1])
    run_length = np.diff(np.flatnonzero(new))
    counts = np.empty(keys.size, np.int64)
    counts[order] = np.repeat(run_length, run_length)
    return counts


def _ngram_repetition(
    hashes: np.ndarray, chars: np.ndarray, offsets: np.ndarray, top_sizes: set[int], dup_sizes: set[int]
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Characters in the top n-gram and in duplicated n-grams of each document.

    n-grams are counted within documents (the word hashes get a
    per-document salt). An n-gram can repeat only where both of its (n-1)-grams repeat,
    so after the bigrams only those positions are hashed and counted.

    Args:
        hashes: uint64 word hashes of all documents, one after the other.
        chars: int64 characters of each word.
        offsets: int64, document ``i`` owns words ``offsets[i]:offsets[i + 1]``.
        top_sizes: n-gram sizes whose top n-gram to measure.
        dup_sizes: n-gram sizes whose duplicate coverage to measure.

    Returns:
        ``(top, dup)``: for each requested size, int64 per document. ``top[n]``
        is count x characters of the most frequent n-gram occurring at least
        twice (ties: more characters), 0 if none; ``dup[n]`` is the number of
        word characters covered by n-grams occurring at least twice.
    """
    n_docs = len(offsets) - 1
    top = {n: np.zeros(n_docs, np.int64) for n in top_sizes}
    dup = {n: np.zeros(n_docs, np.int64) for n in dup_sizes}
    largest = max(top_sizes | dup_sizes, default=0)
    m = hashes.size
    if not m:
        return top, dup
    # salted word hashes: the n-grams of different documents differ
    salted = hashes + np.repeat(_fmix64(np.arange(n_docs, dtype=np.uint64) + _DOC_SALT), np.diff(offsets))
    char_total = np.zeros(m + 1, np.int64)
    np.cumsum(chars, out=char_total[1:])
    last_words = offsets[1:] - 1
    bigram = np.ones(m, bool)
    bigram[last_words[last_words >= 0]] = False  # a document's last word starts no bigram
    smallest = min(top_sizes | dup_sizes, default=2)
    pos = np.arange(m) if smallest == 1 else np.flatnonzero(bigram[:-1])
    poly = salted if smallest == 1 else salted[pos] * _WORD_BASE + salted[pos + 1]
    for n in range(min(smallest, 2), largest + 1):
        if n > min(smallest, 2):
            # both (n-1)-grams repeat: positions i and i + 1 are both in pos (and in one document)
            step = np.flatnonzero((pos[1:] == pos[:-1] + 1) & bigram[pos[:-1]])
            pos = pos[step]
            poly = poly[step] * _WORD_BASE + salted[pos + n - 1]
        count = _occurrences(poly)
        hit = np.flatnonzero(count >= 2)
        pos, poly, count = pos[hit], poly[hit], count[hit]
        if not pos.size:
            break
        if n in top:
            # best (count, characters) per document; pos is sorted, so documents are grouped
            score = count * (1 << 32) + (char_total[pos + n] - char_total[pos])
            pos_doc = np.searchsorted(offsets, pos, side="right") - 1
            first = np.flatnonzero(np.diff(pos_doc, prepend=-1))
            best = np.maximum.reduceat(score, first)
            top[n][pos_doc[first]] = (best >> 32) * (best & 0xFFFFFFFF)
        if n in dup:
            # union of the intervals [p, p + n): each adds the words before the next one starts
            end = np.minimum(pos + n, np.append(pos[1:], m))
            dup[n] = _sum_by_position(char_total[end] - char_total[pos], pos, offsets)
    return top, dup


def _ngram_stats(
    texts: Sequence[str], top_sizes: set[int], dup_sizes: set[int]
) -> tuple[np.ndarray, dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Word characters of each text and its :func:`_ngram_repetition`, a chunk at a time."""
    parts = []
    for lo, hi in _chunks(texts):
        hashes, chars, counts = _words_chunk(texts[lo:hi])
        offsets = np.zeros(hi - lo + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        top, dup = _ngram_repetition(hashes, chars, offsets, top_sizes, dup_sizes)
        parts.append((_segment_sums(chars, offsets), top, dup))
    if not parts:
        empty = np.zeros(0, np.int64)
        return empty, dict.fromkeys(top_sizes, empty), dict.fromkeys(dup_sizes, empty)
    word_chars = np.concatenate([p[0] for p in parts])
    top = {n: np.concatenate([p[1][n] for p in parts]) for n in top_sizes}
    dup = {n: np.concatenate([p[2][n] for p in parts]) for n in dup_sizes}
    return word_chars, top, dup


def _ngram_thresholds(value: object, name: str) -> dict[int, float]:
    """The ``{n: ratio}`` thresholds of an n-gram parameter, without the disabled (None) ones."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict of n-gram size to ratio, or None; got {value!r}")
    bad = [n for n in value if isinstance(n, bool) or not isinstance(n, int) or n < 1]
    if bad:
        raise ValueError(f"{name}: n-gram sizes must be integers >= 1, got {bad}")
    return {n: r for n, r in sorted(value.items()) if r is not None}


def gopher_repetition(texts: Sequence[str], **params: object) -> np.ndarray:
    """Gopher repetition heuristics (Rae et al. 2021, table A1; datatrove's GopherRepetitionFilter).

    Rules in evaluation order, which is the order of
    :data:`GOPHER_REPETITION_RULES` (reason code = position + 1). A ratio
    above its threshold fails; a threshold of None disables its rule; a
    ratio whose denominator is 0 is 0.

    1. ``max_dup_para_ratio``: paragraphs (non-empty pieces of
       ``re.split("\\n{2,}", text.strip())``) equal to an earlier one, over
       paragraphs.
    2. ``max_dup_para_char_ratio``: characters in those paragraphs over ``len(text)``.
    3. ``max_dup_line_ratio``: lines (non-empty pieces of ``re.split("\\n+",
       text)``) equal to an earlier one, over lines.
    4. ``max_dup_line_char_ratio``: characters in those lines over ``len(text)``.
    5. ``max_top_{n}gram_char_ratio`` for each size ``n`` of
       ``max_top_ngram_char_ratios`` (1 to 10, ascending): characters of the
       most frequent word n-gram that occurs at least twice (ties: the one
       with more characters) times its count, over all word characters.
    6. ``max_dup_{n}gram_char_ratio`` for each size ``n`` of
       ``max_dup_ngram_char_ratios`` (1 to 10, ascending): word characters
       covered by n-grams that occur at least twice (each character once),
       over all word characters.
    7. ``max_top_ngram_char_ratio``, then ``max_dup_ngram_char_ratio``: the
       same for sizes above 10, which share one code per kind.

    Words are the dedup words of :mod:`.words` (lowercased ``\\w+``
    runs), and an n-gram's characters are those of its words. See the module
    docstring for where this differs from datatrove.

    Args:
        texts: Documents.
        **params: Every one of :data:`GOPHER_REPETITION_PARAMS`:
            ``max_dup_para_ratio``, ``max_dup_para_char_ratio``,
            ``max_dup_line_ratio``, ``max_dup_line_char_ratio``, and the dicts
            ``max_top_ngram_char_ratios`` and ``max_dup_ngram_char_ratios``
            from an int n-gram size (>= 1) to its threshold: sizes left out or
            mapped to None are not checked, and None for the dict disables all
            its rules. There are no defaults: the recipe's are in its schema.

    Returns:
        int8 array: 0 for kept documents, else the code of the first failing
        rule in :data:`GOPHER_REPETITION_RULES`.

    Raises:
        TypeError: If a parameter name is unknown, a parameter is missing or an
            n-gram parameter is not a dict.
        ValueError: If an n-gram size is not an integer >= 1.
    """
    check_params(params, GOPHER_REPETITION_PARAMS, "gopher_repetition")
    p = params
    top_limits = _ngram_thresholds(p["max_top_ngram_char_ratios"], "max_top_ngram_char_ratios")
    dup_limits = _ngram_thresholds(p["max_dup_ngram_char_ratios"], "max_dup_ngram_char_ratios")
    n = len(texts)
    stats = np.array([_line_paragraph_stats(t) for t in texts], np.int64).reshape(n, 6)
    text_chars = np.fromiter(map(len, texts), np.int64, n)
    checks = [
        ("max_dup_para_ratio", p["max_dup_para_ratio"], lambda v: _ratio(stats[:, 1], stats[:, 0]) > v),
        ("max_dup_para_char_ratio", p["max_dup_para_char_ratio"], lambda v: _ratio(stats[:, 2], text_chars) > v),
        ("max_dup_line_ratio", p["max_dup_line_ratio"], lambda v: _ratio(stats[:, 4], stats[:, 3]) > v),
        ("max_dup_line_char_ratio", p["max_dup_line_char_ratio"], lambda v: _ratio(stats[:, 5], text_chars) > v),
    ]
    top, dup = {}, {}
    if top_limits or dup_limits:
        word_chars, top, dup = _ngram_stats(texts, set(top_limits), set(dup_limits))
    # in the order of GOPHER_REPETITION_RULES: named sizes (top, then dup), then larger sizes
    for named in (True, False):
        for kind, limits, covered in (("top", top_limits, top), ("dup", dup_limits, dup)):
            for size, limit in limits.items():
                if (size in NAMED_NGRAM_SIZES) == named:
                    rule = f"max_{kind}_{size if named else 'n'}gram_char_ratio"
                    checks.append((rule, limit, lambda v, c=covered[size]: _ratio(c, word_chars) > v))
    return first_failures(n, GOPHER_REPETITION_RULES, checks)



class GopherRepetition(DocumentFilter):
    """:func:`gopher_repetition` with the recipe's thresholds; the rules in ``skip`` are not checked.

    The recipe gives the n-gram thresholds as ``[n, ratio]`` pairs (TOML has no
    integer keys); they become ``{n: ratio}``.
    """

    type = "gopher_repetition"
    keys = (*GOPHER_REPETITION_PARAMS, "skip")
    rules = GOPHER_REPETITION_RULES

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        params = {k: self.settings[k] for k in GOPHER_REPETITION_PARAMS}
        for key in ("max_top_ngram_char_ratios", "max_dup_ngram_char_ratios"):
            params[key] = {int(n): float(r) for n, r in params[key]}
        unknown = [rule for rule in self.settings["skip"] if rule not in GOPHER_REPETITION_PARAMS]
        if unknown:
            raise ValueError(f"gopher_repetition filter: skip names unknown rules {unknown}")
        for rule in self.settings["skip"]:
            params[rule] = None
        self.params = params
        """:func:`gopher_repetition`'s keyword arguments."""

    def verdicts(self, docs: Documents) -> np.ndarray:
        return gopher_repetition(docs.texts, **self.params)
