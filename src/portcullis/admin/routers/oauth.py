"""HTTP endpoints of the built-in OAuth2 authorization server (public, outside /admin/v1).

`POST /oauth/token`, `POST /oauth/introspect`, `POST /oauth/revoke`,
`GET /.well-known/jwks.json` and `GET /.well-known/oauth-authorization-server`.
They speak OAuth, not the admin API's conventions: form-encoded requests, RFC 6749
§5.2 JSON errors (`error`, `error_description`), `Cache-Control: no-store` on every
response that may carry a token. They are in the OpenAPI description too
(tag "OAuth 2.0"), with their own form bodies and OAuth error responses — not the
admin API's problem details (admin/openapi.py leaves their responses alone).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from portcullis.identity.oauth_server import (
    INTROSPECTION_PATH,
    JWKS_PATH,
    MAX_FORM_BYTES,
    METADATA_PATH,
    REVOCATION_PATH,
    TOKEN_PATH,
    OAuthError,
    OAuthServer,
    invalid_request,
    parse_form,
)
from portcullis.identity.oauth_settings import OAuthServerSettings
from portcullis.services.oauth_clients import ConsumerDirectory
from portcullis.services.preconditions import etag_of
from portcullis.services.state import AdminState

router = APIRouter(tags=["OAuth 2.0"])
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
OAUTH_ERROR_REF = {"$ref": "#/components/schemas/OAuthError"}
_CLIENT_AUTH = (
    "Client authentication: HTTP Basic (`client_secret_basic`) or `client_id` and"
    " `client_secret` in the form (`client_secret_post`)."
)


def _form_body(required: list[str], fields: dict[str, Any]) -> dict[str, Any]:
    """An operation's `application/x-www-form-urlencoded` body (read by hand, so FastAPI
    cannot infer it)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "required": required, "properties": fields}
                }
            },
        }
    }


def _oauth_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """RFC 6749 §5.2 error responses (JSON, not problem details)."""
    text = {
        400: "invalid_request, invalid_grant, invalid_scope or unsupported_grant_type",
        401: "invalid_client (with a WWW-Authenticate challenge)",
    }
    return {
        s: {"description": text[s], "content": {"application/json": {"schema": OAUTH_ERROR_REF}}}
        for s in statuses
    }


_CLIENT_FIELDS = {
    "client_id": {"type": "string"},
    "client_secret": {"type": "string", "format": "password"},
}
# The body of introspection and revocation requests.
_TOKEN_FORM = _form_body(
    ["token"],
    {"token": {"type": "string"}, "token_type_hint": {"type": "string"}, **_CLIENT_FIELDS},
)
JWKS_MAX_AGE = 300
METADATA_MAX_AGE = 3600


def oauth_server(request: Request) -> OAuthServer:
    """The application's OAuth server, created on first use from the admin services."""
    return oauth_server_of(request.app)


def oauth_server_of(app: Any) -> OAuthServer:
    """The OAuth server of application `app` (made on first use; REST and GraphQL share it)."""
    server: OAuthServer | None = getattr(app.state, "oauth_server", None)
    if server is None:
        admin: AdminState = app.state.admin
        server = OAuthServer(
            admin.engine,
            admin.secret,
            issuer=admin.settings.issuer,
            settings=OAuthServerSettings(),
            consumer_lookup=ConsumerDirectory(admin.editor).get,
        )
        app.state.oauth_server = server
    return server


async def _form(request: Request) -> dict[str, str]:
    """The form body, read up to MAX_FORM_BYTES (a larger body is refused, not buffered)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise invalid_request("the request body is too large")
    return parse_form(request.headers.get("content-type"), bytes(body))


def _authorization(request: Request) -> str | None:
    return request.headers.get("authorization")


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _error(exc: OAuthError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers={**exc.headers, **NO_STORE})


def _json(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=NO_STORE)


@router.post(
    TOKEN_PATH,
    summary="Client credentials grant",
    description=_CLIENT_AUTH,
    responses={
        200: {
            "description": "An RFC 9068 JWT access token",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/OAuthToken"}}
            },
        },
        **_oauth_errors(400, 401),
    },
    openapi_extra=_form_body(
        ["grant_type"],
        {
            "grant_type": {"type": "string", "const": "client_credentials"},
            "scope": {"type": "string", "description": "space-separated scopes"},
            **_CLIENT_FIELDS,
        },
    ),
)
async def token(request: Request) -> Response:
    """RFC 6749 §4.4 client credentials grant: an RFC 9068 JWT access token."""
    try:
        form = await _form(request)
        server = oauth_server(request)
        return _json(await server.token(_authorization(request), form, _address(request)))
    except OAuthError as exc:
        return _error(exc)


@router.post(
    INTROSPECTION_PATH,
    summary="Token introspection",
    description=_CLIENT_AUTH,
    responses={
        200: {
            "description": '`{"active": false}` for unknown, expired or others\' tokens',
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/OAuthIntrospection"}}
            },
        },
        **_oauth_errors(400, 401),
    },
    openapi_extra=_TOKEN_FORM,
)
async def introspect(request: Request) -> Response:
    """RFC 7662 token introspection (client-authenticated; only the client's own tokens)."""
    try:
        form = await _form(request)
        server = oauth_server(request)
        return _json(await server.introspect(_authorization(request), form, _address(request)))
    except OAuthError as exc:
        return _error(exc)


@router.post(
    REVOCATION_PATH,
    summary="Token revocation",
    description=_CLIENT_AUTH,
    responses={
        200: {"description": "Revoked, or the token was unknown"},
        **_oauth_errors(400, 401),
    },
    openapi_extra=_TOKEN_FORM,
)
async def revoke(request: Request) -> Response:
    """RFC 7009 token revocation: 200 whether or not the token was known."""
    try:
        form = await _form(request)
        server = oauth_server(request)
        await server.revoke(_authorization(request), form, _address(request))
    except OAuthError as exc:
        return _error(exc)
    return Response(status_code=200, headers=NO_STORE)


@router.get(
    JWKS_PATH,
    summary="JSON Web Key Set",
    responses={
        200: {
            "description": "Public keys only",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["keys"],
                        "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
                    }
                }
            },
        },
        304: {"description": "Not modified (If-None-Match)"},
    },
)
async def jwks(request: Request) -> Response:
    """RFC 7517 JWK Set: the public keys of the active and the still-published retired keys."""
    body = await oauth_server(request).keys.jwks()
    etag = etag_of(body)
    headers = {"Cache-Control": f"public, max-age={JWKS_MAX_AGE}", "ETag": etag}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return JSONResponse(body, headers=headers)


@router.get(
    METADATA_PATH,
    summary="Authorization server metadata",
    responses={
        200: {
            "description": "RFC 8414 metadata",
            "content": {"application/json": {"schema": {"type": "object", "required": ["issuer"]}}},
        }
    },
)
async def metadata(request: Request) -> Response:
    """RFC 8414 authorization server metadata."""
    return JSONResponse(
        oauth_server(request).metadata(),
        headers={"Cache-Control": f"public, max-age={METADATA_MAX_AGE}"},
    )
