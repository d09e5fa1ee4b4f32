"""`recipec import --from ludwig`: a Ludwig LLM fine-tuning config (`model_type: llm`,
`ludwig train --config FILE --dataset DATA`) as a recipe.

The config names no dataset (`ludwig train --dataset` does): `recipec import --data
PATH_OR_HUB_ID` supplies it. Its records are the config's features: the text input feature is
the prompt, the text output feature the completion.

What Ludwig 0.17.8 does, from its source (ludwig/schema/model_types/llm.py, trainer.py,
llms/peft.py, llms/quantization.py, lr_scheduler.py, modules/lr_scheduler.py,
trainers/trainer.py, trainers/trainer_dpo.py, utils/llm_utils.py):

- `trainer.type` defaults to `none` (zero-shot inference, nothing trained); `finetune`, `dpo`,
  `kto` and `orpo` train. Their config class is the ECD trainer's with batch_size 1 and
  eval_batch_size 2: learning_rate 0.001, epochs 100, optimizer adam (betas 0.9/0.999, eps 1e-8,
  weight_decay 0), gradient clipping to a global norm of 0.5, early_stop 5, a constant LR
  without warmup, one evaluation and checkpoint per epoch.
- A "step" is a micro-batch: `train_steps`, `steps_per_checkpoint`, the warmup and the decay
  count micro-batches (the LR scheduler steps after every one), the optimizer steps every
  `gradient_accumulation_steps` of them.
- The DPO, KTO and ORPO trainers compute their preference loss only when an output feature's
  name holds "rejected"; otherwise they train the standard next-token loss on the output
  feature (trainer_dpo.py), as `finetune` does. Their DPO takes no reference model (the
  log-ratios are the policy's log-probabilities alone), and KTO and ORPO with rejected data fail
  (`dpo_loss` knows only the sigmoid and IPO losses).
- Keys a config class does not have are stripped with a warning (pydantic pre-validation), so
  a typo is silently ignored: recipec refuses unknown keys instead, except the few that Ludwig's
  own example configs write (`trainer.beta`, KTO's weights), which are not imported.
- LoRA's alpha defaults to 2 * r; the model loads in float32, or in the 4-bit compute dtype
  (float16) when quantized with bitsandbytes (nf4, double quantization).
"""

from __future__ import annotations

import math
import string
from fractions import Fraction
from typing import Any

from ..diagnostics import Diagnostic, RecipeError
from ..runtime.formats import prompt_fields
from .core import Draft, num
from .hf_trainer import data_option

VERSION = "ludwig 0.17.8"

TRAINER_KEYS = (
    # BaseTrainerConfig, ECDTrainerConfig (FineTuneTrainerConfig's base), LLMTrainerConfig
    "type", "validation_field", "validation_metric", "early_stop", "skip_all_evaluation", "enable_profiling",
    "profiler", "profiler.*", "learning_rate", "learning_rate_scheduler", "epochs", "checkpoints_per_epoch",
    "train_steps", "eval_steps", "steps_per_checkpoint", "effective_batch_size", "batch_size", "max_batch_size",
    "gradient_accumulation_steps", "eval_batch_size", "evaluate_training_set", "optimizer",
    "regularization_type", "regularization_lambda", "should_shuffle", "increase_batch_size_on_plateau",
    "increase_batch_size_on_plateau_patience", "increase_batch_size_on_plateau_rate",
    "increase_batch_size_eval_metric", "increase_batch_size_eval_split", "gradient_clipping",
    "learning_rate_scaling", "bucketing_field", "use_mixed_precision", "compile", "enable_gradient_checkpointing",
    "layers_to_freeze_regex", "loss_balancing", "loss_balancing_alpha", "loss_balancing_lr",
    "loss_balancing_preference_vector", "loss_balancing_preference_vector[*]", "loss_balancing_tchebycheff_weight",
    "contrastive_pretrain_epochs", "contrastive_pretrain_temperature", "contrastive_pretrain_projection_dim",
    "contrastive_pretrain_learnable_temperature", "modality_dropout", "model_soup", "model_soup_top_k",
    "base_learning_rate", "packing", "packing_max_sequences_per_pack",
    # DPOTrainerConfig, KTOTrainerConfig, ORPOTrainerConfig
    "dpo_beta", "dpo_loss_type", "dpo_label_smoothing", "kto_beta", "orpo_beta", "rejected_column",
)

SCHEDULER_KEYS = (
    "decay", "decay_rate", "decay_steps", "staircase", "reduce_on_plateau", "reduce_on_plateau_patience",
    "reduce_on_plateau_rate", "warmup_evaluations", "warmup_fraction", "reduce_eval_metric", "reduce_eval_split",
    "t_0", "t_mult", "eta_min", "max_lr", "pct_start", "div_factor", "final_div_factor", "inverse_sqrt_warmup_steps",
    "polynomial_power", "polynomial_end_lr", "wsd_warmup_fraction", "wsd_stable_fraction", "wsd_decay_fraction",
)

OPTIMIZER_KEYS = (
    "type", "betas", "betas[*]", "eps", "weight_decay", "amsgrad", "momentum", "dampening", "nesterov",
    "block_wise", "percentile_clipping", "lr_decay", "initial_accumulator_value", "rho", "alpha", "centered",
    "momentum_decay", "max_iter", "max_eval", "tolerance_grad", "tolerance_change", "history_size", "line_search_fn",
)

ADAPTER_KEYS = (
    # BaseAdapterConfig, LoraConfig (and AdaLoRA's), OFT, LN tuning, IA3, VeRA, LoHa, LoKr
    "type", "pretrained_adapter_weights", "postprocessor.merge_adapter_into_base_model", "postprocessor.progressbar",
    "r", "alpha", "dropout", "bias_type", "target_modules", "use_rslora", "use_dora", "loraplus_lr_ratio",
    "init_lora_weights", "eva_config.*", "loftq_config.loftq_bits", "loftq_config.loftq_iter", "rank_pattern.*",
    "alpha_pattern.*", "layer_replication", "layer_replication[*]", "oft_block_size", "module_dropout", "coft", "eps",
    "feedforward_modules", "fan_in_fan_out", "modules_to_save", "init_ia3_weights", "projection_prng_key",
    "target_r", "init_r", "tinit", "tfinal", "delta_t", "beta1", "beta2", "orth_reg_weight", "total_step",
)

QUANTIZATION_KEYS = (
    "backend", "mode", "qat", "bits", "llm_int8_threshold", "llm_int8_has_fp16_weight", "bnb_4bit_compute_dtype",
    "bnb_4bit_use_double_quant", "bnb_4bit_quant_type",
)

FEATURE_KEYS = ("name", "type", "column", "proc_column", "tied", "preprocessing.*", "encoder.*", "decoder.*", "loss.*")

