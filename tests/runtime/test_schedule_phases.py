"""The phase API without torch: layout rules and errors, each shape's formula, the value
after the end, values() and phase_at(), and properties of random valid schedules."""

import math
import pickle
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recipec.runtime.schedule import (
    SHAPE_PARAMS,
    SHAPES,
    ScheduleError,
    layout,
    multiplier,
    phase_at,
    phase_lambda,
    values,
)


def _wsd(**cooldown):
    return [
        {"name": "warmup", "shape": "linear", "start": 0.0, "end": 1.0, "steps": 10},
        {"name": "stable", "shape": "constant", "start": 1.0},
        {"name": "cooldown", "shape": "1-sqrt", "start": 1.0, "end": 0.0, **(cooldown or {"fraction": 0.2})},
    ]


def test_module_is_stdlib_only():
    code = "import recipec.runtime.schedule, sys; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_api_names():
    assert SHAPES == (
        "constant", "linear", "cosine", "exponential", "1-sqrt", "polynomial", "inverse_sqrt", "cyclic",
        "cosine_restarts",
    )
    assert SHAPE_PARAMS == {
        "polynomial": ("power",),
        "inverse_sqrt": ("timescale",),
        "cyclic": ("half_cycle",),
        "cosine_restarts": ("period", "period_mult"),
    }
    assert issubclass(ScheduleError, ValueError)


# --- layout ------------------------------------------------------------------------


def test_layout_adds_steps_and_first_step():
    laid = layout(_wsd(), 100)
    assert [(p["name"], p["steps"], p["first_step"]) for p in laid] == [
        ("warmup", 10, 0),
        ("stable", 70, 10),
        ("cooldown", 20, 80),
    ]
    assert all(type(p["steps"]) is int and type(p["first_step"]) is int for p in laid)
    assert "fraction" not in laid[2]
    assert laid[1]["end"] == 1.0  # a constant phase's end defaults to its start


def test_layout_returns_new_dicts_and_is_idempotent():
    phases = _wsd()
    before = [dict(p) for p in phases]
    laid = layout(phases, 100)
    assert phases == before
    assert layout(laid, 100) == laid


def test_layout_fills_parameter_defaults():
    laid = layout(
        [
            {"shape": "polynomial", "start": 1, "end": 0, "steps": 5},
            {"shape": "inverse_sqrt", "start": 1, "end": 0, "steps": 5},
            {"shape": "cosine_restarts", "start": 1, "end": 0, "period": 2, "steps": 5},
        ],
        15,
    )
    assert laid[0]["power"] == 1.0
    assert laid[1]["timescale"] == 1
    assert laid[2]["period_mult"] == 1
    assert laid[0]["start"] == 1.0 and type(laid[0]["start"]) is float


def test_none_counts_as_absent():
    laid = layout(
        [
            {"name": "a", "shape": "linear", "start": 0, "end": 1, "steps": 4, "fraction": None, "power": None},
            {"name": "b", "shape": "constant", "start": 1, "end": None, "steps": None},
        ],
        10,
    )
    assert [p["steps"] for p in laid] == [4, 6]


@pytest.mark.parametrize(
    "fraction,max_steps,expected",
    [
        (0.07, 100, 7),  # 7.000000000000001
        (0.29, 100, 29),  # 28.999999999999996
        (0.57, 100, 57),  # 56.99999999999999
        (0.025, 100, 3),  # 2.5: half away from zero
        (0.015, 100, 2),  # 1.5
        (0.125, 4, 1),  # 0.5
        (0.0125, 200, 3),  # 2.5
        (0.145, 100, 15),  # 14.499999999999998: 14.5 once rounded to 6 decimals, then half away
        (0.285, 100, 29),  # 28.499999999999996
        (0.565, 100, 57),  # 56.49999999999999
        (0.035, 100, 4),  # 3.5000000000000004
        (1 / 3, 10, 3),
        (2 / 3, 10, 7),
        (0.05, 1000, 50),
        (1.0, 37, 37),
    ],
)
def test_fraction_rounding(fraction, max_steps, expected):
    phases = [{"name": "a", "shape": "linear", "start": 0, "end": 1, "fraction": fraction}]
    if expected < max_steps:
        phases.append({"name": "rest", "shape": "constant", "start": 1})
    assert layout(phases, max_steps)[0]["steps"] == expected


