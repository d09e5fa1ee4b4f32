"""Read MDS shards: the format mosaicml-streaming's ``MDSWriter`` writes (llm-foundry's data).

A dataset is a directory (a split's directory when it has splits) holding ``index.json``
and the shard files it lists. This reads them as the library does
(``streaming/base/format/mds/reader.py``, ``encodings.py``, ``compression.py``), without
depending on it:

* ``index.json``: ``{"version": 2, "shards": [...]}``; each shard ``{"format": "mds",
  "version": 2, "samples", "column_names", "column_encodings", "column_sizes",
  "compression", "raw_data": {"basename", "bytes", ...}, "zip_data": {...} or null}``.
* A shard (``raw_data``, or ``zip_data`` compressed whole with ``compression``): a
  little-endian uint32 count of samples ``n``, ``n + 1`` uint32 offsets of the samples
  from the start of the file, the writer's settings as JSON, then the samples. A sample
  is a uint32 size for each column without a fixed size, then the columns' bytes in
  ``column_names`` order (the writer sorts them by name).
* Compressions: ``zstd`` (zstandard), ``gz``, ``bz2``, each with an optional ``:level``;
  ``br`` and ``snappy`` shards are read when their raw file is there (the library leaves
  it after decompressing), else refused. The raw file wins when both are there, as in
  the library.
* Encodings decoded: ``str``, ``bytes``, ``int``, the fixed-width scalars (``uint8`` ..
  ``float64``), ``str_int``, ``str_float``, ``str_decimal``, ``ndarray[:dtype[:shape]]``
  and ``json``. ``pkl`` would run arbitrary code when read and is refused; image
  encodings are refused. Only the columns a source reads are decoded.

A shard is read into memory whole (the writer's ``size_limit`` is 64 MiB by default), and
checked before any sample is taken from it: its size against the index, every hash the
index lists for the file read (the writer's ``hashes``: hashlib's algorithms and xxhash's,
computed over the file's bytes as the library computes them; streaming checks one, its
``validate_hash``, and only when it downloads), its header's count
and offsets against its size, each sample's column sizes against the sample. Damage is a
:class:`.readers.DataError` naming the file; a value that does not decode (text that is not
UTF-8, JSON that does not parse) is the caller's malformed record, :class:`ValueError`.

Imports: stdlib, numpy, xxhash and zstandard.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import xxhash
import zstandard

from .readers import DataError

INDEX = "index.json"
"""The file that makes a directory an MDS dataset."""

# fixed-width scalar encodings -> little-endian numpy dtype
_SCALARS = {
    "uint8": "<u1",
    "uint16": "<u2",
    "uint32": "<u4",
    "uint64": "<u8",
    "int8": "<i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "float16": "<f2",
    "float32": "<f4",
    "float64": "<f8",
}
# ndarray: the byte that names a dynamic dtype, and the dtypes of a dynamic shape
_NDARRAY_DTYPES = {
    8: "uint8",
    9: "int8",
    16: "uint16",
    17: "int16",
    18: "float16",
    32: "uint32",
    33: "int32",
    34: "float32",
    64: "uint64",
    65: "int64",
    66: "float64",
}
_SHAPE_DTYPES = ("<u1", "<u2", "<u4", "<u8")
_TEXT = ("str",)
_NUMBERS = ("int", *_SCALARS, "str_int", "str_float")
_IMAGES = ("pil", "jpeg", "png", "jpeg_array", "jpegarray", "list[pil]", "list[jpeg]", "list[png]")
_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
    "gz": gzip.decompress,
    "bz2": bz2.decompress,
}
_CORRUPT = (zstandard.ZstdError, OSError, EOFError, zlib.error, ValueError)


def is_mds_dir(path: str) -> bool:
    """Whether ``path`` is a directory holding an MDS ``index.json``."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, INDEX))


def _family(compression: str | None) -> str | None:
    return None if not compression else compression.split(":", 1)[0]


