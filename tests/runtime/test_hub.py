"""Data sources on the Hugging Face hub (recipec/runtime/hub.py), read offline from a hub cache the tests write.

The cache is laid out as huggingface_hub writes it (``datasets--org--name/{blobs, refs,
snapshots/<commit>}``, snapshot files linking to content-addressed blobs), so what is
tested is what ``hf download`` or an online first run leaves behind. The oracle for what a
hub source reads is the local reader on the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

datasets = pytest.importorskip("datasets")
pytest.importorskip("transformers")

from recipec.runtime import hub, readers, stage, stage_cache, stage_request  # noqa: E402
from recipec.runtime.readers import DataError  # noqa: E402
from recipec.runtime.tokenizer import train_bpe  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
COMMIT_1 = "1" * 40
COMMIT_2 = "2" * 40

SUBSETS_CARD = """---
configs:
- config_name: en
  data_files:
  - split: train
    path: en/train-*.parquet
  - split: test
    path: en/test.parquet
  default: true
- config_name: fr
  data_files:
  - split: train
    path: fr/*.parquet
---
# a dataset with two subsets
"""


def sentence(i: int, lang: str = "en") -> str:
    words = ("the river runs past an old mill where children play" if lang == "en" else "la riviere passe pres du moulin").split()
    return " ".join(words[(i + k) % len(words)] for k in range(5 + i % 7)) + f" {lang}{i}."


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def parquet(rows, path: pathlib.Path) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path.read_bytes()


def publish(cache: pathlib.Path, repo: str, commit: str, files: dict[str, bytes], refs: tuple[str, ...] = ("main",)) -> pathlib.Path:
    """Write one commit of a dataset repository into the hub cache, as huggingface_hub does."""
    folder = cache / ("datasets--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (folder / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def cache(tmp_path, monkeypatch) -> pathlib.Path:
    """An empty hub cache, offline; datasets prepares its Arrow files under tmp_path too."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    (tmp_path / "hub").mkdir()
    return tmp_path / "hub"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    tok = train_bpe([sentence(i) for i in range(300)] + [sentence(i, "fr") for i in range(300)], 300)
    tok.save_pretrained(path)
    return tok, str(path)


def read(source: dict, project_dir, **kw) -> tuple[list[str], list[str], list[str] | None]:
    texts, ids, examples = [], [], []
    for batch in readers.iter_batches(source, project_dir, batch_size=4, **kw):
        texts += batch.texts
        ids += batch.ids
        examples = None if batch.examples is None else examples + batch.examples
    return texts, ids, examples


def request(project_dir, tokenizer_path, sources):
    settings = dict(
        data_seed=0, sources=sources, filters=[], eval_fraction=0.0, seq_len=16, packing=True,
        segments=[{"sources": list(range(len(sources))), "weights": None}], temperature=None,
        on_exhausted="repeat", count_dropped_tokens=False, max_length=None, overflow="truncate",
    )  # fmt: skip
    return {
        "spec": stage_request.make_spec(settings),
        "project_dir": str(project_dir),
        "cache_dir": "cache",
        "tokenizer": {"path": tokenizer_path, "revision": None, "trust_remote_code": False},
        "num_proc": 1,
    }


def sequences(out: stage_cache.StageOutput) -> list[list[int]]:
    return [list(map(int, row["input_ids"])) for row in stage_cache.load_sequences(out.train_files[0])]


def two_parquet_files(tmp_path) -> dict[str, bytes]:
    rows = [{"text": sentence(i), "id": i} for i in range(40)]
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return {
        "en/train-00000.parquet": parquet(rows[:25], scratch / "a.parquet"),
        "en/train-00001.parquet": parquet(rows[25:], scratch / "b.parquet"),
        "en/test.parquet": parquet([{"text": sentence(i) + " held", "id": i} for i in range(5)], scratch / "c.parquet"),
    }


# --------------------------------------------------------------------------- reading


def test_a_hub_source_reads_what_the_local_reader_reads_from_the_same_files(cache, tmp_path, tokenizer):
    files = two_parquet_files(tmp_path)
    publish(cache, "org/name", COMMIT_1, {**files, "README.md": SUBSETS_CARD.encode()})
    local = tmp_path / "project"
    (local / "en").mkdir(parents=True)
    for name in ("en/train-00000.parquet", "en/train-00001.parquet"):
        (local / name).write_bytes(files[name])

    texts, ids, _ = read({"hub": {"repo": "org/name", "subset": "en", "split": "train"}}, tmp_path)
    want, _, _ = read({"path": "en/train-*.parquet"}, local)
    assert texts == want and len(texts) == 40
    assert ids[0] == "org/name[en]:train#0" and ids[-1] == "org/name[en]:train#39"

    # through the whole stage: the same sequences as the path source gives
    hub_out = stage.run(request(tmp_path, tokenizer[1], [{"hub": {"repo": "org/name", "subset": "en"}}]), log=lambda m: None)
    path_out = stage.run(request(local, tokenizer[1], [{"path": "en/train-*.parquet"}]), log=lambda m: None)
    assert sequences(hub_out) == sequences(path_out) and sequences(hub_out)
    assert hub_out.report["sources"][0]["documents"] == 40 and hub_out.report["sources"][0]["files"] == 2


def test_the_default_subset_another_subset_and_another_split(cache, tmp_path):
    publish(cache, "org/name", COMMIT_1, {**two_parquet_files(tmp_path), "README.md": SUBSETS_CARD.encode()})
    french = parquet([{"text": sentence(i, "fr"), "id": i} for i in range(6)], tmp_path / "fr.parquet")
    publish(cache, "org/name", COMMIT_1, {"fr/part-0.parquet": french})

    default, ids, _ = read({"hub": {"repo": "org/name"}}, tmp_path)
    assert len(default) == 40 and ids[0] == "org/name:train#0"  # `en` is the card's default
    fr, ids, _ = read({"hub": {"repo": "org/name", "subset": "fr"}}, tmp_path)
    assert fr == [sentence(i, "fr") for i in range(6)] and ids[5] == "org/name[fr]:train#5"
    test, _, _ = read({"hub": {"repo": "org/name", "subset": "en", "split": "test"}}, tmp_path)
    assert test == [sentence(i) + " held" for i in range(5)]
    chosen, _, _ = read({"hub": {"repo": "org/name", "data_files": "fr/*.parquet"}}, tmp_path)
    assert chosen == fr


def test_a_revision_is_a_branch_a_tag_or_a_commit(cache, tmp_path):
    publish(cache, "org/name", COMMIT_1, {"data.jsonl": jsonl({"text": f"old {i}"} for i in range(3))}, refs=("v1.0",))
    publish(cache, "org/name", COMMIT_2, {"data.jsonl": jsonl({"text": f"new {i}"} for i in range(4))}, refs=("main",))

    assert read({"hub": {"repo": "org/name"}}, tmp_path)[0] == [f"new {i}" for i in range(4)]
    assert read({"hub": {"repo": "org/name", "revision": "v1.0"}}, tmp_path)[0] == [f"old {i}" for i in range(3)]
    assert read({"hub": {"repo": "org/name", "revision": COMMIT_1}}, tmp_path)[0] == [f"old {i}" for i in range(3)]
    keys = {
        rev: readers.fingerprint_source({"hub": {"repo": "org/name", "revision": rev}}, tmp_path)
        for rev in ("main", "v1.0", COMMIT_1)
    }
    assert keys["main"] != keys["v1.0"]
    # main moves to a new commit with the same files: the key follows the commit
    publish(cache, "org/name", "3" * 40, {"data.jsonl": jsonl({"text": f"new {i}"} for i in range(4))}, refs=("main",))
    assert readers.fingerprint_source({"hub": {"repo": "org/name", "revision": "main"}}, tmp_path) != keys["main"]
    assert hub.fingerprint({"hub": {"repo": "org/name", "revision": "v1.0"}}, "s")["commit"] == COMMIT_1


def test_a_conversation_source_gives_the_examples_of_the_local_reader(cache, tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}
        for i in range(7)
    ]
    data = jsonl(rows)
    card = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train_sft\n    path: data/train_sft-*.jsonl\n---\n"
    publish(cache, "HuggingFaceH4/chats", COMMIT_1, {"README.md": card.encode(), "data/train_sft-0.jsonl": data})
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "train.jsonl").write_bytes(data)

    got = read({"hub": {"repo": "HuggingFaceH4/chats", "split": "train_sft"}, "records": "messages"}, tmp_path)
    want = read({"path": "local/train.jsonl", "records": "messages"}, tmp_path)
    assert got[2] == want[2] and len(got[2]) == 7
    assert got[0] == want[0]
    assert got[1][6] == "HuggingFaceH4/chats:train_sft#6"


# --------------------------------------------------------------------------- streaming


def test_streaming_takes_max_documents_or_stops_before_max_tokens(cache, tmp_path, tokenizer):
    publish(cache, "org/web", COMMIT_1, {"data/train-0.jsonl": jsonl({"text": sentence(i)} for i in range(50))})
    tok, tok_path = tokenizer

    texts, ids, _ = read({"hub": {"repo": "org/web", "streaming": True}, "max_documents": 7}, tmp_path)
    assert texts == [sentence(i) for i in range(7)] and ids[6] == "org/web:train#6"

    counts = [len(tok(sentence(i), add_special_tokens=False)["input_ids"]) for i in range(50)]
    bound = sum(counts[:12]) + counts[12] - 1  # the 13th document would go past it
    source = {"hub": {"repo": "org/web", "streaming": True}, "max_tokens": bound}
    texts, _, _ = read(source, tmp_path, tokenizer=tok)
    assert texts == [sentence(i) for i in range(12)]
    texts, _, _ = read({**source, "max_tokens": sum(counts[:12])}, tmp_path, tokenizer=tok)
    assert len(texts) == 12  # exactly reached: the bound holds
    texts, _, _ = read({**source, "max_documents": 5}, tmp_path, tokenizer=tok)
    assert len(texts) == 5  # the tighter bound wins
    with pytest.raises(DataError, match="max_tokens counts tokens with the recipe's tokenizer"):
        read(source, tmp_path)
    (tmp_path / "local.jsonl").write_bytes(jsonl({"text": sentence(i)} for i in range(50)))
    assert read({"path": "local.jsonl", "max_tokens": bound}, tmp_path, tokenizer=tok)[0] == [sentence(i) for i in range(12)]

    # the stage counts with the recipe's tokenizer, and keys the entry on the bound
    out = stage.run(request(tmp_path, tok_path, [source]), log=lambda m: None)
    assert out.report["sources"][0]["documents"] == 12
    other = stage.run(request(tmp_path, tok_path, [{**source, "max_tokens": bound + counts[12]}]), log=lambda m: None)
    assert other.report["sources"][0]["documents"] == 13 and other.dir != out.dir


# --------------------------------------------------------------------------- the cache key


def test_the_key_holds_the_commit_and_the_content_of_the_files_read(cache, tmp_path, tokenizer):
    snapshot = publish(cache, "org/name", COMMIT_1, {"data/train.jsonl": jsonl({"text": sentence(i)} for i in range(20))})
    source = {"hub": {"repo": "org/name"}}
    req = request(tmp_path, tokenizer[1], [source])
    first = stage.run(req, log=lambda m: None)
    unchanged = stage.run(req, log=lambda m: None)
    assert unchanged.dir == first.dir

    # one byte of a cached data file (the blob its snapshot entry links to) changes
    blob = (snapshot / "data" / "train.jsonl").resolve()
    blob.write_bytes(blob.read_bytes().replace(b"river", b"rivet", 1))
    changed = stage.run(req, log=lambda m: None)
    assert changed.dir != first.dir
    assert sequences(changed) != sequences(first)  # and the new content is what was read

    streamed = {"hub": {"repo": "org/name", "streaming": True}, "max_documents": 3}
    before = readers.fingerprint_source(streamed, tmp_path)
    blob.write_bytes(blob.read_bytes().replace(b"rivet", b"river", 1))
    assert readers.fingerprint_source(streamed, tmp_path) != before


# --------------------------------------------------------------------------- errors


def test_a_split_that_does_not_exist_lists_the_splits(cache, tmp_path):
    publish(cache, "org/name", COMMIT_1, {**two_parquet_files(tmp_path), "README.md": SUBSETS_CARD.encode()})
    with pytest.raises(DataError) as e:
        read({"name": "chat", "hub": {"repo": "org/name", "subset": "en", "split": "validation"}}, tmp_path)
    assert str(e.value).startswith("chat: the dataset org/name (subset en) has no split 'validation'; its splits in the hub cache: test, train")


def test_a_subset_that_does_not_exist_lists_the_subsets(cache, tmp_path):
    publish(cache, "org/name", COMMIT_1, {**two_parquet_files(tmp_path), "README.md": SUBSETS_CARD.encode()})
    with pytest.raises(DataError, match=r"^sources\[0\]: the dataset org/name has no subset 'de'; its subsets: en, fr$"):
        read({"hub": {"repo": "org/name", "subset": "de"}}, tmp_path)


def test_a_dataset_not_in_the_cache_offline_says_how_to_fetch_it(cache, tmp_path):
    with pytest.raises(DataError) as e:
        read({"name": "web", "hub": {"repo": "org/missing", "revision": "v2"}}, tmp_path)
    message = str(e.value)
    assert message.startswith("web: the dataset org/missing (revision v2) is not in the hub cache")
    assert str(cache) in message and "the hub is offline" in message
    assert "`hf download --repo-type dataset org/missing --revision v2`" in message

    publish(cache, "org/name", COMMIT_1, {"README.md": SUBSETS_CARD.encode(), **two_parquet_files(tmp_path)})
    with pytest.raises(DataError, match="the files of org/name \\(subset fr\\) are not in the hub cache; fetch it with `hf download"):
        read({"hub": {"repo": "org/name", "subset": "fr"}}, tmp_path)


def test_a_missing_text_column_names_the_split_and_the_columns(cache, tmp_path):
    publish(cache, "org/name", COMMIT_1, {"data.jsonl": jsonl([{"body": "x", "n": 1}])})
    with pytest.raises(DataError, match=r"^sources\[0\]: org/name:train: no column 'text' \(text_field\); available columns: body, n$"):
        read({"hub": {"repo": "org/name"}}, tmp_path)
    publish(cache, "org/broken", COMMIT_1, {"data/part-0.jsonl": b'{"text": "a"}\n{"text": broken\n'})
    with pytest.raises(DataError, match=r"^sources\[0\]: org/broken:train: cannot load the dataset from data/part-0.jsonl \(JSON parse error"):
        read({"hub": {"repo": "org/broken"}, "on_error": "skip"}, tmp_path)  # datasets parses the file: an error either way


# --------------------------------------------------------------------------- the compiler


def test_build_stays_hermetic_and_locks_the_cached_commit(cache, tmp_path, write_recipe):
    publish(cache, "org/name", COMMIT_1, {"data.jsonl": jsonl([{"text": "x"}])})
    recipe = write_recipe(data={"sources": [{"hub": {"repo": "org/name"}}, {"hub": {"repo": "org/gone"}}]})
    code = (
        "import sys; from recipec.cli import main\n"
        "try: main(['--no-color', 'build', sys.argv[1]])\n"
        "except SystemExit as e: assert not e.code, e.code\n"
        "assert 'datasets' not in sys.modules and 'huggingface_hub' not in sys.modules, 'imported at build time'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", code, str(recipe)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lock = json.loads(next((tmp_path / "build").glob("*/recipe.lock.json")).read_text())
    assert lock["data"][0]["commit"] == COMMIT_1 and lock["data"][0]["source"] == "sources[0]"
    assert "not in the hub cache" in lock["data"][1]["error"]


