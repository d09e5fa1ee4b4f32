"""Token sources (recipec/runtime/token_sources.py): pre-tokenized documents through the data stage.

The oracle: text tokenized by the stage and the same text tokenized here and written as
ids (.bin, parquet, Arrow, a datasets directory) give byte-identical packed sequences.
"""

import json
import pathlib

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("datasets")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from recipec.runtime import stage, token_sources  # noqa: E402
from recipec.runtime.readers import DataError  # noqa: E402
from recipec.runtime.tokenizer import train_bpe  # noqa: E402

from .test_stage import jsonl, prose, request, run  # noqa: E402

TEXTS = [prose(i, 20 + i % 9) for i in range(40)]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """The recipe's tokenizer, trained on the prose the tests write, and its directory."""
    path = tmp_path_factory.mktemp("tok")
    tokenizer = train_bpe([prose(i) for i in range(200)], 400)
    tokenizer.save_pretrained(path)
    return tokenizer, str(path)


@pytest.fixture(scope="module")
def other_tok(tmp_path_factory):
    """A tokenizer with another vocabulary (trained on other text)."""
    path = tmp_path_factory.mktemp("other")
    train_bpe([f"alpha beta gamma {i} delta" for i in range(300)], 300).save_pretrained(path)
    return str(path)


