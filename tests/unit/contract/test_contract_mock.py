"""Mock responses: examples first, else generated data valid against the response schema."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from portcullis.contract.mock import generate, mock_response
from portcullis.contract.operations import compile_document
from portcullis.contract.refs import Resolver
from portcullis.contract.schema import DIALECT, convert
from support.openapi_docs import items_api


@pytest.mark.parametrize("version", ["3.0.3", "3.1.0"])
def test_every_mock_of_the_items_api_is_valid_against_its_response(version: str) -> None:
    contract = compile_document(items_api(version))
    for op in contract.operations():
        mock = op.mock
        media = mock.media_type or ""
        assert op.check_response(mock.status, media, mock.body, 10) == [], (op.template, mock)


def test_examples_win_over_generation_and_status_is_the_documented_success() -> None:
    contract = compile_document(items_api("3.1.0"))
    create = contract.find("post", "/items").operation
    assert create is not None
    assert create.mock.status == 201
    assert json.loads(create.mock.body) == {"id": 7, "name": "lamp", "price": 12.5}
    delete = contract.find("delete", "/items/1").operation
    assert delete is not None
    assert (delete.mock.status, delete.mock.media_type, delete.mock.body) == (204, None, b"")
    listed = contract.find("get", "/items").operation
    assert listed is not None
    item = json.loads(listed.mock.body)[0]
    assert item["sizes"] == [3, 3]  # minItems 2, minimum 3, multipleOf 3
    assert item["created"] == "2026-01-01T00:00:00Z"


def test_named_examples_are_used() -> None:
    op = {
        "responses": {
            "200": {
                "description": "x",
                "content": {
                    "application/json": {
                        "schema": {"type": "object"},
                        "examples": {"first": {"value": {"a": 1}}, "second": {"value": {}}},
                    }
                },
            }
        }
    }
    mock = mock_response(op, Resolver({}))
    assert (mock.status, json.loads(mock.body)) == (200, {"a": 1})


_scalar = st.sampled_from(
    [
        {"type": "string", "minLength": 3, "maxLength": 9},
        {"type": "string", "format": "uuid"},
        {"type": "string", "format": "email"},
        {"type": "integer", "minimum": 5, "maximum": 9},
        {"type": "integer", "exclusiveMinimum": 10, "multipleOf": 4},
        {"type": "number", "exclusiveMaximum": -2},
        {"type": "boolean"},
        {"type": ["null", "string"]},
        {"enum": ["b", "c"]},
        {"const": 3},
    ]
)
_schemas = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.builds(
            lambda items, n: {"type": "array", "items": items, "minItems": n},
            inner,
            st.integers(0, 3),
        ),
        st.builds(
            lambda props: {
                "type": "object",
                "properties": props,
                "required": sorted(props)[:1],
                "additionalProperties": False,
            },
            st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
        ),
        st.builds(
            lambda a, b: {
                "allOf": [
                    {"type": "object", "properties": {"a": a}, "required": ["a"]},
                    {"type": "object", "properties": {"b": b}},
                ]
            },
            inner,
            inner,
        ),
        st.builds(lambda a, b: {"anyOf": [a, b]}, inner, inner),
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(_schemas)
def test_generated_data_is_valid_against_the_schema(schema: dict[str, Any]) -> None:
    value = generate(schema, Resolver({}))
    validator = jsonschema_rs.validator_for(
        {"$schema": DIALECT, **convert(schema, False, "response")}, validate_formats=True
    )
    assert [e.message for e in validator.iter_errors(value)] == [], (schema, value)


def test_a_mock_that_breaks_its_schema_is_reported_when_compiled() -> None:
    doc = items_api("3.1.0")
    # An example that contradicts the schema (price below its minimum).
    create = doc["paths"]["/items"]["post"]["responses"]["201"]["content"]["application/json"]
    create["example"] = {"id": 7, "name": "lamp", "price": -1}
    with capture_logs() as logs:
        compile_document(doc)
    reported = [e for e in logs if e["event"] == "contract.mock_invalid"]
    assert [(e["operation"], [x["pointer"] for x in e["errors"]]) for e in reported] == [
        ("POST /items", ["#/price"])
    ]
    with capture_logs() as logs:
        compile_document(items_api("3.1.0"))
    assert [e for e in logs if e["event"] == "contract.mock_invalid"] == []
