"""Stream the documents of one data source in batches, with errors that point at the line.

A source is a dict as validated by the recipe schema: either ``{"builtin": name}``
or ``{"path": globs, "format": ..., "text_field": ..., "max_documents": ...,
"on_error": ..., "name": ...}``. :func:`iter_batches` reads it file by file and
record by record (jsonl line by line, parquet and ``datasets`` directories by
record batch), so memory stays flat however large the corpus grows; nothing
here ever holds a whole file except a text file, which is one document.

Every document carries a locator (``path:LINE``, ``path#ROW``, ``path`` or
``python-stdlib:module.py``), and every problem with the data is a
:class:`DataError` whose message names the source, the file and the line, so a
user can open the file and fix it. ``on_error = "skip"`` skips malformed
records instead, counting them in :class:`ReadStats`; damage that makes the
rest of a file unreadable (a truncated archive, a corrupt parquet file) is an
error either way.

:func:`fingerprint_source` hashes everything that determines a source's
documents, cheaply enough to run on every start to find a cache.

Imports: stdlib and zstandard at the top; pyarrow inside the functions that read
parquet and ``datasets`` directories (``recipec build`` fingerprints sources without
it), and ``datasets`` only inside the function that reads a ``datasets`` directory.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import io
import json
import os
import pathlib
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import zstandard

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

from . import formats
from .data import BUILTINS, _stdlib_files

FORMATS = ("jsonl", "parquet", "text", "datasets", "arrow", "bin", "mds")

ON_ERROR = ("error", "skip")

MAX_SKIPPED_EXAMPLES = 5

# lower-cased name suffix -> format; longer suffixes first so ".jsonl.gz" wins over ".gz"
_SUFFIX_FORMATS = (
    (".jsonl.gz", "jsonl"),
    (".json.gz", "jsonl"),
    (".jsonl.zst", "jsonl"),
    (".json.zst", "jsonl"),
    (".jsonl", "jsonl"),
    (".json", "jsonl"),
    (".parquet", "parquet"),
    (".txt", "text"),
    (".md", "text"),
    (".text", "text"),
    (".arrow", "arrow"),
    (".bin", "bin"),
)

# files that `datasets.Dataset.save_to_disk` writes beside the Arrow data
_DATASET_FILES = ("state.json", "dataset_info.json")
_DATASET_DICT_FILE = "dataset_dict.json"

_CHUNK = 1 << 20

_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


class DataError(Exception):
    """Bad data or a bad data path.

    ``str(e)`` is a complete message naming the source (its label), the file
    and, for jsonl, the line.
    """


@dataclass
class Batch:
    """Documents read from one source, in order.

    Attributes:
        texts: The document texts, exactly as stored.
        ids: One locator per document: ``"path:LINE"`` (jsonl, 1-based line),
            ``"path#ROW"`` (parquet and ``datasets``, 0-based row of the file or
            dataset; a .json file holding one JSON array, 0-based element), ``"path"`` (text), ``"python-stdlib:relative/module.py"``
            or ``"python-docs:topic"`` (builtins). Paths are relative to the
            project directory when inside it, else absolute.
        fields: The extra fields asked for, one value per document.
        examples: For a source whose ``records`` are not ``text``: each document's
            example (:func:`.formats.to_example`) as JSON, and ``texts`` hold what the
            filters see of it (:func:`.formats.text_view`). None for text records.
    """

    texts: list[str]
    ids: list[str]
    fields: dict[str, list]
    examples: list[str] | None = None


@dataclass
class ReadStats:
    """Counts of what reading a source saw; :func:`iter_batches` adds to them.

    Attributes:
        files: Data files opened.
        documents: Documents yielded.
        empty: Empty or whitespace-only texts, dropped (a null text is malformed).
        skipped: Malformed records skipped under ``on_error = "skip"``.
        skipped_examples: Up to five ``"path:line: reason"`` strings.
        bytes: UTF-8 bytes of the yielded texts.
    """

    files: int = 0
    documents: int = 0
    empty: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    bytes: int = 0


def source_label(source: dict, index: int) -> str:
    """Return how messages and reports name a source.

    Args:
        source: The source dict.
        index: Its position in the recipe's sources.

    Returns:
        ``source["name"]`` if set, else ``"sources[INDEX]"``.
    """
    name = source.get("name")
    return name if name else f"sources[{index}]"


# --------------------------------------------------------------------------- files


def _is_dataset_dir(path: str) -> bool:
    return all(os.path.isfile(os.path.join(path, name)) for name in _DATASET_FILES)


def _is_mds_dir(path: str) -> bool:
    from .mds import is_mds_dir

    return is_mds_dir(path)


def _suffix_format(path: str) -> str | None:
    name = os.path.basename(path).lower()
    for suffix, fmt in _SUFFIX_FORMATS:
        if name.endswith(suffix):
            return fmt
    return None


def infer_format(path: str) -> str:
    """Return the format of a data file or directory from its name.

    Args:
        path: A file, or a directory written by ``datasets.Dataset.save_to_disk``.

    Returns:
        ``"jsonl"`` for .jsonl/.json (also gzip- or zstd-compressed: .gz, .zst),
        ``"parquet"`` for .parquet, ``"text"`` for .txt/.md/.text (read as plain
        files), ``"arrow"`` for .arrow (an Arrow IPC file or stream), ``"bin"`` for
        .bin (flat token ids, :mod:`.token_sources`), ``"datasets"`` for a directory holding ``state.json`` and
        ``dataset_info.json``, ``"mds"`` for a directory holding an MDS
        ``index.json`` (:mod:`.mds`).

    Raises:
        DataError: If the name says nothing known; the message asks for ``format``.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if _is_dataset_dir(path):
            return "datasets"
        if _is_mds_dir(path):
            return "mds"
        raise DataError(
            f"{path} is a directory but not one written by datasets' save_to_disk or an MDS dataset; "
            "use a glob of its files, or set `format`"
        )
    fmt = _suffix_format(path)
    if fmt is None:
        known = ", ".join(suffix for suffix, _ in reversed(_SUFFIX_FORMATS))
        raise DataError(
            f"cannot tell the format of {path} from its name (known: {known}); "
            f"set `format` to one of {', '.join(FORMATS)}"
        )
    return fmt


