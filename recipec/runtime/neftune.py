"""NEFTune (Jain et al., 2023): uniform noise on the input embeddings while training.

The hook is transformers' own (``neftune_post_forward_hook``, what the Trainer registers for
``neftune_noise_alpha``): in training mode each embedding output of shape ``[batch, seq_len,
hidden]`` gets noise drawn uniformly from ``[-m, m]`` with ``m = alpha / sqrt(seq_len *
hidden)``; in evaluation nothing is added.
"""

from __future__ import annotations

from typing import Any


def _hook() -> Any:
    try:
        from transformers.integrations.neftune import neftune_post_forward_hook
    except ImportError:  # transformers releases before it moved
        from transformers.trainer_utils import neftune_post_forward_hook
    return neftune_post_forward_hook


def activate(model: Any, alpha: float) -> Any:
    """Add NEFTune's noise to ``model``'s input embeddings in training mode; returns the hook's handle.

    Call it on the transformers model before any wrapping (a PEFT adapter, DDP, FSDP): the
    embedding module keeps the hook inside them.
    """
    embeddings = model.get_input_embeddings()
    embeddings.neftune_noise_alpha = float(alpha)
    return embeddings.register_forward_hook(_hook())
