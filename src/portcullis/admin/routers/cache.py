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
routes of their organization (`route` required). The operation is
`services.cache.CacheService.purge`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from portcullis.admin.operations import admin_state, operation
from portcullis.admin.problems import problem_responses
from portcullis.services.cache import CachePurgeOut, CacheService
from portcullis.services.context import Operation
from portcullis.services.rbac import Permission

router = APIRouter(tags=["Response cache"])

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._~-]*$"


def _service(request: Request) -> CacheService:
    state = admin_state(request)
    return CacheService(state.engine, state.editor, state.settings)


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
    op: Operation = Depends(operation(Permission.CONFIG_WRITE)),
) -> JSONResponse:
    out = await _service(request).purge(op, route=route, path=path, path_prefix=path_prefix)
    return JSONResponse(out.model_dump(), status_code=202)
