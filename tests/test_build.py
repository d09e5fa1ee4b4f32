"""write: the build directory, its lock, reproducibility, and what a build refuses to overwrite.

The golden build of recipes/quickstart.toml lives in tests/golden/quickstart/; regenerate
it with `pytest tests/test_build.py --update-golden` and review the diff.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest

import recipec
from recipec import build as build_module
from recipec.build import LOCK_FILE, REQUIREMENTS, TRAINING_PACKAGES, lock_text
from recipec.compiler import build, plan_recipe
from recipec.diagnostics import RecipeError
from recipec.render import template_dir

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"
REGENERATE = "pytest tests/test_build.py --update-golden"


def tree(root: Path) -> dict[str, bytes]:
    """{relative posix path: bytes} of every file below root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def hashes(root: Path) -> dict[str, str]:
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in tree(root).items()}


def build_quickstart(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Build recipes/quickstart.toml from a copy in `project`, the way a user would from the project root."""
    (project / "recipes").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "recipes" / "quickstart.toml", project / "recipes" / "quickstart.toml")
    monkeypatch.chdir(project)
    written, _ = build("recipes/quickstart.toml")
    return project / written.dir


# -- golden build -------------------------------------------------------------------------


RUNTIME = "recipec_runtime/"
MACHINE_SPECIFIC = ("packages", "git")
"""Lock entries that differ between machines: checked for shape, not compared byte for byte."""


def comparable_lock(data: bytes) -> bytes:
    """The lock's text without its machine-specific entries, after checking their shape.

    The installed package versions and the git state belong to the machine, and so does
    the hash of requirements.txt, which pins those versions. The data fingerprints keep
    their source labels but not their hashes: the quickstart reads Python's own
    documentation, which differs between Python versions.
    """
    lock = json.loads(data)
    packages = lock.pop("packages")
    assert set(packages) == set(TRAINING_PACKAGES), packages
    assert all(v is None or isinstance(v, str) for v in packages.values()), packages
    assert re.fullmatch(r"[0-9a-f]{64}", lock["files"].pop(REQUIREMENTS))
    git = lock.pop("git")
    assert git is None or (set(git) == {"commit", "recipe_modified", "dirty"} and re.fullmatch(r"[0-9a-f]{40,64}", git["commit"])), git
    for entry in lock["data"]:
        assert re.fullmatch(r"[0-9a-f]{64}", entry.pop("sha256")), entry
    assert set(lock) >= {"data", "schema_version", "seed"}
    return lock_text(lock).encode()


def comparable_requirements(data: bytes) -> bytes:
    """requirements.txt with its versions (this machine's, as in the lock) left out."""
    return re.sub(rb"==\S+", b"==<version>", data)


def test_quickstart_build_matches_golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, update_golden: bool):
    """Every generated file, byte for byte; the runtime is copied verbatim, so it is compared
    with recipec/runtime/ instead of being kept twice."""
    built = build_quickstart(tmp_path, monkeypatch)
    golden = GOLDEN / "quickstart"
    runtime = {rel: data for rel, data in tree(built).items() if rel.startswith(RUNTIME)}
    root = REPO / "recipec" / "runtime"
    sources = {RUNTIME + p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.py"))}
    assert runtime == sources, "the build's recipec_runtime/ is not a verbatim copy of recipec/runtime/"
    if update_golden:
        shutil.rmtree(golden, ignore_errors=True)
        shutil.copytree(built, golden, ignore=shutil.ignore_patterns(RUNTIME.rstrip("/")))
        return
    assert golden.is_dir(), f"no golden build; create it with `{REGENERATE}`"
    compare_with_golden(built, golden)


def compare_with_golden(built: Path, golden: Path) -> None:
    """Fail with every difference between a build and its golden copy, then the command that
    regenerates the golden files. Text files show a unified diff; a binary file (schedule.png)
    is compared as bytes and named with its sizes and hashes."""
    actual = {rel: data for rel, data in tree(built).items() if not rel.startswith(RUNTIME)}
    expected = tree(golden)
    for files in (actual, expected):
        if LOCK_FILE in files:
            files[LOCK_FILE] = comparable_lock(files[LOCK_FILE])
        if REQUIREMENTS in files:
            files[REQUIREMENTS] = comparable_requirements(files[REQUIREMENTS])
    problems = []
    for rel in sorted(set(actual) | set(expected)):
        if rel not in expected:
            problems.append(f"new file {rel} (not in tests/golden/quickstart/)")
        elif rel not in actual:
            problems.append(f"missing file {rel} (in tests/golden/quickstart/, not built)")
        elif actual[rel] != expected[rel]:
            problems.append(_file_difference(rel, expected[rel], actual[rel]))
    if problems:
        pytest.fail(
            "the build of recipes/quickstart.toml differs from tests/golden/quickstart/:\n\n"
            + "\n".join(problems)
            + f"\nif the change is intended, regenerate with:\n  {REGENERATE}",
            pytrace=False,
        )


def _file_difference(rel: str, expected: bytes, actual: bytes) -> str:
    """A unified diff of a text file; for a binary file, one line with sizes and hashes."""
    try:
        old, new = expected.decode("utf-8"), actual.decode("utf-8")
    except UnicodeDecodeError:
        digest = lambda data: hashlib.sha256(data).hexdigest()[:12]  # noqa: E731
        return (
            f"binary file {rel} differs: golden/quickstart/{rel} {len(expected):,} bytes (sha256 {digest(expected)}), "
            f"build/quickstart/{rel} {len(actual):,} bytes (sha256 {digest(actual)})\n"
        )
    diff = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"golden/quickstart/{rel}", f"build/quickstart/{rel}"
    )
    return "".join(diff)


@pytest.mark.parametrize("changed", ["schedule.png", "train.py"])
def test_golden_mismatch_prints_the_regeneration_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changed: str):
    """A changed file, binary or text, fails with the file named and the command that regenerates it."""
    built = build_quickstart(tmp_path / "project", monkeypatch)
    golden = tmp_path / "golden"
    shutil.copytree(built, golden, ignore=shutil.ignore_patterns(RUNTIME.rstrip("/")))
    compare_with_golden(built, golden)  # an identical copy passes
    data = (golden / changed).read_bytes()
    if changed.endswith(".png"):
        middle = len(data) // 2  # inside the compressed image data: not UTF-8 either way
        data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
    else:
        data += b"# edited by hand\n"
    (golden / changed).write_bytes(data)
    with pytest.raises(pytest.fail.Exception) as failure:
        compare_with_golden(built, golden)
    message = str(failure.value)
    assert f"golden/quickstart/{changed}" in message
    assert message.rstrip().endswith(f"regenerate with:\n  {REGENERATE}")
    if changed == "schedule.png":
        assert message.count("binary file schedule.png differs") == 1
    else:
        assert "\n-# edited by hand\n" in message


