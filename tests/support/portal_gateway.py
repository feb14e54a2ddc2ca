"""A gateway with the demo API in its portal catalogue, as the portal's browser tests use
it: the demo API's v2 (examples/openapi/demo-v2.yaml) on route `demo-v2` (/v2) with
key-auth and a rate limit per consumer, access granted at once (automatic approval),
in front of an upstream that answers every request with one JSON item. Request rows are
logged every 0.2 s (the usage pages show a call soon) and the portal's outbox page is on
(sign-up mail)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from support.raw_upstream import RawUpstream, keep_alive_handler, response
from support.servers import Gateway, gateway
from support.threaded_upstream import threaded_upstream

DEMO_V2 = Path(__file__).resolve().parents[2] / "examples" / "openapi" / "demo-v2.yaml"
ITEMS = b'[{"id":1,"name":"pen","price":1.5}]'


@contextmanager
def items_upstream() -> Iterator[RawUpstream]:
    """An upstream answering 200 with ITEMS (JSON) to every request."""
    answer = response(200, ITEMS, [(b"content-type", b"application/json")])
    with threaded_upstream(keep_alive_handler(lambda request: answer)) as server:
        yield server


def demo_api_config(upstream_port: int) -> dict[str, Any]:
    return {
        "services": [{"name": "demo", "url": f"http://127.0.0.1:{upstream_port}"}],
        "routes": [{"name": "demo-v2", "service": "demo", "paths": ["/v2"]}],
        "plugins": [
            {"name": "key-auth", "route": "demo-v2", "config": {}},
            {
                "name": "rate-limit",
                "route": "demo-v2",
                "config": {
                    "policy_name": "demo",
                    "limits": [{"limit": 100, "period": "1h", "key": "consumer"}],
                },
            },
        ],
        "apis": [
            {
                "name": "demo",
                "title": "Demo API",
                "access": {"approval": "automatic"},
                "versions": [{"name": "v2", "routes": ["demo-v2"], "openapi_file": str(DEMO_V2)}],
            }
        ],
    }


@contextmanager
def demo_api_gateway(tmp: Path, upstream_port: int) -> Iterator[Gateway]:
    """`portcullis serve` (support.servers.gateway) with demo_api_config in `tmp`."""
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(demo_api_config(upstream_port)))
    env = {
        "PORTCULLIS_REQUEST_LOG_FLUSH_INTERVAL": "0.2",
        "PORTCULLIS_PORTAL_OUTBOX_VIEW": "true",
    }
    with gateway(tmp, path, extra_env=env) as running:
        yield running
