"""Corpus loading, splitting, tokenization/packing, collation and fingerprints."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import torch  # noqa: E402

from recipec.runtime import data  # noqa: E402
from recipec.runtime.tokenizer import train_bpe  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]

datasets.disable_progress_bars()


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture(scope="module")
def tok():
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    texts = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 10
    return train_bpe(texts, 300)


def _docs(n, seed=0):
    words = "the quick brown fox jumps over a lazy dog while ünïcödé 🙂 watches".split()
    return [" ".join(words[(i * 7 + j + seed) % len(words)] for j in range(1 + (i * 13) % 29)) for i in range(n)]


# --------------------------------------------------------------------------- builtins


def test_python_docs_builtin():
    from pydoc_data.topics import topics

    texts = data.builtin_texts("python-docs")
    assert len(texts) == len([k for k in topics if topics[k]]) >= 50
    assert texts == [topics[k] for k in sorted(topics) if topics[k]]
    assert data.builtin_texts("python-docs") == texts
    assert data.builtin_texts("python-docs", limit=3) == texts[:3]


def test_python_stdlib_builtin():
    files = data._stdlib_files()
    rel = [r for r, _ in files]
    assert rel == sorted(rel)
    assert "os.py" in rel and "json/__init__.py" in rel
    for r in rel:
        parts = r.split("/")[:-1]
        assert not {"site-packages", "test", "tests", "idle_test", "__pycache__"} & set(parts), r
    first = data.builtin_texts("python-stdlib", limit=5)
    assert len(first) == 5
    assert first == data.builtin_texts("python-stdlib", limit=5)
    assert first[0] == files[0][1].read_text(encoding="utf-8")


def test_unknown_builtin():
    with pytest.raises(ValueError, match="python-docs"):
        data.builtin_texts("wikipedia")


def test_load_builtin_source_max_documents(tmp_path):
    ds = data.load_source({"builtin": "python-docs", "max_documents": 7}, tmp_path)
    assert ds.column_names == ["text"] and len(ds) == 7
    assert ds["text"] == data.builtin_texts("python-docs")[:7]


# --------------------------------------------------------------------------- files


def test_jsonl_glob_order_fields_and_empty_rows(tmp_path):
    _jsonl(tmp_path / "data" / "b.jsonl", [{"body": "b1", "id": 3}, {"body": "", "id": 4}, {"body": None, "id": 5}])
    _jsonl(tmp_path / "data" / "a.jsonl", [{"body": "a1", "id": 1}, {"body": "a2", "id": 2}])
    _jsonl(tmp_path / "data" / "sub" / "c.jsonl", [{"body": "c1", "id": 6}])
    ds = data.load_source({"path": ["data/*.jsonl"], "format": None, "text_field": "body"}, tmp_path)
    assert ds.column_names == ["text"]
    assert ds["text"] == ["a1", "a2", "b1"]
    ds = data.load_source({"path": ["data/**/*.jsonl"], "format": "jsonl", "text_field": "body"}, tmp_path)
    assert ds["text"] == ["a1", "a2", "b1", "c1"]
    # globs keep their order; a file matched twice is loaded once
    ds = data.load_source({"path": ["data/sub/*.jsonl", "data/**/*.jsonl"], "text_field": "body"}, tmp_path)
    assert ds["text"] == ["c1", "a1", "a2", "b1"]
    # absolute globs, max_documents
    ds = data.load_source(
        {"path": [str(tmp_path / "data" / "*.jsonl")], "text_field": "body", "max_documents": 2}, "/nonexistent"
    )
    assert ds["text"] == ["a1", "a2"]


def test_parquet(tmp_path):
    _parquet(tmp_path / "p" / "part-1.parquet", [{"text": "p1", "n": 1}, {"text": "p2", "n": 2}])
    _parquet(tmp_path / "p" / "part-0.parquet", [{"text": "p0", "n": 0}])
    ds = data.load_source({"path": ["p/*.parquet"], "format": None, "text_field": "text"}, tmp_path)
    assert ds.column_names == ["text"] and ds["text"] == ["p0", "p1", "p2"]
    ds = data.load_source({"path": ["p/*.parquet"], "format": "parquet", "text_field": "text"}, tmp_path)
    assert ds["text"] == ["p0", "p1", "p2"]


def test_text_is_one_document_per_file(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "one.txt").write_text("line 1\nline 2\n\nparagraph 2\n", encoding="utf-8")
    (tmp_path / "docs" / "two.md").write_text("# Title\n\nbody ü\n", encoding="utf-8")
    (tmp_path / "docs" / "empty.txt").write_text("", encoding="utf-8")
    ds = data.load_source({"path": ["docs/*"], "format": None, "text_field": "ignored"}, tmp_path)
    assert ds["text"] == ["line 1\nline 2\n\nparagraph 2\n", "# Title\n\nbody ü\n"]


def test_explicit_format_overrides_extension(tmp_path):
    _jsonl(tmp_path / "rows.data", [{"text": "x"}])
    with pytest.raises(ValueError, match="rows.data"):
        data.load_source({"path": ["rows.data"]}, tmp_path)
    assert data.load_source({"path": ["rows.data"], "format": "jsonl"}, tmp_path)["text"] == ["x"]


def test_mixed_formats_rejected(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    (tmp_path / "b.txt").write_text("y")
    with pytest.raises(ValueError, match=r"(?s)mix.*a\.jsonl.*b\.txt"):
        data.load_source({"path": ["*"], "format": None}, tmp_path)


def test_missing_text_field_lists_columns(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"title": "t", "body": "b"}])
    with pytest.raises(ValueError, match=r"'text'.*available columns: (title, body|body, title)"):
        data.load_source({"path": ["a.jsonl"], "text_field": "text"}, tmp_path)


def test_non_text_field_rejected(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"text": 1}])
    with pytest.raises(ValueError, match="not text"):
        data.load_source({"path": ["a.jsonl"]}, tmp_path)


def test_glob_without_matches(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load_source({"path": ["nothing/*.jsonl"]}, tmp_path)
    assert "nothing/*.jsonl" in str(err.value) and str(tmp_path) in str(err.value)


def test_load_documents_concatenates_with_source_index(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"text": "a1"}, {"text": "a2"}])
    sources = [
        {"path": ["a.jsonl"], "format": None, "text_field": "text"},
        {"builtin": "python-docs", "max_documents": 3},
    ]
    ds = data.load_documents(sources, tmp_path)
    assert ds.column_names == ["text", "source"]
    assert ds["source"] == [0, 0, 1, 1, 1]
    assert ds["text"][:2] == ["a1", "a2"]
    assert ds["text"][2:] == data.builtin_texts("python-docs", limit=3)
    with pytest.raises(ValueError):
        data.load_documents([], tmp_path)


# --------------------------------------------------------------------------- split


def _text_ds(n):
    return datasets.Dataset.from_dict({"text": [f"doc {i}" for i in range(n)], "source": [0] * n})


def test_split_deterministic_and_disjoint():
    ds = _text_ds(50)
    train, ev = data.split_documents(ds, 0.1, seed=1)
    assert (len(train), len(ev)) == (45, 5)
    assert train.column_names == ["text", "source"]
    assert sorted(list(train["text"]) + list(ev["text"])) == sorted(ds["text"])
    train2, ev2 = data.split_documents(ds, 0.1, seed=1)
    assert (list(train2["text"]), list(ev2["text"])) == (list(train["text"]), list(ev["text"]))
    _, ev3 = data.split_documents(ds, 0.1, seed=2)
    assert list(ev3["text"]) != list(ev["text"])


def test_split_sizes():
    assert [len(p) for p in data.split_documents(_text_ds(10), 0.01, seed=0)] == [9, 1]
    assert [len(p) for p in data.split_documents(_text_ds(2), 0.5, seed=0)] == [1, 1]
    assert [len(p) for p in data.split_documents(_text_ds(3), 0.99, seed=0)] == [1, 2]
    train, ev = data.split_documents(_text_ds(10), 0.0, seed=0)
    assert len(train) == 10 and train["text"] == _text_ds(10)["text"]
    assert len(ev) == 0 and ev.column_names == ["text", "source"]
    with pytest.raises(ValueError, match="document"):
        data.split_documents(_text_ds(1), 0.1, seed=0)
    with pytest.raises(ValueError, match="eval_fraction"):
        data.split_documents(_text_ds(10), 1.0, seed=0)


# --------------------------------------------------------------------------- tokenize


def _stream(tok, texts):
    out = []
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        if ids:
            out += ids + [tok.eos_token_id]
    return out


def test_packing_full_blocks_equal_stream_prefix(tok):
    # more documents than one map batch (1000), so per-batch grouping would differ
    texts = _docs(1500)
    ds = datasets.Dataset.from_dict({"text": texts, "source": [0] * len(texts)})
    seq_len = 37
    packed = data.tokenize_and_pack(ds, tok, seq_len, packing=True)
    assert packed.column_names == ["input_ids", "labels"]
    stream = _stream(tok, texts)
    assert len(stream) % seq_len != 0
    assert len(packed) == len(stream) // seq_len
    rows = packed.with_format(None)[:]
    assert all(len(r) == seq_len for r in rows["input_ids"])
    assert sum(rows["input_ids"], []) == stream[: len(packed) * seq_len]
    assert rows["labels"] == rows["input_ids"]
    first = packed[0]
    assert isinstance(first["input_ids"], torch.Tensor) and first["input_ids"].dtype == torch.int64


def test_packing_with_num_proc(tok):
    texts = _docs(60)
    ds = datasets.Dataset.from_dict({"text": texts})
    one = data.tokenize_and_pack(ds, tok, 16, packing=True)
    two = data.tokenize_and_pack(ds, tok, 16, packing=True, num_proc=2)
    assert data.dataset_fingerprint(one) == data.dataset_fingerprint(two)


def test_no_packing_pads_truncates_and_masks(tok):
    long_text = " ".join(["alpha beta gamma"] * 50)
    texts = ["alpha beta", "", long_text]
    ds = datasets.Dataset.from_dict({"text": texts})
    seq_len = 12
    out = data.tokenize_and_pack(ds, tok, seq_len, packing=False).with_format(None)
    assert out.column_names == ["input_ids", "attention_mask", "labels"]
    assert len(out) == 2  # the empty document is dropped
    short = tok("alpha beta", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(short)
    assert n < seq_len
    row = out[0]
    assert row["input_ids"] == short + [tok.pad_token_id] * (seq_len - n)
    assert row["attention_mask"] == [1] * n + [0] * (seq_len - n)
    assert row["labels"] == short + [-100] * (seq_len - n)
    row = out[1]
    assert row["input_ids"] == tok(long_text, add_special_tokens=False)["input_ids"][:seq_len]
    assert row["attention_mask"] == [1] * seq_len
    assert row["labels"] == row["input_ids"]


def test_no_pad_token_falls_back_to_eos(tok):
    import copy

    nopad = copy.deepcopy(tok)
    nopad.pad_token = None
    assert nopad.pad_token_id is None
    out = data.tokenize_and_pack(datasets.Dataset.from_dict({"text": ["alpha"]}), nopad, 8, packing=False)
    row = out.with_format(None)[0]
    n = sum(row["attention_mask"])
    assert row["input_ids"][n:] == [tok.eos_token_id] * (8 - n)
    assert row["labels"][n:] == [-100] * (8 - n)


def test_tokenize_validates(tok):
    ds = datasets.Dataset.from_dict({"text": ["x"]})
    with pytest.raises(ValueError, match="seq_len"):
        data.tokenize_and_pack(ds, tok, 0, packing=True)


def test_collate_shapes_and_dtypes(tok):
    ds = datasets.Dataset.from_dict({"text": _docs(20)})
    padded = data.tokenize_and_pack(ds, tok, 10, packing=False)
    batch = data.collate([padded[i] for i in range(4)])
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    for value in batch.values():
        assert value.shape == (4, 10) and value.dtype == torch.int64
    assert torch.equal(batch["input_ids"][1], padded[1]["input_ids"])

    packed = data.tokenize_and_pack(ds, tok, 10, packing=True)
    batch = data.collate([packed[0], packed[1], packed[2]])
    assert set(batch) == {"input_ids", "labels"}
    assert batch["input_ids"].shape == (3, 10) and batch["labels"].dtype == torch.int64
    # plain lists work too, and feed a DataLoader
    lists = data.collate([{"input_ids": [1, 2], "labels": [1, 2]}])
    assert lists["input_ids"].dtype == torch.int64 and lists["input_ids"].tolist() == [[1, 2]]
    loader = torch.utils.data.DataLoader(packed, batch_size=5, collate_fn=data.collate)
    assert next(iter(loader))["input_ids"].shape == (5, 10)


def test_fingerprint(tok):
    ds = datasets.Dataset.from_dict({"text": _docs(40)})
    packed = data.tokenize_and_pack(ds, tok, 8, packing=True)
    fp = data.dataset_fingerprint(packed)
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert data.dataset_fingerprint(packed) == fp
    # independent of output format and of how the Arrow data is chunked
    assert data.dataset_fingerprint(packed.with_format(None)) == fp
    halves = datasets.concatenate_datasets([packed.select(range(10)), packed.select(range(10, len(packed)))])
    assert data.dataset_fingerprint(halves) == fp
    # order matters
    swapped = packed.select([1, 0] + list(range(2, len(packed))))
    assert data.dataset_fingerprint(swapped) != fp
    assert data.dataset_fingerprint(packed.shuffle(seed=0)) != fp
    # row boundaries matter even for the same token stream
    flat = sum(packed.with_format(None)[:2]["input_ids"], [])
    a = datasets.Dataset.from_dict({"input_ids": [flat[:8], flat[8:]]})
    b = datasets.Dataset.from_dict({"input_ids": [flat[:4], flat[4:]]})
    assert data.dataset_fingerprint(a) != data.dataset_fingerprint(b)


def test_pipeline_writes_no_cache_files(tmp_path):
    """Loading, splitting and tokenizing must not leave Arrow caches in the home directory."""
    project = tmp_path / "project"
    _jsonl(project / "data" / "a.jsonl", [{"text": f"document number {i} " * 5} for i in range(30)])
    home = tmp_path / "home"
    env = dict(os.environ, HOME=str(home), HF_HOME=str(home / "hf"), XDG_CACHE_HOME=str(home / "cache"))
    env.pop("HF_DATASETS_CACHE", None)
    code = textwrap.dedent(
        f"""
        from recipec.runtime import data, tokenizer
        ds = data.load_documents([{{"path": ["data/*.jsonl"], "format": None, "text_field": "text"}}], {str(project)!r})
        tok = tokenizer.train_bpe(ds["text"], 300)
        train, ev = data.split_documents(ds, 0.2, seed=0)
        packed = data.tokenize_and_pack(train, tok, 16, packing=True)
        padded = data.tokenize_and_pack(ev, tok, 16, packing=False)
        assert len(packed) > 0 and len(padded) == 6
        print(data.dataset_fingerprint(packed))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    written = [p for p in home.rglob("*") if p.is_file()] if home.exists() else []
    assert written == []
    assert sorted(p.name for p in (project / "data").iterdir()) == ["a.jsonl"]


