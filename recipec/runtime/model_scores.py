"""Documents scored by pretrained causal language models, for the data stage's model filters.

A document's score under a model is the mean negative log-likelihood per predicted token
(nats) of its first ``max_tokens`` tokens, as the model's own tokenizer cuts them with the
special tokens it adds: what transformers' causal-LM loss (``labels = input_ids``) gives for
that document alone, in float32 whatever the weights' dtype. Documents are batched by
length (longest first, padded on the right, where padding changes nothing before it),
``batch_size`` at a time, on the first GPU when there is one: the data stage runs on the
machine of the training run's main process. Each model is loaded in turn and freed before
the next, so a filter of two models holds one at a time.

A model's identity for the stage's cache key (:func:`model_identity`) is a hub id's commit
in the local cache or a local directory's file digests: another checkpoint at the same path
scores again.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .file_hashes import directory_sha256
from .hub import _LOCAL, cached_revision
from .readers import DataError
from .stage_request import local_path
from .tokenizer import fingerprint as tokenizer_fingerprint

CHUNK = 4096
"""Documents tokenized and sorted by length at a time: bounds the ids held in memory."""


def model_identity(path: str, revision: str | None, project_dir: str) -> dict[str, Any]:
    """What decides a scoring model's output: ``{"path", "commit"}`` of a hub id at its revision in the local
    cache (``"commit": None`` when it is not cached), ``{"path", "files"}`` of a local directory.

    Raises:
        DataError: a local directory that cannot be read.
    """
    if not path.startswith(_LOCAL):
        return {"path": path, "revision": revision or "main", "commit": cached_revision(path, revision or "main", "models")}
    directory = pathlib.Path(local_path(path, project_dir))
    try:
        return {"path": path, "files": directory_sha256(directory)}
    except OSError as e:
        raise DataError(f"cannot read the scoring model {path} ({directory}): {e.strerror or e}") from None


def device() -> str:
    """Where the models run: the first GPU when there is one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load(path: str, revision: str | None, dtype: str, project_dir: str, where: str, label: str) -> tuple[Any, Any]:
    """The model (in eval mode, on ``where``) and tokenizer of ``path`` at ``revision``.

    Raises:
        DataError: naming the filter's label and the path when either does not load.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = local_path(path, project_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype=getattr(torch, dtype))
    except Exception as e:  # noqa: BLE001 -- anything from_pretrained raises: name the filter and the model
        raise DataError(f"{label}: cannot load the scoring model {path} ({type(e).__name__}: {e})") from None
    return model.to(where).eval(), tokenizer


def mean_nll(model: Any, tokenizer: Any, texts: list[str], max_tokens: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each text's mean negative log-likelihood per predicted token under ``model`` (NaN under 2 tokens), and its tokens.

    Returns:
        ``(nll, tokens)``: float64 and int64 arrays, one value per text.
    """
    import torch
    import torch.nn.functional as F

    ids = tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    nll = np.full(len(texts), np.nan)
    order = np.argsort(-lengths, kind="stable")
    order = order[lengths[order] >= 2]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    where = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = int(lengths[rows[0]])
        batch = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows.tolist()):
            batch[r, : lengths[i]] = torch.tensor(ids[i])
            mask[r, : lengths[i]] = 1
        batch, mask = batch.to(where), mask.to(where)
        with torch.inference_mode():
            logits = model(input_ids=batch, attention_mask=mask).logits[:, :-1].float()
            per_token = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
            predicted = mask[:, 1:].float()
            nll[rows] = ((per_token * predicted).sum(1) / predicted.sum(1)).double().cpu().numpy()
    return nll, lengths


def check_positions(model: Any, max_tokens: int, label: str, path: str) -> None:
    """A model that cannot take ``max_tokens`` positions is an error, not a silent truncation."""
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit is not None and max_tokens > int(limit):
        raise DataError(f"{label}: max_tokens {max_tokens} is more than the {limit} positions of the scoring model {path}")


def score(
    f: Any,
    label: str,
    texts: Callable[[], Iterator[tuple[np.ndarray, list[str]]]],
    n: int,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Score ``n`` documents with each model of the filter ``f`` (a :class:`.filters.model.ModelFilter`).

    Args:
        f: the filter; its ``project_dir`` is set (:func:`.stage_filter.prepare`).
        label: the filter's place in the chain, for messages.
        texts: yields the documents' texts in order, in batches (called once per model).
        n: the number of documents ``texts`` yields.
        log: progress messages.

    Returns:
        ``({model key: mean nll}, info)``, the info for the stage's report: the device, the dtype, each model's
        seconds and tokens scored.
    """
    import torch

    s = f.settings
    where = device()
    nll: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {"device": where, "dtype": s["dtype"], "models": {}}
    vocabulary = None
    for key, path, revision in f.models():
        t0 = time.perf_counter()
        model, tokenizer = load(path, revision, s["dtype"], f.project_dir, where, label)
        check_positions(model, int(s["max_tokens"]), label, path)
        if vocabulary is None:
            vocabulary = (path, tokenizer_fingerprint(tokenizer))
        elif tokenizer_fingerprint(tokenizer) != vocabulary[1]:  # losses per token of two tokenizers do not compare
            raise DataError(f"{label}: the scoring models {vocabulary[0]} and {path} have different tokenizers; their losses per token do not compare")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        values = np.full(n, np.nan)
        tokens = 0
        at = 0
        for _, batch in texts():
            for c in range(0, len(batch), CHUNK):
                chunk = batch[c : c + CHUNK]
                values[at : at + len(chunk)], lengths = mean_nll(model, tokenizer, chunk, int(s["max_tokens"]), int(s["batch_size"]))
                tokens += int(lengths.sum())
                at += len(chunk)
        nll[key] = values
        seconds = time.perf_counter() - t0
        info["models"][key] = {"path": path, "tokens": tokens, "seconds": round(seconds, 3)}
        if log is not None:
            log(f"data: {label} ({f.type}): scored {n} documents ({tokens} tokens) with {path} on {where} in {seconds:.1f} s")
        del model
        if where == "cuda":
            torch.cuda.empty_cache()
    return nll, info
