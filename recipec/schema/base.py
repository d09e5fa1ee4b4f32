"""The base class every recipe table derives from, and the error helper its validators use."""

from __future__ import annotations

import ast
import inspect
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError


@cache
def attribute_docstrings(cls: type) -> dict[str, str]:
    """The docstring under each field of a model class and of its bases, read from the source.

    pydantic can collect these itself (``use_attribute_docstrings``), but it parses every
    model's source when the class is created, which is a fifth of the compiler's start-up
    time; only the JSON Schema needs them, so they are read when it is generated.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, BaseModel)) or klass is BaseModel:
            continue
        try:
            body = ast.parse(inspect.cleandoc("\n" + inspect.getsource(klass))).body[0].body
        except (OSError, TypeError, SyntaxError, IndexError, AttributeError):
            continue
        for node, after in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _field_descriptions(schema: dict[str, Any], cls: type) -> None:
    """json_schema_extra of every table: each property gets its field's attribute docstring."""
    docs = attribute_docstrings(cls)
    properties = schema.get("properties", {})
    for name, field in cls.model_fields.items():
        prop = properties.get(field.alias or name)
        if prop is not None and name in docs and "description" not in prop:
            prop["description"] = docs[name]


class Table(BaseModel):
    """One TOML table of a recipe.

    Tables are strict (a TOML string is never coerced into a number), closed (an unknown
    key is an error, never silently ignored) and frozen. Field descriptions are the
    attribute docstrings below each field; they flow into the JSON Schema and the key
    reference.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        json_schema_extra=_field_descriptions,  # field docstrings, read only for the JSON Schema
        validate_default=True,
        allow_inf_nan=False,
        defer_build=True,
    )


def key_error(key: str | tuple[str, ...], message: str, help: str | None = None) -> PydanticCustomError:
    """Build the error a table validator raises about one of its own keys.

    The validation layer appends ``key`` to the table's location, so the message points
    at the offending line rather than at the table header.

    Args:
        key: the field name inside the table the validator belongs to, or the path to a key
            of a table under it (`("config", "n_embd")` from `[model]`).
        message: what is wrong, as a sentence fragment without trailing period.
        help: what to do about it.
    """
    return PydanticCustomError("recipe", message, {"key": key, "help": help or ""})
