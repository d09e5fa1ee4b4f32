"""launch: run a build with `accelerate launch`, in a subprocess."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path


class MissingTrainingExtra(RuntimeError):
    """accelerate is not installed where recipec runs."""


def launch_command(build_dir: Path, script_args: tuple[str, ...] = ()) -> list[str]:
    """The argv that trains a build: this Python's accelerate, the build's config and script."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(build_dir / "accelerate_config.yaml"),
        str(build_dir / "train.py"),
        *script_args,
    ]


def launch(build_dir: Path, script_args: tuple[str, ...] = ()) -> int:
    """Train a build and return the training's exit code.

    Args:
        build_dir: the build directory.
        script_args: arguments for train.py (e.g. ``--allow-changed``).

    Raises:
        MissingTrainingExtra: when accelerate cannot be imported.
    """
    if importlib.util.find_spec("accelerate") is None:
        raise MissingTrainingExtra(
            "training needs the training libraries: pip install 'recipec[train]' (torch, accelerate, transformers, ...)"
        )
    return subprocess.call(launch_command(build_dir, script_args))
