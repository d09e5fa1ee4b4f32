"""resolve: cross-table checks, derived numbers with their notes, origins and warnings."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recipec.compiler import plan_recipe
from recipec.diagnostics import RecipeError


def setting(plan, name):
    matches = [s for s in plan.settings if s.name == name]
    assert len(matches) == 1, f"{name} appears {len(matches)} times in the plan"
    return matches[0]


def warmup_of(phases):
    return phases[0]["steps"] if phases[0]["name"] == "warmup" else 0


def errors_of(plan_of, *args, **kwargs):
    with pytest.raises(RecipeError) as info:
        plan_of(*args, **kwargs)
    return [d for d in info.value.diagnostics if d.severity == "error"]


# -- the minimal recipe -------------------------------------------------------------


def test_minimal_recipe_resolves_without_warnings(plan_of):
    plan = plan_of()
    assert plan.warnings == ()
    assert plan.formulas == ()
    assert plan.name == "tiny"
    assert plan.build_dir == "build/tiny"
    assert plan.launch_command == (
        "accelerate launch --config_file build/tiny/accelerate_config.yaml build/tiny/train.py"
    )
    names = [s.name for s in plan.settings]
    assert len(names) == len(set(names)), "one variable per setting"


def test_plan_is_frozen(plan_of):
    plan = plan_of()
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.overrides = ("x=1",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.settings[0].value = 0


# -- derived numbers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch_size", "micro", "processes", "accum"),
    [(8, 4, 1, 2), (32, 8, 2, 2), (64, 8, 1, 8), (16, 16, 1, 1), (48, 4, 3, 4)],
)
def test_grad_accum_steps(plan_of, batch_size, micro, processes, accum):
    plan = plan_of(
        {"train.batch_size": batch_size, "train.micro_batch_size": micro, "launch.num_processes": processes}
    )
    s = setting(plan, "grad_accum_steps")
    assert s.value == accum
    assert s.origin == "derived"
    assert s.note == f"derived: batch_size {batch_size} / (micro_batch_size {micro} * num_processes {processes})"


def test_batch_not_divisible_names_the_key_and_suggests_neighbours(plan_of):
    (err,) = errors_of(plan_of, {"train.batch_size": 20, "train.micro_batch_size": 4, "launch.num_processes": 2})
    assert err.message == (
        "train.batch_size 20 is not a multiple of micro_batch_size 4 * launch.num_processes 2 = 8"
    )
    assert err.help == (
        "batch_size = micro_batch_size x grad_accum_steps x num_processes: "
        "use batch_size = 16 (grad_accum_steps 2) or 24 (grad_accum_steps 3), or change micro_batch_size"
    )
    assert err.location.source_line.startswith("batch_size = 20")


def test_tokens_per_step(plan_of):
    plan = plan_of({"train.batch_size": 16, "data.seq_len": 64})
    s = setting(plan, "tokens_per_step")
    assert s.value == 16 * 64
    assert s.note == "derived: batch_size 16 * seq_len 64"


@pytest.mark.parametrize(("tokens", "steps"), [(2560, 10), (2561, 11), (10_000, 40), (1, 1)])
def test_max_steps_from_tokens_rounds_up(plan_of, tokens, steps):
    # tokens_per_step = batch_size 8 * seq_len 32 = 256
    plan = plan_of({"train.max_steps": None, "train.tokens": tokens, "schedule.warmup": 0})
    s = setting(plan, "max_steps")
    assert s.value == steps
    assert s.origin == "derived"
    assert s.note == f"derived: ceil(train.tokens {tokens} / tokens_per_step 256)"


@pytest.mark.parametrize(("fraction", "max_steps", "warmup"), [(0.05, 110, 6), (0.05, 200, 10), (0.5, 101, 51), (0.0, 100, 0)])
def test_warmup_fraction_rounds_up(plan_of, fraction, max_steps, warmup):
    plan = plan_of({"schedule.warmup": fraction, "train.max_steps": max_steps})
    s = setting(plan, "schedule_phases")
    assert warmup_of(s.value) == warmup
    assert s.origin == "derived"
    assert s.note.startswith(f"derived: schedule.warmup {fraction}, decay 'cosine'")


@pytest.mark.parametrize(("fraction", "max_steps", "warmup"), [(0.07, 100, 7), (0.55, 100, 55), (0.14, 50, 7)])
def test_warmup_fraction_is_exact_decimal_arithmetic(plan_of, fraction, max_steps, warmup):
    plan = plan_of({"schedule.warmup": fraction, "train.max_steps": max_steps})
    assert warmup_of(plan["schedule_phases"]) == warmup


def test_integer_warmup_is_steps(plan_of):
    plan = plan_of({"schedule.warmup": 7})
    warmup, decay = setting(plan, "schedule_phases").value
    assert warmup["steps"] == 7 and isinstance(warmup["steps"], int)
    assert (warmup["shape"], warmup["start"], warmup["end"]) == ("linear", 0.0, 1.0)
    assert decay["first_step"] == 7 and decay["steps"] == 100 - 7


def test_min_lr_becomes_min_lr_ratio(plan_of):
    plan = plan_of({"optim.lr": 1e-3, "schedule.min_lr": 1e-4})
    assert plan["schedule_phases"][-1]["end"] == pytest.approx(0.1)


def test_min_lr_above_lr_is_an_error(plan_of):
    (err,) = errors_of(plan_of, {"optim.lr": 1e-4, "schedule.min_lr": 1e-3})
    assert "schedule.min_lr 0.001 is above the peak LR 0.0001" == err.message
    assert err.location.source_line.startswith("min_lr = ")


def test_min_lr_ratio_is_a_plain_key_otherwise(plan_of):
    assert plan_of({"schedule.min_lr_ratio": 0.2})["schedule_phases"][-1]["end"] == 0.2


# -- epochs: numbers the script computes --------------------------------------------


def test_epochs_become_formulas(plan_of):
    plan = plan_of({"train.max_steps": None, "train.epochs": 2, "schedule.warmup": 0.1})
    names = [s.name for s in plan.settings]
    assert "max_steps" not in names and "schedule_phases" not in names
    assert setting(plan, "epochs").value == 2
    assert setting(plan, "schedule_spec").value[0] == {
        "name": "warmup", "shape": "linear", "start": 0.0, "end": 1.0, "fraction": 0.1
    }
    formulas = {f.name: f for f in plan.formulas}
    assert list(formulas) == ["steps_per_epoch", "max_steps", "schedule_phases"]
    assert formulas["steps_per_epoch"].expr == "len(train_sets[0]) // batch_size"
    assert formulas["max_steps"].expr == "math.ceil(epochs * steps_per_epoch)"
    assert formulas["schedule_phases"].expr == "schedule.layout(schedule_spec, max_steps, tokens_per_step)"
    for f in formulas.values():
        compile(f.expr, "<formula>", "eval")  # a plain expression
        assert f.note.startswith("derived: ")


def test_epochs_with_integer_warmup_need_no_warmup_formula(plan_of):
    plan = plan_of({"train.max_steps": None, "train.epochs": 1.5, "schedule.warmup": 5})
    assert [f.name for f in plan.formulas] == ["steps_per_epoch", "max_steps", "schedule_phases"]
    assert setting(plan, "schedule_spec").value[0]["steps"] == 5


def test_epochs_formulas_evaluate_in_order(plan_of):
    """The formulas are straight-line code over config variables and the data."""
    plan = plan_of({"train.max_steps": None, "train.epochs": 2.5, "schedule.warmup": 0.1})
    import math

    from recipec.runtime import schedule

    scope = {"math": math, "schedule": schedule, "train_sets": [range(1000)]}
    scope.update({s.name: s.value for s in plan.settings})
    for f in plan.formulas:
        scope[f.name] = eval(f.expr, scope)  # noqa: S307 - built by resolve from names and literals
    assert scope["steps_per_epoch"] == 1000 // 8
    assert scope["max_steps"] == math.ceil(2.5 * 125)
    assert warmup_of(scope["schedule_phases"]) == round(0.1 * scope["max_steps"])  # phase fractions round


# -- eval_every / save_every in epochs -------------------------------------------------


def _computed(plan, rows):
    """The plan's formulas over one segment of ``rows`` training rows, as `explain --data` evaluates them."""
    from recipec.data_figures import _computed as evaluate

    return evaluate(plan, [rows])


