"""The GPU fast paths of a recipec build, measured in one command: one table, under 8 minutes on one H200.

Rows (each a fresh process, through train_throughput.py's runners and its optimizer-step
clock: tokens/s is over the steps after `warmup`, start-up, data and the final save outside it):

  quickstart bf16    recipes/quickstart.toml with launch.mixed_precision "bf16" (on the GPU,
                     launch.cpu false): it runs, and its logged loss is finite and falls
  train.py / bare    a Llama of about 0.64B parameters from a config (hidden 2048, 12 layers,
                     16 heads, intermediate 5632), bf16 autocast, seq_len 2048, trained on the
                     data stage's packed Python documentation by (a) the generated train.py and
                     (b) a bare accelerate loop (attention held to sdpa's flash kernel, uncompiled)
  sdpa flash         (a) with torch.nn.attention.sdpa_kernel(FLASH_ATTENTION) around the run: only
                     the flash kernel may serve an attention call, so a run that finishes used it
  model.compile      (a) with model.compile = true, (b) with torch.compile; both let torch pick the
                     kernel (compiling, transformers passes sdpa a mask that flash cannot serve);
                     these two rows run last, so a slow cold compile costs only them
  fused AdamW        (a) with optim.implementation = "fused"; the other (a) rows use "foreach",
                     (b) torch's default (foreach on CUDA)
  SFT packed/padded  the same Llama fine-tuned on recipes/data/dialogs.jsonl (ChatML, loss on the
                     assistant turns) by the generated train.py, data.packing true (whole examples
                     in rows of seq_len, position_ids restarting at each: transformers keeps them
                     apart) against false (a micro-batch padded to its longest example), the same
                     rows per micro-batch; supervised tokens/s. With sdpa, packed rows attend
                     through a block-diagonal mask (no flash kernel for such masks); a third row
                     trains packed with model.attention = "flash_attention_2", the variable-length
                     flash path, when the flash-attn package is installed (skipped otherwise)

Columns: tokens/s (supervised tokens for SFT: optimizer steps/s x rows per step x the mean
supervised tokens per training row of the data stage's output); MFU = tokens/s x FLOPs per
token / the device's peak dense bf16 FLOP/s (`flops_per_token`; H100 SXM and H200 989
TFLOP/s, H100 PCIe 756, A100 312, else --peak-tflops); the peak of torch's allocated and
reserved CUDA memory over the run (the worker's max_memory_allocated / max_memory_reserved)
against the estimate of `recipec explain --json` for the same recipe and overrides; status
ok, failed with the last line of the error, or skipped with why.

GPU machines without `datasets`, `zstandard`, `pydantic`, `click` or `tomli-w` take them (and
their own requirements the machine lacks) from
a folder of wheels (--wheels, default benchmarks/wheels when it exists; see docs/gpu_check.md
for the `pip download` that fills it). recipec runs from this checkout (PYTHONPATH), not
installed.

Usage: python benchmarks/gpu_check.py [--wheels DIR] [--quick] [--peak-tflops N] [--workdir DIR]
       python benchmarks/gpu_check.py --device cpu --tiny     # every row on CPU, a tiny model
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import train_throughput as tt  # noqa: E402  (the runners, the step clock and the recipe)

REPO = tt.REPO
WHEELS = ("datasets", "zstandard", "pydantic", "click", "tomli-w")  # what the GPU machine may lack
# peak dense bf16 tensor-core FLOP/s, in TFLOP/s, by a substring of torch.cuda.get_device_name (first match)
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))
# 12 layers (0.64B parameters with the stage's 6,718-token vocabulary): the run measured at 16 layers (0.85B)
# took about 487 s, too close to its 8 minutes; 12 cut the steps, the compiles, the init and the saves by a quarter
LLAMA = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 12, "num_attention_heads": 16}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
LM_ROWS = [
    # check, setting, runner, recipe overrides (a), cfg for the runner
    ("train.py vs bare loop", "a: generated train.py, sdpa (torch picks the kernel)", "a", [], {}),
    ("train.py vs bare loop", "b: bare accelerate loop, sdpa flash", "b", [], {"sdpa_backend": "flash"}),
    ("sdpa flash", "a: train.py, only the flash kernel allowed", "a", [], {"sdpa_backend": "flash"}),
    ("model.compile", "a: train.py, model.compile = true", "a", ["model.compile=true"], {}),
    # the compiled bare loop lets torch pick the kernel, as (a) does: inside sdpa_kernel(FLASH_ATTENTION)
    # dynamo of torch 2.11 stops at transformers' scaled_dot_product_attention call (docs/gpu_check.md)
    ("model.compile", "b: bare loop, torch.compile, sdpa (torch picks the kernel)", "b", [], {"compile": True}),
    ("fused AdamW", 'a: train.py, optim.implementation = "fused"', "a", ['optim.implementation="fused"'], {}),
    # the layers' inputs kept by checkpointing, in device memory or in pinned host memory: the peak and the copies' cost
    ("activation offloading", "a: train.py, model.gradient_checkpointing", "a", ["model.gradient_checkpointing=true"], {}),
    ("activation offloading", "a: train.py, + model.activation_offloading", "a",
     ["model.gradient_checkpointing=true", "model.activation_offloading=true"], {}),
]
COLUMNS = ("check", "setting", "tokens/s", "MFU", "alloc GiB", "reserved GiB", "estimate GiB", "est/alloc", "s", "status")


def flops_per_token(n_params: int, vocab: int, hidden: int, layers: int, seq_len: int) -> float:
    """Training FLOPs per token of a decoder: 6 x the parameters that multiply, + attention (PaLM's count).

    The input embedding is a lookup, not a matmul, so its vocab x hidden parameters are left
    out; attention's two s x s products add 12 x layers x hidden x seq_len (forward and
    backward, the full square: causal masking's saving is not subtracted, as in PaLM's MFU).
    """
    return 6 * (n_params - vocab * hidden) + 12 * layers * hidden * seq_len


def mfu(tokens_per_s: float, flops: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the device's peak."""
    return tokens_per_s * flops / (peak_tflops * 1e12)