@pytest.mark.parametrize(
    "tokens,tokens_per_step,expected",
    [(1_000_000, 4096, 245), (8192, 4096, 2), (8193, 4096, 3), (1e6, 4096, 245), (1, 4096, 1), (2**60, 2**20, 2**40)],
)
def test_tokens_length(tokens, tokens_per_step, expected):
    phases = [
        {"name": "warmup", "shape": "linear", "start": 0, "end": 1, "tokens": tokens},
        {"name": "rest", "shape": "constant", "start": 1},
    ]
    laid = layout(phases, expected + 5, tokens_per_step)
    assert laid[0]["steps"] == expected
    assert laid[1]["steps"] == 5


@pytest.mark.parametrize("rest", [0, 1, 2])
def test_rest_phase_anywhere(rest):
    phases = [
        {"name": "a", "shape": "constant", "start": 0.5, "steps": 3},
        {"name": "b", "shape": "constant", "start": 0.6, "fraction": 0.25},
        {"name": "c", "shape": "constant", "start": 0.7, "tokens": 40},
    ]
    for key in ("steps", "fraction", "tokens"):
        phases[rest].pop(key, None)
    laid = layout(phases, 40, tokens_per_step=8)
    lengths = {0: 3, 1: 10, 2: 5}
    lengths[rest] = 40 - sum(n for i, n in lengths.items() if i != rest)
    assert [p["steps"] for p in laid] == [lengths[0], lengths[1], lengths[2]]
    assert [p["first_step"] for p in laid] == [0, lengths[0], lengths[0] + lengths[1]]


def test_all_lengths_given_and_adding_up():
    laid = layout(_wsd(steps=20)[:1] + [{"name": "decay", "shape": "cosine", "start": 1, "end": 0, "steps": 90}], 100)
    assert [p["steps"] for p in laid] == [10, 90]


def _err(phases, max_steps=100, tokens_per_step=1):
    with pytest.raises(ScheduleError) as info:
        layout(phases, max_steps, tokens_per_step)
    return info.value


def _one(shape="linear", **kw):
    phase = {"name": "p", "shape": shape, "start": 1.0, "end": 0.0}
    phase.update(kw)
    return [phase]