def test_cadences_in_epochs_become_formulas_after_the_run_length(plan_of):
    plan = plan_of({"train.max_steps": None, "train.epochs": 3, "train.eval_every": "1/3 epoch", "train.save_every": "1 epoch"})
    names = [s.name for s in plan.settings]
    assert "eval_every" not in names and "save_every" not in names
    formulas = {f.name: f for f in plan.formulas}
    assert list(formulas)[:2] == ["steps_per_epoch", "max_steps"]
    assert formulas["eval_every"].expr == "max(1, math.ceil(steps_per_epoch * 1 / 3))"
    assert formulas["save_every"].expr == "max(1, steps_per_epoch)"
    assert formulas["eval_every"].note == 'derived: ceil(train.eval_every "1/3 epoch" * steps_per_epoch), at least 1'
    # 240 rows of batch 8: 30 steps an epoch; a third of it is 10 steps, not 11 by a float's rounding
    scope = _computed(plan, 240)
    assert (scope["steps_per_epoch"], scope["eval_every"], scope["save_every"], scope["max_steps"]) == (30, 10, 30, 90)
    assert _computed(plan, 248)["eval_every"] == 11  # 31 steps: ceil(31 / 3)


@pytest.mark.parametrize(("value", "rows", "steps"), [("0.25 epoch", 800, 25), ("2 epochs", 800, 200), ("0.1 epoch", 88, 2), ("1 epoch", 7, 1)])  # 7 rows: under a batch
def test_cadence_in_epochs_with_a_run_length_in_steps(plan_of, value, rows, steps):
    plan = plan_of({"train.save_every": value})
    assert [f.name for f in plan.formulas] == ["steps_per_epoch", "save_every"]
    assert setting(plan, "max_steps").value == 100 and setting(plan, "eval_every").value == plan.recipe.train.eval_every
    assert _computed(plan, rows)["save_every"] == steps


