"""tests/forkrun.py: a script run in a fork of the pre-imported server behaves as `python script.py` does,
in what the training tests read of it (exit codes, captured output, argv, paths, environment, atexit),
and falls back to a plain process where it cannot fork; the workers of a forked `accelerate launch` get
the environment torchrun gives them, and a failed worker takes the others down as torchrun does."""

from __future__ import annotations

import json
import os
import time
import subprocess
import sys
from pathlib import Path

import pytest

import forkrun
from conftest import accelerate_launch

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


LAUNCHED = """
import json, os, sys
preloaded = "transformers" in sys.modules  # before this script imports anything
import torch, torch.distributed as dist
out, mode = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo")
rank = dist.get_rank()
total = torch.tensor([rank + 1.0])
dist.all_reduce(total)
seen = {
    "rank": rank, "sum": total.item(), "threads": torch.get_num_threads(), "argv": sys.argv, "path0": sys.path[0],
    "preloaded": preloaded, "pid": os.getpid(), "env": {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
}
with open(os.path.join(out, f"{mode}-{rank}.json"), "w") as f:
    json.dump(seen, f)
os.write(1, f"rank {rank} done\\n".encode())  # one write: the ranks share the launch's stdout
if mode == "die" and rank == 0:
    import signal
    os.kill(os.getpid(), signal.SIGKILL)
if mode in ("die", "hang"):
    import time
    time.sleep(600)  # rank 1 waits until the launcher takes it down
dist.destroy_process_group()
"""

DDP_2_CPU = """compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
machine_rank: 0
main_process_port: 29500
mixed_precision: "no"
num_machines: 1
num_processes: 2
rdzv_backend: static
use_cpu: true
"""

NOT_TORCHRUNS = {"MASTER_PORT", "TORCHELASTIC_ERROR_FILE", "TORCHELASTIC_USE_AGENT_STORE"}
"""What the forked workers' environment may hold otherwise than torchrun's: the port (one per launch), the file of
torch's @record (no worker writes one), and whose rendezvous store it is (the agent's under torchrun, rank 0's)."""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_forked_launch_gives_its_workers_what_torchrun_gives_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "scripts").mkdir()
    script, config = tmp_path / "scripts" / "launched.py", tmp_path / "accelerate_config.yaml"
    script.write_text(LAUNCHED)
    config.write_text(DDP_2_CPU)
    env = dict(os.environ)
    env.pop("ACCELERATE_USE_CPU", None)

    def launch(fork: str, mode: str, *options: str, **kwargs):
        out = tmp_path / f"out-{fork}"
        out.mkdir(exist_ok=True)
        monkeypatch.setenv("RECIPEC_TEST_FORK", fork)
        start = time.monotonic()
        cmd = accelerate_launch(config, *options, str(script), str(out), mode)
        proc = forkrun.run(cmd, env=env, capture_output=True, text=True, timeout=kwargs.get("timeout", 300))
        seen = [json.loads((out / f"{mode}-{rank}.json").read_text()) for rank in (0, 1)]
        return proc, seen, time.monotonic() - start

    plain, torchrun, _ = launch("0", "ok")
    assert plain.returncode == 0, plain.stderr[-3000:]
    launch("1", "first")  # the environment's first use: a plain launch
    forked, workers, _ = launch("1", "ok")
    assert forked.returncode == 0, forked.stderr[-3000:]
    assert sorted(forked.stdout.splitlines()) == ["rank 0 done", "rank 1 done"]
    for want, got in zip(torchrun, workers):
        assert not want["preloaded"] and got["preloaded"], "not forked from the server"
        assert got["sum"] == want["sum"] == 3.0 and got["threads"] == want["threads"] == 1
        assert got["argv"] == [str(script), str(tmp_path / "out-1"), "ok"] and want["argv"] == [str(script), str(tmp_path / "out-0"), "ok"]
        assert got["path0"] == want["path0"] == str(script.parent)
        keys = set(want["env"]) | set(got["env"])
        differ = {k for k in keys if want["env"].get(k) != got["env"].get(k)} - NOT_TORCHRUNS - {"RECIPEC_TEST_FORK"}
        assert not differ, {k: (want["env"].get(k), got["env"].get(k)) for k in differ}
        assert want["env"]["RANK"] == got["env"]["RANK"] == str(want["rank"])
    # rank 0 killed: the launcher takes rank 1 down at once and fails as torchrun's does
    died, _, took = launch("1", "die")
    assert died.returncode == 1 and took < forkrun.SHUTDOWN_S
    assert "ChildFailedError" in died.stderr and "exitcode  : -9" in died.stderr
    # past the timeout: the launcher and its workers are gone, and the server serves the next launch
    with pytest.raises(subprocess.TimeoutExpired):
        launch("1", "hang", timeout=10)
    hung = [json.loads((tmp_path / "out-1" / f"hang-{rank}.json").read_text())["pid"] for rank in (0, 1)]
    deadline = time.monotonic() + 10  # SIGKILL to the launcher's process group; the kernel ends them soon after
    while any(_alive(pid) for pid in hung) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in hung)
    again, workers, _ = launch("1", "ok")
    assert again.returncode == 0 and all(w["preloaded"] for w in workers)
    # a rendezvous other than the static one: accelerate's launcher execs itself, torchrun starts the workers
    c10d, workers, _ = launch("1", "c10d", "--rdzv_backend", "c10d")
    assert c10d.returncode == 0, c10d.stderr[-3000:]
    assert not any(w["preloaded"] for w in workers) and [w["env"]["TORCHELASTIC_USE_AGENT_STORE"] for w in workers] == ["True"] * 2


