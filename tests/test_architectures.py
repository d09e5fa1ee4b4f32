"""Every causal-LM architecture from scratch: `model.init` takes any model type transformers
builds a causal LM for, and `[model.config]` is checked against that type's config keys
(recipec/model_types.json) when the recipe is compiled.

Per architecture: an unknown key is an error at its line with a did-you-mean, `recipec
check` builds the model on the meta device, and (slow) the generated script trains it a
few steps on CPU. The committed table is checked against the installed transformers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

import forkrun
from recipec import model_types
from recipec.compiler import build
from recipec.diagnostics import RecipeError
from test_training import _env

# the extra [model.config] keys each architecture needs to stay tiny (MoE: few, small experts)
ARCHITECTURES: dict[str, dict[str, object]] = {
    "gpt2": {"n_inner": 64, "tie_word_embeddings": True},
    "qwen3": {"num_key_value_heads": 1},
    "gemma3_text": {"tie_word_embeddings": True, "sliding_window": 8},
    "olmo2": {},
    "phi3": {},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen3_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
}
"""The architectures issue 17 names (gemma3's causal LM is gemma3_text), with the keys that keep them tiny."""


def _config(model_type: str) -> dict[str, object]:
    base: dict[str, object] = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 64}
    if "intermediate_size" in model_types.config_keys(model_type):
        base["intermediate_size"] = 64
    return {**base, **ARCHITECTURES[model_type]}