def test_cadence_in_epochs_not_shorter_than_the_run_warns(plan_of):
    plan = plan_of({"train.max_steps": None, "train.epochs": 2, "train.save_every": "2 epochs", "train.eval_every": "1 epoch"})
    assert warning_messages(plan) == ['save_every "2 epochs" is not shorter than the run (train.epochs 2): only the final model is saved']
    assert plan.warnings[0].location.source_line.startswith("save_every = ")


def test_cadence_in_epochs_with_phased_sources_is_an_error(plan_of):
    sources = [
        {"builtin": "python-docs", "weight": 0.5, "phase_weights": {"cooldown": 0.9}},
        {"builtin": "python-docs", "weight": 0.5, "max_documents": 3, "phase_weights": {"cooldown": 0.1}},
    ]
    (err,) = errors_of(plan_of, {"data.sources": sources, "schedule.decay": "wsd", "schedule.cooldown": 0.5, "train.eval_every": "1 epoch"})
    assert err.message.startswith("`eval_every` in epochs needs one pass over one set of training rows, and data.sources[0] changes")
    assert err.location.source_line.startswith("eval_every = ")


# -- origins ---------------------------------------------------------------------------


def test_origins(plan_of):
    plan = plan_of({"optim.lr": 1e-3}, overrides=["train.max_steps=60", "optim.eps=1e-6"])
    lr = setting(plan, "lr")
    assert lr.origin.startswith("recipes/tiny.toml:")
    assert setting(plan, "max_steps").origin == "--set train.max_steps=60"
    assert setting(plan, "max_steps").value == 60
    assert setting(plan, "eps").origin == "--set optim.eps=1e-6"
    assert setting(plan, "weight_decay").origin == "default"
    assert setting(plan, "grad_accum_steps").origin == "derived"
    assert setting(plan, "output_dir").origin == "derived"
    assert plan.overrides == ("train.max_steps=60", "optim.eps=1e-6")


