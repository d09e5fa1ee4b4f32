"""The data stage's last pass: mix each segment's sources and pack their documents into sequences.

A data segment is a stretch of schedule phases with one mixture (:func:`mixture`); its
documents, in a seeded order, are then written as sequences (:func:`write_sequences`),
and so are the held-out documents.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import TYPE_CHECKING, Any

import numpy as np

from .readers import DataError
from . import formats

if TYPE_CHECKING:  # pragma: no cover
    from .stage_analyse import Corpus


def mixture(corpus: Corpus, spec: dict, index: int, segment: dict, train_docs: np.ndarray) -> tuple[np.ndarray, dict]:
    """The training documents of segment ``index`` in their seeded order (repeats included), and its report entry.

    A source's weight is its share of the segment's training tokens (with EOS), the
    mixture's size the sum of its sources' tokens; a source with fewer tokens than its
    share is repeated (whole documents, in seeded orders), or the mixture shrinks
    (``on_exhausted = "stop"``), or it is an error. Without weights or a temperature
    each document is used once.
    """
    active = list(segment["sources"])
    by_source = {s: train_docs[corpus.source_of[train_docs] == s] for s in active}
    avail = {s: int((corpus.tokens.length[d] + 1).sum()) for s, d in by_source.items()}
    order_rng = np.random.default_rng([spec["seed"], 0x0DE4, index])
    weights = segment["weights"]
    info: dict[str, Any] = {"sources": [corpus.labels[s] for s in active], "available_tokens": {corpus.labels[s]: avail[s] for s in active}}
    if weights is None and spec["temperature"] is None:
        instances = np.concatenate([by_source[s] for s in active])
        info["asked"] = None
        info["repeats"] = {corpus.labels[s]: 1.0 for s in active}
        if len(instances) == 0:
            raise DataError(f"data segment {index} ({', '.join(info['sources'])}) has no training documents left")
        return order_rng.permutation(instances), info
    if weights is None:
        t = float(spec["temperature"])
        raw = np.array([avail[s] ** (1.0 / t) for s in active], dtype=np.float64)
    else:
        raw = np.array(weights, dtype=np.float64)
    w = raw / raw.sum()
    info["asked"] = {corpus.labels[s]: float(x) for s, x in zip(active, w)}
    empty = [corpus.labels[s] for s, x in zip(active, w) if x > 0 and avail[s] == 0]
    if empty:
        raise DataError(f"data segment {index}: {', '.join(empty)} has no training documents left after the filters")
    total = sum(avail.values())
    if spec["on_exhausted"] == "stop":
        total = min(avail[s] / x for s, x in zip(active, w) if x > 0)
    target = {s: x * total for s, x in zip(active, w)}
    short = [s for s in active if target[s] > avail[s] * (1 + 1e-9)]
    if short and spec["on_exhausted"] == "error":
        rows = "\n".join(
            f"  {corpus.labels[s]}: share {w[active.index(s)]:.3f} of {total:.0f} tokens = {target[s]:.0f}, has {avail[s]}"
            for s in short
        )
        raise DataError(
            f"data segment {index}: sources run out before reaching their share (on_exhausted = \"error\"):\n{rows}\n"
            'set data.on_exhausted = "repeat" to repeat them, or "stop" to shrink the mixture'
        )
    picked = []
    info["repeats"] = {}
    for s in active:
        docs = by_source[s]
        lengths = corpus.tokens.length[docs] + 1
        rng = np.random.default_rng([spec["seed"], 0x3A1C, index, s])
        chosen: list[np.ndarray] = []
        got = 0
        while got < target[s] and len(docs):
            perm = rng.permutation(len(docs))
            cum = np.cumsum(lengths[perm])
            need = target[s] - got
            if cum[-1] <= need:
                chosen.append(docs[perm])
                got += int(cum[-1])
            else:
                take = int(np.searchsorted(cum, need, side="left")) + 1
                chosen.append(docs[perm[:take]])
                got += int(cum[take - 1])
        picked.append(np.concatenate(chosen) if chosen else docs[:0])
        info["repeats"][corpus.labels[s]] = round(got / avail[s], 4) if avail[s] else 0.0
    return order_rng.permutation(np.concatenate(picked)), info

def write_sequences(corpus: Corpus, spec: dict, tokenizer: Any, path: pathlib.Path, docs: np.ndarray) -> dict:
    """Pack (or pad) ``docs`` in this order into ``path``; return counts and hashes.

    Each document is followed by EOS. With ``packing`` the stream is cut into full
    ``seq_len`` blocks (the remainder is dropped and counted); without, each document is
    truncated to ``seq_len`` and padded, with an ``attention_mask``.
    """
    import pyarrow as pa

    seq_len = int(spec["seq_len"])
    packing = bool(spec["packing"])
    eos = int(tokenizer.eos_token_id)
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
    fields = [("input_ids", pa.list_(pa.int32()))]
    if not packing:
        fields.append(("attention_mask", pa.list_(pa.int8())))
    schema = pa.schema(fields)
    digest = hashlib.sha256(b"recipec-sequences-v1\0")
    order = hashlib.sha256(b"recipec-document-order-v1\0")
    source_tokens = np.zeros(len(corpus.labels), dtype=np.int64)
    n_seq = 0
    n_tokens = 0
    pending: list[np.ndarray] = []
    pending_len = 0
    eos_arr = np.array([eos], dtype=np.int32)

    def flush(writer, block: np.ndarray, mask: np.ndarray | None) -> None:
        nonlocal n_seq
        if len(block) == 0:
            return
        offsets = pa.array(np.arange(0, block.size + 1, seq_len, dtype=np.int32))
        arrays = [pa.ListArray.from_arrays(offsets, pa.array(block.reshape(-1)))]
        if mask is not None:
            arrays.append(pa.ListArray.from_arrays(offsets, pa.array(mask.reshape(-1))))
        writer.write_batch(pa.record_batch(arrays, schema=schema))
        digest.update(block.astype("<i4").tobytes())
        n_seq += len(block)

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        rows: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        for doc in docs:
            ids = corpus.tokens.get(int(doc))
            if len(ids) == 0:
                continue
            order.update(np.int64(doc).tobytes())
            seq = np.concatenate([ids.astype(np.int32), eos_arr])
            source_tokens[corpus.source_of[doc]] += len(seq)
            if packing:
                pending.append(seq)
                pending_len += len(seq)
                if pending_len >= 65536:
                    stream = np.concatenate(pending)
                    full = len(stream) // seq_len * seq_len
                    flush(writer, stream[:full].reshape(-1, seq_len), None)
                    n_tokens += full
                    pending, pending_len = [stream[full:]], len(stream) - full
            else:
                seq = seq[:seq_len]
                row = np.full(seq_len, pad, dtype=np.int32)
                row[: len(seq)] = seq
                mask = np.zeros(seq_len, dtype=np.int8)
                mask[: len(seq)] = 1
                rows.append(row)
                masks.append(mask)
                n_tokens += len(seq)
                if len(rows) >= 4096:
                    flush(writer, np.stack(rows), np.stack(masks))
                    rows, masks = [], []
        if packing:
            stream = np.concatenate(pending) if pending else np.zeros(0, dtype=np.int32)
            full = len(stream) // seq_len * seq_len
            flush(writer, stream[:full].reshape(-1, seq_len), None)
            n_tokens += full
            remainder = len(stream) - full
        else:
            if rows:
                flush(writer, np.stack(rows), np.stack(masks))
            remainder = 0
    total = int(source_tokens.sum())
    return {
        "documents": int(len(docs)),
        "sequences": n_seq,
        "tokens": n_tokens,
        "dropped_remainder_tokens": int(remainder),
        "source_tokens": {corpus.labels[s]: int(t) for s, t in enumerate(source_tokens) if t},
        "realised": {corpus.labels[s]: round(float(t) / total, 6) for s, t in enumerate(source_tokens) if t} if total else {},
        "sequences_sha256": digest.hexdigest(),
        "document_order_sha256": order.hexdigest(),
    }



def write_examples(corpus: Corpus, spec: dict, path: pathlib.Path, docs: np.ndarray) -> dict:
    """Write the examples ``docs`` (in this order, repeats included) into ``path``; return counts and hashes.

    With ``packing`` the examples are packed whole into rows of at most ``seq_len`` tokens
    by best-fit-decreasing (:mod:`.packing`), ``position_ids`` restarting at each; without,
    one example per row. Rows are not padded: the training script pads each micro-batch
    to its longest row. Columns: ``input_ids``, ``mask`` (1 where the loss sees the token)
    and ``position_ids``; and ``margin`` (float32, one per pair) when a source of preference
    pairs names a margin field (a pair of a source that names none has 0, as TRL's default).
    """
    import pyarrow as pa

    from .packing import efficiency, packed_rows
    from .preference import SUPERVISED, segment_positions

    seq_len = int(spec["seq_len"])
    pairs = formats.preference_kind(spec["sources"]) is not None
    margins = pairs and any("margin" in (s.get("fields") or {}) for s in spec["sources"])
    columns_of = [("input_ids", pa.list_(pa.int32())), ("mask", pa.list_(pa.int8())), ("position_ids", pa.list_(pa.int32()))]
    schema = pa.schema(columns_of + ([("margin", pa.float32())] if margins else []))
    digest = hashlib.sha256(b"recipec-examples-v1\0")
    order = hashlib.sha256(b"recipec-document-order-v1\0")
    source_tokens = np.zeros(len(corpus.labels), dtype=np.int64)
    examples = []
    pair_margins: list[float] = []
    for doc in docs:
        ids = corpus.tokens.get(int(doc))
        if len(ids) == 0:
            continue
        order.update(np.int64(doc).tobytes())
        source_tokens[corpus.source_of[doc]] += len(ids)
        examples.append((ids.astype(np.int32), corpus.masks.get(int(doc)).astype(np.int8)))
        if margins:
            pair_margins.append(corpus.margins.get(int(doc), 0.0))
    if pairs:  # one row per pair (two segments) or KTO example, never packed together
        rows = [{"input_ids": ids, "mask": mask, "position_ids": segment_positions(mask)} for ids, mask in examples]
    elif spec["packing"]:
        rows = packed_rows(examples, seq_len)
    else:
        rows = [
            {"input_ids": ids, "mask": np.concatenate([[0], mask[1:]]).astype(np.int8), "position_ids": np.arange(len(ids))}
            for ids, mask in examples
        ]
    lengths = [len(ids) for ids, _ in examples]
    supervised = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for start in range(0, len(rows), 4096):
            chunk = rows[start : start + 4096]
            columns = []
            for name, dtype in (("input_ids", np.int32), ("mask", np.int8), ("position_ids", np.int32)):
                values = [np.asarray(r[name], dtype=dtype) for r in chunk]
                offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int32)
                flat = np.concatenate(values) if values else np.zeros(0, dtype=dtype)
                columns.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)))
                if name != "position_ids":
                    digest.update(flat.astype("<i4").tobytes())
                if name == "mask":
                    supervised += int((flat & SUPERVISED).sum())  # the tokens the loss sees
            if margins:
                values = np.asarray(pair_margins[start : start + 4096], dtype=np.float32)
                columns.append(pa.array(values))
                digest.update(values.astype("<f4").tobytes())
            writer.write_batch(pa.record_batch(columns, schema=schema))
    total = int(source_tokens.sum())
    return {
        "documents": int(len(docs)),
        "examples": len(examples),
        "sequences": len(rows),
        "tokens": total,
        "supervised_tokens": supervised,
        # share of the token slots of rows padded to seq_len that hold example tokens
        "packing_efficiency": round(efficiency(lengths, len(rows), seq_len), 6) if spec["packing"] and not pairs else None,
        "dropped_remainder_tokens": 0,
        "source_tokens": {corpus.labels[s]: int(t) for s, t in enumerate(source_tokens) if t},
        "realised": {corpus.labels[s]: round(float(t) / total, 6) for s, t in enumerate(source_tokens) if t} if total else {},
        "sequences_sha256": digest.hexdigest(),
        "document_order_sha256": order.hexdigest(),
    }
