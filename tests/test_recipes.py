"""Every example in recipes/ validates, builds, and its generated files parse."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from recipec.cli import main
from recipec.compiler import build, plan_recipe

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted((REPO / "recipes").glob("*.toml"))


def test_there_are_examples():
    assert any(p.name == "quickstart.toml" for p in RECIPES)


def finished_parent(project: Path, recipe: Path) -> None:
    """For a [continual] example: its parent's run directory (and its parent's), as a finished run leaves it.

    The parent recipe is really built; only the training is skipped: run.json says it
    completed and model/config.json stands in for the weights (model_full/ beside an
    adapter's model/ for a PEFT parent that saves its merged model).
    """
    parent_dir = tomllib.loads(recipe.read_text()).get("continual", {}).get("from")
    if parent_dir is None or (project / parent_dir / "run.json").exists():
        return
    (parent,) = [
        p for p in RECIPES if (project / parent_dir).name == tomllib.loads(p.read_text())["recipe"]["name"]
    ]
    finished_parent(project, parent)
    (project / "recipes").mkdir(exist_ok=True)
    shutil.copy(parent, project / "recipes" / parent.name)
    written, plan = build(f"recipes/{parent.name}", (), project / "build" / f"parent-{parent.stem}", project=project)
    run = project / parent_dir
    config = json.dumps({"model_type": "llama", "max_position_embeddings": 512})
    (run / "model").mkdir(parents=True)
    if plan.recipe.peft is not None:
        (run / "model" / "adapter_config.json").write_text("{}")
        (run / "model_full").mkdir()
        (run / "model_full" / "config.json").write_text(config)
    else:
        (run / "model" / "config.json").write_text(config)
    for name in ("resolved.toml", "recipe.lock.json", "schedule.csv"):
        shutil.copy(written.dir / name, run / name)
    (run / "run.json").write_text(json.dumps({"name": plan.name, "status": "completed", "steps": plan["max_steps"]}))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_example_validates_cleanly(recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shutil.copytree(recipe.parent, tmp_path / "recipes")  # with the data and chat templates examples read
    finished_parent(tmp_path, recipe)
    monkeypatch.chdir(tmp_path)
    rel = f"recipes/{recipe.name}"
    result = CliRunner().invoke(main, ["--no-color", "validate", rel])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok: {rel} (")
    assert result.stderr == "", f"an example should not warn:\n{result.stderr}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_example_builds_and_its_files_parse(recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shutil.copytree(recipe.parent, tmp_path / "recipes")  # with the data and chat templates examples read
    finished_parent(tmp_path, recipe)
    monkeypatch.chdir(tmp_path)
    written, plan = build(f"recipes/{recipe.name}")
    built = tmp_path / written.dir
    assert built == tmp_path / "build" / plan.name

    ast.parse((built / "train.py").read_text(), filename=str(built / "train.py"))
    for module in (built / "recipec_runtime").rglob("*.py"):
        ast.parse(module.read_text(), filename=str(module))
    check = subprocess.run(["bash", "-n", str(built / "launch.sh")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    config = yaml.safe_load((built / "accelerate_config.yaml").read_text())
    assert config["num_processes"] == plan["num_processes"]
    assert tomllib.loads((built / "resolved.toml").read_text())["recipe"]["name"] == plan.name
    # resolved.toml is itself a recipe, continual ones included, and builds the same settings
    again, _ = plan_recipe(built / "resolved.toml", build_dir=f"build/{plan.name}")
    assert {s.name: s.value for s in again.settings} == {s.name: s.value for s in plan.settings}


@pytest.mark.parametrize("verb", ["validate", "build"])
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_validate_and_build_never_import_the_training_stack(verb: str, recipe: Path, tmp_path: Path):
    """Each example through the real CLI in a fresh interpreter: no torch, transformers, ..."""
    shutil.copytree(recipe.parent, tmp_path / "recipes")  # with the data and chat templates examples read
    finished_parent(tmp_path, recipe)
    script = textwrap.dedent(
        """
        import json, runpy, sys
        sys.argv = ["recipec", *sys.argv[1:]]
        code = 0
        try:
            runpy.run_module("recipec", run_name="__main__")
        except SystemExit as exc:
            code = exc.code
        heavy = {"torch", "transformers", "accelerate", "datasets", "peft", "tokenizers"}
        print(json.dumps([code, sorted(m for m in sys.modules if m.split(".")[0] in heavy)]))
        """
    )
    args = [sys.executable, "-c", script, verb, f"recipes/{recipe.name}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=tmp_path)
    code, loaded = json.loads(out.stdout.splitlines()[-1])
    assert code in (0, None), out.stderr
    assert loaded == [], loaded
