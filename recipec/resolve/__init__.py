"""resolve: `Recipe` -> `Plan`, the checks that span tables and every derived number.

A Plan is what the templates render: an ordered list of settings, each a script
variable with its value and a note naming the recipe key or the derivation, plus the
few values that depend on the data and so are computed by the generated script with a
visible formula. resolve is pure: it reads no files and no machine state; whatever it
needs from outside (the pretrained model's config, the path from the build directory back
to the project) is passed in.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..diagnostics import Diagnostic, RecipeError, did_you_mean
from ..memory import MemoryEstimate, check_ceiling, estimate, model_shape
from ..parent import ParentRun
from .data import data_settings, filter_dicts, source_dicts
from .schedule import (
    ceil_product,
    error_key,
    peak_lr,
    phase_spec,
    shorthand_warmup_steps,
    warmup_steps_of,
)
from ..runtime import schedule as runtime_schedule
from ..schema import DeepspeedTable, FsdpTable, LaunchTable, Recipe
from ..schema.launch import FROM_ENV
from ..schema.model import LOCAL_PREFIXES
from ..schema.train import MAX_STEPS
from ..source import KeyPath, SourceMap


PLAIN_PATH = re.compile(r"^[\w./+@:~-]+$")
"""Paths that may be written into a generated docstring and shell line as they are."""


@dataclass(frozen=True)
class Setting:
    """One variable of the generated script's config block."""

    name: str
    value: Any
    note: str
    """Trailing comment: the recipe key, or `derived: <formula with numbers>`."""
    section: str
    origin: str
    """Where the value came from, for `explain`: `file:line`, `--set ...`, `default` or `derived`."""


@dataclass(frozen=True)
class Formula:
    """A value the generated script computes once the data is loaded."""

    name: str
    expr: str
    """Python expression over config variables; built here from names and literals only."""
    note: str


@dataclass(frozen=True)
class Plan:
    """Everything render needs, resolved and checked."""

    recipe: Recipe
    recipe_file: str
    build_dir: str
    project_dir: str
    """The project directory as seen from the build directory (relative where possible)."""
    overrides: tuple[str, ...]
    settings: tuple[Setting, ...]
    formulas: tuple[Formula, ...]
    warnings: tuple[Diagnostic, ...] = field(default=())
    version: str = __version__
    memory: MemoryEstimate | None = None
    """Estimated peak memory per device (recipec/memory.py), for `explain`; None when unknown."""
    memory_unknown: str | None = None
    """Why there is no memory estimate."""

    def __getitem__(self, name: str) -> Any:
        for s in self.settings:
            if s.name == name:
                return s.value
        raise KeyError(name)

    def get(self, name: str, default: Any = None) -> Any:
        """The setting's value, or `default` when the plan has no such setting."""
        try:
            return self[name]
        except KeyError:
            return default

    @property
    def name(self) -> str:
        return self.recipe.recipe.name

    @property
    def launch_command(self) -> str:
        """The exact command that starts training, from the project directory."""
        build = self.build_dir.rstrip("/")
        return f"accelerate launch --config_file {build}/accelerate_config.yaml {build}/train.py"


def hub_ids(recipe: Recipe) -> list[str]:
    """The hub ids the recipe loads from (model.path, tokenizer.path that are not local paths)."""
    paths = (recipe.model.path, recipe.tokenizer.path)
    return [p for p in paths if p is not None and not p.startswith(LOCAL_PREFIXES)]


def default_build_dir(recipe: Recipe) -> str:
    """build/<recipe.name>, relative to the project directory."""
    return f"build/{recipe.recipe.name}"


