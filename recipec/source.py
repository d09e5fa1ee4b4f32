"""Reading recipes: TOML text, a source map of key positions, ``--set`` overrides.

``tomllib`` is the parsing truth. Once it has accepted a document, a small
scanner walks the same text and records where every key and value was
written, so later stages can point errors at the exact line and column.
Command-line overrides (``--set key.path=value``) are parsed here too and
recorded in the source map so that their errors point at the argument.

Standard library only: this module must stay cheap to import.
"""

from __future__ import annotations

import ast
import copy
import datetime as _dt
import difflib
import json
import os
import re
import tomllib
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from recipec.diagnostics import OVERRIDE_FILE, Diagnostic, Location, RecipeError

__all__ = [
    "KeyPath",
    "SourceMap",
    "apply_overrides",
    "format_key_path",
    "parse_override",
    "parse_recipe",
    "read_recipe",
]

KeyPath = tuple[str | int, ...]
"""A path into the recipe: ``("data", "sources", 0, "path")``; ints index arrays."""

Span = tuple[int, int]  # [start, end) character offsets

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BARE_KEY_FULL = re.compile(r"[A-Za-z0-9_-]+\Z")
_OVERRIDE_HELP = "write overrides as `--set key.path=value`, e.g. `--set train.max_steps=100`"


class _ScanError(Exception):
    """The scanner met text it does not understand (only for invalid TOML)."""


# --------------------------------------------------------------------------
# Public helpers
# --------------------------------------------------------------------------


