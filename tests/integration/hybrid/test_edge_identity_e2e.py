"""Identity at the edge end to end: one control plane, one data-plane node (no database).

Keys are made and revoked with the CLI on the control plane's store; the node learns
them over the cluster WebSocket (hybrid/identity_feed.py) and, restarted while the
control plane is down, from its identity last-known-good file. The revocation delay
is printed, never asserted. The tests run in order: the last stops the control plane.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from support.admin_session import signed_in_owner
from support.hybrid import Node, cluster_control_plane, data_plane_node, wait_served
from support.servers import granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"
AUDIENCE = "orders-api"
# Both roles hash keys with the same server secret (the node must, to match hashes).
SECRET = {"PORTCULLIS_SECRET_KEY": "edge-identity-test-secret-0123456789abcdef"}


def config(upstream: int) -> dict[str, object]:
    return {
        "services": [{"name": "demo", "url": f"http://127.0.0.1:{upstream}"}],
        "routes": [
            {"name": "keyed", "service": "demo", "paths": ["/keyed"]},
            {"name": "basic", "service": "demo", "paths": ["/basic"]},
            {"name": "tokens", "service": "demo", "paths": ["/tokens"]},
        ],
        "consumers": [{"username": "acme"}],
        "plugins": [
            {"name": "key-auth", "route": "keyed", "config": {}},
            {"name": "basic-auth", "route": "basic", "config": {}},
            {
                "name": "jwt-auth",
                "route": "tokens",
                "config": {"gateway_tokens": True, "audiences": [AUDIENCE]},
            },
        ],
    }


@dataclass
class Cluster:
    tmp: Path
    control_plane: Node
    node: Node
    lkg_dir: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("edgeid")
    lkg = tmp / "lkg"
    with granian_app(DEMO) as upstream:
        first = tmp / "gateway.yaml"
        first.write_text(yaml.safe_dump(config(upstream)))
        with (
            cluster_control_plane(
                tmp, first, {**SECRET, "PORTCULLIS_OAUTH_AUDIENCE": AUDIENCE}
            ) as cp,
            data_plane_node(tmp, cp.admin_url, lkg, extra_env=SECRET) as node,
        ):
            yield Cluster(tmp, cp, node, lkg)


def status(node: Node, key: str) -> int:
    return httpx.get(f"{node.url}/keyed/health", headers={"x-api-key": key}, timeout=10).status_code


def wait_status(node: Node, key: str, expected: int, since: float, timeout: float = 30.0) -> float:
    """Poll until the node answers `expected` for `key`; seconds since `since`."""
    deadline = time.monotonic() + timeout
    while (got := status(node, key)) != expected:
        assert time.monotonic() < deadline, f"still {got}, wanted {expected}"
        time.sleep(0.005)
    return time.monotonic() - since


def create_key(cp: Node, name: str) -> tuple[str, str]:
    out = json.loads(cp.cli("keys", "create", "acme", "--name", name, "--json").stdout)
    return out["id"], out["key"]


def test_keys_reach_the_node_and_a_revocation_is_enforced(cluster: Cluster) -> None:
    cp, node = cluster.control_plane, cluster.node
    wait_served(f"{node.url}/keyed/health", 401)
    key_id, key = create_key(cp, "first")
    created = time.monotonic()
    taken = wait_status(node, key, 200, created)
    print(f"\nnew key: `keys create` returned -> accepted by the node in {taken * 1000:.0f} ms")
    assert status(node, key + "x") == 401
    cp.cli("keys", "revoke", key_id)
    revoked = time.monotonic()
    delay = wait_status(node, key, 401, revoked)
    print(f"revocation: `keys revoke` returned -> refused by the node in {delay * 1000:.0f} ms")
    ready = node.ready().json()
    assert ready["identity_seq"] > 0
    assert "identity_warning" not in ready  # the same server secret on both sides


def test_a_basic_auth_credential_reaches_the_node_and_its_deletion_too(cluster: Cluster) -> None:
    cp, node = cluster.control_plane, cluster.node
    made = json.loads(cp.cli("credentials", "create", "basic", "acme", "--json").stdout)
    url = f"{node.url}/basic/health"

    def answer() -> int:
        return httpx.get(url, auth=("acme", made["secret"]), timeout=10).status_code

    deadline = time.monotonic() + 30
    while answer() != 200:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert httpx.get(url, auth=("acme", "wrong"), timeout=10).status_code == 401
    cp.cli("credentials", "delete", "basic", "acme", made["id"])
    while answer() != 401:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_a_gateway_issued_token_is_verified_on_the_node_and_its_revocation_enforced(
    cluster: Cluster,
) -> None:
    cp, node = cluster.control_plane, cluster.node
    with signed_in_owner(cp, "owner@example.com") as admin:
        client = admin.post("/admin/v1/consumers/acme/oauth-clients", json={"name": "c"})
        assert client.status_code == 201, client.text
    auth = (client.json()["client_id"], client.json()["client_secret"])
    minted = httpx.post(
        f"{cp.admin_url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=auth,
        timeout=10,
    )
    assert minted.status_code == 200, minted.text
    token = minted.json()["access_token"]
    url = f"{node.url}/tokens/health"

    def answer() -> int:
        return httpx.get(url, headers={"authorization": f"Bearer {token}"}, timeout=10).status_code

    since = time.monotonic()
    deadline = since + 30
    while answer() != 200:  # the signing key (made at the first token) reaches the node
        assert time.monotonic() < deadline
        time.sleep(0.005)
    revoked = httpx.post(f"{cp.admin_url}/oauth/revoke", data={"token": token}, auth=auth)
    assert revoked.status_code == 200, revoked.text
    since = time.monotonic()
    while answer() != 401:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    print(
        f"\ntoken revocation -> refused by the node in {(time.monotonic() - since) * 1000:.0f} ms"
    )


def test_a_node_restarted_without_the_control_plane_uses_its_identity_lkg(
    cluster: Cluster,
) -> None:
    cp, node = cluster.control_plane, cluster.node
    _, good = create_key(cp, "second")
    wait_status(node, good, 200, time.monotonic())
    bad_id, bad = create_key(cp, "third")
    wait_status(node, bad, 200, time.monotonic())
    cp.cli("keys", "revoke", bad_id)
    wait_status(node, bad, 401, time.monotonic())
    cp.stop()
    node.stop()
    with data_plane_node(cluster.tmp, cp.admin_url, cluster.lkg_dir, extra_env=SECRET) as again:
        assert status(again, good) == 200
        assert status(again, bad) == 401
        assert again.ready().json()["status"] == "stale"
    output = node.output()
    for trace in ("asyncpg", "sqlalchemy"):
        assert trace not in output, output[-2000:]
