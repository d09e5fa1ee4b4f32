"""How fast the compiler is: `recipec validate` and `recipec build` of every example recipe.

Each command runs as a fresh process (what a user waits for), interleaved with the
baseline `python -c "import pydantic, jinja2, click"` (the libraries the compiler is made
of) so that a busy machine slows both alike. Prints the median and best wall time of
each, and each median as a multiple of the baseline's; the goal is at most 1.5x. It also
records which heavy modules each command imported (none of torch, transformers,
accelerate, datasets may be).

Every process may write and read .pyc files (PYTHONDONTWRITEBYTECODE is dropped from
their environment), as in an installed recipec: otherwise recipec's own modules would be
compiled from source on every run while the baseline's libraries load their .pyc files.

Usage: python benchmarks/compiler_speed.py [--repeat N] [--recipes recipes/*.toml]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL = 1.5
HEAVY = ("torch", "transformers", "accelerate", "datasets", "peft", "tokenizers")
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}

# runs the CLI in this process and prints the heavy modules it imported, on stderr
PROBE = (
    "import sys, runpy\n"
    "sys.argv = ['recipec', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('recipec', run_name='__main__')\n"
    "except SystemExit:\n"
    "    pass\n"
    f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
    "print('HEAVY', ','.join(heavy), file=sys.stderr)\n"
)


def _once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=ENV, check=True, capture_output=True)
    return time.perf_counter() - start


def _heavy_imports(args: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, env=ENV, capture_output=True, text=True, check=True)
    line = next(line for line in out.stderr.splitlines() if line.startswith("HEAVY"))
    return [m for m in line.removeprefix("HEAVY").strip().split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--recipes", nargs="*", default=sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes").glob("*.toml")))
    args = parser.parse_args()

    recipes = []
    for recipe in args.recipes:  # a [continual] example needs its parent's run directory first
        check = subprocess.run([sys.executable, "-m", "recipec", "validate", recipe], cwd=REPO, env=ENV, capture_output=True, text=True)
        if check.returncode == 0:
            recipes.append(recipe)
        else:
            print(f"skipped {recipe}: {check.stderr.splitlines()[0] if check.stderr else 'does not validate'}")
    args.recipes = recipes
    baseline_argv = [sys.executable, "-c", "import pydantic, jinja2, click"]
    with tempfile.TemporaryDirectory() as tmp:
        commands = {"baseline: import pydantic, jinja2, click": baseline_argv}
        for recipe in args.recipes:
            name = Path(recipe).stem
            commands[f"validate {name}"] = [sys.executable, "-m", "recipec", "validate", recipe]
            commands[f"build {name}"] = [sys.executable, "-m", "recipec", "build", recipe, "-o", f"{tmp}/{name}"]
        for argv in commands.values():  # warm the file cache and .pyc files
            _once(argv)
        times: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(args.repeat):
            for label, argv in commands.items():
                times[label].append(_once(argv))

    base = statistics.median(times["baseline: import pydantic, jinja2, click"])
    print(f"{'command':<44} {'median':>9} {'best':>9} {'x baseline':>11}  heavy imports")
    worst = 0.0
    for label, values in times.items():
        med = statistics.median(values)
        ratio = med / base
        heavy = ""
        if label != "baseline: import pydantic, jinja2, click":
            worst = max(worst, ratio)
            verb, name = label.split(" ", 1)
            recipe = next(r for r in args.recipes if Path(r).stem == name)
            extra = ["-o", f"{tempfile.gettempdir()}/recipec-speed-probe"] if verb == "build" else []
            heavy = ",".join(_heavy_imports([verb, recipe, *extra])) or "none"
        print(f"{label:<44} {med * 1000:7.1f}ms {min(values) * 1000:7.1f}ms {ratio:10.2f}x  {heavy}")
    print()
    print(f"slowest command: {worst:.2f}x the baseline (goal {GOAL}x): {'met' if worst <= GOAL else 'not met'}")


if __name__ == "__main__":
    main()
