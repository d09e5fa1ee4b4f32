"""DeepSpeed's Ulysses sequence parallelism (`launch.parallelism.sp_size`) in the training loop.

With sp_size > 1 accelerate hands the model to DeepSpeed with Ulysses' attention
(``UlyssesSPAttentionHF``): the sp_size ranks of a group each hold seq_len / sp_size tokens
of the same sequences, and every attention layer exchanges tokens for heads (all-to-all) so
that each rank attends over the whole sequence for 1 / sp_size of the heads, then exchanges
back. The other layers are per token and run on each rank's slice alone.

DeepSpeed's ``UlyssesSPDataLoaderAdapter`` feeds it. Each rank's loader still yields its own
micro-batches (the loaders are split over all processes, as for data parallelism); the
adapter takes one from every rank of the group and serves them in turn, each cut along the
sequence, so one loader batch becomes sp_size micro-batches of the group and an epoch is
sp_size times as many micro-batches. The labels are shifted while the sequence is whole
(``shift_labels``: the last token of one rank's slice predicts the first of the next) and
every batch carries ``position_ids``, which order the tokens after the exchange.

The loss of a micro-batch is the mean over the group's whole sequences: every rank sums the
cross-entropy over its slice, and the sums and token counts are summed across the group
(differentiably, so each rank's backward reaches its own slice's tokens). Preference pairs
likewise: each side of a pair is a row of its own, and the per-row sums of log-probabilities
are summed across the group before the objective reads them (``preference.side_sums``).

A model in evaluation mode skips the exchange (accelerate's default ``sp_disable_in_eval``:
evaluation runs every rank on whole sequences), so a frozen reference model that scores the
training loop's slices runs inside :func:`exchange_in_eval`.

torch is imported by the functions that need it, like the other runtime modules.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

IGNORE = -100


def with_position_ids(collate: Any) -> Any:
    """`collate` plus each row's ``position_ids`` (0 to seq_len - 1): Ulysses orders the gathered tokens by them."""

    def collate_with_positions(rows: list[dict]) -> dict[str, Any]:
        import torch

        batch = collate(rows)
        ids = batch["input_ids"]
        batch["position_ids"] = torch.arange(ids.shape[1], dtype=torch.long).expand_as(ids).clone()
        return batch

    return collate_with_positions


def micro_batches(accelerator: Any, loader: Any, model: Any, skip: int) -> Iterable[dict]:
    """One epoch of the group's micro-batches from a prepared loader, past the first `skip` of them.

    The adapter serves sp_size micro-batches per loader batch, so whole loader batches are
    skipped before it (without reading them) and the remainder after it. Call the loader's
    ``set_epoch`` first: the adapter starts iterating the loader when it is made.
    """
    import itertools

    sp_size = accelerator.parallelism_config.sp_size
    whole, part = divmod(skip, sp_size)
    base = accelerator.skip_first_batches(loader, whole) if whole else loader
    adapted = accelerator.deepspeed_ulysses_dl_adapter(base, model)
    return itertools.islice(adapted, part, None)


def group() -> Any:
    """This rank's sequence-parallel process group (DeepSpeed's)."""
    from deepspeed.utils import groups

    return groups._get_sequence_parallel_group()


def token_counts(accelerator: Any, loader: Any, epoch: int, skip: int) -> Iterable[int]:
    """The supervised tokens of each of the group's micro-batches from micro-batch ``skip`` of ``epoch`` on,
    in the order DeepSpeed's adapter serves them, epoch after epoch.

    ``loader`` is a prepared loader over the training set whose ``collate_fn`` gives a micro-batch's
    count (``packing.token_count``), in the training loader's order. The adapter serves each round
    of loader batches as the sp group's ranks' batches in rank order, so each rank's counts are
    gathered over the group, round by round: every rank of a group reads the same sequence. Call
    it on every rank of the group in step (the gather is a collective).
    """
    import torch
    import torch.distributed as dist

    sp_size = accelerator.parallelism_config.sp_size
    sp_group = group()
    whole, part = divmod(skip, sp_size)
    while True:
        loader.set_epoch(epoch)
        for count in accelerator.skip_first_batches(loader, whole) if whole else loader:
            gathered = [torch.zeros(1, dtype=torch.long, device=accelerator.device) for _ in range(sp_size)]
            dist.all_gather(gathered, torch.tensor([int(count)], dtype=torch.long, device=accelerator.device), group=sp_group)
            yield from (int(c) for c in gathered[part:])
            part = 0
        epoch, whole = epoch + 1, 0


