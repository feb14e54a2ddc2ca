"""Identity at the edge: the keys and consumer credentials a hybrid data plane knows.

The node has no database. The control plane sends its node agent the whole identity
set when the node connects and then each change as it commits (hybrid/identity_feed.py,
message type `identity`); the agent keeps the set and writes each version of it to the
node's last-known-good directory (`<lkg_dir>/identity`, the same atomic two-generation
files with a checksum as the config, hybrid/lkg.py). The node's workers read the set
from there (`EdgeIdentity`, polled every 50 ms like the config: a directory listing,
the header line's changes when they hold the generation before, else the whole file)
and answer the credential caches' store lookups from memory. The built-in OAuth
issuer's public signing keys and revoked token ids travel in the same set (`issuer`),
for jwt-auth in `issuer: gateway` mode (`EdgeIssuerKeys`).

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
from jwt import PyJWK

from portcullis.hybrid.lkg import LkgStore, StoredSnapshot
from portcullis.identity.credential_store import CredentialKind, CredentialRecord
from portcullis.identity.issuer_keys import public_jwk_from_row
from portcullis.identity.key_admin import parse_networks
from portcullis.identity.key_records import KeyRecord, KeyStatus
from portcullis.identity.keys import Environment
from portcullis.identity.oauth_clients import client_revocation_id
from portcullis.identity.secrets import ServerSecret
from portcullis.periodic import Periodic

log = structlog.get_logger(__name__)

IDENTITY_DIR = "identity"
POLL_INTERVAL = 0.05

# subject -> [(id, consumer, organization id, stored secret)]
Stored = tuple[tuple[str, str, str | None, bytes], ...]


def pepper_check(secret: ServerSecret) -> str:
    """A value both roles derive from the server secret's key pepper: a node whose own
    differs from the control plane's hashes keys differently and would refuse them all."""
    return secret.hash_credential("portcullis-edge-identity-check")[:16]


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

    def __init__(self, *, records: bool = True) -> None:
        self.seq = 0
        # records=False (the node agent): keys are kept as their wire text only, so a
        # change re-encodes nothing but itself and `body` is one join (O(set) bytes
        # copied, no per-key encoding).
        self.records = records
        self.keys: dict[str, KeyRecord] = {}
        self.key_texts: dict[str, str] = {}
        self.credentials: dict[str, Stored] = {}
        # The built-in OAuth issuer's public signing keys (kid -> [public JWK text,
        # remove-after epoch or null]) and revoked token ids (jti -> expiry epoch).
        self.issuer: dict[str, Any] = {"keys": {}, "revoked": {}}

    def apply(self, seq: int, changes: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """Apply a change (module doc); the key hashes and credential subjects it named."""
        keys = changes.get("keys") or {}
        for key_hash, value in keys.items():
            if value is None:
                self.keys.pop(key_hash, None)
                self.key_texts.pop(key_hash, None)
            elif self.records:
                self.keys[key_hash] = key_from_json(value)
            else:
                self.key_texts[key_hash] = json.dumps(value, separators=(",", ":"))
        credentials = changes.get("credentials") or {}
        for subject, value in credentials.items():
            if value:
                self.credentials[subject] = credentials_from_json(value)
            else:
                self.credentials.pop(subject, None)
        issuer = changes.get("issuer")
        if isinstance(issuer, dict):
            self.issuer = {
                "iss": issuer.get("iss"),
                "keys": issuer.get("keys") or {},
                "revoked": issuer.get("revoked") or {},
            }
        self.seq = max(self.seq, seq)
        return list(keys), list(credentials)

    def replace(self, seq: int, changes: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """Become the whole set in `changes`; the entries that differ from before."""
        fresh = IdentitySet(records=self.records)
        fresh.apply(seq, changes)
        changed = self.differences(fresh)
        self.seq, self.keys, self.key_texts = fresh.seq, fresh.keys, fresh.key_texts
        self.credentials, self.issuer = fresh.credentials, fresh.issuer
        return changed

    def differences(self, other: IdentitySet) -> tuple[list[str], list[str]]:
        """The key hashes and credential subjects whose entries differ in `other`."""
        mine: dict[str, Any] = self.keys if self.records else self.key_texts
        theirs: dict[str, Any] = other.keys if other.records else other.key_texts
        keys = [h for h in mine.keys() | theirs.keys() if mine.get(h) != theirs.get(h)]
        credentials = [
            s
            for s in self.credentials.keys() | other.credentials.keys()
            if self.credentials.get(s) != other.credentials.get(s)
        ]
        return keys, credentials

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": {h: key_to_json(r) for h, r in self.keys.items()},
            "credentials": {s: credentials_to_json(c) for s, c in self.credentials.items()},
            "issuer": self.issuer,
        }

    def body(self) -> bytes:
        """The set as the identity file's body (JSON, the shape of a whole-set change)."""
        if self.records:
            return json.dumps(self.to_json(), separators=(",", ":")).encode()
        credentials = json.dumps(
            {s: credentials_to_json(c) for s, c in self.credentials.items()},
            separators=(",", ":"),
        )
        dumps = json.dumps
        keys = ",".join(f"{dumps(h)}:{text}" for h, text in self.key_texts.items())
        issuer = json.dumps(self.issuer, separators=(",", ":"))
        return f'{{"credentials":{credentials},"issuer":{issuer},"keys":{{{keys}}}}}'.encode()

    def __len__(self) -> int:
        return len(self.keys) + len(self.key_texts)

    @classmethod
    def load(cls, stored: StoredSnapshot, *, records: bool = True) -> IdentitySet:
        found = cls(records=records)
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
            loaded = await asyncio.to_thread(self._load_whole)
            if loaded is None:
                return
            # Built and compared off the loop, swapped in one step: a request never sees
            # a half-loaded set.
            fresh, checksum, (changed_keys, changed_credentials) = loaded
            self.set = fresh
            self._checksum = checksum
            self.loads["whole"] += 1
        for key_hash in changed_keys:
            self.on_keys(key_hash)
        for subject in changed_credentials:
            self.on_credentials(subject)

    def _load_whole(self) -> tuple[IdentitySet, str, tuple[list[str], list[str]]] | None:
        newest = self.store.newest()
        if newest is None or newest.checksum == self._checksum:
            return None
        try:
            fresh = IdentitySet.load(newest)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("edge_identity.unusable", file=str(newest.path), error=str(exc))
            return None
        return fresh, newest.checksum, self.set.differences(fresh)

    def start(self) -> None:
        self._poller.start()

    def issuer_keys(self, issuer: str) -> EdgeIssuerKeys:
        return EdgeIssuerKeys(self, issuer)

    async def stop(self) -> None:
        await self._poller.stop()


class EdgeIssuerKeys:
    """The gateway's OAuth issuer as jwt-auth sees it on a node (`plugins.env.IssuerKeys`):
    public keys and revoked token ids from the identity set, no I/O."""

    def __init__(self, edge: EdgeIdentity, issuer: str) -> None:
        self._edge = edge
        self._issuer = issuer
        # kid -> (the JWK text it was parsed from, the key): parsed once per key.
        self._parsed: dict[str, tuple[str, PyJWK]] = {}

    @property
    def issuer(self) -> str:
        """The control plane's issuer (its tokens' `iss`), else this node's setting."""
        iss = self._edge.set.issuer.get("iss")
        return iss if isinstance(iss, str) and iss else self._issuer

    def key_for(self, kid: str) -> PyJWK | None:
        entry = self._edge.set.issuer["keys"].get(kid)
        if entry is None:
            return None
        text, remove_after = entry
        if remove_after is not None and remove_after <= time.time():
            return None
        parsed = self._parsed.get(kid)
        if parsed is None or parsed[0] != text:
            try:
                parsed = self._parsed[kid] = (text, public_jwk_from_row(text))
            except Exception as exc:
                log.warning("edge_identity.bad_signing_key", kid=kid, error=str(exc))
                return None
        return parsed[1]

    def is_revoked(self, jti: str) -> bool:
        return jti in self._edge.set.issuer["revoked"]

    def client_revoked(self, client_id: str) -> bool:
        return client_revocation_id(client_id) in self._edge.set.issuer["revoked"]
