"""A hostile string in any field of a recipe stays data: it can never change the generated code.

Every string-typed field the schema accepts is found by walking the pydantic models (so a
new field is covered without touching this file). For each one a benign recipe is built
with a marker in that field, and the same recipe with a hostile payload in its place:
quotes, triple quotes, backslashes, line breaks of every kind, NUL, jinja syntax, shell
syntax and Python source that tries to close its string and run code. The outcome must be
one of two:

* the recipe builds, and train.py parses to the same syntax tree as the benign one with
  only its constants changed, and those constants are the benign ones with the marker
  replaced by the payload (the value arrives intact, nowhere else); accelerate_config.yaml
  parses to the same YAML; resolved.toml parses and holds the payload exactly; launch.sh
  and slurm.sbatch are unchanged unless the field is meant to reach them;
* or the recipe is refused with a located error and exit status 2 (a field with a pattern
  or a file that cannot exist), never a traceback.

Paths that must name something that exists (a model directory, a data file, a parent run)
are created under the test's project directory with the hostile name, where the
filesystem allows it.
"""

from __future__ import annotations

import ast
import copy
import io
import json
import os
import shutil
import tokenize
import tomllib
import types
import typing
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from recipec.cli import main
from recipec.compiler import build, plan_recipe
from recipec.diagnostics import RecipeError
from recipec.render import render
from recipec.schema import Recipe

from conftest import MINIMAL

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""A chat template for the fields of conversation records."""

MARKER = "zq7benign"
"""The benign value (or part of it) of the field under test; the payload takes its place."""

PAYLOADS = [
    '"',
    "'",
    '"""',
    "'''",
    "\\",
    "x\\",
    "\\'\\\"\\n",
    'a"b\'c',
    "x\ny",
    "x\r\ny",
    "x\ry",
    "x\u2028y",
    "x\u2029y",
    "x\x85y\x0bz\x0cw\x1cv",
    "x\x00y",
    "x\x7fy\x08\x07",
    "\x1b[31mred\x1b[0m",
    "\u202e\u2066bidi",
    "\ufeffbom",
    "{{ 7 * 7 }}",
    "{% if true %}x{% endif %}",
    "{# comment #}",
    "{{ '' | py }}{% raw %}",
    '"); import os; os.system("x")#',
    "'); import os; os.system('x')#",
    '"""; import os; os.system("x"); """',
    "'''\nimport os\nos.system('x')\n'''",
    "\\\n__import__('os').system('x')",
    "$(touch PWNED)`touch PWNED`;touch PWNED",
    "# -*- coding: latin-1 -*-",
    "key: value\n- item",
    ']]\n[evil]\nx = "1"',
    "é 中文 🙂",
]

# -----------------------------------------------------------------------------
# the string fields of the schema


@dataclass(frozen=True)
class StringField:
    """One string-typed key of the recipe, at the place its table sits in a recipe."""

    table: tuple[str | int, ...]
    """Keys from the recipe root to the table; 0 indexes the first table of an array of tables."""
    model: type[BaseModel]
    key: str
    shape: str
    """"str": a string; "list": a list of strings; "dict_key": a key of a table of floats; "dict_str": a table of strings."""

    @property
    def id(self) -> str:
        parts = [str(p) for p in self.table if not isinstance(p, int)]
        variant = _discriminator(self.model)
        return ".".join(parts + ([variant] if variant else []) + [self.key])


