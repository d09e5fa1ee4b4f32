"""train.early_stopping_patience: the rule against transformers' EarlyStoppingCallback, its state, and the recipe's errors."""

from __future__ import annotations

import math
import random

import pytest

from recipec.diagnostics import RecipeError
from recipec.runtime.stopping import EarlyStopping


def trainer_stops(losses: list[float], patience: int, threshold: float, metric: str = "eval_loss", greater: bool = False) -> list[bool]:
    """Whether transformers' Trainer stops after each evaluation: EarlyStoppingCallback.on_evaluate on the metric (in
    ``evaluate()``), then ``_determine_best_metric``, which moves ``state.best_metric`` to a better value, in that order."""
    from transformers import EarlyStoppingCallback, TrainerControl, TrainerState

    class Args:  # the TrainingArguments fields the callback reads
        metric_for_best_model = metric
        greater_is_better = greater

    callback, state, control = EarlyStoppingCallback(patience, threshold), TrainerState(), TrainerControl()
    stops = []
    for loss in losses:
        callback.on_evaluate(Args, state, control, metrics={metric: loss})
        stops.append(control.should_training_stop)
        if state.best_metric is None:
            state.best_metric = -math.inf if greater else math.inf
        if (loss > state.best_metric) if greater else (loss < state.best_metric):  # _determine_best_metric (np.greater / np.less)
            state.best_metric = loss
    return stops


def our_stops(losses: list[float], patience: int, threshold: float, metric: str = "eval_loss", greater: bool | None = None) -> list[bool]:
    stopper = EarlyStopping(patience, threshold, metric, greater)
    return [stopper.update(step, {metric: loss}) for step, loss in enumerate(losses)]


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
    # a metric where higher is better (transformers' default for any name not ending in "loss"): the same values, negated
    rising = [-v for v in losses]
    assert our_stops(rising, patience, threshold, "eval_reward_accuracy") == trainer_stops(rising, patience, threshold, "eval_reward_accuracy", True)
    # and a loss watched the other way round, set explicitly
    assert our_stops(losses, patience, threshold, "eval_loss", True) == trainer_stops(losses, patience, threshold, "eval_loss", True)


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


def test_the_best_is_the_highest_where_greater_is_better() -> None:
    """train.greater_is_better (and its default for a metric that is no loss): save_best's tracker keeps the highest."""
    from recipec.runtime.stopping import Lowest

    best = Lowest("eval_reward_accuracy")
    assert best.greater
    assert [best.update(step, {"eval_reward_accuracy": v}) for step, v in enumerate([0.5, math.nan, 0.75, 0.6, 0.75, 0.8])] == [
        True, False, True, False, False, True,
    ]  # fmt: skip
    assert best.record() == {"step": 5, "eval_reward_accuracy": 0.8}
    highest_loss = Lowest("eval_loss", greater=True)
    assert [highest_loss.update(s, {"eval_loss": v}) for s, v in enumerate([3.0, 2.0, 4.0])] == [True, False, True]
    stopper = EarlyStopping(1, 0.0, "eval_reward_margin")
    assert not stopper.update(0, {"eval_reward_margin": 0.1}) and not stopper.update(1, {"eval_reward_margin": 0.3})
    assert stopper.update(2, {"eval_reward_margin": 0.2})
    assert stopper.describe() == "stopped early at step 2: eval_reward_margin has not improved on its highest (0.3 at step 1) for 1 evaluation (patience 1)"


def test_the_plan_carries_the_metric_and_its_direction(plan_of) -> None:
    plan = plan_of({"output.save_best": True})
    assert (plan["best_metric"], plan["greater_is_better"]) == ("eval_loss", False)
    plan = plan_of({"train.early_stopping_patience": 2, "train.greater_is_better": True})
    assert (plan["best_metric"], plan["greater_is_better"]) == ("eval_loss", True)
    assert plan_of().get("best_metric") is None  # no early stopping, no save_best: the script has no such constant


@pytest.mark.parametrize(
    ("dotted", "key", "message"),
    [
        ({"train.best_metric": "eval_loss_code"}, "train.best_metric", "train.best_metric is for early stopping and output.save_best, and neither is set"),
        ({"train.greater_is_better": True}, "train.greater_is_better", "train.greater_is_better is for early stopping and output.save_best"),
        ({"output.save_best": True, "train.best_metric": "eval_los"}, "train.best_metric", "this run's evaluations log no 'eval_los'; did you mean 'eval_loss'?"),
        ({"output.save_best": True, "train.best_metric": "eval_reward_accuracy"}, "train.best_metric", "this run's evaluations log no 'eval_reward_accuracy'"),
        ({"output.save_best": True, "train.best_metric": "accuracy"}, "train.best_metric", "should match pattern"),
    ],
    ids=["metric-alone", "direction-alone", "typo", "no-preference", "no-eval-prefix"],
)
def test_a_metric_the_run_does_not_log_is_a_located_error(plan_of, dotted: dict, key: str, message: str) -> None:
    with pytest.raises(RecipeError) as e:
        plan_of(dotted)
    text = str(e.value)
    assert message in text and "recipes/tiny.toml:" in text and key.split(".")[-1] in text, text


def test_the_metrics_an_evaluation_logs() -> None:
    """What train.best_metric may name: the held-out losses, and the preference statistics of each (the Tally's keys
    that the objective fills)."""
    from recipec.resolve.train import evaluation_metrics
    from recipec.runtime.preference import Tally
    from recipec.schema import Recipe

    base = {"recipe": {"name": "m"}, "train": {"max_steps": 10}, "model": {"path": "org/m"}, "data": {"sources": [{"path": "a.jsonl"}, {"path": "b.jsonl", "name": "code", "split": "eval"}]}}
    assert evaluation_metrics(Recipe.model_validate(base)) == ["eval_loss", "eval_loss_code"]
    dpo = Recipe.model_validate({**base, "preference": {"objective": "dpo", "sft_weight": 0.5}})
    assert evaluation_metrics(dpo)[:2] == ["eval_loss", "eval_loss_code"]
    assert set(evaluation_metrics(dpo)[2:]) == {f"eval_{s}" for s in Tally.KEYS if s != "kl"} | {f"eval_code_{s}" for s in Tally.KEYS if s != "kl"}
    kto = evaluation_metrics(Recipe.model_validate({**base, "preference": {"objective": "kto"}}))
    assert "eval_kl" in kto and "eval_reward_accuracy" not in kto and "eval_reward_margin" in kto
    reward = evaluation_metrics(Recipe.model_validate({**base, "preference": {"objective": "reward"}}))
    assert "eval_reward_accuracy" in reward and "eval_logps_chosen" not in reward
