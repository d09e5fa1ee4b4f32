"""Record formats: one function per source format, a record in, an example out.

An example is what the chat module tokenizes: a dict with

* ``messages``: the conversation, a list of ``{"role", "content"}`` with roles
  ``system``, ``user``, ``assistant`` or ``tool`` and string contents;
* ``completion_from``: the index of the first message that is the completion (prompt/completion
  data), else None;
* or, for the ``text`` format, ``text``: the raw document.

Formats:

* ``text``: ``{"text": "..."}`` (raw text, trained on every token).
* ``messages``: OpenAI-style ``{"messages": [{"role": "user", "content": "..."}, ...]}``.
* ``sharegpt``: ``{"conversations": [{"from": "human", "value": "..."}, ...]}``, the role names
  mapped by ``roles`` (``human`` -> user, ``gpt`` -> assistant, ``system`` -> system by default).
* ``alpaca``: ``{"instruction", "input", "output", "system"}``; ``input`` and ``system`` are
  optional. The user turn is the instruction, then a blank line and the input when there is one;
  or, by the source's ``prompt_style`` (:data:`PROMPT_STYLES`), Stanford Alpaca's prompt text.
* ``prompt_completion``: ``{"prompt", "completion"}``, each a string or a list of messages.
  With string sides and no chat template the two are concatenated as they are.
* ``preference``: ``{"prompt", "chosen", "rejected"}``, all strings or all lists of messages;
  the example is ``{"chosen", "rejected"}``, each side a prompt/completion example, and
  ``margin`` (a float) when ``fields`` names a margin column (a reward model's, as TRL's).
* ``unpaired_preference`` (KTO, APO-zero unpaired): ``{"prompt", "completion", "label"}`` with a boolean label
  (true: a desirable completion); the example is a prompt/completion example with ``label``.

A source's ``prompt_format`` builds the prompt of ``prompt_completion``, ``preference`` and
``unpaired_preference`` records from other fields (:func:`format_prompt`): ``"[INST] {instruction}
{input} [/INST]"`` fills each ``{name}`` with the record's field of that name, as axolotl's
user-defined prompt formats and Ludwig's ``prompt.template`` do.

Field names are the recipe's (``fields``, merged over :data:`DEFAULT_FIELDS`); role names are
mapped by ``roles`` (merged over :data:`DEFAULT_ROLES`, for ``messages`` and ``sharegpt``).
A source's ``system`` then keeps, drops, defaults or replaces the conversations' system
messages (:func:`with_system`).
A record that does not fit raises :class:`RecordError`, whose message names the field; the
reader adds the file and line.
"""

from __future__ import annotations

import math
import os
import string
from typing import Any, Callable

FORMATS = ("text", "messages", "sharegpt", "alpaca", "prompt_completion", "preference", "unpaired_preference")
CONVERSATIONAL = ("messages", "sharegpt", "alpaca", "prompt_completion", "preference", "unpaired_preference")
PREFERENCE = ("preference", "unpaired_preference")
ROLES = ("system", "user", "assistant", "tool")

DEFAULT_FIELDS: dict[str, dict[str, str]] = {
    "text": {"text": "text"},
    "messages": {"messages": "messages", "role": "role", "content": "content"},
    "sharegpt": {"messages": "conversations", "role": "from", "content": "value"},
    "alpaca": {"instruction": "instruction", "input": "input", "output": "output", "system": "system"},
    "prompt_completion": {"prompt": "prompt", "completion": "completion", "role": "role", "content": "content", "system": "system"},
    "preference": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "role": "role", "content": "content", "system": "system"},
    "unpaired_preference": {"prompt": "prompt", "completion": "completion", "label": "label", "role": "role", "content": "content", "system": "system"},
}
"""Each format's fields: the name recipec uses -> the record's key (a recipe may rename any)."""

DEFAULT_ROLES: dict[str, dict[str, str]] = {
    "messages": {},
    "sharegpt": {"human": "user", "gpt": "assistant", "system": "system", "tool": "tool"},
    "prompt_completion": {},
    "preference": {},
    "unpaired_preference": {},
}
"""Each format's role names: the record's role -> recipec's; a role not listed passes as it is."""


INPUT_SEPARATOR = "\n\n"
"""What joins an instruction and its input by default (a source's ``input_separator``)."""

