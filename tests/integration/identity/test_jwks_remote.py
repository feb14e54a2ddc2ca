"""JwksRegistry and jwt-auth against a real JWKS endpoint (aiohttp server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import get_default_algorithms

from portcullis.identity.consumers import ConsumerIndex
from portcullis.identity.jwks import JwksPolicy, JwksRegistry, JwksUnavailableError
from portcullis.model.config import Consumer
from portcullis.model.plugins.jwt_auth import JwtAuthConfig
from portcullis.plugins.base import RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.jwt_auth import JwtAuth
from support.clock import ManualClock
from support.servers import free_port


@dataclass
class Signer:
    kid: str
    private: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def jwk(self) -> dict[str, Any]:
        data = get_default_algorithms()["RS256"].to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def token(self, **claims: Any) -> str:
        body = {"sub": "alice", "exp": time.time() + 300, **claims}
        return jwt.encode(body, self.private, algorithm="RS256", headers={"kid": self.kid})


@dataclass
class JwksServer:
    """A JWKS endpoint whose answer the test controls; counts requests."""

    url: str = ""
    keys: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    cache_control: str | None = None
    delay: float = 0.0
    gzip: bool = False
    raw: bytes | None = None
    hits: int = 0
    # Set at teardown, so that a delayed answer never holds the server's shutdown.
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), self.delay)
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        body = self.raw if self.raw is not None else json.dumps({"keys": self.keys}).encode()
        headers = {"content-type": "application/jwk-set+json"}
        if self.cache_control:
            headers["cache-control"] = self.cache_control
        if self.gzip:
            body = gzip.compress(body)
            headers["content-encoding"] = "gzip"
        return web.Response(body=body, headers=headers)


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    state = JwksServer()
    app = web.Application()
    app.router.add_get("/jwks.json", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    state.url = f"http://127.0.0.1:{port}/jwks.json"
    try:
        yield state
    finally:
        state.released.set()
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # Like the data plane's session: no automatic decompression.
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        yield s


async def settle() -> None:
    """Let background refresh tasks run to completion."""
    for _ in range(50):
        await asyncio.sleep(0.01)


async def test_fetch_cache_and_max_age(server: JwksServer, session: aiohttp.ClientSession) -> None:
    a = Signer("a")
    server.keys = [a.jwk()]
    server.cache_control = "public, max-age=120"
    clock = ManualClock()
    registry = JwksRegistry(session, clock=clock)
    source = registry.source(server.url)
    keys = await source.get("a")
    assert [k.kid for k in keys] == ["a"]
    assert source.expires_at - source.fetched_at == 120
    for _ in range(5):
        assert await source.get("a")
    assert server.hits == 1
    await registry.aclose()


async def test_kid_rotation_is_picked_up(
    server: JwksServer, session: aiohttp.ClientSession
) -> None:
    a, b = Signer("a"), Signer("b")
    server.keys = [a.jwk()]
    clock = ManualClock()
    registry = JwksRegistry(session, clock=clock)
    source = registry.source(server.url, JwksPolicy(refetch_interval=5))
    assert await source.get("a")
    # The provider rotates: b replaces a.
    server.keys = [b.jwk()]
    clock.now += 6
    assert [k.kid for k in await source.get("b")] == ["b"]
    assert server.hits == 2
    assert await source.get("a") == ()
    await registry.aclose()


async def test_unknown_kid_refetch_is_rate_limited(
    server: JwksServer, session: aiohttp.ClientSession
) -> None:
    server.keys = [Signer("a").jwk()]
    clock = ManualClock()
    registry = JwksRegistry(session, clock=clock)
    source = registry.source(server.url, JwksPolicy(refetch_interval=10))
    assert await source.get("a")
    for i in range(20):
        assert await source.get(f"made-up-{i}") == ()
    assert server.hits == 1  # the initial fetch counts as the last attempt
    clock.now += 10
    assert await source.get("made-up") == ()
    assert await source.get("made-up") == ()
    assert server.hits == 2
    await registry.aclose()


async def test_concurrent_lookups_share_one_fetch(
    server: JwksServer, session: aiohttp.ClientSession
) -> None:
    server.keys = [Signer("a").jwk()]
    server.delay = 0.2
    registry = JwksRegistry(session)
    source = registry.source(server.url)
    results = await asyncio.gather(*(source.get("a") for _ in range(25)))
    assert all(len(r) == 1 for r in results)
    assert server.hits == 1
    await registry.aclose()


async def test_a_cancelled_waiter_does_not_cancel_the_fetch(
    server: JwksServer, session: aiohttp.ClientSession
) -> None:
    server.keys = [Signer("a").jwk()]
    server.delay = 0.2
    registry = JwksRegistry(session)
    source = registry.source(server.url)
    first = asyncio.create_task(source.get("a"))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(source.get("a"))
    await asyncio.sleep(0.01)
    first.cancel()
    assert len(await second) == 1
    assert server.hits == 1
    await registry.aclose()


async def test_outage_keeps_serving_the_last_good_set(
    server: JwksServer, session: aiohttp.ClientSession
) -> None:
    server.keys = [Signer("a").jwk()]
    server.cache_control = "max-age=60"
    clock = ManualClock()
    registry = JwksRegistry(session, clock=clock)
    source = registry.source(server.url, JwksPolicy(min_ttl=60, refetch_interval=5))
    assert await source.get("a")
    server.status = 503
    clock.now += 61  # stale: the lookup answers from cache and refreshes in the background
    assert await source.get("a")
    await settle()
    assert server.hits == 2
    assert source.last_error == "HTTP 503"
    assert await source.get("a")  # still the last good key
    # Unknown kids during the outage: at most one attempt per refetch interval.
    clock.now += 5
    assert await source.get("zzz") == ()
    assert await source.get("zzz") == ()
    await settle()
    assert server.hits == 3
    # Recovery: the next refresh replaces the set and clears the error.
    server.status = 200
    server.keys = [Signer("c").jwk()]
    clock.now += 5
    assert [k.kid for k in await source.get("c")] == ["c"]
    assert not source.last_error
    await registry.aclose()


async def test_stale_set_is_refreshed_in_the_background(
    server: JwksServer, session: aiohttp.ClientSession
) -> None:
    a = Signer("a")
    server.keys = [a.jwk()]
    clock = ManualClock()
    registry = JwksRegistry(session, clock=clock)
    source = registry.source(server.url, JwksPolicy(min_ttl=1, default_ttl=1))
    assert await source.get("a")
    server.keys = [a.jwk(), Signer("b").jwk()]
    clock.now += 15
    assert await source.get("a")  # answered at once from the stale set
    await settle()
    assert server.hits == 2
    assert set(source.keyset.by_kid if source.keyset else ()) == {"a", "b"}
    await registry.aclose()


async def test_never_fetched_source_is_unavailable(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}/jwks.json"  # nothing listens there
    registry = JwksRegistry(session)
    source = registry.source(url, JwksPolicy(timeout=2))
    with pytest.raises(JwksUnavailableError):
        await source.get("a")
    assert source.last_error
    await registry.aclose()


@pytest.mark.parametrize(
    ("status", "raw", "error"),
    [
        (404, None, "HTTP 404"),
        (200, b"<html>", "Expecting value"),
        (200, b'{"keys": []}', "no usable signature key"),
        (200, b" " * (600 * 1024), "larger than"),
    ],
)
async def test_bad_documents_are_reported(
    server: JwksServer,
    session: aiohttp.ClientSession,
    status: int,
    raw: bytes | None,
    error: str,
) -> None:
    server.status = status
    server.raw = raw
    registry = JwksRegistry(session)
    source = registry.source(server.url)
    with pytest.raises(JwksUnavailableError, match=error):
        await source.get("a")
    await registry.aclose()


async def test_gzip_documents(server: JwksServer, session: aiohttp.ClientSession) -> None:
    server.keys = [Signer("a").jwk()]
    server.gzip = True
    registry = JwksRegistry(session)
    assert await registry.get(server.url, "a")
    await registry.aclose()


async def test_aclose_cancels_background_refresh(
    server: JwksServer, session: aiohttp.ClientSession
) -> None:
    server.keys = [Signer("a").jwk()]
    registry = JwksRegistry(session)
    registry.source(server.url)
    server.delay = 30
    registry.prefetch(server.url)
    await asyncio.sleep(0.1)
    assert server.hits == 1
    started = time.monotonic()
    await registry.aclose()
    assert time.monotonic() - started < 1
    assert not registry.source(server.url).ready


# -- through the plugin --------------------------------------------------------------


def ctx_for(token: str) -> RequestContext:
    headers = [(b"authorization", f"Bearer {token}".encode())]
    scope: dict[str, Any] = {"type": "http", "headers": headers, "query_string": b""}
    return RequestContext(scope, cast(Any, None), "GET", "/", "127.0.0.1", "r", None, headers)


def plugin_for(registry: JwksRegistry, url: str, **jwks: Any) -> JwtAuth:
    config = JwtAuthConfig.model_validate(
        {
            "gateway_tokens": False,
            "jwks": [{"url": url, "algorithms": ["RS256"], **jwks}],
        }
    )
    env = PluginEnv(consumers=ConsumerIndex([Consumer(username="alice")]), jwks=registry)
    return JwtAuth(config, env)


async def test_plugin_follows_rotation_and_survives_outage(
    server: JwksServer, session: aiohttp.ClientSession
) -> None:
    a, b = Signer("a"), Signer("b")
    server.keys = [a.jwk()]
    registry = JwksRegistry(session)
    plugin = plugin_for(registry, server.url, refetch_interval=0)
    await settle()  # the plugin prefetched the set when it was built
    assert server.hits == 1
    assert await plugin.access(ctx_for(a.token())) is None
    server.keys = [b.jwk()]
    assert await plugin.access(ctx_for(b.token())) is None
    assert server.hits == 2
    server.status = 500
    assert await plugin.access(ctx_for(b.token(n=1))) is None
    reply = await plugin.access(ctx_for(a.token()))  # a is gone from the set
    assert reply is not None
    assert reply.status == 401
    assert b'error_description="unknown kid"' in dict(reply.headers)[b"www-authenticate"]
    await registry.aclose()


async def test_plugin_answers_503_when_the_set_was_never_fetched(
    session: aiohttp.ClientSession,
) -> None:
    registry = JwksRegistry(session)
    plugin = plugin_for(registry, f"http://127.0.0.1:{free_port()}/jwks.json", timeout=2)
    reply = await plugin.access(ctx_for(Signer("a").token()))
    assert reply is not None
    assert reply.status == 503
    body = json.loads(reply.body)
    assert body["type"] == "https://portcullis.dev/problems/credentials-unavailable"
    assert dict(reply.headers)[b"retry-after"]
    await registry.aclose()
