"""A pretrained model named by its hub id, in the local Hugging Face cache: the build reads its config.json and
tokenizer from the snapshot as it reads a local directory (the checks, the memory estimate, the chat template),
at `model.revision`; the lock records the commit (a local directory: each file's sha256) and verify reports a
model that moved. Nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipec.runtime import file_hashes
from recipec.build import LOCK_FILE
from recipec.cli import main
from recipec.compiler import build, plan_recipe
from recipec.diagnostics import RecipeError

from runtime.chat_fixtures import CHATML_MARKED, chat_tokenizer

RECIPE = """
[recipe]
name = "tiny"

[model]
path = "{model}"
{revision}

[data]
seq_len = 64

[[data.sources]]
path = "{data}"
{source}

[train]
micro_batch_size = 2
batch_size = 4
max_steps = 5
save_every = 0
eval_every = 0

[launch]
cpu = {cpu}
num_processes = {processes}
{extra}
"""


def _model(directory: Path, hidden: int = 32, template: bool = True) -> None:
    """A tiny Llama (4 heads, 2 KV heads) and its ChatML tokenizer, as save_pretrained writes them."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import torch

    tok = chat_tokenizer(CHATML_MARKED)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    LlamaForCausalLM(config).save_pretrained(directory)
    if not template:
        tok.chat_template = None
    tok.save_pretrained(directory)


def _cache(cache: Path, repo: str, commits: dict[str, Path], main: str) -> dict[str, str]:
    """A hub cache holding each directory as a commit of the model repo `repo` (refs/main at `main`); {name: sha}."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    shas = {}
    for name, directory in commits.items():
        shas[name] = hashlib.sha1(f"{repo}/{name}".encode()).hexdigest()
        shutil.copytree(directory, folder / "snapshots" / shas[name])
    (folder / "refs" / "main").write_text(shas[main])
    return shas


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    out = {"small": root / "small", "wide": root / "wide", "plain": root / "plain"}
    _model(out["small"])
    _model(out["wide"], hidden=64)
    _model(out["plain"], template=False)
    return out


@pytest.fixture
def project(tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the current directory: ./model (the small model), and a hub cache holding org/tiny (main: the
    small model; another commit: the wide one) and org/plain (a tokenizer without a chat template)."""
    shutil.copytree(models["small"], tmp_path / "model")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "docs.jsonl").write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(20)))
    (tmp_path / "data" / "chats.jsonl").write_text(
        "".join(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": f"n {i}"}]}) + "\n" for i in range(20))
    )
    _cache(tmp_path / "hub", "org/tiny", {"small": models["small"], "wide": models["wide"]}, main="small")
    _cache(tmp_path / "hub", "org/plain", {"plain": models["plain"]}, main="plain")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _recipe(project: Path, model: str, *, revision: str | None = None, processes: int = 1, extra: str = "",
            chats: bool = False) -> Path:
    path = project / "recipes" / "tiny.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(RECIPE.format(
        model=model,
        revision="" if revision is None else f'revision = "{revision}"',
        data="data/chats.jsonl" if chats else "data/docs.jsonl",
        source='records = "messages"' if chats else "",
        processes=processes,
        cpu=str(processes == 1).lower(),  # a device mesh needs GPUs
        extra=extra,
    ))
    return path


def _errors(path: Path) -> list[str]:
    with pytest.raises(RecipeError) as info:
        plan_recipe(path, ())
    return [d.message for d in info.value.diagnostics if d.severity == "error"]


