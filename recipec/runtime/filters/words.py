"""Words of a text, in the two units the filters count, and the other text statistics.

*Quality tokens* (:func:`gopher_quality`, :func:`count_words`, the ``words``
unit of the length filter) approximate spaCy's English tokenizer, which
datatrove's ``GopherQualityFilter`` uses. They are exactly the matches of
:data:`QUALITY_TOKEN_PATTERN`::

    [^\\W_](?:(?:[^\\s\\-=.]|\\.(?!\\.))*[^\\W_])?|\\.\\.\\.|-+|[^\\w\\s]|_

Text is cut at whitespace, ``-``, ``=`` and runs of two or more dots; within
each piece the span from the first to the last letter or digit is one *word*
(punctuation inside it stays: ``U.S``, ``don't``, ``self.x[0``), and every
other non-space character is a one-character *symbol token*, except that
``...`` and a run of ``-`` are one token each. Only words are counted as
words; symbol tokens count among the tokens. The numpy implementation gives
the same counts as ``re.findall`` with this pattern (a test checks it on
random text). The quality rules' other statistics (lines, bullet and ellipsis
lines, stop words) are counted in the same pass.

*Dedup words* (:func:`gopher_repetition`'s n-grams, MinHash,
decontamination) are the runs of word characters of the lowercased text,
``re.findall(r"\\w+", text.lower())``: punctuation is dropped and case is
ignored, so formatting does not hide repetition or near duplicates. Hashes:
:func:`word_hashes` and :func:`shingle_hashes`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np

from .text import (
    _BYTE_BASE,
    _CAPITAL_SIGMA,
    _LENGTH_SALT,
    _U64,
    _WORD_BASE,
    _chunks,
    _count_by_position,
    _count_true,
    _fmix64,
    _join,
    _ranges,
    _replace_non_ascii,
    _runs,
    _sum_by_position,
)

QUALITY_TOKEN_PATTERN = r"[^\W_](?:(?:[^\s\-=.]|\.(?!\.))*[^\W_])?|\.\.\.|-+|[^\w\s]|_"


# --------------------------------------------------------------------------- quality tokens

# byte classes of the quality tokenizer (bit flags)
_PUNCT, _SPACE, _ALNUM, _DIGIT, _CONT, _SEP, _BREAK, _GLUE = 1, 2, 4, 8, 16, 32, 64, 128
# One-byte stand-ins for the two non-ASCII characters that the line rules look
# for. Line counts of a text that holds these control characters itself are
# done in Python (_line_counts).
_ELLIPSIS_BYTE, _BULLET_BYTE = 0x01, 0x02
_STAND_IN_CHARS = ("\x01", "\x02")


def _quality_classes() -> np.ndarray:
    """Class flags of each byte value of a :func:`_quality_bytes` buffer."""
    lut = np.zeros(256, np.uint8)
    for b in range(128):
        ch = chr(b)
        if ch.isspace():  # the same set as re's \s, \x1c-\x1f included
            lut[b] = _SPACE | _SEP
        elif ch.isalnum():
            lut[b] = _ALNUM | (_DIGIT if ch.isdigit() else 0)
        else:
            lut[b] = _PUNCT | _GLUE  # may sit inside a word: U.S, don't
    for ch in "-=":  # cut words like whitespace, and are symbol tokens
        lut[ord(ch)] = _PUNCT | _SEP
    for ch in "\n\r\x0b\x0c\x1c\x1d\x1e":  # line breaks of str.splitlines (non-ASCII ones become \x0b)
        lut[ord(ch)] |= _BREAK
    # after _quality_bytes every non-ASCII character left is a letter
    lut[0x80:0xC0] = _ALNUM | _CONT
    lut[0xC0:] = _ALNUM
    return lut


_QUALITY_CLASSES = _quality_classes()


@functools.lru_cache(maxsize=4096)
def _quality_stand_in(c: str) -> str | None:
    """ASCII stand-in of a non-ASCII character for the quality tokenizer (None: kept, a letter).

    Line breaks become ``\\x0b`` and other whitespace a space; ``…`` and
    ``•`` become the bytes ``\\x01`` and ``\\x02`` (symbols that the line
    rules look for); other non-word characters ``!``; digits (``\\d``) ``0``.
    """
    if c == "…":
        return "\x01"
    if c == "•":
        return "\x02"
    if c.isspace():
        return "\x0b" if len(f"a{c}b".splitlines()) == 2 else " "
    if not c.isalnum():
        return "!"
    return "0" if c.isdecimal() else None


def _quality_bytes(text: str) -> bytes:
    """UTF-8 of ``text`` with its non-ASCII characters other than letters
    replaced by one-byte stand-ins, so that byte classes decide tokens and lines."""
    if text.isascii():
        return text.encode()
    return _replace_non_ascii(text.encode("utf-8", "surrogatepass"), _quality_stand_in)


_TOKEN_KEYS = ("words", "tokens", "word_chars", "alpha_words", "ellipses")
_RULE_KEYS = ("stop_words", "lines", "bullet_lines", "ellipsis_lines")


def _quality_counts(
    texts: Sequence[str], all_rules: bool = False, stop_words: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Statistics of each text for the quality rules.

    Args:
        texts: Documents.
        all_rules: Also count stop words and lines, not only tokens.
        stop_words: Words to look for.

    Returns:
        int64 arrays, one entry per text: ``words`` and ``tokens`` (words and
        symbol tokens) of :data:`QUALITY_TOKEN_PATTERN`, ``word_chars``
        (characters in words), ``alpha_words`` (words with a letter),
        ``ellipses`` (``text.count("...")``); with ``all_rules`` also
        ``stop_words`` (how many of them occur as whole words,
        case-sensitive), ``lines`` (``len(text.splitlines())``),
        ``bullet_lines`` and ``ellipsis_lines``.
    """
    keys = _TOKEN_KEYS + _RULE_KEYS if all_rules else _TOKEN_KEYS
    parts = [_quality_counts_chunk(texts[lo:hi], all_rules, stop_words) for lo, hi in _chunks(texts)]
    if not parts:
        return {k: np.zeros(0, np.int64) for k in keys}
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def _quality_counts_chunk(texts: Sequence[str], all_rules: bool, stop_words: Sequence[str]) -> dict[str, np.ndarray]:
    buf, bounds = _join([_quality_bytes(t) for t in texts])
    cls = _QUALITY_CLASSES.take(buf)
    # a dot next to another dot cuts words, like whitespace
    dots = np.flatnonzero((buf[1:] == 46) & (buf[:-1] == 46))
    if dots.size:
        cls[dots] &= 0xFF ^ _GLUE
        cls[dots + 1] &= 0xFF ^ _GLUE
    # words: runs of letters/digits, joined by runs of punctuation that touch a run on both sides
    run_start, run_end = _runs((cls & _ALNUM) != 0)
    glue_start, glue_end = _runs((cls & _GLUE) != 0)
    glued = np.flatnonzero(((cls[glue_start - 1] & cls[glue_end]) & _ALNUM) != 0)
    glue_start, glue_end = glue_start[glued], glue_end[glued]
    glue_at = np.zeros(buf.size, bool)
    glue_at[glue_start] = True
    joined = np.zeros(run_start.size + 1, bool)  # joined[r]: run r continues the word of run r - 1
    joined[1:-1] = glue_at[run_end[:-1]]
    word_first = np.flatnonzero(~joined[:-1])  # first run of each word
    word_start = run_start[word_first]
    words = _count_by_position(word_start, bounds)
    glue_bytes = _sum_by_position(glue_end - glue_start, glue_start, bounds)
    word_chars = _sum_by_position(run_end - run_start, run_start, bounds) + glue_bytes
    if buf.max() >= 0x80:  # characters, not bytes
        word_chars -= _count_by_position(np.flatnonzero((cls & _CONT) != 0), bounds)
    # a word without a letter has only runs of digits
    digit_start, digit_end = _runs((cls & _DIGIT) != 0)
    whole = np.flatnonzero(((cls[digit_start - 1] | cls[digit_end]) & _ALNUM) == 0)
    digit_at = np.zeros(buf.size, bool)
    digit_at[digit_start[whole]] = True
    digit_runs = np.zeros(run_start.size + 1, np.int64)
    np.cumsum(digit_at[run_start], out=digit_runs[1:])
    word_next = np.append(word_first[1:], run_start.size)
    no_letter = digit_runs[word_next] - digit_runs[word_first] == word_next - word_first
    # symbol tokens: punctuation outside words; "..." and a run of "-" are one token
    punct = _count_true((cls & _PUNCT) != 0, bounds)
    dash_pairs = _count_by_position(np.flatnonzero((buf[1:] == 45) & (buf[:-1] == 45)), bounds)
    ellipses = np.fromiter((t.count("...") for t in texts), np.int64, len(texts))
    counts = {
        "words": words,
        "tokens": words + punct - glue_bytes - 2 * ellipses - dash_pairs,
        "word_chars": word_chars,
        "alpha_words": words - _count_by_position(word_start[no_letter], bounds),
        "ellipses": ellipses,
    }
    if all_rules:
        word_bytes = run_end[np.flatnonzero(~joined[1:])] - word_start
        counts["stop_words"] = _stop_word_counts(buf, bounds, word_start, word_bytes, stop_words)
        lines, bullets, ellipsis_lines = _line_stats(buf, bounds, cls, dots)
        for i, text in enumerate(texts):
            if any(c in text for c in _STAND_IN_CHARS):  # would be taken for "…" or "•"
                lines[i], bullets[i], ellipsis_lines[i] = _line_counts(text)
        counts.update(lines=lines, bullet_lines=bullets, ellipsis_lines=ellipsis_lines)
    return counts


