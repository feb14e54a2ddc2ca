"""The data plane's cache of basic/hmac/mtls credentials (identity/credential_store.py).

The same shape as the API-key cache (identity/credential_cache.py), keyed by
`(kind, identifier)` instead of a key hash:

- a positive entry returns the `CredentialRecord` without I/O;
- a miss asks the store once however many requests wait for it (single flight) and
  caches the answer: the record, or "none" in a bounded negative cache with a TTL;
- a store outage is `Rejection.UNAVAILABLE` and never cached;
- CREDENTIAL invalidations (subject `<kind>:<identifier>`) evict the entry in every
  worker at the feed's poll interval, so a rotation or deletion is enforced within
  the same window as a key revocation.

basic-auth passwords are argon2id hashes, deliberately slow. `verify_password`
keeps a verified-credential cache keyed by a keyed hash (HMAC-SHA256 with the
server pepper) of the credential id and the presented password: the first request
pays one argon2 verify, later ones one HMAC (~1.5 µs). Entries live `verified_ttl`
seconds and go with their credential's invalidation. Cold verifies run in a thread
(argon2 releases the GIL) so the event loop keeps serving, at most
`verify_concurrency` at a time per worker; when `verify_queue` requests are already
waiting for one, the next is refused as busy (503) rather than queued: a flood of
wrong passwords costs bounded CPU and never starves requests with cached or other
credentials. Failed verifies are not cached (a guess differs each time).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

import structlog
from argon2.exceptions import InvalidHashError, VerificationError

from portcullis.identity.consumers import ConsumerInfo
from portcullis.identity.credential_cache import Rejection
from portcullis.identity.credential_store import (
    PASSWORD_HASHER,
    CredentialKind,
    CredentialRecord,
    event_subject,
)
from portcullis.identity.events import EventKind, IdentityEvent
from portcullis.identity.secrets import ServerSecret

log = structlog.get_logger(__name__)

MAX_IDENTIFIER_LENGTH = 512
_OUTAGE_LOG_INTERVAL = 5.0


class CredentialFinder(Protocol):
    """The store side (implemented by `CredentialRepository`)."""

    async def find(self, kind: CredentialKind, identifier: str) -> tuple[CredentialRecord, ...]:
        """The credentials of `kind` with this identifier (one per organization at most)."""
        ...


class VerifyBusy(Exception):
    """Too many password verifications are waiting already; retry later."""


def _verify(encoded: bytes, password: str) -> bool:
    try:
        return PASSWORD_HASHER.verify(encoded.decode("ascii"), password)
    except (VerificationError, InvalidHashError, UnicodeDecodeError):
        return False


class ConsumerCredentialCache:
    """basic/hmac/mtls credentials of one worker (see the module doc)."""

    def __init__(
        self,
        finder: CredentialFinder,
        secret: ServerSecret,
        *,
        capacity: int = 100_000,
        negative_ttl: float = 30.0,
        verified_ttl: float = 300.0,
        verify_concurrency: int = 1,
        verify_queue: int = 32,
        clock: Callable[[], float] = time.monotonic,
        verify: Callable[[bytes, str], bool] = _verify,
    ) -> None:
        self._finder = finder
        self._mac = secret.hash_credential
        self.capacity = capacity
        self.negative_ttl = negative_ttl
        self.verified_ttl = verified_ttl
        self._clock = clock
        self._verify = verify
        # subject -> the records with that identifier (one per organization; the route
        # picks its own in `accepted`).
        self._positive: OrderedDict[str, tuple[CredentialRecord, ...]] = OrderedDict()
        self._negative: OrderedDict[str, float] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[tuple[CredentialRecord, ...]]] = {}
        self._stale: set[str] = set()
        # mac -> (subject, expiry), oldest first; subject -> macs (for invalidation).
        self._verified: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._verified_by_subject: dict[str, set[str]] = {}
        self._verifying: dict[str, asyncio.Task[bool]] = {}
        self._verify_slots = asyncio.Semaphore(verify_concurrency)
        self._verify_queue = verify_queue
        self._waiting = 0
        self._last_outage_log = -_OUTAGE_LOG_INTERVAL
        self.lookups = 0
        self.verifies = 0

    # -- records ------------------------------------------------------------------------

    async def accepted(
        self,
        kind: CredentialKind,
        identifier: str,
        consumer_of: Callable[[str], ConsumerInfo | None],
    ) -> tuple[CredentialRecord, ConsumerInfo] | Rejection:
        """The credential with this identifier whose consumer the route accepts
        (`consumer_of`: its view's lookup), and that consumer; UNKNOWN when none is."""
        found = await self.resolve(kind, identifier)
        if isinstance(found, Rejection):
            return found
        for record in found:
            consumer = consumer_of(record.consumer)
            if consumer is not None:
                return record, consumer
        return Rejection.UNKNOWN

    async def resolve(
        self, kind: CredentialKind, identifier: str
    ) -> tuple[CredentialRecord, ...] | Rejection:
        """Every credential of `kind` with this identifier (of any organization)."""
        if not identifier or len(identifier) > MAX_IDENTIFIER_LENGTH:
            return Rejection.MALFORMED
        subject = event_subject(kind, identifier)
        records = self._positive.get(subject)
        if records is not None:
            self._positive.move_to_end(subject)
            return records
        expiry = self._negative.get(subject)
        if expiry is not None:
            if expiry > self._clock():
                return Rejection.UNKNOWN
            del self._negative[subject]
        task = self._inflight.get(subject)
        if task is None:
            task = asyncio.ensure_future(self._load(kind, identifier, subject))
            task.add_done_callback(_seen)
            self._inflight[subject] = task
        try:
            found = await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception:
            return Rejection.UNAVAILABLE
        return found if found else Rejection.UNKNOWN

    async def _load(
        self, kind: CredentialKind, identifier: str, subject: str
    ) -> tuple[CredentialRecord, ...]:
        self.lookups += 1
        try:
            found = await self._finder.find(kind, identifier)
        except Exception as exc:
            now = self._clock()
            if now - self._last_outage_log >= _OUTAGE_LOG_INTERVAL:
                self._last_outage_log = now
                log.warning("credential_lookup.failed", kind=type(exc).__name__)
            raise
        finally:
            del self._inflight[subject]
            stale = subject in self._stale
            self._stale.discard(subject)
        if not stale:
            if found:
                self._positive[subject] = found
                while len(self._positive) > self.capacity:
                    self._positive.popitem(last=False)
            else:
                self._negative.pop(subject, None)
                self._negative[subject] = self._clock() + self.negative_ttl
                while len(self._negative) > self.capacity:
                    self._negative.popitem(last=False)
        return found

    # -- basic-auth passwords -----------------------------------------------------------

    async def verify_password(self, record: CredentialRecord, password: str) -> bool:
        """True when `password` is the basic credential's; `VerifyBusy` when too many
        cold verifies are waiting."""
        mac = self._mac(f"basic\x00{record.id}\x00{password}")
        hit = self._verified.get(mac)
        if hit is not None:
            if hit[1] > self._clock():
                return True
            self._forget_verified(mac)
        task = self._verifying.get(mac)
        if task is None:
            if self._waiting >= self._verify_queue:
                raise VerifyBusy
            task = asyncio.ensure_future(self._cold_verify(record, password, mac))
            task.add_done_callback(_seen)
            self._verifying[mac] = task
        return await asyncio.shield(task)

    async def _cold_verify(self, record: CredentialRecord, password: str, mac: str) -> bool:
        self._waiting += 1
        queued = True
        try:
            async with self._verify_slots:
                self._waiting -= 1
                queued = False
                self.verifies += 1
                ok = await asyncio.to_thread(self._verify, record.secret, password)
        finally:
            if queued:
                self._waiting -= 1
            self._verifying.pop(mac, None)
        subject = event_subject(record.kind, record.identifier)
        # Still the cached record? A rotation while verifying must not cache the old password.
        if ok and any(r is record for r in self._positive.get(subject, ())):
            self._verified[mac] = (subject, self._clock() + self.verified_ttl)
            self._verified_by_subject.setdefault(subject, set()).add(mac)
            while len(self._verified) > self.capacity:
                self._forget_verified(next(iter(self._verified)))
        return ok

    def _forget_verified(self, mac: str) -> None:
        entry = self._verified.pop(mac, None)
        if entry is not None:
            macs = self._verified_by_subject.get(entry[0])
            if macs is not None:
                macs.discard(mac)
                if not macs:
                    del self._verified_by_subject[entry[0]]

    # -- invalidation -------------------------------------------------------------------

    def on_events(self, events: Iterable[IdentityEvent]) -> None:
        for event in events:
            if event.kind is EventKind.CREDENTIAL:
                self.invalidate(event.subject)

    def invalidate(self, subject: str) -> None:
        self._positive.pop(subject, None)
        self._negative.pop(subject, None)
        if subject in self._inflight:
            self._stale.add(subject)
        for mac in list(self._verified_by_subject.get(subject, ())):
            self._forget_verified(mac)

    def __len__(self) -> int:
        return len(self._positive)

    @property
    def verified_size(self) -> int:
        return len(self._verified)


def _seen(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()
