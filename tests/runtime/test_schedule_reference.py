"""Phase schedules against the schedulers of torch and transformers, step by step.

Each reference runs on a dummy optimizer with lr = 1.0 (or lr = peak where the
reference takes an absolute floor); its LR is read from
``optimizer.param_groups[0]["lr"]`` before each ``scheduler.step()``, which is
the LR of that optimizer update. Ours is ``multiplier(s, layout(phases, T))``.
Agreement is to 1e-12 relative. Where the two differ by convention (after the
end of the run, a restart step), the test says so and checks our convention.
"""

import math
import pickle
import warnings

import pytest
import torch
import transformers

from recipec.runtime.schedule import layout, multiplier, phase_lambda, values

REL = 1e-12
COMBOS = [(1, 0), (10, 0), (10, 3), (37, 37), (50, 1), (100, 10), (257, 19)]  # (max_steps, warmup)


def _reference(make, n, lr=1.0):
    """LR / lr of updates 0..n-1 of the scheduler make(optimizer)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = make(optimizer)
        lrs = []
        for _ in range(n):
            lrs.append(optimizer.param_groups[0]["lr"] / lr)
            optimizer.step()
            scheduler.step()
    return lrs


def _ours(phases, max_steps, n=None):
    """Our multiplier at steps 0..n-1 (default: the run and the step after it)."""
    laid = layout(phases, max_steps)
    n = max_steps + 1 if n is None else n
    ours = [multiplier(s, laid) for s in range(n)]
    assert values(laid, n) == ours
    return ours


def _assert_close(ours, reference, rel=REL):
    assert len(ours) == len(reference)
    bad = [
        (s, a, b) for s, (a, b) in enumerate(zip(ours, reference)) if not math.isclose(a, b, rel_tol=rel, abs_tol=0.0)
    ]
    assert not bad, f"steps differing (step, ours, reference): {bad[:5]}"


def _warmup(steps, start=0.0, shape="linear", **params):
    if steps == 0:
        return []
    return [{"name": "warmup", "shape": shape, "start": start, "end": 1.0, "steps": steps, **params}]


def _decay(steps, shape, end, **params):
    if steps == 0:
        return []
    return [{"name": "decay", "shape": shape, "start": 1.0, "end": end, "steps": steps, **params}]


# --- transformers ------------------------------------------------------------


@pytest.mark.parametrize("max_steps,warmup", COMBOS)
def test_cosine(max_steps, warmup):
    reference = _reference(
        lambda opt: transformers.get_cosine_schedule_with_warmup(opt, warmup, max_steps), max_steps + 1
    )
    phases = _warmup(warmup) + _decay(max_steps - warmup, "cosine", 0.0)
    _assert_close(_ours(phases, max_steps), reference)  # 0..T-1 and T


@pytest.mark.parametrize("max_steps,warmup", COMBOS)
@pytest.mark.parametrize("min_ratio", [0.1, 0.5])
def test_cosine_with_min_lr_rate(max_steps, warmup, min_ratio):
    reference = _reference(
        lambda opt: transformers.get_cosine_with_min_lr_schedule_with_warmup(
            opt, warmup, max_steps, min_lr_rate=min_ratio
        ),
        max_steps + 1,
    )
    phases = _warmup(warmup) + _decay(max_steps - warmup, "cosine", min_ratio)
    _assert_close(_ours(phases, max_steps), reference)


def test_cosine_with_absolute_min_lr():
    peak, floor, max_steps, warmup = 3e-4, 3e-5, 120, 12
    reference = _reference(
        lambda opt: transformers.get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, max_steps, min_lr=floor),
        max_steps + 1,
        lr=peak,
    )
    phases = _warmup(warmup) + _decay(max_steps - warmup, "cosine", floor / peak)
    _assert_close(_ours(phases, max_steps), reference)


def test_cosine_after_the_end_stays_at_the_floor():
    """transformers' cosine rises again after T (cos beyond pi); ours stays at end."""
    max_steps, warmup = 100, 10
    reference = _reference(
        lambda opt: transformers.get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, max_steps, min_lr_rate=0.1),
        max_steps + 20,
    )
    ours = _ours(_warmup(warmup) + _decay(max_steps - warmup, "cosine", 0.1), max_steps, max_steps + 20)
    _assert_close(ours[: max_steps + 1], reference[: max_steps + 1])
    assert reference[max_steps + 19] > 0.1 + 1e-3
    assert ours[max_steps:] == [0.1] * 20


