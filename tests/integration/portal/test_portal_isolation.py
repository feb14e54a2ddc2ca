"""The IDOR matrix: a developer of team B against every portal service method that names
team A's things (its team, application, keys, OAuth clients), on a real store (SQLite
and PostgreSQL). Each is refused as "not found" and the store is left as it was; lists
never show A's rows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.services.errors import NOT_FOUND, ServiceError
from portcullis.store.admin_tables import OrganizationRow
from portcullis.store.config_head import ConfigHeadRow
from portcullis.store.engine import write_transaction
from portcullis.store.identity_tables import ApiKeyRow, OAuthClientRow
from portcullis.store.portal_tables import (
    AccessRequestRow,
    ApplicationRow,
    TeamMemberRow,
    TeamRow,
)
from support.portal import CATALOGUE, Portal, build, developer
from support.services import apply_config

WHEN = datetime(2030, 1, 1, tzinfo=UTC)
Attempt = Callable[[], Awaitable[Any]]


async def _snapshot(engine: AsyncEngine) -> list[Any]:
    """Everything a portal write could change, as plain tuples."""
    tables = (
        ApplicationRow,
        AccessRequestRow,
        TeamRow,
        TeamMemberRow,
        ApiKeyRow,
        OAuthClientRow,
        ConfigHeadRow,
    )
    out = []
    async with engine.connect() as conn:
        for table in tables:
            rows = (await conn.execute(select(table))).all()
            out.append(sorted(tuple(map(str, r)) for r in rows))
    return out


@pytest.fixture
async def portal(engine: AsyncEngine) -> Portal:
    async with write_transaction(engine) as conn:
        await conn.execute(
            insert(OrganizationRow).values(
                id="id-org-a", name="org-a", created_at=WHEN, updated_at=WHEN
            )
        )
    await apply_config(engine, CATALOGUE)
    return build(engine)


async def test_team_b_reaches_nothing_of_team_a(portal: Portal, engine: AsyncEngine) -> None:
    a = await developer(portal, "a@example.com")
    b = await developer(portal, "b@example.com")
    (team_a,) = await portal.accounts.teams(a)
    (team_b,) = await portal.accounts.teams(b)
    app_a = await portal.apps.create_application(a, team_a.id, "a-app")
    await portal.apps.request_access(a, app_a.id, "petstore")
    key_a = await portal.apps.create_key(a, app_a.id, "sandbox", "k")
    client_a, _ = await portal.apps.create_oauth_client(a, app_a.id, "c")
    app_b = await portal.apps.create_application(b, team_b.id, "b-app")
    await portal.apps.request_access(b, app_b.id, "petstore")

    apps, accounts = portal.apps, portal.accounts
    attempts: dict[str, Attempt] = {
        # read
        "get_application": lambda: apps.get_application(b, app_a.id),
        "access_requests": lambda: apps.access_requests(b, app_a.id),
        "list_keys": lambda: apps.list_keys(b, app_a.id),
        "list_oauth_clients": lambda: apps.list_oauth_clients(b, app_a.id),
        "members": lambda: accounts.members(b, team_a.id),
        # write, naming A's application or team
        "create_application": lambda: apps.create_application(b, team_a.id, "intruder"),
        "request_access": lambda: apps.request_access(b, app_a.id, "billing"),
        "create_key": lambda: apps.create_key(b, app_a.id, "production", "x"),
        "rotate_key": lambda: apps.rotate_key(b, app_a.id, key_a.info.id, grace_seconds=0),
        "revoke_key": lambda: apps.revoke_key(b, app_a.id, key_a.info.id),
        "create_oauth_client": lambda: apps.create_oauth_client(b, app_a.id, "x"),
        "rotate_oauth_secret": lambda: apps.rotate_oauth_secret(b, app_a.id, client_a.client_id),
        "delete_oauth_client": lambda: apps.delete_oauth_client(b, app_a.id, client_a.client_id),
        "add_member": lambda: accounts.add_member(b, team_a.id, "b@example.com"),
        "remove_member": lambda: accounts.remove_member(b, team_a.id, a.developer.id),
        # write through B's own application, naming A's key or client
        "rotate_key_via_own_app": lambda: apps.rotate_key(
            b, app_b.id, key_a.info.id, grace_seconds=0
        ),
        "revoke_key_via_own_app": lambda: apps.revoke_key(b, app_b.id, key_a.info.id),
        "rotate_secret_via_own_app": lambda: apps.rotate_oauth_secret(
            b, app_b.id, client_a.client_id
        ),
        "delete_client_via_own_app": lambda: apps.delete_oauth_client(
            b, app_b.id, client_a.client_id
        ),
    }
    before = await _snapshot(engine)
    leaks = []
    for name, attempt in attempts.items():
        try:
            await attempt()
        except ServiceError as exc:
            if exc.kind is not NOT_FOUND:
                leaks.append(f"{name}: {exc.kind.slug} {exc}")
        else:
            leaks.append(f"{name}: allowed")
    assert not leaks, "\n".join(leaks)
    assert await _snapshot(engine) == before

    # Lists show B only B's things.
    assert [x.id for x in await apps.list_applications(b)] == [app_b.id]
    assert [t.id for t in await accounts.teams(b)] == [team_b.id]
    assert [c.application_id for c in await apps.consumers_of(b.developer)] == [app_b.id]
    assert [k.consumer for k in await apps.list_keys(b, app_b.id)] == []
    assert await apps.list_oauth_clients(b, app_b.id) == []
    # And A still has all of theirs.
    assert [k.id for k in await apps.list_keys(a, app_a.id)] == [key_a.info.id]
