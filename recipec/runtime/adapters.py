"""Parameter-efficient fine-tuning (PEFT) for recipec-generated training scripts.

The compiler hands the training script one plain dict per recipe, the
*adapter spec*, e.g.::

    {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.05,
     "target_modules": ["q_proj", "v_proj"], "modules_to_save": None,
     "bias": "none", "rslora": False, "dora": False, "init": "default",
     "loraplus_lr_ratio": None}

``method`` is one of :data:`METHODS`; every other key is optional, and an
absent key or a None value means peft's own default. :data:`RECIPE_KEYS`
maps each method's recipe keys to the fields of its peft config class
(checked against peft 0.21). Keys that do not belong to the method raise
ValueError unless their value is None.

Typical use from a training script::

    from recipec_runtime import adapters          # (this module)

    model = adapters.apply(model, spec, total_steps=max_steps)
    trainable, total = adapters.trainable_parameters(model)
    optimizer = adapters.make_optimizer(model, spec, lr=lr, betas=betas, eps=eps,
                                        weight_decay=weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    ...
    # after optimizer.step() and BEFORE optimizer.zero_grad() (AdaLoRA reads the gradients),
    # once per optimizer step, ``step`` counting optimizer steps done (1 after the first):
    adapters.after_optimizer_step(model, spec, step)
    ...
    adapters.save(accelerator.unwrap_model(model), output_dir / "adapter",
                  merged_directory=output_dir / "model",
                  is_main_process=accelerator.is_main_process)

and from the ``recipec check`` preflight, on a model built under
``torch.device("meta")``::

    problems = adapters.check_targets(model, spec)
    problems += [p for p in [adapters.check_quantization(quantize)] if p]
    if not problems:    # apply() raises on missing names too
        model = adapters.apply(model, spec, total_steps=max_steps)
        trainable, total = adapters.trainable_parameters(model)

Meta device: :func:`module_names`, :func:`check_targets` and
:func:`trainable_parameters` work on any model, and :func:`apply` works on a
model built under ``torch.device("meta")`` for every method and option except
the LoRA initialisations computed from the base weights, ``init`` "pissa",
"pissa_niter_<n>", "olora" and "mica" (apply raises ValueError there). Their
trainable parameter count is that of the same spec with ``init = "default"``,
except "mica", which freezes the B matrices. The counts on a meta model equal
those on the real one (the tests check every method); AdaLoRA's ``ranknum``
constants, which peft 0.21 turns trainable when it moves them to the meta
device, are frozen again here.

Quantized base models (4-bit / 8-bit bitsandbytes) are prepared with peft's
``prepare_model_for_kbit_training`` by :func:`apply`; gradient checkpointing
is left as the model has it. :func:`check_quantization` says whether the
machine can load such a model at all.

This module imports only the standard library at import time; torch, peft
and transformers are imported inside the functions that need them. It never
imports recipec.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import tempfile
from typing import Any

METHODS = (
    "lora",
    "loha",
    "lokr",
    "ia3",
    "oft",
    "boft",
    "vera",
    "adalora",
    "miss",
    "ln_tuning",
    "prefix_tuning",
    "prompt_tuning",
)

# recipe key -> field of the method's peft config class (peft 0.21). None: a
# recipe key that is not a config field (used elsewhere in this module).
_TARGETS = {"target_modules": "target_modules", "modules_to_save": "modules_to_save"}
RECIPE_KEYS: dict[str, dict[str, str | None]] = {
    "lora": {
        "r": "r",
        "alpha": "lora_alpha",
        "dropout": "lora_dropout",
        **_TARGETS,
        "bias": "bias",
        "rslora": "use_rslora",
        "dora": "use_dora",
        "init": "init_lora_weights",
        "loraplus_lr_ratio": None,  # make_optimizer
    },
    "loha": {
        "r": "r",
        "alpha": "alpha",
        "rank_dropout": "rank_dropout",
        "module_dropout": "module_dropout",
        **_TARGETS,
    },
    "lokr": {
        "r": "r",
        "alpha": "alpha",
        "rank_dropout": "rank_dropout",
        "module_dropout": "module_dropout",
        "decompose_both": "decompose_both",
        "decompose_factor": "decompose_factor",
        **_TARGETS,
    },
    "ia3": {
        "target_modules": "target_modules",
        "feedforward_modules": "feedforward_modules",
        "modules_to_save": "modules_to_save",
    },
    "oft": {
        "r": "r",
        "oft_block_size": "oft_block_size",
        "module_dropout": "module_dropout",
        "coft": "coft",
        "eps": "eps",
        "block_share": "block_share",
        **_TARGETS,
    },
    "boft": {
        "boft_block_size": "boft_block_size",
        "boft_block_num": "boft_block_num",
        "boft_n_butterfly_factor": "boft_n_butterfly_factor",
        "boft_dropout": "boft_dropout",
        **_TARGETS,
    },
    "vera": {"r": "r", "dropout": "vera_dropout", "d_initial": "d_initial", **_TARGETS},
    "adalora": {
        "init_r": "init_r",
        "target_r": "target_r",
        "tinit": "tinit",
        "tfinal": "tfinal",
        "deltaT": "deltaT",
        "beta1": "beta1",
        "beta2": "beta2",
        "orth_reg_weight": "orth_reg_weight",
        "total_step": "total_step",
        # AdaLoraConfig is a LoraConfig: these LoRA fields apply too.
        "alpha": "lora_alpha",
        "dropout": "lora_dropout",
        **_TARGETS,
    },
    "miss": {"r": "r", "dropout": "miss_dropout", "init_weights": "init_weights", **_TARGETS},
    "ln_tuning": dict(_TARGETS),
    "prefix_tuning": {
        "num_virtual_tokens": "num_virtual_tokens",
        "prefix_projection": "prefix_projection",
        "encoder_hidden_size": "encoder_hidden_size",
    },
    "prompt_tuning": {
        "num_virtual_tokens": "num_virtual_tokens",
        "init": "prompt_tuning_init",
        "init_text": "prompt_tuning_init_text",
        "tokenizer": "tokenizer_name_or_path",
    },
}

_CONFIG_CLASSES = {
    "lora": "LoraConfig",
    "loha": "LoHaConfig",
    "lokr": "LoKrConfig",
    "ia3": "IA3Config",
    "oft": "OFTConfig",
    "boft": "BOFTConfig",
    "vera": "VeraConfig",
    "adalora": "AdaLoraConfig",
    "miss": "MissConfig",
    "ln_tuning": "LNTuningConfig",
    "prefix_tuning": "PrefixTuningConfig",
    "prompt_tuning": "PromptTuningConfig",
}

_PROMPT_LEARNING = ("prefix_tuning", "prompt_tuning")

# LoRA initialisations that need a data pass or an extra config recipec does not provide.
_LORA_INIT_UNSUPPORTED = ("eva", "corda", "loftq", "lora_ga")
# LoRA initialisations that change the base weights: the saved adapter is converted back to a
# plain LoRA adapter of the original base model (see save()).
_LORA_INIT_MUTATING = ("pissa", "olora")

# LoRA initialisations computed from the base weights: they cannot run on a meta-device model.
_LORA_INIT_FROM_WEIGHTS = ("pissa", "olora", "mica")

_PROMPT_INIT = {"random": "RANDOM", "text": "TEXT", "sample_vocab": "SAMPLE_VOCAB"}

# Attribute holding the initial adapter state of a PiSSA/OLoRA model (see apply() and save()).
_INITIAL_ADAPTER = "_recipec_initial_adapter_state"


def _meta_unsupported(spec: dict) -> str | None:
    """Why apply() cannot run this spec on a meta model, or None."""
    init = spec.get("init")
    if spec.get("method") == "lora" and isinstance(init, str) and init.lower().startswith(_LORA_INIT_FROM_WEIGHTS):
        return f"lora init '{init}' decomposes the base weights, which a meta tensor does not hold"
    return None


# --------------------------------------------------------------------------- config


def _method(spec: dict) -> str:
    if not isinstance(spec, dict):
        raise TypeError(f"adapter spec must be a dict, got {type(spec).__name__}")
    method = spec.get("method")
    if method not in METHODS:
        raise ValueError(f"unknown adapter method {method!r}; expected one of {', '.join(METHODS)}")
    return method


def _config_kwargs(spec: dict, total_steps: int | None) -> dict[str, Any]:
    """The keyword arguments of the peft config class for ``spec`` (no task_type)."""
    method = _method(spec)
    keys = RECIPE_KEYS[method]
    unknown = sorted(k for k, v in spec.items() if k != "method" and k not in keys and v is not None)
    if unknown:
        raise ValueError(
            f"adapter method '{method}' has no key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"its keys are {', '.join(keys)}"
        )
    kwargs: dict[str, Any] = {}
    for key, field in keys.items():
        value = spec.get(key)
        if value is None or field is None:
            continue
        if isinstance(value, tuple):
            value = list(value)
        kwargs[field] = value

    if method == "lora":
        init = kwargs.get("init_lora_weights")
        if init == "default":
            kwargs["init_lora_weights"] = True
        elif isinstance(init, str) and init.lower() in _LORA_INIT_UNSUPPORTED:
            raise ValueError(
                f"lora init '{init}' needs a data-driven initialisation pass that recipec does not run; "
                "use 'default', 'gaussian', 'pissa', 'pissa_niter_<n>', 'olora' or 'orthogonal'"
            )
        ratio = spec.get("loraplus_lr_ratio")
        if ratio is not None and not ratio > 0:
            raise ValueError(f"loraplus_lr_ratio must be positive, got {ratio!r}")
    elif method == "oft":
        # OFT takes either r (blocks per layer) or oft_block_size, never both; peft's
        # default is oft_block_size=32, so a recipe that sets only r turns the block size off.
        if "r" in kwargs and "oft_block_size" not in kwargs:
            kwargs["oft_block_size"] = 0
    elif method == "boft":
        # Likewise boft_block_size (default 4) and boft_block_num.
        if "boft_block_num" in kwargs and "boft_block_size" not in kwargs:
            kwargs["boft_block_size"] = 0
    elif method == "adalora":
        if "total_step" not in kwargs:
            if total_steps is None:
                raise ValueError("adalora needs total_step: pass total_steps (the run's max_steps)")
            kwargs["total_step"] = int(total_steps)
    elif method in _PROMPT_LEARNING:
        if kwargs.get("num_virtual_tokens") is None:
            raise ValueError(f"{method} needs num_virtual_tokens")
        if method == "prompt_tuning" and "prompt_tuning_init" in kwargs:
            init = kwargs["prompt_tuning_init"]
            if init not in _PROMPT_INIT:
                raise ValueError(
                    f"prompt_tuning init must be one of {', '.join(map(repr, _PROMPT_INIT))}, got {init!r}"
                )
            if init == "text" and ("prompt_tuning_init_text" not in kwargs or "tokenizer_name_or_path" not in kwargs):
                raise ValueError(
                    "prompt_tuning init 'text' needs init_text and tokenizer (a tokenizer name or directory)"
                )
    return kwargs


def peft_config(spec: dict, *, total_steps: int | None = None, task_type: str = "CAUSAL_LM"):
    """The peft config for an adapter spec.

    Args:
        spec: The adapter spec (see the module docstring and :data:`RECIPE_KEYS`).
        total_steps: The run's optimizer steps (max_steps); used for AdaLoRA's
            ``total_step`` when the spec does not set it.
        task_type: peft's task type: ``CAUSAL_LM``, or ``SEQ_CLS`` for a reward model
            (peft then trains its score head whole, as a module to save).

    Raises:
        ValueError: For an unknown method, a key the method does not have, a
            missing required value, or a value peft rejects.
    """
    import peft

    kwargs = _config_kwargs(spec, total_steps)
    method = spec["method"]
    if method == "prompt_tuning" and "prompt_tuning_init" in kwargs:
        kwargs["prompt_tuning_init"] = peft.PromptTuningInit[_PROMPT_INIT[kwargs["prompt_tuning_init"]]]
    cls = getattr(peft, _CONFIG_CLASSES[method])
    return cls(task_type=peft.TaskType[task_type], **kwargs)


# --------------------------------------------------------------------------- targets


def _unwrap(model):
    """Strip DDP / DataParallel and torch.compile wrappers."""
    while True:
        if type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
            model = model.module
            continue
        inner = model.__dict__.get("_modules", {}).get("_orig_mod")
        if inner is not None:
            model = inner
            continue
        return model


def module_names(model) -> list[str]:
    """Names of every module of ``model`` (``named_modules``), the root excluded."""
    return [name for name, _ in model.named_modules() if name]


def _last(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _is_norm(module) -> bool:
    return "norm" in type(module).__name__.lower()


def _layer_kinds(model) -> tuple[list[str], list[str], list[str], set[str]]:
    """(linear layer suffixes, embedding suffixes, norm suffixes, names of adaptable layers)."""
    import torch

    nn = torch.nn
    linear, embedding, norm, adaptable = set(), set(), set(), set()
    for name, module in model.named_modules():
        if not name:
            continue
        if isinstance(module, nn.Embedding):
            embedding.add(_last(name))
            adaptable.add(name)
        elif isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            linear.add(_last(name))
            adaptable.add(name)
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)):
            adaptable.add(name)
        elif "Linear" in type(module).__name__:  # quantized linear layers that are no nn.Linear (GPTQ, HQQ, ...)
            adaptable.add(name)
        if _is_norm(module):
            norm.add(_last(name))
    return sorted(linear), sorted(embedding), sorted(norm), adaptable


def _matches(target: str, names: list[str]) -> list[str]:
    """Module names peft matches with a list entry: the exact name or the suffix '.<target>'."""
    suffix = "." + target
    return [n for n in names if n == target or n.endswith(suffix)]


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(_last(word), candidates, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _default_targets(method: str, model) -> list[str] | None:
    """peft's default target modules of ``method`` for the model's type, or None when it has none."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils import PeftType

    tuner = PEFT_TYPE_TO_TUNER_MAPPING[PeftType[method.upper()]]
    mapping = getattr(tuner, "target_module_mapping", None) or {}
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = mapping.get(model_type)
    return list(targets) if targets else None


