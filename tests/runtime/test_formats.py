"""Record formats -> examples: each format, renamed fields and roles, and every bad record named."""

import pytest

from recipec.runtime.formats import FORMATS, RecordError, to_example

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi?"},
    {"role": "assistant", "content": "Hello."},
]


def test_text():
    assert to_example({"text": "a b"}, "text") == {"text": "a b"}
    assert to_example({"body": "a b"}, "text", {"text": "body"}) == {"text": "a b"}


def test_messages_multi_turn_with_system():
    record = {"messages": MESSAGES + [{"role": "user", "content": "More?"}, {"role": "assistant", "content": "No."}]}
    example = to_example(record, "messages")
    assert example == {"messages": record["messages"], "completion_from": None}


def test_messages_renamed_fields_and_roles():
    record = {"dialog": [{"speaker": "person", "text": "Hi?"}, {"speaker": "bot", "text": "Hello."}]}
    example = to_example(
        record,
        "messages",
        {"messages": "dialog", "role": "speaker", "content": "text"},
        {"person": "user", "bot": "assistant"},
    )
    assert example["messages"] == [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]


def test_sharegpt_default_role_map():
    record = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hi?"},
            {"from": "gpt", "value": "Hello."},
        ]
    }
    assert to_example(record, "sharegpt")["messages"] == MESSAGES


