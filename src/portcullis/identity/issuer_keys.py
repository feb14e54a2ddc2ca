"""The data plane's view of the built-in OAuth2 server: its public keys and revoked tokens.

jwt-auth in `issuer: gateway` mode verifies access tokens that the control plane
signed. It needs, per request and without I/O, the public key for a token's `kid`
and whether the token's `jti` was revoked. `IssuerKeyring` keeps both in memory:
`refresh()` loads them from the store (at worker start), and identity events keep
them current: a SIGNING_KEY event (a key was added, retired or removed) reloads the
keys, a TOKEN event (a token was revoked) marks its jti revoked at once, with no
I/O, so a revocation is enforced as soon as the event poller delivers it. Store
reads run in one background task, so bursts of events cost one reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from jwt import PyJWK
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.events import EventKind, IdentityEvent
from portcullis.identity.oauth_clients import client_revocation_id
from portcullis.store.identity_tables import RevokedTokenRow, SigningKeyRow

log = structlog.get_logger(__name__)

# Signing-key states whose public key is published (see identity/signing.py).
PUBLISHED_STATUSES = ("active", "retired")
# Revocations learnt from events, whose expiry is not loaded yet.
_UNKNOWN_EXPIRY = math.inf
# Prune expired revocations once the map has grown by this many entries.
_PRUNE_EVERY = 1024
# A revocation is kept this long past the token's expiry, so a verifier that allows
# clock-skew leeway on `exp` still refuses it; the store keeps rows as long.
REVOKED_TOKEN_GRACE = 300.0
# Seconds before a failed store read is tried again.
_RETRY_AFTER = 1.0


def public_jwk_from_row(public_jwk: str) -> PyJWK:
    """A verification key from a stored public JWK (its `alg` pins the algorithm)."""
    return PyJWK.from_dict(json.loads(public_jwk))


async def published_rows(engine: AsyncEngine) -> tuple[Sequence[Any], Sequence[Any]]:
    """The issuer's published keys (kid, public_jwk, remove_after) and its unexpired
    revocations (jti, expires_at), as a worker's keyring and a data plane's identity feed
    read them."""
    cutoff = datetime.now(UTC) - timedelta(seconds=REVOKED_TOKEN_GRACE)
    async with engine.connect() as conn:
        keys = (
            await conn.execute(
                select(
                    SigningKeyRow.kid, SigningKeyRow.public_jwk, SigningKeyRow.remove_after
                ).where(SigningKeyRow.status.in_(PUBLISHED_STATUSES))
            )
        ).all()
        revoked = (
            await conn.execute(
                select(RevokedTokenRow.jti, RevokedTokenRow.expires_at).where(
                    RevokedTokenRow.expires_at > cutoff
                )
            )
        ).all()
    return keys, revoked


class IssuerKeyring:
    """Public keys and revoked token ids of the gateway's own OAuth2 issuer, in memory.

    Implements `portcullis.plugins.env.IssuerKeys`.
    """

    def __init__(self, engine: AsyncEngine, *, issuer: str) -> None:
        self._engine = engine
        self._issuer = issuer
        # kid -> (key, unix time after which it is no longer published, or inf)
        self._keys: dict[str, tuple[PyJWK, float]] = {}
        # jti -> unix expiry of the revoked token (inf until known)
        self._revoked: dict[str, float] = {}
        # Revocations learnt from events and not yet confirmed by a full reload,
        # with the generation in which they arrived.
        self._unconfirmed: dict[str, int] = {}
        self._generation = 0
        self._prune_at = _PRUNE_EVERY
        self._reload_wanted = False
        self._jtis_wanted: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def issuer(self) -> str:
        return self._issuer

    def key_for(self, kid: str) -> PyJWK | None:
        """The published public key with this `kid`, or None."""
        entry = self._keys.get(kid)
        if entry is None:
            return None
        key, remove_after = entry
        if remove_after <= time.time():
            return None
        return key

    def is_revoked(self, jti: str) -> bool:
        return jti in self._revoked

    def client_revoked(self, client_id: str) -> bool:
        # Client-wide revocations travel as revoked tokens with a reserved id.
        return client_revocation_id(client_id) in self._revoked

    @property
    def kids(self) -> frozenset[str]:
        """Key ids currently held (for diagnostics and tests)."""
        return frozenset(self._keys)

    async def refresh(self) -> None:
        """Reload published keys and unexpired revocations from the store."""
        generation = self._generation
        key_rows, revoked_rows = await published_rows(self._engine)
        keys: dict[str, tuple[PyJWK, float]] = {}
        for kid, public_jwk, remove_after in key_rows:
            try:
                key = public_jwk_from_row(public_jwk)
            except Exception as exc:
                # One bad row must not stop the worker from trusting the other keys.
                log.warning("issuer_keys.bad_key", kid=kid, error=str(exc))
                continue
            keys[kid] = (key, remove_after.timestamp() if remove_after else math.inf)
        revoked = {jti: expires_at.timestamp() for jti, expires_at in revoked_rows}
        # A revocation event that arrived while the query ran may not be in its result:
        # keep those. Older ones were committed before the query started (events
        # commit with their change), so if the store no longer has them they expired.
        for jti, seen_in in list(self._unconfirmed.items()):
            if seen_in > generation and jti not in revoked:
                revoked[jti] = self._revoked.get(jti, _UNKNOWN_EXPIRY)
            else:
                del self._unconfirmed[jti]
        self._keys = keys
        self._revoked = revoked
        self._prune_at = len(revoked) + _PRUNE_EVERY

    def on_events(self, events: list[IdentityEvent]) -> None:
        """Event-poller callback: revocations apply now, key changes reload in the background."""
        for event in events:
            if event.kind is EventKind.TOKEN:
                self._generation += 1
                if event.subject not in self._revoked:
                    self._revoked[event.subject] = _UNKNOWN_EXPIRY
                self._unconfirmed[event.subject] = self._generation
                self._jtis_wanted.add(event.subject)
            elif event.kind is EventKind.SIGNING_KEY:
                self._reload_wanted = True
        if (self._reload_wanted or self._jtis_wanted) and not self._closed:
            self._schedule()

    def _schedule(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._work(), name="portcullis-issuer-keys")

    async def _work(self) -> None:
        while self._reload_wanted or self._jtis_wanted:
            reload, wanted = self._reload_wanted, sorted(self._jtis_wanted)
            self._reload_wanted = False
            self._jtis_wanted.clear()
            try:
                if reload:
                    await self.refresh()
                else:
                    await self._load_expiries(wanted)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Keep what we have (revocations from events are already in force) and
                # try again shortly: a lost key reload would leave a new kid untrusted.
                log.warning("issuer_keys.refresh_failed", error=str(exc), kind=type(exc).__name__)
                self._reload_wanted = self._reload_wanted or reload
                self._jtis_wanted.update(wanted)
                await asyncio.sleep(_RETRY_AFTER)

    async def _load_expiries(self, jtis: Sequence[str]) -> None:
        """Learn the expiry of event-revoked tokens, so they can be pruned when expired."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(RevokedTokenRow.jti, RevokedTokenRow.expires_at).where(
                        RevokedTokenRow.jti.in_(jtis)
                    )
                )
            ).all()
        for jti, expires_at in rows:
            if jti in self._revoked:
                self._revoked[jti] = expires_at.timestamp()
            self._unconfirmed.pop(jti, None)
        if len(self._revoked) >= self._prune_at:
            cutoff = time.time() - REVOKED_TOKEN_GRACE
            self._revoked = {j: e for j, e in self._revoked.items() if e > cutoff}
            self._prune_at = len(self._revoked) + _PRUNE_EVERY

    async def aclose(self) -> None:
        """Stop background work (nothing to flush)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
