"""`python script.py ...` in a fork of a process that has already imported the script's libraries.

A one-process training run of the tiny test models takes about 7 s, and most of that is not
training: importing torch, transformers, accelerate, datasets, peft and deepspeed (about 5 s) and
tearing the interpreter down at exit (about 1 s). The suite runs a few hundred such scripts. `run`
takes the argv and keyword arguments of `subprocess.run`; for a Python script run with captured
output and an explicit environment, it asks a server to fork itself and run the script in the child
as `python script.py` would: a new process with its own pid, `__main__` the script, `sys.argv` and
`sys.path[0]` set as the interpreter sets them, the working directory and environment given, stdin
from /dev/null, stdout and stderr captured, the exit code of `sys.exit` or 1 after an uncaught
exception's traceback, non-daemon threads joined and atexit handlers run, -N when killed by signal
N, `TimeoutExpired` past the timeout. Only the module teardown is skipped.

A server is started with the environment it serves (pytest's PYTEST_CURRENT_TEST aside), on the
second run under that environment; a test process keeps the two used last. It imports what every
generated train.py imports, with the environment train.py sets before it imports them (telemetry
off, progress bars of datasets off), and never runs a tensor operation, so no thread pool exists
when it forks: before each fork it checks that it runs no Python thread and no native thread beyond
those its imports started (as a DataLoader forks its workers after them), and refuses otherwise.
Anything else (a refused fork, no captured output, other argv) runs as a plain subprocess, and so
does everything when RECIPEC_TEST_FORK=0 (`.ci/latest` sets it, so the newest releases are tested
on plain processes). Multi-process launches (`accelerate launch`) always start their own processes.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

# what the generated train.py sets (setdefault) before it imports torch: the server has it at import
TRAIN_PY_DEFAULTS = {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}

SERVER = r"""
import atexit, json, os, runpy, signal, sys, threading, time, traceback

replies = os.fdopen(os.dup(1), "w")  # the replies' own channel: what the imports print goes to stderr
os.dup2(2, 1)
defaults = json.loads(sys.argv[1])
for key, value in defaults.items():
    os.environ.setdefault(key, value)
import torch, torch.utils.data, safetensors.torch, tqdm.auto
import accelerate, accelerate.utils, datasets, transformers, peft
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast
try:
    import deepspeed  # accelerate's unwrap_model imports it at the final save wherever it is installed
except ImportError:
    pass
requests = sys.stdin
imported_threads = len(os.listdir("/proc/self/task"))  # native ones of the imports (torch's, pyarrow's jemalloc)


def child(request):
    code = 1
    try:
        replies.close()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
            os.close(out)
        os.close(null)
        sys.stdin = open(0, closefd=False)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        script = request["argv"][0]
        sys.argv = list(request["argv"])
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        code = 0
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as stop:
            if stop.code is None:
                code = 0
            elif isinstance(stop.code, int):
                code = stop.code
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        threading._shutdown()
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code & 0xFF)


for line in requests:
    request = json.loads(line)
    threads = len(os.listdir("/proc/self/task"))
    if threads > imported_threads or threading.active_count() != 1:
        replies.write(json.dumps({"refused": f"{threads} threads"}) + "\n")
        replies.flush()
        continue
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        child(request)
    deadline = None if request["timeout"] is None else time.monotonic() + request["timeout"]
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if deadline is not None and time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            timed_out = True
            status = None
            break
        time.sleep(0.02)
    rc = None if timed_out else os.waitstatus_to_exitcode(status)
    replies.write(json.dumps({"rc": rc, "timed_out": timed_out}) + "\n")
    replies.flush()
"""


def enabled() -> bool:
    value = os.environ.get("RECIPEC_TEST_FORK", "1")
    if value not in ("0", "1"):
        raise ValueError(f"RECIPEC_TEST_FORK={value!r}: 1 forks one-process training scripts (the default), 0 runs them as plain processes")
    return value == "1"


class _Server:
    def __init__(self, env: dict[str, str]) -> None:
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(TRAIN_PY_DEFAULTS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip

    def run(self, argv: list[str], env: dict[str, str], cwd: str, timeout: float | None, out: Path, err: Path) -> dict[str, Any]:
        request = {"argv": argv, "env": env, "cwd": cwd, "timeout": timeout, "stdout": str(out), "stderr": str(err)}
        with self.lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server exited with {self.proc.wait()}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_servers: dict[tuple[tuple[str, str], ...], _Server] = {}  # the two environments used last
_uses: dict[tuple[tuple[str, str], ...], int] = {}


def _server(env: dict[str, str]) -> _Server | None:
    """The server of this environment, started on its second use (a one-off environment is not worth
    one); None before that. pytest's PYTEST_CURRENT_TEST, which names the running test, does not count
    (the child gets it as given)."""
    key = tuple(sorted((k, v) for k, v in env.items() if k != "PYTEST_CURRENT_TEST"))
    _uses[key] = _uses.get(key, 0) + 1
    if key in _servers:
        _servers[key] = _servers.pop(key)  # the most recently used last
    elif _uses[key] >= 2:
        while len(_servers) >= 2:
            _servers.pop(next(iter(_servers))).close()
        _servers[key] = _Server(env)
    return _servers.get(key)


@atexit.register
def _close() -> None:
    for server in _servers.values():
        server.close()


def _forkable(cmd: Any, kwargs: dict[str, Any]) -> bool:
    if not enabled() or not isinstance(cmd, (list, tuple)) or len(cmd) < 2:
        return False
    if cmd[0] != sys.executable or not str(cmd[1]).endswith(".py") or not Path(cmd[1]).is_file():
        return False
    allowed = {"env", "capture_output", "text", "timeout", "check", "cwd"}
    return set(kwargs) <= allowed and bool(kwargs.get("capture_output")) and kwargs.get("env") is not None


def run(cmd: Any, **kwargs: Any) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, **kwargs)`, a forked child of the server where it can be (see above)."""
    if not _forkable(cmd, kwargs):
        return subprocess.run(cmd, **kwargs)
    argv = [str(c) for c in cmd]
    timeout = kwargs.get("timeout")
    server = _server(kwargs["env"])
    if server is None:
        return subprocess.run(cmd, **kwargs)
    with tempfile.TemporaryDirectory(prefix="forkrun-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        reply = server.run(argv[1:], kwargs["env"], str(kwargs.get("cwd") or os.getcwd()), timeout, out, err)
        if "refused" in reply:  # the server cannot fork safely: a plain process instead
            return subprocess.run(cmd, **kwargs)
        stdout, stderr = out.read_bytes(), err.read_bytes()
    if kwargs.get("text"):
        stdout, stderr = stdout.decode(), stderr.decode()
    if reply["timed_out"]:
        raise subprocess.TimeoutExpired(argv, timeout, output=stdout, stderr=stderr)
    proc = subprocess.CompletedProcess(argv, reply["rc"], stdout, stderr)
    if kwargs.get("check"):
        proc.check_returncode()
    return proc
