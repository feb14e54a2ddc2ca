"""The log phase: a route's log plugins get every finished request's record (refusals
too, with no other observer installed), identical configs share one shipper, a new
snapshot keeps the running shipper, and one the config dropped is drained and stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from portcullis.asgi import Message
from portcullis.logship.shipper import ShipperRegistry
from portcullis.model.config import GatewayConfig
from portcullis.plugins.env import PluginEnv
from portcullis.proxy.app import ProxyApp
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import build_snapshot
from portcullis.settings import Settings
from portcullis.upstream.transport import Transport
from support.records import make_record
from support.threaded_upstream import eventually


class _NoUpstream:
    async def aclose(self) -> None:
        return None


def _config(log: Path, *, extra: list[dict[str, Any]] | None = None) -> GatewayConfig:
    file_log = {"path": str(log), "flush_interval": 0.01}
    return GatewayConfig.model_validate(
        {
            "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
            "routes": [
                {"name": "a", "service": "svc", "paths": ["/a"]},
                {"name": "b", "service": "svc", "paths": ["/b"]},
            ],
            "plugins": [
                {"name": "request-termination", "config": {"status_code": 200, "message": "ok"}},
                {"name": "ip-restriction", "route": "b", "config": {"deny": ["10.0.0.0/8"]}},
                {"name": "file-log", "route": "a", "config": file_log},
                {"name": "file-log", "route": "b", "config": file_log},
                # Global: the routes have their own, so it only sees unrouted requests.
                {"name": "file-log", "config": {**file_log, "path": f"{log}.unrouted"}},
                *(extra or []),
            ],
        }
    )


async def _get(app: ProxyApp, path: str, query: bytes = b"") -> int:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
        "query_string": query, "scheme": "http", "server": ("127.0.0.1", 8000),
        "client": ("10.1.2.3", 5555), "headers": [(b"host", b"gw")],
    }  # fmt: skip
    await app(scope, receive, send)
    return int(sent[0]["status"])


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_log_plugins_see_every_request_and_share_one_shipper(tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    registry = ShipperRegistry()
    env = PluginEnv(shippers=registry)
    snapshot = build_snapshot(_config(log), 1, env=env)
    assert snapshot.logs
    # The routes' two instances share one shipper; the global one has its own.
    assert len(snapshot.shippers) == 2
    holder = SnapshotHolder(snapshot)
    transport: Transport = _NoUpstream()  # type: ignore[assignment]
    app = ProxyApp(Settings(), holder, transport)
    assert app.observers == ()
    assert await _get(app, "/a", b"apikey=pc_live_secret") == 200
    assert await _get(app, "/b") == 403  # refused by ip-restriction: logged all the same
    assert await _get(app, "/nowhere") == 404  # no route: the operator's global plugins
    await eventually(lambda: len(_lines(log)) == 2)
    unrouted = Path(f"{log}.unrouted")
    await eventually(lambda: len(_lines(unrouted)) == 1)
    assert _lines(unrouted)[0]["status"] == 404
    assert _lines(unrouted)[0]["route"] is None
    first, second = _lines(log)
    assert (first["route"], first["status"], first["path"]) == ("a", 200, "/a")
    assert (second["route"], second["status"]) == ("b", 403)
    assert "pc_live_secret" not in log.read_text()

    # Same config again: the running shipper carries on.
    same = build_snapshot(_config(log), 2, previous=snapshot, env=env)
    assert same.shippers == snapshot.shippers
    await holder.swap(same, transport)
    assert not any(s.closed for s in snapshot.shippers)

    # The plugin leaves the config: its shipper drains what it holds and stops.
    shipper = next(s for s in snapshot.shippers if s.stats.destination == str(log))
    shipper.offer(make_record(9, route="a"))
    gone = build_snapshot(GatewayConfig(), 3, previous=same, env=env)
    assert gone.shippers == ()
    assert not gone.logs
    await holder.swap(gone, transport)
    await eventually(lambda: shipper.closed and not shipper.running)
    assert len(_lines(log)) == 3
    assert await _get(app, "/a") == 404
    await registry.aclose()


def test_a_tenants_global_log_plugin_never_sees_unrouted_requests() -> None:
    config = GatewayConfig.model_validate(
        {
            "plugins": [
                {"name": "file-log", "organization": "acme", "config": {"path": "/tmp/acme.log"}},
            ],
        }
    )
    snapshot = build_snapshot(config, 1, env=PluginEnv(shippers=ShipperRegistry()))
    assert snapshot.unrouted_log == ()
