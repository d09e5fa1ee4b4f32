"""What the fast paths a recipe can ask for are worth on this machine (CPU, or a GPU if present).

Measured, each as the median of repeated timings after warm-up, on a Llama built from a
config (no download):

  1. optim.implementation: one AdamW step over the model's parameters with
     for-loop, foreach and fused.
  2. model.compile: training steps per second, eager against torch.compile (inductor),
     and how long compiling took (the first compiled step).
  3. model.attention: sdpa against eager, training steps per second.
  4. data.num_workers: batches per second out of the DataLoader the generated script
     builds (Arrow-backed dataset, recipec's collate), 0 against 2 workers.

TF32, bf16 autocast, pinned memory and flash attention need an NVIDIA GPU and are
skipped on CPU (the script says so). Usage:

  python benchmarks/fast_paths.py [--layers 4] [--hidden 256] [--seq-len 256] [--micro-batch 4] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from recipec.resolve import ADAMW_IMPLEMENTATION  # noqa: E402
from recipec.runtime import data  # noqa: E402


def _model(args: argparse.Namespace, attention: str = "sdpa") -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=8192,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3 // 64 * 64,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        max_position_embeddings=args.seq_len,
    )
    model = LlamaForCausalLM(config)
    model.config._attn_implementation = attention  # set before the first forward, as from_config does
    return model.to(args.device).train()


def _batch(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 8192, (args.micro_batch, args.seq_len), generator=g).to(args.device)
    return {"input_ids": ids, "labels": ids}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _steps_per_s(model: torch.nn.Module, args: argparse.Namespace, steps: int) -> tuple[float, float]:
    """(steps per second after warm-up, seconds of the first step)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = _batch(args)
    start = time.perf_counter()
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(args.device)
        times.append(time.perf_counter() - t)
        if i == 0:
            first = time.perf_counter() - start
    return 1 / statistics.median(times[2:]), first


def bench_optimizer(args: argparse.Namespace) -> None:
    model = _model(args)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    n = sum(p.numel() for p in model.parameters())
    print(f"\n1. optim.implementation: one AdamW step over {n / 1e6:.1f}M parameters")
    results = {}
    for name, kwargs in ADAMW_IMPLEMENTATION.items():
        if name == "auto":
            continue
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **kwargs)
        times = []
        for _ in range(args.repeat + 2):
            t = time.perf_counter()
            optimizer.step()
            _sync(args.device)
            times.append(time.perf_counter() - t)
        results[name] = statistics.median(times[2:])
    for name, t in results.items():
        print(f"   {name:<9} {t * 1000:8.1f} ms   {results['for-loop'] / t:5.2f}x for-loop")


def bench_compile(args: argparse.Namespace) -> None:
    print(f"\n2. model.compile: training steps of micro-batch {args.micro_batch} x {args.seq_len} tokens")
    eager, _ = _steps_per_s(_model(args), args, args.repeat)
    compiled_model = torch.compile(_model(args))
    compiled, first = _steps_per_s(compiled_model, args, args.repeat)
    tokens = args.micro_batch * args.seq_len
    print(f"   eager     {eager * tokens:9.0f} tokens/s")
    print(f"   compiled  {compiled * tokens:9.0f} tokens/s   {compiled / eager:5.2f}x eager; compiling took {first:.1f} s")


def bench_attention(args: argparse.Namespace) -> None:
    print(f"\n3. model.attention: training steps of micro-batch {args.micro_batch} x {args.seq_len} tokens")
    tokens = args.micro_batch * args.seq_len
    rates = {a: _steps_per_s(_model(args, a), args, args.repeat)[0] * tokens for a in ("eager", "sdpa")}
    print(f"   eager     {rates['eager']:9.0f} tokens/s")
    print(f"   sdpa      {rates['sdpa']:9.0f} tokens/s   {rates['sdpa'] / rates['eager']:5.2f}x eager")


def bench_workers(args: argparse.Namespace) -> None:
    from datasets import Dataset
    from torch.utils.data import DataLoader

    print(f"\n4. data.num_workers: batches of {args.micro_batch} x {args.seq_len} from an Arrow dataset")
    g = torch.Generator().manual_seed(2)
    rows = torch.randint(0, 8192, (4096, args.seq_len), generator=g).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        Dataset.from_dict({"input_ids": rows}).save_to_disk(tmp)
        ds = Dataset.load_from_disk(tmp).with_format("torch")
        rates = {}
        for workers in (0, 2):
            loader = DataLoader(
                ds, batch_size=args.micro_batch, shuffle=True, collate_fn=data.collate, num_workers=workers,
                generator=torch.Generator().manual_seed(0),
            )
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                count = sum(1 for _ in loader)
                times.append(time.perf_counter() - t)
            rates[workers] = count / statistics.median(times)
    print(f"   0 workers {rates[0]:9.0f} batches/s")
    print(f"   2 workers {rates[2]:9.0f} batches/s   {rates[2] / rates[0]:5.2f}x; "
          f"a training step here takes far longer than a batch, so workers only matter for slow collation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip", nargs="*", default=[], choices=["optimizer", "compile", "attention", "workers"])
    args = parser.parse_args()
    print(f"torch {torch.__version__} on {args.device}, {torch.get_num_threads()} threads")
    for name, bench in (("optimizer", bench_optimizer), ("compile", bench_compile), ("attention", bench_attention), ("workers", bench_workers)):
        if name not in args.skip:
            bench(args)
    if args.device == "cpu":
        print("\nnot measured on CPU: launch.tf32, bf16 autocast speed, data.pin_memory, flash_attention_2/3 (need an NVIDIA GPU)")


if __name__ == "__main__":
    main()
