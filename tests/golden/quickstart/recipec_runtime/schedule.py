"""Learning-rate schedules as plain multipliers of the peak learning rate.

The generated training script wraps :func:`lr_lambda` in
``torch.optim.lr_scheduler.LambdaLR``. The formulas reproduce transformers'
``get_*_schedule_with_warmup`` helpers exactly (same step convention, same
warmup) so recipes behave like the schedules people already know, while this
module stays stdlib-only: the compiler imports it (to preview or validate a
schedule) and must never import torch.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

DECAYS = ("cosine", "linear", "constant")


def _check_ratio(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _check_step(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _validate(max_steps: int, warmup_steps: int, decay: str, min_lr_ratio: float, warmup_start_ratio: float) -> None:
    if decay not in DECAYS:
        raise ValueError(f"unknown decay {decay!r}; expected one of {', '.join(DECAYS)}")
    _check_step("max_steps", max_steps)
    _check_step("warmup_steps", warmup_steps)
    if warmup_steps > max_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must not exceed max_steps ({max_steps})")
    _check_ratio("min_lr_ratio", min_lr_ratio)
    _check_ratio("warmup_start_ratio", warmup_start_ratio)


def lr_multiplier(
    step: int,
    *,
    max_steps: int,
    warmup_steps: int,
    decay: str,
    min_lr_ratio: float = 0.0,
    warmup_start_ratio: float = 0.0,
) -> float:
    """Return the fraction of the peak learning rate used at an optimizer step.

    ``step`` is 0-based: step 0 is the first optimizer update. This is the
    convention of ``LambdaLR`` and of transformers' schedulers, so with the
    default ratios the learning rate at step 0 is 0 when there is warmup.

    During warmup (``step < warmup_steps``) the multiplier rises linearly from
    ``warmup_start_ratio``. Afterwards ``progress = (step - warmup_steps) /
    (max_steps - warmup_steps)`` goes from 0 to 1 (clamped to 1 past
    ``max_steps``, where transformers' cosine would rise again) and the
    multiplier decays to ``min_lr_ratio``: ``cosine`` follows half a cosine,
    ``linear`` falls as ``1 - progress``, ``constant`` stays at 1.

    Args:
        step: 0-based optimizer step.
        max_steps: Total number of optimizer steps of the run.
        warmup_steps: Number of linear-warmup steps (0 for none).
        decay: One of :data:`DECAYS`: ``"cosine"``, ``"linear"`` or ``"constant"``.
        min_lr_ratio: Final multiplier reached at ``max_steps`` (cosine and
            linear decays), in [0, 1].
        warmup_start_ratio: Multiplier at step 0 of the warmup, in [0, 1].

    Returns:
        The multiplier, a float in ``[min(min_lr_ratio, warmup_start_ratio), 1]``.

    Raises:
        ValueError: On an unknown decay, negative steps, ``warmup_steps >
            max_steps`` or a ratio outside [0, 1].
    """
    _validate(max_steps, warmup_steps, decay, min_lr_ratio, warmup_start_ratio)
    _check_step("step", step)

    if step < warmup_steps:
        value = warmup_start_ratio + (1.0 - warmup_start_ratio) * float(step) / float(max(1, warmup_steps))
        return min(1.0, value)

    if decay == "constant":
        return 1.0

    span = float(max(1, max_steps - warmup_steps))
    if decay == "cosine":
        progress = min(1.0, max(0.0, float(step - warmup_steps) / span))
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:  # linear; written as transformers does, (T - s) / (T - W), so it
        # agrees bit for bit, including the step-T edge when warmup == max_steps
        shape = min(1.0, max(0.0, float(max_steps - step) / span))
    value = min_lr_ratio + (1.0 - min_lr_ratio) * shape
    return min(1.0, max(min_lr_ratio, value))


def lr_lambda(**kwargs) -> Callable[[int], float]:
    """Bind schedule parameters into a ``step -> multiplier`` callable.

    Suitable for ``torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(...))``.
    The arguments are validated immediately, so a bad recipe fails before
    training starts rather than at the first scheduler step. The result is a
    ``functools.partial``, which pickles and survives ``LambdaLR.state_dict()``.

    Args:
        **kwargs: The keyword arguments of :func:`lr_multiplier` (all but ``step``).

    Returns:
        A callable mapping a 0-based step to the LR multiplier.

    Raises:
        ValueError: If the arguments are invalid (see :func:`lr_multiplier`).
        TypeError: On unexpected or missing keyword arguments.
    """
    fn = functools.partial(lr_multiplier, **kwargs)
    fn(0)  # validate now
    return fn
