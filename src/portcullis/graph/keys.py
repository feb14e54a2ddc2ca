"""Consumer API keys in the graph: list, look up, create, update, rotate, suspend,
resume, revoke and import keys, and the quota usage of a key or a consumer.

Every field calls `services.keys.KeyService` (or `services.usage.UsageService`) as
REST does, with the caller's operation, so validation, organization scoping, audit
and events are the service's. A full key appears only in the payload of the
mutation that makes it (`createApiKey`, `rotateApiKey`, `importApiKeys`), as REST
returns it once; the `ApiKey` type has no field for the key or its hash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from portcullis.graph.connections import Connection, Edge, PageInfo, page_size
from portcullis.graph.context import GraphContext, context_of
from portcullis.graph.fields import etag_field, mutation, or_none
from portcullis.graph.models import input_document, input_type, output_type, validated
from portcullis.identity.key_admin import KeyInfo, KeySettings, KeySpec
from portcullis.identity.key_repository import KeyPage, encode_cursor, parse_sort_field
from portcullis.services.keys import (
    KeyOut,
    KeyQuery,
    KeyService,
    ReasonIn,
    RotateIn,
    etag_of_key,
    represent,
)
from portcullis.services.rbac import Permission
from portcullis.services.usage import QuotaUsageOut, UsageService

QuotaUsage: Any = output_type(QuotaUsageOut, "QuotaUsage")


def key_service(ctx: GraphContext) -> KeyService:
    state = ctx.state
    return KeyService(state.engine, state.secret, ctx.editor)


def usage_service(ctx: GraphContext) -> UsageService:
    state = ctx.state
    return UsageService(state.engine, state.secret, ctx.editor, state.settings)


async def _key_usage(self: Any, info: Info[Any, Any]) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_READ)
    return await usage_service(ctx).of_key(op, str(self["id"]))


_key_usage.__annotations__ = {"self": Any, "info": Info, "return": QuotaUsage}

ApiKey: Any = output_type(
    KeyOut,
    "ApiKey",
    {
        **etag_field(etag_of_key),
        "quota_usage": (
            QuotaUsage,
            strawberry.field(
                resolver=_key_usage,
                description="The key's quota usage: its own quotas and its consumer's",
            ),
        ),
    },
)
KeyFilter: Any = input_type(KeyQuery)
KeySpecInput: Any = input_type(KeySpec)
KeySettingsPatch: Any = input_type(KeySettings, patch=True)


@strawberry.type(description="An API key as the change left it")
class ApiKeyPayload:
    api_key: ApiKey


@strawberry.type(description="A new API key. `key` is shown only in this payload: store it now.")
class ApiKeyCreated:
    api_key: ApiKey
    key: str


@strawberry.type(description="A rotation: the successor (its `key` shown only here), the old key")
class ApiKeyRotated:
    api_key: ApiKey
    key: str = strawberry.field(description="The successor's full key; shown only here")
    previous: ApiKey = strawberry.field(description="The rotated key, working until its graceUntil")


@strawberry.type(description="One imported key (`key`: generated keys only, shown only here)")
class ImportedApiKey:
    row: int
    id: str
    prefix: str | None
    consumer: str
    name: str
    key: str | None


@strawberry.type(description="The outcome of an import (nothing stored on a dry run)")
class ApiKeysImported:
    created: int
    dry_run: bool
    items: list[ImportedApiKey]


def key_connection(ctx_now: datetime, page: KeyPage, sort: str | None) -> Connection[Any]:
    """A connection over a page of keys; every edge's cursor resumes after its key (the
    store's keyset cursor on the sort field)."""
    field, descending = parse_sort_field(sort)
    edges = [
        Edge(
            cursor=encode_cursor(field, descending, getattr(info, field), info.id),
            node=represent(info, ctx_now),
        )
        for info in page.items
    ]
    if edges and page.next_cursor is not None:
        edges[-1].cursor = page.next_cursor
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.next_cursor is not None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        nodes=[e.node for e in edges],
    )


FilterArg = Annotated[
    Any, strawberry.argument(graphql_type=KeyFilter | None, description="REST's filters")
]
SortArg = Annotated[
    str | None,
    strawberry.argument(
        description="One of created_at, name, consumer, expires_at, last_used_at; `-` descending"
    ),
]


async def keys_page(
    info: Info[Any, Any],
    consumer: str | None,
    first: int | None = None,
    after: str | None = None,
    sort: str | None = None,
    filter: Any = None,
) -> Connection[Any]:
    """One page of the keys the caller may see, or (`consumer`) of one consumer's keys:
    then not found for an unknown or invisible consumer, as REST.

    One service call per consumer: `Consumer.keys` resolves through this function, the
    place to swap in a per-request DataLoader."""
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_READ)
    where = validated(KeyQuery, filter).as_filter()
    service, limit = key_service(ctx), page_size(first)
    if consumer is None:
        page = await service.list_keys(op, where, limit=limit, cursor=after, sort=sort)
    else:
        page = await service.list_consumer_keys(
            op, consumer, where, limit=limit, cursor=after, sort=sort
        )
    return key_connection(op.now(), page, sort)


