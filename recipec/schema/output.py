"""`[output]`: where the run writes checkpoints, metrics and the final model."""

from __future__ import annotations

from pydantic import Field

from .base import Table


class OutputTable(Table):
    """`[output]`"""

    dir: str | None = Field(None, min_length=1)
    """Run directory, relative to the directory `recipec` runs in. Unset: runs/<recipe.name>."""
