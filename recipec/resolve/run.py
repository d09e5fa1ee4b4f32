"""Resolve `[recipe]` and `[output]`: the run's name, seed and output directory, and the build directory."""

from __future__ import annotations

import re

from ..diagnostics import Diagnostic
from ..schema import Recipe
from .builder import PlanBuilder

PLAIN_PATH = re.compile(r"^[\w./+@:~-]+$")
"""Paths that may be written into a generated docstring and shell line as they are."""


def default_build_dir(recipe: Recipe) -> str:
    """build/<recipe.name>, relative to the project directory."""
    return f"build/{recipe.recipe.name}"


def run_settings(b: PlanBuilder) -> None:
    """The run's identity and where it writes; the build directory must fit a shell line."""
    r = b.recipe
    if not PLAIN_PATH.match(b.build_dir):
        b.errors.append(
            Diagnostic(
                "error",
                f"build directory {b.build_dir!r} has characters that cannot go into the generated launch command",
                None,
                "choose a build directory (-o) of letters, digits and ./_-+@:~",
            )
        )
    b.section("run")
    b.key("name", ("recipe", "name"))
    b.key("description", ("recipe", "description"))
    b.key("seed", ("recipe", "seed"))
    if r.output.dir is not None:
        b.key("output_dir", ("output", "dir"))
    else:
        b.derived("output_dir", f"runs/{r.recipe.name}", "derived: runs/<recipe.name>")
    b.key("trackers", ("output", "trackers"))
