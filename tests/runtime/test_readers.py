"""Streaming source readers: known answers per format, locators, errors that name the line, fingerprints, memory."""

import gzip
import json
import os
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from recipec.runtime import data  # noqa: E402
from recipec.runtime.readers import (  # noqa: E402
    DataError,
    ReadStats,
    expand_files,
    fingerprint_source,
    infer_format,
    iter_batches,
    source_label,
)

ROWS = [
    {"text": "alpha one", "score": 0.5},
    {"text": "beta two", "score": 1},
    {"text": "gamma three", "score": -2.25},
]


def _lines(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _read(source, project_dir, **kwargs):
    """All batches of a source flattened: (texts, ids, fields, stats)."""
    stats = ReadStats()
    texts, ids, fields = [], [], {}
    for batch in iter_batches(source, project_dir, stats=stats, **kwargs):
        texts += batch.texts
        ids += batch.ids
        for name, values in batch.fields.items():
            fields.setdefault(name, []).extend(values)
    return texts, ids, fields, stats


def _error(source, project_dir, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        _read(source, project_dir, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------- known answers


def test_jsonl_known_answer(tmp_path):
    content = (
        b'{"text": "first doc\\n", "score": 3}\n'
        b"\n"
        b'{"text": "", "score": 1}\n'
        b'{"text": "  \\n\\t", "score": 1}\n'
        b"   \n"
        b'{"text": "  second  ", "score": 0.25, "other": [1]}\n'
    )
    _write(tmp_path / "data" / "a.jsonl", content)

    texts, ids, fields, stats = _read({"path": "data/*.jsonl"}, tmp_path, fields=["score"])

    assert texts == ["first doc\n", "  second  "]
    assert ids == ["data/a.jsonl:1", "data/a.jsonl:6"]
    assert fields == {"score": [3, 0.25]}
    assert stats == ReadStats(files=1, documents=2, empty=2, skipped=0, bytes=len("first doc\n") + len("  second  "))


def test_jsonl_bom_and_unicode(tmp_path):
    _write(tmp_path / "a.jsonl", "\ufeff".encode() + _lines([{"text": "ünïcödé 🙂"}]))
    texts, ids, _, stats = _read({"path": "a.jsonl"}, tmp_path)
    assert texts == ["ünïcödé 🙂"]
    assert stats.bytes == len("ünïcödé 🙂".encode())


def test_gzip_and_zstd_read_like_plain(tmp_path):
    _write(tmp_path / "a.jsonl", _lines(ROWS))
    _write(tmp_path / "b.json.gz", gzip.compress(_lines(ROWS)))
    _write(tmp_path / "c.jsonl.zst", zstandard.ZstdCompressor().compress(_lines(ROWS)))

    for name in ("a.jsonl", "b.json.gz", "c.jsonl.zst"):
        texts, ids, fields, stats = _read({"path": name, "name": "web"}, tmp_path, fields=["score"])
        assert texts == ["alpha one", "beta two", "gamma three"]
        assert ids == [f"{name}:1", f"{name}:2", f"{name}:3"]
        assert fields == {"score": [0.5, 1, -2.25]}
        assert stats.files == 1


def test_zstd_with_several_frames(tmp_path):
    compressor = zstandard.ZstdCompressor()
    frames = compressor.compress(_lines(ROWS[:2])) + compressor.compress(_lines(ROWS[2:]))
    _write(tmp_path / "a.jsonl.zst", frames)
    texts, ids, _, _ = _read({"path": "a.jsonl.zst"}, tmp_path)
    assert texts == ["alpha one", "beta two", "gamma three"]
    assert ids[-1] == "a.jsonl.zst:3"


def test_parquet_known_answer(tmp_path):
    table = pa.table(
        {
            "body": ["p0", " ", "", "p3", "p4"],
            "quality": [1.5, 2.0, 3.0, 4.0, 5],
            "unused": ["x"] * 5,
        }
    )
    (tmp_path / "pq").mkdir()
    pq.write_table(table, tmp_path / "pq" / "part.parquet", row_group_size=2)

    texts, ids, fields, stats = _read(
        {"path": "pq/part.parquet", "text_field": "body"}, tmp_path, fields=["quality"], batch_size=2
    )

    assert texts == ["p0", "p3", "p4"]
    assert ids == ["pq/part.parquet#0", "pq/part.parquet#3", "pq/part.parquet#4"]
    assert fields == {"quality": [1.5, 4.0, 5.0]}
    assert (stats.files, stats.documents, stats.empty) == (1, 3, 2)


@pytest.mark.parametrize("kind", ["file", "stream"])
def test_arrow_ipc_known_answer(tmp_path, kind):
    table = pa.table({"text": ["a0", None, " ", "a3"], "quality": [1.0, 2.0, 3.0, 4.0]})
    new = pa.ipc.new_file if kind == "file" else pa.ipc.new_stream
    with pa.OSFile(str(tmp_path / "part.arrow"), "wb") as sink, new(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)
    texts, ids, fields, stats = _read({"path": "*.arrow", "on_error": "skip"}, tmp_path, fields=["quality"])
    assert texts == ["a0", "a3"] and ids == ["part.arrow#0", "part.arrow#3"] and fields == {"quality": [1.0, 4.0]}
    assert (stats.files, stats.skipped, stats.empty) == (1, 1, 1)
    (tmp_path / "bad.arrow").write_bytes(b"not arrow at all")
    assert _error({"path": "bad.arrow"}, tmp_path).startswith("sources[0]: bad.arrow: not an Arrow IPC file or stream")


def test_text_glob_known_answer(tmp_path):
    _write(tmp_path / "docs" / "b.txt", b"bee\n")
    _write(tmp_path / "docs" / "a.md", b"# a\n")
    _write(tmp_path / "docs" / "sub" / "c.text", "  cé  ".encode())
    _write(tmp_path / "docs" / "sub" / "empty.txt", b" \n")

    texts, ids, _, stats = _read({"path": ["docs/*.txt", "docs/**/*"], "format": "text"}, tmp_path)

    # the first glob's match first, then the second glob's sorted matches without the duplicate
    assert ids == ["docs/b.txt", "docs/a.md", "docs/sub/c.text"]
    assert texts == ["bee\n", "# a\n", "  cé  "]
    assert (stats.files, stats.documents, stats.empty) == (4, 3, 1)


def test_text_inferred_and_outside_project(tmp_path):
    outside = _write(tmp_path / "elsewhere" / "x.txt", b"far away")
    project = tmp_path / "project"
    project.mkdir()
    texts, ids, _, _ = _read({"path": str(outside)}, project)
    assert texts == ["far away"]
    assert ids == [str(outside)]


def test_datasets_directory_known_answer(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["d0", "", "d2", "d3"], "score": [1, 2, 3, 4], "x": ["a"] * 4})
    ds.save_to_disk(str(tmp_path / "saved"))

    for fmt in ("datasets", None):
        texts, ids, fields, stats = _read({"path": "saved", "format": fmt}, tmp_path, fields=["score"], batch_size=2)
        assert texts == ["d0", "d2", "d3"]
        assert ids == ["saved#0", "saved#2", "saved#3"]
        assert fields == {"score": [1, 3, 4]}
        assert (stats.files, stats.empty) == (1, 1)

    files = expand_files({"path": "saved", "format": "datasets"}, tmp_path)
    assert files == sorted(str(p) for p in (tmp_path / "saved").glob("*.arrow"))
    assert infer_format(str(tmp_path / "saved")) == "datasets"
    fingerprint = fingerprint_source({"path": "saved"}, tmp_path)
    assert fingerprint == fingerprint_source({"path": "saved", "format": None}, tmp_path)
    assert fingerprint != fingerprint_source({"path": "saved"}, tmp_path, fields=["score"])


@pytest.mark.parametrize("name", ["python-docs", "python-stdlib"])
def test_builtins_with_max_documents(name, tmp_path):
    texts, ids, fields, stats = _read({"builtin": name, "max_documents": 4}, tmp_path, batch_size=3)

    assert texts == data.builtin_texts(name, limit=4)
    assert len(ids) == 4 and all(i.startswith(name + ":") for i in ids)
    assert stats.documents == 4 and stats.files == 0
    if name == "python-docs":
        from pydoc_data.topics import topics

        keys = [k for k in sorted(topics) if topics[k]][:4]
        assert ids == [f"python-docs:{k}" for k in keys]
    else:
        stdlib = dict(data._stdlib_files())
        assert [stdlib[i.split(":", 1)[1]].read_text(encoding="utf-8") for i in ids] == texts
        assert ids[0] == "python-stdlib:__future__.py"


# --------------------------------------------------------------------------- batches and limits


def test_batch_boundaries_run_across_files(tmp_path):
    _write(tmp_path / "a.jsonl", _lines([{"text": t} for t in ("1", "2", "3")]))
    _write(tmp_path / "b.jsonl", _lines([{"text": t} for t in ("4", "5")]))

    batches = list(iter_batches({"path": "*.jsonl"}, tmp_path, batch_size=2, fields=()))

    assert [b.texts for b in batches] == [["1", "2"], ["3", "4"], ["5"]]
    assert [b.ids for b in batches] == [["a.jsonl:1", "a.jsonl:2"], ["a.jsonl:3", "b.jsonl:1"], ["b.jsonl:2"]]
    assert all(b.fields == {} for b in batches)


def test_max_documents_stops_reading(tmp_path):
    # the malformed line after the limit and the second file are never read
    _write(tmp_path / "a.jsonl", b'{"text": "1"}\n{"text": ""}\n{"text": "2"}\n{"text": "3"}\nnot json\n')
    _write(tmp_path / "b.jsonl", b"not json either\n")
    stats = ReadStats()

    batches = list(iter_batches({"path": "*.jsonl", "max_documents": 3}, tmp_path, batch_size=2, stats=stats))

    assert [b.texts for b in batches] == [["1", "2"], ["3"]]
    assert (stats.files, stats.documents, stats.empty) == (1, 3, 1)


def test_stats_add_up_over_sources(tmp_path):
    _write(tmp_path / "a.jsonl", _lines(ROWS))
    stats = ReadStats()
    for index in range(2):
        for _ in iter_batches({"path": "a.jsonl", "max_documents": 2}, tmp_path, index=index, stats=stats):
            pass
    assert (stats.files, stats.documents) == (2, 4)


# --------------------------------------------------------------------------- errors


def test_source_label():
    assert source_label({"path": "x", "name": "web"}, 3) == "web"
    assert source_label({"path": "x"}, 3) == "sources[3]"


def test_malformed_line_names_file_and_line(tmp_path):
    _write(tmp_path / "data" / "a.jsonl", b'{"text": "1"}\n{"text": "2"}\n{"text": oops}\n')
    message = _error({"path": "data/a.jsonl"}, tmp_path, index=2)
    assert message == "sources[2]: data/a.jsonl:3: not valid JSON (Expecting value at column 10)"


@pytest.mark.parametrize(
    "line, fields, reason",
    [
        (b'{"body": "x", "id": 1}', (), "record has no text_field 'text'; its keys are 'body', 'id'"),
        (b"{}", (), "record has no text_field 'text'; the record is empty"),
        (b'{"text": 42}', (), "text_field 'text' holds 42, not a string"),
        (b'{"text": ["a"]}', (), "text_field 'text' holds ['a'], not a string"),
        (b'["text"]', (), "expected a JSON object (one per line), got an array"),
        (b'{"text": "x"}', ("score",), "record has no field 'score'; its keys are 'text'"),
        (b'{"text": "x", "score": true}', ("score",), "field 'score' holds True, not a number"),
        (b'{"text": "x", "score": "1"}', ("score",), "field 'score' holds '1', not a number"),
        (b'{"text": "caf\xe9"}', (), "not valid UTF-8 (byte 14 of the line)"),
    ],
)
def test_bad_records(tmp_path, line, fields, reason):
    _write(tmp_path / "a.jsonl", b'{"text": "ok", "score": 1}\n\n' + line + b"\n")
    message = _error({"path": "a.jsonl", "name": "web"}, tmp_path, fields=fields)
    assert message == f"web: a.jsonl:3: {reason}"


@pytest.mark.parametrize(
    "line, reason",
    [
        # a string left open mid-line: where it starts, not the newline it runs into
        (b'{"text": "abc", "n": 1, "t": "x\\"}', "Unterminated string starting at column 30"),
        (b'{"text": "abc\r', "Unterminated string starting at column 10"),
        # an object left open: the end of this line, not column 1 of the next
        (b'{"text": "abc"', "the line ends inside the JSON value: Expecting ',' delimiter at column 15"),
        (b'{"text": "abc",   ', "the line ends inside the JSON value: Expecting property name enclosed in double quotes at column 19"),
        # a bad value mid-line, and data after the value
        (b'{"text": "a", "x": tru, "y": 1}', "Expecting value at column 20"),
        (b'{"text": "abc"}  x', "Extra data at column 18"),
    ],
)
def test_a_json_error_names_the_real_fault_and_its_column(tmp_path, line, reason):
    _write(tmp_path / "a.jsonl", b'{"text": "ok"}\n' + line + b"\n" + b'{"text": "next"}\n')
    assert _error({"path": "a.jsonl", "name": "web"}, tmp_path) == f"web: a.jsonl:2: not valid JSON ({reason})"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "datasets"])
