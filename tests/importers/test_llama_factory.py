"""recipec import --from llama-factory: the fixtures mirror LLaMA-Factory's own examples."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import pytest

from recipec.compiler import plan_recipe
from recipec.diagnostics import RecipeError
from recipec.importers import Options, import_config, llama_factory

from conftest import scheduler_lrs

TOOL = "llama-factory"
NFT = "not-for-training"

# What every fixture of LLaMA-Factory's example layout leaves out of the training: the
# output and logging housekeeping of its examples.
HOUSEKEEPING = {"do_train": NFT, "overwrite_output_dir": NFT, "overwrite_cache": NFT, "plot_loss": NFT}
DEMO = ("data/identity.json", "data/alpaca_en_demo.json")

EXPECTED = {
    "llama3_lora_sft.yaml": {
        "files": DEMO,
        "approx": set(),
        "dropped": {**HOUSEKEEPING},
    },
    "llama3_lora_pretrain.yaml": {
        "files": ("data/c4_demo.jsonl",),
        "approx": set(),
        "dropped": {**HOUSEKEEPING},
    },
    "llama3_lora_dpo.yaml": {
        "files": ("data/dpo_en_demo.json",),
        "approx": set(),
        "dropped": {**HOUSEKEEPING},
    },
    "llama3_lora_kto.yaml": {
        "files": ("data/kto_en_demo.json",),
        "approx": {"per_device_train_batch_size"},
        "dropped": dict(HOUSEKEEPING),
    },
    "llama3_lora_sft_otfq.yaml": {
        "files": DEMO,
        "approx": {"quantization_bit"},
        "dropped": {**HOUSEKEEPING},
    },
    "llama3_full_sft.yaml": {
        "files": DEMO,
        "approx": {"deepspeed"},
        "dropped": {**HOUSEKEEPING},
    },
    "qwen2_5_lora_sft_packing.yaml": {
        "files": ("data/alpaca_en_demo.json",),
        "approx": {"interleave_probs", "mix_strategy"},
        "dropped": {**HOUSEKEEPING},
    },
    "llama3_pissa_sft.yaml": {
        "files": DEMO,
        "approx": {"pissa_init", "pissa_iter"},
        "dropped": {**HOUSEKEEPING, "pissa_convert": NFT},
    },
    "llama3_lora_reward.yaml": {
        "files": ("data/dpo_en_demo.json",),
        "approx": {"stage"},  # stage rm: trl's value head against transformers' score head
        "dropped": {**HOUSEKEEPING},
    },
    "qwen3_full_sft.yaml": {
        "files": ("data/alpaca_en_demo.json",),
        "approx": set(),  # template qwen3: exact, with the empty thought before each answer
        "dropped": {**HOUSEKEEPING, "use_v1_kernels": "missing-feature"},
    },
    "llama3_freeze_sft.yaml": {
        "files": DEMO,
        "approx": set(),
        # use_llama_pro: the trainable layers are every n-th of the expanded model, whose config.json is not here
        "dropped": {**HOUSEKEEPING, **dict.fromkeys(("finetuning_type", "freeze_trainable_layers", "freeze_trainable_modules", "use_llama_pro"), "missing-feature")},
    },
    "llama3_lora_sft_trainer_args.yaml": {
        "files": ("data/identity.json", "data/glaive_toolcall_en_demo.json", "data/alpaca_en_demo.json"),
        "approx": {"dataset", "report_to"},
        "dropped": {**HOUSEKEEPING},
    },
}


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_fixture(imported, fixture):
    spec = EXPECTED[fixture]
    got = imported(TOOL, fixture, files=spec["files"])
    assert got.approx == spec["approx"]
    assert got.dropped == spec["dropped"]
    assert not got.result.draft.pending()


def test_sft(imported):
    r = imported(TOOL, "llama3_lora_sft.yaml", files=DEMO).recipe
    assert r["model"] == {"path": "meta-llama/Meta-Llama-3-8B-Instruct", "trust_remote_code": True, "gradient_checkpointing": True}
    assert [s["path"] for s in r["data"]["sources"]] == list(DEMO)
    assert all(s["records"] == "alpaca" and s["max_documents"] == 1000 and s["train_on"] == "assistant" for s in r["data"]["sources"])
    assert r["data"]["seq_len"] == 2048 and r["data"]["packing"] is False and r["data"]["eval_fraction"] == 0.0
    assert r["data"]["num_proc"] == 16 and r["data"]["num_workers"] == 4
    assert r["peft"] == {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
    assert r["optim"]["lr"] == 1e-4 and r["optim"]["weight_decay"] == 0.0 and r["optim"]["betas"] == [0.9, 0.999]
    assert r["schedule"] == {"warmup": 0.1, "decay": "cosine", "min_lr_ratio": 0.0}
    assert r["train"]["epochs"] == 3 and r["train"]["micro_batch_size"] == 1 and r["train"]["batch_size"] == 8
    assert r["train"]["eval_every"] == 0 and r["train"]["save_every"] == 500
    assert r["launch"]["mixed_precision"] == "bf16"
    assert r["recipe"]["seed"] == 42
    assert r["tokenizer"]["chat_template"] == llama_factory.chat_template("llama3")


def test_qwen3_reasoning_template(imported):
    got = imported(TOOL, "qwen3_full_sft.yaml", files=("data/alpaca_en_demo.json",))
    template = got.recipe["tokenizer"]["chat_template"]
    assert template == llama_factory.chat_template("qwen3") and "<think>" in template
    assert "special_tokens" not in got.recipe["tokenizer"]  # Qwen3's tokenizer has its markers


@pytest.mark.parametrize(
    ("body", "how", "why"),
    [
        ("template: gemma3\n", "exact", ""),
        ("template: phi4\n", "exact", ""),
        ("template: mistral_small\n", "exact", ""),
        ("template: mistral\n", "approx", "SentencePiece"),
        ("template: llama2\n", "approx", "SentencePiece"),
        ("template: deepseek\n", "approx", "Assistant:"),
        ("template: qwen3\nenable_thinking: false\n", "approx", "enable_thinking off"),
        ("template: qwen3\nmask_history: true\n", "approx", "mask_history"),
        ("template: gemma2\n", "approx", "efficient_eos"),
        ("template: qwen2_vl\n", "approx", "not written out"),
    ],
)
def test_template_mapping(tmp_path, monkeypatch, body, how, why):
    draft = _warnings(tmp_path, monkeypatch, "stage: sft\ndataset: alpaca_en\n" + body)
    assert draft.ledger["template"].how == how and why in draft.ledger["template"].why
    assert (draft.value("tokenizer.chat_template") is not None) == ("not written" not in why and "efficient" not in why)


@pytest.mark.parametrize(("body", "how"), [("template: llama3\n", "exact"), ("template: qwen2_vl\n", "approx"), ("", "approx")])
def test_cutoff_len_truncates_turns(tmp_path, monkeypatch, body, how):
    """LLaMA-Factory's proportional cut is recipec's truncate_turns; exact where the turns are those of
    LLaMA-Factory's own template (tests/runtime/test_truncate_turns.py runs both on the same data)."""
    draft = _warnings(tmp_path, monkeypatch, "stage: sft\ndataset: alpaca_en\ncutoff_len: 1024\n" + body)
    assert draft.value("data.overflow") == "truncate_turns" and draft.value("data.seq_len") == 1024
    assert draft.ledger["cutoff_len"].how == how
    if how == "approx":
        assert "the tokenizer's own chat template" in draft.ledger["cutoff_len"].why
    pt = _warnings(tmp_path, monkeypatch, "stage: pt\ndataset: c4_demo\ncutoff_len: 1024\n", files=("data/c4_demo.jsonl",))
    assert pt.value("data.overflow") is None and pt.ledger["cutoff_len"].how == "exact"


