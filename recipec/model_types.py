"""The causal-LM model types of transformers and the keys of their configs, as committed data.

`model.init` names a model type and `[model.config]` sets keys of its config class. Both
are checked when a recipe is compiled, and compilation never imports torch or
transformers, so what transformers knows is written down once, in `model_types.json`
beside this module, and read from there. The file is generated from the installed
transformers::

    python -m recipec.model_types

For every model type in transformers' `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES` it records the
causal-LM class, the config's keys with their defaults (`null` where a default is not a
JSON value), the config's `attribute_map` (gpt2 takes `hidden_size` for its `n_embd`),
whether the config takes the legacy RoPE keys (`rope_theta`, `rope_scaling`,
`partial_rotary_factor`, which it folds into `rope_parameters`), and the sub-configs of a
composite config (gemma3 holds a `text_config` and a `vision_config`). The keys every
config shares (`PreTrainedConfig`'s own: `dtype`, `id2label`, ...) are left out: they say
nothing about the architecture, and `model.dtype` sets the dtype.

`tests/test_model_types.py` regenerates the table from the installed transformers and fails
when it differs, printing the command above. A newer transformers (`.ci/latest`) adds model
types and keys; that test then fails on purpose, as the notice to regenerate the table.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from .runtime.data import CROSSES_PACKED  # noqa: F401  (model types whose class crosses packed rows; the script reads it there)

TABLE = Path(__file__).with_name("model_types.json")

TOKENIZER_KEYS = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")
"""Config keys the generated script sets from the tokenizer; a recipe cannot set them."""

ROPE_KEYS = ("rope_theta", "rope_scaling", "partial_rotary_factor")
"""Legacy keys a config with `rope_parameters` takes and folds into it."""

UNSHIFTED_LOSS = frozenset(
    {"bart", "bigbird_pegasus", "blenderbot", "blenderbot-small", "cpmant", "mbart", "mvp", "pegasus", "trocr", "whisper", "xlm"}
)
"""Model types whose causal-LM class computes its own loss against the labels as given, not shifted
left by one: each position is scored against its own token, so training on that loss teaches the model
to copy its input. Found by comparing each tiny-buildable type's loss with the next-token cross-entropy
of its logits (`tests/runtime/test_loss.py`, which fails when transformers changes the set)."""


@cache
def table() -> dict[str, Any]:
    """The committed table: {"transformers": version, "model_types": {type: entry}}."""
    return json.loads(TABLE.read_text(encoding="utf-8"))


def model_types() -> dict[str, dict[str, Any]]:
    """Every causal-LM model type -> its entry (class, keys, aliases, rope, sub_configs).

    `table()["other_model_types"]` lists the model types transformers knows that have no
    causal-LM class (t5, vit), so that naming one is told as such.
    """
    return table()["model_types"]


def config_keys(model_type: str) -> set[str]:
    """The keys `[model.config]` may set for a model type: its config's own keys, the names
    its `attribute_map` takes for them, and the legacy RoPE keys where it has RoPE."""
    entry = model_types()[model_type]
    keys = set(entry["keys"]) | set(entry["aliases"])
    if entry["rope"]:
        keys |= set(ROPE_KEYS)
    return keys - set(TOKENIZER_KEYS)


def canonical(model_type: str, key: str) -> str:
    """The name the config stores a key under (`n_embd` for gpt2's `hidden_size`).

    A key that is a field of the config is its own name even where `attribute_map` maps it
    (qwen3_moe has a `num_experts` field and maps `num_experts` too).
    """
    entry = model_types()[model_type]
    return key if key in entry["keys"] else entry["aliases"].get(key, key)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


def generate() -> dict[str, Any]:
    """The table, read from the installed transformers (this imports transformers, not torch models)."""
    import dataclasses

    import transformers
    from transformers import PretrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING, CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    common = {f.name for f in dataclasses.fields(PretrainedConfig)}
    out: dict[str, Any] = {}
    for model_type, model_class in sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items()):
        config = CONFIG_MAPPING[model_type]
        keys: dict[str, Any] = {}
        for f in dataclasses.fields(config):
            if f.name in common or f.name.startswith("_"):
                continue
            if f.default is not dataclasses.MISSING:
                keys[f.name] = _jsonable(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                keys[f.name] = _jsonable(f.default_factory())
            else:
                keys[f.name] = None
        out[model_type] = {
            "class": model_class,
            "keys": keys,
            "aliases": dict(sorted(getattr(config, "attribute_map", {}).items())),
            "rope": "rope_parameters" in keys,
            "sub_configs": sorted(getattr(config, "sub_configs", None) or {}),
        }
    other = sorted(set(CONFIG_MAPPING_NAMES) - set(out))
    return {"transformers": transformers.__version__, "model_types": out, "other_model_types": other}


def dumps(data: dict[str, Any]) -> str:
    """The table as committed: one model type per line, so a diff shows what changed."""
    lines = [f'  {json.dumps(t)}: {json.dumps(e, sort_keys=False)}' for t, e in data["model_types"].items()]
    return (
        '{\n"transformers": ' + json.dumps(data["transformers"]) + ',\n"model_types": {\n' + ",\n".join(lines) + "\n},\n"
        '"other_model_types": ' + json.dumps(data["other_model_types"]) + "\n}\n"
    )


if __name__ == "__main__":
    TABLE.write_text(dumps(generate()), encoding="utf-8")
    print(f"wrote {TABLE} ({len(table.__wrapped__()['model_types'])} model types)")