IGNORED = {
    # keys of Ludwig's own example configs (examples/alignment/) that no trainer config class has
    "trainer.beta": "the trainer config classes have no `beta` (DPO's is `dpo_beta`, KTO's `kto_beta`, ORPO's `orpo_beta`): Ludwig strips it with a warning",
    "trainer.loss_type": "the DPO trainer's loss is `dpo_loss_type`: Ludwig strips `loss_type` with a warning",
    "trainer.desirable_weight": "KTOTrainerConfig has no `desirable_weight`: Ludwig strips it with a warning",
    "trainer.undesirable_weight": "KTOTrainerConfig has no `undesirable_weight`: Ludwig strips it with a warning",
}
"""Keys Ludwig's examples write that Ludwig strips unread, and why."""

KNOWN = (
    "model_type", "base_model", "trust_remote_code", "is_multimodal",
    *(f"input_features[*].{k}" for k in FEATURE_KEYS),
    *(f"output_features[*].{k}" for k in FEATURE_KEYS),
    "prompt.template", "prompt.task", "prompt.retrieval.*",
    "preprocessing.sample_ratio", "preprocessing.sample_size", "preprocessing.oversample_minority",
    "preprocessing.undersample_majority", "preprocessing.split.type", "preprocessing.split.column",
    "preprocessing.split.probabilities", "preprocessing.split.probabilities[*]", "preprocessing.global_max_sequence_length",
    *(f"trainer.{k}" for k in TRAINER_KEYS),
    *(f"trainer.learning_rate_scheduler.{k}" for k in SCHEDULER_KEYS),
    *(f"trainer.optimizer.{k}" for k in OPTIMIZER_KEYS),
    "trainer.gradient_clipping.clipglobalnorm", "trainer.gradient_clipping.clipnorm", "trainer.gradient_clipping.clipvalue",
    *IGNORED,
    "adapter", *(f"adapter.{k}" for k in ADAPTER_KEYS),
    "adapters.*", "quantization", *(f"quantization.{k}" for k in QUANTIZATION_KEYS),
    "generation.*", "model_parameters.*", "backend", "backend.*", "defaults.*", "hyperopt.*",
)

MARKERS = ("input_features", "output_features", "adapter.type", "trainer.learning_rate_scheduler", "trainer.gradient_accumulation_steps", "trainer.type")
"""Ludwig's feature lists, and its nested adapter and trainer tables (axolotl's `adapter` is a string,
and `model_type` and `base_model` are axolotl keys too)."""

# FineTuneTrainerConfig (ECDTrainerConfig with batch_size 1 and eval_batch_size 2)
TRAINER = {
    "learning_rate": 0.001,
    "epochs": 100,
    "batch_size": 1,
    "eval_batch_size": 2,
    "gradient_accumulation_steps": "auto",
    "early_stop": 5,
    "steps_per_checkpoint": 0,
    "checkpoints_per_epoch": 0,
    "use_mixed_precision": False,
    "enable_gradient_checkpointing": False,
    "compile": False,
    "packing": False,
}
ADAM = {"betas": [0.9, 0.999], "eps": 1e-08, "weight_decay": 0.0}
CLIP = 0.5
"""GradientClippingConfig's clipglobalnorm."""

SAME = {
    # keys whose Ludwig default is recipec's behaviour too: exact at that value, else not imported
    "trainer.regularization_lambda": (0.0, "missing-feature", "recipec adds no L1/L2 penalty to the loss"),
    "trainer.regularization_type": ("l2", "missing-feature", "recipec adds no L1/L2 penalty to the loss"),
    "trainer.should_shuffle": (True, "missing-feature", "recipec always shuffles the training examples"),
    "trainer.increase_batch_size_on_plateau": (0, "missing-feature", "recipec does not grow the batch on a plateau"),
    "trainer.layers_to_freeze_regex": (None, "missing-feature", "recipec freezes no layers by name in full fine-tuning"),
    "trainer.bucketing_field": (None, "missing-feature", "recipec does not bucket examples by a field's length"),
    "trainer.max_batch_size": (None, "ignored-by-tool", "only for batch size tuning, which a fixed batch_size turns off"),
    "trainer.base_learning_rate": (0.0, "ignored-by-tool", "the fine-tuning trainer starts from learning_rate"),
    "trainer.learning_rate_scaling": ("linear", "missing-feature", "recipec does not scale the LR by the number of workers"),
    "trainer.modality_dropout": (0.0, "missing-feature", "an ECD multi-input setting"),
    "trainer.model_soup": (None, "missing-feature", "recipec does not average checkpoints after training"),
    "trainer.contrastive_pretrain_epochs": (0, "missing-feature", "an ECD encoder pre-alignment"),
    "trainer.loss_balancing": ("none", "missing-feature", "one output feature: nothing to balance"),
    "quantization.llm_int8_threshold": (6.0, "no-equivalent", "recipec's 8-bit loading keeps bitsandbytes' outlier threshold, 6.0"),
    "quantization.llm_int8_has_fp16_weight": (False, "no-equivalent", "recipec's 8-bit loading keeps the int8 weights only"),
    "quantization.qat": (False, "missing-feature", "recipec has no quantization-aware training"),
    "trust_remote_code": (False, "no-equivalent", ""),
    "is_multimodal": (False, "missing-feature", "recipec trains causal language models, not vision-language models"),
}
"""Settings that change nothing at these values (Ludwig's defaults). Keys of trainer settings
that only matter when another setting turns them on (the plateau rates, loss balancing's
weights) follow below as DEPENDENT."""

DEPENDENT = {
    "trainer.increase_batch_size_on_plateau": ("increase_batch_size_on_plateau_patience", "increase_batch_size_on_plateau_rate", "increase_batch_size_eval_metric", "increase_batch_size_eval_split"),
    "trainer.loss_balancing": ("loss_balancing_alpha", "loss_balancing_lr", "loss_balancing_preference_vector", "loss_balancing_tchebycheff_weight"),
    "trainer.contrastive_pretrain_epochs": ("contrastive_pretrain_temperature", "contrastive_pretrain_projection_dim", "contrastive_pretrain_learnable_temperature"),
    "trainer.model_soup": ("model_soup_top_k",),
}


def convert(d: Draft, options) -> None:  # noqa: ANN001 (Options: no import cycle)
    _model_type(d)
    kind = _trainer_kind(d)
    _model(d)
    ga = _batch(d, options)
    _adapter(d)
    _quantization(d)
    _data(d, options, kind)
    _length(d, ga)
    _optimizer(d)
    _schedule(d, ga)
    _evaluation(d, ga)
    _launch(d, options)
    _rest(d)


def _error(d: Draft, key: str, message: str, help: str | None = None) -> RecipeError:
    return RecipeError([Diagnostic("error", message, d.config.location(key), help=help)])


