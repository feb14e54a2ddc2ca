"""Reference docs of an OpenAPI 3.0/3.1 description as a view model the portal renders
server-side (Jinja2 templates, no Redoc or Swagger UI: their inline styles and scripts
break the portal's Content-Security-Policy; docs/decisions/037).

`reference(document)` turns the description a client sees (the catalogue's published
document) into plain dataclasses: operations grouped by tag, their parameters, request
body and responses with every schema flattened into rows of a table (`items[].name`),
and one example per media type (the document's own, else generated from the schema).
Local `$ref`s are followed; one that points back into a schema being expanded is shown
as a row saying so (a cycle guard, not an error), and one that points at nothing is a
row saying that. Output is bounded (`MAX_DEPTH`, `MAX_ROWS`), so a hostile or huge
description costs a bounded page. Missing parts (no tags, no responses, no schema)
give empty lists, never an exception: a description that the catalogue accepted always
renders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from portcullis.contract.mock import generate
from portcullis.contract.refs import ContractError, Resolver

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Deepest nesting of a flattened schema, and most rows one schema table holds.
MAX_DEPTH = 8
MAX_ROWS = 400
# Longest example shown (characters of pretty-printed JSON).
MAX_EXAMPLE_CHARS = 4000
UNTAGGED = "default"
_ANCHOR = re.compile(r"[^A-Za-z0-9_]+")
_CONSTRAINTS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "length ≥ {}"),
    ("maxLength", "length ≤ {}"),
    ("minItems", "items ≥ {}"),
    ("maxItems", "items ≤ {}"),
    ("pattern", "pattern {}"),
    ("multipleOf", "multiple of {}"),
)


@dataclass(frozen=True, slots=True)
class SchemaRow:
    """One field of a flattened schema: `name` is its path (`items[].price`), `depth`
    how deep it sits (for indentation), `type` readable text (`string (date-time)`,
    `array of Item`, `one of: A | B`)."""

    name: str
    depth: int
    type: str
    required: bool = False
    description: str = ""
    constraints: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class SchemaTable:
    """A schema as rows; `truncated` when `MAX_ROWS` or `MAX_DEPTH` cut it short."""

    type: str
    rows: list[SchemaRow] = field(default_factory=list)
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class MediaView:
    media_type: str
    schema: SchemaTable | None
    example: str | None = None


@dataclass(frozen=True, slots=True)
class ParameterView:
    name: str
    location: str
    required: bool
    type: str
    description: str = ""
    deprecated: bool = False
    example: str | None = None


@dataclass(frozen=True, slots=True)
class BodyView:
    required: bool
    description: str
    media: list[MediaView]


@dataclass(frozen=True, slots=True)
class ResponseView:
    status: str
    description: str
    headers: list[ParameterView]
    media: list[MediaView]


@dataclass(frozen=True, slots=True)
class OperationView:
    anchor: str
    method: str
    path: str
    operation_id: str | None
    summary: str
    description: str
    deprecated: bool
    parameters: list[ParameterView]
    request_body: BodyView | None
    responses: list[ResponseView]
    security: list[str]


@dataclass(frozen=True, slots=True)
class TagView:
    name: str
    description: str
    operations: list[OperationView]


@dataclass(frozen=True, slots=True)
class SchemeView:
    name: str
    text: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class ReferenceDoc:
    title: str
    version: str
    description: str
    servers: list[str]
    tags: list[TagView]
    security_schemes: list[SchemeView]
    operations: int

    def operation(self, anchor: str) -> OperationView | None:
        for tag in self.tags:
            for op in tag.operations:
                if op.anchor == anchor:
                    return op
        return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _json(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_EXAMPLE_CHARS else text[:MAX_EXAMPLE_CHARS] + "\n…"


class _Flattener:
    """Turns one schema into rows, following `$ref`s with a guard against cycles."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.rows: list[SchemaRow] = []
        self.truncated = False

    def resolve(self, node: Any, seen: tuple[str, ...]) -> tuple[Any, str | None, bool]:
        """(the schema behind `node`, the name of the ref it came through, whether
        following it would loop back into `seen`)."""
        name: str | None = None
        for _ in range(32):
            if not (isinstance(node, Mapping) and isinstance(node.get("$ref"), str)):
                return node, name, False
            ref = node["$ref"]
            if ref in seen:
                return None, _ref_name(ref), True
            name = _ref_name(ref)
            try:
                node = self.resolver.pointer(ref)
            except ContractError:
                return None, name, False
        return None, name, True

    def type_of(self, schema: Any, ref: str | None) -> str:
        if schema is True or schema == {}:
            return "any"
        if not isinstance(schema, Mapping):
            return ref or "unknown"
        for key, word in (("oneOf", "one of"), ("anyOf", "any of")):
            options = schema.get(key)
            if isinstance(options, list) and options:
                names = [self._option_name(o) for o in options[:8]]
                return f"{word}: " + " | ".join(names)
        kind = schema.get("type")
        kinds = [k for k in kind if isinstance(k, str)] if isinstance(kind, list) else []
        text = (
            kind
            if isinstance(kind, str)
            else " | ".join(kinds)
            if kinds
            else "object"
            if "properties" in schema or "allOf" in schema
            else "array"
            if "items" in schema
            else "any"
        )
        if text == "array" or (kinds and "array" in kinds):
            items, item_ref, _ = self.resolve(schema.get("items"), ())
            inner = item_ref or (self.type_of(items, None) if items is not None else "any")
            text = text.replace("array", f"array of {inner}")
        elif ref and text == "object":
            text = ref
        fmt = schema.get("format")
        if isinstance(fmt, str):
            text += f" ({fmt})"
        if schema.get("nullable") is True:
            text += " | null"
        return text

    def _option_name(self, option: Any) -> str:
        if isinstance(option, Mapping) and isinstance(option.get("$ref"), str):
            return _ref_name(option["$ref"])
        return self.type_of(option, None)

    @staticmethod
    def constraints(schema: Mapping[str, Any]) -> str:
        parts = [fmt.format(schema[k]) for k, fmt in _CONSTRAINTS if k in schema]
        if isinstance(schema.get("enum"), list):
            parts.append("one of " + ", ".join(json.dumps(v) for v in schema["enum"][:20]))
        if "const" in schema:
            parts.append(f"= {json.dumps(schema['const'])}")
        if "default" in schema:
            parts.append(f"default {json.dumps(schema['default'], default=str)}")
        if schema.get("readOnly") is True:
            parts.append("read-only")
        if schema.get("writeOnly") is True:
            parts.append("write-only")
        return "; ".join(parts)

    def add(self, row: SchemaRow) -> bool:
        if len(self.rows) >= MAX_ROWS:
            self.truncated = True
            return False
        self.rows.append(row)
        return True

    def walk(self, schema: Any, prefix: str, depth: int, seen: tuple[str, ...]) -> None:
        """Rows for the fields inside `schema` (already resolved), named under `prefix`."""
        if not isinstance(schema, Mapping):
            return
        if depth >= MAX_DEPTH:
            self.truncated = True
            return
        properties: dict[str, Any] = {}
        required: set[str] = set()
        self._collect(schema, properties, required, seen, 0)
        for name, sub in properties.items():
            path = f"{prefix}.{name}" if prefix else name
            self.field(sub, path, depth, seen, required=name in required)
        items = schema.get("items")
        if items is not None and not properties:
            self.field(items, f"{prefix}[]", depth, seen, required=False, only_nested=True)
        for key in ("oneOf", "anyOf"):
            options = schema.get(key)
            if isinstance(options, list):
                for i, option in enumerate(options[:8], 1):
                    label = f"{prefix} (option {i})" if prefix else f"(option {i})"
                    self.field(option, label, depth, seen, required=False)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping) and extra:
            self.field(extra, f"{prefix}{{*}}" if prefix else "{*}", depth, seen, required=False)

    def _collect(
        self,
        schema: Mapping[str, Any],
        properties: dict[str, Any],
        required: set[str],
        seen: tuple[str, ...],
        hops: int,
    ) -> None:
        """Properties of `schema` and of its allOf parts (merged), required names too."""
        own = schema.get("properties")
        if isinstance(own, Mapping):
            for k, v in own.items():
                properties.setdefault(str(k), v)
        listed = schema.get("required")
        if isinstance(listed, list):
            required.update(str(r) for r in listed)
        parts = schema.get("allOf")
        if isinstance(parts, list) and hops < MAX_DEPTH:
            for part in parts:
                resolved, _, looped = self.resolve(part, seen)
                if isinstance(resolved, Mapping) and not looped:
                    ref = part.get("$ref") if isinstance(part, Mapping) else None
                    inner = (*seen, ref) if isinstance(ref, str) else seen
                    self._collect(resolved, properties, required, inner, hops + 1)

    def field(
        self,
        node: Any,
        path: str,
        depth: int,
        seen: tuple[str, ...],
        *,
        required: bool,
        only_nested: bool = False,
    ) -> None:
        ref = node.get("$ref") if isinstance(node, Mapping) else None
        schema, name, looped = self.resolve(node, seen)
        if looped:
            self.add(SchemaRow(path, depth, name or "?", required, note=f"circular: see {name}"))
            return
        if schema is None and isinstance(ref, str):
            self.add(SchemaRow(path, depth, name or "?", required, note=f"unresolved $ref {ref}"))
            return
        if not isinstance(schema, Mapping):
            if not only_nested:
                self.add(SchemaRow(path, depth, self.type_of(schema, name), required))
            return
        nested_seen = (*seen, ref) if isinstance(ref, str) else seen
        if not only_nested:
            added = self.add(
                SchemaRow(
                    path,
                    depth,
                    self.type_of(schema, name),
                    required,
                    _text(schema.get("description")) or _text(schema.get("title")),
                    self.constraints(schema),
                    "deprecated" if schema.get("deprecated") is True else "",
                )
            )
            if not added:
                return
        self.walk(schema, path, depth + (0 if only_nested else 1), nested_seen)


