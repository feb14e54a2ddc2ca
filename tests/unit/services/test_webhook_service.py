"""Webhook endpoint operations without HTTP: organization scoping, the consumer scope,
the destination check (with a scripted resolver), If-Match and the version
compare-and-set, rotation, enable/disable, replays, excerpts, audit without secrets."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.secrets import ServerSecret
from portcullis.services.audit import AuditFilter, AuditLog
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import Operation
from portcullis.services.errors import (
    FORBIDDEN,
    NOT_FOUND,
    PRECONDITION_FAILED,
    VALIDATION_FAILED,
    ServiceError,
)
from portcullis.services.webhooks import (
    WEBHOOK_STATE_CONFLICT,
    DeliveryFilter,
    WebhookCreate,
    WebhookService,
    etag_of_endpoint,
    excerpt_json,
)
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import write_transaction
from portcullis.store.webhook_tables import WebhookEndpointRow, WebhookMessageRow
from portcullis.webhooks import queue
from portcullis.webhooks.destinations import DestinationPolicy
from portcullis.webhooks.endpoints import unseal_secrets
from portcullis.webhooks.retry import AttemptResult, Decision, Next
from support.services import operation as support_operation

# alice (org-a) and bob (org-b) exist.
pytestmark = pytest.mark.usefixtures("with_consumers")
SECRET = ServerSecret.from_secret(b"w" * 32)
T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


class Resolver:
    """DNS as the test scripts it: host -> addresses (missing: does not resolve)."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.calls = 0
        self.on_call: list[object] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        if self.on_call:
            hook = self.on_call.pop(0)
            await hook()  # type: ignore[operator]
        if host not in self.answers:
            raise OSError("no such host")
        return self.answers[host]


@pytest.fixture
def resolver() -> Resolver:
    return Resolver()


@pytest.fixture
def hooks(engine: AsyncEngine, resolver: Resolver) -> WebhookService:
    return WebhookService(
        engine,
        SECRET,
        ConfigEditor(ConfigRepository(engine)),
        DestinationPolicy(),
        resolver=resolver,
    )


def operation(engine: AsyncEngine, organization: str | None = None) -> Operation:
    return support_operation(engine, organization, actor="user:ops@example.com", clock=lambda: T0)


def spec(**extra: object) -> WebhookCreate:
    return WebhookCreate.model_validate(
        {"url": "https://93.184.216.34/in", "event_types": ["key.*"], **extra}
    )


async def refused(call: object) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_endpoints_are_scoped_to_the_callers_organization(
    hooks: WebhookService, engine: AsyncEngine
) -> None:
    everyone, a, b = operation(engine), operation(engine, "org-a"), operation(engine, "org-b")
    mine, _ = await hooks.create(a, spec(consumer="alice"))
    assert mine["organization"] == "org-a"
    assert mine["organization_id"] == "id-org-a"
    operator_wide, _ = await hooks.create(everyone, spec())
    assert operator_wide["organization_id"] is None

    # Another organization's consumer is unknown, whoever asks for this organization.
    assert (await refused(hooks.create(a, spec(consumer="bob")))).errors[0].pointer == "#/consumer"
    wrong = await refused(hooks.create(everyone, spec(organization="org-a", consumer="bob")))
    assert wrong.kind is VALIDATION_FAILED
    assert (await refused(hooks.create(a, spec(organization="org-b")))).kind is FORBIDDEN
    for call in (
        hooks.get(b, mine["id"]),
        hooks.update(b, mine["id"], {"description": "x"}),
        hooks.delete(b, mine["id"]),
        hooks.set_enabled(b, mine["id"], False),
        hooks.rotate(b, mine["id"]),
        hooks.send_test(b, mine["id"]),
        hooks.replay_failed(b, mine["id"]),
        hooks.deliveries(b, DeliveryFilter(endpoint_id=mine["id"])),
        hooks.get(a, operator_wide["id"]),  # an operator's endpoint is not an org's
    ):
        assert (await refused(call)).kind is NOT_FOUND
    assert [e["id"] for e in (await hooks.list_endpoints(a)).items] == [mine["id"]]
    assert (await hooks.list_endpoints(b)).items == []
    assert len((await hooks.list_endpoints(everyone)).items) == 2
    only_a = await hooks.list_endpoints(everyone, organization="org-a")
    assert [e["id"] for e in only_a.items] == [mine["id"]]
    # Deliveries across endpoints: b sees none of a's test event.
    await hooks.send_test(a, mine["id"])
    assert (await hooks.deliveries(b, DeliveryFilter())).items == []
    assert len((await hooks.deliveries(a, DeliveryFilter())).items) == 1


