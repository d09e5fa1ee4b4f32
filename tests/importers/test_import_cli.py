"""`recipec import` on the command line: what it writes, prints and exits with, and bad input."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipec.cli import main

CONFIGS = Path(__file__).resolve().parent / "configs"
ALPACA = CONFIGS / "transformers" / "stanford-alpaca.json"


def run(*args: str):
    return CliRunner().invoke(main, ["--no-color", "import", *args])


def test_writes_a_valid_recipe_and_prints_the_summary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(str(ALPACA), "--from", "transformers", "--model", "org/model", "--data", "org/data", "--num-processes", "4")
    assert result.exit_code == 1, result.output  # two keys not imported
    assert "23 keys of" in result.stderr and "19 mapped exactly, 2 approximately, 2 not imported" in result.stderr
    assert "wrote recipes/stanford-alpaca.toml" in result.stdout
    recipe = tomllib.loads((tmp_path / "recipes" / "stanford-alpaca.toml").read_text(encoding="utf-8"))
    assert recipe["recipe"]["name"] == "stanford-alpaca" and recipe["train"]["batch_size"] == 128
    assert recipe["train"]["eval_micro_batch_size"] == 4  # per_device_eval_batch_size
    assert "next: recipec explain recipes/stanford-alpaca.toml" in result.stdout
    validate = CliRunner().invoke(main, ["--no-color", "validate", "recipes/stanford-alpaca.toml"])
    assert validate.exit_code == 0, validate.output


def test_exit_0_when_every_key_is_mapped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = {"output_dir": "out", "learning_rate": 1e-4, "num_train_epochs": 2, "lr_scheduler_type": "cosine", "warmup_steps": 50}
    (tmp_path / "args.json").write_text(json.dumps(args), encoding="utf-8")
    result = run("args.json", "--from", "transformers", "--model", "org/model", "--data", "org/data", "-o", "r.toml")
    assert result.exit_code == 0, result.output
    assert "5 keys of args.json (transformers): 5 mapped exactly, 0 approximately, 0 not imported" in result.stderr


def test_refuses_to_overwrite_without_force_and_prints_with_dash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.toml").write_text("keep", encoding="utf-8")
    result = run(str(ALPACA), "--from", "transformers", "-o", "r.toml")
    assert result.exit_code == 1 and "r.toml exists; pass --force" in result.stderr
    assert (tmp_path / "r.toml").read_text(encoding="utf-8") == "keep"
    result = run(str(ALPACA), "--from", "transformers", "-o", "-", "--model", "a/b", "--data", "c/d")
    assert result.stdout.startswith("# Imported by `recipec import --from transformers`")
    assert tomllib.loads(result.stdout)["optim"]["lr"] == 2e-5


def test_a_missing_local_data_file_is_reported_and_the_recipe_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = {"output_dir": "out", "num_train_epochs": 1}
    (tmp_path / "args.json").write_text(json.dumps(args), encoding="utf-8")
    result = run("args.json", "--from", "transformers", "--model", "org/model", "--data", "data/train.jsonl", "-o", "r.toml")
    assert result.exit_code == 1
    assert "'data/train.jsonl' matches no file" in result.stderr and "r.toml does not validate here" in result.stderr
    assert (tmp_path / "r.toml").exists()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "learning_rate: [1e-4\n", "bad.yaml is not valid YAML or JSON"),
        ("bad.json", '{"learning_rate": 1e-4,}\n', "bad.json is not valid JSON"),
        ("list.yaml", "- learning_rate: 1e-4\n", "list.yaml is a list, not a table of settings"),
        ("empty.yaml", "", "empty.yaml is empty, not a table of settings"),
        ("binary.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "binary.yaml is not a text file"),
        ("args.json", '{"learning_rate": 1e-4, "lr_sheduler_type": "cosine"}', "unknown key `lr_sheduler_type`"),
    ],
)
def test_bad_input_is_a_clear_error_never_a_traceback(tmp_path, monkeypatch, name, text, message):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    result = run(name, "--from", "transformers", "-o", "r.toml")
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "r.toml").exists()


def test_unknown_key_points_at_its_line_with_a_suggestion(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "args.yaml").write_text("output_dir: out\nlearning_rate: 1e-4\nlr_sheduler_type: cosine\n", encoding="utf-8")
    result = run("args.yaml", "--from", "transformers")
    assert result.exit_code == 2
    assert "error: unknown key `lr_sheduler_type`: transformers has no such setting" in result.stderr
    assert "--> args.yaml:3:1" in result.stderr and "did you mean `lr_scheduler_type`?" in result.stderr


def test_missing_file_and_unknown_tool(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("nope.yaml", "--from", "transformers")
    assert result.exit_code == 2 and "nope.yaml: no such file" in result.stderr
    result = run("nope.yaml", "--from", "axolotol")
    assert result.exit_code == 2 and "axolotol" in result.stderr


def test_import_loads_neither_torch_nor_transformers(tmp_path):
    """Like every compile-side command, import reads configs without the training libraries."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import json, sys
        from recipec.cli import main
        try:
            main(["import", {str(ALPACA)!r}, "--from", "transformers", "--model", "a/b", "--data", "c/d", "-o", "r.toml"])
        except SystemExit as exc:
            assert exc.code == 1, exc.code
        print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert not {"torch", "transformers", "accelerate", "datasets", "peft"} & loaded
    assert (tmp_path / "r.toml").exists()


