"""`recipec import --from torchtune`: a torchtune recipe config (OmegaConf YAML) as a recipe.

A torchtune config names its parts as `_component_` tables (model, tokenizer, checkpointer,
dataset, optimizer, lr_scheduler, loss, metric_logger, profiler) beside the recipe's own
top-level keys. The config does not say which recipe runs it (`tune run <recipe> --config`):
it is read as the one its parts imply, the recipes of torchtune 0.6.1 read here:

- a `DPOLoss` or `RSOLoss` makes it a DPO recipe (`lora_dpo_*` with a `lora_*` model builder,
  else `full_dpo_distributed`); otherwise a `lora_*`/`qlora_*` builder makes it
  `lora_finetune_*`, and anything else `full_finetune_*`;
- `--num-processes` above 1, or a key only the distributed recipes read (`fsdp_cpu_offload`,
  `custom_sharded_layers`, ...), makes it the `*_distributed` variant: FSDP2 in recipec.

The recipes' own defaults (`cfg.get(key, default)`) and those of the components'
signatures are written for what the file leaves out; a key the implied recipe never reads
is dropped as ignored by the tool, with a warning.
"""

from __future__ import annotations

import math
import re
from posixpath import basename, normpath
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .core import Draft, Legacy, OldValue, Removed, num

if TYPE_CHECKING:
    from . import Options

VERSION = "torchtune 0.6.1"

# -- the keys torchtune knows ------------------------------------------------------------

_TOP = (
    # read by the recipes (full_finetune_*, lora_finetune_*, lora_dpo_*, full_dpo_distributed)
    "output_dir",
    "batch_size",
    "epochs",
    "max_steps_per_epoch",
    "gradient_accumulation_steps",
    "clip_grad_norm",
    "optimizer_in_bwd",
    "compile",
    "device",
    "dtype",
    "seed",
    "shuffle",
    "resume_from_checkpoint",
    "enable_activation_checkpointing",
    "enable_activation_offloading",
    "log_every_n_steps",
    "log_peak_memory_stats",
    "collate_fn",
    "cudnn_deterministic_mode",
    "save_adapter_weights_only",
    "low_cpu_ram",
    "custom_sharded_layers",
    "fsdp_cpu_offload",
    "fsdp_reshard_after_forward",
    "ac_mode",
    "ac_option",
    "tensor_parallel_dim",
    "tensor_parallel_plan",
    "tensor_parallel_plan._component_",
    "enable_async_checkpointing",
)

_MODEL = (
    "_component_",
    "lora_attn_modules",
    "apply_lora_to_mlp",
    "apply_lora_to_output",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "use_dora",
    "quantize_base",
    "tie_word_embeddings",
)
_TOKENIZER = ("_component_", "path", "merges_file", "special_tokens_path", "max_seq_len", "prompt_template")
_CHECKPOINTER = (
    "_component_",
    "checkpoint_dir",
    "checkpoint_files",
    "checkpoint_files.filename_format",
    "checkpoint_files.max_filename",
    "model_type",
    "output_dir",
    "adapter_checkpoint",
    "recipe_checkpoint",
    "resume_from_checkpoint",
    "safe_serialization",
    "should_load_recipe_state",
)
_LOAD_DATASET = (
    "name",
    "data_dir",
    "data_files",
    "data_files.*",
    "revision",
    "cache_dir",
    "token",
    "trust_remote_code",
    "num_proc",
    "keep_in_memory",
    "verification_mode",
)
"""`load_dataset` keyword arguments, which the dataset builders pass on (`**load_dataset_kwargs`)."""
_DATASET = (
    "_component_",
    "source",
    "split",
    "column_map.*",
    "column",
    "conversation_column",
    "conversation_style",
    "train_on_input",
    "new_system_prompt",
    "packed",
    "split_across_pack",
    "add_eos",
    "filter_fn",
    *_LOAD_DATASET,
)
_OPTIMIZER = (
    "_component_",
    "lr",
    "weight_decay",
    "betas",
    "eps",
    "fused",
    "foreach",
    "amsgrad",
    "maximize",
    "capturable",
    "differentiable",
    "momentum",
    "dampening",
    "nesterov",
    "optim_bits",
    "min_8bit_size",
    "percentile_clipping",
    "block_wise",
    "is_paged",
)
_SCHEDULER = ("_component_", "num_warmup_steps", "num_cycles")
_LOSS = ("_component_", "num_output_chunks", "ignore_index", "beta", "label_smoothing", "gamma")

KNOWN = (
    *_TOP,
    *(f"model.{k}" for k in _MODEL),
    *(f"tokenizer.{k}" for k in _TOKENIZER),
    *(f"checkpointer.{k}" for k in _CHECKPOINTER),
    *(f"ref_checkpointer.{k}" for k in _CHECKPOINTER),
    *(f"dataset.{k}" for k in _DATASET),
    *(f"dataset[*].{k}" for k in _DATASET),
    *(f"optimizer.{k}" for k in _OPTIMIZER),
    *(f"lr_scheduler.{k}" for k in _SCHEDULER),
    *(f"loss.{k}" for k in _LOSS),
    "metric_logger.*",
    "profiler.*",
)

MARKERS = (
    "checkpointer",
    "metric_logger",
    "max_steps_per_epoch",
    "enable_activation_checkpointing",
    "enable_activation_offloading",
    "optimizer_in_bwd",
    "clip_grad_norm",
    "log_every_n_steps",
    "log_peak_memory_stats",
    "lr_scheduler._component_",
)

# -- keys and components of older torchtune releases -----------------------------------------

MOVED: dict[str, tuple[str, str]] = {
    # a component path of an older release -> (the first release without it, today's path)
    **{
        f"torchtune.utils.{name}": ("0.3.0", f"torchtune.training.{name}")
        for name in ("FullModelHFCheckpointer", "FullModelMetaCheckpointer", "FullModelTorchTuneCheckpointer")
    },
    **{
        f"torchtune.utils.metric_logging.{name}": ("0.3.0", f"torchtune.training.metric_logging.{name}")
        for name in ("DiskLogger", "StdoutLogger", "WandBLogger", "TensorBoardLogger")
    },
    "torchtune.modules.loss.DPOLoss": ("0.3.0", "torchtune.rlhf.loss.DPOLoss"),
    "torchtune.modules.rlhf.loss.DPOLoss": ("0.3.1", "torchtune.rlhf.loss.DPOLoss"),
    "torchtune.modules.rlhf.loss.RSOLoss": ("0.3.1", "torchtune.rlhf.loss.RSOLoss"),
    "torchtune.datasets.stack_exchanged_paired_dataset": ("0.3.0", "torchtune.datasets.stack_exchange_paired_dataset"),
    "torchtune.modules.get_cosine_schedule_with_warmup": ("0.5.0", "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup"),
}
"""Components that moved: torchtune 0.6.1's `config.instantiate` cannot import the old path
(torchtune/utils, torchtune/modules of 0.6.1 have none of them), so it refuses the config."""


_COMPONENTS = ("checkpointer", "ref_checkpointer", "metric_logger", "loss", "lr_scheduler", "dataset", "dataset[*]")

LEGACY: dict[str, Legacy] = {
    # the builders lost max_seq_len when the tokenizer took it (0.3.0): 0.6.1's pass an unknown
    # keyword on to datasets.load_dataset, which refuses it
    "dataset.max_seq_len": Removed("torchtune 0.3.0", "`tokenizer.max_seq_len`"),
    "dataset[*].max_seq_len": Removed("torchtune 0.3.0", "`tokenizer.max_seq_len`"),
    # DPOLoss(loss_type=...) of 0.1 and 0.2: 0.3.0 made each loss a class (RSOLoss for "hinge")
    "loss.loss_type": Removed("torchtune 0.3.0", "a loss class of its own (`torchtune.rlhf.loss.RSOLoss` for hinge)"),
    # read by full_finetune_distributed 0.2 only (FSDP1 wrapping); 0.6.1's recipes never read it
    "memory_efficient_fsdp_wrap": Removed("torchtune 0.3.0", "FSDP2's per-layer sharding", refused=None),
}
"""Keys of torchtune's older releases (recipes/ and torchtune/ of each tag) and what 0.6.1 does
with them."""

