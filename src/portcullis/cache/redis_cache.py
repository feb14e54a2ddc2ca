"""Shared response cache in Redis: every worker and node that uses the Redis sees it.

Each entry is one Redis string, `<prefix><key>`, holding the entry's metadata and
body (`CacheEntry.encode`), written with `SET ... PX <ttl>` so Redis expires it.
Reads are one `GET` (two for a response with a `Vary` beyond the key: the marker,
then the variant) under a deadline.

Redis trouble never fails a request: a read that errors or times out is a miss,
and it opens a circuit: for `retry_interval` seconds reads skip Redis entirely
(a miss at once, no timeout paid per request) and writes are dropped; then one
read probes again. Writes happen in background tasks (the `response_body` phase is
synchronous), at most `max_pending` at a time; beyond that a write is dropped and
counted. Errors are logged once per outage and counted in `snapshot()`.

Purging deletes by `SCAN MATCH <pattern>` + `UNLINK` (non-blocking on the server)
in batches. A generation counter in the keys would make purge-all O(1), but every
lookup would then have to learn the current generation (one more round trip, or a
locally cached value that is stale until an event arrives), purges by route or
path would need one counter per route or path, and purged entries would keep
occupying Redis memory until their TTL. Purges are rare admin actions; lookups
are the hot path. So: SCAN.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from portcullis.cache.backend import CacheUnavailable
from portcullis.cache.entry import CacheEntry
from portcullis.cache.purge import PurgeScope
from portcullis.redis_client import REDIS_FAILURES, RedisUser, SharedRedis
from portcullis.store.invalidations import Invalidation

DEFAULT_PREFIX = "pc:cache:"
SCAN_COUNT = 1000
# A value that does not decode (ValueError) is treated like Redis trouble: a miss.
_FAILURES: tuple[type[BaseException], ...] = (*REDIS_FAILURES, ValueError)


class RedisCache(RedisUser):
    """Entries in Redis (see the module doc)."""

    name = "redis"

    def __init__(
        self,
        redis: SharedRedis,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 0.2,
        max_pending: int = 1000,
        purge_timeout: float = 30.0,
        owns_redis: bool = False,
    ) -> None:
        if timeout <= 0 or max_pending < 1:
            raise ValueError("timeout and max_pending must be positive")
        super().__init__(redis, timeout=timeout, owns_redis=owns_redis)
        self._client = redis.client
        # Reads and writes per request go over the process's pipelined connection
        # (redis_pipe.py); redis-py for purges (SCAN) and where the pipe can't go (TLS).
        self._pipe = redis.pipe
        self.prefix = prefix
        self.max_pending = max_pending
        self.purge_timeout = purge_timeout
        self._pending: set[asyncio.Task[None]] = set()
        # Metrics.
        self.hits = 0
        self.misses = 0
        self.stores = 0
        self.skipped = 0
        self.dropped_writes = 0
        self.purged = 0

    async def get(self, key: str) -> CacheEntry | None:
        circuit = self.circuit
        if circuit.blocked():
            self.skipped += 1
            self.misses += 1
            return None
        try:
            if self._pipe is not None:
                data = await self._pipe.execute("GET", self.prefix + key, timeout=self.timeout)
            else:
                async with asyncio.timeout(self.timeout):
                    data = await self._client.get(self.prefix + key)
            if isinstance(data, str):  # only with a decode_responses client
                data = data.encode("latin-1")
            entry = None if data is None else CacheEntry.decode(data)
        except _FAILURES as exc:
            circuit.failed(exc)
            self.misses += 1
            return None
        except BaseException:
            circuit.abandoned()
            raise
        circuit.succeeded()
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, entries: Sequence[tuple[str, CacheEntry]]) -> None:
        if self.circuit.is_open or not entries:
            self.dropped_writes += len(entries)
            return
        if len(self._pending) >= self.max_pending:
            self.dropped_writes += len(entries)
            return
        now = time.time()
        items = []
        for key, entry in entries:
            ttl_ms = int((entry.expires_at - now) * 1000)
            if ttl_ms > 0:
                items.append((self.prefix + key, entry.encode(), ttl_ms))
        if not items:
            return
        task = asyncio.get_running_loop().create_task(self._write(items))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, items: list[tuple[str, bytes, int]]) -> None:
        try:
            if self._pipe is not None:
                one, timeout = self._pipe, self.timeout
                await asyncio.gather(
                    *(one.execute("SET", k, v, "PX", ttl, timeout=timeout) for k, v, ttl in items)
                )
                self.stores += len(items)
                return
            async with asyncio.timeout(self.timeout):
                if len(items) == 1:
                    key, value, ttl_ms = items[0]
                    await self._client.set(key, value, px=ttl_ms)
                else:
                    pipe = self._client.pipeline(transaction=False)
                    for key, value, ttl_ms in items:
                        pipe.set(key, value, px=ttl_ms)
                    await pipe.execute()
            self.stores += len(items)
        except _FAILURES as exc:
            self.dropped_writes += len(items)
            self.circuit.failed(exc)

    async def purge(self, scope: PurgeScope) -> int:
        pattern = scope.redis_pattern(self.prefix)
        removed = 0
        try:
            async with asyncio.timeout(self.purge_timeout):
                batch: list[bytes] = []
                async for key in self._client.scan_iter(match=pattern, count=SCAN_COUNT):
                    batch.append(key)
                    if len(batch) >= SCAN_COUNT:
                        removed += await self._client.unlink(*batch)
                        batch.clear()
                if batch:
                    removed += await self._client.unlink(*batch)
        except REDIS_FAILURES as exc:
            raise CacheUnavailable(f"{type(exc).__name__}: {exc}"[:200]) from exc
        self.purged += removed
        return removed

    def on_events(self, events: list[Invalidation]) -> None:
        """Nothing to do: shared entries are removed by the control plane's purge."""
        return

    async def flush(self) -> None:
        """Wait for the writes in flight (each is bounded by `timeout`)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=self.timeout * 2)

    async def aclose(self) -> None:
        await self.flush()
        await self._close_own_redis()

    def snapshot(self) -> dict[str, float]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "stores": self.stores,
            "backend_errors": self.circuit.errors,
            "skipped_reads": self.skipped,
            "dropped_writes": self.dropped_writes,
            "purged": self.purged,
            "outages": self.circuit.opened,
            "fallback_active": 1 if self.circuit.is_open else 0,
            "pending_writes": len(self._pending),
        }
