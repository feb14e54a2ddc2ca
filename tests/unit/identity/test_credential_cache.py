"""CredentialCache: hits without I/O, single-flight misses, negative caching, eviction,
invalidation by events, outage handling and batched last-used stamps."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from portcullis.identity.credential_cache import (
    MAX_CREDENTIAL_LENGTH,
    CredentialCache,
    Rejection,
)
from portcullis.identity.events import EventKind, IdentityEvent
from portcullis.identity.key_records import KeyRecord, KeyStatus
from portcullis.identity.keys import Environment, generate_key
from portcullis.identity.secrets import ServerSecret
from support.clock import DrivenSleep, ManualClock

SECRET = ServerSecret.from_secret(b"unit-test-secret-0123456789abcdef!")


def record(key_id: str, consumer: str = "alice") -> KeyRecord:
    return KeyRecord(
        id=key_id,
        consumer=consumer,
        name=key_id,
        environment=Environment.production,
        scopes=frozenset({"read"}),
        status=KeyStatus.active,
        status_reason=None,
        expires_at=None,
        grace_until=None,
        allowed_origins=frozenset(),
        ip_allowlist=(),
        plan=None,
    )


class FakeStore:
    """An in-memory KeyLookup that counts calls and can be gated or made to fail."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyRecord] = {}
        self.finds: list[str] = []
        self.touches: list[dict[str, datetime]] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None
        self.touch_fail: Exception | None = None

    def add(self, key_id: str, consumer: str = "alice") -> tuple[str, KeyRecord]:
        _, full = generate_key(Environment.production, key_id)
        rec = record(key_id, consumer)
        self.keys[SECRET.hash_credential(full)] = rec
        return full, rec

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        self.finds.append(key_hash)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return self.keys.get(key_hash)

    async def touch_used(self, stamps: dict[str, datetime]) -> None:
        if self.touch_fail is not None:
            raise self.touch_fail
        self.touches.append(dict(stamps))


def key_event(key_hash: str, kind: EventKind = EventKind.KEY) -> IdentityEvent:
    return IdentityEvent(1, kind, key_hash, datetime.now(UTC))


def completes_without_suspending(coro: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine one step: it must finish without ever awaiting."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the coroutine suspended (it awaited something)")


async def test_miss_looks_up_by_peppered_hash_then_hits_without_io() -> None:
    store = FakeStore()
    full, rec = store.add("AAAAAAAAAAAA")
    cache = CredentialCache(store, SECRET)
    assert await cache.resolve(full) == rec
    assert store.finds == [SECRET.hash_credential(full)]
    # A hit neither awaits nor asks the store.
    assert completes_without_suspending(cache.resolve(full)) == rec
    assert len(store.finds) == 1


async def test_concurrent_misses_for_one_key_share_one_lookup() -> None:
    store = FakeStore()
    full, rec = store.add("BBBBBBBBBBBB")
    store.gate = asyncio.Event()
    cache = CredentialCache(store, SECRET)
    waiters = [asyncio.create_task(cache.resolve(full)) for _ in range(50)]
    await asyncio.sleep(0)
    store.gate.set()
    results = await asyncio.gather(*waiters)
    assert results == [rec] * 50
    assert len(store.finds) == 1


async def test_unknown_key_is_negatively_cached_until_the_ttl() -> None:
    store = FakeStore()
    clock = ManualClock()
    cache = CredentialCache(store, SECRET, negative_ttl=30, clock=clock)
    _, unknown = generate_key(Environment.production)
    assert await cache.resolve(unknown) is Rejection.UNKNOWN
    assert await cache.resolve(unknown) is Rejection.UNKNOWN
    assert len(store.finds) == 1
    clock.now += 31
    assert await cache.resolve(unknown) is Rejection.UNKNOWN
    assert len(store.finds) == 2


async def test_bad_checksum_is_rejected_without_lookup_but_legacy_keys_are_looked_up() -> None:
    store = FakeStore()
    full, _ = store.add("CCCCCCCCCCCC")
    cache = CredentialCache(store, SECRET)
    tampered = full[:-1] + ("A" if full[-1] != "A" else "B")
    for bad in (tampered, "pc_live_short", "pc_dev_", "", "x" * (MAX_CREDENTIAL_LENGTH + 1)):
        assert await cache.resolve(bad) is Rejection.MALFORMED
    assert store.finds == []
    legacy = "legacy-7f3a9c2e1b"
    store.keys[SECRET.hash_credential(legacy)] = legacy_rec = record("LEGACY000001")
    assert await cache.resolve(legacy) == legacy_rec
    assert await cache.resolve("pc_other_thing") is Rejection.UNKNOWN
    assert len(store.finds) == 2


async def test_key_events_evict_from_both_caches_and_other_kinds_do_not() -> None:
    store = FakeStore()
    full, rec = store.add("DDDDDDDDDDDD")
    _, unknown = generate_key(Environment.production)
    cache = CredentialCache(store, SECRET)
    await cache.resolve(full)
    await cache.resolve(unknown)
    known_hash, unknown_hash = SECRET.hash_credential(full), SECRET.hash_credential(unknown)
    cache.on_events(
        [key_event(known_hash, EventKind.TOKEN), key_event(unknown_hash, EventKind.OAUTH_CLIENT)]
    )
    assert (len(cache), cache.negative_size) == (1, 1)
    cache.on_events([key_event(known_hash), key_event(unknown_hash)])
    assert (len(cache), cache.negative_size) == (0, 0)
    # The next request sees the store's current state (here: the key was revoked).
    store.keys[known_hash] = revoked = replace(rec, status=KeyStatus.revoked)
    assert await cache.resolve(full) == revoked


