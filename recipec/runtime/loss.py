"""The causal-LM loss without the full logits tensor, and the mixture-of-experts router's term.

A causal LM's loss is usually computed from logits of shape (batch, seq, vocab) in float32:
for a small model with a large vocabulary they are the largest tensor of a training step,
and the cross-entropy keeps them (and their log-softmax) alive until the backward pass.
``chunked_cross_entropy`` computes the same loss over ``chunk_size`` tokens at a time and
recomputes each chunk's logits in the backward pass (``torch.utils.checkpoint``), so that
neither pass ever holds more than one chunk's logits.

The model is still called through its (DDP-wrapped, compiled, PEFT-wrapped) forward, so
that the wrappers see every call: ``LastHiddenState`` asks it for the logits of no position
(``logits_to_keep`` an empty tensor) and keeps its decoder's output, the last hidden state,
by a forward hook. The output projection is then applied to each chunk here, as the module
itself (an adapter on it, or PEFT's trained copy, applies).

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
UNSUPPORTED_SCALING = (
    "logit_scale", "logits_scaling", "output_multiplier_scale", "lm_head_multiplier", "logits_mup_width_multiplier",
)  # fmt: skip
# config attributes that name a soft-cap of the logits (tanh(logits / cap) * cap), which the chunked path applies
SOFTCAPS = ("final_logit_softcapping", "logits_soft_cap")


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
    if not any(child is head for child in base.children()):
        # BERT-like heads (a dense layer and a norm before the projection) and XLM's wrap it in a module of their own
        path = next((name for name, module in base.named_modules() if module is head), "?")
        return None, None, f"{type(base).__name__} applies more than its output projection `{path}` to the last hidden state"
    decoder = _decoder(model)
    if decoder is None:
        return None, None, f"{type(base).__name__} has no decoder module apart from itself (get_decoder()), whose output the loss would read"
    others = [
        n for n, c in base.named_children()
        if c is not head and not any(m is decoder for m in c.modules()) and next(c.parameters(), None) is not None
    ]  # fmt: skip
    if others:  # ELECTRA's generator_predictions, say, between the decoder and the projection
        return None, None, f"{type(base).__name__} has modules beside its decoder and output projection ({', '.join(others)})"
    scaled = [a for a in UNSUPPORTED_SCALING if getattr(config, a, None) not in (None, 1, 1.0)]
    if getattr(config, "unpadded_vocab_size", None) is not None and config.unpadded_vocab_size < config.vocab_size:
        scaled.append("unpadded_vocab_size")  # its logits are cut to the unpadded vocabulary
    if scaled:
        return None, None, f"{config.model_type} scales its logits ({', '.join(scaled)}), which the chunked loss does not reproduce"
    return head, next((getattr(config, a) for a in SOFTCAPS if getattr(config, a, None) is not None), None), None


def keep_head_gathered(model: Any, head: Any) -> None:
    """Under FSDP 2, keep the unit that holds the output projection gathered from the forward to the backward.

    The chunks apply the output projection after the model's forward returns (and again,
    recomputed, in the backward pass), where FSDP would have freed the gathered weights of a
    unit that reshards after its forward. The innermost unit that holds the projection is
    told not to: ``set_reshard_after_forward(False, recurse=False)``. That is the root
    (embeddings, final norm and projection around the blocks sharded on their own) when the
    script shards the model itself, which torch leaves gathered by default anyway; accelerate
    1.16's plugin puts the final norm and the projection in a unit of their own that it
    already keeps gathered. Its gradients are reduce-scattered after the backward pass as
    always; the blocks keep their own setting. Other models (DDP, DeepSpeed, whose ZeRO-3
    gathers the projection on each call) are left as they are.

    Args:
        model: the model as training calls it (an ``FSDPModule`` under FSDP 2, perhaps compiled:
            accelerate's prepare wraps it in ``torch.compile``'s module with ``model.compile``).
        head: the output projection the chunks apply (``output_head``).
    """
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP 2
        return
    model = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule keeps the module it compiles
    if not isinstance(model, FSDPModule):
        return
    unit = model
    for module in model.modules():  # parents come before their children: the last match is the innermost
        if isinstance(module, FSDPModule) and any(m is head for m in module.modules()):
            unit = module
    unit.set_reshard_after_forward(False, recurse=False)


class LastHiddenState:
    """Calls a causal LM for its last hidden state (after the final norm) and no logits.

    A forward hook on the model's decoder (``get_decoder()``, the module whose output
    ``lm_head`` projects) keeps that module's output. ``output_hidden_states`` would give the
    same tensor, but with every layer's hidden state beside it: an evaluation forward, which
    keeps nothing for a backward pass, would hold all of them until it returns.

    Args:
        model: the causal LM unwrapped (PEFT-wrapped or not), before accelerate, FSDP or
            DeepSpeed wrap it: the wrappers keep its modules, and the hook with them.
    """

    def __init__(self, model: Any) -> None:
        decoder = _decoder(model)
        if decoder is None:
            raise ValueError(f"{type(model).__name__} has no decoder module apart from itself (get_decoder())")
        self._hidden: Any = None
        self._handle = decoder.register_forward_hook(self._keep)

    def _keep(self, module: Any, args: Any, output: Any) -> None:
        self._hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state

    def __call__(self, model: Any, batch: dict[str, Any], **kwargs: Any) -> tuple[Any, Any]:
        """The forward of ``model`` on ``batch``, without its logits.

        Args:
            model: the model as training calls it (wrapped by DDP, torch.compile or PEFT, or not).
            batch: ``input_ids``, ``labels`` (or the pre-shifted ``shift_labels`` of context and
                sequence parallelism, which are cut with the sequence) and whatever else the model
                takes (``position_ids``).
            **kwargs: passed on to the forward (``use_cache``, ``output_router_logits``).

        Returns:
            (hidden, outputs): hidden is (batch, seq, hidden) aligned with the labels
            (prompt tuning's virtual tokens, prepended by PEFT, are cut off); outputs is the
            model's output (``aux_loss`` for a mixture of experts).
        """
        import torch

        labels = batch["shift_labels"] if "shift_labels" in batch else batch["labels"]  # cut with the sequence
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "shift_labels")}
        nothing = torch.zeros(0, dtype=torch.long, device=labels.device)  # the logits of no position
        self._hidden = None  # not a state a forward outside this call left (a generation step's)
        outputs = model(**inputs, logits_to_keep=nothing, **kwargs)
        hidden, self._hidden = self._hidden, None  # held no longer than the caller holds it
        if hidden is None:
            raise RuntimeError("the forward did not run the decoder the hook is on (was the model replaced?)")
        return hidden[:, -labels.shape[1] :], outputs

    def remove(self) -> None:
        """Take the hook off the decoder."""
        self._handle.remove()


def _decoder(model: Any) -> Any:
    """The decoder of a causal LM (PEFT-wrapped or not), or None when it has none apart from itself.

    transformers' ``get_decoder()``, or the ``model`` attribute where that returns the causal LM itself
    (Llama 4's text model names a base-model prefix it does not have)."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    if decoder is None or decoder is base:
        decoder = getattr(base, "model", None)
    return decoder if isinstance(decoder, torch.nn.Module) and decoder is not base else None


def _chunk_loss(head: Any, hidden: Any, labels: Any, softcap: float | None, label_smoothing: float = 0.0, dft: bool = False) -> Any:
    import torch

    logits = head(hidden)
    if softcap is not None:  # as the model's forward does, before the loss upcasts
        logits = torch.tanh(logits / softcap) * softcap
    if dft:
        return _dft(torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")).sum()
    return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum", label_smoothing=label_smoothing)


def _dft(nll: Any) -> Any:
    """Dynamic Fine-Tuning's per-token loss (Wu et al. 2025, as TRL's SFT ``loss_type="dft"`` and LLaMA-Factory's
    ``use_dft_loss`` compute it): each token's negative log-likelihood times its probability, exp(-nll), without
    gradient (a token that is not supervised has nll 0, so 0)."""
    import torch

    return nll * torch.exp(-nll.detach())


def cross_entropy(logits: Any, labels: Any, label_smoothing: float = 0.0, *, dft: bool = False) -> Any:
    """The mean next-token cross-entropy of ``logits`` (batch, seq, vocab) over the supervised tokens of
    ``labels`` (batch, seq, unshifted), with ``label_smoothing`` eps: transformers' ``ForCausalLMLoss``
    (position i predicts label i+1, -100 ignored, float32) at eps 0, and with eps the loss of
    transformers' ``LabelSmoother`` (the Trainer's ``label_smoothing_factor``): (1 - eps) x the
    negative log-likelihood + eps x the mean over the vocabulary of the negative log-probabilities,
    both averaged over the supervised tokens (torch's ``cross_entropy(label_smoothing=eps)``).
    ``dft``: instead each token's negative log-likelihood weighted by its probability (:func:`_dft`),
    averaged over the supervised tokens."""
    import torch

    targets = torch.nn.functional.pad(labels, (0, 1), value=IGNORE)[..., 1:].reshape(-1)
    flat = logits.float().reshape(-1, logits.shape[-1])
    if dft:
        nll = torch.nn.functional.cross_entropy(flat, targets, ignore_index=IGNORE, reduction="none")
        return _dft(nll).sum() / (targets != IGNORE).sum()
    return torch.nn.functional.cross_entropy(flat, targets, ignore_index=IGNORE, label_smoothing=label_smoothing)


def chunked_cross_entropy(
    hidden: Any,
    labels: Any,
    head: Any,
    chunk_size: int,
    softcap: float | None = None,
    *,
    shifted: bool = False,
    reduction: str = "mean",
    same_chunks_across: Any = None,
    label_smoothing: float = 0.0,
    dft: bool = False,
) -> Any:
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
        shifted: ``labels`` are already shifted (position i's label is token i+1: context and
            sequence parallelism shift them before cutting the sequence), as transformers'
            ``shift_labels``.
        reduction: "mean" over the supervised tokens, or "sum".
        same_chunks_across: a process group (``torch.distributed.group.WORLD``) whose
            processes all apply the projection as many times, the most chunks any of them
            needs (the others' last chunks are empty): under ZeRO-3 each call of the
            projection gathers its weights, a collective every process must join, and the
            processes' micro-batches hold different numbers of supervised tokens (FSDP 2,
            which keeps the projection's unit gathered, needs none). None: each process its
            own count.
        label_smoothing: eps of :func:`cross_entropy`'s label smoothing (0: none).
        dft: each token's negative log-likelihood weighted by its probability (:func:`_dft`).
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    if reduction not in ("mean", "sum"):
        raise ValueError(f'reduction must be "mean" or "sum", not {reduction!r}')
    targets = (labels if shifted else torch.nn.functional.pad(labels, (0, 1), value=IGNORE)[..., 1:]).reshape(-1)
    keep = targets != IGNORE
    count = keep.sum()
    hidden = hidden.reshape(-1, hidden.shape[-1])[keep]
    targets = targets[keep]
    total = torch.zeros((), device=hidden.device, dtype=torch.float32)
    # at least one (possibly empty) chunk, so the output projection always takes part in the graph (DDP)
    chunks = -(-max(len(targets), 1) // chunk_size)
    if same_chunks_across is not None:
        most = torch.tensor([chunks], device=hidden.device)
        torch.distributed.all_reduce(most, op=torch.distributed.ReduceOp.MAX, group=same_chunks_across)
        chunks = int(most.item())
    for i in range(chunks):
        start, end = i * chunk_size, (i + 1) * chunk_size
        total = total + checkpoint(_chunk_loss, head, hidden[start:end], targets[start:end], softcap, label_smoothing, dft, use_reentrant=False)
    return total if reduction == "sum" else total / count


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
