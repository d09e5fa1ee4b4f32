"""How long `recipec build` takes for a recipe that starts from a large local model, with and without
the file-hash cache (recipec/runtime/file_hashes.py).

The lock pins every file of a local model by its sha256, so a build reads the whole model. The
cache keeps the digest of each large file beside its device, inode, size and modification and
change times, and a rebuild whose files are unchanged reads none of them. This script writes a
tiny Llama's config and tokenizer plus --gib GiB of weight shards (random bytes: the build only
hashes them) to a temporary project, then times `recipec build` as a fresh process:

  * with the cache off (RECIPEC_HASH_CACHE=0): every build reads every shard;
  * the first build with an empty cache (reads, and fills the cache);
  * later builds with the cache filled (read nothing).

The shards are in the page cache after they are written, so the uncached figure is what hashing
costs at memory speed; a model on a network file system or a cold disk costs more.

Usage: python benchmarks/local_model_lock.py [--gib 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = """
[recipe]
name = "local"

[model]
path = "./model"

[data]
seq_len = 64

[[data.sources]]
path = "data/docs.jsonl"

[train]
micro_batch_size = 2
batch_size = 4
max_steps = 5

[launch]
cpu = true
"""


def _project(root: Path, gib: float) -> int:
    """The project: ./model (config, tokenizer, shards of `gib` GiB in all), data and the recipe; returns the shard bytes."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    model = root / "model"
    model.mkdir()
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    bpe.train_from_iterator([f"document {i} of the benchmark" for i in range(200)], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(model)
    LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2).save_pretrained(model)
    shard, total, i = 1 << 30, int(gib * (1 << 30)), 0
    block = os.urandom(64 << 20)
    while i * shard < total:
        size = min(shard, total - i * shard)
        with open(model / f"model-{i + 1:05d}.safetensors", "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
            f.write(block[: size % len(block)])
        i += 1
    (root / "data").mkdir()
    (root / "data" / "docs.jsonl").write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(50)))
    (root / "recipes").mkdir()
    (root / "recipes" / "local.toml").write_text(RECIPE)
    return total


def _build(root: Path, cache: str) -> float:
    env = {**os.environ, "RECIPEC_HASH_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "recipec", "build", "recipes/local.toml", "--force"], cwd=root, env=env,
                   check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=4.0, help="GiB of weight shards (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="builds timed per case (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        size = _project(root, args.gib)
        time.sleep(3.5)  # the cache keeps a file's digest once its times are 3 s old (file_hashes.SETTLED_NS)
        cache = str(root / "file-sha256.json")
        off = [_build(root, "0") for _ in range(args.repeat)]
        cold = _build(root, cache)
        warm = [_build(root, cache) for _ in range(args.repeat)]
    print(f"local model: {size / (1 << 30):.2f} GiB of shards; {args.repeat} builds per case, median (best)")
    print(f"  cache off          {statistics.median(off):7.2f} s ({min(off):.2f} s)  {size / (1 << 30) / statistics.median(off):.2f} GiB/s of build")
    print(f"  cache empty        {cold:7.2f} s (one build: it reads and fills the cache)")
    print(f"  cache filled       {statistics.median(warm):7.2f} s ({min(warm):.2f} s)")
    print(f"  ratio off / filled {statistics.median(off) / statistics.median(warm):7.1f}x")


if __name__ == "__main__":
    main()