def test_build_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    built = build_quickstart(tmp_path, monkeypatch)
    assert built == tmp_path / "build" / "quickstart"
    files = set(tree(built))
    assert {"train.py", "accelerate_config.yaml", "launch.sh", "resolved.toml", LOCK_FILE} <= files
    root = REPO / "recipec" / "runtime"
    runtime = {f"recipec_runtime/{p.relative_to(root).as_posix()}" for p in root.rglob("*.py")}
    assert runtime and runtime <= files
    assert (built / "launch.sh").stat().st_mode & stat.S_IXUSR
    assert not (built / "train.py").stat().st_mode & stat.S_IXUSR
    # nothing else is left beside the build
    assert sorted(p.name for p in built.parent.iterdir()) == ["quickstart"]


def test_runtime_is_shipped_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    built = build_quickstart(tmp_path, monkeypatch)
    root = REPO / "recipec" / "runtime"
    for source in root.rglob("*.py"):
        assert (built / "recipec_runtime" / source.relative_to(root)).read_bytes() == source.read_bytes()


# -- reproducible builds -------------------------------------------------------------


def test_building_twice_gives_identical_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = hashes(build_quickstart(tmp_path / "a", monkeypatch))
    again = hashes(build_quickstart(tmp_path / "a", monkeypatch))
    elsewhere = hashes(build_quickstart(tmp_path / "somewhere" / "else", monkeypatch))
    assert first == again
    assert first == elsewhere, "the build depends on where the project lives"


def test_build_does_not_depend_on_machine_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = hashes(build_quickstart(tmp_path / "a", monkeypatch))
    for var, value in {"WORLD_SIZE": "8", "LOCAL_RANK": "3", "CUDA_VISIBLE_DEVICES": "0,1", "TZ": "Asia/Tokyo"}.items():
        monkeypatch.setenv(var, value)
    assert hashes(build_quickstart(tmp_path / "b", monkeypatch)) == first


# -- the lock -----------------------------------------------------------------------------


