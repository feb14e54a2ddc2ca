"""Login sessions, admin users and admin API tokens."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, StrictInt

from portcullis.admin.auth import (
    AdminUser,
    ApiToken,
    AuthService,
    BootstrapTokenSpent,
    EmailTaken,
    InvalidCredentials,
    InvalidRefreshToken,
    LastOwner,
    LoginLocked,
    PasswordChanged,
)
from portcullis.admin.dependencies import (
    RequestFacts,
    current_caller,
    request_facts,
    require,
)
from portcullis.admin.operations import admin_state, respond
from portcullis.admin.pagination import ListQuery, list_query
from portcullis.admin.problems import (
    ALREADY_EXISTS,
    FORBIDDEN,
    NOT_FOUND,
    TOO_MANY_REQUESTS,
    UNAUTHORIZED,
    ApiProblem,
    created_responses,
    problem_responses,
    validation_problem,
)
from portcullis.admin.scoping import scope_of
from portcullis.admin.strict_json import check_body
from portcullis.problems import ProblemKind
from portcullis.services.preconditions import Precondition, etag_of
from portcullis.services.rbac import ROLE_RANK, Caller, Permission, Role

SELF_CHANGE = ProblemKind(
    "self-change", "You can't change your own access, disable or delete yourself", 409
)
PASSWORD_CHANGED = ProblemKind(
    "password-changed", "The password was changed by another request meanwhile", 409
)
LAST_OWNER = ProblemKind("last-owner", "The last owner can't be removed or demoted", 409)
MAX_TOKEN_LIFETIME = timedelta(days=366)
Email = Annotated[
    str,
    Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$", examples=["ops@example.com"]),
]
IfMatch = Annotated[
    str | None, Header(description="ETag from a previous read; 412 when it no longer matches")
]
Password = Annotated[SecretStr, Field(min_length=12, max_length=1024)]

router = APIRouter()
USER_SORT = ("email", "role", "created_at")
TOKEN_SORT = ("name", "created_at", "expires_at")


def _auth(request: Request) -> AuthService:
    auth: AuthService = request.app.state.authenticator
    return auth


# ---------------------------------------------------------------------------- sessions


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: Annotated[SecretStr, Field(min_length=1, max_length=1024)]


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int = Field(description="Seconds the access token is valid")
    refresh_token: str
    refresh_expires_in: int


def _tokens(pair: Any) -> JSONResponse:
    return JSONResponse(
        {
            "access_token": pair.access_token,
            "token_type": "Bearer",
            "expires_in": pair.expires_in,
            "refresh_token": pair.refresh_token,
            "refresh_expires_in": pair.refresh_expires_in,
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def _lockable_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The problems of an endpoint that checks a password: also 429 (locked) with Retry-After."""
    return {
        **problem_responses(*statuses),
        429: {
            **problem_responses(429)[429],
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        },
    }


@router.post(
    "/auth/login",
    tags=["Auth"],
    summary="Sign in with email and password",
    response_model=TokenResponse,
    responses=_lockable_responses(401, 422),
    operation_id="login",
)
async def login(
    request: Request, body: LoginRequest, facts: RequestFacts = Depends(request_facts)
) -> Response:
    actor = f"user:{body.email.strip().lower()}"

    async def audit(action: str, status: int) -> None:
        await admin_state(request).audit.record(
            caller=None,
            actor=actor,
            facts=facts,
            action=action,
            resource_type="session",
            resource_id=None,
            status=status,
        )

    try:
        pair = await _auth(request).login(
            body.email, body.password.get_secret_value(), facts.client_ip
        )
    except LoginLocked as exc:
        await audit("login_failed", 429)
        raise _locked(exc) from None
    except InvalidCredentials as exc:
        await audit("login_failed", 401)
        raise ApiProblem(UNAUTHORIZED, str(exc)) from None
    await audit("login", 200)
    return _tokens(pair)


def _locked(exc: LoginLocked) -> ApiProblem:
    return ApiProblem(
        TOO_MANY_REQUESTS,
        f"{exc}; try again in {exc.retry_after} s",
        headers={"Retry-After": str(exc.retry_after)},
    )


