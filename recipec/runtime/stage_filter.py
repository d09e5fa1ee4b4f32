"""The data stage's filter chain: which filters see which documents, applied in chain order.

Each source's chain is its own filters, then the filters of every source (which pass over
the documents of token sources: ids, no text). The worker
processes leave, per source and chain position, what the filter's role needs (see
:mod:`.filters.base`): per-document reason codes, dedup keys, nothing for a selection.
The main process then applies the chain in order (:func:`apply_chain`): each source's own
filters over its documents, then each filter of every source over all the documents still
kept. A model filter (:mod:`.filters.model`) scores the documents that reach it there, with
:mod:`.model_scores`, and leaves each document's scores in ``filter-scores-<k>.arrow``. Dedup keeps the first document (in source order, then file order) of each group;
sampling is seeded by ``seed`` and the filter's place. Every filter is counted: documents,
characters and (where known) tokens in, kept and dropped, with a few dropped examples.
"""

from __future__ import annotations

import collections
import json
import pathlib
from dataclasses import dataclass
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from . import filters as F
from . import readers
from .readers import DataError

if TYPE_CHECKING:  # pragma: no cover
    from .stage_analyse import Corpus

EXAMPLES = 3  # dropped examples kept per filter
EXCERPT = 240  # characters of each example


@dataclass(frozen=True)
class Link:
    """One filter of a source's chain."""

    label: str
    """``filters[j]`` for a filter of every source, ``<source>.filters[j]`` for a source's own."""
    settings: dict
    filter: F.Filter


@dataclass(frozen=True)
class Candidates:
    """A dedup filter's candidate duplicates, found before the chain runs (by :mod:`.stage_ray`'s shuffle).

    :func:`apply_chain` applies the same greedy rule to them as to the index of a
    filter's features: in stream order a document is dropped when an earlier document
    that is alive at the filter and kept by it is one of its candidates.
    """

    group: np.ndarray | None = None
    """Exact dedup: each document's key group (documents sharing a key), -1 for a key held once."""
    pairs: np.ndarray | None = None
    """MinHash: ``(earlier, later)`` documents sharing a band key and reaching the threshold, shape ``(n, 2)``, sorted."""


def labels(spec: dict) -> list[str]:
    """The sources' labels: their names, or ``sources[i]``."""
    return [readers.source_label(s, i) for i, s in enumerate(spec["sources"])]


def chains(spec: dict) -> list[list[Link]]:
    """For each source, its filter chain: its own filters first, then those of every source.

    Filters with equal settings are one object, so what a filter prepares (the n-grams of
    the evaluation files) is prepared once.

    Raises:
        DataError: a filter's type is unknown or its settings are incomplete, naming it.
    """
    built: dict[str, F.Filter] = {}

    def link(label: str, settings: dict) -> Link:
        key = json.dumps(settings, sort_keys=True)
        if key not in built:
            try:
                built[key] = F.make_filter(settings)
            except ValueError as e:
                raise DataError(f"{label}: {e}") from None
        return Link(label, settings, built[key])

    names = labels(spec)
    every = [link(f"filters[{j}]", f) for j, f in enumerate(spec["filters"])]
    return [
        [link(f"{names[i]}.filters[{j}]", f) for j, f in enumerate(s.get("filters", []))] + every
        for i, s in enumerate(spec["sources"])
    ]


def score_fields(chain: list[Link]) -> list[str]:
    """The numeric fields the filters of a chain read."""
    return sorted({link.filter.field for link in chain if link.filter.field is not None})


class FilterStats:
    """What one filter saw and dropped."""

    def __init__(self, link: Link, source_labels: list[str]) -> None:
        self.link = link
        self.docs_in = self.docs_dropped = 0
        self.chars_in = self.chars_dropped = 0
        self.by_source = {name: [0, 0] for name in source_labels}
        self.reasons: collections.Counter = collections.Counter()
        self.examples: list[tuple[int, str]] = []
        self.dropped_docs: list[np.ndarray] = []
        self.tokens_in = self.tokens_dropped = 0
        self.scores: dict[str, Any] | None = None
        """A model filter's: what the models found (:func:`.model_scores.score`) and the spread of its scores."""

    @property
    def label(self) -> str:
        return self.link.label


