"""Train the benchmark's byte-level BPE tokenizer on a sample of the corpus and save it.

Run by benchmarks/data_stage.py with recipec's interpreter, once per work directory and
before anything is timed. The sample is every k-th document of the corpus, with k chosen
so that it comes to about --mb megabytes, so it spans all the packages rather than the
first few in path order.

Usage: .venv/bin/python benchmarks/data_stage/train_tokenizer.py CORPUS_DIR OUT_DIR [--mb 4] [--vocab-size 8192]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recipec.runtime.tokenizer import train_bpe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--mb", type=float, default=4.0)
    parser.add_argument("--vocab-size", type=int, default=8192)
    args = parser.parse_args()

    texts = []
    for shard in sorted(args.corpus.glob("*.jsonl")):
        with shard.open(encoding="utf-8") as f:
            texts.extend(json.loads(line)["text"] for line in f)
    total = sum(len(t) for t in texts)
    stride = max(1, round(total / (args.mb * 1e6)))
    sample = texts[::stride]
    tokenizer = train_bpe(sample, args.vocab_size)
    tokenizer.save_pretrained(str(args.out))
    print(f"tokenizer: vocab {len(tokenizer)}, trained on {len(sample)} documents "
          f"({sum(len(t) for t in sample) / 1e6:.1f} M characters), saved to {args.out}")


if __name__ == "__main__":
    main()
