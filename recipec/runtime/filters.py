"""Document filters of the data stage: length, regex, Gopher heuristics, dedup, decontamination.

Worker processes call the batch functions here on a ``list[str]`` and send
back small arrays (word counts, reason codes, digests, signatures); the main
process then applies the filter chain in stream order, with
:class:`ExactDedupIndex` and :class:`NearDedupIndex` remembering what it
kept. Everything is deterministic across processes, runs and batchings:
hashing is xxhash or fixed-constant uint64 arithmetic, never Python's
per-process randomised ``hash()``, and a document's results do not depend
on the other documents of its batch (barring 64-bit hash collisions). Imports: the standard library, numpy
and xxhash only (this package is copied into every build).

Speed
-----
A batch is encoded to UTF-8 and joined into one byte buffer, about
``_CHUNK_CHARS`` characters at a time; words, tokens, lines and n-grams are
then found with whole-buffer numpy operations (byte-class tables, run
boundaries, sorts), so no Python code runs per word. Per document there are
only C-level ``str``/``bytes`` calls (``encode``, ``count``, ``split``). Non-ASCII
text is mapped to the ASCII byte classes by replacing the few distinct
non-ASCII characters a document holds (``_replace_non_ascii``).
``benchmarks/filters_speed.py`` measures the throughput.

Two word units
--------------
*Quality tokens* (:func:`gopher_quality`, :func:`count_words`) approximate
spaCy's English tokenizer, which datatrove's ``GopherQualityFilter`` uses.
They are exactly the matches of :data:`QUALITY_TOKEN_PATTERN`::

    [^\\W_](?:(?:[^\\s\\-=.]|\\.(?!\\.))*[^\\W_])?|\\.\\.\\.|-+|[^\\w\\s]|_

Text is cut at whitespace, ``-``, ``=`` and runs of two or more dots; within
each piece the span from the first to the last letter or digit is one *word*
(punctuation inside it stays: ``U.S``, ``don't``, ``self.x[0``), and every
other non-space character is a one-character *symbol token*, except that
``...`` and a run of ``-`` are one token each. The numpy implementation gives
the same counts as ``re.findall`` with this pattern (a test checks it on
random text).

*Dedup words* (:func:`gopher_repetition`'s n-grams, MinHash,
decontamination) are the runs of word characters of the lowercased text,
``re.findall(r"\\w+", text.lower())``: punctuation is dropped and case is
ignored, so formatting does not hide repetition or near duplicates. Hashes:
:func:`word_hashes` and :func:`shingle_hashes`.

Differences from datatrove 0.10.1
---------------------------------
Measured against datatrove with spaCy on 2,786 documents (2,355 Python
files from site-packages, 140 markdown and text files, 291 pieces of the
Python docs and license texts): :func:`gopher_quality` gives datatrove's
decision (the same failing rule, or kept) for 97.7 % of the Python files,
99.3 % of the markdown and 99.0 % of the prose, and the same keep/drop
decision for 100 %, 100 % and 99.0 %. :func:`gopher_repetition` follows the
paper's n-gram definitions instead, and is stricter: it makes datatrove's
keep/drop decision for 63 %, 62 % and 78 % of them.

:func:`gopher_quality`:

* Tokens are the quality tokens above, not spaCy's (datatrove's two Gopher
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

:func:`gopher_repetition`:

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
* Words are dedup words (lowercased, punctuation dropped), not spaCy tokens.
* Lines are the non-empty pieces of ``re.split("\\n+", text)``: datatrove
  keeps the empty first and last piece of a text that starts and ends with a
  newline, and then counts the second as a duplicate line.
* An empty text passes (datatrove drops it as ``empty``): nothing in it
  repeats, and the length and quality filters remove it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import xxhash

__all__ = [
    "GOPHER_QUALITY_DEFAULTS",
    "GOPHER_QUALITY_RULES",
    "GOPHER_REPETITION_DEFAULTS",
    "GOPHER_REPETITION_RULES",
    "NAMED_NGRAM_SIZES",
    "QUALITY_TOKEN_PATTERN",
    "STOP_WORDS",
    "ExactDedupIndex",
    "NearDedupIndex",
    "contaminated",
    "count_words",
    "exact_keys",
    "gopher_quality",
    "gopher_repetition",
    "length_keep",
    "lsh_band_keys",
    "minhash_signatures",
    "ngram_set",
    "normalize_for_dedup",
    "regex_keep",
    "shingle_hashes",
    "word_hashes",
]

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")

GOPHER_QUALITY_DEFAULTS: dict[str, object] = {
    "min_words": 50,
    "max_words": 100_000,
    "min_mean_word_length": 3,
    "max_mean_word_length": 10,
    "max_symbol_word_ratio": 0.1,
    "max_bullet_lines_ratio": 0.9,
    "max_ellipsis_lines_ratio": 0.3,
    "min_alpha_words_ratio": 0.8,
    "min_stop_words": 2,
    "stop_words": STOP_WORDS,
}

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

# n-gram sizes with a reason code of their own; larger sizes share one per kind
NAMED_NGRAM_SIZES = tuple(range(1, 11))

GOPHER_REPETITION_DEFAULTS: dict[str, object] = {
    "max_dup_para_ratio": 0.3,
    "max_dup_para_char_ratio": 0.2,
    "max_dup_line_ratio": 0.3,
    "max_dup_line_char_ratio": 0.2,
    "max_top_ngram_char_ratios": {2: 0.2, 3: 0.18, 4: 0.16},
    "max_dup_ngram_char_ratios": {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
}

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

QUALITY_TOKEN_PATTERN = r"[^\W_](?:(?:[^\s\-=.]|\.(?!\.))*[^\W_])?|\.\.\.|-+|[^\w\s]|_"

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


# --------------------------------------------------------------------------- helpers


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


def _merge_params(defaults: dict[str, object], params: dict[str, object], where: str) -> dict[str, object]:
    """``defaults`` updated with ``params``; unknown names raise TypeError."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise TypeError(f"{where}() got unknown parameters {unknown}; known: {sorted(defaults)}")
    return {**defaults, **params}


