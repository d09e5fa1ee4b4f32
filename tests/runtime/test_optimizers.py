"""The optimizers of `[optim] name`, built by the script's code path (recipec_runtime/optimizers.py),
against their implementations called directly: the same steps bit for bit, a state that
saves and loads into the same continuation, Muon's split, schedule-free's two modes."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from recipec.runtime import optimizers as O  # noqa: E402

SPECS = {
    "adamw": {"betas": [0.9, 0.95], "eps": 1e-8},
    "muon": {"momentum": 0.95, "nesterov": True, "ns_steps": 5, "adjust_lr": None, "adamw_lr": 3e-4, "adamw_betas": [0.9, 0.95], "adamw_eps": 1e-8},
    "adafactor": {"beta2_decay": -0.8, "eps": 1e-3, "d": 1.0},
    "lion": {"betas": [0.9, 0.99]},
    "sgd": {"momentum": 0.9, "nesterov": True},
    "schedule_free_adamw": {"betas": [0.9, 0.999], "eps": 1e-8, "weight_lr_power": 2.0},
}
LR = {"adamw": 1e-3, "muon": 0.02, "adafactor": 1e-2, "lion": 1e-4, "sgd": 0.1, "schedule_free_adamw": 2.5e-3}


def spec(name: str) -> dict:
    return {"name": name, "lr": LR[name], "weight_decay": 0.1, **SPECS[name]}


def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)
    return LlamaForCausalLM(config)


def reference(name: str, model) -> torch.optim.Optimizer:
    """The implementation called directly, with the groups the script builds (decay on 2-D and up only)."""
    params = [(n, p) for n, p in model.named_parameters()]
    decay = [p for _, p in params if p.ndim >= 2]
    rest = [p for _, p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
    s = spec(name)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=s["lr"], betas=(0.9, 0.95), eps=1e-8)
    if name == "adafactor":
        return torch.optim.Adafactor(groups, lr=s["lr"], beta2_decay=-0.8, eps=(None, 1e-3), d=1.0)
    if name == "lion":
        from lion_pytorch import Lion

        return Lion(groups, lr=s["lr"], betas=(0.9, 0.99))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=s["lr"], momentum=0.9, nesterov=True)
    if name == "schedule_free_adamw":
        from schedulefree import AdamWScheduleFree

        return AdamWScheduleFree(groups, lr=s["lr"], betas=(0.9, 0.999), eps=1e-8, weight_lr_power=2.0)
    raise AssertionError(name)


def grads_step(model, opt, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 64, (2, 12), generator=g)
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def same_weights(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("name", ["adamw", "adafactor", "lion", "sgd", "schedule_free_adamw"])
def test_the_scripts_optimizer_steps_like_the_implementation(name: str) -> None:
    pytest.importorskip({"lion": "lion_pytorch", "schedule_free_adamw": "schedulefree"}.get(name, "torch"))
    ours, theirs = tiny_model(), tiny_model()
    opt_ours = O.build(ours, spec(name))
    opt_theirs = reference(name, theirs)
    if hasattr(opt_theirs, "train"):  # schedule-free starts in evaluation mode; the script's starts training
        opt_theirs.train()
    for seed in range(3):
        grads_step(ours, opt_ours, seed)
        grads_step(theirs, opt_theirs, seed)
    assert not same_weights(ours, tiny_model())  # it moved
    assert same_weights(ours, theirs)


def test_muon_takes_the_steps_of_torch_muon_and_adamw_side_by_side() -> None:
    ours, theirs = tiny_model(), tiny_model()
    opt = O.build(ours, spec("muon"))
    named = list(theirs.named_parameters())
    hidden = [p for n, p in named if p.ndim == 2 and "embed" not in n and "lm_head" not in n]
    rest = [(n, p) for n, p in named if not (p.ndim == 2 and "embed" not in n and "lm_head" not in n)]
    muon = torch.optim.Muon(hidden, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True, ns_steps=5)
    adamw = torch.optim.AdamW(
        [{"params": [p for _, p in rest if p.ndim >= 2], "weight_decay": 0.1}, {"params": [p for _, p in rest if p.ndim < 2], "weight_decay": 0.0}],
        lr=3e-4, betas=(0.9, 0.95), eps=1e-8,
    )
    for seed in range(3):
        grads_step(ours, opt, seed)
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 64, (2, 12), generator=g)
        theirs(input_ids=x, labels=x).loss.backward()
        muon.step()
        adamw.step()
        muon.zero_grad(set_to_none=True)
        adamw.zero_grad(set_to_none=True)
    assert same_weights(ours, theirs)
    assert "model.embed_tokens.weight" in opt.split["adamw"] and "lm_head.weight" in opt.split["adamw"]
    assert "model.layers.0.self_attn.q_proj.weight" in opt.split["muon"]
    assert all("norm" not in n for n in opt.split["muon"])


def test_a_schedule_scales_both_sides_of_muon_from_their_own_lr() -> None:
    opt = O.build(tiny_model(), spec("muon"))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    assert sorted({g["lr"] for g in opt.param_groups}) == [1.5e-4, 0.01]
    sched.step()
    assert {g["lr"] for g in opt.muon.param_groups} == {0.01}
    assert {g["lr"] for g in opt.adamw.param_groups} == {1.5e-4}


@pytest.mark.parametrize("name", ["adamw", "muon", "adafactor", "lion", "sgd", "schedule_free_adamw"])
def test_a_saved_and_loaded_state_continues_bitwise(name: str) -> None:
    """Two steps, state_dict, a fresh model and optimizer loading both, two more steps: the uninterrupted weights."""
    pytest.importorskip({"lion": "lion_pytorch", "schedule_free_adamw": "schedulefree"}.get(name, "torch"))
    straight = tiny_model()
    opt = O.build(straight, spec(name))
    if hasattr(opt, "train"):
        opt.train()
    for seed in range(4):
        grads_step(straight, opt, seed)

    first = tiny_model()
    opt1 = O.build(first, spec(name))
    if hasattr(opt1, "train"):
        opt1.train()
    for seed in range(2):
        grads_step(first, opt1, seed)
    weights, state = copy.deepcopy(first.state_dict()), copy.deepcopy(opt1.state_dict())
    resumed = tiny_model()
    resumed.load_state_dict(weights)
    opt2 = O.build(resumed, spec(name))
    opt2.load_state_dict(state)
    if hasattr(opt2, "train"):
        opt2.train()
    for seed in range(2, 4):
        grads_step(resumed, opt2, seed)
    assert same_weights(straight, resumed)


def test_schedule_free_evaluates_the_average_and_trains_the_point() -> None:
    pytest.importorskip("schedulefree")
    model = tiny_model()
    opt = O.build(model, spec("schedule_free_adamw"))
    opt.train()
    for seed in range(3):
        grads_step(model, opt, seed)
    train_point = [p.detach().clone() for p in model.parameters()]
    opt.eval()
    average = [p.detach().clone() for p in model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(train_point, average))  # two different points
    opt.train()
    assert all(torch.allclose(a, p, atol=1e-6) for a, p in zip(train_point, model.parameters()))


def test_a_missing_module_is_named() -> None:
    O.MODULES["lion"], saved = "no_such_module_for_lion", O.MODULES["lion"]
    try:
        assert O.missing_module("lion") == "no_such_module_for_lion"
        assert O.missing_module("adamw") is None
    finally:
        O.MODULES["lion"] = saved


# --------------------------------------------------------------------------- parameter groups


def gpt2_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64))


def test_named_sets_follow_the_modules_not_the_names() -> None:
    model = tiny_model()
    names = {id(p): n for n, p in model.named_parameters()}
    sets = {k: sorted(names[i] for i in ids) for k, ids in O.named_sets(model).items()}
    assert sets["embeddings"] == ["model.embed_tokens.weight"]
    assert sets["output"] == ["lm_head.weight"]
    assert len(sets["norms"]) == 2 * 2 + 1 and all("norm" in n for n in sets["norms"])
    assert sets["biases"] == []
    gpt2 = gpt2_model()  # tied output layer; LayerNorm modules named ln_*; Conv1D biases
    names = {id(p): n for n, p in gpt2.named_parameters()}
    sets = {k: sorted(names[i] for i in ids) for k, ids in O.named_sets(gpt2).items()}
    assert sets["embeddings"] == ["transformer.wpe.weight", "transformer.wte.weight"]
    assert sets["output"] == []  # tied to wte
    assert "transformer.ln_f.weight" in sets["norms"] and "transformer.h.0.ln_1.bias" in sets["norms"]
    assert "transformer.h.0.attn.c_attn.bias" in sets["biases"]
    from transformers import LlamaConfig, LlamaForSequenceClassification  # a reward model: its score head is the output

    reward = LlamaForSequenceClassification(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                         num_attention_heads=4, num_labels=1))
    names = {id(p): n for n, p in reward.named_parameters()}
    assert sorted(names[i] for i in O.named_sets(reward)["output"]) == ["score.weight"]


def test_the_default_groups_are_matrices_decayed_and_the_rest_not() -> None:
    model = tiny_model()
    groups = O.param_groups(model, 0.1)
    assert [g["label"] for g in groups] == ["default, decayed", "default, not decayed"]
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim < 2 for p in groups[1]["params"])
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_groups_take_their_parameters_in_order_with_their_lr_and_decay() -> None:
    model = tiny_model()
    groups = O.param_groups(
        model, 0.1, decay="all",
        groups=[{"params": ["embeddings"], "lr_scale": 0.1}, {"params": ["*.mlp.*", "norms"], "lr_scale": 2.0, "weight_decay": 0.0}],
    )
    by_label = {g["label"]: g for g in groups}
    assert list(by_label) == ["default, decayed", "groups[0] (embeddings), decayed", "groups[1] (*.mlp.*, norms)"]
    assert len(by_label["groups[0] (embeddings), decayed"]["params"]) == 1
    assert len(by_label["groups[1] (*.mlp.*, norms)"]["params"]) == 2 * 3 + 2 * 2 + 1
    assert by_label["groups[1] (*.mlp.*, norms)"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt = O.build(model, {**spec("adamw"), "decay": "all", "groups": [{"params": ["embeddings"], "lr_scale": 0.1}]})
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([1e-4, 1e-3])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)  # the schedule scales each group from its own LR
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([5e-5, 5e-4])
    del sched


def test_decay_by_patterns() -> None:
    model = tiny_model()
    groups = O.param_groups(model, 0.1, decay={"include": ["*"], "exclude": ["biases", "norms", "embeddings"]})
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in groups[0]["params"])
    assert "model.embed_tokens.weight" not in decayed and "lm_head.weight" in decayed
    assert all("norm" not in n for n in decayed)


def test_a_group_steps_like_the_implementation_given_the_same_groups() -> None:
    ours, theirs = tiny_model(), tiny_model()
    opt = O.build(ours, {**spec("adamw"), "groups": [{"params": ["embeddings", "output"], "lr_scale": 0.5, "weight_decay": 0.0}]})
    named = list(theirs.named_parameters())
    io = {"model.embed_tokens.weight", "lm_head.weight"}
    rest = [(n, p) for n, p in named if n not in io]
    ref = torch.optim.AdamW(
        [
            {"params": [p for _, p in rest if p.ndim >= 2], "weight_decay": 0.1},
            {"params": [p for _, p in rest if p.ndim < 2], "weight_decay": 0.0},
            {"params": [p for n, p in named if n in io], "weight_decay": 0.0, "lr": 5e-4},
        ],
        lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
    )
    for seed in range(3):
        grads_step(ours, opt, seed)
        grads_step(theirs, ref, seed)
    assert same_weights(ours, theirs)


def test_muon_sides_keep_the_groups() -> None:
    model = tiny_model()
    opt = O.build(model, {**spec("muon"), "groups": [{"params": ["*.self_attn.*", "embeddings"], "lr_scale": 0.5}]})
    muon_lrs = sorted(g["lr"] for g in opt.muon.param_groups)
    adamw_lrs = sorted({g["lr"] for g in opt.adamw.param_groups})
    assert muon_lrs == pytest.approx([0.01, 0.02])  # attention matrices at half Muon's LR, the MLPs at Muon's
    assert adamw_lrs == pytest.approx([1.5e-4, 3e-4])  # the embedding at half AdamW's LR


def test_a_pattern_that_matches_nothing_is_named_with_its_key() -> None:
    model = tiny_model()
    found = O.unmatched(model, {"include": ["*.qproj.*"]}, [{"params": ["*.mlp.*"]}, {"params": ["*.mlp.up_proj.*"]}, {"params": ["biases"]}])
    assert found == [
        (("optim", "decay", "include"), "'*.qproj.*' matches no trainable parameter"),
        (("optim", "groups", 1, "params"), "every parameter it matches belongs to an earlier group"),
        (("optim", "groups", 2, "params"), "'biases' matches no trainable parameter"),
    ]
    with pytest.raises(ValueError, match=r"optim\.groups\[0\]\.params: 'biases' matches no trainable parameter"):
        O.param_groups(model, 0.1, groups=[{"params": ["biases"]}])


def test_peft_adamw_takes_the_groups_over_the_adapter() -> None:
    """The PEFT AdamW (adapters.make_optimizer) builds the same groups over the trainable adapter parameters."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from recipec.runtime import adapters

    model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    opt = adapters.make_optimizer(
        model, {"method": "lora"}, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
        groups=[{"params": ["*.lora_B.*"], "lr_scale": 16.0}],
    )
    by_label = {g["label"]: g for g in opt.param_groups}
    assert list(by_label) == ["default, decayed", "groups[0] (*.lora_B.*), decayed"]
    assert by_label["groups[0] (*.lora_B.*), decayed"]["lr"] == pytest.approx(1.6e-2)
    assert len(by_label["groups[0] (*.lora_B.*), decayed"]["params"]) == 2 * 2  # two layers, q and v
    with pytest.raises(ValueError, match="matches no trainable parameter"):  # the base weights are frozen
        adapters.make_optimizer(model, {"method": "lora"}, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, groups=[{"params": ["*.mlp.*"]}])


