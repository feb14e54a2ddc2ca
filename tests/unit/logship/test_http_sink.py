"""http-log's sink against a real aiohttp server on the test's loop: what each answer
means (2xx done; 429/5xx retryable with Retry-After; other statuses dropped), a receiver
that is down, and the SSRF guard (loopback refused unless the operator allows it)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from portcullis.logship.http_sink import HttpSink
from portcullis.logship.shipper import ShipError
from portcullis.webhooks.destinations import DestinationPolicy
from support.records import make_record
from support.servers import free_port

LOOPBACK = DestinationPolicy([ipaddress.ip_network("127.0.0.0/8")])


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[web.Request], list[bytes]]]:
    seen: list[web.Request] = []
    bodies: list[bytes] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request)
        bodies.append(await request.read())
        status = int(request.match_info["status"])
        headers = {"Retry-After": request.query["after"]} if "after" in request.query else {}
        return web.Response(status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/{status}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", seen, bodies
    await runner.cleanup()


def sink(url: str, policy: DestinationPolicy = LOOPBACK, ndjson: bool = False) -> HttpSink:
    return HttpSink(
        url, policy=policy, headers={"Authorization": "Bearer t"}, ndjson=ndjson, timeout=5
    )


async def test_answers_decide_what_follows(
    receiver: tuple[str, list[web.Request], list[bytes]],
) -> None:
    base, seen, bodies = receiver
    batch = [make_record(0), make_record(1)]
    s = sink(f"{base}/204")
    await s.send(batch)
    assert [r["request_id"] for r in json.loads(bodies[-1])] == ["req-0", "req-1"]
    assert seen[-1].headers["Authorization"] == "Bearer t"
    assert seen[-1].headers["User-Agent"] == "portcullis-http-log"
    await s.aclose()
    for status, retryable, after in ((429, True, 7.0), (503, True, None), (400, False, None)):
        query = "?after=7" if after else ""
        s = sink(f"{base}/{status}{query}")
        with pytest.raises(ShipError) as caught:
            await s.send(batch)
        assert (caught.value.retryable, caught.value.retry_after) == (retryable, after), status
        await s.aclose()
    s = sink(f"{base}/200", ndjson=True)
    await s.send(batch)
    assert seen[-1].headers["Content-Type"] == "application/x-ndjson"
    assert [json.loads(x)["request_id"] for x in bodies[-1].splitlines()] == ["req-0", "req-1"]
    await s.aclose()


async def test_a_receiver_that_is_down_is_retryable() -> None:
    s = sink(f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(ShipError) as caught:
        await s.send([make_record(0)])
    assert caught.value.retryable
    await s.aclose()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "169.254.169.254"])
async def test_private_destinations_are_refused_for_good_unless_allowed(host: str) -> None:
    s = sink(f"http://{host}:{free_port()}/", policy=DestinationPolicy())
    with pytest.raises(ShipError) as caught:
        await s.send([make_record(0)])
    assert not caught.value.retryable
    assert "not a public address" in str(caught.value)
    await s.aclose()
