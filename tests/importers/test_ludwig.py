"""`recipec import --from ludwig`: Ludwig 0.17.8 LLM configs (its shipped examples) as recipes.

The expectations below are what Ludwig does with each key (ludwig/schema/trainer.py,
llms/peft.py, llms/quantization.py, modules/lr_scheduler.py, trainers/trainer.py,
trainers/trainer_dpo.py), written by hand: every key not listed under `approx` or `dropped`
must be mapped exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recipec.diagnostics import RecipeError
from recipec.importers import detect, import_config
from recipec.importers.core import read_config

CONFIGS = Path(__file__).resolve().parent / "configs" / "ludwig"

# the input and output features become a prompt/completion record: Ludwig joins their token ids
FEATURES = {"input_features[0].type", "output_features[0].type"}
STRIPPED = "ignored-by-tool"  # keys of the examples that Ludwig's schema strips with a warning

EXPECTED = {
    "llama2_7b_4bit.yaml": {
        # double quantization and float16 compute; the LR steps per micro-batch (8 of them)
        "approx": FEATURES | {"quantization.bits", "trainer.learning_rate_scheduler.warmup_fraction"},
        "dropped": {},
    },
    "config_dpo.yaml": {"approx": FEATURES, "dropped": {"trainer.beta": STRIPPED}},
    "config_kto.yaml": {
        "approx": FEATURES,
        "dropped": {"trainer.beta": STRIPPED, "trainer.desirable_weight": STRIPPED, "trainer.undesirable_weight": STRIPPED},
    },
    "config_orpo.yaml": {"approx": FEATURES, "dropped": {}},
    "pissa_lora.yaml": {"approx": FEATURES, "dropped": {}},
    "loftq_lora.yaml": {
        "approx": FEATURES,
        "dropped": {
            "adapter.init_lora_weights": "missing-feature",
            "adapter.loftq_config.loftq_bits": "missing-feature",
            "adapter.loftq_config.loftq_iter": "missing-feature",
        },
    },
    "oft_llm.yaml": {"approx": FEATURES, "dropped": {}},
    "ln_tuning_llm.yaml": {"approx": FEATURES, "dropped": {}},
}


def _load(imported, name: str, **kw):
    return imported("ludwig", name, data="org/data", **kw)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_imports_and_validates(imported, name):
    exp = EXPECTED[name]
    got = _load(imported, name)
    assert got.approx == exp["approx"]
    assert got.dropped == exp["dropped"]
    assert set(got.result.draft.ledger) == set(got.result.draft.values)


def test_qlora_values_and_defaults(imported):
    got = _load(imported, "llama2_7b_4bit.yaml")
    r = got.recipe
    assert r["model"] == {"path": "meta-llama/Llama-2-7b-hf"}
    # LoraConfig: r 8, alpha null -> 2 * r, dropout 0.05; target_modules null: peft's default
    assert r["peft"] == {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.05, "quantize": "4bit"}
    assert r["data"]["sources"] == [
        {"hub": {"repo": "org/data"}, "records": "prompt_completion", "fields": {"prompt": "instruction", "completion": "output"}}
    ]
    assert r["data"]["packing"] is False and r["data"]["eval_fraction"] == 0.1
    assert r["train"]["micro_batch_size"] == 2 and r["train"]["batch_size"] == 16 and r["train"]["epochs"] == 3
    assert r["optim"] == {"lr": 0.0003, "name": "adamw", "betas": [0.9, 0.999], "eps": 1e-08, "weight_decay": 0.0, "grad_clip": 0.5}
    assert r["schedule"] == {"warmup": 0.01, "warmup_start_ratio": 0.0, "decay": "constant"}
    assert r["train"]["eval_every"] == "1 epoch" and r["train"]["save_every"] == "1 epoch"
    assert r["train"]["eval_micro_batch_size"] == 2 and r["train"]["early_stopping_patience"] == 5
    assert r["launch"]["mixed_precision"] == "no"
    defaults = {k for k, _ in got.result.draft.defaults}
    assert {"adapter.r", "adapter.alpha", "trainer.optimizer.type", "trainer.gradient_clipping.clipglobalnorm", "trainer.early_stop"} <= defaults


def test_adapters(imported):
    pissa = _load(imported, "pissa_lora.yaml").recipe
    assert pissa["peft"] == {"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05, "rslora": True, "init": "pissa"}
    assert pissa["data"]["seq_len"] == 512 and pissa["train"]["batch_size"] == 4 and pissa["optim"]["lr"] == 0.0001
    loftq = _load(imported, "loftq_lora.yaml").recipe
    assert loftq["peft"] == {"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05}
    oft = _load(imported, "oft_llm.yaml").recipe
    assert oft["peft"] == {"method": "oft", "oft_block_size": 32, "module_dropout": 0.0}
    assert oft["train"]["micro_batch_size"] == 1 and oft["train"]["batch_size"] == 1  # batch_size 1 by default
    ln = _load(imported, "ln_tuning_llm.yaml").recipe
    assert ln["peft"] == {"method": "ln_tuning"}
    assert ln["train"]["epochs"] == 5 and ln["optim"]["lr"] == 0.001


@pytest.mark.parametrize("name", ["config_dpo.yaml", "config_kto.yaml", "config_orpo.yaml"])
def test_alignment_examples_without_rejected_feature_train_sft(imported, name):
    got = _load(imported, name)
    r = got.recipe
    assert "preference" not in r
    assert r["data"]["sources"][0]["records"] == "prompt_completion"
    assert r["optim"]["lr"] == 5e-7 and r["train"]["batch_size"] == 16 and r["train"]["epochs"] == 1
    assert any("rejected" in w for w, _ in got.result.draft.warnings)


def test_dpo_with_a_rejected_feature_is_preference(imported, tmp_path):
    text = (CONFIGS / "config_dpo.yaml").read_text(encoding="utf-8")
    text = text.replace("  beta: 0.1", "  dpo_beta: 0.2").replace(
        "output_features:\n  - name: chosen\n    type: text\n",
        "output_features:\n  - name: chosen\n    type: text\n  - name: rejected\n    type: text\n",
    )
    path = tmp_path / "dpo.yaml"
    path.write_text(text, encoding="utf-8")
    got = _load(imported, path)
    r = got.recipe
    assert r["preference"] == {"objective": "dpo", "beta": 0.2}
    assert r["data"]["sources"][0]["records"] == "preference"
    assert r["data"]["sources"][0]["fields"] == {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}
    assert "trainer.type" in got.approx  # no reference model in Ludwig's DPO


def test_schedule_steps_and_deepspeed(imported, tmp_path):
    text = (CONFIGS / "llama2_7b_4bit.yaml").read_text(encoding="utf-8")
    text = text.replace("  epochs: 3\n", "  train_steps: 800\n  steps_per_checkpoint: 80\n  eval_batch_size: 4\n  enable_gradient_checkpointing: true\n")
    text = text.replace("    warmup_fraction: 0.01\n", "    warmup_fraction: 0.01\n    decay: linear\n")
    text = text.replace("backend:\n  type: local\n", "backend:\n  type: deepspeed\n  zero_optimization:\n    stage: 3\n    offload_optimizer:\n      device: cpu\n      pin_memory: true\n")
    text += "preprocessing:\n  global_max_sequence_length: 1024\n"
    path = tmp_path / "steps.yaml"
    path.write_text(text, encoding="utf-8")
    got = _load(imported, path)
    r = got.recipe
    assert r["train"]["max_steps"] == 100 and "epochs" not in r["train"]  # 800 micro-batches / 8
    assert r["train"]["eval_every"] == 10 and r["train"]["save_every"] == 10
    assert r["train"]["eval_micro_batch_size"] == 4
    assert r["schedule"]["decay"] == "linear" and r["schedule"]["min_lr_ratio"] == 0.0
    assert r["model"]["gradient_checkpointing"] is True
    assert r["data"]["seq_len"] == 1024
    assert r["launch"]["strategy"] == "deepspeed"
    assert r["launch"]["deepspeed"] == {"zero_stage": 3, "offload_optimizer": "cpu"}
    assert got.dropped == {"backend.zero_optimization.offload_optimizer.pin_memory": "no-equivalent"}


def test_unknown_key_is_an_error_with_its_line(tmp_path):
    text = (CONFIGS / "pissa_lora.yaml").read_text(encoding="utf-8").replace("  batch_size: 4", "  batch_sise: 4")
    path = tmp_path / "typo.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RecipeError) as exc:
        import_config(path, "ludwig")
    (diag,) = exc.value.diagnostics
    assert "trainer.batch_sise" in diag.message
    assert diag.location.line == text.splitlines().index("  batch_sise: 4") + 1


def test_ecd_and_inference_only_configs_are_refused(tmp_path):
    with pytest.raises(RecipeError, match="model_type: ecd"):
        import_config(CONFIGS / "refused" / "imdb_deepspeed_zero3.yaml", "ludwig")
    path = tmp_path / "zero-shot.yaml"
    path.write_text("model_type: llm\nbase_model: org/m\ninput_features:\n  - name: q\n    type: text\noutput_features:\n  - name: a\n    type: text\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="trains nothing"):
        import_config(path, "ludwig")


@pytest.mark.parametrize("name", [*sorted(EXPECTED), "refused/imdb_deepspeed_zero3.yaml"])
def test_detected_as_ludwig(name, tmp_path):
    found = detect(read_config(CONFIGS / name))
    # axolotl shares `base_model` and `adapter`: Ludwig's markers outnumber them
    assert max(found, key=lambda t: len(found[t])) == "ludwig" and len(found["ludwig"]) >= 3
    if name.startswith("refused"):
        return
    with pytest.raises(RecipeError, match="looks like a ludwig config"):
        import_config(CONFIGS / name, "litgpt")


def test_a_ludwig_config_imported_as_axolotl_says_which_tool_it_is_for():
    """axolotl's markers match (`base_model`), so the config is read as axolotl's and its keys are unknown there;
    Ludwig's markers outnumber axolotl's, and the errors end with the tool to name."""
    with pytest.raises(RecipeError) as caught:
        import_config(CONFIGS / "llama2_7b_4bit.yaml", "axolotl")
    messages = [d.message for d in caught.value.diagnostics]
    assert any(m.startswith("unknown key `input_features`") for m in messages)
    [hint] = [d for d in caught.value.diagnostics if "looks more like" in d.message]
    assert hint.message.endswith("looks more like a config for ludwig (`input_features`, `output_features`, `adapter.type`, `trainer.learning_rate_scheduler`) than for axolotl")
    assert hint.help.endswith("--from ludwig")


def test_another_peft_method_takes_its_method_and_targets_and_drops_the_rest(tmp_path, imported):
    text = (CONFIGS / "llama2_7b_4bit.yaml").read_text(encoding="utf-8")
    text = text.replace("adapter:\n  type: lora\n", "adapter:\n  type: loha\n  r: 16\n  target_modules: [q_proj, v_proj]\n")
    path = tmp_path / "loha.yaml"
    path.write_text(text, encoding="utf-8")
    got = _load(imported, path)
    assert got.recipe["peft"]["method"] == "loha"
    assert got.recipe["peft"]["target_modules"] == ["q_proj", "v_proj"]
    assert got.dropped["adapter.r"] == "missing-feature"
    assert "adapter.r" not in got.approx
    assert got.dropped["quantization.bits"] == "missing-feature" and "peft" in got.recipe and "quantize" not in got.recipe["peft"]


def _ludwig_prompt(template: str, row: dict, task: str | None, input_column: str) -> str:
    """Ludwig's format_input_with_prompt for one row (ludwig/data/prompt.py): str.format with the row's columns,
    __task__ and __sample__ (the input column through json.dumps, quotes stripped)."""
    import json
    import string

    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    values = {k: str(v) for k, v in row.items() if k in fields}
    if "__task__" in fields:
        values["__task__"] = task
    if "__sample__" in fields:
        values["__sample__"] = json.dumps(row[input_column], indent=2).strip('"')
    return template.format(**values)


@pytest.mark.parametrize(
    ("prompt", "how"),
    [
        ({"template": "### Instruction: {instruction}\n### Input: {input}\n### Response:"}, "exact"),
        ({"template": "Task {{{__task__}}}: {instruction}", "task": "answer {briefly}"}, "exact"),
        ({"task": "summarize"}, "approx"),  # Ludwig's zero-shot template, its {__sample__} through json.dumps
    ],
)
def test_a_prompt_template_becomes_the_prompt_format(tmp_path, imported, prompt, how):
    from recipec.importers.ludwig import ZERO_SHOT_TEMPLATE
    from recipec.runtime.formats import to_example

    cfg = yaml.safe_load((CONFIGS / "llama2_7b_4bit.yaml").read_text(encoding="utf-8"))
    cfg["prompt"] = prompt
    path = tmp_path / "templated.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    got = _load(imported, path)
    src = got.recipe["data"]["sources"][0]
    assert "prompt" not in src["fields"]
    assert got.result.draft.ledger["prompt." + next(iter(prompt))].how == how
    input_column = cfg["input_features"][0].get("column", cfg["input_features"][0]["name"])
    output_column = cfg["output_features"][0].get("column", cfg["output_features"][0]["name"])
    rows = [
        {"instruction": "Add 2 and 3.", "input": "in words", input_column: "What is 2+3?", output_column: "five"},
        {"instruction": "Name {x}.", "input": "", input_column: "plain text", output_column: "ok"},
    ]
    for row in rows:
        ex = to_example(row, "prompt_completion", src["fields"], prompt_format=src["prompt_format"])
        template = prompt.get("template", ZERO_SHOT_TEMPLATE)
        assert ex["prompt"] == _ludwig_prompt(template, row, prompt.get("task"), input_column)


def test_a_template_with_a_format_spec_or_retrieved_context_is_not_imported(tmp_path, imported):
    cfg = yaml.safe_load((CONFIGS / "llama2_7b_4bit.yaml").read_text(encoding="utf-8"))
    cfg["prompt"] = {"template": "{score:.2f} {instruction}"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    got = _load(imported, path)
    assert "prompt_format" not in got.recipe["data"]["sources"][0]
    assert got.result.draft.ledger["prompt.template"].how == "dropped"


def test_a_column_name_with_a_dash_or_space_is_a_field_and_an_index_is_not_imported(tmp_path, imported):
    from recipec.runtime.formats import to_example

    cfg = yaml.safe_load((CONFIGS / "llama2_7b_4bit.yaml").read_text(encoding="utf-8"))
    cfg["prompt"] = {"template": "Q ({the-topic}, {sub topic}): {instruction}"}
    path = tmp_path / "dash.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    src = _load(imported, path).recipe["data"]["sources"][0]
    row = {"the-topic": "math", "sub topic": "sums", "instruction": "2+3?", "output": "5"}
    assert to_example(row, "prompt_completion", src["fields"], prompt_format=src["prompt_format"])["prompt"] == "Q (math, sums): 2+3?"
    cfg["prompt"] = {"template": "{0}: {instruction}"}  # positional: Ludwig's str.format fails on it too
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    got = _load(imported, path)
    assert "prompt_format" not in got.recipe["data"]["sources"][0] and got.result.draft.ledger["prompt.template"].how == "dropped"
