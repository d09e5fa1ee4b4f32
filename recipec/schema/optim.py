"""`[optim]`: the optimizer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Table


class OptimTable(Table):
    """`[optim]`"""

    name: Literal["adamw"] = "adamw"
    """Optimizer: AdamW (torch.optim.AdamW)."""

    lr: float = Field(3e-4, gt=0, le=1)
    """Peak learning rate; `[schedule]` scales it step by step."""

    betas: list[float] = Field([0.9, 0.95], min_length=2, max_length=2)
    """AdamW's (beta1, beta2)."""

    eps: float = Field(1e-8, gt=0)
    """AdamW's epsilon."""

    weight_decay: float = Field(0.1, ge=0)
    """Decoupled weight decay. Applied to matrices and embeddings, never to biases and norm weights (every 1-D parameter)."""

    grad_clip: float = Field(1.0, ge=0)
    """Clip the global gradient norm to this value before each step; 0 turns clipping off."""

    @field_validator("betas")
    @classmethod
    def check_betas_below_one(cls, betas: list[float]) -> list[float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError("must hold two values in [0, 1)")
        return betas
