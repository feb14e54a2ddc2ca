"""Reading OpenAPI parameters out of a request: styles, explode, and string coercion.

A parameter arrives as text; its schema says what it should be. Each parameter is
compiled once (`ParameterReader`) from its location, style, explode and the shape
of its schema (scalar, array or object, with the JSON types of the scalars), so a
request only splits strings and converts the pieces the schema expects. A piece
that does not convert stays a string and the schema validator reports it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus

Location = Literal["path", "query", "header", "cookie"]
_DEFAULT_STYLE: dict[str, str] = {
    "path": "simple",
    "query": "form",
    "header": "simple",
    "cookie": "form",
}
_DELIMITERS = {"spaceDelimited": " ", "pipeDelimited": "|"}


@dataclass(frozen=True, slots=True)
class Shape:
    """What a parameter's schema holds: `kind` and the JSON types of its scalars."""

    kind: Literal["scalar", "array", "object"]
    types: frozenset[str] = frozenset()
    # object: property name -> the types of that property's scalar values
    properties: Mapping[str, frozenset[str]] = field(default_factory=dict)


def coerce(text: str, types: frozenset[str]) -> Any:
    """`text` as the first JSON type of `types` it parses as (else the text itself)."""
    if "integer" in types:
        try:
            return int(text)
        except ValueError:
            pass
    if "number" in types:
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            return int(number) if number.is_integer() and "." not in text else number
    if "boolean" in types and text in ("true", "false"):
        return text == "true"
    if "null" in types and text in ("", "null"):
        return None
    return text


@dataclass(frozen=True, slots=True)
class ParameterReader:
    """Turns the raw text(s) of one parameter into the value its schema validates."""

    name: str
    location: Location
    style: str
    explode: bool
    shape: Shape
    # `content: {application/json: ...}` instead of a schema: the text is JSON.
    json_content: bool = False

    @classmethod
    def of(
        cls, name: str, location: Location, style: str | None, explode: bool | None, shape: Shape
    ) -> ParameterReader:
        style = style or _DEFAULT_STYLE[location]
        return cls(name, location, style, style == "form" if explode is None else explode, shape)

    def from_query(self, pairs: Sequence[tuple[str, str]]) -> tuple[bool, Any]:
        """(present, value) from the decoded query pairs."""
        kind = self.shape.kind
        if kind == "object" and self.style == "deepObject":
            prefix = self.name + "["
            found = {
                k[len(prefix) : -1]: v for k, v in pairs if k.startswith(prefix) and k.endswith("]")
            }
            return bool(found), self._object_values(found)
        if kind == "object" and self.explode and not self.json_content:
            props = self.shape.properties
            found = {k: v for k, v in pairs if k in props}
            return bool(found), self._object_values(found)
        values = [v for k, v in pairs if k == self.name]
        if not values:
            return False, None
        if self.json_content:
            return True, _json(values[0])
        if kind == "array":
            if self.explode and self.style == "form":
                items = values
            else:
                items = values[0].split(_DELIMITERS.get(self.style, ","))
            return True, [coerce(v, self.shape.types) for v in items]
        if kind == "object":
            return True, self._pairs(values[0].split(","))
        return True, coerce(values[0], self.shape.types)

    def from_text(self, text: str) -> Any:
        """The value of a path, header or cookie parameter from its text."""
        if self.json_content:
            return _json(text)
        kind = self.shape.kind
        if self.style == "label" and text.startswith("."):
            text = text[1:]
            sep = "." if self.explode else ","
        elif self.style == "matrix" and text.startswith(";"):
            text = text[1:]
            if kind == "array" and self.explode:
                return [coerce(p.partition("=")[2], self.shape.types) for p in text.split(";") if p]
            if kind != "object" or not self.explode:
                text = text.partition("=")[2]
            sep = ";" if self.explode else ","
        else:
            sep = ","
        if kind == "array":
            items = [t.strip() if self.location == "header" else t for t in text.split(sep)]
            return [coerce(t, self.shape.types) for t in items] if text else []
        if kind == "object":
            parts = text.split(sep)
            if self.explode:
                found = dict(p.partition("=")[::2] for p in parts if p)
                return self._object_values(found)
            return self._pairs(parts)
        return coerce(text, self.shape.types)

    def _pairs(self, parts: list[str]) -> Any:
        if len(parts) % 2:
            return ",".join(parts)  # not key,value pairs: the validator reports the type
        return self._object_values(dict(zip(parts[::2], parts[1::2], strict=True)))

    def _object_values(self, found: Mapping[str, str]) -> dict[str, Any]:
        props = self.shape.properties
        return {k: coerce(v, props.get(k, frozenset())) for k, v in found.items()}


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_query(query: bytes) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs of a query string, blanks kept (`parse_qsl`'s result,
    without its cost for the common query that has nothing to decode)."""
    pairs: list[tuple[str, str]] = []
    if not query:
        return pairs
    for piece in query.decode("utf-8", "replace").split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        if "%" in piece or "+" in piece:
            name, value = unquote_plus(name), unquote_plus(value)
        pairs.append((name, value))
    return pairs


def parse_cookies(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Cookie name -> value from every Cookie header (RFC 6265 §5.4 pairs)."""
    cookies: dict[str, str] = {}
    for name, value in headers:
        if name == b"cookie":
            for pair in value.decode("latin-1").split(";"):
                key, sep, val = pair.strip().partition("=")
                if sep and key:
                    cookies.setdefault(key, val)
    return cookies
