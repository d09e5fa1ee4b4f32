"""`[loss]` through the generated script (slow): the chunked cross-entropy trains like the plain
one, on one process and under DDP, pre-training and fine-tuning on packed examples; a
mixture of experts trains with its router loss and logs `aux_loss`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import forkrun
import test_sft as sft
from conftest import accelerate_launch
from test_training import TINY, _build, _env, _metrics, _project, _train

pytestmark = pytest.mark.slow

SETTINGS = ["train.max_steps=4", "train.save_every=0", "train.eval_every=2"]
CHUNKED = '\n[loss]\ncross_entropy = "chunked"\nchunk_size = 24\n'  # not a divisor of the batch's tokens


def _launch(build_dir: Path) -> None:
    proc = forkrun.run(
        accelerate_launch(build_dir / "accelerate_config.yaml", str(build_dir / "train.py")),
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]


def _losses(metrics: list[dict], key: str) -> list[float]:
    return [m[key] for m in metrics if key in m]


def test_chunked_pretraining_logs_the_plain_losses_on_one_process_and_two(tmp_path: Path) -> None:
    recipe = TINY.replace("attention_dropout = 0.1", "attention_dropout = 0.0")
    plain = _project(tmp_path / "plain", recipe)
    one = _project(tmp_path / "one", recipe + CHUNKED)
    two = _project(tmp_path / "two", recipe + CHUNKED)
    _train(_build(plain, *SETTINGS))
    _train(_build(one, *SETTINGS))
    _launch(_build(two, *SETTINGS, "launch.num_processes=2"))
    runs = {p.name: _metrics(p / "runs" / "tiny") for p in (plain, one, two)}
    for key in ("loss", "eval_loss", "grad_norm"):
        want = _losses(runs["plain"], key)
        assert len(want) >= 2
        # two processes evaluate other batches (each a shard of eval_batches), so their eval_loss differs anyway
        for name in ("one", "two") if key != "eval_loss" else ("one",):
            assert _losses(runs[name], key) == pytest.approx(want, rel=1e-5, abs=1e-5), (key, name)


def test_chunked_fine_tuning_on_packed_examples_under_ddp(tmp_path: Path) -> None:
    model = tmp_path / "model"
    sft._model(model)
    runs = {}
    for name, extra in (("plain", ""), ("chunked", CHUNKED)):
        project = tmp_path / name
        project.mkdir()
        shutil.copytree(model, project / "model")
        sft._project(project, "./model", packing=True, micro=4, processes=2)
        (project / "recipes" / "chat.toml").write_text((project / "recipes" / "chat.toml").read_text() + extra)
        runs[name] = sft._train(project, processes=2)
    for key in ("loss", "grad_norm"):
        assert _losses(runs["chunked"], key) == pytest.approx(_losses(runs["plain"], key), rel=1e-5, abs=1e-5), key
    assert _losses(runs["chunked"], "eval_loss") == pytest.approx(_losses(runs["plain"], "eval_loss"), rel=1e-5, abs=1e-5)


SHARDED = {
    "fsdp": ["launch.num_processes=2", 'launch.strategy="fsdp"'],  # torch's fully_shard over gloo
    "zero3": ["launch.num_processes=2", 'launch.strategy="deepspeed"', "launch.deepspeed.zero_stage=3", "launch.cpu=false"],
}


@pytest.mark.parametrize("strategy", list(SHARDED))
def test_chunked_under_sharding_logs_the_plain_losses_and_resumes(strategy: str, tmp_path: Path) -> None:
    """FSDP 2 and ZeRO-3 over 2 processes: the chunked cross-entropy logs the plain loss's training and held-out
    losses and gradient norms and saves its weights (an evaluation, which leaves FSDP's root gathered, then a
    checkpoint at steps 2 and 4); killed after the step-2 checkpoint, it resumes to the same losses and weights."""
    from test_distributed import KILL_RANK0, _launch as _launch_with
    from test_training import _weights

    recipe = TINY.replace("attention_dropout = 0.1", "attention_dropout = 0.0")
    settings = ["train.max_steps=4", "train.save_every=2", "train.eval_every=2", "train.eval_batches=0", "train.log_every=1", *SHARDED[strategy]]
    runs = {}
    for name, extra in (("plain", ""), ("chunked", CHUNKED)):
        project = _project(tmp_path / name, recipe + extra)
        _launch(_build(project, *settings))
        runs[name] = project / "runs" / "tiny"
    metrics = {name: _metrics(run_dir) for name, run_dir in runs.items()}
    for key in ("loss", "eval_loss", "grad_norm"):
        want = _losses(metrics["plain"], key)
        assert len(want) >= 3
        assert _losses(metrics["chunked"], key) == pytest.approx(want, rel=1e-5, abs=1e-5), key
    wa, wb = _weights(runs["plain"]), _weights(runs["chunked"])
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5

    killed = _project(tmp_path / "killed", recipe + CHUNKED)
    build_dir = _build(killed, *settings)
    (killed / "killer.py").write_text(KILL_RANK0)
    assert _launch_with(build_dir, script=[str(killed / "killer.py"), str(build_dir), "2"], expect=None).returncode != 0
    _launch(build_dir)
    resumed = _metrics(killed / "runs" / "tiny")
    assert _losses(resumed, "loss")[-2:] == _losses(metrics["chunked"], "loss")[-2:]
    wc = _weights(killed / "runs" / "tiny")
    assert all(bool((wb[k] == wc[k]).all()) for k in wb)


def _mixtral(directory: Path) -> None:
    """A tiny Mixtral with the ChatML tokenizer of test_sft, as save_pretrained writes them."""
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    from runtime.chat_fixtures import CHATML_MARKED, chat_tokenizer

    tok = chat_tokenizer(CHATML_MARKED)
    torch.manual_seed(0)
    config = MixtralConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=256,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    MixtralForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)


def test_a_mixture_of_experts_trains_with_its_router_loss_and_logs_it(tmp_path: Path) -> None:
    model = tmp_path / "model"
    _mixtral(model)
    runs = {}
    for name, micro, extra in (
        ("none", 8, ""),
        ("plain", 8, "\n[loss]\nrouter_aux_loss_coef = 0.5\n"),
        ("plain 4x2", 4, "\n[loss]\nrouter_aux_loss_coef = 0.5\n"),
        ("chunked 4x2", 4, CHUNKED + "router_aux_loss_coef = 0.5\n"),
    ):
        project = tmp_path / name.replace(" ", "-")
        project.mkdir()
        shutil.copytree(model, project / "model")
        sft._project(project, "./model", packing=True, micro=micro, processes=1)
        (project / "recipes" / "chat.toml").write_text((project / "recipes" / "chat.toml").read_text() + extra)
        runs[name] = sft._train(project)
    assert not _losses(runs["none"], "aux_loss")
    for name in ("plain", "plain 4x2"):
        aux = _losses(runs[name], "aux_loss")
        assert len(aux) == 3 and all(a > 0 for a in aux), name
    # step 1 is the same model on the same batch, one micro-batch: the loss adds 0.5 * aux_loss to the
    # cross-entropy. (Accumulated, the loss weighs each micro-batch's term by its supervised tokens where
    # aux_loss is the micro-batches' plain mean, so there the sum holds only to about 1e-5.)
    aux = _losses(runs["plain"], "aux_loss")
    assert runs["plain"][1]["loss"] == pytest.approx(runs["none"][1]["loss"] + 0.5 * aux[0], rel=1e-6)
    for key in ("loss", "aux_loss", "grad_norm", "eval_loss"):
        assert _losses(runs["chunked 4x2"], key) == pytest.approx(_losses(runs["plain 4x2"], key), rel=1e-5, abs=1e-5), key


def test_dft_trains_on_the_weighted_loss_and_evaluates_the_plain_one(tmp_path: Path) -> None:
    """loss.type "dft" through the script: the plain (from the model's logits) and the chunked paths log the same
    training losses, held-out losses and gradient norms; before any step the held-out loss is the nll run's, while
    the first training loss is below it (each token's NLL times its probability, well below 1 for a fresh model)."""
    recipe = TINY.replace("attention_dropout = 0.1", "attention_dropout = 0.0")
    runs = {}
    for name, extra in (
        ("none", ""),
        ("plain", '\n[loss]\ntype = "dft"\n'),
        ("chunked", CHUNKED + 'type = "dft"\n'),
    ):
        project = _project(tmp_path / name, recipe + extra)
        _train(_build(project, *SETTINGS, "train.eval_at_start=true"))
        runs[name] = _metrics(project / "runs" / "tiny")
    for key in ("loss", "eval_loss", "grad_norm"):
        assert _losses(runs["chunked"], key) == pytest.approx(_losses(runs["plain"], key), rel=1e-5, abs=1e-5), key
    assert _losses(runs["plain"], "eval_loss")[0] == _losses(runs["none"], "eval_loss")[0]  # step 0: the same weights
    assert _losses(runs["plain"], "loss")[0] < 0.5 * _losses(runs["none"], "loss")[0]


def test_label_smoothing_trains_on_the_smoothed_loss_and_evaluates_the_plain_one(tmp_path: Path) -> None:
    """loss.label_smoothing 0.2 through the script: the plain (from the model's logits) and the chunked paths log
    the same training losses, held-out losses and gradient norms; before any step the held-out loss is the
    unsmoothed run's, while the first training loss is above it (the smoothing term)."""
    recipe = TINY.replace("attention_dropout = 0.1", "attention_dropout = 0.0")
    runs = {}
    for name, extra in (
        ("none", ""),
        ("plain", "\n[loss]\nlabel_smoothing = 0.2\n"),
        ("chunked", CHUNKED + "label_smoothing = 0.2\n"),
    ):
        project = _project(tmp_path / name, recipe + extra)
        _train(_build(project, *SETTINGS, "train.eval_at_start=true"))
        runs[name] = _metrics(project / "runs" / "tiny")
    for key in ("loss", "eval_loss", "grad_norm"):
        assert _losses(runs["chunked"], key) == pytest.approx(_losses(runs["plain"], key), rel=1e-5, abs=1e-5), key
    assert _losses(runs["plain"], "eval_loss")[0] == _losses(runs["none"], "eval_loss")[0]  # step 0: the same weights
    assert _losses(runs["plain"], "loss")[0] > _losses(runs["none"], "loss")[0]
    assert _losses(runs["plain"], "loss") != pytest.approx(_losses(runs["none"], "loss"), rel=1e-3)
