"""WebSocket upgrades through a real gateway (`portcullis serve`, granian) run the route's
access chain, and every end of the upstream side reaches the client promptly.

Proves: on routes with key-auth, acl, ip-restriction and rate-limit a handshake without
the right credential, address or budget is refused with the plugin's own HTTP status and
problem body (401/403/429), and the upstream never sees a connection; with them it
connects and relays, the upstream getting the consumer's identity and not the key; the
client behind a trusted proxy is the one ip-restriction judges and the upstream is told
about; an upstream close (code 4000 and its reason), a dropped connection and a killed
upstream process reach a client that sends nothing; an unreachable upstream or an
unmatched path is a problem+json answer to the handshake (502, 404).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from portcullis.identity.key_admin import KeySpec
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.secrets import load_server_secret
from portcullis.store.engine import create_engine
from support.servers import Gateway, free_port, gateway, stop_process, wait_for_port
from support.ws_upstream import WsUpstream, ws_upstream

TESTS_DIR = str(Path(__file__).resolve().parents[2])
# How long a close may take to reach the client: generous for a loaded CI machine, and
# still far below "never" (before the fix it arrived only once the client sent a frame).
PROMPT = 5.0
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[WsUpstream, int]]:
    with ws_upstream() as served:
        yield served


@pytest.fixture(scope="module")
def kill_port() -> int:
    """The port of the upstream process `test_killed_upstream...` starts and kills."""
    return free_port()


def config(port: int, kill_port: int) -> dict[str, Any]:
    def route(name: str, service: str = "ws") -> dict[str, Any]:
        return {"name": name, "service": service, "paths": [f"/{name}"], "strip_path": False}

    return {
        "services": [
            {"name": "ws", "url": f"http://127.0.0.1:{port}"},
            {"name": "killable", "url": f"http://127.0.0.1:{kill_port}"},
            {"name": "dead", "url": f"http://127.0.0.1:{free_port()}", "retries": {"attempts": 0}},
        ],
        "routes": [
            route("open"),
            route("keyed"),
            route("acl"),
            route("ip"),
            route("limited"),
            route("kill", "killable"),
            route("dead", "dead"),
        ],
        "consumers": [{"username": "alice", "groups": ["ws-users"]}, {"username": "bob"}],
        "plugins": [
            {"name": "key-auth", "route": "keyed", "config": {}},
            {"name": "key-auth", "route": "acl", "config": {}},
            {"name": "acl", "route": "acl", "config": {"allow": ["ws-users"]}},
            {"name": "ip-restriction", "route": "ip", "config": {"allow": ["198.51.100.0/24"]}},
            {
                "name": "rate-limit",
                "route": "limited",
                "config": {"limits": [{"limit": 2, "period": "1m", "key": "ip"}]},
            },
        ],
    }


async def _keys(gw: Gateway) -> dict[str, str]:
    engine = create_engine(gw.database_url)
    try:
        secret = load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
        repo = KeyRepository(engine, secret)
        keys = {}
        for consumer in ("alice", "bob"):
            created = await repo.create(
                consumer, KeySpec(name=f"ws-{consumer}"), created_by="test", organization=None
            )
            keys[consumer] = created.key
        return keys
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, upstream: tuple[WsUpstream, int], kill_port: int
) -> Iterator[tuple[Gateway, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("ws-access")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config(upstream[1], kill_port)))
    # The test client (127.0.0.1) plays a trusted reverse proxy in front of the gateway.
    env = {"PORTCULLIS_TRUSTED_PROXIES": '["127.0.0.1/32"]'}
    with gateway(tmp, cfg, extra_env=env) as g:
        yield g, asyncio.run(_keys(g))


def url(gw: tuple[Gateway, dict[str, str]], path: str) -> str:
    return f"ws://127.0.0.1:{gw[0].proxy_port}{path}"


async def refused(address: str, **kwargs: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    """The status, headers and problem body of a refused handshake."""
    with pytest.raises(InvalidStatus) as info:
        async with connect(address, open_timeout=PROMPT, **kwargs):
            pass
    response = info.value.response
    headers = {k.lower(): v for k, v in response.headers.raw_items()}
    assert headers["content-type"] == PROBLEM
    return response.status_code, headers, json.loads(response.body)


async def echoes(ws: ClientConnection) -> None:
    await ws.send("ping")
    assert await asyncio.wait_for(ws.recv(), PROMPT) == "ping"


async def closes_without_client_frames(ws: ClientConnection) -> float:
    """Seconds until the connection is closed, the client sending nothing meanwhile."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.wait_for(ws.wait_closed(), PROMPT)
    return loop.time() - start


async def test_key_auth_refuses_a_handshake_without_a_key(
    gw: tuple[Gateway, dict[str, str]], upstream: tuple[WsUpstream, int]
) -> None:
    before = upstream[0].count
    status, headers, problem = await refused(url(gw, "/keyed"))
    assert status == 401
    assert problem["status"] == 401
    assert problem["type"] == "https://portcullis.dev/problems/unauthorized"
    assert "www-authenticate" in headers
    assert headers["x-request-id"]
    status, _, _ = await refused(url(gw, "/keyed"), additional_headers={"x-api-key": "pk_nope"})
    assert status == 401
    assert upstream[0].count == before


