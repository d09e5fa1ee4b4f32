"""`[model]`: a pretrained model to load, or an architecture to initialise from scratch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Table, key_error

ARCHITECTURES = ("llama", "mistral", "qwen2")
LOCAL_PREFIXES = ("./", "../", "/", "~")


class ModelConfig(Table):
    """`[model.config]`: sizes of a model initialised from scratch (`model.init`).

    The vocabulary size is not set here: it is the tokenizer's.
    """

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
        if self.hidden_size % self.num_attention_heads:
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
    """A pretrained model: a hub id (`org/name`) or a local directory. A local directory must start with `./`, `../`, `/` or `~`, and a relative one is relative to the directory `recipec` runs in. Exactly one of `path` and `init`."""

    init: Literal["llama", "mistral", "qwen2"] | None = None
    """Initialise a new model of this architecture from `[model.config]` instead of loading weights. Exactly one of `path` and `init`."""

    config: ModelConfig = Field(default_factory=ModelConfig)
    """Sizes of the from-scratch model (only with `init`)."""

    revision: str | None = None
    """Hub revision (branch, tag or commit) of `path`. Pin a commit for reproducible runs."""

    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """dtype the weights are loaded or initialised in. Keep float32 and use `launch.mixed_precision` for mixed-precision training."""

    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""

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
        if self.path is not None and "config" in self.model_fields_set:
            raise key_error(
                "config",
                "[model.config] applies only to a from-scratch model (`init`)",
                "a pretrained model brings its own config; remove [model.config]",
            )
        return self

    @property
    def is_local(self) -> bool:
        """Whether `path` names a local directory rather than a hub id."""
        return self.path is not None and self.path.startswith(LOCAL_PREFIXES)
