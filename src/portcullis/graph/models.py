"""GraphQL object and input types derived from the config's pydantic models.

The config models (`portcullis.model`) are the one definition of every entity's
fields; the graph shows them as typed GraphQL objects rather than JSON blobs, and
takes typed input objects for writes. Inputs are turned back into the JSON
document the service layer validates with the same model (so GraphQL never holds
a validation rule of its own).

Output objects are backed by the entity's JSON representation (a dict): the
schema's default resolver reads dict members (`resolve_member`), so a page of
entities is returned without copying it into objects.

Mapping: str/int/float/bool as themselves, `Literal` as String (the model checks
the value), `X | None` nullable, `list[X]` lists, nested models as their own
types, and anything open (dicts, unions of models, `Any`) as the `JSON` scalar.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any, Literal, Union

import strawberry
from pydantic import BaseModel, SecretStr
from strawberry.scalars import JSON
from strawberry.schema.types.base_scalars import DateTimeDefinition
from strawberry.types.unset import UNSET

_OUTPUTS: dict[type[BaseModel], type[Any]] = {}
_INPUTS: dict[type[BaseModel], type[Any]] = {}
_PATCHES: dict[type[BaseModel], type[Any]] = {}
# bool before int: bool is a subclass of int. A secret (a password) is written as a string.
_SCALARS: dict[type[Any], Any] = {
    bool: bool,
    str: str,
    int: int,
    float: float,
    datetime: datetime,
    SecretStr: str,
}


def _rfc3339(value: datetime | str) -> str:
    """A date-time as text: the services' JSON representations already hold it as the
    RFC 3339 text REST shows (kept as is); a `datetime` is formatted."""
    return value if isinstance(value, str) else value.isoformat()


# `DateTime` serialises both the text of a JSON representation and a `datetime`, so a
# dict-backed object needs no copy with parsed times (`schema()` passes these overrides).
SCALAR_OVERRIDES: dict[object, Any] = {
    datetime: dataclasses.replace(DateTimeDefinition, serialize=_rfc3339)
}


def resolve_member(obj: Any, name: str) -> object:
    """The schema's default resolver: a dict member for dict-backed objects, else the
    attribute."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name)


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _graph_type(annotation: Any, *, as_input: bool, patch: bool = False) -> tuple[Any, bool]:
    """The GraphQL type of a model annotation, and whether it is nullable."""
    annotation = _strip(annotation)
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(members) < len(typing.get_args(annotation))
        if len(members) == 1:
            inner, _ = _graph_type(members[0], as_input=as_input, patch=patch)
            return inner, nullable
        return JSON, nullable
    if origin is Literal:
        values = typing.get_args(annotation)
        if all(isinstance(v, str) for v in values):
            return str, False
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return int, False
        return JSON, False
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(annotation)
        if not args or (origin is tuple and len(args) != 2 and args[-1] is not Ellipsis):
            return list[JSON], False
        inner, inner_nullable = _graph_type(args[0], as_input=as_input)
        return (list[inner | None] if inner_nullable else list[inner]), False  # type: ignore[valid-type]
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return (
                input_type(annotation, patch=patch) if as_input else output_type(annotation)
            ), False
        if issubclass(annotation, Enum):
            return str, False
        for base, graph in _SCALARS.items():
            if issubclass(annotation, base):
                return graph, False
    return JSON, False


def _doc(model: type[BaseModel]) -> str | None:
    return inspect.cleandoc(model.__doc__) if model.__doc__ else None


def _type_name(model: type[BaseModel], suffix: str) -> str:
    return model.__name__ + suffix


def output_type(
    model: type[BaseModel],
    name: str | None = None,
    extra: dict[str, tuple[Any, Any]] | None = None,
) -> type[Any]:
    """The GraphQL object type of `model` (dict-backed; cached per model), with `extra`
    fields (name: (annotation, strawberry field)) before the model's."""
    found = _OUTPUTS.get(model)
    if found is not None:
        return found
    # A field with a resolver takes its type from the resolver (whose string annotations
    # resolve in the resolver's module).
    annotations: dict[str, Any] = {
        k: a for k, (a, f) in (extra or {}).items() if getattr(f, "base_resolver", None) is None
    }
    namespace: dict[str, Any] = {"__annotations__": annotations, "__module__": __name__}
    namespace.update({k: f for k, (_, f) in (extra or {}).items()})
    cls = type(name or _type_name(model, ""), (), namespace)
    _OUTPUTS[model] = cls  # before the fields: a model may refer to itself
    for field_name, info in model.model_fields.items():
        graph, nullable = _graph_type(info.annotation, as_input=False)
        annotations[field_name] = graph | None if nullable else graph
        namespace[field_name] = strawberry.field(description=info.description)
    for key, value in namespace.items():
        setattr(cls, key, value)
    typed = strawberry.type(cls, description=_doc(model))
    _OUTPUTS[model] = typed
    return typed


def input_type(model: type[BaseModel], *, patch: bool = False) -> type[Any]:
    """The GraphQL input type of `model`: every field optional where the model has a
    default (left out = the model's default), required where the model requires it.
    `patch`: every field optional, nested objects too (a JSON Merge Patch: a left-out
    member stays, an explicit null removes)."""
    cache = _PATCHES if patch else _INPUTS
    found = cache.get(model)
    if found is not None:
        return found
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {"__annotations__": annotations, "__module__": __name__}
    cls = type(_type_name(model, "Patch" if patch else "Input"), (), namespace)
    cache[model] = cls
    for field_name, info in model.model_fields.items():
        graph, nullable = _graph_type(info.annotation, as_input=True, patch=patch)
        required = info.is_required() and not nullable and not patch
        annotations[field_name] = graph if required else graph | None
        namespace[field_name] = (
            strawberry.field(description=info.description)
            if required
            else strawberry.field(description=info.description, default=UNSET)
        )
    for key, value in namespace.items():
        setattr(cls, key, value)
    typed = strawberry.input(cls, description=_doc(model))
    cache[model] = typed
    return typed


def input_document(value: Any) -> Any:
    """A GraphQL input value as the JSON document the model validates: input objects
    become dicts of the members that were given (left-out members take the model's
    default; an explicit null stays null)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list):
        return [input_document(v) for v in value]
    if isinstance(value, dict):
        return {k: input_document(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    fields = getattr(type(value), "__strawberry_definition__", None)
    if fields is None:
        return value
    out: dict[str, Any] = {}
    for field in fields.fields:
        member = getattr(value, field.python_name, UNSET)
        if member is UNSET:
            continue
        out[field.python_name] = input_document(member)
    return out


M = typing.TypeVar("M", bound=BaseModel)


def validated(model: type[M], value: Any) -> M:
    """A typed input validated by the model REST validates its body with (a field error
    per problem, pointing into the input, as REST's 422)."""
    from pydantic import ValidationError

    from portcullis.services.errors import errors_from_pydantic, invalid

    try:
        return model.model_validate(input_document(value) if value is not None else {})
    except ValidationError as exc:
        raise invalid(errors_from_pydantic(exc.errors())) from exc