def _members(annotation: Any) -> list[Any]:
    """The members of a union (Optional included), with Annotated stripped."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [annotation]


def _string_shape(annotation: Any) -> str | None:
    members = _members(annotation)
    if str in members:
        return "str"
    for m in members:
        args = typing.get_args(m)
        if typing.get_origin(m) is list and args and str in _members(args[0]):
            return "list"
        if typing.get_origin(m) is dict and args and args[0] is str and args[1] is str:
            return "dict_str"
        if typing.get_origin(m) is dict and args and args[0] is str:
            return "dict_key"
    return None


def _submodels(annotation: Any) -> Iterator[tuple[type[BaseModel], bool]]:
    """The table models a field holds, and whether as an array of tables."""
    for m in _members(annotation):
        if isinstance(m, type) and issubclass(m, BaseModel):
            yield m, False
        elif typing.get_origin(m) is list:
            for inner in _members(typing.get_args(m)[0]):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    yield inner, True


def _discriminator(model: type[BaseModel]) -> str | None:
    """The `type` or `method` literal that selects this model of a union of tables."""
    for key in ("type", "method"):
        field = model.model_fields.get(key)
        if field is not None and typing.get_origin(field.annotation) is typing.Literal:
            return typing.get_args(field.annotation)[0]
    return None


def string_fields(model: type[BaseModel] = Recipe, table: tuple[str | int, ...] = ()) -> Iterator[StringField]:
    """Every string-typed field of `model` and of the tables below it."""
    for name, info in model.model_fields.items():
        key = info.alias or name
        shape = _string_shape(info.annotation)
        if shape is not None:
            yield StringField(table, model, key, shape)
        for sub, is_array in _submodels(info.annotation):
            if sub is model.__class__:  # pragma: no cover - no table contains itself
                continue
            yield from string_fields(sub, table + ((key, 0) if is_array else (key,)))


CLOSED = {"model.init"}
"""String fields whose value must be one of a fixed set of names (model.init: a model type of
recipec/model_types.json, checked like a Literal), so no payload reaches the build."""

PATTERNED = {"train.eval_every", "train.save_every", "train.best_metric"}
"""Fields that take a number or a string of one pattern ("0.25 epoch", "eval_<name>"): every payload is
refused (`test_every_payload_in_a_patterned_field_is_refused`)."""

REFUSED = {"peft.adalora.adapter", "peft.adalora.adapter_revision"}
"""Fields any value of which is refused: AdaLoRA cannot go on from a saved adapter
(`tests/test_saved_adapter.py`), nor from one at a revision."""

FIELDS = [f for f in string_fields() if f.id not in CLOSED | PATTERNED | REFUSED]

# -----------------------------------------------------------------------------
# a recipe with a value in one field


DOCS = '{"text": "def f():\\n    return 1\\n", "score": 0.5}\n' * 40


def _try_create(path: Path, text: str | None = None) -> None:
    """Create a file (text given) or directory with a hostile name, if the filesystem allows it."""
    try:
        if text is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except (OSError, ValueError):  # NUL, a name too long, a path through a file
        pass


def _base() -> dict[str, Any]:
    """The minimal recipe reading a local jsonl file (so every source key applies)."""
    data = copy.deepcopy(MINIMAL)
    data["recipe"]["name"] = "inject"
    data["data"]["sources"] = [{"path": "data/docs.jsonl"}]
    data["train"].update(max_steps=20, eval_every=10, save_every=10)
    return data


def _table_of(field: StringField) -> dict[str, Any]:
    """The benign form of the field's table: its required keys, its discriminator."""
    table: dict[str, Any] = {}
    variant = _discriminator(field.model)
    if variant is not None:
        table["type" if "type" in field.model.model_fields else "method"] = variant
    required = {
        "field": "score", "rate": 0.5, "path": "bench/docs.jsonl",
        "model": "org/scorer", "prior_model": "org/prior", "conditional_model": "org/conditional",
    }  # fmt: skip
    if variant == "score":
        table["min"] = 0.0  # a score filter needs a bound
    if variant == "perplexity":
        table["max"] = 1000.0
    for name, info in field.model.model_fields.items():
        if info.is_required() and name not in table and name in required:
            table[name] = required[name]
    return table


