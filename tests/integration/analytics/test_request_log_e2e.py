"""The request log end to end: `portcullis serve` in front of the demo upstream, requests
of every kind through :8000, rows read from the gateway's SQLite store after it stopped.

Proves: one row per request with the right fields (status, route, service, consumer,
credential, upstream target, flags, error kind, bytes, latency split, request id =
the response's X-Request-ID, trace id = the one sent upstream); a graceful stop
writes every queued row (rows == requests, with batches far larger than the
traffic so nothing is written before the stop); a tiny queue drops, counts and
says so in the log.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from portcullis.analytics.record import Flag
from portcullis.identity.key_admin import KeySpec
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.secrets import load_server_secret
from portcullis.store.engine import create_engine, sqlite_file
from support.servers import Gateway, free_port, gateway, granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"


def gateway_config(upstream: int, dead: int) -> dict[str, Any]:
    return {
        "services": [
            {"name": "echo", "url": f"http://127.0.0.1:{upstream}/echo"},
            {"name": "gone", "url": f"http://127.0.0.1:{dead}", "retries": {"attempts": 0}},
        ],
        "routes": [
            {"name": "open", "service": "echo", "paths": ["/open"]},
            {"name": "keyed", "service": "echo", "paths": ["/keyed"]},
            {"name": "limited", "service": "echo", "paths": ["/limited"]},
            {"name": "down", "service": "gone", "paths": ["/down"]},
        ],
        "consumers": [{"username": "alice"}],
        "plugins": [
            {"name": "key-auth", "route": "keyed", "config": {}},
            {
                "name": "rate-limit",
                "route": "limited",
                "config": {
                    "policy_name": "rl-e2e",
                    "limits": [{"limit": 2, "period": "1h", "key": "global"}],
                },
            },
        ],
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with granian_app(DEMO) as port:
        yield port


def serve(tmp: Path, upstream: int, **env: str) -> Any:
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(gateway_config(upstream, free_port())))
    settings = {f"PORTCULLIS_{name.upper()}": value for name, value in env.items()}
    return gateway(tmp, cfg, extra_env=settings)


async def new_key(gw: Gateway, consumer: str) -> tuple[str, str]:
    engine = create_engine(gw.database_url)
    try:
        secret = load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
        created = await KeyRepository(engine, secret).create(
            consumer, KeySpec(name="rl-e2e"), created_by="e2e-test", organization=None
        )
    finally:
        await engine.dispose()
    return created.info.id, created.key


def rows(gw: Gateway) -> list[dict[str, Any]]:
    path = sqlite_file(gw.database_url)
    assert path is not None
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM request_log ORDER BY id")]


def stop_and_read_output(gw: Gateway) -> str:
    """SIGTERM the gateway (graceful) and return everything it printed."""
    gw.process.send_signal(signal.SIGTERM)
    assert gw.process.stdout is not None
    out: str = gw.process.stdout.read().decode(errors="replace")
    gw.process.wait(timeout=30)
    return out


async def test_every_kind_of_request_is_one_row_with_its_facts(
    tmp_path: Path, upstream: int
) -> None:
    # Batches and interval far beyond this test: every row is written at the stop.
    sent: dict[str, httpx.Response] = {}
    with serve(
        tmp_path, upstream, request_log_batch_size="10000", request_log_flush_interval="300"
    ) as gw:
        key_id, key = await new_key(gw, "alice")
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            sent["ok"] = client.get("/open/a?x=1", headers={"user-agent": "rl-e2e/1"})
            sent["post"] = client.post("/open", content=b"x" * 100)
            # A request id the client chose is the one logged. (With none, the 404 answer
            # carries a generated id that the record does not know: see the report.)
            sent["nope"] = client.get("/nope", headers={"X-Request-ID": "client-chosen-404"})
            sent["no-key"] = client.get("/keyed")
            sent["keyed"] = client.get("/keyed", headers={"X-API-Key": key})
            sent["lim1"] = client.get("/limited")
            sent["lim2"] = client.get("/limited")
            sent["lim3"] = client.get("/limited")
            sent["down"] = client.get("/down")
        assert rows(gw) == []  # nothing written yet: all of it is queued
    statuses = {name: r.status_code for name, r in sent.items()}
    assert statuses == {
        "ok": 200,
        "post": 200,
        "nope": 404,
        "no-key": 401,
        "keyed": 200,
        "lim1": 200,
        "lim2": 200,
        "lim3": 429,
        "down": 502,
    }

    logged = rows(gw)
    assert len(logged) == len(sent)  # the graceful stop wrote every queued row
    by_id = {row["request_id"]: row for row in logged}
    row = {name: by_id[r.headers["x-request-id"]] for name, r in sent.items()}

    ok = row["ok"]
    echoed = dict(sent["ok"].json()["headers"])
    assert ok["trace_id"] == echoed["traceparent"][3:35]
    assert ok["status"] == 200
    assert (ok["route"], ok["service"], ok["method"]) == ("open", "echo", "GET")
    assert ok["path"] == "/open/a"
    assert ok["upstream_target"] == f"127.0.0.1:{upstream}"
    assert ok["user_agent"] == "rl-e2e/1"
    assert ok["client_ip"] == "127.0.0.1"
    assert ok["consumer"] is None
    assert ok["credential_id"] is None
    assert ok["flags"] == 0
    assert ok["error_kind"] is None
    assert ok["bytes_out"] == len(sent["ok"].content)
    assert ok["node"].startswith("portcullis:")
    assert 0 < ok["upstream_ms"] < ok["latency_ms"]
    # The gateway's latency lies within the client's own measurement of the exchange (the
    # exact split is checked against a scripted clock in tests/unit/proxy/test_app_observers).
    assert ok["latency_ms"] <= sent["ok"].elapsed.total_seconds() * 1000.0
    assert row["post"]["bytes_in"] == 100
    assert row["post"]["method"] == "POST"

    nope = row["nope"]
    assert nope["request_id"] == "client-chosen-404"
    assert (nope["status"], nope["route"], nope["service"]) == (404, None, None)
    assert nope["error_kind"] == "route-not-found"
    assert nope["upstream_ms"] is None
    assert nope["upstream_target"] is None
    assert nope["gateway_ms"] == pytest.approx(nope["latency_ms"])  # nothing went upstream

    refused = row["no-key"]
    assert refused["status"] == 401
    assert refused["flags"] & Flag.AUTH_FAILED
    assert refused["error_kind"] is not None
    assert refused["upstream_target"] is None
    assert refused["consumer"] is None

    keyed = row["keyed"]
    assert (keyed["status"], keyed["consumer"], keyed["credential_id"]) == (200, "alice", key_id)
    assert keyed["flags"] == 0

    assert [row[n]["flags"] & Flag.RATE_LIMITED for n in ("lim1", "lim2")] == [0, 0]
    limited = row["lim3"]
    assert limited["status"] == 429
    assert limited["flags"] & Flag.RATE_LIMITED
    assert limited["error_kind"] is not None
    assert limited["upstream_ms"] is None

    down = row["down"]
    assert (down["status"], down["route"], down["service"]) == (502, "down", "gone")
    assert down["error_kind"] == "upstream-connect-failed"
    assert down["upstream_target"] is not None
    assert down["upstream_ms"] is not None


def test_a_full_queue_drops_counts_and_logs(tmp_path: Path, upstream: int) -> None:
    with serve(
        tmp_path,
        upstream,
        request_log_queue_size="5",
        request_log_batch_size="1000",
        request_log_flush_interval="300",
    ) as gw:
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            for _ in range(20):
                assert client.get("/open").status_code == 200
        output = stop_and_read_output(gw)
    assert len(rows(gw)) == 5
    events = [json.loads(line) for line in output.splitlines() if "request_log." in line]
    dropped = [e for e in events if e["event"] == "request_log.dropped"]
    assert len(dropped) == 1  # rate-limited: one line for the burst, not 15
    assert dropped[0]["dropped_total"] == 1
    closed = [e for e in events if e["event"] == "request_log.closed"]
    assert [(e["written"], e["dropped"], e["lost"]) for e in closed] == [(5, 15, 0)]


async def test_requests_served_as_an_api_version_are_logged_with_it(
    tmp_path: Path, upstream: int
) -> None:
    """Version resolution's facts reach the request log: the API, the version, and
    whether the version's sandbox answered (a staging key goes to the sandbox service)."""
    config = {
        "services": [
            {"name": "echo", "url": f"http://127.0.0.1:{upstream}/echo"},
            {"name": "echo-sandbox", "url": f"http://127.0.0.1:{upstream}/echo"},
        ],
        "routes": [
            {"name": "v1", "service": "echo", "paths": ["/v1"]},
            {"name": "v2", "service": "echo", "paths": ["/v2"]},
            {"name": "plain", "service": "echo", "paths": ["/plain"]},
        ],
        "consumers": [{"username": "alice"}],
        "plugins": [{"name": "key-auth", "config": {}}],
        "apis": [
            {
                "name": "shop",
                "versions": [
                    {"name": "v1", "routes": ["v1"], "sandbox": {"service": "echo-sandbox"}},
                    {"name": "v2", "routes": ["v2"]},
                ],
            }
        ],
    }
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config))
    sent: dict[str, httpx.Response] = {}
    with gateway(tmp_path, cfg) as gw:
        engine = create_engine(gw.database_url)
        try:
            secret = load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
            keys = KeyRepository(engine, secret)
            live = await keys.create(
                "alice", KeySpec(name="live"), created_by="e2e", organization=None
            )
            staging = await keys.create(
                "alice",
                KeySpec(name="stg", environment="staging"),
                created_by="e2e",
                organization=None,
            )
        finally:
            await engine.dispose()
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            sent["v1"] = client.get("/v1/items", headers={"X-API-Key": live.key})
            sent["v1-sandbox"] = client.get("/v1/items", headers={"X-API-Key": staging.key})
            sent["v2"] = client.get("/v2/items", headers={"X-API-Key": live.key})
            sent["plain"] = client.get("/plain", headers={"X-API-Key": live.key})
        stop_and_read_output(gw)
    assert {name: r.status_code for name, r in sent.items()} == dict.fromkeys(sent, 200)
    by_id = {row["request_id"]: row for row in rows(gw)}
    logged = {
        name: (
            by_id[r.headers["x-request-id"]]["api"],
            by_id[r.headers["x-request-id"]]["api_version"],
            by_id[r.headers["x-request-id"]]["sandbox"],
            by_id[r.headers["x-request-id"]]["service"],
        )
        for name, r in sent.items()
    }
    assert logged == {
        "v1": ("shop", "v1", 0, "echo"),
        "v1-sandbox": ("shop", "v1", 1, "echo-sandbox"),
        "v2": ("shop", "v2", 0, "echo"),
        "plain": (None, None, 0, "echo"),
    }
