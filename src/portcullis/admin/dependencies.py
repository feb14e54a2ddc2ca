"""FastAPI dependencies shared by the admin routers: the caller, permissions, request facts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from portcullis.admin.problems import FORBIDDEN, UNAUTHORIZED, ApiProblem
from portcullis.admin.strict_json import check_body
from portcullis.services.context import RequestFacts as RequestFacts
from portcullis.services.rbac import Caller, Permission

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A JWT access token from /admin/v1/auth/login, or an admin API token (pca_…).",
)


class Authenticator(Protocol):
    """Turns a bearer credential into a caller (None when it is not valid)."""

    async def authenticate(self, credential: str) -> Caller | None: ...


def request_facts(request: Request) -> RequestFacts:
    """The client's `X-Request-Id` when well-formed, else a new one; and the peer address."""
    cached = getattr(request.state, "facts", None)
    if isinstance(cached, RequestFacts):
        return cached
    facts = RequestFacts.of(
        request.headers.get("x-request-id", ""), request.client.host if request.client else None
    )
    request.state.facts = facts
    return facts


def missing_credential() -> ApiProblem:
    """The 401 for a request without a bearer credential (also sent by admin/body_guard.py)."""
    return ApiProblem(
        UNAUTHORIZED,
        "send 'Authorization: Bearer <token>'",
        headers={"www-authenticate": 'Bearer realm="portcullis-admin"'},
    )


async def current_caller(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Caller:
    """The authenticated caller; 401 problem (with `WWW-Authenticate`) otherwise."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise missing_credential()
    authenticator: Authenticator = request.app.state.authenticator
    caller = await authenticator.authenticate(credentials.credentials)
    if caller is None:
        raise ApiProblem(
            UNAUTHORIZED,
            "the token is invalid, expired or revoked",
            headers={"www-authenticate": 'Bearer realm="portcullis-admin", error="invalid_token"'},
        )
    request.state.caller = caller
    return caller


async def deployment_wide_reader(request: Request, permission: Permission) -> bool | None:
    """For endpoints open to anyone that show more to operators (`/health/ready`,
    `/metrics`): True when the request's bearer credential is a caller of the whole
    deployment (no organization) holding `permission`; False for any other valid
    caller, None without a valid credential."""
    scheme, _, credential = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    authenticator: Authenticator = request.app.state.authenticator
    caller = await authenticator.authenticate(credential.strip())
    if caller is None:
        return None
    return caller.organization_id is None and caller.can(permission)


def require(permission: Permission) -> Callable[..., Awaitable[Caller]]:
    """A dependency that returns the caller if they hold `permission`, else 403.

    Once the caller may use the endpoint, its JSON body is checked strictly
    (admin/strict_json.py): every authenticated endpoint goes through here.
    """

    async def check(request: Request, caller: Caller = Depends(current_caller)) -> Caller:
        if not caller.can(permission):
            raise ApiProblem(
                FORBIDDEN,
                f"this endpoint needs the {permission.value!r} permission",
                required_permission=permission.value,
            )
        await check_body(request)
        return caller

    check.__name__ = f"require_{permission.name.lower()}"
    return check
