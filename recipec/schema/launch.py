"""`[launch]`: how `accelerate launch` starts the training, on one machine or several.

`num_processes` is the total over all machines (accelerate's meaning), so it is the world
size every batch derivation uses. `strategy` picks plain data parallelism (ddp), FSDP or
DeepSpeed ZeRO; the options of the last two live in their own sub-tables, `[launch.fsdp]`
and `[launch.deepspeed]`, each allowed only with its strategy. `[launch.parallelism]`
lays the processes out as a device mesh beyond data parallelism (tensor, context and
sequence parallelism, and replicated shard groups), in accelerate's `ParallelismConfig`
terms; the data-parallel sharding size is what is left of the world. The values that differ per
machine (`machine_rank`, `main_process_ip`) can be "env": the launch script then reads
them from the scheduler's environment (SLURM_NODEID or MACHINE_RANK, and MASTER_ADDR).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from .base import Table, key_error

FROM_ENV = "env"
"""The value of `machine_rank` and `main_process_ip` that defers them to the launch environment."""

HOST_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.:-]*$"
"""A host name, an IPv4 or an IPv6 address: letters, digits, `.`, `-` and `:`, nothing a shell would act on."""

CLASS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NVME_PATH = re.compile(r"^/[\w./+@:~-]*$")


class FsdpTable(Table):
    """`[launch.fsdp]`: Fully Sharded Data Parallel (with `strategy = "fsdp"`): accelerate's FSDP plugin on GPUs; on CPU the script shards with torch's `fully_shard` itself."""

    version: Literal[1, 2] = 2
    """FSDP version: 2 is torch's per-parameter sharding (`fully_shard`), 1 the older FlatParameter wrapper."""

    sharding_strategy: Literal["full_shard", "shard_grad_op", "hybrid_shard", "no_shard"] = "full_shard"
    """What is sharded: full_shard (parameters, gradients and optimizer state; ZeRO-3), shard_grad_op (gradients and optimizer state; ZeRO-2), hybrid_shard (full_shard within each machine, replicated across machines; needs num_machines > 1), no_shard (replicated, like DDP; version 1 only)."""

    auto_wrap_policy: Literal["transformer_layer", "size", "none"] = "transformer_layer"
    """Which modules become their own FSDP unit: every transformer layer (see transformer_layer_cls), every module above min_num_params parameters, or only the whole model."""

    transformer_layer_cls: list[str] | None = Field(None, min_length=1)
    """Class names of the layers to wrap with auto_wrap_policy "transformer_layer" (e.g. ["LlamaDecoderLayer"]). Unset: the model's own `_no_split_modules`."""

    min_num_params: int | None = Field(None, ge=1)
    """Parameter count above which a module is wrapped, with auto_wrap_policy "size". Unset: 100000000 (accelerate's default)."""

    cpu_offload: bool = False
    """Keep parameters and gradients in CPU memory between uses (slower, for models that do not fit)."""

    activation_checkpointing: bool = False
    """Recompute each wrapped layer's activations in the backward pass (FSDP's own; do not combine with model.gradient_checkpointing)."""

    state_dict_type: Literal["full", "sharded"] = "full"
    """How the model is saved: "full" gathers it whole on the main process (default); "sharded" writes one shard per process (faster and lighter for large models)."""

    @model_validator(mode="after")
    def check_options_match_their_setting(self) -> FsdpTable:
        if self.version == 2 and self.sharding_strategy == "no_shard":
            raise key_error(
                "sharding_strategy",
                "sharding_strategy no_shard has no FSDP 2 form: a replicated model is plain data parallelism",
                'use strategy = "ddp", or version = 1',
            )
        if self.min_num_params is not None and self.auto_wrap_policy != "size":
            raise key_error(
                "min_num_params",
                f'min_num_params is for auto_wrap_policy = "size", and auto_wrap_policy is "{self.auto_wrap_policy}"',
                'set auto_wrap_policy = "size", or remove min_num_params',
            )
        if self.transformer_layer_cls is not None:
            if self.auto_wrap_policy != "transformer_layer":
                raise key_error(
                    "transformer_layer_cls",
                    "transformer_layer_cls is for auto_wrap_policy = \"transformer_layer\", "
                    f'and auto_wrap_policy is "{self.auto_wrap_policy}"',
                    'set auto_wrap_policy = "transformer_layer", or remove transformer_layer_cls',
                )
            bad = [name for name in self.transformer_layer_cls if not CLASS_NAME.match(name)]
            if bad:
                raise key_error(
                    "transformer_layer_cls",
                    f"transformer_layer_cls holds {json.dumps(bad[0])}, which is not a Python class name",
                    'give the class names of the model\'s layers, e.g. ["LlamaDecoderLayer"]',
                )
        return self


