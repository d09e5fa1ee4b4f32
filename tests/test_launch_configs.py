"""[launch]: the accelerate config, launch.sh and slurm.sbatch for every launch shape.

Each case in CASES is built from the minimal recipe; its accelerate_config.yaml, launch.sh
and (with more than one machine) slurm.sbatch are compared with tests/golden/launch/<case>/
(regenerate with `pytest tests/test_launch_configs.py --update-golden` and read the diff).

accelerate is the judge of the configs, without a GPU: in a subprocess (accelerate imports
torch), each config is loaded with accelerate's ClusterConfig; the command lines that
launch.sh and slurm.sbatch really run (captured by a stand-in `accelerate` on PATH, with
stand-ins for `srun` and `scontrol`) go through accelerate's own argument parser, its
merging of the config file, and the function that prepares the training processes'
environment; the FSDP and DeepSpeed plugins and the parallelism config are then built from
that environment, as the training processes build them. What needs CUDA (an Accelerator
with these plugins, FSDP 1's sync_module_states, DeepSpeed's engine) is not run here.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from conftest import _recipe_text, free_port
from recipec.cli import main
from recipec.compiler import build
from recipec.diagnostics import RecipeError
from recipec.render import render, shell_word

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden" / "launch"
REGENERATE = "pytest tests/test_launch_configs.py --update-golden"
COMPARED = ("accelerate_config.yaml", "launch.sh", "slurm.sbatch")

CASES: dict[str, dict[str, Any]] = {
    "ddp-1-cpu": {"launch": {"cpu": True}},
    "ddp-2-cpu": {"launch": {"num_processes": 2, "cpu": True}},
    "fsdp-v2": {"launch": {"num_processes": 4, "strategy": "fsdp", "mixed_precision": "bf16"}, "train": {"batch_size": 32}},
    "fsdp-v1": {
        "launch": {
            "num_processes": 4,
            "strategy": "fsdp",
            "mixed_precision": "fp16",
            "fsdp": {"version": 1, "sharding_strategy": "shard_grad_op", "transformer_layer_cls": ["LlamaDecoderLayer"]},
        },
        "train": {"batch_size": 32},
    },
    "fsdp-size-offload": {
        "launch": {
            "num_processes": 2,
            "strategy": "fsdp",
            "fsdp": {
                "auto_wrap_policy": "size",
                "min_num_params": 1_000_000,
                "cpu_offload": True,
                "activation_checkpointing": True,
                "state_dict_type": "sharded",
            },
        },
    },
    "fsdp-cpu": {"launch": {"num_processes": 2, "strategy": "fsdp", "cpu": True}},
    "deepspeed-2": {"launch": {"num_processes": 4, "strategy": "deepspeed", "mixed_precision": "bf16"}, "train": {"batch_size": 64}},
    "deepspeed-3-offload": {
        "launch": {
            "num_processes": 2,
            "strategy": "deepspeed",
            "deepspeed": {"zero_stage": 3, "offload_optimizer": "cpu", "offload_params": "cpu"},
        },
        "optim": {"grad_clip": 0.0},
    },
    "deepspeed-3-nvme": {
        "launch": {
            "num_processes": 2,
            "strategy": "deepspeed",
            "deepspeed": {
                "zero_stage": 3,
                "offload_optimizer": "nvme",
                "offload_params": "nvme",
                "nvme_path": "/local_nvme",
                "zero3_save_16bit_model": False,
            },
        },
    },
    "multinode-ip": {
        "launch": {"num_processes": 16, "num_machines": 2, "machine_rank": 1, "main_process_ip": "10.0.0.1", "mixed_precision": "bf16"},
        "train": {"batch_size": 128},
    },
    "multinode-env": {
        "launch": {"num_processes": 16, "num_machines": 2, "machine_rank": "env", "main_process_ip": "env", "main_process_port": 29600},
        "train": {"batch_size": 128},
    },
    "multinode-fsdp-hybrid": {
        "launch": {
            "num_processes": 8,
            "num_machines": 2,
            "machine_rank": "env",
            "main_process_ip": "env",
            "strategy": "fsdp",
            "fsdp": {"sharding_strategy": "hybrid_shard"},
        },
        "train": {"batch_size": 64},
    },
    "multinode-deepspeed": {
        "launch": {
            "num_processes": 8,
            "num_machines": 2,
            "machine_rank": "env",
            "main_process_ip": "node-0.cluster",
            "strategy": "deepspeed",
            "deepspeed": {"zero_stage": 3},
        },
        "train": {"batch_size": 64},
    },
    # [launch.parallelism]: the device mesh (tensor, context and sequence parallelism)
    "mesh-tp8-fsdp-2-machines": {
        "launch": {
            "num_processes": 16,
            "num_machines": 2,
            "machine_rank": "env",
            "main_process_ip": "env",
            "strategy": "fsdp",
            "mixed_precision": "bf16",
            "parallelism": {"tp_size": 8},
        },
        "model": {"config": {"num_attention_heads": 8}},
        "train": {"batch_size": 16},
    },
    "mesh-cp8-full-shard": {
        "launch": {"num_processes": 8, "strategy": "fsdp", "mixed_precision": "bf16", "parallelism": {"cp_size": 8}},
        "train": {"micro_batch_size": 2, "batch_size": 8},
    },
    "mesh-tp2": {
        "launch": {"num_processes": 2, "mixed_precision": "bf16", "parallelism": {"tp_size": 2}},
    },
    # the sequence split over ZeRO-3 is DeepSpeed's (Ulysses); accelerate's context parallelism is FSDP 2's
    "mesh-sp8-zero3": {
        "launch": {
            "num_processes": 8,
            "strategy": "deepspeed",
            "deepspeed": {"zero_stage": 3},
            "mixed_precision": "bf16",
            "parallelism": {"sp_size": 8},
        },
        "model": {"config": {"num_attention_heads": 8}},
        "train": {"micro_batch_size": 1, "batch_size": 1},
    },
}

# What accelerate must read back from each config: (distributed_type, num_processes, num_machines, use_cpu)
SHAPES = {
    "ddp-1-cpu": ("NO", 1, 1, True),
    "ddp-2-cpu": ("MULTI_GPU", 2, 1, True),
    "fsdp-v2": ("FSDP", 4, 1, False),
    "fsdp-v1": ("FSDP", 4, 1, False),
    "fsdp-size-offload": ("FSDP", 2, 1, False),
    "fsdp-cpu": ("MULTI_GPU", 2, 1, True),  # accelerate's FSDP needs CUDA: the script shards with fully_shard
    "deepspeed-2": ("DEEPSPEED", 4, 1, False),
    "deepspeed-3-offload": ("DEEPSPEED", 2, 1, False),
    "deepspeed-3-nvme": ("DEEPSPEED", 2, 1, False),
    "multinode-ip": ("MULTI_GPU", 16, 2, False),
    "multinode-env": ("MULTI_GPU", 16, 2, False),
    "multinode-fsdp-hybrid": ("FSDP", 8, 2, False),
    "multinode-deepspeed": ("DEEPSPEED", 8, 2, False),
    "mesh-tp8-fsdp-2-machines": ("FSDP", 16, 2, False),
    "mesh-cp8-full-shard": ("FSDP", 8, 1, False),
    "mesh-tp2": ("MULTI_GPU", 2, 1, False),
    "mesh-sp8-zero3": ("DEEPSPEED", 8, 1, False),
}

# launch.sh's environment in each case: what SLURM (or the user) provides on the machine of rank 1
LAUNCH_ENV = {
    "multinode-env": {"SLURM_NODEID": "1", "MASTER_ADDR": "node-0"},
    "multinode-fsdp-hybrid": {"MACHINE_RANK": "1", "MASTER_ADDR": "node-0"},
    "multinode-deepspeed": {"SLURM_NODEID": "1"},
    "mesh-tp8-fsdp-2-machines": {"SLURM_NODEID": "1", "MASTER_ADDR": "node-0"},
}

STUBS = {
    # records its argument vector and the ACCELERATE_* environment, one file per call, NUL-separated
    "accelerate": textwrap.dedent(
        """\
        printf "%s\\0" "$@" > "$ARGV_DIR/call-${SLURM_NODEID:-none}"
        env -0 | { grep -z '^ACCELERATE_' || true; } > "$ARGV_DIR/env-${SLURM_NODEID:-none}"
        """
    ),
    # runs the task once per node, in turn, as SLURM would on every node at once
    "srun": textwrap.dedent(
        """\
        printf "%s\\n" "$@" > "$ARGV_DIR/srun-options"
        while [[ "$1" == --* ]]; do shift; done
        for ((node = 0; node < SLURM_JOB_NUM_NODES; node++)); do
            SLURM_NODEID=$node "$@"
        done
        """
    ),
    "scontrol": textwrap.dedent(
        """\
        [[ "$1 $2 $3" == "show hostnames $SLURM_JOB_NODELIST" ]] || exit 3
        for ((node = 0; node < SLURM_JOB_NUM_NODES; node++)); do echo "node-$node"; done
        """
    ),
}


# -- the builds -----------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run recipec in tmp_path (the project directory), without colour."""
    monkeypatch.chdir(tmp_path)
    return lambda *args: CliRunner().invoke(main, ["--no-color", *args])


