"""`python script.py ...` and `accelerate launch` in forks of a process that has already imported their libraries.

A one-process training run of the tiny test models takes about 7 s, and most of that is not
training: importing torch, transformers, accelerate, datasets, peft and deepspeed (about 5 s) and
tearing the interpreter down at exit (about 1 s). A two-process launch pays the imports three times
(the launcher and each worker). The suite runs a few hundred such scripts and about a hundred launches.
`run` takes the argv and keyword arguments of `subprocess.run`; with captured output and an explicit
environment, it asks a server to fork itself and run the command in the child:

- `python script.py ...` as the interpreter would run it: a new process with its own pid and process
  group, `__main__` the script, `sys.argv` and `sys.path[0]` set as the interpreter sets them, the
  working directory and environment given, stdin from /dev/null, stdout and stderr captured, the
  exit code of `sys.exit` or 1 after an uncaught exception's traceback, non-daemon threads joined and
  atexit handlers run, -N when killed by signal N, `TimeoutExpired` past the timeout (the child's
  process group killed). Only the module teardown is skipped.
- `python -m accelerate.commands.launch ...` (conftest.accelerate_launch): accelerate's own launcher
  runs in the child (its arguments, config file and the environment it prepares for DeepSpeed, FSDP
  or DDP), and only torchrun's part is replaced: on one machine with the static rendezvous, the
  child forks the workers itself, each with the environment torchrun's agent gives it (RANK,
  LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT, TORCHELASTIC_*, OMP_NUM_THREADS=1 applied as a fresh
  process's OpenMP runtime applies it) and runs the script in each as above. Rank 0 holds the
  rendezvous store (env://) instead of the agent. A failed worker takes the others down (SIGTERM,
  SIGKILL after 30 s, as the agent does) and the launch fails with torch's ChildFailedError report,
  exit code 1. Several machines, another rendezvous or a module instead of a script: the child
  execs a plain `accelerate launch`.

- `python -m MODULE ...` or `python script.py ...` that such a child starts itself with `subprocess.run`,
  both output streams piped (the training script's data stage, recipec_runtime/stage.py's
  run_in_subprocess) or both into one open file (stdout a file, stderr=subprocess.STDOUT: the runners of
  benchmarks/train_throughput.py), with or without a timeout: the child asks the server, over a Unix
  socket, to fork another child for it, which runs the module as `python -m` would (`__main__` the
  module, `sys.argv`, `sys.path[0]` the working directory, then the entries of the PYTHONPATH it was
  given) or the script as above, in the asking child's process group (a timeout that kills the run
  kills it too); past its own timeout it is killed (SIGKILL, as `subprocess.run` kills its process) and
  `TimeoutExpired` raised. Anything else a child starts (another command, stdin, other streams) is a
  plain subprocess.

A server is started with the environment it serves (pytest's PYTEST_CURRENT_TEST aside), on the
second run under that environment; a test process keeps the SERVERS_KEPT used last. It imports what every
generated train.py imports and accelerate's launcher, with the environment train.py sets before it
imports them (telemetry off, progress bars of datasets off), and never runs a tensor operation, so no
thread pool exists when it forks: before each fork (the server's, and the launcher's of its workers)
it checks that it runs no Python thread and no native thread beyond those its imports started (as a
DataLoader forks its workers after them), and refuses otherwise. Anything else (a refused fork, no
captured output, other argv) runs as a plain subprocess, and so does everything when
RECIPEC_TEST_FORK=0 (`.ci/latest` sets it, so the newest releases are tested on plain processes,
launched by torchrun's own agent).
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

PRELOADED = (
    "torch", "torch.utils.data", "torch.distributed.run", "safetensors.torch", "tqdm.auto", "accelerate", "accelerate.utils",
    "accelerate.commands.launch", "datasets", "transformers", "peft",
)  # fmt: skip
"""What every generated train.py imports (and accelerate's launcher), imported by the server before it forks."""

LAUNCH = ("-m", "accelerate.commands.launch")
"""`python -m accelerate.commands.launch ...`: the launcher tests/conftest.py's accelerate_launch builds."""

NESTED_KWARGS = {"env", "stdout", "stderr", "capture_output", "text", "cwd", "check", "timeout"}
"""The keyword arguments of a child's `subprocess.run` that the server can serve (see _nested_streams)."""

_plain_run = subprocess.run
_nested_socket: str | None = None  # the server's socket for the runs its children start (set in the server)

SERVERS_KEPT = 4
"""Servers a test process keeps, the most recently used (about 0.6 GB each): the files' own environments (a
hub cache of the test's, the crash tests' unbuffered output) come and go between the runs of the common one,
and a server closed to make room for them is started again at its next run (its imports paid again)."""

SHUTDOWN_S = 30.0
"""How long the workers of a failed launch get after SIGTERM before SIGKILL, as torchrun's agent gives them."""


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _exit_code(stop: SystemExit) -> int:
    """The exit status the interpreter gives a SystemExit: its int, 0 for None, else 1 with the message on stderr."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1


def _as_main(run: Any) -> int:
    """run() as the interpreter runs a program: the exit code of its SystemExit, or 1 after an uncaught exception's
    traceback; then non-daemon threads joined and atexit handlers run."""
    code = 0
    try:
        run()
    except SystemExit as stop:
        code = _exit_code(stop)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    return code


def _script(argv: list[str], nested: bool = False) -> int:
    """Run argv[0] as `python argv...` runs it, in this process: its exit code. A nested run's environment is not
    the server's: the entries of its PYTHONPATH follow the script's directory on sys.path."""
    import runpy

    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
    if nested:
        sys.path[1:1] = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return _as_main(lambda: runpy.run_path(argv[0], run_name="__main__"))


def _module(argv: list[str]) -> int:
    """Run `python -m argv[0] argv[1:]...` in this process: its exit code."""
    import runpy

    sys.argv = list(argv)  # runpy puts the module's file in sys.argv[0], as `python -m` does
    sys.path[0] = os.getcwd()
    sys.path[1:1] = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return _as_main(lambda: runpy.run_module(argv[0], run_name="__main__", alter_sys=True))


def _nested_streams(kwargs: dict[str, Any]) -> str | None:
    """"piped": stdout and stderr piped; "file": stdout an open file and stderr=subprocess.STDOUT; else None."""
    if kwargs.get("capture_output") or (kwargs.get("stdout") == subprocess.PIPE and kwargs.get("stderr") == subprocess.PIPE):
        return "piped"
    out = kwargs.get("stdout")
    if kwargs.get("stderr") == subprocess.STDOUT and hasattr(out, "flush") and isinstance(getattr(out, "name", None), str):
        return "file" if os.path.isfile(out.name) else None
    return None


def _nested_forkable(cmd: Any, kwargs: dict[str, Any]) -> str | None:
    """For `python -m MODULE ...` or `python script.py ...` with nothing else the server cannot give it: how its
    output streams go (_nested_streams); None for anything else."""
    if _nested_socket is None or not isinstance(cmd, (list, tuple)) or len(cmd) < 2 or cmd[0] != sys.executable:
        return None
    module = cmd[1] == "-m" and len(cmd) >= 3
    script = str(cmd[1]).endswith(".py") and os.path.isfile(os.path.join(kwargs.get("cwd") or "", cmd[1]))
    return _nested_streams(kwargs) if (module or script) and set(kwargs) <= NESTED_KWARGS else None


class _Lines:
    """The reply lines of a socket, read with recv (a timeout leaves what has come in buffered)."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.buffer = conn, b""

    def readline(self) -> str:
        while b"\n" not in self.buffer:
            chunk = self.conn.recv(4096)
            if not chunk:
                break
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


def _nested_run(cmd: Any, *args: Any, **kwargs: Any) -> subprocess.CompletedProcess:
    """`subprocess.run` in a forked child: `python -m MODULE ...` or `python script.py ...` as another child of
    the server (see above)."""
    import signal
    import socket

    streams = None if args else _nested_forkable(cmd, kwargs)
    if streams is None:
        return _plain_run(cmd, *args, **kwargs)
    argv = [str(c) for c in cmd]
    module = argv[1] == "-m"
    env = dict(os.environ) if kwargs.get("env") is None else dict(kwargs["env"])
    timeout = kwargs.get("timeout")
    to_file = streams == "file"
    with tempfile.TemporaryDirectory(prefix="forkrun-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        request = {
            "nested": True, "module": module, "launch": False, "argv": argv[2:] if module else argv[1:], "env": env,
            "cwd": str(kwargs.get("cwd") or os.getcwd()), "stdout": str(out), "stderr": str(err), "pgid": os.getpgid(0),
        }  # fmt: skip
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(_nested_socket)
            payload = (json.dumps(request) + "\n").encode()
            # into a file: its descriptor itself goes to the server (SCM_RIGHTS), so the run writes where a process
            # that inherited it would (the same offset, shared with this one)
            sent = socket.send_fds(conn, [payload], [kwargs["stdout"].fileno()]) if to_file else 0
            conn.sendall(payload[sent:])
            lines = _Lines(conn)
            started = json.loads(lines.readline() or '{"refused": "no reply"}')  # {"pid": ...} once forked
            if "refused" in started:
                return _plain_run(cmd, **kwargs)
            conn.settimeout(timeout)
            try:
                line = lines.readline()
                timed_out = False
            except TimeoutError:
                try:
                    os.kill(started["pid"], signal.SIGKILL)
                except ProcessLookupError:  # it ended, and the server reaped it, just now
                    pass
                conn.settimeout(None)
                line = lines.readline()  # the server's answer once it has reaped the run
                timed_out = True
            if not line:
                raise RuntimeError(f"the fork server ended before the run it forked for {argv} had")
            reply = json.loads(line)
        if to_file:
            stdout = stderr = None
        else:
            stdout, stderr = out.read_bytes(), err.read_bytes()
            if kwargs.get("text"):
                stdout, stderr = stdout.decode(), stderr.decode()
    if timed_out:
        raise subprocess.TimeoutExpired(argv, timeout, output=stdout, stderr=stderr)
    proc = subprocess.CompletedProcess(argv, reply["rc"], stdout, stderr)
    if kwargs.get("check"):
        proc.check_returncode()
    return proc


def _exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code & 0xFF)