def resolve(
    recipe: Recipe,
    source: SourceMap,
    *,
    recipe_file: str,
    build_dir: str | None = None,
    project_dir: str = "../..",
    overrides: tuple[str, ...] = (),
    model_config: dict[str, Any] | None = None,
    parent: ParentRun | None = None,
    files_root: Path | None = None,
) -> Plan:
    """Check the recipe as a whole and derive every number the script needs.

    Args:
        recipe: the validated recipe.
        source: its source map, so errors and origins point at lines.
        recipe_file: the recipe path as the user gave it (recorded in the build).
        build_dir: where the build goes, relative to the project directory.
        project_dir: the project directory seen from the build directory.
        overrides: the `--set` arguments, recorded in the build.
        model_config: the pretrained model's config.json, when it is local and known.
        parent: with `[continual]`, the parent run as `recipec.parent.read_parent` found it.
        files_root: the project directory, to check that data globs match files; None skips it.

    Raises:
        RecipeError: with every cross-table error found.
    """
    b = _Builder(recipe, source)
    r = recipe
    build_dir = build_dir or default_build_dir(recipe)
    if not PLAIN_PATH.match(build_dir):
        b.errors.append(
            Diagnostic(
                "error",
                f"build directory {build_dir!r} has characters that cannot go into the generated launch command",
                None,
                "choose a build directory (-o) of letters, digits and ./_-+@:~",
            )
        )
    t, d, s, launch = r.train, r.data, r.schedule, r.launch

    b.section("run")
    b.key("name", ("recipe", "name"))
    b.key("description", ("recipe", "description"))
    b.key("seed", ("recipe", "seed"))
    if r.output.dir is not None:
        b.key("output_dir", ("output", "dir"))
    else:
        b.derived("output_dir", f"runs/{r.recipe.name}", "derived: runs/<recipe.name>")
    b.key("trackers", ("output", "trackers"))

    b.section("model")
    c = r.continual
    if c is not None:
        for key in ("path", "init"):
            if getattr(r.model, key) is not None:
                b.error(
                    ("model", key),
                    f"with [continual] the model is the parent's: `model.{key}` cannot be set too",
                    "remove it; continual.from names the model",
                )
        if parent is None:
            raise ValueError("resolve needs the parent run for a [continual] recipe (see recipec.parent.read_parent)")
    elif r.model.path is None and r.model.init is None:
        b.error(
            ("model",),
            "[model] needs exactly one of `path` and `init`, got neither",
            'load a model with path = "org/name" or "./dir", or start from scratch with init = "llama"',
        )
    b.key("model_init", ("model", "init"))
    model_path = r.model.path
    if c is not None and parent is not None:
        model_path = parent.model_dir
        what = "the final model" if parent.kind == "run" else "the checkpoint"
        b.derived("model_path", model_path, f"derived: continual.from ({what} of the parent, step {parent.step})")
    else:
        b.key("model_path", ("model", "path"))
    b.key("model_revision", ("model", "revision"))
    if r.model.init is not None:
        config = r.model.config.model_dump(exclude_none=True)
        b.add("model_config", config, "model.config", b.origin(("model", "config")))
        max_positions = r.model.config.max_position_embeddings
        positions_key: KeyPath = ("model", "config", "max_position_embeddings")
    else:
        mc = model_config or {}
        max_positions = mc.get("max_position_embeddings", mc.get("n_positions"))
        positions_key = ("model", "path") if c is None else ("continual", "from")
    b.key("model_dtype", ("model", "dtype"))
    b.key("gradient_checkpointing", ("model", "gradient_checkpointing"))
    b.key("trust_remote_code", ("model", "trust_remote_code"))
    _fast_path_settings(b, r)

    if r.peft is not None:
        b.section("peft")
        spec = r.peft.model_dump(exclude_none=True, exclude={"save_merged", "quantize"})
        b.add("peft_spec", spec, "peft", b.origin(("peft",)))
        b.key("peft_save_merged", ("peft", "save_merged"))
        if r.peft.method == "lora":
            b.key("peft_quantize", ("peft", "quantize"))
        if r.model.init is not None:
            b.warn(("peft", "method"), "a PEFT adapter on a from-scratch model trains the adapter on random weights")
        if getattr(r.peft, "quantize", None) is not None and r.model.init is not None:
            b.error(("peft", "quantize"), "quantization needs pretrained weights; a from-scratch model has none")

    b.section("tokenizer")
    if r.tokenizer.train is not None:
        b.add("tokenizer_path", None, "tokenizer.train: trained before the run", "derived")
        b.add("tokenizer_train", r.tokenizer.train.model_dump(), "tokenizer.train", b.origin(("tokenizer", "train")))
    elif r.tokenizer.path is not None:
        b.key("tokenizer_path", ("tokenizer", "path"))
        b.add("tokenizer_train", None, "tokenizer.train (unset)", "default")
    elif model_path is not None:
        b.derived("tokenizer_path", model_path, "derived: the model's own tokenizer (model.path)")
        b.add("tokenizer_train", None, "tokenizer.train (unset)", "default")
    elif r.model.init is not None:
        b.error(
            ("model", "init"),
            "a from-scratch model (`model.init`) has no tokenizer of its own",
            'add [tokenizer] with train = {kind = "bpe", vocab_size = 8192}, or a tokenizer path',
        )

    b.section("data")
    data_settings(b, r, files_root)
    b.key("num_workers", ("data", "num_workers"))
    b.key("pin_memory", ("data", "pin_memory"))
    if max_positions is not None and d.seq_len > max_positions:
        b.error(
            ("data", "seq_len"),
            f"data.seq_len {d.seq_len} is longer than the model's {max_positions} positions",
            f"lower data.seq_len to at most {max_positions}"
            + (", or raise model.config.max_position_embeddings" if positions_key[-1] != "path" else ""),
        )

    b.section("optim")
    lr, lr_note = peak_lr(r)
    if lr_note is None:
        b.key("lr", ("optim", "lr"))
    else:
        b.derived("lr", lr, lr_note)
        if lr > 1:
            b.error(("optim", "scaling"), f"batch-size scaling gives a peak LR of {lr:g}, above 1", "check the reference")
    for k in ("betas", "eps", "weight_decay", "grad_clip"):
        b.key(k, ("optim", k))

    b.section("train")
    b.key("micro_batch_size", ("train", "micro_batch_size"))
    b.key("batch_size", ("train", "batch_size"))
    # batch_size = micro_batch_size x grad_accum_steps x world size (launch.num_processes, all machines)
    per_step = t.micro_batch_size * launch.num_processes
    world = f"launch.num_processes {launch.num_processes}{_machines_note(launch)}"
    if t.batch_size % per_step:
        lower = max(per_step, t.batch_size // per_step * per_step)
        b.error(
            ("train", "batch_size"),
            f"train.batch_size {t.batch_size} is not a multiple of micro_batch_size {t.micro_batch_size} * {world} = {per_step}",
            f"batch_size = micro_batch_size x grad_accum_steps x num_processes: use batch_size = {lower} "
            f"(grad_accum_steps {lower // per_step}) or {lower + per_step} (grad_accum_steps {lower // per_step + 1}), "
            "or change micro_batch_size",
        )
    grad_accum = max(1, t.batch_size // per_step)
    b.derived(
        "grad_accum_steps",
        grad_accum,
        f"derived: batch_size {t.batch_size} / (micro_batch_size {t.micro_batch_size} * num_processes "
        f"{launch.num_processes}{_machines_note(launch)})",
    )
    tokens_per_step = t.batch_size * d.seq_len
    b.derived("tokens_per_step", tokens_per_step, f"derived: batch_size {t.batch_size} * seq_len {d.seq_len}")

    formulas: list[Formula] = []
    max_steps: int | None
    if t.max_steps is not None:
        max_steps = t.max_steps
        b.key("max_steps", ("train", "max_steps"))
    elif t.tokens is not None:
        max_steps = math.ceil(t.tokens / tokens_per_step)
        b.derived("max_steps", max_steps, f"derived: ceil(train.tokens {t.tokens} / tokens_per_step {tokens_per_step})")
        if max_steps > MAX_STEPS:
            b.error(
                ("train", "tokens"),
                f"`train.tokens` {t.tokens:,} makes {max_steps:,} optimizer steps of {tokens_per_step:,} tokens; "
                f"a run has at most {MAX_STEPS:,}",
                "raise train.batch_size or data.seq_len, or train on fewer tokens",
            )
    else:
        max_steps = None
        b.key("epochs", ("train", "epochs"))
        formulas.append(
            Formula("steps_per_epoch", "len(train_sets[0]) // batch_size", "derived: training sequences // batch_size")
        )
        formulas.append(
            Formula("max_steps", "math.ceil(epochs * steps_per_epoch)", "derived: ceil(train.epochs * steps_per_epoch)")
        )
    for k in ("log_every", "eval_every", "eval_batches", "save_every", "keep_last"):
        b.key(k, ("train", k))

    b.section("schedule")
    rewarm = _rewarm(b, r, parent, lr) if c is not None and parent is not None else None
    spec = phase_spec(r, lr, max_steps, rewarm)
    schedule_note = "derived: [[schedule.phases]]" if s.phases is not None else _shorthand_note(r)
    phases = None
    if max_steps is not None:
        phases = _lay_out(b, r, spec, max_steps, tokens_per_step)
        if phases is not None:
            b.derived("schedule_phases", phases, schedule_note + " (see schedule.png)")
            _check_lengths(b, recipe, max_steps, warmup_steps_of(phases))
    else:
        b.derived("schedule_spec", spec, schedule_note + "; laid out once max_steps is known")
        formulas.append(
            Formula(
                "schedule_phases",
                "schedule.layout(schedule_spec, max_steps, tokens_per_step)",
                "derived: phase lengths in steps (recipec_runtime/schedule.py)",
            )
        )
    segments = _data_segments(b, r, phases, max_steps)
    if segments is not None:
        note = (
            "derived: one mixture for the whole run"
            if len(segments) == 1
            else "derived: data.sources[].phases and phase_weights over the schedule"
        )
        b.derived("segments", segments, note)
    if c is not None and parent is not None and c.continues and phases is not None:
        first_lr = lr * runtime_schedule.multiplier(0, phases)
        if not math.isclose(first_lr, parent.lr, rel_tol=1e-6, abs_tol=1e-12):
            b.error(
                ("continual", "continues"),
                f"this run claims to continue the parent's schedule, but its first LR is {first_lr:.6g} "
                f"and the parent's at step {parent.step} is {parent.lr:.6g}",
                "match the peak (optim.lr) and the first phase's start to the parent, or drop `continues`",
            )
    if s.min_lr is not None and s.min_lr > lr:
        b.error(
            ("schedule", "min_lr"),
            f"schedule.min_lr {s.min_lr} is above the peak LR {lr:g}",
            "the floor must be at most the peak; use min_lr_ratio for a fraction of the peak",
        )

    if c is not None and parent is not None:
        _continual_settings(b, r, parent)
    if r.ema is not None or r.merge is not None:
        _averaging_settings(b, r, max_steps, formulas)

    b.section("launch")
    _launch_settings(b, r)
    memory, memory_unknown = _memory(b, r, model_config)

    if r.data.eval_fraction == 0 and t.eval_every > 0:
        b.warn(("train", "eval_every"), "data.eval_fraction is 0: there is no held-out split, so no evaluation runs")
    if r.model.trust_remote_code:
        b.warn(("model", "trust_remote_code"), "trust_remote_code runs Python code that comes with the model")

    if b.errors:
        raise RecipeError(b.errors + b.warnings)
    return Plan(
        recipe=recipe,
        recipe_file=recipe_file,
        build_dir=build_dir,
        project_dir=project_dir,
        overrides=tuple(overrides),
        settings=tuple(b.settings),
        formulas=tuple(formulas),
        warnings=tuple(b.warnings),
        memory=memory,
        memory_unknown=memory_unknown,
    )


FSDP_MIN_NUM_PARAMS = 100_000_000
"""Parameters above which auto_wrap_policy "size" wraps a module when the recipe leaves it unset (accelerate's)."""


def _machines_note(launch: LaunchTable) -> str:
    """` (2 machines x 4)` after a process count spread over machines; empty on one machine."""
    if launch.num_machines == 1:
        return ""
    return f" ({launch.num_machines} machines x {launch.num_processes // launch.num_machines})"


def _launch_settings(b: _Builder, recipe: Recipe) -> None:
    """The launch shape and the chosen strategy's options, and the checks that span tables."""
    launch = recipe.launch
    for k in ("num_processes", "num_machines", "machine_rank", "main_process_ip", "main_process_port", "strategy"):
        b.key(k, ("launch", k))
    if launch.num_machines == 1:  # a warning, so that --set can scale a multi-machine recipe down to one
        for k in ("machine_rank", "main_process_ip"):
            if getattr(launch, k) == FROM_ENV:
                b.warn(("launch", k), f'launch.{k} = "env" has no effect on one machine (launch.num_machines is 1)')
    if launch.strategy == "fsdp":
        _fsdp_settings(b, recipe, launch.fsdp or FsdpTable())
    if launch.strategy == "deepspeed":
        ds = launch.deepspeed or DeepspeedTable()
        _deepspeed_settings(b, ds)
        for table in ("ema", "merge"):
            if ds.zero_stage == 3 and getattr(recipe, table) is not None:
                b.error(
                    (table,),
                    f"[{table}] keeps a full copy of the weights, which ZeRO stage 3 shards across processes; "
                    "the two do not work together yet",
                    "drop the table, or use launch.deepspeed.zero_stage = 2",
                )
    for k in ("mixed_precision", "cpu", "tf32"):
        b.key(k, ("launch", k))
    if launch.hub_offline or hub_ids(recipe):
        b.key("hub_offline", ("launch", "hub_offline"))
    else:  # nothing to download, so nothing may be: a local recipe never reaches the network
        b.derived("hub_offline", True, "derived: launch.hub_offline is false, but the recipe names nothing on the hub")


ADAMW_IMPLEMENTATION = {"auto": {}, "foreach": {"foreach": True}, "fused": {"fused": True}, "for-loop": {"foreach": False}}
"""optim.implementation -> the keyword arguments torch.optim.AdamW takes for it."""


def _fast_path_settings(b: _Builder, r: Recipe) -> None:
    """Attention kernel, torch.compile and the AdamW implementation, with what rules them out.

    What depends on the machine (CUDA present, flash-attn installed) is checked when the
    script starts; here only what the recipe itself rules out.
    """
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


def _memory(b: _Builder, recipe: Recipe, model_config: dict[str, Any] | None) -> tuple[MemoryEstimate | None, str | None]:
    """The peak-memory estimate, and a warning when it exceeds launch.device_memory_gib."""
    ceiling = recipe.launch.device_memory_gib
    try:
        memory = estimate(model_shape(recipe, model_config), recipe)
    except ValueError as exc:
        if ceiling is not None:
            b.warn(("launch", "device_memory_gib"), f"no memory estimate to compare with: {exc}")
        return None, str(exc)
    if ceiling is not None and (message := check_ceiling(memory, ceiling)):
        # a warning, not an error: the estimate is approximate (see recipec/memory.py)
        b.warn(
            ("launch", "device_memory_gib"),
            message,
            "lower train.micro_batch_size, set model.gradient_checkpointing, or shard (launch.strategy)",
        )
    return memory, None


def _fsdp_settings(b: _Builder, recipe: Recipe, fsdp: FsdpTable) -> None:
    """`[launch.fsdp]` as settings, and its checks against the machines, the model and the device."""
    launch = recipe.launch

    def add(key: str, value: Any, note: str | None = None) -> None:
        path = ("launch", "fsdp", key)
        b.add(f"fsdp_{key}", value, note or ".".join(path), b.origin(path))

    for k in ("version", "sharding_strategy", "auto_wrap_policy"):
        add(k, getattr(fsdp, k))
    b.derived(
        "fsdp_reshard_after_forward",
        fsdp.sharding_strategy != "shard_grad_op",
        f"derived: launch.fsdp.sharding_strategy {fsdp.sharding_strategy} "
        f"({'keeps' if fsdp.sharding_strategy == 'shard_grad_op' else 'frees'} gathered parameters after the forward)",
    )
    if fsdp.auto_wrap_policy == "transformer_layer":
        unset = "launch.fsdp.transformer_layer_cls (unset: the model's _no_split_modules)"
        add("transformer_layer_cls", fsdp.transformer_layer_cls, None if fsdp.transformer_layer_cls else unset)
    elif fsdp.auto_wrap_policy == "none":
        add("transformer_layer_cls", [], 'launch.fsdp.auto_wrap_policy "none": the whole model is one unit')
    else:
        unset = "launch.fsdp.min_num_params (unset: accelerate's default)"
        add("min_num_params", fsdp.min_num_params or FSDP_MIN_NUM_PARAMS, None if fsdp.min_num_params else unset)
    for k in ("cpu_offload", "activation_checkpointing", "state_dict_type"):
        add(k, getattr(fsdp, k))

    if fsdp.sharding_strategy == "hybrid_shard" and launch.num_machines == 1:
        b.error(
            ("launch", "fsdp", "sharding_strategy"),
            "sharding_strategy hybrid_shard shards within a machine and replicates across machines, "
            "and launch.num_machines is 1",
            'use sharding_strategy = "full_shard" on one machine',
        )
    if fsdp.activation_checkpointing and recipe.model.gradient_checkpointing:
        b.error(
            ("launch", "fsdp", "activation_checkpointing"),
            "launch.fsdp.activation_checkpointing and model.gradient_checkpointing both recompute activations",
            "keep launch.fsdp.activation_checkpointing: with FSDP, transformers' gradient checkpointing adds a "
            "redundant all-gather in the backward pass",
        )
    if launch.cpu:
        # accelerate's FSDP plugin needs CUDA; on CPU the script shards with torch's fully_shard (FSDP 2)
        native = "on CPU the script shards with torch's fully_shard (FSDP 2)"
        unsupported = [
            (
                "version",
                fsdp.version == 1,
                "launch.fsdp.version 1 needs CUDA, and launch.cpu is true",
                f"use version = 2: {native}",
            ),
            (
                "auto_wrap_policy",
                fsdp.auto_wrap_policy == "size",
                'auto_wrap_policy "size" needs accelerate\'s FSDP plugin, which needs CUDA, and launch.cpu is true',
                f'use "transformer_layer" or "none": {native}',
            ),
            (
                "cpu_offload",
                fsdp.cpu_offload,
                "launch.fsdp.cpu_offload with launch.cpu: the parameters are in CPU memory already",
                "remove cpu_offload",
            ),
            (
                "activation_checkpointing",
                fsdp.activation_checkpointing,
                "FSDP's activation checkpointing needs accelerate's FSDP plugin, which needs CUDA, "
                "and launch.cpu is true",
                "use model.gradient_checkpointing on CPU",
            ),
        ]
        for key, bad, message, help in unsupported:
            if bad:
                b.error(("launch", "fsdp", key), message, help)
        if launch.num_processes == 1:
            b.error(
                ("launch", "strategy"),
                "FSDP on CPU shards the model over the processes, and launch.num_processes is 1",
                'set launch.num_processes = 2 or more, or use strategy = "ddp"',
            )
        if recipe.peft is not None:
            b.error(
                ("launch", "strategy"),
                "PEFT with FSDP on CPU (torch's fully_shard) is not supported",
                'use strategy = "ddp": an adapter is small enough to replicate',
            )
    for table in ("ema", "merge"):
        if getattr(recipe, table) is not None:
            b.error(
                (table,),
                f"[{table}] keeps a full copy of the weights, which FSDP shards across processes; "
                "the two do not work together yet",
                'drop the table, or use launch.strategy = "ddp"',
            )


def _deepspeed_settings(b: _Builder, ds: DeepspeedTable) -> None:
    """`[launch.deepspeed]` as settings."""

    def add(key: str, value: Any, note: str | None = None) -> None:
        path = ("launch", "deepspeed", key)
        b.add(f"deepspeed_{key}", value, note or ".".join(path), b.origin(path))

    for k in ("zero_stage", "offload_optimizer", "offload_params"):
        add(k, getattr(ds, k))
    if ds.nvme_path is not None:
        add("nvme_path", ds.nvme_path)
    if ds.zero_stage == 3:
        unset = ds.zero3_save_16bit_model is None
        note = "launch.deepspeed.zero3_save_16bit_model (unset: true with stage 3)" if unset else None
        add("zero3_save_16bit_model", True if unset else ds.zero3_save_16bit_model, note)


def _data_segments(
    b: _Builder, recipe: Recipe, phases: list[dict[str, Any]] | None, max_steps: int | None
) -> list[dict[str, Any]] | None:
    """Stretches of the run that train on one mixture: the same sources with the same weights.

    Consecutive phases with the same mixture are merged. `last_step` is the step the segment
    ends before; None for the last one (the run's end). `weights` is None when no source
    sets one (every source's documents are used once).
    """
    sources = recipe.data.sources
    weighted = sources[0].weight is not None  # every source or none (checked by the schema)
    by_phase = [i for i, src in enumerate(sources) if src.phases is not None or src.phase_weights]
    if not by_phase:
        weights = [src.weight for src in sources] if weighted else None
        return [{"first_step": 0, "last_step": None, "sources": list(range(len(sources))), "weights": weights}]
    first = by_phase[0]
    key = "phases" if sources[first].phases is not None else "phase_weights"
    if max_steps is None:
        b.error(
            ("data", "sources", first, key),
            f"`{key}` needs the run's length in steps or tokens, not epochs",
        )
        return None
    if phases is None:
        return None
    names = [p["name"] for p in phases]
    for i, src in enumerate(sources):
        for key, listed in (("phases", src.phases or ()), ("phase_weights", src.phase_weights or {})):
            for name in listed:
                if name not in names:
                    b.error(
                        ("data", "sources", i, key),
                        f"no schedule phase is named {name!r}",
                        did_you_mean(name, names) or "the phases are " + ", ".join(f"{n!r}" for n in names),
                    )
                elif key == "phase_weights" and src.phases is not None and name not in src.phases:
                    b.error(
                        ("data", "sources", i, key),
                        f"this source trains only in {', '.join(map(repr, src.phases))}, not in {name!r}",
                    )
    if b.errors:
        return None
    segments: list[dict[str, Any]] = []
    for p in phases:
        name = p["name"]
        used = [i for i, src in enumerate(sources) if src.phases is None or name in src.phases]
        if not used:
            b.error(("data", "sources"), f"schedule phase {name!r} has no data source to train on")
            return None
        weights = [(sources[i].phase_weights or {}).get(name, sources[i].weight) for i in used] if weighted else None
        end = p["first_step"] + p["steps"]
        if segments and segments[-1]["sources"] == used and segments[-1]["weights"] == weights:
            segments[-1].update(last_step=end, phases=segments[-1]["phases"] + [name])
        else:
            segments.append(
                {"first_step": p["first_step"], "last_step": end, "sources": used, "weights": weights, "phases": [name]}
            )
    segments[-1]["last_step"] = None
    return segments


def _rewarm(b: _Builder, recipe: Recipe, parent: ParentRun, lr: float) -> float | None:
    """Where a continual run's warmup starts, as a multiplier of its own peak."""
    c = recipe.continual
    if "warmup_start_ratio" in recipe.schedule.model_fields_set:
        b.error(
            ("schedule", "warmup_start_ratio"),
            "with [continual] the warmup starts at continual.rewarm_from",
            'set continual.rewarm_from = 0.1 (a multiplier of the peak), or "parent" for the parent\'s LR',
        )
        return None
    if c.rewarm_from != "parent":
        return float(c.rewarm_from)
    ratio = parent.lr / lr
    if ratio > 1 + 1e-9:
        b.error(
            ("continual", "rewarm_from"),
            f"the parent's LR at step {parent.step} ({parent.lr:.6g}) is above this run's peak ({lr:.6g}): "
            "a rewarm from it would go down",
            "raise optim.lr, or set rewarm_from to a multiplier of the new peak",
        )
        return None
    return min(1.0, ratio)


def _continual_settings(b: _Builder, recipe: Recipe, parent: ParentRun) -> None:
    """The parent's identity and data, for lineage, replay and forgetting checks."""
    c = recipe.continual
    pr = parent.recipe
    b.section("continual")
    b.add("parent_dir", parent.run_dir, "continual.from", b.origin(("continual", "from")))
    b.derived("parent_step", parent.step, f"derived: the parent's optimizer steps at {parent.model_dir}")
    b.derived("parent_lock_sha256", parent.lock_sha256, "derived: sha256 of the parent's recipe.lock.json")
    b.derived("parent_lr", parent.lr, "derived: the LR the parent used at that step (its schedule.csv)")
    b.derived("parent_sources", source_dicts(pr.data.sources), "derived: the parent's data.sources (resolved.toml)")
    b.derived("parent_filters", filter_dicts(pr), "derived: the parent's data.filters (resolved.toml)")
    b.derived("parent_eval_fraction", pr.data.eval_fraction, "derived: the parent's data.eval_fraction")
    b.derived("parent_seed", pr.recipe.seed, "derived: the parent's recipe.seed (its held-out split)")
    b.key("replay", ("continual", "replay"))
    b.key("eval_parent", ("continual", "eval_parent"))
    b.key("load_optimizer", ("continual", "optimizer"))
    if c.optimizer and parent.kind != "checkpoint":
        b.error(
            ("continual", "optimizer"),
            "optimizer state is kept in checkpoints only; the parent's final model has none",
            'point continual.from at a checkpoint: "<run>/checkpoints/step_..."',
        )
    if pr.data.seq_len != recipe.data.seq_len and (c.replay or c.eval_parent):
        b.warn(
            ("data", "seq_len"),
            f"data.seq_len {recipe.data.seq_len} differs from the parent's {pr.data.seq_len}: "
            "replayed and parent-eval sequences use this run's",
        )


def _averaging_settings(b: _Builder, recipe: Recipe, max_steps: int | None, formulas: list[Formula]) -> None:
    """EMA decay scaled to the batch; the merge window in optimizer steps."""
    b.section("averaging")
    ema, merge = recipe.ema, recipe.merge
    if ema is not None:
        if ema.reference_batch is None:
            b.key("ema_decay", ("ema", "decay"))
        else:
            k = recipe.train.batch_size / ema.reference_batch
            b.derived(
                "ema_decay",
                ema.decay**k,
                f"derived: ema.decay {ema.decay} ** (batch_size {recipe.train.batch_size} / reference_batch {ema.reference_batch})",
            )
        b.key("ema_every", ("ema", "every"))
    if merge is not None:
        b.key("merge_every", ("merge", "every"))
        if isinstance(merge.window, float):
            if max_steps is None:
                b.key("merge_window", ("merge", "window"))
                formulas.append(
                    Formula(
                        "merge_first_step",
                        "max_steps - math.ceil(round(merge_window * max_steps, 6)) + 1",
                        "derived: the first step of the merge window (1-based)",
                    )
                )
                return
            window = ceil_product(merge.window, max_steps)
            note = f"derived: max_steps {max_steps} - ceil(merge.window {merge.window} * max_steps) + 1"
        else:
            window = merge.window
            note = f"derived: max_steps {max_steps} - merge.window {window} + 1"
        if max_steps is not None and window > max_steps:
            b.error(("merge", "window"), f"the merge window ({_steps(window)}) is longer than the run ({_steps(max_steps)})")
            return
        if max_steps is not None:
            first = max_steps - window + 1
            b.derived("merge_first_step", first, note)
            snapshots = max_steps // merge.every - (first - 1) // merge.every
            if snapshots == 0:
                b.error(
                    ("merge", "every"),
                    f"no step of the merge window (steps {first} to {max_steps}) is a multiple of merge.every {merge.every}",
                    "lengthen the window or take snapshots more often",
                )
            elif snapshots == 1:
                b.warn(
                    ("merge", "every"),
                    "the merge window holds 1 snapshot: nothing to average",
                    "lengthen the window or take snapshots more often",
                )


def _shorthand_note(recipe: Recipe) -> str:
    s = recipe.schedule
    parts = [f"schedule.warmup {s.warmup}", f"decay {s.decay!r}"]
    if s.decay == "wsd":
        parts.append(f"cooldown {s.cooldown} ({s.cooldown_shape})")
    return "derived: " + ", ".join(parts)


def _lay_out(
    b: _Builder, recipe: Recipe, spec: list[dict[str, Any]], max_steps: int, tokens_per_step: int
) -> list[dict[str, Any]] | None:
    """Phase lengths in steps, or None after recording why they do not fit the run."""
    s = recipe.schedule
    if s.phases is None:
        warmup = shorthand_warmup_steps(recipe, max_steps) or 0
        if warmup >= max_steps and s.decay != "constant":
            written = b.source.is_set(("schedule", "warmup"))
            b.error(
                ("schedule", "warmup") if written else _length_key(recipe),
                f"warmup ({_steps(warmup)}) is not shorter than the run ({_steps(max_steps)})",
                "shorten the warmup or lengthen the run; the decay needs at least one step"
                + ("" if written else " (the warmup is the default schedule.warmup = 0.03 of the run)"),
            )
            return None
    try:
        return runtime_schedule.layout(spec, max_steps, tokens_per_step)
    except runtime_schedule.ScheduleError as exc:
        b.error(error_key(recipe, spec, exc), str(exc))
        return None


def _check_lengths(b: _Builder, recipe: Recipe, max_steps: int, warmup_steps: int) -> None:
    t = recipe.train
    if max_steps >= 100 and warmup_steps and not 0.01 <= warmup_steps / max_steps <= 0.5:
        share = 100 * warmup_steps / max_steps
        where = ("schedule", "warmup") if recipe.schedule.phases is None else ("schedule", "phases", 0)
        b.warn(where, f"warmup is {share:.1f}% of the run ({warmup_steps} of {_steps(max_steps)})")
    if t.save_every > max_steps:
        b.warn(
            ("train", "save_every"),
            f"save_every {t.save_every} is longer than the run ({_steps(max_steps)}): only the final model is saved",
        )
    if t.eval_every > max_steps:
        b.warn(("train", "eval_every"), f"eval_every {t.eval_every} is longer than the run: evaluation runs at the end only")


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def _length_key(recipe: Recipe) -> KeyPath:
    """The [train] key that sets the run's length."""
    t = recipe.train
    return ("train", "max_steps" if t.max_steps is not None else "tokens" if t.tokens is not None else "epochs")


class _Builder:
    """Collects settings, errors and warnings in script order."""

    def __init__(self, recipe: Recipe, source: SourceMap) -> None:
        self.recipe = recipe
        self.source = source
        self.settings: list[Setting] = []
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self._section = ""

    def section(self, name: str) -> None:
        self._section = name

    def origin(self, path: KeyPath) -> str:
        return self.source.origin(path) or "default"

    def add(self, name: str, value: Any, note: str, origin: str) -> None:
        self.settings.append(Setting(name, value, note, self._section, origin))

    def key(self, name: str, path: KeyPath) -> None:
        value: Any = self.recipe
        for seg in path:
            value = getattr(value, seg)
        self.add(name, value, ".".join(path), self.origin(path))

    def derived(self, name: str, value: Any, note: str) -> None:
        self.add(name, value, note, "derived")

    def error(self, path: KeyPath, message: str, help: str | None = None) -> None:
        self.errors.append(Diagnostic("error", message, self.source.locate(path), help))

    def warn(self, path: KeyPath, message: str, help: str | None = None) -> None:
        self.warnings.append(Diagnostic("warning", message, self.source.locate(path), help))