ERRORS = [
    # (id, phases, max_steps, tokens_per_step, phase, key, message pattern)
    ("two rest phases",
     [{"name": "a", "shape": "constant", "start": 1}, {"name": "b", "shape": "constant", "start": 1}], 100, 1, 1,
     None, r'Phase "a" and phase "b" both leave out their length.*only one phase may take the rest'),
    ("rest left with 0",
     [{"name": "a", "shape": "constant", "start": 1, "steps": 100}, {"name": "b", "shape": "constant", "start": 1}],
     100, 1, 1, None, r'Phase "b" takes the rest of the run, but the other phases already take 100 of the 100 '
     r'steps.*leaving 0'),
    ("rest left negative",
     [{"name": "a", "shape": "constant", "start": 1, "fraction": 0.5}, {"name": "b", "shape": "constant", "start": 1},
      {"name": "c", "shape": "constant", "start": 1, "steps": 60}], 100, 1, 1, None, r"take 110 of the 100.*-10"),
    ("sum too small",
     [{"name": "a", "shape": "constant", "start": 1, "steps": 40}, {"name": "b", "shape": "constant", "start": 1,
                                                                     "steps": 50}],
     100, 1, None, None, r"add up to 90 steps, but the run has max_steps = 100\. Leave one phase's length out"),
    ("sum too large", _one(steps=101), 100, 1, None, None, r"add up to 101 steps, but the run has max_steps = 100"),
    ("zero steps", _one(steps=0), 100, 1, 0, "steps", r'Phase "p" is a zero-length phase \(steps = 0\)'),
    ("zero fraction", _one(fraction=0.004), 100, 1, 0, "fraction",
     r"zero-length phase \(fraction = 0.004 of max_steps = 100 rounds to 0 steps\)"),
    ("zero tokens", _one(tokens=0), 100, 1, 0, "tokens", r"zero-length phase \(tokens = 0 at 1 tokens per step"),
    ("negative steps", _one(steps=-5), 100, 1, 0, "steps", r"negative length \(steps = -5\)"),
    ("negative fraction", _one(fraction=-0.1), 100, 1, 0, "fraction", r"negative length"),
    ("negative tokens", _one(tokens=-4096), 100, 4096, 0, "tokens", r"negative length"),
    ("fraction above 1", _one(fraction=1.5), 100, 1, 0, "fraction", r"more than the whole run"),
    ("float steps", _one(steps=10.0), 100, 1, 0, "steps", r"whole number"),
    ("bool steps", _one(steps=True), 100, 1, 0, "steps", r"whole number"),
    ("string fraction", _one(fraction="0.1"), 100, 1, 0, "fraction", r"must be a number"),
    ("two lengths", _one(steps=10, fraction=0.1), 100, 1, 0, "fraction",
     r"gives its length more than once \(steps and fraction\)"),
    ("unknown shape", _one("cosine_with_min"), 100, 1, 0, "shape", r"unknown shape 'cosine_with_min'; expected one of"),
    ("no shape", [{"name": "p", "start": 1, "end": 0}], 100, 1, 0, "shape", r'Phase "p" has no shape'),
    ("power on cosine", _one("cosine", power=2.0), 100, 1, 0, "power",
     r"is a cosine phase, which does not take 'power' \(a parameter of polynomial phases\)"),
    ("half_cycle on linear", _one("linear", half_cycle=5), 100, 1, 0, "half_cycle", r"does not take 'half_cycle'"),
    ("period on cyclic", _one("cyclic", half_cycle=5, period=3), 100, 1, 0, "period", r"does not take 'period'"),
    ("unknown key", _one(min_lr=0.1), 100, 1, 0, "min_lr", r"unknown key 'min_lr'"),
    ("cyclic without half_cycle", _one("cyclic"), 100, 1, 0, "half_cycle", r"cyclic phase and needs 'half_cycle'"),
    ("restarts without period", _one("cosine_restarts", period_mult=2), 100, 1, 0, "period",
     r"cosine_restarts phase and needs 'period'"),
    ("end above the peak", _one(end=1.5), 100, 1, 0, "end", r"end = 1.5, a minimum above the peak"),
    ("start above the peak", _one(start=2), 100, 1, 0, "start", r"start = 2, a value above the peak"),
    ("negative end", _one(end=-0.1), 100, 1, 0, "end", r"below 0"),
    ("nan start", _one(start=float("nan")), 100, 1, 0, "start", r"must be a number from 0 to 1"),
    ("bool start", _one(start=True), 100, 1, 0, "start", r"must be a number"),
    ("no start", [{"name": "p", "shape": "linear", "end": 0}], 100, 1, 0, "start", r"has no 'start' multiplier"),
    ("no end", [{"name": "p", "shape": "cosine", "start": 1}], 100, 1, 0, "end", r"has no 'end' multiplier"),
    ("exponential from 0", _one("exponential", start=0.0, end=1.0), 100, 1, 0, "start",
     r"exponential and cannot start at 0"),
    ("exponential to 0", _one("exponential"), 100, 1, 0, "end", r"exponential and cannot end at 0"),
    ("constant with another end", _one("constant", start=0.5, end=0.1), 100, 1, 0, "end",
     r"constant at start = 0.5 but has end = 0.1"),
    ("inverse_sqrt floor above start", _one("inverse_sqrt", start=0.5, end=0.6), 100, 1, 0, "end",
     r"floor end = 0.6 above it"),
    ("zero power", _one("polynomial", power=0), 100, 1, 0, "power", r"power = 0; it must be a positive number"),
    ("zero timescale", _one("inverse_sqrt", timescale=0), 100, 1, 0, "timescale", r"positive number"),
    ("zero half_cycle", _one("cyclic", half_cycle=0), 100, 1, 0, "half_cycle", r"whole number of steps, 1 or more"),
    ("float period", _one("cosine_restarts", period=2.5), 100, 1, 0, "period", r"whole number of steps"),
    ("zero period_mult", _one("cosine_restarts", period=2, period_mult=0), 100, 1, 0, "period_mult",
     r"period_mult = 0; it must be a whole number, 1 or more"),
    ("float period_mult", _one("cosine_restarts", period=2, period_mult=1.5), 100, 1, 0, "period_mult",
     r"whole number"),
    ("zero max_steps", _one(), 0, 1, None, None, r"max_steps must be a whole number of optimizer steps, 1 or more"),
    ("float max_steps", _one(), 100.0, 1, None, None, r"max_steps must be a whole number"),
    ("zero tokens_per_step", _one(), 100, 0, None, None,
     r"tokens per optimizer step must be a whole number, 1 or more"),
    ("no phases", [], 100, 1, None, None, r"at least one phase"),
    ("not a dict", [{"shape": "constant", "start": 1, "steps": 50}, "cosine"], 100, 1, 1, None,
     r"Phase 2 of 2 must be a table"),
]