LEGACY_VALUES: dict[str, tuple[OldValue, ...]] = {
    **{
        f"{c}._component_": tuple(OldValue(old, f"torchtune {since}", by=f"`{new}`") for old, (since, new) in MOVED.items())
        for c in _COMPONENTS
    },
    # ModelType.MISTRAL_REWARD became REWARD (commit 5a921351, "Generalizing reward models"); 0.6.1's
    # checkpointers look the name up (`ModelType[model_type]`) and fail on it
    **{f"{c}.model_type": (OldValue("MISTRAL_REWARD", "torchtune 0.3.0", by="`model_type: REWARD`"),) for c in ("checkpointer", "ref_checkpointer")},
}
"""Component paths and checkpointer model types of torchtune's older releases: 0.6.1 refuses
them."""

# -- what each recipe reads ----------------------------------------------------------------

_COMMON = {
    "batch_size", "checkpointer", "dataset", "device", "dtype", "epochs", "gradient_accumulation_steps",
    "log_every_n_steps", "log_peak_memory_stats", "loss", "lr_scheduler", "max_steps_per_epoch",
    "metric_logger", "model", "optimizer", "output_dir", "resume_from_checkpoint", "seed", "shuffle",
    "tokenizer", "cudnn_deterministic_mode", "enable_activation_checkpointing", "enable_activation_offloading",
}  # fmt: skip
_DIST = {"custom_sharded_layers", "fsdp_cpu_offload", "fsdp_reshard_after_forward"}
READS: dict[str, set[str]] = {
    "full_finetune_single_device": _COMMON | {"clip_grad_norm", "collate_fn", "compile", "optimizer_in_bwd", "profiler"},
    "full_finetune_distributed": _COMMON | _DIST | {
        "clip_grad_norm", "collate_fn", "compile", "optimizer_in_bwd", "profiler", "ac_mode", "ac_option",
        "enable_async_checkpointing", "tensor_parallel_dim", "tensor_parallel_plan",
    },  # fmt: skip
    "lora_finetune_single_device": _COMMON | {"clip_grad_norm", "collate_fn", "compile", "profiler", "low_cpu_ram", "save_adapter_weights_only"},
    "lora_finetune_distributed": _COMMON | _DIST | {"clip_grad_norm", "collate_fn", "compile", "profiler", "save_adapter_weights_only"},
    "lora_dpo_single_device": _COMMON | {"compile", "save_adapter_weights_only"},
    "lora_dpo_distributed": _COMMON | _DIST | {"save_adapter_weights_only"},
    "full_dpo_distributed": _COMMON | _DIST | {"clip_grad_norm", "compile", "optimizer_in_bwd", "profiler", "ref_checkpointer"},
}
"""The top-level keys each recipe of torchtune 0.6.1 reads (`cfg.key`, `cfg.get("key", ...)`)."""

_DIST_ONLY = _DIST | {"ac_mode", "ac_option", "enable_async_checkpointing", "tensor_parallel_dim", "tensor_parallel_plan"}

_OPTIONAL_SCHEDULER = {"full_finetune_single_device", "full_finetune_distributed", "lora_dpo_single_device"}
"""Recipes that read `cfg.get("lr_scheduler", None)` (constant LR without one); the others require it."""

# -- models ----------------------------------------------------------------------------------

_CONTEXT = {
    "llama3_2": 131072,
    "llama3_1": 131072,
    "llama3_3": 131072,
    "llama3": 8192,
    "llama2": 4096,
    "qwen2_5": 32768,
    "qwen2": 32768,
    "mistral": 32768,
    "gemma": 8192,
    "gemma2": 8192,
    "phi3": 4096,
}
"""Context length of each builder family (the builders' `max_seq_len`): the bound used for data.seq_len when the tokenizer's max_seq_len is null."""

_HUB_NAMES = (
    (re.compile(r"^(Meta-)?Llama-(2|3|3\.[123])-\d+B(-Instruct|-chat-hf|-hf)?$"), "meta-llama"),
    (re.compile(r"^Qwen2(\.5)?-[\d.]+B(-Instruct)?$"), "Qwen"),
)
"""Directory names `tune download <org>/<name> --output-dir /tmp/<name>` writes, as the shipped configs use them."""

_LORA_MODULES = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "output_proj": "o_proj"}
_MLP_MODULES = ["gate_proj", "up_proj", "down_proj"]

_OPTIMIZERS = {
    # component: (recipec name, approx note, default lr, default weight_decay)
    "torch.optim.AdamW": ("adamw", "", 1e-3, 1e-2),
    "torch.optim.Adam": ("adamw", "torch.optim.Adam adds weight decay to the gradient (L2); recipec's AdamW decouples it", 1e-3, 0.0),
    "bitsandbytes.optim.AdamW8bit": ("adamw_8bit", "", 1e-3, 1e-2),
    "bitsandbytes.optim.PagedAdamW8bit": ("paged_adamw_8bit", "", 1e-3, 1e-2),
    "bitsandbytes.optim.PagedAdamW": ("adamw", "bitsandbytes' paged AdamW keeps 32-bit states in paged memory; recipec's AdamW keeps them on the device", 1e-3, 1e-2),
    "torch.optim.SGD": ("sgd", "", 1e-3, 0.0),
}

_CROSS_ENTROPY = ("torchtune.modules.loss.CEWithChunkedOutputLoss", "torch.nn.CrossEntropyLoss")
_PREFERENCE_LOSSES = ("torchtune.rlhf.loss.DPOLoss", "torchtune.rlhf.loss.RSOLoss")

_LOCAL_BUILDERS = {"json": "jsonl", "text": "text", "parquet": "parquet", "arrow": "arrow"}
"""load_dataset's packaged builders that read local files, and recipec's format for them."""


# -- helpers ---------------------------------------------------------------------------------


def _resolve(draft: Draft, value: Any, depth: int = 0) -> Any:
    """OmegaConf's `${key}` interpolations of a string value, resolved against the file."""
    if not isinstance(value, str) or "${" not in value or depth > 10:
        return value

    def sub(m: re.Match[str]) -> str:
        ref = draft.get(m.group(1))
        return str(_resolve(draft, ref, depth + 1)) if ref is not None else m.group(0)

    whole = re.fullmatch(r"\$\{([A-Za-z0-9_.\[\]]+)\}", value)
    if whole:
        ref = draft.get(whole.group(1))
        return _resolve(draft, ref, depth + 1) if ref is not None else value
    return re.sub(r"\$\{([A-Za-z0-9_.\[\]]+)\}", sub, value)


def _v(draft: Draft, key: str, default: Any = None) -> Any:
    return _resolve(draft, draft.get(key, default)) if draft.has(key) else default


def _short(component: Any) -> str:
    return str(component).rsplit(".", 1)[-1] if component else ""


def _family(component: str) -> str:
    m = re.match(r"torchtune\.models\.([a-z0-9_]+)\.", component or "")
    return m.group(1) if m else ""


def _recipe_of(draft: Draft, options: Options) -> str:
    builder = _short(draft.get("model._component_"))
    lora = builder.startswith(("lora_", "qlora_"))
    dpo = draft.get("loss._component_") in _PREFERENCE_LOSSES
    distributed = options.num_processes > 1 or any(draft.has(k) for k in _DIST_ONLY) or draft.has("ref_checkpointer")
    if dpo:
        if not lora:
            return "full_dpo_distributed"
        return "lora_dpo_distributed" if distributed else "lora_dpo_single_device"
    kind = "lora_finetune" if lora else "full_finetune"
    return f"{kind}_{'distributed' if distributed else 'single_device'}"


def _drop_ignored(draft: Draft, recipe: str) -> None:
    reads = READS[recipe]
    for key in list(draft.config.data):
        if key not in reads and key in {k.split(".")[0].split("[")[0] for k in KNOWN}:
            draft.drop(key, "ignored-by-tool", f"{recipe}, the recipe this config runs, never reads `{key}`.")
            draft.warn(f"`{key}` is set, but {recipe} (the recipe this config implies) never reads it: it has no effect.", key)


def _hub_id(directory: str) -> str | None:
    name = basename(normpath(directory))
    for pattern, org in _HUB_NAMES:
        if pattern.match(name):
            return f"{org}/{name}"
    return None


# -- the conversion ----------------------------------------------------------------------------


def convert(draft: Draft, options: Options) -> None:
    recipe = _recipe_of(draft, options)
    draft.note(
        f"Read as a config of torchtune's `{recipe}` recipe (the config does not name its recipe; "
        "this one follows from its model builder, its loss and the number of processes)."
    )
    _drop_ignored(draft, recipe)
    reads = READS[recipe]
    distributed = recipe.endswith("_distributed")
    lora = recipe.startswith("lora_")
    dpo = "dpo" in recipe

    _model(draft, recipe)
    _checkpointer(draft, recipe)
    _tokenizer(draft)
    _data(draft, dpo)
    _optimizer(draft, recipe, reads)
    _schedule(draft, recipe)
    _train(draft, options, recipe)
    _loss(draft, recipe, distributed, lora)
    _launch(draft, options, recipe, distributed)
    _mesh(draft, options, recipe)
    _logging(draft, reads)


