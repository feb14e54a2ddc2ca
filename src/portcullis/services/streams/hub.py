"""Live, resumable event streams: one tailer per control-plane process, many clients.

The hub tails the event log (`id > position`) — every `stream_poll_interval` seconds,
and at once when the process's event bus hears of an event (over Redis, from any
node) — and hands each new event to the open streams whose filter wants it. A stream
is an async iterator of `Event`s (and at most one leading `Reset`) for one client:

- **Resume**: a stream opened `after` a position first reads the log from there
  (catch-up, a page at a time), then attaches to the hub's live feed at exactly the
  position it has read to, with no await in between, so no event is missed or
  repeated. Positions are event ids, the same on every node sharing the store: a
  client that reconnects to another node resumes there.
- **Slow clients**: the live feed queues at most `queue_size` events per stream. A
  stream that falls behind is detached (counted in `lagged`) and catches up from the
  log again at its own pace — memory per client stays bounded and nothing is lost.
- **Lost history**: a position below the retention horizon (or beyond the newest
  event: another store, a restored backup) cannot be resumed; the stream starts with
  a `Reset` saying so, and where it goes on from. Never a silent gap.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from portcullis.events.bus import Event
from portcullis.periodic import Periodic
from portcullis.services.streams.filters import EventFilter, rooms_of
from portcullis.services.streams.log import EventLog

log = structlog.get_logger(__name__)

PAGE = 500


@dataclass(frozen=True, slots=True)
class Reset:
    """The stream could not resume from `requested`: it goes on after `resume_after`."""

    requested: int
    resume_after: int
    reason: Literal["retention", "unknown_position"]

    def as_json(self) -> dict[str, Any]:
        detail = (
            "events after the requested position were deleted by retention"
            if self.reason == "retention"
            else "the requested position is beyond the newest event"
        )
        return {
            "reason": self.reason,
            "requested": self.requested,
            "resume_after": self.resume_after,
            "detail": detail,
        }


StreamItem = Event | Reset


def _event_id(event: Event) -> int:
    return event.id


class StreamsFull(Exception):
    """The process already serves `max_clients` streams."""


class StreamHub:
    """The process's live event feed (see the module docstring)."""

    def __init__(
        self,
        log: EventLog,
        *,
        poll_interval: float = 0.25,
        queue_size: int = 256,
        max_clients: int = 10_000,
        page: int = PAGE,
        buffer: int = 10_000,
    ) -> None:
        self.log = log
        self.queue_size = queue_size
        self.buffer = buffer
        # The newest events, in id order: everything after `_buffer_from` up to
        # `position` is here, so resumes and catch-ups near the head need no query.
        self._recent: list[Event] = []
        self._buffer_from = 0
        self.max_clients = max_clients
        self.page = page
        # The newest event id read from the log (and handed to the live streams).
        self.position = 0
        self.started = False
        # Times a live stream fell behind its queue and went back to the log (a counter).
        self.lagged = 0
        self._live: set[EventStream] = set()
        self._open: set[EventStream] = set()
        self._wake = asyncio.Event()
        self._starting = asyncio.Lock()
        self._round_done = asyncio.Event()
        self._rounds = 0
        self._tailer = Periodic(
            "stream-hub",
            self._tail,
            interval=poll_interval,
            max_backoff=max(poll_interval, 5.0),
            sleep=self._nap,
        )

    @property
    def streams(self) -> int:
        """Open streams (tests count leaks with it)."""
        return len(self._open)

    @property
    def live_streams(self) -> int:
        return len(self._live)

    async def start(self) -> None:
        """Start tailing from the newest event (idempotent; `open` calls it)."""
        async with self._starting:
            if self.started:
                return
            self.position = self._buffer_from = await self.log.head()
            self.started = True
            self._tailer.start()

    async def stop(self) -> None:
        await self._tailer.stop()
        for stream in tuple(self._open):
            stream.close()
        self.started = False

    def wake(self) -> None:
        """Tail the log now (the event bus heard of a new event)."""
        self._wake.set()

    async def tailed(self) -> int:
        """Wait until a tail round that started after this call has completed (what was
        committed before the call has been read); returns the position it reached."""
        target = self._rounds + 2
        while self._rounds < target:
            self._round_done.clear()
            self.wake()
            await self._round_done.wait()
        return self.position

    async def _nap(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)
        self._wake.clear()

    async def _tail(self) -> None:
        while True:
            events = await self.log.read(after=self.position, limit=self.page)
            if events:
                self._dispatch(events)
            if len(events) < self.page:
                break
        self._rounds += 1
        self._round_done.set()

    def _dispatch(self, events: list[Event]) -> None:
        # One synchronous block: a stream that attaches between two rounds sees
        # every event after `position`, and none before.
        live = tuple(self._live)
        for event in events:
            rooms = rooms_of(event) if live else frozenset()
            for stream in live:
                if stream.filter.admits(event, rooms):
                    stream.offer(event)
        self.position = events[-1].id
        self._remember(events)

    def _remember(self, events: list[Event]) -> None:
        recent = self._recent
        recent.extend(events)
        if len(recent) > 2 * self.buffer:  # trimmed in bulk: amortised O(1) per event
            dropped = len(recent) - self.buffer
            self._buffer_from = recent[dropped - 1].id
            del recent[:dropped]

    def recent(self, *, after: int, until: int, limit: int) -> list[Event] | None:
        """Events with `after < id <= until` from memory (at most `limit`), or None when
        the buffer does not reach back to `after` (read the log instead)."""
        if after < self._buffer_from or until > self.position:
            return None
        recent = self._recent
        start = bisect.bisect_right(recent, after, key=_event_id)
        end = bisect.bisect_right(recent, until, lo=start, key=_event_id)
        return recent[start : min(end, start + limit)]

    async def open(self, filter: EventFilter, *, after: int | None = None) -> EventStream:
        """A stream of the events `filter` admits, after position `after` (None: from
        now on); `StreamsFull` when the process serves `max_clients` already."""
        if len(self._open) >= self.max_clients:
            raise StreamsFull
        await self.start()
        reset: Reset | None = None
        if after is None:
            start = self.position
        elif self._buffer_from <= after <= self.position:
            start = after  # in memory: neither deleted nor unknown (a reconnect storm's case)
        else:
            start = max(after, 0)
            horizon = await self.log.horizon()
            head = max(await self.log.head(), self.position)
            if start < horizon:
                reset = Reset(start, horizon, "retention")
                start = horizon
            elif start > head:
                reset = Reset(start, head, "unknown_position")
                start = head
        if len(self._open) >= self.max_clients:  # others opened meanwhile
            raise StreamsFull
        stream = EventStream(self, filter, start, reset)
        self._open.add(stream)
        if after is None:
            self._attach(stream)
        return stream

    def _attach(self, stream: EventStream) -> None:
        stream.live = True
        self._live.add(stream)

    def _detach(self, stream: EventStream) -> None:
        stream.live = False
        self._live.discard(stream)

    def _closed(self, stream: EventStream) -> None:
        self._detach(stream)
        self._open.discard(stream)


