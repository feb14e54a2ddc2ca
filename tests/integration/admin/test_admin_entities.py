"""CRUD conventions of the gateway entity endpoints, against a real store (temp SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from portcullis.services.state import AdminState

pytestmark = pytest.mark.both_stores

PROBLEM = "application/problem+json"


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://portcullis.dev/problems/")
    assert "Traceback" not in response.text
    return body


async def make_service(client: httpx.AsyncClient, name: str, **extra: Any) -> httpx.Response:
    body = {"name": name, "url": "http://127.0.0.1:9000", **extra}
    response = await client.post("/admin/v1/services", json=body)
    assert response.status_code == 201, response.text
    return response


async def test_create_returns_201_location_and_etag(owner: httpx.AsyncClient) -> None:
    created = await make_service(owner, "orders", tags=["team-a"])
    assert created.headers["location"] == "/admin/v1/services/orders"
    assert created.json()["timeouts"]["read"] == 60.0
    fetched = await owner.get(created.headers["location"])
    assert fetched.status_code == 200
    assert fetched.headers["etag"] == created.headers["etag"]
    assert fetched.json() == created.json()


async def test_every_change_is_a_config_version_by_the_caller(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    state: AdminState = app.state.admin
    before = await state.editor.repository.current_version()
    await make_service(owner, "orders")
    current = await state.editor.repository.current()
    assert current is not None
    assert current.version == before + 1
    assert current.author == "user:owner-0@example.com"
    assert [s.name for s in current.config.services] == ["orders"]


async def test_duplicate_name_is_409_with_pointer(owner: httpx.AsyncClient) -> None:
    await make_service(owner, "orders")
    response = await owner.post(
        "/admin/v1/services", json={"name": "orders", "url": "http://127.0.0.1:1"}
    )
    body = problem(response, 409)
    assert body["errors"] == [{"pointer": "#/name", "detail": "already in use"}]


@pytest.mark.parametrize(
    ("path", "payload", "pointer", "fragment"),
    [
        ("/admin/v1/services", {"url": "http://x:1"}, "#/name", "Field required"),
        (
            "/admin/v1/services",
            {"name": "a", "url": "http://x:1", "upstream": "u"},
            "#",
            "exactly one",
        ),
        (
            "/admin/v1/services",
            {"name": "a", "url": "http://x:1", "timeouts": {"read": -1}},
            "#/timeouts/read",
            "greater than 0",
        ),
        (
            "/admin/v1/routes",
            {"name": "r", "service": "missing"},
            "#/service",
            "unknown service 'missing'",
        ),
        (
            "/admin/v1/services",
            {"name": "a", "upstream": "nope"},
            "#/upstream",
            "unknown upstream 'nope'",
        ),
        ("/admin/v1/plugins", {"name": "no-such-plugin"}, "#/name", "unknown plugin"),
        (
            "/admin/v1/plugins",
            {"name": "request-size-limit", "config": {"max_bytes": -5}},
            "#/config/max_bytes",
            "greater than or equal",
        ),
    ],
)
async def test_validation_errors_point_into_the_body(
    owner: httpx.AsyncClient, path: str, payload: dict[str, Any], pointer: str, fragment: str
) -> None:
    body = problem(await owner.post(path, json=payload), 422)
    assert any(e["pointer"] == pointer and fragment in e["detail"] for e in body["errors"]), body


async def test_pagination_follows_next_links_over_every_item(owner: httpx.AsyncClient) -> None:
    names = ["delta", "alpha", "echo", "charlie", "bravo"]
    for name in names:
        await make_service(owner, name)
    seen: list[str] = []
    url: str | None = "/admin/v1/services?limit=2&sort=-name"
    pages = 0
    while url is not None:
        response = await owner.get(url)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [item["name"] for item in page["items"]]
        url = page["next"]
        if url is not None:
            assert response.headers["link"] == f'<{url}>; rel="next"'
        pages += 1
    assert seen == sorted(names, reverse=True)
    assert pages == 3


async def test_cursor_survives_inserts_between_pages(owner: httpx.AsyncClient) -> None:
    for name in ("b", "d", "f"):
        await make_service(owner, name)
    first = (await owner.get("/admin/v1/services?limit=2")).json()
    assert [i["name"] for i in first["items"]] == ["b", "d"]
    await make_service(owner, "a")  # before the cursor: must not shift the next page
    await make_service(owner, "e")  # after it: must appear
    second = (await owner.get(first["next"])).json()
    assert [i["name"] for i in second["items"]] == ["e", "f"]


async def test_bad_cursor_and_sort_are_problems(owner: httpx.AsyncClient) -> None:
    for name in ("a", "b", "c"):
        await make_service(owner, name)
    problem(await owner.get("/admin/v1/services?cursor=!!notacursor"), 400)
    cursor = (await owner.get("/admin/v1/services?limit=1")).json()["next"].split("cursor=")[1]
    problem(await owner.get(f"/admin/v1/services?sort=-name&cursor={cursor}"), 400)
    body = problem(await owner.get("/admin/v1/services?sort=colour"), 422)
    detail = body["errors"][0]["detail"]
    assert "'sort'" in detail
    assert "protocol" in detail
    problem(await owner.get("/admin/v1/services?limit=0"), 422)
    problem(await owner.get("/admin/v1/services?unknown_filter=1"), 422)


async def test_filters_by_tags_and_fields(owner: httpx.AsyncClient) -> None:
    await make_service(owner, "a", tags=["prod", "eu"])
    await make_service(owner, "b", tags=["prod"])
    await make_service(owner, "c", tags=["eu"], protocol="https")
    names = lambda r: [i["name"] for i in r.json()["items"]]  # noqa: E731
    assert names(await owner.get("/admin/v1/services?tags=prod")) == ["a", "b"]
    assert names(await owner.get("/admin/v1/services?tags=prod,eu")) == ["a"]
    assert names(await owner.get("/admin/v1/services?protocol=https")) == ["c"]
    await owner.post("/admin/v1/routes", json={"name": "r1", "service": "a"})
    await owner.post("/admin/v1/routes", json={"name": "r2", "service": "b", "strip_path": False})
    assert names(await owner.get("/admin/v1/routes?service=b")) == ["r2"]
    assert names(await owner.get("/admin/v1/routes?strip_path=true")) == ["r1"]


async def test_put_with_stale_if_match_is_412(owner: httpx.AsyncClient) -> None:
    created = await make_service(owner, "orders")
    etag = created.headers["etag"]
    replacement = {"name": "orders", "url": "http://127.0.0.1:9001"}
    ok = await owner.put("/admin/v1/services/orders", json=replacement, headers={"If-Match": etag})
    assert ok.status_code == 200, ok.text
    assert ok.headers["etag"] != etag
    stale = await owner.put(
        "/admin/v1/services/orders",
        json={**replacement, "path": "/v2"},
        headers={"If-Match": etag},
    )
    problem(stale, 412)
    current = (await owner.get("/admin/v1/services/orders")).json()
    assert current["url"] == "http://127.0.0.1:9001"
    assert current["path"] == "/"


async def test_put_cannot_rename(owner: httpx.AsyncClient) -> None:
    await make_service(owner, "orders")
    response = await owner.put(
        "/admin/v1/services/orders", json={"name": "other", "url": "http://127.0.0.1:1"}
    )
    body = problem(response, 422)
    assert body["errors"][0]["pointer"] == "#/name"


async def test_patch_is_json_merge_patch(owner: httpx.AsyncClient) -> None:
    await owner.post("/admin/v1/upstreams", json={"name": "pool"})
    await make_service(owner, "orders", tags=["a"])
    response = await owner.patch(
        "/admin/v1/services/orders",
        content=b'{"timeouts": {"read": 5}, "url": null, "upstream": "pool"}',
        headers={"content-type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["timeouts"] == {"connect": 5.0, "read": 5.0, "write": 60.0, "total": None}
    assert body["url"] is None
    assert body["upstream"] == "pool"
    assert body["tags"] == ["a"]
    invalid = await owner.patch("/admin/v1/services/orders", json={"upstream": "missing"})
    assert problem(invalid, 422)["errors"][0]["pointer"] == "#/upstream"
    wrong_type = await owner.patch("/admin/v1/services/orders", json={"timeouts": {"read": "x"}})
    assert problem(wrong_type, 422)["errors"][0]["pointer"] == "#/timeouts/read"
    stale = await owner.patch(
        "/admin/v1/services/orders", json={"path": "/x"}, headers={"If-Match": '"nope"'}
    )
    problem(stale, 412)


async def test_delete_with_dependents_is_409_naming_them(owner: httpx.AsyncClient) -> None:
    await make_service(owner, "orders")
    await owner.post("/admin/v1/routes", json={"name": "orders-route", "service": "orders"})
    plugin = await owner.post(
        "/admin/v1/plugins",
        json={"name": "request-size-limit", "service": "orders", "config": {"max_bytes": 10}},
    )
    assert plugin.status_code == 201, plugin.text
    body = problem(await owner.delete("/admin/v1/services/orders"), 409)
    assert body["dependents"] == [
        {"kind": "routes", "id": "orders-route", "field": "service"},
        {"kind": "plugins", "id": "request-size-limit@service:orders", "field": "service"},
    ]
    assert "orders-route" in body["detail"]
    plugin_url = plugin.headers["location"]
    assert (await owner.delete(plugin_url)).status_code == 204
    assert (await owner.delete("/admin/v1/routes/orders-route")).status_code == 204
    etag = (await owner.get("/admin/v1/services/orders")).headers["etag"]
    problem(await owner.delete("/admin/v1/services/orders", headers={"If-Match": '"x"'}), 412)
    deleted = await owner.delete("/admin/v1/services/orders", headers={"If-Match": etag})
    assert deleted.status_code == 204
    problem(await owner.get("/admin/v1/services/orders"), 404)
    problem(await owner.delete("/admin/v1/services/orders"), 404)


async def test_upstream_with_services_cannot_be_deleted(owner: httpx.AsyncClient) -> None:
    await owner.post("/admin/v1/upstreams", json={"name": "pool"})
    await make_service(owner, "svc", url=None, upstream="pool")
    body = problem(await owner.delete("/admin/v1/upstreams/pool"), 409)
    assert body["dependents"] == [{"kind": "services", "id": "svc", "field": "upstream"}]


async def test_targets_are_a_sub_resource_of_upstreams(owner: httpx.AsyncClient) -> None:
    assert (await owner.post("/admin/v1/upstreams", json={"name": "pool"})).status_code == 201
    created = await owner.post(
        "/admin/v1/upstreams/pool/targets", json={"target": "10.0.0.1:8080", "weight": 50}
    )
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/admin/v1/upstreams/pool/targets/" + quote(
        "10.0.0.1:8080", safe=""
    )
    await owner.post("/admin/v1/upstreams/pool/targets", json={"target": "10.0.0.2:8080"})
    problem(
        await owner.post("/admin/v1/upstreams/pool/targets", json={"target": "10.0.0.1:8080"}),
        409,
    )
    bad = await owner.post("/admin/v1/upstreams/pool/targets", json={"target": "no-port"})
    assert problem(bad, 422)["errors"][0]["pointer"] == "#/target"
    listed = (await owner.get("/admin/v1/upstreams/pool/targets?sort=-weight")).json()
    assert [t["target"] for t in listed["items"]] == ["10.0.0.2:8080", "10.0.0.1:8080"]
    patched = await owner.patch(created.headers["location"], json={"weight": 7})
    assert patched.json()["weight"] == 7
    upstream = (await owner.get("/admin/v1/upstreams/pool")).json()
    assert [t["weight"] for t in upstream["targets"]] == [7, 100]
    assert (await owner.delete(created.headers["location"])).status_code == 204
    problem(await owner.get("/admin/v1/upstreams/missing/targets"), 404)


async def test_plugins_have_ids_and_identity_cannot_change(owner: httpx.AsyncClient) -> None:
    await make_service(owner, "svc")
    await owner.post("/admin/v1/routes", json={"name": "r", "service": "svc"})
    created = await owner.post(
        "/admin/v1/plugins",
        json={"name": "request-size-limit", "route": "r", "config": {"max_bytes": 100}},
    )
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "request-size-limit@route:r"
    patched = await owner.patch(created.headers["location"], json={"config": {"max_bytes": 5}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["config"] == {"max_bytes": 5}
    moved = await owner.patch(created.headers["location"], json={"route": None, "service": "svc"})
    pointers = {e["pointer"] for e in problem(moved, 422)["errors"]}
    assert pointers == {"#/service", "#/route"}
    body = problem(await owner.delete("/admin/v1/routes/r"), 409)
    assert body["dependents"][0]["id"] == "request-size-limit@route:r"


async def test_consumers_crud(owner: httpx.AsyncClient) -> None:
    created = await owner.post("/admin/v1/consumers", json={"username": "acme", "custom_id": "42"})
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/admin/v1/consumers/acme"
    listed = await owner.get("/admin/v1/consumers?custom_id=42")
    assert [c["username"] for c in listed.json()["items"]] == ["acme"]
    assert (await owner.delete("/admin/v1/consumers/acme")).status_code == 204


async def test_unknown_paths_and_methods_are_problems(owner: httpx.AsyncClient) -> None:
    problem(await owner.get("/admin/v1/nothing-here"), 404)
    wrong_method = await owner.post("/admin/v1/services/x")
    problem(wrong_method, 405)
    assert wrong_method.headers["allow"] == "DELETE, GET, PATCH, PUT"
    assert (await owner.put("/admin/v1/services")).headers["allow"] == "GET, POST"


async def test_concurrent_writes_lose_nothing_and_if_match_admits_one(
    owner: httpx.AsyncClient,
) -> None:
    created = await asyncio.gather(
        *(owner.post("/admin/v1/consumers", json={"username": f"user{i}"}) for i in range(8))
    )
    assert [r.status_code for r in created] == [201] * 8
    listed = (await owner.get("/admin/v1/consumers")).json()["items"]
    assert sorted(c["username"] for c in listed) == sorted(f"user{i}" for i in range(8))
    etag = created[0].headers["etag"]
    racing = await asyncio.gather(
        *(
            owner.patch(
                "/admin/v1/consumers/user0",
                json={"custom_id": f"writer-{i}"},
                headers={"If-Match": etag},
            )
            for i in range(4)
        )
    )
    assert sorted(r.status_code for r in racing) == [200, 412, 412, 412]
    winner = next(r for r in racing if r.status_code == 200).json()["custom_id"]
    assert (await owner.get("/admin/v1/consumers/user0")).json()["custom_id"] == winner