async def test_a_valid_key_connects_and_relays_with_the_consumers_identity(
    gw: tuple[Gateway, dict[str, str]], upstream: tuple[WsUpstream, int]
) -> None:
    before = upstream[0].count
    async with connect(
        url(gw, "/keyed"), additional_headers={"x-api-key": gw[1]["alice"]}, open_timeout=PROMPT
    ) as ws:
        await echoes(ws)
    assert upstream[0].count == before + 1
    seen = upstream[0].handshakes[-1]
    assert seen["x-consumer-name"] == "alice"
    assert "x-api-key" not in seen  # key-auth hides the credential, on upgrades too


async def test_acl_refuses_a_consumer_outside_the_allowed_groups(
    gw: tuple[Gateway, dict[str, str]], upstream: tuple[WsUpstream, int]
) -> None:
    before = upstream[0].count
    status, _, problem = await refused(
        url(gw, "/acl"), additional_headers={"x-api-key": gw[1]["bob"]}
    )
    assert status == 403
    assert problem["type"] == "https://portcullis.dev/problems/forbidden"
    assert upstream[0].count == before
    async with connect(
        url(gw, "/acl"), additional_headers={"x-api-key": gw[1]["alice"]}, open_timeout=PROMPT
    ) as ws:
        await echoes(ws)
    assert upstream[0].count == before + 1


async def test_ip_restriction_judges_the_client_behind_a_trusted_proxy(
    gw: tuple[Gateway, dict[str, str]], upstream: tuple[WsUpstream, int]
) -> None:
    before = upstream[0].count
    status, _, problem = await refused(url(gw, "/ip"))  # 127.0.0.1 is not allowed
    assert status == 403
    assert problem["status"] == 403
    assert upstream[0].count == before
    # A prepended hop is not believed: the proxy's own (rightmost) entry decides.
    status, _, _ = await refused(
        url(gw, "/ip"), additional_headers={"x-forwarded-for": "198.51.100.7, 203.0.113.9"}
    )
    assert status == 403
    assert upstream[0].count == before
    async with connect(
        url(gw, "/ip"),
        additional_headers={"x-forwarded-for": "198.51.100.7"},
        open_timeout=PROMPT,
    ) as ws:
        await echoes(ws)
    assert upstream[0].count == before + 1
    assert upstream[0].handshakes[-1]["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"


async def test_rate_limit_counts_handshakes_and_refuses_with_429(
    gw: tuple[Gateway, dict[str, str]], upstream: tuple[WsUpstream, int]
) -> None:
    before = upstream[0].count
    for _ in range(2):
        async with connect(url(gw, "/limited"), open_timeout=PROMPT) as ws:
            await echoes(ws)
    status, headers, problem = await refused(url(gw, "/limited"))
    assert status == 429
    assert int(headers["retry-after"]) > 0
    assert "ratelimit" in headers
    assert problem["type"].endswith("#quota-exceeded")
    assert upstream[0].count == before + 2


async def test_an_upstream_close_code_reaches_a_silent_client_promptly(
    gw: tuple[Gateway, dict[str, str]],
) -> None:
    async with connect(url(gw, "/open"), open_timeout=PROMPT) as ws:
        await echoes(ws)
        await ws.send("close:4000:going away now")
        elapsed = await closes_without_client_frames(ws)
    assert ws.close_code == 4000
    assert ws.close_reason == "going away now"
    print(f"\nupstream close 4000 reached the client after {elapsed * 1000:.0f} ms")


async def test_a_dropped_upstream_connection_reaches_a_silent_client_promptly(
    gw: tuple[Gateway, dict[str, str]],
) -> None:
    async with connect(url(gw, "/open"), open_timeout=PROMPT) as ws:
        await echoes(ws)
        await ws.send("drop")
        await closes_without_client_frames(ws)
    # Not a normal closure: the upstream went away without a close handshake.
    assert ws.close_code == 1014  # Bad Gateway


async def test_a_killed_upstream_process_reaches_a_silent_client_promptly(
    gw: tuple[Gateway, dict[str, str]], kill_port: int
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "support.ws_upstream", str(kill_port)],
        env={**os.environ, "PYTHONPATH": TESTS_DIR},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(kill_port, proc)
        async with connect(url(gw, "/kill"), open_timeout=PROMPT) as ws:
            await echoes(ws)
            proc.send_signal(signal.SIGKILL)
            await closes_without_client_frames(ws)
        assert ws.close_code == 1014  # Bad Gateway
    finally:
        stop_process(proc)


async def test_an_unreachable_upstream_is_a_502_problem(
    gw: tuple[Gateway, dict[str, str]],
) -> None:
    status, _, problem = await refused(url(gw, "/dead"))
    assert status == 502
    assert problem["type"] == "https://portcullis.dev/problems/upstream-connect-failed"


async def test_a_handshake_no_route_matches_is_a_404_problem(
    gw: tuple[Gateway, dict[str, str]],
) -> None:
    status, _, problem = await refused(url(gw, "/nowhere"))
    assert status == 404
    assert problem["type"] == "https://portcullis.dev/problems/route-not-found"
