"""Looking at finished and running runs: `recipec plot` and `recipec runs`.

A run directory (``runs/<name>/``) holds ``metrics.jsonl``, one JSON object per line,
written by the generated train.py::

    {"step": 0, "eval_loss": 8.34, "tokens": 0}
    {"step": 3, "loss": 8.25, "lr": 0.003, "grad_norm": 1.16, "tokens": 12288, ...}

and ``run.json`` (name, status, start and end, wall time, lock hash, final metrics). A
run that has not written ``run.json`` yet (or whose ``run.json`` was lost) is still shown
from its ``metrics.jsonl`` alone, with status ``unknown``.

:func:`loss_figure` draws the comparison plot and returns the matplotlib ``Figure``
unsaved, so tests can read the drawn lines; :func:`plot_png` renders it to PNG bytes,
byte-identical for identical inputs on a given installation (the same approach as
:mod:`recipec.plot`). :func:`list_runs` and :func:`format_runs_table` back
``recipec runs``. matplotlib is imported only inside the plotting functions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from . import report
from .runtime import summary

X_AXES = ("steps", "tokens", "both")

PANEL_WIDTH_IN = 4.4
PANEL_HEIGHT_IN = 3.2
DPI = 100

RUN_COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
)
"""One colour per run, in the order the runs are given; cycled beyond ten runs."""

LOG_SCALE_RATIO = 2.0
"""A loss axis is logarithmic when its largest value is at least this many times its
smallest (and every value is positive); a flatter curve reads better on a linear axis."""

MARKERS_UP_TO = 60
"""A training curve of at most this many points also gets a dot at every point."""

MAX_TITLE_CHARS = 110

# (metrics key, panel title, y label); eval_loss_parent shares the eval panel, dashed.
PANELS = (
    ("loss", "training loss", "loss"),
    ("eval_loss", "eval loss", "loss"),
    ("lr", "learning rate", "learning rate"),
)
PARENT_KEY = "eval_loss_parent"
SOURCE_STYLES = (":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
"""Line styles of the evaluation sources' losses (eval_loss_<name>) in the eval panel, in order of appearance."""
NUMBER_KEYS = ("loss", "eval_loss", PARENT_KEY, "lr", "tokens")


class RunError(Exception):
    """A run directory or one of its files cannot be read; the message names the path."""


@dataclass(frozen=True)
class Run:
    """One run directory's metrics, ready to plot.

    Attributes:
        name: ``name`` from run.json, else the directory's name.
        path: The run directory.
        metrics: Every line of metrics.jsonl, as dicts, in file order.
    """

    name: str
    path: Path
    metrics: list[dict[str, Any]]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read a metrics.jsonl file: one JSON object per line, blank lines skipped.

    Every line must be an object with an integer ``step``; ``loss``, ``eval_loss``,
    ``eval_loss_parent``, ``lr`` and ``tokens``, when present, must be numbers (NaN and
    infinity are allowed: a diverged run is still worth plotting).

    Raises:
        RunError: The file is missing or unreadable, holds no line, or a line is not
            such an object; the message names the file and the line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunError(f"{path.parent}: no metrics.jsonl (not a run directory, or no step logged yet)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: cannot read: {exc}") from None
    metrics = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(record, dict):
            raise RunError(f"{where}: expected a JSON object, got {type(record).__name__}")
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise RunError(f"{where}: `step` must be an integer, got {step!r}")
        for key in NUMBER_KEYS:
            value = record.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise RunError(f"{where}: `{key}` must be a number, got {value!r}")
        metrics.append(record)
    if not metrics:
        raise RunError(f"{path}: empty: no step logged yet")
    return metrics


def read_run_json(path: Path) -> dict[str, Any]:
    """Read a run.json file into a dict.

    Raises:
        RunError: The file is unreadable, not valid JSON or not a JSON object.
    """
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: cannot read: {exc}") from None
    if not isinstance(info, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(info).__name__}")
    return info


def load_run(run_dir: Path) -> Run:
    """Read a run directory's metrics.jsonl, and its name from run.json when there is one.

    Raises:
        RunError: ``run_dir`` is not a directory, or its metrics.jsonl (or run.json)
            cannot be read; the message names the path.
    """
    if not run_dir.is_dir():
        what = "not a directory" if run_dir.exists() else "no such directory"
        raise RunError(f"{run_dir}: {what}")
    metrics = read_metrics(run_dir / "metrics.jsonl")
    name = run_dir.resolve().name
    if (run_dir / "run.json").is_file():
        recorded = read_run_json(run_dir / "run.json").get("name")
        if isinstance(recorded, str) and recorded:
            name = recorded
    return Run(name=name, path=run_dir, metrics=metrics)


