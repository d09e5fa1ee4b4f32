"""Tests for recipec.diagnostics: rustc-style rendering, sorting, suggestions."""

from __future__ import annotations

import re

import pytest

from recipec.diagnostics import (
    Diagnostic,
    Location,
    RecipeError,
    did_you_mean,
    format_diagnostics,
    sort_diagnostics,
)

FILE = "recipes/lora.toml"


def err(message, line=1, col=1, length=1, source="x = 1", file=FILE, help=None):
    return Diagnostic("error", message, Location(file, line, col, length, source), help)


def warn(message, line=1, col=1, length=1, source="x = 1", file=FILE, help=None):
    return Diagnostic("warning", message, Location(file, line, col, length, source), help)


# -- the golden example ------------------------------------------------------


def test_spec_example_exact():
    diagnostics = [
        warn("warmup is 0.5% of the run", 20, 1, 6, "warmup = 1"),
        err("unknown key `peft.alfa`", 11, 1, 4, "alfa = 16", help="did you mean `alpha`?"),
    ]
    expected = (
        "error: unknown key `peft.alfa`\n"
        "  --> recipes/lora.toml:11:1\n"
        "   |\n"
        "11 | alfa = 16\n"
        "   | ^^^^\n"
        "   = help: did you mean `alpha`?\n"
        "\n"
        "warning: warmup is 0.5% of the run\n"
        "  --> recipes/lora.toml:20:1\n"
        "   |\n"
        "20 | warmup = 1\n"
        "   | ^^^^^^\n"
        "1 error and 1 warning in recipes/lora.toml"
    )
    assert format_diagnostics(diagnostics) == expected


def test_single_digit_gutter():
    out = format_diagnostics([err("bad value", 3, 5, 2, "a = xy")])
    assert out == (
        "error: bad value\n"
        " --> recipes/lora.toml:3:5\n"
        "  |\n"
        "3 | a = xy\n"
        "  |     ^^\n"
        "1 error in recipes/lora.toml"
    )


def test_gutter_width_follows_widest_line_number():
    out = format_diagnostics(
        [err("first", 7, 1, 1, "a = 1"), err("second", 123, 3, 3, "b = abc")]
    )
    assert out == (
        "error: first\n"
        "   --> recipes/lora.toml:7:1\n"
        "    |\n"
        "  7 | a = 1\n"
        "    | ^\n"
        "\n"
        "error: second\n"
        "   --> recipes/lora.toml:123:3\n"
        "    |\n"
        "123 | b = abc\n"
        "    |   ^^^\n"
        "2 errors in recipes/lora.toml"
    )


def test_caret_offset_and_length():
    out = format_diagnostics([err("x", 1, 9, 3, "lr   =  abc")])
    assert out.splitlines()[4] == "  |         ^^^"


def test_zero_length_still_draws_one_caret():
    out = format_diagnostics([err("x", 1, 3, 0, "a = 1")])
    assert out.splitlines()[4] == "  |   ^"


def test_span_past_end_of_line_is_clamped():
    out = format_diagnostics([err("x", 1, 5, 40, 'a = """')])
    assert out.splitlines()[4] == "  |     ^^^"


def test_tabs_are_expanded_so_caret_lines_up():
    out = format_diagnostics([err("x", 1, 3, 5, "\t\tvalue = 1")])
    lines = out.splitlines()
    assert lines[3] == "1 |         value = 1"
    assert lines[4] == "  |         ^^^^^"
    assert "\t" not in out


def test_wide_characters_shift_the_caret():
    out = format_diagnostics([err("x", 1, 8, 3, 'n = "名前" + x')])
    lines = out.splitlines()
    # 'n = "' is 5 cells and the two CJK characters take two cells each
    assert lines[4] == "  | " + " " * 9 + "^^^"


def test_source_line_newline_is_not_printed():
    out = format_diagnostics([err("x", 2, 1, 1, "a = 1\r\n")])
    assert out.splitlines()[3] == "2 | a = 1"


