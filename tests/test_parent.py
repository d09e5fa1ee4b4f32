"""`[continual] from` a run that trained a PEFT adapter: its merged model is what continues."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipec.cli import main
from recipec.compiler import plan_recipe

from test_recipes import REPO, finished_parent


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    finished_parent(tmp_path, REPO / "recipes" / "dpo-chat.toml")  # sft-chat (LoRA, save_merged) and its parent
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_peft_parent_continues_from_its_merged_model(project: Path) -> None:
    plan, _ = plan_recipe("recipes/dpo-chat.toml", ())
    assert plan["model_path"] == "./runs/sft-chat/model_full"


def test_a_peft_parent_without_a_merged_model_is_an_error(project: Path) -> None:
    shutil.rmtree(project / "runs" / "sft-chat" / "model_full")
    result = CliRunner().invoke(main, ["--no-color", "validate", "recipes/dpo-chat.toml"])
    assert result.exit_code == 2
    assert "trained a PEFT adapter and saved no merged model (model_full/)" in result.output
    assert "set peft.save_merged = true in the parent recipe" in result.output
