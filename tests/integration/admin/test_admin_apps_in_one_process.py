"""Two control-plane apps in one process, each on its own store, never see each other's data.

The admin API's route table is built once per process and shared by every app made in
it (tests make hundreds); what is cached per config version (entity ids, sorted pages)
belongs to each app's store, not to the shared routes: both stores here go through the
same config versions with different entities.
"""

from __future__ import annotations

import shutil
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
from admin_support import signed_in
from fastapi import FastAPI

from portcullis.admin.app import create_admin_app
from portcullis.settings import Settings


def app_on(store: Path) -> FastAPI:
    return create_admin_app(Settings(database_url=f"sqlite+aiosqlite:///{store}", log_json=False))


async def listed(client: httpx.AsyncClient, path: str, **params: str) -> list[str]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return [item["username"] for item in response.json()["items"]]


async def test_two_apps_with_their_own_stores_do_not_share_entities(
    migrated_template: Path, tmp_path: Path
) -> None:
    stores = []
    for name in ("a", "b"):
        stores.append(tmp_path / f"{name}.db")
        shutil.copyfile(migrated_template, stores[-1])
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(signed_in(app_on(stores[0])))
        b = await stack.enter_async_context(signed_in(app_on(stores[1])))
        # The same config versions (1, 2) on both stores, with different consumers and
        # upstreams (targets are cached per upstream too).
        for client, name in ((a, "alice"), (b, "bob")):
            created = await client.post("/admin/v1/consumers", json={"username": name})
            assert created.status_code == 201, created.text
            upstream = {"name": f"up-{name}", "targets": [{"target": f"{name}.test:80"}]}
            created = await client.post("/admin/v1/upstreams", json=upstream)
            assert created.status_code == 201, created.text
            # Read right away: each read fills the caches of this version.
            assert await listed(client, "/admin/v1/consumers") == [name]
            assert await listed(client, "/admin/v1/consumers", sort="-username") == [name]
        for client, name, other in ((a, "alice", "bob"), (b, "bob", "alice")):
            assert await listed(client, "/admin/v1/consumers") == [name]
            assert await listed(client, "/admin/v1/consumers", sort="-username") == [name]
            assert (await client.get(f"/admin/v1/consumers/{name}")).status_code == 200
            assert (await client.get(f"/admin/v1/consumers/{other}")).status_code == 404
            targets = await client.get(f"/admin/v1/upstreams/up-{name}/targets")
            assert targets.status_code == 200, targets.text
            assert [t["target"] for t in targets.json()["items"]] == [f"{name}.test:80"]
            missing = await client.get(f"/admin/v1/upstreams/up-{other}/targets")
            assert missing.status_code == 404, missing.text
