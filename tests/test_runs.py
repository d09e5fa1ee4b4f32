"""`recipec plot` and `recipec runs` over fake run directories."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

pytest.importorskip("matplotlib")

from recipec.runs import (  # noqa: E402
    Run,
    format_runs_table,
    list_runs,
    load_run,
    loss_figure,
    plot,
    plot_png,
    runs,
    series,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(
    root: Path,
    name: str,
    steps: int,
    *,
    started: str | None = "2026-01-01T10:00:00+00:00",
    run_json: bool = True,
    parent: bool = False,
    best: float | None = None,
) -> Path:
    """A run directory: eval every 4 steps, a train line every 2, 1000 tokens a step."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    lines = []
    for step in range(0, steps + 1):
        if step % 2 == 0 and step:
            lines.append(
                {"step": step, "loss": 8.0 / (1 + step), "lr": 1e-3 * (1 - step / steps), "tokens": 1000 * step}
            )
        if step % 4 == 0:
            ev = {"step": step, "eval_loss": 9.0 / (1 + step), "tokens": 1000 * step}
            if parent:
                ev["eval_loss_parent"] = 3.0 + step / 100
            lines.append(ev)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    if run_json:
        info = {
            "name": name,
            "started": started,
            "status": "completed",
            "lock_sha256": "ab" * 32,
            "wall_s": 93.4,
            "steps": steps,
            "tokens": 1000 * steps,
            "final": {"loss": 8.0 / (1 + steps), "eval_loss": 9.0 / (1 + steps)},
        }
        if best is not None:
            info["best"] = {"eval_loss": best, "eval_loss_step": 4}
        (run_dir / "run.json").write_text(json.dumps(info, indent=2))
    return run_dir


def cli() -> click.Group:
    return click.Group(commands=[plot, runs])


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_run(tmp_path / "runs", "short", 8, started="2026-01-02T09:00:00+00:00", best=0.125),
        write_run(tmp_path / "runs", "long", 20, started="2026-01-01T09:00:00+00:00", parent=True),
    )


# --- plot ---------------------------------------------------------------------------------


def test_plot_one_run_defaults_to_plot_png_in_the_run(two_runs: tuple[Path, Path]) -> None:
    short, _ = two_runs
    result = CliRunner().invoke(cli(), ["plot", str(short)])
    assert result.exit_code == 0, result.output
    out = short / "plot.png"
    assert f"wrote {out.as_posix()}" in result.output
    width, height = png_size(out.read_bytes())
    assert (width, height) == (1320, 710)


