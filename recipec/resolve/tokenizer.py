"""Resolve `[tokenizer]`: the tokenizer to load or train; a pretrained model brings its own."""

from __future__ import annotations

from ..chat_templates import probe, sha256
from ..schema.data import DOCUMENT_RECORDS
from .builder import PlanBuilder

NEEDS_TEMPLATE = ("messages", "sharegpt", "alpaca")
"""Record formats that are always conversations (prompt/completion ones may be plain strings)."""


def tokenizer_settings(b: PlanBuilder) -> None:
    """`tokenizer_path` (None when trained before the run) and `tokenizer_train`."""
    r = b.recipe
    model_path = b.get("model_path")
    b.section("tokenizer")
    if r.tokenizer.train is not None:
        b.add("tokenizer_path", None, "tokenizer.train: trained before the run", "derived")
        b.add("tokenizer_train", r.tokenizer.train.model_dump(), "tokenizer.train", b.origin(("tokenizer", "train")))
    elif r.tokenizer.path is not None:
        b.key("tokenizer_path", ("tokenizer", "path"))
        b.add("tokenizer_train", None, "tokenizer.train (unset)", "default")
    elif b.adapter is not None and b.adapter.tokenizer:  # peft.adapter: saved beside it, with any tokens its run added
        b.derived("tokenizer_path", b.adapter.path, "derived: the tokenizer saved with peft.adapter")
        b.add("tokenizer_train", None, "tokenizer.train (unset)", "default")
    elif b.get("parent_adapter") is not None:  # saved beside the adapter, with any tokens the parent added
        b.derived("tokenizer_path", b.get("parent_adapter"), "derived: the parent's tokenizer, saved with its adapter")
        b.add("tokenizer_train", None, "tokenizer.train (unset)", "default")
    elif model_path is not None:
        b.derived("tokenizer_path", model_path, "derived: the model's own tokenizer (model.path)")
        b.add("tokenizer_train", None, "tokenizer.train (unset)", "default")
    elif r.model.init is not None:
        b.error(
            ("model", "init"),
            "a from-scratch model (`model.init`) has no tokenizer of its own",
            'add [tokenizer] with train = {kind = "bpe", vocab_size = 8192}, or a tokenizer path',
        )


def chat_settings(b: PlanBuilder) -> None:
    """`chat_template` (its text, for the stage and the script) and `special_tokens`; the probe render.

    A source of conversations needs a template: the recipe's, or the local tokenizer's
    own; one that does not render or mask a probe conversation is an error here. A hub
    tokenizer's own template is checked by the data stage.
    """
    r, chat = b.recipe, b.chat
    if chat.recipe is None:
        b.add("chat_template", None, "tokenizer.chat_template (unset: the tokenizer's own)", "default")
    else:
        where = f"file {chat.file}" if chat.file else "inline"
        b.add(
            "chat_template",
            chat.recipe,
            f"tokenizer.chat_template ({where}, sha256 {sha256(chat.recipe)[:12]})",
            b.origin(("tokenizer", "chat_template")),
        )
    b.key("special_tokens", ("tokenizer", "special_tokens"))
    if r.peft is not None and r.tokenizer.special_tokens:
        if "modules_to_save" not in type(r.peft).model_fields:
            b.error(
                ("tokenizer", "special_tokens"),
                f"new tokens need the embedding and output layers to train, and peft method {r.peft.method!r} "
                "cannot train whole layers (it has no modules_to_save)",
                'use a method that has modules_to_save (e.g. method = "lora"), or a tokenizer that has the tokens',
            )
        b.derived(
            "peft_train_embeddings",
            True,
            "derived: [peft] with tokenizer.special_tokens: if the tokenizer lacks them, the embedding and "
            "output layers train in full beside the adapter",
        )
    # prompt_style "alpaca" renders alpaca records as prompt/completion text, with no template
    conversational = [
        (i, s) for i, s in enumerate(r.data.sources) if (s.records in NEEDS_TEMPLATE and s.prompt_style != "alpaca") or s.as_chat
    ]
    template = chat.effective
    if template is None:
        if conversational and chat.tokenizer_known:
            i, s = conversational[0]
            which = "the trained tokenizer" if r.tokenizer.train is not None else "the tokenizer"
            b.error(
                ("data", "sources", i, "records"),
                f"sources[{i}] holds {s.records} records, which are rendered with a chat template, and {which} has none",
                'set tokenizer.chat_template to a .jinja file or a template string (and tokenizer.special_tokens to its markers)',
            )
        return
    if not any(s.records not in DOCUMENT_RECORDS for s in r.data.sources):
        return
    problem = probe(template, {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
    if problem is not None:
        key = ("tokenizer", "chat_template") if chat.recipe is not None else ("data", "sources", conversational[0][0] if conversational else 0, "records")
        whose = "the chat template" if chat.recipe is not None else "the tokenizer's chat template"
        b.error(key, f"{whose} cannot be used: {problem}", "use a template with {% generation %} markers around assistant output")