@pytest.mark.parametrize("max_steps,warmup", COMBOS)
def test_linear(max_steps, warmup):
    reference = _reference(
        lambda opt: transformers.get_linear_schedule_with_warmup(opt, warmup, max_steps), max_steps + 3
    )
    phases = _warmup(warmup) + _decay(max_steps - warmup, "linear", 0.0)
    ours = _ours(phases, max_steps, max_steps + 3)
    if warmup < max_steps:
        _assert_close(ours, reference)  # decay-to-zero: both 0 from T on
    else:
        # no decay phase: transformers drops to 0 after the run, ours holds the warmup's end
        _assert_close(ours[:max_steps], reference[:max_steps])
        assert reference[max_steps:] == [0.0] * 3
        assert ours[max_steps:] == [1.0] * 3


@pytest.mark.parametrize("max_steps,warmup", COMBOS)
def test_constant_with_warmup(max_steps, warmup):
    reference = _reference(lambda opt: transformers.get_constant_schedule_with_warmup(opt, warmup), max_steps + 3)
    phases = _warmup(warmup) + (
        [{"name": "constant", "shape": "constant", "start": 1.0}] if warmup < max_steps else []
    )
    _assert_close(_ours(phases, max_steps, max_steps + 3), reference)


@pytest.mark.parametrize("max_steps,warmup", [c for c in COMBOS if c[1] < c[0]])
@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("peak,lr_end", [(1.0, 1e-7), (1.0, 0.0), (5e-4, 5e-5)])
def test_polynomial(max_steps, warmup, power, peak, lr_end):
    # transformers divides by zero at step T when warmup == T, so those combos are left out
    reference = _reference(
        lambda opt: transformers.get_polynomial_decay_schedule_with_warmup(
            opt, warmup, max_steps, lr_end=lr_end, power=power
        ),
        max_steps + 3,
        lr=peak,
    )
    phases = _warmup(warmup) + _decay(max_steps - warmup, "polynomial", lr_end / peak, power=power)
    _assert_close(_ours(phases, max_steps, max_steps + 3), reference)  # both hold lr_end after T


@pytest.mark.parametrize("warmup", [0, 1, 10, 100])
@pytest.mark.parametrize("timescale", [None, 7, 500])
def test_inverse_sqrt(warmup, timescale):
    """transformers' timescale defaults to num_warmup_steps (10_000 without warmup); ours to 1, so it is set."""
    max_steps = 300
    reference = _reference(
        lambda opt: transformers.get_inverse_sqrt_schedule(opt, warmup, timescale=timescale), max_steps + 3
    )
    ours_timescale = timescale if timescale is not None else (warmup or 10_000)
    phases = _warmup(warmup) + _decay(max_steps - warmup, "inverse_sqrt", 0.0, timescale=ours_timescale)
    ours = _ours(phases, max_steps, max_steps + 3)
    # equal through step T (our value after the end is the formula at k = steps) ...
    _assert_close(ours[: max_steps + 1], reference[: max_steps + 1])
    # ... then transformers keeps decaying and ours holds
    assert reference[max_steps + 2] < reference[max_steps]
    assert ours[max_steps:] == [ours[max_steps]] * 3


def test_inverse_sqrt_default_timescale_is_warmup():
    """With transformers' default (timescale = W) the decay is sqrt(W / step), the classic rsqrt."""
    warmup, max_steps = 16, 200
    laid = layout(_warmup(warmup) + _decay(max_steps - warmup, "inverse_sqrt", 0.0, timescale=warmup), max_steps)
    for step in (16, 17, 64, 199):
        assert multiplier(step, laid) == pytest.approx(math.sqrt(warmup / step), rel=1e-15)


