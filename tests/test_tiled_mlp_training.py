"""`model.tiled_mlp` through the generated script (slow): tiled, a run logs the losses, gradient norms and
held-out losses of the untiled run and saves its weights, on one process, with gradient checkpointing, and
over two processes under DDP (each weight's gradient all-reduced once), FSDP 2 and ZeRO-3 (every process
calls the MLP's linears as often)."""

from __future__ import annotations

from pathlib import Path

import pytest

import forkrun
from conftest import accelerate_launch
from test_training import TINY, _build, _env, _metrics, _project, _train, _weights

pytestmark = pytest.mark.slow

SETTINGS = ["train.max_steps=4", "train.save_every=0", "train.eval_every=2", "train.log_every=1"]
RECIPE = TINY.replace("attention_dropout = 0.1", "attention_dropout = 0.0")


def _series(metrics: list[dict], key: str) -> list[float]:
    return [m[key] for m in metrics if key in m]


SHARDED = {
    "fsdp": ["launch.num_processes=2", 'launch.strategy="fsdp"'],  # torch's fully_shard over gloo
    # ZeRO-3 gathers a linear's weights on every call: both processes must call the MLP's as often
    "zero3": ["launch.num_processes=2", 'launch.strategy="deepspeed"', "launch.deepspeed.zero_stage=3", "launch.cpu=false"],
}


@pytest.mark.parametrize(
    "extra",
    [[], ["launch.num_processes=2"], ["model.gradient_checkpointing=true"], *SHARDED.values()],
    ids=["one process", "ddp", "checkpointing", *SHARDED],
)
def test_a_tiled_run_logs_and_saves_what_the_untiled_run_does(tmp_path: Path, extra: list[str]) -> None:
    runs = {}
    for name, tiled in (("whole", []), ("tiled", ["model.tiled_mlp=true", "model.tiled_mlp_shards=5"])):
        project = _project(tmp_path / name, RECIPE)
        build_dir = _build(project, *SETTINGS, *extra, *tiled)
        if any(x.startswith("launch.num_processes=") for x in extra):
            proc = forkrun.run(
                accelerate_launch(build_dir / "accelerate_config.yaml", str(build_dir / "train.py")),
                env=_env(), capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-6000:]
        else:
            proc = _train(build_dir)
        if tiled:
            assert "tiled MLP: the MLPs of 2 decoder layers, 5 tiles" in proc.stdout + proc.stderr
        runs[name] = project / "runs" / "tiny"
    whole, tiled = _metrics(runs["whole"]), _metrics(runs["tiled"])
    for key in ("loss", "grad_norm", "eval_loss"):
        want = _series(whole, key)
        assert len(want) >= 2, key
        assert _series(tiled, key) == pytest.approx(want, rel=1e-5, abs=1e-6), key
    wa, wb = _weights(runs["whole"]), _weights(runs["tiled"])
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5
