"""Names and paths cannot escape their directories or inject into launch.sh and slurm.sbatch.

recipe.name names build/<name> and runs/<name>, so it is held to a safe alphabet and a
hostile one is refused with a located error before anything is written. Every value in the
two shell scripts goes through `shell_word`; the scripts are run here under bash, with a
fake `accelerate`, `srun`, `scontrol` and `python` first on PATH that record their
arguments, from a project directory whose name is itself hostile, with hostile values in
the environment variables the scripts read. Nothing may run but the recorded command, and
every value must arrive as one intact argument.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import nodes

from conftest import _recipe_data
from recipec.cli import main
from recipec.render import comment, environment, shell_word

PWNED = "PWNED"
SHELL_PAYLOAD = f"$(touch {PWNED}) `touch {PWNED}`; touch {PWNED} && echo 'q' \"d\" \\ -x"

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _pwned(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob(f"*{PWNED}*") if PWNED in p.name and p.is_file()]


# -- the templates ----------------------------------------------------------------------


@pytest.mark.parametrize("template", ["launch.sh.j2", "slurm.sbatch.j2"])
def test_every_value_in_a_shell_template_goes_through_shell_word(template: str):
    env = environment()
    tree = env.parse(env.loader.get_source(env, template)[0])
    values = [n for output in tree.find_all(nodes.Output) for n in output.nodes if not isinstance(n, nodes.TemplateData)]
    assert values, "the template substitutes nothing?"
    bare = [n for n in values if not (isinstance(n, nodes.Filter) and n.name == "sh" and not isinstance(n.node, nodes.Filter))]
    assert not bare, f"{template}: values not written through `| sh`: {[str(n) for n in bare]}"


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\u2028b", "a\x1b[0mb"])
def test_shell_word_refuses_what_would_end_a_line(value: str):
    with pytest.raises(ValueError):
        shell_word(value)


@pytest.mark.parametrize("value", [SHELL_PAYLOAD, "-rf", "", "~root", "a b", "ü"])
def test_shell_word_is_one_word_to_bash(value: str):
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {shell_word(value)}"], capture_output=True, check=True).stdout
    assert out == value.encode() + b"\0"


def test_comment_is_one_printable_line():
    text = comment("a\nb\r\x00c\u2028d\u202ee\x7f")
    assert "\n" not in text and "\r" not in text and text.isprintable()
    assert text == "a b \\x00c d\\u202ee\\x7f"


# -- recipe.name ------------------------------------------------------------------------

HOSTILE_NAMES = [
    "..",
    ".",
    "../escape",
    "a/../../escape",
    "/abs",
    "a/b",
    "a\\b",
    ".hidden",
    "-rf",
    "--help",
    "~root",
    "a b",
    "a\nb",
    "a;b",
    "a'b",
    'a"b',
    f"$(touch {PWNED})",
    f"`touch {PWNED}`",
    "ü",
    "",
    "x" * 101,
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_a_hostile_recipe_name_is_refused_before_anything_is_written(tmp_path: Path, monkeypatch, name: str):
    project = tmp_path / "project"
    project.mkdir()
    (project / "recipe.toml").write_text(tomli_w.dumps(_recipe_data({"recipe.name": name})), encoding="utf-8")
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["--no-color", "build", "recipe.toml"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "--> recipe.toml:2:" in result.stderr, result.stderr  # `name = ...` is line 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["project", "recipe.toml"]


def test_the_longest_name_builds_inside_build(tmp_path: Path, monkeypatch):
    name = "n" + "-._" * 33  # 100 characters, every allowed punctuation
    (tmp_path / "recipe.toml").write_text(tomli_w.dumps(_recipe_data({"recipe.name": name})), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--no-color", "build", "recipe.toml"])
    assert result.exit_code == 0, result.output
    # the build, and the drawing cache of schedule.png (recipec.compiler.PLOT_CACHE)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".recipec", "build", "recipe.toml"]
    assert [p.name for p in (tmp_path / ".recipec").iterdir()] == ["plots"]
    assert [p.name for p in (tmp_path / "build").iterdir()] == [name]


@pytest.mark.parametrize("build_dir", ["build/$(touch PWNED)", "build/a b", "build/a;b", "build/`x`", "build/a\nb"])
def test_a_hostile_build_directory_is_refused(tmp_path: Path, monkeypatch, build_dir: str):
    (tmp_path / "recipe.toml").write_text(tomli_w.dumps(_recipe_data()), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--no-color", "build", "recipe.toml", "-o", build_dir])
    assert result.exit_code == 2, result.output
    assert "build directory" in result.stderr and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.toml"]


def test_a_build_writes_only_its_build_directory(tmp_path: Path, monkeypatch):
    """Hostile but valid strings in every path a recipe names: the build writes build/<name>/ only."""
    data = _recipe_data(
        {
            "recipe.description": SHELL_PAYLOAD,
            "output.dir": f"runs/{SHELL_PAYLOAD}",
            "data.cache_dir": f".cache/{SHELL_PAYLOAD}",
        }
    )
    (tmp_path / "recipe.toml").write_text(tomli_w.dumps(data), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--no-color", "build", "recipe.toml"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [".recipec", "build", "recipe.toml"]  # + the plot cache
    assert [p.name for p in (tmp_path / ".recipec").iterdir()] == ["plots"]
    assert [p.name for p in (tmp_path / "build").iterdir()] == ["tiny"]
    assert not _pwned(tmp_path)


# -- running the scripts ----------------------------------------------------------------

RECORDER = """#!{python}
import json, os, sys
with open(os.environ["RECIPEC_TEST_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps({{"cmd": os.path.basename(sys.argv[0]), "argv": sys.argv[1:],
                          "nvme": os.environ.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_NVME_PATH")}}) + "\\n")
"""

FAKE_SRUN = """#!/usr/bin/env bash
# srun's own options, then the command it runs on every node (here: once, as node 0)
while [[ "$1" == --* ]]; do shift; done
exec "$@"
"""

FAKE_SCONTROL = """#!/usr/bin/env bash
printf '%s\\n' 'node$(touch PWNED)`touch PWNED`' 'node-2'
"""


def _fake_bin(root: Path) -> Path:
    """accelerate and python that record their argv and start nothing; srun and scontrol for SLURM."""
    fake = root / "fake-bin"
    fake.mkdir()
    for name, text in {
        "accelerate": RECORDER.format(python=sys.executable),
        "python": RECORDER.format(python=sys.executable),
        "python3": RECORDER.format(python=sys.executable),
        "srun": FAKE_SRUN,
        "scontrol": FAKE_SCONTROL,
    }.items():
        (fake / name).write_text(text)
        (fake / name).chmod(stat.S_IRWXU)
    return fake


def _records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []


HOSTILE_PROJECT = f"proj {SHELL_PAYLOAD}"
NVME_PATH = "/nvme:~/-x@b+c"  # as odd as launch.deepspeed.nvme_path allows: unquoted, bash would expand :~/ in an assignment


@pytest.fixture
def hostile_build(tmp_path: Path, monkeypatch) -> dict[str, Path]:
    """A two-machine DeepSpeed build (rank and rendezvous from the environment, NVMe offload)
    in a project directory with a hostile name, built with an odd but valid -o."""
    project = tmp_path / HOSTILE_PROJECT / "-p"
    project.mkdir(parents=True)
    data = _recipe_data(
        launch={
            "num_machines": 2,
            "num_processes": 2,
            "machine_rank": "env",
            "main_process_ip": "env",
            "strategy": "deepspeed",
            "deepspeed": {"zero_stage": 3, "offload_params": "nvme", "nvme_path": NVME_PATH},
        }
    )
    (project / "recipe.toml").write_text(tomli_w.dumps(data), encoding="utf-8")
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["--no-color", "build", "recipe.toml", "-o", "build/x:~/-d@c+"])
    assert result.exit_code == 0, result.output
    build = project / "build" / "x:~" / "-d@c+"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return {"root": tmp_path, "project": project, "build": build, "cwd": cwd, "bin": _fake_bin(tmp_path)}


def _env(paths: dict[str, Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{paths['bin']}{os.pathsep}{env.get('PATH', '')}", RECIPEC_TEST_LOG=str(paths["root"] / "argv.log"))
    env.update(extra)
    return env


@needs_bash
@pytest.mark.parametrize("script", ["launch.sh", "slurm.sbatch"])
def test_the_scripts_are_valid_bash(hostile_build: dict[str, Path], script: str):
    subprocess.run(["bash", "-n", str(hostile_build["build"] / script)], check=True)


@needs_bash
def test_launch_sh_passes_every_value_as_one_argument(hostile_build: dict[str, Path]):
    paths, build = hostile_build, hostile_build["build"]
    rank, addr = f"1;touch {PWNED}", f"$(touch {PWNED})`touch {PWNED}` x"
    env = _env(paths, MACHINE_RANK=rank, MASTER_ADDR=addr)
    subprocess.run(["bash", str(build / "launch.sh")], cwd=paths["cwd"], env=env, check=True, timeout=60)
    (record,) = _records(paths["root"] / "argv.log")
    assert record["cmd"] == "accelerate"
    assert record["argv"] == [
        "launch",
        "--config_file",
        f"{build.resolve()}/accelerate_config.yaml",
        "--machine_rank",
        rank,
        "--main_process_ip",
        addr,
        f"{build.resolve()}/train.py",
    ]
    assert record["nvme"] == NVME_PATH
    assert not _pwned(paths["root"])


@needs_bash
def test_slurm_sbatch_passes_every_value_as_one_argument(hostile_build: dict[str, Path]):
    paths = hostile_build
    env = _env(
        paths,
        SLURM_SUBMIT_DIR=str(paths["project"]),
        SLURM_JOB_NUM_NODES="2",
        SLURM_JOB_NODELIST="node[1-2]",
        SLURM_NODEID="0",
    )
    # sbatch runs a copy from its spool directory: run it from elsewhere, as a copy
    spool = paths["root"] / "spool"
    spool.mkdir()
    shutil.copy(paths["build"] / "slurm.sbatch", spool / "slurm_script")
    subprocess.run(["bash", str(spool / "slurm_script")], cwd=paths["cwd"], env=env, check=True, timeout=60)
    (record,) = _records(paths["root"] / "argv.log")
    build = f"{paths['project']}/build/x:~/-d@c+"
    assert record["cmd"] == "accelerate"
    assert record["argv"] == [
        "launch",
        "--config_file",
        f"{build}/accelerate_config.yaml",
        "--machine_rank",
        "0",
        "--main_process_ip",
        f"node$(touch {PWNED})`touch {PWNED}`",
        "--main_process_port",
        "29500",
        "--num_machines",
        "2",
        "--num_processes",
        "2",
        f"{build}/train.py",
    ]
    assert record["nvme"] == NVME_PATH
    assert not _pwned(paths["root"])


@needs_bash
def test_slurm_sbatch_submitted_from_elsewhere_says_where_to_submit_from(hostile_build: dict[str, Path]):
    paths = hostile_build
    env = _env(paths, SLURM_SUBMIT_DIR=str(paths["cwd"]), SLURM_JOB_NUM_NODES="2", SLURM_NODEID="0")
    done = subprocess.run(
        ["bash", str(paths["build"] / "slurm.sbatch")], cwd=paths["cwd"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "sbatch build/x:~/-d@c+/slurm.sbatch" in done.stderr
    assert _records(paths["root"] / "argv.log") == []
    assert not _pwned(paths["root"])


@needs_bash
@settings(max_examples=60, deadline=None)
@given(value=st.text(max_size=20))
def test_shell_word_of_any_text_is_one_word_or_refused(value: str):
    if not value.isprintable():
        with pytest.raises(ValueError):
            shell_word(value)
        return
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {shell_word(value)}"], capture_output=True, check=True).stdout
    assert out == value.encode() + b"\0"