PROMPT_STYLES = ("chat", "alpaca", "alpaca_chat")
"""How alpaca records are rendered: ``chat`` (a conversation the chat template renders: the
instruction, then the input after a blank line, is the user turn), ``alpaca`` (Stanford
Alpaca's prompt text, then the output: prompt/completion strings, no chat template, as
axolotl's ``type: alpaca`` and LitGPT's ``prompt_style: alpaca`` render them) or
``alpaca_chat`` (that prompt text as the user turn of the chat template, as torchtune's
``alpaca_dataset`` puts it)."""

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.",
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
)
"""Stanford Alpaca's preamble with an input, and without one."""


def alpaca_prompt(instruction: str, input: str = "", system: str = "") -> str:
    """Stanford Alpaca's prompt (its train.py ``PROMPT_DICT``, word for word as axolotl's
    ``AlpacaPrompter``, LitGPT's ``Alpaca`` and torchtune's ``AlpacaToMessages`` write it): the
    preamble (``system`` in its place when given), the instruction, the input when there is
    one, and the ``### Response:`` header the output follows."""
    if input:
        return f"{system or ALPACA_PREAMBLE[0]}\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    return f"{system or ALPACA_PREAMBLE[1]}\n\n### Instruction:\n{instruction}\n\n### Response:\n"


class RecordError(ValueError):
    """A record that does not fit its format; the message names the field."""


def prompt_fields(prompt_format: str | list[str]) -> list[str]:
    """The record fields a prompt format reads (its ``{name}`` placeholders), in order of first use.

    Raises:
        ValueError: a placeholder that is not a field name (``{a.b}``, ``{a[0]}``, ``{0}``, ``{}``, ``{x!r}``,
            ``{x:>9}``; a name with spaces or dashes is one),
            a lone brace, or a format without any placeholder.
    """
    names: list[str] = []
    for text in [prompt_format] if isinstance(prompt_format, str) else prompt_format:
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as e:
            raise ValueError(f"{text!r}: {e} (a literal brace is written twice: {{{{ or }}}})") from None
        found = []
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if not name or name.isdigit() or any(c in name for c in ".[]") or spec or conversion:  # str.format would index or convert
                shown = "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
                raise ValueError(f"{text!r}: {shown} is not a field name; a placeholder is a field name in braces, such as {{instruction}}")
            found.append(name)
        if not found:
            raise ValueError(f"{text!r} has no {{field}} placeholder: the prompt would be the same text for every record")
        names += [n for n in found if n not in names]
    return names


def format_prompt(record: dict[str, Any], prompt_format: str | list[str]) -> str:
    """The prompt ``prompt_format`` makes of a record: each ``{name}`` filled with the record's field ``name``.

    A list of formats takes the first whose fields are all non-empty (``["{instruction}: {input}",
    "{instruction}"]``: the input when there is one); when none is, the last, with its empty fields.
    Fields hold strings or numbers; null is empty, and a field the record lacks is empty too for
    choosing among a list, but an error in the format taken.

    Raises:
        RecordError: a field of the format taken is missing, or a field holds neither a string nor a number.
    """
    options = [prompt_format] if isinstance(prompt_format, str) else list(prompt_format)
    for k, text in enumerate(options):
        values: dict[str, str | None] = {}
        for name in prompt_fields(text):
            value = record.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
                raise RecordError(f"`{name}` holds {type(value).__name__}, and the prompt format fills in strings or numbers")
            values[name] = None if name not in record else "" if value is None else str(value)
        if k == len(options) - 1 or all(values.values()):
            missing = [name for name, v in values.items() if v is None]
            if missing:
                raise RecordError(f"the record has no `{missing[0]}`")
            return text.format_map(values)
    raise AssertionError("unreachable: the last format is always taken")  # pragma: no cover


