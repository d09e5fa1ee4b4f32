"""The data stage with examples: conversation records in every reader, masks, length rules,
packing that keeps examples whole, and the report a reviewer reads."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("transformers")

from recipec.runtime import stage, stage_request  # noqa: E402
from recipec.runtime.readers import DataError  # noqa: E402

from .chat_fixtures import CHATML, IM_END, chat_tokenizer  # noqa: E402

DIALOGS = [
    [("user", f"Question number {i}: what is {i} plus {i}?"), ("assistant", f"It is {2 * i}.")]
    + ([("user", "And twice that?"), ("assistant", f"That is {4 * i}, of course.")] if i % 3 == 0 else [])
    for i in range(40)
]


def messages_rows():
    return [{"messages": [{"role": r, "content": c} for r, c in d]} for d in DIALOGS]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat-tok")
    chat_tokenizer(CHATML).save_pretrained(path)
    return str(path)


def request(tmp_path, tokenizer_dir, sources, **spec):
    settings = dict(
        data_seed=0,
        sources=sources,
        filters=[],
        eval_fraction=spec.pop("eval_fraction", 0.0),
        seq_len=spec.pop("seq_len", 64),
        packing=spec.pop("packing", True),
        segments=[{"sources": list(range(len(sources))), "weights": None}],
        temperature=None,
        on_exhausted="repeat",
        count_dropped_tokens=False,
        max_length=spec.pop("max_length", None),
        overflow=spec.pop("overflow", "truncate"),
    )
    return {
        "spec": stage_request.make_spec(settings),
        "project_dir": str(tmp_path),
        "cache_dir": "cache",
        "tokenizer": {"path": tokenizer_dir, "revision": None, "trust_remote_code": False, "chat_template": None, "special_tokens": []},
        "num_proc": spec.pop("num_proc", 1),
    }


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def rows_of(out, name="train-0.arrow"):
    with pa.OSFile(str(out.dir / name)) as f:
        return pa.ipc.open_stream(f).read_all().to_pylist()


def run(req):
    return stage.run(req, log=lambda m: None)


def test_messages_become_packed_examples_with_assistant_masks(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "d.jsonl", messages_rows())
    out = run(request(tmp_path, tokenizer_dir, [{"path": "d.jsonl", "records": "messages", "filters": []}], seq_len=128))
    rows = rows_of(out)
    tok = chat_tokenizer(CHATML)
    examples = 0
    for row in rows:
        assert len(row["input_ids"]) <= 128
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        examples += len(starts)
        for i in starts:
            assert row["mask"][i] == 0  # nothing before an example's first token predicts it
        supervised = tok.decode([t for t, m in zip(row["input_ids"], row["mask"]) if m])
        assert "Question" not in supervised and "user" not in supervised
        assert supervised.count(IM_END) == sum(
            1 for t, m in zip(row["input_ids"], row["mask"]) if m and t == tok.convert_tokens_to_ids(IM_END)
        )
    assert examples == len(DIALOGS)
    report = out.report
    assert report["examples"]["dropped"] == {}
    assert report["examples"]["supervised_tokens"] == sum(sum(r["mask"]) for r in rows)
    assert 0.5 < report["examples"]["packing_efficiency"][0] <= 1
    assert report["segments"][0]["sequences"] == len(rows) < len(DIALOGS)
    rendered = report["examples"]["rendered"]
    assert len(rendered) == 3 and rendered[0]["locator"] == "d.jsonl:1"
    assert "[[It is 0.<|im_end|>\n]]" in rendered[0]["text"]
    table = stage.format_report(report)
    assert "examples: 40 kept by the filters; fitted to max_length 128: 0 truncated, dropped none" in table
    assert f"supervised tokens: {report['examples']['supervised_tokens']} train" in table
    assert "d.jsonl:1 (the loss sees what is in [[...]]):" in table


def test_unpacked_examples_are_one_per_row(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "d.jsonl", messages_rows())
    out = run(request(tmp_path, tokenizer_dir, [{"path": "d.jsonl", "records": "messages"}], packing=False))
    rows = rows_of(out)
    assert len(rows) == len(DIALOGS)
    assert all(r["position_ids"] == list(range(len(r["input_ids"]))) for r in rows)
    assert out.report["examples"]["packing_efficiency"] == [None]


def test_max_length_truncates_or_drops_and_counts(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "d.jsonl", messages_rows())
    src = [{"path": "d.jsonl", "records": "messages"}]
    # the first answer starts at token 37: cut there, examples keep no supervised token; later, some
    with pytest.raises(DataError, match=r"no training example is left .*'no_supervised_token': 40"):
        run(request(tmp_path, tokenizer_dir, src, max_length=37, overflow="truncate"))
    out = run(request(tmp_path, tokenizer_dir, src, max_length=40, overflow="truncate"))
    # questions 0-9 answer at token 37, the longer ones after 40: those have nothing left
    assert out.report["examples"]["dropped"] == {"no_supervised_token": 30}
    assert out.report["examples"]["truncated"] == 10
    for row in rows_of(out):
        assert max(row["position_ids"]) < 40 and sum(row["mask"]) > 0
    # truncate_turns cuts the prompts to make room: every example keeps the start of its answers
    out = run(request(tmp_path, tokenizer_dir, src, max_length=40, overflow="truncate_turns"))
    assert out.report["examples"]["dropped"] == {}
    assert out.report["examples"]["truncated"] == 40
    tok = chat_tokenizer(CHATML)
    answers = []
    for row in rows_of(out):
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
        for a, b in zip(starts, starts[1:]):
            assert b - a <= 40
            answers.append(tok.decode([t for t, m in zip(row["input_ids"][a:b], row["mask"][a:b]) if m]))
    assert len(answers) == 40 and all(a.startswith("It is ") for a in answers), answers[:3]
    out = run(request(tmp_path, tokenizer_dir, src, max_length=60, overflow="drop"))
    long = out.report["examples"]["dropped"]["too_long"]
    assert long > 0
    kept = sum(1 for r in rows_of(out) for p in r["position_ids"] if p == 0)
    assert kept + long == len(DIALOGS)


@pytest.mark.parametrize("kind", ["parquet", "jsonl.gz", "jsonl.zst", "datasets"])
def test_every_reader_reads_conversations(tmp_path, tokenizer_dir, kind):
    rows = messages_rows()
    if kind == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
        src = {"path": "d.parquet"}
    elif kind == "datasets":
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
        src = {"path": "ds", "format": "datasets"}
    else:
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        if kind.endswith("gz"):
            import gzip

            data = gzip.compress(data)
        else:
            import zstandard

            data = zstandard.ZstdCompressor().compress(data)
        (tmp_path / f"d.{kind}").write_bytes(data)
        src = {"path": f"d.{kind}"}
    jsonl_dir = tmp_path / "ref"
    jsonl_dir.mkdir()
    write_jsonl(jsonl_dir / "d.jsonl", rows)
    got = rows_of(run(request(tmp_path, tokenizer_dir, [{**src, "records": "messages"}])))
    want = rows_of(run(request(jsonl_dir, tokenizer_dir, [{"path": "d.jsonl", "records": "messages"}])))
    assert got == want


def test_mds_chat_shards_are_the_examples_of_the_same_conversations_in_jsonl(tmp_path, tokenizer_dir):
    """llm-foundry's chat samples in MDS shards (a `messages` json column) train as the same rows as jsonl."""
    import shutil

    fixture = Path(__file__).resolve().parent.parent / "data" / "mds" / "chat" / "train"
    shutil.copytree(fixture, tmp_path / "chat")
    rows = [{"messages": s["messages"]} for s in json.loads((fixture / "expected.json").read_text(encoding="utf-8"))]
    jsonl_dir = tmp_path / "ref"
    jsonl_dir.mkdir()
    write_jsonl(jsonl_dir / "d.jsonl", rows)
    got = run(request(tmp_path, tokenizer_dir, [{"path": "chat", "records": "messages"}], seq_len=128))
    want = run(request(jsonl_dir, tokenizer_dir, [{"path": "d.jsonl", "records": "messages"}], seq_len=128))
    assert rows_of(got) == rows_of(want) and rows_of(got)
    assert got.report["examples"]["supervised_tokens"] == want.report["examples"]["supervised_tokens"] > 0


