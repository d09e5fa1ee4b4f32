"""What recipes/dpo-chat.toml (or recipes/reward-chat.toml) taught its model: held-out preference
accuracy and margin, and whether the chosen answers' log-probability held up.

Run after the chain (`recipec run recipes/pretrain-prose.toml && recipec run
recipes/sft-chat.toml && recipec run recipes/dpo-chat.toml`):

  python benchmarks/dpo_example.py [--run runs/dpo-chat]
  python benchmarks/dpo_example.py --run runs/reward-chat    # the reward model of recipes/reward-chat.toml

Reads the run's metrics.jsonl (the held-out pairs are evaluated before the first step and at
each `eval_every`) and prints, before and after training:
  1. reward accuracy: the share of held-out pairs whose chosen answer gets the higher reward
     (beta times the log-ratio to the reference);
  2. reward margin: the mean chosen reward less the mean rejected one;
  3. the mean summed log-probability of the chosen and of the rejected answers, and their
     change over the run: DPO can raise the margin by pushing both down, so a chosen
     log-probability that collapses is a failure the accuracy alone does not show (a reward
     model has none: its rewards are its scores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/dpo-chat", help="the run directory")
    args = ap.parse_args()
    metrics = [json.loads(line) for line in (Path(args.run) / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in metrics if "eval_reward_accuracy" in m]
    if len(evals) < 2:
        raise SystemExit(f"{args.run}: fewer than two evaluations in metrics.jsonl; has the run finished?")
    first, last = evals[0], evals[-1]
    print(f"held-out pairs, step {first['step']} -> step {last['step']}:")
    print(f"  reward accuracy   {first['eval_reward_accuracy']:.3f} -> {last['eval_reward_accuracy']:.3f}")
    print(f"  reward margin     {first['eval_reward_margin']:.3f} -> {last['eval_reward_margin']:.3f}")
    print(f"  eval loss         {first['eval_loss']:.4f} -> {last['eval_loss']:.4f}")
    logps = "eval_logps_chosen" in last  # a reward model scores; it has no log-probabilities
    for side in ("chosen", "rejected") if logps else ():
        a, b = first[f"eval_logps_{side}"], last[f"eval_logps_{side}"]
        print(f"  logp {side:<9}    {a:.2f} -> {b:.2f}  (change {b - a:+.2f}, {100 * (b - a) / abs(a):+.1f} %)")
    if not logps:
        for side in ("chosen", "rejected"):
            print(f"  reward {side:<9}  {first[f'eval_rewards_{side}']:.3f} -> {last[f'eval_rewards_{side}']:.3f}")
    print("  by evaluation:   step  accuracy  margin" + ("  logp chosen  logp rejected" if logps else ""))
    for m in evals:
        print(f"                  {m['step']:>4}  {m['eval_reward_accuracy']:>8.3f}  {m['eval_reward_margin']:>6.3f}"
              + (f"  {m['eval_logps_chosen']:>11.2f}  {m['eval_logps_rejected']:>13.2f}" if logps else ""))


if __name__ == "__main__":
    main()
