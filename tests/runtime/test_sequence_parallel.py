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
