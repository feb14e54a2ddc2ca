"""Consumer credentials of the kinds beside API keys: basic-auth, hmac-auth, mtls-auth.

One table (`consumer_credentials`) holds them all, organised like API keys and
OAuth clients: a row names its consumer by username and its organization by
stable id (store/organizations.py), and is created, rotated or deleted in a write
transaction that also appends a CREDENTIAL invalidation (subject
`<kind>:<identifier>`), so every data-plane worker drops what it cached about it
within the feed's poll interval. A consumer that leaves the config takes its rows
with it (`delete_credentials_of`, called by identity/consumer_credentials.py).

What `identifier` and the secret are, per kind:

- basic: the basic-auth username (by default the consumer's username); the password
  is stored as an argon2id hash (`PASSWORD_HASHER`, data-plane parameters chosen in
  docs/decisions/029), never in the clear;
- hmac: a generated key id (`pch_…`, the RFC 9421 `keyid`); the shared secret must
  be retrievable to verify signatures, so it is stored AES-256-GCM encrypted with the
  deployment's at-rest key (`ServerSecret.encrypt`, context = the row id) and shown
  once, when created or rotated;
- mtls: the certificate name the credential matches, `subject:<RFC 4514 DN>` or a
  SAN (`dns:`, `uri:`, `email:`, `ip:`); no secret (the CA vouches for the key).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher, Type
from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.events.bus import record_event
from portcullis.events.catalogue import EventType
from portcullis.identity.events import EventKind, append_events
from portcullis.identity.secrets import ServerSecret
from portcullis.store.config_head import lock_config_head
from portcullis.store.engine import Check, write_transaction
from portcullis.store.identity_tables import ConsumerCredentialRow
from portcullis.store.organizations import organization_id_of, organization_name

_CHUNK = 500

# Data-plane argon2id parameters (docs/decisions/029): RFC 9106's second recommended
# option scaled down to OWASP's minimum (19 MiB, 2 passes, 1 lane), ~15-25 ms a verify
# instead of argon2-cffi's default ~60-200 ms; only a cold request pays it
# (plugins/basic_auth.py caches verified credentials).
PASSWORD_HASHER = PasswordHasher(
    time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16, type=Type.ID
)
HMAC_KEY_PREFIX = "pch_"
MTLS_MATCH_PREFIXES = ("subject:", "dns:", "uri:", "email:", "ip:")


class CredentialKind(StrEnum):
    BASIC = "basic"
    HMAC = "hmac"
    MTLS = "mtls"


def event_subject(kind: CredentialKind, identifier: str) -> str:
    return f"{kind.value}:{identifier}"


class DuplicateCredential(Exception):
    """Another credential of the same kind and organization already has this identifier."""


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """What the data plane needs of one credential (the hmac secret decrypted)."""

    id: str
    kind: CredentialKind
    identifier: str
    consumer: str
    organization_id: str | None
    # basic: the argon2 hash (ASCII); hmac: the shared secret; mtls: empty.
    secret: bytes


@dataclass(frozen=True, slots=True)
class ConsumerCredential:
    """A credential as the admin API shows it: never its secret."""

    id: str
    kind: CredentialKind
    identifier: str
    consumer: str
    organization: str | None
    organization_id: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "consumer": self.consumer,
            "organization": self.organization,
            "organization_id": self.organization_id,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "updated_at": self.updated_at.isoformat().replace("+00:00", "Z"),
        }
        if self.kind is CredentialKind.BASIC:
            out["username"] = self.identifier
        elif self.kind is CredentialKind.HMAC:
            out["key_id"] = self.identifier
        else:
            out["match"] = self.identifier
        return out


def generate_secret() -> str:
    """A new hmac-auth secret or basic-auth password: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def generate_hmac_key_id() -> str:
    return HMAC_KEY_PREFIX + secrets.token_hex(12)


def hash_password(password: str) -> bytes:
    return PASSWORD_HASHER.hash(password).encode("ascii")


_COLUMNS = (
    ConsumerCredentialRow.id,
    ConsumerCredentialRow.kind,
    ConsumerCredentialRow.identifier,
    ConsumerCredentialRow.consumer,
    ConsumerCredentialRow.organization_id,
    organization_name(ConsumerCredentialRow.organization_id).label("organization"),
    ConsumerCredentialRow.created_by,
    ConsumerCredentialRow.created_at,
    ConsumerCredentialRow.updated_at,
)


