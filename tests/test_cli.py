"""The `recipec` command line: help, init, validate, explain, build, run, schema, exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipec import __version__
from recipec.cli import main

REPO = Path(__file__).resolve().parent.parent
ORIGIN = re.compile(r"^(?:[^:]+\.toml:\d+|--set \S+=.*|default|derived)$")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run recipec in tmp_path (the project directory), without colour."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str):
        return CliRunner().invoke(main, ["--no-color", *args])

    return run


def no_traceback(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output


# -- help ------------------------------------------------------------------------------

PURPOSE = {
    None: "compile a TOML training recipe",
    "init": "starter recipe",
    "validate": "Check one or more recipes",
    "explain": "resolved plan",
    "build": "build directory",
    "run": "accelerate launch",
    "schema": "JSON Schema",
    "check": "meta device",
    "data": "data stage",
    "diff": "as they will run",
    "plot": "PNG",
    "runs": "lock hash",
    "verify": "lock",
    "import": "key by key",
    "predict": "scaling law with LR annealing",
}


@pytest.mark.parametrize("command", list(PURPOSE), ids=lambda c: c or "recipec")
def test_help(command: str | None):
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0
    assert PURPOSE[command] in " ".join(result.output.split())
    assert result.output.startswith("Usage: ")


def test_every_command_is_documented():
    assert set(main.commands) == {c for c in PURPOSE if c}
    result = CliRunner().invoke(main, ["-h"])
    for command in main.commands:
        assert f"recipec {command}" in result.output or command == "schema"


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


# -- init ------------------------------------------------------------------------------


def test_init_writes_a_recipe_that_validates_and_builds(cli, tmp_path: Path):
    result = cli("init", "recipes/mine.toml")
    assert result.exit_code == 0, result.output
    assert "wrote recipes/mine.toml" in result.output
    text = (tmp_path / "recipes" / "mine.toml").read_text()
    assert 'name = "mine"' in text
    result = cli("validate", "recipes/mine.toml")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == "ok: recipes/mine.toml (mine)\n"
    assert cli("build", "recipes/mine.toml").exit_code == 0


def test_init_refuses_to_overwrite_without_force(cli, tmp_path: Path):
    target = tmp_path / "r.toml"
    target.write_text("# mine\n")
    result = cli("init", "r.toml")
    assert result.exit_code == 1
    assert "r.toml exists; pass --force to overwrite it" in result.output
    assert target.read_text() == "# mine\n"
    result = cli("init", "r.toml", "--force", "--name", "forced")
    assert result.exit_code == 0
    assert 'name = "forced"' in target.read_text()


def test_init_rejects_a_bad_name(cli, tmp_path: Path):
    result = cli("init", "x.toml", "--name", "no spaces")
    assert result.exit_code == 2
    assert "not a valid recipe.name" in result.output
    assert not (tmp_path / "x.toml").exists()


def test_quickstart_is_what_init_writes(cli, tmp_path: Path):
    """recipes/quickstart.toml is the starter recipe, so the two cannot drift apart."""
    assert cli("init").exit_code == 0
    assert (tmp_path / "recipes" / "quickstart.toml").read_text() == (REPO / "recipes" / "quickstart.toml").read_text()


# -- validate --------------------------------------------------------------------------


def test_validate_several_files(cli, write_recipe, tmp_path: Path):
    write_recipe(filename="good.toml")
    write_recipe({"recipe.name": "other"}, filename="also_good.toml")
    write_recipe({"optim.lrr": 1.0}, filename="bad.toml")
    result = cli("validate", "good.toml", "also_good.toml")
    assert result.exit_code == 0
    assert result.stdout == "ok: good.toml (tiny)\nok: also_good.toml (other)\n"
    result = cli("validate", "good.toml", "bad.toml", "also_good.toml")
    no_traceback(result)
    assert result.exit_code == 2
    assert result.stdout == "ok: good.toml (tiny)\nok: also_good.toml (other)\n"
    assert "unknown key `optim.lrr`" in result.stderr
    assert "1 error in bad.toml" in result.stderr


def test_validate_missing_file(cli):
    result = cli("validate", "nope.toml")
    no_traceback(result)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot read recipe: No such file or directory\n --> nope.toml")


def test_validate_prints_warnings_and_succeeds(cli, write_recipe):
    write_recipe({"train.save_every": 1000})
    result = cli("validate", "recipe.toml")
    assert result.exit_code == 0
    assert result.stdout == "ok: recipe.toml (tiny)\n"
    assert result.stderr.startswith("warning: save_every 1000 is longer than the run (100 steps)")
    assert result.stderr.rstrip().endswith("1 warning in recipe.toml")


def test_validate_applies_set(cli, write_recipe):
    write_recipe()
    assert cli("validate", "recipe.toml", "--set", "optim.lr=0").exit_code == 2
    assert cli("validate", "recipe.toml", "--set", "optim.lr=0.01").exit_code == 0


def test_no_color_has_no_escape_codes(cli, write_recipe):
    write_recipe({"optim.lrr": 1.0})
    assert "\x1b[" not in cli("validate", "recipe.toml").stderr


def test_color_flag_colours_piped_output(write_recipe, tmp_path: Path):
    write_recipe({"optim.lrr": 1.0})
    cmd = [sys.executable, "-m", "recipec"]
    plain = subprocess.run([*cmd, "--no-color", "validate", "recipe.toml"], cwd=tmp_path, capture_output=True, text=True)
    colored = subprocess.run([*cmd, "--color", "validate", "recipe.toml"], cwd=tmp_path, capture_output=True, text=True)
    assert plain.returncode == colored.returncode == 2
    assert "\x1b[" in colored.stderr
    assert re.sub(r"\x1b\[[0-9;]*m", "", colored.stderr) == plain.stderr


# -- explain ---------------------------------------------------------------------------


def test_explain_text(cli, write_recipe):
    write_recipe({"optim.lr": 1e-3})
    result = cli("explain", "recipe.toml", "--set", "train.max_steps=200")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("tiny  (recipe.toml -> build/tiny/)\noverrides: --set train.max_steps=200\n")
    for section in ("[run]", "[model]", "[tokenizer]", "[data]", "[optim]", "[train]", "[schedule]", "[launch]", "[summary]"):
        assert f"\n{section}\n" in out
    assert re.search(r"\n  lr +0\.001 +optim\.lr  \(recipe\.toml:\d+\)\n", out)
    assert re.search(r"\n  max_steps +200 +train\.max_steps  \(--set train\.max_steps=200\)\n", out)
    assert re.search(r"\n  weight_decay +0\.1 +optim\.weight_decay  \(default\)\n", out)
    assert re.search(r"\n  grad_accum_steps +2 +derived: batch_size 8 / \(micro_batch_size 4 \* num_processes 1\)\n", out)
    assert "effective batch  8 sequences = 256 tokens per optimizer step" in out
    assert "optimizer steps  200\n" in out
    assert "peak LR          0.001\n" in out
    assert "schedule         warmup 6 steps (linear 0 -> 1), decay 194 steps (cosine 1 -> 0.1)\n" in out
    assert "total tokens     51,200" in out
    assert "launch           accelerate launch --config_file build/tiny/accelerate_config.yaml build/tiny/train.py" in out


def test_explain_text_with_epochs(cli, write_recipe):
    write_recipe({"train.max_steps": None, "train.epochs": 2})
    out = cli("explain", "recipe.toml").stdout
    assert "[computed by train.py once the data is loaded]" in out
    assert "max_steps" in out and "math.ceil(epochs * steps_per_epoch)" in out
    assert "optimizer steps  derived by train.py from the data (train.epochs)" in out


def test_explain_json(cli, write_recipe):
    write_recipe({"optim.lr": 1e-3, "train.max_steps": None, "train.epochs": 1})
    result = cli("explain", "recipe.toml", "--json", "--set", "optim.eps=1e-6")
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert payload["name"] == "tiny"
    assert payload["recipe_file"] == "recipe.toml"
    assert payload["build_dir"] == "build/tiny"
    assert payload["overrides"] == ["optim.eps=1e-6"]
    settings = {s["name"]: s for s in payload["settings"]}
    assert len(settings) == len(payload["settings"])
    for s in payload["settings"]:
        assert set(s) == {"name", "value", "section", "note", "origin"}
        assert ORIGIN.match(s["origin"]), s
    assert settings["lr"]["value"] == 0.001 and settings["lr"]["origin"].startswith("recipe.toml:")
    assert settings["eps"]["origin"] == "--set optim.eps=1e-6"
    assert settings["grad_accum_steps"]["origin"] == "derived"
    assert settings["betas"]["origin"] == "default"
    assert [f["name"] for f in payload["formulas"]] == ["steps_per_epoch", "max_steps", "schedule_phases"]


def test_explain_invalid_recipe(cli, write_recipe):
    write_recipe({"train.batch_size": 7})
    result = cli("explain", "recipe.toml", "--json")
    no_traceback(result)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "train.batch_size 7 is not a multiple" in result.stderr


# -- build -----------------------------------------------------------------------------


def test_build_prints_the_script_and_the_launch_command(cli, write_recipe, tmp_path: Path):
    write_recipe()
    result = cli("build", "recipe.toml")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"built build/tiny/ \(lock [0-9a-f]{12}\)", lines[0])
    assert lines[1] == "  build/tiny/train.py"
    assert lines[2:] == [
        "train with:",
        "  accelerate launch --config_file build/tiny/accelerate_config.yaml build/tiny/train.py",
    ]
    lock = (tmp_path / "build" / "tiny" / "recipe.lock.json").read_bytes()
    import hashlib

    assert lines[0].endswith(f"(lock {hashlib.sha256(lock).hexdigest()[:12]})")


def test_build_output_option(cli, write_recipe, tmp_path: Path):
    write_recipe()
    result = cli("build", "recipe.toml", "-o", "out/x")
    assert result.exit_code == 0
    assert "  out/x/train.py" in result.stdout
    assert (tmp_path / "out" / "x" / "train.py").is_file()


def test_build_records_set(cli, write_recipe, tmp_path: Path):
    write_recipe()
    result = cli("build", "recipe.toml", "--set", "train.max_steps=20", "--set", 'recipe.description="x y"')
    assert result.exit_code == 0, result.output
    built = tmp_path / "build" / "tiny"
    lock = json.loads((built / "recipe.lock.json").read_text())
    assert lock["overrides"] == ["train.max_steps=20", 'recipe.description="x y"']
    train_py = (built / "train.py").read_text()
    assert "overrides = ['train.max_steps=20', 'recipe.description=\"x y\"']" in train_py
    assert "max_steps = 20                  # train.max_steps" in train_py


def test_build_invalid_recipe_writes_nothing(cli, write_recipe, tmp_path: Path):
    write_recipe({"schedule.decay": "cosin"})
    result = cli("build", "recipe.toml")
    no_traceback(result)
    assert result.exit_code == 2
    assert "did you mean `cosine`?" in result.stderr
    assert not (tmp_path / "build").exists()


def test_build_refusal_is_a_recipe_error(cli, write_recipe, tmp_path: Path):
    write_recipe()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    result = cli("build", "recipe.toml", "-o", "taken")
    no_traceback(result)
    assert result.exit_code == 2
    assert "refusing to overwrite it" in result.stderr


def test_build_dir_with_a_space_is_a_clean_error(cli, write_recipe):
    write_recipe()
    result = cli("build", "recipe.toml", "-o", "my build")
    no_traceback(result)
    assert result.exit_code in (0, 2)


# -- run -------------------------------------------------------------------------------


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch):
    """Record `recipec.launch.launch` calls instead of training; set `.code` for the exit code."""

    class Launches(list):
        code = 0

    calls = Launches()

    def fake_launch(build_dir, script_args=()):
        calls.append(Path(build_dir))
        calls.script_args = script_args
        return calls.code

    monkeypatch.setattr("recipec.launch.launch", fake_launch)
    return calls


def test_pydantic_plugins_are_off_for_the_compile_only(cli, write_recipe, monkeypatch: pytest.MonkeyPatch):
    """recipec's own models need no pydantic plugins (looking them up costs more than a
    validation); the launched training keeps the user's environment, and so does the caller."""
    import os

    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
    seen = {}

    def fake_launch(build_dir, script_args=()):
        seen["launch"] = os.environ.get("PYDANTIC_DISABLE_PLUGINS")
        return 0

    def spy(*args, **kwargs):
        seen["compile"] = os.environ.get("PYDANTIC_DISABLE_PLUGINS")
        return plan_recipe(*args, **kwargs)

    from recipec.compiler import plan_recipe

    monkeypatch.setattr("recipec.launch.launch", fake_launch)
    monkeypatch.setattr("recipec.compiler.plan_recipe", spy)
    write_recipe()
    assert cli("run", "recipe.toml").exit_code == 0
    assert seen == {"compile": "__all__", "launch": None}
    assert "PYDANTIC_DISABLE_PLUGINS" not in os.environ
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "logfire")  # the user's own choice is kept
    assert cli("run", "recipe.toml").exit_code == 0
    assert seen == {"compile": "logfire", "launch": "logfire"}


