"""`[model.config]` over a pretrained model: keys of its config replaced before the weights load.

The replacement itself (recipec_runtime/model_config.py) is checked on transformers' own config
classes and on the model they build; the compiler's checks against a local config.json's model
type, the plan and the generated script at build time; and (slow) a training run whose saved
model carries the new values.
"""

from __future__ import annotations

import ast
import json
import math
import shutil
import sys
from pathlib import Path

import pytest

import forkrun
from recipec.compiler import build, plan_recipe
from recipec.diagnostics import RecipeError
from recipec.runtime import model_config

LLAMA = {
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 4, "vocab_size": 1000, "max_position_embeddings": 128,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
}
MISTRAL = {**LLAMA, "model_type": "mistral", "sliding_window": 64}

RECIPE = """
[recipe]
name = "over"

[model]
path = "{path}"

[model.config]
{config}

[data]
seq_len = {seq_len}

[[data.sources]]
builtin = "python-docs"

[train]
micro_batch_size = 2
batch_size = 4
max_steps = 2
save_every = 0
eval_every = 0

[launch]
cpu = true
"""


def _project(tmp_path: Path, config: str, *, model: dict | None = None, path: str = "./model", seq_len: int = 64) -> Path:
    if model is not None:
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "config.json").write_text(json.dumps(model))
    recipe = tmp_path / "over.toml"
    recipe.write_text(RECIPE.format(path=path, config=config, seq_len=seq_len))
    return recipe


def _errors(recipe: Path, *overrides: str) -> list[tuple[str, str | None, int | None]]:
    """(message, help, line) of each error."""
    with pytest.raises(RecipeError) as caught:
        plan_recipe(recipe, overrides, project=recipe.parent)
    return [(d.message, d.help, d.location and d.location.line) for d in caught.value.diagnostics if d.severity == "error"]


# -- the replacement, on transformers' configs --------------------------------------------


def test_a_table_replaces_the_keys_it_names_and_the_model_is_built_from_them() -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**{k: v for k, v in LLAMA.items() if k != "model_type"})
    problem = model_config.override(
        config, {"rope_parameters": {"rope_theta": 500000.0}, "max_position_embeddings": 512, "attention_dropout": 0.1}
    )
    assert problem is None
    assert config.rope_parameters == {"rope_theta": 500000.0, "rope_type": "default"}  # rope_type kept
    assert (config.max_position_embeddings, config.attention_dropout) == (512, 0.1)
    model = AutoModelForCausalLM.from_config(config)
    head_dim = 64 // 4
    expected = 1.0 / (500000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    assert torch.allclose(model.model.rotary_emb.inv_freq, expected)
    assert model.model.layers[0].self_attn.attention_dropout == 0.1


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("hidden_size", 32, "sizes the pretrained weights (llama's hidden_size)"),
        ("num_key_value_heads", 2, "sizes the pretrained weights"),
        ("rope_theta", 5.0, "folded into the llama config's rope_parameters only when it is built"),
        ("rope_scaling", {"rope_type": "linear", "factor": 2.0}, "set model.config.rope_parameters"),
        ("max_seq_len", 4096, "`model.config.max_seq_len` is not a key of the llama config"),
    ],
)
def test_what_cannot_replace_a_key_of_a_llama_config(key: str, value: object, expected: str) -> None:
    from transformers import LlamaConfig

    config = LlamaConfig()
    before = config.to_dict()
    problem = model_config.override(config, {key: value})
    assert problem is not None and expected in problem
    assert config.to_dict() == before  # nothing set


def test_an_alias_is_checked_under_the_name_the_config_stores() -> None:
    from transformers import GPT2Config

    config = GPT2Config()
    assert "gpt2's n_positions" in model_config.override(config, {"max_position_embeddings": 2048})  # learned positions: a shape
    assert model_config.override(config, {"attn_pdrop": 0.0, "resid_pdrop": 0.0}) is None
    assert (config.attn_pdrop, config.resid_pdrop) == (0.0, 0.0)
    assert "not a key of the gpt2 config" in model_config.override(config, {"rope_theta": 5.0})  # no RoPE at all