async def list_api_keys(
    info: Info[Any, Any],
    first: int | None = None,
    after: str | None = None,
    sort: SortArg = None,
    filter: FilterArg = None,
) -> Any:
    return await keys_page(info, None, first, after, sort, filter)


async def list_consumer_api_keys(
    info: Info[Any, Any],
    consumer: str,
    first: int | None = None,
    after: str | None = None,
    sort: SortArg = None,
    filter: FilterArg = None,
) -> Any:
    return await keys_page(info, consumer, first, after, sort, filter)


async def get_api_key(info: Info[Any, Any], id: strawberry.ID) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_READ)
    found = await or_none(key_service(ctx).get(op, str(id)))
    return None if found is None else represent(found, op.now())


async def api_key_quota_usage(info: Info[Any, Any], id: strawberry.ID) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_READ)
    return await usage_service(ctx).of_key(op, str(id))


async def consumer_quota_usage(info: Info[Any, Any], consumer: str) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_READ)
    return await usage_service(ctx).of_consumer(op, consumer)


# ---------------------------------------------------------------------------- mutations

IfMatch = Annotated[
    str | None,
    strawberry.argument(description="The key's etag from a previous read; refused if it changed"),
]


async def create_api_key(
    info: Info[Any, Any],
    consumer: str,
    input: Annotated[Any, strawberry.argument(graphql_type=KeySpecInput)],
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_WRITE)
    created = await key_service(ctx).create(op, consumer, validated(KeySpec, input))
    return ApiKeyCreated(api_key=represent(created.info, op.now()), key=created.key)


async def update_api_key(
    info: Info[Any, Any],
    id: strawberry.ID,
    patch: Annotated[Any, strawberry.argument(graphql_type=KeySettingsPatch)],
    if_match: IfMatch = None,
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_WRITE)
    updated = await key_service(ctx).update(op, str(id), input_document(patch), if_match=if_match)
    return ApiKeyPayload(api_key=represent(updated, op.now()))


async def _transition(
    info: Info[Any, Any],
    id: strawberry.ID,
    action: Any,
    reason: str | None,
    if_match: str | None,
    status: int = 200,
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_WRITE)
    if reason is not None:
        reason = validated(ReasonIn, {"reason": reason}).reason
    changed: KeyInfo = await key_service(ctx).transition(
        op, str(id), action, reason=reason, if_match=if_match, status=status
    )
    return ApiKeyPayload(api_key=represent(changed, op.now()))


async def revoke_api_key(
    info: Info[Any, Any], id: strawberry.ID, reason: str, if_match: IfMatch = None
) -> Any:
    return await _transition(info, id, "revoke", reason, if_match)


async def delete_api_key(
    info: Info[Any, Any],
    id: strawberry.ID,
    reason: str = "revoked via DELETE",
    if_match: IfMatch = None,
) -> Any:
    return await _transition(info, id, "revoke", reason, if_match, status=204)


async def suspend_api_key(
    info: Info[Any, Any], id: strawberry.ID, reason: str, if_match: IfMatch = None
) -> Any:
    return await _transition(info, id, "suspend", reason, if_match)


async def resume_api_key(info: Info[Any, Any], id: strawberry.ID, if_match: IfMatch = None) -> Any:
    return await _transition(info, id, "resume", None, if_match)


async def rotate_api_key(
    info: Info[Any, Any],
    id: strawberry.ID,
    grace_seconds: Annotated[
        int | None,
        strawberry.argument(description="How long the old key keeps working (0: it stops now)"),
    ] = None,
    expires_at: Annotated[
        datetime | None,
        strawberry.argument(description="The new key's expiry (left out: the old key's)"),
    ] = strawberry.UNSET,
    if_match: IfMatch = None,
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_WRITE)
    given: dict[str, Any] = {}
    if grace_seconds is not None:
        given["grace_seconds"] = grace_seconds
    if expires_at is not strawberry.UNSET:
        given["expires_at"] = expires_at
    options = validated(RotateIn, given)
    rotation = await key_service(ctx).rotate(
        op,
        str(id),
        grace_seconds=options.grace_seconds,
        expires_at=options.expires_at if "expires_at" in options.model_fields_set else "keep",
        if_match=if_match,
    )
    now = op.now()
    return ApiKeyRotated(
        api_key=represent(rotation.new, now),
        key=rotation.key,
        previous=represent(rotation.old, now),
    )


async def import_api_keys(
    info: Info[Any, Any],
    csv: Annotated[
        str, strawberry.argument(description="The CSV, as REST's POST /keys/import takes it")
    ],
    dry_run: bool = False,
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_WRITE)
    imported = await key_service(ctx).import_csv(op, csv, dry_run=dry_run)
    items = [
        ImportedApiKey(
            row=i.row,
            id=i.info.id,
            prefix=i.info.prefix,
            consumer=i.info.consumer,
            name=i.info.name,
            key=i.key,
        )
        for i in imported
    ]
    return ApiKeysImported(created=0 if dry_run else len(items), dry_run=dry_run, items=items)


