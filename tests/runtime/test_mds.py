"""MDS shards (recipec/runtime/mds.py) as a data source.

The oracle: tests/data/mds/ holds datasets written by mosaicml-streaming 0.13.0's own
MDSWriter, and beside each the samples its own MDSReader reads back (expected.json), both
made by tests/data/mds/make_fixtures.py. recipec must read exactly those samples.
"""

from __future__ import annotations

import bz2
import json
import pathlib
import shutil

import numpy as np
import pytest

from recipec.runtime import mds, readers, token_sources
from recipec.runtime.readers import DataError

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "data" / "mds"


def expected(name: str) -> list[dict]:
    return json.loads((FIXTURES / name / "expected.json").read_text(encoding="utf-8"))


def index(directory: pathlib.Path) -> dict:
    return json.loads((directory / "index.json").read_text())


def locators(directory: pathlib.Path, shown: str) -> list[str]:
    """``shard-file#row`` of every sample the index lists, in order."""
    out = []
    for shard in index(directory)["shards"]:
        name = (shard["zip_data"] or shard["raw_data"])["basename"]
        out += [f"{shown}/{name}#{row}" for row in range(shard["samples"])]
    return out


def copy(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
    out = tmp_path / name
    shutil.copytree(FIXTURES / name, out)
    (out / "expected.json").unlink()
    return out


def ids_of(value: dict) -> list[int]:
    if "bytes" in value:
        return np.frombuffer(bytes.fromhex(value["bytes"]), "<i8").tolist()
    return value["values"]


def read(source: dict, project_dir, **kw) -> list[readers.Batch]:
    return list(readers.iter_batches(source, project_dir, **kw))


# --------------------------------------------------------------------------- the oracle


def test_text_shards_read_exactly_what_the_library_wrote():
    want = expected("text_zstd")
    assert len(index(FIXTURES / "text_zstd")["shards"]) > 3  # several zstd shards
    stats = readers.ReadStats()
    batches = read({"path": "text_zstd"}, FIXTURES, batch_size=7, stats=stats)
    texts = [t for b in batches for t in b.texts]
    ids = [i for b in batches for i in b.ids]
    kept = [(s["text"], where) for s, where in zip(want, locators(FIXTURES / "text_zstd", "text_zstd")) if s["text"].strip()]
    assert list(zip(texts, ids)) == kept
    assert stats.empty == len(want) - len(kept) == 2
    assert stats.files == len(index(FIXTURES / "text_zstd")["shards"])


def test_every_decoded_column_equals_the_library_s_value():
    want = expected("columns")
    got = []
    for sample, _ in mds.iter_samples(str(FIXTURES / "columns"), lambda columns, shown: list(columns), "s", str):
        got.append({name: mds.decode(encoding, data) for name, (encoding, data) in sample.items()})
    assert got == want
    batches = read({"path": "columns"}, FIXTURES, fields=["score", "quality", "rank", "digits"])
    assert batches[0].texts == [s["text"] for s in want]
    for name in ("score", "quality", "rank", "digits"):
        assert batches[0].fields[name] == [s[name] for s in want]


@pytest.mark.parametrize("name", ["tokens", "tokens_bytes"])
def test_token_shards_read_exactly_the_library_s_ids(name):
    want = [ids_of(s["tokens"]) for s in expected(name)]
    stats = readers.ReadStats()
    batches = list(token_sources.iter_batches({"path": name, "records": "tokens"}, FIXTURES, vocab_size=250, batch_size=5, stats=stats))
    assert [ids.tolist() for b in batches for ids in b.tokens] == want
    assert [i for b in batches for i in b.ids] == locators(FIXTURES / name, name)
    width = 4 if name == "tokens" else 8
    assert stats.documents == len(want) and stats.bytes >= width * sum(map(len, want))


def test_prompt_response_shards_in_a_split_are_prompt_completion_examples():
    want = expected("finetuning/train")
    source = {"path": "finetuning/train", "records": "prompt_completion", "fields": {"completion": "response"}}
    batches = read(source, FIXTURES)
    examples = [json.loads(e) for b in batches for e in b.examples]
    assert examples == [{"prompt": s["prompt"], "completion": s["response"]} for s in want]
    assert batches[0].ids[0] == "finetuning/train/shard.00000.mds.bz2#0"


def test_chat_shards_are_messages_examples():
    """A `messages` json column (llm-foundry's chat finetuning samples) reads as messages records, turn for turn."""
    want = expected("chat/train")
    batches = read({"path": "chat/train", "records": "messages"}, FIXTURES)
    examples = [json.loads(e) for b in batches for e in b.examples]
    assert [e["messages"] for e in examples] == [s["messages"] for s in want]
    assert [len(e["messages"]) for e in examples] == [3, 4, 2, 5, 2, 4, 3, 4]
    assert [i for b in batches for i in b.ids] == locators(FIXTURES / "chat/train", "chat/train")


# --------------------------------------------------------------------------- paths, format, fingerprint


def test_a_directory_with_index_json_is_an_mds_source(tmp_path):
    assert readers.infer_format(str(FIXTURES / "tokens")) == "mds"
    files = readers.expand_files({"path": "text_zstd"}, FIXTURES)
    shards = [s["zip_data"]["basename"] for s in index(FIXTURES / "text_zstd")["shards"]]
    assert [pathlib.Path(f).name for f in files] == ["index.json", *shards]
    assert readers.expand_files({"path": "finetuning/*", "format": "mds"}, FIXTURES)[0].endswith("finetuning/train/index.json")
    with pytest.raises(DataError, match=r"finetuning is not an MDS dataset directory \(it has no index.json\)"):
        readers.expand_files({"path": "finetuning", "format": "mds"}, FIXTURES)
    with pytest.raises(DataError, match="is a file; format mds reads a directory"):
        readers.expand_files({"path": "tokens/index.json", "format": "mds"}, FIXTURES)


def test_the_fingerprint_follows_every_shard_and_the_index(tmp_path):
    out = copy("tokens", tmp_path)
    source = {"path": "tokens", "records": "tokens", "tokenizer": "t"}
    first = readers.fingerprint_source(source, tmp_path)
    assert readers.fingerprint_source(source, tmp_path) == first
    last = out / "shard.00007.mds"
    data = bytearray(last.read_bytes())
    data[-1] ^= 1
    last.write_bytes(bytes(data))
    assert readers.fingerprint_source(source, tmp_path) != first


def test_the_raw_shard_is_read_when_it_is_there(tmp_path):
    out = copy("finetuning/train", tmp_path)
    first = index(out)["shards"][0]
    raw = bz2.decompress((out / first["zip_data"]["basename"]).read_bytes())
    (out / first["zip_data"]["basename"]).unlink()  # the library's cache keeps only the raw file
    (out / first["raw_data"]["basename"]).write_bytes(raw)
    batches = read({"path": "finetuning/train", "records": "prompt_completion", "fields": {"completion": "response"}}, tmp_path)
    assert len([e for b in batches for e in b.examples]) == len(expected("finetuning/train"))
    assert batches[0].ids[0] == "finetuning/train/shard.00000.mds#0"


# --------------------------------------------------------------------------- damage and refusals


def test_a_shard_whose_bytes_differ_from_its_listed_hashes_is_damage(tmp_path):
    """chat/train's index lists sha1 and xxh64 of every file: a changed byte that keeps the size and decodes is caught."""
    import zstandard

    out = copy("chat/train", tmp_path)
    first = index(out)["shards"][0]
    assert set(first["raw_data"]["hashes"]) == set(first["zip_data"]["hashes"]) == {"sha1", "xxh64"}
    raw = zstandard.ZstdDecompressor().decompress((out / first["zip_data"]["basename"]).read_bytes())
    (out / first["raw_data"]["basename"]).write_bytes(raw)  # the raw file is read when it is there: its own hashes apply
    source = {"path": "chat/train", "records": "messages"}
    assert len([e for b in read(source, tmp_path) for e in b.examples]) == len(expected("chat/train"))
    assert raw.count(b"Answer briefly.") == 1
    (out / first["raw_data"]["basename"]).write_bytes(raw.replace(b"Answer briefly.", b"Answer at length"[:15]))
    with pytest.raises(DataError, match=r"chat/train/shard\.00000\.mds: its (sha1|xxh64) is [0-9a-f]+, and index\.json says [0-9a-f]+"):
        read(source, tmp_path)
    # the compressed file's own hashes: a re-compressed shard decodes the same but is not the file the index lists
    (out / first["raw_data"]["basename"]).unlink()
    (out / first["zip_data"]["basename"]).write_bytes(zstandard.ZstdCompressor(level=19).compress(raw))
    with pytest.raises(DataError, match=r"shard\.00000\.mds\.zstd: (\d+ bytes, and index\.json says|its (sha1|xxh64) is)"):
        read(source, tmp_path)


def test_hashes_of_algorithms_it_does_not_know_are_not_checked_and_bad_ones_are_refused(tmp_path):
    out = copy("chat/train", tmp_path)
    data = index(out)
    data["shards"][0]["zip_data"]["hashes"] = {"whirlpool-2": "00", "xxh64": data["shards"][0]["zip_data"]["hashes"]["xxh64"]}
    (out / "index.json").write_text(json.dumps(data))
    source = {"path": "chat/train", "records": "messages"}
    assert len([e for b in read(source, tmp_path) for e in b.examples]) == len(expected("chat/train"))
    data["shards"][0]["zip_data"]["hashes"] = ["sha1"]
    (out / "index.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"shards\[0\]\.zip_data\.hashes is \['sha1'\], not an object"):
        read(source, tmp_path)


def test_a_truncated_shard_names_the_file_and_both_sizes(tmp_path):
    out = copy("text_zstd", tmp_path)
    shard = out / "shard.00002.mds.zstd"
    shard.write_bytes(shard.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"text_zstd/shard.00002.mds.zstd: \d+ bytes, and index.json says \d+; the shard is truncated"):
        read({"path": "text_zstd"}, tmp_path)


def test_a_bad_header_names_the_file(tmp_path):
    out = copy("tokens", tmp_path)
    shard = out / "shard.00001.mds"
    data = bytearray(shard.read_bytes())
    data[0] += 1  # the count of samples
    shard.write_bytes(bytes(data))
    source = {"path": "tokens", "records": "tokens"}
    with pytest.raises(DataError, match=r"tokens/shard.00001.mds: the header counts \d+ samples, and index.json says \d+"):
        list(token_sources.iter_batches(source, tmp_path, vocab_size=250))
    data[0] -= 1
    n = int.from_bytes(data[:4], "little")
    data[4 + 4 * n : 8 + 4 * n] = (len(data) - 1).to_bytes(4, "little")  # the end of the last sample
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"tokens/shard.00001.mds: bad header: sample offsets run from"):
        list(token_sources.iter_batches(source, tmp_path, vocab_size=250))


def test_a_sample_whose_columns_do_not_fill_it_is_damage(tmp_path):
    out = copy("columns", tmp_path)
    shard = out / "shard.00000.mds"
    data = bytearray(shard.read_bytes())
    first = int.from_bytes(data[8:12], "little")  # offset of sample 1; sample 0 starts with its column sizes
    start = int.from_bytes(data[4:8], "little")
    data[start : start + 4] = (int.from_bytes(data[start : start + 4], "little") + 1).to_bytes(4, "little")
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"columns/shard.00000.mds#0: its columns take \d+ bytes of a \d+-byte sample"):
        read({"path": "columns"}, tmp_path)
    assert first > start


