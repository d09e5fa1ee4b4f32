"""`data.overflow = "truncate_turns"`: each turn's prompt and answer cut in proportion to
their lengths, checked against LLaMA-Factory's own data processors.

The oracle is LLaMA-Factory 0.9.5 itself (`pip download --no-deps llamafactory==0.9.5`,
its wheel checked against a pinned sha256), run by `llama_factory_oracle.py` in a process of
its own: its supervised (with and without `mask_history`), pairwise and KTO processors over
conversations and cutoffs where the rule keeps the prompt, the answer or both, with its
llama3 and qwen templates; recipec renders the same conversations with the jinja it writes
for those templates. The tokens and the supervised mask must be the same, and where
LLaMA-Factory keeps nothing to learn from, recipec drops the example.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from recipec.importers import llama_factory_templates as lf  # noqa: E402
from recipec.runtime import chat  # noqa: E402
from recipec.runtime.preference import REJECTED, SUPERVISED  # noqa: E402

LF_VERSION = "0.9.5"
LF_SHA256 = "10776e9b259798bf65f6c5343f6298f0302e92e9cd47472abe29eef69e286c6a"
ORACLE = Path(__file__).with_name("llama_factory_oracle.py")
IGNORE = -100

MARKERS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|im_start|>", "<|im_end|>"]
CUTOFFS = [5, 9, 16, 23, 37, 60, 97, 150, 1000]


def _words(start: int, n: int) -> str:
    from recipec.runtime.data import builtin_texts

    words = " ".join(builtin_texts("python-docs", limit=3)).split()
    return " ".join(words[start : start + n])


def _conversations() -> list[list[dict[str, str]]]:
    def m(role: str, start: int, n: int) -> dict[str, str]:
        return {"role": role, "content": _words(start, n)}

    return [
        [m("system", 0, 6), m("user", 10, 8), m("assistant", 40, 40)],  # a short prompt, a long answer
        [m("user", 100, 50), m("assistant", 200, 5)],  # a long prompt, a short answer
        [m("user", 300, 25), m("assistant", 400, 30)],  # both about equal
        [m("system", 500, 4), m("user", 520, 12), m("assistant", 560, 20), m("user", 600, 9),
         m("assistant", 640, 35), m("user", 700, 30), m("assistant", 760, 6)],  # three turns
    ]


@pytest.fixture(scope="module")
def lf_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llamafactory")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check", f"llamafactory=={LF_VERSION}", "-d", str(folder)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        why = f"the oracle, LLaMA-Factory {LF_VERSION}, could not be downloaded ({' '.join(cmd[2:])}): {done.stderr[-500:]}"
        if os.environ.get("RECIPEC_ORACLES_REQUIRED"):
            pytest.fail(why)
        pytest.skip(why)
    wheel = next(folder.glob("llamafactory-*.whl"))
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == LF_SHA256, f"{wheel.name} is not the wheel these tests pin"
    site = folder / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return site


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from recipec.runtime.data import builtin_texts
    from recipec.runtime.tokenizer import train_bpe

    tok = train_bpe(builtin_texts("python-docs", limit=20), 600)
    tok.add_special_tokens({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"})
    tok.add_tokens(MARKERS, special_tokens=True)
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    return str(path)


def _cases() -> list[dict]:
    cases = []
    convs = _conversations()
    for i, messages in enumerate(convs):
        for cutoff in CUTOFFS:
            for history in (False, True):
                cases.append({"kind": "sft", "messages": messages, "cutoff_len": cutoff, "mask_history": history})
            rejected = convs[(i + 1) % len(convs)][-1]  # another conversation's answer: another length
            cases.append({"kind": "pairwise", "messages": messages, "rejected": rejected, "cutoff_len": cutoff})
            cases.append({"kind": "kto", "messages": messages, "cutoff_len": cutoff, "desirable": cutoff % 2 == 0})
    return cases


@pytest.fixture(scope="module")
def oracle(lf_site: Path, tokenizer_dir: str):
    results = {}
    for template in ("llama3", "qwen"):
        request = {"tokenizer": tokenizer_dir, "template": template, "cases": _cases()}
        done = subprocess.run(
            [sys.executable, str(ORACLE), str(lf_site)], input=json.dumps(request), capture_output=True, text=True, timeout=600,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "LLAMAFACTORY_VERBOSITY": "ERROR"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        results[template] = json.loads(done.stdout)
    return results


def _tokenizer(tokenizer_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def _learns(labels: list[int]) -> bool:
    return any(t != IGNORE for t in labels[1:])


@pytest.mark.parametrize("template", ["llama3", "qwen"])
def test_supervised_examples_equal_llama_factory(oracle, tokenizer_dir, template):
    tok, jinja = _tokenizer(tokenizer_dir), lf.chat_template(template)
    checked = cut = dropped = 0
    for case, want in zip(_cases(), oracle[template]):
        if case["kind"] != "sft":
            continue
        train_on = "last_assistant" if case["mask_history"] else "assistant"
        example = {"messages": case["messages"], "completion_from": None}
        ids, mask, reason = chat.fit_example(
            tok, example, train_on=train_on, max_length=case["cutoff_len"], overflow="truncate_turns", chat_template=jinja
        )
        where = f"{template} cutoff {case['cutoff_len']} mask_history {case['mask_history']} turns {len(case['messages'])}"
        if not _learns(want["labels"]):
            assert reason == "no_supervised_token", where
            dropped += 1
            continue
        assert ids == want["input_ids"], where
        assert mask == [int(t != IGNORE) for t in want["labels"]], where
        checked += 1
        cut += reason == "truncated"
    assert checked > 40 and cut > 30 and dropped > 0, (checked, cut, dropped)


@pytest.mark.parametrize("template", ["llama3", "qwen"])
def test_preference_pairs_and_kto_examples_equal_llama_factory(oracle, tokenizer_dir, template):
    tok, jinja = _tokenizer(tokenizer_dir), lf.chat_template(template)
    checked = {"pairwise": 0, "kto": 0}
    for case, want in zip(_cases(), oracle[template]):
        if case["kind"] == "sft":
            continue
        messages, n = case["messages"], len(case["messages"]) - 1
        if case["kind"] == "pairwise":
            example = {
                "chosen": {"messages": messages, "completion_from": n},
                "rejected": {"messages": messages[:-1] + [case["rejected"]], "completion_from": n},
            }
            sides = [(want["chosen_input_ids"], want["chosen_labels"]), (want["rejected_input_ids"], want["rejected_labels"])]
        else:
            example = {"messages": messages, "completion_from": n, "label": case["desirable"]}
            sides = [(want["input_ids"], want["labels"])]
        ids, bits, reason = chat.tokenize_preference(tok, example, max_length=case["cutoff_len"], overflow="truncate_turns", chat_template=jinja)
        where = f"{template} {case['kind']} cutoff {case['cutoff_len']} turns {len(messages)}"
        if not all(_learns(labels) for _, labels in sides):
            assert reason == "no_supervised_token", where
            continue
        assert reason in (None, "truncated"), where
        got = [[(t, b) for t, b in zip(ids, bits) if bool(b & REJECTED) == side] for side in (False, True)][: len(sides)]
        for (want_ids, labels), side in zip(sides, got):
            assert [t for t, _ in side] == want_ids, where
            # the first token of a side has no prediction: recipec's row never marks it
            assert [int(bool(b & SUPERVISED)) for _, b in side][1:] == [int(t != IGNORE) for t in labels][1:], where
        checked[case["kind"]] += 1
    assert min(checked.values()) > 20, checked


def test_infer_seqlen_keeps_the_shorter_side_whole():
    assert chat.infer_seqlen(10, 100, 50) == (10, 40)  # the prompt under half: kept, the answer cut
    assert chat.infer_seqlen(100, 10, 50) == (40, 10)  # the answer under half: kept, the prompt cut
    assert chat.infer_seqlen(60, 40, 50) == (30, 20)  # both over half: in proportion, the answer rounded down
    assert chat.infer_seqlen(3, 4, 50) == (3, 4)  # both fit


def test_fit_turns_cuts_each_turn_and_drops_those_past_the_budget():
    # [bos, p1 p1, a1 a1 a1 a1, p2 p2 p2, a2 a2, newline]
    ids = [0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 9]
    mask = [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0]
    answers = [(3, 7), (10, 12)]
    assert chat.fit_turns(ids, mask, answers, 13) == (ids, mask)  # fits: unchanged
    # turn 1 (3 + 4 tokens) in a budget of 8: whole; turn 2 (3 + 3 with the newline) gets 1: the prompt's first token
    assert chat.fit_turns(ids, mask, answers, 8) == ([0, 1, 1, 2, 2, 2, 2, 3], [0, 0, 0, 1, 1, 1, 1, 0])
    # budget 6: both over half, the answer gets int(6 * 4 / 7) = 3, the prompt 3
    assert chat.fit_turns(ids, mask, answers, 6) == ([0, 1, 1, 2, 2, 2], [0, 0, 0, 1, 1, 1])
    # from the last turn: it is kept whole (6 tokens), the first turn gets what is left
    assert chat.fit_turns(ids, mask, answers, 8, last_first=True) == ([0, 2, 3, 3, 3, 4, 4, 9], [0, 1, 0, 0, 0, 1, 1, 0])