def _line_stats(
    buf: np.ndarray, bounds: np.ndarray, cls: np.ndarray, dots: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lines, bullet lines, ellipsis lines)`` per document, over ``str.splitlines`` lines.

    A bullet line starts with ``-`` or ``•`` after leading whitespace; an
    ellipsis line ends with ``...`` or ``…`` before trailing whitespace.
    ``dots`` holds the positions ``i`` with ``buf[i] == buf[i + 1] == "."``.
    """
    breaks = np.flatnonzero((cls & _BREAK) != 0)
    # "\r\n" is one line break: a line starts after the "\n" only
    ends_line = breaks[(buf[breaks] != 13) | (buf[np.minimum(breaks + 1, buf.size - 1)] != 10)]
    starts = ends_line[:-1] + 1
    separators = bounds - 1
    at = np.minimum(np.searchsorted(separators, starts), separators.size - 1)
    starts = starts[separators[at] != starts]  # no line after a document's final line break
    blank = (cls & (_SPACE | _BREAK)) == _SPACE
    # a bullet line: the byte before the first non-blank "-" or "•" is a line break
    bullet = np.flatnonzero((buf == 45) | (buf == _BULLET_BYTE))
    bullet = bullet[(cls[_skip_blank(blank, bullet - 1, -1)] & _BREAK) != 0]
    # an ellipsis line: the byte after the last non-blank "..." or "…" is a line break
    triple = dots[1:][dots[1:] - dots[:-1] == 1] + 1
    ellipsis = np.union1d(np.flatnonzero(buf == _ELLIPSIS_BYTE), triple)
    ellipsis = ellipsis[(cls[_skip_blank(blank, ellipsis + 1, 1)] & _BREAK) != 0]
    return (
        _count_by_position(starts, bounds),
        _count_by_position(bullet, bounds),
        _count_by_position(ellipsis, bounds),
    )


def _skip_blank(blank: np.ndarray, pos: np.ndarray, step: int) -> np.ndarray:
    """From each position, the first one in direction ``step`` (+1 or -1) that is not blank.

    ``blank`` must be False at both ends of the buffer.
    """
    pos = pos.copy()
    moving = np.flatnonzero(blank[pos])
    for _ in range(64):  # indentation is short: step over it a byte at a time
        if not moving.size:
            return pos
        pos[moving] += step
        moving = moving[blank[pos[moving]]]
    # long blank runs: jump to the end of the run
    run_start, run_end = _runs(blank)
    if step > 0:
        pos[moving] = run_end[np.searchsorted(run_start, pos[moving], side="right") - 1]
    else:
        pos[moving] = run_start[np.searchsorted(run_end, pos[moving], side="left")] - 1
    return pos


_BULLET_LINE = re.compile(r"^[^\S\n]*[•\-]", re.MULTILINE)
_ELLIPSIS_LINE = re.compile(r"(?:\.\.\.|…)[^\S\n]*$", re.MULTILINE)


def _line_counts(text: str) -> tuple[int, int, int]:
    """:func:`_line_stats` of one text, in Python."""
    lines = text.splitlines()
    joined = "\n".join(lines)  # every line break is "\n" now
    return len(lines), len(_BULLET_LINE.findall(joined)), len(_ELLIPSIS_LINE.findall(joined))


def _stop_word_counts(
    buf: np.ndarray, bounds: np.ndarray, word_start: np.ndarray, word_bytes: np.ndarray, stop_words: Sequence[str]
) -> np.ndarray:
    """How many distinct ``stop_words`` occur as whole words in each document."""
    n_docs = len(bounds) - 1
    targets = [t for t in dict.fromkeys(map(_quality_bytes, stop_words)) if t]
    if not targets:
        return np.zeros(n_docs, np.int64)
    longest = max(map(len, targets))
    # the bytes of each word of a stop-word length, packed little-endian 8 to a uint64
    cand = np.flatnonzero(np.isin(word_bytes, [len(t) for t in targets]))
    start, size = word_start[cand], word_bytes[cand]
    docs = np.searchsorted(bounds, start, side="right") - 1
    packed = np.zeros(((longest + 7) // 8, cand.size), np.uint64)
    for j in range(longest):
        byte = buf.take(np.minimum(start + j, buf.size - 1)).astype(np.uint64)
        byte[size <= j] = 0
        packed[j // 8] |= byte << _U64(8 * (j % 8))
    found = np.zeros((n_docs, len(targets)), bool)
    for k, target in enumerate(targets):
        code = np.frombuffer(target + bytes(-len(target) % 8), "<u8").astype(np.uint64)
        hit = size == len(target)
        for row, value in zip(packed, code, strict=False):
            hit &= row == value
        found[docs[hit], k] = True
    return found.sum(axis=1).astype(np.int64)


def count_words(texts: Sequence[str]) -> np.ndarray:
    """Number of words in each text, as :func:`gopher_quality` counts them.

    Words are the word tokens of :data:`QUALITY_TOKEN_PATTERN` (tokens with a
    letter or digit; symbol tokens are not counted). This is the ``words``
    unit of the length filter.

    Args:
        texts: Documents.

    Returns:
        int64 array of word counts.
    """
    return _quality_counts(texts)["words"]



# --------------------------------------------------------------------------- dedup words

# bytes of dedup words; after _word_bytes every non-ASCII character left is a word character
_WORD_BYTE = np.array([chr(b).isalnum() or chr(b) == "_" or b >= 0x80 for b in range(256)])
_HORNER_BYTES = 32  # bytes of a word hashed by Horner steps; the rest of a longer word by a weighted sum
_byte_powers = np.ones(1, np.uint64)


def _powers(n: int) -> np.ndarray:
    """``_BYTE_BASE ** k`` mod 2**64 for ``k < n`` at least (cached, grown on demand)."""
    global _byte_powers
    if len(_byte_powers) < n:
        steps = np.full(max(n, 2 * len(_byte_powers), 64), _BYTE_BASE, np.uint64)
        steps[0] = 1
        _byte_powers = np.cumprod(steps, dtype=np.uint64)
    return _byte_powers


@functools.lru_cache(maxsize=4096)
def _word_stand_in(c: str) -> str | None:
    """``c.lower()`` with its non-word characters as spaces, for a non-ASCII ``c`` (None: unchanged)."""
    out = "".join(ch if ch.isalnum() else " " for ch in c.lower())
    return None if out == c else out


def _word_bytes(text: str) -> bytes:
    """UTF-8 of ``text.lower()`` with non-ASCII non-word characters replaced by spaces."""
    if text.isascii():
        return text.encode().lower()
    if _CAPITAL_SIGMA in text:
        text = text.lower()
    return _replace_non_ascii(text.encode("utf-8", "surrogatepass").lower(), _word_stand_in)


def _words(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dedup words of a batch: ``re.findall(r"\\w+", text.lower())`` of each text.

    Returns:
        ``(hashes, chars, offsets)``: uint64 :func:`word_hashes` and int64
        word lengths in characters of all texts one after the other, and
        int64 ``offsets`` such that text ``i`` owns words
        ``offsets[i]:offsets[i + 1]``.
    """
    parts = [_words_chunk(texts[lo:hi]) for lo, hi in _chunks(texts)]
    offsets = np.zeros(len(texts) + 1, np.int64)
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), offsets
    np.cumsum(np.concatenate([p[2] for p in parts]), out=offsets[1:])
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), offsets


