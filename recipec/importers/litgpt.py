"""`recipec import --from litgpt`: a LitGPT config (`litgpt finetune_lora|finetune_full|finetune_adapter|
pretrain --config FILE`, as in LitGPT's config_hub) as a recipe.

A LitGPT config is the keyword arguments of one script's `setup()`; the file does not name the
script. It is inferred from the keys: `lora_*` keys are LoRA (QLoRA with `quantize`);
`model_name`, `model_config`, `initial_checkpoint_dir`, `tokenizer_dir`, a pretraining data
module (TinyLlama, TextFiles, OpenWebText, ...) or a `train.max_tokens` are pretraining; the
rest is full fine-tuning (an adapter config has the same keys as a full one, plus `quantize`).
The inference is written into the recipe's notes.

What the scripts do, from LitGPT 0.5.13's source:

- fine-tuning (litgpt/finetune/{lora,full,adapter}.py): the LR warms up linearly from 0 over
  `train.lr_warmup_steps` optimizer steps (a LambdaLR of step / warmup), then a
  CosineAnnealingLR decays it to 0 over the rest of the run (SequentialLR); `train.min_lr` is
  never read. No gradient clipping; `max_norm`, `max_tokens`, `tie_embeddings` and
  `lr_warmup_fraction` are refused (validate_args raises). Examples are padded per micro-batch,
  not packed; `log_interval` counts micro-batch iterations.
- pretraining (litgpt/pretrain.py): the LR is set every micro-batch iteration by `get_lr`:
  linear warmup over `lr_warmup_steps * grad_accum` iterations, then a cosine to `train.min_lr`
  at `max_iters = max_tokens / world / (micro_batch * seq)`. `max_norm` clips; `max_steps` only
  warns; `epochs` and `eval.max_new_tokens` are refused.
- the optimizer gets every parameter (`model.parameters()`): biases and norms decay too.
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Any

from .core import Draft, Legacy, OldValue, Removed, num

VERSION = "litgpt 0.5.13"

TRAIN_FIELDS = (
    "save_interval",
    "log_interval",
    "global_batch_size",
    "micro_batch_size",
    "lr_warmup_steps",
    "lr_warmup_fraction",
    "epochs",
    "max_tokens",
    "max_steps",
    "max_time",
    "max_seq_length",
    "tie_embeddings",
    "max_norm",
    "min_lr",
)
"""litgpt.args.TrainArgs."""

EVAL_FIELDS = ("interval", "max_new_tokens", "max_iters", "initial_validation", "final_validation", "evaluate_example")
"""litgpt.args.EvalArgs."""

LOG_FIELDS = ("project", "run", "group", "teamspace", "metadata", "log_model", "save_logs", "checkpoint_name")
"""litgpt.args.LogArgs."""

DATA_INIT_ARGS = (
    # Alpaca, Alpaca2k, AlpacaGPT4, JSON, LIMA, Deita, FLAN, LongForm (SFT data modules)
    "mask_prompt",
    "val_split_fraction",
    "prompt_style",
    "ignore_index",
    "seed",
    "num_workers",
    "download_dir",
    "file_url",
    "file_name",
    "repo_id",
    "json_path",
    "include_multiturn_conversations",
    "access_token",
    "url",
    "subsets",
    # TextFiles, TinyLlama, MicroLlama, OpenWebText, TinyStories, LitData (pretraining)
    "train_data_path",
    "val_data_path",
    "data_path",
    "use_starcoder",
    "split_names",
)
"""The init arguments of the data modules in litgpt.data."""

SETUP_KEYS = (
    # finetune/lora.py, full.py, adapter.py, adapter_v2.py
    "checkpoint_dir",
    "out_dir",
    "precision",
    "quantize",
    "devices",
    "num_nodes",
    "resume",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_query",
    "lora_key",
    "lora_value",
    "lora_projection",
    "lora_mlp",
    "lora_head",
    "optimizer",
    "logger_name",
    "seed",
    "access_token",
    # pretrain.py
    "model_name",
    "model_config",
    "initial_checkpoint_dir",
    "tokenizer_dir",
)

KNOWN = (
    *SETUP_KEYS,
    "model_config.*",
    "data",
    "data.class_path",
    "data.init_args",
    *(f"data.init_args.{k}" for k in DATA_INIT_ARGS),
    "data.init_args.split_names[*]",
    "train",
    *(f"train.{k}" for k in TRAIN_FIELDS),
    "eval",
    *(f"eval.{k}" for k in EVAL_FIELDS),
    "log",
    *(f"log.{k}" for k in LOG_FIELDS),
    "log.metadata.*",
    "optimizer.class_path",
    "optimizer.init_args",
    "optimizer.init_args.*",
)

MARKERS = (
    "checkpoint_dir",
    "out_dir",
    "lora_query",
    "lora_value",
    "lora_projection",
    "train.lr_warmup_steps",
    "train.global_batch_size",
    "initial_checkpoint_dir",
    "tokenizer_dir",
)

LEGACY: dict[str, Legacy] = {
    # TrainArgs' optimizer fields of 0.3, moved into `optimizer` (litgpt/args.py, OptimizerArgs,
    # commit 141c8bfb); jsonargparse refuses a key of no field
    "train.learning_rate": Removed("litgpt 0.4.0", "`optimizer.init_args.lr`"),
    "train.weight_decay": Removed("litgpt 0.4.0", "`optimizer.init_args.weight_decay`"),
    "train.beta1": Removed("litgpt 0.4.0", "`optimizer.init_args.betas`"),
    "train.beta2": Removed("litgpt 0.4.0", "`optimizer.init_args.betas`"),
}
"""Keys of litgpt's older releases and what 0.5.13 does with them."""

DROPPED_MODELS = frozenset(
    {"dolly-v2-3b", "dolly-v2-7b", "dolly-v2-12b"}
    | {n.format(kind) for n in ("RedPajama-INCITE-{}-3B-v1", "RedPajama-INCITE-7B-{}", "RedPajama-INCITE-{}-7B-v0.1") for kind in ("Base", "Chat", "Instruct")}
    | {f"vicuna-{size}" for size in ("7b-v1.3", "13b-v1.3", "33b-v1.3", "7b-v1.5", "7b-v1.5-16k", "13b-v1.5", "13b-v1.5-16k")}
    | {"longchat-7b-16k", "longchat-13b-16k", "Nous-Hermes-llama-2-7b", "Nous-Hermes-13b", "Nous-Hermes-Llama2-13b"}
    | {"Danube2-1.8b-chat", "h2o-danube2-1.8b-chat"}
)
"""The model configs LitGPT 0.5.4 removed (litgpt/config.py, commit 33eab00d), by their names and
hub names (the hub name differs only for Danube)."""

LEGACY_VALUES: dict[str, tuple[OldValue, ...]] = {
    # the Dolly data module, gone in 0.5.4 with the Dolly models (commit 33eab00d): 0.5.13's
    # jsonargparse cannot import the class and refuses the config
    **{
        key: (
            OldValue(
                lambda v: isinstance(v, str) and v.rsplit(".", 1)[-1] == "Dolly",
                "litgpt 0.5.4",
                by="`litgpt.data.JSON` (Dolly's records with `context` as `input`, `response` as `output`)",
            ),
        )
        for key in ("data", "data.class_path")
    },
    # the configs of the same commit's models: 0.5.13's pretrain finds no config by that name (nor
    # by the hub name) and quits ("Model name ... is not supported"); a model_config overrides it
    "model_name": (
        OldValue(
            lambda v: isinstance(v, str) and v.rsplit("/", 1)[-1] in DROPPED_MODELS,
            "litgpt 0.5.4",
            only=lambda config: not config.get("model_config"),
        ),
    ),
}
"""Values of LitGPT's older releases that 0.5.13 refuses, with the first release without them."""