def series(metrics: Sequence[dict[str, Any]], key: str, x: str) -> tuple[list[float], list[float]]:
    """The points of ``key`` against ``x`` (``"steps"`` or ``"tokens"``), in file order.

    Lines without ``key`` (or, against tokens, without ``tokens``) are skipped; a value
    that is not finite becomes NaN, which matplotlib draws as a gap.
    """
    xs: list[float] = []
    ys: list[float] = []
    x_key = "step" if x == "steps" else "tokens"
    for record in metrics:
        value, at = record.get(key), record.get(x_key)
        if value is None or at is None:
            continue
        xs.append(float(at))
        ys.append(float(value) if math.isfinite(value) else math.nan)
    return xs, ys


@contextmanager
def _style() -> Iterator[None]:
    """matplotlib's default style plus recipec's overrides, whatever the user's rc says."""
    import matplotlib
    import matplotlib.style

    from .plot import _RC_OVERRIDES

    with matplotlib.style.context("default"), matplotlib.rc_context(rc=_RC_OVERRIDES):
        yield


def loss_figure(runs: Sequence[Run], x: str = "both") -> Any:
    """Draw training loss, eval loss and learning rate of ``runs`` into a new Figure.

    One column per quantity; one row per x axis: optimizer steps, tokens, or both (steps
    above, tokens below). Each run has one colour, named in the legend below the panels;
    ``eval_loss_parent`` (continual runs) is drawn dashed in the eval panel, and each
    evaluation source's ``eval_loss_<name>`` in a line style of its own. The training
    and eval loss panels of a row share their limits, on a logarithmic axis when the
    losses span a factor of :data:`LOG_SCALE_RATIO` or more. A panel with no data for
    any run says so instead of staying blank.

    Args:
        runs: The runs, in legend order.
        x: ``"steps"``, ``"tokens"`` or ``"both"``.

    Returns:
        A ``matplotlib.figure.Figure`` with an Agg canvas, not yet saved.

    Raises:
        ValueError: No runs, or an unknown ``x``.
    """
    if not runs:
        raise ValueError("no runs to plot")
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from .plot import _ellipsize

    rows = ["steps", "tokens"] if x == "both" else [x]
    labels = _legend_labels(runs)
    has_parent = any(PARENT_KEY in m for run in runs for m in run.metrics)
    sources = list(dict.fromkeys(k for run in runs for m in run.metrics for k in m if k.startswith("eval_loss_") and k != PARENT_KEY))
    styles = {PARENT_KEY: "--", **{k: SOURCE_STYLES[i % len(SOURCE_STYLES)] for i, k in enumerate(sources)}}

    with _style():
        fig = Figure(
            figsize=(PANEL_WIDTH_IN * len(PANELS), PANEL_HEIGHT_IN * len(rows) + 0.7),
            dpi=DPI,
            facecolor="white",
            layout="constrained",
        )
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(rows), len(PANELS), squeeze=False)
        for r, row in enumerate(rows):
            values: dict[str, list[float]] = {}
            for c, (key, _title, _ylabel) in enumerate(PANELS):
                ax = axes[r][c]
                keys = (key, PARENT_KEY, *sources) if key == "eval_loss" else (key,)
                drawn: list[float] = []
                for i, run in enumerate(runs):
                    colour = RUN_COLOURS[i % len(RUN_COLOURS)]
                    for k in keys:
                        xs, ys = series(run.metrics, k, row)
                        if not xs:
                            continue
                        sparse = k not in ("loss", "lr") or len(xs) <= MARKERS_UP_TO  # evals are few
                        ax.plot(
                            xs,
                            ys,
                            color=colour,
                            linewidth=1.5,
                            linestyle=styles.get(k, "-"),
                            marker="o" if sparse else None,
                            markersize=3.0,
                            label=f"{labels[i]} {k}",
                            gid=f"{labels[i]}|{k}|{row}",
                        )
                        drawn.extend(y for y in ys if math.isfinite(y))
                values[key] = drawn
            # training and eval loss on one scale, so the two panels compare at a glance
            losses = values["loss"] + values["eval_loss"]
            for c, (key, title, ylabel) in enumerate(PANELS):
                scale_from = losses if key != "lr" and values[key] else values[key]
                _decorate(axes[r][c], key, title if r == 0 else None, ylabel, row, scale_from)
            if values["loss"] and values["eval_loss"]:
                limits = axes[r][0].get_ylim() + axes[r][1].get_ylim()
                for ax in axes[r][:2]:
                    ax.set_ylim(min(limits), max(limits))

        handles = [
            Line2D([], [], color=RUN_COLOURS[i % len(RUN_COLOURS)], linewidth=2.0, label=labels[i])
            for i in range(len(runs))
        ]
        if has_parent:
            handles.append(Line2D([], [], color="#555555", linestyle="--", label="dashed: eval on parent's split"))
        handles += [Line2D([], [], color="#555555", linestyle=styles[k], label=k) for k in sources]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), frameon=False)
        names = ", ".join(labels)
        fig.suptitle(_ellipsize(f"{names}: loss, eval loss and learning rate", MAX_TITLE_CHARS))
    return fig


