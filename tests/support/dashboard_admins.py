"""Stores and admin users for the dashboard's page and browser tests."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from support.admin_session import PASSWORD, TEST_PASSWORD_HASHER
from support.servers import ControlPlane, control_plane


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run `coroutine` to its end from a thread (the caller may run in an event loop)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


def migrated_store(directory: Path) -> str:
    """The URL of a SQLite store migrated to head in `directory`."""
    url = f"sqlite+aiosqlite:///{directory / 'admin.db'}"
    _run(upgrade_to_head(url))
    return url


async def _create_admin(database_url: str, email: str, role: Role) -> None:
    engine = create_engine(database_url)
    try:
        await AuthService(engine, hasher=TEST_PASSWORD_HASHER).create_user(email, PASSWORD, role)
    finally:
        await engine.dispose()


def create_admin(database_url: str, email: str, role: Role) -> None:
    """An admin user `email` with `role` and the tests' password (`PASSWORD`)."""
    _run(_create_admin(database_url, email, role))


@contextmanager
def admin_api(url: str, email: str) -> Iterator[httpx.Client]:
    """The REST API as the admin `email`, with a service and a route `orders` to work on."""
    with httpx.Client(base_url=url, timeout=10) as client:
        login = client.post("/admin/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        client.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        service = {"name": "orders", "url": "http://127.0.0.1:9/"}
        assert client.post("/admin/v1/services", json=service).status_code == 201
        route = {"name": "orders", "service": "orders", "paths": ["/orders"]}
        assert client.post("/admin/v1/routes", json=route).status_code == 201
        yield client


@contextmanager
def plane_with_admins(
    directory: Path, admins: dict[str, Role], env: dict[str, str] | None = None
) -> Iterator[ControlPlane]:
    """A control plane (with `env`) on a fresh store in `directory` holding `admins`
    (email: role)."""
    database_url = migrated_store(directory)
    for email, role in admins.items():
        create_admin(database_url, email, role)
    with control_plane(database_url, env=env) as cp:
        yield cp