LORA_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "lora_query", "lora_key", "lora_value", "lora_projection", "lora_mlp", "lora_head")

# defaults of each script's setup() (the TrainArgs/EvalArgs instances in its signature)
FINETUNE = {
    "train.save_interval": 1000,
    "train.log_interval": 1,
    "train.global_batch_size": 16,
    "train.micro_batch_size": 1,
    "train.lr_warmup_steps": 100,
    "train.epochs": 5,
    "train.max_seq_length": None,
    "eval.interval": 100,
    "eval.max_iters": 100,
    "eval.initial_validation": False,
    "seed": 1337,
    "devices": 1,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "lora_query": True,
    "lora_key": False,
    "lora_value": True,
    "lora_projection": False,
    "lora_mlp": False,
    "lora_head": False,
}
PRETRAIN = {
    "train.save_interval": 1000,
    "train.log_interval": 1,
    "train.global_batch_size": 512,
    "train.micro_batch_size": 4,
    "train.lr_warmup_steps": 2000,
    "train.max_tokens": int(3e12),
    "train.max_norm": 1.0,
    "train.min_lr": 4e-5,
    "train.tie_embeddings": False,
    "train.max_seq_length": None,
    "eval.interval": 1000,
    "eval.max_iters": 100,
    "eval.initial_validation": False,
    "seed": 42,
    "devices": "auto",
}

# torch.optim.AdamW's defaults (LitGPT's default optimizer is the string "AdamW")
ADAMW = {"lr": 1e-3, "weight_decay": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8}

# LitGPT model configs (litgpt/config.py) recipec can build from scratch: (init, model.config)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny-llama-1.1b": (
        "llama",
        {
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 22,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "max_position_embeddings": 2048,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
        },
    ),
    "micro-llama-300M": (
        "llama",
        {
            "hidden_size": 1024,
            "intermediate_size": 5632,
            "num_hidden_layers": 12,
            "num_attention_heads": 16,
            "num_key_value_heads": 4,
            "max_position_embeddings": 2048,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
        },
    ),
}

# litgpt.Config fields -> recipec model.config keys (a llama-style config)
CONFIG_FIELDS = {
    "n_embd": "hidden_size",
    "intermediate_size": "intermediate_size",
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "n_query_groups": "num_key_value_heads",
    "block_size": "max_position_embeddings",
    "rope_base": "rope_theta",
    "norm_eps": "rms_norm_eps",
}
# litgpt.Config fields whose llama value is implied by init = "llama"
LLAMA_IMPLIED = {
    "norm_class_name": "RMSNorm",
    "mlp_class_name": "LLaMAMLP",
    "parallel_residual": False,
    "bias": False,
    "rotary_percentage": 1.0,
}
CONFIG_NOT_TRAINING = ("name", "hf_config", "vocab_size", "padding_multiple", "padded_vocab_size")

# LitGPT's LoRA switches -> the Hugging Face module names of each family
LLAMA_MODULES = {
    "query": ["q_proj"],
    "key": ["k_proj"],
    "value": ["v_proj"],
    "projection": ["o_proj"],
    "mlp": ["gate_proj", "up_proj", "down_proj"],
    "head": ["lm_head"],
}
PHI2_MODULES = {
    "query": ["q_proj"],
    "key": ["k_proj"],
    "value": ["v_proj"],
    "projection": ["dense"],
    "mlp": ["fc1", "fc2"],
    "head": ["lm_head"],
}
PHI3_MODULES = {"qkv": ["qkv_proj"], "projection": ["o_proj"], "mlp": ["gate_up_proj", "down_proj"], "head": ["lm_head"]}
FALCON_MODULES = {"qkv": ["query_key_value"], "projection": ["dense"], "mlp": ["dense_h_to_4h", "dense_4h_to_h"], "head": ["lm_head"]}
NEOX_MODULES = {"qkv": ["query_key_value"], "projection": ["dense"], "mlp": ["dense_h_to_4h", "dense_4h_to_h"], "head": ["embed_out"]}
LLAMA_FAMILY = ("llama", "mistral", "mixtral", "gemma", "qwen", "codellama", "vicuna", "longchat", "openllama", "yi-", "smollm", "olmo")

PRETRAIN_DATA = ("TinyLlama", "MicroLlama", "TextFiles", "OpenWebText", "TinyStories", "LitData")

# data modules that read a hub dataset: class -> (repo, split, how the hub copy relates, records, default val_split_fraction)
HUB_DATA: dict[str, tuple[str, str, str, str, float | None]] = {
    "Alpaca2k": ("mhenrichsen/alpaca_2k_test", "train", "", "alpaca", 0.05),
    "Alpaca": (
        "yahma/alpaca-cleaned",
        "train",
        "LitGPT downloads the cleaned Alpaca from tloen/alpaca-lora's alpaca_data_cleaned_archive.json; "
        "yahma/alpaca-cleaned is that cleaned set on the hub, possibly a later revision",
        "alpaca",
        0.03865,
    ),
    "AlpacaGPT4": (
        "vicgalle/alpaca-gpt4",
        "train",
        "LitGPT downloads alpaca_gpt4_data.json from the GPT-4-LLM repository; vicgalle/alpaca-gpt4 is its hub copy",
        "alpaca",
        0.03847,
    ),
    "Deita": ("HuggingFaceH4/deita-10k-v0-sft", "train_sft", "", "messages", None),
}


# -- helpers --------------------------------------------------------------------------------


def _hub_id(path: Any) -> str | None:
    """`checkpoints/org/name` (where `litgpt download org/name` puts a hub model, converted to
    LitGPT's format) or a bare `org/name` (which LitGPT downloads itself) -> `org/name`."""
    if not isinstance(path, str):
        return None
    p = PurePosixPath(path.strip().rstrip("/"))
    parts = p.parts
    if parts and parts[0] == "checkpoints":
        parts = parts[1:]
    elif p.is_absolute() or path.startswith("."):
        return None
    if len(parts) == 2 and all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", x) for x in parts):
        return "/".join(parts)
    return None


def _local(path: str) -> str:
    return path if path.startswith(("./", "../", "/", "~")) else "./" + path


def _class(value: Any) -> str:
    return str(value).rsplit(".", 1)[-1]


class _Src:
    """Reads a key with the script's default when the file leaves it out."""

    def __init__(self, draft: Draft, defaults: dict[str, Any]) -> None:
        self.draft = draft
        self.defaults = defaults

    def present(self, key: str) -> bool:
        return key in self.draft.values

    def __call__(self, key: str) -> Any:
        if key in self.draft.values:
            return num(self.draft.values[key])
        return self.defaults.get(key)


# -- the conversion -------------------------------------------------------------------------


def convert(draft: Draft, options: Any) -> None:
    kind, why = _kind(draft)
    draft.note(f"LitGPT script inferred from the keys: {why}.")
    src = _Src(draft, PRETRAIN if kind == "pretrain" else FINETUNE)
    world = _world(draft, src, options, kind)
    ga = _batch(draft, src, world, kind)
    _model(draft, src, kind)
    _precision(draft, src, kind)
    if kind == "lora":
        _lora(draft, src)
    if kind == "adapter":
        if draft.get("quantize") is None:
            draft.exact("quantize")
        else:
            draft.drop(
                "quantize",
                "missing-feature",
                "recipec has no LLaMA-Adapter, and quantizes only under LoRA.",
            )
    if kind != "pretrain" and draft.get("checkpoint_dir") is None:
        draft.warn("The config has no checkpoint_dir, which LitGPT's fine-tuning scripts require: set model.path.", "checkpoint_dir")
    _data(draft, src, kind)
    _length_and_schedule(draft, src, kind, ga, world)
    _optimizer(draft, src, kind)
    _eval_and_saving(draft, src, kind, ga)
    _rest(draft, src, kind)


