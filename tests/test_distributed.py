"""Data-parallel training on CPU over gloo: the generated script with 2 processes, and 2 machines.

There is no GPU here, so the distributed logic is proven with gloo on CPU: accelerate
starts real DDP processes from the generated config (MULTI_GPU with use_cpu), and two
`accelerate launch` calls on 127.0.0.1 stand in for two machines. The live preference
reference of accelerate's FSDP 2 plugin path is copied from a policy that accelerate's own
fsdp2_prepare_model sharded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("accelerate")

import forkrun  # noqa: E402
from conftest import accelerate_launch, free_port  # noqa: E402
from test_training import TINY, _build, _env, _metrics, _project, _weights  # noqa: E402

pytestmark = pytest.mark.slow

# dropout off: DDP and one process must see identical arithmetic
RECIPE = TINY.replace("attention_dropout = 0.1", "attention_dropout = 0.0").replace("eval_fraction = 0.25", "eval_fraction = 0.0")
STEPS = ["train.max_steps=40", "train.save_every=0", "train.eval_every=0", "train.log_every=1"]

TRACER = """
import hashlib, json, os, runpy, sys

build_dir, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, build_dir)
from recipec_runtime import data

collate = data.collate


def traced(batch):
    rank = os.environ.get("RANK", "0")
    with open(os.path.join(out, f"rank{rank}.jsonl"), "a") as f:
        f.write(json.dumps([hashlib.sha1(bytes(memoryview(x["input_ids"].numpy()))).hexdigest() for x in batch]) + "\\n")
    return collate(batch)


data.collate = traced
sys.argv = [os.path.join(build_dir, "train.py")]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

KILL_RANK0 = """
import os, runpy, signal, sys

build_dir, kill_at = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, build_dir)
from recipec_runtime import checkpoint

commit = checkpoint.commit


def commit_then_die(tmp, ckpt_dir, step):
    path = commit(tmp, ckpt_dir, step)
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # rank 0 dies; the launcher takes the other rank down
    return path


checkpoint.commit = commit_then_die
sys.argv = [os.path.join(build_dir, "train.py")]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _launch(build_dir: Path, *args: str, script: list[str] | None = None, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
    cmd = accelerate_launch(build_dir / "accelerate_config.yaml", *args)
    cmd += script or [str(build_dir / "train.py")]
    proc = forkrun.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    if expect is not None:
        assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _losses_and_lrs(run_dir: Path) -> tuple[list[float], list[float]]:
    lines = [m for m in _metrics(run_dir) if "loss" in m]
    return [m["loss"] for m in lines], [m["lr"] for m in lines]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process with micro-batch 8 (no accumulation): the reference run."""
    project = _project(tmp_path_factory.mktemp("single"), RECIPE)
    build_dir = _build(project, *STEPS, "train.micro_batch_size=8")
    forkrun.run([sys.executable, str(build_dir / "train.py")], env=_env(), check=True, capture_output=True, timeout=900)
    return project / "runs" / "tiny"


