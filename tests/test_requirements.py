"""requirements.txt: a build names every package its train.py imports, at the lock's versions,
and trains in a fresh virtualenv made from that file alone (no recipec installed)."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from recipec import build as build_module
from recipec.build import LOCK_FILE, REQUIREMENTS, TRAINING_PACKAGES, read_lock, required_packages, requirements_text
from recipec.compiler import build
from recipec.verify import find_drift

REPO = Path(__file__).resolve().parent.parent


def _requirement_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _quickstart(project: Path, *overrides: str) -> Path:
    shutil.copytree(REPO / "recipes", project / "recipes")
    written, _ = build(project / "recipes" / "quickstart.toml", overrides, project / "build" / "quickstart", project=project)
    return written.dir


def _imported_distributions(build_dir: Path) -> dict[str, str | None]:
    """{top-level module that train.py or recipec_runtime/ imports, outside the standard
    library: the package it is installed from here, or None}."""
    modules = set()
    for path in [build_dir / "train.py", *sorted((build_dir / "recipec_runtime").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    modules -= set(sys.stdlib_module_names) | {"recipec_runtime"}
    installed = metadata.packages_distributions()
    return {m: installed[m][0].lower() if m in installed else None for m in sorted(modules)}


def test_requirements_pin_the_locks_versions(tmp_path: Path):
    built = _quickstart(tmp_path)
    lock = json.loads((built / LOCK_FILE).read_text())
    assert list(lock["packages"]) == sorted(TRAINING_PACKAGES)
    text = (built / REQUIREMENTS).read_text()
    assert lock["files"][REQUIREMENTS] == hashlib.sha256(text.encode()).hexdigest()
    pins = dict(line.split("==") for line in _requirement_lines(text))
    assert list(pins) == list(TRAINING_PACKAGES)  # all pinned: the test environment has every one
    assert pins == {name: lock["packages"][name].split("+")[0] for name in TRAINING_PACKAGES}
    assert "pip install -r requirements.txt" in text and "https://download.pytorch.org/whl/" in text
    assert f"pip install -r build/quickstart/{REQUIREMENTS}" in (built / "train.py").read_text()


def test_every_package_the_build_imports_is_required(tmp_path: Path):
    """What train.py and recipec_runtime/ import is in requirements.txt, except what only an
    option imports (bitsandbytes for QLoRA and 8-bit AdamW, lion-pytorch and schedulefree for
    their optimizers, ray for the data stage's Ray executor, huggingface_hub for a hub source,
    deepspeed for sequence parallelism, which needs strategy "deepspeed"): then requirements.txt names it (below)."""
    built = _quickstart(tmp_path)
    required = {line.split("==")[0] for line in _requirement_lines((built / REQUIREMENTS).read_text())}
    imported = _imported_distributions(built)
    assert {"zstandard", "xxhash", "tqdm", "torch", "accelerate"} <= set(imported.values())
    missing = {module: dist for module, dist in imported.items() if dist not in required}
    assert missing == {
        "bitsandbytes": None,
        "lion_pytorch": "lion-pytorch",
        "schedulefree": "schedulefree",
        "ray": "ray",
        "huggingface_hub": "huggingface_hub",
        "deepspeed": "deepspeed",
    }


@pytest.mark.parametrize(("name", "package"), [("lion", "lion-pytorch"), ("schedule_free_adamw", "schedulefree"), ("muon", None)])
def test_an_optimizer_adds_its_package(plan_of, name, package):
    overrides = {"optim.name": name} | ({"schedule.decay": "constant"} if name == "schedule_free_adamw" else {})
    plan = plan_of(overrides)
    extra = [package] if package else []
    assert required_packages(plan) == [*TRAINING_PACKAGES, *extra]


def test_the_ray_executor_adds_ray(plan_of):
    assert required_packages(plan_of({"data.executor": "ray"})) == [*TRAINING_PACKAGES, "ray"]


def test_a_hub_source_adds_huggingface_hub(plan_of):
    plan = plan_of({}, data={"sources": [{"hub": {"repo": "org/name"}}]})
    assert required_packages(plan) == [*TRAINING_PACKAGES, "huggingface_hub"]


def test_recipe_options_add_their_packages(plan_of):
    plan = plan_of(
        {"output.trackers": ["tensorboard", "mlflow", "aim"], "model.attention": "flash_attention_2"},
        launch={"num_processes": 2, "strategy": "deepspeed", "mixed_precision": "bf16"},
    )
    extra = ["mlflow-skinny", "tensorboard", "aim", "deepspeed", "flash-attn"]
    assert sorted(required_packages(plan)) == sorted([*TRAINING_PACKAGES, *extra])
    versions = {name: "1.0" for name in TRAINING_PACKAGES}
    versions |= {"torch": "2.13.0+cu128", "tensorboard": "2.21.0", "mlflow-skinny": None, "aim": None}
    versions |= {"deepspeed": "0.19.8", "flash-attn": None}
    text = requirements_text(plan, versions)
    lines = _requirement_lines(text)
    assert lines[0] == "torch==2.13.0"  # the local build label is left out: any build of 2.13.0
    assert "tensorboard==2.21.0" in lines
    assert "mlflow-skinny  # not installed where this build was made: no version to pin" in lines
    assert "aim<4  # not installed where this build was made: no version to pin" in lines  # recipec's bound
    assert not [line for line in lines if line.startswith(("deepspeed", "flash-attn"))]
    assert text.endswith(
        "# compiled against the torch above, so installed after these lines:\n"
        "#   pip install --no-build-isolation deepspeed==0.19.8\n"
        "#   pip install --no-build-isolation flash-attn\n"
    )
    assert "pip install torch==2.13.0 --index-url" in text


def test_qlora_requires_bitsandbytes(plan_of):
    plan = plan_of(
        {"model.init": None, "model.config": None, "model.path": "org/base", "tokenizer": None},
        peft={"method": "lora", "quantize": "4bit"},
    )
    assert required_packages(plan)[-1] == "bitsandbytes"
    assert "bitsandbytes==0.50.2" in requirements_text(plan, {"bitsandbytes": "0.50.2"})


def test_an_upgraded_package_makes_verify_report_the_requirements_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    built = _quickstart(tmp_path)
    lock = read_lock(built)
    installed = build_module.package_versions
    monkeypatch.setattr(build_module, "package_versions", lambda names: {**installed(names), "accelerate": "9.9.9"})
    monkeypatch.chdir(tmp_path)
    assert [str(d) for d in find_drift(Path("build/quickstart"), lock)] == [
        "generated file would change: requirements.txt",
        f"package versions drifted: accelerate {lock['packages']['accelerate']} -> 9.9.9",
    ]


# -- a fresh virtualenv ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_quickstart_trains_in_a_venv_made_from_its_requirements_alone(tmp_path: Path):
    """`pip install -r requirements.txt` into an empty virtualenv, then train.py for a few
    steps: the build needs nothing else, recipec least of all. Installs from the package
    index (a few minutes)."""
    project = tmp_path / "project"
    overrides = ["train.max_steps=3", "train.log_every=1", "train.eval_every=0", "train.save_every=0"]
    overrides += ["data.seq_len=64", "tokenizer.train.vocab_size=1000"]
    built = _quickstart(project, *overrides)
    lock = json.loads((built / LOCK_FILE).read_text())

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "ACCELERATE_USE_CPU")}
    env |= {"PYTHONNOUSERSITE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # requirements.txt pins torch==X, which every build of X matches; held to the build these
    # tests run on, pip cannot reach for another one (several GB of CUDA wheels on Linux)
    torch = tmp_path / "torch.txt"
    torch.write_text(f"torch=={lock['packages']['torch']}\n")
    # --no-compile: the same packages, without byte-compiling each of their modules at install (more than half of
    # the install's time here; python compiles what train.py imports as it imports it)
    pip = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-compile", "-c", str(torch), "-r", REQUIREMENTS],
        cwd=built, env=env, capture_output=True, text=True, timeout=1800,
    )
    if pip.returncode != 0 and f"No matching distribution found for torch=={lock['packages']['torch']}" in pip.stderr:
        pytest.skip(f"pip finds no torch {lock['packages']['torch']} (the build these tests run on) here")
    assert pip.returncode == 0, pip.stderr[-6000:]

    freeze = subprocess.run([python, "-m", "pip", "list", "--format=json"], env=env, capture_output=True, text=True, check=True)
    installed = {p["name"].lower(): p["version"] for p in json.loads(freeze.stdout)}
    assert {name: installed.get(name) for name in lock["packages"]} == lock["packages"]
    assert "recipec" not in installed
    assert subprocess.run([python, "-c", "import recipec"], env=env, cwd=tmp_path, capture_output=True).returncode == 1

    proc = subprocess.run(
        [python, str(built / "train.py")], cwd=project, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    run_dir = project / "runs" / "quickstart"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3]
    assert (run_dir / "model" / "model.safetensors").is_file()
