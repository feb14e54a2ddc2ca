"""Stores and admin users for the dashboard's page and browser tests."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from support.admin_session import PASSWORD, TEST_PASSWORD_HASHER


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
