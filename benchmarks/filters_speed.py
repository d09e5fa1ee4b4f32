"""Throughput of the data-stage filters (recipec/runtime/filters/) on one core.

Builds a corpus of about ``--mb`` MB from the ``.py``, ``.md`` and ``.txt``
files of this interpreter's site-packages (sorted paths, so the corpus is the
same on every run of one environment), cuts it into batches of ``--batch``
documents, times each filter function over all batches (best of
``--repeat``) and prints MB/s of UTF-8 text per function, by the process's
CPU time (what one core does, even on a busy machine) and by wall-clock
time. The process is pinned to one CPU where the platform allows it. Each
filter runs with the recipe's defaults (from recipec's schema: the runtime has
none of its own).

Usage: python benchmarks/filters_speed.py [--mb 50] [--batch 1000] [--repeat 1] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recipec.runtime import filters  # noqa: E402
from recipec.schema.filters import GopherQualityFilter, GopherRepetitionFilter, MinhashDedupFilter  # noqa: E402

QUALITY = filters.GopherQuality(GopherQualityFilter(type="gopher_quality").model_dump()).params
REPETITION = filters.GopherRepetition(GopherRepetitionFilter(type="gopher_repetition").model_dump()).params
MINHASH = MinhashDedupFilter(type="minhash_dedup").model_dump()
SIGNATURE = {k: MINHASH[k] for k in ("shingle_size", "num_perm", "seed")}


def corpus(megabytes: float) -> list[str]:
    """Texts of site-packages' .py/.md/.txt files, in path order, up to ``megabytes`` MB of UTF-8."""
    root = Path(sysconfig.get_paths()["purelib"])
    paths = sorted(p for ext in ("*.py", "*.md", "*.txt") for p in root.rglob(ext) if p.is_file())
    texts, size, limit = [], 0, megabytes * 1e6
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        size += len(text.encode())
        if size >= limit:
            break
    return texts


def _cases(ngrams: object) -> dict[str, object]:
    """Name -> function of one batch."""
    return {
        "count_words": filters.count_words,
        "gopher_quality": lambda batch: filters.gopher_quality(batch, **QUALITY),
        "gopher_repetition": lambda batch: filters.gopher_repetition(batch, **REPETITION),
        "exact_keys": lambda batch: filters.exact_keys(batch, normalize=True),
        "minhash_signatures": lambda batch: filters.minhash_signatures(batch, **SIGNATURE),
        "minhash+lsh+index": _near_dedup,
        "contaminated(13)": lambda batch: filters.contaminated(batch, ngrams, 13),
        "regex_keep": lambda batch: filters.regex_keep(batch, [r"\bdef\b", r"#"], [r"lorem ipsum"], False),
    }


def _near_dedup(batch: list[str]) -> None:
    signatures = filters.minhash_signatures(batch, **SIGNATURE)
    keys = filters.lsh_band_keys(signatures, MINHASH["bands"])
    index = filters.NearDedupIndex(MINHASH["bands"], MINHASH["threshold"])
    for k, s in zip(keys, signatures, strict=True):
        index.check_and_add(k, s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="corpus size in MB of UTF-8 (default 50)")
    parser.add_argument("--batch", type=int, default=1000, help="documents per batch (default 1000)")
    parser.add_argument("--repeat", type=int, default=1, help="timed passes per function, best kept (default 1)")
    parser.add_argument("--only", nargs="*", help="time only these functions")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    texts = corpus(args.mb)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    batches = [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]
    print(f"corpus: {len(texts)} files, {megabytes:.1f} MB, {len(batches)} batches of {args.batch}")
    ngrams = filters.ngram_set(texts[::50], 13)

    print(f"{'function':22s} {'MB/s cpu':>9s} {'MB/s wall':>10s}")
    for name, fn in _cases(ngrams).items():
        if args.only and name not in args.only:
            continue
        cpu = wall = float("inf")
        for _ in range(args.repeat):
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            for batch in batches:
                fn(batch)
            cpu = min(cpu, time.process_time() - start_cpu)
            wall = min(wall, time.perf_counter() - start_wall)
        print(f"{name:22s} {megabytes / cpu:9.1f} {megabytes / wall:10.1f}")


if __name__ == "__main__":
    main()
