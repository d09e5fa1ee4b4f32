"""Resolve the step: sequence length, `[optim]` and `[train]` (the batch and the run's length)."""

from __future__ import annotations

import math

from ..schema import LaunchTable
from ..schema.train import MAX_STEPS
from .builder import PlanBuilder
from .model import max_positions
from .schedule import peak_lr


def sequence_settings(b: PlanBuilder) -> None:
    """How the training sequences are loaded, and their length (`data.seq_len`, a data setting) within the model's positions."""
    d = b.recipe.data
    b.key("num_workers", ("data", "num_workers"))
    b.key("pin_memory", ("data", "pin_memory"))
    positions, positions_key = max_positions(b)
    if positions is not None and d.seq_len > positions:
        b.error(
            ("data", "seq_len"),
            f"data.seq_len {d.seq_len} is longer than the model's {positions} positions",
            f"lower data.seq_len to at most {positions}"
            + (", or raise model.config.max_position_embeddings" if positions_key[-1] != "path" else ""),
        )


def optim_settings(b: PlanBuilder) -> None:
    """AdamW's settings; the peak LR as written or scaled with the batch (`optim.scaling`)."""
    b.section("optim")
    lr, lr_note = peak_lr(b.recipe)
    if lr_note is None:
        b.key("lr", ("optim", "lr"))
    else:
        b.derived("lr", lr, lr_note)
        if lr > 1:
            b.error(("optim", "scaling"), f"batch-size scaling gives a peak LR of {lr:g}, above 1", "check the reference")
    for k in ("betas", "eps", "weight_decay", "grad_clip"):
        b.key(k, ("optim", k))


def train_settings(b: PlanBuilder) -> None:
    """The batch as micro-batches x accumulation x processes, and the run's length in steps.

    An epoch count leaves the length to the data: the script computes it (a formula).
    """
    r = b.recipe
    t, d, launch = r.train, r.data, r.launch
    b.section("train")
    b.key("micro_batch_size", ("train", "micro_batch_size"))
    b.key("batch_size", ("train", "batch_size"))
    # batch_size = micro_batch_size x grad_accum_steps x world size (launch.num_processes, all machines)
    per_step = t.micro_batch_size * launch.num_processes
    world = f"launch.num_processes {launch.num_processes}{machines_note(launch)}"
    if t.batch_size % per_step:
        lower = max(per_step, t.batch_size // per_step * per_step)
        b.error(
            ("train", "batch_size"),
            f"train.batch_size {t.batch_size} is not a multiple of micro_batch_size {t.micro_batch_size} * {world} = {per_step}",
            f"batch_size = micro_batch_size x grad_accum_steps x num_processes: use batch_size = {lower} "
            f"(grad_accum_steps {lower // per_step}) or {lower + per_step} (grad_accum_steps {lower // per_step + 1}), "
            "or change micro_batch_size",
        )
    grad_accum = max(1, t.batch_size // per_step)
    b.derived(
        "grad_accum_steps",
        grad_accum,
        f"derived: batch_size {t.batch_size} / (micro_batch_size {t.micro_batch_size} * num_processes "
        f"{launch.num_processes}{machines_note(launch)})",
    )
    tokens_per_step = t.batch_size * d.seq_len
    b.derived("tokens_per_step", tokens_per_step, f"derived: batch_size {t.batch_size} * seq_len {d.seq_len}")

    if t.max_steps is not None:
        b.key("max_steps", ("train", "max_steps"))
    elif t.tokens is not None:
        max_steps = math.ceil(t.tokens / tokens_per_step)
        b.derived("max_steps", max_steps, f"derived: ceil(train.tokens {t.tokens} / tokens_per_step {tokens_per_step})")
        if max_steps > MAX_STEPS:
            b.error(
                ("train", "tokens"),
                f"`train.tokens` {t.tokens:,} makes {max_steps:,} optimizer steps of {tokens_per_step:,} tokens; "
                f"a run has at most {MAX_STEPS:,}",
                "raise train.batch_size or data.seq_len, or train on fewer tokens",
            )
    else:
        b.key("epochs", ("train", "epochs"))
        b.formula("steps_per_epoch", "len(train_sets[0]) // batch_size", "derived: training sequences // batch_size")
        b.formula("max_steps", "math.ceil(epochs * steps_per_epoch)", "derived: ceil(train.epochs * steps_per_epoch)")
    for k in ("log_every", "eval_every", "eval_batches", "eval_generations", "max_new_tokens", "save_every", "keep_last"):
        b.key(k, ("train", k))
    if t.eval_generations and not b.get("examples"):
        b.error(("train", "eval_generations"), "generations come from held-out examples, and every source's records are text")
    if t.eval_generations and r.launch.strategy == "fsdp":
        b.error(("train", "eval_generations"), "generating from a sharded model (FSDP) is not supported", "set eval_generations = 0")
    if d.eval_fraction == 0 and t.eval_every > 0 and not any(src.split == "eval" for src in d.sources):
        b.warn(("train", "eval_every"), "data.eval_fraction is 0: there is no held-out split, so no evaluation runs")


def machines_note(launch: LaunchTable) -> str:
    """` (2 machines x 4)` after a process count spread over machines; empty on one machine."""
    if launch.num_machines == 1:
        return ""
    return f" ({launch.num_machines} machines x {launch.num_processes // launch.num_machines})"
