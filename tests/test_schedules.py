"""[schedule] in the compiler: shorthand and explicit phases, batch-size scaling, errors, the LR csv."""

from __future__ import annotations

import json
import math

import pytest

from recipec.diagnostics import RecipeError
from recipec.render import lr_values
from recipec.runtime import schedule as runtime


def phases_of(plan):
    return [(p["name"], p["shape"], p["steps"], p["start"], p["end"]) for p in plan["schedule_phases"]]


def error_of(plan_of, *args, **kwargs):
    with pytest.raises(RecipeError) as info:
        plan_of(*args, **kwargs)
    (err,) = [d for d in info.value.diagnostics if d.severity == "error"]
    return err


# -- the shorthand, one line per usual schedule ---------------------------------------


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, [("warmup", "linear", 3, 0.0, 1.0), ("decay", "cosine", 97, 1.0, 0.1)]),
        ({"schedule.decay": "linear", "schedule.min_lr_ratio": 0.0}, [("warmup", "linear", 3, 0.0, 1.0), ("decay", "linear", 97, 1.0, 0.0)]),
        ({"schedule.decay": "constant", "schedule.warmup": 10}, [("warmup", "linear", 10, 0.0, 1.0), ("constant", "constant", 90, 1.0, 1.0)]),
        (
            {"schedule.decay": "wsd", "schedule.warmup": 10, "schedule.cooldown": 0.2, "schedule.cooldown_shape": "1-sqrt"},
            [("warmup", "linear", 10, 0.0, 1.0), ("stable", "constant", 70, 1.0, 1.0), ("cooldown", "1-sqrt", 20, 1.0, 0.1)],
        ),
        (
            {"schedule.decay": "wsd", "schedule.warmup": 0, "schedule.cooldown": 30},
            [("stable", "constant", 70, 1.0, 1.0), ("cooldown", "linear", 30, 1.0, 0.1)],
        ),
        ({"schedule.decay": "cyclic", "schedule.half_cycle": 10, "schedule.warmup": 0}, [("cyclic", "cyclic", 100, 1.0, 0.1)]),
        (
            {"schedule.decay": "cosine_restarts", "schedule.restart_period": 10, "schedule.restart_mult": 2, "schedule.warmup": 0},
            [("restarts", "cosine_restarts", 100, 1.0, 0.1)],
        ),
        (
            {"schedule.warmup_shape": "exponential", "schedule.warmup_start_ratio": 0.01, "schedule.warmup": 10},
            [("warmup", "exponential", 10, 0.01, 1.0), ("decay", "cosine", 90, 1.0, 0.1)],
        ),
    ],
)
def test_shorthand_becomes_phases(plan_of, keys, expected):
    assert phases_of(plan_of(keys)) == expected


def test_shorthand_parameters_reach_the_phase(plan_of):
    (_, decay) = plan_of({"schedule.decay": "polynomial", "schedule.power": 2.0, "schedule.warmup": 10})["schedule_phases"]
    assert decay["power"] == 2.0
    (_, decay) = plan_of({"schedule.decay": "inverse_sqrt", "schedule.warmup": 10})["schedule_phases"]
    assert decay["timescale"] == 10  # transformers' default: the warmup length
    (decay,) = plan_of({"schedule.decay": "inverse_sqrt", "schedule.warmup": 0})["schedule_phases"]
    assert decay["timescale"] == 10_000
    (cyc,) = plan_of({"schedule.decay": "cyclic", "schedule.half_cycle": 7, "schedule.warmup": 0})["schedule_phases"]
    assert cyc["half_cycle"] == 7


def test_inverse_sqrt_matches_transformers(plan_of):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    plan = plan_of({"schedule.decay": "inverse_sqrt", "schedule.warmup": 10, "schedule.min_lr_ratio": 0.0})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = transformers.get_inverse_sqrt_schedule(opt, num_warmup_steps=10)
    expected = []
    for _ in range(100):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    ours = runtime.values(plan["schedule_phases"], 100)
    assert ours == pytest.approx(expected, rel=1e-12)


# -- explicit phases -------------------------------------------------------------------