def _place_table(data: dict[str, Any], field: StringField) -> dict[str, Any]:
    """Create the tables on the way to the field's table; return the table."""
    node: Any = data
    path = field.table
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(part, int):
            while len(node) <= part:
                node.append({})
            node = node[part]
            continue
        nxt = path[i + 1] if not last else None
        if isinstance(nxt, int):
            node = node.setdefault(part, [])
        else:
            node = node.setdefault(part, {})
    if field.table and isinstance(node, dict):
        for k, v in _table_of(field).items():
            node.setdefault(k, v)
    return node


def _tweak_for_table(data: dict[str, Any], field: StringField) -> None:
    """What another table must say for the field's table to apply."""
    top = field.table[:1]
    launch = data.setdefault("launch", {})
    if field.table == ("launch", "fsdp"):
        launch.update(strategy="fsdp", cpu=True, num_processes=2)
    elif field.table == ("launch", "deepspeed"):
        launch.update(strategy="deepspeed", num_processes=2)
        data["launch"]["deepspeed"].update(zero_stage=3, offload_params="nvme", nvme_path="/nvme")
    elif field.table == ("launch",):
        launch.update(num_machines=2, num_processes=2, main_process_ip="10.0.0.1", cpu=True)
    elif top == ("continual",):
        data.pop("model", None)
        data.pop("tokenizer", None)
        data["continual"]["from"] = "runs/parent"


def _same_phase(data: dict[str, Any], name: str) -> None:
    data["schedule"] = {"phases": [{"name": name, "shape": "constant"}]}


def _files_for(project: Path, field: StringField, value: str, data: dict[str, Any]) -> None:
    """Field-specific placement: paths that must exist, names another table must repeat."""
    fid = field.id
    source = data["data"]["sources"][0]
    if fid == "model.path":
        data["model"] = {"path": f"./models/{value}"}
        target = project / "models" / value
        _try_create(target)
        _try_create(target / "config.json", json.dumps({"model_type": "llama", "max_position_embeddings": 128}))
    elif fid == "model.revision":
        data["model"] = {"path": "org/model", "revision": value}
    elif fid == "tokenizer.path":
        data["tokenizer"] = {"path": f"./tokenizers/{value}"}
        _try_create(project / "tokenizers" / value)
    elif fid == "data.sources.path":
        source["path"] = f"data/{value}.jsonl"
        _try_create(project / "data" / f"{value}.jsonl", DOCS)
    elif fid.endswith("decontaminate.path"):
        _place_table(data, field)["path"] = f"bench/{value}.jsonl"
        _try_create(project / "bench" / f"{value}.jsonl", DOCS)
    elif fid in ("data.sources.fields", "data.sources.roles"):
        # conversation records: the recipe's template renders them; a field's new name, a role's record name
        source.update(records="messages")
        source.pop("text_field", None)
        source.update(fields={"messages": value}) if fid.endswith("fields") else source.update(roles={value: "assistant"})
        data.setdefault("tokenizer", {})["chat_template"] = CHATML
    elif fid == "data.sources.prompt_format":
        # prompt/completion records whose prompt the format makes of the instruction field
        source.pop("text_field", None)
        source.update(path="data/qa.jsonl", records="prompt_completion", prompt_format=value + " {instruction}", fields={"completion": "output"})
        _try_create(project / "data" / "qa.jsonl", json.dumps({"instruction": "Add 2 and 3.", "output": "5"}) + "\n")
    elif fid == "data.sources.input_separator":
        # alpaca records: the separator joins each instruction and its input in the user turn the template renders
        source.pop("text_field", None)
        source.update(path="data/alpaca.jsonl", records="alpaca", input_separator=value)
        _try_create(project / "data" / "alpaca.jsonl", json.dumps({"instruction": "Add.", "input": "2 and 3", "output": "5"}) + "\n")
        data.setdefault("tokenizer", {})["chat_template"] = CHATML
    elif fid.startswith("data.sources.system."):
        # a system message for conversation records: the recipe's template renders it
        source.update(records="messages")
        source.pop("text_field", None)
        source["system"] = {field.key: value}
        data.setdefault("tokenizer", {})["chat_template"] = CHATML
    elif fid == "data.sources.tokenizer":
        # a token source names the tokenizer that made its ids; the recipe loads one (a trained one cannot match)
        data["tokenizer"] = {"path": "org/tokenizer"}
        source.pop("text_field", None)
        source.update(path="data/ids.bin", records="tokens", tokenizer=value, token_dtype="uint16", eos_token_id=0)
        _try_create(project / "data" / "ids.bin", "\x01\x00\x00\x00")
    elif fid.startswith("data.sources.hub."):
        # a hub source in place of the local file: the build reads no dataset, only its settings
        source.pop("path", None)
        hub = {"repo": "org/name"}
        key = field.key
        hub[key] = {"str": value, "list": [value], "dict_key": {value: "*.jsonl"}, "dict_str": {value: value}}[field.shape]
        source["hub"] = hub
    elif fid == "data.sources.phases":
        _same_phase(data, value)
        source["phases"] = [value]
    elif fid == "data.sources.phase_weights":
        _same_phase(data, value)
        source.update(weight=1.0, phase_weights={value: 2.0})
    elif fid == "schedule.phases.name":
        _same_phase(data, value)
    elif fid.startswith("peft.") and field.key == "adapter_revision":
        # the revision of a hub adapter (one not in the cache: the script reads it as it starts)
        _place_table(data, field).update(adapter="org/adapter", adapter_revision=value)
    elif fid == "output.dir":
        data["output"] = {"dir": f"runs/{value}"}
    elif fid == "launch.deepspeed.nvme_path":
        data["launch"]["deepspeed"]["nvme_path"] = f"/nvme/{value}"
    elif fid == "data.ray_address":
        data["data"].update(executor="ray", ray_address=value)  # an address names the cluster of the Ray executor
    elif fid == "data.cache_dir":
        data["data"]["cache_dir"] = f".cache/{value}"
    elif fid == "continual.from":
        data["continual"]["from"] = f"runs/{value}"
        target = project / "runs" / value
        if not target.exists():
            try:
                shutil.copytree(project / "runs" / "parent", target)
            except (OSError, ValueError):
                pass
    else:
        table = _place_table(data, field)
        table[field.key] = {"str": value, "list": [value], "dict_key": {value: 1.0}, "dict_str": {value: value}}[field.shape]


