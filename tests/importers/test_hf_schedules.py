"""transformers' schedulers, imported: the recipe's LR at every step equals what
`transformers.get_scheduler` gives for the same TrainingArguments (within 1e-9 relative).

Each case is a TrainingArguments JSON imported with `--from transformers`; the recipe's LR
comes from its resolved phases (`recipec.runtime.schedule.values`), transformers' from
`get_scheduler` with `TrainingArguments.get_warmup_steps`, stepped as the Trainer steps it.
The length is given as max_steps, or as epochs with max_steps set by `--set` afterwards
(the Trainer's total steps are the same number either way).
"""

from __future__ import annotations

import json
import math

import pytest

from recipec.compiler import plan_recipe
from recipec.importers import Options, import_config
from recipec.runtime import schedule as runtime

from conftest import scheduler_lrs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

LR = 3e-4

CASES = {
    "linear": {"lr_scheduler_type": "linear", "warmup_steps": 10},
    "linear-default": {},
    "linear-ratio": {"lr_scheduler_type": "linear", "warmup_steps": 0.1},
    "linear-4x-ratio": {"lr_scheduler_type": "linear", "warmup_ratio": 0.03},
    "cosine": {"lr_scheduler_type": "cosine", "warmup_steps": 0.05},
    "cosine-no-warmup": {"lr_scheduler_type": "cosine"},
    "cosine_with_min_lr-rate": {"lr_scheduler_type": "cosine_with_min_lr", "warmup_steps": 12, "lr_scheduler_kwargs": {"min_lr_rate": 0.1}},
    "cosine_with_min_lr-abs": {"lr_scheduler_type": "cosine_with_min_lr", "warmup_steps": 12, "lr_scheduler_kwargs": {"min_lr": 3e-5}},
    "polynomial": {"lr_scheduler_type": "polynomial", "warmup_steps": 10, "lr_scheduler_kwargs": {"power": 2.0, "lr_end": 1e-6}},
    "polynomial-default": {"lr_scheduler_type": "polynomial", "warmup_steps": 10},
    "constant": {"lr_scheduler_type": "constant"},
    "constant-ignores-warmup": {"lr_scheduler_type": "constant", "warmup_steps": 10},
    "constant_with_warmup": {"lr_scheduler_type": "constant_with_warmup", "warmup_steps": 0.1},
    "inverse_sqrt": {"lr_scheduler_type": "inverse_sqrt", "warmup_steps": 10},
    "inverse_sqrt-timescale": {"lr_scheduler_type": "inverse_sqrt", "warmup_steps": 10, "lr_scheduler_kwargs": {"timescale": 40}},
    "cosine_with_restarts-1": {"lr_scheduler_type": "cosine_with_restarts", "warmup_steps": 10},
    "wsd-linear": {
        "lr_scheduler_type": "warmup_stable_decay",
        "warmup_steps": 10,
        "lr_scheduler_kwargs": {"num_decay_steps": 40, "decay_type": "linear", "min_lr_ratio": 0.1},
    },
    "wsd-cosine": {"lr_scheduler_type": "warmup_stable_decay", "warmup_steps": 0.1, "lr_scheduler_kwargs": {"num_decay_steps": 50}},
    "wsd-1-sqrt": {
        "lr_scheduler_type": "warmup_stable_decay",
        "warmup_steps": 10,
        "lr_scheduler_kwargs": {"num_decay_steps": 60, "decay_type": "1-sqrt", "min_lr_ratio": 0.05},
    },
}


def _recipe_lrs(tmp_path, monkeypatch, args: dict, total: int, by_epochs: bool) -> tuple[list[float], object]:
    monkeypatch.chdir(tmp_path)
    config = {"output_dir": "out", "learning_rate": LR, **args}
    config.update({"num_train_epochs": 2} if by_epochs else {"max_steps": total})
    path = tmp_path / "args.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    result = import_config(path, "transformers", Options(name="args", model="org/model", data="org/data"))
    recipe = tmp_path / "args.toml"
    recipe.write_text(result.text, encoding="utf-8")
    sets = ["train.max_steps=" + str(total), "train.epochs=null"] if by_epochs else []
    plan, _ = plan_recipe(recipe, sets) if not by_epochs else _with_steps(recipe, total)
    return [LR * m for m in runtime.values(plan["schedule_phases"], total)], result


def _with_steps(recipe, total):
    # the Trainer turns epochs into steps from the data; give the recipe the same steps
    text = recipe.read_text(encoding="utf-8").replace("epochs = 2", f"max_steps = {total}")
    recipe.write_text(text, encoding="utf-8")
    return plan_recipe(recipe, ())


def _reference(args: dict, total: int) -> list[float]:
    targs = transformers.TrainingArguments(output_dir="out", learning_rate=LR, max_steps=total, **_hf(args))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched = transformers.get_scheduler(
        targs.lr_scheduler_type,
        opt,
        num_warmup_steps=targs.get_warmup_steps(total),
        num_training_steps=total,
        scheduler_specific_kwargs=targs.lr_scheduler_kwargs,
    )
    return scheduler_lrs(opt, sched, total)