def test_template_on_a_sentencepiece_model_is_approximate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text("model_name_or_path: meta-llama/Llama-2-7b-hf\nstage: sft\ndataset: alpaca_en\ntemplate: chatml\n", encoding="utf-8")
    draft = import_config(path, TOOL).draft
    assert draft.ledger["template"].how == "approx" and "Llama-2-7b-hf's SentencePiece tokenizer" in draft.ledger["template"].why
    assert draft.value("tokenizer.special_tokens") == ["<|im_start|>", "<|im_end|>"]  # LLaMA-Factory adds them when missing


def test_enable_thinking_is_read_by_a_reasoning_template_only(tmp_path, monkeypatch):
    draft = _warnings(tmp_path, monkeypatch, "stage: sft\ndataset: alpaca_en\ntemplate: qwen3\nenable_thinking: false\n")
    assert draft.ledger["enable_thinking"].how == "approx"
    assert draft.value("tokenizer.chat_template") == llama_factory.chat_template("qwen3", thinking=False)
    draft = _warnings(tmp_path, monkeypatch, "stage: sft\ndataset: alpaca_en\ntemplate: qwen3_nothink\nenable_thinking: false\n")
    assert draft.ledger["enable_thinking"].how == "dropped" and draft.ledger["template"].how == "exact"