class _Paths:
    """Shows paths relative to the project directory when inside it, absolute otherwise."""

    def __init__(self, project_dir: str | os.PathLike):
        self.root = os.path.abspath(os.fspath(project_dir))

    def full(self, pattern: str) -> str:
        return pattern if os.path.isabs(pattern) else os.path.join(glob.escape(self.root), pattern)

    def shown(self, path: str) -> str:
        try:
            rel = os.path.relpath(path, self.root)
        except ValueError:  # another drive
            return path
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            return path
        return pathlib.PurePath(rel).as_posix()


def _globs(source: dict) -> list[str]:
    patterns = source["path"]
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    return [os.fspath(p) for p in patterns]


def _units(source: dict, paths: _Paths, label: str) -> list[tuple[str, str]]:
    """Expand a path source into ``(absolute path, format)``, in reading order."""
    fmt = source.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"{label}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    found: list[str] = []
    seen: set[str] = set()
    for pattern in _globs(source):
        matches = sorted(glob.glob(paths.full(pattern), recursive=True))
        kept = []
        for match in matches:
            path = os.path.normpath(os.path.abspath(match))
            if os.path.isdir(path):
                if fmt == "mds" or (fmt is None and _is_mds_dir(path)):
                    if not _is_mds_dir(path):
                        raise DataError(
                            f"{label}: {paths.shown(path)} is not an MDS dataset directory (it has no index.json); "
                            "point `path` at the directory of index.json, the split's directory when there are splits"
                        )
                    kept.append(path)
                    continue
                if fmt in (None, "datasets") and os.path.isfile(os.path.join(path, _DATASET_DICT_FILE)):
                    _raise_dataset_dict(label, path, paths)
                if fmt == "datasets" and not _is_dataset_dir(path):
                    raise DataError(
                        f"{label}: {paths.shown(path)} is not a directory written by "
                        "datasets' Dataset.save_to_disk (it has no state.json and dataset_info.json)"
                    )
                if fmt not in (None, "datasets") or not _is_dataset_dir(path):
                    continue
            elif fmt == "mds":
                raise DataError(
                    f"{label}: {paths.shown(path)} is a file; format mds reads a directory holding an MDS index.json "
                    "and its shards"
                )
            elif fmt == "datasets":
                raise DataError(
                    f"{label}: {paths.shown(path)} is a file; format datasets reads a directory "
                    "written by datasets' Dataset.save_to_disk"
                )
            kept.append(path)
        if not kept:
            where = "" if os.path.isabs(pattern) else f" in {paths.root}"
            if not matches:
                raise DataError(f"{label}: path {pattern!r} matches nothing{where}")
            raise DataError(
                f"{label}: path {pattern!r} matches only directories{where}; "
                "use a glob of the files inside them, e.g. 'data/**/*.jsonl'"
            )
        for path in kept:
            if path not in seen:
                seen.add(path)
                found.append(path)
    if fmt is not None:
        return [(path, fmt) for path in found]

    by_format: dict[str, list[str]] = {}
    for path in found:
        guessed = ("mds" if _is_mds_dir(path) else "datasets") if os.path.isdir(path) else _suffix_format(path)
        by_format.setdefault(guessed or "unknown", []).append(path)
    if "unknown" in by_format:
        unknown = by_format["unknown"]
        listed = ", ".join(paths.shown(p) for p in unknown[:5])
        if len(unknown) > 5:
            listed += f" and {len(unknown) - 5} more"
        raise DataError(
            f"{label}: cannot tell the format of {listed} from the name; "
            f"set `format` to one of {', '.join(FORMATS)}"
        )
    if len(by_format) > 1:
        detail = "; ".join(
            f"{name}: {', '.join(paths.shown(p) for p in members)}" for name, members in sorted(by_format.items())
        )
        raise DataError(f"{label}: files of different formats ({detail}); use one source per format, or set `format`")
    return [(path, next(iter(by_format))) for path in found]


def _raise_dataset_dict(label: str, path: str, paths: _Paths) -> None:
    splits = sorted(name for name in os.listdir(path) if _is_dataset_dir(os.path.join(path, name)))
    example = f" (e.g. {paths.shown(os.path.join(path, splits[0]))})" if splits else ""
    raise DataError(
        f"{label}: {paths.shown(path)} holds a DatasetDict (splits: {', '.join(splits) or 'none'}); "
        f"point `path` at one split's directory{example}, or save a single split with Dataset.save_to_disk"
    )


