"""Identity at the edge: the keys and consumer credentials a hybrid data plane knows.

The node has no database. The control plane sends its node agent the whole identity
set when the node connects and then each change as it commits (hybrid/identity_feed.py,
message type `identity`); the agent keeps the set and writes each version of it to the
node's last-known-good directory (`<lkg_dir>/identity`, the same atomic two-generation
files with a checksum as the config, hybrid/lkg.py). The node's workers read the set
from there (`EdgeIdentity`, polled every 50 ms like the config: a directory listing,
the header line's changes when they hold the generation before, else the whole file)
and answer the credential caches' store lookups from memory.

What travels is what the store keeps, never a secret: API keys by their peppered hash
(the node needs the same server secret to hash a presented key), basic-auth passwords
as argon2 hashes, hmac secrets encrypted with the server secret (decrypted on lookup,
as the store's own lookup does), mtls bindings as the identifier alone. Revoked and
suspended keys travel too, with their status, so key-auth answers them as it does in
the embedded mode (403 with the reason); expiry is each record's `expires_at`.

A change is `{"keys": {hash: record | null}, "credentials": {subject: [...]}}`; null /
an empty list removes the entry. The per-request path is unchanged: the worker's
`CredentialCache` answers hits from its own dict; a changed entry is evicted from it
(`invalidate`), and the next request for it misses into this set (no I/O).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import structlog

from portcullis.hybrid.lkg import LkgStore, StoredSnapshot
from portcullis.identity.credential_store import CredentialKind, CredentialRecord
from portcullis.identity.key_admin import parse_networks
from portcullis.identity.key_records import KeyRecord, KeyStatus
from portcullis.identity.keys import Environment
from portcullis.identity.secrets import ServerSecret
from portcullis.periodic import Periodic

log = structlog.get_logger(__name__)

IDENTITY_DIR = "identity"
POLL_INTERVAL = 0.05

# subject -> [(id, consumer, organization id, stored secret)]
Stored = tuple[tuple[str, str, str | None, bytes], ...]


def key_to_json(record: KeyRecord) -> list[Any]:
    return [
        record.id,
        record.consumer,
        record.name,
        record.environment.value,
        sorted(record.scopes),
        record.status.value,
        record.status_reason,
        record.expires_at,
        record.grace_until,
        sorted(record.allowed_origins),
        [str(n) for n in record.ip_allowlist],
        record.plan,
        dict(record.api_versions),
    ]


def key_from_json(v: list[Any]) -> KeyRecord:
    return KeyRecord(
        id=v[0],
        consumer=v[1],
        name=v[2],
        environment=Environment(v[3]),
        scopes=frozenset(v[4]),
        status=KeyStatus(v[5]),
        status_reason=v[6],
        expires_at=v[7],
        grace_until=v[8],
        allowed_origins=frozenset(v[9]),
        ip_allowlist=parse_networks(v[10]),
        plan=v[11],
        api_versions=dict(v[12]),
    )


def credentials_to_json(entries: Stored | list[tuple[str, str, str | None, bytes]]) -> list[Any]:
    return [[i, c, o, base64.b64encode(s).decode()] for i, c, o, s in entries]


def credentials_from_json(v: list[Any]) -> Stored:
    return tuple((e[0], e[1], e[2], base64.b64decode(e[3])) for e in v)


class IdentitySet:
    """The keys (hash -> record) and credentials (subject -> stored) a node knows, at
    `seq` (the control plane's invalidation-feed position they reflect)."""

    def __init__(self) -> None:
        self.seq = 0
        self.keys: dict[str, KeyRecord] = {}
        self.credentials: dict[str, Stored] = {}

    def apply(self, seq: int, changes: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """Apply a change (module doc); the key hashes and credential subjects it named."""
        keys = changes.get("keys") or {}
        for key_hash, value in keys.items():
            if value is None:
                self.keys.pop(key_hash, None)
            else:
                self.keys[key_hash] = key_from_json(value)
        credentials = changes.get("credentials") or {}
        for subject, value in credentials.items():
            if value:
                self.credentials[subject] = credentials_from_json(value)
            else:
                self.credentials.pop(subject, None)
        self.seq = max(self.seq, seq)
        return list(keys), list(credentials)

    def replace(self, seq: int, changes: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """Become the whole set in `changes`; the entries that differ from before."""
        old_keys, old_credentials = self.keys, self.credentials
        self.keys, self.credentials, self.seq = {}, {}, 0
        self.apply(seq, changes)
        changed_keys = [
            h for h in old_keys.keys() | self.keys.keys() if old_keys.get(h) != self.keys.get(h)
        ]
        changed_credentials = [
            s
            for s in old_credentials.keys() | self.credentials.keys()
            if old_credentials.get(s) != self.credentials.get(s)
        ]
        return changed_keys, changed_credentials

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": {h: key_to_json(r) for h, r in self.keys.items()},
            "credentials": {s: credentials_to_json(c) for s, c in self.credentials.items()},
        }

    def body(self) -> bytes:
        """The set as the identity file's body (sorted: the same set, the same bytes)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def load(cls, stored: StoredSnapshot) -> IdentitySet:
        found = cls()
        found.apply(stored.version, json.loads(stored.body))
        return found


def identity_store(lkg_dir: Any) -> LkgStore:
    from pathlib import Path

    return LkgStore(Path(lkg_dir) / IDENTITY_DIR)


class EdgeIdentity:
    """A worker's view of the node's identity set; the store side of its caches.

    `on_keys` / `on_credentials` are called with what changed at each reload (the
    caches' `invalidate`)."""

    def __init__(
        self,
        store: LkgStore,
        secret: ServerSecret,
        *,
        interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._secret = secret
        self.set = IdentitySet()
        self._checksum = ""
        self._listing: tuple[str, ...] | None = None
        self.on_keys: Callable[[str], None] = lambda _: None
        self.on_credentials: Callable[[str], None] = lambda _: None
        self.loads = {"whole": 0, "changes": 0}
        self._poller = Periodic("edge-identity", self.refresh, interval=interval)

    # -- KeyLookup ------------------------------------------------------------------------

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        return self.set.keys.get(key_hash)

    async def touch_used(self, stamps: dict[str, datetime]) -> None:
        return None  # last-used times do not reach the control plane yet (docs/hybrid.md)

    # -- CredentialFinder -----------------------------------------------------------------

    async def find(self, kind: CredentialKind, identifier: str) -> tuple[CredentialRecord, ...]:
        stored = self.set.credentials.get(f"{kind.value}:{identifier}", ())
        out = []
        for credential_id, consumer, organization_id, secret in stored:
            if kind is CredentialKind.HMAC and secret:
                secret = self._secret.decrypt(secret, context=credential_id.encode())
            out.append(
                CredentialRecord(credential_id, kind, identifier, consumer, organization_id, secret)
            )
        return tuple(out)

    # -- reading the node's file ----------------------------------------------------------

    async def refresh(self) -> None:
        listing = self.store.listing()
        if listing == self._listing:
            return
        self._listing = listing
        step = self.store.step(self.set.seq, self._checksum) if self._checksum else None
        if step is not None:
            changed_keys: list[str] = []
            changed_credentials: list[str] = []
            for change in step.deltas:
                k, c = self.set.apply(step.version, change)
                changed_keys += k
                changed_credentials += c
            self._checksum = step.checksum
            self.loads["changes"] += 1
        else:
            newest = await asyncio.to_thread(self.store.newest)
            if newest is None or newest.checksum == self._checksum:
                return
            whole = await asyncio.to_thread(json.loads, newest.body)
            changed_keys, changed_credentials = self.set.replace(newest.version, whole)
            self._checksum = newest.checksum
            self.loads["whole"] += 1
        for key_hash in changed_keys:
            self.on_keys(key_hash)
        for subject in changed_credentials:
            self.on_credentials(subject)

    def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()
