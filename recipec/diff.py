"""`recipec diff A B`: what changes between two resolved recipes, not between two texts.

Both sides are planned as `recipec build` would plan them, then compared setting by
setting, so a reviewer sees every value the training script will use differently:

* the keys that changed, with their old and new value and where each was set (file:line);
* the derived values that moved because something else did (warmup steps after
  ``train.max_steps`` changed, ``grad_accum_steps`` after ``launch.num_processes`` changed),
  marked as derived with what they were derived from;
* recipe keys that are no setting of their own (``schedule.warmup``, ``schedule.decay``) but
  feed one;
* the LR schedule, summarised: peak, final, area under the curve (the sum of the LR over
  the steps) and the largest pointwise difference over the steps both runs have;
* "attention" flags for the changes a review must not miss: a higher LR or a longer run on
  a pretrained model, total tokens changed by 10 % or more at the same peak LR (the best
  LR depends on the token horizon), a new seed (it sets the data order and the held-out
  split), a removed filter, and data sources that were changed, removed or added.

A side is a recipe file, a build directory (its ``resolved.toml``, itself a recipe) or a git
revision ``REV:path`` of either. A revision is read with ``git show`` into a temporary file
in the directory the path names, so relative paths in it resolve as they did there.

Exit status: 0 when the plans are the same, 1 when they differ, 2 on an error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from . import report
from .diagnostics import Diagnostic, RecipeError, visible_text

RESOLVED = "resolved.toml"
"""The recipe a build directory holds: every setting after defaults and --set."""

IMPLICIT_INPUTS: dict[str, tuple[str, ...]] = {
    "schedule_phases": ("max_steps", "tokens_per_step", "min_lr", "min_lr_ratio"),
    "warmup_steps": ("schedule_phases", "max_steps"),
    "segments": ("schedule_phases", "max_steps"),
    "total_tokens": ("max_steps", "tokens_per_step"),
}
"""Inputs of derived values that their notes do not name."""

_KEY = re.compile(r"[A-Za-z_][\w.]*\w|[A-Za-z_]")
_WORD = re.compile(r"[A-Za-z_][\w.]*[\w]|[A-Za-z_]")


class DiffError(Exception):
    """A side that cannot be read: a missing path, a bad revision, a build without a recipe."""


@dataclass(frozen=True)
class Entry:
    """One comparable value of a plan: a setting, a value computed from settings, or a recipe key."""

    name: str
    value: Any
    note: str
    origin: str
    section: str
    derived: bool


@dataclass(frozen=True)
class Change:
    """A value that differs between A and B."""

    name: str
    kind: str
    """``changed``, ``added`` (only in B) or ``removed`` (only in A)."""
    old: Any
    new: Any
    note: str
    """B's note (A's for a removed value): the recipe key, or ``derived: ...``."""
    old_note: str | None
    origin: str
    old_origin: str | None
    section: str
    derived: bool
    because: tuple[str, ...] = ()
    """For a derived value: the changed values it is derived from."""

    def as_json(self) -> dict[str, Any]:
        """The change as plain JSON data."""
        out = dataclasses.asdict(self)
        out["because"] = list(self.because)
        return out


@dataclass(frozen=True)
class Curve:
    """The LR schedule of one side, over its optimizer steps (None when the run is in epochs)."""

    steps: int | None
    lrs: tuple[float, ...] | None = field(repr=False, default=None)

    @property
    def known(self) -> bool:
        """Whether the LR per step is known before training (the run length is not in epochs)."""
        return self.lrs is not None

    def summary(self) -> dict[str, Any]:
        """Steps, peak, final and area (the sum of the LR over the steps), for JSON and text."""
        if self.lrs is None:
            return {"known": False, "steps": None, "peak": None, "final": None, "area": None}
        return {
            "known": True,
            "steps": self.steps,
            "peak": max(self.lrs, default=0.0),
            "final": self.lrs[-1] if self.lrs else None,
            "area": math.fsum(self.lrs),
        }


@dataclass(frozen=True)
class Side:
    """One planned side of the diff."""

    label: str
    """The argument as the user gave it (``HEAD:recipes/x.toml``, ``build/x``)."""
    recipe_file: str
    """The recipe that was planned, as shown in origins."""
    plan: Any
    entries: dict[str, Entry]
    curve: Curve


@dataclass(frozen=True)
class Diff:
    """The whole comparison: what `recipec diff` prints and returns as JSON."""

    a: Side
    b: Side
    changes: tuple[Change, ...]
    schedule: dict[str, Any] | None
    """The LR summary of both sides and their difference; None when the schedules are equal."""
    flags: tuple[dict[str, str], ...]

    @property
    def same(self) -> bool:
        """No value, schedule or flag differs."""
        return not self.changes and self.schedule is None and not self.flags

    def as_json(self) -> dict[str, Any]:
        """The diff as plain JSON data."""
        return {
            "a": {"label": self.a.label, "recipe_file": self.a.recipe_file, "name": self.a.plan.name},
            "b": {"label": self.b.label, "recipe_file": self.b.recipe_file, "name": self.b.plan.name},
            "same": self.same,
            "changes": [c.as_json() for c in self.changes],
            "schedule": self.schedule,
            "flags": list(self.flags),
        }


# ---------------------------------------------------------------- reading a side


@contextmanager
def recipe_file(spec: str) -> Iterator[tuple[str, str | None]]:
    """The recipe file a side names, as a path relative to the working directory.

    Args:
        spec: a recipe file, a build directory, or ``REV:path`` of either.

    Yields:
        ``(path, shown)``: the file to plan, and the name to show for it in origins and
        diagnostics instead (``HEAD:recipes/x.toml``), or None to show the path itself.
        A revision's temporary file is removed afterwards.

    Raises:
        DiffError: the path does not exist, the build directory has no resolved.toml, or
            git cannot read the revision.
    """
    path = Path(spec)
    if path.is_dir():
        resolved = path / RESOLVED
        if not resolved.is_file():
            raise DiffError(f"{spec} is a directory without {RESOLVED}: give a recipe file or a build directory")
        yield resolved.as_posix(), None
        return
    if path.is_file():
        yield spec, None
        return
    rev, sep, rel = spec.partition(":")
    if not sep or not rev or not rel:
        raise DiffError(f"{spec} does not exist: give a recipe file, a build directory or REV:path")
    text, file = _git_recipe(rev, rel)
    target = Path(rel) / RESOLVED if file != rel else Path(rel)
    shown = f"{rev}:{target.as_posix()}"
    with _temporary_beside(target, text, rev) as tmp:
        yield tmp, shown


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    except OSError as exc:
        raise DiffError(f"cannot run git: {exc.strerror or exc}") from None


def _git_recipe(rev: str, rel: str) -> tuple[str, str]:
    """The text of ``rel`` at ``rev`` (``rel/resolved.toml`` when it is a directory there)."""
    # `./` makes git read the path relative to the working directory, not the repository root
    obj = f"{rev}:./{rel}"
    kind = _git("cat-file", "-t", obj)
    if kind.returncode != 0:
        reason = kind.stderr.strip().splitlines()[-1] if kind.stderr.strip() else "git cat-file failed"
        raise DiffError(f"cannot read {rev}:{rel} from git: {reason.removeprefix('fatal: ')}")
    file = rel
    if kind.stdout.strip() == "tree":
        file = f"{rel.rstrip('/')}/{RESOLVED}"
        obj = f"{rev}:./{file}"
    shown = _git("show", obj)
    if shown.returncode != 0:
        reason = shown.stderr.strip().splitlines()[-1] if shown.stderr.strip() else "git show failed"
        where = f"{rev}:{rel} is a directory without {RESOLVED}" if file != rel else f"cannot read {rev}:{rel}"
        raise DiffError(f"{where} ({reason.removeprefix('fatal: ')})")
    return shown.stdout, file


@contextmanager
def _temporary_beside(target: Path, text: str, rev: str) -> Iterator[str]:
    """Write ``text`` to a temporary file in ``target``'s directory, creating what is missing."""
    directory = target.parent
    created: list[Path] = []
    for parent in [directory, *directory.parents]:
        if parent.exists():
            break
        created.append(parent)
    safe_rev = re.sub(r"[^\w.-]", "_", rev)[:40]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.stem}.{safe_rev}.", suffix=".toml", dir=directory)
    except OSError as exc:
        raise DiffError(f"cannot write a temporary copy of {rev}:{target.as_posix()}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        yield Path(os.path.relpath(name)).as_posix()
    finally:
        Path(name).unlink(missing_ok=True)
        for made in created:  # innermost first
            try:
                made.rmdir()
            except OSError:
                break


def load_side(spec: str) -> Side:
    """Plan one side of the diff, relative to the working directory (the project).

    Raises:
        DiffError: the side cannot be read.
        RecipeError: its recipe is invalid; diagnostics name the revision for a git side.
    """
    from .compiler import plan_recipe

    with recipe_file(spec) as (path, shown):
        try:
            plan, source = plan_recipe(path, overrides=())
        except RecipeError as exc:
            if shown is None:
                raise
            raise RecipeError([_renamed(d, path, shown) for d in exc.diagnostics]) from None
    rename = (lambda origin: origin.replace(path, shown, 1) if origin.startswith(path) else origin) if shown else str
    entries = _entries(plan, source, rename)
    return Side(spec, shown or path, plan, entries, _curve(plan))


def _renamed(diagnostic: Diagnostic, path: str, shown: str) -> Diagnostic:
    location = diagnostic.location
    if location is None or location.file != path:
        return diagnostic
    return dataclasses.replace(diagnostic, location=dataclasses.replace(location, file=shown))


# ---------------------------------------------------------------- comparing


def _entries(plan: Any, source: Any, rename: Any) -> dict[str, Entry]:
    """The plan's settings, two values computed from them, and the recipe keys no setting shows."""
    entries: dict[str, Entry] = {}
    for s in plan.settings:
        derived = s.origin == "derived"
        entries[s.name] = Entry(s.name, s.value, s.note, rename(s.origin), s.section, derived)
        if s.name == "max_steps":
            entries["total_tokens"] = Entry(
                "total_tokens",
                s.value * plan["tokens_per_step"],
                f"derived: max_steps {s.value} * tokens_per_step {plan['tokens_per_step']}",
                "derived",
                s.section,
                True,
            )
        if s.name == "schedule_phases":
            from .resolve.schedule import warmup_steps_of

            entries["warmup_steps"] = Entry(
                "warmup_steps",
                warmup_steps_of(s.value),
                "derived: steps of the leading phases of schedule_phases that raise the LR",
                "derived",
                s.section,
                True,
            )
    # a key setting's note starts with its key: `data.filters (after each source's own)`
    keys = [m.group(0) for s in plan.settings if s.origin != "derived" and (m := _KEY.match(s.note))]
    for key, value in _leaves(plan.recipe.model_dump(mode="json")):
        if key in entries or any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in keys):
            continue
        origin = source.origin(tuple(key.split("."))) or "default"
        entries[key] = Entry(key, value, key, rename(origin), key.split(".")[0], False)
    return entries


