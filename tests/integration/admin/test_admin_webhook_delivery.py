"""End to end through the admin API: endpoints made over HTTP receive signed deliveries
from the admin app's own delivery worker, verified by a receiver built on the PyPI
`standardwebhooks` library (tests/support/webhook_receiver.py).

The app here allows loopback destinations (`webhook_allowed_networks`), as an operator
would with `PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI

from portcullis.admin.app import create_admin_app
from portcullis.settings import Settings
from support.webhook_receiver import Answer, WebhookReceiver, webhook_receiver


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    settings = Settings(
        database_url=database_url,
        log_json=False,
        webhook_allowed_networks=["127.0.0.0/8"],
        webhook_poll_interval=0.05,
    )
    application = create_admin_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def _ok(response: httpx.Response) -> Any:
    assert response.status_code in (200, 201, 202, 204), response.text
    return response.json() if response.content else None


async def _until(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 30) -> Any:
    """Poll the API (a read, no side effect) until `probe` returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _key(owner: httpx.AsyncClient, name: str) -> str:
    created = await _ok(await owner.post("/admin/v1/consumers/alice/keys", json={"name": name}))
    return str(created["id"])


async def _endpoint(
    owner: httpx.AsyncClient, receiver: WebhookReceiver, event_types: list[str]
) -> str:
    created = await _ok(
        await owner.post(
            "/admin/v1/webhooks", json={"url": receiver.url, "event_types": event_types}
        )
    )
    receiver.secret = created["secret"]
    return str(created["id"])


def _body(receiver: WebhookReceiver, index: int) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(receiver.deliveries[index].body)
    return value


async def test_signed_deliveries_rotation_disable_and_test_events(
    owner: httpx.AsyncClient,
) -> None:
    await _ok(await owner.post("/admin/v1/consumers", json={"username": "alice"}))
    first, second = await _key(owner, "first"), await _key(owner, "second")
    async with webhook_receiver() as hooks, webhook_receiver() as control:
        ident = await _endpoint(owner, hooks, ["key.revoked", "webhook.test"])

        # A key revoked through the admin API arrives as `key.revoked`, signed with the
        # secret the create returned.
        await _ok(await owner.post(f"/admin/v1/keys/{first}/revoke", json={"reason": "leak"}))
        [revoked] = await hooks.wait_for(1)
        assert revoked.verified is True
        assert _body(hooks, 0)["type"] == "key.revoked"
        assert _body(hooks, 0)["data"]["key_id"] == first

        # Rotation: during the grace period both secrets verify the same delivery.
        old = hooks.secret
        rotated = await _ok(await owner.post(f"/admin/v1/webhooks/{ident}/rotate-secret"))
        test = await _ok(await owner.post(f"/admin/v1/webhooks/{ident}/test"))
        delivered = (await hooks.wait_for(2))[1]
        assert _body(hooks, 1)["type"] == "webhook.test"
        assert delivered.headers["webhook-id"] == test["message_id"]
        assert len(delivered.headers["webhook-signature"].split()) == 2
        assert hooks.verifies(delivered)  # the old secret
        hooks.secret = rotated["secret"]
        assert hooks.verifies(delivered)  # the new one
        assert old != rotated["secret"]

        # Disabled: nothing is queued for it, while an enabled endpoint hears the event.
        await _ok(await owner.post(f"/admin/v1/webhooks/{ident}/disable"))
        await _endpoint(owner, control, ["key.*"])
        await _ok(await owner.post(f"/admin/v1/keys/{second}/revoke", json={"reason": "x"}))
        [heard] = await control.wait_for(1)
        assert heard.verified is True
        assert json.loads(heard.body)["data"]["key_id"] == second
        listed = await _ok(await owner.get(f"/admin/v1/webhooks/{ident}/deliveries"))
        assert [d["event_type"] for d in listed["items"]] == ["webhook.test", "key.revoked"]
        assert len(hooks.deliveries) == 2

        # Every delivery of one event, across endpoints; and the attempts' export.
        event_id = json.loads(heard.body)["event_id"]
        per_event = await _ok(await owner.get(f"/admin/v1/webhooks/deliveries?event_id={event_id}"))
        assert [d["event_type"] for d in per_event["items"]] == ["key.revoked"]
        assert per_event["items"][0]["status"] == "delivered"
        [attempt] = per_event["items"][0]["attempts"]
        assert attempt["status_code"] == 204
        assert attempt["response_excerpt_encoding"] == "text"
        export = await owner.get(f"/admin/v1/webhooks/{ident}/deliveries/export?format=jsonl")
        lines = [json.loads(line) for line in export.text.splitlines()]
        assert sorted(r["event_type"] for r in lines) == ["key.revoked", "webhook.test"]
        assert old not in export.text
        assert rotated["secret"] not in export.text