class EventStream:
    """One client's stream (see the module docstring): `async for item in stream`."""

    def __init__(self, hub: StreamHub, filter: EventFilter, start: int, reset: Reset | None):
        self.hub = hub
        self.filter = filter
        # The last event id handed to the client (its resume position), and how far
        # the log has been read for it (queued, or scanned past as not wanted).
        self.position = start
        self._read_to = start
        self.live = False
        self.lagged = 0
        self._items: deque[StreamItem] = deque([reset] if reset is not None else ())
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, event: Event) -> None:
        """From the hub's live feed: queue it, or fall behind when the queue is full."""
        if not self.live or event.id <= self._read_to:
            # Fell behind earlier in this batch, or read from the log already (a client
            # resuming ahead of this hub): it catches up from the log.
            return
        if len(self._items) >= self.hub.queue_size:
            self.lagged += 1
            self.hub.lagged += 1
            self.hub._detach(self)
            if self.lagged == 1 or self.lagged % 100 == 0:
                log.info("stream.lagged", lagged=self.lagged, position=self.position)
        else:
            self._items.append(event)
            self._read_to = event.id
        self._wakeup.set()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.hub._closed(self)
            self._wakeup.set()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> StreamItem:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._items:
                item = self._items.popleft()
                if isinstance(item, Event):
                    self.position = item.id
                return item
            if not self.live:
                await self._catch_up()
                continue
            self._wakeup.clear()
            await self._wakeup.wait()

    def take_ready(self, limit: int) -> list[StreamItem]:
        """Up to `limit` items already queued, without waiting (a transport that fell
        behind writes them in one go instead of one write each)."""
        taken: list[StreamItem] = []
        while self._items and len(taken) < limit and not self._closed:
            item = self._items.popleft()
            if isinstance(item, Event):
                self.position = item.id
            taken.append(item)
        return taken

    async def _catch_up(self) -> None:
        """Read the next page of the log for this stream; attach to the live feed once
        it has read up to the hub's position."""
        until = self.hub.position
        if self._read_to < until:
            f = self.filter
            page = self.hub.recent(after=self._read_to, until=until, limit=self.hub.page)
            if page is None:
                page = await self.hub.log.read(
                    after=self._read_to,
                    until=until,
                    limit=self.hub.page,
                    kinds=f.kinds,
                    organization_id=f.organization_id,
                )
            if self._closed:
                return
            self._items.extend(e for e in page if f.admits(e, rooms_of(e)))
            if len(page) == self.hub.page:
                self._read_to = page[-1].id
                return
            self._read_to = until
        # No await since the check: the live feed hands over every event after it.
        if self.hub.position <= self._read_to:
            self.hub._attach(self)
