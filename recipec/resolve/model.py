"""Resolve `[model]`: which model is loaded or built, its precision, and the fast paths it runs on."""

from __future__ import annotations

from .. import model_types
from ..diagnostics import did_you_mean
from ..runtime import model_config
from ..schema import Recipe
from ..schema.model import _KINDS as KINDS
from ..schema.model import LOCAL_PREFIXES
from ..schema.model import _same_kind as same_kind
from ..source import KeyPath
from .builder import PlanBuilder

ADAMW_IMPLEMENTATION = {"auto": {}, "foreach": {"foreach": True}, "fused": {"fused": True}, "for-loop": {"foreach": False}}
"""optim.implementation -> the keyword arguments torch.optim.AdamW takes for it."""


def hub_ids(recipe: Recipe) -> list[str]:
    """The hub ids the recipe loads from (model.path, tokenizer.path that are not local paths, data.sources' hub repos)."""
    paths = (recipe.model.path, recipe.tokenizer.path)
    datasets = [src.hub.repo for src in recipe.data.sources if src.hub is not None]
    return [p for p in paths if p is not None and not p.startswith(LOCAL_PREFIXES)] + datasets


def max_positions(b: PlanBuilder) -> tuple[int | None, KeyPath]:
    """The model's positions (None when unknown), and the recipe key that sets them."""
    r = b.recipe
    if r.model.init is not None:
        config = r.model.init_config()
        for key, value in config.items():
            if model_types.canonical(r.model.init, key) == model_types.canonical(r.model.init, "max_position_embeddings"):
                return value, ("model", "config", key)
        return None, ("model", "config")
    mc = b.model_config or {}
    key: KeyPath = ("model", "path") if r.continual is None else ("continual", "from")
    for name in ("max_position_embeddings", "n_positions"):
        if name in r.model.overrides():
            key = ("model", "config", name)
    return mc.get("max_position_embeddings", mc.get("n_positions")), key


def model_settings(b: PlanBuilder) -> None:
    """The model to load (the parent's with `[continual]`) or to build, and how it is held."""
    r = b.recipe
    c, parent = r.continual, b.parent
    b.section("model")
    if c is not None:
        for key in ("path", "init"):
            if getattr(r.model, key) is not None:
                b.error(
                    ("model", key),
                    f"with [continual] the model is the parent's: `model.{key}` cannot be set too",
                    "remove it; continual.from names the model",
                )
    elif r.model.path is None and r.model.init is None:
        b.error(
            ("model",),
            "[model] needs exactly one of `path` and `init`, got neither",
            'load a model with path = "org/name" or "./dir", or start from scratch with init = "llama"',
        )
    b.key("model_init", ("model", "init"))
    adapter = b.adapter
    continued = adapter is not None and parent is not None and adapter.path == parent.model_dir
    if c is not None and parent is not None and parent.base_model is not None:
        b.derived("model_path", parent.base_model, "derived: continual.from (the model the parent's PEFT adapter trained on)")
        if not continued:
            b.derived("parent_adapter", parent.model_dir, f"derived: continual.from (the parent's adapter, step {parent.step}: merged into the model as it loads)")
        b.derived("model_revision", parent.base_revision, "derived: the parent's model.revision")
        ds = r.launch.deepspeed
        if not continued and r.launch.strategy == "deepspeed" and ds is not None and ds.zero_stage == 3:
            b.error(
                ("continual", "from"),
                f"the parent run {c.from_} saved a PEFT adapter and no merged model, and the script merges it into the "
                "model as it loads, which ZeRO-3 builds partitioned",
                "set peft.save_merged = true in the parent recipe and train it again, or use launch.deepspeed.zero_stage = 2",
            )
    else:
        if adapter is not None and parent is not None and parent.model_dir.endswith("/model_full") and adapter.path == parent.model_dir[: -len("_full")]:
            b.error(
                ("peft", "adapter"),
                f"the parent run {c.from_} saved this adapter merged into its model_full/, which continual.from loads: it would apply twice",
                "remove peft.adapter to train a new adapter on the merged model, or remove peft.save_merged from the parent to go on training its adapter",
            )
        if c is not None and parent is not None:
            what = "the final model" if parent.kind == "run" else "the checkpoint"
            b.derived("model_path", parent.model_dir, f"derived: continual.from ({what} of the parent, step {parent.step})")
        else:
            b.key("model_path", ("model", "path"))
        b.key("model_revision", ("model", "revision"))
    if r.model.init is not None:
        b.add("model_config", r.model.init_config(), "model.config", b.origin(("model", "config")))
    else:
        pretrained_overrides(b)
    b.key("model_dtype", ("model", "dtype"))
    b.key("gradient_checkpointing", ("model", "gradient_checkpointing"))
    if b.recipe.model.activation_offloading:
        b.key("activation_offloading", ("model", "activation_offloading"))
    if b.recipe.model.activation_offloading and b.recipe.launch.cpu:
        b.warn(
            ("model", "activation_offloading"),
            "launch.cpu: the activations are in host memory already, so model.activation_offloading moves nothing",
            "set it for the GPU run, or remove it",
        )
    if r.model.tiled_mlp:
        tiled_mlp_settings(b)
    b.key("trust_remote_code", ("model", "trust_remote_code"))
    if r.model.trust_remote_code:
        b.warn(("model", "trust_remote_code"), "trust_remote_code runs Python code that comes with the model")


