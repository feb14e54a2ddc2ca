"""What changed between two OpenAPI descriptions of an API, and which changes break
existing clients.

A change **breaks** a client written against `base` when a request it sends may now be
refused, or a response it reads may now surprise it:

- an operation (method + path) or a whole path is removed;
- a response status the operation documented is removed (clients branch on it);
- a parameter becomes required, or a new required parameter appears;
- a request body becomes required, or a request property becomes required;
- a request schema **narrows**: a type no longer accepted (`number` → `integer`, a
  type dropped from a list), an enum value removed, a bound tightened (minimum,
  maximum, minLength, maxLength, maxItems...), a property removed where additional
  properties are not allowed;
- a response schema **widens** what a client must read: a property it could rely on
  disappears or stops being required, an enum gains values, a type gains alternatives.

Additions (operations, optional parameters, response properties) are reported as not
breaking. Paths are compared with their parameter names normalized (`/items/{id}` and
`/items/{item_id}` are one path). `$ref`s are followed within each document (cycles
stop at the second visit).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_TEMPLATE = re.compile(r"\{[^}/]+\}")
_NARROWING_BOUNDS = {
    "minimum": 1,
    "exclusiveMinimum": 1,
    "minLength": 1,
    "minItems": 1,
    "minProperties": 1,
    "maximum": -1,
    "exclusiveMaximum": -1,
    "maxLength": -1,
    "maxItems": -1,
    "maxProperties": -1,
}


@dataclass(frozen=True, slots=True)
class Change:
    """One difference: where (a readable location), what, and whether it breaks clients."""

    location: str
    message: str
    breaking: bool

    def as_json(self) -> dict[str, Any]:
        return {"location": self.location, "message": self.message, "breaking": self.breaking}


def breaking_changes(base: dict[str, Any], head: dict[str, Any]) -> list[Change]:
    """Every change from `base` to `head`, breaking ones first (then by location)."""
    changes = list(_Differ(base, head).paths())
    return sorted(changes, key=lambda c: (not c.breaking, c.location, c.message))


def _operations(document: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Path items by their path with parameter names erased, with the path as written."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for path, item in (document.get("paths") or {}).items():
        if isinstance(item, dict):
            out[_TEMPLATE.sub("{}", path)] = (path, item)
    return out


class _Differ:
    def __init__(self, base: dict[str, Any], head: dict[str, Any]) -> None:
        self.base = base
        self.head = head

    def resolve(
        self, document: dict[str, Any], node: Any, seen: frozenset[str] = frozenset()
    ) -> Any:
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if not ref.startswith("#/") or ref in seen:
                return {}
            seen = seen | {ref}
            target: Any = document
            for token in ref[2:].split("/"):
                token = token.replace("~1", "/").replace("~0", "~")
                target = target.get(token) if isinstance(target, dict) else None
            node = target
        return node if node is not None else {}

    def paths(self) -> Iterator[Change]:
        old, new = _operations(self.base), _operations(self.head)
        for key, (path, item) in old.items():
            if key not in new:
                yield Change(f"paths[{path}]", "path removed", True)
                continue
            new_path, new_item = new[key]
            for method in METHODS:
                op = item.get(method)
                if not isinstance(op, dict):
                    continue
                where = f"{method.upper()} {path}"
                new_op = new_item.get(method)
                if not isinstance(new_op, dict):
                    yield Change(where, "operation removed", True)
                    continue
                yield from self.operation(where, item, op, new_item, new_op)
            for method in METHODS:
                if isinstance(new_item.get(method), dict) and not isinstance(
                    item.get(method), dict
                ):
                    yield Change(f"{method.upper()} {new_path}", "operation added", False)
        for key, (path, _item) in new.items():
            if key not in old:
                yield Change(f"paths[{path}]", "path added", False)

    def parameters(
        self, document: dict[str, Any], item: dict[str, Any], op: dict[str, Any]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for source in (item.get("parameters") or [], op.get("parameters") or []):
            for raw in source:
                p = self.resolve(document, raw)
                if isinstance(p, dict) and "name" in p and "in" in p:
                    key = (str(p["in"]), str(p["name"]) if p["in"] != "path" else "{}")
                    out[key] = p
        return out

    def operation(
        self,
        where: str,
        item: dict[str, Any],
        op: dict[str, Any],
        new_item: dict[str, Any],
        new_op: dict[str, Any],
    ) -> Iterator[Change]:
        old_params = self.parameters(self.base, item, op)
        new_params = self.parameters(self.head, new_item, new_op)
        for key, p in new_params.items():
            name = f"{key[0]} parameter {p.get('name')!r}"
            before = old_params.get(key)
            if before is None:
                yield Change(
                    where,
                    f"{name} added" + (" (required)" if p.get("required") else ""),
                    bool(p.get("required")),
                )
                continue
            if p.get("required") and not before.get("required"):
                yield Change(where, f"{name} became required", True)
            yield from self.schema(
                f"{where} {name}",
                self.resolve(self.base, before.get("schema")),
                self.resolve(self.head, p.get("schema")),
                request=True,
            )
        for key, p in old_params.items():
            if key not in new_params:
                yield Change(where, f"{key[0]} parameter {p.get('name')!r} removed", False)
        yield from self.body(where, op, new_op)
        old_responses = op.get("responses") or {}
        new_responses = new_op.get("responses") or {}
        for status, response in old_responses.items():
            if str(status) not in {str(s) for s in new_responses}:
                yield Change(where, f"response {status} removed", True)
                continue
            new_response = next(r for s, r in new_responses.items() if str(s) == str(status))
            old_content = self.resolve(self.base, response).get("content") or {}
            new_content = self.resolve(self.head, new_response).get("content") or {}
            for media, media_obj in old_content.items():
                if media not in new_content:
                    yield Change(where, f"response {status} no longer returns {media}", True)
                    continue
                yield from self.schema(
                    f"{where} response {status} {media}",
                    self.resolve(self.base, (media_obj or {}).get("schema")),
                    self.resolve(self.head, (new_content[media] or {}).get("schema")),
                    request=False,
                )
        for status in new_responses:
            if str(status) not in {str(s) for s in old_responses}:
                yield Change(where, f"response {status} added", False)

    def body(self, where: str, op: dict[str, Any], new_op: dict[str, Any]) -> Iterator[Change]:
        old = self.resolve(self.base, op.get("requestBody"))
        new = self.resolve(self.head, new_op.get("requestBody"))
        if not new:
            return
        if not old:
            yield Change(
                where,
                "request body added" + (" (required)" if new.get("required") else ""),
                bool(new.get("required")),
            )
            return
        if new.get("required") and not old.get("required"):
            yield Change(where, "request body became required", True)
        old_content, new_content = old.get("content") or {}, new.get("content") or {}
        for media in old_content:
            if media not in new_content:
                yield Change(where, f"request body no longer accepts {media}", True)
                continue
            yield from self.schema(
                f"{where} request {media}",
                self.resolve(self.base, (old_content[media] or {}).get("schema")),
                self.resolve(self.head, (new_content[media] or {}).get("schema")),
                request=True,
            )

    def schema(
        self, where: str, old: Any, new: Any, *, request: bool, depth: int = 0
    ) -> Iterator[Change]:
        """Schema changes; `request`: clients write it (narrowing breaks), else they read
        it (losing guarantees breaks)."""
        if not isinstance(old, dict) or not isinstance(new, dict) or depth > 8:
            return
        old_types, new_types = _types(old), _types(new)
        if old_types and new_types:
            lost = old_types - new_types - ({"integer"} if "number" in new_types else set())
            gained = new_types - old_types - ({"integer"} if "number" in old_types else set())
            if request and lost:
                yield Change(where, f"type narrowed: {sorted(lost)} no longer accepted", True)
            if not request and gained:
                yield Change(where, f"type widened: may now be {sorted(gained)}", True)
            if (request and gained) or (not request and lost):
                yield Change(
                    where, f"type changed {sorted(old_types)} -> {sorted(new_types)}", False
                )
        old_enum, new_enum = old.get("enum"), new.get("enum")
        if isinstance(old_enum, list) and isinstance(new_enum, list):
            removed = [v for v in old_enum if v not in new_enum]
            added = [v for v in new_enum if v not in old_enum]
            if removed:
                yield Change(where, f"enum values removed: {removed}", request)
            if added:
                yield Change(where, f"enum values added: {added}", not request)
        elif isinstance(new_enum, list) and old_enum is None:
            yield Change(where, "values restricted to an enum", request)
        if request:
            for bound, direction in _NARROWING_BOUNDS.items():
                a, b = _number(old.get(bound)), _number(new.get(bound))
                if b is not None and (a is None or (b - a) * direction > 0):
                    yield Change(where, f"{bound} tightened: {a} -> {b}", True)
        old_props = old.get("properties") or {}
        new_props = new.get("properties") or {}
        old_req, new_req = set(old.get("required") or []), set(new.get("required") or [])
        for name in sorted(new_req - old_req):
            if request:
                yield Change(where, f"property {name!r} became required", True)
        for name in sorted(old_req - new_req):
            if not request:
                yield Change(where, f"property {name!r} is no longer always present", True)
        for name, schema in old_props.items():
            if name not in new_props:
                breaks = (not request) or new.get("additionalProperties") is False
                yield Change(where, f"property {name!r} removed", breaks)
                continue
            yield from self.schema(
                f"{where}.{name}",
                self.resolve(self.base, schema),
                self.resolve(self.head, new_props[name]),
                request=request,
                depth=depth + 1,
            )
        for name in new_props:
            if name not in old_props:
                yield Change(where, f"property {name!r} added", False)
        if "items" in old and "items" in new:
            yield from self.schema(
                f"{where}[]",
                self.resolve(self.base, old["items"]),
                self.resolve(self.head, new["items"]),
                request=request,
                depth=depth + 1,
            )


def _types(schema: dict[str, Any]) -> set[str]:
    t = schema.get("type")
    types = (
        {t}
        if isinstance(t, str)
        else {x for x in t if isinstance(x, str)}
        if isinstance(t, list)
        else set()
    )
    if schema.get("nullable") is True and types:
        types.add("null")
    return types


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None