def check_targets(model, spec: dict) -> list[str]:
    """Problems with the module names of ``spec`` on ``model``, as sentences; [] when fine.

    Checks every ``target_modules`` entry (peft matches a list entry with a
    module's full name or its suffix ``.<entry>``; a string other than
    "all-linear" is a regular expression matched against full names),
    whether the matched modules are layers the method can adapt, the
    ``modules_to_save`` entries (peft matches them by plain suffix), and for
    ia3 that ``feedforward_modules`` is a subset of ``target_modules``. With
    no ``target_modules``, peft's default targets for the model type must
    exist. A name that matches nothing comes with the closest valid layer
    name (linear and embedding layers; norm layers for ln_tuning) and the
    list of them. Works on a meta-device model.
    """
    return [sentence for _, sentence in _target_problems(model, spec)]


def _target_problems(model, spec: dict) -> list[tuple[bool, str]]:
    """check_targets' problems as (certain, sentence); certain problems are errors for apply().

    The one uncertain problem is a target that matches only modules of a
    kind this module does not know as adaptable: peft may still dispatch
    it (quantized or custom layers), so apply() leaves it to peft.
    """
    method = _method(spec)
    if method in _PROMPT_LEARNING:
        return []
    model = _unwrap(model)
    model_name = type(model).__name__
    names = module_names(model)
    linear, embedding, norm, adaptable = _layer_kinds(model)
    if method == "ln_tuning":
        candidates = norm
        listing = f"(norm layers: {', '.join(norm) or 'none'})"
    else:
        candidates = sorted(set(linear) | set(embedding))
        listing = f"(linear layers: {', '.join(linear) or 'none'}"
        listing += f"; embedding layers: {', '.join(embedding)})" if embedding else ")"

    problems: list[tuple[bool, str]] = []
    targets = spec.get("target_modules")
    if isinstance(targets, tuple):
        targets = list(targets)
    if targets is None:
        if _default_targets(method, model) is None:
            model_type = getattr(getattr(model, "config", None), "model_type", None)
            problems.append((True, (
                f"{method} has no default target modules for model type {model_type!r} ({model_name}); "
                f"set target_modules {listing}"
            )))
    elif isinstance(targets, str):
        if targets != "all-linear":
            try:
                hits = [n for n in names if re.fullmatch(targets, n)]
            except re.error as err:
                problems.append((True, f"target_modules pattern {targets!r} is not a valid regular expression: {err}"))
            else:
                if not hits:
                    sentence = f"target_modules pattern {targets!r} matches no module of {model_name} {listing}"
                    problems.append((True, sentence))
    else:
        for target in targets:
            hits = _matches(target, names)
            if not hits:
                problems.append((True, (
                    f"target module '{target}' matches no module of {model_name}{_did_you_mean(target, candidates)} "
                    f"{listing}"
                )))
            elif method != "ln_tuning" and not any(h in adaptable for h in hits):
                kinds = sorted({type(model.get_submodule(h)).__name__ for h in hits})
                problems.append((False, (
                    f"target module '{target}' matches only {', '.join(kinds)} modules of {model_name}, "
                    f"which {method} cannot adapt {listing}"
                )))

    feedforward = spec.get("feedforward_modules") if method == "ia3" else None
    if isinstance(feedforward, (list, tuple)):  # a string is a regular expression: left to peft
        if isinstance(targets, list):
            for f in feedforward:
                if f not in targets:
                    problems.append((True, (
                        f"ia3 feedforward module '{f}' is not in target_modules ({', '.join(targets)}); "
                        "feedforward_modules must be a subset of target_modules"
                    )))
        else:
            for f in feedforward:
                if not _matches(f, names):
                    problems.append((True, (
                        f"ia3 feedforward module '{f}' matches no module of {model_name}"
                        f"{_did_you_mean(f, candidates)} {listing}"
                    )))

    all_last = sorted({_last(n) for n in names})
    for entry in spec.get("modules_to_save") or []:
        if not any(n.endswith(entry) for n in names):
            problems.append((True, (
                f"modules_to_save entry '{entry}' matches no module of {model_name}{_did_you_mean(entry, all_last)}"
            )))
    return problems


