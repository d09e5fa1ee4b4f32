"""How the command line tells the user what went wrong, and the exit status it leaves.

Every `recipec` command reports through this module, so that a mistake reads the same
whichever command found it: errors and warnings in the format of `recipec.diagnostics`
(``error: ...``, ``  --> file:line:col``, the source line, ``= help: ...``), on stderr,
coloured as the root command's ``--color`` says. Click's own usage errors take the same
form (see `recipec.cli`).

Exit status, for every command:

====  =====================================================================================
0     success (`EXIT_OK`)
1     something was found (`EXIT_DIFFERENT`: `diff` found differences, `verify` drift,
      `schema --check` a stale file), or the work could not be done although the recipe is
      fine (`EXIT_FAILED`: bad data, a missing training extra, a file in the way)
2     a mistake by the user (`EXIT_USAGE`): the recipe, the arguments, a run or build
      directory that is not one
130   interrupted (`EXIT_INTERRUPTED`)
====  =====================================================================================

`recipec run` exits with the training's own status once training has started.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from .diagnostics import Diagnostic, RecipeError, format_diagnostics, format_message, visible_text

EXIT_OK = 0
"""Success."""
EXIT_DIFFERENT = 1
"""Something was found: `diff` found differences, `verify` drift, `schema --check` a stale file."""
EXIT_FAILED = 1
"""The recipe is fine but the work could not be done: bad data, a missing training extra, a file in the way."""
EXIT_USAGE = 2
"""A mistake by the user: the recipe, the arguments, a run or build directory that is not one."""
EXIT_INTERRUPTED = 130
"""Interrupted with Ctrl-C (128 + SIGINT)."""


def color() -> bool:
    """Whether stderr output is coloured: the root command's ``--color/--no-color``, else
    whether stderr is a terminal."""
    ctx = click.get_current_context(silent=True)
    chosen = ctx.find_root().params.get("color") if ctx else None
    return sys.stderr.isatty() if chosen is None else chosen


def diagnostics(found: Sequence[Diagnostic]) -> None:
    """Print errors and warnings, sorted by position, with the summary line; nothing if none."""
    if found:
        paint = color()
        click.echo(format_diagnostics(list(found), color=paint), err=True, color=paint)


def error(message: str, help: str | None = None) -> None:
    """Print one error that points at no recipe line: ``error: message`` (and ``= help:``)."""
    _message(Diagnostic("error", message, None, help))


def warning(message: str, help: str | None = None) -> None:
    """Print one warning that points at no recipe line: ``warning: message``."""
    _message(Diagnostic("warning", message, None, help))


def info(line: str) -> None:
    """Print a line of progress or findings on stderr (not an error), made safe for a terminal."""
    click.echo(visible_text(line), err=True)


def fail(problem: RecipeError | str, code: int = EXIT_USAGE, help: str | None = None) -> NoReturn:
    """Report `problem` (every diagnostic of a RecipeError, or one plain error) and exit."""
    if isinstance(problem, RecipeError):
        diagnostics(problem.diagnostics)
    else:
        error(problem, help)
    sys.exit(code)


def click_error(exc: click.ClickException) -> None:
    """Print one of click's errors (a usage error, a bad parameter, a ClickException) in the
    house format; the caller exits with ``exc.exit_code``."""
    help = None
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:  # a usage error: say how the command is called and where its help is
        usage = ctx.get_usage().removeprefix("Usage: ")
        names = ctx.help_option_names
        help = f"usage: {usage}" + (f"; see `{ctx.command_path} {max(names, key=len)}`" if names else "")
    message = exc.format_message()
    if message[:1].isupper() and message[1:2].islower():  # click's "Missing argument 'RECIPE'."
        message = message[0].lower() + message[1:]
    error(message.removesuffix(".") if not message.endswith("..") else message, help)


def _message(d: Diagnostic) -> None:
    paint = color()
    click.echo(format_message(d, color=paint), err=True, color=paint)
