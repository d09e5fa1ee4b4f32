"""EMA and checkpoint-merge weight averages: values, windows, resume, export."""

import io
import math

import pytest
import torch

from recipec.runtime.averaging import WeightAverage, ema_decay_for_batch


def _linear(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 3).to(dtype)


def _tiny_llama(dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=128
    )
    return LlamaForCausalLM(config).to(dtype)


@torch.no_grad()
def _train_step(model, step):
    """Stand-in for an optimizer step: a deterministic change of every parameter."""
    gen = torch.Generator().manual_seed(1000 + step)
    for p in model.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=gen).to(p.dtype))


def _weights(model):
    return {name: p.detach().clone().float() for name, p in model.named_parameters()}


def _assert_close(actual: dict, expected: dict, atol=1e-6):
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=atol)


def _avg_weights(avg):
    return {name: p.detach().clone() for name, p in avg.module.named_parameters()}


def _clone_state(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


# -- ema_decay_for_batch -------------------------------------------------------


def test_ema_decay_for_batch():
    assert ema_decay_for_batch(0.999, 256, 256) == 0.999
    assert ema_decay_for_batch(0.999, 512, None) == 0.999
    assert ema_decay_for_batch(0.99, 512, 256) == pytest.approx(0.99**2, rel=1e-15)
    assert ema_decay_for_batch(0.81, 128, 256) == pytest.approx(0.9, rel=1e-15)
    # same horizon in samples: rho_k ** (1 / k) == rho
    assert ema_decay_for_batch(0.999, 1024, 64) ** (64 / 1024) == pytest.approx(0.999, rel=1e-12)
    for bad in (0.0, 1.0, -0.5, 1.5, math.nan, True, "0.9"):
        with pytest.raises(ValueError, match="decay"):
            ema_decay_for_batch(bad, 256, 256)
    for batch, ref in ((0, 256), (-1, 256), (256, 0), (256, -8), (2.5, 256), (256, 1.0), (True, 256)):
        with pytest.raises(ValueError, match="positive integer"):
            ema_decay_for_batch(0.99, batch, ref)


# -- EMA -------------------------------------------------------------------------


def test_ema_matches_hand_computed():
    model = _linear()
    decay = 0.9
    avg = WeightAverage(model, "ema", decay=decay)
    expected = None
    for step in range(1, 6):
        _train_step(model, step)
        assert avg.update(model, step) is True
        w = _weights(model)
        expected = w if expected is None else {k: decay * expected[k] + (1 - decay) * w[k] for k in w}
        assert avg.count == step
        _assert_close(_avg_weights(avg), expected)
    assert not torch.equal(avg.module.weight, model.weight)  # really an average


def test_ema_respects_every_and_window():
    model = _linear()
    decay = 0.8
    avg = WeightAverage(model, "ema", decay=decay, every=3, first_step=5, last_step=13)
    expected, averaged = None, []
    for step in range(1, 17):
        _train_step(model, step)
        did = avg.update(model, step)
        assert did == avg.due(step) == (step in (6, 9, 12))
        if did:
            averaged.append(step)
            w = _weights(model)
            expected = w if expected is None else {k: decay * expected[k] + (1 - decay) * w[k] for k in w}
    assert averaged == [6, 9, 12]
    assert avg.count == 3
    _assert_close(_avg_weights(avg), expected)


def test_ema_of_bfloat16_model_is_float32_and_leaves_model_alone():
    model = _linear(dtype=torch.bfloat16)
    avg = WeightAverage(model, "ema", decay=0.5)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in avg.module.parameters())
    expected = None
    for step in range(1, 4):
        _train_step(model, step)
        before = _weights(model)
        avg.update(model, step)
        w = _weights(model)
        _assert_close(w, before, atol=0)
        expected = w if expected is None else {k: 0.5 * expected[k] + 0.5 * w[k] for k in w}
    assert model.weight.dtype == torch.bfloat16
    _assert_close(_avg_weights(avg), expected)


