"""Consumers' basic-auth, hmac-auth and mtls-auth credentials in the graph.

One set of fields with a `kind` argument stands for the three REST paths
(`/consumers/{username}/basic-auth` ...); every field calls
`services.credentials.CredentialService`, so the rules (organization scoping,
secrets shown once, audit) are the service's. A secret appears only in the payload
of `createConsumerCredential` and `rotateConsumerCredential`.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from portcullis.graph.connections import Connection, page_connection, page_size
from portcullis.graph.context import GraphContext, context_of
from portcullis.graph.fields import etag_field, mutation, or_none
from portcullis.graph.models import input_type, output_type, validated
from portcullis.identity.credential_store import CredentialKind
from portcullis.services.credentials import (
    CredentialCreate,
    CredentialOut,
    CredentialRotate,
    CredentialService,
)
from portcullis.services.preconditions import etag_of
from portcullis.services.rbac import Permission


@strawberry.enum(description="A consumer credential's kind (its plugin: basic-auth ...)")
class ConsumerCredentialKind(Enum):
    BASIC = "basic"
    HMAC = "hmac"
    MTLS = "mtls"


def credential_service(ctx: GraphContext) -> CredentialService:
    state = ctx.state
    return CredentialService(state.engine, state.secret, ctx.editor)


ConsumerCredential: Any = output_type(CredentialOut, "ConsumerCredential", etag_field(etag_of))
CredentialInput: Any = input_type(CredentialCreate)
CredentialRotateInput: Any = input_type(CredentialRotate)


@strawberry.type(
    description="A credential and, when one was made, its secret (shown only in this payload)"
)
class ConsumerCredentialWithSecret:
    credential: ConsumerCredential
    secret: str | None


@strawberry.type(description="What a delete removed.")
class DeletedConsumerCredential:
    id: str


IfMatch = Annotated[
    str | None,
    strawberry.argument(description="The credential's etag from a previous read"),
]


def _kind(kind: ConsumerCredentialKind) -> CredentialKind:
    return CredentialKind(kind.value)


async def consumer_credentials(
    info: Info[Any, Any],
    consumer: str,
    kind: ConsumerCredentialKind,
    first: int | None = None,
    after: str | None = None,
    sort: Annotated[
        str | None, strawberry.argument(description="created_at; `-` descending")
    ] = None,
) -> Any:
    """One page of a consumer's credentials of one kind (never their secrets)."""
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_READ)
    page = await credential_service(ctx).list_for_consumer(
        op, consumer, _kind(kind), limit=page_size(first), cursor=after, sort=sort
    )
    return page_connection(page)


async def consumer_credential(
    info: Info[Any, Any], consumer: str, kind: ConsumerCredentialKind, id: str
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_READ)
    found = await or_none(credential_service(ctx).get(op, consumer, _kind(kind), id))
    return None if found is None else found.as_json()


async def create_consumer_credential(
    info: Info[Any, Any],
    consumer: str,
    kind: ConsumerCredentialKind,
    input: Annotated[Any, strawberry.argument(graphql_type=CredentialInput | None)] = None,
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_WRITE)
    body = validated(CredentialCreate, input if input is not None else {})
    created, secret = await credential_service(ctx).create(op, consumer, _kind(kind), body)
    return ConsumerCredentialWithSecret(credential=created.as_json(), secret=secret)


async def rotate_consumer_credential(
    info: Info[Any, Any],
    consumer: str,
    kind: ConsumerCredentialKind,
    id: str,
    input: Annotated[Any, strawberry.argument(graphql_type=CredentialRotateInput | None)] = None,
    if_match: IfMatch = None,
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_WRITE)
    body = validated(CredentialRotate, input if input is not None else {})
    rotated, secret = await credential_service(ctx).rotate(
        op, consumer, _kind(kind), id, body, if_match=if_match
    )
    return ConsumerCredentialWithSecret(credential=rotated.as_json(), secret=secret)


async def delete_consumer_credential(
    info: Info[Any, Any],
    consumer: str,
    kind: ConsumerCredentialKind,
    id: str,
    if_match: IfMatch = None,
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_WRITE)
    await credential_service(ctx).delete(op, consumer, _kind(kind), id, if_match=if_match)
    return DeletedConsumerCredential(id=id)


QUERIES: dict[str, Any] = {
    "consumerCredentials": strawberry.field(
        resolver=consumer_credentials,
        graphql_type=Connection[ConsumerCredential],
        description="A consumer's basic/hmac/mtls credentials of one kind (never secrets)",
    ),
    "consumerCredential": strawberry.field(
        resolver=consumer_credential,
        graphql_type=ConsumerCredential | None,
        description="One credential (never its secret); null when absent or not yours",
    ),
}

MUTATIONS: dict[str, Any] = {
    "createConsumerCredential": mutation(
        create_consumer_credential,
        "CreateConsumerCredentialResult",
        ConsumerCredentialWithSecret,
        "Create a basic/hmac/mtls credential (a generated secret in this payload only)",
    ),
    "rotateConsumerCredential": mutation(
        rotate_consumer_credential,
        "RotateConsumerCredentialResult",
        ConsumerCredentialWithSecret,
        "Replace a basic or hmac credential's secret (the old one stops working)",
    ),
    "deleteConsumerCredential": mutation(
        delete_consumer_credential,
        "DeleteConsumerCredentialResult",
        DeletedConsumerCredential,
        "Delete a basic/hmac/mtls credential",
    ),
}
