"""acl: allow/deny by consumer group, required scopes with a precise 403, 401 without a
consumer, the groups header, and its place in the chain after the auth plugins."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, cast

import pytest

from portcullis.identity.consumers import ConsumerInfo
from portcullis.model.config import Consumer
from portcullis.model.plugins.registry import validate_plugin
from portcullis.plugins.acl import Acl
from portcullis.plugins.base import PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.registry import PLUGINS, build_plugin

STAFF = ConsumerInfo.of(Consumer(username="alice", groups=["staff", "beta"]))
PARTNER = ConsumerInfo.of(Consumer(username="bob", groups=["partners"]))
LONER = ConsumerInfo.of(Consumer(username="carol"))


def acl(**config: Any) -> Acl:
    plugin = build_plugin("acl", config, PluginEnv())
    assert isinstance(plugin, Acl)
    return plugin


def context(consumer: ConsumerInfo | None, scopes: Iterable[str] = ()) -> RequestContext:
    upstream = [(b"host", b"api.test")]
    if consumer is not None:
        upstream += list(consumer.upstream_headers)
    ctx = RequestContext(
        {"type": "http", "headers": [(b"host", b"api.test")]},
        cast(Any, None),
        "GET",
        "/",
        "127.0.0.1",
        "rid",
        None,
        upstream,
    )
    ctx.consumer = consumer
    ctx.scopes = frozenset(scopes)
    return ctx


def refused(reply: PluginResponse | None, status: int) -> dict[str, Any]:
    assert reply is not None
    assert reply.status == status
    assert (b"content-type", b"application/problem+json") in reply.headers
    body: dict[str, Any] = json.loads(reply.body)
    assert body["status"] == status
    return body


def test_registered_and_ordered_after_auth_and_before_limits() -> None:
    assert PLUGINS["acl"] is Acl
    assert Acl.priority < PLUGINS["key-auth"].priority
    # Authorization is decided before body-size and traffic-control plugins.
    assert Acl.priority > PLUGINS["request-size-limit"].priority


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"allow": ["a"], "deny": ["b"]}, "not both"),
        ({}, "set allow, deny or required_scopes"),
        ({"required_scopes": ["has space"]}, "pattern"),
        ({"allow": ["bad group!"]}, "pattern"),
        ({"deny": ["x"], "realm": 'q"'}, "pattern"),
    ],
)
def test_config_errors(config: dict[str, Any], error: str) -> None:
    errors = validate_plugin("acl", config)
    assert len(errors) == 1
    assert error in errors[0]


@pytest.mark.parametrize(("consumer", "allowed"), [(STAFF, True), (PARTNER, False), (LONER, False)])
async def test_allow_list(consumer: ConsumerInfo, allowed: bool) -> None:
    reply = await acl(allow=["staff", "ops"]).access(context(consumer))
    if allowed:
        assert reply is None
    else:
        body = refused(reply, 403)
        assert body["type"] == "https://portcullis.dev/problems/forbidden"
        assert "staff" not in body["detail"]  # the policy's groups are not disclosed


@pytest.mark.parametrize(("consumer", "allowed"), [(STAFF, False), (PARTNER, True), (LONER, True)])
async def test_deny_list(consumer: ConsumerInfo, allowed: bool) -> None:
    reply = await acl(deny=["beta"]).access(context(consumer))
    assert (reply is None) is allowed
    if reply is not None:
        refused(reply, 403)


async def test_missing_scopes_are_listed_in_detail_member_and_challenge() -> None:
    plugin = acl(required_scopes=["orders:read", "orders:write", "admin"])
    reply = await plugin.access(context(STAFF, {"orders:read"}))
    body = refused(reply, 403)
    assert body["type"] == "https://portcullis.dev/problems/insufficient-scope"
    assert body["missing_scopes"] == ["admin", "orders:write"]
    assert "admin, orders:write" in body["detail"]
    assert reply is not None
    assert (
        b"www-authenticate",
        b'Bearer realm="portcullis", error="insufficient_scope", '
        b'scope="admin orders:read orders:write"',
    ) in reply.headers
    # A different shortfall gets its own answer (the memo is per missing set).
    body = refused(await plugin.access(context(STAFF, {"admin", "orders:write"})), 403)
    assert body["missing_scopes"] == ["orders:read"]
    assert "scope: orders:read" in body["detail"]
    assert (
        await plugin.access(context(STAFF, {"admin", "orders:read", "orders:write", "x"})) is None
    )


async def test_groups_are_checked_before_scopes() -> None:
    reply = await acl(allow=["staff"], required_scopes=["s"]).access(context(PARTNER, {"s"}))
    assert refused(reply, 403)["type"].endswith("/forbidden")
    reply = await acl(allow=["staff"], required_scopes=["s"]).access(context(STAFF))
    assert refused(reply, 403)["type"].endswith("/insufficient-scope")


async def test_no_consumer_is_401_with_a_challenge() -> None:
    reply = await acl(allow=["staff"], realm="shop").access(context(None))
    body = refused(reply, 401)
    assert body["type"] == "https://portcullis.dev/problems/unauthorized"
    assert reply is not None
    assert (b"www-authenticate", b'Bearer realm="shop"') in reply.headers


async def test_hide_groups_header_removes_only_the_groups() -> None:
    ctx = context(STAFF)
    assert await acl(allow=["staff"], hide_groups_header=True).access(ctx) is None
    names = [n for n, _ in ctx.upstream_headers]
    assert b"x-consumer-groups" not in names
    assert b"x-consumer-id" in names
    ctx = context(STAFF)
    assert await acl(allow=["staff"]).access(ctx) is None
    assert (b"x-consumer-groups", b"staff, beta") in ctx.upstream_headers
