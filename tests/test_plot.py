"""The schedule plot: a PNG of the learning rate at every step, deterministic to the byte."""

from __future__ import annotations

import hashlib
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from recipec.plot import _downsample, schedule_png  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

PEAK = 3e-3
MIN = 3e-4


def wsd_lrs() -> list[float]:
    """Warmup (linear, 30 steps), stable (170), cooldown (1-sqrt, 100) down to a tenth."""
    lrs = []
    for s in range(300):
        if s < 30:
            lrs.append(PEAK * s / 30)
        elif s < 200:
            lrs.append(PEAK)
        else:
            lrs.append(MIN + (PEAK - MIN) * (1 - math.sqrt((s - 200) / 100)))
    return lrs


WSD_PHASES = [
    {"name": "warmup", "first_step": 0, "steps": 30, "shape": "linear"},
    {"name": "stable", "first_step": 30, "steps": 170, "shape": "constant"},
    {"name": "cooldown", "first_step": 200, "steps": 100, "shape": "1-sqrt"},
]


def restarts(n: int, warm: int, cycles: int) -> tuple[list[float], list[dict]]:
    lrs = []
    length = (n - warm) / cycles
    for s in range(n):
        if s < warm:
            lrs.append(PEAK * s / warm)
        else:
            p = ((s - warm) % length) / length
            lrs.append(MIN + (PEAK - MIN) * 0.5 * (1 + math.cos(math.pi * p)))
    phases = [
        {"name": "warmup", "first_step": 0, "steps": warm, "shape": "linear"},
        {"name": "decay", "first_step": warm, "steps": n - warm, "shape": "cosine_restarts"},
    ]
    return lrs, phases


def wsd_png(**overrides) -> bytes:
    kwargs = {"title": "tiny: warmup-stable-decay", "peak_lr": PEAK, "min_lr": MIN}
    kwargs.update(overrides)
    return schedule_png(wsd_lrs(), WSD_PHASES, **kwargs)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def png_chunks(data: bytes) -> list[bytes]:
    kinds, i = [], 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kinds.append(data[i + 4 : i + 8])
        i += 12 + length
    return kinds


def run_python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_png_of_about_800_by_400():
    data = wsd_png()
    assert data.startswith(PNG_SIGNATURE)
    width, height = png_size(data)
    assert 700 <= width <= 900 and 350 <= height <= 450
    assert 5_000 < len(data) < 1_000_000


def test_no_varying_metadata():
    # Only image chunks: no tEXt (Software names the matplotlib version), no tIME.
    assert set(png_chunks(wsd_png())) <= {b"IHDR", b"pHYs", b"IDAT", b"IEND"}


def test_identical_across_calls():
    assert wsd_png() == wsd_png()


DIGEST_CODE = """
import hashlib, math, sys
sys.path.insert(0, "tests")
from test_plot import wsd_png
print(hashlib.sha256(wsd_png()).hexdigest())
"""


def test_identical_across_processes(tmp_path):
    here = hashlib.sha256(wsd_png()).hexdigest()
    first = run_python(DIGEST_CODE, PYTHONHASHSEED="1")
    second = run_python(DIGEST_CODE, PYTHONHASHSEED="2")
    assert first == second == here


def test_user_matplotlib_config_is_ignored(tmp_path):
    # A matplotlibrc that changes nearly everything a plot depends on.
    (tmp_path / "matplotlibrc").write_text(
        "\n".join(
            [
                "font.size: 20",
                "font.family: serif",
                "lines.linewidth: 6",
                "axes.facecolor: black",
                "axes.prop_cycle: cycler('color', ['red'])",
                "figure.figsize: 3, 3",
                "figure.dpi: 50",
                "figure.autolayout: True",
                "savefig.dpi: 300",
                "savefig.bbox: tight",
                "savefig.transparent: True",
                "axes.formatter.use_mathtext: True",
                "text.antialiased: False",
                "",
            ]
        )
    )
    theirs = run_python(DIGEST_CODE, MPLCONFIGDIR=str(tmp_path))
    assert theirs == hashlib.sha256(wsd_png()).hexdigest()