def test_an_unreachable_hub_reads_the_cache(cache, tmp_path, monkeypatch):
    import huggingface_hub.constants

    publish(cache, "org/name", COMMIT_1, {"data.jsonl": jsonl({"text": f"doc {i}"} for i in range(3))})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert read({"hub": {"repo": "org/name"}}, tmp_path)[0] == ["doc 0", "doc 1", "doc 2"]


def test_recipec_data_runs_a_hub_source_as_it_runs_the_same_files_on_disk(cache, tmp_path, write_recipe, monkeypatch):
    from click.testing import CliRunner

    from recipec.cli import main

    data = jsonl({"text": sentence(i)} for i in range(60))
    publish(cache, "org/name", COMMIT_1, {"data/train-0.jsonl": data})
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "train.jsonl").write_bytes(data)
    monkeypatch.chdir(tmp_path)
    reports = []
    for source in ({"hub": {"repo": "org/name"}}, {"path": "corpus/*.jsonl"}):
        write_recipe(data={"sources": [source], "seq_len": 16})
        result = CliRunner().invoke(main, ["--no-color", "data", "recipe.toml", "--json"])
        assert result.exit_code == 0, result.output
        reports.append(json.loads(result.stdout))
    hub_report, path_report = reports
    assert hub_report["documents"] == path_report["documents"] and hub_report["documents"]["read"] == 60
    assert hub_report["segments"] == path_report["segments"]
    assert hub_report["key"] != path_report["key"]


