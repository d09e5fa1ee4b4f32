"""The data stage on a Ray cluster (``data.executor = "ray"``): the same passes, as Ray tasks.

The local executor reads and analyses every source in forked worker processes and gathers
every feature, dedup signatures included, in the main process (:mod:`.stage_analyse`).
This executor runs the same readers and filter code as Ray tasks over file shards, and
leaves only per-document numbers and the candidate duplicates on the driver:

1. **Map** (one task per shard: a file of a source, or a run of consecutive small files;
   a builtin or hub source, or one with ``max_documents`` or ``max_tokens``, is one
   shard). A task streams its shard batch by batch through :func:`.readers.iter_batches` and the local workers' own
   :func:`.stage_analyse._analyse`, writes the texts to ``shards/docs-<shard>.arrow``
   under the stage's scratch directory (written under a temporary name and renamed, so a
   retried task leaves one complete file), and returns, as ``1 + n_partitions`` objects:
   the shard's per-document numbers (characters, per-document filter verdicts, score
   fields, token ids a filter needed), and per reduce partition its dedup records:
   ``(key, doc)`` for exact dedup (a 16-byte key and an 8-byte document reference), and
   ``(band, band key, doc)`` per band for MinHash, with the signature of each document
   that has a band in that partition (once per partition, not once per band). A record
   goes to the partition ``key % n_partitions``.
2. **Reduce** (one task per partition) groups the records of every map by key and
   returns only the candidate relations: for exact dedup each key's documents when there
   are two or more; for MinHash every pair (earlier, later) of documents that share a
   band key and whose signatures agree on at least ``threshold`` of their entries.
3. **Filter** (driver, :func:`.stage_filter.apply_chain`): the same greedy rule as the
   local executor applies to the candidates: in stream order a document is dropped when
   an earlier document that is still alive at that filter and was kept by it is one of
   its candidates. The results are thus equal to the local executor's.
4. **Tokenize** (one task per run of about ``TOKENIZE_CHARS`` characters of one shard's
   documents to tokenize) reads the texts back from the shard file; the driver appends
   the ids to the token store in document order.
5. **Mix and pack** run on the driver (:mod:`.stage_mix`), and the cache entry is the
   one a local run writes: the executor is not part of the key.

Shuffle rather than ``ray.data``: the records are a few fixed-width numpy arrays per map
and partition, and a task with ``num_returns = 1 + n_partitions`` hands each reducer its
slice through the object store without a second copy; the reducers' outputs are small.

Every task's result depends only on its arguments and the input files, so a task that
dies is run again (``max_retries``) without losing or doubling a document.

Test hook: with ``RECIPEC_STAGE_TEST_KILL_ONCE=<path>`` in the driver's environment, the
first task to get past its first batch creates ``<path>`` and exits at once
(``os._exit(1)``), as a worker killed mid-stage would; Ray then retries it.

Where the workers run: ``ray_address`` (or ``RAY_ADDRESS``) names a running cluster, whose
workers get this package through the job's ``py_modules``; the stage's scratch directory
lives under ``cache_dir``, which must then be on storage every node sees at the same path
(as must the sources and ``project_dir``). Without an address a local Ray is started for
the stage with ``num_proc`` CPUs and stopped after it.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import pathlib
import uuid
from typing import Any, Callable, Iterator

import numpy as np

from . import filters as F
from . import formats, mds, readers
from .readers import DataError
from .stage_analyse import BATCH_SIZE, Corpus, _analyse, _init_worker, _tokenize_batch, _tokenize_examples
from .stage_filter import Candidates, Link, score_fields
from .stage_filter import labels as source_labels

KILL_ONCE = "RECIPEC_STAGE_TEST_KILL_ONCE"
"""Test hook: the environment variable naming the marker file of the one task that dies."""

SHARD_BYTES = 16 << 20
"""Largest shard of consecutive small files (a bigger file is a shard of its own): what bounds a map task's memory."""

TOKENIZE_CHARS = 4 << 20
"""Characters of text per tokenize task (whole documents of one shard): what bounds its memory."""

PARTITION_BYTES = 1 << 30
"""Input bytes per reduce partition, beyond one partition per CPU of the cluster."""

MAX_RETRIES = 3
"""Times Ray runs a task again whose worker died."""

_SCHEMA_FIELDS = (("text", "string"), ("id", "string"), ("example", "string"))