# --------------------------------------------------------------------------- apply


def apply(model, spec: dict, *, total_steps: int | None = None, task_type: str = "CAUSAL_LM"):
    """Wrap ``model`` in the adapter of ``spec`` (``peft.get_peft_model``) and return the PeftModel.

    Only the adapter's parameters (and ``modules_to_save``) stay trainable.
    The target names are checked first (:func:`check_targets`): a name that
    matches no module is a ValueError here, where peft would skip it as long
    as another name matches.
    A model loaded in 4-bit or 8-bit is first prepared with peft's
    ``prepare_model_for_kbit_training`` (gradient checkpointing left as it is).
    For a LoRA spec with ``init`` "pissa"/"olora" (which rewrite the base
    weights), the initial adapter weights are kept on the returned model so
    that :func:`save` can write an adapter of the original base model.

    Raises:
        ValueError: For a bad spec (see :func:`peft_config`), a target or
            ``modules_to_save`` name that matches no module, or a spec that
            cannot be applied to a meta-device model (see the module docstring).
    """
    import peft

    config = peft_config(spec, total_steps=total_steps, task_type=task_type)
    errors = [sentence for certain, sentence in _target_problems(model, spec) if certain]
    if errors:
        raise ValueError(" ".join(errors))
    on_meta = any(p.is_meta for p in model.parameters())
    if on_meta:
        why = _meta_unsupported(spec)
        if why:
            raise ValueError(f"cannot apply this adapter to a meta-device model: {why}")
    model = _prepared_if_quantized(model)
    peft_model = peft.get_peft_model(model, config)
    if on_meta and spec["method"] == "adalora":
        # peft moves the ranknum constants to the base layer's device by re-assigning them to their
        # ParameterDict, which wraps the moved tensor in a new, trainable Parameter.
        for name, param in peft_model.named_parameters():
            if ".ranknum." in name:
                param.requires_grad_(False)
    init = spec.get("init") if spec["method"] == "lora" else None
    if isinstance(init, str) and init.lower().startswith(_LORA_INIT_MUTATING) and not on_meta:
        state = peft.get_peft_model_state_dict(peft_model)
        initial = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        object.__setattr__(peft_model, _INITIAL_ADAPTER, initial)
    return peft_model


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, as peft's ``get_nb_trainable_parameters`` counts them.

    Works on any module, a meta-device one included. bitsandbytes 4-bit
    parameters count twice their packed element count times their storage
    size, and DeepSpeed ZeRO-3 placeholders their ``ds_numel``, as in peft.
    """
    trainable = total = 0
    for _, param in _unwrap(model).named_parameters():
        n = param.numel()
        if n == 0 and hasattr(param, "ds_numel"):
            n = param.ds_numel
        if param.__class__.__name__ == "Params4bit":
            if hasattr(param, "element_size"):
                nbytes = param.element_size()
            elif not hasattr(param, "quant_storage"):
                nbytes = 1
            else:
                nbytes = param.quant_storage.itemsize
            n = n * 2 * nbytes
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


# --------------------------------------------------------------------------- a saved adapter

PEFT_TYPES = {
    "lora": "LORA",
    "loha": "LOHA",
    "lokr": "LOKR",
    "ia3": "IA3",
    "oft": "OFT",
    "boft": "BOFT",
    "vera": "VERA",
    "adalora": "ADALORA",
    "miss": "MISS",
    "ln_tuning": "LN_TUNING",
    "prefix_tuning": "PREFIX_TUNING",
    "prompt_tuning": "PROMPT_TUNING",
}
"""recipec's method -> the ``peft_type`` a saved adapter_config.json holds."""

