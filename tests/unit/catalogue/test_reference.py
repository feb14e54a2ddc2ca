"""The reference-docs view model: grouping, flattening, $ref cycles, missing parts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from portcullis.catalogue.reference import MAX_ROWS, anchor_of, reference, schema_table
from portcullis.contract.refs import Resolver

DEMO_V2 = Path(__file__).parents[3] / "examples" / "openapi" / "demo-v2.yaml"


def _doc(**extra: Any) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "T", "version": "1"}, **extra}


def test_demo_description_groups_operations_by_tag_with_tables_and_examples() -> None:
    doc = reference(yaml.safe_load(DEMO_V2.read_text()))
    assert doc.title == "Demo API"
    assert [t.name for t in doc.tags] == ["items"]
    ops = {o.anchor: o for o in doc.tags[0].operations}
    assert set(ops) == {"op-listItems", "op-createItem", "op-getItem", "op-deleteItem"}
    assert doc.operations == 4
    get_item = ops["op-getItem"]
    assert (get_item.method, get_item.path) == ("GET", "/items/{item_id}")
    # The path-level parameter is inherited by the operation.
    [param] = get_item.parameters
    assert (param.name, param.location, param.required, param.type) == (
        "item_id",
        "path",
        True,
        "integer",
    )
    create = ops["op-createItem"]
    assert create.request_body is not None
    assert create.request_body.required
    [media] = create.request_body.media
    rows = {r.name: r for r in media.schema.rows} if media.schema else {}
    assert rows["name"].required
    assert rows["name"].constraints == "length ≥ 1; length ≤ 200"
    assert rows["price"].type == "number"
    assert rows["price"].constraints == "≥ 0"
    assert media.example is not None
    assert '"name"' in media.example
    listing = ops["op-listItems"].responses[0]
    assert listing.status == "200"
    table = listing.media[0].schema
    assert table is not None
    assert table.type == "array of Item"
    assert [r.name for r in table.rows] == ["[].name", "[].price", "[].id"]
    # Nested arrays of referenced objects flatten with their path.
    errors = next(r for r in create.responses if r.status == "422").media[0].schema
    assert errors is not None
    assert "detail[].msg" in [r.name for r in errors.rows]


def test_a_self_referencing_schema_is_shown_once_with_a_circular_row() -> None:
    doc = _doc(
        paths={
            "/nodes": {
                "get": {
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Node"}
                                }
                            },
                        }
                    }
                }
            }
        },
        components={
            "schemas": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "children": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Node"},
                        },
                        "parent": {"$ref": "#/components/schemas/Node"},
                    },
                },
                # Mutual recursion through allOf.
                "A": {"allOf": [{"$ref": "#/components/schemas/B"}]},
                "B": {"allOf": [{"$ref": "#/components/schemas/A"}], "properties": {"b": {}}},
            }
        },
    )
    view = reference(doc)
    table = view.tags[0].operations[0].responses[0].media[0].schema
    assert table is not None
    notes = {r.name: r.note for r in table.rows}
    assert notes["children[]"] == "circular: see Node"
    assert notes["parent"] == "circular: see Node"
    assert "children[].name" not in notes
    assert view.tags[0].operations[0].responses[0].media[0].example is not None
    mutual = schema_table({"$ref": "#/components/schemas/A"}, Resolver(doc))
    assert [r.name for r in mutual.rows] == ["b"]


def test_missing_and_broken_parts_render_without_errors() -> None:
    doc = _doc(
        paths={
            "/bare": {"get": {}},
            "/broken": {
                "post": {
                    "tags": ["things"],
                    "parameters": [{"$ref": "#/components/parameters/Nope"}],
                    "requestBody": {
                        "content": {"application/json": {"schema": {"$ref": "#/nowhere"}}}
                    },
                    "responses": {"default": {"description": "anything"}},
                }
            },
        }
    )
    view = reference(doc)
    assert [t.name for t in view.tags] == ["things", "default"]
    broken = view.tags[0].operations[0]
    assert broken.parameters[0].name == "?"
    assert broken.request_body is not None
    schema = broken.request_body.media[0].schema
    assert schema is not None
    assert schema.rows[0].note == "unresolved $ref #/nowhere"
    assert broken.request_body.media[0].example is None
    assert [r.status for r in broken.responses] == ["default"]
    bare = view.tags[1].operations[0]
    assert bare.parameters == []
    assert bare.responses == []
    assert bare.request_body is None
    assert reference({}).operations == 0


def test_huge_schemas_are_cut_at_the_row_limit() -> None:
    props = {f"f{i}": {"type": "string"} for i in range(MAX_ROWS + 50)}
    table = schema_table({"type": "object", "properties": props}, Resolver({}))
    assert len(table.rows) == MAX_ROWS
    assert table.truncated


def test_servers_security_and_anchors() -> None:
    doc = _doc(
        servers=[{"url": "http://127.0.0.1:8000/v2"}],
        security=[{"ApiKey-x-api-key": []}, {}],
        components={
            "securitySchemes": {
                "ApiKey-x-api-key": {"type": "apiKey", "in": "header", "name": "x-api-key"}
            }
        },
        paths={"/a/{id}": {"get": {"deprecated": True, "responses": {}}}},
    )
    view = reference(doc)
    assert view.servers == ["http://127.0.0.1:8000/v2"]
    assert view.security_schemes[0].text == "API key in header x-api-key"
    op = view.tags[0].operations[0]
    assert op.security == ["ApiKey-x-api-key", "none (optional)"]
    assert op.deprecated
    assert op.anchor == anchor_of("get", "/a/{id}", None) == "op-get-a-id"
    assert view.operation(op.anchor) is op