def _base_encoding(encoding: str) -> str:
    return encoding.split(":", 1)[0]


def is_text(encoding: str) -> bool:
    """Whether a column of this encoding holds text."""
    return encoding in _TEXT


def is_number(encoding: str) -> bool:
    """Whether a column of this encoding holds one number."""
    return encoding in _NUMBERS


def is_token_ids(encoding: str) -> bool:
    """Whether a column of this encoding can hold token ids (an array, or raw bytes of ids)."""
    return _base_encoding(encoding) == "ndarray" or encoding == "bytes"


@dataclass(frozen=True)
class Shard:
    """One shard as ``index.json`` lists it, and the file it is read from.

    Attributes:
        path: The file read: the raw shard when present, else the compressed one.
        compression: The compression of ``path`` (None for a raw shard).
        samples: Samples the index says the shard holds.
        raw_bytes: Size of the raw shard.
        file_bytes: Size ``path`` must have.
        columns: Column name -> (encoding, fixed size or None), in the shard's order.
        hashes: Algorithm -> hex digest of ``path``'s bytes, as the index lists them (often none).
    """

    path: str
    compression: str | None
    samples: int
    raw_bytes: int
    file_bytes: int
    columns: dict[str, tuple[str, int | None]]
    hashes: dict[str, str] = field(default_factory=dict)


def _basename(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or value in (".", "..") or "/" in value or "\\" in value:
        raise ValueError(f"{where} is {value!r}, not a file name")
    return value


def _file_bytes(info: Any, where: str) -> tuple[str, int]:
    if not isinstance(info, dict):
        raise ValueError(f"{where} is {info!r}, not an object")
    size = info.get("bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{where}.bytes is {size!r}, not a size")
    return _basename(info.get("basename"), f"{where}.basename"), size


def _hashes(info: dict, where: str) -> dict[str, str]:
    """The ``hashes`` of a file's index entry (algorithm -> hex digest); none when it lists none."""
    hashes = info.get("hashes") or {}
    if not isinstance(hashes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()):
        raise ValueError(f"{where}.hashes is {hashes!r}, not an object of algorithm names and hex digests")
    return hashes


def _hash(algorithm: str, data: bytes) -> str | None:
    """The hex digest of ``data`` by the library's algorithm of that name (hashlib's or xxhash's); None for one it does not know."""
    if algorithm in xxhash.algorithms_available:
        return getattr(xxhash, algorithm)(data).hexdigest()
    if algorithm in hashlib.algorithms_available and hasattr(hashlib, algorithm) and not algorithm.startswith("shake_"):
        return getattr(hashlib, algorithm)(data).hexdigest()
    return None


def _shard(directory: str, entry: Any, i: int) -> Shard:
    """A shard from its ``index.json`` entry; ValueError says what is wrong with the entry."""
    where = f"shards[{i}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not an object")
    if entry.get("format") != "mds":
        raise ValueError(f"{where} has format {entry.get('format')!r}; recipec reads MDS shards (format \"mds\"), not streaming's csv/tsv/json shards")
    if entry.get("version") != 2:
        raise ValueError(f"{where} has version {entry.get('version')!r}; MDS shards of version 2 are read")
    samples = entry.get("samples")
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
        raise ValueError(f"{where}.samples is {samples!r}, not a count")
    names, encodings, sizes = (entry.get(key) for key in ("column_names", "column_encodings", "column_sizes"))
    if not (isinstance(names, list) and isinstance(encodings, list) and isinstance(sizes, list)) or not (
        len(names) == len(encodings) == len(sizes)
    ):
        raise ValueError(f"{where}: column_names, column_encodings and column_sizes are not lists of one length")
    for name, encoding, size in zip(names, encodings, sizes):
        if not isinstance(name, str) or not isinstance(encoding, str) or not (size is None or (isinstance(size, int) and size >= 0)):
            raise ValueError(f"{where}: column {name!r} has encoding {encoding!r} and size {size!r}")
    raw_name, raw_bytes = _file_bytes(entry.get("raw_data"), f"{where}.raw_data")
    raw_path = os.path.join(directory, raw_name)
    zip_info = entry.get("zip_data")
    compression = entry.get("compression")
    columns = {name: (encoding, size) for name, encoding, size in zip(names, encodings, sizes)}
    if os.path.isfile(raw_path) or zip_info is None:
        return Shard(raw_path, None, samples, raw_bytes, raw_bytes, columns, _hashes(entry["raw_data"], f"{where}.raw_data"))
    zip_name, zip_bytes = _file_bytes(zip_info, f"{where}.zip_data")
    if not isinstance(compression, str):
        raise ValueError(f"{where} has zip_data {zip_name} and compression {compression!r}")
    hashes = _hashes(zip_info, f"{where}.zip_data")
    return Shard(os.path.join(directory, zip_name), compression, samples, raw_bytes, zip_bytes, columns, hashes)


