"""The whole gateway config: export, import (apply), diff, version history and rollback.

The config spans every organization. Admins limited to one organization get an
export filtered to their organization's entities; import, diff, the version
history and rollback answer them 403 (see admin/scoping.py).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

import yaml
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi import Path as FastApiPath
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from portcullis.admin.body_guard import MAX_BODY_EXTENSION
from portcullis.admin.dependencies import RequestFacts, request_facts, require
from portcullis.admin.operations import admin_state
from portcullis.admin.pagination import keyset_page
from portcullis.admin.problems import (
    MALFORMED_BODY,
    NOT_FOUND,
    UNSUPPORTED_MEDIA_TYPE,
    ApiProblem,
    malformed_body,
    problem_responses,
    validation_problem,
)
from portcullis.admin.scoping import scope_of
from portcullis.model.config import GatewayConfig
from portcullis.model.diff import MISSING, ConfigDiff, diff_configs
from portcullis.model.loader import ConfigError, config_document, dump_config
from portcullis.services.config_editor import ConfigState, Edit, validate_document
from portcullis.services.pagination import parse_int_cursor
from portcullis.services.preconditions import check_if_match, etag_of
from portcullis.services.rbac import Caller, Permission
from portcullis.store.config_repository import ConfigVersion, ConfigVersionSummary, OnWrite
from portcullis.store.errors import NotFound

router = APIRouter(prefix="/config", tags=["Config"])
read = Depends(require(Permission.CONFIG_READ))
write = Depends(require(Permission.CONFIG_WRITE))
VERSION_HEADER = "Portcullis-Config-Version"
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
MAX_VERSION = 2**62
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


class VersionInfo(BaseModel):
    """A stored config version (without its document)."""

    version: int
    created_at: datetime
    author: str | None
    comment: str | None
    checksum: str
    source_version: int | None = Field(
        None, description="For a rollback, the version whose config it restored"
    )


class ApplyResult(VersionInfo):
    created: bool = Field(description="False when the config was unchanged and nothing stored")


class VersionDetail(VersionInfo):
    config: dict[str, Any]


class VersionPage(BaseModel):
    items: list[VersionInfo]
    next: str | None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: StrictInt = Field(
        ge=1, le=MAX_VERSION, description="The version whose config becomes current again"
    )


class FieldChangeOut(BaseModel):
    path: str
    old: Any = Field(None, description="Absent when the value was added")
    new: Any = Field(None, description="Absent when the value was removed")


class EntityChangeOut(BaseModel):
    key: str
    fields: list[FieldChangeOut]


class KindDiffOut(BaseModel):
    kind: str
    added: list[str]
    removed: list[str]
    changed: list[EntityChangeOut]
    reordered: bool


class DiffOut(BaseModel):
    empty: bool
    summary: str
    kinds: list[KindDiffOut]


def _info(v: ConfigVersion | ConfigVersionSummary) -> dict[str, Any]:
    return VersionInfo(
        version=v.version,
        created_at=v.created_at,
        author=v.author,
        comment=v.comment,
        checksum=v.checksum,
        source_version=v.source_version,
    ).model_dump(mode="json")


def config_etag(state: ConfigState) -> str:
    return f'"{state.checksum}"' if state.checksum else etag_of(state.config.canonical())


def diff_json(diff: ConfigDiff) -> dict[str, Any]:
    """The diff as JSON; a side that is absent is left out of its field change."""

    def change(f: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"path": f.path}
        if f.old is not MISSING:
            out["old"] = f.old
        if f.new is not MISSING:
            out["new"] = f.new
        return out

    return {
        "empty": diff.is_empty,
        "summary": diff.summary(),
        "kinds": [
            {
                "kind": k.kind,
                "added": list(k.added),
                "removed": list(k.removed),
                "changed": [
                    {"key": c.key, "fields": [change(f) for f in c.fields]} for c in k.changed
                ],
                "reordered": k.reordered,
            }
            for k in diff.kinds
        ],
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
    if media == "application/json" or media.endswith("+json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise malformed_body("JSON", exc.msg, exc.lineno, exc.colno) from None
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
    caller: Caller = read,
) -> Response:
    scope = await scope_of(request, caller)
    current = await admin_state(request).editor.state()
    config = scope.filter_config(current.config)
    etag = etag_of(config.canonical()) if scope.limited else config_etag(current)
    headers = {"ETag": etag, VERSION_HEADER: str(current.version)}
    if format == "yaml":
        text = dump_config(config, format="yaml", include_defaults=include_defaults)
        return Response(text, media_type="application/yaml", headers=headers)
    document = config_document(config, include_defaults=include_defaults)
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
        str | None, Query(max_length=1000, description="Stored with the version")
    ] = None,
    if_match: Annotated[
        str | None, Header(description="ETag of the config this one replaces; 412 if changed")
    ] = None,
    caller: Caller = write,
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    (await scope_of(request, caller)).require_unlimited("importing a config")
    data = await read_document(request)
    state = admin_state(request)
    config = validate_document(data)
    after = config.canonical()

    def plan(current: ConfigState) -> Edit[None]:
        check_if_match(if_match, config_etag(current))
        return Edit(
            after,
            None,
            comment=comment or "admin API: import",
            on_write=state.audit.on_config_write(
                caller=caller,
                facts=facts,
                action="apply",
                resource_type="config",
                resource_id=_version_id,
                before=current.config.canonical(),
                after=after,
                only_if_created=True,
                schema=GatewayConfig,
            ),
        )

    stored = (await state.editor.mutate(plan, author=caller.actor)).stored
    assert stored is not None
    return _applied_response(stored)


@router.post(
    "/diff",
    summary="Compare a config document with the current config",
    response_model=DiffOut,
    responses=problem_responses(400, 401, 403, 415, 422, 429),
    openapi_extra=_DOCUMENT_BODY,
    operation_id="diff_config",
)
async def diff_config(request: Request, caller: Caller = read) -> Response:
    (await scope_of(request, caller)).require_unlimited("a whole-config diff")
    config = validate_document(await read_document(request))
    current = await admin_state(request).editor.state()
    return JSONResponse(diff_json(diff_configs(current.config, config)))


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
    caller: Caller = read,
) -> Response:
    (await scope_of(request, caller)).require_unlimited("the config version history")
    before = None if cursor is None else parse_int_cursor(cursor)
    rows = await admin_state(request).editor.repository.list_versions(limit + 1, before)
    return keyset_page(request, rows, limit, key=lambda v: v.version, render=_info)


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
    caller: Caller = read,
) -> Response:
    (await scope_of(request, caller)).require_unlimited("a stored config version")
    try:
        stored = await admin_state(request).editor.repository.get(version)
    except NotFound:
        raise ApiProblem(NOT_FOUND, f"config version {version} does not exist") from None
    body = {**_info(stored), "config": config_document(stored.config)}
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
    caller: Caller = write,
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    (await scope_of(request, caller)).require_unlimited("a rollback")
    state = admin_state(request)

    def audit(current: ConfigState) -> OnWrite:
        return state.audit.on_config_write(
            caller=caller,
            facts=facts,
            action="rollback",
            resource_type="config",
            resource_id=_version_id,
            before=current.config.canonical(),
            after=lambda stored: stored.config.canonical(),
            only_if_created=True,
            schema=GatewayConfig,
        )

    try:
        stored = await state.editor.rollback(
            body.version,
            author=caller.actor,
            precondition=lambda current: check_if_match(if_match, config_etag(current)),
            on_write=audit,
        )
    except NotFound:
        raise ApiProblem(NOT_FOUND, f"config version {body.version} does not exist") from None
    except ConfigError as exc:
        raise validation_problem(
            [("#/version", f"that version no longer validates: {issue}") for issue in exc.errors]
        ) from None
    return _applied_response(stored)


def _version_id(stored: ConfigVersion) -> str:
    return str(stored.version)


def _applied_response(stored: ConfigVersion) -> JSONResponse:
    body = {**_info(stored), "created": stored.created}
    return JSONResponse(
        body, headers={"ETag": f'"{stored.checksum}"', VERSION_HEADER: str(stored.version)}
    )
