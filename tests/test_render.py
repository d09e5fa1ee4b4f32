"""render: Python literals only, inert recipe strings, strict templates, loadable configs."""

from __future__ import annotations

import ast
import json
import math
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import jinja2
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recipec.render import comment, config_block, environment, plain_path, py_literal, render, template_dir, yaml_scalar
from recipec.resolve import resolve
from recipec.source import parse_recipe
from recipec.validate import validate

# -- py_literal ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**70),
        1e-8,
        -0.0,
        3.0,
        "",
        "it's \"quoted\" \\ and\nnew\tlines {{ x }} {% if %}",
        "é ∑ 😀 \x00 \x7f",
        [],
        {},
        [1, [2, [3, []]], {"a": None}],
        {"sources": [{"path": ["a/*.jsonl", "b"], "text_field": "body"}], "n": {"m": {"o": 1.5}}},
        {f"key{i}": list(range(i)) for i in range(12)},  # long: broken over lines
    ],
)
def test_py_literal_round_trips(value: Any):
    text = py_literal(value)
    assert eval(text, {"__builtins__": {}}) == value  # noqa: S307
    assert ast.literal_eval(text) == value


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=("Cs",))),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_py_literal_round_trips_any_nested_value(value: Any):
    text = py_literal(value)
    assert ast.literal_eval(text) == value


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        frozenset(),
        object(),
        float("nan"),
        float("inf"),
        -math.inf,
        b"bytes",
        [1, {"a": float("nan")}],
        {1: "int key"},
        {"nested": [object()]},
        Path("x"),
        1j,
    ],
    ids=lambda v: re.sub(r" at 0x[0-9a-f]+", "", repr(v)),  # the same ids in every process (pytest-xdist)
)
def test_py_literal_rejects_what_is_not_plain_data(value: Any):
    with pytest.raises(TypeError):
        py_literal(value)


def test_yaml_scalar():
    assert yaml_scalar("no") == '"no"'  # a YAML 1.1 boolean if left bare
    assert yaml_scalar(True) == "true"
    assert yaml_scalar(2) == "2"
    assert yaml_scalar(None) == "null"
    for bad in ([1], {"a": 1}, float("nan"), object()):
        with pytest.raises(TypeError):
            yaml_scalar(bad)


def test_comment_flattens_to_one_line():
    assert comment("a\nb\r\nc\td  e") == "a b c d e"
    assert "\n" not in comment("x\n# not a comment\nimport os")


def test_plain_path():
    assert plain_path("build/my-run_1.0") == "build/my-run_1.0"
    for bad in ("out dir", 'x"y', "a\nb", "$(rm -rf)", "a;b"):
        with pytest.raises(ValueError):
            plain_path(bad)


# -- the jinja2 environment -----------------------------------------------------------


def test_environment_is_strict():
    env = environment()
    assert env.undefined is jinja2.StrictUndefined
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("x = {{ missing }}").render()
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ plan.nope }}").render(plan={})
    assert env.trim_blocks and env.lstrip_blocks and env.keep_trailing_newline
    assert env.autoescape is False


def test_every_template_needs_its_variables(plan_of):
    """Rendering a template with a context that lacks a variable raises instead of printing ''."""
    env = environment()
    for name in ("train.py.j2", "accelerate_config.yaml.j2", "launch.sh.j2"):
        with pytest.raises(jinja2.UndefinedError):
            env.get_template(name).render({})


def test_templates_rely_on_the_plan_having_every_value():
    """resolve always sets what the templates test (fsdp_native is False without FSDP): no `is defined` guards."""
    for template in template_dir().glob("*.j2"):
        assert " is defined" not in template.read_text(), template.name


@pytest.mark.parametrize(
    ("launch", "native", "kind"),
    [
        ({}, False, "NO"),
        ({"strategy": "fsdp", "num_processes": 2}, False, "FSDP"),
        ({"strategy": "fsdp", "num_processes": 2, "cpu": True}, True, "MULTI_GPU"),
        ({"strategy": "deepspeed", "num_processes": 2}, False, "DEEPSPEED"),
    ],
)
def test_the_plan_says_how_the_run_is_launched(plan_of, launch, native, kind):
    plan = plan_of(launch=launch)
    assert plan.launch.fsdp_native is native and plan.launch.distributed_type == kind
    assert bool(plan.launch.fsdp_config) is (kind == "FSDP")
    assert bool(plan.launch.deepspeed_config) is (kind == "DEEPSPEED")
    train_py = render(plan)["train.py"]
    assert ("sharding.shard(model" in train_py) is native