def test_bad_records_name_file_line_and_field_or_are_skipped(tmp_path, tokenizer_dir):
    rows = messages_rows()
    rows[4] = {"messages": [{"role": "wizard", "content": "hi"}]}
    write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match=r"sources\[0\]: d.jsonl:5: messages record: `messages\[0\].role` is 'wizard'"):
        run(request(tmp_path, tokenizer_dir, [{"path": "d.jsonl", "records": "messages"}]))
    out = run(request(tmp_path, tokenizer_dir, [{"path": "d.jsonl", "records": "messages", "on_error": "skip"}]))
    assert out.report["sources"][0]["skipped"] == 1
    assert "d.jsonl:5" in out.report["sources"][0]["skipped_examples"][0]


def test_a_template_that_fails_on_the_data_names_source_and_record(tmp_path, tokenizer_dir):
    rows = [{"prompt": "2+2=", "completion": " 4"}, {"prompt": [{"role": "user", "content": "x"}], "completion": [{"role": "assistant", "content": "y"}]}]
    write_jsonl(tmp_path / "d.jsonl", rows)
    req = request(tmp_path, tokenizer_dir, [{"name": "qa", "path": "d.jsonl", "records": "prompt_completion"}])
    req["tokenizer"]["chat_template"] = "{{ raise_exception('no tools here') }}"
    with pytest.raises(DataError, match=r"qa: d.jsonl:2: the chat template failed to render: .*no tools here"):
        run(req)


