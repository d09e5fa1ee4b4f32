"""What recipes/sft-chat.toml taught its model: the held-out loss, and whether it learned to stop.

Run after `recipec run recipes/pretrain-prose.toml && recipec run recipes/sft-chat.toml`:

  python benchmarks/sft_example.py [--run runs/sft-chat] [--max-new-tokens 64] [--limit 200]

Prints:
  1. the held-out loss over the supervised tokens (metrics.jsonl, `eval_loss`) before the
     first step and at the end, and how much it fell (goal: at least 30 %);
  2. greedy generations from the held-out prompts: each held-out example of the run's data
     stage (its eval.arrow), cut before its first supervised token (the user turn and the
     assistant header), generated with the merged model for up to --max-new-tokens tokens;
     the share that end with the end-of-turn token <|im_end|> (goal: at least 90 %). A few
     are printed, and all are written to <run>/generations.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def held_out_prompts(eval_file: Path, limit: int) -> list[list[int]]:
    """Each held-out example's tokens before its first supervised one."""
    import pyarrow as pa

    with pa.OSFile(str(eval_file)) as f:
        rows = pa.ipc.open_stream(f).read_all().to_pylist()
    prompts = []
    for row in rows:
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
        for a, b in zip(starts, starts[1:]):
            mask = row["mask"][a:b]
            if 1 in mask:
                prompts.append(row["input_ids"][a : a + mask.index(1)])
    return prompts[:limit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="runs/sft-chat")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--cache-dir", default=".recipec/data", help="the recipe's data.cache_dir")
    args = parser.parse_args()
    run = Path(args.run)

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in metrics if "eval_loss" in m]
    first, last = evals[0], evals[-1]
    fall = 1 - last["eval_loss"] / first["eval_loss"]
    print(
        f"held-out supervised loss: {first['eval_loss']:.4f} at step {first['step']} -> {last['eval_loss']:.4f} "
        f"at step {last['step']}: fell {100 * fall:.1f}% (goal >= 30%)"
    )

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = json.loads((run / "run.json").read_text())
    cache = Path(args.cache_dir) / record["data"]["cache_entry"]
    model_dir = run / "model_full"
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompts = held_out_prompts(cache / "eval.arrow", args.limit)
    stopped = 0
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                eos_token_id=end,
                pad_token_id=tokenizer.pad_token_id,
            )[0, len(prompt) :].tolist()
            ends = end in gen
            stopped += ends
            out.append({"prompt": tokenizer.decode(prompt), "generated": tokenizer.decode(gen), "ended": ends})
    with open(run / "generations.jsonl", "w") as f:
        for record in out:
            f.write(json.dumps(record) + "\n")
    for record in out[:5]:
        print(f"--- {record['prompt']!r}\n    -> {record['generated']!r}")
    share = stopped / len(prompts) if prompts else 0.0
    print(
        f"greedy generations on {len(prompts)} held-out prompts: {stopped} ({100 * share:.1f}%) end with <|im_end|> "
        f"within {args.max_new_tokens} tokens (goal >= 90%); all in {run / 'generations.jsonl'}"
    )
    return 0 if fall >= 0.3 and share >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
