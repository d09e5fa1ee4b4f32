"""Token sources: documents that are token ids already (``records = "tokens"``).

A token source's files hold the ids that a named tokenizer (the source's ``tokenizer``)
made:

* ``.bin`` (``format = "bin"``): flat little-endian ``uint16`` or ``uint32`` ids
  (``token_dtype``), as nanoGPT writes them, each document ended by ``eos_token_id``. A
  file is read through ``numpy.memmap`` one window of :data:`CHUNK_TOKENS` ids at a time,
  each window mapped, copied and released in turn, so memory stays flat however large the
  file is.
* parquet, Arrow IPC files or streams, ``datasets.save_to_disk`` directories: a column
  ``input_ids`` (renamed with ``fields = {input_ids = "..."}``) of lists of integers, one
  row one document, read by record batch.
* MDS datasets (``format = "mds"``, :mod:`.mds`): a column ``input_ids`` or ``tokens``
  (llm-foundry's) encoded ``ndarray`` or ``bytes`` (raw ids of ``token_dtype``, ``int64``
  unless set), one sample one document.

The data stage (:mod:`.stage_analyse`) stores these documents beside the text documents it
tokenizes, with empty texts: the filters, which read text, pass over them. They are held
out, mixed and packed like any others, each followed by the tokenizer's end-of-text id.
Before any file is read, :func:`check_tokenizers` compares the named tokenizer's vocabulary
with the recipe's tokenizer's; while reading, every id must be below the recipe tokenizer's
size (the model's embeddings have at least that many rows). Each problem is a
:class:`.readers.DataError` naming the source, the file and the row or position; an id that
is null, negative or not an integer makes its row malformed (``on_error`` decides), an id
out of range is an error either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np

from . import readers
from .readers import DataError
from .stage_request import local_path
from .tokenizer import fingerprint, load_tokenizer, prepare_chat

TOKENS = "tokens"
"""The ``records`` of a token source."""

CHUNK_TOKENS = 1 << 20
"""Ids of a ``.bin`` file mapped at once (4 MiB of uint32)."""

COLUMN = "input_ids"
"""The column of ids in parquet and Arrow files, unless ``fields`` renames it."""

DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}

MDS_COLUMN = "tokens"
"""The column of ids llm-foundry's converters write to MDS shards (``ndarray:int32``, or ``bytes`` in older ones)."""

MDS_BYTES_DTYPES = {"uint16": "<u2", "uint32": "<u4", "int32": "<i4", "int64": "<i8"}
"""``token_dtype`` -> the ids of an MDS ``bytes`` column of token ids."""


def is_tokens(source: dict) -> bool:
    """Whether a source holds token ids."""
    return source.get("records") == TOKENS


def token_source_indices(spec: dict) -> list[int]:
    """The positions of a stage spec's token sources."""
    return [i for i, source in enumerate(spec["sources"]) if is_tokens(source)]


@dataclass
class TokenBatch(readers.Batch):
    """A :class:`.readers.Batch` of a token source: empty ``texts``, and each document's ids in ``tokens``."""

    tokens: list[np.ndarray] = field(default_factory=list)


# --------------------------------------------------------------------------- tokenizers


def load_named(source: dict, project_dir: str | os.PathLike, label: str) -> Any:
    """The tokenizer a token source names, loaded as the recipe's is (a hub id from the local cache).

    Raises:
        DataError: it does not load, naming the source.
    """
    try:
        return load_tokenizer(local_path(source["tokenizer"], project_dir))
    except DataError as e:
        raise DataError(f"{label}: {e}") from None


def vocabulary_difference(a: Any, b: Any, name_a: str, name_b: str) -> str | None:
    """How the vocabularies of two tokenizers differ (sizes, the first id that differs), or None if they are equal."""
    va, vb = a.get_vocab(), b.get_vocab()
    if va == vb:
        return None
    ia = {i: t for t, i in va.items()}
    ib = {i: t for t, i in vb.items()}
    first = min(i for i in set(ia) | set(ib) if ia.get(i) != ib.get(i))

    def shown(token: str | None) -> str:
        return "absent" if token is None else repr(token)

    return (
        f"{len(va)} tokens in {name_a} and {len(vb)} in {name_b}; the first difference is id {first}: "
        f"{shown(ia.get(first))} in {name_a}, {shown(ib.get(first))} in {name_b}"
    )