def read_index(directory: str, label: str, shown: Callable[[str], str]) -> list[Shard]:
    """The shards ``directory/index.json`` lists, in order, each with the file it is read from.

    Args:
        directory: The dataset's directory (a split's, when it has splits).
        label: The source, for messages.
        shown: How messages show a path.

    Raises:
        DataError: the index is missing, not JSON, not version 2, or lists a shard badly or
            one whose files are both missing; naming the file.
    """
    path = os.path.join(directory, INDEX)
    try:
        with open(path, "rb") as f:
            index = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise DataError(f"{label}: {shown(path)}: cannot read ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{label}: {shown(path)}: not an MDS index, not valid JSON ({e})") from None
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise DataError(f"{label}: {shown(path)}: not an MDS index (no list of `shards`)")
    if index.get("version") != 2:
        raise DataError(f"{label}: {shown(path)}: MDS index version {index.get('version')!r}; version 2 is read")
    shards = []
    for i, entry in enumerate(index["shards"]):
        try:
            shard = _shard(directory, entry, i)
        except ValueError as e:
            raise DataError(f"{label}: {shown(path)}: {e}") from None
        if not os.path.isfile(shard.path):
            listed = entry["raw_data"]["basename"] + (f" nor {entry['zip_data']['basename']}" if entry.get("zip_data") else "")
            raise DataError(
                f"{label}: {shown(path)}: shard {i} is missing: neither {listed} is in {shown(directory)}; "
                "copy every shard of the dataset there (a `remote` dataset's shards are downloaded first)"
            )
        shards.append(shard)
    return shards


def files(directory: str, label: str, shown: Callable[[str], str]) -> list[str]:
    """``index.json`` and the file of each shard, in order: what a dataset's samples come from."""
    return [os.path.join(directory, INDEX), *(shard.path for shard in read_index(directory, label, shown))]