def _sha(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def test_a_cached_hub_model_is_estimated_and_checked_as_a_local_one(project: Path) -> None:
    """The memory estimate, the mesh's head arithmetic and [model.config]'s keys: the same for the hub id as for the
    same model in a local directory; for a hub id the cache does not hold, none of them (the script checks)."""
    local, _ = plan_recipe(_recipe(project, "./model"), ())
    hub, _ = plan_recipe(_recipe(project, "org/tiny"), ())
    assert local.memory is not None and hub.memory == local.memory
    assert local.model_config_source == "./model/config.json"
    assert hub.model_config_source == f"org/tiny at commit {_sha('org/tiny/small')[:12]} (the local hub cache)"
    missing, _ = plan_recipe(_recipe(project, "org/absent"), ())
    assert missing.memory is None and missing.model_config_source is None
    explained = CliRunner().invoke(main, ["--no-color", "explain", "recipes/tiny.toml", "--set", 'model.path="org/tiny"'])
    assert f"  config                    org/tiny at commit {_sha('org/tiny/small')[:12]} (the local hub cache)\n" in explained.output
    mesh = '\n[launch.parallelism]\ntp_size = 3\n'
    local_errors = _errors(_recipe(project, "./model", processes=3, extra=mesh))
    assert any("num_key_value_heads" in e or "num_attention_heads" in e for e in local_errors), local_errors
    assert _errors(_recipe(project, "org/tiny", processes=3, extra=mesh)) == local_errors
    unknown = '\n[model.config]\nrope_thetaa = 1.0\n'
    path = _recipe(project, "./model")
    path.write_text(path.read_text().replace('[data]', unknown.strip() + "\n\n[data]"))
    local_errors = _errors(path)
    assert local_errors and "rope_thetaa" in local_errors[0]
    path.write_text(path.read_text().replace('path = "./model"', 'path = "org/tiny"'))
    assert _errors(path) == local_errors
    path.write_text(path.read_text().replace('path = "org/tiny"', 'path = "org/absent"'))
    plan, _ = plan_recipe(path, ())
    assert any("checked when the script loads the model's config" in w.message for w in plan.warnings)


def test_the_revision_picks_the_snapshot(project: Path) -> None:
    """model.revision: a commit of the cache reads that snapshot's config (the wide model), a branch its ref."""
    small, _ = plan_recipe(_recipe(project, "org/tiny"), ())
    main, _ = plan_recipe(_recipe(project, "org/tiny", revision="main"), ())
    wide, _ = plan_recipe(_recipe(project, "org/tiny", revision=_sha("org/tiny/wide")), ())
    assert small.memory == main.memory
    assert wide.memory is not None and wide.memory.total > small.memory.total
    absent, _ = plan_recipe(_recipe(project, "org/tiny", revision="v9"), ())
    assert absent.memory is None
    assert absent.memory_unknown.endswith("not in the cache (`hf download org/tiny --revision v9` fetches it)")


def test_a_cached_tokenizer_without_a_chat_template_is_an_error_at_build(project: Path) -> None:
    """Conversations need a template: a hub tokenizer in the cache that has none is refused by the build, as a local
    one is; one that has it builds."""
    shutil.copytree(project / "hub" / "models--org--plain" / "snapshots" / _sha("org/plain/plain"), project / "plain")
    local_errors = _errors(_recipe(project, "./plain", chats=True))
    assert any("has none" in e for e in local_errors), local_errors
    assert _errors(_recipe(project, "org/plain", chats=True)) == local_errors
    plan_recipe(_recipe(project, "org/tiny", chats=True), ())


def test_the_lock_records_the_model(project: Path) -> None:
    """A hub id: its revision and the commit it is at in the cache; not in the cache: an error entry (the build
    goes on); a local directory: each file's sha256."""
    def lock(path: Path) -> dict:
        written, _ = build(path, (), "build/tiny", force=True)
        return json.loads((written.dir / LOCK_FILE).read_text())

    assert lock(_recipe(project, "org/tiny"))["model"] == {"path": "org/tiny", "revision": "main", "commit": _sha("org/tiny/small")}
    wide = _sha("org/tiny/wide")
    assert lock(_recipe(project, "org/tiny", revision=wide))["model"] == {"path": "org/tiny", "revision": wide, "commit": wide}
    entry = lock(_recipe(project, "org/absent"))["model"]
    assert entry["path"] == "org/absent" and "not in the local hub cache" in entry["error"] and "commit" not in entry
    files = lock(_recipe(project, "./model"))["model"]["files"]
    assert files == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (project / "model").iterdir() if p.is_file()}
    assert "model.safetensors" in files and "config.json" in files and "tokenizer.json" in files
    path = _recipe(project, "./model")
    path.write_text(path.read_text().replace("[data]", '[tokenizer]\npath = "org/plain"\n\n[data]'))
    assert lock(path)["tokenizer"] == {"path": "org/plain", "revision": "main", "commit": _sha("org/plain/plain")}
    assert "tokenizer" not in lock(_recipe(project, "./model"))


def test_the_script_warns_of_each_hub_entry_that_moved_since_the_build(project: Path) -> None:
    """What the script prints when it starts: a warning per hub model, tokenizer or adapter the lock pins whose
    revision the cache has at another commit now (or no longer has); nothing for local or unpinned entries."""
    from recipec.runtime.hub import moved_since_build

    path = _recipe(project, "org/tiny")
    path.write_text(path.read_text().replace("[data]", '[tokenizer]\npath = "org/plain"\n\n[data]'))
    written, _ = build(path, (), "build/tiny")
    lock = json.loads((written.dir / LOCK_FILE).read_text())
    assert moved_since_build(lock, ("model", "tokenizer")) == []
    plain, small, wide = _sha("org/plain/plain"), _sha("org/tiny/small"), _sha("org/tiny/wide")
    (project / "hub" / "models--org--tiny" / "refs" / "main").write_text(wide)
    shutil.rmtree(project / "hub" / "models--org--plain")
    assert moved_since_build(lock, ("model", "tokenizer")) == [
        f"warning: model.path org/tiny (revision main) is at commit {wide} now; the lock recorded {small} when the script was built",
        f"warning: tokenizer.path org/plain (revision main) is not in the local hub cache now; the lock recorded {plain} when the script was built",
    ]
    assert moved_since_build(lock, ("peft_adapter",)) == []
    adapter = {"peft_adapter": {"path": "org/tiny", "revision": small, "commit": small, "sha256": None}}
    assert moved_since_build(adapter, ("peft_adapter",)) == []  # a commit as the revision never moves
    adapter["peft_adapter"].update(revision="main")
    assert moved_since_build(adapter, ("peft_adapter",)) == [
        f"warning: peft.adapter org/tiny (revision main) is at commit {wide} now; the lock recorded {small} when the script was built"
    ]
    local = {"model": {"path": "./model", "files": {}}, "tokenizer": {"path": "org/x", "revision": "main", "error": "not cached"}}
    assert moved_since_build(local, ("model", "tokenizer")) == []