@pytest.mark.parametrize("phases,max_steps,tokens_per_step,phase,key,pattern", [e[1:] for e in ERRORS],
                         ids=[e[0] for e in ERRORS])
def test_layout_errors(phases, max_steps, tokens_per_step, phase, key, pattern):
    error = _err(phases, max_steps, tokens_per_step)
    assert (error.phase, error.key) == (phase, key)
    assert re.search(pattern, str(error)), str(error)
    message = str(error)
    assert message[0].isupper() and message.endswith("."), message  # a full sentence


def test_unnamed_phase_is_named_by_position():
    phases = [
        {"shape": "linear", "start": 0, "end": 1, "steps": 5},
        {"shape": "cosine", "start": 1, "end": 1.2},
        {"shape": "constant", "start": 1, "steps": 1},
    ]
    error = _err(phases)
    assert str(error).startswith("Phase 2 of 3 has end = 1.2")
    assert (error.phase, error.key) == (1, "end")


def test_schedule_error_pickles_with_its_fields():
    error = _err(_one(steps=0))
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.phase, again.key) == (str(error), 0, "steps")


# --- shapes --------------------------------------------------------------------------


def _phase(shape, steps, **kw):
    phase = {"shape": shape, "steps": steps}
    phase.update(kw)
    return layout([phase], steps)