def _model(draft: Draft, recipe: str) -> None:
    comp = draft.get("model._component_")
    builder = _short(comp)
    draft.exact("model._component_")  # the architecture is the checkpoint's (config.json of model.path)
    if draft.has("model.tie_word_embeddings"):
        if draft.get("model.tie_word_embeddings") is True:
            draft.exact("model.tie_word_embeddings")
        else:
            draft.drop("model.tie_word_embeddings", "no-equivalent", "recipec follows the checkpoint's config.json, which ties them for this model.")
    lora_keys = [k for k in _MODEL if k not in ("_component_", "tie_word_embeddings")]
    if not builder.startswith(("lora_", "qlora_")):
        for k in lora_keys:
            if draft.has(f"model.{k}"):
                draft.drop(f"model.{k}", "ignored-by-tool", f"{builder} is not a LoRA builder and takes no `{k}`.")
                draft.warn(f"`model.{k}` is set, but {builder} is not a LoRA builder: it has no effect.", f"model.{k}")
        return
    draft.set("peft.method", "lora", "model._component_")
    targets = [_LORA_MODULES.get(m, m) for m in (draft.get("model.lora_attn_modules") or [])]
    keys = ["model.lora_attn_modules"]
    for k, extra, default in (("apply_lora_to_mlp", _MLP_MODULES, False), ("apply_lora_to_output", ["lm_head"], False)):
        if draft.has(f"model.{k}"):
            keys.append(f"model.{k}")
            if draft.get(f"model.{k}"):
                targets += extra
        else:
            draft.defaults.append((f"model.{k}", f"{default}: no LoRA on {'the MLP' if 'mlp' in k else 'the output projection'}"))
    draft.set("peft.target_modules", targets, *keys)
    for key, target, default in (("lora_rank", "peft.r", 8), ("lora_alpha", "peft.alpha", 16.0), ("lora_dropout", "peft.dropout", 0.0)):
        if draft.has(f"model.{key}"):
            draft.set(target, num(draft.get(f"model.{key}")), f"model.{key}")
        else:
            draft.default(target, default, f"model.{key}", f"{target} = {default} ({builder}'s default)")
    if draft.get("model.use_dora"):
        draft.set("peft.dora", True, "model.use_dora")
    elif draft.has("model.use_dora"):
        draft.exact("model.use_dora")
    quantized = builder.startswith("qlora_") or bool(draft.get("model.quantize_base"))
    if quantized:
        src = ["model.quantize_base"] if draft.has("model.quantize_base") else ["model._component_"]
        draft.set(
            "peft.quantize",
            "4bit",
            *src,
            approx="torchtune quantizes the base weights to NF4 with torchao (blocks of 64, the scales quantized too); "
            "recipec with bitsandbytes' nf4",
        )
    elif draft.has("model.quantize_base"):
        draft.exact("model.quantize_base")
    if "save_adapter_weights_only" in READS[recipe]:
        if draft.has("save_adapter_weights_only"):
            draft.set("peft.save_merged", not bool(draft.get("save_adapter_weights_only")), "save_adapter_weights_only")
        else:
            draft.default("peft.save_merged", True, "save_adapter_weights_only", "False: the merged model is saved beside the adapter")


def _checkpointer(draft: Draft, recipe: str) -> None:
    comp = _short(draft.get("checkpointer._component_"))
    directory = _v(draft, "checkpointer.checkpoint_dir")
    if directory:
        hub = _hub_id(str(directory))
        hf = comp == "FullModelHFCheckpointer"
        if hub and hf:
            draft.set(
                "model.path",
                hub,
                "checkpointer.checkpoint_dir",
                approx=f"{directory} is where `tune download {hub}` puts that hub model; the recipe loads it by its hub id",
            )
        elif hf:
            draft.set("model.path", str(directory), "checkpointer.checkpoint_dir")
        else:
            draft.set(
                "model.path",
                str(directory),
                "checkpointer.checkpoint_dir",
                approx=f"a {comp} checkpoint is not in the Hugging Face format that recipec loads: convert it first",
            )
        draft.exact("checkpointer._component_", "checkpointer.model_type")
    files = draft.get("checkpointer.checkpoint_files")
    if draft.has("checkpointer.checkpoint_files"):
        if _whole_model(files):
            draft.exact("checkpointer.checkpoint_files")
        else:
            draft.approx("recipec loads every weight file of model.path, not a chosen subset", "checkpointer.checkpoint_files")
    out = _v(draft, "checkpointer.output_dir")
    top = _v(draft, "output_dir")
    if out:
        draft.set("output.dir", str(out), "checkpointer.output_dir")
        if top is not None:
            if str(top) == str(out):
                draft.exact("output_dir")
            else:
                draft.drop("output_dir", "not-for-training", "the logs' directory; the checkpoints go to checkpointer.output_dir.")
    elif top:
        draft.set("output.dir", str(top), "output_dir")
    resume = bool(draft.get("resume_from_checkpoint")) or bool(draft.get("checkpointer.resume_from_checkpoint"))
    for key in ("resume_from_checkpoint", "checkpointer.resume_from_checkpoint", "checkpointer.should_load_recipe_state"):
        if not draft.has(key):
            continue
        if draft.get(key):
            draft.drop(key, "missing-feature", "recipec resumes from its own checkpoints (`recipec run` picks up the run directory's last one), not from a torchtune checkpoint.")
        else:
            draft.exact(key)
    for key in ("checkpointer.recipe_checkpoint", "checkpointer.adapter_checkpoint"):
        if not draft.has(key):
            continue
        if draft.get(key) is None:
            draft.exact(key)
        elif not resume:
            draft.drop(key, "ignored-by-tool", "read only when resuming, and resume_from_checkpoint is False.")
            draft.warn(f"`{key}` is set, but resume_from_checkpoint is False: torchtune does not read it.", key)
        else:
            draft.drop(key, "missing-feature", "a torchtune checkpoint to resume from.")
    if draft.has("checkpointer.safe_serialization"):
        draft.drop("checkpointer.safe_serialization", "not-for-training", "the file format of the saved weights.")
    if draft.has("ref_checkpointer"):
        same = _v(draft, "ref_checkpointer.checkpoint_dir") == directory
        for key in draft.keys_under("ref_checkpointer"):
            if same:
                draft.exact(key)
            else:
                draft.drop(key, "missing-feature", "recipec's DPO reference is the starting model itself; a reference from another checkpoint is not supported.")
        if not same:
            draft.warn("ref_checkpointer names another checkpoint than checkpointer: recipec's reference is the starting model.", "ref_checkpointer")


def _whole_model(files: Any) -> bool:
    if isinstance(files, dict):
        return True  # {filename_format, max_filename}: every shard
    if not isinstance(files, list) or not files:
        return False
    names = [basename(str(f)) for f in files]
    if names in (["model.safetensors"], ["pytorch_model.bin"]):
        return True
    m = [re.fullmatch(r"(.*)-(\d+)-of-(\d+)\.(safetensors|bin)", n) for n in names]
    if all(m):
        total = {int(x.group(3)) for x in m if x}
        parts = {int(x.group(2)) for x in m if x}
        return len(total) == 1 and parts == set(range(1, next(iter(total)) + 1))
    return False


_CHATML_TAGS = {
    "system": ("<|im_start|>system\n", "<|im_end|>\n"),
    "user": ("<|im_start|>user\n", "<|im_end|>\n"),
    "assistant": ("<|im_start|>assistant\n", "<|im_end|>\n"),
}

PROMPT_TEMPLATES: dict[str, dict[str, tuple[str, str]]] = {
    # torchtune 0.6.1's prompt templates (torchtune/data/_prompt_templates.py): role -> (tag
    # before the message, tag after it)
    "torchtune.data.GrammarErrorCorrectionTemplate": {"user": ("Correct this to standard English: ", "\n---\nCorrected: ")},
    "torchtune.data.SummarizeTemplate": {"user": ("Summarize this dialogue:\n", "\n---\nSummary:\n")},
    "torchtune.data.QuestionAnswerTemplate": {"user": ("Question: ", "\n\nAnswer: ")},
    "torchtune.data.ChatMLTemplate": _CHATML_TAGS,  # as text, around the tokenizer's own markers
}
"""The prompt templates written into the chat template (as their tags)."""