def test_a_table_over_a_sub_config_sets_its_attributes() -> None:
    """MPT's attn_config is a config object of its own: a table sets those of its attributes, each of
    which must exist (llm-foundry's config_overrides behave so)."""
    from transformers import MptConfig

    config = MptConfig()
    assert model_config.override(config, {"max_seq_len": 4096, "attn_config": {"attn_impl": "flash", "alibi": True}}) is None
    assert type(config.attn_config).__name__ == "MptAttentionConfig"  # still the object, not a dict
    assert (config.max_seq_len, config.attn_config.attn_impl, config.attn_config.alibi) == (4096, "flash", True)
    problem = model_config.override(config, {"attn_config": {"attn_implx": "torch"}})
    assert problem == "`model.config.attn_config.attn_implx` is not a key of the mpt config's attn_config (did you mean `attn_impl`?)"


# -- the compiler ---------------------------------------------------------------------------


def test_the_plan_and_the_script_carry_the_keys(tmp_path: Path) -> None:
    recipe = _project(tmp_path, "rope_parameters = {rope_theta = 500000.0}\nmax_position_embeddings = 512", model=LLAMA, seq_len=256)
    written, plan = build(recipe, (), tmp_path / "build", project=tmp_path)
    assert plan["model_overrides"] == {"rope_parameters": {"rope_theta": 500000.0}, "max_position_embeddings": 512}
    script = (written.dir / "train.py").read_text()
    ast.parse(script)
    assert "problem = model_config.override(pretrained_config, model_overrides)" in script
    assert script.count("config=pretrained_config,  # model.config") == 1
    # seq_len 256 fits the 512 positions set here, not the checkpoint's 128
    message, help_, where = _errors(recipe, "model.config.max_position_embeddings=200")[0]
    assert message == "data.seq_len 256 is longer than the model's 200 positions"
    assert plan.memory is not None  # the estimate reads the config with the new keys


def test_without_overrides_the_script_loads_as_before(tmp_path: Path) -> None:
    recipe = _project(tmp_path, "", model=LLAMA)
    written, plan = build(recipe, (), tmp_path / "build", project=tmp_path)
    script = (written.dir / "train.py").read_text()
    assert plan.get("model_overrides") is None
    assert "pretrained_config" not in script and "model_config" not in script.split("# model\n", 1)[-1]


def test_under_peft_the_targets_are_checked_on_the_replaced_config(tmp_path: Path) -> None:
    recipe = _project(tmp_path, "attention_dropout = 0.1", model=LLAMA)
    recipe.write_text(recipe.read_text() + '\n[peft]\nmethod = "lora"\n')
    written, _ = build(recipe, (), tmp_path / "build", project=tmp_path)
    script = (written.dir / "train.py").read_text()
    ast.parse(script)
    assert "meta_model = AutoModelForCausalLM.from_config(pretrained_config)" in script
    assert script.index("pretrained_config = AutoConfig") < script.index("meta_model =")


@pytest.mark.parametrize(
    ("config", "message", "help_"),
    [
        ("hidden_size = 32", "`model.config.hidden_size` sizes the weights, and a pretrained model's are the checkpoint's", "start from scratch with model.init"),
        ("vocab_size = 8", "`model.config.vocab_size` is the tokenizer's: the script sets it from the tokenizer", "the tokenizer's vocabulary"),
        ("router_aux_loss_coef = 0.01", "`model.config.router_aux_loss_coef` is set by `loss.router_aux_loss_coef`", "under [loss]"),
    ],
)
def test_keys_no_pretrained_model_takes_are_errors_at_their_line(tmp_path: Path, config: str, message: str, help_: str) -> None:
    recipe = _project(tmp_path, config, path="org/model")  # a hub model: refused before its type is known
    [(got, got_help, where)] = _errors(recipe)
    assert got.startswith(message) and help_ in got_help
    assert where == 9


