"""Admin passwords are argon2id hashes with the production parameters unless an
in-process app is given a hasher (the admin tests' cheap one)."""

from __future__ import annotations

import httpx
import pytest
from admin_support import PASSWORD, TEST_PASSWORD_HASHER
from fastapi import FastAPI
from sqlalchemy import select

from portcullis.admin.app import create_admin_app
from portcullis.services.rbac import Role
from portcullis.settings import Settings
from portcullis.store.admin_tables import AdminUserRow


async def stored_hash(app: FastAPI, email: str) -> str:
    async with app.state.admin.engine.connect() as conn:
        found = await conn.scalar(
            select(AdminUserRow.password_hash).where(AdminUserRow.email == email)
        )
    assert isinstance(found, str)
    return found


@pytest.mark.parametrize(
    ("hasher", "parameters"),
    [
        ("production", "$argon2id$v=19$m=65536,t=3,p=4$"),
        ("tests", "$argon2id$v=19$m=1024,t=1,p=1$"),
    ],
)
async def test_stored_hashes_have_the_hashers_parameters_and_sign_in(
    database_url: str, hasher: str, parameters: str
) -> None:
    settings = Settings(database_url=database_url, log_json=False)
    app = (
        create_admin_app(settings)
        if hasher == "production"
        else create_admin_app(settings, password_hasher=TEST_PASSWORD_HASHER)
    )
    async with app.router.lifespan_context(app):
        await app.state.authenticator.create_user("u@example.com", PASSWORD, Role.VIEWER)
        assert (await stored_hash(app, "u@example.com")).startswith(parameters)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            login = await client.post(
                "/admin/v1/auth/login", json={"email": "u@example.com", "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            wrong = await client.post(
                "/admin/v1/auth/login", json={"email": "u@example.com", "password": "nope"}
            )
            assert wrong.status_code == 401, wrong.text
