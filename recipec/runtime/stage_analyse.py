"""The data stage's first pass: read every source and analyse each document, in parallel.

Each source is read in batches (:func:`.readers.iter_batches`); worker processes compute,
for every document, what its source's filter chain needs (see :mod:`.stage_filter`): the
verdicts of the per-document filters, dedup keys and signatures. A worker skips the costly
features of a document that an earlier per-document filter of the chain already dropped.
The texts go to a scratch Arrow file and token ids to a flat file, so memory stays flat
as the corpus grows (apart from dedup signatures and a few numbers per document). The
documents of a token source (:mod:`.token_sources`) go to the flat file as they are read,
with empty texts and no work for the workers. The result is a :class:`Corpus`: every
document by its index, in source order then file order.
"""

from __future__ import annotations

import collections
import os
import pathlib
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from . import chat, formats
from . import filters as F
from . import readers, token_sources
from .readers import DataError
from .stage_filter import Link, score_fields
from .stage_filter import labels as source_labels
from .tokenizer import encode

BATCH_SIZE = 512  # documents per work item


# --------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def _init_worker(chains: list[list[F.Filter]], tokenizer: Any, examples: dict | None = None) -> None:
    _WORKER.update(chains=chains, tokenizer=tokenizer, examples=examples)


def _analyse(source: int, texts: list[str], fields: dict[str, list], tokenize_all: bool) -> dict:
    """Worker: the features the chain of ``source`` needs, for one batch of its documents."""
    n = len(texts)
    tokenizer = _WORKER["tokenizer"]
    alive = np.ones(n, dtype=bool)
    features: list[Any] = []
    tokens: list[np.ndarray | None] = [None] * n

    def token_ids(idx: Iterable[int]) -> list[np.ndarray]:
        need = [i for i in idx if tokens[i] is None]
        for i, ids in zip(need, encode(tokenizer, [texts[i] for i in need])):
            tokens[i] = ids
        return [tokens[i] for i in idx]  # type: ignore[misc]

    for f in _WORKER["chains"][source]:
        idx = np.flatnonzero(alive)
        if f.role in (F.SELECT, F.MODEL):  # decided in the main process
            features.append(None)
            continue
        sub = [texts[i] for i in idx]
        if f.role == F.DEDUP:
            features.append((idx, *f.features(sub)))
            continue
        docs = F.Documents(
            sub,
            {k: [v[i] for i in idx] for k, v in fields.items()},
            (lambda idx=idx: token_ids(idx)) if tokenizer is not None else None,
        )
        verdict = np.zeros(n, dtype=np.int8)
        verdict[idx] = f.verdicts(docs)
        features.append(verdict)
        alive &= verdict == 0
    if tokenize_all:
        token_ids(range(n))
    scores = {k: np.asarray(v, dtype=np.float64) for k, v in fields.items()}
    return {"features": features, "tokens": tokens, "scores": scores}


def _tokenize_batch(texts: list[str]) -> list[np.ndarray]:
    """Worker: token ids of one batch of kept documents."""
    return encode(_WORKER["tokenizer"], texts)


def _tokenize_examples(sources: list[int], examples: list[str]) -> list[tuple[Any, Any, str | None, float | None]]:
    """Worker: ``(ids, mask, None, margin)``, ``(None, None, drop reason, None)`` or ``(None, None, "error: ...", None)``
    per example; ``margin`` is a preference pair's (None when its source names no margin field)."""
    import json

    settings = _WORKER["examples"]
    out: list[tuple[Any, Any, str | None, float | None]] = []
    for source, text in zip(sources, examples):
        example = json.loads(text)
        try:
            if "chosen" in example or "label" in example:  # preference data: one row per pair (or KTO example)
                ids, mask, reason = chat.tokenize_preference(
                    _WORKER["tokenizer"], example, max_length=settings["max_length"], overflow=settings["overflow"]
                )
            else:
                ids, mask, reason = chat.fit_example(
                    _WORKER["tokenizer"], example, train_on=settings["train_on"][source],
                    max_length=settings["max_length"], overflow=settings["overflow"],
                )
        except (chat.TemplateError, ValueError) as e:
            out.append((None, None, f"error: {e}", None))
            continue
        if ids:  # kept (perhaps truncated); else dropped, with its reason
            out.append((np.asarray(ids, dtype=np.uint32), np.asarray(mask, dtype=np.uint8), reason, example.get("margin")))
        else:
            out.append((None, None, reason, None))
    return out