def plot_png(runs: Sequence[Run], x: str = "both") -> bytes:
    """Render :func:`loss_figure` to PNG bytes, identical for identical inputs.

    Raises:
        ValueError: As :func:`loss_figure`.
    """
    import io

    buf = io.BytesIO()
    with _style():
        fig = loss_figure(runs, x)
        fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def _legend_labels(runs: Sequence[Run]) -> list[str]:
    """Run names, with the directory added where two runs share a name."""
    names = [run.name for run in runs]
    return [
        f"{run.name} ({run.path.as_posix()})" if names.count(run.name) > 1 else run.name for run in runs
    ]


def _decorate(ax: Any, key: str, title: str | None, ylabel: str, row: str, drawn: list[float]) -> None:
    """Axis labels, scales and tick formats of one panel."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    if title:
        ax.set_title(title)
    ax.set_xlabel("optimizer step" if row == "steps" else "tokens")
    ax.set_ylabel(ylabel)
    ax.grid(True, color="#e6e6e6", linewidth=0.6)
    ax.set_axisbelow(True)
    if row == "tokens":
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _count(v)))
    if not drawn:
        name = "eval_loss" if key == "eval_loss" else key
        ax.text(
            0.5,
            0.5,
            f"no {name} in metrics.jsonl",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="#808080",
            parse_math=False,
        )
        return
    if key == "lr":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        return
    low, high = min(drawn), max(drawn)
    if low > 0 and high / low >= LOG_SCALE_RATIO:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        # within about a decade there is no major tick to read: label the minor ones
        ax.yaxis.set_minor_formatter(plain if high / low <= 10 else NullFormatter())


def _count(value: float) -> str:
    """A token count for a tick: 0, 950, 12.3k, 4.5M, 2.1B."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def list_runs(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Summarise every run directory under ``root`` (``root`` itself included).

    A run directory is one holding run.json, or metrics.jsonl alone (status
    ``unknown``). Values missing from run.json (a run still going) are taken from the
    last lines of metrics.jsonl. A run.json or metrics.jsonl that cannot be read does
    not stop the listing: the run is listed with what could be read, and a warning
    names the file.

    Returns:
        The rows, sorted by start time (runs without one last, then by name), each a
        dict with ``name``, ``path``, ``status``, ``steps``, ``tokens``,
        ``final_loss``, ``final_eval_loss``, ``best_eval_loss``, ``wall_s``, ``lock_sha256`` and
        ``started`` (``None`` where unknown); and the warnings.

    Raises:
        RunError: ``root`` is not a directory.
    """
    if not root.is_dir():
        what = "not a directory" if root.exists() else "no such directory"
        raise RunError(f"{root}: {what}")
    dirs = {p.parent for p in root.rglob("run.json") if p.is_file()}
    dirs |= {p.parent for p in root.rglob("metrics.jsonl") if p.is_file()}
    warnings: list[str] = []
    rows = [_summary(d, warnings) for d in sorted(dirs)]
    rows.sort(key=lambda row: (_start_key(row["started"]) is None, _start_key(row["started"]) or 0.0, row["name"]))
    return rows, warnings


def _summary(run_dir: Path, warnings: list[str]) -> dict[str, Any]:
    """One row of :func:`list_runs`; problems are appended to ``warnings``."""
    info: dict[str, Any] = {}
    if (run_dir / "run.json").is_file():
        try:
            info = read_run_json(run_dir / "run.json")
        except RunError as exc:
            warnings.append(str(exc))
    metrics: list[dict[str, Any]] = []
    if (run_dir / "metrics.jsonl").is_file():
        try:
            metrics = read_metrics(run_dir / "metrics.jsonl")
        except RunError as exc:
            warnings.append(str(exc))
    final = info.get("final") if isinstance(info.get("final"), dict) else {}
    best = info.get("best") if isinstance(info.get("best"), dict) else {}
    # what the script records when the run ends, computed the same way from metrics.jsonl
    so_far = summary.final_and_best(metrics)

    def last(key: str) -> Any:
        return next((m[key] for m in reversed(metrics) if m.get(key) is not None), None)

    def pick(recorded: Any, fallback: Any) -> Any:
        return recorded if recorded is not None else fallback

    name = info.get("name")
    status = info.get("status") or "unknown"
    if status == "completed" and isinstance(info.get("stopped_early"), dict):  # train.early_stopping_patience
        status = "stopped early"
    return {
        "name": name if isinstance(name, str) and name else run_dir.resolve().name,
        "path": run_dir.as_posix(),
        "status": status,
        "steps": pick(info.get("steps"), last("step")),
        "tokens": pick(info.get("tokens"), last("tokens")),
        "final_loss": pick(final.get("loss"), so_far["final"]["loss"]),
        "final_eval_loss": pick(final.get("eval_loss"), so_far["final"].get("eval_loss")),
        "best_eval_loss": pick(best.get("eval_loss"), so_far["best"].get("eval_loss")),
        "wall_s": info.get("wall_s"),
        "lock_sha256": info.get("lock_sha256"),
        "started": info.get("started"),
    }


def _start_key(started: Any) -> float | None:
    """Seconds since the epoch of an ISO start time, or ``None`` when absent or unparsable."""
    if not isinstance(started, str):
        return None
    try:
        moment = datetime.fromisoformat(started)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


TABLE_COLUMNS = ("name", "status", "steps", "tokens", "loss", "eval loss", "best eval", "wall", "lock", "started", "path")


def format_runs_table(rows: Sequence[dict[str, Any]]) -> str:
    """The ``recipec runs`` table: a header and one aligned line per row, ``-`` for unknown."""
    lines = [list(TABLE_COLUMNS)]
    for row in rows:
        lines.append(
            [
                str(row["name"]),
                str(row["status"]),
                _cell(row["steps"], lambda v: f"{v:,}"),
                _cell(row["tokens"], _count),
                _cell(row["final_loss"], lambda v: f"{v:.4f}"),
                _cell(row["final_eval_loss"], lambda v: f"{v:.4f}"),
                _cell(row["best_eval_loss"], lambda v: f"{v:.4f}"),
                _cell(row["wall_s"], _duration),
                _cell(row["lock_sha256"], lambda v: str(v)[:12]),
                _cell(row["started"], _started),
                str(row["path"]),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(TABLE_COLUMNS))]
    numeric = {2, 3, 4, 5, 6, 7}  # right-aligned

    def join(line: list[str]) -> str:
        cells = (c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
        return "  ".join(cells).rstrip()

    return "\n".join(join(line) for line in lines)


def _cell(value: Any, fmt: Callable[[Any], str]) -> str:
    """``fmt(value)``; ``-`` for a missing value, ``str(value)`` for one of an unexpected type."""
    if value is None:
        return "-"
    try:
        return fmt(value)
    except (TypeError, ValueError):
        return str(value)


def _duration(seconds: float) -> str:
    """``42s``, ``1m33s`` or ``2h05m``."""
    total = int(round(float(seconds)))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def _started(started: str) -> str:
    """An ISO start time as ``YYYY-MM-DD HH:MM`` (the recorded time zone), else as written."""
    try:
        return datetime.fromisoformat(started).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return started


@click.command(short_help="Plot loss, eval loss and LR of runs against steps and tokens.")
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PNG to write (default: RUN_DIR/plot.png for one run, runs.png here for several).",
)
@click.option(
    "--x",
    "x",
    type=click.Choice(X_AXES),
    default="both",
    show_default=True,
    help="Plot against optimizer steps, tokens, or both (two rows).",
)
def plot(run_dirs: tuple[Path, ...], output: Path | None, x: str) -> None:
    """Plot training loss, eval loss and learning rate of one or more runs.

    Reads RUN_DIR/metrics.jsonl of each run (e.g. runs/quickstart) and draws one PNG:
    a panel per quantity, against optimizer steps and against tokens, one colour per
    run. eval_loss_parent (continual runs) is dashed in the eval panel.
    """
    try:
        loaded = [load_run(d) for d in run_dirs]
    except RunError as exc:
        report.fail(str(exc))
    if output is None:
        output = run_dirs[0] / "plot.png" if len(run_dirs) == 1 else Path("runs.png")
    png = plot_png(loaded, x)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(png)
    except OSError as exc:
        report.fail(f"{output}: cannot write: {exc.strerror or exc}")
    click.echo(f"wrote {output.as_posix()}")


@click.command(short_help="List runs with their lock hash and final metrics.")
@click.argument("root", metavar="[DIR]", default="runs", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of runs instead of a table.")
def runs(root: Path, as_json: bool) -> None:
    """List the runs under DIR (default: runs), oldest first.

    One line per run directory (one holding run.json or metrics.jsonl): name, status,
    steps, tokens, final loss and eval loss, the lowest eval loss, wall time, the first 12 characters of the
    lock hash (recipe.lock.json of the build that ran), the start time and the directory.
    """
    try:
        rows, warnings = list_runs(root)
    except RunError as exc:
        report.fail(str(exc))
    for warning in warnings:
        report.warning(warning)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        click.echo(format_runs_table(rows))
    if not rows:
        report.info(f"no runs under {root.as_posix()} (a run directory holds run.json or metrics.jsonl)")
