"""Tests for recipec.source: the TOML source map, syntax errors and --set overrides."""

from __future__ import annotations

import datetime as dt
import json
import re
import textwrap
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recipec.diagnostics import Diagnostic, Location, RecipeError, format_diagnostics
from recipec.source import (
    SourceMap,
    apply_overrides,
    format_key_path,
    parse_override,
    parse_recipe,
    read_recipe,
)

FILE = "recipes/r.toml"


def load(text: str, overrides=()):
    return parse_recipe(textwrap.dedent(text).lstrip("\n"), FILE, overrides)


def smap(text: str) -> SourceMap:
    return load(text)[1]


def span(loc: Location) -> str:
    """The underlined text of a location."""
    assert loc.source_line is not None
    return loc.source_line[loc.col - 1 : loc.col - 1 + loc.length]


def where(loc: Location) -> tuple[int, int, int]:
    return loc.line, loc.col, loc.length


def only_error(info) -> Diagnostic:
    assert len(info.value.diagnostics) == 1
    return info.value.diagnostics[0]


# -- positions of each TOML construct ------------------------------------------

RECIPE = """
# a comment: name = "not a key"
name = "lora"   # trailing comment
notes = \"\"\"
fake = 1
[fake.table]
\"\"\"
literal = '''
also_fake = 2
'''

[model]
path = "./models/tiny"
dims = {hidden = 64, inner = {x = 1}}

  [model.lora]
  alpha  =  16

[optim]
betas = [0.9, 0.95]
lr = 3e-4

[[data.sources]]
builtin = "tiny_shakespeare"

[[data.sources]]
path = "data/x.txt"
a.b."c.d" = 1

[train]
sources = [{builtin = "x"}, {path = "y", opts = {n = 2}}]
multi = [
  1,  # one
  "two",
  [3, 4],
]
"quoted.key" = true
'single' = 'yes'
"""


@pytest.fixture(scope="module")
def recipe_map() -> SourceMap:
    return smap(RECIPE)


@pytest.mark.parametrize(
    ("path", "line", "col", "length", "text"),
    [
        (("name",), 2, 1, 4, "name"),
        (("notes",), 3, 1, 5, "notes"),
        (("literal",), 7, 1, 7, "literal"),
        (("model",), 11, 2, 5, "model"),
        (("model", "path"), 12, 1, 4, "path"),
        (("model", "dims"), 13, 1, 4, "dims"),
        (("model", "dims", "hidden"), 13, 9, 6, "hidden"),
        (("model", "dims", "inner"), 13, 22, 5, "inner"),
        (("model", "dims", "inner", "x"), 13, 31, 1, "x"),
        (("model", "lora"), 15, 4, 10, "model.lora"),
        (("model", "lora", "alpha"), 16, 3, 5, "alpha"),
        (("optim",), 18, 2, 5, "optim"),
        (("optim", "betas"), 19, 1, 5, "betas"),
        (("optim", "betas", 0), 19, 10, 3, "0.9"),
        (("optim", "betas", 1), 19, 15, 4, "0.95"),
        (("optim", "lr"), 20, 1, 2, "lr"),
        (("data",), 22, 3, 4, "data"),
        (("data", "sources"), 22, 3, 12, "data.sources"),
        (("data", "sources", 0), 22, 3, 12, "data.sources"),
        (("data", "sources", 0, "builtin"), 23, 1, 7, "builtin"),
        (("data", "sources", 1), 25, 3, 12, "data.sources"),
        (("data", "sources", 1, "path"), 26, 1, 4, "path"),
        (("data", "sources", 1, "a"), 27, 1, 1, "a"),
        (("data", "sources", 1, "a", "b"), 27, 1, 3, "a.b"),
        (("data", "sources", 1, "a", "b", "c.d"), 27, 1, 9, 'a.b."c.d"'),
        (("train",), 29, 2, 5, "train"),
        (("train", "sources"), 30, 1, 7, "sources"),
        (("train", "sources", 0), 30, 12, 15, '{builtin = "x"}'),
        (("train", "sources", 0, "builtin"), 30, 13, 7, "builtin"),
        (("train", "sources", 1, "path"), 30, 30, 4, "path"),
        (("train", "sources", 1, "opts", "n"), 30, 50, 1, "n"),
        (("train", "multi"), 31, 1, 5, "multi"),
        (("train", "multi", 0), 32, 3, 1, "1"),
        (("train", "multi", 1), 33, 3, 5, '"two"'),
        (("train", "multi", 2), 34, 3, 6, "[3, 4]"),
        (("train", "multi", 2, 1), 34, 7, 1, "4"),
        (("train", "quoted.key"), 36, 1, 12, '"quoted.key"'),
        (("train", "single"), 37, 1, 8, "'single'"),
    ],
)
def test_key_positions(recipe_map, path, line, col, length, text):
    loc = recipe_map.locate(path)
    assert loc.file == FILE
    assert where(loc) == (line, col, length)
    assert span(loc) == text


