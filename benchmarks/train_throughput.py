"""Training throughput of a recipec build against a bare accelerate loop and transformers' Trainer.

One model, one data set, one batch, one optimizer and schedule, trained by three runners,
each in a fresh process, run one after another and interleaved (a b c a b c ...):

  a  the train.py that `recipec build` writes from a recipe this script writes, run as
     `python build/<name>/train.py` (logging every --log-every steps, the progress bar on;
     in-loop eval and checkpoints off unless --eval-every / --save-every ask for them:
     a throughput run is set up that way, and neither b nor c evaluates or saves)
  b  a minimal accelerate loop with no logging at all: the no-overhead limit (forward with
     use_cache=False, as a and Trainer do: a KV cache filled in training is pure waste)
  c  transformers' Trainer (report_to "none", logging every --log-every steps, no eval,
     no save, the progress bar on)

The model is a Llama initialised from `seed` from the same config; the data is the data
stage's packed sequences of Python's own documentation (pydoc_data.topics), tokenized by
a BPE tokenizer the stage trains on it, read with the stage's loader and collated with
recipec_runtime's collate in all three. The optimizer is AdamW (decay on matrices and
embeddings, betas (0.9, 0.95), grad clip 1.0), the schedule linear warmup then cosine to
10% of the peak LR; on CUDA with --bf16 all three use bf16 mixed precision.

Measurement, the same for all three: each runner process registers a global
optimizer-step post hook (torch.optim.optimizer.register_optimizer_step_post_hook) that
records the wall clock after every optimizer step (on CUDA it synchronizes first at the
two boundary steps only). tokens/s = tokens of steps warmup+1..steps over the time from
the end of step `warmup` to the end of step `steps`: process start, imports, data
preparation, model init, the first steps and the final save are all outside it. Nothing
else of the runners is changed; for (a) the hook is installed before the generated
script runs (runpy), as `python train.py` would run it.

Prints, for every run, tokens/s, tokens per CPU second (the process's CPU time over the
same interval, all threads: less sensitive to other work on the machine than the wall
clock) and the median and longest optimizer step (a long one is a stall: an eval, a
checkpoint, a sync); then for each runner the median, min and max over the repeats, and
the ratios a/b and a/c (of the medians, and the median of the per-round ratios: a round
is one a b c triple, which cancels slow drift in the machine's load).

Usage: python benchmarks/train_throughput.py [--steps 30] [--warmup 5] [--repeats 3]
           [--size small|base] [--micro-batch 1] [--batch 2] [--log-every 10]
           [--eval-every 0] [--save-every 0] [--device cpu|cuda] [--bf16]
           [--threads N] [--runners abc] [--workdir DIR]

--size small (default on CPU): hidden 256, 4 layers, 8 heads, intermediate 688: 6.6M
parameters with the 6718-token vocabulary that BPE reaches on pydoc_data.topics (asked
for 8192); --size base (default on CUDA): hidden 512, 8 layers, 8 heads, intermediate
1376: 32.2M parameters. seq_len is 512. base trains at ~170 tokens/s on two busy CPU
cores, too slow for a few-minute run; on a GPU use e.g. --device cuda --bf16 --batch 64
--micro-batch 16 --steps 100 --warmup 20 (pydoc_data.topics packs into 205 training
sequences, so such a run goes through many short epochs, the same in all three).

benchmarks/gpu_check.py runs these runners on other recipes and shapes through the same
config file: `seq_len`, `compile` (b: torch.compile), `sdpa_backend` "flash" (the whole run
inside torch.nn.attention.sdpa_kernel(FLASH_ATTENTION)) and `timeout` (seconds a run may
take); on CUDA the times file also gets the peak allocated and reserved memory.

--threads defaults to 1 on CPU: on a small machine shared with other work, two OpenMP
threads per process wait on each other at every barrier while the other is descheduled,
which made steps 3-10x slower and erratic here; one thread per runner measures the loop,
not the scheduler. --threads 0 keeps torch's default.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAME = "throughput"
SEED = 1234
SEQ_LEN = 512
LR = 1e-3
SIZES = {
    "small": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 8},
    "base": {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8, "num_attention_heads": 8},
}
VOCAB = 8192
LABELS = {"a": "a recipec train.py", "b": "b bare accelerate loop", "c": "c transformers Trainer"}


# --------------------------------------------------------------------------- the recipe (a)


def _recipe(cfg: dict) -> str:
    model = "\n".join(f"{k} = {v}" for k, v in cfg["model_config"].items())
    cuda = cfg["device"] == "cuda"
    seq_len = cfg["seq_len"]
    return f"""\
