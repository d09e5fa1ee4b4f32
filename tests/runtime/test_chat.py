"""Conversations -> ids and masks: every assistant token and each end-of-turn supervised,
nothing else; one BOS; templates that cannot be masked are errors, never "train on all"."""

import pytest

from recipec.runtime.chat import (
    TemplateError,
    check_template,
    fit_length,
    has_generation_markers,
    tokenize_example,
)
from recipec.runtime.formats import to_example

from .chat_fixtures import CHATML, CHATML_MARKED, CONVERSATION, IM_END, IM_START, chat_tokenizer


@pytest.fixture(scope="module")
def tok():
    return chat_tokenizer(CHATML)


@pytest.fixture(scope="module")
def tok_bos():
    return chat_tokenizer(CHATML, bos=True)


def supervised_text(tok, ids, mask):
    """The supervised tokens as text, one string per contiguous span."""
    spans, cur = [], []
    for t, m in zip(ids, mask):
        if m:
            cur.append(t)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    if cur:
        spans.append(tok.decode(cur))
    return spans


@pytest.mark.parametrize("template", [CHATML, CHATML_MARKED], ids=["prefix", "markers"])
def test_every_assistant_token_and_end_of_turn_supervised_nothing_else(tok, template):
    example = {"messages": CONVERSATION, "completion_from": None}
    ids, mask = tokenize_example(tok, example, train_on="assistant", chat_template=template)
    assert len(ids) == len(mask)
    assert supervised_text(tok, ids, mask) == [f"Blue.{IM_END}\n", f"Green, mostly.{IM_END}\n"]
    end = tok.convert_tokens_to_ids(IM_END)
    ends = [i for i, t in enumerate(ids) if t == end]
    # system, user, assistant, user, assistant: the two assistant turns' ends are supervised, the rest not
    assert [mask[i] for i in ends] == [0, 0, 1, 0, 1]
    # nothing of the system or user turns, nor any turn header
    unsupervised = tok.decode([t for t, m in zip(ids, mask) if not m])
    assert unsupervised.count(IM_START) == 5 and "sky" in unsupervised and "Blue" not in unsupervised


