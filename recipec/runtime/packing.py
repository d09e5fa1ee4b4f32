"""Whole examples packed into fixed-length sequences that keep them apart, and padded batches.

Packing (``pack``) places examples into bins of ``seq_len`` tokens by best-fit-decreasing:
longest first, each into the fullest bin it still fits ("Fewer Truncations Improve
Language Modeling"). An example is never split. Each packed sequence carries
``position_ids`` that restart at 0 at every example; given ``position_ids`` and no
attention mask, transformers builds a block-diagonal causal mask (sdpa, eager and flex
attention) or takes the variable-length path (flash attention), so no token attends across
an example boundary. The tail of a bin is padding: its own segment, never supervised.

``collate`` turns a list of examples or packed sequences into tensors: ``input_ids``,
``labels`` (-100 where the loss does not look) and ``position_ids``, padded to the longest
row of the batch, not to ``seq_len``; with ``data.pad_to_multiple_of``, to the longest
rounded up to that multiple (``padded_width``), so that the micro-batches take few shapes.

Labels are the inputs themselves (transformers shifts them inside the loss): a token is
supervised where its mask is 1, and never at a position that starts an example, since
nothing before it in the example predicts it.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

IGNORE = -100


def pack(lengths: Sequence[int], seq_len: int) -> list[list[int]]:
    """Best-fit-decreasing bins of example indices, each bin's lengths summing to at most ``seq_len``.

    Bins come out in the order they were opened; examples in a bin in the order they were
    placed (longest first). Ties are broken by the example's index, so the result is
    deterministic.

    Raises:
        ValueError: an example is longer than ``seq_len`` or empty.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    # (free space, bin number) of the bins that still have room, sorted by free space
    free: list[tuple[int, int]] = []
    for i in order:
        n = lengths[i]
        if not 0 < n <= seq_len:
            raise ValueError(f"example {i} has {n} tokens; packing needs 1 to seq_len {seq_len}")
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            space, b = free.pop(at)
        else:
            space, b = seq_len, len(bins)
            bins.append([])
        bins[b].append(i)
        if space - n > 0:
            bisect.insort(free, (space - n, b))
    return bins


def packed_rows(
    examples: Sequence[tuple[Sequence[int], Sequence[int]]], seq_len: int
) -> list[dict[str, list[int]]]:
    """Pack ``(ids, mask)`` examples into rows of ``input_ids``, ``mask`` and ``position_ids``.

    Rows are not padded (``collate`` pads them); a row's length is the sum of its examples'.
    """
    rows = []
    for bin_ in pack([len(ids) for ids, _ in examples], seq_len):
        ids: list[int] = []
        mask: list[int] = []
        positions: list[int] = []
        for i in bin_:
            e_ids, e_mask = examples[i]
            ids += list(e_ids)
            mask += [0] + list(e_mask[1:])
            positions += list(range(len(e_ids)))
        rows.append({"input_ids": ids, "mask": mask, "position_ids": positions})
    return rows


def efficiency(lengths: Sequence[int], rows: int, seq_len: int) -> float:
    """Share of the ``rows x seq_len`` token slots that hold example tokens."""
    return sum(lengths) / (rows * seq_len) if rows else 0.0


def padded_width(longest: int, pad_to_multiple_of: int | None, seq_len: int | None) -> int:
    """The width a micro-batch whose longest row has ``longest`` tokens is padded to (``data.pad_to_multiple_of``).

    ``longest`` rounded up to a multiple of ``pad_to_multiple_of``, but never past the next
    multiple of ``seq_len``: a micro-batch whose rows fit in ``seq_len`` is at most
    ``seq_len`` wide (``pad_to_multiple_of = seq_len`` pads every one to ``seq_len``), and
    one with a longer row (a preference pair's two sides, unpacked examples with
    ``max_length`` above ``seq_len``) at most the next multiple of ``seq_len``. Either way
    the widths are few. ``pad_to_multiple_of`` None: ``longest``.

    Raises:
        ValueError: ``pad_to_multiple_of`` without ``seq_len``.
    """
    if pad_to_multiple_of is None:
        return longest
    if seq_len is None:
        raise ValueError("pad_to_multiple_of needs seq_len, which caps the padding")
    return min(-(-longest // pad_to_multiple_of) * pad_to_multiple_of, -(-longest // seq_len) * seq_len)


def collate(
    rows: Sequence[dict[str, Sequence[int]]],
    pad_id: int,
    pad_to: int | None = None,
    *,
    pad_to_multiple_of: int | None = None,
    seq_len: int | None = None,
) -> dict[str, "torch.Tensor"]:
    """Pad rows to the longest (or to ``pad_to``) and make the training tensors.

    Rows hold ``input_ids`` and ``mask`` (lists or tensors) and, when packed,
    ``position_ids``. A row without ``position_ids`` is one example (positions 0..n-1,
    its first token unsupervised). Padding gets ``pad_id``, label -100 and positions 0, 1,
    ... of its own, so it forms a segment that attends to nothing real.

    ``pad_to_multiple_of`` (with ``seq_len``): pad to the longest rounded up, as
    :func:`padded_width` says.
    """
    import torch

    if not rows:
        raise ValueError("cannot collate an empty batch")
    ids = [torch.as_tensor(r["input_ids"], dtype=torch.long) for r in rows]
    width = padded_width(max(len(t) for t in ids), pad_to_multiple_of, seq_len) if pad_to is None else pad_to
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.arange(width, dtype=torch.long).repeat(len(rows), 1)
    for i, (r, row_ids) in enumerate(zip(rows, ids)):
        n = len(row_ids)
        if n > width:
            raise ValueError(f"a row of {n} tokens does not fit pad_to {width}")
        mask = torch.as_tensor(r["mask"], dtype=torch.bool).clone()
        if "position_ids" in r:
            positions[i, :n] = torch.as_tensor(r["position_ids"], dtype=torch.long)
        else:
            mask[:1] = False
        positions[i, n:] = torch.arange(width - n)
        input_ids[i, :n] = row_ids
        labels[i, :n] = row_ids.masked_fill(~mask, IGNORE)
    return {"input_ids": input_ids, "labels": labels, "position_ids": positions}


def supervised_tokens(labels: "torch.Tensor") -> "torch.Tensor":
    """How many tokens of a batch the loss sees: labels past the first position that are not -100."""
    return (labels[:, 1:] != IGNORE).sum()


def token_count(collate: Any) -> Any:
    """A loader's ``collate_fn`` that gives a micro-batch's supervised tokens (an int) instead of its tensors."""

    def count(rows: Sequence[dict]) -> int:
        return int(supervised_tokens(collate(rows)["labels"]))

    return count


def token_counts(accelerator: Any, loader: Any, epoch: int, skip: int) -> Iterator[int]:
    """The supervised tokens of each micro-batch a prepared loader yields from micro-batch ``skip``
    of ``epoch`` on, epoch after epoch, as the training loop reads the same order from its own loader
    (same dataset, batch size, seed and seedable sampler). Under DeepSpeed the loop reads a step's
    counts before the step's first backward."""
    while True:
        loader.set_epoch(epoch)
        yield from (accelerator.skip_first_batches(loader, skip) if skip else loader)
        epoch, skip = epoch + 1, 0