SPECIAL = {
    "model.path",
    "model.revision",
    "tokenizer.path",
    "data.sources.path",
    "data.sources.filters.decontaminate.path",
    "data.filters.decontaminate.path",
    "data.sources.tokenizer",
    "data.sources.system.default",
    "data.sources.system.replace",
    "data.sources.input_separator",
    "data.sources.phases",
    "data.sources.phase_weights",
    "schedule.phases.name",
    "output.dir",
    "data.cache_dir",
    "data.ray_address",
    "launch.deepspeed.nvme_path",
    "continual.from",
}
"""Fields placed by `_files_for` itself; every other field is set in its table as it is."""
SPECIAL |= {f.id for f in string_fields() if f.key == "adapter_revision"} - REFUSED  # each method's hub adapter


def recipe_with(project: Path, field: StringField, value: str) -> dict[str, Any]:
    """The base recipe with `value` in `field` (and whatever the field needs around it)."""
    data = _base()
    _place_table(data, field)
    _tweak_for_table(data, field)
    _files_for(project, field, value, data)
    return data


# -----------------------------------------------------------------------------
# what a build must look like


def _tree_and_constants(source: str) -> tuple[str, list[Any]]:
    """ast.dump of the module with every constant replaced by a placeholder, and the constants."""
    tree = ast.parse(source)
    constants = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            constants.append(node.value)
            node.value = "<constant>"
            node.kind = None
    return ast.dump(tree, include_attributes=False), constants


QUOTINGS: tuple[Callable[[str], str], ...] = (repr, json.dumps)
"""How a generated file may write a string as a Python literal."""


