"""A run's final and best losses from its metrics.jsonl: what run.json records and `recipec runs` shows."""

import json
import math
import subprocess
import sys

from recipec.runs import list_runs
from recipec.runtime.summary import final_and_best

# as the generated script logs them: an evaluation at step 0, training lines, evaluations, the final evaluation
METRICS = [
    {"step": 0, "eval_loss": 9.0, "eval_loss_parent": 3.0, "tokens": 0},
    {"step": 2, "loss": 8.0, "lr": 1e-3, "tokens": 2000},
    {"step": 4, "loss": 6.5, "lr": 1e-3, "tokens": 4000},
    {"step": 4, "eval_loss": 7.0, "eval_loss_parent": 3.5, "tokens": 4000},
    {"step": 6, "loss": 6.75, "lr": 5e-4, "tokens": 6000},
    {"step": 6, "eval_loss": 7.25, "eval_loss_parent": 3.25, "tokens": 6000},
]


def test_final_and_best_of_a_run():
    result = final_and_best(METRICS, eval_keys=["eval_loss", "eval_loss_parent"])
    assert result["final"] == {
        "loss": 6.75,
        "first_eval_loss": 9.0,
        "first_eval_loss_parent": 3.0,
        "eval_loss": 7.25,
        "eval_loss_parent": 3.25,
    }
    assert list(result["final"]) == ["loss", "first_eval_loss", "first_eval_loss_parent", "eval_loss", "eval_loss_parent"]
    assert result["best"] == {
        "loss": 6.5,
        "loss_step": 4,
        "eval_loss": 7.0,
        "eval_loss_step": 4,
        "eval_loss_parent": 3.0,
        "eval_loss_parent_step": 0,
    }


def test_the_held_out_losses_are_found_in_the_lines_when_not_given():
    assert final_and_best(METRICS) == final_and_best(METRICS, eval_keys=["eval_loss", "eval_loss_parent"])


def test_a_run_without_evaluation_has_its_training_loss_only():
    result = final_and_best([m for m in METRICS if "loss" in m], eval_keys=[])
    assert result == {"final": {"loss": 6.75}, "best": {"loss": 6.5, "loss_step": 4}}


def test_a_run_without_lines_or_with_null_values():
    assert final_and_best([]) == {"final": {"loss": None}, "best": {}}
    lines = [{"step": 1, "loss": None}, {"step": 2, "loss": 5.0}, {"step": 3, "loss": None}, {"step": 3, "eval_loss": None}]
    assert final_and_best(lines) == {"final": {"loss": 5.0}, "best": {"loss": 5.0, "loss_step": 2}}


def test_a_diverged_run_keeps_its_nan():
    result = final_and_best([{"step": 1, "loss": 4.0}, {"step": 2, "loss": math.nan}])
    assert math.isnan(result["final"]["loss"]) and result["best"]["loss"] == 4.0


def test_recipec_runs_shows_a_running_run_as_the_script_would_record_it(tmp_path):
    """Without final and best in run.json (a run still going), `recipec runs` computes them with the same function."""
    run = tmp_path / "live"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in METRICS))
    (run / "run.json").write_text(json.dumps({"name": "live", "status": "running"}))
    (row,), warnings = list_runs(tmp_path)
    expected = final_and_best(METRICS)
    assert warnings == []
    assert row["final_loss"] == expected["final"]["loss"] == 6.75
    assert row["final_eval_loss"] == expected["final"]["eval_loss"] == 7.25
    assert row["best_eval_loss"] == expected["best"]["eval_loss"] == 7.0


def test_the_module_needs_nothing_but_the_standard_library():
    code = "import sys; from recipec.runtime import summary; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