def test_a_null_text_is_a_malformed_record_not_an_empty_document(tmp_path, fmt):
    rows = [{"text": "first", "q": 1.0}, {"text": None, "q": 2.0}, {"text": "", "q": 3.0}, {"text": "last", "q": 4.0}]
    if fmt == "jsonl":
        _write(tmp_path / "a.jsonl", _lines(rows))
        path, where = "a.jsonl", "a.jsonl:2"
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
        path, where = "a.parquet", "a.parquet#1"
    else:
        datasets = pytest.importorskip("datasets")
        datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
        path, where = "saved", "saved#1"
    source = {"path": path, "name": "web", "format": fmt}
    assert _error(source, tmp_path) == f"web: {where}: text_field 'text' is null, not a string"
    texts, ids, fields, stats = _read({**source, "on_error": "skip"}, tmp_path, fields=["q"])
    assert texts == ["first", "last"] and fields == {"q": [1.0, 4.0]}
    assert (stats.documents, stats.empty, stats.skipped) == (2, 1, 1)
    assert stats.skipped_examples == [f"{where}: text_field 'text' is null, not a string"]


def test_skip_counts_bad_records_and_keeps_five_examples(tmp_path):
    lines = [b'{"text": "keep 1"}'] + [b"bad %d" % i for i in range(6)] + [b'{"body": 1}', b'{"text": "keep 2"}']
    _write(tmp_path / "a.jsonl", b"\n".join(lines) + b"\n")

    texts, ids, _, stats = _read({"path": "a.jsonl", "on_error": "skip"}, tmp_path)

    assert texts == ["keep 1", "keep 2"]
    assert ids == ["a.jsonl:1", "a.jsonl:9"]
    assert stats.skipped == 7
    assert stats.skipped_examples == [f"a.jsonl:{n}: not valid JSON (Expecting value at column 1)" for n in range(2, 7)]


