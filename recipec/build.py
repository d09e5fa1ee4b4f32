"""write: a rendered plan -> the build directory and its lock file.

A build directory holds train.py, accelerate_config.yaml, launch.sh (and slurm.sbatch for
more than one machine), resolved.toml, the runtime package (recipec_runtime/) and
recipe.lock.json. The lock records hashes of the recipe, the templates and every generated
file, and the recipec version; no timestamps and no absolute paths, so building the same
recipe twice gives byte-identical directories. The directory is written beside its final
place and swapped in, so a failed build never leaves a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .diagnostics import Diagnostic, RecipeError
from .render import template_dir
from .resolve import Plan
from .source import SourceMap

LOCK_FILE = "recipe.lock.json"
LOCK_VERSION = 1
RUNTIME_PACKAGE = "recipec_runtime"
EXECUTABLES = ("launch.sh", "slurm.sbatch")
"""The generated files that are run as commands."""


@dataclass(frozen=True)
class Build:
    """A written build directory."""

    dir: Path
    files: dict[str, str]
    """{relative path: sha256} of every file except the lock."""
    lock: dict[str, Any]

    @property
    def lock_sha256(self) -> str:
        return sha256_bytes(lock_text(self.lock).encode())

    @property
    def train_py(self) -> Path:
        return self.dir / "train.py"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def runtime_files() -> dict[str, str]:
    """The runtime package's source, keyed by its path inside a build."""
    root = Path(__file__).resolve().parent / "runtime"
    return {
        f"{RUNTIME_PACKAGE}/{p.name}": p.read_text(encoding="utf-8") for p in sorted(root.glob("*.py"))
    }


def lock_text(lock: dict[str, Any]) -> str:
    """The lock file's exact text (sorted keys, two-space indent, final newline)."""
    return json.dumps(lock, indent=2, sort_keys=True) + "\n"


def _bytes(content: str | bytes) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


def make_lock(plan: Plan, source: SourceMap, files: dict[str, str | bytes]) -> dict[str, Any]:
    """The lock for a build: what went in, what came out, no time and no absolute path."""
    tdir = template_dir()
    scaling = plan.recipe.optim.scaling
    extra = {}
    if scaling is not None:  # the reference the peak LR was derived from (batch-size scaling)
        extra["lr_scaling"] = {**scaling.model_dump(), "batch_size": plan["batch_size"], "peak_lr": plan["lr"]}
    if plan.recipe.continual is not None:  # lineage: which run, at which step, this one continues
        extra["parent"] = {
            "dir": plan["parent_dir"],
            "model": plan["model_path"],
            "step": plan["parent_step"],
            "lock_sha256": plan["parent_lock_sha256"],
        }
    return {
        **extra,
        "lock_version": LOCK_VERSION,
        "recipec_version": __version__,
        "name": plan.name,
        "recipe": {"file": plan.recipe_file, "sha256": sha256_bytes(source.text.encode())},
        "overrides": list(plan.overrides),
        "templates": {p.name: sha256_bytes(p.read_bytes()) for p in sorted(tdir.glob("*.j2"))},
        "files": {path: sha256_bytes(_bytes(content)) for path, content in sorted(files.items())},
    }


def check_output_dir(plan: Plan, source: SourceMap, project: Path) -> None:
    """Refuse an output directory that holds another recipe's run."""
    owner = _owner(project / plan["output_dir"] / "run.json")
    if owner is not None and owner != plan.name:
        raise RecipeError(
            [
                Diagnostic(
                    "error",
                    f"output directory {plan['output_dir']} holds a run of recipe `{owner}`; this would overwrite it",
                    source.locate(("output", "dir")),
                    "set output.dir to a directory of its own",
                )
            ]
        )


def write_build(plan: Plan, rendered: dict[str, str | bytes], source: SourceMap, build_dir: Path) -> Build:
    """Write the build directory, replacing an earlier build of the same recipe.

    Args:
        plan: the resolved plan.
        rendered: render's output.
        source: the recipe's source map (its text is hashed into the lock).
        build_dir: where to write.

    Raises:
        RecipeError: when build_dir is not a build of this recipe and not empty.
    """
    _check_build_dir(plan, build_dir)
    files: dict[str, str | bytes] = dict(rendered)
    files.update(runtime_files())
    lock = make_lock(plan, source, files)

    build_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = build_dir.parent / f".{build_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel, content in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_bytes(content))
        for rel in EXECUTABLES:
            if rel in files:
                (tmp / rel).chmod(0o755)
        (tmp / LOCK_FILE).write_text(lock_text(lock), encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    old = build_dir.parent / f".{build_dir.name}.old-{os.getpid()}"
    if build_dir.exists():
        os.replace(build_dir, old)
    os.replace(tmp, build_dir)
    shutil.rmtree(old, ignore_errors=True)
    return Build(build_dir, dict(lock["files"]), lock)


def _check_build_dir(plan: Plan, build_dir: Path) -> None:
    if not build_dir.exists():
        return
    if not build_dir.is_dir():
        raise RecipeError([Diagnostic("error", f"build path {build_dir} exists and is not a directory")])
    lock = build_dir / LOCK_FILE
    if lock.is_file():
        owner = _owner(lock)
        if owner == plan.name:
            return
        raise RecipeError(
            [
                Diagnostic(
                    "error",
                    f"{build_dir} is the build of recipe `{owner}`, not `{plan.name}`",
                    None,
                    "choose another directory with -o",
                )
            ]
        )
    if any(build_dir.iterdir()):
        raise RecipeError(
            [
                Diagnostic(
                    "error",
                    f"{build_dir} exists, is not empty and is not a recipec build; refusing to overwrite it",
                    None,
                    "choose another directory with -o, or remove it",
                )
            ]
        )


def _owner(path: Path) -> str | None:
    """The recipe name recorded in a lock or run.json, or None when there is none to read."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = record.get("name") if isinstance(record, dict) else None
    return name if isinstance(name, str) else None