NOT_COMPARED = ("init", "loraplus_lr_ratio", "tokenizer", "init_text", "total_step")
"""Recipe keys a saved adapter does not pin: how a new adapter starts (a loaded one starts from its
saved weights), the optimizer's LoRA+ ratio, and AdaLoRA's budget length."""


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, (list, tuple, set)) and isinstance(theirs, (list, tuple, set)):
        return sorted(map(str, ours)) == sorted(map(str, theirs))
    if isinstance(ours, bool) or isinstance(theirs, bool):
        return ours is theirs or ours == theirs and type(ours) is type(theirs)
    if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)):
        return float(ours) == float(theirs)
    return ours == theirs


def saved_values(method: str, saved: dict) -> dict[str, Any]:
    """The recipe's keys of ``method`` as a saved adapter config (adapter_config.json's dict) sets them.

    Keys the config does not hold, and those in :data:`NOT_COMPARED`, are left out; a set of
    target modules comes back as a sorted list.
    """
    values = {}
    for key, field in RECIPE_KEYS[method].items():
        if field is None or key in NOT_COMPARED or field not in saved:
            continue
        value = saved[field]
        if isinstance(value, (list, tuple, set)):
            value = sorted(value)
        values[key] = value
    return values


def saved_config_problems(spec: dict, saved: dict, *, task_type: str = "CAUSAL_LM") -> list[tuple[str, str]]:
    """(recipe key, sentence) for each way ``spec`` disagrees with a saved adapter's config.

    ``saved`` is the adapter's adapter_config.json as a dict. The method must be the adapter's
    (``peft_type``), and so must the task (a causal LM's adapter, or a reward model's with its
    score head). Each other key of ``spec`` must equal the saved field it maps to, except
    those in :data:`NOT_COMPARED`; a "all-linear" ``target_modules`` against a saved list of
    names is left to :func:`load`, which expands it on the model. Uses no library.
    """
    method = _method(spec)
    kind = saved.get("peft_type")
    if kind != PEFT_TYPES[method]:
        theirs = next((m for m, t in PEFT_TYPES.items() if t == kind), kind)
        return [("method", f"the adapter is {theirs!r}, not {method!r}")]
    problems = []
    saved_task = saved.get("task_type")
    if saved_task is not None and saved_task != task_type:
        what = {"CAUSAL_LM": "a causal language model", "SEQ_CLS": "a reward model (sequence classification)"}
        problems.append(("method", f"the adapter was trained on {what.get(saved_task, saved_task)}, and this run trains {what.get(task_type, task_type)}"))
    values = saved_values(method, saved)
    for key, value in spec.items():
        if key == "method" or key in NOT_COMPARED or value is None or RECIPE_KEYS[method].get(key) is None:
            continue
        if key == "target_modules" and value == "all-linear" and isinstance(values.get(key), list):
            continue
        if key not in values:
            if value not in (False, 0, [], "none"):
                problems.append((key, f"the adapter's config has no {RECIPE_KEYS[method][key]}, and the recipe sets {value!r}"))
        elif not _same(value, values[key]):
            problems.append((key, f"the recipe sets {value!r}, and the adapter was trained with {values[key]!r}"))
    return problems