def test_skip_bad_text_file(tmp_path):
    _write(tmp_path / "a.txt", b"good")
    _write(tmp_path / "b.txt", b"\xff\xfe bad")
    assert _error({"path": "*.txt"}, tmp_path) == "sources[0]: b.txt: not valid UTF-8 (byte 1)"
    texts, _, _, stats = _read({"path": "*.txt", "on_error": "skip"}, tmp_path)
    assert texts == ["good"]
    assert (stats.skipped, stats.skipped_examples) == (1, ["b.txt: not valid UTF-8 (byte 1)"])


@pytest.mark.parametrize("on_error", ["error", "skip"])
def test_truncated_gzip_is_an_error_either_way(tmp_path, on_error):
    packed = gzip.compress(_lines([{"text": f"document {i} " * 20} for i in range(2000)]))
    _write(tmp_path / "a.jsonl.gz", packed[: len(packed) // 2])
    message = _error({"path": "a.jsonl.gz", "on_error": on_error}, tmp_path)
    assert message.startswith("sources[0]: a.jsonl.gz: truncated or corrupt gzip file, after line ")


def test_corrupt_gzip(tmp_path):
    _write(tmp_path / "a.jsonl.gz", b"this is not gzip at all\n")
    message = _error({"path": "a.jsonl.gz"}, tmp_path)
    assert message.startswith("sources[0]: a.jsonl.gz: truncated or corrupt gzip file, after line 0 (")


@pytest.mark.parametrize("on_error", ["error", "skip"])
def test_truncated_zstd_is_an_error_either_way(tmp_path, on_error):
    packed = zstandard.ZstdCompressor().compress(_lines([{"text": f"document {i}"} for i in range(20000)]))
    for cut in (len(packed) - 7, len(packed) // 2, 5):
        _write(tmp_path / "a.jsonl.zst", packed[:cut])
        message = _error({"path": "a.jsonl.zst", "on_error": on_error}, tmp_path)
        assert message == "sources[0]: a.jsonl.zst: truncated or corrupt zstd file (the file ends inside a zstd frame)"


def test_corrupt_zstd(tmp_path):
    _write(tmp_path / "a.jsonl.zst", b"this is not zstd at all\n")
    assert _error({"path": "a.jsonl.zst"}, tmp_path) == (
        "sources[0]: a.jsonl.zst: truncated or corrupt zstd file (no zstd frame at byte 0)"
    )
    # intact frame and block headers around damaged compressed data
    compressor = zstandard.ZstdCompressor(write_checksum=True)
    first = compressor.compress(_lines(ROWS))
    packed = first + compressor.compress(_lines([{"text": f"doc {i}"} for i in range(5000)]))
    first = len(first)
    damaged = bytearray(packed)
    for i in range(first + 40, first + 60):
        damaged[i] ^= 0xFF
    _write(tmp_path / "a.jsonl.zst", bytes(damaged))
    message = _error({"path": "a.jsonl.zst"}, tmp_path)
    assert message.startswith("sources[0]: a.jsonl.zst: truncated or corrupt zstd file, after line ")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_parquet(tmp_path, damage):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(1000)]}), path)
    whole = path.read_bytes()
    path.write_bytes(b"not parquet" * 10 if damage == "garbage" else whole[: len(whole) // 2])
    message = _error({"path": "a.parquet"}, tmp_path)
    assert message.startswith("sources[0]: a.parquet: not a readable parquet file (")


def test_parquet_missing_column_lists_columns(tmp_path):
    pq.write_table(pa.table({"body": ["x"], "score": [1.0]}), tmp_path / "a.parquet")
    assert _error({"path": "a.parquet"}, tmp_path) == (
        "sources[0]: a.parquet: no column 'text' (text_field); available columns: body, score"
    )
    assert _error({"path": "a.parquet", "text_field": "body"}, tmp_path, fields=["quality"]) == (
        "sources[0]: a.parquet: no column 'quality' (field); available columns: body, score"
    )


def test_parquet_column_types(tmp_path):
    pq.write_table(pa.table({"text": [1, 2], "tag": ["a", "b"], "score": [1.0, None]}), tmp_path / "a.parquet")
    assert _error({"path": "a.parquet"}, tmp_path) == "sources[0]: a.parquet: text_field 'text' holds int64, not text"
    pq.write_table(pa.table({"text": ["a", "b"], "tag": ["a", "b"], "score": [1.0, None]}), tmp_path / "a.parquet")
    assert _error({"path": "a.parquet"}, tmp_path, fields=["tag"]) == (
        "sources[0]: a.parquet: field 'tag' holds string, not numbers"
    )
    assert _error({"path": "a.parquet"}, tmp_path, fields=["score"]) == (
        "sources[0]: a.parquet#1: field 'score' is null, not a number"
    )
    texts, _, fields, stats = _read({"path": "a.parquet", "on_error": "skip"}, tmp_path, fields=["score"])
    assert (texts, fields, stats.skipped) == (["a"], {"score": [1.0]}, 1)


def test_glob_matching_nothing_names_glob_and_directory(tmp_path):
    _write(tmp_path / "data" / "a.jsonl", _lines(ROWS))
    message = _error({"path": ["data/*.jsonl", "data/*.parquet"], "name": "web"}, tmp_path)
    assert message == f"web: path 'data/*.parquet' matches nothing in {tmp_path}"
    with pytest.raises(DataError, match="matches only directories"):
        expand_files({"path": "data"}, tmp_path)


def test_mixed_and_unknown_formats(tmp_path):
    _write(tmp_path / "d" / "a.jsonl", _lines(ROWS))
    _write(tmp_path / "d" / "b.txt", b"x")
    _write(tmp_path / "d" / "c.txt", b"y")
    assert _error({"path": "d/*"}, tmp_path) == (
        "sources[0]: files of different formats (jsonl: d/a.jsonl; text: d/b.txt, d/c.txt); "
        "use one source per format, or set `format`"
    )
    _write(tmp_path / "e" / "a.csv", b"x")
    message = _error({"path": "e/*"}, tmp_path)
    assert message.startswith("sources[0]: cannot tell the format of e/a.csv from the name; set `format`")
    # an explicit format reads any name
    assert _read({"path": "e/*", "format": "text"}, tmp_path)[0] == ["x"]


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("a.jsonl", "jsonl"),
        ("a.JSON", "jsonl"),
        ("a.jsonl.gz", "jsonl"),
        ("a.json.gz", "jsonl"),
        ("a.jsonl.zst", "jsonl"),
        ("a.json.zst", "jsonl"),
        ("a.parquet", "parquet"),
        ("a.txt", "text"),
        ("a.md", "text"),
        ("a.text", "text"),
    ],
)
def test_infer_format(name, fmt):
    assert infer_format(name) == fmt


