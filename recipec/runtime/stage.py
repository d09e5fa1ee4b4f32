"""The data stage: read, filter, hold out, tokenize, mix and pack, cached by content.

One stage run turns a recipe's data settings into training and evaluation sequences:

1. **Read and analyse** (parallel, streaming). Each source is read in batches
   (``readers.iter_batches``); worker processes compute, for every document, what the
   filter chain needs: the verdicts of the per-document filters (length, regex, Gopher
   quality and repetition, score, decontamination), exact-dedup keys and MinHash
   signatures. A worker skips the costly features of a document that an earlier
   per-document filter of the chain already dropped. The texts go to a temporary Arrow
   file on disk, so memory stays flat as the corpus grows (apart from dedup signatures and
   a few numbers per document).
2. **Filter** (main process, in chain order): each source's own filters, then the
   filters of every source. Dedup keeps the first document (in source order, then file
   order) of each group; sampling is seeded by ``seed``. Every filter is counted:
   documents, characters and (where known) tokens in, kept and dropped, with a few
   dropped examples.
3. **Hold out** ``eval_fraction`` of the kept documents (seeded, by document).
4. **Tokenize** the kept documents (parallel), after training the tokenizer on the kept
   training documents when the recipe trains one.
5. **Mix and pack**, once per data segment (a stretch of schedule phases with one
   mixture): a source's weight is its share of the segment's training tokens, the
   mixture's size is the sum of its sources' tokens, and a source with fewer tokens than
   its share is repeated, or the mixture shrinks (``stop``), or it is an error
   (``on_exhausted``). Documents (each followed by EOS) are concatenated in a seeded order
   and cut into ``seq_len`` blocks, or with ``packing`` off truncated and padded one per
   sequence.

The output is a cache entry under ``cache_dir/<key>/``: ``train-<segment>.arrow``,
``eval.arrow`` (Arrow streams of ``input_ids``, plus ``attention_mask`` without packing),
``data_report.json``, ``manifest.json`` and, for a trained tokenizer, ``tokenizer/``. The
key hashes the sources' content, every setting above and the tokenizer's content: change
any byte of data or any setting and a new entry is built; change nothing and the entry is
reused. Entries are written to a temporary directory and renamed into place, so an
interrupted or concurrent stage never leaves a half-written entry.

Run it with ``recipec data RECIPE``, or let the training script run it (its main process
does; the others wait). ``python -m recipec_runtime.stage REQUEST.json`` is the entry
point the script uses, in a fresh process.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from . import filters as F
from . import readers
from .readers import DataError
from .stage_request import STAGE_VERSION, local_path, make_spec, request_from_settings  # noqa: F401 -- the script's names

BATCH_SIZE = 512  # documents per work item
EXAMPLES = 3  # dropped examples kept per filter
EXCERPT = 240  # characters of each example

# the filters the main process applies from worker features; the rest are decided in the workers
_DEDUP = ("exact_dedup", "minhash_dedup")
_GLOBAL = ("sample", "score_sample")
_GOPHER = ("gopher_quality", "gopher_repetition")


# --------------------------------------------------------------------------- spec and key


def _source_for_key(source: dict) -> dict:
    """What of a source decides the documents and their filtering (not its name or schedule)."""
    return {k: v for k, v in source.items() if k not in ("name", "phases", "weight", "phase_weights", "path")}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what decides a tokenizer's ids: its serialised model and special tokens."""
    digest = hashlib.sha256(b"recipec-tokenizer-v1\0")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:  # a slow tokenizer: its vocabulary
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(json.dumps([type(tokenizer).__name__, tokenizer.eos_token_id, tokenizer.pad_token_id]).encode())
    return digest.hexdigest()


def cache_key(spec: dict, project_dir: str | os.PathLike, tokenizer_id: str) -> tuple[str, dict]:
    """The cache key of a stage run, and the fingerprints it is made of.

    Args:
        spec: from :func:`make_spec`.
        project_dir: the directory relative data paths start from.
        tokenizer_id: :func:`tokenizer_fingerprint` of the tokenizer, or a hash of the
            tokenizer's training settings when the stage trains it.

    Returns:
        ``(key, fingerprints)``: a sha256 hex digest and the per-source content hashes.
    """
    chains = _chains(spec)
    sources = [
        readers.fingerprint_source(s, project_dir, index=i, fields=_score_fields(chains[i]))
        for i, s in enumerate(spec["sources"])
    ]
    decontam = {}
    for chain in [spec["filters"]] + [s.get("filters", []) for s in spec["sources"]]:
        for f in chain:
            if f["type"] == "decontaminate":
                src = {"path": f["path"], "text_field": f.get("text_field", "text")}
                decontam[json.dumps(f, sort_keys=True)] = readers.fingerprint_source(src, project_dir)
    material = {
        "spec": {**spec, "sources": [_source_for_key(s) for s in spec["sources"]]},
        "sources": sources,
        "decontaminate": decontam,
        "tokenizer": tokenizer_id,
    }
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return key, {"sources": sources, "decontaminate": decontam, "tokenizer": tokenizer_id}


# --------------------------------------------------------------------------- output


@dataclass
class StageOutput:
    """A complete cache entry."""

    dir: pathlib.Path
    report: dict = field(repr=False)

    @property
    def train_files(self) -> list[pathlib.Path]:
        return [self.dir / f"train-{i}.arrow" for i in range(len(self.report["segments"]))]

    @property
    def eval_file(self) -> pathlib.Path:
        return self.dir / "eval.arrow"

    @property
    def tokenizer_dir(self) -> pathlib.Path | None:
        path = self.dir / "tokenizer"
        return path if path.is_dir() else None


def load_entry(entry: pathlib.Path) -> StageOutput | None:
    """The cache entry at ``entry``, or None if it is not a complete one."""
    manifest = entry / "manifest.json"
    report = entry / "data_report.json"
    if not manifest.is_file() or not report.is_file():
        return None
    return StageOutput(entry, json.loads(report.read_text()))


def load_sequences(path: str | os.PathLike) -> "Any":
    """A ``train-*.arrow`` or ``eval.arrow`` file as a memory-mapped ``datasets.Dataset`` (torch format)."""
    import datasets

    return datasets.Dataset.from_file(str(path)).with_format("torch")