def _hf(args: dict) -> dict:
    args = dict(args)
    if "warmup_ratio" in args:  # transformers 5 folds the ratio into warmup_steps
        args["warmup_steps"] = args.pop("warmup_ratio")
    return args


@pytest.mark.parametrize("total", [200, 997])
@pytest.mark.parametrize("by_epochs", [False, True], ids=["max_steps", "epochs"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_lr_at_every_step_equals_transformers(tmp_path, monkeypatch, case, total, by_epochs):
    args = CASES[case]
    ours, result = _recipe_lrs(tmp_path, monkeypatch, args, total, by_epochs)
    ref = _reference(args, total)
    assert len(ours) == len(ref) == total
    for step, (a, b) in enumerate(zip(ours, ref)):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-18), f"step {step}: recipe {a!r}, transformers {b!r}"
    assert not [k for k, e in result.draft.ledger.items() if e.how == "approx" and k.startswith("lr_")]


def test_the_oracle_sees_a_wrong_floor(tmp_path, monkeypatch):
    """The comparison fails when the floor is left at recipec's default (0.1 of the peak)."""
    ours, result = _recipe_lrs(tmp_path, monkeypatch, CASES["cosine"], 200, False)
    text = (tmp_path / "args.toml").read_text(encoding="utf-8").replace("min_lr_ratio = 0.0", "min_lr_ratio = 0.1")
    (tmp_path / "args.toml").write_text(text, encoding="utf-8")
    plan, _ = plan_recipe(tmp_path / "args.toml", ())
    wrong = [LR * m for m in runtime.values(plan["schedule_phases"], 200)]
    ref = _reference(CASES["cosine"], 200)
    assert max(abs(a - b) for a, b in zip(wrong, ref)) > 1e-6
    assert max(abs(a - b) for a, b in zip(ours, ref)) < 1e-15


def test_constant_schedule_drops_its_warmup_with_a_warning(tmp_path, monkeypatch):
    _, result = _recipe_lrs(tmp_path, monkeypatch, CASES["constant-ignores-warmup"], 200, False)
    assert result.draft.ledger["warmup_steps"].reason == "ignored-by-tool"
    assert any("warmup_steps" in msg for msg, _ in result.draft.warnings)


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ({"lr_scheduler_type": "cosine_with_restarts", "lr_scheduler_kwargs": {"num_cycles": 3}}, "restarts"),
        ({"lr_scheduler_type": "cosine_warmup_with_min_lr", "warmup_steps": 10, "lr_scheduler_kwargs": {"min_lr_rate": 0.1}}, "one step ahead"),
        ({"lr_scheduler_type": "reduce_lr_on_plateau"}, "fixed in advance"),
    ],
)
def test_schedules_recipec_cannot_say_are_marked(tmp_path, monkeypatch, args, why):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"output_dir": "out", "num_train_epochs": 1, **args}), encoding="utf-8")
    result = import_config(path, "transformers", Options(name="args", model="org/model", data="org/data"))
    marked = {k: e for k, e in result.draft.ledger.items() if e.how != "exact"}
    assert any(why in e.why for e in marked.values()), marked


def test_restarts_that_divide_the_decay_are_exact(tmp_path, monkeypatch):
    """num_cycles 4 over 200 - 10 warmup steps... 190 is not a multiple of 4 (approximate);
    over 210 steps (200 decay steps) it is, and the LR matches except at the restart steps
    where transformers' float `% 1.0` lands just below 1 (see recipec.runtime.schedule)."""
    args = {"lr_scheduler_type": "cosine_with_restarts", "warmup_steps": 10, "lr_scheduler_kwargs": {"num_cycles": 4}}
    ours, result = _recipe_lrs(tmp_path, monkeypatch, args, 210, False)
    assert "lr_scheduler_kwargs.num_cycles" not in {k for k, e in result.draft.ledger.items() if e.how != "exact"}
    ref = _reference(args, 210)
    restarts = {10 + 50 * j for j in range(4)}
    bad = [s for s, (a, b) in enumerate(zip(ours, ref)) if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-18)]
    assert set(bad) <= restarts, bad


@pytest.mark.parametrize(
    "kwargs", [{"min_lr_rate": 1.0}, {"min_lr": LR}], ids=["rate", "absolute"]
)
def test_a_floor_equal_to_the_peak_is_a_warning(tmp_path, monkeypatch, kwargs):
    args = {"lr_scheduler_type": "cosine_with_min_lr", "warmup_steps": 10, "lr_scheduler_kwargs": kwargs}
    ours, result = _recipe_lrs(tmp_path, monkeypatch, args, 200, False)
    assert any("floor equals its peak" in msg for msg, _ in result.draft.warnings)
    assert ours[10:] == pytest.approx([LR] * 190, rel=1e-12)  # and the recipe is that constant LR too
    _, plain = _recipe_lrs(tmp_path, monkeypatch, CASES["cosine"], 200, False)
    assert not plain.draft.warnings
