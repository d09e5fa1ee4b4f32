"""`recipec predict`: a recipe's loss curve, from the curve of a run and the two schedules.

The scaling law with LR annealing (Tissue et al., 2024, "Scaling Law with Learning Rate
Annealing") describes a run's loss at step s by its LR schedule alone::

    L(s) = L0 + A * S1(s) ** -alpha - C * S2(s)

* S1, the forward area: the sum of the LRs of the first s updates;
* S2, the annealing area: the sum over those updates of a momentum of the LR's decreases,
  m_i = decay * m_{i-1} + (lr_{i-1} - lr_i) (decay 0.999 by default, the paper's).

recipec starts the momentum at the schedule's first peak: a warmup's rising LR is not an
annealing (after the peak a rise, a rewarm, counts against S2, as the law has it).

The four constants are fitted on one run (same model, batch and data) and then hold for any
schedule: the fit reads the run's metrics.jsonl and the LR of every update from its
schedule.csv, and the prediction lays out the recipe's own schedule. L is linear in L0, A and
C for a fixed alpha, so the fit solves least squares for those three on a grid of alphas and
refines the best by golden-section search: no optimizer to tune and the same answer every
time. numpy only; the compiler's commands never import torch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from . import report
from .cli import _set_option
from .diagnostics import RecipeError, visible_text

DECAY = 0.999
"""The momentum's decay factor (lambda in the paper, which finds 0.999 to fit best)."""

MIN_POINTS = 5
"""The fewest logged losses after the warmup a fit takes: four constants and one to spare."""

ALPHAS = np.linspace(0.01, 2.0, 200)
"""The grid the exponent is first chosen on; golden-section search then refines the best."""


class PredictError(Exception):
    """A run cannot be fitted (files missing, too few points); the message says which and why."""


