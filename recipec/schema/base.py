"""The base class every recipe table derives from, and the error helper its validators use."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError


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
        use_attribute_docstrings=True,
        validate_default=True,
        allow_inf_nan=False,
    )


def key_error(key: str, message: str, help: str | None = None) -> PydanticCustomError:
    """Build the error a table validator raises about one of its own keys.

    The validation layer appends ``key`` to the table's location, so the message points
    at the offending line rather than at the table header.

    Args:
        key: the field name inside the table the validator belongs to.
        message: what is wrong, as a sentence fragment without trailing period.
        help: what to do about it.
    """
    return PydanticCustomError("recipe", message, {"key": key, "help": help or ""})