def test_recipe_parses_to_expected_data(recipe_map):
    data, _ = load(RECIPE)
    assert data["data"]["sources"][1]["a"]["b"]["c.d"] == 1
    assert data["train"]["sources"][1]["opts"] == {"n": 2}
    assert data["notes"] == "fake = 1\n[fake.table]\n"


@pytest.mark.parametrize(
    ("path", "line", "col", "length", "text"),
    [
        (("name",), 2, 8, 6, '"lora"'),
        (("notes",), 3, 9, 3, '"""'),  # multi-line: first line only
        (("literal",), 7, 11, 3, "'''"),
        (("model", "dims"), 13, 8, 30, "{hidden = 64, inner = {x = 1}}"),
        (("model", "dims", "inner"), 13, 30, 7, "{x = 1}"),
        (("model", "lora", "alpha"), 16, 13, 2, "16"),
        (("optim", "lr"), 20, 6, 4, "3e-4"),
        (("optim", "betas"), 19, 9, 11, "[0.9, 0.95]"),
        (("optim", "betas", 1), 19, 15, 4, "0.95"),
        (("train", "multi"), 31, 9, 1, "["),
        (("train", "sources", 1, "opts", "n"), 30, 54, 1, "2"),
        (("train", "quoted.key"), 36, 16, 4, "true"),
    ],
)
def test_value_positions(recipe_map, path, line, col, length, text):
    loc = recipe_map.value_location(path)
    assert where(loc) == (line, col, length)
    assert span(loc) == text


def test_value_location_of_table_falls_back_to_header(recipe_map):
    assert recipe_map.value_location(("model",)) == recipe_map.locate(("model",))
    source = ("data", "sources", 1)
    assert recipe_map.value_location(source) == recipe_map.locate(source)


def test_multiline_strings_do_not_create_keys(recipe_map):
    for path in [("fake",), ("fake", "table"), ("also_fake",), ("notes", "fake")]:
        assert not recipe_map.is_set(path)
    assert [p for p in recipe_map.paths() if p[0] in ("fake", "also_fake")] == []


def test_comments_do_not_create_keys(recipe_map):
    assert recipe_map.paths()[0] == ("name",)
    assert recipe_map.locate(("name",)).line == 2


def test_paths_lists_everything_in_text_order(recipe_map):
    paths = recipe_map.paths()
    assert paths.index(("name",)) < paths.index(("model",)) < paths.index(("train", "multi", 2, 1))
    assert ("data", "sources", 1, "a", "b", "c.d") in paths
    assert len(paths) == len(set(paths))


def test_multiline_string_edge_cases():
    sm = smap(
        '''
        a = """ends with quotes"""""
        b = """with \\""" escaped
        c = 1
        """
        d = \'\'\'x\'\'\'\'\'
        e = 2
        '''
    )
    assert sm.paths() == [("a",), ("b",), ("d",), ("e",)]
    assert where(sm.locate(("e",))) == (6, 1, 1)
    assert span(sm.value_location(("a",))) == '"""ends with quotes"""""'


def test_string_values_with_brackets_and_hashes():
    sm = smap(
        """
        a = "x]}#,[{ = 1"  # c
        b = 'c:\\path#[x]'
        c = 1
        """
    )
    assert span(sm.value_location(("a",))) == '"x]}#,[{ = 1"'
    assert span(sm.value_location(("b",))) == "'c:\\path#[x]'"
    assert where(sm.locate(("c",))) == (3, 1, 1)


def test_headers_with_spaces_quotes_and_comments():
    sm = smap(
        """
        [ "my table" . sub ]  # comment
        k = 1
        [[ runs ]]
        """
    )
    assert span(sm.locate(("my table",))) == '"my table"'
    assert span(sm.locate(("my table", "sub"))) == '"my table" . sub'
    assert where(sm.locate(("my table", "sub", "k"))) == (2, 1, 1)
    assert span(sm.locate(("runs", 0))) == "runs"


def test_explicit_table_header_wins_over_implicit_prefix():
    sm = smap(
        """
        [a.b]
        x = 1
        [a]
        y = 2
        """
    )
    assert where(sm.locate(("a",))) == (3, 2, 1)
    assert where(sm.locate(("a", "b"))) == (1, 2, 3)