def test_plot_several_runs_defaults_to_runs_png_here(
    two_runs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    result = CliRunner().invoke(cli(), ["plot", *map(str, two_runs)])
    assert result.exit_code == 0, result.output
    png = (here / "runs.png").read_bytes()
    assert png_size(png)[0] > 1000


def test_plot_is_byte_identical_when_drawn_twice(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (a, b):
        result = CliRunner().invoke(cli(), ["plot", *map(str, two_runs), "-o", str(out)])
        assert result.exit_code == 0, result.output
    assert a.read_bytes() == b.read_bytes()
    assert b"Software" not in a.read_bytes()


@pytest.mark.parametrize(("x", "shape"), [("steps", (1320, 390)), ("tokens", (1320, 390)), ("both", (1320, 710))])
def test_plot_x_option_sets_the_rows(two_runs: tuple[Path, Path], tmp_path: Path, x: str, shape: tuple) -> None:
    out = tmp_path / "sub" / "p.png"
    result = CliRunner().invoke(cli(), ["plot", *map(str, two_runs), "--x", x, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert png_size(out.read_bytes()) == shape


def test_figure_lines_hold_the_data(two_runs: tuple[Path, Path]) -> None:
    loaded = [load_run(d) for d in two_runs]
    fig = loss_figure(loaded, "both")
    axes = fig.get_axes()
    assert len(axes) == 6
    lines = {line.get_gid(): line for ax in axes for line in ax.get_lines()}
    # every run, quantity and x axis; the parent eval only for the run that has it
    for name in ("short", "long"):
        for key in ("loss", "eval_loss", "lr"):
            for row in ("steps", "tokens"):
                assert f"{name}|{key}|{row}" in lines
    assert "long|eval_loss_parent|steps" in lines and "short|eval_loss_parent|steps" not in lines
    assert lines["long|eval_loss_parent|steps"].get_linestyle() == "--"

    loss = lines["long|loss|steps"]
    assert list(loss.get_xdata()) == list(range(2, 21, 2))
    assert list(loss.get_ydata()) == pytest.approx([8.0 / (1 + s) for s in range(2, 21, 2)])
    evals = lines["short|eval_loss|tokens"]
    assert list(evals.get_xdata()) == [0.0, 4000.0, 8000.0]
    assert list(evals.get_ydata()) == pytest.approx([9.0, 9.0 / 5, 1.0])
    lr = lines["short|lr|steps"]
    assert list(lr.get_ydata()) == pytest.approx([1e-3 * (1 - s / 8) for s in (2, 4, 6, 8)])

    # one colour per run across panels
    assert loss.get_color() == lines["long|lr|tokens"].get_color() != lines["short|loss|steps"].get_color()
    # legend names the runs; title names them too; losses span > 2x so log scale
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts[:2] == ["short", "long"] and "parent" in legend_texts[2]
    assert "short, long" in fig.get_suptitle()
    assert axes[0].get_yscale() == "log" and axes[1].get_yscale() == "log"
    assert axes[0].get_ylim() == axes[1].get_ylim()
    assert axes[2].get_yscale() == "linear"
    assert axes[0].get_xlabel() == "optimizer step" and axes[3].get_xlabel() == "tokens"


def test_each_evaluation_source_is_a_line_of_its_own_style_in_the_eval_panel(tmp_path: Path) -> None:
    run_dir = tmp_path / "sources"
    run_dir.mkdir()
    lines = [{"step": s, "loss": 3.0 - 0.1 * s, "lr": 1e-4, "tokens": 10 * s} for s in range(1, 5)]
    lines += [{"step": s, "eval_loss": 3.0, "eval_loss_code": 2.0 + s, "eval_loss_mmlu": 4.0, "tokens": 10 * s} for s in (0, 4)]
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in lines))
    fig = loss_figure([load_run(run_dir)], "steps")
    drawn = {line.get_gid(): line for line in fig.get_axes()[1].get_lines()}
    assert set(drawn) == {"sources|eval_loss|steps", "sources|eval_loss_code|steps", "sources|eval_loss_mmlu|steps"}
    assert list(drawn["sources|eval_loss_code|steps"].get_ydata()) == [2.0, 6.0]
    styles = {gid: line.get_linestyle() for gid, line in drawn.items()}
    assert len(set(styles.values())) == 3  # the total solid, each source its own style
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["sources", "eval_loss_code", "eval_loss_mmlu"]


def test_flat_losses_stay_linear_and_missing_evals_say_so(tmp_path: Path) -> None:
    run_dir = tmp_path / "flat"
    run_dir.mkdir()
    lines = [{"step": s, "loss": 2.0 + 0.01 * s, "lr": 1e-4, "tokens": 10 * s} for s in range(1, 5)]
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in lines))
    fig = loss_figure([load_run(run_dir)], "steps")
    loss_ax, eval_ax, _ = fig.get_axes()
    assert loss_ax.get_yscale() == "linear"
    assert [t.get_text() for t in eval_ax.texts] == ["no eval_loss in metrics.jsonl"]
    assert load_run(run_dir).name == "flat"  # no run.json: the directory's name


def test_series_skips_lines_without_the_key_and_gaps_non_finite_values() -> None:
    metrics = [{"step": 0, "eval_loss": 5.0}, {"step": 1, "loss": float("nan"), "tokens": 4}, {"step": 2, "loss": 1.0}]
    xs, ys = series(metrics, "loss", "steps")
    assert xs == [1.0, 2.0] and math.isnan(ys[0]) and ys[1] == 1.0
    assert series(metrics, "loss", "tokens") == ([4.0], [pytest.approx(float("nan"), nan_ok=True)])