def test_verify_reports_a_model_that_moved(project: Path) -> None:
    """verify: refs/main moved to another commit, the commit gone from the cache, a local weight file rewritten."""
    def verify() -> list[str]:
        result = CliRunner().invoke(main, ["--no-color", "verify", "build/tiny"])
        return [line for line in result.output.splitlines() if line.startswith("model changed")]

    build(_recipe(project, "org/tiny"), (), "build/tiny")
    assert verify() == []
    (project / "hub" / "models--org--tiny" / "refs" / "main").write_text(_sha("org/tiny/wide"))
    small, wide = _sha("org/tiny/small")[:12], _sha("org/tiny/wide")[:12]
    assert verify() == [f"model changed: model org/tiny (revision main at commit {small} -> main at {wide})"]
    shutil.rmtree(project / "hub" / "models--org--tiny")
    [line] = verify()
    assert line.startswith("model changed: model org/tiny (cannot be read now: the model org/tiny (revision main) is not in the local hub cache")

    build(_recipe(project, "./model"), (), "build/tiny", force=True)
    assert verify() == []
    weights = project / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    (project / "model" / "notes.txt").write_text("new")
    assert verify() == ["model changed: model ./model: model.safetensors, notes.txt (new)"]
    result = CliRunner().invoke(main, ["--no-color", "verify", "build/tiny"])
    assert result.output.splitlines()[-1] == "1 drift: build/tiny no longer matches its pretrained model"


def test_verify_rehash_reads_the_files_the_hash_cache_vouches_for(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock's digests of a local model come through the file-hash cache; `verify --rehash` reads every file
    again, and finds what the cache cannot see (a file damaged behind the file system's back, simulated by a
    cache entry that vouches for the old digest at the file's new identity)."""
    where = tmp_path / "hashes.json"
    monkeypatch.setenv("RECIPEC_HASH_CACHE", str(where))
    monkeypatch.setattr(file_hashes, "CACHED_FROM", 0)
    monkeypatch.setattr(file_hashes, "SETTLED_NS", 0)
    written, _ = build(_recipe(project, "./model"), (), "build/tiny")
    weights = project / "model" / "model.safetensors"
    locked = json.loads((written.dir / LOCK_FILE).read_text())["model"]["files"]["model.safetensors"]
    assert locked == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert json.loads(where.read_text())["files"][str(weights.resolve())]["sha256"] == locked

    weights.write_bytes(weights.read_bytes()[:-4] + b"\1\1\1\1")
    file_hashes.file_sha256(weights)
    data = json.loads(where.read_text())
    data["files"][str(weights.resolve())]["sha256"] = locked
    where.write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["--no-color", "verify", "build/tiny"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["--no-color", "verify", "--rehash", "build/tiny"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "model changed: model ./model: model.safetensors",
        "1 drift: build/tiny no longer matches its pretrained model",
    ]
    assert json.loads(where.read_text())["files"][str(weights.resolve())]["sha256"] != locked  # mended


def test_check_reads_a_cached_hub_model(project: Path) -> None:
    """`recipec check` instantiates a hub model from its cached config, as a local one; one not cached is not checked."""
    def check(path: Path) -> str:
        result = CliRunner().invoke(main, ["--no-color", "check", str(path.relative_to(project))])
        assert result.exit_code == 0, result.output
        return result.output

    local = check(_recipe(project, "./model"))
    hub = check(_recipe(project, "org/tiny"))
    count = next(line for line in local.splitlines() if "parameters" in line).split(": ", 1)[1]
    assert f"org/tiny): {count}" in hub.replace("(org/tiny): ", "org/tiny): ")
    assert "no local config (a hub model not in the local cache)" in check(_recipe(project, "org/absent"))


def test_what_run_json_records_of_the_model_loaded(project: Path) -> None:
    """recipec_runtime.hub.loaded_model: a hub id at the commit its revision is at in the cache (None when absent), a
    local directory as its path."""
    from recipec.runtime.hub import loaded_model

    small, wide = _sha("org/tiny/small"), _sha("org/tiny/wide")
    assert loaded_model("org/tiny", None) == {"path": "org/tiny", "revision": "main", "commit": small}
    assert loaded_model("org/tiny", wide) == {"path": "org/tiny", "revision": wide, "commit": wide}
    assert loaded_model("org/absent", "v1") == {"path": "org/absent", "revision": "v1", "commit": None}
    assert loaded_model("./model", None) == {"path": "./model"}
