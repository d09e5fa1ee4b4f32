"""Speed and peak memory of the data stage on a pre-tokenized ``.bin`` source.

Writes a nanoGPT-style ``.bin`` of ``--tokens`` uint16 ids (documents of 200 to 2,000
random ids of a 400-token BPE vocabulary, each followed by the end-of-text id), then runs
the whole data stage on it (read in windows, hold out 1 %, pack into 1,024-token sequences)
in a fresh process per size, and prints ids/s and the process's peak resident memory. The
sizes double, so flat memory shows as an unchanged peak.

Usage: python benchmarks/token_sources.py [--tokens 25000000 50000000] [--dir /tmp/recipec-token-bench]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write(directory: Path, n_tokens: int) -> None:
    import numpy as np

    from recipec.runtime.tokenizer import train_bpe

    directory.mkdir(parents=True, exist_ok=True)
    tok = train_bpe([f"grain {i} for the mill of the valley" for i in range(500)], 400)
    tok.save_pretrained(directory / "tok")
    rng = np.random.default_rng(0)
    with open(directory / "data.bin", "wb") as f:
        written = 0
        while written < n_tokens:
            lengths = rng.integers(200, 2000, 1000)
            ids = rng.integers(1, len(tok), int(lengths.sum()) + len(lengths)).astype("<u2")
            ids[np.cumsum(lengths + 1) - 1] = tok.eos_token_id
            ids = ids[: n_tokens - written]
            ids.tofile(f)
            written += len(ids)


def stage(directory: Path) -> dict:
    """The stage on the .bin, in this process; its timings and peak RSS."""
    from recipec.runtime import stage as data_stage
    from recipec.runtime import stage_request

    settings = dict(
        data_seed=0,
        sources=[{"path": "data.bin", "records": "tokens", "token_dtype": "uint16", "eos_token_id": 0, "tokenizer": str(directory / "tok")}],
        filters=[],
        eval_fraction=0.01,
        seq_len=1024,
        packing=True,
        segments=[{"sources": [0], "weights": None}],
        temperature=None,
        on_exhausted="repeat",
        count_dropped_tokens=False,
        max_length=None,
        overflow="truncate",
    )
    request = {
        "spec": stage_request.make_spec(settings),
        "project_dir": str(directory),
        "cache_dir": "cache",
        "tokenizer": {"path": str(directory / "tok"), "revision": None, "trust_remote_code": False},
        "num_proc": 1,
    }
    started = time.perf_counter()
    out = data_stage.run(request, force=True, log=lambda m: None)
    wall = time.perf_counter() - started
    shutil.rmtree(out.dir)
    return {
        "ids": out.report["tokens"]["kept"],
        "documents": out.report["documents"]["read"],
        "wall_s": round(wall, 2),
        "read_s": out.report["timings"]["read_and_analyse_s"],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[25_000_000, 50_000_000])
    parser.add_argument("--dir", default="/tmp/recipec-token-bench")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(stage(Path(args.child))))
        return
    print(f"{'ids':>12} {'docs':>8} {'MB':>7} {'wall s':>7} {'read s':>7} {'M ids/s':>8} {'peak RSS MiB':>13}")
    for n in args.tokens:
        directory = Path(args.dir) / str(n)
        write(directory, n)
        done = subprocess.run([sys.executable, __file__, "--child", str(directory)], capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        mb = (directory / "data.bin").stat().st_size / 1e6
        print(
            f"{n:>12,} {r['documents']:>8,} {mb:>7.1f} {r['wall_s']:>7.2f} {r['read_s']:>7.2f} "
            f"{n / r['wall_s'] / 1e6:>8.2f} {r['peak_rss_mib']:>13.1f}"
        )
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
