"""`[peft]`: parameter-efficient training through the `peft` library.

One model per method, chosen by `method`, so each method's own options are validated and
an option of another method is an unknown key. Unset options take peft's defaults.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from .base import Table, key_error
from .model import LOCAL_PREFIXES

Targets = list[str] | Literal["all-linear"]


class _Method(Table):
    UNMERGEABLE: ClassVar[str | None] = None  # why this method has nothing to merge, if it has not

    save_merged: bool = False
    """Also save the base model with the adapter merged in, as `model_full/` (the adapter itself is always saved as `model/`)."""

    adapter: str | None = None
    """Go on training a saved adapter of this method instead of starting a new one: a directory `save_pretrained` wrote (holding adapter_config.json: a recipec PEFT run's `model/` or the run directory itself, or one from another tool), or a hub id. Its config is what trains: the keys of this table the recipe leaves unset take the adapter's values, and those it sets must equal them (checked at build time for a local adapter and for a hub id in the local Hugging Face cache, else when the script starts). A local adapter's tokenizer, saved beside it, is loaded unless `tokenizer.path` says otherwise."""

    adapter_revision: str | None = None
    """With a hub id in `adapter`: its revision (branch, tag or commit), as `model.revision` is the model's. Pin a commit for reproducible runs. Unset: the default branch."""

    @model_validator(mode="after")
    def check_mergeable(self) -> _Method:
        if self.save_merged and self.UNMERGEABLE:
            raise key_error("save_merged", self.UNMERGEABLE)
        return self

    @model_validator(mode="after")
    def check_adapter_starts_from_its_weights(self) -> _Method:
        if self.adapter is None:
            if self.adapter_revision is not None:
                raise key_error("adapter_revision", "`adapter_revision` is the revision of a hub adapter, and `adapter` is not set")
            return self
        if self.adapter_revision is not None and self.adapter.startswith(LOCAL_PREFIXES):
            raise key_error("adapter_revision", f"`adapter_revision` applies to a hub id, and `adapter` is the local directory {self.adapter!r}")
        if self.adapter.strip() == "":
            raise key_error("adapter", "is empty: name the saved adapter's directory or hub id, or remove the key")
        init = getattr(self, "init", None)
        if "init" in self.model_fields_set and init not in (None, "default", "random"):
            raise key_error("init", f"init {init!r} starts a new adapter; with `adapter` the saved one goes on from its trained weights: remove `init`")
        return self


class _Targeted(_Method):
    target_modules: Targets | None = None
    """Modules to adapt: a list of names (a name matches a module whose name is it or ends in `.<name>`), or "all-linear". Unset: peft's default for the architecture. Checked against the model by `recipec check`."""

    modules_to_save: list[str] | None = None
    """Modules trained in full and saved with the adapter (e.g. ["lm_head"])."""


class LoraTable(_Targeted):
    """`[peft] method = "lora"`: low-rank adapters (with rsLoRA, DoRA, PiSSA/OLoRA init, LoRA+)."""

    method: Literal["lora"]
    """The PEFT method."""

    r: int = Field(8, ge=1)
    """Rank of the update matrices."""

    alpha: float = Field(16, gt=0)
    """Scaling: the update is multiplied by alpha / r (alpha / sqrt(r) with rslora)."""

    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter's input."""

    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases train."""

    rslora: bool = False
    """Rank-stabilised scaling alpha / sqrt(r)."""

    dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""

    init: Literal["default", "gaussian", "pissa", "olora"] = "default"
    """Initialisation of the adapter: peft's default (B = 0), gaussian, or from the weights (PiSSA, OLoRA)."""

    loraplus_lr_ratio: float | None = Field(None, gt=0)
    """LoRA+: the B matrices train with lr * this ratio (e.g. 16), through peft's optimizer helper."""

    quantize: Literal["4bit", "8bit"] | None = None
    """QLoRA: load the base model quantized through bitsandbytes (needs a CUDA GPU; checked when the script starts)."""


class LohaTable(_Targeted):
    """`[peft] method = "loha"`: low-rank Hadamard products."""

    method: Literal["loha"]
    """The PEFT method."""

    r: int = Field(8, ge=1)
    """Rank of the factors."""

    alpha: float = Field(8, gt=0)
    """Scaling alpha / r."""

    rank_dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the rank dimension."""

    module_dropout: float = Field(0.0, ge=0, lt=1)
    """Probability of disabling the adapter of a module for a step."""


class LokrTable(LohaTable):
    """`[peft] method = "lokr"`: low-rank Kronecker products."""

    method: Literal["lokr"]  # type: ignore[assignment]
    """The PEFT method."""

    decompose_both: bool = False
    """Decompose the left Kronecker factor too."""

    decompose_factor: int = -1
    """Kronecker factor size; -1 lets peft choose."""


class Ia3Table(_Targeted):
    """`[peft] method = "ia3"`: learned rescaling vectors (IA3)."""

    method: Literal["ia3"]
    """The PEFT method."""

    feedforward_modules: list[str] | None = None
    """The target modules that are feed-forward layers (their input is scaled, not their output); a subset of target_modules."""


class OftTable(_Targeted):
    """`[peft] method = "oft"`: orthogonal fine-tuning."""

    method: Literal["oft"]
    """The PEFT method."""

    r: int | None = Field(None, ge=1)
    """Number of OFT blocks; give this or `oft_block_size`, not both. Unset (both): blocks of 32."""

    oft_block_size: int | None = Field(None, ge=1)
    """Size of each OFT block; give this or `r`, not both."""

    module_dropout: float = Field(0.0, ge=0, lt=1)
    """Probability of disabling the adapter of a module for a step."""

    coft: bool = False
    """Constrained OFT."""

    block_share: bool = False
    """Share the parameters between blocks."""

    @model_validator(mode="after")
    def check_one_block_setting(self) -> OftTable:
        if self.r is not None and self.oft_block_size is not None:
            raise key_error("oft_block_size", "give OFT's `r` (block count) or `oft_block_size`, not both")
        return self


class BoftTable(_Targeted):
    """`[peft] method = "boft"`: butterfly orthogonal fine-tuning."""

    method: Literal["boft"]
    """The PEFT method."""

    boft_block_size: int | None = Field(None, ge=1)
    """Size of each BOFT block; give this or `boft_block_num`, not both. Unset (both): blocks of 4."""

    boft_block_num: int | None = Field(None, ge=1)
    """Number of BOFT blocks; give this or `boft_block_size`, not both."""

    boft_n_butterfly_factor: int = Field(1, ge=1)
    """Butterfly factors."""

    boft_dropout: float = Field(0.0, ge=0, lt=1)
    """Multiplicative dropout."""

    @model_validator(mode="after")
    def check_one_block_setting(self) -> BoftTable:
        if self.boft_block_size is not None and self.boft_block_num is not None:
            raise key_error("boft_block_num", "give `boft_block_size` or `boft_block_num`, not both")
        return self


class VeraTable(_Targeted):
    """`[peft] method = "vera"`: vector-based random matrix adaptation."""

    method: Literal["vera"]
    """The PEFT method."""

    r: int = Field(256, ge=1)
    """Rank of the shared random matrices."""

    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter's input."""

    d_initial: float = Field(0.1, gt=0)
    """Initial value of the d vectors."""


class AdaloraTable(_Targeted):
    """`[peft] method = "adalora"`: LoRA whose ranks are reallocated while training (budget from init_r to target_r)."""

    method: Literal["adalora"]
    """The PEFT method."""

    init_r: int = Field(12, ge=1)
    """Initial rank of each matrix."""

    target_r: int = Field(8, ge=1)
    """Average rank at the end of the budget schedule."""

    tinit: int = Field(0, ge=0)
    """Steps of full rank before pruning starts."""

    tfinal: int = Field(0, ge=0)
    """Steps at the end with the final ranks fixed."""

    deltaT: int = Field(1, ge=1)
    """Steps between two rank reallocations."""

    orth_reg_weight: float = Field(0.5, ge=0)
    """Weight of the orthogonality regulariser."""

    @model_validator(mode="after")
    def check_ranks(self) -> AdaloraTable:
        if self.target_r > self.init_r:
            raise key_error("target_r", f"target_r {self.target_r} is above init_r {self.init_r}: AdaLoRA only prunes")
        return self

    @model_validator(mode="after")
    def check_no_saved_adapter(self) -> AdaloraTable:
        if self.adapter is not None:
            raise key_error("adapter", "AdaLoRA's rank budget (its importance scores and schedule) is not saved with the adapter, so a saved AdaLoRA adapter cannot go on training; train a new one, or continue from its merged model with [continual]")
        return self


class MissTable(_Targeted):
    """`[peft] method = "miss"`: MiSS (the successor of Bone)."""

    method: Literal["miss"]
    """The PEFT method."""

    r: int = Field(64, ge=1)
    """Rank (the shard size)."""

    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter's input."""


class LnTuningTable(_Targeted):
    """`[peft] method = "ln_tuning"`: train only the normalisation layers."""

    method: Literal["ln_tuning"]
    """The PEFT method."""


class PrefixTuningTable(_Method):
    """`[peft] method = "prefix_tuning"`: trained key/value prefixes in every layer."""

    UNMERGEABLE = "prefix tuning adds no weights to merge into the model"

    method: Literal["prefix_tuning"]
    """The PEFT method."""

    num_virtual_tokens: int = Field(20, ge=1)
    """Length of the prefix."""

    prefix_projection: bool = False
    """Reparameterise the prefix through a two-layer MLP."""

    encoder_hidden_size: int | None = Field(None, ge=1)
    """Hidden size of that MLP. Unset: the model's hidden size."""


class PromptTuningTable(_Method):
    """`[peft] method = "prompt_tuning"`: trained soft-prompt embeddings before the input."""

    UNMERGEABLE = "prompt tuning adds no weights to merge into the model"

    method: Literal["prompt_tuning"]
    """The PEFT method."""

    num_virtual_tokens: int = Field(20, ge=1)
    """Length of the soft prompt."""

    init: Literal["random", "sample_vocab"] = "random"
    """Initialise the soft prompt at random or from the embeddings of tokens sampled from the vocabulary."""


METHOD_TABLES = (
    LoraTable,
    LohaTable,
    LokrTable,
    Ia3Table,
    OftTable,
    BoftTable,
    VeraTable,
    AdaloraTable,
    MissTable,
    LnTuningTable,
    PrefixTuningTable,
    PromptTuningTable,
)

PeftTable = Annotated[
    LoraTable
    | LohaTable
    | LokrTable
    | Ia3Table
    | OftTable
    | BoftTable
    | VeraTable
    | AdaloraTable
    | MissTable
    | LnTuningTable
    | PrefixTuningTable
    | PromptTuningTable,
    Field(discriminator="method"),
]
