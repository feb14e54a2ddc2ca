"""Rotating asymmetric keys that sign the built-in OAuth2 server's access tokens.

A key moves through three states, stored in `signing_keys`:

- **active**: signs new tokens. There is one; the first is created on first use.
- **retired**: replaced by a newer key, still published in the JWKS so the tokens
  it signed keep verifying, until `remove_after` (retirement + the longest token
  lifetime + leeway), when every such token has expired.
- **removed**: no longer published; its encrypted private key is wiped.

Private keys are stored as PKCS#8 encrypted with the server secret (AES-GCM, the
kid as associated data, so an encrypted key can't be moved to another row). The kid
is the key's RFC 7638 JWK thumbprint. Every state change appends a SIGNING_KEY
event in the same transaction, so data-plane workers reload their keyring.

Several control-plane workers may rotate at once (an admin call racing an automatic
rotation, or two token requests finding the key too old). Every change takes the
store's writer lock first (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a
transaction-scoped advisory lock) and re-reads the state under it, so the loser of a
race sees the winner's new key and does nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.identity.events import EventKind, append_events
from portcullis.identity.issuer_keys import public_jwk_from_row
from portcullis.identity.secrets import ServerSecret
from portcullis.store.engine import write_transaction
from portcullis.store.identity_tables import SigningKeyRow

log = structlog.get_logger(__name__)

SUPPORTED_ALGORITHMS = ("ES256", "RS256")
# Verifiers may accept a token this long after its `exp` (clock skew): a retired key
# stays published that much longer than the longest token lifetime.
VERIFY_LEEWAY = timedelta(seconds=300)
# Arbitrary constant naming the PostgreSQL advisory lock that serialises key changes.
_ADVISORY_LOCK_ID = 0x70637369676E  # "pcsign"
# Seconds between two opportunistic sweeps for retired keys past `remove_after`.
_SWEEP_EVERY = 60.0

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class KeyStatus(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class SigningKeyInfo:
    """A signing key's public facts (what the admin API lists; never private material)."""

    kid: str
    alg: str
    status: KeyStatus
    created_at: datetime
    retired_at: datetime | None
    remove_after: datetime | None
    public_jwk: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "alg": self.alg,
            "status": self.status.value,
            "created_at": _iso(self.created_at),
            "retired_at": _iso(self.retired_at),
            "remove_after": _iso(self.remove_after),
            "public_jwk": self.public_jwk,
        }

    def is_published(self, now: datetime) -> bool:
        """True while verifiers should find this key in the JWKS."""
        if self.status is KeyStatus.ACTIVE:
            return True
        return (
            self.status is KeyStatus.RETIRED
            and self.remove_after is not None
            and self.remove_after > now
        )


@dataclass(frozen=True, slots=True)
class Signer:
    """The active key, ready to sign."""

    kid: str
    alg: str
    key: PrivateKey
    created_at: datetime


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) over the key type's required members."""
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "RSA": ("e", "kty", "n"),
        "OKP": ("crv", "kty", "x"),
    }
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def generate_key(alg: str) -> tuple[PrivateKey, dict[str, Any]]:
    """A new private key for `alg` and its public JWK (with kid, alg and use)."""
    key: PrivateKey
    if alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = dict(ECAlgorithm.to_jwk(key.public_key(), as_dict=True))
    elif alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = dict(RSAAlgorithm.to_jwk(key.public_key(), as_dict=True))
    else:
        raise ValueError(
            f"unsupported signing algorithm {alg!r} (use one of {SUPPORTED_ALGORITHMS})"
        )
    jwk = {k: v for k, v in jwk.items() if k not in ("key_ops", "ext")}
    jwk.update(kid=jwk_thumbprint(jwk), alg=alg, use="sig")
    return key, jwk


def _info(row: Any) -> SigningKeyInfo:
    return SigningKeyInfo(
        kid=row.kid,
        alg=row.alg,
        status=KeyStatus(row.status),
        created_at=row.created_at,
        retired_at=row.retired_at,
        remove_after=row.remove_after,
        public_jwk=json.loads(row.public_jwk),
    )