class DeepspeedTable(Table):
    """`[launch.deepspeed]`: DeepSpeed ZeRO, through accelerate's DeepSpeed plugin (with `strategy = "deepspeed"`). The recipe's AdamW and LR schedule are used as they are: the generated DeepSpeed config holds no optimizer or scheduler of its own."""

    zero_stage: Literal[1, 2, 3] = 2
    """ZeRO stage: 1 shards the optimizer state, 2 also the gradients, 3 also the parameters."""

    offload_optimizer: Literal["none", "cpu", "nvme"] = "none"
    """Keep the optimizer state (and run the optimizer step) off the GPU: in CPU memory, or on NVMe (stage 3 only)."""

    offload_params: Literal["none", "cpu", "nvme"] = "none"
    """Keep the parameters off the GPU between uses (stage 3 only): in CPU memory or on NVMe."""

    nvme_path: str | None = None
    """Directory on a local NVMe drive for offload "nvme" (an absolute path on every machine)."""

    zero3_save_16bit_model: bool | None = None
    """Stage 3: gather the full 16-bit weights on the main process when saving (accelerate cannot save a stage-3 model whole without it). Unset: true with stage 3."""

    @model_validator(mode="after")
    def check_offload_matches_the_stage(self) -> DeepspeedTable:
        if self.offload_params != "none" and self.zero_stage < 3:
            raise key_error(
                "offload_params",
                f"offload_params needs ZeRO stage 3 (only stage 3 shards the parameters), and zero_stage is {self.zero_stage}",
                'set zero_stage = 3, or offload_params = "none"',
            )
        if self.offload_optimizer == "nvme" and self.zero_stage < 3:
            raise key_error(
                "offload_optimizer",
                f"optimizer offload to NVMe needs ZeRO stage 3, and zero_stage is {self.zero_stage}",
                'set zero_stage = 3, or offload_optimizer = "cpu"',
            )
        uses_nvme = "nvme" in (self.offload_optimizer, self.offload_params)
        if uses_nvme and self.nvme_path is None:
            key = "offload_optimizer" if self.offload_optimizer == "nvme" else "offload_params"
            raise key_error(key, "offload to NVMe needs `nvme_path`", 'add nvme_path = "/local_nvme" (a directory on the NVMe drive)')
        if self.nvme_path is not None:
            if not uses_nvme:
                raise key_error("nvme_path", 'nvme_path is only used with offload "nvme"', "remove it, or offload to nvme")
            if not NVME_PATH.match(self.nvme_path):
                raise key_error(
                    "nvme_path",
                    f"nvme_path must be an absolute path of letters, digits and ./_-+@:~, not {json.dumps(self.nvme_path)}",
                )
        if self.zero3_save_16bit_model is not None and self.zero_stage < 3:
            raise key_error(
                "zero3_save_16bit_model",
                f"zero3_save_16bit_model is for ZeRO stage 3, and zero_stage is {self.zero_stage}",
                "below stage 3 every process holds the whole model; remove the key",
            )
        return self


