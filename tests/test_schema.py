"""The schema models, and the committed JSON Schema and key reference generated from them."""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from recipec import schema as schema_package
from recipec.reference import json_schema, json_schema_text, reference_markdown
from recipec.schema import FILTER_TABLES, METHOD_TABLES, OBJECTIVE_TABLES, OPTIMIZER_TABLES, RENAMED, Recipe, Table

REPO = Path(__file__).resolve().parent.parent
REGENERATE = "run `recipec schema` from the repository root to regenerate it, and commit the result"


def _models(model: type[BaseModel], seen: dict[str, type[BaseModel]] | None = None) -> dict[str, type[BaseModel]]:
    """Every model reachable from `model`, by name."""
    seen = {} if seen is None else seen
    seen[model.__name__] = model

    def walk(annotation):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ not in seen:
                _models(annotation, seen)
        for arg in typing.get_args(annotation):
            walk(arg)

    for field in model.model_fields.values():
        walk(field.annotation)
    return seen


MODELS = _models(Recipe)
FIELDS = [(name, key) for name, model in MODELS.items() for key in model.model_fields]


@pytest.mark.parametrize(
    ("committed", "generate"),
    [("schemas/recipe.schema.json", json_schema_text), ("docs/reference.md", reference_markdown)],
    ids=["schema", "reference"],
)
def test_committed_file_is_current(committed: str, generate):
    path = REPO / committed
    assert path.is_file(), f"{committed} is missing; {REGENERATE}"
    current, expected = path.read_text(encoding="utf-8"), generate()
    if current != expected:
        diff = "".join(
            difflib.unified_diff(
                current.splitlines(keepends=True), expected.splitlines(keepends=True), committed, "generated"
            )
        )
        pytest.fail(f"{committed} is stale; {REGENERATE}\n\n{diff}", pytrace=False)


def test_model_walk_finds_every_table():
    assert set(MODELS) == {
        "Recipe",
        "RecipeTable",
        "ModelTable",
        "ModelConfig",
        "TokenizerTable",
        "TokenizerTrain",
        "DataTable",
        "Source",
        "HubDataset",
        "SystemMessage",
        *(t.__name__ for t in OPTIMIZER_TABLES),
        "LrScaling",
        "TrainablePatterns",
        "DecayPatterns",
        "ParamGroup",
        "ContinualTable",
        "EmaTable",
        "MergeTable",
        *(t.__name__ for t in METHOD_TABLES),
        *(t.__name__ for t in OBJECTIVE_TABLES),
        *(t.__name__ for t in FILTER_TABLES),
        "ScheduleTable",
        "Phase",
        "TrainTable",
        "LossTable",
        "LaunchTable",
        "FsdpTable",
        "DeepspeedTable",
        "ParallelismTable",
        "OutputTable",
    }
    exported = {name for name in schema_package.__all__ if isinstance(getattr(schema_package, name), type)}
    assert set(MODELS) - {"Recipe"} <= exported


@pytest.mark.parametrize(("model", "field"), FIELDS, ids=[f"{m}.{f}" for m, f in FIELDS])
def test_every_field_has_a_description(model: str, field: str):
    from recipec.schema.base import attribute_docstrings

    description = attribute_docstrings(MODELS[model]).get(field)
    assert description and len(description.split()) >= 2, f"{model}.{field} needs an attribute docstring"


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_table_is_closed_strict_and_frozen(model: str):
    cls = MODELS[model]
    assert issubclass(cls, Table)
    assert cls.__doc__ and cls.__doc__.strip()
    config = cls.model_config
    # [model.config] takes any key of the model type's config; ModelTable checks them (model_types.json)
    assert config["extra"] == ("allow" if model == "ModelConfig" else "forbid")
    assert config["frozen"] is True
    assert config["strict"] is True
    assert config["allow_inf_nan"] is False


def test_json_schema_describes_every_property_and_forbids_extras():
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    objects = [schema, *schema["$defs"].values()]
    assert len(objects) == len(MODELS)
    for obj in objects:
        open_table = obj.get("title") == "ModelConfig"  # any key of the model type's config (checked by ModelTable)
        assert obj.get("additionalProperties") is (True if open_table else False), obj.get("title")
        for key, prop in obj["properties"].items():
            assert prop.get("description"), f"{obj.get('title')}.{key}"