def test_nested_arrays_of_tables_index_per_parent():
    sm = smap(
        """
        [[fruit]]
        name = "apple"
        [[fruit.variety]]
        name = "red"
        [[fruit.variety]]
        name = "green"
        [[fruit]]
        name = "banana"
        [[fruit.variety]]
        name = "plantain"
        [fruit.info]
        k = 1
        """
    )
    assert sm.locate(("fruit", 0, "variety", 1, "name")).line == 6
    assert sm.locate(("fruit", 1, "name")).line == 8
    assert sm.locate(("fruit", 1, "variety", 0, "name")).line == 10
    assert not sm.is_set(("fruit", 1, "variety", 1))
    assert sm.locate(("fruit", 1, "info", "k")).line == 12
    assert sm.locate(("fruit", 1, "info")).line == 11


def test_third_array_of_tables_block_is_index_two():
    sm = smap("[[s]]\na = 1\n[[s]]\na = 2\n[[s]]\na = 3\n")
    assert [sm.locate(("s", i, "a")).line for i in range(3)] == [2, 4, 6]
    assert [sm.locate(("s", i)).line for i in range(3)] == [1, 3, 5]
    assert sm.locate(("s",)).line == 1


def test_crlf_line_endings():
    sm = SourceMap(FILE, "a = 1\r\n[t]\r\nb = 'x'\r\n")
    loc = sm.value_location(("t", "b"))
    assert where(loc) == (3, 5, 3)
    assert loc.source_line == "b = 'x'"


def test_datetime_values_with_space_separator():
    sm = smap("when = 1979-05-27 07:32:00Z # c\nnext = 1\n")
    assert span(sm.value_location(("when",))) == "1979-05-27 07:32:00Z"
    assert sm.locate(("next",)).line == 2


def test_source_line_is_the_full_line():
    sm = smap("[train]\n  max_steps = 10  # note\n")
    assert sm.locate(("train", "max_steps")).source_line == "  max_steps = 10  # note"


# -- locate fallbacks ------------------------------------------------------------


def test_missing_key_falls_back_to_table_header(recipe_map):
    assert recipe_map.locate(("train", "nope")) == recipe_map.locate(("train",))
    assert recipe_map.locate(("model", "lora", "r")) == recipe_map.locate(("model", "lora"))
    source = ("data", "sources", 1)
    assert recipe_map.locate(source + ("x", "y")) == recipe_map.locate(source)


def test_missing_array_entry_falls_back_to_the_array(recipe_map):
    assert recipe_map.locate(("data", "sources", 7)) == recipe_map.locate(("data", "sources"))


def test_missing_top_level_table_is_whole_file(recipe_map):
    assert recipe_map.locate(("peft",)) == Location(FILE, 0, 0)
    assert recipe_map.locate(("peft", "alpha")) == Location(FILE, 0, 0)
    assert recipe_map.locate(()) == Location(FILE, 0, 0)
    assert recipe_map.value_location(("peft",)) == Location(FILE, 0, 0)


def test_is_set_and_origin(recipe_map):
    assert recipe_map.is_set(("model", "lora", "alpha"))
    assert recipe_map.is_set(("optim", "betas", 1))
    assert not recipe_map.is_set(("optim", "betas", 2))
    assert not recipe_map.is_set(("optim", "weight_decay"))
    assert recipe_map.origin(("model", "lora", "alpha")) == f"{FILE}:16"
    assert recipe_map.origin(("data", "sources", 1)) == f"{FILE}:25"
    assert recipe_map.origin(("optim", "weight_decay")) is None


def test_empty_text():
    sm = SourceMap(FILE, "")
    assert sm.paths() == []
    assert sm.locate(("a",)) == Location(FILE, 0, 0)


# -- reading files ----------------------------------------------------------------


def test_read_recipe_from_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "x.toml").write_text('[train]\nmax_steps = 10\n', encoding="utf-8")
    data, sm = read_recipe("recipes/x.toml")
    assert data == {"train": {"max_steps": 10}}
    assert sm.file == "recipes/x.toml"
    assert sm.locate(("train", "max_steps")) == Location(
        "recipes/x.toml", 2, 1, 9, "max_steps = 10"
    )
    assert sm.origin(("train", "max_steps")) == "recipes/x.toml:2"


