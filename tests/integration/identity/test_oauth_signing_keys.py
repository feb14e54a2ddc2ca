"""Signing-key lifecycle, the data plane's issuer keyring and revocation records,
against a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.events import EventKind, IdentityEvent, IdentityEventFeed
from portcullis.identity.issuer_keys import IssuerKeyring
from portcullis.identity.oauth_server import OAuthServer
from portcullis.identity.oauth_settings import OAuthServerSettings
from portcullis.identity.secrets import ServerSecret
from portcullis.identity.signing import VERIFY_LEEWAY, KeyStatus, SigningKeyStore
from portcullis.store.engine import create_engine
from portcullis.store.identity_tables import RevokedTokenRow, SigningKeyRow
from portcullis.store.migrations import upgrade_to_head
from support.threaded_upstream import eventually

SECRET = ServerSecret.from_secret(b"s" * 32)
ISSUER = "https://auth.example.test"


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def engines(database_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines on one store: two control-plane workers."""
    await upgrade_to_head(database_url)
    first, second = create_engine(database_url), create_engine(database_url)
    try:
        yield first, second
    finally:
        await first.dispose()
        await second.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC).replace(microsecond=0))


async def rows(engine: AsyncEngine) -> dict[str, tuple[str, bytes]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(SigningKeyRow.kid, SigningKeyRow.status, SigningKeyRow.private_key)
        )
        return {kid: (status, key) for kid, status, key in result.all()}


async def events(engine: AsyncEngine, kind: EventKind) -> list[str]:
    return [e.subject for e in await IdentityEventFeed(engine).since(0) if e.kind is kind]


