"""Corrupt data and tokenizer files end in a message that names the file, never a traceback.

Each input goes the way a user's does: `recipec data RECIPE` (exit 1 and `error: ...`),
and for the tokenizer also the stage's own process (`python -m recipec.runtime.stage`,
which the training script starts) through `stage.run_in_subprocess`. Line-based formats
(jsonl, plain or compressed, and the tokenizer's JSON files) name the line too.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tomli_w
import zstandard
from click.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
pytest.importorskip("transformers")

from conftest import MINIMAL  # noqa: E402
from recipec.cli import main  # noqa: E402
from recipec.runtime import stage, stage_request  # noqa: E402
from recipec.runtime.readers import DataError  # noqa: E402
from recipec.runtime.tokenizer import train_bpe  # noqa: E402

PROSE = "the quick brown fox jumps over the lazy dog and then the dog runs after the fox into the woods"
LINES = "".join(json.dumps({"text": f"{PROSE} {i}"}) + "\n" for i in range(3000)).encode()


def _gz() -> bytes:
    return gzip.compress(LINES)


def _zst() -> bytes:
    return zstandard.ZstdCompressor().compress(LINES)


def _parquet() -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": [f"{PROSE} {i}" for i in range(3000)]}), buf)
    return buf.getvalue()


# name -> (file under corpus/, its bytes, what the message must say besides the file name)
CORRUPT_DATA = {
    "truncated-gzip": ("a.jsonl.gz", lambda: _gz()[: len(_gz()) // 2], r"truncated or corrupt gzip file, after line \d+"),
    "garbage-gzip": ("a.jsonl.gz", lambda: b"not gzip at all\n" * 4, "truncated or corrupt gzip file"),
    "truncated-zstd": ("a.jsonl.zst", lambda: _zst()[: len(_zst()) // 2], "truncated or corrupt zstd file"),
    "garbage-zstd": ("a.jsonl.zst", lambda: b"not zstd at all\n" * 4, "truncated or corrupt zstd file"),
    "truncated-parquet": ("a.parquet", lambda: _parquet()[: len(_parquet()) // 2], "not a readable parquet file"),
    "garbage-parquet": ("a.parquet", lambda: b"PAR1" + b"\x00garbage" * 50, "not a readable parquet file"),
    "empty-parquet": ("a.parquet", lambda: b"", "not a readable parquet file"),
    "jsonl-line-not-json": ("a.jsonl", lambda: LINES + b'{"text": "unterminated\n', r"a\.jsonl:3001: not valid JSON"),
    "jsonl-line-an-array": ("a.jsonl", lambda: b"[1, 2]\n" + LINES, r"a\.jsonl:1: expected a JSON object"),
    "jsonl-line-control-char": (
        "a.jsonl", lambda: LINES + b'{"text": "a\tb"}\n', r"a\.jsonl:3001: not valid JSON \(Invalid control character at column 12\)"
    ),
    "jsonl-line-not-utf8": ("a.jsonl", lambda: b'{"text": "\xff\xfe"}\n' + LINES, r"a\.jsonl:1: not valid UTF-8"),
    "gzip-line-not-json": ("a.jsonl.gz", lambda: gzip.compress(LINES + b"{oops\n"), r"a\.jsonl\.gz:3001: not valid JSON"),
    "zstd-line-not-json": ("a.jsonl.zst", lambda: zstandard.ZstdCompressor().compress(b"{oops\n" + LINES), r"a\.jsonl\.zst:1: not valid JSON"),
}


def _recipe(project: Path, **data_or_tokenizer) -> None:
    recipe = json.loads(json.dumps(MINIMAL))
    recipe["data"] = {"seq_len": 16, "eval_fraction": 0.1, "num_proc": 1, "sources": [{"path": "corpus/*"}]}
    if "tokenizer" in data_or_tokenizer:
        recipe["tokenizer"] = data_or_tokenizer["tokenizer"]
    (project / "recipe.toml").write_text(tomli_w.dumps(recipe), encoding="utf-8")


def _data(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["--no-color", "data", "recipe.toml"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("name", list(CORRUPT_DATA))
def test_corrupt_data_file_is_named_by_recipec_data(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    file, content, expected = CORRUPT_DATA[name]
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / file).write_bytes(content())
    _recipe(tmp_path)
    result = _data(tmp_path, monkeypatch)
    assert result.exit_code == 1, result.output
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: sources[0]: corpus/{file}"), error
    assert re.search(expected, error), error


# -- the tokenizer ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A small BPE tokenizer saved with save_pretrained: its files by name."""
    out = tmp_path_factory.mktemp("tok")
    train_bpe([f"{PROSE} {i}" for i in range(200)], 300).save_pretrained(out)
    return {p.name: p.read_bytes() for p in out.iterdir()}