def format_key_path(path: Sequence[str | int]) -> str:
    """Render a key path the way a user would write it.

    Args:
        path: The key path, e.g. ``("data", "sources", 0, "path")``.

    Returns:
        ``"data.sources[0].path"``; keys that are not bare TOML keys are
        quoted, e.g. ``'peft."a.b"'``.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if _BARE_KEY_FULL.match(part) else json.dumps(part, ensure_ascii=False)
        out += f".{text}" if out else text
    return out


# --------------------------------------------------------------------------
# The scanner
# --------------------------------------------------------------------------


class _Scanner:
    """Records key and value spans of a (valid) TOML document.

    Attributes:
        keys: Key path -> span of the key text. For ``[a.b]`` headers and
            dotted keys the span runs from the first segment to the segment
            of that path, so ``("a", "b")`` covers ``a.b``.
        values: Key path -> span of the value text.
        explicit: Paths whose span is their own definition (not just a
            prefix of a longer key); these win over implicit ones.
    """

    def __init__(self, text: str, base_offset: int = 0):
        self.text = text
        self.n = len(text)
        self.pos = 0
        self.base = base_offset
        self.keys: dict[KeyPath, Span] = {}
        self.values: dict[KeyPath, Span] = {}
        self.explicit: set[KeyPath] = set()
        self.table: KeyPath = ()
        self._aot: dict[KeyPath, int] = {}

    # -- driving ----------------------------------------------------------

    def run(self, stop: int | None = None) -> None:
        """Scan statements until the end of the text (or ``stop``)."""
        end = self.n if stop is None else stop
        while True:
            self._skip_blank()
            if self.pos >= end or self.pos >= self.n:
                return
            if self.text.startswith("[[", self.pos):
                self._header(array=True)
            elif self.text[self.pos] == "[":
                self._header(array=False)
            else:
                self._keyval(self.table)

    # -- recording --------------------------------------------------------

    def _record(self, path: KeyPath, span: Span, explicit: bool) -> None:
        span = (span[0] + self.base, span[1] + self.base)
        if path not in self.keys or (explicit and path not in self.explicit):
            self.keys[path] = span
        if explicit:
            self.explicit.add(path)

    def _record_value(self, path: KeyPath, span: Span) -> None:
        self.values.setdefault(path, (span[0] + self.base, span[1] + self.base))

    # -- statements -------------------------------------------------------

    def _header(self, array: bool) -> None:
        self.pos += 2 if array else 1
        segs = self.key()
        self.skip_ws()
        close = "]]" if array else "]"
        if not self.text.startswith(close, self.pos):
            raise _ScanError(f"expected {close!r} at {self.pos}")
        self.pos += len(close)
        self.table = self.resolve_header(segs, array=array, record=True)

    def resolve_header(self, segs, *, array: bool, record: bool) -> KeyPath:
        """Turn header key segments into a key path (with array indices)."""
        path: KeyPath = ()
        first = segs[0][1]
        for i, (name, _, end) in enumerate(segs):
            path += (name,)
            last = i == len(segs) - 1
            span = (first, end)
            if last and array:
                index = self._aot.get(path, 0)
                if record:
                    self._record(path, span, explicit=True)
                    self._aot[path] = index + 1
                path += (index,)
                if record:
                    self._record(path, span, explicit=True)
            else:
                if record:
                    self._record(path, span, explicit=last)
                if not last and path in self._aot:
                    path += (self._aot[path] - 1,)
        return path

    def _keyval(self, base: KeyPath) -> None:
        segs = self.key()
        self.skip_ws()
        if self.pos >= self.n or self.text[self.pos] != "=":
            raise _ScanError(f"expected '=' at {self.pos}")
        self.pos += 1
        self.skip_ws()
        path = base
        first = segs[0][1]
        for i, (name, _, end) in enumerate(segs):
            path += (name,)
            self._record(path, (first, end), explicit=i == len(segs) - 1)
        self._value(path)

    # -- keys -------------------------------------------------------------

    def key(self) -> list[tuple[str, int, int]]:
        """Parse a (possibly dotted) key: ``(name, start, end)`` per segment."""
        segs = []
        while True:
            self.skip_ws()
            start = self.pos
            if self.pos >= self.n:
                raise _ScanError("key expected at end of text")
            ch = self.text[self.pos]
            if ch == '"':
                self._basic_string()
                name = tomllib.loads("k = " + self.text[start : self.pos])["k"]
            elif ch == "'":
                self._literal_string()
                name = self.text[start + 1 : self.pos - 1]
            else:
                m = _BARE_KEY.match(self.text, self.pos)
                if not m:
                    raise _ScanError(f"key expected at {self.pos}")
                self.pos = m.end()
                name = m.group()
            segs.append((name, start, self.pos))
            save = self.pos
            self.skip_ws()
            if self.pos < self.n and self.text[self.pos] == ".":
                self.pos += 1
                continue
            self.pos = save
            return segs

    # -- values -----------------------------------------------------------

    def _value(self, path: KeyPath) -> Span:
        start = self.pos
        text = self.text
        if text.startswith('"""', start):
            self._multiline('"""')
        elif text.startswith("'''", start):
            self._multiline("'''")
        elif start >= self.n:
            raise _ScanError("value expected at end of text")
        elif text[start] == '"':
            self._basic_string()
        elif text[start] == "'":
            self._literal_string()
        elif text[start] == "[":
            self._array(path)
        elif text[start] == "{":
            self._inline_table(path)
        else:
            self._bare_value()
        span = (start, self.pos)
        self._record_value(path, span)
        return span

    def _array(self, path: KeyPath) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip_blank()
            if self.pos >= self.n:
                raise _ScanError("unclosed array")
            if self.text[self.pos] == "]":
                self.pos += 1
                return
            element = path + (index,)
            span = self._value(element)
            self._record(element, span, explicit=True)
            index += 1
            self._skip_blank()
            if self.pos < self.n and self.text[self.pos] == ",":
                self.pos += 1

    def _inline_table(self, path: KeyPath) -> None:
        self.pos += 1
        while True:
            self._skip_blank()
            if self.pos >= self.n:
                raise _ScanError("unclosed inline table")
            if self.text[self.pos] == "}":
                self.pos += 1
                return
            self._keyval(path)
            self._skip_blank()
            if self.pos < self.n and self.text[self.pos] == ",":
                self.pos += 1

    def _bare_value(self) -> None:
        start = self.pos
        while self.pos < self.n and self.text[self.pos] not in ",]}#\r\n":
            self.pos += 1
        while self.pos > start and self.text[self.pos - 1] in " \t":
            self.pos -= 1
        if self.pos == start:
            raise _ScanError(f"value expected at {start}")

    def _basic_string(self) -> None:
        self.pos += 1
        while self.pos < self.n:
            ch = self.text[self.pos]
            if ch == "\\":
                self.pos += 2
            elif ch == '"':
                self.pos += 1
                return
            elif ch == "\n":
                break
            else:
                self.pos += 1
        raise _ScanError("unterminated string")

    def _literal_string(self) -> None:
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            raise _ScanError("unterminated string")
        self.pos = end + 1

    def _multiline(self, quote: str) -> None:
        self.pos += 3
        while self.pos < self.n:
            ch = self.text[self.pos]
            if ch == "\\" and quote == '"""':
                self.pos += 2
            elif self.text.startswith(quote, self.pos):
                # Up to two quotes may sit right before the closing delimiter.
                run = 3
                while run < 5 and self.text.startswith(quote[0], self.pos + run):
                    run += 1
                self.pos += run
                return
            else:
                self.pos += 1
        raise _ScanError("unterminated multi-line string")

    # -- whitespace -------------------------------------------------------

    def skip_ws(self) -> None:
        while self.pos < self.n and self.text[self.pos] in " \t":
            self.pos += 1

    def _skip_blank(self) -> None:
        """Skip whitespace, newlines and comments."""
        while self.pos < self.n:
            ch = self.text[self.pos]
            if ch in " \t\r\n":
                self.pos += 1
            elif ch == "#":
                end = self.text.find("\n", self.pos)
                self.pos = self.n if end < 0 else end
            else:
                return


