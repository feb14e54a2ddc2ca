"""request-termination through a real gateway (`portcullis serve`, granian) in front of a
recording upstream.

Proves: a service-scoped instance answers every route of the service with its status and
`{"message": ...}` JSON, a route-scoped one with its raw body and content type, and the
upstream never sees those requests (an unterminated request sent afterwards does arrive);
authentication still runs first (a missing key gets key-auth's 401, not the fixed reply).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import yaml

from support.recording_upstream import RecordingUpstream, recording_upstream
from support.servers import Gateway, gateway


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingUpstream]:
    with recording_upstream() as upstream:
        yield upstream


def config(port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    return {
        "services": [{"name": "live", "url": url}, {"name": "retired", "url": url}],
        # Paths go upstream unstripped, so the recorder sees what the client asked for.
        "routes": [
            {"name": n, "service": s, "paths": [f"/{n}"], "strip_path": False}
            for n, s in [
                ("open", "live"),
                ("moved", "live"),
                ("closed", "live"),
                ("old-a", "retired"),
                ("old-b", "retired"),
            ]
        ],
        "plugins": [
            {
                "name": "request-termination",
                "service": "retired",
                "config": {"status_code": 503, "message": "Down for maintenance"},
            },
            {
                "name": "request-termination",
                "route": "moved",
                "config": {
                    "status_code": 410,
                    "body": "<h1>Gone</h1>",
                    "content_type": "text/html; charset=utf-8",
                },
            },
            {"name": "key-auth", "route": "closed", "config": {}},
            {"name": "request-termination", "route": "closed", "config": {"status_code": 403}},
        ],
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, recorder: RecordingUpstream) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("termination")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config(recorder.port)))
    with gateway(tmp, cfg) as g:
        yield g


@pytest.fixture
async def client(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as c:
        yield c


async def test_a_service_instance_answers_every_route_with_its_message(
    client: httpx.AsyncClient, recorder: RecordingUpstream
) -> None:
    for path in ("/old-a/x", "/old-b", "/old-b/y?z=1"):
        r = await client.post(path, content=b"payload")
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/json; charset=utf-8"
        assert r.json() == {"message": "Down for maintenance"}
        assert r.headers["x-request-id"]
    await _reaches_upstream(client, recorder, "/open/after-retired")
    assert recorder.seen(b"/old-") == []


async def test_a_route_instance_answers_with_its_body_and_content_type(
    client: httpx.AsyncClient, recorder: RecordingUpstream
) -> None:
    r = await client.get("/moved/page")
    assert r.status_code == 410
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.content == b"<h1>Gone</h1>"
    assert r.headers["content-length"] == str(len(b"<h1>Gone</h1>"))
    await _reaches_upstream(client, recorder, "/open/after-moved")
    assert recorder.seen(b"/moved") == []


async def test_authentication_runs_before_termination(
    client: httpx.AsyncClient, recorder: RecordingUpstream
) -> None:
    r = await client.get("/closed")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    await _reaches_upstream(client, recorder, "/open/after-closed")
    assert recorder.seen(b"/closed") == []


async def _reaches_upstream(
    client: httpx.AsyncClient, recorder: RecordingUpstream, path: str
) -> None:
    """An unterminated request sent after the others arrives: the upstream is serving, so
    requests it did not record were answered at the gateway."""
    r = await client.get(path)
    assert r.status_code == 200
    assert len(recorder.wait_for(path.encode())) == 1