def _words_chunk(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(hashes, chars, words per text)`` of a chunk, as :func:`_words`."""
    buf, bounds = _join([_word_bytes(t) for t in texts])
    is_word = _WORD_BYTE.take(buf)
    start, end = _runs(is_word)
    length = end - start
    hashes = _fmix64(_byte_polynomials(buf, start, length) + length.astype(np.uint64) * _LENGTH_SALT)
    chars = length
    if buf.max() >= 0x80:  # characters, not bytes
        cont = np.flatnonzero((buf & 0xC0) == 0x80)
        chars = length - (np.searchsorted(cont, end) - np.searchsorted(cont, start))
    return hashes, chars, _count_by_position(start, bounds)


def _byte_polynomials(buf: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """``sum(buf[s + j] * _BYTE_BASE ** (n - 1 - j) for j < n)`` mod 2**64 of each word ``s, n``.

    Horner's rule for all words at once, one byte position per step, with
    the words sorted longest first so that the words still going are a
    prefix. The bytes of a long word past ``_HORNER_BYTES`` are added as a
    weighted sum instead, so the number of steps stays bounded.
    """
    poly = np.zeros(start.size, np.uint64)
    if not start.size:
        return poly
    clipped = np.minimum(length, _HORNER_BYTES)
    order = np.argsort((_HORNER_BYTES - clipped).astype(np.uint8), kind="stable")
    first = start[order]
    going = start.size - np.cumsum(np.bincount(clipped, minlength=_HORNER_BYTES + 1))
    base = _U64(_BYTE_BASE)
    for j in range(int(clipped.max())):
        head = poly[: going[j]]
        head *= base
        head += buf.take(first[: going[j]] + j)
    poly[order] = poly.copy()
    long_words = np.flatnonzero(length > _HORNER_BYTES)
    if long_words.size:
        rest = length[long_words] - _HORNER_BYTES
        at = _ranges(start[long_words] + _HORNER_BYTES, rest)
        exponent = np.repeat(start[long_words] + length[long_words] - 1, rest) - at
        powers = _powers(int(rest.max()) + 1)
        tail = np.add.reduceat(powers.take(exponent) * buf.take(at), np.cumsum(rest) - rest)
        poly[long_words] = poly[long_words] * powers.take(rest) + tail
    return poly


def word_hashes(text: str) -> np.ndarray:
    """Hash of each dedup word of ``text``, in order.

    Words are ``re.findall(r"\\w+", text.lower())`` (letters, digits and
    ``_`` of any script). The hash of a word of UTF-8 bytes ``b[0..n-1]`` is
    ``fmix64(sum(b[j] * 0x100000001B3 ** (n - 1 - j)) + n *
    0xD6E8FEB86659FD93)``, all mod 2**64, ``fmix64`` being murmur3's 64-bit
    finaliser: the same in every process.

    Args:
        text: A document.

    Returns:
        uint64 array, one hash per word.
    """
    return _words([text])[0]


def _shingles(hashes: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shingle_hashes` of every document of a batch.

    Args:
        hashes: uint64 word hashes of all documents, one after the other.
        offsets: int64, document ``i`` owns ``hashes[offsets[i]:offsets[i + 1]]``.
        n: Words per shingle.

    Returns:
        ``(shingles, shingle_offsets)``: uint64 shingle hashes of all
        documents one after the other, and int64 offsets like ``offsets``.

    Raises:
        ValueError: If ``n`` is not an integer >= 1.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"the n-gram size must be an integer >= 1, got {n!r}")
    n = int(n)
    counts = np.diff(offsets)
    per_doc = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1))
    shingle_offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(per_doc, out=shingle_offsets[1:])
    out = np.empty(int(shingle_offsets[-1]), np.uint64)
    if not out.size:
        return out, shingle_offsets
    short = np.flatnonzero((counts > 0) & (counts < n))
    # poly[i]: polynomial of the k word hashes from i on, for k = 1, 2, ..., n
    poly = hashes
    for k in range(1, n + 1):
        if k > 1:
            poly = poly[:-1] * _WORD_BASE + hashes[k - 1 :]
        done = short[counts[short] == k]
        out[shingle_offsets[done]] = poly[offsets[done]]
    full = np.flatnonzero(counts >= n)
    if full.size:
        out[_ranges(shingle_offsets[full], per_doc[full])] = poly[_ranges(offsets[full], per_doc[full])]
    return _fmix64(out), shingle_offsets


def shingle_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of each run of ``n`` consecutive words.

    The hash of words ``w[i:i + n]`` is ``fmix64(sum(w[i + j] *
    0x9E3779B97F4A7C15 ** (n - 1 - j)))`` mod 2**64. A document with fewer
    than ``n`` words (but some) gives one shingle of all its words, hashed
    the same way; one without words gives none.

    Args:
        word_hashes: uint64 word hashes of one document (:func:`word_hashes`).
        n: Words per shingle, >= 1.

    Returns:
        uint64 array of ``max(len(word_hashes) - n + 1, 1)`` hashes (none for no words).

    Raises:
        ValueError: If ``n`` is not an integer >= 1.
    """
    hashes = np.asarray(word_hashes, np.uint64)
    return _shingles(hashes, np.array([0, hashes.size], np.int64), n)[0]

