"""verify and the lock's reproducibility record: every drift kind, hand-edit protection, git."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import recipec.render
from recipec.build import LOCK_FILE, TRAINING_PACKAGES, lock_text
from recipec.cli import main
from recipec.runtime import readers
from recipec.verify import verify

DATA = "\n".join(json.dumps({"text": f"document number {i}"}) for i in range(20)) + "\n"
BUILT = "build/tiny"


@pytest.fixture
def project(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the current directory, with a recipe reading data/docs.jsonl."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "docs.jsonl").write_text(DATA, encoding="utf-8")
    write_recipe({"data.sources": [{"path": "data/*.jsonl", "text_field": "text"}], "recipe.seed": 7})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str):
    return CliRunner().invoke(main, ["--no-color", *args])


def run_verify(build_dir: str = BUILT):
    return CliRunner().invoke(verify, [build_dir])


def built(project: Path) -> Path:
    result = cli("build", "recipe.toml")
    assert result.exit_code == 0, result.output
    return project / BUILT


def edit_lock(build_dir: Path, change) -> None:
    lock = json.loads((build_dir / LOCK_FILE).read_text())
    change(lock)
    (build_dir / LOCK_FILE).write_text(lock_text(lock))


def drift_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if not re.match(r"\d+ drifts?: ", line)]


# -- verify ------------------------------------------------------------------------------


def test_fresh_build_verifies(project: Path):
    built(project)
    result = run_verify()
    assert result.exit_code == 0, result.output
    assert result.output == f"ok: {BUILT} matches its recipe, templates, data, model and packages\n"


def test_edited_recipe(project: Path):
    built(project)
    recipe = project / "recipe.toml"
    recipe.write_text(recipe.read_text() + "# a comment\n")
    result = run_verify()
    assert result.exit_code == 1
    assert drift_lines(result.output) == ["recipe edited: recipe.toml"]
    assert result.output.splitlines()[-1] == f"1 drift: {BUILT} no longer matches its recipe"


def test_edited_recipe_that_changes_the_plan_also_changes_files(project: Path):
    built(project)
    recipe = project / "recipe.toml"
    recipe.write_text(recipe.read_text().replace("max_steps = 100", "max_steps = 60"))
    lines = drift_lines(run_verify().output)
    assert "recipe edited: recipe.toml" in lines
    assert "generated file would change: train.py" in lines


def test_hand_edited_generated_file(project: Path):
    build_dir = built(project)
    with open(build_dir / "train.py", "a") as f:
        f.write("# tuned by hand\n")
    (build_dir / "launch.sh").unlink()
    result = run_verify()
    assert result.exit_code == 1
    assert drift_lines(result.output) == [
        "generated file hand-edited: launch.sh (deleted)",
        "generated file hand-edited: train.py",
    ]


def test_changed_data(project: Path):
    built(project)
    data = project / "data" / "docs.jsonl"
    data.write_bytes(data.read_bytes().replace(b"number 3", b"number 4"))
    result = run_verify()
    assert result.exit_code == 1
    [line] = drift_lines(result.output)
    assert line.startswith("data changed: sources[0] (sha256 ")


def test_data_unreadable_now(project: Path, monkeypatch: pytest.MonkeyPatch):
    built(project)
    monkeypatch.setattr(readers, "fingerprint_source", unreadable)
    result = run_verify()
    assert result.exit_code == 1
    assert drift_lines(result.output) == ["data changed: sources[0] (cannot be read now: sources[0]: disk on fire)"]


def test_package_drift(project: Path):
    build_dir = built(project)

    def fake(lock):
        lock["packages"]["numpy"] = "0.0.1"

    edit_lock(build_dir, fake)
    result = run_verify()
    assert result.exit_code == 1
    installed = importlib.metadata.version("numpy")
    assert drift_lines(result.output) == [f"package versions drifted: numpy 0.0.1 -> {installed}"]


def test_changed_template(project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    built(project)
    templates = tmp_path_factory.mktemp("templates")
    shutil.copytree(recipec.render.template_dir(), templates, dirs_exist_ok=True)
    with open(templates / "launch.sh.j2", "a") as f:
        f.write("# a new last line\n")
    monkeypatch.setattr(recipec.render, "template_dir", lambda: templates)
    result = run_verify()
    assert result.exit_code == 1
    assert drift_lines(result.output) == [
        "template changed: launch.sh.j2",
        "generated file would change: launch.sh",
    ]


def test_recipec_version(project: Path):
    build_dir = built(project)
    edit_lock(build_dir, lambda lock: lock.update(recipec_version="0.0.0"))
    result = run_verify()
    assert result.exit_code == 1
    assert drift_lines(result.output) == [f"recipec version differs: 0.0.0 -> {recipec.__version__}"]


def test_not_a_build(project: Path):
    (project / "empty").mkdir()
    result = run_verify("empty")
    assert result.exit_code == 2
    assert "empty is not a recipec build" in result.output


def test_recipe_now_invalid(project: Path):
    built(project)
    recipe = project / "recipe.toml"
    recipe.write_text(recipe.read_text().replace("[train]", "[train]\nbogus = 1"))
    result = run_verify()
    assert result.exit_code == 2
    assert "unknown key `train.bogus`" in result.output


def test_recipe_gone(project: Path):
    built(project)
    (project / "recipe.toml").unlink()
    result = run_verify()
    assert result.exit_code == 2
    assert "recipe.toml" in result.output


def test_verify_reruns_with_the_recorded_overrides(project: Path):
    assert cli("build", "recipe.toml", "--set", "train.max_steps=40").exit_code == 0
    result = run_verify()
    assert result.exit_code == 0, result.output


# -- build refuses to overwrite hand edits ---------------------------------------------------


def test_build_refuses_a_hand_edited_file_and_force_overwrites(project: Path):
    build_dir = built(project)
    original = (build_dir / "train.py").read_text()
    (build_dir / "train.py").write_text(original + "# tuned by hand\n")
    (build_dir / "resolved.toml").unlink()
    result = cli("build", "recipe.toml")
    assert result.exit_code == 2
    assert f"generated file {BUILT}/train.py was edited by hand" in result.output
    assert f"generated file {BUILT}/resolved.toml was deleted by hand" in result.output
    assert "rebuild with --force to overwrite them, or move your edits into the recipe" in result.output
    assert "Traceback" not in result.output
    assert (build_dir / "train.py").read_text().endswith("# tuned by hand\n"), "nothing was overwritten"

    result = cli("build", "recipe.toml", "--force")
    assert result.exit_code == 0, result.output
    assert (build_dir / "train.py").read_text() == original
    assert (build_dir / "resolved.toml").is_file()
    assert run_verify().exit_code == 0


def test_unchanged_build_is_rebuilt_without_force(project: Path):
    build_dir = built(project)
    (build_dir / "notes.txt").write_text("not a generated file\n")
    assert cli("build", "recipe.toml").exit_code == 0


# -- the lock ----------------------------------------------------------------------------------


def test_lock_records_seed_packages_data_and_schema(project: Path):
    lock = json.loads((built(project) / LOCK_FILE).read_text())
    assert lock["schema_version"] == 1
    assert lock["seed"] == 7
    assert set(lock["packages"]) == set(TRAINING_PACKAGES)
    assert all(v is None or isinstance(v, str) for v in lock["packages"].values())
    assert lock["packages"]["numpy"] is not None
    [entry] = lock["data"]
    assert entry["source"] == "sources[0]"
    assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
    assert lock["git"] is None or set(lock["git"]) == {"commit", "recipe_modified", "dirty"}


def unreadable(source, project_dir, *, index=0, fields=()):
    raise readers.DataError(f"sources[{index}]: disk on fire")


def test_unreadable_source_is_recorded_not_fatal(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(readers, "fingerprint_source", unreadable)
    [entry] = json.loads((built(project) / LOCK_FILE).read_text())["data"]
    assert entry == {"source": "sources[0]", "error": "sources[0]: disk on fire"}


def test_lock_is_byte_identical_across_builds(project: Path):
    first = (built(project) / LOCK_FILE).read_bytes()
    assert (built(project) / LOCK_FILE).read_bytes() == first


# -- git ---------------------------------------------------------------------------------


def git(where: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(where), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@needs_git
def test_git_state_in_a_repository(project: Path):
    git(project, "init", "-q")
    git(project, "add", "recipe.toml", "data")
    git(project, "commit", "-q", "-m", "recipe")
    head = git(project, "rev-parse", "HEAD").strip()

    lock = json.loads((built(project) / LOCK_FILE).read_text())
    assert lock["git"] == {"commit": head, "recipe_modified": False, "dirty": False}

    recipe = project / "recipe.toml"
    recipe.write_text(recipe.read_text() + "# uncommitted\n")
    lock = json.loads((built(project) / LOCK_FILE).read_text())
    assert lock["git"] == {"commit": head, "recipe_modified": True, "dirty": True}


@needs_git
def test_git_dirty_when_another_tracked_file_changes(project: Path):
    git(project, "init", "-q")
    git(project, "add", "recipe.toml", "data")
    git(project, "commit", "-q", "-m", "recipe")
    (project / "data" / "docs.jsonl").write_text(DATA + "{}\n")
    lock = json.loads((built(project) / LOCK_FILE).read_text())
    assert lock["git"]["recipe_modified"] is False
    assert lock["git"]["dirty"] is True


def test_git_is_null_outside_a_repository(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(project.parent))
    assert json.loads((built(project) / LOCK_FILE).read_text())["git"] is None


def test_git_is_null_when_git_is_missing(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(project / "no-bin"))
    assert json.loads((built(project) / LOCK_FILE).read_text())["git"] is None


@needs_git
def test_verify_notes_git_state_without_calling_it_drift(project: Path):
    git(project, "init", "-q")
    git(project, "add", "recipe.toml", "data")
    git(project, "commit", "-q", "-m", "recipe")
    first = git(project, "rev-parse", "HEAD").strip()
    built(project)
    result = run_verify()
    assert result.exit_code == 0 and result.output == f"ok: {BUILT} matches its recipe, templates, data, model and packages\n"

    # a commit elsewhere: the build still does what it did, and verify says where git moved
    (project / "notes.txt").write_text("x\n")
    git(project, "add", "notes.txt")
    git(project, "commit", "-q", "-m", "notes")
    second = git(project, "rev-parse", "HEAD").strip()
    result = run_verify()
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"note: the project is at commit {second[:12]} now; the build was made at {first[:12]}"
    )

    # a build from an uncommitted recipe cannot be found in git: say so on every verify
    recipe = project / "recipe.toml"
    recipe.write_text(recipe.read_text() + "# uncommitted\n")
    built(project)
    result = run_verify()
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"note: built from a recipe with changes not committed at {second[:12]}: git does not hold that text"
    )


def test_git_notes():
    from recipec.verify import git_notes

    clean = {"commit": "a" * 40, "recipe_modified": False, "dirty": False}
    assert git_notes(None, None) == [] and git_notes(clean, clean) == []
    assert git_notes({**clean, "dirty": True}, {**clean, "dirty": True}) == [
        f"built at {'a' * 12} from a work tree with uncommitted changes to other files"
    ]
    assert git_notes(clean, None) == [
        f"the build was made at commit {'a' * 12}; the project is not in a git work tree now"
    ]