# --------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def _init_worker(chains: list[list[dict]], ngram_sets: list[dict[int, np.ndarray]], tokenizer: Any) -> None:
    _WORKER.update(chains=chains, ngrams=ngram_sets, tokenizer=tokenizer)


ENCODE_CHARS = 1 << 20  # characters per tokenizer call: its encodings cost ~100 bytes a token


def _encode(texts: list[str]) -> list[np.ndarray]:
    """Token ids of each text, without special tokens, in slices of about ENCODE_CHARS."""
    out: list[np.ndarray] = []
    start = size = 0
    for end, text in enumerate(texts, 1):
        size += len(text)
        if size >= ENCODE_CHARS or end == len(texts):
            out += _encode_slice(texts[start:end])
            start, size = end, 0
    return out


def _encode_slice(texts: list[str]) -> list[np.ndarray]:
    tok = _WORKER["tokenizer"]
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        encodings = backend.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.uint32) for e in encodings]
    ids = tok(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    return [np.asarray(x, dtype=np.uint32) for x in ids]


def _gopher_params(f: dict, defaults: dict) -> dict:
    params = {k: f[k] for k in defaults if k in f}
    for pair_key in ("max_top_ngram_char_ratios", "max_dup_ngram_char_ratios"):
        if pair_key in params:
            params[pair_key] = {int(n): float(r) for n, r in params[pair_key]}
    if f["type"] == "gopher_quality" and "stop_words" in f:
        params["stop_words"] = tuple(f["stop_words"])
    for rule in f.get("skip", []):
        params[rule] = None
    return params


def _doc_verdicts(f: dict, source: int, position: int, texts: list[str], fields: dict[str, list]) -> np.ndarray:
    """int8 verdict per text for a per-document filter: 0 kept, >0 the reason it is dropped."""
    kind = f["type"]
    if kind == "length":
        if f["unit"] == "chars":
            n = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        else:
            n = F.count_words(texts)
        return (~F.length_keep(n, f.get("min"), f.get("max"))).astype(np.int8)
    if kind == "regex":
        return (~F.regex_keep(texts, f.get("include", []), f.get("exclude", []), f.get("ignore_case", False))).astype(np.int8)
    if kind == "gopher_quality":
        return F.gopher_quality(texts, **_gopher_params(f, F.GOPHER_QUALITY_DEFAULTS)).astype(np.int8)
    if kind == "gopher_repetition":
        return F.gopher_repetition(texts, **_gopher_params(f, F.GOPHER_REPETITION_DEFAULTS)).astype(np.int8)
    if kind == "score":
        s = np.asarray(fields[f["field"]], dtype=np.float64)
        keep = np.ones(len(texts), dtype=bool)
        if f.get("min") is not None:
            keep &= s >= f["min"]
        if f.get("max") is not None:
            keep &= s <= f["max"]
        return (~keep).astype(np.int8)
    if kind == "decontaminate":
        return F.contaminated(texts, _WORKER["ngrams"][source][position], int(f["ngram"])).astype(np.int8)
    raise ValueError(f"not a per-document filter: {kind!r}")


def _analyse(source: int, texts: list[str], fields: dict[str, list], tokenize_all: bool) -> dict:
    """Worker: the features the chain of ``source`` needs, for one batch of its documents."""
    n = len(texts)
    alive = np.ones(n, dtype=bool)
    features: list[Any] = []
    tokens: list[np.ndarray | None] = [None] * n
    for position, f in enumerate(_WORKER["chains"][source]):
        kind = f["type"]
        idx = np.flatnonzero(alive)
        sub = [texts[i] for i in idx]
        if kind in _GLOBAL:
            features.append(None)
            continue
        if kind == "exact_dedup":
            keys = F.exact_keys(sub, normalize=f.get("normalize", True))
            features.append((idx, keys))
            continue
        if kind == "minhash_dedup":
            sigs = F.minhash_signatures(sub, int(f["shingle_size"]), int(f["num_perm"]), int(f["seed"]))
            features.append((idx, F.lsh_band_keys(sigs, int(f["bands"])), sigs))
            continue
        if kind == "length" and f["unit"] == "tokens":
            need = [i for i in idx if tokens[i] is None]
            for i, ids in zip(need, _encode([texts[i] for i in need])):
                tokens[i] = ids
            lengths = np.array([len(tokens[i]) for i in idx], dtype=np.int64)
            verdict_sub = (~F.length_keep(lengths, f.get("min"), f.get("max"))).astype(np.int8)
        else:
            sub_fields = {k: [v[i] for i in idx] for k, v in fields.items()}
            verdict_sub = _doc_verdicts(f, source, position, sub, sub_fields)
        verdict = np.zeros(n, dtype=np.int8)
        verdict[idx] = verdict_sub
        features.append(verdict)
        alive &= verdict == 0
    if tokenize_all:
        need = [i for i in range(n) if tokens[i] is None]
        for i, ids in zip(need, _encode([texts[i] for i in need])):
            tokens[i] = ids
    scores = {k: np.asarray(v, dtype=np.float64) for k, v in fields.items()}
    return {"features": features, "tokens": tokens, "scores": scores}


def _tokenize_batch(texts: list[str]) -> list[np.ndarray]:
    """Worker: token ids of one batch of kept documents."""
    return _encode(texts)


class _Pool:
    """Ordered parallel map with a bounded number of items in flight (flat memory)."""

    def __init__(self, num_proc: int, initargs: tuple) -> None:
        self.num_proc = num_proc
        self.initargs = initargs
        self.pool = None
        if num_proc > 1:
            import multiprocessing

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


class _TokenStore:
    """Token ids of documents, appended to a flat uint32 file and read back memory-mapped."""

    def __init__(self, path: pathlib.Path, n_docs: int = 0) -> None:
        self.path = path
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
        self.file.write(np.ascontiguousarray(ids, dtype="<u4").tobytes())
        self.size += len(ids)

    def get(self, doc: int) -> np.ndarray:
        # plain reads, not a memory map: mapped pages would count as the process's memory
        if self._reader is None:
            self.file.flush()
            self._reader = open(self.path, "rb")
        n = int(self.length[doc])
        if n <= 0:
            return np.zeros(0, dtype="<u4")
        self._reader.seek(int(self.start[doc]) * 4)
        return np.frombuffer(self._reader.read(n * 4), dtype="<u4")

    def close(self) -> None:
        self.file.close()
        if self._reader is not None:
            self._reader.close()


# --------------------------------------------------------------------------- the stage


def _labels(spec: dict) -> list[str]:
    return [readers.source_label(s, i) for i, s in enumerate(spec["sources"])]


def _chains(spec: dict) -> list[list[tuple[str, dict]]]:
    """For each source, its filter chain: (label, filter) pairs, own filters first."""
    chains = []
    labels = _labels(spec)
    for i, s in enumerate(spec["sources"]):
        own = [(f"{labels[i]}.filters[{j}]", f) for j, f in enumerate(s.get("filters", []))]
        chains.append(own + [(f"filters[{j}]", f) for j, f in enumerate(spec["filters"])])
    return chains


def _score_fields(chain: list[tuple[str, dict]]) -> list[str]:
    return sorted({f["field"] for _, f in chain if f["type"] in ("score", "score_sample")})


def _ngram_sets(spec: dict, chains: list[list[tuple[str, dict]]], project_dir: pathlib.Path) -> list[dict[int, np.ndarray]]:
    """The n-gram set of each decontamination filter, by source and chain position."""
    built: dict[str, np.ndarray] = {}
    out: list[dict[int, np.ndarray]] = []
    for chain in chains:
        sets: dict[int, np.ndarray] = {}
        for position, (_, f) in enumerate(chain):
            if f["type"] != "decontaminate":
                continue
            key = json.dumps(f, sort_keys=True)
            if key not in built:
                src = {"path": f["path"], "text_field": f.get("text_field", "text"), "name": "decontaminate"}
                texts = [t for batch in readers.iter_batches(src, project_dir) for t in batch.texts]
                built[key] = F.ngram_set(texts, int(f["ngram"]))
            sets[position] = built[key]
        out.append(sets)
    return out


# the JSON files a tokenizer directory may hold; transformers parses each without saying which failed
TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json")


def _check_tokenizer_json(path: str) -> None:
    """Name the file (and line) of a local tokenizer whose JSON does not parse, before transformers trips on it."""
    where = pathlib.Path(path)
    files = [where / name for name in TOKENIZER_JSON] if where.is_dir() else [where] if where.suffix == ".json" else []
    for file in files:
        try:
            text = file.read_bytes().decode("utf-8")
        except FileNotFoundError:
            continue
        except OSError as e:
            raise DataError(f"tokenizer: {file}: cannot read ({e.strerror or e})") from None
        except UnicodeDecodeError as e:
            raise DataError(f"tokenizer: {file}: not valid UTF-8 (byte {e.start})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"tokenizer: {file}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
        if not isinstance(data, dict):
            raise DataError(f"tokenizer: {file}: expected a JSON object, got {type(data).__name__}")


def load_tokenizer(path: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """``AutoTokenizer.from_pretrained``, with a DataError naming the file for a tokenizer that does not load.

    Raises:
        DataError: a JSON file of a local tokenizer does not parse (file, line and column), or
            transformers cannot load the tokenizer at all (the path and its error).
    """
    from transformers import AutoTokenizer

    _check_tokenizer_json(path)
    try:
        return AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 -- transformers raises anything from a bad tokenizer; name it, not a traceback
        raise DataError(f"tokenizer: {path}: cannot load the tokenizer ({type(e).__name__}: {e})") from None


def _load_tokenizer(request: dict) -> Any:
    spec = request["tokenizer"]
    tok = load_tokenizer(spec["path"], spec.get("revision"), bool(spec.get("trust_remote_code")))
    if tok.eos_token_id is None:
        raise DataError(f"the tokenizer {spec['path']!r} has no end-of-text token; documents cannot be separated")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _tokenizer_id(request: dict, tokenizer: Any) -> str:
    if tokenizer is not None:
        return tokenizer_fingerprint(tokenizer)
    return hashlib.sha256(json.dumps({"train": request["tokenizer"]["train"]}, sort_keys=True).encode()).hexdigest()


def _cache_root(request: dict) -> pathlib.Path:
    root = pathlib.Path(request["cache_dir"]).expanduser()
    if not root.is_absolute():
        root = pathlib.Path(request["project_dir"]) / root
    return root


def lookup(request: dict, tokenizer: Any = None) -> StageOutput | None:
    """The cache entry for ``request`` if it is complete, else None (hashes the sources).

    Args:
        request: ``{"spec", "project_dir", "cache_dir", "tokenizer", "num_proc"}``;
            ``tokenizer`` is ``{"path", "revision", "trust_remote_code"}`` or ``{"train": {...}}``.
        tokenizer: the loaded tokenizer, if the caller has it (saves loading it again).
    """
    if tokenizer is None and "train" not in request["tokenizer"]:
        tokenizer = _load_tokenizer(request)
    key, _ = cache_key(request["spec"], request["project_dir"], _tokenizer_id(request, tokenizer))
    return load_entry(_cache_root(request) / key[:32])


def run(request: dict, *, force: bool = False, log: Callable[[str], None] = print) -> StageOutput:
    """Run the data stage for ``request`` unless its cache entry exists (see :func:`lookup`).

    Returns:
        The complete cache entry.

    Raises:
        DataError: bad data, a filter chain that keeps nothing, or an impossible mixture.
    """
    started = time.perf_counter()
    spec = request["spec"]
    project_dir = pathlib.Path(request["project_dir"])
    trained = "train" in request["tokenizer"]
    tokenizer = None if trained else _load_tokenizer(request)
    key, fingerprints = cache_key(spec, project_dir, _tokenizer_id(request, tokenizer))
    root = _cache_root(request)
    entry = root / key[:32]
    if not force:
        found = load_entry(entry)
        if found is not None:
            log(f"data: cached {entry}")
            return found
    root.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=root))
    try:
        report = _Builder(request, work, tokenizer, log).build()
        report["key"] = key
        report["fingerprints"] = fingerprints
        report["timings"]["total_s"] = round(time.perf_counter() - started, 3)
        (work / "data_report.json").write_text(json.dumps(report, indent=2) + "\n")
        manifest = {"key": key, "stage_version": STAGE_VERSION, "spec": spec, "fingerprints": fingerprints}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for scratch in ("docs.arrow", "tokens.bin"):
            (work / scratch).unlink(missing_ok=True)
        if force and entry.exists():
            trash = root / f".old-{uuid.uuid4().hex}"
            os.rename(entry, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(work, entry)
        except OSError:  # another stage finished the same entry first: use it
            if load_entry(entry) is None:
                raise
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log(f"data: wrote {entry}")
    return StageOutput(entry, json.loads((entry / "data_report.json").read_text()))


class _FilterStats:
    def __init__(self, label: str, f: dict, labels: list[str]) -> None:
        self.label = label
        self.f = f
        self.docs_in = self.docs_dropped = 0
        self.chars_in = self.chars_dropped = 0
        self.by_source = {name: [0, 0] for name in labels}
        self.reasons: collections.Counter = collections.Counter()
        self.examples: list[tuple[int, str]] = []
        self.dropped_docs: list[np.ndarray] = []
        self.tokens_in = self.tokens_dropped = 0


class _Builder:
    """One stage run inside a scratch directory."""

    def __init__(self, request: dict, work: pathlib.Path, tokenizer: Any, log: Callable[[str], None]) -> None:
        self.request = request
        self.spec = request["spec"]
        self.project_dir = pathlib.Path(request["project_dir"])
        self.work = work
        self.tokenizer = tokenizer
        self.log = log
        self.labels = _labels(self.spec)
        self.chains = _chains(self.spec)
        n = int(request.get("num_proc") or 0)
        self.num_proc = n if n > 0 else len(os.sched_getaffinity(0))
        self.timings: dict[str, float] = {}

    # ---- pass 1: read and analyse

    def _items(self, stats: list[readers.ReadStats]) -> Iterator[tuple]:
        tokenize_all = bool(self.spec["count_dropped_tokens"]) and self.tokenizer is not None
        for i, source in enumerate(self.spec["sources"]):
            fields = _score_fields(self.chains[i])
            for batch in readers.iter_batches(
                source, self.project_dir, index=i, fields=fields, batch_size=BATCH_SIZE, stats=stats[i]
            ):
                yield (batch, i, batch.texts, batch.fields, tokenize_all)

    def read_and_analyse(self) -> None:
        import pyarrow as pa

        t0 = time.perf_counter()
        chain_dicts = [[f for _, f in chain] for chain in self.chains]
        ngrams = _ngram_sets(self.spec, self.chains, self.project_dir)
        if self.num_proc > 1:
            os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker process
        pool = _Pool(self.num_proc, (chain_dicts, ngrams, self.tokenizer))
        self.stats = [readers.ReadStats() for _ in self.spec["sources"]]
        self.tokens = _TokenStore(self.work / "tokens.bin")
        source_of: list[np.ndarray] = []
        chars: list[np.ndarray] = []
        # per source and chain position: list of per-batch features
        self.features: list[list[list[Any]]] = [[[] for _ in chain] for chain in self.chains]
        self.scores: list[dict[str, list[np.ndarray]]] = [collections.defaultdict(list) for _ in self.chains]
        self.source_start = [0] * len(self.chains)
        self.source_end = [0] * len(self.chains)
        schema = pa.schema([("text", pa.string()), ("id", pa.string())])
        n = 0
        last_source = -1
        try:
            with pa.OSFile(str(self.work / "docs.arrow"), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
                for (batch, i, *_), result in pool.imap(_analyse, self._items(self.stats)):
                    if i != last_source:
                        for s in range(last_source + 1, i + 1):
                            self.source_start[s] = n
                        last_source = i
                    size = len(batch.texts)
                    writer.write_batch(pa.record_batch([pa.array(batch.texts, pa.string()), pa.array(batch.ids, pa.string())], schema=schema))
                    source_of.append(np.full(size, i, dtype=np.int32))
                    chars.append(np.fromiter((len(t) for t in batch.texts), dtype=np.int64, count=size))
                    for position, feature in enumerate(result["features"]):
                        if isinstance(feature, tuple):  # computed for a subset: shift to global indices
                            feature = (feature[0] + n,) + feature[1:]
                        self.features[i][position].append(feature)
                    for name, values in result["scores"].items():
                        self.scores[i][name].append(values)
                    self.tokens.grow(n + size)
                    for j, ids in enumerate(result["tokens"]):
                        if ids is not None:
                            self.tokens.add(n + j, ids)
                    n += size
                    self.source_end[i] = n
        finally:
            pool.close()
        for s in range(last_source + 1, len(self.chains)):
            self.source_start[s] = self.source_end[s] = n
        for s in range(len(self.chains)):
            self.source_end[s] = max(self.source_end[s], self.source_start[s])
        self.n_docs = n
        self.tokens.grow(n)
        self.source_of = np.concatenate(source_of) if source_of else np.zeros(0, dtype=np.int32)
        self.chars = np.concatenate(chars) if chars else np.zeros(0, dtype=np.int64)
        for i, label in enumerate(self.labels):
            if self.source_end[i] == self.source_start[i]:
                raise DataError(f"{label}: no documents (every record was empty or skipped)")
        self.timings["read_and_analyse_s"] = round(time.perf_counter() - t0, 3)
        self.log(f"data: read {n} documents ({self.chars.sum() / 1e6:.1f} M characters) in {self.timings['read_and_analyse_s']:.1f} s")

    # ---- pass 2: the filter chain

    def _feature(self, source: int, position: int) -> Any:
        parts = self.features[source][position]
        if not parts:
            return None
        if isinstance(parts[0], np.ndarray):
            return np.concatenate(parts)
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(len(parts[0])))

    def _apply(self, st: _FilterStats, docs: np.ndarray, positions: dict[int, int], scope: int, alive: np.ndarray) -> None:
        """Run one filter over ``docs`` (alive, ascending) and clear the dropped ones in ``alive``.

        ``positions`` maps each source the filter covers to the filter's position in that
        source's chain (where the workers left its features); ``scope`` is the source for a
        source's own filter, -1 for a filter of every source.
        """
        f = st.f
        kind = f["type"]
        drop = np.zeros(len(docs), dtype=bool)
        reason = np.zeros(len(docs), dtype=np.int16)
        dup_of: dict[int, int] = {}
        seed_key = [self.spec["seed"], scope + 1, min(positions.values()) if positions else 0]
        if kind in _DEDUP:
            parts = [self._feature(s, p) for s, p in positions.items()]
            parts = [x for x in parts if x is not None and len(x[0])]
            if parts:
                idx = np.concatenate([x[0] for x in parts])
                order = np.argsort(idx, kind="stable")
                idx = idx[order]
                cols = [np.concatenate([x[k] for x in parts])[order] for k in range(1, len(parts[0]))]
                rows = np.searchsorted(idx, docs)
                if kind == "exact_dedup":
                    index: Any = F.ExactDedupIndex()
                else:
                    index = F.NearDedupIndex(int(f["bands"]), float(f["threshold"]))
                added: list[int] = []
                for j, (doc, row) in enumerate(zip(docs.tolist(), rows.tolist())):
                    if kind == "exact_dedup":
                        first = index.check_and_add(cols[0][row])
                    else:
                        first = index.check_and_add(cols[0][row], cols[1][row])
                    if first is None:
                        added.append(doc)
                    else:
                        drop[j] = True
                        dup_of[doc] = added[first]
        elif kind == "sample":
            u = np.random.default_rng(seed_key + [0x5A4D]).random(self.n_docs)
            drop = u[docs] >= float(f["rate"])
        elif kind == "score_sample":
            scores = self._scores(f["field"], docs)
            keep_n = int(round(float(f["rate"]) * len(docs)))
            gumbel = np.random.default_rng(seed_key + [0x5C0E]).gumbel(size=self.n_docs)
            keys = scores / float(f["temperature"]) + gumbel[docs]
            drop = np.ones(len(docs), dtype=bool)
            drop[np.argsort(-keys, kind="stable")[:keep_n]] = False
        else:
            verdict = np.zeros(self.n_docs, dtype=np.int8)
            for s, p in positions.items():
                v = self._feature(s, p)
                if v is not None:
                    verdict[self.source_start[s] : self.source_end[s]] = v
            reason = verdict[docs].astype(np.int16)
            drop = reason > 0
        dropped = docs[drop]
        alive[dropped] = False
        st.dropped_docs.append(dropped)
        st.docs_in += len(docs)
        st.docs_dropped += len(dropped)
        st.chars_in += int(self.chars[docs].sum())
        st.chars_dropped += int(self.chars[dropped].sum())
        n_in = np.bincount(self.source_of[docs], minlength=len(self.labels))
        n_drop = np.bincount(self.source_of[dropped], minlength=len(self.labels))
        for k, label in enumerate(self.labels):
            st.by_source[label][0] += int(n_in[k])
            st.by_source[label][1] += int(n_drop[k])
        rules = F.GOPHER_QUALITY_RULES if kind == "gopher_quality" else F.GOPHER_REPETITION_RULES
        if kind in _GOPHER:
            for code, count in zip(*np.unique(reason[drop], return_counts=True)):
                st.reasons[rules[int(code) - 1]] += int(count)
        for j in np.flatnonzero(drop)[: max(0, EXAMPLES - len(st.examples))]:
            doc = int(docs[j])
            why = rules[int(reason[j]) - 1] if kind in _GOPHER else ""
            if doc in dup_of:
                why = f"duplicate of document {dup_of[doc]}"
            st.examples.append((doc, why))

    def _scores(self, name: str, docs: np.ndarray) -> np.ndarray:
        out = np.full(self.n_docs, np.nan)
        for s, parts in enumerate(self.scores):
            if parts.get(name):
                out[self.source_start[s] : self.source_end[s]] = np.concatenate(parts[name])
        return out[docs]

    def filter(self) -> np.ndarray:
        t0 = time.perf_counter()
        alive = np.ones(self.n_docs, dtype=bool)
        self.filter_stats: list[_FilterStats] = []
        n_own = [len(s.get("filters", [])) for s in self.spec["sources"]]
        for s, chain in enumerate(self.chains):
            docs_range = np.arange(self.source_start[s], self.source_end[s])
            for position in range(n_own[s]):
                label, f = chain[position]
                st = _FilterStats(label, f, self.labels)
                self._apply(st, docs_range[alive[docs_range]], {s: position}, s, alive)
                self.filter_stats.append(st)
        for j, f in enumerate(self.spec["filters"]):
            st = _FilterStats(f"filters[{j}]", f, self.labels)
            positions = {s: n_own[s] + j for s in range(len(self.chains))}
            self._apply(st, np.flatnonzero(alive), positions, -1, alive)
            self.filter_stats.append(st)
        self.timings["filter_s"] = round(time.perf_counter() - t0, 3)
        if not alive.any():
            raise DataError("the filters dropped every document:\n" + self._filter_table())
        return alive

    def _filter_table(self) -> str:
        lines = [f"  {'filter':<32} {'type':<18} {'docs in':>9} {'dropped':>9}"]
        for st in self.filter_stats:
            lines.append(f"  {st.label:<32} {st.f['type']:<18} {st.docs_in:>9} {st.docs_dropped:>9}")
        return "\n".join(lines)

    # ---- split, tokenizer, tokens

    def split(self, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kept = np.flatnonzero(alive)
        fraction = float(self.spec["eval_fraction"])
        if fraction == 0:
            return kept, kept[:0]
        if len(kept) < 2:
            raise DataError(
                f"{len(kept)} document(s) passed the filters: too few to hold out an eval split by document; "
                "add documents or set eval_fraction to 0"
            )
        n_eval = min(len(kept) - 1, max(1, round(fraction * len(kept))))
        perm = np.random.default_rng([self.spec["seed"], 0xE7A1]).permutation(len(kept))
        return np.sort(kept[perm[n_eval:]]), np.sort(kept[perm[:n_eval]])

    def _texts(self, docs: np.ndarray) -> Iterator[tuple[np.ndarray, list[str]]]:
        """Texts of ``docs`` (ascending), in batches, from the scratch Arrow file."""
        import pyarrow as pa

        with pa.OSFile(str(self.work / "docs.arrow")) as source:  # read, not mapped: flat memory
            reader = pa.ipc.open_stream(source)
            offset = 0
            pos = 0
            for batch in reader:
                size = batch.num_rows
                end = np.searchsorted(docs, offset + size, side="left")
                local = docs[pos:end] - offset
                if len(local):
                    yield docs[pos:end], batch.column(0).take(pa.array(local)).to_pylist()
                pos = end
                offset += size

    def _text_of(self, doc: int) -> tuple[str, str]:
        import pyarrow as pa

        with pa.memory_map(str(self.work / "docs.arrow")) as source:
            table = pa.ipc.open_stream(source).read_all()
            return table.column(1)[doc].as_py(), table.column(0)[doc].as_py()

    def train_tokenizer(self, train_docs: np.ndarray) -> None:
        from .tokenizer import train_bpe

        t0 = time.perf_counter()
        settings = self.request["tokenizer"]["train"]
        limit = settings.get("max_documents")
        docs = train_docs if limit is None else train_docs[:limit]
        texts = [t for _, batch in self._texts(docs) for t in batch]
        tok = train_bpe(texts, int(settings.get("vocab_size", 8192)), min_frequency=int(settings.get("min_frequency", 2)))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.save_pretrained(self.work / "tokenizer")
        self.tokenizer = tok
        self.timings["tokenizer_train_s"] = round(time.perf_counter() - t0, 3)
        self.log(f"data: trained a {len(tok)}-token BPE tokenizer on {len(texts)} documents")

    def tokenize(self, docs: np.ndarray) -> None:
        t0 = time.perf_counter()
        need = docs[self.tokens.length[docs] < 0]
        if len(need):
            if self.num_proc > 1:
                os.environ["TOKENIZERS_PARALLELISM"] = "false"
            pool = _Pool(self.num_proc, ([], [], self.tokenizer))
            try:
                for (ids, _), encoded in pool.imap(_tokenize_batch, self._texts(need)):
                    for doc, token_ids in zip(ids, encoded):
                        self.tokens.add(int(doc), token_ids)
            finally:
                pool.close()
        self.timings["tokenize_s"] = round(time.perf_counter() - t0, 3)
        self.log(f"data: tokenized {len(need)} documents in {self.timings['tokenize_s']:.1f} s")

    # ---- mixture and packing

    def _mixture(self, index: int, segment: dict, train_docs: np.ndarray) -> tuple[np.ndarray, dict]:
        spec = self.spec
        active = list(segment["sources"])
        by_source = {s: train_docs[self.source_of[train_docs] == s] for s in active}
        avail = {s: int((self.tokens.length[d] + 1).sum()) for s, d in by_source.items()}
        order_rng = np.random.default_rng([spec["seed"], 0x0DE4, index])
        weights = segment.get("weights")
        info: dict[str, Any] = {"sources": [self.labels[s] for s in active], "available_tokens": {self.labels[s]: avail[s] for s in active}}
        if weights is None and spec.get("temperature") is None:
            instances = np.concatenate([by_source[s] for s in active])
            info["asked"] = None
            info["repeats"] = {self.labels[s]: 1.0 for s in active}
            if len(instances) == 0:
                raise DataError(f"data segment {index} ({', '.join(info['sources'])}) has no training documents left")
            return order_rng.permutation(instances), info
        if weights is None:
            t = float(spec["temperature"])
            raw = np.array([avail[s] ** (1.0 / t) for s in active], dtype=np.float64)
        else:
            raw = np.array(weights, dtype=np.float64)
        w = raw / raw.sum()
        info["asked"] = {self.labels[s]: float(x) for s, x in zip(active, w)}
        empty = [self.labels[s] for s, x in zip(active, w) if x > 0 and avail[s] == 0]
        if empty:
            raise DataError(f"data segment {index}: {', '.join(empty)} has no training documents left after the filters")
        total = sum(avail.values())
        if spec["on_exhausted"] == "stop":
            total = min(avail[s] / x for s, x in zip(active, w) if x > 0)
        target = {s: x * total for s, x in zip(active, w)}
        short = [s for s in active if target[s] > avail[s] * (1 + 1e-9)]
        if short and spec["on_exhausted"] == "error":
            rows = "\n".join(
                f"  {self.labels[s]}: share {w[active.index(s)]:.3f} of {total:.0f} tokens = {target[s]:.0f}, has {avail[s]}"
                for s in short
            )
            raise DataError(
                f"data segment {index}: sources run out before reaching their share (on_exhausted = \"error\"):\n{rows}\n"
                'set data.on_exhausted = "repeat" to repeat them, or "stop" to shrink the mixture'
            )
        picked = []
        info["repeats"] = {}
        for s in active:
            docs = by_source[s]
            lengths = self.tokens.length[docs] + 1
            rng = np.random.default_rng([spec["seed"], 0x3A1C, index, s])
            chosen: list[np.ndarray] = []
            got = 0
            while got < target[s] and len(docs):
                perm = rng.permutation(len(docs))
                cum = np.cumsum(lengths[perm])
                need = target[s] - got
                if cum[-1] <= need:
                    chosen.append(docs[perm])
                    got += int(cum[-1])
                else:
                    take = int(np.searchsorted(cum, need, side="left")) + 1
                    chosen.append(docs[perm[:take]])
                    got += int(cum[take - 1])
            picked.append(np.concatenate(chosen) if chosen else docs[:0])
            info["repeats"][self.labels[s]] = round(got / avail[s], 4) if avail[s] else 0.0
        return order_rng.permutation(np.concatenate(picked)), info

    def _write_sequences(self, path: pathlib.Path, docs: np.ndarray) -> dict:
        """Pack (or pad) ``docs`` in this order into ``path``; return counts and hashes."""
        import pyarrow as pa

        seq_len = int(self.spec["seq_len"])
        packing = bool(self.spec["packing"])
        eos = int(self.tokenizer.eos_token_id)
        pad = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos)
        fields = [("input_ids", pa.list_(pa.int32()))]
        if not packing:
            fields.append(("attention_mask", pa.list_(pa.int8())))
        schema = pa.schema(fields)
        digest = hashlib.sha256(b"recipec-sequences-v1\0")
        order = hashlib.sha256(b"recipec-document-order-v1\0")
        source_tokens = np.zeros(len(self.labels), dtype=np.int64)
        n_seq = 0
        n_tokens = 0
        pending: list[np.ndarray] = []
        pending_len = 0
        eos_arr = np.array([eos], dtype=np.int32)

        def flush(writer, block: np.ndarray, mask: np.ndarray | None) -> None:
            nonlocal n_seq
            if len(block) == 0:
                return
            offsets = pa.array(np.arange(0, block.size + 1, seq_len, dtype=np.int32))
            arrays = [pa.ListArray.from_arrays(offsets, pa.array(block.reshape(-1)))]
            if mask is not None:
                arrays.append(pa.ListArray.from_arrays(offsets, pa.array(mask.reshape(-1))))
            writer.write_batch(pa.record_batch(arrays, schema=schema))
            digest.update(block.astype("<i4").tobytes())
            n_seq += len(block)

        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            rows: list[np.ndarray] = []
            masks: list[np.ndarray] = []
            for doc in docs:
                ids = self.tokens.get(int(doc))
                if len(ids) == 0:
                    continue
                order.update(np.int64(doc).tobytes())
                seq = np.concatenate([ids.astype(np.int32), eos_arr])
                source_tokens[self.source_of[doc]] += len(seq)
                if packing:
                    pending.append(seq)
                    pending_len += len(seq)
                    if pending_len >= 65536:
                        stream = np.concatenate(pending)
                        full = len(stream) // seq_len * seq_len
                        flush(writer, stream[:full].reshape(-1, seq_len), None)
                        n_tokens += full
                        pending, pending_len = [stream[full:]], len(stream) - full
                else:
                    seq = seq[:seq_len]
                    row = np.full(seq_len, pad, dtype=np.int32)
                    row[: len(seq)] = seq
                    mask = np.zeros(seq_len, dtype=np.int8)
                    mask[: len(seq)] = 1
                    rows.append(row)
                    masks.append(mask)
                    n_tokens += len(seq)
                    if len(rows) >= 4096:
                        flush(writer, np.stack(rows), np.stack(masks))
                        rows, masks = [], []
            if packing:
                stream = np.concatenate(pending) if pending else np.zeros(0, dtype=np.int32)
                full = len(stream) // seq_len * seq_len
                flush(writer, stream[:full].reshape(-1, seq_len), None)
                n_tokens += full
                remainder = len(stream) - full
            else:
                if rows:
                    flush(writer, np.stack(rows), np.stack(masks))
                remainder = 0
        total = int(source_tokens.sum())
        return {
            "documents": int(len(docs)),
            "sequences": n_seq,
            "tokens": n_tokens,
            "dropped_remainder_tokens": int(remainder),
            "source_tokens": {self.labels[s]: int(t) for s, t in enumerate(source_tokens) if t},
            "realised": {self.labels[s]: round(float(t) / total, 6) for s, t in enumerate(source_tokens) if t} if total else {},
            "sequences_sha256": digest.hexdigest(),
            "document_order_sha256": order.hexdigest(),
        }

    # ---- report

    def _filter_report(self, st: _FilterStats, with_tokens: bool) -> dict:
        f = st.f
        out: dict[str, Any] = {
            "label": st.label,
            "type": f["type"],
            "docs_in": st.docs_in,
            "docs_kept": st.docs_in - st.docs_dropped,
            "docs_dropped": st.docs_dropped,
            "chars_in": st.chars_in,
            "chars_kept": st.chars_in - st.chars_dropped,
            "chars_dropped": st.chars_dropped,
        }
        if with_tokens:
            out["tokens_in"] = st.tokens_in
            out["tokens_kept"] = st.tokens_in - st.tokens_dropped
            out["tokens_dropped"] = st.tokens_dropped
        out["by_source"] = {k: {"in": v[0], "dropped": v[1]} for k, v in st.by_source.items() if v[0]}
        if st.reasons:
            out["reasons"] = dict(st.reasons.most_common())
        examples = []
        for doc, why in st.examples:
            doc_id, text = self._text_of(doc)
            excerpt = text[:EXCERPT] + ("…" if len(text) > EXCERPT else "")
            examples.append({"document": doc, "id": doc_id, "reason": why, "text": excerpt})
        out["examples"] = examples
        out["settings"] = {k: v for k, v in f.items() if k != "type"}
        return out

    def build(self) -> dict:
        spec = self.spec
        self.read_and_analyse()
        alive = self.filter()
        train_docs, eval_docs = self.split(alive)
        if self.tokenizer is None:
            self.train_tokenizer(train_docs)
        to_tokenize = np.arange(self.n_docs) if spec["count_dropped_tokens"] else np.flatnonzero(alive)
        self.tokenize(to_tokenize)
        with_tokens = bool((self.tokens.length >= 0).all())
        if with_tokens:
            self._count_tokens(self.tokens.length)
        t0 = time.perf_counter()
        segments = []
        for index, segment in enumerate(spec["segments"]):
            order, info = self._mixture(index, segment, train_docs)
            written = self._write_sequences(self.work / f"train-{index}.arrow", order)
            segments.append({**info, **written})
        evaluation = self._write_sequences(self.work / "eval.arrow", eval_docs)
        self.timings["pack_s"] = round(time.perf_counter() - t0, 3)
        self.tokens.close()
        kept_tokens = int(self.tokens.length[np.flatnonzero(alive)].sum())
        return {
            "stage_version": STAGE_VERSION,
            "num_proc": self.num_proc,
            "sources": [
                {
                    "label": self.labels[i],
                    "files": st.files,
                    "documents": st.documents,
                    "empty": st.empty,
                    "skipped": st.skipped,
                    "skipped_examples": st.skipped_examples,
                    "bytes": st.bytes,
                    "chars": int(self.chars[self.source_start[i] : self.source_end[i]].sum()),
                    "kept": int(alive[self.source_start[i] : self.source_end[i]].sum()),
                }
                for i, st in enumerate(self.stats)
            ],
            "documents": {
                "read": self.n_docs,
                "kept": int(alive.sum()),
                "dropped": int(self.n_docs - alive.sum()),
                "train": int(len(train_docs)),
                "eval": int(len(eval_docs)),
            },
            "bytes": int(sum(st.bytes for st in self.stats)),
            "chars": {"read": int(self.chars.sum()), "kept": int(self.chars[alive].sum())},
            "tokens": {"kept": kept_tokens, "read": int(self.tokens.length.sum()) if with_tokens else None},
            "filters": [self._filter_report(st, with_tokens) for st in self.filter_stats],
            "segments": segments,
            "eval": evaluation,
            "seq_len": spec["seq_len"],
            "packing": spec["packing"],
            "tokenizer": {
                "trained": "train" in self.request["tokenizer"],
                "eos_token_id": int(self.tokenizer.eos_token_id),
                "vocab_size": len(self.tokenizer),
            },
            "timings": self.timings,
        }

    def _count_tokens(self, lengths: np.ndarray) -> None:
        """Tokens in and dropped per filter, replaying the chain from each filter's drops."""
        alive = np.ones(self.n_docs, dtype=bool)
        for st in self.filter_stats:
            dropped = np.concatenate(st.dropped_docs) if st.dropped_docs else np.zeros(0, dtype=np.int64)
            if st.label.startswith("filters["):
                seen = alive
            else:  # a source's own filter sees that source's documents only
                source = int(self.source_of[dropped[0]]) if len(dropped) else self.labels.index(st.label.rsplit(".filters[", 1)[0])
                seen = alive & (self.source_of == source)
            st.tokens_in = int(lengths[seen].sum())
            st.tokens_dropped = int(lengths[dropped].sum())
            alive[dropped] = False


# --------------------------------------------------------------------------- report table


def format_report(report: dict) -> str:
    """The stage report as a table for people."""
    lines = []
    lines.append(f"{'source':<24} {'files':>6} {'docs':>9} {'skipped':>8} {'empty':>7} {'MB':>9} {'kept':>9}")
    for s in report["sources"]:
        lines.append(
            f"{s['label']:<24} {s['files']:>6} {s['documents']:>9} {s['skipped']:>8} {s['empty']:>7} "
            f"{s['bytes'] / 1e6:>9.2f} {s['kept']:>9}"
        )
    if report["filters"]:
        tok = "tokens_in" in report["filters"][0]
        lines.append("")
        head = f"{'filter':<30} {'type':<18} {'docs in':>9} {'kept':>9} {'dropped':>9} {'chars dropped':>14}"
        lines.append(head + (f" {'tokens dropped':>15}" if tok else ""))
        for f in report["filters"]:
            row = (
                f"{f['label']:<30} {f['type']:<18} {f['docs_in']:>9} {f['docs_kept']:>9} {f['docs_dropped']:>9} "
                f"{f['chars_dropped']:>14}"
            )
            lines.append(row + (f" {f['tokens_dropped']:>15}" if tok else ""))
            if f.get("reasons"):
                lines.append("    " + ", ".join(f"{k}: {v}" for k, v in f["reasons"].items()))
    d = report["documents"]
    lines.append("")
    lines.append(
        f"documents: {d['read']} read, {d['kept']} kept ({d['train']} train, {d['eval']} held out); "
        f"{report['tokens']['kept']} tokens kept"
    )
    for i, seg in enumerate(report["segments"]):
        lines.append("")
        lines.append(
            f"mixture {i}: {seg['sequences']} sequences of {report['seq_len']} tokens "
            f"({seg['tokens']} tokens), order {seg['document_order_sha256'][:12]}, sequences {seg['sequences_sha256'][:12]}"
        )
        lines.append(f"  {'source':<24} {'asked':>8} {'realised':>9} {'tokens':>12} {'repeats':>8}")
        for label in seg["sources"]:
            asked = seg["asked"][label] if seg.get("asked") else None
            lines.append(
                f"  {label:<24} {'natural' if asked is None else f'{asked:.3f}':>8} "
                f"{seg['realised'].get(label, 0.0):>9.3f} {seg['source_tokens'].get(label, 0):>12} {seg['repeats'][label]:>8.2f}"
            )
    e = report["eval"]
    lines.append("")
    lines.append(f"held out: {e['sequences']} sequences ({e['tokens']} tokens) from {e['documents']} documents")
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry point


def run_in_subprocess(request: dict, scratch_dir: str | os.PathLike) -> StageOutput:
    """Run the stage in a fresh Python process (no torch, no threads inherited) and return its entry.

    The training script calls this from its main process: the stage forks worker
    processes, which is safe only from a process that has not started threads.

    Raises:
        DataError: with the stage's own message when it fails.
    """
    import subprocess

    scratch = pathlib.Path(scratch_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    request_file = scratch / f".data-request-{os.getpid()}.json"
    request_file.write_text(json.dumps(request))
    package_parent = pathlib.Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package_parent), os.environ.get("PYTHONPATH", "")]))
    try:
        done = subprocess.run(
            [sys.executable, "-m", f"{__package__}.stage", str(request_file)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        request_file.unlink(missing_ok=True)
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()
        errors = [line[len("error: "):] for line in message if line.startswith("error: ")]
        raise DataError("\n".join(errors) if errors else done.stderr.strip()[-4000:])
    sys.stderr.write(done.stderr)
    sys.stdout.write(done.stdout)
    # main() prints the entry's directory last: no second hashing of the sources to find it
    lines = done.stdout.strip().splitlines()
    found = load_entry(pathlib.Path(lines[-1])) if lines else None
    if found is None:
        raise DataError("the data stage finished but its cache entry is missing")
    return found



def main(argv: list[str] | None = None) -> int:
    """``python -m recipec_runtime.stage REQUEST.json [--force]``: run the stage, print the table."""
    args = list(sys.argv[1:] if argv is None else argv)
    force = "--force" in args
    args = [a for a in args if a != "--force"]
    if len(args) != 1:
        print("usage: python -m recipec_runtime.stage REQUEST.json [--force]", file=sys.stderr)
        return 2
    request = json.loads(pathlib.Path(args[0]).read_text())
    try:
        out = run(request, force=force, log=lambda m: print(m, file=sys.stderr, flush=True))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_report(out.report))
    print(out.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