@pytest.mark.parametrize(
    "shape,params,k,expected",
    [
        ("constant", {"start": 0.3}, 7, 0.3),
        ("linear", {"start": 0.2, "end": 0.8}, 5, 0.5),
        ("linear", {"start": 0.0, "end": 1.0}, 3, 0.3),
        ("cosine", {"start": 1.0, "end": 0.2}, 5, 0.6),
        ("cosine", {"start": 0.1, "end": 1.0}, 5, 0.55),  # a cosine warmup
        ("cosine", {"start": 1.0, "end": 0.0}, 2, 0.5 * (1 + math.cos(math.pi * 0.2))),
        ("exponential", {"start": 0.01, "end": 1.0}, 5, 0.1),  # geometric midpoint
        ("exponential", {"start": 1.0, "end": 0.001}, 2, 1.0 * 0.001 ** 0.2),
        ("1-sqrt", {"start": 1.0, "end": 0.0}, 4, 1 - math.sqrt(0.4)),
        ("1-sqrt", {"start": 1.0, "end": 0.1}, 9, 1 - 0.9 * math.sqrt(0.9)),
        ("polynomial", {"start": 1.0, "end": 0.1, "power": 2.0}, 4, 0.1 + 0.9 * 0.6 ** 2),
        ("polynomial", {"start": 1.0, "end": 0.0}, 4, 0.6),  # power defaults to 1: linear
        ("inverse_sqrt", {"start": 1.0, "end": 0.0}, 3, 0.5),  # timescale 1: sqrt(1 / 4)
        ("inverse_sqrt", {"start": 0.8, "end": 0.0, "timescale": 4}, 5, 0.8 * math.sqrt(4 / 9)),
        ("inverse_sqrt", {"start": 1.0, "end": 0.5}, 9, 0.5),  # sqrt(1 / 10) < 0.5: floored at end
        ("cyclic", {"start": 1.0, "end": 0.2, "half_cycle": 4}, 0, 0.2),
        ("cyclic", {"start": 1.0, "end": 0.2, "half_cycle": 4}, 2, 0.6),
        ("cyclic", {"start": 1.0, "end": 0.2, "half_cycle": 4}, 4, 1.0),
        ("cyclic", {"start": 1.0, "end": 0.2, "half_cycle": 4}, 7, 0.4),
        ("cyclic", {"start": 1.0, "end": 0.2, "half_cycle": 4}, 8, 0.2),
        ("cosine_restarts", {"start": 1.0, "end": 0.0, "period": 4}, 2, 0.5),
        ("cosine_restarts", {"start": 1.0, "end": 0.0, "period": 4}, 4, 1.0),
        ("cosine_restarts", {"start": 1.0, "end": 0.0, "period": 2, "period_mult": 2}, 2, 1.0),  # cycles 2, 4, 8
        ("cosine_restarts", {"start": 1.0, "end": 0.0, "period": 2, "period_mult": 2}, 4, 0.5),
        ("cosine_restarts", {"start": 1.0, "end": 0.0, "period": 2, "period_mult": 2}, 6, 1.0),
    ],
)
def test_shape_formulas(shape, params, k, expected):
    laid = _phase(shape, steps=10, **params)
    assert multiplier(k, laid) == pytest.approx(expected, rel=1e-14, abs=1e-15)


@pytest.mark.parametrize(
    "phase,after",
    [
        ({"shape": "constant", "start": 0.4}, 0.4),
        ({"shape": "linear", "start": 0.0, "end": 0.9}, 0.9),
        ({"shape": "cosine", "start": 1.0, "end": 0.1}, 0.1),
        ({"shape": "exponential", "start": 1.0, "end": 0.01}, 0.01),
        ({"shape": "1-sqrt", "start": 1.0, "end": 0.0}, 0.0),
        ({"shape": "polynomial", "start": 1.0, "end": 0.2, "power": 3.0}, 0.2),
        ({"shape": "inverse_sqrt", "start": 1.0, "end": 0.0, "timescale": 10}, math.sqrt(10 / 20)),  # k = steps
        ({"shape": "inverse_sqrt", "start": 1.0, "end": 0.9, "timescale": 1}, 0.9),
        ({"shape": "cyclic", "start": 1.0, "end": 0.0, "half_cycle": 4}, 0.5),  # 10 = 8 + 2: half way up
        ({"shape": "cyclic", "start": 1.0, "end": 0.0, "half_cycle": 5}, 0.0),  # a whole cycle: back at low
        ({"shape": "cosine_restarts", "start": 1.0, "end": 0.1, "period": 5}, 0.1),  # finished cycle: not a restart
        ({"shape": "cosine_restarts", "start": 1.0, "end": 0.0, "period": 4}, 0.5),  # mid-cycle: formula at k = 10
        ({"shape": "cosine_restarts", "start": 1.0, "end": 0.0, "period": 2, "period_mult": 4}, 0.0),  # cycles 2 + 8
        ({"shape": "cosine_restarts", "start": 1.0, "end": 0.0, "period": 2, "period_mult": 2}, 0.5),  # 2 + 4 + 4/8
    ],
)
def test_value_after_the_end(phase, after):
    laid = layout([dict(phase, steps=10)], 10)
    for step in (10, 11, 1000):
        assert multiplier(step, laid) == pytest.approx(after, rel=1e-14, abs=1e-15)
    assert values(laid, 13)[10:] == [multiplier(10, laid)] * 3


