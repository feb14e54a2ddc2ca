"""Webhook self-service in the developer portal: a developer subscribes an endpoint to
their applications' events, sees its deliveries and replays one.

Every operation goes through `services.webhooks.WebhookService` (the SSRF guard on the
destination, sealing, the secret shown once, audit, the delivery queue); this module
adds the portal's ownership rule only.

Ownership (docs/decisions/037): an endpoint made in the portal records the developer
*team* that owns the application it is for (`webhook_endpoints.portal_team_id`,
migration 0022), in the same transaction as the endpoint. The team's members see and
manage exactly those endpoints; any other endpoint id is "not found", an operator's
endpoint included (even one filtered on the team's application: its URL and deliveries are the
operator's). The endpoint belongs to the application's organization (its admins see
it in the dashboard) and is filtered on the application (`consumer`): the outbox
delivers only events whose data names that consumer, so a developer can never
receive another application's events, whatever event kinds they pick.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import Operation
from portcullis.services.errors import errors_from_pydantic, invalid, not_found, validated
from portcullis.services.portal_catalogue import PortalAccess
from portcullis.services.webhooks import DeliveryFilter, WebhookCreate, WebhookService

# The event kinds about one application a developer may subscribe to.
PORTAL_EVENT_TYPES = (
    "key.*",
    "credential.*",
    "quota.threshold_reached",
    "version.sunset_approaching",
    "anomaly.detected",
)
MAX_ENDPOINTS_PER_TEAM = 20


class PortalWebhookIn(BaseModel):
    """What the portal's subscription form sends."""

    model_config = ConfigDict(extra="forbid")

    app: str = Field(min_length=1, max_length=128, description="one of the team's applications")
    url: str = Field(min_length=1, max_length=2048)
    event_types: list[str] = Field(min_length=1, max_length=len(PORTAL_EVENT_TYPES))
    description: str = Field("", max_length=500)

    @classmethod
    def parse(cls, data: Any) -> PortalWebhookIn:
        """Validated input; a 422 naming each bad field otherwise."""
        return validated(cls, data)


class PortalWebhooks:
    """A team's webhook endpoints (see the module docstring)."""

    def __init__(self, webhooks: WebhookService, editor: ConfigEditor) -> None:
        self._webhooks = webhooks
        self._editor = editor

    async def _owned(self, access: PortalAccess, endpoint_id: str) -> None:
        if len(endpoint_id) > 64 or await self._webhooks.team_of(endpoint_id) not in access.teams:
            raise not_found(
                f"webhook endpoint {endpoint_id!r} does not exist", target="endpoint_id"
            )

    async def endpoints(self, op: Operation, access: PortalAccess) -> list[dict[str, Any]]:
        """The endpoints of the developer's teams, newest first."""
        ids = [
            i for team in sorted(access.teams) for i in await self._webhooks.team_endpoints(team)
        ]
        return [await self._webhooks.get(op, i) for i in ids]

    async def get(self, op: Operation, access: PortalAccess, endpoint_id: str) -> dict[str, Any]:
        await self._owned(access, endpoint_id)
        return await self._webhooks.get(op, endpoint_id)

    async def create(
        self, op: Operation, access: PortalAccess, data: PortalWebhookIn
    ) -> tuple[dict[str, Any], str]:
        """A new endpoint for one of the developer's applications, owned by the
        application's team; (it, its signing secret, shown once)."""
        app = access.app(data.app)
        if app is None:
            raise invalid([("#/app", f"{data.app!r} is not one of your applications")])
        team = app.team_id
        wrong = [
            (f"#/event_types/{i}", f"one of {', '.join(PORTAL_EVENT_TYPES)}")
            for i, t in enumerate(data.event_types)
            if t not in PORTAL_EVENT_TYPES
        ]
        if wrong:
            raise invalid(wrong)
        if len(await self._webhooks.team_endpoints(team)) >= MAX_ENDPOINTS_PER_TEAM:
            raise invalid([("#", f"a team has at most {MAX_ENDPOINTS_PER_TEAM} endpoints")])
        config = (await self._editor.state()).config
        consumer = next(c for c in config.consumers if c.username == data.app)
        try:
            spec = WebhookCreate(
                url=data.url,
                event_types=sorted(set(data.event_types)),
                description=data.description,
                consumer=data.app,
                organization=consumer.organization,
            )
        except ValidationError as exc:
            raise invalid(errors_from_pydantic(exc.errors())) from None
        return await self._webhooks.create(op, spec, portal_team=team)

    async def deliveries(
        self, op: Operation, access: PortalAccess, endpoint_id: str, *, limit: int = 20
    ) -> list[dict[str, Any]]:
        await self._owned(access, endpoint_id)
        page = await self._webhooks.deliveries(
            op, DeliveryFilter(endpoint_id=endpoint_id), limit=limit
        )
        return page.items

    async def replay(
        self, op: Operation, access: PortalAccess, endpoint_id: str, message_id: str
    ) -> dict[str, Any]:
        await self._owned(access, endpoint_id)
        return await self._webhooks.replay(op, endpoint_id, message_id)

    async def send_test(self, op: Operation, access: PortalAccess, endpoint_id: str) -> str:
        await self._owned(access, endpoint_id)
        return await self._webhooks.send_test(op, endpoint_id)

    async def set_enabled(
        self, op: Operation, access: PortalAccess, endpoint_id: str, enabled: bool
    ) -> dict[str, Any]:
        await self._owned(access, endpoint_id)
        return await self._webhooks.set_enabled(op, endpoint_id, enabled)

    async def delete(self, op: Operation, access: PortalAccess, endpoint_id: str) -> None:
        await self._owned(access, endpoint_id)
        await self._webhooks.delete(op, endpoint_id)
