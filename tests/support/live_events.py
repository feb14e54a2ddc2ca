"""Live-stream test helpers: events recorded as the platform records them, and admin
users signed in on a running control plane (SSE, WebSocket and GraphQL stream tests)."""

from __future__ import annotations

import shutil

import httpx
import pytest

from portcullis.events.bus import Event, record_event
from portcullis.events.catalogue import EventType
from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.store.engine import create_engine, write_transaction
from support.admin_session import TEST_PASSWORD_HASHER
from support.events import sample
from support.postgres import PostgresServer
from support.servers import ControlPlane

PASSWORD = "correct horse battery staple"


STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def module_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of a migrated store of kind `request.param` (see STORES) for a
    module-scoped control plane (fixtures of tests/integration/admin/conftest.py)."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.create_database(
            template=request.getfixturevalue("migrated_postgres_template")
        )
    path = tmp_path_factory.mktemp("store") / "admin.db"
    shutil.copyfile(request.getfixturevalue("migrated_template"), path)
    return f"sqlite+aiosqlite:///{path}"


async def publish(database_url: str, n: int, *, organization_id: str | None = None) -> list[Event]:
    """`n` events, each in its own transaction, as the platform records them."""
    engine = create_engine(database_url)
    events = []
    try:
        for i in range(n):
            async with write_transaction(engine) as conn:
                data = sample(EventType.KEY_CREATED, key_id=f"k{i}")
                events.append(
                    await record_event(
                        conn,
                        EventType.KEY_CREATED,
                        f"key:k{i}",
                        data,
                        organization_id=organization_id,
                    )
                )
    finally:
        await engine.dispose()
    return events


async def signed_in(
    plane: ControlPlane,
    email: str,
    organization_id: str | None = None,
    *,
    role: Role | None = None,
) -> str:
    """An access token of a new admin user (owner; admin of `organization_id` if given)."""
    return await sign_in(plane.url, plane.database_url, email, organization_id, role=role)


async def sign_in(
    url: str,
    database_url: str,
    email: str,
    organization_id: str | None = None,
    *,
    role: Role | None = None,
) -> str:
    """`signed_in` for a control plane known by its URL and store."""
    engine = create_engine(database_url)
    try:
        role = role or (Role.ADMIN if organization_id else Role.OWNER)
        await AuthService(engine, hasher=TEST_PASSWORD_HASHER).create_user(
            email, PASSWORD, role, organization_id
        )
    finally:
        await engine.dispose()
    async with httpx.AsyncClient(base_url=url) as client:
        login = await client.post(
            "/admin/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])
