"""`data.cross_document_attention = false`: packed text whose documents keep to themselves.

The oracle is the model itself: the logits of a packed row under the collate's position ids
equal, token for token, those of each of its documents run alone (the first one, a document
cut at the row's start, alone too), for the attention implementations that read packed rows
from position ids; and without them, the later documents' logits differ (they see the
earlier ones), so the check can fail.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from recipec.runtime.data import collate, document_positions  # noqa: E402

EOS = 0


def test_positions_restart_after_every_end_of_text_token():
    ids = torch.tensor([[5, 6, EOS, 7, 8, 9, EOS, EOS, 3], [EOS, 4, 4, 4, 4, 4, 4, 4, 4]])
    assert document_positions(ids, EOS).tolist() == [[0, 1, 2, 0, 1, 2, 3, 0, 0], [0, 0, 1, 2, 3, 4, 5, 6, 7]]
    batch = collate([{"input_ids": row} for row in ids.tolist()], document_eos=EOS)
    assert batch["position_ids"].tolist() == document_positions(ids, EOS).tolist()
    assert torch.equal(batch["labels"], ids)  # every token is still predicted, as in the stream
    assert "position_ids" not in collate([{"input_ids": row} for row in ids.tolist()])
    with pytest.raises(ValueError, match="packed sequences"):
        collate([{"input_ids": [1, 2], "attention_mask": [1, 0]}], document_eos=EOS)


@pytest.fixture(scope="module")
def model_factory():
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(attention: str):
        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, attn_implementation=attention,
        )
        return LlamaForCausalLM(config).eval()

    return make


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_packed_row_computes_each_document_as_if_alone(model_factory, attention):
    model = model_factory(attention)
    g = torch.Generator().manual_seed(1)
    docs = [torch.randint(1, 50, (n,), generator=g).tolist() + [EOS] for n in (6, 9, 4, 7)]
    stream = sum(docs, [])
    row = stream[3:27]  # the first document cut at the row's start, the last at its end
    pieces, start = [], 0
    for doc in docs:  # each document's part of the row, as its own sequence
        lo, hi = max(start, 3), min(start + len(doc), 27)
        if lo < hi:
            pieces.append(stream[lo:hi])
        start += len(doc)
    assert len(pieces) == 4 and sum(map(len, pieces)) == len(row)
    batch = collate([{"input_ids": row}, {"input_ids": row[::-1]}], document_eos=EOS)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]  # as train.py calls it
        alone = torch.cat([model(input_ids=torch.tensor([p])).logits[0] for p in pieces])
        plain = model(input_ids=batch["input_ids"][:1]).logits[0]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)
    first = len(pieces[0])
    assert (plain[first:] - alone[first:]).abs().max() > 1e-3  # without the positions the documents see each other
