"""Keys recipec renamed: old recipes keep building, with a warning that names the new key.

No key has been renamed since schema version 1, so these tests install renames of their
own (`recipec.migrate.RENAMES`) the way a later version would.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipec import migrate as migrate_module
from recipec.cli import main
from recipec.compiler import build, plan_recipe
from recipec.diagnostics import RecipeError
from recipec.migrate import RENAMES, Rename, dotted
from recipec.schema import Recipe

SAME_TABLE = Rename(("train", "micro_batch"), ("train", "micro_batch_size"), schema_version=2)
IN_ARRAY = Rename(("data", "sources", "*", "kind"), ("data", "sources", "*", "builtin"), schema_version=2)
OTHER_TABLE = Rename(("train", "output_dir"), ("output", "dir"), schema_version=3)


@pytest.fixture
def renames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrate_module, "RENAMES", (SAME_TABLE, IN_ARRAY, OTHER_TABLE))


def _old_recipe(write_recipe, **changes) -> Path:  # noqa: ANN001
    """The minimal recipe written with the old spellings of micro_batch_size and builtin."""
    path = write_recipe(**changes)
    text = path.read_text().replace("micro_batch_size =", "micro_batch =").replace("builtin =", "kind =")
    path.write_text(text)
    return path


def _line(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_old_keys_are_read_under_their_new_names_with_a_located_warning(renames: None, write_recipe) -> None:  # noqa: ANN001
    path = _old_recipe(write_recipe)
    plan, _ = plan_recipe(path, project=path.parent)
    assert plan.recipe.train.micro_batch_size == 4
    assert plan.recipe.data.sources[0].builtin == "python-docs"
    moved = [w for w in plan.warnings if "was renamed" in w.message]
    assert [w.message for w in moved] == [
        "`train.micro_batch` was renamed to `train.micro_batch_size` in recipec schema version 2; "
        "read as `train.micro_batch_size`",
        "`data.sources[0].kind` was renamed to `data.sources[0].builtin` in recipec schema version 2; "
        "read as `data.sources[0].builtin`",
    ]
    assert moved[0].location.line == _line(path, "micro_batch =")
    assert moved[1].location.line == _line(path, 'kind = "python-docs"')
    assert moved[0].help == "write `micro_batch_size` instead: this spelling will stop working in a later version"


def test_the_build_uses_only_the_new_names(renames: None, write_recipe, tmp_path: Path) -> None:  # noqa: ANN001
    path = _old_recipe(write_recipe)
    written, plan = build(path, (), tmp_path / "b", project=tmp_path)
    resolved = tomllib.loads((written.dir / "resolved.toml").read_text())
    assert resolved["train"]["micro_batch_size"] == 4 and "micro_batch" not in resolved["train"]
    assert resolved["data"]["sources"][0]["builtin"] == "python-docs"
    Recipe.model_validate(resolved)  # resolved.toml is a recipe of the current schema
    assert "micro_batch_size = 4" in (written.dir / "train.py").read_text()


def test_a_schema_error_on_a_moved_value_points_at_the_old_key(renames: None, write_recipe) -> None:  # noqa: ANN001
    path = _old_recipe(write_recipe, train={"micro_batch_size": "four"})
    with pytest.raises(RecipeError) as caught:
        plan_recipe(path, project=path.parent)
    error = caught.value.diagnostics[0]
    assert error.severity == "error" and "train.micro_batch_size" in error.message
    assert error.location.line == _line(path, "micro_batch =")
    # the warning still says what happened to the key
    assert any("`train.micro_batch` was renamed" in d.message for d in caught.value.diagnostics[1:])


def test_both_spellings_is_an_error_at_the_old_one(renames: None, write_recipe) -> None:  # noqa: ANN001
    path = _old_recipe(write_recipe)
    path.write_text(path.read_text().replace("micro_batch = 4", "micro_batch = 4\nmicro_batch_size = 4"))
    with pytest.raises(RecipeError) as caught:
        plan_recipe(path, project=path.parent)
    error = caught.value.diagnostics[0]
    assert error.message == (
        "`train.micro_batch` and `train.micro_batch_size` are both set; `train.micro_batch` is the name "
        "`train.micro_batch_size` had before recipec schema version 2"
    )
    assert error.location.line == _line(path, "micro_batch = 4") and error.help == "remove `train.micro_batch`"


def test_a_key_moves_to_another_table_created_on_the_way(renames: None, write_recipe) -> None:  # noqa: ANN001
    path = write_recipe({"train.output_dir": "elsewhere"})
    plan, _ = plan_recipe(path, project=path.parent)
    assert plan.recipe.output.dir == "elsewhere"
    (warning,) = [w for w in plan.warnings if "renamed" in w.message]
    assert warning.help == "write `dir` in `[output]` instead: this spelling will stop working in a later version"
    assert warning.location.line == _line(path, "output_dir")


def test_chained_renames_end_at_the_newest_name(write_recipe) -> None:  # noqa: ANN001
    path = write_recipe()
    text = path.read_text().replace("micro_batch_size =", "mb =")
    path.write_text(text)
    chain = (
        Rename(("train", "mb"), ("train", "micro_batch"), schema_version=2),
        Rename(("train", "micro_batch"), ("train", "micro_batch_size"), schema_version=3),
    )
    from recipec.source import read_recipe

    data, source = read_recipe(path)
    data, source, warnings = migrate_module.migrate(data, source, chain)
    assert data["train"]["micro_batch_size"] == 4 and "mb" not in data["train"]
    assert [w.location.line for w in warnings] == [_line(path, "mb =")] * 2
    assert source.locate(("train", "micro_batch_size")).line == _line(path, "mb =")


def test_validate_prints_the_warning_and_succeeds(renames: None, write_recipe) -> None:  # noqa: ANN001
    path = _old_recipe(write_recipe)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning: `train.micro_batch` was renamed to `train.micro_batch_size`" in result.output
    assert f"{path}:{_line(path, 'micro_batch =')}" in result.output


def test_without_the_rename_the_old_key_is_an_unknown_key(write_recipe) -> None:  # noqa: ANN001
    path = _old_recipe(write_recipe)
    with pytest.raises(RecipeError) as caught:
        plan_recipe(path, project=path.parent)
    assert any("micro_batch" in d.message for d in caught.value.diagnostics)


def test_dotted_names() -> None:
    assert dotted(("data", "sources", 0, "path")) == "data.sources[0].path"
    assert dotted(("train",)) == "train"


def test_every_rename_points_from_an_unknown_key_to_a_known_one() -> None:
    from recipec.validate import _model_at  # the schema model of a key path

    def known(path: tuple[str, ...]) -> bool:
        concrete = tuple(0 if seg == "*" else seg for seg in path)
        model = _model_at(concrete[:-1])
        return model is not None and concrete[-1] in model.model_fields

    for rename in (*RENAMES, SAME_TABLE, IN_ARRAY, OTHER_TABLE):
        assert known(rename.new) and not known(rename.old), rename
    assert not known(("train", "micro_batch_sizes")) and known(("data", "sources", "*", "builtin"))