def schema_table(schema: Any, resolver: Resolver) -> SchemaTable:
    """A schema (or a `$ref` to one) as a table of rows."""
    flat = _Flattener(resolver)
    resolved, name, looped = flat.resolve(schema, ())
    if looped or resolved is None:
        ref = schema.get("$ref") if isinstance(schema, Mapping) else None
        note = f"unresolved $ref {ref}" if ref else "no schema"
        return SchemaTable(name or "unknown", [SchemaRow("", 0, name or "?", note=note)])
    seen = (schema["$ref"],) if isinstance(schema, Mapping) and "$ref" in schema else ()
    flat.walk(resolved, "", 0, seen)
    return SchemaTable(flat.type_of(resolved, name), flat.rows, flat.truncated)


def _example(media: Mapping[str, Any], resolver: Resolver) -> str | None:
    """The media type's example: its own `example`/`examples`, the schema's, else one
    generated from the schema (deterministic); None without a schema."""
    if "example" in media:
        return _json(media["example"])
    examples = media.get("examples")
    if isinstance(examples, Mapping):
        for entry in examples.values():
            try:
                entry = resolver.deref(entry)
            except ContractError:
                continue
            if isinstance(entry, Mapping) and "value" in entry:
                return _json(entry["value"])
    schema = media.get("schema")
    if schema is None:
        return None
    try:
        return _json(generate(schema, resolver))
    except (ContractError, RecursionError, TypeError, ValueError):
        return None