def _sub_model(annotation) -> type[BaseModel] | None:
    """The table model inside an annotation (`X`, `X | None`, `list[X]`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _sub_model(arg)
        if found is not None:
            return found
    return None


def _table_paths(model: type[BaseModel], prefix: str = "") -> dict[str, type[BaseModel]]:
    out = {}
    for key, field in model.model_fields.items():
        sub = _sub_model(field.annotation)
        if sub is not None:
            out[prefix + key] = sub
            out.update(_table_paths(sub, f"{prefix}{key}."))
    return out


def test_reference_lists_every_key():
    text = reference_markdown()
    tables = _table_paths(Recipe)
    sections = []
    for path, model in tables.items():
        if path == "peft":  # one table per method, chosen by `method`
            for table in METHOD_TABLES:
                method = table.model_fields["method"].annotation.__args__[0]
                sections.append((f'## `[peft]` method = "{method}"', table))
            continue
        if path == "data.filters":  # documented once, under [[data.sources.filters]]
            assert "## `[[data.filters]]`" in text and "are those of `[[data.sources.filters]]`" in text
            continue
        if path == "data.sources.filters":  # one table per filter, chosen by `type`
            for table in FILTER_TABLES:
                kind = table.model_fields["type"].annotation.__args__[0]
                sections.append((f'## `[[{path}]]` type = "{kind}"', table))
            continue
        header = f"## `[[{path}]]`" if path in ("data.sources", "schedule.phases", "optim.groups") else f"## `[{path}]`"
        sections.append((header, model))
    for header, model in sections:
        assert header in text, header
        section = text.split(header, 1)[1].split("\n## ", 1)[0]
        for key, field in model.model_fields.items():
            if _sub_model(field.annotation) is None:
                key = field.alias or key
                assert f"| `{key}` |" in section, f"{header} {key} is missing from docs/reference.md"


def _key_exists(dotted: str) -> bool:
    model: type[BaseModel] | None = Recipe
    for part in dotted.split("."):
        if model is None or part not in model.model_fields:
            return False
        model = _sub_model(model.model_fields[part].annotation)
    return True


def test_renamed_keys_point_at_real_keys():
    for old, new in RENAMED.items():
        assert not _key_exists(".".join(old)), f"{old} is a real key, so its rename hint can never show"
        targets = re.findall(r"`\[*([a-z_.]+)\]*(?: = [^`]*)?`", new)
        assert targets, new
        for target in targets:
            assert _key_exists(target), f"RENAMED[{old}] mentions `{target}`, which is not a recipe key"


NEEDS_A_CHOICE = {
    "Recipe": None,  # has required tables
    "ModelTable": {"init": "llama"},
    "TrainTable": {"max_steps": 1},
    "Source": {"builtin": "python-docs"},
    "HubDataset": {"repo": "org/name"},
    "SystemMessage": {"replace": "You are terse."},
    "DataTable": {"sources": [{"builtin": "python-docs"}]},
    "RecipeTable": {"name": "x"},
    "LrScaling": {"reference_batch": 8, "reference_lr": 1e-3},
    "ParamGroup": {"params": ["embeddings"]},
    "Phase": {"name": "p", "shape": "constant"},
    "ContinualTable": {"from": "runs/parent"},
    "EmaTable": {"decay": 0.999},
    **{t.__name__: {"method": t.model_fields["method"].annotation.__args__[0]} for t in METHOD_TABLES},
    **{t.__name__: {"type": t.model_fields["type"].annotation.__args__[0]} for t in FILTER_TABLES},
    **{t.__name__: {"objective": t.model_fields["objective"].annotation.__args__[0]} for t in OBJECTIVE_TABLES},
    **{t.__name__: {"name": t.model_fields["name"].annotation.__args__[0]} for t in OPTIMIZER_TABLES},
    "RobustTable": {"objective": "robust", "label_smoothing": 0.1},  # robust DPO needs its share of flipped labels
    "ExoPairTable": {"objective": "exo_pair", "label_smoothing": 0.001},  # EXO needs its smoothing
    "LengthFilter": {"type": "length", "min": 1},
    "RegexFilter": {"type": "regex", "exclude": ["spam"]},
    "ScoreFilter": {"type": "score", "field": "q", "min": 0.5},
    "ScoreSampleFilter": {"type": "score_sample", "field": "q", "rate": 0.5},
    "SampleFilter": {"type": "sample", "rate": 0.5},
    "DecontaminateFilter": {"type": "decontaminate", "path": "eval/*.jsonl"},
    "PerplexityFilter": {"type": "perplexity", "model": "org/lm", "max": 1000.0},
    "ColorFilter": {"type": "color_filter", "prior_model": "org/lm", "conditional_model": "org/lm-tuned", "rate": 0.25},
}


@pytest.mark.parametrize("model", sorted(set(MODELS) - {"Recipe"}))
def test_defaults_satisfy_their_own_constraints(model: str):
    """validate_default=True: a table built from its defaults (plus the one choice it needs) validates."""
    table = MODELS[model](**(NEEDS_A_CHOICE.get(model) or {}))
    dumped = table.model_dump()
    for key, field in MODELS[model].model_fields.items():
        if not field.is_required() and field.default_factory is None and key not in (NEEDS_A_CHOICE.get(model) or {}):
            assert dumped[key] == field.default
