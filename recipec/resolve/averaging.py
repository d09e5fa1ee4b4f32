"""Resolve `[ema]` and `[merge]`: the EMA decay scaled to the batch, the merge window in optimizer steps."""

from __future__ import annotations

from .builder import PlanBuilder
from .schedule import ceil_product, steps_text


def averaging_settings(b: PlanBuilder) -> None:
    """EMA decay scaled to the batch; the merge window in optimizer steps."""
    recipe = b.recipe
    ema, merge = recipe.ema, recipe.merge
    if ema is None and merge is None:
        return
    max_steps = b.get("max_steps")
    b.section("averaging")
    if ema is not None:
        if ema.reference_batch is None:
            b.key("ema_decay", ("ema", "decay"))
        else:
            k = recipe.train.batch_size / ema.reference_batch
            b.derived(
                "ema_decay",
                ema.decay**k,
                f"derived: ema.decay {ema.decay} ** (batch_size {recipe.train.batch_size} / reference_batch {ema.reference_batch})",
            )
        b.key("ema_every", ("ema", "every"))
    if merge is not None:
        b.key("merge_every", ("merge", "every"))
        if isinstance(merge.window, float):
            if max_steps is None:
                b.key("merge_window", ("merge", "window"))
                b.formula(
                    "merge_first_step",
                    "max_steps - math.ceil(round(merge_window * max_steps, 6)) + 1",
                    "derived: the first step of the merge window (1-based)",
                )
                return
            window = ceil_product(merge.window, max_steps)
            note = f"derived: max_steps {max_steps} - ceil(merge.window {merge.window} * max_steps) + 1"
        else:
            window = merge.window
            note = f"derived: max_steps {max_steps} - merge.window {window} + 1"
        if max_steps is not None and window > max_steps:
            b.error(
                ("merge", "window"),
                f"the merge window ({steps_text(window)}) is longer than the run ({steps_text(max_steps)})",
            )
            return
        if max_steps is not None:
            first = max_steps - window + 1
            b.derived("merge_first_step", first, note)
            snapshots = max_steps // merge.every - (first - 1) // merge.every
            if snapshots == 0:
                b.error(
                    ("merge", "every"),
                    f"no step of the merge window (steps {first} to {max_steps}) is a multiple of merge.every {merge.every}",
                    "lengthen the window or take snapshots more often",
                )
            elif snapshots == 1:
                b.warn(
                    ("merge", "every"),
                    "the merge window holds 1 snapshot: nothing to average",
                    "lengthen the window or take snapshots more often",
                )