def test_lock_records_inputs_and_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    built = build_quickstart(tmp_path, monkeypatch)
    text = (built / LOCK_FILE).read_text()
    lock = json.loads(text)
    assert text == lock_text(lock), "the lock is written canonically (sorted keys, two-space indent)"

    files = {rel: data for rel, data in tree(built).items() if rel != LOCK_FILE}
    assert set(lock["files"]) == set(files), "the lock lists every file of the build"
    for rel, data in files.items():
        assert lock["files"][rel] == hashlib.sha256(data).hexdigest(), rel

    recipe_bytes = (tmp_path / "recipes" / "quickstart.toml").read_bytes()
    assert lock["recipe"] == {"file": "recipes/quickstart.toml", "sha256": hashlib.sha256(recipe_bytes).hexdigest()}
    templates = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in template_dir().glob("*.j2")}
    assert lock["templates"] == templates and "train.py.j2" in templates
    assert lock["recipec_version"] == recipec.__version__
    assert lock["name"] == "quickstart"
    assert lock["overrides"] == []
    assert lock["lock_version"] == 1
    assert lock["schema_version"] == 1
    assert lock["seed"] == 1234
    assert [entry["source"] for entry in lock["data"]] == ["sources[0]"]


def test_lock_has_no_absolute_path_and_no_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    built = build_quickstart(tmp_path, monkeypatch)
    for rel, data in tree(built).items():
        text = data.decode("latin-1")  # schedule.png is bytes; an ASCII path would still show
        assert str(tmp_path) not in text, f"{rel} contains the absolute project path"
        assert os.path.expanduser("~") + "/" not in text or rel.startswith("recipec_runtime/"), rel
    lock = (built / LOCK_FILE).read_text()
    assert not re.search(r"\b(19|20)\d\d-\d\d-\d\d", lock), "a date in the lock"
    assert not re.search(r"\d\d:\d\d:\d\d", lock), "a time in the lock"
    assert not re.search(r'"/', lock), "an absolute path in the lock"


def test_lock_records_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    build_quickstart(tmp_path, monkeypatch)
    written, _ = build("recipes/quickstart.toml", ["train.max_steps=20", "optim.lr=1e-3"])
    lock = json.loads((written.dir / LOCK_FILE).read_text())
    assert lock["overrides"] == ["train.max_steps=20", "optim.lr=1e-3"]
    assert written.lock == lock
    assert written.files == lock["files"]


def test_lock_hash_changes_with_the_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    built = build_quickstart(tmp_path, monkeypatch)
    before = json.loads((built / LOCK_FILE).read_text())
    recipe = tmp_path / "recipes" / "quickstart.toml"
    recipe.write_text(recipe.read_text() + "\n# a comment changes the recipe's hash, not the plan\n")
    build("recipes/quickstart.toml")
    after = json.loads((built / LOCK_FILE).read_text())
    assert after["recipe"]["sha256"] != before["recipe"]["sha256"]
    assert after["files"]["train.py"] == before["files"]["train.py"]


# -- resolved.toml is a recipe ------------------------------------------------------


def _plan_values(plan):
    return [(s.name, s.value, s.section) for s in plan.settings], plan.formulas


