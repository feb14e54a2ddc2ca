"""OAuth2 clients: consumers registered for the client credentials grant.

A client has a public id (`pcc_…`) and a secret (`pcs_…`, 256 random bits) that is
shown once, when it is created or rotated; the store keeps only its keyed hash
(`ServerSecret.hash_credential`), like API keys. Rotating a secret replaces it at
once. Changes append an OAUTH_CLIENT event in the same transaction.

Deleting a client also revokes every access token it was issued: the tokens are
not stored, so one client-wide revocation (`client_revocation_id`, kept like a
token's until the longest token could have expired) stands for all of them, and
jwt-auth refuses a gateway token whose client is revoked.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.identity.events import EventKind, append_events
from portcullis.identity.oauth_settings import DAY
from portcullis.identity.secrets import ServerSecret
from portcullis.store.config_head import lock_config_head
from portcullis.store.engine import Check, write_transaction
from portcullis.store.identity_tables import OAuthClientRow, RevokedTokenRow
from portcullis.store.organizations import organization_id_of, organization_name

CLIENT_ID_PREFIX = "pcc_"
CLIENT_SECRET_PREFIX = "pcs_"  # noqa: S105 (a prefix, not a secret)
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_PATTERN = r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$"
_CLIENT_ID = re.compile(r"^pcc_[0-9a-f]{24}$")
# Hash compared when the client id is unknown, so both cases cost the same.
_DUMMY_HASH = "0" * 64
# No access token lives longer than this (the upper bound of a client's `token_ttl`).
MAX_TOKEN_TTL = 30 * DAY
_CLIENT_REVOCATION = "client:"
_CHUNK = 500


def client_revocation_id(client_id: str) -> str:
    """The revoked-token id that stands for every token of `client_id` (never a real jti:
    those are URL-safe base64, without a colon)."""
    return _CLIENT_REVOCATION + client_id


async def revoke_client_tokens(
    conn: AsyncConnection, client_ids: Sequence[str], now: datetime
) -> None:
    """Revoke every token the clients were issued, inside the caller's transaction."""
    if not client_ids:
        return
    subjects = [client_revocation_id(c) for c in client_ids]
    for start in range(0, len(subjects), _CHUNK):
        chunk = subjects[start : start + _CHUNK]
        await conn.execute(delete(RevokedTokenRow).where(RevokedTokenRow.jti.in_(chunk)))
    await conn.execute(
        insert(RevokedTokenRow),
        [
            {
                "jti": client_revocation_id(c),
                "client_id": c,
                "revoked_at": now,
                "expires_at": now + timedelta(seconds=MAX_TOKEN_TTL),
            }
            for c in client_ids
        ],
    )
    await append_events(conn, [(EventKind.TOKEN, s) for s in subjects])


async def delete_clients_of(conn: AsyncConnection, consumers: Sequence[str]) -> list[str]:
    """Delete the consumers' clients and revoke their tokens (caller's transaction);
    the deleted client ids."""
    client_ids: list[str] = []
    for start in range(0, len(consumers), _CHUNK):
        chunk = list(consumers[start : start + _CHUNK])
        client_ids += (
            await conn.scalars(
                select(OAuthClientRow.client_id).where(OAuthClientRow.consumer.in_(chunk))
            )
        ).all()
    for start in range(0, len(client_ids), _CHUNK):
        chunk = client_ids[start : start + _CHUNK]
        await conn.execute(delete(OAuthClientRow).where(OAuthClientRow.client_id.in_(chunk)))
    await revoke_client_tokens(conn, client_ids, datetime.now(UTC))
    await append_events(conn, [(EventKind.OAUTH_CLIENT, c) for c in client_ids])
    return client_ids


class ClientStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """A registered client, without its secret."""

    client_id: str
    consumer: str
    # The organization's current name (a label) and its id (what scopes the client).
    organization: str | None
    organization_id: str | None
    name: str
    allowed_scopes: tuple[str, ...]
    token_ttl: int
    status: ClientStatus
    created_by: str
    created_at: datetime
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "consumer": self.consumer,
            "organization": self.organization,
            "organization_id": self.organization_id,
            "name": self.name,
            "allowed_scopes": list(self.allowed_scopes),
            "token_ttl": self.token_ttl,
            "status": self.status.value,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "updated_at": self.updated_at.isoformat().replace("+00:00", "Z"),
        }


def generate_client_id() -> str:
    return CLIENT_ID_PREFIX + secrets.token_hex(12)


def generate_client_secret() -> str:
    """A new secret: 256 bits, URL-safe (no form-encoding surprises in HTTP Basic)."""
    return CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)


def looks_like_client_id(value: str) -> bool:
    return _CLIENT_ID.fullmatch(value) is not None