def check_tokenizers(request: dict, tokenizer: Any) -> None:
    """Each token source's tokenizer has the vocabulary of the recipe's, and a ``.bin`` source's ``eos_token_id`` is its end-of-text id.

    The recipe's chat markers (``tokenizer.special_tokens``) are added to both first, as the
    recipe adds them to its own.

    Args:
        request: a stage request (:func:`.stage_request.request_from_settings`).
        tokenizer: the recipe's tokenizer as the stage loaded it; None when the recipe trains one.

    Raises:
        DataError: naming the source, both tokenizers and what differs.
    """
    spec = request["spec"]
    settings = request["tokenizer"]
    recipe_name = repr(settings.get("path")) if settings.get("path") else "the trained tokenizer"
    for i in token_source_indices(spec):
        source = spec["sources"][i]
        label = readers.source_label(source, i)
        if tokenizer is None:
            raise DataError(
                f"{label}: holds ids of the tokenizer {source['tokenizer']!r}, and the recipe trains its own tokenizer "
                "(its ids mean other tokens); load that tokenizer with [tokenizer] path instead"
            )
        named = load_named(source, request["project_dir"], label)
        prepare_chat(named, None, settings.get("special_tokens") or ())
        name = repr(source["tokenizer"])
        difference = vocabulary_difference(named, tokenizer, name, f"the recipe's {recipe_name}")
        if difference is not None:
            raise DataError(
                f"{label}: the ids were made with the tokenizer {name}, whose vocabulary is not the recipe's "
                f"tokenizer {recipe_name}: {difference}; tokenize the data with the recipe's tokenizer, or train with "
                f"[tokenizer] path = {name}"
            )
        dtype = DTYPES.get(source.get("token_dtype") or "")
        if dtype is not None and len(tokenizer) > 1 << (8 * dtype.itemsize):
            raise DataError(
                f"{label}: token_dtype {source['token_dtype']} holds ids below {1 << (8 * dtype.itemsize):,}, and the "
                f"tokenizer has {len(tokenizer):,} tokens: the larger ids were cut when the files were written; "
                'write them as uint32 and set token_dtype = "uint32"'
            )
        eos = source.get("eos_token_id")
        if eos is not None and eos != tokenizer.eos_token_id:
            token = tokenizer.convert_ids_to_tokens(int(eos)) if eos < len(tokenizer) else None
            raise DataError(
                f"{label}: eos_token_id {eos} ({token!r}) is not the end-of-text id of the recipe's tokenizer "
                f"{recipe_name}, {tokenizer.eos_token_id} ({tokenizer.eos_token!r}), which follows every document in "
                f"the packed sequences; set eos_token_id = {tokenizer.eos_token_id} if the files end documents with it"
            )


def tokenizer_ids(spec: dict, project_dir: str | os.PathLike) -> dict[str, str]:
    """The fingerprint of each token source's tokenizer, by source label: part of the stage's cache key."""
    out = {}
    for i in token_source_indices(spec):
        source = spec["sources"][i]
        label = readers.source_label(source, i)
        out[label] = fingerprint(load_named(source, project_dir, label))
    return out


# --------------------------------------------------------------------------- reading


