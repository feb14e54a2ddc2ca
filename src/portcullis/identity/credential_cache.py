"""The data plane's API-key cache: key lookups stay off the store on the hot path.

A presented key is hashed once (HMAC-SHA256 with the server pepper, the form the
store keeps) and looked up here first:

- a positive entry returns the `KeyRecord` without any await or I/O;
- a miss asks the store once per hash, however many requests are waiting for it
  (single flight), and caches what it got: the record, or "no such key" in a small
  negative cache with a TTL, so a flood of wrong keys costs one query per key and
  TTL rather than one per request;
- on a miss, a string that claims to be a Portcullis key (`pc_live_` ...) but
  fails the format's checksum is rejected without a lookup (and without caching:
  the check is cheaper than a cache entry); other strings (keys imported from a
  previous system) are looked up like any other.

Costs (measured, see benchmarks/key_validation_bench.py): the HMAC is ~1.3 µs and
dominates a hit; the OrderedDict LRU bookkeeping adds ~40 ns over a plain dict.

Both caches are bounded. Identity events (`EventKind.KEY`, subject = key hash)
evict an entry from both, so a revocation or suspension reaches every worker at
the event poller's interval. A store outage is reported as `UNAVAILABLE` and never
cached, so the key works again as soon as the store answers.

`record_use` notes that a key was used (a dict write); a background task writes
the stamps with one `touch_used` call per flush interval, and `aclose` writes what
is left, so last-used times cost the store one statement per interval, not one
per request.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import Enum
from typing import Protocol

import structlog
from sqlalchemy.exc import StatementError

from portcullis.identity.events import EventKind, IdentityEvent
from portcullis.identity.key_records import KeyRecord
from portcullis.identity.keys import parse_key
from portcullis.identity.secrets import ServerSecret
from portcullis.periodic import Periodic, Sleep

log = structlog.get_logger(__name__)

# Prefixes only Portcullis-format keys carry: such a string must pass the checksum.
_OWN_PREFIXES = ("pc_live_", "pc_stg_", "pc_dev_")
# Longer strings are not keys of any format we store; refusing them up front keeps
# junk out of the negative cache and bounds the hashing work per request.
MAX_CREDENTIAL_LENGTH = 512
# At most one "store unavailable" warning per this many seconds.
_OUTAGE_LOG_INTERVAL = 5.0


class KeyLookup(Protocol):
    """The store side of the cache (implemented by `identity.key_repository.KeyRepository`)."""

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        """The key whose stored hash is `key_hash`, in any status; None if there is none."""
        ...

    async def touch_used(self, stamps: dict[str, datetime]) -> None:
        """Set `last_used_at` for each key id (one batched statement, not one per key)."""
        ...


class Rejection(Enum):
    """Why `resolve` returned no record."""

    MALFORMED = "malformed"  # not a credential of any stored format; no lookup was made
    UNKNOWN = "unknown"  # no key has this hash
    UNAVAILABLE = "unavailable"  # the store could not be asked; retry later


def _describe(exc: BaseException) -> str:
    """An error message for the log without the statement's parameters (a key hash)."""
    if isinstance(exc, StatementError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {exc.orig}"
    return str(exc)


def _retrieve_exception(task: asyncio.Task[KeyRecord | None]) -> None:
    # Marks a failed lookup's exception as seen even when every waiter was cancelled.
    if not task.cancelled():
        task.exception()


class CredentialCache:
    """Resolves presented API keys to `KeyRecord`s for one worker (see the module doc)."""

    def __init__(
        self,
        lookup: KeyLookup,
        secret: ServerSecret,
        *,
        usage_flush_interval: float = 10.0,
        capacity: int = 200_000,
        negative_ttl: float = 30.0,
        negative_capacity: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._lookup = lookup
        self._hash = secret.hash_credential
        self.capacity = capacity
        self.negative_ttl = negative_ttl
        self.negative_capacity = (
            negative_capacity if negative_capacity is not None else max(1, capacity // 4)
        )
        self._clock = clock
        # hash -> record, oldest use first (a hit moves the entry to the end).
        self._positive: OrderedDict[str, KeyRecord] = OrderedDict()
        # hash -> monotonic expiry; insertion order is expiry order (the TTL is fixed).
        self._negative: OrderedDict[str, float] = OrderedDict()
        # hash -> the one store lookup in progress for it.
        self._inflight: dict[str, asyncio.Task[KeyRecord | None]] = {}
        # Hashes invalidated while their lookup was in flight: that result may be stale.
        self._stale_inflight: set[str] = set()
        # key id -> wall-clock seconds of the latest use not yet written.
        self._pending: dict[str, float] = {}
        self._flusher = Periodic(
            "key-usage-flush", self.flush, interval=usage_flush_interval, sleep=sleep
        )
        self._last_outage_log = -_OUTAGE_LOG_INTERVAL
        self.lookups = 0  # store lookups made (for tests and metrics)
        self.failures = 0  # store lookups that raised

    # -- hot path ---------------------------------------------------------------------

    async def resolve(self, presented: str) -> KeyRecord | Rejection:
        """The record for a presented key, or why there is none."""
        if not presented or len(presented) > MAX_CREDENTIAL_LENGTH:
            return Rejection.MALFORMED
        key_hash = self._hash(presented)
        positive = self._positive
        record = positive.get(key_hash)
        if record is not None:
            positive.move_to_end(key_hash)
            return record
        expiry = self._negative.get(key_hash)
        if expiry is not None:
            if expiry > self._clock():
                return Rejection.UNKNOWN
            del self._negative[key_hash]
        # The checksum is only checked on a miss: a cached hash is a stored key, so it
        # passed already, and the check (~1.8 µs) would cost more than the hash.
        if presented.startswith(_OWN_PREFIXES) and parse_key(presented) is None:
            return Rejection.MALFORMED
        return await self._miss(key_hash)

    def record_use(self, key_id: str) -> None:
        """Note that a key was used now; written in the next batch."""
        self._pending[key_id] = time.time()

    # -- misses -----------------------------------------------------------------------

    async def _miss(self, key_hash: str) -> KeyRecord | Rejection:
        task = self._inflight.get(key_hash)
        if task is None:
            task = asyncio.ensure_future(self._load(key_hash))
            task.add_done_callback(_retrieve_exception)
            self._inflight[key_hash] = task
        try:
            # Shielded: a waiter that is cancelled (client gone) must not cancel the
            # lookup the other waiters share.
            record = await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception:
            return Rejection.UNAVAILABLE
        return record if record is not None else Rejection.UNKNOWN

    async def _load(self, key_hash: str) -> KeyRecord | None:
        self.lookups += 1
        try:
            record = await self._lookup.find_by_hash(key_hash)
        except Exception as exc:
            self.failures += 1
            now = self._clock()
            if now - self._last_outage_log >= _OUTAGE_LOG_INTERVAL:
                self._last_outage_log = now
                log.warning(
                    "credential_cache.lookup_failed", error=_describe(exc), kind=type(exc).__name__
                )
            raise
        finally:
            del self._inflight[key_hash]
            stale = key_hash in self._stale_inflight
            self._stale_inflight.discard(key_hash)
        if not stale:
            if record is not None:
                self._store_positive(key_hash, record)
            else:
                self._store_negative(key_hash)
        return record

    def _store_positive(self, key_hash: str, record: KeyRecord) -> None:
        positive = self._positive
        positive[key_hash] = record
        positive.move_to_end(key_hash)
        while len(positive) > self.capacity:
            positive.popitem(last=False)

    def _store_negative(self, key_hash: str) -> None:
        negative = self._negative
        negative.pop(key_hash, None)
        negative[key_hash] = self._clock() + self.negative_ttl
        while len(negative) > self.negative_capacity:
            # Oldest first is soonest-to-expire first; O(1), so a flood of unknown keys
            # at capacity costs no more per key than below it.
            negative.popitem(last=False)

    # -- invalidation -------------------------------------------------------------------

    def on_events(self, events: Iterable[IdentityEvent]) -> None:
        """Evict keys named by KEY events (their subject is the key hash)."""
        for event in events:
            if event.kind is EventKind.KEY:
                self.invalidate(event.subject)

    def invalidate(self, key_hash: str) -> None:
        """Forget whatever is known about one key hash."""
        self._positive.pop(key_hash, None)
        self._negative.pop(key_hash, None)
        if key_hash in self._inflight:
            self._stale_inflight.add(key_hash)

    def __len__(self) -> int:
        return len(self._positive)

    @property
    def negative_size(self) -> int:
        return len(self._negative)

    # -- last-used stamps ---------------------------------------------------------------

    def start(self) -> None:
        """Start the background flush of last-used stamps (needs a running loop)."""
        self._flusher.start()

    async def flush(self) -> int:
        """Write pending stamps with one `touch_used` call; returns how many keys it named.

        On failure the stamps go back to the pending set (newer ones win), so the next
        flush retries them.
        """
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        stamps = {key_id: datetime.fromtimestamp(ts, UTC) for key_id, ts in batch.items()}
        try:
            await self._lookup.touch_used(stamps)
        except asyncio.CancelledError:
            self._requeue(batch)
            raise
        except Exception as exc:
            self._requeue(batch)
            log.warning("credential_cache.flush_failed", error=_describe(exc), keys=len(batch))
            return 0
        return len(batch)

    def _requeue(self, batch: dict[str, float]) -> None:
        pending = self._pending
        for key_id, ts in batch.items():
            if pending.get(key_id, 0.0) < ts:
                pending[key_id] = ts

    @property
    def pending_uses(self) -> int:
        return len(self._pending)

    async def aclose(self) -> None:
        """Stop the flusher and write the remaining stamps."""
        await self._flusher.stop()
        for task in list(self._inflight.values()):
            task.cancel()
        await self.flush()
