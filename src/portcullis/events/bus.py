"""The internal event bus: alerts, anomalies and other control-plane happenings, persisted
first and then fanned out to subscribers.

Every event is written to the `events` table before anyone hears of it, so the
table is the complete, ordered history (ids ascend): the admin API lists it, and
later consumers (webhooks) replay it from the last id they handled. The fan-out is
a best-effort notification on top of that:

- `InProcessBus` hands each event to the subscriptions of this process;
- `RedisBus` does the same and also publishes it on Redis pub/sub (one channel per
  kind, `<prefix><kind>`), so the subscriptions of every process that shares the
  Redis server get it. Pub/sub is at-most-once: a process that is disconnected from
  Redis misses what was published meanwhile (it can read the table from its last
  id), and a publish that fails is logged and counted, never raised: the event is
  already stored.

A `Subscription` is a bounded queue per subscriber (an async iterator of `Event`);
a subscriber that does not keep up loses the newest events (counted in `dropped`)
rather than slowing publishers down.

Events written inside another transaction (so they commit with the change they
describe) use `record_event(conn, ...)`: every bus on that engine in the process
publishes them once the transaction commits (`store.engine.on_commit`). A bus hears of
an event once, however many ways it arrives (ids it fanned out lately are remembered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.events import outbox
from portcullis.events.catalogue import EventType, check_data, event_type
from portcullis.redis_client import REDIS_FAILURES, SharedRedis
from portcullis.store.analytics_tables import EventRow
from portcullis.store.engine import note_for_commit, on_commit, write_transaction

if TYPE_CHECKING:
    from portcullis.settings import Settings

log = structlog.get_logger(__name__)

DEFAULT_QUEUE_SIZE = 1000
DEFAULT_REDIS_PREFIX = "pc:events:"
# Reconnection backoff of the Redis listener (seconds): doubles up to the maximum.
_RECONNECT_MIN, _RECONNECT_MAX = 0.5, 5.0
_REDIS_TIMEOUT = 2.0
# PostgreSQL advisory lock key that orders event ids by commit (`record_events`).
EVENT_ORDER_LOCK = 0x70637665  # "pcve"


@dataclass(frozen=True, slots=True)
class Event:
    """One stored event; `id` orders events (ascending) across every publisher."""

    id: int
    occurred_at: datetime
    kind: str
    subject: str
    data: dict[str, Any]
    # None: a gateway-wide event (operators see it); else the organization it belongs to.
    organization_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "occurred_at": self.occurred_at.isoformat().replace("+00:00", "Z"),
            "kind": self.kind,
            "subject": self.subject,
            "data": self.data,
            "organization_id": self.organization_id,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Event:
        """The inverse of `as_json` (`ValueError`/`KeyError`/`TypeError` on other input)."""
        occurred = datetime.fromisoformat(str(value["occurred_at"]).replace("Z", "+00:00"))
        data = value["data"]
        if not isinstance(data, dict):
            raise TypeError("event data must be an object")
        return cls(
            id=int(value["id"]),
            occurred_at=occurred.astimezone(UTC),
            kind=str(value["kind"]),
            subject=str(value["subject"]),
            data=data,
            organization_id=value.get("organization_id"),
        )


def rfc3339(moment: datetime) -> str:
    """A moment as event data shows it: RFC 3339 in UTC with a `Z`."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _dump(data: Mapping[str, Any]) -> str:
    return json.dumps(dict(data), separators=(",", ":"), ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to record (see `record_event` for the fields)."""

    kind: EventType | str
    subject: str
    data: Mapping[str, Any] | None = None
    organization_id: str | None = None
    notify: Collection[str] = ()


async def record_event(
    conn: AsyncConnection,
    kind: EventType | str,
    subject: str,
    data: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
    organization_id: str | None = None,
    notify: Collection[str] = (),
) -> Event:
    """Store one event in the caller's transaction (it commits or rolls back with it),
    with the webhook messages it causes (the transactional outbox).

    `kind` must be catalogued (`ValueError` otherwise); `data` must be JSON-ready.
    `notify`: webhook endpoint ids that get this event whatever their filters say (an
    alert rule's `notify` option; see `events.outbox.enqueue`).
    Nothing is fanned out: after the commit, hand the event to `EventBus.deliver`.
    """
    new = NewEvent(kind, subject, data, organization_id, notify)
    (event,) = await record_events(conn, [new], now=now)
    return event


async def record_events(
    conn: AsyncConnection, new: Sequence[NewEvent], *, now: datetime | None = None
) -> list[Event]:
    """`record_event` for several events: one insert and one read of the webhook endpoints
    (a config apply that creates thousands of consumers records as many events)."""
    if not new:
        return []
    occurred = now if now is not None else datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for item in new:
        kind_type = event_type(item.kind)
        payload = dict(item.data or {})
        check_data(kind_type, payload)
        rows.append(
            {
                "occurred_at": occurred,
                "kind": kind_type.value,
                "subject": item.subject,
                "data": _dump(payload),
                "organization_id": item.organization_id,
            }
        )
    if conn.dialect.name == "postgresql":
        # Ids must become visible in id order, or a live stream tailing `id > position`
        # would pass an id whose transaction commits later (decision 017). The lock
        # makes event-recording transactions take ids one after another, each
        # holding it until it commits; SQLite's single writer already does that.
        await conn.execute(select(func.pg_advisory_xact_lock(EVENT_ORDER_LOCK)))
    # Batched multi-row INSERT … RETURNING (`sort_by_parameter_order` would make SQLite
    # insert row by row). Ids ascend in row order across the batches (SQLite's rowids,
    # PostgreSQL's per-row nextval), so the sorted ids pair up with the rows.
    result = await conn.execute(insert(EventRow).returning(EventRow.id), rows)
    ids = sorted(int(event_id) for (event_id,) in result.all())
    events = [
        Event(i, occurred, r["kind"], r["subject"], json.loads(r["data"]), r["organization_id"])
        for i, r in zip(ids, rows, strict=True)
    ]
    await outbox.enqueue_many(
        conn,
        [
            outbox.Outgoing(
                e.id, e.kind, e.subject, e.data, occurred, e.organization_id, item.notify
            )
            for e, item in zip(events, new, strict=True)
        ],
    )
    for event in events:
        _collected(conn, event)
    # Published by the bus of this process once the transaction commits (`on_commit`).
    note_for_commit(conn, events)
    return events


_COLLECTORS = "portcullis.events.collectors"


@contextlib.contextmanager
def collecting(conn: AsyncConnection) -> Iterator[list[Event]]:
    """Every event `record_event` stores through `conn` while the block runs, in id order.

    A job that records events in one transaction hands the list to `EventBus.deliver`
    after the commit, so the events recorded by what it calls (the key store's own
    `key.suspended` when the anomaly policy suspends a key) are published too, not
    only those it recorded itself.
    """
    recorded: list[Event] = []
    collectors: list[list[Event]] = conn.info.setdefault(_COLLECTORS, [])
    collectors.append(recorded)
    try:
        yield recorded
    finally:
        # By identity: a nested block's list may be equal to this one.
        collectors[:] = [c for c in collectors if c is not recorded]


def _collected(conn: AsyncConnection, event: Event) -> None:
    for collector in conn.info.get(_COLLECTORS, ()):
        collector.append(event)


async def read_events(
    engine: AsyncEngine,
    *,
    after: int = 0,
    kinds: Sequence[str] = (),
    subject: str | None = None,
    limit: int = 100,
    organization_id: str | None = None,
) -> list[Event]:
    """Stored events with an id above `after`, oldest first (replay from a position).

    `organization_id`: only that organization's events (gateway-wide events, which
    have none, are left out); None: every event.
    """
    query = select(EventRow).where(EventRow.id > after).order_by(EventRow.id).limit(limit)
    if organization_id is not None:
        query = query.where(EventRow.organization_id == organization_id)
    if kinds:
        query = query.where(EventRow.kind.in_(list(kinds)))
    if subject is not None:
        query = query.where(EventRow.subject == subject)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        Event(r.id, r.occurred_at, r.kind, r.subject, json.loads(r.data), r.organization_id)
        for r in rows
    ]


class SubscriptionClosed(Exception):
    """`Subscription.get` on a closed subscription with nothing left to read."""


class Subscription:
    """One subscriber's bounded queue of events (see the module docstring).

    Iterate it (`async for event in subscription`) or call `get`; `close` ends the
    iteration once the queued events are read and detaches it from the bus.
    """

    def __init__(
        self,
        kinds: Iterable[str] | None,
        maxsize: int,
        detach: Callable[[Subscription], None],
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.kinds: frozenset[str] | None = (
            None if kinds is None else frozenset(event_type(k).value for k in kinds)
        )
        self.maxsize = maxsize
        self.dropped = 0
        self._items: deque[Event] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._detach = detach

    def wants(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds

    def offer(self, event: Event) -> bool:
        """Queue an event without waiting; False (and counted) when full or closed."""
        if self._closed:
            return False
        if len(self._items) >= self.maxsize:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("events.subscriber_behind", dropped=self.dropped)
            return False
        self._items.append(event)
        self._wakeup.set()
        return True

    def pending(self) -> int:
        return len(self._items)

    async def get(self) -> Event:
        """The next event, waiting for one; `SubscriptionClosed` once closed and drained."""
        while not self._items:
            if self._closed:
                raise SubscriptionClosed
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wakeup.set()
            self._detach(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except SubscriptionClosed:
            raise StopAsyncIteration from None


class EventBus(Protocol):
    """Persist-then-fan-out event bus (see the module docstring)."""

    async def start(self) -> None:
        """Connect what the bus needs (the Redis listener); publishing works before."""

    async def close(self) -> None:
        """Stop listening and release connections; subscriptions are closed."""

    async def publish(
        self, kind: EventType | str, subject: str, data: Mapping[str, Any] | None = None
    ) -> Event:
        """Store the event in its own transaction, then fan it out; returns it with its id."""

    async def deliver(self, events: Sequence[Event]) -> None:
        """Fan out events already committed with `record_event` (in id order)."""

    def subscribe(
        self, kinds: Iterable[str] | None = None, *, maxsize: int = DEFAULT_QUEUE_SIZE
    ) -> Subscription:
        """A new subscription to the given kinds (None: every kind)."""


# Ids of the events a bus fanned out lately: one event reaches a bus more than once
# (its commit, an explicit `deliver`, another bus of the same process over Redis), and
# its subscribers hear of it once.
_RECENT_IDS = 4096


class _LocalFanout:
    """Subscriptions of this process and the persisting `publish` shared by both buses.

    A bus publishes every event recorded through its engine once the recording
    transaction commits, whatever wrote it (`store.engine.on_commit`): a REST or
    GraphQL change reaches live streams and webhooks at once, not at their next poll.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._subscriptions: list[Subscription] = []
        self._recent: deque[int] = deque()
        self._recent_ids: set[int] = set()
        self._stop_listening = on_commit(engine, self._committed)

    async def _committed(self, notes: list[object]) -> None:
        events = [e for note in notes if isinstance(note, list) for e in note]
        await self.deliver([e for e in events if isinstance(e, Event)])

    def _first_time(self, event: Event) -> bool:
        """Whether this bus has not fanned `event` out yet (remembering it if so)."""
        if event.id in self._recent_ids:
            return False
        self._recent_ids.add(event.id)
        self._recent.append(event.id)
        if len(self._recent) > _RECENT_IDS:
            self._recent_ids.discard(self._recent.popleft())
        return True

    def subscribe(
        self, kinds: Iterable[str] | None = None, *, maxsize: int = DEFAULT_QUEUE_SIZE
    ) -> Subscription:
        subscription = Subscription(kinds, maxsize, self._detach)
        self._subscriptions.append(subscription)
        return subscription

    def _detach(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)

    def _fan_out(self, event: Event) -> None:
        for subscription in tuple(self._subscriptions):
            if subscription.wants(event.kind):
                subscription.offer(event)

    async def publish(
        self, kind: EventType | str, subject: str, data: Mapping[str, Any] | None = None
    ) -> Event:
        async with write_transaction(self.engine) as conn:
            event = await record_event(conn, kind, subject, data)
        await self.deliver([event])
        return event

    async def deliver(self, events: Sequence[Event]) -> None:
        for event in events:
            if self._first_time(event):
                self._fan_out(event)

    def _close_subscriptions(self) -> None:
        self._stop_listening()
        for subscription in tuple(self._subscriptions):
            subscription.close()


class InProcessBus(_LocalFanout):
    """Fan-out to the subscriptions of this process only (the single-node default)."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._close_subscriptions()


class RedisBus(_LocalFanout):
    """Fan-out to this process's subscriptions and, over Redis pub/sub, to every other
    process's (see the module docstring).

    Local subscriptions get an event directly when it is published here (never
    depending on Redis); messages this instance published come back from Redis and
    are recognised by their `origin` and skipped.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        redis: SharedRedis | str,
        *,
        prefix: str = DEFAULT_REDIS_PREFIX,
    ) -> None:
        super().__init__(engine)
        # The process's shared Redis (publishes go through its outage circuit); given a
        # URL, the bus has a Redis of its own and closes it with itself.
        self._owns_redis = isinstance(redis, str)
        if isinstance(redis, str):
            redis = SharedRedis.connect(redis, timeout=_REDIS_TIMEOUT)
        self.redis = redis
        self.prefix = prefix
        self.origin = uuid.uuid4().hex
        self.publish_failures = 0
        self.received = 0
        self._publisher: Redis = redis.client
        # The listener holds its connection and blocks on reads: a client of its own.
        self._listener: Redis = redis.dedicated()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    def channel(self, kind: str) -> str:
        return f"{self.prefix}{kind}"

    async def deliver(self, events: Sequence[Event]) -> None:
        for event in events:
            if not self._first_time(event):
                continue
            self._fan_out(event)
            message = json.dumps({**event.as_json(), "origin": self.origin}, separators=(",", ":"))
            circuit = self.redis.circuit
            if circuit.blocked():
                # Redis is known to be down (the circuit logged it once): skip, don't wait.
                self.publish_failures += 1
                continue
            try:
                await self._publisher.publish(self.channel(event.kind), message)
            except REDIS_FAILURES as exc:
                circuit.failed(exc)
                self.publish_failures += 1
                log.warning("events.redis_publish_failed", kind=event.kind, error=repr(exc))
            except BaseException:
                circuit.abandoned()
                raise
            else:
                circuit.succeeded()

    async def start(self) -> None:
        """Subscribe, waiting (up to a few seconds) until Redis confirms it, so events
        published anywhere after `start` returns reach this process; if Redis is
        unreachable the listener keeps retrying in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="portcullis-event-bus")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=2 * _REDIS_TIMEOUT)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._close_subscriptions()
        await self._listener.aclose()
        await self._listener.connection_pool.disconnect()
        if self._owns_redis:
            await self.redis.aclose()

    async def _listen(self) -> None:
        delay = _RECONNECT_MIN
        while True:
            pubsub = self._listener.pubsub()
            try:
                await pubsub.psubscribe(self.prefix + "*")
                # Wait for the confirmation: from then on, publishes reach this listener.
                while True:
                    message = await pubsub.get_message(timeout=_REDIS_TIMEOUT)
                    if message is not None and message.get("type") == "psubscribe":
                        break
                self._subscribed.set()
                delay = _RECONNECT_MIN
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "pmessage":
                        self._receive(message.get("data"))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("events.redis_listener_failed", error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _receive(self, raw: Any) -> None:
        try:
            value = json.loads(raw)
            if value.get("origin") == self.origin:
                return
            event = Event.from_json(value)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("events.bad_message", error=repr(exc))
            return
        self.received += 1
        if self._first_time(event):
            self._fan_out(event)


def create_event_bus(
    engine: AsyncEngine, settings: Settings, redis: SharedRedis | None = None
) -> InProcessBus | RedisBus:
    """The bus for this process: over Redis when `redis_url` is set, else in-process.

    `redis` is the process's shared Redis (used, not closed by the bus).
    """
    if settings.redis_url:
        return RedisBus(engine, redis if redis is not None else settings.redis_url)
    return InProcessBus(engine)