def _names(model, ids) -> list[str]:
    return sorted(n for n, p in model.named_parameters() if id(p) in ids)


def test_layer_patterns_pick_decoder_layers_by_index() -> None:
    """`layers[...]` reads the model's transformer blocks (its _no_split_modules) in order, with
    Python's indexing, and an optional glob on the name within the layer."""
    from recipec.runtime.param_patterns import layer_pattern

    assert layer_pattern("layers[-2:]") == (slice(-2, None), "*")
    assert layer_pattern("layers[0]") == (slice(0, 1), "*")
    assert layer_pattern("layers[-1]") == (slice(-1, None), "*")
    assert layer_pattern("layers[1:3].mlp.*") == (slice(1, 3), "mlp.*")
    assert layer_pattern("*.layers.0.*") is None
    for bad in ("layers[]", "layers[a]", "layers[1:2:3]", "layers[0", "layers[0]mlp"):
        with pytest.raises(ValueError, match="layers\\["):
            layer_pattern(bad)
    model = tiny_model()
    sets = O.named_sets(model)

    def picked(pattern: str) -> list[str]:
        return sorted(n for n, p in model.named_parameters() if O._matches(pattern, n, p, sets))

    assert len(sets.layers) == 2
    assert picked("layers[-1]") == sorted(n for n, _ in model.named_parameters() if n.startswith("model.layers.1."))
    assert picked("layers[:1].mlp.*") == ["model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"]
    assert picked("layers[5:]") == [] and picked("layers[0:0]") == []
    gpt2 = gpt2_model()  # blocks named transformer.h.N
    sets = O.named_sets(gpt2)
    assert [n for n, p in gpt2.named_parameters() if O._matches("layers[-1].attn.c_attn.*", n, p, sets)] == [
        f"transformer.h.{len(sets.layers) - 1}.attn.c_attn.weight", f"transformer.h.{len(sets.layers) - 1}.attn.c_attn.bias"
    ]