def _build_case(root: Path, case: str) -> Path:
    project = root / case
    project.mkdir(parents=True)
    tables = {table: dict(values) for table, values in CASES[case].items()}
    recipe = project / "recipe.toml"
    recipe.write_text(_recipe_text({"recipe.name": case}, **tables), encoding="utf-8")
    written, _ = build(recipe, (), None, project)
    return written.dir


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{case: its build directory}."""
    root = tmp_path_factory.mktemp("launch")
    return {case: _build_case(root, case) for case in CASES}


def _stub_bin(root: Path) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        path = bin_dir / name
        path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def _calls(argv_dir: Path) -> dict[str, dict[str, Any]]:
    """{node (or "none"): {"argv": the arguments of that `accelerate` call, "env": its ACCELERATE_* variables}}."""
    out = {}
    for path in sorted(argv_dir.glob("call-*")):
        node = path.name.removeprefix("call-")
        env = (argv_dir / f"env-{node}").read_bytes().decode().split("\0")[:-1]
        out[node] = {"argv": path.read_bytes().decode().split("\0")[:-1], "env": dict(v.split("=", 1) for v in env)}
    return out


def _run_script(script: Path, argv_dir: Path, bin_dir: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    argv_dir.mkdir(parents=True, exist_ok=True)
    full = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "ARGV_DIR": str(argv_dir), **env}
    return subprocess.run(["bash", str(script)], env=full, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def launched(built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, dict[str, Any]]]:
    """{case: {"launch.sh" | "slurm:<node>": the argv and ACCELERATE_* environment the script gave `accelerate`}}."""
    root = tmp_path_factory.mktemp("launched")
    bin_dir = _stub_bin(root)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for case, build_dir in built.items():
        calls: dict[str, dict[str, Any]] = {}
        proc = _run_script(build_dir / "launch.sh", root / case / "launch", bin_dir, LAUNCH_ENV.get(case, {}), cwd=root)
        assert proc.returncode == 0, proc.stderr
        (calls["launch.sh"],) = _calls(root / case / "launch").values()
        if (build_dir / "slurm.sbatch").exists():
            machines = CASES[case]["launch"]["num_machines"]
            env = {
                "SLURM_SUBMIT_DIR": str(build_dir.parent.parent),  # the project: the build is build/<name>
                "SLURM_JOB_NUM_NODES": str(machines),
                "SLURM_JOB_NODELIST": f"node-[0-{machines - 1}]",
                "SLURM_JOB_ID": "1",
            }
            proc = _run_script(build_dir / "slurm.sbatch", root / case / "slurm", bin_dir, env, cwd=root)
            assert proc.returncode == 0, proc.stderr
            for node, call in _calls(root / case / "slurm").items():
                calls[f"slurm:{node}"] = call
            srun = (root / case / "slurm" / "srun-options").read_text().splitlines()
            assert srun[:4] == ["--ntasks-per-node=1", "--kill-on-bad-exit=1", "bash", "-c"]
        out[case] = calls
    return out


# -- golden files -----------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_launch_files_match_golden(case: str, built: dict[str, Path], update_golden: bool):
    build_dir = built[case]
    golden = GOLDEN / case
    actual = {name: (build_dir / name).read_text() for name in COMPARED if (build_dir / name).exists()}
    multinode = CASES[case]["launch"].get("num_machines", 1) > 1
    assert ("slurm.sbatch" in actual) == multinode, "slurm.sbatch is written exactly when num_machines > 1"
    if update_golden:
        shutil.rmtree(golden, ignore_errors=True)
        golden.mkdir(parents=True)
        for name, text in actual.items():
            (golden / name).write_text(text)
        return
    assert golden.is_dir(), f"no golden files for {case}; create them with `{REGENERATE}`"
    expected = {p.name: p.read_text() for p in sorted(golden.iterdir())}
    problems = []
    for name in sorted(set(actual) | set(expected)):
        if actual.get(name) != expected.get(name):
            diff = difflib.unified_diff(
                (expected.get(name) or "").splitlines(keepends=True),
                (actual.get(name) or "").splitlines(keepends=True),
                f"golden/launch/{case}/{name}",
                f"built/{name}",
            )
            problems.append("".join(diff) or f"{name}: missing on one side")
    if problems:
        pytest.fail("\n".join(problems) + f"\nif the change is intended, regenerate with:\n  {REGENERATE}", pytrace=False)


def test_golden_directory_has_no_stale_cases():
    assert GOLDEN.is_dir(), f"create it with `{REGENERATE}`"
    assert {p.name for p in GOLDEN.iterdir()} == set(CASES)


# -- accelerate reads them -------------------------------------------------------------


def probe(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run in a subprocess: what accelerate makes of each config and launch command line.

    For each request ({"config": path, "argv": the arguments of `accelerate launch`, "env":
    the ACCELERATE_* variables the script exported}): ClusterConfig.from_yaml_file, then
    accelerate's own launch path (parse the arguments, merge the config file, prepare the
    training processes' environment, the torchrun configuration), then the plugins the
    training processes would build from that environment.
    """
    import accelerate.commands.launch as launch_cli
    import accelerate.utils.launch as launch_utils
    import torch.distributed.run as distrib_run
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.parallelism_config import ParallelismConfig
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin, patch_environment

    # nothing is bound here; whether the port is free is the launching machine's business
    launch_utils.is_port_in_use = lambda port=None: False
    model = None
    results = []
    for request in requests:
        saved = dict(os.environ)
        os.environ.update(request["env"])
        try:
            config = ClusterConfig.from_yaml_file(request["config"])
            out: dict[str, Any] = {
                "distributed_type": config.distributed_type.value,
                "num_processes": config.num_processes,
                "num_machines": config.num_machines,
                "machine_rank": config.machine_rank,
                "main_process_ip": config.main_process_ip,
                "main_process_port": config.main_process_port,
                "use_cpu": config.use_cpu,
                "mixed_precision": config.mixed_precision,
                "fsdp_config": config.fsdp_config,
                "deepspeed_config": config.deepspeed_config,
                "parallelism_config": config.parallelism_config,
            }
            args = launch_cli.launch_command_parser().parse_args(request["argv"])
            args, defaults, _ = launch_cli._validate_launch_command(args)
            if args.use_deepspeed:
                args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
                cmd, env = launch_utils.prepare_deepspeed_cmd_env(args)
                out["deepspeed_command"] = cmd
            elif args.use_fsdp or args.multi_gpu:
                env = launch_utils.prepare_multi_gpu_env(args)
            else:
                _, env = launch_utils.prepare_simple_launcher_cmd_env(args)
            if args.use_deepspeed or args.use_fsdp or args.multi_gpu:  # the torchrun these launchers start
                torchrun = launch_utils._filter_args(
                    args, distrib_run.get_args_parser(), ["--training_script", args.training_script, "--training_script_args", []]
                )
                with patch_environment(**env):
                    launch_config, _, _ = distrib_run.config_from_args(torchrun)
                out["torchrun"] = {
                    "nodes": [launch_config.min_nodes, launch_config.max_nodes],
                    "nproc_per_node": launch_config.nproc_per_node,
                    "rdzv_backend": launch_config.rdzv_backend,
                    "rdzv_endpoint": launch_config.rdzv_endpoint,
                    "node_rank": launch_config.rdzv_configs.get("rank"),
                }
            out["env"] = {k: v for k, v in env.items() if saved.get(k) != v and k != "PYTHONPATH"}  # with the script's exports
            os.environ.update(env)
            mp = out["env"].get("ACCELERATE_MIXED_PRECISION", "no")
            if args.use_fsdp:
                if os.environ["FSDP_VERSION"] == "1":
                    # FSDP 1's sync_module_states builds its param_init_fn on a CUDA device
                    out["fsdp1_sync"] = [os.environ["FSDP_SYNC_MODULE_STATES"], os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"]]
                    os.environ["FSDP_SYNC_MODULE_STATES"] = os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "false"
                plugin = FullyShardedDataParallelPlugin()
                if mp != "no":
                    plugin.set_mixed_precision(mp)  # what AcceleratorState does with the plugin
                if model is None:
                    from transformers import LlamaConfig, LlamaForCausalLM

                    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, vocab_size=64)
                    model = LlamaForCausalLM(LlamaConfig(**small))
                plugin.set_auto_wrap_policy(model)
                out["fsdp_plugin"] = {
                    "fsdp_version": plugin.fsdp_version,
                    "sharding_strategy": getattr(plugin.sharding_strategy, "name", plugin.sharding_strategy),
                    "reshard_after_forward": plugin.reshard_after_forward,
                    "auto_wrap_policy": getattr(getattr(plugin.auto_wrap_policy, "func", None), "__name__", None),
                    "transformer_cls_names_to_wrap": plugin.transformer_cls_names_to_wrap,
                    "min_num_params": plugin.min_num_params,
                    "cpu_offload": type(plugin.cpu_offload).__name__,
                    "activation_checkpointing": plugin.activation_checkpointing,
                    "state_dict_type": plugin.state_dict_type.name,
                    "use_orig_params": plugin.use_orig_params,
                    "cpu_ram_efficient_loading": plugin.cpu_ram_efficient_loading,
                    "mixed_precision": None if plugin.mixed_precision_policy is None else str(plugin.mixed_precision_policy.param_dtype),
                }
            if os.environ.get("ACCELERATE_USE_PARALLELISM_CONFIG") == "true":
                pc = ParallelismConfig()
                out["parallelism"] = {"dp_replicate_size": pc.dp_replicate_size, "dp_shard_size": pc.dp_shard_size, "total_size": pc.total_size}
                names, shape = pc._get_mesh() or ((), ())  # what build_device_mesh hands init_device_mesh
                out["mesh"] = {
                    "sizes": [pc.dp_replicate_size, pc.dp_shard_size, pc.cp_size, pc.sp_size, pc.tp_size],
                    "dim_names": list(names),
                    "shape": list(shape),
                    "dp_dim_names": pc.dp_dim_names,
                    "non_dp_dim_names": pc.non_dp_dim_names,
                    "data_parallel_size": pc.data_parallel_size,
                    "sp_backend": pc.sp_backend,
                    "handlers": [type(h).__name__ for h in (pc.tp_handler, pc.cp_handler, pc.sp_handler) if h is not None],
                    "sp_handler": None if pc.sp_handler is None else {k: v for k, v in vars(pc.sp_handler).items() if not k.startswith("_")},
                    "env": {k: v for k, v in os.environ.items() if k.startswith("PARALLELISM_CONFIG_")},
                }
            if args.use_deepspeed:
                plugin = DeepSpeedPlugin()
                plugin.set_mixed_precision(mp)  # what AcceleratorState does with the plugin
                out["deepspeed_plugin"] = {"config": plugin.deepspeed_config, "zero3_init_flag": plugin.zero3_init_flag}
        finally:
            os.environ.clear()
            os.environ.update(saved)
        results.append(out)
    return results