@pytest.mark.parametrize(
    ("extra", "patience"),
    [
        ("val_size: 0.1\neval_strategy: steps\neval_steps: 50\nearly_stopping_steps: 4\n", 4),
        ("val_size: 0.1\neval_strategy: steps\neval_steps: 50\nearly_stopping_steps: 4\nmetric_for_best_model: eval_loss\n", 4),
        ("val_size: 0.1\neval_strategy: steps\neval_steps: 50\nearly_stopping_steps: 4\nmetric_for_best_model: accuracy\ngreater_is_better: true\n", None),
        ("early_stopping_steps: 4\n", None),  # nothing evaluated while training
    ],
    ids=["eval-loss", "metric-eval-loss", "other-metric", "no-evaluation"],
)
def test_early_stopping_steps_is_the_recipes_patience_on_the_eval_loss(tmp_path, monkeypatch, extra, patience):
    """LLaMA-Factory's early_stopping_steps (an EarlyStoppingCallback's patience, counted in evaluations)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text("model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct\nstage: sft\ndataset: alpaca_en\ntemplate: llama3\n" + extra, encoding="utf-8")
    draft = import_config(path, TOOL).draft
    assert draft.value("train.early_stopping_patience") == patience
    assert draft.ledger["early_stopping_steps"].how == ("exact" if patience else "dropped")


def test_global_batch_counts_processes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = Path(__file__).parent / "configs" / TOOL / "llama3_lora_sft.yaml"
    r = tomllib.loads(import_config(path, TOOL, Options(name="x", num_processes=4)).text)
    assert r["train"]["batch_size"] == 32 and r["launch"]["num_processes"] == 4


def test_pretrain(imported):
    r = imported(TOOL, "llama3_lora_pretrain.yaml", files=("data/c4_demo.jsonl",)).recipe
    (src,) = r["data"]["sources"]
    assert src == {"path": "data/c4_demo.jsonl", "max_documents": 1000}  # records "text", the text column
    assert r["data"]["packing"] is True and r["data"]["seq_len"] == 2048


def test_dpo(imported):
    r = imported(TOOL, "llama3_lora_dpo.yaml", files=("data/dpo_en_demo.json",)).recipe
    assert r["preference"] == {"objective": "dpo", "beta": 0.1}
    (src,) = r["data"]["sources"]
    assert src["records"] == "preference"
    assert src["fields"] == {"prompt": "conversations", "chosen": "chosen", "rejected": "rejected", "role": "from", "content": "value"}
    assert src["roles"] == {"human": "user", "gpt": "assistant", "system": "system"}
    assert r["optim"]["lr"] == 5e-6


def test_kto(imported):
    got = imported(TOOL, "llama3_lora_kto.yaml", files=("data/kto_en_demo.json",))
    r = got.recipe
    assert r["preference"] == {"objective": "kto", "beta": 0.1}
    assert r["data"]["sources"][0]["records"] == "unpaired_preference"
    # LLaMA-Factory's KTO records: one message list, the last message the completion
    assert r["data"]["sources"][0]["fields"] == {"messages": "messages", "label": "label"}
    assert got.result.draft.ledger["dataset"].how == "exact"
    assert r["train"]["micro_batch_size"] == 2 and r["train"]["batch_size"] == 8
    assert any("KL term" in w for w, _ in got.result.draft.warnings)


def test_pissa(imported):
    r = imported(TOOL, "llama3_pissa_sft.yaml", files=DEMO).recipe
    assert r["peft"]["init"] == "pissa"


def test_reward_stage_trains_a_reward_model_on_its_pairs(imported, tmp_path, monkeypatch):
    got = imported(TOOL, "llama3_lora_reward.yaml", files=("data/dpo_en_demo.json",))
    assert got.recipe["preference"] == {"objective": "reward"}
    assert got.recipe["data"]["sources"][0]["records"] == "preference"
    assert "value head" in got.result.draft.ledger["stage"].why
    assert not any("stage" in w for w, _ in got.result.draft.warnings)
    draft = _warnings(tmp_path, monkeypatch, "stage: rm\ndataset: dpo_en_demo\ntemplate: llama3\npref_beta: 0.2\n", files=("data/dpo_en_demo.json",))
    assert draft.ledger["pref_beta"].how == "dropped" and draft.ledger["pref_beta"].reason == "ignored-by-tool"
    draft = _warnings(tmp_path, monkeypatch, "stage: ppo\ndataset: alpaca_en_demo\ntemplate: llama3\nppo_epochs: 4\n", files=("data/alpaca_en_demo.json",))
    assert draft.ledger["stage"].reason == "missing-feature" and draft.ledger["ppo_epochs"].reason == "missing-feature"
    assert any("stage 'ppo' cannot be imported" in w for w, _ in draft.warnings)


def test_default_system(tmp_path, monkeypatch):
    draft = _warnings(tmp_path, monkeypatch, "stage: sft\ndataset: alpaca_en\ntemplate: qwen\ndefault_system: Answer in French.\n")
    assert draft.ledger["default_system"].how == "exact"
    assert draft.value("tokenizer.chat_template") == llama_factory.chat_template("qwen", "Answer in French.")
    draft = _warnings(tmp_path, monkeypatch, "stage: sft\ndataset: alpaca_en\ntemplate: gemma2\ndefault_system: Hi.\n")
    assert draft.ledger["template"].how == "approx" and draft.ledger["default_system"].how == "dropped"
    assert "efficient_eos" in draft.ledger["template"].why


def test_qlora(imported):
    r = imported(TOOL, "llama3_lora_sft_otfq.yaml", files=DEMO).recipe
    assert r["peft"]["quantize"] == "4bit"


def test_full_deepspeed_z3(imported):
    r = imported(TOOL, "llama3_full_sft.yaml", files=DEMO).recipe
    assert "peft" not in r
    assert r["launch"]["strategy"] == "deepspeed" and r["launch"]["deepspeed"] == {"zero_stage": 3}  # from the file's name
    assert r["optim"]["lr"] == 1e-5 and r["train"]["batch_size"] == 2


def test_preference_under_deepspeed_stays_deepspeed(imported, tmp_path):
    """DPO under ZeRO-3 stays DeepSpeed with its live reference: with LoRA the partitioned base model with its
    adapter disabled; fully fine-tuned, a frozen copy partitioned as the policy is."""
    text = (Path(__file__).parent / "configs" / TOOL / "llama3_lora_dpo.yaml").read_text(encoding="utf-8")
    text += "deepspeed: examples/deepspeed/ds_z3_config.json\n"
    for finetuning in ("lora", "full"):
        path = tmp_path / f"llama3_{finetuning}_dpo_z3.yaml"
        path.write_text(text.replace("finetuning_type: lora", f"finetuning_type: {finetuning}"), encoding="utf-8")
        r = imported(TOOL, path, files=("data/dpo_en_demo.json",)).recipe
        assert r["launch"]["strategy"] == "deepspeed" and r["launch"]["deepspeed"] == {"zero_stage": 3}
        assert ("peft" in r) == (finetuning == "lora") and "reference" not in r["preference"]


def test_packing(imported):
    r = imported(TOOL, "qwen2_5_lora_sft_packing.yaml", files=("data/alpaca_en_demo.json",)).recipe
    assert r["data"]["packing"] is True and r["data"]["seq_len"] == 4095  # DataArguments: cutoff_len - 1
    assert r["data"]["overflow"] == "truncate_turns"
    hub, demo = r["data"]["sources"]
    assert hub["hub"] == {"repo": "HuggingFaceH4/ultrachat_200k", "split": "train_sft"} and hub["records"] == "messages"
    assert (hub["weight"], demo["weight"]) == (0.8, 0.2) and r["data"]["on_exhausted"] == "stop"
    assert r["data"]["eval_fraction"] == 0.02 and r["train"]["eval_every"] == 200
    assert r["model"]["attention"] == "flash_attention_2"
    assert r["peft"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert r["output"]["trackers"] == ["wandb"]


@pytest.mark.parametrize("on_start", [True, False, None])
def test_eval_on_start_is_eval_at_start(imported, tmp_path, on_start):
    text = (Path(__file__).parent / "configs" / TOOL / "qwen2_5_lora_sft_packing.yaml").read_text(encoding="utf-8")
    assert "eval_strategy: steps\n" in text and "eval_on_start" not in text
    if on_start is not None:
        text += f"eval_on_start: {str(on_start).lower()}\n"
    path = tmp_path / "packing_eval.yaml"
    path.write_text(text, encoding="utf-8")
    got = imported(TOOL, path, files=("data/alpaca_en_demo.json",))
    assert got.recipe["train"]["eval_at_start"] is bool(on_start)  # left out: transformers' False
    if on_start is None:
        assert ("eval_on_start", "no evaluation before the first step") in got.result.draft.defaults
    elif on_start:  # transformers' Trainer evaluates again when a run resumes
        assert "eval_on_start" in got.approx
    else:
        assert "eval_on_start" in got.exact


def test_trainer_args(imported):
    spec = EXPECTED["llama3_lora_sft_trainer_args.yaml"]
    r = imported(TOOL, "llama3_lora_sft_trainer_args.yaml", files=spec["files"]).recipe
    assert r["optim"] == {"name": "adamw", "implementation": "auto", "lr": 3e-5, "weight_decay": 0.01, "grad_clip": 0.5, "betas": [0.9, 0.95], "eps": 1e-6}
    assert r["schedule"] == {"warmup": 50, "decay": "cosine", "min_lr_ratio": 0.1}
    assert r["train"]["max_steps"] == 1200 and r["train"]["keep_last"] == 3 and r["recipe"]["seed"] == 7
    assert r["model"]["gradient_checkpointing"] is False and r["model"]["attention"] == "sdpa"
    assert r["peft"]["rslora"] is True and r["peft"]["loraplus_lr_ratio"] == 16.0 and r["peft"]["alpha"] == 16
    assert "<|im_start|>" in r["tokenizer"]["chat_template"]
    train, tools, ev = r["data"]["sources"]
    assert train["train_on"] == "assistant" and tools["train_on"] == "last_assistant"  # mask_history
    assert tools["records"] == "sharegpt" and ev["split"] == "eval" and ev["name"] == "alpaca_en_demo"


# -- the LR of every step, against transformers' own scheduler ---------------------------


def _hf_lrs(config: dict, total: int) -> list[float]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    lr = float(config.get("learning_rate", 5e-5))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    steps = int(config.get("warmup_steps", 0) or 0)
    warmup = steps if steps >= 1 else math.ceil(float(config.get("warmup_ratio", 0.0) or 0.0) * total)
    sched = transformers.get_scheduler(
        config.get("lr_scheduler_type", "linear"), opt, num_warmup_steps=warmup, num_training_steps=total,
        scheduler_specific_kwargs=dict(config.get("lr_scheduler_kwargs") or {}),
    )
    return scheduler_lrs(opt, sched, total)


@pytest.mark.parametrize("total", [200, 1000])
@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_lr_matches_transformers(imported, fixture, total):
    import yaml

    from recipec.runtime import schedule

    path = Path(__file__).parent / "configs" / TOOL / fixture
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config = {k: (float(v) if k in ("learning_rate", "warmup_ratio") else v) for k, v in config.items()}
    expected = _hf_lrs(config, total)
    got = imported(TOOL, fixture, files=EXPECTED[fixture]["files"])
    text = re.sub(r"(?m)^(epochs|max_steps) = .*$", "", got.path.read_text(encoding="utf-8"))
    got.path.write_text(text, encoding="utf-8")
    plan, _ = plan_recipe(got.path, [f"train.max_steps={total}"])
    peak = got.recipe["optim"]["lr"]
    ours = [peak * m for m in schedule.values(plan["schedule_phases"], total)]
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-18)


# -- errors, detection, warnings ----------------------------------------------------------


def test_unknown_key(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("model_name_or_path: a/b\nstage: sft\nlora_rnak: 8\n", encoding="utf-8")
    with pytest.raises(RecipeError) as err:
        import_config(path, TOOL)
    text = str(err.value)
    assert "lora_rnak" in text and "x.yaml:3" in text and "lora_rank" in text
    assert "Traceback" not in text


def test_known_keys_come_from_the_dataclasses():
    for key in ("neat_packing", "pref_loss", "pissa_init", "quantization_bit", "enable_liger_kernel", "ray_num_workers", "learning_rate", "deepspeed"):
        assert key in llama_factory.KNOWN
    assert "compute_dtype" not in llama_factory.KNOWN  # init=False: not settable


def test_llama_factory_config_named_as_another_tool(tmp_path):
    path = Path(__file__).parent / "configs" / TOOL / "llama3_lora_sft.yaml"
    from recipec.importers import detect
    from recipec.importers.core import read_config

    hits = detect(read_config(path))[TOOL]
    assert {"model_name_or_path", "stage", "finetuning_type", "template", "cutoff_len", "lora_target"} <= set(hits)


def test_another_tool_detected(tmp_path):
    path = tmp_path / "args.json"
    path.write_text('{"per_device_train_batch_size": 8, "lr_scheduler_type": "linear", "adam_epsilon": 1e-8, "logging_strategy": "steps"}', encoding="utf-8")
    with pytest.raises(RecipeError, match="looks like a transformers config"):
        import_config(path, TOOL)


def _warnings(tmp_path, monkeypatch, body: str, files=()):
    monkeypatch.chdir(tmp_path)
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text('{"text": "x"}\n', encoding="utf-8")
    path = tmp_path / "c.yaml"
    path.write_text("model_name_or_path: meta-llama/Meta-Llama-3-8B\n" + body, encoding="utf-8")
    result = import_config(path, TOOL)
    out = tmp_path / "c.toml"
    out.write_text(result.text, encoding="utf-8")
    plan_recipe(out, ())
    return result.draft


HUB = "dataset: alpaca_en\n"


@pytest.mark.parametrize(
    ("body", "needle", "dropped"),
    [
        ("stage: sft\nfinetuning_type: full\nlora_rank: 16\n" + HUB, "finetuning_type is \"full\"", {"lora_rank": "ignored-by-tool"}),
        ("stage: ppo\n" + HUB, "stage 'ppo' cannot be imported", {"stage": "missing-feature"}),
        ("stage: sft\nfinetuning_type: freeze\nfreeze_trainable_layers: 0\n" + HUB, "leaves no parameter to train", {"finetuning_type": "no-equivalent"}),
        ("stage: sft\n" + HUB + "pref_beta: 0.2\n", "not a preference stage", {"pref_beta": "ignored-by-tool"}),
        ("stage: pt\ndataset: fineweb\ntemplate: llama3\n", "no chat template", {"template": "ignored-by-tool"}),
        ("stage: dpo\ndataset: ultrafeedback\ntrain_on_prompt: true\n", "does not mask by turns", {"train_on_prompt": "ignored-by-tool"}),
        ("stage: sft\ndataset: alpaca_en,lima\nmix_strategy: interleave_over\ninterleave_probs: 0.5,0.6\n", "do not sum to 1", {}),
        ("stage: sft\n" + HUB + "interleave_probs: 0.5\n", "mix_strategy is \"concat\"", {"interleave_probs": "ignored-by-tool"}),
        ("stage: sft\n" + HUB + "eval_strategy: steps\neval_steps: 10\n", "nothing to evaluate on", {}),
        ("stage: sft\n" + HUB + "gradient_checkpointing: false\n", "LLaMA-Factory checkpoints", {"gradient_checkpointing": "ignored-by-tool"}),
        ("stage: sft\n" + HUB + "lr_scheduler_type: cosine\nwarmup_steps: 10\nwarmup_ratio: 0.1\n", "warmup_ratio", {"warmup_ratio": "ignored-by-tool"}),
        ("stage: kto\ndataset: kto_mix_en\nper_device_train_batch_size: 1\ngradient_accumulation_steps: 4\n", "KL term", {}),
        ("stage: sft\ndataset: my_data\n", "not a known name", {}),
        ("stage: sft\n" + HUB + "quantization_method: hqq\n", "quantization_bit is not set", {"quantization_method": "ignored-by-tool"}),
        ("stage: sft\nfinetuning_type: full\n" + HUB + "galore_rank: 64\n", "read only with `use_galore` on", {"galore_rank": "ignored-by-tool"}),
    ],
)
def test_warnings(tmp_path, monkeypatch, body, needle, dropped):
    files = ("data/my_data.json",) if "my_data" in body else ()
    draft = _warnings(tmp_path, monkeypatch, body, files)
    assert any(needle in w for w, _ in draft.warnings), draft.warnings
    for key, reason in dropped.items():
        assert draft.ledger[key].how == "dropped" and draft.ledger[key].reason == reason


def test_preference_objectives(tmp_path, monkeypatch):
    for loss, objective in llama_factory.OBJECTIVES.items():
        draft = _warnings(tmp_path, monkeypatch, f"stage: dpo\ndataset: dpo_mix_en\npref_loss: {loss}\npref_beta: 0.2\n")
        assert draft.value("preference.objective") == objective and draft.value("preference.beta") == 0.2
    draft = _warnings(tmp_path, monkeypatch, "stage: dpo\ndataset: dpo_mix_en\npref_loss: simpo\n")
    assert draft.value("preference.gamma") == 0.5 and draft.value("preference.beta") == 0.1


@pytest.mark.parametrize(("loss", "imported"), [("sigmoid", True), ("hinge", True), ("simpo", False)])
def test_ld_alpha_is_ld_dpo_approximately(tmp_path, monkeypatch, loss, imported):
    """LLaMA-Factory's ld_alpha (LD-DPO) desensitises the policy's log-probabilities only; recipec's, as TRL's, the
    reference's too: written approximately for the objectives with a reference, not imported for SimPO."""
    draft = _warnings(tmp_path, monkeypatch, f"stage: dpo\ndataset: dpo_mix_en\npref_loss: {loss}\nld_alpha: 0.3\n")
    if imported:
        assert draft.value("preference.ld_alpha") == 0.3 and draft.ledger["ld_alpha"].how == "approx"
        assert "policy's log-probabilities only" in draft.ledger["ld_alpha"].why
    else:
        assert draft.ledger["ld_alpha"].how == "dropped"


