"""User-facing diagnostics: errors and warnings that point at the recipe line.

Mistakes in a recipe are reported the way rustc reports them: a one-line
message, the file position, the offending source line with the span
underlined, and an optional help hint. This module only formats what it is
given; it never sees exceptions or validator internals.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "OVERRIDE_FILE",
    "Diagnostic",
    "Location",
    "RecipeError",
    "did_you_mean",
    "format_diagnostics",
    "format_message",
    "sort_diagnostics",
    "visible_text",
]

#: The pseudo file name used for locations inside a ``--set`` argument.
OVERRIDE_FILE = "--set"

_TAB_WIDTH = 4

_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_STYLE = {
    "error": "\x1b[1;31m",
    "warning": "\x1b[1;33m",
    "gutter": "\x1b[1;34m",
}


@dataclass(frozen=True)
class Location:
    """A position in a recipe file or in a ``--set`` argument.

    Attributes:
        file: Display path exactly as the user gave it, or ``"--set"`` for a
            command-line override.
        line: 1-based line number; 0 when there is no line (a file-level
            problem, or a ``--set`` argument).
        col: 1-based column of the start of the span.
        length: Width of the ``^^^`` underline.
        source_line: Text of the line (for ``--set``: the whole argument).
    """

    file: str
    line: int
    col: int
    length: int = 1
    source_line: str | None = None


@dataclass(frozen=True)
class Diagnostic:
    """One error or warning, with an optional location and help hint."""

    severity: Literal["error", "warning"]
    message: str
    location: Location | None = None
    help: str | None = None


class RecipeError(Exception):
    """Raised with every error found at once; ``.diagnostics`` lists them."""

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__(format_diagnostics(self.diagnostics))


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """Suggest the closest candidate to a misspelt word.

    Args:
        word: The word the user wrote.
        candidates: The words that would have been accepted.

    Returns:
        ``"did you mean `x`?"`` for the closest candidate, or None when no
        candidate is close enough.
    """
    pool = list(dict.fromkeys(str(c) for c in candidates))
    matches = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Order diagnostics by position.

    Diagnostics are sorted by ``(file, line, col)``; errors and warnings are
    interleaved by position and the sort is stable. Diagnostics about
    ``--set`` arguments follow those about files and keep their order (the
    order of the arguments); diagnostics without a location come last.

    Args:
        diagnostics: The diagnostics to order.

    Returns:
        A new, sorted list.
    """

    def key(d: Diagnostic) -> tuple:
        loc = d.location
        if loc is None:
            return (2, "", 0, 0)
        if loc.file == OVERRIDE_FILE:
            return (1, "", 0, 0)
        return (0, loc.file, loc.line, loc.col)

    return sorted(diagnostics, key=key)


def format_diagnostics(diagnostics: Sequence[Diagnostic], *, color: bool = False) -> str:
    """Render diagnostics in rustc style, followed by a summary line.

    Args:
        diagnostics: The diagnostics to render; they are sorted by position.
        color: Add ANSI colours (bold red errors, yellow warnings, blue
            gutter).

    Returns:
        The rendered text without a trailing newline; an empty string when
        there are no diagnostics.
    """
    ordered = sort_diagnostics(diagnostics)
    if not ordered:
        return ""
    numbers = [
        len(str(d.location.line))
        for d in ordered
        if d.location is not None and d.location.line > 0 and d.location.file != OVERRIDE_FILE
    ]
    width = max(numbers, default=1)
    paint = _painter(color)
    blocks = ["\n".join(_render(d, width, paint)) for d in ordered]
    return "\n\n".join(blocks) + "\n" + _summary(ordered)


def format_message(diagnostic: Diagnostic, *, color: bool = False) -> str:
    """Render one diagnostic without the summary line.

    For a single problem that is not one of a recipe's errors (a run directory that is
    not one, a bad command-line argument): ``error: message`` and its help hint.

    Args:
        diagnostic: The diagnostic to render.
        color: Add ANSI colours, as in `format_diagnostics`.

    Returns:
        The rendered text without a trailing newline.
    """
    loc = diagnostic.location
    width = len(str(loc.line)) if loc is not None and loc.line > 0 and loc.file != OVERRIDE_FILE else 1
    return "\n".join(_render(diagnostic, width, _painter(color)))


def _painter(color: bool):
    def paint(text: str, style: str) -> str:
        if not color or not text:
            return text
        return f"{_STYLE.get(style, _BOLD)}{text}{_RESET}"

    return paint


def visible_text(text: str) -> str:
    """``text`` with every character a terminal would act on (escape sequences, bell, bidi
    overrides, line separators) replaced by U+FFFD, one for one so that carets still line up:
    a recipe's text must not be able to rewrite the screen it is reported on."""
    return "".join("\ufffd" if ch not in "\t\n" and unicodedata.category(ch) in _CONTROLS else ch for ch in text)


_CONTROLS = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _render(d: Diagnostic, width: int, paint) -> list[str]:
    pad = " " * width
    lines = [f"{paint(d.severity, d.severity)}{paint(': ' + visible_text(d.message), 'bold')}"]
    loc = d.location
    if loc is not None:
        arrow = paint("-->", "gutter")
        file = visible_text(loc.file)
        if loc.file == OVERRIDE_FILE:
            shown = visible_text(loc.source_line) if loc.source_line is not None else ""
            lines.append(f"{pad}{arrow} {OVERRIDE_FILE} {shown}".rstrip())
            if loc.source_line is not None:
                lines += _snippet(loc, pad, "", d.severity, paint)
        elif loc.line <= 0:
            lines.append(f"{pad}{arrow} {file}")
        else:
            lines.append(f"{pad}{arrow} {file}:{loc.line}:{max(loc.col, 1)}")
            if loc.source_line is not None:
                lines += _snippet(loc, pad, str(loc.line).rjust(width), d.severity, paint)
    if d.help:
        lines.append(f"{pad} {paint('=', 'gutter')} help: {visible_text(d.help)}")
    return lines


def _snippet(loc: Location, pad: str, number: str, severity: str, paint) -> list[str]:
    """The ``|``-gutter block: blank bar, source line, underline."""
    bar = paint("|", "gutter")
    raw = visible_text(loc.source_line.rstrip("\r\n"))
    text = raw.expandtabs(_TAB_WIDTH)
    start = min(max(loc.col, 1) - 1, len(raw))
    end = min(start + max(loc.length, 1), len(raw))
    before = _display_width(raw[:start].expandtabs(_TAB_WIDTH))
    through = _display_width(raw[:end].expandtabs(_TAB_WIDTH))
    carets = "^" * max(through - before, 1)
    numbered = f"{paint(number, 'gutter')} " if number else f"{pad} "
    return [
        f"{pad} {bar}",
        f"{numbered}{bar} {text}".rstrip(),
        f"{pad} {bar} {' ' * before}{paint(carets, severity)}",
    ]


def _display_width(text: str) -> int:
    """Terminal columns taken by ``text`` (wide East Asian characters count 2)."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def _summary(ordered: Sequence[Diagnostic]) -> str:
    errors = sum(1 for d in ordered if d.severity == "error")
    warnings = len(ordered) - errors
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    text = " and ".join(parts)
    for d in ordered:
        if d.location is not None and d.location.file and d.location.file != OVERRIDE_FILE:
            return f"{text} in {visible_text(d.location.file)}"
    return text
