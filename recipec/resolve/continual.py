"""Resolve `[continual]`: the parent run's identity and data, and how this run's schedule meets the parent's."""

from __future__ import annotations

import math

from ..runtime import schedule as runtime_schedule
from .builder import PlanBuilder
from .data import filter_dicts, source_dicts


def rewarm(b: PlanBuilder, lr: float) -> float | None:
    """Where a continual run's warmup starts, as a multiplier of its own peak `lr`."""
    recipe, parent = b.recipe, b.parent
    c = recipe.continual
    if "warmup_start_ratio" in recipe.schedule.model_fields_set:
        b.error(
            ("schedule", "warmup_start_ratio"),
            "with [continual] the warmup starts at continual.rewarm_from",
            'set continual.rewarm_from = 0.1 (a multiplier of the peak), or "parent" for the parent\'s LR',
        )
        return None
    if c.rewarm_from != "parent":
        return float(c.rewarm_from)
    ratio = parent.lr / lr
    if ratio > 1 + 1e-9:
        b.error(
            ("continual", "rewarm_from"),
            f"the parent's LR at step {parent.step} ({parent.lr:.6g}) is above this run's peak ({lr:.6g}): "
            "a rewarm from it would go down",
            "raise optim.lr, or set rewarm_from to a multiplier of the new peak",
        )
        return None
    return min(1.0, ratio)


def continual_settings(b: PlanBuilder) -> None:
    """The parent's identity and data, for lineage, replay and forgetting checks."""
    recipe, parent = b.recipe, b.parent
    c = recipe.continual
    if c is None or parent is None:
        return
    phases = b.get("schedule_phases")
    if c.continues and phases is not None:
        lr = b["lr"]
        first_lr = lr * runtime_schedule.multiplier(0, phases)
        if not math.isclose(first_lr, parent.lr, rel_tol=1e-6, abs_tol=1e-12):
            b.error(
                ("continual", "continues"),
                f"this run claims to continue the parent's schedule, but its first LR is {first_lr:.6g} "
                f"and the parent's at step {parent.step} is {parent.lr:.6g}",
                "match the peak (optim.lr) and the first phase's start to the parent, or drop `continues`",
            )
    pr = parent.recipe
    b.section("continual")
    b.add("parent_dir", parent.run_dir, "continual.from", b.origin(("continual", "from")))
    b.derived("parent_step", parent.step, f"derived: the parent's optimizer steps at {parent.model_dir}")
    b.derived("parent_lock_sha256", parent.lock_sha256, "derived: sha256 of the parent's recipe.lock.json")
    b.derived("parent_lr", parent.lr, "derived: the LR the parent used at that step (its schedule.csv)")
    b.derived("parent_sources", source_dicts(pr.data.sources), "derived: the parent's data.sources (resolved.toml)")
    b.derived("parent_filters", filter_dicts(pr), "derived: the parent's data.filters (resolved.toml)")
    b.derived("parent_eval_fraction", pr.data.eval_fraction, "derived: the parent's data.eval_fraction")
    parent_seed = pr.recipe.seed if pr.data.seed is None else pr.data.seed
    b.derived("parent_seed", parent_seed, "derived: the parent's data seed, data.seed or recipe.seed (its held-out split)")
    b.key("replay", ("continual", "replay"))
    b.key("eval_parent", ("continual", "eval_parent"))
    b.key("load_optimizer", ("continual", "optimizer"))
    if c.optimizer and parent.kind != "checkpoint":
        b.error(
            ("continual", "optimizer"),
            "optimizer state is kept in checkpoints only; the parent's final model has none",
            'point continual.from at a checkpoint: "<run>/checkpoints/step_..."',
        )
    if c.optimizer and pr.optim.name != recipe.optim.name:
        b.error(
            ("continual", "optimizer"),
            f"the parent trained with optim.name {pr.optim.name!r} and this run with {recipe.optim.name!r}: "
            "one optimizer's state does not load into the other",
            "set continual.optimizer = false, or use the parent's optimizer",
        )
    elif c.optimizer and (pr.optim.trainable, pr.optim.decay, pr.optim.groups) != (recipe.optim.trainable, recipe.optim.decay, recipe.optim.groups):
        b.error(
            ("continual", "optimizer"),
            "the parent's optim.trainable, optim.decay or [[optim.groups]] differ from this run's: its optimizer state holds other parameter groups",
            "set continual.optimizer = false, or use the parent's trainable, decay and groups",
        )
    if pr.data.seq_len != recipe.data.seq_len and (c.replay or c.eval_parent):
        b.warn(
            ("data", "seq_len"),
            f"data.seq_len {recipe.data.seq_len} differs from the parent's {pr.data.seq_len}: "
            "replayed and parent-eval sequences use this run's",
        )