@pytest.mark.parametrize(
    ("body", "how"),
    [
        ("stage: sft\nuse_dft_loss: true\n", "exact"),
        ("stage: sft\nuse_dft_loss: false\n", "exact"),
        ("stage: sft\nuse_dft_loss: true\nlabel_smoothing_factor: 0.1\n", "dropped"),  # the label smoother wins
        ("stage: pt\nuse_dft_loss: true\n", "dropped"),  # only the supervised trainer reads it
    ],
)
def test_use_dft_loss_is_loss_type_dft_in_supervised_fine_tuning(tmp_path, monkeypatch, body, how):
    draft = _warnings(tmp_path, monkeypatch, body + HUB)
    assert draft.ledger["use_dft_loss"].how == how
    dft = how == "exact" and "true" in body
    assert (draft.value("loss.type") == "dft") == dft


def test_dataset_info_of_dataset_dir(tmp_path, monkeypatch):
    (tmp_path / "mydata").mkdir()
    (tmp_path / "mydata" / "dataset_info.json").write_text(
        '{"chats": {"file_name": "chats.jsonl", "formatting": "sharegpt", "columns": {"messages": "dialog"}}}', encoding="utf-8"
    )
    draft = _warnings(tmp_path, monkeypatch, "stage: sft\ndataset: chats\ndataset_dir: mydata\n", files=("mydata/chats.jsonl",))
    assert draft.value("data.sources[0].path") == "mydata/chats.jsonl"
    assert draft.value("data.sources[0].records") == "sharegpt"
    assert draft.value("data.sources[0].fields") == {"messages": "dialog"}