@dataclass(frozen=True)
class Fit:
    """The law's constants fitted on a run, with how well they describe it."""

    L0: float
    A: float
    alpha: float
    C: float
    decay: float
    metric: str
    points: int
    rmse: float
    r2: float
    annealed: bool
    """Whether the fitted run's LR decreased after its peak; without it C is not fitted (0)."""

    def loss(self, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
        return self.L0 + self.A * np.power(s1, -self.alpha) - self.C * s2


def first_peak(lrs: Sequence[float]) -> int:
    """The index of the update where the LR first stops rising: the end of the warmup (0 without one).

    Not the largest LR: a later rewarm to a higher peak is part of the schedule the law follows."""
    for i in range(len(lrs) - 1):
        if lrs[i + 1] <= lrs[i]:
            return i
    return max(len(lrs) - 1, 0)


def areas(lrs: Sequence[float], decay: float = DECAY) -> tuple[np.ndarray, np.ndarray]:
    """S1 and S2 after each update: element k holds the areas of updates 1..k+1.

    ``lrs[k]`` is the LR of update k + 1 (schedule.csv's step k).
    """
    lr = np.asarray(lrs, dtype=np.float64)
    s1 = np.cumsum(lr)
    peak = first_peak(lrs)
    m = 0.0
    s2 = np.zeros_like(lr)
    total = 0.0
    for i in range(len(lr)):
        if i > peak:
            m = decay * m + (lr[i - 1] - lr[i])
            total += m
        s2[i] = total
    return s1, s2


def read_schedule(path: Path) -> list[float]:
    """The LR of every update from a run's schedule.csv (`step,lr`, step 0 the first update)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PredictError(f"{path.parent}: no schedule.csv (the script writes it into the run directory before the first step)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PredictError(f"{path}: cannot read: {exc}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != ["step", "lr"]:
        raise PredictError(f"{path}:1: expected the header `step,lr`")
    lrs = []
    for number, row in enumerate(rows[1:], start=2):
        try:
            step, lr = int(row[0]), float(row[1])
        except (ValueError, IndexError):
            raise PredictError(f"{path}:{number}: expected `step,lr`, got {','.join(row)!r}") from None
        if step != len(lrs) or not math.isfinite(lr) or lr < 0:
            raise PredictError(f"{path}:{number}: expected step {len(lrs)} with a finite LR >= 0, got {','.join(row)!r}")
        lrs.append(lr)
    if not lrs:
        raise PredictError(f"{path}: no steps")
    return lrs


def points(metrics: Sequence[dict[str, Any]], metric: str, lrs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, losses) of ``metric`` logged after the schedule's first peak, within the schedule.

    A resumed run may log a step twice (its metrics.jsonl is cut back to the checkpoint, but a
    copy may hold both): the last line of a step wins.
    """
    peak = first_peak(lrs) + 1  # logged steps count updates: step s follows update s
    by_step: dict[int, float] = {}
    for m in metrics:
        value = m.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            if peak <= m["step"] <= len(lrs):
                by_step[m["step"]] = float(value)
    steps = np.array(sorted(by_step), dtype=np.int64)
    return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


def _solve(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    r = y - x @ coef
    return coef, float(r @ r)


Curve = tuple[np.ndarray, np.ndarray, Sequence[float]]
"""One run's (logged steps, losses at them, the LR of every update)."""


def fit(curves: Sequence[Curve], *, decay: float = DECAY, metric: str = "loss") -> Fit:
    """Fit L0, A, alpha and C to the losses of one or more runs of one model, each with its own schedule.

    C, the annealing's gain, is kept >= 0: where the free least squares would make annealing
    raise the loss (a noisy curve that anneals little), the fit drops the term (C = 0).
    """
    n = sum(len(c[0]) for c in curves)
    if n < MIN_POINTS:
        raise PredictError(
            f"{n} logged `{metric}` value(s) after the LR's peak: the fit needs at least {MIN_POINTS} "
            "(log more often, train.log_every, or evaluate more often for eval_loss)"
        )
    x1s, x2s = [], []
    for steps, _, lrs in curves:
        s1, s2 = areas(lrs, decay)
        x1s.append(s1[steps - 1])
        x2s.append(s2[steps - 1])
    x1, x2 = np.concatenate(x1s), np.concatenate(x2s)
    losses = np.concatenate([c[1] for c in curves])
    if np.any(x1 <= 0):
        raise PredictError("the LR is 0 before a logged point: the forward area S1 must be positive")
    annealed = bool(np.any(x2 > 0))

    def solve(alpha: float) -> tuple[np.ndarray, float]:
        cols = [np.ones_like(x1), np.power(x1, -alpha)]
        if annealed:
            coef, residual = _solve(np.stack([*cols, -x2], axis=1), losses)
            if coef[2] >= 0:
                return coef, residual
        coef, residual = _solve(np.stack(cols, axis=1), losses)
        return np.append(coef, 0.0), residual

    def sse(alpha: float) -> float:
        return solve(alpha)[1]

    errors = [sse(a) for a in ALPHAS]
    best = int(np.argmin(errors))
    lo, hi = ALPHAS[max(best - 1, 0)], ALPHAS[min(best + 1, len(ALPHAS) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = sse(a), sse(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = sse(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = sse(b)
    alpha = (lo + hi) / 2
    coef, residual = solve(alpha)
    spread = float(np.sum((losses - losses.mean()) ** 2))
    return Fit(
        L0=float(coef[0]),
        A=float(coef[1]),
        alpha=float(alpha),
        C=float(coef[2]),
        decay=decay,
        metric=metric,
        points=n,
        rmse=math.sqrt(residual / n),
        r2=1.0 - residual / spread if spread > 0 else 1.0,
        annealed=annealed,
    )


def predict(f: Fit, lrs: Sequence[float]) -> np.ndarray:
    """The loss after every update of a schedule (element k: after update k + 1)."""
    s1, s2 = areas(lrs, f.decay)
    with np.errstate(divide="ignore"):
        return np.where(s1 > 0, f.loss(np.maximum(s1, 1e-300), s2), np.nan)


def _finite(x: Any) -> float | None:
    """A float for JSON, None where the law has no value (before the first update with an LR above 0)."""
    x = float(x)
    return x if math.isfinite(x) else None


def phase_ends(phases: Sequence[dict[str, Any]]) -> list[tuple[str, int]]:
    """(name, the step count at the end of each phase) of a laid-out schedule."""
    out, step = [], 0
    for p in phases:
        step += int(p["steps"])
        out.append((str(p["name"]), step))
    return out


# -- the command --------------------------------------------------------------------------

COMPARED = (("model",), ("tokenizer",), ("data", "seq_len"), ("train", "batch_size"))
"""What the law's constants belong to: a recipe that changes one of these is warned about."""


def _differences(run_dir: Path, plan: Any) -> list[str]:
    """The keys of COMPARED in which the recipe differs from the run's resolved.toml."""
    path = run_dir / "resolved.toml"
    try:
        run = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise PredictError(f"{path} cannot be read: the recipe's model, tokenizer, seq_len and batch_size are not compared with the run's") from None
    from .render import resolved_toml

    ours = tomllib.loads(resolved_toml(plan))  # as the run's was written: defaults spelt out
    out = []
    for keys in COMPARED:
        a, b = run, ours
        for k in keys:
            a = a.get(k) if isinstance(a, dict) else None
            b = b.get(k) if isinstance(b, dict) else None
        if a != b:
            out.append(".".join(keys))
    return out


@click.command(short_help="Predict a recipe's loss curve from a run's, by the scaling law with LR annealing.")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option(
    "--from",
    "run_dirs",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="A run to fit on (runs/<name>); repeat it to fit one law on runs of the same model with other schedules "
    "(a constant LR and a cosine pin the power law and the annealing down apart).",
)
@_set_option
@click.option(
    "--metric",
    type=click.Choice(["auto", "loss", "eval_loss"]),
    default="auto",
    show_default=True,
    help="The logged loss to fit: the training loss, the held-out loss, or eval_loss when the runs logged at least "
    f"{MIN_POINTS} of them after their LR's peak (else loss).",
)
@click.option("--decay", type=click.FloatRange(0, 1, max_open=True), default=DECAY, show_default=True, help="The annealing momentum's decay factor.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write `step,lr,loss` of the prediction for every step.")
@click.option("--json", "as_json", is_flag=True, help="Print the fit and the prediction as JSON.")
def predict_command(
    recipe: Path, run_dirs: tuple[Path, ...], overrides: tuple[str, ...], metric: str, decay: float, csv_path: Path | None, as_json: bool
) -> None:
    """Predict the loss of RECIPE's schedule at the end of each phase, from runs of the same model, by the
    scaling law with LR annealing (Tissue et al., 2024).

    Fits L(s) = L0 + A * S1^-alpha - C * S2 (S1: the sum of the LRs so far; S2: the momentum of
    the LR's decreases, summed) on the losses the runs logged after their LR's peak, then lays
    out RECIPE's schedule and evaluates the law along it. The constants hold for one model, batch
    and data: compare schedules (a longer cooldown, a lower floor, WSD against cosine) with the
    rest of the recipe as the runs had it.
    """
    from .compiler import plan_recipe
    from .render import lr_values
    from .runs import RunError, read_metrics

    try:
        plan, _ = plan_recipe(recipe, overrides)
    except RecipeError as exc:
        report.fail(exc)
    if plan.recipe.continual is not None:
        report.fail(
            f"{recipe}: a [continual] recipe goes on from its parent's weights, and the law's areas would have to go on "
            "from the parent's schedule: not supported",
            help="predict the parent's schedules, or fit on a run of this recipe's own",
        )
    lrs = lr_values(plan)
    if lrs is None:
        report.fail(
            f"{recipe}: the run's length depends on the data (train.epochs), so its schedule is not laid out yet",
            help="give the length in steps to predict, e.g. --set train.epochs=... replaced by --set train.max_steps=N "
            "(`recipec explain --data` prints the steps the data makes)",
        )
    runs = []
    for run_dir in run_dirs:
        try:
            runs.append((run_dir, read_metrics(run_dir / "metrics.jsonl"), read_schedule(run_dir / "schedule.csv")))
        except (RunError, PredictError) as exc:
            report.fail(str(exc))
    chosen = metric
    if metric == "auto":
        evals = sum(len(points(m, "eval_loss", run_lrs)[0]) for _, m, run_lrs in runs)
        chosen = "eval_loss" if evals >= MIN_POINTS else "loss"
    curves = [(*points(m, chosen, run_lrs), run_lrs) for _, m, run_lrs in runs]
    try:
        fitted = fit(curves, decay=decay, metric=chosen)
    except PredictError as exc:
        report.fail(f"{', '.join(d.as_posix() for d in run_dirs)}: {exc}")
    curve = predict(fitted, lrs)
    ends = phase_ends(plan["schedule_phases"])
    warnings = []
    if not fitted.annealed:
        warnings.append(
            "no run's LR decreased after its peak, so the annealing term is not fitted (C = 0): "
            "the prediction leaves out what the recipe's decays add; fit on a run that decays"
        )
    for run_dir, *_ in runs:
        try:
            differ = _differences(run_dir, plan)
        except PredictError as exc:
            warnings.append(str(exc))
            continue
        if differ:
            warnings.append(
                f"the recipe changes {', '.join(differ)} from {run_dir.as_posix()}: the law's constants belong to the run's "
                "model, batch and data, and predict only its schedules"
            )
    if fitted.alpha <= ALPHAS[0] + 1e-6 or fitted.alpha >= ALPHAS[-1] - 1e-6:
        warnings.append(
            f"alpha reached the edge of its range ({ALPHAS[0]:g} to {ALPHAS[-1]:g}): the {fitted.points} points do not pin "
            "the power law down, and the prediction is unreliable away from them; fit on a longer run, or log more "
            "points (train.log_every, train.eval_every)"
        )
    longest = max(len(run_lrs) for *_, run_lrs in runs)
    if len(lrs) > 4 * longest:
        warnings.append(f"the recipe is {len(lrs) / longest:.1f}x as long as the longest run: far from the points fitted")
    if csv_path is not None:
        lines = ["step,lr,loss"] + [f"{k + 1},{lrs[k]!r},{float(curve[k])!r}" for k in range(len(lrs))]
        try:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        except OSError as exc:
            report.fail(f"{csv_path}: cannot write: {exc.strerror or exc}", report.EXIT_FAILED)
    # each run's last point beside what the law gives there: the fit seen where it matters most
    lasts = []
    for (run_dir, _, run_lrs), (steps, losses, _) in zip(runs, curves):
        if len(steps):
            step = int(steps[-1])
            lasts.append({"run": run_dir.as_posix(), "step": step, "logged": float(losses[-1]), "law": _finite(predict(fitted, run_lrs)[step - 1])})
    if as_json:
        click.echo(
            json.dumps(
                {
                    "runs": [d.as_posix() for d in run_dirs],
                    "fit": dataclasses.asdict(fitted),
                    "run_last": lasts,
                    "recipe": plan.name,
                    "steps": len(lrs),
                    "phases": [{"name": n, "step": s, "loss": _finite(curve[s - 1])} for n, s in ends if s > 0],
                    "final": _finite(curve[-1]),
                    "warnings": warnings,
                },
                indent=2,
            )
        )
    else:
        f = fitted
        lines = [
            f"fitted on {', '.join(d.as_posix() for d in run_dirs)}: {f.points} logged `{f.metric}` values after the LR's peak",
            f"  L(s) = L0 + A * S1^-alpha - C * S2    L0 {f.L0:.4g}  A {f.A:.4g}  alpha {f.alpha:.4g}  C {f.C:.4g}  (decay {f.decay:g})",
            f"  fit: rmse {f.rmse:.4g}, R^2 {f.r2:.4f}",
        ]
        for last in lasts:
            lines.append(f"  {last['run']} at step {last['step']}: logged {last['logged']:.4f}, the law gives {last['law']:.4f}")
        lines.append(f"predicted `{f.metric}` of {plan.name} ({len(lrs):,} steps):")
        width = max(len(n) for n, _ in ends)
        for name, step in ends:
            if step > 0:
                lines.append(f"  end of {name.ljust(width)}  step {step:>9,}  {float(curve[step - 1]):.4f}")
        click.echo(visible_text("\n".join(lines)))  # phase names are recipe text
    for w in warnings:
        report.warning(w)
