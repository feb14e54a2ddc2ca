"""Reading the audit log without HTTP: a limited caller reads only its organization's
events; a page fetches one more event than asked for to tell there is a next one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.services.analytics import UsageQuery
from portcullis.services.audit import AuditLog
from portcullis.services.audit_events import AuditEventService, AuditListQuery
from support.services import operation


async def test_a_limited_caller_reads_only_its_organizations_audit_events(
    engine: AsyncEngine,
) -> None:
    await operation(engine, "org-a").record("touch", "thing", "a")
    await operation(engine, "org-b").record("touch", "thing", "b")
    events = AuditEventService(AuditLog(engine))
    mine = await events.page(operation(engine, "org-a"), AuditListQuery())
    assert [e.resource_id for e in mine] == ["a"]
    every = [e.resource_id async for e in events.stream(operation(engine), AuditListQuery())]
    assert every == ["a", "b"]
    assert len(await events.page(operation(engine), AuditListQuery(limit=1))) == 2


def test_times_are_rfc3339_not_unix_numbers() -> None:
    with pytest.raises(ValidationError, match="RFC 3339"):
        AuditListQuery.model_validate({"since": "1700000000"})
    with pytest.raises(ValidationError, match="RFC 3339"):
        UsageQuery.model_validate({"start": 1700000000})
    assert AuditListQuery.model_validate({"since": "2030-01-31T12:00:00Z"}).since is not None