STARTS = """
import json, os, subprocess, sys
mode, out = sys.argv[1], sys.argv[2]
env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "lib"))
done = subprocess.run([sys.executable, "-m", "probe_mod", mode, out], env=env, cwd=out, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
print(json.dumps({"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "args": done.args, "pid": os.getpid(), "pgid": os.getpgid(0)}))
"""

PROBE_MOD = """
import json, os, sys
print(json.dumps({
    "argv": sys.argv, "name": __name__, "path0": sys.path[0], "lib_first": sys.path[1] == os.environ["PYTHONPATH"],
    "cwd": os.getcwd(), "ppid": os.getppid(), "pgid": os.getpgid(0), "torch_preloaded": "torch" in sys.modules,
}))
print("to stderr", file=sys.stderr)
mode, out = sys.argv[1], sys.argv[2]
with open(os.path.join(out, "module-pid"), "w") as f:
    f.write(str(os.getpid()))
if mode == "exit":
    sys.exit(3)
if mode == "raise":
    raise ValueError("boom")
if mode == "sleep":
    import time
    time.sleep(600)
"""


def test_a_forked_scripts_python_m_run_is_forked_too_and_behaves_as_a_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a forked script starts with `subprocess.run([sys.executable, "-m", ...], stdout=PIPE, stderr=PIPE)` (the
    data stage of train.py) is another child of the server, in the script's process group, and gives the script what a
    plain process gives it: the module as __main__, its argv, the working directory first on sys.path and then
    PYTHONPATH, its output and exit code; a timeout that kills the script kills it too."""
    monkeypatch.setenv("RECIPEC_TEST_FORK", "1")
    scripts = tmp_path / "scripts"
    (scripts / "lib").mkdir(parents=True)
    (scripts / "starts.py").write_text(STARTS)
    (scripts / "lib" / "probe_mod.py").write_text(PROBE_MOD)
    # an environment of its own: its first use is a plain process (os.environ's own may be served
    # already, when RECIPEC_TEST_FORK=1 was set before the tests started)
    env = dict(os.environ, FORKRUN_CASE="module")

    def run(mode: str, **kwargs):
        out = tmp_path / f"out-{mode}"
        out.mkdir(exist_ok=True)
        proc = forkrun.run([sys.executable, str(scripts / "starts.py"), mode, str(out)], env=env, capture_output=True, text=True, **kwargs)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)

    plain = run("ok")  # the environment's first use: a plain process, which starts a plain one
    runs = {mode: run(mode) for mode in ("ok", "exit", "raise")}
    want, got = json.loads(plain["stdout"].splitlines()[0]), json.loads(runs["ok"]["stdout"].splitlines()[0])
    assert not want["torch_preloaded"] and got["torch_preloaded"], "not forked from the server"
    assert want["ppid"] == plain["pid"] and got["ppid"] != runs["ok"]["pid"]  # the server's child, not the script's
    assert got["pgid"] == runs["ok"]["pgid"]
    for key in ("name", "path0", "lib_first"):
        assert got[key] == want[key], key
    assert got["name"] == "__main__" and got["lib_first"] and got["path0"] == got["cwd"] == str(tmp_path / "out-ok")
    assert got["argv"] == [str(scripts / "lib" / "probe_mod.py"), "ok", str(tmp_path / "out-ok")]
    assert want["argv"] == [str(scripts / "lib" / "probe_mod.py"), "ok", str(tmp_path / "out-ok")]
    assert runs["ok"]["rc"] == plain["rc"] == 0 and runs["ok"]["stderr"] == plain["stderr"] == "to stderr\n"
    assert runs["ok"]["args"] == plain["args"]
    assert runs["exit"]["rc"] == 3
    assert runs["raise"]["rc"] == 1 and "ValueError: boom" in runs["raise"]["stderr"] and "Traceback" in runs["raise"]["stderr"]
    # past the script's timeout, its process group is killed: the module's process with it
    with pytest.raises(subprocess.TimeoutExpired):
        run("sleep", timeout=5)
    pid = int((tmp_path / "out-sleep" / "module-pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
    assert json.loads(run("ok")["stdout"].splitlines()[0])["torch_preloaded"]  # and the server serves the next run


LOGS = """
import json, os, subprocess, sys
mode, out = sys.argv[1], sys.argv[2]
env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "lib"))
probe = os.path.join(os.path.dirname(__file__), "lib", "probe_mod.py")
with open(os.path.join(out, "log.txt"), "w") as log:
    log.write("before\\n")
    log.flush()  # subprocess.run does not: what is still buffered would go after the run's output
    try:
        rc = subprocess.run([sys.executable, probe, mode, out], env=env, cwd=out, stdout=log, stderr=subprocess.STDOUT, timeout=5).returncode
    except subprocess.TimeoutExpired:
        rc = "timed out"
