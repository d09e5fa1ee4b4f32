"""The LR multipliers must reproduce transformers' schedulers step for step."""

import math
import pickle

import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

from recipec.runtime.schedule import DECAYS, lr_lambda, lr_multiplier

COMBOS = [(1, 0), (10, 0), (10, 3), (37, 37), (50, 1), (100, 10), (257, 19)]


def _transformers_lrs(make, max_steps):
    """LR used by each update 0..max_steps when stepping a transformers scheduler."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = make(optimizer)
    lrs = []
    for _ in range(max_steps + 1):
        lrs.append(scheduler.get_last_lr()[0])  # LR this update uses
        optimizer.step()
        scheduler.step()
    return lrs


def _ours(max_steps, **kwargs):
    return [lr_multiplier(s, max_steps=max_steps, **kwargs) for s in range(max_steps + 1)]


@pytest.mark.parametrize("max_steps,warmup", COMBOS)
def test_cosine_matches_transformers(max_steps, warmup):
    expected = _transformers_lrs(
        lambda opt: transformers.get_cosine_schedule_with_warmup(opt, warmup, max_steps), max_steps
    )
    assert _ours(max_steps, warmup_steps=warmup, decay="cosine") == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("max_steps,warmup", COMBOS)
@pytest.mark.parametrize("min_ratio", [0.1, 0.5])
def test_cosine_min_ratio_matches_transformers(max_steps, warmup, min_ratio):
    expected = _transformers_lrs(
        lambda opt: transformers.get_cosine_with_min_lr_schedule_with_warmup(
            opt, warmup, max_steps, min_lr_rate=min_ratio
        ),
        max_steps,
    )
    ours = _ours(max_steps, warmup_steps=warmup, decay="cosine", min_lr_ratio=min_ratio)
    assert ours == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("max_steps,warmup", COMBOS)
def test_linear_matches_transformers(max_steps, warmup):
    expected = _transformers_lrs(
        lambda opt: transformers.get_linear_schedule_with_warmup(opt, warmup, max_steps), max_steps
    )
    assert _ours(max_steps, warmup_steps=warmup, decay="linear") == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("max_steps,warmup", COMBOS)
def test_constant_matches_transformers(max_steps, warmup):
    expected = _transformers_lrs(lambda opt: transformers.get_constant_schedule_with_warmup(opt, warmup), max_steps)
    assert _ours(max_steps, warmup_steps=warmup, decay="constant") == pytest.approx(expected, abs=1e-12)


def test_first_step_is_zero_with_warmup():
    assert lr_multiplier(0, max_steps=100, warmup_steps=10, decay="cosine") == 0.0
    assert lr_multiplier(10, max_steps=100, warmup_steps=10, decay="cosine") == 1.0
    assert lr_multiplier(0, max_steps=100, warmup_steps=0, decay="cosine") == 1.0


def test_linear_min_ratio_by_formula():
    kw = dict(max_steps=10, warmup_steps=4, decay="linear", min_lr_ratio=0.1)
    assert lr_multiplier(4, **kw) == pytest.approx(1.0)
    assert lr_multiplier(7, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(10, **kw) == pytest.approx(0.1)
    assert lr_multiplier(25, **kw) == pytest.approx(0.1)  # clamped past the end


def test_warmup_start_ratio_by_formula():
    kw = dict(max_steps=10, warmup_steps=4, decay="cosine", warmup_start_ratio=0.2)
    assert lr_multiplier(0, **kw) == pytest.approx(0.2)
    assert lr_multiplier(2, **kw) == pytest.approx(0.2 + 0.8 * 2 / 4)
    assert lr_multiplier(3, **kw) == pytest.approx(0.2 + 0.8 * 3 / 4)
    assert lr_multiplier(4, **kw) == pytest.approx(1.0)


def test_cosine_midpoint_and_clamp_past_end():
    kw = dict(max_steps=110, warmup_steps=10, decay="cosine", min_lr_ratio=0.2)
    assert lr_multiplier(60, **kw) == pytest.approx(0.2 + 0.8 * 0.5)
    # transformers' cosine rises again past the end; ours stays at the minimum
    assert lr_multiplier(200, **kw) == pytest.approx(0.2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(decay="exponential"), "unknown decay"),
        (dict(max_steps=-1, warmup_steps=0), "max_steps"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(max_steps=5, warmup_steps=6), "must not exceed"),
        (dict(min_lr_ratio=1.5), "min_lr_ratio"),
        (dict(min_lr_ratio=-0.1), "min_lr_ratio"),
        (dict(warmup_start_ratio=2.0), "warmup_start_ratio"),
        (dict(warmup_start_ratio=float("nan")), "warmup_start_ratio"),
    ],
)
def test_invalid_arguments(kwargs, match):
    full = dict(max_steps=10, warmup_steps=2, decay="cosine") | kwargs
    with pytest.raises(ValueError, match=match):
        lr_multiplier(0, **full)
    with pytest.raises(ValueError, match=match):
        lr_lambda(**full)  # validated eagerly, not at the first step


def test_negative_step_rejected():
    with pytest.raises(ValueError, match="step"):
        lr_multiplier(-1, max_steps=10, warmup_steps=2, decay="cosine")


def test_lr_lambda_drives_lambdalr_like_transformers():
    max_steps, warmup = 40, 5
    fn = lr_lambda(max_steps=max_steps, warmup_steps=warmup, decay="cosine", min_lr_ratio=0.1)
    assert [fn(s) for s in range(max_steps + 1)] == _ours(
        max_steps, warmup_steps=warmup, decay="cosine", min_lr_ratio=0.1
    )
    ours = _transformers_lrs(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, fn), max_steps)
    expected = _transformers_lrs(
        lambda opt: transformers.get_cosine_with_min_lr_schedule_with_warmup(
            opt, warmup, max_steps, min_lr_rate=0.1
        ),
        max_steps,
    )
    assert ours == pytest.approx(expected, abs=1e-12)
    # picklable, and LambdaLR's state dict round-trips
    assert pickle.loads(pickle.dumps(fn))(7) == fn(7)
    param = torch.nn.Parameter(torch.zeros(1))
    sched = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([param], lr=1.0), fn)
    sched.load_state_dict(sched.state_dict())


ratios = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def schedules(draw):
    max_steps = draw(st.integers(min_value=0, max_value=2000))
    warmup = draw(st.integers(min_value=0, max_value=max_steps))
    return dict(
        max_steps=max_steps,
        warmup_steps=warmup,
        decay=draw(st.sampled_from(DECAYS)),
        min_lr_ratio=draw(ratios),
        warmup_start_ratio=draw(ratios),
    )


@settings(max_examples=300, deadline=None)
@given(kw=schedules(), step=st.integers(min_value=0, max_value=10000))
def test_multiplier_bounded(kw, step):
    value = lr_multiplier(step, **kw)
    assert min(kw["min_lr_ratio"], kw["warmup_start_ratio"]) <= value <= 1.0
    assert math.isfinite(value)


@settings(max_examples=150, deadline=None)
@given(kw=schedules())
def test_monotone_warmup_then_non_increasing(kw):
    # step warmup_steps is the peak, unless it is already past the last update
    peak = 1 if kw["warmup_steps"] < kw["max_steps"] else 0
    rising = [lr_multiplier(s, **kw) for s in range(kw["warmup_steps"] + peak)]
    assert all(b >= a for a, b in zip(rising, rising[1:]))
    if kw["decay"] == "constant":
        return
    values = [lr_multiplier(s, **kw) for s in range(kw["warmup_steps"], kw["max_steps"] + 3)]
    assert all(b <= a for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(kw["min_lr_ratio"])
