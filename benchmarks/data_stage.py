"""recipec's data stage against datatrove: same corpus, same filters, same cores.

The corpus is every .py, .md and .txt file of recipec's installed site-packages (real code
and prose), one document per file (id: its path there; files that are not UTF-8 and empty
files are left out), sorted by path and written as JSONL shards. It is run at two sizes,
the first half by bytes and the whole, so that memory can be compared as the corpus
doubles. On each size this times, as separate processes with WORKERS workers each:

  datatrove  JsonlReader -> GopherQualityFilter (defaults) -> exact dedup (signature, find
             dedups, filter) -> JSONL writer, on LocalPipelineExecutor with WORKERS tasks
             (benchmarks/data_stage/datatrove_side.py, run in .venv-bench)
  recipec    `recipec data RECIPE --force --json` (num_proc = WORKERS), three recipes:
             whole     gopher_quality, exact_dedup, minhash_dedup, then tokenize and pack
             like      gopher_quality, exact_dedup with normalize = false: datatrove's rules
                       (recipec still tokenizes and packs, which datatrove does not)
             nogopher  exact_dedup, minhash_dedup, tokenize, pack: Gopher keeps few files
                       of a corpus of code, so this one shows the rest of the stage at full
                       volume

and prints documents/s and MB/s (documents and UTF-8 text bytes read, over the wall time
of the whole process, interpreter start included), CPU time and peak memory of each
process tree, and the ratios recipec / datatrove. It then runs recipec's Gopher rules
(recipec.runtime.filters.gopher_quality) in one process and compares, document by
document, their decision and first failed rule with datatrove's.

Memory and CPU: the process tree (the command and every descendant, found through /proc)
is sampled every SAMPLE_S seconds. "peak RSS" is the largest sum of Rss over the tree,
"peak PSS" the largest sum of Pss (both from smaps_rollup; Pss counts pages shared between
forked workers once), "max proc" the largest peak RSS of one process (VmHWM, kept by the
kernel, so not sampled). "CPU s" is user + system time of the tree. The 1-minute load
average before each run is printed too: other work on the machine slows whichever side
runs beside it, so run this on an otherwise idle machine.

One-time setup of the benchmark environment, kept apart from recipec's own .venv. Besides
datatrove's core, its Gopher filter splits words with spaCy's blank English pipeline (no
model download) and imports regex; its dedup package imports tokenizers and hashes with
xxhash (pinned below 4 by datatrove's `processing` extra); its JSONL reader and writer use
orjson:

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install datatrove spacy regex tokenizers "xxhash<4" numpy orjson

Usage (from the repository root, recipec installed in .venv):

    python3 benchmarks/data_stage.py [--workdir DIR] [--sizes half,full] [--repeats 1]
        [--skip-datatrove] [--skip-recipec] [--max-mb MB] [--json OUT]

A full run takes about a quarter of an hour on 2 cores, most of it datatrove's Gopher
filter. `--max-mb 20` is a quick smoke run (about two minutes); a much smaller corpus can
leave no document after Gopher, which `recipec data` reports as an error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HELPERS = REPO / "benchmarks" / "data_stage"
# recipec's own environment, whose installed packages are the corpus
SITE_PACKAGES = next(iter(sorted((REPO / ".venv" / "lib").glob("python3*/site-packages"))), None)
RECIPEC_PYTHON = REPO / ".venv" / "bin" / "python"
RECIPEC = REPO / ".venv" / "bin" / "recipec"
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"

SUFFIXES = (".py", ".md", ".txt")
SHARD_BYTES = 8_000_000  # text bytes per JSONL shard; the corpus doubles, so do the shards
WORKERS = 2  # this machine has 2 cores; both sides get both
SAMPLE_S = 0.1
TOKENIZER_VOCAB = 8192
TOKENIZER_SAMPLE_MB = 4.0
MIB = 1024 * 1024
MAX_DIFFERENCE_ROWS = 12  # kinds of Gopher disagreement printed (all go to --json)

# recipec's side: the quickstart recipe with the benchmark's tokenizer and [data]
RECIPE = """\
[recipe]
name = "data-stage-{size}-{variant}"
description = "benchmarks/data_stage.py: {label} on the {size} corpus."
seed = 1234