@pytest.mark.parametrize("name", ["a.csv", "a.txt.gz", "a.gz", "noext"])
def test_infer_format_asks_for_format(name):
    with pytest.raises(DataError, match="set `format`"):
        infer_format(name)


def test_dataset_dict_and_plain_directories(tmp_path):
    datasets = pytest.importorskip("datasets")
    split = datasets.Dataset.from_dict({"text": ["a"]})
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "dd"))
    (tmp_path / "plain").mkdir()

    for fmt in ("datasets", None):
        assert _error({"path": "dd", "format": fmt}, tmp_path) == (
            "sources[0]: dd holds a DatasetDict (splits: test, train); point `path` at one split's directory "
            "(e.g. dd/test), or save a single split with Dataset.save_to_disk"
        )
    assert _read({"path": "dd/train", "format": "datasets"}, tmp_path)[:2] == (["a"], ["dd/train#0"])
    assert _error({"path": "plain", "format": "datasets"}, tmp_path) == (
        "sources[0]: plain is not a directory written by datasets' Dataset.save_to_disk "
        "(it has no state.json and dataset_info.json)"
    )


def test_datasets_missing_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"body": ["a"], "n": [1]}).save_to_disk(str(tmp_path / "saved"))
    assert _error({"path": "saved"}, tmp_path) == (
        "sources[0]: saved: no column 'text' (text_field); available columns: body, n"
    )


