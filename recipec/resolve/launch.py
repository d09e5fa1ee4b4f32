"""Resolve `[launch]`: the launch shape, the strategy's options, and accelerate's config.

The settings are what the script reads (`num_processes`, `strategy`, `fsdp_*`,
`deepspeed_*`); `Launch` is what the launch files say in accelerate's own keys
(accelerate_config.yaml) and the machine layout (launch.sh, slurm.sbatch), derived here so
that render only renders.
"""

from __future__ import annotations

from typing import Any

from .. import model_types, tp_plans
from ..schema import DeepspeedTable, FsdpTable, LaunchTable, ParallelismTable
from ..schema.launch import FROM_ENV
from ..source import KeyPath
from .builder import PlanBuilder
from .model import hub_ids
from .plan import Launch

FSDP_MIN_NUM_PARAMS = 100_000_000
"""Parameters above which auto_wrap_policy "size" wraps a module when the recipe leaves it unset (accelerate's)."""


MESH_DIMS = ("dp_replicate_size", "dp_shard_size", "cp_size", "sp_size", "tp_size")
"""The mesh's dimensions in accelerate's order, outermost first: tensor-parallel ranks are neighbours (one machine)."""


def mesh_sizes(launch: LaunchTable) -> dict[str, int]:
    """The device mesh, by accelerate's names: {dp_replicate_size, dp_shard_size, cp_size, sp_size, tp_size}.

    The processes that `[launch.parallelism]` leaves over are data-parallel ranks: they
    shard the model (dp_shard_size) under FSDP and DeepSpeed, and are replicas
    (dp_replicate_size) under DDP. FSDP's hybrid_shard replicates across machines. The
    schema has checked that the sizes divide num_processes.
    """
    mesh = launch.parallelism or ParallelismTable()
    replicate = mesh.dp_replicate_size
    if launch.strategy == "fsdp" and launch.fsdp is not None and launch.fsdp.sharding_strategy == "hybrid_shard":
        replicate = launch.num_machines
    rest = launch.num_processes // (replicate * mesh.model_parallel_size())
    if launch.strategy == "ddp":
        replicate, rest = replicate * rest, 1
    return {
        "dp_replicate_size": replicate,
        "dp_shard_size": rest,
        "cp_size": mesh.cp_size,
        "sp_size": mesh.sp_size,
        "tp_size": mesh.tp_size,
    }


def data_parallel_size(launch: LaunchTable) -> int:
    """Data-parallel ranks: processes that see different samples (the ranks of one tensor, context or sequence group see the same)."""
    sizes = mesh_sizes(launch)
    return sizes["dp_replicate_size"] * sizes["dp_shard_size"]


def mesh_note(launch: LaunchTable) -> str:
    """How the data-parallel ranks follow from the processes: `num_processes 16 / (tp_size 8)`."""
    mesh = launch.parallelism
    split = [f"{k} {getattr(mesh, k)}" for k in ("tp_size", "cp_size", "sp_size") if mesh is not None and getattr(mesh, k) > 1]
    return f"num_processes {launch.num_processes} / ({' x '.join(split)})" if split else f"num_processes {launch.num_processes}"


MESH_ROLES = {
    "dp_replicate_size": "replicate the sharded model; each replica its own samples",
    "dp_shard_size": "shard parameters, gradients and optimizer state; each its own samples",
    "cp_size": "split every sequence (ring attention); the same samples",
    "sp_size": "split every sequence, exchange heads (Ulysses); the same samples",
    "tp_size": "split every layer's heads and MLP columns; the same samples",
}


def _ranks(group: list[int]) -> str:
    """`0-7`, `0,8` or `0,4,..,28`: a group of ranks, short."""
    step = group[1] - group[0]
    if step == 1:
        return f"{group[0]}-{group[-1]}"
    if len(group) <= 3:
        return ",".join(map(str, group))
    return f"{group[0]},{group[1]},..,{group[-1]}"


