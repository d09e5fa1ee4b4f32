"""`[optim]`: the optimizer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Table, key_error


class LrScaling(Table):
    """`[optim.scaling]`: derive the peak LR from one that worked at another global batch size."""

    reference_batch: int = Field(ge=1)
    """The global batch size (sequences) at which `reference_lr` was tuned."""

    reference_lr: float = Field(gt=0, le=1)
    """The peak LR tuned at `reference_batch`."""

    rule: Literal["linear", "sqrt", "none"] = "sqrt"
    """How the LR follows the batch: linear (lr grows with B/B0, the SGD rule), sqrt (with sqrt(B/B0), the Adam-family rule) or none."""


class OptimTable(Table):
    """`[optim]`"""

    name: Literal["adamw"] = "adamw"
    """Optimizer: AdamW (torch.optim.AdamW)."""

    lr: float = Field(3e-4, gt=0, le=1)
    """Peak learning rate; `[schedule]` scales it step by step. Derived instead when `scaling` is set."""

    scaling: LrScaling | None = None
    """Batch-size scaling, e.g. `scaling = {reference_batch = 256, reference_lr = 3e-4, rule = "sqrt"}`: the peak LR for `train.batch_size` is derived from the reference, and the derivation shows in `explain` and the lock."""

    betas: list[float] = Field([0.9, 0.95], min_length=2, max_length=2)
    """AdamW's (beta1, beta2)."""

    eps: float = Field(1e-8, gt=0)
    """AdamW's epsilon."""

    weight_decay: float = Field(0.1, ge=0)
    """Decoupled weight decay. Applied to matrices and embeddings, never to biases and norm weights (every 1-D parameter)."""

    grad_clip: float = Field(1.0, ge=0)
    """Clip the global gradient norm to this value before each step; 0 turns clipping off."""

    implementation: Literal["auto", "foreach", "fused", "for-loop"] = "auto"
    """How AdamW runs its update: auto lets torch choose (foreach on GPU), foreach batches the update over all tensors, fused does it in one kernel per device (GPU, and CPU in torch >= 2.4), for-loop one tensor at a time (least memory)."""

    @field_validator("betas")
    @classmethod
    def check_betas_below_one(cls, betas: list[float]) -> list[float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError("must hold two values in [0, 1)")
        return betas

    @model_validator(mode="after")
    def check_lr_or_scaling(self) -> OptimTable:
        if self.scaling is not None and "lr" in self.model_fields_set:
            raise key_error("lr", "set `lr` or `scaling`, not both: with scaling the peak LR is derived")
        return self
