"""`[model.config]` over a pretrained model: keys of its config replaced before the weights load.

Only settings that leave every weight's shape as the checkpoint has it can change: RoPE's
parameters and the positions (context extension), dropout, a sliding window, a router's
top-k. The widths, depths and head counts are the checkpoint's (a key that would change one
is refused, as loading would fail on the first mismatched tensor). The compiler checks the
keys against the model type's config when the model's config.json is local; the script
checks them again on the config it loads (a hub model's type is known only then).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

SHAPE_KEYS = frozenset(
    {
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "head_dim", "vocab_size", "tie_word_embeddings", "attention_bias", "mlp_bias",
        # mixtures of experts, multi-head latent attention
        "moe_intermediate_size", "num_experts", "num_local_experts", "shared_expert_intermediate_size",
        "n_routed_experts", "n_shared_experts", "first_k_dense_replace", "mlp_only_layers", "decoder_sparse_step",
        "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim",
        # gpt2's and MPT's names
        "n_embd", "n_layer", "n_head", "n_inner", "n_positions", "d_model", "n_layers", "n_heads", "expansion_ratio",
    }
)
"""Config keys (as configs store them) that size or lay out weights: the checkpoint's, not a recipe's."""

LEGACY_ROPE = ("rope_theta", "rope_scaling", "partial_rotary_factor")
"""RoPE keys a config with `rope_parameters` folds in only when it is built: set on a loaded config they do nothing."""


def stored_name(config: Any, key: str) -> str:
    """The name a config stores `key` under (its `attribute_map`: gpt2's `n_positions` for `max_position_embeddings`)."""
    return getattr(config, "attribute_map", {}).get(key, key)


def problem(model_type: str, key: str, stored: str, has_key: bool, rope_parameters: bool) -> str | None:
    """Why `model.config.<key>` cannot replace a key of a pretrained `model_type` config, or None.

    Args:
        stored: the name the config stores the key under.
        has_key: whether the config has the key at all.
        rope_parameters: whether the config keeps its RoPE settings in `rope_parameters`.
    """
    if stored in SHAPE_KEYS:
        return f"`model.config.{key}` sizes the pretrained weights ({model_type}'s {stored}): the checkpoint's own value is the one that loads"
    if key in LEGACY_ROPE and rope_parameters:
        return (
            f"`model.config.{key}` is folded into the {model_type} config's rope_parameters only when it is built, "
            "so over a pretrained model it would change nothing; set model.config.rope_parameters "
            f"(a table: its keys replace the checkpoint's one by one, e.g. rope_parameters = {{rope_theta = 500000.0}})"
        )
    if not has_key:
        return f"`model.config.{key}` is not a key of the {model_type} config"
    return None


def override(config: Any, overrides: Mapping[str, Any]) -> str | None:
    """Set each key of `overrides` on a loaded config, in place; the first problem, or None.

    A table over a dict-valued key (rope_parameters) replaces its keys one by one, the others as
    they were; over a sub-config (MPT's attn_config) it sets those of its attributes, each of
    which must exist.
    """
    rope = getattr(config, "rope_parameters", None) is not None
    for key, value in overrides.items():
        name = stored_name(config, key)
        why = problem(config.model_type, key, name, hasattr(config, name), rope)
        if why:
            return why
        current = getattr(config, name)
        if isinstance(value, Mapping) and hasattr(current, "to_dict") and not isinstance(current, Mapping):
            for sub in value:
                if not hasattr(current, sub):
                    close = difflib.get_close_matches(sub, list(current.to_dict()), n=1)
                    return f"`model.config.{key}.{sub}` is not a key of the {config.model_type} config's {name}" + (
                        f" (did you mean `{close[0]}`?)" if close else ""
                    )
            for sub, sub_value in value.items():
                setattr(current, sub, sub_value)
            continue
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            value = {**current, **value}
        setattr(config, name, value)
    return None
