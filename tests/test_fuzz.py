"""Bad input never gives a traceback: mutated recipes through `recipec validate/explain/build`.

Each case starts from a valid recipe (recipes/*.toml and the MINIMAL fixture recipe) and
mutates it: a random TOML value at a random key path (wrong types, huge and negative
numbers, nan/inf, odd unicode, deep nesting, arrays for tables and tables for arrays),
a deleted key, an unknown key, random `--set` arguments, or raw edits of the text
(truncation, byte edits that may break UTF-8, dropped and repeated lines). Every case
must end in exit 0, or exit 2 with rustc-style errors that point into the recipe (or the
`--set` argument); an exception, a traceback, any other exit code or a case that runs
longer than 20 s (a hang) fails the test.

The CLI runs in-process (click's CliRunner, which keeps an unexpected exception apart
from a SystemExit); a few cases go through a real `python -m recipec` subprocess.

The CI run is derandomized (the same 2,960 in-process cases every run, see CI_EXAMPLES,
plus 11 subprocess runs) and takes well under two minutes. A longer run with fresh random
cases each time::

    RECIPEC_FUZZ_EXAMPLES=29600 python -m pytest tests/test_fuzz.py -q -k "not real_process"

runs about that many cases in all, shared among the tests in CI's proportions (so 29,600
is ten times CI; builds are the slow ones). ``--hypothesis-show-statistics`` prints the
share of each mutation and outcome. A failure prints the smallest input that fails and a
``@reproduce_failure`` line to replay it.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from conftest import MINIMAL
from recipec.cli import main

REPO = Path(__file__).resolve().parent.parent

_LONG = int(os.environ.get("RECIPEC_FUZZ_EXAMPLES", "0"))
settings.register_profile(
    "fuzz-ci", derandomize=True, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
settings.register_profile(
    "fuzz-long", derandomize=False, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
_PROFILE = settings.get_profile("fuzz-long" if _LONG else "fuzz-ci")


CI_EXAMPLES = {"mutated": 1200, "edited": 1000, "set": 400, "build-mutated": 150, "build-extreme": 150, "build-edited": 60}
"""Cases per in-process test in CI (2,960 in all); a long run shares its total in the same proportions."""


def examples(test: str) -> settings:
    ci = CI_EXAMPLES[test]
    return settings(_PROFILE, max_examples=max(ci * _LONG // sum(CI_EXAMPLES.values()), 1) if _LONG else ci)


# -- the valid starting points ----------------------------------------------------------

BASES: dict[str, str] = {p.name: p.read_text(encoding="utf-8") for p in sorted((REPO / "recipes").glob("*.toml"))}
BASES["minimal.toml"] = tomli_w.dumps(MINIMAL)
BASE_DATA = {name: tomllib.loads(text) for name, text in BASES.items()}


def key_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a parsed document (tables, keys and array entries)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += key_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += key_paths(value, prefix + (i,))
    return out


def tables(node: Any, prefix: tuple = ()) -> list[tuple]:
    """The key paths of every table, the root included."""
    out = []
    if isinstance(node, dict):
        out.append(prefix)
        for key, value in node.items():
            out += tables(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += tables(value, prefix + (i,))
    return out


def get(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key]
    return node


# -- values ------------------------------------------------------------------------------

ODD = [
    "",
    " ",
    "\u2028",  # line separator: a newline to some editors, not to TOML
    "\u2029",
    "\u202e\u05e9\u05dc\u05d5\u05dd",  # right-to-left override, Hebrew
    "\u0645\u0631\u062d\u0628\u0627",  # Arabic
    "e\u0301\u0301\u0301",  # combining marks
    "\U0001f600\u200d\U0001f680",  # emoji with a zero-width joiner
    "\ufeff",
    "\x00\x01\x7f",
    "\t\r\n",
    "\u4e2d\u6587" * 50,
    "../../etc/passwd",
    "~nosuchuser/x",
    "*",
    "**/*.jsonl",
    "${HOME}",
    "$(rm -rf /)",
    "'\"\\",
    "{{ x }}",
    "{% if %}",
    "llama",
    "bpe",
    "cosine",
    "python-docs",
    "bf16",
    "fsdp",
    "lora",
    "parent",
]
text_values = (
    st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
    | st.sampled_from(ODD)
    | st.builds(lambda n: "a" * n, st.sampled_from([1000, 100_000]))  # huge strings
)
NUMBERS = [0, -1, 1, 2, 3, 7, -(2**63), 2**63 - 1, 2**64, -(2**70), 10**30]
FLOATS = [0.0, -0.0, 1e-300, 5e-324, 1e300, -1e300, 0.5, -0.5, 1.5, math.inf, -math.inf, math.nan]
scalars = (
    st.sampled_from(NUMBERS)
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.sampled_from(FLOATS)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | text_values
    | st.sampled_from([dt.date(2020, 1, 2), dt.time(1, 2, 3), dt.datetime(2020, 1, 2, 3, 4, 5)])
)
keys = st.sampled_from(["a", "path", "name", "type", "kind", "r", "lr", "init", "train", "weight", "x-y", "0"]) | st.text(
    st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8
)
toml_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=10,
)


@st.composite
def deep(draw) -> Any:
    """A value nested far deeper than any recipe table."""
    depth = draw(st.sampled_from([10, 50, 200]))
    value: Any = draw(scalars)
    for i in range(depth):
        value = [value] if draw(st.booleans()) else {"a": value}
    return value


values = toml_values | deep()


def same_type(current: Any) -> st.SearchStrategy:
    """Extreme and odd values of the type `current` has: numbers stay numbers, strings strings."""
    if isinstance(current, bool):
        return st.booleans()
    if isinstance(current, int):
        return st.sampled_from(NUMBERS) | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    if isinstance(current, float):
        return st.sampled_from(FLOATS) | st.floats() | st.sampled_from(NUMBERS)
    if isinstance(current, str):
        return text_values
    if isinstance(current, list):
        return st.lists(st.sampled_from(current) if current else scalars, max_size=6)
    return values


# -- mutations ----------------------------------------------------------------------------


@st.composite
def mutated_data(draw) -> tuple[str, dict]:
    """A base recipe with one to three structural mutations."""
    name = draw(st.sampled_from(sorted(BASE_DATA)))
    data = copy.deepcopy(BASE_DATA[name])
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "same_type", "same_type", "delete", "unknown", "swap", "wrap"]))
        paths = key_paths(data)
        if not paths:
            break
        if op == "unknown":
            table = draw(st.sampled_from(tables(data)))
            get(data, table)[draw(keys)] = draw(values)
            continue
        path = draw(st.sampled_from(paths))
        parent, last = get(data, path[:-1]), path[-1]
        current = parent[last]
        if op == "set":
            parent[last] = draw(values)
        elif op == "same_type":  # a value of the type the key has, so that it gets past the schema more often
            parent[last] = draw(same_type(current))
        elif op == "delete":
            del parent[last]
        elif op == "swap":  # a table where an array was, an array where a table was
            if isinstance(current, dict):
                parent[last] = [current] if draw(st.booleans()) else list(current.values())
            elif isinstance(current, list):
                parent[last] = current[0] if current and isinstance(current[0], dict) else {"0": current}
            else:
                parent[last] = [current] if draw(st.booleans()) else {"value": current}
        else:  # wrap: the same value one level deeper
            parent[last] = {draw(keys): current}
        event(f"mutation {op}")
    return name, data


def dump(data: dict) -> str | None:
    """TOML text, or None for a document TOML cannot hold (a mixed array of tables and values)."""
    try:
        return tomli_w.dumps(data)
    except (TypeError, ValueError, RecursionError):
        return None


@st.composite
def text_mutations(draw) -> bytes:
    """A base recipe's bytes, edited without regard for TOML: truncated, bytes changed, lines moved."""
    name = draw(st.sampled_from(sorted(BASES)))
    raw = BASES[name].encode("utf-8")
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "replace", "insert", "delete", "line_dup", "line_drop", "utf8", "nest"]))
        if not raw:
            break
        i = draw(st.integers(0, len(raw) - 1))
        if op == "truncate":
            raw = raw[:i]
        elif op == "replace":
            raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1 :]
        elif op == "insert":
            raw = raw[:i] + draw(st.sampled_from([b"[", b"]", b"=", b'"', b"'", b"\n", b"{", b",", b"#", b"\\", b"."])) + raw[i:]
        elif op == "delete":
            raw = raw[:i] + raw[i + draw(st.integers(1, 20)) :]
        elif op == "nest":  # a value nested deeper than tomllib's recursion (about 330) or just below it
            lines = raw.split(b"\n")
            j = draw(st.integers(0, len(lines) - 1))
            if b" = " in lines[j]:
                k = draw(st.sampled_from([5, 100, 300, 320, 340, 1000, 20000]))
                opening, closing = draw(st.sampled_from([(b"[", b"]"), (b"{a = ", b"}"), (b'["x", ', b"]")]))
                lines[j] = lines[j].split(b" = ")[0] + b" = " + opening * k + b"1" * (opening == b"[") + closing * k
            raw = b"\n".join(lines)
        elif op == "utf8":  # odd but valid unicode in the middle of the text
            raw = raw[:i] + draw(st.sampled_from(ODD[:12])).encode("utf-8", "surrogatepass") + raw[i:]
        else:
            lines = raw.split(b"\n")
            j = draw(st.integers(0, len(lines) - 1))
            if op == "line_dup":
                lines.insert(draw(st.integers(0, len(lines))), lines[j])
            else:
                del lines[j]
            raw = b"\n".join(lines)
        event(f"text {op}")
    return raw


