"""Load, split and tokenize the training corpus of a recipe.

Everything here is deterministic for a given recipe and data (file order,
split, packing), because the lock file records a fingerprint of the token
stream and a resumed or re-run training must see the same samples in the same
order.

All datasets are kept in memory (``keep_in_memory=True``, and HF ``datasets``
builders run against a throw-away cache directory): the corpora recipes train
on are small, and a training run should not leave Arrow cache files in the
user's home directory. Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pathlib
import sysconfig
import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import datasets
    import torch

BUILTINS = ("python-docs", "python-stdlib")

_EXCLUDED_STDLIB_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})

# file extension -> datasets builder name
_EXTENSION_FORMATS = {
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".md": "text",
    ".text": "text",
}
# recipe format name -> datasets builder name
_FORMATS = {"jsonl": "json", "json": "json", "parquet": "parquet", "text": "text"}


# --------------------------------------------------------------------------- builtins


def _python_docs() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def _stdlib_files() -> list[tuple[str, pathlib.Path]]:
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _EXCLUDED_STDLIB_DIRS]
        for name in filenames:
            if name.endswith(".py"):
                path = pathlib.Path(dirpath, name)
                found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda item: item[0])
    return found


def builtin_texts(name: str, *, limit: int | None = None) -> list[str]:
    """Return the documents of a built-in corpus.

    * ``"python-docs"``: the prose of Python's documentation, one document per
      ``pydoc_data.topics`` topic, sorted by topic key.
    * ``"python-stdlib"``: the source of Python's standard library, one
      document per ``*.py`` file under ``sysconfig.get_paths()["stdlib"]``
      sorted by relative POSIX path; ``site-packages``, test directories and
      ``__pycache__`` are skipped, and so are files that are not valid UTF-8.

    Both ship with every Python, so they work offline; their content depends
    on the Python version. Empty documents are dropped.

    Args:
        name: One of :data:`BUILTINS`.
        limit: Keep only the first ``limit`` documents (and read no further).

    Returns:
        The documents, in their deterministic order.

    Raises:
        ValueError: On an unknown name.
    """
    if name == "python-docs":
        texts = [t for t in _python_docs() if t]
        return texts if limit is None else texts[:limit]
    if name == "python-stdlib":
        texts = []
        for _, path in _stdlib_files():
            if limit is not None and len(texts) >= limit:
                break
            try:
                text = path.read_bytes().decode("utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if text:
                texts.append(text)
        return texts
    raise ValueError(f"unknown builtin corpus {name!r}; expected one of {', '.join(BUILTINS)}")


# --------------------------------------------------------------------------- files


def _expand_globs(patterns: list[str], project_dir: pathlib.Path) -> list[str]:
    """Expand globs in order (each one sorted), dropping duplicates and directories."""
    files: list[str] = []
    seen: set[str] = set()
    for pattern in patterns:
        if os.path.isabs(pattern):
            full = pattern
        else:
            full = os.path.join(glob.escape(str(project_dir)), pattern)
        matches = sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p))
        if not matches:
            raise FileNotFoundError(f"data path {pattern!r} matched no files (relative to project dir {project_dir})")
        for path in matches:
            key = os.path.normpath(os.path.abspath(path))
            if key not in seen:
                seen.add(key)
                files.append(key)
    return files


def _infer_format(files: list[str]) -> str:
    by_format: dict[str, list[str]] = {}
    for path in files:
        fmt = _EXTENSION_FORMATS.get(pathlib.Path(path).suffix.lower(), "unknown")
        by_format.setdefault(fmt, []).append(path)
    if "unknown" in by_format:
        raise ValueError(
            "cannot infer the data format of "
            + ", ".join(by_format["unknown"])
            + f" from the extension (known: {', '.join(sorted(_EXTENSION_FORMATS))}); set format explicitly"
        )
    if len(by_format) > 1:
        detail = "; ".join(f"{fmt}: {', '.join(paths)}" for fmt, paths in sorted(by_format.items()))
        raise ValueError(f"data files mix formats ({detail}); use one source per format")
    return next(iter(by_format))


def _load_files(files: list[str], builder: str) -> "datasets.Dataset":
    import datasets

    kwargs: dict[str, Any] = {}
    if builder == "text":
        kwargs["sample_by"] = "document"
    # The builder writes Arrow files under cache_dir; keep_in_memory loads the
    # result into memory, so the temporary cache can go right away.
    with tempfile.TemporaryDirectory(prefix="recipec-data-") as cache_dir:
        return datasets.load_dataset(
            builder,
            data_files=files,
            split="train",
            cache_dir=cache_dir,
            keep_in_memory=True,
            **kwargs,
        )


def _nonempty_texts(ds: "datasets.Dataset") -> "datasets.Dataset":
    def keep(texts: list[str | None]) -> list[bool]:
        return [bool(t) for t in texts]

    return ds.filter(keep, batched=True, input_columns="text", keep_in_memory=True)


def load_source(source: dict, project_dir: str | os.PathLike) -> "datasets.Dataset":
    """Load one data source of a recipe as a dataset of documents.

    ``source`` is either ``{"builtin": name}`` (see :func:`builtin_texts`) or
    ``{"path": globs, "format": ..., "text_field": ...}``. Globs are relative
    to ``project_dir`` unless absolute, expanded with ``recursive=True``; each
    glob's matches are sorted and the globs are taken in order (a file matched
    twice is loaded once). ``format`` ("jsonl", "parquet", "text" or None to
    infer it from the extensions) selects the HF ``datasets`` builder; a text
    file is one document (not one per line), and ``text_field`` is then
    ignored. Empty or null texts are dropped; ``max_documents`` (optional)
    then keeps the first N documents.

    Args:
        source: The source table of the recipe, already validated.
        project_dir: Directory the recipe lives in.

    Returns:
        An in-memory ``datasets.Dataset`` with a single string column ``text``.

    Raises:
        FileNotFoundError: If a glob matches no file.
        ValueError: On mixed or unknown file formats, a missing or non-text
            ``text_field`` column (the message lists the available columns),
            or a source that yields no document.
    """
    import datasets

    project_dir = pathlib.Path(project_dir)
    max_documents = source.get("max_documents")
    if max_documents is not None and (not isinstance(max_documents, int) or max_documents < 1):
        raise ValueError(f"max_documents must be a positive integer or None, got {max_documents!r}")

    if source.get("builtin") is not None:
        name = source["builtin"]
        texts = builtin_texts(name, limit=max_documents)
        ds = datasets.Dataset.from_dict({"text": texts}, features=datasets.Features({"text": datasets.Value("string")}))
        what = f"builtin {name!r}"
    elif source.get("path") is not None:
        patterns = source["path"]
        if isinstance(patterns, (str, os.PathLike)):
            patterns = [patterns]
        patterns = [os.fspath(p) for p in patterns]
        what = f"path {patterns!r}"
        files = _expand_globs(patterns, project_dir)
        fmt = source.get("format")
        if fmt is None:
            builder = _infer_format(files)
        elif fmt in _FORMATS:
            builder = _FORMATS[fmt]
        else:
            raise ValueError(f"unknown data format {fmt!r}; expected one of jsonl, parquet, text")
        ds = _load_files(files, builder)
        field = "text" if builder == "text" else source.get("text_field") or "text"
        if field not in ds.column_names:
            raise ValueError(
                f"text_field {field!r} not found in {', '.join(files)}; available columns: {', '.join(ds.column_names)}"
            )
        feature = ds.features[field]
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise ValueError(f"text_field {field!r} of {what} holds {feature}, not text")
        ds = ds.select_columns([field])
        if field != "text":
            ds = ds.rename_column(field, "text")
        if feature.dtype != "string":
            ds = ds.cast_column("text", datasets.Value("string"))
    else:
        raise ValueError(f"a data source needs 'builtin' or 'path', got keys {sorted(source)}")

    ds = _nonempty_texts(ds)
    if max_documents is not None and len(ds) > max_documents:
        ds = ds.select(range(max_documents), keep_in_memory=True)
    if len(ds) == 0:
        raise ValueError(f"data source {what} yielded no non-empty documents")
    return ds


def load_documents(sources: list[dict], project_dir: str | os.PathLike) -> "datasets.Dataset":
    """Load and concatenate all data sources of a recipe, in order.

    Args:
        sources: Source dicts as accepted by :func:`load_source`.
        project_dir: Directory the recipe lives in.

    Returns:
        A dataset with columns ``text`` and ``source`` (the int index of the
        document's source in ``sources``).

    Raises:
        ValueError: If ``sources`` is empty, or as :func:`load_source`.
        FileNotFoundError: As :func:`load_source`.
    """
    import datasets

    if not sources:
        raise ValueError("no data sources given")
    parts = []
    for index, source in enumerate(sources):
        ds = load_source(source, project_dir)
        parts.append(ds.add_column("source", [index] * len(ds), feature=datasets.Value("int64")))
    if len(parts) == 1:
        return parts[0]
    return datasets.concatenate_datasets(parts)


# --------------------------------------------------------------------------- split


def split_documents(
    ds: "datasets.Dataset", eval_fraction: float, seed: int
) -> tuple["datasets.Dataset", "datasets.Dataset"]:
    """Hold out whole documents for evaluation.

    Splitting by document (before tokenization and packing) keeps eval text
    out of training entirely. The eval size is ``round(eval_fraction * n)``,
    at least 1 and at most ``n - 1``; both parts are shuffled with ``seed``
    (``Dataset.train_test_split``), so the split is deterministic.

    Args:
        ds: Documents, e.g. from :func:`load_documents`.
        eval_fraction: Fraction of documents to hold out, in [0, 1). 0 returns
            ``ds`` unchanged and an empty eval dataset with the same columns.
        seed: Shuffle seed.

    Returns:
        ``(train, eval)`` datasets.

    Raises:
        ValueError: If ``eval_fraction`` is outside [0, 1), or it is positive
            and ``ds`` has fewer than 2 documents.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")
    n = len(ds)
    if eval_fraction == 0:
        return ds, ds.select([], keep_in_memory=True)
    if n < 2:
        raise ValueError(
            f"cannot hold out an eval split by document from {n} document(s); add documents or set eval_fraction to 0"
        )
    n_eval = min(n - 1, max(1, round(eval_fraction * n)))
    parts = ds.train_test_split(test_size=n_eval, seed=seed, shuffle=True, keep_in_memory=True)
    return parts["train"], parts["test"]


# --------------------------------------------------------------------------- tokenize


def _tokenize_fn(tokenizer, eos_id: int):
    def tokenize(texts: list[str]) -> list[list[int]]:
        encoded = tokenizer(
            texts,
            add_special_tokens=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )["input_ids"]
        return [ids + [eos_id] for ids in encoded if ids]

    return tokenize


def _pack(ds: "datasets.Dataset", seq_len: int) -> "datasets.Dataset":
    import datasets
    import numpy as np
    import pyarrow as pa

    column = ds.with_format("arrow")[:]["input_ids"]
    values = [np.asarray(chunk.flatten().to_numpy(zero_copy_only=False), dtype=np.int64) for chunk in column.chunks]
    stream = np.concatenate(values) if values else np.zeros(0, dtype=np.int64)
    n_blocks = len(stream) // seq_len
    stream = stream[: n_blocks * seq_len]
    offsets = np.arange(0, n_blocks * seq_len + 1, seq_len, dtype=np.int64)
    if len(stream) < 2**31:
        blocks = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(stream))
    else:
        blocks = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(stream))
    return datasets.Dataset(pa.table({"input_ids": blocks, "labels": blocks}))