class ParallelismTable(Table):
    """`[launch.parallelism]`: the device mesh beyond data parallelism, in the terms of accelerate's `ParallelismConfig`. The processes left over, num_processes / (dp_replicate_size x tp_size x cp_size x sp_size), shard the model (dp_shard_size, derived)."""

    tp_size: int = Field(1, ge=1)
    """Tensor parallelism: processes that split every attention and MLP layer between them (heads and hidden columns), by the model's own tensor-parallel plan (its transformers config class's `base_model_tp_plan`; model types without one are an error). They see the same samples; the attention heads and KV heads must divide by tp_size."""

    cp_size: int = Field(1, ge=1)
    """Context parallelism (torch's ring attention, with strategy "fsdp" version 2): processes that split every sequence between them. They see the same samples; data.seq_len must be a multiple of 2 x cp_size."""

    sp_size: int = Field(1, ge=1)
    """Sequence parallelism (DeepSpeed's Ulysses/ALST, with strategy "deepspeed"): processes that split every sequence between them and exchange attention heads. They see the same samples. Takes text records in full seq_len blocks (data.packing), or examples: unpacked (every micro-batch padded to seq_len after the examples' tokens) or, with flash attention, packed; or preference pairs (each side a row of its own, padded to seq_len). seq_len must be a multiple of sp_size, and the attention heads divisible by sp_size."""

    dp_replicate_size: int = Field(1, ge=1)
    """Replicas of the sharded model (hybrid sharding, HSDP, with strategy "fsdp" version 2): each replica is sharded over dp_shard_size processes and sees its own samples."""

    @model_validator(mode="after")
    def check_sequence_splits_are_exclusive(self) -> ParallelismTable:
        if self.cp_size > 1 and self.sp_size > 1:
            raise key_error(
                "sp_size",
                f"cp_size {self.cp_size} and sp_size {self.sp_size} both split the sequence; accelerate takes one of them",
                'keep cp_size with strategy = "fsdp", or sp_size with strategy = "deepspeed"',
            )
        return self

    def model_parallel_size(self) -> int:
        """Processes that see the same samples: tp_size x cp_size x sp_size."""
        return self.tp_size * self.cp_size * self.sp_size