def test_no_location_prints_message_and_help_only():
    out = format_diagnostics([Diagnostic("error", "no recipe given", None, "pass a path")])
    assert out == "error: no recipe given\n  = help: pass a path\n1 error"


def test_line_zero_prints_file_without_snippet():
    d = Diagnostic("error", "cannot read recipe: No such file or directory", Location(FILE, 0, 0))
    assert format_diagnostics([d]) == (
        "error: cannot read recipe: No such file or directory\n"
        " --> recipes/lora.toml\n"
        "1 error in recipes/lora.toml"
    )


def test_line_without_source_text_prints_position_only():
    d = Diagnostic("error", "bad", Location(FILE, 4, 2))
    expected = "error: bad\n --> recipes/lora.toml:4:2\n1 error in recipes/lora.toml"
    assert format_diagnostics([d]) == expected


def test_set_location_shows_the_argument():
    arg = "train.max_steps=abc"
    d = Diagnostic(
        "error", "`train.max_steps` must be an integer", Location("--set", 0, 17, 3, arg)
    )
    assert format_diagnostics([d]) == (
        "error: `train.max_steps` must be an integer\n"
        " --> --set train.max_steps=abc\n"
        "  |\n"
        "  | train.max_steps=abc\n"
        "  |                 ^^^\n"
        "1 error"
    )


def test_set_location_uses_shared_gutter_width():
    arg = "train.max_steps=abc"
    out = format_diagnostics(
        [
            Diagnostic("error", "a", Location("--set", 0, 17, 3, arg)),
            err("b", 42, 1, 1, "x = 1"),
        ]
    )
    assert out == (
        "error: b\n"
        "  --> recipes/lora.toml:42:1\n"
        "   |\n"
        "42 | x = 1\n"
        "   | ^\n"
        "\n"
        "error: a\n"
        "  --> --set train.max_steps=abc\n"
        "   |\n"
        "   | train.max_steps=abc\n"
        "   |                 ^^^\n"
        "2 errors in recipes/lora.toml"
    )


# -- summary line ------------------------------------------------------------


@pytest.mark.parametrize(
    ("errors", "warnings", "summary"),
    [
        (1, 0, "1 error in recipes/lora.toml"),
        (2, 0, "2 errors in recipes/lora.toml"),
        (0, 1, "1 warning in recipes/lora.toml"),
        (0, 3, "3 warnings in recipes/lora.toml"),
        (2, 1, "2 errors and 1 warning in recipes/lora.toml"),
        (1, 2, "1 error and 2 warnings in recipes/lora.toml"),
    ],
)
def test_summary_wording(errors, warnings, summary):
    diagnostics = [err(f"e{i}", i + 1) for i in range(errors)]
    diagnostics += [warn(f"w{i}", i + 10) for i in range(warnings)]
    assert format_diagnostics(diagnostics).splitlines()[-1] == summary


def test_summary_file_skips_set_and_unlocated():
    diagnostics = [
        Diagnostic("error", "a"),
        Diagnostic("error", "b", Location("--set", 0, 1, 1, "a=1")),
        Diagnostic("warning", "c", Location("other.toml", 0, 0)),
    ]
    summary = format_diagnostics(diagnostics).splitlines()[-1]
    assert summary == "2 errors and 1 warning in other.toml"


def test_summary_without_any_file():
    diagnostics = [
        Diagnostic("error", "a"),
        Diagnostic("error", "b", Location("--set", 0, 1, 1, "a=1")),
    ]
    assert format_diagnostics(diagnostics).splitlines()[-1] == "2 errors"


def test_empty_list_formats_to_empty_string():
    assert format_diagnostics([]) == ""


def test_blank_line_between_diagnostics_only():
    out = format_diagnostics([err("a", 1), err("b", 2), err("c", 3)])
    assert out.count("\n\n") == 2
    assert not out.endswith("\n")


# -- colour ------------------------------------------------------------------