def test_online_and_remote_dataset_dir(tmp_path, monkeypatch):
    draft = _warnings(tmp_path, monkeypatch, "stage: sft\ndataset: org/my-alpaca\ndataset_dir: ONLINE\n")
    assert {k: v.value for k, v in draft.value("data.sources[0].hub").items()} == {"repo": "org/my-alpaca"}
    assert draft.value("data.sources[0].records") == "alpaca" and draft.ledger["dataset"].how == "exact"
    draft = _warnings(tmp_path, monkeypatch, "stage: sft\ndataset: identity\ndataset_dir: REMOTE:llamafactory/demo_data\n")
    hub = {k: v.value for k, v in draft.value("data.sources[0].hub").items()}
    assert hub == {"repo": "llamafactory/demo_data", "data_files": "identity.json"}
    assert draft.ledger["dataset"].how == "approx"


def test_feature_flags_are_missing_features(tmp_path, monkeypatch):
    draft = _warnings(tmp_path, monkeypatch, "stage: sft\nfinetuning_type: full\n" + HUB + "use_galore: true\ngalore_rank: 64\nenable_liger_kernel: true\nuse_unsloth: false\n")
    assert {k: draft.ledger[k].reason for k in ("use_galore", "galore_rank", "enable_liger_kernel")} == dict.fromkeys(
        ("use_galore", "galore_rank", "enable_liger_kernel"), "missing-feature"
    )
    assert draft.ledger["use_unsloth"].how == "exact"


