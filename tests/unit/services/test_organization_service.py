"""Organization operations without HTTP: tenancy, rename relabelling, dependents, If-Match."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.model.loader import load_config_data
from portcullis.services.audit import AuditFilter, AuditLog
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import Operation, RequestFacts
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
from portcullis.services.rbac import ROLE_PERMISSIONS, Caller, Role
from portcullis.services.scoping import OrgScope
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    await upgrade_to_head(url)
    eng = create_engine(url)
    yield eng
    await eng.dispose()


@pytest.fixture
def editor(engine: AsyncEngine) -> ConfigEditor:
    return ConfigEditor(ConfigRepository(engine))


def operation(engine: AsyncEngine, organization: tuple[str, str] | None = None) -> Operation:
    caller = Caller(
        actor="user:owner@example.com",
        role=Role.OWNER,
        permissions=ROLE_PERMISSIONS[Role.OWNER],
        organization_id=None if organization is None else organization[1],
    )
    scope = OrgScope() if organization is None else OrgScope(*organization)
    return Operation.for_caller(caller, RequestFacts("req-9", None), AuditLog(engine), scope)


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