def test_fields_of_text_and_builtins_are_errors(tmp_path):
    _write(tmp_path / "a.txt", b"x")
    assert "text files have no fields" in _error({"path": "a.txt"}, tmp_path, fields=["score"])
    assert "builtin corpora have no fields" in _error({"builtin": "python-docs"}, tmp_path, fields=["score"])


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint(tmp_path):
    _write(tmp_path / "data" / "a.jsonl", _lines(ROWS))
    path = _write(tmp_path / "data" / "b.jsonl", _lines(ROWS[:1]))
    source = {"path": "data/*.jsonl"}
    base = fingerprint_source(source, tmp_path)

    assert len(base) == 64 and fingerprint_source(source, tmp_path) == base
    assert fingerprint_source({**source, "name": "renamed", "text_field": "text"}, tmp_path) == base
    assert fingerprint_source({"path": ["data/a.jsonl", "data/b.jsonl"]}, tmp_path) == base

    assert fingerprint_source({**source, "text_field": "body"}, tmp_path) != base
    assert fingerprint_source({**source, "max_documents": 2}, tmp_path) != base
    assert fingerprint_source({**source, "on_error": "skip"}, tmp_path) != base
    assert fingerprint_source({**source, "format": "jsonl"}, tmp_path) != base
    assert fingerprint_source(source, tmp_path, fields=["score"]) != base
    assert fingerprint_source({"path": ["data/b.jsonl", "data/a.jsonl"]}, tmp_path) != base

    content = bytearray(path.read_bytes())
    content[5] ^= 1
    path.write_bytes(bytes(content))
    changed = fingerprint_source(source, tmp_path)
    assert changed != base
    content[5] ^= 1
    path.write_bytes(bytes(content))
    assert fingerprint_source(source, tmp_path) == base