def test_keys_are_checked_against_the_local_model_type(tmp_path: Path) -> None:
    recipe = _project(tmp_path, "sliding_windw = 8\nrope_theta = 500000.0", model=MISTRAL)
    errors = sorted(_errors(recipe), key=lambda e: e[2])
    assert [(m.split(" is ")[0], h, line) for m, h, line in errors] == [
        ("`model.config.sliding_windw`", "did you mean `sliding_window`?", 9),
        ("`model.config.rope_theta`", None, 10),
    ]
    assert "set model.config.rope_parameters" in errors[1][0]
    recipe.write_text(recipe.read_text().replace("sliding_windw = 8", 'sliding_window = "8"').replace("rope_theta = 500000.0", ""))
    [(message, _, line)] = _errors(recipe)  # the kind of the model type's default
    assert (message, line) == ("`model.config.sliding_window` must be a number, like the mistral config's default 4096", 9)
    recipe.write_text(recipe.read_text().replace('sliding_window = "8"', "sliding_window = 8"))
    plan, _ = plan_recipe(recipe, (), project=tmp_path)
    assert plan["model_overrides"] == {"sliding_window": 8}


def test_a_hub_model_is_checked_when_the_script_loads_it(tmp_path: Path) -> None:
    recipe = _project(tmp_path, "sliding_window = 8", path="org/model")
    plan, _ = plan_recipe(recipe, (), project=tmp_path)
    assert any("[model.config] is checked when the script loads the model's config" in w.message for w in plan.warnings)


def test_recipec_check_builds_the_model_from_the_replaced_config(tmp_path: Path) -> None:
    from recipec.check import check

    (tmp_path / "model").mkdir()
    from transformers import LlamaConfig

    LlamaConfig(**{k: v for k, v in LLAMA.items() if k != "model_type"}).save_pretrained(tmp_path / "model")
    recipe = _project(tmp_path, "rope_parameters = {rope_theta = 500000.0}")
    plan, source = plan_recipe(recipe, (), project=tmp_path)
    report = check(plan, tmp_path, source)
    assert report.checked and report.all_params > 0


# -- end to end -----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_trained_model_carries_the_replaced_keys(tmp_path: Path) -> None:
    """A saved tiny Llama trained with RoPE's theta, the positions and attention dropout replaced: the
    model it saves has them (so it was built from them), and its weights loaded unchanged."""
    from safetensors.torch import load_file

    from test_sft import _env, _model

    _model(tmp_path / "model")
    before = load_file(str(tmp_path / "model" / "model.safetensors"))
    recipe = _project(tmp_path, "rope_parameters = {rope_theta = 500000.0}\nmax_position_embeddings = 1024\nattention_dropout = 0.1", seq_len=64)
    recipe.write_text(recipe.read_text() + "\n[optim]\nlr = 1e-9\n")  # two steps that leave the weights as they loaded
    written, _ = build(recipe, (), tmp_path / "build", project=tmp_path)
    proc = forkrun.run([sys.executable, str(written.dir / "train.py")], env=_env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((tmp_path / "runs" / "over" / "model" / "config.json").read_text())
    assert saved["rope_parameters"]["rope_theta"] == 500000.0 and saved["rope_parameters"]["rope_type"] == "default"
    assert (saved["max_position_embeddings"], saved["attention_dropout"]) == (1024, 0.1)
    after = load_file(str(tmp_path / "runs" / "over" / "model" / "model.safetensors"))
    assert after.keys() == before.keys()
    assert all(math.isclose((after[k] - before[k]).abs().max().item(), 0.0, abs_tol=1e-3) for k in before)
    shutil.rmtree(tmp_path / "runs")
