"""response-cache end to end: `portcullis serve` (2 workers) with the memory and the Redis
backend, in front of an upstream in this process that counts the requests it gets.

Proves, for each backend: a miss then a hit with the identical body and one upstream
call; `no-store` responses are never served from the cache; `Vary` keeps variants
apart; one consumer's response is never served to another; HEAD is answered from a
GET's entry; and a purge through the admin API (all, by route, by path) empties
the cache of every worker, within 1 s for the workers' memory caches (measured).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from portcullis.identity.key_admin import KeySpec
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.secrets import load_server_secret
from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.store.engine import create_engine
from support.admin_session import TEST_PASSWORD_HASHER
from support.redis import RedisServer
from support.servers import Gateway, gateway

PASSWORD = "cache purge password"
# New connections in a row that, with 2 workers, all but surely reached both (2e-6).
STREAK = 20


class Upstream:
    """A tiny HTTP/1.1 origin: counts requests per path and answers per path.

    Bodies carry the per-path request number, so each stored copy is recognisable.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                path = self.path.partition("?")[0]
                with upstream.lock:
                    upstream.calls[path] += 1
                    n = upstream.calls[path]
                headers = {"Content-Type": "application/json"}
                payload: dict[str, Any] = {"path": path, "n": n}
                if path.endswith("/nostore"):
                    headers["Cache-Control"] = "no-store"
                elif path.endswith("/vary"):
                    headers["Vary"] = "Accept-Language"
                    payload["lang"] = self.headers.get("Accept-Language")
                elif path.endswith("/me"):
                    payload["consumer"] = self.headers.get("X-Consumer-Name")
                elif path.endswith("/site"):
                    # What an app builds absolute links from, and what would rewrite its path.
                    payload["host"] = self.headers.get("X-Forwarded-Host")
                    payload["overrides"] = sorted(
                        name.lower()
                        for name in self.headers
                        if name.lower() in {"x-original-url", "x-rewrite-url", "x-host"}
                    )
                body = json.dumps(payload).encode()
                self.send_response(200)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def count(self, path: str) -> int:
        with self.lock:
            return self.calls[path]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    origin = Upstream()
    origin.thread.start()
    try:
        yield origin
    finally:
        origin.server.shutdown()
        origin.server.server_close()


def gateway_config(port: int) -> dict[str, Any]:
    return {
        "services": [{"name": "origin", "url": f"http://127.0.0.1:{port}"}],
        "routes": [
            {"name": "open", "service": "origin", "paths": ["/open"], "strip_path": False},
            {"name": "other", "service": "origin", "paths": ["/other"], "strip_path": False},
            {"name": "keyed", "service": "origin", "paths": ["/keyed"], "strip_path": False},
            {
                "name": "sites",
                "service": "origin",
                "hosts": ["a.test", "b.test", "*.multi.test"],
                "paths": ["/sites"],
                "strip_path": False,
            },
        ],
        "consumers": [{"username": "alice"}, {"username": "bob"}],
        "plugins": [
            {"name": "response-cache", "route": "open", "config": {"ttl": 300}},
            {"name": "response-cache", "route": "other", "config": {"ttl": 300}},
            {"name": "key-auth", "route": "keyed", "config": {}},
            {"name": "response-cache", "route": "keyed", "config": {"ttl": 300}},
            {"name": "response-cache", "route": "sites", "config": {"ttl": 300}},
        ],
    }


@dataclass
class Setup:
    gw: Gateway
    backend: str
    admin: httpx.Client
    keys: dict[str, str]
    # Opens a new connection per request (no keep-alive), so each may reach either worker.
    fresh: httpx.Client


async def _prepare(gw: Gateway) -> dict[str, str]:
    """An owner to sign in with, and one API key each for alice and bob."""
    engine = create_engine(gw.database_url)
    try:
        await AuthService(engine, hasher=TEST_PASSWORD_HASHER).create_user(
            "cache@example.com", PASSWORD, Role.OWNER
        )
        secret = load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
        repo = KeyRepository(engine, secret)
        keys = {}
        for consumer in ("alice", "bob"):
            created = await repo.create(
                consumer, KeySpec(name=f"cache-{consumer}"), created_by="test", organization=None
            )
            keys[consumer] = created.key
        return keys
    finally:
        await engine.dispose()


