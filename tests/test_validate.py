"""validate: recipe mistakes become located diagnostics, every one at once, never pydantic text.

tests/bad_recipes/NAME.toml sits beside NAME.err, the exact stderr of
`recipec --no-color validate tests/bad_recipes/NAME.toml` run from the repository root.
Regenerate the .err files with `pytest tests/test_validate.py --update-golden`, then read
the diff: each location must point at the offending key or value.
"""

from __future__ import annotations

import datetime as dt
import difflib
import textwrap
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from recipec.cli import main
from recipec.diagnostics import RecipeError, format_diagnostics
from recipec.schema import RENAMED, Recipe
from recipec.source import parse_recipe
from recipec.validate import validate

BAD = Path(__file__).resolve().parent / "bad_recipes"
REPO = BAD.parent.parent
BAD_CASES = sorted(p.stem for p in BAD.glob("*.toml"))

PYDANTIC_NOISE = ("Traceback", "type=", "pydantic", "Input should", "https://", "input_value", "For further information")

# Cases whose current output is wrong. Their .err holds the output recipec should give;
# --update-golden leaves them alone. Remove a name here when its bug is fixed.
KNOWN_BUGS: dict[str, str] = {}


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, cwd: Path = REPO):
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(main, ["--no-color", *args])


def check_no_noise(text: str) -> None:
    for noise in PYDANTIC_NOISE:
        assert noise not in text, f"{noise!r} leaked into the user-facing output:\n{text}"


# -- bad recipes beside their expected errors ----------------------------------------


def test_bad_recipe_corpus_is_complete():
    assert len(BAD_CASES) >= 20
    errs = {p.stem for p in BAD.glob("*.err")}
    assert errs == set(BAD_CASES), "every bad recipe needs its .err and every .err its recipe"
    assert set(KNOWN_BUGS) <= set(BAD_CASES)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[n])) if n in KNOWN_BUGS else n
        for n in BAD_CASES
    ],
)
def test_bad_recipe(name: str, monkeypatch: pytest.MonkeyPatch, update_golden: bool):
    rel = f"tests/bad_recipes/{name}.toml"
    result = run_cli(["validate", rel], monkeypatch)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == 2, result.output
    assert result.stdout == "", "nothing but the diagnostics may be printed"
    check_no_noise(result.stderr)
    err_file = BAD / f"{name}.err"
    if update_golden and name not in KNOWN_BUGS:
        err_file.write_text(result.stderr, encoding="utf-8")
        return
    expected = err_file.read_text(encoding="utf-8") if err_file.exists() else ""
    if result.stderr != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                result.stderr.splitlines(keepends=True),
                f"{name}.err (expected)",
                "recipec validate (actual)",
            )
        )
        pytest.fail(
            f"`recipec --no-color validate {rel}` differs from {rel[:-5]}.err:\n{diff}\n"
            f"if the new text is right, regenerate with:\n"
            f"  pytest tests/test_validate.py -k {name} --update-golden",
            pytrace=False,
        )


def test_several_errors_are_all_reported_in_line_order(monkeypatch: pytest.MonkeyPatch):
    result = run_cli(["validate", "tests/bad_recipes/several_errors.toml"], monkeypatch)
    arrows = [line for line in result.stderr.splitlines() if line.lstrip().startswith("-->")]
    lines = [int(a.rsplit(":", 2)[1]) for a in arrows]
    assert len(lines) == 5
    assert lines == sorted(lines)
    assert result.stderr.rstrip().endswith("5 errors in tests/bad_recipes/several_errors.toml")


# -- --set mistakes point into the argument --------------------------------------------


