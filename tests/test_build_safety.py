"""`recipec build` killed at any point, or run four at a time, leaves one complete build.

Each build here sets another `optim.lr`, so the lock of the directory left behind tells
whether it is the old build or the new one; either is fine, a mixture or nothing is not.
"Complete" means every file the lock lists is there with its hash (`hand_edited` is
empty) and `recipec verify` finds no drift. The builds run as real `recipec build`
processes, killed with SIGKILL at points inside write_build (through a wrapper that
patches recipec.build before calling the CLI) or at random moments.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipec import build as build_module
from recipec.build import LOCK_FILE, hand_edited, read_lock
from recipec.verify import find_drift

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent

WRAPPER = r'''
import os, pathlib, signal, sys

point, args = sys.argv[1], sys.argv[2:]
from recipec import build as b


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if point.startswith("write-"):  # the k-th file of the new build cut short mid-write
    k, count, write_bytes = int(point[len("write-"):]), [0], pathlib.Path.write_bytes

    def write_bytes_hook(self, data):
        if ".tmp-" in str(self):
            count[0] += 1
            if count[0] == k:
                with open(self, "wb") as f:
                    f.write(data[: len(data) // 2])
                die()
        return write_bytes(self, data)

    pathlib.Path.write_bytes = write_bytes_hook
elif point == "before-swap":  # the new build is complete beside the old one
    b._swap_in = lambda tmp, build_dir: die()
elif point == "after-first-rename":  # the first rename that moves a build in or out of place
    replace, exchange = os.replace, getattr(b, "_exchange", None)

    def replace_hook(src, dst):
        replace(src, dst)
        if os.path.basename(os.path.dirname(os.path.abspath(dst))) == "build":
            die()

    def exchange_hook(a, c):
        if not exchange(a, c):
            return False  # not swapped: the fallback's renames come next
        die()

    b.os.replace = replace_hook
    if exchange is not None:
        b._exchange = exchange_hook
elif point in ("fallback", "mid-fallback"):  # as where there is no atomic exchange
    b._exchange = lambda a, c: False
    if point == "mid-fallback":  # between the fallback's two renames
        replace = os.replace

        def replace_hook(src, dst):
            replace(src, dst)
            if ".old-" in os.path.basename(dst):
                die()

        b.os.replace = replace_hook
elif point == "slow-rename":  # renames in build/ take a while, as on a slow file system: races show
    import time

    replace = os.replace

    def slow_replace(src, dst):
        time.sleep(0.3)
        replace(src, dst)
        time.sleep(0.3)

    b.os.replace = slow_replace
    exchange = b._exchange if hasattr(b, "_exchange") else None
    if exchange is not None:
        def slow_exchange(a, c):
            time.sleep(0.3)
            done = exchange(a, c)
            time.sleep(0.3)
            return done

        b._exchange = slow_exchange
sys.argv = ["recipec", "build", *args]
from recipec.cli import main

main()
'''


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


@pytest.fixture
def project(tmp_path: Path, write_recipe) -> Path:
    write_recipe(filename="recipes/tiny.toml")
    (tmp_path / "wrapper.py").write_text(WRAPPER)
    return tmp_path


def _start(project: Path, lr: float, point: str = "none") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(project / "wrapper.py"), point, "recipes/tiny.toml", "--set", f"optim.lr={lr}"],
        cwd=project,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _build(project: Path, lr: float, point: str = "none") -> int:
    proc = _start(project, lr, point)
    out, _ = proc.communicate(timeout=120)
    if point == "none":
        assert proc.returncode == 0, out
    return proc.returncode


def _lr(build_dir: Path) -> float:
    """The `optim.lr` the build in place was made with, after checking it is complete."""
    lock = read_lock(build_dir)
    assert lock is not None, f"{build_dir} has no readable {LOCK_FILE}: {sorted(p.name for p in build_dir.iterdir())}"
    assert hand_edited(build_dir, lock) == [], f"{build_dir} does not match its lock"
    listed = set(lock["files"]) | {LOCK_FILE}
    present = {p.relative_to(build_dir).as_posix() for p in build_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert present == listed, f"files not in the lock: {present - listed}"
    (override,) = lock["overrides"]
    return float(override.split("=")[1])


def _verify(project: Path, build_dir: Path) -> None:
    cwd = os.getcwd()
    os.chdir(project)  # verify compiles the recipe again from the project directory
    try:
        drifts = find_drift(build_dir.relative_to(project), read_lock(build_dir), project)
    finally:
        os.chdir(cwd)
    assert drifts == [], drifts


def _entries(project: Path) -> list[str]:
    return sorted(p.name for p in (project / "build").iterdir())


POINTS = [
    # (where the build dies, which build is in place afterwards)
    ("write-1", "old"),
    ("write-5", "old"),
    ("write-12", "old"),
    ("before-swap", "old"),
    ("after-first-rename", "new"),  # with an atomic exchange the first rename is the whole swap
]


def test_a_killed_build_leaves_the_old_build_or_the_new_one_complete(project: Path) -> None:
    build_dir = project / "build" / "tiny"
    _build(project, 0.001)
    lr, tried = 0.001, 0
    for round_, (point, expect) in enumerate(POINTS):
        new = 0.002 + round_ / 1000
        assert _build(project, new, point) == -signal.SIGKILL, point
        tried += 1
        left = _lr(build_dir)
        assert left == (lr if expect == "old" else new), f"after a kill at {point}: lr {left}"
        lr = left
    _verify(project, build_dir)
    # the next build removes what the killed ones left beside the build
    assert len(_entries(project)) > 1
    _build(project, 0.05)
    assert _entries(project) == ["tiny"]
    assert _lr(build_dir) == 0.05

    # random moments of a whole `recipec build`, from start to exit
    t0 = time.monotonic()
    _build(project, 0.06)
    whole = time.monotonic() - t0
    rng, lr = random.Random(7), 0.06
    for i in range(6):
        new = 0.1 + i / 100
        proc = _start(project, new)
        time.sleep(rng.uniform(0, whole))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        tried += 1
        left = _lr(build_dir)
        assert left in (lr, new), f"a build of lr {new} killed left lr {left}"
        lr = left
    _build(project, 0.2)
    assert _entries(project) == ["tiny"]
    _verify(project, build_dir)
    print(f"\ninterrupted builds: {tried}")


def test_a_build_killed_between_the_fallback_renames_is_put_back_by_the_next_build(project: Path) -> None:
    """Without an atomic exchange there is a moment with no build directory; the next build repairs it."""
    build_dir = project / "build" / "tiny"
    _build(project, 0.001)
    _build(project, 0.002, "fallback")
    assert _lr(build_dir) == 0.002 and _entries(project) == ["tiny"]
    assert _build(project, 0.003, "mid-fallback") == -signal.SIGKILL
    assert not build_dir.exists()  # the window: the old build is under .tiny.old-PID
    assert _build(project, 0.004, "before-swap") == -signal.SIGKILL
    assert _lr(build_dir) == 0.002  # the next build put the old one back before it failed
    _build(project, 0.005, "fallback")
    assert _lr(build_dir) == 0.005 and _entries(project) == ["tiny"]


def test_concurrent_builds_of_one_recipe_leave_one_complete_build(project: Path) -> None:
    build_dir = project / "build" / "tiny"
    _build(project, 0.001)
    tried = 0
    for round_ in range(3):
        lrs = [0.01 * (round_ + 1) + i / 1000 for i in range(4)]
        procs = [_start(project, lr, "slow-rename") for lr in lrs]
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out
            tried += 1
        assert _lr(build_dir) in lrs
        assert _entries(project) == ["tiny"]
    _verify(project, build_dir)
    print(f"\nconcurrent builds: {tried}")


def test_leftovers_of_killed_builds_are_removed_and_a_lost_build_is_put_back(tmp_path: Path) -> None:
    build_dir = tmp_path / "tiny"
    old = tmp_path / ".tiny.old-123"
    old.mkdir()
    (old / LOCK_FILE).write_text(json.dumps({"name": "tiny"}))
    (tmp_path / ".tiny.tmp-456").mkdir()
    (tmp_path / ".other.tmp-789").mkdir()  # another recipe's: not this build's to judge
    build_module._clean_leftovers(build_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-789", "tiny"]
    assert json.loads((build_dir / LOCK_FILE).read_text()) == {"name": "tiny"}