def _scan(text: str, base_offset: int = 0) -> _Scanner:
    """Scan ``text``, keeping whatever was recorded if the text is malformed."""
    scanner = _Scanner(text, base_offset)
    try:
        scanner.run()
    except (_ScanError, IndexError, tomllib.TOMLDecodeError):
        pass
    return scanner


# --------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Override:
    """A parsed ``--set`` argument with the spans needed to point into it."""

    arg: str
    path: KeyPath
    value: object
    key_spans: tuple[Span, ...]  # span in ``arg`` of each path element
    value_span: Span
    inner_keys: Mapping[KeyPath, Span] = field(default_factory=dict)
    inner_values: Mapping[KeyPath, Span] = field(default_factory=dict)

    def location(self, span: Span) -> Location:
        start, end = span
        return Location(OVERRIDE_FILE, 0, start + 1, max(end - start, 1), self.arg)

    def key_span(self, depth: int) -> Span:
        """The key text up to and including path element ``depth`` (1-based)."""
        return (self.key_spans[0][0], self.key_spans[depth - 1][1])

    def inner_key_span(self, rest: KeyPath) -> Span:
        """The span of ``rest`` (or its nearest written ancestor) inside the value."""
        for depth in range(len(rest), 0, -1):
            if rest[:depth] in self.inner_keys:
                return self.inner_keys[rest[:depth]]
        return self.value_span

    def element_span(self, depth: int) -> Span:
        """Just path element ``depth`` (1-based), e.g. ``[5]`` or ``max_steps``."""
        return self.key_spans[depth - 1]


def _override_error(
    arg: str, message: str, span: Span, help: str | None = _OVERRIDE_HELP
) -> RecipeError:
    start, end = span
    loc = Location(OVERRIDE_FILE, 0, start + 1, max(end - start, 1), arg)
    return RecipeError([Diagnostic("error", message, loc, help)])


def _parse_key_path(arg: str, end: int) -> tuple[KeyPath, tuple[Span, ...]]:
    """Parse ``arg[:end]`` as ``a.b[0]."c.d"``; returns the path and element spans."""
    pos = 0
    while pos < end and arg[pos] in " \t":
        pos += 1
    stop = end
    while stop > pos and arg[stop - 1] in " \t":
        stop -= 1
    if pos == stop:
        raise _override_error(arg, "missing key before `=` in --set", (end, end + 1))
    path: list[str | int] = []
    spans: list[Span] = []
    while True:
        seg_start = pos
        ch = arg[pos] if pos < stop else ""
        if ch == '"':
            close = pos + 1
            while close < stop and arg[close] != '"':
                close += 2 if arg[close] == "\\" else 1
            if close >= stop:
                raise _override_error(arg, "unterminated quoted key in --set", (seg_start, stop))
            try:
                name = tomllib.loads("k = " + arg[pos : close + 1])["k"]
            except tomllib.TOMLDecodeError:
                span = (seg_start, close + 1)
                raise _override_error(arg, "invalid quoted key in --set", span) from None
            pos = close + 1
        elif ch == "'":
            close = arg.find("'", pos + 1, stop)
            if close < 0:
                raise _override_error(arg, "unterminated quoted key in --set", (seg_start, stop))
            name = arg[pos + 1 : close]
            pos = close + 1
        else:
            m = _BARE_KEY.match(arg, pos, stop)
            if not m:
                what = f"`{ch}`" if ch else "end of key"
                raise _override_error(
                    arg, f"invalid key in --set: expected a key name, found {what}", (pos, pos + 1)
                )
            name = m.group()
            pos = m.end()
        path.append(name)
        spans.append((seg_start, pos))
        while pos < stop and arg[pos] == "[":
            close = arg.find("]", pos, stop)
            digits = arg[pos + 1 : close].strip() if close >= 0 else ""
            if close < 0 or not digits.isdigit():
                span = (pos, close + 1 if close >= 0 else stop)
                raise _override_error(
                    arg,
                    "invalid array index in --set: expected `[N]` with N a non-negative integer",
                    span,
                )
            spans.append((pos, close + 1))
            pos = close + 1
            path.append(int(digits))
        if pos >= stop:
            return tuple(path), tuple(spans)
        if arg[pos] == ".":
            pos += 1
            continue
        raise _override_error(
            arg, f"invalid key in --set: unexpected `{arg[pos]}`", (pos, pos + 1)
        )


