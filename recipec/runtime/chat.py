"""Examples -> token ids and the supervised mask: chat templates and what the loss sees.

``tokenize_example`` turns one example of ``formats.to_example`` into ``input_ids`` and a
``mask`` (1 where the loss sees the token). The rules:

* Conversations are rendered with the chat template (the tokenizer's own, or the recipe's).
  Supervised spans come from the template's ``{% generation %}`` markers when it has them
  (transformers' ``return_assistant_tokens_mask``); otherwise from rendering the
  conversation prefix by prefix: the tokens of an assistant turn are those between the
  render of the turns before it with the generation prompt and the render up to and
  including it. Each of those renders must tokenize to a prefix of the whole; a template
  for which neither works raises :class:`TemplateError`: the mask is never silently "all".
* ``train_on``: ``assistant`` (every assistant turn), ``last_assistant``, ``completion``
  (the completion side of prompt/completion data) or ``all`` (every token).
* The token that closes a supervised turn (end-of-turn or EOS) is supervised: when a
  template's markers stop just before it, the span is extended by that one token; a
  template that closes assistant turns with no special token at all raises
  :class:`TemplateError` (the model would never learn to stop).
* Exactly one BOS: a tokenizer that adds BOS to what it encodes gets it once, whether or
  not the template writes it too; a tokenizer that adds none gets none.
* Plain prompt/completion strings (no chat template) are the prompt's tokens, then the
  completion's, then EOS; text documents are their tokens then EOS.

``fit_length`` applies a maximum length (truncate or drop) and drops what is left with no
supervised token, giving the reason so the stage can count it. ``fit_turns`` is the third
way to truncate (``truncate_turns``): each turn's prompt and answer are cut in proportion to
their lengths, turn by turn, by :func:`infer_seqlen` (LLaMA-Factory's rule for its
``cutoff_len``).

``tokenize_preference`` tokenizes a preference pair (each side a prompt/completion example,
trained on its completion) into one row of two segments, or a KTO example into one, with
the bits of :mod:`.preference` in the mask; each side is fitted to the maximum length on
its own (``truncate_turns``: the prompt cut once for both sides, and both answers to one
length, by :func:`infer_seqlen`).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

TRAIN_ON = ("assistant", "last_assistant", "completion", "all")
OVERFLOW = ("truncate", "truncate_turns", "drop")

_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")

PROBE = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say yes."},
    {"role": "assistant", "content": "Yes."},
    {"role": "user", "content": "Say no."},
    {"role": "assistant", "content": "No."},
]
"""A conversation every chat template must render and mask (checked before any data is read)."""


class TemplateError(ValueError):
    """A chat template that cannot render or mask a conversation."""


def has_generation_markers(template: str) -> bool:
    """Whether a chat template marks assistant output with ``{% generation %}``."""
    return bool(_GENERATION.search(template))


def resolve_template(tokenizer: Any, chat_template: str | None) -> str:
    """The template to render with: the recipe's, else the tokenizer's own.

    Raises:
        TemplateError: neither exists.
    """
    template = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one
        template = template.get("default")
    if not template:
        raise TemplateError(
            "the tokenizer has no chat template; set the source's chat_template to a .jinja file or a template string"
        )
    return template


def tokenize_example(
    tokenizer: Any, example: dict[str, Any], *, train_on: str, chat_template: str | None = None
) -> tuple[list[int], list[int]]:
    """Token ids and the supervised mask of one example.

    Args:
        tokenizer: a transformers tokenizer.
        example: ``formats.to_example``'s output.
        train_on: one of :data:`TRAIN_ON`.
        chat_template: the template text; None for the tokenizer's own (conversations only).

    Returns:
        ``(input_ids, mask)`` of equal length; ``mask[i]`` is 1 where the loss sees token i.

    Raises:
        TemplateError: the template fails to render or to mask the conversation.
        ValueError: ``train_on`` does not fit the example (``completion`` without a completion).
    """
    ids, mask, _ = tokenize_turns(tokenizer, example, train_on=train_on, chat_template=chat_template)
    return ids, mask


def tokenize_turns(
    tokenizer: Any, example: dict[str, Any], *, train_on: str, chat_template: str | None = None
) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """:func:`tokenize_example`'s ids and mask, and the ``(start, end)`` of every answer in them.

    The answers are the assistant turns of a conversation (each with its closing token,
    whether or not ``train_on`` supervises it), the completion of plain prompt/completion
    text, and the whole of a text document: what :func:`fit_turns` cuts in proportion to
    the prompt before it.
    """
    if train_on not in TRAIN_ON:
        raise ValueError(f"unknown train_on {train_on!r}; one of {', '.join(TRAIN_ON)}")
    if "text" in example:
        ids = _encode(tokenizer, example["text"]) + _eos(tokenizer)
        return _with_bos(tokenizer, ids, [1] * len(ids), [(0, len(ids))])
    if "prompt" in example:
        prompt = _encode(tokenizer, example["prompt"])
        completion = _encode(tokenizer, example["completion"]) + _eos(tokenizer)
        seen = 1 if train_on == "all" else 0
        answer = [(len(prompt), len(prompt) + len(completion))]
        return _with_bos(tokenizer, prompt + completion, [seen] * len(prompt) + [1] * len(completion), answer)

    messages = example["messages"]
    template = resolve_template(tokenizer, chat_template)
    ids, spans = _assistant_spans(tokenizer, template, messages)
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if train_on == "all":
        mask = [1] * len(ids)
    else:
        if train_on == "last_assistant":
            chosen = [spans[-1]]
        elif train_on == "completion":
            first = example.get("completion_from")
            if first is None:
                raise ValueError('train_on = "completion" needs prompt/completion data')
            chosen = [span for span, turn in zip(spans, turns) if turn >= first]
        else:
            chosen = spans
        mask = [0] * len(ids)
        for start, end in chosen:
            mask[start:end] = [1] * (end - start)
    return _with_bos(tokenizer, ids, mask, spans)


def fit_length(
    ids: list[int], mask: list[int], max_length: int, overflow: str
) -> tuple[list[int], list[int], str | None]:
    """Apply the maximum length: ``(ids, mask, None)`` to keep, or ``([], [], reason)`` to drop.

    Reasons: ``too_long`` (overflow "drop"), ``no_supervised_token`` (nothing left for the
    loss, after truncation or from the start).
    """
    if overflow not in OVERFLOW:
        raise ValueError(f"unknown overflow {overflow!r}; one of {', '.join(OVERFLOW)}")
    if len(ids) > max_length:  # "truncate_turns" has cut the turns already (fit_turns)
        if overflow == "drop":
            return [], [], "too_long"
        ids, mask = ids[:max_length], mask[:max_length]
    if not any(mask[1:]):  # the first token has no prediction: a label needs a token before it
        return [], [], "no_supervised_token"
    return ids, mask, None


def infer_seqlen(source: int, target: int, budget: int) -> tuple[int, int]:
    """How many tokens of a prompt (``source``) and its answer (``target``) fit ``budget``.

    LLaMA-Factory's rule (``infer_seqlen``, for its ``cutoff_len``): an answer shorter than
    half the budget is kept whole and the prompt cut; else a prompt shorter than half is kept
    whole and the answer cut; else both are cut in proportion to their lengths (the answer's
    share rounded down). Returns ``(prompt tokens kept, answer tokens kept)``.
    """
    if target * 2 < budget:
        most = budget
    elif source * 2 < budget:
        most = budget - source
    else:
        most = int(budget * (target / (source + target)))
    kept_target = min(most, target)
    return min(max(budget - kept_target, 0), source), kept_target


def fit_turns(
    ids: list[int], mask: list[int], answers: list[tuple[int, int]], max_length: int, *, last_first: bool = False
) -> tuple[list[int], list[int]]:
    """Cut an example to ``max_length`` turn by turn (overflow ``truncate_turns``).

    The example is divided into (prompt, answer) pairs at ``answers`` (as
    :func:`tokenize_turns` gives them): each answer with every token since the previous one
    as its prompt, and the tokens after the last answer (a template's closing newline) with
    that answer. Pairs are taken in order (``last_first``: from the last, so the last answer
    is the one kept whole, for ``train_on = "last_assistant"``), each given what is left of
    ``max_length``, of which :func:`infer_seqlen` keeps the start of its prompt and the start
    of its answer; the turns after the budget is spent are dropped. An example that fits is
    returned as it is.
    """
    if len(ids) <= max_length:
        return ids, mask
    pairs, prev = [], 0
    for start, end in answers:
        pairs.append([prev, start, end])
        prev = end
    if not pairs:
        pairs.append([0, 0, len(ids)])
    pairs[-1][2] = len(ids)
    order = pairs[::-1] if last_first else pairs
    kept: list[tuple[int, int, int, int]] = []
    total = 0
    for a, b, c in order:
        if total >= max_length:
            break
        source, target = infer_seqlen(b - a, c - b, max_length - total)
        kept.append((a, a + source, b, b + target))
        total += source + target
    if last_first:
        kept.reverse()
    out_ids: list[int] = []
    out_mask: list[int] = []
    for a, a_end, b, b_end in kept:
        out_ids += ids[a:a_end] + ids[b:b_end]
        out_mask += mask[a:a_end] + mask[b:b_end]
    return out_ids, out_mask


def fit_example(
    tokenizer: Any, example: dict[str, Any], *, train_on: str, max_length: int, overflow: str, chat_template: str | None = None
) -> tuple[list[int], list[int], str | None]:
    """One example tokenized and fitted to ``max_length``: ``(ids, mask, reason)``.

    ``reason`` is None, ``"truncated"`` (kept, shortened) or why :func:`fit_length` drops it.
    """
    ids, mask, answers = tokenize_turns(tokenizer, example, train_on=train_on, chat_template=chat_template)
    cut = len(ids) > max_length
    if overflow == "truncate_turns":
        ids, mask = fit_turns(ids, mask, answers, max_length, last_first=train_on == "last_assistant")
    ids, mask, reason = fit_length(ids, mask, max_length, overflow)
    return ids, mask, "truncated" if reason is None and cut else reason


def tokenize_preference(
    tokenizer: Any, example: dict[str, Any], *, max_length: int, overflow: str, chat_template: str | None = None
) -> tuple[list[int], list[int], str | None]:
    """A preference pair or KTO example as one stored row: ``(ids, mask bits, reason)``.

    ``reason`` is None, ``"truncated"`` (kept, a side was cut to ``max_length``) or why the
    example is dropped, with no tokens (counted by the stage): those of :func:`fit_length`
    for either side, and ``identical_sides`` for a pair whose chosen and rejected tokens are
    the same (no preference to learn).
    """
    from .preference import pair_row, unpaired_row

    parts = ("chosen", "rejected") if "chosen" in example else (None,)
    tokenized = [
        tokenize_example(tokenizer, example[part] if part else example, train_on="completion", chat_template=chat_template)
        for part in parts
    ]
    cut = any(len(ids) > max_length for ids, _ in tokenized)
    if overflow == "truncate_turns" and cut:
        # LLaMA-Factory's pairwise and KTO rule: one cut of the prompt and one length for both answers
        starts = [mask.index(1) if 1 in mask else len(ids) for ids, mask in tokenized]
        source, target = infer_seqlen(max(starts), max(len(ids) - p for (ids, _), p in zip(tokenized, starts)), max_length)
        tokenized = [
            (ids[: min(source, p)] + ids[p : p + target], mask[: min(source, p)] + mask[p : p + target])
            for (ids, mask), p in zip(tokenized, starts)
        ]
    sides = []
    for ids, mask in tokenized:
        ids, mask, reason = fit_length(ids, mask, max_length, overflow)
        if reason:
            return [], [], reason
        sides.append((ids, mask))
    if len(sides) == 1:
        row = unpaired_row(*sides[0], bool(example["label"]))
    elif sides[0][0] == sides[1][0]:
        return [], [], "identical_sides"
    else:
        row = pair_row(*sides)
    return row["input_ids"], row["mask"], "truncated" if cut else None


def check_template(tokenizer: Any, chat_template: str | None) -> str:
    """Render and mask :data:`PROBE` with the template; return how its masks are found.

    Returns:
        ``"generation markers"`` or ``"prefix rendering"``.

    Raises:
        TemplateError: the template cannot render or mask the probe.
    """
    template = resolve_template(tokenizer, chat_template)
    _assistant_spans(tokenizer, template, PROBE)
    return "generation markers" if has_generation_markers(template) else "prefix rendering"


# --------------------------------------------------------------------------- helpers


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _eos(tokenizer: Any) -> list[int]:
    if tokenizer.eos_token_id is None:
        raise TemplateError("the tokenizer has no EOS token to end a completion with")
    return [tokenizer.eos_token_id]


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS in front of what it encodes."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def _with_bos(
    tokenizer: Any, ids: list[int], mask: list[int], answers: list[tuple[int, int]]
) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Exactly one BOS where the tokenizer adds one, none where it adds none; ``answers`` moved with the ids."""
    bos = tokenizer.bos_token_id
    if bos is None or bos == tokenizer.eos_token_id:
        return ids, mask, answers
    shift = 0
    while len(ids) > 1 and ids[0] == bos and ids[1] == bos:
        ids, mask, shift = ids[1:], mask[1:], shift - 1
    if _adds_bos(tokenizer) and (not ids or ids[0] != bos):
        ids, mask, shift = [bos] + ids, [0] + mask, shift + 1
    return ids, mask, [(max(0, s + shift), max(0, e + shift)) for s, e in answers]


def _render(tokenizer: Any, template: str, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as exc:  # jinja raises anything: TemplateError, TypeError, its own exception()
        raise TemplateError(f"the chat template failed to render: {type(exc).__name__}: {exc}") from exc


def closing_ids(tokenizer: Any) -> set[int]:
    """Tokens that can end a turn: EOS and every special or added control token."""
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, t in tokenizer.added_tokens_decoder.items() if t.special)
    return ids


def _assistant_spans(
    tokenizer: Any, template: str, messages: list[dict[str, str]]
) -> tuple[list[int], list[tuple[int, int]]]:
    """The conversation's ids and one ``(start, end)`` span per assistant turn, its closing token included."""
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not turns:
        raise TemplateError("the conversation has no assistant turn")
    full = _render(tokenizer, template, messages, False)
    ids = _encode(tokenizer, full)
    closing = closing_ids(tokenizer)
    if has_generation_markers(template):
        try:
            out = tokenizer.apply_chat_template(
                messages, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
            )
        except Exception as exc:
            raise TemplateError(f"the chat template failed to render: {type(exc).__name__}: {exc}") from exc
        if list(out["input_ids"]) != ids:
            raise TemplateError("the chat template renders differently with and without the assistant mask")
        spans = _runs(out["assistant_masks"])
        if len(spans) != len(turns):
            raise TemplateError(
                f"the template's {{% generation %}} markers cover {len(spans)} span(s) "
                f"for {len(turns)} assistant turn(s)"
            )
        # a generation block that stops before the end-of-turn token: that token is supervised too
        spans = [
            (s, e + 1) if e < len(ids) and ids[e] in closing and not closing.intersection(ids[s:e]) else (s, e)
            for s, e in spans
        ]
    else:
        spans = []
        for i in turns:
            before = _render(tokenizer, template, messages[:i], True) if i else ""
            upto = _render(tokenizer, template, messages[: i + 1], False)
            start_ids, end_ids = _encode(tokenizer, before), _encode(tokenizer, upto)
            if not full.startswith(upto) or ids[: len(end_ids)] != end_ids or end_ids[: len(start_ids)] != start_ids:
                raise TemplateError(
                    f"the chat template has no {{% generation %}} markers and rendering the conversation turn by "
                    f"turn does not give prefixes of the whole (turn {i}), so the assistant tokens cannot be "
                    "found; use a template with {% generation %} markers"
                )
            if len(end_ids) <= len(start_ids):
                raise TemplateError(f"assistant turn {i} renders to no tokens")
            spans.append((len(start_ids), len(end_ids)))
    for (start, end), i in zip(spans, turns):
        if not any(t in closing for t in ids[start:end]):
            raise TemplateError(
                f"the chat template closes assistant turn {i} with no end-of-turn or EOS token, so the model "
                "would never learn to stop; end each assistant turn with one (e.g. {{ eos_token }})"
            )
    return ids, spans


def _runs(mask: list[int]) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of ones."""
    runs, start = [], None
    for i, m in enumerate(list(mask) + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


def held_out_prompts(rows: Any, n: int) -> list[list[int]]:
    """The first ``n`` examples of the data stage's rows, each cut before its first supervised token.

    Rows are packed or single examples (``input_ids``, ``mask``, ``position_ids``); a packed
    row holds several, each starting where ``position_ids`` is 0.
    """
    prompts: list[list[int]] = []
    for row in rows:
        ids, mask, positions = (list(map(int, row[k])) for k in ("input_ids", "mask", "position_ids"))
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(ids)]
        for a, b in zip(starts, starts[1:]):
            if 1 in mask[a:b] and len(prompts) < n:
                prompts.append(ids[a : a + mask[a:b].index(1)])
        if len(prompts) >= n:
            break
    return prompts


def generate(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int | None,
    device: Any,
    synced: bool = False,
) -> list[tuple[list[int], bool]]:
    """Greedy continuations of each prompt, one prompt at a time: ``(new ids, ended)`` per prompt.

    ``ended`` tells whether the last new token is one of ``stop_ids`` (the model closed its
    turn within ``max_new_tokens``). ``synced``: the model is sharded over the processes
    (ZeRO-3, FSDP, tensor parallelism), so every process must run the same generation, each
    forward gathering what it needs from the others, and the processes step together until
    the last of them has stopped (transformers' ``synced_gpus``; a process that has stopped
    runs forwards without adding tokens). Unsharded, the caller runs it on one process.
    """
    import torch

    out = []
    for prompt in prompts:
        ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
        new = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=list(stop_ids),
            pad_token_id=pad_id,
            synced_gpus=synced,
        )[0, len(prompt) :].tolist()
        out.append((new, bool(new) and new[-1] in stop_ids))
    return out
