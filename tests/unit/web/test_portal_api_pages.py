"""The portal's API pages in process (httpx ASGI transport, a migrated SQLite store with
the demo config, sessions and the portal's developer directory faked, the try-it
transport faked): catalogue and reference docs, try-it, usage JSON scoped to the
developer, webhook self-service, CSRF on every change."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from portcullis.analytics.log_queue import RequestLogWriter
from portcullis.identity.secrets import ServerSecret
from portcullis.model.loader import load_config_file
from portcullis.services.audit import AuditLog
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.portal_api import build_portal_api
from portcullis.services.portal_tryit import Outgoing, RawAnswer
from portcullis.services.state import AdminState
from portcullis.services.web_sessions import WebSession
from portcullis.settings import Settings
from portcullis.store.config_repository import ConfigRepository
from portcullis.web.app import build_web_apps
from support.records import make_record
from support.services import migrated_store

EXAMPLE = Path(__file__).parents[3] / "examples" / "gateway.yaml"
NOW = datetime.now(UTC)
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class App:
    consumer: str
    application: str
    team_id: str


@dataclass(frozen=True)
class Dev:
    id: str
    actor: str


class Directory:
    """The portal service's answers: dev-a owns demo-app (team-a), dev-b demo-guest."""

    apps = {
        "dev-a": [App("demo-app", "A's app", "team-a")],
        "dev-b": [App("demo-guest", "B's", "team-b")],
    }

    async def consumers_of(self, developer: Any) -> list[App]:
        return self.apps.get(developer.id, [])

    async def principal(self, developer_id: str) -> Dev | None:
        return Dev(developer_id, f"developer:{developer_id}@example.com")


@dataclass
class Portal:
    accounts: Directory = field(default_factory=Directory)
    apps: Directory = field(default_factory=Directory)


class Sessions:
    async def lookup(self, token: str | None, kind: str) -> WebSession | None:
        if token not in ("dev-a", "dev-b") or kind != "developer":
            return None
        return WebSession(
            f"s-{token}",
            kind,
            token,
            f"csrf-{token}-0123456789abcdef",
            NOW,
            NOW,
            NOW + timedelta(hours=1),
        )


class Transport:
    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def send(self, request: Outgoing, *, timeout: float, max_body: int) -> RawAnswer:
        self.sent.append(request)
        return RawAnswer(
            200,
            "OK",
            [("content-type", "application/json"), ("ratelimit", '"default";r=4;t=60')],
            b'[{"id":1}]',
            False,
            2.0,
        )


@pytest.fixture
async def portal(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, Transport]]:
    engine = await migrated_store(tmp_path)
    await ConfigRepository(engine).apply(load_config_file(EXAMPLE), author="test", comment=None)
    # The live window is the 5 minutes before the page's request, by the real clock: the
    # record is written 20 s before now (not before the module's import, which the whole
    # suite can leave more than 5 minutes behind).
    at = datetime.now(UTC).timestamp() - 20
    await RequestLogWriter(engine, "n1").write(
        [
            make_record(1, consumer="demo-app", started_at=at),
            make_record(2, consumer="demo-guest", started_at=at),
        ]
    )
    settings = Settings(
        database_url="sqlite+aiosqlite://", webhook_allowed_networks=["127.0.0.0/8"]
    )
    state = AdminState(
        settings,
        engine,
        ConfigEditor(ConfigRepository(engine)),
        AuditLog(engine),
        ServerSecret.from_secret(b"s" * 32),
        portal=Portal(),  # type: ignore[arg-type]
    )
    sessions = Sessions()
    apps = build_web_apps(lambda name: {"admin": state, "web_sessions": sessions}[name])
    app = apps["/portal"]
    transport = Transport()
    app.state.portal_api = build_portal_api(state, transport=transport)
    yield app, transport
    await engine.dispose()


def _client(app: FastAPI, developer: str | None = None) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, root_path="/portal"),
        base_url="http://web.test/portal",
    )
    if developer:
        client.cookies.set("pc_portal", developer)
    return client