def tokenize_and_pack(
    ds: "datasets.Dataset",
    tokenizer,
    seq_len: int,
    *,
    packing: bool,
    num_proc: int | None = None,
) -> "datasets.Dataset":
    """Turn documents into fixed-length training examples.

    Each document's ``text`` is tokenized without special tokens and the
    tokenizer's EOS id appended; documents with no tokens are skipped. The
    token stream is the concatenation of these, in dataset order.

    * ``packing=True``: the stream is cut into consecutive blocks of exactly
      ``seq_len`` tokens and the remainder dropped (HF ``run_clm``'s
      ``group_texts``, but over the whole stream, not per map batch).
      Columns ``input_ids`` and ``labels`` (equal; the model shifts).
    * ``packing=False``: one example per document, truncated to ``seq_len``
      and right-padded with the pad token (the EOS token if the tokenizer has
      none). Columns ``input_ids``, ``attention_mask`` (1 for tokens, 0 for
      padding) and ``labels`` (``input_ids`` with padding set to -100).

    Runs in memory (``keep_in_memory=True``); no cache files are written.

    Args:
        ds: Dataset with a ``text`` column.
        tokenizer: A transformers tokenizer with an EOS token.
        seq_len: Example length in tokens (>= 1).
        packing: Pack documents into full blocks, or pad one per example.
        num_proc: Worker processes for tokenization (None: in-process).

    Returns:
        The examples, formatted as torch tensors (``with_format("torch")``).

    Raises:
        ValueError: If ``seq_len < 1`` or the tokenizer has no EOS token.
    """
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("the tokenizer has no eos token; documents cannot be separated")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    tokenize = _tokenize_fn(tokenizer, eos_id)
    map_kwargs: dict[str, Any] = dict(
        batched=True,
        input_columns="text",
        remove_columns=ds.column_names,
        keep_in_memory=True,
        num_proc=num_proc if num_proc and num_proc > 1 else None,
        desc="Tokenizing",
    )

    if packing:
        def encode(texts):
            return {"input_ids": tokenize(texts)}

        tokenized = ds.map(encode, **map_kwargs)
        return _pack(tokenized, seq_len).with_format("torch")

    def encode_padded(texts):
        input_ids, attention_mask, labels = [], [], []
        for ids in tokenize(texts):
            ids = ids[:seq_len]
            pad = seq_len - len(ids)
            input_ids.append(ids + [pad_id] * pad)
            attention_mask.append([1] * len(ids) + [0] * pad)
            labels.append(ids + [-100] * pad)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    return ds.map(encode_padded, **map_kwargs).with_format("torch")


