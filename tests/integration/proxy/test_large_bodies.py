"""A 1 GiB upload and download through the gateway with flat gateway memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from support.servers import Gateway, gateway

GIB = 1024**3
CHUNK = 256 * 1024


def _gateway_rss(gw: Gateway) -> int:
    """RSS of every process in the gateway's tree (supervisor, granian, workers)."""
    root = psutil.Process(gw.process.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


class PeakSampler:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _gateway_rss(self.gw))
            time.sleep(0.05)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def big_gw(tmp_path_factory: pytest.TempPathFactory, upstream_a: int) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("big")
    cfg = tmp / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "services": [
                    {
                        "name": "demo",
                        "url": f"http://127.0.0.1:{upstream_a}",
                        "timeouts": {"read": 120, "write": 120},
                    }
                ],
                "routes": [{"name": "demo", "service": "demo", "paths": ["/demo"]}],
            }
        )
    )
    with gateway(tmp, cfg) as gw:
        httpx.get(f"{gw.url}/demo/health").raise_for_status()
        yield gw


@pytest.mark.slow
def test_one_gib_download_with_flat_memory(big_gw: Gateway) -> None:
    baseline = _gateway_rss(big_gw)
    total = 0
    with (
        PeakSampler(big_gw) as sampler,
        httpx.stream(
            "GET", f"{big_gw.url}/demo/stream/{GIB // CHUNK}?size={CHUNK}", timeout=120
        ) as r,
    ):
        assert r.status_code == 200
        for chunk in r.iter_raw(CHUNK):
            total += len(chunk)
    assert total == GIB
    growth = sampler.peak - baseline
    print(f"download: baseline {baseline >> 20} MiB, peak growth {growth >> 20} MiB")
    assert growth < 64 * 1024**2


@pytest.mark.slow
def test_one_gib_upload_with_flat_memory(big_gw: Gateway) -> None:
    baseline = _gateway_rss(big_gw)
    block = b"u" * CHUNK

    def body() -> Iterator[bytes]:
        for _ in range(GIB // CHUNK):
            yield block

    with PeakSampler(big_gw) as sampler:
        r = httpx.post(f"{big_gw.url}/demo/sink", content=body(), timeout=120)
    assert r.json() == {"received": GIB}
    growth = sampler.peak - baseline
    print(f"upload: baseline {baseline >> 20} MiB, peak growth {growth >> 20} MiB")
    assert growth < 64 * 1024**2