def peak_tflops(device_name: str) -> float | None:
    """The peak dense bf16 TFLOP/s of a device by name, None when it is not in PEAK_TFLOPS."""
    return next((tf for key, tf in PEAK_TFLOPS if key in device_name), None)


@dataclass
class Row:
    """One line of the table: a check, its setting, what was measured (None: not measured) and how it ended."""

    check: str
    setting: str
    tokens_per_s: float | None = None
    mfu: float | None = None
    alloc: float | None = None  # bytes
    reserved: float | None = None
    estimate: float | None = None
    seconds: float = 0.0
    status: str = "ok"
    losses: list[float] = field(default_factory=list)
    phases: str = ""  # where the row's seconds went: start-up to the first step, the steps, after the last

    def cells(self) -> list[str]:
        gib = 1024**3

        def num(x: float | None, fmt: str) -> str:
            return "-" if x is None else format(x, fmt)

        ratio = self.estimate / self.alloc if self.estimate and self.alloc else None
        return [
            self.check,
            self.setting,
            num(self.tokens_per_s, ",.0f"),
            "-" if self.mfu is None else f"{100 * self.mfu:.1f}%",
            num(None if self.alloc is None else self.alloc / gib, ".2f"),
            num(None if self.reserved is None else self.reserved / gib, ".2f"),
            num(None if self.estimate is None else self.estimate / gib, ".2f"),
            num(ratio, ".3f"),
            f"{self.seconds:.0f}",
            self.status,
        ]


def table(rows: list[Row]) -> str:
    """A markdown table of the rows (pasted into the README as it is)."""
    rule = ["---", "---", *["---:"] * (len(COLUMNS) - 3), "---"]
    lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in r.cells()) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- wheels


