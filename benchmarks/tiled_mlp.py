"""What `model.tiled_mlp` costs in time and saves in memory, against the same model with its MLPs whole.

One Llama (hidden 256, intermediate 1024, 4 layers, vocab 4096 by default), one micro-batch of
random tokens at a long sequence, AdamW over the script's groups, the step after the backward
pass; the loss is the chunked cross-entropy (`recipec_runtime/loss.py`, 1024 tokens a chunk),
so that the logits do not make the peak. Two runners in fresh processes, interleaved (a b a b
...): "whole" and "tiled" (recipec_runtime/tiled_mlp.apply with --tiles, default
ceil(seq_len / hidden_size)), each without and with gradient checkpointing.

Time: the median wall time of steps warmup+1..steps in each process, then the median over the
repeats and the ratio tiled / whole. Memory: the peak of the CPU allocator's live bytes over one
step after the warmup, from torch.profiler's [memory] events, plus the weights and the optimizer
state alive before it (on CUDA, torch.cuda.max_memory_allocated()).

Usage: python benchmarks/tiled_mlp.py [--steps 6] [--warmup 1] [--repeats 3] [--seq-len 4096]
           [--hidden 256] [--intermediate 1024] [--layers 4] [--tiles N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import ab_step  # noqa: E402 (benchmarks/ab_step.py, beside this script)


def _worker(cfg: dict) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(REPO))
    from recipec.runtime import loss as lm_loss, optimizers, tiled_mlp

    torch.manual_seed(0)
    if cfg["device"] == "cpu":
        torch.set_num_threads(1)
    device = torch.device(cfg["device"])
    config = LlamaConfig(
        vocab_size=4096, hidden_size=cfg["hidden"], intermediate_size=cfg["intermediate"], num_hidden_layers=cfg["layers"],
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=cfg["seq_len"],
    )  # fmt: skip
    model = LlamaForCausalLM(config).to(device).train()
    if cfg["checkpointing"]:
        model.activation_checkpointing_enable()
    if cfg["runner"] == "tiled":
        tiled_mlp.apply(model, cfg["tiles"])
    opt = optimizers.build(model, {"name": "adamw", "lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8})
    hidden_state = lm_loss.LastHiddenState(model)
    head, softcap, _ = lm_loss.output_head(model)

    def step() -> None:
        x = torch.randint(0, 4096, (1, cfg["seq_len"]), device=device)
        hidden, _ = hidden_state(model, {"input_ids": x, "labels": x}, use_cache=False)
        lm_loss.chunked_cross_entropy(hidden, x, head, 1024, softcap).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    print(json.dumps(ab_step.measure(step, model, opt, cfg["steps"], cfg["warmup"], device)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--intermediate", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tiles", type=int, help="default: ceil(seq_len / hidden_size), as the script's")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(json.loads(args.worker))
        return
    tiles = args.tiles or -(-args.seq_len // args.hidden)
    base = {k: getattr(args, k) for k in ("steps", "warmup", "seq_len", "hidden", "intermediate", "layers", "device")} | {"tiles": tiles}
    print(
        f"llama hidden {args.hidden}, intermediate {args.intermediate}, {args.layers} layers; one sequence of {args.seq_len} "
        f"tokens; {tiles} tiles; chunked cross-entropy; AdamW; {args.device}"
    )
    ab_step.compare(__file__, base, ("whole", "tiled"), args.repeats)


if __name__ == "__main__":
    main()