def test_run_invalid_recipe_starts_nothing(cli, write_recipe, tmp_path: Path, launches):
    write_recipe({"optim.lr": -1.0})
    result = cli("run", "recipe.toml")
    no_traceback(result)
    assert result.exit_code == 2
    assert launches == []
    assert not (tmp_path / "build").exists()
    assert "`optim.lr` must be greater than 0" in result.stderr


def test_run_builds_then_launches(cli, write_recipe, tmp_path: Path, launches):
    write_recipe()
    result = cli("run", "recipe.toml", "--set", "train.max_steps=5")
    assert result.exit_code == 0, result.output
    assert launches == [Path("build/tiny")]
    assert (tmp_path / "build" / "tiny" / "train.py").is_file()
    assert "training finished; script: build/tiny/train.py" in result.stderr


def test_run_refuses_a_multi_machine_recipe_and_says_how_to_launch_it(cli, write_recipe, tmp_path: Path, launches):
    write_recipe(launch={"num_processes": 2, "num_machines": 2, "main_process_ip": "10.0.0.1"})
    result = cli("run", "recipe.toml")
    assert result.exit_code == 2 and launches == []
    assert "build/tiny/slurm.sbatch" in result.stderr and "launch.sh on every machine" in result.stderr


def test_run_passes_allow_changed_to_the_script(cli, write_recipe, tmp_path: Path, launches):
    write_recipe()
    assert cli("run", "recipe.toml", "--allow-changed").exit_code == 0
    assert launches.script_args == ("--allow-changed",)
    assert cli("run", "recipe.toml").exit_code == 0
    assert launches.script_args == ()


