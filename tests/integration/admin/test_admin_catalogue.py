"""The API catalogue through the admin app: importing a version's OpenAPI description
(inline, from a URL behind the SSRF guard, refreshed by the job), reading the published
document as clients see it (servers, security, caching, who may read it), the catalogue
list and the version diff."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from admin_support import TEST_PASSWORD_HASHER
from aiohttp import web
from fastapi import FastAPI
from openapi_spec_validator import validate

from portcullis.admin.app import create_admin_app
from portcullis.catalogue.fetch import DescriptionFetcher
from portcullis.services.catalogue import REFRESH_ACTOR, CatalogueService
from portcullis.settings import Settings
from portcullis.webhooks.destinations import DestinationPolicy, parse_allowed_networks
from support.threaded_upstream import eventually

DOC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Orders", "version": "1"},
    "paths": {
        "/orders": {
            "get": {
                "operationId": "listOrders",
                "responses": {
                    "200": {
                        "description": "the orders",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Order"}}
                        },
                    }
                },
            }
        }
    },
    "components": {"schemas": {"Order": {"type": "object"}}},
}


class DocServer:
    """Serves documents over real HTTP on loopback (what a description URL points at)."""

    def __init__(self) -> None:
        self.documents: dict[str, Any] = {}
        self.status = 200
        self.hits = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if self.status != 200:
            return web.Response(status=self.status)
        document = self.documents.get(request.path)
        if document is None:
            return web.Response(status=404)
        return web.json_response(document)


@pytest.fixture
async def doc_server() -> AsyncIterator[DocServer]:
    server = DocServer()
    app = web.Application()
    app.router.add_get("/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


@pytest.fixture
async def loopback_app(database_url: str) -> AsyncIterator[FastAPI]:
    """The admin app with loopback allowed as a description (webhook) destination and a
    public proxy URL, for URL imports from the test's own server."""
    settings = Settings(
        database_url=database_url,
        log_json=False,
        webhook_allowed_networks=["127.0.0.0/8"],
        public_proxy_url="https://api.example.com/gw",
    )
    application = create_admin_app(settings, password_hasher=TEST_PASSWORD_HASHER)
    async with application.router.lifespan_context(application):
        yield application


async def _client(app: FastAPI, token: str | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 40000))
    client = httpx.AsyncClient(transport=transport, base_url="http://admin")
    if token is not None:
        client.headers["authorization"] = f"Bearer {token}"
    return client


async def _owner(app: FastAPI) -> httpx.AsyncClient:
    from admin_support import PASSWORD

    from portcullis.services.rbac import Role

    await app.state.authenticator.create_user("owner@example.com", PASSWORD, Role.OWNER, None)
    client = await _client(app)
    login = await client.post(
        "/admin/v1/auth/login", json={"email": "owner@example.com", "password": PASSWORD}
    )
    client.headers["authorization"] = f"Bearer {login.json()['access_token']}"
    return client


async def _setup(owner: httpx.AsyncClient, *, public: bool = True, org: str | None = None) -> None:
    org_field = {} if org is None else {"organization": org}
    for kind, body in (
        ("services", {"name": "orders", "url": "http://orders.internal:8080", **org_field}),
        ("routes", {"name": "orders-v1", "service": "orders", "paths": ["/v1"], **org_field}),
        ("routes", {"name": "orders-v2", "service": "orders", "paths": ["/v2"], **org_field}),
        (
            "apis",
            {
                "name": "orders",
                "public": public,
                **org_field,
                "versions": [
                    {
                        "name": "v1",
                        "status": "deprecated",
                        "deprecated_at": "2026-06-01T00:00:00Z",
                        "sunset_at": "2027-06-01T00:00:00Z",
                        "successor": "v2",
                        "routes": ["orders-v1"],
                    },
                    {"name": "v2", "routes": ["orders-v2"]},
                ],
            },
        ),
    ):
        created = await owner.post(f"/admin/v1/{kind}", json=body)
        assert created.status_code == 201, created.text


async def _versions(owner: httpx.AsyncClient) -> int:
    listed = await owner.get("/admin/v1/config/versions")
    return len(listed.json()["items"])


async def _audit(owner: httpx.AsyncClient) -> list[dict[str, Any]]:
    return list((await owner.get("/admin/v1/audit-events?limit=200")).json()["items"])