def test_corrupt_compressed_data_names_the_file(tmp_path):
    out = copy("text_zstd", tmp_path)
    shard = out / "shard.00000.mds.zstd"
    data = bytearray(shard.read_bytes())
    data[6:20] = bytes(14)
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"text_zstd/shard.00000.mds.zstd: (corrupt zstd data|decompresses to)"):
        read({"path": "text_zstd"}, tmp_path)


def test_a_missing_shard_and_a_bad_index_name_the_files(tmp_path):
    out = copy("text_zstd", tmp_path)
    (out / "shard.00003.mds.zstd").unlink()
    with pytest.raises(DataError, match=r"text_zstd/index.json: shard 3 is missing: neither shard.00003.mds nor shard.00003.mds.zstd"):
        read({"path": "text_zstd"}, tmp_path)
    (out / "index.json").write_text('{"version": 2, "shards": [')
    with pytest.raises(DataError, match=r"text_zstd/index.json: not an MDS index, not valid JSON"):
        read({"path": "text_zstd"}, tmp_path)
    (out / "index.json").write_text(json.dumps({"version": 2, "shards": [{"format": "mds", "version": 2, "samples": 1,
        "column_names": ["text"], "column_encodings": ["str"], "column_sizes": [None], "compression": None,
        "raw_data": {"basename": "../../etc/passwd", "bytes": 1}, "zip_data": None}]}))
    with pytest.raises(DataError, match=r"shards\[0\].raw_data.basename is '../../etc/passwd', not a file name"):
        read({"path": "text_zstd"}, tmp_path)


