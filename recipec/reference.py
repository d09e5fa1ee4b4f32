"""The JSON Schema of a recipe and the key reference generated from it.

Both are committed (schemas/recipe.schema.json, docs/reference.md) and written by
`recipec schema`; a test fails when either is stale, so the docs cannot drift from the
models.
"""

from __future__ import annotations

import json
from typing import Any

from .schema import Recipe

SCHEMA_ID = "https://recipec.dev/schemas/recipe.schema.json"


def json_schema() -> dict[str, Any]:
    """The recipe's JSON Schema (draft 2020-12), from the pydantic models."""
    schema = Recipe.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def json_schema_text() -> str:
    """The committed schema file's exact text."""
    return json.dumps(json_schema(), indent=2) + "\n"


def reference_markdown() -> str:
    """docs/reference.md: every key of every table with its type, default and meaning."""
    schema = json_schema()
    defs = schema["$defs"]
    out = [
        "# Recipe key reference",
        "",
        "Generated from `schemas/recipe.schema.json` by `recipec schema`; do not edit by hand.",
        "Unknown keys are errors. A key without a default is required.",
        "",
    ]
    seen: dict[tuple[str, ...], str] = {}
    for name, prop in schema["properties"].items():
        _table(out, name, prop, defs, array=False, seen=seen)
    return "\n".join(out).rstrip() + "\n"


def _table(
    out: list[str], path: str, prop: dict[str, Any], defs: dict[str, Any], array: bool, seen: dict[tuple[str, ...], str]
) -> None:
    refs = _refs(prop)
    header = f"[[{path}]]" if array else f"[{path}]"
    if len(refs) > 1:  # one table of several, chosen by its `method` ([peft]) or `type` (filters)
        if tuple(refs) in seen:  # the same tables at a second place: refer to the first
            first = seen[tuple(refs)]
            out += [f"## `{header}`", "", f"{prop.get('description', '')} The tables are those of `{first}` above.", ""]
            return
        seen[tuple(refs)] = header
        for ref in refs:
            tag = next(t for t in ("method", "type", "objective", "name") if t in defs[ref]["properties"])
            value = defs[ref]["properties"][tag]["const"]
            _one_table(out, path, f'## `{header}` {tag} = "{value}"', defs[ref], prop, defs, seen)
        return
    ref = _ref(prop)
    if ref is None:
        return
    _one_table(out, path, f"## `{header}`", defs[ref], prop, defs, seen)


def _refs(prop: dict[str, Any]) -> list[str]:
    if prop.get("type") == "array":
        return _refs(prop.get("items", {}))
    return [o["$ref"].rsplit("/", 1)[-1] for o in prop.get("oneOf", prop.get("anyOf", [])) if "$ref" in o] + [
        r for o in prop.get("anyOf", []) for r in _refs(o)
    ]


def _one_table(
    out: list[str],
    path: str,
    title: str,
    model: dict[str, Any],
    prop: dict[str, Any],
    defs: dict[str, Any],
    seen: dict[tuple[str, ...], str],
) -> None:
    out += [title, ""]
    doc = model.get("description", "")
    if doc and not doc.startswith("`["):
        out += [doc, ""]
    elif prop.get("description"):
        out += [prop["description"], ""]
    out += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    nested: list[tuple[str, dict[str, Any], bool]] = []
    required = set(model.get("required", []))
    for key, field in model["properties"].items():
        sub = _ref(field)
        if sub is not None and not _is_array_of_tables(field):
            nested.append((f"{path}.{key}", field, False))
            continue
        if _is_array_of_tables(field):
            nested.append((f"{path}.{key}", field, True))
            continue
        default = "required" if key in required else _show(field.get("default"))
        desc = field.get("description", "").replace("|", "\\|").replace("\n", " ")
        out.append(f"| `{key}` | {_type(field, defs)} | {default} | {desc} |")
    out.append("")
    for sub_path, field, is_array in nested:
        _table(out, sub_path, field, defs, is_array, seen)


def _is_array_of_tables(field: dict[str, Any]) -> bool:
    """`list[Table]` or `list[Table] | None`: written as [[table]] blocks."""
    options = field.get("anyOf", [field])
    return any(o.get("type") == "array" and ("$ref" in o.get("items", {}) or "oneOf" in o.get("items", {})) for o in options)


def _ref(prop: dict[str, Any]) -> str | None:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if prop.get("type") == "array" and "$ref" in prop.get("items", {}):
        return prop["items"]["$ref"].rsplit("/", 1)[-1]
    for option in prop.get("anyOf", []):
        found = _ref(option)
        if found is not None:
            return found
    return None


def _type(field: dict[str, Any], defs: dict[str, Any]) -> str:
    if "anyOf" in field:
        parts = [_type(o, defs) for o in field["anyOf"] if o.get("type") != "null"]
        return " or ".join(dict.fromkeys(parts))
    if "enum" in field and len(field["enum"]) > 12:  # model.init: every causal-LM model type
        return f"string, one of {len(field['enum'])} (the JSON Schema lists them)"
    if "enum" in field:
        return " \\| ".join(json.dumps(v) for v in field["enum"])
    if "const" in field:
        return json.dumps(field["const"])
    kind = field.get("type")
    if kind == "array":
        return f"list of {_type(field.get('items', {}), defs)}"
    if "$ref" in field:
        return "table"
    return {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean", "object": "table"}.get(
        kind, "any"
    )


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, dict):
        return "see below"
    return f"`{json.dumps(value)}`"