@pytest.fixture(scope="module")
def double(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two processes with micro-batch 4, every batch traced per rank: (run dir, trace dir)."""
    project = _project(tmp_path_factory.mktemp("double"), RECIPE)
    build_dir = _build(project, *STEPS, "launch.num_processes=2")
    trace = project / "trace"
    trace.mkdir()
    (project / "tracer.py").write_text(TRACER)
    _launch(build_dir, script=[str(project / "tracer.py"), str(build_dir), str(trace)])
    return project / "runs" / "tiny", trace


def test_two_processes_match_one_process_with_the_double_micro_batch(single: Path, double: tuple[Path, Path]) -> None:
    run_dir, _ = double
    loss_1, lr_1 = _losses_and_lrs(single)
    loss_2, lr_2 = _losses_and_lrs(run_dir)
    assert len(loss_1) == len(loss_2) == 40
    assert loss_2 == pytest.approx(loss_1, rel=1e-5, abs=1e-6)
    # the schedule advances once per optimizer step, whatever the world size
    assert lr_2 == lr_1
    w1, w2 = _weights(single), _weights(run_dir)
    assert w1.keys() == w2.keys()

    worst = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert worst < 1e-4, f"final weights differ by up to {worst}"


def test_every_rank_sees_a_disjoint_shard_and_an_epoch_sees_each_sequence_once(double: tuple[Path, Path]) -> None:
    run_dir, trace = double
    ranks = [[json.loads(line) for line in (trace / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    # one micro-batch of 4 per rank per step (no accumulation); the loader fetches one batch ahead
    assert len(ranks[0]) == len(ranks[1]) in (40, 41)
    n_sequences = json.loads((run_dir / "data_report.json").read_text())["segments"][0]["sequences"]
    per_epoch = n_sequences // 8  # global batches in an epoch (the remainder is dropped)
    assert per_epoch < 40, "the test must cross an epoch boundary"
    seen: list[str] = []
    for step in range(per_epoch):
        a, b = ranks[0][step], ranks[1][step]
        assert len(a) == len(b) == 4 and not set(a) & set(b)
        seen += a + b
    assert len(seen) == len(set(seen)) == per_epoch * 8  # none twice in the epoch
    assert n_sequences - len(seen) < 8  # none skipped but the remainder of the last global batch
    # the next epoch reshuffles: its first global batch is not the first epoch's
    assert ranks[0][per_epoch] + ranks[1][per_epoch] != ranks[0][0] + ranks[1][0]


def test_checkpoints_metrics_and_the_model_are_written_once(double: tuple[Path, Path]) -> None:
    run_dir, _ = double
    steps = [m["step"] for m in _metrics(run_dir) if "loss" in m]
    assert steps == list(range(1, 41))  # one line per step: only the main process logs
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["hardware"]["num_processes"] == 2
    assert sorted(p.name for p in (run_dir / "model").iterdir() if p.suffix == ".safetensors") == ["model.safetensors"]
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]


def test_two_machines_on_loopback_train_together_like_one_process(single: Path, tmp_path: Path) -> None:
    """Two `accelerate launch` calls, machine ranks 0 and 1 on 127.0.0.1, one process each."""
    project = _project(tmp_path, RECIPE)
    build_dir = _build(project, *STEPS, "launch.num_processes=2")
    port = str(free_port())
    common = ["--num_machines", "2", "--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", port]
    procs = [
        subprocess.Popen(
            accelerate_launch(build_dir / "accelerate_config.yaml", *common, "--machine_rank", str(rank),
                              str(build_dir / "train.py")),
            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-6000:]
    loss_1, lr_1 = _losses_and_lrs(single)
    loss_2, lr_2 = _losses_and_lrs(project / "runs" / "tiny")
    assert loss_2 == pytest.approx(loss_1, rel=1e-5, abs=1e-6) and lr_2 == lr_1
    assert json.loads((project / "runs" / "tiny" / "run.json").read_text())["hardware"]["num_processes"] == 2


def test_a_two_process_run_killed_after_a_checkpoint_resumes_bitwise(double: tuple[Path, Path], tmp_path: Path) -> None:
    reference, _ = double
    project = _project(tmp_path, RECIPE)
    build_dir = _build(project, *[s for s in STEPS if not s.startswith("train.save_every")], "train.save_every=5", "launch.num_processes=2")
    (project / "killer.py").write_text(KILL_RANK0)
    killed = _launch(build_dir, script=[str(project / "killer.py"), str(build_dir), "25"], expect=None)
    assert killed.returncode != 0
    run_dir = project / "runs" / "tiny"
    assert not (run_dir / "model").exists()
    assert max(int(p.name.split("_")[-1]) for p in (run_dir / "checkpoints").iterdir()) == 25
    resumed = _launch(build_dir)
    assert "resum" in (resumed.stdout + resumed.stderr).lower()
    import torch

    wa, wb = _weights(reference), _weights(run_dir)
    assert [k for k in wa if not torch.equal(wa[k], wb[k])] == []
    assert _losses_and_lrs(run_dir) == _losses_and_lrs(reference)


FSDP = ["launch.num_processes=2", 'launch.strategy="fsdp"']


def test_fsdp_on_two_cpu_processes_matches_ddp(double: tuple[Path, Path], tmp_path: Path) -> None:
    """torch's fully_shard over gloo: the same losses, LRs and final weights as DDP."""
    ddp_reference, _ = double
    project = _project(tmp_path, RECIPE)
    build_dir = _build(project, *STEPS, *FSDP)
    proc = _launch(build_dir)
    assert "fsdp: 2 blocks sharded over 2 processes" in proc.stdout + proc.stderr
    run_dir = project / "runs" / "tiny"
    loss_d, lr_d = _losses_and_lrs(ddp_reference)
    loss_f, lr_f = _losses_and_lrs(run_dir)
    assert loss_f == pytest.approx(loss_d, rel=1e-5, abs=1e-6) and lr_f == lr_d
    wd, wf = _weights(ddp_reference), _weights(run_dir)
    assert wd.keys() == wf.keys()
    worst = max(float((wd[k] - wf[k]).abs().max()) for k in wd)
    assert worst < 1e-4, f"final weights differ by up to {worst}"


def test_fsdp_killed_after_a_checkpoint_resumes_bitwise(tmp_path: Path) -> None:
    settings = [s for s in STEPS if not s.startswith("train.save_every")] + ["train.save_every=5", *FSDP]
    straight = _project(tmp_path / "straight", RECIPE)
    _launch(_build(straight, *settings))
    project = _project(tmp_path / "killed", RECIPE)
    build_dir = _build(project, *settings)
    (project / "killer.py").write_text(KILL_RANK0)
    killed = _launch(build_dir, script=[str(project / "killer.py"), str(build_dir), "25"], expect=None)
    assert killed.returncode != 0
    run_dir = project / "runs" / "tiny"
    latest = max((run_dir / "checkpoints").iterdir())
    assert (latest / "fsdp").is_dir() and not (run_dir / "model").exists()
    _launch(build_dir)
    import torch

    wa, wb = _weights(straight / "runs" / "tiny"), _weights(run_dir)
    assert [k for k in wa if not torch.equal(wa[k], wb[k])] == []
    assert _losses_and_lrs(run_dir) == _losses_and_lrs(straight / "runs" / "tiny")


def _plugin_reference(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """The live reference copy of accelerate's FSDP 2 plugin path, on the CPU over gloo: accelerate's own
    fsdp2_prepare_model shards the policy, as prepare does on GPUs (with the plugin's units, embedding and output
    groups, mixed precision), and recipec_runtime's fsdp_plugin_shard and fsdp_reference make the copy.
    accelerate's Accelerator takes no FSDP plugin without CUDA, so a stand-in carries what both read."""
    import types

    import torch
    import torch.distributed as dist
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from recipec.runtime import preference

    from accelerate import PartialState

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    PartialState(cpu=True)  # accelerate's logging, which fsdp2_prepare_model uses, needs its state
    results = {}
    for tied, mixed in ((False, "no"), (True, "no"), (False, "bf16")):
        torch.manual_seed(0)
        dtype = torch.bfloat16 if mixed == "bf16" else torch.float32
        config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             tie_word_embeddings=tied, attn_implementation="sdpa")
        policy = LlamaForCausalLM(config).to(dtype)
        ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))
        total = sum(p.numel() for p in policy.parameters())
        plugin = FullyShardedDataParallelPlugin(
            fsdp_version=2,
            reshard_after_forward=False,  # shard_grad_op: the copy frees its gathered layers all the same
            auto_wrap_policy="transformer_based_wrap",
            cpu_ram_efficient_loading=False,
            mixed_precision_policy={"param_dtype": torch.bfloat16, "reduce_dtype": torch.float32} if mixed == "bf16" else None,
        )
        accelerator = types.SimpleNamespace(
            state=types.SimpleNamespace(fsdp_plugin=plugin), torch_device_mesh=None, parallelism_config=None,
            is_main_process=rank == 0, mixed_precision=mixed, device=torch.device("cpu"),
        )
        policy = fsdp2_prepare_model(accelerator, policy)  # mixed precision: float32 master weights
        policy_dtype = str(next(policy.parameters()).dtype)
        reference = preference.fsdp_reference(policy, preference.fsdp_plugin_shard(accelerator), device="cpu", dtype=dtype)
        held = sum(p.to_local().numel() for p in reference.parameters())
        with torch.no_grad():
            want = policy(input_ids=ids).logits.float()
            got = reference(input_ids=ids).logits.float()
            resharded = all(type(p).__name__ == "DTensor" for p in reference.parameters())
            for p in policy.parameters():  # training the policy leaves the copy as it was
                p.add_(0.5)
            after = reference(input_ids=ids).logits.float()
        results[f"tied={tied},mixed={mixed}"] = {
            "diff": (got - want).abs().max().item(),
            "moved": (after - got).abs().max().item(),
            "resharded": resharded,
            "frozen": not any(p.requires_grad for p in reference.parameters()) and not reference.training,
            "held": held,
            "total": total,
            "dtype": str(next(reference.parameters()).dtype),
            "policy_dtype": policy_dtype,
        }
    Path(out_dir, f"{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def test_the_fsdp_plugins_live_reference_is_a_sharded_copy_of_the_policy(tmp_path: Path) -> None:
    """The GPU path's copy, run where it can be: its weights are the policy's as accelerate sharded them (the same
    logits, also with tied embeddings and under bf16 mixed precision, where the policy keeps float32 master weights
    and the copy the model's bfloat16), half of it on each of 2 processes, frozen, its layers freed after the forward
    under shard_grad_op too, and untouched when the policy changes."""
    import textwrap

    script = textwrap.dedent(
        f"""\
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import torch.multiprocessing as mp
        import accelerate.utils.fsdp_utils, transformers, recipec.runtime.preference
        from transformers import LlamaForCausalLM
        from test_distributed import _plugin_reference
        if __name__ == "__main__":  # forked: the processes share the imports made once here
            mp.start_processes(_plugin_reference, args=(2, sys.argv[1] + "/init", sys.argv[1]), nprocs=2, start_method="fork")
        """
    )
    env = dict(_env(), OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    for rank in range(2):
        for case, r in json.loads((tmp_path / f"{rank}.json").read_text()).items():
            assert r["diff"] == 0 and r["moved"] == 0, (rank, case, r)
            assert r["resharded"] and r["frozen"], (rank, case)
            assert r["total"] / 2 <= r["held"] < 0.55 * r["total"], (rank, case, r)
            mixed = case.endswith("bf16")
            assert r["dtype"] == ("torch.bfloat16" if mixed else "torch.float32"), case
            assert r["policy_dtype"] == "torch.float32", case


def test_a_world_size_other_than_the_built_one_stops_before_training(tmp_path: Path) -> None:
    """Built for 2 processes, started as 1: the accumulation would be wrong, so it stops and says why."""
    project = _project(tmp_path, RECIPE)
    build_dir = _build(project, *STEPS, "launch.num_processes=2")
    proc = forkrun.run([sys.executable, str(build_dir / "train.py")], env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "1 processes were started but the recipe says launch.num_processes = 2" in proc.stderr
    assert not (project / "runs" / "tiny" / "metrics.jsonl").exists()


SLOW_STAGE = """
import runpy, sys, time

build_dir, delay = sys.argv[1], float(sys.argv[2])
sys.path.insert(0, build_dir)
from recipec_runtime import stage

lookup = stage.lookup


def slow_lookup(request):  # called by the main process only: the others wait for its entry
    time.sleep(delay)
    return lookup(request)


stage.lookup = slow_lookup
sys.argv = [build_dir + "/train.py"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_the_collective_timeout_is_how_long_the_others_wait_for_the_data_stage(tmp_path: Path) -> None:
    """launch.collective_timeout_minutes reaches the processes' default group: while the main process takes 8 s
    over the data stage's entry, the other process gives up after 0.05 minutes (3 s) and the run fails; with
    LLaMA-Factory's ddp_timeout of 180,000,000 s (3,000,000 minutes) it waits and trains."""
    project = _project(tmp_path, RECIPE)
    (project / "slow.py").write_text(SLOW_STAGE)
    settings = ["train.max_steps=3", "train.save_every=0", "train.eval_every=0", "launch.num_processes=2"]
    short = _build(project, *settings, "launch.collective_timeout_minutes=0.05")
    failed = _launch(short, script=[str(project / "slow.py"), str(short), "8"], expect=None)
    assert failed.returncode != 0
    assert "timed out" in (failed.stdout + failed.stderr).lower(), failed.stderr[-3000:]
    assert not (project / "runs" / "tiny" / "metrics.jsonl").exists()
    long = _build(project, *settings, "launch.collective_timeout_minutes=3000000")
    started = time.monotonic()
    _launch(long, script=[str(project / "slow.py"), str(long), "8"])
    assert time.monotonic() - started > 8  # the other process waited out the main process's data stage
    assert len([m for m in _metrics(project / "runs" / "tiny") if "loss" in m]) == 3
