"""Presence in process: join/leave pushes, expiry of unrefreshed entries, organization
scope of members, and ETag notices on config changes (O(watched resources))."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from portcullis.services.config_editor import ConfigState
from portcullis.services.errors import ServiceError
from portcullis.services.rbac import ALL_PERMISSIONS, Caller, Role
from portcullis.services.scoping import OrgScope
from portcullis.services.streams.presence import (
    EntityTags,
    MemoryPresence,
    PresenceEntry,
    PresenceHub,
    PresenceStore,
    PresenceWatcher,
    check_resource,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class FakeTags(EntityTags):
    """ETags from a dict by resource; an organization-limited scope sees only the
    resources listed for its organization. Counts lookups."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.owners: dict[str, str] = {}
        self.lookups = 0

    async def current(self) -> ConfigState:
        return cast(ConfigState, SimpleNamespace(version=7))

    def etag(self, current: ConfigState, resource: str, scope: OrgScope) -> str | None:
        check_resource(resource)
        self.lookups += 1
        owner = self.owners.get(resource)
        if scope.organization_id is not None and owner != scope.organization_id:
            return None
        return self.tags.get(resource)


def watcher(
    session: str, org: str | None = None, *, inbox: list[dict[str, Any]] | None = None
) -> tuple[PresenceWatcher, list[dict[str, Any]]]:
    got: list[dict[str, Any]] = [] if inbox is None else inbox
    caller = Caller(f"user:{session}@example.com", Role.ADMIN, ALL_PERMISSIONS, organization_id=org)
    scope = OrgScope(org, org) if org else OrgScope()
    return PresenceWatcher(session, caller, scope, got.append), got


def presence(store: PresenceStore, tags: FakeTags, clock: Clock) -> PresenceHub:
    return PresenceHub(store, tags, ttl=3.0, clock=clock)


@pytest.fixture
def tags() -> FakeTags:
    t = FakeTags()
    t.tags = {"route:pay": '"v1"', "service:billing": '"s1"', "route:other": '"o1"'}
    t.owners = {"route:pay": "acme", "route:other": "globex"}
    return t


async def test_join_and_leave_push_members_to_everyone_present(tags: FakeTags) -> None:
    clock = Clock()
    hub = presence(MemoryPresence(), tags, clock)
    alice, alice_got = watcher("alice")
    bob, bob_got = watcher("bob")
    await hub.join(alice, "route:pay", "viewing")
    await hub.join(bob, "route:pay", "editing")
    await hub._push("route:pay")  # what the pusher does when the store says it changed
    await hub.leave("bob", "route:pay")
    await hub._push("route:pay")
    states = [[(m["session"], m["state"]) for m in p["members"]] for p in alice_got]
    assert states == [
        [("alice", "viewing")],
        [("alice", "viewing"), ("bob", "editing")],
        [("alice", "viewing")],
    ]
    assert alice_got[0]["etag"] == '"v1"'
    assert [(m["session"], m["kind"]) for m in bob_got[0]["members"]] == [
        ("alice", "admin"),
        ("bob", "admin"),
    ]
    assert hub.entries == 1


async def test_an_entry_that_is_not_refreshed_expires_and_everyone_is_told(
    tags: FakeTags,
) -> None:
    clock = Clock()
    store = MemoryPresence()
    hub = presence(store, tags, clock)
    alice, got = watcher("alice")
    await hub.join(alice, "service:billing", "viewing")
    # An entry of a node that died: nobody refreshes it.
    await store.put(
        PresenceEntry("service:billing", "ghost", "user:g", None, None, "editing", 990.0, 1_003.0)
    )
    await hub.refresh()
    clock.now += 2.5  # alice's entry was refreshed at 1000 (+3 s); the ghost's ends at 1003
    await hub.refresh()
    clock.now += 2.5
    await hub.refresh()
    assert [[m["session"] for m in p["members"]] for p in got] == [
        ["alice"],
        ["ghost", "alice"],
        ["alice"],
    ]
    assert store.size == 1


async def test_an_organization_admin_sees_only_its_organizations_resources_and_members(
    tags: FakeTags,
) -> None:
    hub = presence(MemoryPresence(), tags, Clock())
    owner, _ = watcher("owner")
    limited, got = watcher("acme-admin", "acme")
    await hub.join(owner, "route:pay", "viewing")
    await hub.join(limited, "route:pay", "viewing")
    with pytest.raises(ServiceError) as refused:
        await hub.join(limited, "route:other", "viewing")
    with pytest.raises(ValueError, match="is not a config entity"):
        await hub.join(limited, "key:abc", "viewing")
    assert refused.value.kind.status == 404
    assert [m["session"] for m in got[-1]["members"]] == ["acme-admin"]


async def test_a_config_change_tells_watchers_the_new_etag_once(tags: FakeTags) -> None:
    hub = presence(MemoryPresence(), tags, Clock())
    alice, alice_got = watcher("alice")
    bob, bob_got = watcher("bob")
    await hub.join(alice, "route:pay", "viewing")
    await hub.join(bob, "service:billing", "viewing")
    tags.lookups = 0
    tags.tags["route:pay"] = '"v2"'
    assert await hub.config_applied() == 1
    assert await hub.config_applied() == 0  # nothing changed since
    del tags.tags["route:pay"]
    assert await hub.config_applied() == 1
    changed = [m for m in alice_got if m["type"] == "changed"]
    assert [(m["etag"], m["deleted"]) for m in changed] == [('"v2"', False), (None, True)]
    assert changed[0]["version"] == 7
    assert not [m for m in bob_got if m["type"] == "changed"]
    # One lookup per watched resource (and scope) per change, whatever the config's size.
    assert tags.lookups == 6


def test_entries_round_trip_through_their_stored_form() -> None:
    entry = PresenceEntry("route:pay", "s1", "user:a", "u1", "org", "editing", 1.5, 4.5, "admin")
    assert PresenceEntry.load(entry.dump()) == entry