def _load(shard: Shard, label: str, shown: str) -> bytes:
    """The raw bytes of a shard, decompressed and checked against the index."""
    try:
        with open(shard.path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{label}: {shown}: cannot read ({e.strerror or e})") from None
    if len(data) != shard.file_bytes:
        raise DataError(
            f"{label}: {shown}: {len(data)} bytes, and index.json says {shard.file_bytes}; the shard is truncated or "
            "is not the one the index lists"
        )
    for algorithm, digest in shard.hashes.items():
        got = _hash(algorithm, data)
        if got is not None and got != digest.lower():
            raise DataError(
                f"{label}: {shown}: its {algorithm} is {got}, and index.json says {digest}; the shard is damaged or is "
                "not the one the index lists"
            )
    if shard.compression is not None:
        family = _family(shard.compression)
        decompress = _DECOMPRESS.get(family)
        if decompress is None:
            raise DataError(
                f"{label}: {shown}: compressed with {shard.compression!r}, which recipec cannot decompress "
                f"(it decompresses {', '.join(_DECOMPRESS)}); decompress the shards to their raw .mds files beside it, "
                "or write the dataset with compression zstd"
            )
        try:
            data = decompress(data)
        except _CORRUPT as e:
            raise DataError(f"{label}: {shown}: corrupt {family} data ({e})") from None
        if len(data) != shard.raw_bytes:
            raise DataError(f"{label}: {shown}: decompresses to {len(data)} bytes, and index.json says {shard.raw_bytes}")
    return data


def _offsets(data: bytes, shard: Shard, label: str, shown: str) -> np.ndarray:
    """The sample offsets of a shard's header, checked against its size and the index."""
    if len(data) < 4:
        raise DataError(f"{label}: {shown}: {len(data)} bytes, too short for an MDS shard header")
    n = int.from_bytes(data[:4], "little")
    if n != shard.samples:
        raise DataError(f"{label}: {shown}: the header counts {n} samples, and index.json says {shard.samples}; not an MDS shard, or damaged")
    end = 4 + 4 * (n + 1)
    if len(data) < end:
        raise DataError(f"{label}: {shown}: {len(data)} bytes, too short for the offsets of {n} samples; damaged header")
    offsets = np.frombuffer(data, dtype="<u4", count=n + 1, offset=4).astype(np.int64)
    if offsets[0] < end or np.any(np.diff(offsets) < 0) or offsets[-1] != len(data):
        raise DataError(
            f"{label}: {shown}: bad header: sample offsets run from {int(offsets[0])} to {int(offsets[-1])} in a file of "
            f"{len(data)} bytes; damaged shard"
        )
    return offsets


SHARDS = "mds_shards"
"""A source key set by the Ray executor alone: ``[first, stop)`` of the dataset's shards one task reads."""


def iter_samples(
    directory: str,
    choose: Callable[[dict[str, str], str], list[str]],
    label: str,
    shown: Callable[[str], str],
    shards: Sequence[int] | None = None,
) -> Iterator[tuple[dict[str, tuple[str, bytes]], str]]:
    """The samples of an MDS dataset, in shard order: the chosen columns' ``(encoding, bytes)``, undecoded.

    Args:
        directory: The dataset's directory.
        choose: Given a shard's columns (name -> encoding) and the shard's path as shown,
            the columns to return; it raises :class:`.readers.DataError` for a missing or
            unfit one. Each chosen encoding is checked with :func:`check_encoding`.
        label: The source, for messages.
        shown: How messages show a path.
        shards: ``[first, stop)`` of the shards to read (all when None): a Ray task reads some
            of a dataset's shards, and the tasks' samples, in order, are the dataset's.

    Yields:
        ``(columns, locator)``; the locator is ``shard-file#ROW``, the row within the shard.

    Raises:
        DataError: an unreadable encoding or a damaged shard, naming the file.
    """
    listed = read_index(directory, label, shown)
    for shard in listed if shards is None else listed[shards[0] : shards[1]]:
        where = shown(shard.path)
        columns = choose({name: encoding for name, (encoding, _) in shard.columns.items()}, where)
        for name in columns:
            check_encoding(shard.columns[name][0], name, f"{label}: {where}")
        data = _load(shard, label, where)
        offsets = _offsets(data, shard, label, where)
        layout = list(shard.columns.items())
        dynamic = sum(1 for _, (_, size) in layout if size is None)
        wanted = set(columns)
        for row in range(shard.samples):
            begin, end = int(offsets[row]), int(offsets[row + 1])
            sizes = np.frombuffer(data, dtype="<u4", count=dynamic, offset=begin).tolist() if dynamic and begin + 4 * dynamic <= end else None
            if dynamic and sizes is None:
                raise DataError(f"{label}: {where}#{row}: the sample is {end - begin} bytes, too short for its column sizes; damaged shard")
            it = iter(sizes or ())
            position = begin + 4 * dynamic
            sample = {}
            for name, (encoding, size) in layout:
                size = next(it) if size is None else size
                if name in wanted:
                    sample[name] = (encoding, data[position : position + size])
                position += size
            if position != end:
                raise DataError(
                    f"{label}: {where}#{row}: its columns take {position - begin} bytes of a {end - begin}-byte sample; damaged shard"
                )
            yield sample, f"{where}#{row}"


def check_encoding(encoding: str, name: str, where: str) -> None:
    """Refuse an encoding that recipec does not decode.

    Raises:
        DataError: ``pkl`` (reading it would run code the file holds), images, or one unknown.
    """
    base = _base_encoding(encoding)
    if base == "pkl":
        raise DataError(
            f"{where}: column {name!r} is pickled (encoding pkl); unpickling runs whatever code the file holds, so "
            "recipec does not read it: rewrite the column as str, json or ndarray"
        )
    if base in _IMAGES:
        raise DataError(f"{where}: column {name!r} holds images (encoding {encoding}); recipec reads text, numbers and token ids")
    if base not in (*_TEXT, *_NUMBERS, "str_decimal", "bytes", "json", "ndarray"):
        raise DataError(f"{where}: column {name!r} has encoding {encoding!r}, which recipec does not know")


def decode(encoding: str, data: bytes) -> Any:
    """A column's value, as the library's ``mds_decode`` returns it (numbers as Python numbers).

    Raises:
        ValueError: the bytes do not decode (not UTF-8, not JSON, the wrong size for the encoding).
    """
    base, _, config = encoding.partition(":")
    if base == "str":
        return data.decode("utf-8")
    if base == "bytes":
        return bytes(data)
    if base == "json":
        return json.loads(data.decode("utf-8"))
    if base == "int":
        base = "int64"
    if base in _SCALARS:
        width = np.dtype(_SCALARS[base]).itemsize
        if len(data) != width:
            raise ValueError(f"{len(data)} bytes, not the {width} of a {encoding}")
        return np.frombuffer(data, _SCALARS[base])[0].item()
    if base in ("str_int", "str_float", "str_decimal"):
        text = data.decode("utf-8")
        try:
            return int(text) if base == "str_int" else float(text) if base == "str_float" else Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{text!r} is not a decimal") from None
    if base == "ndarray":
        return _ndarray(config, data)
    raise ValueError(f"encoding {encoding!r} is not decoded")


def _ndarray(config: str, data: bytes) -> np.ndarray:
    """``ndarray[:dtype[:shape]]``: ``[dtype byte] [ndim << 2 | shape width] [shape] values``, the parts not fixed by the encoding."""
    args = config.split(":") if config else []
    index = 0
    if args and args[0]:
        if args[0] not in _NDARRAY_DTYPES.values():
            raise ValueError(f"ndarray dtype {args[0]!r} is unknown")
        dtype = args[0]
    else:
        if len(data) < 1 or data[0] not in _NDARRAY_DTYPES:
            raise ValueError("the ndarray's dtype byte is missing or unknown")
        dtype = _NDARRAY_DTYPES[data[0]]
        index = 1
    if len(args) >= 2:
        shape = tuple(int(d) for d in args[1].split(","))
    else:
        if len(data) <= index:
            raise ValueError("the ndarray's shape is missing")
        byte = data[index]
        index += 1
        ndim, width = byte >> 2, 1 << (byte & 3)
        if len(data) < index + ndim * width:
            raise ValueError("the ndarray's shape is cut short")
        shape = tuple(np.frombuffer(data, _SHAPE_DTYPES[byte & 3], count=ndim, offset=index).tolist())
        index += ndim * width
    item = np.dtype(dtype).newbyteorder("<")
    count = int(np.prod(shape)) if shape else 1
    if len(data) - index != count * item.itemsize:
        raise ValueError(f"{len(data) - index} bytes of values, and shape {shape} of {dtype} needs {count * item.itemsize}")
    return np.frombuffer(data, item, count=count, offset=index).reshape(shape)
