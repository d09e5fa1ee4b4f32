"""validate: a parsed recipe dict -> `Recipe`, with every error at once.

pydantic does the checking; this module turns its errors into diagnostics a person can
act on: the recipe key in TOML spelling, the file/line/column from the source map, what
was expected in words, and a did-you-mean or a renamed-key hint. No pydantic text
(`[type=...]`, URLs, `Input should be`) reaches the user.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from .diagnostics import Diagnostic, RecipeError, did_you_mean
from .schema import RENAMED, Recipe
from .source import KeyPath, SourceMap

_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "int_from_float": "an integer",
    "none_required": "unset",
}


def validate(data: dict[str, Any], source: SourceMap) -> Recipe:
    """Validate a parsed recipe.

    Args:
        data: the recipe as parsed from TOML (overrides already applied).
        source: where each key sits in the file, for error locations.

    Returns:
        The validated, frozen recipe.

    Raises:
        RecipeError: with one diagnostic per problem, all of them.
    """
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(diagnostics_from(exc, data, source)) from None


def dotted(path: KeyPath) -> str:
    """Spell a key path the way a recipe user writes it: `data.sources[0].path`."""
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += ("." if out else "") + seg
    return out


def diagnostics_from(exc: ValidationError, data: dict[str, Any], source: SourceMap) -> list[Diagnostic]:
    """Translate a pydantic ValidationError into diagnostics, merging union branches."""
    merged: dict[KeyPath, dict[str, Any]] = {}
    order: list[KeyPath] = []
    for err in exc.errors(include_url=False):
        path = _data_path(err["loc"], data, err["type"])
        if err["type"] == "recipe":
            key = err["ctx"]["key"]
            path = path + (tuple(key) if isinstance(key, tuple | list) else (key,))
        key = path if err["type"] != "extra_forbidden" else path + ("<extra>",)
        if key in merged:
            merged[key]["alternatives"].append(err)
            continue
        merged[key] = {"path": path, "err": err, "alternatives": [err]}
        order.append(key)
    # a table given for a union of words and a table (`decay = {include = [...]}`): the words' branch
    # says only that it is not a word; the table's own errors, at keys inside it, are the ones to tell
    inside = {k[:i] for k in order for i in range(len(k))}
    order = [
        k for k in order
        if not (k in inside and all(e["type"] == "literal_error" for e in merged[k]["alternatives"]))
    ]
    return [_diagnostic(merged[k]["path"], merged[k]["alternatives"], source) for k in order]


def _data_path(loc: tuple[Any, ...], data: Any, err_type: str) -> KeyPath:
    """Drop the parts of a pydantic location that are not in the data (union branch tags)."""
    path: list[str | int] = []
    node = data
    for i, seg in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and seg in node:
            path.append(seg)
            node = node[seg]
        elif isinstance(node, list) and isinstance(seg, int) and seg < len(node):
            path.append(seg)
            node = node[seg]
        elif last and err_type == "missing" and isinstance(seg, str):
            path.append(seg)
        # anything else is a union tag such as 'int' or 'list[str]': not a recipe key
    return tuple(path)


def _diagnostic(path: KeyPath, errs: list[dict[str, Any]], source: SourceMap) -> Diagnostic:
    err = errs[0]
    kind = err["type"]
    name = dotted(path)
    if kind == "recipe":
        return Diagnostic("error", err["msg"], source.locate(path), err["ctx"].get("help") or None)
    if kind == "extra_forbidden":
        return Diagnostic("error", f"unknown key `{name}`", source.locate(path), _unknown_key_help(path, err["loc"]))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        members = _union_models(_field_annotation(path))
        field = _tag_field(members[0])
        tag = path + (field,)
        choices = [typing.get_args(m.model_fields[field].annotation)[0] for m in members]
        options = ", ".join(json.dumps(c) for c in choices)
        if kind == "union_tag_not_found":
            return Diagnostic("error", f"`{_header(path)}` needs `{field}`, one of {options}", source.locate(path))
        value = err["ctx"].get("tag")
        return Diagnostic(
            "error",
            f"`{dotted(tag)}` must be one of {options}, not {_describe(value)}",
            source.value_location(tag),
            did_you_mean(value, choices) if isinstance(value, str) else None,
        )
    if kind == "missing":
        parent = path[:-1]
        if _model_at(path) is not None and path:
            message = f"missing table `{_header(path)}`"
        else:
            message = f"missing required key `{name}`"
        return Diagnostic("error", message, source.locate(parent) if parent else source.locate(()), _missing_help(path))
    got = _describe(err.get("input"))
    if all(e["type"] in _EXPECTED for e in errs):
        kinds = {e["type"] for e in errs}
        if kinds == {"int_type", "float_type"}:
            wanted = "an integer or a float"
        else:
            wanted = " or ".join(dict.fromkeys(_EXPECTED[e["type"]] for e in errs))
        return Diagnostic("error", f"`{name}` must be {wanted}, not {got}", source.value_location(path))
    if kind == "literal_error":
        choices = _literal_options(path, err["loc"])
        options = ", ".join(json.dumps(c) for c in choices) if choices else err["ctx"]["expected"]
        value = err.get("input")
        hint = did_you_mean(value, choices) if isinstance(value, str) else None
        return Diagnostic(
            "error", f"`{name}` must be one of {options}, not {got}", source.value_location(path), hint
        )
    if kind == "string_pattern_mismatch" and path == ("recipe", "name"):
        return Diagnostic(
            "error",
            f"`recipe.name` may contain only letters, digits, `.`, `_` and `-` and must not start with `.`, `_` or `-`; got {got}",
            source.value_location(path),
            "the name becomes a directory name (build/<name>, runs/<name>)",
        )
    message = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    message = message.replace("Input should be", "must be").replace("List should have", "must have")
    message = message.replace("String should have", "must have")
    if kind in ("too_short", "too_long"):
        message = message.split(" after validation")[0]
    return Diagnostic("error", f"`{name}` {_lower_first(message)}, got {got}", source.value_location(path))


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _describe(value: Any, depth: int = 0) -> str:
    """A short TOML-flavoured rendering of a user value for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {json.dumps(shown)}"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        if len(value) > 4 or depth > 2:  # short, and bounded for lists nested hundreds deep
            return "a list"
        return "[" + ", ".join(_describe(v, depth + 1) for v in value) + "]"
    return type(value).__name__