def test_alpaca_and_prompt_completion_with_text_beside_them(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "a.jsonl", [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(10)])
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"{i} + 1 =", "completion": f" {i + 1}"} for i in range(10)])
    write_jsonl(tmp_path / "t.jsonl", [{"text": f"plain document {i}"} for i in range(5)])
    sources = [
        {"path": "a.jsonl", "records": "alpaca"},
        {"path": "p.jsonl", "records": "prompt_completion"},
        {"path": "t.jsonl"},
    ]
    out = run(request(tmp_path, tokenizer_dir, sources))
    tok = chat_tokenizer(CHATML)
    texts = []
    for row in rows_of(out):
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
        for a, b in zip(starts, starts[1:]):
            ids, mask = row["input_ids"][a:b], row["mask"][a:b]
            texts.append((tok.decode(ids), tok.decode([t for t, m in zip(ids, mask) if m])))
    assert len(texts) == 25
    full = dict(texts)
    assert full["<|im_start|>user\nSay 3.<|im_end|>\n<|im_start|>assistant\n3<|im_end|>\n"] == "3<|im_end|>\n"
    assert full["3 + 1 = 4" + tok.eos_token] == " 4" + tok.eos_token
    # a text document is trained on every token but the first (nothing predicts it)
    assert full["plain document 2" + tok.eos_token] == tok.decode(tok("plain document 2" + tok.eos_token, add_special_tokens=False)["input_ids"][1:])


