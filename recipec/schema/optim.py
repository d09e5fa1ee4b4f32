"""`[optim]`: the optimizer."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from ..runtime import param_patterns
from .base import Table, key_error


class LrScaling(Table):
    """`[optim.scaling]`: derive the peak LR from one that worked at another global batch size."""

    reference_batch: int = Field(ge=1)
    """The global batch size (sequences) at which `reference_lr` was tuned."""

    reference_lr: float = Field(gt=0, le=1)
    """The peak LR tuned at `reference_batch`."""

    rule: Literal["linear", "sqrt", "none"] = "sqrt"
    """How the LR follows the batch: linear (lr grows with B/B0, the SGD rule), sqrt (with sqrt(B/B0), the Adam-family rule) or none."""


NAMED_PARAMS = param_patterns.NAMED
"""The parameter sets a pattern list can name by word instead of by glob."""


def _check_patterns(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        param_patterns.check(pattern)
    return patterns


class _Patterns(Table):
    """`{include = [...], exclude = [...]}`: parameters by name (each subclass says what for)."""

    include: list[str] = Field(["*"], min_length=1)
    exclude: list[str] = []

    @field_validator("include", "exclude")
    @classmethod
    def check_patterns(cls, patterns: list[str]) -> list[str]:
        return _check_patterns(patterns)


class TrainablePatterns(_Patterns):
    """`trainable = {include = [...], exclude = [...]}`: which parameters train; the others keep their starting values."""

    include: list[str] = Field(["*"], min_length=1)
    """Train the parameters that match any of these: fnmatch globs on the names `model.named_parameters()` gives (`*.mlp.*`), embeddings, output, norms, biases, or decoder layers by index: `layers[-2:]` (the last two), `layers[0]`, `layers[:4].mlp.*` (a glob on the name within each layer). Every pattern must match a parameter."""

    exclude: list[str] = []
    """Of those, freeze the ones that match any of these (same forms as `include`)."""


class DecayPatterns(_Patterns):
    """`decay = {include = [...], exclude = [...]}`: weight decay by parameter name."""

    include: list[str] = Field(["*"], min_length=1)
    """Decay the parameters that match any of these: fnmatch globs on the names `model.named_parameters()` gives (`*.q_proj.weight`), embeddings, output, norms, biases, or decoder layers by index (`layers[-2:]`, `layers[:4].mlp.*`)."""

    exclude: list[str] = []
    """Of those, leave out the ones that match any of these (same forms as `include`)."""


class ParamGroup(Table):
    """`[[optim.groups]]`: parameters with their own LR multiplier or weight decay."""

    params: list[str] = Field(min_length=1)
    """Which parameters: fnmatch globs on the names `model.named_parameters()` gives (`*.mlp.*`), embeddings (every nn.Embedding), output (the output layer, lm_head or a reward model's score head, when not tied to the embeddings), norms (every module whose class is a norm), biases, or decoder layers by index (`layers[-2:]`: the last two; `layers[:4].mlp.*`: a glob on the name within each layer). A parameter belongs to the first group it matches; every pattern must match a trainable parameter (`recipec check` and the script check)."""

    lr_scale: float = Field(1.0, gt=0)
    """The group's LR is the optimizer's LR times this, at every step (the schedule scales both). Under Muon it scales each side's own LR."""

    weight_decay: float | None = Field(None, ge=0)
    """The group's weight decay, on every parameter of the group (1-D ones too); unset: the optimizer's, on the parameters `decay` picks."""

    @field_validator("params")
    @classmethod
    def check_patterns(cls, patterns: list[str]) -> list[str]:
        return _check_patterns(patterns)


class _Optimizer(Table):
    name: str
    """The optimizer (each subclass narrows it to its own name)."""

    lr: float = Field(3e-4, gt=0, le=1)
    """Peak learning rate; `[schedule]` scales it step by step. Derived instead when `scaling` is set."""

    scaling: LrScaling | None = None
    """Batch-size scaling, e.g. `scaling = {reference_batch = 256, reference_lr = 3e-4, rule = "sqrt"}`: the peak LR for `train.batch_size` is derived from the reference, and the derivation shows in `explain` and the lock."""

    weight_decay: float = Field(0.1, ge=0)
    """Decoupled weight decay, on the parameters `decay` picks (by default matrices and embeddings, never biases and norm weights)."""

    grad_clip: float = Field(1.0, ge=0)
    """Clip the global gradient norm to this value before each step; 0 turns clipping off."""

    decay: Literal["matrices", "all"] | DecayPatterns = "matrices"
    """Which parameters `weight_decay` applies to: matrices (every parameter with two or more dimensions: matrices and embeddings, never biases and norm weights), all, or by name: `{include = ["*"], exclude = ["biases", "norms", "embeddings"]}`."""

    trainable: Literal["all"] | TrainablePatterns = "all"
    """Which parameters train (without `[peft]`): all, or by name, e.g. `{include = ["layers[-4:]", "norms"]}` (the last four decoder layers and every norm) or `{exclude = ["embeddings"]}`. The others are frozen: no gradient, no optimizer state, their starting values saved. `recipec check` and the script count what trains."""

    step_in_backward: bool = False
    """Step each parameter as soon as the backward pass has finished its gradient, and free that gradient at once (torchtune's optimizer_in_bwd): the whole model's gradients never exist together, only one tensor's, which saves up to a copy of the trainable weights. The update is the same; it needs grad_clip = 0 (nothing can clip a norm not yet known; the script still logs it), one micro-batch per step (grad_accum_steps 1), and one process or strategy "fsdp" version 2."""

    groups: list[ParamGroup] = []
    """`[[optim.groups]]`: parameter groups with their own LR multiplier or weight decay, e.g. `params = ["embeddings"]` with `lr_scale = 0.1`. The rest form the default group. `recipec check` prints each group's parameter count, as the script logs it."""

    @model_validator(mode="after")
    def check_lr_or_scaling(self) -> _Optimizer:
        if self.scaling is not None and "lr" in self.model_fields_set:
            raise key_error("lr", "set `lr` or `scaling`, not both: with scaling the peak LR is derived")
        return self


class _Betas(_Optimizer):
    betas: list[float] = Field([0.9, 0.95], min_length=2, max_length=2)
    """The (beta1, beta2) of the moment averages."""

    @field_validator("betas")
    @classmethod
    def check_betas_below_one(cls, betas: list[float]) -> list[float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError("must hold two values in [0, 1)")
        return betas


class _Adam(_Betas):
    eps: float = Field(1e-8, gt=0)
    """Added to the second moment's root before dividing."""


class AdamwTable(_Adam):
    """`[optim] name = "adamw"` (the default): torch.optim.AdamW."""

    name: Literal["adamw"] = "adamw"
    """The optimizer: adamw (default), muon, adafactor, lion, sgd, schedule_free_adamw, adamw_8bit or paged_adamw_8bit."""

    implementation: Literal["auto", "foreach", "fused", "for-loop"] = "auto"
    """How AdamW runs its update: auto lets torch choose (foreach on GPU), foreach batches the update over all tensors, fused does it in one kernel per device (GPU, and CPU in torch >= 2.4), for-loop one tensor at a time (least memory)."""


class MuonTable(_Optimizer):
    """`[optim] name = "muon"`: torch.optim.Muon on the 2-D hidden matrices, AdamW on embeddings, the output layer, norms and biases."""

    name: Literal["muon"]
    """The optimizer."""

    lr: float = Field(0.02, gt=0, le=1)
    """Peak learning rate of the Muon side (the hidden matrices)."""

    momentum: float = Field(0.95, ge=0, lt=1)
    """Muon's momentum."""

    nesterov: bool = True
    """Nesterov momentum."""

    ns_steps: int = Field(5, ge=1)
    """Newton-Schulz iterations of the orthogonalisation."""

    adjust_lr: Literal["original", "match_rms_adamw"] | None = None
    """How the LR is scaled by the matrix shape: unset keeps torch's default (original), match_rms_adamw makes the update's RMS match AdamW's (so AdamW's LR and decay carry over)."""

    adamw_lr: float = Field(3e-4, gt=0, le=1)
    """Peak learning rate of the AdamW side (embeddings, output layer, norms, biases); the schedule scales both."""

    adamw_betas: list[float] = Field([0.9, 0.95], min_length=2, max_length=2)
    """The AdamW side's (beta1, beta2)."""

    adamw_eps: float = Field(1e-8, gt=0)
    """The AdamW side's epsilon."""


class AdafactorTable(_Optimizer):
    """`[optim] name = "adafactor"`: torch.optim.Adafactor (factored second moments, no first moment)."""

    name: Literal["adafactor"]
    """The optimizer."""

    lr: float = Field(1e-2, gt=0, le=1)
    """Peak learning rate (Adafactor scales its update by the parameter's RMS as well)."""

    weight_decay: float = Field(0.0, ge=0)
    """Decoupled weight decay, on the parameters `decay` picks."""

    beta2_decay: float = Field(-0.8, lt=0)
    """The second moment's decay exponent: beta2 at step t is 1 - t ** beta2_decay."""

    eps: float = Field(1e-3, gt=0)
    """The floor of the parameter's RMS that scales the update."""

    d: float = Field(1.0, gt=0)
    """Clipping threshold of the update's RMS."""


class LionTable(_Betas):
    """`[optim] name = "lion"`: Lion (the lion-pytorch package): the sign of an interpolated momentum."""

    name: Literal["lion"]
    """The optimizer."""

    lr: float = Field(1e-4, gt=0, le=1)
    """Peak learning rate (Lion's is typically 3 to 10 times below AdamW's)."""

    betas: list[float] = Field([0.9, 0.99], min_length=2, max_length=2)
    """Lion's (beta1, beta2): the interpolation of the update, and the momentum's decay."""


class SgdTable(_Optimizer):
    """`[optim] name = "sgd"`: torch.optim.SGD."""

    name: Literal["sgd"]
    """The optimizer."""

    lr: float = Field(0.1, gt=0, le=1)
    """Peak learning rate."""

    weight_decay: float = Field(0.0, ge=0)
    """L2 weight decay (added to the gradient), on the parameters `decay` picks."""

    momentum: float = Field(0.9, ge=0, lt=1)
    """Momentum (0: none)."""

    nesterov: bool = False
    """Nesterov momentum (needs momentum > 0)."""

    @model_validator(mode="after")
    def check_nesterov_has_momentum(self) -> SgdTable:
        if self.nesterov and self.momentum == 0:
            raise key_error("nesterov", "Nesterov momentum needs momentum > 0")
        return self


class ScheduleFreeAdamwTable(_Adam):
    """`[optim] name = "schedule_free_adamw"`: schedule-free AdamW (the schedulefree package): no decay phase; evaluation and saves use the averaged weights."""

    name: Literal["schedule_free_adamw"]
    """The optimizer."""

    lr: float = Field(2.5e-3, gt=0, le=1)
    """Peak learning rate (schedule-free runs well above AdamW's)."""

    betas: list[float] = Field([0.9, 0.999], min_length=2, max_length=2)
    """(beta1, beta2): beta1 interpolates between the averaged and the current point."""

    weight_lr_power: float = Field(2.0, ge=0)
    """How much the average weights later steps by their LR."""


class Adamw8bitTable(_Adam):
    """`[optim] name = "adamw_8bit"`: AdamW with 8-bit moments (bitsandbytes; a CUDA GPU)."""

    name: Literal["adamw_8bit"]
    """The optimizer."""


class PagedAdamw8bitTable(_Adam):
    """`[optim] name = "paged_adamw_8bit"`: 8-bit AdamW whose moments page to CPU memory under pressure (bitsandbytes; a CUDA GPU)."""

    name: Literal["paged_adamw_8bit"]
    """The optimizer."""


OPTIMIZER_TABLES = (
    AdamwTable,
    MuonTable,
    AdafactorTable,
    LionTable,
    SgdTable,
    ScheduleFreeAdamwTable,
    Adamw8bitTable,
    PagedAdamw8bitTable,
)


COMMON = ("name", "lr", "scaling", "weight_decay", "grad_clip", "decay", "trainable", "step_in_backward", "groups")
"""The keys every optimizer has; the rest of a table are its own options."""


def own_options(table: _Optimizer) -> list[str]:
    """The optimizer's own option names, in declaration order (AdamW's `implementation` is the script's `adamw_implementation`)."""
    return [k for k in type(table).model_fields if k not in COMMON and k != "implementation"]


def _optimizer_name(value: Any) -> str:
    """The union's tag: `name`, adamw when the table leaves it out."""
    if isinstance(value, dict):
        return value.get("name", "adamw")
    return getattr(value, "name", "adamw")


OptimTable = Annotated[
    Union[tuple(Annotated[t, Tag(t.model_fields["name"].annotation.__args__[0])] for t in OPTIMIZER_TABLES)],  # noqa: UP007
    Discriminator(_optimizer_name),
]
"""`[optim]`: one model per optimizer, chosen by `name` (adamw when unset)."""
