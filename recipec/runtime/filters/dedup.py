"""`type = "exact_dedup"` and `type = "minhash_dedup"`: drop documents an earlier kept one duplicates.

The worker processes compute each document's keys (:func:`exact_keys`, or
:func:`minhash_signatures` and their :func:`lsh_band_keys`); the main process
then walks the documents in stream order, and :class:`ExactDedupIndex` and
:class:`NearDedupIndex` remember what it kept, so the first document of a
group is the one that stays. Keys are the same in every process, run and
batching (barring 64-bit hash collisions).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np
import xxhash

from .base import DedupFilter, Index
from .text import _BAND_SALT, _CAPITAL_SIGMA, _U64, _WORD_BASE, _fmix64, _replace_non_ascii
from .words import _shingles, _words

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


def exact_keys(texts: Sequence[str], normalize: bool) -> np.ndarray:
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



# shingles per vectorised MinHash pass: the (permutation x shingle) block stays in cache
_MINHASH_BLOCK = 1 << 15


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Odd multipliers ``a`` and offsets ``b`` (uint64) of the MinHash permutations."""
    a = np.array([xxhash.xxh64_intdigest(b"minhash-a-%d" % k, seed) | 1 for k in range(num_perm)], np.uint64)
    b = np.array([xxhash.xxh64_intdigest(b"minhash-b-%d" % k, seed) for k in range(num_perm)], np.uint64)
    return a, b


def minhash_signatures(texts: Sequence[str], shingle_size: int, num_perm: int, seed: int) -> np.ndarray:
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



class ExactDedup(DedupFilter):
    """Drops a document whose :func:`exact_keys` key equals a kept one's."""

    type = "exact_dedup"
    keys = ("normalize",)

    def features(self, texts: list[str]) -> tuple[np.ndarray, ...]:
        return (exact_keys(texts, normalize=self.settings["normalize"]),)

    def index(self) -> Index:
        return ExactDedupIndex()


class MinhashDedup(DedupFilter):
    """Drops a near duplicate of a kept document, found by MinHash LSH (:class:`NearDedupIndex`)."""

    type = "minhash_dedup"
    keys = ("shingle_size", "num_perm", "bands", "threshold", "seed")

    def features(self, texts: list[str]) -> tuple[np.ndarray, ...]:
        s = self.settings
        signatures = minhash_signatures(texts, int(s["shingle_size"]), int(s["num_perm"]), int(s["seed"]))
        return lsh_band_keys(signatures, int(s["bands"])), signatures

    def index(self) -> Index:
        return NearDedupIndex(int(self.settings["bands"]), float(self.settings["threshold"]))
