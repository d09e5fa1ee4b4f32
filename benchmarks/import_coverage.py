"""How much of each tool's configs `recipec import` maps, over the test corpus.

    python benchmarks/import_coverage.py [--by-config] [--markdown]

Imports every config under tests/importers/configs/<tool>/ (as the tests do; a
TrainingArguments file gets a placeholder model and dataset, a Ludwig config a placeholder
dataset; configs in subfolders, which the tests expect refused, are left out) and prints, per tool, the
share of the configs' keys mapped exactly, approximately and not imported, and why the
latter were not. Counts are leaf keys as the configs write them.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from recipec.importers import TOOLS, Options, import_config, recipe_name  # noqa: E402

CONFIGS = REPO / "tests" / "importers" / "configs"

PROCESSES = {
    ("torchtune", "llama3_1-8B-full.yaml"): 4,
    ("torchtune", "llama3_1-8B-lora-dpo.yaml"): 2,
    ("transformers", "stanford-alpaca.json"): 4,
    ("llm-foundry", "*"): 8,
}
"""The world size each config was written for, as the tests import them (llm-foundry's
shipped yamls are for 8 GPUs, and on one process it ignores its FSDP settings)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--by-config", action="store_true", help="also a line per config")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = ap.parse_args()
    rows = []
    for tool in TOOLS:
        files = sorted(p for p in (CONFIGS / tool).glob("*") if p.suffix in (".yaml", ".yml", ".json"))
        if not files:
            continue
        counts: collections.Counter[str] = collections.Counter()
        reasons: collections.Counter[str] = collections.Counter()
        for path in files:
            extra = {"model": "org/model", "data": "org/data"} if tool == "transformers" else {"data": "org/data"} if tool == "ludwig" else {}
            n = PROCESSES.get((tool, path.name), PROCESSES.get((tool, "*"), 1))
            draft = import_config(path, tool, Options(name=recipe_name(path), num_processes=n, **extra)).draft
            c = draft.counts()
            counts.update(c)
            reasons.update(e.reason for e in draft.ledger.values() if e.how == "dropped")
            if args.by_config:
                n = sum(c.values())
                print(f"  {tool:13} {path.name:44} {n:4} keys  exact {c['exact'] / n:6.1%}  approx {c['approx'] / n:6.1%}  not imported {c['dropped'] / n:6.1%}")
        n = sum(counts.values())
        rows.append((tool, len(files), n, counts, reasons))
    total = collections.Counter()
    for _, _, _, c, _ in rows:
        total.update(c)
    head = ["tool", "configs", "keys", "exact", "approx", "not imported", "not imported because"]
    lines = []
    for tool, k, n, c, r in rows:
        why = ", ".join(f"{name} {count}" for name, count in r.most_common())
        lines.append([tool, str(k), str(n), f"{c['exact'] / n:.1%}", f"{c['approx'] / n:.1%}", f"{c['dropped'] / n:.1%}", why or "-"])
    n = sum(total.values())
    lines.append(["all", str(sum(r[1] for r in rows)), str(n), f"{total['exact'] / n:.1%}", f"{total['approx'] / n:.1%}", f"{total['dropped'] / n:.1%}", ""])
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("| " + " | ".join("---" if i in (0, 6) else "---:" for i in range(len(head))) + " |")
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
        for line in [head, *lines]:
            print("  ".join(x.ljust(w) if i in (0, 6) else x.rjust(w) for i, (x, w) in enumerate(zip(line, widths))))


if __name__ == "__main__":
    main()
