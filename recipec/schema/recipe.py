"""`[recipe]`: what the run is called and how it is seeded."""

from __future__ import annotations

from pydantic import Field

from .base import Table


class RecipeTable(Table):
    """`[recipe]`"""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    """Name of the run. Names the build directory (build/<name>) and the default output directory (runs/<name>). Letters, digits, `.`, `_` and `-`."""

    description: str = ""
    """Free text for reviewers; recorded in the generated script and in the run's run.json."""

    seed: int = Field(1234, ge=0, lt=2**32)
    """Seed for every random number generator: python, numpy, torch, the model's initialisation, dropout and, unless `data.seed` is set, the data (the held-out split, the mixture's sampling, the documents' and the loader's order)."""