QUERIES: dict[str, Any] = {
    "apiKeys": strawberry.field(
        resolver=list_api_keys,
        graphql_type=Connection[ApiKey],
        description="API keys the caller may see (metadata only, never keys or hashes)",
    ),
    "consumerApiKeys": strawberry.field(
        resolver=list_consumer_api_keys,
        graphql_type=Connection[ApiKey],
        description="A consumer's API keys (an error when the consumer is unknown or not yours)",
    ),
    "apiKey": strawberry.field(
        resolver=get_api_key,
        graphql_type=ApiKey | None,
        description="One API key by id or display prefix; null when absent or not yours",
    ),
    "apiKeyQuotaUsage": strawberry.field(
        resolver=api_key_quota_usage,
        graphql_type=QuotaUsage,
        description="An API key's quota usage (its own quotas and its consumer's)",
    ),
    "consumerQuotaUsage": strawberry.field(
        resolver=consumer_quota_usage,
        graphql_type=QuotaUsage,
        description="A consumer's quota usage: used, remaining and reset time per quota",
    ),
}


MUTATIONS: dict[str, Any] = {
    "createApiKey": mutation(
        create_api_key,
        "CreateApiKeyResult",
        ApiKeyCreated,
        "Create an API key for a consumer (the key is in this payload only)",
    ),
    "updateApiKey": mutation(
        update_api_key,
        "UpdateApiKeyResult",
        ApiKeyPayload,
        "Update a key's name, scopes, expiry, origins, IP allowlist, plan or metadata "
        "(JSON Merge Patch: null removes)",
    ),
    "deleteApiKey": mutation(
        delete_api_key,
        "DeleteApiKeyResult",
        ApiKeyPayload,
        "Revoke an API key as REST's DELETE does (the record stays; final)",
    ),
    "revokeApiKey": mutation(
        revoke_api_key, "RevokeApiKeyResult", ApiKeyPayload, "Revoke an API key (final)"
    ),
    "suspendApiKey": mutation(
        suspend_api_key,
        "SuspendApiKeyResult",
        ApiKeyPayload,
        "Suspend an API key until it is resumed",
    ),
    "resumeApiKey": mutation(
        resume_api_key, "ResumeApiKeyResult", ApiKeyPayload, "Resume a suspended API key"
    ),
    "rotateApiKey": mutation(
        rotate_api_key,
        "RotateApiKeyResult",
        ApiKeyRotated,
        "Issue a successor key (its key in this payload only); the old one works for a grace "
        "period",
    ),
    "importApiKeys": mutation(
        import_api_keys,
        "ImportApiKeysResult",
        ApiKeysImported,
        "Import API keys from CSV, all or nothing (generated keys in this payload only)",
    ),
}


async def _consumer_keys_link(
    self: Any,
    info: Info[Any, Any],
    first: int | None = None,
    after: str | None = None,
    sort: SortArg = None,
    filter: FilterArg = None,
) -> Any:
    username = str(self["username"])
    if after is not None or sort is not None or filter is not None:
        return await keys_page(info, username, first, after, sort, filter)
    # The first page in the default order: batched over every consumer of the request.
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_READ)
    limit = page_size(first)

    def make() -> DataLoader[str, KeyPage]:
        async def load(usernames: list[str]) -> list[KeyPage]:
            pages = await key_service(ctx).keys_of_consumers(op, usernames, per_consumer=limit)
            return [pages[name] for name in usernames]

        return DataLoader(load_fn=load)

    page = await ctx.loader(f"consumer-keys:{limit}", make).load(username)
    return key_connection(op.now(), page, None)


async def _consumer_usage_link(self: Any, info: Info[Any, Any]) -> Any:
    """The consumer's quota usage, read for every consumer of the request at once."""
    ctx = context_of(info)
    op = await ctx.operation(Permission.CREDENTIALS_READ)

    def make() -> DataLoader[str, QuotaUsageOut | None]:
        async def load(usernames: list[str]) -> list[QuotaUsageOut | None]:
            found = await usage_service(ctx).of_consumers(op, usernames)
            return [found.get(name) for name in usernames]

        return DataLoader(load_fn=load)

    return await ctx.loader("consumer-quota-usage", make).load(str(self["username"]))


_consumer_usage_link.__annotations__ = {"self": Any, "info": Info, "return": QuotaUsage | None}


def consumer_links() -> dict[str, tuple[Any, Any]]:
    """The fields this area adds to the `Consumer` node (graph/entities.py). Both read
    through per-request loaders: a page of consumers costs one read of keys and one of
    quota counters, however many consumers it holds."""
    return {
        "quota_usage": (
            QuotaUsage | None,
            strawberry.field(
                resolver=_consumer_usage_link,
                description="The consumer's quota usage (needs credentials:read)",
            ),
        ),
        "keys": (
            Connection[ApiKey],
            strawberry.field(
                resolver=_consumer_keys_link,
                graphql_type=Connection[ApiKey],
                description="The consumer's API keys (needs credentials:read)",
            ),
        ),
    }
