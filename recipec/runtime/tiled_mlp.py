"""Tiled MLP (Arctic Long Sequence Training's TiledMLP; axolotl's `tiled_mlp`): each decoder
layer's MLP runs over the sequence a tile at a time, and keeps nothing of its inside for the
backward pass.

An MLP treats every token alone, so its output over the whole sequence is the concatenation of
its outputs over the tiles. Each tile runs under torch's non-reentrant activation checkpoint
(``torch.utils.checkpoint``): the forward pass keeps only the tile's input (a view of the
layer's normalised hidden state, which the MLP's first linears keep anyway), and the backward
pass recomputes one tile's gate, up, activation and product at a time. The tiles cut the
micro-batch's tokens laid in a row (batch x seq, a view of the contiguous hidden state), so each
is contiguous. The MLP's activations, b x s x intermediate_size several times per layer, shrink
to one tile's, alive only during that tile's backward; the price is a second forward of the MLP.

DeepSpeed's ``TiledMLP`` does the same with a backward pass per tile, which adds each tile's
weight gradient to ``.grad`` separately (DDP and FSDP would reduce it once per tile). Here the
tiles are branches of the one autograd graph: the engine sums their gradients before it
accumulates a weight's once, so every gradient hook (DDP's all-reduce, ZeRO's, FSDP's,
``optim.step_in_backward``'s) fires once.

The number of tiles is fixed for the run (``model.tiled_mlp_shards``, or ceil(seq_len /
hidden_size) as DeepSpeed's default): ``Tensor.tensor_split`` makes that many tiles of any
number of tokens (some empty when there are fewer), so under ZeRO-3, which gathers a
linear's weights on each call, every process calls the MLP as often. Without gradients
(evaluation, generation) the MLP runs whole.
"""

from __future__ import annotations

import functools
from typing import Any


def _tiled_forward(forward: Any, tiles: int, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
    import torch
    from torch.utils.checkpoint import checkpoint

    if not torch.is_grad_enabled() or tiles <= 1:
        return forward(hidden_states, *args, **kwargs)
    # the tokens of the whole batch in a row (a view of the contiguous hidden state), cut into contiguous tiles:
    # some linears (gpt2's Conv1D) view their input flat
    shape = hidden_states.shape
    parts = hidden_states.reshape(-1, shape[-1]).tensor_split(tiles, dim=0)
    out = torch.cat([checkpoint(forward, part, *args, use_reentrant=False, **kwargs) for part in parts], dim=0)
    return out.reshape(*shape[:-1], out.shape[-1])


def dense_mlps(model: Any) -> list[Any]:
    """The MLP module of each decoder layer (``layer.mlp``, the layers being the modules whose class is one
    of the model's ``_no_split_modules``).

    Raises:
        ValueError: a decoder layer without a dense MLP (a mixture of experts' sparse block routes
            tokens and returns its router's logits; a model with no ``mlp`` per layer).
    """
    blocks = set(getattr(model, "_no_split_modules", None) or [])
    found, inside = [], set()
    for module in model.modules():
        if id(module) in inside or not any(c.__name__ in blocks for c in type(module).__mro__):
            continue
        inside |= {id(m) for m in module.modules()}
        mlp = getattr(module, "mlp", None)
        if mlp is None or not type(mlp).__name__.lower().endswith("mlp"):
            what = f"{type(mlp).__name__}" if mlp is not None else "no `mlp`"
            raise ValueError(
                f"model.tiled_mlp tiles the dense MLP of each decoder layer, and {type(module).__name__} has {what} "
                "(a mixture of experts' sparse block, or another layout)"
            )
        found.append(mlp)
    if not found:
        raise ValueError(f"model.tiled_mlp found no decoder layers in {type(model).__name__} (its _no_split_modules: {sorted(blocks)})")
    return found


def apply(model: Any, tiles: int) -> int:
    """Run the MLP of every decoder layer of ``model`` over ``tiles`` tiles of the sequence when gradients are
    on. Returns the number of MLPs tiled. A PEFT adapter may be applied before or after: the MLP module stays.

    Raises:
        ValueError: see :func:`dense_mlps`; ``tiles`` below 1.
    """
    if tiles < 1:
        raise ValueError(f"model.tiled_mlp needs at least one tile, not {tiles}")
    mlps = dense_mlps(model)
    for mlp in mlps:
        original = mlp.forward
        if isinstance(original, functools.partial) and original.func is _tiled_forward:
            original = original.args[0]  # applied again: replace the number of tiles
        mlp.forward = functools.partial(_tiled_forward, original, tiles)
    return len(mlps)