def pretrained_overrides(b: PlanBuilder) -> None:
    """`[model.config]` over a pretrained model: checked against its config.json's model type when that is
    local and known; the plan's view of the model's config (b.model_config) then carries the new values."""
    overrides = b.recipe.model.overrides()
    if not overrides:
        return
    b.add("model_overrides", overrides, "model.config (replaces these keys of the pretrained config)", b.origin(("model", "config")))
    mc = b.model_config
    model_type = None if mc is None else mc.get("model_type")
    if model_type not in model_types.model_types():
        what = "the model's config.json is neither local nor in the local hub cache" if mc is None else f"its model type {model_type!r} is not in recipec/model_types.json"
        b.warn(("model", "config"), f"[model.config] is checked when the script loads the model's config: {what}")
        return
    keys = model_types.config_keys(model_type)
    rope = "rope_parameters" in model_types.model_types()[model_type]["keys"]
    merged = dict(mc)
    for key, value in overrides.items():
        stored = model_types.canonical(model_type, key)
        why = model_config.problem(model_type, key, stored, key in keys, rope)
        if why:
            b.error(("model", "config", key), why, did_you_mean(key, sorted(keys)) if key not in keys else None)
            continue
        default = model_types.model_types()[model_type]["keys"].get(stored)
        if not same_kind(value, default):
            b.error(("model", "config", key), f"`model.config.{key}` must be {KINDS[type(default)]}, like the {model_type} config's default {default!r}")
            continue
        current = merged.get(stored)
        merged[stored] = {**current, **value} if isinstance(current, dict) and isinstance(value, dict) else value
    b.model_config = merged


def fast_path_settings(b: PlanBuilder) -> None:
    """Attention kernel, torch.compile and the AdamW implementation, with what rules them out.

    What depends on the machine (CUDA present, flash-attn installed) is checked when the
    script starts; here only what the recipe itself rules out.
    """
    r = b.recipe
    m, launch = r.model, r.launch
    b.key("attention", ("model", "attention"))
    if m.attention.startswith("flash_attention"):
        if launch.cpu:
            b.error(
                ("model", "attention"),
                f'attention "{m.attention}" needs a CUDA GPU, and launch.cpu is true',
                'use attention = "sdpa", which runs on every device',
            )
        elif launch.mixed_precision == "no" and m.dtype == "float32":
            b.error(
                ("model", "attention"),
                f'attention "{m.attention}" runs in fp16 or bf16 only, and this run is float32 throughout',
                'set launch.mixed_precision = "bf16" (or model.dtype = "bfloat16"), or use attention = "sdpa"',
            )
    b.key("torch_compile", ("model", "compile"))
    if m.compile:
        b.key("compile_mode", ("model", "compile_mode"))
        if r.launch.strategy == "fsdp" and launch.cpu:
            b.error(
                ("model", "compile"),
                "torch.compile is not supported with strategy \"fsdp\" on CPU (torch's own fully_shard over gloo)",
                "turn compile off for the CPU run",
            )
    if r.optim.name == "adamw":
        b.add(
            "adamw_implementation",
            ADAMW_IMPLEMENTATION[r.optim.implementation],
            f"optim.implementation \"{r.optim.implementation}\"",
            b.origin(("optim", "implementation")),
        )
    if launch.cpu and launch.tf32:
        b.warn(("launch", "tf32"), "launch.tf32 has no effect on CPU: TF32 is a mode of NVIDIA tensor cores")
    if launch.cpu and r.data.pin_memory:
        b.warn(("data", "pin_memory"), "data.pin_memory has no effect on CPU: it speeds up copies to a GPU")


def tiled_mlp_settings(b: PlanBuilder) -> None:
    """`model.tiled_mlp`: the number of tiles, and no mixture of experts (its layers have no dense MLP).

    Whether a pretrained model is one is known here only from a local config.json; the script
    checks every model's layers when it applies the tiling.
    """
    m = b.recipe.model
    b.key("tiled_mlp", ("model", "tiled_mlp"))
    if m.tiled_mlp_shards is not None:
        b.key("tiled_mlp_shards", ("model", "tiled_mlp_shards"))
    else:
        b.add("tiled_mlp_shards", None, "unset: the script takes ceil(seq_len / hidden_size) tiles (DeepSpeed's default)", b.origin(("model", "tiled_mlp")))
    if m.init is not None:
        experts = "router_aux_loss_coef" in model_types.config_keys(m.init)
        what = f'model.init "{m.init}"'
    else:
        experts = b.model_config is not None and "router_aux_loss_coef" in b.model_config
        what = f"the model ({(b.model_config or {}).get('model_type', 'its config.json')})"
    if experts:
        b.error(
            ("model", "tiled_mlp"),
            f"tiled_mlp tiles the dense MLP of each decoder layer, and {what} is a mixture of experts (its layers route tokens to experts)",
            "remove tiled_mlp",
        )
