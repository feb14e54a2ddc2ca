"""The node's identity set, its changes, its last-known-good file and a worker's view."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

from portcullis.hybrid.edge_identity import (
    EdgeIdentity,
    IdentitySet,
    credentials_to_json,
    identity_store,
    key_from_json,
    key_to_json,
)
from portcullis.hybrid.protocol import Identity, parse_text
from portcullis.identity.credential_store import CredentialKind
from portcullis.identity.key_records import KeyRecord, KeyStatus
from portcullis.identity.keys import Environment
from portcullis.identity.secrets import ServerSecret

SECRET = ServerSecret.from_secret(b"s" * 32)


def record(key_id: str, status: KeyStatus = KeyStatus.active) -> KeyRecord:
    return KeyRecord(
        id=key_id,
        consumer="acme",
        name=key_id,
        environment=Environment("production"),
        scopes=frozenset({"a", "b"}),
        status=status,
        status_reason="gone" if status is not KeyStatus.active else None,
        expires_at=1_900_000_000.5,
        grace_until=None,
        allowed_origins=frozenset({"https://x.example"}),
        ip_allowlist=(ip_network("10.0.0.0/8"),),
        plan="gold",
        api_versions={"orders": "v2"},
    )


def test_a_key_record_survives_the_wire() -> None:
    assert key_from_json(key_to_json(record("k1"))) == record("k1")


def test_changes_add_replace_and_remove() -> None:
    ids = IdentitySet()
    ids.apply(5, {"keys": {"h1": key_to_json(record("k1")), "h2": key_to_json(record("k2"))}})
    keys, _ = ids.apply(
        7,
        {
            "keys": {"h1": key_to_json(record("k1", KeyStatus.revoked)), "h2": None},
            "credentials": {"basic:bob": credentials_to_json([("c1", "bob", None, b"$argon2")])},
        },
    )
    assert sorted(keys) == ["h1", "h2"]
    assert ids.seq == 7
    assert ids.keys["h1"].status is KeyStatus.revoked
    assert "h2" not in ids.keys
    assert ids.credentials["basic:bob"] == (("c1", "bob", None, b"$argon2"),)
    ids.apply(8, {"credentials": {"basic:bob": []}})
    assert ids.credentials == {}


def test_replace_reports_only_what_differs() -> None:
    ids = IdentitySet()
    ids.apply(1, {"keys": {"h1": key_to_json(record("k1")), "h2": key_to_json(record("k2"))}})
    whole = {"keys": {"h1": key_to_json(record("k1")), "h3": key_to_json(record("k3"))}}
    keys, credentials = ids.replace(9, whole)
    assert sorted(keys) == ["h2", "h3"]
    assert credentials == []
    assert set(ids.keys) == {"h1", "h3"}


def test_the_identity_message_round_trips() -> None:
    message = Identity(3, True, {"keys": {"h": key_to_json(record("k"))}, "credentials": {}})
    assert parse_text(message.encode()) == message


async def test_a_worker_follows_changes_and_evicts_what_changed(tmp_path: Path) -> None:
    ids = IdentitySet()
    ids.apply(1, {"keys": {"h1": key_to_json(record("k1"))}})
    store = identity_store(tmp_path)
    first = store.save(ids.seq, ids.body())
    edge = EdgeIdentity(store, SECRET)
    evicted: list[str] = []
    edge.on_keys = evicted.append
    await edge.refresh()
    assert (await edge.find_by_hash("h1")) == record("k1")
    assert edge.loads == {"whole": 1, "changes": 0}

    change = {"keys": {"h1": key_to_json(record("k1", KeyStatus.suspended))}}
    ids.apply(2, change)
    store.save(ids.seq, ids.body(), (first.version, first.checksum, [change]))
    evicted.clear()
    await edge.refresh()
    assert edge.loads == {"whole": 1, "changes": 1}  # the header line, not the whole file
    assert evicted == ["h1"]
    found = await edge.find_by_hash("h1")
    assert found is not None
    assert found.status is KeyStatus.suspended


async def test_hmac_secrets_travel_encrypted_and_are_decrypted_on_lookup(tmp_path: Path) -> None:
    stored = SECRET.encrypt(b"shared", context=b"c9")
    assert b"shared" not in stored
    ids = IdentitySet()
    ids.apply(1, {"credentials": {"hmac:k": credentials_to_json([("c9", "acme", None, stored)])}})
    assert b"shared" not in ids.body()
    store = identity_store(tmp_path)
    store.save(ids.seq, ids.body())
    edge = EdgeIdentity(store, SECRET)
    await edge.refresh()
    (found,) = await edge.find(CredentialKind.HMAC, "k")
    assert (found.consumer, found.secret) == ("acme", b"shared")
    assert await edge.find(CredentialKind.BASIC, "k") == ()


async def test_a_corrupt_newest_identity_file_falls_back_to_the_older(tmp_path: Path) -> None:
    ids = IdentitySet()
    ids.apply(1, {"keys": {"h1": key_to_json(record("k1"))}})
    store = identity_store(tmp_path)
    store.save(ids.seq, ids.body())
    ids.apply(2, {"keys": {"h1": key_to_json(record("k1", KeyStatus.revoked))}})
    store.save(ids.seq, ids.body())
    _, newest = store.generations()[0]
    newest.write_bytes(newest.read_bytes()[:-5])
    edge = EdgeIdentity(identity_store(tmp_path), SECRET)
    await edge.refresh()
    assert edge.set.seq == 1
    found = await edge.find_by_hash("h1")
    assert found is not None
    assert found.status is KeyStatus.active


async def test_the_agent_persists_each_message_and_restarts_from_its_file(tmp_path: Path) -> None:
    from portcullis.hybrid.node import NodeAgent
    from portcullis.settings import Settings

    settings = Settings(
        role="data-plane",
        control_plane_url="http://127.0.0.1:1",
        cluster_token="t" * 32,
        lkg_dir=tmp_path / "lkg",
    )
    node = NodeAgent(settings)
    whole = {"keys": {"h1": key_to_json(record("k1")), "h2": key_to_json(record("k2"))}}
    node._apply_identity(Identity(4, True, {**whole, "credentials": {}}))
    revoke = {"keys": {"h2": key_to_json(record("k2", KeyStatus.revoked))}, "credentials": {}}
    node._apply_identity(Identity(6, False, revoke))
    assert node.status.identity_seq == 6
    store = identity_store(settings.lkg_dir)
    step = store.step(4, store.read(*store.generations()[1]).checksum)
    assert step is not None
    assert step.deltas == [revoke]  # workers holding generation 4 read one line

    again = NodeAgent(settings)
    await again.load_last_known_good()
    assert again.identity.seq == 6
    assert len(again.identity) == 2
    edge = EdgeIdentity(store, SECRET)
    await edge.refresh()
    found = await edge.find_by_hash("h2")
    assert found is not None
    assert found.status is KeyStatus.revoked


async def test_oauth_signing_keys_and_revoked_tokens_reach_jwt_auth(tmp_path: Path) -> None:
    import json
    import time

    import jwt

    from portcullis.identity.oauth_clients import client_revocation_id
    from portcullis.identity.signing import generate_key

    private, public = generate_key("ES256")
    kid = public["kid"]
    ids = IdentitySet(records=False)  # as the node agent holds it
    issuer = {
        "keys": {kid: [json.dumps(public), None], "old": [json.dumps(public), time.time() - 1]},
        "revoked": {"jti-1": time.time() + 60, client_revocation_id("gone"): time.time() + 60},
    }
    ids.apply(3, {"issuer": issuer})
    store = identity_store(tmp_path)
    store.save(ids.seq, ids.body())
    edge = EdgeIdentity(store, SECRET)
    await edge.refresh()
    keys = edge.issuer_keys("https://gw.example")
    key = keys.key_for(kid)
    assert key is not None
    token = jwt.encode({"sub": "x"}, private, algorithm="ES256")
    assert jwt.decode(token, key.key, algorithms=["ES256"]) == {"sub": "x"}
    assert keys.key_for("old") is None  # past its remove-after
    assert keys.key_for("unknown") is None
    assert keys.is_revoked("jti-1")
    assert not keys.is_revoked("jti-2")
    assert keys.client_revoked("gone")

    # A later change replaces the issuer part whole (a key retired, a revocation added).
    change = {"issuer": {"keys": {}, "revoked": {"jti-2": time.time() + 60}}}
    first = store.newest()
    assert first is not None
    ids.apply(4, change)
    store.save(ids.seq, ids.body(), (first.version, first.checksum, [change]))
    await edge.refresh()
    assert keys.key_for(kid) is None
    assert keys.is_revoked("jti-2")
    assert not keys.is_revoked("jti-1")


def test_a_node_with_another_server_secret_says_so(tmp_path: Path) -> None:
    from portcullis.hybrid.edge_identity import pepper_check
    from portcullis.hybrid.node import NodeAgent
    from portcullis.identity.secrets import load_server_secret
    from portcullis.settings import Settings

    settings = Settings(
        role="data-plane",
        control_plane_url="http://127.0.0.1:1",
        cluster_token="t" * 32,
        lkg_dir=tmp_path / "lkg",
        secret_key="node-secret-" + "n" * 32,
    )
    node = NodeAgent(settings)
    same = pepper_check(load_server_secret(settings.secret_key, settings.secret_key_file))
    node._apply_identity(Identity(1, True, {"pepper_check": same}))
    assert not node.status.secret_mismatch
    node._apply_identity(Identity(2, True, {"pepper_check": pepper_check(SECRET)}))
    assert node.status.secret_mismatch
    node.status.version = 1
    status, body = node.status.readiness(0.0)
    assert status == 503  # not ready: it would refuse every key
    assert "identity_warning" in body