@router.post(
    "/auth/refresh",
    tags=["Auth"],
    summary="Exchange a refresh token for a new token pair (rotation)",
    response_model=TokenResponse,
    responses=problem_responses(401, 422),
    operation_id="refresh_session",
)
async def refresh(request: Request, body: RefreshRequest) -> Response:
    try:
        pair = await _auth(request).refresh(body.refresh_token)
    except InvalidRefreshToken as exc:
        raise ApiProblem(UNAUTHORIZED, str(exc)) from None
    return _tokens(pair)


@router.post(
    "/auth/logout",
    tags=["Auth"],
    summary="End the session of a refresh token",
    status_code=204,
    response_class=Response,
    responses=problem_responses(422),
    operation_id="logout",
)
async def logout(request: Request, body: RefreshRequest) -> Response:
    await _auth(request).logout(body.refresh_token)
    return Response(status_code=204)


class PasswordChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: Annotated[SecretStr, Field(min_length=1, max_length=1024)]
    new_password: Password


class PasswordChangeResult(BaseModel):
    api_tokens_revoked: int = Field(description="Your API tokens the change revoked")
    sessions_ended: int = Field(description="Your other login sessions the change ended")


async def signed_in_user(request: Request, caller: Caller = Depends(current_caller)) -> Caller:
    """The caller when they are a user in a login session (not an API token, not the
    bootstrap token), whatever their role; 403 otherwise. Then the body is checked
    strictly, as `require` does for the endpoints that need a permission."""
    if caller.user_id is None or caller.session_id is None:
        raise ApiProblem(FORBIDDEN, "sign in with your email and password to do this")
    await check_body(request)
    return caller