WSD_LENGTHS = [(10, 50, 40), (0, 30, 20), (5, 0, 15), (1, 1, 1), (7, 13, 1), (25, 0, 25)]
# transformers' WSD warmup shapes, as phases from min_lr_ratio to 1
WSD_WARMUPS = {
    "linear": {"shape": "linear"},
    "cosine": {"shape": "cosine"},
    "1-sqrt": {"shape": "polynomial", "power": 0.5},  # 1 - sqrt(1 - p), not our 1-sqrt shape
}


@pytest.mark.parametrize("warmup,stable,decay", WSD_LENGTHS)
@pytest.mark.parametrize("warmup_type", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("decay_type", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
@pytest.mark.parametrize("by_stable_steps", [False, True])
def test_wsd(warmup, stable, decay, warmup_type, decay_type, min_ratio, by_stable_steps):
    max_steps = warmup + stable + decay
    if by_stable_steps:
        length = {"num_stable_steps": stable}
    else:
        length = {"num_training_steps": max_steps}
    reference = _reference(
        lambda opt: transformers.get_wsd_schedule(
            opt,
            warmup,
            decay,
            warmup_type=warmup_type,
            decay_type=decay_type,
            min_lr_ratio=min_ratio,
            **length,
        ),
        max_steps + 3,
    )
    phases = []
    if warmup:
        phases.append({"name": "warmup", "start": min_ratio, "end": 1.0, "steps": warmup, **WSD_WARMUPS[warmup_type]})
    if stable:
        phases.append({"name": "stable", "shape": "constant", "start": 1.0, "steps": stable})
    phases.append({"name": "cooldown", "shape": decay_type, "start": 1.0, "end": min_ratio, "steps": decay})
    _assert_close(_ours(phases, max_steps, max_steps + 3), reference)  # both hold min_lr_ratio after the end


@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
def test_wsd_1_sqrt_warmup_is_not_our_1_sqrt_shape(min_ratio):
    """transformers' "1-sqrt" warmup is 1 - sqrt(1 - p); our 1-sqrt from m to 1 is m + (1 - m) * sqrt(p)."""
    warmup, decay = 20, 10
    reference = _reference(
        lambda opt: transformers.get_wsd_schedule(
            opt, warmup, decay, num_stable_steps=0, warmup_type="1-sqrt", min_lr_ratio=min_ratio
        ),
        warmup,
    )
    laid = layout([{"shape": "1-sqrt", "start": min_ratio, "end": 1.0, "steps": warmup}], warmup)
    ours = values(laid, warmup)
    assert ours[0] == reference[0] == min_ratio
    assert ours[5] == pytest.approx(min_ratio + (1 - min_ratio) * math.sqrt(5 / 20))
    assert reference[5] == pytest.approx(min_ratio + (1 - min_ratio) * (1 - math.sqrt(1 - 5 / 20)))
    assert all(a > b for a, b in zip(ours[1:], reference[1:]))


@pytest.mark.parametrize(
    "max_steps,warmup,cycles", [(100, 0, 4), (110, 10, 5), (300, 0, 3), (249, 17, 8), (1000, 100, 9), (60, 0, 1)]
)
def test_cosine_with_hard_restarts(max_steps, warmup, cycles):
    reference = _reference(
        lambda opt: transformers.get_cosine_with_hard_restarts_schedule_with_warmup(opt, warmup, max_steps, cycles),
        max_steps + 3,
    )
    period = (max_steps - warmup) // cycles
    assert period * cycles == max_steps - warmup
    phases = _warmup(warmup) + _decay(max_steps - warmup, "cosine_restarts", 0.0, period=period, period_mult=1)
    # equal through T and after it: the run ends with a finished cycle, at 0 (transformers: progress >= 1 is 0)
    _assert_close(_ours(phases, max_steps, max_steps + 3), reference)


def test_cosine_with_hard_restarts_float_noise_at_restarts():
    """transformers computes (c * k / n) % 1.0 in floats: with 22 cycles of 4 steps, some restart
    steps come out as 0.999... of a cycle (LR about 0) instead of 0 (LR at the peak). Ours counts
    T_cur in integers and restarts exactly."""
    warmup, cycles, period = 10, 22, 4
    max_steps = warmup + cycles * period
    reference = _reference(
        lambda opt: transformers.get_cosine_with_hard_restarts_schedule_with_warmup(opt, warmup, max_steps, cycles),
        max_steps,
    )
    ours = _ours(_warmup(warmup) + _decay(cycles * period, "cosine_restarts", 0.0, period=period), max_steps, max_steps)
    restarts = range(warmup, max_steps, period)
    noisy = [s for s in restarts if reference[s] < 0.5]
    assert noisy, "expected transformers to miss some restarts at this size"
    for s in restarts:
        assert ours[s] == 1.0
    for s in noisy:
        assert reference[s] < 1e-12
    others = [s for s in range(max_steps) if s not in noisy]
    _assert_close([ours[s] for s in others], [reference[s] for s in others])


@pytest.mark.parametrize(
    "max_steps,warmup,warmup_lr_rate",
    [(t, w, r) for t, w in [(10, 1), (10, 3), (50, 1), (100, 10), (257, 19), (12, 11)] for r in (None, 0.05)
     if not (w == 1 and r is not None)],
)
def test_cosine_with_min_lr_rate_one_step_ahead(max_steps, warmup, warmup_lr_rate):
    """get_cosine_with_min_lr_schedule_with_warmup_lr_rate runs one step ahead: laid out over
    T - 1 steps (warmup W - 1, decay T - W), ours matches it at every update 0..T-1, the
    last being our value after the end (the floor). Not with warmup = 1 and a warmup_lr_rate:
    its one warmup step is at warmup_lr_rate and the decay starts one step in, so the peak is
    never reached."""
    min_ratio = 0.1
    reference = _reference(
        lambda opt: transformers.get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
            opt, warmup, max_steps, min_lr_rate=min_ratio, warmup_lr_rate=warmup_lr_rate
        ),
        max_steps,
    )
    start = 1.0 / warmup if warmup_lr_rate is None else warmup_lr_rate
    phases = _warmup(warmup - 1, start=start) + _decay(max_steps - warmup, "cosine", min_ratio)
    ours = _ours(phases, max_steps - 1, max_steps)
    _assert_close(ours, reference)
    assert ours[-1] == min_ratio


# --- torch ------------------------------------------------------------------------


@pytest.mark.parametrize("half_cycle", [1, 3, 10])
@pytest.mark.parametrize("low,high", [(0.0, 1.0), (0.1, 1.0), (0.2, 0.6)])
@pytest.mark.parametrize("peak", [1.0, 2e-3])
def test_cyclic_triangular(half_cycle, low, high, peak):
    max_steps = 5 * 2 * half_cycle + 3  # ends mid-cycle
    reference = _reference(
        lambda opt: torch.optim.lr_scheduler.CyclicLR(
            opt,
            base_lr=low * peak,
            max_lr=high * peak,
            step_size_up=half_cycle,
            mode="triangular",
            cycle_momentum=False,
        ),
        max_steps + 3,
        lr=peak,
    )
    phases = [{"name": "cyclic", "shape": "cyclic", "start": high, "end": low, "half_cycle": half_cycle}]
    ours = _ours(phases, max_steps, max_steps + 3)
    # equal through step T (the triangle is continuous: our value after the end is the formula at T) ...
    _assert_close(ours[: max_steps + 1], reference[: max_steps + 1])
    assert ours[0] == low  # starts at the low point
    # ... then torch keeps cycling and ours holds
    assert ours[max_steps:] == [ours[max_steps]] * 3
    assert reference[max_steps + 1] != pytest.approx(reference[max_steps])


@pytest.mark.parametrize("period,period_mult", [(5, 1), (10, 1), (1, 2), (3, 2), (5, 2), (2, 3)])
@pytest.mark.parametrize("eta_min_ratio", [0.0, 0.05])
@pytest.mark.parametrize("peak", [1.0, 3e-4])
def test_cosine_annealing_warm_restarts(period, period_mult, eta_min_ratio, peak):
    max_steps = 400  # T_mult 2 from 3: cycles up to 192 steps, the last one unfinished
    reference = _reference(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            opt, T_0=period, T_mult=period_mult, eta_min=eta_min_ratio * peak
        ),
        max_steps,
        lr=peak,
    )
    phases = [
        {"name": "sgdr", "shape": "cosine_restarts", "start": 1.0, "end": eta_min_ratio, "period": period,
         "period_mult": period_mult}
    ]
    _assert_close(_ours(phases, max_steps, max_steps), reference)


