"""Admin API of consumers' basic-auth, hmac-auth and mtls-auth credentials.

Under the consumer, one path per kind (the plugin's name), the same five operations:

    POST   /consumers/{username}/{kind}                          create (a secret shown once)
    GET    /consumers/{username}/{kind}                          list
    GET    /consumers/{username}/{kind}/{credential_id}          get (never a secret)
    POST   /consumers/{username}/{kind}/{credential_id}/rotate   new secret (basic, hmac)
    DELETE /consumers/{username}/{kind}/{credential_id}          delete

A response carrying a secret (an hmac secret, a generated basic-auth password) is
`Cache-Control: no-store`; the audit log records the credential without it. The
rules are the service's (services/credentials.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from pydantic import BaseModel, Field

from portcullis.admin.operations import admin_state, operation, respond
from portcullis.admin.pagination import page_response
from portcullis.admin.problems import problem_responses
from portcullis.identity.credential_store import ConsumerCredential, CredentialKind
from portcullis.services.context import Operation
from portcullis.services.credentials import (
    CREDENTIAL_SORT,
    PATHS,
    CredentialCreate,
    CredentialOut,
    CredentialRotate,
    CredentialService,
    etag_of_credential,
)
from portcullis.services.pagination import DEFAULT_LIMIT, MAX_LIMIT, sort_pattern
from portcullis.services.rbac import Permission

router = APIRouter()
NO_STORE = {"Cache-Control": "no-store"}
TAG = "Consumer credentials"
IfMatch = Annotated[
    str | None, Header(description="ETag from a previous read; 412 when it no longer matches")
]


class CredentialWithSecret(CredentialOut):
    secret: str | None = Field(
        default=None,
        description="hmac-auth: the shared secret; basic-auth: the generated password (absent "
        "when you gave one). Shown only in this response",
    )


class CredentialPage(BaseModel):
    items: list[CredentialOut]
    next: str | None


def credential_service(request: Request) -> CredentialService:
    state = admin_state(request)
    return CredentialService(state.engine, state.secret, state.editor)


def _with_secret(credential: ConsumerCredential, secret: str | None, status: int) -> Response:
    body: dict[str, Any] = credential.as_json()
    if secret is not None:
        body["secret"] = secret
    return respond(body, status, etag=etag_of_credential(credential), **NO_STORE)


def _routes(kind: CredentialKind) -> None:
    path = PATHS[kind]
    snake = path.replace("-", "_")
    base = f"/consumers/{{username}}/{path}"
    one = f"{base}/{{credential_id}}"

    async def create(
        request: Request,
        username: str,
        body: Annotated[CredentialCreate, Body()] = CredentialCreate(),
        op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
    ) -> Response:
        credential, secret = await credential_service(request).create(op, username, kind, body)
        response = _with_secret(credential, secret, 201)
        response.headers["Location"] = f"/admin/v1/consumers/{username}/{path}/{credential.id}"
        return response

    async def list_(
        request: Request,
        username: str,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: str | None = None,
        sort: Annotated[
            str | None,
            Query(description="created_at; `-` descending", pattern=sort_pattern(CREDENTIAL_SORT)),
        ] = None,
        op: Operation = Depends(operation(Permission.CREDENTIALS_READ)),
    ) -> Response:
        page = await credential_service(request).list_for_consumer(
            op, username, kind, limit=limit, cursor=cursor, sort=sort
        )
        return page_response(request, page.items, page.next_cursor)

    async def get(
        request: Request,
        username: str,
        credential_id: str,
        op: Operation = Depends(operation(Permission.CREDENTIALS_READ)),
    ) -> Response:
        found = await credential_service(request).get(op, username, kind, credential_id)
        return respond(found.as_json(), etag=etag_of_credential(found))

    async def rotate(
        request: Request,
        username: str,
        credential_id: str,
        body: Annotated[CredentialRotate, Body()] = CredentialRotate(),
        if_match: IfMatch = None,
        op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
    ) -> Response:
        credential, secret = await credential_service(request).rotate(
            op, username, kind, credential_id, body, if_match=if_match
        )
        return _with_secret(credential, secret, 200)

    async def delete(
        request: Request,
        username: str,
        credential_id: str,
        if_match: IfMatch = None,
        op: Operation = Depends(operation(Permission.CREDENTIALS_WRITE)),
    ) -> Response:
        await credential_service(request).delete(
            op, username, kind, credential_id, if_match=if_match
        )
        return Response(status_code=204)

    router.add_api_route(
        base,
        create,
        methods=["POST"],
        tags=[TAG],
        summary=f"Create a {path} credential for a consumer (a secret is shown once)",
        status_code=201,
        response_model=CredentialWithSecret,
        responses={
            201: {"headers": {"Location": {"schema": {"type": "string"}}}},
            **problem_responses(400, 401, 403, 404, 409, 422, 429),
        },
        operation_id=f"create_{snake}_credential",
    )
    router.add_api_route(
        base,
        list_,
        methods=["GET"],
        tags=[TAG],
        summary=f"List a consumer's {path} credentials",
        response_model=CredentialPage,
        responses=problem_responses(400, 401, 403, 404, 422, 429),
        operation_id=f"list_{snake}_credentials",
    )
    router.add_api_route(
        one,
        get,
        methods=["GET"],
        tags=[TAG],
        summary=f"Get a {path} credential (never its secret)",
        response_model=CredentialOut,
        responses=problem_responses(401, 403, 404, 429),
        operation_id=f"get_{snake}_credential",
    )
    if kind is not CredentialKind.MTLS:
        router.add_api_route(
            f"{one}/rotate",
            rotate,
            methods=["POST"],
            tags=[TAG],
            summary=f"Replace a {path} credential's secret (shown once; the old one stops)",
            response_model=CredentialWithSecret,
            responses=problem_responses(401, 403, 404, 412, 422, 429),
            operation_id=f"rotate_{snake}_credential",
        )
    router.add_api_route(
        one,
        delete,
        methods=["DELETE"],
        tags=[TAG],
        summary=f"Delete a {path} credential",
        status_code=204,
        response_class=Response,
        responses=problem_responses(401, 403, 404, 412, 429),
        operation_id=f"delete_{snake}_credential",
    )


for _kind in CredentialKind:
    _routes(_kind)
