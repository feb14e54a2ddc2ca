"""Admin identities: users and passwords, login sessions, API tokens and the bootstrap token.

- Passwords are argon2id hashes (argon2-cffi); verification runs in a thread so a
  login never stalls the event loop. Unknown emails are checked against a dummy
  hash so response time does not reveal which accounts exist.
- A login returns a short-lived JWT access token (HS256, `typ: at+jwt`, signed with
  a key the control plane generates once and keeps in the store, sealed with the
  deployment secret like every other key: AES-GCM, `identity/secrets.py`; a key an
  older version stored in clear is sealed in place at start, unchanged, so
  sessions survive the upgrade) and an opaque refresh token. Each refresh rotates
  the refresh token; presenting a rotated one again is treated as theft and
  revokes the whole family (the login session), which also invalidates the access
  tokens issued in it.
- API tokens (`pca_…`) and the bootstrap token (`pcb_…`) are random values stored
  as sha256 digests; the plain value is returned once, at creation.
- Setting a user's password (an admin's reset, or the user's own change, which
  needs the current one) revokes their API tokens and ends their sessions (all of
  them; a user's own change keeps the session it was made in), in the transaction
  that stores the new hash.
- Repeated failed logins lock the account for a while; failures per client IP are
  counted too, so one address can't try many accounts. Both counters live in the
  store (shared by every control-plane process) and each attempt takes its number
  atomically before its password is checked: parallel guesses can't outrun them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.errors import UserError
from portcullis.identity.secrets import ServerSecret
from portcullis.services.login_throttle import LoginLocked as LoginLocked
from portcullis.services.login_throttle import LoginThrottle, ThrottleLimits
from portcullis.services.rbac import ROLE_PERMISSIONS, Caller, Permission, Role
from portcullis.store.admin_tables import (
    AdminSecretRow,
    AdminUserRow,
    ApiTokenRow,
    BootstrapTokenRow,
    OrganizationRow,
    RefreshTokenRow,
)
from portcullis.store.engine import (
    Check,
    write_transaction,
)
from portcullis.store.web_tables import WebSessionRow

ISSUER = "portcullis-admin"
SIGNING_KEY_NAME = "access-token-signing-key"
# A stored secret sealed with the deployment secret (clear values, all URL-safe
# base64, never contain a colon).
SEALED_PREFIX = "aesgcm:"
# Prefixes that tell token kinds apart (and let secret scanners recognise them).
API_TOKEN_PREFIX = "pca_"  # noqa: S105
BOOTSTRAP_PREFIX = "pcb_"
REFRESH_PREFIX = "pcr_"
_PERMISSION_VALUES = frozenset(p.value for p in Permission)
BOOTSTRAP_PERMISSIONS = frozenset({Permission.ADMINS_READ, Permission.ADMINS_WRITE})
# Failed logins (by default) before an account locks, and per client address per window.
MAX_FAILURES = 5
IP_MAX_FAILURES = 30


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class AuthError(Exception):
    """Base of the errors the auth endpoints turn into problems."""


class InvalidCredentials(AuthError):
    """Wrong email or password (deliberately not saying which)."""


class InvalidRefreshToken(AuthError):
    """Unknown, expired, revoked or reused refresh token."""


class EmailTaken(AuthError):
    """Another admin user has this email."""


class BootstrapTokenSpent(AuthError):
    """The bootstrap token was used (or voided) by another request first."""


class LastOwner(AuthError):
    """The change would leave no enabled owner."""


class PasswordChanged(AuthError):
    """The password was changed by another request between its check and this change."""


@dataclass(frozen=True, slots=True)
class AdminUser:
    id: str
    email: str
    role: Role
    organization_id: str | None
    disabled: bool
    created_at: datetime
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "role": self.role.value,
            "organization_id": self.organization_id,
            "disabled": self.disabled,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: str
    name: str
    prefix: str
    user_id: str
    scopes: tuple[Permission, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "user_id": self.user_id,
            "scopes": [s.value for s in self.scopes],
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "last_used_at": _iso(self.last_used_at),
        }


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


@dataclass(frozen=True, slots=True)
class PasswordChange:
    """What a password change ended: the user's API tokens and login sessions."""

    api_tokens_revoked: int
    sessions_ended: int