def _marker_literals(source: str) -> list[tuple[str, Callable[[str], str]]] | None:
    """Each way `source` writes the marker as a string literal of its own (`'zq7benign'`, `"zq7benign"`), with the
    quoting that wrote it; None where the marker is anywhere else (inside a longer string, an f-string, a comment).

    Where it is not None, the source with each such literal replaced by the same quoting of a payload has the benign
    source's tokens but those literals, so its syntax tree is the benign one with the payload for the marker: what
    `compare` checks by parsing, found without parsing (train.py is some 2,000 lines, parsed for every payload)."""
    if MARKER not in source:
        return []
    literals: dict[str, Callable[[str], str]] = {}
    count = 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if MARKER not in token.string:
            continue
        quoting = next((q for q in QUOTINGS if q(MARKER) == token.string), None)
        if token.type != tokenize.STRING or quoting is None:
            return None
        literals[token.string] = quoting
        count += 1
    if count != source.count(MARKER):
        return None
    return list(literals.items())


def _with_payload_literals(source: str, literals: list[tuple[str, Callable[[str], str]]], payload: str) -> str | None:
    """`source` with each marker literal written as the payload, by the same quoting; None where a quoting of the
    payload would not read back as the payload (a literal that no longer stands for the value)."""
    if MARKER in payload:
        return None
    for literal, quoting in literals:
        quoted = quoting(payload)
        try:
            tokens = [t.type for t in tokenize.generate_tokens(io.StringIO(quoted).readline)]
            if tokens[0] != tokenize.STRING or set(tokens[1:]) - {tokenize.NEWLINE, tokenize.ENDMARKER}:
                return None  # not one string literal
            if ast.literal_eval(quoted) != payload:
                return None
        except (SyntaxError, ValueError, tokenize.TokenError):
            return None
        source = source.replace(literal, quoted)
    return source


def _substitute(value: Any, payload: str) -> Any:
    """`value` with the marker replaced by the payload in every string and key."""
    if isinstance(value, str):
        return value.replace(MARKER, payload)
    if isinstance(value, list):
        return [_substitute(v, payload) for v in value]
    if isinstance(value, dict):
        return {_substitute(k, payload): _substitute(v, payload) for k, v in value.items()}
    return value


@dataclass
class Outcome:
    kind: str
    """"same" (built, code unchanged), "refused" (exit 2, located), or what went wrong."""
    detail: str = ""


def compile_recipe(project: Path, data: dict[str, Any], filename: str = "recipe.toml") -> dict[str, str | bytes]:
    path = project / filename
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    plan, _ = plan_recipe(path, project=project)
    return render(plan)


def check_refused(project: Path, filename: str = "recipe.toml") -> Outcome:
    """The CLI's answer to the recipe written last: exit 2 with a located error, no traceback."""
    with _cwd(project):
        result = CliRunner().invoke(main, ["--no-color", "validate", filename])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return Outcome("traceback", repr(result.exception))
    if result.exit_code != 2:
        return Outcome(f"exit {result.exit_code}", result.output)
    if "Traceback" in result.output or "error:" not in result.stderr:
        return Outcome("unclean error", result.output)
    if f"--> {filename}:" not in result.stderr and "--> " not in result.stderr:
        return Outcome("unlocated error", result.stderr)
    if _terminal_controls(result.output):
        return Outcome("control characters in the error", repr(result.output))
    return Outcome("refused")


def _terminal_controls(text: str) -> list[str]:
    """Characters that a terminal acts on or that reorder text (escape sequences, bidi), in output."""
    return [ch for ch in text if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch not in "\n\t"]


