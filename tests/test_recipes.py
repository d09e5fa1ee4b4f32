"""Every example in recipes/ validates, builds, and its generated files parse."""

from __future__ import annotations

import ast
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from recipec.cli import main
from recipec.compiler import build

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted((REPO / "recipes").glob("*.toml"))


def test_there_are_examples():
    assert any(p.name == "quickstart.toml" for p in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_example_validates_cleanly(recipe: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(REPO)
    rel = recipe.relative_to(REPO).as_posix()
    result = CliRunner().invoke(main, ["--no-color", "validate", rel])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok: {rel} (")
    assert result.stderr == "", f"an example should not warn:\n{result.stderr}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_example_builds_and_its_files_parse(recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "recipes").mkdir()
    shutil.copy(recipe, tmp_path / "recipes" / recipe.name)
    monkeypatch.chdir(tmp_path)
    written, plan = build(f"recipes/{recipe.name}")
    built = tmp_path / written.dir
    assert built == tmp_path / "build" / plan.name

    ast.parse((built / "train.py").read_text(), filename=str(built / "train.py"))
    for module in (built / "recipec_runtime").glob("*.py"):
        ast.parse(module.read_text(), filename=str(module))
    check = subprocess.run(["bash", "-n", str(built / "launch.sh")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    config = yaml.safe_load((built / "accelerate_config.yaml").read_text())
    assert config["num_processes"] == plan["num_processes"]
    assert tomllib.loads((built / "resolved.toml").read_text())["recipe"]["name"] == plan.name
