"""The recipe schema: one pydantic model per TOML table.

Every default is declared once, on its field; every description is the field's
attribute docstring. `Recipe` is the root; `RENAMED` maps keys that other tools (or
older recipec versions) spell differently to the recipec key, so a migrating user gets
"`learning_rate` is `optim.lr` here" instead of a bare "unknown key".
"""

from __future__ import annotations

from pydantic import Field

from .averaging import EmaTable, MergeTable
from .base import Table
from .continual import ContinualTable
from .data import DataTable, HubDataset, Source, SystemMessage
from .filters import (
    FILTER_TABLES,
    ColorFilter,
    DecontaminateFilter,
    ExactDedupFilter,
    Filter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    LengthFilter,
    MinhashDedupFilter,
    PerplexityFilter,
    RegexFilter,
    SampleFilter,
    ScoreFilter,
    ScoreSampleFilter,
)
from .launch import DeepspeedTable, FsdpTable, LaunchTable, ParallelismTable
from .loss import LossTable
from .model import ModelConfig, ModelTable
from .optim import OPTIMIZER_TABLES, AdafactorTable, Adamw8bitTable, AdamwTable, DecayPatterns, LionTable, LrScaling, ParamGroup, MuonTable, OptimTable, PagedAdamw8bitTable, ScheduleFreeAdamwTable, SgdTable, TrainablePatterns
from .output import OutputTable
from .peft import (
    METHOD_TABLES,
    AdaloraTable,
    BoftTable,
    Ia3Table,
    LnTuningTable,
    LohaTable,
    LokrTable,
    LoraTable,
    MissTable,
    OftTable,
    PrefixTuningTable,
    PromptTuningTable,
    VeraTable,
    PeftTable,
)
from .preference import (
    OBJECTIVE_TABLES,
    ApoDownTable,
    ApoZeroUnpairedTable,
    ApoZeroTable,
    AotTable,
    AotUnpairedTable,
    BcoPairTable,
    DiscopopTable,
    DpoNormTable,
    DpoTable,
    ExoPairTable,
    HingeTable,
    IpoTable,
    KtoTable,
    NcaPairTable,
    OrpoTable,
    PreferenceTable,
    RewardTable,
    RobustTable,
    SimpoTable,
    SppoHardTable,
)
from .recipe import RecipeTable
from .schedule import Phase, ScheduleTable
from .tokenizer import TokenizerTable, TokenizerTrain
from .train import TrainTable


class Recipe(Table):
    """A recipec training recipe."""

    recipe: RecipeTable
    """`[recipe]`: name, description, seed."""

    model: ModelTable = Field(default_factory=ModelTable)
    """`[model]`: the model to train."""

    tokenizer: TokenizerTable = Field(default_factory=TokenizerTable)
    """`[tokenizer]`: the tokenizer; unset uses the model's own."""

    data: DataTable
    """`[data]`: sources, sequence length, packing, held-out split."""

    optim: OptimTable = Field(default_factory=AdamwTable)
    """`[optim]`: the optimizer (`name`: adamw, muon, adafactor, lion, sgd, schedule_free_adamw, adamw_8bit, paged_adamw_8bit) and its settings."""

    schedule: ScheduleTable = Field(default_factory=ScheduleTable)
    """`[schedule]`: LR warmup and decay."""

    train: TrainTable
    """`[train]`: batch, length, cadence."""

    loss: LossTable | None = None
    """`[loss]`: chunked cross-entropy; a mixture of experts' router loss."""

    launch: LaunchTable = Field(default_factory=LaunchTable)
    """`[launch]`: processes, machines, strategy (ddp, fsdp, deepspeed), precision, device."""

    output: OutputTable = Field(default_factory=OutputTable)
    """`[output]`: the run directory."""

    continual: ContinualTable | None = None
    """`[continual]`: continue from an earlier recipec run (continual pre-training)."""

    ema: EmaTable | None = None
    """`[ema]`: an exponential moving average of the weights."""

    merge: MergeTable | None = None
    """`[merge]`: checkpoint merging (WSM) over the end of the run."""

    peft: PeftTable | None = None
    """`[peft]`: parameter-efficient training; `method` picks LoRA, LoHa, LoKr, IA3, OFT, BOFT, VeRA, AdaLoRA, MiSS, LN tuning, prefix or prompt tuning."""

    preference: PreferenceTable | None = None
    """`[preference]`: preference training on preference data; `objective` picks DPO, IPO, hinge, robust DPO, BCO, NCA, SPPO, APO, SimPO, ORPO, KTO or a reward model."""


