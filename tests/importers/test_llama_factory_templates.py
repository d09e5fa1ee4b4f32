"""LLaMA-Factory's named templates written out as jinja: each renders what LLaMA-Factory
formats, supervises what it supervises, and passes recipec's check of a chat template.

Two oracles. EXPECTED holds each template's text for one conversation, written by hand
from the `register_template(...)` calls of LLaMA-Factory 0.9.5
(src/llamafactory/data/template.py, commit 7af909522a951e3ad9f022ea6f88b6755257eaa5): it
checks that recipec copied the slots. `lf_format` re-implements how LLaMA-Factory joins the
slots (`Template._encode`, `Llama2Template._encode`, `ReasoningTemplate.encode_multiturn`),
as text, and is compared with the jinja on conversations with and without a system prompt,
an empty one, tool results and thoughts: it checks the jinja written from the slots.
"""

from __future__ import annotations

import re

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from recipec.chat_templates import probe
from recipec.importers import llama_factory_templates as lf
from recipec.runtime.chat import PROBE

BOS, EOS = "<s>", "</s>"

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
EXPECTED = {
    # CONVERSATION as LLaMA-Factory 0.9.5 formats it, with BOS "<s>" and EOS "</s>"
    "alpaca": "Be brief.### Instruction:\nHi\n\n### Response:\nHello.</s>\n\n### Instruction:\nBye\n\n### Response:\nBye!</s>\n\n",
    "chatml": CHATML,
    "chatml_de": CHATML,
    "cohere": "<s><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>Be brief.<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi"
    "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hello.</s><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Bye"
    "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Bye!</s>",
    "deepseek": "<s>Be brief.\n\nUser: Hi\n\nAssistant:Hello.</s>User: Bye\n\nAssistant:Bye!</s>",
    "deepseek3": "<s>Be brief.<｜User｜>Hi<｜Assistant｜>Hello.</s><｜User｜>Bye<｜Assistant｜>Bye!</s>",
    "deepseekr1": "<s>Be brief.<｜User｜>Hi<｜Assistant｜><think>\n\n</think>\n\nHello.</s><｜User｜>Bye<｜Assistant｜>"
    "<think>\n\n</think>\n\nBye!</s>",
    "gemma": "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
    "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\nBye!<end_of_turn>\n",
    "gemma3": "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
    "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\nBye!<end_of_turn>\n",
    "llama2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]Hello.</s><s>[INST] Bye [/INST]Bye!</s>",
    "llama3": "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi"
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
    "Bye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nBye!<|eot_id|>",
    "llama4": "<s><|header_start|>system<|header_end|>\n\nBe brief.<|eot|><|header_start|>user<|header_end|>\n\nHi<|eot|>"
    "<|header_start|>assistant<|header_end|>\n\nHello.<|eot|><|header_start|>user<|header_end|>\n\nBye<|eot|>"
    "<|header_start|>assistant<|header_end|>\n\nBye!<|eot|>",
    "ministral": "<s>[INST]Be brief.\n\nHi[/INST]Hello.</s>[INST]Bye[/INST]Bye!</s>",
    "mistral": "<s>[INST] Be brief.\n\nHi[/INST] Hello.</s>[INST] Bye[/INST] Bye!</s>",
    "mistral_small": "<s>[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][INST]Hi[/INST]Hello.</s>[INST]Bye[/INST]Bye!</s>",
    "phi": "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello.<|end|>\n<|user|>\nBye<|end|>\n"
    "<|assistant|>\nBye!<|end|>\n",
    "phi4": "<|im_start|>system<|im_sep|>Be brief.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|><|im_start|>assistant<|im_sep|>"
    "Hello.<|im_end|><|im_start|>user<|im_sep|>Bye<|im_end|><|im_start|>assistant<|im_sep|>Bye!<|im_end|>",
    "phi4_mini": "<|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>Hello.<|end|><|user|>Bye<|end|><|assistant|>Bye!<|end|>",
    "qwen": CHATML,
    "qwen3": CHATML.replace("assistant\n", "assistant\n<think>\n\n</think>\n\n"),
    "qwen3_nothink": CHATML,
    "vicuna": "Be brief.USER: Hi ASSISTANT:Hello.</s>USER: Bye ASSISTANT:Bye!</s>",
    "zephyr": "<|system|>\nBe brief.</s><|user|>\nHi</s><|assistant|>\nHello.</s><|user|>\nBye</s><|assistant|>\nBye!</s>",
}

CONVERSATIONS = [
    CONVERSATION,
    CONVERSATION[1:],  # no system prompt: the template's default, if any
    [{"role": "system", "content": ""}, *CONVERSATION[1:]],  # empty: LLaMA-Factory takes the default too
    [
        {"role": "user", "content": "What is 6 * 7?"},
        {"role": "assistant", "content": "Let me compute."},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": "It's 42."},
    ],
    [
        {"role": "user", "content": "Think first."},
        {"role": "assistant", "content": "<think>\nHmm.\n</think>\n\nDone."},
        {"role": "user", "content": "Again."},
        {"role": "assistant", "content": "Done again."},
    ],
]


