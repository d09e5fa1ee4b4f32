"""The data stage's request: the settings the stage takes, declared once.

Each setting has one name from the recipe to the stage: the `[data]` key (or, for the
few that resolve derives, the plan setting), the generated script's variable and the
field of the stage's request are spelt alike, so one grep finds them all. The names
below are the only list of them:

* resolve emits the :data:`DATA_FIELDS` as they are from the recipe's `[data]` table
  (``recipec/resolve_data.py``), beside the settings it derives;
* the training script passes every one of :data:`FIELDS` by name (its template loops
  over them) to :func:`request_from_settings`, and ``recipec data`` passes the plan's
  values of the same names, so both build the same request and find the same cache
  entry;
* :func:`make_spec` keeps the :data:`SPEC_FIELDS`, which decide the stage's output and
  so its cache key.

A new data setting is thus a field of the `[data]` model, its name here, and the code of
the stage that uses it. Standard library only: the compiler imports this module, and it
never imports numpy or torch.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

STAGE_VERSION = 1
"""Part of every spec (and so of every cache key): raise it when the stage's output changes for the same settings."""

DATA_FIELDS = (
    "temperature",
    "on_exhausted",
    "num_proc",
    "executor",
    "ray_address",
    "cache_dir",
    "count_dropped_tokens",
    "seq_len",
    "packing",
    "eval_fraction",
    "max_length",
    "overflow",
)
"""Keys of the recipe's `[data]` table that reach the stage as they are, under the same name."""

TOKENIZER_FIELDS = ("tokenizer_path", "tokenizer_train", "model_revision", "trust_remote_code", "chat_template", "special_tokens")
"""The tokenizer the stage loads (``tokenizer_path`` at ``model_revision``) or trains (``tokenizer_train``), with
the recipe's chat markers (``special_tokens``) and ``chat_template`` (its text) added."""

FIELDS = ("data_seed", "sources", "filters", *DATA_FIELDS, "segments", *TOKENIZER_FIELDS)
"""Every setting of a request, in the order of the script's config block.

``data_seed`` is ``data.seed``, else ``recipe.seed`` (the spec's ``seed``); ``sources`` and ``filters`` are `[[data.sources]]` and
`[[data.filters]]` with every default spelled out; ``segments`` is one
``{"sources": [indices], "weights": [floats] | None, ...}`` per stretch of the schedule
with one mixture.
"""

RUN_FIELDS = ("cache_dir", "num_proc", "executor", "ray_address")
"""Where the stage keeps its output and what it runs on (processes, a Ray cluster): not part of the spec."""

SPEC_FIELDS = tuple(name for name in FIELDS if name not in RUN_FIELDS and name not in TOKENIZER_FIELDS)
"""What decides the stage's output (with the tokenizer and the data's content): the spec."""


def make_spec(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The spec of a stage run: the :data:`SPEC_FIELDS` of ``settings``, in plain JSON types.

    A segment keeps only its ``sources`` and ``weights``: where it sits in the schedule
    does not change the sequences.

    Raises:
        KeyError: naming the settings that ``settings`` lacks.
    """
    _check_present(settings, SPEC_FIELDS)
    spec: dict[str, Any] = {"version": STAGE_VERSION}
    spec.update({("seed" if name == "data_seed" else name): settings[name] for name in SPEC_FIELDS})  # the spec's name: "seed"
    spec.update(
        seed=int(settings["data_seed"]),
        sources=[dict(s) for s in settings["sources"]],
        filters=[dict(f) for f in settings["filters"]],
        eval_fraction=float(settings["eval_fraction"]),
        seq_len=int(settings["seq_len"]),
        packing=bool(settings["packing"]),
        segments=[{"sources": list(s["sources"]), "weights": s.get("weights")} for s in settings["segments"]],
        count_dropped_tokens=bool(settings["count_dropped_tokens"]),
    )
    return spec


def local_path(path: str, project_dir: str | os.PathLike) -> str:
    """A path from the recipe (./, ../, /, ~) resolved against the project; a hub id as is."""
    if path.startswith(("./", "../", "/", "~")):
        return str((pathlib.Path(project_dir) / pathlib.Path(path).expanduser()).resolve())
    return path


def request_from_settings(settings: Mapping[str, Any], project_dir: str | os.PathLike) -> dict[str, Any]:
    """A stage request from a recipe's resolved settings (every name of :data:`FIELDS`).

    Returns:
        ``{"spec", "project_dir", "cache_dir", "tokenizer", "num_proc", "executor", "ray_address"}``; ``tokenizer``
        is ``{"path", "revision", "trust_remote_code"}`` or ``{"train": {...}}``.

    Raises:
        KeyError: naming the settings that ``settings`` lacks.
    """
    _check_present(settings, FIELDS)
    if settings["tokenizer_train"] is not None:
        tokenizer: dict[str, Any] = {"train": dict(settings["tokenizer_train"])}
    else:
        tokenizer = {
            "path": local_path(settings["tokenizer_path"], project_dir),
            "revision": settings["model_revision"],
            "trust_remote_code": bool(settings["trust_remote_code"]),
        }
    tokenizer.update(chat_template=settings["chat_template"], special_tokens=list(settings["special_tokens"]))
    return {
        "spec": make_spec(settings),
        "project_dir": str(pathlib.Path(project_dir).resolve()),
        "cache_dir": settings["cache_dir"],
        "tokenizer": tokenizer,
        "num_proc": int(settings["num_proc"]),
        "executor": settings["executor"],
        "ray_address": settings["ray_address"],
    }


def _check_present(settings: Mapping[str, Any], names: tuple[str, ...]) -> None:
    missing = [name for name in names if name not in settings]
    if missing:
        raise KeyError(f"stage request settings missing: {', '.join(missing)}")
