"""In-process response cache: per worker, LRU, bounded by entries and by bytes, TTL.

An `OrderedDict` in recency order: a hit moves the entry to the end, a store
evicts from the front until both caps hold. Expired entries are dropped when
read, and evicted like any other when space is needed. An entry larger than the
byte cap on its own is not stored. Every operation is synchronous and O(1)
except purges by route or path, which scan the keys (rare, admin-driven).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from portcullis.cache.entry import CacheEntry
from portcullis.cache.purge import PurgeScope
from portcullis.store.invalidations import Invalidation, InvalidationKind

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class MemoryCache:
    """This process's cache (see the module doc)."""

    name = "memory"

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: OrderedDict[str, tuple[CacheEntry, int]] = OrderedDict()
        self.bytes = 0
        # Metrics.
        self.hits = 0
        self.misses = 0
        self.stores = 0
        self.evictions = 0
        self.expirations = 0
        self.too_large = 0
        self.purged = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get_now(self, key: str) -> CacheEntry | None:
        item = self._entries.get(key)
        if item is None:
            self.misses += 1
            return None
        entry, size = item
        if entry.expires_at <= self.clock():
            del self._entries[key]
            self.bytes -= size
            self.expirations += 1
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    async def get(self, key: str) -> CacheEntry | None:
        return self.get_now(key)

    def put(self, entries: Sequence[tuple[str, CacheEntry]]) -> None:
        for key, entry in entries:
            self._put(key, entry)

    def _put(self, key: str, entry: CacheEntry) -> None:
        size = entry.size(key)
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        if size > self.max_bytes:
            self.too_large += 1
            return
        entries = self._entries
        while entries and (len(entries) >= self.max_entries or self.bytes + size > self.max_bytes):
            _, (_, evicted) = entries.popitem(last=False)
            self.bytes -= evicted
            self.evictions += 1
        entries[key] = (entry, size)
        self.bytes += size
        self.stores += 1

    def purge_now(self, scope: PurgeScope) -> int:
        if scope.everything:
            removed = len(self._entries)
            self._entries.clear()
            self.bytes = 0
        else:
            doomed = [k for k in self._entries if scope.matches(k)]
            for key in doomed:
                self.bytes -= self._entries.pop(key)[1]
            removed = len(doomed)
        self.purged += removed
        return removed

    async def purge(self, scope: PurgeScope) -> int:
        return self.purge_now(scope)

    def on_events(self, events: list[Invalidation]) -> None:
        for event in events:
            if event.kind is InvalidationKind.CACHE_PURGE:
                self.purge_now(PurgeScope.from_subject(event.subject))

    async def aclose(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def snapshot(self) -> dict[str, float]:
        return {
            "entries": len(self._entries),
            "bytes": self.bytes,
            "hits": self.hits,
            "misses": self.misses,
            "stores": self.stores,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "too_large": self.too_large,
            "purged": self.purged,
        }


_default: MemoryCache | None = None


def default_memory_cache() -> MemoryCache:
    """The process-wide cache used when a worker provides none (created on first use)."""
    global _default
    if _default is None:
        _default = MemoryCache()
    return _default
