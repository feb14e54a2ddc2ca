"""Compiled OpenAPI contracts: operation lookup, parameters, bodies, responses, 3.0 vs 3.1."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portcullis.contract.operations import Issue, compile_contract, compile_document
from portcullis.contract.parameters import parse_query
from portcullis.contract.refs import ContractError
from portcullis.contract.schema import DIALECT, convert
from support.openapi_docs import items_api

VERSIONS = ["3.0.3", "3.1.0"]


def _op(version: str, method: str, path: str) -> Any:
    lookup = compile_document(items_api(version)).find(method, path)
    assert lookup.operation is not None, lookup
    return lookup


@pytest.mark.parametrize("version", VERSIONS)
def test_lookup_prefers_concrete_paths_and_reports_allowed_methods(version: str) -> None:
    contract = compile_document(items_api(version))
    assert contract.base_path == "/shop"
    assert contract.relative("/shop/items") == "/items"
    assert contract.relative("/other/items") is None
    assert contract.find("get", "/items/latest").operation.template == "/items/latest"  # type: ignore[union-attr]
    by_id = contract.find("get", "/items/42")
    assert by_id.operation is not None
    assert by_id.operation.template == "/items/{item_id}"
    assert contract.find("put", "/items/42").allowed == ("DELETE", "GET")
    assert contract.find("get", "/nothing").allowed == ()
    assert contract.find("head", "/items").operation is not None  # HEAD falls back to GET


@pytest.mark.parametrize("version", VERSIONS)
def test_parameters_are_coerced_and_checked_with_pointers(version: str) -> None:
    lookup = _op(version, "get", "/items")
    op = lookup.operation
    good = op.check_parameters({}, b"limit=5&tags=a,b", [(b"x-trace", b"beef")], 10)
    assert good == []
    bad = op.check_parameters({}, b"limit=0&tags=a,b", [(b"x-trace", b"xyz")], 10)
    assert [(i.part, i.pointer) for i in bad] == [("query", "#/limit"), ("header", "#/X-Trace")]
    missing = op.check_parameters({}, b"", [], 10)
    assert missing == [
        Issue("header", "#/X-Trace", "the required header parameter 'X-Trace' is missing")
    ]
    text = op.check_parameters({}, b"limit=ten", [(b"x-trace", b"a")], 10)
    assert [(i.part, i.pointer) for i in text] == [("query", "#/limit")]
    path = _op(version, "get", "/items/abc")
    issues = path.operation.check_parameters(path.path_params, b"", [], 10)
    assert [(i.part, i.pointer) for i in issues] == [("path", "#/item_id")]
    ok = _op(version, "get", "/items/3")
    assert ok.operation.check_parameters(ok.path_params, b"", [], 10) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_json_bodies_are_checked_with_pointers_and_null_semantics(version: str) -> None:
    op = _op(version, "post", "/items").operation
    assert op.body_required
    assert op.check_body("application/json", b'{"name":"a","price":1,"note":null}', 10) == []
    issues = op.check_body(
        "application/json; charset=utf-8", b'{"name":"","price":-1,"tags":[1],"x":0}', 10
    )
    assert sorted(i.pointer for i in issues) == ["#", "#/name", "#/price", "#/tags/0"]
    assert all(i.part == "body" for i in issues)
    assert op.check_body("application/json", b'{"name":"a","price":10000}', 10)[0].pointer == (
        "#/price"
    )  # exclusiveMaximum (3.0's boolean form converted)
    not_json = op.check_body("application/json", b"{nope", 10)
    assert not_json[0].detail.startswith("the body is not valid JSON")
    assert op.body_media_for("text/plain") is None
    assert len(op.check_body("application/json", b'{"tags":[1,2,3,4,5,6,7]}', 2)) == 2


def test_openapi_30_nullable_and_31_type_lists_mean_the_same() -> None:
    schema_30 = {"type": "string", "nullable": True, "enum": ["a"]}
    converted = convert(schema_30, openapi_30=True, direction="request")
    assert converted == {"type": ["string", "null"], "enum": ["a", None]}
    validator = jsonschema_rs.validator_for({"$schema": DIALECT, **converted})
    assert validator.is_valid(None)
    assert not validator.is_valid("b")
    # Without nullable, null is refused in 3.0; `nullable` means nothing to a 3.1 schema.
    assert not jsonschema_rs.validator_for(convert({"type": "string"}, True, "request")).is_valid(
        None
    )
    kept = convert({"type": "string", "nullable": True}, openapi_30=False, direction="request")
    assert kept["type"] == "string"


def test_read_only_properties_are_not_required_in_requests() -> None:
    item = items_api("3.1.0")["components"]["schemas"]["Item"]
    assert convert(item, False, "request")["required"] == ["name", "price"]
    assert convert(item, False, "response")["required"] == ["id", "name", "price"]


@pytest.mark.parametrize("version", VERSIONS)
def test_responses_are_checked_against_status_and_schema(version: str) -> None:
    op = _op(version, "get", "/items/1").operation
    good = b'{"id":1,"name":"a","price":2}'
    assert op.check_response(200, "application/json", good, 10) == []
    bad = op.check_response(200, "application/json", b'{"id":0,"name":"a"}', 10)
    assert sorted(i.pointer for i in bad) == ["#", "#/id"]
    assert op.check_response(404, "text/plain", b"", 10) == []
    assert op.check_response(500, "application/json", b"{}", 10)[0].part == "status"
    assert op.check_response(200, "text/html", b"<p>", 10)[0].pointer == "#/content-type"


def test_style_variants_of_arrays_and_objects() -> None:
    doc = items_api("3.1.0")
    doc["paths"]["/search/{coords}"] = {
        "get": {
            "parameters": [
                {
                    "name": "coords",
                    "in": "path",
                    "required": True,
                    "style": "label",
                    "schema": {"type": "array", "items": {"type": "integer"}},
                },
                {
                    "name": "ids",
                    "in": "query",
                    "schema": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
                },
                {
                    "name": "filter",
                    "in": "query",
                    "style": "deepObject",
                    "schema": {
                        "type": "object",
                        "properties": {"min": {"type": "number"}, "max": {"type": "number"}},
                    },
                },
                {
                    "name": "piped",
                    "in": "query",
                    "style": "pipeDelimited",
                    "explode": False,
                    "schema": {"type": "array", "items": {"type": "boolean"}},
                },
                {
                    "name": "session",
                    "in": "cookie",
                    "schema": {"type": "string", "minLength": 4},
                },
            ],
            "responses": {"200": {"description": "ok"}},
        }
    }
    contract = compile_document(doc)
    lookup = contract.find("get", "/search/.1,2")
    op = lookup.operation
    assert op is not None
    query = b"ids=1&ids=2&filter[min]=1.5&filter[max]=3&piped=true|false"
    cookie = [(b"cookie", b"a=b; session=abcd")]
    assert op.check_parameters(lookup.path_params, query, cookie, 10) == []
    bad_query = b"ids=1&ids=x&ids=3&ids=4&filter[min]=low&piped=yes"
    issues = op.check_parameters(lookup.path_params, bad_query, [(b"cookie", b"session=a")], 10)
    assert sorted((i.part, i.pointer) for i in issues) == [
        ("cookie", "#/session"),
        ("query", "#/filter/min"),
        ("query", "#/ids"),
        ("query", "#/ids/1"),
        ("query", "#/piped/0"),
    ]
    wrong_path = contract.find("get", "/search/.1,z")
    issues = wrong_path.operation.check_parameters(wrong_path.path_params, b"", [], 10)  # type: ignore[union-attr]
    assert [(i.part, i.pointer) for i in issues] == [("path", "#/coords/1")]


def test_bad_descriptions_are_errors_naming_the_place() -> None:
    with pytest.raises(ContractError, match="openapi: version"):
        compile_document({"openapi": "2.0", "paths": {}})
    doc = items_api("3.1.0")
    doc["paths"]["/items"]["get"]["parameters"][0] = {"$ref": "#/components/parameters/Nope"}
    with pytest.raises(ContractError, match="#/components/parameters/Nope"):
        compile_document(doc)
    doc = items_api("3.1.0")
    doc["components"]["schemas"]["Item"]["properties"]["name"] = {"type": "strange"}
    with pytest.raises(ContractError, match="#/components/schemas/Item: the schema"):
        compile_document(doc)
    doc = items_api("3.1.0")
    doc["components"]["schemas"]["Item"]["properties"]["name"] = {"$ref": "https://x.test/s"}
    with pytest.raises(ContractError):
        compile_document(doc)  # never fetched: validators are offline


def test_compiled_contracts_are_cached_by_content() -> None:
    first = compile_contract(items_api("3.1.0"))
    assert compile_contract(items_api("3.1.0")) is first
    assert compile_contract(items_api("3.0.3")) is not first


@pytest.mark.parametrize(
    "query",
    [b"", b"a=1&b=2", b"a=1&&a=2&c", b"x=%20y+z&na%C3%AFve=%E2%82%AC", b"=v&k=", b"k=a=b"],
)
def test_parse_query_agrees_with_parse_qsl(query: bytes) -> None:
    expected = parse_qsl(query.decode(), keep_blank_values=True)
    assert parse_query(query) == expected


_STYLED = compile_document(items_api("3.1.0"))


@settings(max_examples=200, deadline=None)
@given(
    query=st.binary(max_size=60),
    header=st.binary(max_size=30),
    segment=st.text(max_size=20).filter(lambda t: "/" not in t and t != ""),
    body=st.binary(max_size=60),
)
def test_any_input_gives_issues_never_an_exception(
    query: bytes, header: bytes, segment: str, body: bytes
) -> None:
    for method, path in (("get", "/items"), ("get", f"/items/{segment}"), ("post", "/items")):
        lookup = _STYLED.find(method, path)
        if lookup.operation is None:
            continue
        op = lookup.operation
        headers = [(b"x-trace", header), (b"cookie", header)]
        issues = op.check_parameters(lookup.path_params, query, headers, 20)
        issues += op.check_body("application/json", body, 20)
        issues += op.check_response(200, "application/json", body, 20)
        assert all(i.pointer.startswith("#") for i in issues)


_TEMPLATES = [
    "/items/{id}",
    "/items/{id}/parts/{part}",
    "/items/latest/parts/{part}",
    "/{kind}/{id}",
    "/{kind}/count",
    "/v{major}/items/{id}",
    "/files/{name}.json",
    "/items/{id}/",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["items", "latest", "parts", "count", "v2", "x.json", "7", "files", ""]),
        min_size=1,
        max_size=4,
    )
)
def test_templated_lookup_agrees_with_a_linear_scan(segments: list[str]) -> None:
    ok = {"200": {"description": "ok"}}
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {t: {"get": {"responses": ok}} for t in _TEMPLATES},
    }
    contract = compile_contract(doc)
    path = "/" + "/".join(segments)
    found = contract.find("get", path)
    # The reference: every template tried in the compiled precedence order, no buckets.
    candidates = sorted(
        _TEMPLATES,
        key=lambda t: (len(re.sub(r"\{[^{}/]+\}", "", t)), t.count("/")),
        reverse=True,
    )
    expected = next(
        (
            t
            for t in candidates
            if re.fullmatch(re.sub(r"\\\{[^{}/]+\\\}", "[^/]+", re.escape(t)), path)
        ),
        None,
    )
    got = found.operation.template if found.operation is not None else None
    if expected is not None and got != expected:
        # Two templates of different buckets may both match: the literal first segment wins.
        assert got is not None
        assert re.fullmatch(re.sub(r"\\\{[^{}/]+\\\}", "[^/]+", re.escape(got)), path)
        assert not got.startswith("/{")
    else:
        assert got == expected


@pytest.mark.parametrize("version", VERSIONS)
def test_form_bodies_are_read_as_their_schema_describes(version: str) -> None:
    doc = items_api(version)
    doc["paths"]["/items"]["post"]["requestBody"]["content"][
        "application/x-www-form-urlencoded"
    ] = {"schema": {"$ref": "#/components/schemas/ItemIn"}}
    op = compile_document(doc).find("post", "/items").operation
    assert op is not None
    form = "application/x-www-form-urlencoded"
    assert op.check_body(form, b"name=desk+lamp&price=12.5&tags=a&tags=b", 10) == []
    issues = op.check_body(form, b"name=&price=cheap&tags=a&extra=1", 10)
    assert sorted(i.pointer for i in issues) == ["#", "#/name", "#/price"]
    # Other media types are accepted as they are.
    assert op.check_body("text/plain", b"anything", 10) == []