SET_CASES = {
    "train.max_steps": """\
        error: --set expects `key=value`, got `train.max_steps`
         --> --set train.max_steps
          |
          | train.max_steps
          | ^^^^^^^^^^^^^^^
          = help: write overrides as `--set key.path=value`, e.g. `--set train.max_steps=100`
        1 error
        """,
    "train.max_steps=abc": """\
        error: `train.max_steps` must be an integer, not the string "abc"
         --> --set train.max_steps=abc
          |
          | train.max_steps=abc
          |                 ^^^
        1 error
        """,
    "schedule.decay=cosin": """\
        error: `schedule.decay` must be one of "constant", "linear", "cosine", "inverse_sqrt", "polynomial", "wsd", "cyclic", "cosine_restarts", not the string "cosin"
         --> --set schedule.decay=cosin
          |
          | schedule.decay=cosin
          |                ^^^^^
          = help: did you mean `cosine`?
        1 error
        """,
    'output.trackers=["tensorbaord"]': """\
        error: `output.trackers[0]` must be one of "tensorboard", "wandb", "mlflow", "aim", not the string "tensorbaord"
         --> --set output.trackers=["tensorbaord"]
          |
          | output.trackers=["tensorbaord"]
          |                  ^^^^^^^^^^^^^
          = help: did you mean `tensorboard`?
        1 error
        """,
    "data.sources[3].path=x": """\
        error: no such entry `data.sources[3]`
         --> --set data.sources[3].path=x
          |
          | data.sources[3].path=x
          |             ^^^
          = help: `data.sources` has 1 entry (index 0)
        1 error
        """,
    "train..max_steps=1": """\
        error: invalid key in --set: expected a key name, found `.`
         --> --set train..max_steps=1
          |
          | train..max_steps=1
          |       ^
          = help: write overrides as `--set key.path=value`, e.g. `--set train.max_steps=100`
        1 error
        """,
}


@pytest.mark.parametrize("arg", list(SET_CASES))
def test_bad_set_argument(arg: str, minimal_recipe: Path, monkeypatch: pytest.MonkeyPatch):
    result = run_cli(["validate", minimal_recipe.name, "--set", arg], monkeypatch, cwd=minimal_recipe.parent)
    assert result.exit_code == 2
    assert result.stdout == ""
    check_no_noise(result.stderr)
    assert result.stderr == textwrap.dedent(SET_CASES[arg])


def test_unknown_key_in_set_underlines_the_key(minimal_recipe: Path, monkeypatch: pytest.MonkeyPatch):
    result = run_cli(["validate", minimal_recipe.name, "--set", "optim.lrr=1"], monkeypatch, cwd=minimal_recipe.parent)
    assert result.exit_code == 2
    assert "unknown key `optim.lrr`" in result.stderr
    assert "did you mean `lr`?" in result.stderr
    assert "  | optim.lrr=1\n  | ^^^^^^^^^\n" in result.stderr


def test_set_error_and_file_error_are_reported_together(write_recipe, monkeypatch: pytest.MonkeyPatch):
    path = write_recipe({"optim.lrr": 1.0})
    result = run_cli(["validate", path.name, "--set", "train.max_steps=abc"], monkeypatch, cwd=path.parent)
    assert result.exit_code == 2
    # the file's error first (by line), then the argument's
    assert result.stderr.index("unknown key `optim.lrr`") < result.stderr.index("`train.max_steps` must be an integer")
    assert "2 errors in recipe.toml" in result.stderr


# -- validate() as a function ---------------------------------------------------------


def diagnostics_of(text: str, overrides=()) -> list:
    data, source = parse_recipe(text, "r.toml", overrides)
    with pytest.raises(RecipeError) as info:
        validate(data, source)
    return info.value.diagnostics


def test_minimal_recipe_validates_to_frozen_models(recipe_text):
    data, source = parse_recipe(recipe_text(), "r.toml")
    recipe = validate(data, source)
    assert isinstance(recipe, Recipe)
    assert recipe.model.config.hidden_size == 64
    with pytest.raises(ValidationError):
        recipe.train.max_steps = 5  # frozen


@pytest.mark.parametrize(
    ("dotted", "expected"),
    [
        ({"optim.lr": 1}, 1.0),  # an integer is accepted as a number
        ({"schedule.warmup": 10}, 10),  # steps
        ({"schedule.warmup": 0.1}, 0.1),  # fraction
        ({"data.sources": [{"path": ["a/*.jsonl", "b/*.txt"], "text_field": "body"}]}, None),
    ],
)
def test_valid_variants(dotted: dict[str, Any], expected: Any, recipe_text):
    data, source = parse_recipe(recipe_text(dotted), "r.toml")
    recipe = validate(data, source)
    if expected is not None:
        key = next(iter(dotted))
        table, field = key.split(".")
        value = getattr(getattr(recipe, table), field)
        assert value == expected and type(value) is type(expected)


