"""`GET /admin/v1/schemas/plugins` and `/schemas/plugins/{name}`: each plugin's config
as JSON Schema 2020-12 (see admin/plugin_schemas.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from portcullis.admin.dependencies import require
from portcullis.admin.plugin_schemas import plugin_names, plugin_schema
from portcullis.admin.problems import NOT_FOUND, ApiProblem, problem_responses
from portcullis.services.rbac import Caller, Permission

router = APIRouter(prefix="/schemas", tags=["Plugin schemas"])
SCHEMA_MEDIA_TYPE = "application/schema+json"


class PluginSchemaRef(BaseModel):
    name: str = Field(description="The plugin name, as a plugin instance's `name`")
    schema_url: str = Field(description="Where its config schema is")
    title: str | None = None


class PluginSchemaList(BaseModel):
    items: list[PluginSchemaRef]


@router.get(
    "/plugins",
    summary="List the plugins and where each config schema is",
    response_model=PluginSchemaList,
    responses=problem_responses(401, 403, 429),
    operation_id="list_plugin_schemas",
)
async def list_plugin_schemas(
    request: Request, caller: Caller = Depends(require(Permission.CONFIG_READ))
) -> dict[str, Any]:
    base = str(request.url_for("get_plugin_schema", name="NAME")).rsplit("/", 1)[0]
    return {
        "items": [
            {
                "name": name,
                "schema_url": f"{base}/{name}",
                "title": plugin_schema(name).get("title"),
            }
            for name in plugin_names()
        ]
    }


@router.get(
    "/plugins/{name}",
    summary="One plugin's config as JSON Schema 2020-12",
    responses={
        200: {
            "description": "The JSON Schema a plugin instance's `config` must satisfy",
            "content": {SCHEMA_MEDIA_TYPE: {"schema": {"type": "object"}}},
        },
        **problem_responses(401, 403, 404, 429),
    },
    operation_id="get_plugin_schema",
)
async def get_plugin_schema(
    name: str, caller: Caller = Depends(require(Permission.CONFIG_READ))
) -> JSONResponse:
    if name not in plugin_names():
        raise ApiProblem(
            NOT_FOUND,
            f"unknown plugin {name!r} (known: {', '.join(plugin_names())})",
            known=plugin_names(),
        )
    return JSONResponse(plugin_schema(name), media_type=SCHEMA_MEDIA_TYPE)