async def _revoke_access(
    conn: AsyncConnection,
    user_id: str,
    now: datetime,
    *,
    api_tokens: bool,
    keep_session: str | None = None,
) -> PasswordChange:
    """End the user's sessions (all but `keep_session`) and, with `api_tokens`, revoke
    their API tokens, in the caller's transaction."""
    live = [RefreshTokenRow.user_id == user_id, RefreshTokenRow.revoked_at.is_(None)]
    if keep_session is not None:
        live.append(RefreshTokenRow.family_id != keep_session)
    # A session is a family of refresh tokens: count the families that could still refresh.
    ended = await conn.scalar(
        select(func.count(func.distinct(RefreshTokenRow.family_id))).where(
            *live, RefreshTokenRow.used_at.is_(None), RefreshTokenRow.expires_at > now
        )
    )
    await conn.execute(update(RefreshTokenRow).where(*live).values(revoked_at=now))
    # Dashboard sessions of the user end with the token sessions (services/web_sessions.py).
    web = delete(WebSessionRow).where(
        WebSessionRow.kind == "admin", WebSessionRow.subject_id == user_id
    )
    if keep_session is not None:
        web = web.where(WebSessionRow.id != keep_session)
    ended_web = (await conn.execute(web)).rowcount or 0
    revoked = 0
    if api_tokens:
        result = await conn.execute(
            update(ApiTokenRow)
            .where(ApiTokenRow.user_id == user_id, ApiTokenRow.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        revoked = result.rowcount
    return PasswordChange(revoked, int(ended or 0) + int(ended_web))


def _secret_context(name: str) -> bytes:
    """What a sealed admin secret is bound to (its row), so sealed values can't be swapped."""
    return f"admin-secret:{name}".encode()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _user(row: Any) -> AdminUser:
    return AdminUser(
        id=row.id,
        email=row.email,
        role=Role(row.role),
        organization_id=row.organization_id,
        disabled=row.disabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def user_caller(user: AdminUser, session_id: str) -> Caller:
    """The caller a signed-in admin user is in `session_id`: a login's access tokens and
    a dashboard session alike (same role, permissions and organization)."""
    return Caller(
        actor=f"user:{user.email}",
        role=user.role,
        permissions=ROLE_PERMISSIONS[user.role],
        user_id=user.id,
        organization_id=user.organization_id,
        session_id=session_id,
    )


def _token(row: Any) -> ApiToken:
    return ApiToken(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        user_id=row.user_id,
        scopes=tuple(Permission(s) for s in row.scopes.split() if s in _PERMISSION_VALUES),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


class AuthService:
    """Admin users, sessions and tokens in the store; also the request authenticator."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        secret: ServerSecret | None = None,
        hasher: PasswordHasher | None = None,
        access_ttl: int = 900,
        refresh_ttl: int = 14 * 24 * 3600,
        max_failures: int = MAX_FAILURES,
        lockout: int = 900,
        ip_max_failures: int = IP_MAX_FAILURES,
        ip_window: int = 900,
    ) -> None:
        self._engine = engine
        # Seals the signing key at rest; needed only to issue and check access tokens.
        self._secret = secret
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.max_failures = max_failures
        self.lockout = lockout
        self.ip_max_failures = ip_max_failures
        self.ip_window = ip_window
        # The login counters in the store (services/login_throttle.py).
        self._throttle = LoginThrottle(
            engine,
            AdminUserRow,
            limits=ThrottleLimits(max_failures, lockout, ip_max_failures, ip_window),
        )
        self._signing_key: str | None = None

    # ------------------------------------------------------------------ start-up

    async def start(self) -> str | None:
        """Load (or create) the signing key (when this service has the server secret: one
        without it only manages users); on an empty store, return a new bootstrap token.

        Each start without any admin user issues a fresh bootstrap token and
        invalidates earlier ones, so only the token printed last works.
        """
        if self._secret is not None:
            self._signing_key = await self._load_signing_key()
        if await self.count_users():
            return None
        token = BOOTSTRAP_PREFIX + secrets.token_urlsafe(32)
        async with write_transaction(self._engine) as conn:
            await conn.execute(delete(BootstrapTokenRow))
            await conn.execute(
                insert(BootstrapTokenRow).values(token_hash=digest(token), created_at=_now())
            )
        return token

    async def _load_signing_key(self) -> str:
        """The access-token signing key from the store: created (sealed) on first use;
        a key stored in clear by an earlier version is sealed in place, unchanged."""
        query = select(AdminSecretRow.value).where(AdminSecretRow.name == SIGNING_KEY_NAME)
        async with self._engine.connect() as conn:
            stored = await conn.scalar(query)
        if stored is None:
            key = secrets.token_urlsafe(48)
            try:
                async with write_transaction(self._engine) as conn:
                    await conn.execute(
                        insert(AdminSecretRow).values(
                            name=SIGNING_KEY_NAME, value=self._seal(key), created_at=_now()
                        )
                    )
                return key
            except IntegrityError:  # another process created it first
                async with self._engine.connect() as conn:
                    stored = await conn.scalar(query)
            assert stored is not None
        if stored.startswith(SEALED_PREFIX):
            return self._unseal(stored)
        # Compare-and-set: of processes starting together, one seals it (the same key).
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                update(AdminSecretRow)
                .where(AdminSecretRow.name == SIGNING_KEY_NAME, AdminSecretRow.value == stored)
                .values(value=self._seal(stored))
            )
        return stored

    def _sealer(self) -> ServerSecret:
        if self._secret is None:
            raise RuntimeError("access tokens need the server secret (AuthService(secret=…))")
        return self._secret

    def _seal(self, key: str) -> str:
        blob = self._sealer().encrypt(key.encode(), context=_secret_context(SIGNING_KEY_NAME))
        return SEALED_PREFIX + base64.b64encode(blob).decode()

    def _unseal(self, stored: str) -> str:
        blob = base64.b64decode(stored.removeprefix(SEALED_PREFIX))
        try:
            plain = self._sealer().decrypt(blob, context=_secret_context(SIGNING_KEY_NAME))
        except InvalidTag:
            raise UserError(
                "the access-token signing key in the store was sealed with another secret_key: "
                "start with the deployment's PORTCULLIS_SECRET_KEY (or secret_key_file)"
            ) from None
        return plain.decode()

    async def _key(self) -> str:
        """The signing key, loaded on first use when `start` could not run (unmigrated store)."""
        if self._signing_key is None:
            self._signing_key = await self._load_signing_key()
        return self._signing_key

    # ------------------------------------------------------------------ passwords

    @property
    def hasher(self) -> PasswordHasher:
        """The argon2 hasher of this service (the portal's developers use it too)."""
        return self._hasher

    async def hash_password(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self._hasher.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    # ------------------------------------------------------------------ users

    async def organization_exists(self, organization_id: str) -> bool:
        query = select(OrganizationRow.id).where(OrganizationRow.id == organization_id)
        async with self._engine.connect() as conn:
            return await conn.scalar(query) is not None

    async def count_users(self) -> int:
        async with self._engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(AdminUserRow)) or 0)

    async def count_owners(self) -> int:
        query = (
            select(func.count())
            .select_from(AdminUserRow)
            .where(AdminUserRow.role == Role.OWNER.value, AdminUserRow.disabled.is_(False))
        )
        async with self._engine.connect() as conn:
            return int(await conn.scalar(query) or 0)

    async def create_user(
        self,
        email: str,
        password: str,
        role: Role,
        organization_id: str | None = None,
        *,
        bootstrap_token: int | None = None,
    ) -> AdminUser:
        """Store a new user; any user voids the bootstrap token.

        With `bootstrap_token` (a bootstrap caller's), the user exists only if this
        transaction is the one that spends that token: `BootstrapTokenSpent`
        otherwise, so parallel requests with one token create one user.
        """
        now = _now()
        row = {
            "id": str(uuid.uuid4()),
            "email": email.strip().lower(),
            "password_hash": await self.hash_password(password),
            "role": role.value,
            "organization_id": organization_id,
            "disabled": False,
            "failed_logins": 0,
            "locked_until": None,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with write_transaction(self._engine) as conn:
                if bootstrap_token is not None:
                    spent = await conn.execute(
                        update(BootstrapTokenRow)
                        .where(
                            BootstrapTokenRow.id == bootstrap_token,
                            BootstrapTokenRow.used_at.is_(None),
                        )
                        .values(used_at=now)
                    )
                    if spent.rowcount != 1:
                        raise BootstrapTokenSpent("the bootstrap token was already used")
                await conn.execute(insert(AdminUserRow).values(**row))
                await conn.execute(
                    update(BootstrapTokenRow)
                    .where(BootstrapTokenRow.used_at.is_(None))
                    .values(used_at=now)
                )
        except IntegrityError:
            raise EmailTaken(f"an admin user with email {row['email']!r} exists") from None
        return _user(AdminUserRow(**row))

    async def get_user(self, user_id: str) -> AdminUser | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(AdminUserRow).where(AdminUserRow.id == user_id))
            ).first()
        return None if row is None else _user(row)

    async def list_users(self) -> list[AdminUser]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(AdminUserRow))).all()
        return [_user(r) for r in rows]

    async def update_user(
        self,
        user_id: str,
        *,
        role: Role | None = None,
        disabled: bool | None = None,
        password: str | None = None,
        organization_id: str | None = None,
        clear_organization: bool = False,
        check: Check[AdminUser] | None = None,
    ) -> AdminUser | None:
        """Change a user (None if there is none); disabling them ends their sessions,
        setting a password also revokes their API tokens (`_revoke_access`).

        `check` runs on the user locked in the write transaction. Raises
        `LastOwner` rather than demote or disable the last enabled owner.
        """
        values: dict[str, Any] = {"updated_at": _now()}
        if role is not None:
            values["role"] = role.value
        if disabled is not None:
            values["disabled"] = disabled
        if password is not None:
            values["password_hash"] = await self.hash_password(password)
            values["failed_logins"] = 0
            values["locked_until"] = None
        if organization_id is not None or clear_organization:
            values["organization_id"] = organization_id
        demotes = (role is not None and role is not Role.OWNER) or bool(disabled)
        async with write_transaction(self._engine) as conn:
            owners = await self._lock_owners(conn) if demotes else set()
            if await self._lock_user(conn, user_id, check) is None:
                return None
            if owners == {user_id}:
                raise LastOwner("promote another owner first")
            await conn.execute(
                update(AdminUserRow).where(AdminUserRow.id == user_id).values(**values)
            )
            if disabled or password is not None:
                await _revoke_access(
                    conn, user_id, values["updated_at"], api_tokens=password is not None
                )
        return await self.get_user(user_id)

    async def change_own_password(
        self, user_id: str, current: str, new: str, *, keep_session: str | None
    ) -> PasswordChange:
        """A user's change of their own password, which needs the current one.

        A wrong current password counts as a failed login of the account (so a
        stolen session can't guess it; `LoginLocked` once locked) and raises
        `InvalidCredentials`. The new hash is stored only over the hash that was
        checked (compare-and-set: of two concurrent changes, the second raises
        `PasswordChanged`), and in that transaction the user's API tokens are
        revoked and their sessions ended, except `keep_session` (the caller's).
        """
        now = _now()
        query = select(AdminUserRow.password_hash, AdminUserRow.disabled).where(
            AdminUserRow.id == user_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.disabled:
            raise InvalidCredentials("the user no longer exists or is disabled")
        await self._throttle.take_account_attempt(user_id, now)
        if not await self._verify(row.password_hash, current):
            raise InvalidCredentials("the current password is wrong")
        new_hash = await self.hash_password(new)
        async with write_transaction(self._engine) as conn:
            changed = await conn.execute(
                update(AdminUserRow)
                .where(AdminUserRow.id == user_id, AdminUserRow.password_hash == row.password_hash)
                .values(password_hash=new_hash, failed_logins=0, locked_until=None, updated_at=now)
            )
            if changed.rowcount == 1:
                return await _revoke_access(
                    conn, user_id, now, api_tokens=True, keep_session=keep_session
                )
            # The current password was right (the attempt counted above was no
            # failure): the streak ends as after a successful login, so concurrent
            # changes by the account's owner cannot lock the account.
            await conn.execute(
                update(AdminUserRow)
                .where(AdminUserRow.id == user_id)
                .values(failed_logins=0, locked_until=None)
            )
        raise PasswordChanged("the password was changed meanwhile; sign in again")

    async def delete_user(self, user_id: str, *, check: Check[AdminUser] | None = None) -> bool:
        """Delete a user with their sessions and tokens; False if there is none.

        `check` runs on the user locked in the write transaction; `LastOwner` if the
        user is the last enabled owner.
        """
        async with write_transaction(self._engine) as conn:
            owners = await self._lock_owners(conn)
            if await self._lock_user(conn, user_id, check) is None:
                return False
            if owners == {user_id}:
                raise LastOwner("promote another owner first")
            await conn.execute(delete(RefreshTokenRow).where(RefreshTokenRow.user_id == user_id))
            await conn.execute(delete(ApiTokenRow).where(ApiTokenRow.user_id == user_id))
            await conn.execute(delete(AdminUserRow).where(AdminUserRow.id == user_id))
        return True

    async def _lock_user(
        self, conn: AsyncConnection, user_id: str, check: Check[AdminUser] | None
    ) -> AdminUser | None:
        """The user, locked for the rest of the write transaction, after `check` passed on it."""
        query = select(AdminUserRow).where(AdminUserRow.id == user_id).with_for_update()
        row = (await conn.execute(query)).first()
        user = None if row is None else _user(row)
        if check is not None:
            check(user)
        return user

    async def _lock_owners(self, conn: AsyncConnection) -> set[str]:
        """The enabled owners' ids, locked, so concurrent demotions see each other.

        Taken before the user a change is about (and in id order) so that two such
        writers queue up instead of deadlocking on PostgreSQL.
        """
        query = (
            select(AdminUserRow.id)
            .where(AdminUserRow.role == Role.OWNER.value, AdminUserRow.disabled.is_(False))
            .order_by(AdminUserRow.id)
            .with_for_update()
        )
        return set((await conn.scalars(query)).all())

    # ------------------------------------------------------------------ sessions

    async def login(self, email: str, password: str, client: str | None) -> TokenPair:
        """Check a password (`check_password`); a token pair on success."""
        user = await self.check_password(email, password, client)
        return await self._issue(user.id, user.role.value, str(uuid.uuid4()))

    async def check_password(self, email: str, password: str, client: str | None) -> AdminUser:
        """Check a password under the lockout; the user on success (a REST login issues
        tokens for them, a dashboard sign-in a web session).

        Raises `LoginLocked` while the account or the client address is locked out
        (even for the right password) and `InvalidCredentials` otherwise. Every
        attempt first takes its number from the counters in the store (address,
        then account), so concurrent attempts, in any number of processes, can't
        get more passwords checked than the limits allow; a successful login gives
        its number back.
        """
        now = _now()
        window_start = await self._throttle.take_address_attempt(client, now)
        query = select(AdminUserRow).where(AdminUserRow.email == email.strip().lower())
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is not None:
            await self._throttle.take_account_attempt(row.id, now)
        elif self._dummy_hash is None:
            self._dummy_hash = await self.hash_password(secrets.token_urlsafe(16))
        ok = await self._verify(row.password_hash if row else self._dummy_hash or "", password)
        if row is None or not ok or row.disabled:
            raise InvalidCredentials("invalid email or password")
        await self._throttle.succeeded(row.id, client, window_start)
        return _user(row)

    async def _issue(self, user_id: str, role: str, family_id: str) -> TokenPair:
        now = _now()
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                insert(RefreshTokenRow).values(
                    id=str(uuid.uuid4()),
                    token_hash=digest(refresh),
                    family_id=family_id,
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + timedelta(seconds=self.refresh_ttl),
                )
            )
        claims = {
            "iss": ISSUER,
            "aud": ISSUER,
            "sub": user_id,
            "role": role,
            "sid": family_id,
            "iat": int(now.timestamp()),
            "exp": int(now.timestamp()) + self.access_ttl,
            "jti": secrets.token_hex(12),
        }
        access = jwt.encode(claims, await self._key(), algorithm="HS256", headers={"typ": "at+jwt"})
        return TokenPair(access, self.access_ttl, refresh, self.refresh_ttl)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Exchange a refresh token for a new pair; reuse of a rotated one revokes its family."""
        now = _now()
        async with write_transaction(self._engine) as conn:
            # Locked: of concurrent exchanges of one token, the first marks it used
            # and the others then see it used (reuse) instead of each getting a pair.
            row = (
                await conn.execute(
                    select(RefreshTokenRow)
                    .where(RefreshTokenRow.token_hash == digest(refresh_token))
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise InvalidRefreshToken("unknown refresh token")
            if row.used_at is not None:
                await conn.execute(
                    update(RefreshTokenRow)
                    .where(
                        RefreshTokenRow.family_id == row.family_id,
                        RefreshTokenRow.revoked_at.is_(None),
                    )
                    .values(revoked_at=now)
                )
                reused = True
            else:
                reused = False
                if row.revoked_at is None and row.expires_at > now:
                    await conn.execute(
                        update(RefreshTokenRow)
                        .where(RefreshTokenRow.id == row.id)
                        .values(used_at=now)
                    )
        if reused:
            raise InvalidRefreshToken(
                "this refresh token was already used; the session has been revoked"
            )
        if row.revoked_at is not None or row.expires_at <= now:
            raise InvalidRefreshToken("the refresh token is expired or revoked")
        user = await self.get_user(row.user_id)
        if user is None or user.disabled:
            raise InvalidRefreshToken("the user no longer exists or is disabled")
        return await self._issue(user.id, user.role.value, row.family_id)

    async def logout(self, refresh_token: str) -> None:
        """Revoke the session the refresh token belongs to (unknown tokens are ignored)."""
        async with write_transaction(self._engine) as conn:
            family = await conn.scalar(
                select(RefreshTokenRow.family_id).where(
                    RefreshTokenRow.token_hash == digest(refresh_token)
                )
            )
            if family is not None:
                await conn.execute(
                    update(RefreshTokenRow)
                    .where(
                        RefreshTokenRow.family_id == family, RefreshTokenRow.revoked_at.is_(None)
                    )
                    .values(revoked_at=_now())
                )

    # ------------------------------------------------------------------ API tokens

    async def create_api_token(
        self,
        user_id: str,
        name: str,
        scopes: frozenset[Permission],
        expires_at: datetime | None,
    ) -> tuple[ApiToken, str]:
        """A new token and its plain value (which is not stored and can't be shown again)."""
        secret = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = {
            "id": str(uuid.uuid4()),
            "name": name,
            "token_hash": digest(secret),
            "prefix": secret[:12],
            "user_id": user_id,
            "scopes": " ".join(sorted(s.value for s in scopes)),
            "created_at": _now(),
            "expires_at": expires_at,
            "revoked_at": None,
            "last_used_at": None,
        }
        async with write_transaction(self._engine) as conn:
            await conn.execute(insert(ApiTokenRow).values(**row))
        return _token(ApiTokenRow(**row)), secret

    async def list_api_tokens(self, user_id: str | None = None) -> list[ApiToken]:
        query = select(ApiTokenRow)
        if user_id is not None:
            query = query.where(ApiTokenRow.user_id == user_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_token(r) for r in rows]

    async def get_api_token(self, token_id: str) -> ApiToken | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(ApiTokenRow).where(ApiTokenRow.id == token_id))
            ).first()
        return None if row is None else _token(row)

    async def revoke_api_token(self, token_id: str) -> None:
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                update(ApiTokenRow)
                .where(ApiTokenRow.id == token_id, ApiTokenRow.revoked_at.is_(None))
                .values(revoked_at=_now())
            )

    # ------------------------------------------------------------------ authenticator

    async def authenticate(self, credential: str) -> Caller | None:
        """The caller behind a bearer credential, or None when it is not valid now."""
        if credential.startswith(API_TOKEN_PREFIX):
            return await self._api_token_caller(credential)
        if credential.startswith(BOOTSTRAP_PREFIX):
            return await self._bootstrap_caller(credential)
        return await self._access_token_caller(credential)

    async def _access_token_caller(self, credential: str) -> Caller | None:
        try:
            claims = jwt.decode(
                credential,
                await self._key(),
                algorithms=["HS256"],
                audience=ISSUER,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "sid"]},
            )
        except jwt.PyJWTError:
            return None
        user = await self.get_user(str(claims["sub"]))
        if user is None or user.disabled:
            return None
        revoked = select(RefreshTokenRow.id).where(
            RefreshTokenRow.family_id == str(claims["sid"]),
            RefreshTokenRow.revoked_at.is_not(None),
        )
        async with self._engine.connect() as conn:
            if await conn.scalar(revoked.limit(1)) is not None:
                return None
        return user_caller(user, str(claims["sid"]))

    async def _api_token_caller(self, credential: str) -> Caller | None:
        now = _now()
        query = (
            select(ApiTokenRow, AdminUserRow.email, AdminUserRow.role, AdminUserRow.disabled)
            .join(AdminUserRow, AdminUserRow.id == ApiTokenRow.user_id)
            .add_columns(AdminUserRow.organization_id)
            .where(ApiTokenRow.token_hash == digest(credential))
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.disabled or row.revoked_at is not None:
            return None
        if row.expires_at is not None and row.expires_at <= now:
            return None
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                update(ApiTokenRow).where(ApiTokenRow.id == row.id).values(last_used_at=now)
            )
        role = Role(row.role)
        scopes = {Permission(s) for s in row.scopes.split() if s in _PERMISSION_VALUES}
        return Caller(
            actor=f"token:{row.name} ({row.email})",
            role=role,
            permissions=ROLE_PERMISSIONS[role] & frozenset(scopes),
            user_id=row.user_id,
            token_id=row.id,
            organization_id=row.organization_id,
        )

    async def _bootstrap_caller(self, credential: str) -> Caller | None:
        query = select(BootstrapTokenRow.id).where(
            BootstrapTokenRow.token_hash == digest(credential),
            BootstrapTokenRow.used_at.is_(None),
        )
        async with self._engine.connect() as conn:
            found = await conn.scalar(query)
        if found is None or await self.count_users():
            return None
        return Caller(
            actor="bootstrap",
            role=Role.OWNER,
            permissions=BOOTSTRAP_PERMISSIONS,
            bootstrap_token=found,
        )