def _model_type(d: Draft) -> None:
    mtype = d.get("model_type", "ecd")
    if mtype != "llm":
        key = "model_type" if d.has("model_type") else "input_features"
        raise _error(
            d,
            key,
            f"{d.config.path} is a Ludwig `model_type: {mtype}` config (ecd is Ludwig's default): an encoder-combiner-decoder "
            "model with a task head, which recipec does not train; `recipec import --from ludwig` reads `model_type: llm` configs",
        )
    d.exact("model_type")
    if not d.has("base_model"):
        raise _error(d, "model_type", f"{d.config.path} names no `base_model`, which Ludwig requires for model_type llm")


def _trainer_kind(d: Draft) -> str:
    kind = str(d.get("trainer.type", "none"))
    if kind == "none":
        key = "trainer.type" if d.has("trainer.type") else "model_type"
        raise _error(
            d,
            key,
            f"{d.config.path} trains nothing: trainer.type `none` (Ludwig's default for model_type llm) is zero-shot "
            "inference",
            help="set `trainer: {type: finetune}` for fine-tuning",
        )
    if kind == "grpo":
        raise _error(d, "trainer.type", "trainer.type `grpo` (online RL with generated completions) is not something recipec trains")
    return kind


def _model(d: Draft) -> None:
    d.set("model.path", d.get("base_model"), "base_model")
    if d.get("trust_remote_code"):
        d.set("model.trust_remote_code", True, "trust_remote_code")
    if d.get("trainer.enable_gradient_checkpointing", False):
        d.set("model.gradient_checkpointing", True, "trainer.enable_gradient_checkpointing")
    else:
        d.exact("trainer.enable_gradient_checkpointing")
    if d.get("trainer.compile", False):
        d.set("model.compile", True, "trainer.compile")
    else:
        d.exact("trainer.compile")
    if d.get("trainer.use_mixed_precision", False):
        d.set("launch.mixed_precision", "fp16", "trainer.use_mixed_precision", note="torch.amp autocast on CUDA: float16 with a GradScaler")
    elif d.has("trainer.use_mixed_precision"):
        d.set("launch.mixed_precision", "no", "trainer.use_mixed_precision")
    else:
        d.default("launch.mixed_precision", "no", "trainer.use_mixed_precision", "use_mixed_precision false: no autocast")


def _batch(d: Draft, options) -> int:  # noqa: ANN001
    world = max(options.num_processes, 1)
    micro = d.get("trainer.batch_size", TRAINER["batch_size"])
    if micro == "auto":
        raise _error(d, "trainer.batch_size", "trainer.batch_size `auto` tunes the batch size on the machine; recipec needs a number", help="set the batch size the run used")
    ga = d.get("trainer.gradient_accumulation_steps", "auto")
    effective = d.get("trainer.effective_batch_size", "auto")
    if ga == "auto":
        ga = max(int(effective / micro / world), 1) if effective != "auto" else 1
    micro, ga = int(micro), int(ga)
    keys = [k for k in ("trainer.batch_size", "trainer.gradient_accumulation_steps", "trainer.effective_batch_size") if d.has(k)]
    if d.has("trainer.batch_size"):
        d.set("train.micro_batch_size", micro, "trainer.batch_size")
    else:
        d.default("train.micro_batch_size", micro, "trainer.batch_size", "batch_size 1 (the fine-tuning trainer's)")
    note = f"{micro} x {ga} accumulation x {world} process{'es' if world > 1 else ''}"
    d.set("train.batch_size", micro * ga * world, *keys, note=note)
    if not d.has("trainer.gradient_accumulation_steps"):
        d.defaults.append(("trainer.gradient_accumulation_steps", f"auto: {ga}" + (" (effective_batch_size / batch_size / workers)" if effective != "auto" else " (effective_batch_size auto)")))
    if world > 1:
        d.set("launch.num_processes", world, note="--num-processes")
    return ga


def _adapter(d: Draft) -> None:
    if d.has("adapters"):
        d.drop("adapters", "missing-feature", "recipec trains one adapter: named adapters (switched or merged at run time) are not imported")
    if not d.has("adapter"):
        if d.has("quantization"):
            raise _error(d, "quantization", "quantization without an adapter: Ludwig cannot fine-tune a quantized model in full")
        return
    kind = str(d.get("adapter.type", "lora"))
    if kind == "lora":
        _lora(d)
    elif kind == "oft":
        d.set("peft.method", "oft", "adapter.type")
        if d.get("adapter.r", 0):
            d.set("peft.r", int(d.get("adapter.r")), "adapter.r")
            if d.has("adapter.oft_block_size"):
                d.drop("adapter.oft_block_size", "ignored-by-tool", "peft takes r when both are set")
        else:
            d.exact("adapter.r")
            block = int(d.get("adapter.oft_block_size", 32))
            if d.has("adapter.oft_block_size"):
                d.set("peft.oft_block_size", block, "adapter.oft_block_size")
            else:
                d.default("peft.oft_block_size", block, "adapter.oft_block_size", "oft_block_size 32")
        for src, dst, default in (("module_dropout", "module_dropout", 0.0), ("coft", "coft", False)):
            if d.has(f"adapter.{src}"):
                d.set(f"peft.{dst}", d.get(f"adapter.{src}"), f"adapter.{src}")
        if d.has("adapter.eps"):
            if float(d.get("adapter.eps")) == 6e-5:
                d.exact("adapter.eps")
            else:
                d.drop("adapter.eps", "no-equivalent", "recipec's OFT keeps peft's COFT eps, 6e-5")
        _targets(d)
    elif kind == "ln_tuning":
        d.set("peft.method", "ln_tuning", "adapter.type")
        _targets(d, note="every LayerNorm/RMSNorm (peft's default)")
    elif kind in ("loha", "lokr", "ia3", "vera", "adalora"):
        d.set("peft.method", kind, "adapter.type", note=f"the method and its target modules; {kind}'s other settings are not imported")
        _targets(d)
        for key in d.keys_under("adapter"):
            if key not in d.ledger:
                d.drop(key, "missing-feature", f"recipec's [peft] {kind} takes its own default for this setting")
    else:
        d.drop("adapter", "missing-feature", f"recipec has no `{kind}` adapter")
        return
    if d.has("adapter.pretrained_adapter_weights") and d.get("adapter.pretrained_adapter_weights"):
        d.set("peft.adapter", d.get("adapter.pretrained_adapter_weights"), "adapter.pretrained_adapter_weights")
    else:
        d.exact("adapter.pretrained_adapter_weights")
    if d.get("adapter.postprocessor.merge_adapter_into_base_model"):
        d.set("peft.save_merged", True, "adapter.postprocessor.merge_adapter_into_base_model")
    else:
        d.exact("adapter.postprocessor.merge_adapter_into_base_model")
    if d.has("adapter.postprocessor.progressbar"):
        d.drop("adapter.postprocessor.progressbar", "not-for-training", "a progress bar while merging")


