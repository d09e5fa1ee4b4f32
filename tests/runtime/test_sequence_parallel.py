"""recipec_runtime.sequence_parallel without DeepSpeed: where a resumed epoch starts in the adapter's
micro-batches, and the position ids Ulysses needs (tests/test_sequence_parallel.py runs the whole path)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from recipec.runtime import data, sequence_parallel

torch = pytest.importorskip("torch")


class Adapter:
    """DeepSpeed's UlyssesSPDataLoaderAdapter in miniature: every loader batch becomes sp_size micro-batches."""

    def __init__(self, loader, sp_size):
        self.loader, self.sp_size = loader, sp_size

    def __iter__(self):
        for batch in self.loader:
            for shard in range(self.sp_size):
                yield (batch, shard)


def _accelerator(sp_size, calls):
    def skip_first_batches(loader, n):
        calls.append(n)
        return list(loader)[n:]

    return SimpleNamespace(
        parallelism_config=SimpleNamespace(sp_size=sp_size),
        skip_first_batches=skip_first_batches,
        deepspeed_ulysses_dl_adapter=lambda loader, model: Adapter(loader, sp_size),
    )


@pytest.mark.parametrize("sp_size", [2, 4])
@pytest.mark.parametrize("skip", range(0, 13))
def test_a_resumed_epoch_starts_at_the_same_micro_batch(sp_size, skip):
    loader = list(range(3))  # three loader batches: 3 x sp_size micro-batches of the group
    everything = list(Adapter(loader, sp_size))
    calls = []
    got = list(sequence_parallel.micro_batches(_accelerator(sp_size, calls), loader, None, skip))
    assert got == everything[skip:]
    assert calls == ([skip // sp_size] if skip >= sp_size else [])  # whole loader batches are skipped unread


def test_every_row_gets_its_positions():
    collate = sequence_parallel.with_position_ids(data.collate)
    batch = collate([{"input_ids": list(range(5, 13))}, {"input_ids": list(range(8))}])
    assert batch["position_ids"].tolist() == [list(range(8))] * 2
    assert batch["labels"].tolist() == batch["input_ids"].tolist()


def _summed_over_ranks(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Two sp groups of 2 over gloo: summed_over against torch.distributed.nn's differentiable all-reduce."""
    import warnings

    import torch
    import torch.distributed as dist
    import torch.distributed.nn.functional as dist_nn

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    group = groups[rank // 2]
    torch.manual_seed(rank)
    x0 = torch.randn(3, 5)
    results = {}
    for name in ("ours", "torch"):
        x = x0.clone().requires_grad_()
        y = x * (rank + 1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if name == "ours":
                total = sequence_parallel.summed_over(y.sum(-1), group)
            else:
                total = dist_nn.all_reduce(y.sum(-1), group=group)
        (total.square().sum()).backward()
        results[name] = (total.detach(), x.grad, [str(w.message) for w in caught if issubclass(w.category, FutureWarning)])
    torch.save(results, f"{out_dir}/{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_the_group_sum_and_its_gradient_are_torchs(tmp_path):
    """The differentiable sum over an sp group: its value and its backward (the upstream gradients summed over the
    group) equal torch.distributed.nn's all-reduce, for each of two groups, without a deprecation warning."""
    import torch
    import torch.multiprocessing as mp

    mp.start_processes(_summed_over_ranks, args=(4, str(tmp_path / "init"), str(tmp_path)), nprocs=4, start_method="spawn")
    for rank in range(4):
        got = torch.load(tmp_path / f"{rank}.pt")
        ours, reference = got["ours"], got["torch"]
        assert torch.equal(ours[0], reference[0]) and torch.equal(ours[1], reference[1]), rank
        assert ours[2] == [], ours[2]
    # the two groups summed different ranks' values
    assert not torch.equal(torch.load(tmp_path / "0.pt")["ours"][0], torch.load(tmp_path / "2.pt")["ours"][0])
