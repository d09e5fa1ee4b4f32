"""MinHash signatures: recipec's vectorised numpy code against datasketch, on one core.

The data stage computes MinHash signatures itself rather than with datasketch; this is
the measurement behind that choice. Both sides build the same sets (lowercased word
5-grams) of the same documents (the .py files of this interpreter's site-packages, in
path order, up to --mb MB) with 128 permutations, and the script prints MB/s of CPU time
for each and the ratio. datasketch is not a dependency of recipec: install it into the
environment that runs this script (`pip install datasketch`).

Usage: python benchmarks/minhash_vs_datasketch.py [--mb 5]
"""

from __future__ import annotations

import argparse
import re
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipec.runtime import filters  # noqa: E402

WORD = re.compile(r"\w+")


def corpus(megabytes: float) -> tuple[list[str], int]:
    texts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["purelib"]).rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        texts.append(text)
        size += len(text.encode())
        if size >= megabytes * 1e6:
            break
    return texts, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=5.0, help="corpus size in MB (default 5)")
    args = parser.parse_args()
    try:
        from datasketch import MinHash
    except ImportError:
        sys.exit("datasketch is not installed here: pip install datasketch")
    texts, size = corpus(args.mb)
    start = time.process_time()
    for text in texts:
        words = [w.lower() for w in WORD.findall(text)]
        shingles = {" ".join(words[i : i + 5]).encode() for i in range(max(1, len(words) - 4))}
        sketch = MinHash(num_perm=128)
        sketch.update_batch(list(shingles))
    theirs = size / 1e6 / (time.process_time() - start)
    start = time.process_time()
    for i in range(0, len(texts), 1000):
        filters.minhash_signatures(texts[i : i + 1000], shingle_size=5, num_perm=128, seed=1)
    ours = size / 1e6 / (time.process_time() - start)
    print(f"corpus: {len(texts)} documents, {size / 1e6:.1f} MB")
    print(f"datasketch MinHash.update_batch  {theirs:7.1f} MB/s")
    print(f"recipec minhash_signatures       {ours:7.1f} MB/s")
    print(f"ratio recipec / datasketch       {ours / theirs:7.1f}x")


if __name__ == "__main__":
    main()
