"""`[launch]`: how `accelerate launch` starts the training, on one machine or several.

`num_processes` is the total over all machines (accelerate's meaning), so it is the world
size every batch derivation uses. `strategy` picks plain data parallelism (ddp), FSDP or
DeepSpeed ZeRO; the options of the last two live in their own sub-tables, `[launch.fsdp]`
and `[launch.deepspeed]`, each allowed only with its strategy. The values that differ per
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
    """How the model is spread over the processes: ddp (a full replica on every process), fsdp (sharded, options in [launch.fsdp]; on CPU, torch's fully_shard over gloo) or deepspeed (ZeRO, options in [launch.deepspeed]; needs CUDA)."""

    fsdp: FsdpTable | None = None
    """`[launch.fsdp]`: options of strategy "fsdp"; unset: their defaults."""

    deepspeed: DeepspeedTable | None = None
    """`[launch.deepspeed]`: options of strategy "deepspeed"; unset: their defaults."""

    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision of the forward pass. bf16 needs a GPU (or CPU) that supports it; checked when the script starts."""

    cpu: bool = False
    """Train on the CPU even when a GPU is present."""

    tf32: bool = False
    """Let float32 matmuls and convolutions use TF32 tensor cores (NVIDIA Ampere and later): much faster, about 3 decimal digits of precision in the products. No effect on CPU."""

    hub_offline: bool = True
    """Set HF_HUB_OFFLINE=1 so that nothing is downloaded during training; models, tokenizers and hub datasets must be local or already cached. false allows downloads only when the recipe names a hub model, tokenizer or dataset (`data.sources.hub`): a recipe with nothing on the hub always runs offline."""

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
        if self.cpu and self.strategy == "deepspeed":
            raise key_error(
                "strategy",
                "DeepSpeed needs CUDA GPUs, and launch.cpu is true",
                'use strategy = "ddp" on CPU',
            )
        return self
