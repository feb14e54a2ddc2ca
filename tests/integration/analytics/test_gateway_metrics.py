"""Prometheus metrics of a real gateway (2 data-plane workers) scraped from the admin port.

Requests are spread over both workers; `GET /metrics` on :8001 merges the workers'
multiprocess files, so the request counters summed over every label set equal the
requests sent. Then a worker is killed: its published counts stay, granian starts a
replacement, and the live-worker gauge returns to 2 once the dead one is swept.
Upstream health comes from the workers' heartbeats (a dead target turns unavailable).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from support.servers import Gateway, free_port, gateway, granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with granian_app(DEMO, workers=1) as port:
        yield port


def gateway_config(upstream: int, dead: int) -> dict[str, Any]:
    return {
        "upstreams": [
            {
                "name": "pool",
                "targets": [
                    {"target": f"127.0.0.1:{upstream}"},
                    {"target": f"127.0.0.1:{dead}"},
                ],
                "healthchecks": {
                    "active": {
                        "enabled": True,
                        "path": "/echo",
                        "interval": 0.2,
                        "timeout": 0.5,
                        "unhealthy_threshold": 1,
                    }
                },
            }
        ],
        "services": [
            {"name": "echo", "url": f"http://127.0.0.1:{upstream}/echo"},
            {"name": "pooled", "upstream": "pool", "path": "/echo"},
        ],
        "routes": [
            {"name": "alpha", "service": "echo", "paths": ["/alpha"]},
            {"name": "beta", "service": "pooled", "paths": ["/beta"]},
            {"name": "limited", "service": "echo", "paths": ["/limited"]},
        ],
        "plugins": [
            {
                "name": "rate-limit",
                "route": "limited",
                "config": {"limits": [{"limit": 5, "period": "1h", "key": "global"}]},
            }
        ],
    }


SCRAPE_TOKEN = "a-scrape-token-for-prometheus"


def scrape(gw: Gateway, token: str = SCRAPE_TOKEN) -> dict[str, Any]:
    """What Prometheus sees, scraping with `authorization: {credentials: token}`."""
    r = httpx.get(
        f"{gw.admin_url}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=10
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def total(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    """Sum of `sample` over every label set matching `labels` (0 when absent)."""
    if family not in families:
        return 0.0
    return sum(
        float(s.value)
        for s in families[family].samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


async def send(url: str, paths: list[str], concurrency: int = 8) -> Counter[int]:
    """Send GETs over `concurrency` separate connections (so both workers get some)."""
    statuses: Counter[int] = Counter()
    queue = list(paths)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            while queue:
                r = await client.get(queue.pop())
                statuses[r.status_code] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def data_plane_workers(gw: Gateway) -> list[psutil.Process]:
    """The granian worker processes of the data plane (children of its granian master)."""
    for child in psutil.Process(gw.process.pid).children():
        if any("portcullis.proxy.server:create_app" in part for part in child.cmdline()):
            return child.children()
    raise AssertionError("no data-plane granian process")


def admin_token(gw: Gateway) -> str:
    created = subprocess.run(
        [sys.executable, "-m", "portcullis", "admin", "create", "--email", "viewer@example.com",
         "--role", "viewer", "--password-stdin"],
        env=gw.env, input=PASSWORD + "\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    r = httpx.post(
        f"{gw.admin_url}/admin/v1/auth/login",
        json={"email": "viewer@example.com", "password": PASSWORD},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


@dataclass
class MetricsGateway:
    gw: Gateway
    metrics_dir: Path
    dead: int  # the port of the pool's target that never answers


@pytest.fixture(scope="module")
def metrics_gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: int
) -> Iterator[MetricsGateway]:
    """One gateway (two workers, a scrape token) for the file: a start costs seconds of CPU."""
    tmp_path = tmp_path_factory.mktemp("metrics")
    dead = free_port()
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(gateway_config(upstream, dead)))
    metrics_dir = tmp_path / "metrics"
    env = {
        "PORTCULLIS_METRICS_TOKEN": SCRAPE_TOKEN,
        "PORTCULLIS_METRICS_DIR": str(metrics_dir),
        "PORTCULLIS_METRICS_INTERVAL": "0.2",
        "PORTCULLIS_HEARTBEAT_INTERVAL": "0.5",
        "GRANIAN_RESPAWN_FAILED_WORKERS": "true",
        "GRANIAN_RESPAWN_INTERVAL": "0.5",
    }
    with gateway(tmp_path, cfg, workers=2, extra_env=env) as gw:
        yield MetricsGateway(gw, metrics_dir, dead)


def test_metrics_sum_over_workers_and_survive_a_worker_restart(
    metrics_gateway: MetricsGateway, upstream: int
) -> None:
    gw, metrics_dir, dead = metrics_gateway.gw, metrics_gateway.metrics_dir, metrics_gateway.dead
    wait_for(lambda: len(data_plane_workers(gw)) == 2, what="two data-plane workers")
    paths = ["/alpha"] * 120 + ["/beta"] * 60 + ["/limited"] * 20 + ["/nowhere"] * 10
    statuses = asyncio.run(send(gw.url, paths))
    sent = len(paths)
    # The memory limit backend counts per worker: each admits 5.
    refused = statuses[429]
    assert 10 <= refused <= 15, statuses
    assert statuses[200] == 200 - refused
    assert statuses[404] == 10
    requests = "portcullis_http_requests"

    def counted() -> float:
        return total(scrape(gw), requests, requests + "_total")

    wait_for(lambda: counted() == sent, what=f"{sent} requests in /metrics")
    families = scrape(gw)
    # Both workers wrote into the shared directory: one counter file per worker pid.
    files = sorted(p.name for p in metrics_dir.glob("counter_*.db"))
    assert len(files) >= 2, files
    by_route = {
        route: total(families, requests, requests + "_total", route=route)
        for route in ("alpha", "beta", "limited", "(none)")
    }
    assert by_route == {"alpha": 120, "beta": 60, "limited": 20, "(none)": 10}
    assert total(families, requests, requests + "_total", status_class="4xx") == 10 + refused
    assert all(
        s.labels["method"] == "GET" for s in families[requests].samples if "method" in s.labels
    )
    # Histogram: cumulative buckets ending in +Inf == _count == requests of the route.
    duration = "portcullis_http_request_duration_seconds"
    buckets = [
        (float(s.labels["le"]), s.value)
        for s in families[duration].samples
        if s.name == duration + "_bucket" and s.labels["route"] == "alpha"
    ]
    buckets.sort()
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1] == (float("inf"), 120)
    assert total(families, duration, duration + "_count", route="alpha") == 120
    upstream_duration = "portcullis_upstream_request_duration_seconds"
    assert total(families, upstream_duration, upstream_duration + "_count") == 200 - refused
    flags = "portcullis_http_request_flags"
    assert total(families, flags, flags + "_total", flag="rate_limited") == refused
    events = "portcullis_ratelimit_backend_events"
    assert total(families, events, events + "_total", event="decisions_denied") == refused
    workers = "portcullis_data_plane_workers"
    assert total(families, workers, workers) == 2
    assert total(families, "portcullis_config_version", "portcullis_config_version") == 1

    # Upstream health from the heartbeats: the dead target is unavailable, the pool is not.
    available = "portcullis_upstream_target_available"
    live = f"127.0.0.1:{upstream}"

    def dead_target_down() -> bool:
        fams = scrape(gw)
        return (
            total(fams, available, available, upstream="pool", target=f"127.0.0.1:{dead}") == 0
            and total(fams, available, available, upstream="pool", target=live) == 1
        )

    wait_for(dead_target_down, what="the dead target reported down")
    families = scrape(gw)
    assert total(families, "portcullis_upstream_available", "portcullis_upstream_available",
                 upstream="pool") == 1  # fmt: skip
    healthy = "portcullis_upstream_target_healthy_workers"
    assert total(families, healthy, healthy, upstream="pool", target=live) == 2
    ready = httpx.get(f"{gw.admin_url}/health/ready", timeout=10).json()
    assert ready["data_plane"]["upstreams"]["pool"] == "degraded"
    assert ready["data_plane"]["upstreams"]["echo@url"] == "up"
    token = admin_token(gw)
    r = httpx.get(
        f"{gw.admin_url}/admin/v1/data-plane/upstreams",
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    summary = r.json()
    assert summary["workers"] == 2
    pool = next(u for u in summary["upstreams"] if u["name"] == "pool")
    targets = {t["target"]: t for t in pool["targets"]}
    assert targets[f"127.0.0.1:{dead}"]["status"] == "down"
    assert targets[f"127.0.0.1:{dead}"]["unhealthy_workers"] == 2
    assert targets[live]["status"] == "up"

    # Kill one worker: what it published stays; granian replaces it.
    victim = data_plane_workers(gw)[0]
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(
        lambda: (
            victim.pid not in [p.pid for p in data_plane_workers(gw)]
            and len(data_plane_workers(gw)) == 2
        ),
        what="a replacement worker",
    )
    families = scrape(gw)
    assert total(families, requests, requests + "_total") == sent
    # The killed worker's live gauges were swept: 2 live workers, not 3.
    wait_for(lambda: total(scrape(gw), workers, workers) == 2, what="two live workers in the gauge")
    more = asyncio.run(send(gw.url, ["/alpha"] * 40))
    assert more[200] == 40
    wait_for(lambda: counted() == sent + 40, what="the new requests counted")


def test_metrics_token(metrics_gateway: MetricsGateway) -> None:
    """With `metrics_token` set, /metrics needs it as a bearer token (the file's gateway,
    after the test above: it counts requests exactly, these scrapes reach the control plane)."""
    gw = metrics_gateway.gw
    r = httpx.get(f"{gw.admin_url}/metrics", timeout=10)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.get(
        f"{gw.admin_url}/metrics", headers={"authorization": "Bearer nope"}, timeout=10
    )
    assert wrong.status_code == 401
    families = scrape(gw, SCRAPE_TOKEN)
    assert "portcullis_config_version" in families