def _targets(d: Draft, note: str = "peft's default modules for the architecture") -> None:
    targets = d.get("adapter.target_modules")
    if targets:
        d.set("peft.target_modules", list(targets), "adapter.target_modules")
    elif d.has("adapter.target_modules"):
        d.exact("adapter.target_modules")
    else:
        d.defaults.append(("adapter.target_modules", f"null: {note}, as recipec's unset target_modules"))


def _lora(d: Draft) -> None:
    d.set("peft.method", "lora", "adapter.type") if d.has("adapter.type") else d.set("peft.method", "lora", "adapter")
    r = int(d.get("adapter.r", 8))
    if d.has("adapter.r"):
        d.set("peft.r", r, "adapter.r")
    else:
        d.default("peft.r", r, "adapter.r", "r 8")
    if d.get("adapter.alpha") is not None:
        d.set("peft.alpha", num(d.get("adapter.alpha")), "adapter.alpha")
    else:
        d.default("peft.alpha", 2 * r, "adapter.alpha", f"alpha null: 2 * r = {2 * r}")
    if d.has("adapter.dropout"):
        d.set("peft.dropout", num(d.get("adapter.dropout")), "adapter.dropout")
    else:
        d.default("peft.dropout", 0.05, "adapter.dropout", "dropout 0.05")
    bias = d.get("adapter.bias_type", "none")
    if d.has("adapter.bias_type"):
        d.set("peft.bias", bias, "adapter.bias_type")
    for src, dst in (("use_rslora", "rslora"), ("use_dora", "dora")):
        if d.get(f"adapter.{src}"):
            d.set(f"peft.{dst}", True, f"adapter.{src}")
        else:
            d.exact(f"adapter.{src}")
    if d.get("adapter.loraplus_lr_ratio") is not None:
        d.drop("adapter.loraplus_lr_ratio", "ignored-by-tool", "LoraConfig.to_config does not pass it on: Ludwig trains plain LoRA")
    init = d.get("adapter.init_lora_weights", "default")
    if init in ("default", "gaussian", "pissa", "olora"):
        if init != "default":
            d.set("peft.init", init, "adapter.init_lora_weights")
        else:
            d.exact("adapter.init_lora_weights")
        for sub in ("adapter.eva_config", "adapter.loftq_config"):
            if d.has(sub):
                d.drop(sub, "ignored-by-tool", f"read only with init_lora_weights {sub.split('.')[1].split('_')[0]}")
    else:
        why = {
            "loftq": "recipec has no LoftQ initialisation (quantize the base weights and start LoRA from the quantization error); the recipe starts LoRA from zero",
            "eva": "recipec has no EVA initialisation (from the SVD of the layers' input activations)",
            "corda": "recipec has no CorDA initialisation",
            "orthogonal": "recipec has no orthogonal LoRA initialisation",
        }.get(str(init), f"recipec has no `{init}` LoRA initialisation")
        d.drop("adapter.init_lora_weights", "missing-feature", why)
        for sub in ("adapter.eva_config", "adapter.loftq_config"):
            if d.has(sub):
                d.drop(sub, "missing-feature", why)
    for key in ("adapter.rank_pattern", "adapter.alpha_pattern", "adapter.layer_replication"):
        if d.has(key):
            d.drop(key, "missing-feature", "recipec has one rank and alpha for every module and no layer replication")
    _targets(d)


def _quantization(d: Draft) -> None:
    if not d.has("quantization"):
        return
    if d.get("quantization.backend", "bitsandbytes") != "bitsandbytes":
        d.drop("quantization", "missing-feature", "recipec quantizes with bitsandbytes only (not torchao)")
        return
    if d.value("peft.method") not in (None, "lora"):  # recipec quantizes the base model under LoRA only (QLoRA)
        method = d.value("peft.method")
        d.drop("quantization", "missing-feature", f"recipec quantizes the base model only under LoRA (QLoRA), not under {method}")
        d.warn(f"the base model is not quantized: recipec's {method} trains over the model in its own dtype", "quantization")
        return
    d.exact("quantization.backend")
    bits = int(d.get("quantization.bits", 4))
    why = []
    if bits == 4:
        if d.get("quantization.bnb_4bit_quant_type", "nf4") != "nf4":
            d.approx("fp4 becomes recipec's nf4", "quantization.bnb_4bit_quant_type")
        else:
            d.exact("quantization.bnb_4bit_quant_type")
        if d.get("quantization.bnb_4bit_use_double_quant", True):
            why.append("Ludwig quantizes the quantization constants too (bnb_4bit_use_double_quant, on by default); recipec's 4-bit does not")
            d.approx(why[-1], "quantization.bnb_4bit_use_double_quant")
        else:
            d.exact("quantization.bnb_4bit_use_double_quant")
        dtype = d.get("quantization.bnb_4bit_compute_dtype", "float16")
        if dtype != "bfloat16":
            why.append(f"Ludwig computes the 4-bit layers in {dtype} and loads the rest of the model in it; recipec's 4-bit computes in bfloat16")
            d.approx(why[-1], "quantization.bnb_4bit_compute_dtype")
        else:
            d.exact("quantization.bnb_4bit_compute_dtype")
    else:
        for key in ("bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype"):
            if d.has(f"quantization.{key}"):
                d.drop(f"quantization.{key}", "ignored-by-tool", "a 4-bit setting, and bits is 8")
    if d.has("quantization.bits"):
        d.set("peft.quantize", f"{bits}bit", "quantization.bits", approx="; ".join(why) or None)
    else:
        d.default("peft.quantize", f"{bits}bit", "quantization.bits", "bits 4")
    if not d.has("quantization.bits") and why:
        d.approx("; ".join(why), "quantization")
    if d.has("quantization.mode"):
        d.drop("quantization.mode", "ignored-by-tool", "a torchao setting; the backend is bitsandbytes")


def _feature(d: Draft, key: str) -> tuple[str, list[str]]:
    f = d.get(key)
    if f.get("type") != "text":
        raise _error(d, f"{key}.type", f"{key} is a {f.get('type')} feature: an LLM's features are text")
    column = f.get("column", f.get("name"))
    keys = [f"{key}.column" if "column" in f else f"{key}.name"]
    d.exact(f"{key}.name")
    return str(column), keys


ZERO_SHOT_TEMPLATE = """SAMPLE INPUT: {__sample__}

USER: Complete the following task: {__task__}

ASSISTANT:
"""
"""Ludwig's DEFAULT_ZERO_SHOT_PROMPT_TEMPLATE (ludwig/data/prompt.py): the prompt of a config with a `prompt.task` and no template."""


