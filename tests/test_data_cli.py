"""`recipec data`: runs the data stage from a recipe, prints the report, reports bad data."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipec.cli import main
from recipec.compiler import build
from recipec.runtime import stage_request

pytest.importorskip("transformers")

PROSE = "the quick brown fox jumps over the lazy dog and then the dog runs after the fox into the woods"


def _data(tmp_path: Path, lines: list[str]) -> None:
    (tmp_path / "corpus").mkdir(exist_ok=True)
    (tmp_path / "corpus" / "a.jsonl").write_text("".join(line + "\n" for line in lines))


def _invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str):
    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(main, ["--no-color", "data", *args])


def _sources(**extra) -> dict:
    return {"sources": [{"path": "corpus/*.jsonl", **extra}], "seq_len": 16, "eval_fraction": 0.1}


def test_data_runs_the_stage_prints_the_table_and_reuses_the_cache(write_recipe, tmp_path, monkeypatch):
    _data(tmp_path, [json.dumps({"text": f"{PROSE} {i}"}) for i in range(30)] + [json.dumps({"text": f"{PROSE} 0"})])
    write_recipe(data=_sources(), text='[[data.filters]]\ntype = "exact_dedup"')
    first = _invoke(tmp_path, monkeypatch, "recipe.toml")
    assert first.exit_code == 0, first.output
    assert "exact_dedup" in first.stdout and "mixture 0" in first.stdout
    assert "documents: 31 read, 30 kept (27 train, 3 held out)" in first.stdout
    report_path = Path(first.stdout.strip().splitlines()[-1].split("report: ", 1)[1])
    report = json.loads((tmp_path / report_path).read_text())
    assert report["filters"][0]["docs_dropped"] == 1
    assert report["filters"][0]["examples"][0]["id"] == "corpus/a.jsonl:31"

    again = _invoke(tmp_path, monkeypatch, "recipe.toml", "--json")
    assert again.exit_code == 0, again.output
    assert "data: cached" in again.stderr
    assert json.loads(again.stdout)["documents"]["kept"] == 30


def test_a_malformed_line_names_the_file_and_line_or_is_skipped(write_recipe, tmp_path, monkeypatch):
    _data(tmp_path, [json.dumps({"text": f"{PROSE} {i}"}) for i in range(5)] + ['{"text": "broken'] + [json.dumps({"text": PROSE})])
    write_recipe(data=_sources())
    result = _invoke(tmp_path, monkeypatch, "recipe.toml")
    assert result.exit_code == 1
    assert "corpus/a.jsonl:6: not valid JSON" in result.stderr
    assert "Traceback" not in result.output

    write_recipe(data=_sources(on_error="skip"))
    skipped = _invoke(tmp_path, monkeypatch, "recipe.toml", "--json")
    assert skipped.exit_code == 0, skipped.output
    source = json.loads(skipped.stdout)["sources"][0]
    assert source["skipped"] == 1 and source["documents"] == 6
    assert source["skipped_examples"][0].startswith("corpus/a.jsonl:6")


def test_a_missing_text_field_names_the_source_and_the_field(write_recipe, tmp_path, monkeypatch):
    _data(tmp_path, [json.dumps({"body": PROSE})])
    write_recipe(data={**_sources(name="web")})
    result = _invoke(tmp_path, monkeypatch, "recipe.toml")
    assert result.exit_code == 1
    assert "web" in result.stderr and "'text'" in result.stderr and "body" in result.stderr


def test_filters_that_drop_everything_are_an_error_with_the_counts(write_recipe, tmp_path, monkeypatch):
    _data(tmp_path, [json.dumps({"text": f"{PROSE} {i}"}) for i in range(5)])
    write_recipe(data=_sources(), text='[[data.filters]]\ntype = "length"\nunit = "words"\nmin = 1000')
    result = _invoke(tmp_path, monkeypatch, "recipe.toml")
    assert result.exit_code == 1
    assert "dropped every document" in result.stderr and "filters[0]" in result.stderr


def test_a_recipe_error_exits_2_before_reading_data(write_recipe, tmp_path, monkeypatch):
    write_recipe(data={"sources": [{"path": "nowhere/*.jsonl"}]})
    result = _invoke(tmp_path, monkeypatch, "recipe.toml")
    assert result.exit_code == 2
    assert "matches no file" in result.stderr and "recipe.toml:" in result.stderr


def test_the_script_passes_the_stage_every_setting_under_its_one_name(write_recipe, tmp_path, monkeypatch):
    """The stage's fields are declared once: resolve emits each, the script passes each by name,
    with the value `recipec data` passes (so both find the same cache entry)."""
    _data(tmp_path, [json.dumps({"text": PROSE})])
    write_recipe(data={**_sources(), "temperature": 2.0, "num_proc": 3, "cache_dir": "cache"}, text='[[data.filters]]\ntype = "exact_dedup"')
    monkeypatch.chdir(tmp_path)
    written, plan = build("recipe.toml")
    settings = {s.name: s for s in plan.settings}
    tree = ast.parse((tmp_path / written.dir / "train.py").read_text())
    config = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in stage_request.FIELDS
    }
    passed = next(
        node.value.keywords for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "data_settings"
    )  # fmt: skip
    assert [(k.arg, k.value.id) for k in passed] == [(name, name) for name in stage_request.FIELDS]
    for name in stage_request.FIELDS:
        assert config[name] == plan[name], name
    for name in stage_request.DATA_FIELDS:  # a [data] key reaches the stage under its own name
        assert settings[name].note == f"data.{name}"
    assert (plan["temperature"], plan["num_proc"], plan["cache_dir"], plan["filters"][0]["type"]) == (2.0, 3, "cache", "exact_dedup")


def test_an_mds_dataset_is_read_and_its_shards_are_in_the_cache_key(write_recipe, tmp_path, monkeypatch):
    import shutil

    fixture = Path(__file__).resolve().parent / "data" / "mds" / "text_zstd"
    shutil.copytree(fixture, tmp_path / "mds" / "train")
    kept = sum(1 for s in json.loads((fixture / "expected.json").read_text(encoding="utf-8")) if s["text"].strip())
    write_recipe(data={"sources": [{"path": "mds/train"}], "seq_len": 16, "eval_fraction": 0.1})  # format told from index.json
    first = _invoke(tmp_path, monkeypatch, "recipe.toml", "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["sources"][0]["documents"] == kept and report["sources"][0]["files"] == 9

    shard = tmp_path / "mds" / "train" / "shard.00004.mds.zstd"
    shard.write_bytes(shard.read_bytes()[:-3])
    damaged = _invoke(tmp_path, monkeypatch, "recipe.toml")
    assert damaged.exit_code == 1
    assert "mds/train/shard.00004.mds.zstd" in damaged.stderr and "index.json says" in damaged.stderr
    assert "Traceback" not in damaged.output
