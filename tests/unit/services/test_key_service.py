"""The API key operations without HTTP: scoping, validation, audit, If-Match, import."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.key_admin import KeySpec
from portcullis.identity.key_repository import KeyFilter
from portcullis.identity.secrets import ServerSecret
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import Operation
from portcullis.services.errors import (
    INVALID_CURSOR,
    NOT_FOUND,
    PRECONDITION_FAILED,
    VALIDATION_FAILED,
    ServiceError,
)
from portcullis.services.keys import (
    KEY_STATE_CONFLICT,
    ImportRefused,
    KeyService,
    etag_of_key,
    represent,
)
from portcullis.store.config_repository import ConfigRepository
from support.services import audit_events
from support.services import operation as support_operation

# alice (org-a) and bob (org-b) exist.
pytestmark = pytest.mark.usefixtures("with_consumers")
SECRET = ServerSecret.from_secret(b"s" * 32)
T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(engine: AsyncEngine) -> KeyService:
    return KeyService(engine, SECRET, ConfigEditor(ConfigRepository(engine)))


def operation(engine: AsyncEngine, clock: Clock, organization: str | None = None) -> Operation:
    return support_operation(engine, organization, client_ip="192.0.2.1", clock=clock)


def spec(**fields: object) -> KeySpec:
    return KeySpec.model_validate({"name": "k", **fields})


async def test_create_records_metadata_only_in_the_audit_log(
    service: KeyService, engine: AsyncEngine, clock: Clock
) -> None:
    op = operation(engine, clock)
    created = await service.create(op, "alice", spec(name="checkout"))

    assert created.key.startswith("pc_live_")
    assert created.info.organization_id == "id-org-a"
    [event] = await audit_events(engine)
    assert (event.action, event.resource_type, event.resource_id, event.status) == (
        "create",
        "api_key",
        created.info.id,
        201,
    )
    assert (event.actor, event.request_id, event.client_ip) == (
        "user:test@example.com",
        "req-1",
        "192.0.2.1",
    )
    assert event.organization_id == "id-org-a"
    assert event.diff["after"]["name"] == "checkout"
    assert created.key not in str(event.diff)


async def test_a_limited_caller_sees_only_its_organizations_keys(
    service: KeyService, engine: AsyncEngine, clock: Clock
) -> None:
    everyone = operation(engine, clock)
    mine = await service.create(everyone, "alice", spec())
    theirs = await service.create(everyone, "bob", spec())
    limited = operation(engine, clock, "org-a")

    assert (await service.get(limited, mine.info.id)).id == mine.info.id
    page = await service.list_keys(limited)
    assert [i.id for i in page.items] == [mine.info.id]
    # Filtering on another organization shows nothing rather than widening the scope.
    assert (await service.list_keys(limited, KeyFilter(organization="org-b"))).items == []
    for attempt in (
        service.get(limited, theirs.info.id),
        service.update(limited, theirs.info.id, {"name": "x"}),
        service.transition(limited, theirs.info.id, "revoke", reason="mine now"),
        service.rotate(limited, theirs.info.id, grace_seconds=0),
    ):
        with pytest.raises(ServiceError) as refused:
            await attempt
        assert refused.value.kind is NOT_FOUND
        assert refused.value.target == "key_id"
    # Another organization's consumer is unknown to them: no key, no listing.
    for denied in (
        service.create(limited, "bob", spec()),
        service.list_consumer_keys(limited, "bob"),
    ):
        with pytest.raises(ServiceError) as unknown:
            await denied
        assert unknown.value.kind is NOT_FOUND
        assert unknown.value.target == "consumer"
    assert (await service.get(everyone, theirs.info.id)).status == "active"
    assert [e.action for e in await audit_events(engine)] == ["create", "create"]


async def test_invalid_input_is_refused_naming_the_field(
    service: KeyService, engine: AsyncEngine, clock: Clock
) -> None:
    op = operation(engine, clock)
    key = (await service.create(op, "alice", spec())).info

    with pytest.raises(ServiceError) as wrong_type:
        await service.update(op, key.id, {"scopes": "orders:read"})
    assert wrong_type.value.kind is VALIDATION_FAILED
    assert [e.pointer for e in wrong_type.value.errors] == ["#/scopes"]

    with pytest.raises(ServiceError) as past:
        await service.update(op, key.id, {"expires_at": "2020-01-01T00:00:00Z"})
    assert [e.field for e in past.value.errors] == ["expires_at"]

    with pytest.raises(ServiceError) as sort:
        await service.list_keys(op, sort="key_hash")
    assert [e.field for e in sort.value.errors] == ["sort"]

    with pytest.raises(ServiceError) as cursor:
        await service.list_keys(op, cursor="nonsense")
    assert (cursor.value.kind, cursor.value.target) == (INVALID_CURSOR, "cursor")
    assert [e.action for e in await audit_events(engine)] == ["create"]


async def test_if_match_is_checked_against_the_key_as_written(
    service: KeyService, engine: AsyncEngine, clock: Clock
) -> None:
    op = operation(engine, clock)
    key = (await service.create(op, "alice", spec(name="one"))).info
    etag = etag_of_key(represent(key, clock()))

    renamed = await service.update(op, key.id, {"name": "two"}, if_match=etag)
    assert renamed.name == "two"
    with pytest.raises(ServiceError) as stale:
        await service.transition(op, key.id, "suspend", reason="stale", if_match=etag)
    assert stale.value.kind is PRECONDITION_FAILED
    assert (await service.get(op, key.id)).status == "active"

    # Traffic (`last_used_at`) does not change the ETag; the audit shows what changed.
    current = etag_of_key(represent(renamed, clock()))
    suspended = await service.transition(op, key.id, "suspend", reason="paused", if_match=current)
    assert suspended.status == "suspended"
    update, suspend = (await audit_events(engine))[1:]
    assert {"path": "/name", "old": "one", "new": "two"} in update.diff["changes"]
    assert (suspend.action, suspend.diff["before"]["status"]) == ("suspend", "active")

    await service.transition(op, key.id, "revoke", reason="done")
    with pytest.raises(ServiceError) as final:
        await service.transition(op, key.id, "resume")
    assert final.value.kind is KEY_STATE_CONFLICT


async def test_rotation_records_both_keys(
    service: KeyService, engine: AsyncEngine, clock: Clock
) -> None:
    op = operation(engine, clock)
    old = (await service.create(op, "alice", spec())).info
    rotation = await service.rotate(op, old.id, grace_seconds=3600)

    assert rotation.old.grace_until == T0 + timedelta(hours=1)
    events = await audit_events(engine)
    assert [(e.action, e.resource_id) for e in events[1:]] == [
        ("rotate", old.id),
        ("create", rotation.new.id),
    ]
    assert rotation.key not in str([e.diff for e in events])


async def test_an_import_is_all_or_nothing_naming_rows(
    service: KeyService, engine: AsyncEngine, clock: Clock
) -> None:
    limited = operation(engine, clock, "org-a")
    text = "consumer,name,scopes\r\nalice,one,a:read\r\nbob,two,\r\nalice,,\r\n"
    with pytest.raises(ImportRefused) as refused:
        await service.import_csv(limited, text)
    assert refused.value.kind is VALIDATION_FAILED
    pointers = [e.pointer for e in refused.value.errors]
    assert "#/rows/3/name" in pointers
    assert (await service.list_keys(operation(engine, clock))).items == []

    # bob (org-b) is unknown to an org-a admin even when the rows are otherwise valid.
    with pytest.raises(ImportRefused) as unknown:
        await service.import_csv(limited, "consumer,name\r\nalice,one\r\nbob,two\r\n")
    assert [e.pointer for e in unknown.value.errors] == ["#/rows/2/consumer"]

    progress: list[tuple[int, int]] = []
    imported = await service.import_csv(
        limited,
        "consumer,name\r\nalice,one\r\nalice,two\r\n",
        on_progress=lambda n, total: progress.append((n, total)),
    )
    assert [i.info.name for i in imported] == ["one", "two"]
    assert progress[-1:] == [(2, 2)]
    [event] = await audit_events(engine)
    assert (event.action, event.diff["after"]["count"]) == ("import", 2)


async def test_export_is_scoped(service: KeyService, engine: AsyncEngine, clock: Clock) -> None:
    everyone = operation(engine, clock)
    await service.create(everyone, "alice", spec(name="mine"))
    await service.create(everyone, "bob", spec(name="theirs"))
    chunks = [
        c async for c in service.export(operation(engine, clock, "org-a"), KeyFilter(), "jsonl")
    ]
    assert len(chunks) == 1
    assert '"name":"mine"' in chunks[0]


async def test_keys_of_consumers_is_each_consumers_first_page_in_one_read(
    service: KeyService, engine: AsyncEngine, clock: Clock
) -> None:
    everyone = operation(engine, clock)
    made = {}
    for name, consumer in (("a1", "alice"), ("a2", "alice"), ("a3", "alice"), ("b1", "bob")):
        clock.now += timedelta(seconds=1)
        made[name] = (await service.create(everyone, consumer, spec(name=name))).info.id
    pages = await service.keys_of_consumers(everyone, ["alice", "bob", "nobody"], per_consumer=2)
    # Newest first, as list_consumer_keys' default sort, and the same next cursor.
    assert [k.name for k in pages["alice"].items] == ["a3", "a2"]
    listed = await service.list_consumer_keys(everyone, "alice", limit=2)
    assert pages["alice"].next_cursor == listed.next_cursor
    rest = await service.list_consumer_keys(everyone, "alice", limit=2, cursor=listed.next_cursor)
    assert [k.name for k in rest.items] == ["a1"]
    assert [k.name for k in pages["bob"].items] == ["b1"]
    assert pages["bob"].next_cursor is None
    assert pages["nobody"].items == []
    # An organization-limited caller gets only its organization's keys, whatever it names.
    limited = await service.keys_of_consumers(
        operation(engine, clock, "org-a"), ["alice", "bob"], per_consumer=5
    )
    assert len(limited["alice"].items) == 3
    assert limited["bob"].items == []