# (table, key) as another tool spells it -> the recipec key, or an explanation.
RENAMED: dict[tuple[str, ...], str] = {
    ("optim", "learning_rate"): "`optim.lr`",
    ("optim", "max_grad_norm"): "`optim.grad_clip`",
    ("optim", "adam_beta1"): "`optim.betas` (a pair)",
    ("optim", "adam_beta2"): "`optim.betas` (a pair)",
    ("optim", "adam_epsilon"): "`optim.eps`",
    ("schedule", "warmup_steps"): "`schedule.warmup` (an integer is a number of steps)",
    ("schedule", "warmup_ratio"): "`schedule.warmup` (a float is a fraction of the run)",
    ("schedule", "lr_scheduler_type"): "`schedule.decay`",
    ("schedule", "min_lr_rate"): "`schedule.min_lr_ratio`",
    ("train", "per_device_train_batch_size"): "`train.micro_batch_size`",
    ("train", "micro_batch"): "`train.micro_batch_size`",
    ("train", "global_batch_size"): "`train.batch_size`",
    ("train", "gradient_accumulation_steps"): "derived from `train.batch_size`, `train.micro_batch_size` and `launch.num_processes`",
    ("train", "num_train_epochs"): "`train.epochs`",
    ("train", "save_steps"): "`train.save_every`",
    ("train", "eval_steps"): "`train.eval_every`",
    ("train", "logging_steps"): "`train.log_every`",
    ("train", "save_total_limit"): "`train.keep_last`",
    ("data", "max_seq_length"): "`data.seq_len`",
    ("data", "sequence_len"): "`data.seq_len`",
    ("data", "sample_packing"): "`data.packing`",
    ("data", "val_set_size"): "`data.eval_fraction`",
    ("model", "torch_dtype"): "`model.dtype`",
    ("model", "base_model"): "`model.path`",
    ("model", "model_name_or_path"): "`model.path`",
    ("launch", "bf16"): '`launch.mixed_precision = "bf16"`',
    ("launch", "fp16"): '`launch.mixed_precision = "fp16"`',
    ("output", "output_dir"): "`output.dir`",
    ("lr_scheduler",): "`[schedule]`",
    ("scheduler",): "`[schedule]`",
    ("training",): "`[train]`",
    ("dataset",): "`[data]`",
    ("datasets",): "`[[data.sources]]`",
}

__all__ = [
    "FILTER_TABLES",
    "Filter",
    *(t.__name__ for t in FILTER_TABLES),
    "OBJECTIVE_TABLES",
    "PreferenceTable",
    *(t.__name__ for t in OBJECTIVE_TABLES),
    "AdaloraTable",
    "BoftTable",
    "ContinualTable",
    "DataTable",
    "HubDataset",
    "SystemMessage",
    "DeepspeedTable",
    "EmaTable",
    "FsdpTable",
    "Ia3Table",
    "LaunchTable",
    "ParallelismTable",
    "LnTuningTable",
    "LossTable",
    "LohaTable",
    "LokrTable",
    "LoraTable",
    "LrScaling",
    "DecayPatterns",
    "ParamGroup",
    "TrainablePatterns",
    "METHOD_TABLES",
    "MergeTable",
    "MissTable",
    "ModelConfig",
    "ModelTable",
    "OftTable",
    "OptimTable",
    "OPTIMIZER_TABLES",
    *(t.__name__ for t in OPTIMIZER_TABLES),
    "OutputTable",
    "PeftTable",
    "Phase",
    "PrefixTuningTable",
    "PromptTuningTable",
    "RENAMED",
    "Recipe",
    "RecipeTable",
    "ScheduleTable",
    "Source",
    "Table",
    "TokenizerTable",
    "TokenizerTrain",
    "TrainTable",
    "VeraTable",
]