def test_leaves_global_matplotlib_state_alone():
    # In a fresh process: rcParams (backend included, read without resolving it) are
    # unchanged and pyplot is never imported.
    code = """
import sys, matplotlib
from recipec.plot import schedule_png
def params():
    return {k: repr(matplotlib.rcParams._get(k)) for k in matplotlib.rcParams}
before = params()
schedule_png([0.0, 1e-3, 5e-4], [], title="t", peak_lr=1e-3, min_lr=0.0)
assert params() == before, [k for k in before if before[k] != params()[k]]
assert "matplotlib.pyplot" not in sys.modules
print("ok")
"""
    assert run_python(code) == "ok"


def test_font_is_the_one_matplotlib_ships():
    import matplotlib
    from matplotlib import font_manager

    path = font_manager.findfont(font_manager.FontProperties(family=["DejaVu Sans"]), fallback_to_default=False)
    assert Path(path).resolve().is_relative_to(Path(matplotlib.get_data_path()).resolve())


@pytest.mark.parametrize(
    "change",
    [
        {"title": "another title"},
        {"peak_lr": 2e-3},
        {"min_lr": None},
        {"min_lr": 1e-4},
    ],
)
def test_different_inputs_give_different_bytes(change):
    assert wsd_png(**change) != wsd_png()


def test_different_curve_or_phases_give_different_bytes():
    lrs = wsd_lrs()
    base = schedule_png(lrs, WSD_PHASES, title="t", peak_lr=PEAK)
    lrs2 = list(lrs)
    lrs2[250] *= 0.5
    assert schedule_png(lrs2, WSD_PHASES, title="t", peak_lr=PEAK) != base
    renamed = [dict(p) for p in WSD_PHASES]
    renamed[1]["name"] = "plateau"
    assert schedule_png(lrs, renamed, title="t", peak_lr=PEAK) != base


def test_one_step():
    data = schedule_png(
        [1e-3], [{"name": "only", "first_step": 0, "steps": 1, "shape": "constant"}], title="one", peak_lr=1e-3
    )
    assert png_size(data) == png_size(wsd_png())


def test_min_lr_none_and_no_phases():
    data = schedule_png(wsd_lrs(), [], title="no phases", peak_lr=PEAK, min_lr=None)
    assert data.startswith(PNG_SIGNATURE)