def apply_chain(
    corpus: Corpus,
    spec: dict,
    by_source: list[list[Link]],
    candidates: dict[tuple[int, int], Candidates] | None = None,
    *,
    log: Callable[[str], None] | None = None,
    work: pathlib.Path | None = None,
) -> tuple[np.ndarray, list[FilterStats]]:
    """Run every filter in chain order over the corpus.

    ``candidates`` holds the dedup filters' candidates where they were found beforehand,
    by ``(source, position)`` for a source's own filter and ``(-1, j)`` for
    ``filters[j]``; a dedup filter without them uses the workers' keys. A model filter
    logs its progress to ``log`` and writes its scores into ``work``, when given.

    Returns:
        ``(alive, stats)``: which documents every filter kept, and one :class:`FilterStats`
        per filter in chain order.
    """
    alive = np.ones(corpus.n_docs, dtype=bool)
    stats: list[FilterStats] = []
    seed = spec["seed"]
    n_own = [len(s.get("filters", [])) for s in spec["sources"]]
    for s, chain in enumerate(by_source):
        docs_range = np.arange(corpus.source_start[s], corpus.source_end[s])
        for position in range(n_own[s]):
            st = FilterStats(chain[position], corpus.labels)
            found = (candidates or {}).get((s, position))
            out = _scores_file(work, len(stats))
            _apply(corpus, st, docs_range[alive[docs_range]], {s: position}, s, alive, seed, found, log, out)
            stats.append(st)
    for j in range(len(spec["filters"])):
        st = FilterStats(by_source[0][n_own[0] + j], corpus.labels)
        positions = {s: n_own[s] + j for s in range(len(by_source))}
        found = (candidates or {}).get((-1, j))
        out = _scores_file(work, len(stats))
        _apply(corpus, st, np.flatnonzero(alive & text_documents(corpus)), positions, -1, alive, seed, found, log, out)
        stats.append(st)
    return alive, stats


def _scores_file(work: pathlib.Path | None, k: int) -> pathlib.Path | None:
    """Where the ``k``-th filter of the chain leaves its scores, if it is a model filter."""
    return None if work is None else work / f"filter-scores-{k}.arrow"


def text_documents(corpus: Corpus) -> np.ndarray:
    """The documents the filters of every source see: all but those of token sources (ids, no text)."""
    return ~np.isin(corpus.source_of, corpus.token_sources)


