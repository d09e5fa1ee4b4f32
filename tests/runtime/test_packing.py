"""Packing that keeps examples apart: best-fit-decreasing bins, positions that restart, and the
loss of every packed example equal to its loss alone (sdpa and eager attention)."""

import itertools
import random

import pytest
import torch

from recipec.runtime.packing import IGNORE, collate, efficiency, pack, packed_rows


def test_best_fit_decreasing_bins():
    lengths = [7, 5, 4, 3, 3, 2, 1]
    bins = pack(lengths, 8)
    assert bins == [[0, 6], [1, 3], [2, 4], [5]]  # 7+1, 5+3, 4+3 (best fit), 2 left over
    assert all(sum(lengths[i] for i in b) <= 8 for b in bins)
    assert sorted(itertools.chain(*bins)) == list(range(len(lengths)))


def test_best_fit_matches_a_brute_force_reference():
    rng = random.Random(0)
    for _ in range(200):
        seq_len = rng.randint(4, 40)
        lengths = [rng.randint(1, seq_len) for _ in range(rng.randint(1, 30))]
        # reference: longest first, into the bin with the least room that still fits (first such bin on ties)
        bins, room = [], []
        for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
            fits = [b for b in range(len(bins)) if room[b] >= lengths[i]]
            if fits:
                b = min(fits, key=lambda b: (room[b], b))
            else:
                b = len(bins)
                bins.append([])
                room.append(seq_len)
            bins[b].append(i)
            room[b] -= lengths[i]
        assert pack(lengths, seq_len) == bins


def test_pack_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="example 1 has 9 tokens"):
        pack([3, 9], 8)
    with pytest.raises(ValueError, match="example 0 has 0 tokens"):
        pack([0], 8)


def test_rows_restart_positions_and_never_supervise_an_example_start():
    examples = [([1, 2, 3], [0, 1, 1]), ([4, 5], [1, 1]), ([6, 7, 8, 9], [0, 0, 1, 1])]
    rows = packed_rows(examples, 6)
    assert rows == [
        {"input_ids": [6, 7, 8, 9, 4, 5], "mask": [0, 0, 1, 1, 0, 1], "position_ids": [0, 1, 2, 3, 0, 1]},
        {"input_ids": [1, 2, 3], "mask": [0, 1, 1], "position_ids": [0, 1, 2]},
    ]
    assert efficiency([3, 2, 4], len(rows), 6) == 9 / 12


def test_collate_pads_to_the_longest_row():
    rows = [{"input_ids": [5, 6, 7], "mask": [0, 1, 1]}, {"input_ids": [8, 9], "mask": [1, 1]}]
    batch = collate(rows, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, 9, IGNORE]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 1, 0]]
    assert collate(rows, pad_id=0, pad_to=5)["input_ids"].shape == (2, 5)


def _tiny_llama(attention: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attn_implementation=attention,
    )
    return LlamaForCausalLM(config).eval()


def _token_losses(model, batch):
    """Per-token CE of next-token prediction, aligned with labels[:, 1:] (0 where ignored)."""
    with torch.no_grad():
        # no KV cache: with one, transformers does not read packed examples from position_ids
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits.float()
    labels = batch["labels"][:, 1:]
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction="none"
    )
    return ce.view(labels.shape)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_loss_of_every_example_equals_its_loss_alone(attention):
    model = _tiny_llama(attention)
    rng = random.Random(1)
    examples = []
    for _ in range(12):
        n = rng.randint(2, 20)
        ids = [rng.randint(2, 49) for _ in range(n)]
        cut = rng.randint(1, n - 1)
        examples.append((ids, [0] * cut + [1] * (n - cut)))
    seq_len = 32
    rows = packed_rows(examples, seq_len)
    assert len(rows) < len(examples)  # something was packed together
    packed = _token_losses(model, collate(rows, pad_id=0, pad_to=seq_len))

    order = list(itertools.chain(*pack([len(ids) for ids, _ in examples], seq_len)))
    offsets = {}
    for r, bin_ in enumerate(pack([len(ids) for ids, _ in examples], seq_len)):
        at = 0
        for i in bin_:
            offsets[i] = (r, at)
            at += len(examples[i][0])
    assert sorted(order) == list(range(len(examples)))
    for i, (ids, mask) in enumerate(examples):
        alone = _token_losses(model, collate([{"input_ids": ids, "mask": mask}], pad_id=0))[0]
        r, at = offsets[i]
        # label positions at+1 .. at+n-1 of row r hold this example's predictions
        mine = packed[r, at : at + len(ids) - 1]
        assert torch.allclose(mine, alone, atol=1e-5, rtol=0), (attention, i)
        assert alone.sum() > 0
