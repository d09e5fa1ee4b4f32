"""`[data]` and `[[data.sources]]`: where the text comes from and how it becomes sequences."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Table, key_error
from .filters import Filter, ScoreFilter, ScoreSampleFilter

BUILTINS = ("python-docs", "python-stdlib")

RECORD_FIELDS = {
    "messages": ("messages", "role", "content"),
    "sharegpt": ("messages", "role", "content"),
    "alpaca": ("instruction", "input", "output", "system"),
    "prompt_completion": ("prompt", "completion", "role", "content"),
    "preference": ("prompt", "chosen", "rejected", "role", "content"),
    "unpaired_preference": ("prompt", "completion", "label", "role", "content"),
}
"""The fields each record format reads, by the name `fields` renames them with (recipec_runtime/formats.py has their defaults)."""

TRAIN_ON = {
    "text": ("all",),
    "messages": ("assistant", "last_assistant", "all"),
    "sharegpt": ("assistant", "last_assistant", "all"),
    "alpaca": ("assistant", "all"),
    "prompt_completion": ("completion", "assistant", "last_assistant", "all"),
    "preference": ("completion",),
    "unpaired_preference": ("completion",),
}
"""What the loss may see of each record format."""


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Source(Table):
    """`[[data.sources]]`: one source of documents. Exactly one of `builtin` and `path`."""

    name: str | None = Field(None, pattern=NAME_PATTERN)
    """A short name for the report and messages (letters, digits, `_`, `.`, `-`). Unset: `sources[i]`."""

    builtin: Literal["python-docs", "python-stdlib"] | None = None
    """A corpus that ships with Python: `python-docs` (the prose of Python's documentation, `pydoc_data.topics`) or `python-stdlib` (the standard library's source, one document per file)."""

    path: str | list[str] | None = None
    """A glob or list of globs of local files, relative to the directory `recipec` runs in. `**` matches across directories. With `format = "datasets"`, a directory written by `datasets.Dataset.save_to_disk`."""

    format: Literal["jsonl", "parquet", "text", "datasets"] | None = None
    """File format. Unset: inferred from the extension (.jsonl/.json, also .gz and .zst compressed; .parquet; .txt/.md/.text). A text file is one document; a jsonl line is one document."""

    text_field: str = "text"
    """The field (column) holding the document text, for jsonl and parquet, with `records = "text"`."""

    records: Literal["text", "messages", "sharegpt", "alpaca", "prompt_completion", "preference", "unpaired_preference"] = "text"
    """What each record holds: `text` (a document, trained on every token), `messages` (OpenAI-style `[{role, content}, ...]`), `sharegpt` (`conversations` of `{from, value}`), `alpaca` (`instruction`, optional `input`, `output`, optional `system`) `prompt_completion` (`prompt` and `completion`, strings or message lists), `preference` (`prompt`, `chosen`, `rejected`: strings or message lists, for `[preference]`) or `unpaired_preference` (`prompt`, `completion` and a boolean `label`, for KTO). Any but `text` makes every source's documents examples: rendered with the chat template, masked by `train_on`, fitted to `data.max_length` and packed whole."""

    fields: dict[str, str] | None = None
    """Renamed fields of the records, e.g. `{messages = "dialog", role = "speaker", content = "text"}`. The names: messages, role, content (messages, sharegpt); instruction, input, output, system (alpaca); prompt, completion, role, content (prompt_completion)."""

    roles: dict[str, str] | None = None
    """Role names of the records mapped to system, user, assistant or tool, e.g. `{human = "user", bot = "assistant"}` (sharegpt maps human, gpt and system by default)."""

    train_on: Literal["assistant", "last_assistant", "completion", "all"] | None = None
    """What the loss sees: `assistant` turns (the default for conversations), the `last_assistant` turn, the `completion` (the default for prompt_completion), or `all` tokens (the only choice for text). The token that closes each supervised turn is supervised too."""

    max_documents: int | None = Field(None, ge=1)
    """Read at most this many (non-empty) documents of this source, in file order, before any filter. Unset: all."""

    on_error: Literal["error", "skip"] = "error"
    """A malformed record (a jsonl line that is not a JSON object, a missing or non-text field, a text file that is not UTF-8): stop with its file and line, or skip it and count it in the report."""

    split: Literal["train", "eval"] = "train"
    """`eval`: a named evaluation source, held out whole (beside `data.eval_fraction` of the training sources) and never trained on; its loss is `eval_loss` with the rest of the held-out data."""

    weight: float | None = Field(None, gt=0)
    """Share of this source in the training tokens, relative to the other sources' weights (normalised to sum to 1 over the sources of a phase). A source with more tokens than its share is subsampled, one with fewer is repeated (see `data.on_exhausted`). Unset on every source: each source's documents are used once (their natural share)."""

    phase_weights: dict[str, float] | None = None
    """Weights for some schedule phases by name, overriding `weight` there, e.g. `{cooldown = 0.5}` to upweight a source in the anneal. Needs `weight`."""

    filters: list[Filter] = Field(default_factory=list)
    """Filters for this source only, as `[[data.sources.filters]]` tables, applied in order before the `[[data.filters]]` of every source."""

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
            if self.records != "text":
                raise key_error("records", "a builtin corpus holds text records")
        if self.records == "text":
            for key in ("fields", "roles"):
                if getattr(self, key) is not None:
                    raise key_error(key, f"`{key}` applies to conversation and instruction records, and `records` is \"text\"")
        else:
            if "text_field" in self.model_fields_set:
                raise key_error("text_field", f"`text_field` applies to text records; rename the fields of {self.records} records with `fields`")
            if self.format == "text":
                raise key_error("records", f'a text file holds one document, not {self.records} records', 'use format = "jsonl", "parquet" or "datasets"')
            known = RECORD_FIELDS[self.records]
            for name in self.fields or {}:
                if name not in known:
                    raise key_error("fields", f"{self.records} records have no field {name!r}", "the fields: " + ", ".join(known))
            if self.roles is not None and self.records == "alpaca":
                raise key_error("roles", "alpaca records have no roles")
            for name, role in (self.roles or {}).items():
                if role not in ("system", "user", "assistant", "tool"):
                    raise key_error("roles", f"role {name!r} maps to {role!r}, not one of system, user, assistant, tool")
        if self.train_on is not None and self.train_on not in TRAIN_ON[self.records]:
            raise key_error(
                "train_on",
                f'train_on = "{self.train_on}" does not apply to {self.records} records',
                "choose one of " + ", ".join(f'"{t}"' for t in TRAIN_ON[self.records]),
            )
        if self.split == "eval":
            for key in ("weight", "phase_weights", "phases"):
                if getattr(self, key) is not None:
                    raise key_error(key, f"`{key}` shapes the training mixture, and this source is for evaluation only (split = \"eval\")")
        if isinstance(self.path, list) and not self.path:
            raise key_error("path", "`path` is an empty list", "give at least one glob")
        if self.phase_weights is not None:
            if self.weight is None:
                raise key_error("phase_weights", "`phase_weights` needs `weight` (the share in the other phases)")
            for phase, value in self.phase_weights.items():
                if not value > 0:
                    raise key_error("phase_weights", f"the weight of phase {phase!r} must be positive, got {value}")
        if self.builtin is not None:
            for f in self.filters:
                if isinstance(f, (ScoreFilter, ScoreSampleFilter)):
                    raise key_error("filters", f"a builtin source has no score field for a {f.type!r} filter")
        return self