def test_read_recipe_accepts_pathlike_and_keeps_display_path(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("a = 1\n", encoding="utf-8")
    _, sm = read_recipe(path)
    assert sm.file == str(path)


def test_read_recipe_strips_utf8_bom(tmp_path):
    path = tmp_path / "r.toml"
    path.write_bytes("\ufeffa = 'é'\n".encode())
    data, sm = read_recipe(path)
    assert data == {"a": "é"}
    assert where(sm.locate(("a",))) == (1, 1, 1)


def test_missing_file(tmp_path):
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(RecipeError) as info:
        read_recipe(missing)
    d = only_error(info)
    assert d.message == "cannot read recipe: No such file or directory"
    assert d.location == Location(missing, 0, 0)
    assert d.help is None


def test_missing_file_suggests_a_close_name(tmp_path):
    (tmp_path / "lora.toml").write_text("a = 1\n")
    with pytest.raises(RecipeError) as info:
        read_recipe(tmp_path / "lora.tmol")
    assert only_error(info).help == f"did you mean `{tmp_path / 'lora.toml'}`?"


def test_directory_is_not_a_recipe(tmp_path):
    with pytest.raises(RecipeError) as info:
        read_recipe(tmp_path)
    d = only_error(info)
    assert d.message == "cannot read recipe: Is a directory"
    assert d.location == Location(str(tmp_path), 0, 0)


def test_not_utf8(tmp_path):
    path = tmp_path / "r.toml"
    path.write_bytes(b"a = 1\nb = '\xff'\n")
    with pytest.raises(RecipeError) as info:
        read_recipe(path)
    d = only_error(info)
    assert d.message == "cannot read recipe: not valid UTF-8 (byte 0xff on line 2)"
    assert d.location == Location(str(path), 0, 0)


def test_unreadable_file_and_bad_override_are_reported_together(tmp_path):
    with pytest.raises(RecipeError) as info:
        read_recipe(tmp_path / "nope.toml", ["no_equals_sign"])
    files = [d.location.file for d in info.value.diagnostics]
    assert files == [str(tmp_path / "nope.toml"), "--set"]


# -- syntax errors -----------------------------------------------------------------


def syntax_error(text: str):
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, FILE)
    return only_error(info)


def test_unquoted_string_value():
    d = syntax_error('[model]\nname = hello world\n')
    assert d.message == "invalid TOML: Invalid value"
    assert d.location == Location(FILE, 2, 8, 1, "name = hello world")
    assert d.help == 'strings must be quoted: name = "hello world"'


def test_unquoted_path_value_gets_hint():
    d = syntax_error("path = ./models/tiny\n")
    assert d.help == 'strings must be quoted: path = "./models/tiny"'


def test_unquoted_string_in_array_gets_hint():
    d = syntax_error("x = [\n  foo,\n]\n")
    assert where(d.location) == (2, 3, 1)
    assert d.help == 'strings must be quoted: "foo"'


def test_invalid_number_has_no_string_hint():
    d = syntax_error("x = 1.2.3\n")
    assert d.message.startswith("invalid TOML: ")
    assert d.location.line == 1
    assert d.help is None


def test_missing_equals():
    d = syntax_error("a = 1\nb 2\n")
    assert d.message == "invalid TOML: Expected '=' after a key in a key/value pair"
    assert d.location == Location(FILE, 2, 3, 1, "b 2")
    assert d.help == "write each setting as `key = value`"


def test_unterminated_string():
    d = syntax_error('a = 1\ns = "abc\n')
    assert d.message == "invalid TOML: Illegal character '\\n'"
    assert where(d.location) == (2, 9, 1)
    assert "multi-line" in d.help


def test_error_at_end_of_document_points_at_last_line():
    d = syntax_error("a = 1\nx = [1, 2\n\n")
    assert d.message == "invalid TOML: Unclosed array"
    assert d.location == Location(FILE, 2, 10, 1, "x = [1, 2")


def test_duplicate_key_points_at_second_definition():
    d = syntax_error("[t]\nb = 2\n\n  b = 3\n")
    assert d.message == "invalid TOML: Cannot overwrite a value"
    assert d.location == Location(FILE, 4, 3, 1, "  b = 3")
    assert d.help == "`t.b` is already defined on line 2"


def test_duplicate_table():
    d = syntax_error("[train]\nx = 1\n[model]\n[train]\n")
    assert d.message == "invalid TOML: Cannot declare table `train` twice"
    assert d.location == Location(FILE, 4, 2, 5, "[train]")
    assert d.help == "`train` is already defined on line 1"


def test_table_over_a_value():
    d = syntax_error("a = 1\n[a.b]\n")
    assert d.location == Location(FILE, 2, 2, 3, "[a.b]")
    assert d.help == "`a` is already defined on line 1"


def test_duplicate_inside_inline_table_keeps_tomllib_position():
    d = syntax_error("t = {a = 1, a = 2}\n")
    assert d.message == "invalid TOML: Duplicate inline table key 'a'"
    assert d.location.line == 1
    assert d.help is None


def test_syntax_error_has_no_position_suffix():
    d = syntax_error("= 1\n")
    assert "(at line" not in d.message and "column" not in d.message