def test_duplicate_run_names_get_their_directory(tmp_path: Path) -> None:
    a = write_run(tmp_path / "x", "same", 4)
    b = write_run(tmp_path / "y", "same", 4)
    fig = loss_figure([load_run(a), load_run(b)], "steps")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [f"same ({a.as_posix()})", f"same ({b.as_posix()})"]


def test_plot_png_rejects_no_runs_and_bad_x(two_runs: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="no runs"):
        plot_png([])
    with pytest.raises(ValueError, match="x must be one of"):
        loss_figure([Run(name="r", path=two_runs[0], metrics=[{"step": 1, "loss": 1.0}])], "epochs")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "metrics.jsonl: empty: no step logged yet"),
        ("\n  \n", "metrics.jsonl: empty: no step logged yet"),
        ('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": \n', "metrics.jsonl:2: not valid JSON"),
        ('[1, 2]\n', "metrics.jsonl:1: expected a JSON object, got list"),
        ('{"loss": 2.0}\n', "metrics.jsonl:1: `step` must be an integer, got None"),
        ('{"step": 1.5}\n', "metrics.jsonl:1: `step` must be an integer, got 1.5"),
        ('{"step": 1}\n\n{"step": 2, "loss": "low"}\n', "metrics.jsonl:3: `loss` must be a number, got 'low'"),
    ],
)
def test_plot_bad_metrics_exit_2_naming_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    run_dir = tmp_path / "bad"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(content)
    result = CliRunner().invoke(cli(), ["plot", str(run_dir)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert result.output.startswith(f"error: {run_dir / 'metrics.jsonl'}")
    assert message in result.output
    assert not (run_dir / "plot.png").exists()


def test_plot_directory_errors(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        empty: f"error: {empty}: no metrics.jsonl",
        tmp_path / "missing": f"error: {tmp_path / 'missing'}: no such directory",
        two_runs[0] / "metrics.jsonl": f"error: {two_runs[0] / 'metrics.jsonl'}: not a directory",
    }
    for path, message in cases.items():
        result = CliRunner().invoke(cli(), ["plot", str(two_runs[1]), str(path)])
        assert result.exit_code == 2
        assert result.output.startswith(message), result.output

    (two_runs[0] / "run.json").write_text("{not json")
    result = CliRunner().invoke(cli(), ["plot", str(two_runs[0])])
    assert result.exit_code == 2 and f"{two_runs[0] / 'run.json'}:1: not valid JSON" in result.output


def test_plot_unwritable_output_exits_2(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(cli(), ["plot", str(two_runs[0]), "-o", str(blocker / "p.png")])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {blocker / 'p.png'}: cannot write")


def test_plot_needs_a_run_dir_and_a_known_x(two_runs: tuple[Path, Path]) -> None:
    assert CliRunner().invoke(cli(), ["plot"]).exit_code == 2
    result = CliRunner().invoke(cli(), ["plot", str(two_runs[0]), "--x", "epochs"])
    assert result.exit_code == 2 and "epochs" in result.output


# --- runs ---------------------------------------------------------------------------------


def test_runs_table_sorted_by_start(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    header, first, second = result.output.splitlines()
    assert header.split()[:3] == ["name", "status", "steps"]
    assert first.split() == [
        "long", "completed", "20", "20k", f"{8 / 21:.4f}", f"{9 / 21:.4f}", f"{9 / 21:.4f}", "1m33s", "abababababab",
        "2026-01-01", "09:00", (tmp_path / "runs" / "long").as_posix(),
    ]  # fmt: skip
    assert second.split()[0] == "short"


def test_runs_json(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["runs", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == ["long", "short"]
    assert rows[1] == {
        "name": "short",
        "path": two_runs[0].as_posix(),
        "status": "completed",
        "steps": 8,
        "tokens": 8000,
        "final_loss": pytest.approx(8 / 9),
        "final_eval_loss": pytest.approx(1.0),
        "best_eval_loss": pytest.approx(0.125),
        "wall_s": 93.4,
        "lock_sha256": "ab" * 32,
        "started": "2026-01-02T09:00:00+00:00",
    }


def test_runs_default_dir_and_metrics_only_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs", "done", 8)
    write_run(tmp_path / "runs" / "nested", "orphan", 12, run_json=False)
    result = CliRunner().invoke(cli(), ["runs", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == ["done", "orphan"]  # no start time: last
    orphan = rows[1]
    assert orphan["status"] == "unknown"
    assert orphan["steps"] == 12 and orphan["tokens"] == 12000
    assert orphan["final_loss"] == pytest.approx(8 / 13) and orphan["final_eval_loss"] == pytest.approx(9 / 13)
    assert orphan["wall_s"] is None and orphan["lock_sha256"] is None and orphan["started"] is None
    table = format_runs_table(rows).splitlines()[2].split()
    assert orphan["best_eval_loss"] == pytest.approx(9 / 13)  # no run.json: the lowest line of metrics.jsonl
    assert table[:2] == ["orphan", "unknown"] and table[7:10] == ["-", "-", "-"]


def test_runs_running_run_falls_back_to_metrics(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "live", 8)
    info = {"name": "live", "status": "running", "started": "2026-01-01T00:00:00"}
    (run_dir / "run.json").write_text(json.dumps(info))
    rows, warnings = list_runs(tmp_path)
    assert warnings == []
    assert rows[0]["status"] == "running" and rows[0]["steps"] == 8 and rows[0]["final_loss"] == pytest.approx(8 / 9)


def test_runs_bad_files_warn_and_still_list(tmp_path: Path) -> None:
    a = write_run(tmp_path, "a", 4)
    b = write_run(tmp_path, "b", 4)
    (a / "run.json").write_text("[]")
    (b / "metrics.jsonl").write_text("oops\n")
    result = CliRunner().invoke(cli(), ["runs", str(tmp_path), "--json"])
    assert result.exit_code == 0
    assert f"warning: {a / 'run.json'}: expected a JSON object, got list" in result.stderr
    assert f"warning: {b / 'metrics.jsonl'}:1: not valid JSON" in result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["a"]["status"] == "unknown" and rows["a"]["steps"] == 4
    assert rows["b"]["status"] == "completed" and rows["b"]["steps"] == 4


def test_runs_empty_dir_is_a_message_not_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["runs", str(tmp_path)])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert f"no runs under {tmp_path.as_posix()}" in result.stderr
    result = CliRunner().invoke(cli(), ["runs", str(tmp_path), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_runs_missing_dir_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["runs", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.output == f"error: {tmp_path / 'nope'}: no such directory\n"
    (tmp_path / "f").write_text("")
    result = CliRunner().invoke(cli(), ["runs", str(tmp_path / "f")])
    assert result.exit_code == 2 and "not a directory" in result.output


def test_commands_have_help() -> None:
    assert plot.short_help == "Plot loss, eval loss and LR of runs against steps and tokens."
    assert runs.short_help == "List runs with their lock hash and final metrics."
    for name in ("plot", "runs"):
        result = CliRunner().invoke(cli(), [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_importing_runs_does_not_import_matplotlib() -> None:
    import subprocess
    import sys

    code = "import sys, recipec.runs; sys.exit('matplotlib' in sys.modules or 'torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_run_that_stopped_early_says_so(tmp_path: Path) -> None:
    """train.early_stopping_patience: run.json's stopped_early makes a completed run "stopped early" in the table and
    the JSON; a run record with stopped_early null (the script writes it so when the run went to its end) stays completed."""
    stopped = write_run(tmp_path / "runs", "stopped", 12)
    info = json.loads((stopped / "run.json").read_text())
    info["stopped_early"] = {"step": 12, "metric": "eval_loss", "best": 0.69, "best_step": 4, "patience": 2, "threshold": 0.0}
    (stopped / "run.json").write_text(json.dumps(info))
    full = write_run(tmp_path / "runs", "full", 8, started="2026-01-02T09:00:00+00:00")
    info = json.loads((full / "run.json").read_text())
    (full / "run.json").write_text(json.dumps({**info, "stopped_early": None}))
    result = CliRunner().invoke(cli(), ["runs", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    assert {r["name"]: r["status"] for r in json.loads(result.output)} == {"stopped": "stopped early", "full": "completed"}
    table = CliRunner().invoke(cli(), ["runs", str(tmp_path / "runs")]).output
    assert "stopped early" in table.splitlines()[1] + table.splitlines()[2]