def load(model, directory, spec: dict, *, task_type: str = "CAUSAL_LM", revision: str | None = None):
    """Wrap ``model`` in the saved adapter of ``directory`` (a local directory or a hub id), trainable.

    The adapter goes on as it was saved (``PeftModel.from_pretrained(..., is_trainable=True)``):
    its own config, its trained weights and its ``modules_to_save``. ``spec`` is checked
    against that config first (:func:`saved_config_problems`; an "all-linear" target is
    expanded on ``model`` as peft expands it). A quantized model is prepared as in
    :func:`apply`.

    Raises:
        ValueError: the spec disagrees with the saved config (one sentence per key, each
            naming ``peft.<key>``).
    """
    import peft

    method = _method(spec)
    hub = {} if revision is None else {"revision": revision}
    config = peft.PeftConfig.from_pretrained(os.fspath(directory), **hub)
    saved = config.to_dict()
    problems = saved_config_problems(spec, saved, task_type=task_type)
    if spec.get("target_modules") == "all-linear" and isinstance(saved.get("target_modules"), (list, set, tuple)):
        from peft.tuners.tuners_utils import _maybe_include_all_linear_layers, check_target_module_exists

        every = _maybe_include_all_linear_layers(peft_config({"method": method, "target_modules": "all-linear"}, total_steps=1), model)
        listed = peft_config({"method": method, "target_modules": list(saved["target_modules"])}, total_steps=1)
        names = [name for name, _ in model.named_modules()]
        ours = {n for n in names if check_target_module_exists(every, n)}
        theirs = {n for n in names if check_target_module_exists(listed, n)}
        if ours != theirs:
            short = sorted({n.rsplit(".", 1)[-1] for n in ours})
            problems.append(("target_modules", f"the recipe sets 'all-linear' ({short} on this model), and the adapter was trained on {sorted(saved['target_modules'])}"))
    if problems:
        raise ValueError(" ".join(f"peft.{key}: {sentence}." for key, sentence in problems))
    return peft.PeftModel.from_pretrained(_prepared_if_quantized(model), os.fspath(directory), is_trainable=True, **hub)


