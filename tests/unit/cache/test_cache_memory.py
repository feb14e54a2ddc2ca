"""MemoryCache: LRU by entries and bytes, TTL with an injected clock, purges and events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from portcullis.cache import CacheEntry, MemoryCache, PurgeScope, cache_key, key_path
from portcullis.cache.entry import ENTRY_OVERHEAD
from portcullis.identity.events import EventKind, IdentityEvent
from support.clock import ManualClock


def entry(body: bytes = b"x", *, expires_at: float = 2000.0) -> CacheEntry:
    return CacheEntry(200, ((b"content-type", b"text/plain"),), body, 1000.0, expires_at)


def test_lru_evicts_the_least_recently_used_entry_beyond_max_entries() -> None:
    cache = MemoryCache(max_entries=2, clock=ManualClock())
    cache.put([("a", entry()), ("b", entry())])
    assert cache.get_now("a") is not None  # a is now the most recent
    cache.put([("c", entry())])
    assert "b" not in cache
    assert "a" in cache
    assert "c" in cache
    assert cache.evictions == 1
    assert len(cache) == 2


def test_byte_cap_evicts_oldest_and_tracks_bytes_exactly() -> None:
    body = b"y" * 1000
    size = entry(body).size("k0")
    assert size == 2 + 1000 + len(b"content-type") + len(b"text/plain") + ENTRY_OVERHEAD
    cache = MemoryCache(max_entries=100, max_bytes=3 * size, clock=ManualClock())
    for i in range(3):
        cache.put([(f"k{i}", entry(body))])
    assert cache.bytes == 3 * size
    assert len(cache) == 3
    cache.put([("k3", entry(body))])
    assert "k0" not in cache
    assert len(cache) == 3
    assert cache.bytes == 3 * size
    # Replacing a key charges the difference, not both versions.
    cache.put([("k3", entry(b"small"))])
    assert cache.bytes == 2 * size + entry(b"small").size("k3")


def test_an_entry_larger_than_the_byte_cap_is_not_stored() -> None:
    cache = MemoryCache(max_bytes=1024, clock=ManualClock())
    cache.put([("small", entry())])
    cache.put([("huge", entry(b"z" * 2048))])
    assert "huge" not in cache
    assert "small" in cache
    assert cache.too_large == 1


def test_ttl_expiry_follows_the_injected_clock() -> None:
    clock = ManualClock(1000.0)
    cache = MemoryCache(clock=clock)
    cache.put([("k", entry(expires_at=1010.0))])
    clock.now = 1009.999
    assert cache.get_now("k") is not None
    clock.now = 1010.0
    assert cache.get_now("k") is None
    assert "k" not in cache
    assert cache.bytes == 0
    assert cache.expirations == 1
    assert cache.snapshot()["hits"] == 1
    assert cache.snapshot()["misses"] == 1


async def test_get_is_the_async_face_of_get_now() -> None:
    cache = MemoryCache(clock=ManualClock())
    stored = entry(b"body")
    cache.put([("k", stored)])
    assert await cache.get("k") == stored
    assert await cache.get("other") is None


def keys_of(route: str, path: str, n: int = 2) -> list[str]:
    return [cache_key(route, key_path(path), f"{i:032x}") for i in range(n)]


@pytest.mark.parametrize(
    ("scope", "left"),
    [
        (PurgeScope.of(), set()),
        (PurgeScope.of(route="orders"), {"users:/users/1", "users:/orders/1"}),
        (
            PurgeScope.of(path="/orders/1"),
            {"orders:/orders/10", "orders:/orders/2", "users:/users/1"},
        ),
        (
            PurgeScope.of(route="orders", path="/orders/1"),
            {"orders:/orders/10", "orders:/orders/2", "users:/users/1", "users:/orders/1"},
        ),
        (PurgeScope.of(path_prefix="/orders/1"), {"orders:/orders/2", "users:/users/1"}),
    ],
)
async def test_purge_scopes(scope: PurgeScope, left: set[str]) -> None:
    cache = MemoryCache(clock=ManualClock())
    stored = {
        "orders:/orders/1": keys_of("orders", "/orders/1"),
        "orders:/orders/10": keys_of("orders", "/orders/10"),
        "orders:/orders/2": keys_of("orders", "/orders/2"),
        "users:/users/1": keys_of("users", "/users/1"),
        "users:/orders/1": keys_of("users", "/orders/1"),
    }
    for keys in stored.values():
        cache.put([(k, entry()) for k in keys])
    removed = await cache.purge(scope)
    assert removed == 2 * (len(stored) - len(left))
    remaining = {name for name, keys in stored.items() if all(k in cache for k in keys)}
    assert remaining == left
    assert cache.bytes == sum(entry().size(k) for n in left for k in stored[n])


def test_purge_events_apply_and_other_events_are_ignored() -> None:
    cache = MemoryCache(clock=ManualClock())
    cache.put([(k, entry()) for k in keys_of("orders", "/a") + keys_of("users", "/b")])
    now = datetime.now(UTC)
    cache.on_events([IdentityEvent(1, EventKind.KEY, "r|orders", now)])
    assert len(cache) == 4
    subject = PurgeScope.of(route="orders").subject()
    cache.on_events([IdentityEvent(2, EventKind.CACHE_PURGE, subject, now)])
    assert len(cache) == 2
    cache.on_events([IdentityEvent(3, EventKind.CACHE_PURGE, PurgeScope().subject(), now)])
    assert len(cache) == 0
    assert cache.bytes == 0


def test_caps_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryCache(max_entries=0)
    with pytest.raises(ValueError):
        MemoryCache(max_bytes=0)