def summed_over(tensor: Any, sp_group: Any) -> Any:
    """``tensor`` summed over the group, differentiably: the backward sums the upstream gradients over the group too.

    torch's functional all-reduce where it has a backward (torch 2.13 deprecates the differentiable
    all-reduce of torch.distributed.nn, with a warning at every call); that one on earlier releases.
    """
    import torch.distributed._functional_collectives as functional

    if hasattr(functional, "all_reduce_backward"):
        return functional.wait_tensor(functional.all_reduce(tensor, "sum", sp_group))
    import torch.distributed.nn.functional as dist_nn

    return dist_nn.all_reduce(tensor, group=sp_group)


def causal_lm_loss(model: Any, batch: dict[str, Any], *, as_sum: bool = False, summed_loss: Any = None) -> tuple[Any, Any]:
    """The mean cross-entropy over the supervised tokens of the group's whole sequences, and the model's outputs.

    ``batch`` is one slice from the adapter: ``input_ids``, ``position_ids`` and the
    pre-shifted ``shift_labels`` of this rank's part of the sequence. ``as_sum``: the
    cross-entropy summed over the group's supervised tokens and their count instead, as
    ``((total, tokens), outputs)``, for examples, whose step mean is over the whole step's tokens.
    ``summed_loss(model, batch) -> (summed, outputs)``: how this rank's slice's cross-entropy is
    summed (loss.cross_entropy "chunked"); None: from the model's full logits.
    """
    import torch

    labels = batch["shift_labels"]
    inputs = {k: v for k, v in batch.items() if k not in ("shift_labels", "labels")}
    if summed_loss is None:
        outputs = model(**inputs, use_cache=False)
        logits = outputs.logits.float()
        summed = torch.nn.functional.cross_entropy(
            logits.view(-1, logits.size(-1)), labels.reshape(-1).to(logits.device), ignore_index=IGNORE, reduction="sum"
        )
    else:
        summed, outputs = summed_loss(model, batch)
    count = (labels != IGNORE).sum().to(summed.device)
    sp_group = group()
    # the group's sum, differentiably: the backward sums the upstream gradients over the group too, as an
    # all-gather's would (torch's differentiable all-gather scatters by global rank on gloo, which breaks
    # for every sp group but the one holding rank 0)
    total = summed_over(summed, sp_group)
    tokens = count.clone()
    torch.distributed.all_reduce(tokens, group=sp_group)
    if as_sum:
        return (total, tokens), outputs
    return total / tokens.clamp(min=1), outputs


@contextlib.contextmanager
def exchange_in_eval(on: bool = True) -> Iterator[None]:
    """Ulysses' exchange also for models in evaluation mode, inside the block (``on``; else nothing changes).

    DeepSpeed registers one Ulysses attention for the run in transformers' attention functions,
    which skips the exchange for a module in evaluation mode when ``disable_in_eval`` is set. A
    frozen reference model (evaluation mode: no dropout) that scores this rank's slice of the
    group's rows needs the exchange, as the policy has it in training mode.
    """
    if not on:
        yield
        return
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    found = []
    for name in ALL_ATTENTION_FUNCTIONS:
        for cell in getattr(ALL_ATTENTION_FUNCTIONS[name], "__closure__", None) or ():
            if isinstance(cell.cell_contents, UlyssesSPAttentionHF) and cell.cell_contents not in found:
                found.append(cell.cell_contents)
    if not found:
        raise RuntimeError("no Ulysses attention is registered with transformers: is sequence parallelism (sp_size > 1) on?")
    before = [u.disable_in_eval for u in found]
    for u in found:
        u.disable_in_eval = False
    try:
        yield
    finally:
        for u, value in zip(found, before):
            u.disable_in_eval = value
