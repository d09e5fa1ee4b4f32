"""Ludwig's LR schedules, imported: the recipe's LR at every step against Ludwig's scheduler.

Ludwig 0.17.8 (ludwig/modules/lr_scheduler.py) builds its schedule from torch's schedulers: a
LambdaLR warmup of step / W over W = warmup_fraction x the run's micro-batches, then the decay (a
LambdaLR of its decay function, or CosineAnnealingWarmRestarts for `cosine`), the two joined by a
SequentialLR at W; the trainer steps it after every micro-batch. The oracle below builds the same
torch schedulers with the same decay formulas and steps them as the trainer does (one micro-batch a
step here, gradient_accumulation_steps 1). Where the import marks no schedule key approximate, the
recipe's LR equals Ludwig's at every step within 1e-9 relative; where it does, the test says by how
much they differ and why.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from recipec.compiler import plan_recipe
from recipec.importers import Options, import_config
from recipec.runtime import schedule as runtime

from conftest import scheduler_lrs

torch = pytest.importorskip("torch")

LR = 1e-3
SCHEDULER = "trainer.learning_rate_scheduler"


def _ludwig_lrs(scheduler: dict, total: int) -> list[float]:
    """The LR of each of `total` micro-batches, as Ludwig's trainer steps its scheduler."""
    from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LambdaLR, SequentialLR

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    warmup = scheduler.get("warmup_fraction", 0.0) * total  # a float, as Ludwig's StepInfo keeps it
    decay = scheduler.get("decay")
    parts = []
    if warmup > 0:
        parts.append(LambdaLR(opt, lambda step: float(step) / float(max(1, warmup))))
    if decay is None:
        parts.append(LambdaLR(opt, lambda step: 1.0))
    elif decay == "linear":
        parts.append(LambdaLR(opt, lambda step: max(0.0, float(total - warmup - step) / float(max(1, total - warmup)))))
    elif decay == "polynomial":
        power, end = scheduler.get("polynomial_power", 1.0), scheduler.get("polynomial_end_lr", 0.0)

        def polynomial(step: int) -> float:
            if total <= warmup:
                return 1.0
            progress = min(float(step - warmup) / float(max(1, total - warmup)), 1.0)  # the step counted from 0 at W
            return (1.0 - end) * (1.0 - progress) ** power + end

        parts.append(LambdaLR(opt, polynomial))
    elif decay == "cosine":
        parts.append(
            CosineAnnealingWarmRestarts(
                opt, T_0=scheduler["t_0"], T_mult=scheduler.get("t_mult") or 1, eta_min=scheduler.get("eta_min") or 0
            )
        )
    else:
        raise ValueError(decay)
    sched = parts[0] if len(parts) == 1 else SequentialLR(opt, parts, milestones=[warmup])
    return scheduler_lrs(opt, sched, total)


def _recipe_lrs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheduler: dict, total: int) -> tuple[list[float], set[str]]:
    """The imported recipe's LR at each step, and the schedule keys the import marks approximate."""
    monkeypatch.chdir(tmp_path)
    config = {
        "model_type": "llm",
        "base_model": "org/model",
        "input_features": [{"name": "instruction", "type": "text"}],
        "output_features": [{"name": "output", "type": "text"}],
        "trainer": {"type": "finetune", "learning_rate": LR, "batch_size": 4, "train_steps": total, "learning_rate_scheduler": scheduler},
    }
    path = tmp_path / "ludwig.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = import_config(path, "ludwig", Options(name="ludwig", data="org/data"))
    recipe = tmp_path / "ludwig.toml"
    recipe.write_text(result.text, encoding="utf-8")
    plan, _ = plan_recipe(recipe, ())
    approx = {k for k, e in result.draft.ledger.items() if e.how == "approx" and k.startswith(SCHEDULER)}
    return [LR * m for m in runtime.values(plan["schedule_phases"], total)], approx


EXACT = {
    "constant": {},
    "constant-warmup": {"warmup_fraction": 0.1},
    "linear": {"decay": "linear"},
    "linear-warmup": {"decay": "linear", "warmup_fraction": 0.1},
    "linear-warmup-0.05": {"decay": "linear", "warmup_fraction": 0.05},
    "polynomial": {"decay": "polynomial", "polynomial_power": 2.0},
    "polynomial-end": {"decay": "polynomial", "polynomial_power": 0.5, "polynomial_end_lr": 1e-4},
    "cosine-restarts": {"decay": "cosine", "t_0": 50},
    "cosine-restarts-warmup": {"decay": "cosine", "t_0": 50, "warmup_fraction": 0.1},
    "cosine-restarts-mult-eta": {"decay": "cosine", "t_0": 30, "t_mult": 2, "eta_min": 1e-5},
}
"""Schedules whose import is exact at 200 micro-batches (every warmup a whole number of them)."""


@pytest.mark.parametrize("case", sorted(EXACT))
def test_lr_at_every_step_equals_ludwigs(tmp_path, monkeypatch, case):
    ours, approx = _recipe_lrs(tmp_path, monkeypatch, EXACT[case], 200)
    ref = _ludwig_lrs(EXACT[case], 200)
    assert approx == set()
    for step, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15), f"step {step}: recipe {a!r}, Ludwig {b!r}"


@pytest.mark.parametrize("case", ["constant-warmup", "linear-warmup", "cosine-restarts-warmup"])
def test_a_warmup_of_a_fraction_of_a_step_is_approximate_by_less_than_a_step(tmp_path, monkeypatch, case):
    """997 x 0.1 = 99.7 micro-batches: Ludwig ramps by 1/99.7 a step, the recipe over 100 whole steps; the LR differs
    by at most one step of Ludwig's ramp, and the import says why."""
    ours, approx = _recipe_lrs(tmp_path, monkeypatch, EXACT[case], 997)
    ref = _ludwig_lrs(EXACT[case], 997)
    assert approx == {f"{SCHEDULER}.warmup_fraction"}
    diff = max(abs(a - b) for a, b in zip(ours, ref, strict=True))
    assert 0 < diff <= LR / 99.7


def test_ludwigs_polynomial_decay_after_a_warmup_is_above_the_peak_and_the_import_says_so(tmp_path, monkeypatch):
    """Ludwig's polynomial decay subtracts the warmup from a step count that its SequentialLR restarted at the
    warmup's end, so its first step after a warmup of 20 of 200 micro-batches runs at (200 / 180)^2 = 1.23 x the
    peak: the recipe (the peak, decaying to the end LR by the run's end) cannot follow, and the import marks it."""
    scheduler = {"decay": "polynomial", "polynomial_power": 2.0, "warmup_fraction": 0.1}
    ours, approx = _recipe_lrs(tmp_path, monkeypatch, scheduler, 200)
    ref = _ludwig_lrs(scheduler, 200)
    assert ref[20] == pytest.approx(LR * (200 / 180) ** 2) and ours[20] == pytest.approx(LR)
    assert ours[:20] == pytest.approx(ref[:20], rel=1e-9)  # the warmup is the same
    assert approx == {f"{SCHEDULER}.decay"}


def test_the_oracle_sees_a_wrong_decay(tmp_path, monkeypatch):
    """The comparison fails when the recipe's decay is not Ludwig's (linear where Ludwig is constant)."""
    ours, _ = _recipe_lrs(tmp_path, monkeypatch, EXACT["linear"], 200)
    ref = _ludwig_lrs(EXACT["constant"], 200)
    assert max(abs(a - b) for a, b in zip(ours, ref, strict=True)) > LR / 2