def draw_mesh(launch: LaunchTable) -> list[str]:
    """The device mesh in a few lines: its shape, then per dimension of more than one rank
    the first groups of ranks that run along it, and what they do.

    The ranks are laid out as accelerate lays out its mesh (dp_replicate, dp_shard, cp, sp,
    tp; tp innermost), so a tensor-parallel group is consecutive ranks, on one machine when
    tp_size divides the processes per machine.
    """
    sizes = mesh_sizes(launch)
    dims = [(k, sizes[k]) for k in MESH_DIMS if sizes[k] > 1]
    names = " x ".join(f"{k.removesuffix('_size')} {n}" for k, n in dims) or "1"
    lines = [f"{launch.num_processes} processes = {names}"]
    width = max((len(k) - 5 for k, _ in dims), default=0) + 4
    for i, (k, n) in enumerate(dims):
        stride = 1
        for _, inner in dims[i + 1 :]:
            stride *= inner
        groups = launch.num_processes // n
        # the g-th group: the ranks whose coordinates off this dimension are the g-th combination
        starts = [(g // stride) * stride * n + g % stride for g in range(min(groups, 2))]
        first = [[start + j * stride for j in range(n)] for start in starts]
        shown = "  ".join(_ranks(g) for g in first) + ("  .." if groups > 2 else "")
        role = MESH_ROLES[k]
        if k == "dp_replicate_size" and sizes["dp_shard_size"] == 1:
            role = "replicas of the whole model (DDP); each its own samples"
        if k == "dp_shard_size" and launch.strategy == "deepspeed":
            role = "ZeRO's data-parallel ranks; each its own samples"
        lines.append(f"  {k.removesuffix('_size'):<{width}}{groups} group{'s' if groups > 1 else ''} of {n}: {shown}  ({role})")
    return lines


def launch_settings(b: PlanBuilder) -> None:
    """The launch shape and the chosen strategy's options, the checks that span tables, and `Launch`."""
    recipe = b.recipe
    launch = recipe.launch
    b.section("launch")
    for k in ("num_processes", "num_machines", "machine_rank", "main_process_ip", "main_process_port", "strategy"):
        b.key(k, ("launch", k))
    if launch.collective_timeout_minutes is not None:
        b.key("collective_timeout_minutes", ("launch", "collective_timeout_minutes"))
    if launch.num_machines == 1:  # a warning, so that --set can scale a multi-machine recipe down to one
        for k in ("machine_rank", "main_process_ip"):
            if getattr(launch, k) == FROM_ENV:
                b.warn(("launch", k), f'launch.{k} = "env" has no effect on one machine (launch.num_machines is 1)')
    if launch.strategy == "fsdp":
        _fsdp_settings(b, launch.fsdp or FsdpTable())
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
    if launch.parallelism is not None:
        _mesh_settings(b, launch.parallelism)
    for k in ("mixed_precision", "cpu", "tf32"):
        b.key(k, ("launch", k))
    if launch.hub_offline or hub_ids(recipe):
        b.key("hub_offline", ("launch", "hub_offline"))
    else:  # nothing to download, so nothing may be: a local recipe never reaches the network
        b.derived("hub_offline", True, "derived: launch.hub_offline is false, but the recipe names nothing on the hub")
    b.launch = accelerate_launch(b)


def _model_type(b: PlanBuilder) -> tuple[str | None, KeyPath]:
    """The model's type (None for a hub model not in the local cache, whose config the build cannot read) and the key that names it."""
    r = b.recipe
    if r.model.init is not None:
        return r.model.init, ("model", "init")
    key: KeyPath = ("model", "path") if r.continual is None else ("continual", "from")
    return (b.model_config or {}).get("model_type"), key


def _config_value(b: PlanBuilder, name: str) -> tuple[Any, KeyPath]:
    """A key of the model's config ([model.config], the model type's default, or a local model's config.json) and where it comes from."""
    r = b.recipe
    if r.model.init is not None and r.model.init in model_types.model_types():
        stored = model_types.canonical(r.model.init, name)
        config = r.model.init_config()
        for key, value in config.items():
            if model_types.canonical(r.model.init, key) == stored:
                return value, ("model", "config", key)
        return model_types.model_types()[r.model.init]["keys"].get(stored), ("model", "init")
    _, key = _model_type(b)
    return (b.model_config or {}).get(name), key


def _mesh_settings(b: PlanBuilder, mesh: ParallelismTable) -> None:
    """`[launch.parallelism]` as settings, and its checks against the model, the data and the attention."""
    r = b.recipe
    sizes = mesh_sizes(r.launch)
    hybrid = r.launch.strategy == "fsdp" and r.launch.fsdp is not None and r.launch.fsdp.sharding_strategy == "hybrid_shard"
    for k in MESH_DIMS:
        if k == "dp_shard_size" or (k == "dp_replicate_size" and (r.launch.strategy == "ddp" or hybrid)):
            b.derived(
                k,
                sizes[k],
                f"derived: {mesh_note(r.launch)}"
                + (f" / dp_replicate_size {sizes['dp_replicate_size']}" if k == "dp_shard_size" and sizes["dp_replicate_size"] > 1 else "")
                + (" (ddp: every data-parallel rank is a replica)" if r.launch.strategy == "ddp" and k == "dp_replicate_size" else "")
                + (" (launch.fsdp.sharding_strategy hybrid_shard: one replica per machine)" if hybrid and k == "dp_replicate_size" else ""),
            )
        else:
            b.key(k, ("launch", "parallelism", k))

    tp = mesh.tp_size
    if tp > 1:
        model_type, where = _model_type(b)
        if model_type is not None and not tp_plans.has_plan(model_type):
            b.error(
                where,
                f"tensor parallelism (launch.parallelism.tp_size {tp}) splits the layers by the model's tensor-parallel "
                f'plan, and transformers has none for model type "{model_type}"',
                "use a model type with a plan (llama, qwen2, mistral, gemma, ...), or shard with strategy = \"fsdp\" and tp_size = 1",
            )
        for name in ("num_attention_heads", "num_key_value_heads"):
            heads, key = _config_value(b, name)
            if name == "num_key_value_heads" and heads is None:
                continue  # unset: as many as the attention heads
            if isinstance(heads, int) and heads % tp:
                b.error(
                    key if key[-1] != "init" else ("launch", "parallelism", "tp_size"),
                    f"the model's {name} {heads} is not divisible by launch.parallelism.tp_size {tp}: "
                    f"every tensor-parallel rank holds {name} / tp_size whole heads",
                    f"use a tp_size that divides {heads}",
                )
    cp = mesh.cp_size
    if cp > 1:
        seq_len = r.data.seq_len
        if seq_len % (2 * cp):
            lower = max(2 * cp, seq_len // (2 * cp) * (2 * cp))
            b.error(
                ("data", "seq_len"),
                f"data.seq_len {seq_len} is not a multiple of 2 x launch.parallelism.cp_size {cp} = {2 * cp}: "
                "context parallelism cuts every sequence into 2 x cp_size chunks, two per rank (one early, one late, "
                "to balance the causal attention's work)",
                f"use seq_len = {lower} or {lower + 2 * cp}",
            )
        # ring attention attends causally over the whole sequence: no mask, no position ids, no padding
        _whole_blocks(b, "context parallelism", "cp_size", cp, "which its ring attention cannot honour")
        if r.model.attention != "sdpa":
            b.error(
                ("model", "attention"),
                f'context parallelism replaces torch\'s scaled_dot_product_attention with ring attention, and model.attention is "{r.model.attention}"',
                'use attention = "sdpa"',
            )
    sp = mesh.sp_size
    if sp > 1:
        # DeepSpeed's Ulysses: each rank holds seq_len / sp_size tokens and, inside the attention, the whole
        # sequence for num_attention_heads / sp_size heads
        seq_len = r.data.seq_len
        if seq_len % sp:
            lower = max(sp, seq_len // sp * sp)
            b.error(
                ("data", "seq_len"),
                f"data.seq_len {seq_len} is not a multiple of launch.parallelism.sp_size {sp}: sequence parallelism "
                "cuts every sequence into sp_size equal slices, one per rank",
                f"use seq_len = {lower} or {lower + sp}",
            )
        heads, key = _config_value(b, "num_attention_heads")
        if isinstance(heads, int) and heads % sp:
            b.error(
                key if key[-1] != "init" else ("launch", "parallelism", "sp_size"),
                f"the model's num_attention_heads {heads} is not divisible by launch.parallelism.sp_size {sp}: "
                "inside the attention every sequence-parallel rank holds num_attention_heads / sp_size whole heads",
                f"use an sp_size that divides {heads}",
            )
        kv, key = _config_value(b, "num_key_value_heads")
        if isinstance(kv, int) and kv % sp and sp % kv:
            b.error(
                key if key[-1] != "init" else ("launch", "parallelism", "sp_size"),
                f"the model's num_key_value_heads {kv} and launch.parallelism.sp_size {sp} do not divide one another: "
                "Ulysses gives each rank num_key_value_heads / sp_size KV heads, or copies each KV head to "
                "sp_size / num_key_value_heads ranks",
                f"use an sp_size that divides {kv} or a multiple of it",
            )
        _sequence_parallel_data(b, sp)
        if r.model.attention not in ("sdpa", "flash_attention_2", "flash_attention_3"):
            b.error(
                ("model", "attention"),
                "sequence parallelism wraps the model's attention in Ulysses' exchange, which takes sdpa or flash "
                f'attention, and model.attention is "{r.model.attention}"',
                'use attention = "sdpa"',
            )
    for table in ("ema", "merge"):
        if getattr(r, table) is not None and mesh.model_parallel_size() > 1:
            b.error(
                (table,),
                f"[{table}] keeps a full copy of the weights, which tensor, context and sequence parallelism split "
                "across processes; the two do not work together yet",
                "drop the table, or remove [launch.parallelism]",
            )
    if r.peft is not None and tp > 1:
        b.error(("peft",), "PEFT adapters with tensor parallelism are not supported", "remove [peft], or tp_size = 1")


def _fsdp_settings(b: PlanBuilder, fsdp: FsdpTable) -> None:
    """`[launch.fsdp]` as settings, and its checks against the machines, the model and the device."""
    recipe = b.recipe
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


def _deepspeed_settings(b: PlanBuilder, ds: DeepspeedTable) -> None:
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


def _sequence_parallel_data(b: PlanBuilder, sp: int) -> None:
    """What Ulysses can split. Its attention drops the attention mask and attends causally over the
    gathered sequence (with flash attention, within the segments its position ids mark): text in
    full seq_len blocks, and examples padded after their tokens; packed examples only with flash
    attention; preference pairs with each side a row of its own, padded to seq_len (KTO: each
    example, and each prompt with another example's completion)."""
    r = b.recipe
    multiple = r.data.pad_to_multiple_of
    if multiple is not None and multiple != r.data.seq_len:
        b.error(
            ("data", "pad_to_multiple_of"),
            f"sequence parallelism (launch.parallelism.sp_size {sp}) pads every row to data.seq_len {r.data.seq_len} (the ranks "
            f"of an sp group hand Ulysses one shape), so pad_to_multiple_of {multiple} would change nothing",
            f"remove pad_to_multiple_of, or set it to seq_len ({r.data.seq_len})",
        )
    if r.preference is not None:
        longest = r.data.max_length or r.data.seq_len
        if r.preference.objective == "kto" and 2 * longest > r.data.seq_len:
            b.error(
                ("data", "max_length"),
                f"sequence parallelism (launch.parallelism.sp_size {sp}) pads every row to data.seq_len {r.data.seq_len}, and "
                "KTO's KL estimate scores each prompt with another example's completion, up to twice max_length "
                f"{longest} tokens",
                f"set max_length = {r.data.seq_len // 2} or less, or raise seq_len",
            )
        elif longest > r.data.seq_len:
            b.error(
                ("data", "max_length"),
                f"sequence parallelism (launch.parallelism.sp_size {sp}) pads each side of a pair to data.seq_len "
                f"{r.data.seq_len} (the ranks of an sp group hand Ulysses one shape), and max_length {longest} is longer",
                f"set max_length = {r.data.seq_len} or less, or raise seq_len",
            )
    elif b.get("examples"):
        longest = r.data.max_length or r.data.seq_len
        if not r.data.packing and longest > r.data.seq_len:
            b.error(
                ("data", "max_length"),
                f"sequence parallelism (launch.parallelism.sp_size {sp}) pads every micro-batch of examples to data.seq_len "
                f"{r.data.seq_len} (the ranks of an sp group hand Ulysses one shape), and max_length {longest} is longer",
                f"set max_length = {r.data.seq_len} or less, or raise seq_len",
            )
        if r.data.packing and r.model.attention not in ("flash_attention_2", "flash_attention_3"):
            b.error(
                ("data", "packing"),
                f"sequence parallelism (launch.parallelism.sp_size {sp}) with packed examples: Ulysses keeps them apart by "
                f'their position ids only with flash attention, and model.attention is "{r.model.attention}", which would '
                "attend across the examples of a row",
                'set data.packing = false (each example padded after its tokens), or model.attention = "flash_attention_2"',
            )
    elif not r.data.packing:
        b.error(
            ("data", "packing"),
            f"sequence parallelism (launch.parallelism.sp_size {sp}) needs full seq_len blocks, and data.packing false pads "
            "each document with an attention mask, which Ulysses' attention drops",
            "set data.packing = true",
        )


def _whole_blocks(b: PlanBuilder, name: str, key: str, size: int, lost: str) -> None:
    """Context and sequence parallelism attend causally over whole sequences, with no mask: text in full
    seq_len blocks only. `lost` says what becomes of a mask under the split."""
    if b.get("examples") or b.recipe.preference is not None:
        b.error(
            ("data", "packing"),
            f"{name} (launch.parallelism.{key} {size}) attends causally over whole sequences, and examples are kept "
            f"apart by attention masks and position ids (packed) or padded with masks (unpacked), {lost}",
            f"train on text records (full seq_len blocks), or set {key} = 1",
        )
    elif not b.recipe.data.packing:
        b.error(
            ("data", "packing"),
            f"{name} (launch.parallelism.{key} {size}) needs full seq_len blocks, and data.packing false pads each "
            f"document with an attention mask, {lost}",
            "set data.packing = true",
        )
    elif not b.recipe.data.cross_document_attention:
        b.error(
            ("data", "cross_document_attention"),
            f"{name} (launch.parallelism.{key} {size}) attends causally over whole sequences, and "
            f"cross_document_attention = false keeps each document to itself by position ids, {lost}",
            f"remove cross_document_attention (attention across the documents of a sequence), or set {key} = 1",
        )

FSDP_SHARDING = {
    "full_shard": "FULL_SHARD",
    "shard_grad_op": "SHARD_GRAD_OP",
    "hybrid_shard": "HYBRID_SHARD",
    "no_shard": "NO_SHARD",
}
FSDP_WRAP = {"transformer_layer": "TRANSFORMER_BASED_WRAP", "size": "SIZE_BASED_WRAP", "none": "NO_WRAP"}
FSDP_STATE_DICT = {"full": "FULL_STATE_DICT", "sharded": "SHARDED_STATE_DICT"}


def distributed_type(b: PlanBuilder) -> str:
    """accelerate's `distributed_type` for the recipe's strategy and process count.

    More than one process with `launch.cpu` stays MULTI_GPU with `use_cpu: true`, which
    accelerate turns into a gloo process group on the CPU (DDP). accelerate's FSDP plugin
    needs CUDA, so FSDP on the CPU is launched the same way and the script shards the model
    itself with torch's `fully_shard` (`fsdp_native`).
    """
    strategy = b["strategy"]
    if strategy == "fsdp" and not b["cpu"]:
        return "FSDP"
    if strategy == "deepspeed":
        return "DEEPSPEED"
    return "MULTI_GPU" if b["num_processes"] > 1 else "NO"


def fsdp_config(b: PlanBuilder) -> list[tuple[str, Any]]:
    """accelerate's `fsdp_config` entries (its own key names, sorted as accelerate writes them).

    FSDP 2 expresses the sharding strategy as `fsdp_reshard_after_forward` (true: full
    shard, false: shard grad/op) and hybrid sharding through `parallelism_config`;
    FSDP 1 takes the strategy by name. The weights are loaded by the main process only and
    sent to the others (`fsdp_cpu_ram_efficient_loading`).
    """
    version = b["fsdp_version"]
    sharding = b["fsdp_sharding_strategy"]
    policy = b["fsdp_auto_wrap_policy"]
    entries: dict[str, Any] = {
        "fsdp_activation_checkpointing": b["fsdp_activation_checkpointing"],
        "fsdp_auto_wrap_policy": FSDP_WRAP[policy],
        "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_offload_params": b["fsdp_cpu_offload"],
        "fsdp_state_dict_type": FSDP_STATE_DICT[b["fsdp_state_dict_type"]],
        "fsdp_version": version,
    }
    if policy == "size":
        entries["fsdp_min_num_params"] = b["fsdp_min_num_params"]
    if policy == "transformer_layer" and b["fsdp_transformer_layer_cls"] is not None:
        entries["fsdp_transformer_layer_cls_to_wrap"] = ",".join(b["fsdp_transformer_layer_cls"])
    if version == 2:
        entries["fsdp_reshard_after_forward"] = sharding != "shard_grad_op"
    else:
        entries.update(
            {
                "fsdp_backward_prefetch": "BACKWARD_PRE",
                "fsdp_forward_prefetch": False,
                "fsdp_sharding_strategy": FSDP_SHARDING[sharding],
                "fsdp_sync_module_states": True,
                "fsdp_use_orig_params": True,
            }
        )
    return sorted(entries.items())


def parallelism_config(b: PlanBuilder) -> list[tuple[str, Any]]:
    """accelerate's `parallelism_config` entries (its own key names, sorted): the device mesh
    of `[launch.parallelism]` and FSDP 2's hybrid sharding; empty for data parallelism alone.

    accelerate's launcher turns them into PARALLELISM_CONFIG_* variables, from which the
    training processes' Accelerator builds its `ParallelismConfig` and device mesh. DeepSpeed
    builds its own sequence-parallel groups: `sp_size` and its options only.
    """
    launch = b.recipe.launch
    hybrid = b["strategy"] == "fsdp" and b["fsdp_version"] == 2 and b["fsdp_sharding_strategy"] == "hybrid_shard"
    if not hybrid and not _has_mesh(launch):
        return []
    sizes = mesh_sizes(launch)
    entries: dict[str, Any] = {f"parallelism_config_{k}": v for k, v in sizes.items() if k != "sp_size"}
    if sizes["sp_size"] > 1:
        entries.update(
            {
                "parallelism_config_sp_size": sizes["sp_size"],
                "parallelism_config_sp_backend": "deepspeed",
                "parallelism_config_sp_seq_length_is_variable": True,
                "parallelism_config_sp_attn_implementation": b["attention"],
            }
        )
    return sorted(entries.items())


def deepspeed_config(b: PlanBuilder) -> list[tuple[str, Any]]:
    """accelerate's `deepspeed_config` entries (its own key names, sorted).

    No optimizer, no scheduler and no `deepspeed_config_file`: DeepSpeed then wraps the
    recipe's own AdamW and the script steps the recipe's schedule. Gradient accumulation and
    clipping are the recipe's (accelerate would otherwise fill clipping in as 1.0).
    """
    stage = b["deepspeed_zero_stage"]
    entries: dict[str, Any] = {
        "gradient_accumulation_steps": b["grad_accum_steps"],
        "gradient_clipping": float(b["grad_clip"]),
        "offload_optimizer_device": b["deepspeed_offload_optimizer"],
        "offload_param_device": b["deepspeed_offload_params"],
        "zero3_init_flag": stage == 3,
        "zero_stage": stage,
    }
    if b["deepspeed_offload_optimizer"] == "nvme":
        entries["offload_optimizer_nvme_path"] = b["deepspeed_nvme_path"]
    if b["deepspeed_offload_params"] == "nvme":
        entries["offload_param_nvme_path"] = b["deepspeed_nvme_path"]
    if stage == 3:
        entries["zero3_save_16bit_model"] = b["deepspeed_zero3_save_16bit_model"]
    if b["num_machines"] > 1:  # one `accelerate launch` per machine (torchrun), not a pdsh hostfile
        entries["deepspeed_multinode_launcher"] = "standard"
    return sorted(entries.items())


def nvme_environment(b: PlanBuilder) -> list[tuple[str, str]]:
    """Environment variables for DeepSpeed's NVMe offload path, set by launch.sh and slurm.sbatch.

    accelerate (1.15) reads `offload_*_nvme_path` from its config but does not pass them on
    to the training processes; DeepSpeed's plugin reads them from these variables instead.
    """
    if b["strategy"] != "deepspeed":
        return []
    names = {
        "deepspeed_offload_optimizer": "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_NVME_PATH",
        "deepspeed_offload_params": "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_NVME_PATH",
    }
    return [(var, b["deepspeed_nvme_path"]) for key, var in names.items() if b[key] == "nvme"]


def _has_mesh(launch: LaunchTable) -> bool:
    """Whether `[launch.parallelism]` asks for more than data parallelism (an empty table does not)."""
    mesh = launch.parallelism
    return mesh is not None and (mesh.model_parallel_size() > 1 or mesh.dp_replicate_size > 1)


def accelerate_launch(b: PlanBuilder) -> Launch:
    """What accelerate_config.yaml, launch.sh, slurm.sbatch and the script need beyond the settings."""
    machines = b["num_machines"]
    rank, ip = b["machine_rank"], b["main_process_ip"]
    kind = distributed_type(b)
    return Launch(
        distributed_type=kind,
        fsdp_native=b["strategy"] == "fsdp" and b["cpu"],
        fsdp_config=tuple(fsdp_config(b)) if kind == "FSDP" else (),
        deepspeed_config=tuple(deepspeed_config(b)) if b["strategy"] == "deepspeed" else (),
        parallelism_config=tuple(parallelism_config(b)),
        nvme_environment=tuple(nvme_environment(b)),
        mesh=tuple(draw_mesh(b.recipe.launch)) if _has_mesh(b.recipe.launch) else (),
        tensor_parallel=b.get("tp_size", 1) > 1,
        context_parallel=b.get("cp_size", 1) > 1,
        sequence_parallel=b.get("sp_size", 1) > 1,
        num_machines=machines,
        last_machine_rank=machines - 1,
        gpus_per_machine=None if b["cpu"] else b["num_processes"] // machines,
        processes_per_machine=b["num_processes"] // machines,
        machine_rank=0 if rank == FROM_ENV else rank,
        rank_from_env=rank == FROM_ENV and machines > 1,
        main_process_ip=None if ip == FROM_ENV else ip,
        ip_from_env=ip == FROM_ENV and machines > 1,
        main_process_port=b["main_process_port"],
    )