[model]
init = "llama"
dtype = "float32"

[model.config]
hidden_size = 192
intermediate_size = 512
num_hidden_layers = 3
num_attention_heads = 4
max_position_embeddings = 512

[tokenizer]
path = {tokenizer}

[data]
seq_len = 512
eval_fraction = 0.0    # no held-out split: datatrove's side has none, and few documents pass Gopher here
num_proc = {workers}
cache_dir = {cache_dir}

[[data.sources]]
path = {sources}
{filters}
[optim]
lr = 3e-3

[train]
micro_batch_size = 16
batch_size = 32
max_steps = 300
eval_every = 0          # no held-out split to evaluate on
save_every = 100

[launch]
num_processes = 1
mixed_precision = "no"
cpu = true
"""

# recipec's variants: a label and the [[data.filters]] tables, in chain order
VARIANTS = {
    "whole": (
        "gopher+exact+minhash, tokenize, pack",
        ({"type": "gopher_quality"}, {"type": "exact_dedup"}, {"type": "minhash_dedup"}),
    ),
    # datatrove's rules: its exact dedup hashes the text as it is, so no normalisation
    "like": (
        "gopher+exact, tokenize, pack",
        ({"type": "gopher_quality"}, {"type": "exact_dedup", "normalize": False}),
    ),
    # Gopher keeps few documents of a corpus of code, so the rest of the stage sees few;
    # without it, dedup, tokenize and pack get every document
    "nogopher": (
        "exact+minhash, tokenize, pack (all docs)",
        ({"type": "exact_dedup"}, {"type": "minhash_dedup"}),
    ),
}


# datatrove's Gopher drop reasons, in the order its filter tests them, with the name of
# the same rule in recipec (recipec.runtime.filters.GOPHER_QUALITY_RULES)
DATATROVE_GOPHER_RULES = {
    "gopher_short_doc": "min_words",
    "gopher_long_doc": "max_words",
    "gopher_below_avg_threshold": "min_mean_word_length",
    "gopher_above_avg_threshold": "max_mean_word_length",
    "gopher_too_many_hashes": "max_symbol_word_ratio_hash",
    "gopher_too_many_ellipsis": "max_symbol_word_ratio_ellipsis",
    "gopher_too_many_bullets": "max_bullet_lines_ratio",
    "gopher_too_many_end_ellipsis": "max_ellipsis_lines_ratio",
    "gopher_below_alpha_threshold": "min_alpha_words_ratio",
    "gopher_enough_stop_words": "min_stop_words",
}


@dataclass
class Corpus:
    size: str
    dir: Path
    documents: int
    bytes: int

    @property
    def mb(self) -> float:
        return self.bytes / 1e6


@dataclass
class Measured:
    """One timed process tree."""

    wall_s: float
    cpu_s: float
    load_before: float
    peak_rss_mib: float
    peak_pss_mib: float
    max_proc_rss_mib: float
    returncode: int
    stdout: str
    stderr_tail: str


@dataclass
class Result:
    side: str
    variant: str
    label: str
    size: str
    documents: int
    mb: float
    wall_s: float
    docs_per_s: float
    mb_per_s: float
    cpu_s: float
    load_before: float
    peak_rss_mib: float
    peak_pss_mib: float
    max_proc_rss_mib: float
    repeats: list[float] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    error: str | None = None


# -- corpus -------------------------------------------------------------------------------


def collect_documents(root: Path, max_bytes: int | None) -> tuple[list[tuple[str, str]], int, int]:
    """Every .py/.md/.txt file under ``root`` as (relative path, text), sorted by path.

    Files that are not UTF-8 and empty files (datatrove's reader skips documents without
    text) are left out. Returns the documents and the number of files skipped for each
    reason.
    """
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        paths.extend(os.path.join(dirpath, name) for name in filenames if name.endswith(SUFFIXES))
    paths.sort(key=lambda p: os.path.relpath(p, root))

    docs, total, not_utf8, empty = [], 0, 0, 0
    for path in paths:
        if not os.path.isfile(path):
            continue
        raw = Path(path).read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            not_utf8 += 1
            continue
        if not text:
            empty += 1
            continue
        if max_bytes is not None and total + len(raw) > max_bytes:
            break
        docs.append((os.path.relpath(path, root), text))
        total += len(raw)
    return docs, not_utf8, empty


def write_corpus(docs: list[tuple[str, str]], out: Path, size: str) -> Corpus:
    """Write ``docs`` as JSONL shards of about SHARD_BYTES text bytes each."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shard, shard_bytes, f = 0, 0, None
    total = 0
    for doc_id, text in docs:
        if f is None or shard_bytes >= SHARD_BYTES:
            if f is not None:
                f.close()
                shard += 1
            f = (out / f"shard-{shard:05d}.jsonl").open("w", encoding="utf-8")
            shard_bytes = 0
        n = len(text.encode("utf-8"))
        f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
        shard_bytes += n
        total += n
    if f is not None:
        f.close()
    return Corpus(size, out, len(docs), total)


