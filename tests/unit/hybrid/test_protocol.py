"""Cluster protocol messages, the token check and the role settings."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from portcullis.hybrid.feed import delta_message
from portcullis.hybrid.node import NodeStatus, backoff_delay
from portcullis.hybrid.protocol import (
    Current,
    Delta,
    Hello,
    ProtocolError,
    Snapshot,
    bearer,
    is_resync,
    parse_binary,
    parse_hello,
    parse_text,
    token_matches,
)
from portcullis.hybrid.roles import role_problems, websocket_url
from portcullis.settings import Settings

TOKEN = "t" * 32


def test_hello_round_trip() -> None:
    hello = Hello("node-1", 12, "abc")
    assert parse_hello(hello.encode()) == hello


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"type": "current", "version": 1}',
        '{"type": "hello", "protocol": 2, "node": "n", "version": 1, "checksum": ""}',
        '{"type": "hello", "protocol": 1, "node": "n", "version": -1, "checksum": ""}',
        '{"type": "hello", "protocol": 1, "node": "n", "version": true, "checksum": ""}',
        '{"type": "hello", "protocol": 1, "node": 5, "version": 1, "checksum": ""}',
    ],
)
def test_a_bad_hello_is_refused(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_hello(text)


def test_snapshot_round_trip_and_checksum() -> None:
    import hashlib

    body = b'{"routes":[]}'
    snapshot = Snapshot(3, hashlib.sha256(body).hexdigest(), body)
    parsed = parse_binary(snapshot.encode())
    assert parsed == snapshot
    assert parsed.verified()
    assert not Snapshot(3, "0" * 64, body).verified()


def test_a_truncated_snapshot_is_refused() -> None:
    data = Snapshot(3, "x", b'{"routes":[]}').encode()
    with pytest.raises(ProtocolError):
        parse_binary(data[:-2])
    with pytest.raises(ProtocolError):
        parse_binary(b"no header at all")


def test_delta_message_from_stored_texts() -> None:
    texts = ['{"set":{"plugins":[]}}', '{"splice":{"routes":[0,1,[]]}}']
    message = parse_text(delta_message(4, 6, "sum", texts))
    assert message == Delta(4, 6, "sum", [json.loads(t) for t in texts])
    assert parse_text(message.encode()) == message


def test_deltas_must_lead_from_start_to_end() -> None:
    with pytest.raises(ProtocolError):
        parse_text(delta_message(4, 7, "sum", ['{"set":{}}']))


def test_current_and_resync() -> None:
    assert parse_text(Current(9).encode()) == Current(9)
    assert is_resync('{"type":"resync"}')
    assert not is_resync("nope")
    with pytest.raises(ProtocolError):
        parse_text('{"type": "surprise"}')


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (f"Bearer {TOKEN}", TOKEN),
        (f"bearer  {TOKEN} ", TOKEN),
        ("Basic abc", None),
        ("Bearer ", None),
        (None, None),
    ],
)
def test_bearer(header: str | None, token: str | None) -> None:
    assert bearer(header) == token


def test_token_matches() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN[:-1] + "u", TOKEN)
    assert not token_matches(TOKEN + "t", TOKEN)
    assert not token_matches(None, TOKEN)
    assert not token_matches("", "")  # clustering off: nothing matches
    assert not token_matches(TOKEN, None)
    assert not token_matches("é" * 16, TOKEN)  # non-ASCII compares as bytes, no error


def settings(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


def test_all_needs_nothing() -> None:
    assert role_problems(settings()) == []


def test_control_plane_needs_a_long_token() -> None:
    assert (
        "PORTCULLIS_CLUSTER_TOKEN is required" in role_problems(settings(role="control-plane"))[0]
    )
    short = role_problems(settings(role="control-plane", cluster_token="short"))
    assert "at least 32" in short[0]
    assert role_problems(settings(role="control-plane", cluster_token=TOKEN)) == []


@pytest.mark.parametrize(
    ("url", "insecure", "problem"),
    [
        (None, False, "PORTCULLIS_CONTROL_PLANE_URL is required"),
        ("ftp://cp", False, "is not an http(s):// URL"),
        ("cp.example:8001", False, "is not an http(s):// URL"),
        ("http://cp.example:8001", False, "plain http:// to a host that is not loopback"),
        ("ws://10.0.0.5:8001", False, "plain ws://"),
        ("http://cp.example:8001", True, None),
        ("http://127.0.0.1:8001", False, None),
        ("http://[::1]:8001", False, None),
        ("http://localhost:8001", False, None),
        ("https://cp.example", False, None),
    ],
)
def test_data_plane_url(url: str | None, insecure: bool, problem: str | None) -> None:
    found = role_problems(
        settings(
            role="data-plane", cluster_token=TOKEN, control_plane_url=url, cluster_insecure=insecure
        )
    )
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1
        assert problem in found[0]


def test_data_plane_ca_file_must_exist(tmp_path: Path) -> None:
    found = role_problems(
        settings(
            role="data-plane",
            cluster_token=TOKEN,
            control_plane_url="https://cp",
            cluster_ca_file=tmp_path / "nope.pem",
        )
    )
    assert "is not a file" in found[0]


def test_websocket_url() -> None:
    assert websocket_url("https://cp.example") == "wss://cp.example/cluster/v1/connect"
    assert websocket_url("http://127.0.0.1:8001/") == "ws://127.0.0.1:8001/cluster/v1/connect"
    assert websocket_url("https://lb/gw") == "wss://lb/gw/cluster/v1/connect"


def test_backoff_doubles_to_the_ceiling_with_jitter() -> None:
    rand = random.Random(4)
    delays = [backoff_delay(n, 0.5, 10.0, rand) for n in range(12)]
    for n, delay in enumerate(delays):
        base = min(10.0, 0.5 * 2**n)
        assert 0.5 * base <= delay < 1.5 * base
    assert len({round(d, 6) for d in delays[6:]}) > 1  # at the ceiling, still spread


def test_readiness() -> None:
    status = NodeStatus()
    code, body = status.readiness(100.0)
    assert code == 503
    assert "no config yet" in body["detail"]
    status.version, status.received_at, status.connected = 4, 90.0, True
    assert status.readiness(100.0) == (
        200,
        {
            "status": "ok",
            "role": "data-plane",
            "config_version": 4,
            "identity_seq": 0,
            "connected": True,
            "config_age_seconds": 10.0,
        },
    )
    status.connected, status.disconnected_at, status.last_error = False, 95.0, "refused"
    code, body = status.readiness(100.0)
    assert code == 200
    assert body["status"] == "stale"
    assert body["detail"] == "serving stale config (version 4, age 10 s)"
    assert body["disconnected_seconds"] == 5.0


def test_the_planes_of_each_role() -> None:
    from portcullis.supervision.planes import NODE_AGENT_MODULE, role_planes

    def names(role: str) -> list[str]:
        return [p.name for p in role_planes(settings(role=role))]

    assert names("all") == ["data plane", "control plane"]
    assert names("control-plane") == ["control plane"]
    assert names("data-plane") == ["data plane", "node agent"]
    agent = role_planes(settings(role="data-plane", admin_port=8100))[1]
    assert agent.argv[-1] == NODE_AGENT_MODULE
    assert agent.port == 8100
