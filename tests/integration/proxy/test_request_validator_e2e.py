"""request-validator and mock sandboxes through a real gateway (`portcullis serve`, granian)
in front of a recording upstream.

Proves: requests are checked against the route's API version description (3.1 on v2,
3.0 on v1): bad parameters and JSON bodies are refused with a 400 problem whose
`errors` carry the part and JSON pointer, an undocumented Content-Type with 415,
unknown operations with 404/405, and refused requests never reach the upstream;
valid ones arrive unchanged (the description's server path `/shop` is the service's
path). A version with `sandbox: {mock: true}` answers development keys from the
description (example, else generated data) without calling the upstream, after
validation; production keys go upstream. With `validate_responses`, an upstream
answer that breaks the description reaches the client unchanged and is counted
(`portcullis_http_request_flags{flag="response_mismatch"}`) once, and a conforming
answer is not.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from portcullis.identity.key_admin import KeySpec
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.keys import Environment
from portcullis.identity.secrets import load_server_secret
from portcullis.store.engine import create_engine
from support.openapi_docs import items_api
from support.raw_upstream import ReceivedRequest, response
from support.recording_upstream import RecordingUpstream, default_response, recording_upstream
from support.servers import Gateway, gateway

SCRAPE_TOKEN = "validator-scrape-token"
TRACE = {"x-trace": "beef"}


def config(port: int) -> dict[str, Any]:
    names = ("v1", "v2", "audited")
    routes = [{"name": n, "service": "shop", "paths": [f"/{n}"]} for n in names]
    return {
        "services": [{"name": "shop", "url": f"http://127.0.0.1:{port}/shop"}],
        "routes": routes,
        "consumers": [{"username": "app"}],
        "plugins": [
            {"name": "key-auth", "service": "shop", "config": {}},
            {"name": "request-validator", "route": "v1", "config": {}},
            {"name": "request-validator", "route": "v2", "config": {}},
            {
                "name": "request-validator",
                "route": "audited",
                "config": {"validate_responses": True},
            },
        ],
        "apis": [
            {
                "name": "shop",
                "versions": [
                    {"name": "v1", "routes": ["v1"], "openapi": items_api("3.0.3")},
                    {
                        "name": "v2",
                        "routes": ["v2"],
                        "openapi": items_api("3.1.0"),
                        "sandbox": {"mock": True},
                    },
                ],
            },
            {
                "name": "audit",
                "versions": [
                    {"name": "a1", "routes": ["audited"], "openapi": items_api("3.0.3")},
                ],
            },
        ],
    }


async def _keys(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    try:
        secret = load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
        repo = KeyRepository(engine, secret)
        keys = {}
        for environment in (Environment.production, Environment.development):
            spec = KeySpec(name=f"app-{environment}", environment=environment)
            keys[str(environment)] = (
                await repo.create("app", spec, created_by="test", organization=None)
            ).key
        return keys
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingUpstream]:
    with recording_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, recorder: RecordingUpstream) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("validator")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config(recorder.port)))
    env = {
        "PORTCULLIS_METRICS_TOKEN": SCRAPE_TOKEN,
        "PORTCULLIS_METRICS_DIR": str(tmp / "metrics"),
        "PORTCULLIS_METRICS_INTERVAL": "0.2",
    }
    (tmp / "metrics").mkdir()
    with gateway(tmp, cfg, extra_env=env) as g:
        yield g


@pytest.fixture(scope="module")
def keys(gw: Gateway) -> dict[str, str]:
    return asyncio.run(_keys(gw.database_url))


def _client(gw: Gateway, key: str) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"x-api-key": key}, timeout=10)


def _errors(r: httpx.Response) -> list[tuple[str, str]]:
    assert r.headers["content-type"] == "application/problem+json", r.text
    return sorted((e["in"], e["pointer"]) for e in r.json()["errors"])


def test_valid_requests_reach_the_upstream_unchanged(
    gw: Gateway, keys: dict[str, str], recorder: RecordingUpstream
) -> None:
    recorder.respond = default_response
    with _client(gw, keys["production"]) as c:
        r = c.get("/v2/items", params={"limit": 5, "tags": "a,b"}, headers=TRACE)
        assert r.status_code == 200, r.text
        assert r.text == "seen GET /shop/items?limit=5&tags=a%2Cb"
        r = c.post("/v2/items", json={"name": "lamp", "price": 3, "note": None})
        assert r.status_code == 200, r.text
    assert recorder.requests[-1].body == b'{"name":"lamp","price":3,"note":null}'


def test_invalid_parameters_and_bodies_are_refused_with_pointers(
    gw: Gateway, keys: dict[str, str], recorder: RecordingUpstream
) -> None:
    recorder.clear()
    with _client(gw, keys["production"]) as c:
        r = c.get("/v2/items", params={"limit": 0}, headers={"x-trace": "XYZ"})
        assert r.status_code == 400
        problem = r.json()
        assert problem["type"] == "https://portcullis.dev/problems/request-invalid"
        assert problem["status"] == 400
        assert _errors(r) == [("header", "#/X-Trace"), ("query", "#/limit")]
        r = c.get("/v2/items/abc", headers=TRACE)
        assert (r.status_code, _errors(r)) == (400, [("path", "#/item_id")])
        r = c.post("/v2/items", json={"name": "", "price": -1, "tags": [1]})
        assert r.status_code == 400
        assert _errors(r) == [("body", "#/name"), ("body", "#/price"), ("body", "#/tags/0")]
        r = c.post("/v2/items", content=b"{not json", headers={"content-type": "application/json"})
        assert (r.status_code, _errors(r)) == (400, [("body", "#")])
        r = c.post("/v2/items", content=b"x", headers={"content-type": "text/plain"})
        assert r.status_code == 415
        assert _errors(r) == [("header", "#/content-type")]
        r = c.post("/v2/items")
        assert (r.status_code, _errors(r)) == (400, [("body", "#")])
        # OpenAPI 3.0 on v1: `nullable` is what allows null.
        r = c.post("/v1/items", json={"name": "a", "price": 1, "note": None})
        assert r.status_code == 200, r.text
        r = c.post("/v1/items", json={"name": "a", "price": 1, "note": 5})
        assert (r.status_code, _errors(r)) == (400, [("body", "#/note")])
    assert [q.target for q in recorder.requests] == [b"/shop/items"]  # the valid v1 POST


def test_unknown_operations_are_404_and_405(gw: Gateway, keys: dict[str, str]) -> None:
    with _client(gw, keys["production"]) as c:
        r = c.get("/v2/orders")
        assert r.status_code == 404
        assert r.json()["type"] == "https://portcullis.dev/problems/operation-not-found"
        r = c.put("/v2/items/3", json={})
        assert r.status_code == 405
        assert r.headers["allow"] == "DELETE, GET"


def test_a_mock_sandbox_answers_development_keys_from_the_description(
    gw: Gateway, keys: dict[str, str], recorder: RecordingUpstream
) -> None:
    recorder.clear()
    with _client(gw, keys["development"]) as c:
        r = c.post("/v2/items", json={"name": "lamp", "price": 3})
        assert r.status_code == 201
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"id": 7, "name": "lamp", "price": 12.5}
        r = c.get("/v2/items/5")
        assert r.status_code == 200
        item = r.json()
        assert {"id", "name", "price"} <= item.keys()
        assert r.request.headers["x-api-key"] == keys["development"]
        r = c.delete("/v2/items/5")
        assert (r.status_code, r.content) == (204, b"")
        # Validation still comes first, and so does authentication.
        r = c.post("/v2/items", json={"price": "free"})
        assert r.status_code == 400
        assert httpx.get(f"{gw.url}/v2/items/5", timeout=10).status_code == 401
        # v1 has no sandbox: development keys reach its upstream.
        r = c.get("/v1/items/5")
        assert r.status_code == 200
    assert [q.target for q in recorder.requests] == [b"/shop/items/5"]
    with _client(gw, keys["production"]) as c:
        r = c.get("/v2/items/5")
        assert r.text == "seen GET /shop/items/5"


def _mismatches(gw: Gateway) -> float:
    r = httpx.get(
        f"{gw.admin_url}/metrics", headers={"authorization": f"Bearer {SCRAPE_TOKEN}"}, timeout=10
    )
    assert r.status_code == 200, r.text
    found = 0.0
    for family in text_string_to_metric_families(r.text):
        if family.name == "portcullis_http_request_flags":
            for s in family.samples:
                if (
                    s.labels.get("flag") == "response_mismatch"
                    and s.labels.get("route") == "audited"
                ):
                    found += s.value
    return found


def test_responses_that_break_the_description_pass_unchanged_and_are_counted(
    gw: Gateway, keys: dict[str, str], recorder: RecordingUpstream
) -> None:
    good = json.dumps({"id": 1, "name": "a", "price": 2}).encode()
    bad = json.dumps({"id": 0, "name": "a"}).encode()

    def answer(req: ReceivedRequest) -> bytes:
        body = bad if req.target.endswith(b"/1") else good
        return response(200, body, [(b"content-type", b"application/json")])

    recorder.respond = answer
    try:
        with _client(gw, keys["production"]) as c:
            assert c.get("/audited/items/2").content == good
            r = c.get("/audited/items/1")
            assert (r.status_code, r.content) == (200, bad)
        deadline = time.monotonic() + 20
        while _mismatches(gw) != 1:
            assert time.monotonic() < deadline, "response_mismatch never counted once"
            time.sleep(0.1)
    finally:
        recorder.respond = default_response
