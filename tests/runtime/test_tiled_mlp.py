"""`model.tiled_mlp` (recipec_runtime/tiled_mlp.py): the tiled MLP gives the model's loss and gradients, as
DeepSpeed's TiledMLP does; its forward keeps less for the backward pass; every weight's gradient is accumulated
once (the hooks of DDP, ZeRO and optim.step_in_backward fire once); a mixture of experts is refused."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from recipec.runtime import tiled_mlp  # noqa: E402

SMALL = {"hidden_size": 32, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 64}
CONFIGS = {
    "llama": {**SMALL, "num_key_value_heads": 2},
    "gemma3_text": {**SMALL, "num_key_value_heads": 2, "head_dim": 8, "sliding_window": 8},
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 4, "vocab_size": 64, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    "gpt_neox": {**SMALL, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2},
}


def _model(model_type: str):
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, **CONFIGS[model_type])
    return transformers.AutoModelForCausalLM.from_config(config).train()


def _loss_and_grads(model, x):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=x, labels=x, use_cache=False).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("model_type", list(CONFIGS))
@pytest.mark.parametrize("tiles", [3, 40])  # 40: more tiles than the 23 tokens, some empty
def test_the_tiled_mlp_gives_the_models_loss_and_gradients(model_type: str, tiles: int) -> None:
    plain, tiled = _model(model_type), _model(model_type)
    assert tiled_mlp.apply(tiled, tiles) == 2
    x = torch.randint(0, 64, (2, 23), generator=torch.Generator().manual_seed(1))
    loss, grads = _loss_and_grads(plain, x)
    tiled_loss, tiled_grads = _loss_and_grads(tiled, x)
    assert torch.allclose(tiled_loss, loss, rtol=1e-6, atol=1e-7)
    for name, grad in grads.items():
        assert torch.allclose(tiled_grads[name], grad, rtol=1e-5, atol=1e-7), name


def test_deepspeeds_tiled_mlp_gives_the_same_mlp_output_and_gradients() -> None:
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.sequence_parallel.ulysses_sp import TiledMLP

    model = _model("llama")
    mlp = model.model.layers[0].mlp
    x = torch.randn(2, 23, 32, generator=torch.Generator().manual_seed(2), requires_grad=True)
    params = [mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight]

    def theirs_forward(self, h):
        return self.down_proj(self.act_fn(self.gate_proj(h)) * self.up_proj(h))

    theirs = TiledMLP.apply(theirs_forward, mlp, x, 4, params)
    theirs.pow(2).sum().backward()
    their_grads = [x.grad.clone(), *(p.grad.clone() for p in params)]
    x.grad = None
    for p in params:
        p.grad = None
    tiled_mlp.apply(model, 4)
    ours = mlp(x)
    ours.pow(2).sum().backward()
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    for a, b in zip([x.grad, *(p.grad for p in params)], their_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def _saved_bytes(model, x) -> int:
    total = 0

    def pack(t):
        nonlocal total
        if not isinstance(t, torch.nn.Parameter) and not isinstance(t._base, torch.nn.Parameter):
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=x, labels=x, use_cache=False).loss.backward()
    return total


def test_the_forward_keeps_none_of_the_mlps_inside() -> None:
    """Saved for the backward pass: a SwiGLU MLP keeps gate's and up's outputs, the activation's input and output
    and down_proj's input, five b x s x intermediate tensors a layer (as recipec/memory.py counts them); tiled,
    none (each tile's input is a view of what the layer keeps anyway)."""
    x = torch.randint(0, 64, (2, 23), generator=torch.Generator().manual_seed(1))
    plain, tiled = _model("llama"), _model("llama")
    tiled_mlp.apply(tiled, 4)
    saved_plain, saved_tiled = _saved_bytes(plain, x), _saved_bytes(tiled, x)
    assert saved_plain - saved_tiled >= 2 * 46 * 96 * 4 * 4  # two layers, at least four i-wide float32 tensors each


def test_each_weight_is_accumulated_once_per_backward_pass() -> None:
    model = _model("llama")
    tiled_mlp.apply(model, 5)
    fired: dict[str, int] = {}
    for name, param in model.named_parameters():
        param.register_post_accumulate_grad_hook(lambda p, n=name: fired.__setitem__(n, fired.get(n, 0) + 1))
    x = torch.randint(0, 64, (2, 23))
    model(input_ids=x, labels=x, use_cache=False).loss.backward()
    assert fired and set(fired.values()) == {1}
    assert all(fired[n] == 1 for n, _ in model.named_parameters() if ".mlp." in n)


def test_without_gradients_the_mlp_runs_whole() -> None:
    model = _model("llama")
    tiled_mlp.apply(model, 4)
    calls = []
    down = model.model.layers[0].mlp.down_proj
    down.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    x = torch.randint(0, 64, (2, 23))
    with torch.no_grad():
        model(input_ids=x)
    assert calls == [torch.Size([2, 23, 32])]
    model(input_ids=x)
    assert len(calls) == 1 + 4


def test_applied_twice_replaces_the_tiles() -> None:
    model = _model("llama")
    tiled_mlp.apply(model, 4)
    tiled_mlp.apply(model, 2)
    calls = []
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    model(input_ids=torch.randint(0, 64, (2, 23)))
    assert len(calls) == 2


def test_a_mixture_of_experts_is_refused() -> None:
    config = transformers.AutoConfig.for_model(
        "qwen3_moe", hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, vocab_size=64,
    )  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_config(config)
    with pytest.raises(ValueError, match=r"tiles the dense MLP of each decoder layer, and Qwen3MoeDecoderLayer has Qwen3MoeSparseMoeBlock"):
        tiled_mlp.apply(model, 2)
