"""OAuth clients of consumers and the OAuth server's token-signing keys in the graph.

Every field calls `services.oauth_clients.OAuthClientService` on the application's
OAuth server (`GraphDeps.extras("oauth_server")`, the one REST uses), so the rules
(organization scoping, the token lifetime limit, audit) are the service's. A client
secret appears only in the payload of `createOAuthClient` and
`rotateOAuthClientSecret`, as REST returns it once.
"""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from portcullis.graph.connections import Connection, page_connection, page_size
from portcullis.graph.context import GraphContext, context_of
from portcullis.graph.fields import etag_field, mutation, or_none
from portcullis.graph.models import input_type, output_type, validated
from portcullis.identity.oauth_server import OAuthServer
from portcullis.services.oauth_clients import (
    ClientChanges,
    OAuthClientCreate,
    OAuthClientOut,
    OAuthClientPatch,
    OAuthClientService,
    SigningKeyOut,
)
from portcullis.services.preconditions import etag_of
from portcullis.services.rbac import Permission


def client_service(ctx: GraphContext) -> OAuthClientService:
    server = ctx.deps.extras("oauth_server")
    assert isinstance(server, OAuthServer), "the application supplies its OAuth server"
    return OAuthClientService(server, ctx.editor)


OAuthClient: Any = output_type(
    OAuthClientOut,
    "OAuthClient",
    etag_field(etag_of),
)
SigningKey: Any = output_type(SigningKeyOut, "SigningKey")
OAuthClientInput: Any = input_type(OAuthClientCreate)
# Every member optional (the model's defaults); an explicit null is refused by the service.
OAuthClientPatchInput: Any = input_type(OAuthClientPatch)


@strawberry.type(description="An OAuth client as the change left it")
class OAuthClientPayload:
    oauth_client: OAuthClient


@strawberry.type(
    description="An OAuth client and its secret; the secret is shown only in this payload"
)
class OAuthClientWithSecret:
    oauth_client: OAuthClient
    client_secret: str


@strawberry.type(description="The new token-signing key")
class SigningKeyPayload:
    signing_key: SigningKey


@strawberry.type(description="What a delete removed.")
class DeletedOAuthClient:
    client_id: str


SortArg = Annotated[str | None, strawberry.argument(description="name, created_at; `-` descending")]
IfMatch = Annotated[
    str | None,
    strawberry.argument(description="The client's etag from a previous read; refused if changed"),
]


async def consumer_oauth_clients(
    info: Info[Any, Any],
    consumer: str,
    first: int | None = None,
    after: str | None = None,
    sort: SortArg = None,
) -> Any:
    """One page of consumer `consumer`'s OAuth clients (an error for an unknown consumer).

    One service call per consumer: `Consumer.oauthClients` resolves through this function,
    the place to swap in a per-request DataLoader."""
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_READ)
    page = await client_service(ctx).list_for_consumer(
        op, consumer, limit=page_size(first), cursor=after, sort=sort
    )
    return page_connection(page)


async def get_oauth_client(info: Info[Any, Any], client_id: str) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_READ)
    found = await or_none(client_service(ctx).get(op, client_id))
    return None if found is None else found.as_json()


async def signing_keys(
    info: Info[Any, Any],
    first: int | None = None,
    after: str | None = None,
    sort: Annotated[
        str | None, strawberry.argument(description="created_at; `-` descending")
    ] = None,
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_READ)
    page = await client_service(ctx).list_signing_keys(
        op, limit=page_size(first), cursor=after, sort=sort
    )
    return page_connection(page)


async def create_oauth_client(
    info: Info[Any, Any],
    consumer: str,
    input: Annotated[Any, strawberry.argument(graphql_type=OAuthClientInput)],
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_WRITE)
    service = client_service(ctx)
    # The input is checked first, as REST's body is checked before the handler runs.
    body = validated(OAuthClientCreate, input)
    client, secret = await service.create(
        op,
        consumer,
        name=body.name,
        allowed_scopes=body.allowed_scopes,
        token_ttl=body.token_ttl,
    )
    return OAuthClientWithSecret(oauth_client=client.as_json(), client_secret=secret)


