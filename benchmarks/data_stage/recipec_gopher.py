"""recipec's Gopher quality rules over the benchmark corpus, one reason code per document.

Run by benchmarks/data_stage.py with recipec's interpreter. Calls
recipec.runtime.filters.gopher_quality, with the recipe's default thresholds, on every
document (in one process, so the time it prints is a one-core figure) and writes a JSON
file with the rule names, the document ids in corpus order and their codes (0 = kept).

Usage: .venv/bin/python benchmarks/data_stage/recipec_gopher.py CORPUS_DIR OUT_JSON
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from pathlib import Path

from recipec.runtime.filters import GOPHER_QUALITY_RULES, GopherQuality, gopher_quality
from recipec.schema.filters import GopherQualityFilter

DEFAULTS = GopherQuality(GopherQualityFilter(type="gopher_quality").model_dump()).params


def rule_names(rules) -> dict[int, str]:
    """Reason code -> rule name: code k is ``rules[k - 1]``, code 0 is kept."""
    if isinstance(rules, Mapping):
        names = {int(code): str(name) for code, name in rules.items()}
    else:
        names = {i + 1: str(name) for i, name in enumerate(rules)}
    names.setdefault(0, "kept")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()

    ids, texts = [], []
    for shard in sorted(args.corpus.glob("*.jsonl")):
        with shard.open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                ids.append(row["id"])
                texts.append(row["text"])

    start = time.perf_counter()
    codes = [int(c) for c in gopher_quality(texts, **DEFAULTS)]
    seconds = time.perf_counter() - start

    result = {
        "rules": {str(k): v for k, v in rule_names(GOPHER_QUALITY_RULES).items()},
        "ids": ids,
        "codes": codes,
        "seconds": seconds,
        "bytes": sum(len(t.encode("utf-8")) for t in texts),
    }
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