async def test_destinations_are_checked_by_what_the_host_resolves_to(
    hooks: WebhookService, engine: AsyncEngine, resolver: Resolver
) -> None:
    op = operation(engine)
    resolver.answers["inside.example"] = ["10.0.0.5"]
    resolver.answers["meta.example"] = ["169.254.169.254", "fd00::1"]
    resolver.answers["mixed.example"] = ["10.0.0.5", "93.184.216.34"]
    resolver.answers["public.example"] = ["93.184.216.34"]
    for url in ("https://inside.example/x", "http://meta.example/", "http://[::1]:8080/"):
        problem = await refused(hooks.create(op, spec(url=url)))
        assert [e.pointer for e in problem.errors] == ["#/url"], url
        assert "PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS" in problem.errors[0].detail
    for url in ("https://public.example/", "https://mixed.example/", "https://gone.example/"):
        await hooks.create(op, spec(url=url))  # gone.example does not resolve: accepted
    allowed = WebhookService(
        engine,
        SECRET,
        ConfigEditor(ConfigRepository(engine)),
        DestinationPolicy([__import__("ipaddress").ip_network("10.0.0.0/8")]),
        resolver=resolver,
    )
    await allowed.create(op, spec(url="https://inside.example/x"))


async def test_if_match_and_a_concurrent_change_are_not_lost(
    hooks: WebhookService, engine: AsyncEngine, resolver: Resolver
) -> None:
    op = operation(engine)
    created, _ = await hooks.create(op, spec(description="mine"))
    ident = created["id"]
    stale = await refused(hooks.update(op, ident, {"description": "x"}, if_match='"old"'))
    assert stale.kind is PRECONDITION_FAILED

    async def concurrent() -> None:
        # Another writer changes the endpoint while this update resolves its new host.
        async with write_transaction(engine) as conn:
            await conn.execute(
                update(WebhookEndpointRow)
                .where(WebhookEndpointRow.id == ident)
                .values(description="theirs", version=WebhookEndpointRow.version + 1)
            )

    resolver.answers["hooks.example"] = ["93.184.216.34"]
    resolver.on_call.append(concurrent)
    after = await hooks.update(op, ident, {"url": "https://hooks.example/in"})
    assert after["url"] == "https://hooks.example/in"
    assert after["description"] == "theirs"  # read again, not overwritten
    assert after["version"] == 3

    # With If-Match of the state before the concurrent change: refused on the fresh read.
    etag = etag_of_endpoint(after)
    resolver.on_call.append(concurrent)
    again = await refused(
        hooks.update(op, ident, {"url": "https://hooks.example/2"}, if_match=etag)
    )
    assert again.kind is PRECONDITION_FAILED


async def test_rotation_enable_disable_and_audit_without_secrets(
    hooks: WebhookService, engine: AsyncEngine
) -> None:
    op = operation(engine)
    created, secret = await hooks.create(op, spec(headers={"Authorization": "Bearer hdr-value"}))
    ident = created["id"]
    assert created["header_names"] == ["Authorization"]
    after, new = await hooks.rotate(op, ident, grace=timedelta(hours=2))
    assert new != secret
    assert after["signing_secrets"] == 2
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                WebhookEndpointRow.__table__.select().where(WebhookEndpointRow.id == ident)
            )
        ).one()
    stored = unseal_secrets(SECRET, ident, row.secrets_sealed)
    assert [s.secret for s in stored] == [new, secret]
    assert stored[1].expires_at == T0 + timedelta(hours=2)
    assert (await refused(hooks.rotate(op, ident, grace=timedelta(days=31)))).errors

    # The worker disabled it (410); enabling starts afresh.
    async with write_transaction(engine) as conn:
        await conn.execute(
            update(WebhookEndpointRow)
            .where(WebhookEndpointRow.id == ident)
            .values(enabled=False, disabled_reason="gone", failing_since=T0)
        )
    enabled = await hooks.set_enabled(op, ident, True)
    assert enabled["enabled"] is True
    assert enabled["disabled_reason"] is None
    assert enabled["failing_since"] is None
    disabled = await hooks.set_enabled(op, ident, False)
    assert disabled["disabled_reason"] == "manual"
    conflict = await refused(hooks.send_test(op, ident))
    assert conflict.kind is WEBHOOK_STATE_CONFLICT

    v1a, public = await hooks.create(op, spec(signature="v1a"))
    assert public.startswith("whpk_")
    assert v1a["public_key"] == public
    _, rotated_public = await hooks.rotate(op, v1a["id"])
    assert rotated_public.startswith("whpk_")

    events = await AuditLog(engine).page(
        AuditFilter(resource_type="webhook_endpoint"), limit=50, before_id=None
    )
    trail = json.dumps([e.as_json() for e in events])
    assert sorted(e.action for e in events) == [
        "create",
        "create",
        "disable",
        "enable",
        "rotate-secret",
        "rotate-secret",
    ]
    for leaked in (secret, new, "hdr-value", "whsk_"):
        assert leaked not in trail


