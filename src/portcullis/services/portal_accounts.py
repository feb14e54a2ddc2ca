"""Developer accounts of the portal: sign-up, email verification, login, teams.

- Passwords are argon2 hashes made by the admin users' hasher, checked in a thread;
  an unknown email is checked against a dummy hash, so timing does not tell which
  accounts exist.
- Sign-up makes the developer's personal team (they own it) and mails a verification
  link. The token is random (256 bits), stored as its sha256, expires, and is spent by
  one conditional UPDATE: of any number of concurrent uses, exactly one verifies.
- Login throttling is the admin users' (services/login_throttle.py): counters in the
  store, each attempt numbered atomically before its password is checked.
- Team operations scope to the caller's memberships; a team they are not in is
  "not found". Only a team's owners change its members, and a team keeps an owner.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.problems import TOO_MANY_REQUESTS, UNAUTHORIZED
from portcullis.services.admin_auth import hash_password, verify_password
from portcullis.services.context import AuditSink, Clock, Operation, RequestFacts, utc_now
from portcullis.services.errors import (
    ALREADY_EXISTS,
    FORBIDDEN,
    ServiceError,
    invalid,
    not_found,
)
from portcullis.services.login_throttle import LoginLocked, LoginThrottle, ThrottleLimits
from portcullis.services.portal import (
    INVALID_TOKEN,
    Developer,
    DeveloperContext,
    TeamRole,
    iso,
    teams_of,
)
from portcullis.services.portal_mail import MailMessage, MailSender
from portcullis.store.engine import write_transaction
from portcullis.store.portal_tables import DeveloperRow, EmailTokenRow, TeamMemberRow, TeamRow

ACTIVE, SUSPENDED = "active", "suspended"
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]+$")
# Addresses a developer's login counts under (the admins' are unprefixed).
ADDRESS_PREFIX = "portal:"
# Sign-ups per client address and hour: each one mails a verification link to an address
# the caller chose, so an unbounded form would let anyone flood strangers' inboxes.
SIGN_UP_LIMITS = ThrottleLimits(ip_max_failures=10, ip_window=3600)
SIGN_UP_PREFIX = "portal-signup:"
# Seconds between two verification mails of one developer.
RESEND_INTERVAL = 60


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    name: str
    personal: bool
    role: TeamRole

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "personal": self.personal, "role": self.role}


@dataclass(frozen=True, slots=True)
class TeamMember:
    developer_id: str
    email: str
    name: str
    role: TeamRole


def developer_of(row: Any) -> Developer:
    return Developer(
        id=row.id,
        email=row.email,
        name=row.name,
        email_verified=row.email_verified_at is not None,
        created_at=row.created_at,
    )


def developer_json(row: Any) -> dict[str, Any]:
    """A developer as operators see it (never the password hash or the counters)."""
    return {
        "id": row.id,
        "email": row.email,
        "name": row.name,
        "status": row.status,
        "email_verified_at": iso(row.email_verified_at),
        "created_at": iso(row.created_at),
    }


def normalize_email(email: str) -> str:
    return email.strip().lower()


def check_sign_up(email: str, password: str, name: str) -> None:
    """422 naming each field that is not acceptable."""
    errors = []
    if not _EMAIL.fullmatch(email) or len(email) > 320:
        errors.append(("#/email", "is not an email address"))
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        errors.append(("#/password", f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"))
    if not 1 <= len(name.strip()) <= 128:
        errors.append(("#/name", "must be 1 to 128 characters"))
    if errors:
        raise invalid(errors)


class PortalAccounts:
    """Developer accounts and teams in one store."""

    def __init__(
        self,
        engine: AsyncEngine,
        audit: AuditSink,
        mail: MailSender,
        hasher: PasswordHasher,
        *,
        base_url: str,
        verification_ttl: int = 24 * 3600,
        limits: ThrottleLimits = ThrottleLimits(),
        sign_up_limits: ThrottleLimits = SIGN_UP_LIMITS,
    ) -> None:
        self._engine = engine
        self._audit = audit
        self._mail = mail
        self._hasher = hasher
        self._base_url = base_url.rstrip("/")
        self.verification_ttl = verification_ttl
        self.throttle = LoginThrottle(
            engine, DeveloperRow, limits=limits, address_prefix=ADDRESS_PREFIX
        )
        self.sign_ups = LoginThrottle(
            engine, DeveloperRow, limits=sign_up_limits, address_prefix=SIGN_UP_PREFIX
        )
        self._dummy_hash: str | None = None

    def _op(self, actor: str, facts: RequestFacts, clock: Clock = utc_now) -> Operation:
        return Operation(None, actor, facts, self._audit, clock=clock)

    async def _hash(self, password: str) -> str:
        return await hash_password(self._hasher, password)

    async def _verify(self, password_hash: str, password: str) -> bool:
        return await verify_password(self._hasher, password_hash, password)

    # ------------------------------------------------------------------ sign-up and login

    async def sign_up(
        self,
        facts: RequestFacts,
        email: str,
        password: str,
        name: str,
        *,
        clock: Clock = utc_now,
        verified: bool = False,
    ) -> Developer:
        """A new developer with their personal team; a verification link is mailed
        (`verified`: already verified, for seeding, and no mail)."""
        email = normalize_email(email)
        check_sign_up(email, password, name)
        now = clock()
        if not verified:  # a seeded account (the demo's) mails nothing
            try:
                await self.sign_ups.take_address_attempt(
                    facts.client_ip, now, refusal="too many sign-ups from this address"
                )
            except LoginLocked as exc:
                raise ServiceError(
                    TOO_MANY_REQUESTS,
                    f"{exc}; try again in {exc.retry_after} s",
                    headers={"Retry-After": str(exc.retry_after)},
                ) from None
        developer_id, team_id = str(uuid.uuid4()), str(uuid.uuid4())
        password_hash = await self._hash(password)
        row = {
            "id": developer_id,
            "email": email,
            "name": name.strip(),
            "password_hash": password_hash,
            "email_verified_at": now if verified else None,
            "status": ACTIVE,
            "failed_logins": 0,
            "locked_until": None,
            "created_at": now,
            "updated_at": now,
        }
        token = None
        op = self._op(f"developer:{email}", facts, clock)
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(insert(DeveloperRow).values(**row))
                await conn.execute(
                    insert(TeamRow).values(
                        id=team_id,
                        name=f"{name.strip()[:100]}'s team",
                        personal=True,
                        created_at=now,
                    )
                )
                await conn.execute(
                    insert(TeamMemberRow).values(
                        team_id=team_id,
                        developer_id=developer_id,
                        role=TeamRole.owner.value,
                        created_at=now,
                    )
                )
                if not verified:
                    token = await self._new_token(conn, developer_id, now)
                await op.record(
                    "sign_up",
                    "portal_developer",
                    developer_id,
                    after=developer_json(DeveloperRow(**row)),
                    status=201,
                    conn=conn,
                )
        except IntegrityError:
            raise ServiceError(
                ALREADY_EXISTS,
                "a developer with this email address exists",
                errors=[{"pointer": "#/email", "detail": "is taken"}],
            ) from None
        if token is not None:
            await self._mail.send(self._verification_mail(email, token))
        return developer_of(DeveloperRow(**row))

    async def ensure_developer(
        self, facts: RequestFacts, email: str, password: str, name: str
    ) -> Developer:
        """A verified, active developer with this email and (new) password: signed up when
        missing, else given the password and let in (the demo's seeded developer)."""
        email = normalize_email(email)
        check_sign_up(email, password, name)
        password_hash = await self._hash(password)
        now = utc_now()
        async with write_transaction(self._engine) as conn:
            changed = await conn.execute(
                update(DeveloperRow)
                .where(DeveloperRow.email == email)
                .values(
                    password_hash=password_hash,
                    status=ACTIVE,
                    failed_logins=0,
                    locked_until=None,
                    email_verified_at=func.coalesce(DeveloperRow.email_verified_at, now),
                    updated_at=now,
                )
            )
            if changed.rowcount == 1:
                row = (
                    await conn.execute(select(DeveloperRow).where(DeveloperRow.email == email))
                ).one()
                return developer_of(row)
        return await self.sign_up(facts, email, password, name, verified=True)

    async def _new_token(self, conn: Any, developer_id: str, now: datetime) -> str:
        token = secrets.token_urlsafe(32)
        await conn.execute(
            insert(EmailTokenRow).values(
                token_hash=_digest(token),
                developer_id=developer_id,
                created_at=now,
                expires_at=now + timedelta(seconds=self.verification_ttl),
                used_at=None,
            )
        )
        return token

    def verification_link(self, token: str) -> str:
        return f"{self._base_url}/portal/verify?token={token}"

    def _verification_mail(self, email: str, token: str) -> MailMessage:
        hours = self.verification_ttl // 3600
        return MailMessage(
            email,
            "Verify your email address for the developer portal",
            "Welcome to the developer portal.\n\n"
            f"Open this link to verify your email address:\n{self.verification_link(token)}\n\n"
            f"It works once, for {hours} hour(s). If you did not sign up, ignore this mail.\n",
        )

    async def resend_verification(self, ctx: DeveloperContext) -> None:
        """A new verification link for a developer whose address is not verified yet (at most
        one a minute: 429 with Retry-After sooner, so the form can't flood an inbox)."""
        if ctx.developer.email_verified:
            return
        now = ctx.now()
        async with write_transaction(self._engine) as conn:
            last = await conn.scalar(
                select(func.max(EmailTokenRow.created_at)).where(
                    EmailTokenRow.developer_id == ctx.developer.id
                )
            )
            wait = 0 if last is None else RESEND_INTERVAL - int((now - last).total_seconds())
            if wait > 0:
                raise ServiceError(
                    TOO_MANY_REQUESTS,
                    f"a link was sent moments ago; ask again in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
            token = await self._new_token(conn, ctx.developer.id, now)
        await self._mail.send(self._verification_mail(ctx.developer.email, token))

    async def verify_email(
        self, facts: RequestFacts, token: str, *, clock: Clock = utc_now
    ) -> Developer:
        """Spend a verification token (once: one conditional UPDATE) and mark the
        developer's address verified; `INVALID_TOKEN` when unknown, used or expired."""
        now = clock()
        t = EmailTokenRow
        spend = (
            update(t)
            .where(t.token_hash == _digest(token), t.used_at.is_(None), t.expires_at > now)
            .values(used_at=now)
            .returning(t.developer_id)
        )
        async with write_transaction(self._engine) as conn:
            developer_id = (await conn.execute(spend)).scalar_one_or_none()
            if developer_id is None:
                raise ServiceError(
                    INVALID_TOKEN,
                    "this verification link is unknown, was used already or has expired",
                    target="token",
                )
            await conn.execute(
                update(DeveloperRow)
                .where(DeveloperRow.id == developer_id, DeveloperRow.email_verified_at.is_(None))
                .values(email_verified_at=now, updated_at=now)
            )
            row = (
                await conn.execute(select(DeveloperRow).where(DeveloperRow.id == developer_id))
            ).one()
            await self._op(f"developer:{row.email}", facts, clock).record(
                "verify_email", "portal_developer", developer_id, conn=conn
            )
        return developer_of(row)

    async def login(
        self, facts: RequestFacts, email: str, password: str, *, clock: Clock = utc_now
    ) -> Developer:
        """The developer behind an email and password; 401 for a wrong pair (or a
        suspended account), 429 with Retry-After while the account or address is locked."""
        now = clock()
        email = normalize_email(email)
        op = self._op(f"developer:{email}", facts, clock)
        try:
            window = await self.throttle.take_address_attempt(facts.client_ip, now)
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(select(DeveloperRow).where(DeveloperRow.email == email))
                ).first()
            if row is not None:
                await self.throttle.take_account_attempt(row.id, now)
            elif self._dummy_hash is None:
                self._dummy_hash = await self._hash(secrets.token_urlsafe(16))
        except LoginLocked as exc:
            await op.record("login_failed", "portal_session", None, status=429)
            raise ServiceError(
                TOO_MANY_REQUESTS,
                f"{exc}; try again in {exc.retry_after} s",
                headers={"Retry-After": str(exc.retry_after)},
            ) from None
        ok = await self._verify(row.password_hash if row else self._dummy_hash or "", password)
        if row is None or not ok or row.status != ACTIVE:
            await op.record("login_failed", "portal_session", None, status=401)
            raise ServiceError(UNAUTHORIZED, "invalid email or password")
        await self.throttle.succeeded(row.id, facts.client_ip, window)
        await op.record("login", "portal_session", row.id)
        return developer_of(row)

    async def principal(self, developer_id: str) -> Developer | None:
        """The developer a session names, while their account is active (None otherwise)."""
        query = select(DeveloperRow).where(
            DeveloperRow.id == developer_id, DeveloperRow.status == ACTIVE
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else developer_of(row)

    # ------------------------------------------------------------------ teams

    async def teams(self, ctx: DeveloperContext) -> list[Team]:
        """The caller's teams, personal team first."""
        query = (
            select(TeamRow, TeamMemberRow.role)
            .join(TeamMemberRow, TeamMemberRow.team_id == TeamRow.id)
            .where(TeamMemberRow.developer_id == ctx.developer.id)
            .order_by(TeamRow.personal.desc(), TeamRow.name, TeamRow.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Team(r.id, r.name, r.personal, TeamRole(r.role)) for r in rows]

    async def create_team(self, ctx: DeveloperContext, name: str) -> Team:
        """A new team the caller owns."""
        name = name.strip()
        if not 1 <= len(name) <= 128:
            raise invalid([("#/name", "must be 1 to 128 characters")])
        team_id, now = str(uuid.uuid4()), ctx.now()
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                insert(TeamRow).values(id=team_id, name=name, personal=False, created_at=now)
            )
            await conn.execute(
                insert(TeamMemberRow).values(
                    team_id=team_id,
                    developer_id=ctx.developer.id,
                    role=TeamRole.owner.value,
                    created_at=now,
                )
            )
            await self._dev_op(ctx).record(
                "create", "portal_team", team_id, after={"name": name}, status=201, conn=conn
            )
        return Team(team_id, name, False, TeamRole.owner)

    async def members(self, ctx: DeveloperContext, team_id: str) -> list[TeamMember]:
        """A team's members; not found when the caller is not one of them."""
        query = (
            select(TeamMemberRow.role, DeveloperRow.id, DeveloperRow.email, DeveloperRow.name)
            .join(DeveloperRow, DeveloperRow.id == TeamMemberRow.developer_id)
            .where(
                TeamMemberRow.team_id == team_id,
                TeamMemberRow.team_id.in_(teams_of(ctx.developer.id)),
            )
            .order_by(DeveloperRow.email)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        if not rows:
            raise _no_team(team_id)
        return [TeamMember(r.id, r.email, r.name, TeamRole(r.role)) for r in rows]

    async def add_member(
        self, ctx: DeveloperContext, team_id: str, email: str, role: TeamRole = TeamRole.member
    ) -> TeamMember:
        """Add a developer (by email) to a team the caller owns."""
        email = normalize_email(email)
        async with write_transaction(self._engine) as conn:
            await self._require_owner(conn, ctx, team_id)
            row = (
                await conn.execute(select(DeveloperRow).where(DeveloperRow.email == email))
            ).first()
            if row is None:
                raise invalid([("#/email", "no developer has signed up with this address")])
            exists = await conn.scalar(
                select(TeamMemberRow.role).where(
                    TeamMemberRow.team_id == team_id, TeamMemberRow.developer_id == row.id
                )
            )
            if exists is not None:
                raise ServiceError(
                    ALREADY_EXISTS,
                    "this developer is a member already",
                    errors=[{"pointer": "#/email", "detail": "is a member already"}],
                )
            await conn.execute(
                insert(TeamMemberRow).values(
                    team_id=team_id, developer_id=row.id, role=role.value, created_at=ctx.now()
                )
            )
            await self._dev_op(ctx).record(
                "add_member",
                "portal_team",
                team_id,
                after={"developer_id": row.id, "role": role.value},
                conn=conn,
            )
        return TeamMember(row.id, row.email, row.name, role)

    async def remove_member(self, ctx: DeveloperContext, team_id: str, developer_id: str) -> None:
        """Remove a member from a team the caller owns (a team keeps at least one owner)."""
        async with write_transaction(self._engine) as conn:
            await self._require_owner(conn, ctx, team_id)
            role = await conn.scalar(
                select(TeamMemberRow.role).where(
                    TeamMemberRow.team_id == team_id, TeamMemberRow.developer_id == developer_id
                )
            )
            if role is None:
                raise not_found(f"no member {developer_id!r} in this team", target="developer_id")
            if role == TeamRole.owner.value:
                owners = await conn.scalar(
                    select(func.count()).where(
                        TeamMemberRow.team_id == team_id,
                        TeamMemberRow.role == TeamRole.owner.value,
                    )
                )
                if int(owners or 0) <= 1:
                    raise ServiceError(FORBIDDEN, "a team keeps at least one owner")
            await conn.execute(
                delete(TeamMemberRow).where(
                    TeamMemberRow.team_id == team_id, TeamMemberRow.developer_id == developer_id
                )
            )
            await self._dev_op(ctx).record(
                "remove_member",
                "portal_team",
                team_id,
                before={"developer_id": developer_id, "role": role},
                conn=conn,
            )

    async def _require_owner(self, conn: Any, ctx: DeveloperContext, team_id: str) -> None:
        role = await conn.scalar(
            select(TeamMemberRow.role).where(
                TeamMemberRow.team_id == team_id,
                TeamMemberRow.developer_id == ctx.developer.id,
            )
        )
        if role is None:
            raise _no_team(team_id)
        if role != TeamRole.owner.value:
            raise ServiceError(FORBIDDEN, "only the team's owners change its members")

    def _dev_op(self, ctx: DeveloperContext) -> Operation:
        return self._op(ctx.developer.actor, ctx.facts, ctx.clock)


def _no_team(team_id: str) -> ServiceError:
    return not_found(f"team {team_id!r} does not exist", target="team_id")
