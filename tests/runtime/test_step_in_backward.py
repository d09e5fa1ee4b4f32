"""`optim.step_in_backward` (recipec_runtime/optimizers.py StepInBackward): each parameter steps as
its gradient is finished, against the same optimizer stepped after the backward pass: the same
weights bit for bit for every optimizer whose state is per parameter, a state dict that either
way loads, the schedule's LR, the gradient norm clip_grad_norm_ measures, and under FSDP 2 over
two gloo processes the same shards as the step after the backward pass."""

from __future__ import annotations

import copy
import os
import socket
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from recipec.runtime import optimizers as O  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_optimizers import LR, SPECS, grads_step, same_weights, spec, tiny_model  # noqa: E402

NAMES = ["adamw", "muon", "adafactor", "lion", "sgd"]
MODULES = {"lion": "lion_pytorch"}


def fused_step(model, stepper: O.StepInBackward, seed: int) -> float:
    """One step with the optimizer in the backward pass; the gradient norm it measured."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 64, (2, 12), generator=g)
    model(input_ids=x, labels=x).loss.backward()
    assert all(p.grad is None for p in model.parameters())  # each freed as it stepped
    return float(stepper.finish())


def plain_step(model, opt, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 64, (2, 12), generator=g)
    model(input_ids=x, labels=x).loss.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return norm


@pytest.mark.parametrize("name", NAMES)
def test_stepping_in_the_backward_pass_gives_the_weights_of_stepping_after_it(name: str) -> None:
    pytest.importorskip(MODULES.get(name, "torch"))
    after, inside = tiny_model(), tiny_model()
    opt_after, opt_inside = O.build(after, spec(name)), O.build(inside, spec(name))
    stepper = O.StepInBackward(opt_inside)
    for seed in range(3):
        norm_after = plain_step(after, opt_after, seed)
        norm_inside = fused_step(inside, stepper, seed)
        assert norm_inside == pytest.approx(norm_after, rel=1e-6)
    assert not same_weights(inside, tiny_model())  # it moved
    assert same_weights(inside, after)
    # the state dict is the optimizer's own: the same groups, and the same state under the same keys
    def flat(d):
        sides = [d] if "state" in d else list(d.values())  # Muon's holds its two sides
        return [(i, k, v) for side in sides for i, s in sorted(side["state"].items()) for k, v in sorted(s.items())]

    a, b = opt_after.state_dict(), opt_inside.state_dict()
    groups = lambda d: [g for side in ([d] if "state" in d else d.values()) for g in side["param_groups"]]  # noqa: E731
    assert groups(a) == groups(b)
    assert [(i, k) for i, k, _ in flat(a)] == [(i, k) for i, k, _ in flat(b)]
    assert all(torch.equal(torch.as_tensor(x), torch.as_tensor(y)) for (_, _, x), (_, _, y) in zip(flat(a), flat(b)))

def test_the_groups_lr_and_weight_decay_hold_per_parameter() -> None:
    """[[optim.groups]] with their own LR multiplier and weight decay, under a schedule."""
    groups = [{"params": ["embeddings"], "lr_scale": 0.1}, {"params": ["norms"], "weight_decay": 0.5}]
    s = {**spec("adamw"), "groups": groups}
    after, inside = tiny_model(), tiny_model()
    opt_after, opt_inside = O.build(after, s), O.build(inside, s)
    sched_after = torch.optim.lr_scheduler.LambdaLR(opt_after, lambda step: (step + 1) / 3)
    sched_inside = torch.optim.lr_scheduler.LambdaLR(opt_inside, lambda step: (step + 1) / 3)
    stepper = O.StepInBackward(opt_inside)
    for seed in range(3):
        plain_step(after, opt_after, seed)
        sched_after.step()
        fused_step(inside, stepper, seed)
        sched_inside.step()
    assert same_weights(inside, after)
    assert [g["lr"] for g in opt_inside.param_groups] == [g["lr"] for g in opt_after.param_groups]


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_a_state_saved_by_either_way_continues_the_other_bitwise(name: str) -> None:
    """Two plain steps, the state dict loaded by a run stepping in the backward pass (after its hooks are
    set: loading replaces the group dicts), two more: the uninterrupted plain run; and the reverse."""
    straight = tiny_model()
    opt = O.build(straight, spec(name))
    for seed in range(4):
        plain_step(straight, opt, seed)
    for first_inside in (False, True):
        first = tiny_model()
        opt1 = O.build(first, spec(name))
        stepper1 = O.StepInBackward(opt1) if first_inside else None
        for seed in range(2):
            fused_step(first, stepper1, seed) if first_inside else plain_step(first, opt1, seed)
        weights, state = copy.deepcopy(first.state_dict()), copy.deepcopy(opt1.state_dict())
        resumed = tiny_model()
        resumed.load_state_dict(weights)
        opt2 = O.build(resumed, spec(name))
        stepper2 = None if first_inside else O.StepInBackward(opt2)
        opt2.load_state_dict(state)
        for seed in range(2, 4):
            plain_step(resumed, opt2, seed) if first_inside else fused_step(resumed, stepper2, seed)
        assert same_weights(straight, resumed), first_inside


def test_a_second_gradient_in_one_step_is_an_error() -> None:
    model = tiny_model()
    stepper = O.StepInBackward(O.build(model, spec("sgd")))
    x = torch.randint(0, 64, (2, 12))
    model(input_ids=x, labels=x).loss.backward()
    with pytest.raises(RuntimeError, match="got its gradient twice in one optimizer step"):
        model(input_ids=x, labels=x).loss.backward()
    stepper.finish()
    model(input_ids=x, labels=x).loss.backward()  # the next step steps again


def test_frozen_parameters_take_no_hook_and_keep_their_values() -> None:
    model = tiny_model()
    O.freeze(model, {"include": ["layers[-1:]"], "exclude": []})
    before = copy.deepcopy(model.state_dict())
    stepper = O.StepInBackward(O.build(model, spec("adamw")))
    fused_step(model, stepper, 0)
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]) != param.requires_grad, name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fsdp_worker(rank: int, port: int, out: str) -> None:
    from datetime import timedelta

    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=60))
    results = {}
    for inside in (False, True):
        model = tiny_model()
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        opt = O.build(model, spec("adamw"))
        stepper = O.StepInBackward(opt) if inside else None
        norms = []
        for seed in range(3):
            g = torch.Generator().manual_seed(seed * 2 + rank)  # each process its own micro-batch
            x = torch.randint(0, 64, (2, 12), generator=g)
            model(input_ids=x, labels=x).loss.backward()
            if inside:
                assert all(p.grad is None for p in model.parameters())
                norms.append(float(stepper.finish()))
            else:
                norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")).full_tensor()))
                opt.step()
                opt.zero_grad(set_to_none=True)
        results[inside] = ([p.full_tensor().clone() for p in model.parameters()], norms)
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_under_fsdp_2_each_process_steps_its_shards_after_the_reduce_scatter(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    out = str(tmp_path / "results.pt")
    mp.start_processes(_fsdp_worker, args=(_free_port(), out), nprocs=2, start_method="spawn")
    results = torch.load(out)
    (after, norms_after), (inside, norms_inside) = results[False], results[True]
    assert norms_inside == pytest.approx(norms_after, rel=1e-5)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(after, inside, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(after, tiny_model().parameters()))


assert set(NAMES) <= set(LR) and set(NAMES) <= set(SPECS)