def _prompt_format(d: Draft, column: str) -> bool:
    """`prompt.template` (or `prompt.task` alone, in Ludwig's zero-shot template) -> `prompt_format`; True when written.

    Ludwig fills the template with `str.format`: each `{column}` with that column of the row, `{__task__}` with
    `prompt.task`, `{__sample__}` with the input column through `json.dumps(..., indent=2).strip('"')`
    (ludwig/data/prompt.py, `format_input_with_prompt`).
    """
    template, task = d.get("prompt.template"), d.get("prompt.task")
    if template is None and task is None:
        return False
    if d.has("prompt.retrieval") and d.get("prompt.retrieval.type") is not None:
        for key in ("prompt.template", "prompt.task"):
            if d.has(key):
                d.drop(key, "missing-feature", "a few-shot prompt's {__context__} is retrieved from an index; recipec retrieves no examples into the prompt")
        return False
    keys = [k for k in ("prompt.template", "prompt.task") if d.has(k)]
    text = template if template is not None else ZERO_SHOT_TEMPLATE

    pieces = []
    approx = None
    for literal, name, spec, conversion in string.Formatter().parse(text):
        pieces.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is None:
            continue
        if spec or conversion or name == "__context__" or (name == "__task__" and task is None):
            d.drop(keys[0], "missing-feature", f"the placeholder {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}} has no recipec equivalent: fill the template into the data first")
            for key in keys[1:]:
                d.drop(key, "missing-feature", "read by the template, which is not imported")
            return False
        if name == "__task__":
            pieces.append(str(task).replace("{", "{{").replace("}", "}}"))
        elif name == "__sample__":
            pieces.append("{" + column + "}")
            approx = "Ludwig writes {__sample__} through json.dumps with the quotes stripped (newlines, quotes and non-ASCII characters escaped); recipec fills in the input column as it is"
        else:
            pieces.append("{" + name + "}")
    try:
        prompt_fields("".join(pieces))
    except ValueError as e:  # a column name str.format takes as an index, or no column at all
        d.drop(keys[0], "missing-feature", f"the template does not make a recipec prompt_format: {e}")
        for key in keys[1:]:
            d.drop(key, "missing-feature", "read by the template, which is not imported")
        return False
    d.set("data.sources[0].prompt_format", "".join(pieces), *keys, approx=approx)
    return True


def _data(d: Draft, options, kind: str) -> None:  # noqa: ANN001
    inputs = d.get("input_features") or []
    outputs = d.get("output_features") or []
    if len(inputs) != 1:
        raise _error(d, "input_features", f"input_features has {len(inputs)} features: recipec imports an LLM config with one text input")
    names = [str(f.get("name", "")) for f in outputs]
    rejected = [i for i, n in enumerate(names) if "rejected" in n.lower()]
    if len(outputs) - len(rejected) != 1 or len(rejected) > 1:
        raise _error(d, "output_features", f"output_features has {len(outputs)} features: recipec imports an LLM config with one text output (and, for DPO, one whose name holds \"rejected\")")
    prompt, pkeys = _feature(d, "input_features[0]")
    chosen = next(i for i in range(len(outputs)) if i not in rejected)
    completion, ckeys = _feature(d, f"output_features[{chosen}]")
    if not data_option(d, options.data):
        d.note("The config names no dataset (`ludwig train --dataset` does): pass `--data PATH_OR_HUB_ID` (written as a data source).")
    join = "Ludwig tokenizes the input and output features one by one and joins their ids (no chat template), the loss on the output's; the recipe renders the prompt then the completion as plain text"
    if rejected:
        if kind not in ("dpo", "kto", "orpo"):
            raise _error(d, "output_features", f"trainer.type {kind} trains every output feature; recipec imports one")
        if kind != "dpo":
            raise _error(d, "trainer.type", f"Ludwig 0.17.8's {kind} trainer fails with a rejected output feature: its dpo_loss knows only the sigmoid and IPO losses")
        objective = "ipo" if d.get("trainer.dpo_loss_type", "sigmoid") == "ipo" else "dpo"
        other, rkeys = _feature(d, f"output_features[{rejected[0]}]")
        d.set("data.sources[0].records", "preference", "input_features[0].type", f"output_features[{chosen}].type", f"output_features[{rejected[0]}].type", approx=join)
        fields = {"prompt": prompt, "chosen": completion, "rejected": other}
        if _prompt_format(d, prompt):
            del fields["prompt"]
        d.set("data.sources[0].fields", fields, *pkeys, *ckeys, *rkeys)
        d.set("preference.objective", objective, "trainer.type", approx="Ludwig's DPO takes no reference model (its log-ratios are the policy's log-probabilities alone); recipec's are against the reference")
        for key, dst in (("trainer.dpo_beta", "beta"), ("trainer.dpo_label_smoothing", "label_smoothing")):
            if d.has(key):
                d.set(f"preference.{dst}", num(d.get(key)), key)
        if d.has("trainer.dpo_loss_type"):
            d.exact("trainer.dpo_loss_type")
    else:
        d.set("data.sources[0].records", "prompt_completion", "input_features[0].type", f"output_features[{chosen}].type", approx=join)
        fields = {"prompt": prompt, "completion": completion}
        if _prompt_format(d, prompt):
            del fields["prompt"]
        d.set("data.sources[0].fields", fields, *pkeys, *ckeys)
    if not rejected and kind != "finetune":
        d.exact("trainer.type")
        d.warn(
            f"trainer.type {kind}: no output feature's name holds \"rejected\", so Ludwig's {kind} trainer trains its standard next-token loss on "
            f"`{completion}`, as the recipe does; for preference training use records = \"preference\" and a [preference] table",
            "trainer.type",
        )
        for key in ("trainer.dpo_beta", "trainer.dpo_loss_type", "trainer.dpo_label_smoothing", "trainer.kto_beta", "trainer.orpo_beta"):
            if d.has(key):
                d.drop(key, "ignored-by-tool", "read only by the preference loss, which this config's features never reach")
    else:
        d.exact("trainer.type")
    if d.has("trainer.rejected_column"):
        d.drop("trainer.rejected_column", "ignored-by-tool", "no Ludwig trainer reads it")
    for key, why in IGNORED.items():
        if d.has(key):
            d.drop(key, "ignored-by-tool", why)
    for group in ("input_features", "output_features"):
        for sub in d.keys_under(group):
            if sub in d.ledger:
                continue
            if sub.endswith("preprocessing.max_sequence_length"):
                d.set("data.max_length", int(d.get(sub)), sub, approx="Ludwig truncates this feature alone; recipec cuts the whole example")
            else:
                d.drop(sub, "no-equivalent", "a feature's own preprocessing, encoder or decoder setting")
    if d.has("prompt.retrieval"):
        d.drop("prompt.retrieval", "missing-feature", "recipec retrieves no few-shot examples into the prompt")
    packing = d.get("trainer.packing", False)
    if packing:
        d.set("data.packing", True, "trainer.packing", approx="Ludwig packs at most packing_max_sequences_per_pack examples into a row")
        d.approx("recipec packs as many whole examples as fit", "trainer.packing_max_sequences_per_pack")
    elif d.has("trainer.packing"):
        d.set("data.packing", False, "trainer.packing")
        d.exact("trainer.packing_max_sequences_per_pack")
    else:
        d.default("data.packing", False, "trainer.packing", "packing false: one example per row, each batch padded")
        if d.has("trainer.packing_max_sequences_per_pack"):
            d.drop("trainer.packing_max_sequences_per_pack", "ignored-by-tool", "packing is off")