@pytest.mark.parametrize(
    "variant",
    [
        {"data.sources": [{"path": "data/*.jsonl", "text_field": "body"}]},
        {"data.sources": [{"path": ["a/*.txt", "b/*.md"]}], "train.max_steps": None, "train.epochs": 2},
        {"data.sources": [{"path": "x.jsonl"}], "output.dir": "runs/x", "launch.num_processes": 2},
        pytest.param(
            {"data.sources": [{"path": "x.jsonl"}], "schedule.min_lr": 1e-5, "optim.lr": 1e-3},
            id="min_lr",
        ),
        pytest.param(
            {},
            id="builtin-source",
        ),
    ],
    ids=lambda v: ",".join(v) if isinstance(v, dict) else None,
)
def test_resolved_toml_resolves_to_the_same_plan(variant, write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = write_recipe(variant, filename="recipes/r.toml")
    monkeypatch.chdir(tmp_path)
    for name in ("data/a.jsonl", "a/x.txt", "b/y.md", "x.jsonl"):  # what the variants' globs match
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text('{"body": "a document"}\n')
    written, plan = build("recipes/r.toml", ["train.log_every=5"])
    again = tmp_path / "again.toml"
    shutil.copy(written.dir / "resolved.toml", again)
    try:
        replan, _ = plan_recipe("again.toml", build_dir=written.dir)
    except RecipeError as exc:
        pytest.fail(f"resolved.toml of {path.name} is not a valid recipe:\n{exc}")
    assert _plan_values(replan) == _plan_values(plan)
    assert replan["log_every"] == 5  # the override is baked in
    # every value of resolved.toml is written out, so nothing comes from a default
    assert not [s.name for s in replan.settings if s.origin == "default" and s.value is not None]


# -- what a build refuses --------------------------------------------------------------


def test_refuses_the_build_directory_of_another_recipe(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    first = write_recipe({"recipe.name": "first"}, filename="first.toml")
    second = write_recipe({"recipe.name": "second"}, filename="second.toml")
    build(first.name, build_dir="build/shared")
    before = hashes(tmp_path / "build" / "shared")
    with pytest.raises(RecipeError) as info:
        build(second.name, build_dir="build/shared")
    (d,) = info.value.diagnostics
    assert d.message == "build/shared is the build of recipe `first`, not `second`"
    assert d.help == "choose another directory with -o"
    assert hashes(tmp_path / "build" / "shared") == before


def test_refuses_a_directory_that_is_not_a_build(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe()
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(RecipeError) as info:
        build(recipe.name, build_dir="precious")
    assert "is not empty and is not a recipec build" in info.value.diagnostics[0].message
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (tmp_path / "precious").iterdir()) == ["notes.txt"]


def test_refuses_a_file_in_the_way(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe()
    (tmp_path / "out").write_text("a file")
    with pytest.raises(RecipeError):
        build(recipe.name, build_dir="out")
    assert (tmp_path / "out").read_text() == "a file"


def test_builds_into_an_empty_directory(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe()
    (tmp_path / "empty").mkdir()
    written, _ = build(recipe.name, build_dir="empty")
    assert (tmp_path / "empty" / "train.py").is_file()
    assert written.dir == Path("empty")


def test_a_lock_that_is_not_an_object_is_refused_cleanly(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe()
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / LOCK_FILE).write_text("[]")
    with pytest.raises(RecipeError):
        build(recipe.name, build_dir="odd")


def test_refuses_an_output_dir_holding_another_recipes_run(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe({"output.dir": "runs/shared"})
    (tmp_path / "runs" / "shared").mkdir(parents=True)
    (tmp_path / "runs" / "shared" / "run.json").write_text(json.dumps({"name": "someone-else"}))
    with pytest.raises(RecipeError) as info:
        build(recipe.name)
    (d,) = info.value.diagnostics
    assert d.message == "output directory runs/shared holds a run of recipe `someone-else`; this would overwrite it"
    assert d.location.source_line == 'dir = "runs/shared"'
    assert not (tmp_path / "build").exists(), "nothing is written when the build is refused"


def test_accepts_an_output_dir_holding_its_own_run(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe()
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / "run.json").write_text(json.dumps({"name": "tiny", "status": "completed"}))
    build(recipe.name)
    assert (tmp_path / "build" / "tiny" / "train.py").is_file()


# -- failures leave nothing half-written; rebuilds leave nothing stale -----------------


class _FailingWrites:
    """Make the build's third file write fail, as a full disk would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.count = 0
        real_text, real_bytes = Path.write_text, Path.write_bytes

        def failing(real):
            def write(path, *args, **kwargs):
                self.count += 1
                if self.count == 3:
                    raise OSError(28, "No space left on device")
                return real(path, *args, **kwargs)

            return write

        monkeypatch.setattr(Path, "write_text", failing(real_text))
        monkeypatch.setattr(Path, "write_bytes", failing(real_bytes))


def test_failed_build_keeps_the_previous_build(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe()
    build(recipe.name)
    before = hashes(tmp_path / "build" / "tiny")
    with monkeypatch.context() as m:
        _FailingWrites(m)
        with pytest.raises(OSError):
            build(recipe.name, ["train.max_steps=50"])
    assert hashes(tmp_path / "build" / "tiny") == before


def test_failed_first_build_leaves_no_build_directory(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe()
    with monkeypatch.context() as m:
        _FailingWrites(m)
        with pytest.raises(OSError):
            build(recipe.name)
    assert not (tmp_path / "build" / "tiny").exists()


def test_failed_build_leaves_no_temporary_directory(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe()
    (tmp_path / "build").mkdir()
    with monkeypatch.context() as m:
        _FailingWrites(m)
        with pytest.raises(OSError):
            build(recipe.name)
    assert list((tmp_path / "build").iterdir()) == []


def test_render_failure_writes_nothing(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe()

    def broken(plan, plot=None):
        raise RuntimeError("template bug")

    monkeypatch.setattr("recipec.render.render", broken)  # build_plan imports it when called
    with pytest.raises(RuntimeError):
        build(recipe.name)
    assert not (tmp_path / "build").exists()


def test_rebuild_removes_files_no_longer_generated(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe()
    build(recipe.name)
    built = tmp_path / "build" / "tiny"
    (built / "stale.py").write_text("print('old')\n")
    (built / "recipec_runtime" / "gone.py").write_text("")
    build(recipe.name)
    assert not (built / "stale.py").exists()
    assert not (built / "recipec_runtime" / "gone.py").exists()
    assert sorted(p.name for p in built.parent.iterdir()) == ["tiny"], "no temporary or old directory is left"


def test_rebuild_with_a_changed_runtime_drops_the_removed_module(
    write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe()
    real = build_module.runtime_files()
    monkeypatch.setattr(build_module, "runtime_files", lambda: {**real, "recipec_runtime/extra.py": "x = 1\n"})
    build(recipe.name)
    assert (tmp_path / "build" / "tiny" / "recipec_runtime" / "extra.py").exists()
    monkeypatch.setattr(build_module, "runtime_files", lambda: real)
    written, _ = build(recipe.name)
    assert not (tmp_path / "build" / "tiny" / "recipec_runtime" / "extra.py").exists()
    assert "recipec_runtime/extra.py" not in written.lock["files"]


# -- paths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "depth",
    [
        1,
        2,
        pytest.param(
            3,
        ),
        4,
    ],
)
def test_project_dir_is_relative_for_any_build_dir_inside_the_project(
    depth: int, write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    write_recipe(filename="recipes/r.toml")
    build_dir = "/".join(f"d{i}" for i in range(depth))
    written, plan = build("recipes/r.toml", build_dir=build_dir)
    assert plan.build_dir == build_dir
    up = "/".join([".."] * depth)
    assert plan.project_dir == up
    train_py = (tmp_path / build_dir / "train.py").read_text()
    assert f"project_dir = (here / {up!r}).resolve()" in train_py
    assert "recipe_file = 'recipes/r.toml'" in train_py
    assert str(tmp_path) not in train_py


def test_build_with_project_argument(write_recipe, tmp_path: Path):
    """compiler.build(recipe, overrides, build_dir, project=...) works without changing directory."""
    recipe = write_recipe()
    written, plan = build(recipe, (), tmp_path / "build" / "x", project=tmp_path)
    assert plan.build_dir == "build/x"
    assert plan.recipe_file == "recipe.toml"
    assert (tmp_path / "build" / "x" / "train.py").is_file()


@pytest.mark.parametrize("table", ["model", "tokenizer"])
def test_a_local_path_that_does_not_exist_is_a_located_error_in_build(table, write_recipe, tmp_path: Path):
    pretrained = {"model.path": "./base", "model.init": None, "model.config": None}
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text('{"model_type": "llama"}')
    recipe = write_recipe({**pretrained, f"{table}.path": "./missing"}, tokenizer=None)
    with pytest.raises(RecipeError) as info:
        build(recipe, (), tmp_path / "build" / "x", project=tmp_path)
    (err,) = info.value.diagnostics
    assert err.message == "'./missing' does not exist (paths are relative to the directory recipec runs in)"
    assert err.location.source_line == 'path = "./missing"'
    assert err.help == f"a local {table} is a directory that save_pretrained wrote; a hub id has no leading ./, ../, / or ~"
    assert not (tmp_path / "build" / "x").exists()
    (tmp_path / "missing").write_text("a file, not a directory")
    with pytest.raises(RecipeError) as info:
        build(recipe, (), tmp_path / "build" / "x", project=tmp_path)
    assert info.value.diagnostics[0].message == f"'./missing' is a file; a local {table} is a directory that save_pretrained wrote"
    (tmp_path / "missing").unlink()
    (tmp_path / "missing").mkdir()
    build(recipe, (), tmp_path / "build" / "x", project=tmp_path)


def test_model_path_with_unknown_home_does_not_crash(write_recipe, tmp_path: Path):
    """A local path under the home of a user that does not exist is a located error, not a traceback."""
    recipe = write_recipe(
        {"model.path": "~no-such-user-recipec/model", "model.init": None, "model.config": None}, tokenizer=None
    )
    with pytest.raises(RecipeError) as info:
        plan_recipe(recipe, project=tmp_path)
    (err,) = info.value.diagnostics
    assert err.message == "`model.path` starts with '~no-such-user-recipec', a user that does not exist"
    assert err.location.source_line.startswith("path = ")
