"""`[tokenizer]`: load a tokenizer, or train one on the recipe's own data."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Table, key_error


class TokenizerTrain(Table):
    """`[tokenizer.train]`: a tokenizer trained on the recipe's training split before the run starts, and saved with the run."""

    kind: Literal["bpe"] = "bpe"
    """Algorithm: byte-level BPE (any text can be encoded, no unknown token)."""

    vocab_size: int = Field(8192, ge=300, le=1_000_000)
    """Vocabulary size, special tokens included."""

    min_frequency: int = Field(2, ge=1)
    """A pair must occur at least this often to be merged."""

    max_documents: int | None = Field(None, ge=1)
    """Train on at most this many training documents (in data order). Unset: all of them."""


class TokenizerTable(Table):
    """`[tokenizer]`. Leave it out to use the tokenizer that comes with `model.path`."""

    path: str | None = None
    """A tokenizer to load: hub id or local directory (same rules as `model.path`)."""

    train: TokenizerTrain | None = None
    """Train a tokenizer instead of loading one, e.g. `train = {kind = "bpe", vocab_size = 8192}`."""

    chat_template: str | None = None
    """The chat template that renders conversations: a `.jinja` file (relative to the directory `recipec` runs in), or the template itself. Unset: the tokenizer's own. Its text is written into train.py and its hash into the lock; it is saved with the run's tokenizer."""

    special_tokens: list[str] = Field(default_factory=list)
    """Tokens to add as whole special tokens (chat markers such as `<|im_start|>`), unless the tokenizer has them. The model's embeddings grow to fit; under [peft] the embedding and output layers then train too."""

    @model_validator(mode="after")
    def check_path_or_train(self) -> TokenizerTable:
        if self.path is not None and self.train is not None:
            raise key_error("train", "[tokenizer] takes `path` or `train`, not both")
        return self
