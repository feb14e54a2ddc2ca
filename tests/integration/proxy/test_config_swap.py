"""Config changes reach the data plane quickly and never fail a request in flight."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from portcullis.model.loader import load_config_text
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine
from support.servers import Gateway, gateway
from support.threaded_upstream import wait_until


def _config(upstream: int, extra_routes: int) -> dict[str, object]:
    return {
        "services": [{"name": "demo", "url": f"http://127.0.0.1:{upstream}"}],
        "routes": [
            {"name": "main", "service": "demo", "paths": ["/demo"]},
            *[
                {"name": f"extra-{i}", "service": "demo", "paths": [f"/extra-{i}"]}
                for i in range(extra_routes)
            ],
        ],
    }


# Routes /extra-0 … /extra-6 come and go in the fifty changes; only the first test adds this.
NEW_ROUTE = "/extra-7/health"


@pytest.fixture(scope="module")
def swap_gateway(tmp_path_factory: pytest.TempPathFactory, upstream_a: int) -> Iterator[Gateway]:
    """One gateway (two workers, fast heartbeats) for both tests: a start costs seconds of CPU."""
    tmp = tmp_path_factory.mktemp("swap")
    cfg = tmp / "c.yaml"
    cfg.write_text(yaml.safe_dump(_config(upstream_a, 0)))
    fast_beats = {"PORTCULLIS_HEARTBEAT_INTERVAL": "0.1"}
    with gateway(tmp, cfg, workers=2, extra_env=fast_beats) as started:
        yield started


def test_apply_reaches_every_data_plane_worker(
    swap_gateway: Gateway, tmp_path: Path, upstream_a: int
) -> None:
    """The propagation time is printed, a figure (docs/decisions/002); the deadline
    only keeps a broken propagation from hanging the suite."""
    gw = swap_gateway
    cfg = tmp_path / "c.yaml"
    with httpx.Client(base_url=gw.url) as c:
        assert c.get(NEW_ROUTE).status_code == 404
        cfg.write_text(yaml.safe_dump(_config(upstream_a, 8)))
        gw.cli("config", "apply", str(cfg))
        applied = time.monotonic()
        # Both workers must have it: ask several times over fresh connections.
        seen = 0
        while seen < 10:
            with httpx.Client(base_url=gw.url) as fresh:
                ok = fresh.get(NEW_ROUTE).status_code == 200
            seen = seen + 1 if ok else 0
            assert time.monotonic() - applied < 30, "config never went live on every worker"
        elapsed = time.monotonic() - applied
        print(f"config propagation: {elapsed:.3f}s")


def test_fifty_changes_under_load_fail_nothing(swap_gateway: Gateway, upstream_a: int) -> None:
    """Fifty applies, each one overlapped by traffic (the next apply waits until requests
    completed after it); the load ends only once both workers' heartbeats report the last
    version and requests went on after that."""
    gw = swap_gateway
    stop = threading.Event()
    results: list[int] = []
    errors: list[str] = []

    def load() -> None:
        with httpx.Client(base_url=gw.url, timeout=10) as c:
            while not stop.is_set():
                try:
                    results.append(c.get("/demo/health").status_code)
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

    def more_requests(count: int) -> None:
        target = len(results) + count
        wait_until(lambda: len(results) >= target or bool(errors))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:

        async def apply_all() -> int:
            engine = create_engine(gw.database_url)
            repo = ConfigRepository(engine)
            version = 0
            for i in range(1, 51):
                text = yaml.safe_dump(_config(upstream_a, i % 7 + 1))
                config = load_config_text(text, source="test")
                version = (await repo.apply(config, author="t", comment=str(i))).version
                await asyncio.to_thread(more_requests, 4)
            await engine.dispose()
            return version

        last = asyncio.run(apply_all())
        gw.wait_for_workers_at(last, workers=2)
        more_requests(20)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert len(results) > 200
    assert set(results) == {200}