ONLINE = """
import json, os, sys
from fake_hub import FakeHub

card = b"---\\nconfigs:\\n- config_name: default\\n  data_files:\\n  - split: train_sft\\n    path: data/train_sft-*.jsonl\\n---\\n"
rows = "".join(json.dumps({"text": f"doc {i}"}) + "\\n" for i in range(5)).encode()
hub = FakeHub("org/chats", "c" * 40, {"README.md": card, "data/train_sft-0.jsonl": rows, "data/unused.jsonl": rows})
os.environ["HF_ENDPOINT"] = hub.url  # read when huggingface_hub and datasets are imported, below
from recipec.runtime import readers
import datasets, huggingface_hub.constants

def read(source):
    try:
        texts = [t for batch in readers.iter_batches(source, ".") for t in batch.texts]
        return {"texts": texts, "key": readers.fingerprint_source(source, ".")}
    except readers.DataError as e:
        return {"error": str(e)}

plain = {"hub": {"repo": "org/chats", "split": "train_sft"}}
streamed = {"hub": {"repo": "org/chats", "split": "train_sft", "streaming": True}, "max_documents": 3}
out = {"streamed": read(streamed)}
snapshot = os.path.join(os.environ["HF_HUB_CACHE"], "datasets--org--chats", "snapshots", "c" * 40)
out["cached_while_streaming"] = os.path.exists(os.path.join(snapshot, "data", "train_sft-0.jsonl"))
out["online"] = read(plain)
out["missing_repo"] = read({"hub": {"repo": "org/nothing"}})
out["missing_revision"] = read({"hub": {"repo": "org/chats", "revision": "v9"}})
out["fetched"] = sorted({p.rsplit("/", 1)[-1] for m, p in hub.log if m == "GET" and "/resolve/" in p})
hub.close()
huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
out["offline"] = read(plain)
print(json.dumps(out))
"""


@pytest.mark.slow  # a fresh Python that imports datasets and streams through the stand-in hub: 5-10 s
def test_online_the_split_is_downloaded_into_the_hub_cache_and_then_read_offline_alike(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests" / "runtime")]),
        HF_HUB_CACHE=str(tmp_path / "hub"),
        HF_DATASETS_CACHE=str(tmp_path / "datasets"),
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    done = subprocess.run([sys.executable, "-c", ONLINE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    docs = [f"doc {i}" for i in range(5)]
    assert out["streamed"]["texts"] == docs[:3] and not out["cached_while_streaming"]
    assert out["online"]["texts"] == docs
    assert out["fetched"] == ["README.md", "train_sft-0.jsonl"]  # the split's files, not the whole repository
    assert out["offline"] == out["online"]  # the same documents and the same key, from the cache alone
    assert (tmp_path / "hub" / "datasets--org--chats" / "refs" / "main").read_text() == "c" * 40
    assert out["missing_repo"]["error"].startswith("sources[0]: the dataset org/nothing does not exist on the hub")
    assert out["missing_revision"]["error"] == "sources[0]: the dataset org/chats has no revision 'v9'"