def _client(row: Any) -> OAuthClient:
    return OAuthClient(
        client_id=row.client_id,
        consumer=row.consumer,
        organization=row.organization,
        organization_id=row.organization_id,
        name=row.name,
        allowed_scopes=tuple(json.loads(row.allowed_scopes)),
        token_ttl=row.token_ttl,
        status=ClientStatus(row.status),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


_COLUMNS = (
    OAuthClientRow.client_id,
    OAuthClientRow.consumer,
    OAuthClientRow.organization_id,
    organization_name(OAuthClientRow.organization_id),
    OAuthClientRow.name,
    OAuthClientRow.allowed_scopes,
    OAuthClientRow.token_ttl,
    OAuthClientRow.status,
    OAuthClientRow.created_by,
    OAuthClientRow.created_at,
    OAuthClientRow.updated_at,
)


class OAuthClientRepository:
    """OAuth clients in the store: create, read, change, rotate secrets, authenticate."""

    def __init__(self, engine: AsyncEngine, secret: ServerSecret) -> None:
        self._engine = engine
        self._secret = secret

    async def create(
        self,
        *,
        consumer: str,
        organization: str | None,
        name: str,
        allowed_scopes: Sequence[str],
        token_ttl: int,
        created_by: str,
        config_version: int | None = None,
    ) -> tuple[OAuthClient, str]:
        """A new active client and its secret (the only time the secret is available).

        `organization` is the name of the consumer's organization; the client stores its id.

        `config_version` is the config version in which the caller found the consumer:
        `ConfigConflict` if the config changed since (the consumer may be gone), so a
        client is never created for a consumer whose credentials were just retired.
        """
        client_id, client_secret = generate_client_id(), generate_client_secret()
        now = datetime.now(UTC)
        values = {
            "client_id": client_id,
            "secret_hash": self._secret.hash_credential(client_secret),
            "consumer": consumer,
            "name": name,
            "allowed_scopes": json.dumps(list(allowed_scopes)),
            "token_ttl": token_ttl,
            "status": ClientStatus.ACTIVE.value,
            "created_by": created_by,
            "created_at": now,
            "updated_at": now,
        }
        async with write_transaction(self._engine) as conn:
            await lock_config_head(conn, config_version)
            # Stored by id, looked up with the config head locked (store/organizations.py).
            values["organization_id"] = await organization_id_of(conn, organization)
            await conn.execute(insert(OAuthClientRow).values(**values))
            await append_events(conn, [(EventKind.OAUTH_CLIENT, client_id)])
        created = await self.get(client_id)
        if created is None:
            raise RuntimeError(f"OAuth client {client_id} vanished right after its creation")
        return created, client_secret

    async def get(self, client_id: str) -> OAuthClient | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(*_COLUMNS).where(OAuthClientRow.client_id == client_id))
            ).first()
        return _client(row) if row is not None else None

    async def list_for(self, consumer: str) -> list[OAuthClient]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(select(*_COLUMNS).where(OAuthClientRow.consumer == consumer))
            ).all()
        return [_client(r) for r in rows]

    async def update(
        self,
        client_id: str,
        *,
        name: str | None = None,
        allowed_scopes: Sequence[str] | None = None,
        token_ttl: int | None = None,
        status: ClientStatus | None = None,
        check: Check[OAuthClient] | None = None,
    ) -> OAuthClient | None:
        """Change the given fields; None when the client does not exist.

        `check` runs on the client locked in the write transaction (None if gone)."""
        values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
        if name is not None:
            values["name"] = name
        if allowed_scopes is not None:
            values["allowed_scopes"] = json.dumps(list(allowed_scopes))
        if token_ttl is not None:
            values["token_ttl"] = token_ttl
        if status is not None:
            values["status"] = status.value
        async with write_transaction(self._engine) as conn:
            if not await self._lock(conn, client_id, check):
                return None
            await conn.execute(
                update(OAuthClientRow).where(OAuthClientRow.client_id == client_id).values(**values)
            )
            await append_events(conn, [(EventKind.OAUTH_CLIENT, client_id)])
        return await self.get(client_id)

    async def _lock(
        self, conn: AsyncConnection, client_id: str, check: Check[OAuthClient] | None
    ) -> bool:
        """Lock the client for the rest of the write transaction and run `check` on it;
        False when there is no such client."""
        row = (
            await conn.execute(
                select(*_COLUMNS).where(OAuthClientRow.client_id == client_id).with_for_update()
            )
        ).first()
        if check is not None:
            check(None if row is None else _client(row))
        return row is not None

    async def rotate_secret(
        self, client_id: str, *, check: Check[OAuthClient] | None = None
    ) -> tuple[OAuthClient, str] | None:
        """Replace the secret (the old one stops working now); None when unknown."""
        client_secret = generate_client_secret()
        async with write_transaction(self._engine) as conn:
            if not await self._lock(conn, client_id, check):
                return None
            await conn.execute(
                update(OAuthClientRow)
                .where(OAuthClientRow.client_id == client_id)
                .values(
                    secret_hash=self._secret.hash_credential(client_secret),
                    updated_at=datetime.now(UTC),
                )
            )
            await append_events(conn, [(EventKind.OAUTH_CLIENT, client_id)])
        client = await self.get(client_id)
        if client is None:
            return None
        return client, client_secret

    async def delete(self, client_id: str, *, check: Check[OAuthClient] | None = None) -> bool:
        """Delete the client and revoke every token it was issued; False when there is
        none. `check` runs on it, locked."""
        async with write_transaction(self._engine) as conn:
            if not await self._lock(conn, client_id, check):
                return False
            await conn.execute(delete(OAuthClientRow).where(OAuthClientRow.client_id == client_id))
            await revoke_client_tokens(conn, [client_id], datetime.now(UTC))
            await append_events(conn, [(EventKind.OAUTH_CLIENT, client_id)])
        return True

    async def authenticate(self, client_id: str, client_secret: str) -> OAuthClient | None:
        """The client when the secret matches (in constant time), else None."""
        stored = _DUMMY_HASH
        row = None
        if looks_like_client_id(client_id):
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(*_COLUMNS, OAuthClientRow.secret_hash).where(
                            OAuthClientRow.client_id == client_id
                        )
                    )
                ).first()
            if row is not None:
                stored = row.secret_hash
        presented = self._secret.hash_credential(client_secret)
        if not hmac.compare_digest(presented, stored) or row is None:
            return None
        return _client(row)
