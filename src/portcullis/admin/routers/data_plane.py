"""The data-plane workers the control plane knows of, from their heartbeats (read only)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from portcullis.admin.dependencies import require, state_of
from portcullis.admin.pagination import ListQuery, list_query
from portcullis.admin.problems import problem_responses
from portcullis.admin.rbac import Caller, Permission
from portcullis.admin.readiness import NodeState, classify
from portcullis.runtime.heartbeat import list_nodes

router = APIRouter(prefix="/data-plane", tags=["Data plane"])
NODE_SORT = ("node_name", "config_version", "heartbeat_at", "started_at", "state")


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
    caller: Caller = Depends(require(Permission.CONFIG_READ)),
) -> Response:
    admin = state_of(request)
    statuses = classify(
        await list_nodes(admin.engine),
        await admin.editor.repository.head(),
        now=datetime.now(UTC),
        heartbeat_interval=admin.settings.heartbeat_interval,
        poll_interval=admin.settings.config_poll_interval,
    )
    items = [
        s.as_json()
        for s in statuses
        if (state is None or s.state is state)
        and (node_name is None or s.node.node_name == node_name)
    ]
    return query.respond(request, items)
