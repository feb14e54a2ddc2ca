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
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from portcullis.admin.body_guard import MAX_BODY_EXTENSION
from portcullis.admin.conditional import Precondition, apply_merge_patch, etag_of
from portcullis.admin.config_editor import ConfigState
from portcullis.admin.dependencies import RequestFacts, request_facts, require
from portcullis.admin.pagination import DEFAULT_LIMIT, MAX_LIMIT
from portcullis.admin.problems import (
    INVALID_CURSOR,
    NOT_FOUND,
    UNSUPPORTED_MEDIA_TYPE,
    ApiProblem,
    problem_responses,
    validation_problem,
)
from portcullis.admin.rbac import Caller, Permission
from portcullis.admin.scoping import OrgScope, scope_of
from portcullis.admin.state import AdminState
from portcullis.identity.key_admin import (
    DEFAULT_GRACE_SECONDS,
    IMPORT_COLUMNS,
    MAX_GRACE_SECONDS,
    CreatedKey,
    ImportedKey,
    ImportRejected,
    KeyInfo,
    KeySettings,
    KeySpec,
    KeyState,
    Reason,
    UnknownConsumer,
    check_import_consumers,
    export_csv,
    export_jsonl,
    parse_import_csv,
    resolve_consumer,
)
from portcullis.identity.key_repository import (
    SORT_FIELDS,
    InvalidCursor,
    KeyConflict,
    KeyFilter,
    KeyInvalid,
    KeyNotFound,
    KeyRepository,
)
from portcullis.identity.keys import Environment
from portcullis.model.config import GatewayConfig
from portcullis.problems import ProblemKind

router = APIRouter(tags=["API keys"])

KEY_STATE_CONFLICT = ProblemKind(
    "key-state-conflict", "The key's current state does not allow this change", 409
)
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


class KeyOut(BaseModel):
    """An API key's metadata (never the key or its hash)."""

    id: str = Field(examples=["4fJx0Qe8LmZp"])
    prefix: str | None = Field(
        description="The key's non-secret beginning (null for imported foreign-format keys)",
        examples=["pc_live_4fJx0Qe8LmZp"],
    )
    consumer: str
    organization: str | None = Field(description="The organization's current name")
    organization_id: str | None = Field(
        description="The organization the key belongs to (kept when it is renamed)"
    )
    environment: Environment
    name: str
    scopes: list[str]
    expires_at: datetime | None
    allowed_origins: list[str]
    ip_allowlist: list[str]
    plan: str | None
    metadata: dict[str, str | int | float | bool | None]
    status: Literal["active", "suspended", "revoked"]
    status_reason: str | None
    state: KeyState = Field(description="Whether the key works now, and if not, why")
    rotated_from: str | None
    replaced_by: str | None
    grace_until: datetime | None = Field(description="A rotated key works until then")
    created_by: str
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None = Field(description="Updated in batches, not per request")


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


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: int = Field(
        DEFAULT_GRACE_SECONDS,
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="How long the old key keeps working (0: it stops now)",
    )
    expires_at: AwareDatetime | None = Field(
        None, description="The new key's expiry (omitted: the old key's; null: never)"
    )


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field(examples=["leaked in a public repository"])


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


class KeyQuery(BaseModel):
    """Filters shared by the listing and the export."""

    model_config = ConfigDict(extra="forbid")

    consumer: str | None = Field(None, description="Only this consumer's keys")
    organization: str | None = Field(None, description="Only keys of this organization")
    environment: Environment | None = None
    status: KeyState | None = Field(None, description="The key's effective state")
    name: str | None = Field(None, description="Only keys with exactly this name")

    def as_filter(self, scope: OrgScope, consumer: str | None = None) -> KeyFilter:
        # Both apply: an organization-limited admin asking for another organization
        # sees nothing.
        return KeyFilter(
            consumer=consumer if consumer is not None else self.consumer,
            organization=self.organization,
            organization_id=scope.organization_id,
            environment=self.environment,
            state=self.status,
            name=self.name,
        )


class KeyListQuery(KeyQuery):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size")
    cursor: str | None = Field(None, description="`next` cursor of the previous page")
    sort: SortParam = None


class KeyExportQuery(KeyQuery):
    format: Literal["csv", "jsonl"] = Field("csv", description="Output format")


# ---------------------------------------------------------------------------- helpers


def _state(request: Request) -> AdminState:
    state: AdminState = request.app.state.admin
    return state


def _keys(request: Request) -> KeyRepository:
    state = _state(request)
    return KeyRepository(state.engine, state.secret)


async def _organization(request: Request, caller: Caller) -> str | None:
    """The organization name an org-limited caller is confined to (None: unlimited)."""
    return (await scope_of(request, caller)).organization


def _represent(info: KeyInfo) -> dict[str, Any]:
    return info.as_json(datetime.now(UTC))