def test_origin_line_numbers_point_at_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        textwrap.dedent(
            """\
            [recipe]
            name = "lines"

            [model]
            init = "llama"

            [tokenizer]
            train = {vocab_size = 512}

            [data]
            seq_len = 32

            [[data.sources]]
            builtin = "python-docs"

            [optim]
            lr = 1e-3

            [train]
            max_steps = 100
            """
        )
    )
    plan, _ = plan_recipe("r.toml")
    lines = recipe.read_text().splitlines()
    for name, key in [("lr", "lr"), ("max_steps", "max_steps"), ("seq_len", "seq_len"), ("name", "name")]:
        origin = setting(plan, name).origin
        file, line = origin.rsplit(":", 1)
        assert file == "r.toml"
        assert lines[int(line) - 1].startswith(f"{key} = ")
    assert setting(plan, "sources").origin == "r.toml:13"
    assert setting(plan, "batch_size").origin == "default"


# -- cross-table errors ----------------------------------------------------------------


def test_seq_len_above_max_position_embeddings(plan_of):
    (err,) = errors_of(plan_of, {"data.seq_len": 256, "model.config.max_position_embeddings": 128})
    assert err.message == "data.seq_len 256 is longer than the model's 128 positions"
    assert err.help == "lower data.seq_len to at most 128, or raise model.config.max_position_embeddings"


def test_seq_len_checked_against_a_local_pretrained_config(tmp_path: Path, write_recipe):
    model = tmp_path / "models" / "small"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 16}))
    path = write_recipe({"model.path": "./models/small", "model.init": None, "model.config": None}, tokenizer=None)
    with pytest.raises(RecipeError) as info:
        plan_recipe(path, project=tmp_path)
    (err,) = info.value.diagnostics
    assert err.message == "data.seq_len 32 is longer than the model's 16 positions"
    assert err.help == "lower data.seq_len to at most 16"
    # a hub model's config is not read at compile time
    plan, _ = plan_recipe(path, ["model.path=org/small"], project=tmp_path)
    assert plan["model_path"] == "org/small"


def test_pretrained_model_brings_its_tokenizer(plan_of):
    plan = plan_of({"model.path": "org/model", "model.init": None, "model.config": None}, tokenizer=None)
    s = setting(plan, "tokenizer_path")
    assert s.value == "org/model" and s.origin == "derived"
    assert setting(plan, "tokenizer_train").value is None
    assert "model_config" not in [x.name for x in plan.settings]


def test_from_scratch_model_needs_a_tokenizer(plan_of):
    (err,) = errors_of(plan_of, tokenizer=None)
    assert err.message == "a from-scratch model (`model.init`) has no tokenizer of its own"


def test_warmup_not_shorter_than_run(plan_of):
    (err,) = errors_of(plan_of, {"schedule.warmup": 100})
    assert err.message == "warmup (100 steps) is not shorter than the run (100 steps)"
    assert err.location.source_line.startswith("warmup = 100")
    # a constant schedule has no decay to make room for
    plan_of({"schedule.warmup": 100, "schedule.decay": "constant"})


def test_errors_carry_the_warnings_found_alongside(plan_of):
    with pytest.raises(RecipeError) as info:
        plan_of({"schedule.min_lr": 1.0, "optim.lr": 0.5, "train.save_every": 1000})
    kinds = sorted(d.severity for d in info.value.diagnostics)
    assert kinds == ["error", "warning"]


# -- warnings --------------------------------------------------------------------------


def warning_messages(plan):
    return [w.message for w in plan.warnings]


@pytest.mark.parametrize(
    ("warmup", "max_steps", "expected"),
    [
        (1, 200, "warmup is 0.5% of the run (1 of 200 steps)"),
        (60, 100, "warmup is 60.0% of the run (60 of 100 steps)"),
        (2, 100, None),  # 2%: fine
        (50, 100, None),  # 50%: the edge is allowed
        (1, 100, None),  # 1%: the edge is allowed
        (0, 100, None),  # no warmup at all is a choice, not a slip
        (40, 60, None),  # short runs are exempt
    ],
)
def test_warmup_share_warning(plan_of, warmup, max_steps, expected):
    plan = plan_of({"schedule.warmup": warmup, "train.max_steps": max_steps, "train.save_every": 0, "train.eval_every": 0})
    messages = warning_messages(plan)
    assert messages == ([expected] if expected else [])
    if expected:
        assert plan.warnings[0].location.source_line.startswith("warmup = ")


