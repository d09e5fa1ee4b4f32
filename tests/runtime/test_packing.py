"""Packing that keeps examples apart: best-fit-decreasing bins, positions that restart, and the
loss of every packed example equal to its loss alone (sdpa and eager attention)."""

import itertools
import random

import pytest
import torch

from recipec.runtime.packing import IGNORE, collate, efficiency, pack, packed_rows, padded_width


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


@pytest.mark.parametrize(
    ("longest", "multiple", "seq_len", "width"),
    [
        (37, None, 64, 37),  # unset: the longest row
        (37, 8, 64, 40),
        (40, 8, 64, 40),  # a multiple already
        (37, 64, 64, 64),  # multiple = seq_len: every micro-batch seq_len wide
        (1, 64, 64, 64),
        (45, 32, 48, 48),  # 64 would be past seq_len
        (70, 32, 48, 96),  # a row past seq_len (a pair): rounded up, never past the next multiple of seq_len
        (70, 48, 48, 96),
        (97, 64, 48, 128),
        (5, 1, 64, 5),
    ],
)
def test_padded_width_rounds_up_and_stops_at_seq_len(longest, multiple, seq_len, width):
    assert padded_width(longest, multiple, seq_len) == width


def test_padded_width_needs_seq_len():
    with pytest.raises(ValueError, match="needs seq_len"):
        padded_width(5, 8, None)


def _uneven_rows(n: int = 40, seed: int = 2) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randint(1, 60)
        rows.append({"input_ids": [rng.randint(3, 49) for _ in range(k)], "mask": [rng.randint(0, 1) for _ in range(k)]})
    return rows


@pytest.mark.parametrize("multiple", [8, 16, 64])
def test_collate_pads_to_a_multiple_as_transformers_collator_does(multiple):
    """Each micro-batch as wide as DataCollatorForSeq2Seq(pad_to_multiple_of=N) pads the same rows (seq_len above
    any rounding); the padding is pad ids, label -100 and a segment of its own; the rows' tokens and labels are the
    unpadded batch's."""
    from transformers import DataCollatorForSeq2Seq

    from .chat_fixtures import chat_tokenizer

    tok = chat_tokenizer()
    tok.pad_token = tok.eos_token = "<|im_end|>"
    oracle = DataCollatorForSeq2Seq(tok, pad_to_multiple_of=multiple, return_tensors="pt")
    rows = _uneven_rows()
    widths = set()
    for at in range(0, len(rows), 4):
        micro = rows[at : at + 4]
        plain = collate(micro, pad_id=tok.pad_token_id)
        batch = collate(micro, pad_id=tok.pad_token_id, pad_to_multiple_of=multiple, seq_len=128)
        expected = oracle([{"input_ids": r["input_ids"], "labels": r["input_ids"]} for r in micro])
        assert batch["input_ids"].shape == expected["input_ids"].shape
        width, n = batch["input_ids"].shape[1], plain["input_ids"].shape[1]
        assert width % multiple == 0 and n <= width < n + multiple
        widths.add(width)
        assert torch.equal(batch["input_ids"][:, :n], plain["input_ids"]) and torch.equal(batch["labels"][:, :n], plain["labels"])
        assert (batch["input_ids"][:, n:] == tok.pad_token_id).all() and (batch["labels"][:, n:] == IGNORE).all()
        for i, r in enumerate(micro):  # padding restarts its positions at 0: attends to nothing real
            k = len(r["input_ids"])
            assert batch["position_ids"][i, k:].tolist() == list(range(width - k))
    assert len(widths) <= -(-60 // multiple)


def test_collate_pads_to_a_multiple_never_past_seq_len():
    rows = _uneven_rows()
    for seq_len in (60, 64):
        widths = {collate(rows[at : at + 4], 0, pad_to_multiple_of=seq_len, seq_len=seq_len)["input_ids"].shape[1] for at in range(0, 40, 4)}
        assert widths == {seq_len}  # pad_to_multiple_of = seq_len: axolotl's pad_to_sequence_len
    batch = collate([{"input_ids": list(range(3, 53)), "mask": [1] * 50}], 0, pad_to_multiple_of=32, seq_len=60)
    assert batch["input_ids"].shape == (1, 60)  # 64 would be past seq_len


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


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("packed", [False, True], ids=["examples", "packed"])
def test_padding_to_a_multiple_changes_no_token_loss(attention, packed):
    """The same per-token losses padded to the longest row and to a multiple of 16 (and to seq_len): padding comes
    after every row's tokens, unsupervised."""
    model = _tiny_llama(attention)
    rows = _uneven_rows(8, seed=5)
    seq_len = 64
    if packed:  # rows of two examples each, shorter than seq_len (the last bins of a packing are)
        pairs = [[(r["input_ids"][:20], r["mask"][:20]) for r in rows[i : i + 2]] for i in range(0, 8, 2)]
        rows = [row for pair in pairs for row in packed_rows(pair, seq_len)]
        assert len(rows) == 4 and all(len(r["input_ids"]) <= 40 for r in rows)
    plain = _token_losses(model, collate(rows, pad_id=0))
    n = plain.shape[1]
    for multiple in (16, seq_len):
        batch = collate(rows, pad_id=0, pad_to_multiple_of=multiple, seq_len=seq_len)
        assert batch["input_ids"].shape[1] > n + 1
        padded = _token_losses(model, batch)
        assert torch.allclose(padded[:, :n], plain, atol=1e-5, rtol=0)
        assert (padded[:, n:] == 0).all()
