"""Config export, import (apply), diff, version history and rollback through the admin API."""

from __future__ import annotations

from typing import Any

import httpx
import yaml

PROBLEM = "application/problem+json"
DOC: dict[str, Any] = {
    "format_version": "1",
    "services": [{"name": "orders", "url": "http://127.0.0.1:9000"}],
    "routes": [{"name": "orders", "service": "orders", "paths": ["/orders"]}],
}


async def apply(client: httpx.AsyncClient, doc: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.put("/admin/v1/config", json=doc, headers=headers)


async def test_import_then_export_round_trips(owner: httpx.AsyncClient) -> None:
    applied = await apply(owner, DOC)
    assert applied.status_code == 200, applied.text
    info = applied.json()
    assert info["created"] is True
    assert info["author"] == "user:owner-0@example.com"
    exported = await owner.get("/admin/v1/config")
    assert exported.status_code == 200
    assert exported.json() == DOC
    assert exported.headers["etag"] == f'"{info["checksum"]}"'
    assert exported.headers["portcullis-config-version"] == str(info["version"])
    as_yaml = await owner.get("/admin/v1/config?format=yaml")
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text) == DOC
    again = await apply(owner, DOC)
    assert again.json()["created"] is False
    assert again.json()["version"] == info["version"]


async def test_import_accepts_yaml(owner: httpx.AsyncClient) -> None:
    response = await owner.put(
        "/admin/v1/config",
        content=yaml.safe_dump(DOC).encode(),
        headers={"content-type": "application/yaml"},
    )
    assert response.status_code == 200, response.text
    assert (await owner.get("/admin/v1/services/orders")).status_code == 200


async def test_import_errors_point_into_the_document(owner: httpx.AsyncClient) -> None:
    bad = {
        **DOC,
        "routes": [
            {"name": "r", "service": "nope"},
            {"name": "x", "service": "orders", "paths": []},
        ],
    }
    response = await apply(owner, bad)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    pointers = {e["pointer"] for e in response.json()["errors"]}
    assert pointers == {"#/routes/0/service", "#/routes/1/paths"}
    unsupported = await owner.put(
        "/admin/v1/config", content=b"x", headers={"content-type": "text/plain"}
    )
    assert unsupported.status_code == 415
    broken = await owner.put(
        "/admin/v1/config", content=b"{", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400
    assert (broken.json()["line"], broken.json()["column"]) == (1, 2)


async def test_import_honours_if_match(owner: httpx.AsyncClient) -> None:
    first = await apply(owner, DOC)
    etag = first.headers["etag"]
    changed = {**DOC, "consumers": [{"username": "acme"}]}
    assert (await apply(owner, changed, **{"If-Match": etag})).status_code == 200
    stale = await apply(owner, DOC, **{"If-Match": etag})
    assert stale.status_code == 412
    assert stale.headers["content-type"] == PROBLEM


async def test_diff_reports_entity_changes(owner: httpx.AsyncClient) -> None:
    await apply(owner, DOC)
    proposed = {
        "services": [{"name": "orders", "url": "http://127.0.0.1:9001"}],
        "routes": [],
    }
    response = await owner.post("/admin/v1/config/diff", json=proposed)
    assert response.status_code == 200, response.text
    diff = response.json()
    assert diff["empty"] is False
    kinds = {k["kind"]: k for k in diff["kinds"]}
    assert kinds["routes"]["removed"] == ["orders"]
    assert kinds["services"]["changed"] == [
        {
            "key": "orders",
            "fields": [
                {"path": "url", "old": "http://127.0.0.1:9000", "new": "http://127.0.0.1:9001"}
            ],
        }
    ]
    same = await owner.post("/admin/v1/config/diff", json=DOC)
    assert same.json()["empty"] is True


async def test_versions_are_paginated_newest_first(owner: httpx.AsyncClient) -> None:
    for i in range(3):
        await owner.post("/admin/v1/consumers", json={"username": f"c{i}"})
    first = await owner.get("/admin/v1/config/versions?limit=2")
    page = first.json()
    assert [v["version"] for v in page["items"]] == [3, 2]
    assert first.headers["link"] == f'<{page["next"]}>; rel="next"'
    second = (await owner.get(page["next"])).json()
    assert [v["version"] for v in second["items"]] == [1]
    assert second["next"] is None
    detail = await owner.get("/admin/v1/config/versions/2")
    assert detail.json()["config"]["consumers"] == [{"username": "c0"}, {"username": "c1"}]
    assert (await owner.get("/admin/v1/config/versions/99")).status_code == 404
    assert (await owner.get("/admin/v1/config/versions?cursor=abc")).status_code == 400


async def test_rollback_restores_an_old_version_as_a_new_one(owner: httpx.AsyncClient) -> None:
    await apply(owner, DOC)
    await owner.post("/admin/v1/consumers", json={"username": "acme"})
    rolled = await owner.post("/admin/v1/config/rollback", json={"version": 1})
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["version"] == 3
    assert rolled.json()["source_version"] == 1
    assert (await owner.get("/admin/v1/consumers")).json()["items"] == []
    missing = await owner.post("/admin/v1/config/rollback", json={"version": 42})
    assert missing.status_code == 404
    stale = await owner.post(
        "/admin/v1/config/rollback", json={"version": 2}, headers={"If-Match": '"old"'}
    )
    assert stale.status_code == 412
