"""Shared fixtures of the compile-side tests: a minimal recipe and the golden-file switch.

Tests build recipes from one minimal valid recipe (a tiny from-scratch Llama, a BPE
tokenizer trained on Python's own docs, one builtin source, `train.max_steps`) and state
only the keys they care about::

    def test_something(write_recipe):
        path = write_recipe({"optim.lr": 1e-3, "train.max_steps": None}, train={"epochs": 2})

Golden files (tests/golden/, tests/bad_recipes/*.err) are regenerated with
``pytest tests --update-golden``.

Nothing here is autouse: the runtime and training tests do not use these fixtures.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import socket
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w

# Nothing in the test suite may reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# One thread per process: `pytest -n auto` runs a worker per core, and the tiny models' short
# parallel regions gain nothing from a second thread that only contends for the cores (a fifth
# less CPU time over the training tests). Set OMP_NUM_THREADS to override it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent

MINIMAL: dict[str, Any] = {
    "recipe": {"name": "tiny"},
    "model": {
        "init": "llama",
        "config": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "max_position_embeddings": 128,
        },
    },
    "tokenizer": {"train": {"kind": "bpe", "vocab_size": 512}},
    "data": {"seq_len": 32, "sources": [{"builtin": "python-docs"}]},
    "train": {"micro_batch_size": 4, "batch_size": 8, "max_steps": 100, "eval_every": 50, "save_every": 50},
}
"""The minimal valid recipe: resolves with no error and no warning."""


def free_port() -> int:
    """A TCP port no process of this machine listens on now (the kernel's pick for port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scheduler_lrs(optimizer: Any, scheduler: Any, steps: int) -> list[float]:
    """The LR of each of `steps` optimizer steps, the scheduler stepped after each one as a trainer steps it
    (the schedule oracles of tests/importers/)."""
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def accelerate_launch(config_file: Path, *args: str) -> list[str]:
    """The argv of `accelerate launch --config_file config_file *args` on a free rendezvous port.

    A build's accelerate config names launch.main_process_port (29500 by default). accelerate moves
    to a free port when that one is held as it checks, but a process that binds it between the check
    and torchrun's own bind (another launch on the machine, say) fails the launch with EADDRINUSE.
    Each launch gets a port of its own; a `--main_process_port` in args still wins (the last one
    given is the one argparse keeps)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
        "--main_process_port", str(free_port()), *args,
    ]  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def _torch_extensions_of_this_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    """DeepSpeed on the CPU compiles its shared-memory collective (torch's JIT extensions) the first
    time a process starts it, behind a lock file: a compile killed by a timeout leaves the lock behind
    and every later DeepSpeed process waits on it for ever. One directory per run (shared by its
    xdist workers), so no run waits on another's lock."""
    root = tmp_path_factory.getbasetemp()
    if root.name.startswith("popen-gw"):
        root = root.parent
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(root / "torch_extensions"))
    # the digests of large files a lock pins (recipec/runtime/file_hashes.py): kept in the run, not in ~/.cache
    os.environ.setdefault("RECIPEC_HASH_CACHE", str(root / "file-sha256.json"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite the golden files (tests/golden/, tests/bad_recipes/*.err) from the current output",
    )
    parser.addoption(
        "--store-durations",
        action="store_true",
        default=False,
        help=f"write the seconds each test file took (setup, call and teardown of its tests) into {DURATIONS.name}",
    )


DURATIONS = Path(__file__).with_name("durations.json")
"""Seconds per test file of a whole run (`pytest -n auto --dist worksteal --store-durations`): the order the
xdist workers take the files in. Out of date it costs time, never a result."""

SLOW_SECONDS, FAST_SECONDS = 15.0, 0.05
"""What a test of a file missing from DURATIONS is expected to take: marked slow (it trains), or not."""


def _test_file(nodeid: str) -> str:
    return nodeid.split("::")[0]


def _stored_durations() -> dict[str, float]:
    if not DURATIONS.exists():
        return {}
    try:
        return json.loads(DURATIONS.read_text())
    except json.JSONDecodeError as e:
        raise pytest.UsageError(f"{DURATIONS}: not JSON ({e}); rewrite it with a whole run and --store-durations, or delete it") from None


def longest_files_first(items: list[Any], seconds: Mapping[str, float]) -> list[Any]:
    """The items, each file's together and in their order, the files by their expected seconds, longest first.

    Under `--dist worksteal` each worker starts on half the list and an idle worker takes the back half of
    the other's queue: with the longest files at the front, what is left to take at the end is short tests,
    and both workers finish close together (in collection order the training files near the
    end of the alphabet kept one worker busy for minutes after the other had stopped). A file stays whole
    in a worker's queue, so its module fixtures are set up once there."""
    files: dict[str, list[Any]] = {}
    for item in items:
        files.setdefault(_test_file(item.nodeid), []).append(item)

    def expected(path: str) -> float:
        if path in seconds:
            return seconds[path]
        return sum(SLOW_SECONDS if item.get_closest_marker("slow") else FAST_SECONDS for item in files[path])

    return [item for path in sorted(files, key=expected, reverse=True) for item in files[path]]


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        _stored_durations()  # a damaged file is a usage error here, before the xdist workers read it


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # one process: the files in the order given
        return
    # every worker orders the same collection the same way, as xdist requires
    items[:] = longest_files_first(items, _stored_durations())


_file_seconds: collections.Counter[str] = collections.Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _file_seconds[_test_file(report.nodeid)] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if not config.getoption("--store-durations") or hasattr(config, "workerinput") or not _file_seconds:
        return
    stored = _stored_durations()
    stored.update({path: round(total, 1) for path, total in _file_seconds.items()})  # the files this run ran
    DURATIONS.write_text(json.dumps(dict(sorted(stored.items())), indent=1) + "\n")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when the run was asked to rewrite golden files instead of comparing."""
    return bool(request.config.getoption("--update-golden"))


def _recipe_data(dotted: Mapping[str, Any] | None = None, /, **tables: Any) -> dict[str, Any]:
    """The minimal recipe as a dict, changed by dotted keys and whole-table merges.

    Args:
        dotted: ``{"optim.lr": 1e-3, "train.max_steps": None}``; a value of None removes
            the key (TOML has no null), missing tables on the way are created.
        **tables: ``train={"epochs": 2, "max_steps": None}`` merges into ``[train]``
            (None removes a key); ``tokenizer=None`` removes the whole table.
    """
    data = copy.deepcopy(MINIMAL)
    for table, value in tables.items():
        if value is None:
            data.pop(table, None)
        elif isinstance(value, Mapping):
            _merge(data.setdefault(table, {}), value)
        else:
            data[table] = value
    for key, value in (dotted or {}).items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return data


def _merge(into: dict[str, Any], changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _recipe_text(dotted: Mapping[str, Any] | None = None, /, *, text: str = "", **tables: Any) -> str:
    """The minimal recipe as TOML text; ``text`` is appended verbatim (e.g. a new table)."""
    body = tomli_w.dumps(_recipe_data(dotted, **tables))
    return body + ("\n" + text.strip("\n") + "\n" if text else "")


@pytest.fixture
def recipe_data() -> Callable[..., dict[str, Any]]:
    """`_recipe_data`: the minimal recipe as a dict, with changes."""
    return _recipe_data


@pytest.fixture
def recipe_text() -> Callable[..., str]:
    """`_recipe_text`: the minimal recipe as TOML text, with changes."""
    return _recipe_text


@pytest.fixture
def write_recipe(tmp_path: Path) -> Callable[..., Path]:
    """Write a variant of the minimal recipe into tmp_path and return its path.

    ``write_recipe({"optim.lr": 1e-3}, text="[launch]\\ncpu = true", filename="r.toml",
    train={"epochs": 1, "max_steps": None})``; see `_recipe_data` for the arguments.
    """

    def write(
        dotted: Mapping[str, Any] | None = None, /, *, text: str = "", filename: str = "recipe.toml", **tables: Any
    ) -> Path:
        path = tmp_path / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_recipe_text(dotted, text=text, **tables), encoding="utf-8")
        return path

    return write


@pytest.fixture
def minimal_recipe(write_recipe: Callable[..., Path]) -> Path:
    """The unmodified minimal recipe, written to tmp_path/recipe.toml."""
    return write_recipe()


@pytest.fixture
def plan_of() -> Callable[..., Any]:
    """read + validate + resolve of a variant of the minimal recipe, in memory (no disk).

    ``plan_of({"schedule.warmup": 0.1})`` returns the Plan; a RecipeError propagates.
    ``overrides=[...]`` are `--set` arguments; ``text=`` is appended TOML.
    """
    from recipec.resolve import resolve
    from recipec.source import parse_recipe
    from recipec.validate import validate

    def plan(
        dotted: Mapping[str, Any] | None = None,
        /,
        *,
        text: str = "",
        overrides: Iterable[str] = (),
        file: str = "recipes/tiny.toml",
        **tables: Any,
    ):
        overrides = tuple(overrides)
        data, source = parse_recipe(_recipe_text(dotted, text=text, **tables), file, overrides)
        return resolve(validate(data, source), source, recipe_file=file, overrides=overrides)

    return plan


@pytest.fixture
def repo_root() -> Path:
    """The repository root (recipes/, templates/, tests/ live below it)."""
    return REPO


# -- recipec import ---------------------------------------------------------------------


IMPORT_CONFIGS = Path(__file__).resolve().parent / "importers" / "configs"
"""The importer tests' corpus: configs of other tools, one folder per `--from` tool."""


@dataclass
class Imported:
    result: Any
    """The `recipec.importers.Result`: the draft with its ledger, and the recipe text."""
    recipe: dict[str, Any]
    """The written recipe, parsed."""
    path: Path
    """Where the recipe was written."""

    @property
    def approx(self) -> set[str]:
        return {k for k, e in self.result.draft.ledger.items() if e.how == "approx"}

    @property
    def dropped(self) -> dict[str, str]:
        """Not imported: key -> reason."""
        return {k: e.reason or "" for k, e in self.result.draft.ledger.items() if e.how == "dropped"}

    @property
    def exact(self) -> set[str]:
        return {k for k, e in self.result.draft.ledger.items() if e.how == "exact"}


@pytest.fixture
def imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Imported]:
    """`imported("axolotl", "lora-8b.yaml")`: import tests/importers/configs/axolotl/lora-8b.yaml
    (or any path), write the recipe into tmp_path and validate it there (recipec validate's
    check: the plan resolves with no error). Local data files the recipe names must be
    created in tmp_path first (pass `files=["data/x.jsonl"]` to create empty ones)."""

    from recipec.compiler import plan_recipe
    from recipec.importers import Options, import_config, recipe_name

    def run(
        tool: str,
        config: str | Path,
        *,
        num_processes: int = 1,
        files: tuple[str, ...] | list[str] = (),
        model: str | None = None,
        data: str | None = None,
    ) -> Imported:
        path = Path(config)
        if not path.is_absolute():
            path = IMPORT_CONFIGS / tool / path
        monkeypatch.chdir(tmp_path)
        for f in files:
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / f).write_text('{"text": "x"}\n', encoding="utf-8")
        result = import_config(path, tool, Options(name=recipe_name(path), num_processes=num_processes, model=model, data=data))
        out = tmp_path / f"{path.stem}.toml"
        out.write_text(result.text, encoding="utf-8")
        plan_recipe(out, ())  # raises RecipeError when the recipe does not validate
        return Imported(result, tomllib.loads(result.text), out)

    return run