class DataTable(Table):
    """`[data]`"""

    seq_len: int = Field(512, ge=8)
    """Tokens per training sequence."""

    packing: bool = True
    """Concatenate documents (each followed by the end-of-text token) and cut the stream into full `seq_len` blocks. Off: one padded, truncated sequence per document. With examples (a source whose `records` are not text): pack whole examples into sequences of at most `seq_len` tokens by best-fit-decreasing, attention never crossing from one to the next; off, one example per sequence, each micro-batch padded to its longest."""

    max_length: int | None = Field(None, ge=2)
    """Examples only: the most tokens one example may have. Unset: `seq_len`. At most `seq_len` with packing."""

    overflow: Literal["truncate", "drop"] = "truncate"
    """Examples only: a longer example is cut to `max_length`, or dropped. Either way an example left with no supervised token is dropped and counted in the report, never trained on."""

    eval_fraction: float = Field(0.05, ge=0, lt=1)
    """Fraction of the documents held out for evaluation, chosen with `recipe.seed`. The split is by document, before tokenization, so no text is in both."""

    num_workers: int = Field(0, ge=0)
    """DataLoader worker processes. 0 loads in the training process."""

    pin_memory: bool | None = None
    """Put batches in page-locked host memory so that copies to the GPU run while it computes. Unset: on when the script runs on a GPU; no effect on CPU."""

    sources: list[Source] = Field(min_length=1)
    """The sources, as `[[data.sources]]` tables, read in this order (document order decides which copy dedup keeps: the first)."""

    filters: list[Filter] = Field(default_factory=list)
    """Filters over every source, as `[[data.filters]]` tables, applied in order after each source's own `filters`. Dedup compares documents across sources."""

    temperature: float | None = Field(None, gt=0)
    """Temperature sampling of the mixture: each source's share is proportional to its token count to the power 1/temperature (1: natural shares; higher flattens toward uniform). Not with `weight`."""

    on_exhausted: Literal["repeat", "stop", "error"] = "repeat"
    """When a source has fewer tokens than its share of the mixture: `repeat` its documents (more epochs of it), `stop` by shrinking the whole mixture so that no source repeats, or `error`. The mixture's size is the sum of the phase's sources' tokens."""

    num_proc: int = Field(0, ge=0)
    """Processes for the data stage (reading, filters, tokenizing). 0: every core. With `executor = "ray"` and no cluster address: the CPUs of the local Ray started for the stage."""

    executor: Literal["local", "ray"] = "local"
    """Where the data stage runs: `local` processes on this machine, or `ray` tasks on a Ray cluster (`pip install 'recipec[ray]'`): reading, filters and tokenizing over file shards, dedup by a shuffle of keys, packing on the driver. The output and its cache entry are the same either way."""

    ray_address: str | None = None
    """The Ray cluster of `executor = "ray"`, e.g. `"10.0.0.5:6379"` or `"auto"`. Unset: the `RAY_ADDRESS` environment variable, else a local Ray started for the stage. The sources, the project directory and `cache_dir` must be at the same paths on every node (shared storage)."""

    cache_dir: str = ".recipec/data"
    """Where the data stage keeps its output, relative to the directory `recipec` runs in. Entries are keyed on the sources' content, the filter settings, the tokenizer and seq_len: any change makes a new entry."""

    count_dropped_tokens: bool = False
    """Tokenize the documents the filters drop as well, so the report gives tokens (not only characters) in, kept and dropped for every filter. Off: only the kept documents are tokenized (the tokenizer is the stage's costliest step)."""

    @model_validator(mode="after")
    def check_ray_address(self) -> DataTable:
        if self.ray_address is not None and self.executor != "ray":
            raise key_error("ray_address", '`ray_address` names the cluster of executor = "ray", and executor is "local"', 'set data.executor = "ray"')
        return self

    @model_validator(mode="after")
    def check_mixture(self) -> DataTable:
        training = [i for i, src in enumerate(self.sources) if src.split == "train"]
        if not training:
            raise key_error("sources", 'every source has split = "eval": there is nothing to train on')
        weighted = [i for i in training if self.sources[i].weight is not None]
        if weighted and len(weighted) != len(training):
            missing = next(i for i in training if self.sources[i].weight is None)
            raise key_error(
                "sources",
                f"sources[{missing}] has no `weight` but sources[{weighted[0]}] has one",
                "give every source a weight, or none (each source's documents are then used once)",
            )
        if weighted and self.temperature is not None:
            raise key_error("temperature", "`temperature` derives the weights from the sources' sizes; the sources also set `weight`")
        examples = any(src.records != "text" for src in self.sources)
        for key in ("max_length", "overflow"):  # resolved.toml spells out the defaults: those are fine
            if getattr(self, key) != type(self).model_fields[key].default and not examples:
                raise key_error(key, f"`{key}` applies to examples, and every source's records are text", 'set records = "messages" (or another format) on a source')
        if self.max_length is not None and self.packing and self.max_length > self.seq_len:
            raise key_error("max_length", f"max_length {self.max_length} is longer than seq_len {self.seq_len}, the packed sequence", "raise seq_len or lower max_length")
        names = [src.name for src in self.sources if src.name is not None]
        for name in names:
            if names.count(name) > 1:
                raise key_error("sources", f"two sources are named {name!r}")
        return self