def _etag(body: dict[str, Any]) -> str:
    return etag_of({k: v for k, v in body.items() if k not in ("last_used_at", "key")})


def _respond(body: dict[str, Any], status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"ETag": _etag(body), **headers})


def _as_problem(exc: Exception) -> ApiProblem:
    if isinstance(exc, KeyNotFound):
        return ApiProblem(NOT_FOUND, str(exc))
    if isinstance(exc, KeyConflict):
        return ApiProblem(KEY_STATE_CONFLICT, str(exc))
    if isinstance(exc, KeyInvalid):
        if exc.field == "sort":
            return validation_problem([("#", f"query parameter 'sort': {exc.message}")])
        return validation_problem([(f"#/{exc.field}", exc.message)])
    if isinstance(exc, InvalidCursor):
        return ApiProblem(INVALID_CURSOR, str(exc))
    if isinstance(exc, ImportRejected):
        return validation_problem(
            [(e.pointer, e.detail) for e in exc.errors],
            f"nothing was imported: {len(exc.errors)} problem(s) in the CSV",
        )
    raise exc


async def _visible_key(request: Request, key_id: str, caller: Caller) -> KeyInfo:
    """The key, or 404 (also for keys outside an organization-limited caller's own)."""
    try:
        info = await _keys(request).get(key_id)
    except KeyNotFound as exc:
        raise _as_problem(exc) from None
    scope = await scope_of(request, caller)
    scope.require_owned(info.organization_id, f"API key {key_id!r} does not exist")
    return info


async def _consumer_organization(request: Request, username: str, caller: Caller) -> str | None:
    """The consumer's organization; 404 when the consumer is unknown (or not visible)."""
    config = (await _state(request).editor.state()).config
    return _organization_of(config, username, await _organization(request, caller))


def _organization_of(config: GatewayConfig, username: str, visible: str | None) -> str | None:
    try:
        consumer = resolve_consumer(config, username, organization=visible)
    except UnknownConsumer:
        raise ApiProblem(NOT_FOUND, f"consumer {username!r} does not exist") from None
    return consumer.organization


def _next_link(request: Request, cursor: str | None) -> tuple[str | None, dict[str, str]]:
    if cursor is None:
        return None, {}
    url = request.url.path + "?" + str(request.url.include_query_params(cursor=cursor).query)
    return url, {"Link": f'<{url}>; rel="next"'}


async def _page(
    request: Request, caller: Caller, query: KeyListQuery, consumer: str | None = None
) -> Response:
    where = query.as_filter(await scope_of(request, caller), consumer)
    try:
        page = await _keys(request).list_keys(
            where, limit=query.limit, cursor=query.cursor, sort=query.sort
        )
    except (KeyInvalid, InvalidCursor) as exc:
        raise _as_problem(exc) from None
    url, headers = _next_link(request, page.next_cursor)
    return JSONResponse(
        {"items": [_represent(i) for i in page.items], "next": url}, headers=headers
    )