def _dataset_files(path: str, label: str, paths: _Paths) -> list[str]:
    """The Arrow data files of a ``save_to_disk`` directory, from its state.json."""
    state_path = os.path.join(path, "state.json")
    try:
        with open(state_path, encoding="utf-8") as f:
            names = [entry["filename"] for entry in json.load(f)["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{label}: {paths.shown(state_path)}: cannot read the list of data files ({e})") from None
    files = sorted(os.path.join(path, name) for name in names)
    for file in files:
        if not os.path.isfile(file):
            name = os.path.basename(file)
            raise DataError(f"{label}: {paths.shown(path)}: data file {name} listed in state.json is missing")
    return files


def expand_files(source: dict, project_dir: str | os.PathLike, *, index: int = 0) -> list[str]:
    """Return the data files of a source, in reading order.

    Globs (a string or a list) are relative to ``project_dir`` unless absolute,
    and ``**`` matches across directories. Each glob's matches are sorted, the
    globs are taken in order, and a file matched twice is kept once; plain
    directories are ignored. With ``format = "datasets"`` (or a match that is
    such a directory) the path names a directory written by
    ``datasets.Dataset.save_to_disk``, and its data files are the ``*.arrow``
    files listed in its ``state.json``, sorted. With ``format = "mds"`` (or a
    match that is a directory holding ``index.json``) the path names an MDS
    dataset (mosaicml-streaming's shards), and its data files are
    ``index.json`` and the file each listed shard is read from (:mod:`.mds`).

    Args:
        source: The source dict.
        project_dir: Directory the recipe lives in.
        index: Position of the source in the recipe, for messages.

    Returns:
        Absolute, normalized file paths; ``[]`` for a builtin source. For a hub
        source, the files of its split in the hub cache (:func:`.hub.resolve`;
        none when it is streamed from the hub).

    Raises:
        DataError: If a glob matches no file (naming the glob and directory), a
            datasets path is not such a directory, or the formats of the files
            cannot be told or differ.
    """
    if source.get("builtin") is not None:
        return []
    label = source_label(source, index)
    if source.get("hub") is not None:
        from . import hub

        return [local for _, local in hub.resolve(source, label).files if local is not None]
    paths = _Paths(project_dir)
    files: list[str] = []
    for path, fmt in _units(source, paths, label):
        if fmt == "datasets":
            files.extend(_dataset_files(path, label, paths))
        elif fmt == "mds":
            from . import mds

            files.extend(mds.files(path, label, paths.shown))
        else:
            files.append(path)
    return files


# --------------------------------------------------------------------------- records


_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MAGIC = 0x184D2A50  # low four bits are free


def _check_zstd_frames(f) -> None:
    """Walk the frame and block headers of a zstd file (RFC 8878), seeking over the data.

    zstandard's ``stream_reader`` ends quietly at the end of a truncated file,
    so a file is checked for completeness before it is read.

    Raises:
        EOFError: If the file ends inside a frame.
        zstandard.ZstdError: If something other than a frame starts where one should.
    """

    def read(n: int) -> bytes:
        data = f.read(n)
        if len(data) < n:
            raise EOFError("the file ends inside a zstd frame")
        return data

    size = os.fstat(f.fileno()).st_size
    pos = 0
    while pos < size:
        f.seek(pos)
        magic = int.from_bytes(read(4), "little")
        if magic & 0xFFFFFFF0 == _SKIPPABLE_MAGIC:
            pos += 8 + int.from_bytes(read(4), "little")
        elif magic == _ZSTD_MAGIC:
            descriptor = read(1)[0]
            single_segment = descriptor >> 5 & 1
            window = 1 - single_segment
            dictionary_id = (0, 1, 2, 4)[descriptor & 3]
            content_size = (single_segment, 2, 4, 8)[descriptor >> 6]
            pos += 4 + 1 + window + dictionary_id + content_size
            last = 0
            while not last:
                f.seek(pos)
                block = int.from_bytes(read(3), "little")
                last, kind, block_size = block & 1, block >> 1 & 3, block >> 3
                if kind == 3:
                    raise zstandard.ZstdError(f"reserved block type at byte {pos}")
                pos += 3 + (1 if kind == 1 else block_size)  # an RLE block stores one byte
            pos += 4 * (descriptor >> 2 & 1)  # content checksum
        else:
            raise zstandard.ZstdError(f"no zstd frame at byte {pos}")
    if pos > size:
        raise EOFError("the file ends inside a zstd frame")
    f.seek(0)


def _compression(path: str) -> str | None:
    name = path.lower()
    return "gzip" if name.endswith(".gz") else "zstd" if name.endswith(".zst") else None


def _open_lines(path: str, compression: str | None):
    """Open a jsonl file, plain or compressed, as a binary stream of lines."""
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "zstd":
        f = open(path, "rb")
        try:
            _check_zstd_frames(f)
            reader = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True, closefd=True)
            return io.BufferedReader(reader, _CHUNK)
        except BaseException:
            f.close()
            raise
    return open(path, "rb", buffering=_CHUNK)


