"""Resolve the step: sequence length, `[optim]` and `[train]` (the batch and the run's length)."""

from __future__ import annotations

import difflib
import math

from ..runtime.data import crosses_packed
from ..runtime.stopping import greater_is_better  # stdlib only
from ..schema import LaunchTable, Recipe
from ..schema.optim import own_options
from ..schema.train import MAX_STEPS, cadence_epochs
from .builder import PlanBuilder
from .launch import _model_type, data_parallel_size, mesh_note
from .model import max_positions
from .schedule import peak_lr


def sequence_settings(b: PlanBuilder) -> None:
    """How the training sequences are loaded, and their length (`data.seq_len`, a data setting) within the model's positions."""
    d = b.recipe.data
    b.key("num_workers", ("data", "num_workers"))
    b.key("pin_memory", ("data", "pin_memory"))
    b.key("persistent_workers", ("data", "persistent_workers"))
    b.key("prefetch_factor", ("data", "prefetch_factor"))
    if not d.cross_document_attention:
        b.key("cross_document_attention", ("data", "cross_document_attention"))
    if b.get("examples"):
        path = ("data", "pad_to_multiple_of")
        b.add("pad_to_multiple_of", d.pad_to_multiple_of, "data.pad_to_multiple_of (unset: each micro-batch padded to its longest row)", b.origin(path))
    _packed_rows(b)
    positions, positions_key = max_positions(b)
    if positions is not None and d.seq_len > positions:
        b.error(
            ("data", "seq_len"),
            f"data.seq_len {d.seq_len} is longer than the model's {positions} positions",
            f"lower data.seq_len to at most {positions}"
            + (", or raise model.config.max_position_embeddings" if positions_key[-1] != "path" else ""),
        )


def packed_rows(recipe: Recipe, examples: bool) -> str | None:
    """What puts several sequences kept apart by position ids into one row: "documents" (packed text under
    cross_document_attention = false), "pairs" (a preference pair's two sides; a reward model and Ulysses put each
    side in a row of its own), "examples" (packed examples), or None. The compiler and the script's guard read it."""
    if not recipe.data.cross_document_attention:
        return "documents"
    if recipe.preference is not None:
        split = recipe.launch.parallelism is not None and recipe.launch.parallelism.sp_size > 1
        return "pairs" if recipe.preference.objective != "reward" and not split else None
    return "examples" if examples and recipe.data.packing else None


def _packed_rows(b: PlanBuilder) -> None:
    """Packed rows need a model type whose causal-LM class honours their position ids (runtime.data.CROSSES_PACKED)."""
    kind = packed_rows(b.recipe, b.get("examples"))
    model_type, model_key = _model_type(b)
    problem = crosses_packed(model_type) if kind is not None and model_type is not None else None
    if problem is None:
        return
    if kind == "documents":
        b.error(("data", "cross_document_attention"), f"{problem}, so the documents would still see one another", "remove cross_document_attention")
    elif kind == "pairs":
        b.error(
            model_key,
            f"{problem}, and a preference pair is one row, the rejected side after the chosen: it would see the chosen one",
            'use a model type that honours position ids (llama, qwen3, gemma3_text, ...), or objective = "reward", which scores each side in a row of its own',
        )
    else:
        b.error(("data", "packing"), f"{problem}, so packed examples would attend to one another", "set data.packing = false: one example a row, padded")


