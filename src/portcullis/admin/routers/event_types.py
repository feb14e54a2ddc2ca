"""`GET /admin/v1/event-types`: every platform event kind with its version and the JSON
Schema of its data; and the admin OpenAPI document's top-level `webhooks` section, one
operation per kind describing the body a webhook receiver gets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel, Field, create_model

from portcullis.admin.dependencies import require
from portcullis.admin.problems import problem_responses
from portcullis.events.catalogue import CATALOGUE, EventSpec
from portcullis.services.rbac import Caller, Permission

router = APIRouter(tags=["Events"])


class EventTypeOut(BaseModel):
    name: str = Field(description="The kind, as webhook endpoints' `event_types` name it")
    version: int = Field(description="Bumped when the data changes in a way that can break")
    summary: str
    subject: str = Field(description="What the event's `subject` names")
    schema_: dict[str, Any] = Field(alias="schema", description="JSON Schema of the event's `data`")


class EventTypeList(BaseModel):
    items: list[EventTypeOut]


def event_type_json(spec: EventSpec) -> dict[str, Any]:
    return {
        "name": spec.kind.value,
        "version": spec.version,
        "summary": spec.summary,
        "subject": spec.subject,
        "schema": spec.schema(),
    }


@router.get(
    "/event-types",
    summary="The platform's event kinds, each with its version and data schema",
    response_model=EventTypeList,
    responses=problem_responses(401, 403, 429),
    operation_id="list_event_types",
)
async def list_event_types(
    caller: Caller = Depends(require(Permission.CONFIG_READ)),
) -> dict[str, Any]:
    return {"items": [event_type_json(spec) for spec in CATALOGUE.values()]}


def _envelope(spec: EventSpec) -> type[BaseModel]:
    """The body a receiver gets for one kind (see webhooks/outbox.py `payload`)."""
    name = "".join(part.title() for part in spec.kind.value.replace("_", ".").split("."))
    model: type[BaseModel] = create_model(
        f"{name}Webhook",
        __doc__=spec.summary,
        type=(str, Field(description=f"always `{spec.kind.value}`")),
        timestamp=(str, Field(description="when the event happened (RFC 3339)")),
        event_id=(int, Field(description="the event's position; equal on every retry")),
        subject=(str, Field(description=spec.subject)),
        data=(spec.model, ...),
    )
    return model


def install_webhook_docs(app: FastAPI) -> None:
    """One `webhooks` operation per event kind in the OpenAPI 3.1 document."""
    for spec in CATALOGUE.values():
        body = _envelope(spec)

        async def receiver(event: BaseModel) -> None:
            """Documentation only: the operation a webhook receiver implements."""

        # The body model is built per kind; annotations are strings under `from
        # __future__ import annotations`, so the model goes in as an object.
        receiver.__annotations__ = {"event": body, "return": None}

        app.webhooks.add_api_route(
            spec.kind.value,
            receiver,
            methods=["POST"],
            summary=spec.summary,
            description=(
                "Sent with Standard Webhooks headers: `webhook-id` (the same on every "
                "retry), `webhook-timestamp`, `webhook-signature` (`v1,<base64 "
                "HMAC-SHA256>` of `{id}.{timestamp}.{body}`; two during a secret "
                "rotation). Answer 2xx within 15 s; 410 disables the endpoint."
            ),
            operation_id=f"webhook_{spec.kind.value.replace('.', '_')}",
            status_code=204,
            tags=["Webhooks"],
        )
