"""`recipec predict`: the scaling law with LR annealing, fitted on a run and laid along a recipe's schedule.

The areas are checked against the law's definition written out as plain loops; the fit
against curves the law itself draws (it must give back their constants); the command
against a run directory the test writes: a real build's schedule.csv and resolved.toml,
and a metrics.jsonl drawn from known constants.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from recipec.cli import main
from recipec.predict import PredictError, areas, fit, points, predict


def law_by_hand(lrs, L0, A, alpha, C, decay):
    """L after each update, straight from the definition: S1 the LRs so far, S2 the summed momentum of the
    LR's decreases from the first peak on."""
    peak = next((i for i in range(len(lrs) - 1) if lrs[i + 1] <= lrs[i]), len(lrs) - 1)  # where the LR first stops rising
    out, s1, s2, m = [], 0.0, 0.0, 0.0
    for i, lr in enumerate(lrs):
        s1 += lr
        if i > peak:
            m = decay * m + (lrs[i - 1] - lr)
            s2 += m
        out.append(L0 + A * s1**-alpha - C * s2 if s1 > 0 else math.nan)  # recipec's warmup starts at LR 0
    return out


def cosine(n, warmup=50, peak=3e-3, floor=0.1):
    return [
        peak * ((i + 1) / warmup if i < warmup else floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (i - warmup) / (n - warmup))))
        for i in range(n)
    ]


TRUE = {"L0": 2.5, "A": 0.9, "alpha": 0.5, "C": 0.12, "decay": 0.999}
"""Constants of a plausible curve: from about 8 at the first steps down to about 3."""


def test_areas_follow_the_definition():
    lrs = [0.2, 0.6, 1.0, 1.0, 0.8, 0.5, 0.5, 0.7, 0.3]  # a warmup, a decay, a rewarm, a decay
    s1, s2 = areas(lrs, 0.9)
    peak, m, total, expected = 2, 0.0, 0.0, []
    for i in range(len(lrs)):
        if i > peak:
            m = 0.9 * m + lrs[i - 1] - lrs[i]
            total += m
        expected.append(total)
    assert s1.tolist() == pytest.approx(np.cumsum(lrs).tolist(), abs=1e-15)
    assert s2.tolist() == pytest.approx(expected, abs=1e-15)
    assert s2[2] == 0 and s2[4] == pytest.approx(0.2)  # nothing before the peak; the first decrease
    assert s2[7] - s2[6] < s2[6] - s2[5]  # the rewarm takes from the momentum
    # a rewarm above the first peak: the annealing still counts from the first one
    higher = [0.5, 1.0, 0.6, 1.2, 0.9]
    assert areas(higher, 0.5)[1].tolist() == pytest.approx([0, 0, 0.4, 0.0, 0.1], abs=1e-15)  # m: 0.4, -0.4, 0.1


def test_fit_gives_back_the_constants_of_a_curve_the_law_draws():
    lrs = cosine(2000)
    curve = law_by_hand(lrs, **TRUE)
    steps = np.arange(60, 2001, 10)
    f = fit([(steps, np.array([curve[s - 1] for s in steps]), lrs)])
    got = {"L0": f.L0, "A": f.A, "alpha": f.alpha, "C": f.C}
    assert got == pytest.approx({k: TRUE[k] for k in got}, rel=1e-6)
    assert f.r2 == pytest.approx(1.0) and f.annealed
    # with noise of 0.01 on every point, still within a few percent where it matters: the loss it predicts
    noisy = np.array([curve[s - 1] + random.Random(int(s)).gauss(0, 0.01) for s in steps])
    f = fit([(steps, noisy, lrs)])
    wsd = [3e-3 * min((i + 1) / 50, 1.0) if i < 3200 else 3e-3 * (4000 - i) / 800 for i in range(4000)]
    assert predict(f, wsd)[-1] == pytest.approx(law_by_hand(wsd, **TRUE)[-1], abs=0.02)


