"""Admin API of outgoing webhooks: endpoints (CRUD, enable/disable, secret rotation),
their deliveries and attempts (list, export), replays and test events.

The signing secret is in exactly two responses, the one that creates the endpoint and
the rotation (both `Cache-Control: no-store`); a `v1a` endpoint shows its `whpk_`
public key instead, in every response. Custom header values are never shown again,
only their names. Destinations are checked when they are set: a literal address or a
host resolving only to loopback, private, link-local or metadata addresses is a 422
naming `url` unless `PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS` lists it (deliveries check
every address they connect to as well).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from portcullis.admin.export import streamed_export
from portcullis.admin.operations import admin_state, as_query_errors, operation, respond
from portcullis.admin.pagination import page_response
from portcullis.admin.problems import problem_responses
from portcullis.services.context import Operation
from portcullis.services.errors import ServiceError
from portcullis.services.pagination import DEFAULT_LIMIT, MAX_LIMIT, sort_pattern
from portcullis.services.rbac import Permission
from portcullis.services.webhooks import (
    DEFAULT_GRACE,
    ENDPOINT_SORT,
    MAX_GRACE,
    DeliveryOut,
    DeliveryWithAttempts,
    ReplayFailedIn,
    WebhookCreate,
    WebhookOut,
    WebhookService,
    etag_of_endpoint,
)
from portcullis.services.webhooks import (
    DeliveryConditions as DeliveryQuery,
)
from portcullis.webhooks.runner import destination_policy

router = APIRouter(tags=["Webhooks"])
MERGE_PATCH = "application/merge-patch+json"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
IfMatch = Annotated[
    str | None, Header(description="ETag from a previous read; 412 when it no longer matches")
]
_READ_ERRORS = problem_responses(401, 403, 404, 429)
_WRITE_ERRORS = problem_responses(401, 403, 404, 409, 412, 422, 429)
EXPORT_COLUMNS = (
    "message_id",
    "endpoint_id",
    "event_id",
    "event_type",
    "delivery_status",
    "attempt",
    "trigger",
    "attempted_at",
    "status_code",
    "error",
    "latency_ms",
    "response_excerpt",
    "response_excerpt_encoding",
    "detail",
)


# ---------------------------------------------------------------------------- models


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="`whsec_…` (v1), shown only in this response; for v1a the `whpk_` public key",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class WebhookPage(BaseModel):
    items: list[WebhookOut]
    next: str | None


class DeliveryPage(BaseModel):
    items: list[DeliveryWithAttempts]
    next: str | None


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: int = Field(
        int(DEFAULT_GRACE.total_seconds()),
        ge=0,
        le=int(MAX_GRACE.total_seconds()),
        description="How long the old secret keeps signing beside the new one (0: stops now)",
    )


class ReplayedOut(BaseModel):
    replayed: int = Field(description="Dead-lettered deliveries queued again")


class TestOut(BaseModel):
    message_id: str = Field(description="The test delivery (see its deliveries)")


class DeliveryListQuery(DeliveryQuery):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size")
    cursor: str | None = Field(None, description="`next` cursor of the previous page")


class EventDeliveryQuery(DeliveryListQuery):
    event_id: int | None = Field(None, ge=1, description="Only the deliveries of this event")


class ExportQuery(DeliveryQuery):
    format: Literal["csv", "jsonl"] = "csv"


class WebhookListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    event_type: str | None = Field(
        None, max_length=128, description="Only endpoints that would receive this kind"
    )
    organization: str | None = Field(None, description="Only this organization's endpoints")
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size")
    cursor: str | None = Field(None, description="`next` cursor of the previous page")
    sort: str | None = Field(
        None, pattern=sort_pattern(ENDPOINT_SORT), description="created_at, url, updated_at; `-`"
    )


# ---------------------------------------------------------------------------- helpers


def _service(request: Request) -> WebhookService:
    state = admin_state(request)
    return WebhookService(
        state.engine, state.secret, state.editor, destination_policy(state.settings)
    )


def _respond(body: dict[str, Any], status: int = 200, **headers: str) -> JSONResponse:
    return respond(body, status, etag=etag_of_endpoint(body), **headers)


def _with_secret(body: dict[str, Any], secret: str, status: int, **headers: str) -> JSONResponse:
    """The one response that carries a secret: never cached, ETag of the endpoint alone."""
    return respond(
        {**body, "secret": secret}, status, etag=etag_of_endpoint(body), **_NO_STORE, **headers
    )


def _deliveries(request: Request, page: Any) -> JSONResponse:
    return page_response(request, page.items, page.next_cursor)


# ---------------------------------------------------------------------------- endpoints


@router.post(
    "/webhooks",
    summary="Create a webhook endpoint (its signing secret is shown once)",
    status_code=201,
    response_model=WebhookCreated,
    responses={
        201: {"headers": {"Location": {"schema": {"type": "string"}}}},
        **problem_responses(400, 401, 403, 404, 422, 429),
    },
    operation_id="create_webhook",
)
async def create_webhook(
    request: Request,
    body: Annotated[
        WebhookCreate,
        Body(
            openapi_examples={
                "keys": {
                    "summary": "Key lifecycle events, signed with HMAC",
                    "value": {"url": "https://hooks.example.com/in", "event_types": ["key.*"]},
                }
            }
        ),
    ],
    op: Operation = Depends(operation(Permission.WEBHOOKS_WRITE)),
) -> Response:
    created, secret = await _service(request).create(op, body)
    return _with_secret(created, secret, 201, Location=f"/admin/v1/webhooks/{created['id']}")


@router.get(
    "/webhooks",
    summary="List webhook endpoints",
    response_model=WebhookPage,
    responses=problem_responses(400, 401, 403, 422, 429),
    operation_id="list_webhooks",
)
async def list_webhooks(
    request: Request,
    query: Annotated[WebhookListQuery, Query()],
    op: Operation = Depends(operation(Permission.WEBHOOKS_READ)),
) -> Response:
    try:
        page = await _service(request).list_endpoints(
            op,
            enabled=query.enabled,
            event_type=query.event_type,
            organization=query.organization,
            limit=query.limit,
            cursor=query.cursor,
            sort=query.sort,
        )
    except ServiceError as exc:
        raise as_query_errors(exc, ("sort",)) from None
    return page_response(request, page.items, page.next_cursor)


@router.get(
    "/webhooks/deliveries",
    summary="Deliveries across endpoints (e.g. every delivery of one event), newest first",
    response_model=DeliveryPage,
    responses=problem_responses(400, 401, 403, 422, 429),
    operation_id="list_webhook_deliveries",
)
async def list_all_deliveries(
    request: Request,
    query: Annotated[EventDeliveryQuery, Query()],
    op: Operation = Depends(operation(Permission.WEBHOOKS_READ)),
) -> Response:
    page = await _service(request).deliveries(
        op, query.where(event_id=query.event_id), limit=query.limit, cursor=query.cursor
    )
    return _deliveries(request, page)


@router.get(
    "/webhooks/{endpoint_id}",
    summary="Get a webhook endpoint (never its secret or header values)",
    response_model=WebhookOut,
    responses=_READ_ERRORS,
    operation_id="get_webhook",
)
async def get_webhook(
    request: Request,
    endpoint_id: str,
    op: Operation = Depends(operation(Permission.WEBHOOKS_READ)),
) -> Response:
    return _respond(await _service(request).get(op, endpoint_id))


@router.patch(
    "/webhooks/{endpoint_id}",
    summary="Change a webhook endpoint (JSON Merge Patch)",
    response_model=WebhookOut,
    responses=_WRITE_ERRORS,
    operation_id="update_webhook",
)
async def update_webhook(
    request: Request,
    endpoint_id: str,
    patch: Annotated[
        dict[str, Any],
        Body(
            media_type=MERGE_PATCH,
            description="JSON Merge Patch (RFC 7396) of url, event_types, description, filters,"
            " consumer, headers (merged by name; null removes one), enabled, rate_limit,"
            " max_concurrency, ordered",
            openapi_examples={
                "events": {"summary": "Only revocations", "value": {"event_types": ["key.revoked"]}}
            },
        ),
    ],
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.WEBHOOKS_WRITE)),
) -> Response:
    return _respond(await _service(request).update(op, endpoint_id, patch, if_match=if_match))


@router.delete(
    "/webhooks/{endpoint_id}",
    summary="Delete a webhook endpoint with its queued deliveries and their history",
    status_code=204,
    response_class=Response,
    responses=_WRITE_ERRORS,
    operation_id="delete_webhook",
)
async def delete_webhook(
    request: Request,
    endpoint_id: str,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.WEBHOOKS_WRITE)),
) -> Response:
    await _service(request).delete(op, endpoint_id, if_match=if_match)
    return Response(status_code=204)


@router.post(
    "/webhooks/{endpoint_id}/enable",
    summary="Enable a webhook endpoint (clears the reason it was disabled)",
    response_model=WebhookOut,
    responses=_WRITE_ERRORS,
    operation_id="enable_webhook",
)
async def enable_webhook(
    request: Request,
    endpoint_id: str,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.WEBHOOKS_WRITE)),
) -> Response:
    return _respond(await _service(request).set_enabled(op, endpoint_id, True, if_match=if_match))


@router.post(
    "/webhooks/{endpoint_id}/disable",
    summary="Disable a webhook endpoint (nothing new is queued; queued deliveries wait)",
    response_model=WebhookOut,
    responses=_WRITE_ERRORS,
    operation_id="disable_webhook",
)
async def disable_webhook(
    request: Request,
    endpoint_id: str,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.WEBHOOKS_WRITE)),
) -> Response:
    return _respond(await _service(request).set_enabled(op, endpoint_id, False, if_match=if_match))


@router.post(
    "/webhooks/{endpoint_id}/rotate-secret",
    summary="Rotate the signing secret (the new one is shown once; the old one keeps signing"
    " for the grace period)",
    response_model=WebhookCreated,
    responses=_WRITE_ERRORS,
    operation_id="rotate_webhook_secret",
)
async def rotate_webhook_secret(
    request: Request,
    endpoint_id: str,
    body: RotateIn | None = None,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.WEBHOOKS_WRITE)),
) -> Response:
    grace = timedelta(seconds=(body or RotateIn()).grace_seconds)
    after, secret = await _service(request).rotate(op, endpoint_id, grace=grace, if_match=if_match)
    return _with_secret(after, secret, 200)


# ---------------------------------------------------------------------------- deliveries


@router.get(
    "/webhooks/{endpoint_id}/deliveries",
    summary="An endpoint's deliveries, newest first, each with every attempt",
    response_model=DeliveryPage,
    responses=problem_responses(400, 401, 403, 404, 422, 429),
    operation_id="list_webhook_endpoint_deliveries",
)
async def list_deliveries(
    request: Request,
    endpoint_id: str,
    query: Annotated[DeliveryListQuery, Query()],
    op: Operation = Depends(operation(Permission.WEBHOOKS_READ)),
) -> Response:
    page = await _service(request).deliveries(
        op, query.where(endpoint_id), limit=query.limit, cursor=query.cursor
    )
    return _deliveries(request, page)


@router.get(
    "/webhooks/{endpoint_id}/deliveries/export",
    summary="Export an endpoint's delivery attempts as CSV or JSON lines (streamed)",
    response_class=Response,
    responses={
        200: {
            "description": "One record per attempt",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/jsonl": {"schema": {"type": "string"}},
            },
        },
        **problem_responses(401, 403, 404, 422, 429),
    },
    operation_id="export_webhook_attempts",
)
async def export_attempts(
    request: Request,
    endpoint_id: str,
    query: Annotated[ExportQuery, Query()],
    op: Operation = Depends(operation(Permission.WEBHOOKS_READ)),
) -> Response:
    records = await _service(request).export_attempts(op, query.where(endpoint_id))
    return streamed_export(
        records, format=query.format, columns=EXPORT_COLUMNS, filename=f"{endpoint_id}-attempts"
    )


@router.post(
    "/webhooks/{endpoint_id}/deliveries/{message_id}/replay",
    summary="Deliver one finished (delivered or dead-lettered) delivery again",
    status_code=202,
    response_model=DeliveryOut,
    responses=_WRITE_ERRORS,
    operation_id="replay_webhook_delivery",
)
async def replay_delivery(
    request: Request,
    endpoint_id: str,
    message_id: str,
    op: Operation = Depends(operation(Permission.WEBHOOKS_WRITE)),
) -> Response:
    replayed = await _service(request).replay(op, endpoint_id, message_id)
    return JSONResponse(replayed, status_code=202)


@router.post(
    "/webhooks/{endpoint_id}/replay-failed",
    summary="Deliver again every dead-lettered delivery of the endpoint in a time range",
    status_code=202,
    response_model=ReplayedOut,
    responses=_WRITE_ERRORS,
    operation_id="replay_failed_webhook_deliveries",
)
async def replay_failed(
    request: Request,
    endpoint_id: str,
    body: ReplayFailedIn | None = None,
    op: Operation = Depends(operation(Permission.WEBHOOKS_WRITE)),
) -> Response:
    window = body or ReplayFailedIn()
    count = await _service(request).replay_failed(
        op, endpoint_id, since=window.since, until=window.until
    )
    return JSONResponse({"replayed": count}, status_code=202)


@router.post(
    "/webhooks/{endpoint_id}/test",
    summary="Send a `webhook.test` event to this endpoint",
    status_code=202,
    response_model=TestOut,
    responses=_WRITE_ERRORS,
    operation_id="test_webhook",
)
async def send_test(
    request: Request,
    endpoint_id: str,
    op: Operation = Depends(operation(Permission.WEBHOOKS_WRITE)),
) -> Response:
    ident = await _service(request).send_test(op, endpoint_id)
    return JSONResponse({"message_id": ident}, status_code=202)
