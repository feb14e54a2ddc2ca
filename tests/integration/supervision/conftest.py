"""Fixtures: a demo upstream and a one-route gateway config in front of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support.servers import granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with granian_app(DEMO) as port:
        yield port


@pytest.fixture
def config_file(tmp_path: Path, upstream: int) -> Path:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "services": [{"name": "demo", "url": f"http://127.0.0.1:{upstream}"}],
                "routes": [{"name": "demo", "service": "demo", "paths": ["/demo"]}],
            }
        )
    )
    return cfg