CHAT_FORMATS = ("llama3_tokenizer", "qwen2_tokenizer", "qwen2_5_tokenizer")
"""The model tokenizers whose own formatting of the turns (`tokenize_messages`) is written out
as the chat template: torchtune/models/llama3/_tokenizer.py, qwen2/_tokenizer.py and
qwen2_5/_tokenizer.py of torchtune 0.6.1."""


def _lit(text: str) -> str:
    """A jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def chat_format(tokenizer: str, tags: dict[str, tuple[str, str]] | None = None) -> str:
    """A torchtune model tokenizer's formatting of the turns as a jinja chat template.

    What the loss sees is inside `{% generation %}`: the whole assistant message, its header
    and end tokens included, as torchtune masks by message. The final end-of-text token
    (llama3: `<|end_of_text|>`, masked; qwen: `<|im_end|>`, with the last message's mask)
    closes the conversation.

    Args:
        tokenizer: one of :data:`CHAT_FORMATS`.
        tags: a prompt template's tags, role -> (before, after); llama3's tokenizer strips each
            piece of text (tag or message) of its surrounding white space, qwen's does not.
    """
    llama = tokenizer == "llama3_tokenizer"
    strip = " | trim" if llama else ""
    tags = {("ipython" if role == "tool" else role): tuple(t) for role, t in (tags or {}).items()}

    def text(role: str) -> str:
        before, after = tags.get(role, ("", ""))
        pieces = [_lit(before.strip() if llama else before)] if before else []
        pieces.append("message['content']" + strip)
        pieces += [_lit(after.strip() if llama else after)] if after else []
        return " + ".join(pieces)

    lines = ["{{- '<|begin_of_text|>' -}}"] if llama else []
    lines.append("{%- for message in messages -%}")
    if llama:
        lines += [
            "{%- if message['role'] == 'assistant' -%}",
            "{%- generation -%}",
            "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' + " + text("assistant") + " + '<|eot_id|>' -}}",
            "{%- endgeneration -%}",
        ]
        for role in ("system", "user", "tool"):
            name = "ipython" if role == "tool" else role
            lines += [
                "{%- elif message['role'] == " + _lit(role) + " -%}",
                "{{- '<|start_header_id|>" + name + "<|end_header_id|>\\n\\n' + " + text(name) + " + '<|eot_id|>' -}}",
            ]
        lines += ["{%- else -%}", "{{- raise_exception('torchtune has no turn of role ' + message['role']) -}}", "{%- endif -%}",
                  "{%- endfor -%}", "{{- '<|end_of_text|>' -}}"]
        return "\n".join(lines)
    lines += [
        "{%- if message['role'] == 'assistant' -%}",
        "{%- generation -%}",
        "{{- '<|im_start|>assistant\\n' + " + text("assistant") + " + '<|im_end|>' -}}",
        "{%- if not loop.last -%}{{- '\\n' -}}{%- endif -%}",
        "{%- endgeneration -%}",
        "{%- elif message['role'] in ('system', 'user') -%}",
    ]
    if tags.get("system") or tags.get("user"):
        lines.append("{%- set body = message['content'] -%}")
        for role in ("system", "user"):
            if tags.get(role):
                lines.append("{%- if message['role'] == " + _lit(role) + " -%}{%- set body = " + text(role) + " -%}{%- endif -%}")
        lines.append("{{- '<|im_start|>' + message['role'] + '\\n' + body + '<|im_end|>\\n' -}}")
    else:
        lines.append("{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}")
    lines.append("{%- elif message['role'] == 'tool' -%}")
    if tokenizer == "qwen2_5_tokenizer":  # tool results inside a user turn, one <tool_response> each
        lines += [
            "{%- if loop.first or loop.previtem['role'] != 'tool' -%}{{- '<|im_start|>user\\n<tool_response>\\n' -}}",
            "{%- else -%}{{- '\\n<tool_response>\\n' -}}{%- endif -%}",
            "{{- " + text("ipython") + " + '\\n</tool_response>' -}}",
            "{%- if loop.last or loop.nextitem['role'] != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}",
        ]
    else:  # qwen2: the result alone
        lines.append("{{- " + text("ipython") + " -}}")
    lines += [
        "{%- else -%}", "{{- raise_exception('torchtune has no turn of role ' + message['role']) -}}", "{%- endif -%}",
        "{%- endfor -%}",
        "{%- if not messages or messages[-1]['role'] != 'assistant' -%}{{- '<|im_end|>' -}}{%- endif -%}",
    ]
    return "\n".join(lines)


def _tokenizer(draft: Draft) -> None:
    comp = draft.get("tokenizer._component_")
    directory = str(_v(draft, "checkpointer.checkpoint_dir") or "")
    path = str(_v(draft, "tokenizer.path") or "")
    if comp:
        draft.exact("tokenizer._component_")
    text_only = all(
        _short(draft.get(f"{p}._component_")) == "text_completion_dataset"
        for p in ([f"dataset[{i}]" for i in range(len(draft.get("dataset")))] if isinstance(draft.get("dataset"), list) else ["dataset"])
    )
    formats = _short(comp) in CHAT_FORMATS and not text_only
    if path:
        if directory and normpath(path).startswith(normpath(directory) + "/") and (text_only or formats):
            draft.exact("tokenizer.path")  # the same vocabulary, from the Hugging Face files of model.path
        elif directory and normpath(path).startswith(normpath(directory) + "/"):
            draft.approx(
                "recipec loads the Hugging Face tokenizer and chat template of model.path: the same vocabulary, but the "
                f"turns are rendered by the chat template, while {_short(comp) or 'the tokenizer'} formats them itself "
                "(the same header tokens, no default system prompt; Llama 3.1/3.2's template adds one)",
                "tokenizer.path",
            )
        else:
            draft.drop("tokenizer.path", "missing-feature", "recipec loads a Hugging Face tokenizer directory, not a tokenizer model file outside the checkpoint.")
    merges = str(_v(draft, "tokenizer.merges_file") or "")
    if merges:  # Qwen's BPE merges, beside vocab.json in the checkpoint
        if directory and normpath(merges).startswith(normpath(directory) + "/"):
            draft.exact("tokenizer.merges_file")
        else:
            draft.drop("tokenizer.merges_file", "missing-feature", "recipec loads a Hugging Face tokenizer directory, not tokenizer files outside the checkpoint.")
    tags = None
    if formats:
        tags = _prompt_tags(draft, _short(comp))
        keys = ["tokenizer._component_"] + (["tokenizer.prompt_template"] if tags else [])
        approx = None
        if tags:
            approx = (
                "torchtune tokenizes the prompt template's tags apart from the message text"
                + (", each stripped of its white space" if _short(comp) == "llama3_tokenizer" else "")
                + "; recipec tokenizes the rendered text, the same text, whose tokens can differ where a tag meets the message"
            )
        draft.set("tokenizer.chat_template", chat_format(_short(comp), tags), *keys, approx=approx,
                  note=f"torchtune's {_short(comp)} formatting of the turns")
    for key in ("tokenizer.special_tokens_path", "tokenizer.prompt_template"):
        if draft.has(key) and not (key == "tokenizer.prompt_template" and tags):
            if draft.get(key) is None:
                draft.exact(key)
            else:
                draft.drop(key, "missing-feature", "torchtune's own prompt formatting; recipec renders turns with a chat template (tokenizer.chat_template).")


def _prompt_tags(draft: Draft, tokenizer: str) -> dict[str, tuple[str, str]] | None:
    """The tags of the tokenizer's `prompt_template`, when it is one recipec can write."""
    template = _v(draft, "tokenizer.prompt_template")
    if isinstance(template, str):
        if tokenizer != "llama3_tokenizer" and _short(template) == "ChatMLTemplate":
            return None  # torchtune's Qwen tokenizers refuse it
        return PROMPT_TEMPLATES.get(template) or PROMPT_TEMPLATES.get("torchtune.data." + _short(template))
    if isinstance(template, Mapping) and template and all(
        isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, str) for x in v) for v in template.values()
    ):
        return {str(role): (v[0], v[1]) for role, v in template.items()}
    return None


