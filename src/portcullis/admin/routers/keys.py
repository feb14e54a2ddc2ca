"""Consumer API keys: create, list, show, update, rotate, suspend/resume, revoke, import, export.

Keys live in the store, not in the declarative config; the consumer a key is
issued to must exist in the current config (`resolve_consumer`). The full key is
in exactly two responses, the one that creates it and the rotation that issues
it (both `Cache-Control: no-store`); every other response, the audit log and the
logs carry metadata only. `DELETE /keys/{key_id}` revokes the key (the record
stays, for the audit trail and so a leaked key is recognised as revoked, not
unknown); revocation is final.

ETags cover the representation without `last_used_at`, so traffic on a key does
not make an operator's `If-Match` fail. Organization-limited admins see and
manage only keys whose organization (the consumer's, at creation, kept by id across
renames) is theirs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from portcullis.admin.body_guard import MAX_BODY_EXTENSION
from portcullis.admin.operations import admin_state, as_query_errors, operation, respond
from portcullis.admin.problems import (
    UNSUPPORTED_MEDIA_TYPE,
    ApiProblem,
    problem_responses,
    validation_problem,
)
from portcullis.identity.key_admin import (
    IMPORT_COLUMNS,
    KeyInfo,
    KeySpec,
)
from portcullis.identity.key_repository import SORT_FIELDS
from portcullis.identity.key_repository import KeyPage as StoredPage
from portcullis.services.context import Operation
from portcullis.services.errors import ServiceError
from portcullis.services.keys import (
    KeyOut,
    KeyQuery,
    KeyService,
    ReasonIn,
    RotateIn,
    etag_of_key,
    represent,
)
from portcullis.services.pagination import DEFAULT_LIMIT, MAX_LIMIT
from portcullis.services.rbac import Permission

router = APIRouter(tags=["API keys"])

MAX_IMPORT_BYTES = 8 * 1024 * 1024
MERGE_PATCH = "application/merge-patch+json"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

IfMatch = Annotated[
    str | None, Header(description="ETag from a previous read; 412 when it no longer matches")
]
SortParam = Annotated[
    str | None,
    Query(
        description=f"One of {', '.join(SORT_FIELDS)}; `-` for descending (default -created_at)",
        pattern=r"^-?(" + "|".join(SORT_FIELDS) + ")$",
    ),
]

_IMPORT_EXAMPLE = (
    "consumer,name,environment,scopes,expires_at,ip_allowlist,metadata\r\n"
    'acme,checkout,production,orders:read orders:write,2027-01-01T00:00:00Z,10.0.0.0/8,"{""team"": ""pay""}"\r\n'  # noqa: E501
)


# ---------------------------------------------------------------------------- schemas


class KeyCreated(KeyOut):
    key: str = Field(
        description="The full key. Shown only in this response: store it now.",
        examples=["pc_live_4fJx0Qe8LmZp_…"],
    )


class RotationOut(KeyCreated):
    previous: KeyOut = Field(description="The rotated key, now working until its grace_until")


class KeyPage(BaseModel):
    items: list[KeyOut]
    next: str | None


class ImportedOut(BaseModel):
    row: int = Field(description="Data row of the CSV (1 = the first row after the header)")
    id: str
    prefix: str | None
    consumer: str
    name: str
    key: str | None = Field(
        None, description="The generated key (absent for rows that supplied one)"
    )


class ImportOut(BaseModel):
    created: int
    dry_run: bool
    items: list[ImportedOut]


class KeyListQuery(KeyQuery):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size")
    cursor: str | None = Field(None, description="`next` cursor of the previous page")
    sort: SortParam = None


class KeyExportQuery(KeyQuery):
    format: Literal["csv", "jsonl"] = Field("csv", description="Output format")


# ---------------------------------------------------------------------------- helpers


def _keys(request: Request) -> KeyService:
    state = admin_state(request)
    return KeyService(state.engine, state.secret, state.editor)


def _respond(info: KeyInfo, op: Operation, status: int = 200, **headers: str) -> JSONResponse:
    body = represent(info, op.now())
    return respond(body, status, etag=etag_of_key(body), **headers)


def _created(body: dict[str, Any], key_id: str) -> JSONResponse:
    """A 201 carrying a full key: never stored by caches."""
    return respond(
        body,
        201,
        etag=etag_of_key(body),
        Location=f"/admin/v1/keys/{key_id}",
        **_NO_STORE,
    )


def _next_link(request: Request, cursor: str | None) -> tuple[str | None, dict[str, str]]:
    if cursor is None:
        return None, {}
    url = request.url.path + "?" + str(request.url.include_query_params(cursor=cursor).query)
    return url, {"Link": f'<{url}>; rel="next"'}


def _page(request: Request, op: Operation, page: StoredPage) -> Response:
    url, headers = _next_link(request, page.next_cursor)
    now = op.now()
    return JSONResponse(
        {"items": [represent(i, now) for i in page.items], "next": url}, headers=headers
    )


_READ_ERRORS = problem_responses(401, 403, 404, 429)
_WRITE_ERRORS = problem_responses(401, 403, 404, 409, 412, 422, 429)


# ---------------------------------------------------------------------------- per consumer


@router.post(
    "/consumers/{username}/keys",
    summary="Create an API key for a consumer (the key is shown once)",
    status_code=201,
    response_model=KeyCreated,
    responses={
        201: {"headers": {"Location": {"schema": {"type": "string"}}}},
        **problem_responses(400, 401, 403, 404, 422, 429),
    },
    operation_id="create_api_key",
)
async def create_key(
    request: Request,
    username: str,
    body: Annotated[
        KeySpec,
        Body(
            openapi_examples={
                "key": {
                    "summary": "A production key with two scopes",
                    "value": {
                        "name": "checkout-service",
                        "environment": "production",
                        "scopes": ["orders:read", "orders:write"],
                        "expires_at": "2027-01-01T00:00:00Z",
                        "ip_allowlist": ["203.0.113.0/24", "2001:db8::/32"],
                        "metadata": {"team": "payments"},
                    },
                }
            }
        ),
    ],
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    created = await _keys(request).create(op, username, body)
    out = represent(created.info, op.now())
    return _created({**out, "key": created.key}, created.info.id)


@router.get(
    "/consumers/{username}/keys",
    summary="List a consumer's API keys",
    response_model=KeyPage,
    responses=problem_responses(400, 401, 403, 404, 422, 429),
    operation_id="list_consumer_api_keys",
)
async def list_consumer_keys(
    request: Request,
    username: str,
    query: Annotated[KeyListQuery, Query()],
    op: Operation = Depends(operation(Permission.CREDENTIALS_READ)),
) -> Response:
    try:
        page = await _keys(request).list_consumer_keys(
            op, username, query.as_filter(), limit=query.limit, cursor=query.cursor, sort=query.sort
        )
    except ServiceError as exc:
        raise as_query_errors(exc, ("sort",)) from None
    return _page(request, op, page)


# ---------------------------------------------------------------------------- all keys


@router.get(
    "/keys",
    summary="List API keys",
    response_model=KeyPage,
    responses=problem_responses(400, 401, 403, 422, 429),
    operation_id="list_api_keys",
)
async def list_keys(
    request: Request,
    query: Annotated[KeyListQuery, Query()],
    op: Operation = Depends(operation(Permission.CREDENTIALS_READ)),
) -> Response:
    try:
        page = await _keys(request).list_keys(
            op, query.as_filter(), limit=query.limit, cursor=query.cursor, sort=query.sort
        )
    except ServiceError as exc:
        raise as_query_errors(exc, ("sort",)) from None
    return _page(request, op, page)


@router.get(
    "/keys/export",
    summary="Export API key metadata as CSV or JSON lines (streamed; never keys or hashes)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The keys' metadata",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/jsonl": {"schema": {"type": "string"}},
            },
        },
        **problem_responses(401, 403, 422, 429),
    },
    operation_id="export_api_keys",
)
async def export_keys(
    request: Request,
    query: Annotated[KeyExportQuery, Query()],
    op: Operation = Depends(operation(Permission.CREDENTIALS_READ)),
) -> Response:
    chunks = _keys(request).export(op, query.as_filter(), query.format)

    async def encoded() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield chunk.encode("utf-8")

    if query.format == "csv":
        return StreamingResponse(
            encoded(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="api-keys.csv"'},
        )
    return StreamingResponse(
        encoded(),
        media_type="application/jsonl",
        headers={"Content-Disposition": 'attachment; filename="api-keys.jsonl"'},
    )


@router.post(
    "/keys/import",
    summary="Import API keys from CSV, all or nothing (generated keys are shown once)",
    description=(
        f"Columns (header row, any order): {', '.join(IMPORT_COLUMNS)}; `consumer` and `name`"
        " are required. List cells (scopes, allowed_origins, ip_allowlist) are separated by"
        " spaces, `metadata` is a JSON object, `expires_at` RFC 3339 with a time zone, and an"
        " empty cell takes the default. `key` imports an existing key (a Portcullis key, or"
        " any token of 32+ printable characters; only its hash is stored); without it a key is"
        " generated and returned in this response only. Any problem rejects the whole file"
        " with a 422 listing every problem as `#/rows/<n>/<column>` (n = data row, from 1)."
    ),
    status_code=201,
    response_model=ImportOut,
    responses={
        200: {"description": "Dry run: everything checked, nothing stored", "model": ImportOut},
        **problem_responses(400, 401, 403, 413, 415, 422, 429),
    },
    openapi_extra={
        MAX_BODY_EXTENSION: MAX_IMPORT_BYTES,
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}, "example": _IMPORT_EXAMPLE}},
        },
    },
    operation_id="import_api_keys",
)
async def import_keys(
    request: Request,
    dry_run: Annotated[bool, Query(description="Check everything, store nothing")] = False,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "text/csv":
        raise ApiProblem(UNSUPPORTED_MEDIA_TYPE, "send the keys as text/csv")
    raw = await request.body()  # at most MAX_IMPORT_BYTES (admin/body_guard.py)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise validation_problem([("#", "the CSV is not UTF-8")]) from None
    imported = await _keys(request).import_csv(op, text, dry_run=dry_run)
    items = []
    for item in imported:
        out: dict[str, Any] = {
            "row": item.row,
            "id": item.info.id,
            "prefix": item.info.prefix,
            "consumer": item.info.consumer,
            "name": item.info.name,
        }
        if item.key is not None:
            out["key"] = item.key
        items.append(out)
    return JSONResponse(
        {"created": 0 if dry_run else len(items), "dry_run": dry_run, "items": items},
        status_code=200 if dry_run else 201,
        headers=_NO_STORE,
    )


@router.get(
    "/keys/{key_id}",
    summary="Get an API key's metadata",
    response_model=KeyOut,
    responses=_READ_ERRORS,
    operation_id="get_api_key",
)
async def get_key(
    request: Request,
    key_id: str,
    op: Operation = Depends(operation(Permission.CREDENTIALS_READ)),
) -> Response:
    return _respond(await _keys(request).get(op, key_id), op)


@router.patch(
    "/keys/{key_id}",
    summary="Update an API key's name, scopes, expiry, origins, IP allowlist, plan or metadata",
    response_model=KeyOut,
    responses=_WRITE_ERRORS,
    operation_id="update_api_key",
)
async def update_key(
    request: Request,
    key_id: str,
    patch: Annotated[
        dict[str, Any],
        Body(
            media_type=MERGE_PATCH,
            description="JSON Merge Patch (RFC 7396) of name, scopes, expires_at, "
            "allowed_origins, ip_allowlist, plan and metadata: members replace, null removes",
            openapi_examples={
                "scopes": {"summary": "Replace the scopes", "value": {"scopes": ["orders:read"]}},
                "expiry": {"summary": "Never expire", "value": {"expires_at": None}},
            },
        ),
    ],
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    return _respond(await _keys(request).update(op, key_id, patch, if_match=if_match), op)


@router.delete(
    "/keys/{key_id}",
    summary="Revoke an API key (the record stays; revocation is final)",
    status_code=204,
    response_class=Response,
    responses=_WRITE_ERRORS,
    operation_id="delete_api_key",
)
async def delete_key(
    request: Request,
    key_id: str,
    reason: Annotated[
        str, Query(min_length=1, max_length=500, description="Why (recorded with the key)")
    ] = "revoked via DELETE",
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    await _keys(request).transition(
        op, key_id, "revoke", reason=reason, if_match=if_match, status=204
    )
    return Response(status_code=204)


@router.post(
    "/keys/{key_id}/rotate",
    summary="Rotate an API key: issue a successor (shown once); the old key works for a grace "
    "period",
    status_code=201,
    response_model=RotationOut,
    responses={
        201: {"headers": {"Location": {"schema": {"type": "string"}}}},
        **_WRITE_ERRORS,
    },
    operation_id="rotate_api_key",
)
async def rotate_key(
    request: Request,
    key_id: str,
    body: Annotated[
        RotateIn | None,
        Body(
            openapi_examples={
                "day": {"summary": "Old key works one more day", "value": {"grace_seconds": 86400}},
                "now": {"summary": "Old key stops now", "value": {"grace_seconds": 0}},
            }
        ),
    ] = None,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    options = body or RotateIn()
    rotation = await _keys(request).rotate(
        op,
        key_id,
        grace_seconds=options.grace_seconds,
        expires_at=options.expires_at if "expires_at" in options.model_fields_set else "keep",
        if_match=if_match,
    )
    now = op.now()
    new = represent(rotation.new, now)
    return _created(
        {**new, "key": rotation.key, "previous": represent(rotation.old, now)}, rotation.new.id
    )


@router.post(
    "/keys/{key_id}/revoke",
    summary="Revoke an API key (final; takes effect on every worker within a second)",
    response_model=KeyOut,
    responses=_WRITE_ERRORS,
    operation_id="revoke_api_key",
)
async def revoke_key(
    request: Request,
    key_id: str,
    body: ReasonIn,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    info = await _keys(request).transition(
        op, key_id, "revoke", reason=body.reason, if_match=if_match
    )
    return _respond(info, op)


@router.post(
    "/keys/{key_id}/suspend",
    summary="Suspend an API key until it is resumed",
    response_model=KeyOut,
    responses=_WRITE_ERRORS,
    operation_id="suspend_api_key",
)
async def suspend_key(
    request: Request,
    key_id: str,
    body: ReasonIn,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    info = await _keys(request).transition(
        op, key_id, "suspend", reason=body.reason, if_match=if_match
    )
    return _respond(info, op)


@router.post(
    "/keys/{key_id}/resume",
    summary="Resume a suspended API key",
    response_model=KeyOut,
    responses=_WRITE_ERRORS,
    operation_id="resume_api_key",
)
async def resume_key(
    request: Request,
    key_id: str,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    info = await _keys(request).transition(op, key_id, "resume", reason=None, if_match=if_match)
    return _respond(info, op)