def _install_hint() -> str:
    return "data.executor = \"ray\" needs Ray on this machine: pip install 'recipec[ray]'"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise DataError(_install_hint()) from None
    return ray


# --------------------------------------------------------------------------- tasks (run on the workers)


def _maybe_die() -> None:
    """The test hook: the first task to get here creates the marker and dies."""
    marker = os.environ.get(KILL_ONCE)
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(1)


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([(name, pa.string()) for name, _ in _SCHEMA_FIELDS])


def _partition_of(keys: np.ndarray, n_partitions: int) -> np.ndarray:
    return (keys % np.uint64(n_partitions)).astype(np.int64)


def _map_shard(shard: dict, context: dict, n_partitions: int) -> tuple:
    """Map task: read and analyse one shard; return its numbers and its dedup records per partition."""
    import pyarrow as pa

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    source = shard["source_index"]
    chain: list[F.Filter] = context["chains"][source]
    _init_worker(context["chains"], context["tokenizer"])
    examples_mode = context["examples_mode"]
    dedup = context["dedup"][source]  # chain position -> instance key
    stats = readers.ReadStats()
    chars: list[np.ndarray] = []
    verdicts: dict[int, list[np.ndarray]] = {p: [] for p, f in enumerate(chain) if f.role == F.DOCUMENT}
    scores: dict[str, list[np.ndarray]] = {}
    tok_rows: list[int] = []
    tok_ids: list[np.ndarray] = []
    # per partition, per dedup instance: the record columns, batch by batch
    parts: list[dict[str, dict[str, list]]] = [{} for _ in range(n_partitions)]
    ref_base = np.int64(shard["index"]) << np.int64(32)
    schema = _schema()
    out = pathlib.Path(shard["out"])
    tmp = out.with_name(f"{out.name}.tmp-{uuid.uuid4().hex}")
    n = 0
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in readers.iter_batches(
            shard["source"],
            context["project_dir"],
            index=source,
            fields=context["fields"][source],
            batch_size=BATCH_SIZE,
            stats=stats,
            tokenizer=context["tokenizer"],  # counts max_tokens
        ):
            size = len(batch.texts)
            result = _analyse(source, batch.texts, batch.fields, context["tokenize_all"])
            examples = batch.examples
            if examples is None:
                examples = [json.dumps({"text": t}, ensure_ascii=False) for t in batch.texts] if examples_mode else [None] * size
            columns = [pa.array(batch.texts, pa.string()), pa.array(batch.ids, pa.string()), pa.array(examples, pa.string())]
            writer.write_batch(pa.record_batch(columns, schema=schema))
            chars.append(np.fromiter((len(t) for t in batch.texts), dtype=np.int64, count=size))
            for position, feature in enumerate(result["features"]):
                if position in verdicts:
                    verdicts[position].append(feature)
                elif position in dedup:
                    _emit(parts, dedup[position], chain[position], feature, ref_base + n, n_partitions)
            for name, values in result["scores"].items():
                scores.setdefault(name, []).append(values)
            for j, ids in enumerate(result["tokens"]):
                if ids is not None:
                    tok_rows.append(n + j)
                    tok_ids.append(np.asarray(ids, dtype=np.uint32))
            n += size
            _maybe_die()
    os.replace(tmp, out)
    summary = {
        "n": n,
        "stats": stats,
        "chars": np.concatenate(chars) if chars else np.zeros(0, dtype=np.int64),
        "verdicts": {p: np.concatenate(v) if v else np.zeros(0, dtype=np.int8) for p, v in verdicts.items()},
        "scores": {k: np.concatenate(v) for k, v in scores.items()},
        "tokens": _flat(tok_rows, tok_ids),
        "node": _node(),
    }
    return (summary, *[_concat_part(p) for p in parts]) if n_partitions else summary