def test_color_off_by_default_has_no_escapes():
    out = format_diagnostics([err("a", help="h"), warn("b", 2)])
    assert "\x1b[" not in out


def test_color_marks_severity_and_gutter():
    out = format_diagnostics([err("a", 1), warn("b", 2)], color=True)
    assert "\x1b[1;31merror\x1b[0m" in out
    assert "\x1b[1;33mwarning\x1b[0m" in out
    assert "\x1b[1;34m-->\x1b[0m" in out
    assert "\x1b[1;34m|\x1b[0m" in out


def test_color_does_not_change_the_text():
    diagnostics = [err("a", 12, 2, 3, "abcdef", help="h"), warn("b", 3)]
    plain = format_diagnostics(diagnostics)
    colored = format_diagnostics(diagnostics, color=True)
    assert re.sub(r"\x1b\[[0-9;]*m", "", colored) == plain


# -- sorting -----------------------------------------------------------------


def test_sort_by_file_line_col_interleaving_severities():
    a = err("a", 5, 3)
    b = warn("b", 2, 1)
    c = err("c", 5, 1)
    d = warn("d", 1, 1, file="b.toml")
    e = err("e", 9, 9, file="a.toml")
    assert sort_diagnostics([a, b, c, d, e]) == [e, d, b, c, a]


def test_sort_puts_unlocated_last_and_is_stable():
    n1 = Diagnostic("error", "n1")
    n2 = Diagnostic("warning", "n2")
    x = err("x", 3)
    y = err("y", 3)
    assert sort_diagnostics([n1, y, n2, x]) == [y, x, n1, n2]


def test_sort_keeps_set_arguments_in_order_after_files():
    s1 = Diagnostic("error", "s1", Location("--set", 0, 9, 1, "b.c=1"))
    s2 = Diagnostic("error", "s2", Location("--set", 0, 1, 1, "a=1"))
    f = err("f", 100)
    assert sort_diagnostics([s1, s2, f]) == [f, s1, s2]


def test_sort_returns_new_list():
    items = [err("b", 2), err("a", 1)]
    result = sort_diagnostics(items)
    assert [d.message for d in items] == ["b", "a"]
    assert [d.message for d in result] == ["a", "b"]


def test_format_sorts_by_line():
    out = format_diagnostics([err("late", 30), err("early", 4)])
    assert out.index("early") < out.index("late")


# -- did_you_mean ------------------------------------------------------------


def test_did_you_mean_finds_close_match():
    assert did_you_mean("alfa", ["alpha", "r", "dropout"]) == "did you mean `alpha`?"


def test_did_you_mean_picks_the_closest():
    suggestion = did_you_mean("max_step", ["max_steps", "max_epochs", "steps"])
    assert suggestion == "did you mean `max_steps`?"


def test_did_you_mean_none_when_nothing_is_close():
    assert did_you_mean("zzz", ["alpha", "beta"]) is None
    assert did_you_mean("alpha", []) is None


def test_did_you_mean_accepts_any_iterable():
    assert did_you_mean("lr", (k for k in ["lr_", "wd"])) == "did you mean `lr_`?"


# -- RecipeError -------------------------------------------------------------


def test_recipe_error_keeps_diagnostics_and_formats():
    diagnostics = (err("a", 2), err("b", 1))
    exc = RecipeError(diagnostics)
    assert exc.diagnostics == list(diagnostics)
    assert isinstance(exc.diagnostics, list)
    assert str(exc) == format_diagnostics(diagnostics)
    with pytest.raises(RecipeError) as info:
        raise exc
    assert info.value.diagnostics[0].message == "a"


def test_dataclasses_are_frozen():
    loc = Location(FILE, 1, 1)
    with pytest.raises(AttributeError):
        loc.line = 2  # type: ignore[misc]
    d = Diagnostic("error", "m", loc)
    with pytest.raises(AttributeError):
        d.message = "n"  # type: ignore[misc]
    assert loc.length == 1 and loc.source_line is None
    assert d.help is None
