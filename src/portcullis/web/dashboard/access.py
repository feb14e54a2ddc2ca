"""Who a dashboard request is: the admin user of its session, as the same `Caller` a
REST access token of that user is (services.admin_auth.user_caller: same role,
permissions and organization scope), and the `Operation` pages pass to services.

    @router.get("/things")
    async def things(request: Request, op: Operation = Depends(operation(Permission.CONFIG_READ))):
        ...
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends
from starlette.requests import Request

from portcullis.services.admin_auth import AuthService, user_caller
from portcullis.services.context import Operation, RequestFacts
from portcullis.services.rbac import Caller, Permission
from portcullis.services.scoping import resolve_scope
from portcullis.services.state import AdminState
from portcullis.web.errors import LoginRequired, PageForbidden
from portcullis.web.sessions import current_session, web_app_of


def admin_state(request: Request) -> AdminState:
    state: AdminState = web_app_of(request).services("admin")
    return state


def auth_service(request: Request) -> AuthService:
    auth: AuthService = web_app_of(request).services("auth")
    return auth


def _here(request: Request) -> str:
    path = request.url.path
    return f"{path}?{request.url.query}" if request.url.query else path


async def signed_in(request: Request) -> Caller | None:
    """The caller of the request's dashboard session; None without one (or when the
    user was disabled or deleted since)."""
    cached = getattr(request.state, "caller", None)
    if isinstance(cached, Caller):
        return cached
    session = await current_session(request)
    if session is None:
        return None
    user = await auth_service(request).get_user(session.subject_id)
    if user is None or user.disabled:
        return None
    caller = user_caller(user, session.id)
    request.state.caller = caller
    request.state.principal = caller
    return caller


async def current_caller(request: Request) -> Caller:
    """Dependency: the signed-in caller; `LoginRequired` (to the sign-in page) otherwise."""
    caller = await signed_in(request)
    if caller is None:
        raise LoginRequired(_here(request) if request.method == "GET" else "")
    return caller


async def operation_of(request: Request, caller: Caller) -> Operation:
    state = admin_state(request)
    facts = RequestFacts.of(
        request.headers.get("x-request-id", ""), request.client.host if request.client else None
    )
    scope = await resolve_scope(state.engine, caller.organization_id)
    return Operation.for_caller(caller, facts, state.audit, scope)


def require(permission: Permission) -> Callable[..., Awaitable[Caller]]:
    """Dependency: the signed-in caller, once they hold `permission` (a 403 page else)."""

    async def check(caller: Caller = Depends(current_caller)) -> Caller:
        if not caller.can(permission):
            raise PageForbidden(f"this page needs the {permission.value!r} permission")
        return caller

    check.__name__ = f"require_{permission.name.lower()}"
    return check


def operation(permission: Permission) -> Callable[..., Awaitable[Operation]]:
    """Dependency: the request's `Operation` once the caller holds `permission`."""

    async def build(request: Request, caller: Caller = Depends(require(permission))) -> Operation:
        return await operation_of(request, caller)

    build.__name__ = f"operation_{permission.name.lower()}"
    return build
