"""How long `recipec build` takes, and how that compares with importing torch.

Prints the median and best wall time of:
  * `recipec build recipes/quickstart.toml` as a fresh process (what a user waits for),
  * the compile alone, in process (read + validate + resolve + render + write),
  * `python -c "import torch, transformers, accelerate"` (what the compiler never pays).

Usage: python benchmarks/build_time.py [--repeat N] [--recipe recipes/quickstart.toml]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _time_process(argv: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def _time_in_process(recipe: str, repeat: int) -> list[float]:
    sys.path.insert(0, str(REPO))
    from recipec.compiler import build

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            start = time.perf_counter()
            build(REPO / recipe, (), Path(tmp) / f"b{i}", project=REPO)
            times.append(time.perf_counter() - start)
    return times


def _show(label: str, times: list[float]) -> float:
    med = statistics.median(times)
    print(f"{label:<44} median {med * 1000:8.1f} ms   best {min(times) * 1000:8.1f} ms   (n={len(times)})")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--recipe", default="recipes/quickstart.toml")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cli = _show(
            "recipec build (new process)",
            _time_process([sys.executable, "-m", "recipec", "build", args.recipe, "-o", f"{tmp}/b"], args.repeat),
        )
    inproc = _show("compile in process", _time_in_process(args.recipe, args.repeat))
    bare = _show("python -c pass (interpreter start)", _time_process([sys.executable, "-c", "pass"], args.repeat))
    heavy = _show(
        "import torch, transformers, accelerate",
        _time_process([sys.executable, "-c", "import torch, transformers, accelerate"], max(3, args.repeat // 3)),
    )
    print()
    print(f"recipec build minus interpreter start: {(cli - bare) * 1000:.1f} ms")
    print(f"ratio, importing the training stack / recipec build: {heavy / cli:.1f}x")
    print(f"ratio, recipec build / compile in process: {cli / inproc:.1f}x")


if __name__ == "__main__":
    main()