@pytest.mark.parametrize(
    ("warmup", "max_steps", "expected"),
    [
        (2_000, 2_860_000, None),  # 0.07% of a large run, but 2,000 steps: a standard warmup
        (200, 100_000, None),  # 0.2%, and 200 steps
        (2, 5_000, "warmup is 0.04% of the run (2 of 5000 steps)"),  # short both ways, and not "0.0%"
        (50, 10_000, "warmup is 0.5% of the run (50 of 10000 steps)"),
        (1, 3_000, "warmup is 0.033% of the run (1 of 3000 steps)"),
    ],
)
def test_warmup_warning_needs_a_short_fraction_and_few_steps(plan_of, warmup, max_steps, expected):
    plan = plan_of({"schedule.warmup": warmup, "train.max_steps": max_steps, "train.save_every": 0, "train.eval_every": 0})
    assert warning_messages(plan) == ([expected] if expected else [])


FLOOR_NEVER_REACHED = 'is never reached: decay "constant" holds the LR at its peak'


@pytest.mark.parametrize(
    ("dotted", "expected", "line"),
    [
        ({"schedule.decay": "constant", "schedule.min_lr_ratio": 0.05}, "schedule.min_lr_ratio 0.05 " + FLOOR_NEVER_REACHED, "min_lr_ratio = "),
        ({"schedule.decay": "constant", "schedule.min_lr": 1e-5}, "schedule.min_lr 1e-05 " + FLOOR_NEVER_REACHED, "min_lr = "),
        ({"schedule.decay": "constant"}, None, None),  # the default floor is nobody's claim
        ({"schedule.min_lr_ratio": 0.05}, None, None),  # a cosine reaches it
    ],
)
def test_a_floor_the_schedule_never_reaches_warns(plan_of, dotted, expected, line):
    plan = plan_of(dotted)
    assert warning_messages(plan) == ([expected] if expected else [])
    if line:
        assert plan.warnings[0].location.source_line.startswith(line)


PHASES_TO_ZERO = """
[schedule]
min_lr_ratio = 0.1

[[schedule.phases]]
name = "warmup"
shape = "linear"
steps = 10
start = 0.0
end = 1.0

[[schedule.phases]]
name = "decay"
shape = "linear"
end = 0.0
"""


def test_a_floor_that_no_phase_decays_to_warns(plan_of):
    plan = plan_of(text=PHASES_TO_ZERO)
    assert warning_messages(plan) == [
        "schedule.min_lr_ratio 0.1 is never reached: every phase sets its own `end` or is constant"
    ]
    assert plan.warnings[0].location.source_line.startswith("min_lr_ratio = 0.1")
    assert warning_messages(plan_of(text=PHASES_TO_ZERO.replace("end = 0.0\n", ""))) == []  # the decay ends at the floor


@pytest.mark.parametrize(
    ("dotted", "expected"),
    [
        ({"schedule.min_lr_ratio": 1.0}, 'decay "cosine" goes from 1 to the floor 1 (schedule.min_lr_ratio 1): it stays flat'),
        (
            {"schedule.decay": "wsd", "schedule.min_lr_ratio": 1.0},
            'decay "wsd" goes from 1 to the floor 1 (schedule.min_lr_ratio 1): it stays flat',
        ),
        (
            {"optim.lr": 1e-3, "schedule.min_lr": 1e-3},
            'decay "cosine" goes from 1 to the floor 1 (schedule.min_lr 0.001): it stays flat',
        ),
        ({"schedule.min_lr_ratio": 0.99}, None),
    ],
)
def test_a_decay_whose_floor_is_its_peak_warns(plan_of, dotted, expected):
    plan = plan_of(dotted)
    assert warning_messages(plan) == ([expected] if expected else [])
    if expected:
        assert plan.warnings[0].location.source_line.startswith("min_lr")


