"""What the data stage's output makes of a plan (``recipec explain --data``).

``explain`` alone knows every number that follows from the recipe. What follows from the
data waits for the data stage: how many training rows each segment has, how full the
micro-batches that carry them are, how many tokens the loss sees, and with ``train.epochs``
the run's length and its schedule. This module runs the stage (or reads its cache entry,
as ``recipec data`` and train.py do: the same request, so the same entry) and computes them:

* the numbers train.py computes once the data is loaded (the plan's formulas:
  ``steps_per_epoch``, ``max_steps``, ``schedule_phases``, ...) are computed by the very
  expressions the script runs, over the same row counts, so they cannot disagree with it;
* the share of the token slots that hold tokens: what a micro-batch costs in compute
  against what it carries. The script pads each micro-batch of examples, pairs or packed
  rows to its longest row, rounded up to a multiple of ``data.pad_to_multiple_of`` when it
  is set (to ``seq_len`` under sequence parallelism), text in ``seq_len`` blocks is full,
  and unpacked text is padded to ``seq_len`` with a mask. A micro-batch is
  ``micro_batch_size`` rows drawn at random from the segment (the loaders shuffle), so the
  expected share is the mean row length over the expected width of that many rows (their
  longest, rounded up), which :func:`expected_width` computes exactly from the row lengths;
* the data stage's own packing efficiency (the share of ``seq_len`` slots filled by
  best-fit-decreasing), beside it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from .runtime import schedule as runtime_schedule
from .runtime.preference import UNPAIRED


def stage_request(plan: Any, project_dir: str | os.PathLike) -> dict:
    """The stage request of ``plan``: the one train.py builds from its config block's settings of the same names."""
    from .runtime import stage_request as request_module

    settings = {name: plan.get(name) for name in request_module.FIELDS}
    return request_module.request_from_settings(settings, project_dir)


def run_stage(plan: Any, *, log: Callable[[str], None], num_proc: int | None = None, force: bool = False) -> Any:
    """Run ``plan``'s data stage from the working directory unless its cache entry exists; the entry.

    Raises:
        DataError: bad data (from the stage).
    """
    from .resolve import hub_ids

    if not hub_ids(plan.recipe):  # before the stage imports datasets and transformers, which read these once
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from .runtime import stage

    request = stage_request(plan, Path.cwd())
    if num_proc is not None:
        request["num_proc"] = num_proc
    return stage.run(request, force=force, log=log)


def expected_longest(lengths: Sequence[int], k: int) -> float:
    """The expected length of the longest of ``k`` rows drawn at random, without replacement, from ``lengths``.

    With the lengths sorted ascending, the i-th (1-based) is the longest of the draw when it is
    drawn and the other k - 1 come from the i - 1 below it: probability C(i-1, k-1) / C(n, k).
    Computed in logarithms, so any n works.

    Raises:
        ValueError: ``k`` is not between 1 and ``len(lengths)``.
    """
    return expected_width(lengths, k, None, None)


def expected_width(lengths: Sequence[int], k: int, pad_to_multiple_of: int | None, seq_len: int | None) -> float:
    """The expected width of a micro-batch of ``k`` rows drawn at random, without replacement, from ``lengths``:
    its longest row rounded up as the script's collate rounds it (``data.pad_to_multiple_of``, see
    ``recipec_runtime.packing.padded_width``; None: the longest itself).

    The width is a nondecreasing function of the longest row, so each sorted row weighs what it
    weighs in :func:`expected_longest` (the chance that it is the longest of the draw).

    Raises:
        ValueError: ``k`` is not between 1 and ``len(lengths)``.
    """
    import numpy as np

    from .runtime.packing import padded_width

    n = len(lengths)
    if not 1 <= k <= n:
        raise ValueError(f"cannot draw {k} rows from {n}")
    ordered = np.sort(np.asarray(lengths, dtype=np.int64))
    # log C(i-1, k-1) for i = k..n: 0 at i = k, then each step multiplies by (i-1) / (i-k)
    i = np.arange(k + 1, n + 1, dtype=np.float64)
    log_ways = np.concatenate([[0.0], np.cumsum(np.log(i - 1) - np.log(i - k))])
    log_total = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    widths = ordered[k - 1 :]
    if pad_to_multiple_of is not None:
        widths = np.array([padded_width(int(w), pad_to_multiple_of, seq_len) for w in widths], dtype=np.int64)
    return float(np.dot(np.exp(log_ways - log_total), widths.astype(np.float64)))


