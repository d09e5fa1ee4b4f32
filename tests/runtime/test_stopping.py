"""train.early_stopping_patience: the rule against transformers' EarlyStoppingCallback, its state, and the recipe's errors."""

from __future__ import annotations

import math
import random

import pytest

from recipec.diagnostics import RecipeError
from recipec.runtime.stopping import EarlyStopping


def trainer_stops(losses: list[float], patience: int, threshold: float) -> list[bool]:
    """Whether transformers' Trainer stops after each evaluation: EarlyStoppingCallback.on_evaluate on eval_loss (in
    ``evaluate()``), then ``_determine_best_metric``, which moves ``state.best_metric`` to a lower value, in that order."""
    from transformers import EarlyStoppingCallback, TrainerControl, TrainerState

    class Args:  # the TrainingArguments fields the callback reads
        metric_for_best_model = "eval_loss"
        greater_is_better = False

    callback, state, control = EarlyStoppingCallback(patience, threshold), TrainerState(), TrainerControl()
    stops = []
    for loss in losses:
        callback.on_evaluate(Args, state, control, metrics={"eval_loss": loss})
        stops.append(control.should_training_stop)
        if state.best_metric is None:
            state.best_metric = math.inf
        if loss < state.best_metric:  # Trainer._determine_best_metric (np.less)
            state.best_metric = loss
    return stops


def our_stops(losses: list[float], patience: int, threshold: float) -> list[bool]:
    stopper = EarlyStopping(patience, threshold)
    return [stopper.update(step, {"eval_loss": loss}) for step, loss in enumerate(losses)]


@pytest.mark.parametrize("seed", range(40))
def test_the_rule_is_transformers_early_stopping_callback(seed: int) -> None:
    """Random held-out losses (falling, flat, rising, repeated values, NaN) with patience 1 to 4 and thresholds 0 to
    0.2: after every evaluation, stopping or not is what the Trainer decides."""
    rng = random.Random(seed)
    loss, losses = 5.0, []
    for _ in range(rng.randint(3, 30)):
        kind = rng.random()
        if kind < 0.1 and losses:
            losses.append(losses[-1])  # the same value again: no improvement
        elif kind < 0.15:
            losses.append(math.nan)
        else:
            loss += rng.uniform(-0.3, 0.1)
            losses.append(loss)
    patience, threshold = rng.randint(1, 4), rng.choice([0.0, 0.01, 0.05, 0.2])
    assert our_stops(losses, patience, threshold) == trainer_stops(losses, patience, threshold), (losses, patience, threshold)


def test_an_improvement_is_a_drop_below_the_lowest_by_more_than_the_threshold() -> None:
    stopper = EarlyStopping(2, threshold=0.1)
    assert not stopper.update(0, {"eval_loss": 3.0})  # the first sets the lowest
    assert not stopper.update(10, {"eval_loss": 2.95})  # lower, but by less than 0.1: one, and the lowest moves
    assert (stopper.best, stopper.best_step, stopper.waited) == (2.95, 10, 1)
    assert not stopper.update(20, {"eval_loss": 2.8})  # 0.15 below 2.95: counted afresh
    assert stopper.waited == 0
    assert not stopper.update(30, {"eval_loss": 2.9})
    assert stopper.update(40, {"eval_loss": math.nan})  # NaN improves on nothing
    assert stopper.stopped_at == 40 and stopper.record() == {
        "step": 40, "metric": "eval_loss", "best": 2.8, "best_step": 20, "patience": 2, "threshold": 0.1,
    }  # fmt: skip
    assert stopper.describe() == "stopped early at step 40: eval_loss has not improved on its lowest (2.8 at step 20) by more than 0.1 for 2 evaluations (patience 2)"


def test_the_state_goes_through_a_checkpoint() -> None:
    a = EarlyStopping(3)
    for step, loss in enumerate([3.0, 2.0, 2.5, 2.4]):
        a.update(step, {"eval_loss": loss})
    b = EarlyStopping(3)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict() == {"evaluations": 4, "best": 2.0, "best_step": 1, "waited": 2, "stopped_at": None}
    assert b.update(4, {"eval_loss": 2.1}) and b.stopped_at == 4