def test_run_passes_on_the_training_exit_code_and_keeps_the_build(cli, write_recipe, tmp_path: Path, launches):
    write_recipe()
    launches.code = 3
    result = cli("run", "recipe.toml")
    assert result.exit_code == 3
    assert "training failed (exit 3); script: build/tiny/train.py" in result.stderr
    assert (tmp_path / "build" / "tiny" / "train.py").is_file()


def test_run_without_accelerate_says_what_to_install(cli, write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a))
    started = []
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: started.append(a) or 0)
    write_recipe()
    result = cli("run", "recipe.toml")
    assert result.exit_code == 1
    assert "pip install 'recipec[train]'" in result.stderr
    assert started == []
    assert (tmp_path / "build" / "tiny" / "train.py").is_file(), "the build stays behind"


def test_launch_command_uses_the_build(tmp_path: Path):
    from recipec.launch import launch_command

    argv = launch_command(tmp_path / "b")
    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert argv[3:] == ["--config_file", str(tmp_path / "b" / "accelerate_config.yaml"), str(tmp_path / "b" / "train.py")]


# -- schema ----------------------------------------------------------------------------


def test_schema_writes_then_checks(cli, tmp_path: Path):
    args = ["--output", "s/recipe.schema.json", "--reference", "d/reference.md"]
    result = cli("schema", *args)
    assert result.exit_code == 0
    assert "wrote s/recipe.schema.json" in result.stdout and "wrote d/reference.md" in result.stdout
    json.loads((tmp_path / "s" / "recipe.schema.json").read_text())
    assert cli("schema", *args, "--check").exit_code == 0
    assert cli("schema", *args).stdout == "", "nothing rewritten when up to date"

    (tmp_path / "d" / "reference.md").write_text("stale\n")
    result = cli("schema", *args, "--check")
    assert result.exit_code == 1
    assert "stale: d/reference.md; run `recipec schema` to regenerate" in result.stderr
    assert (tmp_path / "d" / "reference.md").read_text() == "stale\n", "--check writes nothing"

    (tmp_path / "s" / "recipe.schema.json").unlink()
    result = cli("schema", *args, "--check")
    assert result.exit_code == 1
    assert "s/recipe.schema.json" in result.stderr and "d/reference.md" in result.stderr


