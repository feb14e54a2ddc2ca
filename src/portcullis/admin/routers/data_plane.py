"""The data-plane workers the control plane knows of, and the upstream health they report.

Both come from the workers' heartbeats (read only). Workers serve every
organization (their list names no tenant's entity); upstream health is per
upstream, so an organization-limited admin sees only their organization's
upstreams and those of their services given by URL. The operations are
`services.data_plane.DataPlaneService`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from portcullis.admin.operations import admin_state, operation
from portcullis.admin.pagination import ListQuery, list_query
from portcullis.admin.problems import problem_responses
from portcullis.services.context import Operation
from portcullis.services.data_plane import NODE_SORT, DataPlaneService, NodeState
from portcullis.services.rbac import Permission

router = APIRouter(prefix="/data-plane", tags=["Data plane"])


class DataPlaneNodeOut(BaseModel):
    id: str = Field(description="node_name:hostname:pid of the worker process")
    node_name: str
    pid: int
    config_version: int = Field(description="Config version of the worker's snapshot")
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float = Field(description="Seconds since the last heartbeat")
    state: NodeState = Field(
        description="current: serves the current config; propagating: behind, within the "
        "propagation window; lagging: still behind after it; stale: no recent heartbeat"
    )


class DataPlaneNodePage(BaseModel):
    items: list[DataPlaneNodeOut]
    next: str | None


@router.get(
    "/nodes",
    summary="List data-plane workers and the config version each serves",
    response_model=DataPlaneNodePage,
    responses={
        200: {
            "headers": {
                "Link": {
                    "description": '`rel="next"` link when there are more items',
                    "schema": {"type": "string"},
                }
            }
        },
        **problem_responses(400, 401, 403, 422, 429),
    },
    operation_id="list_data_plane_nodes",
)
async def list_data_plane_nodes(
    request: Request,
    query: ListQuery = Depends(list_query(NODE_SORT, "node_name")),
    state: Annotated[NodeState | None, Query(description="Only workers in this state")] = None,
    node_name: Annotated[str | None, Query(description="Only workers of this node")] = None,
    op: Operation = Depends(operation(Permission.CONFIG_READ)),
) -> Response:
    items = await _service(request).nodes(op, state=state, node_name=node_name)
    return query.respond(request, items)


class UpstreamTargetHealthOut(BaseModel):
    target: str = Field(description="host:port of the target")
    status: Literal["up", "degraded", "down"] = Field(
        description="up: every worker sees it healthy with a closed breaker; down: no worker "
        "can send it traffic (unhealthy, or breaker open); degraded: in between"
    )
    workers: int = Field(description="Live workers reporting this target")
    unhealthy_workers: int = Field(description="Workers whose health checks mark it down")
    breakers: dict[str, int] = Field(
        description="Workers per circuit-breaker state (closed, open, half-open)"
    )


class UpstreamHealthOut(BaseModel):
    name: str = Field(description="Upstream name (`<service>@url` for a service given by url)")
    status: Literal["up", "degraded", "down"] = Field(
        description="up: all targets up; down: all targets down; degraded: otherwise"
    )
    targets: list[UpstreamTargetHealthOut]


class UpstreamHealthSummaryOut(BaseModel):
    workers: int = Field(description="Live workers whose heartbeat reported upstream health")
    upstreams: list[UpstreamHealthOut]


@router.get(
    "/upstreams",
    summary="Upstream target health and circuit-breaker states, merged over live workers",
    response_model=UpstreamHealthSummaryOut,
    responses=problem_responses(401, 403, 429),
    operation_id="get_upstream_health",
)
async def get_upstream_health(
    request: Request, op: Operation = Depends(operation(Permission.CONFIG_READ))
) -> dict[str, Any]:
    return await _service(request).upstream_health(op)


def _service(request: Request) -> DataPlaneService:
    state = admin_state(request)
    return DataPlaneService(
        state.engine,
        state.editor,
        heartbeat_interval=state.settings.heartbeat_interval,
        poll_interval=state.settings.config_poll_interval,
    )