def test_an_evaluation_without_the_held_out_loss_does_not_count() -> None:
    """An evaluation of only other sets (a [continual] parent's eval_loss_parent, no held-out rows) changes nothing."""
    from recipec.runtime.stopping import Lowest

    stopper, lowest = EarlyStopping(1), Lowest()
    assert not stopper.update(0, {"eval_loss": 3.0}) and lowest.update(0, {"eval_loss": 3.0})
    assert not stopper.update(1, {"eval_loss_parent": 9.0}) and not lowest.update(1, {"eval_loss_parent": 9.0})
    assert stopper.state_dict() == {"evaluations": 1, "best": 3.0, "best_step": 0, "waited": 0, "stopped_at": None}


def test_a_patience_below_one_or_a_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="patience must be at least 1"):
        EarlyStopping(0)
    with pytest.raises(ValueError, match="threshold must be 0 or more"):
        EarlyStopping(1, -0.1)


def test_the_plan_carries_patience_and_threshold(plan_of) -> None:
    plan = plan_of({"train.early_stopping_patience": 3, "train.early_stopping_threshold": 0.01})
    assert plan["early_stopping_patience"] == 3 and plan["early_stopping_threshold"] == 0.01
    assert plan_of().get("early_stopping_patience") is None


@pytest.mark.parametrize(
    ("dotted", "key", "message"),
    [
        ({"train.early_stopping_threshold": 0.1}, "train.early_stopping_threshold", "early_stopping_patience is unset (no early stopping)"),
        ({"train.early_stopping_patience": 2, "train.eval_every": 0}, "train.early_stopping_patience", "train.eval_every is 0 (only the end is evaluated)"),
        ({"train.early_stopping_patience": 2, "data.eval_fraction": 0}, "train.early_stopping_patience", "there is no held-out split"),
        ({"train.early_stopping_patience": 0}, "train.early_stopping_patience", "greater than or equal to 1"),
    ],
    ids=["threshold-alone", "no-evaluation", "no-held-out-split", "patience-0"],
)
def test_early_stopping_without_evaluations_is_a_located_error(plan_of, dotted: dict, key: str, message: str) -> None:
    with pytest.raises(RecipeError) as e:
        plan_of(dotted)
    text = str(e.value)
    assert message in text and "recipes/tiny.toml:" in text and key.split(".")[-1] in text, text


def test_the_lowest_loss_is_below_every_one_before_it() -> None:
    """output.save_best's tracker: a new best only below every earlier loss (an equal one or NaN is not), its state
    through a checkpoint."""
    from recipec.runtime.stopping import Lowest

    lowest = Lowest()
    assert [lowest.update(step, {"eval_loss": v}) for step, v in enumerate([math.nan, 3.0, 3.0, 2.5, math.nan, 2.6, 2.4])] == [
        False, True, False, True, False, False, True,
    ]  # fmt: skip
    assert lowest.record() == {"step": 6, "eval_loss": 2.4}
    again = Lowest()
    again.load_state_dict(lowest.state_dict())
    assert not again.update(7, {"eval_loss": 2.4}) and again.update(8, {"eval_loss": 2.3})


@pytest.mark.parametrize(
    ("dotted", "message"),
    [
        ({"output.save_best": True, "train.eval_every": 0}, "train.eval_every is 0 (only the end is evaluated)"),
        ({"output.save_best": True, "data.eval_fraction": 0}, "there is no held-out split"),
    ],
    ids=["no-evaluation", "no-held-out-split"],
)
def test_save_best_without_evaluations_is_a_located_error(plan_of, dotted: dict, message: str) -> None:
    with pytest.raises(RecipeError) as e:
        plan_of(dotted)
    assert message in str(e.value) and "save_best" in str(e.value) and "recipes/tiny.toml:" in str(e.value)
    assert plan_of({"output.save_best": True})["save_best"] is True
