"""OpenAPI descriptions the contract tests compile (3.0 and 3.1 flavours of one API)."""

from __future__ import annotations

from typing import Any


def items_api(version: str = "3.1.0") -> dict[str, Any]:
    """An items API: list with query parameters, create with a JSON body, get by id."""
    openapi_30 = version.startswith("3.0")
    nullable_note: dict[str, Any] = (
        {"type": "string", "nullable": True} if openapi_30 else {"type": ["string", "null"]}
    )
    return {
        "openapi": version,
        "info": {"title": "Items", "version": "2"},
        "servers": [{"url": "https://api.example.com/shop"}],
        "paths": {
            "/items": {
                "get": {
                    "operationId": "listItems",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                        },
                        {
                            "name": "tags",
                            "in": "query",
                            "style": "form",
                            "explode": False,
                            "schema": {"type": "array", "items": {"type": "string"}},
                        },
                        {
                            "name": "X-Trace",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[a-f0-9]+$"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "the items",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Item"},
                                    }
                                }
                            },
                        }
                    },
                },
                "post": {
                    "operationId": "createItem",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ItemIn"}}
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "created",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Item"},
                                    "example": {"id": 7, "name": "lamp", "price": 12.5},
                                }
                            },
                        },
                        "422": {"description": "invalid"},
                    },
                },
            },
            "/items/{item_id}": {
                "parameters": [
                    {
                        "name": "item_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1},
                    }
                ],
                "get": {
                    "responses": {
                        "200": {
                            "description": "one item",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Item"}
                                }
                            },
                        },
                        "404": {"description": "no such item"},
                    }
                },
                "delete": {"responses": {"204": {"description": "deleted"}}},
            },
            "/items/latest": {
                "get": {
                    "responses": {
                        "200": {
                            "description": "the newest item",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Item"}
                                }
                            },
                        }
                    }
                }
            },
        },
        "components": {
            "schemas": {
                "ItemIn": {
                    "type": "object",
                    "required": ["name", "price"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 40},
                        "price": {"type": "number", "minimum": 0, "exclusiveMaximum": 10000},
                        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
                        "note": nullable_note,
                    },
                },
                "Item": {
                    "type": "object",
                    "required": ["id", "name", "price"],
                    "properties": {
                        "id": {"type": "integer", "minimum": 1, "readOnly": True},
                        "name": {"type": "string", "minLength": 1},
                        "price": {"type": "number", "minimum": 0},
                        "created": {"type": "string", "format": "date-time"},
                        "kind": {"type": "string", "enum": ["tool", "toy"]},
                        "sizes": {
                            "type": "array",
                            "minItems": 2,
                            "items": {"type": "integer", "minimum": 3, "multipleOf": 3},
                        },
                    },
                },
            }
        },
    }