def to_example(
    record: dict[str, Any],
    format: str,
    fields: dict[str, str] | None = None,
    roles: dict[str, str] | None = None,
    system: str | dict[str, str] = "keep",
    prompt_style: str = "chat",
    *,
    as_chat: bool = False,
    input_separator: str = INPUT_SEPARATOR,
    prompt_format: str | list[str] | None = None,
) -> dict[str, Any]:
    """Turn one record into an example (see the module docstring).

    Args:
        record: the record as the reader gives it (a dict of columns).
        format: one of :data:`FORMATS`.
        fields: renamed fields, merged over the format's defaults.
        roles: renamed roles, merged over the format's defaults.
        system: the source's ``system``: "keep" the records' system messages, "drop" them,
            ``{"default": text}`` (the system message of a conversation that has none) or
            ``{"replace": text}`` (every conversation's only system message); see :func:`with_system`.
        prompt_style: for alpaca records, one of :data:`PROMPT_STYLES`.
        as_chat: string prompts and completions (prompt_completion and preference records) as a
            conversation: the record's ``system`` field (when non-empty) as a system message, the
            prompt as a user turn, the completion as the assistant's (see :func:`as_conversation`).
        input_separator: what joins an alpaca record's instruction and non-empty input (prompt_style
            "chat"), and a preference record's string prompt and non-empty ``input`` field (read only
            when ``fields`` names it: a second column of the prompt, as LLaMA-Factory's ``query``).
        prompt_format: the prompt of prompt_completion and preference records, made of the record's fields
            (:func:`format_prompt`) in place of its ``prompt`` field.

    Raises:
        RecordError: the record lacks a field, has a wrong type, an unknown role or no
            assistant turn; a ``system`` other than "keep" on a record whose sides are strings.
        ValueError: an unknown format.
    """
    if format not in _READERS:
        raise ValueError(f"unknown format {format!r}; the formats are {', '.join(FORMATS)}")
    f = {**DEFAULT_FIELDS[format], **(fields or {})}
    r = {**DEFAULT_ROLES.get(format, {}), **(roles or {})}
    if format == "alpaca" and prompt_style != "chat":
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt_style {prompt_style!r}; the styles are {', '.join(PROMPT_STYLES)}")
        instruction, extra = _string(record, f["instruction"]), _optional_string(record, f["input"])
        own_system, output = _optional_string(record, f["system"]), _string(record, f["output"])
        if prompt_style == "alpaca":  # the record's system in the preamble's place
            if not output:
                raise RecordError(f"`{f['output']}` is empty")
            return {"prompt": alpaca_prompt(instruction, extra, own_system), "completion": output}
        head = [{"role": "system", "content": own_system}] if own_system else []
        example = {"messages": [*head, {"role": "user", "content": alpaca_prompt(instruction, extra)}, {"role": "assistant", "content": output}], "completion_from": None}
    elif format == "alpaca":
        example = _alpaca(record, f, r, input_separator)
    else:
        if prompt_format is not None:
            if format not in ("prompt_completion", *PREFERENCE):
                raise ValueError(f"prompt_format makes the prompt of prompt_completion and preference records, not of {format}")
            record = {**record, f["prompt"]: format_prompt(record, prompt_format)}
        if format in PREFERENCE and "input" in (fields or {}):
            record = _with_input(record, f, input_separator)
        example = _READERS[format](record, f, r)
    if as_chat and format in ("prompt_completion", "preference", "unpaired_preference"):
        own_system = _optional_string(record, f["system"])
        if "chosen" in example:
            example = {side: as_conversation(example[side], own_system) for side in ("chosen", "rejected")}
        else:
            example = as_conversation(example, own_system)
    if system != "keep" and format != "text":
        if "chosen" in example:
            example = {side: with_system(example[side], system, f["prompt"]) for side in ("chosen", "rejected")}
        else:
            example = with_system(example, system, f.get("prompt", f.get("messages", "")))
    if format == "preference" and "margin" in (fields or {}):
        example = {**example, "margin": _number(record, f["margin"])}
    return example


def as_conversation(example: dict[str, Any], system: str = "") -> dict[str, Any]:
    """A prompt/completion example of two strings as a conversation (a message list is one already).

    ``[{system}], {user: prompt}, {assistant: completion}``, the completion from the assistant's turn;
    other keys (a KTO ``label``) are kept.
    """
    if "prompt" not in example:
        return example
    head = [{"role": "system", "content": system}] if system else []
    messages = [*head, {"role": "user", "content": example["prompt"]}, {"role": "assistant", "content": example["completion"]}]
    rest = {k: v for k, v in example.items() if k not in ("prompt", "completion")}
    return {**rest, "messages": messages, "completion_from": len(messages) - 1}


