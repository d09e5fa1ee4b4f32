"""Activation offloading: the same loss and gradients as without it, the activations moved and the parameters not.

On the CPU the hooks offload host tensors too (``include_host``), so the path a GPU run takes
(a host copy packed, a copy unpacked onto the device) runs here; only the device transfer is
not exercised.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from recipec.runtime.offloading import Offloader, offload_activations  # noqa: E402


def _model(checkpointing: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config)
    if checkpointing:
        model.activation_checkpointing_enable()  # use_reentrant False
    return model.train()


def _step(model):
    batch = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(1))
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_offloaded_activations_give_the_same_loss_and_gradients(checkpointing):
    base = _model(checkpointing)
    model = copy.deepcopy(base)
    offloader = offload_activations(model, pin_memory=False, min_bytes=0, include_host=True)
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weights = []  # per saved tensor: whether it is a parameter's memory, and whether it was packed
    pack = offloader.pack

    def spy(tensor):
        out = pack(tensor)
        weights.append((tensor.untyped_storage().data_ptr() in storages, isinstance(out, tuple)))
        return out

    offloader.pack = spy
    want_loss, want = _step(base)
    loss, got = _step(model)
    assert torch.equal(loss, want_loss)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert offloader.packed > 0 and offloader.packed_bytes > 0
    # the weights (and their transposed views) were saved too, and none of them was packed
    assert any(weight for weight, _ in weights) and not any(weight and packed for weight, packed in weights)


def test_checkpointing_offloads_only_the_layers_inputs_and_evaluation_nothing():
    """With gradient checkpointing the forward saves each checkpointed layer's inputs (the recomputation in the
    backward pass runs outside the hooks): far fewer tensors than without it. In evaluation nothing is saved."""
    counts = {}
    for checkpointing in (False, True):
        model = _model(checkpointing)
        offloader = offload_activations(model, pin_memory=False, min_bytes=0, include_host=True)
        _step(model)
        counts[checkpointing] = offloader.packed
        model.eval()
        before = offloader.packed
        with torch.no_grad():
            model(input_ids=torch.zeros((1, 8), dtype=torch.long))
        assert offloader.packed == before
    assert 0 < counts[True] < counts[False] / 4, counts


def test_host_tensors_small_tensors_and_parameters_stay():
    offloader = Offloader(pin_memory=False, min_bytes=64)
    big, small, weight = torch.ones(32), torch.ones(4), torch.nn.Parameter(torch.ones(32))
    assert offloader.pack(big) is big  # on the host already: a GPU run's copy would go there
    assert offloader.pack(weight) is weight and offloader.pack(small) is small
    assert offloader.kept == 3 and offloader.packed == 0
    host = Offloader(pin_memory=False, min_bytes=64, include_host=True)
    strided = torch.arange(64.0).reshape(8, 8).t()  # a transposed view: unpacked with the same values
    packed = host.pack(strided)
    assert isinstance(packed, tuple) and torch.equal(host.unpack(packed), strided)
    assert host.pack(small) is small and host.pack(weight) is weight and host.pack(weight.t()) is not None
    assert host.packed == 1 and host.kept == 3