PHASES = """
[schedule]
min_lr_ratio = 0.05

[[schedule.phases]]
name = "rewarm"
shape = "linear"
steps = 10
start = 0.2
end = 1.0

[[schedule.phases]]
name = "stable"
shape = "constant"

[[schedule.phases]]
name = "anneal"
shape = "cosine"
fraction = 0.25
"""


def test_explicit_phases_fill_defaults_and_the_rest(plan_of):
    plan = plan_of(text=PHASES)
    assert phases_of(plan) == [
        ("rewarm", "linear", 10, 0.2, 1.0),
        ("stable", "constant", 65, 1.0, 1.0),  # starts where rewarm ended, takes the rest
        ("anneal", "cosine", 25, 1.0, 0.05),  # ends at the floor
    ]
    assert [p["first_step"] for p in plan["schedule_phases"]] == [0, 10, 75]


def test_phase_lengths_in_tokens(plan_of):
    text = PHASES.replace("fraction = 0.25", "tokens = 2560")  # 256 tokens per step
    assert phases_of(plan_of(text=text))[-1][2] == 10


def test_phases_that_do_not_add_up_point_at_the_phases(plan_of):
    text = PHASES.replace('shape = "constant"', 'shape = "constant"\nsteps = 10')
    err = error_of(plan_of, text=text)
    assert "add up" in err.message and "100" in err.message
    assert err.location.source_line.startswith("[[schedule.phases]]") or "steps" in err.location.source_line


def test_a_zero_length_phase_is_an_error(plan_of):
    text = PHASES.replace("steps = 10", "steps = 10\n").replace('shape = "constant"', 'shape = "constant"\nsteps = 65').replace(
        "fraction = 0.25", "fraction = 0.001"
    )
    err = error_of(plan_of, text=text)
    assert "0 steps" in err.message or "zero" in err.message.lower()


def test_shorthand_keys_are_refused_beside_phases(plan_of):
    with pytest.raises(RecipeError) as info:
        plan_of(text=PHASES.replace("min_lr_ratio = 0.05", "min_lr_ratio = 0.05\ndecay = \"linear\""))
    (err,) = info.value.diagnostics
    assert "`decay` is shorthand" in err.message
    assert err.location.source_line.startswith("decay = ")


def test_phase_keys_belong_to_their_shape(plan_of):
    with pytest.raises(RecipeError) as info:
        plan_of(text=PHASES.replace('shape = "constant"', 'shape = "constant"\npower = 2.0'))
    assert "`power` does not apply to a constant phase" in info.value.diagnostics[0].message
    with pytest.raises(RecipeError) as info:
        plan_of(text=PHASES.replace('shape = "constant"', 'shape = "cyclic"'))
    assert "a cyclic phase needs `half_cycle`" in info.value.diagnostics[0].message


def test_cooldown_that_leaves_no_stable_phase_points_at_cooldown(plan_of):
    err = error_of(plan_of, {"schedule.decay": "wsd", "schedule.cooldown": 99, "schedule.warmup": 10})
    assert err.location.source_line.startswith("cooldown = 99")


def test_warmup_share_warning_counts_rising_phases(plan_of):
    text = PHASES.replace("steps = 10", "steps = 60")
    warnings = [w.message for w in plan_of(text=text).warnings]
    assert "warmup is 60.0% of the run (60 of 100 steps)" in warnings


# -- batch-size scaling ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected", "note"),
    [
        ("sqrt", 1e-3 * math.sqrt(8 / 32), "derived: optim.scaling.reference_lr 0.001 * sqrt(batch_size 8 / reference_batch 32)"),
        ("linear", 1e-3 * 8 / 32, "derived: optim.scaling.reference_lr 0.001 * batch_size 8 / reference_batch 32"),
        ("none", 1e-3, "derived: optim.scaling.reference_lr 0.001 (rule none: not scaled with the batch)"),
    ],
)
def test_batch_size_scaling_derives_the_peak(plan_of, rule, expected, note):
    plan = plan_of(optim={"scaling": {"reference_batch": 32, "reference_lr": 1e-3, "rule": rule}})
    (lr,) = [s for s in plan.settings if s.name == "lr"]
    assert lr.value == pytest.approx(expected) and lr.note == note and lr.origin == "derived"
    assert lr_values(plan)[3] == pytest.approx(expected)  # the schedule scales the derived peak