def test_a_phase_that_starts_at_the_floor_is_flat(plan_of):
    text = PHASES_TO_ZERO.replace("min_lr_ratio = 0.1\n", "").replace("end = 0.0\n", "start = 0.1\n")
    plan = plan_of(text=text)
    assert warning_messages(plan) == [
        "phase 'decay' (linear) goes from 0.1 to the floor 0.1 (schedule.min_lr_ratio 0.1): it stays flat"
    ]
    assert plan.warnings[0].location.source_line == "[[schedule.phases]]"


def sources(*weights):
    return {"data": {"seq_len": 32, "sources": [{"builtin": "python-docs", "weight": w} for w in weights]}}


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ((0.67, 0.3356), "the sources' weights add up to 1.0056, not 1: they are relative, so the shares are 0.6663, 0.3337"),
        ((0.5, 0.3, 0.19), "the sources' weights add up to 0.99, not 1: they are relative, so the shares are 0.5051, 0.303, 0.1919"),
        ((0.7, 0.3), None),
        ((0.1, 0.2, 0.7), None),  # float noise: 0.1 + 0.2 + 0.7 is 0.9999999999999999
        ((0.5, 0.3), None),  # 0.8: relative weights, not shares
        ((2, 1), None),
        ((0.6, 1.5), None),  # a weight above 1 is no share
    ],
)
def test_weights_that_look_like_shares_but_miss_warn(plan_of, weights, expected):
    plan = plan_of(**sources(*weights))
    assert warning_messages(plan) == ([expected] if expected else [])
    if expected:
        assert plan.warnings[0].location.source_line.startswith("sources = ")


def test_eval_without_held_out_split_warns(plan_of):
    plan = plan_of({"data.eval_fraction": 0.0})
    assert warning_messages(plan) == [
        "data.eval_fraction is 0: there is no held-out split, so no evaluation runs"
    ]
    assert plan.warnings[0].location.source_line.startswith("eval_every = ")
    assert warning_messages(plan_of({"data.eval_fraction": 0.0, "train.eval_every": 0})) == []


def test_save_every_beyond_the_run_warns(plan_of):
    plan = plan_of({"train.save_every": 500})
    assert warning_messages(plan) == [
        "save_every 500 is longer than the run (100 steps): only the final model is saved"
    ]
    assert plan.warnings[0].location.source_line.startswith("save_every = 500")
    assert warning_messages(plan_of({"train.save_every": 100})) == []


def test_eval_every_beyond_the_run_warns(plan_of):
    plan = plan_of({"train.eval_every": 101})
    assert warning_messages(plan) == ["eval_every 101 is longer than the run: evaluation runs before the first step and at the end only"]
    plan = plan_of({"train.eval_every": 101, "train.eval_at_start": False})
    assert warning_messages(plan) == ["eval_every 101 is longer than the run: evaluation runs at the end only"]


def test_trust_remote_code_warns(plan_of):
    plan = plan_of(
        {"model.path": "org/model", "model.init": None, "model.config": None, "model.trust_remote_code": True},
        tokenizer=None,
    )
    assert warning_messages(plan) == ["trust_remote_code runs Python code that comes with the model"]


# -- hermetic compile ------------------------------------------------------------------


def test_resolve_reads_no_files(plan_of, monkeypatch: pytest.MonkeyPatch):
    """Local paths and globs are checked when the recipe is read (recipec/local_files.py), not in resolve."""
    import ast
    import glob
    import os
    import pathlib

    import recipec.resolve

    package = pathlib.Path(recipec.resolve.__file__).parent
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            assert not set(names) & {"glob", "os", "pathlib", "io", "shutil"}, f"{module.name} imports {names}"

    def touched(*args, **kwargs):
        raise AssertionError("resolve touched the file system")

    # pydantic finds its plugins (importlib.metadata, on disk) when it first completes a model
    # class; which test completes one first depends on the order, so load them before patching
    from pydantic.plugin._loader import get_plugins

    list(get_plugins())

    for owner, name in ((glob, "glob"), (glob, "iglob"), (os, "stat"), (os, "listdir"), (os, "scandir")):
        monkeypatch.setattr(owner, name, touched)
    for name in ("exists", "is_file", "is_dir", "open", "read_text", "read_bytes", "glob", "rglob"):
        monkeypatch.setattr(pathlib.Path, name, touched)
    plan = plan_of(
        {"model.path": "./no-such-model", "model.init": None, "model.config": None, "tokenizer.path": "~/no-such"},
        tokenizer=None,
        data={"sources": [{"path": "no-such-dir/*.jsonl"}], "filters": [{"type": "decontaminate", "path": "none/*.txt"}]},
    )
    assert plan["model_path"] == "./no-such-model"