def _first_failures(
    n: int, rules: tuple[str, ...], checks: list[tuple[str, object, Callable[[object], np.ndarray]]]
) -> np.ndarray:
    """int8 reason codes from ``(rule, threshold, fails)`` checks in evaluation order.

    A document gets the code of ``rules`` (index + 1) of the first check it
    fails; checks whose threshold is None are skipped.
    """
    codes = np.zeros(n, np.int8)
    for rule, threshold, fails in checks:
        if threshold is not None:
            codes[(codes == 0) & fails(threshold)] = rules.index(rule) + 1
    return codes


# --------------------------------------------------------------------------- length and regex


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


@functools.lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...], ignore_case: bool) -> tuple[re.Pattern, ...]:
    flags = re.IGNORECASE if ignore_case else 0
    return tuple(re.compile(p, flags) for p in patterns)


def regex_keep(
    texts: Sequence[str], include: Sequence[str], exclude: Sequence[str], ignore_case: bool = False
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


# --------------------------------------------------------------------------- quality

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


# the parameter that holds a rule's threshold, where the names differ
_QUALITY_PARAMS = {
    "max_symbol_word_ratio_hash": "max_symbol_word_ratio",
    "max_symbol_word_ratio_ellipsis": "max_symbol_word_ratio",
}


def gopher_quality(texts: Sequence[str], **params: object) -> np.ndarray:
    """Gopher quality rules (Rae et al. 2021, appendix A; datatrove's GopherQualityFilter).

    Rules in evaluation order (reason code = position + 1). A threshold of
    None disables its rule; a ratio whose denominator is 0 is 0.

    1. ``min_words``: fewer words than this (words as :func:`count_words`).
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
        **params: Overrides of :data:`GOPHER_QUALITY_DEFAULTS`: ``min_words``,
            ``max_words``, ``min_mean_word_length``, ``max_mean_word_length``,
            ``max_symbol_word_ratio``, ``max_bullet_lines_ratio``,
            ``max_ellipsis_lines_ratio``, ``min_alpha_words_ratio``,
            ``min_stop_words`` and ``stop_words`` (a sequence of words).

    Returns:
        int8 array: 0 for kept documents, else the code of the first failing
        rule in :data:`GOPHER_QUALITY_RULES`.

    Raises:
        TypeError: If a parameter name is unknown.
    """
    p = _merge_params(GOPHER_QUALITY_DEFAULTS, params, "gopher_quality")
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
    return _first_failures(len(texts), GOPHER_QUALITY_RULES, checks)


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


# --------------------------------------------------------------------------- repetition


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

    Words are the dedup words of the module docstring (lowercased ``\\w+``
    runs), and an n-gram's characters are those of its words. See the module
    docstring for where this differs from datatrove.

    Args:
        texts: Documents.
        **params: Overrides of :data:`GOPHER_REPETITION_DEFAULTS`:
            ``max_dup_para_ratio``, ``max_dup_para_char_ratio``,
            ``max_dup_line_ratio``, ``max_dup_line_char_ratio``, and the dicts
            ``max_top_ngram_char_ratios`` and ``max_dup_ngram_char_ratios``
            from an int n-gram size (>= 1) to its threshold. A dict replaces
            the default dict whole: sizes left out or mapped to None are not
            checked, and None for the dict disables all its rules.

    Returns:
        int8 array: 0 for kept documents, else the code of the first failing
        rule in :data:`GOPHER_REPETITION_RULES`.

    Raises:
        TypeError: If a parameter name is unknown or an n-gram parameter is
            not a dict.
        ValueError: If an n-gram size is not an integer >= 1.
    """
    p = _merge_params(GOPHER_REPETITION_DEFAULTS, params, "gopher_repetition")
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
    return _first_failures(n, GOPHER_REPETITION_RULES, checks)


# --------------------------------------------------------------------------- exact dedup

_NOT_WORD_OR_SPACE = re.compile(r"[^\w\s]+|_+")
_ASCII_LOWER = bytes.maketrans(
    bytes(range(ord("A"), ord("Z") + 1)) + bytes(range(0x1C, 0x20)),
    bytes(range(ord("a"), ord("z") + 1)) + b" " * 4,
)
_ASCII_DROP = bytes(b for b in range(128) if not (chr(b).isalnum() or chr(b).isspace()))


def normalize_for_dedup(text: str) -> str:
    """The text exact dedup compares: lowercase, no punctuation, single spaces.

    Exactly ``" ".join(re.sub(r"[^\\w\\s]|_", "", text.lower()).split())``:
    ``str.lower``, then every character that is neither a word character
    (letter, digit) nor whitespace is deleted (punctuation, symbols, ``_``,
    control characters, combining marks), then runs of whitespace become one
    space and the ends are stripped. No Unicode normalisation (NFKC) is done.

    Args:
        text: A document.

    Returns:
        The normalised text.
    """
    return " ".join(_NOT_WORD_OR_SPACE.sub("", text.lower()).split())


@functools.lru_cache(maxsize=4096)
def _normalized_stand_in(c: str) -> str | None:
    """``c.lower()`` without non-word characters and with whitespace as spaces,
    for a non-ASCII character ``c`` (None: unchanged)."""
    out = "".join(" " if ch.isspace() else ch for ch in c.lower() if ch.isalnum() or ch.isspace())
    return None if out == c else out


def _normalized_bytes(text: str) -> bytes:
    """UTF-8 of :func:`normalize_for_dedup`, by byte translation (ASCII) and
    per-character replacement (the few distinct non-ASCII characters)."""
    if _CAPITAL_SIGMA in text:
        text = text.lower()
    data = text.encode("utf-8", "surrogatepass").translate(_ASCII_LOWER, _ASCII_DROP)
    if not text.isascii():
        data = _replace_non_ascii(data, _normalized_stand_in)
    return b" ".join(data.split())


def exact_keys(texts: Sequence[str], normalize: bool = True) -> np.ndarray:
    """128-bit exact-dedup key of each text.

    Args:
        texts: Documents.
        normalize: Hash :func:`normalize_for_dedup` of each text (so case,
            punctuation and whitespace variants collide); else the text as it is.

    Returns:
        Array of shape ``(len(texts),)`` and dtype ``"V16"``: the
        ``xxh3_128`` digest (big-endian bytes) of the UTF-8 text.
    """
    if normalize:
        data = map(_normalized_bytes, texts)
    else:
        data = (t.encode("utf-8", "surrogatepass") for t in texts)
    return np.frombuffer(b"".join(map(xxhash.xxh3_128_digest, data)), "V16")


def _key_bytes(key: object) -> object:
    """A dict key for an exact-dedup key: the bytes of numpy values, anything else as it is."""
    if isinstance(key, np.ndarray | np.void):
        return key.tobytes()
    return key


class ExactDedupIndex:
    """First-seen index of exact-dedup keys, used in stream order.

    Documents get ids 0, 1, 2, ... in the order they are added (duplicates
    are not added).
    """

    def __init__(self) -> None:
        self._ids: dict[object, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def check_and_add(self, key: object) -> int | None:
        """Look a key up, adding it when new.

        Args:
            key: A row of :func:`exact_keys` (``np.void`` or a uint64 row) or
                any hashable value.

        Returns:
            The id of the first document with this key, or None if the key
            is new (it is then added with the next id).
        """
        key = _key_bytes(key)
        found = self._ids.get(key)
        if found is None:
            self._ids[key] = len(self._ids)
        return found


# --------------------------------------------------------------------------- near dedup

# shingles per vectorised MinHash pass: the (permutation x shingle) block stays in cache
_MINHASH_BLOCK = 1 << 15


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Odd multipliers ``a`` and offsets ``b`` (uint64) of the MinHash permutations."""
    a = np.array([xxhash.xxh64_intdigest(b"minhash-a-%d" % k, seed) | 1 for k in range(num_perm)], np.uint64)
    b = np.array([xxhash.xxh64_intdigest(b"minhash-b-%d" % k, seed) for k in range(num_perm)], np.uint64)
    return a, b


def minhash_signatures(texts: Sequence[str], shingle_size: int = 5, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """MinHash signature of each text's set of word shingles.

    Shingles are :func:`shingle_hashes` of :func:`word_hashes`. Permutation
    ``k`` maps a shingle hash ``x`` to the top 32 bits of ``a[k] * x + b[k]``
    mod 2**64 (``a`` odd; ``a``, ``b`` are xxh64 digests of fixed strings with
    ``seed``), and the signature entry is its minimum over the shingles. The
    fraction of equal entries of two signatures estimates the Jaccard
    similarity of the shingle sets.

    Args:
        texts: Documents.
        shingle_size: Words per shingle, >= 1.
        num_perm: Signature length, >= 1.
        seed: Seed of the permutations, 0 <= seed < 2**64; signatures are
            comparable only under the same seed and sizes.

    Returns:
        uint32 array ``(len(texts), num_perm)``; a text with no shingles (no
        words) gets all ``0xFFFFFFFF``.

    Raises:
        ValueError: If a size is not a positive integer or ``seed`` is out of range.
    """
    if isinstance(num_perm, bool) or not isinstance(num_perm, int) or num_perm < 1:
        raise ValueError(f"num_perm must be an integer >= 1, got {num_perm!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    hashes, _, offsets = _words(texts)
    shingles, bounds = _shingles(hashes, offsets, shingle_size)
    a, b = _permutations(num_perm, seed)
    signatures = np.full((len(texts), num_perm), 0xFFFFFFFF, np.uint32)
    docs = np.flatnonzero(np.diff(bounds))  # documents with shingles
    ends = bounds[docs + 1]
    values = np.empty(min(shingles.size, _MINHASH_BLOCK), np.uint64)
    lo = 0
    while lo < docs.size:
        # whole documents, about _MINHASH_BLOCK shingles, so that values stays in cache
        hi = max(int(np.searchsorted(ends, bounds[docs[lo]] + _MINHASH_BLOCK, side="right")), lo + 1)
        block = docs[lo:hi]
        start = bounds[block[0]]
        x = shingles[start : ends[hi - 1]]
        v = values[: x.size] if x.size <= values.size else np.empty(x.size, np.uint64)
        cuts = bounds[block] - start
        mins = np.empty((num_perm, block.size), np.uint64)
        for k in range(num_perm):
            np.multiply(x, a[k], out=v)
            v += b[k]
            np.minimum.reduceat(v, cuts, out=mins[k])
        signatures[block] = (mins >> _U64(32)).T
        lo = hi
    return signatures


def lsh_band_keys(signatures: np.ndarray, bands: int) -> np.ndarray:
    """LSH key of each band of each signature.

    Band ``j`` covers entries ``j * rows : (j + 1) * rows`` with ``rows =
    num_perm // bands``; its key is a polynomial of those entries seeded with
    a hash of ``j`` (so equal rows in different bands get different keys),
    finished with murmur3's 64-bit mixer.

    Args:
        signatures: uint32 ``(n, num_perm)`` from :func:`minhash_signatures`.
        bands: Number of bands; must divide ``num_perm``.

    Returns:
        uint64 array ``(n, bands)``.

    Raises:
        ValueError: If ``signatures`` is not 2-D or ``bands`` is not a
            positive divisor of ``num_perm``.
    """
    sig = np.asarray(signatures)
    if sig.ndim != 2:
        raise ValueError(f"signatures must be a 2-D array (documents, num_perm), got shape {sig.shape}")
    n, num_perm = sig.shape
    if isinstance(bands, bool) or not isinstance(bands, int) or bands < 1 or num_perm % bands:
        raise ValueError(f"bands must be a positive divisor of num_perm {num_perm}, got {bands!r}")
    rows = num_perm // bands
    values = sig.astype(np.uint64).reshape(n, bands, rows)
    keys = np.repeat(_fmix64(np.arange(bands, dtype=np.uint64) + _BAND_SALT)[None, :], n, axis=0)
    for r in range(rows):
        keys *= _WORD_BASE
        keys += values[:, :, r]
    return _fmix64(keys)


class NearDedupIndex:
    """MinHash-LSH index of the documents kept so far, used in stream order.

    A document is a near duplicate when an earlier *added* document shares
    one of its band keys and the fraction of equal signature entries (the
    estimated Jaccard similarity of their shingle sets) is at least
    ``threshold``. Documents get ids 0, 1, 2, ... in the order they are added.
    Memory: one dict per band (band key to id, or list of ids on a shared
    key) and one uint32 signature row per added document.
    """

    def __init__(self, bands: int, threshold: float) -> None:
        """Create an empty index.

        Args:
            bands: Number of LSH bands of the keys passed in.
            threshold: Smallest estimated Jaccard similarity that makes a
                near duplicate, in [0, 1].

        Raises:
            ValueError: If ``bands < 1`` or ``threshold`` is outside [0, 1].
        """
        if isinstance(bands, bool) or not isinstance(bands, int) or bands < 1:
            raise ValueError(f"bands must be a positive integer, got {bands!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        self.bands = bands
        self.threshold = float(threshold)
        self._tables: list[dict[int, int | list[int]]] = [{} for _ in range(bands)]
        self._signatures = np.zeros((0, 0), np.uint32)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def check_and_add(self, band_keys_row: np.ndarray, signature: np.ndarray) -> int | None:
        """Look a document up, adding it when it is not a near duplicate.

        Args:
            band_keys_row: Its ``bands`` keys, a row of :func:`lsh_band_keys`.
            signature: Its row of :func:`minhash_signatures`.

        Returns:
            The id of the earliest added document that shares a band key and
            reaches the threshold, or None (the document is then added with
            the next id).

        Raises:
            ValueError: If the row lengths do not match the index.
        """
        keys = np.asarray(band_keys_row).tolist()
        if len(keys) != self.bands:
            raise ValueError(f"expected {self.bands} band keys, got {len(keys)}")
        signature = np.asarray(signature, np.uint32)
        candidates: set[int] = set()
        for table, key in zip(self._tables, keys, strict=True):
            hit = table.get(key)
            if hit is None:
                continue
            if isinstance(hit, int):
                candidates.add(hit)
            else:
                candidates.update(hit)
        if candidates:
            if signature.shape != self._signatures.shape[1:]:
                raise ValueError(f"signature length {signature.size} differs from {self._signatures.shape[1]}")
            ids = np.array(sorted(candidates), np.int64)
            similarity = (self._signatures[ids] == signature).mean(axis=1)
            close = np.flatnonzero(similarity >= self.threshold)
            if close.size:
                return int(ids[close[0]])
        self._add(keys, signature)
        return None

    def _add(self, keys: list[int], signature: np.ndarray) -> None:
        doc_id = self._count
        if doc_id == 0:
            self._signatures = np.zeros((16, signature.size), np.uint32)
        elif signature.size != self._signatures.shape[1]:
            raise ValueError(f"signature length {signature.size} differs from {self._signatures.shape[1]}")
        elif doc_id == len(self._signatures):
            grown = np.zeros((2 * doc_id, signature.size), np.uint32)
            grown[:doc_id] = self._signatures
            self._signatures = grown
        self._signatures[doc_id] = signature
        for table, key in zip(self._tables, keys, strict=True):
            hit = table.get(key)
            if hit is None:
                table[key] = doc_id
            elif isinstance(hit, int):
                table[key] = [hit, doc_id]
            else:
                hit.append(doc_id)
        self._count += 1


# --------------------------------------------------------------------------- decontamination


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