def _prepared_if_quantized(model):
    """A model loaded in 4 or 8 bits, prepared with peft's ``prepare_model_for_kbit_training``
    (gradient checkpointing left as it is); any other model as it is."""
    if not (getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)):
        return model
    import peft

    # is_gradient_checkpointing is a deprecated alias of it in transformers 5, removed in v6
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    return peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(checkpointing))


# --------------------------------------------------------------------------- training


def make_optimizer(model, spec: dict, *, lr, betas, eps, weight_decay, implementation=None, decay="matrices", groups=()):
    """AdamW over the trainable parameters of ``model``.

    Weight decay applies to trainable parameters with two or more dimensions;
    one-dimensional ones (biases, norm weights, DoRA magnitudes, IA3 vectors)
    get none. With ``loraplus_lr_ratio`` (lora only) the groups come from
    peft's ``create_loraplus_optimizer``: the LoRA B matrices train at
    ``lr * loraplus_lr_ratio``, LoRA embedding layers at peft's
    ``loraplus_lr_embedding`` default (1e-6), everything else at ``lr``;
    one-dimensional parameters are moved to groups without weight decay.
    ``implementation`` is AdamW's ``foreach``/``fused`` keywords (optim.implementation).
    Without LoRA+, ``decay`` and ``groups`` (optim.decay, ``[[optim.groups]]``) shape the
    groups as ``optimizers.param_groups`` does for the other optimizers.
    """
    import torch

    implementation = implementation or {}
    method = _method(spec)
    ratio = spec.get("loraplus_lr_ratio")
    if ratio is not None and method != "lora":
        raise ValueError(f"loraplus_lr_ratio applies to lora only, not {method}")
    model = _unwrap(model)
    if ratio is not None:
        from peft.optimizers import create_loraplus_optimizer

        optimizer = create_loraplus_optimizer(
            model,
            torch.optim.AdamW,
            lr=lr,
            loraplus_lr_ratio=ratio,
            loraplus_weight_decay=weight_decay,
            betas=betas,
            eps=eps,
            **implementation,
        )
        extra = []
        for group in optimizer.param_groups:
            one_d = [p for p in group["params"] if p.ndim < 2]
            if one_d and group["weight_decay"] != 0.0:
                group["params"] = [p for p in group["params"] if p.ndim >= 2]
                extra.append({"params": one_d, "lr": group["lr"], "weight_decay": 0.0})
        for group in extra:
            optimizer.add_param_group(group)
        return optimizer

    from .optimizers import param_groups, with_lr

    groups = with_lr(param_groups(model, weight_decay, decay, groups), lr)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **implementation)


