"""Freezing settings of other tools -> `optim.trainable` (and llm-foundry's param groups ->
`[[optim.groups]]`). Each mapping is checked against the tool's own rule, written out here as
the tool's source has it, on a tiny Llama: the parameters the tool leaves trainable are the
ones recipec's `freeze` leaves trainable.

Sources: hiyouga/LLaMA-Factory src/llamafactory/model/adapter.py `_setup_freeze_tuning`;
axolotl-ai-cloud/axolotl src/axolotl/utils/freeze.py `freeze_layers_except` (applied in
src/axolotl/train.py); mosaicml/llm-foundry llmfoundry/utils/builders.py `_extract_param_groups`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recipec.importers.regex_globs import NoGlob, regex_globs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIGS = Path(__file__).resolve().parent / "configs"
LAYERS = 6


def _model():
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=LAYERS, num_attention_heads=2,
        num_key_value_heads=2, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def _recipec_trainable(trainable: dict) -> set[str]:
    from recipec.runtime.optimizers import freeze

    model = _model()
    freeze(model, trainable)
    return {n for n, p in model.named_parameters() if p.requires_grad}


NAMES = [n for n, _ in _model().named_parameters()]


# -- LLaMA-Factory --------------------------------------------------------------------------


def _llama_factory_trainable(layers: int = 2, modules: str = "all", extra: str | None = None, llama_pro: bool = False) -> set[str]:
    """adapter.py `_setup_freeze_tuning`, as LLaMA-Factory runs it (finetuning_args.__post_init__ splits the lists)."""
    modules_ = [m.strip() for m in modules.split(",")]
    extra_ = [m.strip() for m in extra.split(",")] if extra else None
    num_layers = LAYERS
    if llama_pro:
        stride = num_layers // layers
        ids = range(stride - 1, num_layers + stride - 1, stride)
    elif layers > 0:
        ids = range(max(0, num_layers - layers), num_layers)
    else:
        ids = range(min(-layers, num_layers))
    trainable_layers = [".{:d}.{}".format(i, m if m != "all" else "") for m in modules_ for i in ids]
    trainable_layers += extra_ or []
    return {n for n in NAMES if any(t in n for t in trainable_layers)}


def _lf(tmp_path, monkeypatch, body: str):
    from recipec.compiler import plan_recipe
    from recipec.importers import import_config

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text("stage: sft\ndataset: alpaca_en\ntemplate: llama3\nfinetuning_type: freeze\n" + body, encoding="utf-8")
    result = import_config(path, "llama-factory")
    (tmp_path / "c.toml").write_text(result.text, encoding="utf-8")
    plan_recipe(tmp_path / "c.toml", ())
    return result.draft


LF_CASES = [
    ({}, ["layers[-2:]"]),
    ({"layers": 3, "modules": "mlp,self_attn"}, ["layers[-3:].mlp*", "layers[-3:].self_attn*"]),
    ({"layers": -2, "modules": "mlp", "extra": "embed_tokens,norm"}, ["layers[:2].mlp*", "*embed_tokens*", "*norm*"]),
    ({"layers": 20}, ["layers[-20:]"]),  # more than the model has: every layer, in both
    ({"layers": 1, "modules": "input_layernorm", "extra": "lm_head"}, ["layers[-1:].input_layernorm*", "*lm_head*"]),
]


@pytest.mark.parametrize(("args", "include"), LF_CASES)
def test_llama_factory_freeze_is_its_rule(tmp_path, monkeypatch, args, include):
    body = "model_name_or_path: meta-llama/Meta-Llama-3-8B\n"
    body += f"freeze_trainable_layers: {args['layers']}\n" if "layers" in args else ""
    body += f"freeze_trainable_modules: {args['modules']}\n" if "modules" in args else ""
    body += f"freeze_extra_modules: {args['extra']}\n" if "extra" in args else ""
    draft = _lf(tmp_path, monkeypatch, body)
    trainable = draft.value("optim.trainable")
    assert trainable == {"include": include}
    keys = ["finetuning_type"] + [k for k, a in (("freeze_trainable_layers", "layers"), ("freeze_trainable_modules", "modules"), ("freeze_extra_modules", "extra")) if a in args]
    assert all(draft.ledger[k].how == "exact" for k in keys), {k: draft.ledger[k] for k in keys}
    assert _recipec_trainable(trainable) == _llama_factory_trainable(args.get("layers", 2), args.get("modules", "all"), args.get("extra"))
    if "layers" not in args:
        assert ("freeze_trainable_layers", "the last 2 decoder layers") in draft.defaults


def test_llama_factory_freeze_of_a_moe_model_is_approximate(tmp_path, monkeypatch):
    draft = _lf(tmp_path, monkeypatch, "model_name_or_path: mistralai/Mixtral-8x7B-v0.1\nfreeze_trainable_layers: 2\n")
    assert draft.ledger["finetuning_type"].how == "approx" and "expert i of every layer" in draft.ledger["finetuning_type"].why


def test_llama_factory_freeze_of_nothing_is_not_imported(tmp_path, monkeypatch):
    draft = _lf(tmp_path, monkeypatch, "model_name_or_path: meta-llama/Meta-Llama-3-8B\nfreeze_trainable_layers: 0\n")
    assert draft.ledger["finetuning_type"].reason == "no-equivalent" and draft.value("optim.trainable") is None


def test_llama_pro_with_a_local_config_is_its_stride(tmp_path, monkeypatch):
    (tmp_path / "pro").mkdir()
    (tmp_path / "pro" / "config.json").write_text(f'{{"model_type": "llama", "num_hidden_layers": {LAYERS}}}', encoding="utf-8")
    draft = _lf(tmp_path, monkeypatch, "model_name_or_path: pro\nfreeze_trainable_layers: 3\nuse_llama_pro: true\n")
    trainable = draft.value("optim.trainable")
    assert trainable == {"include": ["layers[1]", "layers[3]", "layers[5]"]}
    assert draft.ledger["use_llama_pro"].how == "exact" and draft.ledger["finetuning_type"].how == "exact"
    assert _recipec_trainable(trainable) == _llama_factory_trainable(3, llama_pro=True)


def test_llama_pro_without_the_model_is_not_imported(imported):
    got = imported("llama-factory", "llama3_freeze_sft.yaml", files=("data/identity.json", "data/alpaca_en_demo.json"))
    assert "trainable" not in got.recipe["optim"]
    for key in ("finetuning_type", "freeze_trainable_layers", "freeze_trainable_modules", "use_llama_pro"):
        assert got.dropped[key] == "missing-feature", key
    assert "layer count" in got.result.draft.ledger["finetuning_type"].why


# -- axolotl -------------------------------------------------------------------------------


def _axolotl_trainable(patterns: list[str]) -> set[str]:
    """utils/freeze.py `freeze_layers_except` with `LayerNamePattern` (the row range only zeroes gradients)."""
    regexes = []
    for pattern in patterns:
        m = re.match(r"^(.+)\[([0-9]*)(?::([0-9]*))?\]$", pattern)
        name = m[1] if m else pattern
        regexes.append(re.compile(re.sub(r"\.(?!\+)", "\\.", name)))
    return {n for n in NAMES if any(r.match(n) for r in regexes)}


def _axolotl(tmp_path, monkeypatch, body: str):
    from recipec.compiler import plan_recipe
    from recipec.importers import import_config

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yml"
    path.write_text(
        "base_model: meta-llama/Llama-3.2-1B\ndatasets:\n  - path: tatsu-lab/alpaca\n    type: alpaca\n"
        "micro_batch_size: 1\nnum_epochs: 1\nlearning_rate: 1.0e-5\n" + body,
        encoding="utf-8",
    )
    result = import_config(path, "axolotl")
    (tmp_path / "c.toml").write_text(result.text, encoding="utf-8")
    plan_recipe(tmp_path / "c.toml", ())
    return result.draft


def _yaml_list(patterns: list[str]) -> str:
    return "unfrozen_parameters:\n" + "".join(f"  - '{p}'\n" for p in patterns)


AXOLOTL_CASES = [
    # axolotl's own examples (qwen3.5/27b-fft.yaml, gemma3, mistral/bigstral) on a Llama's names
    (["^lm_head.weight$", "^model.embed_tokens.weight$"], ["lm_head.weight", "model.embed_tokens.weight"]),
    (["model.layers.4.+", "lm_head.*"], ["model.layers.4?*", "lm_head*"]),
    (["^model.layers.[45].mlp.*", "model.norm"], ["model.layers.[45].mlp*", "model.norm*"]),
    (["model.layers.(1|3).self_attn.(q|k)_proj"], ["model.layers.1.self_attn.q_proj*", "model.layers.1.self_attn.k_proj*", "model.layers.3.self_attn.q_proj*", "model.layers.3.self_attn.k_proj*"]),
    (["model.layers.5.+_proj.weight$"], ["model.layers.5?*_proj.weight"]),  # `.+` stays a wildcard
]


@pytest.mark.parametrize(("patterns", "include"), AXOLOTL_CASES)
def test_axolotl_unfrozen_parameters_are_its_rule(tmp_path, monkeypatch, patterns, include):
    draft = _axolotl(tmp_path, monkeypatch, _yaml_list(patterns))
    trainable = draft.value("optim.trainable")
    assert trainable == {"include": include}
    assert draft.ledger["unfrozen_parameters"].how == "exact"
    assert _recipec_trainable(trainable) == _axolotl_trainable(patterns)


def test_axolotl_row_range_trains_the_whole_parameter_approximately(tmp_path, monkeypatch):
    patterns = ["^model.embed_tokens.weight$[:32]", "^lm_head.weight$"]
    draft = _axolotl(tmp_path, monkeypatch, _yaml_list(patterns))
    entry = draft.ledger["unfrozen_parameters"]
    assert entry.how == "approx" and "rows [:32]" in entry.why
    assert _recipec_trainable(draft.value("optim.trainable")) == _axolotl_trainable(patterns)


def test_axolotl_escaped_dot_matches_nothing(tmp_path, monkeypatch):
    patterns = [r"^model\.norm", "^lm_head.weight$"]
    draft = _axolotl(tmp_path, monkeypatch, _yaml_list(patterns))
    assert draft.value("optim.trainable") == {"include": ["lm_head.weight"]}
    assert draft.ledger["unfrozen_parameters"].how == "approx" and "backslash" in draft.ledger["unfrozen_parameters"].why
    assert _recipec_trainable(draft.value("optim.trainable")) == _axolotl_trainable(patterns) == {"lm_head.weight"}


def test_axolotl_regex_without_a_glob_is_not_imported(tmp_path, monkeypatch):
    draft = _axolotl(tmp_path, monkeypatch, _yaml_list(["model.layers.1[0-9]+.mlp"]))
    assert draft.ledger["unfrozen_parameters"].reason == "no-equivalent" and draft.value("optim.trainable") is None


def test_axolotl_unfrozen_parameters_with_an_adapter_is_not_imported(tmp_path, monkeypatch):
    body = "adapter: lora\nlora_r: 8\nlora_alpha: 16\nlora_target_linear: true\n" + _yaml_list(["^model.layers.4.+"])
    draft = _axolotl(tmp_path, monkeypatch, body)
    assert draft.ledger["unfrozen_parameters"].reason == "no-equivalent"
    assert draft.value("optim.trainable") is None and draft.value("peft.method") == "lora"


def test_axolotl_unfrozen_parameters_under_dpo_with_an_adapter_are_ignored(imported, tmp_path):
    text = (CONFIGS / "axolotl" / "dpo-chatml-intel.yaml").read_text(encoding="utf-8")
    path = tmp_path / "dpo-unfrozen.yaml"
    path.write_text(text + _yaml_list(["^model.layers.4.+"]), encoding="utf-8")
    got = imported("axolotl", path)
    assert got.dropped["unfrozen_parameters"] == "ignored-by-tool"
    assert "trainable" not in got.recipe["optim"] and got.recipe["peft"]["method"] == "lora"


def test_axolotl_with_an_adapter_freezes_everything_in_axolotl():
    """Why it is not imported under an adapter: on the PEFT model's names the patterns match nothing."""
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(_model(), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    regex = re.compile(re.sub(r"\.(?!\+)", "\\.", "^model.layers.4.+"))
    assert not any(regex.match(n) for n, _ in model.named_parameters())


def test_gemma3_example_with_qlora(imported):
    got = imported("axolotl", "gemma3-1b-qlora.yaml")
    assert got.dropped["unfrozen_parameters"] == "no-equivalent"
    assert "froze every parameter" in got.result.draft.ledger["unfrozen_parameters"].why
    assert "trainable" not in got.recipe["optim"]


# -- llm-foundry ----------------------------------------------------------------------------


def _foundry_frozen(patterns: list[str]) -> set[str]:
    """builders.py `_extract_param_groups`: re.search on the ComposerModel's names (`model.` + the HF model's)."""
    return {n for n in NAMES if any(re.search(p, "model." + n) for p in patterns)}


def _foundry(tmp_path, imported, optimizer: str):
    text = (CONFIGS / "llm-foundry" / "llama-3-8b_domain_adapt.yaml").read_text(encoding="utf-8")
    old = "  eps: 1.0e-08\n  weight_decay: 0.0\n"
    assert old in text
    for d in ("my-adaptation-data/train_small", "my-adaptation-data/val_small"):  # the MDS copies the recipe reads
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        (tmp_path / d / "index.json").write_text('{"version": 2, "shards": []}', encoding="utf-8")
    path = tmp_path / "adapt.yaml"
    path.write_text(text.replace(old, "  eps: 1.0e-08\n" + optimizer), encoding="utf-8")
    return imported("llm-foundry", path, num_processes=8)


FOUNDRY_CASES = [
    # a regex's `.` is any character: `?`
    (["norm", "lm_head"], ["*norm*", "*lm_head*"]),  # the docstring's example is norm and bias (a Llama has no bias)
    ("^model.model.embed_tokens", ["model?embed_tokens*"]),
    (["layers\\.[0-3]\\.", "lm_head"], ["*layers.[0-3].*", "*lm_head*"]),
    (["self_attn.(k|v)_proj.weight$"], ["*self_attn?k_proj?weight", "*self_attn?v_proj?weight"]),
]


@pytest.mark.parametrize(("patterns", "exclude"), FOUNDRY_CASES)
def test_foundry_disable_grad_is_its_rule(tmp_path, imported, patterns, exclude):
    listed = patterns if isinstance(patterns, list) else [patterns]
    got = _foundry(tmp_path, imported, "  weight_decay: 0.0\n  disable_grad:\n" + "".join(f"  - '{p}'\n" for p in listed))
    trainable = got.recipe["optim"]["trainable"]
    assert trainable == {"exclude": exclude}
    assert got.result.draft.ledger["optimizer.disable_grad"].how == "exact"
    full = {"include": ["*"], **trainable}
    assert _recipec_trainable(full) == set(NAMES) - _foundry_frozen(listed)


def test_foundry_disable_grad_matching_the_prefix_freezes_everything(tmp_path, imported):
    got = _foundry(tmp_path, imported, "  weight_decay: 0.0\n  disable_grad: model\n")
    assert got.dropped["optimizer.disable_grad"] == "no-equivalent" and "trainable" not in got.recipe["optim"]
    assert _foundry_frozen(["model"]) == set(NAMES)


def test_foundry_disable_grad_across_the_prefix_is_approximate(tmp_path, imported):
    got = _foundry(tmp_path, imported, "  weight_decay: 0.0\n  disable_grad: l.layers\n")
    assert got.result.draft.ledger["optimizer.disable_grad"].how == "approx"


def test_foundry_disable_grad_and_groups_under_peft_are_not_imported(tmp_path, imported):
    text = (CONFIGS / "llm-foundry" / "lora-llama-3-8b_dolly.yaml").read_text(encoding="utf-8")
    old = "  weight_decay: 1.0e-06\n"
    assert old in text
    path = tmp_path / "lora-frozen.yaml"
    path.write_text(text.replace(old, old + "  disable_grad: norm\n  param_groups:\n  - param_str_match: bias\n    lr: 1.0e-5\n"), encoding="utf-8")
    got = imported("llm-foundry", path, num_processes=8)
    assert got.dropped["optimizer.disable_grad"] == "no-equivalent"
    assert got.dropped["optimizer.param_groups[0].lr"] == "no-equivalent"
    assert "trainable" not in got.recipe["optim"] and "groups" not in got.recipe["optim"] and "peft" in got.recipe


def _foundry_groups(lr: float, wd: float, groups: list[dict]) -> dict[str, tuple[float, float]]:
    """Each parameter's (lr, torch's weight decay) under llm-foundry's groups with decoupled_adamw
    (Composer's DecoupledAdamW decays by lr / initial_lr * weight_decay: torch's wd / lr)."""
    out = {}
    left = list(NAMES)
    for group in groups:
        taken = [n for n in left if re.search(group["param_str_match"], "model." + n)]
        left = [n for n in left if n not in taken]
        g_lr, g_wd = group.get("lr", lr), group.get("weight_decay", wd)
        out.update({n: (g_lr, g_wd / g_lr) for n in taken})
    out.update({n: (lr, wd / lr) for n in left})
    return out


def _recipec_groups(optim: dict) -> dict[str, tuple[float, float]]:
    from recipec.runtime.optimizers import param_groups

    model = _model()
    ids = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for g in param_groups(model, optim["weight_decay"], optim.get("decay", "matrices"), optim.get("groups", ())):
        out.update({ids[id(p)]: (optim["lr"] * g["lr_scale"], g["weight_decay"]) for p in g["params"]})
    return out


def test_foundry_param_groups_are_its_groups(tmp_path, imported):
    groups = [{"param_str_match": "norm", "lr": 1e-5, "weight_decay": 0.0}, {"param_str_match": "mlp", "lr": 1e-4}]
    body = "  weight_decay: 5.0e-06\n  param_groups:\n"
    body += "  - param_str_match: norm\n    lr: 1.0e-5\n    weight_decay: 0.0\n  - param_str_match: mlp\n    lr: 1.0e-4\n"
    got = _foundry(tmp_path, imported, body)
    optim = got.recipe["optim"]
    assert optim["groups"] == [
        {"params": ["*norm*"], "lr_scale": 0.2, "weight_decay": 0.0},
        {"params": ["*mlp*"], "lr_scale": 2.0, "weight_decay": 0.05},
    ]
    ledger = got.result.draft.ledger
    assert all(ledger[f"optimizer.param_groups[{i}].{k}"].how == "exact" for i, k in ((0, "param_str_match"), (0, "lr"), (1, "lr")))
    want = _foundry_groups(5e-5, 5e-6, groups)
    have = _recipec_groups(optim)
    assert have.keys() == want.keys()
    assert all(have[n] == pytest.approx(want[n]) for n in want), {n: (have[n], want[n]) for n in want if have[n] != pytest.approx(want[n])}


def test_foundry_param_group_option_recipec_lacks_is_dropped(tmp_path, imported):
    body = "  weight_decay: 0.0\n  param_groups:\n  - param_str_match: bias\n    lr: 1.0e-4\n    betas: [0.9, 0.99]\n"
    got = _foundry(tmp_path, imported, body)
    assert got.dropped == {**got.dropped, "optimizer.param_groups[0].betas": "missing-feature"}
    assert got.recipe["optim"]["groups"] == [{"params": ["*bias*"], "lr_scale": 2.0}]


# -- the regex translation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("regex", "search", "prefix", "globs"),
    [
        ("norm", True, "model.", ["*norm*"]),
        ("model", True, "model.", ["*"]),  # inside the prefix: every name
        ("^lm_head", True, "model.", []),  # llm-foundry's names start with model.
        ("a.b?c", False, "", ["a?c*", "a?bc*"]),
        ("x[^0-9]{2}y$", False, "", ["x[!0-9][!0-9]y"]),
        ("w*", True, "", ["*"]),
        ("a|^b", True, "", ["*a*", "b*"]),
    ],
)
def test_regex_globs(regex, search, prefix, globs):
    assert regex_globs(regex, search=search, prefix=prefix)[0] == globs


@pytest.mark.parametrize("regex", ["a[0-9]+b", r"\w+x", "(?=a)", r"a\sb", "a{2,}b"])
def test_regex_without_glob(regex):
    with pytest.raises(NoGlob):
        regex_globs(regex, search=True)