def _data(draft: Draft, dpo: bool) -> None:
    cfg = draft.get("dataset")
    entries = [f"dataset[{i}]" for i in range(len(cfg))] if isinstance(cfg, list) else ["dataset"]
    packed_any = False
    packed_keys = []
    for i, prefix in enumerate(entries):
        packed = _source(draft, i, prefix, dpo)
        if draft.has(f"{prefix}.packed"):
            packed_keys.append(f"{prefix}.packed")
        packed_any = packed_any or packed
    if isinstance(cfg, list):
        packs = {bool(draft.get(f"{p}.packed")) for p in entries}
        if len(packs) > 1:
            draft.warn("some datasets are packed and some not: torchtune's ConcatDataset then pads them all as unpacked.", *packed_keys)
            packed_any = False
    _seq_len(draft, packed_any)
    if dpo:
        draft.set("data.packing", False, note="torchtune's DPO recipes pad each pair, never pack")
        return
    doc = all(draft.value(f"data.sources[{i}].records", "text") == "text" for i in range(len(entries)))
    note = (
        "torchtune packs the documents in dataset order and pads its last pack, recipec in its seeded order and drops "
        "the remainder; a document cut across packs goes on at its own positions in torchtune, at 0 in recipec (the "
        "same attention under RoPE)"
        if doc
        else "torchtune packs whole examples greedily in dataset order; recipec by best-fit-decreasing"
    )
    if packed_keys:
        if packed_any:
            draft.set("data.packing", True, *packed_keys, approx=note)
            if doc:  # PackedDataset's seq_lens: a block-causal mask, each document attending to itself
                draft.set("data.cross_document_attention", False, note="torchtune's packed documents attend within themselves")
        else:
            draft.set("data.packing", False, *packed_keys)
    else:
        draft.default("data.packing", False, "dataset.packed", "False: one padded sequence per example")
def _seq_len(draft: Draft, packed_any: bool) -> None:
    seq = _v(draft, "tokenizer.max_seq_len")
    family = _family(str(draft.get("model._component_") or ""))
    if seq is not None:
        draft.set("data.seq_len", int(num(seq)), "tokenizer.max_seq_len")
    else:
        context = _CONTEXT.get(family)
        if packed_any:
            draft.warn("dataset.packed is True but tokenizer.max_seq_len is null: torchtune's PackedDataset refuses that.", "dataset.packed", "tokenizer.max_seq_len")
        if context:
            why = f"null: torchtune truncates nothing; recipec needs a bound: the model's context length ({context})"
            if draft.has("tokenizer.max_seq_len"):
                draft.set("data.seq_len", context, "tokenizer.max_seq_len", approx=why)
            else:
                draft.default("data.seq_len", context, "tokenizer.max_seq_len", f"None: no truncation (bounded here by the model's context, {context})")


def _source(draft: Draft, i: int, prefix: str, dpo: bool) -> bool:
    """One dataset entry as data.sources[i]; returns whether it is packed."""
    comp = str(draft.get(f"{prefix}._component_") or "")
    name = _short(comp)
    src = f"data.sources[{i}]"

    def k(key: str) -> str:
        return f"{prefix}.{key}"

    def has(key: str) -> bool:
        return draft.has(k(key))

    def get(key: str, default: Any = None) -> Any:
        return _v(draft, k(key), default)

    draft.exact(k("_component_"))

    defaults = {
        "alpaca_dataset": "tatsu-lab/alpaca",
        "alpaca_cleaned_dataset": "yahma/alpaca-cleaned",
        "stack_exchange_paired_dataset": "lvwerra/stack-exchange-paired",
    }
    train_on_default = {"alpaca_dataset": True, "alpaca_cleaned_dataset": True}.get(name, False)
    supported = ("alpaca_dataset", "alpaca_cleaned_dataset", "chat_dataset", "instruct_dataset", "text_completion_dataset", "stack_exchange_paired_dataset", "preference_dataset")
    if name not in supported:
        for key in draft.keys_under(prefix):
            draft.drop(key, "missing-feature", f"{comp}: a torchtune dataset builder recipec import does not know.")
        draft.warn(f"the dataset {comp} could not be imported; write its [[data.sources]] by hand.", prefix)
        return False

    # where the records come from
    source = get("source", defaults.get(name))
    data_files = get("data_files")
    if source in _LOCAL_BUILDERS:
        keys = [k("source")] + ([k("data_files")] if has("data_files") else [])
        if data_files is None:
            draft.drop(k("source"), "missing-feature", "a packaged builder without data_files.")
        else:
            files = data_files.get("train") if isinstance(data_files, dict) else data_files
            local = [files] if isinstance(files, str) else list(files or [])
            draft.set(f"{src}.path", local[0] if len(local) == 1 else local, *keys)
            fmt = _LOCAL_BUILDERS[source]
            if fmt == "jsonl" and any(str(f).endswith(".json") for f in local):
                # JSON Lines, or one JSON array of records, as load_dataset('json') reads a .json file
                draft.set(f"{src}.format", "jsonl", k("source"))
            elif fmt != "jsonl" or not all(str(f).endswith(".jsonl") for f in local):
                draft.set(f"{src}.format", fmt, k("source"))
        if has("split"):
            split = get("split")
            if split == "train":
                draft.exact(k("split"))
            else:
                _split(draft, src, k("split"), split, local_source=True)
    elif source in ("csv",):
        draft.drop(k("source"), "missing-feature", "recipec reads no CSV files.")
        if has("data_files"):
            draft.drop(k("data_files"), "missing-feature", "CSV files.")
    else:
        if has("source"):
            draft.set(f"{src}.hub.repo", source, k("source"))
        else:
            draft.default(f"{src}.hub.repo", source, k("source"), f"{source} ({name}'s default)")
        if has("data_files"):
            draft.set(f"{src}.hub.data_files", data_files, k("data_files"))
        split = get("split", "train")
        if has("split"):
            _split(draft, src, k("split"), split, local_source=False)
        if has("name"):
            draft.set(f"{src}.hub.subset", get("name"), k("name"))
        if has("revision"):
            draft.set(f"{src}.hub.revision", get("revision"), k("revision"))
        data_dir = get("data_dir")
        if name == "stack_exchange_paired_dataset" and not has("data_dir"):
            data_dir = "data/rl"
            draft.set(f"{src}.hub.data_files", "data/rl/*", k("_component_"), approx="the builder's load_dataset data_dir 'data/rl', as a glob of its files")
        elif has("data_dir"):
            draft.set(f"{src}.hub.data_files", f"{str(data_dir).rstrip('/')}/*", k("data_dir"), approx="load_dataset's data_dir as a glob of its files")
    for key in ("cache_dir", "num_proc", "keep_in_memory", "verification_mode", "token"):
        if has(key):
            draft.drop(k(key), "not-for-training", "how load_dataset reads, not what it reads.")
    if has("trust_remote_code"):
        if get("trust_remote_code"):
            draft.drop(k("trust_remote_code"), "missing-feature", "recipec reads hub datasets' data files, never a loading script.")
        else:
            draft.exact(k("trust_remote_code"))
    if has("filter_fn"):
        if get("filter_fn") is None:
            draft.exact(k("filter_fn"))
        else:
            draft.drop(k("filter_fn"), "missing-feature", "a Python filter callable; recipec's filters are declared in [[data.sources.filters]].")
    if has("new_system_prompt"):
        prompt = get("new_system_prompt")
        if prompt is None:
            draft.exact(k("new_system_prompt"))
        elif name == "chat_dataset":  # OpenAIToMessages / ShareGPTToMessages: the records' own are skipped, this one first
            masked = "" if not get("train_on_input", False) else (
                "torchtune never trains on this system message, and with train_on_input recipec trains on every token"
            )
            draft.set(f"{src}.system", {"replace": str(prompt)}, k("new_system_prompt"), approx=masked or None)
        else:
            draft.drop(k("new_system_prompt"), "missing-feature", "a system message for prompt/completion strings; recipec's `system` applies to message lists.")

    # what each record holds
    cmap = get("column_map") or {}
    train_on_input = bool(get("train_on_input", train_on_default))
    toi = [k("train_on_input")] if has("train_on_input") else []
    packed = bool(get("packed", False))
    if name in ("alpaca_dataset", "alpaca_cleaned_dataset"):
        # AlpacaToMessages: Stanford Alpaca's prompt text is the user turn, the output the assistant's
        draft.set(f"{src}.records", "alpaca", k("_component_"))
        draft.set(f"{src}.prompt_style", "alpaca_chat", k("_component_"))
        _fields(draft, src, prefix, cmap, ("instruction", "input", "output"))
        _train_on(draft, src, "all" if train_on_input else "assistant", toi, name, train_on_default)
    elif name == "chat_dataset":
        style = get("conversation_style")
        column = get("conversation_column")
        records = {"sharegpt": "sharegpt", "openai": "messages"}.get(style)
        if records is None:
            draft.drop(k("conversation_style"), "missing-feature", f"torchtune supports sharegpt and openai only; {style!r} fails there too.")
        else:
            draft.set(f"{src}.records", records, k("conversation_style"))
            standard = "conversations" if records == "sharegpt" else "messages"
            if column and column != standard:
                draft.set(f"{src}.fields", {"messages": column}, k("conversation_column"))
            elif has("conversation_column"):
                draft.exact(k("conversation_column"))
        _train_on(draft, src, "all" if train_on_input else "assistant", toi, name, False)
    elif name == "instruct_dataset":
        draft.set(f"{src}.records", "prompt_completion", k("_component_"))
        fields = {}
        if cmap.get("input", "input") != "prompt":
            fields["prompt"] = cmap.get("input", "input")
        if cmap.get("output", "output") != "completion":
            fields["completion"] = cmap.get("output", "output")
        if fields:
            draft.set(f"{src}.fields", fields, *([k("column_map")] if cmap else [k("_component_")]))
        elif cmap:
            draft.exact(k("column_map"))
        _train_on(draft, src, "all" if train_on_input else "completion", toi, name, False)
    elif name == "text_completion_dataset":
        column = get("column", "text")
        if has("column"):
            if column != "text":
                draft.set(f"{src}.text_field", column, k("column"))
            else:
                draft.exact(k("column"))
        if has("add_eos"):
            if get("add_eos"):
                draft.exact(k("add_eos"))  # recipec ends every document with the end-of-text token
            else:
                draft.drop(k("add_eos"), "missing-feature", "recipec always ends a document with the end-of-text token.")
        if has("split_across_pack"):
            if get("split_across_pack") or not packed:
                draft.exact(k("split_across_pack"))
            else:
                draft.drop(k("split_across_pack"), "missing-feature", "recipec's document packing cuts documents across sequences.")
        if has("train_on_input"):
            draft.drop(k("train_on_input"), "ignored-by-tool", "text_completion_dataset takes no train_on_input.")
    elif name in ("stack_exchange_paired_dataset", "preference_dataset"):
        if name == "stack_exchange_paired_dataset":
            draft.set(f"{src}.records", "preference", k("_component_"))
            cmap = cmap or {"prompt": "question", "chosen": "response_j", "rejected": "response_k"}
            draft.set(f"{src}.fields", {f: cmap.get(f, f) for f in ("prompt", "chosen", "rejected")}, *([k("column_map")] if has("column_map") else [k("_component_")]))
        else:
            draft.set(
                f"{src}.records",
                "preference",
                k("_component_"),
                approx="torchtune's chosen and rejected columns are whole conversations with the prompt turns inside; "
                "recipec reads the prompt from a field of its own",
            )
            _fields(draft, src, prefix, cmap, ("chosen", "rejected"))
        if train_on_input:
            draft.drop(k("train_on_input"), "missing-feature", "recipec's preference losses see the completions only.")
        elif toi:
            draft.exact(*toi)
    if has("packed"):
        if dpo:
            draft.drop(k("packed"), "ignored-by-tool", "preference datasets are never packed.")
            draft.warn(f"`{k('packed')}` is set, but torchtune's DPO recipes do not pack.", k("packed"))
    return packed and not dpo


