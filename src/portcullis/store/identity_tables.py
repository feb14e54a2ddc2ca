"""Tables of consumer identity: API keys, OAuth clients, signing keys, revoked tokens,
the identity event feed, and the data-plane node registry.

Secrets are never stored in the clear: API keys and OAuth client secrets as
HMAC-SHA256 digests with the server pepper (they are high-entropy, so a fast keyed
hash is enough), token-signing private keys encrypted with AES-GCM under a key
derived from the server secret. List-valued columns hold JSON text so the schema
is the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portcullis.store.tables import Base, UTCDateTime


class ApiKeyRow(Base):
    """One API key. `id` is the visible, non-secret part of the key."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    consumer: Mapped[str] = mapped_column(String(128), index=True)
    # The consumer's organization when the row was created, by id (a rename keeps it;
    # see store/organizations.py). No foreign key: ids are never reused, and a row
    # outlives a deleted organization as one no organization-limited admin sees.
    organization_id: Mapped[str | None] = mapped_column(String(36), index=True)
    name: Mapped[str] = mapped_column(String(128))
    environment: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[str] = mapped_column(Text, default="[]")
    allowed_origins: Mapped[str] = mapped_column(Text, default="[]")
    ip_allowlist: Mapped[str] = mapped_column(Text, default="[]")
    plan: Mapped[str | None] = mapped_column(String(128))
    metadata_json: Mapped[str] = mapped_column(Text, default="{}")
    # active | suspended | revoked; a reason accompanies suspended and revoked.
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The expiry a `key.expiring` event was sent for (a changed expiry is announced anew).
    expiry_announced: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Rotation: the new key names the old one; the old key keeps working until grace_until.
    rotated_from: Mapped[str | None] = mapped_column(String(32))
    replaced_by: Mapped[str | None] = mapped_column(String(32))
    grace_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OAuthClientRow(Base):
    """A consumer registered as an OAuth2 client (client credentials grant)."""

    __tablename__ = "oauth_clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    consumer: Mapped[str] = mapped_column(String(128), index=True)
    # By id, as for API keys.
    organization_id: Mapped[str | None] = mapped_column(String(36), index=True)
    name: Mapped[str] = mapped_column(String(128))
    allowed_scopes: Mapped[str] = mapped_column(Text, default="[]")
    token_ttl: Mapped[int] = mapped_column(Integer, default=3600)
    status: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ConsumerCredentialRow(Base):
    """A basic-auth, hmac-auth or mtls-auth credential of a consumer.

    `identifier` is what the data plane looks the credential up by: the basic-auth
    username, the hmac key id, or the certificate subject/SAN an mtls credential
    matches (`subject:<RFC 4514 DN>`, `dns:...`, `uri:...`, `email:...`, `ip:...`);
    unique per kind within an organization (checked when created, the config head locked).
    `secret`: basic, an argon2 hash (text); hmac, the shared secret AES-GCM encrypted
    with the at-rest key (context = id); mtls, none.
    """

    __tablename__ = "consumer_credentials"
    __table_args__ = (Index("ix_consumer_credentials_kind", "kind", "identifier"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    identifier: Mapped[str] = mapped_column(String(512))
    consumer: Mapped[str] = mapped_column(String(128), index=True)
    # By id, as for API keys.
    organization_id: Mapped[str | None] = mapped_column(String(36), index=True)
    secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SigningKeyRow(Base):
    """An asymmetric key the OAuth2 server signs access tokens with."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[str] = mapped_column(Text)
    private_key: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM, context = kid
    # active (signs) | retired (verifies only, still in JWKS) | removed
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # After this, the key leaves the JWKS (every token it signed has expired).
    remove_after: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RevokedTokenRow(Base):
    """An access token revoked before its expiry (RFC 7009); purged once expired."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class IdentityEventRow(Base):
    """Append-only change feed polled by data-plane workers (see identity/events.py)."""

    __tablename__ = "identity_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class DataPlaneNodeRow(Base):
    """A data-plane worker's heartbeat: which config version it serves, and since when."""

    __tablename__ = "dataplane_nodes"

    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    node_name: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    config_version: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # JSON: per-upstream target health and breaker states as this worker sees them.
    health: Mapped[str | None] = mapped_column(Text)
