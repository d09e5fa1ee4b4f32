"""The Plan: everything render needs, resolved and checked.

A Plan is an ordered list of settings, each a variable of the generated script's config
block with its value and a note naming the recipe key or the derivation; the formulas the
script computes once the data is loaded; and how the run is launched, in the words of the
files that launch it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..diagnostics import Diagnostic
from ..memory import MemoryEstimate
from ..schema import Recipe


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
class Launch:
    """How the run is launched, beyond the settings: accelerate's own config keys
    (accelerate_config.yaml), the machines (launch.sh, slurm.sbatch), and whether the
    script shards the model itself (train.py)."""

    distributed_type: str
    """accelerate's `distributed_type`: NO, MULTI_GPU, FSDP or DEEPSPEED."""
    fsdp_native: bool
    """FSDP on the CPU: the script shards with torch's fully_shard (accelerate's FSDP plugin needs CUDA)."""
    fsdp_config: tuple[tuple[str, Any], ...]
    """accelerate's `fsdp_config` entries, sorted; empty unless accelerate runs FSDP."""
    deepspeed_config: tuple[tuple[str, Any], ...]
    """accelerate's `deepspeed_config` entries, sorted; empty unless the strategy is deepspeed."""
    parallelism_config: tuple[tuple[str, Any], ...]
    """accelerate's `parallelism_config` entries (FSDP 2's hybrid sharding); empty otherwise."""
    nvme_environment: tuple[tuple[str, str], ...]
    """Environment variables for DeepSpeed's NVMe offload paths, set by launch.sh and slurm.sbatch."""
    mesh: tuple[str, ...]
    """`[launch.parallelism]`'s device mesh drawn in a few lines (which ranks shard, replicate, split heads or the sequence); empty without one."""
    tensor_parallel: bool
    """tp_size > 1: the script loads the model split by its tensor-parallel plan."""
    context_parallel: bool
    """cp_size > 1: the script runs each forward and backward inside accelerate's context-parallel context."""
    sequence_parallel: bool
    """sp_size > 1: the script feeds DeepSpeed's Ulysses attention through its loader adapter and sums the loss over the sp group."""
    num_machines: int
    last_machine_rank: int
    gpus_per_machine: int | None
    """None on the CPU."""
    processes_per_machine: int
    machine_rank: int
    """0 when the rank comes from the environment."""
    rank_from_env: bool
    """launch.machine_rank "env" on more than one machine: launch.sh reads MACHINE_RANK or SLURM's."""
    main_process_ip: str | None
    """None when it comes from the environment."""
    ip_from_env: bool
    main_process_port: int


class Settings:
    """Looking a setting up by its name, for a class that holds `settings` in script order."""

    settings: Sequence[Setting]

    def __getitem__(self, name: str) -> Any:
        for s in self.settings:
            if s.name == name:
                return s.value
        raise KeyError(name)

    def get(self, name: str, default: Any = None) -> Any:
        """The setting's value, or `default` when there is no such setting (yet)."""
        try:
            return self[name]
        except KeyError:
            return default


@dataclass(frozen=True)
class Plan(Settings):
    """Everything render needs, resolved and checked."""

    recipe: Recipe
    recipe_file: str
    build_dir: str
    project_dir: str
    """The project directory as seen from the build directory (relative where possible)."""
    overrides: tuple[str, ...]
    settings: tuple[Setting, ...]
    formulas: tuple[Formula, ...]
    launch: Launch
    warnings: tuple[Diagnostic, ...] = field(default=())
    version: str = __version__
    memory: MemoryEstimate | None = None
    """Estimated peak memory per device (recipec/memory.py), for `explain`; None when unknown."""
    memory_unknown: str | None = None
    """Why there is no memory estimate."""
    model_config_source: str | None = None
    """Where the pretrained model's config.json was read at build time: a local file, or a hub id at a
    commit of the local cache; None when none was (a from-scratch model, a hub model not in the cache)."""

    @property
    def name(self) -> str:
        return self.recipe.recipe.name

    @property
    def launch_command(self) -> str:
        """The exact command that starts training, from the project directory."""
        build = self.build_dir.rstrip("/")
        return f"accelerate launch --config_file {build}/accelerate_config.yaml {build}/train.py"
