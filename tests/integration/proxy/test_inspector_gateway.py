"""The request inspector through a real gateway (`portcullis serve`, one worker, SQLite)
in front of the echo upstream: a capture records sampled exchanges with credentials
redacted (the route's key-auth names included) and bodies cut at 1 KiB; requests
before a capture and after its time box are not recorded; a developer sees only the
exchanges of their own consumers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from portcullis.identity.key_admin import KeySpec
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.secrets import load_server_secret
from portcullis.services.inspector import DeveloperInspector, ExchangeOut
from portcullis.services.portal import Developer
from portcullis.services.portal_apps import AppConsumer
from portcullis.store.engine import create_engine
from portcullis.store.inspector_tables import CapturedExchangeRow
from support.admin_session import signed_in_owner
from support.servers import Gateway, gateway, granian_app
from support.threaded_upstream import wait_until

TESTS_DIR = str(Path(__file__).resolve().parents[2])
BODY = b'{"pad": "' + b"x" * 2000 + b'"}'


@dataclass
class Setup:
    gw: Gateway
    admin: httpx.Client
    proxy: httpx.Client
    keys: dict[str, str]


class _Portal:
    """`PortalApps.consumers_of`: dev-alice's application is consumer alice, dev-bob's bob."""

    async def consumers_of(self, developer: Developer) -> list[AppConsumer]:
        name = developer.id.removeprefix("dev-")
        return [AppConsumer(f"app-{name}", name, "team", name, None, None)]


async def _keys(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    try:
        repo = KeyRepository(
            engine, load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
        )
        keys = {}
        for consumer in ("alice", "bob"):
            created = await repo.create(
                consumer, KeySpec(name="inspect"), created_by="test", organization=None
            )
            keys[consumer] = created.key
        return keys
    finally:
        await engine.dispose()


def _in_thread(coro: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("inspector")
    with granian_app("support.body_echo:create_app", env={"PYTHONPATH": TESTS_DIR}) as echo:
        config = {
            "services": [{"name": "echo", "url": f"http://127.0.0.1:{echo}"}],
            "routes": [
                {"name": "inspected", "service": "echo", "paths": ["/in"]},
                {"name": "other", "service": "echo", "paths": ["/other"]},
            ],
            "consumers": [{"username": "alice"}, {"username": "bob"}],
            "plugins": [
                {
                    "name": "key-auth",
                    "route": "inspected",
                    "config": {"header_names": ["x-portal-key"], "query_param": "pk"},
                }
            ],
        }
        path = tmp / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {"PORTCULLIS_INSPECTOR_FLUSH_INTERVAL": "0.05"}
        with (
            gateway(tmp, path, extra_env=env) as gw,
            signed_in_owner(gw, "inspector@example.com") as admin,
            httpx.Client(base_url=gw.url, timeout=10) as proxy,
        ):
            yield Setup(gw, admin, proxy, _in_thread(_keys(gw.database_url)))


def _exchanges(admin: httpx.Client, route: str, capture: str) -> list[dict[str, Any]]:
    listed = admin.get(
        f"/admin/v1/routes/{route}/captures/{capture}/exchanges", params={"limit": 200}
    )
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


def _capture_until_recorded(s: Setup, route: str, path: str, **spec: Any) -> str:
    """Start a capture and send `path` requests until the worker recorded one (it learns
    of the capture on its next invalidation poll)."""
    started = s.admin.post(f"/admin/v1/routes/{route}/captures", json=spec)
    assert started.status_code == 201, started.text
    capture: str = started.json()["id"]
    headers = {"x-portal-key": s.keys["alice"]}

    def recorded() -> bool:
        assert s.proxy.get(path, headers=headers).status_code == 200
        return any(e["path"] == path for e in _exchanges(s.admin, route, capture))

    wait_until(recorded, timeout=15)
    return capture


async def _developer_paths(database_url: str, developer: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        who = Developer(developer, f"{developer}@example.com", developer, True, datetime.now(UTC))
        page = await DeveloperInspector(engine, _Portal()).exchanges(who)
        return [e.path for e in page.items]
    finally:
        await engine.dispose()


def _all_rows(database_url: str) -> list[str]:
    async def paths() -> list[str]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(select(CapturedExchangeRow.path))).scalars())
        finally:
            await engine.dispose()

    result: list[str] = _in_thread(paths())
    return result


def test_a_capture_records_redacted_exchanges_only_inside_its_time_box(setup: Setup) -> None:
    s = setup
    alice, bob = s.keys["alice"], s.keys["bob"]
    for i in range(3):
        before = s.proxy.post(f"/in/before-{i}", content=BODY, headers={"x-portal-key": alice})
        assert before.status_code == 200

    capture = _capture_until_recorded(s, "inspected", "/in/ready", duration_seconds=3)
    sent = s.proxy.post(
        "/in/orders",
        params={"pk": alice, "page": "2"},
        content=BODY,
        headers={
            "x-portal-key": alice,
            "authorization": "Basic dXNlcjpwYXNz",
            "cookie": "session=abc123",
            "content-type": "application/json",
        },
    )
    assert sent.status_code == 200
    assert s.proxy.get("/in/bob", headers={"x-portal-key": bob}).status_code == 200
    assert s.proxy.get("/in/anonymous").status_code == 401  # refused: captured too

    def three_more() -> bool:
        paths = {e["path"] for e in _exchanges(s.admin, "inspected", capture)}
        return {"/in/orders", "/in/bob", "/in/anonymous"} <= paths

    wait_until(three_more, timeout=10)
    items = {e["path"]: e for e in _exchanges(s.admin, "inspected", capture)}
    detail = s.admin.get(f"/admin/v1/inspector/exchanges/{items['/in/orders']['id']}")
    assert detail.status_code == 200, detail.text
    exchange = ExchangeOut.model_validate(detail.json())
    assert exchange.method == "POST"
    assert exchange.consumer == "alice"
    assert exchange.status == 200
    assert exchange.query == "pk=[redacted]&page=2"
    request_headers = dict(exchange.request_headers)
    assert request_headers["x-portal-key"] == "[redacted]"
    assert request_headers["authorization"] == "Basic [redacted]"
    assert request_headers["cookie"] == "[redacted]"
    assert request_headers["content-type"] == "application/json"
    assert alice not in detail.text  # key-auth hides the key from the upstream's echo too
    assert exchange.request_body is not None
    assert exchange.request_body.size == len(BODY)
    assert exchange.request_body.truncated
    assert exchange.request_body.data.encode() == BODY[:1024]
    assert exchange.response_body is not None
    assert exchange.response_body.truncated
    assert exchange.response_body.size == int(dict(exchange.response_headers)["content-length"])
    assert exchange.response_body.data.startswith('{"method": "POST"')
    assert items["/in/anonymous"]["status"] == 401
    assert items["/in/anonymous"]["consumer"] is None

    assert _in_thread(_developer_paths(s.gw.database_url, "dev-bob")) == ["/in/bob"]
    assert "/in/orders" in _in_thread(_developer_paths(s.gw.database_url, "dev-alice"))

    def over() -> bool:
        got = s.admin.get(f"/admin/v1/routes/inspected/captures/{capture}").json()
        return got["active"] is False

    wait_until(over, timeout=15)
    for i in range(3):
        after = s.proxy.post(f"/in/after-{i}", content=BODY, headers={"x-portal-key": alice})
        assert after.status_code == 200
    # The worker writes in order: once a later capture's request is stored, the requests
    # above would have been too, had they been recorded.
    _capture_until_recorded(s, "other", "/other/ready")
    paths = _all_rows(s.gw.database_url)
    assert not [p for p in paths if p.startswith(("/in/before", "/in/after"))], paths
    assert {"/in/orders", "/in/bob", "/in/anonymous", "/other/ready"} <= set(paths)