LUDWIG = """\
model_type: llm
base_model: org/model
trainer:
  type: finetune
  learning_rate: {lr}
  batch_size: {batch}
  learning_rate_scheduler:
    warmup_fraction: {warmup}
input_features:
  - name: prompt
    type: text
output_features:
  - name: out
    type: text
"""


def test_values_the_converter_cannot_read_are_named_at_their_lines_all_at_once(tmp_path, monkeypatch):
    """A value of the wrong type that the importer fails on is an error at its key's line, never a
    traceback; every such value is listed, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "l.yaml").write_text(LUDWIG.format(lr="1e-4", batch="two", warmup="[0.1]"), encoding="utf-8")
    result = run("l.yaml", "--from", "ludwig", "--data", "org/data", "-o", "r.toml")
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert 'error: `trainer.batch_size` must be a number, not the string "two"\n --> l.yaml:6:3' in result.stderr
    assert "error: `trainer.learning_rate_scheduler.warmup_fraction` must be a number, not a list\n --> l.yaml:8:5" in result.stderr
    assert "2 errors in l.yaml" in result.stderr and not (tmp_path / "r.toml").exists()
    # the same config with both values right imports
    (tmp_path / "l.yaml").write_text(LUDWIG.format(lr="1e-4", batch="2", warmup="0.1"), encoding="utf-8")
    assert run("l.yaml", "--from", "ludwig", "--data", "org/data", "-o", "r.toml").exit_code in (0, 1)


@pytest.mark.parametrize(
    ("tool", "text", "key", "line"),
    [
        ("axolotl", "base_model: org/m\ndatasets:\n  - path: org/d\n    type: alpaca\nmicro_batch_size: [2]\n", "micro_batch_size", 5),
        ("torchtune", "seed: ~\ntokenizer:\n  _component_: torchtune.models.llama3.llama3_tokenizer\n  path: t.model\n  max_seq_len: many\n", "tokenizer.max_seq_len", 5),
        ("transformers", '{"output_dir": "out",\n "per_device_train_batch_size": "eight"}', "per_device_train_batch_size", 2),
    ],
)
def test_each_tools_unreadable_value_is_named_at_its_line(tmp_path, monkeypatch, tool, text, key, line):
    monkeypatch.chdir(tmp_path)
    name = "c.json" if text.startswith("{") else "c.yaml"
    (tmp_path / name).write_text(text, encoding="utf-8")
    result = run(name, "--from", tool, "--model", "org/m", "--data", "org/d", "-o", "r.toml")
    assert result.exit_code == 2, result.output
    assert f"error: `{key}` must be a number" in result.stderr and f" --> {name}:{line}:" in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_a_value_the_recipe_refuses_is_reported_at_the_config_line_it_came_from(tmp_path, monkeypatch):
    """A value the importer carries over unchanged and the recipe's validation refuses: the error
    points at the config's key, the line it was written to is in the help."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "l.yaml").write_text(LUDWIG.format(lr="fast", batch="2", warmup="0.1"), encoding="utf-8")
    result = run("l.yaml", "--from", "ludwig", "--data", "org/data", "-o", "r.toml")
    assert result.exit_code == 1, result.output
    written = (tmp_path / "r.toml").read_text(encoding="utf-8").splitlines()
    row = next(i for i, text in enumerate(written, 1) if text.startswith("lr = "))
    assert 'error: `optim.lr` must be a number, not the string "fast" (imported from `trainer.learning_rate`)\n --> l.yaml:5:3' in result.stderr
    assert f'help: written to r.toml:{row} as `lr = "fast"`' in result.stderr
    assert "r.toml does not validate here" in result.stderr


def test_a_failure_no_single_key_causes_names_the_file_and_the_failure(tmp_path, monkeypatch):
    """A converter bug (here: one that fails whatever the config says) is a clear error naming the
    file and the failure, not a traceback and not a key the user would fix in vain."""
    from recipec.importers import ludwig

    def broken(draft, options):
        draft.get("trainer.batch_size")
        raise KeyError("no such entry")

    monkeypatch.setattr(ludwig, "convert", broken)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "l.yaml").write_text(LUDWIG.format(lr="1e-4", batch="2", warmup="0.1"), encoding="utf-8")
    result = run("l.yaml", "--from", "ludwig", "--data", "org/data", "-o", "r.toml")
    assert result.exit_code == 2, result.output
    assert "error: recipec cannot import l.yaml: KeyError: 'no such entry'" in result.stderr
    assert "a bug of recipec's ludwig importer" in result.stderr and "`trainer" not in result.stderr


def test_an_empty_value_the_recipe_must_hold_is_named_at_its_key(tmp_path, monkeypatch):
    """torchtune's `lora_rank:` left empty is carried to `peft.r`, which TOML cannot hold as null:
    an error at the config's key, not a failure writing the recipe."""
    import yaml

    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((CONFIGS / "torchtune" / "llama3_1-8B-lora-dpo.yaml").read_text(encoding="utf-8"))
    config["model"]["lora_rank"] = None
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    result = run("c.yaml", "--from", "torchtune", "-o", "r.toml")
    assert result.exit_code == 2, result.output
    assert "error: `model.lora_rank` is empty (null), which `peft.r` cannot be: it needs a value\n  --> c.yaml:" in result.stderr
    assert "lora_rank: null" in result.stderr and not (tmp_path / "r.toml").exists()
