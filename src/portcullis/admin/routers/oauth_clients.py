"""Admin API of the OAuth2 server: consumers' OAuth clients and the token-signing keys.

Client secrets are shown once, in the response that creates or rotates them
(`Cache-Control: no-store`), and are never readable afterwards; the audit log
records the client without them. Admins limited to an organization see and manage
only the clients of their organization's consumers, and can't rotate the
deployment-wide signing keys.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from portcullis.admin.operations import admin_state, operation, respond
from portcullis.admin.pagination import page_response
from portcullis.admin.problems import problem_responses
from portcullis.admin.routers.oauth import oauth_server
from portcullis.identity.oauth_clients import (
    OAuthClient,
)
from portcullis.services.context import Operation
from portcullis.services.oauth_clients import (
    CLIENT_SORT,
    KEY_SORT,
    ClientChanges,
    OAuthClientCreate,
    OAuthClientOut,
    OAuthClientPatch,
    OAuthClientService,
    SigningKeyOut,
    etag_of_client,
)
from portcullis.services.pagination import DEFAULT_LIMIT, MAX_LIMIT, sort_pattern
from portcullis.services.rbac import Permission

router = APIRouter()
NO_STORE = {"Cache-Control": "no-store"}
IfMatch = Annotated[
    str | None, Header(description="ETag from a previous read; 412 when it no longer matches")
]
# ---------------------------------------------------------------------------- models


class OAuthClientWithSecret(OAuthClientOut):
    client_secret: str = Field(description="The client secret; shown only in this response")


class OAuthClientPage(BaseModel):
    items: list[OAuthClientOut]
    next: str | None


class SigningKeyPage(BaseModel):
    items: list[SigningKeyOut]
    next: str | None


# ---------------------------------------------------------------------------- helpers


def _service(request: Request) -> OAuthClientService:
    return OAuthClientService(oauth_server(request), admin_state(request).editor)


def _with_secret(client: OAuthClient, secret: str, status: int, **headers: str) -> JSONResponse:
    """The one response that carries a client secret: never cached, ETag of the client alone."""
    return respond(
        {**client.as_json(), "client_secret": secret},
        status,
        etag=etag_of_client(client),
        **NO_STORE,
        **headers,
    )


# ---------------------------------------------------------------------------- clients


@router.post(
    "/consumers/{username}/oauth-clients",
    tags=["OAuth clients"],
    summary="Register a consumer as an OAuth client (the secret is shown once)",
    status_code=201,
    response_model=OAuthClientWithSecret,
    responses={
        201: {"headers": {"Location": {"schema": {"type": "string"}}}},
        **problem_responses(400, 401, 403, 404, 422, 429),
    },
    operation_id="create_oauth_client",
)
async def create_oauth_client(
    request: Request,
    username: str,
    body: OAuthClientCreate,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    client, secret = await _service(request).create(
        op,
        username,
        name=body.name,
        allowed_scopes=body.allowed_scopes,
        token_ttl=body.token_ttl,
    )
    return _with_secret(client, secret, 201, Location=f"/admin/v1/oauth-clients/{client.client_id}")


@router.get(
    "/consumers/{username}/oauth-clients",
    tags=["OAuth clients"],
    summary="List a consumer's OAuth clients",
    response_model=OAuthClientPage,
    responses=problem_responses(400, 401, 403, 404, 422, 429),
    operation_id="list_oauth_clients",
)
async def list_oauth_clients(
    request: Request,
    username: str,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
    sort: Annotated[
        str | None,
        Query(description="name, created_at; `-` descending", pattern=sort_pattern(CLIENT_SORT)),
    ] = None,
    op: Operation = Depends(operation(Permission.CREDENTIALS_READ)),
) -> Response:
    page = await _service(request).list_for_consumer(
        op, username, limit=limit, cursor=cursor, sort=sort
    )
    return page_response(request, page.items, page.next_cursor)


@router.get(
    "/oauth-clients/{client_id}",
    tags=["OAuth clients"],
    summary="Get an OAuth client (never its secret)",
    response_model=OAuthClientOut,
    responses=problem_responses(401, 403, 404, 429),
    operation_id="get_oauth_client",
)
async def get_oauth_client(
    request: Request,
    client_id: str,
    op: Operation = Depends(operation(Permission.CREDENTIALS_READ)),
) -> Response:
    return respond((await _service(request).get(op, client_id)).as_json())


@router.patch(
    "/oauth-clients/{client_id}",
    tags=["OAuth clients"],
    summary="Change an OAuth client's name, scopes, token lifetime or status",
    description="A disabled client gets no new tokens and its tokens introspect as inactive;"
    " tokens it already holds stay valid on the data plane until they expire unless revoked.",
    response_model=OAuthClientOut,
    responses=problem_responses(401, 403, 404, 412, 422, 429),
    operation_id="update_oauth_client",
)
async def update_oauth_client(
    request: Request,
    client_id: str,
    body: OAuthClientPatch,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    changes = ClientChanges.of(body)
    after = await _service(request).update(op, client_id, changes, if_match=if_match)
    return respond(after.as_json())


@router.delete(
    "/oauth-clients/{client_id}",
    tags=["OAuth clients"],
    summary="Delete an OAuth client",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 412, 429),
    operation_id="delete_oauth_client",
)
async def delete_oauth_client(
    request: Request,
    client_id: str,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    await _service(request).delete(op, client_id, if_match=if_match)
    return Response(status_code=204)


@router.post(
    "/oauth-clients/{client_id}/rotate-secret",
    tags=["OAuth clients"],
    summary="Replace an OAuth client's secret (the new one is shown once; the old one stops)",
    response_model=OAuthClientWithSecret,
    responses=problem_responses(401, 403, 404, 412, 429),
    operation_id="rotate_oauth_client_secret",
)
async def rotate_oauth_client_secret(
    request: Request,
    client_id: str,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    client, secret = await _service(request).rotate_secret(op, client_id, if_match=if_match)
    return _with_secret(client, secret, 200)


# ---------------------------------------------------------------------------- signing keys


@router.get(
    "/oauth/signing-keys",
    tags=["OAuth signing keys"],
    summary="List the token-signing keys (public parts only; removed keys are left out)",
    response_model=SigningKeyPage,
    responses=problem_responses(400, 401, 403, 422, 429),
    operation_id="list_signing_keys",
)
async def list_signing_keys(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
    sort: Annotated[
        str | None,
        Query(description="created_at; `-` descending", pattern=sort_pattern(KEY_SORT)),
    ] = None,
    op: Operation = Depends(operation(Permission.CREDENTIALS_READ)),
) -> Response:
    page = await _service(request).list_signing_keys(op, limit=limit, cursor=cursor, sort=sort)
    return page_response(request, page.items, page.next_cursor)


@router.post(
    "/oauth/signing-keys/rotate",
    tags=["OAuth signing keys"],
    summary="Rotate the token-signing key now",
    description="The new key signs from now on; the previous one is retired but stays in the"
    " JWKS until every token it signed has expired (`remove_after`). Returns the new key.",
    response_model=SigningKeyOut,
    responses=problem_responses(401, 403, 429),
    operation_id="rotate_signing_key",
)
async def rotate_signing_key(
    request: Request,
    op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
) -> Response:
    return respond((await _service(request).rotate_signing_key(op)).as_json())