# -- how errors are reported ----------------------------------------------------------


def test_a_click_exception_is_reported_in_the_house_format(cli, tmp_path: Path):
    (tmp_path / "r.toml").write_text("# mine\n")
    result = cli("init", "r.toml")
    assert result.exit_code == 1  # click's status for a ClickException
    assert result.stderr == "error: r.toml exists; pass --force to overwrite it\n"
    assert result.stdout == ""


def test_a_click_exception_of_a_command_is_reported_in_the_house_format(cli, write_recipe, tmp_path: Path):
    write_recipe(train={"epochs": 1, "max_steps": None})
    result = cli("explain", "recipe.toml", "--lr-csv", "lr.csv")
    no_traceback(result)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the run's length depends on the data (train.epochs)")
    assert "Error:" not in result.output
    assert not (tmp_path / "lr.csv").exists()


@pytest.mark.parametrize(
    "args, message, usage",
    [
        (("build",), "error: missing argument 'RECIPE'", "usage: recipec build [OPTIONS] RECIPE; see `recipec build --help`"),
        (("buidl", "r.toml"), "error: no such command 'buidl'. Did you mean 'build'?", "usage: recipec [OPTIONS] COMMAND"),
        (("--bogus", "validate"), "error: no such option '--bogus'", "usage: recipec [OPTIONS] COMMAND"),
        (("validate", "r.toml", "--sett", "x=1"), "error: no such option '--sett'", "usage: recipec validate"),
        (("init", "x.toml", "--name", "no spaces"), "error: invalid value for --name: 'no spaces' is not a valid recipe.name", "usage: recipec init"),
        (("plot", "runs/a", "--x", "days"), "error: invalid value for '--x': 'days' is not one of", "usage: recipec plot"),
        (("diff", "a.toml"), "error: missing argument 'B'", "usage: recipec diff [OPTIONS] A B"),
    ],
)
def test_usage_errors_are_reported_in_the_house_format(cli, args, message, usage):
    result = cli(*args)
    no_traceback(result)
    assert result.exit_code == 2  # click's status for a usage error
    first, help_line = result.stderr.splitlines()
    assert first.startswith(message), result.stderr
    assert help_line.startswith(f"  = help: {usage}"), result.stderr
    assert "Error:" not in result.output and "Usage:" not in result.output
    assert result.stdout == ""