def optim_settings(b: PlanBuilder) -> None:
    """The optimizer and its options; the peak LR as written or scaled with the batch (`optim.scaling`)."""
    b.section("optim")
    r = b.recipe
    o = r.optim
    lr, lr_note = peak_lr(r)
    if lr_note is None:
        b.key("lr", ("optim", "lr"))
    else:
        b.derived("lr", lr, lr_note)
        if lr > 1:
            b.error(("optim", "scaling"), f"batch-size scaling gives a peak LR of {lr:g}, above 1", "check the reference")
    b.key("optimizer_name", ("optim", "name"))
    for k in ("weight_decay", "grad_clip", *own_options(o)):
        b.key(k, ("optim", k))
    if o.trainable != "all":
        b.add("trainable", o.trainable.model_dump(), "optim.trainable; `recipec check` counts what trains", b.origin(("optim", "trainable")))
        if r.peft is not None:
            b.error(
                ("optim", "trainable"),
                f"[peft] trains the adapter ({r.peft.method}) and freezes the model, so optim.trainable has nothing to choose from",
                "remove optim.trainable, or [peft] to train the parameters it picks in full (peft.modules_to_save trains whole modules beside the adapter)",
            )
    if o.decay != "matrices" or o.groups:
        decay = o.decay if isinstance(o.decay, str) else o.decay.model_dump()
        b.add("param_decay", decay, "optim.decay", b.origin(("optim", "decay")))
        groups = [g.model_dump() for g in o.groups]
        b.add("param_groups", groups, "[[optim.groups]]; `recipec check` counts their parameters", b.origin(("optim", "groups")))
        if r.peft is not None and getattr(r.peft, "loraplus_lr_ratio", None) is not None:
            key = ("optim", "groups") if o.groups else ("optim", "decay")
            b.error(key, "LoRA+ builds its own parameter groups (peft.loraplus_lr_ratio)", "remove loraplus_lr_ratio, or give the LoRA B matrices their LR with a group: params = [\"*.lora_B.*\"]")
    if o.name in ("adamw_8bit", "paged_adamw_8bit") and r.launch.cpu:
        b.error(("optim", "name"), f"{o.name} is bitsandbytes' CUDA optimizer, and launch.cpu is set", 'use name = "adamw" on CPU')
    if o.name == "muon" and r.launch.strategy in ("fsdp", "deepspeed"):
        b.error(("optim", "name"), f"Muon orthogonalises whole matrices, which launch.strategy {r.launch.strategy!r} splits over processes", 'use strategy = "ddp" with Muon')
    if o.name != "adamw" and r.launch.strategy == "deepspeed":
        b.error(("optim", "name"), f"under DeepSpeed recipec runs AdamW only so far (its optimizer offload needs DeepSpeed's own Adam), and optim.name is {o.name!r}", 'use strategy = "ddp" or "fsdp"')
    if o.name == "schedule_free_adamw":
        s = r.schedule
        if s.phases is not None:
            b.error(("schedule", "phases"), "schedule-free AdamW replaces the decay: its schedule warms up and then stays constant", "remove the phases; keep schedule.warmup")
        elif s.decay != "constant":
            b.error(("schedule", "decay"), f'schedule-free AdamW replaces the decay, and schedule.decay is "{s.decay}"', 'set decay = "constant" (the warmup stays)')
    if r.peft is not None and getattr(r.peft, "loraplus_lr_ratio", None) is not None and o.name != "adamw":
        b.error(("peft", "loraplus_lr_ratio"), f"LoRA+ builds its parameter groups for AdamW, and optim.name is {o.name!r}", 'use name = "adamw", or remove loraplus_lr_ratio')