@pytest.mark.parametrize("max_steps,at_boundary", [(30, True), (33, False)])
def test_cosine_restarts_after_the_end(max_steps, at_boundary):
    """torch restarts forever. Ours holds: the cycle's bottom (end) when the run ends with a
    finished cycle (where torch restarts at the peak), else the formula at k = steps (= torch)."""
    period, end = 10, 0.05
    reference = _reference(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=period, eta_min=end), max_steps + 2
    )
    phases = [{"shape": "cosine_restarts", "start": 1.0, "end": end, "period": period}]
    ours = _ours(phases, max_steps, max_steps + 2)
    _assert_close(ours[:max_steps], reference[:max_steps])
    if at_boundary:
        assert reference[max_steps] == 1.0
        assert ours[max_steps:] == [end, end]
    else:
        assert math.isclose(ours[max_steps], reference[max_steps], rel_tol=REL)
        assert ours[max_steps + 1] == ours[max_steps] != reference[max_steps + 1]


@pytest.mark.parametrize("gamma,steps", [(0.97, 100), (0.5, 20), (0.999, 300)])
def test_exponential_matches_exponential_lr(gamma, steps):
    """torch's ExponentialLR multiplies by gamma each step: our exponential from 1 to gamma ** steps."""
    reference = _reference(lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma), steps + 1)
    ours = _ours([{"shape": "exponential", "start": 1.0, "end": gamma**steps}], steps)
    _assert_close(ours, reference)