class _TokenReader:
    """Reads the documents of one token source: its settings, bad-record policy and stats."""

    def __init__(self, source: dict, paths: Any, label: str, stats: readers.ReadStats, vocab_size: int) -> None:
        self.source = source
        self.paths = paths
        self.label = label
        self.stats = stats
        self.vocab_size = int(vocab_size)
        self.on_error = source.get("on_error") or "error"
        self.column = (source.get("fields") or {}).get(COLUMN, COLUMN)

    def bad(self, where: str, reason: str) -> None:
        """Raise for a malformed row, or count it under ``on_error = "skip"``."""
        if self.on_error == "error":
            raise DataError(f"{self.label}: {where}: {reason}")
        self.stats.skipped += 1
        if len(self.stats.skipped_examples) < readers.MAX_SKIPPED_EXAMPLES:
            self.stats.skipped_examples.append(f"{where}: {reason}")

    def out_of_range(self, where: str, value: int) -> DataError:
        return DataError(
            f"{self.label}: {where} is id {value}, not below {self.vocab_size}, the size of the tokenizer's vocabulary; "
            "the ids were made with another tokenizer, or token_dtype is wrong"
        )

    def read(self, path: str, fmt: str) -> Iterator[tuple[np.ndarray, str, int]]:
        """``(ids, locator, bytes)`` of each document of one file."""
        if fmt == "bin":
            return self.bin(path)
        if fmt in ("parquet", "arrow", "datasets", "mds"):
            return getattr(self, fmt)(path)
        raise DataError(
            f"{self.label}: {self.paths.shown(path)}: token ids are read from .bin, parquet, Arrow, datasets and MDS files, not {fmt}"
        )

    # ----------------------------------------------------------------- .bin

    def bin(self, path: str) -> Iterator[tuple[np.ndarray, str, int]]:
        shown = self.paths.shown(path)
        name = self.source.get("token_dtype")
        eos = self.source.get("eos_token_id")
        if name not in DTYPES or eos is None:
            raise DataError(f"{self.label}: {shown}: a .bin token file needs token_dtype (uint16 or uint32) and eos_token_id")
        dtype = DTYPES[name]
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise DataError(f"{self.label}: {shown}: cannot read ({e.strerror or e})") from None
        if size % dtype.itemsize:
            raise DataError(
                f"{self.label}: {shown}: {size} bytes is not a whole number of {name} ids ({dtype.itemsize} bytes each); "
                "is token_dtype right, or is the file truncated?"
            )
        self.stats.files += 1
        n = size // dtype.itemsize
        pieces: list[np.ndarray] = []  # the document that runs across windows
        doc_start = 0
        for start in range(0, n, CHUNK_TOKENS):
            count = min(CHUNK_TOKENS, n - start)
            mapped = np.memmap(path, dtype=dtype, mode="r", offset=start * dtype.itemsize, shape=(count,))
            window = np.array(mapped)  # copied, and the mapping released: flat memory
            del mapped
            over = np.flatnonzero(window >= self.vocab_size)
            if len(over):
                at = start + int(over[0])
                raise self.out_of_range(f"{shown}: token {at} (byte {at * dtype.itemsize})", int(window[over[0]]))
            prev = 0
            for end in np.flatnonzero(window == eos).tolist():
                piece = window[prev:end]
                ids = np.concatenate([*pieces, piece]) if pieces else piece
                yield ids, f"{shown}@{doc_start}", len(ids) * dtype.itemsize
                pieces = []
                prev = end + 1
                doc_start = start + prev
            if prev < count:
                pieces.append(window[prev:])
        if pieces:  # the last document need not end with eos
            ids = np.concatenate(pieces)
            yield ids, f"{shown}@{doc_start}", len(ids) * dtype.itemsize

    # ----------------------------------------------------------------- columns of lists

    def check_column(self, schema: Any, shown: str) -> int:
        """The column is there and holds lists of numbers; return the bytes of one id."""
        import pyarrow as pa

        if self.column not in schema.names:
            raise DataError(
                f"{self.label}: {shown}: no column {self.column!r} of token ids; "
                f"available columns: {', '.join(schema.names) or 'none'}"
            )
        kind = schema.field(self.column).type
        listed = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
        inner = kind.value_type if listed else None
        if inner is None or not (pa.types.is_integer(inner) or pa.types.is_floating(inner) or pa.types.is_null(inner)):
            raise DataError(f"{self.label}: {shown}: column {self.column!r} holds {kind}, not lists of token ids")
        return max(1, inner.bit_width // 8) if not pa.types.is_null(inner) else 1

    def rows(self, batches: Iterable[Any], shown: str, width: int) -> Iterator[tuple[np.ndarray, str, int]]:
        """Documents of Arrow record batches or tables, with ``shown#ROW`` locators."""
        import pyarrow as pa

        row = 0
        for batch in batches:
            column = batch.column(self.column)
            for array in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
                yield from self.list_rows(array, shown, row, width)
                row += len(array)

    def list_rows(self, array: Any, shown: str, first_row: int, width: int) -> Iterator[tuple[np.ndarray, str, int]]:
        """The rows of one list array, checked in bulk: null rows and null, non-integer, negative or out-of-range ids."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(array)
        lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        null_row = array.is_null().to_numpy(zero_copy_only=False) if array.null_count else np.zeros(n, dtype=bool)
        flat = array.flatten()  # the values of the non-null rows, slicing taken care of
        problem = np.zeros(len(flat), dtype=np.int8)  # 1 null, 2 not an integer, 3 negative, 4 out of range
        if flat.null_count:
            problem[flat.is_null().to_numpy(zero_copy_only=False)] = 1
            flat = flat.fill_null(0)
        values = flat.to_numpy(zero_copy_only=False) if not pa.types.is_null(flat.type) else np.zeros(len(flat))
        if values.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                problem[(problem == 0) & ~(np.isfinite(values) & (values == np.floor(values)))] = 2
            values = np.where(problem == 2, 0, values)
        if values.dtype.kind != "u":
            problem[(problem == 0) & (values < 0)] = 3
        problem[(problem == 0) & (values >= self.vocab_size)] = 4
        flagged = np.flatnonzero(problem)
        flag_row = np.searchsorted(bounds, flagged, side="right") - 1
        ids_all = np.where(problem == 0, values, 0).astype(np.uint32)
        k = 0  # next flagged id
        for r in range(n):
            where = f"{shown}#{first_row + r}"
            if null_row[r]:
                self.bad(where, f"{self.column} is null, not a list of token ids")
                continue
            if k < len(flagged) and flag_row[k] == r:
                p = int(flagged[k])
                position = p - int(bounds[r])
                while k < len(flagged) and flag_row[k] == r:
                    k += 1
                code = int(problem[p])
                if code == 4:
                    raise self.out_of_range(f"{where}: position {position}", int(values[p]))
                if code == 1:
                    self.bad(where, f"the id at position {position} of {self.column} is null")
                else:
                    value = array.flatten()[p].as_py()
                    self.bad(where, f"id {value!r} at position {position} of {self.column} is {'not an integer' if code == 2 else 'negative'}")
                continue
            ids = ids_all[bounds[r] : bounds[r + 1]]
            yield ids, where, len(ids) * width

    def parquet(self, path: str) -> Iterator[tuple[np.ndarray, str, int]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        shown = self.paths.shown(path)
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{self.label}: {shown}: not a readable parquet file ({e})") from None
        with pf:
            self.stats.files += 1
            width = self.check_column(pf.schema_arrow, shown)
            try:
                yield from self.rows(pf.iter_batches(batch_size=4096, columns=[self.column]), shown, width)
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{self.label}: {shown}: truncated or corrupt parquet file ({e})") from None

    def arrow(self, path: str) -> Iterator[tuple[np.ndarray, str, int]]:
        import pyarrow as pa

        shown = self.paths.shown(path)
        with readers.open_ipc(path, self.label, shown) as (schema, batches):
            self.stats.files += 1
            width = self.check_column(schema, shown)
            try:
                yield from self.rows(batches, shown, width)
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{self.label}: {shown}: truncated or corrupt Arrow file ({e})") from None

    def datasets(self, path: str) -> Iterator[tuple[np.ndarray, str, int]]:
        import datasets
        import pyarrow as pa

        shown = self.paths.shown(path)
        files = readers._dataset_files(path, self.label, self.paths)
        try:
            ds = datasets.load_from_disk(path)
        except (OSError, ValueError, pa.ArrowException) as e:
            raise DataError(f"{self.label}: {shown}: cannot load the dataset ({e})") from None
        if isinstance(ds, datasets.DatasetDict):
            readers._raise_dataset_dict(self.label, path, self.paths)
        self.stats.files += len(files)
        width = self.check_column(ds.data.schema, shown)
        tables = ds.select_columns([self.column]).with_format("arrow").iter(batch_size=4096)
        yield from self.rows(tables, shown, width)


    # ----------------------------------------------------------------- MDS shards

    def mds(self, path: str) -> Iterator[tuple[np.ndarray, str, int]]:
        """An MDS dataset (:mod:`.mds`): one sample one document, its ids an ``ndarray`` or ``bytes`` column.

        The column is ``fields.input_ids`` when set, else ``input_ids``, else ``tokens``
        (llm-foundry's name). An ``ndarray`` holds its dtype; a ``bytes`` column holds raw ids
        of ``token_dtype``, ``int64`` unless set (llm-foundry's ``token_encoding_type`` default).
        """
        from . import mds

        renamed = COLUMN in (self.source.get("fields") or {})
        bytes_dtype = np.dtype(MDS_BYTES_DTYPES[self.source.get("token_dtype") or "int64"])
        chosen: dict[str, str] = {}

        def choose(columns: dict[str, str], shown: str) -> list[str]:
            self.stats.files += 1
            candidates = [self.column] if renamed else [COLUMN, MDS_COLUMN]
            name = next((c for c in candidates if c in columns), None)
            available = ", ".join(f"{n} ({e})" for n, e in columns.items()) or "none"
            if name is None:
                raise DataError(f"{self.label}: {shown}: no column {' or '.join(map(repr, candidates))} of token ids; columns: {available}")
            if not mds.is_token_ids(columns[name]):
                raise DataError(
                    f"{self.label}: {shown}: column {name!r} has encoding {columns[name]}, not token ids (ndarray or bytes)"
                    + ("; text is read with records = \"text\"" if mds.is_text(columns[name]) else "")
                )
            chosen["name"] = name
            return [name]

        for sample, where in mds.iter_samples(path, choose, self.label, self.paths.shown):
            encoding, data = sample[chosen["name"]]
            if encoding == "bytes":
                if len(data) % bytes_dtype.itemsize:
                    self.bad(where, f"{len(data)} bytes of {chosen['name']} are not a whole number of {bytes_dtype.name} ids; is token_dtype right?")
                    continue
                values = np.frombuffer(data, bytes_dtype)
            else:
                try:
                    values = mds.decode(encoding, data).reshape(-1)
                except ValueError as e:
                    self.bad(where, f"column {chosen['name']!r} ({encoding}) does not decode: {e}")
                    continue
            if values.dtype.kind == "f":
                if not np.all(np.isfinite(values) & (values == np.floor(values))):
                    self.bad(where, f"{chosen['name']} holds ids that are not integers")
                    continue
            elif values.dtype.kind not in "iu":
                self.bad(where, f"{chosen['name']} holds {values.dtype}, not integer ids")
                continue
            if values.dtype.kind != "u" and len(values) and values.min() < 0:
                position = int(np.flatnonzero(values < 0)[0])
                self.bad(where, f"id {values[position].item()!r} at position {position} of {chosen['name']} is negative")
                continue
            over = np.flatnonzero(values >= self.vocab_size)
            if len(over):
                raise self.out_of_range(f"{where}: position {int(over[0])}", int(values[over[0]]))
            yield values.astype(np.uint32), where, len(data)


def iter_batches(
    source: dict,
    project_dir: str | os.PathLike,
    *,
    vocab_size: int,
    index: int = 0,
    batch_size: int = 512,
    stats: readers.ReadStats | None = None,
) -> Iterator[TokenBatch]:
    """Stream the documents of a token source in batches, in :func:`.readers.expand_files` order.

    Empty documents (two end-of-text ids in a row, an empty list) are counted in
    ``stats.empty`` and dropped; ``max_documents`` and ``max_tokens`` stop the reading as for text.
    ``stats.bytes`` counts the ids' bytes as stored.

    Args:
        source: the source dict (``records = "tokens"``).
        project_dir: the directory relative paths start from.
        vocab_size: every id must be below this (the recipe tokenizer's size).
        index: the source's position in the recipe, for messages.
        batch_size: documents per batch.
        stats: counters to add to.

    Raises:
        DataError: bad data or a bad path, naming the source, the file and the row or position.
    """
    label = readers.source_label(source, index)
    stats = stats if stats is not None else readers.ReadStats()
    paths = readers._Paths(project_dir)
    reader = _TokenReader(source, paths, label, stats, vocab_size)
    max_documents = source.get("max_documents")
    max_tokens = source.get("max_tokens")  # as for text: stop before the document that would pass it
    taken = 0
    documents = (doc for path, fmt in readers._units(source, paths, label) for doc in reader.read(path, fmt))
    tokens: list[np.ndarray] = []
    ids: list[str] = []
    yielded = 0
    try:
        for token_ids, locator, size in documents:
            if len(token_ids) == 0:
                stats.empty += 1
                continue
            if max_tokens is not None:
                taken += len(token_ids)
                if taken > max_tokens:
                    break
            tokens.append(np.ascontiguousarray(token_ids, dtype=np.uint32))
            ids.append(locator)
            yielded += 1
            stats.documents += 1
            stats.bytes += size
            done = max_documents is not None and yielded >= max_documents
            if len(tokens) == batch_size or done:
                yield TokenBatch([""] * len(tokens), ids, {}, None, tokens)
                tokens, ids = [], []
            if done:
                return
    finally:
        documents.close()
    if tokens:
        yield TokenBatch([""] * len(tokens), ids, {}, None, tokens)