def test_fingerprint_of_builtins(tmp_path):
    small = fingerprint_source({"builtin": "python-docs", "max_documents": 3}, tmp_path)
    assert small == fingerprint_source({"builtin": "python-docs", "max_documents": 3}, tmp_path)
    assert small != fingerprint_source({"builtin": "python-docs", "max_documents": 4}, tmp_path)
    assert small != fingerprint_source({"builtin": "python-stdlib", "max_documents": 3}, tmp_path)
    assert expand_files({"builtin": "python-docs"}, tmp_path) == []


# --------------------------------------------------------------------------- memory


def _open_for_writing(path):
    if path.suffix == ".gz":
        return gzip.open(path, "wb", compresslevel=1)
    if path.suffix == ".zst":
        return zstandard.ZstdCompressor(level=1).stream_writer(open(path, "wb"))
    return open(path, "wb")


@pytest.mark.parametrize("name", ["big.jsonl", "big.jsonl.gz", "big.jsonl.zst"])
def test_memory_stays_flat(tmp_path, name):
    path = tmp_path / name
    text = "lorem ipsum dolor sit amet " * 75
    size = 0
    with _open_for_writing(path) as f:
        for i in range(25_000):
            line = json.dumps({"text": f"{i} {text}", "score": 0.5}).encode() + b"\n"
            f.write(line)
            size += len(line)
    assert size > 50_000_000
    limit = 5_000_000

    tracemalloc.start()
    try:
        documents = 0
        for batch in iter_batches({"path": name}, tmp_path, fields=["score"], batch_size=100):
            documents += len(batch.texts)
        _, peak = tracemalloc.get_traced_memory()
        # the measurement does see a whole-file read
        tracemalloc.reset_peak()
        with _open_for_reading(path) as f:
            whole = f.read()
        _, whole_peak = tracemalloc.get_traced_memory()
        del whole
    finally:
        tracemalloc.stop()

    assert documents == 25_000
    assert whole_peak > limit
    assert peak < limit, f"reading {size} bytes of {name} peaked at {peak} traced bytes"