# --- LambdaLR ---------------------------------------------------------------------


def test_phase_lambda_drives_lambdalr_like_transformers():
    max_steps, warmup = 40, 5
    laid = layout(_warmup(warmup) + _decay(max_steps - warmup, "cosine", 0.1), max_steps)
    fn = phase_lambda(laid)
    assert [fn(s) for s in range(max_steps + 1)] == [multiplier(s, laid) for s in range(max_steps + 1)]
    ours = _reference(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, fn), max_steps + 1)
    reference = _reference(
        lambda opt: transformers.get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, max_steps, min_lr_rate=0.1),
        max_steps + 1,
    )
    _assert_close(ours, reference)
    # the LR update s uses is peak * multiplier(s)
    peak = 2e-4
    at_peak = _reference(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, fn), max_steps, lr=peak)
    _assert_close([lr * peak for lr in at_peak], [peak * multiplier(s, laid) for s in range(max_steps)])


def test_phase_lambda_survives_lambdalr_state_dict():
    laid = layout(_warmup(3) + _decay(7, "linear", 0.0), 10)
    fn = phase_lambda(laid)
    assert pickle.loads(pickle.dumps(fn))(4) == fn(4)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    state = pickle.loads(pickle.dumps(scheduler.state_dict()))
    resumed = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([param], lr=1.0), phase_lambda(laid))
    resumed.load_state_dict(state)
    assert resumed.last_epoch == 4
    assert resumed.get_last_lr() == scheduler.get_last_lr() == [multiplier(4, laid)]