def with_system(example: dict[str, Any], system: str | dict[str, str], where: str) -> dict[str, Any]:
    """The conversation of ``example`` with its system messages dropped (``"drop"``), given one
    when it has none (``{"default": text}``: a system message first), or replaced by one
    (``{"replace": text}``: every system message removed, that one first). ``completion_from``
    (where the completion starts) moves with the messages before it.

    Raises:
        RecordError: an example without a conversation (a prompt and a completion that are strings).
    """
    if "messages" not in example:
        raise RecordError(f"`{where}` is a string, and the source's `system` applies to lists of messages")
    messages, start = example["messages"], example.get("completion_from")
    kept = [m for m in messages if m["role"] != "system"]
    before = start if start is None else start - sum(m["role"] == "system" for m in messages[:start])
    if system == "drop":
        out, start = kept, before
    elif "replace" in system:
        out, start = [{"role": "system", "content": system["replace"]}, *kept], None if before is None else before + 1
    elif any(m["role"] == "system" for m in messages):
        out = messages
    else:
        out, start = [{"role": "system", "content": system["default"]}, *messages], None if start is None else start + 1
    return {**example, "messages": out, "completion_from": start}


def _text(record: dict[str, Any], f: dict[str, str], r: dict[str, str]) -> dict[str, Any]:
    return {"text": _string(record, f["text"])}


def _messages(record: dict[str, Any], f: dict[str, str], r: dict[str, str]) -> dict[str, Any]:
    messages = _turns(_field(record, f["messages"]), f["messages"], f, r)
    _needs_assistant(messages, f["messages"])
    return {"messages": messages, "completion_from": None}


def _with_input(record: dict[str, Any], f: dict[str, str], separator: str) -> dict[str, Any]:
    """The record with its ``input`` field joined to its string prompt (when non-empty), as LLaMA-Factory joins
    an alpaca-style pair's ``query`` to its ``prompt``."""
    extra = _optional_string(record, f["input"])
    if not extra:
        return record
    prompt = _field(record, f["prompt"])
    if not isinstance(prompt, str):
        raise RecordError(f"`{f['input']}` is joined to a string prompt, and `{f['prompt']}` is a list of messages")
    return {**record, f["prompt"]: prompt + separator + extra}


def _alpaca(record: dict[str, Any], f: dict[str, str], r: dict[str, str], separator: str = INPUT_SEPARATOR) -> dict[str, Any]:
    instruction = _string(record, f["instruction"])
    extra = _optional_string(record, f["input"])
    system = _optional_string(record, f["system"])
    user = instruction + (separator + extra if extra else "")
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": _string(record, f["output"])}]
    return {"messages": messages, "completion_from": None}


def _prompt_completion(record: dict[str, Any], f: dict[str, str], r: dict[str, str]) -> dict[str, Any]:
    prompt, completion = _field(record, f["prompt"]), _field(record, f["completion"])
    if isinstance(prompt, str) and isinstance(completion, str):
        if not completion:
            raise RecordError(f"`{f['completion']}` is empty")
        return {"prompt": prompt, "completion": completion}
    if isinstance(prompt, str) or isinstance(completion, str):
        side = f["prompt"] if isinstance(prompt, str) else f["completion"]
        raise RecordError(f"`{side}` is a string and the other side a list of messages: use one kind for both")
    head = _turns(prompt, f["prompt"], f, r)
    tail = _turns(completion, f["completion"], f, r)
    _needs_assistant(tail, f["completion"])
    return {"messages": head + tail, "completion_from": len(head)}


def _preference(record: dict[str, Any], f: dict[str, str], r: dict[str, str]) -> dict[str, Any]:
    sides = {}
    for side in ("chosen", "rejected"):
        sides[side] = _prompt_completion(record, {**f, "completion": f[side]}, r)
    return sides


def _unpaired(record: dict[str, Any], f: dict[str, str], r: dict[str, str]) -> dict[str, Any]:
    label = _field(record, f["label"])
    if not isinstance(label, bool):
        raise RecordError(f"`{f['label']}` is {label!r} ({type(label).__name__}), not a boolean (true: a desirable completion)")
    if "messages" in f:  # the whole conversation in one list, its last message the completion (LLaMA-Factory's KTO data)
        turns = _turns(_field(record, f["messages"]), f["messages"], f, r)
        if len(turns) < 2 or turns[-1]["role"] != "assistant":
            raise RecordError(f"`{f['messages']}` must end with the assistant's completion, after at least one message of prompt")
        return {"messages": turns, "completion_from": len(turns) - 1, "label": label}
    return {**_prompt_completion(record, f, r), "label": label}