def test_a_run_that_never_decays_fits_no_annealing_term():
    lrs = [1e-3 * min((i + 1) / 20, 1.0) for i in range(500)]
    curve = law_by_hand(lrs, **{**TRUE, "C": 0.0})
    steps = np.arange(30, 501, 5)
    f = fit([(steps, np.array([curve[s - 1] for s in steps]), lrs)])
    assert not f.annealed and f.C == 0.0
    assert (f.L0, f.A, f.alpha) == pytest.approx((TRUE["L0"], TRUE["A"], TRUE["alpha"]), rel=1e-6)


def test_annealing_that_would_raise_the_loss_is_left_out():
    """A curve whose decays add loss (C < 0 drawn) fits with C = 0, the best the law allows."""
    lrs = cosine(1000)
    curve = law_by_hand(lrs, **{**TRUE, "C": -0.05})
    steps = np.arange(60, 1001, 10)
    f = fit([(steps, np.array([curve[s - 1] for s in steps]), lrs)])
    assert f.annealed and f.C == 0.0 and f.r2 < 1.0


def test_two_runs_fit_one_law():
    """A constant LR and a cosine of the same model: one set of constants, given back from both."""
    constant = [2e-3 * min((i + 1) / 50, 1.0) for i in range(1500)]
    cos = cosine(1000, peak=2e-3)
    curves = []
    for lrs in (constant, cos):
        curve = law_by_hand(lrs, **TRUE)
        steps = np.arange(60, len(lrs) + 1, 10)
        curves.append((steps, np.array([curve[s - 1] for s in steps]), lrs))
    f = fit(curves)
    assert f.points == len(curves[0][0]) + len(curves[1][0])
    assert (f.L0, f.A, f.alpha, f.C) == pytest.approx((TRUE["L0"], TRUE["A"], TRUE["alpha"], TRUE["C"]), rel=1e-6)
    with pytest.raises(PredictError, match="4 logged `loss` value"):
        fit([(curves[0][0][:2], curves[0][1][:2], constant), (curves[1][0][:2], curves[1][1][:2], cos)])


def test_points_are_the_logged_values_after_the_peak_the_last_of_a_step_winning():
    lrs = [0.5, 1.0, 0.9, 0.8]
    metrics = [
        {"step": 0, "eval_loss": 9.0},
        {"step": 1, "loss": 8.0},
        {"step": 2, "loss": 7.0},
        {"step": 3, "loss": 6.5},
        {"step": 3, "loss": 6.0},  # logged again after a resume
        {"step": 4, "loss": float("nan")},
        {"step": 5, "loss": 4.0},  # past the schedule
    ]
    steps, losses = points(metrics, "loss", lrs)
    assert steps.tolist() == [2, 3] and losses.tolist() == [7.0, 6.0]


# -- the command -------------------------------------------------------------------------

RECIPE = """
[recipe]
name = "base"

[model]
init = "llama"

[model.config]
hidden_size = 64
intermediate_size = 128
num_hidden_layers = 1
num_attention_heads = 4
max_position_embeddings = 128

[tokenizer]
train = {kind = "bpe", vocab_size = 512}

[data]
seq_len = 32

[[data.sources]]
builtin = "python-docs"

[optim]
lr = 3e-3

[schedule]
warmup = 50
decay = "cosine"
min_lr_ratio = 0.1

[train]
micro_batch_size = 4
batch_size = 8
max_steps = 2000
log_every = 10
eval_every = 0
save_every = 0
"""


