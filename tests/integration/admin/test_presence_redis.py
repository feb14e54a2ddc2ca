"""Presence across nodes with a real Redis: in process (two hubs, as two nodes: join,
leave, and the entries of a node that died expiring), and end to end with two control-plane
processes (granian) sharing one store and one Redis, driven by the `websockets` client."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
from test_event_stream import signed_in
from websockets.asyncio.client import connect

from portcullis.redis_client import SharedRedis
from portcullis.services.config_editor import ConfigState
from portcullis.services.rbac import ALL_PERMISSIONS, Caller, Role
from portcullis.services.scoping import OrgScope
from portcullis.services.streams.presence import (
    EntityTags,
    PresenceHub,
    PresenceWatcher,
    RedisPresence,
)
from support.redis import RedisServer
from support.servers import ControlPlane, control_plane


class EveryEntity(EntityTags):
    """Every resource exists, with one ETag (no config needed here)."""

    def __init__(self) -> None:
        pass

    async def current(self) -> ConfigState:
        return cast(ConfigState, None)

    def etag(self, current: ConfigState, resource: str, scope: OrgScope) -> str | None:
        return '"e"'


class Inbox:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.arrived.set()

    async def members(self, sessions: list[str]) -> None:
        """Wait until the last presence pushed lists exactly `sessions`."""
        async with asyncio.timeout(10):
            while (
                not self.messages
                or [m["session"] for m in self.messages[-1]["members"]] != sessions
            ):
                self.arrived.clear()
                await self.arrived.wait()


def node(redis_server: RedisServer, prefix: str, ttl: float) -> tuple[PresenceHub, SharedRedis]:
    redis = SharedRedis.connect(redis_server.url, timeout=2.0)
    store = RedisPresence(redis, prefix=prefix, ttl=ttl)
    return PresenceHub(store, EveryEntity(), ttl=ttl), redis


def admin(session: str, inbox: Inbox) -> PresenceWatcher:
    caller = Caller(f"user:{session}@example.com", Role.ADMIN, ALL_PERMISSIONS)
    return PresenceWatcher(session, caller, OrgScope(), inbox)


async def test_presence_entries_reach_every_node_and_a_dead_nodes_expire(
    redis_server: RedisServer,
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    one, redis_one = node(redis_server, prefix, ttl=0.9)
    two, redis_two = node(redis_server, prefix, ttl=0.9)
    try:
        await one.start()
        await two.start()
        alice, bob = Inbox(), Inbox()
        await one.join(admin("alice", alice), "route:pay", "viewing")
        await two.join(admin("bob", bob), "route:pay", "editing")
        await alice.members(["alice", "bob"])  # over Redis pub/sub
        await two.leave("bob", "route:pay")
        await alice.members(["alice"])
        await two.join(admin("bob", bob), "route:pay", "editing")
        await alice.members(["alice", "bob"])
        # Node two dies: its entries are not removed, nor refreshed any more.
        await two.halt()
        await two.store.close()
        await alice.members(["alice"])  # expired after ttl; node one's rounds notice
    finally:
        await one.stop()
        await two.stop()
        await redis_one.aclose()
        await redis_two.aclose()


@pytest.fixture(scope="module")
def planes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ControlPlane, ControlPlane]]:
    """Two control-plane processes on one store (SQLite) and one Redis."""
    redis: RedisServer = request.getfixturevalue("redis_server")
    path = tmp_path_factory.mktemp("presence") / "admin.db"
    shutil.copyfile(request.getfixturevalue("migrated_template"), path)
    env = {"PORTCULLIS_REDIS_URL": redis.url, "PORTCULLIS_PRESENCE_TTL": "1.5"}
    url = f"sqlite+aiosqlite:///{path}"
    with control_plane(url, env=env) as one, control_plane(url, env=env) as two:
        yield one, two


async def recv(ws: Any, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] == kind:
                return message


async def test_presence_across_two_control_plane_processes(
    planes: tuple[ControlPlane, ControlPlane],
) -> None:
    one, two = planes
    alice = await signed_in(one, "alice@example.com")
    bob = await signed_in(two, "bob@example.com")
    headers = {"authorization": f"Bearer {alice}"}
    async with httpx.AsyncClient(base_url=one.url, headers=headers, timeout=10) as rest:
        created = await rest.post(
            "/admin/v1/services", json={"name": "shared", "url": "http://127.0.0.1:9"}
        )
        assert created.status_code == 201, created.text

    def url(plane: ControlPlane) -> str:
        return plane.url.replace("http://", "ws://") + "/admin/v1/ws"

    async with (
        connect(url(one), additional_headers={"authorization": f"Bearer {alice}"}) as a,
        connect(url(two), additional_headers={"authorization": f"Bearer {bob}"}) as b,
    ):
        await a.send(json.dumps({"type": "presence.join", "resource": "service:shared"}))
        await recv(a, "presence")
        await b.send(
            json.dumps({"type": "presence.join", "resource": "service:shared", "state": "editing"})
        )
        both = await recv(a, "presence")
        b.transport.abort()
        left = await recv(a, "presence")
    assert [(m["actor"], m["state"]) for m in both["members"]] == [
        ("user:alice@example.com", "viewing"),
        ("user:bob@example.com", "editing"),
    ]
    assert [m["actor"] for m in left["members"]] == ["user:alice@example.com"]
