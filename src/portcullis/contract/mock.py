"""Mock responses from an OpenAPI operation: its examples, else generated data.

What a mock sandbox answers (`sandbox: {mock: true}`), decided once per contract
(and the same for each documented status, which a client picks with `Prefer: code=N`):
the operation's documented success status (the lowest 2xx, else `default` as 200,
else its first documented status), the media type it documents (JSON preferred),
and a body taken from the media type's `example` or first `examples` entry, else the
schema's `example`/`examples`, else generated from the schema. Generation is
deterministic (the same description always yields the same body) and aims to be
schema-valid: required and optional properties, bounds, lengths, enums, formats;
the unit tests check the result with the same validator the gateway uses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from portcullis.contract.refs import Resolver

_MAX_DEPTH = 8
_FORMATS: dict[str, str] = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uri-reference": "https://example.com/",
    "iri": "https://example.com/",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "byte": "AAAA",
    "duration": "P1D",
    "regex": ".*",
    "json-pointer": "/a",
    "relative-json-pointer": "0",
    "uri-template": "https://example.com/{id}",
}


@dataclass(frozen=True, slots=True)
class MockResponse:
    """A prepared answer: status, media type (None: no body) and body bytes."""

    status: int
    media_type: str | None
    body: bytes


def is_json(media_type: str) -> bool:
    """Whether a media type (without parameters) carries JSON: application/json, *+json."""
    return media_type == "application/json" or media_type.endswith("+json")


def mock_responses(
    operation: Mapping[str, Any], resolver: Resolver
) -> tuple[MockResponse, Mapping[int, MockResponse]]:
    """The default mock answer of one Operation Object, and one per documented numeric
    status (what a client asks for with `Prefer: code=404`)."""
    responses = operation.get("responses")
    responses = responses if isinstance(responses, dict) else {}
    key, status = _success(responses)
    default = (
        MockResponse(status, None, b"")
        if key is None
        else _answer(responses[key], status, resolver)
    )
    by_status = {
        int(k): _answer(v, int(k), resolver)
        for k, v in responses.items()
        if str(k).isdigit() and 100 <= int(k) <= 599
    }
    return default, by_status


def mock_response(operation: Mapping[str, Any], resolver: Resolver) -> MockResponse:
    """The mock answer of one Operation Object (refs resolved through `resolver`)."""
    return mock_responses(operation, resolver)[0]


def _answer(response: Any, status: int, resolver: Resolver) -> MockResponse:
    response = resolver.deref(response)
    content = response.get("content") if isinstance(response, dict) else None
    if not isinstance(content, dict) or not content:
        return MockResponse(status, None, b"")
    media = next((m for m in content if is_json(m.split(";")[0].strip().lower())), None)
    media = media or next(iter(content))
    media_object = resolver.deref(content[media])
    media_object = media_object if isinstance(media_object, dict) else {}
    found, value = _example(media_object, resolver)
    if not found:
        schema = media_object.get("schema")
        if schema is None:
            return MockResponse(status, media, b"")
        value = generate(schema, resolver)
    if is_json(media.split(";")[0].strip().lower()):
        return MockResponse(status, media, json.dumps(value, separators=(",", ":")).encode())
    body = value if isinstance(value, str) else json.dumps(value)
    return MockResponse(status, media, body.encode())


def _success(responses: Mapping[str, Any]) -> tuple[str | None, int]:
    codes = sorted(k for k in responses if str(k).isdigit() and 200 <= int(k) < 300)
    if codes:
        return str(codes[0]), int(codes[0])
    if "2XX" in responses:
        return "2XX", 200
    if "default" in responses:
        return "default", 200
    for k in responses:
        if str(k).isdigit():
            return str(k), int(k)
    return None, 204


def _example(media: Mapping[str, Any], resolver: Resolver) -> tuple[bool, Any]:
    if "example" in media:
        return True, media["example"]
    examples = media.get("examples")
    if isinstance(examples, dict):
        for entry in examples.values():
            entry = resolver.deref(entry)
            if isinstance(entry, dict) and "value" in entry:
                return True, entry["value"]
    schema = resolver.deref(media.get("schema"))
    if isinstance(schema, dict):
        if "example" in schema:
            return True, schema["example"]
        listed = schema.get("examples")
        if isinstance(listed, list) and listed:
            return True, listed[0]
    return False, None


def generate(schema: Any, resolver: Resolver, depth: int = 0) -> Any:
    """Deterministic data meant to be valid against `schema` (an OpenAPI Schema Object)."""
    schema = resolver.deref(schema)
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None if schema is False else {}
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return schema["examples"][0]
    if "example" in schema:
        return schema["example"]
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            _merge(merged, resolver.deref(part), resolver)
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        _merge(merged, rest, resolver)
        return generate(merged, resolver, depth + 1)
    for key in ("oneOf", "anyOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return generate(options[0], resolver, depth + 1)
    kind = _type(schema)
    if kind == "object":
        return _object(schema, resolver, depth)
    if kind == "array":
        count = max(int(schema.get("minItems", 0)), 1 if depth < _MAX_DEPTH - 1 else 0)
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [generate(p, resolver, depth + 1) for p in prefix]
        return [generate(schema.get("items", {}), resolver, depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(_number(schema, integer=True))
    if kind == "number":
        return _number(schema, integer=False)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema)


def _type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _merge(into: dict[str, Any], part: Any, resolver: Resolver) -> None:
    if not isinstance(part, dict):
        return
    for key, value in part.items():
        if key == "properties" and isinstance(value, dict):
            into.setdefault("properties", {}).update(value)
        elif key == "required" and isinstance(value, list):
            into["required"] = sorted({*into.get("required", []), *value})
        elif key == "allOf" and isinstance(value, list):
            for sub in value:
                _merge(into, resolver.deref(sub), resolver)
        else:
            into.setdefault(key, value)


def _object(schema: Mapping[str, Any], resolver: Resolver, depth: int) -> dict[str, Any]:
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    required = schema.get("required")
    names = list(props)
    if isinstance(required, list):
        names += [r for r in required if r not in props]
    out: dict[str, Any] = {}
    for name in names:
        sub = resolver.deref(props.get(name, {}))
        if isinstance(sub, dict) and sub.get("writeOnly") is True:
            continue
        out[name] = generate(sub, resolver, depth + 1)
    return out


def _number(schema: Mapping[str, Any], integer: bool) -> float:
    low = schema.get("minimum")
    exclusive_low = schema.get("exclusiveMinimum")
    high = schema.get("maximum")
    exclusive_high = schema.get("exclusiveMaximum")
    step = schema.get("multipleOf")
    value: float = 0
    if isinstance(exclusive_low, bool):  # OpenAPI 3.0 form
        exclusive_low = low if exclusive_low else None
        low = None if exclusive_low is not None else low
    if isinstance(exclusive_high, bool):
        exclusive_high = high if exclusive_high else None
        high = None if exclusive_high is not None else high
    if isinstance(low, int | float):
        value = max(value, low)
    if isinstance(exclusive_low, int | float) and value <= exclusive_low:
        value = exclusive_low + (1 if integer else 0.5)
    if isinstance(high, int | float) and value > high:
        value = high
    if isinstance(exclusive_high, int | float) and value >= exclusive_high:
        value = exclusive_high - (1 if integer else 0.5)
    if isinstance(step, int | float) and step > 0 and value % step:
        value = (value // step + 1) * step
    if integer:
        return int(value)
    return value


def _string(schema: Mapping[str, Any]) -> str:
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, "string") if isinstance(fmt, str) else "string"
    low = schema.get("minLength")
    high = schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text = text + "x" * (low - len(text))
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text