def test_parallelism_config(tmp_path, imported):
    text = (Path(__file__).parent / "configs" / TOOL / "llama3_full_sft.yaml").read_text(encoding="utf-8") + "parallelism_config:\n  tp_size: 2\n  dp_shard_size: 4\n"
    path = tmp_path / "llama3_full_sft_tp.yaml"
    path.write_text(text, encoding="utf-8")
    got = imported(TOOL, path, num_processes=8, files=EXPECTED["llama3_full_sft.yaml"]["files"])
    launch = got.recipe["launch"]
    # accelerate runs no tensor parallelism under DeepSpeed: the size is not imported, and the batch counts every process
    assert "parallelism" not in launch and launch["num_processes"] == 8 and launch["strategy"] == "deepspeed"
    assert got.result.draft.ledger["parallelism_config.tp_size"].how == "dropped"
    assert got.recipe["train"]["batch_size"] == 1 * 2 * 8


def test_ddp_timeout_is_the_collective_timeout(imported):
    """ddp_timeout (seconds, handed to init_process_group) -> launch.collective_timeout_minutes, exactly: the examples'
    180,000,000 s (so that the other processes wait out the main process's tokenization) and qwen3's 1,800."""
    for name, minutes in (("llama3_lora_sft.yaml", 3_000_000), ("qwen3_full_sft.yaml", 30)):
        got = imported(TOOL, name, files=EXPECTED[name]["files"])
        assert got.recipe["launch"]["collective_timeout_minutes"] == minutes
        assert got.result.draft.ledger["ddp_timeout"].how == "exact"