_PUBLIC_COLUMNS = (
    SigningKeyRow.kid,
    SigningKeyRow.alg,
    SigningKeyRow.status,
    SigningKeyRow.created_at,
    SigningKeyRow.retired_at,
    SigningKeyRow.remove_after,
    SigningKeyRow.public_jwk,
)


async def _lock(conn: AsyncConnection) -> None:
    """Serialise signing-key changes across processes (SQLite already holds its write lock)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID})


class SigningKeyStore:
    """Creates, rotates, retires and publishes the OAuth2 server's signing keys."""

    def __init__(
        self,
        engine: AsyncEngine,
        secret: ServerSecret,
        *,
        alg: str = "ES256",
        max_age: float = 0.0,
        token_lifetime: float = 24 * 3600.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if alg not in SUPPORTED_ALGORITHMS:
            raise ValueError(f"unsupported signing algorithm {alg!r}")
        self._engine = engine
        self._secret = secret
        self.alg = alg
        self.max_age = timedelta(seconds=max_age) if max_age > 0 else None
        self.retire_for = timedelta(seconds=token_lifetime) + VERIFY_LEEWAY
        self._clock = clock
        self._private: dict[str, PrivateKey] = {}
        self._public: dict[str, PyJWK] = {}
        self._next_sweep = 0.0

    # ------------------------------------------------------------------ reading

    async def keys(self) -> list[SigningKeyInfo]:
        """Every key that was not removed, newest first."""
        await self._sweep_if_due()
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(*_PUBLIC_COLUMNS)
                    .where(SigningKeyRow.status != KeyStatus.REMOVED.value)
                    .order_by(SigningKeyRow.created_at.desc(), SigningKeyRow.kid)
                )
            ).all()
        return [_info(r) for r in rows]

    async def get(self, kid: str) -> SigningKeyInfo | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(*_PUBLIC_COLUMNS).where(SigningKeyRow.kid == kid))
            ).first()
        return _info(row) if row is not None else None

    async def published(self) -> list[SigningKeyInfo]:
        """Keys verifiers should know: the active one and retired ones not yet past removal."""
        now = self._clock()
        return [k for k in await self.keys() if k.is_published(now)]

    async def jwks(self) -> dict[str, Any]:
        """The RFC 7517 JWK Set of published keys (public members only)."""
        return {"keys": [k.public_jwk for k in await self.published()]}

    async def verification_key(self, kid: str) -> PyJWK | None:
        """The public key for `kid` if it is published now (for introspection and revocation)."""
        info = await self.get(kid)
        if info is None or not info.is_published(self._clock()):
            return None
        key = self._public.get(kid)
        if key is None:
            key = public_jwk_from_row(json.dumps(info.public_jwk))
            self._public[kid] = key
        return key

    # ------------------------------------------------------------------ signing

    async def signer(self) -> Signer:
        """The active key (created on first use, rotated first when older than `max_age`)."""
        await self._sweep_if_due()
        row = await self._active_row()
        if row is None:
            await self._rotate(only_if_none=True)
            row = await self._active_row()
        elif self.max_age is not None and row.created_at + self.max_age <= self._clock():
            await self._rotate(replacing=row.kid)
            row = await self._active_row()
        if row is None:
            raise RuntimeError("no active signing key after creating one")
        key = self._private.get(row.kid)
        if key is None:
            der = self._secret.decrypt(row.private_key, context=row.kid.encode())
            loaded = serialization.load_der_private_key(der, password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
                raise TypeError(f"signing key {row.kid} is not an EC or RSA key")
            key = loaded
            self._private[row.kid] = key
        return Signer(row.kid, row.alg, key, row.created_at)

    async def _active_row(self) -> Any:
        async with self._engine.connect() as conn:
            return (
                await conn.execute(
                    select(
                        SigningKeyRow.kid,
                        SigningKeyRow.alg,
                        SigningKeyRow.private_key,
                        SigningKeyRow.created_at,
                    )
                    .where(SigningKeyRow.status == KeyStatus.ACTIVE.value)
                    .order_by(SigningKeyRow.created_at.desc(), SigningKeyRow.kid)
                    .limit(1)
                )
            ).first()

    # ------------------------------------------------------------------ changing

    async def rotate(self) -> SigningKeyInfo:
        """Make a new key active now; the previous active key is retired (still published)."""
        info = await self._rotate()
        if info is None:
            raise RuntimeError("rotation created no key")
        return info

    async def _rotate(
        self, *, replacing: str | None = None, only_if_none: bool = False
    ) -> SigningKeyInfo | None:
        """Rotate under the writer lock; conditional forms give way to a concurrent winner.

        `replacing`: only if that kid is still the active key. `only_if_none`: only if
        there is no active key at all. Returns the new key, or None when it gave way.
        """
        private, jwk = generate_key(self.alg)
        kid = jwk["kid"]
        der = private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        async with write_transaction(self._engine) as conn:
            await _lock(conn)
            active = list(
                (
                    await conn.scalars(
                        select(SigningKeyRow.kid).where(
                            SigningKeyRow.status == KeyStatus.ACTIVE.value
                        )
                    )
                ).all()
            )
            if only_if_none and active:
                return None
            if replacing is not None and replacing not in active:
                return None
            now = self._clock()
            if active:
                await conn.execute(
                    update(SigningKeyRow)
                    .where(SigningKeyRow.kid.in_(active))
                    .values(
                        status=KeyStatus.RETIRED.value,
                        retired_at=now,
                        remove_after=now + self.retire_for,
                    )
                )
            await conn.execute(
                insert(SigningKeyRow).values(
                    kid=kid,
                    alg=self.alg,
                    public_jwk=json.dumps(jwk, separators=(",", ":")),
                    private_key=self._secret.encrypt(der, context=kid.encode()),
                    status=KeyStatus.ACTIVE.value,
                    created_at=now,
                    retired_at=None,
                    remove_after=None,
                )
            )
            await append_events(conn, [(EventKind.SIGNING_KEY, k) for k in (kid, *active)])
        self._private[kid] = private
        log.info("signing_key.rotated", kid=kid, alg=self.alg, retired=active)
        return SigningKeyInfo(
            kid=kid,
            alg=self.alg,
            status=KeyStatus.ACTIVE,
            created_at=now,
            retired_at=None,
            remove_after=None,
            public_jwk=jwk,
        )

    async def remove_expired(self) -> list[str]:
        """Mark retired keys past `remove_after` removed and wipe their private keys."""
        async with write_transaction(self._engine) as conn:
            await _lock(conn)
            now = self._clock()
            kids: Sequence[str] = (
                await conn.scalars(
                    select(SigningKeyRow.kid).where(
                        SigningKeyRow.status == KeyStatus.RETIRED.value,
                        SigningKeyRow.remove_after <= now,
                    )
                )
            ).all()
            if kids:
                await conn.execute(
                    update(SigningKeyRow)
                    .where(SigningKeyRow.kid.in_(kids))
                    .values(status=KeyStatus.REMOVED.value, private_key=b"")
                )
                await append_events(conn, [(EventKind.SIGNING_KEY, k) for k in kids])
        for kid in kids:
            self._private.pop(kid, None)
            self._public.pop(kid, None)
        if kids:
            log.info("signing_key.removed", kids=list(kids))
        return list(kids)

    async def _sweep_if_due(self) -> None:
        """Remove expired retired keys at most once a minute per process."""
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + _SWEEP_EVERY
        async with self._engine.connect() as conn:
            due = await conn.scalar(
                select(SigningKeyRow.kid)
                .where(
                    SigningKeyRow.status == KeyStatus.RETIRED.value,
                    SigningKeyRow.remove_after <= self._clock(),
                )
                .limit(1)
            )
        if due is not None:
            await self.remove_expired()