# name -> (the file replaced, its new bytes, the path the recipe gives, what the message says)
CORRUPT_TOKENIZER = {
    "tokenizer.json-garbage": ("tokenizer.json", b"{not json", "./tok", r"tok/tokenizer\.json:1:2: not valid JSON"),
    "tokenizer.json-truncated": ("tokenizer.json", None, "./tok", r"tok/tokenizer\.json:\d+:\d+: not valid JSON"),
    "tokenizer.json-empty": ("tokenizer.json", b"", "./tok", r"tok/tokenizer\.json:1:1: not valid JSON"),
    "tokenizer.json-not-utf8": ("tokenizer.json", b'{"a": "\xff"}', "./tok", r"tok/tokenizer\.json: not valid UTF-8"),
    "tokenizer.json-wrong-shape": ("tokenizer.json", b'{"a": 1}', "./tok", r"tok: cannot load the tokenizer"),
    "tokenizer_config.json-garbage": ("tokenizer_config.json", b"]", "./tok", r"tok/tokenizer_config\.json:1:1: not valid JSON"),
    "tokenizer_config.json-a-list": ("tokenizer_config.json", b"[1]", "./tok", r"tok/tokenizer_config\.json: expected a JSON object"),
    "special_tokens_map.json-garbage": ("special_tokens_map.json", b"{\n  oops", "./tok", r"tok/special_tokens_map\.json:2:3: not valid JSON"),
}


def _tokenizer_project(project: Path, tokenizer_files: dict[str, bytes], name: str) -> str:
    file, content, path, expected = CORRUPT_TOKENIZER[name]
    (project / "tok").mkdir()
    for other, data in tokenizer_files.items():
        (project / "tok" / other).write_bytes(data)
    if content is None:
        content = tokenizer_files[file][: len(tokenizer_files[file]) // 2]
    (project / "tok" / file).write_bytes(content)
    (project / "corpus").mkdir()
    (project / "corpus" / "a.jsonl").write_bytes(LINES[: LINES.index(b"\n", 20000) + 1])
    _recipe(project, tokenizer={"path": path})
    return expected


@pytest.mark.parametrize("name", list(CORRUPT_TOKENIZER))
def test_corrupt_tokenizer_file_is_named_by_recipec_data(name, tokenizer_files, tmp_path, monkeypatch):
    expected = _tokenizer_project(tmp_path, tokenizer_files, name)
    result = _data(tmp_path, monkeypatch)
    assert result.exit_code == 1, result.output
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: tokenizer: {tmp_path.resolve()}/tok"), error
    assert re.search(expected, error), error


def test_a_tokenizer_path_naming_a_file_is_an_error_at_the_key_before_any_data_is_read(tokenizer_files, tmp_path, monkeypatch):
    """A local tokenizer is the directory save_pretrained wrote: a path to its tokenizer.json is refused at the key."""
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_bytes(b"garbage")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.jsonl").write_bytes(LINES[: LINES.index(b"\n", 20000) + 1])
    _recipe(tmp_path, tokenizer={"path": "./tok/tokenizer.json"})
    result = _data(tmp_path, monkeypatch)
    assert result.exit_code == 2, result.output
    assert "'./tok/tokenizer.json' is a file; a local tokenizer is a directory that save_pretrained wrote" in result.stderr
    assert "recipe.toml:" in result.stderr


def test_the_intact_tokenizer_loads(tokenizer_files, tmp_path, monkeypatch):
    """The same project with the files left whole runs: the errors above are the corruption's."""
    (tmp_path / "tok").mkdir()
    for name, data in tokenizer_files.items():
        (tmp_path / "tok" / name).write_bytes(data)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.jsonl").write_bytes(LINES[: LINES.index(b"\n", 20000) + 1])
    _recipe(tmp_path, tokenizer={"path": "./tok"})
    result = _data(tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", ["tokenizer.json-garbage", "tokenizer_config.json-a-list"])
def test_corrupt_tokenizer_in_the_training_scripts_stage_process(name, tokenizer_files, tmp_path):
    """The training script runs the stage in its own process: its DataError names the file too."""
    expected = _tokenizer_project(tmp_path, tokenizer_files, name)
    from recipec.compiler import plan_recipe

    plan, _ = plan_recipe(tmp_path / "recipe.toml", project=tmp_path)
    request = stage_request.request_from_settings({k: plan.get(k) for k in stage_request.FIELDS}, tmp_path)
    # train.py first looks the entry up in its own process, then runs the stage in a fresh one
    for step in (stage.lookup, lambda r: stage.run_in_subprocess(r, tmp_path / "scratch")):
        with pytest.raises(DataError) as info:
            step(request)
        message = str(info.value)
        assert "Traceback" not in message
        assert message.startswith(f"tokenizer: {tmp_path.resolve()}/tok"), message
        assert re.search(expected, message), message


def test_corrupt_tokenizer_is_named_by_recipec_check(tokenizer_files, tmp_path, monkeypatch):
    """`recipec check` (and `recipec run`'s preflight) loads a local tokenizer for its vocabulary size."""
    expected = _tokenizer_project(tmp_path, tokenizer_files, "tokenizer.json-garbage")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--no-color", "check", "recipe.toml"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == 1, result.output
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: tokenizer: ") and re.search(expected, error), error
