"""OAuth client operations without HTTP: scoping, the token lifetime cap, If-Match, audit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.oauth_server import OAuthServer
from portcullis.identity.oauth_settings import OAuthServerSettings
from portcullis.identity.secrets import ServerSecret
from portcullis.services.audit import AuditFilter, AuditLog
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import Operation, RequestFacts
from portcullis.services.errors import (
    FORBIDDEN,
    NOT_FOUND,
    PRECONDITION_FAILED,
    VALIDATION_FAILED,
    ServiceError,
)
from portcullis.services.oauth_clients import ClientChanges, OAuthClientService, etag_of_client
from portcullis.services.rbac import ROLE_PERMISSIONS, Caller, Role
from portcullis.services.scoping import OrgScope
from portcullis.store.config_repository import ConfigRepository

SECRET = ServerSecret.from_secret(b"o" * 32)
T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clients(engine: AsyncEngine) -> OAuthClientService:
    editor = ConfigEditor(ConfigRepository(engine))

    async def no_consumer(username: str) -> None:
        return None

    server = OAuthServer(
        engine,
        SECRET,
        issuer="http://admin.test",
        settings=OAuthServerSettings(max_token_ttl=7200),
        consumer_lookup=no_consumer,
    )
    return OAuthClientService(server, editor)


def operation(engine: AsyncEngine, organization: str | None = None) -> Operation:
    caller = Caller(
        actor="user:ops@example.com",
        role=Role.ADMIN,
        permissions=ROLE_PERMISSIONS[Role.ADMIN],
        organization_id=None if organization is None else f"id-{organization}",
    )
    scope = OrgScope() if organization is None else OrgScope(organization, f"id-{organization}")
    return Operation.for_caller(caller, RequestFacts("req-3", None), AuditLog(engine), scope)


async def test_clients_are_scoped_capped_and_audited_without_secrets(
    clients: OAuthClientService, engine: AsyncEngine
) -> None:
    everyone, limited = operation(engine), operation(engine, "org-a")
    with pytest.raises(ServiceError) as too_long:
        await clients.create(everyone, "alice", name="app", allowed_scopes=[], token_ttl=9000)
    assert too_long.value.kind is VALIDATION_FAILED
    assert [e.pointer for e in too_long.value.errors] == ["#/token_ttl"]

    theirs, _ = await clients.create(
        everyone, "bob", name="b", allowed_scopes=["x", "x"], token_ttl=60
    )
    assert list(theirs.allowed_scopes) == ["x"]
    mine, secret = await clients.create(limited, "alice", name="a", allowed_scopes=[], token_ttl=60)
    for hidden in (
        clients.get(limited, theirs.client_id),
        clients.delete(limited, theirs.client_id),
        clients.create(limited, "bob", name="n", allowed_scopes=[], token_ttl=60),
    ):
        with pytest.raises(ServiceError) as refused:
            await hidden
        assert refused.value.kind is NOT_FOUND
    with pytest.raises(ServiceError) as signing:
        await clients.rotate_signing_key(limited)
    assert signing.value.kind is FORBIDDEN

    with pytest.raises(ServiceError) as stale:
        await clients.update(limited, mine.client_id, ClientChanges(name="x"), if_match='"old"')
    assert stale.value.kind is PRECONDITION_FAILED
    renamed = await clients.update(
        limited, mine.client_id, ClientChanges(name="x"), if_match=etag_of_client(mine)
    )
    assert renamed.name == "x"

    events = await AuditLog(engine).page(AuditFilter(), limit=10, before_id=None)
    assert [(e.action, e.resource_id) for e in reversed(events)] == [
        ("create", theirs.client_id),
        ("create", mine.client_id),
        ("update", mine.client_id),
    ]
    assert secret not in str([e.diff for e in events])
