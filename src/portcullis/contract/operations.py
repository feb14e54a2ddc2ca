"""An OpenAPI description compiled for the data plane: operations by method and path,
parameter readers, JSON Schema validators (jsonschema-rs) and mock responses.

`compile_contract(document)` does all the work once (per snapshot, and cached by
the document's content across snapshots); a request then costs a dict or regex
lookup of its operation plus the validators of the parts it carries.

Validators: every schema the contract checks (parameters, request bodies per media
type, response bodies) is converted to JSON Schema 2020-12 (`contract.schema`) and
placed under `$defs` of one root per direction, next to the converted
`components.schemas` that `$ref`s point at; `jsonschema_rs.validator_map_for`
compiles each root once. Validators never fetch anything (`offline`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import jsonschema_rs
import structlog

from portcullis.contract.mock import MockResponse, is_json, mock_responses
from portcullis.contract.parameters import (
    Location,
    ParameterReader,
    Shape,
    coerce,
    parse_cookies,
    parse_query,
)
from portcullis.contract.refs import ContractError, Resolver, escape
from portcullis.contract.schema import DIALECT, Direction, convert

log = structlog.get_logger(__name__)
FORM = "application/x-www-form-urlencoded"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_LOCATIONS = ("path", "query", "header", "cookie")
# Request headers OpenAPI says are described elsewhere (§4.8.12.1): never validated as parameters.
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
_TEMPLATE_PARAM = re.compile(r"\{([^{}/]+)\}")


@dataclass(frozen=True, slots=True)
class Issue:
    """One way a request (or response) differs from the description.

    `part` is body, query, header, path or cookie; `pointer` a JSON pointer into that
    part (for parameters the first token is the parameter's name).
    """

    part: str
    pointer: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"in": self.part, "pointer": self.pointer, "detail": self.detail}


Validator = Any  # a jsonschema_rs validator (the package ships no type stubs for it)


@dataclass(frozen=True, slots=True)
class CompiledParameter:
    reader: ParameterReader
    required: bool
    validator: Validator | None
    # A path parameter's group in the template's pattern.
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path template, ready to check requests and responses."""

    method: str
    template: str
    operation_id: str | None
    parameters: tuple[CompiledParameter, ...]
    # None: the operation documents no request body.
    body_media: tuple[tuple[str, Validator | None], ...] | None
    body_required: bool
    # status key ("200", "2XX", "default") -> ((media type, validator), ...)
    responses: Mapping[str, tuple[tuple[str, Validator | None], ...]]
    mock: MockResponse
    # application/x-www-form-urlencoded bodies: each property's shape (for coercion).
    form_fields: Mapping[str, Shape] | None = None
    # The mock answer for each documented numeric status (`Prefer: code=N`).
    mocks: Mapping[int, MockResponse] = field(default_factory=dict)

    def check_parameters(
        self,
        path_params: Mapping[str, str],
        query: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        limit: int,
    ) -> list[Issue]:
        """Issues with the request's path, query, header and cookie parameters."""
        issues: list[Issue] = []
        pairs: list[tuple[str, str]] | None = None
        cookies: dict[str, str] | None = None
        for param in self.parameters:
            reader = param.reader
            location = reader.location
            value: Any = None
            if location == "query":
                if pairs is None:
                    pairs = parse_query(query)
                present, value = reader.from_query(pairs)
            else:
                if location == "path":
                    text = path_params.get(param.group or "")
                elif location == "header":
                    text = header_value(headers, reader.name.lower().encode("latin-1"))
                else:
                    if cookies is None:
                        cookies = parse_cookies(headers)
                    text = cookies.get(reader.name)
                present = text is not None
                if text is not None:
                    value = reader.from_text(text)
            pointer = "#/" + escape(reader.name)
            if not present:
                if param.required:
                    detail = f"the required {location} parameter {reader.name!r} is missing"
                    issues.append(Issue(location, pointer, detail))
            elif param.validator is not None:
                issues += validation_issues(
                    param.validator, value, location, pointer, limit - len(issues)
                )
            if len(issues) >= limit:
                break
        return issues

    def check_body(self, content_type: str, body: bytes, limit: int) -> list[Issue]:
        """Issues with a JSON or form-urlencoded request body (others are not parsed)."""
        found = self.body_media_for(content_type)
        if found is None:
            return []
        if found[0] == FORM and found[1] is not None:
            return validation_issues(found[1], self._form(body), "body", "#", limit)
        return _json_body_issues(found[1], body, limit)

    def _form(self, body: bytes) -> dict[str, Any]:
        """A form body as the object its schema describes: repeated names are arrays
        when the property is one, texts coerced to the properties' types."""
        fields = self.form_fields or {}
        values: dict[str, list[str]] = {}
        for name, value in parse_query(body):
            values.setdefault(name, []).append(value)
        out: dict[str, Any] = {}
        for name, texts in values.items():
            shape = fields.get(name)
            if shape is not None and shape.kind == "array":
                out[name] = [coerce(t, shape.types) for t in texts]
            else:
                types = shape.types if shape is not None else frozenset()
                out[name] = coerce(texts[0], types) if len(texts) == 1 else texts
        return out

    def body_media_for(self, content_type: str) -> tuple[str, Validator | None] | None:
        """The documented media type a request Content-Type falls under (None: not accepted)."""
        return match_media(self.body_media or (), content_type)

    def check_response(
        self, status: int, content_type: str, body: bytes, limit: int
    ) -> list[Issue]:
        """How a response differs from the description: an undocumented status or media
        type, or a JSON body its schema refuses (parts `status`, `header`, `body`)."""
        entry = None
        for key in (str(status), f"{status // 100}XX", "default"):
            entry = self.responses.get(key)
            if entry is not None:
                break
        if entry is None:
            return [Issue("status", "#", f"status {status} is not documented")]
        if not entry:
            return []
        found = match_media(entry, content_type)
        if found is None:
            media = media_type_of(content_type) or "(none)"
            return [Issue("header", "#/content-type", f"media type {media} is not documented")]
        return _json_body_issues(found[1], body, limit)


def _json_body_issues(validator: Validator | None, body: bytes, limit: int) -> list[Issue]:
    """A JSON body's issues against its media type's schema (None: not checked)."""
    if validator is None:
        return []
    try:
        document = json.loads(body)
    except ValueError as exc:
        return [Issue("body", "#", f"the body is not valid JSON: {exc}")]
    return validation_issues(validator, document, "body", "#", limit)


def header_value(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    """A request header's value (repeated fields joined with ", "), or None."""
    values = [v for n, v in headers if n == name]
    if not values:
        return None
    return b", ".join(values).decode("latin-1")


def media_type_of(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def match_media(
    content: Sequence[tuple[str, Validator | None]], content_type: str
) -> tuple[str, Validator | None] | None:
    media = media_type_of(content_type)
    major = media.split("/", 1)[0] + "/*"
    for wanted in (media, major, "*/*"):
        for entry in content:
            if entry[0] == wanted:
                return entry
    return None


@dataclass(frozen=True, slots=True)
class Lookup:
    """Where a request landed: its operation and path parameters, or why none matched."""

    operation: Operation | None
    path_params: Mapping[str, str] = field(default_factory=dict)
    # With no operation: the methods the path does have (empty: an unknown path).
    allowed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Contract:
    """A compiled description: find the operation for a method and description path."""

    openapi_30: bool
    base_path: str
    exact: Mapping[str, Mapping[str, Operation]]
    # Templated paths by (segment count, first segment when literal, else None): a
    # template parameter matches exactly one segment, so a request path is only tried
    # against the templates of its own shape, most literal text first.
    templated: Mapping[
        tuple[int, str | None], tuple[tuple[re.Pattern[str], Mapping[str, Operation]], ...]
    ]

    def relative(self, upstream_path: str) -> str | None:
        """The path the description's `paths` are written for (its server's path removed)."""
        base = self.base_path
        if not base:
            return upstream_path
        if upstream_path == base:
            return "/"
        if upstream_path.startswith(base + "/"):
            return upstream_path[len(base) :]
        return None

    def find(self, method: str, path: str) -> Lookup:
        method = method.lower()
        methods = self.exact.get(path)
        params: Mapping[str, str] = {}
        if methods is None:
            count = path.count("/")
            first = path[1:].split("/", 1)[0]
            for key in ((count, first), (count, None)):
                for pattern, candidates in self.templated.get(key, ()):
                    m = pattern.match(path)
                    if m is not None:
                        methods, params = candidates, m.groupdict()
                        break
                if methods is not None:
                    break
        if methods is None:
            return Lookup(None)
        op = methods.get(method) or (methods.get("get") if method == "head" else None)
        if op is None:
            return Lookup(None, params, tuple(sorted(m.upper() for m in methods)))
        return Lookup(op, params)

    def operations(self) -> list[Operation]:
        ops = [op for methods in self.exact.values() for op in methods.values()]
        ops += [
            op
            for bucket in self.templated.values()
            for _, methods in bucket
            for op in methods.values()
        ]
        return ops


def validation_issues(
    validator: Validator, instance: Any, part: str, prefix: str, limit: int
) -> list[Issue]:
    """The validator's errors as issues with JSON pointers below `prefix` (at most `limit`)."""
    issues: list[Issue] = []
    if limit <= 0 or validator.is_valid(instance):
        return issues  # is_valid is the fast path: no error objects are built
    for error in validator.iter_errors(instance):
        pointer = prefix + "".join("/" + escape(str(t)) for t in error.instance_path)
        issues.append(Issue(part, pointer, error.message))
        if len(issues) >= limit:
            break
    return issues


class _Builder:
    """Collects the schemas of one document under `$defs` keys, per direction."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self.resolver = Resolver(document)
        version = str(document.get("openapi", ""))
        if not re.match(r"^3\.[01]\.\d+", version):
            raise ContractError(f"openapi: version {version!r} is not 3.0.x or 3.1.x")
        self.openapi_30 = version.startswith("3.0")
        self.defs: dict[Direction, dict[str, Any]] = {"request": {}, "response": {}}

    def add(self, direction: Direction, schema: Any) -> str:
        key = f"s{len(self.defs[direction])}"
        self.defs[direction][key] = convert(schema, self.openapi_30, direction)
        return key

    def compile(self) -> dict[Direction, Any]:
        components = self.document.get("components")
        schemas = components.get("schemas") if isinstance(components, dict) else None
        maps: dict[Direction, Any] = {}
        for direction, defs in self.defs.items():
            root: dict[str, Any] = {"$schema": DIALECT, "$defs": defs}
            if isinstance(schemas, dict):
                converted = {k: convert(v, self.openapi_30, direction) for k, v in schemas.items()}
                # The meta-schema check of the root does not look inside `components`.
                for name, schema in converted.items():
                    where = "#/components/schemas/" + escape(name)
                    _check_schema(schema, where)
                root["components"] = {"schemas": converted}
            try:
                maps[direction] = jsonschema_rs.validator_map_for(
                    root, validate_formats=True, offline=True
                )
            except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
                raise ContractError(f"a schema does not compile: {_first_line(exc)}") from None
            except ValueError as exc:
                raise ContractError(f"a schema does not compile: {_first_line(exc)}") from None
        return maps


def _check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        return
    try:
        jsonschema_rs.meta.validate({"$schema": DIALECT, **schema})
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
        raise ContractError(f"{where}: the schema is not valid: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _server_path(document: Mapping[str, Any]) -> str:
    servers = document.get("servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], dict):
        return ""
    server = servers[0]
    url = str(server.get("url", ""))
    variables = server.get("variables")
    if isinstance(variables, dict):
        for name, var in variables.items():
            if isinstance(var, dict):
                url = url.replace("{" + name + "}", str(var.get("default", "")))
    return urlsplit(url).path.rstrip("/")


def _shape(schema: Any, resolver: Resolver) -> Shape:
    schema = resolver.deref(schema)
    if not isinstance(schema, dict):
        return Shape("scalar", frozenset({"string"}))
    types = _types(schema, resolver)
    if "array" in types:
        return Shape("array", _types(resolver.deref(schema.get("items", {})), resolver))
    if "object" in types:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        return Shape(
            "object",
            frozenset(),
            {k: _types(resolver.deref(v), resolver) for k, v in props.items()},
        )
    return Shape("scalar", types)


def _types(schema: Any, resolver: Resolver) -> frozenset[str]:
    if not isinstance(schema, dict):
        return frozenset({"string"})
    kind = schema.get("type")
    found: set[str] = set()
    if isinstance(kind, str):
        found.add(kind)
    elif isinstance(kind, list):
        found.update(k for k in kind if isinstance(k, str))
    if schema.get("nullable") is True:
        found.add("null")
    for key in ("oneOf", "anyOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list):
            for option in options:
                found |= _types(resolver.deref(option), resolver)
    if "properties" in schema and not found:
        found.add("object")
    return frozenset(found or {"string"})


def _template_pattern(template: str) -> re.Pattern[str]:
    out, last = [], 0
    for i, m in enumerate(_TEMPLATE_PARAM.finditer(template)):
        out.append(re.escape(template[last : m.start()]))
        out.append(f"(?P<p{i}>[^/]+)")
        last = m.end()
    out.append(re.escape(template[last:]))
    return re.compile("^" + "".join(out) + "$")


def _parameters(
    b: _Builder, path_item: Mapping[str, Any], op: Mapping[str, Any], where: str
) -> list[dict[str, Any]]:
    """The operation's parameters: the path item's, overridden by (name, in) by its own."""
    merged: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
    for source, prefix in ((path_item, where), (op, where)):
        listed = source.get("parameters") or []
        if not isinstance(listed, list):
            raise ContractError(f"{prefix}/parameters: not a list")
        for i, raw in enumerate(listed):
            param = b.resolver.deref(raw)
            if not isinstance(param, dict) or "name" not in param or "in" not in param:
                raise ContractError(f"{prefix}/parameters/{i}: a parameter needs name and in")
            if param["in"] not in _LOCATIONS:
                raise ContractError(f"{prefix}/parameters/{i}/in: unknown location")
            merged[(str(param["name"]), str(param["in"]))] = (param, f"{prefix}/parameters/{i}")
    return [p for p, _ in merged.values()]


def _compile_parameter(
    b: _Builder, param: dict[str, Any], template_names: dict[str, str]
) -> tuple[ParameterReader, bool, str | None, str | None] | None:
    name, location = str(param["name"]), cast(Location, param["in"])
    if location == "header" and name.lower() in _IGNORED_HEADERS:
        return None
    schema = param.get("schema")
    json_content = False
    content = param.get("content")
    if schema is None and isinstance(content, dict) and content:
        media, media_object = next(iter(content.items()))
        media_object = b.resolver.deref(media_object)
        schema = media_object.get("schema") if isinstance(media_object, dict) else None
        json_content = is_json(media_type_of(media))
    shape = _shape(schema, b.resolver) if schema is not None else Shape("scalar", frozenset())
    reader = ParameterReader.of(name, location, param.get("style"), param.get("explode"), shape)
    if json_content:
        reader = ParameterReader(name, location, reader.style, reader.explode, shape, True)
    group = template_names.get(name) if location == "path" else None
    if location == "path" and group is None:
        return None  # not in this template: nothing can carry it
    required = bool(param.get("required", location == "path"))
    key = b.add("request", schema) if schema is not None else None
    return reader, required, key, group


def _content(b: _Builder, direction: Direction, content: Any) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    if not isinstance(content, dict):
        return out
    for media, media_object in content.items():
        media_object = b.resolver.deref(media_object)
        schema = media_object.get("schema") if isinstance(media_object, dict) else None
        media_type = media_type_of(str(media))
        checked = is_json(media_type) or (direction == "request" and media_type == FORM)
        key = b.add(direction, schema) if schema is not None and checked else None
        out.append((media_type, key))
    return out


def _form_fields(b: _Builder, content: Any) -> Mapping[str, Shape] | None:
    """The property shapes of a request body's form-urlencoded schema, if it has one."""
    if not isinstance(content, dict) or FORM not in content:
        return None
    media_object = b.resolver.deref(content[FORM])
    schema = (
        b.resolver.deref(media_object.get("schema")) if isinstance(media_object, dict) else None
    )
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return {}
    return {name: _shape(prop, b.resolver) for name, prop in props.items()}


def compile_document(document: Mapping[str, Any]) -> Contract:
    """Compile one OpenAPI 3.0/3.1 description (raises `ContractError` naming the place)."""
    b = _Builder(document)
    paths = document.get("paths") or {}
    if not isinstance(paths, dict):
        raise ContractError("paths: not an object")
    # Per operation: what it needs, with schema keys to swap for validators afterwards.
    pending: list[tuple[str, str, dict[str, Any], Any]] = []
    for template, raw_item in paths.items():
        where = "#/paths/" + escape(str(template))
        item = b.resolver.deref(raw_item)
        if not isinstance(item, dict):
            raise ContractError(f"{where}: not a Path Item Object")
        names = {n: f"p{i}" for i, n in enumerate(_TEMPLATE_PARAM.findall(str(template)))}
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            at = f"{where}/{method}"
            params = _parameters(b, item, op, at)
            compiled = [c for p in params if (c := _compile_parameter(b, p, names))]
            body = b.resolver.deref(op.get("requestBody"))
            body_media = _content(b, "request", body.get("content")) if body else None
            form_fields = _form_fields(b, body.get("content")) if body else None
            responses: dict[str, list[tuple[str, str | None]]] = {}
            for status, response in (op.get("responses") or {}).items():
                response = b.resolver.deref(response)
                content = response.get("content") if isinstance(response, dict) else None
                responses[str(status).upper()] = _content(b, "response", content)
            try:
                mock, mocks = mock_responses(op, b.resolver)
            except RecursionError:
                mock, mocks = MockResponse(501, None, b""), {}
            pending.append(
                (
                    str(template),
                    method,
                    op,
                    (
                        compiled,
                        body_media,
                        bool(body and body.get("required")),
                        responses,
                        mock,
                        mocks,
                        form_fields,
                    ),
                )
            )
    maps = b.compile()

    def validator(direction: Direction, key: str | None) -> Validator | None:
        return None if key is None else maps[direction].get(f"#/$defs/{key}")

    exact: dict[str, dict[str, Operation]] = {}
    templated: dict[str, dict[str, Operation]] = {}
    for template, method, op, parts in pending:
        compiled, body_media, body_required, responses, mock, mocks, form_fields = parts
        operation = Operation(
            method=method,
            template=template,
            operation_id=op.get("operationId") if isinstance(op.get("operationId"), str) else None,
            parameters=tuple(
                CompiledParameter(reader, required, validator("request", key), group)
                for reader, required, key, group in compiled
            ),
            body_media=None
            if body_media is None
            else tuple((m, validator("request", k)) for m, k in body_media),
            body_required=body_required,
            responses={
                s: tuple((m, validator("response", k)) for m, k in content)
                for s, content in responses.items()
            },
            mock=mock,
            form_fields=form_fields,
            mocks=mocks,
        )
        target = templated if _TEMPLATE_PARAM.search(template) else exact
        target.setdefault(template, {})[method] = operation
        for answer in dict.fromkeys((mock, *mocks.values())):
            wrong = operation.check_response(answer.status, answer.media_type or "", answer.body, 5)
            if wrong and answer.status != 501:
                # A mock sandbox would answer this; say so once, where it is compiled.
                log.warning(
                    "contract.mock_invalid",
                    operation=f"{method.upper()} {template}",
                    status=answer.status,
                    errors=[i.as_dict() for i in wrong],
                )
    # Concrete paths beat templated ones; among templates, more literal text first.
    ordered = sorted(
        templated.items(),
        key=lambda kv: (len(_TEMPLATE_PARAM.sub("", kv[0])), kv[0].count("/")),
        reverse=True,
    )
    buckets: dict[tuple[int, str | None], list[tuple[re.Pattern[str], Mapping[str, Operation]]]]
    buckets = {}
    for template, ops in ordered:
        first = template[1:].split("/", 1)[0]
        literal = None if _TEMPLATE_PARAM.search(first) else first
        key = (template.count("/"), literal)
        buckets.setdefault(key, []).append((_template_pattern(template), ops))
    return Contract(
        openapi_30=b.openapi_30,
        base_path=_server_path(document),
        exact=exact,
        templated={k: tuple(v) for k, v in buckets.items()},
    )


_CACHE: OrderedDict[str, Contract] = OrderedDict()
_CACHE_SIZE = 64


def compile_contract(document: Mapping[str, Any]) -> Contract:
    """`compile_document`, cached by the document's content (snapshots are rebuilt on
    every config change; unchanged descriptions are not compiled again)."""
    digest = hashlib.sha256(
        json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()
    found = _CACHE.get(digest)
    if found is not None:
        _CACHE.move_to_end(digest)
        return found
    contract = compile_document(document)
    _CACHE[digest] = contract
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return contract