async def test_concurrent_first_use_creates_exactly_one_key(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    stores = [SigningKeyStore(e, SECRET) for e in engines for _ in range(2)]
    signers = await asyncio.gather(*(s.signer() for s in stores))
    assert len({s.kid for s in signers}) == 1
    stored = await rows(engines[0])
    assert [status for status, _ in stored.values()] == ["active"]
    assert await events(engines[0], EventKind.SIGNING_KEY) == [signers[0].kid]


async def test_private_keys_are_encrypted_and_bound_to_their_kid(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    store = SigningKeyStore(engines[0], SECRET)
    signer = await store.signer()
    first = signer.kid
    second = (await store.rotate()).kid
    stored = await rows(engines[0])
    blob = stored[first][1]
    der = SECRET.decrypt(blob, context=first.encode())
    key = serialization.load_der_private_key(der, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == signer.key.public_key().public_numbers()
    assert der not in blob
    with pytest.raises(InvalidTag):
        SECRET.decrypt(blob, context=second.encode())
    with pytest.raises(InvalidTag):
        ServerSecret.from_secret(b"t" * 32).decrypt(blob, context=first.encode())
    for info in await store.keys():
        assert set(info.public_jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}


async def test_rotation_retires_then_removes_the_previous_key(
    engines: tuple[AsyncEngine, AsyncEngine], clock: Clock
) -> None:
    engine = engines[0]
    store = SigningKeyStore(engine, SECRET, token_lifetime=3600, clock=clock)
    old = await store.signer()
    token = jwt.encode({"sub": "alice"}, old.key, algorithm=old.alg, headers={"kid": old.kid})
    clock.advance(10)
    new = await store.rotate()
    assert (await store.signer()).kid == new.kid

    listed = {k.kid: k for k in await store.keys()}
    assert listed[new.kid].status is KeyStatus.ACTIVE
    assert listed[old.kid].status is KeyStatus.RETIRED
    assert listed[old.kid].retired_at == clock.now
    assert listed[old.kid].remove_after == clock.now + timedelta(seconds=3600) + VERIFY_LEEWAY
    published = {k["kid"] for k in (await store.jwks())["keys"]}
    assert published == {old.kid, new.kid}
    # A token signed by the retired key still verifies with the published key.
    retired_key = await store.verification_key(old.kid)
    assert retired_key is not None
    assert jwt.decode(token, retired_key.key, algorithms=["ES256"])["sub"] == "alice"

    clock.advance(3600 + VERIFY_LEEWAY.total_seconds())
    assert {k["kid"] for k in (await store.jwks())["keys"]} == {new.kid}
    assert await store.verification_key(old.kid) is None
    assert await store.remove_expired() == [old.kid]
    assert await store.remove_expired() == []
    stored = await rows(engine)
    assert stored[old.kid] == ("removed", b"")
    assert stored[new.kid][0] == "active"
    assert [k.kid for k in await store.keys()] == [new.kid]
    assert await events(engine, EventKind.SIGNING_KEY) == [old.kid, new.kid, old.kid, old.kid]


async def test_an_old_key_rotates_automatically_once_even_when_workers_race(
    engines: tuple[AsyncEngine, AsyncEngine], clock: Clock
) -> None:
    stores = [SigningKeyStore(e, SECRET, max_age=3600, clock=clock) for e in engines]
    first = await stores[0].signer()
    clock.advance(3599)
    assert (await stores[1].signer()).kid == first.kid
    clock.advance(1)
    signers = await asyncio.gather(*(s.signer() for s in stores for _ in range(3)))
    kids = {s.kid for s in signers}
    assert len(kids) == 1
    assert first.kid not in kids
    stored = await rows(engines[0])
    assert sorted(status for status, _ in stored.values()) == ["active", "retired"]


async def test_rs256_keys_can_be_configured(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    store = SigningKeyStore(engines[0], SECRET, alg="RS256")
    signer = await store.signer()
    assert signer.alg == "RS256"
    (info,) = await store.keys()
    assert set(info.public_jwk) == {"kty", "n", "e", "kid", "alg", "use"}
    with pytest.raises(ValueError, match="unsupported"):
        SigningKeyStore(engines[0], SECRET, alg="HS256")


def token_event(jti: str) -> IdentityEvent:
    return IdentityEvent(0, EventKind.TOKEN, jti, datetime.now(UTC))


async def test_keyring_follows_signing_key_events(
    engines: tuple[AsyncEngine, AsyncEngine], clock: Clock
) -> None:
    engine = engines[0]
    store = SigningKeyStore(engine, SECRET, clock=clock)
    old = await store.signer()
    ring = IssuerKeyring(engine, issuer=ISSUER)
    try:
        assert ring.issuer == ISSUER
        await ring.refresh()
        assert ring.key_for(old.kid) is not None
        assert ring.key_for("unknown") is None
        new = await store.rotate()
        assert ring.key_for(new.kid) is None
        feed = IdentityEventFeed(engine)
        ring.on_events(await feed.since(0))
        await eventually(lambda: ring.key_for(new.kid) is not None)
        key = ring.key_for(new.kid)
        assert key is not None
        assert key.algorithm_name == "ES256"
        # The retired key is still trusted until its removal time...
        assert ring.key_for(old.kid) is not None
        # ...and not after it, even before anyone marks it removed.
        async with engine.begin() as conn:
            await conn.execute(
                update(SigningKeyRow)
                .where(SigningKeyRow.kid == old.kid)
                .values(remove_after=datetime.now(UTC) - timedelta(seconds=1))
            )
        await ring.refresh()
        assert ring.key_for(old.kid) is None
        assert ring.key_for(new.kid) is not None
    finally:
        await ring.aclose()


async def test_keyring_revocations_apply_at_once_and_survive_reloads(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    engine = engines[0]
    server = OAuthServer(
        engine,
        SECRET,
        issuer=ISSUER,
        settings=OAuthServerSettings(),
        consumer_lookup=lambda _name: _none(),
    )
    soon = datetime.now(UTC) + timedelta(hours=1)
    assert await server.record_revocation("stored", "pcc_x", soon)
    ring = IssuerKeyring(engine, issuer=ISSUER)
    try:
        await ring.refresh()
        assert ring.is_revoked("stored")
        assert not ring.is_revoked("fresh")

        # An event takes effect synchronously, before any store read.
        assert await server.record_revocation("fresh", "pcc_x", soon)
        ring.on_events([token_event("fresh")])
        assert ring.is_revoked("fresh")

        # An event delivered while a reload's query runs is kept, even if the query
        # did not see its row; one delivered before a reload that can't find it is gone
        # (its row was purged: the token expired).
        ring.on_events([token_event("purged")])
        reload = asyncio.create_task(ring.refresh())
        await asyncio.sleep(0)
        ring.on_events([token_event("racing")])
        await reload
        assert ring.is_revoked("racing")
        assert not ring.is_revoked("purged")
        assert ring.is_revoked("fresh")
        assert ring.is_revoked("stored")
    finally:
        await ring.aclose()


async def _none() -> None:
    return None


async def test_revocations_are_recorded_once_with_an_event_and_expired_ones_purged(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    engine = engines[0]
    server = OAuthServer(
        engine,
        SECRET,
        issuer=ISSUER,
        settings=OAuthServerSettings(),
        consumer_lookup=lambda _name: _none(),
    )
    long_ago = datetime.now(UTC) - timedelta(days=1)
    async with engine.begin() as conn:
        await conn.execute(
            insert(RevokedTokenRow).values(
                jti="old", client_id="pcc_x", revoked_at=long_ago, expires_at=long_ago
            )
        )
    soon = datetime.now(UTC) + timedelta(minutes=5)
    results = await asyncio.gather(
        server.record_revocation("j1", "pcc_x", soon),
        server.record_revocation("j1", "pcc_x", soon),
    )
    assert sorted(results) == [False, True]
    async with engine.connect() as conn:
        jtis = set((await conn.execute(select(RevokedTokenRow.jti))).scalars())
        count = await conn.scalar(select(func.count()).select_from(RevokedTokenRow))
    assert jtis == {"j1"}
    assert count == 1
    assert await events(engine, EventKind.TOKEN) == ["j1"]