async def test_an_inline_import_is_validated_published_and_idempotent(
    loopback_app: FastAPI,
) -> None:
    owner = await _owner(loopback_app)
    await _setup(owner)
    put = "/admin/v1/apis/orders/versions/v2/openapi"
    first = await owner.put(put, json=DOC)
    assert first.status_code == 200, first.text
    assert first.json()["changed"] is True
    versions, events = await _versions(owner), await _audit(owner)
    audit = len(events)
    (imported,) = [e for e in events if e["resource_type"] == "api" and e["action"] == "update"]
    assert imported["resource_id"] == "orders"
    again = await owner.put(put, json=copy.deepcopy(DOC))
    assert again.status_code == 200, again.text
    assert again.json()["changed"] is False
    assert await _versions(owner) == versions
    assert len(await _audit(owner)) == audit

    anonymous = await _client(loopback_app)
    published = await anonymous.get("/apis/orders/v2/openapi.json")
    assert published.status_code == 200, published.text
    document = published.json()
    validate(document)
    assert document["servers"] == [
        {"url": "https://api.example.com/gw/v2", "description": "route orders-v2"}
    ]
    assert published.headers["cache-control"] == "public, max-age=60"
    etag = published.headers["etag"]
    cached = await anonymous.get("/apis/orders/v2/openapi.json", headers={"if-none-match": etag})
    assert cached.status_code == 304
    as_yaml = await anonymous.get("/apis/orders/v2/openapi.yaml")
    assert as_yaml.status_code == 200
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert "https://api.example.com/gw/v2" in as_yaml.text

    listing = (await anonymous.get("/apis")).json()
    (api,) = listing["apis"]
    assert [(v["name"], v["status"], v["links"]) for v in api["versions"]] == [
        ("v1", "deprecated", {}),
        (
            "v2",
            "stable",
            {
                "openapi_json": "/apis/orders/v2/openapi.json",
                "openapi_yaml": "/apis/orders/v2/openapi.yaml",
            },
        ),
    ]
    missing = await anonymous.get("/apis/orders/v1/openapi.json")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_an_invalid_description_is_refused_with_json_pointers(
    loopback_app: FastAPI,
) -> None:
    owner = await _owner(loopback_app)
    await _setup(owner)
    bad = copy.deepcopy(DOC)
    del bad["paths"]["/orders"]["get"]["responses"]["200"]["description"]
    refused = await owner.put("/admin/v1/apis/orders/versions/v2/openapi", json=bad)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    pointers = {e["pointer"] for e in refused.json()["errors"]}
    assert pointers == {"#/paths/~1orders/get/responses/200"}

    # The same rule guards the entity API: a description sent inline in the API itself.
    api = (await owner.get("/admin/v1/apis/orders")).json()
    api["versions"][1]["openapi"] = bad
    replaced = await owner.put("/admin/v1/apis/orders", json=api)
    assert replaced.status_code == 422, replaced.text
    assert {e["pointer"] for e in replaced.json()["errors"]} == {
        "#/versions/1/openapi/paths/~1orders/get/responses/200"
    }

    relative = copy.deepcopy(DOC)
    relative["paths"]["/orders"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] = {"$ref": "schemas.yaml#/Order"}
    refused = await owner.put("/admin/v1/apis/orders/versions/v2/openapi", json=relative)
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["pointer"] == (
        "#/paths/~1orders/get/responses/200/content/application~1json/schema/$ref"
    )
    assert "only absolute http(s) URLs" in error["detail"]

    unknown = await owner.put("/admin/v1/apis/orders/versions/v9/openapi", json=DOC)
    assert unknown.status_code == 404


async def test_a_url_to_a_private_address_is_refused_by_the_webhook_guard(
    app: FastAPI, owner: httpx.AsyncClient, doc_server: DocServer
) -> None:
    await _setup(owner)
    doc_server.documents["/orders.json"] = DOC
    refused = await owner.put(
        "/admin/v1/apis/orders/versions/v2/openapi",
        json={"url": f"{doc_server.url}/orders.json"},
    )
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["pointer"] == "#/url"
    assert "is not a public address" in error["detail"]
    # A name is checked at connection time, on every address it resolves to.
    by_name = await owner.put(
        "/admin/v1/apis/orders/versions/v2/openapi",
        json={"url": doc_server.url.replace("127.0.0.1", "localhost") + "/orders.json"},
    )
    assert by_name.status_code == 422, by_name.text
    assert "is not a public address" in by_name.json()["errors"][0]["detail"]
    assert doc_server.hits == 0


