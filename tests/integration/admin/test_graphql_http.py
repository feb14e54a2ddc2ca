"""GraphQL over HTTP on the control plane: the transport rules (media types, methods,
status codes, authentication), with the real `gql` client for operations."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from gql import Client, GraphQLRequest, gql
from gql.transport.httpx import HTTPXAsyncTransport

GRAPHQL_RESPONSE = "application/graphql-response+json"


@pytest.fixture
async def graph(app: FastAPI, owner: httpx.AsyncClient) -> AsyncIterator[Client]:
    """A `gql` client speaking to /graphql with the owner's token."""
    transport = HTTPXAsyncTransport(
        url="http://admin/graphql",
        headers={"authorization": owner.headers["authorization"]},
        transport=httpx.ASGITransport(app=app),
    )
    async with Client(transport=transport) as session:
        yield session  # type: ignore[misc]


async def test_services_connection_through_gql(graph: Client, owner: httpx.AsyncClient) -> None:
    for name in ("billing", "orders"):
        created = await owner.post(
            "/admin/v1/services", json={"name": name, "url": "http://up.internal:8080"}
        )
        assert created.status_code == 201, created.text
    result = await graph.execute(
        gql(
            "query { services(first: 1) { edges { cursor node { name url id etag } } "
            "pageInfo { hasNextPage endCursor } nodes { name } } }"
        )
    )
    page = result["services"]
    assert [e["node"]["name"] for e in page["edges"]] == ["billing"]
    assert page["pageInfo"]["hasNextPage"] is True
    assert page["edges"][0]["node"]["id"] == "billing"
    rest = await owner.get("/admin/v1/services/billing")
    assert page["edges"][0]["node"]["etag"] == rest.headers["etag"]
    after = page["pageInfo"]["endCursor"]
    second = await graph.execute(
        GraphQLRequest(
            "query($after: String) { services(first: 5, after: $after) { nodes { name } "
            "pageInfo { hasNextPage } } }",
            variable_values={"after": after},
        )
    )
    assert second["services"] == {"nodes": [{"name": "orders"}], "pageInfo": {"hasNextPage": False}}


async def test_create_service_mutation_and_problems_as_data(
    graph: Client, owner: httpx.AsyncClient
) -> None:
    create = """mutation($input: ServiceInput!) {
             createService(input: $input) {
               __typename
               ... on ServicePayload { service { name url timeouts { connect } } }
               ... on ValidationProblem { status errors { pointer detail field } }
               ... on AlreadyExistsProblem { status detail }
             }
           }"""
    done = await graph.execute(
        GraphQLRequest(
            create, variable_values={"input": {"name": "orders", "url": "http://orders.internal"}}
        )
    )
    assert done["createService"]["__typename"] == "ServicePayload"
    assert done["createService"]["service"]["timeouts"]["connect"] == 5.0
    assert (await owner.get("/admin/v1/services/orders")).status_code == 200
    again = await graph.execute(
        GraphQLRequest(
            create, variable_values={"input": {"name": "orders", "url": "http://orders.internal"}}
        )
    )
    assert again["createService"]["__typename"] == "AlreadyExistsProblem"
    assert again["createService"]["status"] == 409
    bad = await graph.execute(
        GraphQLRequest(
            create,
            variable_values={
                "input": {"name": "x", "url": "http://a", "timeouts": {"connect": -1}}
            },
        )
    )
    assert bad["createService"]["__typename"] == "ValidationProblem"
    assert bad["createService"]["errors"][0]["pointer"] == "#/timeouts/connect"