def test_mix_replay_adds_the_stated_share_of_replay_sequences():
    import datasets as hf

    main = hf.Dataset.from_dict({"input_ids": [[i, i] for i in range(95)], "labels": [[i, i] for i in range(95)]})
    replay = hf.Dataset.from_dict({"input_ids": [[1000 + i] * 2 for i in range(3)], "labels": [[1000 + i] * 2 for i in range(3)]})
    mixed = data.mix_replay(main.with_format("torch"), replay, 0.05, seed=1)
    ids = [row[0] for row in mixed.with_format(None)["input_ids"]]
    assert len(ids) == 100 and ids[:95] == list(range(95))
    tail = ids[95:]
    assert all(t >= 1000 for t in tail) and set(tail) == {1000, 1001, 1002}  # cycled through all of replay
    assert mixed.format["type"] == "torch"
    assert data.mix_replay(main, replay, 0.0, seed=1) is main
    again = data.mix_replay(main.with_format("torch"), replay, 0.05, seed=1)
    assert [r[0] for r in again.with_format(None)["input_ids"]] == ids  # deterministic for a seed
    with pytest.raises(ValueError):
        data.mix_replay(main, replay, 1.0, seed=1)
    with pytest.raises(ValueError):
        data.mix_replay(main, replay.select([]), 0.5, seed=1)


def test_select_sources_keeps_the_documents_of_the_given_sources_in_order():
    import datasets as hf

    ds = hf.Dataset.from_dict({"text": ["a", "b", "c", "d"], "source": [0, 1, 0, 2]})
    assert data.select_sources(ds, [0, 1, 2]) is ds
    assert data.select_sources(ds, [0, 2])["text"] == ["a", "c", "d"]
    assert data.select_sources(ds, [1])["text"] == ["b"]
