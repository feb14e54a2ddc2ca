"""Marking secrets in the models, so what records or exports documents can redact them.

A field (or a leaf type: a dict's values, a list's items) is secret when its JSON
Schema says `"writeOnly": true`, JSON Schema's own word for "accepted, never
shown" (pydantic's `SecretStr` already says it). `Secret[T]` marks any type;
`redact` replaces every value the schema marks with `"[redacted]"`, following
`$ref`, properties, `additionalProperties`, items and every branch of a union (a
value is redacted when any branch that could describe it is secret), and leaves
the document's shape alone, so diffs and audit trails still show *what* changed.

A plugin instance's `config` is described by its plugin's model, not by
`PluginInstance`: the property carries `x-schema-of: plugin`, and the schema comes
from the resolver registered for that word (plugins/registry.py registers it).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field

REDACTED = "[redacted]"
SECRET_SCHEMA: dict[str, Any] = {"writeOnly": True}
# A property whose schema depends on a sibling field's value (see `register_schema_of`).
SCHEMA_OF = "x-schema-of"

T = TypeVar("T")
Secret = Annotated[T, Field(json_schema_extra=SECRET_SCHEMA)]

# word -> (document holding the property -> JSON Schema of the property's value, or None)
_SCHEMA_OF: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {}


def register_schema_of(
    word: str, resolver: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> None:
    """Say how to find the schema of properties marked `x-schema-of: <word>`."""
    _SCHEMA_OF[word] = resolver


@cache
def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema (validation mode: the shape documents are written in)."""
    return model.model_json_schema(mode="validation")


def redact(value: Any, model: type[BaseModel]) -> Any:
    """A copy of `value` (a JSON document of `model`) with every secret value redacted."""
    schema = schema_of(model)
    return _redact(value, schema, schema.get("$defs", {}))


def redact_with_schema(value: Any, schema: dict[str, Any]) -> Any:
    return _redact(value, schema, schema.get("$defs", {}))


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while "$ref" in schema and seen < 32:
        ref = str(schema["$ref"])
        target = defs.get(ref.rsplit("/", 1)[-1])
        if not isinstance(target, dict):
            return {}
        # Keywords beside a $ref (e.g. writeOnly on a field of a model type) still apply.
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        seen += 1
    return schema


def _redact(value: Any, schema: Any, defs: dict[str, Any]) -> Any:
    if value is None or not isinstance(schema, dict):
        return value
    schema = _resolve(schema, defs)
    if schema.get("writeOnly") is True:
        return REDACTED
    for union in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(union, ()):
            value = _redact(value, branch, defs)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub = properties.get(key, extra)
            if isinstance(sub, dict) and SCHEMA_OF in sub:
                resolver = _SCHEMA_OF.get(str(sub[SCHEMA_OF]))
                dynamic = None if resolver is None else resolver(value)
                # Unknown: the whole value, so a secret can't slip through unrecognised.
                out[key] = REDACTED if dynamic is None else redact_with_schema(item, dynamic)
                continue
            out[key] = _redact(item, sub, defs)
        return out
    if isinstance(value, list):
        prefix = schema.get("prefixItems", [])
        items = schema.get("items")
        return [
            _redact(item, prefix[i] if i < len(prefix) else items, defs)
            for i, item in enumerate(value)
        ]
    return value