def build_corpora(workdir: Path, sizes: list[str], max_mb: float | None) -> dict[str, Corpus]:
    """The corpus at each size, reusing one already in ``workdir`` from the same settings."""
    manifest_path = workdir / "corpus.json"
    settings = {"source": str(SITE_PACKAGES), "max_mb": max_mb, "shard_bytes": SHARD_BYTES}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["settings"] == settings and all(s in manifest["corpora"] for s in sizes):
            corpora = {}
            for s in sizes:
                c = manifest["corpora"][s]
                corpora[s] = Corpus(s, Path(c["dir"]), c["documents"], c["bytes"])
            if all(c.dir.is_dir() for c in corpora.values()):
                print(f"corpus: reusing {workdir}")
                return corpora

    start = time.perf_counter()
    max_bytes = int(max_mb * 1e6) if max_mb else None
    docs, not_utf8, empty = collect_documents(SITE_PACKAGES, max_bytes)
    total = sum(len(t.encode("utf-8")) for _, t in docs)
    corpora = {}
    for s in ("half", "full"):
        if s == "half":
            half, acc = [], 0
            for doc in docs:
                acc += len(doc[1].encode("utf-8"))
                if acc > total / 2:
                    break
                half.append(doc)
            chosen = half
        else:
            chosen = docs
        corpora[s] = write_corpus(chosen, workdir / f"corpus-{s}", s)
    print(
        f"corpus: {len(docs):,} files from {SITE_PACKAGES} ({', '.join(SUFFIXES)}; "
        f"{not_utf8} not UTF-8 and {empty} empty left out), built in {time.perf_counter() - start:.1f} s"
    )
    manifest_path.write_text(
        json.dumps(
            {
                "settings": settings,
                "corpora": {
                    s: {"dir": str(c.dir), "documents": c.documents, "bytes": c.bytes} for s, c in corpora.items()
                },
            },
            indent=2,
        )
    )
    return {s: corpora[s] for s in sizes}


