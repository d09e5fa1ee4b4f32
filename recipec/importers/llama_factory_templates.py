"""LLaMA-Factory's named chat templates (`template:`), written out as jinja.

LLaMA-Factory formats a conversation from the slots of a template registered in
src/llamafactory/data/template.py (`register_template(...)`): BOS or other prefix, then the
system prompt (the conversation's, else the template's default), then per turn the user
slot (which ends with the assistant's header), the assistant slot (the answer and its end,
which is what the loss sees) and the observation slot (a tool result). `Llama2Template`
puts the formatted system prompt in front of the first user message instead; a
`ReasoningTemplate` puts an empty thought in front of each answer that has none.

:data:`TEMPLATES` holds those `register_template` arguments for the templates recipec writes
out, as LLaMA-Factory 0.9.5 registers them, and :func:`chat_template` turns them into one
jinja template: the same text, with the assistant slot inside `{% generation %}` markers so
that recipec supervises what LLaMA-Factory does. Templates that LLaMA-Factory encodes in a
way a template cannot say (`efficient_eos`: one EOS at the end of the conversation and the
first token of each later prompt trained as EOS; tool calls; images) are not here.

LLaMA-Factory tokenizes each slot on its own and concatenates the ids; recipec tokenizes the
rendered text. The ids are the same where each slot begins or ends at a special token or a
line break under a byte-level BPE tokenizer (Llama 3, Qwen, DeepSeek V3, Phi-4, Command R,
Mistral's tekken); a SentencePiece tokenizer that marks the start of each piece it encodes
(Llama 2, Mistral 7B, Phi-3) starts each answer with a word-start token in LLaMA-Factory and
not in recipec, so the templates made for those families say so in :data:`TEMPLATES`
(`tokens`), and :data:`SENTENCEPIECE` names the model families for which any template does.
"""

from __future__ import annotations

import re
from typing import Any

SOURCE = "LLaMA-Factory v0.9.5 (commit 7af909522a951e3ad9f022ea6f88b6755257eaa5), src/llamafactory/data/template.py"

_SP = (
    "LLaMA-Factory tokenizes each turn's slots on their own, and this family's SentencePiece tokenizer then starts "
    "each answer with a word-start token; recipec tokenizes the rendered text, the same text"
)