def _kind(draft: Draft) -> tuple[str, str]:
    has_lora = [k for k in LORA_KEYS if draft.has(k)]
    data = draft.get("data.class_path") or draft.get("data")
    data_cls = _class(data) if isinstance(data, str) else None
    hints = [k for k in ("model_name", "initial_checkpoint_dir", "tokenizer_dir") if draft.get(k) is not None]
    if draft.get("model_config") is not None:
        hints.append("model_config")
    if data_cls in PRETRAIN_DATA:
        hints.append(f"data {data_cls}")
    if draft.get("train.max_tokens") is not None:
        hints.append("train.max_tokens")
    if hints and not has_lora and not draft.has("checkpoint_dir"):
        return "pretrain", "pretrain.py (" + ", ".join(hints) + "; no checkpoint_dir)"
    if has_lora:
        q = " with quantize: QLoRA" if draft.get("quantize") else ""
        return "lora", f"finetune/lora.py (keys {', '.join(has_lora[:3])}{'...' if len(has_lora) > 3 else ''}){q}"
    if draft.has("quantize"):
        draft.warn(
            "The config has `quantize` but no `lora_*` keys: it is an adapter config (finetune/adapter.py), "
            "which recipec cannot express; imported as full fine-tuning.",
            "quantize",
        )
        return "adapter", "finetune/adapter.py (quantize, no lora_* keys); imported as full fine-tuning"
    return "full", "finetune/full.py (checkpoint_dir, no lora_* keys; an adapter config without quantize looks the same)"