def _errors(plan_of, init: str, config: dict[str, object] | None = None) -> list[str]:
    """The errors of the minimal recipe with this model.init and (when given) this whole [model.config]."""
    with pytest.raises(RecipeError) as info:
        plan_of({"model.init": init, **({"model.config": config} if config is not None else {})})
    return [f"{d.message} | {d.help}" for d in info.value.diagnostics]


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_an_unknown_config_key_is_an_error_at_its_line_with_a_did_you_mean(model_type, recipe_text, tmp_path):
    from recipec.compiler import plan_recipe

    keys = model_types.config_keys(model_type)
    misspelt = "num_hiden_layers" if "num_hidden_layers" in keys else "n_layr"
    config = {**_config(model_type), misspelt: 2}
    path = tmp_path / "r.toml"
    path.write_text(recipe_text({"model.init": model_type, "model.config": config}), encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        plan_recipe(path, (), project=tmp_path)
    (d,) = info.value.diagnostics
    assert d.message == f"unknown key `model.config.{misspelt}` (not a key of the {model_type} config)"
    assert d.location is not None and path.read_text().splitlines()[d.location.line - 1].startswith(misspelt)
    assert d.help == "did you mean `num_hidden_layers`?"


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_each_architecture_plans_and_builds_on_the_meta_device(model_type, plan_of):
    pytest.importorskip("torch")
    from recipec.check import check

    plan = plan_of({"model.init": model_type, "model.config": _config(model_type)})
    assert plan["model_init"] == model_type
    for key, value in _config(model_type).items():
        assert plan["model_config"][key] == value
    report = check(plan)
    assert report.checked and report.all_params
    assert plan.memory is not None and plan.memory.parameters == report.all_params


def test_gpt2_takes_the_common_names_and_leaves_out_keys_it_lacks(plan_of):
    plan = plan_of({"model.init": "gpt2", "model.config": {"hidden_size": 32, "num_attention_heads": 2}})
    config = plan["model_config"]
    assert config["hidden_size"] == 32 and "rms_norm_eps" not in config and "rope_theta" not in config
    assert "intermediate_size" not in config  # gpt2's MLP width is n_inner (4 * n_embd when unset)


def test_a_typed_key_the_architecture_lacks_is_an_error_when_set(plan_of):
    (error,) = _errors(plan_of, "gpt2", {"hidden_size": 32, "rms_norm_eps": 1e-6})
    assert error.startswith("unknown key `model.config.rms_norm_eps` (not a key of the gpt2 config)")


def test_a_key_and_its_alias_together_are_an_error(plan_of):
    (error,) = _errors(plan_of, "gpt2", {"hidden_size": 32, "n_embd": 32})
    assert "one key of the gpt2 config" in error


def test_the_tokenizer_keys_are_not_set_in_the_config(plan_of):
    (error,) = _errors(plan_of, "qwen3", {"vocab_size": 1000})
    assert "is the tokenizer's" in error


def test_a_value_of_the_wrong_kind_is_an_error(plan_of):
    (error,) = _errors(plan_of, "gpt2", {"activation_function": 3})
    assert "must be a string" in error


def test_qwen3_gets_the_head_dim_and_kv_heads_the_widths_mean(plan_of):
    # qwen3's own defaults (head_dim 128, 32 kv heads) would not fit 2 heads of width 16
    config = plan_of({"model.init": "qwen3", "model.config": _config("olmo2")})["model_config"]
    assert (config["head_dim"], config["num_key_value_heads"]) == (16, 2)


@pytest.mark.parametrize(
    ("init", "expected"),
    [
        ("gemma3", 'use init = "gemma3_text", its text-only causal LM'),
        ("qwen4", "did you mean `qwen3`?"),
        ("t5", "no causal-LM class"),
    ],
)
def test_model_init_names_a_text_causal_lm(plan_of, init, expected):
    (error,) = _errors(plan_of, init)
    assert expected in error


def test_the_committed_table_is_the_installed_transformers(update_golden):
    """recipec/model_types.json is generated from transformers; a newer transformers (.ci/latest)
    fails here on purpose: regenerate the table and commit it with the version pin."""
    pytest.importorskip("transformers")
    fresh = model_types.dumps(model_types.generate())
    if update_golden:
        model_types.TABLE.write_text(fresh, encoding="utf-8")
    committed = model_types.TABLE.read_text(encoding="utf-8")
    assert fresh == committed, (
        f"recipec/model_types.json was generated from transformers {model_types.table()['transformers']}; "
        "regenerate it from the installed one with `python -m recipec.model_types` and read the diff"
    )


def test_the_table_loads_without_torch_or_transformers():
    code = (
        "import sys; from recipec import model_types; model_types.config_keys('gpt2'); "
        "import recipec.schema.model; "
        "assert not {'torch', 'transformers'} & set(sys.modules), 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


# -- a few steps of training, per architecture -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_each_architecture_trains_a_few_steps_on_cpu(model_type, tmp_path, recipe_text):
    moe = "router_aux_loss_coef" in model_types.config_keys(model_type)
    recipe = recipe_text(
        {"model.init": model_type, "model.config": _config(model_type), "data.seq_len": 32},
        tokenizer={"train": {"kind": "bpe", "vocab_size": 300}},
        data={"sources": [{"builtin": "python-docs", "max_documents": 8}], "eval_fraction": 0.25},
        train={"max_steps": 3, "log_every": 1, "eval_every": 3, "eval_batches": 1, "save_every": 0},
        # a mixture of experts trains with its router loss, through the chunked cross-entropy
        text="[launch]\ncpu = true" + ('\n\n[loss]\ncross_entropy = "chunked"\nchunk_size = 16\nrouter_aux_loss_coef = 0.01' if moe else ""),
    )
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "tiny.toml").write_text(recipe, encoding="utf-8")
    written, _ = build(tmp_path / "recipes" / "tiny.toml", (), tmp_path / "build" / "tiny", project=tmp_path)
    proc = forkrun.run(
        [sys.executable, str(written.dir / "train.py")], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    metrics = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert moe == (model_type in ("mixtral", "qwen3_moe"))
    if moe:
        assert all(math.isfinite(m["aux_loss"]) and m["aux_loss"] > 0 for m in metrics if "loss" in m)
    assert any(math.isfinite(m["eval_loss"]) for m in metrics if "eval_loss" in m)
    saved = json.loads((tmp_path / "runs" / "tiny" / "model" / "config.json").read_text())
    assert saved["model_type"] == model_type


def test_the_router_loss_has_one_home_and_a_dense_model_has_none(plan_of):
    (message,) = _errors(plan_of, "mixtral", {**_config("mixtral"), "router_aux_loss_coef": 0.01})
    assert message.startswith("`model.config.router_aux_loss_coef` is set by `loss.router_aux_loss_coef`")
    (message,) = _errors(plan_of, "qwen3_moe", {**_config("qwen3_moe"), "output_router_logits": True})
    assert message.startswith("`model.config.output_router_logits` is set by `loss.router_aux_loss_coef`")
    with pytest.raises(RecipeError) as info:
        plan_of({"model.init": "qwen3", "model.config": _config("qwen3"), "loss.router_aux_loss_coef": 0.01})
    assert [d.message for d in info.value.diagnostics] == [
        'router_aux_loss_coef applies to a mixture-of-experts model, and model.init "qwen3" has no router'
    ]
    plan = plan_of({"model.init": "mixtral", "model.config": _config("mixtral"), "loss.router_aux_loss_coef": 0.01})
    assert plan["router_aux_loss_coef"] == 0.01
