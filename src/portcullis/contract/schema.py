"""OpenAPI Schema Objects as JSON Schema 2020-12, per direction of travel.

OpenAPI 3.1 schemas are JSON Schema 2020-12 already; 3.0 schemas are a dialect of
draft 4 that this module rewrites: `nullable: true` adds `"null"` to `type` (and to
`enum`), boolean `exclusiveMinimum`/`exclusiveMaximum` become the numeric form, and
a `$ref` replaces its siblings. In both versions a `readOnly` property is not
required in a request and a `writeOnly` one not in a response (OpenAPI 3.0 §4.7.25,
3.1 by the same reading of the JSON Schema annotations).
"""

from __future__ import annotations

from typing import Any, Literal

Direction = Literal["request", "response"]
DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Keywords whose value is one schema, a list of schemas, or a map of name -> schema.
_ONE = (
    "items",
    "additionalProperties",
    "not",
    "contains",
    "propertyNames",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
)
_MANY = ("allOf", "anyOf", "oneOf", "prefixItems")
# OpenAPI-only keywords (annotations a validator need not see).
_DROPPED = frozenset({"discriminator", "xml", "externalDocs"})
_DROPPED_30 = frozenset({"nullable", "example"})
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def convert(schema: Any, openapi_30: bool, direction: Direction) -> Any:
    """`schema` (a Schema Object or a boolean schema) as JSON Schema 2020-12."""
    if not isinstance(schema, dict):
        return schema
    if openapi_30 and "$ref" in schema:
        return {"$ref": schema["$ref"]}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _ONE:
            if key == "items" and isinstance(value, list):
                out["prefixItems"] = [convert(v, openapi_30, direction) for v in value]
            else:
                out[key] = convert(value, openapi_30, direction)
        elif key in _MANY and isinstance(value, list):
            out[key] = [convert(v, openapi_30, direction) for v in value]
        elif key in _MAP and isinstance(value, dict):
            out[key] = {k: convert(v, openapi_30, direction) for k, v in value.items()}
        elif (
            key in ("discriminator", "xml", "externalDocs")
            or key.startswith("x-")
            or (openapi_30 and key in ("nullable", "example"))
        ):
            continue
        else:
            out[key] = value
    if openapi_30:
        _openapi_30(schema, out)
    _relax_required(out, direction)
    return out


def _openapi_30(schema: dict[str, Any], out: dict[str, Any]) -> None:
    if schema.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            out["type"] = [*kind, "null"]
        enum = out.get("enum")
        if isinstance(enum, list) and None not in enum:
            out["enum"] = [*enum, None]
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(flag)
        if isinstance(value, bool):
            if value and bound in out:
                out[flag] = out.pop(bound)
            else:
                del out[flag]


def _relax_required(out: dict[str, Any], direction: Direction) -> None:
    required = out.get("required")
    properties = out.get("properties")
    if not isinstance(required, list) or not isinstance(properties, dict):
        return
    hidden = "readOnly" if direction == "request" else "writeOnly"
    kept = [
        name
        for name in required
        if not (isinstance(properties.get(name), dict) and properties[name].get(hidden) is True)
    ]
    if len(kept) != len(required):
        out["required"] = kept
