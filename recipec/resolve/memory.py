"""Resolve the peak-memory estimate (recipec/memory.py) and compare it with `launch.device_memory_gib`."""

from __future__ import annotations

from ..memory import check_ceiling, estimate, model_shape, trainable_counts
from .builder import PlanBuilder


def memory_estimate(b: PlanBuilder) -> None:
    """The peak-memory estimate, and a warning when it exceeds launch.device_memory_gib."""
    recipe = b.recipe
    ceiling = recipe.launch.device_memory_gib
    try:
        shape = model_shape(recipe, b.model_config)
        partial = recipe.optim.trainable != "all" and recipe.peft is None
        b.memory = estimate(shape, recipe, trainable_counts(recipe, b.model_config) if partial else None)
    except (ValueError, OverflowError) as exc:  # OverflowError: sizes past a float's range (intermediate_size = 10**400)
        if isinstance(exc, OverflowError):
            exc = ValueError(f"a size of the model is past what the estimate can count ({exc})")
        b.memory_unknown = str(exc)
        if ceiling is not None:
            b.warn(("launch", "device_memory_gib"), f"no memory estimate to compare with: {exc}")
        return
    if ceiling is not None and (message := check_ceiling(b.memory, ceiling)):
        # a warning, not an error: the estimate is approximate (see recipec/memory.py)
        b.warn(
            ("launch", "device_memory_gib"),
            message,
            "lower train.micro_batch_size, set model.gradient_checkpointing, or shard (launch.strategy)",
        )