def _media(content: Any, resolver: Resolver) -> list[MediaView]:
    if not isinstance(content, Mapping):
        return []
    out = []
    for media_type, media in content.items():
        if not isinstance(media, Mapping):
            continue
        schema = media.get("schema")
        out.append(
            MediaView(
                str(media_type),
                schema_table(schema, resolver) if schema is not None else None,
                _example(media, resolver),
            )
        )
    return out


def _deref(node: Any, resolver: Resolver) -> Mapping[str, Any]:
    try:
        found = resolver.deref(node)
    except ContractError:
        return {}
    return found if isinstance(found, Mapping) else {}


def _parameter(node: Any, resolver: Resolver, location: str | None = None) -> ParameterView:
    p = _deref(node, resolver)
    schema = p.get("schema")
    if schema is None and isinstance(p.get("content"), Mapping):
        first: Any = next(iter(p["content"].values()), None)
        schema = first.get("schema") if isinstance(first, Mapping) else None
    flat = _Flattener(resolver)
    resolved, name, _ = flat.resolve(schema, ())
    example = p.get("example")
    if example is None and isinstance(resolved, Mapping):
        example = resolved.get("example")
    return ParameterView(
        name=_text(p.get("name")) or "?",
        location=location or _text(p.get("in")) or "?",
        required=p.get("required") is True,
        type=flat.type_of(resolved, name) if schema is not None else "any",
        description=_text(p.get("description")),
        deprecated=p.get("deprecated") is True,
        example=None if example is None else json.dumps(example, default=str),
    )


def _parameters(
    path_item: Mapping[str, Any], op: Mapping[str, Any], resolver: Resolver
) -> list[ParameterView]:
    """Path-level parameters overridden by the operation's (same name and location)."""
    merged: dict[tuple[str, str], ParameterView] = {}
    for source in (path_item.get("parameters"), op.get("parameters")):
        if isinstance(source, list):
            for node in source:
                view = _parameter(node, resolver)
                merged[(view.name, view.location)] = view
    order = {"path": 0, "query": 1, "header": 2, "cookie": 3}
    return sorted(merged.values(), key=lambda v: (order.get(v.location, 4), not v.required))