async def test_dead_letters_are_replayed_one_or_all_of_a_time_range(
    owner: httpx.AsyncClient,
) -> None:
    async with webhook_receiver() as hooks:
        ident = await _endpoint(owner, hooks, ["webhook.test"])

        async def dead_letter() -> str:
            # 410 Gone: the delivery is dead-lettered and the endpoint disabled (reason gone).
            hooks.answer(Answer(410, body=b"\xff\xfe gone"))
            sent = await _ok(await owner.post(f"/admin/v1/webhooks/{ident}/test"))

            async def disabled() -> bool:
                shown = await _ok(await owner.get(f"/admin/v1/webhooks/{ident}"))
                return bool(shown["disabled_reason"] == "gone")

            await _until(disabled, "the endpoint disabled by a 410")
            enabled = await _ok(await owner.post(f"/admin/v1/webhooks/{ident}/enable"))
            assert enabled["disabled_reason"] is None
            return str(sent["message_id"])

        message = await dead_letter()
        failed = await _ok(await owner.get(f"/admin/v1/webhooks/{ident}/deliveries?status=failed"))
        [dead] = failed["items"]
        assert dead["id"] == message
        assert dead["attempts"][0]["status_code"] == 410
        assert dead["attempts"][0]["response_excerpt_encoding"] == "base64"

        replayed = await owner.post(f"/admin/v1/webhooks/{ident}/deliveries/{message}/replay")
        assert replayed.status_code == 202, replayed.text
        again = (await hooks.wait_for(2))[1]
        assert again.verified is True
        assert again.headers["webhook-id"] == message  # the same id on every attempt

        async def delivered(message_id: str) -> bool:
            page = await _ok(await owner.get(f"/admin/v1/webhooks/{ident}/deliveries"))
            return any(d["id"] == message_id and d["status"] == "delivered" for d in page["items"])

        await _until(lambda: delivered(message), "the replayed delivery recorded")
        # A delivered one may be replayed too (a receiver that lost it).
        await _ok(await owner.post(f"/admin/v1/webhooks/{ident}/deliveries/{message}/replay"))
        assert (await hooks.wait_for(3))[2].headers["webhook-id"] == message

        # All dead letters of a time range at once.
        second = await dead_letter()
        now = datetime.now(UTC)
        window = {"since": (now + timedelta(hours=1)).isoformat()}
        none = await _ok(await owner.post(f"/admin/v1/webhooks/{ident}/replay-failed", json=window))
        assert none == {"replayed": 0}
        window = {"since": (now - timedelta(hours=1)).isoformat()}
        some = await _ok(await owner.post(f"/admin/v1/webhooks/{ident}/replay-failed", json=window))
        assert some == {"replayed": 1}
        await _until(lambda: delivered(second), "the dead letters replayed")
        replay = (await hooks.wait_for(5))[4]
        assert replay.headers["webhook-id"] == second
        assert replay.verified is True


async def test_v1a_deliveries_verify_with_the_public_key_the_api_returned(
    owner: httpx.AsyncClient,
) -> None:
    async with webhook_receiver() as hooks:
        created = await _ok(
            await owner.post(
                "/admin/v1/webhooks",
                json={"url": hooks.url, "event_types": ["*"], "signature": "v1a"},
            )
        )
        public = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(created["public_key"].removeprefix("whpk_"))
        )
        await _ok(await owner.post(f"/admin/v1/webhooks/{created['id']}/test"))
        [delivery] = await hooks.wait_for(1)
    headers = delivery.headers
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + delivery.body
    [signature] = headers["webhook-signature"].split()
    scheme, _, value = signature.partition(",")
    assert scheme == "v1a"
    public.verify(base64.b64decode(value), signed)  # raises InvalidSignature otherwise
