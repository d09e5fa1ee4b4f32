"""`recipec diff`: a semantic diff of two resolved recipes (values, derived numbers, LR, flags)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from recipec.diff import diff


def run_diff(*args: str):
    """Invoke `diff` as `recipec diff ...` does, through a group of its own."""
    group = click.Group(commands=[diff])
    return CliRunner().invoke(group, ["diff", *args])


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the working (project) directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_identical_recipes_are_the_same(project, write_recipe):
    write_recipe(filename="a.toml")
    write_recipe(filename="b.toml")
    result = run_diff("a.toml", "b.toml")
    assert result.exit_code == 0, result.output
    assert "no differences" in result.stdout


def test_lr_change_shows_key_values_origin_and_schedule(project, write_recipe):
    write_recipe(filename="a.toml")
    b = write_recipe({"optim.lr": 2e-3}, filename="b.toml")
    result = run_diff("a.toml", "b.toml")
    assert result.exit_code == 1, result.output
    out = result.stdout
    line = next(i for i, text in enumerate(b.read_text().splitlines(), 1) if text.startswith("lr ="))
    assert "~ lr: 0.0003 -> 0.002" in out
    assert f"optim.lr  (default -> b.toml:{line})" in out
    assert "[LR schedule]" in out
    assert "peak     0.0003 -> 0.002" in out
    assert "max pointwise difference 0.0017 at step" in out
    assert "over the 100 steps both runs have" in out
    assert "attention:" not in out  # a from-scratch model: a higher LR is not flagged


def test_max_steps_change_moves_derived_warmup(project, write_recipe):
    write_recipe({"schedule.warmup": 0.1}, filename="a.toml")
    write_recipe({"schedule.warmup": 0.1, "train.max_steps": 200}, filename="b.toml")
    result = run_diff("a.toml", "b.toml", "--json")
    assert result.exit_code == 1, result.output
    changes = {c["name"]: c for c in json.loads(result.stdout)["changes"]}
    warmup = changes["warmup_steps"]
    assert (warmup["old"], warmup["new"], warmup["derived"]) == (10, 20, True)
    assert "max_steps" in warmup["because"]
    assert changes["max_steps"]["derived"] is False
    text = run_diff("a.toml", "b.toml").stdout
    assert "~ warmup_steps: 10 -> 20\n    changed because max_steps" in text
    assert "    was warmup 10 steps (linear 0 -> 1), decay 90 steps" in text
    assert "    now warmup 20 steps (linear 0 -> 1), decay 180 steps" in text


def test_num_processes_change_moves_derived_grad_accum(project, write_recipe):
    write_recipe({"launch.num_processes": 1, "launch.cpu": True}, filename="a.toml")
    write_recipe({"launch.num_processes": 2, "launch.cpu": True}, filename="b.toml")
    result = run_diff("a.toml", "b.toml")
    assert result.exit_code == 1, result.output
    expected = "~ grad_accum_steps: 2 -> 1\n    changed because num_processes changed; derived: batch_size 8"
    assert expected in result.stdout
    assert "~ num_processes: 1 -> 2\n    launch.num_processes" in result.stdout


def test_eval_at_start_change_is_named(project, write_recipe):
    write_recipe(filename="a.toml")
    b = write_recipe({"train.eval_at_start": False}, filename="b.toml")
    result = run_diff("a.toml", "b.toml")
    assert result.exit_code == 1, result.output
    line = next(i for i, text in enumerate(b.read_text().splitlines(), 1) if text.startswith("eval_at_start ="))
    assert "~ eval_at_start: True -> False" in result.stdout
    assert f"train.eval_at_start  (default -> b.toml:{line})" in result.stdout


def test_seed_change_and_removed_filter_are_flagged(project, write_recipe):
    length = {"type": "length", "min": 10}
    write_recipe(filename="a.toml", data={"filters": [length]})
    write_recipe({"recipe.seed": 99}, filename="b.toml")
    result = run_diff("a.toml", "b.toml", "--json")
    assert result.exit_code == 1, result.output
    kinds = {f["kind"]: f["message"] for f in json.loads(result.stdout)["flags"]}
    assert "data order and the held-out split" in kinds["seed"]
    assert "`length` removed from [[data.filters]]" in kinds["removed_filter"]
    text = run_diff("a.toml", "b.toml").stdout
    assert "attention: recipe.seed changed" in text
    assert "attention: filter `length` removed from [[data.filters]]" in text


def test_source_changes_and_pretrained_lr_are_flagged(project, write_recipe):
    docs = {"builtin": "python-docs", "weight": 1.0, "filters": [{"type": "length", "min": 10}]}
    sources = [docs, {"builtin": "python-stdlib", "weight": 1.0}]
    write_recipe(filename="a.toml", data={"sources": sources})
    write_recipe(filename="b.toml", data={"sources": [{"builtin": "python-docs", "weight": 2.0}]})
    flags = json.loads(run_diff("a.toml", "b.toml", "--json").stdout)["flags"]
    messages = [f["message"] for f in flags]
    assert any("data source sources[0] (python-docs) changed: weight 1.0 -> 2.0" in m for m in messages), messages
    assert any("data source sources[1] (python-stdlib) removed" in m for m in messages), messages
    assert any("filter `length` removed from data source sources[0] (python-docs)" in m for m in messages), messages


def test_build_directory_against_recipe(project, write_recipe):
    from recipec.compiler import build

    write_recipe(filename="recipes/x.toml")
    written, _ = build("recipes/x.toml")
    same = run_diff(written.dir.as_posix(), "recipes/x.toml")
    assert same.exit_code == 0, same.output
    write_recipe({"train.batch_size": 16}, filename="recipes/x.toml")
    result = run_diff("build/tiny", "recipes/x.toml")
    assert result.exit_code == 1, result.output
    assert "--- a: build/tiny (build/tiny/resolved.toml)" in result.stdout
    assert "~ batch_size: 8 -> 16" in result.stdout
    assert "~ grad_accum_steps: 2 -> 4\n    changed because batch_size changed" in result.stdout


def _git(*args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True, text=True
    )


def test_git_revision_against_working_tree(project, write_recipe):
    from recipec.compiler import build

    write_recipe(filename="recipes/x.toml")
    build("recipes/x.toml")
    _git("init", "-q")
    _git("add", "recipes/x.toml", "build/tiny/resolved.toml")
    _git("commit", "-q", "-m", "x")
    write_recipe({"optim.lr": 1e-3}, filename="recipes/x.toml")
    result = run_diff("HEAD:recipes/x.toml", "recipes/x.toml")
    assert result.exit_code == 1, result.output
    assert "--- a: HEAD:recipes/x.toml" in result.stdout
    assert "~ lr: 0.0003 -> 0.001" in result.stdout
    # a build directory at a revision reads its resolved.toml
    result = run_diff("HEAD:build/tiny", "recipes/x.toml")
    assert result.exit_code == 1, result.output
    assert "(HEAD:build/tiny/resolved.toml)" in result.stdout
    # the temporary copies are gone
    assert sorted(p.name for p in (project / "recipes").iterdir()) == ["x.toml"]
    assert not (project / "build" / "tiny" / ".resolved").exists()
    assert [p.name for p in (project / "build" / "tiny").glob(".*")] == []


def test_json_structure(project, write_recipe):
    write_recipe(filename="a.toml")
    write_recipe({"optim.lr": 1e-3}, filename="b.toml")
    data = json.loads(run_diff("a.toml", "b.toml", "--json").stdout)
    assert set(data) == {"a", "b", "same", "changes", "schedule", "flags"}
    assert data["same"] is False
    assert data["a"] == {"label": "a.toml", "recipe_file": "a.toml", "name": "tiny"}
    (lr,) = [c for c in data["changes"] if c["name"] == "lr"]
    assert lr["kind"] == "changed" and lr["old"] == 3e-4 and lr["new"] == 1e-3
    assert lr["note"] == "optim.lr" and lr["origin"].startswith("b.toml:") and lr["old_origin"] == "default"
    assert set(data["schedule"]) == {"a", "b", "common_steps", "max_abs_diff", "max_abs_diff_step"}
    assert data["schedule"]["a"]["steps"] == 100 and data["schedule"]["b"]["peak"] == pytest.approx(1e-3)
    assert data["schedule"]["max_abs_diff"] == pytest.approx(7e-4)


def test_epochs_runs_say_the_schedule_is_unknown(project, write_recipe):
    write_recipe({"train.max_steps": None, "train.epochs": 1}, filename="a.toml")
    write_recipe({"train.max_steps": None, "train.epochs": 1, "optim.lr": 1e-3}, filename="b.toml")
    result = run_diff("a.toml", "b.toml")
    assert result.exit_code == 1, result.output
    assert "both runs are in epochs" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("missing.toml", "a.toml"), "error: missing.toml does not exist"),
        (("HEAD~7:a.toml", "a.toml"), "error: cannot read HEAD~7:a.toml from git"),
    ],
)
def test_unreadable_side_exits_2(project, write_recipe, args, message):
    write_recipe(filename="a.toml")
    _git("init", "-q")
    result = run_diff(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_invalid_recipe_exits_2_with_diagnostics(project, write_recipe):
    write_recipe(filename="a.toml")
    write_recipe({"optim.lrr": 1e-3}, filename="b.toml")
    result = run_diff("a.toml", "b.toml")
    assert result.exit_code == 2
    assert "error: unknown key `optim.lrr`" in result.stderr
    assert "--> b.toml:" in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_invalid_recipe_at_a_revision_names_the_revision(project, write_recipe):
    write_recipe({"optim.lrr": 1e-3}, filename="recipes/x.toml")
    _git("init", "-q")
    _git("add", "recipes/x.toml")
    _git("commit", "-q", "-m", "x")
    write_recipe(filename="recipes/x.toml")
    result = run_diff("HEAD:recipes/x.toml", "recipes/x.toml")
    assert result.exit_code == 2
    assert "--> HEAD:recipes/x.toml:" in result.stderr
    assert "1 error in HEAD:recipes/x.toml" in result.stderr
    assert sorted(p.name for p in (project / "recipes").iterdir()) == ["x.toml"]


def test_higher_lr_and_longer_run_on_a_pretrained_model_are_flagged(project, write_recipe):
    pretrained = {"model.init": None, "model.config": None, "model.path": "org/base"}
    write_recipe(pretrained, filename="a.toml", tokenizer=None)
    write_recipe({**pretrained, "optim.lr": 1e-3, "train.max_steps": 200}, filename="b.toml", tokenizer=None)
    result = run_diff("a.toml", "b.toml")
    assert result.exit_code == 1, result.output
    assert "attention: peak LR raised from 0.0003 to 0.001 on a pretrained model" in result.stdout
    assert "attention: more optimizer steps: 100 -> 200 on a pretrained model" in result.stdout
    assert "attention: more training tokens: 25,600 -> 51,200" in result.stdout


def test_an_edited_chat_template_file_is_a_change_of_the_build(project, write_recipe):
    """resolved.toml keeps the template as built, so an edit of its file shows in `diff` (and drifts in `verify`)."""
    from recipec.compiler import build

    (project / "chat.jinja").write_text(
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    (project / "d.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) + "\n")
    recipe = write_recipe(
        {"tokenizer.chat_template": "chat.jinja", "tokenizer.special_tokens": ["<|im_start|>", "<|im_end|>"]},
        data={"sources": [{"path": "d.jsonl", "records": "messages"}]},
    )
    build(recipe, (), project / "build" / "tiny", project=project)
    assert run_diff("build/tiny", str(recipe)).exit_code == 0
    (project / "chat.jinja").write_text("{# edited #}" + (project / "chat.jinja").read_text())
    result = run_diff("build/tiny", str(recipe))
    assert result.exit_code == 1, result.output
    assert "~ chat_template:" in result.stdout and "1 value changed" in result.stdout


@pytest.mark.parametrize(
    "b_steps, b_lr, wanted",
    [(300, 3e-4, "likely wants a lower one"), (50, 3e-4, "likely wants a higher one"), (105, 3e-4, None), (300, 1e-4, None)],
    ids=["longer", "shorter", "within-10%", "lr-changed-too"],
)
def test_a_token_horizon_change_at_the_same_peak_lr_is_flagged(project, write_recipe, b_steps, b_lr, wanted):
    write_recipe(filename="a.toml")
    write_recipe({"train.max_steps": b_steps, "optim.lr": b_lr}, filename="b.toml")
    result = run_diff("a.toml", "b.toml", "--json")
    assert result.exit_code == 1, result.output
    flags = [f for f in json.loads(result.stdout)["flags"] if f["kind"] == "token_horizon"]
    if wanted is None:
        assert flags == []
    else:
        (flag,) = flags
        assert flag["message"].startswith(f"total tokens 25,600 -> {b_steps * 256:,} ({b_steps / 100:.3g}x) at the same peak LR 0.0003")
        assert wanted in flag["message"] and "Scaling Optimal LR Across Token Horizons" in flag["message"]
        assert "attention: total tokens 25,600 ->" in run_diff("a.toml", "b.toml").stdout


def test_explain_notes_a_token_horizon_changed_by_set(project, write_recipe):
    from recipec.cli import main

    def cli(*args: str):
        return CliRunner().invoke(main, ["--no-color", *args])

    write_recipe(filename="recipe.toml")
    result = cli("explain", "recipe.toml", "--set", "train.max_steps=400")
    assert result.exit_code == 0, result.stderr
    assert "[notes]\n  --set against the recipe as written: total tokens 25,600 -> 102,400 (4x) at the same peak LR 0.0003" in result.stdout
    assert "[notes]" not in cli("explain", "recipe.toml", "--set", "train.max_steps=400", "--set", "optim.lr=1e-4").stdout
    assert "[notes]" not in cli("explain", "recipe.toml").stdout