def test_boundaries_between_phases():
    laid = layout(_wsd(), 100)
    assert multiplier(0, laid) == 0.0
    assert multiplier(9, laid) == 0.9
    assert multiplier(10, laid) == 1.0  # first step of the stable phase
    assert multiplier(79, laid) == 1.0
    assert multiplier(80, laid) == 1.0  # first step of the cooldown is its start
    assert multiplier(99, laid) == pytest.approx(1 - math.sqrt(19 / 20))
    assert multiplier(100, laid) == 0.0
    assert [phase_at(s, laid) for s in (0, 9, 10, 79, 80, 99, 100, 10**9)] == [0, 0, 1, 1, 2, 2, 2, 2]


def test_values_equal_multiplier_everywhere():
    phases = [
        {"name": "warmup", "shape": "exponential", "start": 0.01, "end": 1.0, "steps": 7},
        {"name": "cyc", "shape": "cyclic", "start": 1.0, "end": 0.5, "half_cycle": 3, "steps": 20},
        {"name": "sgdr", "shape": "cosine_restarts", "start": 0.9, "end": 0.1, "period": 2, "period_mult": 3,
         "steps": 30},
        {"name": "poly", "shape": "polynomial", "start": 0.5, "end": 0.05, "power": 1.5, "fraction": 0.1},
        {"name": "rsqrt", "shape": "inverse_sqrt", "start": 0.4, "end": 0.01, "timescale": 5, "steps": 9},
        {"name": "lin", "shape": "linear", "start": 0.3, "end": 0.6, "steps": 3},
        {"name": "cos", "shape": "cosine", "start": 0.6, "end": 0.0},
        {"name": "flat", "shape": "constant", "start": 0.2, "steps": 4},
        {"name": "cool", "shape": "1-sqrt", "start": 0.2, "end": 0.0, "steps": 11},
    ]
    laid = layout(phases, 200)
    expected = [multiplier(s, laid) for s in range(230)]
    assert values(laid, 200) == expected[:200]
    assert values(laid, 230) == expected
    assert values(laid, 50) == expected[:50]
    assert values(laid, 0) == []


def test_values_is_linear_time():
    laid = layout([{"name": f"p{i}", "shape": "linear", "start": 0.5, "end": 0.4, "steps": 100} for i in range(1000)],
                  100_000)
    out = values(laid, 100_000)  # a phase search per step would take minutes here
    assert len(out) == 100_000 and out[-1] == pytest.approx(0.401)


def test_step_and_phases_are_checked():
    laid = layout(_wsd(), 100)
    with pytest.raises(ValueError, match="step"):
        multiplier(-1, laid)
    with pytest.raises(ValueError, match="step"):
        phase_at(1.5, laid)
    with pytest.raises(ScheduleError, match="laid out"):
        multiplier(3, _wsd())


# --- phase_lambda ----------------------------------------------------------------------


def test_phase_lambda_is_a_picklable_partial():
    laid = layout(_wsd(), 100)
    fn = phase_lambda(laid)
    again = pickle.loads(pickle.dumps(fn))
    assert [again(s) for s in range(105)] == [fn(s) for s in range(105)] == [multiplier(s, laid) for s in range(105)]
    laid[1]["start"] = 0.5  # a later change to the caller's list does not reach the callable
    assert fn(50) == 1.0


def test_phase_lambda_checks_eagerly():
    with pytest.raises(ScheduleError, match="laid out"):
        phase_lambda(_wsd())
    laid = layout(_wsd(), 100)
    laid[2]["first_step"] = 81
    with pytest.raises(ScheduleError, match="first_step = 81.*end at step 80"):
        phase_lambda(laid)
    laid = layout(_wsd(), 100)
    laid[1]["end"] = 0.5
    with pytest.raises(ScheduleError, match="constant"):
        phase_lambda(laid)


