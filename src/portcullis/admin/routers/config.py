"""The whole gateway config: export, import (apply), diff, version history and rollback.

The config spans every organization. Admins limited to one organization get an
export filtered to their organization's entities; import, diff, the version
history and rollback answer them 403. The operations are `services.config.ConfigService`;
this router reads documents (JSON or YAML) and writes the config headers.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import yaml
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi import Path as FastApiPath
from fastapi.responses import JSONResponse

from portcullis.admin.body_guard import MAX_BODY_EXTENSION
from portcullis.admin.operations import admin_state, operation
from portcullis.admin.pagination import keyset_page
from portcullis.admin.problems import (
    MALFORMED_BODY,
    UNSUPPORTED_MEDIA_TYPE,
    ApiProblem,
    malformed_body,
    problem_responses,
)
from portcullis.model.loader import config_document, dump_config
from portcullis.services.config import (
    MAX_COMMENT,
    MAX_VERSION,
    ApplyResult,
    ConfigService,
    DiffOut,
    RollbackRequest,
    VersionDetail,
    VersionPage,
    applied,
    diff_json,
    version_info,
)
from portcullis.services.context import Operation
from portcullis.services.rbac import Permission
from portcullis.store.config_repository import ConfigVersion

router = APIRouter(prefix="/config", tags=["Config"])
read = Depends(operation(Permission.CONFIG_READ))
write = Depends(operation(Permission.CONFIG_WRITE))
VERSION_HEADER = "Portcullis-Config-Version"
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
_DOCUMENT_BODY: dict[str, Any] = {
    MAX_BODY_EXTENSION: MAX_DOCUMENT_BYTES,
    "requestBody": {
        "required": True,
        "description": "A complete gateway config document (the format of `config export`).",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "object"}},
        },
    },
}
_CONFIG_HEADERS = {
    "ETag": {"description": "Entity tag of the current config", "schema": {"type": "string"}},
    VERSION_HEADER: {"description": "Current config version", "schema": {"type": "integer"}},
}


async def read_document(request: Request) -> Any:
    """The request body as data: JSON (default) or YAML by `Content-Type`."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()  # at most MAX_DOCUMENT_BYTES (admin/body_guard.py)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiProblem(MALFORMED_BODY, f"the body is not UTF-8 text (byte {exc.start})") from None
    if media in ("application/yaml", "application/x-yaml", "text/yaml"):
        try:
            return yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
            raise malformed_body("YAML", str(exc.problem or exc.context), line, column) from None
        except yaml.YAMLError as exc:
            raise malformed_body("YAML", str(exc), None, None) from None
        except RecursionError:
            raise malformed_body("YAML", "nested too deeply", None, None) from None
    if media == "application/json" or media.endswith("+json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise malformed_body("JSON", exc.msg, exc.lineno, exc.colno) from None
        except RecursionError:
            raise malformed_body("JSON", "nested too deeply", None, None) from None
    raise ApiProblem(
        UNSUPPORTED_MEDIA_TYPE, f"send application/json or application/yaml, not {media!r}"
    )


@router.get(
    "",
    summary="Export the current config",
    response_model=dict[str, Any],
    responses={
        200: {
            "headers": _CONFIG_HEADERS,
            "content": {"application/yaml": {"schema": {"type": "object"}}},
        },
        **problem_responses(401, 403, 422, 429),
    },
    operation_id="export_config",
)
async def export_config(
    request: Request,
    format: Annotated[Literal["json", "yaml"], Query(description="Document format")] = "json",
    include_defaults: Annotated[
        bool, Query(description="Write every field, defaults included")
    ] = False,
    op: Operation = read,
) -> Response:
    export = await _service(request).export(op)
    headers = {"ETag": export.etag, VERSION_HEADER: str(export.version)}
    if format == "yaml":
        text = dump_config(export.config, format="yaml", include_defaults=include_defaults)
        return Response(text, media_type="application/yaml", headers=headers)
    document = config_document(export.config, include_defaults=include_defaults)
    return JSONResponse(document, headers=headers)


@router.put(
    "",
    summary="Import a config document and apply it as the new version",
    response_model=ApplyResult,
    responses={
        200: {"headers": _CONFIG_HEADERS},
        **problem_responses(400, 401, 403, 409, 412, 415, 422, 429),
    },
    openapi_extra=_DOCUMENT_BODY,
    operation_id="apply_config",
)
async def apply_config(
    request: Request,
    comment: Annotated[
        str | None, Query(max_length=MAX_COMMENT, description="Stored with the version")
    ] = None,
    if_match: Annotated[
        str | None, Header(description="ETag of the config this one replaces; 412 if changed")
    ] = None,
    op: Operation = write,
) -> Response:
    stored = await _service(request).apply(
        op, lambda: read_document(request), comment=comment, if_match=if_match
    )
    return _applied_response(stored)


@router.post(
    "/diff",
    summary="Compare a config document with the current config",
    response_model=DiffOut,
    responses=problem_responses(400, 401, 403, 415, 422, 429),
    openapi_extra=_DOCUMENT_BODY,
    operation_id="diff_config",
)
async def diff_config(request: Request, op: Operation = read) -> Response:
    diff = await _service(request).diff(op, lambda: read_document(request))
    return JSONResponse(diff_json(diff))


@router.get(
    "/versions",
    summary="List stored config versions, newest first",
    response_model=VersionPage,
    responses=problem_responses(400, 401, 403, 422, 429),
    operation_id="list_config_versions",
)
async def list_versions(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 50,
    cursor: Annotated[str | None, Query(description="`next` cursor of the previous page")] = None,
    op: Operation = read,
) -> Response:
    rows = await _service(request).versions(op, limit + 1, cursor)
    return keyset_page(request, rows, limit, key=lambda v: v.version, render=version_info)


@router.get(
    "/versions/{version}",
    summary="Get one config version with its document",
    response_model=VersionDetail,
    responses=problem_responses(401, 403, 404, 422, 429),
    operation_id="get_config_version",
)
async def get_version(
    request: Request,
    version: Annotated[int, FastApiPath(ge=1, le=MAX_VERSION)],
    op: Operation = read,
) -> Response:
    stored = await _service(request).version(op, version)
    body = {**version_info(stored), "config": config_document(stored.config)}
    return JSONResponse(body, headers={"ETag": f'"{stored.checksum}"'})


@router.post(
    "/rollback",
    summary="Make an earlier version's config current again (as a new version)",
    response_model=ApplyResult,
    responses={
        200: {"headers": _CONFIG_HEADERS},
        **problem_responses(401, 403, 404, 409, 412, 422, 429),
    },
    operation_id="rollback_config",
)
async def rollback(
    request: Request,
    body: RollbackRequest,
    if_match: Annotated[
        str | None, Header(description="ETag of the current config; 412 if it changed")
    ] = None,
    op: Operation = write,
) -> Response:
    stored = await _service(request).rollback(op, body.version, if_match=if_match)
    return _applied_response(stored)


def _service(request: Request) -> ConfigService:
    return ConfigService(admin_state(request).editor)


def _applied_response(stored: ConfigVersion) -> JSONResponse:
    return JSONResponse(
        applied(stored),
        headers={"ETag": f'"{stored.checksum}"', VERSION_HEADER: str(stored.version)},
    )