def test_buffers_follow_the_model_and_are_saved():
    """Buffers are not averaged: the average holds the model's buffers at the
    latest snapshot (integer ones too), and they are part of the state."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    avg = WeightAverage(model, "ema", decay=0.9, every=2)
    for step in range(1, 6):
        model.train()
        model(torch.randn(8, 4))  # updates the batch-norm statistics
        _train_step(model, step)
        avg.update(model, step)
        if step == 4:
            at_snapshot = {k: v.clone() for k, v in model.named_buffers()}
    averaged = dict(avg.module.named_buffers())
    assert averaged["1.num_batches_tracked"].dtype == torch.long
    for name, value in at_snapshot.items():
        assert torch.equal(averaged[name], value), name
    assert not torch.equal(averaged["1.running_mean"], model[1].running_mean)  # step 5 is not a snapshot
    assert set(at_snapshot) <= set(avg.state_dict()["weights"])


# -- merge (WSM) -----------------------------------------------------------------


def test_merge_averages_exactly_the_window_snapshots():
    model = _linear()
    avg = WeightAverage(model, "merge", every=2, first_step=3, last_step=9)
    snapshots = []
    for step in range(1, 15):
        _train_step(model, step)
        did = avg.update(model, step)
        assert did == (step in (4, 6, 8))
        if did:
            snapshots.append(_weights(model))
    assert avg.count == 3 == len(snapshots)
    mean = {k: torch.stack([s[k] for s in snapshots]).mean(0) for k in snapshots[0]}
    _assert_close(_avg_weights(avg), mean)
    # the steps after the window changed the model but not the average
    assert not torch.allclose(model.weight.float(), mean["weight"], atol=1e-3)


def test_merge_window_ends_included_and_open_end():
    model = _linear()
    avg = WeightAverage(model, "merge", every=5, first_step=10, last_step=20)
    assert [s for s in range(1, 30) if avg.due(s)] == [10, 15, 20]
    avg = WeightAverage(model, "merge", every=4)
    assert [s for s in range(0, 14) if avg.due(s)] == [0, 4, 8, 12]
    assert not avg.update(model, 3) and avg.count == 0


def test_invalid_settings():
    model = _linear()
    with pytest.raises(ValueError, match="kind"):
        WeightAverage(model, "swa")
    with pytest.raises(ValueError, match="needs a decay"):
        WeightAverage(model, "ema")
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, "ema", decay=1.0)
    with pytest.raises(ValueError, match="no decay"):
        WeightAverage(model, "merge", decay=0.9)
    with pytest.raises(ValueError, match="every"):
        WeightAverage(model, "merge", every=0)
    with pytest.raises(ValueError, match="first_step"):
        WeightAverage(model, "merge", first_step=-1)
    with pytest.raises(ValueError, match="last_step"):
        WeightAverage(model, "merge", first_step=10, last_step=9)
    avg = WeightAverage(model, "ema", decay=0.9)
    with pytest.raises(ValueError, match="positive integer"):
        avg.update(model, 0)
    avg.update(model, 2)
    with pytest.raises(ValueError, match="not after"):
        avg.update(model, 2)
    with pytest.raises(ValueError, match="does not match"):
        avg.update(torch.nn.Sequential(model, torch.nn.Linear(3, 3)), 3)


# -- resume ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, options", [("ema", {"decay": 0.7, "every": 2}), ("merge", {"every": 2, "first_step": 2})]
)
def test_interrupted_and_restored_continues_identically(kind, options):
    model = _linear()
    straight = WeightAverage(model, kind, **options)
    for step in range(1, 8):
        _train_step(model, step)
        straight.update(model, step)
    saved = _clone_state(straight.state_dict())
    assert saved["count"] == straight.count == 3

    # a new process: a fresh model and average, restored from the saved state
    restored = WeightAverage(_linear(seed=1), kind, **options)
    assert not torch.equal(restored.module.weight, straight.module.weight)
    restored.load_state_dict(saved)
    assert restored.count == straight.count
    for step in range(8, 14):
        _train_step(model, step)
        assert straight.update(model, step) == restored.update(model, step)
    assert restored.count == straight.count == 6
    a, b = straight.state_dict(), restored.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        if key == "weights":
            assert a[key].keys() == b[key].keys()
            assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
        else:
            assert a[key] == b[key]


def test_load_rejects_other_settings():
    model = _linear()
    avg = WeightAverage(model, "ema", decay=0.9)
    avg.update(model, 1)
    state = _clone_state(avg.state_dict())
    with pytest.raises(ValueError, match="saved with"):
        WeightAverage(model, "ema", decay=0.95).load_state_dict(state)
    with pytest.raises(ValueError, match="saved with"):
        WeightAverage(model, "merge").load_state_dict(state)


def test_accelerate_save_state_and_load_state(tmp_path):
    from accelerate import Accelerator

    model = _linear()
    accelerator = Accelerator(cpu=True)
    avg = WeightAverage(model, "ema", decay=0.9, every=2)
    accelerator.register_for_checkpointing(avg)
    for step in range(1, 6):
        _train_step(model, step)
        avg.update(model, step)
    accelerator.save_state(str(tmp_path / "ckpt"))
    assert list((tmp_path / "ckpt").glob("custom_checkpoint_0.pkl"))

    accelerator2 = Accelerator(cpu=True)
    avg2 = WeightAverage(_linear(seed=3), "ema", decay=0.9, every=2)
    accelerator2.register_for_checkpointing(avg2)
    accelerator2.load_state(str(tmp_path / "ckpt"))
    a, b = avg.state_dict(), avg2.state_dict()
    assert avg2.count == avg.count == 2
    assert {k: v for k, v in a.items() if k != "weights"} == {k: v for k, v in b.items() if k != "weights"}
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])


# -- export ----------------------------------------------------------------------


@pytest.mark.parametrize("kind, options", [("ema", {"decay": 0.6}), ("merge", {"every": 2})])
def test_save_pretrained_writes_the_average(tmp_path, kind, options):
    from transformers import AutoModelForCausalLM

    model = _tiny_llama(torch.bfloat16)
    avg = WeightAverage(model, kind, **options)
    for step in range(1, 6):
        _train_step(model, step)
        avg.update(model, step)
    live = {k: v.clone() for k, v in model.state_dict().items()}

    avg.save_pretrained(model, tmp_path / "avg")

    # the live model is untouched: same tensors, same values, same dtype
    after = model.state_dict()
    assert after.keys() == live.keys()
    assert all(torch.equal(after[k], live[k]) and after[k].dtype == live[k].dtype for k in live)
    assert model.dtype == torch.bfloat16
    assert (tmp_path / "avg" / "model.safetensors").is_file()

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "avg", dtype=torch.float32)
    expected = avg.module.state_dict()
    got = loaded.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    # and it really is an average, not the last weights
    assert not torch.equal(got["lm_head.weight"], model.lm_head.weight.float())


def test_save_pretrained_refuses_without_snapshots_or_with_state_dict(tmp_path):
    model = _tiny_llama()
    avg = WeightAverage(model, "merge", every=10, first_step=10)
    avg.update(model, 5)
    with pytest.raises(RuntimeError, match="nothing to save"):
        avg.save_pretrained(model, tmp_path / "a")
    avg.update(model, 10)
    with pytest.raises(TypeError, match="state_dict"):
        avg.save_pretrained(model, tmp_path / "a", state_dict=model.state_dict())
    assert not (tmp_path / "a").exists()