def collate(batch: list[dict]) -> dict[str, "torch.Tensor"]:
    """Stack examples from :func:`tokenize_and_pack` into a batch.

    Args:
        batch: Examples with ``input_ids`` and ``labels`` (and optionally
            ``attention_mask``), as tensors or lists of equal length.

    Returns:
        ``input_ids``, ``labels`` and, when present, ``attention_mask`` as
        int64 tensors of shape ``[len(batch), seq_len]``.

    Raises:
        ValueError: On an empty batch.
    """
    import torch

    if not batch:
        raise ValueError("cannot collate an empty batch")
    keys = ["input_ids", "labels"]
    if "attention_mask" in batch[0]:
        keys.append("attention_mask")
    return {key: torch.stack([torch.as_tensor(example[key], dtype=torch.long) for example in batch]) for key in keys}


def select_sources(ds: "datasets.Dataset", sources: list[int]) -> "datasets.Dataset":
    """The documents of ``ds`` whose ``source`` column is in ``sources``, in order.

    A schedule phase may train on a subset of a recipe's sources (an anneal phase
    that adds a high-quality source); this picks that phase's documents.

    Args:
        ds: Documents with a ``source`` column, as from :func:`load_documents`.
        sources: Indices into the recipe's sources.

    Returns:
        ``ds`` itself when every source present is wanted, else the filtered rows.
    """
    wanted = set(sources)
    if set(ds.unique("source")) <= wanted:
        return ds
    return ds.filter(lambda row: row["source"] in wanted, keep_in_memory=True)


