"""`optim.step_in_backward` through the generated script (slow): each parameter steps inside the
backward pass and the run logs the losses, gradient norms and held-out losses of the same recipe
stepped after the backward pass, and saves its weights: pre-training on one process (bit for
bit, and under LoRA), killed after a checkpoint it resumes bit for bit, and fine-tuning on
conversations of uneven lengths (the mean over the step's supervised tokens taken before the
backward pass) on one process and under FSDP 2 over two."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import forkrun
import test_sft as sft
from conftest import accelerate_launch
from test_training import TINY, _assert_killed_run_resumes_bitwise, _assert_same_weights, _build, _env, _metrics, _project, _train, _weights

pytestmark = pytest.mark.slow

PLAIN = "[optim]\nlr = 1e-2\ngrad_clip = 0\n"
IN_BACKWARD = PLAIN + "step_in_backward = true\n"
LORA = '\n[peft]\nmethod = "lora"\nr = 4\ntarget_modules = ["q_proj", "v_proj"]\n'


def _recipe(optim: str, extra: str = "") -> str:
    text = TINY.replace("[optim]\nlr = 1e-2\n", optim).replace("batch_size = 8", "batch_size = 4")  # one micro-batch a step
    return text + extra


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def _series(metrics: list[dict], key: str) -> list[float]:
    return [m[key] for m in metrics if key in m]


@pytest.mark.parametrize("extra", ["", LORA], ids=["full", "lora"])
def test_pretraining_logs_and_saves_what_stepping_after_the_backward_pass_does(tmp_path: Path, extra: str) -> None:
    runs = {}
    for name, optim in (("after", PLAIN), ("inside", IN_BACKWARD)):
        project = _project(tmp_path / name, _recipe(optim, extra))
        proc = _train(_build(project))
        runs[name] = project / "runs" / "tiny"
    after, inside = _metrics(runs["after"]), _metrics(runs["inside"])
    assert len(_series(after, "loss")) == 8
    for key in ("loss", "eval_loss", "lr"):
        assert _series(inside, key) == _series(after, key), key
    assert _series(inside, "grad_norm") == pytest.approx(_series(after, "grad_norm"), rel=1e-6)
    if extra:  # the adapter
        from safetensors.torch import load_file

        wa, wb = (load_file(str(runs[n] / "model" / "adapter_model.safetensors")) for n in ("after", "inside"))
        assert wa.keys() == wb.keys() and all(torch_equal(wa[k], wb[k]) for k in wa)
    else:
        _assert_same_weights(runs["after"], runs["inside"])
    assert "StepInBackward" in (tmp_path / "inside" / "build" / "tiny" / "train.py").read_text()
    assert proc.returncode == 0


def test_killed_after_a_checkpoint_resumes_bitwise(tmp_path: Path) -> None:
    _assert_killed_run_resumes_bitwise(tmp_path, _recipe(IN_BACKWARD))


@pytest.mark.parametrize("processes", [1, 2], ids=["one process", "fsdp 2 over two"])
def test_fine_tuning_takes_the_mean_over_the_steps_tokens_before_the_backward_pass(tmp_path: Path, processes: int) -> None:
    """Conversations of 1 to 30-word answers: the processes' micro-batches hold different numbers of supervised
    tokens, so each process's share of the step's mean is known only from the count summed over them."""
    model = tmp_path / "model"
    sft._model(model)
    runs = {}
    for name, optim in (("after", PLAIN), ("inside", IN_BACKWARD)):
        project = tmp_path / name
        project.mkdir()
        shutil.copytree(model, project / "model")
        sft._project(project, "./model", packing=True, micro=8 // processes, processes=processes)
        recipe = project / "recipes" / "chat.toml"
        text = recipe.read_text().replace("[optim]\nlr = 1e-2\n", optim).replace("max_steps = 3", "max_steps = 4")
        if processes > 1:
            text += 'strategy = "fsdp"\n'  # torch's fully_shard over gloo
        recipe.write_text(text.replace("eval_every = 0\neval_batches = 0", "eval_every = 2\neval_batches = 2"))
        runs[name] = sft._train(project, processes=processes)
    for key in ("loss", "grad_norm", "eval_loss"):
        want = _series(runs["after"], key)
        assert len(want) >= 2, key
        assert _series(runs["inside"], key) == pytest.approx(want, rel=1e-5, abs=1e-6), key
    wa, wb = _weights(tmp_path / "after" / "runs" / "chat"), _weights(tmp_path / "inside" / "runs" / "chat")
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5
    moved = _weights(tmp_path / "inside" / "runs" / "chat")
    assert any(k for k in moved)


assert accelerate_launch and forkrun and _env  # the helpers the module shares with its neighbours
