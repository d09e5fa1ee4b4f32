"""No network unless the recipe names a hub model, no usage reports, no remote code unless asked.

The generated script is started for real up to its first heavy import: a stand-in `torch`
package records the environment at that moment and stops the script. A recipe with nothing
on the hub must have HF_HUB_OFFLINE and HF_DATASETS_OFFLINE set by then, whatever
launch.hub_offline says; every recipe must have the telemetry switches set, before any
Hugging Face library is imported. The CLI is run with its sockets guarded: compiling and
the data stage must not open a network connection or import an experiment tracker.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner

from conftest import REPO, _recipe_data
from recipec.cli import main

TELEMETRY = {"HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
HF_LIBRARIES = ("transformers", "datasets", "huggingface_hub", "tokenizers", "accelerate")

STAND_IN_TORCH = """
import json, os, sys
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
with open(os.environ["RECIPEC_TEST_ENV"], "w") as f:
    json.dump({"env": dict(os.environ), "loaded": loaded}, f)
sys.exit(0)
""" % (HF_LIBRARIES,)


def _clean_env() -> dict[str, str]:
    """The test process's environment without the switches the script is to set itself."""
    drop = set(OFFLINE) | set(TELEMETRY) | {"TRANSFORMERS_OFFLINE"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _start_script(tmp_path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Build the recipe and run its train.py up to `import torch`; what it had set by then."""
    (tmp_path / "recipe.toml").write_text(tomli_w.dumps(data), encoding="utf-8")
    models = tmp_path / "models" / "m"
    models.mkdir(parents=True, exist_ok=True)
    (models / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 128}))
    env = _clean_env()
    env.update(PYTHONPATH=str(REPO))
    subprocess.run(
        [sys.executable, "-m", "recipec", "--no-color", "build", "recipe.toml"], cwd=tmp_path, env=env, check=True, capture_output=True
    )
    stand_in = tmp_path / "stand-in"
    (stand_in / "torch").mkdir(parents=True)
    (stand_in / "torch" / "__init__.py").write_text(STAND_IN_TORCH)
    record = tmp_path / "env.json"
    env = _clean_env()
    env.update(PYTHONPATH=str(stand_in), RECIPEC_TEST_ENV=str(record))
    train_py = tmp_path / "build" / data["recipe"]["name"] / "train.py"
    subprocess.run([sys.executable, str(train_py)], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    return json.loads(record.read_text())


HUB_MODEL = {"model.path": "org/model", "model.init": None, "model.config": None}
LOCAL_MODEL = {"model.path": "./models/m", "model.init": None, "model.config": None}

CASES = {
    # recipe changes, whether the script must run offline
    "from-config, hub_offline false": ({"launch.hub_offline": False}, True),
    "local model, hub_offline false": ({**LOCAL_MODEL, "launch.hub_offline": False}, True),
    "local model and tokenizer, hub_offline false": (
        {**LOCAL_MODEL, "tokenizer.path": "./models/m", "tokenizer.train": None, "launch.hub_offline": False},
        True,
    ),
    "hub model, hub_offline default": ({**HUB_MODEL}, True),
    "hub model, hub_offline false": ({**HUB_MODEL, "launch.hub_offline": False}, False),
    "hub tokenizer, hub_offline false": (
        {**LOCAL_MODEL, "tokenizer.path": "org/tokenizer", "tokenizer.train": None, "launch.hub_offline": False},
        False,
    ),
    "hub dataset, hub_offline default": ({"data.sources": [{"hub": {"repo": "org/data"}}]}, True),
    "hub dataset, hub_offline false": ({"data.sources": [{"hub": {"repo": "org/data"}}], "launch.hub_offline": False}, False),
}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_script_runs_offline_unless_the_recipe_names_the_hub(tmp_path: Path, case: str):
    changes, offline = CASES[case]
    seen = _start_script(tmp_path, _recipe_data(changes))
    env = seen["env"]
    for var in OFFLINE:
        assert (env.get(var) == "1") is offline, f"{var}={env.get(var)!r}"
    for var, value in TELEMETRY.items():
        assert env.get(var) == value, var
    assert seen["loaded"] == [], "the switches must be set before any Hugging Face library is imported"


def test_the_script_leaves_a_setting_of_the_caller_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DO_NOT_TRACK", "0")  # the user's own choice wins: setdefault, not assignment
    data = _recipe_data()
    (tmp_path / "recipe.toml").write_text(tomli_w.dumps(data), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(main, ["build", "recipe.toml"]).exit_code == 0
    text = (tmp_path / "build" / "tiny" / "train.py").read_text()
    assert 'os.environ.setdefault("DO_NOT_TRACK", "1")' in text


# -- trust_remote_code ------------------------------------------------------------------


def _trust_keywords(source: str) -> list[str]:
    """How each `trust_remote_code=` argument in the code is given (ast.unparse)."""
    return [ast.unparse(k.value) for n in ast.walk(ast.parse(source)) for k in getattr(n, "keywords", []) if k.arg == "trust_remote_code"]


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("trust", [False, True])
def test_trust_remote_code_is_passed_only_as_the_recipe_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trust: bool, peft: bool
):
    data = _recipe_data({**HUB_MODEL, "model.trust_remote_code": trust if trust else None}, peft={"method": "lora"} if peft else None)
    (tmp_path / "recipe.toml").write_text(tomli_w.dumps(data), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--no-color", "build", "recipe.toml"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "build" / "tiny" / "train.py").read_text()
    assert f"\ntrust_remote_code = {trust}" in text
    uses = _trust_keywords(text)
    assert uses and set(uses) == {"trust_remote_code"}, uses


def test_nothing_in_recipec_passes_trust_remote_code_true():
    for path in sorted((REPO / "recipec").rglob("*.py")):
        uses = _trust_keywords(path.read_text(encoding="utf-8"))
        assert "True" not in uses, f"{path.relative_to(REPO)} passes trust_remote_code=True"
    for path in sorted((REPO / "templates").glob("*.j2")):  # every branch, rendered or not
        uses = re.findall(r"trust_remote_code=([^,)\s]*)", path.read_text(encoding="utf-8"))
        assert set(uses) <= {"trust_remote_code"}, f"{path.name}: trust_remote_code={uses}"


def test_explain_warns_about_trust_remote_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = _recipe_data({**HUB_MODEL, "model.trust_remote_code": True})
    (tmp_path / "recipe.toml").write_text(tomli_w.dumps(data), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--no-color", "explain", "recipe.toml"])
    assert result.exit_code == 0, result.output
    assert "warning: trust_remote_code runs Python code that comes with the model" in result.stderr
    assert "--> recipe.toml:" in result.stderr
    quiet = CliRunner().invoke(main, ["--no-color", "explain", "recipe.toml", "--set", "model.trust_remote_code=false"])
    assert "trust_remote_code" not in quiet.stderr


# -- the CLI itself ---------------------------------------------------------------------

GUARDED_CLI = r"""
import json, os, socket, sys

attempts = []

def refuse(*args, **kwargs):
    attempts.append(repr(args)[:200])
    raise OSError("network access in a test")

_connect = socket.socket.connect
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        refuse(address)
    return _connect(self, address)

socket.socket.connect = connect
socket.socket.connect_ex = lambda self, address: refuse(address)
socket.getaddrinfo = refuse
socket.create_connection = refuse

from recipec.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code or 0
trackers = ("wandb", "mlflow", "comet_ml", "neptune", "clearml", "sentry_sdk", "posthog", "aim", "dvclive", "swanlab", "trackio", "tensorboard")
heavy = ("torch", "transformers", "datasets", "huggingface_hub", "accelerate")
report = {
    "code": code,
    "attempts": attempts,
    "trackers": sorted({m.split(".")[0] for m in sys.modules} & set(trackers)),
    "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(heavy)),
    "env": {k: os.environ.get(k) for k in %r},
}
with open(os.environ["RECIPEC_TEST_REPORT"], "w") as f:
    json.dump(report, f)
""" % ([*OFFLINE, *TELEMETRY],)


def _guarded(tmp_path: Path, *args: str) -> dict[str, Any]:
    report = tmp_path / "report.json"
    env = _clean_env()
    env.update(PYTHONPATH=str(REPO), RECIPEC_TEST_REPORT=str(report))
    done = subprocess.run(
        [sys.executable, "-c", GUARDED_CLI, "--no-color", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert report.exists(), done.stderr
    return json.loads(report.read_text())


@pytest.mark.parametrize("command", ["validate", "explain", "build"])
def test_compiling_opens_no_connection_and_imports_no_tracker(tmp_path: Path, command: str):
    (tmp_path / "recipe.toml").write_text(tomli_w.dumps(_recipe_data()), encoding="utf-8")
    report = _guarded(tmp_path, command, "recipe.toml")
    assert report["code"] == 0
    assert report["attempts"] == []
    assert report["trackers"] == []
    assert report["heavy"] == [], "compilation is hermetic: no ML library is imported"
    for var, value in TELEMETRY.items():
        assert report["env"][var] == value


def test_the_data_stage_of_a_local_recipe_runs_offline(tmp_path: Path):
    data = _recipe_data({"tokenizer.train.vocab_size": 300, "recipe.name": "offline"})
    data["data"]["sources"][0]["max_documents"] = 20
    (tmp_path / "recipe.toml").write_text(tomli_w.dumps(data), encoding="utf-8")
    report = _guarded(tmp_path, "data", "recipe.toml", "--num-proc", "1")
    assert report["code"] == 0
    assert report["attempts"] == []
    assert report["trackers"] == []
    assert all(report["env"][var] == "1" for var in OFFLINE), report["env"]
