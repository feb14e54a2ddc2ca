"""Hybrid mode end to end: one control plane, one data-plane node, real processes.

The node has no database (its PORTCULLIS_DATABASE_URL points nowhere): every config
it serves came over the cluster WebSocket or from its last-known-good directory.
The tests share one topology and run in order: the last one stops the control plane.
Figures are printed (propagation, cold start from last-known-good), never asserted.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import pytest
import yaml

from portcullis.hybrid.lkg import LkgStore, StoredSnapshot
from portcullis.hybrid.protocol import (
    CLOSE_BAD_TOKEN,
    CLOSE_PROTOCOL,
    PATH,
    RESYNC,
    Delta,
    Hello,
    Identity,
    parse_binary,
    parse_text,
)
from portcullis.supervision.planes import NODE_AGENT_MODULE
from support.hybrid import (
    CLUSTER_TOKEN,
    Node,
    cluster_control_plane,
    data_plane_node,
    served,
    wait_served,
)
from support.servers import free_port, granian_app, stop_process, wait_for_port

DEMO = "portcullis.demo.upstream:create_demo_app"


def config(upstream: int, *paths: str) -> dict[str, object]:
    return {
        "services": [{"name": "demo", "url": f"http://127.0.0.1:{upstream}"}],
        "routes": [
            {"name": p.strip("/").replace("/", "-"), "service": "demo", "paths": [p]} for p in paths
        ],
    }


@dataclass
class Cluster:
    tmp: Path
    upstream: int
    control_plane: Node
    node: Node
    lkg_dir: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("hybrid")
    lkg = tmp / "lkg"
    with granian_app(DEMO) as upstream:
        first = tmp / "v1.yaml"
        first.write_text(yaml.safe_dump(config(upstream, "/demo")))
        with (
            cluster_control_plane(tmp, first) as cp,
            data_plane_node(tmp, cp.admin_url, lkg) as node,
        ):
            yield Cluster(tmp, upstream, cp, node, lkg)


def first_answer(url: str) -> int:
    """The status of one request (no retry: the first answer must already be right)."""
    return httpx.get(url, timeout=30).status_code


def metric(cp: Node, name: str) -> float:
    text = httpx.get(f"{cp.admin_url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_a_route_created_on_the_control_plane_is_served_by_the_node(cluster: Cluster) -> None:
    node, cp = cluster.node, cluster.control_plane
    first = wait_served(f"{node.url}/demo/health")
    print(f"\nnode serving version 1 {first:.2f} s after its ports listened")
    assert served(f"{node.url}/new/health", 404)
    second = cluster.tmp / "v2.yaml"
    second.write_text(yaml.safe_dump(config(cluster.upstream, "/demo", "/new")))
    cp.cli("config", "apply", str(second))
    taken = wait_served(f"{node.url}/new/health")
    print(f"propagation: `config apply` returned -> served by the node in {taken * 1000:.0f} ms")
    body = node.ready().json()
    assert body["status"] == "ok"
    assert body["connected"] is True
    assert body["config_version"] == 2
    # Version 1 came whole (a new node); version 2 as its stored delta.
    assert metric(cp, 'portcullis_cluster_config_messages_total{kind="snapshot"}') >= 1
    assert metric(cp, 'portcullis_cluster_config_messages_total{kind="delta"}') >= 1
    assert [s.version for s in (LkgStore(cluster.lkg_dir).newest(),) if s] == [2]
    assert len(LkgStore(cluster.lkg_dir).listing()) == 2


async def _refused_with(url: str, token: str | None) -> int | None:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers=headers) as ws,
    ):
        await ws.send_str(Hello("intruder", 0, "").encode())
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        return ws.close_code


def test_a_wrong_token_is_refused_and_counted(cluster: Cluster) -> None:
    cp = cluster.control_plane
    url = cp.admin_url.replace("http", "ws") + PATH
    before = metric(cp, 'portcullis_cluster_connections_refused_total{reason="token"}')
    assert asyncio.run(_refused_with(url, "wrong-token-" + "x" * 30)) == CLOSE_BAD_TOKEN
    assert asyncio.run(_refused_with(url, None)) == CLOSE_BAD_TOKEN
    after = metric(cp, 'portcullis_cluster_connections_refused_total{reason="token"}')
    assert after - before == 2


async def _config_message(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """The next message about config (identity messages travel on the same socket)."""
    while True:
        message = await ws.receive(timeout=10)
        if message.type != aiohttp.WSMsgType.TEXT or not isinstance(
            parse_text(message.data), Identity
        ):
            return message


async def _conversation(url: str, older: StoredSnapshot) -> list[str]:
    """A node's side by hand: hello at the older version, a resync, a bad checksum."""
    seen: list[str] = []
    headers = {"Authorization": f"Bearer {CLUSTER_TOKEN}"}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers=headers) as ws:
            await ws.send_str(Hello("by-hand", older.version, older.checksum).encode())
            delta = parse_text((await _config_message(ws)).data)
            assert isinstance(delta, Delta)
            seen.append(f"delta {delta.start}->{delta.end}")
            await ws.send_str(RESYNC)
            snapshot = parse_binary((await _config_message(ws)).data)
            assert snapshot.verified()
            seen.append(f"snapshot {snapshot.version}")
        async with session.ws_connect(url, headers=headers) as ws:
            await ws.send_str(Hello("by-hand", older.version, "not-its-checksum").encode())
            snapshot = parse_binary((await _config_message(ws)).data)
            seen.append(f"snapshot {snapshot.version}")
        async with session.ws_connect(url, headers=headers) as ws:
            await ws.send_str('{"type": "hello"}')
            await ws.receive(timeout=10)
            seen.append(f"closed {ws.close_code}")
    return seen