def _apply(
    corpus: Corpus,
    st: FilterStats,
    docs: np.ndarray,
    positions: dict[int, int],
    scope: int,
    alive: np.ndarray,
    seed: int,
    candidates: Candidates | None = None,
    log: Callable[[str], None] | None = None,
    scores_file: pathlib.Path | None = None,
) -> None:
    """Run one filter over ``docs`` (alive, ascending) and clear the dropped ones in ``alive``.

    ``positions`` maps each source the filter covers to the filter's position in that
    source's chain (where the workers left its features); ``scope`` is the source for a
    source's own filter, -1 for a filter of every source; ``candidates``, a dedup
    filter's candidates found beforehand (else its features are walked with its index).
    """
    f = st.link.filter
    drop = np.zeros(len(docs), dtype=bool)
    reason = np.zeros(len(docs), dtype=np.int16)
    values: dict[str, np.ndarray] = {}
    dup_of: dict[int, int] = {}
    seed_key = [seed, scope + 1, min(positions.values()) if positions else 0]
    if f.role == F.DEDUP and candidates is not None:
        _apply_candidates(candidates, docs, drop, dup_of, corpus.n_docs)
    elif f.role == F.DEDUP:
        parts = [corpus.feature(s, p) for s, p in positions.items()]
        parts = [x for x in parts if x is not None and len(x[0])]
        if parts:
            idx = np.concatenate([x[0] for x in parts])
            order = np.argsort(idx, kind="stable")
            idx = idx[order]
            cols = [np.concatenate([x[k] for x in parts])[order] for k in range(1, len(parts[0]))]
            rows = np.searchsorted(idx, docs)
            index = f.index()
            added: list[int] = []
            for j, (doc, row) in enumerate(zip(docs.tolist(), rows.tolist())):
                first = index.check_and_add(*(col[row] for col in cols))
                if first is None:
                    added.append(doc)
                else:
                    drop[j] = True
                    dup_of[doc] = added[first]
    elif f.role == F.SELECT:
        drop = f.drop(docs, corpus.n_docs, seed_key, lambda name: corpus.scores_of(name, docs))
    elif f.role == F.MODEL:
        reason, values = _model_verdicts(corpus, st, docs, log, scores_file)
        drop = reason > 0
    else:
        verdict = np.zeros(corpus.n_docs, dtype=np.int8)
        for s, p in positions.items():
            v = corpus.feature(s, p)
            if v is not None:
                verdict[corpus.source_start[s] : corpus.source_end[s]] = v
        reason = verdict[docs].astype(np.int16)
        drop = reason > 0
    dropped = docs[drop]
    alive[dropped] = False
    st.dropped_docs.append(dropped)
    st.docs_in += len(docs)
    st.docs_dropped += len(dropped)
    st.chars_in += int(corpus.chars[docs].sum())
    st.chars_dropped += int(corpus.chars[dropped].sum())
    n_in = np.bincount(corpus.source_of[docs], minlength=len(corpus.labels))
    n_drop = np.bincount(corpus.source_of[dropped], minlength=len(corpus.labels))
    for k, label in enumerate(corpus.labels):
        st.by_source[label][0] += int(n_in[k])
        st.by_source[label][1] += int(n_drop[k])
    if f.rules:
        for code, count in zip(*np.unique(reason[drop], return_counts=True)):
            st.reasons[f.rules[int(code) - 1]] += int(count)
    for j in np.flatnonzero(drop)[: max(0, EXAMPLES - len(st.examples))]:
        doc = int(docs[j])
        why = f.rules[int(reason[j]) - 1] if f.rules else ""
        if doc in dup_of:
            why = f"duplicate of {corpus.locator(dup_of[doc])}"
        if f.role == F.MODEL and not np.isnan(values[f.scored[0]][j]):
            why += f" ({f.scored[0]} {values[f.scored[0]][j]:.4g})"
        st.examples.append((doc, why))