[recipe]
name = "{NAME}"
seed = {SEED}

[model]
init = "llama"
dtype = "float32"

[model.config]
{model}
max_position_embeddings = {seq_len}

[tokenizer]
train = {{ kind = "bpe", vocab_size = {VOCAB} }}

[data]
seq_len = {seq_len}
packing = true
eval_fraction = 0.02
cache_dir = "cache"

[[data.sources]]
builtin = "python-docs"

[optim]
lr = {LR}
weight_decay = 0.1
betas = [0.9, 0.95]
grad_clip = 1.0

[schedule]
warmup = {cfg["lr_warmup"]}
decay = "cosine"
min_lr_ratio = 0.1

[train]
micro_batch_size = {cfg["micro_batch"]}
batch_size = {cfg["batch"]}
max_steps = {cfg["steps"]}
log_every = {cfg["log_every"]}
eval_every = {cfg["eval_every"]}
eval_batches = 4
save_every = {cfg["save_every"]}
keep_last = 1

[output]
dir = "runs/a"

[launch]
num_processes = 1
mixed_precision = "{"bf16" if cfg["bf16"] else "no"}"
cpu = {"false" if cuda else "true"}
"""


# --------------------------------------------------------------------------- runners (in the worker process)


def _install_clock(cfg: dict, times_file: Path) -> None:
    """Record the wall clock and the process's CPU time after every optimizer step; written to `times_file` at exit.

    On CUDA the file also has the peak of torch's allocated and reserved memory over the run.
    """
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    wall: list[float] = []
    cpu: list[float] = []
    boundaries = {cfg["warmup"], cfg["steps"]}
    sync = cfg["device"] == "cuda"

    def after_step(optimizer, args, kwargs):
        if sync and len(wall) + 1 in boundaries:
            torch.cuda.synchronize()  # queued kernels are part of the interval
        wall.append(time.perf_counter())
        cpu.append(time.process_time())  # all threads of this process

    def write() -> None:
        times: dict = {"wall": wall, "cpu": cpu}
        if sync:
            times.update(max_allocated=torch.cuda.max_memory_allocated(), max_reserved=torch.cuda.max_memory_reserved())
        times_file.write_text(json.dumps(times))

    register_optimizer_step_post_hook(after_step)
    atexit.register(write)


def _shared_setup(cfg: dict):
    """Tokenizer, training sequences, collate and a freshly initialised model, as train.py makes them."""
    sys.path.insert(0, cfg["build_dir"])  # the build's recipec_runtime: the same loader and collate as (a)
    from recipec_runtime import data, stage
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from accelerate.utils import set_seed

    entry = Path(cfg["entry"])
    set_seed(SEED)  # as train.py: before the data, which draws no random numbers
    tokenizer = AutoTokenizer.from_pretrained(entry / "tokenizer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_set = stage.load_sequences(entry / "train-0.arrow")
    config = AutoConfig.for_model(
        "llama",
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=cfg["seq_len"],
        **cfg["model_config"],
    )
    model = AutoModelForCausalLM.from_config(config)
    model.train()
    return train_set, data.collate, model


def _param_groups(model) -> list[dict]:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]


def _run_a(cfg: dict) -> None:
    import runpy

    script = str(Path(cfg["build_dir"]) / "train.py")
    sys.argv = [script]
    runpy.run_path(script, run_name="__main__")


def _run_b(cfg: dict) -> None:
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    accum = cfg["batch"] // cfg["micro_batch"]
    accelerator = Accelerator(
        cpu=cfg["device"] == "cpu", mixed_precision="bf16" if cfg["bf16"] else "no", gradient_accumulation_steps=accum
    )
    train_set, collate, model = _shared_setup(cfg)
    if cfg.get("compile"):
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(_param_groups(model), lr=LR, betas=(0.9, 0.95))
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(optimizer, cfg["lr_warmup"], cfg["steps"], min_lr_rate=0.1)
    loader = DataLoader(
        train_set,
        batch_size=cfg["micro_batch"],
        shuffle=True,
        drop_last=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(SEED),
    )
    model, optimizer, scheduler, loader = accelerator.prepare(model, optimizer, scheduler, loader)
    step = 0
    while step < cfg["steps"]:
        for batch in loader:
            with accelerator.accumulate(model):
                # no KV cache, as train.py and Trainer (TrainingArguments.use_cache False): the three differ by their loops only
                accelerator.backward(model(**batch, use_cache=False).loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                step += 1
                if step >= cfg["steps"]:
                    break


def _run_c(cfg: dict) -> None:
    from transformers import Trainer, TrainingArguments

    train_set, collate, model = _shared_setup(cfg)
    args = TrainingArguments(
        output_dir=str(Path(cfg["workdir"]) / "runs" / "c"),
        per_device_train_batch_size=cfg["micro_batch"],
        gradient_accumulation_steps=cfg["batch"] // cfg["micro_batch"],
        max_steps=cfg["steps"],
        learning_rate=LR,
        weight_decay=0.1,
        adam_beta1=0.9,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        optim="adamw_torch",
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        warmup_steps=cfg["lr_warmup"],
        logging_steps=cfg["log_every"],
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        use_cpu=cfg["device"] == "cpu",
        bf16=cfg["bf16"],
        dataloader_num_workers=0,
        dataloader_pin_memory=cfg["device"] == "cuda",
        seed=SEED,
    )
    Trainer(model=model, args=args, train_dataset=train_set, data_collator=collate).train()


def _worker(runner: str, config_file: Path, times_file: Path) -> None:
    cfg = json.loads(config_file.read_text())
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    _install_clock(cfg, times_file)
    run = {"a": _run_a, "b": _run_b, "c": _run_c}[runner]
    if cfg.get("sdpa_backend") == "flash":
        # only the flash kernel may run: an attention call it cannot serve raises instead of
        # falling back to another backend, so a run that finishes used flash throughout
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            run(cfg)
    else:
        run(cfg)


# --------------------------------------------------------------------------- the driver


def _prepare(cfg: dict, workdir: Path) -> None:
    """Write the recipe, build it and run its data stage (once; every runner reads the entry)."""
    (workdir / "recipe.toml").write_text(_recipe(cfg))
    prepare(cfg, workdir / "recipe.toml", (), workdir)


def prepare(cfg: dict, recipe: Path, overrides: tuple[str, ...] | list[str], workdir: Path):
    """Build `recipe` with `overrides` into `workdir` and run its data stage; sets cfg's build_dir and entry."""
    sys.path.insert(0, str(REPO))
    from recipec.compiler import build

    written, plan = build(recipe, tuple(overrides), None, project=workdir, force=True)
    cfg["build_dir"] = str((workdir / plan.build_dir).resolve())
    out = subprocess.run(
        [sys.executable, "-m", "recipec", "data", str(recipe), *(a for o in overrides for a in ("--set", o))],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        capture_output=True,
        text=True,
    )
    report = next(line for line in out.stdout.splitlines() if line.startswith("report: "))
    cfg["entry"] = str((workdir / report.removeprefix("report: ")).parent.resolve())


