"""recipec_runtime.trackers: the config the trackers get, their local setup and ids."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from recipec.runtime import trackers


def test_flat_config_is_the_resolved_recipe_with_dotted_keys_in_recipe_order() -> None:
    text = """
[recipe]
name = "tiny"
seed = 7

[optim]
lr = 0.001
betas = [0.9, 0.95]

[model.config]
hidden_size = 64

[[data.sources]]
builtin = "python-docs"
weight = 0.5
"""
    flat = trackers.flat_config(text)
    assert list(flat) == ["recipe.name", "recipe.seed", "optim.lr", "optim.betas", "model.config.hidden_size", "data.sources"]
    assert flat["optim.lr"] == 0.001 and flat["recipe.seed"] == 7 and flat["model.config.hidden_size"] == 64
    # arrays become JSON text (tensorboard and mlflow take scalars only) that reads back
    assert json.loads(flat["optim.betas"]) == [0.9, 0.95]
    assert json.loads(flat["data.sources"]) == [{"builtin": "python-docs", "weight": 0.5}]
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())


def test_flat_config_of_a_real_resolved_recipe(tmp_path: Path) -> None:
    from recipec.compiler import build

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.toml"
    written, _ = build(recipe, ["output.trackers=['tensorboard']"], tmp_path / "b", project=recipe.parent.parent)
    text = (written.dir / "resolved.toml").read_text()
    flat = trackers.flat_config(text)
    resolved = tomllib.loads(text)
    assert flat["optim.lr"] == resolved["optim"]["lr"]
    assert flat["output.trackers"] == '["tensorboard"]'
    assert flat["recipe.name"] == "quickstart"


def test_dates_become_text() -> None:
    assert trackers.flat_config("[recipe]\nwhen = 2026-01-02\n") == {"recipe.when": "2026-01-02"}


def test_missing_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(
        trackers.importlib.util, "find_spec", lambda name: None if name in ("wandb", "aim") else real(name)
    )
    assert trackers.missing(["tensorboard", "wandb", "mlflow", "aim"]) == [
        "wandb (pip install wandb)",
        "aim (pip install 'aim<4')",
    ]
    assert trackers.missing([]) == []


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A copy of the environment without tracker variables, in place of os.environ.

    setup_environment sets variables that did not exist; on the real os.environ they would
    outlive the test (monkeypatch restores only what it changed) and send the trackers of
    later runs in this session to a deleted directory.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    monkeypatch.setattr(trackers.os, "environ", env)
    return env


def test_setup_environment_is_local_and_offline_and_the_user_env_wins(tmp_path: Path, environ: dict) -> None:
    root = trackers.setup_environment(["wandb", "mlflow"], tmp_path / "run")
    assert root == tmp_path / "run" / "trackers"
    assert environ["WANDB_MODE"] == "offline"
    assert environ["WANDB_DIR"] == str(root)
    assert environ["WANDB_ERROR_REPORTING"] == "false"
    assert environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{root.resolve() / 'mlflow.db'}"
    environ.update(WANDB_MODE="online", MLFLOW_TRACKING_URI="http://mine:5000")
    trackers.setup_environment(["wandb", "mlflow"], tmp_path / "run")
    assert environ["WANDB_MODE"] == "online" and environ["MLFLOW_TRACKING_URI"] == "http://mine:5000"


def test_setup_environment_leaves_trackers_not_asked_for_alone(tmp_path: Path, environ: dict) -> None:
    trackers.setup_environment(["tensorboard"], tmp_path)
    assert not any(k.startswith(("WANDB_", "MLFLOW_")) for k in environ)
    assert not any(k.startswith(("WANDB_", "MLFLOW_")) and "trackers" in v for k, v in os.environ.items())


def test_init_kwargs_resume_the_runs_of_earlier_attempts(tmp_path: Path) -> None:
    first = trackers.init_kwargs(["tensorboard", "wandb", "mlflow", "aim"], tmp_path, "tiny", {"wandb": "abc"})
    assert first == {
        "wandb": {"dir": str(tmp_path), "name": "tiny", "id": "abc", "resume": "allow"},
        "mlflow": {"logging_dir": str(tmp_path / "mlartifacts"), "run_name": "tiny"},
        "aim": {"system_tracking_interval": None, "log_system_params": False, "capture_terminal_logs": False},
    }
    again = trackers.init_kwargs(["mlflow", "aim"], tmp_path, "tiny", {"wandb": "abc", "mlflow": "r1", "aim": "h1"})
    assert again == {
        "mlflow": {"logging_dir": str(tmp_path / "mlartifacts"), "run_name": "tiny", "run_id": "r1"},
        "aim": {
            "system_tracking_interval": None,
            "log_system_params": False,
            "capture_terminal_logs": False,
            "run_hash": "h1",
        },
    }


def test_run_id_is_stable_per_run_and_differs_between_runs(tmp_path: Path) -> None:
    a = trackers.run_id(tmp_path / "a", "2026-01-01T00:00:00+00:00")
    assert a == trackers.run_id(tmp_path / "a", "2026-01-01T00:00:00+00:00")
    assert a != trackers.run_id(tmp_path / "b", "2026-01-01T00:00:00+00:00")
    assert a != trackers.run_id(tmp_path / "a", "2026-01-02T00:00:00+00:00")
    assert len(a) == 16 and a.isalnum() and a.islower()


def test_metrics_are_the_numbers_of_a_line_without_its_step() -> None:
    line = {"step": 4, "loss": 2.5, "lr": 1e-3, "tokens": 1024, "epoch": 0, "note": "x", "flag": True}
    assert trackers.metrics(line) == {"loss": 2.5, "lr": 1e-3, "tokens": 1024, "epoch": 0}