def after_optimizer_step(model, spec: dict, step: int) -> None:
    """Per-optimizer-step adapter work: AdaLoRA's rank budget; nothing for the other methods.

    Call it after ``optimizer.step()`` and before ``optimizer.zero_grad()``
    (AdaLoRA scores ranks from the gradients), once per optimizer step, with
    ``step`` the optimizer steps done (1 after the first), up to the
    ``total_step`` the adapter was built with. A DDP or compiled wrapper is
    looked through.
    """
    if _method(spec) != "adalora":
        return
    model = _unwrap(model)
    model.base_model.update_and_allocate(step)


# --------------------------------------------------------------------------- saving


def _write_initial_adapter(model, directory: str) -> None:
    """Write the initial PiSSA/OLoRA adapter kept by apply() as an adapter directory."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    model.peft_config["default"].save_pretrained(directory)
    state = {k: v.contiguous() for k, v in getattr(model, _INITIAL_ADAPTER).items()}
    save_file(state, os.path.join(directory, "adapter_model.safetensors"), metadata={"format": "pt"})


def saved_rank_factor(model) -> int:
    """How many times the adapter's trainable weights :func:`save` writes: 2 for a PiSSA/OLoRA
    adapter (converted to a LoRA adapter of the original base model, of twice the rank), else 1."""
    return 2 if getattr(_unwrap(model), _INITIAL_ADAPTER, None) is not None else 1


def save(model, directory, *, merged_directory=None, is_main_process=True, save_function=None, state_dict=None) -> None:
    """Save the adapter, and optionally the merged full model.

    The adapter goes to ``directory`` with ``model.save_pretrained`` and
    loads with ``PeftModel.from_pretrained(base_model, directory)``. A
    PiSSA/OLoRA adapter is converted to a plain LoRA adapter of the original
    (unmodified) base model, of twice the rank (peft's
    ``path_initial_model_for_weight_conversion``).

    With ``merged_directory``, a copy of the model is merged
    (``merge_and_unload``) and saved with ``save_pretrained`` as a full
    transformers model; the live model keeps its adapter and training state.
    The copy needs as much memory as the model. Prefix and prompt tuning do
    not merge: ValueError, before anything is written.

    Args:
        model: The PeftModel (DDP / compile wrappers are looked through).
        directory: The adapter directory.
        merged_directory: Where to save the merged model, or None.
        is_main_process: Only the main process writes files (and merges).
        save_function: Accepted for accelerate-style callers and not used:
            peft 0.21's and transformers 5's ``save_pretrained`` write the
            safetensors files themselves and take no save function.
        state_dict: The full model state dict to take the adapter weights
            from (e.g. ``accelerator.get_state_dict(model)`` under sharded
            training); None reads them from ``model``.
    """
    del save_function  # see the docstring
    model = _unwrap(model)
    config = model.peft_config[model.active_adapter]
    if merged_directory is not None and config.is_prompt_learning:
        raise ValueError(
            f"{str(config.peft_type.value).lower()} adds virtual tokens instead of changing weights, so it cannot be "
            "merged into the base model; save the adapter only (merged_directory=None)"
        )
    directory = os.fspath(directory)
    kwargs = {} if state_dict is None else {"state_dict": state_dict}
    if getattr(model, _INITIAL_ADAPTER, None) is not None and is_main_process:
        with tempfile.TemporaryDirectory() as tmp:
            initial = os.path.join(tmp, "initial")
            _write_initial_adapter(model, initial)
            model.save_pretrained(
                directory, is_main_process=is_main_process, path_initial_model_for_weight_conversion=initial, **kwargs
            )
    else:
        model.save_pretrained(directory, is_main_process=is_main_process, **kwargs)

    if merged_directory is not None and is_main_process:
        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(os.fspath(merged_directory), is_main_process=True)
        del merged


# --------------------------------------------------------------------------- quantization


def check_quantization(quantize: str | None) -> str | None:
    """Whether this machine can load a ``quantize`` ("4bit" / "8bit") model: an error sentence, or None.

    bitsandbytes quantization needs a CUDA device and the bitsandbytes
    package. None for ``quantize`` None.
    """
    if quantize is None:
        return None
    if quantize not in ("4bit", "8bit"):
        return f"unknown quantization {quantize!r}; expected '4bit' or '8bit'"
    try:
        import torch
    except ImportError:
        return f"{quantize} quantization needs torch, which is not installed"
    if not torch.cuda.is_available():
        return f"{quantize} quantization (bitsandbytes) needs a CUDA GPU, and torch sees none on this machine"
    try:
        import bitsandbytes  # noqa: F401
    except Exception as err:  # ImportError, or a broken CUDA setup raising at import
        return f"{quantize} quantization needs the bitsandbytes package, which cannot be imported ({err})"
    return None


def with_embeddings(model, spec: dict) -> dict:
    """``spec`` with the model's embedding and output layers in ``modules_to_save``.

    New tokens (chat markers) start as fresh rows of the embedding and output matrices:
    under an adapter those rows would never train, so the two layers train in full and
    are saved with the adapter.

    Raises:
        ValueError: the method has no ``modules_to_save``.
    """
    if "modules_to_save" not in RECIPE_KEYS[spec["method"]]:
        raise ValueError(f"peft method {spec['method']!r} cannot train the resized embeddings (no modules_to_save)")
    layers = {id(model.get_input_embeddings()): None}
    output = model.get_output_embeddings()
    if output is not None:
        layers[id(output)] = None
    names = [name.rsplit(".", 1)[-1] for name, module in model.named_modules() if id(module) in layers]
    saved = list(dict.fromkeys([*(spec.get("modules_to_save") or []), *names]))
    return {**spec, "modules_to_save": saved}