_READERS: dict[str, Callable[[dict[str, Any], dict[str, str], dict[str, str]], dict[str, Any]]] = {
    "text": _text,
    "messages": _messages,
    "sharegpt": _messages,
    "alpaca": _alpaca,
    "prompt_completion": _prompt_completion,
    "preference": _preference,
    "unpaired_preference": _unpaired,
}


def _field(record: dict[str, Any], name: str) -> Any:
    if name not in record or record[name] is None:
        raise RecordError(f"the record has no `{name}`")
    return record[name]


def _string(record: dict[str, Any], name: str) -> str:
    value = _field(record, name)
    if not isinstance(value, str):
        raise RecordError(f"`{name}` is {type(value).__name__}, not a string")
    return value


def _number(record: dict[str, Any], name: str) -> float:
    value = _field(record, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"`{name}` is {value!r} ({type(value).__name__}), not a number")
    if not math.isfinite(value):
        raise RecordError(f"`{name}` is {value!r}, not a finite number")
    return float(value)


def _optional_string(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError(f"`{name}` is {type(value).__name__}, not a string")
    return value


def _turns(value: Any, where: str, f: dict[str, str], r: dict[str, str]) -> list[dict[str, str]]:
    if isinstance(value, dict) and f["role"] in value:  # one message: LLaMA-Factory's ranking answers
        value = [value]
    if not isinstance(value, list) or not value:
        raise RecordError(f"`{where}` is not a non-empty list of messages (or one message)")
    turns = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise RecordError(f"`{where}[{i}]` is {type(message).__name__}, not a message")
        if f["role"] not in message:
            raise RecordError(f"`{where}[{i}]` has no `{f['role']}`")
        name = message[f["role"]]
        role = r.get(name, name) if isinstance(name, str) else name
        if role not in ROLES:
            known = sorted(set(ROLES) | set(r))
            raise RecordError(
                f"`{where}[{i}].{f['role']}` is {name!r}, not a known role ({', '.join(map(repr, known))}; "
                "map other names with the source's roles)"
            )
        content = message.get(f["content"])
        if not isinstance(content, str):
            got = "missing" if content is None else type(content).__name__
            raise RecordError(f"`{where}[{i}].{f['content']}` is {got}, not a string")
        turns.append({"role": role, "content": content})
    return turns


def _needs_assistant(messages: list[dict[str, str]], where: str) -> None:
    if not any(m["role"] == "assistant" for m in messages):
        raise RecordError(f"`{where}` has no assistant turn: nothing to learn from")


def preference_kind(sources: list[dict[str, Any]]) -> str | None:
    """``"preference"`` or ``"unpaired_preference"`` when the sources' records are preference data, else None."""
    kinds = {s.get("records") for s in sources} & set(PREFERENCE)
    return kinds.pop() if kinds else None


def has_examples(sources: list[dict[str, Any]]) -> bool:
    """Whether a stage's sources make every document an example: some source's records are neither text nor token ids."""
    return any((s.get("records") or "text") not in ("text", "tokens") for s in sources)


def text_view(example: dict[str, Any]) -> str:
    """The text the data filters see of an example: its contents, one paragraph each."""
    if "text" in example:
        return example["text"]
    if "chosen" in example:  # the prompt once, then both completions
        chosen, rejected = text_view(example["chosen"]), text_view(example["rejected"])
        prefix = len(os.path.commonprefix([chosen, rejected]))
        return chosen + "\n\n" + rejected[prefix:]
    if "prompt" in example:
        return example["prompt"] + "\n\n" + example["completion"]
    return "\n\n".join(m["content"] for m in example["messages"])


def fields_needed(format: str, fields: dict[str, str] | None = None, prompt_format: str | list[str] | None = None) -> list[str]:
    """The record keys (columns) a format reads, after renaming: what a columnar reader must load (with a
    ``prompt_format``, its fields in place of the prompt's)."""
    f = {**DEFAULT_FIELDS[format], **(fields or {})}
    skip = {"role", "content"} | ({"prompt"} if prompt_format is not None else set())  # keys inside each message, not columns
    names = [v for k, v in f.items() if k not in skip]
    if prompt_format is not None:
        names += prompt_fields(prompt_format)
    return list(dict.fromkeys(names))