def test_syntax_error_formats_cleanly():
    with pytest.raises(RecipeError) as info:
        parse_recipe("[model]\nname = hello\n", "recipes/lora.toml")
    assert format_diagnostics(info.value.diagnostics) == (
        "error: invalid TOML: Invalid value\n"
        " --> recipes/lora.toml:2:8\n"
        "  |\n"
        "2 | name = hello\n"
        "  |        ^\n"
        '  = help: strings must be quoted: name = "hello"\n'
        "1 error in recipes/lora.toml"
    )


# -- parse_override ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "path", "value"),
    [
        ("train.max_steps=20", ("train", "max_steps"), 20),
        ("optim.lr=3e-4", ("optim", "lr"), 3e-4),
        ("optim.lr = 0.5", ("optim", "lr"), 0.5),
        ("train.bf16=true", ("train", "bf16"), True),
        ("train.bf16=false", ("train", "bf16"), False),
        ("optim.betas=[0.9, 0.95]", ("optim", "betas"), [0.9, 0.95]),
        ('name="x y"', ("name",), "x y"),
        ("name='lit'", ("name",), "lit"),
        ("model.path=./models/tiny", ("model", "path"), "./models/tiny"),
        ("model.name=gpt2", ("model", "name"), "gpt2"),
        ("note=a = b", ("note",), "a = b"),
        ("empty=", ("empty",), ""),
        ("peft={r = 8, alpha = 16}", ("peft",), {"r": 8, "alpha": 16}),
        ("day=2024-01-02", ("day",), dt.date(2024, 1, 2)),
        ("data.sources[0].path=x.txt", ("data", "sources", 0, "path"), "x.txt"),
        ("optim.betas[1]=0.99", ("optim", "betas", 1), 0.99),
        ("grid[0][12]=1", ("grid", 0, 12), 1),
        ('peft."target.modules"=2', ("peft", "target.modules"), 2),
        ('peft."a=b"=1', ("peft", "a=b"), 1),
        ("x.'q=r'.y=[1, {a = 2}]", ("x", "q=r", "y"), [1, {"a": 2}]),
        ("a=1\nb=2", ("a",), "1\nb=2"),  # two statements are not one value
        ("a-b.c_d=1", ("a-b", "c_d"), 1),
    ],
)
def test_parse_override(arg, path, value):
    got_path, got_value = parse_override(arg)
    assert got_path == path
    assert got_value == value
    assert type(got_value) is type(value)


BAD_INDEX = "invalid array index in --set: expected `[N]` with N a non-negative integer"


@pytest.mark.parametrize(
    ("arg", "message", "col", "length"),
    [
        ("train.max_steps", "--set expects `key=value`, got `train.max_steps`", 1, 15),
        ("=5", "missing key before `=` in --set", 1, 1),
        ("  =5", "missing key before `=` in --set", 3, 1),
        ("a..b=1", "invalid key in --set: expected a key name, found `.`", 3, 1),
        (".a=1", "invalid key in --set: expected a key name, found `.`", 1, 1),
        ("a.=1", "invalid key in --set: expected a key name, found end of key", 3, 1),
        ("a[x]=1", BAD_INDEX, 2, 3),
        ("a[-1]=1", BAD_INDEX, 2, 4),
        ("a b=1", "invalid key in --set: unexpected ` `", 2, 1),
        ('a."x=1', "--set expects `key=value`, got `a.\"x=1`", 1, 6),
    ],
)
def test_bad_overrides(arg, message, col, length):
    with pytest.raises(RecipeError) as info:
        parse_override(arg)
    d = only_error(info)
    assert d.message == message
    assert d.location == Location("--set", 0, col, length, arg)
    assert "--set key.path=value" in d.help


def test_bad_override_formats_with_the_argument():
    with pytest.raises(RecipeError) as info:
        parse_override("train.max_steps")
    assert format_diagnostics(info.value.diagnostics) == (
        "error: --set expects `key=value`, got `train.max_steps`\n"
        " --> --set train.max_steps\n"
        "  |\n"
        "  | train.max_steps\n"
        "  | ^^^^^^^^^^^^^^^\n"
        "  = help: write overrides as `--set key.path=value`, e.g. `--set train.max_steps=100`\n"
        "1 error"
    )


# -- apply_overrides ------------------------------------------------------------------


