"""Gateway entities over GraphQL: links between them, typed plugin settings, filters,
If-Match, merge patches, deletes refused with dependents named, and the same
organization boundary as REST."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from portcullis.model.plugins.key_auth import KeyAuthConfig
from portcullis.services.rbac import Role


async def graphql(client: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


@pytest.fixture
async def shop(owner: httpx.AsyncClient) -> None:
    for path, body in (
        ("/admin/v1/services", {"name": "orders", "url": "http://orders.internal:8080"}),
        ("/admin/v1/services", {"name": "billing", "url": "http://billing.internal"}),
        ("/admin/v1/routes", {"name": "orders-api", "service": "orders", "paths": ["/orders"]}),
        ("/admin/v1/routes", {"name": "orders-admin", "service": "orders", "paths": ["/oa"]}),
        (
            "/admin/v1/plugins",
            {"name": "key-auth", "route": "orders-api", "config": {"header_names": ["x-key"]}},
        ),
        ("/admin/v1/plans", {"name": "gold", "limits": [{"limit": 5, "period": "1s"}]}),
        ("/admin/v1/consumers", {"username": "acme", "plan": "gold"}),
    ):
        created = await owner.post(path, json=body)
        assert created.status_code == 201, created.text


@pytest.mark.usefixtures("shop")
async def test_links_and_typed_plugin_settings(owner: httpx.AsyncClient) -> None:
    data = await graphql(
        owner,
        """{
          service(id: "orders") {
            routes { nodes { name serviceEntity { name }
              plugins { nodes { id name settings { __typename
                ... on KeyAuthConfig { headerNames realm hideCredentials } } } } } }
          }
          consumer(id: "acme") { planEntity { name limits { limit period } } }
          routes(filter: {service: "orders"}, sort: "-name") { nodes { name } }
        }""",
    )
    routes = data["service"]["routes"]["nodes"]
    assert [r["name"] for r in routes] == ["orders-admin", "orders-api"]
    assert routes[0]["serviceEntity"] == {"name": "orders"}
    plugin = routes[1]["plugins"]["nodes"][0]
    # Typed per plugin, with the plugin model's defaults filled in.
    assert plugin["settings"]["__typename"] == "KeyAuthConfig"
    assert plugin["settings"]["headerNames"] == ["x-key"]
    defaults = KeyAuthConfig()
    assert plugin["settings"]["hideCredentials"] is defaults.hide_credentials
    assert plugin["settings"]["realm"] == defaults.realm
    assert data["consumer"]["planEntity"] == {
        "name": "gold",
        "limits": [{"limit": 5, "period": "1s"}],
    }
    assert [r["name"] for r in data["routes"]["nodes"]] == ["orders-api", "orders-admin"]


@pytest.mark.usefixtures("shop")
async def test_update_with_if_match_patch_and_delete_with_dependents(
    owner: httpx.AsyncClient,
) -> None:
    etag = (await graphql(owner, '{ service(id: "billing") { etag } }'))["service"]["etag"]
    update = """mutation($id: ID!, $patch: ServicePatch!, $ifMatch: String) {
      updateService(id: $id, patch: $patch, ifMatch: $ifMatch) {
        __typename ... on ServicePayload { service { tags path etag } }
        ... on Problem { status detail } } }"""
    done = await graphql(owner, update, id="billing", patch={"tags": ["beta"]}, ifMatch=etag)
    assert done["updateService"]["__typename"] == "ServicePayload"
    assert done["updateService"]["service"]["tags"] == ["beta"]
    assert done["updateService"]["service"]["path"] == "/"
    stale = await graphql(owner, update, id="billing", patch={"tags": []}, ifMatch=etag)
    assert stale["updateService"]["__typename"] == "PreconditionFailedProblem"
    assert stale["updateService"]["status"] == 412
    rest = (await owner.get("/admin/v1/services/billing")).json()
    assert rest["tags"] == ["beta"]
    refused = await graphql(
        owner,
        """mutation { deleteService(id: "orders") { __typename
          ... on HasDependentsProblem { status dependents } } }""",
    )
    assert refused["deleteService"]["__typename"] == "HasDependentsProblem"
    assert {d["id"] for d in refused["deleteService"]["dependents"]} >= {"orders-api"}
    deleted = await graphql(
        owner, 'mutation { deleteService(id: "billing") { __typename ... on Deleted { id } } }'
    )
    assert deleted["deleteService"] == {"__typename": "Deleted", "id": "billing"}
    assert (await owner.get("/admin/v1/services/billing")).status_code == 404
    missing = await graphql(owner, '{ service(id: "billing") { name } }')
    assert missing["service"] is None


async def test_organization_boundary_and_roles(
    owner: httpx.AsyncClient, orgs: dict[str, str], client_for: Any
) -> None:
    for org in ("acme", "globex"):
        created = await owner.post(
            "/admin/v1/services",
            json={"name": f"{org}-svc", "url": "http://x.internal", "organization": org},
        )
        assert created.status_code == 201, created.text
    acme_admin = await client_for(Role.ADMIN, orgs["acme"])
    seen = await graphql(acme_admin, "{ services { nodes { name organization } } }")
    assert seen["services"]["nodes"] == [{"name": "acme-svc", "organization": "acme"}]
    assert (await graphql(acme_admin, '{ service(id: "globex-svc") { name } }'))["service"] is None
    # A write to the other organization's entity: not found, as REST answers.
    attempt = await graphql(
        acme_admin,
        """mutation { updateService(id: "globex-svc", patch: {tags: ["x"]}) {
          __typename ... on Problem { status } } }""",
    )
    assert attempt["updateService"] == {"__typename": "NotFoundProblem", "status": 404}
    viewer = await client_for(Role.VIEWER)
    denied = await graphql(
        viewer,
        """mutation { createService(input: {name: "v", url: "http://v.internal"}) {
          __typename ... on ForbiddenProblem { status requiredPermission } } }""",
    )
    assert denied["createService"] == {
        "__typename": "ForbiddenProblem",
        "status": 403,
        "requiredPermission": "config:write",
    }