def test_alpaca_with_and_without_input_and_system():
    record = {"instruction": "Add.", "input": "2 and 3", "output": "5", "system": "Be exact."}
    assert to_example(record, "alpaca")["messages"] == [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "Add.\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]
    bare = to_example({"instruction": "Say hi.", "input": "", "output": "hi"}, "alpaca")
    assert bare["messages"] == [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]


def test_prompt_completion_strings_and_messages():
    assert to_example({"prompt": "2+2=", "completion": "4"}, "prompt_completion") == {
        "prompt": "2+2=",
        "completion": "4",
    }
    record = {"prompt": MESSAGES[:2], "completion": [MESSAGES[2]]}
    assert to_example(record, "prompt_completion") == {"messages": MESSAGES, "completion_from": 2}


@pytest.mark.parametrize(
    "record, format, message",
    [
        ({"txt": "x"}, "text", "the record has no `text`"),
        ({"text": None}, "text", "the record has no `text`"),
        ({"text": 3}, "text", "`text` is int, not a string"),
        ({"messages": []}, "messages", "`messages` is not a non-empty list of messages"),
        ({"messages": "hi"}, "messages", "`messages` is not a non-empty list of messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages", "`messages[0].role` is 'wizard', not a known role"),
        ({"messages": [{"content": "x"}]}, "messages", "`messages[0]` has no `role`"),
        ({"messages": [{"role": "user"}]}, "messages", "`messages[0].content` is missing, not a string"),
        ({"messages": [{"role": "user", "content": ["a"]}]}, "messages", "`messages[0].content` is list, not a string"),
        ({"messages": [{"role": "user", "content": "x"}]}, "messages", "`messages` has no assistant turn"),
        ({"conversations": [{"from": "narrator", "value": "x"}]}, "sharegpt", "`conversations[0].from` is 'narrator'"),
        ({"instruction": "x"}, "alpaca", "the record has no `output`"),
        ({"instruction": "x", "output": "y", "input": 5}, "alpaca", "`input` is int, not a string"),
        ({"prompt": "x"}, "prompt_completion", "the record has no `completion`"),
        ({"completion": "x"}, "prompt_completion", "the record has no `prompt`"),
        ({"prompt": "x", "completion": ""}, "prompt_completion", "`completion` is empty"),
        ({"prompt": "x", "completion": [MESSAGES[2]]}, "prompt_completion", "`prompt` is a string and the other"),
        ({"prompt": MESSAGES[:2], "completion": [MESSAGES[1]]}, "prompt_completion", "`completion` has no assistant turn"),
    ],
)
def test_bad_records_name_the_field(record, format, message):
    with pytest.raises(RecordError) as exc:
        to_example(record, format)
    assert message in str(exc.value)


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown format 'chatml'"):
        to_example({}, "chatml")
    assert set(FORMATS) == {"text", "messages", "sharegpt", "alpaca", "prompt_completion", "preference", "unpaired_preference"}


def test_preference_records_become_two_prompt_completion_sides():
    record = {"prompt": "Q?", "chosen": " yes", "rejected": " no"}
    assert to_example(record, "preference") == {
        "chosen": {"prompt": "Q?", "completion": " yes"},
        "rejected": {"prompt": "Q?", "completion": " no"},
    }
    conv = {
        "q": [{"role": "user", "content": "Hi?"}],
        "good": [{"role": "assistant", "content": "Hello."}],
        "bad": [{"role": "assistant", "content": "Bye."}],
    }
    ex = to_example(conv, "preference", {"prompt": "q", "chosen": "good", "rejected": "bad"})
    assert ex["chosen"]["messages"][-1]["content"] == "Hello." and ex["chosen"]["completion_from"] == 1
    assert ex["rejected"]["messages"][0] == {"role": "user", "content": "Hi?"}


def test_a_preference_record_carries_its_margin_when_fields_names_one():
    record = {"prompt": [{"role": "user", "content": "Q?"}], "chosen": " yes", "rejected": " no", "gap": 2, "margin": 9.0}
    record["chosen"], record["rejected"] = ([{"role": "assistant", "content": t}] for t in ("yes", "no"))
    assert "margin" not in to_example(record, "preference")  # a column named margin is read only when fields names it
    ex = to_example(record, "preference", {"margin": "gap"}, system={"default": "Be brief."})
    assert ex["margin"] == 2.0 and isinstance(ex["margin"], float)
    assert ex["chosen"]["messages"][0] == {"role": "system", "content": "Be brief."}  # the sides as without it
    for bad, why in ((True, r"`gap` is True \(bool\), not a number"), ("2", r"`gap` is '2' \(str\), not a number"), (float("nan"), r"`gap` is nan, not a finite number"), (None, "the record has no `gap`")):
        with pytest.raises(RecordError, match=why):
            to_example({**record, "gap": bad}, "preference", {"margin": "gap"})


def test_preference_records_that_do_not_fit():
    with pytest.raises(RecordError, match="the record has no `rejected`"):
        to_example({"prompt": "Q?", "chosen": " yes"}, "preference")
    with pytest.raises(RecordError, match="`rejected` is a string and the other side a list of messages"):
        to_example({"prompt": [{"role": "user", "content": "Q?"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}, "preference")
    with pytest.raises(RecordError, match=r"`label` is 1 \(int\), not a boolean"):
        to_example({"prompt": "Q?", "completion": " yes", "label": 1}, "unpaired_preference")
    assert to_example({"prompt": "Q?", "completion": " yes", "label": False}, "unpaired_preference")["label"] is False


def test_llama_factory_ranking_and_kto_records():
    """LLaMA-Factory's sharegpt ranking data: the chosen and rejected answers are single messages; its KTO
    data: one message list whose last message is the completion (`fields.messages`)."""
    sharegpt = {"role": "from", "content": "value"}
    roles = {"human": "user", "gpt": "assistant"}
    pair = {
        "conversations": [{"from": "human", "value": "Hi?"}],
        "chosen": {"from": "gpt", "value": "Hello."},
        "rejected": {"from": "gpt", "value": "Go away."},
    }
    ex = to_example(pair, "preference", {"prompt": "conversations", **sharegpt}, roles)
    assert ex["chosen"] == {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}], "completion_from": 1}
    assert ex["rejected"]["messages"][-1] == {"role": "assistant", "content": "Go away."}
    as_lists = {**pair, "chosen": [pair["chosen"]], "rejected": [pair["rejected"]]}
    assert to_example(as_lists, "preference", {"prompt": "conversations", **sharegpt}, roles) == ex
    with pytest.raises(RecordError, match=r"`chosen` is not a non-empty list of messages \(or one message\)"):
        to_example({**pair, "chosen": {"text": "Hello."}}, "preference", {"prompt": "conversations", **sharegpt}, roles)

    kto = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}], "label": True}
    ex = to_example(kto, "unpaired_preference", {"messages": "messages"})
    assert ex == {"messages": kto["messages"], "completion_from": 1, "label": True}
    split = {"prompt": kto["messages"][:1], "completion": kto["messages"][1:], "label": True}
    assert to_example(split, "unpaired_preference") == ex  # the same example as prompt and completion apart
    with pytest.raises(RecordError, match="`messages` must end with the assistant's completion"):
        to_example({**kto, "messages": kto["messages"][:1]}, "unpaired_preference", {"messages": "messages"})