def _open_for_reading(path):
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".zst":
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


# --------------------------------------------------------------------------- one JSON array


def test_a_json_file_holding_one_array_reads_as_datasets_json_loader_reads_it(tmp_path):
    """A .json file whose first value opens an array (LLaMA-Factory's and Alpaca's data files) is one
    JSON array of records: the same records, in order, as `datasets.load_dataset("json")` gives,
    each located by its 0-based index; plain, gzip and zstd; a BOM and leading blank lines allowed."""
    datasets = pytest.importorskip("datasets")
    rows = ROWS + [{"text": "delta four\nwith a line", "score": 7}]
    text = "\n" + json.dumps(rows, indent=2) + "\n"
    _write(tmp_path / "a.json", "\ufeff".encode() + text.encode())
    _write(tmp_path / "b.json.gz", gzip.compress(text.encode()))
    _write(tmp_path / "c.json.zst", zstandard.ZstdCompressor().compress(text.encode()))
    _write(tmp_path / "oracle.json", text.encode())
    theirs = datasets.load_dataset("json", data_files=str(tmp_path / "oracle.json"), split="train", cache_dir=str(tmp_path / "cache"))
    for name in ("a.json", "b.json.gz", "c.json.zst"):
        texts, ids, fields, stats = _read({"path": name, "name": "web"}, tmp_path, fields=["score"])
        assert texts == theirs["text"] and fields == {"score": theirs["score"]}, name
        assert ids == [f"{name}#{i}" for i in range(4)]
        assert stats.files == 1 and stats.documents == 4