HEAVY = ("torch", "transformers", "accelerate", "datasets", "tokenizers")
PLOTTING = ("matplotlib", "numpy")  # only `build` draws schedule.png


def test_compile_imports_no_training_library(minimal_recipe: Path, tmp_path: Path):
    """validate, resolve, render and write run without torch and friends (checked in a fresh process)."""
    script = textwrap.dedent(
        f"""
        import json, sys
        import recipec.cli, recipec.compiler
        from recipec.compiler import build, plan_recipe
        plan_recipe({str(minimal_recipe)!r}, project={str(tmp_path)!r})
        planned = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY + PLOTTING!r})
        build({str(minimal_recipe)!r}, (), {str(tmp_path / 'out')!r}, project={str(tmp_path)!r})
        built = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})
        print(json.dumps([planned, built]))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert json.loads(out.stdout) == [[], []]
    assert (tmp_path / "out" / "train.py").is_file()


# -- token sources --------------------------------------------------------------------


TOKEN_SOURCE = {
    "path": "tokens/*.bin",
    "records": "tokens",
    "tokenizer": "gpt2",
    "token_dtype": "uint16",
    "eos_token_id": 50256,
}


def test_a_token_source_reaches_the_stage_and_the_filters_of_every_source_warn_that_they_pass_over_it(plan_of):
    plan = plan_of(
        tokenizer={"path": "gpt2", "train": None},
        data={"sources": [{"builtin": "python-docs"}, TOKEN_SOURCE]},
        text='[[data.filters]]\ntype = "exact_dedup"\n',
    )
    assert setting(plan, "sources").value[1] == {**TOKEN_SOURCE, "text_field": "text", "on_error": "error", "split": "train", "filters": []}
    assert setting(plan, "examples").value is False  # ids are documents, not examples
    (warning,) = plan.warnings
    assert warning.message == "the [[data.filters]] read text and pass over sources[1], which hold token ids"
    assert warning.location.source_line == "[[data.filters]]"


@pytest.mark.parametrize(
    "change, key, message",
    [
        ({"tokenizer": None}, "records", "token ids need the tokenizer that made them"),
        ({"token_dtype": None}, "records", "a .bin token source needs `token_dtype`"),
        ({"eos_token_id": None}, "records", "a .bin token source needs `eos_token_id`"),
        ({"path": "t/*.parquet"}, "token_dtype", "`token_dtype` applies to .bin token files"),
        ({"path": "t/*.parquet", "token_dtype": None}, "eos_token_id", "`eos_token_id` applies to .bin token files"),
        ({"format": "jsonl"}, "format", "token ids are read from .bin, parquet, Arrow, datasets and MDS files, not jsonl"),
        ({"records": "text", "token_dtype": None, "eos_token_id": None}, "tokenizer", '`tokenizer` applies to token sources'),
        ({"roles": {"bot": "assistant"}}, "roles", "token ids have no roles"),
        ({"train_on": "assistant"}, "train_on", 'train_on = "assistant" does not apply to tokens records'),
        ({"fields": {"text": "body"}}, "fields", "tokens records have no field 'text'"),
    ],
)
def test_a_token_source_is_checked_at_its_keys(plan_of, change, key, message):
    source = {k: v for k, v in {**TOKEN_SOURCE, **change}.items() if v is not None}
    (error,) = errors_of(plan_of, tokenizer={"path": "gpt2", "train": None}, data={"sources": [source]})
    assert error.message.startswith(message), error.message
    where = error.location
    assert key in where.source_line[where.col - 1 : where.col - 1 + where.length], where