def _n_params(cfg: dict) -> tuple[int, int]:
    """(vocabulary, parameters) of the Llama all three runners train: untied embeddings, no biases."""
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(Path(cfg["entry"]) / "tokenizer" / "tokenizer.json")).get_vocab_size()
    m = cfg["model_config"]
    h, layers = m["hidden_size"], m["num_hidden_layers"]
    per_layer = 4 * h * h + 3 * h * m["intermediate_size"] + 2 * h  # attention, mlp, two norms
    return vocab, 2 * vocab * h + layers * per_layer + h


def _one_run(runner: str, cfg: dict, workdir: Path, index: int) -> tuple[float, float, float, float]:
    """Tokens per wall second, tokens per CPU second, median and longest step (s) of one run, over the measured steps."""
    shutil.rmtree(workdir / "runs", ignore_errors=True)  # (a) would resume from a checkpoint
    times_file = workdir / f"times-{runner}{index}.json"
    log_file = workdir / f"log-{runner}{index}.txt"
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", runner, "--config", str(workdir / "bench.json")]
    argv += ["--times", str(times_file)]
    with open(log_file, "w") as log:
        # a timeout (cfg "timeout", seconds) raises subprocess.TimeoutExpired after killing the runner
        result = subprocess.run(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, timeout=cfg.get("timeout"))
    if result.returncode != 0:
        sys.exit(f"runner {runner} failed (exit {result.returncode}); see {log_file}:\n{log_file.read_text()[-3000:]}")
    times = json.loads(times_file.read_text())
    if len(times["wall"]) != cfg["steps"]:
        sys.exit(f"runner {runner} made {len(times['wall'])} optimizer steps, expected {cfg['steps']}; see {log_file}")
    w, n = cfg["warmup"], cfg["steps"]
    tokens = (n - w) * cfg["batch"] * cfg["seq_len"]
    steps = [b - a for a, b in zip(times["wall"][w - 1 : n - 1], times["wall"][w:n])]
    return (
        tokens / (times["wall"][n - 1] - times["wall"][w - 1]),
        tokens / (times["cpu"][n - 1] - times["cpu"][w - 1]),
        statistics.median(steps),
        max(steps),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="optimizer steps left out of the measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", choices=sorted(SIZES), help="small on CPU, base on CUDA unless given")
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2, help="global batch in sequences of 512 tokens")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=0, help="(a) only; b and c never evaluate")
    parser.add_argument("--save-every", type=int, default=0, help="(a) only; b and c never save")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (CUDA)")
    parser.add_argument("--threads", type=int, help="torch threads in every runner; 0: torch's default (default: 1 on CPU)")
    parser.add_argument("--runners", default="abc", help="which runners, in round order")
    parser.add_argument("--workdir", type=Path, help="keep the recipe, build, data and logs here")
    parser.add_argument("--worker", choices=["a", "b", "c"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--times", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.config, args.times)
        return
    if args.batch % args.micro_batch or not 0 < args.warmup < args.steps:
        parser.error("--batch must be a multiple of --micro-batch and 0 < --warmup < --steps")

    size = args.size or ("base" if args.device == "cuda" else "small")
    cfg = {
        "steps": args.steps,
        "warmup": args.warmup,
        "lr_warmup": max(1, args.steps // 10),
        "micro_batch": args.micro_batch,
        "batch": args.batch,
        "log_every": args.log_every,
        "eval_every": args.eval_every,
        "save_every": args.save_every,
        "device": args.device,
        "bf16": args.bf16,
        "threads": args.threads if args.threads is not None else (1 if args.device == "cpu" else 0),
        "model_config": SIZES[size],
        "seq_len": SEQ_LEN,
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        _prepare(cfg, workdir)
        cfg["workdir"] = str(workdir)
        (workdir / "bench.json").write_text(json.dumps(cfg, indent=2))
        vocab, n_params = _n_params(cfg)
        print(f"model: llama {size} {cfg['model_config']}, vocab {vocab}, {n_params / 1e6:.2f}M parameters, seq_len {SEQ_LEN}")
        print(
            f"batch {args.batch} x {SEQ_LEN} tokens (micro-batch {args.micro_batch}), {args.steps} steps, "
            f"measured over steps {args.warmup + 1}..{args.steps}, {args.device}{' bf16' if args.bf16 else ''}, "
            f"torch threads {cfg['threads'] or 'default'}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
        )
        print(f"prepared (build + data stage) in {time.perf_counter() - start:.1f} s in {workdir}")
        wall: dict[str, list[float]] = {r: [] for r in args.runners}
        cpu: dict[str, list[float]] = {r: [] for r in args.runners}
        for i in range(args.repeats):
            for runner in args.runners:
                start = time.perf_counter()
                per_wall, per_cpu, step_med, step_max = _one_run(runner, cfg, workdir, i)
                wall[runner].append(per_wall)
                cpu[runner].append(per_cpu)
                print(
                    f"  round {i + 1} {runner}: {per_wall:9.1f} tokens/s {per_cpu:9.1f} tokens/CPU-s   "
                    f"step median {step_med * 1000:7.1f} ms, longest {step_max * 1000:7.1f} ms   "
                    f"(process {time.perf_counter() - start:5.1f} s, load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        for title, results in (("tokens/s (wall clock)", wall), ("tokens per CPU second (all threads)", cpu)):
            print(f"\n{title}")
            for runner, values in results.items():
                med = statistics.median(values)
                print(f"  {LABELS[runner]:<26} median {med:9.1f}   min {min(values):9.1f}   max {max(values):9.1f}   (n={len(values)})")
            for other in "bc":
                if "a" in results and other in results:
                    ratio = statistics.median(results["a"]) / statistics.median(results[other])
                    rounds = statistics.median(x / y for x, y in zip(results["a"], results[other]))
                    print(f"  ratio a/{other}: {ratio:.3f} (of medians)   {rounds:.3f} (median of per-round ratios)")


if __name__ == "__main__":
    main()
