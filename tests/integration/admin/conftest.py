"""Fixtures: a migrated temp SQLite store, the admin app on it, and clients per role."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from admin_support import PASSWORD, TEST_PASSWORD_HASHER, ClientFactory
from fastapi import FastAPI

from portcullis.admin.app import create_admin_app
from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.settings import Settings
from portcullis.store.migrations import upgrade_to_head
from support.postgres import PostgresServer
from support.redis import RedisServer, running_redis

# Makes a signed-in client for a new user of a role (optionally limited to an organization id).


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_stores` run on a PostgreSQL store as well as on SQLite."""
    if "store" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_stores"):
        postgres = pytest.param("postgresql", marks=pytest.mark.postgres)
        metafunc.parametrize("store", ["sqlite", postgres], indirect=True)


@pytest.fixture
def store(request: pytest.FixtureRequest) -> str:
    """The store backend of this test: SQLite unless the test is marked `both_stores`."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store migrated once per session; each test gets a copy (migrating takes a second)."""
    path = tmp_path_factory.mktemp("template") / "admin.db"
    asyncio.run(upgrade_to_head(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def migrated_postgres_template(postgres_server: PostgresServer) -> str:
    """A PostgreSQL database migrated once per session, for `createdb -T` copies."""
    name = f"admin_template_{os.getpid()}"
    asyncio.run(upgrade_to_head(postgres_server.create_database(name)))
    return name


@pytest.fixture
def database_url(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated store of its own for each test: a copy of the session's template."""
    if store == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        template: str = request.getfixturevalue("migrated_postgres_template")
        return server.create_database(template=template)
    migrated_template: Path = request.getfixturevalue("migrated_template")
    path = tmp_path / "admin.db"
    shutil.copyfile(migrated_template, path)
    for suffix in ("-wal", "-shm"):
        extra = migrated_template.with_name(migrated_template.name + suffix)
        if extra.exists():
            shutil.copyfile(extra, path.with_name(path.name + suffix))
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    application = create_admin_app(
        Settings(database_url=database_url, log_json=False), password_hasher=TEST_PASSWORD_HASHER
    )
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def auth(app: FastAPI) -> AuthService:
    service: AuthService = app.state.authenticator
    return service


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        yield client


@pytest.fixture
async def client_for(app: FastAPI, auth: AuthService) -> AsyncIterator[ClientFactory]:
    """Makes a client signed in (via the login endpoint) as a new user of the given role."""
    clients: list[httpx.AsyncClient] = []

    async def make(role: Role, organization_id: str | None = None) -> httpx.AsyncClient:
        email = f"{role.value}-{len(clients)}@example.com"
        await auth.create_user(email, PASSWORD, role, organization_id)
        transport = httpx.ASGITransport(app=app, client=("198.51.100.8", 40000))
        client = httpx.AsyncClient(transport=transport, base_url="http://admin")
        clients.append(client)
        response = await client.post(
            "/admin/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        client.headers["authorization"] = f"Bearer {response.json()['access_token']}"
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def owner(client_for: ClientFactory) -> httpx.AsyncClient:
    return await client_for(Role.OWNER)


@pytest.fixture
async def orgs(owner: httpx.AsyncClient) -> dict[str, str]:
    """Organizations "acme" and "globex", by name: their ids."""
    ids = {}
    for name in ("acme", "globex"):
        created = await owner.post("/admin/v1/organizations", json={"name": name})
        assert created.status_code == 201, created.text
        ids[name] = created.json()["id"]
    return ids


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A Redis of the module's own (the session's is shared): tests that count its
    pub/sub subscriptions, or time messages through it."""
    with running_redis() as server:
        yield server
