"""The data stage with preference data: pairs as rows of two segments, KTO labels, and the
records that cannot be trained on (a missing side, identical sides, a label that is not a
boolean) as located errors or counted drops."""

import json

import pytest

pytest.importorskip("transformers")

from recipec.runtime import preference as P  # noqa: E402
from recipec.runtime.readers import DataError  # noqa: E402

from .chat_fixtures import IM_END, IM_START  # noqa: E402
from .test_stage_examples import request, rows_of, run, tokenizer_dir, write_jsonl  # noqa: E402,F401

PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
        "chosen": [{"role": "assistant", "content": f"It is {2 * i}."}],
        "rejected": [{"role": "assistant", "content": f"Perhaps {2 * i + 1}, or more."}],
    }
    for i in range(30)
]


def test_pairs_are_one_row_of_two_segments_with_completion_masks(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    write_jsonl(tmp_path / "p.jsonl", PAIRS)
    out = run(request(tmp_path, tokenizer_dir, [{"path": "p.jsonl", "records": "preference"}], seq_len=128))
    rows = rows_of(out)
    assert len(rows) == 30  # one per pair, never packed together
    assert out.report["examples"]["packing_efficiency"] == [None]
    for row in rows:
        mask = row["mask"]
        start = next(i for i, m in enumerate(mask) if m & P.REJECTED)
        assert row["position_ids"] == list(range(start)) + list(range(len(mask) - start))
        chosen = tok.decode([t for t, m in zip(row["input_ids"], mask) if m == P.SUPERVISED])
        rejected = tok.decode([t for t, m in zip(row["input_ids"], mask) if m == P.SUPERVISED | P.REJECTED])
        assert chosen.startswith("It is") and chosen.rstrip().endswith(IM_END)
        assert rejected.startswith("Perhaps") and rejected.rstrip().endswith(IM_END)
        # both sides start with the same rendered prompt, unsupervised
        prompt = tok.decode(row["input_ids"][: next(i for i, m in enumerate(mask) if m)])
        assert prompt.startswith(IM_START + "user") and prompt.rstrip().endswith("assistant")
    assert "<<< rejected >>>" in out.report["examples"]["rendered"][0]["text"]


def test_identical_sides_are_dropped_counted_and_warned(tmp_path, tokenizer_dir):
    from recipec.runtime import stage

    pairs = [dict(p) for p in PAIRS]
    pairs[3]["rejected"] = pairs[3]["chosen"]
    pairs[7]["rejected"] = pairs[7]["chosen"]
    write_jsonl(tmp_path / "p.jsonl", pairs)
    logged = []
    out = stage.run(request(tmp_path, tokenizer_dir, [{"path": "p.jsonl", "records": "preference"}], seq_len=128), log=logged.append)
    assert out.report["examples"]["dropped"] == {"identical_sides": 2}
    assert len(rows_of(out)) == 28
    assert any("2 preference pairs have the same chosen and rejected completion" in m for m in logged)


def test_a_missing_side_names_file_line_and_field(tmp_path, tokenizer_dir):
    pairs = [dict(p) for p in PAIRS]
    del pairs[5]["rejected"]
    write_jsonl(tmp_path / "p.jsonl", pairs)
    with pytest.raises(DataError, match=r"p.jsonl:6: preference record: the record has no `rejected`"):
        run(request(tmp_path, tokenizer_dir, [{"path": "p.jsonl", "records": "preference"}], seq_len=128))


def test_renamed_fields_and_string_pairs(tmp_path, tokenizer_dir):
    rows = [{"q": f"Count to {i}:", "good": " " + " ".join(map(str, range(1, i + 2))), "bad": " no"} for i in range(20)]
    write_jsonl(tmp_path / "p.jsonl", rows)
    source = {"path": "p.jsonl", "records": "preference", "fields": {"prompt": "q", "chosen": "good", "rejected": "bad"}}
    out = run(request(tmp_path, tokenizer_dir, [source], seq_len=128))
    assert len(rows_of(out)) == 20


def test_kto_labels_and_a_label_that_is_not_boolean(tmp_path, tokenizer_dir):
    rows = [
        {"prompt": [{"role": "user", "content": f"Say {i}."}], "completion": [{"role": "assistant", "content": f"{i}."}], "label": i % 3 != 0}
        for i in range(24)
    ]
    write_jsonl(tmp_path / "k.jsonl", rows)
    out = run(request(tmp_path, tokenizer_dir, [{"path": "k.jsonl", "records": "unpaired_preference"}], seq_len=128))
    stored = rows_of(out)
    assert len(stored) == 24
    undesirable = sum(1 for r in stored if r["mask"][0] & P.UNDESIRABLE)
    assert undesirable == 8
    assert all(not any(m & P.REJECTED for m in r["mask"]) for r in stored)
    rows[2]["label"] = "yes"
    write_jsonl(tmp_path / "k.jsonl", rows)
    with pytest.raises(DataError, match=r"k.jsonl:3: unpaired_preference record: `label` is 'yes' \(str\), not a boolean"):
        run(request(tmp_path, tokenizer_dir, [{"path": "k.jsonl", "records": "unpaired_preference"}], seq_len=128))


def test_string_pairs_as_chat_are_rendered_in_the_template_with_the_records_system(tmp_path, tokenizer_dir):
    """A source's as_chat through the stage: the string sides become ChatML turns (the record's system first), the
    loss on the answers; without it, the same records are plain text; the two are separate cache entries."""
    rows = [{"input": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.", "rejected": "No idea.", "system": "Be exact." if i % 2 else ""} for i in range(12)]
    write_jsonl(tmp_path / "p.jsonl", rows)
    source = {"path": "p.jsonl", "records": "preference", "fields": {"prompt": "input"}}
    chat_req = request(tmp_path, tokenizer_dir, [{**source, "as_chat": True}], seq_len=128)
    text_req = request(tmp_path, tokenizer_dir, [source], seq_len=128)
    chat, text = run(chat_req), run(text_req)
    assert chat.dir != text.dir
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    systems = 0
    for row in rows_of(chat):
        rendered = tok.decode(row["input_ids"])
        assert rendered.count(IM_START + "user") == 2 and rendered.count(IM_START + "assistant") == 2
        systems += rendered.count(IM_START + "system")
        answer = tok.decode([t for t, m in zip(row["input_ids"], row["mask"]) if m == P.SUPERVISED])
        assert answer.startswith("It is") and IM_START not in answer
    assert systems == 2 * 6  # both sides of the six records with a system
    assert all(IM_START not in tok.decode(row["input_ids"]) for row in rows_of(text))


def test_a_second_prompt_column_is_joined_through_the_stage(tmp_path, tokenizer_dir):
    """fields.input and input_separator reach the stage's reader: LLaMA-Factory's alpaca-style pairs render the
    instruction, a newline and the query as the user turn; the separator is part of the cache entry."""
    rows = [{"instruction": f"Add {i} and {i}.", "query": "Answer in words." if i % 2 else "", "chosen": f"It is {2 * i}.", "rejected": "No idea."} for i in range(12)]
    write_jsonl(tmp_path / "p.jsonl", rows)
    source = {"path": "p.jsonl", "records": "preference", "fields": {"prompt": "instruction", "input": "query"}, "as_chat": True}
    newline, blank = run(request(tmp_path, tokenizer_dir, [{**source, "input_separator": "\n"}], seq_len=128)), run(request(tmp_path, tokenizer_dir, [source], seq_len=128))
    assert newline.dir != blank.dir
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    joined = [tok.decode(row["input_ids"]) for row in rows_of(newline)]
    assert sum(text.count(".\nAnswer in words.") for text in joined) == 2 * 6  # both sides of the six records with a query
    assert all(".\n\nAnswer" not in text for text in joined)
    assert sum(tok.decode(row["input_ids"]).count(".\n\nAnswer in words.") for row in rows_of(blank)) == 2 * 6


def test_llama_factory_shapes_store_the_same_rows(tmp_path, tokenizer_dir):
    """Through the stage: pairs whose answers are single messages store the rows of pairs whose answers are lists,
    and KTO records holding the conversation in one list (`fields.messages`) the rows of prompt and completion apart."""
    lists = [dict(p) for p in PAIRS[:12]]
    single = [{**p, "chosen": p["chosen"][0], "rejected": p["rejected"][0]} for p in lists]
    write_jsonl(tmp_path / "lists.jsonl", lists)
    write_jsonl(tmp_path / "single.jsonl", single)
    a = rows_of(run(request(tmp_path, tokenizer_dir, [{"path": "lists.jsonl", "records": "preference"}], seq_len=128)))
    b = rows_of(run(request(tmp_path, tokenizer_dir, [{"path": "single.jsonl", "records": "preference"}], seq_len=128)))
    assert len(a) == 12 and [(r["input_ids"], r["mask"]) for r in a] == [(r["input_ids"], r["mask"]) for r in b]

    split = [{"prompt": [{"role": "user", "content": f"Say {i}."}], "completion": [{"role": "assistant", "content": f"{i}."}], "label": i % 3 != 0} for i in range(12)]
    whole = [{"messages": r["prompt"] + r["completion"], "label": r["label"]} for r in split]
    write_jsonl(tmp_path / "split.jsonl", split)
    write_jsonl(tmp_path / "whole.jsonl", whole)
    a = rows_of(run(request(tmp_path, tokenizer_dir, [{"path": "split.jsonl", "records": "unpaired_preference"}], seq_len=128)))
    b = rows_of(run(request(tmp_path, tokenizer_dir, [{"path": "whole.jsonl", "records": "unpaired_preference", "fields": {"messages": "messages"}}], seq_len=128)))
    assert len(a) == 12 and [(r["input_ids"], r["mask"]) for r in a] == [(r["input_ids"], r["mask"]) for r in b]


def test_a_margin_field_is_a_float32_column_of_each_pairs_value(tmp_path, tokenizer_dir):
    """`fields = {margin = "gap"}`: each stored pair carries its record's margin (a float32 column), through the
    shuffle; a source that names none gives its pairs 0; the column is hashed into the entry (another margin,
    another sequences_sha256)."""
    pairs = [{**p, "gap": (i % 5) * 0.5 - 0.75} for i, p in enumerate(PAIRS)]
    write_jsonl(tmp_path / "p.jsonl", pairs)
    write_jsonl(tmp_path / "q.jsonl", PAIRS[:10])
    sources = [{"path": "p.jsonl", "records": "preference", "fields": {"margin": "gap"}}, {"path": "q.jsonl", "records": "preference"}]
    out = run(request(tmp_path, tokenizer_dir, sources, seq_len=128))
    rows = rows_of(out)
    assert len(rows) == 40 and all(isinstance(r["margin"], float) for r in rows)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    want = {p["chosen"][0]["content"]: p["gap"] for p in pairs}
    seen = {}
    for row in rows:
        chosen = tok.decode([t for t, m in zip(row["input_ids"], row["mask"]) if m == P.SUPERVISED]).split(IM_END)[0].strip()
        seen.setdefault(chosen, []).append(row["margin"])
    for chosen, margins in seen.items():  # each chosen answer twice (p and q) for the first 10: its margin and 0
        expected = [want[chosen]] if len(margins) == 1 else sorted([want[chosen], 0.0])
        assert sorted(margins) == pytest.approx(expected), chosen
    assert {m for ms in seen.values() for m in ms} >= {-0.75, 0.25, 1.25}
    write_jsonl(tmp_path / "p.jsonl", [{**p, "gap": p["gap"] + 1} for p in pairs])
    other = run(request(tmp_path, tokenizer_dir, sources, seq_len=128))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "margin"} for r in rows]  # noqa: E731
    assert strip(rows_of(other)) == strip(rows) and [r["margin"] for r in rows_of(other)] == [r["margin"] + 1 if r["margin"] else 0.0 for r in rows]  # (no margin of p is 0)
    assert other.report["segments"][0]["sequences_sha256"] != out.report["segments"][0]["sequences_sha256"]