def _model_at(path: KeyPath, loc: tuple[Any, ...] = ()) -> type[BaseModel] | None:
    """The schema model for the table at `path`, or None when `path` is not a table.

    `loc` is pydantic's raw location; where a table is one of several (`[peft]`, chosen
    by `method`), the tag in it picks the model.
    """
    model: type[BaseModel] | None = Recipe
    for seg in path:
        if isinstance(seg, int):
            continue
        if model is None or seg not in model.model_fields:
            return None
        annotation = model.model_fields[seg].annotation
        model = _tagged_model(annotation, loc) or _find_model(annotation)
    return model


_TAG_FIELDS = ("method", "type", "objective", "name")  # the fields that pick a table's model: [peft] method, filter type


def _tag_field(model: type[BaseModel]) -> str | None:
    return next((f for f in _TAG_FIELDS if f in model.model_fields), None)


def _tagged_model(annotation: Any, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The member of a tagged union (`method`, `type`) whose tag appears in `loc`."""
    for member in _union_models(annotation):
        field = _tag_field(member)
        if field is not None and set(typing.get_args(member.model_fields[field].annotation)) & set(loc):
            return member
    return None


def _union_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _union_models(arg)]


def _field_annotation(path: KeyPath) -> Any:
    while path and isinstance(path[-1], int):  # an element of an array of tables: the array's field
        path = path[:-1]
    parent = _model_at(path[:-1])
    return parent.model_fields[path[-1]].annotation if parent is not None else None


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _find_model(arg)
            if found is not None:
                return found
    return None


def _literal_options(path: KeyPath, loc: tuple[Any, ...] = ()) -> list[str]:
    """The strings a Literal field accepts; `loc` (pydantic's) picks the member of a tagged union table."""
    while path and isinstance(path[-1], int):  # an item of a list: the choices are the list field's
        path = path[:-1]
    model = _model_at(path[:-1], loc)
    if model is None or not path or not isinstance(path[-1], str) or path[-1] not in model.model_fields:
        return []
    options: list[str] = []

    def collect(annotation: Any) -> None:
        if typing.get_origin(annotation) is typing.Literal:
            options.extend(a for a in typing.get_args(annotation) if isinstance(a, str))
        else:
            for arg in typing.get_args(annotation):
                collect(arg)

    collect(model.model_fields[path[-1]].annotation)
    return options


def _unknown_key_help(path: KeyPath, loc: tuple[Any, ...] = ()) -> str | None:
    plain = tuple(seg for seg in path if isinstance(seg, str))
    if plain in RENAMED:
        return f"`{plain[-1]}` is {RENAMED[plain]} in recipec"
    parent = _model_at(path[:-1], loc)
    if parent is None or not isinstance(path[-1], str):
        return None
    key = path[-1]
    field = _tag_field(parent)
    if field is not None and key not in parent.model_fields:
        owners = [
            typing.get_args(m.model_fields[field].annotation)[0]
            for m in _union_models(_field_annotation(path[:-1]))
            if key in m.model_fields
        ]
        if owners:
            return f"`{key}` is an option of {field} = " + " or ".join(f'"{o}"' for o in owners)
    for name, sub in parent.model_fields.items():  # a key of a table inside this one: `revision` of data.sources.hub
        model = _find_model(sub.annotation)
        if model is not None and typing.get_origin(sub.annotation) is not list and key in model.model_fields:
            return f"`{key}` is a key of the `{name}` table here, e.g. {name} = {{{key} = ...}}"
    return did_you_mean(key, parent.model_fields)


def _header(path: KeyPath) -> str:
    """`[table]`, or `[[table]]` for an array of tables such as data.sources."""
    parent = _model_at(path[:-1])
    field = parent.model_fields.get(path[-1]) if parent is not None and isinstance(path[-1], str) else None
    is_array = field is not None and typing.get_origin(field.annotation) is list
    return f"[[{dotted(path)}]]" if is_array else f"[{dotted(path)}]"


def _missing_help(path: KeyPath) -> str | None:
    model = _model_at(path)
    if model is not None:
        return f"add a {_header(path)} table"
    if path == ("recipe", "name"):
        return 'add name = "my-run" under [recipe]'
    return f"add `{path[-1]} = ...` to [{dotted(path[:-1])}]" if len(path) > 1 else None
