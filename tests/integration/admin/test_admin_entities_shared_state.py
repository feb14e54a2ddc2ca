"""Admin reads and edits share the cached canonical document of a version: edits copy what
they change, pages follow every new version, and invalid edits still get full 422s."""

from __future__ import annotations

import copy
from typing import Any

import httpx
from fastapi import FastAPI

from portcullis.services.state import AdminState

MERGE = {"content-type": "application/merge-patch+json"}


async def all_usernames(client: httpx.AsyncClient, **params: Any) -> list[str]:
    names: list[str] = []
    url: str | None = "/admin/v1/consumers"
    query: dict[str, Any] | None = {"limit": 3, **params}
    while url is not None:
        response = await client.get(url, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        names += [c["username"] for c in body["items"]]
        url, query = body["next"], None
    return names


async def test_edits_never_change_a_cached_document(owner: httpx.AsyncClient, app: FastAPI) -> None:
    state: AdminState = app.state.admin
    for i in range(8):
        response = await owner.post(
            "/admin/v1/consumers", json={"username": f"c{i}", "tags": ["even" if i % 2 else "odd"]}
        )
        assert response.status_code == 201, response.text
    assert await all_usernames(owner) == [f"c{i}" for i in range(8)]
    before = await state.editor.state()
    pristine = copy.deepcopy(before.document)

    patched = await owner.patch(
        "/admin/v1/consumers/c3", json={"metadata": {"k": "v"}}, headers=MERGE
    )
    assert patched.status_code == 200, patched.text
    created = await owner.post("/admin/v1/consumers", json={"username": "a-first"})
    assert created.status_code == 201, created.text
    deleted = await owner.delete("/admin/v1/consumers/c5")
    assert deleted.status_code == 204, deleted.text

    assert before.document == pristine
    after = await state.editor.state()
    assert after.version == before.version + 3
    assert after.document == after.config.canonical()
    # Pages (sorted by username) follow each new version, filters included.
    assert await all_usernames(owner) == ["a-first", "c0", "c1", "c2", "c3", "c4", "c6", "c7"]
    assert await all_usernames(owner, tags="even") == ["c1", "c3", "c7"]
    assert await all_usernames(owner, sort="-username") == [
        "c7", "c6", "c4", "c3", "c2", "c1", "c0", "a-first"
    ]  # fmt: skip
    fetched = await owner.get("/admin/v1/consumers/c3")
    assert fetched.json()["metadata"] == {"k": "v"}
    assert (await owner.get("/admin/v1/consumers/c5")).status_code == 404


async def test_invalid_edits_are_422s_naming_the_field(owner: httpx.AsyncClient) -> None:
    response = await owner.post(
        "/admin/v1/services", json={"name": "svc", "url": "http://127.0.0.1:9"}
    )
    assert response.status_code == 201, response.text
    response = await owner.post(
        "/admin/v1/routes", json={"name": "r", "service": "svc", "paths": ["/r"]}
    )
    assert response.status_code == 201, response.text

    dangling = await owner.patch("/admin/v1/routes/r", json={"service": "nope"}, headers=MERGE)
    assert dangling.status_code == 422, dangling.text
    assert dangling.json()["errors"] == [
        {"pointer": "#/service", "detail": "unknown service 'nope'"}
    ]
    bad_plugin = await owner.post(
        "/admin/v1/plugins", json={"name": "cors", "route": "r", "config": {"origins": 3}}
    )
    assert bad_plugin.status_code == 422, bad_plugin.text
    assert bad_plugin.json()["errors"][0]["pointer"].startswith("#/config/origins")
    route = await owner.get("/admin/v1/routes/r")
    assert route.json()["service"] == "svc"