def mix_replay(main: "datasets.Dataset", replay: "datasets.Dataset", fraction: float, seed: int) -> "datasets.Dataset":
    """Add replayed sequences so that ``fraction`` of the training sequences are replay.

    Continual pre-training replays a little of the old data to limit forgetting. With
    packed sequences every sequence holds ``seq_len`` tokens, so this is also the share
    of tokens. The replayed sequences are a seeded permutation of ``replay`` (cycled if
    more are needed than it has), appended to ``main``; the training loader's shuffle
    spreads them over the batches, so the share is exact per epoch and holds per batch
    in expectation.

    Args:
        main: Tokenized training sequences of the new data.
        replay: Tokenized sequences of the old data, same columns as ``main``.
        fraction: Share of replay in the result, in [0, 1).
        seed: Seed of the permutation.

    Returns:
        ``main`` followed by ``round(len(main) * fraction / (1 - fraction))`` replay rows.

    Raises:
        ValueError: If ``fraction`` is outside [0, 1), or replay is needed but empty.
    """
    import datasets
    import random

    if not 0 <= fraction < 1:
        raise ValueError(f"replay fraction must be in [0, 1), got {fraction!r}")
    wanted = round(len(main) * fraction / (1 - fraction))
    if wanted == 0:
        return main
    if len(replay) == 0:
        raise ValueError("replay was asked for but the replay data has no sequences")
    order = list(range(len(replay)))
    random.Random(seed).shuffle(order)
    indices = [order[i % len(order)] for i in range(wanted)]
    picked = replay.select(indices, keep_in_memory=True)
    return datasets.concatenate_datasets([main, picked.cast(main.features)]).with_format(main.format["type"])


def dataset_fingerprint(ds: "datasets.Dataset") -> str:
    """Hash the ``input_ids`` of every row, in order.

    The hash covers each row's length and token ids, so it changes when the
    tokens, the row boundaries or the row order change. It reads Arrow data in
    batches (cheap for ~1e7 tokens) and ignores the dataset's output format.

    Args:
        ds: A dataset with an ``input_ids`` column (e.g. from :func:`tokenize_and_pack`).

    Returns:
        A sha256 hex digest.
    """
    import numpy as np
    import pyarrow as pa

    digest = hashlib.sha256(b"recipec-input_ids-v1\0")
    for table in ds.with_format("arrow").iter(batch_size=4096):
        column = table.column("input_ids")
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        lengths = np.asarray(array.value_lengths().to_numpy(zero_copy_only=False), dtype="<i8")
        values = np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype="<i8")
        digest.update(lengths.tobytes())
        digest.update(values.tobytes())
    return digest.hexdigest()