def train_settings(b: PlanBuilder) -> None:
    """The batch as micro-batches x accumulation x processes, and the run's length in steps.

    An epoch count leaves the length to the data: the script computes it (a formula).
    """
    r = b.recipe
    t, d, launch = r.train, r.data, r.launch
    b.section("train")
    b.key("micro_batch_size", ("train", "micro_batch_size"))
    b.key("batch_size", ("train", "batch_size"))
    # batch_size = micro_batch_size x grad_accum_steps x data-parallel ranks (launch.num_processes, all
    # machines, over the ranks of one tensor/context/sequence group, which see the same samples)
    dp = data_parallel_size(launch)
    per_step = t.micro_batch_size * dp
    world = f"launch.num_processes {launch.num_processes}{machines_note(launch)}"
    ranks = "num_processes"
    if dp != launch.num_processes:
        world = f"data-parallel ranks {dp} (launch.{mesh_note(launch)}{machines_note(launch)})"
        ranks = "data-parallel ranks"
        b.derived("data_parallel_size", dp, f"derived: {mesh_note(launch)}: the ranks of one group see the same samples")
    if t.batch_size % per_step:
        lower = max(per_step, t.batch_size // per_step * per_step)
        b.error(
            ("train", "batch_size"),
            f"train.batch_size {t.batch_size} is not a multiple of micro_batch_size {t.micro_batch_size} * {world} = {per_step}",
            f"batch_size = micro_batch_size x grad_accum_steps x {ranks}: use batch_size = {lower} "
            f"(grad_accum_steps {lower // per_step}) or {lower + per_step} (grad_accum_steps {lower // per_step + 1}), "
            "or change micro_batch_size",
        )
    grad_accum = max(1, t.batch_size // per_step)
    if dp != launch.num_processes:
        note = f"derived: batch_size {t.batch_size} / (micro_batch_size {t.micro_batch_size} * data_parallel_size {dp})"
    else:
        note = (
            f"derived: batch_size {t.batch_size} / (micro_batch_size {t.micro_batch_size} * num_processes "
            f"{launch.num_processes}{machines_note(launch)})"
        )
    b.derived("grad_accum_steps", grad_accum, note)
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
    for k in ("log_every", "eval_every", "eval_at_start", "eval_batches", "eval_generations", "max_new_tokens", "save_every", "keep_last"):
        if cadence_epochs(getattr(t, k)) is None:
            b.key(k, ("train", k))
    epoch_cadences(b)
    if t.eval_micro_batch_size is None:
        b.derived("eval_micro_batch_size", t.micro_batch_size, "derived: train.micro_batch_size (train.eval_micro_batch_size unset)")
    else:
        b.key("eval_micro_batch_size", ("train", "eval_micro_batch_size"))
    if t.eval_generations and not b.get("examples"):
        b.error(("train", "eval_generations"), "generations come from held-out examples, and every source's records are text")
    if t.eval_generations and r.launch.strategy == "fsdp" and r.launch.fsdp is not None and r.launch.fsdp.version == 1:
        b.error(
            ("train", "eval_generations"),
            "generating from FSDP version 1's flattened shards is not supported",
            "use launch.fsdp.version = 2 (each process then generates from the shards), or set eval_generations = 0",
        )
    if t.neftune_noise_alpha is not None:
        b.key("neftune_noise_alpha", ("train", "neftune_noise_alpha"))
        if r.preference is not None:
            b.error(
                ("train", "neftune_noise_alpha"),
                "NEFTune's noise would change the log-probabilities a [preference] objective compares (and, under [peft], "
                "the reference's, which the same embeddings compute)",
                "remove neftune_noise_alpha (it is for supervised fine-tuning)",
            )
    if r.optim.step_in_backward:
        step_in_backward_settings(b, grad_accum)
    held_out = d.eval_fraction != 0 or any(src.split == "eval" for src in d.sources)
    if not held_out and t.eval_every != 0:
        b.warn(("train", "eval_every"), "data.eval_fraction is 0: there is no held-out split, so no evaluation runs")
    if t.early_stopping_patience is not None:
        _needs_evaluations(b, held_out, ("train", "early_stopping_patience"), "early stopping counts")
        b.key("early_stopping_patience", ("train", "early_stopping_patience"))
        b.key("early_stopping_threshold", ("train", "early_stopping_threshold"))
    if r.output.save_best:
        _needs_evaluations(b, held_out, ("output", "save_best"), "output.save_best keeps the model of the best of")
        b.key("save_best", ("output", "save_best"))
    best_metric_settings(b)


def best_metric_settings(b: PlanBuilder) -> None:
    """`train.best_metric` and `greater_is_better`: a metric the run logs at its evaluations, watched by early
    stopping and save_best (plan keys only when one of them is on, so other builds' scripts do not change)."""
    r = b.recipe
    t = r.train
    watched = t.early_stopping_patience is not None or r.output.save_best
    # against the defaults, not the keys written: resolved.toml writes every key
    changed = [k for k in ("best_metric", "greater_is_better") if getattr(t, k) != type(t).model_fields[k].default]
    if not watched:
        for k in changed:
            b.error(("train", k), f"train.{k} is for early stopping and output.save_best, and neither is set", "set train.early_stopping_patience or output.save_best = true, or remove the key")
        return
    logged = evaluation_metrics(r)
    if t.best_metric not in logged:
        near = difflib.get_close_matches(t.best_metric, logged, n=1)
        b.error(
            ("train", "best_metric"),
            f"this run's evaluations log no {t.best_metric!r}" + (f"; did you mean {near[0]!r}?" if near else ""),
            "it logs " + ", ".join(logged),
        )
    b.key("best_metric", ("train", "best_metric"))
    if t.greater_is_better is None:
        greater = greater_is_better(t.best_metric)
        b.derived("greater_is_better", greater, f"derived: {t.best_metric} " + ("is no loss: higher is better" if greater else "ends in loss: lower is better"))
    else:
        b.key("greater_is_better", ("train", "greater_is_better"))


def evaluation_metrics(r: Recipe) -> list[str]:
    """The metrics.jsonl keys of this run's evaluations (during the run), in the order of the script's loaders."""
    losses = ["eval_loss"] + [f"eval_loss_{src.name}" for src in r.data.sources if src.split == "eval" and src.name]
    if r.continual is not None and r.continual.eval_parent and r.preference is None:
        losses.append("eval_loss_parent")
    p = r.preference
    if p is None:
        return losses
    from .preference import UNPAIRED

    if p.objective == "reward":
        stats = ["rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy"]
    else:
        stats = ["rewards_chosen", "rewards_rejected", "logps_chosen", "logps_rejected", "reward_margin"]
        stats += ["kl"] if p.objective == "kto" else [] if p.objective in UNPAIRED else ["reward_accuracy"]
    if getattr(p, "sft_weight", 0):
        stats.append("sft_nll")
    return losses + [key.replace("_loss", "", 1) + "_" + s for key in losses for s in stats]


def _needs_evaluations(b: PlanBuilder, held_out: bool, where: tuple[str, ...], what: str) -> None:
    """A setting on the held-out loss (early stopping, save_best): the evaluations during the run must exist."""
    key = where[-1]
    if not held_out:
        b.error(where, f"{what} the evaluations of the held-out loss, and there is no held-out split (data.eval_fraction is 0 and no source has split = \"eval\")", f"set data.eval_fraction, e.g. 0.05, or remove {key}")
    elif b.recipe.train.eval_every == 0:
        b.error(where, f"{what} the evaluations during the run, and train.eval_every is 0 (only the end is evaluated)", f"set train.eval_every, e.g. 100 or \"1 epoch\", or remove {key}")


def epoch_cadences(b: PlanBuilder) -> None:
    """`eval_every` and `save_every` given in epochs: steps the script derives from the loaded data.

    steps_per_epoch is the same figure `train.epochs` uses (training rows // batch_size), so
    "1 epoch" falls on each epoch's last step. The fraction is kept as integer terms: an
    integer over an integer rounds correctly, so "1/3 epoch" of 30 steps is 10, never 11.
    """
    r = b.recipe
    t = r.train
    given = [(k, cadence_epochs(getattr(t, k))) for k in ("eval_every", "save_every")]
    given = [(k, e) for k, e in given if e is not None]
    if not given:
        return
    phased = [i for i, src in enumerate(r.data.sources) if src.phases is not None or src.phase_weights]
    if phased:
        k = given[0][0]
        b.error(
            ("train", k),
            f"`{k}` in epochs needs one pass over one set of training rows, and data.sources[{phased[0]}] changes the "
            "mixture between schedule phases (each phase has its own rows)",
            f"give {k} in steps",
        )
        return
    if t.epochs is None:
        b.formula("steps_per_epoch", "len(train_sets[0]) // batch_size", "derived: training rows // batch_size")
    for k, epochs in given:
        value = getattr(t, k)
        if epochs.denominator == 1:
            expr = "steps_per_epoch" if epochs == 1 else f"steps_per_epoch * {epochs.numerator}"
        else:
            expr = f"math.ceil(steps_per_epoch * {epochs.numerator} / {epochs.denominator})"
        # at least every step: fewer training rows than one batch would make 0, which turns the cadence off
        b.formula(k, f"max(1, {expr})", f'derived: ceil(train.{k} "{value}" * steps_per_epoch), at least 1')
        if t.epochs is not None and epochs >= t.epochs:
            what = "only the final model is saved" if k == "save_every" else (
                "evaluation runs " + ("before the first step and at the end" if t.eval_at_start else "at the end") + " only"
            )
            b.warn(("train", k), f'{k} "{value}" is not shorter than the run (train.epochs {t.epochs:g}): {what}')


def step_in_backward_settings(b: PlanBuilder, grad_accum: int) -> None:
    """`optim.step_in_backward`, and what it cannot run with.

    Each parameter steps when its gradient is finished (recipec_runtime/optimizers.py
    StepInBackward), so nothing may need the whole gradient first: clipping, accumulation over
    micro-batches, fp16's loss scaler, AdaLoRA's rank budget. The gradient must be final when it
    is finished: FSDP 2 reduce-scatters it before the hook, DDP and DeepSpeed average it after.
    """
    r = b.recipe
    o, launch = r.optim, r.launch
    key = ("optim", "step_in_backward")
    b.key("step_in_backward", key)
    why = "optim.step_in_backward steps each parameter as soon as its gradient is finished"
    if o.grad_clip > 0:
        b.error(
            key,
            f"{why}, before the global norm that optim.grad_clip {o.grad_clip:g} clips to is known",
            "set optim.grad_clip = 0 (the script still logs the gradient norm), or remove step_in_backward",
        )
    if grad_accum > 1:
        dp = data_parallel_size(launch)
        per_step = r.train.micro_batch_size * dp
        b.error(
            key,
            f"{why}, so every micro-batch would be a step, and train.batch_size {r.train.batch_size} takes "
            f"grad_accum_steps {grad_accum} micro-batches of {per_step} sequences over the processes",
            f"set train.batch_size = {per_step} (one micro-batch a step), or raise micro_batch_size to {r.train.batch_size // dp}",
        )
    if launch.strategy == "deepspeed":
        b.error(key, f"{why}, and DeepSpeed steps its own optimizer inside its engine", 'use strategy = "fsdp" (version 2), or remove step_in_backward')
    elif launch.strategy == "fsdp" and (launch.fsdp is not None and launch.fsdp.version == 1):
        b.error(key, f"{why}, and FSDP version 1 hands the gradients back as flat shards after the backward pass", "set [launch.fsdp] version = 2")
    elif launch.strategy == "ddp" and launch.num_processes > 1:
        b.error(
            key,
            f"{why}, and under DDP over {launch.num_processes} processes it would step before DDP has averaged the gradient over them",
            'use strategy = "fsdp" (FSDP 2 steps each shard after its reduce-scatter), or one process',
        )
    mesh = launch.parallelism
    if launch.strategy == "fsdp" and launch.fsdp is not None and launch.fsdp.sharding_strategy == "hybrid_shard":
        b.error(
            ("launch", "fsdp", "sharding_strategy"),
            "optim.step_in_backward measures the gradient norm over the shards of plain FSDP 2, and hybrid_shard keeps a replica of them on each machine",
            'use sharding_strategy = "full_shard", or remove step_in_backward',
        )
    if mesh is not None and launch.strategy == "fsdp":
        split = [f"{k} {getattr(mesh, k)}" for k in ("tp_size", "cp_size", "dp_replicate_size") if getattr(mesh, k) > 1]
        if split:
            b.error(
                ("launch", "parallelism"),
                f"optim.step_in_backward measures the gradient norm over the shards of plain FSDP 2, and launch.parallelism sets {', '.join(split)}",
                "remove step_in_backward, or set those sizes to 1",
            )
    if launch.mixed_precision == "fp16":
        b.error(key, f"{why}, and fp16's loss scaler must see every gradient (to unscale it, and to skip a step on an overflow) first", 'use launch.mixed_precision = "bf16"')
    if r.peft is not None and r.peft.method == "adalora":
        b.error(key, f"{why} and frees it, and AdaLoRA scores its ranks from all the gradients after the step", "remove step_in_backward, or use another peft.method")
    if o.name == "schedule_free_adamw":
        b.error(key, f"{why}, and schedule-free AdamW counts its steps per parameter group (each parameter's step would count as one)", 'use another optim.name, e.g. "adamw"')


def machines_note(launch: LaunchTable) -> str:
    """` (2 machines x 4)` after a process count spread over machines; empty on one machine."""
    if launch.num_machines == 1:
        return ""
    return f" ({launch.num_machines} machines x {launch.num_processes // launch.num_machines})"