def _emit(parts: list, instance: str, f: F.Filter, feature: tuple, base: np.int64, n_partitions: int) -> None:
    """Add one batch's dedup records of one filter to the partitions."""
    idx, *cols = feature
    refs = base + idx.astype(np.int64)
    if f.type == "exact_dedup":
        (keys,) = cols
        words = keys.view(np.uint64).reshape(-1, 2)
        where = _partition_of(words[:, 0], n_partitions)
        for p in np.unique(where).tolist():
            sel = where == p
            rec = parts[p].setdefault(instance, {"key": [], "ref": []})
            rec["key"].append(words[sel])
            rec["ref"].append(refs[sel])
        return
    band_keys, signatures = cols
    n, bands = band_keys.shape
    where = _partition_of(band_keys, n_partitions)
    for p in np.unique(where).tolist():
        doc, band = np.nonzero(where == p)
        rows, sig_row = np.unique(doc, return_inverse=True)
        rec = parts[p].setdefault(instance, {"band": [], "key": [], "ref": [], "sig_row": [], "sig": [], "n_sig": 0})
        rec["band"].append(band.astype(np.int32))
        rec["key"].append(band_keys[doc, band])
        rec["ref"].append(refs[doc])
        rec["sig_row"].append(sig_row.astype(np.int64) + rec["n_sig"])
        rec["sig"].append(signatures[rows])
        rec["n_sig"] += len(rows)


def _concat_part(part: dict) -> dict:
    return {inst: {k: np.concatenate(v) for k, v in cols.items() if k != "n_sig"} for inst, cols in part.items()}