def test_apply_overrides_returns_new_dict_and_creates_tables():
    data = {"train": {"max_steps": 10}, "optim": {"betas": [0.9, 0.95]}}
    result = apply_overrides(
        data,
        [
            (("train", "max_steps"), 20),
            (("peft", "lora", "r"), 8),
            (("optim", "betas", 1), 0.99),
        ],
    )
    assert result == {
        "train": {"max_steps": 20},
        "optim": {"betas": [0.9, 0.99]},
        "peft": {"lora": {"r": 8}},
    }
    assert data == {"train": {"max_steps": 10}, "optim": {"betas": [0.9, 0.95]}}


def test_apply_overrides_table_value_replaces_table_and_later_wins():
    data = {"peft": {"r": 4, "alpha": 8}}
    result = apply_overrides(data, [(("peft",), {"r": 16}), (("peft", "dropout"), 0.1)])
    assert result == {"peft": {"r": 16, "dropout": 0.1}}
    result = apply_overrides(data, [(("peft", "r"), 1), (("peft", "r"), 2)])
    assert result == {"peft": {"r": 2, "alpha": 8}}


def test_apply_overrides_values_are_not_shared():
    result = apply_overrides({"a": {}, "b": {}}, [(("a", "x"), [1]), (("b", "x"), [1])])
    result["a"]["x"].append(2)
    assert result["b"]["x"] == [1]


def test_apply_overrides_into_array_of_tables():
    data = {"data": {"sources": [{"path": "a"}, {"path": "b"}]}}
    result = apply_overrides(data, [(("data", "sources", 1, "path"), "c")])
    assert result["data"]["sources"] == [{"path": "a"}, {"path": "c"}]


@pytest.mark.parametrize(
    ("path", "message", "help"),
    [
        (
            ("data", "sources", 5, "path"),
            "no such entry `data.sources[5]`",
            "`data.sources` has 2 entries (indices 0 to 1)",
        ),
        (("data", "one", 1), "no such entry `data.one[1]`", "`data.one` has 1 entry (index 0)"),
        (("data", "none", 0), "no such entry `data.none[0]`", "`data.none` has 0 entries"),
        (("zz", 0), "no such entry `zz[0]`", "`zz` is not set, so it has no entries"),
        (
            ("train", "max_steps", "x"),
            "cannot set `train.max_steps.x`: `train.max_steps` is an integer, not a table",
            None,
        ),
        (
            ("data", "sources", "path"),
            "cannot set `data.sources.path`: `data.sources` is an array, not a table",
            "use `[N]` to pick an entry, e.g. `data.sources[0].path`",
        ),
        (("train", 0), "cannot index `train` with [0]: it is a table, not an array", None),
    ],
)
def test_apply_overrides_errors(path, message, help):
    data = {
        "data": {"sources": [{"path": "a"}, {"path": "b"}], "one": [1], "none": []},
        "train": {"max_steps": 10},
    }
    with pytest.raises(RecipeError) as info:
        apply_overrides(data, [(path, 1)])
    d = only_error(info)
    assert d.message == message
    assert d.help == help
    assert d.location.file == "--set"


def test_apply_overrides_reports_all_errors_at_once():
    with pytest.raises(RecipeError) as info:
        apply_overrides({"a": 1}, [(("a", "b"), 1), (("c", 0), 2), (("d",), 3)])
    assert len(info.value.diagnostics) == 2


# -- read_recipe with overrides ---------------------------------------------------------

BASE = """
[train]
max_steps = 10
lr = 0.1

[[data.sources]]
path = "a.txt"

[[data.sources]]
path = "b.txt"
"""


def test_override_location_points_at_key_and_value():
    data, sm = load(BASE, ["train.max_steps=20"])
    assert data["train"] == {"max_steps": 20, "lr": 0.1}
    assert sm.locate(("train", "max_steps")) == Location("--set", 0, 1, 15, "train.max_steps=20")
    assert sm.value_location(("train", "max_steps")) == Location("--set", 0, 17, 2, "train.max_steps=20")
    assert sm.origin(("train", "max_steps")) == "--set train.max_steps=20"
    assert sm.is_set(("train", "max_steps"))
    # untouched keys still point into the file
    assert sm.locate(("train", "lr")).file == FILE
    assert sm.origin(("train", "lr")) == f"{FILE}:3"
    assert sm.origin(("train",)) == f"{FILE}:1"


def test_override_value_with_spaces_after_equals():
    _, sm = load(BASE, ["train.lr =  0.5 "])
    assert sm.value_location(("train", "lr")) == Location("--set", 0, 13, 3, "train.lr =  0.5 ")


