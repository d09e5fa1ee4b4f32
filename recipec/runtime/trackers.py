"""Experiment trackers: what `[output] trackers` turns on, kept on local disk.

Every tracker writes under ``<run dir>/trackers/`` and nothing leaves the machine:

- ``tensorboard``: event files in ``trackers/<recipe name>/`` (``tensorboard --logdir``);
- ``wandb``: an offline run in ``trackers/wandb/`` (``wandb sync`` uploads it later);
- ``mlflow``: a SQLite store ``trackers/mlflow.db`` with artifacts in
  ``trackers/mlartifacts/`` (``mlflow ui --backend-store-uri sqlite:///...``);
- ``aim``: a repository ``trackers/.aim`` (``aim up --repo trackers``).

Each gets the run's metrics (the lines of metrics.jsonl) and the resolved recipe as its
config, flattened to ``table.key`` names. The environment decides over these defaults
(``WANDB_MODE=online`` or ``MLFLOW_TRACKING_URI`` set by the user are left alone). A
resumed run goes on in the same tracker run where the tracker can resume one (wandb,
mlflow, aim): the ids are kept in run.json.

This module is stdlib-only: the training script imports it before accelerate does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pathlib
import shlex
import tomllib
from typing import Any

TRACKERS = ("tensorboard", "wandb", "mlflow", "aim")
"""The trackers a recipe can name, in the order they are started."""

INSTALL = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow-skinny", "aim": "aim<4"}
"""The requirement `pip install` takes for each tracker (aim 4 is another API); each imports
the module of its own name."""

SUBDIR = "trackers"
"""The trackers' directory inside the run directory."""


def missing(trackers: list[str]) -> list[str]:
    """The named trackers whose package is not installed, as "name (pip install X)" lines."""
    return [
        f"{t} (pip install {shlex.quote(INSTALL[t])})" for t in trackers if importlib.util.find_spec(t) is None
    ]


def flat_config(resolved_toml: str) -> dict[str, Any]:
    """The resolved recipe as ``{"table.key": value}`` with scalar values only.

    Nested tables give dotted names; arrays (of scalars or of tables) become their JSON
    text, because tensorboard's hparams and mlflow's params take scalars only. The
    order is the recipe's, so every tracker shows the keys as the recipe lists them.
    """
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        elif isinstance(value, list):
            flat[prefix] = json.dumps(value, default=str)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        else:  # dates and times: TOML has them, trackers do not
            flat[prefix] = str(value)

    walk("", tomllib.loads(resolved_toml))
    return flat


def setup_environment(trackers: list[str], run_dir: pathlib.Path) -> pathlib.Path:
    """Point the trackers at ``run_dir/trackers`` and keep them off the network.

    Sets defaults only (``os.environ.setdefault``): a variable the user exported wins.
    Call on every process before accelerate imports the trackers; the main process
    creates the directory before starting them.

    Returns:
        The trackers' directory.
    """
    root = run_dir / SUBDIR
    if "wandb" in trackers:
        os.environ.setdefault("WANDB_MODE", "offline")  # `wandb sync` uploads later, if wanted
        os.environ.setdefault("WANDB_DIR", str(root))
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")  # no crash reports sent home
        os.environ.setdefault("WANDB_CONSOLE", "off")  # leave stdout alone: tqdm and errors stay readable
        os.environ.setdefault("WANDB_DISABLE_GIT", "true")  # the lock already records the commit
    if "mlflow" in trackers:
        # the file store refuses to start in mlflow 3; SQLite is one local file
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root.resolve() / 'mlflow.db'}")
    return root


def run_id(run_dir: pathlib.Path, started: str) -> str:
    """A stable id for the run: the same for every attempt of it (wandb takes [a-z0-9])."""
    return hashlib.sha256(f"{run_dir.resolve()}\n{started}".encode()).hexdigest()[:16]


def init_kwargs(trackers: list[str], root: pathlib.Path, name: str, ids: dict[str, str]) -> dict[str, dict]:
    """accelerate's ``init_kwargs`` for each tracker; ``ids`` are those of an earlier attempt.

    Args:
        trackers: the recipe's tracker names.
        root: the trackers' directory.
        name: the run's name (the recipe's name).
        ids: ``{"wandb": id, "mlflow": run id, "aim": run hash}`` known so far (run.json).
    """
    kwargs: dict[str, dict] = {}
    if "wandb" in trackers:
        kwargs["wandb"] = {"dir": str(root), "name": name, "id": ids["wandb"], "resume": "allow"}
    if "mlflow" in trackers:
        kwargs["mlflow"] = {"logging_dir": str(root / "mlartifacts"), "run_name": name}
        if ids.get("mlflow"):
            kwargs["mlflow"]["run_id"] = ids["mlflow"]
    if "aim" in trackers:
        # no background thread sampling the machine, no copy of the terminal: the metrics only
        kwargs["aim"] = {"system_tracking_interval": None, "log_system_params": False, "capture_terminal_logs": False}
        if ids.get("aim"):
            kwargs["aim"]["run_hash"] = ids["aim"]
    return kwargs


def started_ids(accelerator: Any, trackers: list[str], ids: dict[str, str]) -> dict[str, str]:
    """The ids of the tracker runs just started, for run.json (so a resume goes on in them)."""
    ids = dict(ids)
    if "mlflow" in trackers:
        ids["mlflow"] = accelerator.get_tracker("mlflow", unwrap=True).info.run_id
    if "aim" in trackers:
        ids["aim"] = accelerator.get_tracker("aim", unwrap=True).hash
    return ids


def metrics(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl line as tracker values: every number except the step."""
    return {
        k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }
