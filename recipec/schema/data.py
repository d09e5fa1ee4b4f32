"""`[data]` and `[[data.sources]]`: where the text comes from and how it becomes sequences."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from .base import Table, key_error
from .filters import Filter, ScoreFilter, ScoreSampleFilter

BUILTINS = ("python-docs", "python-stdlib")

RECORD_FIELDS = {
    "messages": ("messages", "role", "content"),
    "sharegpt": ("messages", "role", "content"),
    "alpaca": ("instruction", "input", "output", "system"),
    "prompt_completion": ("prompt", "completion", "role", "content", "system"),
    "preference": ("prompt", "chosen", "rejected", "role", "content", "system", "input", "margin"),
    "unpaired_preference": ("prompt", "completion", "label", "role", "content", "system", "input", "messages"),
    "tokens": ("input_ids",),
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
    "tokens": ("all",),
}
"""What the loss may see of each record format."""

DOCUMENT_RECORDS = ("text", "tokens")
"""Records that are documents (each followed by EOS, concatenated and cut into sequences); any other makes examples."""

TOKEN_DTYPES = {"uint16": 1 << 16, "uint32": 1 << 32}
"""The id widths of `.bin` token files, and the ids each can hold."""


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$"
"""A hub repository id: `name` or `org/name` (never a local path: no leading ./, ../, / or ~)."""

SPLIT_PATTERN = r"^\w+(\.\w+)*$"
"""A split name as `datasets` allows them (letters, digits, `_`, and `.` between them)."""


class HubDataset(Table):
    """`[data.sources.hub]`: a dataset repository on the Hugging Face hub, read with `datasets.load_dataset`.

    Its keys are `load_dataset`'s arguments. They sit in a table of their own because
    `split` here is the dataset's split, while a source's own `split` says whether the
    source is trained on or held out for evaluation.
    """

    repo: str
    """The dataset repository id, e.g. `"HuggingFaceH4/ultrachat_200k"` (`load_dataset`'s `path`)."""

    subset: str | None = Field(None, min_length=1)
    """The subset (configuration) to read, as the hub's dataset viewer names it, e.g. `"en"` (`load_dataset`'s `name`). Unset: the repository's default one; an error naming them when it has several and no default."""

    split: str = "train"
    """The dataset's split to read, e.g. `"train_sft"`. Not the source's own `split`, which says whether the documents are trained on or held out for evaluation."""

    revision: str = Field("main", min_length=1)
    """A branch, tag or commit sha of the repository. The commit it resolves to is part of the data stage's cache key."""

    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    """Globs of the repository's files to read instead of the subset's own, as `load_dataset`'s `data_files`: a glob or a list of globs (they make the `train` split), or a table of split name -> globs, e.g. `{train = "data/train-*.parquet"}`."""

    streaming: bool = False
    """Stream the records (`load_dataset(..., streaming=True)`) instead of downloading and preparing the whole split first; the source then needs `max_documents` or `max_tokens` to bound what is taken. Offline, the streamed files must be in the hub cache."""

    @model_validator(mode="after")
    def check_names(self) -> HubDataset:
        if not re.fullmatch(REPO_PATTERN, self.repo):
            raise key_error(
                "repo",
                f"{self.repo!r} is not a hub dataset id such as \"org/name\"",
                'a dataset on this machine is a `path` source: path = "data/*.jsonl", or format = "datasets" for a save_to_disk directory',
            )
        if not re.fullmatch(SPLIT_PATTERN, self.split):
            raise key_error("split", f"{self.split!r} is not a split name (letters, digits and `_`, joined by `.`)", 'e.g. split = "train"')
        return self


class SystemMessage(Table):
    """`system = {default = "..."}` or `system = {replace = "..."}`: a system message for the conversations."""

    default: str | None = None
    """The system message of each conversation that has none (its own is kept)."""

    replace: str | None = None
    """Every conversation's only system message: the records' own are removed."""

    @model_validator(mode="after")
    def check_one(self) -> SystemMessage:
        given = [k for k in ("default", "replace") if getattr(self, k) is not None]
        if len(given) != 1:
            raise key_error(given[1] if given else "default", "set one of `default` and `replace`", 'e.g. system = {replace = "You are a helpful assistant."}')
        return self


class Source(Table):
    """`[[data.sources]]`: one source of documents. Exactly one of `builtin`, `path` and `hub`."""

    name: str | None = Field(None, pattern=NAME_PATTERN)
    """A short name for the report and messages (letters, digits, `_`, `.`, `-`). Unset: `sources[i]`. Required with `split = "eval"`: the source's loss is logged as `eval_loss_<name>`."""

    builtin: Literal["python-docs", "python-stdlib"] | None = None
    """A corpus that ships with Python: `python-docs` (the prose of Python's documentation, `pydoc_data.topics`) or `python-stdlib` (the standard library's source, one document per file)."""

    path: str | list[str] | None = None
    """A glob or list of globs of local files, relative to the directory `recipec` runs in. `**` matches across directories. With `format = "datasets"`, a directory written by `datasets.Dataset.save_to_disk`."""

    hub: HubDataset | None = None
    """A dataset on the Hugging Face hub, as a `[data.sources.hub]` table, e.g. `hub = {repo = "org/name", split = "train"}`: read with `datasets.load_dataset` from the hub cache (`HF_HUB_CACHE`), downloading the split's files into it first when the hub is online (a streamed source is streamed from the hub instead). Offline (`HF_HUB_OFFLINE=1`, the training script's default) the dataset must be in that cache: `hf download --repo-type dataset org/name` puts it there. Records are read as those of a parquet file, with locators `org/name[subset]:split#ROW`."""

    format: Literal["jsonl", "parquet", "text", "datasets", "arrow", "bin", "mds"] | None = None
    """File format. Unset: inferred from the extension (.jsonl/.json, also .gz and .zst compressed: one JSON object a line, or in a file not named .jsonl whose first value opens an array, one JSON array of objects; .parquet; .txt/.md/.text; .arrow, an Arrow IPC file or stream; .bin, flat token ids), or for a directory from what it holds (`datasets`: a `save_to_disk` directory; `mds`: an `index.json` and the MDS shards it lists, as mosaicml-streaming and llm-foundry write them; point `path` at the split's directory). A text file is one document; a jsonl line, a parquet or Arrow row, an MDS sample is one document; a `.bin` file holds many, separated by `eos_token_id`."""

    text_field: str = "text"
    """The field (column) holding the document text, for jsonl and parquet, with `records = "text"`."""

    records: Literal["text", "messages", "sharegpt", "alpaca", "prompt_completion", "preference", "unpaired_preference", "tokens"] = "text"
    """What each record holds: `text` (a document, trained on every token), `tokens` (a document already tokenized: token ids made with `tokenizer`, in `.bin` files, an `input_ids` column of parquet, Arrow or `datasets` files, or an `input_ids` or `tokens` column of MDS shards; trained on every token like text, and never filtered), `messages` (OpenAI-style `[{role, content}, ...]`), `sharegpt` (`conversations` of `{from, value}`), `alpaca` (`instruction`, optional `input`, `output`, optional `system`) `prompt_completion` (`prompt` and `completion`, strings or message lists), `preference` (`prompt`, `chosen`, `rejected`: strings or message lists, for `[preference]`) or `unpaired_preference` (`prompt`, `completion` and a boolean `label`, for KTO). Any but `text` and `tokens` makes every source's documents examples: rendered with the chat template, masked by `train_on`, fitted to `data.max_length` and packed whole."""

    fields: dict[str, str] | None = None
    """Renamed fields of the records, e.g. `{messages = "dialog", role = "speaker", content = "text"}`. The names: messages, role, content (messages, sharegpt); instruction, input, output, system (alpaca); prompt, completion, role, content (prompt_completion); prompt, chosen, rejected (or completion, label), role, content, system, and input, a second column of a string prompt joined after it with `input_separator` (preference, unpaired_preference; a side may be one message in place of a list); margin, a column of numbers that a reward model's loss subtracts from each pair's reward difference, `-log sigmoid(r_chosen - r_rejected - margin)` as TRL's RewardTrainer takes its `margin` column (preference, with objective "reward"; read only when `fields` names it); messages, in place of prompt and completion, a whole conversation whose last message is the completion (unpaired_preference, as LLaMA-Factory's KTO data); input_ids (tokens, the column of ids in parquet, Arrow and MDS files). llm-foundry's prompt/response MDS shards are `prompt_completion` records with `{completion = "response"}`."""

    tokenizer: str | None = None
    """With `records = "tokens"`: the tokenizer that made the ids, a hub id (loaded from the local cache) or a local directory (same rules as `[tokenizer] path`). Its vocabulary must equal the vocabulary of the tokenizer the recipe trains with (`[tokenizer] path` or the model's own), and every id must be below its size: the data stage checks both before it packs a sequence."""

    token_dtype: Literal["uint16", "uint32", "int32", "int64"] | None = None
    """`.bin` token files: the width of each id, little-endian: `uint16` (nanoGPT's, for vocabularies of at most 65,536 tokens) or `uint32`. MDS token sources: the ids of a `bytes` column (older llm-foundry shards), `int64` unless set (llm-foundry's `token_encoding_type` default); an `ndarray` column holds its own dtype."""

    eos_token_id: int | None = Field(None, ge=0)
    """`.bin` token files only: the id that ends each document (nanoGPT writes the end-of-text id after every document). The files are split into documents at it; it must be the end-of-text id of the recipe's tokenizer, which follows each document in the packed sequences as it follows every text document."""

    roles: dict[str, str] | None = None
    """Role names of the records mapped to system, user, assistant or tool, e.g. `{human = "user", bot = "assistant"}` (sharegpt maps human, gpt and system by default)."""

    as_chat: bool = False
    """`prompt_completion`, `preference` and `unpaired_preference` records whose prompt and completion are strings: render each as a conversation with the chat template, the prompt a user turn (after the record's `system` field, when it has a non-empty one, as a system message) and the completion the assistant's turn, as axolotl's Bradley-Terry reward data are. false (the default): plain text, the prompt's tokens then the completion's then EOS, as TRL reads strings. Records whose sides are message lists are conversations either way."""

    input_separator: str = "\n\n"
    """What joins an instruction and its input into one user turn: for `alpaca` records (prompt_style `chat`), the instruction and a non-empty `input`; for `preference` and `unpaired_preference` records with an `input` field (`fields = {input = "..."}`: a second column of the prompt), the string prompt and a non-empty input. The default is a blank line; LLaMA-Factory joins with one newline ("\n")."""

    prompt_format: str | list[str] | None = None
    """`prompt_completion`, `preference` and `unpaired_preference` records: the prompt made of the record's fields, in place of its `prompt` field: each `{name}` is filled with the field `name` (a string or a number; `{{` and `}}` are literal braces), e.g. `"[INST] {instruction} {input} [/INST]"`. A list takes the first format whose fields are all non-empty, else the last (`["{instruction}\n\n{input}", "{instruction}"]`: the input only when there is one), as axolotl's user-defined prompt formats (`format`, `no_input_format`) and Ludwig's `prompt.template` fill them. The prompt is plain text unless `as_chat` makes it the user turn."""

    prompt_style: Literal["chat", "alpaca", "alpaca_chat"] = "chat"
    """How `alpaca` records are rendered: `chat` (the chat template renders a conversation whose user turn is the instruction, then the input after `input_separator`, a blank line by default), `alpaca` (Stanford Alpaca's prompt text, "Below is an instruction that describes a task... ### Instruction: ... ### Response:", then the output and EOS, with no chat template, as axolotl's `type: alpaca` and LitGPT's `prompt_style: alpaca`; a record's `system` takes the preamble's place) or `alpaca_chat` (that prompt text as the user turn of the chat template, as torchtune's `alpaca_dataset`)."""

    system: Literal["keep", "drop"] | SystemMessage = "keep"
    """The conversations' system messages: `keep` them as the records have them, `drop` them all (the chat template's own default applies, if it has one), `{default = "..."}` for each conversation that has none, or `{replace = "..."}` as every conversation's only one. For conversation and instruction records (message lists; an alpaca record's `system` field is its system message)."""

    train_on: Literal["assistant", "last_assistant", "completion", "all"] | None = None
    """What the loss sees: `assistant` turns (the default for conversations), the `last_assistant` turn, the `completion` (the default for prompt_completion), or `all` tokens (the only choice for text). The token that closes each supervised turn is supervised too."""

    max_documents: int | None = Field(None, ge=1)
    """Read at most this many (non-empty) documents of this source, in file order, before any filter. Unset: all."""

    max_tokens: int | None = Field(None, ge=1)
    """Read documents, in file order and before any filter, while their tokens add up to at most this many: the first document that would go past it ends the source. Tokens are counted with the recipe's tokenizer, without special tokens, over each document's text (for conversations, the text of their turns, as the filters see them). Unset: no bound. Not with `[tokenizer.train]`, which trains the tokenizer on the read documents."""

    on_error: Literal["error", "skip"] = "error"
    """A malformed record (a jsonl line that is not a JSON object, a missing or non-text field, a text file that is not UTF-8): stop with its file and line, or skip it and count it in the report."""

    split: Literal["train", "eval"] = "train"
    """`eval`: a named evaluation source, held out whole (beside `data.eval_fraction` of the training sources) and never trained on. Its loss is logged on its own as `eval_loss_<name>`, and `eval_loss` is the loss over every held-out token together (the `eval_fraction` documents and every evaluation source). Needs `name`."""

    weight: float | None = Field(None, gt=0)
    """Share of this source in the training tokens, relative to the other sources' weights (normalised to sum to 1 over the sources of a phase). A source with more tokens than its share is subsampled, one with fewer is repeated (see `data.on_exhausted`). Unset on every source: each source's documents are used once (their natural share)."""

    phase_weights: dict[str, float] | None = None
    """Weights for some schedule phases by name, overriding `weight` there, e.g. `{cooldown = 0.5}` to upweight a source in the anneal. Needs `weight`."""

    filters: list[Filter] = Field(default_factory=list)
    """Filters for this source only, as `[[data.sources.filters]]` tables, applied in order before the `[[data.filters]]` of every source. Filters read text: a token source (`records = "tokens"`) has none, and the `[[data.filters]]` pass over it."""

    phases: list[str] | None = Field(None, min_length=1)
    """Train on this source only in these schedule phases, by name: e.g. `["cooldown"]` adds a high-quality source to the anneal of a warmup-stable-decay run (shorthand phases are named warmup, decay, stable, cooldown, constant, cyclic, restarts). Unset: every phase. Its held-out documents are evaluated throughout."""

    @model_validator(mode="after")
    def check_builtin_or_path(self) -> Source:
        given = [key for key in ("builtin", "path", "hub") if getattr(self, key) is not None]
        if len(given) != 1:
            which = " and ".join(f"`{key}`" for key in given) if given else "neither"
            raise key_error(
                given[1] if given else "builtin",
                f"a data source needs exactly one of `builtin`, `path` and `hub`, got {which}",
                'e.g. builtin = "python-docs", path = "data/*.jsonl", or hub = {repo = "org/name"}',
            )
        if self.builtin is not None:
            for key in ("format", "text_field"):
                if key in self.model_fields_set:
                    raise key_error(key, f"`{key}` applies only to a `path` source")
            if self.records != "text":
                raise key_error("records", "a builtin corpus holds text records")
        if self.input_separator != "\n\n":  # the default, which a resolved.toml spells out, applies anywhere
            joins_alpaca = self.records == "alpaca" and self.prompt_style == "chat"
            joins_input = self.records in ("preference", "unpaired_preference") and "input" in (self.fields or {})
            if not (joins_alpaca or joins_input):
                raise key_error(
                    "input_separator",
                    f'`input_separator` joins an alpaca record\'s instruction and input (prompt_style "chat"), or a preference record\'s prompt and its `fields.input`, and this source has neither (records "{self.records}")',
                )
        if self.as_chat and self.records not in ("prompt_completion", "preference", "unpaired_preference"):
            raise key_error("as_chat", f'`as_chat` renders the string prompts and completions of prompt_completion and preference records, and `records` is "{self.records}"')
        if self.prompt_format is not None:
            self.check_prompt_format()
        if self.prompt_style != "chat" and self.records != "alpaca":
            raise key_error("prompt_style", f'`prompt_style` renders alpaca records, and `records` is "{self.records}"')
        if self.prompt_style == "alpaca" and self.system != "keep":
            raise key_error("system", 'prompt_style = "alpaca" renders no conversation: a record\'s `system` field takes the place of the Alpaca preamble', 'use prompt_style = "alpaca_chat" for a system message in the chat template')
        if self.records in ("text", "tokens") and self.system != "keep":
            raise key_error("system", f"`system` applies to conversation and instruction records, and `records` is \"{self.records}\"")
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
            if "messages" in (self.fields or {}):  # unpaired_preference: the conversation whole, in place of prompt and completion
                both = [name for name in ("prompt", "completion", "input") if name in (self.fields or {})]
                if both:
                    raise key_error(
                        "fields",
                        f"`messages` holds the whole conversation (its last message the completion), in place of `{both[0]}`",
                        "rename either messages, or prompt and completion",
                    )
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
            if self.name is None:
                raise key_error(
                    "split",
                    'a split = "eval" source needs a `name`: its loss is logged as eval_loss_<name>',
                    'e.g. name = "code" (letters, digits, `_`, `.`, `-`)',
                )
            if self.name == "parent":
                raise key_error(
                    "name",
                    "an evaluation source may not be named `parent`: eval_loss_parent is the loss on a continual run's parent's held-out data",
                    "choose another name",
                )
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

    def check_prompt_format(self) -> None:
        """`prompt_format`: records with a prompt, placeholders that are field names, no second way to fill the prompt."""
        from ..runtime.formats import prompt_fields

        if self.records not in ("prompt_completion", "preference", "unpaired_preference"):
            raise key_error("prompt_format", f'`prompt_format` makes the prompt of prompt_completion and preference records, and `records` is "{self.records}"')
        if isinstance(self.prompt_format, list) and not self.prompt_format:
            raise key_error("prompt_format", "`prompt_format` is an empty list", "give one format, or several to take the first whose fields are all non-empty")
        try:
            prompt_fields(self.prompt_format)
        except ValueError as e:
            raise key_error("prompt_format", str(e)) from None
        for key in ("prompt", "input"):
            if key in (self.fields or {}):
                raise key_error(("fields", key), f"`fields.{key}` names a column of the prompt, and `prompt_format` makes the prompt", "name the column in the format instead: {" + self.fields[key] + "}")

    @model_validator(mode="after")
    def check_token_source(self) -> Source:
        globs = [self.path] if isinstance(self.path, str) else self.path or []
        bin_files = self.format == "bin" or (self.format is None and any(g.lower().endswith(".bin") for g in globs))
        if self.records != "tokens":
            for key in ("tokenizer", "token_dtype", "eos_token_id"):
                if getattr(self, key) is not None:
                    raise key_error(key, f'`{key}` applies to token sources (records = "tokens"), and `records` is "{self.records}"')
            if bin_files:
                raise key_error(
                    "format" if self.format == "bin" else "path",
                    "a .bin file holds token ids, not text",
                    'set records = "tokens", with tokenizer, token_dtype and eos_token_id',
                )
            return self
        if self.hub is not None:
            raise key_error("records", "token ids are read from local files (.bin, parquet, Arrow, datasets directories)", "download the dataset's files and point `path` at them")
        if self.tokenizer is None:
            raise key_error("records", "token ids need the tokenizer that made them", 'set `tokenizer` to its hub id or local directory, e.g. tokenizer = "gpt2"')
        if self.filters:
            raise key_error(
                "filters",
                "filters read text, and this source holds token ids",
                "filter the text before tokenizing it; the [[data.filters]] of every source pass over token sources",
            )
        if self.roles is not None:
            raise key_error("roles", "token ids have no roles")
        if self.format in ("jsonl", "text"):
            raise key_error("format", f'token ids are read from .bin, parquet, Arrow, datasets and MDS files, not {self.format}')
        if bin_files:
            for key, example in (("token_dtype", 'token_dtype = "uint16"'), ("eos_token_id", "eos_token_id = 50256")):
                if getattr(self, key) is None:
                    raise key_error("records", f"a .bin token source needs `{key}`", f"e.g. {example}")
            if self.token_dtype not in TOKEN_DTYPES:
                raise key_error("token_dtype", f'a .bin file holds uint16 or uint32 ids, not {self.token_dtype}', 'set token_dtype = "uint16" or "uint32"')
            if self.eos_token_id >= TOKEN_DTYPES[self.token_dtype]:
                raise key_error(
                    "eos_token_id",
                    f"eos_token_id {self.eos_token_id} does not fit in a {self.token_dtype} id (at most {TOKEN_DTYPES[self.token_dtype] - 1})",
                    'set token_dtype = "uint32"',
                )
        else:
            for key in ("eos_token_id",) if self.format == "mds" else ("token_dtype", "eos_token_id"):
                if getattr(self, key) is not None:
                    where = ' and to the bytes columns of MDS shards (format = "mds")' if key == "token_dtype" else ""
                    raise key_error(key, f"`{key}` applies to .bin token files{where}; in parquet and Arrow files each row of `input_ids` is one document of typed ids")
        return self

    @model_validator(mode="after")
    def check_hub(self) -> Source:
        if self.hub is not None:
            if self.format is not None:
                raise key_error("format", "`format` applies to a `path` source; `datasets` tells a hub dataset's format from its files")
            if self.hub.streaming and self.max_documents is None and self.max_tokens is None:
                raise key_error(
                    ("hub", "streaming"),
                    "a streamed source needs a bound on what is taken from the stream",
                    "set `max_documents` or `max_tokens` on the source, or streaming = false to read the whole split",
                )
        return self


class DataTable(Table):
    """`[data]`"""

    seq_len: int = Field(512, ge=8)
    """Tokens per training sequence."""

    seed: int | None = Field(None, ge=0, lt=2**32)
    """The data's own seed: the held-out split, the mixture's sampling (which documents a subsampled or repeated source gives), the order of the documents and examples the data stage packs, and the training loader's shuffle. Unset: `recipe.seed`. With it, two runs can differ in the model's initialisation and dropout (`recipe.seed`) over the same data in the same order, or in the data alone (transformers' `data_seed`)."""

    packing: bool = True
    """Concatenate documents (each followed by the end-of-text token) and cut the stream into full `seq_len` blocks. Off: one padded, truncated sequence per document. With examples (a source whose `records` are not text): pack whole examples into sequences of at most `seq_len` tokens by best-fit-decreasing, attention never crossing from one to the next; off, one example per sequence, each micro-batch padded to its longest (see `pad_to_multiple_of`)."""

    cross_document_attention: bool = True
    """Packed text: whether a token may attend to the documents before it in its sequence. `false`: attention stays within each document: the training script restarts the position ids after every end-of-text token, and transformers keeps each token's attention to the tokens of its own document from them (the document mask of Llama 3's pretraining; Megatron's `reset_position_ids` with `reset_attention_mask`). A document cut at the end of a sequence goes on at position 0 of the next. The end-of-text token still predicts the next document's first token, as in the stream, so the loss counts the same tokens. A token source's documents must be separated by the tokenizer's end-of-text token. Only with `packing` and text records; not with context or sequence parallelism."""

    max_length: int | None = Field(None, ge=2)
    """Examples only: the most tokens one example may have. Unset: `seq_len`. At most `seq_len` with packing."""

    overflow: Literal["truncate", "truncate_turns", "drop"] = "truncate"
    """Examples only: what becomes of an example longer than `max_length`. `truncate`: its end is cut. `truncate_turns`: each turn's prompt and answer are cut in proportion to their lengths (LLaMA-Factory's `cutoff_len`): the turns are taken in order (from the last with `train_on = "last_assistant"`), each given what is left of `max_length`; an answer shorter than half of that is kept whole and its prompt cut, else a prompt shorter than half is kept whole and the answer cut, else both are cut, keeping the start of each; the turns after the budget is spent are dropped. A preference pair's prompt is cut once for both sides and both answers to one length, by the same rule. `drop`: the example is dropped. Whichever, an example left with no supervised token is dropped and counted in the report, never trained on."""

    pad_to_multiple_of: int | None = Field(None, ge=1)
    """Examples only: pad each micro-batch to its longest row rounded up to a multiple of this, never past `seq_len` (past it only where a row is longer, as a preference pair's two sides can be: then never past the next multiple of `seq_len`). Fewer micro-batch shapes mean fewer new kernels, allocator blocks and, under `model.compile`, recompiles; `pad_to_multiple_of = <seq_len>` pads every micro-batch to `seq_len` (axolotl's `pad_to_sequence_len`). Padding is never trained on: the loss is the same. Unset: each micro-batch padded to its longest row. At most `seq_len`; under sequence parallelism, which pads every row to `seq_len` already, only `seq_len`."""

    eval_fraction: float = Field(0.05, ge=0, lt=1)
    """Fraction of the documents held out for evaluation, chosen with `recipe.seed`. The split is by document, before tokenization, so no text is in both."""

    num_workers: int = Field(0, ge=0)
    """DataLoader worker processes. 0 loads in the training process."""

    pin_memory: bool | None = None
    """Put batches in page-locked host memory so that copies to the GPU run while it computes. Unset: on when the script runs on a GPU; no effect on CPU."""

    persistent_workers: bool = False
    """Keep the DataLoader's worker processes from one epoch (and one evaluation) to the next instead of starting them again. Only with `num_workers` above 0."""

    prefetch_factor: int | None = Field(None, ge=1)
    """Batches each DataLoader worker loads ahead. Unset: torch's default (2). Only with `num_workers` above 0."""

    sources: list[Source] = Field(min_length=1)
    """The sources, as `[[data.sources]]` tables, read in this order (document order decides which copy dedup keeps: the first)."""

    filters: list[Filter] = Field(default_factory=list)
    """Filters over every source, as `[[data.filters]]` tables, applied in order after each source's own `filters`. Dedup compares documents across sources. They read text: the documents of token sources (`records = "tokens"`) pass them unread."""

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
    def check_workers(self) -> DataTable:
        if self.num_workers == 0:
            for key in ("persistent_workers", "prefetch_factor"):
                if getattr(self, key) not in (None, False):
                    raise key_error(
                        key,
                        f"`{key}` is a setting of the DataLoader's worker processes, and num_workers is 0 (batches are loaded in the training process)",
                        "set data.num_workers above 0, or remove it",
                    )
        return self

    @model_validator(mode="after")
    def check_ray_address(self) -> DataTable:
        if self.ray_address is not None and self.executor != "ray":
            raise key_error("ray_address", '`ray_address` names the cluster of executor = "ray", and executor is "local"', 'set data.executor = "ray"')
        if self.executor == "ray":
            for i, src in enumerate(self.sources):
                if src.records == "tokens":
                    raise key_error(
                        "executor",
                        f'executor = "ray" reads text sources, and sources[{i}] holds token ids',
                        'use executor = "local": token ids need none of the filtering and tokenizing that Ray spreads over a cluster',
                    )
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
        examples = any(src.records not in DOCUMENT_RECORDS for src in self.sources)
        tokens = [i for i, src in enumerate(self.sources) if src.records == "tokens"]
        if examples and tokens:
            j = next(i for i, src in enumerate(self.sources) if src.records not in DOCUMENT_RECORDS)
            raise key_error(
                ("sources", tokens[0], "records"),
                f"sources[{tokens[0]}] holds token ids (documents) and sources[{j}] holds {self.sources[j].records} records (examples, "
                "rendered with the chat template and masked): one run trains on one or the other",
                "train the examples in a run of their own, e.g. continuing from this one with [continual]",
            )
        if not self.cross_document_attention:
            if examples:
                raise key_error(
                    "cross_document_attention",
                    "`cross_document_attention` applies to packed text, and examples never attend to one another: packed "
                    "examples are kept apart by their position ids already",
                    "remove it",
                )
            if not self.packing:
                raise key_error(
                    "cross_document_attention",
                    "`cross_document_attention` applies to packed text, and with data.packing false every sequence holds one document",
                    "set data.packing = true, or remove it",
                )
        for key in ("max_length", "overflow"):  # resolved.toml spells out the defaults: those are fine
            if getattr(self, key) != type(self).model_fields[key].default and not examples:
                raise key_error(key, f"`{key}` applies to examples, and every source's records are text", 'set records = "messages" (or another format) on a source')
        if self.pad_to_multiple_of is not None:
            if not examples:
                raise key_error(
                    "pad_to_multiple_of",
                    "`pad_to_multiple_of` rounds up the padding of micro-batches of examples, and every source's records are text, "
                    "whose rows are all seq_len long already (full blocks packed, padded to seq_len with a mask unpacked)",
                    'remove it, or set records = "messages" (or another format) on a source',
                )
            if self.pad_to_multiple_of > self.seq_len:
                raise key_error(
                    "pad_to_multiple_of",
                    f"pad_to_multiple_of {self.pad_to_multiple_of} is larger than seq_len {self.seq_len}, and a micro-batch is never padded past seq_len",
                    f"set pad_to_multiple_of = {self.seq_len} to pad every micro-batch to seq_len",
                )
        if self.max_length is not None and self.packing and self.max_length > self.seq_len:
            raise key_error("max_length", f"max_length {self.max_length} is longer than seq_len {self.seq_len}, the packed sequence", "raise seq_len or lower max_length")
        names = [src.name for src in self.sources if src.name is not None]
        for name in names:
            if names.count(name) > 1:
                raise key_error("sources", f"two sources are named {name!r}")
        return self