def test_py_filter_is_applied(plan_of):
    env = environment()
    assert env.from_string("x = {{ v | py }}").render(v="a'b") == "x = \"a'b\""
    with pytest.raises(TypeError):
        env.from_string("x = {{ v | py }}").render(v={1, 2})


# -- the rendered build --------------------------------------------------------------


def test_render_produces_the_build_files(plan_of):
    files = render(plan_of())
    assert sorted(files) == [
        "accelerate_config.yaml", "launch.sh", "resolved.toml", "schedule.csv", "schedule.png", "train.py"
    ]
    assert files["schedule.png"].startswith(b"\x89PNG\r\n\x1a\n")
    for name, text in files.items():
        if name != "schedule.png":
            assert text.endswith("\n") and not text.endswith("\n\n\n")


def test_schedule_csv_is_the_lr_of_every_step(plan_of):
    plan = plan_of({"optim.lr": 1e-3, "schedule.warmup": 10, "train.max_steps": 100})
    rows = render(plan)["schedule.csv"].splitlines()
    assert rows[0] == "step,lr" and len(rows) == 101
    assert rows[1] == "0,0.0" and rows[11] == "10,0.001"
    assert float(rows[-1].split(",")[1]) == pytest.approx(1e-4, rel=1e-2)  # cosine almost down to the 10% floor


def test_epochs_runs_have_no_schedule_files(plan_of):
    files = render(plan_of({"train.max_steps": None, "train.epochs": 2}))
    assert "schedule.csv" not in files and "schedule.png" not in files


def test_config_block_lines_name_their_key(plan_of):
    plan = plan_of({"optim.lr": 1e-3})
    lines = [line for _, block in config_block(plan) for line in block]
    assert "lr = 0.001                      # optim.lr" in lines
    for line in lines:
        if " = " in line and "  # " in line:
            assert line.index("  # ") >= 30, "comments are aligned"
    train_py = render(plan)["train.py"]
    assert "grad_accum_steps = 2            # derived: batch_size 8 / (micro_batch_size 4 * num_processes 1)" in train_py


PRETRAINED = {"model.path": "org/model", "model.init": None, "model.config": None}


@pytest.mark.parametrize(
    ("launch", "stored"),
    [
        ({}, False),  # ddp on one process: bitsandbytes' uint8 storage
        ({"strategy": "fsdp"}, True),
        ({"strategy": "deepspeed", "deepspeed": {"zero_stage": 3}}, True),
        ({"strategy": "deepspeed", "deepspeed": {"zero_stage": 2}}, False),  # the weights are not sharded
    ],
)
def test_qlora_under_sharding_stores_the_4_bit_weights_in_the_compute_dtype(plan_of, launch, stored):
    """FSDP (and ZeRO-3) shard 4-bit weights only when they are stored in a float dtype."""
    processes = {"num_processes": 2} if launch else {}
    plan = plan_of(PRETRAINED, tokenizer=None, peft={"method": "lora", "quantize": "4bit"}, launch={**launch, **processes})
    quantization = plan["quantization"]
    assert quantization["load_in_4bit"] is True and quantization["bnb_4bit_compute_dtype"] == "bfloat16"
    assert quantization.get("bnb_4bit_quant_storage") == ("bfloat16" if stored else None)
    train_py = render(plan)["train.py"]
    (assigned,) = [
        ast.literal_eval(node.value)
        for node in ast.parse(train_py).body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "quantization"
    ]
    assert assigned == quantization
    assert "    quantization_config=BitsAndBytesConfig(**quantization)," in train_py


def test_qlora_quantization_is_what_transformers_takes(plan_of):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    four = plan_of(PRETRAINED, tokenizer=None, peft={"method": "lora", "quantize": "4bit"}, launch={"strategy": "fsdp", "num_processes": 2})
    config = transformers.BitsAndBytesConfig(**four["quantization"])  # no CUDA needed to build it
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_quant_storage == config.bnb_4bit_compute_dtype == torch.bfloat16
    eight = plan_of(PRETRAINED, tokenizer=None, peft={"method": "lora", "quantize": "8bit"})
    assert transformers.BitsAndBytesConfig(**eight["quantization"]).load_in_8bit
    assert plan_of(PRETRAINED, tokenizer=None, peft={"method": "lora"}).get("quantization") is None