def _world(draft: Draft, src: _Src, options: Any, kind: str) -> int:
    devices = src("devices")
    nodes = int(src("num_nodes") or 1)
    if isinstance(devices, int) and devices > 0:
        per_node = devices
        if src.present("devices"):
            draft.exact("devices")
        else:
            draft.defaults.append(("devices", f"{devices} device per machine"))
    else:
        per_node = max(1, options.num_processes // nodes)
        how = f"`{devices}`: every GPU of the machine; recipec import was told {options.num_processes} process(es) over all machines"
        if src.present("devices"):
            draft.approx(how, "devices")
        else:
            draft.defaults.append(("devices", how))
    world = per_node * nodes
    if world > 1:
        if src.present("devices"):
            draft.set("launch.num_processes", world, "devices", *(["num_nodes"] if src.present("num_nodes") else []))
        else:
            draft.set("launch.num_processes", world, note="LitGPT's default devices")
        if nodes > 1:
            draft.set("launch.num_machines", nodes, "num_nodes")
        if kind == "pretrain":
            draft.set("launch.strategy", "fsdp", note="pretrain.py shards with FSDP over more than one device")
            draft.set("launch.fsdp.version", 1, note="Lightning's FSDPStrategy, torch's FSDP1")
            draft.set(
                "launch.fsdp.sharding_strategy",
                "hybrid_shard" if nodes > 1 else "full_shard",
                note="pretrain.py's HYBRID_SHARD (full sharding within a machine)",
            )
        elif kind == "lora":
            draft.set("launch.strategy", "fsdp", note="lora.py's data-parallel ModelParallelStrategy is torch's fully_shard")
            draft.set("launch.fsdp.version", 2, note="fully_shard, FSDP2")
            draft.set("launch.fsdp.activation_checkpointing", True, note="lora.py wraps every block in a checkpoint")
        else:
            draft.set("launch.strategy", "fsdp", note="full.py shards with Lightning's FSDPStrategy")
            draft.set("launch.fsdp.version", 1, note="Lightning's FSDPStrategy, torch's FSDP1")
            draft.set("launch.fsdp.activation_checkpointing", True, note="full.py's activation_checkpointing_policy={Block}")
    if src.present("num_nodes"):
        draft.exact("num_nodes")
    return world


def _batch(draft: Draft, src: _Src, world: int, kind: str) -> int:
    gbs = int(src("train.global_batch_size"))
    micro = int(src("train.micro_batch_size"))
    ga = max(1, (gbs // world) // micro)
    effective = ga * micro * world
    for key, target, value in (
        ("train.micro_batch_size", "train.micro_batch_size", micro),
        ("train.global_batch_size", "train.batch_size", effective),
    ):
        if not src.present(key):
            draft.default(target, value, key, f"{target} = {value}")
        elif effective != gbs and key == "train.global_batch_size":
            draft.set(
                target,
                effective,
                key,
                approx=f"LitGPT accumulates ({gbs} // {world} processes) // {micro} = {ga} micro-batches: {effective} sequences per step, not {gbs}",
            )
        else:
            draft.set(target, value, key)
    return ga


def _model(draft: Draft, src: _Src, kind: str) -> None:
    if kind != "pretrain":
        ckpt = draft.get("checkpoint_dir")
        repo = _hub_id(ckpt)
        if repo:
            draft.set(
                "model.path",
                repo,
                "checkpoint_dir",
                note=f"the hub model that `litgpt download {repo}` converts into {ckpt}",
            )
        elif isinstance(ckpt, str):
            draft.set(
                "model.path",
                _local(ckpt),
                "checkpoint_dir",
                approx="a LitGPT-format checkpoint; recipec loads a Hugging Face model directory (`litgpt convert_from_litgpt`)",
            )
        for key in ("model_name", "model_config", "initial_checkpoint_dir", "tokenizer_dir"):
            if src.present(key) and draft.get(key) is None:
                draft.exact(key)
        return
    # pretraining
    init_dir = draft.get("initial_checkpoint_dir")
    name = draft.get("model_name")
    cfg = draft.get("model_config")
    if init_dir is not None:
        repo = _hub_id(init_dir)
        if repo:
            draft.set("model.path", repo, "initial_checkpoint_dir", note=f"the hub model `litgpt download {repo}` puts in {init_dir}")
        else:
            draft.set(
                "model.path",
                _local(str(init_dir)),
                "initial_checkpoint_dir",
                approx="a LitGPT-format checkpoint; recipec loads a Hugging Face model directory (`litgpt convert_from_litgpt`)",
            )
        if name is not None:
            draft.exact("model_name")  # the architecture of the loaded checkpoint
        if isinstance(cfg, dict):
            draft.approx("the architecture comes with the loaded checkpoint", "model_config")
        draft.note(
            "Continued pre-training: LitGPT loads initial_checkpoint_dir's weights into a fresh optimizer and "
            "schedule; recipec loads model.path the same way."
        )
    elif isinstance(cfg, dict) and cfg:
        _model_config(draft, cfg)
        if name is not None:
            draft.exact("model_name")  # model_config overrides it
    elif name is not None:
        known = MODELS.get(str(name)) or MODELS.get(str(name).rsplit("/", 1)[-1])
        if known:
            init, config = known
            draft.set("model.init", init, "model_name", note=f"LitGPT's `{name}` config, a llama")
            for k, v in config.items():
                draft.set(f"model.config.{k}", v, "model_name")
            std = math.sqrt(2.0 / 5 / config["hidden_size"])
            draft.set(
                "model.config.initializer_range",
                round(std, 6),
                "model_name",
                approx=f"LitGPT initialises every linear and embedding with std sqrt(2 / 5 / n_embd) = {std:.6f}, "
                f"but each block's output projections with 1 / sqrt(n_embd) / n_layer; recipec uses one std",
            )
        else:
            draft.set(
                "model.init",
                "llama",
                "model_name",
                approx=f"LitGPT's `{name}` config is not in recipec import's table: fill [model.config] from litgpt/config.py",
            )
            draft.warn(f"model_name `{name}`: its sizes are not imported; set [model.config] by hand.", "model_name")
    if src.present("model_config") and not draft.get("model_config"):
        draft.exact("model_config")  # null or an empty table: model_name decides
    if draft.get("initial_checkpoint_dir") is None and src.present("initial_checkpoint_dir"):
        draft.exact("initial_checkpoint_dir")
    tok = draft.get("tokenizer_dir")
    if tok is not None:
        repo = _hub_id(tok)
        if repo:
            draft.set("tokenizer.path", repo, "tokenizer_dir", note=f"the hub tokenizer in {tok}")
        else:
            draft.set("tokenizer.path", _local(str(tok)), "tokenizer_dir")
    elif src.present("tokenizer_dir"):
        draft.exact("tokenizer_dir")
    if src.present("checkpoint_dir"):
        draft.drop("checkpoint_dir", "ignored-by-tool", "pretrain.py has no checkpoint_dir.")


def _model_config(draft: Draft, cfg: dict[str, Any]) -> None:
    implied = all(cfg.get(k, v) == v for k, v in LLAMA_IMPLIED.items() if k in cfg)
    draft.set(
        "model.init",
        "llama",
        "model_config",
        **({} if implied else {"approx": "not a llama-style LitGPT config (norm, MLP, residual or bias differ); built as a llama"}),
    )
    for k, v in cfg.items():
        key = f"model_config.{k}"
        if k in CONFIG_FIELDS:
            draft.set(f"model.config.{CONFIG_FIELDS[k]}", num(v), key)
        elif k in LLAMA_IMPLIED:
            if v == LLAMA_IMPLIED[k]:
                draft.exact(key)
            else:
                draft.approx(f"a llama has {k} = {LLAMA_IMPLIED[k]}", key)
        elif k in CONFIG_NOT_TRAINING:
            draft.drop(key, "no-equivalent", "The vocabulary is the tokenizer's; names are labels.")
        else:
            draft.drop(key, "missing-feature", "recipec's [model.config] has no such architecture setting.")
    n_embd = num(cfg.get("n_embd", 4096))
    draft.set(
        "model.config.initializer_range",
        round(math.sqrt(2.0 / 5 / n_embd), 6),
        "model_config",
        approx="LitGPT initialises with std sqrt(2 / 5 / n_embd), output projections smaller; recipec uses one std",
    )


def _precision(draft: Draft, src: _Src, kind: str) -> None:
    p = draft.get("precision")
    table = {
        "bf16-true": ("bfloat16", "no"),
        "bf16-mixed": ("float32", "bf16"),
        "16-true": ("float16", "no"),
        "16-mixed": ("float32", "fp16"),
        "32-true": ("float32", "no"),
        "32": ("float32", "no"),
        "bf16": ("float32", "bf16"),
        "16": ("float32", "fp16"),
    }
    if p is None:
        meaning = "unset: LitGPT picks bf16-mixed on a GPU with bf16 (16-mixed on older GPUs)"
        if src.present("precision"):
            draft.set("model.dtype", "float32", "precision", approx=meaning)
            draft.set("launch.mixed_precision", "bf16", "precision", approx=meaning)
        else:
            draft.default("model.dtype", "float32", "precision", meaning)
            draft.default("launch.mixed_precision", "bf16", "precision", meaning)
        return
    if str(p) in table:
        dtype, mixed = table[str(p)]
        note = "weights in bfloat16 (Fabric's bf16-true)" if p == "bf16-true" else ""
        draft.set("model.dtype", dtype, "precision", note=note)
        draft.set("launch.mixed_precision", mixed, "precision")
    else:
        draft.set("model.dtype", "float32", "precision", approx=f"`{p}` (Transformer Engine or fp64) has no recipec equivalent")
        draft.set("launch.mixed_precision", "bf16", "precision", approx=f"`{p}`")


def _lora(draft: Draft, src: _Src) -> None:
    draft.set("peft.method", "lora", *[k for k in LORA_KEYS if src.present(k)][:1], note="the lora_* keys: LitGPT's LoRA script")
    for key, target in (("lora_r", "peft.r"), ("lora_alpha", "peft.alpha"), ("lora_dropout", "peft.dropout")):
        if src.present(key):
            draft.set(target, src(key), key)
        else:
            draft.default(target, src(key), key, f"{target} = {src(key)}")
    model = str(draft.get("checkpoint_dir") or "").lower()
    switches = {part: bool(src(f"lora_{part}")) for part in ("query", "key", "value", "projection", "mlp", "head")}
    keys = [f"lora_{p}" for p in switches if src.present(f"lora_{p}")]
    approx = None
    if "phi-3" in model or "phi-4" in model or "phi-3.5" in model:
        table = PHI3_MODULES
    elif "phi" in model:
        table = PHI2_MODULES
    elif "falcon" in model:
        table = FALCON_MODULES
    elif any(f in model for f in ("stablelm-base-alpha", "pythia", "neox")):
        table = NEOX_MODULES
    elif any(f in model for f in LLAMA_FAMILY):
        table = LLAMA_MODULES
    else:
        table = LLAMA_MODULES
        approx = "the model's family is not known to recipec import: llama's module names assumed"
    modules: list[str] = []
    if "qkv" in table:
        qkv = [switches["query"], switches["key"], switches["value"]]
        if any(qkv):
            modules += table["qkv"]
            if not all(qkv):
                approx = (
                    f"{table['qkv'][0]} is one fused query/key/value layer: LitGPT adapts only the "
                    f"{'/'.join(n for n, on in zip(('query', 'key', 'value'), qkv) if on)} part of it, peft the whole layer"
                )
    for part in ("query", "key", "value", "projection", "mlp", "head"):
        if part in table and switches[part]:
            modules += table[part]
    for key in ("lora_query", "lora_key", "lora_value", "lora_projection", "lora_mlp", "lora_head"):
        if not src.present(key):
            draft.defaults.append((key, f"{str(src(key)).lower()}"))
    if keys:
        if approx:
            draft.set("peft.target_modules", modules, *keys, approx=approx)
        else:
            draft.set("peft.target_modules", modules, *keys, note="LitGPT's switches as the Hugging Face module names")
    else:
        draft.default("peft.target_modules", modules, "lora_query", "q and v projections")
    q = draft.get("quantize")
    if q is None:
        if src.present("quantize"):
            draft.exact("quantize")
        return
    q = str(q)
    if q == "bnb.nf4":
        draft.set("peft.quantize", "4bit", "quantize", note="bitsandbytes nf4")
    elif q.startswith("bnb.nf4") or q.startswith("bnb.fp4"):
        draft.set(
            "peft.quantize",
            "4bit",
            "quantize",
            approx=f"`{q}`: recipec's 4bit is bitsandbytes nf4 without double quantization",
        )
    elif q == "bnb.int8-training":
        draft.set("peft.quantize", "8bit", "quantize", note="bitsandbytes int8")
    else:
        draft.drop("quantize", "missing-feature", f"recipec quantizes with bitsandbytes 4bit or 8bit only, not {q}.")
        return
    draft.note(
        "With quantize LitGPT trains with bitsandbytes' PagedAdamW (the same AdamW update, its states in paged memory)."
    )
    if int(src("devices") if isinstance(src("devices"), int) else 1) * int(src("num_nodes") or 1) > 1:
        draft.warn("LitGPT refuses quantize with more than one device (NotImplementedError).", "quantize", "devices")


def _data(draft: Draft, src: _Src, kind: str) -> None:
    raw = draft.get("data")
    if isinstance(raw, dict):
        cls = _class(raw.get("class_path", ""))
        args = raw.get("init_args") or {}
        cls_key = "data.class_path"
    elif isinstance(raw, str):
        cls, args, cls_key = _class(raw), {}, "data"
    else:
        cls = "TinyLlama" if kind == "pretrain" else "Alpaca"
        args, cls_key = {}, ""
        if src.present("data"):
            draft.exact("data")
        draft.defaults.append(("data", f"litgpt.data.{cls}"))
    keys = [cls_key] if cls_key else []
    arg = lambda k: f"data.init_args.{k}"  # noqa: E731
    done: set[str] = set()

    def mark_exact(*names: str) -> None:
        for n in names:
            if n in args:
                draft.exact(arg(n))
                done.add(n)

    if "num_workers" in args:
        draft.set("data.num_workers", num(args["num_workers"]), arg("num_workers"))
        done.add("num_workers")
    for n in ("download_dir", "access_token"):
        if n in args:
            draft.drop(arg(n), "not-for-training", "Where LitGPT keeps its download, or a hub credential.")
            done.add(n)

    if cls in HUB_DATA or cls in ("JSON", "FLAN", "LongForm", "LIMA"):
        _sft_data(draft, src, cls, args, keys, done)
    elif cls in ("TinyLlama", "MicroLlama"):
        use_star = args.get("use_starcoder", True) and cls == "TinyLlama"
        how = (
            f"LitGPT's {cls} reads SlimPajama{' and StarCoder' if use_star else ''} tokenized into litdata chunks "
            "by litgpt/data/prepare_slimpajama.py" + (" and prepare_starcoder.py" if use_star else "") + " from these hub datasets"
        )
        draft.set("data.sources[0].name", "slimpajama")
        draft.set("data.sources[0].hub.repo", "cerebras/SlimPajama-627B", *keys, approx=how)
        if "data_path" in args:
            draft.approx("the local litdata chunks of the hub datasets", arg("data_path"))
            done.add("data_path")
        if use_star:
            draft.set("data.sources[0].weight", 0.693584, *keys, note="tinyllama.py's CombinedStreamingDataset weights")
            draft.set("data.sources[1].name", "starcoder")
            draft.set("data.sources[1].hub.repo", "bigcode/starcoderdata", *keys, approx=how)
            draft.set("data.sources[1].weight", 0.306416, *keys, note="tinyllama.py's CombinedStreamingDataset weights")
        mark_exact("use_starcoder")
        i = 2 if use_star else 1
        draft.set(f"data.sources[{i}].name", "slimpajama_val")
        draft.set(f"data.sources[{i}].hub.repo", "cerebras/SlimPajama-627B", *keys, approx=how)
        draft.set(f"data.sources[{i}].hub.split", "validation", *keys, note="LitGPT validates on slimpajama/val")
        draft.set(f"data.sources[{i}].split", "eval", *keys, note="LitGPT validates on slimpajama/val")
        draft.set("data.eval_fraction", 0.0, *keys, note=f"{cls} holds out SlimPajama's validation split, no share of the training data")
    elif cls == "TextFiles":
        train_dir = str(args.get("train_data_path", "")).rstrip("/")
        if train_dir:
            draft.set("data.sources[0].path", f"{train_dir}/*.txt", arg("train_data_path"))
            draft.set("data.sources[0].format", "text", arg("train_data_path"), note="one document per .txt file")
            done.add("train_data_path")
        val_dir = args.get("val_data_path")
        if val_dir:
            draft.set("data.sources[1].name", "val")
            draft.set("data.sources[1].path", f"{str(val_dir).rstrip('/')}/*.txt", arg("val_data_path"))
            draft.set("data.sources[1].split", "eval", arg("val_data_path"))
            draft.set("data.eval_fraction", 0.0, arg("val_data_path"), note="the validation files are their own source")
            done.add("val_data_path")
        else:
            draft.set(
                "data.eval_fraction",
                0.05,
                *keys,
                approx="LitGPT's TextFiles holds out the first .txt file (in sorted order) for validation, not a share of the documents",
            )
            mark_exact("val_data_path")
        if keys:
            draft.exact(*keys)
    elif cls in ("OpenWebText", "TinyStories"):
        repo = {"OpenWebText": "Skylion007/openwebtext", "TinyStories": "roneneldan/TinyStories"}[cls]
        draft.set(
            "data.sources[0].hub.repo",
            repo,
            *keys,
            approx=f"LitGPT's {cls} tokenizes this dataset into litdata chunks under data_path",
        )
        if "data_path" in args:
            draft.approx("the local litdata chunks of the hub dataset", arg("data_path"))
            done.add("data_path")
        if "val_split_fraction" in args:
            draft.set("data.eval_fraction", num(args["val_split_fraction"]), arg("val_split_fraction"))
            done.add("val_split_fraction")
    else:
        draft.drop(
            cls_key or "data",
            "missing-feature",
            f"recipec cannot read LitGPT's {cls} data (litdata chunks or a record format recipec lacks): give [[data.sources]] by hand.",
        )
        draft.warn(f"data `{cls}` is not imported: the recipe has no data source; add [[data.sources]] before running it.", cls_key or "data")
    if "seed" in args:  # LitGPT seeds its split and its shuffle with it, the model with the top-level seed
        draft.set("data.seed", int(num(args["seed"])), arg("seed"))
        done.add("seed")
    for n in args:
        if n not in done:
            key = arg(n)
            if key in draft.values and key not in draft.ledger:
                draft.drop(key, "no-equivalent", f"{cls} setting recipec has no equivalent for.")
    if isinstance(raw, dict) and not args and "data.init_args" in draft.values:
        draft.exact("data.init_args")
    # packing and sequence length
    if kind == "pretrain":
        draft.set(
            "data.packing",
            True,
            note="LitGPT's litdata TokensLoader cuts the token stream into blocks; its blocks hold seq_len + 1 tokens, recipec's seq_len",
        )


def _sft_data(draft: Draft, src: _Src, cls: str, args: dict[str, Any], keys: list[str], done: set[str]) -> None:
    arg = lambda k: f"data.init_args.{k}"  # noqa: E731
    records = "alpaca"
    val_default: float | None = None
    if cls in HUB_DATA:
        repo, split, how, records, val_default = HUB_DATA[cls]
        if "repo_id" in args:
            draft.set("data.sources[0].hub.repo", str(args["repo_id"]), arg("repo_id"), *keys)
            done.add("repo_id")
        elif how:
            draft.set("data.sources[0].hub.repo", repo, *keys, approx=how)
        elif keys:
            draft.set("data.sources[0].hub.repo", repo, *keys, note=f"the dataset LitGPT's {cls} loads")
        else:
            draft.set("data.sources[0].hub.repo", repo, note=f"the dataset LitGPT's default {cls} loads")
        if split != "train":
            draft.set("data.sources[0].hub.split", split, *keys)
        if cls == "Deita":
            multi = bool(args.get("include_multiturn_conversations", False))
            if "include_multiturn_conversations" in args:
                done.add("include_multiturn_conversations")
            if multi:
                draft.exact(arg("include_multiturn_conversations"))
            else:
                first = "LitGPT keeps only the first user/assistant turn of each conversation"
                draft.approx(first, *([arg("include_multiturn_conversations")] if "include_multiturn_conversations" in args else keys))
                if not keys:
                    draft.note(f"Deita: {first}; recipec trains on whole conversations.")
            draft.note("Deita: LitGPT evaluates on the test_sft split; recipec holds out a share of train_sft.")
    elif cls == "JSON":
        path = args.get("json_path")
        if isinstance(path, str):
            if path.endswith((".json", ".jsonl")):
                draft.set("data.sources[0].path", path, arg("json_path"), *keys)
            else:
                base = path.rstrip("/")
                draft.set("data.sources[0].path", f"{base}/train.json", arg("json_path"), *keys)
                draft.set("data.sources[1].name", "val")
                draft.set("data.sources[1].path", f"{base}/val.json", arg("json_path"))
                draft.set("data.sources[1].records", "alpaca", arg("json_path"))
                draft.set("data.sources[1].split", "eval", arg("json_path"), note="the directory's val.json")
                draft.set("data.eval_fraction", 0.0, arg("json_path"), note="the directory's val.json is the held-out set")
            done.add("json_path")
        draft.note("JSON data: records with instruction, input (optional) and output, as LitGPT's JSON module reads them.")
    elif cls == "FLAN":
        draft.set(
            "data.sources[0].hub.repo",
            "Muennighoff/flan",
            *keys,
            approx="LitGPT downloads the subsets' jsonl files from this repository and uses its own train/test files",
        )
        draft.set("data.sources[0].fields", {"prompt": "inputs", "completion": "targets"}, *keys)
        records = "prompt_completion"
        if "url" in args:
            draft.approx("the hub repository of FLAN's files", arg("url"))
            done.add("url")
        if "subsets" in args and args["subsets"] is not None:
            draft.set("data.sources[0].hub.data_files", [f"{s.strip()}_train.jsonl" for s in str(args["subsets"]).split(",")], arg("subsets"))
            done.add("subsets")
    elif cls == "LongForm":
        draft.set(
            "data.sources[0].hub.repo",
            "akoksal/LongForm",
            *keys,
            approx="LitGPT downloads the LongForm files from its GitHub repository; akoksal/LongForm is the hub copy",
        )
        draft.set("data.sources[0].fields", {"prompt": "input", "completion": "output"}, *keys)
        records = "prompt_completion"
    else:  # LIMA: conversations as a plain list of strings
        draft.drop(
            keys[0] if keys else "data",
            "missing-feature",
            "LIMA's records are lists of alternating strings, a record format recipec lacks: give [[data.sources]] by hand.",
        )
        draft.warn("data `LIMA` is not imported: the recipe has no data source; add [[data.sources]] before running it.", *(keys or ["data"]))
        return
    draft.set("data.sources[0].records", records, *keys) if keys else draft.set("data.sources[0].records", records)
    mask = args.get("mask_prompt", False)
    on = ("assistant" if records != "prompt_completion" else "completion") if mask else "all"
    if draft.value("data.sources[0].train_on") is None:
        if "mask_prompt" in args:
            draft.set("data.sources[0].train_on", on, arg("mask_prompt"), note="LitGPT trains on the prompt too" if not mask else "")
        else:
            draft.default("data.sources[0].train_on", on, "data.init_args.mask_prompt", "false: the loss sees the prompt too")
    elif "mask_prompt" in args:
        draft.exact(arg("mask_prompt"))
    done.add("mask_prompt")
    style = args.get("prompt_style", "flan" if cls == "FLAN" else "longform" if cls == "LongForm" else "alpaca")
    if style == "alpaca" and records == "alpaca":
        # prompts.Alpaca: Stanford Alpaca's prompt text, the response and EOS after it (SFTDataset)
        for i in range(len(draft.sources)):  # the training source, and a JSON directory's val.json
            if draft.value(f"data.sources[{i}].records") == "alpaca":
                draft.set(f"data.sources[{i}].prompt_style", "alpaca", *([arg("prompt_style")] if "prompt_style" in args else []))
        done.add("prompt_style")
    else:
        why = (
            f"LitGPT wraps each example in its `{style}` prompt text (\"Below is an instruction...### Response:\"); "
            "recipec renders it with the tokenizer's chat template: set [tokenizer] chat_template to reproduce the prompt"
        )
        if "prompt_style" in args:
            draft.approx(why, arg("prompt_style"))
            done.add("prompt_style")
        else:
            draft.note(why + ".")
    if "ignore_index" in args:
        if num(args["ignore_index"]) == -100:
            draft.exact(arg("ignore_index"))
        else:
            draft.drop(arg("ignore_index"), "no-equivalent", "recipec masks labels with -100.")
        done.add("ignore_index")
    if "val_split_fraction" in args and args["val_split_fraction"] is not None:
        draft.set(
            "data.eval_fraction",
            num(args["val_split_fraction"]),
            arg("val_split_fraction"),
            approx="the same share, other examples: recipec splits with recipe.seed",
        )
        done.add("val_split_fraction")
    elif val_default is not None and draft.value("data.eval_fraction") is None:
        draft.default("data.eval_fraction", val_default, "data.init_args.val_split_fraction", f"{cls} holds out {val_default}")
        if "val_split_fraction" in args:
            draft.exact(arg("val_split_fraction"))
            done.add("val_split_fraction")
    elif draft.value("data.eval_fraction") is None:
        if cls == "Deita":
            draft.set("data.eval_fraction", 0.05, *keys, approx="LitGPT evaluates on Deita's test_sft split")
        elif cls in ("FLAN", "LongForm"):
            draft.set("data.eval_fraction", 0.05, *keys, approx=f"LitGPT evaluates on {cls}'s own test files")
        if "val_split_fraction" in args:
            draft.exact(arg("val_split_fraction"))
            done.add("val_split_fraction")
    for n in ("file_url", "file_name"):
        if n in args:
            draft.approx("the file LitGPT downloads; its hub copy is the source", arg(n))
            done.add(n)


def _length_and_schedule(draft: Draft, src: _Src, kind: str, ga: int, world: int) -> None:
    warm = src("train.lr_warmup_steps")
    frac = src("train.lr_warmup_fraction")
    min_lr = src("train.min_lr")
    if kind != "pretrain":
        # -- the run's length
        epochs, max_steps = src("train.epochs"), src("train.max_steps")
        if max_steps is not None and epochs is not None:
            draft.set(
                "train.max_steps",
                int(max_steps),
                "train.max_steps",
                approx=f"LitGPT stops at whichever comes first, {epochs} epoch(s) or {max_steps} steps, and decays the LR over the shorter",
            )
            draft.approx("recipec takes one length: train.max_steps", "train.epochs")
        elif max_steps is not None:
            draft.set("train.max_steps", int(max_steps), "train.max_steps")
            if src.present("train.epochs"):
                draft.exact("train.epochs")
        elif epochs is not None:
            micro = int(src("train.micro_batch_size"))
            rounding = (
                None
                if micro == 1 and ga == 1
                else f"LitGPT's epoch is ceil(examples / {micro}) micro-batches, and it runs floor(epochs * micro-batches / {ga}) "
                f"steps while its cosine spans epochs * (micro-batches // {ga}); recipec runs and spans "
                f"epochs * (examples // batch_size): up to a few steps fewer"
            )
            if src.present("train.epochs"):
                draft.set("train.epochs", epochs, "train.epochs", approx=rounding)
            else:
                draft.default("train.epochs", epochs, "train.epochs", f"{epochs} epochs")
            if src.present("train.max_steps"):
                draft.exact("train.max_steps")
        if epochs is None:
            draft.warn("LitGPT's fine-tuning scripts require train.epochs (validate_args raises without it).", "train.epochs")
        # -- the schedule: LambdaLR(step / W) for W steps, then CosineAnnealingLR to 0
        if warm and max_steps is not None and int(warm) >= int(max_steps):
            # the milestone is never reached: the whole run is the warmup's ramp, k / W
            draft.set(
                "schedule.phases",
                [{"name": "warmup", "shape": "linear", "start": 0.0, "end": int(max_steps) / int(warm)}],
                "train.lr_warmup_steps",
                "train.max_steps",
                note=f"the run ends inside LitGPT's warmup: step k gets k / {int(warm)} of the peak, never decaying",
            )
            draft.warn(
                f"train.lr_warmup_steps ({warm}) is not below train.max_steps ({max_steps}): the LR only warms up, "
                f"to {int(max_steps) / int(warm):g} of the peak (LitGPT warns about it too).",
                "train.lr_warmup_steps",
                "train.max_steps",
            )
        elif warm:
            draft.set("schedule.warmup", int(warm), "train.lr_warmup_steps") if src.present("train.lr_warmup_steps") else draft.default(
                "schedule.warmup", int(warm), "train.lr_warmup_steps", f"{warm} steps"
            )
        else:
            draft.set("schedule.warmup", 0, "train.lr_warmup_steps", approx="LitGPT's LambdaLR divides by the warmup steps: 0 or null fails")
            draft.warn("train.lr_warmup_steps is 0 or null: LitGPT's fine-tuning LR scheduler divides by it and fails.", "train.lr_warmup_steps")
        if draft.value("schedule.phases") is None:
            draft.set("schedule.warmup_start_ratio", 0.0, note="LitGPT's warmup multiplier step / warmup_steps starts at 0")
            draft.set("schedule.decay", "cosine", note="LitGPT's fine-tuning scripts: CosineAnnealingLR after the warmup")
            draft.set("schedule.min_lr_ratio", 0.0, note="CosineAnnealingLR's eta_min is 0; LitGPT's fine-tuning ignores train.min_lr")
        if src.present("train.min_lr"):
            draft.drop(
                "train.min_lr",
                "ignored-by-tool",
                "LitGPT's fine-tuning scripts decay the LR to 0 (CosineAnnealingLR without eta_min) and never read min_lr.",
            )
            if min_lr:
                draft.warn(
                    f"train.min_lr = {min_lr} is ignored by LitGPT's fine-tuning scripts: they never read it, and "
                    "their cosine decays to 0, as the recipe's does.",
                    "train.min_lr",
                )
        # -- refused by validate_args
        for key in ("train.max_tokens", "train.max_norm", "train.tie_embeddings", "train.lr_warmup_fraction"):
            if src.present(key):
                if draft.get(key) is None:
                    draft.exact(key)
                else:
                    draft.drop(key, "ignored-by-tool", "LitGPT's fine-tuning scripts refuse it (validate_args raises).")
                    draft.warn(f"{key} is set, but LitGPT's fine-tuning scripts refuse it: the run would not start.", key)
        draft.set("optim.grad_clip", 0.0, note="LitGPT's fine-tuning scripts do not clip gradients")
        # -- sequence length: padded per micro-batch, truncated to max_seq_length
        seq = src("train.max_seq_length")
        draft.set("data.packing", False, note="LitGPT pads each micro-batch to its longest example, no packing")
        if seq is not None:
            draft.set("data.seq_len", int(seq), "train.max_seq_length", note="longer examples are truncated")
        else:
            how = "null: LitGPT trains on whole examples (up to the model's context); recipec needs a bound: 2048"
            if src.present("train.max_seq_length"):
                draft.set("data.seq_len", 2048, "train.max_seq_length", approx=how)
            else:
                draft.set("data.seq_len", 2048, approx=how)
        return

    # -- pretraining: get_lr per micro-batch iteration
    max_tokens = src("train.max_tokens")
    seq = src("train.max_seq_length")
    block = draft.value("model.config.max_position_embeddings")
    seq_len = int(seq) if seq is not None else (int(block) if block else None)
    if seq is not None:
        draft.set("data.seq_len", seq_len, "train.max_seq_length")
    elif seq_len:
        draft.set("data.seq_len", seq_len, note="LitGPT trains on the model's block_size")
        if src.present("train.max_seq_length"):
            draft.exact("train.max_seq_length")
    else:
        draft.set("data.seq_len", 2048, approx="the block_size of the loaded model; 2048 assumed")
        if src.present("train.max_seq_length"):
            draft.approx("the loaded model's block_size", "train.max_seq_length")
    if max_tokens is not None:
        gbs = draft.value("train.batch_size")
        per_step = gbs * (seq_len or 2048)
        exact_len = int(max_tokens) % per_step == 0
        if src.present("train.max_tokens"):
            if exact_len:
                draft.set("train.tokens", int(max_tokens), "train.max_tokens")
            else:
                draft.set(
                    "train.tokens",
                    int(max_tokens),
                    "train.max_tokens",
                    approx=f"LitGPT rounds down to whole micro-batch iterations ({int(max_tokens) // per_step} steps), recipec up",
                )
        else:
            draft.default("train.tokens", int(max_tokens), "train.max_tokens", "3e12 tokens")
        if -(-int(max_tokens) // per_step) > 10_000_000:
            draft.warn(
                f"train.max_tokens {int(max_tokens):,} makes more than 10,000,000 steps of {per_step:,} tokens, "
                "more than a recipec run takes: lower train.tokens or raise train.batch_size.",
                "train.max_tokens",
            )
    else:
        draft.warn("pretrain.py requires train.max_tokens (validate_args raises without it).", "train.max_tokens")
    for key, why in (
        ("train.epochs", "pretrain.py refuses it (validate_args raises)"),
        ("train.max_steps", "pretrain.py only warns about it: the run's length is train.max_tokens"),
        ("train.max_time", "pretrain.py never reads it"),
    ):
        if src.present(key):
            if draft.get(key) is None:
                draft.exact(key)
            else:
                draft.drop(key, "ignored-by-tool", why[0].upper() + why[1:] + ".")
                draft.warn(f"{key} = {draft.get(key)} has no effect: {why}.", key)
    # warmup
    lag = "" if ga == 1 else (
        f"; LitGPT sets the LR every micro-batch and steps with the LR of the last of {ga}: "
        f"step j gets ((j + 1) * {ga} - 1) / ({ga} * W) of the peak in the warmup, recipec j / W"
    )
    if frac:
        draft.set(
            "schedule.warmup",
            float(frac),
            "train.lr_warmup_fraction",
            approx="LitGPT's fraction is of one epoch of the streaming data, recipec's of the run" + lag,
        )
        if src.present("train.lr_warmup_steps"):
            draft.exact("train.lr_warmup_steps") if not warm else draft.approx("overridden by lr_warmup_fraction", "train.lr_warmup_steps")
    else:
        if src.present("train.lr_warmup_steps"):
            if lag:
                draft.set("schedule.warmup", int(warm or 0), "train.lr_warmup_steps", approx=lag[2:])
            else:
                draft.set("schedule.warmup", int(warm or 0), "train.lr_warmup_steps")
        else:
            draft.default("schedule.warmup", int(warm), "train.lr_warmup_steps", f"{warm} optimizer steps")
        if src.present("train.lr_warmup_fraction"):
            draft.exact("train.lr_warmup_fraction")
    draft.set("schedule.warmup_start_ratio", 0.0, note="get_lr's warmup starts at 0")
    draft.set("schedule.decay", "cosine", note="pretrain.py's get_lr: a cosine to train.min_lr")
    if src.present("train.min_lr"):
        draft.set("schedule.min_lr", float(min_lr), "train.min_lr")
    else:
        draft.default("schedule.min_lr", float(min_lr), "train.min_lr", f"{min_lr}")
    max_norm = src("train.max_norm")
    if src.present("train.max_norm"):
        if max_norm is None:
            draft.warn("pretrain.py requires train.max_norm (validate_args raises without it).", "train.max_norm")
            draft.set("optim.grad_clip", 0.0, "train.max_norm", approx="null: pretrain.py refuses it")
        else:
            draft.set("optim.grad_clip", float(max_norm), "train.max_norm")
    else:
        draft.default("optim.grad_clip", float(max_norm), "train.max_norm", f"clip at {max_norm}")
    tie = src("train.tie_embeddings")
    if src.present("train.tie_embeddings"):
        if draft.value("model.init") is not None:
            draft.set("model.config.tie_word_embeddings", bool(tie), "train.tie_embeddings")
        elif tie:
            draft.drop("train.tie_embeddings", "missing-feature", "recipec cannot tie the embeddings of a loaded model.")
        else:
            draft.exact("train.tie_embeddings")
    draft.set("model.compile", True, note="pretrain.py compiles the model with torch.compile")


def _optimizer(draft: Draft, src: _Src, kind: str) -> None:
    raw = draft.get("optimizer")
    if isinstance(raw, dict):
        cls_path = str(raw.get("class_path", ""))
        args = raw.get("init_args") or {}
        key = "optimizer.class_path"
    elif isinstance(raw, str):
        cls_path, args, key = raw, {}, "optimizer"
    else:
        cls_path, args, key = "AdamW", {}, ""
        if src.present("optimizer"):
            draft.exact("optimizer")
    name = _class(cls_path)
    low = cls_path.lower()
    if name in ("AdamW", "Adam") and "bnb" not in low and "bitsandbytes" not in low:
        optim = "adamw"
        if name == "Adam":
            optim_note = "torch's Adam adds weight decay to the gradient; AdamW decouples it"
        else:
            optim_note = ""
    elif name in ("AdamW8bit",):
        optim, optim_note = "adamw_8bit", ""
    elif name in ("PagedAdamW8bit",):
        optim, optim_note = "paged_adamw_8bit", ""
    elif name == "SGD":
        optim, optim_note = "sgd", ""
    elif name == "Lion":
        optim, optim_note = "lion", ""
    else:
        optim, optim_note = "adamw", f"recipec has no {cls_path}"
    if key:
        if optim_note:
            draft.set("optim.name", optim, key, approx=optim_note)
        else:
            draft.set("optim.name", optim, key)
    else:
        draft.default("optim.name", optim, "optimizer", "torch.optim.AdamW")
    defaults = ADAMW if optim in ("adamw", "adamw_8bit", "paged_adamw_8bit") else {}
    if optim == "sgd":
        defaults = {"weight_decay": 0.0, "momentum": 0.0, "nesterov": False}
    for arg, value in args.items():
        k = f"optimizer.init_args.{arg}"
        if arg in ("lr", "weight_decay", "eps", "momentum", "nesterov"):
            draft.set(f"optim.{arg}", num(value), k)
        elif arg == "betas":
            draft.set("optim.betas", [num(b) for b in value], k)
        elif arg in ("fused", "foreach"):
            if value:
                draft.set("optim.implementation", arg, k)
            else:
                draft.exact(k)
        elif arg == "amsgrad" and not value:
            draft.exact(k)
        else:
            draft.drop(k, "missing-feature", f"recipec's {optim} has no `{arg}`.")
    for arg, value in defaults.items():
        if arg not in args:
            draft.default(f"optim.{arg}", value, f"optimizer.init_args.{arg}", f"torch's default {value}")
    if kind == "pretrain" and optim == "adamw" and "fused" not in args:
        draft.set("optim.implementation", "fused", note="pretrain.py asks for the fused AdamW on a GPU")
    wd = draft.value("optim.weight_decay", 0)
    if wd:
        draft.set("optim.decay", "all", note="LitGPT passes model.parameters(): biases and norms decay too")


def _eval_and_saving(draft: Draft, src: _Src, kind: str, ga: int) -> None:
    for key, target in (("eval.interval", "train.eval_every"), ("eval.max_iters", "train.eval_batches")):
        if src.present(key):
            draft.set(target, int(src(key)), key)
        else:
            draft.default(target, src(key), key, f"{target} = {src(key)}")
    if src.present("eval.initial_validation"):
        if draft.get("eval.initial_validation") and kind != "pretrain":
            draft.set(
                "train.eval_at_start",
                True,
                "eval.initial_validation",
                approx="LitGPT's fine-tuning scripts validate on the whole validation set before the first step; recipec reads eval_batches",
            )
        else:
            draft.set("train.eval_at_start", bool(draft.get("eval.initial_validation")), "eval.initial_validation")
    else:
        draft.default("train.eval_at_start", src("eval.initial_validation"), "eval.initial_validation", "no validation before the first step")
    if src.present("eval.final_validation"):
        if draft.get("eval.final_validation") is False:
            # turned off, but recipec evaluates at the end whatever: one evaluation more, same training
            draft.approx("recipec always evaluates at the end of the run", "eval.final_validation")
        elif kind != "pretrain":
            draft.approx(
                "LitGPT's fine-tuning scripts validate on the whole validation set at the end; recipec reads eval_batches",
                "eval.final_validation",
            )
        else:
            draft.exact("eval.final_validation")
    for key in ("eval.max_new_tokens", "eval.evaluate_example"):
        if src.present(key):
            if kind == "pretrain" and key == "eval.max_new_tokens" and draft.get(key) is not None:
                draft.drop(key, "ignored-by-tool", "pretrain.py refuses it (validate_args raises).")
                draft.warn(f"{key} is set, but pretrain.py refuses it: the run would not start.", key)
            elif draft.get(key) is None:
                draft.exact(key)
                if kind != "pretrain" and key == "eval.max_new_tokens":
                    draft.warn(
                        "LitGPT's fine-tuning scripts require eval.max_new_tokens (validate_args raises without it).", key
                    )
            else:
                draft.drop(key, "not-for-training", "A sample generation printed at each evaluation.")
    save = src("train.save_interval")
    if src.present("train.save_interval"):
        draft.set("train.save_every", int(save or 0), "train.save_interval")
    else:
        draft.default("train.save_every", save, "train.save_interval", f"every {save} steps")
    draft.set("train.keep_last", 0, note="LitGPT keeps every step-* checkpoint")
    log = int(src("train.log_interval") or 1)
    if kind == "pretrain" or ga == 1:
        every = log
        approx = None
    else:
        every = max(1, round(log / ga))
        approx = None if log % ga == 0 else f"LitGPT logs every {log} micro-batch iterations, {log}/{ga} steps"
    if src.present("train.log_interval"):
        if approx:
            draft.set("train.log_every", every, "train.log_interval", approx=approx)
        else:
            draft.set("train.log_every", every, "train.log_interval", note="" if kind == "pretrain" or ga == 1 else f"{log} iterations of {ga} micro-batches")
    else:
        draft.default("train.log_every", every, "train.log_interval", f"every {log} iteration(s)")


def _rest(draft: Draft, src: _Src, kind: str) -> None:
    if src.present("seed"):
        draft.set("recipe.seed", int(src("seed")), "seed")
    else:
        draft.default("recipe.seed", src("seed"), "seed", f"{src('seed')}")
    out = draft.get("out_dir")
    if isinstance(out, str):
        draft.set("output.dir", out, "out_dir")
    logger = draft.get("logger_name")
    if logger in ("tensorboard", "wandb", "mlflow"):
        draft.set("output.trackers", [logger], "logger_name")
    elif logger == "csv":
        draft.exact("logger_name")  # metrics.jsonl
    elif src.present("logger_name"):
        draft.drop("logger_name", "not-for-training", "A metrics logger recipec has no tracker for.")
    for key in draft.keys_under("log"):
        draft.drop(key, "not-for-training", "Settings of the experiment logger.")
    if src.present("access_token"):
        draft.drop("access_token", "not-for-training", "A hub credential; recipec reads HF_TOKEN or the hub cache.")
    if src.present("resume"):
        if draft.get("resume") in (False, None):
            draft.exact("resume")
        else:
            draft.drop("resume", "no-equivalent", "Resuming an interrupted run is not part of a recipe.")
    for key in ("train.max_time",):
        if src.present(key) and key not in draft.ledger:
            if draft.get(key) is None:
                draft.exact(key)
            else:
                draft.drop(key, "no-equivalent", "recipec has no wall-clock limit.")
    for key in ("train", "eval", "log", "optimizer.init_args"):
        if key in draft.values and key not in draft.ledger:
            draft.exact(key)  # an empty table