def _leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys and values of a nested dict; lists are values, not tables."""
    if isinstance(data, dict) and data:
        for key, value in data.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif prefix:
        yield prefix, data


def _curve(plan: Any) -> Curve:
    from .runtime import schedule

    phases, steps = plan.get("schedule_phases"), plan.get("max_steps")
    if phases is None or steps is None:
        return Curve(None)
    peak = plan["lr"]
    return Curve(steps, tuple(peak * f for f in schedule.values(phases, steps)))


def _equal(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b)


def compare(a: Side, b: Side) -> Diff:
    """Every difference between two planned sides, the schedule summary and the flags."""
    changes: list[Change] = []
    for name, new in b.entries.items():
        old = a.entries.get(name)
        if old is None:
            changes.append(_change(name, "added", None, new))
        elif not _equal(old.value, new.value):
            changes.append(_change(name, "changed", old, new))
    changes += [_change(name, "removed", old, None) for name, old in a.entries.items() if name not in b.entries]
    changed = {c.name: c for c in changes}
    changes = [dataclasses.replace(c, because=_because(c, changed)) if c.derived else c for c in changes]
    return Diff(a, b, tuple(changes), _schedule(a, b), tuple(_flags(a, b, changed)))


def _change(name: str, kind: str, old: Entry | None, new: Entry | None) -> Change:
    """A Change from A's and B's entries (either None when the value is only on one side)."""
    shown = new or old
    assert shown is not None
    return Change(
        name,
        kind,
        old.value if old else None,
        new.value if new else None,
        shown.note,
        old.note if old and new else None,
        shown.origin,
        old.origin if old and new else None,
        shown.section,
        shown.derived,
    )


def _because(change: Change, changed: dict[str, Change]) -> tuple[str, ...]:
    """The changed values a derived value's notes name, and its implicit inputs that changed."""
    words = set(_WORD.findall(change.note)) | set(_WORD.findall(change.old_note or ""))
    words |= set(IMPLICIT_INPUTS.get(change.name, ()))
    causes = []
    for other in changed.values():
        if other.name == change.name:
            continue
        keys = {other.name} | ({other.note} if not other.derived else set())
        table, _, last = other.name.rpartition(".")
        if table == change.section:  # `decay 'cosine'` in a [schedule] note is schedule.decay
            keys.add(last)
        if keys & words:
            causes.append(other.name)
    return tuple(causes)