def _workers(args: Any, argv: list[str], env: dict[str, str], imported_threads: int) -> None:
    """torch.distributed.run.run in the launcher: one machine's workers forked from it, each with the environment
    torchrun's agent gives it (LocalElasticAgent._start_workers). The rendezvous store is rank 0's (env://), not
    the agent's. A worker that fails takes the others down (SIGTERM, then SIGKILL after SHUTDOWN_S) and raises
    torch's ChildFailedError, which accelerate's launcher reports as torchrun's. Several machines, another
    rendezvous backend or anything but a Python script: accelerate's launcher as a plain process instead."""
    import signal
    import time

    import torch
    import torch.distributed.run as distrib_run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    config, cmd, cmd_args = distrib_run.config_from_args(args)
    plain = config.max_nodes > 1 or config.rdzv_backend != "static" or cmd != sys.executable
    plain = plain or cmd_args[:1] != ["-u"] or cmd_args[1:2] == ["-m"] or not str(cmd_args[1]).endswith(".py")
    if plain or _threads() > imported_threads or threading.active_count() != 1:
        os.execve(sys.executable, [sys.executable, *LAUNCH, *argv], env)
    script_argv = [str(a) for a in cmd_args[1:]]
    addr, port = config.rdzv_endpoint.rsplit(":", 1)
    n = config.nproc_per_node
    common = {
        "GROUP_RANK": "0", "ROLE_NAME": config.role, "LOCAL_WORLD_SIZE": str(n), "WORLD_SIZE": str(n),
        "GROUP_WORLD_SIZE": "1", "ROLE_WORLD_SIZE": str(n), "MASTER_ADDR": addr, "MASTER_PORT": port,
        "TORCHELASTIC_RESTART_COUNT": "0", "TORCHELASTIC_MAX_RESTARTS": str(config.max_restarts),
        "TORCHELASTIC_RUN_ID": config.run_id, "TORCHELASTIC_USE_AGENT_STORE": "False",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": os.getenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1"),
        "TORCHELASTIC_SIGNALS_TO_HANDLE": config.signals_to_handle,
    }  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    pids = {}
    for rank in range(n):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.environ.update(common, RANK=str(rank), ROLE_RANK=str(rank), LOCAL_RANK=str(rank))
                if "OMP_NUM_THREADS" in os.environ:  # what the OpenMP runtime of a fresh process reads at its start
                    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
                code = _script(script_argv)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                _exit(code)
        pids[pid] = rank
    failure = None
    deadline = None
    while pids:
        if deadline is None:
            pid, status = os.waitpid(-1, 0)
        else:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if time.monotonic() > deadline:
                    for other in pids:
                        os.kill(other, signal.SIGKILL)
                    deadline = float("inf")
                time.sleep(0.02)
                continue
        rank = pids.pop(pid, None)
        if rank is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and failure is None:
            failure = ProcessFailure(local_rank=rank, pid=pid, exitcode=code, error_file="")
            for other in pids:
                os.kill(other, signal.SIGTERM)
            deadline = time.monotonic() + SHUTDOWN_S
    if failure is not None:
        raise ChildFailedError(name=script_argv[0], failures={failure.local_rank: failure})