def test_system_messages_are_kept_dropped_defaulted_or_replaced():
    """A source's `system`: the conversation's system messages go, come first when missing, or are
    replaced; where the completion starts moves with the messages before it."""
    chat = {"messages": [{"role": "system", "content": "own"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    bare = {"messages": chat["messages"][1:]}
    own, new = {"role": "system", "content": "own"}, {"role": "system", "content": "new"}
    user, assistant = chat["messages"][1:]
    assert to_example(chat, "messages")["messages"] == [own, user, assistant]
    assert to_example(chat, "messages", system="drop")["messages"] == [user, assistant]
    assert to_example(chat, "messages", system={"default": "new"})["messages"] == [own, user, assistant]
    assert to_example(bare, "messages", system={"default": "new"})["messages"] == [new, user, assistant]
    assert to_example(chat, "messages", system={"replace": "new"})["messages"] == [new, user, assistant]
    assert to_example(bare, "messages", system={"replace": "new"})["messages"] == [new, user, assistant]
    sharegpt = {"conversations": [{"from": "system", "value": "own"}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    assert to_example(sharegpt, "sharegpt", system="drop")["messages"] == [user, assistant]
    alpaca = {"instruction": "hi", "output": "yo", "system": "own"}
    assert to_example(alpaca, "alpaca", system={"replace": "new"})["messages"] == [new, user, assistant]
    assert to_example({"instruction": "hi", "output": "yo"}, "alpaca", system={"default": "new"})["messages"] == [new, user, assistant]

    pc = {"prompt": [own, user], "completion": [assistant]}
    assert to_example(pc, "prompt_completion")["completion_from"] == 2
    dropped = to_example(pc, "prompt_completion", system="drop")
    assert dropped["messages"] == [user, assistant] and dropped["completion_from"] == 1
    replaced = to_example({"prompt": [user], "completion": [assistant]}, "prompt_completion", system={"replace": "new"})
    assert replaced["messages"] == [new, user, assistant] and replaced["completion_from"] == 2
    pair = to_example({"prompt": [own, user], "chosen": [assistant], "rejected": [{"role": "assistant", "content": "no"}]}, "preference", system="drop")
    assert [side["messages"][0] for side in pair.values()] == [user, user] and {side["completion_from"] for side in pair.values()} == {1}
    with pytest.raises(RecordError, match="`prompt` is a string, and the source's `system` applies to lists of messages"):
        to_example({"prompt": "hi", "completion": "yo"}, "prompt_completion", system={"replace": "new"})


def _axolotl_alpaca(instruction, input, output):
    """axolotl's AlpacaPrompter, prompt_style "instruct" (src/axolotl/prompters.py, _build_result), as it is written there."""
    system_prompt = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request."
    system_no_input_prompt = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    turn_format = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    turn_no_input_format = "### Instruction:\n{instruction}\n\n### Response:\n"
    system_format = "{system}\n\n"
    if input:
        return system_format.format(system=system_prompt) + turn_format.format(instruction=instruction, input=input)
    return system_format.format(system=system_no_input_prompt) + turn_no_input_format.format(instruction=instruction)


def _litgpt_alpaca(prompt, **kwargs):
    """LitGPT's prompts.Alpaca.apply (litgpt/prompts.py), as it is written there."""
    if kwargs.get("input"):
        return (
            "Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n"
            f"### Instruction:\n{prompt}\n\n### Input:\n{kwargs['input']}\n\n### Response:\n"
        )
    return (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        f"### Instruction:\n{prompt}\n\n### Response:\n"
    )


TORCHTUNE_ALPACA = {  # torchtune's AlpacaToMessages.template (torchtune/datasets/_alpaca.py)
    "prompt_input": (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    ),
    "prompt_no_input": (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:\n"
    ),
}


@pytest.mark.parametrize("extra", ["", "2 and 3", None])
def test_alpaca_prompt_styles_write_the_tools_own_prompt(extra):
    """prompt_style "alpaca" is the prompt axolotl's `type: alpaca` and LitGPT's `prompt_style: alpaca`
    write, then the output as the completion; "alpaca_chat" the same text as the user turn, as
    torchtune's alpaca_dataset puts it."""
    record = {"instruction": "Add the numbers.", "output": "5"} | ({} if extra is None else {"input": extra})
    want = _axolotl_alpaca("Add the numbers.", extra, "5")
    assert want == _litgpt_alpaca("Add the numbers.", input=extra)
    assert want == TORCHTUNE_ALPACA["prompt_input" if extra else "prompt_no_input"].format(instruction="Add the numbers.", input=extra)
    assert to_example(record, "alpaca", prompt_style="alpaca") == {"prompt": want, "completion": "5"}
    chat = to_example(record, "alpaca", prompt_style="alpaca_chat")
    assert chat["messages"] == [{"role": "user", "content": want}, {"role": "assistant", "content": "5"}]
    own = to_example({**record, "system": "You add."}, "alpaca", prompt_style="alpaca")["prompt"]
    assert own == "You add.\n\n" + want.split("\n\n", 1)[1]  # the record's system in the preamble's place
    with pytest.raises(RecordError, match="`output` is empty"):
        to_example({**record, "output": ""}, "alpaca", prompt_style="alpaca")


def test_as_chat_makes_string_sides_a_conversation_with_the_records_system():
    """as_chat: a string prompt is the user's turn (after the record's non-empty `system`), the completion the
    assistant's; message lists, KTO labels and the source's `system` setting stay as they are."""
    record = {"input": "Q?", "chosen": "yes", "rejected": "no", "system": "Be kind."}
    ex = to_example(record, "preference", {"prompt": "input"}, as_chat=True)
    assert ex["chosen"] == {
        "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Q?"}, {"role": "assistant", "content": "yes"}],
        "completion_from": 2,
    }
    assert ex["rejected"]["messages"][-1] == {"role": "assistant", "content": "no"}
    plain = to_example({**record, "system": ""}, "preference", {"prompt": "input"}, as_chat=True)
    assert [m["role"] for m in plain["chosen"]["messages"]] == ["user", "assistant"] and plain["chosen"]["completion_from"] == 1
    assert to_example(record, "preference", {"prompt": "input"}) == {  # without it: text, the system unread
        "chosen": {"prompt": "Q?", "completion": "yes"},
        "rejected": {"prompt": "Q?", "completion": "no"},
    }
    kto = to_example({"prompt": "Q?", "completion": "yes", "label": True}, "unpaired_preference", as_chat=True)
    assert kto == {"label": True, "messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "yes"}], "completion_from": 1}
    replaced = to_example(record, "preference", {"prompt": "input"}, system={"replace": "Be terse."}, as_chat=True)
    assert replaced["chosen"]["messages"][0] == {"role": "system", "content": "Be terse."} and len(replaced["chosen"]["messages"]) == 3
    listed = {"prompt": [{"role": "user", "content": "Hi?"}], "completion": [{"role": "assistant", "content": "Hello."}]}
    assert to_example(listed, "prompt_completion", as_chat=True) == to_example(listed, "prompt_completion")


def test_input_separator_joins_an_alpaca_instruction_and_its_input():
    """LLaMA-Factory's AlpacaDatasetConverter: "\\n".join([instruction, input]) for the user turn, the input
    only when non-empty."""
    record = {"instruction": "Add.", "input": "2 and 3", "output": "5"}
    assert to_example(record, "alpaca", input_separator="\n")["messages"][0] == {"role": "user", "content": "Add.\n2 and 3"}
    assert to_example({**record, "input": ""}, "alpaca", input_separator="\n")["messages"][0]["content"] == "Add."


def test_a_preference_records_input_field_joins_its_prompt():
    record = {"instruction": "Add.", "query": "2 and 3", "chosen": "5", "rejected": "6"}
    fields = {"prompt": "instruction", "input": "query"}
    got = to_example(record, "preference", fields, input_separator="\n")
    assert got == {"chosen": {"prompt": "Add.\n2 and 3", "completion": "5"}, "rejected": {"prompt": "Add.\n2 and 3", "completion": "6"}}
    chat = to_example(record, "preference", fields, input_separator="\n", as_chat=True)["chosen"]["messages"]
    assert chat[0] == {"role": "user", "content": "Add.\n2 and 3"}  # LLaMA-Factory's user turn
    assert to_example({**record, "query": ""}, "preference", fields)["chosen"]["prompt"] == "Add."
    # without `input` among the fields an `input` column is not read
    plain = {"prompt": "Add.", "input": "2 and 3", "chosen": "5", "rejected": "6"}
    assert to_example(plain, "preference")["chosen"]["prompt"] == "Add."
    kto = to_example({"prompt": "Add.", "q": "2 and 3", "completion": "5", "label": True}, "unpaired_preference", {"input": "q"})
    assert kto["prompt"] == "Add.\n\n2 and 3"  # the default separator
    messages = {"prompt": [{"role": "user", "content": "Add."}], "query": "2 and 3", "chosen": [{"role": "assistant", "content": "5"}], "rejected": [{"role": "assistant", "content": "6"}]}
    with pytest.raises(RecordError, match="`query` is joined to a string prompt, and `prompt` is a list of messages"):
        to_example(messages, "preference", {"input": "query"})


def test_a_prompt_format_fills_the_records_fields_into_the_prompt():
    from recipec.runtime.formats import fields_needed, format_prompt, prompt_fields

    both = ["[INST] {instruction} {input} [/INST]", "[INST] {instruction} [/INST]"]
    rec = {"instruction": "Add 2 and 3.", "input": "use {braces}", "output": "5"}
    ex = to_example(rec, "prompt_completion", {"completion": "output"}, prompt_format=both)
    assert ex == {"prompt": "[INST] Add 2 and 3. use {braces} [/INST]", "completion": "5"}  # a value's braces stay
    for empty in ("", None):  # the first format whose fields are all non-empty: here the second
        ex = to_example({**rec, "input": empty}, "prompt_completion", {"completion": "output"}, prompt_format=both)
        assert ex["prompt"] == "[INST] Add 2 and 3. [/INST]"
    # one format takes empty fields as they are; numbers are written as Python writes them; {{ }} are braces
    assert format_prompt({"q": "", "n": 3, "x": 0.5}, "{{Q}}: {q}|{n}|{x}") == "{Q}: |3|0.5"
    # when no format has all its fields, the last one is taken
    assert format_prompt({"a": "", "b": ""}, ["{a} {b}", "{b}!"]) == "!"
    # a field the record lacks is empty for choosing, and an error in the format taken
    assert format_prompt({"i": "x"}, ["{s}: {i}", "{i}"]) == "x"
    with pytest.raises(RecordError, match="the record has no `i`"):
        format_prompt({"s": "a"}, ["{s}: {i}", "{i}"])
    # a preference record's prompt, and a chat rendering of it
    pref = to_example({"q": "Which?", "chosen": "A", "rejected": "B"}, "preference", prompt_format="Q: {q}\nA:")
    assert pref == {"chosen": {"prompt": "Q: Which?\nA:", "completion": "A"}, "rejected": {"prompt": "Q: Which?\nA:", "completion": "B"}}
    chat = to_example({"q": "Hi", "completion": "Yo"}, "prompt_completion", prompt_format="<{q}>", as_chat=True)
    assert chat["messages"][0] == {"role": "user", "content": "<Hi>"}
    # the columns a columnar reader loads: the format's fields in place of the prompt's
    assert fields_needed("prompt_completion", {"completion": "output"}, both) == ["output", "system", "instruction", "input"]
    assert prompt_fields(both) == ["instruction", "input"]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"output": "5"}, "the record has no `instruction`"),
        ({"instruction": ["a", "list"], "output": "5"}, "`instruction` holds list, and the prompt format fills in strings or numbers"),
        ({"instruction": True, "output": "5"}, "`instruction` holds bool"),
    ],
)
def test_a_prompt_format_over_a_record_that_does_not_fit(record, message):
    with pytest.raises(RecordError, match=message):
        to_example(record, "prompt_completion", {"completion": "output"}, prompt_format="{instruction}")


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("no fields here", "has no {field} placeholder"),
        ("{a.b}", r"\{a.b\} is not a field name"),
        ("{0}", r"\{0\} is not a field name"),
        ("{x!r}", r"\{x!r\} is not a field name"),
        ("{x:>9}", r"\{x:>9\} is not a field name"),
        ("open { brace", "a literal brace is written twice"),
    ],
)
def test_prompt_formats_that_are_not_plain_field_names(fmt, message):
    from recipec.runtime.formats import prompt_fields

    with pytest.raises(ValueError, match=message):
        prompt_fields(fmt)