async def update_oauth_client(
    info: Info[Any, Any],
    client_id: str,
    patch: Annotated[Any, strawberry.argument(graphql_type=OAuthClientPatchInput)],
    if_match: IfMatch = None,
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_WRITE)
    changes = ClientChanges.of(validated(OAuthClientPatch, patch))
    after = await client_service(ctx).update(op, client_id, changes, if_match=if_match)
    return OAuthClientPayload(oauth_client=after.as_json())


async def delete_oauth_client(
    info: Info[Any, Any], client_id: str, if_match: IfMatch = None
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_WRITE)
    await client_service(ctx).delete(op, client_id, if_match=if_match)
    return DeletedOAuthClient(client_id=client_id)


async def rotate_oauth_client_secret(
    info: Info[Any, Any], client_id: str, if_match: IfMatch = None
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_WRITE)
    client, secret = await client_service(ctx).rotate_secret(op, client_id, if_match=if_match)
    return OAuthClientWithSecret(oauth_client=client.as_json(), client_secret=secret)


async def rotate_signing_key(info: Info[Any, Any]) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_WRITE)
    key = await client_service(ctx).rotate_signing_key(op)
    return SigningKeyPayload(signing_key=key.as_json())


QUERIES: dict[str, Any] = {
    "consumerOAuthClients": strawberry.field(
        resolver=consumer_oauth_clients,
        graphql_type=Connection[OAuthClient],
        description="A consumer's OAuth clients (never their secrets)",
    ),
    "oauthClient": strawberry.field(
        resolver=get_oauth_client,
        graphql_type=OAuthClient | None,
        description="One OAuth client (never its secret); null when absent or not yours",
    ),
    "signingKeys": strawberry.field(
        resolver=signing_keys,
        graphql_type=Connection[SigningKey],
        description="The token-signing keys (public parts only; removed keys are left out)",
    ),
}


MUTATIONS: dict[str, Any] = {
    "createOAuthClient": mutation(
        create_oauth_client,
        "CreateOAuthClientResult",
        OAuthClientWithSecret,
        "Register a consumer as an OAuth client (the secret is in this payload only)",
    ),
    "updateOAuthClient": mutation(
        update_oauth_client,
        "UpdateOAuthClientResult",
        OAuthClientPayload,
        "Change an OAuth client's name, scopes, token lifetime or status",
    ),
    "deleteOAuthClient": mutation(
        delete_oauth_client,
        "DeleteOAuthClientResult",
        DeletedOAuthClient,
        "Delete an OAuth client",
    ),
    "rotateOAuthClientSecret": mutation(
        rotate_oauth_client_secret,
        "RotateOAuthClientSecretResult",
        OAuthClientWithSecret,
        "Replace an OAuth client's secret (the new one in this payload only; the old one stops)",
    ),
    "rotateSigningKey": mutation(
        rotate_signing_key,
        "RotateSigningKeyResult",
        SigningKeyPayload,
        "Sign tokens with a new key from now on (deployment-wide)",
    ),
}


async def _consumer_clients_link(
    self: Any,
    info: Info[Any, Any],
    first: int | None = None,
    after: str | None = None,
    sort: SortArg = None,
) -> Any:
    return await consumer_oauth_clients(info, str(self["username"]), first, after, sort)


def consumer_links() -> dict[str, tuple[Any, Any]]:
    """The fields this area adds to the `Consumer` node (graph/entities.py)."""
    return {
        "oauth_clients": (
            Connection[OAuthClient],
            strawberry.field(
                resolver=_consumer_clients_link,
                graphql_type=Connection[OAuthClient],
                description="The consumer's OAuth clients (needs credentials:read)",
            ),
        ),
    }