# keys a --set may name, valid or not
SET_KEYS = sorted({".".join(str(k) for k in p if isinstance(k, str)) for d in BASE_DATA.values() for p in key_paths(d)} - {""})
set_args = st.builds(
    lambda key, value, raw: f"{key}={raw if raw is not None else value}",
    st.sampled_from(SET_KEYS) | st.from_regex(r"[a-z_.\[\]0-9\"']{0,20}", fullmatch=True),
    st.sampled_from(["1", "-1", "nan", "inf", "-inf", "[1, 2]", "{a = 1}", '"x"', "x", "", "[", "{", "1e999", "true"]),
    st.none() | st.sampled_from(["9" * 400, "[" * 50, "[[", '"unterminated']),
) | st.text(st.characters(exclude_categories=("Cs",)), max_size=20)


# -- running the CLI and judging the result ------------------------------------------------

ARROW = re.compile(r"^\s*--> (.*)$", re.M)
# errors about the file as a whole, or about a table or key that is not written in it at
# all: these point at the file (`--> r.toml`), there being no line to show
FILE_LEVEL = (
    "cannot read recipe",  # unreadable or not UTF-8
    "missing table",
    "missing required key",
    "needs exactly one of",  # [model] with neither path nor init, and no [model] written
)


def check_outcome(code: int, exception: BaseException | None, stdout: str, stderr: str, recipe: str) -> str:
    """Fail unless the run ended in exit 0, or in exit 2 with errors that point into the recipe."""
    if exception is not None and not isinstance(exception, SystemExit):
        raise AssertionError(f"internal error ({type(exception).__name__}): {exception!r}") from exception
    assert "Traceback" not in stderr + stdout, stderr
    assert code in (0, 2), f"exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    if code == 0:
        return "ok"
    blocks = re.split(r"\n\n(?=(?:\x1b\[[0-9;]*m)?(?:error|warning):)", stderr)
    errors = [b for b in blocks if b.startswith("error:")]
    assert errors, f"exit 2 with no error:\n{stderr}"
    for block in errors:
        arrow = ARROW.search(block)
        assert arrow, f"an error without a location:\n{block}"
        where = arrow.group(1)
        if where.startswith("--set"):
            continue
        assert where.startswith(recipe), f"an error that points outside the recipe:\n{block}"
        if not re.fullmatch(re.escape(recipe) + r":\d+:\d+", where):
            message = block.splitlines()[0]
            assert any(f in message for f in FILE_LEVEL), f"an error that points at no line:\n{block}"
    # the messages and hints, not the echoed recipe text (`| dtype=1`) and locations, which are the user's
    said = "\n".join(line for line in stderr.splitlines() if not re.match(r"\s*(\d+\s*)?\||\s*-->", line))
    for noise in ("type=", "Input should", "https://errors.pydantic", "input_value"):
        assert noise not in said, f"pydantic text leaked:\n{stderr}"
    return "error"


