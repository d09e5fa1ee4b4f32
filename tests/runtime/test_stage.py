"""The data stage (recipec/runtime/stage.py): filters with known answers, mixtures, cache, errors."""

import json
import pathlib

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("datasets")

from recipec.runtime import stage, stage_request  # noqa: E402
from recipec.runtime.readers import DataError  # noqa: E402
from recipec.runtime.tokenizer import train_bpe  # noqa: E402

WORDS = (
    "the river runs past an old mill where children play and farmers bring grain to be ground "
    "into flour that bakers turn into bread for the whole valley with care and patience"
).split()


def prose(i: int, n: int = 60) -> str:
    """A distinct, clean English-looking document of n words."""
    rng = np.random.default_rng(i)
    return " ".join(WORDS[k] for k in rng.integers(0, len(WORDS), n)) + f" number{i}."


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    tok = train_bpe([prose(i) for i in range(200)], 400)
    tok.save_pretrained(path)
    return str(path)


def jsonl(path: pathlib.Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def request(tmp_path, tokenizer_dir, sources, filters=(), segments=None, **spec):
    settings = dict(
        data_seed=0,
        sources=sources,
        filters=list(filters),
        eval_fraction=spec.pop("eval_fraction", 0.0),
        seq_len=spec.pop("seq_len", 16),
        packing=spec.pop("packing", True),
        segments=segments or [{"sources": list(range(len(sources))), "weights": None}],
        temperature=spec.pop("temperature", None),
        on_exhausted=spec.pop("on_exhausted", "repeat"),
        count_dropped_tokens=spec.pop("count_dropped_tokens", False),
        max_length=spec.pop("max_length", None),
        overflow=spec.pop("overflow", "truncate"),
        **spec,
    )
    return {
        "spec": stage_request.make_spec(settings),
        "project_dir": str(tmp_path),
        "cache_dir": "cache",
        "tokenizer": {"path": tokenizer_dir, "revision": None, "trust_remote_code": False},
        "num_proc": 1,
    }


def run(req, **kw):
    return stage.run(req, log=lambda m: None, **kw)


def by_label(report, label):
    return next(f for f in report["filters"] if f["label"] == label)


# --------------------------------------------------------------------------- filters


def test_exact_dedup_and_length_known_counts(tmp_path, tokenizer_dir):
    rows = [
        {"text": prose(1)},
        {"text": prose(1).upper()},  # a duplicate once normalised
        {"text": "short"},
        {"text": prose(2)},
        {"text": prose(1)},  # an exact duplicate
        {"text": prose(3)},
    ]
    jsonl(tmp_path / "d" / "a.jsonl", rows)
    filters = [
        {"type": "length", "unit": "chars", "min": 10, "max": None},
        {"type": "exact_dedup", "normalize": True},
    ]
    out = run(request(tmp_path, tokenizer_dir, [{"path": "d/*.jsonl"}], filters))
    r = out.report
    assert r["documents"] == {"read": 6, "kept": 3, "dropped": 3, "train": 3, "eval": 0}
    length, dedup = r["filters"]
    assert (length["docs_in"], length["docs_kept"], length["docs_dropped"]) == (6, 5, 1)
    assert length["examples"][0]["id"].endswith("a.jsonl:3") and length["examples"][0]["text"] == "short"
    assert (dedup["docs_in"], dedup["docs_kept"], dedup["docs_dropped"]) == (5, 3, 2)
    assert [e["id"].rsplit(":", 1)[1] for e in dedup["examples"]] == ["2", "5"]
    assert dedup["examples"][0]["reason"] == "duplicate of d/a.jsonl:1"  # the kept copy's file and line
    assert length["chars_dropped"] == len("short")

    # without normalising, only the byte-identical copy goes
    filters[1]["normalize"] = False
    out = run(request(tmp_path, tokenizer_dir, [{"path": "d/*.jsonl"}], filters))
    assert by_label(out.report, "filters[1]")["docs_dropped"] == 1


def test_source_filters_run_before_global_ones_and_dedup_keeps_the_first_source(tmp_path, tokenizer_dir):
    jsonl(tmp_path / "a.jsonl", [{"text": prose(i)} for i in range(4)])
    jsonl(tmp_path / "b.jsonl", [{"text": prose(i)} for i in range(2, 6)])  # 2 and 3 repeat a.jsonl
    sources = [
        {"path": "a.jsonl", "name": "a", "filters": [{"type": "regex", "include": [], "exclude": ["number0\\b"], "ignore_case": False}]},
        {"path": "b.jsonl", "name": "b"},
    ]
    out = run(request(tmp_path, tokenizer_dir, sources, [{"type": "exact_dedup", "normalize": True}]))
    r = out.report
    own = by_label(r, "a.filters[0]")
    assert (own["docs_in"], own["docs_dropped"]) == (4, 1)
    dedup = by_label(r, "filters[0]")
    assert dedup["docs_in"] == 7 and dedup["docs_dropped"] == 2
    assert dedup["by_source"] == {"a": {"in": 3, "dropped": 0}, "b": {"in": 4, "dropped": 2}}
    assert [s["kept"] for s in r["sources"]] == [3, 2]


def test_a_dropped_duplicate_names_the_file_and_line_of_the_copy_that_was_kept(tmp_path, tokenizer_dir):
    jsonl(tmp_path / "a.jsonl", [{"text": prose(i)} for i in range(4)])
    jsonl(tmp_path / "more" / "b.jsonl", [{"text": prose(9)}, {"text": prose(3)}, {"text": prose(1).upper()}])
    sources = [{"path": "a.jsonl", "name": "a"}, {"path": "more/*.jsonl", "name": "b"}]
    for f in ({"type": "exact_dedup", "normalize": True}, {"type": "minhash_dedup", "shingle_size": 5, "num_perm": 128, "bands": 16, "threshold": 0.8, "seed": 1}):
        examples = run(request(tmp_path, tokenizer_dir, sources, [f])).report["filters"][0]["examples"]
        assert [(e["id"], e["reason"]) for e in examples] == [
            ("more/b.jsonl:2", "duplicate of a.jsonl:4"),
            ("more/b.jsonl:3", "duplicate of a.jsonl:2"),
        ], f["type"]


def test_near_duplicates_are_removed_with_minhash(tmp_path, tokenizer_dir):
    base = prose(7, 200)
    words = base.split()
    variant = " ".join(w if i % 50 else "CHANGED" for i, w in enumerate(words))  # 4 of 200 words changed
    jsonl(tmp_path / "a.jsonl", [{"text": base}, {"text": prose(8, 200)}, {"text": variant}, {"text": prose(9, 200)}])
    mh = {"type": "minhash_dedup", "shingle_size": 5, "num_perm": 128, "bands": 16, "threshold": 0.7, "seed": 1}
    out = run(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl"}], [mh]))
    f = out.report["filters"][0]
    assert f["docs_dropped"] == 1
    assert f["examples"][0]["id"].endswith(":3") and f["examples"][0]["reason"] == "duplicate of a.jsonl:1"


def test_score_threshold_score_sampling_and_random_sampling(tmp_path, tokenizer_dir):
    jsonl(tmp_path / "s.jsonl", [{"text": prose(i), "q": float(i)} for i in range(20)])
    src = {"path": "s.jsonl", "filters": [{"type": "score", "field": "q", "min": 4.0, "max": None}]}
    top = {"type": "score_sample", "field": "q", "rate": 0.25, "temperature": 1e-3}
    out = run(request(tmp_path, tokenizer_dir, [src], [top]))
    r = out.report
    assert by_label(r, "sources[0].filters[0]")["docs_dropped"] == 4
    # 16 reach the sampler; a tiny temperature keeps the top quarter by score: 16..19
    assert by_label(r, "filters[0]")["docs_kept"] == 4
    assert r["documents"]["kept"] == 4
    # the first dropped (in document order) are the lowest scores that passed the threshold
    assert [e["id"].rsplit(":", 1)[1] for e in by_label(r, "filters[0]")["examples"]] == ["5", "6", "7"]

    sample = {"type": "sample", "rate": 0.5}
    kept = [run(request(tmp_path, tokenizer_dir, [{"path": "s.jsonl"}], [sample]), force=True).report["documents"]["kept"] for _ in range(2)]
    assert kept[0] == kept[1] and 3 <= kept[0] <= 17  # seeded: the same documents every time


def test_decontamination_drops_documents_sharing_an_ngram_with_eval_files(tmp_path, tokenizer_dir):
    leaked = prose(42, 30)
    jsonl(tmp_path / "eval" / "bench.jsonl", [{"question": leaked}])
    jsonl(tmp_path / "t.jsonl", [{"text": prose(1)}, {"text": "intro words " + leaked + " outro"}, {"text": prose(2)}])
    f = {"type": "decontaminate", "path": "eval/*.jsonl", "text_field": "question", "ngram": 13}
    out = run(request(tmp_path, tokenizer_dir, [{"path": "t.jsonl"}], [f]))
    assert out.report["filters"][0]["docs_dropped"] == 1
    assert out.report["filters"][0]["examples"][0]["id"].endswith("t.jsonl:2")


def test_a_chain_that_drops_everything_is_an_error_with_the_counts(tmp_path, tokenizer_dir):
    jsonl(tmp_path / "a.jsonl", [{"text": prose(i)} for i in range(3)])
    f = {"type": "length", "unit": "words", "min": 1000, "max": None}
    with pytest.raises(DataError, match=r"dropped every document(.|\n)*filters\[0\] +length +3 +3"):
        run(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl"}], [f]))
    assert not any((tmp_path / "cache").glob("*/manifest.json"))


# --------------------------------------------------------------------------- mixture


def test_weights_are_shares_of_the_training_tokens(tmp_path, tokenizer_dir):
    jsonl(tmp_path / "big.jsonl", [{"text": prose(i)} for i in range(60)])
    jsonl(tmp_path / "small.jsonl", [{"text": prose(1000 + i)} for i in range(10)])
    sources = [{"path": "big.jsonl", "name": "big"}, {"path": "small.jsonl", "name": "small"}]
    seg = [{"sources": [0, 1], "weights": [1.0, 1.0]}]
    r = run(request(tmp_path, tokenizer_dir, sources, segments=seg)).report
    mix = r["segments"][0]
    assert mix["asked"] == {"big": 0.5, "small": 0.5}
    assert abs(mix["realised"]["small"] - 0.5) < 0.02  # whole documents: within one document's share
    assert mix["repeats"]["small"] > 3 and mix["repeats"]["big"] < 0.6
    total = sum(mix["available_tokens"].values())
    assert 0 <= sum(mix["source_tokens"].values()) - total < 0.05 * total  # over by at most a document each

    stop = run(request(tmp_path, tokenizer_dir, sources, segments=seg, on_exhausted="stop")).report["segments"][0]
    assert stop["repeats"]["small"] <= 1.0 and stop["repeats"]["big"] < 0.2
    with pytest.raises(DataError, match=r"small: share 0\.500"):
        run(request(tmp_path, tokenizer_dir, sources, segments=seg, on_exhausted="error"))

    natural = run(request(tmp_path, tokenizer_dir, sources)).report["segments"][0]
    assert natural["asked"] is None and natural["repeats"] == {"big": 1.0, "small": 1.0}
    flat = run(request(tmp_path, tokenizer_dir, sources, temperature=1e6)).report["segments"][0]
    assert abs(flat["asked"]["small"] - 0.5) < 1e-3  # a huge temperature is uniform over sources


def test_segments_hold_each_their_own_mixture(tmp_path, tokenizer_dir):
    jsonl(tmp_path / "a.jsonl", [{"text": prose(i)} for i in range(20)])
    jsonl(tmp_path / "b.jsonl", [{"text": prose(100 + i)} for i in range(20)])
    sources = [{"path": "a.jsonl", "name": "a"}, {"path": "b.jsonl", "name": "b"}]
    segs = [{"sources": [0], "weights": None}, {"sources": [0, 1], "weights": None}]
    out = run(request(tmp_path, tokenizer_dir, sources, segments=segs, eval_fraction=0.1))
    a, ab = out.report["segments"]
    assert a["sources"] == ["a"] and set(a["source_tokens"]) == {"a"}
    assert set(ab["source_tokens"]) == {"a", "b"}
    assert len(out.train_files) == 2 and all(p.is_file() for p in out.train_files)
    ds = stage.load_sequences(out.train_files[0])
    assert len(ds) == a["sequences"] and ds[0]["input_ids"].shape == (16,)


# --------------------------------------------------------------------------- output


def test_split_packing_and_padding(tmp_path, tokenizer_dir):
    jsonl(tmp_path / "a.jsonl", [{"text": prose(i, 5 + i)} for i in range(40)])
    out = run(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl"}], eval_fraction=0.1))
    d = out.report["documents"]
    assert (d["train"], d["eval"]) == (36, 4)
    train = stage.load_sequences(out.train_files[0])
    assert all(len(row) == 16 for row in train.with_format(None)["input_ids"])
    ev = out.report["eval"]
    assert ev["documents"] == 4 and ev["tokens"] == ev["sequences"] * 16

    padded = run(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl"}], eval_fraction=0.1, packing=False, seq_len=12))
    rows = stage.load_sequences(padded.train_files[0]).with_format(None)
    assert len(rows) == 36 and set(rows.column_names) == {"input_ids", "attention_mask"}
    short = rows[int(np.argmin([sum(m) for m in rows["attention_mask"]]))]
    assert 0 in short["attention_mask"] and len(short["input_ids"]) == 12


def _texts(path, tokenizer):
    """The documents in an unpacked sequence file, decoded (each row's tokens less its EOS)."""
    rows = stage.load_sequences(path).with_format(None)
    return sorted(tokenizer.decode(ids[: sum(mask) - 1]) for ids, mask in zip(rows["input_ids"], rows["attention_mask"]))


def eval_sources(tmp_path):
    """A training source and two evaluation sources of 3 and 5 documents, in distinct files."""
    jsonl(tmp_path / "train.jsonl", [{"text": prose(i, 8)} for i in range(20)])
    jsonl(tmp_path / "code.jsonl", [{"text": prose(100 + i, 8)} for i in range(3)])
    jsonl(tmp_path / "mmlu.jsonl", [{"text": prose(200 + i, 8)} for i in range(5)])
    return [
        {"path": "train.jsonl"},
        {"path": "code.jsonl", "name": "code", "split": "eval"},
        {"path": "mmlu.jsonl", "name": "mmlu_style", "split": "eval"},
    ]


def test_each_eval_source_is_a_file_of_its_own(tmp_path, tokenizer_dir):
    """eval.arrow holds the held-out fraction of the training source only; eval-<name>.arrow each evaluation source, whole."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    sources = eval_sources(tmp_path)
    req = request(tmp_path, tokenizer_dir, sources, segments=[{"sources": [0], "weights": None}], eval_fraction=0.1, packing=False, seq_len=64)
    out = run(req)
    report = out.report
    assert report["documents"]["train"] == 18 and report["documents"]["eval"] == 2 + 3 + 5
    assert list(out.eval_set_files) == ["code", "mmlu_style"]  # source order
    assert out.eval_set_files["code"] == out.dir / "eval-code.arrow"
    assert sorted(p.name for p in out.dir.glob("eval*.arrow")) == ["eval-code.arrow", "eval-mmlu_style.arrow", "eval.arrow"]
    assert _texts(out.eval_set_files["code"], tok) == sorted(prose(100 + i, 8) for i in range(3))
    assert _texts(out.eval_set_files["mmlu_style"], tok) == sorted(prose(200 + i, 8) for i in range(5))
    held = _texts(out.eval_file, tok)
    assert len(held) == 2 and set(held) <= {prose(i, 8) for i in range(20)}  # training-source documents only
    for name, n in (("code", 3), ("mmlu_style", 5)):
        counts = report["eval_sets"][name]
        assert (counts["documents"], counts["sequences"]) == (n, n)
        assert counts["tokens"] == sum(sum(m) for m in stage.load_sequences(out.eval_set_files[name]).with_format(None)["attention_mask"])
    assert report["eval"]["documents"] == 2 and report["segments"][0]["documents"] == 18

    table = stage.format_report(report)
    assert "held out: 2 evaluation source(s) beside the eval_fraction documents" in table
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line.startswith("  ") and len(line.split()) == 4}
    assert rows["code"] == ["3", str(report["eval_sets"]["code"]["tokens"]), "3"]
    assert rows["mmlu_style"][0] == "5" and rows["(eval_fraction)"][2] == "2"

    # with eval_fraction 0 the training source keeps every document and eval.arrow is empty
    none_held = run(dict(req, spec=dict(req["spec"], eval_fraction=0.0)))
    assert none_held.report["documents"]["train"] == 20 and none_held.report["eval"]["sequences"] == 0
    assert none_held.report["eval_sets"]["code"]["sequences"] == 3
    # an eval source's name names its file, so it is part of the cache key (a training source's is not)
    renamed = [dict(src, name="python") if src.get("name") == "code" else src for src in sources]
    assert stage.lookup(dict(req, spec=dict(req["spec"], sources=renamed))) is None


def test_an_eval_source_without_a_name_or_a_sequence_is_an_error(tmp_path, tokenizer_dir):
    sources = eval_sources(tmp_path)
    unnamed = [sources[0], {"path": "code.jsonl", "split": "eval"}]
    with pytest.raises(DataError, match=r'sources\[1\] has split = "eval" and no name'):
        run(request(tmp_path, tokenizer_dir, unnamed, segments=[{"sources": [0], "weights": None}]))
    # packed into blocks of 256 tokens, three short documents fill none
    with pytest.raises(DataError, match=r"evaluation source 'code' .* gives no sequence to evaluate: 3 documents read, 3 kept by the filters, \d+ tokens; packing"):
        run(request(tmp_path, tokenizer_dir, sources[:2], segments=[{"sources": [0], "weights": None}], seq_len=256))


def test_cache_is_reused_and_keyed_on_content_and_settings(tmp_path, tokenizer_dir):
    jsonl(tmp_path / "a.jsonl", [{"text": prose(i)} for i in range(10)])
    req = request(tmp_path, tokenizer_dir, [{"path": "a.jsonl"}])
    first = run(req)
    logs = []
    again = stage.run(req, log=logs.append)
    assert again.dir == first.dir and logs and logs[0].startswith("data: cached")
    assert stage.lookup(req).dir == first.dir
    # one byte of data changes the key
    text = (tmp_path / "a.jsonl").read_text()
    (tmp_path / "a.jsonl").write_text(text.replace("number3", "number4"))
    assert stage.lookup(req) is None
    changed = run(req)
    assert changed.dir != first.dir
    # and so does any setting
    assert stage.lookup(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl"}], seq_len=32)) is None
    # a source's name or weight-free schedule keys do not
    assert stage.lookup(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl", "name": "renamed"}])).dir == changed.dir
    # no scratch files are left behind
    assert not list((tmp_path / "cache").glob(".tmp-*"))
    assert sorted(p.name for p in changed.dir.iterdir()) == ["data_report.json", "eval.arrow", "manifest.json", "train-0.arrow"]


def test_trained_tokenizer_and_parallel_workers_give_the_same_output(tmp_path, tokenizer_dir):
    jsonl(tmp_path / "a.jsonl", [{"text": prose(i)} for i in range(300)])
    filters = [{"type": "exact_dedup", "normalize": True}, {"type": "length", "unit": "words", "min": 5, "max": None}]
    one = request(tmp_path, tokenizer_dir, [{"path": "a.jsonl"}], filters, eval_fraction=0.1)
    two = dict(one, num_proc=2, cache_dir="cache2")
    a, b = run(one).report, run(two).report
    assert a["segments"][0]["sequences_sha256"] == b["segments"][0]["sequences_sha256"]
    assert a["eval"]["sequences_sha256"] == b["eval"]["sequences_sha256"]

    trained = dict(one, tokenizer={"train": {"kind": "bpe", "vocab_size": 300, "min_frequency": 2, "max_documents": None}})
    out = run(trained)
    assert out.tokenizer_dir is not None and out.report["tokenizer"]["trained"] is True
    assert out.report["tokenizer"]["vocab_size"] <= 300


def test_count_dropped_tokens_reports_tokens_per_filter(tmp_path, tokenizer_dir):
    jsonl(tmp_path / "a.jsonl", [{"text": prose(i, 10 + i)} for i in range(10)])
    f = {"type": "length", "unit": "words", "min": 15, "max": None}
    plain = run(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl"}], [f])).report
    assert "tokens_in" not in plain["filters"][0]
    full = run(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl"}], [f], count_dropped_tokens=True)).report
    row = full["filters"][0]
    assert row["tokens_in"] == full["tokens"]["read"] and row["tokens_kept"] == full["tokens"]["kept"]
    assert row["tokens_dropped"] > 0 and row["docs_dropped"] == 4


def test_format_report_names_every_source_and_filter(tmp_path, tokenizer_dir):
    jsonl(tmp_path / "a.jsonl", [{"text": prose(i)} for i in range(10)])
    out = run(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl", "name": "web"}], [{"type": "exact_dedup", "normalize": True}]))
    table = stage.format_report(out.report)
    assert "web" in table and "exact_dedup" in table and "mixture 0" in table and "held out" in table


def test_the_chain_runs_in_the_stated_order(tmp_path, tokenizer_dir):
    """Dedup sees only what earlier filters kept; later filters see only what dedup kept."""
    base = prose(11, 200)
    longer = base + " " + prose(12, 20)  # a near-duplicate of `base`, first in the file, too long
    jsonl(tmp_path / "a.jsonl", [{"text": longer}, {"text": base}, {"text": prose(13)}])
    length = {"type": "length", "unit": "words", "min": None, "max": 210}
    mh = {"type": "minhash_dedup", "shingle_size": 5, "num_perm": 128, "bands": 32, "threshold": 0.8, "seed": 1}
    filter_first = run(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl"}], [length, mh])).report
    assert filter_first["documents"]["kept"] == 2  # the long copy is gone before dedup: `base` stays
    assert [f["docs_dropped"] for f in filter_first["filters"]] == [1, 0]
    dedup_first = run(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl"}], [mh, length])).report
    assert dedup_first["documents"]["kept"] == 1  # `base` is a duplicate of the long copy, then that is too long
    assert [f["docs_dropped"] for f in dedup_first["filters"]] == [1, 1]


def test_a_filter_without_every_setting_is_an_error_naming_it(tmp_path, tokenizer_dir):
    """The stage takes every setting spelt out (resolve dumps the recipe's defaults); it has none of its own."""
    jsonl(tmp_path / "a.jsonl", [{"text": prose(i)} for i in range(3)])
    sources = [{"path": "a.jsonl", "name": "web", "filters": [{"type": "length", "unit": "words", "min": 1}]}]
    with pytest.raises(DataError, match=r"^web\.filters\[0\]: length filter: missing max \(there are no defaults here"):
        run(request(tmp_path, tokenizer_dir, sources))
    with pytest.raises(DataError, match=r"^filters\[0\]: unknown filter type 'lenght'"):
        run(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl"}], [{"type": "lenght"}]))