def _probe_requests(built: dict[str, Path], launched: dict[str, dict[str, dict[str, Any]]]) -> list[tuple[str, str, dict[str, Any]]]:
    requests = []
    for case, calls in launched.items():
        for name, call in calls.items():
            assert call["argv"][0] == "launch", call
            config = str(built[case] / "accelerate_config.yaml")
            requests.append((case, name, {"config": config, "argv": call["argv"][1:], "env": call["env"]}))
    return requests


@pytest.fixture(scope="module")
def accepted(built: dict[str, Path], launched: dict[str, dict[str, dict[str, Any]]]) -> dict[tuple[str, str], dict[str, Any]]:
    """{(case, call): what accelerate made of it}; one subprocess for every case (accelerate imports torch)."""
    pytest.importorskip("accelerate")
    requests = _probe_requests(built, launched)
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_launch_configs import probe\n"
        "print('PROBE' + json.dumps(probe(json.loads(sys.argv[1])), default=str))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    env.pop("ACCELERATE_USE_CPU", None)
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps([r for _, _, r in requests])], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-6000:]
    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith("PROBE")]
    return {(case, call): out for (case, call, _), out in zip(requests, json.loads(line.removeprefix("PROBE")), strict=True)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_accelerate_loads_the_config_and_launches_the_recipes_shape(case: str, accepted, launched):
    _, processes, machines, _ = SHAPES[case]
    for call in launched[case]:
        got = accepted[(case, call)]
        assert (got["distributed_type"], got["num_processes"], got["num_machines"], got["use_cpu"]) == SHAPES[case]
        assert got["mixed_precision"] == CASES[case]["launch"].get("mixed_precision", "no")
        if processes == 1:
            assert "torchrun" not in got  # one process: accelerate runs the script itself
            continue
        torchrun = got["torchrun"]
        assert torchrun["nodes"] == [machines, machines] and torchrun["nproc_per_node"] == processes // machines
        assert torchrun["rdzv_backend"] == "static"
        if machines > 1:  # the recipe's rendezvous, and this machine's rank
            rendezvous = CASES[case]["launch"]["main_process_ip"]
            port = CASES[case]["launch"].get("main_process_port", 29500)
            if call == "launch.sh":
                assert torchrun["node_rank"] == 1
                assert torchrun["rdzv_endpoint"] == f"{'node-0' if rendezvous == 'env' else rendezvous}:{port}"
            else:  # slurm.sbatch: the node's SLURM_NODEID, and the first node of the allocation
                assert torchrun["node_rank"] == int(call.removeprefix("slurm:"))
                assert torchrun["rdzv_endpoint"] == f"node-0:{port}"


def test_slurm_runs_one_launch_per_node(launched):
    for case, calls in launched.items():
        machines = CASES[case]["launch"].get("num_machines", 1)
        slurm = sorted(c for c in calls if c.startswith("slurm:"))
        assert slurm == ([f"slurm:{n}" for n in range(machines)] if machines > 1 else [])


def test_fsdp_plugins_are_built_from_the_recipes_options(accepted):
    v2 = accepted[("fsdp-v2", "launch.sh")]
    assert v2["fsdp_config"]["fsdp_version"] == 2 and v2["fsdp_config"]["fsdp_reshard_after_forward"] is True
    assert v2["fsdp_plugin"] == {
        "fsdp_version": 2,
        "sharding_strategy": None,
        "reshard_after_forward": True,
        "auto_wrap_policy": "transformer_auto_wrap_policy",
        "transformer_cls_names_to_wrap": ["LlamaDecoderLayer"],  # unset: the model's _no_split_modules
        "min_num_params": None,
        "cpu_offload": "OffloadPolicy",
        "activation_checkpointing": False,
        "state_dict_type": "FULL_STATE_DICT",
        "use_orig_params": None,
        "cpu_ram_efficient_loading": True,
        "mixed_precision": "torch.bfloat16",
    }
    v1 = accepted[("fsdp-v1", "launch.sh")]
    assert v1["fsdp1_sync"] == ["true", "true"]  # as accelerate requires with cpu_ram_efficient_loading
    plugin = v1["fsdp_plugin"]
    assert (plugin["fsdp_version"], plugin["sharding_strategy"], plugin["use_orig_params"]) == (1, "SHARD_GRAD_OP", True)
    assert plugin["transformer_cls_names_to_wrap"] == ["LlamaDecoderLayer"] and plugin["mixed_precision"] == "torch.float16"
    size = accepted[("fsdp-size-offload", "launch.sh")]["fsdp_plugin"]
    assert (size["auto_wrap_policy"], size["min_num_params"]) == ("size_based_auto_wrap_policy", 1_000_000)
    assert size["cpu_offload"] == "CPUOffloadPolicy" and size["activation_checkpointing"] is True
    assert size["state_dict_type"] == "SHARDED_STATE_DICT" and size["reshard_after_forward"] is True
    hybrid = accepted[("multinode-fsdp-hybrid", "slurm:0")]
    assert hybrid["parallelism"] == {"dp_replicate_size": 2, "dp_shard_size": 4, "total_size": 8}
    assert hybrid["fsdp_plugin"]["reshard_after_forward"] is True
    cpu = accepted[("fsdp-cpu", "launch.sh")]
    assert cpu["fsdp_config"] == {} and "fsdp_plugin" not in cpu and "ACCELERATE_USE_FSDP" not in cpu["env"]


def test_deepspeed_plugins_are_built_from_the_recipes_options(accepted):
    stage2 = accepted[("deepspeed-2", "launch.sh")]["deepspeed_plugin"]
    zero = stage2["config"]["zero_optimization"]
    assert zero["stage"] == 2 and zero["offload_optimizer"]["device"] == "none" and zero["offload_param"]["device"] == "none"
    assert stage2["config"]["gradient_accumulation_steps"] == 4  # batch 64 / (micro 4 * 4 processes)
    assert stage2["config"]["gradient_clipping"] == 1.0  # optim.grad_clip, not accelerate's fallback
    assert stage2["config"]["bf16"] == {"enabled": True} and stage2["zero3_init_flag"] is False
    offload = accepted[("deepspeed-3-offload", "launch.sh")]["deepspeed_plugin"]
    zero = offload["config"]["zero_optimization"]
    assert (zero["stage"], zero["offload_optimizer"]["device"], zero["offload_param"]["device"]) == (3, "cpu", "cpu")
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True and offload["zero3_init_flag"] is True
    # optim.grad_clip 0: no clipping. DeepSpeed must be told 0: since DeepSpeed 0.19.3 an absent
    # gradient_clipping means 1.0, and accelerate before 1.16 dropped a 0 from the plugin's config
    assert offload["config"].get("gradient_clipping") == 0.0
    nvme = accepted[("deepspeed-3-nvme", "launch.sh")]["deepspeed_plugin"]["config"]["zero_optimization"]
    assert nvme["offload_optimizer"] == {"device": "nvme", "nvme_path": "/local_nvme"}
    assert nvme["offload_param"] == {"device": "nvme", "nvme_path": "/local_nvme"}
    assert nvme["stage3_gather_16bit_weights_on_model_save"] is False
    for call in ("launch.sh", "slurm:0", "slurm:1"):  # the standard launcher: one torchrun per node, no pdsh hostfile
        got = accepted[("multinode-deepspeed", call)]
        assert got["deepspeed_command"] is None and got["deepspeed_config"]["deepspeed_multinode_launcher"] == "standard"


def test_no_deepspeed_config_carries_an_optimizer_or_a_scheduler(accepted, plan_of):
    """A DeepSpeed optimizer or scheduler would silently replace the recipe's AdamW and schedule."""
    forbidden = {"optimizer", "scheduler", "deepspeed_config_file"}
    cases = [key for key in accepted if accepted[key]["distributed_type"] == "DEEPSPEED"]
    assert len(cases) >= 5
    for key in cases:
        got = accepted[key]
        assert not forbidden & set(got["deepspeed_config"]), key
        assert not forbidden & set(got["deepspeed_plugin"]["config"]), key
        assert "ACCELERATE_DEEPSPEED_CONFIG_FILE" not in got["env"], key
    # every valid combination of [launch.deepspeed], straight from render
    for stage in (1, 2, 3):
        for opt in ("none", "cpu", "nvme"):
            for params in ("none", "cpu", "nvme") if stage == 3 else ("none",):
                if opt == "nvme" and stage < 3:
                    continue
                ds: dict[str, Any] = {"zero_stage": stage, "offload_optimizer": opt, "offload_params": params}
                if "nvme" in (opt, params):
                    ds["nvme_path"] = "/nvme"
                text = render(plan_of(launch={"num_processes": 2, "strategy": "deepspeed", "deepspeed": ds}))["accelerate_config.yaml"]
                config = yaml.safe_load(text)["deepspeed_config"]
                assert not forbidden & set(config), ds
                assert config["gradient_clipping"] == 1.0 and config["gradient_accumulation_steps"] == 1, ds


# -- the shell scripts -------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_scripts_are_bash_clean_and_executable(case: str, built: dict[str, Path]):
    for name in ("launch.sh", "slurm.sbatch"):
        path = built[case] / name
        if not path.exists():
            continue
        text = path.read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
        assert path.stat().st_mode & stat.S_IXUSR, f"{name} is not executable"
        check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_slurm_header_asks_for_the_recipes_nodes_and_gpus(built: dict[str, Path]):
    def directives(case: str) -> list[str]:
        lines = (built[case] / "slurm.sbatch").read_text().splitlines()
        return [line.removeprefix("#SBATCH ") for line in lines if line.startswith("#SBATCH ")]

    assert directives("multinode-ip") == [
        "--job-name=multinode-ip",
        "--nodes=2",
        "--ntasks-per-node=1",
        "--gpus-per-node=8",
        "--output=%x-%j.out",
    ]
    assert "--gpus-per-node=4" in directives("multinode-fsdp-hybrid")


def test_slurm_cpu_job_asks_for_no_gpus(plan_of):
    launch = {"num_processes": 4, "num_machines": 2, "main_process_ip": "env", "machine_rank": "env", "cpu": True}
    files = render(plan_of(launch=launch, train={"batch_size": 16}))
    assert "--nodes=2" in files["slurm.sbatch"] and "--gpus-per-node" not in files["slurm.sbatch"]


def test_launch_sh_with_env_values_stops_clearly_outside_a_scheduler(built: dict[str, Path], tmp_path: Path):
    bin_dir = _stub_bin(tmp_path)
    proc = _run_script(built["multinode-env"] / "launch.sh", tmp_path / "argv", bin_dir, {}, cwd=tmp_path)
    assert proc.returncode == 2 and not list((tmp_path / "argv").iterdir())
    assert 'launch.machine_rank is "env": set MACHINE_RANK (0 to 1), or run under SLURM' in proc.stderr
    proc = _run_script(built["multinode-env"] / "launch.sh", tmp_path / "argv", bin_dir, {"MACHINE_RANK": "0"}, cwd=tmp_path)
    assert proc.returncode == 2 and "set MASTER_ADDR" in proc.stderr


def test_slurm_sbatch_stops_clearly_when_not_submitted_from_the_project(built: dict[str, Path], tmp_path: Path):
    bin_dir = _stub_bin(tmp_path)
    env = {"SLURM_SUBMIT_DIR": str(tmp_path), "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "node-[0-1]"}
    proc = _run_script(built["multinode-ip"] / "slurm.sbatch", tmp_path / "argv", bin_dir, env, cwd=tmp_path)
    assert proc.returncode == 2 and "submit from the project directory: sbatch build/multinode-ip/slurm.sbatch" in proc.stderr
    env["SLURM_SUBMIT_DIR"] = str(built["multinode-ip"].parent.parent)
    env["SLURM_JOB_NUM_NODES"] = "3"
    proc = _run_script(built["multinode-ip"] / "slurm.sbatch", tmp_path / "argv", bin_dir, env, cwd=tmp_path)
    assert proc.returncode == 2 and "the job has 3 nodes, and launch.num_machines is 2" in proc.stderr


def test_a_hostile_main_process_ip_is_rejected_by_the_schema(plan_of):
    with pytest.raises(RecipeError) as caught:
        plan_of(launch={"num_processes": 2, "num_machines": 2, "main_process_ip": "1.2.3.4; rm -rf /"})
    (diag,) = caught.value.diagnostics
    assert diag.message.startswith("`launch.main_process_ip` must be a host name or an IP address")
    for host in ("10.0.0.1", "node-0.cluster.local", "fe80::1", "env"):
        plan_of(launch={"num_processes": 2, "num_machines": 2, "main_process_ip": host})


def test_env_values_on_one_machine_warn_and_leave_the_launch_alone(plan_of):
    """So that `--set launch.num_machines=1 --set launch.num_processes=1` scales a multi-machine recipe down."""
    plan = plan_of(launch={"machine_rank": "env", "main_process_ip": "env"})
    assert [w.message for w in plan.warnings] == [
        'launch.machine_rank = "env" has no effect on one machine (launch.num_machines is 1)',
        'launch.main_process_ip = "env" has no effect on one machine (launch.num_machines is 1)',
    ]
    files = render(plan)
    assert files["launch.sh"] == render(plan_of())["launch.sh"]
    config = yaml.safe_load(files["accelerate_config.yaml"])
    assert config["machine_rank"] == 0 and "main_process_ip" not in config


@pytest.mark.parametrize("value", ["1.2.3.4; rm -rf /", "$(touch pwned)", "a b", "it's", "`id`", 29500])
def test_shell_values_stay_one_inert_word(value, tmp_path: Path):
    word = shell_word(value)
    script = f'set -- {word}\nprintf "%s\\n" "$#" "$1"\n'
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout == f"1\n{value}\n" and not list(tmp_path.iterdir())
    with pytest.raises(TypeError):
        shell_word(True)


# -- the batch arithmetic and explain -----------------------------------------------------


@pytest.mark.parametrize(
    ("micro", "processes", "machines", "batch", "accum"),
    [(4, 8, 2, 64, 2), (2, 16, 4, 256, 8), (8, 2, 2, 16, 1), (4, 4, 1, 48, 3)],
)
def test_grad_accum_is_derived_from_the_whole_world(plan_of, micro, processes, machines, batch, accum):
    ip = {"main_process_ip": "env", "machine_rank": "env"} if machines > 1 else {}
    plan = plan_of(train={"micro_batch_size": micro, "batch_size": batch}, launch={"num_processes": processes, "num_machines": machines, **ip})
    assert plan["grad_accum_steps"] == accum and micro * accum * processes == batch
    where = f" ({machines} machines x {processes // machines})" if machines > 1 else ""
    note = next(s.note for s in plan.settings if s.name == "grad_accum_steps")
    assert note == f"derived: batch_size {batch} / (micro_batch_size {micro} * num_processes {processes}{where})"


def test_a_batch_that_does_not_divide_spells_out_the_arithmetic(plan_of):
    with pytest.raises(RecipeError) as caught:
        plan_of(train={"micro_batch_size": 4, "batch_size": 48}, launch={"num_processes": 8, "num_machines": 2, "main_process_ip": "h"})
    (diag,) = caught.value.diagnostics
    assert diag.message == "train.batch_size 48 is not a multiple of micro_batch_size 4 * launch.num_processes 8 (2 machines x 4) = 32"
    assert diag.help.startswith("batch_size = micro_batch_size x grad_accum_steps x num_processes: use batch_size = 32 (grad_accum_steps 1)")


def test_explain_shows_tokens_per_rank_and_the_launch_shape(cli, write_recipe):
    write_recipe(
        train={"micro_batch_size": 4, "batch_size": 64},
        launch={"num_processes": 8, "num_machines": 2, "machine_rank": "env", "main_process_ip": "env", "strategy": "deepspeed",
                "mixed_precision": "bf16", "deepspeed": {"zero_stage": 3, "offload_optimizer": "cpu"}},
    )  # fmt: skip
    result = cli("explain", "recipe.toml")
    assert result.exit_code == 0, result.output
    out = result.stdout
    # seq_len 32: 4 x 2 x 32 = 256 tokens per rank, 8 ranks
    assert "  tokens per step  2,048 in total = 256 per rank x 8 ranks (per rank: micro_batch_size 4 x grad_accum_steps 2 x seq_len 32)\n" in out
    assert "  launch shape     2 machines x 4 processes, deepspeed (ZeRO stage 3, optimizer offloaded to cpu), bf16 mixed precision\n" in out
    assert "  on SLURM         sbatch build/tiny/slurm.sbatch  (from this directory)" in out


def test_explain_on_one_cpu_process(cli, write_recipe):
    write_recipe(launch={"cpu": True})
    out = cli("explain", "recipe.toml").stdout
    assert "  tokens per step  256 in total = 256 per rank x 1 rank (per rank: micro_batch_size 4 x grad_accum_steps 2 x seq_len 32)\n" in out
    assert "  launch shape     1 machine x 1 process, ddp, on CPU\n" in out
    assert "on SLURM" not in out


# -- two machines, emulated: slurm.sbatch with real accelerate on CPU ---------------------


@pytest.mark.slow
def test_slurm_sbatch_trains_on_two_emulated_nodes_over_gloo(tmp_path: Path):
    """srun and scontrol stand-ins run the batch script's task on two "nodes" of this machine at once."""
    from test_training import TINY, _env, _metrics

    project = tmp_path / "project"
    (project / "recipes").mkdir(parents=True)
    (project / "recipes" / "tiny.toml").write_text(TINY)
    port = free_port()
    sets = [
        "launch.num_processes=2", "launch.num_machines=2", 'launch.machine_rank="env"', 'launch.main_process_ip="env"',
        f"launch.main_process_port={port}", "train.max_steps=4", "train.save_every=0", "train.eval_every=0",
    ]  # fmt: skip
    written, _ = build(project / "recipes" / "tiny.toml", sets, None, project)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\necho 127.0.0.1\necho 127.0.0.2\n")
    (bin_dir / "srun").write_text(
        '#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\n'
        'SLURM_NODEID=0 "$@" & first=$!\nSLURM_NODEID=1 "$@"; second=$?\nwait $first && exit $second\n'
    )
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    env = _env()
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        SLURM_SUBMIT_DIR=str(project),
        SLURM_JOB_NUM_NODES="2",
        SLURM_JOB_NODELIST="n[1-2]",
        SLURM_JOB_ID="1",
    )
    proc = subprocess.run(["bash", str(written.dir / "slurm.sbatch")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    record = json.loads((project / "runs" / "tiny" / "run.json").read_text())
    assert record["status"] == "completed" and record["hardware"]["num_processes"] == 2
    assert [m["step"] for m in _metrics(project / "runs" / "tiny") if "loss" in m] == [1, 2, 3, 4]


# -- the device mesh: accelerate's ParallelismConfig from the launcher's environment ----------

# (dp_replicate, dp_shard, cp, sp, tp) from the environment, the mesh's dimensions, the data-parallel size
MESHES = {
    "mesh-tp8-fsdp-2-machines": ([1, 2, 1, 1, 8], ["dp_shard", "tp"], [2, 8], 2),
    "mesh-cp8-full-shard": ([1, 1, 8, 1, 1], ["cp"], [8], 1),
    "mesh-tp2": ([1, 1, 1, 1, 2], ["tp"], [2], 1),
    "multinode-fsdp-hybrid": ([2, 4, 1, 1, 1], ["dp_replicate", "dp_shard"], [2, 4], 8),
    "mesh-sp8-zero3": ([1, 1, 1, 8, 1], ["sp"], [8], 1),  # DeepSpeed builds these groups; accelerate no torch mesh
}


def test_deepspeed_takes_the_sequence_split_with_its_own_groups(accepted, launched, plan_of):
    """sp_size over ZeRO-3: accelerate hands the sequence split to DeepSpeed (Ulysses), which builds its
    own sequence-parallel groups, so the ParallelismConfig carries sp and its options and no torch mesh."""
    case = "mesh-sp8-zero3"
    for call in launched[case]:
        got = accepted[(case, call)]
        mesh = got["mesh"]
        assert mesh["sizes"] == [1, 1, 1, 8, 1] and mesh["sp_backend"] == "deepspeed"
        assert mesh["handlers"] == ["DeepSpeedSequenceParallelConfig"]
        handler = mesh["sp_handler"]  # as the training processes' Accelerator reads it
        assert handler["sp_attn_implementation"] == "sdpa"  # the model's attention, wrapped by Ulysses
        assert handler["sp_seq_length_is_variable"] is True and handler["sp_disable_in_eval"] is True
        assert got["deepspeed_plugin"]["config"]["zero_optimization"]["stage"] == 3
    plan = plan_of(**{table: dict(values) for table, values in CASES[case].items()})
    assert plan["sp_size"] == 8 and plan.get("data_parallel_size") == 1 and plan.launch.sequence_parallel


@pytest.mark.parametrize("case", sorted(MESHES))
def test_accelerate_builds_the_recipes_parallelism_config_from_the_launch(case: str, accepted, launched, plan_of):
    sizes, names, shape, dp = MESHES[case]
    for call in launched[case]:
        mesh = accepted[(case, call)]["mesh"]
        assert mesh["sizes"] == sizes and mesh["dim_names"] == names and mesh["shape"] == shape, (call, mesh)
        assert mesh["data_parallel_size"] == dp
    tables = {table: dict(values) for table, values in CASES[case].items()}
    plan = plan_of(**tables)
    assert plan.get("data_parallel_size", plan["num_processes"]) == dp


def _build_mesh(rank: int, world: int, env: dict[str, str], init_file: str, out_dir: str) -> None:
    """One training process: ParallelismConfig from the launcher's environment, and its device mesh on gloo."""
    import torch.distributed as dist
    from accelerate.parallelism_config import ParallelismConfig

    os.environ.update(env)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pc = ParallelismConfig()
        mesh = pc.build_device_mesh("cpu")
        groups = {}
        if mesh is not None:
            for name in [*pc.active_mesh_dims, "dp", "dp_shard_cp", "dp_cp"]:
                try:
                    groups[name] = mesh[name].mesh.flatten().tolist()
                except (KeyError, RuntimeError):
                    continue
        if pc.sp_backend == "deepspeed" and pc.sp_size > 1:  # DeepSpeed builds the sequence-parallel groups itself
            import deepspeed.comm
            import deepspeed.runtime.sequence_parallel.parallel_state_sp as mpu

            deepspeed.comm.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)  # over torch's group
            mpu.initialize_sequence_parallel(sequence_parallel_size=pc.sp_size)
            groups["sp"] = dist.get_process_group_ranks(mpu.get_sequence_parallel_group())
            groups["sp_dp"] = dist.get_process_group_ranks(mpu.get_sequence_data_parallel_group())
        Path(out_dir, f"{rank}.json").write_text(json.dumps({"built": mesh is not None, "groups": groups}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["mesh-tp2", "mesh-cp8-full-shard", "mesh-tp8-fsdp-2-machines", "mesh-sp8-zero3"])
def test_every_process_builds_the_device_mesh_over_gloo(case: str, accepted, launched, tmp_path: Path):
    """As many processes as the mesh has ranks, on the CPU: each builds the mesh from the environment
    `accelerate launch` gives it (PARALLELISM_CONFIG_*), as the Accelerator of a training process does.
    DeepSpeed's sequence parallelism has no torch mesh: DeepSpeed builds its groups from sp_size, as
    accelerate's prepare has it do."""
    call = next(iter(launched[case]))
    env = accepted[(case, call)]["mesh"]["env"]
    world = CASES[case]["launch"]["num_processes"]
    sizes = dict(zip(("dp_replicate", "dp_shard", "cp", "sp", "tp"), MESHES[case][0]))
    script = textwrap.dedent(
        f"""\
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import accelerate.parallelism_config, torch.distributed, torch.multiprocessing as mp
        {"import deepspeed.comm, forkrun; forkrun.skip_shared_memory_collective()" if sizes["sp"] > 1 else ""}
        from test_launch_configs import _build_mesh
        if __name__ == "__main__":  # forked after the imports: {world} processes need not import torch {world} times
            args = ({world}, json.loads(sys.argv[1]), sys.argv[2], sys.argv[3])
            mp.start_processes(_build_mesh, args=args, nprocs={world}, start_method="fork")
        """
    )
    full = dict(os.environ, OMP_NUM_THREADS="1")
    for attempt in range(2):  # gloo's rendezvous of 8 processes on 2 loaded cores can lose a connection: once more
        out = tmp_path / f"attempt{attempt}"
        out.mkdir()
        result = subprocess.run(
            [sys.executable, "-c", script, json.dumps(env), str(out / "init"), str(out)],
            capture_output=True, text=True, env=full, timeout=300,
        )  # fmt: skip
        if result.returncode == 0 or "connectFullMesh" not in result.stderr:
            break
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((out / f"{rank}.json").read_text()) for rank in range(world)]
    groups = [r["groups"] for r in ranks]
    assert all(r["built"] == (sizes["sp"] == 1) for r in ranks)
    for rank, g in enumerate(groups):
        if sizes["sp"] > 1:  # consecutive ranks split the sequence; the sp groups' counterparts are data-parallel
            start = rank // sizes["sp"] * sizes["sp"]
            assert g["sp"] == list(range(start, start + sizes["sp"])) and g["sp_dp"] == list(range(world))
        if sizes["tp"] > 1:  # a tensor-parallel group is consecutive ranks (one machine)
            start = rank // sizes["tp"] * sizes["tp"]
            assert g["tp"] == list(range(start, start + sizes["tp"]))
        if sizes["cp"] > 1:
            assert len(g["cp"]) == sizes["cp"] and g["dp_shard_cp"] == g["cp"]  # FSDP shards over dp_shard x cp
        if sizes["dp_shard"] > 1:  # one rank of each tensor-parallel group: the data-parallel ranks
            assert g["dp"] == list(range(rank % sizes["tp"], world, sizes["tp"]))


@pytest.mark.parametrize("case", sorted(c for c in CASES if c.startswith("mesh-")))
def test_the_scripts_of_a_mesh_pass_it_to_the_accelerator(case: str, built: dict[str, Path]):
    import ast

    text = (built[case] / "train.py").read_text()
    ast.parse(text)
    assert "parallelism_config=ParallelismConfig(" in text
    parallelism = CASES[case]["launch"]["parallelism"]
    for key, value in parallelism.items():
        assert f"\n{key} = {value} " in text
    tp = parallelism.get("tp_size", 1) > 1
    assert ('model = apply_tensor_parallelism(model, accelerator.torch_device_mesh["tp"]' in text) == tp
    assert ("accelerator.maybe_context_parallel(" in text) == (parallelism.get("cp_size", 1) > 1)
    sp = parallelism.get("sp_size", 1) > 1
    assert ("sequence_parallel.micro_batches(accelerator, train_loader, model, skip)" in text) == sp
    assert ("loss, outputs = sequence_parallel.causal_lm_loss(model, batch)" in text) == sp


@pytest.mark.parametrize("strategy", ["ddp", "deepspeed"])
def test_the_collective_timeout_goes_to_accelerates_process_group(plan_of, strategy):
    import datetime

    from recipec.render import render

    launch = {"launch.num_processes": 2, "launch.strategy": strategy, "launch.cpu": strategy == "ddp"}
    plain = render(plan_of(launch))["train.py"]
    assert "collective_timeout_minutes" not in plain and "timeout=" not in plain.split("accelerator = Accelerator(")[1].split("\n)\n")[0]
    plan = plan_of({**launch, "launch.collective_timeout_minutes": 90})
    assert plan["collective_timeout_minutes"] == 90
    text = render(plan)["train.py"]
    assert "collective_timeout_minutes = 90.0  # launch.collective_timeout_minutes" in text
    block = text.split("accelerator = Accelerator(")[1].split("\n)\n")[0]
    assert 'backend="nccl" if torch.cuda.is_available() else "gloo"' in block
    assert "timeout=datetime.timedelta(minutes=collective_timeout_minutes)" in block
    # what accelerate hands torch.distributed.init_process_group
    from accelerate.utils import InitProcessGroupKwargs

    for backend in ("nccl", "gloo"):
        kwargs = InitProcessGroupKwargs(backend=backend, timeout=datetime.timedelta(minutes=90)).to_kwargs()
        assert kwargs["timeout"] == datetime.timedelta(minutes=90)
