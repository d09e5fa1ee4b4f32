"""A tiny chat tokenizer for the tests: a BPE trained in a second, ChatML markers, two templates.

``CHATML`` has no ``{% generation %}`` markers (masks come from prefix rendering);
``CHATML_MARKED`` is the same template with them (masks from transformers'
``return_assistant_tokens_mask``). Both render identically.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

IM_START, IM_END = "<|im_start|>", "<|im_end|>"

CHATML = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CHATML_MARKED = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ m['content'] + '<|im_end|>\n' }}{% endgeneration %}"
    "{% else %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CONVERSATION = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "What colour is the sky?"},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "And grass?"},
    {"role": "assistant", "content": "Green, mostly."},
]


def chat_tokenizer(template: str = CHATML, *, bos: bool = False):
    """A BPE tokenizer with ChatML markers and ``template``; with ``bos``, a ``<s>`` it adds on encode."""
    from tokenizers import processors

    from recipec.runtime.data import builtin_texts
    from recipec.runtime.tokenizer import train_bpe

    tok = train_bpe(builtin_texts("python-docs", limit=20), 600)
    tok.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]})
    if bos:
        tok.add_special_tokens({"bos_token": "<s>"})
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.convert_tokens_to_ids("<s>"))]
        )
        tok.add_bos_token = True
    tok.chat_template = template
    return tok