def test_the_protocol_on_the_real_endpoint(cluster: Cluster) -> None:
    store = LkgStore(cluster.lkg_dir)
    generation, path = store.generations()[1]
    older = store.read(generation, path)
    url = cluster.control_plane.admin_url.replace("http", "ws") + PATH
    assert asyncio.run(_conversation(url, older)) == [
        "delta 1->2",
        "snapshot 2",
        "snapshot 2",
        f"closed {CLOSE_PROTOCOL}",
    ]


def test_a_node_agent_with_a_wrong_token_says_why_it_is_not_ready(cluster: Cluster) -> None:
    """The node agent alone (no data-plane workers: what it reports is the point)."""
    port = free_port()
    env = {
        **cluster.node.env,
        "PORTCULLIS_CLUSTER_TOKEN": "w" * 40,
        "PORTCULLIS_LKG_DIR": str(cluster.tmp / "lkg-wrong"),
        "PORTCULLIS_ADMIN_PORT": str(port),
    }
    agent = subprocess.Popen(
        [sys.executable, "-m", NODE_AGENT_MODULE],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, agent)
        deadline = time.monotonic() + 30
        while "4401" not in str(
            (answer := httpx.get(f"http://127.0.0.1:{port}/health/ready")).text
        ):
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.05)
        assert answer.status_code == 503
        assert "invalid cluster token" in answer.json()["last_error"]
        assert not (cluster.tmp / "lkg-wrong").exists()
    finally:
        stop_process(agent)


def test_the_node_outlives_the_control_plane_and_boots_from_last_known_good(
    cluster: Cluster,
) -> None:
    cluster.control_plane.stop()
    node = cluster.node
    # Connected nodes keep serving.
    assert served(f"{node.url}/new/health")
    deadline = time.monotonic() + 30
    while node.ready().json()["status"] != "stale":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    body = node.ready().json()
    assert node.ready().status_code == 200
    assert body["detail"].startswith("serving stale config (version 2, age ")
    assert served(f"{node.url}/new/health")
    node.stop()
    # Nothing on the node tried a database (its URL points at a port nothing listens on).
    output = node.output()
    for trace in ("asyncpg", "sqlalchemy", "heartbeat.failed", "config.refresh_failed"):
        assert trace not in output, output[-2000:]

    # Restarted while the control plane is down: serves from last-known-good, from its
    # very first request (a worker reads the directory before it serves).
    started = time.monotonic()
    with data_plane_node(cluster.tmp, cluster.control_plane.admin_url, cluster.lkg_dir) as again:
        assert first_answer(f"{again.url}/new/health") == 200
        print(
            f"\ncold start from last-known-good: served {time.monotonic() - started:.2f} s "
            "after `portcullis serve` was started"
        )
        assert again.ready().json()["detail"].startswith("serving stale config (version 2")

    # The newest snapshot corrupt: the node boots from the older one (version 1).
    store = LkgStore(cluster.lkg_dir)
    _, newest = store.generations()[0]
    newest.write_bytes(newest.read_bytes()[:-10])
    cp = cluster.control_plane
    with data_plane_node(cluster.tmp, cp.admin_url, cluster.lkg_dir) as third:
        assert first_answer(f"{third.url}/demo/health") == 200
        assert served(f"{third.url}/new/health", 404)
        assert third.ready().json()["config_version"] == 1
        assert any(p.name.endswith(".corrupt") for p in cluster.lkg_dir.iterdir())

        # A change made while the control plane is down (the CLI writes the store) reaches
        # the node once the control plane is back: the node reconnects by itself.
        later = cluster.tmp / "v3.yaml"
        later.write_text(yaml.safe_dump(config(cluster.upstream, "/demo", "/new", "/later")))
        cp.cli("config", "apply", str(later))
        with cluster_control_plane(cluster.tmp, None, admin_port=cp.admin_port) as back:
            taken = wait_served(f"{third.url}/later/health", timeout=60)
            print(f"control plane back: the node served version 3 {taken:.2f} s after it listened")
            body = third.ready().json()
            assert (body["status"], body["config_version"]) == ("ok", 3)
            assert metric(back, 'portcullis_cluster_config_messages_total{kind="delta"}') == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORTCULLIS_CONTROL_PLANE_URL": "http://cp.example:8001"}, "plain http:// to a host"),
        ({"PORTCULLIS_CLUSTER_TOKEN": ""}, "PORTCULLIS_CONTROL_PLANE_URL is required"),
    ],
)
def test_bad_data_plane_settings_exit_with_a_message(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "portcullis", "serve", "--role", "data-plane"],
        env={**os.environ, "PORTCULLIS_CLUSTER_TOKEN": "t" * 32, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr + result.stdout