def _find_equals(arg: str) -> int:
    """Index of the first ``=`` outside a quoted key, or -1."""
    quote = None
    i = 0
    while i < len(arg):
        ch = arg[i]
        if quote is None and ch == "=":
            return i
        if quote == '"' and ch == "\\":
            i += 1
        elif ch in "\"'" and quote in (None, ch):
            quote = None if quote else ch
        i += 1
    return -1


def _parse_override(arg: str) -> _Override:
    eq = _find_equals(arg)
    if eq < 0:
        raise _override_error(
            arg, f"--set expects `key=value`, got `{arg}`", (0, len(arg)) if arg else (0, 1)
        )
    path, key_spans = _parse_key_path(arg, eq)
    start = eq + 1
    while start < len(arg) and arg[start] in " \t":
        start += 1
    raw = arg[start:].rstrip()
    value_span = (start, start + len(raw)) if raw else (eq, eq + 1)
    inner_keys: dict[KeyPath, Span] = {}
    inner_values: dict[KeyPath, Span] = {}
    try:
        document = tomllib.loads("v = " + raw)
    except tomllib.TOMLDecodeError:
        document = {}
    except RecursionError:  # tomllib recurses once per [ or {
        raise _override_error(arg, _TOO_DEEP, value_span, None) from None
    if list(document) != ["v"]:  # not a TOML value (or more than one statement)
        value: object = raw
    else:
        value = document["v"]
        if raw[0] in "[{":
            scanner = _scan("v = " + raw, base_offset=start - 4)
            for sub, span in scanner.keys.items():
                if len(sub) > 1:
                    inner_keys[sub[1:]] = span
            for sub, span in scanner.values.items():
                if len(sub) > 1:
                    inner_values[sub[1:]] = span
    return _Override(arg, path, value, key_spans, value_span, inner_keys, inner_values)


def parse_override(arg: str) -> tuple[KeyPath, object]:
    """Parse one ``--set`` argument.

    The key is a dotted path (``train.max_steps``), with ``[N]`` to index
    arrays (``data.sources[0].path``) and TOML quoting for odd keys. The
    value is read as a TOML value (``20`` is an int, ``3e-4`` a float,
    ``true`` a bool, ``[0.9, 0.95]`` a list, ``"x"`` a string); text that is
    not a TOML value is taken as a plain string, so ``model.path=./models/x``
    works unquoted.

    Args:
        arg: The argument, e.g. ``"train.max_steps=20"``.

    Returns:
        The key path and the parsed value.

    Raises:
        RecipeError: The argument has no ``=`` or its key is malformed.
    """
    override = _parse_override(arg)
    return override.path, override.value


_TYPE_NAMES = [
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (dict, "a table"),
    (list, "an array"),
    (_dt.datetime, "a datetime"),
    (_dt.date, "a date"),
    (_dt.time, "a time"),
]


def _type_name(value: object) -> str:
    for kind, name in _TYPE_NAMES:
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"


class _ApplyError(Exception):
    def __init__(self, message: str, depth: int, help: str | None = None):
        super().__init__(message)
        self.message = message
        self.depth = depth
        self.help = help