def _responses(op: Mapping[str, Any], resolver: Resolver) -> list[ResponseView]:
    responses = op.get("responses")
    if not isinstance(responses, Mapping):
        return []
    out = []
    for status, node in responses.items():
        r = _deref(node, resolver)
        headers = r.get("headers")
        out.append(
            ResponseView(
                str(status),
                _text(r.get("description")),
                [
                    _parameter({"name": n, **_deref(h, resolver)}, resolver, "header")
                    for n, h in headers.items()
                ]
                if isinstance(headers, Mapping)
                else [],
                _media(r.get("content"), resolver),
            )
        )
    return sorted(out, key=lambda v: (not v.status.isdigit(), v.status))


def _security(op: Mapping[str, Any], document: Mapping[str, Any]) -> list[str]:
    requirements = op.get("security", document.get("security"))
    if not isinstance(requirements, list):
        return []
    names: list[str] = []
    for req in requirements:
        if isinstance(req, Mapping):
            text = " + ".join(str(k) for k in req) or "none (optional)"
            if text not in names:
                names.append(text)
    return names


def anchor_of(method: str, path: str, operation_id: Any) -> str:
    """The HTML id of an operation (its operationId, else method and path)."""
    raw = operation_id if isinstance(operation_id, str) and operation_id else f"{method}-{path}"
    return "op-" + (_ANCHOR.sub("-", raw).strip("-") or "root")


def _scheme_text(scheme: Mapping[str, Any]) -> str:
    kind = _text(scheme.get("type"))
    if kind == "apiKey":
        return f"API key in {_text(scheme.get('in'))} {_text(scheme.get('name'))}"
    if kind == "http":
        return f"HTTP {_text(scheme.get('scheme'))}".strip()
    if kind == "oauth2":
        flows = scheme.get("flows")
        return "OAuth 2.0 (" + ", ".join(flows if isinstance(flows, Mapping) else []) + ")"
    return kind or "?"


def reference(document: Mapping[str, Any]) -> ReferenceDoc:
    """The reference-docs view model of an OpenAPI 3.x description (see the module doc)."""
    resolver = Resolver(document)
    info = document.get("info") if isinstance(document.get("info"), Mapping) else {}
    assert isinstance(info, Mapping)
    declared = document.get("tags")
    tag_text = {
        str(t["name"]): _text(t.get("description"))
        for t in (declared if isinstance(declared, list) else [])
        if isinstance(t, Mapping) and isinstance(t.get("name"), str)
    }
    groups: dict[str, list[OperationView]] = {name: [] for name in tag_text}
    used: set[str] = set()
    paths = document.get("paths")
    count = 0
    for path, item in paths.items() if isinstance(paths, Mapping) else []:
        path_item = _deref(item, resolver)
        for method in METHODS:
            op = path_item.get(method)
            if not isinstance(op, Mapping):
                continue
            anchor = anchor_of(method, str(path), op.get("operationId"))
            while anchor in used:
                anchor += "-2"
            used.add(anchor)
            body = _deref(op.get("requestBody"), resolver) if "requestBody" in op else None
            view = OperationView(
                anchor=anchor,
                method=method.upper(),
                path=str(path),
                operation_id=op.get("operationId")
                if isinstance(op.get("operationId"), str)
                else None,
                summary=_text(op.get("summary")),
                description=_text(op.get("description")),
                deprecated=op.get("deprecated") is True,
                parameters=_parameters(path_item, op, resolver),
                request_body=None
                if body is None
                else BodyView(
                    body.get("required") is True,
                    _text(body.get("description")),
                    _media(body.get("content"), resolver),
                ),
                responses=_responses(op, resolver),
                security=_security(op, document),
            )
            count += 1
            tags = (
                [t for t in op.get("tags", []) if isinstance(t, str)]
                if isinstance(op.get("tags"), list)
                else []
            )
            for tag in tags or [UNTAGGED]:
                groups.setdefault(tag, []).append(view)
    schemes = (document.get("components") or {}).get("securitySchemes")
    servers = document.get("servers")
    return ReferenceDoc(
        title=_text(info.get("title")) or "API",
        version=_text(info.get("version")),
        description=_text(info.get("description")),
        servers=[
            str(s["url"])
            for s in (servers if isinstance(servers, list) else [])
            if isinstance(s, Mapping) and isinstance(s.get("url"), str)
        ],
        tags=[
            TagView(name, tag_text.get(name, ""), ops)
            for name, ops in sorted(groups.items(), key=lambda g: g[0] == UNTAGGED)
            if ops
        ],
        security_schemes=[
            SchemeView(
                str(n),
                _scheme_text(_deref(s, resolver)),
                _text(_deref(s, resolver).get("description")),
            )
            for n, s in (schemes.items() if isinstance(schemes, Mapping) else [])
        ],
        operations=count,
    )
