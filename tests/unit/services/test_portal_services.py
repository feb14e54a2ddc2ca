"""The developer portal's services on a real SQLite store with a driven clock: sign-up and
verification, login lockout, teams, applications, the approval workflow, keys and OAuth
clients (services/portal*.py)."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.events.bus import read_events
from portcullis.identity.keys import Environment
from portcullis.problems import TOO_MANY_REQUESTS, UNAUTHORIZED
from portcullis.services.errors import (
    ALREADY_EXISTS,
    FORBIDDEN,
    NOT_FOUND,
    VALIDATION_FAILED,
    ServiceError,
)
from portcullis.services.portal import (
    ACCESS_STATE_CONFLICT,
    EMAIL_NOT_VERIFIED,
    INVALID_TOKEN,
    DeveloperContext,
    KeyEnvironment,
    TeamRole,
)
from portcullis.services.portal_apps import consumer_name
from portcullis.store.engine import create_engine
from portcullis.store.portal_tables import DeveloperRow
from support.portal import CATALOGUE, PASSWORD, Portal, build, developer, facts
from support.services import apply_config, migrated_store, operation


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated store (with the organizations) per module; each test copies it."""
    directory = tmp_path_factory.mktemp("portal-template")

    async def make() -> None:
        engine = await migrated_store(directory)
        await engine.dispose()

    asyncio.run(make())
    return directory / "store.db"