def test_train_py_has_one_assignment_per_setting(plan_of):
    plan = plan_of()
    tree = ast.parse(render(plan)["train.py"])
    assigned = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            assigned.setdefault(node.targets[0].id, node.value)
    for s in plan.settings:
        assert s.name in assigned, f"{s.name} is not assigned in train.py"
        if s.name != "output_dir":  # reassigned to a Path further down
            assert ast.literal_eval(assigned[s.name]) == s.value


def _step_0_evaluations(tree: ast.Module) -> list[ast.If]:
    """The top-level `if`s that call evaluate(): the loop's own evaluations sit inside its `for`."""
    return [
        node
        for node in tree.body
        if isinstance(node, ast.If) and any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "evaluate" for n in ast.walk(node))
    ]


@pytest.mark.parametrize("schedule_free", [False, True])
@pytest.mark.parametrize("at_start", [True, False])
def test_eval_at_start_decides_the_evaluation_before_the_first_step(plan_of, at_start, schedule_free):
    dotted = {"train.eval_at_start": at_start}
    if schedule_free:
        dotted |= {"optim.name": "schedule_free_adamw", "schedule.decay": "constant"}
    files = render(plan_of(dotted))
    train_py = files["train.py"]
    tree = ast.parse(train_py)
    assert _top_level_literals(tree)["eval_at_start"] is at_start
    assert f"eval_at_start = {at_start}" in train_py and "# train.eval_at_start" in train_py
    assert tomllib.loads(files["resolved.toml"])["train"]["eval_at_start"] is at_start
    step_0 = _step_0_evaluations(tree)
    assert len(step_0) == (1 if at_start else 0)
    assert ('log({"step": 0, **evaluate(), "tokens": 0})' in train_py) is at_start
    if at_start:
        assert ast.unparse(step_0[0].test) == "eval_at_start and step == 0 and eval_loaders"
    # the evaluations every eval_every steps and at the end stay either way
    assert "if eval_every and step % eval_every == 0 and step < max_steps and eval_loaders:" in train_py
    assert "final_eval = evaluate() if eval_loaders else {}" in train_py


def test_epochs_formulas_are_in_train_py(plan_of):
    plan = plan_of({"train.max_steps": None, "train.epochs": 2, "schedule.warmup": 0.1})
    train_py = render(plan)["train.py"]
    ast.parse(train_py)
    assert "steps_per_epoch = len(train_sets[0]) // batch_size  # derived: training sequences // batch_size" in train_py
    assert "max_steps = math.ceil(epochs * steps_per_epoch)" in train_py
    assert "schedule_phases = schedule.layout(schedule_spec, max_steps, tokens_per_step)" in train_py
    # computed after the data is loaded and before the scheduler uses them
    assert (
        train_py.index("train_sets.append(")
        < train_py.index("steps_per_epoch = ")
        < train_py.index("schedule_phases = schedule.layout")
        < train_py.index("schedule.phase_lambda(schedule_phases)")
    )


def test_resolved_toml_is_valid_toml(plan_of):
    text = render(plan_of())["resolved.toml"]
    data = tomllib.loads(text)
    assert data["train"]["max_steps"] == 100
    assert text.startswith("# Every setting of recipes/tiny.toml")


# -- recipe strings stay inert -------------------------------------------------------

NASTY = [
    "",
    "'",
    '"',
    '"""',
    "'''",
    "\\",
    "\\n",
    "\n",
    "\r\n",
    "a\nimport os\nos.system('x')",
    "{{ name }}",
    "{% if true %}x{% endif %}",
    "{# comment #}",
    "__import__('os').system('x')",
    "'); __import__('os').system('x'); ('",
    '""" + __import__("os").system("x") + """',
    "# comment",
    "x\u2028y\u0085z",
    "\x00\x1b[31m",
    "😀 ∑ é",
    "~/models/x",
    "./data/*.jsonl",
]

strings = st.sampled_from(NASTY) | st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30)


