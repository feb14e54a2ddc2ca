"""Whole-config operations without HTTP: what a limited caller may see and do, If-Match,
audit only when a version was stored, rollback and history."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.services.config import ConfigService, config_etag
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.errors import (
    FORBIDDEN,
    INVALID_CURSOR,
    NOT_FOUND,
    PRECONDITION_FAILED,
    ServiceError,
)
from support.services import apply_config, audit_events, operation

CONFIG: dict[str, Any] = {
    "consumers": [
        {"username": "alice", "organization": "org-a"},
        {"username": "bob", "organization": "org-b"},
    ]
}
NEXT: dict[str, Any] = {"consumers": [*CONFIG["consumers"], {"username": "carol"}]}


def document(data: dict[str, Any]) -> Any:
    async def read() -> dict[str, Any]:
        return data

    return read


async def never_read() -> Any:
    raise AssertionError("the document was read for a caller who may not import")


@pytest.fixture
async def service(engine: AsyncEngine, editor: ConfigEditor) -> ConfigService:
    await apply_config(engine, CONFIG)
    return ConfigService(editor)


async def test_a_limited_caller_exports_only_its_organization_and_nothing_else(
    engine: AsyncEngine, service: ConfigService
) -> None:
    limited = operation(engine, "org-a")
    export = await service.export(limited)
    assert [c.username for c in export.config.consumers] == ["alice"]
    full = await service.export(operation(engine))
    assert [c.username for c in full.config.consumers] == ["alice", "bob"]
    assert export.etag != full.etag
    assert export.version == full.version == 1

    refusals = [
        service.apply(limited, never_read, comment=None, if_match=None),
        service.diff(limited, never_read),
        service.versions(limited, 10, "not-a-cursor"),
        service.version(limited, 1),
        service.rollback(limited, 1, if_match=None),
    ]
    for call in refusals:
        with pytest.raises(ServiceError) as refusal:
            await call
        assert refusal.value.kind is FORBIDDEN


async def test_apply_checks_if_match_and_audits_only_a_stored_version(
    engine: AsyncEngine, editor: ConfigEditor, service: ConfigService
) -> None:
    op = operation(engine)
    with pytest.raises(ServiceError) as stale:
        await service.apply(op, document(NEXT), comment=None, if_match='"stale"')
    assert stale.value.kind is PRECONDITION_FAILED
    assert (await editor.state()).version == 1

    current = config_etag(await editor.state())
    stored = await service.apply(op, document(NEXT), comment="add carol", if_match=current)
    assert (stored.version, stored.created, stored.comment) == (2, True, "add carol")
    again = await service.apply(op, document(NEXT), comment=None, if_match=None)
    assert (again.version, again.created) == (2, False)
    events = await audit_events(engine)
    assert [(e.action, e.resource_id, e.config_version) for e in events] == [("apply", "2", 2)]
    assert (await service.diff(op, document(CONFIG))).summary() != ""


async def test_rollback_and_history(engine: AsyncEngine, service: ConfigService) -> None:
    op = operation(engine)
    await service.apply(op, document(NEXT), comment=None, if_match=None)
    with pytest.raises(ServiceError) as missing:
        await service.rollback(op, 9, if_match=None)
    assert (missing.value.kind, missing.value.target) == (NOT_FOUND, "version")
    restored = await service.rollback(op, 1, if_match=None)
    assert (restored.version, restored.source_version) == (3, 1)
    assert [v.version for v in await service.versions(op, 10, None)] == [3, 2, 1]
    assert [v.version for v in await service.versions(op, 10, "3")] == [2, 1]
    with pytest.raises(ServiceError) as cursor:
        await service.versions(op, 10, "not-a-cursor")
    assert cursor.value.kind is INVALID_CURSOR
    assert [e.action for e in await audit_events(engine)] == ["apply", "rollback"]