@router.post(
    "/auth/password",
    tags=["Auth"],
    summary="Change your own password (needs the current one; revokes your API tokens "
    "and ends your other sessions)",
    response_model=PasswordChangeResult,
    responses=_lockable_responses(401, 403, 409, 422),
    operation_id="change_own_password",
)
async def change_own_password(
    request: Request,
    body: PasswordChangeRequest,
    caller: Caller = Depends(signed_in_user),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    assert caller.user_id is not None  # signed_in_user
    user_id = caller.user_id

    async def audit(action: str, status: int, after: Any = None) -> None:
        await admin_state(request).audit.record(
            caller=caller,
            facts=facts,
            action=action,
            resource_type="admin_user",
            resource_id=user_id,
            after=after,
            status=status,
        )

    try:
        change = await _auth(request).change_own_password(
            user_id,
            body.current_password.get_secret_value(),
            body.new_password.get_secret_value(),
            keep_session=caller.session_id,
        )
    except LoginLocked as exc:
        await audit("password_change_failed", 429)
        raise _locked(exc) from None
    except InvalidCredentials:
        await audit("password_change_failed", 422)
        raise validation_problem([("#/current_password", "is not your current password")]) from None
    except PasswordChanged as exc:
        await audit("password_change_failed", 409)
        raise ApiProblem(PASSWORD_CHANGED, str(exc)) from None
    result = {
        "api_tokens_revoked": change.api_tokens_revoked,
        "sessions_ended": change.sessions_ended,
    }
    await audit("change_password", 200, {"password_changed": True, **result})
    return JSONResponse(result, headers={"Cache-Control": "no-store"})


class Me(BaseModel):
    actor: str
    role: Role
    permissions: list[Permission]
    user_id: str | None
    organization_id: str | None


@router.get(
    "/auth/me",
    tags=["Auth"],
    summary="Who am I and what may I do",
    response_model=Me,
    responses=problem_responses(401),
    operation_id="whoami",
)
async def whoami(caller: Caller = Depends(current_caller)) -> Me:
    return Me(
        actor=caller.actor,
        role=caller.role,
        permissions=sorted(caller.permissions),
        user_id=caller.user_id,
        organization_id=caller.organization_id,
    )


# ---------------------------------------------------------------------------- admin users


class AdminUserPage(BaseModel):
    items: list[AdminUser]
    next: str | None


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


def _may_manage(caller: Caller, role: Role) -> None:
    """Nobody grants or manages a role above their own; only owners manage owners."""
    if ROLE_RANK[role] > ROLE_RANK[caller.role] or (
        role is Role.OWNER and caller.role is not Role.OWNER
    ):
        raise ApiProblem(FORBIDDEN, f"a {caller.role.value} can't manage {role.value} users")


async def _check_organization(request: Request, organization_id: str | None) -> None:
    if organization_id is not None and not await _auth(request).organization_exists(
        organization_id
    ):
        raise validation_problem([("#/organization_id", "unknown organization")])


async def _user_or_404(request: Request, user_id: str, caller: Caller) -> AdminUser:
    """The user, or 404 (also for users outside an organization-limited caller's own)."""
    user = await _auth(request).get_user(user_id)
    missing = f"admin user {user_id!r} does not exist"
    if user is None:
        raise ApiProblem(NOT_FOUND, missing)
    (await scope_of(request, caller)).require_owned(user.organization_id, missing)
    return user


def _sees(caller: Caller, user: AdminUser) -> bool:
    return caller.organization_id is None or user.organization_id == caller.organization_id


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
            raise ApiProblem(NOT_FOUND, f"admin user {self.user_id!r} does not exist")
        self.rules(current)


def _user_response(user: AdminUser, status: int = 200, **headers: str) -> JSONResponse:
    return respond(user.as_json(), status, **headers)


@router.get(
    "/admin-users",
    tags=["Admin users"],
    summary="List admin users",
    response_model=AdminUserPage,
    responses=problem_responses(400, 401, 403, 422, 429),
    operation_id="list_admin_users",
)
async def list_admin_users(
    request: Request,
    query: ListQuery = Depends(list_query(USER_SORT, "email")),
    role: Role | None = None,
    caller: Caller = Depends(require(Permission.ADMINS_READ)),
) -> Response:
    users = [u.as_json() for u in await _auth(request).list_users()]
    if role is not None:
        users = [u for u in users if u["role"] == role.value]
    scope = await scope_of(request, caller)
    users = [u for u in users if scope.owns(u["organization_id"])]
    return query.respond(request, users)


@router.post(
    "/admin-users",
    tags=["Admin users"],
    summary="Create an admin user",
    status_code=201,
    response_model=AdminUser,
    responses=created_responses(400, 401, 403, 409, 422, 429),
    operation_id="create_admin_user",
)
async def create_admin_user(
    request: Request,
    body: AdminUserCreate,
    caller: Caller = Depends(require(Permission.ADMINS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    if caller.actor != "bootstrap":
        _may_manage(caller, body.role)
    elif body.role is not Role.OWNER:
        raise ApiProblem(FORBIDDEN, "the bootstrap token can only create the first owner")
    if caller.organization_id is not None and body.organization_id != caller.organization_id:
        raise ApiProblem(FORBIDDEN, "you can only create users in your own organization")
    await _check_organization(request, body.organization_id)
    try:
        user = await _auth(request).create_user(
            body.email,
            body.password.get_secret_value(),
            body.role,
            body.organization_id,
            bootstrap_token=caller.bootstrap_token,
        )
    except BootstrapTokenSpent as exc:
        raise ApiProblem(
            UNAUTHORIZED,
            str(exc),
            headers={"www-authenticate": 'Bearer realm="portcullis-admin", error="invalid_token"'},
        ) from None
    except EmailTaken as exc:
        raise ApiProblem(
            ALREADY_EXISTS, str(exc), errors=[{"pointer": "#/email", "detail": "already in use"}]
        ) from None
    await admin_state(request).audit.record(
        caller=caller,
        facts=facts,
        action="create",
        resource_type="admin_user",
        resource_id=user.id,
        after=user.as_json(),
        status=201,
    )
    return _user_response(user, 201, Location=f"/admin/v1/admin-users/{user.id}")


@router.get(
    "/admin-users/{user_id}",
    tags=["Admin users"],
    summary="Get an admin user",
    response_model=AdminUser,
    responses=problem_responses(401, 403, 404, 429),
    operation_id="get_admin_user",
)
async def get_admin_user(
    request: Request,
    user_id: str,
    caller: Caller = Depends(require(Permission.ADMINS_READ)),
) -> Response:
    return _user_response(await _user_or_404(request, user_id, caller))


@router.patch(
    "/admin-users/{user_id}",
    tags=["Admin users"],
    summary="Change an admin user's role, password (revoking their API tokens and sessions), "
    "organization or disabled flag",
    response_model=AdminUser,
    responses=problem_responses(401, 403, 404, 409, 412, 422, 429),
    operation_id="update_admin_user",
)
async def update_admin_user(
    request: Request,
    user_id: str,
    body: AdminUserUpdate,
    if_match: IfMatch = None,
    caller: Caller = Depends(require(Permission.ADMINS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    await _user_or_404(request, user_id, caller)
    if body.role is not None:
        _may_manage(caller, body.role)
    if "organization_id" in body.model_fields_set:
        if caller.organization_id is not None and body.organization_id != caller.organization_id:
            raise ApiProblem(FORBIDDEN, "you can only assign your own organization")
        await _check_organization(request, body.organization_id)

    if user_id == caller.user_id and body.password is not None:
        raise ApiProblem(
            SELF_CHANGE,
            "change your own password with POST /admin/v1/auth/password (it needs the current one)",
        )

    def rules(user: AdminUser) -> None:
        _may_manage(caller, user.role)
        changes_own_access = (
            body.role not in (None, user.role)
            or body.disabled
            or (
                "organization_id" in body.model_fields_set
                and body.organization_id != user.organization_id
            )
        )
        if user_id == caller.user_id and changes_own_access:
            raise ApiProblem(
                SELF_CHANGE,
                "ask another owner or admin to change your role, organization or status",
            )

    check = _UserCheck(caller, user_id, if_match, rules)
    try:
        updated = await _auth(request).update_user(
            user_id,
            role=body.role,
            disabled=body.disabled,
            password=body.password.get_secret_value() if body.password else None,
            organization_id=body.organization_id,
            clear_organization="organization_id" in body.model_fields_set,
            check=check,
        )
    except LastOwner as exc:
        raise ApiProblem(LAST_OWNER, str(exc)) from None
    assert updated is not None
    assert check.seen is not None  # the check passed on the user
    after = updated.as_json()
    if body.password is not None:
        after["password_changed"] = True
    await admin_state(request).audit.record(
        caller=caller,
        facts=facts,
        action="update",
        resource_type="admin_user",
        resource_id=user_id,
        before=check.seen.as_json(),
        after=after,
    )
    return _user_response(updated)


@router.delete(
    "/admin-users/{user_id}",
    tags=["Admin users"],
    summary="Delete an admin user (and their sessions and tokens)",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 409, 412, 429),
    operation_id="delete_admin_user",
)
async def delete_admin_user(
    request: Request,
    user_id: str,
    if_match: IfMatch = None,
    caller: Caller = Depends(require(Permission.ADMINS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    await _user_or_404(request, user_id, caller)

    def rules(user: AdminUser) -> None:
        _may_manage(caller, user.role)
        if user_id == caller.user_id:
            raise ApiProblem(SELF_CHANGE, "ask another owner or admin to delete your account")

    check = _UserCheck(caller, user_id, if_match, rules)
    try:
        await _auth(request).delete_user(user_id, check=check)
    except LastOwner as exc:
        raise ApiProblem(LAST_OWNER, str(exc)) from None
    assert check.seen is not None  # the check passed on the user
    await admin_state(request).audit.record(
        caller=caller,
        facts=facts,
        action="delete",
        resource_type="admin_user",
        resource_id=user_id,
        before=check.seen.as_json(),
        status=204,
    )
    return Response(status_code=204)


# ---------------------------------------------------------------------------- API tokens


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


class ApiTokenCreated(ApiTokenOut):
    token: str = Field(description="The token itself; shown only in this response")


class ApiTokenPage(BaseModel):
    items: list[ApiTokenOut]
    next: str | None


@router.post(
    "/tokens",
    tags=["API tokens"],
    summary="Create an API token for the caller (the token is shown once)",
    status_code=201,
    response_model=ApiTokenCreated,
    responses=created_responses(400, 401, 403, 422, 429),
    operation_id="create_api_token",
)
async def create_api_token(
    request: Request,
    body: ApiTokenCreate,
    caller: Caller = Depends(require(Permission.TOKENS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    if caller.user_id is None:
        raise ApiProblem(FORBIDDEN, "only admin users can own API tokens")
    extra = set(body.scopes) - caller.permissions
    if extra:
        raise ApiProblem(
            FORBIDDEN,
            "a token can't have permissions its owner lacks: "
            + ", ".join(sorted(p.value for p in extra)),
        )
    expires_at = datetime.now(UTC) + timedelta(seconds=body.expires_in)
    token, secret = await _auth(request).create_api_token(
        caller.user_id, body.name, frozenset(body.scopes), expires_at
    )
    await admin_state(request).audit.record(
        caller=caller,
        facts=facts,
        action="create",
        resource_type="api_token",
        resource_id=token.id,
        after=token.as_json(),
        status=201,
    )
    return JSONResponse(
        {**token.as_json(), "token": secret},
        status_code=201,
        headers={"Location": f"/admin/v1/tokens/{token.id}", "Cache-Control": "no-store"},
    )


def _manages_tokens(caller: Caller) -> bool:
    """Owners and admins manage other users' tokens (within their organization, if limited)."""
    return caller.role in (Role.OWNER, Role.ADMIN) and caller.can(Permission.ADMINS_READ)


async def _token_visibility(request: Request, caller: Caller) -> Callable[[ApiToken], bool]:
    """Which tokens the caller sees: their own, and (owners and admins) those of the users
    they see, i.e. of their organization when they are limited to one (admin/scoping.py)."""
    if not _manages_tokens(caller):
        return lambda token: token.user_id == caller.user_id
    scope = await scope_of(request, caller)
    if not scope.limited:
        return lambda token: True
    members = {u.id for u in await _auth(request).list_users() if scope.owns(u.organization_id)}
    return lambda token: token.user_id == caller.user_id or token.user_id in members


@router.get(
    "/tokens",
    tags=["API tokens"],
    summary="List API tokens (your own; owners and admins see those of the users they see)",
    response_model=ApiTokenPage,
    responses=problem_responses(400, 401, 403, 422, 429),
    operation_id="list_api_tokens",
)
async def list_api_tokens(
    request: Request,
    query: ListQuery = Depends(list_query(TOKEN_SORT, "created_at")),
    caller: Caller = Depends(require(Permission.TOKENS_READ)),
) -> Response:
    owner = None if _manages_tokens(caller) else caller.user_id or ""
    visible = await _token_visibility(request, caller)
    tokens = [t.as_json() for t in await _auth(request).list_api_tokens(owner) if visible(t)]
    return query.respond(request, tokens)


@router.delete(
    "/tokens/{token_id}",
    tags=["API tokens"],
    summary="Revoke an API token",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 429),
    operation_id="revoke_api_token",
)
async def revoke_api_token(
    request: Request,
    token_id: str,
    caller: Caller = Depends(require(Permission.TOKENS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    auth = _auth(request)
    token = await auth.get_api_token(token_id)
    if token is None or not (await _token_visibility(request, caller))(token):
        raise ApiProblem(NOT_FOUND, f"API token {token_id!r} does not exist")
    await auth.revoke_api_token(token_id)
    await admin_state(request).audit.record(
        caller=caller,
        facts=facts,
        action="revoke",
        resource_type="api_token",
        resource_id=token_id,
        before=token.as_json(),
        status=204,
    )
    return Response(status_code=204)
