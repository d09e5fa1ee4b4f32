"""Keys that recipec itself renamed: an old recipe is read under the new names, with a warning.

A recipe kept in git outlives the recipec version it was written for. When a key is
renamed, its old spelling goes into :data:`RENAMES` with the schema version that renamed
it (the lock's ``schema_version``), and every recipe that still uses the old spelling
keeps working: the value moves to the new key before validation, every later message
about it points at the line where the old key is written, and a warning names the new
key so the recipe can be updated. resolved.toml, the lock and the generated script use
the new name only. A recipe that sets both spellings is an error: which one wins would
be a guess.

Keys that other tools spell differently (``learning_rate``, ``warmup_steps``) are not
migrations: they are unknown keys with a hint (`recipec.schema.RENAMED`), because their
meaning may differ in ways a silent move would hide.

No key has been renamed since schema version 1, so :data:`RENAMES` is empty; its
entries look like::

    Rename(("train", "micro_batch"), ("train", "micro_batch_size"), schema_version=2)
    Rename(("data", "sources", "*", "field"), ("data", "sources", "*", "text_field"), schema_version=2)

(``"*"`` stands for every entry of an array of tables).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .diagnostics import Diagnostic, RecipeError
from .source import KeyPath, SourceMap

ANY = "*"
"""In a rename's path: every entry of an array of tables."""


@dataclass(frozen=True)
class Rename:
    """``old`` was renamed to ``new`` by schema version ``schema_version``.

    Both paths have the same shape: ``"*"`` segments at the same places, and the same
    table above the last segment unless the key moved to another table.
    """

    old: tuple[str, ...]
    new: tuple[str, ...]
    schema_version: int


RENAMES: tuple[Rename, ...] = ()
"""Every key renamed since the first schema version, oldest first."""


def dotted(path: Sequence[str | int]) -> str:
    """``("data", "sources", 0, "path")`` -> ``data.sources[0].path``."""
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else seg)
    return out


def migrate(
    data: dict[str, Any], source: SourceMap, renames: Sequence[Rename] | None = None
) -> tuple[dict[str, Any], SourceMap, list[Diagnostic]]:
    """Move every old key of ``renames`` found in ``data`` to its new name.

    Args:
        data: the recipe as read (overrides applied); changed in place.
        source: its source map.
        renames: the renames to apply, oldest first; default :data:`RENAMES`.

    Returns:
        The recipe, a source map that locates each new key where its old key was
        written, and one warning per key moved.

    Raises:
        RecipeError: a recipe sets a key under both its old and its new name.
    """
    warnings: list[Diagnostic] = []
    errors: list[Diagnostic] = []
    renames = RENAMES if renames is None else renames
    for rename in renames:
        for old in list(_matches(data, rename.old)):
            new = _fill(rename.new, old)
            old_table, new_table = _get(data, old[:-1]), _get(data, new[:-1])
            if new_table is not None and not isinstance(new_table, dict):
                continue  # the new key's table is written as a value: validation reports that
            if isinstance(new_table, dict) and new[-1] in new_table:
                errors.append(
                    Diagnostic(
                        "error",
                        f"`{dotted(old)}` and `{dotted(new)}` are both set; `{dotted(old)}` is the name "
                        f"`{dotted(new)}` had before recipec schema version {rename.schema_version}",
                        source.locate(old),
                        f"remove `{dotted(old)}`",
                    )
                )
                continue
            value = old_table.pop(old[-1])
            _table(data, new[:-1])[new[-1]] = value
            source = source.with_aliases([(new, old)])  # a later rename of `new` finds the line too
            warnings.append(
                Diagnostic(
                    "warning",
                    f"`{dotted(old)}` was renamed to `{dotted(new)}` in recipec schema version "
                    f"{rename.schema_version}; read as `{dotted(new)}`",
                    source.locate(old),
                    f"write `{new[-1]}`" + ("" if old[:-1] == new[:-1] else f" in `[{dotted(new[:-1])}]`")
                    + " instead: this spelling will stop working in a later version",
                )
            )
    if errors:
        raise RecipeError(errors + warnings)
    return data, source, warnings


def _matches(data: Any, pattern: tuple[str, ...], prefix: KeyPath = ()) -> Iterator[KeyPath]:
    """Every concrete path in ``data`` that ``pattern`` names."""
    if not pattern:
        yield prefix
        return
    head, rest = pattern[0], pattern[1:]
    if head == ANY:
        if isinstance(data, list):
            for i, item in enumerate(data):
                yield from _matches(item, rest, (*prefix, i))
    elif isinstance(data, dict) and head in data:
        yield from _matches(data[head], rest, (*prefix, head))


def _fill(pattern: tuple[str, ...], concrete: KeyPath) -> KeyPath:
    """``pattern`` with its ``"*"`` segments taken, in order, from ``concrete``'s indices."""
    indices = iter(seg for seg in concrete if isinstance(seg, int))
    return tuple(next(indices) if seg == ANY else seg for seg in pattern)


def _get(data: Any, path: KeyPath) -> Any:
    for seg in path:
        if isinstance(data, dict) and isinstance(seg, str) and seg in data:
            data = data[seg]
        elif isinstance(data, list) and isinstance(seg, int) and seg < len(data):
            data = data[seg]
        else:
            return None
    return data


def _table(data: dict[str, Any], path: KeyPath) -> dict[str, Any]:
    """The table at ``path``, created where missing (a key can move to a table not written yet).

    `migrate` has checked that whatever exists on the way is a table.
    """
    for seg in path:
        data = data.setdefault(seg, {}) if isinstance(seg, str) else data[seg]
    return data
