"""Built-in corpora, collate, replay and fingerprints (recipec/runtime/data.py)."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("datasets")

import datasets  # noqa: E402
import torch  # noqa: E402

from recipec.runtime import data  # noqa: E402

datasets.disable_progress_bars()


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


def test_collate_packed_labels_are_the_inputs():
    rows = [{"input_ids": torch.tensor([1, 2, 3], dtype=torch.int32)}, {"input_ids": [4, 5, 6]}]
    batch = data.collate(rows)
    assert set(batch) == {"input_ids", "labels"}
    assert batch["input_ids"].dtype == torch.int64 and batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert torch.equal(batch["labels"], batch["input_ids"])
    batch["labels"][0, 0] = 99  # a copy: the loss may not write into the inputs
    assert batch["input_ids"][0, 0] == 1


def test_collate_unpacked_masks_padding_out_of_the_labels():
    rows = [{"input_ids": [7, 8, 0, 0], "attention_mask": [1, 1, 0, 0]}, {"input_ids": [9, 9, 9, 9], "attention_mask": [1] * 4}]
    batch = data.collate(rows)
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    assert batch["labels"].tolist() == [[7, 8, -100, -100], [9, 9, 9, 9]]
    assert batch["attention_mask"].dtype == torch.int64
    with pytest.raises(ValueError):
        data.collate([])


def test_fingerprint():
    rows = [[i, i + 1, i + 2, i + 3] for i in range(0, 40, 4)]
    ds = datasets.Dataset.from_dict({"input_ids": rows}).with_format("torch")
    fp = data.dataset_fingerprint(ds)
    assert len(fp) == 64 and data.dataset_fingerprint(ds) == fp
    # independent of output format and of how the Arrow data is chunked
    assert data.dataset_fingerprint(ds.with_format(None)) == fp
    halves = datasets.concatenate_datasets([ds.select(range(5)), ds.select(range(5, 10))])
    assert data.dataset_fingerprint(halves) == fp
    # order matters
    assert data.dataset_fingerprint(ds.select([1, 0] + list(range(2, 10)))) != fp
    # row boundaries matter even for the same token stream
    flat = sum(rows[:2], [])
    a = datasets.Dataset.from_dict({"input_ids": [flat[:4], flat[4:]]})
    b = datasets.Dataset.from_dict({"input_ids": [flat[:2], flat[2:]]})
    assert data.dataset_fingerprint(a) != data.dataset_fingerprint(b)


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


def test_a_held_out_set_is_filled_up_with_rows_the_loss_does_not_see():
    """5 rows over 2 processes of micro-batch 2: filled up to 8, the 3 fillers copies of the first row whose
    labels are all -100, so that the loss tokens are those of the 5 rows, as one process counts them."""
    import torch

    rows = [{"input_ids": [i, i + 1, i + 2]} for i in range(5)]
    filled = data.FilledUp(rows, 4)
    assert len(filled) == 8 and len(data.FilledUp(rows[:4], 4)) == 4 and len(data.FilledUp([], 4)) == 0
    assert [filled[i] for i in range(5)] == rows and filled[7] == {"input_ids": [0, 1, 2], data.FILLER: True}
    collate = data.unseen_fillers(data.collate)
    batch = collate([filled[i] for i in (4, 5, 6, 7)])
    assert set(batch) == {"input_ids", "labels"}
    assert batch["labels"].tolist() == [[4, 5, 6]] + [[-100] * 3] * 3
    whole = data.collate(rows)
    pieces = [collate([filled[i] for i in range(j, j + 2)]) for j in range(0, 8, 2)]
    assert sum(int(data.loss_tokens(b["labels"])) for b in pieces) == int(data.loss_tokens(whole["labels"]))
    assert torch.equal(collate(rows[:2])["labels"], data.collate(rows[:2])["labels"])  # no fillers: unchanged