def _set_path(root: dict, path: KeyPath, value: object) -> None:
    """Set ``root[path] = value`` in place, creating missing tables."""
    if not path:
        raise _ApplyError("empty key path", 0)
    node: object = root
    for depth, key in enumerate(path):
        last = depth == len(path) - 1
        here = format_key_path(path[: depth + 1])
        parent = format_key_path(path[:depth])
        if isinstance(key, int):
            if not isinstance(node, list):
                raise _ApplyError(
                    f"cannot index `{parent}` with [{key}]: it is {_type_name(node)}, not an array",
                    depth + 1,
                )
            if key >= len(node):
                count = len(node)
                entries = "1 entry" if count == 1 else f"{count} entries"
                indices = {0: "", 1: " (index 0)"}.get(count, f" (indices 0 to {count - 1})")
                hint = f"`{parent}` has {entries}{indices}"
                raise _ApplyError(f"no such entry `{here}`", depth + 1, hint)
            if last:
                node[key] = copy.deepcopy(value)
                return
            node = node[key]
            continue
        if not isinstance(node, dict):
            what = f"`{parent}`" if parent else "the recipe"
            raise _ApplyError(
                f"cannot set `{format_key_path(path)}`: {what} is {_type_name(node)}, not a table",
                depth,
                f"use `[N]` to pick an entry, e.g. `{parent}[0].{key}`"
                if isinstance(node, list)
                else None,
            )
        if last:
            node[key] = copy.deepcopy(value)
            return
        if key not in node:
            if isinstance(path[depth + 1], int):
                raise _ApplyError(
                    f"no such entry `{format_key_path(path[: depth + 2])}`",
                    depth + 2,
                    f"`{here}` is not set, so it has no entries",
                )
            node[key] = {}
        node = node[key]


def _apply(data: Mapping, overrides: Sequence[_Override]) -> dict:
    result = copy.deepcopy(dict(data))
    errors = []
    for override in overrides:
        try:
            _set_path(result, override.path, override.value)
        except _ApplyError as exc:
            depth = max(exc.depth, 1)
            loc = override.location(override.element_span(min(depth, len(override.path))))
            errors.append(Diagnostic("error", exc.message, loc, exc.help))
    if errors:
        raise RecipeError(errors)
    return result


def apply_overrides(data: dict, overrides: Sequence[tuple[KeyPath, object]]) -> dict:
    """Apply parsed overrides to a recipe dict.

    Later overrides win; a table value replaces the whole table. Missing
    intermediate tables are created; array indices must already exist.

    Args:
        data: The parsed recipe; it is not modified.
        overrides: ``(key_path, value)`` pairs, e.g. from
            :func:`parse_override`.

    Returns:
        A new dict with the overrides applied.

    Raises:
        RecipeError: An override indexes a missing array entry or goes
            through a value that is not a table; every such error is
            reported at once.
    """
    parsed = []
    for path, value in overrides:
        path = tuple(path)
        text = format_key_path(path)
        _, spans = _parse_key_path(text, len(text))
        parsed.append(_Override(text, path, value, spans, (0, len(text))))
    return _apply(data, parsed)


def _contains(value: object, path: KeyPath) -> bool:
    for key in path:
        if isinstance(key, int):
            if not isinstance(value, list) or not 0 <= key < len(value):
                return False
        elif not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return True


