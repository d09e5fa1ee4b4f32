"""PEFT adapters: every method trains, counts, saves, reloads and merges; config mappings; target checks."""

import dataclasses
import os
import subprocess
import sys
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from recipec.runtime import adapters  # noqa: E402
from recipec.runtime.adapters import METHODS, RECIPE_KEYS  # noqa: E402

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

QV = ["q_proj", "v_proj"]
STEPS = 8
IDS = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(1))

LINEAR = "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"
LISTING = f"(linear layers: {LINEAR}; embedding layers: embed_tokens)"


@pytest.fixture(autouse=True)
def _quiet():
    # peft warns about things that do not matter on a tiny CPU model (no BOFT CUDA kernel, ...).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _config():
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        vocab_size=128,
        max_position_embeddings=64,
    )


def _base():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(_config())


def _meta_base():
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(_config())


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A word-level tokenizer saved as a transformers tokenizer directory (prompt tuning's text init)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "classify", "the", "sentiment", "of", "this"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("tok")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(path)
    return str(path)


# One training config per method, and variants. lr: per spec, big enough for a visible fall in STEPS.
SPECS = {
    "lora": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": QV},
    "loha": {"method": "loha", "r": 4, "alpha": 4, "target_modules": QV},
    "lokr": {"method": "lokr", "r": 4, "alpha": 4, "target_modules": QV},
    "ia3": {"method": "ia3", "target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]},
    "oft": {"method": "oft", "oft_block_size": 8, "target_modules": QV},
    "boft": {"method": "boft", "boft_block_size": 4, "target_modules": QV},
    "vera": {"method": "vera", "r": 16, "target_modules": QV},
    "adalora": {"method": "adalora", "init_r": 6, "target_r": 4, "tinit": 1, "tfinal": 2, "target_modules": QV},
    "miss": {"method": "miss", "r": 4, "target_modules": QV},
    "ln_tuning": {"method": "ln_tuning", "target_modules": ["input_layernorm", "post_attention_layernorm"]},
    "prefix_tuning": {"method": "prefix_tuning", "num_virtual_tokens": 4},
    "prompt_tuning": {"method": "prompt_tuning", "num_virtual_tokens": 4},
}
VARIANTS = {
    "lora-dora": {"method": "lora", "r": 4, "alpha": 8, "target_modules": QV, "dora": True},
    "lora-rslora-gaussian-all-linear": {
        "method": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear", "rslora": True, "init": "gaussian",
    },
    "lora-pissa": {"method": "lora", "r": 4, "alpha": 4, "target_modules": QV, "init": "pissa"},
    "lora-olora": {"method": "lora", "r": 4, "alpha": 4, "target_modules": QV, "init": "olora"},
    "lora-modules_to_save": {"method": "lora", "r": 4, "target_modules": QV, "modules_to_save": ["lm_head"]},
    "oft-r": {"method": "oft", "r": 4, "target_modules": QV},
    "boft-block_num": {"method": "boft", "boft_block_num": 4, "target_modules": QV},
    "prefix_tuning-projection": {
        "method": "prefix_tuning", "num_virtual_tokens": 4, "prefix_projection": True, "encoder_hidden_size": 16,
    },
}
LR = {"ia3": 5e-2, "ln_tuning": 5e-2, "prompt_tuning": 1e-1, "vera": 5e-2, "oft": 5e-2, "boft": 5e-2}

# Trainable parameter counts of SPECS and VARIANTS on the tiny Llama (total: 28 832 base parameters + trainable,
# except ln_tuning, which swaps norms for trainable copies, and modules_to_save, which keeps the original too).
COUNTS = {
    "lora": 1024,
    "loha": 2048,
    "lokr": 320,
    "ia3": 256,
    "oft": 448,
    "boft": 640,
    "vera": 192,
    "adalora": 1560,
    "miss": 512,
    "ln_tuning": 128,
    "prefix_tuning": 512,
    "prompt_tuning": 128,
    "lora-dora": 1152,
    "lora-rslora-gaussian-all-linear": 4352,
    "lora-pissa": 1024,
    "lora-olora": 1024,
    "lora-modules_to_save": 5120,
    "oft-r": 448,
    "boft-block_num": 1152,
    "prefix_tuning-projection": 2832,
}


def _train(model, spec, lr):
    optimizer = adapters.make_optimizer(model, spec, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    model.train()
    losses = []
    for step in range(1, STEPS + 1):
        loss = model(input_ids=IDS, labels=IDS).loss
        loss.backward()
        optimizer.step()
        adapters.after_optimizer_step(model, spec, step)
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def _logits(model):
    model.eval()
    return model(input_ids=IDS).logits


def test_every_method_has_a_spec_and_keys():
    assert set(METHODS) <= set(SPECS)
    assert set(RECIPE_KEYS) == set(METHODS)
    assert set(COUNTS) == set(SPECS) | set(VARIANTS)


@pytest.mark.parametrize("name", list(SPECS) + list(VARIANTS))
def test_method_trains_counts_saves_reloads_and_merges(name, tmp_path):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    spec = {**SPECS, **VARIANTS}[name]
    model = adapters.apply(_base(), spec, total_steps=STEPS)
    assert isinstance(model, PeftModel)

    counts = adapters.trainable_parameters(model)
    assert counts == model.get_nb_trainable_parameters()
    assert counts[0] == COUNTS[name]

    losses = _train(model, spec, LR.get(spec["method"], 2e-2))
    assert losses[-1] < losses[0] - 1e-3, losses
    assert adapters.trainable_parameters(model) == counts

    logits = _logits(model)
    params = {n: p for n, p in model.named_parameters()}
    merged_dir = tmp_path / "merged"
    if spec["method"] in ("prefix_tuning", "prompt_tuning"):
        with pytest.raises(ValueError, match="cannot be merged"):
            adapters.save(model, tmp_path / "adapter", merged_directory=merged_dir)
        assert not (tmp_path / "adapter").exists()
        adapters.save(model, tmp_path / "adapter")
    else:
        adapters.save(model, tmp_path / "adapter", merged_directory=merged_dir)
        merged = LlamaForCausalLM.from_pretrained(merged_dir)
        assert not any("lora" in n or "base_layer" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(_logits(merged), logits, atol=1e-4, rtol=0)
    # The live model kept its adapter and its parameters (the optimizer's), trainable as before.
    assert isinstance(model, PeftModel)
    assert {n: p for n, p in model.named_parameters()}.keys() == params.keys()
    assert all(p is params[n] for n, p in model.named_parameters())
    assert torch.equal(_logits(model), logits)
    assert adapters.trainable_parameters(model) == counts

    reloaded = PeftModel.from_pretrained(_base(), tmp_path / "adapter")
    if spec.get("init") in ("pissa", "olora"):
        # Converted to a rank-2r LoRA of the unmodified base: equal up to float rounding.
        assert reloaded.peft_config["default"].r == 2 * spec["r"]
        torch.testing.assert_close(_logits(reloaded), logits, atol=1e-5, rtol=0)
    elif spec["method"] == "adalora":
        # Saved with the pruned ranks cut out: the same function computed with smaller matrices,
        # whose sums the BLAS may order differently (bit-equal with some kernels, not all).
        assert _adalora_kept_ranks(reloaded, pruned=False) == _adalora_kept_ranks(model, pruned=True)
        torch.testing.assert_close(_logits(reloaded), logits, atol=1e-6, rtol=0)
    else:
        assert torch.equal(_logits(reloaded), logits)


def _adalora_kept_ranks(model, *, pruned: bool) -> dict[str, list]:
    """{layer: [A, E, B, ranknum] of the ranks AdaLoRA's budget kept, as lists of floats}.

    ``pruned``: the layer still holds every rank (the live model) and is cut to the rank
    pattern here, after checking that each dropped rank's singular value is exactly 0 (so
    it adds nothing); otherwise the layer holds only the kept ranks (a reloaded adapter).
    """
    pattern = model.peft_config["default"].rank_pattern
    kept = {}
    for name, module in model.named_modules():
        if "default" not in getattr(module, "lora_E", {}):
            continue
        a, e, b = module.lora_A["default"], module.lora_E["default"], module.lora_B["default"]
        if pruned:
            keep = torch.tensor(pattern[name.removeprefix("base_model.model.") + ".lora_E"])
            assert keep.shape == (e.shape[0],) and not e[~keep].any(), name
            a, e, b = a[keep], e[keep], b[:, keep]
        kept[name] = [t.tolist() for t in (a, e, b, module.ranknum["default"])]
    assert kept
    return kept


@pytest.mark.parametrize("name", list(SPECS) + list(VARIANTS))
def test_meta_model_counts_equal_the_real_ones(name):
    spec = {**SPECS, **VARIANTS}[name]
    if spec.get("init") in ("pissa", "olora"):
        with pytest.raises(ValueError, match="meta-device model"):
            adapters.apply(_meta_base(), spec, total_steps=STEPS)
        spec = {**spec, "init": "default"}
    meta = adapters.apply(_meta_base(), spec, total_steps=STEPS)
    assert all(p.is_meta for p in meta.parameters())
    real = adapters.apply(_base(), spec, total_steps=STEPS)
    assert adapters.trainable_parameters(meta) == adapters.trainable_parameters(real)
    assert adapters.trainable_parameters(meta)[0] == COUNTS[name]


def test_prompt_tuning_text_init(tokenizer_dir):
    spec = {
        "method": "prompt_tuning", "num_virtual_tokens": 4, "init": "text",
        "init_text": "classify the sentiment", "tokenizer": tokenizer_dir,
    }
    base = _base()
    embeddings = base.model.embed_tokens.weight.detach().clone()
    model = adapters.apply(base, spec)
    prompt = model.prompt_encoder["default"].embedding.weight
    # "classify the sentiment" -> ids 1 2 3, repeated to 4 virtual tokens
    assert torch.equal(prompt, embeddings[[1, 2, 3, 1]])
    assert adapters.trainable_parameters(adapters.apply(_meta_base(), spec)) == adapters.trainable_parameters(model)
    losses = _train(model, spec, 1e-1)
    assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------------- config mappings

# Every recipe key of every method, set to a value that is not peft's default, and the config field value expected.
FULL = {
    "lora": (
        {"r": 6, "alpha": 12, "dropout": 0.1, "target_modules": QV, "modules_to_save": ["lm_head"], "bias": "lora_only",
         "rslora": True, "dora": True, "init": "gaussian", "loraplus_lr_ratio": 4.0},
        {"r": 6, "lora_alpha": 12, "lora_dropout": 0.1, "target_modules": set(QV), "modules_to_save": ["lm_head"],
         "bias": "lora_only", "use_rslora": True, "use_dora": True, "init_lora_weights": "gaussian"},
    ),
    "loha": (
        {"r": 6, "alpha": 12, "rank_dropout": 0.1, "module_dropout": 0.2, "target_modules": QV,
         "modules_to_save": ["lm_head"]},
        {"r": 6, "alpha": 12, "rank_dropout": 0.1, "module_dropout": 0.2, "target_modules": set(QV),
         "modules_to_save": ["lm_head"]},
    ),
    "lokr": (
        {"r": 6, "alpha": 12, "rank_dropout": 0.1, "module_dropout": 0.2, "decompose_both": True,
         "decompose_factor": 4, "target_modules": QV, "modules_to_save": ["lm_head"]},
        {"r": 6, "alpha": 12, "rank_dropout": 0.1, "module_dropout": 0.2, "decompose_both": True,
         "decompose_factor": 4, "target_modules": set(QV), "modules_to_save": ["lm_head"]},
    ),
    "ia3": (
        {"target_modules": ["k_proj", "down_proj"], "feedforward_modules": ["down_proj"],
         "modules_to_save": ["lm_head"]},
        {"target_modules": {"k_proj", "down_proj"}, "feedforward_modules": {"down_proj"},
         "modules_to_save": ["lm_head"]},
    ),
    "oft": (
        {"r": 0, "oft_block_size": 16, "module_dropout": 0.1, "coft": True, "eps": 1e-3, "block_share": True,
         "target_modules": QV, "modules_to_save": ["lm_head"]},
        {"r": 0, "oft_block_size": 16, "module_dropout": 0.1, "coft": True, "eps": 1e-3, "block_share": True,
         "target_modules": set(QV), "modules_to_save": ["lm_head"]},
    ),
    "boft": (
        {"boft_block_size": 8, "boft_block_num": 0, "boft_n_butterfly_factor": 2, "boft_dropout": 0.1,
         "target_modules": QV, "modules_to_save": ["lm_head"]},
        {"boft_block_size": 8, "boft_block_num": 0, "boft_n_butterfly_factor": 2, "boft_dropout": 0.1,
         "target_modules": set(QV), "modules_to_save": ["lm_head"]},
    ),
    "vera": (
        {"r": 16, "dropout": 0.1, "d_initial": 0.5, "target_modules": QV, "modules_to_save": ["lm_head"]},
        {"r": 16, "vera_dropout": 0.1, "d_initial": 0.5, "target_modules": set(QV), "modules_to_save": ["lm_head"]},
    ),
    "adalora": (
        {"init_r": 10, "target_r": 5, "tinit": 3, "tfinal": 4, "deltaT": 2, "beta1": 0.5, "beta2": 0.6,
         "orth_reg_weight": 0.2, "total_step": 50, "alpha": 16, "dropout": 0.1, "target_modules": QV,
         "modules_to_save": ["lm_head"]},
        {"init_r": 10, "target_r": 5, "tinit": 3, "tfinal": 4, "deltaT": 2, "beta1": 0.5, "beta2": 0.6,
         "orth_reg_weight": 0.2, "total_step": 50, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": set(QV),
         "modules_to_save": ["lm_head"]},
    ),
    "miss": (
        {"r": 8, "dropout": 0.1, "init_weights": "bat", "target_modules": QV, "modules_to_save": ["lm_head"]},
        {"r": 8, "miss_dropout": 0.1, "init_weights": "bat", "target_modules": set(QV), "modules_to_save": ["lm_head"]},
    ),
    "ln_tuning": (
        {"target_modules": ["norm"], "modules_to_save": ["lm_head"]},
        {"target_modules": ["norm"], "modules_to_save": ["lm_head"]},
    ),
    "prefix_tuning": (
        {"num_virtual_tokens": 7, "prefix_projection": True, "encoder_hidden_size": 24},
        {"num_virtual_tokens": 7, "prefix_projection": True, "encoder_hidden_size": 24},
    ),
    "prompt_tuning": (
        {"num_virtual_tokens": 7, "init": "text", "init_text": "hello", "tokenizer": "some/tokenizer"},
        {"num_virtual_tokens": 7, "prompt_tuning_init": peft.PromptTuningInit.TEXT, "prompt_tuning_init_text": "hello",
         "tokenizer_name_or_path": "some/tokenizer"},
    ),
}


def test_full_specs_cover_every_recipe_key():
    assert set(FULL) == set(METHODS)
    for method, (spec, _) in FULL.items():
        assert set(spec) == set(RECIPE_KEYS[method]), method


@pytest.mark.parametrize("method", METHODS)
def test_every_recipe_key_reaches_its_config_field(method):
    spec, expected = FULL[method]
    config = adapters.peft_config({"method": method, **spec})
    assert type(config).__name__ == adapters._CONFIG_CLASSES[method]
    assert config.task_type == peft.TaskType.CAUSAL_LM
    fields = {f.name: f for f in dataclasses.fields(config)}
    for field in RECIPE_KEYS[method].values():
        assert field is None or field in fields, field
    for field, value in expected.items():
        actual = getattr(config, field)
        assert actual == value, (field, actual, value)
        # A value different from peft's default, so that a key that fails to arrive is seen (oft's r and
        # boft's block_num must stay 0 beside a block size: test_oft_r_and_boft_block_num_... checks them).
        if (method, field) not in {("oft", "r"), ("boft", "boft_block_num")}:
            assert actual != fields[field].default, field


@pytest.mark.parametrize("method", METHODS)
def test_absent_and_none_keys_keep_peft_defaults(method):
    cls = getattr(peft, adapters._CONFIG_CLASSES[method])
    minimal = {"num_virtual_tokens": 4} if method in ("prefix_tuning", "prompt_tuning") else {}
    total = {"total_step": 10} if method == "adalora" else {}
    with_none = {key: None for key in RECIPE_KEYS[method]} | minimal
    expected = cls(task_type="CAUSAL_LM", **minimal, **total)
    for spec in ({"method": method, **minimal}, {"method": method, **with_none}):
        config = adapters.peft_config(spec, total_steps=10)
        assert config.to_dict() == expected.to_dict()


def test_lora_init_and_loraplus_key():
    assert adapters.peft_config({"method": "lora", "init": "default"}).init_lora_weights is True
    assert adapters.peft_config({"method": "lora", "init": "pissa_niter_4"}).init_lora_weights == "pissa_niter_4"
    assert adapters.peft_config({"method": "lora", "init": False}).init_lora_weights is False
    with pytest.raises(ValueError, match="eva"):
        adapters.peft_config({"method": "lora", "init": "eva"})
    assert not hasattr(adapters.peft_config({"method": "lora", "loraplus_lr_ratio": 8.0}), "loraplus_lr_ratio")
    with pytest.raises(ValueError, match="positive"):
        adapters.peft_config({"method": "lora", "loraplus_lr_ratio": 0})


def test_oft_r_and_boft_block_num_alone_turn_the_other_size_off():
    oft = adapters.peft_config({"method": "oft", "r": 4})
    assert (oft.r, oft.oft_block_size) == (4, 0)
    assert adapters.peft_config({"method": "oft"}).oft_block_size == 32
    boft = adapters.peft_config({"method": "boft", "boft_block_num": 4})
    assert (boft.boft_block_num, boft.boft_block_size) == (4, 0)
    with pytest.raises(ValueError):
        adapters.peft_config({"method": "oft", "r": 4, "oft_block_size": 8})


def test_adalora_total_step():
    assert adapters.peft_config({"method": "adalora"}, total_steps=100).total_step == 100
    assert adapters.peft_config({"method": "adalora", "total_step": 40}, total_steps=100).total_step == 40
    with pytest.raises(ValueError, match="total_step"):
        adapters.peft_config({"method": "adalora"})


def test_prompt_learning_needs_virtual_tokens_and_text_init_needs_text():
    with pytest.raises(ValueError, match="num_virtual_tokens"):
        adapters.peft_config({"method": "prefix_tuning"})
    with pytest.raises(ValueError, match="init_text and tokenizer"):
        adapters.peft_config({"method": "prompt_tuning", "num_virtual_tokens": 4, "init": "text", "init_text": "x"})
    with pytest.raises(ValueError, match="prompt_tuning init"):
        adapters.peft_config({"method": "prompt_tuning", "num_virtual_tokens": 4, "init": "zeros"})
    config = adapters.peft_config({"method": "prompt_tuning", "num_virtual_tokens": 4, "init": "sample_vocab"})
    assert config.prompt_tuning_init == peft.PromptTuningInit.SAMPLE_VOCAB


def test_bad_method_and_foreign_keys():
    with pytest.raises(ValueError, match="unknown adapter method 'bone'"):
        adapters.peft_config({"method": "bone"})
    with pytest.raises(ValueError, match=r"adapter method 'ia3' has no key 'r'; its keys are target_modules"):
        adapters.peft_config({"method": "ia3", "r": 8})
    # A foreign key set to None is harmless (a schema that emits every key).
    assert adapters.peft_config({"method": "ia3", "r": None}).peft_type == peft.PeftType.IA3


# ----------------------------------------------------------------------------------- optimizer


def test_weight_decay_only_on_matrices():
    spec = {"method": "lora", "r": 4, "target_modules": QV, "dora": True}  # DoRA magnitudes are 1-D
    model = adapters.apply(_base(), spec)
    optimizer = adapters.make_optimizer(model, spec, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    seen = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(trainable)
    for group in optimizer.param_groups:
        assert group["betas"] == (0.9, 0.95) and group["eps"] == 1e-8 and group["lr"] == 1e-3
        for p in group["params"]:
            assert group["weight_decay"] == (0.1 if p.ndim >= 2 else 0.0)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.1, 0.0}


def test_loraplus_b_matrices_get_lr_times_ratio():
    spec = {"method": "lora", "r": 4, "target_modules": QV, "dora": True, "loraplus_lr_ratio": 16.0}
    model = adapters.apply(_base(), spec)
    optimizer = adapters.make_optimizer(model, spec, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    lr_of = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert len(lr_of) == sum(p.requires_grad for p in model.parameters())
    b = [n for n in lr_of if "lora_B" in n]
    a = [n for n in lr_of if "lora_A" in n]
    magnitude = [n for n in lr_of if "magnitude" in n]
    assert len(b) == len(a) == len(magnitude) == 4
    assert all(lr_of[n] == (pytest.approx(1e-3 * 16.0), 0.1) for n in b)
    assert all(lr_of[n] == (1e-3, 0.1) for n in a)
    assert all(lr_of[n][1] == 0.0 for n in magnitude)  # 1-D: no weight decay
    losses = _train(model, spec, 1e-3)
    with pytest.raises(ValueError, match="lora only"):
        adapters.make_optimizer(
            adapters.apply(_base(), SPECS["ia3"]), {**SPECS["ia3"], "loraplus_lr_ratio": 4.0},
            lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
        )
    assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------------- AdaLoRA


def test_adalora_allocates_its_budget_over_total_step():
    total = 12
    spec = {"method": "adalora", "init_r": 6, "target_r": 2, "tinit": 2, "tfinal": 3, "deltaT": 1,
            "target_modules": QV}
    model = adapters.apply(_base(), spec, total_steps=total)
    optimizer = adapters.make_optimizer(model, spec, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    for step in range(1, total + 1):
        model(input_ids=IDS, labels=IDS).loss.backward()
        optimizer.step()
        adapters.after_optimizer_step(model, spec, step)
        optimizer.zero_grad()
    config = model.peft_config["default"]
    assert config.rank_pattern is not None and len(config.rank_pattern) == 4
    kept = sum(int(sum(mask)) for mask in config.rank_pattern.values())
    assert kept <= 2 * 4  # target_r per adapted layer
    nonzero = sum(int((p != 0).sum()) for n, p in model.named_parameters() if "lora_E" in n)
    assert nonzero == kept


def test_after_optimizer_step_is_a_no_op_for_other_methods():
    model = adapters.apply(_base(), SPECS["lora"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapters.after_optimizer_step(model, SPECS["lora"], 1)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


# ----------------------------------------------------------------------------------- targets


def test_module_names():
    names = adapters.module_names(_base())
    assert "" not in names
    assert "model.layers.1.self_attn.q_proj" in names and "lm_head" in names
    assert adapters.module_names(_meta_base()) == names


def test_check_targets_typo_says_did_you_mean():
    spec = {"method": "lora", "target_modules": ["q_prj", "v_proj"]}
    expected = f"target module 'q_prj' matches no module of LlamaForCausalLM; did you mean 'q_proj'? {LISTING}"
    assert adapters.check_targets(_base(), spec) == [expected]
    assert adapters.check_targets(_meta_base(), spec) == [expected]
    far = adapters.check_targets(_base(), {"method": "vera", "target_modules": ["xyz"]})
    assert far == [f"target module 'xyz' matches no module of LlamaForCausalLM {LISTING}"]


def test_check_targets_fine():
    model = _meta_base()
    for spec in (
        {"method": "lora", "target_modules": "all-linear"},
        {"method": "lora"},  # peft's defaults for llama
        {"method": "lora", "target_modules": ["self_attn.q_proj", "model.embed_tokens", "lm_head"]},
        {"method": "lora", "target_modules": r"model\.layers\.\d+\.mlp\.up_proj"},
        {"method": "ln_tuning"},
        {"method": "prefix_tuning", "num_virtual_tokens": 4},
        *SPECS.values(),
        *VARIANTS.values(),
    ):
        assert adapters.check_targets(model, spec) == [], spec


def test_check_targets_ia3_feedforward_must_be_a_target():
    spec = {"method": "ia3", "target_modules": ["k_proj", "v_proj"], "feedforward_modules": ["down_proj"]}
    assert adapters.check_targets(_base(), spec) == [
        "ia3 feedforward module 'down_proj' is not in target_modules (k_proj, v_proj); "
        "feedforward_modules must be a subset of target_modules"
    ]
    # peft refuses the same spec.
    with pytest.raises(ValueError):
        adapters.apply(_base(), spec)
    spec = {"method": "ia3", "target_modules": "all-linear", "feedforward_modules": ["down_prj"]}
    assert adapters.check_targets(_base(), spec) == [
        f"ia3 feedforward module 'down_prj' matches no module of LlamaForCausalLM; did you mean 'down_proj'? {LISTING}"
    ]


def test_apply_refuses_names_peft_would_skip():
    # peft itself adapts v_proj, skips 'q_prj' and 'lm_haed' and says nothing.
    spec = {"method": "lora", "target_modules": ["q_prj", "v_proj"], "modules_to_save": ["lm_haed"]}
    with pytest.raises(ValueError) as err:
        adapters.apply(_base(), spec)
    assert str(err.value) == " ".join(adapters.check_targets(_base(), spec))
    assert "did you mean 'q_proj'?" in str(err.value) and "did you mean 'lm_head'?" in str(err.value)


def test_check_targets_other_problems():
    model = _base()
    assert adapters.check_targets(model, {"method": "ln_tuning", "target_modules": ["input_layernrm"]}) == [
        "target module 'input_layernrm' matches no module of LlamaForCausalLM; did you mean 'input_layernorm'? "
        "(norm layers: input_layernorm, norm, post_attention_layernorm)"
    ]
    assert adapters.check_targets(model, {"method": "lora", "target_modules": ["self_attn"]}) == [
        f"target module 'self_attn' matches only LlamaAttention modules of LlamaForCausalLM, which lora cannot adapt "
        f"{LISTING}"
    ]
    assert adapters.check_targets(model, {"method": "lora", "target_modules": QV, "modules_to_save": ["lm_haed"]}) == [
        "modules_to_save entry 'lm_haed' matches no module of LlamaForCausalLM; did you mean 'lm_head'?"
    ]
    assert adapters.check_targets(model, {"method": "lora", "target_modules": r".*q_pr"}) == [
        f"target_modules pattern '.*q_pr' matches no module of LlamaForCausalLM {LISTING}"
    ]
    plain = torch.nn.Sequential(torch.nn.Linear(4, 4))
    assert adapters.check_targets(plain, {"method": "lora"}) == [
        "lora has no default target modules for model type None (Sequential); set target_modules "
        "(linear layers: 0)"
    ]


# ----------------------------------------------------------------------------------- save, quantization, import


def test_save_on_other_processes_writes_nothing(tmp_path):
    model = adapters.apply(_base(), VARIANTS["lora-pissa"])
    adapters.save(model, tmp_path / "adapter", merged_directory=tmp_path / "merged", is_main_process=False)
    assert not (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "merged").exists()


def test_save_from_a_full_state_dict(tmp_path):
    from peft import PeftModel

    model = adapters.apply(_base(), SPECS["lora"])
    _train(model, SPECS["lora"], 2e-2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    adapters.save(model, tmp_path / "adapter", state_dict=state, save_function=torch.save)
    reloaded = PeftModel.from_pretrained(_base(), tmp_path / "adapter")
    assert torch.equal(_logits(reloaded), _logits(model))


def test_wrapped_model_is_looked_through(tmp_path):
    from peft import PeftModel

    spec = SPECS["adalora"]
    model = adapters.apply(_base(), spec, total_steps=STEPS)
    wrapped = torch.nn.DataParallel(model)  # on a CPU-only machine: runs the module itself
    assert adapters.trainable_parameters(wrapped) == model.get_nb_trainable_parameters()
    optimizer = adapters.make_optimizer(wrapped, spec, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    wrapped(input_ids=IDS, labels=IDS).loss.backward()
    optimizer.step()
    adapters.after_optimizer_step(wrapped, spec, 1)
    adapters.save(wrapped, tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(_base(), tmp_path / "adapter")
    assert torch.equal(_logits(reloaded), _logits(model))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine may load quantized models")
@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_check_quantization_without_cuda(quantize):
    message = adapters.check_quantization(quantize)
    assert message == f"{quantize} quantization (bitsandbytes) needs a CUDA GPU, and torch sees none on this machine"


def test_check_quantization_none_and_unknown():
    assert adapters.check_quantization(None) is None
    assert adapters.check_quantization("3bit") == "unknown quantization '3bit'; expected '4bit' or '8bit'"


def test_import_is_stdlib_only():
    code = (
        "import sys, recipec.runtime.adapters as a; "
        "heavy = [m for m in ('torch', 'peft', 'transformers', 'accelerate') if m in sys.modules]; "
        "assert not heavy, heavy; print(len(a.METHODS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "12"


@pytest.mark.parametrize("checkpointing", [True, False])
def test_a_quantized_model_is_prepared_with_its_checkpointing(monkeypatch, checkpointing):
    """peft's prepare_model_for_kbit_training is told whether the model checkpoints its activations, read
    from is_activation_checkpointing: is_gradient_checkpointing is a deprecated alias that transformers v6
    removes, as here."""
    import peft
    from transformers import PreTrainedModel

    monkeypatch.delattr(PreTrainedModel, "is_gradient_checkpointing")
    model = _base()
    if checkpointing:
        model.activation_checkpointing_enable()
    model.is_loaded_in_4bit = True  # what bitsandbytes' loading sets; the weights stay float here
    seen = []
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", lambda m, use_gradient_checkpointing: seen.append(use_gradient_checkpointing) or m)
    adapters.apply(model, SPECS["lora"])
    assert seen == [checkpointing]