def _length(d: Draft, ga: int) -> None:
    gmax = d.get("preprocessing.global_max_sequence_length")
    if gmax is not None:
        d.set("data.seq_len", int(gmax), "preprocessing.global_max_sequence_length")
    else:
        d.set("data.seq_len", 512, note="recipec's default; Ludwig cuts no whole example (global_max_sequence_length null)")
        d.note("Ludwig sets no length for a whole example (preprocessing.global_max_sequence_length null): the recipe's data.seq_len 512 cuts longer ones.")
    split = d.get("preprocessing.split.type", "random")
    probs = d.get("preprocessing.split.probabilities", [0.7, 0.1, 0.2])
    why = f"Ludwig trains on {probs[0]:g} of the rows, validates on {probs[1]:g} and tests on {probs[2]:g}; recipec holds out the validation share and trains on the rest"
    if split in ("random", "hash", "stratify") and len(probs) == 3:
        if d.has("preprocessing.split"):
            keys = [k for k in d.keys_under("preprocessing.split")]
            d.set("data.eval_fraction", num(probs[1]), *keys, approx=why + ("" if split == "random" else f"; {split} split becomes a random one"))
        else:
            d.default("data.eval_fraction", 0.1, "preprocessing.split", "random split 0.7 / 0.1 / 0.2: 0.1 validates (the 0.2 test rows are not trained on by Ludwig, by recipec they are)")
    else:
        d.drop("preprocessing.split", "missing-feature", f"recipec splits at random: a {split} split by a column is not imported")
    for key, default, why in (
        ("preprocessing.sample_ratio", 1.0, "recipec trains on every row: subsample the data first"),
        ("preprocessing.sample_size", None, "recipec trains on every row: subsample the data first"),
        ("preprocessing.oversample_minority", None, "a class-balancing setting of category outputs"),
        ("preprocessing.undersample_majority", None, "a class-balancing setting of category outputs"),
    ):
        if d.has(key):
            d.exact(key) if d.get(key) == default else d.drop(key, "missing-feature", why)
    epochs = d.get("trainer.epochs", TRAINER["epochs"])
    steps = d.get("trainer.train_steps")
    if steps:
        opt = math.ceil(int(steps) / ga)
        d.set("train.max_steps", opt, "trainer.train_steps", approx=None if int(steps) % ga == 0 else f"{steps} micro-batches are {steps / ga:g} optimizer steps")
        if d.has("trainer.epochs"):
            d.drop("trainer.epochs", "ignored-by-tool", "train_steps overrides epochs")
    else:
        if d.has("trainer.epochs"):
            d.set("train.epochs", int(epochs), "trainer.epochs")
        else:
            d.default("train.epochs", int(epochs), "trainer.epochs", "epochs 100 (the fine-tuning trainer's)")
        if d.has("trainer.train_steps"):
            d.exact("trainer.train_steps")


def _optimizer(d: Draft) -> None:
    lr = d.get("trainer.learning_rate", TRAINER["learning_rate"])
    if lr == "auto":
        d.drop("trainer.learning_rate", "missing-feature", "recipec does not search for a learning rate")
    elif d.has("trainer.learning_rate"):
        d.set("optim.lr", num(lr), "trainer.learning_rate")
    else:
        d.default("optim.lr", lr, "trainer.learning_rate", "learning_rate 0.001 (the fine-tuning trainer's)")
    kind = d.get("trainer.optimizer.type", "adam")
    names = {"adam": "adamw", "adamw": "adamw", "adam_8bit": "adamw_8bit", "adamw_8bit": "adamw_8bit", "paged_adamw_8bit": "paged_adamw_8bit", "paged_adam_8bit": "paged_adamw_8bit", "sgd": "sgd"}
    if kind not in names:
        d.drop("trainer.optimizer", "missing-feature", f"recipec has no `{kind}` optimizer: the recipe keeps its own (adamw)")
        return
    key = "trainer.optimizer.type"
    wd = num(d.get("trainer.optimizer.weight_decay", 0.0))
    coupled = kind.startswith(("adam_", "paged_adam_")) or kind == "adam"
    note = "Adam without weight decay is AdamW without it" if coupled and not wd else None
    if d.has(key):
        d.set("optim.name", names[kind], key, approx=f"{kind} adds weight_decay * w to the gradient (L2), AdamW decays the weights apart from it" if coupled and wd else None, note=note or "")
    else:
        d.default("optim.name", "adamw", key, "optimizer adam (betas 0.9/0.999, eps 1e-8, weight_decay 0): AdamW without weight decay")
    if kind != "sgd":
        for field in ("betas", "eps"):
            src = f"trainer.optimizer.{field}"
            if d.has(src):
                d.set(f"optim.{field}", num(d.get(src)) if field == "eps" else [num(b) for b in d.get(src)], src)
            else:
                d.default(f"optim.{field}", ADAM[field], src, f"{field} {ADAM[field]}")
        if d.get("trainer.optimizer.amsgrad"):
            d.drop("trainer.optimizer.amsgrad", "missing-feature", "recipec's AdamW has no AMSGrad")
        elif d.has("trainer.optimizer.amsgrad"):
            d.exact("trainer.optimizer.amsgrad")
        for k in ("block_wise", "percentile_clipping"):
            if d.has(f"trainer.optimizer.{k}"):
                d.approx("recipec uses bitsandbytes' own block-wise quantization and no percentile clipping", f"trainer.optimizer.{k}")
    else:
        for k in ("momentum", "nesterov"):
            if d.has(f"trainer.optimizer.{k}"):
                d.set(f"optim.{k}", d.get(f"trainer.optimizer.{k}"), f"trainer.optimizer.{k}")
        if d.has("trainer.optimizer.dampening"):
            d.exact("trainer.optimizer.dampening") if not d.get("trainer.optimizer.dampening") else d.drop("trainer.optimizer.dampening", "missing-feature", "recipec's SGD has no dampening")
    src = "trainer.optimizer.weight_decay"
    if d.has(src):
        d.set("optim.weight_decay", wd, src)
    else:
        d.default("optim.weight_decay", 0.0, src, "weight_decay 0")
    if wd:
        d.set("optim.decay", "all", note="Ludwig decays every parameter, biases and norms included")
    # gradient clipping
    clip = d.get("trainer.gradient_clipping")
    if d.has("trainer.gradient_clipping") and clip is None:
        d.set("optim.grad_clip", 0.0, "trainer.gradient_clipping")
    else:
        g = d.get("trainer.gradient_clipping.clipglobalnorm", CLIP)
        n = d.get("trainer.gradient_clipping.clipnorm")
        both = [x for x in (g, n) if x]
        value = min(both) if both else 0.0
        keys = [k for k in ("trainer.gradient_clipping.clipglobalnorm", "trainer.gradient_clipping.clipnorm") if d.has(k)]
        if keys:
            d.set("optim.grad_clip", num(value), *keys, approx="Ludwig clips twice, to each norm in turn: the smaller one decides" if len(both) == 2 else None)
        else:
            d.default("optim.grad_clip", CLIP, "trainer.gradient_clipping.clipglobalnorm", "clipglobalnorm 0.5")
        if d.get("trainer.gradient_clipping.clipvalue"):
            d.drop("trainer.gradient_clipping.clipvalue", "missing-feature", "recipec clips the gradient norm, not each value")
        elif d.has("trainer.gradient_clipping.clipvalue"):
            d.exact("trainer.gradient_clipping.clipvalue")


