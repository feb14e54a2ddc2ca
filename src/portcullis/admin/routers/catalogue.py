"""The API catalogue's faces: the admin endpoints that import and read a version's
OpenAPI description and compare versions (under /admin/v1), and the catalogue itself
(`GET /apis`, `GET /apis/{api}/{version}/openapi.json|yaml`) that consumers read with
an API key, or anyone for a public API. The rules are `services.catalogue`'s."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from portcullis.admin.operations import admin_state, operation
from portcullis.admin.problems import problem_responses
from portcullis.admin.scoping import scope_of
from portcullis.catalogue.fetch import DescriptionFetcher
from portcullis.model.openapi import MAX_DOCUMENT_BYTES
from portcullis.services.catalogue import CatalogueService, Viewer
from portcullis.services.context import Operation
from portcullis.services.errors import NOT_FOUND, ServiceError
from portcullis.services.rbac import Permission
from portcullis.webhooks.runner import destination_policy

router = APIRouter(tags=["API catalogue"])
public_router = APIRouter(tags=["API catalogue"])
_CREDENTIAL_HEADERS = "Authorization, X-API-Key"


class _Catalogue:
    """A `CatalogueService` with its own fetcher, closed when the request is done."""

    def __init__(self, request: Request) -> None:
        state = admin_state(request)
        self.fetcher = DescriptionFetcher(
            destination_policy(state.settings), timeout=state.settings.webhook_timeout
        )
        self.service = CatalogueService(state, self.fetcher)

    async def __aenter__(self) -> CatalogueService:
        return self.service

    async def __aexit__(self, *_: object) -> None:
        await self.fetcher.close()


@router.put(
    "/apis/{api}/versions/{version}/openapi",
    summary="Import a version's OpenAPI description (the document, or a URL to fetch)",
    description="The body is the OpenAPI 3.0/3.1 document itself, or "
    '`{"url": "https://...", "refresh_seconds": 3600}` to fetch it (through the webhook '
    "SSRF guard) and re-fetch it periodically. External `$ref`s are bundled (absolute "
    "http(s) URLs only: the control plane never reads its own files), then the document "
    "is validated: errors carry JSON pointers into it. Importing the same document again "
    "changes nothing.",
    responses=problem_responses(401, 403, 404, 409, 412, 422, 429),
    operation_id="import_api_description",
    openapi_extra={"x-max-body-bytes": MAX_DOCUMENT_BYTES},
)
async def import_description(
    request: Request,
    api: str,
    version: str,
    body: Annotated[dict[str, Any], Body()],
    op: Operation = Depends(operation(Permission.CONFIG_WRITE)),
) -> dict[str, Any]:
    async with _Catalogue(request) as service:
        return await service.import_description(op, api, version, body)


@router.get(
    "/apis/{api}/versions/{version}/openapi",
    summary="A version's imported OpenAPI description, and the state of its URL source",
    responses=problem_responses(401, 403, 404, 429),
    operation_id="get_api_description",
)
async def get_description(
    request: Request,
    api: str,
    version: str,
    op: Operation = Depends(operation(Permission.CONFIG_READ)),
) -> dict[str, Any]:
    async with _Catalogue(request) as service:
        return await service.description(op, api, version)


@router.get(
    "/apis/{api}/diff",
    summary="Changes between two versions' descriptions, breaking ones first",
    responses=problem_responses(401, 403, 404, 422, 429),
    operation_id="diff_api_versions",
)
async def diff_versions(
    request: Request,
    api: str,
    base: Annotated[str, Query(description="the older version")],
    head: Annotated[str, Query(description="the newer version")],
    op: Operation = Depends(operation(Permission.CONFIG_READ)),
) -> dict[str, Any]:
    async with _Catalogue(request) as service:
        return await service.diff(op, api, base, head)


async def _viewer(request: Request, service: CatalogueService) -> Viewer:
    """Who asks: an admin (Bearer token with config:read), a consumer (API key as Bearer
    or X-API-Key), or nobody (a credential that works as neither counts as none)."""
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    bearer = value.strip() if scheme.lower() == "bearer" and value.strip() else None
    if bearer is not None:
        caller = await request.app.state.authenticator.authenticate(bearer)
        if caller is not None and caller.can(Permission.CONFIG_READ):
            return Viewer(admin=await scope_of(request, caller))
    key = request.headers.get("x-api-key") or bearer
    if key:
        viewer = await service.key_viewer(key)
        if viewer is not None:
            return viewer
    return Viewer()


def _cached(request: Request, body: bytes, media_type: str, public: bool) -> Response:
    tag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {
        "ETag": tag,
        "Cache-Control": ("public" if public else "private") + ", max-age=60",
        "Vary": _CREDENTIAL_HEADERS,
    }
    wanted = request.headers.get("if-none-match", "")
    if tag in {t.strip() for t in wanted.split(",")} or wanted.strip() == "*":
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@public_router.get(
    "/apis",
    summary="The API catalogue: the APIs you may see, their versions, status and links",
    responses=problem_responses(429),
    operation_id="list_catalogue",
)
async def list_catalogue(request: Request) -> Response:
    async with _Catalogue(request) as service:
        viewer = await _viewer(request, service)
        listing = await service.listing(viewer)
    body = JSONResponse(listing).body
    return _cached(request, bytes(body), "application/json", viewer.anonymous)


@public_router.get(
    "/apis/{api}/{version}/openapi.{extension}",
    summary="A version's OpenAPI description as clients see it through the gateway",
    description="Servers are the gateway's public URL and the routes' prefixes; security "
    "schemes, 401/403/429 responses and rate-limit headers come from the routes' plugins. "
    "Public APIs' descriptions are readable by anyone; others need an API key of a "
    "consumer of the API's organization, or an admin token.",
    responses={
        200: {
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/yaml": {"schema": {"type": "string"}},
            }
        },
        304: {"description": "Not modified (If-None-Match)"},
        **problem_responses(401, 404, 429),
    },
    operation_id="get_published_description",
)
async def published_description(
    request: Request,
    api: str,
    version: str,
    extension: str,
) -> Response:
    if extension not in ("json", "yaml"):
        raise ServiceError(NOT_FOUND, "descriptions are served as openapi.json or openapi.yaml")
    async with _Catalogue(request) as service:
        viewer = await _viewer(request, service)
        document, public = await service.published(viewer, api, version)
    if extension == "yaml":
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        return _cached(request, text.encode(), "application/yaml", public)
    return _cached(request, bytes(JSONResponse(document).body), "application/json", public)
