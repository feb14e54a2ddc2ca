"""OAuth client operations without HTTP: scoping, the token lifetime cap, If-Match, audit."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.oauth_server import OAuthServer
from portcullis.identity.oauth_settings import OAuthServerSettings
from portcullis.identity.secrets import ServerSecret
from portcullis.services.audit import AuditFilter, AuditLog
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.errors import (
    FORBIDDEN,
    NOT_FOUND,
    PRECONDITION_FAILED,
    VALIDATION_FAILED,
    ServiceError,
)
from portcullis.services.oauth_clients import ClientChanges, OAuthClientService, etag_of_client
from portcullis.store.config_repository import ConfigRepository
from support.services import operation as support_operation

# alice (org-a) and bob (org-b) exist.
pytestmark = pytest.mark.usefixtures("with_consumers")
SECRET = ServerSecret.from_secret(b"o" * 32)
T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


# The operations of an admin (limited to an organization or not), request req-3.
operation = functools.partial(support_operation, actor="user:ops@example.com", request_id="req-3")


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
