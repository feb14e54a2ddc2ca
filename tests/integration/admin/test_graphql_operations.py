"""GraphQL equivalents of the operational REST APIs (config, audit, alerts, analytics,
cache, data plane, event types, plugin schemas, webhooks), through the real `gql`
client: each family's happy path and a refusal as data, on the same services REST
calls (organization scoping and RBAC included)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXAsyncTransport

from conftest import ClientFactory
from portcullis.services.rbac import Role

Run = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def graph_for(app: FastAPI) -> Callable[[httpx.AsyncClient], Run]:
    """Runs a GraphQL document with a signed-in REST client's token, through `gql`."""

    def make(rest: httpx.AsyncClient) -> Run:
        transport = HTTPXAsyncTransport(
            url="http://admin/graphql",
            headers={"authorization": rest.headers["authorization"]},
            transport=httpx.ASGITransport(app=app),
        )
        client = Client(transport=transport)

        async def run(query: str, /, **variables: Any) -> dict[str, Any]:
            async with client as session:
                result = await session.execute(
                    GraphQLRequest(query, variable_values=variables or None)
                )
            return dict(result)

        return run

    return make


@pytest.fixture
def graph(graph_for: Callable[[httpx.AsyncClient], Run], owner: httpx.AsyncClient) -> Run:
    return graph_for(owner)


SERVICE = {"name": "orders", "url": "http://orders.internal:8080"}
ROUTE = {"name": "orders", "service": "orders", "paths": ["/orders"]}

# ---------------------------------------------------------------------------- config

APPLY = """mutation($document: JSON!, $ifMatch: String, $comment: String) {
  applyConfig(document: $document, ifMatch: $ifMatch, comment: $comment) {
    __typename
    ... on ConfigAppliedPayload { result { version created comment } }
    ... on ValidationProblem { status errors { pointer detail } }
    ... on PreconditionFailedProblem { status }
  }
}"""


async def test_config_export_apply_diff_versions_and_rollback(
    graph: Run, owner: httpx.AsyncClient
) -> None:
    document = {"services": [SERVICE], "routes": [ROUTE]}
    exported = (await graph("{ config { version etag document } }"))["config"]
    diff = await graph(
        """query($d: JSON!) { configDiff(document: $d) { __typename
             ... on ConfigDiffPayload { diff { empty summary kinds { kind added } } } } }""",
        d=document,
    )
    kinds = {k["kind"]: k["added"] for k in diff["configDiff"]["diff"]["kinds"]}
    assert kinds["services"] == ["orders"]
    assert kinds["routes"] == ["orders"]
    done = (await graph(APPLY, document=document, ifMatch=exported["etag"], comment="gql"))[
        "applyConfig"
    ]
    assert done["__typename"] == "ConfigAppliedPayload", done
    assert done["result"]["created"] is True
    assert done["result"]["comment"] == "gql"
    version = done["result"]["version"]
    # REST sees what GraphQL applied, with the same ETag GraphQL exports.
    rest = await owner.get("/admin/v1/config")
    assert [s["name"] for s in rest.json()["services"]] == ["orders"]
    again = (await graph("{ config { version etag document } }"))["config"]
    assert again["etag"] == rest.headers["etag"]
    assert again["version"] == version
    # The stale ETag is refused as data.
    stale = (await graph(APPLY, document={}, ifMatch=exported["etag"]))["applyConfig"]
    assert stale == {"__typename": "PreconditionFailedProblem", "status": 412}
    listed = await graph(
        "{ configVersions(first: 1) { nodes { version } pageInfo { hasNextPage } } }"
    )
    assert listed["configVersions"]["nodes"] == [{"version": version}]
    stored = await graph(
        "query($v: Int!) { configVersion(version: $v) { info { version } etag document } }",
        v=version,
    )
    assert stored["configVersion"]["document"]["services"][0]["name"] == "orders"
    emptied = (await graph(APPLY, document={}))["applyConfig"]
    assert emptied["result"]["version"] == version + 1
    rolled = await graph(
        """mutation($v: Int!) { rollbackConfig(version: $v) { __typename
             ... on ConfigAppliedPayload { result { version sourceVersion created } } } }""",
        v=version,
    )
    assert rolled["rollbackConfig"]["result"] == {
        "version": version + 2,
        "sourceVersion": version,
        "created": True,
    }
    services = (await owner.get("/admin/v1/config")).json()["services"]
    assert [s["name"] for s in services] == ["orders"]


async def test_config_problems_as_data(graph: Run) -> None:
    bad = {"services": [{"name": "orders", "url": "http://a", "timeouts": {"connect": -1}}]}
    refused = (await graph(APPLY, document=bad))["applyConfig"]
    assert refused["__typename"] == "ValidationProblem", refused
    assert refused["status"] == 422
    assert [e["pointer"] for e in refused["errors"]] == ["#/services/0/timeouts/connect"]
    missing = await graph(
        """mutation { rollbackConfig(version: 4242) { __typename
             ... on NotFoundProblem { status target } } }"""
    )
    assert missing["rollbackConfig"] == {
        "__typename": "NotFoundProblem",
        "status": 404,
        "target": "version",
    }
    zero = await graph(
        """mutation { rollbackConfig(version: 0) { __typename
             ... on ValidationProblem { errors { pointer } } } }"""
    )
    assert zero["rollbackConfig"]["errors"] == [{"pointer": "#/version"}]
    assert (await graph("{ configVersion(version: 4242) { etag } }"))["configVersion"] is None


async def test_org_limited_admin_config_over_graphql_as_over_rest(
    graph_for: Callable[[httpx.AsyncClient], Run],
    client_for: ClientFactory,
    owner: httpx.AsyncClient,
    orgs: dict[str, str],
) -> None:
    for org in ("acme", "globex"):
        created = await owner.post(
            "/admin/v1/services",
            json={"name": f"{org}-svc", "url": "http://a.internal", "organization": org},
        )
        assert created.status_code == 201, created.text
    acme_rest = await client_for(Role.ADMIN, orgs["acme"])
    acme = graph_for(acme_rest)
    exported = (await acme("{ config { etag document } }"))["config"]
    assert [s["name"] for s in exported["document"]["services"]] == ["acme-svc"]
    rest = await acme_rest.get("/admin/v1/config")
    assert exported["etag"] == rest.headers["etag"]
    refused = (await acme(APPLY, document={}))["applyConfig"]
    assert refused["__typename"] == "ForbiddenProblem"