def _rows(path: Path) -> Any:
    """The training rows of a stage file as one pyarrow table."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all()


def row_lengths(path: Path) -> Any:
    """The number of tokens of every row of a stage file (numpy int64)."""
    import numpy as np
    import pyarrow.compute as pc

    return np.asarray(pc.list_value_length(_rows(path).column("input_ids")).to_numpy(zero_copy_only=False), dtype=np.int64)


def longest_sides(path: Path) -> Any:
    """The longer side's tokens of every pair row of a stage file (numpy int64): its ``position_ids`` restart at 0
    where the rejected side starts."""
    import numpy as np

    out = []
    for positions in _rows(path).column("position_ids").to_pylist():
        cut = positions.index(0, 1) if 0 in positions[1:] else len(positions)
        out.append(max(cut, len(positions) - cut))
    return np.asarray(out, dtype=np.int64)


def _masked_tokens(path: Path) -> int:
    """The tokens of unpacked text rows (their attention masks' ones)."""
    import pyarrow.compute as pc

    return int(pc.sum(pc.list_flatten(_rows(path).column("attention_mask"))).as_py() or 0)


def padding(plan: Any) -> str:
    """How the script fills the token slots of a micro-batch: ``blocks``, ``masked``, ``longest``, ``seq_len``,
    ``sides`` (each side of a preference pair a row padded to seq_len) or ``reward`` (each side of a pair a row,
    padded to the micro-batch's longest side)."""
    examples = bool(plan.get("examples"))
    split = plan.get("sp_size", 1) > 1  # sequence parallelism: every row padded to seq_len
    if plan.get("objective") == "reward":
        return "reward"
    if plan.recipe.preference is not None:
        if not split:
            return "longest"
        return "seq_len" if plan.recipe.preference.objective in UNPAIRED else "sides"
    if examples:
        return "seq_len" if split else "longest"
    return "blocks" if plan["packing"] else "masked"


def replayed(n: int, fraction: float) -> int:
    """The parent's sequences that continual pre-training appends to ``n`` new ones (``data.mix_replay``)."""
    from .runtime.data import replay_count

    return replay_count(n, fraction)


def figures(plan: Any, out: Any) -> dict:
    """The data's figures for ``plan`` from its stage entry ``out`` (a ``StageOutput``); JSON-ready."""
    report = out.report
    seq_len = int(plan["seq_len"])
    micro = int(plan["micro_batch_size"])
    how = padding(plan)
    multiple = plan.get("pad_to_multiple_of") if how in ("longest", "reward") else None
    replay = float(plan.get("replay") or 0.0) if plan.recipe.continual is not None else 0.0
    segments = []
    for i, (seg, path) in enumerate(zip(report["segments"], out.train_files)):
        row: dict[str, Any] = {"segment": i, "rows": int(seg["sequences"])}
        if how == "blocks":
            tokens, slots = row["rows"] * seq_len, row["rows"] * seq_len
            row.update(mean_length=float(seq_len), longest=seq_len)
        elif how == "masked":
            tokens, slots = _masked_tokens(path), row["rows"] * seq_len
            row.update(mean_length=tokens / max(row["rows"], 1), longest=seq_len)
        else:
            lengths = row_lengths(path)
            tokens = int(lengths.sum())
            row.update(mean_length=float(lengths.mean()) if len(lengths) else 0.0, longest=int(lengths.max(initial=0)))
            if how in ("seq_len", "sides"):
                slots = row["rows"] * seq_len * (2 if how == "sides" else 1)
            elif how == "reward" and micro <= len(lengths):
                # per pair: two rows as wide as the longest side of its micro-batch (rounded up with pad_to_multiple_of)
                slots = round(2 * expected_width(longest_sides(path), micro, multiple, seq_len) * row["rows"])
            elif micro <= len(lengths):
                # per row: the expected width of its micro-batch (its longest row, rounded up with pad_to_multiple_of)
                slots = round(expected_width(lengths, micro, multiple, seq_len) * row["rows"])
            else:
                slots = 0
        row["tokens"] = tokens
        row["slot_share"] = round(tokens / slots, 6) if slots else None
        if seg.get("supervised_tokens") is not None:
            row["supervised_tokens"] = int(seg["supervised_tokens"])
        if seg.get("examples") is not None:
            row["examples"] = int(seg["examples"])
        if seg.get("packing_efficiency") is not None:
            row["packing_efficiency"] = seg["packing_efficiency"]
        row["replayed"] = replayed(row["rows"], replay) if replay else 0
        segments.append(row)
    derived = _computed(plan, [s["rows"] + s["replayed"] for s in segments])
    batch = int(plan["batch_size"])
    first = segments[0]
    per_step: dict[str, Any] = {"tokens": round(batch * first["mean_length"])}
    if "supervised_tokens" in first and first["rows"]:
        per_step["supervised_tokens"] = round(batch * first["supervised_tokens"] / first["rows"])
    x = report.get("examples") or {}
    return {
        "entry": out.dir.as_posix(),
        "key": report.get("key"),
        "padding": how,
        "pad_to_multiple_of": multiple,
        "micro_batch_size": micro,
        "seq_len": seq_len,
        "segments": segments,
        "per_step": per_step,
        "held_out": {"rows": int(report["eval"]["sequences"]), "supervised_tokens": x.get("eval_supervised_tokens")},
        "dropped": x.get("dropped"),
        "truncated": x.get("truncated"),
        "computed": derived,
        "kto": bool(plan.recipe.preference is not None and plan.recipe.preference.objective == "kto"),
        "rows_are": _rows_are(plan),
    }


def _rows_are(plan: Any) -> str:
    """What one training row holds, in words."""
    if plan.recipe.preference is not None:
        return "examples" if plan.recipe.preference.objective in UNPAIRED else "pairs (chosen and rejected side by side)"
    if plan.get("examples"):
        return "packed rows" if plan["packing"] else "examples"
    return "sequences"


def _computed(plan: Any, rows: list[int]) -> dict:
    """The plan's formulas, evaluated in the script's order by the script's own expressions.

    ``rows``: the training rows of each segment as train.py counts them (replay included).
    The expressions are the plan's (never recipe text); their names are the config block's.
    """
    names: dict[str, Any] = {s.name: s.value for s in plan.settings}
    names.update(math=math, schedule=runtime_schedule, train_sets=[range(n) for n in rows])
    out = {}
    for f in plan.formulas:
        names[f.name] = out[f.name] = eval(f.expr, {"__builtins__": {"len": len, "round": round, "max": max}}, names)  # noqa: S307
    return out


def lr_csv(plan: Any, computed: dict) -> str | None:
    """``step,lr`` for every step once ``computed`` (from :func:`figures`) has laid the schedule out."""
    phases = computed.get("schedule_phases", plan.get("schedule_phases"))
    steps = computed.get("max_steps", plan.get("max_steps"))
    if phases is None or steps is None:
        return None
    return runtime_schedule.lr_csv(phases, steps, plan["lr"])


HOW = {
    "blocks": "full seq_len blocks",
    "masked": "each document padded to seq_len",
    "longest": "each micro-batch padded to its longest row",
    "seq_len": "each micro-batch padded to seq_len (sequence parallelism)",
    "sides": "each side of a pair a row padded to seq_len (sequence parallelism)",
    "reward": "each side of a pair a row, padded to the micro-batch's longest side",
}


def text(plan: Any, fig: dict) -> list[str]:
    """The figures as explain's `[data]` section."""
    from .resolve.schedule import describe

    lines = ["", f"[data, from the data stage's cache entry {fig['entry']}]"]
    many = len(fig["segments"]) > 1
    for s in fig["segments"]:
        label = f"segment {s['segment']}" if many else "training rows"
        parts = [f"{s['rows']:,} {fig['rows_are']}"]
        if "examples" in s and s["examples"] != s["rows"]:
            parts.append(f"from {s['examples']:,} examples")
        if s["replayed"]:
            parts.append(f"+ {s['replayed']:,} replayed from the parent's data")
        lines.append(f"  {label:<17}{' '.join(parts)}; mean length {s['mean_length']:.1f} tokens, longest {s['longest']:,}")
        share = "-" if s["slot_share"] is None else f"{s['slot_share']:.3f}"
        expect = ", expected over the loaders' random order" if fig["padding"] in ("longest", "reward") and fig["micro_batch_size"] > 1 else ""
        rounded = f" rounded up to a multiple of {fig['pad_to_multiple_of']}" if fig.get("pad_to_multiple_of") else ""
        where = f"micro_batch_size {fig['micro_batch_size']}, {HOW[fig['padding']]}{rounded}{expect}"
        lines.append(f"  {'token slots':<17}{share} hold tokens ({where})")
        if s.get("packing_efficiency") is not None:
            lines.append(f"  {'packing':<17}{s['packing_efficiency']:.3f} of the seq_len slots filled by best-fit-decreasing")
        if "supervised_tokens" in s and plan.get("objective") == "reward":
            lines.append(f"  {'completions':<17}{s['supervised_tokens']:,} tokens (a reward model scores each side whole, prompt included)")
        elif "supervised_tokens" in s:
            lines.append(f"  {'supervised':<17}{s['supervised_tokens']:,} tokens the loss sees")
    if fig["dropped"] is not None:
        dropped = ", ".join(f"{k}: {v}" for k, v in fig["dropped"].items()) or "none"
        lines.append(f"  {'examples':<17}{fig['truncated']:,} truncated to max_length; dropped {dropped}")
    if fig["kto"]:
        lines.append(f"  {'kto':<17}each micro-batch also runs its mismatched pairs (the KL estimate): twice the rows")
    held = fig["held_out"]
    sup = "" if held["supervised_tokens"] is None else f", {held['supervised_tokens']:,} supervised tokens"
    lines.append(f"  {'held out':<17}{held['rows']:,} rows{sup}")
    per = fig["per_step"]
    sup = f", {per['supervised_tokens']:,} supervised" if "supervised_tokens" in per else ""
    lines.append(f"  {'per step':<17}about {per['tokens']:,} tokens{sup} (batch_size {plan['batch_size']} rows of the mean length)")
    computed = fig["computed"]
    if computed:
        lines.append("  computed as train.py computes it:")
        width = max(len(k) for k in computed)
        for name, value in computed.items():
            shown = describe(value) if name == "schedule_phases" else f"{value:,}" if isinstance(value, int) else repr(value)
            lines.append(f"    {name.ljust(width)}  {shown}")
        if "max_steps" in computed:
            lines.append(f"    {'tokens'.ljust(width)}  about {computed['max_steps'] * per['tokens']:,} over the run")
    return lines