def _launch(argv: list[str], env: dict[str, str], imported_threads: int) -> int:
    """`python -m accelerate.commands.launch argv...` in this process: accelerate's own launcher (its arguments,
    config file and the environment it prepares), with torchrun's part done by _workers."""
    import torch.distributed.run as distrib_run
    from accelerate.commands.launch import launch_command, launch_command_parser

    distrib_run.run = lambda args: _workers(args, argv, env, imported_threads)
    sys.argv = [LAUNCH[1], *argv]
    code = 0
    try:
        launch_command(launch_command_parser().parse_args(argv))
    except SystemExit as stop:
        code = _exit_code(stop)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    return code


def _child(request: dict[str, Any], closed: list[Any], imported_threads: int) -> None:
    import signal

    code = 1
    try:
        # its own process group, which a timeout kills whole (a launch's workers with it); a `python -m` run of a
        # child joins that child's group
        os.setpgid(0, request.get("pgid", 0))
        for channel in closed:  # the server's: the replies, its socket and the connections of other runs
            channel.close()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        if request.get("fd") is not None:  # both into the descriptor a nested run's asking child sent
            os.dup2(request["fd"], 1)
            os.dup2(request["fd"], 2)
            os.close(request["fd"])
        else:
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
        subprocess.run = _nested_run  # what the script starts with `python -m` is forked from the server too
        if request.get("module"):
            code = _module(request["argv"])
        elif request["launch"]:
            code = _launch(request["argv"], request["env"], imported_threads)
        else:
            code = _script(request["argv"], nested=bool(request.get("nested")))
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        _exit(code)