def test_usage_errors_follow_the_color_flag(cli):
    colored = CliRunner().invoke(main, ["--color", "build"], color=True)
    assert colored.exit_code == 2
    assert "\x1b[" in colored.stderr
    assert re.sub(r"\x1b\[[0-9;]*m", "", colored.stderr) == cli("build").stderr


def test_recipec_alone_still_prints_the_help():
    result = CliRunner().invoke(main, [])
    assert result.output.startswith("Usage: ")
    assert "recipec init" in result.output and "error:" not in result.output


def test_one_exit_status_table():
    """diff, verify, runs and the compiling commands share the reporter's exit statuses."""
    from recipec import diff, report, runs, verify

    assert (report.EXIT_OK, report.EXIT_DIFFERENT, report.EXIT_FAILED, report.EXIT_USAGE) == (0, 1, 1, 2)
    for module in (diff, runs, verify):
        assert not [name for name in vars(module) if name.startswith("EXIT_")], module.__name__


# -- check -----------------------------------------------------------------------------


def _pretrained(write_recipe, path: str) -> Path:
    """A recipe that fine-tunes the local model at `path` (with its own tokenizer)."""
    return write_recipe({"model.path": path}, model={"init": None, "config": None}, tokenizer=None)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "'./models/m' does not exist"),
        (lambda d: d.parent.mkdir() or d.write_text("x"), "'./models/m' is a file"),
        (lambda d: d.mkdir(parents=True), "no config.json in `./models/m`"),
    ],
    ids=["missing", "a-file", "no-config"],
)
def test_check_reports_a_local_model_that_is_not_there_at_its_key(cli, write_recipe, tmp_path: Path, make, message):
    recipe = _pretrained(write_recipe, "./models/m")
    make(tmp_path / "models" / "m")
    line = next(i for i, text in enumerate(recipe.read_text().splitlines(), 1) if text.startswith("path = "))
    result = cli("check", "recipe.toml")
    no_traceback(result)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert f"\n --> recipe.toml:{line}:1\n" in result.stderr
    assert "a local model is a directory that save_pretrained wrote" in result.stderr
    assert result.stderr.rstrip().endswith("1 error in recipe.toml")


