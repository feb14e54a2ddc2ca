"""Gateway entity operations without HTTP: scoping, validation, audit, If-Match, dependents."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.secrets import ServerSecret
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.entities import EntityCollection, EntityQuery, EntityService
from portcullis.services.entity_kinds import ROUTES, SERVICES, TARGETS, UPSTREAMS, Kind
from portcullis.services.errors import (
    ALREADY_EXISTS,
    FORBIDDEN,
    HAS_DEPENDENTS,
    NOT_FOUND,
    PRECONDITION_FAILED,
    VALIDATION_FAILED,
    ServiceError,
)
from portcullis.services.rbac import Role
from support.services import audit_events
from support.services import operation as support_operation

SECRET = ServerSecret.from_secret(b"s" * 32)
T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


# The operations of an operator (limited to an organization or not), request req-7.
operation = functools.partial(support_operation, role=Role.OPERATOR, request_id="req-7")


def service(
    kind: Kind, editor: ConfigEditor, engine: AsyncEngine, *, nested: bool = False
) -> EntityService:
    return EntityService(EntityCollection(kind, nested=nested), editor, engine, SECRET)


async def test_create_validates_the_whole_config_and_audits_with_the_version(
    engine: AsyncEngine, editor: ConfigEditor
) -> None:
    services = service(SERVICES, editor, engine)
    routes = service(ROUTES, editor, engine)
    op = operation(engine)

    created = await services.create(op, {"name": "orders", "url": "http://orders:8080"})
    assert (created.id, created.representation["url"]) == ("orders", "http://orders:8080")

    with pytest.raises(ServiceError) as dangling:
        await routes.create(op, {"name": "r", "service": "nope", "paths": ["/r"]})
    assert dangling.value.kind is VALIDATION_FAILED
    assert [e.pointer for e in dangling.value.errors] == ["#/service"]

    with pytest.raises(ServiceError) as taken:
        await services.create(op, {"name": "orders", "url": "http://other:8080"})
    assert taken.value.kind is ALREADY_EXISTS
    assert [e.pointer for e in taken.value.errors] == ["#/name"]

    [event] = await audit_events(engine)
    assert (event.action, event.resource_type, event.resource_id, event.status) == (
        "create",
        "service",
        "orders",
        201,
    )
    assert event.config_version == (await editor.state()).version
    assert event.request_id == "req-7"


async def test_a_limited_caller_works_inside_its_organization(
    engine: AsyncEngine, editor: ConfigEditor
) -> None:
    services = service(SERVICES, editor, engine)
    everyone, mine = operation(engine), operation(engine, "org-a")
    await services.create(
        everyone, {"name": "theirs", "url": "http://t:80", "organization": "org-b"}
    )

    created = await services.create(mine, {"name": "ours", "url": "http://o:80"})
    assert created.representation["organization"] == "org-a"  # filled in
    page = await services.list(mine, EntityQuery(limit=10))
    assert [i["name"] for i in page.items] == ["ours"]
    for attempt in (
        services.get(mine, "theirs"),
        services.patch(mine, "theirs", {"tags": ["x"]}),
        services.delete(mine, "theirs"),
    ):
        with pytest.raises(ServiceError) as hidden:
            await attempt
        assert hidden.value.kind is NOT_FOUND
    with pytest.raises(ServiceError) as elsewhere:
        await services.create(mine, {"name": "x", "url": "http://x:80", "organization": "org-b"})
    assert elsewhere.value.kind is FORBIDDEN
    assert [e.field for e in elsewhere.value.errors] == ["organization"]
    # A name another organization holds is "not available", without saying whose.
    with pytest.raises(ServiceError) as taken:
        await services.create(mine, {"name": "theirs", "url": "http://x:80"})
    assert taken.value.kind is ALREADY_EXISTS
    assert "org-b" not in str(taken.value)
    assert [i["name"] for i in (await services.list(everyone, EntityQuery(limit=10))).items] == [
        "ours",
        "theirs",
    ]


async def test_if_match_and_dependents_guard_changes(
    engine: AsyncEngine, editor: ConfigEditor
) -> None:
    services = service(SERVICES, editor, engine)
    routes = service(ROUTES, editor, engine)
    op = operation(engine)
    await services.create(op, {"name": "orders", "url": "http://orders:8080"})
    await routes.create(op, {"name": "r", "service": "orders", "paths": ["/r"]})
    first = await services.get(op, "orders")

    changed = await services.patch(op, "orders", {"tags": ["a"]}, if_match=first.etag)
    with pytest.raises(ServiceError) as stale:
        await services.patch(op, "orders", {"tags": ["b"]}, if_match=first.etag)
    assert stale.value.kind is PRECONDITION_FAILED
    assert (await services.get(op, "orders")).representation["tags"] == ["a"]

    with pytest.raises(ServiceError) as used:
        await services.delete(op, "orders", if_match=changed.etag)
    assert used.value.kind is HAS_DEPENDENTS
    assert used.value.extensions["dependents"] == [
        {"kind": "routes", "id": "r", "field": "service"}
    ]
    with pytest.raises(ServiceError) as renamed:
        await services.replace(op, "orders", {"name": "other", "url": "http://o:1"})
    assert [e.pointer for e in renamed.value.errors] == ["#/name"]

    await routes.delete(op, "r")
    await services.delete(op, "orders", if_match=changed.etag)
    actions = [(e.action, e.resource_type) for e in await audit_events(engine)]
    assert actions == [
        ("create", "service"),
        ("create", "route"),
        ("update", "service"),
        ("delete", "route"),
        ("delete", "service"),
    ]


async def test_targets_live_under_a_visible_upstream(
    engine: AsyncEngine, editor: ConfigEditor
) -> None:
    targets = service(TARGETS, editor, engine, nested=True)
    await service(UPSTREAMS, editor, engine).create(
        operation(engine), {"name": "pool", "organization": "org-b", "targets": []}
    )
    await targets.create(operation(engine), {"target": "10.0.0.1:80"}, upstream="pool")
    with pytest.raises(ServiceError) as hidden:
        await targets.list(operation(engine, "org-a"), EntityQuery(limit=5), upstream="pool")
    assert hidden.value.kind is NOT_FOUND
    page = await targets.list(operation(engine), EntityQuery(limit=5), upstream="pool")
    assert [t["target"] for t in page.items] == ["10.0.0.1:80"]


async def test_an_edit_from_1_to_true_is_a_change_that_is_stored(
    engine: AsyncEngine, editor: ConfigEditor
) -> None:
    """`1 == True` in Python, not in JSON: the edit makes a version, and the version read
    back from the store (not the editor's cache) holds `true`."""
    from portcullis.services.entity_kinds import CONSUMERS
    from portcullis.store.config_repository import ConfigRepository

    consumers = service(CONSUMERS, editor, engine)
    op = operation(engine)
    await consumers.create(op, {"username": "meta", "metadata": {"tier": 1}})
    before = (await editor.state()).version
    for value in (True, 1.0, 1):
        edited = await consumers.patch(op, "meta", {"metadata": {"tier": value}})
        assert edited.representation["metadata"] == {"tier": value}
        assert type(edited.representation["metadata"]["tier"]) is type(value)
    assert (await editor.state()).version == before + 3
    for version, value in zip(range(before + 1, before + 4), (True, 1.0, 1), strict=True):
        stored = await ConfigRepository(engine).get(version)
        (meta,) = [c for c in stored.config.consumers if c.username == "meta"]
        assert type(meta.metadata["tier"]) is type(value)