# --------------------------------------------------------------------------
# The source map
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SourceMap:
    """Where each key and value of a recipe was written.

    Build one with :func:`read_recipe` (or ``SourceMap(file, text)``, which
    scans ``text`` itself). Lookups take key paths such as
    ``("data", "sources", 0, "path")``.

    Attributes:
        file: The display path as the user gave it.
        text: The recipe text.
    """

    file: str
    text: str
    overrides: tuple[_Override, ...] = field(default=(), repr=False)
    aliases: tuple[tuple[KeyPath, KeyPath], ...] = field(default=(), repr=False)
    """(new path, old path) of keys `recipec.migrate` moved: the new one is found where the old one was written."""

    def __post_init__(self) -> None:
        scanner = _scan(self.text)
        starts = [0]
        starts.extend(i + 1 for i, ch in enumerate(self.text) if ch == "\n")
        object.__setattr__(self, "_keys", scanner.keys)
        object.__setattr__(self, "_values", scanner.values)
        object.__setattr__(self, "_line_starts", starts)

    def with_overrides(self, overrides: Sequence[_Override]) -> SourceMap:
        """Return a copy that also knows about the given ``--set`` overrides."""
        return replace(self, overrides=self.overrides + tuple(overrides))

    def with_aliases(self, aliases: Sequence[tuple[KeyPath, KeyPath]]) -> SourceMap:
        """Return a copy that locates each new path (and what is under it) at its old path."""
        return replace(self, aliases=self.aliases + tuple(aliases))

    # -- lookups ----------------------------------------------------------

    def paths(self) -> list[KeyPath]:
        """Every key path written in the file (tables, keys, array entries), in text order."""
        return sorted(self._keys, key=lambda path: self._keys[path][0])

    def locate(self, path: KeyPath) -> Location:
        """Where a key was written.

        For a ``[table]`` header the span is the header text inside the
        brackets; for a dotted key it runs from the first segment to this
        one. A key set by ``--set`` points at its key text in the argument
        (`value_location` gives the value). A path that was never written falls back to its nearest written
        ancestor, and finally to ``Location(file, 0, 0)`` (the whole file).

        Args:
            path: The key path.

        Returns:
            The location; never None.
        """
        path = self._translate(path)
        while path:
            kind, override, _ = self._resolve(path)
            if kind == "file":
                return self._location(self._keys[path])
            if kind == "value":
                rest = path[len(override.path) :]
                if not rest:  # the overridden key itself: its key text, as for a key in the file
                    return override.location(override.key_span(len(path)))
                return override.location(override.inner_key_span(rest))
            if kind == "key":
                return override.location(override.key_span(len(path)))
            path = path[:-1]
        return Location(self.file, 0, 0)

    def value_location(self, path: KeyPath) -> Location:
        """Where a key's value was written (falls back to :meth:`locate`).

        Args:
            path: The key path.

        Returns:
            The span of the value (for multi-line values, its first line).
        """
        path = self._translate(path)
        kind, override, _ = self._resolve(path) if path else (None, None, False)
        if kind == "file" and path in self._values:
            return self._location(self._values[path])
        if kind == "value":
            rest = path[len(override.path) :]
            if rest in override.inner_values or not rest:
                return override.location(override.inner_values.get(rest, override.value_span))
        return self.locate(path)

    def is_set(self, path: KeyPath) -> bool:
        """Whether the key is written in the file or set by ``--set``.

        Args:
            path: The key path.

        Returns:
            False when the value will come from a default.
        """
        path = self._translate(path)
        return not path or self._resolve(path)[2]

    def origin(self, path: KeyPath) -> str | None:
        """Where a value came from, for lock files and ``explain`` output.

        Args:
            path: The key path.

        Returns:
            ``"recipes/x.toml:12"``, ``"--set train.max_steps=20"``, or
            None when the key is not set (its value is a default).
        """
        path = self._translate(path)
        if not path:
            return self.file
        kind, override, exists = self._resolve(path)
        if not exists:
            return None
        if kind == "file":
            return f"{self.file}:{self._location(self._keys[path]).line}"
        return f"{OVERRIDE_FILE} {override.arg}"

    # -- internals --------------------------------------------------------

    def _translate(self, path: KeyPath) -> KeyPath:
        """``path`` as the file wrote it, before a migration renamed a key on it."""
        path = tuple(path)
        for new, old in reversed(self.aliases):
            if path[: len(new)] == new:
                path = old + path[len(new) :]
        return path

    def _resolve(self, path: KeyPath) -> tuple[str | None, _Override | None, bool]:
        """Who last defined ``path``, and whether it exists after the overrides.

        The kind is ``"file"`` when the file wrote it, ``"value"`` when
        override ``o`` set it or one of its ancestors (the path may not exist
        in that value), ``"key"`` when ``o`` created it as an intermediate
        table, and None when nothing did.
        """
        kind: str | None = "file" if path in self._keys else None
        source: _Override | None = None
        exists = kind is not None
        for override in self.overrides:
            n = len(override.path)
            if path[:n] == override.path:
                kind, source = "value", override
                exists = _contains(override.value, path[n:])
            elif override.path[: len(path)] == path and not exists:
                kind, source, exists = "key", override, True
        return kind, source, exists

    def _location(self, span: Span) -> Location:
        start, end = span
        index = bisect_right(self._line_starts, start) - 1
        line_start = self._line_starts[index]
        line_end = self.text.find("\n", line_start)
        if line_end < 0:
            line_end = len(self.text)
        line_text = self.text[line_start:line_end].removesuffix("\r")
        stop = min(end, line_start + len(line_text))
        return Location(
            self.file, index + 1, start - line_start + 1, max(stop - start, 1), line_text
        )


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------


