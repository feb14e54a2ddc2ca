"""Purge the response cache: everything, one route, or one path (exact or by prefix).

`DELETE /admin/v1/cache` with optional query parameters:

- none: every entry;
- `route=<name>`: every entry stored by that route's response-cache;
- `path=/a/b`: entries for exactly that request path (any method, query, consumer
  or variant), in every route or, with `route`, in that route only;
- `path_prefix=/a/`: entries for every path starting with it (same rules).

Paths are request paths as clients send them (before `strip_path`); entries of a
route whose cache key leaves `path` out are reached by route only.

With the Redis backend (`PORTCULLIS_CACHE_BACKEND=redis`) the control plane
deletes the shared entries itself before answering (SCAN + UNLINK; 503 when Redis
can't be reached). Memory caches live in the data-plane workers: the purge is
recorded as a `cache-purge` event in the store, in the same transaction as its
audit entry, and every worker applies it on its next event poll (0.25 s by
default), so it is 202 Accepted. Admins limited to an organization may purge only
routes of their organization (`route` required).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from portcullis.admin.dependencies import RequestFacts, request_facts, require
from portcullis.admin.operations import admin_state
from portcullis.admin.problems import NOT_FOUND, ApiProblem, problem_responses, validation_problem
from portcullis.admin.scoping import scope_of
from portcullis.admin.state import AdminState
from portcullis.cache.backend import CacheUnavailable
from portcullis.cache.purge import PurgeScope
from portcullis.problems import ProblemKind
from portcullis.services.rbac import Caller, Permission
from portcullis.store.engine import write_transaction
from portcullis.store.invalidations import InvalidationKind, append_invalidations

router = APIRouter(tags=["Response cache"])

CACHE_UNAVAILABLE = ProblemKind(
    "cache-unavailable", "The shared response cache is unavailable", 503
)
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._~-]*$"


class CachePurgeOut(BaseModel):
    """What was purged."""

    route: str | None = Field(description="Only this route's entries (null: every route)")
    path: str | None = Field(description="Only entries for exactly this path")
    path_prefix: str | None = Field(description="Only entries for paths starting with this")
    backend: Literal["memory", "redis"]
    deleted: int | None = Field(
        description="Shared entries deleted from Redis; null with the memory backend, whose "
        "workers each purge their own entries within about a second"
    )


@router.delete(
    "/cache",
    summary="Purge cached responses (all, by route, by path or path prefix)",
    status_code=202,
    response_model=CachePurgeOut,
    responses=problem_responses(401, 403, 404, 422, 429, 503),
    operation_id="purge_cache",
)
async def purge_cache(
    request: Request,
    route: Annotated[
        str | None,
        Query(min_length=1, max_length=128, pattern=_NAME, description="A route name"),
    ] = None,
    path: Annotated[
        str | None,
        Query(min_length=1, max_length=2048, pattern="^/", description="An exact request path"),
    ] = None,
    path_prefix: Annotated[
        str | None,
        Query(min_length=1, max_length=2048, pattern="^/", description="A request path prefix"),
    ] = None,
    caller: Caller = Depends(require(Permission.CONFIG_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> JSONResponse:
    if path is not None and path_prefix is not None:
        raise validation_problem(
            [("#/path_prefix", "give path or path_prefix, not both")],
            "give path or path_prefix, not both",
        )
    state = admin_state(request)
    org = await scope_of(request, caller)
    if org.limited:
        if route is None:
            org.require_unlimited("Purging the cache beyond one route")
        config = (await state.editor.state()).config
        if not any(r.name == route and r.organization == org.organization for r in config.routes):
            raise ApiProblem(NOT_FOUND, f"no route named {route!r}")
    scope = PurgeScope.of(route, path, path_prefix)
    backend: Literal["memory", "redis"] = (
        "redis" if state.settings.cache_backend == "redis" else "memory"
    )
    deleted: int | None = None
    if backend == "redis":
        deleted = await _purge_redis(state, scope)
    out = CachePurgeOut(
        route=route, path=path, path_prefix=path_prefix, backend=backend, deleted=deleted
    )
    async with write_transaction(state.engine) as conn:
        await append_invalidations(conn, [(InvalidationKind.CACHE_PURGE, scope.subject())])
        await state.audit.record(
            caller=caller,
            facts=facts,
            action="purge",
            resource_type="cache",
            resource_id=route,
            after=out.model_dump(),
            status=202,
            conn=conn,
        )
    return JSONResponse(out.model_dump(), status_code=202)


async def _purge_redis(state: AdminState, scope: PurgeScope) -> int:
    """Delete the shared entries in scope (a client per purge: purges are rare)."""
    from portcullis.cache.factory import create_cache_backend

    try:
        cache = create_cache_backend(state.settings)
    except ValueError as exc:
        raise ApiProblem(CACHE_UNAVAILABLE, str(exc)) from None
    try:
        return await cache.purge(scope)
    except CacheUnavailable as exc:
        raise ApiProblem(CACHE_UNAVAILABLE, f"Redis could not be purged: {exc}") from None
    finally:
        await cache.aclose()