class _Pool:
    """Ordered parallel map with a bounded number of items in flight (flat memory)."""

    def __init__(self, num_proc: int, initargs: tuple) -> None:
        self.num_proc = num_proc
        self.pool = None
        if num_proc > 1:
            import multiprocessing

            os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker process
            self.pool = multiprocessing.get_context("fork").Pool(num_proc, _init_worker, initargs)
        else:
            _init_worker(*initargs)

    def imap(self, fn: Callable, items: Iterable[tuple]) -> Iterator[tuple[tuple, Any]]:
        if self.pool is None:
            for item in items:
                yield item, fn(*item[1:])
            return
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append((item, self.pool.apply_async(fn, item[1:])))
            if len(pending) >= 2 * self.num_proc:
                head, result = pending.popleft()
                yield head, result.get()
        while pending:
            head, result = pending.popleft()
            yield head, result.get()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


# --------------------------------------------------------------------------- token store


class TokenStore:
    """Token ids (or, with ``dtype`` "<u1", supervision masks) of documents, appended to a flat file and read back in place."""

    def __init__(self, path: pathlib.Path, n_docs: int = 0, dtype: str = "<u4") -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.file = open(path, "ab")
        self.size = 0
        self.start = np.full(n_docs, -1, dtype=np.int64)
        self.length = np.full(n_docs, -1, dtype=np.int64)
        self._reader: Any = None

    def grow(self, n_docs: int) -> None:
        if n_docs > len(self.start):
            extra = n_docs - len(self.start)
            self.start = np.concatenate([self.start, np.full(extra, -1, dtype=np.int64)])
            self.length = np.concatenate([self.length, np.full(extra, -1, dtype=np.int64)])

    def add(self, doc: int, ids: np.ndarray) -> None:
        self.start[doc] = self.size
        self.length[doc] = len(ids)
        self.file.write(np.ascontiguousarray(ids, dtype=self.dtype).tobytes())
        self.size += len(ids)

    def get(self, doc: int) -> np.ndarray:
        # plain reads, not a memory map: mapped pages would count as the process's memory
        if self._reader is None:
            self.file.flush()
            self._reader = open(self.path, "rb")
        n = int(self.length[doc])
        if n <= 0:
            return np.zeros(0, dtype=self.dtype)
        width = self.dtype.itemsize
        self._reader.seek(int(self.start[doc]) * width)
        return np.frombuffer(self._reader.read(n * width), dtype=self.dtype)

    def close(self) -> None:
        self.file.close()
        if self._reader is not None:
            self._reader.close()


# --------------------------------------------------------------------------- the corpus


class Corpus:
    """Every document read, by its index (source order, then file order), with what the workers found.

    Attributes:
        labels: the sources' labels.
        n_docs: documents read.
        source_of: int32, each document's source.
        chars: int64, each document's characters.
        source_start, source_end: each source's documents are ``source_start[s]:source_end[s]``.
        stats: each source's :class:`.readers.ReadStats`.
        tokens: the token ids found so far (``tokens.length`` is -1 for the others).
    """

    def __init__(self, work: pathlib.Path, labels: list[str], n_chains: list[int]) -> None:
        self.work = work
        self.labels = labels
        self.n_docs = 0
        self.source_of = np.zeros(0, dtype=np.int32)
        self.chars = np.zeros(0, dtype=np.int64)
        self.source_start = [0] * len(labels)
        self.source_end = [0] * len(labels)
        self.stats = [readers.ReadStats() for _ in labels]
        self.tokens = TokenStore(work / "tokens.bin")
        # examples (a source whose records are not text): each document's supervision mask,
        # and why tokenizing dropped it (too long, nothing supervised left)
        self.masks = TokenStore(work / "masks.bin", dtype="<u1")
        self.dropped: dict[int, str] = {}
        self.truncated = 0
        self.margins: dict[int, float] = {}  # preference pairs whose source names a margin field: each pair's
        # per source and chain position: the per-batch features the workers left
        self.features: list[list[list[Any]]] = [[[] for _ in range(n)] for n in n_chains]
        self.scores: list[dict[str, list[np.ndarray]]] = [collections.defaultdict(list) for _ in labels]
        # sources of token ids (records = "tokens"): read as ids, with empty texts that no filter reads
        self.token_sources: list[int] = []


    def finish(self, n: int, source_of: list[np.ndarray], chars: list[np.ndarray]) -> None:
        """Close the first pass: ``n`` documents read, the per-batch source indices and character counts joined.

        Raises:
            DataError: a source without documents.
        """
        self.n_docs = n
        self.tokens.grow(n)
        if source_of:
            self.source_of = np.concatenate(source_of)
            self.chars = np.concatenate(chars)
        for i, label in enumerate(self.labels):
            if self.source_end[i] == self.source_start[i]:
                raise DataError(f"{label}: no documents (every record was empty or skipped)")

    @property
    def docs_file(self) -> pathlib.Path:
        return self.work / "docs.arrow"

    def feature(self, source: int, position: int) -> Any:
        """What the workers found for the filter at ``position`` of ``source``'s chain, over its documents."""
        parts = self.features[source][position]
        if not parts:
            return None
        if isinstance(parts[0], np.ndarray):
            return np.concatenate(parts)
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(len(parts[0])))

    def scores_of(self, name: str, docs: np.ndarray) -> np.ndarray:
        """The numeric field ``name`` of ``docs`` (NaN for a source that has none)."""
        out = np.full(self.n_docs, np.nan)
        for s, parts in enumerate(self.scores):
            if parts.get(name):
                out[self.source_start[s] : self.source_end[s]] = np.concatenate(parts[name])
        return out[docs]

    def texts(self, docs: np.ndarray, column: int = 0) -> Iterator[tuple[np.ndarray, list[str]]]:
        """Texts of ``docs`` (ascending), in batches, from the scratch Arrow file (``column`` 2: the examples)."""
        import pyarrow as pa

        with pa.OSFile(str(self.docs_file)) as source:  # read, not mapped: flat memory
            reader = pa.ipc.open_stream(source)
            offset = 0
            pos = 0
            for batch in reader:
                size = batch.num_rows
                end = np.searchsorted(docs, offset + size, side="left")
                local = docs[pos:end] - offset
                if len(local):
                    yield docs[pos:end], batch.column(column).take(pa.array(local)).to_pylist()
                pos = end
                offset += size

    def text_of(self, doc: int) -> tuple[str, str]:
        """``(locator, text)`` of one document."""
        import pyarrow as pa

        with pa.memory_map(str(self.docs_file)) as source:
            table = pa.ipc.open_stream(source).read_all()
            return table.column(1)[doc].as_py(), table.column(0)[doc].as_py()

    def locator(self, doc: int) -> str:
        """Where a document was read: ``path:LINE``, ``path#ROW``, ``path`` or ``builtin:name``."""
        return self.text_of(doc)[0]