async def test_transport_rules(anonymous: httpx.AsyncClient, owner: httpx.AsyncClient) -> None:
    auth = {"authorization": owner.headers["authorization"]}
    query = "{ services { nodes { name } } }"
    # No credential: 401 with a challenge, before anything is parsed.
    refused = await anonymous.post("/graphql", json={"query": query})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    # Default media type is application/graphql-response+json.
    ok = await anonymous.post("/graphql", json={"query": query}, headers=auth)
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert ok.json() == {"data": {"services": {"nodes": []}}}
    # Unparseable: 400 for graphql-response+json, 200 for legacy application/json.
    for accept, status in ((GRAPHQL_RESPONSE, 400), ("application/json", 200)):
        broken = await anonymous.post(
            "/graphql", json={"query": "{ services { "}, headers={**auth, "accept": accept}
        )
        assert broken.status_code == status
        assert broken.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
        assert "data" not in broken.json()
    invalid = await anonymous.post("/graphql", json={"query": "{ nope }"}, headers=auth)
    assert invalid.status_code == 400
    assert invalid.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    # GET runs queries, refuses mutations with 405 + Allow.
    got = await anonymous.get("/graphql", params={"query": query}, headers=auth)
    assert got.status_code == 200
    assert got.json()["data"] == {"services": {"nodes": []}}
    mutation = 'mutation { deleteService(id: "x") { __typename } }'
    refused_get = await anonymous.get("/graphql", params={"query": mutation}, headers=auth)
    assert refused_get.status_code == 405
    assert refused_get.headers["allow"] == "POST"
    # Other media types: 415 for the body, 406 for Accept.
    form = await anonymous.post(
        "/graphql",
        content=json.dumps({"query": query}),
        headers={**auth, "content-type": "text/plain"},
    )
    assert form.status_code == 415
    unacceptable = await anonymous.post(
        "/graphql", json={"query": query}, headers={**auth, "accept": "application/xml"}
    )
    assert unacceptable.status_code == 406


async def test_sdl_is_published(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/graphql/schema.graphql")
    assert response.status_code == 200
    assert "type Query" in response.text
    assert "services(" in response.text


@asynccontextmanager
async def owner_of_app_with(database_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A signed-in owner's client on an admin app made with these settings."""
    from portcullis.admin.app import create_admin_app
    from portcullis.services.rbac import Role
    from portcullis.settings import Settings

    app = create_admin_app(Settings(database_url=database_url, log_json=False, **settings))
    async with app.router.lifespan_context(app):
        await app.state.authenticator.create_user("o@example.com", "pw " * 6, Role.OWNER)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            login = await client.post(
                "/admin/v1/auth/login", json={"email": "o@example.com", "password": "pw " * 6}
            )
            client.headers["authorization"] = f"Bearer {login.json()['access_token']}"
            yield client


async def test_limits_come_from_the_settings(database_url: str) -> None:
    async with owner_of_app_with(database_url, graphql_max_depth=2) as client:
        shallow = await client.post(
            "/graphql", json={"query": "{ services { pageInfo { hasNextPage } } }"}
        )
        assert shallow.status_code == 400
        error = shallow.json()["errors"][0]
        assert error["extensions"]["code"] == "LIMIT_EXCEEDED"
        assert error["extensions"]["limit"] == "depth"
        assert "max_depth" in error["message"]
        ok = await client.post("/graphql", json={"query": "{ services { __typename } }"})
        assert ok.status_code == 200, ok.text


async def test_introspection_can_be_switched_off(database_url: str) -> None:
    async with owner_of_app_with(database_url, graphql_introspection=False) as client:
        refused = await client.post("/graphql", json={"query": "{ __schema { types { name } } }"})
        assert refused.status_code == 400
        assert refused.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert "introspection" in refused.json()["errors"][0]["message"]
        ordinary = await client.post("/graphql", json={"query": "{ services { nodes { name } } }"})
        assert ordinary.status_code == 200
        assert (await client.get("/graphql/schema.graphql")).status_code == 404


async def test_hostile_request_bodies_are_400s(
    anonymous: httpx.AsyncClient, owner: httpx.AsyncClient
) -> None:
    auth = {"authorization": owner.headers["authorization"], "content-type": "application/json"}
    deep = "[" * 100_000 + "]" * 100_000
    for body in (
        deep,
        '{"query": "{ services { nodes { name } } }", "variables": ' + deep + "}",
        '{"query": 42}',
        "[]",
        "not json",
    ):
        response = await anonymous.post("/graphql", content=body, headers=auth)
        assert response.status_code == 400, (body[:40], response.text)
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    nested = await anonymous.get(
        "/graphql",
        params={"query": "{ services { nodes { name } } }", "variables": "[" * 3_000 + "]" * 3_000},
        headers={"authorization": owner.headers["authorization"]},
    )
    assert nested.status_code == 400