@pytest.fixture
async def engine(template: Path, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A copy of the module's migrated store (migrating each test's store cost ~1 s)."""
    shutil.copyfile(template, tmp_path / "store.db")
    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    yield eng
    await eng.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def portal(engine: AsyncEngine, clock: Clock) -> Portal:
    await apply_config(engine, CATALOGUE)
    return build(engine, clock)


def _token(body: str) -> str:
    found = re.search(r"token=([A-Za-z0-9_-]+)", body)
    assert found is not None, body
    return found.group(1)


async def test_sign_up_mails_a_one_time_expiring_link(portal: Portal, clock: Clock) -> None:
    dev = await portal.accounts.sign_up(facts(), "Ada@Example.com", PASSWORD, "Ada", clock=clock)
    assert dev.email == "ada@example.com"
    assert not dev.email_verified
    (mail,) = await portal.outbox.messages(recipient="ada@example.com")
    assert mail.body.count("http://portal.test/portal/verify?token=") == 1
    verified = await portal.accounts.verify_email(facts(), _token(mail.body), clock=clock)
    assert verified.email_verified
    with pytest.raises(ServiceError) as again:
        await portal.accounts.verify_email(facts(), _token(mail.body), clock=clock)
    assert again.value.kind is INVALID_TOKEN

    await portal.accounts.sign_up(facts(), "bo@example.com", PASSWORD, "Bo", clock=clock)
    (late,) = await portal.outbox.messages(recipient="bo@example.com")
    clock.advance(portal.accounts.verification_ttl + 1)
    with pytest.raises(ServiceError) as expired:
        await portal.accounts.verify_email(facts(), _token(late.body), clock=clock)
    assert expired.value.kind is INVALID_TOKEN


async def test_a_new_link_at_most_once_a_minute(portal: Portal, clock: Clock) -> None:
    ctx = await developer(portal, "ada@example.com", clock=clock, verified=False)
    with pytest.raises(ServiceError) as soon:
        await portal.accounts.resend_verification(ctx)
    assert soon.value.kind is TOO_MANY_REQUESTS
    assert int(soon.value.headers["Retry-After"]) == 60
    clock.advance(61)
    await portal.accounts.resend_verification(ctx)
    assert len(await portal.outbox.messages(recipient="ada@example.com")) == 2


async def test_sign_ups_from_one_address_are_limited_per_hour(portal: Portal, clock: Clock) -> None:
    """Each sign-up mails a stranger's address: ten an hour from one address, then 429
    (nothing made, nothing mailed) until the hour ends; other addresses are not held up."""
    for n in range(10):
        await portal.accounts.sign_up(facts(), f"d{n}@example.com", PASSWORD, "D", clock=clock)
    with pytest.raises(ServiceError) as flood:
        await portal.accounts.sign_up(facts(), "victim@example.com", PASSWORD, "V", clock=clock)
    assert flood.value.kind is TOO_MANY_REQUESTS
    assert 3600 <= int(flood.value.headers["Retry-After"]) <= 3601  # the whole hour is left
    assert await portal.outbox.messages(recipient="victim@example.com") == []
    await portal.accounts.sign_up(
        facts("198.51.100.7"), "elsewhere@example.com", PASSWORD, "E", clock=clock
    )
    clock.advance(3601)
    await portal.accounts.sign_up(facts(), "victim@example.com", PASSWORD, "V", clock=clock)
    assert len(await portal.outbox.messages(recipient="victim@example.com")) == 1


async def test_sign_up_refusals_name_their_fields(portal: Portal) -> None:
    await portal.accounts.sign_up(facts(), "ada@example.com", PASSWORD, "Ada")
    with pytest.raises(ServiceError) as taken:
        await portal.accounts.sign_up(facts(), " ADA@example.com", PASSWORD, "Other")
    assert taken.value.kind is ALREADY_EXISTS
    assert [e.pointer for e in taken.value.errors] == ["#/email"]
    with pytest.raises(ServiceError) as bad:
        await portal.accounts.sign_up(facts(), "not-an-email", "short", " ")
    assert bad.value.kind is VALIDATION_FAILED
    assert [e.pointer for e in bad.value.errors] == ["#/email", "#/password", "#/name"]


async def test_login_locks_after_repeated_failures_until_the_lock_ends(
    portal: Portal, clock: Clock
) -> None:
    await developer(portal, "ada@example.com", clock=clock)
    limits = portal.accounts.throttle.limits
    for _ in range(limits.max_failures):
        with pytest.raises(ServiceError) as wrong:
            await portal.accounts.login(facts(), "ada@example.com", "wrong password", clock=clock)
        assert wrong.value.kind is UNAUTHORIZED
    with pytest.raises(ServiceError) as locked:
        await portal.accounts.login(facts(), "ada@example.com", PASSWORD, clock=clock)
    assert locked.value.kind is TOO_MANY_REQUESTS
    assert int(locked.value.headers["Retry-After"]) > 0
    clock.advance(limits.lockout + 1)
    dev = await portal.accounts.login(facts(), "ADA@example.com", PASSWORD, clock=clock)
    assert dev.email == "ada@example.com"


async def test_a_suspended_developer_neither_signs_in_nor_acts(
    portal: Portal, engine: AsyncEngine
) -> None:
    ctx = await developer(portal, "ada@example.com")
    await portal.admin.set_developer_status(operation(engine), ctx.developer.id, suspended=True)
    with pytest.raises(ServiceError) as refused:
        await portal.accounts.login(facts(), "ada@example.com", PASSWORD)
    assert refused.value.kind is UNAUTHORIZED
    assert await portal.accounts.principal(ctx.developer.id) is None
    with pytest.raises(ServiceError) as limited:
        await portal.admin.set_developer_status(
            operation(engine, "org-a"), ctx.developer.id, suspended=False
        )
    assert limited.value.kind is FORBIDDEN


async def test_an_unverified_developer_cannot_register_applications(portal: Portal) -> None:
    ctx = await developer(portal, "ada@example.com", verified=False)
    (team,) = await portal.accounts.teams(ctx)
    with pytest.raises(ServiceError) as refused:
        await portal.apps.create_application(ctx, team.id, "shop")
    assert refused.value.kind is EMAIL_NOT_VERIFIED


async def _app(portal: Portal, ctx: DeveloperContext, name: str = "shop") -> str:
    (team, *_) = await portal.accounts.teams(ctx)
    app = await portal.apps.create_application(ctx, team.id, name, client_type="web")
    return app.id


async def test_automatic_approval_makes_the_consumer_and_keys_work(
    portal: Portal, engine: AsyncEngine
) -> None:
    ctx = await developer(portal, "ada@example.com")
    app_id = await _app(portal, ctx)
    request = await portal.apps.request_access(ctx, app_id, "petstore")
    assert (request.status, request.plan, request.organization) == ("approved", "free", "org-a")
    config = (await portal.editor.state()).config
    (consumer,) = [c for c in config.consumers if c.username == consumer_name(app_id)]
    assert (consumer.organization, consumer.plan, consumer.groups) == (
        "org-a",
        "free",
        ["portal-petstore"],
    )
    kinds = [e.kind for e in await read_events(engine)]
    assert kinds.count("portal.access_requested") == 1
    assert kinds.count("portal.access_approved") == 1
    mails = await portal.outbox.messages(recipient="ada@example.com")
    (mail,) = [m for m in mails if "approved" in m.subject]
    assert "petstore" in mail.body

    created = await portal.apps.create_key(ctx, app_id, KeyEnvironment.sandbox, "ci")
    assert created.key.startswith("pc_dev_")
    assert created.info.environment is Environment.development
    rotation = await portal.apps.rotate_key(ctx, app_id, created.info.id, grace_seconds=60)
    revoked = await portal.apps.revoke_key(ctx, app_id, rotation.new.id)
    assert revoked.status.value == "revoked"
    assert {k.id for k in await portal.apps.list_keys(ctx, app_id)} == {
        created.info.id,
        rotation.new.id,
    }
    client, secret = await portal.apps.create_oauth_client(ctx, app_id, "backend")
    assert secret
    assert client.consumer == consumer_name(app_id)
    assert [c.client_id for c in await portal.apps.list_oauth_clients(ctx, app_id)] == [
        client.client_id
    ]
    (mine,) = await portal.apps.consumers_of(ctx.developer)
    assert (mine.consumer, mine.organization, mine.organization_id) == (
        consumer_name(app_id),
        "org-a",
        "id-org-a",
    )


async def test_manual_approval_waits_for_an_operator_who_gives_reasons(
    portal: Portal, engine: AsyncEngine
) -> None:
    ctx = await developer(portal, "ada@example.com")
    app_id = await _app(portal, ctx)
    with pytest.raises(ServiceError) as no_keys_yet:
        await portal.apps.create_key(ctx, app_id, "production", "ci")
    assert no_keys_yet.value.kind is ACCESS_STATE_CONFLICT
    pending = await portal.apps.request_access(ctx, app_id, "billing")
    assert pending.status == "pending"
    # An operator limited to another organization does not see the operator's API requests.
    limited = operation(engine, "org-a")
    assert await portal.admin.access_requests(limited) == []
    with pytest.raises(ServiceError) as hidden:
        await portal.admin.reject(limited, pending.id, "no")
    assert hidden.value.kind is NOT_FOUND

    op = operation(engine)
    rejected = await portal.admin.reject(op, pending.id, "tell us more about the use")
    assert (rejected.status, rejected.reason) == ("rejected", "tell us more about the use")
    with pytest.raises(ServiceError) as decided:
        await portal.admin.approve(op, pending.id)
    assert decided.value.kind is ACCESS_STATE_CONFLICT
    mails = await portal.outbox.messages(recipient="ada@example.com")
    assert any("tell us more about the use" in m.body for m in mails)

    again = await portal.apps.request_access(ctx, app_id, "billing")
    assert (again.id, again.status) == (pending.id, "pending")
    with pytest.raises(ServiceError) as twice:
        await portal.apps.request_access(ctx, app_id, "billing")
    assert twice.value.kind is ALREADY_EXISTS
    approved = await portal.admin.approve(op, pending.id, "welcome")
    assert approved.status == "approved"
    created = await portal.apps.create_key(ctx, app_id, "production", "live")
    assert created.key.startswith("pc_live_")
    kinds = [e.kind for e in await read_events(engine)]
    assert "portal.access_rejected" in kinds
    assert "portal.access_approved" in kinds


async def test_one_application_is_one_organization_and_one_plan(portal: Portal) -> None:
    ctx = await developer(portal, "ada@example.com")
    app_id = await _app(portal, ctx)
    await portal.apps.request_access(ctx, app_id, "petstore", "gold")
    with pytest.raises(ServiceError) as elsewhere:
        await portal.apps.request_access(ctx, app_id, "billing")
    assert [e.pointer for e in elsewhere.value.errors] == ["#/api"]
    with pytest.raises(ServiceError) as unknown:
        await portal.apps.request_access(ctx, app_id, "nope")
    assert [e.pointer for e in unknown.value.errors] == ["#/api"]
    other = await _app(portal, ctx, "other")
    with pytest.raises(ServiceError) as plan:
        await portal.apps.request_access(ctx, other, "petstore", "platinum")
    assert [e.pointer for e in plan.value.errors] == ["#/plan"]


async def test_teams_share_applications_and_keep_an_owner(portal: Portal) -> None:
    ada = await developer(portal, "ada@example.com")
    bo = await developer(portal, "bo@example.com")
    team = await portal.accounts.create_team(ada, "payments")
    await portal.accounts.add_member(ada, team.id, "BO@example.com")
    app = await portal.apps.create_application(bo, team.id, "shared")
    assert [a.id for a in await portal.apps.list_applications(ada)] == [app.id]
    members = await portal.accounts.members(bo, team.id)
    assert {(m.email, m.role) for m in members} == {
        ("ada@example.com", TeamRole.owner),
        ("bo@example.com", TeamRole.member),
    }
    with pytest.raises(ServiceError) as not_owner:
        await portal.accounts.remove_member(bo, team.id, ada.developer.id)
    assert not_owner.value.kind is FORBIDDEN
    with pytest.raises(ServiceError) as last_owner:
        await portal.accounts.remove_member(ada, team.id, ada.developer.id)
    assert last_owner.value.kind is FORBIDDEN
    await portal.accounts.remove_member(ada, team.id, bo.developer.id)
    assert await portal.apps.list_applications(bo) == []


async def test_passwords_are_argon2_and_emails_lower_case(
    portal: Portal, engine: AsyncEngine
) -> None:
    await developer(portal, "Ada@Example.com")
    async with engine.connect() as conn:
        row = (await conn.execute(select(DeveloperRow))).one()
    assert row.email == "ada@example.com"
    assert row.password_hash.startswith("$argon2")
