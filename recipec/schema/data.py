"""`[data]` and `[[data.sources]]`: where the text comes from and how it becomes sequences."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Table, key_error

BUILTINS = ("python-docs", "python-stdlib")


class Source(Table):
    """`[[data.sources]]`: one source of documents. Exactly one of `builtin` and `path`."""

    builtin: Literal["python-docs", "python-stdlib"] | None = None
    """A corpus that ships with Python: `python-docs` (the prose of Python's documentation, `pydoc_data.topics`) or `python-stdlib` (the standard library's source, one document per file)."""

    path: str | list[str] | None = None
    """A glob or list of globs of local files, relative to the directory `recipec` runs in. `**` matches across directories."""

    format: Literal["jsonl", "parquet", "text"] | None = None
    """File format. Unset: inferred from the extension (.jsonl/.json, .parquet, .txt/.md). A text file is one document."""

    text_field: str = "text"
    """The field (column) holding the document text, for jsonl and parquet."""

    max_documents: int | None = Field(None, ge=1)
    """Keep at most this many documents of this source, in file order. Unset: all."""

    phases: list[str] | None = Field(None, min_length=1)
    """Train on this source only in these schedule phases, by name: e.g. `["cooldown"]` adds a high-quality source to the anneal of a warmup-stable-decay run (shorthand phases are named warmup, decay, stable, cooldown, constant, cyclic, restarts). Unset: every phase. Its held-out documents are evaluated throughout."""

    @model_validator(mode="after")
    def check_builtin_or_path(self) -> Source:
        if (self.builtin is None) == (self.path is None):
            which = "both" if self.builtin is not None else "neither"
            raise key_error(
                "path" if self.builtin is not None else "builtin",
                f"a data source needs exactly one of `builtin` and `path`, got {which}",
                'e.g. builtin = "python-docs", or path = "data/*.jsonl"',
            )
        if self.builtin is not None:
            for key in ("format", "text_field"):
                if key in self.model_fields_set:
                    raise key_error(key, f"`{key}` applies only to a `path` source")
        if isinstance(self.path, list) and not self.path:
            raise key_error("path", "`path` is an empty list", "give at least one glob")
        return self


class DataTable(Table):
    """`[data]`"""

    seq_len: int = Field(512, ge=8)
    """Tokens per training sequence."""

    packing: bool = True
    """Concatenate documents (each followed by the end-of-text token) and cut the stream into full `seq_len` blocks. Off: one padded, truncated sequence per document."""

    eval_fraction: float = Field(0.05, ge=0, lt=1)
    """Fraction of the documents held out for evaluation, chosen with `recipe.seed`. The split is by document, before tokenization, so no text is in both."""

    num_workers: int = Field(0, ge=0)
    """DataLoader worker processes. 0 loads in the training process."""

    sources: list[Source] = Field(min_length=1)
    """The sources, as `[[data.sources]]` tables; their documents are concatenated in this order."""