def _flat(rows: list[int], ids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids of some documents as ``(rows, lengths, flat ids)``: a few arrays, cheap to ship."""
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.uint32)
    return np.asarray(rows, dtype=np.int64), lengths, flat.astype(np.uint32, copy=False)


def _reduce(instances: dict[str, dict], *parts: dict) -> dict[str, np.ndarray | tuple]:
    """Reduce task: one partition's candidate duplicates per dedup filter, as document references.

    Exact dedup: ``(refs, lengths)``, the documents of each key held by two or more, in
    order, key after key. MinHash: ``(earlier, later)`` pairs of documents sharing a band
    key whose signatures agree on at least ``threshold`` of their entries.
    """
    _maybe_die()
    out: dict[str, Any] = {}
    for inst, meta in instances.items():
        got = [p[inst] for p in parts if inst in p]
        if not got:
            continue
        ref = np.concatenate([g["ref"] for g in got])
        if meta["type"] == "exact_dedup":
            key = np.concatenate([g["key"] for g in got])
            order = np.lexsort((ref, key[:, 1], key[:, 0]))
            key, ref = key[order], ref[order]
            new = np.ones(len(ref), dtype=bool)
            new[1:] = (key[1:] != key[:-1]).any(axis=1)
            starts = np.flatnonzero(new)
            lengths = np.diff(np.append(starts, len(ref)))
            many = lengths > 1
            keep = np.repeat(many, lengths)
            out[inst] = (ref[keep], lengths[many])
            continue
        band = np.concatenate([g["band"] for g in got])
        key = np.concatenate([g["key"] for g in got])
        offsets = np.cumsum([0] + [len(g["sig"]) for g in got[:-1]])
        sig_row = np.concatenate([g["sig_row"] + o for g, o in zip(got, offsets)])
        sigs = np.concatenate([g["sig"] for g in got])
        order = np.lexsort((ref, key, band))
        band, key, ref, sig_row = band[order], key[order], ref[order], sig_row[order]
        new = np.ones(len(ref), dtype=bool)
        new[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], len(ref))
        threshold = float(meta["threshold"])
        earlier: list[np.ndarray] = []
        later: list[np.ndarray] = []
        for a, b in zip(starts.tolist(), ends.tolist()):
            if b - a < 2:
                continue
            members = ref[a:b]
            s = sigs[sig_row[a:b]]
            for j in range(1, b - a):
                # the same arithmetic as NearDedupIndex: the mean of equal entries, then >= threshold
                similarity = (s[:j] == s[j]).mean(axis=1)
                close = np.flatnonzero(similarity >= threshold)
                if close.size:
                    earlier.append(members[close])
                    later.append(np.full(close.size, members[j], dtype=np.int64))
        pairs = np.zeros((0, 2), dtype=np.int64)
        if earlier:
            pairs = np.unique(np.stack([np.concatenate(earlier), np.concatenate(later)], axis=1), axis=0)
        out[inst] = pairs
    return out


def _tokenize_shard(path: str, rows: np.ndarray, context: dict, sources: int | None) -> Any:
    """Tokenize task: the rows ``rows`` (ascending) of one shard file, read back batch by batch.

    ``sources`` None: text, returned as ``(rows, lengths, flat ids)``; else the examples of
    source ``sources`` as :func:`.stage_analyse._tokenize_examples` returns them.
    """
    import pyarrow as pa

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _init_worker([], context["tokenizer"], context.get("examples"))
    column = 0 if sources is None else 2
    ids: list[np.ndarray] = []
    results: list = []
    died = False
    with pa.OSFile(path) as f:
        offset = pos = 0
        for batch in pa.ipc.open_stream(f):
            end = int(np.searchsorted(rows, offset + batch.num_rows, side="left"))
            local = rows[pos:end] - offset
            if len(local):
                texts = batch.column(column).take(pa.array(local)).to_pylist()
                if sources is None:
                    ids.extend(_tokenize_batch(texts))
                else:
                    results.extend(_tokenize_examples([sources] * len(texts), texts))
                if not died:
                    died = True
                    _maybe_die()
            pos = end
            offset += batch.num_rows
    return _flat(rows.tolist(), ids) if sources is None else results


# --------------------------------------------------------------------------- the driver


class ShardedCorpus(Corpus):
    """A :class:`.stage_analyse.Corpus` whose texts are in one Arrow file per shard."""

    def __init__(self, work: pathlib.Path, labels: list[str], n_chains: list[int]) -> None:
        super().__init__(work, labels, n_chains)
        self.shard_files: list[str] = []
        self.shard_start = np.zeros(1, dtype=np.int64)  # shard k holds shard_start[k]:shard_start[k + 1]
        self.candidates: dict[tuple[int, int], Candidates] = {}
        self.nodes: set[str] = set()

    def texts(self, docs: np.ndarray, column: int = 0) -> Iterator[tuple[np.ndarray, list[str]]]:
        import pyarrow as pa

        bounds = np.searchsorted(docs, self.shard_start)
        for k, path in enumerate(self.shard_files):
            mine = docs[bounds[k] : bounds[k + 1]]
            if not len(mine):
                continue
            with pa.OSFile(path) as source:
                offset = int(self.shard_start[k])
                pos = 0
                for batch in pa.ipc.open_stream(source):
                    end = int(np.searchsorted(mine, offset + batch.num_rows, side="left"))
                    local = mine[pos:end] - offset
                    if len(local):
                        yield mine[pos:end], batch.column(column).take(pa.array(local)).to_pylist()
                    pos = end
                    offset += batch.num_rows

    def text_of(self, doc: int) -> tuple[str, str]:
        import pyarrow as pa

        k = int(np.searchsorted(self.shard_start, doc, side="right")) - 1
        with pa.memory_map(self.shard_files[k]) as source:
            table = pa.ipc.open_stream(source).read_all()
            row = doc - int(self.shard_start[k])
            return table.column(1)[row].as_py(), table.column(0)[row].as_py()

    def shard_of(self, docs: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.shard_start, docs, side="right") - 1


HUB_ENV = ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_CACHE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT")
"""The driver's Hugging Face settings that its tasks get: a hub source is read from the same cache (on shared storage)."""


class RayExecutor:
    """The stage's passes as Ray tasks; see the module docstring.

    Args:
        address: a running cluster (``ray_address``), else ``RAY_ADDRESS``, else a local Ray.
        num_proc: CPUs of the local Ray started without an address (0: every core).
        log: progress lines.

    Raises:
        DataError: Ray is not installed, or the cluster cannot be reached.
    """

    def __init__(self, address: str | None, num_proc: int, log: Callable[[str], None]) -> None:
        ray = _import_ray()
        self.ray = ray
        self.log = log
        self.started = False
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or None
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
            if address:
                _check_reachable(address)
            try:
                if address:
                    ray.init(address=address, runtime_env={"py_modules": [_package_dir()]}, **options)
                else:
                    ray.init(num_cpus=num_proc or None, **options)
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise DataError(
                    f'data.executor = "ray": cannot start or reach {where}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}\n'
                    "check data.ray_address (or RAY_ADDRESS): `ray status --address ADDRESS` on a cluster node lists it"
                ) from None
            self.started = True
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        env = {"TOKENIZERS_PARALLELISM": "false"}
        for name in (KILL_ONCE, *HUB_ENV):  # where the driver finds the hub cache, the tasks find it too
            if os.environ.get(name):
                env[name] = os.environ[name]
        self.task_options = {"max_retries": MAX_RETRIES, "runtime_env": {"env_vars": env}}
        self.shards = 0
        self.partitions = 0

    def report(self, corpus: ShardedCorpus) -> dict:
        """The report's ``ray`` entry: how the work was spread."""
        return {"cpus": self.cpus, "shards": self.shards, "partitions": self.partitions, "nodes": len(corpus.nodes)}

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()

    def _get(self, ref: Any) -> Any:
        """``ray.get`` that hands a task's own error (bad data) on as it is."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, DataError):
                raise DataError(str(cause)) from None
            raise

    # ------------------------------------------------------------------ read and analyse

    def plan_shards(self, spec: dict, project_dir: pathlib.Path, out: pathlib.Path) -> list[dict]:
        """Every source's shards, in reading order."""
        units: list[tuple[int, list[tuple[str, str]], int, dict]] = []
        for i, source in enumerate(spec["sources"]):
            if source.get("builtin") is not None or source.get("hub") is not None:  # read by one task, in order
                units.append((i, [], 0, {}))
                continue
            label = readers.source_label(source, i)
            paths = readers._Paths(project_dir)
            found = readers._units(source, paths, label)
            sizes = [_size(path, fmt) for path, fmt in found]
            if source.get("max_documents") is not None or source.get("max_tokens") is not None:  # the limit counts across the files: read them in one task
                units.append((i, found, sum(sizes), {}))
                continue
            group: list[tuple[str, str]] = []
            group_bytes = 0
            for unit, size in zip(found, sizes):
                if unit[1] == "mds":  # a dataset of many shard files: runs of its shards, each a task
                    if group:
                        units.append((i, group, group_bytes, {}))
                        group, group_bytes = [], 0
                    units += [(i, [unit], n, {mds.SHARDS: run}) for run, n in self._mds_runs(unit[0], label, paths.shown)]
                    continue
                group.append(unit)
                group_bytes += size
                if group_bytes >= self._shard_bytes:
                    units.append((i, group, group_bytes, {}))
                    group, group_bytes = [], 0
            if group:
                units.append((i, group, group_bytes, {}))
        shards = []
        for k, (i, group, size, extra) in enumerate(units):
            source = dict(spec["sources"][i])
            if group:
                source["path"] = [glob.escape(path) for path, _ in group]
                source["format"] = group[0][1]
            source.update(extra)
            shards.append({"index": k, "source_index": i, "source": source, "bytes": size, "out": str(out / f"docs-{k:05d}.arrow")})
        return shards

    def _mds_runs(self, directory: str, label: str, shown: Any) -> list[tuple[list[int] | None, int]]:
        """An MDS dataset's shards in runs of about the shard size: ``([first, stop), bytes)`` each, in order.

        An index that cannot be read is one run of every shard (None): its task then raises the
        error the local executor raises, in reading order.
        """
        try:
            sizes = [shard.file_bytes for shard in mds.read_index(directory, label, shown)]
        except DataError:
            return [(None, _size(directory, "mds"))]
        runs, first, n = [], 0, 0
        for k, size in enumerate(sizes):
            n += size
            if n >= self._shard_bytes or k == len(sizes) - 1:
                runs.append(([first, k + 1], n))
                first, n = k + 1, 0
        return runs or [(None, _size(directory, "mds"))]

    def read_and_analyse(
        self, spec: dict, by_source: list[list[Link]], project_dir: pathlib.Path, work: pathlib.Path, tokenizer: Any
    ) -> ShardedCorpus:
        """:func:`.stage_analyse.read_and_analyse` as map tasks, and the dedup shuffle.

        Raises:
            DataError: bad data (the first in reading order), or a source without documents.
        """
        ray = self.ray
        labels = source_labels(spec)
        out = work / "shards"
        out.mkdir(exist_ok=True)
        total = sum(_size(p, f) for s in spec["sources"] if s.get("path") is not None
                    for p, f in readers._units(s, readers._Paths(project_dir), readers.source_label(s, 0)))
        # shards small enough that every CPU gets a few, at most SHARD_BYTES
        self._shard_bytes = max(1, min(SHARD_BYTES, total // (4 * self.cpus)))
        shards = self.plan_shards(spec, project_dir, out)
        n_own = [len(s.get("filters", [])) for s in spec["sources"]]
        dedup: list[dict[int, str]] = []
        instances: dict[str, dict] = {}
        for s, chain in enumerate(by_source):
            mine = {}
            for position, link in enumerate(chain):
                if link.filter.role != F.DEDUP:
                    continue
                scope = (s, position) if position < n_own[s] else (-1, position - n_own[s])
                name = f"{scope[0]}:{scope[1]}"
                mine[position] = name
                instances[name] = {"type": link.filter.type, "scope": scope, **link.filter.settings}
            dedup.append(mine)
        n_partitions = max(self.cpus, math.ceil(total / PARTITION_BYTES)) if instances else 0
        self.shards, self.partitions = len(shards), n_partitions
        context = ray.put(
            {
                "chains": [[link.filter for link in chain] for chain in by_source],
                "tokenizer": tokenizer,
                "project_dir": str(project_dir),
                "fields": [score_fields(chain) for chain in by_source],
                "tokenize_all": bool(spec["count_dropped_tokens"]) and tokenizer is not None,
                "examples_mode": formats.has_examples(spec["sources"]),
                "dedup": dedup,
            }
        )
        map_task = ray.remote(_map_shard).options(num_returns=1 + n_partitions, **self.task_options)
        maps = [map_task.remote(shard, context, n_partitions) for shard in shards]
        reduces = []
        if n_partitions:
            reduce_task = ray.remote(_reduce).options(**self.task_options)
            reduces = [reduce_task.remote(instances, *[m[p + 1] for m in maps]) for p in range(n_partitions)]
            summaries = [m[0] for m in maps]
        else:
            summaries = maps
        try:
            corpus = self._gather(spec, by_source, work, labels, shards, summaries)
        except BaseException:
            _cancel(ray, summaries + reduces)
            raise
        del context, maps, summaries
        self._candidates(corpus, instances, reduces)
        return corpus

    def _gather(
        self, spec: dict, by_source: list[list[Link]], work: pathlib.Path, labels: list[str], shards: list[dict], summaries: list
    ) -> ShardedCorpus:
        """The corpus from the maps' summaries, shard by shard in reading order."""
        corpus = ShardedCorpus(work, labels, [len(chain) for chain in by_source])
        source_of: list[np.ndarray] = []
        chars: list[np.ndarray] = []
        starts = [0]
        first = [True] * len(labels)
        n = 0
        for shard, ref in zip(shards, summaries):
            got = self._get(ref)
            i = shard["source_index"]
            size = int(got["n"])
            if first[i]:
                corpus.source_start[i] = n
                first[i] = False
            st, new = corpus.stats[i], got["stats"]
            st.files += new.files
            st.documents += new.documents
            st.empty += new.empty
            st.skipped += new.skipped
            st.bytes += new.bytes
            st.skipped_examples = (st.skipped_examples + new.skipped_examples)[:5]
            corpus.nodes.add(got["node"])
            corpus.shard_files.append(shard["out"])
            source_of.append(np.full(size, i, dtype=np.int32))
            chars.append(got["chars"])
            for position, link in enumerate(by_source[i]):
                if position in got["verdicts"]:
                    corpus.features[i][position].append(got["verdicts"][position])
                elif link.filter.role in (F.SELECT, F.MODEL):
                    corpus.features[i][position].append(None)
            for name, values in got["scores"].items():
                corpus.scores[i][name].append(values)
            corpus.tokens.grow(n + size)
            rows, lengths, flat = got["tokens"]
            for row, ids in zip((rows + n).tolist(), np.split(flat, np.cumsum(lengths)[:-1]) if len(rows) else []):
                corpus.tokens.add(row, ids)
            n += size
            corpus.source_end[i] = n
            starts.append(n)
        for i in range(len(labels)):
            if first[i]:
                corpus.source_start[i] = corpus.source_end[i] = n
        corpus.shard_start = np.asarray(starts, dtype=np.int64)
        corpus.finish(n, source_of, chars)
        return corpus

    def _candidates(self, corpus: ShardedCorpus, instances: dict[str, dict], reduces: list) -> None:
        """Each dedup filter's candidates from the reducers, as document indices."""
        starts = corpus.shard_start

        def docs(refs: np.ndarray) -> np.ndarray:
            return starts[refs >> 32] + (refs & 0xFFFFFFFF)

        groups: dict[str, list] = {name: [] for name in instances}
        for ref in reduces:
            for name, found in self._get(ref).items():
                groups[name].append(found)
        for name, meta in instances.items():
            scope = tuple(meta["scope"])
            if meta["type"] == "exact_dedup":
                group = np.full(corpus.n_docs, -1, dtype=np.int64)
                next_id = 0
                for refs, lengths in groups[name]:
                    group[docs(refs)] = np.repeat(np.arange(next_id, next_id + len(lengths)), lengths)
                    next_id += len(lengths)
                corpus.candidates[scope] = Candidates(group=group)
            else:
                found = [docs(p) for p in groups[name] if len(p)]
                pairs = np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, 2), dtype=np.int64)
                corpus.candidates[scope] = Candidates(pairs=pairs)

    # ------------------------------------------------------------------ tokenize

    def _tokenize(self, corpus: ShardedCorpus, docs: np.ndarray, tokenizer: Any, examples: dict | None) -> Iterator[tuple[np.ndarray, Any]]:
        """``(its documents, result)`` of each tokenize task over ``docs``, in document order."""
        ray = self.ray
        context = ray.put({"tokenizer": tokenizer, "examples": examples})
        task = ray.remote(_tokenize_shard).options(**self.task_options)
        shard = corpus.shard_of(docs)
        bounds = np.searchsorted(shard, np.arange(len(corpus.shard_files) + 1))
        refs = []
        for k in range(len(corpus.shard_files)):
            docs_k = docs[bounds[k] : bounds[k + 1]]
            # runs of whole documents of about TOKENIZE_CHARS characters each
            cuts = np.searchsorted(np.cumsum(corpus.chars[docs_k]), np.arange(TOKENIZE_CHARS, int(corpus.chars[docs_k].sum()), TOKENIZE_CHARS))
            for mine in np.split(docs_k, np.unique(cuts)) if len(docs_k) else []:
                if not len(mine):
                    continue
                base = int(corpus.shard_start[k])
                source = None if examples is None else int(corpus.source_of[mine[0]])
                refs.append((mine, task.remote(corpus.shard_files[k], mine - base, context, source)))
        try:
            for mine, ref in refs:
                yield mine, self._get(ref)
        except BaseException:
            _cancel(ray, [ref for _, ref in refs])
            raise

    def tokenize(self, corpus: ShardedCorpus, docs: np.ndarray, tokenizer: Any) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
        """``(documents, their token ids)``, ascending, as :func:`.stage_analyse.tokenize` consumes them."""
        for mine, (rows, lengths, flat) in self._tokenize(corpus, docs, tokenizer, None):
            yield mine, np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []

    def tokenize_examples(self, corpus: ShardedCorpus, docs: np.ndarray, tokenizer: Any, settings: dict) -> Iterator[tuple[np.ndarray, list]]:
        """``(documents, (ids, mask, reason, margin) each)``, as :func:`.stage_analyse.tokenize_examples` consumes them."""
        yield from self._tokenize(corpus, docs, tokenizer, settings)


def _cancel(ray: Any, refs: list) -> None:
    """Stop the tasks still pending for a stage that failed (best effort).

    Only the tasks not finished yet are cancelled, and without ``force``: force-cancelling a task
    whose failure the driver is completing at the same moment (the task that raised the stage's
    error) aborts the driver process in Ray 2.60 ("Check failed: Tried to complete task that was
    not pending"), and the driver is the process that runs the stage.
    """
    if not refs:
        return
    try:
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=0)
    except Exception:  # noqa: BLE001
        return
    for ref in pending:
        try:
            ray.cancel(ref, force=False)
        except Exception:  # noqa: BLE001
            pass


def _check_reachable(address: str) -> None:
    """A ``host:port`` address must accept a connection: Ray itself retries an unreachable one for minutes."""
    import socket

    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    hint = "check data.ray_address (or RAY_ADDRESS): the head node's address and GCS port, e.g. 10.0.0.5:6379"
    if not host or not port.isdigit():
        raise DataError(f'data.executor = "ray": the Ray cluster address {address!r} is not host:port\n{hint}')
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise DataError(
            f'data.executor = "ray": cannot start or reach the Ray cluster at {address}: {e.strerror or e}\n{hint}'
        ) from None


def _size(path: str, fmt: str) -> int:
    if fmt in ("datasets", "mds") and os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if os.path.isfile(os.path.join(path, f)))
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _package_dir() -> str:
    """The top-level package this module is part of (``recipec`` or a build's ``recipec_runtime``), for ``py_modules``."""
    here = pathlib.Path(__file__).resolve().parent
    depth = (__package__ or "").count(".")
    return str(here.parents[depth - 1] if depth else here)