TIME_LIMIT_S = 20
"""A case that runs longer hangs (e.g. a schedule of 2**63 steps): an internal error, not a slow case."""


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"recipec ran longer than {TIME_LIMIT_S} s")


def invoke(args: list[str], recipe: str) -> str:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        result = CliRunner().invoke(main, ["--no-color", *args])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return check_outcome(result.exit_code, result.exception, result.stdout, result.stderr, recipe)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    """A fresh project directory as the working directory (recipe paths are relative to it)."""
    path = tmp_path_factory.mktemp("fuzz")
    old = os.getcwd()
    os.chdir(path)
    yield path
    os.chdir(old)


def build(project: Path, recipe: str) -> str:
    """`recipec build` into a fresh directory (a build of another recipe there is an error of its own)."""
    with tempfile.TemporaryDirectory(dir=project) as out:
        return invoke(["build", recipe, "-o", os.path.relpath(out, project)], recipe)


def write(project: Path, content: str | bytes) -> str:
    path = project / "r.toml"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return "r.toml"


# -- the properties -------------------------------------------------------------------------

COMMANDS = st.sampled_from([("validate",), ("explain",), ("explain", "--json")])


@examples("mutated")
@given(case=mutated_data(), command=COMMANDS)
def test_mutated_recipe_validates_or_points_at_the_line(case, command, project):
    name, data = case
    text = dump(data)
    assume(text is not None)
    recipe = write(project, text)
    event(invoke([*command, recipe], recipe))


@examples("edited")
@given(raw=text_mutations(), command=COMMANDS)
def test_edited_text_validates_or_points_at_the_line(raw, command, project):
    recipe = write(project, raw)
    event(invoke([*command, recipe], recipe))


