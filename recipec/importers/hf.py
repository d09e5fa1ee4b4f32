"""transformers' `TrainingArguments`, shared by the importers whose trainers are built on it
(axolotl, LLaMA-Factory and a saved `TrainingArguments` itself).

:func:`training_args` maps every `TrainingArguments` key the config has, under the tool's own
spelling (`rename`), and writes the defaults the run used for what the config leaves out.
:func:`schedule` maps transformers' `get_scheduler` types onto recipec's schedule, step for
step (tests/importers/test_hf_schedules.py checks each against transformers itself):

* linear, cosine, cosine_with_min_lr, polynomial, constant_with_warmup, inverse_sqrt:
  warmup + one decay, with the floor written (transformers decays to 0; recipec's default
  floor is 0.1);
* constant: transformers ignores the warmup;
* cosine_with_restarts: `cosine_restarts` phases when the cycles divide the decay steps;
* warmup_stable_decay: explicit phases (its warmup starts at `min_lr_ratio`);
* cosine_warmup_with_min_lr: runs one step ahead of the others (approximate);
* reduce_lr_on_plateau, greedy: follow the eval loss; recipec has no such schedule.

The step counts are the ones `TrainingArguments.get_warmup_steps` gives: an integer
warmup, or `ceil(ratio * total steps)`, which is recipec's fraction too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from ..runtime.stopping import greater_is_better  # stdlib only
from ..schema import DataTable
from .core import Draft, Renamed, epochs_cadence, num

VERSION = "transformers 5.25.0"

TRAINING_ARGUMENTS: tuple[str, ...] = (
    # transformers 5.25's fields
    "output_dir", "per_device_train_batch_size", "num_train_epochs", "max_steps", "learning_rate",
    "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "optim", "optim_args", "weight_decay",
    "adam_beta1", "adam_beta2", "adam_epsilon", "optim_target_modules", "gradient_accumulation_steps",
    "average_tokens_across_devices", "max_grad_norm", "label_smoothing_factor", "bf16", "fp16",
    "bf16_full_eval", "fp16_full_eval", "tf32", "activation_checkpointing", "activation_checkpointing_kwargs",
    "gradient_checkpointing", "gradient_checkpointing_kwargs", "torch_compile", "torch_compile_backend",
    "torch_compile_mode", "use_liger_kernel", "liger_kernel_config", "use_cache", "neftune_noise_alpha",
    "torch_empty_cache_steps", "auto_find_batch_size", "logging_strategy", "logging_steps",
    "logging_first_step", "log_on_each_node", "logging_nan_inf_filter", "include_num_input_tokens_seen",
    "log_level", "log_level_replica", "disable_tqdm", "report_to", "run_name", "project", "trackio_space_id",
    "trackio_bucket_id", "trackio_static_space_id", "eval_strategy", "eval_steps", "eval_delay",
    "per_device_eval_batch_size", "prediction_loss_only", "eval_on_start", "eval_do_concat_batches",
    "eval_use_gather_object", "eval_accumulation_steps", "include_for_metrics", "batch_eval_metrics",
    "save_only_model", "save_strategy", "save_steps", "save_on_each_node", "save_total_limit",
    "enable_jit_checkpoint", "push_to_hub", "hub_token", "hub_private_repo", "hub_model_id", "hub_strategy",
    "hub_always_push", "hub_revision", "load_best_model_at_end", "metric_for_best_model", "greater_is_better",
    "ignore_data_skip", "restore_callback_states_from_checkpoint", "full_determinism", "seed", "data_seed",
    "use_cpu", "accelerator_config", "parallelism_config", "dataloader_drop_last", "dataloader_num_workers",
    "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "dataloader_multiprocessing_context", "dataloader_in_order", "remove_unused_columns", "label_names",
    "train_sampling_strategy", "length_column_name", "ddp_find_unused_parameters", "ddp_bucket_cap_mb",
    "ddp_broadcast_buffers", "ddp_static_graph", "ddp_backend", "ddp_timeout", "fsdp", "fsdp_config",
    "deepspeed", "debug", "skip_memory_metrics", "do_train", "do_eval", "do_predict", "resume_from_checkpoint",
    "local_rank",
    # fields of transformers 4.x, removed or renamed since: saved configs still carry them
    "warmup_ratio", "evaluation_strategy", "overwrite_output_dir", "logging_dir", "save_safetensors",
    "no_cuda", "use_mps_device", "jit_mode_eval", "use_ipex", "half_precision_backend", "fp16_opt_level",
    "fp16_backend", "tpu_num_cores", "tpu_metrics_debug", "past_index", "group_by_length", "mp_parameters",
    "push_to_hub_model_id", "push_to_hub_organization", "push_to_hub_token", "include_inputs_for_metrics",
    "include_tokens_per_second", "ray_scope", "split_batches", "dispatch_batches", "fsdp_min_num_params",
    "fsdp_transformer_layer_cls_to_wrap", "torchdynamo", "xpu_backend", "sharded_ddp",
    "use_legacy_prediction_loop", "per_gpu_train_batch_size", "per_gpu_eval_batch_size", "adafactor",
    "tp_size", "predict_with_generate", "generation_max_length", "generation_num_beams",
    "generation_config", "sortish_sampler",
)
"""Every key a `TrainingArguments` (and `Seq2SeqTrainingArguments`) accepts, then or now."""

TRAINING_ARGUMENTS += tuple(
    f"{k}.*"
    for k in (
        "lr_scheduler_kwargs", "fsdp_config", "accelerator_config", "gradient_checkpointing_kwargs",
        "activation_checkpointing_kwargs", "deepspeed", "liger_kernel_config", "parallelism_config",
        "generation_config", "optim_args", "torch_compile_options", "debug",
    )
) + ("report_to[*]", "fsdp[*]", "label_names[*]", "optim_target_modules[*]", "include_for_metrics[*]")

def renamed_4x(reads: str) -> dict[str, Renamed]:
    """TrainingArguments' old names that transformers 4.x read as the new ones (its
    `__post_init__`, `train_batch_size`): the old value wins when it is set. transformers 5.0
    removed them all (its MIGRATION_GUIDE_V5.md). `reads`: who reads them so."""

    def old(new: str, since: str, **kw: Any) -> Renamed:
        return Renamed(new, since, wins="old", reads=reads, **kw)

    return {
        "no_cuda": old("use_cpu", "transformers 4.32"),
        "per_gpu_train_batch_size": old("per_device_train_batch_size", "transformers 3 (2020)"),
        "per_gpu_eval_batch_size": old("per_device_eval_batch_size", "transformers 3 (2020)"),
        "fp16_backend": old("half_precision_backend", "transformers 4 (2021)", value=lambda v: None if v in (None, "auto") else v),
        "push_to_hub_token": old("hub_token", "transformers 4 (2021)"),
        "include_inputs_for_metrics": old("include_for_metrics", "transformers 4.46", value=lambda v: ["inputs"] if v else None),
        "adafactor": old("optim", "transformers 4 (2021)", value=lambda v: "adafactor" if v else None),
    }


DEFAULTS: dict[str, Any] = {
    "learning_rate": 5e-5,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-8,
    "max_grad_norm": 1.0,
    "optim": "adamw_torch_fused",
    "num_train_epochs": 3.0,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "seed": 42,
    "logging_steps": 500,
    "save_steps": 500,
}
"""transformers' defaults of the keys that change the run (5.25; `optim` is
`adamw_torch_fused` where fused AdamW is available, as on CUDA)."""

NOT_FOR_TRAINING: frozenset[str] = frozenset(
    {
        "push_to_hub", "hub_token", "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push",
        "hub_revision", "push_to_hub_model_id", "push_to_hub_organization", "push_to_hub_token",
        "logging_dir", "logging_first_step", "logging_nan_inf_filter", "log_level", "log_level_replica",
        "log_on_each_node", "disable_tqdm", "run_name", "project", "trackio_space_id", "trackio_bucket_id",
        "trackio_static_space_id", "overwrite_output_dir", "do_train", "do_eval", "do_predict", "local_rank",
        "debug", "skip_memory_metrics", "include_num_input_tokens_seen", "include_tokens_per_second",
        "include_for_metrics", "include_inputs_for_metrics", "prediction_loss_only", "batch_eval_metrics",
        "eval_do_concat_batches", "eval_use_gather_object", "eval_accumulation_steps", "past_index",
        "save_safetensors", "save_on_each_node", "save_only_model", "predict_with_generate",
        "generation_max_length", "generation_num_beams", "generation_config", "ray_scope", "tpu_metrics_debug",
        "use_legacy_prediction_loop", "logging_strategy", "bf16_full_eval", "fp16_full_eval", "jit_mode_eval",
        "torch_empty_cache_steps", "ddp_backend", "ddp_find_unused_parameters",
        "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "ddp_static_graph", "dataloader_multiprocessing_context",
        "remove_unused_columns",
        "label_names", "metric_for_best_model", "greater_is_better", "use_cache",
        "enable_jit_checkpoint", "restore_callback_states_from_checkpoint", "ignore_data_skip",
        "length_column_name", "per_device_eval_batch_size", "per_gpu_eval_batch_size", "tpu_num_cores",
        "mp_parameters", "fp16_opt_level", "fp16_backend", "half_precision_backend",
    }
)
"""Keys that change nothing about what is trained: hub upload, logging, evaluation output,
process plumbing, what happens after training."""

OPTIMIZERS: dict[str, tuple[str, dict[str, Any], str]] = {
    # transformers' optim -> (recipec optim.name, extra keys, what differs ("" exact))
    "adamw_torch": ("adamw", {"implementation": "auto"}, ""),
    "adamw_torch_fused": ("adamw", {"implementation": "fused"}, ""),
    "adamw_hf": ("adamw", {}, "transformers' own AdamW (removed in 5.x) becomes torch's AdamW; same update"),
    "adamw_torch_xla": ("adamw", {}, "the XLA AdamW becomes torch's AdamW"),
    "adamw_torch_npu_fused": ("adamw", {}, "the NPU fused AdamW becomes torch's AdamW"),
    "adamw_apex_fused": ("adamw", {"implementation": "fused"}, "apex's fused AdamW becomes torch's fused AdamW"),
    "adamw_anyprecision": ("adamw", {}, "torchdistx's AnyPrecisionAdamW becomes torch's AdamW"),
    "adamw_bnb_8bit": ("adamw_8bit", {}, ""),
    "adamw_8bit": ("adamw_8bit", {}, ""),
    "paged_adamw_8bit": ("paged_adamw_8bit", {}, ""),
    "paged_adamw": ("paged_adamw_8bit", {}, "paged 32-bit AdamW becomes paged 8-bit AdamW (8-bit moments)"),
    "paged_adamw_32bit": ("paged_adamw_8bit", {}, "paged 32-bit AdamW becomes paged 8-bit AdamW (8-bit moments)"),
    "adamw_torch_4bit": ("adamw_8bit", {}, "torchao's 4-bit AdamW becomes bitsandbytes' 8-bit AdamW"),
    "adamw_torch_8bit": ("adamw_8bit", {}, "torchao's 8-bit AdamW becomes bitsandbytes' 8-bit AdamW"),
    "lion_32bit": ("lion", {}, "bitsandbytes' Lion becomes lion-pytorch's; same update"),
    "lion_8bit": ("lion", {}, "8-bit Lion becomes 32-bit Lion"),
    "paged_lion_32bit": ("lion", {}, "paged Lion becomes Lion"),
    "paged_lion_8bit": ("lion", {}, "paged 8-bit Lion becomes 32-bit Lion"),
    "sgd": ("sgd", {"momentum": 0.0}, ""),
    "adafactor": ("adafactor", {}, "transformers' Adafactor (relative step off, scale_parameter off, warmup_init off) becomes torch's Adafactor"),
    "schedule_free_adamw": ("schedule_free_adamw", {}, ""),
}


def _kwargs(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    return dict(value) if isinstance(value, Mapping) else {}


def key(rename: Mapping[str, str], hf: str) -> str:
    return rename.get(hf, hf)


def warmup(d: Draft, rename: Mapping[str, str], defaults: Mapping[str, Any], total: int | None) -> tuple[int | float, int | None]:
    """Write `schedule.warmup` from warmup_steps / warmup_ratio; returns (the recipe's warmup,
    the warmup in steps when the total is known)."""
    ks, kr = key(rename, "warmup_steps"), key(rename, "warmup_ratio")
    steps, ratio = num(d.get(ks)), num(d.get(kr))
    if steps is not None and steps >= 1:
        value: int | float = int(steps)
        d.set("schedule.warmup", value, ks)
        if ratio:
            d.drop(kr, "ignored-by-tool", f"`{ks}` > 0 wins over `{kr}`.")
            d.warn(f"`{kr}: {ratio}` is ignored: `{ks}: {steps}` is set and wins", kr, ks)
        elif ratio is not None:
            d.exact(kr)
    elif steps is not None and 0 < steps < 1:
        value = float(steps)
        d.set("schedule.warmup", value, ks, note="a fraction of the run, rounded up")
        if ratio is not None:
            d.drop(kr, "ignored-by-tool", f"`{ks}` > 0 wins over `{kr}`.")
    elif ratio:
        value = float(ratio) if ratio < 1 else 0
        if ratio >= 1:
            d.set("schedule.warmup", 0, kr, approx="a warmup of the whole run; recipec's warmup must be shorter than the run")
        else:
            d.set("schedule.warmup", value, kr, *( [ks] if steps is not None else []), note="a fraction of the run, rounded up")
    else:
        value = 0
        keys = [k for k in (ks, kr) if d.has(k)]
        if keys:
            d.set("schedule.warmup", 0, *keys)
        else:
            d.default("schedule.warmup", 0, ks, "no warmup")
    if total is None:
        return value, None
    return value, (value if isinstance(value, int) else math.ceil(total * value))


def schedule(
    d: Draft,
    rename: Mapping[str, str] = {},
    defaults: Mapping[str, Any] = DEFAULTS,
    total: int | None = None,
) -> None:
    """Write `[schedule]` from transformers' scheduler settings. `total` is the run's length
    in optimizer steps when the config fixes it (max_steps), else None."""
    kn, kk = key(rename, "lr_scheduler_type"), key(rename, "lr_scheduler_kwargs")
    name = d.get(kn)
    if name is None:
        name = defaults["lr_scheduler_type"]
        explicit = False
    else:
        explicit = True
    kw = _kwargs(d.get(kk))
    if d.has(kk):
        d.exact(kk)
    src = [kn] if explicit else []

    def decay(value: str, **more: Any) -> None:
        if explicit:
            d.set("schedule.decay", value, *src)
        else:
            d.default("schedule.decay", value, kn, f"lr_scheduler_type {name!r}: schedule.decay = {value!r}")
        for k, v in more.items():
            if explicit:
                d.set(f"schedule.{k}", v, *src)
            else:
                d.default(f"schedule.{k}", v, kn, f"lr_scheduler_type {name!r}: schedule.decay = {value!r}")

    if name in ("constant",):
        w_keys = [k for k in (key(rename, "warmup_steps"), key(rename, "warmup_ratio")) if d.has(k)]
        w = [num(d.get(k)) for k in w_keys]
        d.set("schedule.warmup", 0, *src, note="transformers' constant schedule has no warmup")
        for k, v in zip(w_keys, w):
            if v:
                d.drop(k, "ignored-by-tool", "the constant schedule has no warmup; use constant_with_warmup.")
                d.warn(f"`{k}: {v}` is ignored: lr_scheduler_type {name!r} has no warmup", k, kn)
            else:
                d.exact(k)
        decay("constant")
        return
    w_value, w_steps = warmup(d, rename, defaults, total)
    _schedule_shape(d, name, kw, kn, kk, src, explicit, decay, w_value, total, w_steps)
    _check_floor(d, kn, kk, rename, defaults)


def _check_floor(d: Draft, kn: str, kk: str, rename: Mapping[str, str], defaults: Mapping[str, Any]) -> None:
    """A decay whose floor is the peak is a constant LR: say so (the config's author rarely means it)."""
    if d.value("schedule.decay") in (None, "constant"):
        return
    peak = num(d.get(key(rename, "learning_rate"), defaults.get("learning_rate")))
    ratio = d.value("schedule.min_lr_ratio")
    floor = d.value("schedule.min_lr")
    if (ratio is not None and ratio >= 1) or (floor is not None and peak and floor >= peak):
        what = f"min_lr_ratio {ratio}" if ratio is not None and ratio >= 1 else f"min_lr {floor} against learning_rate {peak}"
        d.warn(f"the {d.get(kn, d.value('schedule.decay'))} schedule's floor equals its peak ({what}): the LR never decays", kk, kn)


def _schedule_shape(d: Draft, name: Any, kw: dict, kn: str, kk: str, src: list, explicit: bool, decay: Any, w_value: Any, total: Any, w_steps: Any) -> None:
    if name == "linear":
        decay("linear", min_lr_ratio=0.0)
    elif name == "cosine":
        cycles = num(kw.get("num_cycles", 0.5))
        if cycles != 0.5:
            decay("cosine", min_lr_ratio=0.0)
            d.approx(f"num_cycles {cycles} (a cosine that rises again); recipec's cosine is a half cycle (0.5)", kk)
        else:
            decay("cosine", min_lr_ratio=0.0)
    elif name == "cosine_with_min_lr":
        decay("cosine")
        if "min_lr" in kw:
            d.set("schedule.min_lr", num(kw["min_lr"]), kk)
        elif "min_lr_rate" in kw:
            d.set("schedule.min_lr_ratio", num(kw["min_lr_rate"]), kk)
        else:
            d.set("schedule.min_lr_ratio", 0.0, *src)
        if num(kw.get("num_cycles", 0.5)) != 0.5:
            d.approx("num_cycles other than 0.5; recipec's cosine is a half cycle", kk)
    elif name == "polynomial":
        decay("polynomial")
        if "power" in kw:
            d.set("schedule.power", float(num(kw["power"])), kk)
        else:
            d.default("schedule.power", 1.0, f"{kk}.power", "a linear polynomial decay (power 1.0)")
        lr_end = num(kw.get("lr_end", 1e-7))
        if "lr_end" in kw:
            d.set("schedule.min_lr", lr_end, kk)
        else:
            d.default("schedule.min_lr", lr_end, f"{kk}.lr_end", "the polynomial decay ends at lr_end 1e-7")
    elif name == "constant_with_warmup":
        decay("constant")
    elif name == "inverse_sqrt":
        decay("inverse_sqrt", min_lr_ratio=0.0)
        if "timescale" in kw:
            d.set("schedule.timescale", int(num(kw["timescale"])), kk)
    elif name == "cosine_with_restarts":
        cycles = num(kw.get("num_cycles", 1))
        if cycles == 1:
            decay("cosine", min_lr_ratio=0.0)
        elif total is not None and w_steps is not None and (total - w_steps) % int(cycles) == 0 and cycles == int(cycles):
            decay("cosine_restarts", restart_period=(total - w_steps) // int(cycles), restart_mult=1, min_lr_ratio=0.0)
        else:
            period = max(1, round((total - (w_steps or 0)) / cycles)) if total else None
            decay("cosine", min_lr_ratio=0.0)
            d.approx(
                f"{cycles} hard restarts need the decay's length in steps (a multiple of the cycles); written as one cosine"
                + (f" (a period would be about {period} steps)" if period else ""),
                kk,
                *src,
            )
    elif name == "warmup_stable_decay":
        _wsd(d, kw, kk, src, w_value, total, w_steps)
    elif name == "cosine_warmup_with_min_lr":
        decay("cosine")
        rate = num(kw.get("min_lr_rate", 0.0)) if "min_lr" not in kw else None
        if rate is not None:
            d.set("schedule.min_lr_ratio", rate, *([kk] if "min_lr_rate" in kw else src))
        else:
            d.set("schedule.min_lr", num(kw["min_lr"]), kk)
        d.approx("transformers' cosine_warmup_with_min_lr runs one step ahead ((s + 1) / W warmup); recipec's warmup starts at 0", *src)
    elif name in ("reduce_lr_on_plateau", "greedy"):
        d.set("schedule.warmup", 0, *src, approx="a constant LR; recipec does not lower the LR from the eval loss")
        decay("constant")
        d.drop(kn, "missing-feature", f"{name} follows the eval loss; recipec's schedules are fixed in advance.")
    else:
        decay("linear", min_lr_ratio=0.0)
        d.drop(kn, "missing-feature", f"recipec does not know the scheduler {name!r}; a linear decay is written.")


def _wsd(d: Draft, kw: dict[str, Any], kk: str, src: list[str], w_value: int | float, total: int | None, w_steps: int | None) -> None:
    """transformers' warmup_stable_decay as recipec's wsd shorthand: warmup from min_lr_ratio,
    stable, cooldown of num_decay_steps to min_lr_ratio."""
    m = float(num(kw.get("min_lr_ratio", 0.0)))
    decay_type = kw.get("decay_type", "cosine")
    warmup_type = kw.get("warmup_type", "linear")
    d.set("schedule.decay", "wsd", *src)
    d.set("schedule.min_lr_ratio", m, kk)
    if "num_decay_steps" in kw:
        d.set("schedule.cooldown", int(num(kw["num_decay_steps"])), kk)
    if decay_type in ("linear", "cosine", "1-sqrt"):
        d.set("schedule.cooldown_shape", decay_type, kk)
    if m and w_value:
        d.set("schedule.warmup_start_ratio", m, kk, note="transformers' wsd warmup starts at min_lr_ratio")
    if warmup_type != "linear":
        d.approx(f"a {warmup_type} warmup; recipec's wsd shorthand warms up linearly", kk)
    if num(kw.get("num_cycles", 0.5)) != 0.5:
        d.approx("num_cycles other than 0.5", kk)
    stable = kw.get("num_stable_steps")
    if stable is not None and total is not None and w_steps is not None:
        if w_steps + int(num(stable)) + int(num(kw.get("num_decay_steps", 0))) != total:
            d.approx("warmup + stable + decay steps differ from the run's steps: transformers holds the floor after them, recipec's stable phase takes the rest", kk)
    elif stable is not None:
        d.approx("num_stable_steps: recipec's stable phase takes whatever warmup and cooldown leave", kk)


def optimizer(d: Draft, rename: Mapping[str, str] = {}, defaults: Mapping[str, Any] = DEFAULTS) -> str:
    """Write `[optim]` (name, lr, weight decay, betas, eps, grad clip); returns recipec's name."""
    ko = key(rename, "optim")
    name = d.get(ko)
    explicit = name is not None
    name = str(name if explicit else defaults["optim"])
    ours, extra, differs = OPTIMIZERS.get(name, ("adamw", {}, None))  # type: ignore[assignment]
    if differs is None:
        d.set("optim.name", "adamw", note=f"recipec has no {name!r} (see the header)")
        d.drop(ko, "missing-feature", f"recipec has no optimizer like {name!r}; AdamW is written instead.")
        d.warn(f"the optimizer {name!r} cannot be imported; the recipe trains with AdamW", ko)
    elif explicit:
        d.set("optim.name", ours, ko, approx=differs or None)
    else:
        d.default("optim.name", ours, ko, f"optim {name!r}")
    for k, v in extra.items():
        if explicit:
            d.set(f"optim.{k}", v, ko)
        else:
            d.default(f"optim.{k}", v, ko, f"optim {name!r}")
    _plain(d, "optim.lr", "learning_rate", rename, defaults)
    _plain(d, "optim.weight_decay", "weight_decay", rename, defaults)
    _plain(d, "optim.grad_clip", "max_grad_norm", rename, defaults)
    if ours in ("adamw", "adamw_8bit", "paged_adamw_8bit", "schedule_free_adamw", "lion"):
        b1, b2 = key(rename, "adam_beta1"), key(rename, "adam_beta2")
        betas = [float(num(d.get(b1, defaults["adam_beta1"]))), float(num(d.get(b2, defaults["adam_beta2"])))]
        given = [k for k in (b1, b2) if d.has(k)]
        if given:
            d.set("optim.betas", betas, *given)
        else:
            d.default("optim.betas", betas, b1, f"adam_beta1 0.9, adam_beta2 0.999: optim.betas = {betas}")
        if len(given) == 1:
            d.default("optim.betas", betas, ({b1, b2} - set(given)).pop(), "the other beta is the default")
            d.tables["optim"]["betas"].keys = tuple(given) + d.tables["optim"]["betas"].keys
        if ours == "lion":
            d.approx("Lion's betas are not Adam's; the values are carried over", *given)
    else:
        for k in ("adam_beta1", "adam_beta2"):
            if d.has(key(rename, k)):
                d.drop(key(rename, k), "ignored-by-tool", f"the optimizer {name!r} has no Adam betas.")
    if ours in ("adamw", "adamw_8bit", "paged_adamw_8bit", "schedule_free_adamw"):
        _plain(d, "optim.eps", "adam_epsilon", rename, defaults)
    elif d.has(key(rename, "adam_epsilon")):
        d.drop(key(rename, "adam_epsilon"), "ignored-by-tool", f"the optimizer {name!r} has no Adam epsilon.")
    return ours


def _plain(d: Draft, target: str, hf: str, rename: Mapping[str, str], defaults: Mapping[str, Any]) -> None:
    k = key(rename, hf)
    if d.has(k) and d.get(k) is None and hf in defaults:  # written but left empty: the default
        d.set(target, _float(defaults[hf]), k, note=f"empty: transformers' default {defaults[hf]}")
    elif d.has(k):
        d.set(target, _float(d.get(k)), k)
    elif hf in defaults:
        d.default(target, _float(defaults[hf]), k, f"{hf} {defaults[hf]}")


def _float(v: Any) -> Any:
    v = num(v)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def length(d: Draft, rename: Mapping[str, str] = {}, defaults: Mapping[str, Any] = DEFAULTS) -> int | None:
    """Write the run's length: max_steps > 0 wins over num_train_epochs (as in the Trainer).
    Returns the steps when fixed."""
    ks, ke = key(rename, "max_steps"), key(rename, "num_train_epochs")
    steps = num(d.get(ks))
    if steps is not None and steps > 0:
        d.set("train.max_steps", int(steps), ks)
        if d.has(ke):
            d.drop(ke, "ignored-by-tool", f"`{ks}` > 0 wins over the epochs.")
            d.warn(f"`{ke}: {d.get(ke)}` is ignored: `{ks}: {steps}` sets the run's length", ke, ks)
        return int(steps)
    epochs = num(d.get(ke, defaults["num_train_epochs"]))
    epochs = int(epochs) if float(epochs) == int(epochs) else float(epochs)
    keys = [k for k in (ke, ks) if d.has(k)]
    if d.has(ke):
        d.set("train.epochs", epochs, *keys)
    else:
        d.default("train.epochs", epochs, ke, f"{epochs} epochs")
        if d.has(ks):
            d.exact(ks)
    return None


def batch(d: Draft, num_processes: int, rename: Mapping[str, str] = {}, defaults: Mapping[str, Any] = DEFAULTS, ranks: str | None = None) -> None:
    """micro_batch_size and the global batch = micro * accumulation * processes (`ranks`: the
    data-parallel ranks of a device mesh, which then sets launch.num_processes itself)."""
    km, ka = key(rename, "per_device_train_batch_size"), key(rename, "gradient_accumulation_steps")
    micro = int(num(d.get(km, defaults["per_device_train_batch_size"])))
    accum = int(num(d.get(ka, defaults["gradient_accumulation_steps"])))
    if d.has(km):
        d.set("train.micro_batch_size", micro, km)
    else:
        d.default("train.micro_batch_size", micro, km, f"{micro} per device")
    ke = key(rename, "per_device_eval_batch_size")
    if d.has(ke) and d.get(ke) is not None:
        d.set("train.eval_micro_batch_size", int(num(d.get(ke))), ke)
    note = f"{micro} * {accum} accumulation * " + (ranks or f"{num_processes} process{'es' if num_processes > 1 else ''}")
    keys = [k for k in (km, ka) if d.has(k)]
    if keys:
        d.set("train.batch_size", micro * accum * num_processes, *keys, note=note)
    else:
        d.defaults[:] = [e for e in d.defaults if e[0] != ka]
        d.default("train.batch_size", micro * accum * num_processes, ka, note)
    if num_processes > 1 and ranks is None:
        d.set("launch.num_processes", num_processes, note="recipec import --num-processes")


def training_args(
    d: Draft,
    num_processes: int,
    rename: Mapping[str, str] = {},
    defaults: Mapping[str, Any] = DEFAULTS,
) -> None:
    """Every TrainingArguments key of the config that recipec can say, under the tool's
    spelling; what it cannot is dropped with the reason."""
    total = length(d, rename, defaults)
    batch(d, num_processes, rename, defaults)
    optimizer(d, rename, defaults)
    schedule(d, rename, defaults, total)
    k = lambda hf: key(rename, hf)  # noqa: E731
    if d.has(k("seed")):
        d.set("recipe.seed", int(num(d.get(k("seed")))), k("seed"))
    else:
        d.default("recipe.seed", defaults["seed"], k("seed"), f"seed {defaults['seed']}")
    if d.has(k("data_seed")) and d.get(k("data_seed")) is not None:
        d.set("data.seed", int(num(d.get(k("data_seed")))), k("data_seed"))
    elif d.has(k("data_seed")):
        d.exact(k("data_seed"))  # null: the data order follows seed, as data.seed unset follows recipe.seed
    bf16, fp16 = d.get(k("bf16")), d.get(k("fp16"))
    if bf16 or fp16:
        d.set("launch.mixed_precision", "bf16" if bf16 else "fp16", *[x for x in (k("bf16"), k("fp16")) if d.has(x)])
    else:
        for x in (k("bf16"), k("fp16")):
            if d.has(x):
                d.set("launch.mixed_precision", "no", x)
    if d.has(k("tf32")):
        if d.get(k("tf32")) is None:
            d.exact(k("tf32"))
        else:
            d.set("launch.tf32", bool(d.get(k("tf32"))), k("tf32"))
    # transformers 5.23's names, else the older ones (axolotl's and LLaMA-Factory's keys)
    ac = next((x for x in (k("activation_checkpointing"), k("gradient_checkpointing")) if d.has(x)), None)
    ak = next((x for x in (k("activation_checkpointing_kwargs"), k("gradient_checkpointing_kwargs")) if d.has(x)), None)
    for key_, target in ((ac, "model.gradient_checkpointing"), (k("torch_compile"), "model.compile")):
        if key_ and d.has(key_):
            d.set(target, bool(d.get(key_)), key_)
    if ak and d.get(ak):
        d.approx("recipec's gradient checkpointing uses transformers' defaults (use_reentrant)", ak)
    elif ak:
        d.exact(ak)
    if d.has(k("torch_compile_mode")) and d.get(k("torch_compile_mode")):
        d.set("model.compile_mode", d.get(k("torch_compile_mode")), k("torch_compile_mode"))
    elif d.has(k("torch_compile_mode")):
        d.exact(k("torch_compile_mode"))
    if d.has(k("torch_compile_backend")):
        d.drop(k("torch_compile_backend"), "no-equivalent", "recipec compiles with torch's default backend (inductor).")
    if not d.has(k("logging_steps")) and "logging_steps" in defaults:
        d.default("train.log_every", defaults["logging_steps"], k("logging_steps"), f"a log line every {defaults['logging_steps']} steps")
    if d.has(k("logging_steps")):
        steps = num(d.get(k("logging_steps")))
        if isinstance(steps, float) and steps < 1:
            d.drop(k("logging_steps"), "no-equivalent", "a fraction of the run; recipec logs every so many steps.")
        else:
            d.set("train.log_every", int(steps), k("logging_steps"))
    epochs = num(d.get(key(rename, "num_train_epochs"), defaults["num_train_epochs"]))
    _eval(d, k, total, epochs)
    _save(d, k, defaults, total, epochs)
    if d.has(k("output_dir")):
        d.set("output.dir", str(d.get(k("output_dir"))), k("output_dir"))
    if d.has(k("report_to")):
        _trackers(d, k("report_to"))
    for hf, target in (("dataloader_num_workers", "data.num_workers"), ("dataloader_pin_memory", "data.pin_memory")):
        if d.has(k(hf)):
            d.set(target, d.get(k(hf)), k(hf))
    workers = num(d.get(k("dataloader_num_workers")) or 0)
    for hf, target in (("dataloader_persistent_workers", "data.persistent_workers"), ("dataloader_prefetch_factor", "data.prefetch_factor")):
        value = d.get(k(hf))
        if not d.has(k(hf)) or value in (None, False):
            continue  # the default: as recipec's
        if workers > 0:
            d.set(target, value, k(hf))
        else:
            d.drop(k(hf), "ignored-by-tool", "a setting of DataLoader workers, and dataloader_num_workers is 0.")
            d.warn(f"`{k(hf)}` is set but dataloader_num_workers is 0: torch's DataLoader refuses it", k(hf))
    if d.has(k("use_cpu")):
        d.set("launch.cpu", bool(d.get(k("use_cpu"))), k("use_cpu"))
    if d.get(k("dataloader_drop_last")):
        d.exact(k("dataloader_drop_last"))
    elif d.has(k("dataloader_drop_last")):
        d.approx("the Trainer keeps an epoch's last partial batch; recipec's loader drops it", k("dataloader_drop_last"))
    _parallel(d, k)
    if d.has(k("label_smoothing_factor")):
        if num(d.get(k("label_smoothing_factor"))):  # the Trainer's LabelSmoother, which loss.label_smoothing computes
            d.set("loss.label_smoothing", float(num(d.get(k("label_smoothing_factor")))), k("label_smoothing_factor"))
        else:
            d.exact(k("label_smoothing_factor"))
    if d.has(k("ddp_timeout")):  # seconds, handed to init_process_group (transformers' default 1800)
        seconds = num(d.get(k("ddp_timeout")))
        if seconds is not None and seconds > 0:
            d.set("launch.collective_timeout_minutes", seconds / 60, k("ddp_timeout"))
        else:
            d.drop(k("ddp_timeout"), "no-equivalent", "a timeout of no time.")
    if d.has(k("neftune_noise_alpha")):
        if d.get(k("neftune_noise_alpha")):  # the Trainer registers transformers' hook, as recipec does
            d.set("train.neftune_noise_alpha", float(num(d.get(k("neftune_noise_alpha")))), k("neftune_noise_alpha"))
        else:
            d.exact(k("neftune_noise_alpha"))
    for hf, why in (
        ("use_liger_kernel", "recipec has no Liger kernels; its `loss.cross_entropy = \"chunked\"` saves the logits' memory."),
        ("liger_kernel_config", "recipec has no Liger kernels."),
        ("group_by_length", "recipec does not sort batches by length."),
        ("train_sampling_strategy", "recipec samples in its own seeded order."),
        ("auto_find_batch_size", "recipec does not retry with a smaller batch."),
        ("optim_args", "extra optimizer arguments in a string; set them in [optim]."),
        ("optim_target_modules", "GaLore-style target modules; recipec has no GaLore."),
        ("average_tokens_across_devices", "recipec averages the loss over every supervised token of the step."),
        ("full_determinism", "recipec seeds everything; torch's deterministic algorithms are not switched on."),
        ("resume_from_checkpoint", "recipec resumes from the run directory's newest checkpoint by itself."),
        ("eval_delay", "recipec evaluates every `eval_every` steps from the start."),
        ("save_strategy", ""),
        ("accelerator_config", "accelerate's options (split_batches, even_batches, seedable sampler); recipec sets them itself."),
        ("dataloader_in_order", "recipec's data loader keeps its order."),
        ("split_batches", "recipec's batch_size is global already."),
        ("dispatch_batches", "recipec's data loader runs on every process."),
        ("torchdynamo", "the old flag for torch_compile_backend."),
        ("use_ipex", "Intel extension; recipec has none."),
        ("use_mps_device", "recipec does not target Apple's MPS."),
        ("xpu_backend", "recipec does not target XPUs."),
        ("sharded_ddp", "fairscale's sharded DDP (removed); use launch.strategy."),
        ("sortish_sampler", "recipec does not sort batches by length."),
    ):
        if d.has(k(hf)) and k(hf) not in d.ledger and why:
            v = d.get(k(hf))
            if v in (None, False, "", [], {}, "no", 0):
                d.exact(k(hf))
            else:
                d.drop(k(hf), "missing-feature" if "no " in why or "has no" in why else "no-equivalent", why)
    for hf in NOT_FOR_TRAINING - set(WATCHED):  # those two are read by early stopping and best_model, called last
        if d.has(k(hf)) and k(hf) not in d.ledger:
            d.drop(k(hf), "not-for-training", "")


def share_of_run(share: float, total: int | None, epochs: Any, what: str) -> tuple[int | str, str | None, str | None]:
    """`save_steps` / `eval_steps` below 1, the Trainer's share of the run, as a recipe cadence.

    The Trainer takes ceil(share * max_steps). With the run's steps known, that number; with epochs,
    the share in epochs ("3/10 epoch" for 0.1 of 3), which recipec's script multiplies by its steps
    per epoch: the same when the epochs are whole (max_steps is then epochs * steps per epoch).
    Returns (cadence, note, approx)."""
    if total is not None:
        return math.ceil(total * share), f"ceil({share:g} * {total} steps)", None
    cadence = Fraction(str(share)) * Fraction(str(epochs))
    if float(epochs).is_integer():
        return epochs_cadence(cadence), f"{share:g} of {epochs:g} epochs", None
    return epochs_cadence(cadence), None, (
        f"the Trainer places a {what} every ceil({share:g} * ceil({epochs:g} * steps per epoch)) steps, recipec every "
        f"ceil({share:g} * {epochs:g} * steps_per_epoch): a step apart at most"
    )


def _eval(d: Draft, k: Any, total: int | None, epochs: Any) -> None:
    strategy_key = k("eval_strategy") if d.has(k("eval_strategy")) else None
    strategy = d.get(strategy_key) if strategy_key else "no"
    steps = num(d.get(k("eval_steps")))
    if strategy == "steps":
        keys = [x for x in (strategy_key, k("eval_steps")) if x and d.has(x)]
        if steps is not None and 0 < steps < 1:
            every, note, approx = share_of_run(steps, total, epochs, "evaluation")
            d.set("train.eval_every", every, *keys, note=note or "", approx=approx)
        else:
            every = int(steps) if steps is not None and steps >= 1 else int(num(d.get(k("logging_steps"), 500)))
            d.set("train.eval_every", every, *keys)
    elif strategy == "epoch":
        d.set("train.eval_every", "1 epoch", strategy_key)  # type: ignore[arg-type]
        if d.has(k("eval_steps")):
            d.drop(k("eval_steps"), "ignored-by-tool", "eval_strategy is not \"steps\".")
    else:
        if strategy_key:
            # eval_on_start absent: recipec's default, before the first step too
            also = "" if d.has(k("eval_on_start")) else "before the first step and "
            d.set("train.eval_every", 0, strategy_key, approx=f"no evaluation while training; recipec still evaluates {also}at the end")
        else:
            d.default("train.eval_every", 0, k("eval_strategy"), "eval_strategy \"no\": no evaluation while training")
        if d.has(k("eval_steps")):
            d.drop(k("eval_steps"), "ignored-by-tool", "eval_strategy is \"no\": nothing is evaluated.")
            d.warn(f"`{k('eval_steps')}` is set but eval_strategy is {strategy!r}: the trainer never evaluates", k("eval_steps"))
    if d.has(k("eval_on_start")):
        # the Trainer evaluates before the first step whatever eval_strategy says, and again at the
        # start of every resumed train() (Trainer._inner_training_loop); recipec at step 0 only
        on_start = bool(d.get(k("eval_on_start")))
        again = "transformers evaluates again each time a run resumes; recipec only before the first step"
        d.set("train.eval_at_start", on_start, k("eval_on_start"), approx=again if on_start else None)
    elif strategy in ("steps", "epoch"):
        d.default("train.eval_at_start", False, k("eval_on_start"), "no evaluation before the first step")


WATCHED = ("metric_for_best_model", "greater_is_better")
"""The Trainer's keys of the metric its best model and early stopping watch: not for training unless one of them
reads them (train.best_metric, train.greater_is_better)."""

TRL_METRICS = {
    "rewards/accuracies": "reward_accuracy",
    "rewards/margins": "reward_margin",
    "rewards/chosen": "rewards_chosen",
    "rewards/rejected": "rewards_rejected",
    "logps/chosen": "logps_chosen",
    "logps/rejected": "logps_rejected",
    "kl": "kl",
}
"""TRL's names of its preference trainers' evaluation statistics -> recipec's (metrics.jsonl, after `eval_`)."""


def _on_a_logged_metric(d: Draft, key: str) -> bool:
    """Whether the Trainer's best-model metric (`metric_for_best_model`, "loss" by default; transformers prefixes
    "eval_") is one recipec's evaluations log (the held-out loss; TRL's reward statistics for preference pairs, its
    RewardTrainer's "accuracy"), and the config evaluates during training on a held-out split: then the metric and
    its direction go to train.best_metric and train.greater_is_better. Else `key` is dropped, saying why."""
    given = d.get("metric_for_best_model") if d.has("metric_for_best_model") else None
    metric = "loss" if given is None else str(given)
    name = metric[len("eval_"):] if metric.startswith("eval_") else metric
    objective = d.value("preference.objective")
    ours = None
    if name == "loss":
        ours = "eval_loss"
    elif objective is not None and name in TRL_METRICS and not (objective == "reward" and name.startswith(("logps", "kl"))):
        ours = "eval_" + TRL_METRICS[name]
    elif objective == "reward" and name == "accuracy":
        ours = "eval_reward_accuracy"
    default_higher = greater_is_better(metric)  # transformers' default when unset
    higher = bool(d.get("greater_is_better")) if d.has("greater_is_better") and d.get("greater_is_better") is not None else default_higher
    if ours is None:
        better = "higher" if higher else "lower"
        d.drop(key, "no-equivalent", f"on metric_for_best_model {metric!r} ({better} is better); recipec's evaluations log the held-out loss and, for preference pairs, TRL's reward statistics.")
        return False
    eval_fraction = d.value("data.eval_fraction", DataTable.model_fields["eval_fraction"].default)  # recipec's default when unset
    held_out = (eval_fraction or 0) > 0 or any(
        "split" in src and src["split"].value == "eval" for src in d.sources
    )
    if d.value("train.eval_every") == 0 or not held_out:
        d.drop(key, "ignored-by-tool", "nothing is evaluated while training (no evaluation steps, or no held-out split in the config), so the Trainer has no evaluations to watch.")
        return False
    if given is not None and "metric_for_best_model" not in d.ledger:
        if ours == "eval_loss":
            d.exact("metric_for_best_model")
        else:
            d.set("train.best_metric", ours, "metric_for_best_model")
    if d.has("greater_is_better") and d.get("greater_is_better") is not None and "greater_is_better" not in d.ledger:
        if higher == greater_is_better(ours):  # recipec's default for the metric
            d.exact("greater_is_better")
        else:
            d.set("train.greater_is_better", higher, "greater_is_better")
    return True


def early_stopping(d: Draft, key: str) -> None:
    """The patience of the EarlyStoppingCallback axolotl (`early_stopping_patience`) and LLaMA-Factory
    (`early_stopping_steps`) add to the Trainer: train.early_stopping_patience, the same rule on eval_loss. Called
    after the evaluation cadence and the held-out split are drafted."""
    if _on_a_logged_metric(d, key):
        d.set("train.early_stopping_patience", int(d.get(key)), key)


def best_model(d: Draft, key: str = "load_best_model_at_end") -> None:
    """The Trainer's `load_best_model_at_end`: output.save_best (the model of the best metric, kept in model_best/
    beside the final one). Called after the evaluation cadence, the held-out split and early stopping are drafted;
    it accounts for `metric_for_best_model` and `greater_is_better` when nothing read them."""
    if d.has(key) and key not in d.ledger:
        if not d.get(key):
            d.exact(key)
        elif _on_a_logged_metric(d, key):
            d.set("output.save_best", True, key, approx="recipec keeps the best model in model_best/ beside the final one in model/; the Trainer loads it in the final model's place (from the checkpoint of the best evaluation)")
    for watched in WATCHED:  # neither early stopping nor the best model read them
        if d.has(watched) and watched not in d.ledger:
            d.drop(watched, "not-for-training", "")


def _save(d: Draft, k: Any, defaults: Mapping[str, Any], total: int | None, epochs: Any) -> None:
    strategy = d.get(k("save_strategy"), "steps")
    if strategy == "steps" and not d.has(k("save_steps")) and "save_steps" in defaults:
        d.default("train.save_every", defaults["save_steps"], k("save_steps"), f"a checkpoint every {defaults['save_steps']} steps")
    if strategy == "steps":
        if d.has(k("save_steps")):
            steps = num(d.get(k("save_steps")))
            if isinstance(steps, float) and 0 < steps < 1:
                every, note, approx = share_of_run(steps, total, epochs, "checkpoint")
                d.set("train.save_every", every, k("save_steps"), note=note or "", approx=approx)
            else:
                d.set("train.save_every", int(steps), k("save_steps"))
        if d.has(k("save_strategy")):
            d.exact(k("save_strategy"))
    elif strategy == "no":
        d.set("train.save_every", 0, k("save_strategy"))
        if d.has(k("save_steps")):
            d.drop(k("save_steps"), "ignored-by-tool", "save_strategy is \"no\".")
    elif strategy == "epoch":
        d.set("train.save_every", "1 epoch", k("save_strategy"))
        if d.has(k("save_steps")):
            d.drop(k("save_steps"), "ignored-by-tool", f"save_strategy is {strategy!r}.")
    else:
        d.set("train.save_every", 0, k("save_strategy"), approx=f"save_strategy {strategy!r}; recipec saves every save_every steps, written as only the final model")
        if d.has(k("save_steps")):
            d.drop(k("save_steps"), "ignored-by-tool", f"save_strategy is {strategy!r}.")
    if d.has(k("save_total_limit")):
        limit = d.get(k("save_total_limit"))
        d.set("train.keep_last", int(limit) if limit else 0, k("save_total_limit"))


def _trackers(d: Draft, key_: str) -> None:
    value = d.get(key_)
    names = [value] if isinstance(value, str) else list(value or [])
    ours = [n for n in names if n in ("tensorboard", "wandb", "mlflow", "aim")]
    rest = [n for n in names if n not in ("tensorboard", "wandb", "mlflow", "aim", "none")]
    if "all" in names:
        d.set("output.trackers", ["tensorboard"], key_, approx="\"all\" installed trackers; tensorboard written")
    elif rest:
        d.set("output.trackers", ours, key_, approx=f"recipec has no {', '.join(rest)} tracker")
    else:
        d.set("output.trackers", ours, key_, note="written offline under the run directory")


def _parallel(d: Draft, k: Any) -> None:
    ds = d.get(k("deepspeed"))
    if d.has(k("deepspeed")) and ds:
        d.set("launch.strategy", "deepspeed", k("deepspeed"))
        stage = None
        if isinstance(ds, Mapping):
            stage = (ds.get("zero_optimization") or {}).get("stage")
        else:
            import re

            m = re.search(r"z(?:ero)?([0-3])", str(ds))
            stage = int(m.group(1)) if m else None
        if stage in (1, 2, 3):
            d.set("launch.deepspeed.zero_stage", int(stage), k("deepspeed"), approx=f"the ZeRO stage taken from {'the config' if isinstance(ds, Mapping) else 'the file name'}; its other settings are not read")
        else:
            d.approx("the DeepSpeed config file is not read; ZeRO stage 2 (recipec's default) is used", k("deepspeed"))
    elif d.has(k("deepspeed")):
        d.exact(k("deepspeed"))
    fsdp = d.get(k("fsdp"))
    if d.has(k("fsdp")) and fsdp:
        words = fsdp if isinstance(fsdp, list) else str(fsdp).split()
        d.set("launch.strategy", "fsdp", k("fsdp"))
        for w in words:
            if w in ("full_shard", "shard_grad_op", "hybrid_shard", "no_shard"):
                d.set("launch.fsdp.sharding_strategy", w, k("fsdp"))
            if w == "offload":
                d.set("launch.fsdp.cpu_offload", True, k("fsdp"))
        if d.has(k("fsdp_config")):
            d.approx("FSDP settings beyond the sharding strategy and offload are recipec's defaults", k("fsdp_config"))
    elif d.has(k("fsdp")):
        d.exact(k("fsdp"))
        if d.get(k("fsdp_config")):
            d.drop(k("fsdp_config"), "ignored-by-tool", "fsdp is off.")
    for x in ("fsdp_min_num_params", "fsdp_transformer_layer_cls_to_wrap"):
        if d.has(k(x)):
            d.approx("read only with fsdp on; recipec wraps each transformer layer", k(x))


_HANDLER_DEFAULTS = {
    "cp_handler.cp_comm_strategy": "allgather",
    "sp_handler.sp_seq_length_is_variable": True,
    "sp_handler.sp_seq_length": None,
    "sp_handler.sp_allow_recurrent_layers": False,
    "sp_handler.sp_disable_in_eval": True,
}
"""accelerate's defaults for the context and sequence parallel handlers (what recipec's launch writes)."""


def mesh(
    d: Draft,
    num_processes: int,
    rename: Mapping[str, str] = {},
    defaults: Mapping[str, Any] = DEFAULTS,
) -> None:
    """`parallelism_config` (accelerate's ParallelismConfig, saved as a table) and the old
    `tp_size` as `[launch.parallelism]`; call it once the strategy, data and attention are drafted."""
    from .mesh import Dim, Mesh, place

    k = lambda hf: key(rename, hf)  # noqa: E731
    pc, tp_old = k("parallelism_config"), k("tp_size")
    m = Mesh()
    cfg = d.get(pc)
    if isinstance(cfg, Mapping) and cfg:

        def size(name: str) -> int:
            v = num(cfg.get(name))
            return int(v) if isinstance(v, (int, float)) and v else 1

        for name in ("tp_size", "cp_size", "sp_size", "dp_replicate_size"):
            if d.has(f"{pc}.{name}"):
                also: tuple[str, ...] = ()
                if name == "cp_size":
                    also = tuple(x for x in (f"{pc}.cp_backend",) if d.has(x))
                if name == "sp_size":
                    also = tuple(x for x in (f"{pc}.sp_backend",) if d.has(x))
                setattr(m, name, Dim(size(name), (f"{pc}.{name}",), also=also))
        if d.has(f"{pc}.dp_shard_size") and cfg.get("dp_shard_size") is not None:
            m.shard = Dim(size("dp_shard_size"), (f"{pc}.dp_shard_size",))
        elif d.has(f"{pc}.dp_shard_size"):
            d.exact(f"{pc}.dp_shard_size")
        for name, default in _HANDLER_DEFAULTS.items():
            leaf = f"{pc}.{name}"
            if d.has(leaf):
                if d.get(leaf) == default:
                    d.exact(leaf)
                else:
                    d.approx(f"recipec's launch writes accelerate's default {name.split('.')[-1]} ({default})", leaf)
        for leaf in d.keys_under(f"{pc}.sp_handler"):
            if leaf.endswith(".sp_attn_implementation"):
                if d.get(leaf) in (None, d.value("model.attention", "sdpa")):
                    d.exact(leaf)
                else:
                    d.approx("recipec passes the recipe's model.attention to DeepSpeed's sequence parallelism", leaf)
        for leaf in d.keys_under(pc):
            if leaf not in d.ledger and d.get(leaf) is None:
                d.exact(leaf)  # unset: accelerate's default
    elif d.has(pc):
        d.exact(pc)
    if d.has(tp_old):
        v = int(num(d.get(tp_old)) or 0)
        if v > 1 and m.tp_size is None:
            m.tp_size = Dim(v, (tp_old,))
        elif v <= 1:
            d.exact(tp_old)
        else:
            d.drop(tp_old, "ignored-by-tool", "parallelism_config's tp_size wins.")
    if not m.asked() and m.shard is None:
        return
    def rebatch(dp: int, note: str) -> None:
        batch(d, dp, rename, defaults, ranks=note)

    place(d, num_processes, m, rebatch)