@pytest.fixture(scope="module", params=["memory", "redis"])
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[Setup]:
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(f"cache-{backend}")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(gateway_config(upstream.port)))
    env = {"PORTCULLIS_CACHE_BACKEND": backend}
    if backend == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        env["PORTCULLIS_REDIS_URL"] = redis.url
        env["PORTCULLIS_CACHE_KEY_PREFIX"] = f"pc:cache:{uuid.uuid4().hex[:8]}:"
    with gateway(tmp, cfg, workers=2, extra_env=env) as gw, contextlib.ExitStack() as stack:
        keys = asyncio.run(_prepare(gw))
        admin = stack.enter_context(httpx.Client(base_url=gw.admin_url, timeout=10))
        login = admin.post(
            "/admin/v1/auth/login", json={"email": "cache@example.com", "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        admin.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        fresh = stack.enter_context(
            httpx.Client(
                base_url=gw.url, timeout=5, limits=httpx.Limits(max_keepalive_connections=0)
            )
        )
        yield Setup(gw, backend, admin, keys, fresh)


def unique(prefix: str) -> str:
    """A path no other test (or backend run) has cached."""
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def test_miss_then_hit_with_the_identical_body(setup: Setup, upstream: Upstream) -> None:
    path = unique("/open")
    with httpx.Client(base_url=setup.gw.url, timeout=5) as client:
        first = client.get(path, params={"b": "2", "a": "1"})
        second = client.get(path, params={"a": "1", "b": "2"})  # same query, other order
    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert second.content == first.content
    assert second.headers["content-type"] == "application/json"
    assert int(second.headers["content-length"]) == len(second.content)
    assert int(second.headers["age"]) >= 0
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert upstream.count(path) == 1


def test_head_is_answered_from_the_get_entry(setup: Setup, upstream: Upstream) -> None:
    path = unique("/open")
    with httpx.Client(base_url=setup.gw.url, timeout=5) as client:
        assert client.get(path).headers["x-cache"] == "MISS"
        head = client.head(path)
    assert head.status_code == 200
    assert head.headers["x-cache"] == "HIT"
    assert head.content == b""
    assert upstream.count(path) == 1


def test_no_store_responses_are_never_served_from_the_cache(
    setup: Setup, upstream: Upstream
) -> None:
    path = unique("/open") + "/nostore"
    with httpx.Client(base_url=setup.gw.url, timeout=5) as client:
        bodies = [client.get(path) for _ in range(3)]
    assert [r.headers["x-cache"] for r in bodies] == ["MISS"] * 3
    assert [r.json()["n"] for r in bodies] == [1, 2, 3]
    assert upstream.count(path) == 3


def test_vary_keeps_variants_apart(setup: Setup, upstream: Upstream) -> None:
    path = unique("/open") + "/vary"
    with httpx.Client(base_url=setup.gw.url, timeout=5) as client:

        def get(lang: str) -> httpx.Response:
            return client.get(path, headers={"accept-language": lang})

        en1, en2, fr1, fr2, en3 = get("en"), get("en"), get("fr"), get("fr"), get("en")
    assert [r.headers["x-cache"] for r in (en1, en2, fr1, fr2, en3)] == [
        "MISS",
        "HIT",
        "MISS",
        "HIT",
        "HIT",
    ]
    assert en2.json() == en1.json() == en3.json() == {"path": path, "n": 1, "lang": "en"}
    assert fr2.json() == fr1.json() == {"path": path, "n": 2, "lang": "fr"}
    assert upstream.count(path) == 2


def test_one_consumers_response_is_never_served_to_another(
    setup: Setup, upstream: Upstream
) -> None:
    path = unique("/keyed") + "/me"
    with httpx.Client(base_url=setup.gw.url, timeout=5) as client:

        def get(who: str) -> httpx.Response:
            return client.get(path, headers={"x-api-key": setup.keys[who]})

        alice1, alice2, bob1, bob2 = get("alice"), get("alice"), get("bob"), get("bob")
        anonymous = client.get(path)
    assert (alice1.headers["x-cache"], alice2.headers["x-cache"]) == ("MISS", "HIT")
    assert (bob1.headers["x-cache"], bob2.headers["x-cache"]) == ("MISS", "HIT")
    assert alice1.json()["consumer"] == alice2.json()["consumer"] == "alice"
    assert bob1.json()["consumer"] == bob2.json()["consumer"] == "bob"
    assert anonymous.status_code == 401  # key-auth runs before the cache: no key, no entry
    assert upstream.count(path) == 2


@pytest.mark.parametrize("prefix", ["/sites", "/open"])
def test_a_response_cached_for_one_host_is_never_served_to_another(
    setup: Setup, upstream: Upstream, prefix: str
) -> None:
    """On a route with several hosts, and on one that matches any host."""
    path = unique(prefix) + "/site"
    with httpx.Client(base_url=setup.gw.url, timeout=5) as client:

        def get(host: str) -> httpx.Response:
            response = client.get(path, headers={"host": host})
            assert response.status_code == 200, response.text
            return response

        if prefix == "/sites":
            hosts = ["a.test", "b.test", "x.multi.test"]
        else:
            hosts = ["evil.example", "good.example"]
        first = {host: get(host) for host in hosts}
        again = {host: get(host) for host in hosts}
        # The same origin spelled otherwise shares the entry (case, default port).
        spelled = get(hosts[-1].upper() + ":80")
    for host in hosts:
        assert first[host].headers["x-cache"] == "MISS", host
        assert first[host].json()["host"] == host
        assert again[host].headers["x-cache"] == "HIT", host
        assert again[host].json() == first[host].json()
    assert spelled.headers["x-cache"] == "HIT"
    assert spelled.json()["host"] == hosts[-1]
    assert upstream.count(path) == len(hosts)


def test_unkeyed_override_headers_are_not_forwarded_on_a_cached_route(
    setup: Setup, upstream: Upstream
) -> None:
    path = unique("/open") + "/site"
    overrides = {"x-original-url": "/admin", "x-rewrite-url": "/admin", "x-host": "evil.example"}
    with httpx.Client(base_url=setup.gw.url, timeout=5) as client:
        poisoned = client.get(path, headers=overrides)
        plain = client.get(path)
    assert poisoned.headers["x-cache"] == "MISS"
    assert poisoned.json()["overrides"] == []  # the upstream never saw them
    assert plain.headers["x-cache"] == "HIT"
    assert plain.json() == poisoned.json()
    assert upstream.count(path) == 1


def purge(setup: Setup, **params: str) -> dict[str, Any]:
    response = setup.admin.delete("/admin/v1/cache", params=params)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert body["backend"] == setup.backend
    return body


def cached_copies(setup: Setup, path: str, tries: int = 60) -> set[int]:
    """Request numbers of the copies served over fresh connections (one per worker cache)."""
    seen = set()
    for _ in range(tries):
        response = setup.fresh.get(path)
        assert response.status_code == 200
        seen.add(response.json()["n"])
    return seen


def test_purge_empties_every_workers_cache(setup: Setup, upstream: Upstream) -> None:
    path = unique("/open")
    copies = cached_copies(setup, path)
    # Memory: each worker missed once and keeps its own copy; Redis: one shared copy.
    expected = {1, 2} if setup.backend == "memory" else {1}
    assert copies == expected
    assert upstream.count(path) == len(expected)

    body = purge(setup)
    purged_at = time.monotonic()
    if setup.backend == "redis":
        assert body["deleted"] >= 1
    else:
        assert body["deleted"] is None
    # Until every worker applied the purge, some fresh connection still gets an old
    # copy. Poll until STREAK answers in a row are new copies; the last old copy seen
    # bounds the propagation time from below, the streak's end from above.
    streak, last_old = 0, purged_at
    deadline = purged_at + 5
    while streak < STREAK:
        assert time.monotonic() < deadline, "a worker kept serving purged entries"
        response = setup.fresh.get(path)
        if response.json()["n"] in copies:
            streak, last_old = 0, time.monotonic()
        else:
            streak += 1
    settled = time.monotonic()
    print(
        f"\n{setup.backend}: last purged copy served {(last_old - purged_at) * 1000:.0f} ms "
        f"after the purge; {STREAK} new copies in a row by {(settled - purged_at) * 1000:.0f} ms"
    )
    assert last_old - purged_at < 1.0
    # Each worker (memory) or the shared cache (Redis) missed exactly once again.
    assert upstream.count(path) == 2 * len(expected)

    events = setup.admin.get("/admin/v1/audit-events", params={"resource_type": "cache"})
    assert events.status_code == 200, events.text
    assert any(e["action"] == "purge" for e in events.json()["items"])


def test_purge_by_route_and_by_path(setup: Setup, upstream: Upstream) -> None:
    target, sibling, elsewhere = unique("/open"), unique("/open"), unique("/other")
    with httpx.Client(base_url=setup.gw.url, timeout=5) as client:
        for path in (target, sibling, elsewhere):
            assert client.get(path).headers["x-cache"] == "MISS"
            assert client.get(path).headers["x-cache"] == "HIT"

        def settled(expected: dict[str, str]) -> None:
            """Within 1 s, the persistent connection's worker sees the purge's result."""
            deadline = time.monotonic() + 1.0
            while True:
                state = {p: client.get(p).headers["x-cache"] for p in expected}
                # A MISS re-caches the path: only the first answer after the purge counts.
                if any(v == "MISS" for v in state.values()) or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            assert state == expected

        purge(setup, path=target)
        settled({target: "MISS", sibling: "HIT", elsewhere: "HIT"})
        purge(setup, route="other")
        settled({elsewhere: "MISS", sibling: "HIT"})


def test_purge_validation_and_permissions(setup: Setup) -> None:
    both = setup.admin.delete("/admin/v1/cache", params={"path": "/a", "path_prefix": "/a"})
    assert both.status_code == 422
    assert both.headers["content-type"] == "application/problem+json"
    relative = setup.admin.delete("/admin/v1/cache", params={"path": "a"})
    assert relative.status_code == 422
    anonymous = httpx.delete(f"{setup.gw.admin_url}/admin/v1/cache", timeout=5)
    assert anonymous.status_code == 401