async def _platform_event(
    conn: AsyncConnection,
    kind: EventType,
    credential_id: str,
    credential_kind: str,
    consumer: str,
    identifier: str,
    organization_id: str | None,
    **extra: Any,
) -> None:
    """The credential's platform event (webhooks, streams), in the changing transaction."""
    data = {
        "credential_id": credential_id,
        "kind": credential_kind,
        "consumer": consumer,
        "identifier": identifier,
        **extra,
    }
    await record_event(
        conn,
        kind,
        f"credential:{credential_id}",
        data,
        now=datetime.now(UTC),
        organization_id=organization_id,
    )


def _credential(row: Any) -> ConsumerCredential:
    return ConsumerCredential(
        id=row.id,
        kind=CredentialKind(row.kind),
        identifier=row.identifier,
        consumer=row.consumer,
        organization=row.organization,
        organization_id=row.organization_id,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def delete_credentials_of(conn: AsyncConnection, consumers: Sequence[str]) -> int:
    """Delete the consumers' credentials, with their events (caller's transaction)."""
    found: list[Any] = []
    for start in range(0, len(consumers), _CHUNK):
        chunk = list(consumers[start : start + _CHUNK])
        rows = await conn.execute(
            select(
                ConsumerCredentialRow.id,
                ConsumerCredentialRow.kind,
                ConsumerCredentialRow.identifier,
                ConsumerCredentialRow.consumer,
                ConsumerCredentialRow.organization_id,
            ).where(ConsumerCredentialRow.consumer.in_(chunk))
        )
        found += list(rows)
    ids = [f[0] for f in found]
    for start in range(0, len(ids), _CHUNK):
        await conn.execute(
            delete(ConsumerCredentialRow).where(
                ConsumerCredentialRow.id.in_(ids[start : start + _CHUNK])
            )
        )
    await append_events(
        conn, [(EventKind.CREDENTIAL, event_subject(CredentialKind(f[1]), f[2])) for f in found]
    )
    for f in found:
        await _platform_event(
            conn, EventType.CREDENTIAL_DELETED, f[0], f[1], f[3], f[2], f[4],
            reason="consumer_removed",
        )  # fmt: skip
    return len(found)


class CredentialRepository:
    """Consumer credentials in the store: the admin side and the data plane's lookup."""

    def __init__(self, engine: AsyncEngine, secret: ServerSecret) -> None:
        self._engine = engine
        self._secret = secret

    def _stored(self, kind: CredentialKind, credential_id: str, secret: str | None) -> bytes | None:
        if secret is None:
            return None
        if kind is CredentialKind.BASIC:
            return hash_password(secret)
        return self._secret.encrypt(secret.encode("utf-8"), context=credential_id.encode())

    async def create(
        self,
        *,
        kind: CredentialKind,
        identifier: str,
        secret: str | None,
        consumer: str,
        organization: str | None,
        created_by: str,
        config_version: int | None = None,
    ) -> ConsumerCredential:
        """A new credential. `DuplicateCredential` when the identifier is taken in the
        consumer's organization (names resolve within an organization: two organizations
        may each have a basic-auth user `admin`); `ConfigConflict` when the config moved
        past `config_version` (as for OAuth clients). The check runs with the config head
        locked, which serializes every credential creation, so it can't race."""
        credential_id = "cc_" + secrets.token_hex(12)
        now = datetime.now(UTC)
        # Hashing (basic) happens before the transaction: it is the slow part.
        stored = self._stored(kind, credential_id, secret)
        async with write_transaction(self._engine) as conn:
            await lock_config_head(conn, config_version)
            organization_id = await organization_id_of(conn, organization)
            same_org = (
                ConsumerCredentialRow.organization_id.is_(None)
                if organization_id is None
                else ConsumerCredentialRow.organization_id == organization_id
            )
            taken = await conn.scalar(
                select(ConsumerCredentialRow.id).where(
                    ConsumerCredentialRow.kind == kind.value,
                    ConsumerCredentialRow.identifier == identifier,
                    same_org,
                )
            )
            if taken is not None:
                raise DuplicateCredential(identifier)
            await conn.execute(
                insert(ConsumerCredentialRow).values(
                    id=credential_id,
                    kind=kind.value,
                    identifier=identifier,
                    consumer=consumer,
                    organization_id=organization_id,
                    secret=stored,
                    created_by=created_by,
                    created_at=now,
                    updated_at=now,
                )
            )
            await append_events(conn, [(EventKind.CREDENTIAL, event_subject(kind, identifier))])
            await _platform_event(
                conn, EventType.CREDENTIAL_CREATED, credential_id, kind.value, consumer,
                identifier, organization_id,
            )  # fmt: skip
        created = await self.get(credential_id)
        if created is None:
            raise RuntimeError(f"credential {credential_id} vanished right after its creation")
        return created

    async def get(self, credential_id: str) -> ConsumerCredential | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(ConsumerCredentialRow.id == credential_id)
                )
            ).first()
        return _credential(row) if row is not None else None

    async def list_for(self, consumer: str, kind: CredentialKind) -> list[ConsumerCredential]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(*_COLUMNS).where(
                        ConsumerCredentialRow.consumer == consumer,
                        ConsumerCredentialRow.kind == kind.value,
                    )
                )
            ).all()
        return [_credential(r) for r in rows]

    async def _lock(
        self, conn: AsyncConnection, credential_id: str, check: Check[ConsumerCredential] | None
    ) -> ConsumerCredential | None:
        row = (
            await conn.execute(
                select(*_COLUMNS).where(ConsumerCredentialRow.id == credential_id).with_for_update()
            )
        ).first()
        found = None if row is None else _credential(row)
        if check is not None:
            check(found)
        return found

    async def rotate(
        self,
        credential_id: str,
        secret: str,
        *,
        check: Check[ConsumerCredential] | None = None,
    ) -> ConsumerCredential | None:
        """Replace the secret (the old one stops working within the feed's interval)."""
        async with write_transaction(self._engine) as conn:
            found = await self._lock(conn, credential_id, check)
            if found is None:
                return None
            await conn.execute(
                update(ConsumerCredentialRow)
                .where(ConsumerCredentialRow.id == credential_id)
                .values(
                    secret=self._stored(found.kind, credential_id, secret),
                    updated_at=datetime.now(UTC),
                )
            )
            await append_events(
                conn, [(EventKind.CREDENTIAL, event_subject(found.kind, found.identifier))]
            )
            await _platform_event(
                conn, EventType.CREDENTIAL_ROTATED, found.id, found.kind.value, found.consumer,
                found.identifier, found.organization_id,
            )  # fmt: skip
        return await self.get(credential_id)

    async def delete(
        self, credential_id: str, *, check: Check[ConsumerCredential] | None = None
    ) -> bool:
        async with write_transaction(self._engine) as conn:
            found = await self._lock(conn, credential_id, check)
            if found is None:
                return False
            await conn.execute(
                delete(ConsumerCredentialRow).where(ConsumerCredentialRow.id == credential_id)
            )
            await append_events(
                conn, [(EventKind.CREDENTIAL, event_subject(found.kind, found.identifier))]
            )
            await _platform_event(
                conn, EventType.CREDENTIAL_DELETED, found.id, found.kind.value, found.consumer,
                found.identifier, found.organization_id, reason="deleted",
            )  # fmt: skip
        return True

    # -- data plane ---------------------------------------------------------------------

    async def stored(
        self, subjects: Sequence[str] | None = None
    ) -> dict[str, list[tuple[str, str, str | None, bytes]]]:
        """Every credential (or those of `subjects`, `kind:identifier`) as stored: subject
        -> [(id, consumer, organization id, stored secret)], oldest first. The secret is
        as the store keeps it (basic: the argon2 hash; hmac: encrypted with the server
        secret; mtls: empty): what a hybrid control plane sends its data planes."""
        row = ConsumerCredentialRow
        query = select(
            row.kind, row.identifier, row.id, row.consumer, row.organization_id, row.secret
        )
        if subjects is not None:
            wanted = [s.partition(":") for s in subjects]
            if not wanted:
                return {}
            query = query.where(
                or_(*(and_(row.kind == k, row.identifier == i) for k, _, i in wanted))
            )
        query = query.order_by(row.created_at, row.id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        out: dict[str, list[tuple[str, str, str | None, bytes]]] = {}
        for r in rows:
            subject = f"{r.kind}:{r.identifier}"
            out.setdefault(subject, []).append(
                (r.id, r.consumer, r.organization_id, r.secret or b"")
            )
        return out

    async def find(self, kind: CredentialKind, identifier: str) -> tuple[CredentialRecord, ...]:
        """The credentials of `kind` with this identifier (one per organization at most),
        oldest first, their secrets usable."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        ConsumerCredentialRow.id,
                        ConsumerCredentialRow.consumer,
                        ConsumerCredentialRow.organization_id,
                        ConsumerCredentialRow.secret,
                    )
                    .where(
                        ConsumerCredentialRow.kind == kind.value,
                        ConsumerCredentialRow.identifier == identifier,
                    )
                    .order_by(ConsumerCredentialRow.created_at, ConsumerCredentialRow.id)
                )
            ).all()
        out = []
        for row in rows:
            secret: bytes = row.secret or b""
            if kind is CredentialKind.HMAC and secret:
                secret = self._secret.decrypt(secret, context=row.id.encode())
            out.append(
                CredentialRecord(
                    id=row.id,
                    kind=kind,
                    identifier=identifier,
                    consumer=row.consumer,
                    organization_id=row.organization_id,
                    secret=secret,
                )
            )
        return tuple(out)