def test_markers_and_prefix_rendering_agree_with_transformers(tok):
    """The prefix-rendering masks equal transformers' return_assistant_tokens_mask on the marked template."""
    oracle = tok.apply_chat_template(
        CONVERSATION, chat_template=CHATML_MARKED, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    example = {"messages": CONVERSATION, "completion_from": None}
    ids_p, mask_p = tokenize_example(tok, example, train_on="assistant", chat_template=CHATML)
    ids_m, mask_m = tokenize_example(tok, example, train_on="assistant", chat_template=CHATML_MARKED)
    assert ids_p == ids_m == list(oracle["input_ids"])
    assert mask_p == mask_m == list(oracle["assistant_masks"])


@pytest.mark.parametrize("template", [CHATML, CHATML_MARKED], ids=["prefix", "markers"])
def test_last_assistant_and_all(tok, template):
    example = {"messages": CONVERSATION, "completion_from": None}
    ids, mask = tokenize_example(tok, example, train_on="last_assistant", chat_template=template)
    assert supervised_text(tok, ids, mask) == [f"Green, mostly.{IM_END}\n"]
    ids, mask = tokenize_example(tok, example, train_on="all", chat_template=template)
    assert all(mask)


@pytest.mark.parametrize(
    "record, format, expected",
    [
        ({"messages": CONVERSATION}, "messages", ["Blue.", "Green, mostly."]),
        (
            {"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]},
            "sharegpt",
            ["Hello."],
        ),
        ({"instruction": "Add.", "input": "2 and 3", "output": "5", "system": "Be exact."}, "alpaca", ["5"]),
        ({"prompt": CONVERSATION[:4], "completion": CONVERSATION[4:]}, "prompt_completion", ["Blue.", "Green, mostly."]),
    ],
)
@pytest.mark.parametrize("template", [CHATML, CHATML_MARKED], ids=["prefix", "markers"])
def test_each_conversational_format(tok, record, format, expected, template):
    example = to_example(record, format)
    ids, mask = tokenize_example(tok, example, train_on="assistant", chat_template=template)
    assert supervised_text(tok, ids, mask) == [f"{e}{IM_END}\n" for e in expected]


@pytest.mark.parametrize("template", [CHATML, CHATML_MARKED], ids=["prefix", "markers"])
def test_completion_supervises_the_completion_side_only(tok, template):
    example = to_example({"prompt": CONVERSATION[:3], "completion": CONVERSATION[3:]}, "prompt_completion")
    ids, mask = tokenize_example(tok, example, train_on="completion", chat_template=template)
    assert supervised_text(tok, ids, mask) == [f"Green, mostly.{IM_END}\n"]
    with pytest.raises(ValueError, match="needs prompt/completion data"):
        tokenize_example(tok, {"messages": CONVERSATION, "completion_from": None}, train_on="completion")


def test_plain_prompt_completion_ends_with_eos(tok):
    ids, mask = tokenize_example(tok, {"prompt": "2+2=", "completion": " 4"}, train_on="completion")
    assert ids[-1] == tok.eos_token_id and mask[-1] == 1
    assert tok.decode([t for t, m in zip(ids, mask) if m]) == " 4" + tok.eos_token
    assert tok.decode([t for t, m in zip(ids, mask) if not m]) == "2+2="


def test_text_is_all_tokens_then_eos(tok):
    ids, mask = tokenize_example(tok, {"text": "some words"}, train_on="all")
    assert ids[-1] == tok.eos_token_id and all(mask)


def test_exactly_one_bos(tok_bos):
    bos = tok_bos.bos_token_id
    example = {"messages": CONVERSATION, "completion_from": None}
    ids, mask = tokenize_example(tok_bos, example, train_on="assistant", chat_template=CHATML)
    assert ids[0] == bos and ids.count(bos) == 1 and mask[0] == 0
    # a template that writes BOS itself: still one
    with_bos = "{{ bos_token }}" + CHATML
    ids2, mask2 = tokenize_example(tok_bos, example, train_on="assistant", chat_template=with_bos)
    assert ids2 == ids and mask2 == mask
    # twice (a template writing it, and data starting with it): one
    twice = "{{ bos_token }}{{ bos_token }}" + CHATML
    ids3, _ = tokenize_example(tok_bos, example, train_on="assistant", chat_template=twice)
    assert ids3 == ids
    ids4, _ = tokenize_example(tok_bos, {"prompt": "2+2=", "completion": " 4"}, train_on="completion")
    assert ids4[0] == bos and ids4.count(bos) == 1


def test_a_tokenizer_without_bos_gets_none(tok):
    ids, _ = tokenize_example(tok, {"messages": CONVERSATION, "completion_from": None}, train_on="assistant")
    assert ids[0] == tok.convert_tokens_to_ids(IM_START)


def test_markers_that_stop_before_the_end_of_turn_still_supervise_it(tok):
    short = CHATML_MARKED.replace(
        "{% generation %}{{ m['content'] + '<|im_end|>\n' }}{% endgeneration %}",
        "{% generation %}{{ m['content'] }}{% endgeneration %}{{ '<|im_end|>\n' }}",
    )
    assert has_generation_markers(short)
    ids, mask = tokenize_example(tok, {"messages": CONVERSATION, "completion_from": None}, train_on="assistant", chat_template=short)
    assert supervised_text(tok, ids, mask) == [f"Blue.{IM_END}", f"Green, mostly.{IM_END}"]


def test_a_template_that_rewrites_history_cannot_be_masked(tok):
    # numbering the turns by the conversation's length changes every earlier turn's text
    rewriting = CHATML.replace("m['role'] + '\n'", "m['role'] + ' of ' + (messages|length|string) + '\n'")
    with pytest.raises(TemplateError, match="do(es)? not give prefixes"):
        tokenize_example(tok, {"messages": CONVERSATION, "completion_from": None}, train_on="assistant", chat_template=rewriting)
    with pytest.raises(TemplateError):
        check_template(tok, rewriting)


def test_markers_on_the_wrong_turns_are_an_error(tok):
    none_marked = CHATML_MARKED.replace("{% generation %}", "").replace("{% endgeneration %}", "") + "{% generation %}{% endgeneration %}"
    with pytest.raises(TemplateError, match=r"cover 0 span\(s\) for 2 assistant turn\(s\)"):
        tokenize_example(tok, {"messages": CONVERSATION, "completion_from": None}, train_on="assistant", chat_template=none_marked)


def test_a_template_without_end_of_turn_is_an_error(tok):
    plain = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    with pytest.raises(TemplateError, match="never learn to stop"):
        tokenize_example(tok, {"messages": CONVERSATION, "completion_from": None}, train_on="assistant", chat_template=plain)
    fixed = (
        "{% for m in messages %}{{ m['role'] + ':\n' + m['content'] }}"
        "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant:\n' }}{% endif %}"
    )
    assert check_template(tok, fixed) == "prefix rendering"


def test_no_template_and_a_raising_template(tok):
    bare = chat_tokenizer(CHATML)
    bare.chat_template = None
    with pytest.raises(TemplateError, match="has no chat template"):
        check_template(bare, None)
    with pytest.raises(TemplateError, match="failed to render: .*boom"):
        check_template(tok, "{{ raise_exception('boom') }}")
    assert check_template(tok, None) == "prefix rendering"
    assert check_template(tok, CHATML_MARKED) == "generation markers"


def test_fit_length_truncates_and_drops_what_has_no_supervised_token():
    ids, mask = list(range(10)), [0] * 6 + [1] * 4
    assert fit_length(ids, mask, 20, "truncate") == (ids, mask, None)
    assert fit_length(ids, mask, 8, "truncate") == (ids[:8], mask[:8], None)
    assert fit_length(ids, mask, 6, "truncate") == ([], [], "no_supervised_token")
    assert fit_length(ids, mask, 8, "drop") == ([], [], "too_long")
    # a supervised first token has nothing to predict it: it does not count
    assert fit_length([1, 2, 3], [1, 0, 0], 3, "truncate")[2] == "no_supervised_token"


def test_held_out_prompts_cut_each_example_before_its_answer():
    from recipec.runtime.chat import held_out_prompts

    rows = [
        {"input_ids": [1, 2, 3, 4, 5, 6, 7], "mask": [0, 0, 1, 0, 0, 0, 1], "position_ids": [0, 1, 2, 0, 1, 2, 3]},
        {"input_ids": [8, 9], "mask": [0, 1], "position_ids": [0, 1]},
    ]
    assert held_out_prompts(rows, 5) == [[1, 2], [4, 5, 6], [8]]
    assert held_out_prompts(rows, 2) == [[1, 2], [4, 5, 6]]


def test_a_pair_of_strings_as_chat_is_rendered_as_axolotls_bradley_terry_renders_it():
    """axolotl's bradley_terry.chat_template renders [system], user `input`, assistant `chosen` (or `rejected`) with
    the chat template: with as_chat each side's ids are the tokenizer's apply_chat_template of those messages, and
    the loss sees the assistant's turn only."""
    from recipec.runtime.chat import tokenize_preference
    from recipec.runtime.preference import REJECTED, SUPERVISED

    tok = chat_tokenizer(CHATML_MARKED)
    record = {"input": "What is 2+2?", "chosen": "4", "rejected": "5", "system": "Answer with a number."}
    example = to_example(record, "preference", {"prompt": "input"}, as_chat=True)
    ids, mask, reason = tokenize_preference(tok, example, max_length=128, overflow="drop")
    assert reason is None
    for side, rejected in (("chosen", False), ("rejected", True)):
        messages = [{"role": "system", "content": record["system"]}, {"role": "user", "content": record["input"]}, {"role": "assistant", "content": record[side]}]
        want = list(tok.apply_chat_template(messages, tokenize=True, return_dict=False))
        got = [i for i, m in zip(ids, mask) if bool(m & REJECTED) == rejected]
        assert got == want, side
        seen = [i for i, m in zip(ids, mask) if bool(m & REJECTED) == rejected and m & SUPERVISED]
        assert tok.decode(seen).startswith(record[side]) and IM_START not in tok.decode(seen), (side, tok.decode(seen))
