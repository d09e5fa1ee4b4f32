"""The schedule plot: the learning rate at every optimizer step, drawn at compile time.

Every build holds ``schedule.png`` so a reviewer sees the schedule before a single step
runs. :func:`schedule_png` returns the PNG bytes; it does not touch the disk.

The bytes are deterministic for a given matplotlib / FreeType / Pillow installation: the
same inputs give byte-identical PNGs across calls and processes, because builds are
hashed in a lock file. To that end the figure is drawn with the Agg canvas through the
object-oriented API (no pyplot, no global backend switch), under matplotlib's default
style rather than whatever the user's matplotlibrc or style sheets set, with the DejaVu
Sans font that ships with matplotlib, and without the PNG "Software" text chunk (the
only metadata matplotlib writes to a PNG; it names the matplotlib version).

matplotlib (and numpy) are imported inside :func:`schedule_png`, so importing this module
costs nothing for the commands that never plot. Importing and drawing take about a second,
most of a build's time; :func:`cached` keeps each drawing under the project's
``.recipec/plots/`` keyed by everything that decides its bytes, so a rebuild of the same
schedule does not import matplotlib at all.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

WIDTH_IN = 8.0
HEIGHT_IN = 4.0
DPI = 100

MAX_POINTS = 4000
"""Above this many steps the curve is downsampled to about this many points, keeping the
minimum and the maximum of every bucket of steps, so cyclic and restart shapes survive."""

MARKERS_UP_TO = 100
"""Runs of at most this many steps also get a dot at every step."""

# Light band colours, cycled over the phases; each label box takes its band's colour.
PHASE_COLOURS = ("#dbe8f5", "#fbe3cc", "#dcefd6", "#ece0f3", "#f7efc4", "#d6eeee")
CURVE_COLOUR = "#1b4f8a"
PEAK_COLOUR = "#b8322a"
MIN_COLOUR = "#2f7d4f"
TEXT_COLOUR = "#262626"
BOUNDARY_COLOUR = "#9a9a9a"

LABEL_FONTSIZE = 8.0
MAX_LABEL_CHARS = 40
MAX_ROTATED_CHARS = 24
MAX_TITLE_CHARS = 100
MAX_STAGGER_ROWS = 3
LABEL_PAD_PX = 3.0  # inside each label box
LABEL_GAP_PX = 4.0  # between neighbouring label boxes
TOP_PAD_PX = 4.0  # between the top of the axes and the first row of labels
CURVE_CLEARANCE_PX = 8.0  # between the lowest label and the highest point of the curve

# Applied on top of matplotlib's defaults; everything else is the default style.
_RC_OVERRIDES: dict[str, Any] = {
    "font.family": ["DejaVu Sans"],
    "font.size": 9.0,
    "axes.titlesize": 11.0,
    "axes.labelsize": 9.5,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "text.usetex": False,
}


def schedule_png(
    lrs: Sequence[float],
    phases: Sequence[Mapping],
    *,
    title: str,
    peak_lr: float,
    min_lr: float | None = None,
) -> bytes:
    """Plot the learning rate at every optimizer step and return the PNG bytes.

    The plot (800x400 pixels) shows the learning rate against the optimizer step, each
    phase shaded in its own light colour and named at the top of its band as
    ``"name (shape)"``, the peak learning rate (and the minimum, when given) as a dashed
    horizontal line labelled with its value in the right margin, and ``title`` above.
    Phase labels that do not fit their band are staggered over up to
    :data:`MAX_STAGGER_ROWS` rows, then rotated, and when even rotated labels would
    collide the labels of the narrowest phases are left out (a note says how many).

    Args:
        lrs: ``lrs[s]`` is the learning rate used at optimizer step ``s`` (0-based).
        phases: Consecutive phases covering the run, each a mapping with at least
            ``"name"`` (str), ``"first_step"`` (int), ``"steps"`` (int) and
            ``"shape"`` (str).
        title: The plot title.
        peak_lr: The peak learning rate, marked with a dashed line.
        min_lr: The minimum learning rate, marked likewise; ``None`` for no line.

    Returns:
        The PNG file's bytes, identical for identical inputs on a given installation.

    Raises:
        ValueError: On an empty ``lrs``, a learning rate that is not a finite number, or
            a phase without its keys.
    """
    values = [_finite(f"lrs[{i}]", v) for i, v in enumerate(lrs)]
    if not values:
        raise ValueError("lrs is empty: there is no optimizer step to plot")
    peak = _finite("peak_lr", peak_lr)
    low = None if min_lr is None else _finite("min_lr", min_lr)
    bands = [_phase(i, p) for i, p in enumerate(phases)]
    # the same drawing again (verify, diff and explain render the build a second time; a process compiling
    # many recipes draws one schedule for all that share it): the bytes of the first, as drawing gives them
    key = hashlib.sha256(json.dumps([values, list(phases), title, peak, low], sort_keys=True, default=str).encode()).hexdigest()
    if key in _DRAWN:
        _DRAWN.move_to_end(key)
        return _DRAWN[key]
    png = _draw(values, bands, title, peak, low)
    _DRAWN[key] = png
    while len(_DRAWN) > DRAWN_IN_MEMORY:
        _DRAWN.popitem(last=False)
    return png


DRAWN_IN_MEMORY = 16
"""Drawings :func:`schedule_png` keeps in memory, the most recently used."""

_DRAWN: OrderedDict[str, bytes] = OrderedDict()


def _draw(values: list[float], bands: list, title: str, peak: float, low: float | None) -> bytes:
    """:func:`schedule_png`'s drawing, of checked inputs."""
    import io

    import matplotlib
    import matplotlib.style
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    n = len(values)
    xs, ys = _downsample(np.asarray(values, dtype=float), MAX_POINTS)

    with matplotlib.style.context("default"), matplotlib.rc_context(rc=_RC_OVERRIDES):
        fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, facecolor="white")
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        renderer = canvas.get_renderer()

        # x: step s occupies [s - 0.5, s + 0.5], so a 1-step run still has a width.
        end = max([n] + [b["first_step"] + b["steps"] for b in bands])
        start = min([0] + [b["first_step"] for b in bands])
        ax.set_xlim(start - 0.5, end - 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True, min_n_ticks=1))
        ax.xaxis.set_major_formatter(FuncFormatter(_step_label))
        ax.set_xlabel("optimizer step", color=TEXT_COLOUR)
        ax.set_ylabel("learning rate", color=TEXT_COLOUR)
        ax.yaxis.set_major_formatter(_sci_formatter())
        _set_title(ax, renderer, str(title))

        for i, b in enumerate(bands):
            colour = PHASE_COLOURS[i % len(PHASE_COLOURS)]
            x0, x1 = b["first_step"] - 0.5, b["first_step"] + b["steps"] - 0.5
            ax.axvspan(x0, x1, facecolor=colour, edgecolor="none", zorder=0)
            if i:
                ax.axvline(x0, color=BOUNDARY_COLOUR, linewidth=0.6, linestyle=":", zorder=1)

        ax.axhline(peak, color=PEAK_COLOUR, linewidth=1.0, linestyle=(0, (5, 3)), zorder=2)
        if low is not None:
            ax.axhline(low, color=MIN_COLOUR, linewidth=1.0, linestyle=(0, (5, 3)), zorder=2)

        ax.plot(
            xs,
            ys,
            color=CURVE_COLOUR,
            linewidth=1.6,
            marker="o" if n <= MARKERS_UP_TO else None,
            markersize=3.0 if n > 1 else 5.0,
            solid_joinstyle="round",
            zorder=3,
        )

        data_lo = min(0.0, float(ys.min()), peak, low if low is not None else peak)
        data_hi = max(float(ys.max()), peak, low if low is not None else peak)
        if data_hi <= data_lo:
            data_hi = data_lo + (abs(data_lo) or 1.0)
        bottom = data_lo - 0.04 * (data_hi - data_lo)

        level_texts = _level_labels(ax, peak, low)
        label_texts: list[Any] = []
        omitted = 0
        region_px = 0.0
        # Lay out twice: the y limits depend on the labels' height, the axes' size on the
        # tick labels, and the labels' fit on the axes' size.
        ax.set_ylim(bottom, data_hi + 0.25 * (data_hi - bottom))
        for _ in range(2):
            fig.tight_layout(pad=0.6)
            for t in label_texts:
                t.remove()
            label_texts, omitted, region_px = _phase_labels(ax, renderer, bands)
            height_px = ax.get_window_extent(renderer).height
            free = max(height_px - region_px - CURVE_CLEARANCE_PX, 0.35 * height_px)
            ax.set_ylim(bottom, bottom + (data_hi - bottom) * height_px / free)
            _separate_levels(ax, renderer, level_texts, peak, low)
        fig.tight_layout(pad=0.6)

        if omitted:
            fig.text(
                0.995,
                0.01,
                f"{omitted} of {len(bands)} phase labels left out: bands too narrow",
                ha="right",
                va="bottom",
                fontsize=7.0,
                color="#707070",
                parse_math=False,
            )

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def _set_title(ax: Any, renderer: Any, title: str) -> None:
    """Set the title, shortened with an ellipsis until it fits the figure's width."""
    limit = MAX_TITLE_CHARS
    text = ax.set_title(_ellipsize(title, limit), color=TEXT_COLOUR, parse_math=False)
    room = ax.figure.bbox.width - 16
    while limit > 8 and text.get_window_extent(renderer).width > room:
        limit -= 4
        text.set_text(_ellipsize(title, limit))


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy scalars and the like
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def _phase(index: int, phase: Mapping) -> dict[str, Any]:
    missing = [k for k in ("name", "first_step", "steps", "shape") if k not in phase]
    if missing:
        raise ValueError(f"phases[{index}] has no {', '.join(repr(k) for k in missing)}")
    first, steps = phase["first_step"], phase["steps"]
    for key, value in (("first_step", first), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"phases[{index}][{key!r}] must be an integer, got {value!r}")
    return {
        "first_step": first,
        "steps": max(steps, 0),
        "label": _ellipsize(f"{phase['name']} ({phase['shape']})", MAX_LABEL_CHARS),
        "short": _short_label(str(phase["name"]), str(phase["shape"])),
    }