def _schedule(a: Side, b: Side) -> dict[str, Any] | None:
    """The two LR curves summarised, with the largest pointwise difference; None if equal."""
    ca, cb = a.curve, b.curve
    if ca.lrs == cb.lrs and ca.known and cb.known:
        return None
    if not ca.known and not cb.known:
        if _equal(a.plan.get("schedule_spec"), b.plan.get("schedule_spec")) and a.plan["lr"] == b.plan["lr"]:
            return None
    out: dict[str, Any] = {"a": ca.summary(), "b": cb.summary(), "common_steps": None, "max_abs_diff": None,
                           "max_abs_diff_step": None}
    if ca.lrs is not None and cb.lrs is not None:
        common = min(len(ca.lrs), len(cb.lrs))
        diffs = [abs(x - y) for x, y in zip(ca.lrs[:common], cb.lrs[:common])]
        out["common_steps"] = common
        if diffs:
            worst = max(range(common), key=diffs.__getitem__)
            out["max_abs_diff"], out["max_abs_diff_step"] = diffs[worst], worst
    return out


def _pretrained(plan: Any) -> bool:
    recipe = plan.recipe
    return plan.get("model_path") is not None or recipe.continual is not None or recipe.peft is not None


HORIZON_CHANGE = 1.1
"""A change of total tokens by at least this factor (either way), with the same peak LR, is flagged."""