class LaunchTable(Table):
    """`[launch]`"""

    num_processes: int = Field(1, ge=1)
    """Training processes over all machines together (one per GPU); the world size. On CPU, more than one runs data-parallel over gloo."""

    num_machines: int = Field(1, ge=1)
    """Machines (nodes) the processes are spread over, num_processes / num_machines on each."""

    machine_rank: Annotated[int, Field(ge=0)] | Literal["env"] = 0
    """This machine's rank, 0 to num_machines - 1 (0 runs the rendezvous). "env": read at launch from SLURM_NODEID or MACHINE_RANK, so one build serves every machine."""

    main_process_ip: str | None = Field(None, max_length=253, json_schema_extra={"pattern": HOST_PATTERN})
    """Host name or IP address of the machine of rank 0; needed with num_machines > 1. "env": read at launch from MASTER_ADDR."""

    main_process_port: int = Field(29500, ge=1, le=65535)
    """Port of the rendezvous on the machine of rank 0."""

    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    """How the model is spread over the processes: ddp (a full replica on every process), fsdp (sharded, options in [launch.fsdp]; on CPU, torch's fully_shard over gloo) or deepspeed (ZeRO, options in [launch.deepspeed]; `pip install recipec[deepspeed]`; on a machine without a GPU DeepSpeed's CPU accelerator over gloo, with launch.cpu false)."""

    fsdp: FsdpTable | None = None
    """`[launch.fsdp]`: options of strategy "fsdp"; unset: their defaults."""

    deepspeed: DeepspeedTable | None = None
    """`[launch.deepspeed]`: options of strategy "deepspeed"; unset: their defaults."""

    parallelism: ParallelismTable | None = None
    """`[launch.parallelism]`: tensor, context and sequence parallelism and replicated shard groups; unset: data parallelism only (every process is a data-parallel rank)."""

    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision of the forward pass. bf16 needs a GPU (or CPU) that supports it; checked when the script starts."""

    cpu: bool = False
    """Train on the CPU even when a GPU is present."""

    tf32: bool = False
    """Let float32 matmuls and convolutions use TF32 tensor cores (NVIDIA Ampere and later): much faster, about 3 decimal digits of precision in the products. No effect on CPU."""

    hub_offline: bool = True
    """Set HF_HUB_OFFLINE=1 so that nothing is downloaded during training; models, tokenizers and hub datasets must be local or already cached (`validate` and `build` warn of a hub model, tokenizer or adapter the local cache lacks, or holds only part of). false allows downloads only when the recipe names a hub model, tokenizer or dataset (`data.sources.hub`): a recipe with nothing on the hub always runs offline."""

    collective_timeout_minutes: float | None = Field(None, gt=0)
    """How long a process waits in a collective of the processes' default group (a barrier, a broadcast, an all-reduce) before it gives up and the run fails. Unset: torch's default, 10 minutes under NCCL (GPUs) and 30 under gloo (CPU). The other processes wait in one while the main process builds the data stage's cache entry (tokenizing, filtering, deduplicating): raise it for a large corpus, or run `recipec data` before launching so that the entry is there. The groups a mesh or DeepSpeed builds on top keep torch's default."""

    device_memory_gib: float | None = Field(None, gt=0)
    """Memory of one device (GPU, or the CPU's share per process) in GiB. When set, `recipec explain`, `validate` and `build` warn if the estimated peak memory per device (parameters, gradients, optimizer state, activations, logits; see `recipec explain`) is above it. The estimate is approximate: no CUDA context, no fragmentation."""

    @model_validator(mode="before")
    @classmethod
    def check_env_is_spelt_right(cls, data: Any) -> Any:
        # a misspelt "env" would otherwise be reported as "not an integer"
        if isinstance(data, dict):
            rank = data.get("machine_rank")
            if isinstance(rank, str) and rank != FROM_ENV:
                raise key_error(
                    "machine_rank",
                    f'`launch.machine_rank` must be an integer or "env", not the string {json.dumps(rank)}',
                    'use the machine\'s rank (0 runs the rendezvous), or "env" to read it from SLURM_NODEID or MACHINE_RANK',
                )
        return data

    @model_validator(mode="after")
    def check_precision_on_cpu(self) -> LaunchTable:
        if self.cpu and self.mixed_precision == "fp16":
            raise key_error(
                "mixed_precision",
                "fp16 mixed precision needs a GPU, and launch.cpu is true",
                'use mixed_precision = "bf16" or "no" on CPU',
            )
        return self

    @model_validator(mode="after")
    def check_machines_ranks_and_rendezvous(self) -> LaunchTable:
        n, m = self.num_processes, self.num_machines
        if n % m:
            lower = max(m, n // m * m)
            raise key_error(
                "num_processes",
                f"launch.num_processes {n} is not a multiple of launch.num_machines {m}: num_processes is the total "
                "over all machines, and every machine runs the same number of processes",
                f"use num_processes = {lower} or {lower + m} ({m} machines x {lower // m} or {lower // m + 1} processes)",
            )
        if isinstance(self.machine_rank, int) and self.machine_rank >= m:
            raise key_error(
                "machine_rank",
                f"launch.machine_rank {self.machine_rank} is out of range: launch.num_machines is {m}, "
                f"so ranks go from 0 to {m - 1}",
                'use a rank below num_machines, or "env" to read it from SLURM_NODEID or MACHINE_RANK',
            )
        ip = self.main_process_ip
        if ip is not None and not re.match(HOST_PATTERN, ip):
            raise key_error(
                "main_process_ip",
                f"`launch.main_process_ip` must be a host name or an IP address (letters, digits, `.`, `-`, `:`), "
                f"not the string {json.dumps(ip)}",
                'give the host name or address of the machine of rank 0, or "env" to read it from MASTER_ADDR',
            )
        if ip is None and m > 1:
            raise key_error(
                "num_machines",
                f"launch.num_machines is {m}, and the machines need the address of the machine of rank 0",
                'add main_process_ip = "10.0.0.1" (its host name or IP address), '
                'or main_process_ip = "env" to read it from MASTER_ADDR',
            )
        return self

    @model_validator(mode="after")
    def check_strategy_tables_and_device(self) -> LaunchTable:
        for table in ("fsdp", "deepspeed"):
            if getattr(self, table) is not None and self.strategy != table:
                raise key_error(
                    table,
                    f'[launch.{table}] holds the options of strategy "{table}", and launch.strategy is "{self.strategy}"',
                    f'set strategy = "{table}", or remove [launch.{table}]',
                )
        self._check_the_mesh()
        if self.cpu and self.strategy == "deepspeed":
            raise key_error(
                "strategy",
                "DeepSpeed runs in processes that accelerate starts for it, and launch.cpu = true starts plain CPU "
                "processes instead (without a GPU DeepSpeed takes the CPU itself, over gloo)",
                'remove launch.cpu to run DeepSpeed on a machine without a GPU, or use strategy = "ddp"',
            )
        return self

    def _check_the_mesh(self) -> None:
        """`[launch.parallelism]` against the world size and the strategy."""
        mesh = self.parallelism
        if mesh is None:
            return
        n = self.num_processes
        fixed = mesh.dp_replicate_size * mesh.model_parallel_size()
        if n % fixed:
            sizes = " x ".join(
                f"{k} {getattr(mesh, k)}" for k in ("dp_replicate_size", "tp_size", "cp_size", "sp_size") if getattr(mesh, k) > 1
            )
            lower = max(fixed, n // fixed * fixed)
            raise key_error(
                "parallelism",
                f"launch.num_processes {n} is not a multiple of launch.parallelism's {sizes}{'' if sizes.endswith(f' {fixed}') else f' = {fixed}'}: "
                "the processes left over shard the model (dp_shard_size = num_processes / "
                "(dp_replicate_size x tp_size x cp_size x sp_size))",
                f"use num_processes = {lower} or {lower + fixed}, or change the sizes",
            )
        fsdp2 = self.strategy == "fsdp" and (self.fsdp is None or self.fsdp.version == 2)
        rules = [
            (
                "sp_size",
                mesh.sp_size > 1 and self.strategy != "deepspeed",
                f'sequence parallelism (sp_size {mesh.sp_size}) is DeepSpeed\'s (Ulysses/ALST), and launch.strategy is "{self.strategy}"',
                'set strategy = "deepspeed", or split the sequence with cp_size and strategy = "fsdp"',
            ),
            (
                "cp_size",
                mesh.cp_size > 1 and not fsdp2,
                f"context parallelism (cp_size {mesh.cp_size}) is torch's, which accelerate runs with FSDP 2 only, "
                f'and launch.strategy is "{self.strategy}"' + (" version 1" if self.strategy == "fsdp" else ""),
                'set strategy = "fsdp" (version 2), or with DeepSpeed split the sequence with sp_size',
            ),
            (
                "tp_size",
                mesh.tp_size > 1 and self.strategy == "deepspeed",
                f"tensor parallelism (tp_size {mesh.tp_size}) with DeepSpeed is not supported by accelerate",
                'use strategy = "fsdp" (tensor parallel inside, sharded across) or "ddp"',
            ),
            (
                "tp_size",
                mesh.tp_size > 1 and self.strategy == "fsdp" and not fsdp2,
                f"tensor parallelism (tp_size {mesh.tp_size}) composes with FSDP 2 (accelerate's device mesh), "
                "and launch.fsdp.version is 1",
                "set launch.fsdp.version = 2",
            ),
            (
                "dp_replicate_size",
                mesh.dp_replicate_size > 1 and not fsdp2,
                f"dp_replicate_size {mesh.dp_replicate_size} replicates a sharded model (HSDP), which is FSDP 2's, "
                f'and launch.strategy is "{self.strategy}"',
                'set strategy = "fsdp", or remove dp_replicate_size: with "ddp" every data-parallel rank is a replica',
            ),
            (
                "dp_replicate_size",
                mesh.dp_replicate_size > 1 and self.fsdp is not None and self.fsdp.sharding_strategy == "hybrid_shard",
                "launch.fsdp.sharding_strategy hybrid_shard replicates across machines already "
                "(dp_replicate_size = num_machines)",
                "remove dp_replicate_size, or use sharding_strategy = \"full_shard\" with it",
            ),
        ]
        for key, bad, message, help in rules:
            if bad:
                raise key_error(("parallelism", key), message, help)
        if self.strategy == "ddp" and mesh.tp_size > 1 and n > mesh.tp_size:
            raise key_error(
                ("parallelism", "tp_size"),
                f"tp_size {mesh.tp_size} over {n} processes leaves {n // mesh.tp_size} data-parallel replicas, and "
                "accelerate does not compose DDP with tensor parallelism",
                f'set strategy = "fsdp" to shard across the tensor-parallel groups, or tp_size = {n}',
            )
        if self.cpu and mesh.model_parallel_size() > 1:
            raise key_error(
                "parallelism",
                "accelerate takes a device mesh (tensor, context or sequence parallelism) on GPUs only: on the CPU "
                "its Accelerator rejects a ParallelismConfig (DistributedType MULTI_CPU), and launch.cpu is true",
                "remove [launch.parallelism] for the CPU run",
            )