TEMPLATES: dict[str, dict[str, Any]] = {
    # register_template(...) of LLaMA-Factory 0.9.5, keys without "format_"; slots as it writes
    # them ({"bos_token"}, {"eos_token"}, {"token": ...}); arguments left at their default are
    # left out. Beside them, recipec's own: "special_tokens" (what tokenizer.special_tokens gets:
    # LLaMA-Factory adds its stop words to a tokenizer that lacks them, which matters for the
    # templates used with any model; a family's template gets none, its tokenizer has them) and
    # "tokens" (why the token ids can differ, where they can).
    "alpaca": {
        "user": ["### Instruction:\n{{content}}\n\n### Response:\n"],
        "assistant": ["{{content}}", {"eos_token"}, "\n\n"],
        "default_system": (
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        ),
    },
    "chatml": {
        "user": ["<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"],
        "assistant": ["{{content}}<|im_end|>\n"],
        "system": ["<|im_start|>system\n{{content}}<|im_end|>\n"],
        "observation": ["<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n"],
        "stop_words": ["<|im_end|>", "<|im_start|>"],
        "replace_eos": True,
        "special_tokens": ["<|im_start|>", "<|im_end|>"],
    },
    "chatml_de": {
        "user": ["<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"],
        "assistant": ["{{content}}<|im_end|>\n"],
        "system": ["<|im_start|>system\n{{content}}<|im_end|>\n"],
        "observation": ["<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n"],
        "default_system": "Du bist ein freundlicher und hilfsbereiter KI-Assistent.",
        "stop_words": ["<|im_end|>", "<|im_start|>"],
        "replace_eos": True,
        "special_tokens": ["<|im_start|>", "<|im_end|>"],
    },
    "cohere": {
        "user": [
            "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{{content}}<|END_OF_TURN_TOKEN|>"
            "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
        ],
        "system": ["<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{{content}}<|END_OF_TURN_TOKEN|>"],
        "prefix": [{"bos_token"}],
    },
    "deepseek": {
        "user": ["User: {{content}}\n\nAssistant:"],
        "system": ["{{content}}\n\n"],
        "prefix": [{"bos_token"}],
        "tokens": (
            "LLaMA-Factory tokenizes the answer apart from the 'Assistant:' before it, and a BPE tokenizer can join "
            "the colon to the answer's first word when the text is tokenized whole, as recipec does"
        ),
    },
    "deepseek3": {
        "user": ["<｜User｜>{{content}}<｜Assistant｜>"],
        "prefix": [{"bos_token"}],
    },
    "deepseekr1": {
        "user": ["<｜User｜>{{content}}<｜Assistant｜>"],
        "prefix": [{"bos_token"}],
        "template_class": "ReasoningTemplate",
    },
    "gemma": {
        "user": ["<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n"],
        "assistant": ["{{content}}<end_of_turn>\n"],
        "system": ["{{content}}\n\n"],
        "observation": ["<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n"],
        "prefix": [{"bos_token"}],
        "stop_words": ["<end_of_turn>"],
        "replace_eos": True,
        "template_class": "Llama2Template",
    },
    "gemma3": {
        "user": ["<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n"],
        "assistant": ["{{content}}<end_of_turn>\n"],
        "system": ["{{content}}\n\n"],
        "observation": ["<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n"],
        "prefix": [{"bos_token"}],
        "stop_words": ["<end_of_turn>"],
        "replace_eos": True,
        "template_class": "Llama2Template",
    },
    "llama2": {
        "user": [{"bos_token"}, "[INST] {{content}} [/INST]"],
        "system": ["<<SYS>>\n{{content}}\n<</SYS>>\n\n"],
        "template_class": "Llama2Template",
        "tokens": _SP,
    },
    "llama3": {
        "user": [
            "<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        ],
        "assistant": ["{{content}}<|eot_id|>"],
        "system": ["<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>"],
        "observation": [
            "<|start_header_id|>ipython<|end_header_id|>\n\n{{content}}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        ],
        "prefix": [{"bos_token"}],
        "stop_words": ["<|eot_id|>", "<|eom_id|>"],
        "replace_eos": True,
    },
    "llama4": {
        "user": ["<|header_start|>user<|header_end|>\n\n{{content}}<|eot|><|header_start|>assistant<|header_end|>\n\n"],
        "assistant": ["{{content}}<|eot|>"],
        "system": ["<|header_start|>system<|header_end|>\n\n{{content}}<|eot|>"],
        "observation": [
            "<|header_start|>ipython<|header_end|>\n\n{{content}}<|eot|><|header_start|>assistant<|header_end|>\n\n"
        ],
        "prefix": [{"bos_token"}],
        "stop_words": ["<|eot|>", "<|eom|>"],
        "replace_eos": True,
    },
    "ministral": {
        "user": ["[INST]{{content}}[/INST]"],
        "system": ["{{content}}\n\n"],
        "observation": ["""[TOOL_RESULTS]{"content": {{content}}}[/TOOL_RESULTS]"""],
        "prefix": [{"bos_token"}],
        "template_class": "Llama2Template",
    },
    "mistral": {
        "user": ["[INST] {{content}}[/INST]"],
        "assistant": [" {{content}}", {"eos_token"}],
        "system": ["{{content}}\n\n"],
        "observation": ["""[TOOL_RESULTS] {"content": {{content}}}[/TOOL_RESULTS]"""],
        "prefix": [{"bos_token"}],
        "template_class": "Llama2Template",
        "tokens": _SP,
    },
    "mistral_small": {
        "user": ["[INST]{{content}}[/INST]"],
        "system": ["[SYSTEM_PROMPT]{{content}}[/SYSTEM_PROMPT]"],
        "observation": ["""[TOOL_RESULTS]{"content": {{content}}}[/TOOL_RESULTS]"""],
        "prefix": [{"bos_token"}],
    },
    "phi": {
        "user": ["<|user|>\n{{content}}<|end|>\n<|assistant|>\n"],
        "assistant": ["{{content}}<|end|>\n"],
        "system": ["<|system|>\n{{content}}<|end|>\n"],
        "stop_words": ["<|end|>"],
        "replace_eos": True,
        "tokens": _SP,
    },
    "phi4": {
        "user": ["<|im_start|>user<|im_sep|>{{content}}<|im_end|><|im_start|>assistant<|im_sep|>"],
        "assistant": ["{{content}}<|im_end|>"],
        "system": ["<|im_start|>system<|im_sep|>{{content}}<|im_end|>"],
        "stop_words": ["<|im_end|>"],
        "replace_eos": True,
    },
    "phi4_mini": {
        "user": ["<|user|>{{content}}<|end|><|assistant|>"],
        "assistant": ["{{content}}<|end|>"],
        "system": ["<|system|>{{content}}<|end|>"],
        "stop_words": ["<|end|>"],
        "replace_eos": True,
    },
    "qwen": {
        "user": ["<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"],
        "assistant": ["{{content}}<|im_end|>\n"],
        "system": ["<|im_start|>system\n{{content}}<|im_end|>\n"],
        "observation": ["<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"],
        "default_system": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        "stop_words": ["<|im_end|>"],
        "replace_eos": True,
    },
    "qwen3": {
        "user": ["<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"],
        "assistant": ["{{content}}<|im_end|>\n"],
        "system": ["<|im_start|>system\n{{content}}<|im_end|>\n"],
        "observation": ["<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"],
        "stop_words": ["<|im_end|>"],
        "replace_eos": True,
        "template_class": "ReasoningTemplate",
    },
    "qwen3_nothink": {
        "user": ["<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"],
        "assistant": ["{{content}}<|im_end|>\n"],
        "system": ["<|im_start|>system\n{{content}}<|im_end|>\n"],
        "observation": ["<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"],
        "stop_words": ["<|im_end|>"],
        "replace_eos": True,
    },
    "vicuna": {
        "user": ["USER: {{content}} ASSISTANT:"],
        "default_system": (
            "A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions."
        ),
        "tokens": _SP,
    },
    "zephyr": {
        "user": ["<|user|>\n{{content}}", {"eos_token"}, "<|assistant|>\n"],
        "system": ["<|system|>\n{{content}}", {"eos_token"}],
        "default_system": "You are Zephyr, a helpful assistant.",
        "tokens": _SP,
    },
}
"""The templates recipec writes out, as LLaMA-Factory registers them (:data:`SOURCE`)."""

NOT_WRITTEN: dict[str, str] = {
    # LLaMA-Factory's templates that recipec cannot write out, with the reason
    **dict.fromkeys(
        ("bailing", "bailing_v2", "breeze", "chatglm3", "dots_ocr", "falcon", "fewshot", "gemma2", "glm4", "glm4_moe",
         "glm4v", "glm4_5v", "glm_ocr", "glm4_7", "glmz1", "gpt_oss", "index", "solar", "aeva"),
        "it ends a conversation with one EOS and trains the first token of each later prompt as EOS (efficient_eos), "
        "which a chat template cannot say",
    ),
    "empty": "it ends an answer with nothing, and recipec needs an end-of-turn or EOS token to supervise",
}
"""LLaMA-Factory's templates that are not written out for a reason of their own (others: it
was not taken over)."""

THOUGHT = "<think>\n\n</think>\n\n"
"""The empty thought a ReasoningTemplate puts in front of an answer without one (its default
thought words, "<think>\\n" and "\\n</think>\\n\\n")."""

SENTENCEPIECE = re.compile(r"llama-?2|mistral-7b|mixtral|phi-?3|zephyr|vicuna|tinyllama", re.IGNORECASE)
"""Model names of families whose SentencePiece tokenizer marks the start of each piece it
encodes: under any template, LLaMA-Factory's ids then differ from those of the rendered text
at each turn's start."""


def _slots(t: dict[str, Any], kind: str) -> list[Any]:
    """A format's slots, with register_template's defaults."""
    user = t.get("user", ["{{content}}"])
    defaults = {
        "user": user,
        "assistant": ["{{content}}", {"eos_token"}],
        "system": ["{{content}}"],
        "observation": user,
        "prefix": [],
    }
    return t.get(kind, defaults[kind])


def _literal(text: str) -> str:
    """A jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _outputs(t: dict[str, Any], slots: list[Any], var: str = "content") -> list[str]:
    """One `{{ }}` per slot: a special token that the tokenizer may not have renders as
    nothing on its own, as LLaMA-Factory leaves it out."""
    out = []
    for slot in slots:
        if isinstance(slot, str):
            before, placeholder, after = slot.partition("{{content}}")
            parts = ([_literal(before)] if before else []) + ([var] if placeholder else []) + ([_literal(after)] if after else [])
            out.append("{{- " + " + ".join(parts) + " -}}")
        elif slot == {"bos_token"}:
            out.append("{{- bos_token -}}")
        elif slot == {"eos_token"}:  # replace_eos: the first stop word is the tokenizer's EOS in LLaMA-Factory
            out.append("{{- " + (_literal(t["stop_words"][0]) if t.get("replace_eos") else "eos_token") + " -}}")
        else:
            out.append("{{- " + _literal(slot["token"]) + " -}}")
    return out


def chat_template(name: str, default_system: str | None = None, thinking: bool = True) -> str:
    """LLaMA-Factory's template `name` as a jinja chat template.

    Args:
        name: a key of :data:`TEMPLATES`.
        default_system: `default_system` of the config (replaces the template's).
        thinking: for a ReasoningTemplate, whether the empty thought in front of each answer
            that has none is supervised (LLaMA-Factory's `enable_thinking`, on by default) or
            part of the prompt.
    """
    t = TEMPLATES[name]
    system = t.get("default_system", "") if default_system is None else default_system
    fused = t.get("template_class") == "Llama2Template"
    lines = [
        "{%- set system = " + _literal(system) + " -%}",
        "{%- set loop_messages = messages -%}",
        "{%- if messages and messages[0]['role'] == 'system' -%}",
        "{%- if messages[0]['content'] -%}{%- set system = messages[0]['content'] -%}{%- endif -%}",
        "{%- set loop_messages = messages[1:] -%}",
        "{%- endif -%}",
        "{%- for message in loop_messages -%}",
        "{%- set content = message['content'] -%}",
        "{%- if loop.first -%}",
        *_outputs(t, _slots(t, "prefix")),
    ]
    if fused:  # Llama2Template: the system prompt's first slot goes in front of the first user message
        first = _slots(t, "system")[0]
        before, _, after = first.partition("{{content}}")
        lines.append(
            "{%- if system and message['role'] == 'user' -%}{%- set content = "
            + " + ".join([*([_literal(before)] if before else []), "system", *([_literal(after)] if after else []), "content"])
            + " -%}{%- endif -%}"
        )
    else:
        lines += ["{%- if system -%}", *_outputs(t, _slots(t, "system"), "system"), "{%- endif -%}"]
    thought = []
    if t.get("template_class") == "ReasoningTemplate":
        thought = ["{%- if '<think>' not in content and '</think>' not in content -%}{{- " + _literal(THOUGHT) + " -}}{%- endif -%}"]
    lines += [
        "{%- endif -%}",
        "{%- if message['role'] == 'user' -%}",
        *_outputs(t, _slots(t, "user")),
        "{%- elif message['role'] == 'assistant' -%}",
        *([] if thinking else thought),  # enable_thinking off: the empty thought is prompt, not answer
        "{%- generation -%}",
        *(thought if thinking else []),
        *_outputs(t, _slots(t, "assistant")),
        "{%- endgeneration -%}",
        "{%- elif message['role'] == 'tool' -%}",
        *_outputs(t, _slots(t, "observation")),
        "{%- else -%}",
        "{{- raise_exception(" + _literal(f"LLaMA-Factory's {name} template has no turn of role ") + " + message['role']) -}}",
        "{%- endif -%}",
        "{%- endfor -%}",
    ]
    return "\n".join(lines)