_AT_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*\Z")
_AT_END = re.compile(r"\s*\(at end of document\)\s*\Z")
_DECLARE_TWICE = re.compile(r"Cannot declare (\(.*\)) twice")
_KEYWORD_VALUES = {"true", "false", "inf", "nan", "+inf", "-inf", "+nan", "-nan"}


def _file_diagnostic(file: str, message: str, help: str | None = None) -> RecipeError:
    return RecipeError([Diagnostic("error", message, Location(file, 0, 0), help)])


def _read_text(file: str) -> str:
    if os.path.isdir(file):
        raise _file_diagnostic(file, "cannot read recipe: Is a directory")
    try:
        with open(file, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError as exc:
        message = f"cannot read recipe: {exc.strerror}"
        raise _file_diagnostic(file, message, _similar_file(file)) from None
    except OSError as exc:
        raise _file_diagnostic(file, f"cannot read recipe: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _file_diagnostic(
            file,
            f"cannot read recipe: not valid UTF-8 (byte 0x{raw[exc.start]:02x} on line {line})",
            "save the recipe as UTF-8",
        ) from None
    return text.removeprefix("\ufeff")


def _similar_file(file: str) -> str | None:
    folder, name = os.path.split(file)
    try:
        candidates = os.listdir(folder or ".")
    except OSError:
        return None
    matches = difflib.get_close_matches(name, candidates, n=1, cutoff=0.8)
    if not matches:
        return None
    return f"did you mean `{os.path.join(folder, matches[0])}`?"


def _line_text(text: str, line: int) -> str:
    lines = text.split("\n")
    return lines[line - 1].removesuffix("\r") if 0 < line <= len(lines) else ""


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str, file: str) -> RecipeError:
    message = str(exc)
    line = col = 0
    if m := _AT_POSITION.search(message):
        line, col = int(m.group(1)), int(m.group(2))
        message = message[: m.start()]
    elif m := _AT_END.search(message):
        message = message[: m.start()]
        body = text.rstrip()
        line = body.count("\n") + 1
        col = len(body) - (body.rfind("\n") + 1) + 1
    elif getattr(exc, "lineno", None):
        message = getattr(exc, "msg", message)
        line, col = exc.lineno, exc.colno
    if m := _DECLARE_TWICE.match(message):
        try:
            table = format_key_path(ast.literal_eval(m.group(1)))
            message = f"Cannot declare table `{table}` twice"
        except (ValueError, SyntaxError):
            pass
    source_line = _line_text(text, line) if line else None
    length = 1
    help = None
    if message == "Invalid value" and source_line is not None:
        help = _unquoted_string_help(source_line, col)
    elif message == "Illegal character '\\n'" and (source_line or "")[: col - 1].count('"') % 2:
        help = 'close the string on the same line, or use """ for a multi-line string'
    elif message.startswith("Expected '=' after a key"):
        help = "write each setting as `key = value`"
    elif message == "Cannot overwrite a value" or message.startswith("Cannot declare"):
        found = _first_definition(text, line)
        if found is not None:
            (col, length), earlier = found
            help = f"`{earlier[0]}` is already defined on line {earlier[1]}"
    location = Location(file, line, col, length, source_line) if line else Location(file, 0, 0)
    return RecipeError([Diagnostic("error", f"invalid TOML: {message}", location, help)])


_MAX_DEPTH = 100
_TOO_DEEP = f"invalid TOML: arrays and inline tables nested more than {_MAX_DEPTH} deep"


def _too_deep(text: str, file: str) -> Diagnostic:
    """The diagnostic for text nested too deeply for tomllib, at the first `[`/`{` past `_MAX_DEPTH`."""
    depth, i, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith(('"""', "'''"), i):
            end = text.find(text[i : i + 3], i + 3)
            i = n if end < 0 else end + 3
        elif ch in "\"'":
            i += 1
            while i < n and text[i] not in (ch, "\n"):
                i += 2 if ch == '"' and text[i] == "\\" else 1
            i += 1
        else:
            depth += ch in "[{"
            depth -= depth > 0 and ch in "]}"
            if depth > _MAX_DEPTH:
                line = text.count("\n", 0, i) + 1
                col = i - (text.rfind("\n", 0, i) + 1) + 1
                return Diagnostic("error", _TOO_DEEP, Location(file, line, col, 1, _line_text(text, line)))
            i += 1
    return Diagnostic("error", _TOO_DEEP, Location(file, 0, 0))