def ids_of(tokenizer, texts):
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def write_bin(path: pathlib.Path, docs, eos: int, dtype: str = "<u2") -> None:
    """nanoGPT's layout: every document followed by the end-of-text id, flat."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.concatenate([np.asarray([*d, eos]) for d in docs]).astype(dtype).tofile(path)


def ids_table(docs) -> pa.Table:
    return pa.table({"input_ids": pa.array([list(d) for d in docs], pa.list_(pa.int64())), "n": list(range(len(docs)))})


def bin_source(path, tokenizer_dir, eos, **extra):
    return {"path": path, "records": "tokens", "token_dtype": "uint16", "eos_token_id": eos, "tokenizer": tokenizer_dir, **extra}


def ids_source(path, tokenizer_dir, **extra):
    return {"path": path, "records": "tokens", "tokenizer": tokenizer_dir, **extra}


def sequences(out):
    """The bytes of every sequence file of the entry (Arrow streams), train segments then eval."""
    return [f.read_bytes() for f in [*out.train_files, out.eval_file]]


# --------------------------------------------------------------------------- the oracle


def test_text_and_the_same_text_as_ids_pack_byte_identical_sequences(tmp_path, tok, monkeypatch):
    tokenizer, tok_dir = tok
    jsonl(tmp_path / "text.jsonl", [{"text": t} for t in TEXTS])
    docs = ids_of(tokenizer, TEXTS)
    eos = tokenizer.eos_token_id
    write_bin(tmp_path / "bin" / "a.bin", docs[:25], eos)  # two files: documents continue in file order
    write_bin(tmp_path / "bin" / "b.bin", docs[25:], eos)
    pq.write_table(ids_table(docs), tmp_path / "ids.parquet", row_group_size=7)
    with pa.OSFile(str(tmp_path / "file.arrow"), "wb") as sink, pa.ipc.new_file(sink, ids_table(docs).schema) as writer:
        writer.write_table(ids_table(docs), max_chunksize=9)
    with pa.OSFile(str(tmp_path / "stream.arrow"), "wb") as sink, pa.ipc.new_stream(sink, ids_table(docs).schema) as writer:
        writer.write_table(ids_table(docs), max_chunksize=9)
    import datasets

    datasets.Dataset(ids_table(docs)).save_to_disk(str(tmp_path / "saved"))
    # windows of 7 ids: documents run across the windows a .bin file is mapped in
    monkeypatch.setattr(token_sources, "CHUNK_TOKENS", 7)

    for packing in (True, False):
        settings = dict(eval_fraction=0.1, packing=packing, seq_len=24)
        text = run(request(tmp_path, tok_dir, [{"path": "text.jsonl"}], **settings))
        expected = sequences(text)
        assert text.report["segments"][0]["sequences"] > 20
        every_format = (
            ids_source("ids.parquet", tok_dir),
            ids_source("file.arrow", tok_dir),
            ids_source("stream.arrow", tok_dir),
            ids_source("saved", tok_dir, format="datasets"),
        )
        for source in (bin_source("bin/*.bin", tok_dir, eos), *(every_format if packing else ())):
            out = run(request(tmp_path, tok_dir, [source], **settings))
            assert out.report["documents"] == text.report["documents"], source["path"]
            assert out.report["segments"][0]["document_order_sha256"] == text.report["segments"][0]["document_order_sha256"]
            assert out.report["segments"][0]["sequences_sha256"] == text.report["segments"][0]["sequences_sha256"]
            assert out.report["eval"]["sequences_sha256"] == text.report["eval"]["sequences_sha256"]
            assert sequences(out) == expected, source["path"]


def test_a_bin_file_is_read_in_windows_never_whole(tmp_path, tok, monkeypatch):
    tokenizer, tok_dir = tok
    write_bin(tmp_path / "a.bin", ids_of(tokenizer, TEXTS), tokenizer.eos_token_id)
    n_ids = (tmp_path / "a.bin").stat().st_size // 2
    shapes = []
    real = np.memmap

    def memmap(*args, **kw):
        shapes.append(kw["shape"][0])
        return real(*args, **kw)

    monkeypatch.setattr(token_sources, "CHUNK_TOKENS", 64)
    monkeypatch.setattr(token_sources.np, "memmap", memmap)
    batches = list(token_sources.iter_batches(bin_source("a.bin", tok_dir, 0), tmp_path, vocab_size=len(tokenizer)))
    assert max(shapes) == 64 and sum(shapes) == n_ids
    got = [ids.tolist() for b in batches for ids in b.tokens]
    assert got == ids_of(tokenizer, TEXTS)
    assert batches[0].ids[:2] == ["a.bin@0", f"a.bin@{len(got[0]) + 1}"]  # each document's first id


def test_a_last_document_without_eos_and_empty_documents(tmp_path, tok):
    tokenizer, tok_dir = tok
    np.array([5, 6, 0, 0, 7, 0, 8, 9], dtype="<u2").tofile(tmp_path / "a.bin")
    stats = token_sources.readers.ReadStats()
    batches = token_sources.iter_batches(bin_source("a.bin", tok_dir, 0), tmp_path, vocab_size=400, stats=stats)
    assert [ids.tolist() for b in batches for ids in b.tokens] == [[5, 6], [7], [8, 9]]
    assert (stats.documents, stats.empty, stats.bytes) == (3, 1, 10)


# --------------------------------------------------------------------------- tokenizers


def test_a_mismatched_vocabulary_is_an_error_naming_both_tokenizers(tmp_path, tok, other_tok):
    tokenizer, tok_dir = tok
    write_bin(tmp_path / "a.bin", ids_of(tokenizer, TEXTS[:5]), 0)
    with pytest.raises(DataError) as e:
        run(request(tmp_path, tok_dir, [bin_source("a.bin", other_tok, 0, name="web")]))
    message = str(e.value)
    assert message.startswith(f"web: the ids were made with the tokenizer {other_tok!r}")
    assert f"the recipe's tokenizer {tok_dir!r}" in message
    other = len(json.loads((pathlib.Path(other_tok) / "tokenizer.json").read_text())["model"]["vocab"])
    assert f"{other} tokens in {other_tok!r} and {len(tokenizer)} in the recipe's" in message
    assert "the first difference is id " in message


def test_a_copy_of_the_recipe_tokenizer_matches_and_the_cache_key_covers_it_and_the_files(tmp_path, tok):
    import shutil

    tokenizer, tok_dir = tok
    shutil.copytree(tok_dir, tmp_path / "copy")
    write_bin(tmp_path / "a.bin", ids_of(tokenizer, TEXTS), 0)
    req = request(tmp_path, tok_dir, [bin_source("a.bin", "./copy", 0)])
    first = run(req)
    assert "source_tokenizers" in first.report["fingerprints"]
    assert run(req).dir == first.dir  # nothing changed: the entry is reused
    ids = np.fromfile(tmp_path / "a.bin", dtype="<u2")
    ids[1] = 5 if ids[1] != 5 else 6
    ids.tofile(tmp_path / "a.bin")
    assert stage.lookup(req) is None  # a changed id: a new entry
    # a changed tokenizer that made the ids: a new key (and here an error, for its vocabulary differs)
    with open(tmp_path / "copy" / "tokenizer.json") as f:
        spec = json.load(f)
    spec["model"]["vocab"]["zzz-new"] = len(spec["model"]["vocab"])
    (tmp_path / "copy" / "tokenizer.json").write_text(json.dumps(spec))
    assert stage.lookup(req) is None
    with pytest.raises(DataError, match="zzz-new"):
        run(req)


def test_an_eos_token_id_that_is_not_the_tokenizers_is_an_error(tmp_path, tok):
    tokenizer, tok_dir = tok
    write_bin(tmp_path / "a.bin", ids_of(tokenizer, TEXTS[:5]), 7)
    with pytest.raises(DataError, match=r"sources\[0\]: eos_token_id 7 .* is not the end-of-text id .*, 0 \('<\|endoftext\|>'\)"):
        run(request(tmp_path, tok_dir, [bin_source("a.bin", tok_dir, 7)]))


# --------------------------------------------------------------------------- located errors


def test_a_bin_file_of_odd_length_names_the_file_and_its_size(tmp_path, tok):
    _, tok_dir = tok
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.bin").write_bytes(b"\x01\x00\x02\x00\x03")
    with pytest.raises(DataError, match=r"^sources\[0\]: t/a\.bin: 5 bytes is not a whole number of uint16 ids \(2 bytes each\)"):
        run(request(tmp_path, tok_dir, [bin_source("t/*.bin", tok_dir, 0)]))


def test_an_id_out_of_range_names_the_file_and_position(tmp_path, tok):
    tokenizer, tok_dir = tok
    docs = ids_of(tokenizer, TEXTS[:3])
    n = len(tokenizer)
    bad = [*docs[0], 0, *docs[1][:3], n]  # the first id past the vocabulary
    np.array(bad, dtype="<u2").tofile(tmp_path / "a.bin")
    at = len(docs[0]) + 4
    with pytest.raises(DataError, match=rf"^sources\[0\]: a\.bin: token {at} \(byte {2 * at}\) is id {n}, not below {n}, the size"):
        run(request(tmp_path, tok_dir, [bin_source("a.bin", tok_dir, 0)]))
    pq.write_table(ids_table([docs[0], [1, 2, 70000]]), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=rf"^sources\[0\]: a\.parquet#1: position 2 is id 70000, not below {n}"):
        run(request(tmp_path, tok_dir, [ids_source("a.parquet", tok_dir)]))


def test_a_file_without_the_ids_column_lists_its_columns(tmp_path, tok):
    _, tok_dir = tok
    pq.write_table(pa.table({"text": ["a"], "ids": [[1, 2]]}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"^sources\[0\]: a\.parquet: no column 'input_ids' of token ids; available columns: text, ids$"):
        run(request(tmp_path, tok_dir, [ids_source("a.parquet", tok_dir)]))
    # renamed with fields
    out = run(request(tmp_path, tok_dir, [ids_source("a.parquet", tok_dir, fields={"input_ids": "ids"})]))
    assert out.report["documents"]["read"] == 1
    pq.write_table(pa.table({"input_ids": ["1 2 3"]}), tmp_path / "s.parquet")
    with pytest.raises(DataError, match=r"s\.parquet: column 'input_ids' holds string, not lists of token ids"):
        run(request(tmp_path, tok_dir, [ids_source("s.parquet", tok_dir)]))


@pytest.mark.parametrize(
    "rows, message",
    [
        ([[1, 2], [3, -4, 5]], r"a\.parquet#1: id -4 at position 1 of input_ids is negative"),
        ([[1.0, 2.0], [3.0, 1.5]], r"a\.parquet#1: id 1\.5 at position 1 of input_ids is not an integer"),
        ([[1, 2], [3, None]], r"a\.parquet#1: the id at position 1 of input_ids is null"),
        ([[1, 2], None], r"a\.parquet#1: input_ids is null, not a list of token ids"),
    ],
)
def test_a_malformed_row_names_the_file_and_row_or_is_skipped(tmp_path, tok, rows, message):
    _, tok_dir = tok
    pq.write_table(pa.table({"input_ids": rows + [[7, 8]]}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"^sources\[0\]: " + message):
        run(request(tmp_path, tok_dir, [ids_source("a.parquet", tok_dir)]))
    out = run(request(tmp_path, tok_dir, [ids_source("a.parquet", tok_dir, on_error="skip")]))
    source = out.report["sources"][0]
    assert (source["documents"], source["skipped"]) == (2, 1)
    assert source["skipped_examples"][0].startswith("a.parquet#1: ")


def test_float_ids_that_are_whole_numbers_are_read(tmp_path, tok):
    _, tok_dir = tok
    pq.write_table(pa.table({"input_ids": [[1.0, 2.0], [3.0]]}), tmp_path / "a.parquet")
    batches = token_sources.iter_batches(ids_source("a.parquet", tok_dir), tmp_path, vocab_size=400)
    assert [ids.tolist() for b in batches for ids in b.tokens] == [[1, 2], [3]]


# --------------------------------------------------------------------------- mixtures and filters


def test_a_text_and_a_token_source_mix_by_weight_and_the_filters_pass_over_the_ids(tmp_path, tok):
    tokenizer, tok_dir = tok
    jsonl(tmp_path / "text.jsonl", [{"text": t} for t in TEXTS] + [{"text": "short"}, {"text": TEXTS[0]}])
    more = [prose(i, 30) for i in range(100, 160)]
    write_bin(tmp_path / "ids.bin", ids_of(tokenizer, more) + ids_of(tokenizer, ["short"]), 0)
    sources = [{"path": "text.jsonl", "name": "text", "weight": 0.7}, bin_source("ids.bin", tok_dir, 0, name="ids", weight=0.3)]
    filters = [{"type": "length", "unit": "chars", "min": 10, "max": None}, {"type": "exact_dedup", "normalize": True}]
    segments = [{"sources": [0], "weights": None}, {"sources": [0, 1], "weights": [0.7, 0.3]}]
    out = run(request(tmp_path, tok_dir, sources, filters, segments=segments, eval_fraction=0.1))
    r = out.report
    length, dedup = r["filters"]
    # the filters read the text source only: its short and duplicate documents go, the ids all stay
    assert length["by_source"] == {"text": {"in": 42, "dropped": 1}}
    assert dedup["by_source"] == {"text": {"in": 41, "dropped": 1}}
    assert [s["kept"] for s in r["sources"]] == [40, 61]
    assert r["segments"][0]["sources"] == ["text"] and r["segments"][0]["realised"] == {"text": 1.0}
    mixed = r["segments"][1]
    assert mixed["asked"] == {"text": 0.7, "ids": 0.3}
    for label, share in mixed["asked"].items():
        assert abs(mixed["realised"][label] - share) < 0.03, mixed
    assert mixed["repeats"]["text"] > 1  # the text source is smaller than its share: repeated
    table = stage.format_report(r)
    assert "ids" in table and "0.300" in table
    # temperature shares by size, the token source counted by its ids
    out = run(request(tmp_path, tok_dir, [{**s, "weight": None} for s in sources], temperature=2.0))
    seg = out.report["segments"][0]
    avail = seg["available_tokens"]
    expected = avail["ids"] ** 0.5 / (avail["ids"] ** 0.5 + avail["text"] ** 0.5)
    assert seg["asked"]["ids"] == pytest.approx(expected)


def test_uint16_ids_of_a_vocabulary_wider_than_uint16_are_an_error(tmp_path):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(70_000)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="t1"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="t0").save_pretrained(tmp_path / "wide")
    np.array([5, 6, 0], dtype="<u2").tofile(tmp_path / "a.bin")
    wide = str(tmp_path / "wide")
    with pytest.raises(DataError, match=r"^sources\[0\]: token_dtype uint16 holds ids below 65,536, and the tokenizer has 70,000 tokens"):
        run(request(tmp_path, wide, [bin_source("a.bin", wide, 0)]))
    (tmp_path / "a.bin").unlink()
    np.array([5, 69_999, 0], dtype="<u4").tofile(tmp_path / "a.bin")
    out = run(request(tmp_path, wide, [bin_source("a.bin", wide, 0, token_dtype="uint32")], seq_len=8))
    assert out.report["tokens"]["kept"] == 2