def _schedule(d: Draft, ga: int) -> None:
    p = "trainer.learning_rate_scheduler"
    per_micro = f"Ludwig steps the LR every micro-batch ({ga} per optimizer step)" if ga > 1 else None
    decay = d.get(f"{p}.decay")
    frac = num(d.get(f"{p}.warmup_fraction", 0.0))
    evals = num(d.get(f"{p}.warmup_evaluations", 0))
    warm: Any = 0
    warm_keys = [k for k in (f"{p}.warmup_fraction", f"{p}.warmup_evaluations") if d.has(k)]
    why = [per_micro] if per_micro else []
    steps = d.get("trainer.train_steps")
    if frac:
        warm = frac
        # Ludwig ramps over fraction x steps micro-batches, a float; recipec's warmup is whole steps (the fraction's
        # product rounded up): the same ramp where the run's length is known and makes the product whole
        whole = bool(steps) and ga == 1 and (float(frac) * int(steps)).is_integer()
        if not float(frac).is_integer() and not whole:
            why.append("Ludwig's ramp is 1/(fraction x steps) a step, recipec's warmup rounds the fraction up to whole steps")
    if evals:
        spc = int(d.get("trainer.steps_per_checkpoint", 0) or 0)
        cpe = int(d.get("trainer.checkpoints_per_epoch", 0) or 0)
        epochs = d.get("trainer.epochs", TRAINER["epochs"])
        if spc:
            w = math.ceil(evals * spc / ga)
        elif not steps:
            w = float(Fraction(str(evals)) / (max(cpe, 1) * int(epochs)))
        else:
            w = None
        if w is None or (isinstance(w, float) and w >= 1):
            d.drop(f"{p}.warmup_evaluations", "missing-feature", "warmup over evaluations of a run whose evaluations recipec cannot count in steps")
        elif frac and isinstance(w, float):
            warm = max(frac, w)
            why.append("Ludwig warms up over the longer of warmup_fraction and warmup_evaluations")
        elif frac:
            why.append("Ludwig warms up over the longer of warmup_fraction and warmup_evaluations: the recipe takes warmup_evaluations")
            warm = w
        else:
            warm = w
    if warm_keys:
        d.set("schedule.warmup", warm, *[k for k in warm_keys if k not in d.ledger], approx="; ".join(why) if why and warm else None)
    else:
        d.default("schedule.warmup", 0, f"{p}.warmup_fraction", "warmup_fraction 0: no warmup")
    d.set("schedule.warmup_start_ratio", 0.0, note="Ludwig's warmup: step / warmup_steps, from 0")
    dkey = f"{p}.decay"
    if decay is None:
        (d.set("schedule.decay", "constant", dkey) if d.has(dkey) else d.default("schedule.decay", "constant", dkey, "decay null: constant after the warmup"))
    elif decay == "linear":
        d.set("schedule.decay", "linear", dkey, approx=per_micro)
        d.set("schedule.min_lr_ratio", 0.0, note="Ludwig's linear decay ends at 0")
    elif decay == "cosine":
        t0 = d.get(f"{p}.t_0") or d.get("trainer.steps_per_checkpoint")
        eta = num(d.get(f"{p}.eta_min", 0))
        if t0:
            d.set("schedule.decay", "cosine_restarts", dkey, *([f"{p}.t_0"] if d.has(f"{p}.t_0") else []), approx=per_micro)
            d.set("schedule.restart_period", max(1, math.ceil(int(t0) / ga)))
            mult = int(d.get(f"{p}.t_mult", 1))
            d.set("schedule.restart_mult", mult, *([f"{p}.t_mult"] if d.has(f"{p}.t_mult") else []))
        else:
            d.set("schedule.decay", "cosine", dkey, approx="Ludwig's cosine (CosineAnnealingWarmRestarts) restarts every checkpoint, one epoch here; the recipe decays once over the run")
            if d.has(f"{p}.t_mult"):
                d.approx("the recipe does not restart", f"{p}.t_mult")
        if eta:
            d.set("schedule.min_lr", eta, f"{p}.eta_min")
        else:
            d.set("schedule.min_lr_ratio", 0.0, *([f"{p}.eta_min"] if d.has(f"{p}.eta_min") else []))
    elif decay == "polynomial":
        # Ludwig's polynomial decay counts its progress from the warmup's end, but inside its SequentialLR the decay's
        # step count starts again at 0 there: right after a warmup its LR is above the peak
        shifted = (
            "after a warmup of W of the run's N micro-batches Ludwig's polynomial decay starts at (N / (N - W))^power x the peak (its "
            "progress subtracts the warmup from a step count its SequentialLR restarted) and reaches the end LR W steps "
            "after the run; the recipe decays from the peak to the end LR over the steps after the warmup"
        )
        d.set("schedule.decay", "polynomial", dkey, approx="; ".join(w for w in (per_micro, shifted if warm else None) if w) or None)
        d.set("schedule.power", num(d.get(f"{p}.polynomial_power", 1.0)), *([f"{p}.polynomial_power"] if d.has(f"{p}.polynomial_power") else []))
        end = num(d.get(f"{p}.polynomial_end_lr", 0.0))
        # Ludwig's polynomial_end_lr is a fraction of the peak, whatever its description says: the decay function's
        # value, which LambdaLR multiplies the peak by, ends at it
        d.set("schedule.min_lr_ratio", end, *([f"{p}.polynomial_end_lr"] if d.has(f"{p}.polynomial_end_lr") else []))
    else:
        d.drop(dkey, "missing-feature", f"recipec has no {decay} decay as Ludwig computes it: the recipe's LR stays constant after the warmup")
        d.set("schedule.decay", "constant", note=f"Ludwig's {decay} decay is not imported")
    for key in SCHEDULER_KEYS:
        full = f"{p}.{key}"
        if d.has(full) and full not in d.ledger:
            if key.startswith("reduce_on_plateau") or key.startswith("reduce_eval"):
                if d.get(f"{p}.reduce_on_plateau", 0):
                    d.drop(full, "missing-feature", "recipec does not lower the LR on a plateau")
                else:
                    d.exact(full) if key == "reduce_on_plateau" else d.drop(full, "ignored-by-tool", "reduce_on_plateau is 0")
            else:
                d.drop(full, "ignored-by-tool", f"not read by decay {decay}")


