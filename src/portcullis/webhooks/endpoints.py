"""Webhook endpoints in the store: their sealed secrets and headers, and who they hear from.

Signing secrets and custom headers are sealed with the deployment secret (AES-GCM bound
to the endpoint's id, so sealed blobs cannot be swapped between rows). A secret is shown
once, when it is made; a rotation keeps the previous secret signing until its expiry.
"""

from __future__ import annotations

import json
import secrets as random_tokens
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from portcullis.events.outbox import Subscription as Subscription  # re-exported
from portcullis.identity.secrets import ServerSecret
from portcullis.store.webhook_tables import WebhookEndpointRow
from portcullis.webhooks.signing import (
    SIGNING_KEY_PREFIX,
    SigningKeys,
    crockford32,
    generate_secret,
    generate_signing_key,
    parse_signing_key,
    public_key_text,
)

# `v1`: HMAC-SHA256 with a `whsec_` secret; `v1a`: ed25519 with a `whsk_` signing key
# (its `whpk_` public key is what receivers hold).
SIGNATURE_SCHEMES = ("v1", "v1a")


def endpoint_id() -> str:
    return "ep_" + crockford32(random_tokens.randbits(130))


def _context(endpoint: str, what: str) -> bytes:
    return f"webhook-endpoint:{endpoint}:{what}".encode()


@dataclass(frozen=True, slots=True)
class SealedSecret:
    secret: str
    # None: the current secret. Set: a rotated-out secret that still signs until then.
    expires_at: datetime | None = None


def seal_secrets(server: ServerSecret, endpoint: str, values: Sequence[SealedSecret]) -> bytes:
    plain = json.dumps(
        [
            {"secret": s.secret, "expires_at": s.expires_at.isoformat() if s.expires_at else None}
            for s in values
        ]
    ).encode()
    return server.encrypt(plain, context=_context(endpoint, "secrets"))


def unseal_secrets(server: ServerSecret, endpoint: str, blob: bytes) -> list[SealedSecret]:
    entries = json.loads(server.decrypt(blob, context=_context(endpoint, "secrets")))
    return [
        SealedSecret(
            e["secret"], datetime.fromisoformat(e["expires_at"]) if e["expires_at"] else None
        )
        for e in entries
    ]


def seal_headers(server: ServerSecret, endpoint: str, headers: Mapping[str, str]) -> bytes | None:
    if not headers:
        return None
    return server.encrypt(json.dumps(dict(headers)).encode(), context=_context(endpoint, "headers"))


def unseal_headers(server: ServerSecret, endpoint: str, blob: bytes | None) -> dict[str, str]:
    if blob is None:
        return {}
    value: dict[str, str] = json.loads(server.decrypt(blob, context=_context(endpoint, "headers")))
    return value


def signing_keys(server: ServerSecret, endpoint: str, blob: bytes, now: datetime) -> SigningKeys:
    """The keys an attempt signs with now: the current secret and unexpired old ones."""
    return SigningKeys.parse(live_secrets(server, endpoint, blob, now))


@dataclass(frozen=True, slots=True)
class NewEndpoint:
    url: str
    event_types: Sequence[str]
    organization_id: str | None = None
    description: str = ""
    filters: Mapping[str, str] = field(default_factory=dict)
    consumer: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    rate_limit: int | None = None
    max_concurrency: int = 4
    ordered: bool = False
    signature: str = "v1"
    portal_team_id: str | None = None


def new_signing_secret(signature: str) -> str:
    """A new secret of the scheme `signature` in its stored form (`whsec_…`/`whsk_…`)."""
    return generate_signing_key()[0] if signature == "v1a" else generate_secret()


def scheme_of(secret: str) -> str:
    return "v1a" if secret.startswith(SIGNING_KEY_PREFIX) else "v1"


def public_key_of(secret: str) -> str | None:
    """The `whpk_` public key of a `v1a` signing key (None for a `v1` secret)."""
    if scheme_of(secret) != "v1a":
        return None
    return public_key_text(parse_signing_key(secret))


def live_secrets(server: ServerSecret, endpoint: str, blob: bytes, now: datetime) -> list[str]:
    """The secrets that sign now, newest first (the current one and unexpired old ones)."""
    return [
        s.secret
        for s in unseal_secrets(server, endpoint, blob)
        if s.expires_at is None or s.expires_at > now
    ]


async def create_endpoint(
    conn: AsyncConnection, server: ServerSecret, new: NewEndpoint, now: datetime
) -> tuple[str, str]:
    """Store a new endpoint in the caller's transaction: (its id, its secret, shown once)."""
    ident = endpoint_id()
    secret = new_signing_secret(new.signature)
    await conn.execute(
        insert(WebhookEndpointRow).values(
            id=ident,
            organization_id=new.organization_id,
            url=new.url,
            description=new.description,
            event_types=json.dumps(list(new.event_types)),
            filters=json.dumps(dict(new.filters)),
            consumer=new.consumer,
            portal_team_id=new.portal_team_id,
            secrets_sealed=seal_secrets(server, ident, [SealedSecret(secret)]),
            headers_sealed=seal_headers(server, ident, new.headers),
            enabled=new.enabled,
            rate_limit=new.rate_limit,
            max_concurrency=new.max_concurrency,
            ordered=new.ordered,
            version=1,
            created_at=now,
            updated_at=now,
        )
    )
    return ident, secret


async def rotate_secret(
    conn: AsyncConnection,
    server: ServerSecret,
    endpoint: str,
    now: datetime,
    grace: timedelta,
) -> str:
    """A new current secret; the previous one keeps signing for `grace`. Returns the new one."""
    row = (
        await conn.execute(
            select(WebhookEndpointRow.secrets_sealed).where(WebhookEndpointRow.id == endpoint)
        )
    ).one()
    stored = unseal_secrets(server, endpoint, row.secrets_sealed)
    kept = [
        SealedSecret(s.secret, s.expires_at or now + grace)
        for s in stored
        if s.expires_at is None or s.expires_at > now
    ]
    # Newest first: the new secret keeps the endpoint's scheme (v1 or v1a).
    secret = new_signing_secret(scheme_of(stored[0].secret) if stored else "v1")
    await conn.execute(
        update(WebhookEndpointRow)
        .where(WebhookEndpointRow.id == endpoint)
        .values(
            secrets_sealed=seal_secrets(server, endpoint, [SealedSecret(secret), *kept]),
            version=WebhookEndpointRow.version + 1,
            updated_at=now,
        )
    )
    return secret
