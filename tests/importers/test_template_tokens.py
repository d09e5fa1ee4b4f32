"""Every chat template the importers write out masks a conversation at the data stage: with
a small BPE tokenizer that has the template's markers as special tokens, recipec's runtime
finds one supervised span per answer, each closed by an end-of-turn or EOS token, and no
prompt text in it."""

from __future__ import annotations

import re

import pytest

from recipec.importers import axolotl, llama_factory_templates as lf
from recipec.importers.torchtune import CHAT_FORMATS, chat_format
from recipec.runtime.chat import PROBE, tokenize_example

MARKER = re.compile(r"<\|[^<>\s]*?\|>|<｜[^<>\s]*?｜>|\[/?[A-Z_]+\]|\[\|[a-z]+\|\]|<(?:start|end)_of_turn>|<think>|</think>")

TEMPLATES = {
    **{f"axolotl {name}": axolotl.TEMPLATES[name] for name in axolotl.WRITTEN},
    **{f"llama-factory {name}": lf.chat_template(name) for name in lf.TEMPLATES},
    **{f"torchtune {name}": chat_format(name) for name in CHAT_FORMATS},
}


@pytest.fixture(scope="module")
def tokenizer():
    from recipec.runtime.data import builtin_texts
    from recipec.runtime.tokenizer import train_bpe

    tok = train_bpe(builtin_texts("python-docs", limit=20), 600)
    tok.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>"})
    return tok


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_data_stage_masks_each_answer(tokenizer, name):
    template = TEMPLATES[name]
    rendered = tokenizer.apply_chat_template(PROBE, chat_template=template, tokenize=False)
    tokenizer.add_tokens(sorted(set(MARKER.findall(rendered))), special_tokens=True)  # as recipec adds tokenizer.special_tokens
    ids, mask = tokenize_example(tokenizer, {"messages": PROBE, "completion_from": None}, train_on="assistant", chat_template=template)
    spans, cur = [], []
    for t, m in zip([*ids, None], [*mask, 0]):
        if m:
            cur.append(t)
        elif cur:
            spans.append(tokenizer.decode(cur))
            cur = []
    assert len(spans) == 2, spans
    assert "Yes." in spans[0] and "No." in spans[1]
    assert not any("Say" in s or "terse" in s for s in spans), spans