def test_alpaca_style_pairs_are_rendered_in_the_template_with_their_system(tmp_path, monkeypatch):
    """LLaMA-Factory renders an alpaca-style ranking dataset's instruction as the user's turn and each answer as the
    assistant's, in its template, with the system column as the system message: as_chat = true with the columns."""
    draft = _warnings(tmp_path, monkeypatch, "stage: dpo\ndataset: orca_pairs,ultrafeedback\ntemplate: llama3\n")
    recipe = tomllib.loads((tmp_path / "c.toml").read_text(encoding="utf-8"))
    orca, ultra = recipe["data"]["sources"]
    assert orca["as_chat"] and orca["fields"] == {"prompt": "question", "chosen": "chosen", "rejected": "rejected"}
    assert ultra["as_chat"] and ultra["fields"] == {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}
    assert not any("system" in message for message, _ in draft.warnings)


def test_alpaca_records_join_the_input_with_one_newline(tmp_path, monkeypatch):
    """LLaMA-Factory's user turn is "\\n".join([prompt, query]) (data/converter.py): the alpaca SFT sources and an
    alpaca-style ranking dataset's query column (read as `fields.input`) take input_separator "\\n"."""
    draft = _warnings(tmp_path, monkeypatch, "stage: sft\n" + HUB)
    assert draft.value("data.sources[0].records") == "alpaca"
    assert draft.value("data.sources[0].input_separator") == "\n"
    (tmp_path / "mydata").mkdir()
    (tmp_path / "mydata" / "dataset_info.json").write_text(
        '{"pairs": {"file_name": "pairs.jsonl", "ranking": true, "columns": {"prompt": "instruction", "query": "input", '
        '"chosen": "chosen", "rejected": "rejected"}}}', encoding="utf-8"
    )
    draft = _warnings(tmp_path, monkeypatch, "stage: dpo\ndataset: pairs\ndataset_dir: mydata\n", files=("mydata/pairs.jsonl",))
    assert draft.value("data.sources[0].records") == "preference"
    assert draft.value("data.sources[0].fields") == {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected", "input": "input"}
    assert draft.value("data.sources[0].input_separator") == "\n" and draft.value("data.sources[0].as_chat") is True


@pytest.mark.parametrize(
    ("extra", "adapter", "how"),
    [
        ("adapter_name_or_path: saves/llama3-8b/lora/sft\n", "./saves/llama3-8b/lora/sft", "exact"),
        ("adapter_name_or_path: saves/llama3-8b/lora/sft\ncreate_new_adapter: false\n", "./saves/llama3-8b/lora/sft", "exact"),
        ("adapter_name_or_path: someone/llama3-sft-lora\n", "someone/llama3-sft-lora", "exact"),
        ("adapter_name_or_path: saves/a,saves/b\n", None, "dropped"),  # a is merged first
        ("adapter_name_or_path: saves/a\ncreate_new_adapter: true\n", None, "dropped"),  # merged, then a new adapter
    ],
    ids=["resume", "resume-explicit", "hub", "two", "new-over-merged"],
)
def test_adapter_name_or_path_resumes_lora_training_of_one_adapter(tmp_path, monkeypatch, extra, adapter, how):
    """LLaMA-Factory's init_adapter: one adapter without create_new_adapter is resumed
    (PeftModel.from_pretrained(..., is_trainable=True), under its own config: lora_rank is not read) -> peft.adapter."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    base = "model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct\nstage: sft\nfinetuning_type: lora\nlora_rank: 16\ndataset: alpaca_en\ntemplate: llama3\n"
    path.write_text(base + extra, encoding="utf-8")
    draft = import_config(path, TOOL).draft
    assert draft.value("peft.adapter") == adapter
    assert draft.ledger["adapter_name_or_path"].how == how
    if adapter is not None:
        assert draft.value("peft.r") is None
        assert (draft.ledger["lora_rank"].how, draft.ledger["lora_rank"].reason) == ("dropped", "ignored-by-tool")
    else:
        assert draft.value("peft.r") == 16 and draft.ledger["adapter_name_or_path"].reason == "missing-feature"


@pytest.mark.parametrize(("adapter", "revision"), [("someone/llama3-sft-lora", "v1.0"), ("saves/llama3-8b/lora/sft", None)])
def test_model_revision_is_the_hub_adapters_revision_too(tmp_path, monkeypatch, adapter, revision):
    """LLaMA-Factory's init_adapter loads the adapter with `revision=model_args.model_revision`: a hub adapter's
    peft.adapter_revision is model_revision as well (a local one has none)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(
        "model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct\nmodel_revision: v1.0\nstage: sft\nfinetuning_type: lora\n"
        f"dataset: alpaca_en\ntemplate: llama3\nadapter_name_or_path: {adapter}\n",
        encoding="utf-8",
    )
    draft = import_config(path, TOOL).draft
    assert draft.value("model.revision") == "v1.0"
    assert draft.value("peft.adapter_revision") == revision
    assert draft.ledger["model_revision"].how == "exact"


@pytest.mark.parametrize(
    ("extra", "metric", "greater"),
    [
        ("metric_for_best_model: rewards/accuracies\n", "eval_reward_accuracy", None),
        ("metric_for_best_model: eval_rewards/margins\ngreater_is_better: true\n", "eval_reward_margin", None),
        ("metric_for_best_model: rewards/chosen\ngreater_is_better: false\n", "eval_rewards_chosen", False),
        ("metric_for_best_model: loss\n", None, None),
    ],
    ids=["accuracy", "margin-explicit", "chosen-lower", "loss"],
)
def test_a_trl_metric_is_the_recipes_best_metric(tmp_path, monkeypatch, extra, metric, greater):
    """TRL's preference trainers log rewards/accuracies, rewards/margins, ...: metric_for_best_model naming one of them
    (with transformers' "eval_" prefix or without) -> train.best_metric, and greater_is_better when it departs from the
    default (higher for a name that is no loss)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    base = "model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct\nstage: dpo\ndataset: dpo_en_demo\ntemplate: llama3\n"
    path.write_text(base + "val_size: 0.1\neval_strategy: steps\neval_steps: 50\nearly_stopping_steps: 3\n" + extra, encoding="utf-8")
    draft = import_config(path, TOOL).draft
    assert draft.value("train.early_stopping_patience") == 3
    assert draft.value("train.best_metric") == metric and draft.value("train.greater_is_better") == greater
    assert draft.ledger["metric_for_best_model"].how == "exact"