def skip_shared_memory_collective() -> None:
    """DeepSpeed's CPU accelerator compiles its shared-memory all-reduce (a torch JIT extension: about 50 s
    on two cores, once per test run, with every other DeepSpeed process of the run waiting on its lock)
    when a process first starts deepspeed.comm. Only `inference_all_reduce` calls it (DeepSpeed inference's
    tensor parallelism on CPUs), which no training run reaches: ZeRO and sequence parallelism use
    torch.distributed's collectives. Marked not compatible, the op is not built and that call falls back to
    torch.distributed's all_reduce. The forked runs skip it, and so do the DeepSpeed processes of
    tests/runtime/test_checkpoint.py and tests/test_launch_configs.py's mesh; the plain training runs
    (RECIPEC_TEST_FORK=0, .ci/latest) still build it."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _serve(defaults: dict[str, str]) -> None:
    """The server: `python forkrun.py DEFAULTS-JSON`, requests on stdin, a reply line each on stdout."""
    import signal
    import time

    replies = os.fdopen(os.dup(1), "w")  # the replies' own channel: what the imports print goes to stderr
    os.dup2(2, 1)
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    import importlib

    for module in PRELOADED:
        importlib.import_module(module)
    transformers = sys.modules["transformers"]
    for name in ("AutoConfig", "AutoModelForCausalLM", "AutoTokenizer", "LlamaForCausalLM", "PreTrainedTokenizerFast"):
        getattr(transformers, name)  # the lazy modules behind them
    try:
        importlib.import_module("deepspeed")  # a DeepSpeed run's imports (the others no longer import it: recipec_runtime/unwrap.py)
        # what deepspeed.initialize imports to check the optimizer: its Muon, whose module-level torch.compile imports
        # dynamo (about 1.5 s a process)
        importlib.import_module("deepspeed.runtime.zero.muon.muon_optimizer")
        skip_shared_memory_collective()
    except ImportError:
        pass
    imported_threads = _threads()  # native ones of the imports (torch's, pyarrow's jemalloc)
    global _nested_socket
    import shutil
    import socket

    where = tempfile.mkdtemp(prefix="forkrun-")
    _nested_socket = os.path.join(where, "socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(_nested_socket)
    listener.listen(16)
    listener.setblocking(False)
    nested: dict[int, Any] = {}  # pid of a `python -m` run a child asked for -> that child's connection

    def fork(request: dict[str, Any], closed: list[Any]) -> int | None:
        """A child running the request; None when this process runs a thread its imports did not start."""
        if _threads() > imported_threads or threading.active_count() != 1:
            return None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, closed, imported_threads)
        try:
            os.setpgid(pid, request.get("pgid") or pid)  # as the child does itself: whichever of the two runs first
        except OSError:  # the child has already joined it, or has exec'd (a plain launch) or ended
            pass
        return pid

    def serve_nested() -> None:
        """Fork the runs children ask for (their pid the first answer); answer each child whose run has ended."""
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                break
            conn.setblocking(True)
            data, fds = b"", []
            while not data.endswith(b"\n"):
                chunk, received, _, _ = socket.recv_fds(conn, 1 << 16, 1)
                if not chunk:
                    break
                data, fds = data + chunk, fds + received
            request = json.loads(data)
            request["fd"] = fds[0] if fds else None
            pid = fork(request, [replies, listener, conn, *nested.values()])
            for fd in fds:  # the child has its own copy
                os.close(fd)
            if pid is None:
                conn.sendall(b'{"refused": "threads"}\n')
                conn.close()
                continue
            try:
                conn.sendall((json.dumps({"pid": pid}) + "\n").encode())  # the asking child kills it past a timeout
            except OSError:  # the child that asked is gone
                pass
            nested[pid] = conn
        for pid in list(nested):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                conn = nested.pop(pid)
                try:
                    conn.sendall((json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n").encode())
                except OSError:  # the child that asked is gone (killed with its process group)
                    pass
                conn.close()

    for line in sys.stdin:
        request = json.loads(line)
        pid = fork(request, [replies, listener])
        if pid is None:
            replies.write(json.dumps({"refused": f"{_threads()} threads"}) + "\n")
            replies.flush()
            continue
        deadline = None if request["timeout"] is None else time.monotonic() + request["timeout"]
        timed_out = False
        while True:
            serve_nested()
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if deadline is not None and time.monotonic() > deadline:
                try:
                    os.killpg(pid, signal.SIGKILL)  # the `python -m` runs it asked for with it
                except ProcessLookupError:  # every process of the group ended just now
                    pass
                os.waitpid(pid, 0)
                timed_out = True
                status = None
                break
            time.sleep(0.02)
        while nested:  # what it asked for and left running (it died without waiting): let them end
            serve_nested()
            time.sleep(0.02)
        rc = None if timed_out else os.waitstatus_to_exitcode(status)
        replies.write(json.dumps({"rc": rc, "timed_out": timed_out}) + "\n")
        replies.flush()
    listener.close()
    shutil.rmtree(where, ignore_errors=True)


def enabled() -> bool:
    value = os.environ.get("RECIPEC_TEST_FORK", "1")
    if value not in ("0", "1"):
        raise ValueError(f"RECIPEC_TEST_FORK={value!r}: 1 forks one-process training scripts and one-machine launches (the default), 0 runs them as plain processes")
    return value == "1"


class _Server:
    def __init__(self, env: dict[str, str]) -> None:
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, json.dumps(TRAIN_PY_DEFAULTS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip

    def run(self, launch: bool, argv: list[str], env: dict[str, str], cwd: str, timeout: float | None, out: Path, err: Path) -> dict[str, Any]:
        request = {"launch": launch, "argv": argv, "env": env, "cwd": cwd, "timeout": timeout, "stdout": str(out), "stderr": str(err)}
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


def _server(env: dict[str, str], at_once: bool = False) -> _Server | None:
    """The server of this environment, started on its second use (a one-off environment is not worth
    one) or on the first `at_once`; None before that. pytest's PYTEST_CURRENT_TEST, which names the
    running test, does not count (the child gets it as given)."""
    key = tuple(sorted((k, v) for k, v in env.items() if k != "PYTEST_CURRENT_TEST"))
    _uses[key] = _uses.get(key, 0) + 1
    if key in _servers:
        _servers[key] = _servers.pop(key)  # the most recently used last
    elif _uses[key] >= 2 or at_once:
        while len(_servers) >= SERVERS_KEPT:
            _servers.pop(next(iter(_servers))).close()
        _servers[key] = _Server(env)
    return _servers.get(key)


@atexit.register
def _close() -> None:
    for server in _servers.values():
        server.close()


def _forkable(cmd: Any, kwargs: dict[str, Any]) -> str | None:
    """"script" for `python script.py ...`, "launch" for `python -m accelerate.commands.launch ...`, with captured
    output and an environment given; None for anything else."""
    allowed = {"env", "capture_output", "text", "timeout", "check", "cwd"}
    if not enabled() or not isinstance(cmd, (list, tuple)) or len(cmd) < 2 or cmd[0] != sys.executable:
        return None
    if not set(kwargs) <= allowed or not kwargs.get("capture_output") or kwargs.get("env") is None:
        return None
    if tuple(cmd[1:3]) == LAUNCH:
        return "launch"
    if str(cmd[1]).endswith(".py") and Path(cmd[1]).is_file():
        return "script"
    return None


def run(cmd: Any, *, serve_at_once: bool = False, **kwargs: Any) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, **kwargs)`, a forked child of the server where it can be (see above).
    `serve_at_once`: start the environment's server on its first use (a script whose own `python -m`
    runs are forked from it repays the server's imports in one run)."""
    kind = _forkable(cmd, kwargs)
    if kind is None:
        return subprocess.run(cmd, **kwargs)
    argv = [str(c) for c in cmd]
    timeout = kwargs.get("timeout")
    server = _server(kwargs["env"], serve_at_once)
    if server is None:
        return subprocess.run(cmd, **kwargs)
    args = argv[3:] if kind == "launch" else argv[1:]
    with tempfile.TemporaryDirectory(prefix="forkrun-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        reply = server.run(kind == "launch", args, kwargs["env"], str(kwargs.get("cwd") or os.getcwd()), timeout, out, err)
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


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