def token_horizon(a: Any, b: Any) -> str | None:
    """What to say when plan ``b`` trains on a different number of tokens than plan ``a``
    at the same peak LR: the optimal peak LR falls as the token horizon grows ("Scaling
    Optimal LR Across Token Horizons"). None when the totals are unknown (train.epochs),
    within HORIZON_CHANGE of each other, or the peak LR changed too."""
    totals = []
    for plan in (a, b):
        steps = plan.get("max_steps")
        totals.append(None if steps is None else steps * plan["tokens_per_step"])
    ta, tb = totals
    if ta is None or tb is None or a["lr"] != b["lr"] or max(ta, tb) < HORIZON_CHANGE * min(ta, tb):
        return None
    want = "a lower" if tb > ta else "a higher"
    return (
        f"total tokens {ta:,} -> {tb:,} ({tb / ta:.3g}x) at the same peak LR {b['lr']:g}: the best peak LR falls as "
        f"training gets longer, so this run likely wants {want} one (\"Scaling Optimal LR Across Token Horizons\")"
    )


def _flags(a: Side, b: Side, changed: dict[str, Change]) -> list[dict[str, str]]:
    """The changes a review must not miss, as ``{"kind": ..., "message": ...}``."""
    flags: list[dict[str, str]] = []

    def flag(kind: str, message: str) -> None:
        flags.append({"kind": kind, "message": message})

    pa, pb = a.plan, b.plan
    if _pretrained(pa) or _pretrained(pb):
        why = "on a pretrained model (fine-tuning: a small data set is easily over-trained)"
        peak_a, peak_b = a.curve.summary()["peak"], b.curve.summary()["peak"]
        if peak_a is None or peak_b is None:
            peak_a, peak_b = pa["lr"], pb["lr"]
        if peak_b > peak_a:
            flag("higher_lr", f"peak LR raised from {peak_a:g} to {peak_b:g} {why}")
        for name, what in (("epochs", "epochs"), ("max_steps", "optimizer steps"), ("total_tokens", "training tokens")):
            c = changed.get(name)
            if c and c.kind == "changed" and isinstance(c.old, (int, float)) and c.new > c.old:
                flag("longer_run", f"more {what}: {c.old:,} -> {c.new:,} {why}")
    horizon = token_horizon(pa, pb)
    if horizon is not None:
        flag("token_horizon", horizon)
    c = changed.get("seed")
    if c is not None:
        flag("seed", f"recipe.seed changed {c.old!r} -> {c.new!r}: it sets the data order and the held-out split")
    for removed in _removed_filters(pa.get("filters") or [], pb.get("filters") or []):
        flag("removed_filter", f"filter `{removed}` removed from [[data.filters]]")
    flags += _source_flags(pa.get("sources") or [], pb.get("sources") or [])
    return flags


