"""The control plane's side of identity at the edge (hybrid/edge_identity.py).

Per connected node: the whole identity set once (keys by hash, credentials as
stored), read after noting the invalidation feed's position; then the feed's `key`
and `credential` invalidations after that position (the path every embedded-mode
worker's caches already follow: each key or credential change appends one in its
transaction), read every `interval`, and for each batch the current rows of the
hashes and subjects they name — a revocation, suspension, expiry change, new key or
deleted credential reaches the node as one small message. Re-reading a row named
twice is harmless (the message carries its current state, not an edit). A `token` or
`signing_key` invalidation re-sends the OAuth issuer's part whole (its published
public keys and unexpired revoked token ids: small).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from portcullis.hybrid.edge_identity import credentials_to_json, key_to_json, pepper_check
from portcullis.hybrid.protocol import Identity
from portcullis.store.invalidations import InvalidationFeed, InvalidationKind

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from portcullis.identity.secrets import ServerSecret

# How often a connection reads the invalidation feed (the embedded workers' default).
INTERVAL = 0.25


class IdentityFeed:
    def __init__(
        self, engine: AsyncEngine, *, issuer: str, secret: ServerSecret | None = None
    ) -> None:
        from portcullis.identity.credential_store import CredentialRepository
        from portcullis.identity.key_repository import KeyRepository
        from portcullis.identity.secrets import ServerSecret

        # Neither read needs the server secret: hashes and stored secrets go as stored.
        unused = ServerSecret.from_secret(b"\0" * 32)
        self.keys = KeyRepository(engine, unused)
        self.credentials = CredentialRepository(engine, unused)
        self.events = InvalidationFeed(engine)
        self.engine = engine
        self.iss = issuer  # the `iss` of the tokens this control plane signs
        # Lets a node see that it hashes keys with another server secret (edge_identity.py).
        self.pepper_check = pepper_check(secret) if secret is not None else None

    async def changes(self, hashes: list[str] | None, subjects: list[str] | None) -> dict[str, Any]:
        """The current state of the named keys and credentials (all, when None): absent
        ones as null / an empty list (removed on the node)."""
        records = dict(await self.keys.records(hashes))
        stored = await self.credentials.stored(subjects)
        wanted_keys = hashes if hashes is not None else list(records)
        wanted_subjects = subjects if subjects is not None else list(stored)
        return {
            "keys": {h: key_to_json(records[h]) if h in records else None for h in wanted_keys},
            "credentials": {s: credentials_to_json(stored.get(s, [])) for s in wanted_subjects},
        }

    async def issuer(self) -> dict[str, Any]:
        """The issuer's published public keys and unexpired revocations (the rows
        `IssuerKeyring.refresh` reads)."""
        from portcullis.identity.issuer_keys import published_rows

        keys, revoked = await published_rows(self.engine)
        return {
            "iss": self.iss,
            "keys": {k: [jwk, r.timestamp() if r else None] for k, jwk, r in keys},
            "revoked": {jti: e.timestamp() for jti, e in revoked},
        }

    async def follow(
        self,
        send: Callable[[str], Awaitable[None]],
        *,
        interval: float = INTERVAL,
    ) -> None:
        """Send the whole set, then each change, until cancelled (or `send` fails)."""
        seq = await self.events.latest()
        whole = {**await self.changes(None, None), "issuer": await self.issuer()}
        if self.pepper_check is not None:
            whole["pepper_check"] = self.pepper_check
        await send(Identity(seq, True, whole).encode())
        while True:
            await asyncio.sleep(interval)
            events = await self.events.since(seq)
            if not events:
                continue
            seq = events[-1].seq
            hashes = sorted({e.subject for e in events if e.kind is InvalidationKind.KEY})
            subjects = sorted({e.subject for e in events if e.kind is InvalidationKind.CREDENTIAL})
            issuer_kinds = (InvalidationKind.TOKEN, InvalidationKind.SIGNING_KEY)
            issuer = any(e.kind in issuer_kinds for e in events)
            if hashes or subjects or issuer:
                changes = await self.changes(hashes, subjects)
                if issuer:  # small: the published keys, unexpired revocations
                    changes["issuer"] = await self.issuer()
                await send(Identity(seq, False, changes).encode())
