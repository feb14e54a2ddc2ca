"""What every admin router shares: the application's state, the `Operation` a request
stands for, and JSON responses with their ETag.

Routers parse HTTP (path, query, headers, body), call a service
(`portcullis.services`) with `operation(...)`, and shape the answer with `respond`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from portcullis.admin.dependencies import request_facts, require
from portcullis.admin.problems import validation_problem
from portcullis.admin.scoping import scope_of
from portcullis.services.context import Operation
from portcullis.services.errors import VALIDATION_FAILED, ServiceError
from portcullis.services.preconditions import etag_of
from portcullis.services.rbac import Caller, Permission
from portcullis.services.state import AdminState


def admin_state(request: Request) -> AdminState:
    """The admin application's shared services."""
    state: AdminState = request.app.state.admin
    return state


def respond(
    body: Any, status: int = 200, *, etag: str | None = None, **headers: str
) -> JSONResponse:
    """A JSON response with an ETag (`etag`, else the body's own) and any other headers."""
    tag = etag if etag is not None else etag_of(body)
    return JSONResponse(body, status_code=status, headers={"ETag": tag, **headers})


async def operation_of(request: Request, caller: Caller) -> Operation:
    """The operation an authenticated request stands for: its caller, their organization
    scope, the request facts the audit log records."""
    return Operation.for_caller(
        caller,
        request_facts(request),
        admin_state(request).audit,
        await scope_of(request, caller),
    )


def operation(permission: Permission) -> Callable[..., Awaitable[Operation]]:
    """A dependency: the request's `Operation`, once the caller holds `permission` (403
    otherwise; see `dependencies.require`)."""

    async def build(request: Request, caller: Caller = Depends(require(permission))) -> Operation:
        return await operation_of(request, caller)

    build.__name__ = f"operation_{permission.name.lower()}"
    return build


def as_query_errors(exc: ServiceError, parameters: Iterable[str]) -> ServiceError:
    """A validation refusal of inputs that came as query `parameters`, re-pointed: the
    request body has no such member, so the problem names the parameter instead."""
    names = frozenset(parameters)
    if exc.kind is not VALIDATION_FAILED or not any(e.field in names for e in exc.errors):
        return exc
    return validation_problem(
        [
            ("#", f"query parameter {e.field!r}: {e.detail}")
            if e.field in names
            else (e.pointer, e.detail)
            for e in exc.errors
        ]
    )