def test_batch_size_scaling_is_recorded_in_the_lock(write_recipe, tmp_path, monkeypatch):
    from recipec.compiler import build

    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(optim={"scaling": {"reference_batch": 32, "reference_lr": 1e-3, "rule": "linear"}})
    written, _ = build(recipe.name)
    lock = json.loads((written.dir / "recipe.lock.json").read_text())
    assert lock["lr_scaling"] == {
        "reference_batch": 32, "reference_lr": 1e-3, "rule": "linear", "batch_size": 8, "peak_lr": 2.5e-4
    }


def test_batch_size_scaling_and_lr_conflict(plan_of):
    with pytest.raises(RecipeError) as info:
        plan_of(optim={"lr": 1e-3, "scaling": {"reference_batch": 32, "reference_lr": 1e-3}})
    assert "set `lr` or `scaling`, not both" in info.value.diagnostics[0].message


# -- the LR csv --------------------------------------------------------------------------


def test_explain_writes_the_lr_csv(write_recipe, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from recipec.cli import main

    monkeypatch.chdir(tmp_path)
    write_recipe({"schedule.decay": "wsd", "schedule.warmup": 10, "optim.lr": 1e-3})
    result = CliRunner().invoke(main, ["explain", "recipe.toml", "--lr-csv", "out/lr.csv"])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "out" / "lr.csv").read_text().splitlines()
    assert rows[0] == "step,lr" and len(rows) == 101
    assert [float(r.split(",")[1]) for r in rows[1:]] == pytest.approx(
        [1e-3 * x for x in runtime.values(runtime.layout([
            {"name": "warmup", "shape": "linear", "start": 0.0, "end": 1.0, "steps": 10},
            {"name": "stable", "shape": "constant", "start": 1.0, "end": 1.0},
            {"name": "cooldown", "shape": "linear", "start": 1.0, "end": 0.1, "fraction": 0.2},
        ], 100), 100)]
    )
    epochs = write_recipe({"train.max_steps": None, "train.epochs": 1}, filename="e.toml")
    result = CliRunner().invoke(main, ["explain", epochs.name, "--lr-csv", "e.csv"])
    assert result.exit_code == 1 and "depends on the data" in result.output


# -- sources limited to some phases ----------------------------------------------------


ANNEAL = {"builtin": "python-stdlib", "max_documents": 3, "phases": ["cooldown"]}


def test_a_source_can_join_in_one_phase(plan_of):
    plan = plan_of(
        {"schedule.decay": "wsd", "schedule.warmup": 10, "schedule.cooldown": 20},
        data={"seq_len": 32, "sources": [{"builtin": "python-docs"}, ANNEAL]},
    )
    assert plan["segments"] == [
        {"first_step": 0, "last_step": 80, "sources": [0], "weights": None, "phases": ["warmup", "stable"]},
        {"first_step": 80, "last_step": None, "sources": [0, 1], "weights": None, "phases": ["cooldown"]},
    ]


def test_without_phase_limits_there_is_one_segment(plan_of):
    assert plan_of()["segments"] == [{"first_step": 0, "last_step": None, "sources": [0], "weights": None}]


def test_an_unknown_phase_name_is_an_error_with_a_suggestion(plan_of):
    err = error_of(
        plan_of,
        {"schedule.decay": "wsd"},
        data={"seq_len": 32, "sources": [{"builtin": "python-docs"}, {**ANNEAL, "phases": ["cooldwn"]}]},
    )
    assert err.message == "no schedule phase is named 'cooldwn'"
    assert err.help == "did you mean `cooldown`?"


def test_a_phase_without_any_source_is_an_error(plan_of):
    err = error_of(plan_of, {"schedule.decay": "wsd"}, data={"seq_len": 32, "sources": [ANNEAL]})
    assert err.message == "schedule phase 'warmup' has no data source to train on"


def test_phase_limited_sources_need_a_known_length(plan_of):
    err = error_of(
        plan_of,
        {"train.max_steps": None, "train.epochs": 1},
        data={"seq_len": 32, "sources": [{"builtin": "python-docs"}, {**ANNEAL, "phases": ["decay"]}]},
    )
    assert "not epochs" in err.message