def _split(draft: Draft, src: str, key: str, split: str, local_source: bool) -> None:
    m = re.fullmatch(r"(\w+)\[:(\d+)\]", str(split))
    base = m.group(1) if m else str(split)
    if not re.fullmatch(r"\w+(\.\w+)*", base):
        draft.drop(key, "missing-feature", f"the split slice {split!r}; recipec reads whole splits (max_documents takes a head).")
        return
    if local_source:
        if base != "train":
            draft.drop(key, "no-equivalent", "local files have one split, train.")
            return
    else:
        draft.set(f"{src}.hub.split", base, key)
    if m:
        draft.set(f"{src}.max_documents", int(m.group(2)), key)


def _fields(draft: Draft, src: str, prefix: str, cmap: dict[str, str], names: tuple[str, ...]) -> None:
    if not cmap:
        return
    fields = {n: cmap[n] for n in names if n in cmap and cmap[n] != n}
    if fields:
        draft.set(f"{src}.fields", fields, f"{prefix}.column_map")
    else:
        draft.exact(f"{prefix}.column_map")
    for extra in set(cmap) - set(names):
        draft.drop(f"{prefix}.column_map.{extra}", "no-equivalent", f"the records have no `{extra}` field in recipec.")


def _train_on(draft: Draft, src: str, value: str, keys: list[str], name: str, default: bool) -> None:
    if keys:
        draft.set(f"{src}.train_on", value, *keys)
    else:
        prefix = src.replace("data.sources", "dataset") if isinstance(draft.get("dataset"), list) else "dataset"
        draft.default(f"{src}.train_on", value, f"{prefix}.train_on_input", f"{default} ({name}'s default)")


def _optimizer(draft: Draft, recipe: str, reads: set[str]) -> None:
    comp = str(draft.get("optimizer._component_") or "")
    spec = _OPTIMIZERS.get(comp)
    if spec is None:
        for key in draft.keys_under("optimizer"):
            draft.drop(key, "missing-feature", f"the optimizer {comp}, which recipec does not have.")
        draft.warn(f"the optimizer {comp} could not be imported: recipec's default optimizer applies.", "optimizer._component_")
        return
    name, note, lr, wd = spec
    if note:
        draft.set("optim.name", name, "optimizer._component_", approx=note)
    else:
        draft.set("optim.name", name, "optimizer._component_")

    def k(key: str) -> str:
        return f"optimizer.{key}"

    if draft.has(k("lr")):
        draft.set("optim.lr", float(num(draft.get(k("lr")))), k("lr"))
    else:
        draft.default("optim.lr", lr, k("lr"), f"{lr} ({comp}'s default)")
    if draft.has(k("weight_decay")):
        wd = float(num(draft.get(k("weight_decay"))))
        draft.set("optim.weight_decay", wd, k("weight_decay"))
    else:
        draft.default("optim.weight_decay", wd, k("weight_decay"), f"{wd} ({comp}'s default)")
    if wd > 0:
        draft.set("optim.decay", {"include": ["*"]}, "optimizer._component_", note=f"{comp} decays every parameter, norms and biases too")
    if name == "sgd":
        if draft.has(k("momentum")):
            draft.set("optim.momentum", float(num(draft.get(k("momentum")))), k("momentum"))
        else:
            draft.default("optim.momentum", 0.0, k("momentum"), "0 (torch.optim.SGD's default: no momentum)")
        if draft.has(k("nesterov")):
            draft.set("optim.nesterov", bool(draft.get(k("nesterov"))), k("nesterov"))
        if draft.has(k("dampening")):
            if num(draft.get(k("dampening"))) == 0:
                draft.exact(k("dampening"))
            else:
                draft.drop(k("dampening"), "missing-feature", "SGD momentum dampening.")
    else:
        if draft.has(k("betas")):
            draft.set("optim.betas", [float(num(b)) for b in draft.get(k("betas"))], k("betas"))
        else:
            draft.default("optim.betas", [0.9, 0.999], k("betas"), f"(0.9, 0.999) ({comp}'s default)")
        if draft.has(k("eps")):
            draft.set("optim.eps", float(num(draft.get(k("eps")))), k("eps"))
        else:
            draft.default("optim.eps", 1e-8, k("eps"), f"1e-8 ({comp}'s default)")
    if name == "adamw":
        if draft.get(k("fused")):
            draft.set("optim.implementation", "fused", k("fused"))
        elif draft.get(k("foreach")):
            draft.set("optim.implementation", "foreach", k("foreach"))
        for key in ("fused", "foreach"):
            if draft.has(k(key)) and not draft.get(k(key)):
                draft.exact(k(key))
    else:
        for key in ("fused", "foreach"):
            if draft.has(k(key)):
                draft.drop(k(key), "ignored-by-tool", f"{comp} takes no `{key}`.")
                draft.warn(f"`optimizer.{key}` is set, but {comp} has no such argument.", k(key))
    for key in ("amsgrad", "maximize"):
        if draft.has(k(key)):
            if draft.get(k(key)):
                draft.drop(k(key), "missing-feature", f"AdamW's {key} variant.")
            else:
                draft.exact(k(key))
    for key in ("capturable", "differentiable", "is_paged"):
        if draft.has(k(key)):
            draft.drop(k(key), "not-for-training", "how the update runs, not what it computes.")
    for key in ("optim_bits", "min_8bit_size", "percentile_clipping", "block_wise"):
        if draft.has(k(key)):
            draft.drop(k(key), "missing-feature", "a bitsandbytes setting recipec keeps at its default.")
    if "optimizer_in_bwd" in reads and draft.has("optimizer_in_bwd"):
        if draft.get("optimizer_in_bwd"):
            # torchtune (as recipec) allows it only without accumulation and clipping, which recipec's checks name
            draft.set("optim.step_in_backward", True, "optimizer_in_bwd")
        else:
            draft.exact("optimizer_in_bwd")
    if "clip_grad_norm" in reads:
        if draft.has("clip_grad_norm"):
            value = draft.get("clip_grad_norm")
            clip = 0.0 if value is None or str(value).lower() == "inf" else float(num(value))
            if value is None or math.isinf(clip):
                draft.set("optim.grad_clip", 0.0, "clip_grad_norm", note="None: no clipping")
            else:
                draft.set("optim.grad_clip", clip, "clip_grad_norm")
        else:
            draft.default("optim.grad_clip", 0.0, "clip_grad_norm", "None: no gradient clipping")
    else:
        draft.set("optim.grad_clip", 0.0, note=f"{recipe} never clips gradients")


