"""Process behaviour: graceful drain on SIGTERM, several workers, empty store."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import yaml

from support.servers import gateway


def _cfg(tmp: Path, upstream: int) -> Path:
    cfg = tmp / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "services": [{"name": "demo", "url": f"http://127.0.0.1:{upstream}"}],
                "routes": [{"name": "demo", "service": "demo", "paths": ["/demo"]}],
            }
        )
    )
    return cfg


def test_sigterm_drains_in_flight_requests(tmp_path: Path, upstream_a: int) -> None:
    with gateway(tmp_path, _cfg(tmp_path, upstream_a)) as gw:
        result: dict[str, object] = {}

        def slow_call() -> None:
            try:
                r = httpx.get(f"{gw.url}/demo/delay/1.5", timeout=10)
                result["status"] = r.status_code
                result["body"] = r.json()
            except httpx.HTTPError as exc:
                result["error"] = repr(exc)

        t = threading.Thread(target=slow_call)
        t.start()
        time.sleep(0.5)
        gw.process.send_signal(signal.SIGTERM)
        t.join(timeout=15)
        assert result == {"status": 200, "body": {"delayed": 1.5}}
        assert gw.process.wait(timeout=20) == 0


def test_empty_store_serves_404_problems(tmp_path: Path) -> None:
    with gateway(tmp_path, None) as gw:
        r = httpx.get(f"{gw.url}/anything")
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
        ready = httpx.get(f"{gw.admin_url}/health/ready")
        assert ready.status_code == 200
        assert ready.json()["config_version"] == 0


def test_several_workers_serve(tmp_path: Path, upstream_a: int) -> None:
    with gateway(tmp_path, _cfg(tmp_path, upstream_a), workers=2) as gw:
        for _ in range(20):
            with httpx.Client(base_url=gw.url) as c:
                assert c.get("/demo/health").status_code == 200