print(json.dumps({"rc": rc, "log": open(os.path.join(out, "log.txt")).read(), "pid": os.getpid(), "pgid": os.getpgid(0)}))
"""


def test_a_forked_scripts_python_script_run_into_a_log_file_is_forked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`subprocess.run([sys.executable, "script.py", ...], stdout=log, stderr=subprocess.STDOUT, timeout=...)` in a
    forked script (benchmarks/train_throughput.py's runners under benchmarks/gpu_check.py) is another child of the
    server: the script as __main__, its argv, its directory first on sys.path and then PYTHONPATH, both streams
    into the file's descriptor after what the script wrote, its exit code; past the timeout it is killed and
    TimeoutExpired raised, as a plain process is."""
    monkeypatch.setenv("RECIPEC_TEST_FORK", "1")
    scripts = tmp_path / "scripts"
    (scripts / "lib").mkdir(parents=True)
    (scripts / "logs.py").write_text(LOGS)
    (scripts / "lib" / "probe_mod.py").write_text(PROBE_MOD)
    env = dict(os.environ, FORKRUN_CASE="logs")  # an environment of its own: its first use is a plain process

    def run(mode: str):
        out = tmp_path / f"out-{mode}"
        out.mkdir(exist_ok=True)
        proc = forkrun.run([sys.executable, str(scripts / "logs.py"), mode, str(out)], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout)
        before, first, *rest = result["log"].splitlines()
        assert before == "before"
        return result, json.loads(first), rest

    plain, want, want_rest = run("ok")  # the environment's first use: a plain process, which starts a plain one
    (forked, got, rest), (exited, _, _), (raised, _, raised_rest) = (run(mode) for mode in ("ok", "exit", "raise"))
    assert not want["torch_preloaded"] and got["torch_preloaded"], "not forked from the server"
    assert want["ppid"] == plain["pid"] and got["ppid"] != forked["pid"]  # the server's child, not the script's
    assert want["pgid"] == plain["pgid"] and got["pgid"] == forked["pgid"]
    for key in ("name", "path0", "lib_first", "argv", "cwd"):
        assert got[key] == want[key], key
    assert got["name"] == "__main__" and got["lib_first"] and got["path0"] == str(scripts / "lib")
    assert got["argv"] == [str(scripts / "lib" / "probe_mod.py"), "ok", str(tmp_path / "out-ok")]
    assert rest == want_rest == ["to stderr"]
    assert forked["rc"] == plain["rc"] == 0 and exited["rc"] == 3
    assert raised["rc"] == 1 and raised_rest[:2] == ["to stderr", "Traceback (most recent call last):"] and raised_rest[-1] == "ValueError: boom"
    timed_out, _, _ = run("sleep")
    assert timed_out["rc"] == "timed out"
    pid = int((tmp_path / "out-sleep" / "module-pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
