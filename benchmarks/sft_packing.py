"""Supervised tokens per second of instruction fine-tuning, packed (examples kept apart) against padded.

The data is recipes/data/dialogs.jsonl rendered with a ChatML template, the loss on the
assistant turns (recipec_runtime/chat.py); the model is a Llama of the example recipe's
shape, built from a config. Both runners train with AdamW on the same examples in the same
order, with the same number of rows per micro-batch:

  packed   rows of `seq_len` tokens, whole examples placed by best-fit-decreasing,
           position_ids restarting at each example (recipec_runtime/packing.py)
  padded   one example per row, each micro-batch padded to its longest example

Each runner is timed over `--steps` optimizer steps after `--warmup` steps, interleaved
(packed, padded, packed, ...) `--repeat` times; the medians are printed with their ratio and
the packing efficiency (the share of token slots that hold example tokens). Usage:

  python benchmarks/sft_packing.py [--seq-len 256] [--micro-batch 8] [--steps 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from recipec.runtime import chat, formats, packing  # noqa: E402
from recipec.runtime.tokenizer import train_bpe  # noqa: E402

CHATML = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def examples(seq_len: int) -> tuple[list[tuple[list[int], list[int]]], object]:
    records = [json.loads(line) for line in (REPO / "recipes/data/dialogs.jsonl").open()]
    convs = [formats.to_example(r, "messages") for r in records]
    texts = [m["content"] for c in convs for m in c["messages"]]
    tok = train_bpe(texts, 2048)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    out = []
    for c in convs:
        ids, mask = chat.tokenize_example(tok, c, train_on="assistant", chat_template=CHATML)
        ids, mask, dropped = chat.fit_length(ids, mask, seq_len, "truncate")
        if dropped is None:
            out.append((ids, mask))
    random.Random(0).shuffle(out)
    return out, tok


def batches(rows: list[dict], micro_batch: int, pad_id: int) -> list[dict]:
    return [packing.collate(rows[i : i + micro_batch], pad_id) for i in range(0, len(rows) - micro_batch + 1, micro_batch)]


def run(model_state, config, data: list[dict], steps: int, warmup: int) -> tuple[float, int]:
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.load_state_dict(model_state)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    supervised, t0 = 0, None
    for i in range(warmup + steps):
        batch = data[i % len(data)]
        if i == warmup:
            t0 = time.perf_counter()
        out = model(**batch, use_cache=False)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            supervised += int((batch["labels"][:, 1:] != packing.IGNORE).sum())
    return supervised / (time.perf_counter() - t0), supervised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    data, tok = examples(args.seq_len)
    lengths = [len(ids) for ids, _ in data]
    packed_rows = packing.packed_rows(data, args.seq_len)
    random.Random(1).shuffle(packed_rows)
    padded_rows = [{"input_ids": ids, "mask": mask} for ids, mask in data]
    packed = batches(packed_rows, args.micro_batch, tok.pad_token_id)
    padded = batches(padded_rows, args.micro_batch, tok.pad_token_id)
    padded_slots = sum(b["input_ids"].numel() for b in padded)
    print(f"{len(data)} examples, {sum(lengths)} tokens, mean {statistics.mean(lengths):.1f}, max {max(lengths)}")
    print(
        f"packed: {len(packed_rows)} rows of {args.seq_len}, efficiency "
        f"{packing.efficiency(lengths, len(packed_rows), args.seq_len):.3f}; padded: {len(padded_rows)} rows, "
        f"efficiency {sum(len(r['input_ids']) for r in padded_rows[: len(padded) * args.micro_batch]) / padded_slots:.3f}"
    )
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=max(512, args.seq_len),
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    state = LlamaForCausalLM(config).state_dict()
    results: dict[str, list[float]] = {"packed": [], "padded": []}
    for r in range(args.repeat):
        for name, data_ in (("packed", packed), ("padded", padded)):
            rate, _ = run(state, config, data_, args.steps, args.warmup)
            results[name].append(rate)
            print(f"  repeat {r + 1} {name}: {rate:,.0f} supervised tokens/s")
    a, b = statistics.median(results["packed"]), statistics.median(results["padded"])
    print(f"median supervised tokens/s: packed {a:,.0f}, padded {b:,.0f}, packed/padded {a / b:.2f}x (goal 1.5x)")


if __name__ == "__main__":
    main()
