"""Will the script find the pretrained files it loads? Warnings at the recipe key for a hub model, tokenizer or
adapter the offline script will not find in the local hub cache, and for a model directory (local, or a snapshot
in the cache) that lacks weights; none when everything is there or the script may download."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from recipec.compiler import plan_recipe
from recipec.pretrained_files import missing_weights

RECIPE = """\
[recipe]
name = "tiny"

[model]
path = "{model}"
{revision}

[data]
seq_len = 64

[[data.sources]]
path = "data/docs.jsonl"

[train]
micro_batch_size = 2
batch_size = 4
max_steps = 5
save_every = 0
eval_every = 0

[launch]
cpu = true
{launch}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "docs.jsonl").write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(20)))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _config(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 128,
    }))


def _snapshot(project: Path, repo: str, files: dict[str, bytes | None]) -> Path:
    """A hub cache entry as huggingface_hub leaves it: refs/main, and a snapshot whose files link into blobs/; a
    file given as None is a link whose blob never arrived (a download cut short)."""
    folder = project / "hub" / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    _config(snapshot)
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(name.encode()).hexdigest()
        if data is not None:
            blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    return snapshot


def _warnings(project: Path, model: str, *, revision: str | None = None, launch: str = "", extra: str = "") -> list[tuple[int, str]]:
    path = project / "recipes" / "tiny.toml"
    path.parent.mkdir(exist_ok=True)
    text = RECIPE.format(model=model, revision="" if revision is None else f'revision = "{revision}"', launch=launch) + extra
    path.write_text(text)
    plan, _ = plan_recipe(path, ())
    return [(w.location.line, w.message) for w in plan.warnings if "hub cache" in w.message or "weights" in w.message or "shards" in w.message]


def _index(shards: list[str]) -> bytes:
    return json.dumps({"metadata": {}, "weight_map": {f"layer.{i}": s for i, s in enumerate(shards)}}).encode()


def test_a_hub_model_not_in_the_cache_warns_when_the_script_runs_offline(project: Path) -> None:
    [(line, message)] = _warnings(project, "org/absent")
    assert line == 5
    assert message == (
        f"the model org/absent (revision main) is not in the local hub cache ({project / 'hub'}), and the script runs "
        "offline (launch.hub_offline = true): it stops when it loads it"
    )
    assert _warnings(project, "org/absent", launch="hub_offline = false") == []
    path = project / "recipes" / "tiny.toml"
    path.write_text(RECIPE.format(model="org/absent", revision='revision = "v2"', launch=""))
    plan, _ = plan_recipe(path, ())
    [warning] = [w for w in plan.warnings if "hub cache" in w.message]
    assert "(revision v2)" in warning.message and "`hf download org/absent --revision v2`" in warning.help


def test_a_hub_tokenizer_and_adapter_not_in_the_cache_warn_at_their_keys(project: Path) -> None:
    _snapshot(project, "org/tiny", {"model.safetensors": b"weights"})
    extra = '\n[tokenizer]\npath = "org/tok"\n\n[peft]\nmethod = "lora"\nadapter = "org/adapter"\nadapter_revision = "v1"\n'
    warnings = _warnings(project, "org/tiny", extra=extra)
    lines = (project / "recipes" / "tiny.toml").read_text().splitlines()
    assert [(line, message.split(" (")[0]) for line, message in warnings] == [
        (lines.index('path = "org/tok"') + 1, "the tokenizer org/tok"),
        (lines.index('adapter = "org/adapter"') + 1, "the adapter org/adapter"),
    ]
    assert "(revision v1)" in warnings[1][1]


def test_a_cached_model_that_lacks_weights_warns(project: Path) -> None:
    _snapshot(project, "org/whole", {"model.safetensors": b"weights"})
    assert _warnings(project, "org/whole") == []
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    _snapshot(project, "org/sharded", {"model.safetensors.index.json": _index(shards), shards[0]: b"a", shards[1]: b"b"})
    assert _warnings(project, "org/sharded") == []
    snapshot = _snapshot(project, "org/partial", {"model.safetensors.index.json": _index(shards), shards[0]: b"a", shards[1]: None})
    [(line, message)] = _warnings(project, "org/partial")
    assert message == (
        f"the model org/partial at commit {snapshot.name[:12]} in the local hub cache lacks 1 of the 2 shards its "
        "model.safetensors.index.json names (model-00002-of-00002.safetensors), and the script runs offline "
        "(launch.hub_offline = true): its from_pretrained stops there"
    )
    _snapshot(project, "org/config-only", {})
    [(_, message)] = _warnings(project, "org/config-only")
    assert "in the local hub cache holds no weights (no model.safetensors, pytorch_model.bin or sharded index" in message
    assert _warnings(project, "org/config-only", launch="hub_offline = false") == []  # the script fetches the rest
    (_snapshot(project, "org/no-config", {"model.safetensors": b"w"}) / "config.json").unlink()
    [(_, message)] = _warnings(project, "org/no-config")
    assert message.startswith("the model org/no-config at commit ") and " in the local hub cache has no config.json, " in message


def test_a_local_model_without_weights_warns(project: Path) -> None:
    (project / "model").mkdir()
    assert _warnings(project, "./model") == []  # not a model yet: no config.json, which check and explain report
    _config(project / "model")
    [(line, message)] = _warnings(project, "./model")
    assert (line, message) == (5, "./model holds no weights (no model.safetensors, pytorch_model.bin or sharded index such as model.safetensors.index.json): the script's from_pretrained needs them")
    (project / "model" / "pytorch_model.bin").write_bytes(b"w")
    assert _warnings(project, "./model") == []




@pytest.mark.parametrize(
    "files, expected",
    [
        ({"model.safetensors": b"w"}, None),
        ({"pytorch_model.bin": b"w"}, None),
        ({}, "holds no weights"),
        ({"model.safetensors.index.json": _index(["a", "b"]), "a": b"", "b": b""}, None),
        ({"model.safetensors.index.json": _index(["a", "b", "c", "d", "e"]), "a": b""}, "lacks 4 of the 5 shards its model.safetensors.index.json names (b, c, d and 1 more)"),
        ({"pytorch_model.bin.index.json": _index(["a"])}, "lacks 1 of the 1 shards its pytorch_model.bin.index.json names (a)"),
        ({"model.safetensors.index.json": b"{}", "model.safetensors": b"w"}, "has an index model.safetensors.index.json that cannot be read"),
    ],
)
def test_missing_weights(tmp_path: Path, files: dict[str, bytes], expected: str | None) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    found = missing_weights(tmp_path)
    assert found == expected if expected is None else found is not None and found.startswith(expected)