async def test_replays_and_deliveries(hooks: WebhookService, engine: AsyncEngine) -> None:
    op = operation(engine)
    created, _ = await hooks.create(op, spec())
    ident = created["id"]
    message = await hooks.send_test(op, ident)
    pending = await refused(hooks.replay(op, ident, message))
    assert pending.kind is WEBHOOK_STATE_CONFLICT
    assert (await refused(hooks.replay(op, ident, "msg_nope"))).target == "message_id"
    async with write_transaction(engine) as conn:
        await conn.execute(
            update(WebhookMessageRow)
            .where(WebhookMessageRow.id == message)
            .values(status="failed", attempts=8, finished_at=T0)
        )
    window = await refused(hooks.replay_failed(op, ident, since=T0, until=T0))
    assert window.errors[0].pointer == "#/until"
    assert await hooks.replay_failed(op, ident, since=T0 + timedelta(seconds=1)) == 0
    assert await hooks.replay_failed(op, ident, since=T0 - timedelta(hours=1)) == 1
    [delivery] = (await hooks.deliveries(op, DeliveryFilter(endpoint_id=ident))).items
    assert delivery["status"] == "pending"
    assert delivery["attempts_made"] == 0
    assert (await hooks.deliveries(op, DeliveryFilter(status="failed"))).items == []
    first = await hooks.deliveries(op, DeliveryFilter(), limit=1)
    assert first.next_cursor is None
    bad = await refused(hooks.deliveries(op, DeliveryFilter(), cursor="nonsense"))
    assert bad.target == "cursor"


def test_excerpts_are_text_when_utf8_else_base64() -> None:
    assert excerpt_json(b'{"ok": true}') == ('{"ok": true}', "text")
    cut = "é".encode() * 3
    assert excerpt_json(cut[:-1]) == ("éé", "text")  # cut inside the last character
    assert excerpt_json(b"\xff\xfe\x00") == ("//4A", "base64")
    assert excerpt_json(None) == ("", "text")


async def test_an_endpoint_deleted_mid_attempt_does_not_break_the_group_commit(
    hooks: WebhookService, engine: AsyncEngine
) -> None:
    op = operation(engine)
    gone, _ = await hooks.create(op, spec())
    kept, _ = await hooks.create(op, spec())
    for ident in (gone["id"], kept["id"]):
        await hooks.send_test(op, ident)
    claimed = await queue.claim(engine, "w1", T0, limit=10, lease=timedelta(minutes=1))
    assert len(claimed) == 2
    await hooks.delete(op, gone["id"])  # while its attempt is in flight
    ok = AttemptResult(204, latency=0.01)
    outcomes = [queue.Outcome(c, ok, Decision(Next.DELIVERED), T0) for c in claimed]
    finished = await queue.finish(engine, "w1", outcomes, disable_after=timedelta(days=5))
    held = {o.message.endpoint_id: f.held for o, f in zip(outcomes, finished, strict=True)}
    assert held == {gone["id"]: False, kept["id"]: True}
    [delivery] = (await hooks.deliveries(op, DeliveryFilter(endpoint_id=kept["id"]))).items
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [204]


async def test_an_update_checks_only_what_it_changes(
    hooks: WebhookService, engine: AsyncEngine, resolver: Resolver
) -> None:
    op = operation(engine)
    resolver.answers["hooks.example"] = ["93.184.216.34"]
    created, _ = await hooks.create(op, spec(url="https://hooks.example/in"))
    resolver.answers["hooks.example"] = ["10.0.0.7"]  # moved inside since
    calls = resolver.calls
    edited = await hooks.update(op, created["id"], {"description": "still editable"})
    assert edited["description"] == "still editable"
    assert resolver.calls == calls  # the unchanged URL was not resolved again
    moved = await refused(hooks.update(op, created["id"], {"url": "https://hooks.example/2"}))
    assert [e.pointer for e in moved.errors] == ["#/url"]