# --- properties --------------------------------------------------------------------------

ratio = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
positive_ratio = st.floats(min_value=1e-4, max_value=1.0, allow_nan=False)


@st.composite
def phase_specs(draw):
    shape = draw(st.sampled_from(SHAPES))
    if shape == "exponential":
        start, end = draw(positive_ratio), draw(positive_ratio)
    else:
        start, end = draw(ratio), draw(ratio)
    if shape == "constant":
        end = start
    if shape == "inverse_sqrt":
        start, end = max(start, end), min(start, end)
    phase = {"shape": shape, "start": start, "end": end}
    if shape == "polynomial":
        phase["power"] = draw(st.floats(min_value=0.1, max_value=5.0))
    elif shape == "inverse_sqrt":
        phase["timescale"] = draw(st.integers(min_value=1, max_value=1000))
    elif shape == "cyclic":
        phase["half_cycle"] = draw(st.integers(min_value=1, max_value=20))
    elif shape == "cosine_restarts":
        phase["period"] = draw(st.integers(min_value=1, max_value=20))
        phase["period_mult"] = draw(st.integers(min_value=1, max_value=3))
    phase["steps"] = draw(st.integers(min_value=1, max_value=60))
    return phase


@st.composite
def schedules(draw):
    phases = draw(st.lists(phase_specs(), min_size=1, max_size=6))
    max_steps = sum(p["steps"] for p in phases)
    if draw(st.booleans()):  # one phase takes the rest
        del phases[draw(st.integers(min_value=0, max_value=len(phases) - 1))]["steps"]
    return phases, max_steps


@settings(max_examples=200, deadline=None)
@given(spec=schedules())
def test_random_schedules(spec):
    phases, max_steps = spec
    laid = layout(phases, max_steps)
    assert sum(p["steps"] for p in laid) == max_steps
    assert [p["first_step"] for p in laid] == [sum(p["steps"] for p in laid[:i]) for i in range(len(laid))]
    out = values(laid, max_steps + 5)
    assert out == [multiplier(s, laid) for s in range(max_steps + 5)]
    assert out == [phase_lambda(laid)(s) for s in range(max_steps + 5)]
    low = min(min(p["start"], p["end"]) for p in laid)
    high = max(max(p["start"], p["end"]) for p in laid)
    assert all(0.0 <= low <= v <= high <= 1.0 and math.isfinite(v) for v in out)
    for i, p in enumerate(laid):
        first = p["first_step"]
        assert phase_at(first, laid) == i
        assert phase_at(first + p["steps"] - 1, laid) == i
        span = out[first : first + p["steps"]]
        assert min(p["start"], p["end"]) <= min(span) and max(span) <= max(p["start"], p["end"])
        # each phase starts at its start (cyclic: at its low point, end)
        assert out[first] == (p["end"] if p["shape"] == "cyclic" else p["start"])
    assert out[max_steps:] == [out[max_steps]] * 5


@settings(max_examples=100, deadline=None)
@given(
    fraction=st.floats(min_value=0.0, max_value=1.0, exclude_min=True),
    max_steps=st.integers(min_value=1, max_value=10**6),
)
def test_fraction_is_the_nearest_whole_step(fraction, max_steps):
    phases = [{"name": "a", "shape": "constant", "start": 1.0, "fraction": fraction}]
    exact = fraction * max_steps
    if round(exact, 6) < 0.5:
        with pytest.raises(ScheduleError, match="zero-length"):
            layout(phases, max_steps)
        return
    phases.append({"name": "b", "shape": "constant", "start": 1.0})
    if round(exact, 6) >= max_steps - 0.5:
        phases.pop()
    steps = layout(phases, max_steps)[0]["steps"]
    assert abs(steps - exact) <= 0.5 + 1e-6
