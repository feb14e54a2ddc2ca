"""An admin API client signed in as a fresh owner of a running test gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
from argon2 import PasswordHasher

from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.store.engine import create_engine
from support.servers import Gateway

PASSWORD = "correct horse battery staple"
# argon2id at its cheapest (the unit tests' parameters) for admins the tests make in a
# store: the hash carries its parameters, so the server's sign-in check is as cheap
# (argon2-cffi's default costs ~0.18 s of CPU to hash and as much to verify, in the test
# process and the control plane). What the control plane hashes itself keeps the
# production parameters (test_admin_password_hasher checks both).
TEST_PASSWORD_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


async def _create_owner(database_url: str, email: str) -> None:
    engine = create_engine(database_url)
    try:
        await AuthService(engine, hasher=TEST_PASSWORD_HASHER).create_user(
            email, PASSWORD, Role.OWNER
        )
    finally:
        await engine.dispose()


@contextmanager
def signed_in_owner(gw: Gateway, email: str) -> Iterator[httpx.Client]:
    """Create the owner `email` in the gateway's store (from a thread: the caller may run in
    an event loop) and yield a client carrying its access token."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _create_owner(gw.database_url, email)).result()
    with httpx.Client(base_url=gw.admin_url, timeout=10) as client:
        login = client.post("/admin/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        client.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        yield client
