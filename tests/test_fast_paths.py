"""Fast paths a recipe can ask for: attention kernel, torch.compile, AdamW implementation,
TF32, pinned memory; what the recipe rules out is an error at its key, what the machine
rules out stops the script before any data is read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recipec.compiler import build, plan_recipe
from recipec.diagnostics import RecipeError


def _errors(path: Path) -> list:
    with pytest.raises(RecipeError) as caught:
        plan_recipe(path, project=path.parent)
    return [d for d in caught.value.diagnostics if d.severity == "error"]


def _line(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_flash_attention_on_cpu_is_an_error_at_the_key(write_recipe) -> None:  # noqa: ANN001
    path = write_recipe({"model.attention": "flash_attention_2", "launch.cpu": True, "launch.mixed_precision": "bf16"})
    (error,) = _errors(path)
    assert error.message == 'attention "flash_attention_2" needs a CUDA GPU, and launch.cpu is true'
    assert error.location.line == _line(path, "attention =")
    assert error.help == 'use attention = "sdpa", which runs on every device'


def test_flash_attention_in_float32_is_an_error(write_recipe) -> None:  # noqa: ANN001
    path = write_recipe({"model.attention": "flash_attention_3"})
    (error,) = _errors(path)
    assert error.message == 'attention "flash_attention_3" runs in fp16 or bf16 only, and this run is float32 throughout'


def test_flash_attention_with_bf16_on_a_gpu_recipe_builds_with_a_preflight(write_recipe, tmp_path: Path) -> None:  # noqa: ANN001
    path = write_recipe({"model.attention": "flash_attention_2", "launch.mixed_precision": "bf16"})
    written, plan = build(path, (), tmp_path / "b", project=tmp_path)
    script = (written.dir / "train.py").read_text()
    assert "from transformers.utils import is_flash_attn_2_available as flash_attention_available" in script
    assert "attn_implementation=attention" in script and plan["attention"] == "flash_attention_2"


def test_flash_attention_stops_the_script_on_a_machine_without_cuda(write_recipe, tmp_path: Path) -> None:  # noqa: ANN001
    path = write_recipe({"model.attention": "flash_attention_2", "launch.mixed_precision": "bf16"})
    written, _ = build(path, (), tmp_path / "b", project=tmp_path)
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(written.dir / "train.py")], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: model.attention is flash_attention_2, which needs a CUDA GPU and its flash-attn package" in proc.stderr
    assert "(this process runs on cpu)" in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("metrics.jsonl"))


def test_compile_mode_needs_compile(write_recipe) -> None:  # noqa: ANN001
    path = write_recipe({"model.compile_mode": "max-autotune"})
    (error,) = _errors(path)
    assert error.message == "`compile_mode` applies only with compile = true"
    assert error.location.line == _line(path, "compile_mode")


def test_compile_goes_through_accelerate(write_recipe, tmp_path: Path) -> None:  # noqa: ANN001
    path = write_recipe({"model.compile": True, "model.compile_mode": "reduce-overhead"})
    written, plan = build(path, (), tmp_path / "b", project=tmp_path)
    script = (written.dir / "train.py").read_text()
    assert 'dynamo_plugin=TorchDynamoPlugin(backend="inductor", mode=compile_mode)' in script
    assert plan["torch_compile"] is True and plan["compile_mode"] == "reduce-overhead"
    assert "compile = " not in script.replace("torch_compile = ", "")  # the builtin is not shadowed


def test_compile_with_fsdp_on_cpu_is_an_error(write_recipe) -> None:  # noqa: ANN001
    path = write_recipe(
        {"model.compile": True, "launch.cpu": True, "launch.strategy": "fsdp", "launch.num_processes": 2}
    )
    assert any(e.message.startswith("torch.compile is not supported with strategy") for e in _errors(path))


@pytest.mark.parametrize(
    "implementation,kwargs", [("auto", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True}), ("for-loop", {"foreach": False})]
)
def test_adamw_implementation_is_passed_to_the_optimizer(write_recipe, tmp_path: Path, implementation: str, kwargs: dict) -> None:  # noqa: ANN001
    path = write_recipe({"optim.implementation": implementation})
    written, plan = build(path, (), tmp_path / "b", project=tmp_path)
    assert plan["adamw_implementation"] == kwargs
    script = (written.dir / "train.py").read_text()
    assert f"adamw_implementation = {kwargs!r}" in script and "**adamw_implementation," in script


def test_every_adamw_implementation_takes_the_same_step_on_cpu() -> None:
    import torch

    from recipec.resolve import ADAMW_IMPLEMENTATION

    results = {}
    for name, kwargs in ADAMW_IMPLEMENTATION.items():
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(16, 8)), torch.nn.Parameter(torch.randn(8))]
        opt = torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, **kwargs)
        for _ in range(3):
            loss = (params[0].sum(1) * params[1].sum()).pow(2).sum()
            loss.backward()
            opt.step()
            opt.zero_grad()
        results[name] = [p.detach().clone() for p in params]
    for name, got in results.items():
        for a, b in zip(got, results["for-loop"]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_adapters_pass_the_implementation_to_adamw() -> None:
    import torch

    from recipec.runtime import adapters

    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    opt = adapters.make_optimizer(
        model, {"method": "lora"}, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, implementation={"fused": True}
    )
    assert all(group["fused"] for group in opt.param_groups)


def test_tf32_and_pin_memory_on_cpu_warn_and_build(write_recipe, tmp_path: Path) -> None:  # noqa: ANN001
    path = write_recipe({"launch.cpu": True, "launch.tf32": True, "data.pin_memory": True})
    written, plan = build(path, (), tmp_path / "b", project=tmp_path)
    messages = {w.message: w.location.line for w in plan.warnings}
    assert messages["launch.tf32 has no effect on CPU: TF32 is a mode of NVIDIA tensor cores"] == _line(path, "tf32")
    assert messages["data.pin_memory has no effect on CPU: it speeds up copies to a GPU"] == _line(path, "pin_memory")
    script = (written.dir / "train.py").read_text()
    assert "torch.backends.cuda.matmul.allow_tf32 = True" in script and "pin_memory=pin_memory" in script


def test_tf32_off_by_default_leaves_torch_alone(write_recipe, tmp_path: Path) -> None:  # noqa: ANN001
    written, _ = build(write_recipe(), (), tmp_path / "b", project=tmp_path)
    assert "allow_tf32" not in (written.dir / "train.py").read_text()


@pytest.mark.slow
def test_fused_eager_run_with_workers_trains_like_the_default(tmp_path: Path) -> None:
    """Fused AdamW, eager attention and 2 loader workers: the same run as the defaults, to
    float tolerance, on CPU. (torch.compile is not trained here: inductor's C++ kernels on
    this machine intermittently fail to load with an undefined libstdc++ symbol;
    benchmarks/fast_paths.py measures it where it works.)"""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_training import TINY, _build, _metrics, _project, _train

    recipe = TINY.replace("attention_dropout = 0.1", "attention_dropout = 0.0")
    default = _project(tmp_path / "default", recipe)
    _train(_build(default))
    fast = _project(tmp_path / "fast", recipe)
    overrides = ('optim.implementation="fused"', 'model.attention="eager"', "data.num_workers=2")
    proc = _train(_build(fast, *overrides))
    script = (fast / "build" / "tiny" / "train.py").read_text()
    assert "adamw_implementation = {'fused': True}" in script and "attention = 'eager'" in script
    losses = lambda run: [m["loss"] for m in _metrics(run / "runs" / "tiny") if "loss" in m]  # noqa: E731
    assert len(losses(fast)) == 8, proc.stderr[-2000:]
    assert losses(fast) == pytest.approx(losses(default), rel=2e-3)
