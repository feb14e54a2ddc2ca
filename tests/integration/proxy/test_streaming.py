"""Streamed responses reach the client chunk by chunk, not one chunk late.

The upstream (tests/support/stream_gate.py, under granian) sends `event: 1` and
then holds `event: 2` until the test releases it, which the test does only after
its client has read `event: 1` through the gateway. A gateway that relays a chunk
only when the next one arrives never delivers the first: the read times out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from support.servers import Gateway, gateway, granian_app

TESTS_DIR = str(Path(__file__).resolve().parents[2])


@pytest.fixture(scope="module")
def stream_upstream() -> Iterator[int]:
    with granian_app("support.stream_gate:create_app", env={"PYTHONPATH": TESTS_DIR}) as port:
        yield port


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, stream_upstream: int) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("stream")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "services": [{"name": "sse", "url": f"http://127.0.0.1:{stream_upstream}"}],
                "routes": [{"name": "sse", "service": "sse", "paths": ["/sse"]}],
            }
        )
    )
    with gateway(tmp, cfg) as g:
        yield g


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
def test_each_chunk_reaches_the_client_before_the_next_is_sent(
    gw: Gateway, stream_upstream: int, http2: bool
) -> None:
    # The read timeout is the failure deadline: a held-back first event never arrives.
    with (
        httpx.Client(base_url=gw.url, timeout=10, http1=not http2, http2=http2) as client,
        client.stream("GET", "/sse/stream") as r,
    ):
        assert r.status_code == 200
        assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        chunks = r.iter_raw()
        first = next(chunks)
        released = httpx.post(f"http://127.0.0.1:{stream_upstream}/release", timeout=10)
        rest = b"".join(chunks)
    assert first == b"event: 1\n\n"
    # The upstream had not sent event 2 when the client already had event 1.
    assert released.content == b"released"
    assert rest == b"event: 2\n\n"
