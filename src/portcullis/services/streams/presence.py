"""Presence: who is viewing or editing which config entity, on every node.

A WebSocket session joins a resource (`route:payments`, `service:billing`, any
top-level config entity as `<kind>:<id>`) as `viewing` or `editing`; everyone present
on the resource is pushed its member list whenever it changes, and is told when the
entity changes, with the ETag REST now returns for it (`changed`) — the basis of
conflict-aware editing: a dashboard that holds an older ETag knows its PATCH would get
412 before sending it.

- **Entries** live in a `PresenceStore`: in process (`MemoryPresence`), or in Redis
  (`RedisPresence`: one hash per resource, an entry per session with its expiry, and
  a pub/sub channel naming the resources that changed) so that every node sees every
  node's entries. An entry expires `ttl` seconds after its last refresh; the hub
  refreshes the entries of its live sessions every `ttl / 3` seconds, so an entry
  outlives its session only when the node itself died (a closed or dropped connection
  leaves at once).
- **Pushes** go to the sessions of this node present on the resource (`PresenceWatcher`)
  when the store says the resource changed, and at each refresh round (which also
  notices entries that expired on a dead node).
- **ETags**: on each `config.applied` event (the hub's event stream, so every node
  sees every version) the hub works out the current ETag of each watched resource —
  O(watched resources) per config change, not O(config) — and tells each watcher whose
  last ETag differs.
- **Scope**: joining checks that the caller sees the entity (an entity of another
  organization is "not found", as in REST); an admin limited to an organization sees
  only the members of that organization (never other organizations' users).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis

from portcullis.events.bus import Event
from portcullis.events.catalogue import EventType
from portcullis.redis_client import REDIS_FAILURES, SharedRedis
from portcullis.services.config_editor import ConfigState
from portcullis.services.entities import EntityCollection
from portcullis.services.entity_kinds import KINDS
from portcullis.services.errors import NOT_FOUND, ServiceError
from portcullis.services.preconditions import etag_of
from portcullis.services.rbac import Caller
from portcullis.services.scoping import OrgScope
from portcullis.services.streams.hub import EventStream

log = structlog.get_logger(__name__)

DEFAULT_TTL = 30.0
DEFAULT_PREFIX = "pc:presence:"
STATES = ("viewing", "editing")
# Entity kinds one can be present on, by their room prefix (targets are nested: no).
PRESENCE_KINDS = {k.singular: k for k in KINDS if k.collection != "targets"}


def check_resource(resource: str) -> tuple[str, str]:
    """`<kind>:<id>` of a config entity; `ValueError` naming the choices else."""
    head, sep, entity_id = resource.partition(":")
    if not sep or head not in PRESENCE_KINDS or not entity_id or len(resource) > 300:
        kinds = ", ".join(f"{k}:<id>" for k in PRESENCE_KINDS)
        raise ValueError(f"{resource!r} is not a config entity: use one of {kinds}")
    return head, entity_id


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    """One session present on one resource."""

    resource: str
    session: str
    actor: str
    user_id: str | None
    organization_id: str | None
    state: str
    since: float
    expires: float
    # Who: an admin user (or API token); portal developers later.
    kind: str = "admin"

    def member(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "actor": self.actor,
            "user_id": self.user_id,
            "kind": self.kind,
            "state": self.state,
            "since": datetime.fromtimestamp(self.since, UTC).isoformat().replace("+00:00", "Z"),
        }

    def dump(self) -> str:
        return json.dumps(
            {
                "resource": self.resource,
                "session": self.session,
                "actor": self.actor,
                "user_id": self.user_id,
                "organization_id": self.organization_id,
                "state": self.state,
                "since": self.since,
                "expires": self.expires,
                "kind": self.kind,
            },
            separators=(",", ":"),
        )

    @classmethod
    def load(cls, raw: str | bytes) -> PresenceEntry:
        value = json.loads(raw)
        return cls(**{k: value[k] for k in cls.__slots__})


class PresenceStore(Protocol):
    """Where entries live (see the module docstring); `on_change(resource)` is called
    for every change, made here or (Redis) on another node."""

    on_change: Callable[[str], None] | None

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, entry: PresenceEntry) -> None: ...

    async def remove(self, resource: str, session: str) -> None: ...

    async def members(self, resource: str, now: float) -> list[PresenceEntry]:
        """The unexpired entries of `resource`, oldest first."""


class MemoryPresence:
    """Entries in this process only (no Redis)."""

    def __init__(self) -> None:
        self.on_change: Callable[[str], None] | None = None
        self._entries: dict[str, dict[str, PresenceEntry]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()

    def _changed(self, resource: str) -> None:
        if self.on_change is not None:
            self.on_change(resource)

    async def put(self, entry: PresenceEntry) -> None:
        self._entries.setdefault(entry.resource, {})[entry.session] = entry
        self._changed(entry.resource)

    async def remove(self, resource: str, session: str) -> None:
        entries = self._entries.get(resource, {})
        if entries.pop(session, None) is not None:
            if not entries:
                self._entries.pop(resource, None)
            self._changed(resource)

    async def members(self, resource: str, now: float) -> list[PresenceEntry]:
        entries = self._entries.get(resource, {})
        for session in [s for s, e in entries.items() if e.expires <= now]:
            del entries[session]
        if not entries:
            self._entries.pop(resource, None)
        return sorted(entries.values(), key=lambda e: (e.since, e.session))

    @property
    def size(self) -> int:
        return sum(len(e) for e in self._entries.values())


class RedisPresence:
    """Entries in Redis, seen by every node: a hash `<prefix><resource>` (field: session,
    value: the entry with its expiry; the key itself expires after the longest ttl),
    and a channel `<prefix>changes` carrying the names of changed resources."""

    def __init__(
        self, redis: SharedRedis, *, prefix: str = DEFAULT_PREFIX, ttl: float = DEFAULT_TTL
    ):
        self.on_change: Callable[[str], None] | None = None
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl
        self.channel = f"{prefix}changes"
        self._listener: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.failures = 0

    def key(self, resource: str) -> str:
        return f"{self.prefix}r:{resource}"

    async def start(self) -> None:
        if self._task is None:
            self._listener = self.redis.dedicated()
            self._task = asyncio.create_task(self._listen(), name="portcullis-presence")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=4.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._listener is not None:
            listener, self._listener = self._listener, None
            # Bounded: closing a pub/sub connection must not hold up a shutdown.
            with contextlib.suppress(TimeoutError, *REDIS_FAILURES):
                async with asyncio.timeout(2.0):
                    await listener.aclose()
                    await listener.connection_pool.disconnect()

    async def _listen(self) -> None:
        assert self._listener is not None
        delay = 0.5
        while True:
            pubsub = self._listener.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    message = await pubsub.get_message(timeout=2.0)
                    if message is not None and message.get("type") == "subscribe":
                        break
                self._subscribed.set()
                delay = 0.5
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        data = message.get("data")
                        resource = data.decode() if isinstance(data, bytes) else str(data)
                        if self.on_change is not None:
                            self.on_change(resource)
            except asyncio.CancelledError:
                raise
            except REDIS_FAILURES as exc:
                self._subscribed.clear()
                log.warning("presence.redis_listener_failed", error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(*REDIS_FAILURES):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _call(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """A Redis call through the process's outage circuit; None when Redis is away
        (presence is best-effort: the next refresh round puts the entries back)."""
        circuit = self.redis.circuit
        if circuit.blocked():
            self.failures += 1
            return None
        try:
            async with asyncio.timeout(2.0):
                result = await call()
        except REDIS_FAILURES as exc:
            circuit.failed(exc)
            self.failures += 1
            log.warning("presence.redis_failed", call=what, error=repr(exc))
            return None
        except BaseException:
            circuit.abandoned()
            raise
        circuit.succeeded()
        return result

    async def put(self, entry: PresenceEntry) -> None:
        key = self.key(entry.resource)

        async def call() -> None:
            async with self.redis.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, entry.session, entry.dump())
                pipe.expire(key, int(self.ttl * 2) + 1)
                pipe.publish(self.channel, entry.resource)
                await pipe.execute()

        await self._call("put", call)

    async def remove(self, resource: str, session: str) -> None:
        async def call() -> None:
            async with self.redis.client.pipeline(transaction=True) as pipe:
                pipe.hdel(self.key(resource), session)
                pipe.publish(self.channel, resource)
                await pipe.execute()

        await self._call("remove", call)

    async def members(self, resource: str, now: float) -> list[PresenceEntry]:
        key = self.key(resource)
        raw = await self._call("members", lambda: self.redis.client.hgetall(key))
        live: list[PresenceEntry] = []
        expired: list[str | bytes] = []
        for session, value in (raw or {}).items():
            try:
                entry = PresenceEntry.load(value)
            except (ValueError, KeyError, TypeError):
                expired.append(session)
                continue
            if entry.expires > now:
                live.append(entry)
            else:
                expired.append(session)
        if expired:
            await self._call("expire", lambda: self.redis.client.hdel(key, *expired))
        return sorted(live, key=lambda e: (e.since, e.session))


@dataclass(eq=False)
class PresenceWatcher:
    """A session present on resources of this node: where its messages go."""

    session: str
    caller: Caller
    scope: OrgScope
    notify: Callable[[dict[str, Any]], None]
    # Per resource: the members last pushed (by session, state) and the ETag last told.
    members: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    etags: dict[str, str | None] = field(default_factory=dict)
    states: dict[str, tuple[str, float]] = field(default_factory=dict)

    def sees(self, entry: PresenceEntry) -> bool:
        org = self.scope.organization_id
        return org is None or entry.organization_id == org


class EntityTags:
    """The ETag REST returns for a config entity (`Entity.etag`), for a caller's scope:
    None when the entity does not exist or the scope does not see it."""

    def __init__(self, state: Callable[[], Awaitable[ConfigState]]) -> None:
        self._state = state
        self._collections = {name: EntityCollection(kind) for name, kind in PRESENCE_KINDS.items()}

    async def current(self) -> ConfigState:
        return await self._state()

    def etag(self, current: ConfigState, resource: str, scope: OrgScope) -> str | None:
        head, entity_id = check_resource(resource)
        collection = self._collections[head]
        try:
            located = collection.locate(current.document, None, scope, version=current.version)
            index = collection.find(located, entity_id, scope)
        except ServiceError:
            return None
        return etag_of(collection.represent(located.documents[index], entity_id))


class PresenceHub:
    """This node's presence (see the module docstring)."""

    def __init__(
        self,
        store: PresenceStore,
        tags: EntityTags,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
        config_events: Callable[[], Awaitable[EventStream]] | None = None,
    ) -> None:
        self.store = store
        self.tags = tags
        self.ttl = ttl
        self.clock = clock
        self._config_events = config_events
        # resource -> session -> watcher (this node's sessions present on it).
        self.watching: dict[str, dict[str, PresenceWatcher]] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        store.on_change = self._changed

    @property
    def running(self) -> bool:
        return self._running

    @property
    def entries(self) -> int:
        """This node's sessions' entries (leak checks)."""
        return sum(len(w) for w in self.watching.values())

    async def start(self) -> None:
        await self.store.start()
        self._running = True
        self._tasks = [
            asyncio.create_task(self._pusher(), name="presence-pusher"),
            asyncio.create_task(self._refresher(), name="presence-refresher"),
        ]
        if self._config_events is not None:
            self._tasks.append(asyncio.create_task(self._config_watch(), name="presence-etags"))

    async def halt(self) -> None:
        """Stop the rounds (entries stay in the store, as when the node dies)."""
        # A flag as well as the cancel: a cancel landing inside a Redis call can come
        # out of redis-py as a connection error, which the rounds survive.
        self._running = False
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def stop(self) -> None:
        await self.halt()
        for resource, watchers in list(self.watching.items()):
            for session in list(watchers):
                with contextlib.suppress(Exception):
                    await self.store.remove(resource, session)
        self.watching.clear()
        await self.store.close()

    # ------------------------------------------------------------------ sessions

    async def join(self, watcher: PresenceWatcher, resource: str, state: str) -> None:
        """Join (or change state on) `resource`; "not found" when the caller doesn't see
        it. The joiner gets the member list at once, with the entity's ETag."""
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        check_resource(resource)
        tag = self.tags.etag(await self.tags.current(), resource, watcher.scope)
        if tag is None:
            raise ServiceError(NOT_FOUND, f"no {resource!r}", target="resource")
        watchers = self.watching.setdefault(resource, {})
        known = watchers.get(watcher.session)
        if known is not None:
            watcher = known
        watchers[watcher.session] = watcher
        since = watcher.states.get(resource, (state, self.clock()))[1]
        watcher.states[resource] = (state, since)
        watcher.etags[resource] = tag
        watcher.members.pop(resource, None)  # the joiner gets the list whatever it is
        await self.store.put(self._entry(watcher, resource))
        await self._push(resource)

    async def leave(self, session: str, resource: str) -> None:
        watchers = self.watching.get(resource, {})
        watcher = watchers.pop(session, None)
        if not watchers:
            self.watching.pop(resource, None)
        if watcher is not None:
            watcher.states.pop(resource, None)
            watcher.members.pop(resource, None)
            watcher.etags.pop(resource, None)
        await self.store.remove(resource, session)

    async def leave_all(self, session: str, resources: Iterable[str]) -> None:
        for resource in resources:
            await self.leave(session, resource)

    def _entry(self, watcher: PresenceWatcher, resource: str) -> PresenceEntry:
        state, since = watcher.states[resource]
        caller = watcher.caller
        return PresenceEntry(
            resource=resource,
            session=watcher.session,
            actor=caller.actor,
            user_id=caller.user_id,
            organization_id=caller.organization_id,
            state=state,
            since=since,
            expires=self.clock() + self.ttl,
        )

    # ------------------------------------------------------------------ pushes

    def _changed(self, resource: str) -> None:
        if resource in self.watching:
            self._dirty.add(resource)
            self._wake.set()

    async def _pusher(self) -> None:
        while self._running:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for resource in dirty:
                try:
                    await self._push(resource)
                except Exception as exc:
                    log.warning("presence.push_failed", resource=resource, error=repr(exc))

    async def _push(self, resource: str) -> None:
        """Tell each watcher of `resource` its members, when they changed for it."""
        watchers = self.watching.get(resource)
        if not watchers:
            return
        members = await self.store.members(resource, self.clock())
        for watcher in list(watchers.values()):
            visible = [m for m in members if watcher.sees(m)]
            seen = tuple((m.session, m.state) for m in visible)
            if watcher.members.get(resource) == seen:
                continue
            watcher.members[resource] = seen
            watcher.notify(
                {
                    "type": "presence",
                    "resource": resource,
                    "etag": watcher.etags.get(resource),
                    "members": [m.member() for m in visible],
                }
            )

    async def refresh(self) -> None:
        """One refresh round: this node's entries get a new expiry, and every watched
        resource is pushed again (entries of a dead node expire here)."""
        for resource, watchers in list(self.watching.items()):
            for watcher in list(watchers.values()):
                if resource in watcher.states:
                    await self.store.put(self._entry(watcher, resource))
        for resource in list(self.watching):
            await self._push(resource)

    async def _refresher(self) -> None:
        while self._running:
            await asyncio.sleep(self.ttl / 3)
            if not self.running:
                return
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("presence.refresh_failed", error=repr(exc))

    # ------------------------------------------------------------------ etags

    async def config_applied(self, event: Event | None = None) -> int:
        """Tell the watchers of each changed resource its new ETag (None: deleted, or out
        of their sight); how many were told."""
        if not self.watching:
            return 0
        current = await self.tags.current()
        data = event.data if event is not None else {}
        told = 0
        for resource, watchers in list(self.watching.items()):
            by_scope: dict[tuple[str | None, str | None], str | None] = {}
            for watcher in list(watchers.values()):
                scope = (watcher.scope.organization, watcher.scope.organization_id)
                if scope not in by_scope:
                    by_scope[scope] = self.tags.etag(current, resource, watcher.scope)
                tag = by_scope[scope]
                if watcher.etags.get(resource) == tag:
                    continue
                watcher.etags[resource] = tag
                told += 1
                watcher.notify(
                    {
                        "type": "changed",
                        "resource": resource,
                        "etag": tag,
                        "deleted": tag is None,
                        "version": data.get("version", current.version),
                        "by": data.get("author"),
                    }
                )
        return told

    async def _config_watch(self) -> None:
        assert self._config_events is not None
        while self._running:
            events = None
            try:
                events = await self._config_events()
                async for item in events:
                    if isinstance(item, Event) and item.kind == EventType.CONFIG_APPLIED.value:
                        await self.config_applied(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("presence.config_watch_failed", error=repr(exc))
            finally:
                if events is not None:
                    events.close()
            await asyncio.sleep(1.0)  # the stream ended (hub stopped) or failed: again