def _env() -> ImmutableSandboxedEnvironment:
    """jinja as transformers renders chat templates."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message):
        raise ValueError(message)

    env.globals["raise_exception"] = raise_exception
    return env


def render(template: str, messages: list[dict[str, str]]) -> tuple[str, list[str]]:
    """The text, and the text of each `{% generation %}` block."""
    marked = re.sub(r"\{%-? *generation *-?%\}", lambda _: "{{- '\x02' -}}", template)
    marked = re.sub(r"\{%-? *endgeneration *-?%\}", lambda _: "{{- '\x03' -}}", marked)
    out = _env().from_string(marked).render(messages=messages, bos_token=BOS, eos_token=EOS)
    return out.replace("\x02", "").replace("\x03", ""), re.findall("\x02(.*?)\x03", out, re.DOTALL)


def lf_format(name: str, messages: list[dict[str, str]], default_system: str | None = None, thinking: bool = True) -> tuple[str, list[str]]:
    """The text LLaMA-Factory builds for a conversation, and the text of each answer (what its
    loss sees), from the template's register_template arguments."""
    t = lf.TEMPLATES[name]
    user = t.get("user", ["{{content}}"])  # register_template's defaults
    slots = {
        "user": user,
        "assistant": t.get("assistant", ["{{content}}", {"eos_token"}]),
        "system": t.get("system", ["{{content}}"]),
        "observation": t.get("observation", user),
        "prefix": t.get("prefix", []),
    }

    def apply(kind: str, content: str = "") -> list[str]:  # Formatter.apply, then each element as text
        out = []
        for slot in slots[kind]:
            if isinstance(slot, str):
                out.append(slot.replace("{{content}}", content, 1))
            elif slot == {"bos_token"}:
                out.append(BOS)
            elif slot == {"eos_token"}:  # fix_special_tokens: replace_eos makes the first stop word EOS
                out.append(t["stop_words"][0] if t.get("replace_eos") else EOS)
            else:
                out.append(slot["token"])
        return out

    system = None
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    default = t.get("default_system", "") if default_system is None else default_system
    system = system or default
    reasoning = t.get("template_class") == "ReasoningTemplate"
    text, answers = "", []
    for i, message in enumerate(messages):
        elements, system_text = [], ""
        if i == 0:
            elements += apply("prefix")
            if system and t.get("template_class") == "Llama2Template":
                system_text = apply("system", system)[0]
            elif system:
                elements += apply("system", system)
        if message["role"] == "user":
            elements += apply("user", system_text + message["content"])
        elif message["role"] == "assistant":
            answer = "".join(apply("assistant", message["content"]))
            if reasoning and "<think>" not in message["content"] and "</think>" not in message["content"]:
                if thinking:
                    answer = "<think>\n\n</think>\n\n" + answer
                else:
                    elements.append("<think>\n\n</think>\n\n")  # on the prompt's side
            answers.append(answer)
            elements.append(answer)
        elif message["role"] == "tool":
            elements += apply("observation", message["content"])
        text += "".join(elements)
    return text, answers


def test_every_template_is_expected():
    assert sorted(EXPECTED) == sorted(lf.TEMPLATES)
    assert not set(lf.TEMPLATES) & set(lf.NOT_WRITTEN)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_renders_llama_factory_text(name):
    assert render(lf.chat_template(name), CONVERSATION)[0] == EXPECTED[name]
    assert lf_format(name, CONVERSATION)[0] == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(lf.TEMPLATES))
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
def test_renders_and_supervises_as_llama_factory(name, conversation):
    messages = CONVERSATIONS[conversation]
    assert render(lf.chat_template(name), messages) == lf_format(name, messages)
    assert render(lf.chat_template(name, "Answer in French."), messages) == lf_format(name, messages, "Answer in French.")
    assert render(lf.chat_template(name, ""), messages) == lf_format(name, messages, "")
    if lf.TEMPLATES[name].get("template_class") == "ReasoningTemplate":
        assert render(lf.chat_template(name, thinking=False), messages) == lf_format(name, messages, thinking=False)


@pytest.mark.parametrize("name", sorted(lf.TEMPLATES))
@pytest.mark.parametrize("thinking", [True, False])
def test_passes_recipec_check(name, thinking):
    assert probe(lf.chat_template(name, thinking=thinking), {"bos_token": BOS, "eos_token": EOS}) is None
    assert len(render(lf.chat_template(name, thinking=thinking), PROBE)[1]) == 2  # one supervised span per answer


def test_a_turn_of_another_role_is_refused():
    with pytest.raises(ValueError, match="no turn of role function"):
        render(lf.chat_template("qwen"), [{"role": "user", "content": "x"}, {"role": "function", "content": "{}"}])


def test_default_system_replaces_the_templates():
    text = render(lf.chat_template("qwen", "Answer in French."), CONVERSATION[1:])[0]
    assert text.startswith("<|im_start|>system\nAnswer in French.<|im_end|>\n") and "You are Qwen" not in text
    assert "You are Qwen" in render(lf.chat_template("qwen"), CONVERSATION[1:])[0]
    assert render(lf.chat_template("qwen", ""), CONVERSATION[1:])[0].startswith("<|im_start|>user\n")