def test_freezing_trains_the_picked_parameters_like_the_implementation() -> None:
    """`optim.trainable` through the script's path (freeze, then build) takes the steps torch's AdamW
    takes over the same parameters with the rest frozen by hand; the frozen ones keep their values."""
    ours, theirs = tiny_model(), tiny_model()
    before = copy.deepcopy(ours.state_dict())
    trainable = {"include": ["layers[-1]", "norms", "lm_head.*"], "exclude": ["layers[-1].self_attn.q_proj.*"]}
    assert O.freeze(ours, trainable) == (
        sum(p.numel() for n, p in ours.named_parameters() if p.requires_grad),
        sum(p.numel() for p in ours.parameters()),
    )
    picked = sorted(n for n, p in ours.named_parameters() if p.requires_grad)
    by_hand = sorted(
        n for n, _ in theirs.named_parameters()
        if (n.startswith("model.layers.1.") or "norm" in n or n == "lm_head.weight") and n != "model.layers.1.self_attn.q_proj.weight"
    )
    assert picked == by_hand
    for n, p in theirs.named_parameters():
        p.requires_grad_(n in by_hand)
    opt = O.build(ours, spec("adamw"))
    kept = [(n, p) for n, p in theirs.named_parameters() if p.requires_grad]
    ref = torch.optim.AdamW(
        [{"params": [p for _, p in kept if p.ndim >= 2], "weight_decay": 0.1}, {"params": [p for _, p in kept if p.ndim < 2], "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
    )
    assert sum(len(g["params"]) for g in opt.param_groups) == len(kept)
    for seed in range(3):
        grads_step(ours, opt, seed)
        grads_step(theirs, ref, seed)
    assert same_weights(ours, theirs)
    after = ours.state_dict()
    for name in before:
        assert torch.equal(before[name], after[name]) == (name not in by_hand), name


def test_trainable_patterns_that_pick_nothing_are_named_with_their_key() -> None:
    model = tiny_model()
    assert O.trainable_problems(model, {"include": ["*.mlp.*", "layers[7]"], "exclude": ["*.qproj.*", "biases"]}) == [
        (("optim", "trainable", "include", 1), "'layers[7]' matches no parameter (the model has 2 decoder layers)"),
        (("optim", "trainable", "exclude", 0), "'*.qproj.*' matches no parameter"),
    ]
    assert O.trainable_problems(model, {"include": ["layers[0]"], "exclude": ["layers[:1]"]}) == [
        (("optim", "trainable", "exclude"), "excludes every parameter that include picks: nothing would train")
    ]
    with pytest.raises(ValueError, match=r"optim\.trainable\.include\[0\]: 'layers\[7\]' matches no parameter"):
        O.freeze(model, {"include": ["layers[7]"]})
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen by a refused choice
    O.freeze(model, {"include": ["layers[0]"]})
    with pytest.raises(ValueError, match=r"optim\.groups\[0\]\.params: '\*\.layers\.1\.\*' matches no trainable parameter"):
        O.param_groups(model, 0.1, groups=[{"params": ["*.layers.1.*"]}])  # groups choose among what trains
