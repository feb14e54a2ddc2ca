"""Admin API of the OAuth2 server: consumers' OAuth clients and the token-signing keys.

Client secrets are shown once, in the response that creates or rotates them
(`Cache-Control: no-store`), and are never readable afterwards; the audit log
records the client without them. Admins limited to an organization see and manage
only the clients of their organization's consumers, and can't rotate the
deployment-wide signing keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from portcullis.admin.conditional import Precondition, etag_of
from portcullis.admin.config_editor import ConfigState
from portcullis.admin.dependencies import RequestFacts, request_facts, require
from portcullis.admin.operations import admin_state, respond
from portcullis.admin.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    paginate,
    parse_sort,
    sort_pattern,
)
from portcullis.admin.problems import (
    NOT_FOUND,
    ApiProblem,
    problem_responses,
    validation_problem,
)
from portcullis.admin.rbac import Caller, Permission
from portcullis.admin.routers.oauth import oauth_server
from portcullis.admin.scoping import OrgScope, scope_of
from portcullis.identity.oauth_clients import (
    MAX_TOKEN_TTL,
    SCOPE_PATTERN,
    ClientStatus,
    OAuthClient,
)
from portcullis.identity.signing import KeyStatus, SigningKeyInfo
from portcullis.model.config import Consumer, GatewayConfig

router = APIRouter()
CLIENT_SORT = ("name", "created_at")
KEY_SORT = ("created_at",)
NO_STORE = {"Cache-Control": "no-store"}
IfMatch = Annotated[
    str | None, Header(description="ETag from a previous read; 412 when it no longer matches")
]
ClientName = Annotated[str, Field(min_length=1, max_length=128)]
Scope = Annotated[str, Field(pattern=SCOPE_PATTERN, description="An RFC 6749 scope token")]
Scopes = Annotated[list[Scope], Field(max_length=100)]
TokenTtl = Annotated[
    StrictInt,
    Field(ge=60, le=MAX_TOKEN_TTL, description="Lifetime of the client's access tokens, seconds"),
]


# ---------------------------------------------------------------------------- models


class OAuthClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ClientName
    allowed_scopes: Scopes = Field(default_factory=list)
    token_ttl: TokenTtl = 3600


class OAuthClientPatch(BaseModel):
    """JSON Merge Patch of a client; `null` is not a valid value for any field."""

    model_config = ConfigDict(extra="forbid")

    name: ClientName | None = None
    allowed_scopes: Scopes | None = None
    token_ttl: TokenTtl | None = None
    status: ClientStatus | None = None


class OAuthClientOut(BaseModel):
    client_id: str
    consumer: str
    organization: str | None = Field(description="The organization's current name")
    organization_id: str | None = Field(
        description="The organization the client belongs to (kept when it is renamed)"
    )
    name: str
    allowed_scopes: list[str]
    token_ttl: int
    status: ClientStatus
    created_by: str
    created_at: datetime
    updated_at: datetime


class OAuthClientWithSecret(OAuthClientOut):
    client_secret: str = Field(description="The client secret; shown only in this response")


class OAuthClientPage(BaseModel):
    items: list[OAuthClientOut]
    next: str | None


class SigningKeyOut(BaseModel):
    kid: str
    alg: str
    status: KeyStatus
    created_at: datetime
    retired_at: datetime | None
    remove_after: datetime | None = Field(description="When a retired key leaves the JWKS")
    public_jwk: dict[str, Any] = Field(description="The public key (RFC 7517)")


class SigningKeyPage(BaseModel):
    items: list[SigningKeyOut]
    next: str | None


# ---------------------------------------------------------------------------- helpers


async def _consumer(request: Request, username: str, caller: Caller) -> Consumer:
    state = await admin_state(request).editor.state()
    return _consumer_in(state.config, username, await scope_of(request, caller))


def _consumer_in(config: GatewayConfig, username: str, scope: OrgScope) -> Consumer:
    for consumer in config.consumers:
        if consumer.username == username and scope.sees_named(consumer.organization):
            return consumer
    raise ApiProblem(NOT_FOUND, f"consumer {username!r} does not exist")


async def _client(request: Request, client_id: str, caller: Caller) -> OAuthClient:
    client = await oauth_server(request).clients.get(client_id)
    missing = f"OAuth client {client_id!r} does not exist"
    if client is None:
        raise ApiProblem(NOT_FOUND, missing)
    (await scope_of(request, caller)).require_owned(client.organization_id, missing)
    return client


def _precondition(if_match: str | None) -> Precondition[OAuthClient]:
    """If-Match on a client, checked by the repository on the client it locked for the write."""
    return Precondition(if_match, lambda client: etag_of(client.as_json()))


def _check_ttl(request: Request, ttl: int | None) -> None:
    limit = oauth_server(request).settings.max_token_ttl
    if ttl is not None and ttl > limit:
        raise validation_problem(
            [("#/token_ttl", f"at most {limit} seconds (PORTCULLIS_OAUTH_MAX_TOKEN_TTL)")]
        )


def _page(request: Request, items: list[dict[str, Any]], cursor: str | None) -> JSONResponse:
    url = None
    headers = {}
    if cursor is not None:
        url = request.url.path + "?" + str(request.url.include_query_params(cursor=cursor).query)
        headers["Link"] = f'<{url}>; rel="next"'
    return JSONResponse({"items": items, "next": url}, headers=headers)


def _with_secret(client: OAuthClient, secret: str, status: int, **headers: str) -> JSONResponse:
    """The one response that carries a client secret: never cached, ETag of the client alone."""
    body = client.as_json()
    return JSONResponse(
        {**body, "client_secret": secret},
        status_code=status,
        headers={"ETag": etag_of(body), **NO_STORE, **headers},
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
    caller: Caller = Depends(require(Permission.CREDENTIALS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    scope = await scope_of(request, caller)
    await _consumer(request, username, caller)  # 404 before any complaint about the body
    _check_ttl(request, body.token_ttl)

    async def create(state: ConfigState) -> tuple[OAuthClient, str]:
        # Pinned to the config the consumer was found in (admin/config_editor.py).
        consumer = _consumer_in(state.config, username, scope)
        return await oauth_server(request).clients.create(
            consumer=consumer.username,
            organization=consumer.organization,
            name=body.name,
            allowed_scopes=list(dict.fromkeys(body.allowed_scopes)),
            token_ttl=body.token_ttl,
            created_by=caller.actor,
            config_version=state.version,
        )

    client, secret = await admin_state(request).editor.pinned(create)
    await admin_state(request).audit.record(
        caller=caller,
        facts=facts,
        action="create",
        resource_type="oauth_client",
        resource_id=client.client_id,
        after=client.as_json(),
        status=201,
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
    caller: Caller = Depends(require(Permission.CREDENTIALS_READ)),
) -> Response:
    keys = parse_sort(sort, CLIENT_SORT, "created_at")
    consumer = await _consumer(request, username, caller)
    scope = await scope_of(request, caller)
    clients = await oauth_server(request).clients.list_for(consumer.username)
    # A client of an earlier consumer of that name in another organization stays hidden.
    items = [c.as_json() for c in clients if scope.owns(c.organization_id)]
    page = paginate(items, lambda c: str(c["client_id"]), keys, limit=limit, cursor=cursor)
    return _page(request, page.items, page.next_cursor)


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
    caller: Caller = Depends(require(Permission.CREDENTIALS_READ)),
) -> Response:
    return respond((await _client(request, client_id, caller)).as_json())


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
    caller: Caller = Depends(require(Permission.CREDENTIALS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    nulls = [f for f in body.model_fields_set if getattr(body, f) is None]
    if nulls:
        raise validation_problem([(f"#/{f}", "must not be null") for f in sorted(nulls)])
    await _client(request, client_id, caller)
    _check_ttl(request, body.token_ttl)
    precondition = _precondition(if_match)
    after = await oauth_server(request).clients.update(
        client_id,
        name=body.name,
        allowed_scopes=list(dict.fromkeys(body.allowed_scopes))
        if body.allowed_scopes is not None
        else None,
        token_ttl=body.token_ttl,
        status=body.status,
        check=precondition,
    )
    if after is None or precondition.seen is None:
        raise ApiProblem(NOT_FOUND, f"OAuth client {client_id!r} does not exist")
    before = precondition.seen
    await admin_state(request).audit.record(
        caller=caller,
        facts=facts,
        action="update",
        resource_type="oauth_client",
        resource_id=client_id,
        before=before.as_json(),
        after=after.as_json(),
    )
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
    caller: Caller = Depends(require(Permission.CREDENTIALS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    await _client(request, client_id, caller)
    precondition = _precondition(if_match)
    deleted = await oauth_server(request).clients.delete(client_id, check=precondition)
    before = precondition.seen
    if not deleted or before is None:
        raise ApiProblem(NOT_FOUND, f"OAuth client {client_id!r} does not exist")
    await admin_state(request).audit.record(
        caller=caller,
        facts=facts,
        action="delete",
        resource_type="oauth_client",
        resource_id=client_id,
        before=before.as_json(),
        status=204,
    )
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
    caller: Caller = Depends(require(Permission.CREDENTIALS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    await _client(request, client_id, caller)
    precondition = _precondition(if_match)
    rotated = await oauth_server(request).clients.rotate_secret(client_id, check=precondition)
    before = precondition.seen
    if rotated is None or before is None:
        raise ApiProblem(NOT_FOUND, f"OAuth client {client_id!r} does not exist")
    client, secret = rotated
    await admin_state(request).audit.record(
        caller=caller,
        facts=facts,
        action="rotate-secret",
        resource_type="oauth_client",
        resource_id=client_id,
        before=before.as_json(),
        after=client.as_json(),
    )
    return _with_secret(client, secret, 200)


# ---------------------------------------------------------------------------- signing keys


def _key_json(key: SigningKeyInfo) -> dict[str, Any]:
    return key.as_json()


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
    caller: Caller = Depends(require(Permission.CREDENTIALS_READ)),
) -> Response:
    keys = parse_sort(sort, KEY_SORT, "-created_at")
    items = [_key_json(k) for k in await oauth_server(request).keys.keys()]
    page = paginate(items, lambda k: str(k["kid"]), keys, limit=limit, cursor=cursor)
    return _page(request, page.items, page.next_cursor)


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
    caller: Caller = Depends(require(Permission.CREDENTIALS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    (await scope_of(request, caller)).require_unlimited("the token-signing key")
    key = await oauth_server(request).keys.rotate()
    out = _key_json(key)
    await admin_state(request).audit.record(
        caller=caller,
        facts=facts,
        action="rotate",
        resource_type="signing_key",
        resource_id=key.kid,
        after={k: v for k, v in out.items() if k != "public_jwk"},
    )
    return respond(out)