def _unquoted_string_help(source_line: str, col: int) -> str | None:
    rest = source_line[max(col - 1, 0) :]
    word = re.match(r"[^#\r\n,\]}]*", rest).group().strip()
    if not word or word.lower() in _KEYWORD_VALUES or not re.match(r"[A-Za-z_./~]", word):
        return None
    quoted = json.dumps(word, ensure_ascii=False)
    key = re.match(r"\s*([^=\[{]+?)\s*=\s*\Z", source_line[: max(col - 1, 0)])
    if key:
        return f"strings must be quoted: {key.group(1)} = {quoted}"
    return f"strings must be quoted: {quoted}"


def _first_definition(text: str, line: int) -> tuple[tuple[int, int], tuple[str, int]] | None:
    """For a duplicate on ``line``: the key's (col, length) and its earlier (name, line)."""
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    if not 0 < line <= len(starts):
        return None
    line_start = starts[line - 1]
    scanner = _Scanner(text)
    try:
        scanner.run(stop=line_start)
        scanner.pos = line_start
        scanner.skip_ws()
        if text.startswith("[", scanner.pos):
            scanner.pos += 2 if text.startswith("[[", scanner.pos) else 1
            segs = scanner.key()
            path = scanner.resolve_header(segs, array=False, record=False)
        else:
            segs = scanner.key()
            path = scanner.table + tuple(name for name, _, _ in segs)
    except (_ScanError, IndexError, tomllib.TOMLDecodeError):
        return None
    for depth in range(len(path), 0, -1):
        prefix = path[:depth]
        if prefix in scanner.keys:
            earlier = bisect_right(starts, scanner.keys[prefix][0])
            span = (segs[0][1] - line_start + 1, segs[-1][2] - segs[0][1])
            return span, (format_key_path(prefix), earlier)
    return None


def parse_recipe(
    text: str, file: str = "<recipe>", overrides: Sequence[str] = ()
) -> tuple[dict, SourceMap]:
    """Parse recipe text that is already in memory.

    Args:
        text: The TOML text.
        file: The display path used in diagnostics.
        overrides: ``--set`` arguments, applied in order after parsing.

    Returns:
        The recipe dict (overrides applied) and its source map.

    Raises:
        RecipeError: The text is not valid TOML or an override is invalid;
            all such errors are reported together.
    """
    return _parse(text, file, overrides, [])


def read_recipe(path: str | os.PathLike, overrides: Sequence[str] = ()) -> tuple[dict, SourceMap]:
    """Read a TOML recipe file and apply ``--set`` overrides.

    Args:
        path: The recipe file; it is displayed exactly as given.
        overrides: ``--set`` arguments such as ``"train.max_steps=20"``,
            applied in order after parsing.

    Returns:
        The recipe dict (overrides applied) and its source map.

    Raises:
        RecipeError: The file cannot be read, is not valid TOML, or an
            override is invalid; all such errors are reported together.
    """
    file = os.fsdecode(path)
    errors: list[Diagnostic] = []
    try:
        text = _read_text(file)
    except RecipeError as exc:
        errors.extend(exc.diagnostics)
        text = None
    return _parse(text, file, overrides, errors)


def _parse(
    text: str | None, file: str, overrides: Sequence[str], errors: list[Diagnostic]
) -> tuple[dict, SourceMap]:
    data: dict = {}
    if text is not None:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            errors.extend(_syntax_error(exc, text, file).diagnostics)
        except RecursionError:  # tomllib recurses once per [ or {
            errors.append(_too_deep(text, file))
    parsed = []
    for arg in overrides:
        try:
            parsed.append(_parse_override(arg))
        except RecipeError as exc:
            errors.extend(exc.diagnostics)
    if errors:
        raise RecipeError(errors)
    sourcemap = SourceMap(file, text)
    if parsed:
        data = _apply(data, parsed)
        sourcemap = sourcemap.with_overrides(parsed)
    return data, sourcemap
