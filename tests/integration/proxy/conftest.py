"""Fixtures: demo upstreams under real granian, and a gateway (`portcullis serve`) in front."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support.servers import Gateway, free_port, gateway, granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"


@pytest.fixture(scope="module")
def upstream_a() -> Iterator[int]:
    with granian_app(DEMO, env={"PORTCULLIS_DEMO_INSTANCE": "a"}) as port:
        yield port


@pytest.fixture(scope="module")
def upstream_b() -> Iterator[int]:
    with granian_app(DEMO, env={"PORTCULLIS_DEMO_INSTANCE": "b"}) as port:
        yield port


def proxy_config(a: int, b: int, dead: int) -> dict[str, object]:
    """The routes the data-plane tests exercise."""
    return {
        "upstreams": [
            {"name": "single", "targets": [{"target": f"127.0.0.1:{a}"}]},
            {
                "name": "pair",
                "algorithm": "round-robin",
                "targets": [{"target": f"127.0.0.1:{a}"}, {"target": f"127.0.0.1:{b}"}],
            },
            {
                "name": "half-dead",
                "targets": [{"target": f"127.0.0.1:{a}"}, {"target": f"127.0.0.1:{dead}"}],
                "healthchecks": {"passive": {"unhealthy_failures": 1000}},
                "circuit_breaker": {"enabled": False},
            },
            {
                "name": "all-dead",
                "targets": [{"target": f"127.0.0.1:{dead}"}],
                "circuit_breaker": {"min_requests": 3, "failure_rate": 0.5, "open_for": 60},
                "healthchecks": {"passive": {"unhealthy_failures": 1000}},
            },
        ],
        "services": [
            {"name": "demo", "upstream": "single"},
            {"name": "demo-v1", "upstream": "single", "path": "/echo"},
            {"name": "pair", "upstream": "pair"},
            {"name": "retrying", "upstream": "half-dead", "retries": {"attempts": 2}},
            {"name": "dead", "upstream": "all-dead", "retries": {"attempts": 0}},
            {"name": "dead-url", "url": f"http://127.0.0.1:{dead}", "retries": {"attempts": 0}},
            {
                "name": "slow",
                "url": f"http://127.0.0.1:{a}",
                "timeouts": {"read": 0.5},
                "retries": {"attempts": 0},
            },
        ],
        "routes": [
            {"name": "demo", "service": "demo", "paths": ["/demo"]},
            {"name": "v1", "service": "demo-v1", "paths": ["/v1"]},
            {"name": "exact", "service": "demo", "paths": ["=/echo"], "strip_path": False},
            {
                "name": "item",
                "service": "demo",
                "paths": ["~^/items/(?P<item_id>[0-9]+)$"],
                "strip_path": False,
            },
            {
                "name": "preserve",
                "service": "demo",
                "paths": ["/keep-host"],
                "preserve_host": True,
            },
            {"name": "pair", "service": "pair", "paths": ["/pair"]},
            {"name": "retrying", "service": "retrying", "paths": ["/retrying"]},
            {"name": "dead", "service": "dead", "paths": ["/dead"]},
            {"name": "dead-url", "service": "dead-url", "paths": ["/dead-url"]},
            {"name": "slow", "service": "slow", "paths": ["/slow"]},
            {
                "name": "limited",
                "service": "demo",
                "paths": ["/limited"],
                "methods": ["POST"],
            },
            {"name": "ws", "service": "demo", "paths": ["/ws"], "strip_path": False},
        ],
        "plugins": [
            {"name": "request-size-limit", "route": "limited", "config": {"max_bytes": 1000}}
        ],
    }


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, upstream_a: int, upstream_b: int
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gw")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(proxy_config(upstream_a, upstream_b, free_port())))
    with gateway(tmp, cfg, extra_env={"PORTCULLIS_MAX_HEADER_BYTES": "16384"}) as g:
        yield g


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.yaml"
