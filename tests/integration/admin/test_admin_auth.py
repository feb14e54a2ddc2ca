"""Admin authentication: bootstrap, login, refresh rotation and reuse, logout, lockout, tokens."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from admin_support import PASSWORD
from fastapi import FastAPI
from sqlalchemy import select, update
from typer.testing import CliRunner

from portcullis.admin.app import create_admin_app
from portcullis.services.admin_auth import SIGNING_KEY_NAME, AuthService
from portcullis.services.rbac import Role
from portcullis.services.state import AdminState
from portcullis.settings import Settings
from portcullis.store.admin_tables import AdminSecretRow, ApiTokenRow
from portcullis.store.engine import create_engine, write_transaction


def bootstrap_token(stderr: str) -> str:
    return next(w for w in stderr.split() if w.startswith("pcb_"))


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/admin/v1/auth/login", json={"email": email, "password": password})


async def test_no_default_credentials_and_bootstrap_creates_first_owner(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_admin_app(Settings(database_url=database_url))
    async with app.router.lifespan_context(app):
        token = bootstrap_token(capsys.readouterr().err)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            for email, password in (("admin@example.com", "admin"), ("admin", "password")):
                assert (await login(client, email, password)).status_code in (401, 422)
            client.headers["authorization"] = f"Bearer {token}"
            # The bootstrap token can create the first owner and nothing else.
            assert (await client.get("/admin/v1/services")).status_code == 403
            viewer = await client.post(
                "/admin/v1/admin-users",
                json={"email": "v@example.com", "password": PASSWORD, "role": "viewer"},
            )
            assert viewer.status_code == 403
            created = await client.post(
                "/admin/v1/admin-users",
                json={"email": "Boss@Example.com", "password": PASSWORD, "role": "owner"},
            )
            assert created.status_code == 201, created.text
            assert created.json()["email"] == "boss@example.com"
            # Spent: once an admin user exists the bootstrap token is dead.
            again = await client.post(
                "/admin/v1/admin-users",
                json={"email": "b2@example.com", "password": PASSWORD, "role": "owner"},
            )
            assert again.status_code == 401
            del client.headers["authorization"]
            assert (await login(client, "boss@example.com")).status_code == 200
    # A restart with a user present prints no new token.
    app2 = create_admin_app(Settings(database_url=database_url))
    async with app2.router.lifespan_context(app2):
        assert "pcb_" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:18431"),
        ("0.0.0.0", "http://127.0.0.1:18431"),
        ("::", "http://[::1]:18431"),
        ("admin.internal", "http://admin.internal:18431"),
    ],
)
async def test_the_bootstrap_message_names_the_real_admin_url(
    database_url: str, capsys: pytest.CaptureFixture[str], host: str, url: str
) -> None:
    settings = Settings(database_url=database_url, admin_host=host, admin_port=18431)
    app = create_admin_app(settings)
    async with app.router.lifespan_context(app):
        err = capsys.readouterr().err
    assert "<admin-host>" not in err
    assert f"curl -X POST {url}/admin/v1/admin-users " in err


async def test_access_token_is_a_short_lived_jwt(
    anonymous: httpx.AsyncClient, auth: AuthService
) -> None:
    await auth.create_user("ops@example.com", PASSWORD, Role.OPERATOR)
    response = await login(anonymous, "OPS@example.com")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    header = jwt.get_unverified_header(body["access_token"])
    assert header == {"alg": "HS256", "typ": "at+jwt"}
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 900
    assert claims["role"] == "operator"
    me = await anonymous.get(
        "/admin/v1/auth/me", headers={"authorization": f"Bearer {body['access_token']}"}
    )
    assert me.json()["role"] == "operator"
    forged = jwt.encode({**claims, "role": "owner"}, "k" * 48, algorithm="HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")
    for token in (forged, unsigned, body["access_token"] + "x"):
        bad = await anonymous.get("/admin/v1/auth/me", headers={"authorization": f"Bearer {token}"})
        assert bad.status_code == 401


async def test_refresh_rotates_and_reuse_revokes_the_family(
    anonymous: httpx.AsyncClient, auth: AuthService
) -> None:
    await auth.create_user("ops@example.com", PASSWORD, Role.OPERATOR)
    first = (await login(anonymous, "ops@example.com")).json()
    rotated = await anonymous.post(
        "/admin/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    me = {"authorization": f"Bearer {second['access_token']}"}
    assert (await anonymous.get("/admin/v1/auth/me", headers=me)).status_code == 200
    # The old refresh token again: theft is assumed, the whole session ends.
    reused = await anonymous.post(
        "/admin/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert reused.status_code == 401
    assert "revoked" in reused.json()["detail"]
    after = await anonymous.post(
        "/admin/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert after.status_code == 401
    assert (await anonymous.get("/admin/v1/auth/me", headers=me)).status_code == 401


async def test_logout_revokes_the_session(anonymous: httpx.AsyncClient, auth: AuthService) -> None:
    await auth.create_user("ops@example.com", PASSWORD, Role.OPERATOR)
    pair = (await login(anonymous, "ops@example.com")).json()
    me = {"authorization": f"Bearer {pair['access_token']}"}
    out = await anonymous.post(
        "/admin/v1/auth/logout", json={"refresh_token": pair["refresh_token"]}
    )
    assert out.status_code == 204
    assert (await anonymous.get("/admin/v1/auth/me", headers=me)).status_code == 401
    refreshed = await anonymous.post(
        "/admin/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert refreshed.status_code == 401


async def test_account_lockout_after_repeated_failures(
    anonymous: httpx.AsyncClient, auth: AuthService
) -> None:
    await auth.create_user("ops@example.com", PASSWORD, Role.OPERATOR)
    for _ in range(auth.max_failures):
        failed = await login(anonymous, "ops@example.com", "wrong password!")
        assert failed.status_code == 401
        assert failed.json()["detail"] == "invalid email or password"
    locked = await login(anonymous, "ops@example.com")  # even the right password
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    assert "locked" in locked.json()["detail"]


async def test_per_ip_limit_spans_accounts(app: FastAPI, auth: AuthService) -> None:
    limited = AuthService(auth._engine, secret=app.state.admin.secret, ip_max_failures=3)
    await limited.start()
    app.state.authenticator = limited
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        for i in range(3):
            assert (await login(client, f"nobody{i}@example.com")).status_code == 401
        blocked = await login(client, "nobody9@example.com")
        assert blocked.status_code == 429
        assert "address" in blocked.json()["detail"]


async def test_api_tokens_are_shown_once_hashed_expiring_and_revocable(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    created = await owner.post(
        "/admin/v1/tokens", json={"name": "deploy", "scopes": ["config:read", "config:write"]}
    )
    assert created.status_code == 201, created.text
    secret = created.json()["token"]
    token_id = created.json()["id"]
    assert secret.startswith("pca_")
    listed = (await owner.get("/admin/v1/tokens")).json()["items"]
    assert [t["id"] for t in listed] == [token_id]
    assert "token" not in listed[0]
    state: AdminState = app.state.admin
    async with state.engine.connect() as conn:
        stored = (await conn.execute(select(ApiTokenRow.token_hash))).scalars().all()
    assert stored == [hashlib.sha256(secret.encode()).hexdigest()]

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as bot:
        bot.headers["authorization"] = f"Bearer {secret}"
        assert (await bot.post("/admin/v1/consumers", json={"username": "a"})).status_code == 201
        async with state.engine.begin() as conn:
            await conn.execute(
                update(ApiTokenRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        assert (await bot.get("/admin/v1/services")).status_code == 401
        async with state.engine.begin() as conn:
            await conn.execute(update(ApiTokenRow).values(expires_at=None))
        assert (await bot.get("/admin/v1/services")).status_code == 200
        assert (await owner.delete(f"/admin/v1/tokens/{token_id}")).status_code == 204
        assert (await bot.get("/admin/v1/services")).status_code == 401
    assert (await owner.delete("/admin/v1/tokens/unknown")).status_code == 404


async def test_owners_manage_other_owners(owner: httpx.AsyncClient, auth: AuthService) -> None:
    other = await auth.create_user("other@example.com", PASSWORD, Role.OWNER)
    demoted = await owner.patch(f"/admin/v1/admin-users/{other.id}", json={"role": "admin"})
    assert demoted.status_code == 200, demoted.text
    assert demoted.json()["role"] == "admin"
    etag = demoted.headers["etag"]
    stale = await owner.delete(f"/admin/v1/admin-users/{other.id}", headers={"If-Match": '"x"'})
    assert stale.status_code == 412
    gone = await owner.delete(f"/admin/v1/admin-users/{other.id}", headers={"If-Match": etag})
    assert gone.status_code == 204
    assert (await owner.get(f"/admin/v1/admin-users/{other.id}")).status_code == 404


async def test_nobody_changes_their_own_access(owner: httpx.AsyncClient) -> None:
    me = (await owner.get("/admin/v1/auth/me")).json()
    org = (await owner.post("/admin/v1/organizations", json={"name": "o"})).json()["id"]
    for change in ({"role": "viewer"}, {"disabled": True}, {"organization_id": org}):
        response = await owner.patch(f"/admin/v1/admin-users/{me['user_id']}", json=change)
        assert response.status_code == 409, change
        assert response.json()["type"].endswith("/self-change")
    # Your own password changes only with the current one (POST /auth/password).
    password = await owner.patch(
        f"/admin/v1/admin-users/{me['user_id']}", json={"password": "a brand new password"}
    )
    assert password.status_code == 409
    assert "/admin/v1/auth/password" in password.json()["detail"]


async def test_disabling_a_user_ends_their_access(
    owner: httpx.AsyncClient,
    client_for,
    app: FastAPI,  # type: ignore[no-untyped-def]
) -> None:
    viewer: httpx.AsyncClient = await client_for(Role.VIEWER)
    me = (await viewer.get("/admin/v1/auth/me")).json()
    disabled = await owner.patch(f"/admin/v1/admin-users/{me['user_id']}", json={"disabled": True})
    assert disabled.status_code == 200, disabled.text
    assert (await viewer.get("/admin/v1/services")).status_code == 401


def test_cli_creates_an_owner(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    from portcullis.commands.admin import register_admin

    cli = typer.Typer()
    register_admin(cli)

    @cli.callback()
    def _root() -> None:
        """Root (so `admin` stays a sub-command)."""

    monkeypatch.setenv("PORTCULLIS_DATABASE_URL", database_url)
    result = CliRunner().invoke(
        cli,
        ["admin", "create", "--email", "first@example.com", "--role", "owner", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    assert "created owner first@example.com" in result.output
    assert asyncio.run(_users(database_url)) == [("first@example.com", "owner")]
    short = CliRunner().invoke(
        cli, ["admin", "create", "--email", "x@example.com", "--password-stdin"], input="short\n"
    )
    assert short.exit_code != 0


async def _users(database_url: str) -> list[tuple[str, str]]:
    from portcullis.store.engine import create_engine

    engine = create_engine(database_url)
    try:
        users = await AuthService(engine).list_users()
    finally:
        await engine.dispose()
    return [(u.email, u.role.value) for u in users]


async def _stored_signing_key(app: FastAPI) -> str:
    state: AdminState = app.state.admin
    query = select(AdminSecretRow.value).where(AdminSecretRow.name == SIGNING_KEY_NAME)
    async with state.engine.connect() as conn:
        value = await conn.scalar(query)
    assert value is not None
    return str(value)


def _verifies(access_token: str, key: str) -> bool:
    try:
        jwt.decode(access_token, key, algorithms=["HS256"], audience="portcullis-admin")
    except jwt.InvalidSignatureError:
        return False
    return True


async def test_the_signing_key_is_sealed_with_the_deployment_secret(
    app: FastAPI, owner: httpx.AsyncClient
) -> None:
    access_token = owner.headers["authorization"].removeprefix("Bearer ")
    stored = await _stored_signing_key(app)
    # A copy of the store alone does not let anyone mint access tokens.
    assert not _verifies(access_token, stored)
    state: AdminState = app.state.admin
    sealed = base64.b64decode(stored.removeprefix("aesgcm:"))
    key = state.secret.decrypt(sealed, context=f"admin-secret:{SIGNING_KEY_NAME}".encode())
    assert _verifies(access_token, key.decode())


async def test_a_signing_key_stored_in_clear_is_sealed_at_start_and_sessions_survive(
    database_url: str,
) -> None:
    clear = "an-old-clear-signing-key-" + "x" * 40
    engine = create_engine(database_url)
    try:
        user = await AuthService(engine).create_user("old@example.com", PASSWORD, Role.OWNER)
        async with write_transaction(engine) as conn:
            await conn.execute(
                AdminSecretRow.__table__.insert().values(
                    name=SIGNING_KEY_NAME, value=clear, created_at=datetime.now(UTC)
                )
            )
    finally:
        await engine.dispose()
    now = int(datetime.now(UTC).timestamp())
    # An access token an earlier version issued with the clear key.
    claims = {"iss": "portcullis-admin", "aud": "portcullis-admin", "sub": user.id}
    claims |= {"role": "owner", "sid": str(uuid.uuid4()), "iat": now, "exp": now + 600}
    earlier = jwt.encode(claims, clear, algorithm="HS256", headers={"typ": "at+jwt"})
    app = create_admin_app(Settings(database_url=database_url))
    async with app.router.lifespan_context(app):
        assert await _stored_signing_key(app) != clear
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            me = await client.get(
                "/admin/v1/auth/me", headers={"authorization": f"Bearer {earlier}"}
            )
            assert me.status_code == 200, me.text
            assert me.json()["user_id"] == user.id


async def _api_token(client: httpx.AsyncClient) -> str:
    created = await client.post(
        "/admin/v1/tokens", json={"name": "ci", "scopes": ["config:read"], "expires_in": 3600}
    )
    assert created.status_code == 201, created.text
    return str(created.json()["token"])


async def test_a_password_reset_revokes_the_users_api_tokens_and_sessions(
    app: FastAPI, owner: httpx.AsyncClient, client_for
) -> None:  # type: ignore[no-untyped-def]
    operator: httpx.AsyncClient = await client_for(Role.OPERATOR)
    me = (await operator.get("/admin/v1/auth/me")).json()
    token = {"authorization": f"Bearer {await _api_token(operator)}"}
    assert (await operator.get("/admin/v1/services", headers=token)).status_code == 200
    reset = await owner.patch(
        f"/admin/v1/admin-users/{me['user_id']}", json={"password": "a reset password!"}
    )
    assert reset.status_code == 200, reset.text
    assert (await operator.get("/admin/v1/services", headers=token)).status_code == 401
    assert (await operator.get("/admin/v1/auth/me")).status_code == 401
    [listed] = (await owner.get("/admin/v1/tokens")).json()["items"]
    assert listed["revoked_at"] is not None
    # The owner's own session and tokens are untouched.
    assert (await owner.get("/admin/v1/auth/me")).status_code == 200


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.OWNER])
async def test_every_user_changes_their_own_password_with_the_current_one(
    anonymous: httpx.AsyncClient, auth: AuthService, client_for, role: Role
) -> None:  # type: ignore[no-untyped-def]
    user: httpx.AsyncClient = await client_for(role)
    email = (await user.get("/admin/v1/auth/me")).json()["actor"].removeprefix("user:")
    other = (await login(anonymous, email)).json()  # a second session of the same user
    tokens = [] if role is Role.VIEWER else [await _api_token(user)]
    wrong = await user.post(
        "/admin/v1/auth/password",
        json={"current_password": "not the password", "new_password": "a brand new password"},
    )
    assert wrong.status_code == 422, wrong.text
    assert [e["pointer"] for e in wrong.json()["errors"]] == ["#/current_password"]
    changed = await user.post(
        "/admin/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "a brand new password"},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"api_tokens_revoked": len(tokens), "sessions_ended": 1}
    # This session goes on; the other one and the API tokens are over.
    assert (await user.get("/admin/v1/auth/me")).status_code == 200
    ended = {"authorization": f"Bearer {other['access_token']}"}
    assert (await anonymous.get("/admin/v1/auth/me", headers=ended)).status_code == 401
    for token in tokens:
        revoked = {"authorization": f"Bearer {token}"}
        assert (await anonymous.get("/admin/v1/services", headers=revoked)).status_code == 401
    assert (await login(anonymous, email)).status_code == 401
    assert (await login(anonymous, email, "a brand new password")).status_code == 200


async def test_own_password_change_needs_a_login_session(
    owner: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    token = {"authorization": f"Bearer {await _api_token(owner)}"}
    body = {"current_password": PASSWORD, "new_password": "a brand new password"}
    by_token = await anonymous.post("/admin/v1/auth/password", json=body, headers=token)
    assert by_token.status_code == 403


async def test_concurrent_changes_of_one_password_let_one_win(
    anonymous: httpx.AsyncClient, client_for
) -> None:  # type: ignore[no-untyped-def]
    user: httpx.AsyncClient = await client_for(Role.VIEWER)
    email = (await user.get("/admin/v1/auth/me")).json()["actor"].removeprefix("user:")
    new = [f"new password number {i}" for i in range(4)]
    answers = await asyncio.gather(
        *(
            user.post(
                "/admin/v1/auth/password",
                json={"current_password": PASSWORD, "new_password": password},
            )
            for password in new
        )
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) == 1, [a.text for a in answers]
    assert set(statuses[1:]) <= {409, 422}, [a.text for a in answers]
    [winner] = [p for p, a in zip(new, answers, strict=True) if a.status_code == 200]
    for password in new:
        expected = 200 if password == winner else 401
        assert (await login(anonymous, email, password)).status_code == expected