def _schedule(draft: Draft, recipe: str) -> None:
    comp = str(draft.get("lr_scheduler._component_") or "")
    if not draft.has("lr_scheduler"):
        if recipe not in _OPTIONAL_SCHEDULER:
            draft.warn(f"{recipe} requires an lr_scheduler and the config has none: torchtune stops at setup.")
        draft.default("schedule.warmup", 0, "lr_scheduler", "None: a constant learning rate")
        draft.default("schedule.decay", "constant", "lr_scheduler", "None: a constant learning rate")
        return
    if _short(comp) != "get_cosine_schedule_with_warmup":
        for key in draft.keys_under("lr_scheduler"):
            draft.drop(key, "missing-feature", f"the scheduler {comp}, which recipec import does not map.")
        draft.warn(f"the LR scheduler {comp} could not be imported: recipec's default schedule applies.", "lr_scheduler._component_")
        return
    draft.set("schedule.warmup", int(num(draft.get("lr_scheduler.num_warmup_steps", 0))), "lr_scheduler.num_warmup_steps")
    draft.set("schedule.warmup_start_ratio", 0.0, "lr_scheduler._component_", note="the warmup starts at 0")
    draft.set("schedule.decay", "cosine", "lr_scheduler._component_")
    draft.set("schedule.min_lr_ratio", 0.0, "lr_scheduler._component_", note="torchtune's cosine ends at 0")
    cycles = num(draft.get("lr_scheduler.num_cycles", 0.5))
    if draft.has("lr_scheduler.num_cycles"):
        if cycles == 0.5:
            draft.exact("lr_scheduler.num_cycles")
        else:
            draft.drop("lr_scheduler.num_cycles", "missing-feature", "a cosine of other than half a wave (0.5) over the run.")
            draft.warn(f"lr_scheduler.num_cycles is {cycles}: the recipe's cosine is half a wave, as with 0.5.", "lr_scheduler.num_cycles")


def _train(draft: Draft, options: Options, recipe: str) -> None:
    micro = int(num(draft.get("batch_size", 1)))
    accum = int(num(draft.get("gradient_accumulation_steps", 1)))
    keys = ["batch_size"] + (["gradient_accumulation_steps"] if draft.has("gradient_accumulation_steps") else [])
    draft.set("train.micro_batch_size", micro, "batch_size")
    note = f"batch_size * gradient_accumulation_steps * {options.num_processes} processes" if options.num_processes > 1 else ""
    draft.set("train.batch_size", micro * accum * options.num_processes, *keys, note=note)
    if not draft.has("gradient_accumulation_steps"):
        draft.warn("gradient_accumulation_steps is missing: torchtune's recipes require it (taken as 1 here).")
    epochs = num(draft.get("epochs", 1))
    per_epoch = draft.get("max_steps_per_epoch")
    if per_epoch is not None:
        draft.set(
            "train.max_steps",
            int(epochs) * int(num(per_epoch)),
            "epochs",
            "max_steps_per_epoch",
            approx="epochs * max_steps_per_epoch, when each epoch has that many steps; torchtune starts every epoch "
            "afresh (a new shuffle, fewer steps when the data runs out first), recipec reads on through the data",
        )
    else:
        draft.set("train.epochs", epochs, "epochs")
        if draft.has("max_steps_per_epoch"):
            draft.exact("max_steps_per_epoch")
    # the recipes save a checkpoint at the end of every epoch (save_checkpoint(epoch=...)), the last one the final model
    if per_epoch is not None:
        draft.set("train.save_every", int(num(per_epoch)), note="torchtune saves at the end of every epoch of max_steps_per_epoch steps")
    else:
        draft.set("train.save_every", "1 epoch", note="torchtune saves at the end of every epoch")
    draft.set("data.eval_fraction", 0.0, note="torchtune's recipes train on the whole dataset and hold nothing out")
    draft.set("train.eval_every", 0, note="no evaluation during the run (the recipes have none)")
    seed = draft.get("seed")
    if seed is None:
        if draft.has("seed"):
            draft.set("recipe.seed", 1234, "seed", approx="null: torchtune draws a random seed each run; recipec's runs need a fixed one")
    else:
        draft.set(
            "recipe.seed",
            int(num(seed)),
            "seed",
            approx="torchtune shuffles the data with seed 0 whatever `seed` says; recipec shuffles with recipe.seed",
        )
    if draft.has("shuffle"):
        if draft.get("shuffle"):
            draft.exact("shuffle")
        else:
            draft.drop("shuffle", "missing-feature", "recipec always shuffles the training sequences.")
    if draft.has("collate_fn"):
        if draft.get("collate_fn") == "torchtune.data.padded_collate_sft":
            draft.exact("collate_fn")
        else:
            draft.drop("collate_fn", "missing-feature", "a collate function of its own.")


def _loss(draft: Draft, recipe: str, distributed: bool, lora: bool) -> None:
    comp = str(draft.get("loss._component_") or "")
    if comp in _PREFERENCE_LOSSES:
        if comp.endswith("DPOLoss"):
            draft.set("preference.objective", "dpo", "loss._component_")
            for key, target, default in (("beta", "preference.beta", 0.1), ("label_smoothing", "preference.label_smoothing", 0.0)):
                if draft.has(f"loss.{key}"):
                    draft.set(target, float(num(draft.get(f"loss.{key}"))), f"loss.{key}")
                else:
                    draft.default(target, default, f"loss.{key}", f"{default} (DPOLoss's default)")
        else:
            draft.set("preference.objective", "hinge", "loss._component_")
            if draft.has("loss.gamma"):
                draft.set("preference.beta", float(num(draft.get("loss.gamma"))), "loss.gamma")
            else:
                draft.default("preference.beta", 0.1, "loss.gamma", "0.1 (RSOLoss's default)")
        draft.set(
            "preference.reference",
            "live",
            "loss._component_",
            note="the base model with the adapter disabled" if lora else "a frozen copy of the starting model",
        )
        for key in ("num_output_chunks", "ignore_index", "gamma" if comp.endswith("DPOLoss") else "label_smoothing"):
            if draft.has(f"loss.{key}"):
                draft.drop(f"loss.{key}", "ignored-by-tool", f"{_short(comp)} takes no `{key}`.")
                draft.warn(f"`loss.{key}` is set, but {_short(comp)} has no such argument.", f"loss.{key}")
        return
    if comp not in _CROSS_ENTROPY:
        for key in draft.keys_under("loss"):
            draft.drop(key, "missing-feature", f"the loss {comp}.")
        draft.warn(f"the loss {comp} could not be imported: recipec trains with the cross-entropy.", "loss._component_")
        return
    if draft.has("loss.ignore_index"):
        if num(draft.get("loss.ignore_index")) == -100:
            draft.exact("loss.ignore_index")
        else:
            draft.drop("loss.ignore_index", "no-equivalent", "recipec's masked label is -100.")
    if comp.endswith("CEWithChunkedOutputLoss"):
        chunks = num(draft.get("loss.num_output_chunks", 8))
        keys = ["loss._component_"] + (["loss.num_output_chunks"] if draft.has("loss.num_output_chunks") else [])
        tp = int(num(draft.get("tensor_parallel_dim", 1)) or 1) if distributed else 1
        if tp > 1:
            draft.set(
                "loss.cross_entropy",
                "plain",
                *keys,
                approx=f"recipec's chunked cross-entropy applies the whole output projection, which tensor_parallel_dim "
                f"{tp} splits: the same loss over the full logits (more memory)",
            )
        else:
            draft.set(
                "loss.cross_entropy",
                "chunked",
                *keys,
                approx=f"torchtune cuts the logits into {chunks} pieces along the sequence; recipec into pieces of "
                "loss.chunk_size supervised tokens: the same loss, other memory",
            )
    else:
        draft.set("loss.cross_entropy", "plain", "loss._component_")


