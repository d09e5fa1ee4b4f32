"""The causal-LM loss without the full logits tensor, and the mixture-of-experts router's term.

A causal LM's loss is usually computed from logits of shape (batch, seq, vocab) in float32:
for a small model with a large vocabulary they are the largest tensor of a training step,
and the cross-entropy keeps them (and their log-softmax) alive until the backward pass.
``chunked_cross_entropy`` computes the same loss over ``chunk_size`` tokens at a time and
recomputes each chunk's logits in the backward pass (``torch.utils.checkpoint``), so that
neither pass ever holds more than one chunk's logits.

The model is still called through its (DDP-wrapped, compiled, PEFT-wrapped) forward, so
that the wrappers see every call: ``last_hidden_state`` asks it for its last hidden state
and for the logits of no position (``logits_to_keep`` an empty tensor). The output
projection is then applied to each chunk here, as the module itself (an adapter on it, or
PEFT's trained copy, applies).

The loss is transformers' ``ForCausalLMLoss``: labels shifted left by one, -100 ignored,
the mean over the supervised tokens, logits upcast to float32 after the model's own
soft-capping (Gemma's ``final_logit_softcapping``).

torch is imported by the functions that need it, like the other runtime modules.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100

# config attributes that change the logits after the output projection and that the chunked
# path does not reproduce: a model with one of them must use the plain loss
UNSUPPORTED_SCALING = ("logit_scale", "logits_scaling", "output_multiplier_scale", "lm_head_multiplier")


def output_head(model: Any) -> tuple[Any, float | None, str | None]:
    """The output projection of an (unwrapped) causal LM and its logit soft-cap, or why the chunked loss cannot run.

    Returns:
        (head, softcap, problem): ``problem`` is None when the chunked loss applies.
    """
    import inspect

    config = model.config
    head = model.get_output_embeddings()
    if head is None:
        return None, None, f"{type(model).__name__} has no output projection (get_output_embeddings() is None)"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps the model
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return None, None, f"{type(base).__name__}.forward takes no `logits_to_keep`, so it cannot skip its logits"
    scaled = [a for a in UNSUPPORTED_SCALING if getattr(config, a, None) not in (None, 1, 1.0)]
    if scaled:
        return None, None, f"{config.model_type} scales its logits ({', '.join(scaled)}), which the chunked loss does not reproduce"
    return head, getattr(config, "final_logit_softcapping", None), None


def last_hidden_state(model: Any, batch: dict[str, Any], **kwargs: Any) -> tuple[Any, Any]:
    """Call the model on a batch for its last hidden state (after the final norm) and no logits.

    Args:
        model: the model as training calls it (wrapped by DDP, torch.compile or PEFT, or not).
        batch: ``input_ids``, ``labels`` and whatever else the model takes (``position_ids``).
        **kwargs: passed on to the forward (``use_cache``, ``output_router_logits``).

    Returns:
        (hidden, outputs): hidden is (batch, seq, hidden) aligned with ``batch["labels"]``
        (prompt tuning's virtual tokens, prepended by PEFT, are cut off); outputs is the
        model's output (``aux_loss`` for a mixture of experts).
    """
    import torch

    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    nothing = torch.zeros(0, dtype=torch.long, device=labels.device)  # the logits of no position
    outputs = model(**inputs, output_hidden_states=True, logits_to_keep=nothing, **kwargs)
    return outputs.hidden_states[-1][:, -labels.shape[1] :], outputs


def _chunk_loss(head: Any, hidden: Any, labels: Any, softcap: float | None) -> Any:
    import torch

    logits = head(hidden)
    if softcap is not None:  # as the model's forward does, before the loss upcasts
        logits = torch.tanh(logits / softcap) * softcap
    return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")


def chunked_cross_entropy(hidden: Any, labels: Any, head: Any, chunk_size: int, softcap: float | None = None) -> Any:
    """Mean next-token cross-entropy over the supervised tokens, ``chunk_size`` tokens at a time.

    Equal to transformers' causal-LM loss on ``head(hidden)``: position i predicts label i+1,
    labels of -100 are ignored, the mean is over the rest (NaN when there are none, as
    there). Only supervised positions are projected. Each chunk's logits are freed once its
    loss is summed and recomputed in the backward pass.

    Args:
        hidden: (batch, seq, hidden), the model's last hidden state.
        labels: (batch, seq), the unshifted labels.
        head: the output projection (a module).
        chunk_size: tokens per chunk.
        softcap: the model's final logit soft-cap, if any.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE)[..., 1:].reshape(-1)
    keep = shifted != IGNORE
    count = keep.sum()
    hidden = hidden.reshape(-1, hidden.shape[-1])[keep]
    shifted = shifted[keep]
    total = torch.zeros((), device=hidden.device, dtype=torch.float32)
    # at least one (possibly empty) chunk, so the output projection always takes part in the graph (DDP)
    for start in range(0, max(len(shifted), 1), chunk_size):
        end = start + chunk_size
        total = total + checkpoint(_chunk_loss, head, hidden[start:end], shifted[start:end], softcap, use_reentrant=False)
    return total / count


def set_router_aux_loss_coef(model: Any, coef: float) -> str | None:
    """Train a mixture of experts with ``coef`` times its router's load-balancing loss.

    Sets ``output_router_logits`` and ``router_aux_loss_coef`` in the config and on every
    module that copied the coefficient when it was built (transformers' ``*ForCausalLM``
    does), so that the forward returns ``aux_loss`` and adds ``coef * aux_loss`` to
    ``.loss`` when it is given labels.

    Returns:
        None, or why the model has no router loss.
    """
    config = model.config
    if not hasattr(config, "router_aux_loss_coef"):
        return f"{config.model_type} is not a mixture of experts (its config has no router_aux_loss_coef)"
    config.output_router_logits = True
    config.router_aux_loss_coef = coef
    for module in model.modules():
        if hasattr(module, "router_aux_loss_coef"):
            module.router_aux_loss_coef = coef
    return None