def read_and_analyse(
    spec: dict,
    by_source: list[list[Link]],
    project_dir: pathlib.Path,
    work: pathlib.Path,
    tokenizer: Any,
    num_proc: int,
) -> Corpus:
    """Read every source into ``work`` and run the workers' part of each chain.

    Raises:
        DataError: bad data, or a source without documents.
    """
    import pyarrow as pa

    import json

    labels = source_labels(spec)
    examples_mode = formats.has_examples(spec["sources"])
    corpus = Corpus(work, labels, [len(chain) for chain in by_source])
    tokenize_all = bool(spec["count_dropped_tokens"]) and tokenizer is not None
    corpus.token_sources = token_sources.token_source_indices(spec)
    worker_chains = [[] if i in corpus.token_sources else [link.filter for link in chain] for i, chain in enumerate(by_source)]
    pool = _Pool(num_proc, (worker_chains, tokenizer))
    source_of: list[np.ndarray] = []
    chars: list[np.ndarray] = []

    def items() -> Iterator[tuple]:
        for i, source in enumerate(spec["sources"]):
            if i in corpus.token_sources:
                batches = token_sources.iter_batches(
                    source, project_dir, vocab_size=len(tokenizer), index=i, batch_size=BATCH_SIZE, stats=corpus.stats[i]
                )
            else:
                batches = readers.iter_batches(
                    source, project_dir, index=i, fields=score_fields(by_source[i]), batch_size=BATCH_SIZE, stats=corpus.stats[i],
                    tokenizer=tokenizer,
                )
            for batch in batches:
                yield (batch, i, batch.texts, batch.fields, tokenize_all and i not in corpus.token_sources)

    # the example column holds each document as an example (JSON): a text record as {"text": ...}
    schema = pa.schema([("text", pa.string()), ("id", pa.string()), ("example", pa.string())])
    n = 0
    last_source = -1
    try:
        with pa.OSFile(str(corpus.docs_file), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for (batch, i, *_), result in pool.imap(_analyse, items()):
                if i != last_source:
                    for s in range(last_source + 1, i + 1):
                        corpus.source_start[s] = n
                    last_source = i
                size = len(batch.texts)
                examples = batch.examples
                if examples is None:
                    examples = [json.dumps({"text": t}, ensure_ascii=False) for t in batch.texts] if examples_mode else [None] * size
                columns = [pa.array(batch.texts, pa.string()), pa.array(batch.ids, pa.string()), pa.array(examples, pa.string())]
                writer.write_batch(pa.record_batch(columns, schema=schema))
                source_of.append(np.full(size, i, dtype=np.int32))
                chars.append(np.fromiter((len(t) for t in batch.texts), dtype=np.int64, count=size))
                for position, feature in enumerate(result["features"]):
                    if isinstance(feature, tuple):  # computed for a subset: shift to global indices
                        feature = (feature[0] + n,) + feature[1:]
                    corpus.features[i][position].append(feature)
                for name, values in result["scores"].items():
                    corpus.scores[i][name].append(values)
                corpus.tokens.grow(n + size)
                for j, ids in enumerate(result["tokens"]):
                    if ids is not None:
                        corpus.tokens.add(n + j, ids)
                for j, ids in enumerate(getattr(batch, "tokens", ())):  # a token source's documents
                    corpus.tokens.add(n + j, ids)
                n += size
                corpus.source_end[i] = n
    finally:
        pool.close()
    for s in range(last_source + 1, len(labels)):
        corpus.source_start[s] = corpus.source_end[s] = n
    for s in range(len(labels)):
        corpus.source_end[s] = max(corpus.source_end[s], corpus.source_start[s])
    corpus.finish(n, source_of, chars)
    return corpus


def tokenize_examples(corpus: Corpus, spec: dict, docs: np.ndarray, tokenizer: Any, num_proc: int, executor: Any = None) -> int:
    """Tokenize ``docs`` as examples with their supervision masks (in parallel); return how many.

    Each source's examples are masked by its ``train_on`` (unset: ``assistant`` for
    conversations, ``completion`` for prompt/completion, ``all`` for text) and fitted to
    ``max_length`` by ``overflow``; an example dropped there is left with no tokens and
    its reason in ``corpus.dropped``.

    ``executor`` (:class:`.stage_ray.RayExecutor`) tokenizes on a Ray cluster instead of
    ``num_proc`` local processes.

    Raises:
        DataError: the chat template fails on an example, naming the source and the record.
    """
    train_on = [s.get("train_on") or default_train_on(s.get("records") or "text") for s in spec["sources"]]
    settings = {"train_on": train_on, "max_length": int(spec["max_length"] or spec["seq_len"]), "overflow": spec["overflow"]}
    pool = _Pool(num_proc if executor is None else 1, ([], tokenizer, settings))
    try:
        items = ((ids, [int(corpus.source_of[d]) for d in ids], texts) for ids, texts in corpus.texts(docs, 2))
        found = (
            pool.imap(_tokenize_examples, items)
            if executor is None
            else (((ids,), results) for ids, results in executor.tokenize_examples(corpus, docs, tokenizer, settings))
        )
        for (ids, *_), results in found:
            for doc, (token_ids, mask, reason, margin) in zip(ids, results):
                doc = int(doc)
                if reason is not None and reason.startswith("error: "):
                    label = corpus.labels[int(corpus.source_of[doc])]
                    raise DataError(f"{label}: {corpus.locator(doc)}: {reason[len('error: '):]}")
                if reason == "truncated":
                    corpus.truncated += 1
                elif reason is not None:
                    corpus.dropped[doc] = reason
                    token_ids, mask = np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.uint8)
                elif margin is not None:
                    corpus.margins[doc] = margin
                corpus.tokens.add(doc, token_ids)
                corpus.masks.grow(corpus.n_docs)
                corpus.masks.add(doc, mask)
    finally:
        pool.close()
    return len(docs)


def default_train_on(records: str) -> str:
    """What the loss sees of a source's records when its ``train_on`` is unset."""
    return {"text": "all", "prompt_completion": "completion"}.get(records, "assistant")


def tokenize(corpus: Corpus, docs: np.ndarray, tokenizer: Any, num_proc: int, executor: Any = None) -> int:
    """Tokenize the documents of ``docs`` that are not yet (in parallel); return how many were.

    ``executor`` (:class:`.stage_ray.RayExecutor`) tokenizes on a Ray cluster instead of
    ``num_proc`` local processes.
    """
    need = docs[corpus.tokens.length[docs] < 0]
    if len(need) and executor is not None:
        for ids, encoded in executor.tokenize(corpus, need, tokenizer):
            for doc, token_ids in zip(ids, encoded):
                corpus.tokens.add(int(doc), token_ids)
    elif len(need):
        pool = _Pool(num_proc, ([], tokenizer))
        try:
            for (ids, _), encoded in pool.imap(_tokenize_batch, corpus.texts(need)):
                for doc, token_ids in zip(ids, encoded):
                    corpus.tokens.add(int(doc), token_ids)
        finally:
            pool.close()
    return len(need)
