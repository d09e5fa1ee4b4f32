"""axolotl's named chat templates that recipec writes out: byte for byte axolotl's files, each
renders a conversation as the model family formats it, and each passes recipec's check of a
chat template (test_template_tokens.py checks them at the data stage too)."""

from __future__ import annotations

import hashlib
import re
import tomllib

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from recipec.chat_templates import probe
from recipec.importers import Options, axolotl, import_config

BLOBS = {
    # `git ls-tree 2f5cb9da62a0fe763a1ddeb7798fc9acb2f4a417 src/axolotl/utils/chat_templates/templates/`
    # in github.com/axolotl-ai-cloud/axolotl (v0.18.0): the git blob id of each <name>.jinja
    "alpaca": "5e9d63c424813ac79c5a895b10299d11f4d7a01f",
    "aya": "97e54d4b1022ced400319319c00b0908f52e8349",
    "chatml": "2116e45cab9677e7728043a6713c8e7edeb95e51",
    "cohere": "638ce5ef2fb9fa321c356d2aea5d9c44408f83c5",
    "deepseek_v2": "59fde8f2cb85c84779eaf3b8aa6197199384c9ae",
    "deepseek_v3": "748d8d3b87bdbefd272c78db19c606cd83d3461c",
    "exaone": "8783ad2ec2b97e5be264fa015046f192de760d99",
    "exaone4": "1eabe2f2d94465ad446a5cd95cec5ae0cb57f150",
    "falcon_h1": "2bc3204b860487b905c21add4e33c8b1dca692bf",
    "gemma3": "52e86c7d2c324f89a47845e10d76bc1032fb0d6b",
    "gemma3n": "f1d176a692e41744097637c0a36efab40baf0444",
    "jamba": "9759382854069c45b8201ee7aad3e36e7bba4748",
    "llama3": "2846bbd8f88157e5b46dd030aab3ec132b703bbc",
    "llama3_2_vision": "46d69ebc48f9824d6d4b6d9477655a4d606c6c08",
    "llama4": "e41e2348ec3d0a2a0dffbb6beaf77c5deceb79c4",
    "mistral_v1": "919dd6cf80c50f843b14efcbb3087e5663b4a623",
    "mistral_v7_tekken": "3f268cdf090cbf523d7a77d8bd6653301d2670ba",
    "nemotron_h": "75dcd9d9f3127894eaa432a30471383911e4181c",
    "phi_3": "853942eba5b26e29d5a17e980c0368c9b44f83cf",
    "phi_35": "aae8a8f51c158de92ca6e1de8455db7db7ab5694",
    "phi_4": "ed1861f6c3d290fb63652d1a52a2bac98bb91ea6",
    "qwen2_vl": "426b7642d7306e7e1ebee6344d9749c05a5f1df3",
    "qwen_25": "bdf7919a96cfe43d50914a007b9c0877bd0ec27e",
}