async def test_a_url_import_bundles_remote_refs_and_the_job_refreshes_it(
    loopback_app: FastAPI, doc_server: DocServer
) -> None:
    owner = await _owner(loopback_app)
    await _setup(owner)
    remote = copy.deepcopy(DOC)
    remote["paths"]["/orders"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] = {"$ref": "common.json#/components/schemas/Order"}
    doc_server.documents["/orders.json"] = remote
    doc_server.documents["/common.json"] = {
        "components": {"schemas": {"Order": {"type": "object", "required": ["id"]}}}
    }
    url = f"{doc_server.url}/orders.json"
    imported = await owner.put(
        "/admin/v1/apis/orders/versions/v2/openapi", json={"url": url, "refresh_seconds": 60}
    )
    assert imported.status_code == 200, imported.text
    stored = (await owner.get("/admin/v1/apis/orders/versions/v2/openapi")).json()
    assert stored["openapi"]["components"]["schemas"]["Order_2"]["required"] == ["id"]
    assert stored["openapi_source"] == {"url": url, "refresh_seconds": 60}
    assert stored["source_state"]["error"] is None

    state = loopback_app.state.admin
    policy = DestinationPolicy(parse_allowed_networks('["127.0.0.0/8"]'))

    async def refresh(at: datetime) -> int:
        fetcher = DescriptionFetcher(policy)
        try:
            return await CatalogueService(state, fetcher).refresh_due(at)
        finally:
            await fetcher.close()

    now = datetime.now(UTC)
    hits = doc_server.hits
    assert await refresh(now) == 0  # not due yet: nothing fetched
    assert doc_server.hits == hits
    later = now + timedelta(seconds=61)
    assert await refresh(later) == 0  # due, fetched, unchanged: no edit
    assert doc_server.hits > hits

    doc_server.status = 503
    versions = await _versions(owner)
    assert await refresh(later + timedelta(seconds=61)) == 0
    failed = (await owner.get("/admin/v1/apis/orders/versions/v2/openapi")).json()
    assert "answered 503" in failed["source_state"]["error"]
    assert failed["source_state"]["failures"] == 1
    assert failed["openapi"] == stored["openapi"]  # the last good description stays
    assert await _versions(owner) == versions

    doc_server.status = 200
    doc_server.documents["/common.json"]["components"]["schemas"]["Order"]["required"] = [
        "id",
        "total",
    ]
    assert await refresh(later + timedelta(seconds=122)) == 1
    refreshed = (await owner.get("/admin/v1/apis/orders/versions/v2/openapi")).json()
    assert refreshed["openapi"]["components"]["schemas"]["Order_2"]["required"] == ["id", "total"]
    assert refreshed["source_state"]["error"] is None
    assert any(e["actor"] == REFRESH_ACTOR for e in await _audit(owner))


async def test_a_private_apis_description_needs_a_credential_of_its_organization(
    app: FastAPI,
    owner: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    orgs: dict[str, str],
) -> None:
    await _setup(owner, public=False, org="acme")
    assert (
        await owner.put("/admin/v1/apis/orders/versions/v2/openapi", json=DOC)
    ).status_code == 200
    keys: dict[str, str] = {}
    for username, org in (("acme-app", "acme"), ("globex-app", "globex")):
        made = await owner.post(
            "/admin/v1/consumers", json={"username": username, "organization": org}
        )
        assert made.status_code == 201, made.text
        key = await owner.post(f"/admin/v1/consumers/{username}/keys", json={"name": "k"})
        assert key.status_code == 201, key.text
        keys[username] = key.json()["key"]
    path = "/apis/orders/v2/openapi.json"

    refused = await anonymous.get(path)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await anonymous.get(path, headers={"x-api-key": "pk_nonsense"})).status_code == 401
    assert (await anonymous.get("/apis")).json() == {"apis": []}

    own = await anonymous.get(path, headers={"x-api-key": keys["acme-app"]})
    assert own.status_code == 200, own.text
    assert own.headers["cache-control"] == "private, max-age=60"
    bearer = await anonymous.get(path, headers={"authorization": f"Bearer {keys['acme-app']}"})
    assert bearer.status_code == 200
    other = await anonymous.get(path, headers={"x-api-key": keys["globex-app"]})
    assert other.status_code == 404
    listed = await anonymous.get("/apis", headers={"x-api-key": keys["globex-app"]})
    assert listed.json() == {"apis": []}

    assert (await owner.get(path)).status_code == 200
    from portcullis.services.rbac import Role

    globex_admin = await _admin_of(app, Role.VIEWER, orgs["globex"])
    assert (await globex_admin.get(path)).status_code == 404