@dataclass
class Benign:
    """A benign build, parsed once."""

    files: dict[str, str | bytes]
    code: dict[str, tuple[str, list[Any]]]
    config: Any
    resolved: dict[str, Any]
    literals: dict[str, list[tuple[str, Callable[[str], str]]] | None]
    """Per Python file, how it writes the marker (`_marker_literals`)."""

    @classmethod
    def of(cls, files: dict[str, str | bytes]) -> Benign:
        code = {name: _tree_and_constants(str(text)) for name, text in files.items() if name.endswith(".py")}
        config = yaml.safe_load(str(files["accelerate_config.yaml"]))
        literals = {name: _marker_literals(str(files[name])) for name in code}
        return cls(files, code, config, tomllib.loads(str(files["resolved.toml"])), literals)


def compare(benign: Benign, hostile: dict[str, str | bytes], payload: str) -> Outcome:
    """Same code, same YAML, the payload intact in resolved.toml."""
    if sorted(benign.files) != sorted(hostile):
        return Outcome("different files", f"{sorted(benign.files)} != {sorted(hostile)}")
    for name, (benign_tree, benign_constants) in benign.code.items():
        literals = benign.literals[name]
        if literals is not None and hostile[name] == _with_payload_literals(str(benign.files[name]), literals, payload):
            continue  # the benign text, the payload written where (and as) the marker was: the tree compare's answer
        try:
            tree, constants = _tree_and_constants(str(hostile[name]))
        except (SyntaxError, ValueError) as exc:
            return Outcome("unparsable code", f"{name}: {exc}")
        if tree != benign_tree:
            return Outcome("changed code", name)
        if constants != _substitute(benign_constants, payload):
            return Outcome("changed constants", name)
    try:
        config = yaml.safe_load(str(hostile["accelerate_config.yaml"]))
    except yaml.YAMLError as exc:
        return Outcome("unparsable yaml", str(exc))
    if config != _substitute(benign.config, payload):
        return Outcome("changed yaml")
    try:
        resolved = tomllib.loads(str(hostile["resolved.toml"]))
    except tomllib.TOMLDecodeError as exc:
        return Outcome("unparsable toml", str(exc))
    if resolved != _substitute(benign.resolved, payload):
        return Outcome("toml does not round-trip")
    for name in ("launch.sh", "slurm.sbatch"):
        if name in hostile and MARKER not in str(benign.files[name]) and hostile[name] != benign.files[name]:
            return Outcome("changed shell script", name)
    return Outcome("same")


def outcome(project: Path, field: StringField, payload: str, benign: Benign) -> Outcome:
    data = recipe_with(project, field, payload)
    try:
        hostile = compile_recipe(project, data)
    except RecipeError:
        return check_refused(project)
    except Exception as exc:  # noqa: BLE001 - any other exception is the finding
        return Outcome("traceback", f"{type(exc).__name__}: {exc}")
    return compare(benign, hostile, payload)


@contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project directory with a data file and a finished parent run (for `[continual]`)."""
    root = tmp_path_factory.mktemp("inject")
    _try_create(root / "data" / "docs.jsonl", DOCS)
    _try_create(root / "bench" / "docs.jsonl", DOCS)
    parent = _base()
    parent["recipe"]["name"] = "parent"
    (root / "parent.toml").write_text(tomli_w.dumps(parent), encoding="utf-8")
    written, plan = build(root / "parent.toml", (), root / "build" / "parent", project=root)
    run = root / "runs" / "parent"
    (run / "model").mkdir(parents=True)
    for name in ("resolved.toml", "recipe.lock.json", "schedule.csv"):
        shutil.copy(written.dir / name, run / name)
    (run / "run.json").write_text(json.dumps({"name": plan.name, "status": "completed", "steps": plan["max_steps"]}))
    (run / "model" / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 128}))
    with _cwd(root):
        yield root


@pytest.fixture(autouse=True)
def _no_png(monkeypatch: pytest.MonkeyPatch) -> None:
    """schedule.png is not code; drawing it hundreds of times would only slow the test down
    (the phase names drawn on it are checked once, with the plot, below)."""
    monkeypatch.setattr("recipec.render.schedule_plot", lambda plan, plot=None: b"")


def test_the_walk_finds_the_string_fields():
    ids = {f.id for f in FIELDS}
    # a sample of each kind, so that a broken walk cannot pass as "nothing to check"
    for expected in (
        "recipe.name",
        "recipe.description",
        "model.path",
        "data.sources.path",
        "data.sources.filters.regex.include",
        "data.filters.decontaminate.text_field",
        "data.sources.phase_weights",
        "launch.main_process_ip",
        "launch.fsdp.transformer_layer_cls",
        "continual.from",
        "peft.lora.target_modules",
    ):
        assert expected in ids
    assert SPECIAL <= ids, f"SPECIAL names fields the schema no longer has: {SPECIAL - ids}"
    assert len(FIELDS) >= 40


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.id)
def test_no_payload_changes_the_generated_code(project: Path, field: StringField):
    benign_data = recipe_with(project, field, MARKER)
    benign = Benign.of(compile_recipe(project, benign_data))  # a benign value must build, else the context is wrong
    assert MARKER in str(benign.files["resolved.toml"]), "the benign value does not reach the build"
    failures = []
    counts: dict[str, int] = {}
    for payload in PAYLOADS:
        result = outcome(project, field, payload, benign)
        counts[result.kind] = counts.get(result.kind, 0) + 1
        if result.kind not in ("same", "refused"):
            failures.append(f"{payload!r}: {result.kind} {result.detail}")
    if os.environ.get("RECIPEC_INJECTION_REPORT"):
        print(f"\n{field.id}: {counts}")
    assert not failures, f"{field.id}:\n" + "\n".join(failures)


@pytest.mark.parametrize("field", [f for f in string_fields() if f.id in PATTERNED], ids=lambda f: f.id)
def test_every_payload_in_a_patterned_field_is_refused(project: Path, field: StringField):
    assert len([f for f in string_fields() if f.id in PATTERNED]) == len(PATTERNED)
    failures = []
    for payload in [MARKER, *PAYLOADS]:
        data = recipe_with(project, field, payload)
        try:
            compile_recipe(project, data)
        except RecipeError:
            result = check_refused(project)
        except Exception as exc:  # noqa: BLE001 - any other exception is the finding
            result = Outcome("traceback", f"{type(exc).__name__}: {exc}")
        else:
            result = Outcome("built", "")
        if result.kind != "refused":
            failures.append(f"{payload!r}: {result.kind} {result.detail}")
    assert not failures, f"{field.id}:\n" + "\n".join(failures)


def test_a_hostile_recipe_file_name_changes_no_code(project: Path):
    field = StringField(("recipe",), Recipe, "description", "str")
    data = recipe_with(project, field, "text")
    benign = Benign.of(compile_recipe(project, data, f"{MARKER}.toml"))
    failures = []
    for payload in PAYLOADS:
        filename = f"{payload}.toml"
        try:
            (project / filename).write_text("", encoding="utf-8")
        except (OSError, ValueError):
            continue  # no such file can exist
        if "/" in payload:
            continue
        hostile = compile_recipe(project, data, filename)
        result = compare(benign, hostile, payload)
        if result.kind != "same":
            failures.append(f"{payload!r}: {result.kind} {result.detail}")
    assert not failures, "\n".join(failures)


def test_phase_names_are_drawn_as_text(project: Path):
    # mathtext would read `$...$` in a label as a formula and fail on a bad one
    from recipec.plot import schedule_png

    field = next(f for f in FIELDS if f.id == "schedule.phases.name")
    data = recipe_with(project, field, "$\\frac{1$ {{ x }}\n")
    (project / "recipe.toml").write_text(tomli_w.dumps(data), encoding="utf-8")
    plan, _ = plan_recipe(project / "recipe.toml", project=project)
    values = [1.0] * plan["max_steps"]
    png = schedule_png(values, plan["schedule_phases"], title="$\\frac{", peak_lr=plan["lr"], min_lr=None)
    assert png[:4] == b"\x89PNG"


# -----------------------------------------------------------------------------
# random strings, on a few representative fields

HYPOTHESIS_FIELDS = ["recipe.description", "data.sources.text_field", "output.dir", "data.sources.filters.regex.exclude"]


@pytest.mark.parametrize("field_id", HYPOTHESIS_FIELDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.text(min_size=1, max_size=30))
def test_random_strings_change_no_code(project: Path, field_id: str, payload: str):
    field = next(f for f in FIELDS if f.id == field_id)
    benign = Benign.of(compile_recipe(project, recipe_with(project, field, MARKER)))
    result = outcome(project, field, payload, benign)
    assert result.kind in ("same", "refused"), f"{payload!r}: {result.kind} {result.detail}"


@pytest.mark.parametrize(
    "text",
    [
        '[recipe]\nname = "a" # \x1b]0;title\x07\x1b[2J\n',
        '[recipe]\nname = "\x1b[31mred"\n',
        '[recipe]\nname = "a\u202eb"\n',
        '[recipe]\nname = "a"\n\x9b31m = 1\n',
    ],
)
def test_a_recipe_file_cannot_send_control_sequences_to_the_terminal(project: Path, text: str):
    (project / "raw.toml").write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["--no-color", "validate", "raw.toml"])
    assert result.exit_code == 2
    assert "--> raw.toml:2:" in result.stderr or "--> raw.toml:3:" in result.stderr, result.stderr
    assert _terminal_controls(result.output) == [], repr(result.output)


TERMINAL_PAYLOAD = "\x1b]0;title\x07\x1b[2J\u202e\x85\u2028\x9b"


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.id)
def test_validate_explain_and_diff_print_no_control_sequence(project: Path, field: StringField):
    """`explain` and `diff` print every value of a recipe: none may reach the terminal raw."""
    (project / "benign.toml").write_text(tomli_w.dumps(recipe_with(project, field, MARKER)), encoding="utf-8")
    (project / "recipe.toml").write_text(tomli_w.dumps(recipe_with(project, field, TERMINAL_PAYLOAD)), encoding="utf-8")
    for command in (["validate"], ["explain"], ["explain", "--json"], ["diff", "benign.toml"]):
        result = CliRunner().invoke(main, ["--no-color", *command, "recipe.toml"])
        assert result.exit_code in (0, 1, 2), result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert _terminal_controls(result.output) == [], f"{command}: {result.output!r}"


def test_a_hostile_set_override_changes_no_code(project: Path):
    """`--set` text reaches the script too (its `overrides` list): raw or as a TOML string."""
    field = StringField(("recipe",), Recipe, "description", "str")
    path = project / "recipe.toml"
    path.write_text(tomli_w.dumps(recipe_with(project, field, "text")), encoding="utf-8")
    benign_tree, _ = _tree_and_constants(str(render(plan_recipe(path, (f"recipe.description={MARKER}",), project=project)[0])["train.py"]))
    failures = []
    for payload in PAYLOADS:
        for arg in (f"recipe.description={payload}", f"recipe.description={json.dumps(payload)}"):
            try:
                plan, _ = plan_recipe(path, (arg,), project=project)
            except RecipeError:
                if check_refused_override(project, arg).kind != "refused":
                    failures.append(f"{arg!r}: not a clean refusal")
                continue
            text = str(render(plan)["train.py"])
            tree, _ = _tree_and_constants(text)
            overrides = next(n for n in ast.parse(text).body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "overrides")
            if tree != benign_tree or ast.literal_eval(overrides.value) != [arg]:
                failures.append(f"{arg!r}: changed code")
    assert not failures, "\n".join(failures)


def check_refused_override(project: Path, arg: str) -> Outcome:
    result = CliRunner().invoke(main, ["--no-color", "validate", "recipe.toml", "--set", arg])
    if result.exit_code != 2 or "Traceback" in result.output or _terminal_controls(result.output):
        return Outcome("unclean", result.output)
    return Outcome("refused")
