"""`recipec explain --data`: the figures that follow from the data stage's output.

The share of a micro-batch's token slots that hold tokens rests on the expected longest of
``micro_batch_size`` rows drawn at random, checked here against every possible draw; the
padding it assumes is the script's (the template's collate for each kind of data). The
numbers train.py computes from the data are checked against a real run in tests/test_sft.py
(the schedule, the steps) and tests/test_training.py (replay).
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipec.cli import main
from recipec.data_figures import expected_longest, expected_width, figures, padding
from recipec.runtime.packing import padded_width


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_expected_longest_is_the_mean_over_every_draw(n: int) -> None:
    rng = random.Random(n)
    lengths = [rng.randint(1, 50) for _ in range(n)]
    lengths[0] = lengths[-1]  # ties count once per row
    for k in range(1, n + 1):
        draws = list(itertools.combinations(lengths, k))
        exact = sum(max(d) for d in draws) / len(draws)
        assert expected_longest(lengths, k) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize(("multiple", "seq_len"), [(8, 64), (16, 40), (40, 40), (16, 20)])
def test_expected_width_is_the_mean_over_every_draw(multiple: int, seq_len: int) -> None:
    """pad_to_multiple_of: the mean over every draw of its longest row rounded up as the collate rounds it
    (seq_len 20: rows past it, as a preference pair's can be, stop at the next multiple of seq_len)."""
    rng = random.Random(multiple + seq_len)
    lengths = [rng.randint(1, 50) for _ in range(9)]
    lengths[0] = lengths[-1]
    for k in range(1, len(lengths) + 1):
        draws = list(itertools.combinations(lengths, k))
        exact = sum(padded_width(max(d), multiple, seq_len) for d in draws) / len(draws)
        assert expected_width(lengths, k, multiple, seq_len) == pytest.approx(exact, rel=1e-12)
        assert expected_width(lengths, k, None, None) == pytest.approx(expected_longest(lengths, k), rel=1e-12)
    assert expected_width([1, 2, 3], 2, 3, 3) == pytest.approx(3.0, rel=1e-12)  # pad_to_multiple_of = seq_len: every micro-batch seq_len wide


def test_expected_longest_of_many_rows_stays_finite() -> None:
    """Logarithms: C(100000, 8) overflows a float, the expectation does not."""
    lengths = list(range(1, 100_001))
    got = expected_longest(lengths, 8)
    # the longest of k uniform draws from 1..n: k (n + 1) / (k + 1)
    assert got == pytest.approx(8 * 100_001 / 9, rel=1e-9)
    assert expected_longest(lengths, 1) == pytest.approx(50_000.5)


def test_expected_longest_refuses_a_draw_larger_than_the_rows() -> None:
    with pytest.raises(ValueError, match="cannot draw 3 rows from 2"):
        expected_longest([1, 2], 3)


def test_padding_is_the_scripts(plan_of, write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text in packed blocks, unpacked text padded with a mask, examples padded to their micro-batch's longest."""
    from recipec.compiler import plan_recipe

    assert padding(plan_of()) == "blocks"
    assert padding(plan_of({"data.packing": False})) == "masked"
    (tmp_path / "chat.jinja").write_text(
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    (tmp_path / "d.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}))
    recipe = write_recipe(
        {"tokenizer.chat_template": "chat.jinja", "tokenizer.special_tokens": ["<|im_start|>", "<|im_end|>"]},
        data={"sources": [{"path": "d.jsonl", "records": "messages"}]},
    )
    monkeypatch.chdir(tmp_path)
    for packed in (False, True):
        plan, _ = plan_recipe(recipe, (f"data.packing={str(packed).lower()}",))
        assert plan["examples"] and padding(plan) == "longest"


@pytest.mark.parametrize("multiple", [None, 8, 32])
def test_the_slot_share_counts_the_rounded_up_width(plan_of, tmp_path: Path, multiple) -> None:
    """Unpacked examples: tokens over the expected width of each row's micro-batch, brute force over every draw of
    micro_batch_size 4 rows of 8."""
    import types

    import pyarrow as pa

    lengths = [3, 9, 9, 14, 17, 20, 26, 31]
    path = tmp_path / "train.arrow"
    table = pa.table({"input_ids": [list(range(n)) for n in lengths]})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    chat = {"tokenizer.chat_template": "chat.jinja", "tokenizer.special_tokens": ["<|im_start|>", "<|im_end|>"]}
    data = {"seq_len": 32, "packing": False, "sources": [{"path": "d.jsonl", "records": "messages"}]}
    if multiple is not None:
        data["pad_to_multiple_of"] = multiple
    plan = plan_of(chat, data=data, train={"micro_batch_size": 4, "batch_size": 8, "max_steps": 10})
    report = {"segments": [{"sequences": len(lengths)}], "eval": {"sequences": 0}}
    fig = figures(plan, types.SimpleNamespace(report=report, train_files=[path], dir=tmp_path))
    draws = list(itertools.combinations(lengths, 4))
    width = sum(padded_width(max(d), multiple, 32) for d in draws) / len(draws)
    assert fig["pad_to_multiple_of"] == multiple
    assert fig["segments"][0]["slot_share"] == round(sum(lengths) / round(width * len(lengths)), 6)
    unrounded = sum(max(d) for d in draws) / len(draws)
    assert (fig["segments"][0]["slot_share"] < round(sum(lengths) / round(unrounded * len(lengths)), 6)) == (multiple is not None)


def test_the_templates_collate_pads_as_the_figures_assume() -> None:
    """The figures' padding names the template's collate: a change to one without the other fails here."""
    template = (Path(__file__).parents[1] / "templates" / "train.py.j2").read_text()
    assert "return example_packing.collate(rows, tokenizer.pad_token_id, pad_to=seq_len)" in template  # sp: seq_len
    # examples and pairs: the longest, rounded up with pad_to_multiple_of
    assert "return example_packing.collate(rows, tokenizer.pad_token_id, pad_to_multiple_of=pad_to_multiple_of, seq_len=seq_len)\n" in template
    assert (
        '        unpaired=unpaired,\n        kl=objective == "kto",\n'
        "        pad_to_multiple_of=pad_to_multiple_of,\n        seq_len=seq_len,\n" in template
    )
    # sp: each side of a pair (each unpaired example) a row of seq_len
    assert 'rows, tokenizer.pad_token_id, unpaired=unpaired, kl=objective == "kto", pad_to=seq_len\n' in template
    # a reward model: each side a row, the micro-batch's longest side, rounded up with pad_to_multiple_of
    assert "return preference.collate_reward(rows, tokenizer.pad_token_id, pad_to_multiple_of=pad_to_multiple_of, seq_len=seq_len)" in template


def test_explain_without_data_says_how_to_get_the_steps(write_recipe) -> None:
    path = write_recipe({"train.max_steps": None}, train={"epochs": 2})
    result = CliRunner().invoke(main, ["--no-color", "explain", str(path)])
    assert result.exit_code == 0, result.output
    assert "derived by train.py from the data (train.epochs); --data computes them" in result.output
    csv = CliRunner().invoke(main, ["--no-color", "explain", str(path), "--lr-csv", str(path.parent / "lr.csv")])
    assert csv.exit_code != 0 and "add --data" in csv.output


def test_explain_data_on_text(write_recipe, monkeypatch: pytest.MonkeyPatch) -> None:
    """Packed text: full blocks; the steps of an epoch are the rows over the batch, as train.py divides them."""
    path = write_recipe({"train.max_steps": None, "data.sources": [{"builtin": "python-docs", "max_documents": 20}]}, train={"epochs": 2})
    monkeypatch.chdir(path.parent)
    result = CliRunner().invoke(main, ["--no-color", "explain", str(path), "--data", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])["data"]
    rows = data["segments"][0]["rows"]
    assert data["padding"] == "blocks" and data["segments"][0]["slot_share"] == 1.0
    computed = data["computed"]
    assert computed["steps_per_epoch"] == rows // 8  # the minimal recipe's batch_size
    assert computed["max_steps"] == 2 * computed["steps_per_epoch"]
    assert sum(p["steps"] for p in computed["schedule_phases"]) == computed["max_steps"]


@pytest.mark.parametrize("multiple", [None, 8])
def test_the_slot_share_of_a_reward_model_counts_both_sides_as_wide_as_the_longest(plan_of, tmp_path: Path, multiple) -> None:
    """A reward model's micro-batch: each side of each pair a row, as wide as the micro-batch's longest side (rounded up
    with pad_to_multiple_of), brute force over every draw of micro_batch_size 4 pairs of 8, each draw's width the one
    the script's collate gives it."""
    import types

    import pyarrow as pa

    from recipec.runtime import preference as P

    rng = random.Random(0)
    rows = [P.pair_row(*[([5] * n, [0] * (n // 2) + [1] * (n - n // 2)) for n in (rng.randint(3, 15), rng.randint(3, 15))]) for _ in range(8)]
    path = tmp_path / "train.arrow"
    table = pa.table({k: [r[k] for r in rows] for k in ("input_ids", "mask", "position_ids")})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data = {"seq_len": 32, "sources": [{"path": "pairs.jsonl", "records": "preference"}]}
    if multiple is not None:
        data["pad_to_multiple_of"] = multiple
    plan = plan_of(
        {"model.init": None, "model.config": None, "model.path": "org/name", "preference": {"objective": "reward"}},
        data=data, train={"micro_batch_size": 4, "batch_size": 8, "max_steps": 10},
    )
    assert padding(plan) == "reward"
    report = {"segments": [{"sequences": len(rows)}], "eval": {"sequences": 0}}
    fig = figures(plan, types.SimpleNamespace(report=report, train_files=[path], dir=tmp_path))
    draws = list(itertools.combinations(rows, 4))
    width = sum(P.collate_reward(list(d), 0, pad_to_multiple_of=multiple, seq_len=32)["input_ids"].shape[1] for d in draws) / len(draws)
    tokens = sum(len(r["input_ids"]) for r in rows)
    assert fig["segments"][0]["slot_share"] == round(tokens / round(2 * width * len(rows)), 6)
