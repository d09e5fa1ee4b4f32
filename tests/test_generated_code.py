"""Every name the generated train.py uses is defined, and every import it makes is used, in each
branch of the template: pyflakes over the script rendered for recipes that take different branches
(from scratch or pretrained, a config override, PEFT, optim.trainable, FSDP, ZeRO-3, tensor
parallelism, Muon and parameter groups, schedule-free, the chunked loss, conversations, preference
pairs, weight averaging). A name the template uses under a condition it does not import under
(an ``AutoConfig`` imported only for PEFT, used by optim.trainable's early check) fails here,
not in the first run of a job that waited for its GPUs."""

from __future__ import annotations

import ast
from typing import Any

import pytest

pyflakes_checker = pytest.importorskip("pyflakes.checker")

from recipec.render import render  # noqa: E402

HUB = {"model.init": None, "model.config": None, "model.path": "org/name"}
CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}{% generation %}"
    "{{ m['content'] }}<|im_end|>{% endgeneration %}{% else %}{{ m['content'] }}<|im_end|>{% endif %}\n{% endfor %}"
)
SFT = {"data.sources": [{"path": "recipes/data/dialogs.jsonl", "records": "messages"}], "tokenizer.chat_template": CHAT}
PAIRS = {"data.sources": [{"path": "recipes/data/preference_pairs.jsonl", "records": "preference"}], "tokenizer.chat_template": CHAT}
ZERO3 = {"launch.strategy": "deepspeed", "launch.num_processes": 2, "launch.deepspeed": {"zero_stage": 3}}
FSDP = {"launch.strategy": "fsdp", "launch.num_processes": 2, "launch.cpu": True}
TRAINABLE = {"optim.trainable": {"include": ["layers[-1]", "norms"]}}

VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "from-scratch": ({}, {}),
    "pretrained": (HUB, {"tokenizer": None}),
    "pretrained-override": ({**HUB, "model.config": {"attention_dropout": 0.0}}, {"tokenizer": None}),
    "pretrained-trainable": ({**HUB, **TRAINABLE}, {"tokenizer": None}),
    "pretrained-override-trainable": ({**HUB, "model.config": {"attention_dropout": 0.0}, **TRAINABLE}, {"tokenizer": None}),
    "from-scratch-trainable": (TRAINABLE, {}),
    "lora": ({**HUB, "peft": {"method": "lora"}}, {"tokenizer": None}),
    "lora-zero3": ({**HUB, **ZERO3, "peft": {"method": "lora"}}, {"tokenizer": None}),
    "trainable-zero3": ({**HUB, **ZERO3, **TRAINABLE}, {"tokenizer": None}),
    "fsdp": (FSDP, {}),
    "fsdp-trainable": ({**HUB, **FSDP, **TRAINABLE}, {"tokenizer": None}),
    "tensor-parallel": ({"launch.num_processes": 2, "launch.parallelism": {"tp_size": 2}, "launch.strategy": "fsdp"}, {}),
    "muon-groups": ({"optim": {"name": "muon", "groups": [{"params": ["embeddings"], "lr_scale": 0.1}]}}, {}),
    "sgd": ({"optim": {"name": "sgd", "momentum": 0.0}}, {}),
    "schedule-free": ({"optim": {"name": "schedule_free_adamw"}, "schedule.decay": "constant"}, {}),
    "chunked-loss": ({"loss": {"cross_entropy": "chunked"}}, {}),
    "averaging": ({"ema": {"decay": 0.99}, "merge": {"window": 10, "every": 2}}, {}),
    "sft": (SFT, {}),
    "sft-lora-trainable-groups": ({**HUB, **SFT, "peft": {"method": "lora"}, "optim.groups": [{"params": ["*.lora_B.*"], "lr_scale": 4.0}]}, {"tokenizer": None}),
    "dpo": ({**HUB, **PAIRS, "preference": {"objective": "dpo"}}, {"tokenizer": None}),
    "tr-dpo": ({**HUB, **PAIRS, "preference": {"objective": "dpo", "reference_sync_every": 2}}, {"tokenizer": None}),
    "dpo-fsdp": ({**HUB, **PAIRS, **FSDP, "preference": {"objective": "dpo"}}, {"tokenizer": None}),
    "simpo-trainable": ({**HUB, **PAIRS, **TRAINABLE, "preference": {"objective": "simpo"}}, {"tokenizer": None}),
    "reward": ({**HUB, **PAIRS, "preference": {"objective": "reward"}}, {"tokenizer": None}),
    "offloading-checkpointing": ({"model.activation_offloading": True, "model.gradient_checkpointing": True}, {}),
    "neftune-sft": ({**SFT, "train.neftune_noise_alpha": 5.0}, {}),
    "early-stopping": ({"train.early_stopping_patience": 3, "train.eval_at_start": False}, {}),
    "save-best-early-stopping-fsdp": ({**FSDP, "train.early_stopping_patience": 3, "output.save_best": True}, {}),
    "save-best-lora-zero3": ({**HUB, **ZERO3, "peft": {"method": "lora"}, "output.save_best": True}, {"tokenizer": None}),
    "early-stopping-schedule-free-dpo": ({**HUB, **PAIRS, "preference": {"objective": "dpo"}, "optim": {"name": "schedule_free_adamw"}, "schedule.decay": "constant", "train.early_stopping_patience": 2}, {"tokenizer": None}),
    "reward-lora-override": ({**HUB, **PAIRS, "model.config": {"attention_dropout": 0.0}, "peft": {"method": "lora"}, "preference": {"objective": "reward"}}, {"tokenizer": None}),
    "reward-trainable-zero3": ({**HUB, **PAIRS, **ZERO3, **TRAINABLE, "preference": {"objective": "reward", "center_rewards_coefficient": 0.01}}, {"tokenizer": None}),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_generated_script_defines_what_it_uses_and_uses_what_it_imports(name: str, plan_of) -> None:
    dotted, tables = VARIANTS[name]
    code = render(plan_of(dotted, **tables))["train.py"]
    found = [str(m) for m in pyflakes_checker.Checker(ast.parse(code), filename="train.py").messages]
    assert not found, "\n".join(found)
