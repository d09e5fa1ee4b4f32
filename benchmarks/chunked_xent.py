"""Peak memory of a training step with the plain and the chunked cross-entropy (`[loss]`).

For each case (the quickstart recipe, and variants of it through --set), the recipe is
planned twice, as is and with `loss.cross_entropy = "chunked"`, and the same model (the
recipe's model.config and vocabulary, float32, AdamW) runs optimizer steps of
grad_accum_steps micro-batches of random tokens in a fresh process per variant, which
reports its peak. The plain variant takes the model's own loss (`model(..., labels=).loss`,
as the generated script does); the chunked one calls recipec_runtime.loss as the generated
script does (`LastHiddenState`, then `chunked_cross_entropy`). Both print the loss of the
first micro-batch, which must agree.

The peak is measured as in benchmarks/memory_estimate.py: on CPU the maximum of the running
sum of torch's CPU allocations and frees (torch.profiler, profile_memory=True), from before
the model is created to the last step; on CUDA torch.cuda.max_memory_allocated().

Usage: python benchmarks/chunked_xent.py [--steps N] [--device cpu|cuda] [--case NAME ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CASES: dict[str, list[str]] = {
    "quickstart": [],
    "quickstart vocab 32k": ['tokenizer.train={kind="bpe", vocab_size=32000}'],
}
CHUNK_SIZES = (1024, 256)  # the quickstart's micro-batch is 16 x 128 = 2048 tokens


def _worker(spec: dict) -> None:
    """Train for a few steps and print the peak and the first loss as JSON (runs in a fresh process)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoConfig, AutoModelForCausalLM

    from recipec.runtime import loss as lm_loss

    torch.manual_seed(0)
    torch.set_num_threads(2)
    device = torch.device(spec["device"])
    first = []

    def train() -> None:
        config = AutoConfig.for_model(spec["init"], **spec["config"], vocab_size=spec["vocab_size"])
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(device).train()
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
        head, softcap, _ = lm_loss.output_head(model)
        last_hidden = lm_loss.LastHiddenState(model) if spec["chunk_size"] is not None else None
        b, s, accum = spec["micro_batch_size"], spec["seq_len"], spec["grad_accum_steps"]
        g = torch.Generator().manual_seed(1)
        for _ in range(spec["steps"]):
            for _ in range(accum):
                x = torch.randint(0, spec["vocab_size"], (b, s), generator=g).to(device)
                batch = {"input_ids": x, "labels": x}
                if spec["chunk_size"] is None:
                    loss = model(**batch, use_cache=False).loss
                else:
                    hidden, _ = last_hidden(model, batch, use_cache=False)
                    loss = lm_loss.chunked_cross_entropy(hidden, x, head, spec["chunk_size"], softcap)
                first.append(loss.item())
                (loss / accum).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        train()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            train()
        events = sorted(
            (e.start_ns(), e.nbytes())
            for e in prof.profiler.kineto_results.events()
            if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
        )
        live = peak = 0
        for _, nbytes in events:
            live += nbytes
            peak = max(peak, live)
    print(json.dumps({"peak": peak, "first_loss": first[0]}))


def _variant(overrides: list[str], steps: int, device: str) -> tuple[object, dict]:
    sys.path.insert(0, str(REPO))
    from recipec.compiler import plan_recipe

    plan, _ = plan_recipe(REPO / "recipes" / "quickstart.toml", overrides, project=REPO)
    r = plan.recipe
    spec = {
        "init": r.model.init,
        "config": r.model.config.model_dump(exclude_none=True),
        "vocab_size": r.tokenizer.train.vocab_size,
        "micro_batch_size": r.train.micro_batch_size,
        "seq_len": r.data.seq_len,
        "grad_accum_steps": plan["grad_accum_steps"],
        "chunk_size": plan.get("chunk_size"),
        "steps": steps,
        "device": device,
    }
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], cwd=REPO, check=True, capture_output=True, text=True
    )
    return plan.memory, json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per variant (default 2)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="run only these cases (repeatable)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(json.loads(args.worker))
        return

    mib = 1024**2
    print(f"{args.steps} optimizer steps per variant on {args.device}; MiB")
    head = f"{'case':<22} {'variant':<13} {'est logits':>10} {'estimate':>9} {'measured':>9} {'first loss':>11}"
    print(head)
    print("-" * len(head))
    for name in args.case or CASES:
        peaks = {}
        variants = [("plain", [])] + [(f"chunked {c}", [f'loss={{cross_entropy="chunked", chunk_size={c}}}']) for c in CHUNK_SIZES]
        for variant, extra in variants:
            m, measured = _variant(CASES[name] + extra, args.steps, args.device)
            peaks[variant] = measured["peak"]
            print(
                f"{name:<22} {variant:<13} {m.logits / mib:10.1f} {m.per_device / mib:9.1f} {measured['peak'] / mib:9.1f} "
                f"{measured['first_loss']:11.6f}",
                flush=True,
            )
        ratios = ", ".join(f"{v} {peaks[v] / peaks['plain']:.2f}" for v, _ in variants[1:])
        print(f"{name:<22} measured peak / plain's: {ratios}\n")


if __name__ == "__main__":
    main()