def install_wheels(wheels: Path) -> None:
    """pip-install what the machine lacks from a folder of wheels, with no index (the GPU machine is offline)."""
    argv = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), *WHEELS]
    print("$ " + " ".join(argv), flush=True)
    if subprocess.run(argv).returncode == 0:
        return
    # pip's resolver found a conflict with what the machine has (an older pyarrow, say): install
    # the folder as it is, each wheel without its requirements, and let the rows show what breaks
    files = sorted(str(w) for w in wheels.glob("*.whl"))
    argv = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", *files]
    print("resolving failed; installing every wheel without its requirements:\n$ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


# --------------------------------------------------------------------------- recipes


def sft_recipe(cfg: dict, packing: bool, attention: str = "sdpa") -> str:
    """The SFT recipe: the LM rows' Llama from scratch, a BPE tokenizer trained on the dialogs, ChatML, loss on the answers."""
    model = "\n".join(f"{k} = {v}" for k, v in cfg["model_config"].items())
    return f"""\
[recipe]
name = "sft-{"packed" if packing else "padded"}"
seed = {tt.SEED}

[model]
init = "llama"
attention = "{attention}"

[model.config]
{model}
max_position_embeddings = {cfg["seq_len"]}

[tokenizer]
train = {{ kind = "bpe", vocab_size = 4096 }}
chat_template = {json.dumps(str(REPO / "recipes/chat/chatml.jinja"))}
special_tokens = ["<|im_start|>", "<|im_end|>"]

[data]
seq_len = {cfg["seq_len"]}
packing = {"true" if packing else "false"}
eval_fraction = 0.02
cache_dir = "cache"

[[data.sources]]
path = {json.dumps(str(REPO / "recipes/data/dialogs.jsonl"))}
records = "messages"
train_on = "assistant"

[optim]
lr = 1e-4
implementation = "foreach"

[train]
micro_batch_size = {cfg["micro_batch"]}
batch_size = {cfg["batch"]}
max_steps = {cfg["steps"]}
log_every = {cfg["log_every"]}
eval_every = 0
save_every = 0

[output]
dir = "runs/a"

[launch]
num_processes = 1
mixed_precision = "{"bf16" if cfg["bf16"] else "no"}"
cpu = {"false" if cfg["device"] == "cuda" else "true"}
"""


def estimate(recipe: Path, overrides: list[str], workdir: Path) -> int:
    """Peak memory per device in bytes, from `recipec explain --json` of the recipe with the overrides."""
    argv = [sys.executable, "-m", "recipec", "explain", str(recipe), "--json", *(a for o in overrides for a in ("--set", o))]
    out = subprocess.run(
        argv, cwd=workdir, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)["memory"]["per_device"]


def supervised_per_row(entry: Path) -> float:
    """The mean supervised tokens per training row of a data stage's output (its report over its rows)."""
    sys.path.insert(0, str(REPO))
    from recipec.runtime.stage_cache import load_sequences

    rows = sum(len(load_sequences(shard)) for shard in glob.glob(str(entry / "train-*.arrow")))
    report = json.loads((entry / "data_report.json").read_text())
    return report["examples"]["supervised_tokens"] / rows


# --------------------------------------------------------------------------- one row


def run_row(row: Row, runner: str, cfg: dict, workdir: Path, index: str, rate_scale: float = 1.0) -> None:
    """Run one runner of train_throughput.py with cfg; fill the row's tokens/s, memory and status."""
    (workdir / "bench.json").write_text(json.dumps(cfg, indent=2))
    start = time.perf_counter()
    try:
        per_wall, _, _, _ = tt._one_run(runner, cfg, workdir, index)
    except subprocess.TimeoutExpired:
        row.status = f"failed: over its {cfg['timeout']} s budget"
        return
    except SystemExit as e:  # train_throughput's one-line reason, then the log's tail
        lines = [line for line in str(e.code).splitlines() if line.strip()]
        row.status = "failed: " + (lines[-1].strip() if lines else "exit")
        return
    finally:
        row.seconds = time.perf_counter() - start
    row.tokens_per_s = per_wall * rate_scale
    times = json.loads((workdir / f"times-{runner}{index}.json").read_text())
    # perf_counter is the machine's monotonic clock (CLOCK_MONOTONIC on Linux), the same in the runner's process
    wall = times["wall"]
    row.phases = (
        f"start-up and step 1 {wall[0] - start:.1f} s, steps 2-{len(wall)} {wall[-1] - wall[0]:.1f} s, "
        f"final save and exit {start + row.seconds - wall[-1]:.1f} s"
    )
    row.alloc, row.reserved = times.get("max_allocated"), times.get("max_reserved")
    metrics = sorted(glob.glob(str(workdir / "runs" / "**" / "metrics.jsonl"), recursive=True))
    if runner == "a" and metrics:
        row.losses = [json.loads(line)["loss"] for line in open(metrics[0]) if '"loss"' in line]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model of width 64, seq_len 256 (implied on CPU)")
    parser.add_argument("--quick", action="store_true", help="half the steps of every row")
    parser.add_argument("--wheels", type=Path, help="install the missing packages from here (default benchmarks/wheels if it exists)")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak dense bf16 TFLOP/s, for a device not in the table")
    parser.add_argument("--only", action="append", help="run only the rows whose check starts with this (repeatable)")
    parser.add_argument("--workdir", type=Path, help="keep recipes, builds, data and logs here")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()

    wheels = args.wheels or (HERE / "wheels" if (HERE / "wheels").is_dir() else None)
    if wheels is not None:
        install_wheels(wheels)

    import torch

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu --tiny to check the script on CPU")
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = args.peak_tflops or (peak_tflops(name) if cuda else None)
    half = 2 if args.quick else 1
    tiny = args.tiny or not cuda
    base = {
        "device": args.device,
        "bf16": True,
        "threads": 0 if cuda else 1,
        "model_config": TINY if tiny else LLAMA,
        "seq_len": 256 if tiny else 2048,
        "micro_batch": 4 if tiny else 8,
        "batch": 4 if tiny else 8,
        "steps": (6 if tiny else 30) // half,
        "warmup": (2 if tiny else 10) // half,
        "log_every": 2 if tiny else 10,
        "eval_every": 0,
        "save_every": 0,
        "timeout": 600 if tiny else 150,
    }
    base["lr_warmup"] = max(1, base["steps"] // 10)
    print(
        f"device {name}, peak {peak or '?'} TFLOP/s bf16, torch {torch.__version__}, python {sys.version.split()[0]}; "
        f"{'tiny model' if tiny else 'llama ' + json.dumps(LLAMA)}{', quick' if args.quick else ''}",
        flush=True,
    )
    rows: list[Row] = []
    wanted = (lambda check: any(check.startswith(o) for o in args.only)) if args.only else (lambda check: True)

    def skip(row: Row, why: str) -> None:
        row.status = f"skipped: {why}"
        rows.append(row)

    with tempfile.TemporaryDirectory() as tmp:
        root = (args.workdir or Path(tmp)).resolve()
        root.mkdir(parents=True, exist_ok=True)

        # quickstart in bf16
        if wanted("quickstart"):
            row = Row("quickstart bf16", "recipes/quickstart.toml, mixed_precision bf16" + (", batch 8" if tiny else ""))
            work = root / "quickstart"
            work.mkdir(exist_ok=True)
            steps = (6 if tiny else 40) // half
            # tiny (the CPU check): a quarter of the quickstart's batch, so bf16 on a CPU takes seconds a step
            batch, micro_batch = (8, 8) if tiny else (32, 16)
            overrides = [
                'launch.mixed_precision="bf16"',
                f"launch.cpu={'false' if cuda else 'true'}",
                f"train.max_steps={steps}",
                f"train.micro_batch_size={micro_batch}",
                f"train.batch_size={batch}",
                f"train.log_every={max(1, steps // 6)}",
                "train.eval_every=0",
                "train.save_every=0",
            ]
            cfg = {**base, "steps": steps, "warmup": max(1, steps // 4), "seq_len": 128, "batch": batch, "micro_batch": micro_batch}
            try:
                tt.prepare(cfg, REPO / "recipes/quickstart.toml", overrides, work)
                row.estimate = estimate(REPO / "recipes/quickstart.toml", overrides, work)
                run_row(row, "a", cfg, work, "q")
                if row.status == "ok":
                    ok = len(row.losses) >= 2 and all(math.isfinite(x) for x in row.losses) and row.losses[-1] < row.losses[0]
                    loss = f"loss {row.losses[0]:.2f} -> {row.losses[-1]:.2f}" if row.losses else "no loss logged"
                    row.status = f"ok: {loss}" if ok else f"failed: {loss}, not finite and falling"
            except subprocess.CalledProcessError as e:
                row.status = "failed: " + ((e.stderr or "").strip().splitlines() or ["exit"])[-1]
            if row.tokens_per_s and peak:
                m = tomllib.loads((REPO / "recipes/quickstart.toml").read_text())["model"]["config"]
                v, n = tt._n_params({**cfg, "model_config": m})
                row.mfu = mfu(row.tokens_per_s, flops_per_token(n, v, m["hidden_size"], m["num_hidden_layers"], 128), peak)
            rows.append(row)
            print(" | ".join(row.cells()) + (f"\n  ({row.phases})" if row.phases else ""), flush=True)

        # the Llama: train.py against the bare loop, compile, flash, fused AdamW
        lm = root / "lm"
        lm.mkdir(exist_ok=True)
        cfg = dict(base)
        lm_recipe = lm / "recipe.toml"
        lm_recipe.write_text(tt._recipe(cfg))
        vocab = n = None
        # the compile rows last: inductor compiling cold can take minutes, and a slow compile
        # should cost the compile rows, not the others
        order = sorted(enumerate(LM_ROWS), key=lambda r: r[1][0] == "model.compile")
        first = [r for r in order if r[1][0] != "model.compile"]
        last = [r for r in order if r[1][0] == "model.compile"]

        def lm_row(i: int, check: str, setting: str, runner: str, overrides: list[str], extra: dict) -> None:
            nonlocal vocab, n
            if not wanted(check):
                return
            row = Row(check, setting)
            compiled = extra.get("compile") or "model.compile=true" in overrides
            if not cuda and (compiled or runner == "a" and extra.get("sdpa_backend") == "flash"):
                skip(row, "needs CUDA")
                return
            if not cuda:
                extra = {k: v for k, v in extra.items() if k != "sdpa_backend"}  # the flash kernel needs CUDA
                row.setting = setting.replace(", sdpa flash", ", sdpa")
            if not any("implementation" in o for o in overrides):
                overrides = ['optim.implementation="foreach"', *overrides]
            run_cfg = {**cfg, **extra}
            if cuda and compiled:
                run_cfg["timeout"] = 300  # inductor compiles the model in the first steps, minutes when its cache is cold
            try:
                tt.prepare(run_cfg, lm_recipe, overrides, lm)
                if runner == "a":
                    row.estimate = estimate(lm_recipe, overrides, lm)
                if vocab is None:
                    vocab, n = tt._n_params(run_cfg)
                    print(f"llama: {n / 1e6:.1f}M parameters, vocab {vocab}, seq_len {cfg['seq_len']}", flush=True)
                run_row(row, runner, run_cfg, lm, f"lm{i}")
            except subprocess.CalledProcessError as e:
                row.status = "failed: " + ((e.stderr or "").strip().splitlines() or ["exit"])[-1]
            m = cfg["model_config"]
            if row.tokens_per_s and peak:
                flops = flops_per_token(n, vocab, m["hidden_size"], m["num_hidden_layers"], cfg["seq_len"])
                row.mfu = mfu(row.tokens_per_s, flops, peak)
            rows.append(row)
            print(" | ".join(row.cells()) + (f"\n  ({row.phases})" if row.phases else ""), flush=True)

        for i, spec in first:
            lm_row(i, *spec)

        # SFT: packed against padded, supervised tokens/s
        if wanted("SFT"):
            sft_cfg = {**base, "seq_len": 256 if tiny else 512, "micro_batch": 4 if tiny else 16, "batch": 4 if tiny else 16}
            shape = f"{sft_cfg['micro_batch']} rows a micro-batch, seq_len {sft_cfg['seq_len']}"
            for packing, attention in ((True, "sdpa"), (False, "sdpa"), (True, "flash_attention_2")):
                row = Row("SFT packed vs padded", f"{'packed' if packing else 'padded'}, {attention}, {shape}")
                if attention != "sdpa" and not cuda:
                    skip(row, "needs CUDA")
                    continue
                if attention != "sdpa" and importlib.util.find_spec("flash_attn") is None:
                    skip(row, "the flash-attn package is not installed")
                    continue
                work = root / f"sft-{'packed' if packing else 'padded'}-{attention}"
                work.mkdir(exist_ok=True)
                recipe = work / "recipe.toml"
                recipe.write_text(sft_recipe(sft_cfg, packing, attention))
                run_cfg = dict(sft_cfg)
                try:
                    tt.prepare(run_cfg, recipe, [], work)
                    row.estimate = estimate(recipe, [], work)
                    scale = supervised_per_row(Path(run_cfg["entry"])) / sft_cfg["seq_len"]  # tokens/s is rows x seq_len
                    run_row(row, "a", run_cfg, work, "sft", rate_scale=scale)
                except subprocess.CalledProcessError as e:
                    row.status = "failed: " + ((e.stderr or "").strip().splitlines() or ["exit"])[-1]
                rows.append(row)
                print(" | ".join(row.cells()) + (f"\n  ({row.phases})" if row.phases else ""), flush=True)

        for i, spec in last:
            lm_row(i, *spec)

    print()
    checks = ["quickstart bf16", *dict.fromkeys(spec[0] for spec in LM_ROWS), "SFT packed vs padded"]
    print(table(sorted(rows, key=lambda r: checks.index(r.check))))
    of = f"of {peak:g} TFLOP/s" if peak else "- (no peak for this device: --peak-tflops)"
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; tokens/s over the steps after the warmup, supervised ones in the SFT rows; MFU {of}")


if __name__ == "__main__":
    main()