def test_a_sources_system_message_is_rendered_as_the_template_renders_it(tmp_path, tokenizer_dir):
    """`system = {replace = ...}` and `"drop"` through the stage: each example's tokens are the chat
    template's (transformers' apply_chat_template) on the conversation with its system message
    replaced or dropped, the system prompt never supervised; the stage's cache entry differs."""
    rows = [{"messages": [{"role": "system", "content": "Be terse."}, *m["messages"]]} for m in messages_rows()[:6]]
    write_jsonl(tmp_path / "d.jsonl", rows)
    tok = chat_tokenizer(CHATML)
    outs = {}
    for system in ("keep", "drop", {"replace": "You answer sums."}):
        src = {"path": "d.jsonl", "records": "messages", **({} if system == "keep" else {"system": system})}
        out = run(request(tmp_path, tokenizer_dir, [src], packing=False, seq_len=256))
        outs[str(system)] = out
        expected = []
        for record in rows:
            messages = record["messages"][1:] if system == "drop" else record["messages"]
            if isinstance(system, dict):
                messages = [{"role": "system", "content": system["replace"]}, *record["messages"][1:]]
            expected.append(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
        got = rows_of(out)  # in the stage's shuffled order
        assert sorted(r["input_ids"] for r in got) == sorted(expected)
        for row in got:
            supervised = tok.decode([t for t, m in zip(row["input_ids"], row["mask"]) if m])
            assert "terse" not in supervised and "sums" not in supervised and "It is" in supervised
    assert len({str(o.dir) for o in outs.values()}) == 3


def test_alpaca_records_in_the_alpaca_prompt_style_are_prompt_and_completion_text(tmp_path, tokenizer_dir):
    """prompt_style "alpaca": axolotl's and LitGPT's tokens, the prompt text tokenized on its own,
    then the output's tokens and EOS, only those supervised; no chat template involved."""
    from recipec.runtime.formats import alpaca_prompt

    rows = [{"instruction": f"Add {i} and {i}.", "input": "" if i % 2 else "numbers", "output": f"It is {2 * i}."} for i in range(8)]
    write_jsonl(tmp_path / "a.jsonl", rows)
    out = run(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl", "records": "alpaca", "prompt_style": "alpaca"}], packing=False, seq_len=256))
    tok = chat_tokenizer(CHATML)
    want = set()
    for r in rows:
        prompt = tok(alpaca_prompt(r["instruction"], r["input"]), add_special_tokens=False)["input_ids"]
        answer = tok(r["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        want.add((tuple(prompt + answer), tuple([0] * len(prompt) + [1] * len(answer))))
    assert {(tuple(r["input_ids"]), tuple(r["mask"])) for r in rows_of(out)} == want


def test_a_prompt_format_makes_the_prompt_text_and_only_the_completion_is_supervised(tmp_path, tokenizer_dir):
    """axolotl's user-defined prompt format: the format filled with the record's fields, tokenized on its own,
    then the output's tokens and EOS, only those supervised; parquet loads the format's columns."""
    rows = [{"instruction": f"Add {i} and {i}.", "input": "" if i % 2 else f"{i}+{i}", "output": f"It is {2 * i}.", "extra": i} for i in range(8)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    fmt = ["[INST] {instruction} {input} [/INST]", "[INST] {instruction} [/INST]"]
    src = {"path": "a.parquet", "records": "prompt_completion", "fields": {"completion": "output"}, "prompt_format": fmt}
    out = run(request(tmp_path, tokenizer_dir, [src], packing=False, seq_len=256))
    tok = chat_tokenizer(CHATML)
    want = set()
    for r in rows:
        text = f"[INST] {r['instruction']} {r['input']} [/INST]" if r["input"] else f"[INST] {r['instruction']} [/INST]"
        prompt = tok(text, add_special_tokens=False)["input_ids"]
        answer = tok(r["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        want.add((tuple(prompt + answer), tuple([0] * len(prompt) + [1] * len(answer))))
    assert {(tuple(r["input_ids"]), tuple(r["mask"])) for r in rows_of(out)} == want
    # another format is another cache entry
    other = run(request(tmp_path, tokenizer_dir, [{**src, "prompt_format": "Q: {instruction}\nA:"}], packing=False, seq_len=256))
    assert other.dir != out.dir