def _removed_filters(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[str]:
    """Filter types in ``old`` that ``new`` has fewer of."""
    remaining = [f.get("type") for f in new]
    removed = []
    for f in old:
        if f.get("type") in remaining:
            remaining.remove(f.get("type"))
        else:
            removed.append(str(f.get("type")))
    return removed


def _source_label(src: dict[str, Any], index: int) -> str:
    if src.get("name"):
        return f"`{src['name']}`"
    what = src.get("builtin") or src.get("path") or (src.get("hub") or {}).get("repo")
    return f"sources[{index}] ({what})" if what is not None else f"sources[{index}]"


def _identity(src: dict[str, Any]) -> Any:
    if src.get("name"):
        return ("name", src["name"])
    return ("what", json.dumps([src.get("builtin"), src.get("path"), src.get("hub")], sort_keys=True))


def _source_flags(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Sources paired by name (or what they read), then by position; their changes as flags."""
    pairs: list[tuple[int, int]] = []
    left_a = list(range(len(old)))
    left_b = list(range(len(new)))
    for i in list(left_a):
        for j in left_b:
            if _identity(old[i]) == _identity(new[j]):
                pairs.append((i, j))
                left_a.remove(i)
                left_b.remove(j)
                break
    for i, j in zip(list(left_a), list(left_b)):
        pairs.append((i, j))
        left_a.remove(i)
        left_b.remove(j)
    flags: list[dict[str, str]] = []
    for i, j in sorted(pairs):
        sa, sb = old[i], new[j]
        diffs = [
            f"{key} {sa.get(key)!r} -> {sb.get(key)!r}"
            for key in ("builtin", "path", "hub", "weight")
            if not _equal(sa.get(key), sb.get(key))
        ]
        label = _source_label(sa, i)
        if diffs:
            flags.append({"kind": "changed_source", "message": f"data source {label} changed: " + ", ".join(diffs)})
        for removed in _removed_filters(sa.get("filters") or [], sb.get("filters") or []):
            flags.append({"kind": "removed_filter", "message": f"filter `{removed}` removed from data source {label}"})
    for i in left_a:
        flags.append({"kind": "removed_source", "message": f"data source {_source_label(old[i], i)} removed"})
    for j in left_b:
        flags.append({"kind": "added_source", "message": f"data source {_source_label(new[j], j)} added"})
    return flags


# ---------------------------------------------------------------- text output

_WIDTH = 60


def _show(value: Any, name: str = "") -> str:
    if name == "schedule_phases" and isinstance(value, list):
        from .resolve.schedule import describe

        return describe(value)
    text = repr(value)
    return text if len(text) <= 2 * _WIDTH else text[: 2 * _WIDTH - 3] + "..."


def format_text(diff: Diff) -> str:
    """The diff for people: one block per change, the schedule summary, then the flags."""
    lines = [f"--- a: {diff.a.label}" + (f" ({diff.a.recipe_file})" if diff.a.recipe_file != diff.a.label else "")]
    lines.append(f"+++ b: {diff.b.label}" + (f" ({diff.b.recipe_file})" if diff.b.recipe_file != diff.b.label else ""))
    if diff.same:
        lines.append("no differences")
        return "\n".join(lines)
    section = None
    for c in diff.changes:
        if c.section != section:
            section = c.section
            lines += ["", f"[{section}]"]
        if c.kind == "added":
            lines.append(f"+ {c.name} = {_show(c.new, c.name)}")
        elif c.kind == "removed":
            lines.append(f"- {c.name} = {_show(c.old, c.name)}")
        else:
            old, new = _show(c.old, c.name), _show(c.new, c.name)
            if len(old) + len(new) > 2 * _WIDTH:
                lines += [f"~ {c.name}:", f"    was {old}", f"    now {new}"]
            else:
                lines.append(f"~ {c.name}: {old} -> {new}")
        if c.derived:
            because = f"changed because {', '.join(c.because)} changed; " if c.because else ""
            lines.append(f"    {because}{c.note}")
            if c.old_note is not None and c.old_note != c.note:
                lines.append(f"    was {c.old_note}")
        else:
            where = c.origin if c.old_origin in (None, c.origin) else f"{c.old_origin} -> {c.origin}"
            lines.append(f"    {c.note}  ({where})")
    if diff.schedule is not None:
        lines += ["", "[LR schedule]"] + _schedule_lines(diff.schedule)
    for f in diff.flags:
        lines.append(("" if lines[-1].startswith("attention:") else "\n") + f"attention: {f['message']}")
    n = len(diff.changes)
    lines += ["", f"{n} value{'s' if n != 1 else ''} changed, {len(diff.flags)} to look at"]
    return "\n".join(lines)


def _schedule_lines(schedule: dict[str, Any]) -> list[str]:
    a, b = schedule["a"], schedule["b"]
    if not a["known"] and not b["known"]:
        return ["  both runs are in epochs: the LR per step is known only when train.py runs"]
    lines = []
    for what, fmt in (("steps", "{:,}"), ("peak", "{:.6g}"), ("final", "{:.6g}"), ("area", "{:.6g}")):
        va = "epochs" if not a["known"] else fmt.format(a[what])
        vb = "epochs" if not b["known"] else fmt.format(b[what])
        lines.append(f"  {what:<8} {va} -> {vb}" if va != vb else f"  {what:<8} {va} (same)")
    if schedule["max_abs_diff"] is not None:
        lines.append(
            f"  max pointwise difference {schedule['max_abs_diff']:.6g} at step {schedule['max_abs_diff_step']:,} "
            f"(over the {schedule['common_steps']:,} steps both runs have)"
        )
    else:
        lines.append("  one run is in epochs: the LR per step is known only when its train.py runs")
    return lines


# ---------------------------------------------------------------- the command


@click.command(short_help="Compare two resolved recipes: values, derived numbers, LR schedule.")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON.")
def diff(a: str, b: str, as_json: bool) -> None:
    """Compare two recipes as they will run, not as they are written.

    A and B are each a recipe file, a build directory (its resolved.toml) or a git
    revision REV:path of either (e.g. HEAD:recipes/x.toml). Prints every value that
    differs with its key and file:line, derived values that changed because their inputs
    did, a summary of the LR schedule, and "attention:" lines for changes a review must
    not miss. Paths in the recipes resolve against the current directory.

    Exit status: 0 the same, 1 different, 2 an error.
    """
    sides = []
    for spec in (a, b):
        try:
            sides.append(load_side(spec))
        except DiffError as exc:
            report.fail(str(exc))
        except RecipeError as exc:
            report.fail(exc)
    result = compare(*sides)
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    else:
        click.echo(visible_text(format_text(result)))
    sys.exit(report.EXIT_OK if result.same else report.EXIT_DIFFERENT)
