"""`DELETE /admin/v1/cache`: purge the response cache (everything, one route, or one
path, exact or by prefix). The operation and its rules are `services.cache`; the
purge is 202 Accepted because memory caches apply it on their next event poll."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from portcullis.admin.operations import admin_state, operation
from portcullis.admin.problems import problem_responses
from portcullis.services.cache import CachePurgeOut, CacheService, PurgeRequest
from portcullis.services.context import Operation
from portcullis.services.rbac import Permission

router = APIRouter(tags=["Response cache"])


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
    query: Annotated[PurgeRequest, Query()],
    op: Operation = Depends(operation(Permission.CONFIG_WRITE)),
) -> JSONResponse:
    out = await _service(request).purge(
        op, route=query.route, path=query.path, path_prefix=query.path_prefix
    )
    return JSONResponse(out.model_dump(), status_code=202)