def _leaf_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every scalar key of the schema reachable without arrays, as dotted paths."""
    out = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        sub = None
        for arg in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                sub = arg
        if sub is not None and name != "sources":
            out.extend(_leaf_paths(sub, prefix + (name,)))
        elif name != "sources":
            out.append(prefix + (name,))
    return out


LEAVES = _leaf_paths(Recipe)


def test_leaf_sweep_is_broad():
    assert len(LEAVES) >= 40
    assert ("model", "config", "hidden_size") in LEAVES
    assert ("tokenizer", "train", "vocab_size") in LEAVES


@pytest.mark.parametrize("path", LEAVES, ids=".".join)
def test_wrong_type_anywhere_is_one_located_plain_error(path: tuple[str, ...], recipe_data):
    """A TOML datetime fits no key: the error names the key, points at its line, and is plain."""
    data = recipe_data()
    if path[0] == "tokenizer" and path[1] == "path":
        data["tokenizer"].pop("train")
    if path[:2] == ("model", "path"):
        data["model"].pop("init")
        data["model"].pop("config")
    if path[0] == "ema":
        data["ema"] = {"decay": 0.999}
    if path[0] == "continual":
        data["continual"] = {"from": "runs/parent"}
        path = ("continual", "from") if path[1] == "from_" else path
    if path[:2] == ("optim", "scaling"):
        data.setdefault("optim", {}).pop("lr", None)
        data["optim"]["scaling"] = {"reference_batch": 8, "reference_lr": 1e-3}
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = dt.datetime(2020, 1, 2, 3, 4, 5)
    text = tomli_w.dumps(data)
    diagnostics = diagnostics_of(text)
    name = ".".join(path)
    assert len(diagnostics) == 1, format_diagnostics(diagnostics)
    d = diagnostics[0]
    assert f"`{name}`" in d.message
    assert d.location is not None and d.location.line > 0
    assert d.location.source_line.strip().startswith(f"{path[-1]} = 2020-01-02")
    assert d.location.source_line[d.location.col - 1 :].startswith("2020-01-02")
    check_no_noise(format_diagnostics(diagnostics))


@pytest.mark.parametrize("renamed", sorted(RENAMED), ids=".".join)
def test_renamed_keys_say_what_they_are_called_here(renamed: tuple[str, ...], recipe_text):
    if len(renamed) == 1:
        text = recipe_text(text=f"[{renamed[0]}]\nx = 1")
    else:
        text = recipe_text({".".join(renamed): 1})
    diagnostics = diagnostics_of(text)
    unknown = [d for d in diagnostics if d.message == f"unknown key `{'.'.join(renamed)}`"]
    assert len(unknown) == 1, format_diagnostics(diagnostics)
    assert unknown[0].help == f"`{renamed[-1]}` is {RENAMED[renamed]} in recipec"
    assert unknown[0].location.line > 0


def test_errors_in_several_tables_are_all_collected(recipe_text):
    text = recipe_text({"optim.lr": -1.0, "train.batch_size": "8", "schedule.decay": "cosin", "launch.cpux": True})
    diagnostics = diagnostics_of(text)
    messages = [d.message for d in diagnostics]
    assert len(diagnostics) == 4, messages
    assert any("optim.lr" in m for m in messages)
    assert any("train.batch_size" in m for m in messages)
    assert any("schedule.decay" in m for m in messages)
    assert "unknown key `launch.cpux`" in messages


# -- no input makes the compiler crash --------------------------------------------------

toml_scalars = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.booleans()
    | st.text(max_size=12)
    | st.sampled_from(["llama", "bpe", "cosine", "python-docs", "./m", "~x/y", "a/*.jsonl", "bf16"])
    | st.sampled_from([dt.date(2020, 1, 2), dt.time(1, 2, 3)])
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["a", "path", "kind", "r"]), children, max_size=3),
    max_leaves=6,
)
KEY_PATHS = [".".join(p) for p in LEAVES] + ["recipe", "model", "model.config", "tokenizer", "tokenizer.train", "data",
                                             "data.sources", "optim", "schedule", "train", "launch", "output", "extra"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(KEY_PATHS), toml_values, min_size=1, max_size=3))
def test_any_value_anywhere_is_a_clean_error_or_a_build(changes, recipe_data):
    """validate -> resolve -> render either succeeds or raises RecipeError with plain, located text."""
    from recipec.render import render
    from recipec.resolve import resolve

    data = recipe_data()
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    try:
        text = tomli_w.dumps(data)
    except (TypeError, ValueError):
        return  # not representable in TOML (e.g. a list mixing tables and values in tomli_w)
    parsed, source = parse_recipe(text, "r.toml")
    try:
        plan = resolve(validate(parsed, source), source, recipe_file="r.toml")
        render(plan)
        event("valid")
    except RecipeError as exc:
        event("recipe error")
        assert all(d.severity in ("error", "warning") for d in exc.diagnostics)
        assert any(d.severity == "error" for d in exc.diagnostics)
        check_no_noise(format_diagnostics(exc.diagnostics))


def test_a_set_value_nested_too_deep_points_at_the_value(minimal_recipe: Path, monkeypatch: pytest.MonkeyPatch):
    """tomllib recurses once per bracket: a value past its recursion limit is an error, not a traceback."""
    deep = "[" * 2000 + "]" * 2000
    result = run_cli(["validate", minimal_recipe.name, "--set", f"model.config={deep}"], monkeypatch, cwd=minimal_recipe.parent)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid TOML: arrays and inline tables nested more than 100 deep\n --> --set ")


def test_a_wrong_value_nested_deep_is_described_briefly():
    """The error text renders a few levels of a nested list, whatever its depth."""
    from recipec.validate import _describe

    value: list = [1]
    for _ in range(5000):
        value = [value]
    assert _describe(value) == "[[[a list]]]"
    assert _describe([[1, "a"], 2.5]) == '[[1, the string "a"], 2.5]'


def test_alpaca_records_in_the_alpaca_prompt_style_need_no_chat_template(write_recipe, tmp_path: Path):
    """A trained tokenizer has no chat template: alpaca records rendered as a conversation need one,
    in the Alpaca prompt style (prompt/completion text) they do not."""
    from recipec.compiler import plan_recipe
    from recipec.diagnostics import RecipeError

    (tmp_path / "a.jsonl").write_text('{"instruction": "Add.", "output": "5"}\n')
    source = {"path": "a.jsonl", "records": "alpaca"}
    with pytest.raises(RecipeError, match="holds alpaca records, which are rendered with a chat template"):
        plan_recipe(write_recipe(data={"seq_len": 64, "sources": [source]}), project=tmp_path)
    plan, _ = plan_recipe(write_recipe(data={"seq_len": 64, "sources": [{**source, "prompt_style": "alpaca"}]}), project=tmp_path)
    assert plan["sources"][0]["prompt_style"] == "alpaca"
    with pytest.raises(RecipeError, match="prompt_style = \"alpaca\" renders no conversation"):
        plan_recipe(write_recipe(data={"seq_len": 64, "sources": [{**source, "prompt_style": "alpaca", "system": "drop"}]}), project=tmp_path)


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        (
            {"launch.num_processes": 4, "launch.num_machines": 2, "launch.main_process_ip": "env", "launch.machine_rank": "env", "launch.strategy": "fsdp", "launch.fsdp": {"sharding_strategy": "hybrid_shard"}},
            "sharding_strategy",
            "hybrid_shard keeps a replica",
        ),
        ({"launch.num_processes": 4, "launch.strategy": "fsdp", "launch.cpu": False, "launch.parallelism": {"tp_size": 2}}, "parallelism", "launch.parallelism sets tp_size 2"),
        ({"launch.num_processes": 2, "launch.strategy": "deepspeed", "launch.cpu": False}, "step_in_backward", "DeepSpeed steps its own optimizer"),
        ({"launch.num_processes": 2, "launch.strategy": "fsdp", "launch.fsdp": {"version": 1}}, "step_in_backward", "FSDP version 1"),
        ({"peft": {"method": "adalora"}}, "step_in_backward", "AdaLoRA scores its ranks"),
    ],
)
def test_what_step_in_backward_cannot_run_with_is_an_error_at_its_key(plan_of, changes, key, message):
    from recipec.diagnostics import RecipeError

    one_micro_batch = {"optim.grad_clip": 0, "optim.step_in_backward": True, "train.micro_batch_size": 4}
    processes = changes.get("launch.num_processes", 1)
    with pytest.raises(RecipeError) as info:
        plan_of({**one_micro_batch, "train.batch_size": 4 * processes, **changes})
    found = [d for d in info.value.diagnostics if message in d.message]
    assert found, [d.message for d in info.value.diagnostics]
    assert key in found[0].location.source_line  # located at the key
