"""Resolve `[tokenizer]`: the tokenizer to load or train; a pretrained model brings its own."""

from __future__ import annotations

from .builder import PlanBuilder


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
    elif model_path is not None:
        b.derived("tokenizer_path", model_path, "derived: the model's own tokenizer (model.path)")
        b.add("tokenizer_train", None, "tokenizer.train (unset)", "default")
    elif r.model.init is not None:
        b.error(
            ("model", "init"),
            "a from-scratch model (`model.init`) has no tokenizer of its own",
            'add [tokenizer] with train = {kind = "bpe", vocab_size = 8192}, or a tokenizer path',
        )