ALL = (
    # every template file of axolotl v0.18.0
    "alpaca aya chatml cohere command_a command_a_rag command_a_tool_use deepseek_v2 deepseek_v3 exaone exaone4 "
    "falcon_h1 gemma gemma3 gemma3n gemma4 gemma4_unified jamba llama3 llama3_2_vision llama4 llava metharme "
    "mistral_v1 mistral_v2v3 mistral_v3_tekken mistral_v7_tekken nemotron_h phi_3 phi_35 phi_4 pixtral qwen2_vl "
    "qwen3 qwen3_5 qwen_25"
).split()

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Bye!"},
]
CHATML = (
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
    "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nBye!<|im_end|>\n"
)
RENDERED = {
    # CONVERSATION in each family's format, with BOS "<s>" and EOS "</s>"
    "alpaca": "<s>Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello.</s>\n\n### Instruction:\nBye\n\n### Response:\nBye!</s>",
    "chatml": CHATML,
    "qwen_25": CHATML,
    "falcon_h1": "<s>" + CHATML,
    "llama3": "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
    "Hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
    "Bye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nBye!<|eot_id|>",
    "mistral_v1": "<s> [INST] Be brief.\n\nHi [/INST] Hello.</s> [INST] Bye [/INST] Bye!</s>",
    "mistral_v7_tekken": "<s>[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][INST]Hi[/INST]Hello.</s>[INST]Bye[/INST]Bye!</s>",
    "gemma3": "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
    "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\nBye!<end_of_turn>\n",
    "phi_3": "<s><|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello.<|end|>\n<|user|>\nBye<|end|>\n"
    "<|assistant|>\nBye!<|end|>\n",
    "phi_4": "<|im_start|>system<|im_sep|>Be brief.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|><|im_start|>assistant<|im_sep|>"
    "Hello.<|im_end|><|im_start|>user<|im_sep|>Bye<|im_end|><|im_start|>assistant<|im_sep|>Bye!<|im_end|>",
    "deepseek_v2": "<s>Be brief.\n\n<｜User｜>Hi<｜Assistant｜>Hello.</s><｜User｜>Bye<｜Assistant｜>Bye!</s>",
    "deepseek_v3": "<s>Be brief.<｜User｜>Hi<｜Assistant｜>Hello.<｜end▁of▁sentence｜><｜User｜>Bye<｜Assistant｜>Bye!<｜end▁of▁sentence｜>",
    "cohere": "<s><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>Be brief.<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi"
    "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hello.<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|>"
    "<|USER_TOKEN|>Bye<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Bye!<|END_OF_TURN_TOKEN|>",
}


def _render(template: str, messages: list[dict[str, str]]) -> str:
    """jinja as transformers renders chat templates, the generation markers left out."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["strftime_now"] = lambda fmt: "2024-07-26"
    plain = re.sub(r"\{%-? *(end)?generation *-?%\}", "", template)
    return env.from_string(plain).render(messages=messages, bos_token="<s>", eos_token="</s>", add_generation_prompt=False)


def test_every_template_is_written_or_says_why_not():
    assert sorted(axolotl.WRITTEN) == sorted(BLOBS)
    assert sorted([*axolotl.WRITTEN, *axolotl.NOT_WRITTEN]) == sorted(ALL)


@pytest.mark.parametrize("name", sorted(BLOBS))
def test_text_is_axolotls_file(name):
    data = axolotl.TEMPLATES[name].encode("utf-8")
    assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == BLOBS[name]


@pytest.mark.parametrize("name", sorted(BLOBS))
def test_passes_recipec_check(name):
    assert probe(axolotl.TEMPLATES[name], {"bos_token": "<s>", "eos_token": "</s>"}) is None


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_renders_the_familys_format(name):
    assert _render(axolotl.TEMPLATES[name], CONVERSATION) == RENDERED[name]


@pytest.mark.parametrize("name", ["gemma3", "mistral_v7_tekken", "phi_4", "qwen_25", "gemma"])
def test_named_template_is_written_or_approximate(tmp_path, name):
    path = tmp_path / "c.yaml"
    path.write_text(
        f"base_model: org/model\nchat_template: {name}\ndatasets:\n  - path: org/data\n    type: chat_template\n",
        encoding="utf-8",
    )
    result = import_config(path, "axolotl", Options(name="c"))
    recipe = tomllib.loads(result.text)
    if name in axolotl.WRITTEN:
        assert result.draft.ledger["chat_template"].how == "exact"
        assert recipe["tokenizer"]["chat_template"] == axolotl.TEMPLATES[name]
        assert "special_tokens" not in recipe["tokenizer"]  # axolotl adds only the tokens the config lists
    else:
        assert result.draft.ledger["chat_template"].how == "approx"
        assert "refuses a system message" in result.draft.ledger["chat_template"].why
        assert "chat_template" not in recipe.get("tokenizer", {})