def test_many_narrow_phases():
    # 60 phases of 5 steps: labels cannot all sit side by side.
    phases = [{"name": f"phase{i}", "first_step": 5 * i, "steps": 5, "shape": "constant"} for i in range(60)]
    lrs = [1e-3 * (1 + (s // 5) % 3) / 3 for s in range(300)]
    data = schedule_png(lrs, phases, title="narrow", peak_lr=1e-3, min_lr=1e-4)
    assert data.startswith(PNG_SIGNATURE)
    # A few narrow bands among wide ones (staggered labels) and long names.
    phases = [
        {"name": "warmup", "first_step": 0, "steps": 3, "shape": "linear"},
        {"name": "ramp", "first_step": 3, "steps": 3, "shape": "linear"},
        {"name": "stable with an extremely long phase name indeed", "first_step": 6, "steps": 280, "shape": "constant"},
        {"name": "cooldown", "first_step": 286, "steps": 14, "shape": "1-sqrt"},
    ]
    assert schedule_png(lrs, phases, title="mixed", peak_lr=1e-3).startswith(PNG_SIGNATURE)


def test_200k_steps_are_drawn_from_a_few_thousand_points(monkeypatch):
    """matplotlib's time grows with the points it draws, so a 200k-step curve is downsampled to about
    MAX_POINTS before it is drawn (counted here rather than timed: a timing on a shared machine is noise)."""
    import recipec.plot as plot

    drawn = []
    real = plot._downsample
    monkeypatch.setattr(plot, "_downsample", lambda values, target: drawn.append(real(values, target)) or drawn[-1])
    lrs, phases = restarts(200_000, 4_000, 25)
    data = schedule_png(lrs, phases, title="200k", peak_lr=PEAK, min_lr=MIN)
    assert data.startswith(PNG_SIGNATURE)
    (xs, ys), = drawn
    assert len(xs) <= plot.MAX_POINTS + 2 and xs[0] == 0 and xs[-1] == 199_999
    assert max(ys) == max(lrs) and min(ys) == min(lrs)  # every peak and trough survives


def test_downsample_keeps_extremes_in_order():
    np = pytest.importorskip("numpy")
    lrs, _ = restarts(100_003, 1_000, 7)
    values = np.asarray(lrs)
    xs, ys = _downsample(values, 4000)
    assert len(xs) <= 4002
    assert list(xs) == sorted(set(xs))
    assert xs[0] == 0 and xs[-1] == len(values) - 1
    assert ys.max() == values.max() and ys.min() == values.min()
    assert all(values[int(x)] == y for x, y in zip(xs, ys))
    # every restart (jump back up to the peak) survives
    jumps = np.flatnonzero(np.diff(ys) > 0.5 * (PEAK - MIN))
    assert len(jumps) == 6
    small = np.arange(10.0)
    xs, ys = _downsample(small, 4000)
    assert list(ys) == list(small)


@pytest.mark.parametrize(
    ("lrs", "phases", "message"),
    [
        ([], [], "empty"),
        ([1e-3, float("nan")], [], "lrs\\[1\\]"),
        ([1e-3], [{"name": "x", "steps": 1, "shape": "constant"}], "first_step"),
    ],
)
def test_bad_input(lrs, phases, message):
    with pytest.raises(ValueError, match=message):
        schedule_png(lrs, phases, title="t", peak_lr=1e-3)


def test_import_does_not_import_matplotlib():
    out = run_python(
        "import sys, recipec.plot; print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'numpy')))"
    )
    assert out == "[]"


# -- the drawing cache ----------------------------------------------------------------------


def test_cached_plot_draws_once_and_returns_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from recipec import plot as plot_module

    kwargs = {"title": "tiny: warmup-stable-decay", "peak_lr": PEAK, "min_lr": MIN}
    fresh = schedule_png(wsd_lrs(), WSD_PHASES, **kwargs)
    cached = plot_module.cached(tmp_path / "plots")
    assert cached(wsd_lrs(), WSD_PHASES, **kwargs) == fresh
    (entry,) = (tmp_path / "plots").iterdir()
    assert entry.read_bytes() == fresh and entry.suffix == ".png"

    drawn = []
    monkeypatch.setattr(plot_module, "schedule_png", lambda *a, **k: drawn.append(1) or b"redrawn")
    assert cached(wsd_lrs(), WSD_PHASES, **kwargs) == fresh and not drawn  # a hit draws nothing
    # anything that changes the picture is another entry
    assert cached(wsd_lrs(), WSD_PHASES, **{**kwargs, "title": "other"}) == b"redrawn"
    assert cached([x * 2 for x in wsd_lrs()], WSD_PHASES, **kwargs) == b"redrawn"
    assert len(drawn) == 2


def test_a_truncated_cache_entry_is_drawn_again(tmp_path: Path):
    from recipec import plot as plot_module

    kwargs = {"title": "t", "peak_lr": PEAK, "min_lr": MIN}
    cached = plot_module.cached(tmp_path)
    png = cached(wsd_lrs(), WSD_PHASES, **kwargs)
    (entry,) = tmp_path.glob("*.png")
    entry.write_bytes(png[: len(png) // 2])
    assert cached(wsd_lrs(), WSD_PHASES, **kwargs) == png
    assert entry.read_bytes() == png


def test_an_unwritable_cache_costs_time_not_the_plot(tmp_path: Path):
    from recipec import plot as plot_module

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cached = plot_module.cached(blocker / "plots")
    assert cached(wsd_lrs(), WSD_PHASES, title="t", peak_lr=PEAK, min_lr=MIN)[:8] == PNG_SIGNATURE


def test_a_rebuild_takes_the_plot_from_the_cache_and_is_identical(write_recipe, tmp_path: Path):
    from recipec.compiler import PLOT_CACHE, build

    path = write_recipe()
    first, _ = build(path, (), tmp_path / "b1", project=tmp_path)
    entries = list((tmp_path / PLOT_CACHE).glob("*.png"))
    assert len(entries) == 1 and entries[0].read_bytes() == (first.dir / "schedule.png").read_bytes()
    second, _ = build(path, (), tmp_path / "b2", project=tmp_path)
    assert (second.dir / "schedule.png").read_bytes() == (first.dir / "schedule.png").read_bytes()
    assert len(list((tmp_path / PLOT_CACHE).glob("*.png"))) == 1
