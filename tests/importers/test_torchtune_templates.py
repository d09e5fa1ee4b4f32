"""torchtune's model tokenizers format the turns themselves (`tokenize_messages`); recipec
writes that formatting out as a chat template. `tt_format` re-implements it, as text, from
torchtune 0.6.1 (torchtune/models/llama3/_tokenizer.py, qwen2/_tokenizer.py,
qwen2_5/_tokenizer.py; the tags of torchtune/data/_prompt_templates.py's PromptTemplate),
and is compared with the template: the same text, and what the loss sees (the unmasked
messages) inside the `{% generation %}` markers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from recipec.chat_templates import probe
from recipec.importers import import_config
from recipec.importers.torchtune import CHAT_FORMATS, PROMPT_TEMPLATES, chat_format
from recipec.runtime.chat import PROBE

CONFIGS = Path(__file__).resolve().parent / "configs" / "torchtune"

CONVERSATIONS = [
    PROBE,
    PROBE[1:],
    [
        {"role": "user", "content": "  What is 6 * 7?\n"},
        {"role": "assistant", "content": "Let me compute."},
        {"role": "tool", "content": "42"},
        {"role": "tool", "content": "43"},
        {"role": "assistant", "content": " It's 42. "},
    ],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "Only a question."}],
]
CUSTOM = {"system": ("System: ", "\n"), "user": ("User: ", "\n"), "assistant": ("Assistant: ", "\n")}


def tt_format(tokenizer: str, messages: list[dict[str, str]], tags: dict | None = None) -> tuple[str, list[str]]:
    """The text torchtune's tokenizer builds, and the text of each unmasked (assistant) message."""
    tags = {("ipython" if r == "tool" else r): t for r, t in (tags or {}).items()}
    msgs = [{"role": "ipython" if m["role"] == "tool" else m["role"], "content": m["content"]} for m in messages]

    def items(m):  # PromptTemplate.__call__: the tags as text items around the content
        before, after = tags.get(m["role"], ("", ""))
        return [x for x in (before,) if x] + [m["content"]] + [x for x in (after,) if x]

    out, answers = "", []
    if tokenizer == "llama3_tokenizer":
        out = "<|begin_of_text|>"
        for m in msgs:
            text = f"<|start_header_id|>{m['role'].strip()}<|end_header_id|>\n\n" + "".join(x.strip() for x in items(m)) + "<|eot_id|>"
            out += text
            if m["role"] == "assistant":
                answers.append(text)
        return out + "<|end_of_text|>", answers
    for i, m in enumerate(msgs):
        text = ""
        if tokenizer == "qwen2_5_tokenizer" and m["role"] == "ipython":
            first = i == 0 or msgs[i - 1]["role"] != "ipython"
            text += "<|im_start|>user\n<tool_response>\n" if first else "\n<tool_response>\n"
        elif m["role"] != "ipython":
            text += f"<|im_start|>{m['role']}\n"
        text += "".join(items(m))
        if tokenizer == "qwen2_5_tokenizer" and m["role"] == "ipython":
            text += "\n</tool_response>"
            if i == len(msgs) - 1 or msgs[i + 1]["role"] != "ipython":
                text += "<|im_end|>\n"
        elif m["role"] != "ipython" and (m["role"] != "assistant" or i != len(msgs) - 1):
            text += "<|im_end|>\n"
        if i == len(msgs) - 1:
            text += "<|im_end|>"  # eos_id, with the last message's mask
        out += text
        if m["role"] == "assistant":
            answers.append(text)
    return out, answers


def render(template: str, messages: list[dict[str, str]]) -> tuple[str, list[str]]:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    marked = re.sub(r"\{%-? *generation *-?%\}", lambda _: "{{- '\x02' -}}", template)
    marked = re.sub(r"\{%-? *endgeneration *-?%\}", lambda _: "{{- '\x03' -}}", marked)
    out = env.from_string(marked).render(messages=messages)
    return out.replace("\x02", "").replace("\x03", ""), re.findall("\x02(.*?)\x03", out, re.DOTALL)


@pytest.mark.parametrize("tokenizer", CHAT_FORMATS)
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("tags", [None, "torchtune.data.QuestionAnswerTemplate", "custom"])
def test_renders_and_supervises_as_torchtune(tokenizer, conversation, tags):
    tags = CUSTOM if tags == "custom" else PROMPT_TEMPLATES.get(tags)
    messages = CONVERSATIONS[conversation]
    assert render(chat_format(tokenizer, tags), messages) == tt_format(tokenizer, messages, tags)


def test_llama3_text():
    assert render(chat_format("llama3_tokenizer"), PROBE[1:3])[0] == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nSay yes.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nYes.<|eot_id|><|end_of_text|>"
    )
    assert render(chat_format("qwen2_5_tokenizer"), PROBE[1:3])[0] == (
        "<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>assistant\nYes.<|im_end|>"
    )


@pytest.mark.parametrize("tokenizer", CHAT_FORMATS)
@pytest.mark.parametrize("tags", [None, "torchtune.data.ChatMLTemplate"])
def test_passes_recipec_check(tokenizer, tags):
    assert probe(chat_format(tokenizer, PROMPT_TEMPLATES.get(tags)), {"bos_token": "<s>", "eos_token": "</s>"}) is None


def _config(tmp_path: Path, name: str, tokenizer: dict) -> Path:
    data = yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))
    data["tokenizer"].update(tokenizer)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_chat_fixture_writes_the_tokenizers_format():
    result = import_config(CONFIGS / "llama3_2-1B-chat-sft.yaml", "torchtune")
    assert result.draft.ledger["tokenizer.path"].how == "exact"
    assert tomllib.loads(result.text)["tokenizer"]["chat_template"] == chat_format("llama3_tokenizer")


def test_prompt_template_is_written_approximately(tmp_path):
    path = _config(tmp_path, "llama3_2-1B-chat-sft.yaml", {"prompt_template": "torchtune.data.QuestionAnswerTemplate"})
    draft = import_config(path, "torchtune").draft
    assert draft.ledger["tokenizer.prompt_template"].how == "approx"
    assert "stripped" in draft.ledger["tokenizer.prompt_template"].why
    assert draft.value("tokenizer.chat_template") == chat_format("llama3_tokenizer", PROMPT_TEMPLATES["torchtune.data.QuestionAnswerTemplate"])


def test_unknown_prompt_template_is_not_imported(tmp_path):
    path = _config(tmp_path, "llama3_2-1B-chat-sft.yaml", {"prompt_template": "torchtune.models.llama2.Llama2ChatTemplate"})
    draft = import_config(path, "torchtune").draft
    assert draft.ledger["tokenizer.prompt_template"].how == "dropped"
    assert draft.value("tokenizer.chat_template") == chat_format("llama3_tokenizer")