async def _admin_of(app: FastAPI, role: Any, organization_id: str) -> httpx.AsyncClient:
    from admin_support import PASSWORD

    email = f"{role.value}-{organization_id}@example.com"
    await app.state.authenticator.create_user(email, PASSWORD, role, organization_id)
    client = await _client(app)
    login = await client.post("/admin/v1/auth/login", json={"email": email, "password": PASSWORD})
    client.headers["authorization"] = f"Bearer {login.json()['access_token']}"
    return client


async def test_the_diff_endpoint_reports_breaking_changes(owner: httpx.AsyncClient) -> None:
    await _setup(owner)
    v2 = copy.deepcopy(DOC)
    v1 = copy.deepcopy(DOC)
    v1["paths"]["/orders/{id}"] = {
        "get": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {"200": {"description": "one order"}},
        }
    }
    for version, document in (("v1", v1), ("v2", v2)):
        done = await owner.put(f"/admin/v1/apis/orders/versions/{version}/openapi", json=document)
        assert done.status_code == 200, done.text
    report = await owner.get("/admin/v1/apis/orders/diff", params={"base": "v1", "head": "v2"})
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["breaking"] == 1
    assert body["changes"][0] == {
        "location": "paths[/orders/{id}]",
        "message": "path removed",
        "breaking": True,
    }
    backwards = await owner.get("/admin/v1/apis/orders/diff", params={"base": "v2", "head": "v1"})
    assert backwards.json()["breaking"] == 0


IMPORT = """mutation($document: JSON, $url: String) {
  importApiDescription(api: "orders", version: "v2", document: $document, url: $url) {
    __typename
    ... on ApiDescriptionImported { changed digest published }
    ... on ValidationProblem { errors { pointer } }
  }
}"""


async def test_graphql_imports_reads_and_diffs_like_rest(owner: httpx.AsyncClient) -> None:
    await _setup(owner)

    async def graph(query: str, **variables: Any) -> dict[str, Any]:
        answer = await owner.post("/graphql", json={"query": query, "variables": variables})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert "errors" not in body, body
        return dict(body["data"])

    done = (await graph(IMPORT, document=DOC))["importApiDescription"]
    assert done["__typename"] == "ApiDescriptionImported"
    assert done["changed"] is True
    assert done["published"] == "/apis/orders/v2/openapi.json"
    bad = copy.deepcopy(DOC)
    del bad["info"]["version"]
    refused = (await graph(IMPORT, document=bad))["importApiDescription"]
    assert refused == {"__typename": "ValidationProblem", "errors": [{"pointer": "#/info"}]}
    read = await graph('{ apiDescription(api: "orders", version: "v2") }')
    assert read["apiDescription"]["digest"] == done["digest"]
    diff = await graph('{ apiDiff(api: "orders", base: "v2", head: "v2") }')
    assert diff["apiDiff"]["breaking"] == 0


async def test_the_control_plane_job_fetches_a_source_set_through_the_entity_api(
    database_url: str, doc_server: DocServer
) -> None:
    """The job as the control plane runs it: a source written into the API itself (no
    import call) is due at once and fetched by the next round."""
    settings = Settings(
        database_url=database_url,
        log_json=False,
        webhook_allowed_networks=["127.0.0.0/8"],
        openapi_refresh_interval=0.05,
    )
    application = create_admin_app(settings, password_hasher=TEST_PASSWORD_HASHER)
    async with application.router.lifespan_context(application):
        owner = await _owner(application)
        await _setup(owner)
        doc_server.documents["/orders.json"] = DOC
        api = (await owner.get("/admin/v1/apis/orders")).json()
        api["versions"][1]["openapi_source"] = {"url": f"{doc_server.url}/orders.json"}
        assert (await owner.put("/admin/v1/apis/orders", json=api)).status_code == 200

        editor = application.state.admin.editor

        async def fetched() -> bool:  # read from the store: polling the API would hit its limits
            config = (await editor.state()).config
            return config.apis[0].versions[1].openapi is not None

        await eventually(fetched, timeout=30)
        published = await owner.get("/apis/orders/v2/openapi.json")
        assert published.json()["paths"]["/orders"]["get"]["operationId"] == "listOrders"
