"""Admin access operations: sign-in sessions, admin users and admin API tokens.

The rules every face obeys:

- nobody grants or manages a role above their own, and only owners manage owners;
  the bootstrap token creates the first owner and nothing else;
- an organization-limited admin sees, creates and assigns users of their own
  organization only (others are "not found");
- nobody changes their own role, organization or status, or deletes themselves; a
  user changes their own password only with the current one (which revokes their API
  tokens and ends their other sessions);
- a token never has a permission its owner lacks; owners and admins see the tokens of
  the users they see, everyone else their own.

Sign-ins and password changes are audited whether they succeed or not; every change
is audited with its before and after (secrets never).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, StrictInt

from portcullis.problems import TOO_MANY_REQUESTS, UNAUTHORIZED, ProblemKind
from portcullis.services.admin_auth import (
    AdminUser,
    ApiToken,
    AuthService,
    BootstrapTokenSpent,
    EmailTaken,
    InvalidCredentials,
    InvalidRefreshToken,
    LastOwner,
    LoginLocked,
    PasswordChange,
    PasswordChanged,
    TokenPair,
)
from portcullis.services.context import AuditSink, Operation, RequestFacts
from portcullis.services.errors import (
    ALREADY_EXISTS,
    FORBIDDEN,
    NOT_FOUND,
    ServiceError,
    invalid,
    not_found,
)
from portcullis.services.preconditions import Precondition, etag_of
from portcullis.services.rbac import ROLE_RANK, Caller, Permission, Role

_Signed = TypeVar("_Signed")

SELF_CHANGE = ProblemKind(
    "self-change", "You can't change your own access, disable or delete yourself", 409
)
PASSWORD_CHANGED = ProblemKind(
    "password-changed", "The password was changed by another request meanwhile", 409
)
LAST_OWNER = ProblemKind("last-owner", "The last owner can't be removed or demoted", 409)
MAX_TOKEN_LIFETIME = timedelta(days=366)
USER_SORT = ("email", "role", "created_at")
TOKEN_SORT = ("name", "created_at", "expires_at")
Email = Annotated[
    str,
    Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$", examples=["ops@example.com"]),
]
Password = Annotated[SecretStr, Field(min_length=12, max_length=1024)]


class AdminUserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: Password
    role: Role
    organization_id: str | None = None


class AdminUserUpdate(BaseModel):
    """Merge-patch style: only the fields present change."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    disabled: StrictBool | None = None
    password: Password | None = None
    organization_id: str | None = None


class ApiTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=128)]
    scopes: Annotated[list[Permission], Field(min_length=1)]
    expires_in: Annotated[
        StrictInt, Field(ge=60, le=int(MAX_TOKEN_LIFETIME.total_seconds()), description="Seconds")
    ] = 90 * 24 * 3600


class ApiTokenOut(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="First characters of the token, to recognise it")
    user_id: str
    scopes: list[Permission]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class Me(BaseModel):
    actor: str
    role: Role
    permissions: list[Permission]
    user_id: str | None
    organization_id: str | None

    @classmethod
    def of(cls, caller: Caller) -> Me:
        return cls(
            actor=caller.actor,
            role=caller.role,
            permissions=sorted(caller.permissions),
            user_id=caller.user_id,
            organization_id=caller.organization_id,
        )


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]


class PasswordChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: Annotated[SecretStr, Field(min_length=1, max_length=1024)]
    new_password: Password


class PasswordChangeResult(BaseModel):
    api_tokens_revoked: int = Field(description="Your API tokens the change revoked")
    sessions_ended: int = Field(description="Your other login sessions the change ended")


def _locked(exc: LoginLocked) -> ServiceError:
    return ServiceError(
        TOO_MANY_REQUESTS,
        f"{exc}; try again in {exc.retry_after} s",
        headers={"Retry-After": str(exc.retry_after)},
    )


def _caller(op: Operation) -> Caller:
    if op.caller is None:
        raise ServiceError(FORBIDDEN, "admin access is managed by an authenticated admin")
    return op.caller