def test_override_of_new_key_and_its_new_parents():
    data, sm = load(BASE, ["peft.lora.r=8"])
    assert data["peft"] == {"lora": {"r": 8}}
    assert sm.locate(("peft", "lora", "r")) == Location("--set", 0, 1, 11, "peft.lora.r=8")
    assert sm.value_location(("peft", "lora", "r")) == Location("--set", 0, 13, 1, "peft.lora.r=8")
    assert sm.locate(("peft",)) == Location("--set", 0, 1, 4, "peft.lora.r=8")
    assert span(sm.locate(("peft", "lora"))) == "peft.lora"
    assert sm.is_set(("peft",)) and sm.origin(("peft",)) == "--set peft.lora.r=8"
    assert not sm.is_set(("peft", "lora", "alpha"))
    assert sm.origin(("peft", "lora", "alpha")) is None
    # a missing key under a new table still points at the override
    assert sm.locate(("peft", "lora", "alpha")).file == "--set"


def test_override_into_array_of_tables():
    data, sm = load(BASE, ["data.sources[1].path=c.txt"])
    assert [s["path"] for s in data["data"]["sources"]] == ["a.txt", "c.txt"]
    assert span(sm.locate(("data", "sources", 1, "path"))) == "data.sources[1].path"
    assert span(sm.value_location(("data", "sources", 1, "path"))) == "c.txt"
    assert sm.locate(("data", "sources", 0, "path")).line == 6


def test_override_replacing_a_table_covers_its_descendants():
    data, sm = load(BASE, ["train={max_steps = 5, sched = {kind = 'cos'}}"])
    assert data["train"] == {"max_steps": 5, "sched": {"kind": "cos"}}
    arg = "train={max_steps = 5, sched = {kind = 'cos'}}"
    assert sm.locate(("train",)) == Location("--set", 0, 1, 5, arg)
    assert sm.value_location(("train",)) == Location("--set", 0, 7, len(arg) - 6, arg)
    assert span(sm.locate(("train", "max_steps"))) == "max_steps"
    assert span(sm.value_location(("train", "max_steps"))) == "5"
    assert span(sm.locate(("train", "sched", "kind"))) == "kind"
    assert span(sm.value_location(("train", "sched", "kind"))) == "'cos'"
    # lr was in the file but the table was replaced: it is no longer set
    assert not sm.is_set(("train", "lr"))
    assert sm.origin(("train", "lr")) is None
    assert sm.locate(("train", "lr")).file == "--set"


def test_later_override_adds_into_replaced_table():
    _, sm = load(BASE, ["train={max_steps = 5}", "train.extra.deep=1"])
    assert sm.origin(("train", "extra")) == "--set train.extra.deep=1"
    assert sm.origin(("train", "max_steps")) == "--set train={max_steps = 5}"
    assert span(sm.locate(("train", "extra"))) == "train.extra"


def test_override_with_array_value_locates_elements():
    arg = "optim.betas=[0.9, {x = [1, 2]}]"
    _, sm = parse_recipe("[optim]\nbetas = [0.1]\n", FILE, [arg])
    assert sm.locate(("optim", "betas", 0)) == Location("--set", 0, 14, 3, arg)
    assert span(sm.locate(("optim", "betas", 1, "x"))) == "x"
    assert span(sm.value_location(("optim", "betas", 1, "x", 1))) == "2"
    # a missing path inside the value points at its nearest written ancestor
    assert span(sm.locate(("optim", "betas", 1, "x", 9))) == "x"
    assert span(sm.locate(("optim", "betas", 1, "nope"))) == "{x = [1, 2]}"
    assert span(sm.value_location(("optim", "betas", 1, "nope"))) == "{x = [1, 2]}"
    assert not sm.is_set(("optim", "betas", 1, "nope"))


def test_override_of_plain_array_element():
    data, sm = parse_recipe("[optim]\nbetas = [0.9, 0.95]\n", FILE, ["optim.betas[1]=0.99"])
    assert data["optim"]["betas"] == [0.9, 0.99]
    assert span(sm.locate(("optim", "betas", 1))) == "optim.betas[1]"
    assert span(sm.value_location(("optim", "betas", 1))) == "0.99"
    assert sm.locate(("optim", "betas", 0)).file == FILE


def test_override_out_of_range_index_names_the_override():
    with pytest.raises(RecipeError) as info:
        load(BASE, ["data.sources[5].path=x"])
    d = only_error(info)
    assert d.message == "no such entry `data.sources[5]`"
    assert d.location == Location("--set", 0, 13, 3, "data.sources[5].path=x")
    assert d.help == "`data.sources` has 2 entries (indices 0 to 1)"


def test_override_through_a_scalar_points_at_that_key():
    with pytest.raises(RecipeError) as info:
        load(BASE, ["train.max_steps.x=1"])
    assert only_error(info).location == Location("--set", 0, 7, 9, "train.max_steps.x=1")


