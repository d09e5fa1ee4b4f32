"""`[model]`: a pretrained model to load, or an architecture to initialise from scratch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from .. import model_types
from ..diagnostics import did_you_mean
from ..runtime.model_config import SHAPE_KEYS
from .base import Table, key_error

LOCAL_PREFIXES = ("./", "../", "/", "~")


def _init_choices(schema: dict[str, Any]) -> None:
    """The JSON Schema of `model.init`: every causal-LM model type (read when the schema is generated)."""
    choices = sorted(model_types.model_types())
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "string":
            option["enum"] = choices


class ModelConfig(Table):
    """`[model.config]`: the config of a model initialised from scratch (`model.init`), or keys
    of a pretrained model's config replaced before its weights load (`model.path`, `[continual]`).

    From scratch: the keys below are typed, with defaults for a small Llama-style model. Any
    other key of the model type's config class is allowed too (`n_inner` for gpt2,
    `num_experts` for qwen3_moe) and passed on as written; a key the model type's config does
    not know is an error. A typed key that the model type spells differently goes under its
    own name (gpt2 takes `hidden_size` for `n_embd`); one the model type lacks altogether is
    left out unless set. The vocabulary size and the special token ids are not set here: they
    are the tokenizer's.

    Over a pretrained model only the keys written apply, each replacing the checkpoint's value
    (a table over a table-valued key such as `rope_parameters` replaces its keys one by one):
    RoPE's parameters and `max_position_embeddings` for a longer context, dropout, a sliding
    window. Keys that size the weights (widths, layers, heads, experts, tied embeddings) are
    the checkpoint's and an error here; with a local model (or a hub model in the local cache)
    the keys are checked against its config.json's model type when the recipe is compiled, and
    always when the script loads the config.
    """

    model_config = ConfigDict(**{**Table.model_config, "extra": "allow"})

    hidden_size: int = Field(256, ge=8)
    """Width of the residual stream."""

    intermediate_size: int = Field(688, ge=8)
    """Width of the MLP's hidden layer."""

    num_hidden_layers: int = Field(4, ge=1)
    """Number of transformer blocks."""

    num_attention_heads: int = Field(4, ge=1)
    """Number of attention (query) heads; must divide `hidden_size`."""

    num_key_value_heads: int | None = Field(None, ge=1)
    """Number of key/value heads for grouped-query attention; must divide `num_attention_heads`. Unset means `num_attention_heads` (plain multi-head attention)."""

    max_position_embeddings: int = Field(2048, ge=8)
    """Longest sequence the model supports; `data.seq_len` may not exceed it."""

    rope_theta: float = Field(10000.0, gt=0)
    """Base period of the rotary position embedding."""

    rms_norm_eps: float = Field(1e-5, gt=0)
    """Epsilon of the RMS norms."""

    tie_word_embeddings: bool = False
    """Share the input embedding and the output projection."""

    attention_dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the attention probabilities."""

    initializer_range: float = Field(0.02, gt=0)
    """Standard deviation of the normal initialisation of the weights."""

    @model_validator(mode="after")
    def check_heads_divide(self) -> ModelConfig:
        # with an explicit head_dim the heads need not divide the width (qwen3, gemma3_text)
        if self.hidden_size % self.num_attention_heads and (self.model_extra or {}).get("head_dim") is None:
            raise key_error(
                "num_attention_heads",
                f"num_attention_heads {self.num_attention_heads} does not divide hidden_size {self.hidden_size}",
                "choose a head count that divides hidden_size",
            )
        kv = self.num_key_value_heads
        if kv is not None and self.num_attention_heads % kv:
            raise key_error(
                "num_key_value_heads",
                f"num_key_value_heads {kv} does not divide num_attention_heads {self.num_attention_heads}",
            )
        return self


class ModelTable(Table):
    """`[model]`"""

    path: str | None = None
    """A pretrained model: a hub id (`org/name`) or a local directory. A local directory must start with `./`, `../`, `/` or `~`, and a relative one is relative to the directory `recipec` runs in. A hub id in the local Hugging Face cache is read at build time as a local directory is (its config for the checks and the memory estimate, its tokenizer's chat template; nothing is downloaded), and the lock records the commit it is at. Exactly one of `path` and `init`."""

    init: str | None = Field(None, json_schema_extra=_init_choices)
    """Initialise a new model of this architecture from `[model.config]` instead of loading weights: any model type that transformers builds a causal LM for (llama, mistral, qwen2, qwen3, gemma3_text, olmo2, phi3, gpt2, mixtral, qwen3_moe, ...; the list is `recipec/model_types.json`). Exactly one of `path` and `init`."""

    config: ModelConfig = Field(default_factory=ModelConfig)
    """Sizes of the from-scratch model (with `init`), or keys of a pretrained model's config replaced before it loads."""

    revision: str | None = None
    """Hub revision (branch, tag or commit) of `path`. Pin a commit for reproducible runs: a branch moves, and `recipec verify` then reports the model changed."""

    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """dtype the weights are loaded or initialised in. Keep float32 and use `launch.mixed_precision` for mixed-precision training."""

    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""

    activation_offloading: bool = False
    """Keep the activations the backward pass reads in host memory (pinned) until it reads them: less GPU memory, at the cost of a copy each way. With gradient_checkpointing only each layer's input is kept, and offloaded. Parameters stay on the device. Nothing moves on the CPU."""

    tiled_mlp: bool = False
    """Run each decoder layer's MLP over the batch's tokens a tile at a time, each tile recomputed in the backward pass (Arctic Long Sequence Training's TiledMLP; axolotl's `tiled_mlp`): the MLP keeps none of its b x s x intermediate_size activations, at the cost of a second forward of the MLP. For long sequences. Dense MLPs only, not a mixture of experts."""

    tiled_mlp_shards: int | None = Field(None, ge=2)
    """How many tiles `tiled_mlp` cuts each micro-batch's tokens into; unset: ceil(data.seq_len / hidden_size), DeepSpeed's default."""

    attention: Literal["sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention"] = "sdpa"
    """Attention kernel (transformers' `attn_implementation`): sdpa is torch's fused scaled-dot-product attention and runs everywhere; flash_attention_2/3 need a CUDA GPU, the flash-attn package and fp16/bf16; eager is the plain reference."""

    compile: bool = False
    """Compile the model with torch.compile (through accelerate): the first steps are slow while it compiles, later ones faster."""

    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    """torch.compile's mode (only with `compile`): reduce-overhead uses CUDA graphs, max-autotune searches kernels for longer."""

    trust_remote_code: bool = False
    """Allow a hub model to run its own Python code. Only for models you have read."""

    @model_validator(mode="after")
    def check_path_or_init(self) -> ModelTable:
        # neither is checked by resolve: [continual] may supply the model
        if self.path is not None and self.init is not None:
            raise key_error(
                "path",
                "[model] needs exactly one of `path` and `init`, got both",
                'load a model with path = "org/name" or "./dir", or start from scratch with init = "llama"',
            )
        if self.init is not None and self.revision is not None:
            raise key_error("revision", "`revision` applies only to a pretrained `path`")
        if "compile_mode" in self.model_fields_set and not self.compile:
            raise key_error("compile_mode", "`compile_mode` applies only with compile = true")
        if self.tiled_mlp_shards is not None and not self.tiled_mlp:
            raise key_error("tiled_mlp_shards", "`tiled_mlp_shards` applies only with tiled_mlp = true", "set tiled_mlp = true, or remove tiled_mlp_shards")
        if self.init is not None:
            check_model_type(self.init)
            check_config_keys(self.init, self.config)
        if self.init is None:
            for key in self.overrides():
                check_not_elsewhere(key)
                if key in SHAPE_KEYS:
                    raise key_error(
                        ("config", key),
                        f"`model.config.{key}` sizes the weights, and a pretrained model's are the checkpoint's",
                        "remove it; to change the architecture, start from scratch with model.init",
                    )
        return self

    def overrides(self) -> dict[str, Any]:
        """The keys `[model.config]` sets over a pretrained model's config: those written, as written."""
        c = self.config
        return {k: v for k, v in c.model_dump().items() if k in c.model_fields_set}

    def init_config(self) -> dict[str, Any]:
        """The keyword arguments `AutoConfig.for_model(init, ...)` gets, besides the tokenizer's.

        Every key set in `[model.config]` as written; the typed keys' defaults where the
        model type has the key; and where the model type's own default would not fit the
        widths set here, the value those widths mean: `num_key_value_heads` (unset means
        plain multi-head attention) and `head_dim` (`hidden_size / num_attention_heads`).
        """
        assert self.init is not None
        keys = model_types.config_keys(self.init)
        defaults = model_types.model_types()[self.init]["keys"]
        c = self.config
        given = {model_types.canonical(self.init, k) for k in c.model_fields_set | set(c.model_extra or {})}
        out = {
            k: v
            for k, v in c.model_dump(exclude_none=True).items()
            if k in keys and (k in c.model_fields_set or k in (c.model_extra or {}) or model_types.canonical(self.init, k) not in given)
        }
        if "num_key_value_heads" not in out and defaults.get("num_key_value_heads") is not None:
            out["num_key_value_heads"] = c.num_attention_heads
        if "head_dim" not in out and defaults.get("head_dim") is not None:
            out["head_dim"] = c.hidden_size // c.num_attention_heads
        return out

    @property
    def is_local(self) -> bool:
        """Whether `path` names a local directory rather than a hub id."""
        return self.path is not None and self.path.startswith(LOCAL_PREFIXES)


def check_model_type(init: str) -> None:
    """`model.init` names a model type transformers builds a causal LM for, text only."""
    table = model_types.table()
    known = table["model_types"]
    version = table["transformers"]
    if init not in known:
        if init in table["other_model_types"]:
            raise key_error(
                "init",
                f'"{init}" is a model type of transformers {version} with no causal-LM class: AutoModelForCausalLM does not build it',
                did_you_mean(init, known) or "recipec/model_types.json lists the causal-LM model types",
            )
        raise key_error(
            "init",
            f'"{init}" is not a causal-LM model type of transformers {version}',
            did_you_mean(init, known) or "recipec/model_types.json lists the causal-LM model types",
        )
    entry = known[init]
    if "text_config" in entry["sub_configs"]:
        text = f"{init}_text"
        raise key_error(
            "init",
            f'"{init}" is {entry["class"]}, a model of several parts (text_config, {", ".join(s for s in entry["sub_configs"] if s != "text_config")}); '
            "recipec builds a text-only model from [model.config]",
            f'use init = "{text}", its text-only causal LM' if text in known else None,
        )


def check_not_elsewhere(key: str) -> None:
    """A `[model.config]` key whose home is elsewhere (the tokenizer's, the router loss's) is an error that says where."""
    if key in model_types.TOKENIZER_KEYS:
        raise key_error(
            ("config", key),
            f"`model.config.{key}` is the tokenizer's: the script sets it from the tokenizer",
            "remove it; the tokenizer's vocabulary and special tokens decide it",
        )
    if key in ROUTER_KEYS:
        raise key_error(
            ("config", key),
            f"`model.config.{key}` is set by `loss.router_aux_loss_coef`, for a from-scratch and a pretrained model alike",
            "set router_aux_loss_coef under [loss]: the script then returns the router logits and adds the term",
        )


def check_config_keys(init: str, config: ModelConfig) -> None:
    """Every key set in `[model.config]` is a key of the model type's config, said once."""
    keys = model_types.config_keys(init)
    defaults = model_types.model_types()[init]["keys"]
    seen: dict[str, str] = {}
    extra = config.model_extra or {}
    for key in [k for k in config.model_dump() if k in config.model_fields_set]:  # extras are in the set too
        check_not_elsewhere(key)
        if key not in keys:
            raise key_error(
                ("config", key),
                f"unknown key `model.config.{key}` (not a key of the {init} config)",
                did_you_mean(key, sorted(keys)),
            )
        name = model_types.canonical(init, key)
        if name in seen:
            raise key_error(("config", key), f"`{key}` and `{seen[name]}` are one key of the {init} config: set one")
        seen[name] = key
        value, default = extra.get(key), defaults.get(name)
        if key in extra and not _same_kind(value, default):
            raise key_error(("config", key), f"`model.config.{key}` must be {_KINDS[type(default)]}, like its default {default!r}")


ROUTER_KEYS = ("router_aux_loss_coef", "output_router_logits")
"""Config keys of a mixture of experts' router loss, whose home is `loss.router_aux_loss_coef`."""

_KINDS = {bool: "true or false", int: "a number", float: "a number", str: "a string"}


def _same_kind(value: Any, default: Any) -> bool:
    """Whether a `[model.config]` value has the type of the config's default (any, when the default is unset or not a scalar)."""
    if type(default) not in _KINDS:
        return True
    if type(default) in (int, float):  # integer or float alike: dropout 0 and 0.1 are both numbers
        return type(value) in (int, float)
    return type(value) is type(default)
