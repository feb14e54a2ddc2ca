"""Login sessions, admin users and admin API tokens. The operations and their rules are
`services.admin_users.AdminAccessService`; this router parses and responds."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from portcullis.admin.dependencies import RequestFacts, current_caller, request_facts
from portcullis.admin.operations import admin_state, operation, operation_of, respond
from portcullis.admin.pagination import ListQuery, list_query
from portcullis.admin.problems import created_responses, problem_responses
from portcullis.admin.strict_json import check_body
from portcullis.services.admin_auth import AdminUser, AuthService, TokenPair
from portcullis.services.admin_users import (
    TOKEN_SORT,
    USER_SORT,
    AdminAccessService,
    AdminUserCreate,
    AdminUserUpdate,
    ApiTokenCreate,
    ApiTokenOut,
    Email,
    Me,
    PasswordChangeRequest,
    PasswordChangeResult,
    RefreshRequest,
    require_signed_in,
)
from portcullis.services.context import Operation
from portcullis.services.rbac import Caller, Permission, Role

IfMatch = Annotated[
    str | None, Header(description="ETag from a previous read; 412 when it no longer matches")
]

router = APIRouter()


def _service(request: Request) -> AdminAccessService:
    auth: AuthService = request.app.state.authenticator
    return AdminAccessService(auth, admin_state(request).audit)


# ---------------------------------------------------------------------------- sessions


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: Annotated[SecretStr, Field(min_length=1, max_length=1024)]


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int = Field(description="Seconds the access token is valid")
    refresh_token: str
    refresh_expires_in: int


def _tokens(pair: TokenPair) -> JSONResponse:
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
    pair = await _service(request).login(facts, body.email, body.password.get_secret_value())
    return _tokens(pair)


@router.post(
    "/auth/refresh",
    tags=["Auth"],
    summary="Exchange a refresh token for a new token pair (rotation)",
    response_model=TokenResponse,
    responses=problem_responses(401, 422),
    operation_id="refresh_session",
)
async def refresh(request: Request, body: RefreshRequest) -> Response:
    return _tokens(await _service(request).refresh(body.refresh_token))


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
    await _service(request).logout(body.refresh_token)
    return Response(status_code=204)


async def signed_in_user(request: Request, caller: Caller = Depends(current_caller)) -> Operation:
    """The operation of a user in a login session (not an API token, not the bootstrap
    token), whatever their role; 403 otherwise. Then the body is checked strictly, as
    `require` does for the endpoints that need a permission."""
    require_signed_in(caller)
    await check_body(request)
    return await operation_of(request, caller)


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
    op: Operation = Depends(signed_in_user),
) -> Response:
    change = await _service(request).change_own_password(
        op, body.current_password.get_secret_value(), body.new_password.get_secret_value()
    )
    result = {
        "api_tokens_revoked": change.api_tokens_revoked,
        "sessions_ended": change.sessions_ended,
    }
    return JSONResponse(result, headers={"Cache-Control": "no-store"})


@router.get(
    "/auth/me",
    tags=["Auth"],
    summary="Who am I and what may I do",
    response_model=Me,
    responses=problem_responses(401),
    operation_id="whoami",
)
async def whoami(caller: Caller = Depends(current_caller)) -> Me:
    return Me.of(caller)


# ---------------------------------------------------------------------------- admin users


class AdminUserPage(BaseModel):
    items: list[AdminUser]
    next: str | None


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
    op: Operation = Depends(operation(Permission.ADMINS_READ)),
) -> Response:
    return query.respond(request, await _service(request).list_users(op, role))


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
    op: Operation = Depends(operation(Permission.ADMINS_WRITE)),
) -> Response:
    user = await _service(request).create_user(op, body)
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
    op: Operation = Depends(operation(Permission.ADMINS_READ)),
) -> Response:
    return _user_response(await _service(request).get_user(op, user_id))


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
    op: Operation = Depends(operation(Permission.ADMINS_WRITE)),
) -> Response:
    return _user_response(await _service(request).update_user(op, user_id, body, if_match=if_match))


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
    op: Operation = Depends(operation(Permission.ADMINS_WRITE)),
) -> Response:
    await _service(request).delete_user(op, user_id, if_match=if_match)
    return Response(status_code=204)


# ---------------------------------------------------------------------------- API tokens


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
    op: Operation = Depends(operation(Permission.TOKENS_WRITE)),
) -> Response:
    token, secret = await _service(request).create_token(op, body)
    return JSONResponse(
        {**token.as_json(), "token": secret},
        status_code=201,
        headers={"Location": f"/admin/v1/tokens/{token.id}", "Cache-Control": "no-store"},
    )


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
    op: Operation = Depends(operation(Permission.TOKENS_READ)),
) -> Response:
    return query.respond(request, await _service(request).list_tokens(op))


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
    op: Operation = Depends(operation(Permission.TOKENS_WRITE)),
) -> Response:
    await _service(request).revoke_token(op, token_id)
    return Response(status_code=204)