def test_all_override_errors_are_reported_together():
    with pytest.raises(RecipeError) as info:
        load(BASE, ["bad", "train.x=1", "=2", "data.sources[9].path=x"])
    messages = [d.message for d in info.value.diagnostics]
    assert len(messages) == 2
    assert messages[0].startswith("--set expects")
    assert messages[1].startswith("missing key")


def test_syntax_error_and_override_error_reported_together():
    with pytest.raises(RecipeError) as info:
        parse_recipe("a = \n", FILE, ["oops"])
    files = [d.location.file for d in info.value.diagnostics]
    assert files == [FILE, "--set"]


def test_format_key_path():
    assert format_key_path(("data", "sources", 0, "path")) == "data.sources[0].path"
    assert format_key_path(("peft", "a.b", "x y")) == 'peft."a.b"."x y"'
    assert format_key_path(()) == ""


# -- property: every written key is located at its text ----------------------------------

_KEY_CHARS = st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from("éß名")
_keys = st.text(alphabet="abcxyz_-09", min_size=1, max_size=6) | st.text(
    alphabet=_KEY_CHARS, min_size=1, max_size=6
)
_strings = st.text(alphabet=_KEY_CHARS | st.sampled_from("\n"), max_size=20)
_scalars = (
    st.integers(-(10**9), 10**9)
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _strings
)
_one_line = _strings.filter(lambda s: "\n" not in s)
_leaf = _scalars | st.lists(st.integers(-99, 99) | _one_line, max_size=3)
_tables = st.recursive(
    st.dictionaries(_keys, _leaf, max_size=4),
    lambda children: st.dictionaries(_keys, children | _leaf, max_size=4),
    max_leaves=12,
)


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        if "\n" in v:
            body = v.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\r")
            if body.startswith("\n"):
                body = "\\n" + body[1:]
            return '"""' + body + '"""'
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def _expect_inline(path, value, expected):
    """Expected key texts inside an inline value (dicts and lists)."""
    if isinstance(value, dict):
        for k, v in value.items():
            expected[path + (k,)] = _key(k)
            _expect_inline(path + (k,), v, expected)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            expected[path + (i,)] = _value(v)


def _serialize(table: dict, path: tuple, modes, lines: list, expected: dict) -> None:
    """Write ``table`` (already under header ``path``) as TOML, recording key texts."""
    headers = []
    for k, v in table.items():
        if isinstance(v, dict):
            mode = modes.draw(st.sampled_from(["header", "inline", "dotted"]))
            if mode == "header":
                headers.append((k, v))
                continue
            if mode == "inline":
                lines.append(f"{_key(k)} = {_value(v)}")
                expected[path + (k,)] = _key(k)
                _expect_inline(path + (k,), v, expected)
                continue
            _dotted(path, (k,), v, lines, expected)
            continue
        lines.append(f"{_key(k)} = {_value(v)}")
        expected[path + (k,)] = _key(k)
        _expect_inline(path + (k,), v, expected)
    for k, v in headers:
        full = path + (k,)
        header = ".".join(_key(p) for p in full)
        lines.append(f"[{header}]")
        expected[full] = header
        _serialize(v, full, modes, lines, expected)


def _dotted(path: tuple, rel: tuple, table: dict, lines: list, expected: dict) -> None:
    prefix = ".".join(_key(p) for p in rel)
    expected.setdefault(path + rel, prefix)
    if not table:
        lines.append(f"{prefix} = {{}}")
        return
    for k, v in table.items():
        if isinstance(v, dict):
            _dotted(path, rel + (k,), v, lines, expected)
        else:
            key = f"{prefix}.{_key(k)}"
            lines.append(f"{key} = {_value(v)}")
            expected[path + rel + (k,)] = key
            _expect_inline(path + rel + (k,), v, expected)


def _lookup(data, path):
    for p in path:
        data = data[p]
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=_tables, modes=st.data())
def test_every_written_key_is_located_at_its_text(table, modes):
    lines: list[str] = []
    expected: dict = {}
    _serialize(table, (), modes, lines, expected)
    text = "\n".join(lines) + "\n"
    assert tomllib.loads(text) == table  # the serializer itself is right

    data, sm = parse_recipe(text, FILE)
    assert set(sm.paths()) == set(expected)
    for path, key_text in expected.items():
        loc = sm.locate(path)
        assert loc.file == FILE and loc.line > 0
        assert loc.source_line == text.split("\n")[loc.line - 1]
        assert span(loc) == key_text, (path, loc)
        value = _lookup(data, path)
        if isinstance(value, dict) or (isinstance(value, str) and "\n" in value):
            continue
        value_text = span(sm.value_location(path))
        assert tomllib.loads(f"v = {value_text}")["v"] == value