def _may_manage(caller: Caller, role: Role) -> None:
    """Nobody grants or manages a role above their own; only owners manage owners."""
    if ROLE_RANK[role] > ROLE_RANK[caller.role] or (
        role is Role.OWNER and caller.role is not Role.OWNER
    ):
        raise ServiceError(FORBIDDEN, f"a {caller.role.value} can't manage {role.value} users")


def require_signed_in(caller: Caller) -> None:
    """Only a user in a login session (not an API token, not the bootstrap token) acts on
    their own account."""
    if caller.user_id is None or caller.session_id is None:
        raise ServiceError(FORBIDDEN, "sign in with your email and password to do this")


def _sees(caller: Caller, user: AdminUser) -> bool:
    return caller.organization_id is None or user.organization_id == caller.organization_id


def _manages_tokens(caller: Caller) -> bool:
    """Owners and admins manage other users' tokens (within their organization, if limited)."""
    return caller.role in (Role.OWNER, Role.ADMIN) and caller.can(Permission.ADMINS_READ)


class _UserCheck(Precondition[AdminUser]):
    """What a change to a user requires of the user as the store locked it for the write:
    visible to the caller (else 404, or 412 under If-Match), If-Match, then `rules`."""

    def __init__(
        self,
        caller: Caller,
        user_id: str,
        if_match: str | None,
        rules: Callable[[AdminUser], None],
    ) -> None:
        super().__init__(if_match, lambda user: etag_of(user.as_json()))
        self.caller = caller
        self.user_id = user_id
        self.rules = rules

    def __call__(self, current: AdminUser | None) -> None:
        if current is not None and not _sees(self.caller, current):
            current = None
        super().__call__(current)
        if current is None:
            raise ServiceError(NOT_FOUND, f"admin user {self.user_id!r} does not exist")
        self.rules(current)