def _launch(draft: Draft, options: Options, recipe: str, distributed: bool) -> None:
    if options.num_processes > 1:
        draft.set("launch.num_processes", options.num_processes, note="the processes the source run used")
    dtype = draft.get("dtype")
    if dtype is not None:
        target = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}.get(str(dtype))
        if target == "float16":
            draft.set("model.dtype", target, "dtype", approx="torchtune refuses full fp16 training in most recipes; recipec trains fp16 weights without a loss scaler")
        elif target:
            draft.set("model.dtype", target, "dtype", note="the weights and gradients in this dtype, no float32 copy, as torchtune trains")
        else:
            draft.drop("dtype", "no-equivalent", f"the dtype {dtype!r}.")
    else:
        draft.default("model.dtype", "float32", "dtype", "fp32")
    device = draft.get("device")
    if device == "cpu":
        draft.set("launch.cpu", True, "device")
    elif device in ("cuda", None):
        if draft.has("device"):
            draft.exact("device")
    else:
        draft.drop("device", "missing-feature", f"recipec trains on a CUDA GPU or the CPU, not {device!r}.")
    if draft.has("compile"):
        if "compile" in READS[recipe]:
            draft.set("model.compile", bool(draft.get("compile")), "compile")
    if draft.has("enable_activation_checkpointing"):
        draft.set("model.gradient_checkpointing", bool(draft.get("enable_activation_checkpointing")), "enable_activation_checkpointing")
    if draft.has("enable_activation_offloading"):
        if draft.get("enable_activation_offloading"):
            draft.set(
                "model.activation_offloading",
                True,
                "enable_activation_offloading",
                approx="torchtune's OffloadActivations copies on a second CUDA stream, overlapped with compute, and keeps the "
                "output projection's activations on the device; recipec copies on the compute stream (the same values, "
                "slower steps)",
            )
        else:
            draft.exact("enable_activation_offloading")
    if draft.has("cudnn_deterministic_mode"):
        if draft.get("cudnn_deterministic_mode") is None:
            draft.exact("cudnn_deterministic_mode")
        else:
            draft.drop("cudnn_deterministic_mode", "missing-feature", "torch's deterministic algorithms switch.")
    if draft.has("low_cpu_ram") and "low_cpu_ram" in READS[recipe]:
        draft.drop("low_cpu_ram", "not-for-training", "how the checkpoint is read into memory.")
    if draft.has("enable_async_checkpointing") and "enable_async_checkpointing" in READS[recipe]:
        draft.drop("enable_async_checkpointing", "not-for-training", "how checkpoints are written.")
    if not distributed:
        return
    draft.set("launch.strategy", "fsdp", note=f"{recipe} shards the model with FSDP2 (fully_shard)")
    draft.set("launch.fsdp.version", 2, note="torch's fully_shard, as torchtune")
    if draft.has("fsdp_reshard_after_forward"):
        reshard = bool(draft.get("fsdp_reshard_after_forward"))
        draft.set("launch.fsdp.sharding_strategy", "full_shard" if reshard else "shard_grad_op", "fsdp_reshard_after_forward")
    else:
        draft.default("launch.fsdp.sharding_strategy", "full_shard", "fsdp_reshard_after_forward", "True: parameters resharded after the forward pass")
    if draft.has("fsdp_cpu_offload"):
        draft.set("launch.fsdp.cpu_offload", bool(draft.get("fsdp_cpu_offload")), "fsdp_cpu_offload")
    if draft.has("custom_sharded_layers"):
        if draft.get("custom_sharded_layers"):
            draft.drop("custom_sharded_layers", "no-equivalent", "extra FSDP units (the embeddings, the output layer): recipec wraps the decoder layers; memory only.")
        else:
            draft.exact("custom_sharded_layers")
    for key in ("ac_mode", "ac_option"):
        if draft.has(key):
            if draft.get(key) is None:
                draft.exact(key)
            else:
                draft.drop(key, "missing-feature", "selective activation checkpointing.")


TP_PLAN = (
    "recipec splits the model by transformers' own plan for its model type (base_model_tp_plan: the attention "
    "and MLP projections by columns and rows, as {plan}); torchtune's plan also splits the token embeddings and "
    "the output layer, which transformers keeps whole or gathers: the same math, other memory"
)


def _mesh(draft: Draft, options: Options, recipe: str) -> None:
    """full_finetune_distributed's 2-D mesh (torchtune 0.6.1): tensor_parallel_dim ranks split each
    layer by tensor_parallel_plan, the world / tensor_parallel_dim others shard it with FSDP2 and
    each reads its own samples (the DistributedSampler counts the data-parallel ranks)."""
    from .mesh import Dim, Mesh, place

    if not draft.has("tensor_parallel_dim") and not draft.has("tensor_parallel_plan"):
        return
    if all(k in draft.ledger for k in draft.keys_under("tensor_parallel_dim") + draft.keys_under("tensor_parallel_plan")):
        return  # a recipe that never reads them
    tp = int(num(draft.get("tensor_parallel_dim", 1)) or 1)
    plan = _short(draft.get("tensor_parallel_plan._component_"))
    if tp <= 1:
        draft.exact("tensor_parallel_dim")
        if draft.has("tensor_parallel_plan"):
            draft.drop("tensor_parallel_plan", "ignored-by-tool", "read only with tensor_parallel_dim above 1.")
        return
    m = Mesh(tp_size=Dim(tp, ("tensor_parallel_dim",)))
    micro = int(num(draft.get("batch_size", 1)))
    accum = int(num(draft.get("gradient_accumulation_steps", 1)))

    def rebatch(dp: int, note: str) -> None:
        line = draft.tables["train"]["batch_size"]
        line.value = micro * accum * dp
        line.note = f"batch_size * gradient_accumulation_steps * {note}"

    place(draft, options.num_processes, m, rebatch)
    if draft.has("tensor_parallel_plan"):
        if m.kept.get("tp_size"):
            draft.approx(TP_PLAN.format(plan=plan or "torchtune's"), "tensor_parallel_plan")
        else:
            draft.drop("tensor_parallel_plan", "no-equivalent", "the plan of a tensor parallelism that is not imported.")


def _logging(draft: Draft, reads: set[str]) -> None:
    if draft.has("log_every_n_steps") and draft.get("log_every_n_steps") is None:
        # torchtune 0.1 logged every step for null; from 0.2.0 `cfg.get(key, 1)` returns the null
        # and the recipe's `step % None` fails
        draft.set("train.log_every", 1, "log_every_n_steps", approx="null: torchtune 0.1 logged every step, 0.2.0 and later fail on it")
        draft.warn("`log_every_n_steps: null` meant every step in torchtune 0.1; torchtune 0.2.0 and later fail on it (written as 1)", "log_every_n_steps")
    elif draft.has("log_every_n_steps"):
        draft.set("train.log_every", int(num(draft.get("log_every_n_steps"))), "log_every_n_steps")
    if draft.has("log_peak_memory_stats"):
        draft.drop("log_peak_memory_stats", "not-for-training", "logging.")
    comp = _short(draft.get("metric_logger._component_"))
    tracker = {"WandBLogger": "wandb", "TensorBoardLogger": "tensorboard", "MLFlowLogger": "mlflow"}.get(comp)
    if tracker:
        draft.set("output.trackers", [tracker], "metric_logger._component_", approx="recipec's trackers write to local disk under the run directory")
    for key in draft.keys_under("metric_logger"):
        if tracker and key == "metric_logger._component_":
            continue
        draft.drop(key, "not-for-training", "where the metrics are logged; recipec writes metrics.jsonl in the run directory.")
    if "profiler" in reads:
        if draft.has("profiler.enabled") and not draft.get("profiler.enabled"):
            draft.exact("profiler")  # a profiler turned off: none runs, as in recipec
        else:
            for key in draft.keys_under("profiler"):
                draft.drop(key, "not-for-training", "the torch profiler.")