def test_snappy_and_brotli_shards_are_refused_unless_their_raw_file_is_there(tmp_path):
    out = copy("text_zstd", tmp_path)
    meta = index(out)
    for shard in meta["shards"]:
        old = shard["zip_data"]["basename"]
        shard["compression"] = "snappy"
        shard["zip_data"]["basename"] = old.replace(".zstd", ".snappy")
        (out / old).rename(out / shard["zip_data"]["basename"])
    (out / "index.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"shard.00000.mds.snappy: compressed with 'snappy', which recipec cannot decompress"):
        read({"path": "text_zstd"}, tmp_path)


def test_pickled_columns_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"pickled/shard.00000.mds: column 'obj' is pickled \(encoding pkl\); unpickling runs"):
        read({"path": "pickled", "records": "prompt_completion", "fields": {"prompt": "obj", "completion": "text"}}, FIXTURES)
    assert [b.texts for b in read({"path": "pickled"}, FIXTURES)] == [["x"]]  # a column not read is never decoded


def test_columns_of_the_wrong_kind_are_errors_that_say_so():
    with pytest.raises(DataError, match=r"text_field 'tokens' has encoding ndarray:int32, not str \(text\); token ids are read with records = \"tokens\""):
        read({"path": "tokens", "text_field": "tokens"}, FIXTURES)
    with pytest.raises(DataError, match=r"text_zstd/shard.00000.mds.zstd: column 'text' has encoding str, not token ids"):
        list(token_sources.iter_batches({"path": "text_zstd", "records": "tokens", "fields": {"input_ids": "text"}}, FIXTURES, vocab_size=9))
    with pytest.raises(DataError, match=r"no column 'input_ids' or 'tokens' of token ids; columns: text \(str\)"):
        list(token_sources.iter_batches({"path": "text_zstd", "records": "tokens"}, FIXTURES, vocab_size=9))
    with pytest.raises(DataError, match=r"field 'meta' has encoding json, not a number"):
        read({"path": "columns"}, FIXTURES, fields=["meta"])