def _evaluation(d: Draft, ga: int) -> None:
    spc = int(d.get("trainer.steps_per_checkpoint", 0) or 0)
    cpe = int(d.get("trainer.checkpoints_per_epoch", 0) or 0)
    keys = [k for k in ("trainer.steps_per_checkpoint", "trainer.checkpoints_per_epoch") if d.has(k)]
    if spc:
        every: Any = max(1, math.ceil(spc / ga))
        approx = None if spc % ga == 0 else f"{spc} micro-batches are {spc / ga:g} optimizer steps"
    elif cpe:
        every, approx = f"1/{cpe} epoch", None
    else:
        every, approx = "1 epoch", None
    if d.get("trainer.skip_all_evaluation"):
        d.set("train.eval_every", 0, "trainer.skip_all_evaluation", approx="recipec still evaluates once at the end")
        d.set("train.eval_at_start", False)
    elif keys:
        d.set("train.eval_every", every, *keys, approx=approx)
    else:
        d.default("train.eval_every", every, "trainer.steps_per_checkpoint", "steps_per_checkpoint 0: evaluate and checkpoint once an epoch")
    if d.has("trainer.skip_all_evaluation") and not d.get("trainer.skip_all_evaluation"):
        d.exact("trainer.skip_all_evaluation")
    if keys:
        d.set("train.save_every", every, *keys, approx=approx)
    else:
        d.default("train.save_every", every, "trainer.steps_per_checkpoint", "a checkpoint at every evaluation")
    d.set("train.eval_at_start", False, note="Ludwig's first evaluation is after the first checkpoint's steps")
    eb = d.get("trainer.eval_batch_size", TRAINER["eval_batch_size"])
    if d.has("trainer.eval_batch_size") and eb in (None, 0):
        d.exact("trainer.eval_batch_size")
    elif eb == "auto":
        d.drop("trainer.eval_batch_size", "missing-feature", "recipec does not tune the evaluation batch size")
    elif d.has("trainer.eval_batch_size"):
        d.set("train.eval_micro_batch_size", int(eb), "trainer.eval_batch_size")
    else:
        d.default("train.eval_micro_batch_size", 2, "trainer.eval_batch_size", "eval_batch_size 2")
    if d.get("trainer.eval_steps"):
        d.set("train.eval_batches", int(d.get("trainer.eval_steps")), "trainer.eval_steps")
    else:
        (d.set("train.eval_batches", 0, "trainer.eval_steps") if d.has("trainer.eval_steps") else d.default("train.eval_batches", 0, "trainer.eval_steps", "eval_steps null: the whole validation split"))
    stop = int(d.get("trainer.early_stop", TRAINER["early_stop"]))
    why = "Ludwig counts evaluations after the first checkpoint, recipec the one before the first step too; Ludwig watches the output feature's validation loss"
    if stop > 0:
        if d.has("trainer.early_stop"):
            d.set("train.early_stopping_patience", stop, "trainer.early_stop", approx=why)
        else:
            d.default("train.early_stopping_patience", stop, "trainer.early_stop", f"early_stop 5: stop after 5 evaluations without a better validation loss ({why})")
    else:
        d.exact("trainer.early_stop")
    for key in ("trainer.validation_field", "trainer.validation_metric"):
        if d.has(key):
            v = d.get(key)
            d.exact(key) if v in (None, "loss") or v == d.get("output_features[0].name") else d.drop(key, "missing-feature", "recipec watches the validation loss")
    if d.has("trainer.evaluate_training_set"):
        d.drop("trainer.evaluate_training_set", "not-for-training", "training-set metrics")


def _launch(d: Draft, options) -> None:  # noqa: ANN001
    kind = d.get("backend.type", "local")
    if not d.has("backend"):
        return
    d.exact("backend.type")
    if kind == "deepspeed":
        d.set("launch.strategy", "deepspeed", "backend.type")
        z = "backend.zero_optimization"
        if d.has(f"{z}.stage"):
            d.set("launch.deepspeed.zero_stage", int(d.get(f"{z}.stage")), f"{z}.stage")
        for src, dst in (("offload_optimizer", "offload_optimizer"), ("offload_param", "offload_params")):
            dev = d.get(f"{z}.{src}.device")
            if dev is not None:
                d.set(f"launch.deepspeed.{dst}", dev, f"{z}.{src}.device")
            if d.has(f"{z}.{src}.pin_memory"):
                d.drop(f"{z}.{src}.pin_memory", "no-equivalent", "recipec keeps DeepSpeed's own pin_memory (false); it changes speed, not the result")
    elif kind == "ray":
        d.approx("recipec launches its own processes: --num-processes gives their count", "backend.type")
    for key in d.keys_under("backend"):
        if key not in d.ledger:
            d.drop(key, "no-equivalent", f"a setting of Ludwig's {kind} backend")


def _rest(d: Draft) -> None:
    for key, (default, reason, why) in SAME.items():
        if not d.has(key) or key in d.ledger:
            continue
        value = d.get(key)
        if value == default:
            d.exact(key)
        else:
            d.drop(key, reason, why or f"`{key}` is not imported")
        for dep in DEPENDENT.get(key, ()):
            k = f"trainer.{dep}"
            if d.has(k):
                d.exact(k) if value == default else d.drop(k, reason, why)
    for key, reason, why in (
        ("generation", "not-for-training", "generation settings for inference"),
        ("model_parameters", "missing-feature", "the model's RoPE scaling and NEFTune settings are not imported"),
        ("defaults", "no-equivalent", "per-feature-type defaults: the features themselves are imported"),
        ("hyperopt", "missing-feature", "recipec runs one training, not a hyperparameter search"),
        ("trainer.enable_profiling", "not-for-training", "profiling"),
        ("trainer.profiler", "not-for-training", "profiling"),
        ("trainer.effective_batch_size", "no-equivalent", "read into the batch size"),
    ):
        if d.has(key) and not all(k in d.ledger for k in d.keys_under(key)):
            d.drop(key, reason, why)