@examples("set")
@given(base=st.sampled_from(sorted(BASES)), sets=st.lists(set_args, min_size=1, max_size=3))
def test_random_set_arguments_validate_or_point_at_them(base, sets, project):
    recipe = write(project, BASES[base])
    args = ["explain", recipe]
    for arg in sets:
        args += ["--set", arg]
    event(invoke(args, recipe))


@examples("build-mutated")
@given(case=mutated_data())
def test_mutated_recipe_builds_or_points_at_the_line(case, project):
    name, data = case
    text = dump(data)
    assume(text is not None)
    recipe = write(project, text)
    event(build(project, recipe))


NUMERIC_LEAVES = sorted(
    (name, path)
    for name, data in BASE_DATA.items()
    for path in key_paths(data)
    if isinstance(get(data, path), int | float) and not isinstance(get(data, path), bool)
)


@examples("build-extreme")
@given(leaf=st.sampled_from(NUMERIC_LEAVES), value=st.sampled_from(NUMBERS + FLOATS))
def test_one_extreme_number_builds_or_points_at_the_line(leaf, value, project):
    """A valid recipe with one number made extreme: the rest is valid, so resolve and render see it."""
    name, path = leaf
    data = copy.deepcopy(BASE_DATA[name])
    get(data, path[:-1])[path[-1]] = value
    recipe = write(project, dump(data))
    event(build(project, recipe))


@examples("build-edited")
@given(raw=text_mutations())
def test_edited_text_builds_or_points_at_the_line(raw, project):
    recipe = write(project, raw)
    event(build(project, recipe))


# a few inputs that once crashed recipec or are easy to get wrong, through a real process
SUBPROCESS_CASES = {
    "truncated": BASES["quickstart.toml"][: len(BASES["quickstart.toml"]) // 2].encode(),
    "not-utf8": b"[recipe]\nname = \"\xff\xfe\"\n",
    "nan-lr": BASES["minimal.toml"].replace("[model]", "[optim]\nlr = nan\n\n[model]").encode(),
    "array-for-table": b"recipe = [1, 2]\n" + BASES["minimal.toml"].split("\n", 2)[2].encode(),
    "deep": ("[recipe]\nname = \"x\"\n\n[model]\nconfig = " + "[" * 300 + "]" * 300 + "\n").encode(),
    "deeper-than-tomllib": ("[recipe]\nname = \"x\"\n\n[model]\nconfig = " + "[" * 5000 + "]" * 5000 + "\n").encode(),
    "continual-from-unknown-user": BASES["minimal.toml"].replace("[model]", '[continual]\nfrom = "~no-such-user-x/r"\n\n[model]').encode(),
}


# every case through validate, two also through explain and build: a process costs ~2 s of imports
SUBPROCESS_RUNS = [(name, "validate") for name in SUBPROCESS_CASES] + [
    (name, command) for name in ("truncated", "deeper-than-tomllib") for command in ("explain", "build")
]


@pytest.mark.parametrize(("name", "command"), SUBPROCESS_RUNS)
def test_real_process_exits_cleanly(name: str, command: str, tmp_path: Path):
    recipe = tmp_path / "r.toml"
    recipe.write_bytes(SUBPROCESS_CASES[name])
    args = [command, "r.toml"] + (["-o", "out"] if command == "build" else [])
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "recipec", "--no-color", *args], cwd=tmp_path, capture_output=True, text=True, env=env,
        timeout=120,
    )
    assert check_outcome(proc.returncode, None, proc.stdout, proc.stderr, "r.toml") == "error"


def test_the_checker_catches_an_internal_error():
    """check_outcome fails on an exception, a traceback, another exit code or an unlocated error."""
    with pytest.raises(AssertionError, match="internal error"):
        check_outcome(1, ValueError("boom"), "", "", "r.toml")
    with pytest.raises(AssertionError, match="exit 1"):
        check_outcome(1, SystemExit(1), "", "Error: x\n", "r.toml")
    with pytest.raises(AssertionError):
        check_outcome(1, None, "", "Traceback (most recent call last):\n", "r.toml")
    with pytest.raises(AssertionError, match="without a location"):
        check_outcome(2, SystemExit(2), "", "error: something\n1 error\n", "r.toml")
    with pytest.raises(AssertionError, match="no line"):
        check_outcome(2, SystemExit(2), "", "error: `x` bad\n --> r.toml\n1 error in r.toml\n", "r.toml")
    ok = "error: `x` bad\n --> r.toml:3:1\n  |\n3 | x = 1\n  | ^\n1 error in r.toml\n"
    assert check_outcome(2, SystemExit(2), "", ok, "r.toml") == "error"
