"""Outgoing webhooks in the graph, on `services.webhooks.WebhookService` as REST's
`/admin/v1/webhooks`: endpoints (CRUD, enable/disable, secret rotation, test events),
their deliveries with every attempt, and replays.

The signing secret appears in exactly two payloads, `createWebhook`'s and
`rotateWebhookSecret`'s (`secret`); the `Webhook` node never has it, nor custom header
values (only their names). Organization-limited admins see and change their
organization's endpoints only, as over REST.

REST's streamed CSV / JSON-lines attempts export is a deliberate exception: a GraphQL
response is one bounded JSON document; `webhookDeliveries` pages the same attempts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from portcullis.graph.connections import Connection, connection, page_connection, page_size
from portcullis.graph.context import context_of
from portcullis.graph.entities import Deleted
from portcullis.graph.models import input_document, input_type, output_type
from portcullis.graph.problems import result_union
from portcullis.graph.support import (
    Area,
    as_data,
    mutation,
    query,
    returning,
    sort_argument,
    validated,
)
from portcullis.services.rbac import Permission
from portcullis.services.webhooks import (
    DEFAULT_GRACE,
    ENDPOINT_SORT,
    AttemptOut,
    DeliveryConditions,
    DeliveryOut,
    DeliveryWithAttempts,
    ReplayFailedIn,
    WebhookCreate,
    WebhookOut,
    WebhookService,
    WebhookSettings,
    etag_of_endpoint,
)
from portcullis.webhooks.runner import destination_policy

WebhookInput = input_type(WebhookCreate)
WebhookPatch = input_type(WebhookSettings, patch=True)
EndpointSort = sort_argument(ENDPOINT_SORT)


def _etag(self: Any) -> str:
    return etag_of_endpoint(self)


_etag.__annotations__ = {"self": Any, "return": str}


Webhook = output_type(
    WebhookOut,
    "Webhook",
    {"etag": (str, strawberry.field(resolver=_etag, description="ETag (ifMatch)"))},
)
WebhookAttempt = output_type(AttemptOut, "WebhookAttempt")
WebhookDelivery = output_type(DeliveryWithAttempts, "WebhookDelivery")
# A replay answers the delivery without its attempts.
WebhookReplayed = output_type(DeliveryOut, "WebhookReplayedDelivery")


@strawberry.type(description="The endpoint as the change left it.")
class WebhookPayload:
    webhook: Webhook  # type: ignore[valid-type]


@strawberry.type(description="The endpoint and its signing secret, shown only here.")
class WebhookSecretPayload:
    webhook: Webhook  # type: ignore[valid-type]
    secret: str = strawberry.field(
        description="`whsec_...` (v1), shown only in this payload; for v1a the `whpk_` key"
    )


@strawberry.type(description="The delivery queued again.")
class WebhookReplayPayload:
    delivery: WebhookReplayed  # type: ignore[valid-type]


@strawberry.type(description="How many dead-lettered deliveries were queued again.")
class WebhookReplayedPayload:
    replayed: int


@strawberry.type(description="The test delivery queued (see its deliveries).")
class WebhookTestPayload:
    message_id: str


WebhookResult = result_union("WebhookResult", WebhookPayload)
WebhookSecretResult = result_union("WebhookSecretResult", WebhookSecretPayload)
DeleteWebhookResult = result_union("DeleteWebhookResult", Deleted)
ReplayWebhookDeliveryResult = result_union("ReplayWebhookDeliveryResult", WebhookReplayPayload)
ReplayFailedWebhookDeliveriesResult = result_union(
    "ReplayFailedWebhookDeliveriesResult", WebhookReplayedPayload
)
TestWebhookResult = result_union("TestWebhookResult", WebhookTestPayload)


WebhookDeliveryFilter = input_type(DeliveryConditions)


def _service(info: Info[Any, Any]) -> WebhookService:
    ctx = context_of(info)
    state = ctx.state
    return WebhookService(
        state.engine, state.secret, ctx.editor, destination_policy(state.settings)
    )


def _shown(webhook: dict[str, Any]) -> Any:
    return webhook


async def webhooks(
    info: Info[Any, Any],
    first: int | None = None,
    after: str | None = None,
    sort: EndpointSort = None,  # type: ignore[valid-type]
    enabled: bool | None = None,
    event_type: Annotated[
        str | None, strawberry.argument(description="Endpoints that would receive this kind")
    ] = None,
    organization: str | None = None,
) -> Connection[Webhook]:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.WEBHOOKS_READ)
    page = await _service(info).list_endpoints(
        op,
        enabled=enabled,
        event_type=event_type,
        organization=organization,
        limit=page_size(first),
        cursor=after,
        sort=sort,
    )
    return page_connection(page)


async def webhook(info: Info[Any, Any], id: strawberry.ID) -> Webhook | None:  # type: ignore[valid-type]
    from portcullis.services.errors import NOT_FOUND, ServiceError

    op = await context_of(info).operation(Permission.WEBHOOKS_READ)
    try:
        found: Any = await _service(info).get(op, str(id))
    except ServiceError as exc:
        if exc.kind is NOT_FOUND:
            return None
        raise
    return found  # type: ignore[no-any-return]  # dict-backed


async def webhook_deliveries(
    info: Info[Any, Any],
    endpoint_id: Annotated[
        str | None, strawberry.argument(description="Only this endpoint's deliveries")
    ] = None,
    first: int | None = None,
    after: str | None = None,
    event_id: Annotated[
        int | None, strawberry.argument(description="Only the deliveries of this event")
    ] = None,
    filter: WebhookDeliveryFilter | None = None,  # type: ignore[valid-type]
) -> Connection[WebhookDelivery]:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.WEBHOOKS_READ)
    where = validated(DeliveryConditions, filter).where(endpoint_id, event_id)
    page = await _service(info).deliveries(op, where, limit=page_size(first), cursor=after)
    # Deliveries are paged by message id: each one's id resumes after it.
    return connection(page.items, page.next_cursor, lambda d: str(d["id"]))


@returning(WebhookSecretResult)
async def create_webhook(info: Info[Any, Any], input: WebhookInput) -> Any:  # type: ignore[valid-type]
    async def run() -> WebhookSecretPayload:
        op = await context_of(info).operation(Permission.WEBHOOKS_WRITE)
        created, secret = await _service(info).create(op, validated(WebhookCreate, input))
        return WebhookSecretPayload(webhook=_shown(created), secret=secret)

    return await as_data(run)


@returning(WebhookResult)
async def update_webhook(
    info: Info[Any, Any],
    id: strawberry.ID,
    patch: WebhookPatch,  # type: ignore[valid-type]
    if_match: str | None = None,
) -> Any:
    async def run() -> WebhookPayload:
        op = await context_of(info).operation(Permission.WEBHOOKS_WRITE)
        service = _service(info)
        after = await service.update(op, str(id), input_document(patch), if_match=if_match)
        return WebhookPayload(webhook=_shown(after))

    return await as_data(run)


@returning(DeleteWebhookResult)
async def delete_webhook(
    info: Info[Any, Any], id: strawberry.ID, if_match: str | None = None
) -> Any:
    async def run() -> Deleted:
        op = await context_of(info).operation(Permission.WEBHOOKS_WRITE)
        await _service(info).delete(op, str(id), if_match=if_match)
        return Deleted(id=str(id))

    return await as_data(run)


def _set_enabled(enabled: bool) -> Any:
    async def set_enabled(
        info: Info[Any, Any], id: strawberry.ID, if_match: str | None = None
    ) -> Any:
        async def run() -> WebhookPayload:
            op = await context_of(info).operation(Permission.WEBHOOKS_WRITE)
            service = _service(info)
            after = await service.set_enabled(op, str(id), enabled, if_match=if_match)
            return WebhookPayload(webhook=_shown(after))

        return await as_data(run)

    return returning(WebhookResult)(set_enabled)


@returning(WebhookSecretResult)
async def rotate_webhook_secret(
    info: Info[Any, Any],
    id: strawberry.ID,
    grace_seconds: Annotated[
        int,
        strawberry.argument(
            description="How long the old secret keeps signing beside the new one (0: stops now)"
        ),
    ] = int(DEFAULT_GRACE.total_seconds()),
    if_match: str | None = None,
) -> Any:
    async def run() -> WebhookSecretPayload:
        op = await context_of(info).operation(Permission.WEBHOOKS_WRITE)
        after, secret = await _service(info).rotate(
            op, str(id), grace=timedelta(seconds=grace_seconds), if_match=if_match
        )
        return WebhookSecretPayload(webhook=_shown(after), secret=secret)

    return await as_data(run)


@returning(TestWebhookResult)
async def test_webhook(info: Info[Any, Any], id: strawberry.ID) -> Any:
    async def run() -> WebhookTestPayload:
        op = await context_of(info).operation(Permission.WEBHOOKS_WRITE)
        return WebhookTestPayload(message_id=await _service(info).send_test(op, str(id)))

    return await as_data(run)


@returning(ReplayWebhookDeliveryResult)
async def replay_webhook_delivery(info: Info[Any, Any], id: strawberry.ID, message_id: str) -> Any:
    async def run() -> WebhookReplayPayload:
        op = await context_of(info).operation(Permission.WEBHOOKS_WRITE)
        replayed: Any = await _service(info).replay(op, str(id), message_id)
        return WebhookReplayPayload(delivery=replayed)

    return await as_data(run)


@returning(ReplayFailedWebhookDeliveriesResult)
async def replay_failed_webhook_deliveries(
    info: Info[Any, Any],
    id: strawberry.ID,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Any:
    async def run() -> WebhookReplayedPayload:
        op = await context_of(info).operation(Permission.WEBHOOKS_WRITE)
        window = validated(ReplayFailedIn, None, since=since, until=until)
        count = await _service(info).replay_failed(
            op, str(id), since=window.since, until=window.until
        )
        return WebhookReplayedPayload(replayed=count)

    return await as_data(run)


def build() -> Area:
    field = query
    return Area(
        queries={
            "webhooks": field(webhooks, "Webhook endpoints the caller sees"),
            "webhook": field(webhook, "One webhook endpoint; null when absent or not yours"),
            "webhookDeliveries": field(
                webhook_deliveries,
                "Deliveries, newest first, each with every attempt (one endpoint's with "
                "endpointId; one event's with filter.eventId)",
            ),
        },
        mutations={
            "createWebhook": mutation(
                create_webhook, "Create a webhook endpoint (its signing secret is shown once)"
            ),
            "updateWebhook": mutation(
                update_webhook, "Change a webhook endpoint (JSON Merge Patch: null removes)"
            ),
            "deleteWebhook": mutation(
                delete_webhook, "Delete a webhook endpoint with its deliveries and history"
            ),
            "enableWebhook": mutation(_set_enabled(True), "Enable a webhook endpoint"),
            "disableWebhook": mutation(_set_enabled(False), "Disable a webhook endpoint"),
            "rotateWebhookSecret": mutation(
                rotate_webhook_secret,
                "Rotate the signing secret (shown once; the old one signs for the grace period)",
            ),
            "testWebhook": mutation(test_webhook, "Send a `webhook.test` event to the endpoint"),
            "replayWebhookDelivery": mutation(
                replay_webhook_delivery, "Deliver one finished delivery again"
            ),
            "replayFailedWebhookDeliveries": mutation(
                replay_failed_webhook_deliveries,
                "Deliver again every dead-lettered delivery of the endpoint in a time range",
            ),
        },
    )
