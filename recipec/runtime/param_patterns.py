"""The forms a parameter pattern takes (`optim.trainable`, `optim.decay`, `[[optim.groups]]`).

A pattern is one of:

* a named set: ``embeddings``, ``output``, ``norms``, ``biases`` (recipec_runtime/optimizers.py
  says which parameters each holds);
* decoder layers by index: ``layers[-2:]`` (the last two), ``layers[0]``, ``layers[4:8]``,
  optionally followed by a glob on the parameter's name within the layer:
  ``layers[:4].mlp.*``. The layers are the model's transformer blocks (the classes of its
  ``_no_split_modules``, the blocks FSDP wraps), in the order the model runs them; the index
  is Python's (negative counts from the end, a slice past the end stops there);
* any other text: an fnmatch glob on the names ``model.named_parameters()`` gives.

This module only parses; it imports nothing heavier than ``re``, so the recipe's validation
reads the same rules the training script applies.
"""

from __future__ import annotations

import re

NAMED = ("embeddings", "output", "norms", "biases")
"""The parameter sets a pattern can name by word."""

_LAYERS = re.compile(r"layers\[(?P<index>[^\]]*)\](?:\.(?P<glob>.+))?")
_INDEX = re.compile(r"\s*(-?\d+)?\s*")


def layer_pattern(pattern: str) -> tuple[slice, str] | None:
    """``layers[SLICE]`` or ``layers[SLICE].GLOB`` as (the slice, the glob; ``*`` when none), or
    None for a pattern of another form.

    Raises:
        ValueError: a pattern that starts ``layers[`` and is not of this form.
    """
    if not pattern.startswith("layers["):
        return None
    match = _LAYERS.fullmatch(pattern)
    if match is None:
        raise ValueError(f"holds {pattern!r}: write layers[INDEX] or layers[START:STOP], optionally followed by .GLOB (layers[-2:].mlp.*)")
    parts = match["index"].split(":")
    numbers = [_INDEX.fullmatch(p) for p in parts]
    if len(parts) > 2 or any(m is None for m in numbers) or (len(parts) == 1 and numbers[0][1] is None):  # type: ignore[index]
        raise ValueError(f"holds {pattern!r}: a layer index is an integer (layers[0], layers[-1]) or a slice of integers (layers[-2:], layers[4:8])")
    values = [int(m[1]) if m[1] is not None else None for m in numbers]  # type: ignore[index]
    if len(values) == 1:
        index = values[0]
        assert index is not None
        chosen = slice(index, index + 1 if index != -1 else None)
    else:
        chosen = slice(values[0], values[1])
    return chosen, match["glob"] or "*"


def check(pattern: str) -> None:
    """Raise ValueError for a pattern that cannot be read (an empty one, a malformed ``layers[...]``)."""
    if not pattern.strip():
        raise ValueError("holds an empty pattern")
    layer_pattern(pattern)