async def test_invalidation_during_a_lookup_keeps_its_result_out_of_the_cache() -> None:
    store = FakeStore()
    full, rec = store.add("EEEEEEEEEEEE")
    store.gate = asyncio.Event()
    cache = CredentialCache(store, SECRET)
    pending = asyncio.create_task(cache.resolve(full))
    await asyncio.sleep(0)
    cache.on_events([key_event(SECRET.hash_credential(full))])
    store.gate.set()
    assert await pending == rec  # the request that started before the event is answered
    assert len(cache) == 0  # but its possibly stale answer is not kept
    store.gate = None
    await cache.resolve(full)
    assert len(store.finds) == 2
    assert len(cache) == 1


async def test_store_outage_is_unavailable_for_every_waiter_and_never_cached() -> None:
    store = FakeStore()
    full, rec = store.add("FFFFFFFFFFFF")
    store.gate = asyncio.Event()
    store.fail = ConnectionError("database is down")
    cache = CredentialCache(store, SECRET)
    waiters = [asyncio.create_task(cache.resolve(full)) for _ in range(5)]
    await asyncio.sleep(0)
    store.gate.set()
    assert await asyncio.gather(*waiters) == [Rejection.UNAVAILABLE] * 5
    assert (len(cache), cache.negative_size, cache.failures) == (0, 0, 1)
    store.fail = None
    store.gate = None
    assert await cache.resolve(full) == rec


async def test_a_cancelled_waiter_does_not_cancel_the_shared_lookup() -> None:
    store = FakeStore()
    full, rec = store.add("GGGGGGGGGGGG")
    store.gate = asyncio.Event()
    cache = CredentialCache(store, SECRET)
    first = asyncio.create_task(cache.resolve(full))
    second = asyncio.create_task(cache.resolve(full))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    store.gate.set()
    assert await second == rec
    assert first.cancelled()
    assert len(store.finds) == 1


async def test_positive_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    store = FakeStore()
    a, _ = store.add("HHHHHHHHHHH1")
    b, _ = store.add("HHHHHHHHHHH2")
    c, _ = store.add("HHHHHHHHHHH3")
    cache = CredentialCache(store, SECRET, capacity=2)
    await cache.resolve(a)
    await cache.resolve(b)
    await cache.resolve(a)  # a is now the most recent
    await cache.resolve(c)  # evicts b
    assert len(cache) == 2
    finds = len(store.finds)
    await cache.resolve(a)
    await cache.resolve(c)
    assert len(store.finds) == finds
    await cache.resolve(b)
    assert len(store.finds) == finds + 1


async def test_negative_cache_is_bounded() -> None:
    store = FakeStore()
    cache = CredentialCache(store, SECRET, capacity=100, negative_capacity=3)
    unknown = [generate_key(Environment.development)[1] for _ in range(5)]
    for key in unknown:
        await cache.resolve(key)
    assert cache.negative_size == 3
    # The oldest entries went first: the first key is looked up again, the last is not.
    await cache.resolve(unknown[-1])
    assert len(store.finds) == 5
    await cache.resolve(unknown[0])
    assert len(store.finds) == 6


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        CredentialCache(FakeStore(), SECRET, capacity=0)


async def test_uses_are_written_in_one_batch_per_flush() -> None:
    store = FakeStore()
    cache = CredentialCache(store, SECRET)
    for _ in range(100):
        cache.record_use("k1")
        cache.record_use("k2")
    assert store.touches == []
    assert await cache.flush() == 2
    assert len(store.touches) == 1
    assert set(store.touches[0]) == {"k1", "k2"}
    stamp = store.touches[0]["k1"]
    assert stamp.tzinfo is UTC
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 5
    assert await cache.flush() == 0
    assert len(store.touches) == 1


async def test_background_flush_runs_every_interval_and_aclose_writes_the_rest() -> None:
    store, sleep = FakeStore(), DrivenSleep()
    cache = CredentialCache(store, SECRET, usage_flush_interval=7.0, sleep=sleep)
    cache.start()
    assert await sleep.waiting() == 7.0
    cache.record_use("k1")
    sleep.release()
    await sleep.waiting()  # one round flushed and the loop waits again
    assert store.touches == [{"k1": store.touches[0]["k1"]}]
    cache.record_use("k2")
    cache.record_use("k3")
    await cache.aclose()
    assert len(store.touches) == 2
    assert set(store.touches[1]) == {"k2", "k3"}
    assert cache.pending_uses == 0


async def test_a_failed_flush_keeps_the_stamps_for_the_next_one() -> None:
    store = FakeStore()
    cache = CredentialCache(store, SECRET)
    cache.record_use("k1")
    store.touch_fail = OSError("store down")
    assert await cache.flush() == 0
    assert cache.pending_uses == 1
    store.touch_fail = None
    assert await cache.flush() == 1
    assert set(store.touches[0]) == {"k1"}


async def test_outage_log_names_the_error_but_not_the_key_hash() -> None:
    store = FakeStore()
    full, _ = store.add("JJJJJJJJJJJJ")
    key_hash = SECRET.hash_credential(full)
    store.fail = OperationalError(
        "SELECT id FROM api_keys WHERE key_hash = ?", {"h": key_hash}, OSError("disk I/O error")
    )
    cache = CredentialCache(store, SECRET)
    with capture_logs() as logs:
        assert await cache.resolve(full) is Rejection.UNAVAILABLE
    assert [e["event"] for e in logs] == ["credential_cache.lookup_failed"]
    assert "disk I/O error" in logs[0]["error"]
    assert key_hash not in str(logs)
    assert full not in str(logs)
