"""The data stage: read, filter, hold out, tokenize, mix and pack, cached by content.

One stage run turns a recipe's data settings (a request, :mod:`.stage_request`) into
training and evaluation sequences:

1. **Read and analyse** (:mod:`.stage_analyse`, parallel, streaming): every source is
   read in batches, and worker processes compute what each document's filter chain
   needs. A token source's documents are ids already (:mod:`.token_sources`): checked
   against the tokenizer, stored as they are, and passed over by the filters.
   With ``executor = "ray"`` (:mod:`.stage_ray`) this pass and tokenizing run as
   Ray tasks over file shards, dedup by a shuffle, and the output is the same.
2. **Filter** (:mod:`.stage_filter`, main process, in chain order): each source's own
   filters, then the filters of every source (:mod:`.filters`, one registry of them).
3. **Hold out** ``eval_fraction`` of the kept documents of the training sources (seeded,
   by document), and every document of each ``split = "eval"`` source: each such source is
   an evaluation set of its own, written apart from the others.
4. **Tokenize** the kept documents (parallel), after training the tokenizer on the kept
   training documents when the recipe trains one (:mod:`.tokenizer`).
5. **Mix and pack** (:mod:`.stage_mix`), once per data segment (a stretch of schedule
   phases with one mixture): documents (each followed by EOS) are concatenated in a
   seeded order and cut into ``seq_len`` blocks, or with ``packing`` off truncated and
   padded one per sequence.

The output is a cache entry under ``cache_dir`` (:mod:`.stage_cache`), keyed by the
sources' content, every setting and the tokenizer, and reused when nothing changed.

Run it with ``recipec data RECIPE``, or let the training script run it (its main process
does; the others wait). ``python -m recipec_runtime.stage REQUEST.json`` is the entry
point the script uses, in a fresh process.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

from . import formats
from .preference import REJECTED, SUPERVISED
from .readers import DataError
from .stage_analyse import read_and_analyse, tokenize, tokenize_examples
from .stage_cache import StageOutput, cache_key, cache_root, commit, load_entry, load_sequences, tokenizer_id
from .stage_filter import apply_chain, chains, count_tokens, filter_report, filter_table, prepare
from .stage_mix import mixture, write_examples, write_sequences
from .stage_request import STAGE_VERSION, local_path, request_from_settings
from .tokenizer import fingerprint as tokenizer_fingerprint
from .tokenizer import load_for_stage, prepare_chat, train_bpe
from .token_sources import check_tokenizers

__all__ = [
    "DataError",
    "StageOutput",
    "format_report",
    "load_entry",
    "load_sequences",
    "local_path",
    "lookup",
    "main",
    "request_from_settings",
    "run",
    "run_in_subprocess",
    "tokenizer_fingerprint",
]


def lookup(request: dict, tokenizer: Any = None) -> StageOutput | None:
    """The cache entry for ``request`` if it is complete, else None (hashes the sources).

    Args:
        request: from :func:`.stage_request.request_from_settings`.
        tokenizer: the loaded tokenizer, if the caller has it (saves loading it again).
    """
    if tokenizer is None and "train" not in request["tokenizer"]:
        tokenizer = load_for_stage(request["tokenizer"])
    key, _ = cache_key(request["spec"], request["project_dir"], tokenizer_id(request, tokenizer))
    return load_entry(cache_root(request) / key[:32])


def run(request: dict, *, force: bool = False, log: Callable[[str], None] = print) -> StageOutput:
    """Run the data stage for ``request`` unless its cache entry exists (see :func:`lookup`).

    Returns:
        The complete cache entry.

    Raises:
        DataError: bad data, a filter chain that keeps nothing, or an impossible mixture.
    """
    started = time.perf_counter()
    spec = request["spec"]
    tokenizer = None if "train" in request["tokenizer"] else load_for_stage(request["tokenizer"])
    key, fingerprints = cache_key(spec, request["project_dir"], tokenizer_id(request, tokenizer))
    root = cache_root(request)
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
        manifest = {"key": key, "spec": spec, "fingerprints": fingerprints}
        out = commit(work, entry, report, manifest, replace=force)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log(f"data: wrote {entry}")
    return out


class _Builder:
    """One stage run inside a scratch directory."""

    def __init__(self, request: dict, work: pathlib.Path, tokenizer: Any, log: Callable[[str], None]) -> None:
        self.request = request
        self.spec = request["spec"]
        self.project_dir = pathlib.Path(request["project_dir"])
        self.work = work
        self.tokenizer = tokenizer
        self.log = log
        self.chains = chains(self.spec)
        n = int(request["num_proc"] or 0)
        self.num_proc = n if n > 0 else len(os.sched_getaffinity(0))
        self.timings: dict[str, float] = {}
        self.executor_name = request.get("executor") or "local"
        self.executor: Any = None  # the Ray side (.stage_ray), for executor "ray"

    def build(self) -> dict:
        """Every pass, in order; the report (``data_report.json``) without key and fingerprints."""
        if self.executor_name == "ray":
            from .stage_ray import RayExecutor

            self.executor = RayExecutor(self.request.get("ray_address"), self.num_proc, self.log)
            try:
                report = self.passes()
            finally:
                self.executor.close()
            return report
        return self.passes()

    def passes(self) -> dict:
        """The passes of :meth:`build`, on the executor of the request."""
        spec = self.spec
        examples_mode = formats.has_examples(spec["sources"])
        t0 = time.perf_counter()
        prepare(self.chains, self.project_dir)
        check_tokenizers(self.request, self.tokenizer)  # before any file is read
        if self.executor is not None:
            corpus = self.executor.read_and_analyse(spec, self.chains, self.project_dir, self.work, self.tokenizer)
            self.num_proc = self.executor.cpus
        else:
            corpus = read_and_analyse(spec, self.chains, self.project_dir, self.work, self.tokenizer, self.num_proc)
        self.timings["read_and_analyse_s"] = round(time.perf_counter() - t0, 3)
        self.log(
            f"data: read {corpus.n_docs} documents ({corpus.chars.sum() / 1e6:.1f} M characters) "
            f"in {self.timings['read_and_analyse_s']:.1f} s"
        )

        t0 = time.perf_counter()
        alive, stats = apply_chain(corpus, spec, self.chains, getattr(corpus, "candidates", None), log=self.log, work=self.work)
        self.timings["filter_s"] = round(time.perf_counter() - t0, 3)
        if not alive.any():
            raise DataError("the filters dropped every document:\n" + filter_table(stats))

        train_docs, eval_docs, eval_sets = self.split(corpus, alive)
        if self.tokenizer is None:
            self.train_tokenizer(corpus, train_docs)
        t0 = time.perf_counter()
        to_tokenize = np.arange(corpus.n_docs) if spec["count_dropped_tokens"] else np.flatnonzero(alive)
        if examples_mode:  # the kept ones as examples with their masks; the dropped ones, counted, as text
            tokenized = tokenize_examples(corpus, spec, np.flatnonzero(alive), self.tokenizer, self.num_proc, self.executor)
            tokenized += tokenize(corpus, to_tokenize[~alive[to_tokenize]], self.tokenizer, self.num_proc, self.executor)
            identical = sum(1 for r in corpus.dropped.values() if r == "identical_sides")
            if identical:
                self.log(f"warning: data: {identical} preference pairs have the same chosen and rejected completion; dropped")
            kept = lambda docs: np.array([d for d in docs if int(d) not in corpus.dropped], dtype=np.int64)  # noqa: E731
            train_docs, eval_docs = kept(train_docs), kept(eval_docs)
            eval_sets = {name: kept(docs) for name, docs in eval_sets.items()}
            if len(train_docs) == 0:
                dropped = self.examples_report(corpus)["dropped"]
                raise DataError(
                    f"no training example is left after fitting them to max_length {spec['max_length'] or spec['seq_len']}: "
                    f"dropped {dropped}; raise data.max_length"
                )
        else:
            tokenized = tokenize(corpus, to_tokenize, self.tokenizer, self.num_proc, self.executor)
        self.timings["tokenize_s"] = round(time.perf_counter() - t0, 3)
        self.log(f"data: tokenized {tokenized} documents in {self.timings['tokenize_s']:.1f} s")
        with_tokens = bool((corpus.tokens.length >= 0).all())
        if with_tokens:
            count_tokens(stats, corpus)

        t0 = time.perf_counter()
        segments = []
        write = (
            (lambda path, docs: write_examples(corpus, spec, path, docs))
            if examples_mode
            else (lambda path, docs: write_sequences(corpus, spec, self.tokenizer, path, docs))
        )
        for index, segment in enumerate(spec["segments"]):
            order, info = mixture(corpus, spec, index, segment, train_docs)
            written = write(self.work / f"train-{index}.arrow", order)
            segments.append({**info, **written})
        evaluation = write(self.work / "eval.arrow", eval_docs)
        sets = {}
        for name, docs in eval_sets.items():
            sets[name] = {"file": f"eval-{name}.arrow", **write(self.work / f"eval-{name}.arrow", docs)}
            if sets[name]["sequences"] == 0:
                raise DataError(self.empty_eval_set(name, docs, alive, corpus))
        self.timings["pack_s"] = round(time.perf_counter() - t0, 3)
        examples = self.examples_report(corpus, segments, [evaluation, *sets.values()]) if examples_mode else None
        corpus.tokens.close()
        corpus.masks.close()

        labels = corpus.labels
        kept_tokens = int(corpus.tokens.length[np.flatnonzero(alive)].sum())
        return {
            "stage_version": STAGE_VERSION,
            "num_proc": self.num_proc,
            "executor": self.executor_name,
            **({"ray": self.executor.report(corpus)} if self.executor is not None else {}),
            "sources": [
                {
                    "label": labels[i],
                    "files": st.files,
                    "documents": st.documents,
                    "empty": st.empty,
                    "skipped": st.skipped,
                    "skipped_examples": st.skipped_examples,
                    "bytes": st.bytes,
                    "chars": int(corpus.chars[corpus.source_start[i] : corpus.source_end[i]].sum()),
                    "kept": int(alive[corpus.source_start[i] : corpus.source_end[i]].sum()),
                }
                for i, st in enumerate(corpus.stats)
            ],
            "documents": {
                "read": corpus.n_docs,
                "kept": int(alive.sum()),
                "dropped": int(corpus.n_docs - alive.sum()),
                "train": int(len(train_docs)),
                "eval": int(len(eval_docs) + sum(len(docs) for docs in eval_sets.values())),
            },
            "bytes": int(sum(st.bytes for st in corpus.stats)),
            "chars": {"read": int(corpus.chars.sum()), "kept": int(corpus.chars[alive].sum())},
            "tokens": {"kept": kept_tokens, "read": int(corpus.tokens.length.sum()) if with_tokens else None},
            "filters": [filter_report(st, corpus, with_tokens) for st in stats],
            "segments": segments,
            "eval": evaluation,
            "eval_sets": sets,
            "seq_len": spec["seq_len"],
            "packing": spec["packing"],
            "tokenizer": {
                "trained": "train" in self.request["tokenizer"],
                "eos_token_id": int(self.tokenizer.eos_token_id),
                "vocab_size": len(self.tokenizer),
            },
            "timings": self.timings,
            **({"examples": examples} if examples else {}),
        }

    def examples_report(self, corpus: Any, segments: list | None = None, evaluation: list[dict] | None = None) -> dict:
        """Examples kept and dropped by reason when fitted to max_length, supervised tokens, packing efficiency, three rendered."""
        reasons: dict[str, int] = {}
        for reason in corpus.dropped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        out: dict[str, Any] = {
            "dropped": reasons,
            "truncated": corpus.truncated,
            "max_length": int(self.spec["max_length"] or self.spec["seq_len"]),
        }
        if segments is not None:
            out["supervised_tokens"] = sum(s["supervised_tokens"] for s in segments)
            out["packing_efficiency"] = [s["packing_efficiency"] for s in segments]
            out["eval_supervised_tokens"] = sum(e["supervised_tokens"] for e in evaluation or ())  # every held-out file
            out["rendered"] = self.rendered_examples(corpus)
        return out

    def rendered_examples(self, corpus: Any, n: int = 3) -> list[dict]:
        """The first ``n`` kept examples as text with the supervised spans in ``[[...]]``: what the model learns from."""
        out = []
        for doc in range(corpus.n_docs):
            if len(out) == n:
                break
            ids = corpus.tokens.get(doc) if corpus.tokens.length[doc] > 0 and corpus.masks.length[doc] > 0 else None
            if ids is None or doc in corpus.dropped:
                continue
            mask = corpus.masks.get(doc)
            parts, start = [], 0
            for i in range(1, len(ids) + 1):
                if i == len(ids) or mask[i] != mask[start]:
                    text = self.tokenizer.decode([int(t) for t in ids[start:i]])
                    if mask[start] & REJECTED and (start == 0 or not mask[start - 1] & REJECTED):  # a pair's rejected side
                        parts.append("\n<<< rejected >>>\n")
                    parts.append(f"[[{text}]]" if mask[start] & SUPERVISED else text)
                    start = i
            out.append({"locator": corpus.locator(doc), "text": "".join(parts)})
        return out

    def split(self, corpus: Any, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """The kept documents as ``(train, held out, evaluation sets)``.

        ``held out`` is ``eval_fraction`` of the training sources' documents (seeded, by
        document); ``evaluation sets`` maps the name of each ``split = "eval"`` source, in
        source order, to all its kept documents.

        Raises:
            DataError: a ``split = "eval"`` source has no name (its file and its loss are named after it).
        """
        sets: dict[str, np.ndarray] = {}
        evaluation = np.zeros(corpus.n_docs, dtype=bool)
        for i, source in enumerate(self.spec["sources"]):
            if source.get("split", "train") != "eval":
                continue
            if not source.get("name"):
                raise DataError(f'{corpus.labels[i]} has split = "eval" and no name; name it: its loss is logged as eval_loss_<name>')
            of_source = corpus.source_of == i
            sets[source["name"]] = np.flatnonzero(alive & of_source)
            evaluation |= of_source
        train, held = self.split_fraction(alive & ~evaluation)
        return train, held, sets

    def empty_eval_set(self, name: str, docs: np.ndarray, alive: np.ndarray, corpus: Any) -> str:
        """Why the evaluation set ``name`` has no sequence, for the error."""
        i = next(i for i, s in enumerate(self.spec["sources"]) if s.get("name") == name)
        read = int(corpus.source_end[i] - corpus.source_start[i])
        kept = int(alive[corpus.source_start[i] : corpus.source_end[i]].sum())
        tokens = int(corpus.tokens.length[docs].sum()) if len(docs) else 0
        why = (
            f"{read} documents read, {kept} kept by the filters"
            + (f", {len(docs)} fitted to max_length" if formats.has_examples(self.spec["sources"]) else "")
            + f", {tokens} tokens"
        )
        hint = "" if formats.has_examples(self.spec["sources"]) or not self.spec["packing"] else (
            f"; packing cuts whole blocks of seq_len {self.spec['seq_len']} tokens: add documents or lower seq_len"
        )
        return f'evaluation source {name!r} (split = "eval") gives no sequence to evaluate: {why}{hint}'

    def split_fraction(self, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``eval_fraction`` of the documents ``alive`` held out, seeded, by document."""
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

    def train_tokenizer(self, corpus: Any, train_docs: np.ndarray) -> None:
        """Train the recipe's BPE tokenizer on the kept training documents; it is saved with the entry."""
        t0 = time.perf_counter()
        settings = self.request["tokenizer"]["train"]
        limit = settings["max_documents"]
        docs = train_docs if limit is None else train_docs[:limit]
        texts = [t for _, batch in corpus.texts(docs) for t in batch]
        tok = train_bpe(texts, int(settings["vocab_size"]), min_frequency=int(settings["min_frequency"]))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tokenizer = self.request["tokenizer"]
        prepare_chat(tok, tokenizer.get("chat_template"), tokenizer.get("special_tokens") or ())
        tok.save_pretrained(self.work / "tokenizer")
        self.tokenizer = tok
        self.timings["tokenizer_train_s"] = round(time.perf_counter() - t0, 3)
        self.log(f"data: trained a {len(tok)}-token BPE tokenizer on {len(texts)} documents")


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
            sc = f.get("scores")
            if sc and sc.get("all"):  # a model filter: the spread of its scores, where they were computed
                spread = lambda q: " ".join(f"{k} {v:.4g}" for k, v in q.items())  # noqa: E731
                lines.append(f"    {sc['value']} of {sc['scored']} scored ({sc['device']}, {sc['dtype']}): {spread(sc['all'])}")
                if sc.get("kept"):
                    lines.append(f"    kept: {spread(sc['kept'])}; each document's in {sc.get('file', '-')}")
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
    sets = report.get("eval_sets") or {}
    lines.append("")
    if sets:  # the eval_fraction documents and each split = "eval" source, evaluated apart (eval_loss_<name>)
        lines.append(f"held out: {len(sets)} evaluation source(s) beside the eval_fraction documents")
        supervised = "supervised_tokens" in e  # examples: what the loss sees
        head = f"  {'evaluation set':<24} {'sequences':>10} {'tokens':>12} {'documents':>10}"
        lines.append(head + (f" {'supervised':>11}" if supervised else ""))
        for name, s in [("(eval_fraction)", e), *sets.items()]:
            row = f"  {name:<24} {s['sequences']:>10} {s['tokens']:>12} {s['documents']:>10}"
            lines.append(row + (f" {s['supervised_tokens']:>11}" if supervised else ""))
    else:
        lines.append(f"held out: {e['sequences']} sequences ({e['tokens']} tokens) from {e['documents']} documents")
    x = report.get("examples")
    if x:
        dropped = ", ".join(f"{k}: {v}" for k, v in x["dropped"].items()) or "none"
        efficiency = ", ".join("-" if p is None else f"{p:.3f}" for p in x["packing_efficiency"])
        lines.append("")
        lines.append(
            f"examples: {d['kept']} kept by the filters; fitted to max_length {x['max_length']}: {x['truncated']} truncated, "
            f"dropped {dropped}"
        )
        lines.append(
            f"supervised tokens: {x['supervised_tokens']} train, {x['eval_supervised_tokens']} held out; "
            f"packing efficiency {efficiency}"
        )
        for r in x["rendered"]:
            lines.append("")
            lines.append(f"{r['locator']} (the loss sees what is in [[...]]):")
            lines.extend("  " + line for line in r["text"].splitlines())
    return "\n".join(lines)


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