def _model_verdicts(
    corpus: Corpus, st: FilterStats, docs: np.ndarray, log: Callable[[str], None] | None, scores_file: pathlib.Path | None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A model filter's reason codes for ``docs`` and the values they were decided on; the spread of those values
    goes to ``st.scores`` and each document's to ``scores_file`` (with its locator and reason)."""
    from . import model_scores

    f = st.link.filter
    if len(docs) == 0:  # nothing reaches it: no model is loaded
        return np.zeros(0, dtype=np.int16), {name: np.zeros(0) for name in f.scored}
    nll, info = model_scores.score(f, st.label, lambda: corpus.texts(docs), len(docs), log)
    codes, values = f.decide(nll)
    name = f.scored[0]
    scored, kept = values[name][~np.isnan(values[name])], values[name][codes == 0]
    quantiles = lambda v: {q: float(np.quantile(v, p)) for q, p in QUANTILES} if len(v) else None  # noqa: E731
    st.scores = {**info, "value": name, "scored": int(len(scored)), "all": quantiles(scored), "kept": quantiles(kept)}
    if scores_file is not None:
        import pyarrow as pa

        locators = [loc for _, batch in corpus.texts(docs, column=1) for loc in batch]
        columns = {"document": pa.array(docs, pa.int64()), "id": pa.array(locators, pa.string())}
        columns.update({k: pa.array(v, pa.float64()) for k, v in values.items()})
        columns["reason"] = pa.array([f.rules[c - 1] if c else "" for c in codes.tolist()], pa.string())
        table = pa.table(columns)
        with pa.OSFile(str(scores_file), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        st.scores["file"] = scores_file.name
    return codes.astype(np.int16), values


QUANTILES = (("min", 0.0), ("p10", 0.1), ("p50", 0.5), ("p90", 0.9), ("max", 1.0))
"""The spread of a model filter's scores that the report gives, of all the scored documents and of the kept ones."""


def _apply_candidates(c: Candidates, docs: np.ndarray, drop: np.ndarray, dup_of: dict[int, int], n_docs: int) -> None:
    """The greedy rule of the dedup indexes over candidates: mark in ``drop`` the documents of ``docs`` an earlier kept one duplicates."""
    if c.group is not None:  # exact: the first document of a key group alive here is kept, the others dropped
        first: dict[int, int] = {}
        for j, (doc, g) in enumerate(zip(docs.tolist(), c.group[docs].tolist())):
            if g < 0:
                continue
            if g in first:
                drop[j] = True
                dup_of[doc] = first[g]
            else:
                first[g] = doc
        return
    pairs = c.pairs if c.pairs is not None else np.zeros((0, 2), dtype=np.int64)
    order = np.lexsort((pairs[:, 0], pairs[:, 1]))
    earlier, later = pairs[order, 0], pairs[order, 1]
    kept = np.zeros(n_docs, dtype=bool)
    at = np.searchsorted(later, docs, side="left")
    end = np.searchsorted(later, docs, side="right")
    for j, (doc, a, b) in enumerate(zip(docs.tolist(), at.tolist(), end.tolist())):
        if a < b:
            hit = earlier[a:b][kept[earlier[a:b]]]
            if len(hit):  # the earliest kept one, as the index finds it
                drop[j] = True
                dup_of[doc] = int(hit[0])
                continue
        kept[doc] = True


def count_tokens(stats: list[FilterStats], corpus: Corpus) -> None:
    """Tokens in and dropped per filter, replaying the chain from each filter's drops."""
    lengths = corpus.tokens.length
    alive = np.ones(corpus.n_docs, dtype=bool)
    for st in stats:
        dropped = np.concatenate(st.dropped_docs) if st.dropped_docs else np.zeros(0, dtype=np.int64)
        if st.label.startswith("filters["):
            seen = alive & text_documents(corpus)
        else:  # a source's own filter sees that source's documents only
            source = int(corpus.source_of[dropped[0]]) if len(dropped) else corpus.labels.index(st.label.rsplit(".filters[", 1)[0])
            seen = alive & (corpus.source_of == source)
        st.tokens_in = int(lengths[seen].sum())
        st.tokens_dropped = int(lengths[dropped].sum())
        alive[dropped] = False


def filter_report(st: FilterStats, corpus: Corpus, with_tokens: bool) -> dict[str, Any]:
    """One filter's entry of ``data_report.json``."""
    settings = st.link.settings
    out: dict[str, Any] = {
        "label": st.label,
        "type": settings["type"],
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
    if st.scores is not None:
        out["scores"] = st.scores
    examples = []
    for doc, why in st.examples:
        doc_id, text = corpus.text_of(doc)
        excerpt = text[:EXCERPT] + ("…" if len(text) > EXCERPT else "")
        examples.append({"document": doc, "id": doc_id, "reason": why, "text": excerpt})
    out["examples"] = examples
    out["settings"] = {k: v for k, v in settings.items() if k != "type"}
    return out


def filter_table(stats: list[FilterStats]) -> str:
    """The chain's counts, for the error of a chain that keeps nothing."""
    lines = [f"  {'filter':<32} {'type':<18} {'docs in':>9} {'dropped':>9}"]
    for st in stats:
        lines.append(f"  {st.label:<32} {st.link.settings['type']:<18} {st.docs_in:>9} {st.docs_dropped:>9}")
    return "\n".join(lines)


def prepare(by_source: list[list[Link]], project_dir: pathlib.Path) -> None:
    """Hand each filter that reads files besides the sources their texts (once per filter)."""
    done: set[int] = set()
    for chain in by_source:
        for link in chain:
            f = link.filter
            if f.role == F.MODEL:
                f.locate(str(project_dir))
            src = f.input_source()
            if src is None or id(f) in done:
                continue
            done.add(id(f))
            named = {**src, "name": f.type}  # messages about these files name the filter
            f.prepare([t for batch in readers.iter_batches(named, project_dir) for t in batch.texts])