def _short_label(name: str, shape: str) -> str:
    """The label of a rotated (narrow) band: the full label when short, else the name
    alone, shortened in the middle so that both its start and its end still show."""
    full = " ".join(f"{name} ({shape})".split())
    if len(full) <= MAX_ROTATED_CHARS:
        return full
    name = " ".join(name.split())
    if len(name) <= MAX_ROTATED_CHARS:
        return name
    head = (MAX_ROTATED_CHARS - 1) // 2
    tail = MAX_ROTATED_CHARS - 1 - head
    return name[:head] + "\u2026" + name[-tail:]


def _ellipsize(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def _downsample(values: Any, target: int) -> tuple[Any, Any]:
    """(steps, lrs) of at most about ``target`` points that keep each bucket's extremes.

    The steps are split into ``target // 2`` buckets of equal size; each bucket keeps the
    step of its minimum and of its maximum (in step order), and the first and last steps
    are always kept, so the drawn path touches every peak and trough of the full curve.
    """
    import numpy as np

    n = len(values)
    if n <= target:
        return np.arange(n, dtype=float), values
    size = -(-n // max(target // 2, 1))
    full = (n // size) * size
    keep = [np.array([0, n - 1])]
    if full:
        blocks = values[:full].reshape(-1, size)
        offsets = np.arange(0, full, size)
        keep += [offsets + blocks.argmin(axis=1), offsets + blocks.argmax(axis=1)]
    if full < n:
        tail = values[full:]
        keep += [np.array([full + tail.argmin(), full + tail.argmax()])]
    index = np.unique(np.concatenate(keep))
    return index.astype(float), values[index]


def _step_label(x: float, _pos: Any) -> str:
    if abs(x - round(x)) > 1e-9:
        return ""
    return f"{int(round(x)):,}"


def _format_lr(value: float, digits: int = 1) -> str:
    return "0" if value == 0 else f"{value:.{digits}e}"


def _sci_formatter() -> Any:
    """A y-tick formatter: ``0`` or ``m.me-XX`` with as few digits as tell ticks apart."""
    from matplotlib.ticker import Formatter

    class SciFormatter(Formatter):
        digits = 1

        def set_locs(self, locs: Any) -> None:
            super().set_locs(locs)
            shown = [float(v) for v in locs if v != 0]
            for digits in range(1, 5):
                texts = [_format_lr(v, digits) for v in shown]
                exact = all(abs(float(t) - v) <= 1e-9 * abs(v) for t, v in zip(texts, shown))
                if exact and len(set(texts)) == len(texts):
                    break
            self.digits = digits

        def __call__(self, x: float, pos: Any = None) -> str:
            if x == 0 or abs(x) < 1e-300:
                return "0"
            return _format_lr(x, self.digits)

    return SciFormatter()


def _level_labels(ax: Any, peak: float, low: float | None) -> list[Any]:
    """The "peak ..." and "min ..." labels in the right margin, at their lines' heights."""
    texts = []
    for name, value, colour in (("peak", peak, PEAK_COLOUR), ("min", low, MIN_COLOUR)):
        if value is None:
            continue
        texts.append(
            ax.text(
                1.01,
                value,
                f"{name} {_format_lr(value)}",
                transform=ax.get_yaxis_transform(),
                ha="left",
                va="center",
                fontsize=8.5,
                color=colour,
                clip_on=False,
                parse_math=False,
            )
        )
    return texts


def _separate_levels(ax: Any, renderer: Any, texts: list[Any], peak: float, low: float | None) -> None:
    """Move the peak and min labels apart when their lines are too close to hold both."""
    if len(texts) < 2 or low is None:
        return
    peak_text, min_text = texts
    height = max(t.get_window_extent(renderer).height for t in texts)
    to_px = ax.transData.transform
    gap = abs(to_px((0, peak))[1] - to_px((0, low))[1])
    if gap >= height + 1:
        for t in texts:
            t.set_va("center")
        return
    upper, lower = (peak_text, min_text) if peak >= low else (min_text, peak_text)
    upper.set_va("bottom")
    lower.set_va("top")


def _phase_labels(ax: Any, renderer: Any, bands: list[dict[str, Any]]) -> tuple[list[Any], int, float]:
    """Draw the phase labels at the top of their bands.

    Returns the text artists, how many labels were left out, and the height in pixels
    that the labels take below the top of the axes.
    """
    from matplotlib.transforms import ScaledTranslation, blended_transform_factory

    if not bands:
        return [], 0, 0.0
    fig = ax.figure
    ax_box = ax.get_window_extent(renderer)
    to_px = ax.transData.transform
    blend = blended_transform_factory(ax.transData, ax.transAxes)
    px_to_pt = 72.0 / fig.dpi

    probe = ax.text(0, 0, "", fontsize=LABEL_FONTSIZE, parse_math=False)

    def measure(text: str) -> tuple[float, float]:
        probe.set_text(text)
        ext = probe.get_window_extent(renderer)
        return ext.width + 2 * LABEL_PAD_PX, ext.height + 2 * LABEL_PAD_PX

    # Measure every label once, horizontally; a rotated label is shortened.
    items = []
    for i, b in enumerate(bands):
        w, h = measure(b["label"])
        short = b["short"]
        x0 = max(to_px((b["first_step"] - 0.5, 0))[0], ax_box.x0)
        x1 = min(to_px((b["first_step"] + b["steps"] - 0.5, 0))[0], ax_box.x1)
        items.append(
            {
                "index": i,
                "label": b["label"],
                "w": w,
                "h": h,
                "short": short,
                "short_w": measure(short)[0] if short != b["label"] else w,
                "band": (x0, x1),
                "centre": (x0 + x1) / 2,
            }
        )
    probe.remove()
    row_h = max(it["h"] for it in items) + LABEL_GAP_PX / 2

    def horizontal_span(it: dict[str, Any]) -> tuple[float, float]:
        half = it["w"] / 2
        c = min(max(it["centre"], ax_box.x0 + half), ax_box.x1 - half)
        return c - half, c + half

    placed: list[tuple[dict[str, Any], int, bool, float]] = []  # item, row, rotated, centre px
    # 1. Every label fits its band: one row. 2. Staggered rows. 3. Rotated, thinned.
    if all(it["w"] + LABEL_GAP_PX <= it["band"][1] - it["band"][0] for it in items):
        placed = [(it, 0, False, it["centre"]) for it in items]
    else:
        rows_end: list[float] = []
        staggered = []
        for it in items:
            lo, hi = horizontal_span(it)
            row = next((r for r, e in enumerate(rows_end) if lo >= e + LABEL_GAP_PX), len(rows_end))
            if row == len(rows_end):
                rows_end.append(hi)
            else:
                rows_end[row] = hi
            staggered.append((it, row, False, (lo + hi) / 2))
        if len(rows_end) <= MAX_STAGGER_ROWS:
            placed = staggered
        else:
            # Rotated where the label does not fit its band; keep the widest phases first.
            taken: list[tuple[float, float]] = []
            order = sorted(items, key=lambda it: (-(it["band"][1] - it["band"][0]), it["index"]))
            for it in order:
                fits = it["w"] + LABEL_GAP_PX <= it["band"][1] - it["band"][0]
                if fits:
                    lo, hi = it["centre"] - it["w"] / 2, it["centre"] + it["w"] / 2
                else:
                    half = it["h"] / 2
                    c = min(max(it["centre"], ax_box.x0 + half), ax_box.x1 - half)
                    lo, hi = c - half, c + half
                if all(hi + LABEL_GAP_PX <= a or lo >= b + LABEL_GAP_PX for a, b in taken):
                    taken.append((lo, hi))
                    placed.append((it, 0, not fits, (lo + hi) / 2))
            placed.sort(key=lambda p: p[0]["index"])

    texts = []
    region = 0.0
    for it, row, rotated, centre_px in placed:
        colour = PHASE_COLOURS[it["index"] % len(PHASE_COLOURS)]
        x_data = ax.transData.inverted().transform((centre_px, 0))[0]
        down_px = TOP_PAD_PX + LABEL_PAD_PX + row * row_h
        offset = ScaledTranslation(0, -down_px * px_to_pt / 72.0, fig.dpi_scale_trans)
        t = ax.text(
            x_data,
            1.0,
            it["short"] if rotated else it["label"],
            transform=blend + offset,
            ha="center",
            va="top",
            rotation=90 if rotated else 0,
            rotation_mode="anchor" if not rotated else "default",
            fontsize=LABEL_FONTSIZE,
            color=TEXT_COLOUR,
            clip_on=False,
            zorder=4,
            parse_math=False,
            bbox={
                "boxstyle": f"round,pad={LABEL_PAD_PX * px_to_pt / LABEL_FONTSIZE:.3f}",
                "facecolor": colour,
                "edgecolor": _darker(colour),
                "linewidth": 0.6,
            },
        )
        texts.append(t)
        extent = (it["short_w"] if rotated else it["h"]) + LABEL_PAD_PX
        region = max(region, down_px + extent)
    return texts, len(bands) - len(placed), region


def _darker(colour: str, factor: float = 0.78) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{int(c * factor):02x}" for c in (r, g, b))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of every PNG

PLOT_PACKAGES = ("matplotlib", "numpy", "pillow")
"""The packages whose versions decide the PNG's bytes, besides this module's source."""


def cached(cache_dir: str | os.PathLike[str]) -> Callable[..., bytes]:
    """:func:`schedule_png` that reuses the PNG of an earlier call with the same inputs.

    The key is the sha256 of the arguments, this module's source and the versions of the
    plotting packages, so a hit is the PNG :func:`schedule_png` would draw now. An entry is
    written to a temporary file and renamed, so a reader never sees half a PNG; a cache
    directory that cannot be written costs time, never a build.
    """
    from importlib.metadata import PackageNotFoundError, version

    root = Path(cache_dir)
    versions = []
    for package in PLOT_PACKAGES:
        try:
            versions.append(version(package))
        except PackageNotFoundError:
            versions.append(None)
    drawing = [versions, Path(__file__).read_text(encoding="utf-8")]  # what decides the bytes besides the inputs

    def plot(lrs: Sequence[float], phases: Sequence[Mapping], *, title: str, peak_lr: float, min_lr: float | None = None) -> bytes:
        key = hashlib.sha256(
            json.dumps([list(lrs), list(phases), title, peak_lr, min_lr, *drawing], sort_keys=True, default=str).encode()
        ).hexdigest()
        path = root / f"{key}.png"
        try:
            png = path.read_bytes()
        except OSError:
            png = b""
        if png.startswith(PNG_SIGNATURE) and png.endswith(PNG_END):  # whole, as written
            return png
        png = schedule_png(lrs, phases, title=title, peak_lr=peak_lr, min_lr=min_lr)
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".png")
            with os.fdopen(fd, "wb") as f:
                f.write(png)
            os.replace(tmp, path)
        except OSError:
            pass
        return png

    return plot
