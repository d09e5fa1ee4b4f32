"""`[loss]`: how the causal-LM loss is computed, and a mixture of experts' router term."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Table, key_error


class LossTable(Table):
    """`[loss]`: the loss of causal-LM and supervised fine-tuning runs (not `[preference]`, whose objectives have their own)."""

    cross_entropy: Literal["plain", "chunked"] = "plain"
    """How the cross-entropy is computed. `plain`: the model's own loss over its full logits (batch * seq_len * vocab float32 values, three copies alive at the peak). `chunked`: the model returns its last hidden state and no logits, and the output projection and cross-entropy run over `chunk_size` tokens at a time, each chunk's logits recomputed in the backward pass; the same loss and gradients with only one chunk's logits in memory, at the cost of a second output projection in the backward pass. Runs under ddp, deepspeed (ZeRO-3 gathers the projection for each chunk), fsdp version 2 (the unit that holds the projection stays gathered from the forward to the end of the backward), and with context and sequence parallelism (each rank its slice of the labels shifted before the cut); not with tensor parallelism."""

    chunk_size: int = Field(1024, ge=1)
    """Supervised tokens per chunk of the `chunked` cross-entropy: the logits held at once are chunk_size * vocab float32 values."""

    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """Label smoothing eps of the training loss (transformers' `label_smoothing_factor`): (1 - eps) x the cross-entropy of the next token + eps x the mean over the vocabulary of the negative log-probabilities, averaged over the supervised tokens, as the Trainer's `LabelSmoother` computes it. With `plain` the loss is computed from the model's logits instead of by the model. The held-out loss stays the plain cross-entropy (comparable with runs without smoothing). Not with context or sequence parallelism."""

    type: Literal["nll", "dft"] = "nll"
    """The training loss per supervised token. `nll`: its negative log-likelihood (the cross-entropy). `dft`: Dynamic Fine-Tuning (Wu et al. 2025; TRL's SFT `loss_type = "dft"`, LLaMA-Factory's `use_dft_loss`): the negative log-likelihood times the token's probability under the model, without gradient, which keeps supervised fine-tuning from pushing hard on tokens the model finds unlikely. Averaged over the supervised tokens as `nll` is; the held-out loss stays the plain cross-entropy. Not with `label_smoothing`, nor with context or sequence parallelism."""

    router_aux_loss_coef: float | None = Field(None, ge=0)
    """Mixture-of-experts models only: add this times the router's load-balancing loss (transformers' `aux_loss`) to the training loss, and log `aux_loss`. Sets the model config's `router_aux_loss_coef` and `output_router_logits`. Unset: the model's own config decides (transformers' MoE configs leave the router loss off). The evaluation loss is the cross-entropy alone."""

    @model_validator(mode="after")
    def check_dft_without_smoothing(self) -> LossTable:
        if self.type == "dft" and self.label_smoothing:
            raise key_error("label_smoothing", 'label_smoothing smooths the cross-entropy, and type = "dft" weighs each token\'s negative log-likelihood by its probability instead', 'remove label_smoothing, or set type = "nll"')
        return self

    @model_validator(mode="after")
    def check_chunk_size_with_chunked(self) -> LossTable:
        if "chunk_size" in self.model_fields_set and self.cross_entropy != "chunked":
            raise key_error("chunk_size", '`chunk_size` applies only with cross_entropy = "chunked"')
        return self