class AdminAccessService:
    """Sessions, admin users and API tokens over the admin identity store (`auth`);
    unauthenticated sign-ins are audited into `audit`."""

    def __init__(self, auth: AuthService, audit: AuditSink) -> None:
        self._auth = auth
        self._audit = audit

    # ------------------------------------------------------------------ sessions

    async def login(self, facts: RequestFacts, email: str, password: str) -> TokenPair:
        """A token pair for the user's email and password; every attempt is audited."""
        return await self._audited_login(
            facts, email, lambda: self._auth.login(email, password, facts.client_ip)
        )

    async def sign_in(self, facts: RequestFacts, email: str, password: str) -> AdminUser:
        """The user of an email and password, for a dashboard session: the same lockout
        and the same audit events as `login` (resource `session`, via `web`)."""
        return await self._audited_login(
            facts,
            email,
            lambda: self._auth.check_password(email, password, facts.client_ip),
            via="web",
        )

    async def _audited_login(
        self,
        facts: RequestFacts,
        email: str,
        attempt: Callable[[], Awaitable[_Signed]],
        via: str | None = None,
    ) -> _Signed:
        op = Operation(None, f"user:{email.strip().lower()}", facts, self._audit)
        where = None if via is None else {"via": via}
        try:
            signed = await attempt()
        except LoginLocked as exc:
            await op.record("login_failed", "session", None, after=where, status=429)
            raise _locked(exc) from None
        except InvalidCredentials as exc:
            await op.record("login_failed", "session", None, after=where, status=401)
            raise ServiceError(UNAUTHORIZED, str(exc)) from None
        await op.record("login", "session", None, after=where)
        return signed

    async def refresh(self, refresh_token: str) -> TokenPair:
        """A new token pair for a refresh token (which is rotated)."""
        try:
            return await self._auth.refresh(refresh_token)
        except InvalidRefreshToken as exc:
            raise ServiceError(UNAUTHORIZED, str(exc)) from None

    async def logout(self, refresh_token: str) -> None:
        await self._auth.logout(refresh_token)

    async def change_own_password(
        self, op: Operation, current_password: str, new_password: str
    ) -> PasswordChange:
        """The signed-in caller's new password; revokes their API tokens and ends their
        other sessions. Every attempt is audited."""
        caller = _caller(op)
        require_signed_in(caller)
        assert caller.user_id is not None
        user_id = caller.user_id
        failed = "password_change_failed"
        try:
            change = await self._auth.change_own_password(
                user_id, current_password, new_password, keep_session=caller.session_id
            )
        except LoginLocked as exc:
            await op.record(failed, "admin_user", user_id, status=429)
            raise _locked(exc) from None
        except InvalidCredentials:
            await op.record(failed, "admin_user", user_id, status=422)
            raise invalid([("#/current_password", "is not your current password")]) from None
        except PasswordChanged as exc:
            await op.record(failed, "admin_user", user_id, status=409)
            raise ServiceError(PASSWORD_CHANGED, str(exc)) from None
        after = {
            "password_changed": True,
            "api_tokens_revoked": change.api_tokens_revoked,
            "sessions_ended": change.sessions_ended,
        }
        await op.record("change_password", "admin_user", user_id, after=after)
        return change

    # ------------------------------------------------------------------ users

    async def list_users(self, op: Operation, role: Role | None = None) -> list[dict[str, Any]]:
        """The users the caller sees (of their organization when limited), as JSON."""
        users = [u.as_json() for u in await self._auth.list_users()]
        if role is not None:
            users = [u for u in users if u["role"] == role.value]
        return [u for u in users if op.scope.owns(u["organization_id"])]

    async def get_user(self, op: Operation, user_id: str) -> AdminUser:
        """The user; not found also for users outside a limited caller's organization."""
        user = await self._auth.get_user(user_id)
        missing = f"admin user {user_id!r} does not exist"
        if user is None:
            raise not_found(missing, target="user_id")
        op.scope.require_owned(user.organization_id, missing)
        return user

    async def create_user(self, op: Operation, body: AdminUserCreate) -> AdminUser:
        caller = _caller(op)
        if caller.actor != "bootstrap":
            _may_manage(caller, body.role)
        elif body.role is not Role.OWNER:
            raise ServiceError(FORBIDDEN, "the bootstrap token can only create the first owner")
        if caller.organization_id is not None and body.organization_id != caller.organization_id:
            raise ServiceError(FORBIDDEN, "you can only create users in your own organization")
        await self._check_organization(body.organization_id)
        try:
            user = await self._auth.create_user(
                body.email,
                body.password.get_secret_value(),
                body.role,
                body.organization_id,
                bootstrap_token=caller.bootstrap_token,
            )
        except BootstrapTokenSpent as exc:
            raise ServiceError(
                UNAUTHORIZED,
                str(exc),
                headers={
                    "www-authenticate": 'Bearer realm="portcullis-admin", error="invalid_token"'
                },
            ) from None
        except EmailTaken as exc:
            raise ServiceError(
                ALREADY_EXISTS,
                str(exc),
                errors=[{"pointer": "#/email", "detail": "already in use"}],
            ) from None
        await op.record("create", "admin_user", user.id, after=user.as_json(), status=201)
        return user

    async def update_user(
        self, op: Operation, user_id: str, body: AdminUserUpdate, *, if_match: str | None
    ) -> AdminUser:
        caller = _caller(op)
        await self.get_user(op, user_id)
        sets_organization = "organization_id" in body.model_fields_set
        if body.role is not None:
            _may_manage(caller, body.role)
        if sets_organization:
            if (
                caller.organization_id is not None
                and body.organization_id != caller.organization_id
            ):
                raise ServiceError(FORBIDDEN, "you can only assign your own organization")
            await self._check_organization(body.organization_id)
        if user_id == caller.user_id and body.password is not None:
            raise ServiceError(
                SELF_CHANGE,
                "change your own password with POST /admin/v1/auth/password "
                "(it needs the current one)",
            )

        def rules(user: AdminUser) -> None:
            _may_manage(caller, user.role)
            changes_own_access = (
                body.role not in (None, user.role)
                or body.disabled
                or (sets_organization and body.organization_id != user.organization_id)
            )
            if user_id == caller.user_id and changes_own_access:
                raise ServiceError(
                    SELF_CHANGE,
                    "ask another owner or admin to change your role, organization or status",
                )

        check = _UserCheck(caller, user_id, if_match, rules)
        try:
            updated = await self._auth.update_user(
                user_id,
                role=body.role,
                disabled=body.disabled,
                password=body.password.get_secret_value() if body.password else None,
                organization_id=body.organization_id,
                clear_organization=sets_organization,
                check=check,
            )
        except LastOwner as exc:
            raise ServiceError(LAST_OWNER, str(exc)) from None
        assert updated is not None
        assert check.seen is not None  # the check passed on the user
        after = updated.as_json()
        if body.password is not None:
            after["password_changed"] = True
        await op.record("update", "admin_user", user_id, before=check.seen.as_json(), after=after)
        return updated

    async def delete_user(self, op: Operation, user_id: str, *, if_match: str | None) -> None:
        caller = _caller(op)
        await self.get_user(op, user_id)

        def rules(user: AdminUser) -> None:
            _may_manage(caller, user.role)
            if user_id == caller.user_id:
                raise ServiceError(SELF_CHANGE, "ask another owner or admin to delete your account")

        check = _UserCheck(caller, user_id, if_match, rules)
        try:
            await self._auth.delete_user(user_id, check=check)
        except LastOwner as exc:
            raise ServiceError(LAST_OWNER, str(exc)) from None
        assert check.seen is not None  # the check passed on the user
        await op.record("delete", "admin_user", user_id, before=check.seen.as_json(), status=204)

    async def _check_organization(self, organization_id: str | None) -> None:
        if organization_id is not None and not await self._auth.organization_exists(
            organization_id
        ):
            raise invalid([("#/organization_id", "unknown organization")])

    # ------------------------------------------------------------------ API tokens

    async def create_token(self, op: Operation, body: ApiTokenCreate) -> tuple[ApiToken, str]:
        """A token of the caller's own (and its secret, which is never stored)."""
        caller = _caller(op)
        if caller.user_id is None:
            raise ServiceError(FORBIDDEN, "only admin users can own API tokens")
        extra = set(body.scopes) - caller.permissions
        if extra:
            raise ServiceError(
                FORBIDDEN,
                "a token can't have permissions its owner lacks: "
                + ", ".join(sorted(p.value for p in extra)),
            )
        expires_at = op.now() + timedelta(seconds=body.expires_in)
        token, secret = await self._auth.create_api_token(
            caller.user_id, body.name, frozenset(body.scopes), expires_at
        )
        await op.record("create", "api_token", token.id, after=token.as_json(), status=201)
        return token, secret

    async def list_tokens(self, op: Operation) -> list[dict[str, Any]]:
        """The tokens the caller sees, as JSON."""
        caller = _caller(op)
        owner = None if _manages_tokens(caller) else caller.user_id or ""
        visible = await self._token_visibility(op, caller)
        return [t.as_json() for t in await self._auth.list_api_tokens(owner) if visible(t)]

    async def revoke_token(self, op: Operation, token_id: str) -> None:
        caller = _caller(op)
        token = await self._auth.get_api_token(token_id)
        if token is None or not (await self._token_visibility(op, caller))(token):
            raise not_found(f"API token {token_id!r} does not exist", target="token_id")
        await self._auth.revoke_api_token(token_id)
        await op.record("revoke", "api_token", token_id, before=token.as_json(), status=204)

    async def _token_visibility(self, op: Operation, caller: Caller) -> Callable[[ApiToken], bool]:
        """Which tokens the caller sees: their own, and (owners and admins) those of the
        users they see, i.e. of their organization when they are limited to one."""
        if not _manages_tokens(caller):
            return lambda token: token.user_id == caller.user_id
        scope = op.scope
        if not scope.limited:
            return lambda token: True
        members = {u.id for u in await self._auth.list_users() if scope.owns(u.organization_id)}
        return lambda token: token.user_id == caller.user_id or token.user_id in members
