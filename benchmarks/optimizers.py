"""The quickstart trained with each optimizer: final loss, tokens/s, and optimizer state per parameter.

For each `optim.name` the quickstart recipe is built with `--set` overrides (the optimizer,
its LR, and for schedule-free a constant schedule after the warmup) and its generated
train.py is run; the table gives the last logged training loss and held-out loss, the
median tokens/s of the logged intervals, and the optimizer state in bytes per trainable
parameter: estimated (the memory estimate's optimizer part over the trainable parameters)
against measured (the bytes of the state tensors after a step of the same optimizer, built
by recipec_runtime/optimizers.py on the same model). Usage (from the repository root):

  python benchmarks/optimizers.py [--steps 300] [--only adamw,muon]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RUNS = {
    "adamw": ["optim.lr=3e-3"],
    "muon": ["optim.lr=0.02", "optim.adamw_lr=3e-3"],
    "adafactor": ["optim.lr=1e-2", "optim.weight_decay=0"],
    "lion": ["optim.lr=3e-4", "optim.weight_decay=0.3"],
    "sgd": ["optim.lr=0.3", "optim.weight_decay=0"],
    "schedule_free_adamw": ["optim.lr=3e-3", "schedule.decay=constant"],
}


def measured_state_bytes(name: str, overrides: list[str]) -> tuple[float, float]:
    """(measured, estimated) bytes of optimizer state per trainable parameter, after one step on the quickstart's model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from recipec.compiler import plan_recipe
    from recipec.runtime import optimizers
    from recipec.schema.optim import own_options

    plan, _ = plan_recipe(REPO / "recipes" / "quickstart.toml", [f"optim.name={name}", *overrides])
    config = AutoConfig.for_model(plan["model_init"], vocab_size=plan["tokenizer_train"]["vocab_size"], **plan["model_config"])
    model = AutoModelForCausalLM.from_config(config)
    spec = {"name": name, "lr": plan["lr"], "weight_decay": plan["weight_decay"]}
    spec.update({k: plan[k] for k in own_options(plan.recipe.optim)})
    opt = optimizers.build(model, spec)
    x = torch.randint(0, config.vocab_size, (2, 16))
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    total = 0
    for state in opt.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v) and v.dim() > 0)
    return total / sum(p.numel() for p in model.parameters()), plan.memory.optimizer / plan.memory.trainable_parameters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--only", default=",".join(RUNS))
    args = ap.parse_args()
    rows = []
    for name in args.only.split(","):
        sets = [f"optim.name={name}", *RUNS[name], f"train.max_steps={args.steps}", "train.save_every=0"]
        with tempfile.TemporaryDirectory() as tmp:
            project = Path(tmp)
            (project / "recipes").mkdir()
            (project / "recipes" / "quickstart.toml").write_text((REPO / "recipes" / "quickstart.toml").read_text())
            cmd = [sys.executable, "-m", "recipec", "build", "recipes/quickstart.toml", *[a for s in sets for a in ("--set", s)]]
            subprocess.run(cmd, cwd=project, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            proc = subprocess.run([sys.executable, "build/quickstart/train.py"], cwd=project, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{name}: train.py failed\n{proc.stderr[-3000:]}")
            metrics = [json.loads(line) for line in (project / "runs" / "quickstart" / "metrics.jsonl").read_text().splitlines()]
        losses = [m for m in metrics if "loss" in m]
        evals = [m for m in metrics if "eval_loss" in m]
        speed = statistics.median(m["tokens_per_s"] for m in losses[1:]) if len(losses) > 1 else float("nan")
        measured, estimated = measured_state_bytes(name, RUNS[name])
        rows.append((name, " ".join(RUNS[name]), losses[-1]["loss"], evals[-1]["eval_loss"], speed, estimated, measured))
        print(f"done: {name}", file=sys.stderr)
    print(f"quickstart, {args.steps} steps, this machine")
    print(f"{'optimizer':<20} {'settings':<40} {'loss':>7} {'eval':>7} {'tokens/s':>9} {'state B/param est.':>19} {'measured':>9}")
    for name, settings, loss, ev, speed, est, meas in rows:
        print(f"{name:<20} {settings:<40} {loss:>7.3f} {ev:>7.3f} {speed:>9.0f} {est:>19.2f} {meas:>9.2f}")


if __name__ == "__main__":
    main()