@pytest.mark.parametrize(
    "config, message",
    [
        ("{not json", "is not a valid JSON file"),
        ('{"model_type": "no-such-architecture"}', "does not recognize this architecture"),
        ("[]", "Should have a `model_type` key"),
    ],
    ids=["bad-json", "unknown-type", "not-a-table"],
)
def test_check_reports_a_corrupt_local_model_at_its_key(cli, write_recipe, tmp_path: Path, config: str, message: str):
    pytest.importorskip("transformers")
    _pretrained(write_recipe, "./models/m")
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "config.json").write_text(config)
    (tmp_path / "models" / "m" / "model.safetensors").write_bytes(b"")  # weights there: only the config is wrong
    result = cli("check", "recipe.toml")
    no_traceback(result)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot read the model's config in `./models/m`: "), result.stderr
    assert message in result.stderr.splitlines()[0]
    assert " --> recipe.toml:" in result.stderr and "Traceback" not in result.stderr


def test_check_reports_a_model_set_on_the_command_line_at_the_argument(cli, write_recipe, tmp_path: Path):
    _pretrained(write_recipe, "./models/m")
    (tmp_path / "elsewhere").mkdir()
    result = cli("check", "recipe.toml", "--set", 'model.path="./elsewhere"')
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no config.json in `./elsewhere`\n --> --set model.path=")


