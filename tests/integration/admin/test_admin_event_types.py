"""The event catalogue on the admin API (`/admin/v1/event-types`) and in the OpenAPI
document's `webhooks` section."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from jsonschema import Draft202012Validator

from portcullis.events.catalogue import CATALOGUE
from support.events import SAMPLES


async def test_every_event_kind_is_listed_with_a_schema_its_data_satisfies(
    owner: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    listed = await owner.get("/admin/v1/event-types")
    assert listed.status_code == 200, listed.text
    items = {item["name"]: item for item in listed.json()["items"]}
    assert set(items) == {kind.value for kind in CATALOGUE}
    for kind, sample in SAMPLES.items():
        item = items[kind.value]
        assert item["version"] >= 1
        Draft202012Validator.check_schema(item["schema"])
        assert Draft202012Validator(item["schema"]).is_valid(sample), kind
    revoked = Draft202012Validator(items["key.revoked"]["schema"])
    assert not revoked.is_valid({"consumer": "alice"})  # no key_id
    assert (await anonymous.get("/admin/v1/event-types")).status_code == 401


def test_the_openapi_document_describes_each_webhook_body(app: FastAPI) -> None:
    document = app.openapi()
    webhooks = document["webhooks"]
    assert set(webhooks) == {kind.value for kind in CATALOGUE}
    body = webhooks["key.revoked"]["post"]["requestBody"]["content"]["application/json"]
    envelope = document["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]
    assert set(envelope["required"]) == {"type", "timestamp", "event_id", "subject", "data"}
    assert "webhook-signature" in webhooks["key.revoked"]["post"]["description"]
