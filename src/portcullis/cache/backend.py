"""The protocol every response-cache backend implements.

One backend per data-plane worker, created at startup and shared by every
response-cache plugin instance (keys carry the route, so instances never clash).
`get` is awaited on the request path and never raises: a backend that cannot
answer (Redis down) reports a miss. `put` is called from the synchronous
`response_body` phase, so it must not block: the memory backend stores at once,
the Redis backend writes in the background. `purge` runs in the control plane
(shared entries) and `on_events` in every worker (its own entries).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from portcullis.cache.entry import CacheEntry
from portcullis.cache.purge import PurgeScope
from portcullis.store.invalidations import Invalidation


class CacheUnavailable(Exception):
    """A purge could not reach the shared cache (nothing, or only part, was removed)."""


class CacheBackend(Protocol):
    name: str

    async def get(self, key: str) -> CacheEntry | None:
        """The live entry under `key`, or None (absent, expired, or backend unreachable)."""
        ...

    def put(self, entries: Sequence[tuple[str, CacheEntry]]) -> None:
        """Store entries until their `expires_at`; never blocks, never raises."""
        ...

    async def purge(self, scope: PurgeScope) -> int:
        """Remove the entries in scope; how many. Raises CacheUnavailable on failure."""
        ...

    def on_events(self, events: list[Invalidation]) -> None:
        """Apply `cache-purge` events from the store's event feed to this worker's entries."""
        ...

    async def aclose(self) -> None: ...

    def snapshot(self) -> dict[str, float]:
        """Counters for metrics (hits, misses, stores, errors, sizes)."""
        ...
