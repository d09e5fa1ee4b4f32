"""Byte buffers of document batches: the numpy machinery every filter's statistics run on.

A batch is encoded to UTF-8 and joined into one byte buffer, about
``_CHUNK_CHARS`` characters at a time; words, tokens, lines and n-grams are
then found with whole-buffer numpy operations (byte-class tables, run
boundaries, sorts), so no Python code runs per word. Per document there are
only C-level ``str``/``bytes`` calls (``encode``, ``count``, ``split``). Non-ASCII
text is mapped to the ASCII byte classes by replacing the few distinct
non-ASCII characters a document holds (:func:`_replace_non_ascii`).
``benchmarks/filters_speed.py`` measures the throughput.

Hashing is fixed-constant uint64 arithmetic (the constants below) or xxhash,
never Python's per-process randomised ``hash()``, so every process gets the
same results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

# Batches are processed this many characters at a time: the temporary arrays
# (a few dozen bytes per character) stay small and mostly in cache.
_CHUNK_CHARS = 1 << 21

_U64 = np.uint64
_MIX_SHIFT = _U64(33)
_MIX_1 = _U64(0xFF51AFD7ED558CCD)
_MIX_2 = _U64(0xC4CEB9FE1A85EC53)
_BYTE_BASE = 0x100000001B3  # polynomial base of word bytes
_WORD_BASE = _U64(0x9E3779B97F4A7C15)  # polynomial base of word hashes (n-grams, LSH bands)
_LENGTH_SALT = _U64(0xD6E8FEB86659FD93)
_DOC_SALT = _U64(0xA0761D6478BD642F)
_BAND_SALT = _U64(0x8EBC6AF09C88C6E3)


def _fmix64(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser of each element of a uint64 array (a new array)."""
    x = x ^ (x >> _MIX_SHIFT)
    x *= _MIX_1
    x ^= x >> _MIX_SHIFT
    x *= _MIX_2
    x ^= x >> _MIX_SHIFT
    return x


def _chunks(texts: Sequence[str]) -> Iterator[tuple[int, int]]:
    """Consecutive index ranges of ``texts`` of about ``_CHUNK_CHARS`` characters (at least one text each)."""
    lo, size = 0, 0
    for i, text in enumerate(texts):
        if size and size + len(text) > _CHUNK_CHARS:
            yield lo, i
            lo, size = i, 0
        size += len(text)
    if lo < len(texts):
        yield lo, len(texts)


def _join(encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 buffer ``\\n doc0 \\n doc1 \\n ... \\n`` and the document bounds.

    Returns:
        ``(buf, bounds)``: document ``i`` is ``buf[bounds[i]:bounds[i + 1] - 1]``;
        ``bounds`` is int64 of length ``len(encoded) + 1``.
    """
    buf = np.frombuffer(b"\n" + b"\n".join(encoded) + b"\n", np.uint8)
    bounds = np.empty(len(encoded) + 1, np.int64)
    bounds[0] = 1
    np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)) + 1, out=bounds[1:])
    bounds[1:] += 1
    return buf, bounds


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends of the runs of True in a bool mask whose first and last entries are False."""
    # nonzero of a bool array is several times faster than of an int8 diff
    edges = np.flatnonzero(mask[1:] != mask[:-1])
    return edges[0::2] + 1, edges[1::2] + 1


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + k)`` for each ``s, k`` of ``starts, lengths`` (int64)."""
    before = np.cumsum(lengths) - lengths
    return np.repeat(starts - before, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def _segment_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sums of ``values[offsets[i]:offsets[i + 1]]`` for each ``i`` (int64; 0 for empty segments)."""
    total = np.zeros(len(values) + 1, np.int64)
    np.cumsum(values, out=total[1:])
    return total[offsets[1:]] - total[offsets[:-1]]


def _sum_by_position(values: np.ndarray, positions: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Per-document sums of ``values`` found at sorted ``positions`` (``bounds`` as from :func:`_join`)."""
    return _segment_sums(values, np.searchsorted(positions, bounds))


def _count_by_position(positions: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Per-document number of sorted ``positions``."""
    return np.diff(np.searchsorted(positions, bounds))


def _count_true(mask: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Per-document number of True entries of a bool mask over the buffer."""
    lo, hi = bounds[:-1].tolist(), bounds[1:].tolist()
    return np.fromiter(map(np.count_nonzero, map(mask.__getitem__, map(slice, lo, hi))), np.int64, len(lo))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` as float64, 0 where ``den`` is 0."""
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


_ASCII = bytes(range(128))
_CAPITAL_SIGMA = "\u03a3"  # the one character that str.lower maps by its context (final sigma)


def _replace_non_ascii(data: bytes, stand_in: Callable[[str], str | None]) -> bytes:
    """UTF-8 ``data`` with each non-ASCII character ``c`` replaced by ``stand_in(c)`` (None: kept).

    Only the distinct non-ASCII characters of the text are classified, and
    each one to change is replaced with ``bytes.replace`` (a UTF-8 sequence
    cannot match across character boundaries). A document holds few
    distinct non-ASCII characters, and this is several times faster than a
    regular expression or ``str.translate`` over the whole text.
    """
    present = set(data.translate(None, _ASCII).decode("utf-8", "surrogatepass"))
    table = {c: r for c in present if (r := stand_in(c)) is not None}
    # one replacement at a time equals all at once unless a result holds a replaced character
    if len(table) > 16 or any(c in r for r in table.values() for c in table):
        text = data.decode("utf-8", "surrogatepass").translate(str.maketrans(table))
        return text.encode("utf-8", "surrogatepass")
    for c, r in table.items():
        data = data.replace(c.encode("utf-8", "surrogatepass"), r.encode("utf-8", "surrogatepass"))
    return data

