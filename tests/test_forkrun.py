"""tests/forkrun.py: a script run in a fork of the pre-imported server behaves as `python script.py` does,
in what the training tests read of it (exit codes, captured output, argv, paths, environment, atexit),
and falls back to a plain process where it cannot fork."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import forkrun

pytestmark = pytest.mark.slow

SCRIPT = """
import atexit, json, os, sys
atexit.register(lambda: print("atexit ran", flush=True))
print(json.dumps({
    "argv": sys.argv, "file": __file__, "name": __name__, "path0": sys.path[0], "cwd": os.getcwd(),
    "marker": os.environ.get("FORKRUN_MARKER"), "test": os.environ.get("PYTEST_CURRENT_TEST"),
    "pid": os.getpid(), "ppid": os.getppid(), "torch_preloaded": "torch" in sys.modules,
}))
print("to stderr", file=sys.stderr)
mode = sys.argv[1]
if mode == "exit":
    sys.exit(3)
if mode == "raise":
    raise ValueError("boom")
if mode == "kill":
    import signal
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "sleep":
    import time
    time.sleep(60)
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "scripts" / "probe.py"
    path.parent.mkdir()
    path.write_text(SCRIPT)
    return path


def _run(script: Path, mode: str, cwd: Path, **kwargs):
    env = dict(os.environ, FORKRUN_MARKER="yes")
    return forkrun.run([sys.executable, str(script), mode], env=env, cwd=cwd, capture_output=True, text=True, **kwargs)


def test_a_forked_script_behaves_as_a_process_of_its_own(script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECIPEC_TEST_FORK", "1")
    first = _run(script, "ok", tmp_path)  # the environment's first use: a plain process
    assert not json.loads(first.stdout.splitlines()[0])["torch_preloaded"]
    runs = {mode: _run(script, mode, tmp_path) for mode in ("ok", "exit", "raise", "kill")}
    seen = json.loads(runs["ok"].stdout.splitlines()[0])
    assert seen["torch_preloaded"], "not forked from the server"
    assert seen["ppid"] != os.getpid() and seen["pid"] != os.getpid()
    assert seen["argv"] == [str(script), "ok"] and seen["file"] == str(script) and seen["name"] == "__main__"
    assert seen["path0"] == str(script.parent) and seen["cwd"] == str(tmp_path)
    assert seen["marker"] == "yes" and seen["test"] == os.environ["PYTEST_CURRENT_TEST"]
    assert runs["ok"].returncode == 0 and runs["ok"].stdout.splitlines()[-1] == "atexit ran"
    assert runs["ok"].stderr == "to stderr\n"
    assert runs["exit"].returncode == 3 and "atexit ran" in runs["exit"].stdout
    assert runs["raise"].returncode == 1 and "ValueError: boom" in runs["raise"].stderr and "Traceback" in runs["raise"].stderr
    assert runs["kill"].returncode == -9 and "atexit ran" not in runs["kill"].stdout
    with pytest.raises(subprocess.CalledProcessError):
        forkrun.run([sys.executable, str(script), "exit"], env=dict(os.environ, FORKRUN_MARKER="yes"), capture_output=True, check=True)
    with pytest.raises(subprocess.TimeoutExpired):
        _run(script, "sleep", tmp_path, timeout=2)
    # the server is still there for the next run after a timeout
    assert json.loads(_run(script, "ok", tmp_path).stdout.splitlines()[0])["torch_preloaded"]


def test_without_forking_every_run_is_a_plain_process(script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECIPEC_TEST_FORK", "0")
    for _ in range(2):
        proc = _run(script, "ok", tmp_path)
        seen = json.loads(proc.stdout.splitlines()[0])
        assert not seen["torch_preloaded"] and seen["ppid"] == os.getpid()
