"""Reading a JSON document through a model: the first refused field becomes the service error
its route's refusal table names.

Requests are parsed with json (it refuses NaN, and nesting too deep for it, as 400), then
validated through the models of this package: strict types throughout, so a JSON string is no
number and `true` is no 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    ValidationError,
)

from service.errors import ServiceError

Model = TypeVar("Model", bound=BaseModel)


class Refused(NamedTuple):
    """One refused field: the list indexes on its path, the value sent (None when missing), and
    the names the caller gives `read` (the model's input name...)."""

    indexes: tuple[int, ...]
    value: Any
    names: Mapping[str, Any]


Refusal = Callable[[Refused], ServiceError]
# Where a refused field leads: (its path without list indexes, pydantic's error type or None for
# any) -> the error it answers.
Refusals = Mapping[tuple[tuple[str, ...], str | None], Refusal]


def says(error: type[ServiceError], message: str) -> Refusal:
    """A refusal whose message only its table writes: formatted with the list indexes as {0},
    the refused {value} and the caller's names."""

    def refuse(refused: Refused) -> ServiceError:
        return error(message.format(*refused.indexes, value=refused.value, **refused.names))

    return refuse


class Strict(BaseModel):
    """A JSON object read as sent: members of another JSON type are refused, not converted."""

    model_config = ConfigDict(strict=True)


def json_kind(value: Any) -> str | None:
    """Tell a union's members apart by JSON type, as the error messages do."""
    if isinstance(value, dict):
        return "object"
    return "array" if isinstance(value, list) else None


# A value that is an array of one form or an object of another, a oneOf in the document:
# Annotated[Annotated[A, Tag("array")] | Annotated[B, Tag("object")], BY_JSON_KIND], written out
# where used so that a type checker reads it.
BY_JSON_KIND = Discriminator(json_kind, custom_error_type="json_kind", custom_error_message="-")


def read(model: type[Model], document: Any, refusals: Refusals, **names: Any) -> Model:
    """Validate a parsed JSON document; refuse it with the error its first bad field names."""
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise refusal(error.errors(include_url=False)[0], refusals, names) from None


def refusal(error: Mapping[str, Any], refusals: Refusals, names: Mapping[str, Any]) -> ServiceError:
    """The service error for one pydantic error, built from its place and value."""
    indexes = tuple(part for part in error["loc"] if isinstance(part, int))
    value = None if error["type"] == "missing" else error["input"]
    return refusals[refusal_key(error, refusals)](Refused(indexes, value, names))


def refusal_key(error: Mapping[str, Any], refusals: Refusals) -> tuple[tuple[str, ...], str | None]:
    """The entry for an error: its longest field path, of its type or of any.

    Every table has an entry for the root, (), so some entry always answers.
    """
    path = tuple(part for part in error["loc"] if isinstance(part, str))
    keys = (
        (path[:length], kind)
        for length in range(len(path), -1, -1)
        for kind in (error["type"], None)
    )
    return next(key for key in keys if key in refusals)
