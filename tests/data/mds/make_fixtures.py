"""Write the MDS fixtures in this directory with mosaicml-streaming itself, and what it reads back.

recipec reads MDS shards without mosaicml-streaming (its pins conflict with recipec's
stack), so the fixtures are written by the library's own ``MDSWriter`` and read back by its
own ``MDSReader``: ``expected.json`` beside each dataset holds the samples the library
returns, and tests/runtime/test_mds.py checks that recipec reads exactly those.

Needs the 0.13.0 wheel, unpacked, and the compression packages its modules import:

    pip download --no-deps mosaicml-streaming==0.13.0 -d /tmp/mds
    unzip -q /tmp/mds/mosaicml_streaming-0.13.0-py3-none-any.whl -d /tmp/mds/wheel
    pip install --no-deps --target /tmp/mds/deps zstd brotli python-snappy cramjam
    python tests/data/mds/make_fixtures.py /tmp/mds/wheel /tmp/mds/deps

Only the writer, reader, encodings and compression modules are imported: the package's
``__init__`` files (which import torch, torchvision and the cloud SDKs) are replaced by empty
ones in a scratch copy.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

_BLANK_INITS = (
    "streaming/__init__.py",
    "streaming/base/__init__.py",
    "streaming/base/format/__init__.py",
    "streaming/base/format/base/__init__.py",
    "streaming/base/format/mds/__init__.py",
    "streaming/base/storage/__init__.py",
)


def import_streaming(wheel: str, deps: str, scratch: str):
    """The library's MDSWriter, MDSReader and decompress, from a copy of the wheel with empty package inits."""
    shutil.copytree(os.path.join(wheel, "streaming"), os.path.join(scratch, "streaming"))
    for name in _BLANK_INITS:
        with open(os.path.join(scratch, name), "w"):
            pass
    sys.path[:0] = [scratch, deps]
    from streaming.base.compression import decompress
    from streaming.base.format.mds.reader import MDSReader
    from streaming.base.format.mds.writer import MDSWriter

    return MDSWriter, MDSReader, decompress


def jsonable(value):
    """A sample value as JSON: an ndarray as its dtype and list, bytes as hex."""
    if isinstance(value, np.ndarray):
        return {"ndarray": value.dtype.name, "shape": list(value.shape), "values": value.tolist()}
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_back(directory: str, MDSReader, decompress) -> list[dict]:
    """Every sample of a dataset as the library reads it: each compressed shard decompressed as its Stream does, then MDSReader."""
    with open(os.path.join(directory, "index.json")) as f:
        index = json.load(f)
    samples = []
    with tempfile.TemporaryDirectory() as work:
        for info in index["shards"]:
            for name in filter(None, (info["raw_data"]["basename"], (info.get("zip_data") or {}).get("basename"))):
                if os.path.exists(os.path.join(directory, name)):
                    shutil.copy(os.path.join(directory, name), work)
            raw = os.path.join(work, info["raw_data"]["basename"])
            if not os.path.exists(raw):
                with open(os.path.join(work, info["zip_data"]["basename"]), "rb") as f:
                    data = decompress(info["compression"], f.read())
                with open(raw, "wb") as f:
                    f.write(data)
            reader = MDSReader.from_json(work, None, info)
            reader.validate(allow_unsafe_types=False)
            for i in range(reader.samples):
                samples.append({k: jsonable(v) for k, v in reader.get_item(i).items()})
    return samples


def write(MDSWriter, out: str, columns: dict, samples: list[dict], **kwargs) -> None:
    if os.path.exists(out):
        shutil.rmtree(out)
    with MDSWriter(out=out, columns=columns, **kwargs) as writer:
        for sample in samples:
            writer.write(sample)


def main(wheel: str, deps: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        MDSWriter, MDSReader, decompress = import_streaming(wheel, deps, scratch)
        texts = [
            "The first document.",
            "Zweites Dokument: Grüße, naïve café, 日本語のテキスト.",
            "",
            "line one\nline two\n\ttabbed",
            "   ",
            *(f"document number {i}: " + "words " * (i % 7) for i in range(5, 40)),
        ]
        rng = np.random.default_rng(0)
        datasets = {
            # convert_dataset_hf/json without concat_tokens: {'text': 'str'}; several zstd shards
            "text_zstd": ({"text": "str"}, [{"text": t} for t in texts], {"compression": "zstd", "size_limit": 400}),
            # with concat_tokens: {'tokens': 'ndarray:int32'}, uncompressed, several shards
            "tokens": (
                {"tokens": "ndarray:int32"},
                [{"tokens": rng.integers(0, 250, size=int(n), dtype=np.int32)} for n in rng.integers(1, 40, size=30)],
                {"size_limit": 600},
            ),
            # older converters: {'tokens': 'bytes'} of int64 ids (llm-foundry's token_encoding_type default), gzip
            "tokens_bytes": (
                {"tokens": "bytes"},
                [{"tokens": rng.integers(0, 250, size=int(n), dtype=np.int64).tobytes()} for n in rng.integers(1, 20, size=12)],
                {"compression": "gz:6", "size_limit": 400},
            ),
            # convert_finetuning_dataset: {'prompt': 'str', 'response': 'str'}, in a `train` split, bz2
            "finetuning/train": (
                {"prompt": "str", "response": "str"},
                [{"prompt": f"Question {i}: what is {i} + {i}?", "response": f"It is {2 * i}."} for i in range(9)],
                {"compression": "bz2", "size_limit": 300},
            ),
            # chat-format finetuning data (llm-foundry's StreamingFinetuningDataset reads a sample's
            # `messages`, a list of {role, content}): a json column, in a `train` split
            "chat/train": (
                {"messages": "json"},
                [
                    {
                        "messages": [
                            *([{"role": "system", "content": "Answer briefly."}] if i % 3 == 0 else []),
                            {"role": "user", "content": f"What is {i} + {i}?"},
                            {"role": "assistant", "content": f"It is {2 * i}."},
                            *([{"role": "user", "content": "And doubled?"}, {"role": "assistant", "content": f"{4 * i}."}] if i % 2 else []),
                        ]
                    }
                    for i in range(8)
                ],
                # hashes of every file in index.json, which recipec checks as it reads a shard
                {"compression": "zstd", "size_limit": 500, "hashes": ["sha1", "xxh64"]},
            ),
            # other encodings a text source's fields and records read
            "columns": (
                {"text": "str", "score": "int", "quality": "float32", "rank": "uint16", "meta": "json", "digits": "str_int"},
                [
                    {"text": f"text {i}", "score": i - 3, "quality": i / 4, "rank": 7 * i, "meta": {"i": i, "tags": ["a", str(i)]}, "digits": 10**12 + i}
                    for i in range(6)
                ],
                {},
            ),
            # a pickled column: refused
            "pickled": ({"text": "str", "obj": "pkl"}, [{"text": "x", "obj": {"a": 1}}], {}),
        }
        for name, (columns, samples, kwargs) in datasets.items():
            out = os.path.join(HERE, name)
            write(MDSWriter, out, columns, samples, **kwargs)
            with open(os.path.join(HERE, name, "expected.json"), "w") as f:
                if name == "pickled":
                    json.dump([], f)
                else:
                    json.dump(read_back(out, MDSReader, decompress), f, ensure_ascii=False, indent=0)
                f.write("\n")
            with open(os.path.join(out, "index.json")) as f:
                shards = json.load(f)["shards"]
            print(f"{name}: {len(samples)} samples in {len(shards)} shards")


if __name__ == "__main__":
    main(*sys.argv[1:3])