# what a damaged compressed file raises while it is read
_CORRUPT = (EOFError, zlib.error, zstandard.ZstdError, gzip.BadGzipFile)


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_fault(line: str) -> str:
    """What is wrong with a line that is not valid JSON, and at which column of the line.

    The line is parsed without its line break, so that an unterminated string or object
    is reported where it starts or where the line ends, not as a control character (the
    newline) or at column 1 of a line that does not exist.
    """
    body = line.removesuffix("\n").removesuffix("\r")
    try:
        json.loads(body)
    except json.JSONDecodeError as e:
        reason = e.msg.removesuffix(" at")  # "Invalid control character at" already ends in "at"
        if e.pos >= len(body.rstrip()):
            return f"the line ends inside the JSON value: {reason} at column {e.pos + 1}"
        return f"{reason} at column {e.pos + 1}"
    return "a line break inside the JSON value"  # cannot happen: a break ends the line


def _keys(record: dict) -> str:
    keys = list(record)
    if not keys:
        return "the record is empty"
    shown = ", ".join(repr(k) for k in keys[:20])
    return f"its keys are {shown}" + (f" and {len(keys) - 20} more" if len(keys) > 20 else "")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_numeric_type(t: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)


def _is_text_type(t: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t) or str(t) == "string_view"


class _Reader:
    """Reads the records of one source: settings, bad-record policy and stats."""

    def __init__(
        self, source: dict, paths: _Paths, label: str, fields: Sequence[str], batch_size: int, stats: ReadStats
    ):
        self.paths = paths
        self.label = label
        self.text_field = source.get("text_field") or "text"
        self.fields = tuple(fields)
        self.batch_size = batch_size
        self.stats = stats
        self.on_error = source.get("on_error") or "error"
        self.records = source.get("records") or "text"
        self.record_fields = source.get("fields") or {}
        self.roles = source.get("roles") or {}
        self.system = source.get("system") or "keep"
        self.prompt_style = source.get("prompt_style") or "chat"
        self.as_chat = bool(source.get("as_chat"))
        self.input_separator = source.get("input_separator", formats.INPUT_SEPARATOR)
        self.prompt_format = source.get("prompt_format")
        self.mds_shards = source.get("mds_shards")  # some of an MDS dataset's shards (the Ray executor's tasks)
        if self.records not in formats.FORMATS:
            raise DataError(f"{label}: unknown records {self.records!r}; expected one of {', '.join(formats.FORMATS)}")
        if self.on_error not in ON_ERROR:
            raise DataError(f"{label}: unknown on_error {self.on_error!r}; expected one of {', '.join(ON_ERROR)}")

    def bad(self, where: str, reason: str) -> None:
        """Raise for a malformed record, or count it under ``on_error = "skip"``."""
        if self.on_error == "error":
            raise DataError(f"{self.label}: {where}: {reason}")
        self.stats.skipped += 1
        if len(self.stats.skipped_examples) < MAX_SKIPPED_EXAMPLES:
            self.stats.skipped_examples.append(f"{where}: {reason}")

    # ----------------------------------------------------------------- jsonl

    def jsonl(self, path: str) -> Iterator[tuple[Any, str, tuple]]:
        shown = self.paths.shown(path)
        compression = _compression(path)
        try:
            f = _open_lines(path, compression)
        except _CORRUPT as e:
            raise DataError(f"{self.label}: {shown}: truncated or corrupt {compression} file ({e})") from None
        except OSError as e:
            raise DataError(f"{self.label}: {shown}: cannot read ({e.strerror or e})") from None
        self.stats.files += 1
        number = 0
        # a record line has been read, or the name says JSON Lines: the file is one record a line
        started = os.path.basename(path).lower().removesuffix(".gz").removesuffix(".zst").endswith(".jsonl")
        with f:
            lines = iter(f)
            while True:
                try:
                    line = next(lines, None)
                except _CORRUPT as e:
                    raise DataError(
                        f"{self.label}: {shown}: truncated or corrupt {compression} file, after line {number} ({e})"
                    ) from None
                except OSError as e:
                    reason = e.strerror or e
                    raise DataError(f"{self.label}: {shown}: cannot read after line {number} ({reason})") from None
                if line is None:
                    return
                number += 1
                bare = line.removeprefix(b"\xef\xbb\xbf") if number == 1 else line  # a byte-order mark opens the file
                if not bare.strip():
                    continue
                if not started and bare.lstrip().startswith(b"["):
                    # the file's first value opens an array: one JSON array of records (as
                    # LLaMA-Factory's and Alpaca's .json files are), not one record a line
                    try:
                        rest = f.read()
                    except _CORRUPT as e:
                        raise DataError(f"{self.label}: {shown}: truncated or corrupt {compression} file ({e})") from None
                    yield from self.json_array(line + rest, number, shown)
                    return
                started = True
                document = self.json_record(line, number, shown)
                if document is not None:
                    yield document

    def json_array(self, data: bytes, first_line: int, shown: str) -> Iterator[tuple[Any, str, tuple]]:
        """The records of a file holding one JSON array (read whole: it is one value), each
        located as ``path#INDEX`` (0-based, as a parquet row is)."""
        try:
            text = data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as e:
            raise DataError(f"{self.label}: {shown}: a JSON array that is not valid UTF-8 (byte {e.start + 1})") from None
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            reason = e.msg.removesuffix(" at")
            raise DataError(
                f"{self.label}: {shown}:{first_line - 1 + e.lineno}: not valid JSON ({reason} at column {e.colno}); "
                "a file whose first value opens an array is read as one JSON array of records"
            ) from None
        if not isinstance(records, list):  # "[1] 2": json.loads has refused it already; kept for safety
            raise DataError(f"{self.label}: {shown}: expected one JSON array of records")
        for index, record in enumerate(records):
            document = self.json_object(record, f"{shown}#{index}", "an element of the array")
            if document is not None:
                yield document

    def json_record(self, line: bytes, number: int, shown: str) -> tuple[Any, str, tuple] | None:
        where = f"{shown}:{number}"
        try:
            text_line = line.decode("utf-8")
        except UnicodeDecodeError as e:
            self.bad(where, f"not valid UTF-8 (byte {e.start + 1} of the line)")
            return None
        if number == 1 and text_line.startswith("\ufeff"):
            text_line = text_line[1:]
        try:
            record = json.loads(text_line)
        except json.JSONDecodeError:
            self.bad(where, f"not valid JSON ({_json_fault(text_line)})")
            return None
        return self.json_object(record, where, "one per line")

    def json_object(self, record: Any, where: str, what: str) -> tuple[Any, str, tuple] | None:
        """The document of one parsed JSON record (a line's, or an array's element), or None after reporting why not."""
        if not isinstance(record, dict):
            kind = "null" if record is None else _JSON_TYPES.get(type(record), type(record).__name__)
            self.bad(where, f"expected a JSON object ({what}), got {kind}")
            return None
        if self.records != "text":
            example = self.example(record, where)
            if example is None:
                return None
            values = self.numbers(record, where)
            return None if values is None else (example, where, values)
        if self.text_field not in record:
            self.bad(where, f"record has no text_field {self.text_field!r}; {_keys(record)}")
            return None
        text = record[self.text_field]
        if text is None:
            self.bad(where, f"text_field {self.text_field!r} is null, not a string")
            return None
        if not isinstance(text, str):
            self.bad(where, f"text_field {self.text_field!r} holds {_preview(text)}, not a string")
            return None
        values = self.numbers(record, where)
        return None if values is None else (text, where, values)

    def numbers(self, record: dict, where: str) -> tuple | None:
        """The asked-for numeric fields of a record, or None after reporting a bad one."""
        values = []
        for name in self.fields:
            if name not in record:
                self.bad(where, f"record has no field {name!r}; {_keys(record)}")
                return None
            value = record[name]
            if not _is_number(value):
                self.bad(where, f"field {name!r} holds {_preview(value)}, not a number")
                return None
            values.append(value)
        return tuple(values)

    def example(self, record: dict, where: str) -> dict | None:
        """The record as an example of the source's ``records`` format, or None after reporting why not."""
        try:
            return formats.to_example(
                record, self.records, self.record_fields, self.roles, self.system, self.prompt_style, as_chat=self.as_chat,
                input_separator=self.input_separator, prompt_format=self.prompt_format,
            )
        except formats.RecordError as e:
            self.bad(where, f"{self.records} record: {e}")
            return None

    # ----------------------------------------------------------------- text

    def text(self, path: str) -> Iterator[tuple[Any, str, tuple]]:
        shown = self.paths.shown(path)
        if self.fields:
            raise DataError(f"{self.label}: text files have no fields; cannot read {', '.join(map(repr, self.fields))}")
        if self.records != "text":
            raise DataError(f"{self.label}: {shown}: a text file holds text, not {self.records} records")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise DataError(f"{self.label}: {shown}: cannot read ({e.strerror or e})") from None
        self.stats.files += 1
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            self.bad(shown, f"not valid UTF-8 (byte {e.start + 1})")
            return
        yield text, shown, ()

    # ----------------------------------------------------------------- arrow

    def columns(self, schema: pa.Schema, shown: str) -> list[str]:
        """Check that the text field and fields are columns of the right types; return the columns to read."""
        available = schema.names
        if self.records != "text":
            wanted = [n for n in formats.fields_needed(self.records, self.record_fields, self.prompt_format) if n in available]
            if not wanted:
                raise DataError(
                    f"{self.label}: {shown}: no column of a {self.records} record "
                    f"({', '.join(formats.fields_needed(self.records, self.record_fields, self.prompt_format))}); "
                    f"available columns: {', '.join(available) or 'none'}"
                )
            for name in self.fields:
                if name not in available:
                    raise DataError(f"{self.label}: {shown}: no column {name!r} (field); available columns: {', '.join(available)}")
            return list(dict.fromkeys((*wanted, *self.fields)))
        for name in (self.text_field, *self.fields):
            if name not in available:
                which = "text_field" if name == self.text_field else "field"
                raise DataError(
                    f"{self.label}: {shown}: no column {name!r} ({which}); "
                    f"available columns: {', '.join(available) or 'none'}"
                )
        kind = schema.field(self.text_field).type
        if not _is_text_type(kind):
            raise DataError(f"{self.label}: {shown}: text_field {self.text_field!r} holds {kind}, not text")
        for name in self.fields:
            kind = schema.field(name).type
            if not _is_numeric_type(kind):
                raise DataError(f"{self.label}: {shown}: field {name!r} holds {kind}, not numbers")
        return list(dict.fromkeys((self.text_field, *self.fields)))

    def rows(self, batches: Iterable, shown: str) -> Iterator[tuple[Any, str, tuple]]:
        """Documents of Arrow record batches or tables, with ``shown#ROW`` locators."""
        row = 0
        if self.records != "text":
            for batch in batches:
                for i, record in enumerate(batch.to_pylist()):
                    where = f"{shown}#{row + i}"
                    example = self.example(record, where)
                    values = None if example is None else self.numbers(record, where)
                    if values is not None:
                        yield example, where, values
                row += batch.num_rows
            return
        for batch in batches:
            texts = batch.column(self.text_field).to_pylist()
            columns = [batch.column(name).to_pylist() for name in self.fields]
            for i, text in enumerate(texts):
                where = f"{shown}#{row + i}"
                if text is None:
                    self.bad(where, f"text_field {self.text_field!r} is null, not a string")
                    continue
                values = tuple(column[i] for column in columns)
                if None in values:
                    name = self.fields[values.index(None)]
                    self.bad(where, f"field {name!r} is null, not a number")
                    continue
                yield text, where, values
            row += len(texts)

    def parquet(self, path: str) -> Iterator[tuple[Any, str, tuple]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        shown = self.paths.shown(path)
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{self.label}: {shown}: not a readable parquet file ({e})") from None
        with pf:
            self.stats.files += 1
            columns = self.columns(pf.schema_arrow, shown)
            batches = pf.iter_batches(batch_size=self.batch_size, columns=columns)
            try:
                yield from self.rows(batches, shown)
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{self.label}: {shown}: truncated or corrupt parquet file ({e})") from None

    def arrow(self, path: str) -> Iterator[tuple[Any, str, tuple]]:
        import pyarrow as pa

        shown = self.paths.shown(path)
        with open_ipc(path, self.label, shown) as (schema, batches):
            self.stats.files += 1
            columns = self.columns(schema, shown)
            try:
                yield from self.rows((batch.select(columns) for batch in batches), shown)
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{self.label}: {shown}: truncated or corrupt Arrow file ({e})") from None

    def bin(self, path: str) -> Iterator[tuple[Any, str, tuple]]:
        raise DataError(f'{self.label}: {self.paths.shown(path)}: a .bin file holds token ids; set records = "tokens"')

    def mds(self, path: str) -> Iterator[tuple[Any, str, tuple]]:
        """An MDS dataset (:mod:`.mds`): ``str`` columns as text, number columns as fields, ``shard#ROW`` locators."""
        from . import mds

        def choose(columns: dict[str, str], shown: str) -> list[str]:
            self.stats.files += 1
            available = ", ".join(f"{name} ({encoding})" for name, encoding in columns.items()) or "none"
            if self.records != "text":
                needed = formats.fields_needed(self.records, self.record_fields, self.prompt_format)
                wanted = [name for name in needed if name in columns]
                if not wanted:
                    raise DataError(
                        f"{self.label}: {shown}: no column of a {self.records} record ({', '.join(needed)}); "
                        f"columns: {available}"
                    )
            else:
                if self.text_field not in columns:
                    raise DataError(f"{self.label}: {shown}: no column {self.text_field!r} (text_field); columns: {available}")
                if not mds.is_text(columns[self.text_field]):
                    raise DataError(
                        f"{self.label}: {shown}: text_field {self.text_field!r} has encoding "
                        f"{columns[self.text_field]}, not str (text)"
                        + ('; token ids are read with records = "tokens"' if mds.is_token_ids(columns[self.text_field]) else "")
                    )
                wanted = [self.text_field]
            for name in self.fields:
                if name not in columns:
                    raise DataError(f"{self.label}: {shown}: no column {name!r} (field); columns: {available}")
                if not mds.is_number(columns[name]):
                    raise DataError(f"{self.label}: {shown}: field {name!r} has encoding {columns[name]}, not a number")
            return list(dict.fromkeys((*wanted, *self.fields)))

        for sample, where in mds.iter_samples(path, choose, self.label, self.paths.shown, self.mds_shards):
            record = {}
            for name, (encoding, data) in sample.items():
                try:
                    record[name] = mds.decode(encoding, data)
                except (ValueError, UnicodeDecodeError) as e:
                    self.bad(where, f"column {name!r} ({encoding}) does not decode: {e}")
                    break
            else:
                if self.records != "text":
                    example = self.example(record, where)
                    values = None if example is None else self.numbers(record, where)
                    if values is not None:
                        yield example, where, values
                else:
                    yield record[self.text_field], where, tuple(record[name] for name in self.fields)

    def datasets(self, path: str) -> Iterator[tuple[Any, str, tuple]]:
        import datasets
        import pyarrow as pa

        shown = self.paths.shown(path)
        files = _dataset_files(path, self.label, self.paths)
        try:
            ds = datasets.load_from_disk(path)
        except (OSError, ValueError, pa.ArrowException) as e:
            raise DataError(f"{self.label}: {shown}: cannot load the dataset ({e})") from None
        if isinstance(ds, datasets.DatasetDict):
            _raise_dataset_dict(self.label, path, self.paths)
        self.stats.files += len(files)
        columns = self.columns(ds.data.schema, shown)
        tables = ds.select_columns(columns).with_format("arrow").iter(batch_size=self.batch_size)
        yield from self.rows(tables, shown)


@contextlib.contextmanager
def open_ipc(path: str, label: str, shown: str) -> Iterator[tuple[pa.Schema, Iterator[pa.RecordBatch]]]:
    """``(schema, record batches)`` of an Arrow IPC file or stream, read batch by batch (not mapped: flat memory).

    Raises:
        DataError: the file is neither, naming it.
    """
    import pyarrow as pa

    try:
        f = pa.OSFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{label}: {shown}: cannot read ({e})") from None
    with f:
        try:
            reader = pa.ipc.open_file(f)
            batches: Iterator[pa.RecordBatch] = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except (pa.ArrowException, OSError):
            f.seek(0)
            try:
                reader = pa.ipc.open_stream(f)
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{label}: {shown}: not an Arrow IPC file or stream ({e})") from None
            batches = iter(reader)
        yield reader.schema, batches


def _builtin_documents(name: str, label: str) -> Iterator[tuple[Any, str, tuple]]:
    """The documents of a builtin corpus, in :func:`.data.builtin_texts`'s order."""
    if name == "python-docs":
        from pydoc_data.topics import topics

        for key in sorted(topics):
            if topics[key]:
                yield topics[key], f"python-docs:{key}", ()
    elif name == "python-stdlib":
        for relative, path in _stdlib_files():
            try:
                text = path.read_bytes().decode("utf-8")
            except (UnicodeDecodeError, OSError):
                continue  # as builtin_texts: such files are not part of the corpus
            if text:
                yield text, f"python-stdlib:{relative}", ()
    else:
        raise DataError(f"{label}: unknown builtin {name!r}; expected one of {', '.join(BUILTINS)}")


# --------------------------------------------------------------------------- batches


def iter_batches(
    source: dict,
    project_dir: str | os.PathLike,
    *,
    index: int = 0,
    fields: Sequence[str] = (),
    batch_size: int = 1000,
    stats: ReadStats | None = None,
    tokenizer: Any = None,
) -> Iterator[Batch]:
    """Stream the documents of one source in batches.

    Files are read in :func:`expand_files` order and one record at a time, so
    memory does not grow with the corpus. Batches run across file boundaries:
    every batch holds ``batch_size`` documents except the last. Texts are
    yielded exactly as stored; empty and whitespace-only ones are dropped and
    counted. With ``max_documents`` set, reading stops once that many
    documents have been yielded; with ``max_tokens``, before the first document
    whose tokens (``tokenizer``, no special tokens, of the text as yielded) would
    bring the source's total past it.

    * jsonl: one JSON object per line, plain, ``.gz`` or ``.zst``; blank lines
      are ignored. A file not named ``.jsonl`` whose first value opens an array
      (``[``) holds one JSON array of objects instead, read whole (as
      ``datasets``' json loader reads it). A record that is not valid UTF-8 or JSON, not an object,
      lacks ``text_field`` or an asked-for field, holds a null or non-string
      text or a non-number field value is malformed.
    * parquet: by record batch, reading only the needed columns; a null text
      or field value is malformed.
    * text: one document per file, UTF-8.
    * datasets: a ``save_to_disk`` directory (one ``Dataset``, not a
      ``DatasetDict``), by batch over the needed columns; nulls as for parquet.
    * arrow: an Arrow IPC file or stream, by record batch; nulls as for parquet.
    * bin: token ids, read by :mod:`.token_sources` (here an error).
    * mds: an MDS dataset directory (:mod:`.mds`), shard by shard and sample by
      sample, decoding only the needed columns; the text column's encoding is
      ``str``, a field's a number; a value that does not decode is malformed.
    * builtin: :func:`.data.builtin_texts`' documents, in its order.
    * hub: a dataset's split, read with ``datasets`` from the hub cache
      (:mod:`.hub`); records as for parquet.

    A malformed record raises :class:`DataError`, or with ``on_error = "skip"``
    is counted in ``stats`` and skipped. A missing column, a corrupt or
    truncated file, or a bad path raises either way.

    Args:
        source: The source dict.
        project_dir: Directory the recipe lives in.
        index: Position of the source in the recipe, for messages.
        fields: Extra numeric fields (columns) to return with each document.
        batch_size: Documents per batch (>= 1).
        stats: Counters to add to; pass one to see what was dropped.
        tokenizer: Counts the tokens of a source with ``max_tokens``.

    Yields:
        Batches of ``batch_size`` documents, the last one possibly smaller.

    Raises:
        DataError: On bad data or a bad path; the message names the source,
            the file and the line.
        ValueError: If ``batch_size`` is not a positive integer.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    label = source_label(source, index)
    stats = stats if stats is not None else ReadStats()
    fields = tuple(fields)
    max_documents = source.get("max_documents")

    if source.get("builtin") is not None:
        if fields:
            raise DataError(f"{label}: builtin corpora have no fields; cannot read {', '.join(map(repr, fields))}")
        documents = _builtin_documents(source["builtin"], label)
    elif source.get("path") is not None:
        reader = _Reader(source, _Paths(project_dir), label, fields, batch_size, stats)
        read = {
            "jsonl": reader.jsonl,
            "parquet": reader.parquet,
            "text": reader.text,
            "datasets": reader.datasets,
            "arrow": reader.arrow,
            "bin": reader.bin,
            "mds": reader.mds,
        }
        units = _units(source, reader.paths, label)
        documents = (document for path, fmt in units for document in read[fmt](path))
    elif source.get("hub") is not None:
        from . import hub

        documents = hub.documents(source, _Reader(source, _Paths(project_dir), label, fields, batch_size, stats))
    else:
        raise DataError(f"{label}: a data source needs `builtin`, `path` or `hub`")
    max_tokens = source.get("max_tokens")
    if max_tokens is not None and tokenizer is None:
        documents.close()
        raise DataError(f"{label}: max_tokens counts tokens with the recipe's tokenizer, and there is none yet (it is trained on the data)")
    tokens = 0

    texts: list[str] = []
    ids: list[str] = []
    values: list[tuple] = []
    examples: list[str] | None = [] if (source.get("records") or "text") != "text" else None
    yielded = 0

    def batch() -> Batch:
        return Batch(texts, ids, {name: [v[i] for v in values] for i, name in enumerate(fields)}, examples)

    try:
        for text, locator, row in documents:
            if examples is not None:
                example, text = text, formats.text_view(text)
            if not text or text.isspace():
                stats.empty += 1
                continue
            if max_tokens is not None:
                tokens += len(tokenizer(text, add_special_tokens=False)["input_ids"])
                if tokens > max_tokens:
                    break
            if examples is not None:
                examples.append(json.dumps(example, ensure_ascii=False))
            texts.append(text)
            ids.append(locator)
            values.append(row)
            yielded += 1
            stats.documents += 1
            stats.bytes += len(text.encode("utf-8"))
            done = max_documents is not None and yielded >= max_documents
            if len(texts) == batch_size or done:
                yield batch()
                texts, ids, values = [], [], []
                examples = None if examples is None else []
            if done:
                return
    finally:
        documents.close()
    if texts:
        yield batch()


# --------------------------------------------------------------------------- fingerprint


def fingerprint_source(
    source: dict, project_dir: str | os.PathLike, *, index: int = 0, fields: Sequence[str] = ()
) -> str:
    """Hash everything that determines a source's documents.

    For a path source: each data file's path (relative to ``project_dir`` when
    inside it), size and content, in reading order. For a builtin: its name
    and the locators and texts of its documents (up to ``max_documents``).
    For a hub source: its settings, the commit and its data files
    (:func:`.hub.fingerprint`). All add ``format``, ``text_field``,
    ``max_documents``, ``on_error`` and ``fields`` (and ``max_tokens`` when
    set). Files are streamed in 1 MiB chunks; a source's name and globs do not
    count, only what they select.

    Args:
        source: The source dict.
        project_dir: Directory the recipe lives in.
        index: Position of the source in the recipe, for messages.
        fields: The extra fields read with the documents.

    Returns:
        A sha256 hex digest.

    Raises:
        DataError: As :func:`expand_files`, or if a file cannot be read.
    """
    settings = {
        "builtin": source.get("builtin"),
        "format": source.get("format"),
        "text_field": source.get("text_field") or "text",
        "max_documents": source.get("max_documents"),
        "on_error": source.get("on_error") or "error",
        "fields": list(fields),
    }
    if (source.get("records") or "text") != "text":  # text sources keep the keys they always had
        settings.update(records=source["records"], record_fields=source.get("fields"), roles=source.get("roles"))
    if source.get("records") == "tokens":  # what splits and reads the ids
        settings.update(token_dtype=source.get("token_dtype"), eos_token_id=source.get("eos_token_id"))
    for key in ("hub", "max_tokens"):  # only when set: the other sources keep the keys they always had
        if source.get(key) is not None:
            settings[key] = source[key]
    if source.get("system", "keep") != "keep":
        settings["system"] = source["system"]
    if source.get("prompt_style", "chat") != "chat":
        settings["prompt_style"] = source["prompt_style"]
    if source.get("as_chat"):
        settings["as_chat"] = True
    if source.get("input_separator", "\n\n") != "\n\n":
        settings["input_separator"] = source["input_separator"]
    if source.get("prompt_format") is not None:
        settings["prompt_format"] = source["prompt_format"]
    digest = hashlib.sha256(b"recipec-source-v1\0")
    digest.update(json.dumps(settings, sort_keys=True).encode("utf-8") + b"\0")

    def add(data: bytes) -> None:
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)

    if source.get("hub") is not None:
        from . import hub

        add(json.dumps(hub.fingerprint(source, source_label(source, index)), sort_keys=True).encode("utf-8"))
        return digest.hexdigest()

    if source.get("builtin") is not None:  # every document up to max_documents; max_tokens is a setting above
        for batch in iter_batches({**source, "max_tokens": None}, project_dir, index=index):
            for locator, text in zip(batch.ids, batch.texts):
                add(locator.encode("utf-8"))
                add(text.encode("utf-8"))
        return digest.hexdigest()

    label = source_label(source, index)
    paths = _Paths(project_dir)
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    for path in expand_files(source, project_dir, index=index):
        add(paths.shown(path).encode("utf-8"))
        try:
            with open(path, "rb", buffering=0) as f:
                digest.update(os.fstat(f.fileno()).st_size.to_bytes(8, "little"))
                while n := f.readinto(buffer):
                    digest.update(view[:n])
        except OSError as e:
            raise DataError(f"{label}: {paths.shown(path)}: cannot read ({e.strerror or e})") from None
    return digest.hexdigest()