async def test_catalogue_and_reference_docs_signed_out(portal: tuple[FastAPI, Transport]) -> None:
    app, _ = portal
    async with _client(app) as c:
        listing = await c.get("/apis")
        assert listing.status_code == 200
        assert "Demo API" in listing.text
        assert "default-src 'self'" in listing.headers["content-security-policy"]
        partial = await c.get(
            "/apis", params={"q": "nothing-like-it"}, headers={"hx-request": "true"}
        )
        assert partial.text.lstrip().startswith('<div id="api-list"')
        assert "No API matches" in partial.text
        docs = await c.get("/apis/demo/v2")
        assert docs.status_code == 200
        assert 'id="op-listItems"' in docs.text
        assert "VersionCard" not in docs.text
        assert "http://127.0.0.1:8000/v2" in docs.text
        assert "try?api=demo&amp;version=v2&amp;op=op-getItem" in docs.text
        v1 = await c.get("/apis/demo")
        assert "Deprecated since 2026-11-01" in v1.text
        assert (await c.get("/apis/nope")).status_code == 404
        for html in (listing.text, docs.text):
            assert not re.search(r'(src|href)="(https?:)?//', html)
        assert (await c.get("/try")).status_code == 303


async def test_try_it_sends_through_the_gateway_with_csrf(
    portal: tuple[FastAPI, Transport],
) -> None:
    app, transport = portal
    async with _client(app, "dev-a") as c:
        page = await c.get("/try", params={"api": "demo", "version": "v2", "op": "op-listItems"})
        assert page.status_code == 200
        assert 'value="/v2/items"' in page.text
        create = await c.get("/try", params={"api": "demo", "version": "v2", "op": "op-createItem"})
        assert "Content-Type: application/json" in create.text
        assert "&#34;name&#34;" in create.text
        token = _TOKEN.search(page.text)
        assert token is not None
        form = {
            "api": "demo",
            "version": "v2",
            "method": "GET",
            "path": "/v2/items",
            "key": "pc_dev_secret_key_123456",
        }
        headers = {"hx-request": "true", "origin": "http://web.test"}
        assert (await c.post("/try", data=form, headers=headers)).status_code == 403
        answer = await c.post("/try", data={**form, "csrf_token": token.group(1)}, headers=headers)
        assert answer.status_code == 200
        assert 'data-tryit-state="answered"' in answer.text
        assert 'data-status="200"' in answer.text
        assert "pc_dev_secret_key_123456" not in answer.text
        assert transport.sent[-1].url == "http://127.0.0.1:8000/v2/items"
        refused = await c.post(
            "/try",
            data={**form, "path": "/v1/items", "csrf_token": token.group(1)},
            headers=headers,
        )
        assert 'data-tryit-state="refused"' in refused.text
        assert "#/path" in refused.text
        assert len(transport.sent) == 1


async def test_usage_is_the_developers_own(portal: tuple[FastAPI, Transport]) -> None:
    app, _ = portal
    async with _client(app, "dev-a") as a, _client(app, "dev-b") as b:
        mine = (await a.get("/usage.json")).json()
        assert [x["app"] for x in mine["apps"]] == ["demo-app"]
        assert mine["apps"][0]["totals"]["requests"] == 1
        theirs = (await b.get("/usage.json")).json()
        assert [x["app"] for x in theirs["apps"]] == ["demo-guest"]
        page = await a.get("/usage")
        assert page.status_code == 200
        assert 'data-app="demo-app"' in page.text
        assert "demo-guest" not in page.text
    async with _client(app) as anonymous:
        assert (await anonymous.get("/usage.json")).status_code == 303


async def test_webhook_self_service_is_scoped_to_the_team(
    portal: tuple[FastAPI, Transport],
) -> None:
    app, _ = portal
    async with _client(app, "dev-a") as a, _client(app, "dev-b") as b:
        page = await a.get("/webhooks")
        token = _TOKEN.search(page.text)
        assert token is not None
        made = await a.post(
            "/webhooks",
            data={
                "csrf_token": token.group(1),
                "app": "demo-app",
                "url": "https://127.0.0.1:9/hooks",
                "event_types": ["key.*", "quota.threshold_reached"],
            },
            headers={"origin": "http://web.test"},
        )
        assert made.status_code == 201, made.text
        assert "whsec_" in made.text
        assert made.headers["cache-control"] == "no-store"
        endpoint = re.search(r'/portal/webhooks/(ep_[0-9a-z]+)"', made.text)
        assert endpoint is not None
        again = await a.get("/webhooks")
        assert "whsec_" not in again.text
        assert endpoint.group(1) in again.text
        assert (await b.get(f"/webhooks/{endpoint.group(1)}")).status_code == 404
        assert endpoint.group(1) not in (await b.get("/webhooks")).text
        detail = await a.get(f"/webhooks/{endpoint.group(1)}")
        assert detail.status_code == 200
        tested = await a.post(
            f"/webhooks/{endpoint.group(1)}/test",
            data={"csrf_token": token.group(1)},
            headers={"origin": "http://web.test"},
        )
        assert tested.status_code == 303
        detail = await a.get(f"/webhooks/{endpoint.group(1)}")
        assert "webhook.test" in detail.text
