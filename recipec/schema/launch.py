"""`[launch]`: how `accelerate launch` starts the training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Table, key_error


class LaunchTable(Table):
    """`[launch]`"""

    num_processes: int = Field(1, ge=1)
    """Training processes (one per GPU). On CPU, more than one runs data-parallel over gloo."""

    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision of the forward pass. bf16 needs a GPU (or CPU) that supports it; checked when the script starts."""

    cpu: bool = False
    """Train on the CPU even when a GPU is present."""

    hub_offline: bool = True
    """Set HF_HUB_OFFLINE=1 so that nothing is downloaded during training; models and tokenizers must be local or already cached."""

    @model_validator(mode="after")
    def check_precision_on_cpu(self) -> LaunchTable:
        if self.cpu and self.mixed_precision == "fp16":
            raise key_error(
                "mixed_precision",
                "fp16 mixed precision needs a GPU, and launch.cpu is true",
                'use mixed_precision = "bf16" or "no" on CPU',
            )
        return self