def _lrs(path: Path) -> list[float]:
    """The LR column of a `step,lr` file (a build's schedule.csv, `explain --lr-csv`)."""
    return [float(line.split(",")[1]) for line in path.read_text().splitlines()[1:]]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with the recipe and a run of it: the build's schedule.csv and resolved.toml, and a
    metrics.jsonl of losses the law draws from TRUE (what train.py would log, with its LRs)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "base.toml").write_text(RECIPE)
    result = CliRunner().invoke(main, ["--no-color", "build", "recipes/base.toml"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "base"
    run.mkdir(parents=True)
    for name in ("schedule.csv", "resolved.toml"):
        shutil.copyfile(tmp_path / "build" / "base" / name, run / name)
    lrs = _lrs(run / "schedule.csv")
    curve = law_by_hand(lrs, **TRUE)
    lines = [{"step": 0, "eval_loss": 9.9}] + [{"step": s, "loss": curve[s - 1], "lr": lrs[s - 1]} for s in range(10, 2001, 10)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    return tmp_path


def _predict(*args: str):
    return CliRunner().invoke(main, ["--no-color", "predict", "recipes/base.toml", "--from", "runs/base", *args])


def test_predict_lays_the_fitted_law_along_another_schedule(project: Path):
    result = _predict("--set", 'schedule.decay="wsd"', "--set", "schedule.cooldown=0.2", "--set", "train.max_steps=3000", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["fit"]["metric"] == "loss" and out["fit"]["points"] == 195  # steps 60 to 2000: the LR peaks at update 51 (the warmup starts at 0)
    assert out["fit"]["alpha"] == pytest.approx(TRUE["alpha"], rel=1e-6)
    wsd = ("--set", 'schedule.decay="wsd"', "--set", "schedule.cooldown=0.2", "--set", "train.max_steps=3000")
    assert CliRunner().invoke(main, ["explain", "recipes/base.toml", *wsd, "--lr-csv", "wsd.csv"]).exit_code == 0
    wsd_lrs = _lrs(project / "wsd.csv")
    expected = law_by_hand(wsd_lrs, **TRUE)
    assert out["final"] == pytest.approx(expected[-1], rel=1e-9)
    assert [(p["name"], p["step"]) for p in out["phases"]] == [("warmup", 50), ("stable", 2400), ("cooldown", 3000)]
    assert out["phases"][1]["loss"] == pytest.approx(expected[2399], rel=1e-9)
    (last,) = out["run_last"]
    assert last["step"] == 2000 and last["law"] == pytest.approx(last["logged"], rel=1e-9)
    assert out["warnings"] == []
    # a longer cooldown anneals more: a lower final loss
    longer = json.loads(_predict("--set", 'schedule.decay="wsd"', "--set", "schedule.cooldown=0.4", "--set", "train.max_steps=3000", "--json").stdout)
    assert longer["final"] < out["final"]


def test_predict_text_and_csv(project: Path):
    result = _predict("--csv", "out/pred.csv")
    assert result.exit_code == 0, result.output
    assert "fitted on runs/base: 195 logged `loss` values after the LR's peak" in result.stdout
    assert re.search(r"end of decay\s+step\s+2,000\s+\d\.\d{4}", result.stdout)
    rows = (project / "out" / "pred.csv").read_text().splitlines()
    assert rows[0] == "step,lr,loss" and len(rows) == 2001
    step, lr, loss = rows[-1].split(",")
    assert int(step) == 2000 and float(loss) == pytest.approx(law_by_hand(_lrs(project / "runs" / "base" / "schedule.csv"), **TRUE)[-1], rel=1e-9)


def test_predict_warns_when_the_recipe_changes_the_model_or_batch(project: Path):
    result = _predict("--set", "model.config.hidden_size=128", "--set", "train.batch_size=16")
    assert result.exit_code == 0, result.output
    assert "warning: the recipe changes model, train.batch_size from runs/base: the law" in result.stderr


def test_predict_without_the_runs_resolved_toml_says_what_it_did_not_compare(project: Path):
    (project / "runs" / "base" / "resolved.toml").unlink()
    result = _predict()
    assert result.exit_code == 0, result.output
    assert "warning: runs/base/resolved.toml cannot be read: the recipe's model, tokenizer, seq_len and batch_size are not compared" in result.stderr


def test_predict_errors_name_the_file(project: Path):
    (project / "runs" / "base" / "schedule.csv").unlink()
    result = _predict()
    assert result.exit_code == 2
    assert "runs/base: no schedule.csv" in result.stderr and "Traceback" not in result.output
    shutil.copyfile(project / "build" / "base" / "schedule.csv", project / "runs" / "base" / "schedule.csv")
    (project / "runs" / "base" / "metrics.jsonl").write_text('{"step": 100, "loss": 5.0}\n{"step": 200, "loss": 4.0}\n')
    result = _predict()
    assert result.exit_code == 2
    assert "runs/base: 2 logged `loss` value(s) after the LR's peak: the fit needs at least 5" in result.stderr



