"""The worker's cache of basic/hmac/mtls credentials: positive and negative entries,
single flight, invalidation by CREDENTIAL events (also of a lookup in flight), outages,
and the verified-password cache."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from portcullis.identity.credential_cache import Rejection
from portcullis.identity.credential_lookup import ConsumerCredentialCache
from portcullis.identity.credential_store import CredentialKind
from portcullis.identity.events import EventKind, IdentityEvent
from support.auth_credentials import SECRET, MemoryCredentials, basic_record, record

HMAC = CredentialKind.HMAC


def event(subject: str, kind: EventKind = EventKind.CREDENTIAL) -> IdentityEvent:
    return IdentityEvent(1, kind, subject, datetime.now(UTC))


async def test_hits_misses_and_the_negative_ttl() -> None:
    store = MemoryCredentials()
    now = [0.0]
    cache = ConsumerCredentialCache(store, SECRET, negative_ttl=30, clock=lambda: now[0])
    found = store.add(record(HMAC, "pch_a", "alice", b"s"))
    assert await cache.resolve(HMAC, "pch_a") == (found,)
    assert await cache.resolve(HMAC, "pch_a") == (found,)
    assert await cache.resolve(HMAC, "pch_b") is Rejection.UNKNOWN
    assert await cache.resolve(HMAC, "pch_b") is Rejection.UNKNOWN
    assert store.finds == 2
    now[0] = 31
    assert await cache.resolve(HMAC, "pch_b") is Rejection.UNKNOWN
    assert store.finds == 3
    assert await cache.resolve(HMAC, "") is Rejection.MALFORMED
    assert await cache.resolve(HMAC, "x" * 513) is Rejection.MALFORMED


async def test_single_flight_and_outages_are_never_cached() -> None:
    store = MemoryCredentials()
    store.add(record(HMAC, "pch_a", "alice", b"s"))
    cache = ConsumerCredentialCache(store, SECRET)
    results = await asyncio.gather(*(cache.resolve(HMAC, "pch_a") for _ in range(10)))
    assert len({id(r) for r in results}) == 1
    assert store.finds == 1
    store.fail = True
    assert await cache.resolve(HMAC, "pch_z") is Rejection.UNAVAILABLE
    store.fail = False
    assert await cache.resolve(HMAC, "pch_z") is Rejection.UNKNOWN


async def test_events_evict_only_their_credential_and_kind() -> None:
    store = MemoryCredentials()
    store.add(record(HMAC, "pch_a", "alice", b"old"))
    store.add(record(HMAC, "pch_b", "bob", b"b"))
    cache = ConsumerCredentialCache(store, SECRET)
    await cache.resolve(HMAC, "pch_a")
    await cache.resolve(HMAC, "pch_b")
    cache.on_events([event("hmac:pch_a"), event("pch_b", EventKind.KEY)])
    assert len(cache) == 1
    store.add(record(HMAC, "pch_a", "alice", b"new"))
    refreshed = await cache.resolve(HMAC, "pch_a")
    assert not isinstance(refreshed, Rejection)
    assert refreshed[0].secret == b"new"


async def test_an_event_during_a_lookup_keeps_its_result_out_of_the_cache() -> None:
    store = MemoryCredentials()
    store.add(record(HMAC, "pch_a", "alice", b"s"))
    gate = asyncio.Event()
    find = store.find

    async def slow(kind: CredentialKind, identifier: str):  # type: ignore[no-untyped-def]
        await gate.wait()
        return await find(kind, identifier)

    store.find = slow  # type: ignore[method-assign]
    cache = ConsumerCredentialCache(store, SECRET)
    pending = asyncio.ensure_future(cache.resolve(HMAC, "pch_a"))
    await asyncio.sleep(0)
    cache.invalidate("hmac:pch_a")
    gate.set()
    assert not isinstance(await pending, Rejection)
    assert len(cache) == 0


async def test_verified_passwords_are_keyed_hashes_bounded_and_expire() -> None:
    store = MemoryCredentials()
    now = [0.0]
    cache = ConsumerCredentialCache(
        store, SECRET, capacity=2, verified_ttl=60, clock=lambda: now[0]
    )
    rec = store.add(basic_record("alice", "pw-alice", "alice"))
    assert await cache.resolve(CredentialKind.BASIC, "alice") == (rec,)
    assert await cache.verify_password(rec, "pw-alice")
    assert not await cache.verify_password(rec, "wrong")
    assert await cache.verify_password(rec, "pw-alice")
    assert cache.verifies == 2
    assert all("pw-alice" not in mac for mac in cache._verified)
    now[0] = 61
    assert await cache.verify_password(rec, "pw-alice")
    assert cache.verifies == 3