def _render_with(data: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    text = tomli_w.dumps(data)
    parsed, source = parse_recipe(text, "recipes/inert.toml")
    plan = resolve(validate(parsed, source), source, recipe_file="recipes/inert.toml")
    return plan, render(plan)


def _scratch(recipe_data, s: str) -> dict[str, Any]:
    return recipe_data(
        {"recipe.description": s, "tokenizer.path": s, "tokenizer.train": None},
        data={"sources": [{"path": s, "text_field": s}, {"path": [s, s], "format": "jsonl"}]},
    )


def _pretrained(recipe_data, s: str) -> dict[str, Any]:
    return recipe_data(
        {"recipe.description": s, "model.path": s, "model.init": None, "model.config": None, "model.revision": s},
        tokenizer=None,
    )


def _top_level_literals(tree: ast.Module) -> dict[str, Any]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in out:
                continue
            try:
                out[name] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _calls(tree: ast.AST) -> set[str]:
    return {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}


def _shape(tree: ast.AST) -> str:
    """The module with every constant blanked: what the code does, not what it says."""
    tree = ast.parse(ast.unparse(tree))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            node.value = None
    return ast.dump(tree)


@pytest.fixture
def baselines(recipe_data):
    """train.py of the same recipes with a harmless string, to compare structure against."""
    out = {}
    for kind, make in (("scratch", _scratch), ("pretrained", _pretrained)):
        _, files = _render_with(make(recipe_data, "plain"))
        tree = ast.parse(files["train.py"])
        out[kind] = (tree, _calls(tree), _shape(tree), ast.get_docstring(tree))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(s=strings)
def test_recipe_strings_are_inert_literals(s: str, recipe_data, baselines):
    for kind, make in (("scratch", _scratch), ("pretrained", _pretrained)):
        plan, files = _render_with(make(recipe_data, s))
        train_py = files["train.py"]
        tree = ast.parse(train_py)
        literals = _top_level_literals(tree)
        if kind == "scratch":
            assert literals["tokenizer_path"] == s
            common = {"records": "text", "split": "train", "on_error": "error", "filters": []}
            assert literals["sources"] == [
                {"path": s, "text_field": s, **common},
                {"path": [s, s], "format": "jsonl", "text_field": "text", **common},
            ]
        else:
            assert literals["model_path"] == s
            assert literals["tokenizer_path"] == s
            assert literals["model_revision"] == s
        if "description" in literals:
            assert literals["description"] == s
        base_tree, base_calls, base_shape, base_doc = baselines[kind]
        assert _calls(tree) == base_calls, "a recipe string introduced a call"
        assert _shape(tree) == base_shape, "a recipe string changed the code's structure"
        assert ast.get_docstring(tree) == base_doc or s in (ast.get_docstring(tree) or "")
        # the other generated files are not affected by these strings, except resolved.toml,
        # which carries them as TOML strings
        assert tomllib.loads(files["resolved.toml"])["recipe"]["description"] == s


# -- accelerate config and launch.sh --------------------------------------------------


def bash_n(text: str) -> None:
    bash = shutil.which("bash")
    assert bash, "bash is needed to check launch.sh"
    out = subprocess.run([bash, "-n"], input=text, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


LAUNCH_VARIANTS = [
    {},
    {"launch.num_processes": 2, "train.batch_size": 16},
    {"launch.mixed_precision": "bf16", "launch.cpu": False},
    {"launch.mixed_precision": "fp16", "launch.num_processes": 4, "train.batch_size": 32},
]


def test_accelerate_config_loads_with_accelerate(plan_of, tmp_path: Path):
    """accelerate's own config class reads every variant (checked in a subprocess: accelerate imports torch)."""
    paths = []
    for i, dotted in enumerate(LAUNCH_VARIANTS):
        plan = plan_of(dotted)
        path = tmp_path / f"accelerate_config_{i}.yaml"
        path.write_text(render(plan)["accelerate_config.yaml"])
        paths.append((str(path), plan["num_processes"], plan["mixed_precision"], plan["cpu"]))
    script = textwrap.dedent(
        """
        import json, sys
        from accelerate.commands.config.config_args import ClusterConfig
        out = []
        for path in json.loads(sys.argv[1]):
            c = ClusterConfig.from_yaml_file(path)
            out.append([c.num_processes, c.mixed_precision, c.use_cpu, c.distributed_type.value, c.num_machines])
        print(json.dumps(out))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps([p[0] for p in paths])], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    for (_, processes, precision, cpu), (n, mp, use_cpu, dist, machines) in zip(paths, loaded, strict=True):
        assert (n, mp, use_cpu, machines) == (processes, precision, cpu, 1)
        assert dist == ("NO" if processes == 1 else "MULTI_GPU")


def test_accelerate_config_is_plain_yaml(plan_of):
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(render(plan_of({"launch.mixed_precision": "no"}))["accelerate_config.yaml"])
    assert data["mixed_precision"] == "no"  # a string, not YAML 1.1's false
    assert data["distributed_type"] == "NO"
    assert data["num_processes"] == 1


@pytest.mark.parametrize("dotted", LAUNCH_VARIANTS, ids=str)
def test_launch_sh_is_bash_clean(plan_of, dotted):
    text = render(plan_of(dotted))["launch.sh"]
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    bash_n(text)
