"""`recipec import --from llm-foundry`: an LLM Foundry training YAML (`scripts/train/train.py`).

The keys are those of `TrainConfig` (llmfoundry/utils/config_utils.py) and the keyword
arguments its builders take: the model classes (`hf_causal_lm`, `mpt_causal_lm`), the
`text` and `finetuning` dataloaders, Composer's schedulers and the optimizers LLM Foundry
registers. OmegaConf interpolations (`${variables.max_seq_len}`, `${max_seq_len}`) are
resolved first; a `variables` key is mapped through the keys that reference it.

Composer's conventions mapped here:

- time strings: `4800ba` (batches, one optimizer step each), `2ep`, `2000000tok`,
  `0.01dur` (a fraction of `max_duration`); a bare integer is epochs;
- `cosine_with_warmup` is a linear warmup from 0 over `t_warmup` and a cosine from the peak
  to `alpha_f` over the rest of `t_max` (default `1dur`): recipec's linear warmup from 0 and
  cosine decay to `min_lr_ratio`, the same multiplier at every step;
- `decoupled_adamw` (and `decoupled_lionw`) decay the weights by `lr / initial_lr *
  weight_decay` per step, torch's AdamW by `lr * weight_decay`: the same decay is torch's
  weight decay `weight_decay / lr` (lr the peak), on every parameter.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..diagnostics import Diagnostic
from .core import Draft, ImportError_, Legacy, OldValue, Removed, epochs_cadence, num

VERSION = "llm-foundry 0.21.0"
"""The release whose defaults are applied (TrainConfig of llmfoundry/utils/config_utils.py,
with Composer 0.31's schedulers and DecoupledAdamW)."""

_TOP = (
    # TrainConfig's fields
    "model", "tokenizer", "optimizer", "scheduler", "train_loader", "device_train_batch_size",
    "device_eval_batch_size", "max_duration", "max_seq_len", "seed", "precision", "code_paths",
    "max_split_size_mb", "expandable_segments", "cuda_load_lazy", "dist_timeout", "fsdp_config",
    "tp_config", "accumulate_train_batch_on_tokens", "eval_interval", "eval_loader", "eval_loaders",
    "icl_tasks", "icl_tasks_str", "eval_gauntlet", "eval_gauntlet_str", "icl_subset_num_batches",
    "icl_seq_len", "loggers", "progress_bar", "log_to_console", "python_log_level",
    "console_log_interval", "log_config", "callbacks", "algorithms", "save_folder",
    "save_latest_filename", "save_overwrite", "save_weights_only", "save_filename", "save_interval",
    "save_num_checkpoints_to_keep", "load_path", "load_weights_only", "load_strict_model_weights",
    "load_ignore_keys", "save_ignore_keys", "only_hf_checkpoint", "only_composer_checkpoint",
    "train_subset_num_batches", "device_train_microbatch_size", "global_train_batch_size",
    "spin_dataloaders", "eval_subset_num_batches", "eval_first", "compile_config", "metadata",
    "flatten_metadata", "run_name", "autoresume", "profiler", "variables", "n_gpus",
    "device_train_grad_accum",
)  # fmt: skip

_HF_MODEL = (
    # ComposerHFCausalLM / BaseHuggingFaceModel.__init__ (llmfoundry/models/hf/)
    "name", "pretrained_model_name_or_path", "pretrained", "pretrained_lora_id_or_path",
    "trust_remote_code", "use_auth_token", "use_flash_attention_2", "load_in_8bit", "init_device",
    "use_train_metrics", "allow_embedding_resizing", "additional_train_metrics",
    "additional_eval_metrics", "should_save_peft_only", "attn_implementation", "use_logits",
    "shift_labels",
)  # fmt: skip

_MPT_MODEL = (
    # MPTConfig.__init__ (llmfoundry/models/mpt/configuration_mpt.py)
    "d_model", "n_heads", "n_layers", "expansion_ratio", "max_seq_len", "vocab_size", "resid_pdrop",
    "emb_pdrop", "learned_pos_emb", "logit_scale", "no_bias", "embedding_fraction", "norm_type",
    "norm_eps", "use_cache", "fc_type", "tie_word_embeddings", "use_pad_tok_in_ffn",
    "final_logit_softcapping", "loss_fn", "z_loss",
)  # fmt: skip

_LOADER = ("name", "drop_last", "num_workers", "pin_memory", "prefetch_factor", "persistent_workers", "timeout", "label")

_STREAMING = (
    # StreamingTextDataset / streaming.StreamingDataset
    "local", "remote", "split", "download_retry", "download_timeout", "validate_hash", "keep_zip",
    "epoch_size", "predownload", "cache_limit", "partition_algo", "num_canonical_nodes",
    "batch_size", "shuffle", "shuffle_algo", "shuffle_seed", "shuffle_block_size",
    "sampling_method", "sampling_granularity", "batching_method", "allow_unsafe_types",
    "replication", "stream_name", "max_seq_len", "token_encoding_type",
)  # fmt: skip

MIXTURE_KEYS = ("proportion", "repeat", "choose", "samples")
"""A stream's share of the mixture (streaming.Stream; `choose` is the older name of `samples`): at most one each."""

_FINETUNING = (
    # DatasetConstructor.build_from_hf, the dataloader's _ALLOWED_DATASET_KEYS, hf_name/hf_kwargs
    "hf_name", "hf_kwargs", "split", "safe_load", "max_seq_len", "preprocessing_fn",
    "target_prompts", "target_responses", "decoder_only_format", "shuffle", "packing_ratio",
    "allow_pad_trimming", "seq_parallel_replication", "auto_packing_replication",
    "max_leftover_bins_to_keep", "pad_to_longest", "eos_token_id",
)  # fmt: skip

_FSDP = (
    # composer.utils.parallelism.FSDPConfig
    "activation_checkpointing", "activation_checkpointing_reentrant", "activation_cpu_offload",
    "auto_wrap", "te_checkpoint_wrapper", "te_shard_fp8_weight", "backward_prefetch",
    "backward_prefetch_limit", "cpu_offload", "data_parallel_shard_degree",
    "data_parallel_replicate_degree", "forward_prefetch", "forward_prefetch_limit",
    "ignored_modules", "keep_low_precision_grads", "limit_all_gathers", "load_monolith_rank0_only",
    "load_planner", "mixed_precision", "process_group", "save_planner", "sharded_ckpt_prefix_dir",
    "sharding_strategy", "state_dict_type", "sync_module_states", "use_orig_params", "verbose",
    "device_mesh", "load_state_dict_type", "use_fsdp2",
)  # fmt: skip


_OPTIMIZER = (
    "name", "lr", "betas", "eps", "weight_decay", "amsgrad", "outlier_threshold", "timeout",
    "lr_penalty", "min_scale",
)  # fmt: skip

_SCHEDULER = (
    "name", "t_warmup", "t_max", "alpha_f", "alpha_i", "alpha", "scale_warmup", "t_scale",
    "t_cooldown", "alpha_f_decay", "alpha_f_cooldown",
)  # fmt: skip


def _known() -> tuple[str, ...]:
    out = [*_TOP]
    out += ["variables.*", "code_paths", "metadata.*", "loggers.*", "callbacks.*", "algorithms.*"]
    out += ["profiler.*", "compile_config.*", "tp_config.*", "icl_tasks.*", "icl_tasks[*].*", "eval_gauntlet.*"]
    out += ["load_ignore_keys", "save_ignore_keys"]
    # free-form tables may be empty (`config_overrides: {}`, `lr_monitor: {}`)
    out += ["model.config_overrides", "model.peft_config", "model.attn_config", "model.ffn_config", "model.init_config"]
    out += ["tokenizer.kwargs", "fsdp_config", "algorithms", "callbacks", "loggers", "metadata", "optimizer", "scheduler"]
    out += [f"model.{k}" for k in (*_HF_MODEL, *_MPT_MODEL)]
    out += ["model.config_overrides.*", "model.peft_config.*", "model.attn_config.*", "model.ffn_config.*"]
    out += ["model.init_config.*", "model.block_overrides.*", "model.fc_type.*", "model.additional_train_metrics"]
    out += ["tokenizer.name", "tokenizer.kwargs.*"]
    for loader in ("train_loader", "eval_loader", "eval_loader[*]"):
        out += [f"{loader}.{k}" for k in _LOADER]
        out += [f"{loader}.dataset.{k}" for k in (*_STREAMING, *_FINETUNING)]
        out += [f"{loader}.dataset.hf_kwargs.*", f"{loader}.dataset.streams.*", f"{loader}.dataset.stream_config.*"]
    # the optimizers LLM Foundry registers (decoupled_adamw, decoupled_lionw, adalr_lion,
    # clip_lion, no_op) and build_optimizer's own keys; Composer's schedulers and inv_sqrt
    out += [f"optimizer.{k}" for k in _OPTIMIZER] + ["optimizer.param_groups[*].*", "optimizer.disable_grad"]
    out += [f"scheduler.{k}" for k in _SCHEDULER]
    out += [f"fsdp_config.{k}" for k in _FSDP] + ["fsdp_config.auto_wrap", "fsdp_config.mixed_precision.*"]
    return tuple(out)


KNOWN = _known()

MARKERS = (
    "max_duration",
    "global_train_batch_size",
    "device_train_microbatch_size",
    "device_eval_batch_size",
    "train_loader",
    "fsdp_config",
    "algorithms",
    "eval_first",
)
"""Composer/LLM Foundry keys: no other importer's tool names a key like these."""

LEGACY: dict[str, Legacy] = {
    # top-level variables of the example yamls before TrainConfig (llmfoundry/utils/config_utils.py):
    # 0.9.0 warned and moved them under `variables`, 0.10.0 refuses them ("Unused parameter ...
    # Please place any variables under the `variables` key")
    name: Removed("llm-foundry 0.10.0", f"`variables.{name}` (referred to as `${{variables.{name}}}`)")
    for name in ("global_seed", "data_local", "data_remote", "tokenizer_name", "model_name", "icl_max_seq_len")
}
"""Keys of llm-foundry's older releases and what 0.21.0 does with them."""

LEGACY_VALUES: dict[str, tuple[OldValue, ...]] = {
    # MPT's triton attention, deprecated in 0.6.0 and removed in 0.7.0 (commit 7f0fdae6): 0.21.0's
    # MPTConfig raises "Unknown attn_impl=triton"
    "model.attn_config.attn_impl": (OldValue("triton", "llm-foundry 0.7.0", by="`attn_impl: flash` (or `torch`)"),),
    # names no registry of 0.21.0 holds: construct_from_registry refuses them
    "optimizer.name": (OldValue("decoupled_lionw_8b", "llm-foundry 0.6.0"),),  # commit e0756e10
    "model.name": (OldValue("hf_prefix_lm", "llm-foundry 0.7.0"),),  # commit 2d65fc20
    **{
        key: (OldValue("text_denoising", "llm-foundry 0.7.0"),)  # commit 32e14a67
        for key in ("train_loader.name", "eval_loader.name", "eval_loader[*].name")
    },
}
"""Values of llm-foundry's older releases that 0.21.0 refuses, with the first release without
them."""


# -- interpolations ----------------------------------------------------------------------

_REF = re.compile(r"\$\{([^}]*)\}")


class _Resolver:
    """OmegaConf's `${a.b}` references to keys of the same file (absolute paths only)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.refs: dict[str, set[str]] = {}
        """Leaf key -> the leaf keys its value references, transitively."""
        self.missing: dict[str, str] = {}
        """Leaf key -> a reference of its value to a key the file does not have."""

    def _lookup(self, path: str) -> tuple[bool, Any]:
        node: Any = self.data
        for part in path.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return False, None
        return True, node

    def resolve(self, key: str, value: Any, seen: tuple[str, ...] = ()) -> Any:
        if not isinstance(value, str) or "${" not in value:
            return value
        refs = self.refs.setdefault(key, set())

        def one(path: str) -> tuple[bool, Any]:
            path = path.strip()
            if ":" in path or path.startswith(".") or path in seen:  # a resolver (oc.env:X), relative, or a cycle
                return False, None
            ok, target = self._lookup(path)
            if not ok:
                self.missing.setdefault(key, path)
            if not ok or isinstance(target, (dict, list)):
                return False, None
            refs.add(path)
            inner = self.resolve(path, target, (*seen, path))
            refs.update(self.refs.get(path, ()))
            return True, inner

        whole = _REF.fullmatch(value.strip())
        if whole:
            ok, out = one(whole.group(1))
            return out if ok else value

        def sub(m: re.Match[str]) -> str:
            ok, out = one(m.group(1))
            return str(out) if ok else m.group(0)

        return _REF.sub(sub, value)


# -- Composer's time strings ---------------------------------------------------------------

_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ba|ep|tok|dur|sp|sec)\s*$")


def _time(value: Any) -> tuple[float, str] | None:
    """(`4800`, "ba") from "4800ba"; a bare integer is epochs, as Composer reads it."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value), "ep"
    m = _TIME.match(str(value))
    if not m:
        return None
    return float(m.group(1)), m.group(2)


def _int(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


_PRECISION = {"amp_bf16": "bf16", "amp_fp16": "fp16", "fp32": "no"}
_SHARDING = {"FULL_SHARD": "full_shard", "SHARD_GRAD_OP": "shard_grad_op", "HYBRID_SHARD": "hybrid_shard", "NO_SHARD": "no_shard"}
_LOG_CALLBACKS = {
    "speed_monitor", "lr_monitor", "memory_monitor", "runtime_estimator", "optimizer_monitor",
    "hf_checkpointer", "memory_snapshot", "oom_observer", "mono_checkpoint_saver", "system_metrics_monitor",
    "generate_callback", "activation_monitor", "eval_output_logging", "log_mbmoe_tok_per_expert",
    "curriculum_learning_dataset_monitor", "env_logging", "kill_loss_spike", "run_timeout",
}  # fmt: skip


class _Conv:
    def __init__(self, draft: Draft, options: Any) -> None:
        self.d = draft
        self.o = options
        self.res = _Resolver(draft.config.data)
        self.v: dict[str, Any] = {k: self.res.resolve(k, val) for k, val in draft.values.items()}
        if self.res.missing:  # OmegaConf's InterpolationKeyError when llm-foundry resolves the config
            raise ImportError_(
                [
                    Diagnostic(
                        "error",
                        f"`{key}` refers to `${{{path}}}`, which the file does not set: llm-foundry stops on it (InterpolationKeyError)",
                        draft.config.location(key),
                        help=f"set `{path}`, or write the value itself",
                    )
                    for key, path in self.res.missing.items()
                ]
            )
        self.seq_len: int | None = None
        self.peak_lr: float | None = None

    # reading
    def get(self, key: str, default: Any = None) -> Any:
        return self.v.get(key, default)

    def has(self, key: str) -> bool:
        return self.d.has(key)

    def under(self, prefix: str) -> list[str]:
        return self.d.keys_under(prefix)

    # writing
    def set(self, target: str, value: Any, *keys: str, approx: str | None = None, note: str = "") -> None:
        self.d.set(target, value, *keys, approx=approx, note=note)

    def drop(self, key: str, reason: Any, why: str) -> None:
        for leaf in self.under(key) or [key]:
            if leaf in self.d.values and leaf not in self.d.ledger:
                self.d.drop(leaf, reason, why)

    def rest(self, prefix: str, reason: Any, why: str) -> None:
        """Drop every key under `prefix` not handled yet."""
        for leaf in self.under(prefix):
            if leaf not in self.d.ledger:
                self.d.drop(leaf, reason, why)

    # ---------------------------------------------------------------------------------------
    def run(self) -> None:
        self.model()
        self.tokenizer()
        self.data()
        self.optimizer()
        self.schedule()
        self.train()
        self.launch()
        self.output()
        self.misc()
        self.variables()

    # -- model ------------------------------------------------------------------------------
    def model(self) -> None:
        name = self.get("model.name")
        if name == "hf_causal_lm":
            self.hf_model()
        elif name == "mpt_causal_lm":
            self.mpt_model()
        elif self.has("model.name"):
            self.drop("model", "missing-feature", f"recipec has no model `{name}` (only hf_causal_lm and mpt_causal_lm import).")
        if self.has("model.peft_config.peft_type") or self.has("model.peft_config.r"):
            self.peft()
        self.rest("model.peft_config", "no-equivalent", "a peft setting recipec does not expose.")
        for key in ("model.init_device", "model.load_in_8bit"):
            self.drop(key, "no-equivalent", "where and how the weights are first created; recipec decides.")
        for key in ("model.use_auth_token",):
            self.drop(key, "not-for-training", "a hub login; recipec reads the hub cache (HF_TOKEN for gated models).")
        for key in ("model.use_train_metrics", "model.additional_train_metrics", "model.additional_eval_metrics"):
            self.drop(key, "not-for-training", "metrics logged beside the loss.")
        self.drop("model.should_save_peft_only", "not-for-training", "what the checkpoint holds; recipec saves the adapter (and `peft.save_merged`).")
        self.rest("model", "no-equivalent", "an llm-foundry model setting recipec has no counterpart for.")

    def _attention(self) -> None:
        impl = self.get("model.attn_implementation")
        if impl in ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention"):
            self.set("model.attention", impl, "model.attn_implementation")
        elif self.get("model.use_flash_attention_2") is True:
            self.set("model.attention", "flash_attention_2", "model.use_flash_attention_2")
        if self.has("model.use_flash_attention_2") and "model.use_flash_attention_2" not in self.d.ledger:
            self.d.exact("model.use_flash_attention_2")  # false: transformers' default kernel, as recipec's sdpa

    def hf_model(self) -> None:
        path = self.get("model.pretrained_model_name_or_path")
        pretrained = self.get("model.pretrained", True)
        self.d.exact("model.name")
        if pretrained:
            self.set("model.path", path, "model.pretrained_model_name_or_path")
            if self.has("model.pretrained"):
                self.d.exact("model.pretrained")
            self._pretrained_overrides(str(path))
        else:
            from ..model_types import config_keys

            guess = _model_type_in_name(str(path))
            if guess is None:
                self.drop("model.pretrained_model_name_or_path", "missing-feature", f"the architecture of {path} is not in its name; set model.init by hand.")
                self.set("model.init", "llama", approx="a placeholder: the file's architecture could not be told from its name")
                self.d.note(f"model.init = \"llama\" is a placeholder: set the architecture of {path} and its sizes in [model.config].")
            else:
                self.set(
                    "model.init",
                    guess,
                    "model.pretrained_model_name_or_path",
                    "model.pretrained",
                    approx=f"a new `{guess}` model (told from the name {path}); the sizes its hub config has and "
                    "config_overrides does not set are recipec's [model.config] defaults, not the hub config's",
                )
                allowed = config_keys(guess)
                for key in self.under("model.config_overrides"):
                    sub = key[len("model.config_overrides.") :]
                    if sub in allowed:
                        self.set(f"model.config.{sub}", self.get(key), key)
                    elif sub == "vocab_size":
                        self.d.approx("recipec sizes the embedding to the tokenizer's vocabulary", key)
                    else:
                        self.d.drop(key, "no-equivalent", f"`{sub}` is not a setting of transformers' {guess} config that recipec passes.")
        self.drop("model.pretrained_lora_id_or_path", "missing-feature", "recipec starts a new adapter; it cannot load a trained one.")
        trc = self.get("model.trust_remote_code")
        if trc is None:
            self.d.default("model.trust_remote_code", True, "model.trust_remote_code", "hf_causal_lm trusts the hub model's code (trust_remote_code = true)")
        else:
            self.set("model.trust_remote_code", bool(trc), "model.trust_remote_code")
        self._attention()
        if self.has("model.allow_embedding_resizing"):
            self.d.approx("recipec grows the embeddings only for `tokenizer.special_tokens`", "model.allow_embedding_resizing")

    def _pretrained_overrides(self, path: str) -> None:
        """config_overrides over a pretrained hf_causal_lm -> [model.config]: both set each key on the loaded
        config before the weights load, a table's keys one by one. A key the model type's config lacks (the
        type told from the hub name, when it can be) fails in llm-foundry as in recipec, and one that sizes
        the weights fails as the checkpoint loads: neither is imported."""
        from ..model_types import canonical, config_keys
        from ..runtime.model_config import SHAPE_KEYS

        prefix = "model.config_overrides"
        guess = _model_type_in_name(path)
        tops: dict[str, list[str]] = {}
        for key in self.under(prefix):
            if self.d.values.get(key) == {}:
                self.d.exact(key)  # no overrides
            else:
                tops.setdefault(key[len(prefix) + 1 :].split(".")[0], []).append(key)
        for top, leaves in tops.items():
            stored = canonical(guess, top) if guess else top
            if stored in SHAPE_KEYS or top in SHAPE_KEYS:
                for leaf in leaves:
                    self.d.drop(leaf, "no-equivalent", f"`{top}` sizes the weights: the checkpoint's own value is the one that loads.")
            elif guess is not None and top not in config_keys(guess):
                for leaf in leaves:
                    self.d.drop(leaf, "no-equivalent", f"`{top}` is not a key of transformers' {guess} config ({path}); hf_causal_lm raises on it too.")
                self.d.warn(f"config_overrides.{top} is not a key of transformers' {guess} config: llm-foundry's hf_causal_lm refuses it", *leaves)
            else:
                value = self.get(f"{prefix}.{top}") if leaves == [f"{prefix}.{top}"] else _nested({k[len(prefix) + len(top) + 2 :]: self.get(k) for k in leaves})
                self.set(f"model.config.{top}", value, *leaves)

    def mpt_model(self) -> None:
        why = (
            "built as transformers' MptForCausalLM (model.init = \"mpt\"), not llm-foundry's MPT: positions by ALiBi "
            "always (llm-foundry's default: learned position embeddings, no ALiBi), and transformers' normal(0.02) "
            "initialisation instead of llm-foundry's kaiming_normal"
        )
        self.set("model.init", "mpt", "model.name", approx=why)
        for key, target in (("d_model", "d_model"), ("n_heads", "n_heads"), ("n_layers", "n_layers"), ("expansion_ratio", "expansion_ratio"), ("max_seq_len", "max_seq_len")):
            if self.has(f"model.{key}"):
                self.set(f"model.config.{target}", _int(num(self.get(f"model.{key}"))), f"model.{key}")
        defaults = {"d_model": 2048, "n_heads": 16, "n_layers": 24, "expansion_ratio": 4, "max_seq_len": 2048}
        for key, val in defaults.items():
            if not self.has(f"model.{key}"):
                self.d.default(f"model.config.{key}", val, f"model.{key}", f"MPTConfig's {key} = {val}")
        if self.has("model.no_bias"):
            self.set("model.config.no_bias", bool(self.get("model.no_bias")), "model.no_bias")
        else:
            self.d.default("model.config.no_bias", False, "model.no_bias", "MPT layers have biases (no_bias = false; transformers' MPT default is true)")
        if self.has("model.tie_word_embeddings"):
            self.set("model.config.tie_word_embeddings", bool(self.get("model.tie_word_embeddings")), "model.tie_word_embeddings")
        else:
            self.d.default("model.config.tie_word_embeddings", True, "model.tie_word_embeddings", "MPT ties the input and output embeddings")
        for key, target in (("resid_pdrop", "resid_pdrop"), ("emb_pdrop", "emb_pdrop"), ("norm_eps", "layer_norm_epsilon")):
            if self.has(f"model.{key}"):
                self.set(f"model.config.{target}", num(self.get(f"model.{key}")), f"model.{key}")
        if self.has("model.vocab_size"):
            self.d.approx("recipec sizes the embedding to the tokenizer's vocabulary, not padded to vocab_size", "model.vocab_size")
        impl = self.get("model.attn_config.attn_impl")
        if impl is not None:
            self.d.drop("model.attn_config.attn_impl", "no-equivalent", f"llm-foundry's own {impl} kernel; transformers' MPT runs its eager attention.")
        self.rest("model.attn_config", "missing-feature", "an option of llm-foundry's MPT attention that transformers' MPT lacks.")
        self.rest("model.ffn_config", "missing-feature", "llm-foundry's MPT FFN options (MoE, te) are not in transformers' MPT.")
        self.rest("model.init_config", "missing-feature", "llm-foundry's MPT initialisation scheme; recipec uses transformers'.")
        self._attention()

    def peft(self) -> None:
        p = "model.peft_config."
        ptype = str(self.get(p + "peft_type", "LORA")).upper()
        if ptype != "LORA":
            self.drop("model.peft_config", "missing-feature", f"only LORA peft configs import, not {ptype}.")
            return
        self.set("peft.method", "lora", *(k for k in (p + "peft_type",) if self.has(k)))
        self.d.exact(p + "task_type")
        for key, target, default, meaning in (
            ("r", "peft.r", 8, "LoraConfig's r = 8"),
            ("lora_alpha", "peft.alpha", 8, "LoraConfig's lora_alpha = 8"),
            ("lora_dropout", "peft.dropout", 0.0, "LoraConfig's lora_dropout = 0.0"),
        ):
            if self.has(p + key):
                self.set(target, num(self.get(p + key)), p + key)
            else:
                self.d.default(target, default, p + key, meaning)
        tm = self.get(p + "target_modules")
        if tm is not None:
            self.set("peft.target_modules", tm if isinstance(tm, str) else list(tm), p + "target_modules")
        for key, target in (("use_rslora", "peft.rslora"), ("use_dora", "peft.dora"), ("bias", "peft.bias"), ("modules_to_save", "peft.modules_to_save")):
            if self.has(p + key):
                self.set(target, self.get(p + key), p + key)

    # -- tokenizer --------------------------------------------------------------------------
    def tokenizer(self) -> None:
        if self.has("tokenizer.name"):
            self.set("tokenizer.path", self.get("tokenizer.name"), "tokenizer.name")
        if self.has("tokenizer.kwargs.trust_remote_code"):
            if self.get("tokenizer.kwargs.trust_remote_code") and self.d.value("model.trust_remote_code") is not True:
                self.set("model.trust_remote_code", True, "tokenizer.kwargs.trust_remote_code")
            else:
                self.d.exact("tokenizer.kwargs.trust_remote_code")

    # -- data -------------------------------------------------------------------------------
    def data(self) -> None:
        tl = "train_loader"
        kind = self.get(f"{tl}.name")
        self.d.exact(f"{tl}.name")
        seq = self.get(f"{tl}.dataset.max_seq_len")
        if seq is not None:
            self.seq_len = int(num(seq))
            self.set("data.seq_len", self.seq_len, f"{tl}.dataset.max_seq_len")
        elif kind == "finetuning":
            self.seq_len = 2048
            self.d.default("data.seq_len", 2048, f"{tl}.dataset.max_seq_len", "the finetuning dataset's max_seq_len = 2048")
        elif self.get("max_seq_len") is not None:
            seq = self.get("max_seq_len")
            self.seq_len = int(num(seq))
            self.set("data.seq_len", self.seq_len, "max_seq_len", approx="the loader's max_seq_len is left out; the top-level one is taken")
        if self.has("max_seq_len") and "max_seq_len" not in self.d.ledger:
            if self.seq_len is not None and int(num(self.get("max_seq_len"))) == self.seq_len:
                self.d.exact("max_seq_len")
            else:
                self.d.drop("max_seq_len", "ignored-by-tool", "training sequences are cut at train_loader.dataset.max_seq_len.")
                self.d.warn(f"max_seq_len ({self.get('max_seq_len')}) differs from train_loader.dataset.max_seq_len ({seq}); training uses the loader's.", "max_seq_len")
        mml = self.get("tokenizer.kwargs.model_max_length")
        if mml is not None:
            if self.seq_len is not None and int(num(mml)) >= self.seq_len:
                self.d.exact("tokenizer.kwargs.model_max_length")
            else:
                self.d.approx("recipec cuts sequences at data.seq_len, not at the tokenizer's model_max_length", "tokenizer.kwargs.model_max_length")
        self.rest("tokenizer.kwargs", "no-equivalent", "a keyword of the tokenizer's from_pretrained that recipec does not pass.")

        src = 0
        if kind == "finetuning":
            self.finetuning(tl, src, train=True)
        elif kind == "text":
            self.text(tl, src, train=True)
        src = len(self.d.sources)
        ev = "eval_loader"
        if self.has(ev) and isinstance(self.d.get(ev), dict):
            ekind = self.get(f"{ev}.name")
            self.d.exact(f"{ev}.name")
            if ekind == "finetuning":
                self.finetuning(ev, src, train=False)
            elif ekind == "text":
                self.text(ev, src, train=False)
            evals = len(self.d.sources) > src
            self.set(
                "data.eval_fraction",
                0.0,
                note="llm-foundry trains on the whole train split"
                + (" and evaluates on eval_loader" if evals else "; eval_loader's MDS data is not imported"),
            )
        elif self.has(ev):
            self.drop(ev, "missing-feature", "several eval loaders: import one by hand as a `split = \"eval\"` source.")
        else:
            self.set("data.eval_fraction", 0.0, note="llm-foundry trains on the whole train split; the file has no eval_loader")
        for loader in ("train_loader", "eval_loader"):
            self.loader_common(loader, train=loader == "train_loader")

    def loader_common(self, loader: str, train: bool) -> None:
        if not self.has(loader):
            return
        if train:
            if self.has(f"{loader}.num_workers"):
                self.set("data.num_workers", int(self.get(f"{loader}.num_workers")), f"{loader}.num_workers")
            if self.has(f"{loader}.pin_memory"):
                self.set("data.pin_memory", bool(self.get(f"{loader}.pin_memory")), f"{loader}.pin_memory")
            if self.get(f"{loader}.drop_last") is True:
                self.d.exact(f"{loader}.drop_last")  # recipec's loader drops the last partial batch too
            elif self.has(f"{loader}.drop_last"):
                self.d.approx("recipec drops the last partial batch of an epoch; llm-foundry trains on it", f"{loader}.drop_last")
            workers = int(self.get(f"{loader}.num_workers") or 0)
            for key in ("prefetch_factor", "persistent_workers"):
                value = self.get(f"{loader}.{key}")
                if value in (None, False) and self.has(f"{loader}.{key}"):
                    self.d.exact(f"{loader}.{key}")  # torch's default, as recipec's
                elif self.has(f"{loader}.{key}") and workers > 0:
                    self.set(f"data.{key}", value, f"{loader}.{key}")
                elif self.has(f"{loader}.{key}"):
                    self.drop(f"{loader}.{key}", "ignored-by-tool", "a setting of DataLoader workers, and num_workers is 0.")
        else:
            for key in ("num_workers", "pin_memory", "drop_last", "prefetch_factor", "persistent_workers"):
                same = key != "drop_last" and self.get(f"{loader}.{key}") == self.get(f"train_loader.{key}")
                if self.has(f"{loader}.{key}") and same:
                    self.d.exact(f"{loader}.{key}")  # recipec's evaluation uses the training loader's settings
                else:
                    self.drop(f"{loader}.{key}", "no-equivalent", "recipec's evaluation uses the training loader's settings.")
        self.drop(f"{loader}.timeout", "no-equivalent", "a DataLoader performance setting recipec does not expose.")
        self.drop(f"{loader}.drop_last", "no-equivalent", "recipec decides how a last partial batch is handled.")

    def finetuning(self, loader: str, i: int, train: bool) -> None:
        ds = f"{loader}.dataset."
        name = self.get(ds + "hf_name")
        split = self.get(ds + "split")
        s = f"data.sources[{i}]"
        builders = ("json", "jsonl", "csv", "parquet", "text")
        columns = self.mds_columns(self.mds_path(loader)) if name is None else {}  # streaming shards: what their index says they hold
        if name in builders:
            files = self.get(ds + "hf_kwargs.data_files")
            ddir = self.get(ds + "hf_kwargs.data_dir")
            ext = {"json": "jsonl", "jsonl": "jsonl"}.get(str(name), str(name))
            if files is not None:
                self.set(f"{s}.path", files if isinstance(files, str) else list(files), ds + "hf_kwargs.data_files", ds + "hf_name")
                if split is not None:
                    self.d.exact(ds + "split")
            elif ddir is not None:
                glob = f"{str(ddir).rstrip('/')}/{split or 'train'}*.{ext}"
                self.set(
                    f"{s}.path",
                    glob,
                    ds + "hf_kwargs.data_dir",
                    ds + "hf_name",
                    ds + "split",
                    approx=f"the files of split `{split}` in {ddir}, taken as those named {split}*.{ext} "
                    "(datasets also finds a split in file names such as data-{split}.jsonl, or in a {split}/ folder)",
                )
        elif name is not None:
            self.set(f"{s}.hub.repo", name, ds + "hf_name")
            if split is not None:
                self.set(f"{s}.hub.split", split, ds + "split")
            for key in self.under(ds + "hf_kwargs"):
                sub = key[len(ds + "hf_kwargs.") :]
                if sub in ("name",):
                    self.set(f"{s}.hub.subset", self.get(key), key)
                elif sub in ("revision",):
                    self.set(f"{s}.hub.revision", self.get(key), key)
                elif sub in ("data_files",):
                    self.set(f"{s}.hub.data_files", self.get(key), key)
        elif "turns" in columns and "messages" not in columns:
            self.drop(
                loader + ".dataset",
                "missing-feature",
                "the MDS shards hold tokenized turns (`turns`, written by convert_finetuning_dataset with a tokenizer); "
                "recipec reads examples as text and tokenizes them itself: convert the data without tokenizing "
                "(prompt/response or messages columns) and point a `format = \"mds\"` source at it.",
            )
            if train:
                self.placeholder(s, "train_loader's MDS shards hold tokenized turns, which recipec does not read")
            return
        elif self.mds_source(loader, s):
            self.streaming_rest(loader)
        else:
            self.drop(loader + ".dataset", "missing-feature", self.no_local_copy(loader))
            if train:
                self.placeholder(s, f"train_loader reads MDS shards with no local copy ({self.get(ds + 'remote') or 'streams'})")
            return
        self.rest(ds + "hf_kwargs", "no-equivalent", "a keyword of datasets.load_dataset recipec does not pass.")
        fn = self.get(ds + "preprocessing_fn")
        if fn is not None:
            self.d.drop(ds + "preprocessing_fn", "missing-feature", f"recipec cannot run the Python function {fn}; the records must already be prompt/response.")
        tp = str(self.get(ds + "target_prompts", "none")).lower()
        given = [k for k in (ds + "target_prompts", ds + "target_responses") if self.has(k)]
        if "messages" in columns:
            self.chat_records(ds, s, tp, given)
        else:
            self.prompt_response_records(ds, s, tp, given)
        self.loader_rest(loader, ds, s, train)

    def padding(self, loader: str, ds: str, train: bool) -> None:
        """How wide the collator pads a batch (finetuning/collator.py): max_seq_len, unless pad_to_longest or allow_pad_trimming."""
        keys = [ds + k for k in ("allow_pad_trimming", "pad_to_longest") if self.has(ds + k)]
        if not train:  # recipec's evaluation uses the training loader's collate
            for key in keys:
                if self.get(key) == self.get("train_loader.dataset." + key.rsplit(".", 1)[1], False):
                    self.d.exact(key)
                else:
                    self.drop(key, "no-equivalent", "recipec's evaluation pads as the training loader does.")
            return
        if self.get(ds + "pad_to_longest") is True:
            for key in keys:  # the longest row, which trimming to a multiple of 8 leaves as it is
                self.d.exact(key)
        elif self.get(ds + "allow_pad_trimming") is True:
            self.set(
                "data.pad_to_multiple_of",
                min(8, self.seq_len),
                *keys,
                approx="llm-foundry pads its first batch to max_seq_len and trims every later one to its longest row rounded up to a multiple of 8",
            )
        elif keys:
            self.set("data.pad_to_multiple_of", self.seq_len, *keys, note="llm-foundry pads every batch to max_seq_len")
        else:
            self.d.default("data.pad_to_multiple_of", self.seq_len, ds + "allow_pad_trimming", "every batch padded to max_seq_len (allow_pad_trimming false)")

    def chat_records(self, ds: str, s: str, tp: str, given: list[str]) -> None:
        """Chat samples (`messages`): llm-foundry masks the prompt turns (target_prompts none) and trains the last or every response."""
        self.set(f"{s}.records", "messages", ds + "local", note="the shards' `messages` column: chat samples, rendered with the chat template")
        tr = str(self.get(ds + "target_responses", "last")).lower()
        if tp == "none":
            value = "last_assistant" if tr == "last" else "assistant"
            if given:
                self.set(f"{s}.train_on", value, *given, note=f"loss on the {'last response' if tr == 'last' else 'responses'} only")
            else:
                self.d.default(f"{s}.train_on", value, ds + "target_responses", "loss on the last response only (target_prompts none, target_responses last)")
        elif tp == "all" and tr == "all":
            self.set(f"{s}.train_on", "all", *given, note="loss on every turn")
        else:
            self.set(f"{s}.train_on", "all", *given, approx=f"recipec supervises the responses or every token, not prompts by `{tp}` with `{tr}` responses")

    def prompt_response_records(self, ds: str, s: str, tp: str, given: list[str]) -> None:
        """prompt/response samples as prompt_completion examples, supervised as target_prompts says."""
        why = (
            "records read as prompt/response pairs, rendered with the tokenizer's chat template; llm-foundry "
            "tokenizes the prompt and the response as they are, one after the other"
        )
        self.set(f"{s}.records", "prompt_completion", ds + "hf_name", approx=why)
        self.set(f"{s}.fields", {"completion": "response"}, note="llm-foundry's prompt/response columns")
        # one prompt and one response per record: target_responses "last" and "all" agree
        if not given:
            self.d.default(f"{s}.train_on", "completion", ds + "target_responses", "loss on the response tokens only (target_prompts none, target_responses last)")
        elif tp == "none":
            self.set(f"{s}.train_on", "completion", *given, note="loss on the response only")
        elif tp == "all":
            self.set(f"{s}.train_on", "all", *given, note="loss on the prompt and the response")
        else:
            self.set(f"{s}.train_on", "all", *given, approx=f"recipec supervises the completion or every token, not prompts by `{tp}`")

    def loader_rest(self, loader: str, ds: str, s: str, train: bool) -> None:
        """The split, packing, shuffling and length settings of a finetuning loader."""
        if not train:
            self.set(f"{s}.split", "eval", loader + ".name")
            self.set(f"{s}.name", "eval", note="the eval_loader")
        if self.get(ds + "decoder_only_format", True) is True:
            self.d.exact(ds + "decoder_only_format")
        else:
            self.drop(ds + "decoder_only_format", "missing-feature", "encoder-decoder formats (hf_t5); recipec trains decoder-only models.")
        if train:
            pr = self.get(ds + "packing_ratio")
            if self.has(ds + "packing_ratio") and pr is not None:
                self.set("data.packing", True, ds + "packing_ratio", approx=f"recipec packs whole examples best-fit into seq_len; llm-foundry packs about {pr} examples per sequence")
            elif self.has(ds + "packing_ratio"):
                self.set("data.packing", False, ds + "packing_ratio")
            else:
                self.d.default("data.packing", False, ds + "packing_ratio", "one example per sequence, no packing")
            self.set("data.overflow", "truncate", note="llm-foundry truncates the response and drops an example whose prompt fills max_seq_len")
            if self.has(ds + "shuffle"):
                if self.get(ds + "shuffle"):
                    self.d.exact(ds + "shuffle")
                else:
                    self.d.drop(ds + "shuffle", "missing-feature", "recipec always shuffles the training sequences.")
        else:
            self.drop(ds + "packing_ratio", "no-equivalent", "recipec packs the evaluation examples as it packs the training ones.")
            if self.get(ds + "shuffle") is False:
                self.d.exact(ds + "shuffle")
            if self.has(ds + "max_seq_len"):
                if self.seq_len is not None and int(num(self.get(ds + "max_seq_len"))) == self.seq_len:
                    self.d.exact(ds + "max_seq_len")
        self.padding(loader, ds, train)
        self.drop(ds + "eos_token_id", "no-equivalent", "recipec ends each example with the tokenizer's own end token.")
        self.rest(loader + ".dataset", "no-equivalent", "a finetuning dataset option recipec does not have.")

    def text(self, loader: str, i: int, train: bool) -> None:
        ds = f"{loader}.dataset."
        s = f"data.sources[{i}]"
        if train and isinstance(self.d.get(ds + "streams"), dict) and self.d.get(ds + "streams"):
            self.streams(loader, i)
        elif self.mds_source(loader, s):
            self.mds_records(loader, s)
            if not train:
                self.set(f"{s}.split", "eval", loader + ".name")
                self.set(f"{s}.name", "eval", note="the eval_loader")
            self.streaming_rest(loader)
        else:
            why = self.no_local_copy(loader)
            for key in ("local", "remote", "split", "streams", "shuffle_seed", "shuffle_algo", "epoch_size", "predownload", "cache_limit", "num_canonical_nodes", "keep_zip", "download_retry", "download_timeout", "token_encoding_type"):
                self.drop(ds + key, "missing-feature", why)
            if train:
                self.placeholder(s, f"train_loader reads MDS shards with no local copy ({self.get(ds + 'remote') or 'streams'})")
        if train:
            if self.get(ds + "shuffle") is False:
                self.d.drop(ds + "shuffle", "missing-feature", "recipec always shuffles the training sequences.")
            else:
                self.d.exact(ds + "shuffle")
            self.d.exact(ds + "max_seq_len")
        else:
            if self.get(ds + "shuffle") is False:
                self.d.exact(ds + "shuffle")
            if self.seq_len is not None and self.has(ds + "max_seq_len") and int(num(self.get(ds + "max_seq_len"))) == self.seq_len:
                self.d.exact(ds + "max_seq_len")
        self.rest(loader + ".dataset", "no-equivalent", "a setting of mosaicml-streaming's StreamingDataset recipec does not have.")

    def streams(self, loader: str, i: int) -> None:
        """The training loader's `streams`: each stream's local copy (`local` + its `split`, else the dataset's) an
        MDS source from data.sources[i] on, and its share of the mixture a `weight` (streaming/base/stream.py:
        `proportion` a share of the epoch's samples; `repeat` a multiplier of the stream's own samples; `choose` or
        `samples` a number of samples; none of them: every sample once, recipec's natural shares)."""
        ds = f"{loader}.dataset."
        names = list(self.d.get(ds + "streams"))
        mixing = {k for name in names for k in MIXTURE_KEYS if self.get(f"{ds}streams.{name}.{k}") is not None}
        shares: dict[str, float] = {}
        unsized = []  # streams whose share cannot be computed here
        for name in names:
            st = f"{ds}streams.{name}."
            if "proportion" in mixing:
                if self.get(st + "proportion") is None:
                    unsized.append(f"{name} (no proportion, which streaming needs on every stream)")
                else:
                    shares[name] = float(num(self.get(st + "proportion")))
            elif mixing:
                chosen = next((self.get(st + k) for k in ("choose", "samples") if self.get(st + k) is not None), None)
                samples = self.stream_samples(self.stream_path(loader, name)) if chosen is None else None
                if chosen is not None:
                    shares[name] = float(num(chosen))
                elif samples is None:
                    unsized.append(f"{name} (its local index.json cannot be read here to count its samples)")
                else:
                    shares[name] = samples * float(num(self.get(st + "repeat") if self.get(st + "repeat") is not None else 1))
        why_unsized = (
            "the streams' shares cannot all be computed: " + "; ".join(unsized) + ". Give each data.sources entry a `weight` by hand."
        ) if unsized else ""
        per_sample = (
            "streaming mixes samples, recipec tokens: the same shares when every sample has the same length (shards of "
            "concatenated token ids), approximately otherwise"
        )
        j = i
        for name in names:
            st = f"{ds}streams.{name}."
            s = f"data.sources[{j}]"
            path, remote = self.stream_path(loader, name), self.get(st + "remote")
            if path is None:
                self.drop(st.rstrip("."), "missing-feature", (
                    f"stream {name} has no local copy (remote {remote!r}, no `local`): recipec reads shards from a local "
                    "directory and downloads nothing; download them and add a `format = \"mds\"` source for them."
                ))
                self.d.warn(f"train_loader stream {name} has no local copy ({remote}): it is left out of the mixture", st + "remote")
                continue
            split_key = st + "split" if self.get(st + "split") else ds + "split"
            self.set(f"{s}.path", path, st + "local", split_key, note=f"stream {name}: the directory of its MDS shards' index.json")
            self.set(f"{s}.format", "mds", st + "local", note="mosaicml-streaming's shards")
            self.mds_records(loader, s)
            if remote not in (None, ""):
                self.drop(st + "remote", "missing-feature", f"recipec reads the shards in `local` ({path}) and downloads nothing: copy them there from {remote} first.")
            else:
                self.d.exact(st + "remote")
            keys = [st + k for k in MIXTURE_KEYS if self.get(st + k) is not None]
            if name in shares and not unsized:
                how = {
                    "proportion": f"streaming's proportion {shares[name]:g} of the samples; {per_sample}",
                    "repeat": f"{shares[name]:g} = the stream's samples in its index.json x repeat; {per_sample}",
                }.get(next((k for k in ("proportion", "repeat") if st + k in keys), ""), f"{shares[name]:g} samples chosen; {per_sample}")
                self.set(f"{s}.weight", shares[name], *(keys or [st + "local"]), approx=how)
            else:
                for key in keys:
                    self.d.drop(key, "missing-feature", why_unsized)
            if self.has(st + "validate_hash"):
                self.d.exact(st + "validate_hash")  # recipec checks every hash index.json lists
            self.rest(st.rstrip("."), "no-equivalent", "a setting of how streaming downloads and caches this stream's shards; recipec reads the local copy.")
            j += 1
        if why_unsized:
            self.d.warn(f"train_loader's streams are not weighted: {why_unsized}", ds + "streams")
        if j == i:
            self.placeholder(f"data.sources[{i}]", "train_loader reads MDS streams of which none has a local copy")
        if self.has(ds + "split") and ds + "split" not in self.d.ledger:
            self.d.exact(ds + "split")  # the default split of the streams that name none
        for key in ("local", "remote"):  # Stream.apply_default takes neither: each stream reads its own
            self.drop(ds + key, "ignored-by-tool", "with streams, streaming reads each stream's own local and remote.")
        self.streaming_rest(loader)

    def stream_path(self, loader: str, name: str) -> str | None:
        """A stream's `local` directory joined with its `split` (else the dataset's, as Stream.apply_default does); None without `local`."""
        ds = f"{loader}.dataset."
        local = self.get(f"{ds}streams.{name}.local")
        split = self.get(f"{ds}streams.{name}.split") or self.get(ds + "split")
        if local in (None, ""):
            return None
        return f"{str(local).rstrip('/')}/{split}" if split else str(local)

    @staticmethod
    def stream_samples(path: str | None) -> int | None:
        """The samples a local MDS directory holds (the sum over its index.json's shards); None when it cannot be read."""
        if path is None:
            return None
        try:
            shards = json.loads((Path(path) / "index.json").read_text(encoding="utf-8"))["shards"]
            return sum(int(shard["samples"]) for shard in shards)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def placeholder(self, s: str, why: str) -> None:
        """A training source that cannot be imported: builtin python-docs in its place, so the draft validates, and a warning."""
        self.set(f"{s}.builtin", "python-docs", note="PLACEHOLDER: replace with the directory of the MDS shards")
        self.d.warn(
            f"{why}: the recipe's source is a placeholder (builtin python-docs); download or convert the shards and "
            'point the source\'s path at their directory, with format = "mds".'
        )

    def no_local_copy(self, loader: str) -> str:
        """Why a streaming dataset is not imported: it has no `local` directory to read (only `remote`, or `streams`)."""
        ds = f"{loader}.dataset."
        if self.has(ds + "streams"):
            return "several MDS streams; import each stream's local directory by hand as a `format = \"mds\"` source."
        return (
            f"an MDS dataset with no local copy (remote {self.get(ds + 'remote')!r}, no `local`): recipec reads shards from a "
            "local directory and downloads nothing; download them and point a `format = \"mds\"` source at their directory."
        )

    def mds_path(self, loader: str) -> str | None:
        """A streaming dataset's `local` directory joined with `split`; None with `streams` or no `local`."""
        ds = f"{loader}.dataset."
        local, split = self.get(ds + "local"), self.get(ds + "split")
        if self.has(ds + "streams") or local in (None, ""):
            return None
        return f"{str(local).rstrip('/')}/{split}" if split else str(local)

    def mds_columns(self, path: str | None) -> dict[str, str]:
        """The columns and encodings of local MDS shards; {} when their index.json cannot be read here."""
        if path is None:
            return {}
        try:
            shard = json.loads((Path(path) / "index.json").read_text(encoding="utf-8"))["shards"][0]
            return dict(zip(shard["column_names"], shard["column_encodings"]))
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return {}

    def mds_source(self, loader: str, s: str) -> bool:
        """A streaming dataset's `local` (+ `split`) directory as an MDS source; False when it has none to read."""
        ds = f"{loader}.dataset."
        path, remote = self.mds_path(loader), self.get(ds + "remote")
        if path is None:
            return False
        # StreamingDataset reads `local`/`split`/index.json and the shards it lists (streaming/base/stream.py)
        self.set(f"{s}.path", path, ds + "local", ds + "split", note="the directory of the MDS shards' index.json")
        self.set(f"{s}.format", "mds", ds + "local", note="mosaicml-streaming's shards")
        if remote not in (None, ""):
            self.drop(
                ds + "remote",
                "missing-feature",
                f"recipec reads the shards in `local` ({path}) and downloads nothing: copy them there from {remote} first.",
            )
        else:
            self.d.exact(ds + "remote")  # none: the shards are in `local`, where recipec reads them
        if self.get(ds + "shuffle") is False or (not self.has(ds + "shuffle") and loader == "eval_loader"):
            self.drop(ds + "shuffle_seed", "ignored-by-tool", "streaming does not shuffle this dataset (shuffle is false).")
        elif self.has(ds + "shuffle_seed"):
            why = (
                "streaming shuffles the samples by its shuffle_algo (py1e) seeded with shuffle_seed and the epoch; recipec "
                "shuffles documents and packed sequences with data.seed by its own algorithm: another order"
            )
            if loader == "train_loader":
                self.set("data.seed", int(num(self.get(ds + "shuffle_seed"))), ds + "shuffle_seed", approx=why)
            else:
                self.d.approx(why, ds + "shuffle_seed")
        return True

    def mds_records(self, loader: str, s: str) -> None:
        """Text shards (`text`) are text records; shards of `tokens` (concat_tokens), when the local index says so, token records."""
        ds = f"{loader}.dataset."
        path = Path(str(self.d.value(f"{s}.path")))
        columns = self.mds_columns(str(path))
        if "tokens" in columns and "text" not in columns:
            self.set(f"{s}.records", "tokens", note=f"the shards in {path} hold token ids (`tokens`, {columns['tokens']})")
            self.set(f"{s}.tokenizer", self.get("tokenizer.name"), "tokenizer.name", note="the tokenizer that made the ids")
            if columns["tokens"] == "bytes" and self.has(ds + "token_encoding_type"):
                self.set(f"{s}.token_dtype", str(self.get(ds + "token_encoding_type")), ds + "token_encoding_type", note="the ids of the shards' bytes column")
            elif columns["tokens"] == "bytes":
                self.d.default(f"{s}.token_dtype", "int64", ds + "token_encoding_type", "the shards' bytes column holds int64 ids")
        else:
            self.d.note(
                f"{s}: the MDS shards are read as text (their `text` column); shards of token ids (`tokens`, written with "
                f'concat_tokens) need records = "tokens" and tokenizer = {self.get("tokenizer.name")!r}'
            )
        if self.get(ds + "token_encoding_type") is not None and self.d.value(f"{s}.token_dtype") is None:
            self.drop(ds + "token_encoding_type", "no-equivalent", "the shards hold no bytes column of token ids (an ndarray column carries its dtype).")

    def streaming_rest(self, loader: str) -> None:
        """The download and cache settings of a streaming dataset read from its local copy."""
        ds = f"{loader}.dataset."
        for key in ("predownload", "cache_limit", "keep_zip", "download_retry", "download_timeout"):
            self.drop(ds + key, "no-equivalent", "a setting of how streaming downloads and caches shards; recipec reads the local copy.")
        if self.has(ds + "validate_hash"):
            # streaming checks the one algorithm named, as it downloads; recipec checks every hash index.json lists
            self.d.exact(ds + "validate_hash")

    # -- optimizer --------------------------------------------------------------------------
    def optimizer(self) -> None:
        name = self.get("optimizer.name")
        o = "optimizer."
        if name in ("decoupled_adamw", "adamw"):
            self.set("optim.name", "adamw", o + "name")
            lr = num(self.get(o + "lr", 1e-3))
            defaults = {"betas": [0.9, 0.95] if name == "decoupled_adamw" else [0.9, 0.999], "eps": 1e-8}
        elif name in ("decoupled_lionw",):
            self.set("optim.name", "lion", o + "name")
            lr = num(self.get(o + "lr", 1e-4))
            defaults = {"betas": [0.9, 0.99]}
        else:
            self.drop("optimizer", "missing-feature", f"recipec has no optimizer like `{name}`.")
            return
        self.peak_lr = float(lr)
        if self.has(o + "lr"):
            self.set("optim.lr", lr, o + "lr")
        else:
            self.d.default("optim.lr", lr, o + "lr", f"{name}'s lr = {lr}")
        for key, val in defaults.items():
            if self.has(o + key):
                v = self.get(o + key)
                self.set(f"optim.{key}", [num(x) for x in v] if isinstance(v, list) else num(v), o + key)
            else:
                self.d.default(f"optim.{key}", val, o + key, f"{name}'s {key} = {val}")
        wd_default = {"decoupled_adamw": 1e-5, "adamw": 1e-2, "decoupled_lionw": 0.0}[name]
        wd = num(self.get(o + "weight_decay", wd_default))
        decoupled = name.startswith("decoupled")
        value = float(f"{float(wd) / float(lr):.12g}") if decoupled and wd else float(wd)
        note = f"{name} decays by lr/peak * {wd} per step: torch's weight decay {wd} / {lr}" if decoupled and wd else ""
        if self.has(o + "weight_decay"):
            self.set("optim.weight_decay", value, o + "weight_decay", note=note)
        else:
            self.d.default("optim.weight_decay", value, o + "weight_decay", f"{name}'s weight_decay = {wd_default}" + (f", as torch's {value:g}" if note else ""))
        if value:
            self.set("optim.decay.include", ["*"], note="llm-foundry decays every parameter, biases and norms too")
        self.frozen(o)
        self.groups(o, name, float(lr), float(wd), value)
        if self.get(o + "amsgrad"):
            self.d.drop(o + "amsgrad", "missing-feature", "recipec's AdamW has no AMSGrad.")
        elif self.has(o + "amsgrad"):
            self.d.exact(o + "amsgrad")
        self.rest("optimizer", "no-equivalent", f"an option of {name} recipec does not expose.")

    def frozen(self, o: str) -> None:
        """`optimizer.disable_grad` -> `optim.trainable.exclude`.

        llm-foundry (utils/builders.py `_extract_param_groups`) sets requires_grad=False on
        every parameter whose name `re.search`es one of the regexes; the names are the
        ComposerModel's, `model.` + the transformers model's (`model.model.layers.0…`)."""
        key = o + "disable_grad"
        value = self.get(key)
        if value in (None, "", []):
            if self.has(key):
                self.d.exact(key)
            return
        if self.d.value("peft.method") is not None:
            why = (
                "under peft_config llm-foundry matches the adapter-wrapped model's names (`model.base_model.model.…`) and can "
                "freeze LoRA weights too; recipec's [peft] decides what trains and `optim.trainable` cannot go with it."
            )
            self.drop(key, "no-equivalent", why)
            self.d.warn(f"`{key}` with peft_config is not imported: {why}", key)
            return
        patterns = [value] if isinstance(value, str) else [str(v) for v in value]
        got = self._globs(key, patterns)
        if got is None:
            return
        globs, caveats = got
        if "*" in globs:
            why = "a regex matches `model.`, which every llm-foundry parameter name starts with: it freezes the whole model."
            self.drop(key, "no-equivalent", why)
            self.d.warn(f"`{key}` is not imported: {why}", key)
            return
        if not globs:
            self.d.exact(key)  # no regex can match a name llm-foundry gives: it freezes nothing
            self.d.warn(f"`{key}` matches no parameter name (llm-foundry's start with `model.`): it freezes nothing", key)
            return
        self.set("optim.trainable", {"exclude": globs}, key, approx="; ".join(caveats) or None, note="llm-foundry's regexes (re.search on `model.` + the name) as globs")

    def _globs(self, key: str, patterns: list[str]) -> tuple[list[str], list[str]] | None:
        """The globs of llm-foundry's regexes and what differs; None (the key dropped) when one has no glob."""
        from .regex_globs import NoGlob, regex_globs

        globs: list[str] = []
        caveats: list[str] = []
        if self.get("model.name") == "mpt_causal_lm":
            caveats.append("names of llm-foundry's MPT, matched on transformers' MptForCausalLM (the same names but `transformer.wpe`)")
        for pattern in patterns:
            try:
                found, caveat = regex_globs(pattern, search=True, prefix="model.")
            except NoGlob as err:
                why = f"the regex `{pattern}` has {err}, which no glob matches the same names as; write the globs by hand."
                self.drop(key, "no-equivalent", why)
                self.d.warn(f"`{key}` is not imported: {why}", key)
                return None
            globs += [g for g in found if g not in globs]
            if caveat:
                caveats.append(caveat)
        return globs, caveats

    def groups(self, o: str, name: str, lr: float, wd: float, torch_wd: float) -> None:
        """`optimizer.param_groups` -> `[[optim.groups]]`.

        Each group takes the parameters whose name `re.search`es `param_str_match` and no
        earlier group took (recipec's groups: the first group a parameter matches); its other
        keys override the optimizer's arguments for it. Composer's schedulers scale every
        group's own LR by the same factor, so `lr` is recipec's `lr_scale`; the decoupled
        optimizers decay by `group lr / its initial lr * weight_decay`, torch's weight decay
        `weight_decay / group lr`."""
        key = o + "param_groups"
        value: list[dict[str, Any]] = []
        for leaf in self.under(key):  # the resolved leaves, optimizer.param_groups[i].name
            m = re.fullmatch(re.escape(key) + r"\[(\d+)\]\.([^.\[]+)", leaf)
            if m is None:
                continue
            while len(value) <= int(m[1]):
                value.append({})
            value[int(m[1])][m[2]] = self.get(leaf)
        if not value:
            if self.has(key):
                self.d.exact(key)
            return
        if self.d.value("peft.method") is not None:
            why = "under peft_config llm-foundry matches the adapter-wrapped model's names (`model.base_model.model.…`): write [[optim.groups]] by hand."
            self.drop(key, "no-equivalent", why)
            return
        decoupled = name.startswith("decoupled")
        groups: list[dict[str, Any]] = []
        caveats: list[str] = []
        keys: list[str] = []
        for i, group in enumerate(value):
            g = f"{key}[{i}]."
            if not isinstance(group, dict) or "param_str_match" not in group:
                self.drop(key, "no-equivalent", f"group {i} has no `param_str_match`; llm-foundry refuses it.")
                return
            got = self._globs(key, [str(group["param_str_match"])])
            if got is None:
                return
            globs, found = got
            if "*" in globs:
                self.drop(key, "no-equivalent", f"group {i}'s regex matches `model.`, which starts every name: it takes every parameter.")
                return
            caveats += [c for c in found if c not in caveats]
            group_lr = float(num(group.get("lr", lr)))
            if group_lr <= 0:
                self.drop(key, "no-equivalent", f"group {i} has lr {group_lr}: freeze its parameters with `optim.trainable` instead.")
                return
            raw = float(num(group.get("weight_decay", wd)))
            mine = float(f"{raw / group_lr:.12g}") if decoupled and raw else raw
            entry: dict[str, Any] = {"params": globs}
            if group_lr != lr:
                entry["lr_scale"] = float(f"{group_lr / lr:.12g}")
            if "weight_decay" in group or mine != torch_wd:
                entry["weight_decay"] = mine
            for extra in group:
                if extra not in ("param_str_match", "lr", "weight_decay"):
                    self.drop(g + extra, "missing-feature", f"recipec's [[optim.groups]] set an LR multiplier and weight decay only; the group uses the optimizer's {extra}.")
            keys += [g + k for k in ("param_str_match", "lr", "weight_decay") if k in group]
            if not globs:
                continue  # no name llm-foundry gives matches: the group is empty
            groups.append(entry)
        if not groups:
            self.d.exact(*keys)
            return
        note = "llm-foundry's groups: regexes as globs, lr as a multiplier" + (", weight_decay as torch's (/ the group's lr)" if decoupled else "")
        self.set("optim.groups", groups, *keys, approx="; ".join(caveats) or None, note=note)

    # -- schedule ---------------------------------------------------------------------------
    def schedule(self) -> None:
        s = "scheduler."
        name = self.get(s + "name")
        shapes = {"cosine_with_warmup": "cosine", "linear_decay_with_warmup": "linear", "constant_with_warmup": "constant"}
        if name not in shapes:
            if self.has("scheduler"):
                self.drop("scheduler", "missing-feature", f"Composer's `{name}` has no recipec shape.")
                self.d.warn(
                    f"the scheduler `{name}` cannot be imported: the recipe has recipec's default schedule "
                    "(a 3 % warmup, then a cosine to 10 % of the peak) until [schedule] is set",
                    s + "name",
                )
            else:  # no scheduler: Composer keeps the optimizer's LR
                self.d.default("schedule.warmup", 0, "scheduler", "no scheduler: a constant LR")
                self.d.default("schedule.decay", "constant", "scheduler", "no scheduler: a constant LR")
            return
        self.set("schedule.decay", shapes[name], s + "name")
        self.set("schedule.warmup_shape", "linear", note="Composer's warmup is linear from 0")
        self.set("schedule.warmup_start_ratio", 0.0, note="Composer's warmup starts at lr 0 at the first step")
        total = _time(self.get("max_duration"))
        tw = _time(self.get(s + "t_warmup"))
        if tw is None:
            if self.has(s + "t_warmup"):
                self.drop(s + "t_warmup", "missing-feature", "a warmup recipec cannot read.")
        elif tw[1] == "ba":
            self.set("schedule.warmup", int(tw[0]), s + "t_warmup")
        elif tw[1] == "dur":
            if total and total[1] == "ba":
                self.set("schedule.warmup", int(tw[0] * total[0]), s + "t_warmup", note=f"int({tw[0]:g} * {int(total[0])}) steps, as Composer rounds down")
            else:
                self.set("schedule.warmup", tw[0], s + "t_warmup", approx="recipec rounds the fraction of the run up to whole steps, Composer down")
        elif tw[1] == "ep":
            self.set("schedule.warmup", tw[0] / total[0] if total and total[1] == "ep" else tw[0], s + "t_warmup", approx="epochs of warmup as a fraction of the run")
        else:
            self.drop(s + "t_warmup", "missing-feature", f"a warmup in `{tw[1]}`; recipec counts warmup in steps or a fraction of the run.")
        if name == "constant_with_warmup":
            alpha = num(self.get(s + "alpha", 1.0))
            if self.has(s + "alpha"):
                if float(alpha) == 1.0:
                    self.d.exact(s + "alpha")
                else:
                    self.d.approx("recipec holds the peak after warmup; the peak LR is lr * alpha", s + "alpha")
                    self.set("optim.lr", float(self.peak_lr or 0) * float(alpha), "optimizer.lr", s + "alpha", approx="lr * alpha: Composer warms up to lr * alpha and holds it")
        else:
            if self.has(s + "alpha_f"):
                self.set("schedule.min_lr_ratio", num(self.get(s + "alpha_f")), s + "alpha_f")
            else:
                self.d.default("schedule.min_lr_ratio", 0.0, s + "alpha_f", "decay to 0 (alpha_f = 0.0)")
            if self.has(s + "alpha_i"):
                if float(num(self.get(s + "alpha_i"))) == 1.0:
                    self.d.exact(s + "alpha_i")
                else:
                    self.d.drop(s + "alpha_i", "missing-feature", "recipec's decay starts at the peak LR.")
        tmax = self.get(s + "t_max")
        if tmax is not None:
            if str(tmax).strip() == "1dur":
                self.d.exact(s + "t_max")
            else:
                self.d.approx("recipec decays over the whole run (t_max = 1dur)", s + "t_max")
        self._warmup_past_the_end(s)
        self.drop(s + "scale_warmup", "ignored-by-tool", "only changes warmup under Composer's scale_schedule, which llm-foundry does not use.")
        self.rest("scheduler", "no-equivalent", f"an option of {name} recipec does not have.")

    def _warmup_past_the_end(self, s: str) -> None:
        """A warmup as long as the run or longer: Composer's LR is t / t_warmup at every step
        and never decays. recipec's shorthand refuses it; one linear phase says it exactly."""
        total = _time(self.get("max_duration"))
        warmup = self.d.value("schedule.warmup")
        if not (total and total[1] == "ba" and isinstance(warmup, int) and warmup >= total[0] > 0):
            return
        steps = int(total[0])
        for key in ("decay", "warmup_shape", "warmup_start_ratio", "warmup", "min_lr_ratio"):
            self.d.unset(f"schedule.{key}")
        phase = {"name": "warmup", "shape": "linear", "start": 0.0, "end": steps / warmup, "steps": steps}
        self.set("schedule.phases", [phase], s + "t_warmup", "max_duration", note=f"Composer's warmup t / {warmup}, cut off at step {steps}")
        self.d.warn(
            f"scheduler.t_warmup ({self.get(s + 't_warmup')}) is not shorter than max_duration ({self.get('max_duration')}): "
            f"the LR only warms up, to lr * {steps / warmup:g} at the end, and the decay never starts.",
            s + "t_warmup",
            "max_duration",
        )
        for key in (s + "alpha_f", s + "name"):
            if self.has(key):
                self.d.ledger.pop(key, None)
                self.d.drop(key, "ignored-by-tool", "the run ends inside the warmup, before the decay starts.")

    # -- train ------------------------------------------------------------------------------
    def train(self) -> None:
        md = self.get("max_duration")
        t = _time(md)
        if t is None:
            if self.has("max_duration"):
                self.drop("max_duration", "missing-feature", f"a run length recipec cannot read ({md}).")
        elif t[1] == "ba":
            self.set("train.max_steps", int(t[0]), "max_duration")
        elif t[1] == "ep":
            self.set("train.epochs", _int(t[0]), "max_duration")
        elif t[1] == "tok":
            self.set("train.tokens", int(t[0]), "max_duration", approx="recipec rounds up to whole steps of batch_size * seq_len tokens; Composer counts the tokens of each batch")
        else:
            self.drop("max_duration", "missing-feature", f"a run length in `{t[1]}`.")
        gb = self.get("global_train_batch_size")
        np_ = max(int(getattr(self.o, "num_processes", 1) or 1), 1)
        if gb is not None:
            gb = int(gb)
            self.set("train.batch_size", gb, "global_train_batch_size")
            if gb % np_:
                self.d.warn(f"global_train_batch_size {gb} is not divisible by the {np_} processes: llm-foundry refuses it.", "global_train_batch_size")
        dev = max(gb // np_, 1) if gb else None
        mb = self.get("device_train_microbatch_size")
        if mb == "auto" or (mb is None and not self.has("device_train_microbatch_size")):
            micro = dev or 8
            if mb == "auto":
                self.set("train.micro_batch_size", micro, "device_train_microbatch_size", approx="Composer picks the micro-batch on the fly (halving it on out-of-memory); here the whole per-device batch")
            else:
                self.d.default("train.micro_batch_size", micro, "device_train_microbatch_size", "auto: Composer finds the largest micro-batch that fits")
        elif mb is not None:
            micro = int(num(mb))
            if dev is not None and micro > dev:
                self.set("train.micro_batch_size", dev, "device_train_microbatch_size", note=f"llm-foundry lowers it to the per-device batch {dev}")
            else:
                self.set("train.micro_batch_size", micro, "device_train_microbatch_size")
        eb = self.get("device_eval_batch_size")
        if eb is not None:
            self.set("train.eval_micro_batch_size", int(num(eb)), "device_eval_batch_size")
        for key in ("device_train_batch_size", "n_gpus", "device_train_grad_accum"):
            self.drop(key, "ignored-by-tool", "llm-foundry computes it from global_train_batch_size and the world size.")
            if self.has(key):
                self.d.warn(f"`{key}` is computed by llm-foundry from global_train_batch_size; the file's value is overwritten.", key)
        ei = _time(self.get("eval_interval"))
        if ei is not None:
            if ei[1] == "ba":
                self.set("train.eval_every", int(ei[0]), "eval_interval")
            elif ei[1] == "ep" and t is not None and t[1] == "ep" and ei[0] >= t[0]:
                self.set("train.eval_every", 0, "eval_interval", note="once, at the end of the run")
            elif ei[1] == "ep" and ei[0].is_integer() and ei[0] >= 1:
                # Composer evaluates at the end of every N-th epoch (its EPOCH_END events)
                self.set("train.eval_every", epochs_cadence(int(ei[0])), "eval_interval")
            else:
                self.set("train.eval_every", 0, "eval_interval", approx=f"every {self.get('eval_interval')}: recipec counts evaluation in steps; here only at the end")
        es = self.get("eval_subset_num_batches")
        if es is not None:
            if int(es) < 0:
                self.set("train.eval_batches", 0, "eval_subset_num_batches", note="the whole evaluation split")
            else:
                self.set("train.eval_batches", int(es), "eval_subset_num_batches", approx="recipec counts micro-batches of train.micro_batch_size")
        if self.has("eval_first"):
            self.set("train.eval_at_start", bool(self.get("eval_first")), "eval_first")
        elif self.has("eval_loader") or self.has("eval_loaders"):
            self.d.default("train.eval_at_start", False, "eval_first", "no evaluation before the first batch")
        ci = _time(self.get("console_log_interval"))
        if ci is not None and ci[1] == "ba":
            self.set("train.log_every", int(ci[0]), "console_log_interval")
        elif self.has("console_log_interval"):
            self.drop("console_log_interval", "not-for-training", "how often the console shows metrics.")
        if self.get("seed") is not None:
            self.set("recipe.seed", int(self.get("seed")), "seed")
        else:
            self.d.default("recipe.seed", 17, "seed", "seed = 17")
        if self.get("train_subset_num_batches", -1) not in (-1, None):
            self.drop("train_subset_num_batches", "missing-feature", "recipec trains on every batch of an epoch.")
        elif self.has("train_subset_num_batches"):
            self.d.exact("train_subset_num_batches")
        if self.has("accumulate_train_batch_on_tokens"):
            self.d.approx("recipec averages the loss over the supervised tokens of the whole batch", "accumulate_train_batch_on_tokens")

    # -- launch -----------------------------------------------------------------------------
    def launch(self) -> None:
        np_ = max(int(getattr(self.o, "num_processes", 1) or 1), 1)
        if np_ > 1:
            self.set("launch.num_processes", np_, note="the processes of the source run (--num-processes)")
        prec = self.get("precision")
        if prec is None:
            self.d.default("launch.mixed_precision", "bf16", "precision", "amp_bf16")
        elif prec in _PRECISION:
            self.set("launch.mixed_precision", _PRECISION[prec], "precision")
        elif prec == "amp_fp8":
            self.set("launch.mixed_precision", "bf16", "precision", approx="recipec has no fp8; bf16 autocast")
        else:
            self.drop("precision", "missing-feature", f"precision `{prec}`.")
        self.fsdp(np_)
        self.mesh(np_)
        algos = "algorithms."
        ctype = self.get(algos + "gradient_clipping.clipping_type")
        thr = self.get(algos + "gradient_clipping.clipping_threshold")
        if self.has("algorithms.gradient_clipping"):
            if ctype == "norm" and thr is not None:
                self.set("optim.grad_clip", float(num(thr)), algos + "gradient_clipping.clipping_type", algos + "gradient_clipping.clipping_threshold")
            else:
                self.drop("algorithms.gradient_clipping", "missing-feature", f"recipec clips the global norm only, not `{ctype}`.")
                self.set("optim.grad_clip", 0.0, note="no norm clipping in the source run")
        else:
            self.d.default("optim.grad_clip", 0.0, "algorithms.gradient_clipping", "no gradient clipping")
        self.rest("algorithms", "missing-feature", "a Composer algorithm recipec does not have.")

    def fsdp(self, np_: int) -> None:
        f = "fsdp_config."
        if not self.has("fsdp_config"):
            return
        if np_ == 1:
            self.drop("fsdp_config", "ignored-by-tool", "llm-foundry turns FSDP off on a single device (give --num-processes).")
            self.d.warn("fsdp_config on one process: llm-foundry ignores it (FSDP needs more than one device).", "fsdp_config")
            return
        ss = self.get(f + "sharding_strategy", "FULL_SHARD")
        self.set("launch.strategy", "fsdp", note="fsdp_config")
        self.set("launch.fsdp.version", 1, note="Composer's FSDP wraps FlatParameters (version 1)")
        if str(ss).upper() in _SHARDING:
            if self.has(f + "sharding_strategy"):
                self.set("launch.fsdp.sharding_strategy", _SHARDING[str(ss).upper()], f + "sharding_strategy")
            else:
                self.d.default("launch.fsdp.sharding_strategy", "full_shard", f + "sharding_strategy", "FULL_SHARD")
        elif self.has(f + "sharding_strategy"):
            self.d.drop(f + "sharding_strategy", "missing-feature", f"FSDP sharding `{ss}`.")
        if self.has(f + "activation_checkpointing"):
            self.set("launch.fsdp.activation_checkpointing", bool(self.get(f + "activation_checkpointing")), f + "activation_checkpointing")
        if self.has(f + "cpu_offload"):
            self.set("launch.fsdp.cpu_offload", bool(self.get(f + "cpu_offload")), f + "cpu_offload")
        if self.has(f + "state_dict_type"):
            sdt = str(self.get(f + "state_dict_type"))
            if sdt in ("full", "sharded"):
                self.set("launch.fsdp.state_dict_type", sdt, f + "state_dict_type")
        mp = self.get(f + "mixed_precision")
        if mp is not None:
            self.d.approx(f"recipec's FSDP keeps float32 parameters under autocast; Composer's {mp} mixed precision differs in what is kept in low precision", f + "mixed_precision")
        for key in ("activation_checkpointing_reentrant", "activation_cpu_offload"):
            if self.get(f + key) is False:
                self.d.exact(f + key)
        self.mesh(np_)
        self.rest("fsdp_config", "no-equivalent", "an FSDP performance setting recipec does not expose.")

    def mesh(self, np_: int) -> None:
        """tp_config (Composer's TPConfig: tensor_parallel_degree ranks split the layers its
        `strategy` names) and the FSDP config's data-parallel degrees (Composer's device mesh:
        data_parallel_replicate_degree replicas of data_parallel_shard_degree shards) as
        `[launch.parallelism]`."""
        from .mesh import Dim, Mesh, blocker, place

        if getattr(self, "_meshed", False):
            return
        self._meshed = True
        m = Mesh()
        t, f = "tp_config.", "fsdp_config."
        tp = self.get(t + "tensor_parallel_degree")
        if self.has("tp_config") and tp is not None and int(tp) > 1:
            strategy = self.get(t + "strategy")
            why = (
                f"Composer splits the layers its `{strategy}` strategy names (llm-foundry's ffn: the MLP's up and down projections); "
                "recipec splits the attention and MLP projections by transformers' own plan for the model type"
            )
            m.tp_size = Dim(int(tp), (t + "tensor_parallel_degree",), approx=why, also=tuple(x for x in (t + "strategy",) if self.has(x)), also_approx=why)
        elif self.has("tp_config"):
            self.d.exact(*self.under("tp_config"))  # a degree of 1: no split
        fsdp_on = self.d.value("launch.strategy") == "fsdp"
        rep = self.get(f + "data_parallel_replicate_degree")
        if fsdp_on and rep is not None and int(rep) > 1:
            m.dp_replicate_size = Dim(int(rep), (f + "data_parallel_replicate_degree",))
        elif fsdp_on and self.has(f + "data_parallel_replicate_degree"):
            self.d.exact(f + "data_parallel_replicate_degree")
        shard = self.get(f + "data_parallel_shard_degree")
        if fsdp_on and shard is not None:
            m.shard = Dim(int(shard), (f + "data_parallel_shard_degree",))  # -1: the rest of the world
        if not m.asked() and m.shard is None:
            self.rest("tp_config", "no-equivalent", "a setting of Composer's tensor parallelism recipec does not expose.")
            return
        if fsdp_on and self.d.value("launch.fsdp.version") == 1 and (m.tp_size or m.dp_replicate_size):
            # Composer's FSDP wraps FlatParameters (version 1); recipec's mesh composes with FSDP 2
            version = self.d.tables["launch.fsdp"]["version"]
            version.value = 2
            if any(getattr(m, k) and not blocker(self.d, k, getattr(m, k).size, {}, np_) for k in ("tp_size", "dp_replicate_size")):
                self.set("launch.fsdp.version", 2, approx="Composer's FSDP (FlatParameters) under a device mesh: recipec's mesh composes with FSDP 2 (per-parameter sharding), the same sharding")
            else:
                version.value = 1
        gb = self.get("global_train_batch_size")

        def rebatch(dp: int, note: str) -> None:
            split = m.kept.get("tp_size", 1)
            world = dp * split
            if gb is None:
                return
            line = self.d.tables["train"]["batch_size"]
            line.value = int(gb) // split
            if split > 1:
                why = (
                    f"Composer's global_train_batch_size counts every process's device batch, the tensor-parallel ranks' too "
                    f"(which read the same samples: the dataset's `replication`); recipec counts the {note}: {gb} / {split}"
                )
                line.how, line.note = "approx", why
                self.d.approx(why, "global_train_batch_size")
            micro = self.d.tables["train"].get("micro_batch_size")
            if micro is not None and micro.value > max(int(gb) // world, 1):
                micro.value = max(int(gb) // world, 1)
                micro.note = f"llm-foundry lowers it to the per-device batch {micro.value}"

        place(self.d, np_, m, rebatch)
        self.rest("tp_config", "no-equivalent", "a setting of Composer's tensor parallelism recipec does not expose.")

    # -- output and the rest ------------------------------------------------------------------
    def output(self) -> None:
        folder = self.get("save_folder")
        if folder is None:
            if self.has("save_folder"):
                self.set("train.save_every", 0, "save_folder", note="no checkpoints")
            else:
                self.d.default("train.save_every", 0, "save_folder", "no checkpoints (save_folder unset)")
            for key in ("save_interval", "save_num_checkpoints_to_keep"):
                self.drop(key, "ignored-by-tool", "without save_folder no checkpoint is saved.")
        else:
            self.d.drop("save_folder", "no-equivalent", "recipec saves checkpoints under the run directory (output.dir).")
            si = _time(self.get("save_interval", "1000ba"))
            if si is not None and si[1] == "ba":
                if self.has("save_interval"):
                    self.set("train.save_every", int(si[0]), "save_interval")
                else:
                    self.d.default("train.save_every", int(si[0]), "save_interval", "save_interval = 1000ba")
            elif si is not None and si[1] == "ep" and si[0].is_integer() and si[0] >= 1:
                # Composer saves at the end of every N-th epoch (EPOCH_CHECKPOINT)
                self.set("train.save_every", epochs_cadence(int(si[0])), "save_interval")
            elif self.has("save_interval"):
                self.drop("save_interval", "missing-feature", "recipec saves every so many steps or epochs, not in this unit.")
            keep = self.get("save_num_checkpoints_to_keep", -1)
            if self.has("save_num_checkpoints_to_keep"):
                self.set("train.keep_last", max(int(keep), 0), "save_num_checkpoints_to_keep")
            else:
                self.d.default("train.keep_last", 0, "save_num_checkpoints_to_keep", "keep every checkpoint (-1)")
        if not self.get("load_path"):
            for key in ("load_weights_only", "load_strict_model_weights", "load_ignore_keys"):
                if self.has(key):
                    self.drop(key, "ignored-by-tool", "without load_path nothing is loaded.")
                    self.d.warn(f"`{key}` without load_path: llm-foundry loads no checkpoint, so it has no effect.", key)
        for key in ("load_path", "load_weights_only", "load_strict_model_weights", "load_ignore_keys"):
            self.drop(key, "missing-feature", "recipec continues from a recipec run (continual.from), not from a Composer checkpoint.")
        for key in ("save_latest_filename", "save_overwrite", "save_weights_only", "save_filename", "save_ignore_keys", "only_hf_checkpoint", "only_composer_checkpoint", "autoresume"):
            self.drop(key, "not-for-training", "how checkpoints are named, saved or resumed.")
        trackers = [n for n in ("tensorboard", "wandb", "mlflow", "aim") if self.has(f"loggers.{n}")]
        if trackers:
            keys = [k for n in trackers for k in self.under(f"loggers.{n}")]
            self.set(
                "output.trackers",
                trackers,
                *keys,
                approx="recipec's trackers write locally under the run directory (wandb offline); the logger's own options are not used",
            )
        for key in ("loggers", "callbacks"):
            for leaf in self.under(key):
                cb = leaf.split(".")[1] if "." in leaf else ""
                if key == "loggers" or cb in _LOG_CALLBACKS:
                    self.drop(leaf, "not-for-training", "logging, monitoring or exporting; recipec writes metrics.jsonl (and output.trackers).")
                else:
                    self.drop(leaf, "missing-feature", f"the Composer callback `{cb}`.")

    def misc(self) -> None:
        for key in ("progress_bar", "log_to_console", "python_log_level", "log_config", "run_name", "metadata", "flatten_metadata", "profiler"):
            self.drop(key, "not-for-training", "logging and run bookkeeping.")
        if "dist_timeout" in self.d.values and "dist_timeout" not in self.d.ledger:
            # seconds, given to Composer's dist.initialize_dist as the process group's timeout
            seconds = num(self.d.get("dist_timeout"))
            if seconds is not None and seconds > 0:
                self.set("launch.collective_timeout_minutes", seconds / 60, "dist_timeout")
        for key in ("dist_timeout", "expandable_segments", "max_split_size_mb", "cuda_load_lazy", "spin_dataloaders"):
            self.drop(key, "no-equivalent", "a process or memory-allocator setting recipec does not expose.")
        for key in ("icl_tasks", "icl_tasks_str", "eval_gauntlet", "eval_gauntlet_str", "icl_subset_num_batches", "icl_seq_len"):
            self.drop(key, "not-for-training", "in-context-learning evaluation; recipec evaluates the loss only.")
        self.drop("code_paths", "missing-feature", "recipec does not import user code.")
        self.drop("compile_config", "no-equivalent", "Composer's torch.compile options; recipec has model.compile.")

    def variables(self) -> None:
        """A `variables` key is mapped through the keys that reference it (the best state wins)."""
        users: dict[str, list[str]] = {}
        for key, refs in self.res.refs.items():
            for r in refs:
                users.setdefault(r, []).append(key)
        rank = {"exact": 0, "approx": 1, "dropped": 2}
        text = self.d.config.text
        for key in self.under("variables"):
            if key in self.d.ledger:
                continue
            states = [self.d.ledger[u] for u in users.get(key, []) if u in self.d.ledger]
            if states:
                best = min(states, key=lambda e: rank[e.how])
                if best.how == "exact":
                    self.d.exact(key)
                elif best.how == "approx":
                    self.d.approx(best.why, key)
                else:
                    self.d.drop(key, best.reason or "no-equivalent", best.why)
            elif self._aliased(key, text):
                self.d.exact(key)  # a YAML anchor: its copies are mapped where they are merged
            else:
                self.d.drop(key, "ignored-by-tool", "llm-foundry reads `variables` only where the file references them.")
                self.d.warn(f"`{key}` is referenced nowhere: llm-foundry ignores it.", key)

    def _aliased(self, key: str, text: str) -> bool:
        parts = key.split(".")
        for n in range(len(parts), 1, -1):
            line = self.d.config.lines.get(".".join(parts[:n]))
            if not line:
                continue
            m = re.search(r"&([A-Za-z0-9_-]+)", text.splitlines()[line - 1])
            if m and re.search(r"\*" + re.escape(m.group(1)) + r"\b", text):
                return True
        return False


def convert(draft: Draft, options: Any) -> None:
    _Conv(draft, options).run()


def _nested(leaves: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1, "c": 2} -> {"a": {"b": 1}, "c": 2}."""
    out: dict[str, Any] = {}
    for dotted, value in leaves.items():
        *parents, last = dotted.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _model_type_in_name(path: str) -> str | None:
    """The longest causal-LM model type named in a hub path (`llama` in `meta-llama/...`), or None."""
    from ..model_types import model_types

    low = path.lower().replace("-", "_")
    return max((t for t in model_types() if t in low), key=len, default=None)