def test_an_array_of_alpaca_records_reads_as_examples(tmp_path):
    rows = [{"instruction": "Add one.", "input": "2", "output": "3"}, {"instruction": "Say hi.", "input": "", "output": "hi"}]
    _write(tmp_path / "alpaca_en_demo.json", json.dumps(rows, indent=2).encode())
    lines = tmp_path / "lines.jsonl"
    _write(lines, _lines(rows))
    a = list(iter_batches({"path": "alpaca_en_demo.json", "records": "alpaca"}, tmp_path))
    b = list(iter_batches({"path": "lines.jsonl", "records": "alpaca"}, tmp_path))
    assert a[0].examples == b[0].examples and a[0].texts == b[0].texts
    assert a[0].ids == ["alpaca_en_demo.json#0", "alpaca_en_demo.json#1"]


def test_a_bad_json_array_names_its_line_and_a_bad_element_its_index(tmp_path):
    _write(tmp_path / "a.json", b'[\n  {"text": "ok"},\n  {"text": "x",}\n]\n')
    assert _error({"path": "a.json", "name": "web"}, tmp_path) == (
        "web: a.json:3: not valid JSON (Expecting property name enclosed in double quotes at column 16); "
        "a file whose first value opens an array is read as one JSON array of records"
    )
    _write(tmp_path / "b.json", b'[{"text": "ok"}, ["not", "an", "object"], {"text": "last"}, null]')
    assert _error({"path": "b.json", "name": "web"}, tmp_path) == "web: b.json#1: expected a JSON object (an element of the array), got an array"
    texts, ids, _, stats = _read({"path": "b.json", "name": "web", "on_error": "skip"}, tmp_path)
    assert texts == ["ok", "last"] and ids == ["b.json#0", "b.json#2"] and stats.skipped == 2
    # JSON lines whose first line is a record stay JSON lines: a later line holding an array is a bad record
    _write(tmp_path / "c.jsonl", b'{"text": "ok"}\n[1, 2]\n')
    assert _error({"path": "c.jsonl", "name": "web"}, tmp_path) == "web: c.jsonl:2: expected a JSON object (one per line), got an array"
