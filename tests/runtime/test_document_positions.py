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


def test_the_model_types_that_cross_packed_rows_are_those_transformers_builds_so():
    """Every causal-LM type that builds at a tiny size, with its default attention: two sequences in one row,
    positions restarting at the second, give the second's own logits, or the type is in CROSSES_PACKED (which
    the compiler and the script refuse packed rows on). Fails when transformers changes the set."""
    import warnings

    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from recipec.model_types import CROSSES_PACKED, model_types

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    vocab = 97
    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randint(1, vocab, (7,), generator=g), torch.randint(1, vocab, (9,), generator=g)
    row, positions = torch.cat([a, b])[None], torch.cat([torch.arange(7), torch.arange(9)])[None]
    kept, crossed, failed = set(), set(), {}
    types = sorted(t for t, entry in model_types().items() if t in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not entry["sub_configs"])
    for model_type in types:
        try:  # many configs do not take these sizes: not this test's concern
            torch.manual_seed(0)
            config = transformers.AutoConfig.for_model(model_type, vocab_size=vocab, max_position_embeddings=64, **sizes)
            model = transformers.AutoModelForCausalLM.from_config(config).eval()
            with torch.no_grad():
                model(input_ids=a[None], use_cache=False)
        except Exception:  # noqa: BLE001
            continue
        try:
            with torch.no_grad():
                packed = model(input_ids=row, position_ids=positions, use_cache=False).logits[0].float()
                alone = torch.cat([model(input_ids=x[None], use_cache=False).logits[0] for x in (a, b)]).float()
        except Exception as e:  # noqa: BLE001  (a crash is not silent: the run stops)
            failed[model_type] = repr(e)[:100]
            continue
        (kept if torch.allclose(packed, alone, atol=1e-4, rtol=1e-4) else crossed).add(model_type)
    print(f"{len(kept)} model types keep packed rows apart; {len(crossed)} cross them; {len(failed)} fail: {failed}")
    assert crossed == CROSSES_PACKED & (kept | crossed | set(failed)), (crossed ^ CROSSES_PACKED) & (kept | crossed)
    assert len(kept) >= 80 and {"llama", "qwen3", "gemma3_text", "gpt2", "mixtral", "olmo2", "mistral"} <= kept
    assert {"mamba", "jamba", "bloom", "opt", "qwen3_next"} <= crossed