# -- measuring a process tree ---------------------------------------------------------------


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU time in clock ticks) of every process on the machine."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses; the fields after it do not
        fields = stat.rsplit(b")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
    return table


def _tree(root: int, table: dict[int, tuple[int, int]]) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(children.get(pid, ()))
    return pids


def _memory(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, peak RSS) of one process in bytes; zeros once it is gone."""
    rss = pss = hwm = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(b"Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return rss, pss, hwm


def measure(argv: list[str], log: Path, cwd: Path = REPO) -> Measured:
    """Run ``argv`` to completion: its wall time, and the peak memory and CPU time of its process tree.

    stdout is returned, stderr goes to ``log`` (and its tail into the result).
    """
    out_path = log.with_suffix(".stdout")
    peak = {"rss": 0, "pss": 0, "proc": 0}
    cpu_ticks: dict[int, int] = {}  # last seen per process of the tree
    done = threading.Event()
    load = os.getloadavg()[0]

    with open(out_path, "wb") as out, open(log, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err)

        def sample() -> None:
            while not done.is_set():
                table = _processes()
                rss = pss = 0
                for pid in _tree(proc.pid, table):
                    r, p, hwm = _memory(pid)
                    rss += r
                    pss += p
                    peak["proc"] = max(peak["proc"], hwm)
                    if pid in table:
                        cpu_ticks[pid] = table[pid][1]
                peak["rss"] = max(peak["rss"], rss)
                peak["pss"] = max(peak["pss"], pss)
                done.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # wait4 rather than Popen.wait: it also gives the command's own rusage
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()

    # wait4's CPU time is exact and covers every descendant that was waited for, as
    # well-behaved trees are; the sum of the last samples also covers any that were not
    sampled_cpu = sum(cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")
    stderr = log.read_text(errors="replace")
    return Measured(
        wall_s=wall,
        cpu_s=max(usage.ru_utime + usage.ru_stime, sampled_cpu),
        load_before=load,
        peak_rss_mib=peak["rss"] / MIB,
        peak_pss_mib=peak["pss"] / MIB,
        # the command's own ru_maxrss (KiB on Linux) covers a last peak the sampler missed
        max_proc_rss_mib=max(peak["proc"], usage.ru_maxrss * 1024) / MIB,
        returncode=proc.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr_tail="\n".join(stderr.strip().splitlines()[-15:]),
    )


def _result(side: str, variant: str, label: str, corpus: Corpus, runs: list[Measured], counts: dict) -> Result:
    """Median wall time over the repeats, the largest peaks."""
    wall = statistics.median(r.wall_s for r in runs)
    return Result(
        side=side,
        variant=variant,
        label=label,
        size=corpus.size,
        documents=corpus.documents,
        mb=corpus.mb,
        wall_s=wall,
        docs_per_s=corpus.documents / wall,
        mb_per_s=corpus.mb / wall,
        cpu_s=statistics.median(r.cpu_s for r in runs),
        load_before=max(r.load_before for r in runs),
        peak_rss_mib=max(r.peak_rss_mib for r in runs),
        peak_pss_mib=max(r.peak_pss_mib for r in runs),
        max_proc_rss_mib=max(r.max_proc_rss_mib for r in runs),
        repeats=[r.wall_s for r in runs],
        counts=counts,
    )


def _failed(side: str, variant: str, label: str, corpus: Corpus, run: Measured, what: str) -> Result:
    message = f"{what} exited {run.returncode}:\n{run.stderr_tail}"
    print(f"  {side} {variant} on {corpus.size}: FAILED, {message}")
    nan = float("nan")
    return Result(
        side, variant, label, corpus.size, corpus.documents, corpus.mb, *[nan] * 8, error=message
    )


# -- datatrove ----------------------------------------------------------------------------


def run_datatrove(corpus: Corpus, workdir: Path, repeats: int) -> tuple[Result, Path | None]:
    label = "gopher+exact, write JSONL"
    runs, summary = [], {}
    decisions = None
    for i in range(repeats):
        work = workdir / f"datatrove-{corpus.size}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        run = measure(
            [str(BENCH_PYTHON), str(HELPERS / "datatrove_side.py"), str(corpus.dir), str(work), "--tasks", str(WORKERS)],
            workdir / f"datatrove-{corpus.size}.log",
        )
        if run.returncode != 0:
            return _failed("datatrove", "like", label, corpus, run, "datatrove_side.py"), None
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        # keep the decisions, drop the bulky intermediate and output documents
        decisions = workdir / f"datatrove-{corpus.size}-decisions.jsonl"
        shutil.copyfile(summary["decisions"], decisions)
        shutil.rmtree(work, ignore_errors=True)
        runs.append(run)
        print(f"  datatrove on {corpus.size}, run {i + 1}/{repeats}: {run.wall_s:.1f} s")
    gopher_s = sum(
        s["seconds"] for s in summary["steps"]["1-gopher-signature"] if "Gopher" in s["name"]
    )
    counts = {
        "read": summary["documents_read"],
        "kept": summary["documents_kept"],
        "filters": [
            {"type": "gopher_quality", "docs_dropped": summary["gopher_dropped"]},
            {"type": "exact_dedup", "docs_dropped": summary["dedup_dropped"]},
        ],
        # summed over the workers: CPU seconds of the Gopher step, spaCy's word splitting included
        "gopher_step_s": gopher_s,
        "steps": summary["steps"],
    }
    return _result("datatrove", "like", label, corpus, runs, counts), decisions


# -- recipec ------------------------------------------------------------------------------


def recipec_has_data_command() -> bool:
    if not RECIPEC.exists():
        return False
    probe = subprocess.run([str(RECIPEC), "data", "--help"], capture_output=True, text=True)
    return probe.returncode == 0


def ensure_tokenizer(corpus: Corpus, workdir: Path) -> Path:
    out = workdir / "tokenizer"
    if (out / "tokenizer.json").exists():
        return out
    subprocess.run(
        [
            str(RECIPEC_PYTHON),
            str(HELPERS / "train_tokenizer.py"),
            str(corpus.dir),
            str(out),
            "--mb",
            str(TOKENIZER_SAMPLE_MB),
            "--vocab-size",
            str(TOKENIZER_VOCAB),
        ],
        cwd=REPO,
        check=True,
    )
    return out


def _toml(value: object) -> str:
    """A TOML literal for a string, bool or number (json.dumps agrees with TOML on these)."""
    return json.dumps(value)


def write_recipe(corpus: Corpus, variant: str, workdir: Path, tokenizer: Path) -> Path:
    filters = "".join(
        "\n[[data.filters]]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in table.items())
        for table in VARIANTS[variant][1]
    )
    text = RECIPE.format(
        size=corpus.size,
        variant=variant,
        label=VARIANTS[variant][0],
        workers=WORKERS,
        tokenizer=_toml(str(tokenizer)),
        cache_dir=_toml(str(workdir / f"cache-{corpus.size}-{variant}")),
        sources=_toml(str(corpus.dir / "*.jsonl")),
        filters=filters,
    )
    path = workdir / "recipes" / f"{corpus.size}-{variant}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def recipec_counts(report: dict) -> dict:
    """Documents read and kept and the drops per filter, from recipec's stage report."""
    documents = report.get("documents", {})
    filters = []
    for entry in report.get("filters", []):
        dropped = entry.get("docs_dropped")
        if dropped is None and "docs_in" in entry and "docs_kept" in entry:
            dropped = entry["docs_in"] - entry["docs_kept"]
        filters.append({"type": entry.get("type", entry.get("label")), "docs_dropped": dropped})
    return {"read": documents.get("read"), "kept": documents.get("kept"), "filters": filters}


def _json_from(stdout: str) -> dict:
    """The JSON object a command printed, skipping any lines it printed before it."""
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        start = stdout.find("\n{")
        if start < 0:
            raise
        return json.loads(stdout[start + 1 :])


def run_recipec(corpus: Corpus, variant: str, workdir: Path, tokenizer: Path, repeats: int) -> Result:
    label = VARIANTS[variant][0]
    recipe = write_recipe(corpus, variant, workdir, tokenizer)
    runs, report = [], {}
    for i in range(repeats):
        run = measure(
            [str(RECIPEC), "data", str(recipe), "--force", "--json"],
            workdir / f"recipec-{corpus.size}-{variant}.log",
        )
        if run.returncode != 0:
            return _failed("recipec", variant, label, corpus, run, f"recipec data {recipe}")
        report = _json_from(run.stdout)
        runs.append(run)
        print(f"  recipec {variant} on {corpus.size}, run {i + 1}/{repeats}: {run.wall_s:.1f} s")
    counts = recipec_counts(report)
    counts["report"] = report
    return _result("recipec", variant, label, corpus, runs, counts)


# -- Gopher decisions, document by document -------------------------------------------------


def compare_gopher(corpus: Corpus, datatrove_decisions: Path, workdir: Path) -> dict:
    """recipec's Gopher decision and reason per document against datatrove's.

    Both filters stop at the first rule a document fails, and test the rules in the same
    order, so the reasons are comparable as well as the keep/drop decisions.
    """
    out = workdir / f"recipec-gopher-{corpus.size}.json"
    subprocess.run(
        [str(RECIPEC_PYTHON), str(HELPERS / "recipec_gopher.py"), str(corpus.dir), str(out)], cwd=REPO, check=True
    )
    mine = json.loads(out.read_text())
    rules = {int(k): v for k, v in mine["rules"].items()}
    theirs = {}
    with datatrove_decisions.open() as f:
        for line in f:
            row = json.loads(line)
            reason = row["reason"] or "dropped"
            theirs[row["id"]] = DATATROVE_GOPHER_RULES.get(reason, reason)

    confusion = Counter()
    differ: dict[tuple[str, str], list[str]] = defaultdict(list)  # (recipec, datatrove) -> ids
    per_rule: dict[str, Counter] = defaultdict(Counter)
    for doc_id, code in zip(mine["ids"], mine["codes"]):
        a = "kept" if code == 0 else rules.get(code, f"code {code}")
        b = theirs.get(doc_id, "kept")
        confusion[("kept" if a == "kept" else "dropped", "kept" if b == "kept" else "dropped")] += 1
        if a != b:
            differ[(a, b)].append(doc_id)
        if a != "kept":
            per_rule[a]["recipec"] += 1
        if b != "kept":
            per_rule[b]["datatrove"] += 1
        if a == b != "kept":
            per_rule[a]["both"] += 1

    order = list(DATATROVE_GOPHER_RULES.values())
    n = len(mine["ids"])
    agree = confusion[("kept", "kept")] + confusion[("dropped", "dropped")]
    return {
        "documents": n,
        "agreement": agree / n if n else float("nan"),
        "same_reason": (n - sum(len(ids) for ids in differ.values())) / n if n else float("nan"),
        "confusion": {f"recipec {a} / datatrove {b}": c for (a, b), c in sorted(confusion.items())},
        "per_rule": {
            rule: {
                "recipec": c["recipec"],
                "datatrove": c["datatrove"],
                "both": c["both"],
                "only_recipec": c["recipec"] - c["both"],
                "only_datatrove": c["datatrove"] - c["both"],
            }
            for rule, c in sorted(per_rule.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
        },
        # keep/drop disagreements first, then documents both drop for different first rules
        "differences": [
            {
                "recipec": a,
                "datatrove": b,
                "decision_differs": "kept" in (a, b),
                "count": len(ids),
                "examples": ids[:3],
            }
            for (a, b), ids in sorted(differ.items(), key=lambda kv: ("kept" not in kv[0], -len(kv[1])))
        ],
        "recipec_gopher_s": mine["seconds"],
        "recipec_gopher_mb_per_s": mine["bytes"] / 1e6 / mine["seconds"] if mine["seconds"] else float("nan"),
        "recipec_rules": rules,
    }


# -- output -------------------------------------------------------------------------------


def print_table(results: list[Result]) -> None:
    header = (
        f"{'side':<9} {'what':<42} {'corpus':<6} {'documents':>9} {'MB':>7} {'wall s':>8} {'docs/s':>8} "
        f"{'MB/s':>7} {'CPU s':>8} {'peak RSS MiB':>12} {'peak PSS MiB':>12} {'max proc MiB':>12} {'load':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.side:<9} {r.label:<42} {r.size:<6} {r.documents:>9,} {r.mb:>7.1f} {r.wall_s:>8.1f} {r.docs_per_s:>8.1f} "
            f"{r.mb_per_s:>7.2f} {r.cpu_s:>8.1f} {r.peak_rss_mib:>12.0f} {r.peak_pss_mib:>12.0f} "
            f"{r.max_proc_rss_mib:>12.0f} {r.load_before:>5.2f}"
        )
    print(
        "wall s: median over the repeats, interpreter start included; CPU s: user + system over the process tree;\n"
        "peak RSS / PSS: largest sum over the process tree; max proc: largest one process;\n"
        "load: the machine's 1-minute load average just before the run (other work on the machine slows both sides)"
    )


def ratios(results: list[Result]) -> dict:
    by = {(r.side, r.variant, r.size): r for r in results if r.error is None}
    out: dict = {"docs_per_s": {}, "docs_per_cpu_s": {}, "memory_growth_full_over_half": {}}
    for size in ("half", "full"):
        dt = by.get(("datatrove", "like", size))
        for variant in VARIANTS:
            rc = by.get(("recipec", variant, size))
            if dt and rc:
                out["docs_per_s"][f"{variant} {size}"] = rc.docs_per_s / dt.docs_per_s
                out["docs_per_cpu_s"][f"{variant} {size}"] = dt.cpu_s / rc.cpu_s
    for side, variant in [("recipec", v) for v in VARIANTS] + [("datatrove", "like")]:
        half, full = by.get((side, variant, "half")), by.get((side, variant, "full"))
        if half and full:
            out["memory_growth_full_over_half"][f"{side} {variant}"] = {
                "corpus": full.mb / half.mb,
                "peak_rss": full.peak_rss_mib / half.peak_rss_mib,
                "peak_pss": full.peak_pss_mib / half.peak_pss_mib,
                "max_proc": full.max_proc_rss_mib / half.max_proc_rss_mib,
            }
    return out


def print_ratios(r: dict) -> None:
    if r["docs_per_s"]:
        print("\nrecipec / datatrove, documents/s on the same corpus and cores (and per CPU-second):")
        for key, value in r["docs_per_s"].items():
            variant, size = key.split()
            per_cpu = r["docs_per_cpu_s"][key]
            print(f"  {VARIANTS[variant][0]:<42} {size:<5} {value:7.1f}x   ({per_cpu:.1f}x per CPU-second)")
    if r["memory_growth_full_over_half"]:
        print("\npeak memory, full corpus over half corpus:")
        for key, g in r["memory_growth_full_over_half"].items():
            print(
                f"  {key:<18} corpus {g['corpus']:.2f}x   peak RSS {g['peak_rss']:.2f}x   "
                f"peak PSS {g['peak_pss']:.2f}x   max proc {g['max_proc']:.2f}x"
            )


def print_filter_counts(results: list[Result]) -> None:
    rows = [r for r in results if r.error is None and r.counts]
    if not rows:
        return
    print("\ndocuments dropped per filter:")
    for r in rows:
        drops = ", ".join(f"{f['type']} {f['docs_dropped']}" for f in r.counts.get("filters", []))
        read, kept = r.counts.get("read"), r.counts.get("kept")
        print(f"  {r.side:<10} {r.variant:<8} {r.size:<5} read {read}, kept {kept}: {drops}")


def print_stage_timings(results: list[Result]) -> None:
    """Where each side's time went, from recipec's report and datatrove's stats."""
    rows = [x for x in results if x.side == "recipec" and x.error is None]
    if rows:
        print("\nrecipec's stage timings, from its report (the rest of the wall time: process start-up, recipe compile):")
    for x in rows:
        timings = x.counts["report"].get("timings", {})
        steps = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in timings.items() if k != "total_s")
        total = timings.get("total_s", float("nan"))
        print(f"  {x.variant:<8} {x.size:<4}  {steps}; stage {total:.1f} s of {x.wall_s:.1f} s wall")
    rows = [x for x in results if x.side == "datatrove" and x.error is None and x.counts["gopher_step_s"]]
    if rows:
        print("\ndatatrove's Gopher step, from its stats:")
    for x in rows:
        busy = x.counts["gopher_step_s"]
        print(
            f"  {x.size:<4}  {busy:.1f} worker-seconds, {x.mb / busy:.2f} MB/s per worker, "
            f"{busy / (x.wall_s * WORKERS) * 100:.0f} % of the {WORKERS} workers' time over the whole run"
        )


def print_agreement(a: dict) -> None:
    print(f"\nGopher rules, recipec vs datatrove, document by document ({a['size']} corpus, {a['documents']:,} documents):")
    print(
        f"  same keep/drop decision: {a['agreement'] * 100:.2f} %   "
        f"same decision and first failed rule: {a['same_reason'] * 100:.2f} %"
    )
    for key, count in a["confusion"].items():
        print(f"  {key:<36} {count:>7,}")
    print(
        f"\n  {'first failed rule':<31} {'recipec':>8} {'datatrove':>10} {'both':>8} "
        f"{'only recipec':>13} {'only datatrove':>15}"
    )
    for rule, c in a["per_rule"].items():
        print(
            f"  {rule:<31} {c['recipec']:>8,} {c['datatrove']:>10,} {c['both']:>8,} "
            f"{c['only_recipec']:>13,} {c['only_datatrove']:>15,}"
        )
    for decision_differs, title in (
        (True, "kept by one, dropped by the other"),
        (False, "dropped by both, for different first rules"),
    ):
        rows = [d for d in a["differences"] if d["decision_differs"] == decision_differs]
        if not rows:
            continue
        print(f"\n  {title} (recipec's verdict / datatrove's: documents, examples):")
        for d in rows[:MAX_DIFFERENCE_ROWS]:
            print(f"    {d['recipec']} / {d['datatrove']}: {d['count']:,}  e.g. {', '.join(d['examples'])}")
        if len(rows) > MAX_DIFFERENCE_ROWS:
            print(f"    ... {len(rows) - MAX_DIFFERENCE_ROWS} more kinds in the --json output")
    print(
        f"\n  recipec's gopher_quality alone, one process: {a['recipec_gopher_s']:.1f} s, "
        f"{a['recipec_gopher_mb_per_s']:.1f} MB/s"
    )


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where the corpus, recipes and caches go (default: a temp dir)")
    parser.add_argument("--sizes", default="half,full", help="corpus sizes to run, from half and full")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each measurement; the median wall time is shown")
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--skip-recipec", action="store_true")
    parser.add_argument("--max-mb", type=float, help="cap the corpus at this many MB of text (a quick smoke run)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write every figure to this JSON file")
    args = parser.parse_args()

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if not sizes or any(s not in ("half", "full") for s in sizes):
        parser.error("--sizes takes half, full or half,full")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not args.skip_datatrove and not BENCH_PYTHON.exists():
        parser.error(f"{BENCH_PYTHON} not found; set it up as the docstring says, or pass --skip-datatrove")
    if SITE_PACKAGES is None:
        parser.error(f"no site-packages under {REPO / '.venv'}: the corpus is made from recipec's installed packages")
    run_recipec_side = not args.skip_recipec
    if run_recipec_side and not recipec_has_data_command():
        print(f"note: `{RECIPEC} data` is not available; skipping recipec's side")
        run_recipec_side = False

    temp = None
    if args.workdir is None:
        temp = tempfile.TemporaryDirectory(prefix="recipec-data-stage-")
        workdir = Path(temp.name)
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)

    try:
        corpora = build_corpora(workdir, sizes, args.max_mb)
        for c in corpora.values():
            print(f"  {c.size:<5} {c.documents:>7,} documents  {c.mb:7.1f} MB  in {c.dir}")
        print(f"workers: {WORKERS} on each side; cores on this machine: {os.cpu_count()}")

        tokenizer = None
        if run_recipec_side:
            tokenizer = ensure_tokenizer(corpora[sizes[-1]], workdir)

        results: list[Result] = []
        decisions: dict[str, Path] = {}
        for size in sizes:
            corpus = corpora[size]
            if not args.skip_datatrove:
                result, path = run_datatrove(corpus, workdir, args.repeats)
                results.append(result)
                if path is not None:
                    decisions[size] = path
            if run_recipec_side:
                for variant in VARIANTS:
                    results.append(run_recipec(corpus, variant, workdir, tokenizer, args.repeats))

        print()
        print_table(results)
        r = ratios(results)
        print_ratios(r)
        print_filter_counts(results)
        print_stage_timings(results)

        agreement = None
        if decisions and not args.skip_recipec:
            size = sizes[-1] if sizes[-1] in decisions else next(iter(decisions))
            try:
                agreement = compare_gopher(corpora[size], decisions[size], workdir)
                agreement["size"] = size
                print_agreement(agreement)
            except subprocess.CalledProcessError as exc:
                print(f"\nGopher agreement: recipec_gopher.py failed ({exc}); is recipec.runtime.filters there?")

        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "workers": WORKERS,
                        "cpu_count": os.cpu_count(),
                        "corpora": {s: {"documents": c.documents, "mb": c.mb} for s, c in corpora.items()},
                        "results": [asdict(x) for x in results],
                        "ratios": r,
                        "gopher_agreement": agreement,
                        "memory_note": "peak_rss/peak_pss: sampled sums over the process tree; "
                        "max_proc_rss: largest VmHWM of one process in the tree",
                    },
                    indent=2,
                    default=str,
                )
            )
            print(f"\nfigures written to {args.json}")
        return 0 if all(x.error is None for x in results) else 1
    finally:
        if temp is not None:
            temp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