def test_check_reports_a_local_model_without_a_source_map(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`recipec.check.check` called on a plan alone still raises a RecipeError, not an OSError."""
    from recipec.check import check
    from recipec.compiler import plan_recipe
    from recipec.diagnostics import RecipeError

    monkeypatch.chdir(tmp_path)
    _pretrained(write_recipe, "./models/m")
    (tmp_path / "models" / "m").mkdir(parents=True)
    plan, _ = plan_recipe("recipe.toml")
    (tmp_path / "models" / "m").rmdir()  # gone after the recipe was read
    with pytest.raises(RecipeError) as failure:
        check(plan)
    assert [d.message for d in failure.value.diagnostics] == ["no config.json in `./models/m`"]
    assert failure.value.diagnostics[0].location is None


# -- startup ---------------------------------------------------------------------------


def test_cli_import_is_light():
    script = textwrap.dedent(
        """
        import json, sys
        import recipec.cli
        heavy = {"torch", "transformers", "accelerate", "datasets", "tokenizers", "numpy", "jinja2", "pydantic"}
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert not loaded & {"torch", "transformers", "accelerate", "datasets", "tokenizers"}, loaded


def test_review_commands_are_imported_when_called():
    """`recipec validate` does not pay for diff, verify, plot and runs (or the build writer)."""
    script = textwrap.dedent(
        """
        import json, sys
        import recipec.cli
        before = sorted(m for m in sys.modules if m.startswith("recipec."))
        recipec.cli.main.commands["verify"]
        after = sorted(m for m in sys.modules if m.startswith("recipec."))
        print(json.dumps([before, after]))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, after = json.loads(out.stdout)
    assert not {"recipec.diff", "recipec.verify", "recipec.runs", "recipec.build", "recipec.render"} & set(before), before
    assert "recipec.verify" in after
    assert sorted(main.commands) == sorted(c for c in PURPOSE if c)


def test_validate_imports_neither_the_build_writer_nor_the_review_commands(write_recipe, tmp_path: Path):
    write_recipe()
    script = textwrap.dedent(
        """
        import json, sys
        from recipec.cli import main
        try:
            main(["validate", "recipe.toml"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        print(json.dumps(sorted(m for m in sys.modules if m.startswith(("recipec.", "matplotlib")))))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert "recipec.resolve" in loaded or any(m.startswith("recipec.resolve") for m in loaded)
    unused = {"recipec.diff", "recipec.verify", "recipec.runs", "recipec.build", "recipec.render", "recipec.plot", "recipec.reference", "matplotlib"}
    assert not unused & loaded, unused & loaded


def test_help_runs_as_a_program():
    out = subprocess.run([sys.executable, "-m", "recipec", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "recipec init" in out.stdout


def _check_refuses_then_passes(cli, recipe: Path, pattern: str, error: str):
    """`recipec check` fails with `error` at the line of the list item `pattern` (the last of its list), and passes
    once that item is removed; returns the passing result."""
    result = cli("check", "recipe.toml")
    no_traceback(result)
    assert result.exit_code == 2, result.stderr
    line = next(i for i, text in enumerate(recipe.read_text().splitlines(), 1) if pattern in text)
    assert result.stderr.startswith(error), result.stderr
    assert f" --> recipe.toml:{line}:" in result.stderr
    recipe.write_text(recipe.read_text().replace(f', "{pattern}"', ""))
    result = cli("check", "recipe.toml")
    assert result.exit_code == 0, result.stderr
    return result


def test_check_prints_the_parameter_groups_and_locates_a_pattern_that_matches_nothing(cli, write_recipe, tmp_path: Path):
    pytest.importorskip("transformers")
    recipe = write_recipe(text='[[optim.groups]]\nparams = ["embeddings"]\nlr_scale = 0.1\n\n[[optim.groups]]\nparams = ["*.mlp.*", "*.mpl.*"]\n')
    result = _check_refuses_then_passes(cli, recipe, "*.mpl.*", "error: '*.mpl.*' matches no trainable parameter\n")
    groups = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("param group ")]
    assert [g.split(":")[0] for g in groups] == [
        "param group default, decayed",
        "param group default, not decayed",
        "param group groups[0] (embeddings), decayed",
        "param group groups[1] (*.mlp.*), decayed",
    ]
    assert "lr x0.1, weight decay" in groups[2]


def test_check_counts_what_optim_trainable_picks_and_locates_a_pattern_that_matches_nothing(cli, write_recipe):
    """`recipec check` freezes the meta model as the script does: the count it prints is what the
    memory estimate counts (`explain`), and a layer index past the model's layers is an error at its line."""
    pytest.importorskip("transformers")
    recipe = write_recipe(text='[optim]\ntrainable = {include = ["layers[-1]", "layers[9]"], exclude = ["biases"]}\n')
    result = _check_refuses_then_passes(cli, recipe, "layers[9]", "error: 'layers[9]' matches no parameter (the model has 1 decoder layer)\n")
    counted = re.search(r"^trainable: ([\d,]+) \(", result.stdout + result.stderr, re.M)
    assert counted, result.stdout + result.stderr
    explained = cli("explain", "recipe.toml")
    assert explained.exit_code == 0, explained.stderr
    assert f"{counted[1]} trainable (optim.trainable)" in explained.stdout
