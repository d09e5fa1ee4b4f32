"""Built-in corpora, batching and replay for the training script.

The data stage (``stage.py``) turns a recipe's sources into sequences; this module holds
the corpora that ship with Python, the collate function the training loop uses, and
continual pre-training's replay mix. Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import sysconfig
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import datasets
    import torch

BUILTINS = ("python-docs", "python-stdlib")

_EXCLUDED_STDLIB_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})


# --------------------------------------------------------------------------- builtins


def _python_docs() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def _stdlib_files() -> list[tuple[str, pathlib.Path]]:
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _EXCLUDED_STDLIB_DIRS]
        for name in filenames:
            if name.endswith(".py"):
                path = pathlib.Path(dirpath, name)
                found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda item: item[0])
    return found


def builtin_texts(name: str, *, limit: int | None = None) -> list[str]:
    """Return the documents of a built-in corpus.

    * ``"python-docs"``: the prose of Python's documentation, one document per
      ``pydoc_data.topics`` topic, sorted by topic key.
    * ``"python-stdlib"``: the source of Python's standard library, one
      document per ``*.py`` file under ``sysconfig.get_paths()["stdlib"]``
      sorted by relative POSIX path; ``site-packages``, test directories and
      ``__pycache__`` are skipped, and so are files that are not valid UTF-8.

    Both ship with every Python, so they work offline; their content depends
    on the Python version. Empty documents are dropped.

    Args:
        name: One of :data:`BUILTINS`.
        limit: Keep only the first ``limit`` documents (and read no further).

    Returns:
        The documents, in their deterministic order.

    Raises:
        ValueError: On an unknown name.
    """
    if name == "python-docs":
        texts = [t for t in _python_docs() if t]
        return texts if limit is None else texts[:limit]
    if name == "python-stdlib":
        texts = []
        for _, path in _stdlib_files():
            if limit is not None and len(texts) >= limit:
                break
            try:
                text = path.read_bytes().decode("utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if text:
                texts.append(text)
        return texts
    raise ValueError(f"unknown builtin corpus {name!r}; expected one of {', '.join(BUILTINS)}")


CROSSES_PACKED = frozenset(
    {
        "afmoe", "bart", "big_bird", "bigbird_pegasus", "biogpt", "blenderbot", "blenderbot-small", "bloom",
        "camembert", "cpmant", "data2vec-text", "falcon_h1", "falcon_mamba", "gpt_oss", "inkling2_loop_text",
        "inkling2_text", "jamba", "lara_mini", "mamba", "mbart", "megatron-bert", "minimax", "mvp",
        "nemotron_h", "openai-gpt", "opt", "pegasus", "qwen3_5_moe_text", "qwen3_5_text", "qwen3_next",
        "qwen4_exp_text", "recurrent_gemma", "rembert", "roberta", "roberta-prelayernorm", "roformer", "rwkv",
        "trocr", "xglm", "xlm", "xlm-roberta", "xlm-roberta-xl", "xlstm", "zaya",
    }
)
"""Model types whose causal-LM class does not keep the sequences of a packed row apart by their position
ids: fed two sequences in one row, positions restarting at the second, the second's logits differ from its
own run alone (the attention mask built over the whole row, or recurrent layers carrying their state
across). Packed examples, preference pairs (two sides in one row) and `data.cross_document_attention =
false` are refused on them: by the compiler where it reads the model's config (`model.init`, a local
`model.path`), else by the script once the model is loaded. Found by that comparison on every causal-LM type that builds at a tiny size,
with its default attention (sdpa where it has it, else eager) (`tests/runtime/test_document_positions.py`,
which fails when transformers changes the set); the types that do not build so small are not checked."""


def crosses_packed(model_type: str) -> str | None:
    """Why rows holding several sequences kept apart by position ids cannot train a model of this type, or None."""
    if model_type not in CROSSES_PACKED:
        return None
    return (
        f'model type "{model_type}" does not keep the sequences of a packed row apart by their position ids (its '
        "attention or its recurrent state runs over the whole row)"
    )


def collate(batch: list[dict], document_eos: int | None = None) -> dict[str, "torch.Tensor"]:
    """Stack data-stage sequences into a batch.

    Args:
        batch: Sequences with ``input_ids`` and, for unpacked data, ``attention_mask``
            (1 for tokens, 0 for padding), as tensors or lists of equal length.
        document_eos: the end-of-text token id, for packed text whose documents keep to
            themselves (``data.cross_document_attention = false``): the batch gets
            :func:`document_positions`, from which transformers keeps each token's
            attention within its document.

    Returns:
        int64 ``input_ids`` and ``labels`` of shape ``[len(batch), seq_len]`` (labels are
        the inputs, the model shifts them; padding is -100 so it is not learned), and
        ``attention_mask`` when the sequences have one, ``position_ids`` with ``document_eos``.

    Raises:
        ValueError: On an empty batch, or ``document_eos`` with unpacked sequences.
    """
    import torch

    if not batch:
        raise ValueError("cannot collate an empty batch")
    input_ids = torch.stack([torch.as_tensor(example["input_ids"], dtype=torch.long) for example in batch])
    out = {"input_ids": input_ids}
    if "attention_mask" in batch[0]:
        if document_eos is not None:
            raise ValueError("document positions apply to packed sequences; these are padded, one document each")
        mask = torch.stack([torch.as_tensor(example["attention_mask"], dtype=torch.long) for example in batch])
        out["attention_mask"] = mask
        out["labels"] = input_ids.masked_fill(mask == 0, -100)
    else:
        out["labels"] = input_ids.clone()
        if document_eos is not None:
            out["position_ids"] = document_positions(input_ids, document_eos)
    return out


def document_positions(input_ids: "torch.Tensor", eos_id: int) -> "torch.Tensor":
    """Position ids that restart at 0 after every ``eos_id`` (and at each row's start).

    Each document of a packed text row ends with the end-of-text token, so the token after
    one starts the next document. transformers reads a packed row from position ids that
    do not rise by one (``find_packed_sequence_indices``) and keeps each token's attention
    within its run, as Megatron's ``reset_position_ids`` / ``reset_attention_mask`` do from
    the same tokens.
    """
    import torch

    steps = torch.arange(input_ids.shape[-1], device=input_ids.device).expand_as(input_ids)
    starts = torch.zeros_like(input_ids, dtype=torch.bool)
    starts[..., 1:] = input_ids[..., :-1] == eos_id
    last_start = torch.cummax(torch.where(starts, steps, torch.zeros_like(steps)), dim=-1).values
    return steps - last_start


FILLER = "_filler"
"""The key that marks a row :class:`FilledUp` added: the loss does not see it (labels -100; a preference pair
or KTO example is left out of the objective and every statistic by its collate's ``counted`` list)."""


class FilledUp:
    """A held-out set filled up to a multiple of ``multiple`` rows with copies of its first row, marked
    :data:`FILLER` so that :func:`unseen_fillers` hides them from the loss.

    accelerate splits a held-out set over the processes in whole micro-batches and, where the
    last ones do not go round, repeats the set's first rows (``even_batches``: every process
    must run as many forwards, which sharded models gather their weights for). The repeated
    rows would count twice in the mean loss; filled up here, every process gets whole
    micro-batches and the rows that fill them count for nothing, so the mean over any number
    of processes is the mean over the set, as one process computes it.
    """

    def __init__(self, rows, multiple: int) -> None:
        self.rows, self.n = rows, len(rows)
        self.total = -(-self.n // multiple) * multiple if self.n else 0

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i: int) -> dict:
        if i < self.n:
            return self.rows[i]
        return {**self.rows[0], FILLER: True}


def unseen_fillers(collate):
    """``collate`` for a :class:`FilledUp` set: the filler rows' labels are all -100."""

    def collate_filled(rows: list[dict]) -> dict:
        fillers = [bool(row.get(FILLER)) for row in rows]
        batch = collate([{k: v for k, v in row.items() if k != FILLER} for row in rows] if any(fillers) else rows)
        if any(fillers):
            batch["labels"][fillers] = -100
        return batch

    return collate_filled


def loss_tokens(labels: "torch.Tensor") -> "torch.Tensor":
    """How many tokens of a batch a causal LM's loss averages over: the labels past each row's first that are not -100.

    The model shifts the labels by one, so a row's first label is never predicted; the
    evaluation weights each micro-batch's mean loss by this count, which makes the mean
    over several micro-batches (or several held-out sets) the mean over all their tokens.
    """
    return (labels[:, 1:] != -100).sum()


def replay_count(n: int, fraction: float) -> int:
    """The replayed sequences :func:`mix_replay` adds to ``n`` new ones: ``round(n * fraction / (1 - fraction))``.

    Raises:
        ValueError: If ``fraction`` is outside [0, 1).
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"replay fraction must be in [0, 1), got {fraction!r}")
    return round(n * fraction / (1 - fraction))


def mix_replay(main: "datasets.Dataset", replay: "datasets.Dataset", fraction: float, seed: int) -> "datasets.Dataset":
    """Add replayed sequences so that ``fraction`` of the training sequences are replay.

    Continual pre-training replays a little of the old data to limit forgetting. With
    packed sequences every sequence holds ``seq_len`` tokens, so this is also the share
    of tokens. The replayed sequences are a seeded permutation of ``replay`` (cycled if
    more are needed than it has), appended to ``main``; the training loader's shuffle
    spreads them over the batches, so the share is exact per epoch and holds per batch
    in expectation.

    Args:
        main: Tokenized training sequences of the new data.
        replay: Tokenized sequences of the old data, same columns as ``main``.
        fraction: Share of replay in the result, in [0, 1).
        seed: Seed of the permutation.

    Returns:
        ``main`` followed by ``round(len(main) * fraction / (1 - fraction))`` replay rows.

    Raises:
        ValueError: If ``fraction`` is outside [0, 1), or replay is needed but empty.
    """
    import datasets
    import random

    wanted = replay_count(len(main), fraction)
    if wanted == 0:
        return main
    if len(replay) == 0:
        raise ValueError("replay was asked for but the replay data has no sequences")
    order = list(range(len(replay)))
    random.Random(seed).shuffle(order)
    indices = [order[i % len(order)] for i in range(wanted)]
    picked = replay.select(indices, keep_in_memory=True)
    return datasets.concatenate_datasets([main, picked.cast(main.features)]).with_format(main.format["type"])


def dataset_fingerprint(ds: "datasets.Dataset") -> str:
    """Hash the ``input_ids`` of every row, in order.

    The hash covers each row's length and token ids, so it changes when the
    tokens, the row boundaries or the row order change. It reads Arrow data in
    batches (cheap for ~1e7 tokens) and ignores the dataset's output format.

    Args:
        ds: A dataset with an ``input_ids`` column (e.g. from :func:`tokenize_and_pack`).

    Returns:
        A sha256 hex digest.
    """
    import numpy as np
    import pyarrow as pa

    digest = hashlib.sha256(b"recipec-input_ids-v1\0")
    for table in ds.with_format("arrow").iter(batch_size=4096):
        column = table.column("input_ids")
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        lengths = np.asarray(array.value_lengths().to_numpy(zero_copy_only=False), dtype="<i8")
        values = np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype="<i8")
        digest.update(lengths.tobytes())
        digest.update(values.tobytes())
    return digest.hexdigest()
