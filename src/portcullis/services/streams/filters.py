"""What a live stream asks for: event kinds, resources (rooms), and the caller's scope.

A platform event belongs to the *resources* it is about: the subject it names
(`consumer:alice`, `key:<id>`, `alert:<rule>`), the route, service, consumer and
upstream its data names (an alert's scope too), its organization
(`organization:<id>`), and the area rooms `alerts` (alert.*, anomaly.*) and `config`
(config.*, consumer.created). A stream that names resources gets the events that
belong to at least one of them; a stream that names kinds gets those kinds; both
must hold when both are given.

The caller's scope is applied first and always: an admin limited to an organization
only ever sees that organization's events (gateway-wide events, which have none, are
for unlimited admins), exactly like `GET /admin/v1/events`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from portcullis.events.bus import Event
from portcullis.events.catalogue import kinds_matching

# Area rooms: a name alone, no `:`.
AREA_ROOMS = {"alerts": ("alert.", "anomaly."), "config": ("config.", "consumer.created")}
# Resource rooms: `<type>:<name>`; names as the config allows them (plus ids).
RESOURCE_TYPES = ("organization", "service", "route", "consumer", "upstream", "key", "alert")
_RESOURCE = re.compile(r"^(" + "|".join(RESOURCE_TYPES) + r"):[A-Za-z0-9._~@+-]{1,200}$")
# Fields of an event's data (and of an alert's `scope`) that name a resource.
_DATA_FIELDS = ("route", "service", "consumer", "upstream")


def check_room(room: str) -> str:
    """A room name (`alerts`, `config`, `route:payments`, ...); `ValueError` naming it else."""
    if room in AREA_ROOMS or _RESOURCE.match(room):
        return room
    kinds = ", ".join(f"{t}:<name>" for t in RESOURCE_TYPES)
    raise ValueError(f"{room!r} is not a room: use alerts, config, traffic or one of {kinds}")


def rooms_of(event: Event) -> frozenset[str]:
    """Every room `event` belongs to (see the module docstring)."""
    rooms: set[str] = set()
    if event.organization_id is not None:
        rooms.add(f"organization:{event.organization_id}")
    head, sep, _ = event.subject.partition(":")
    if sep and head in RESOURCE_TYPES:
        rooms.add(event.subject)
    _named(event.data, rooms)
    scope = event.data.get("scope")
    if isinstance(scope, dict):
        _named(scope, rooms)
    for room, prefixes in AREA_ROOMS.items():
        if event.kind.startswith(prefixes):
            rooms.add(room)
    return frozenset(rooms)


def _named(values: dict[str, Any], into: set[str]) -> None:
    for field in _DATA_FIELDS:
        value = values.get(field)
        if isinstance(value, str) and value:
            into.add(f"{field}:{value}")


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a stream delivers.

    `kinds`: the catalogued kinds wanted (None: every kind); `rooms`: at least one must
    hold the event (None: any); `organization_id`: the caller's scope (None: an
    unlimited caller, who sees every event).
    """

    kinds: frozenset[str] | None = None
    rooms: frozenset[str] | None = None
    organization_id: str | None = None

    @classmethod
    def of(
        cls,
        *,
        types: Iterable[str] = (),
        rooms: Iterable[str] = (),
        organization_id: str | None = None,
    ) -> EventFilter:
        """A filter from kind patterns (`key.*`, `alert.firing`, `*`) and room names,
        checked (`ValueError` naming the bad one)."""
        patterns = [t for t in types if t]
        names = [check_room(r) for r in rooms if r]
        return cls(
            kinds=kinds_matching(patterns) if patterns else None,
            rooms=frozenset(names) if names else None,
            organization_id=organization_id,
        )

    def matches(self, event: Event) -> bool:
        return self.admits(event, rooms_of(event) if self.rooms is not None else frozenset())

    def admits(self, event: Event, rooms: frozenset[str]) -> bool:
        """`matches`, given the event's `rooms_of` (worked out once per event for all streams)."""
        if self.organization_id is not None and event.organization_id != self.organization_id:
            return False
        if self.kinds is not None and event.kind not in self.kinds:
            return False
        return self.rooms is None or not self.rooms.isdisjoint(rooms)
