"""Admin access operations without HTTP: role ranks, organization limits, self-change,
token scopes, and what the audit log gets (never a password)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.secrets import ServerSecret
from portcullis.problems import UNAUTHORIZED
from portcullis.services.admin_auth import AuthService
from portcullis.services.admin_users import (
    SELF_CHANGE,
    AdminAccessService,
    AdminUserCreate,
    AdminUserUpdate,
    ApiTokenCreate,
)
from portcullis.services.audit import AuditLog
from portcullis.services.context import RequestFacts
from portcullis.services.errors import FORBIDDEN, NOT_FOUND, VALIDATION_FAILED, ServiceError
from portcullis.services.rbac import Permission, Role
from support.services import audit_events, operation

PASSWORD = "correct horse battery"
T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def access(engine: AsyncEngine) -> AdminAccessService:
    auth = AuthService(
        engine,
        secret=ServerSecret.from_secret(b"a" * 32),
        hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
    )
    await auth.start()
    return AdminAccessService(auth, AuditLog(engine))


def new_user(email: str, role: Role, organization_id: str | None = None) -> AdminUserCreate:
    return AdminUserCreate(
        email=email, password=SecretStr(PASSWORD), role=role, organization_id=organization_id
    )


async def refusal(call: object) -> ServiceError:
    with pytest.raises(ServiceError) as refused:
        await call  # type: ignore[misc]
    return refused.value


async def test_roles_and_organizations_limit_who_creates_whom(
    engine: AsyncEngine, access: AdminAccessService
) -> None:
    admin = operation(engine, role=Role.ADMIN)
    owner_by_admin = await refusal(access.create_user(admin, new_user("o@x.io", Role.OWNER)))
    assert owner_by_admin.kind is FORBIDDEN
    limited = operation(engine, "org-a", role=Role.ADMIN)
    elsewhere = new_user("b@x.io", Role.VIEWER, "id-org-b")
    assert (await refusal(access.create_user(limited, elsewhere))).kind is FORBIDDEN
    unknown = await refusal(access.create_user(admin, new_user("u@x.io", Role.VIEWER, "id-no")))
    assert unknown.kind is VALIDATION_FAILED
    assert [e.pointer for e in unknown.errors] == ["#/organization_id"]

    bee = await access.create_user(admin, new_user("b@x.io", Role.VIEWER, "id-org-b"))
    hidden = await refusal(access.get_user(limited, bee.id))
    assert hidden.kind is NOT_FOUND
    assert [u["email"] for u in await access.list_users(limited)] == []
    [event] = await audit_events(engine)
    assert (event.action, event.resource_type, event.resource_id, event.status) == (
        "create",
        "admin_user",
        bee.id,
        201,
    )
    assert PASSWORD not in str(event.as_json())


async def test_nobody_changes_their_own_access_or_deletes_themselves(
    engine: AsyncEngine, access: AdminAccessService
) -> None:
    me = await access.create_user(operation(engine), new_user("me@x.io", Role.ADMIN))
    myself = operation(engine, role=Role.ADMIN, user_id=me.id, actor="user:me@x.io")
    demote = AdminUserUpdate(role=Role.VIEWER)
    assert (await refusal(access.update_user(myself, me.id, demote, if_match=None))).kind is (
        SELF_CHANGE
    )
    password = AdminUserUpdate(password=SecretStr("another long password"))
    assert (await refusal(access.update_user(myself, me.id, password, if_match=None))).kind is (
        SELF_CHANGE
    )
    assert (await refusal(access.delete_user(myself, me.id, if_match=None))).kind is SELF_CHANGE
    assert (await access.get_user(myself, me.id)).role is Role.ADMIN


async def test_tokens_never_exceed_their_owner_and_expire_by_the_operations_clock(
    engine: AsyncEngine, access: AdminAccessService
) -> None:
    owner = await access.create_user(operation(engine), new_user("op@x.io", Role.OPERATOR))
    op = operation(engine, role=Role.OPERATOR, user_id=owner.id, clock=lambda: T0)
    wider = ApiTokenCreate(name="ci", scopes=[Permission.ADMINS_WRITE])
    assert (await refusal(access.create_token(op, wider))).kind is FORBIDDEN
    nobody = operation(engine, role=Role.OPERATOR)
    narrow = ApiTokenCreate(name="ci", scopes=[Permission.CONFIG_READ], expires_in=3600)
    assert (await refusal(access.create_token(nobody, narrow))).kind is FORBIDDEN

    token, secret = await access.create_token(op, narrow)
    assert token.expires_at == T0 + timedelta(hours=1)
    assert [t["id"] for t in await access.list_tokens(op)] == [token.id]
    stranger = await access.create_user(operation(engine), new_user("s@x.io", Role.OPERATOR))
    theirs = operation(engine, role=Role.OPERATOR, user_id=stranger.id)
    assert await access.list_tokens(theirs) == []
    assert (await refusal(access.revoke_token(theirs, token.id))).kind is NOT_FOUND
    assert secret not in str([e.as_json() for e in await audit_events(engine)])


async def test_every_sign_in_is_audited(engine: AsyncEngine, access: AdminAccessService) -> None:
    await access.create_user(operation(engine), new_user("who@x.io", Role.VIEWER))
    facts = RequestFacts("req-login", "192.0.2.7")
    wrong = await refusal(access.login(facts, " Who@X.io", "not the password"))
    assert wrong.kind is UNAUTHORIZED
    pair = await access.login(facts, "who@x.io", PASSWORD)
    assert pair.access_token
    sessions = [e for e in await audit_events(engine) if e.resource_type == "session"]
    assert [(e.actor, e.action, e.status, e.client_ip) for e in sessions] == [
        ("user:who@x.io", "login_failed", 401, "192.0.2.7"),
        ("user:who@x.io", "login", 200, "192.0.2.7"),
    ]
