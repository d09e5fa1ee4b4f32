"""Resolve the data mixture over the schedule: stretches of the run that train on one mixture.

A source's `phases` and `phase_weights` name schedule phases, so the mixture is resolved
after the schedule; the script trains each segment on its own sequences.
"""

from __future__ import annotations

import math
from typing import Any

from ..diagnostics import did_you_mean
from .builder import PlanBuilder

SHARE_SUM_TOLERANCE = (1e-6, 0.1)
"""Weights that add up to within the second of 1, but not within the first, look like shares that miss."""


def segment_settings(b: PlanBuilder) -> None:
    """`segments`: consecutive schedule phases with the same sources and weights, merged."""
    check_shares(b)
    segments = _segments(b, b.get("schedule_phases"), b.get("max_steps"))
    if segments is not None:
        note = (
            "derived: one mixture for the whole run"
            if len(segments) == 1
            else "derived: data.sources[].phases and phase_weights over the schedule"
        )
        b.derived("segments", segments, note)


def check_shares(b: PlanBuilder) -> None:
    """Warn when the sources' weights look like shares (each at most 1, adding up to about 1) but do not add up to 1.

    Weights are relative, so such weights still train: on the normalised shares, which the
    warning shows, and which differ from what was written.
    """
    sources = b.recipe.data.sources
    weights = [src.weight for src in sources if src.split == "train"]
    if len(weights) < 2 or any(w is None or w > 1 for w in weights):
        return
    total = math.fsum(weights)
    low, high = SHARE_SUM_TOLERANCE
    if not low < abs(total - 1) <= high:
        return
    shares = ", ".join(f"{w / total:.4g}" for w in weights)
    b.warn(
        ("data", "sources"),
        f"the sources' weights add up to {total:.6g}, not 1: they are relative, so the shares are {shares}",
        "make them add up to 1 to train on the shares written",
    )


def _segments(b: PlanBuilder, phases: list[dict[str, Any]] | None, max_steps: int | None) -> list[dict[str, Any]] | None:
    """Stretches of the run that train on one mixture: the same sources with the same weights.

    Consecutive phases with the same mixture are merged. `last_step` is the step the segment
    ends before; None for the last one (the run's end). `weights` is None when no source
    sets one (every source's documents are used once).
    """
    sources = b.recipe.data.sources
    training = [i for i, src in enumerate(sources) if src.split == "train"]  # eval sources are held out whole
    weighted = sources[training[0]].weight is not None  # every training source or none (checked by the schema)
    by_phase = [i for i, src in enumerate(sources) if src.phases is not None or src.phase_weights]
    if not by_phase:
        weights = [sources[i].weight for i in training] if weighted else None
        return [{"first_step": 0, "last_step": None, "sources": training, "weights": weights}]
    first = by_phase[0]
    key = "phases" if sources[first].phases is not None else "phase_weights"
    if max_steps is None:
        b.error(
            ("data", "sources", first, key),
            f"`{key}` needs the run's length in steps or tokens, not epochs",
        )
        return None
    if phases is None:
        return None
    names = [p["name"] for p in phases]
    errors = len(b.errors)
    for i, src in enumerate(sources):
        for key, listed in (("phases", src.phases or ()), ("phase_weights", src.phase_weights or {})):
            for name in listed:
                if name not in names:
                    b.error(
                        ("data", "sources", i, key),
                        f"no schedule phase is named {name!r}",
                        did_you_mean(name, names) or "the phases are " + ", ".join(f"{n!r}" for n in names),
                    )
                elif key == "phase_weights" and src.phases is not None and name not in src.phases:
                    b.error(
                        ("data", "sources", i, key),
                        f"this source trains only in {', '.join(map(repr, src.phases))}, not in {name!r}",
                    )
    if len(b.errors) > errors:
        return None
    segments: list[dict[str, Any]] = []
    for p in phases:
        name = p["name"]
        used = [i for i in training if sources[i].phases is None or name in sources[i].phases]
        if not used:
            b.error(("data", "sources"), f"schedule phase {name!r} has no data source to train on")
            return None
        weights = [(sources[i].phase_weights or {}).get(name, sources[i].weight) for i in used] if weighted else None
        end = p["first_step"] + p["steps"]
        if segments and segments[-1]["sources"] == used and segments[-1]["weights"] == weights:
            segments[-1].update(last_step=end, phases=segments[-1]["phases"] + [name])
        else:
            segments.append(
                {"first_step": p["first_step"], "last_step": end, "sources": used, "weights": weights, "phases": [name]}
            )
    segments[-1]["last_step"] = None
    return segments
