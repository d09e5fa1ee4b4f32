"""How well `recipec predict` foretells one schedule's loss from another schedule's run.

    python benchmarks/predict_schedule.py [--steps 800] [--source python-stdlib] [--workdir DIR]

Trains the same tiny Llama three times on CPU, with a cosine schedule, a constant LR and
WSD (a 20 % cooldown), fits the scaling law with LR annealing on the cosine run's losses,
and on the cosine and constant runs' together (`recipec predict --from ... --from ...`),
and prints, at the end of each WSD phase, the loss the law predicts beside the loss the WSD
run logged: the training loss as the mean of the logged values
within 10 steps of the phase's end (the logged values are themselves means over
`log_every` steps), and the held-out loss where the run evaluated. Also printed: the fit's
own error on the cosine run, and what the law predicts for the cosine run's end against
its logged loss. Nothing is asserted: the figures are the point.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RECIPE = """
[recipe]
name = "{name}"
seed = 7

[model]
init = "llama"

[model.config]
hidden_size = 64
intermediate_size = 128
num_hidden_layers = 2
num_attention_heads = 4
max_position_embeddings = 64

[tokenizer]
train = {{kind = "bpe", vocab_size = 1024}}

[data]
seq_len = 64
eval_fraction = 0.02

[[data.sources]]
builtin = "{source}"

[optim]
lr = 3e-3

[schedule]
warmup = 30
{decay}
min_lr_ratio = 0.0

[train]
micro_batch_size = 16
batch_size = 16
max_steps = {steps}
log_every = 5
eval_every = 40
eval_batches = 20
save_every = 0

[launch]
cpu = true
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--source", default="python-stdlib", choices=["python-stdlib", "python-docs"])
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="recipec-predict-"))
    (work / "recipes").mkdir(parents=True, exist_ok=True)
    schedules = {"cos": 'decay = "cosine"', "const": 'decay = "constant"', "wsd": 'decay = "wsd"\ncooldown = 0.2'}
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    procs = []
    for name, decay in schedules.items():
        (work / "recipes" / f"{name}.toml").write_text(RECIPE.format(name=name, source=args.source, decay=decay, steps=args.steps))
        if not (work / "runs" / name / "run.json").is_file() or json.loads((work / "runs" / name / "run.json").read_text()).get("status") != "completed":
            log = open(work / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
            procs.append(subprocess.Popen([sys.executable, "-m", "recipec", "run", f"recipes/{name}.toml"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT))
    for p in procs:
        if p.wait() != 0:
            sys.exit(f"a training run failed: see {work}/*.log")
    metrics = {name: [json.loads(line) for line in (work / "runs" / name / "metrics.jsonl").read_text().splitlines()] for name in schedules}
    print(f"{args.steps} steps of {args.source}, 16 x 64 tokens a step; runs in {work}")
    for metric, fitted_on in itertools.product(("loss", "eval_loss"), (["cos"], ["cos", "const"])):
        wsd = ("--set", 'schedule.decay="wsd"', "--set", "schedule.cooldown=0.2")
        runs = [x for name in fitted_on for x in ("--from", f"runs/{name}")]
        out = subprocess.run(
            [sys.executable, "-m", "recipec", "--no-color", "predict", "recipes/cos.toml", *runs, "--metric", metric, *wsd, "--json"],
            cwd=work, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        pred = json.loads(out.stdout)
        f = pred["fit"]
        print(
            f"\nfitted on {' + '.join(fitted_on)}, `{metric}` ({f['points']} points): L0 {f['L0']:.3f} A {f['A']:.3f} alpha {f['alpha']:.3f} "
            f"C {f['C']:.4f}, rmse {f['rmse']:.4f}, R^2 {f['r2']:.4f}"
        )
        for last in pred["run_last"]:
            print(f"  {last['run']} at step {last['step']}: logged {last['logged']:.4f}, law {last['law']:.4f}")
        for w in pred["warnings"]:
            print(f"  warning: {w}")
        print(f"  {'WSD phase':<10} {'step':>6} {'predicted':>10} {'logged':>10} {'ratio':>7}")
        for phase in pred["phases"]:
            step = phase["step"]
            if metric == "loss":
                near = [m["loss"] for m in metrics["wsd"] if "loss" in m and abs(m["step"] - step) <= 10]
            else:
                near = [m["eval_loss"] for m in metrics["wsd"] if "eval_loss" in m and m["step"] == step]
            if not near or phase["loss"] is None:
                print(f"  {phase['name']:<10} {step:>6} {phase['loss'] or float('nan'):>10.4f} {'-':>10}")
                continue
            logged = sum(near) / len(near)
            print(f"  {phase['name']:<10} {step:>6} {phase['loss']:>10.4f} {logged:>10.4f} {phase['loss'] / logged:>7.3f}")


if __name__ == "__main__":
    main()
