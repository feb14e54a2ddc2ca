"""Breaking-change reports between two descriptions."""

from __future__ import annotations

import copy
from typing import Any

from portcullis.catalogue.diff import breaking_changes

BASE: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "t", "version": "1"},
    "paths": {
        "/items": {
            "get": {
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 100}}
                ],
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Item"},
                                }
                            }
                        },
                    },
                    "404": {"description": "none"},
                },
            },
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ItemIn"}}
                    }
                },
                "responses": {"201": {"description": "made"}},
            },
        },
        "/items/{id}": {"delete": {"responses": {"204": {"description": "gone"}}}},
    },
    "components": {
        "schemas": {
            "Item": {
                "type": "object",
                "required": ["id", "name"],
                "properties": {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "kind": {"type": "string", "enum": ["a", "b"]},
                },
            },
            "ItemIn": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "maxLength": 200},
                    "price": {"type": "number"},
                    "kind": {"type": "string", "enum": ["a", "b"]},
                },
            },
        }
    },
}


def _changed(edit: Any) -> list[tuple[str, str, bool]]:
    head = copy.deepcopy(BASE)
    edit(head)
    return [(c.location, c.message, c.breaking) for c in breaking_changes(BASE, head)]


def test_identical_descriptions_have_no_changes() -> None:
    assert breaking_changes(BASE, copy.deepcopy(BASE)) == []


def test_removals_break() -> None:
    def edit(d: dict[str, Any]) -> None:
        del d["paths"]["/items/{id}"]
        del d["paths"]["/items"]["post"]
        del d["paths"]["/items"]["get"]["responses"]["404"]

    assert _changed(edit) == [
        ("GET /items", "response 404 removed", True),
        ("POST /items", "operation removed", True),
        ("paths[/items/{id}]", "path removed", True),
    ]


def test_renamed_path_parameters_are_the_same_path() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["paths"]["/items/{item_id}"] = d["paths"].pop("/items/{id}")

    assert _changed(edit) == []


def test_request_narrowing_breaks_and_widening_does_not() -> None:
    def edit(d: dict[str, Any]) -> None:
        item_in = d["components"]["schemas"]["ItemIn"]
        item_in["properties"]["price"]["type"] = "integer"
        item_in["properties"]["name"]["maxLength"] = 50
        item_in["properties"]["kind"]["enum"] = ["a"]
        item_in["required"] = ["name", "price"]
        d["paths"]["/items"]["get"]["parameters"][0]["schema"]["maximum"] = 500

    assert _changed(edit) == [
        ("POST /items request application/json", "property 'price' became required", True),
        ("POST /items request application/json.kind", "enum values removed: ['b']", True),
        ("POST /items request application/json.name", "maxLength tightened: 200.0 -> 50.0", True),
        (
            "POST /items request application/json.price",
            "type narrowed: ['number'] no longer accepted",
            True,
        ),
    ]


def test_new_required_parameters_and_bodies_break() -> None:
    def edit(d: dict[str, Any]) -> None:
        get = d["paths"]["/items"]["get"]
        get["parameters"].append(
            {"name": "tenant", "in": "header", "required": True, "schema": {"type": "string"}}
        )
        get["parameters"].append({"name": "q", "in": "query", "schema": {"type": "string"}})
        d["paths"]["/items"]["post"]["requestBody"]["required"] = True

    assert _changed(edit) == [
        ("GET /items", "header parameter 'tenant' added (required)", True),
        ("POST /items", "request body became required", True),
        ("GET /items", "query parameter 'q' added", False),
    ]


def test_responses_that_lose_guarantees_break() -> None:
    def edit(d: dict[str, Any]) -> None:
        item = d["components"]["schemas"]["Item"]
        item["required"] = ["id"]
        item["properties"]["kind"]["enum"] = ["a", "b", "c"]
        item["properties"]["id"]["type"] = ["integer", "string"]
        item["properties"]["extra"] = {"type": "string"}

    assert _changed(edit) == [
        (
            "GET /items response 200 application/json[]",
            "property 'name' is no longer always present",
            True,
        ),
        (
            "GET /items response 200 application/json[].id",
            "type widened: may now be ['string']",
            True,
        ),
        ("GET /items response 200 application/json[].kind", "enum values added: ['c']", True),
        ("GET /items response 200 application/json[]", "property 'extra' added", False),
    ]


def test_additions_do_not_break() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["paths"]["/other"] = {"get": {"responses": {"200": {"description": "ok"}}}}
        d["paths"]["/items/{id}"]["get"] = {"responses": {"200": {"description": "ok"}}}
        d["paths"]["/items"]["get"]["responses"]["500"] = {"description": "oops"}

    assert all(not breaking for _, _, breaking in _changed(edit))
    assert len(_changed(edit)) == 3