def test_an_id_out_of_range_is_an_error_and_a_bad_value_a_malformed_record(tmp_path):
    top = max(max(ids_of(s["tokens"])) for s in expected("tokens"))
    with pytest.raises(DataError, match=rf"tokens/shard.\d+.mds#\d+: position \d+ is id {top}, not below {top}"):
        list(token_sources.iter_batches({"path": "tokens", "records": "tokens"}, FIXTURES, vocab_size=top))
    stats = readers.ReadStats()
    source = {"path": "tokens_bytes", "records": "tokens", "token_dtype": "int32", "on_error": "skip"}
    batches = list(token_sources.iter_batches(source, FIXTURES, vocab_size=1 << 20, stats=stats))
    assert stats.skipped == 0 and all(len(ids) % 2 == 0 for b in batches for ids in b.tokens)  # int64 read as twice as many int32
    out = copy("columns", tmp_path)
    shard = out / "shard.00000.mds"
    data = shard.read_bytes()
    shard.write_bytes(data.replace(b"text 2", b"text \xff"))
    with pytest.raises(DataError, match=r"columns/shard.00000.mds#2: column 'text' \(str\) does not decode"):
        read({"path": "columns"}, tmp_path)
    stats = readers.ReadStats()
    assert len(read({"path": "columns", "on_error": "skip"}, tmp_path, stats=stats)[0].texts) == 5
    assert stats.skipped == 1 and stats.skipped_examples[0].startswith("columns/shard.00000.mds#2")


# --------------------------------------------------------------------------- the schema


def test_the_schema_accepts_mds_sources_and_token_dtype_for_their_bytes():
    from pydantic import ValidationError

    from recipec.schema.data import Source

    Source(path="data/train", format="mds")
    Source(path="data/train", format="mds", records="tokens", tokenizer="gpt2", token_dtype="int64")
    with pytest.raises(ValidationError, match="a .bin file holds uint16 or uint32 ids, not int64"):
        Source(path="a.bin", records="tokens", tokenizer="gpt2", token_dtype="int64", eos_token_id=0)
    with pytest.raises(ValidationError, match="`eos_token_id` applies to .bin token files"):
        Source(path="data/train", format="mds", records="tokens", tokenizer="gpt2", eos_token_id=0)


# --------------------------------------------------------------------------- through the data stage


def test_mds_token_shards_pack_as_the_same_ids_in_parquet(tmp_path):
    pytest.importorskip("transformers")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recipec.runtime.tokenizer import train_bpe

    from .test_stage import prose, request, run

    tok_dir = tmp_path / "tok"
    train_bpe([prose(i) for i in range(200)], 400).save_pretrained(tok_dir)
    copy("tokens", tmp_path)
    docs = [ids_of(s["tokens"]) for s in expected("tokens")]
    pq.write_table(pa.table({"input_ids": pa.array(docs, pa.list_(pa.int64()))}), tmp_path / "ids.parquet")
    settings = dict(eval_fraction=0.1, packing=True, seq_len=24)
    source = {"records": "tokens", "tokenizer": str(tok_dir)}
    parquet = run(request(tmp_path, str(tok_dir), [{"path": "ids.parquet", **source}], **settings))
    shards = run(request(tmp_path, str(tok_dir), [{"path": "tokens", **source}], **settings))
    assert shards.report["documents"] == parquet.report["documents"]
    assert shards.report["segments"][0]["sequences_sha256"] == parquet.report["segments"][0]["sequences_sha256"]
    assert shards.report["eval"]["sequences_sha256"] == parquet.report["eval"]["sequences_sha256"]