async def _audit(
    request: Request,
    caller: Caller,
    facts: RequestFacts,
    action: str,
    resource_id: str | None,
    *,
    before: Any = None,
    after: Any = None,
    status: int = 200,
) -> None:
    await _state(request).audit.record(
        caller=caller,
        facts=facts,
        action=action,
        resource_type="api_key",
        resource_id=resource_id,
        before=before,
        after=after,
        status=status,
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
    caller: Caller = Depends(require(Permission.CREDENTIALS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    visible = await _organization(request, caller)

    async def create(state: ConfigState) -> CreatedKey:
        # Pinned to the config the consumer was found in (admin/config_editor.py).
        return await _keys(request).create(
            username,
            body,
            created_by=caller.actor,
            organization=_organization_of(state.config, username, visible),
            config_version=state.version,
        )

    try:
        created = await _state(request).editor.pinned(create)
    except KeyInvalid as exc:
        raise _as_problem(exc) from None
    out = _represent(created.info)
    await _audit(request, caller, facts, "create", created.info.id, after=out, status=201)
    return _respond(
        {**out, "key": created.key},
        201,
        Location=f"/admin/v1/keys/{created.info.id}",
        **_NO_STORE,
    )


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
    caller: Caller = Depends(require(Permission.CREDENTIALS_READ)),
) -> Response:
    await _consumer_organization(request, username, caller)
    return await _page(request, caller, query, consumer=username)


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
    caller: Caller = Depends(require(Permission.CREDENTIALS_READ)),
) -> Response:
    return await _page(request, caller, query)


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
    caller: Caller = Depends(require(Permission.CREDENTIALS_READ)),
) -> Response:
    keys = _keys(request).stream_keys(query.as_filter(await scope_of(request, caller)))
    now = datetime.now(UTC)

    async def encoded(chunks: AsyncIterator[str]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield chunk.encode("utf-8")

    if query.format == "csv":
        return StreamingResponse(
            encoded(export_csv(keys, now)),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="api-keys.csv"'},
        )
    return StreamingResponse(
        encoded(export_jsonl(keys, now)),
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
    caller: Caller = Depends(require(Permission.CREDENTIALS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "text/csv":
        raise ApiProblem(UNSUPPORTED_MEDIA_TYPE, "send the keys as text/csv")
    raw = await request.body()  # at most MAX_IMPORT_BYTES (admin/body_guard.py)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise validation_problem([("#", "the CSV is not UTF-8")]) from None
    organization = await _organization(request, caller)

    async def store(state: ConfigState) -> list[ImportedKey]:
        organizations = check_import_consumers(rows, state.config, organization=organization)
        return await _keys(request).import_keys(
            rows,
            organizations,
            created_by=caller.actor,
            dry_run=dry_run,
            config_version=state.version,
        )

    try:
        rows = parse_import_csv(text)
        imported = await _state(request).editor.pinned(store)
    except ImportRejected as exc:
        raise _as_problem(exc) from None
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
    if not dry_run:
        await _audit(
            request,
            caller,
            facts,
            "import",
            None,
            after={"count": len(imported), "ids": [i.info.id for i in imported]},
            status=201,
        )
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
    caller: Caller = Depends(require(Permission.CREDENTIALS_READ)),
) -> Response:
    return _respond(_represent(await _visible_key(request, key_id, caller)))


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
    caller: Caller = Depends(require(Permission.CREDENTIALS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    await _visible_key(request, key_id, caller)
    precondition = _precondition(if_match)

    def patched(current: KeyInfo) -> KeySettings:
        return apply_merge_patch(KeySettings, current.settings(), patch)

    try:
        after = _represent(await _keys(request).update(key_id, patched, check=precondition))
    except (KeyNotFound, KeyConflict, KeyInvalid) as exc:
        raise _as_problem(exc) from None
    before = _before(precondition)
    await _audit(request, caller, facts, "update", key_id, before=before, after=after)
    return _respond(after)


def _precondition(if_match: str | None) -> Precondition[KeyInfo]:
    """If-Match on a key, checked by the repository on the key it locked for the write."""
    return Precondition(if_match, lambda info: _etag(_represent(info)))


def _before(precondition: Precondition[KeyInfo]) -> dict[str, Any]:
    assert precondition.seen is not None  # the write found the key and checked it
    return _represent(precondition.seen)


async def _transition(
    request: Request,
    key_id: str,
    caller: Caller,
    facts: RequestFacts,
    if_match: str | None,
    action: Literal["revoke", "suspend", "resume"],
    reason: str | None,
    status: int = 200,
) -> dict[str, Any]:
    await _visible_key(request, key_id, caller)
    precondition = _precondition(if_match)
    keys = _keys(request)
    try:
        if action == "revoke":
            info = await keys.revoke(key_id, reason or "revoked", check=precondition)
        elif action == "suspend":
            info = await keys.suspend(key_id, reason or "suspended", check=precondition)
        else:
            info = await keys.resume(key_id, check=precondition)
    except (KeyNotFound, KeyConflict) as exc:
        raise _as_problem(exc) from None
    before, after = _before(precondition), _represent(info)
    await _audit(request, caller, facts, action, key_id, before=before, after=after, status=status)
    return after


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
    caller: Caller = Depends(require(Permission.CREDENTIALS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    await _transition(request, key_id, caller, facts, if_match, "revoke", reason, status=204)
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
    caller: Caller = Depends(require(Permission.CREDENTIALS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    options = body or RotateIn()
    await _visible_key(request, key_id, caller)
    precondition = _precondition(if_match)
    try:
        rotation = await _keys(request).rotate(
            key_id,
            grace_seconds=options.grace_seconds,
            created_by=caller.actor,
            expires_at=options.expires_at if "expires_at" in options.model_fields_set else "keep",
            check=precondition,
        )
    except (KeyNotFound, KeyConflict, KeyInvalid) as exc:
        raise _as_problem(exc) from None
    before = _before(precondition)
    old, new = _represent(rotation.old), _represent(rotation.new)
    await _audit(request, caller, facts, "rotate", key_id, before=before, after=old)
    await _audit(request, caller, facts, "create", rotation.new.id, after=new, status=201)
    return _respond(
        {**new, "key": rotation.key, "previous": old},
        201,
        Location=f"/admin/v1/keys/{rotation.new.id}",
        **_NO_STORE,
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
    caller: Caller = Depends(require(Permission.CREDENTIALS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    return _respond(
        await _transition(request, key_id, caller, facts, if_match, "revoke", body.reason)
    )


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
    caller: Caller = Depends(require(Permission.CREDENTIALS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    return _respond(
        await _transition(request, key_id, caller, facts, if_match, "suspend", body.reason)
    )


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
    caller: Caller = Depends(require(Permission.CREDENTIALS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    return _respond(await _transition(request, key_id, caller, facts, if_match, "resume", None))
