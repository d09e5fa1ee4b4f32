"""What `optim.step_in_backward` costs in time and saves in memory, against the same optimizer
stepped after the backward pass.

One Llama (the memory benchmark's "wide" shape by default: hidden 512, 6 layers, vocab 4096),
random tokens, AdamW over the script's two groups (recipec_runtime/optimizers.build), one
micro-batch a step, no clipping. Two runners in fresh processes, interleaved (a b a b ...):

  after   loss.backward(); optimizer.step(); optimizer.zero_grad(set_to_none=True)
  inside  optimizers.StepInBackward(optimizer) set before the first step; loss.backward();
          finish() (the gradient norm)

Time: the median wall time of steps warmup+1..steps in each process, then the median over the
repeats and the ratio inside / after. Memory: the peak of the CPU allocator's live bytes over
one step after the warmup, from torch.profiler's [memory] events (as benchmarks/memory_estimate.py
measures), with and without gradient checkpointing (where the gradients, not the activations,
make the peak).

Usage: python benchmarks/step_in_backward.py [--steps 12] [--warmup 2] [--repeats 3]
           [--micro-batch 4] [--seq-len 128] [--hidden 512] [--layers 6] [--device cpu|cuda]
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
    from recipec.runtime import optimizers

    torch.manual_seed(0)
    if cfg["device"] == "cpu":
        torch.set_num_threads(1)
    device = torch.device(cfg["device"])
    config = LlamaConfig(
        vocab_size=4096, hidden_size=cfg["hidden"], intermediate_size=cfg["hidden"] * 8 // 3 // 64 * 64 + 64,
        num_hidden_layers=cfg["layers"], num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=cfg["seq_len"],
    )  # fmt: skip
    model = LlamaForCausalLM(config).to(device).train()
    if cfg["checkpointing"]:
        model.activation_checkpointing_enable()
    opt = optimizers.build(model, {"name": "adamw", "lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8})
    inside = optimizers.StepInBackward(opt) if cfg["runner"] == "inside" else None

    def step() -> None:
        x = torch.randint(0, 4096, (cfg["micro_batch"], cfg["seq_len"]), device=device)
        model(input_ids=x, labels=x, use_cache=False).loss.backward()
        if inside is not None:
            inside.finish()
        else:
            opt.step()
            opt.zero_grad(set_to_none=True)

    print(json.dumps(ab_step.measure(step, model, opt, cfg["steps"], cfg["warmup"], device)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(json.loads(args.worker))
        return
    base = {k: getattr(args, k) for k in ("steps", "warmup", "micro_batch", "seq_len", "hidden", "layers", "device")}
    print(f"llama hidden {args.hidden} x {args.layers} layers, micro-batch {args.micro_batch} x {args.seq_len} tokens, AdamW, {args.device}")
    ab_step.compare(__file__, base, ("after", "inside"), args.repeats)


if __name__ == "__main__":
    main()
