"""NEFTune: transformers' own hook on the input embeddings, noise in training only, as the Trainer registers it."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")

from recipec.runtime import neftune  # noqa: E402


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config)


def test_noise_in_training_only_and_bounded_by_alpha_over_sqrt_length_times_width():
    model = _model().train()
    ids = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(1))
    plain = model.get_input_embeddings()(ids).detach()
    neftune.activate(model, 5.0)
    noisy = model.get_input_embeddings()(ids).detach()
    bound = 5.0 / math.sqrt(24 * 32)
    assert 0.5 * bound < (noisy - plain).abs().max().item() <= bound
    model.eval()
    assert torch.equal(model.get_input_embeddings()(ids), plain)


def test_a_step_equals_the_trainers_neftune():
    """The loss and gradients of a training forward with recipec's hook equal those with transformers' activate_neftune
    (what the Trainer calls for neftune_noise_alpha), the noise drawn from the same generator state."""
    from transformers.integrations.neftune import activate_neftune

    ours, theirs = _model().train(), _model().train()
    neftune.activate(ours, 7.0)
    activate_neftune(theirs, 7.0)
    ids = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(2))
    results = []
    for model in (ours, theirs):
        torch.manual_seed(3)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))
    torch.manual_seed(3)
    plain = copy.deepcopy(_model().train())(input_ids=ids, labels=ids).loss
    assert not torch.equal(plain.detach(), results[0][0])  # the noise took part
