"""Organization operations without HTTP: tenancy, rename relabelling, dependents, If-Match."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.model.loader import load_config_data
from portcullis.services.audit import AuditFilter, AuditLog
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.errors import (
    ALREADY_EXISTS,
    FORBIDDEN,
    HAS_DEPENDENTS,
    NOT_FOUND,
    PRECONDITION_FAILED,
    ServiceError,
)
from portcullis.services.organizations import OrganizationService
from portcullis.services.preconditions import etag_of
from portcullis.services.rbac import Role
from portcullis.store.config_repository import ConfigRepository
from support.services import migrated_store
from support.services import operation as support_operation

# The operations of an owner (limited to an organization or not), request req-9.
operation = functools.partial(
    support_operation, role=Role.OWNER, actor="user:owner@example.com", request_id="req-9"
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = await migrated_store(tmp_path, organizations=())
    yield eng
    await eng.dispose()


async def test_rename_relabels_entities_in_the_same_change(
    engine: AsyncEngine, editor: ConfigEditor
) -> None:
    orgs = OrganizationService(engine, editor)
    op = operation(engine)
    acme = await orgs.create(op, "acme")
    await ConfigRepository(engine).apply(
        load_config_data({"consumers": [{"username": "c", "organization": "acme"}]}),
        author="test",
        comment=None,
    )

    with pytest.raises(ServiceError) as stale:
        await orgs.rename(op, acme["id"], "acme-2", if_match='"stale"')
    assert stale.value.kind is PRECONDITION_FAILED

    renamed = await orgs.rename(op, acme["id"], "acme-2", if_match=etag_of(acme))
    assert renamed["name"] == "acme-2"
    state = await editor.state()
    assert [c.organization for c in state.config.consumers] == ["acme-2"]
    events = await AuditLog(engine).page(
        AuditFilter(resource_type="organization"), limit=10, before_id=None
    )
    assert [(e.action, e.config_version) for e in events] == [
        ("update", state.version),
        ("create", None),
    ]

    with pytest.raises(ServiceError) as owned:
        await orgs.delete(op, acme["id"])
    assert owned.value.kind is HAS_DEPENDENTS
    assert owned.value.extensions["dependents"] == [{"kind": "consumers", "count": 1}]


async def test_limited_callers_see_only_their_organization(
    engine: AsyncEngine, editor: ConfigEditor
) -> None:
    orgs = OrganizationService(engine, editor)
    everyone = operation(engine)
    a = await orgs.create(everyone, "a")
    b = await orgs.create(everyone, "b")
    with pytest.raises(ServiceError) as taken:
        await orgs.create(everyone, "a")
    assert [e.pointer for e in taken.value.errors] == ["#/name"]
    assert taken.value.kind is ALREADY_EXISTS

    limited = operation(engine, ("a", a["id"]))
    assert [o["name"] for o in await orgs.list(limited)] == ["a"]
    with pytest.raises(ServiceError) as hidden:
        await orgs.get(limited, b["id"])
    assert hidden.value.kind is NOT_FOUND
    with pytest.raises(ServiceError) as refused:
        await orgs.create(limited, "c")
    assert refused.value.kind is FORBIDDEN

    await orgs.delete(everyone, b["id"])
    assert [o["name"] for o in await orgs.list(everyone)] == ["a"]
