"""The time of a DPO optimizer step against a supervised step on the same model and tokens.

A Llama built from a config trains on micro-batches of preference pairs from
recipes/data/preference_pairs.jsonl, rendered with a ChatML template exactly as the data
stage renders them (recipec_runtime/chat.py; one row per pair, two segments). Three runners
see the same rows in the same order:

  sft          the supervised loss over the same rows (both sides' completions), one forward
               and backward: the cost of the tokens alone
  dpo-live     DPO with the reference computed at every step: the policy's forward and
               backward plus a frozen copy's forward (preference.reference = "live")
  dpo-precomp  DPO with reference log-probabilities computed before training: the policy's
               forward and backward only (preference.reference = "precomputed")

Each is timed over `--steps` optimizer steps after one warmup step, interleaved `--repeat`
times; the medians and both ratios to the supervised step are printed. Usage:

  python benchmarks/dpo_step.py [--hidden 256] [--layers 4] [--micro-batch 8] [--steps 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from recipec.runtime import chat, formats, preference  # noqa: E402
from recipec.runtime.tokenizer import train_bpe  # noqa: E402

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def rows(n: int) -> tuple[list[dict], object]:
    records = [json.loads(line) for line in (REPO / "recipes/data/preference_pairs.jsonl").read_text().splitlines()[:n]]
    tok = train_bpe([formats.text_view(formats.to_example(r, "preference")) for r in records], 2000)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    tok.pad_token = tok.eos_token = "<|im_end|>"
    out = []
    for r in records:
        ids, mask, reason = chat.tokenize_preference(tok, formats.to_example(r, "preference"), max_length=256, overflow="truncate")
        if ids and reason in (None, "truncated"):
            out.append({"input_ids": ids, "mask": mask, "position_ids": preference.segment_positions(mask)})
    return out, tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    data, tok = rows(args.micro_batch * (args.steps + 1))
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64), max_position_embeddings=512, pad_token_id=tok.pad_token_id,
    )
    base = LlamaForCausalLM(config)
    batches = [preference.collate(data[i : i + args.micro_batch], tok.pad_token_id) for i in range(0, len(data), args.micro_batch)]
    tokens = sum(int(b["real"].sum()) for b in batches[1:])

    def run(kind: str) -> float:
        model = copy.deepcopy(base).train()
        ref = copy.deepcopy(base).eval().requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        stored = {}
        if kind == "dpo-precomp":  # computed once, before training: not part of the step
            with torch.no_grad():
                stored = {i: preference.sequence_logps(ref, b) for i, b in enumerate(batches)}
        t0 = 0.0
        for i, b in enumerate(batches):
            if i == 1:
                t0 = time.perf_counter()
            if kind == "sft":
                logits = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits[:, :-1]
                labels = b["input_ids"][:, 1:].masked_fill(~b["supervised"][:, 1:], -100)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
            else:
                policy = preference.sequence_logps(model, b)
                if kind == "dpo-live":
                    with torch.no_grad():
                        reference = preference.sequence_logps(ref, b)
                else:
                    reference = stored[i]
                loss, _ = preference.objective_loss("dpo", {"beta": 0.1}, policy, reference)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return (time.perf_counter() - t0) / (len(batches) - 1)

    kinds = ("sft", "dpo-live", "dpo-precomp")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    torch.set_num_threads(os.cpu_count() or 1)
    for _ in range(args.repeat):
        for k in kinds:
            times[k].append(run(k))
    med = {k: statistics.median(v) for k, v in times.items()}
    params = sum(p.numel() for p in base.parameters())
    print(f"model: {params / 1e6:.1f}M parameters; {args.micro_batch} pairs per step, {tokens // (len(batches) - 1)} tokens per step")
    print(f"{'runner':<12} {'s/step':>8} {'vs sft':>7}")
    for k in kinds:
        print(f"{k:<12} {med[k]:>8.3f} {med[k] / med['sft']:>6.2f}x")


if __name__ == "__main__":
    main()
