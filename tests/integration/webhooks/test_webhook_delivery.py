"""The outbox, the leased queue and the worker, on SQLite and PostgreSQL, delivering to
real receivers that verify every signature with the Standard Webhooks library.

Time is a `ManualClock`: the tests call `claim_and_start` / `drain` at chosen instants
instead of waiting for the retry schedule.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.events.bus import record_event
from portcullis.events.catalogue import EventType
from portcullis.identity.secrets import ServerSecret
from portcullis.store.analytics_tables import EventRow
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head
from portcullis.store.webhook_tables import (
    WebhookAttemptRow,
    WebhookEndpointRow,
    WebhookMessageRow,
)
from portcullis.webhooks import queue
from portcullis.webhooks.destinations import DestinationPolicy, parse_allowed_networks
from portcullis.webhooks.endpoints import NewEndpoint, create_endpoint, rotate_secret
from portcullis.webhooks.retry import AttemptResult, Decision, Next
from portcullis.webhooks.sender import Sender
from portcullis.webhooks.worker import BREAKER_FAILURES, Dispatcher
from support.clock import ManualClock
from support.events import sample
from support.webhook_receiver import Answer, WebhookReceiver, webhook_receiver

SERVER = ServerSecret.from_secret(b"webhook-delivery-test-secret-0123456789")
LOOPBACK = DestinationPolicy(parse_allowed_networks('["127.0.0.0/8"]'))
T0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC).timestamp()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    sender = Sender(LOOPBACK, timeout=5)
    try:
        yield sender
    finally:
        await sender.close()


def _dispatcher(
    engine: AsyncEngine, sender: Sender, clock: ManualClock, **kw: object
) -> Dispatcher:
    # Signatures carry real time (the receiver checks it against its own clock); the
    # schedule runs on the test's clock.
    return Dispatcher(engine, SERVER, sender, clock=clock, uniform=lambda a, b: 1.0, **kw)  # type: ignore[arg-type]


async def _endpoint(
    engine: AsyncEngine, clock: ManualClock, url: str, **kw: object
) -> tuple[str, str]:
    new = NewEndpoint(url=url, **{"event_types": ["key.*"], **kw})  # type: ignore[arg-type]
    async with write_transaction(engine) as conn:
        return await create_endpoint(conn, SERVER, new, datetime.fromtimestamp(clock(), UTC))


async def _event(
    engine: AsyncEngine,
    clock: ManualClock,
    kind: EventType = EventType.KEY_REVOKED,
    organization_id: str | None = None,
    **data: object,
) -> int:
    async with write_transaction(engine) as conn:
        event = await record_event(
            conn,
            kind,
            "key:k1",
            sample(kind, **data),
            now=datetime.fromtimestamp(clock(), UTC),
            organization_id=organization_id,
        )
    return event.id


async def _round(dispatcher: Dispatcher) -> int:
    started = await dispatcher.claim_and_start()
    await dispatcher.drain()
    return started


async def _messages(engine: AsyncEngine) -> Sequence[Row[Any]]:
    async with engine.connect() as conn:
        query = select(WebhookMessageRow).order_by(WebhookMessageRow.event_id)
        return (await conn.execute(query)).all()


async def _count(engine: AsyncEngine, table: type) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_an_event_and_its_messages_commit_or_roll_back_together(engine: AsyncEngine) -> None:
    clock = ManualClock(T0)
    await _endpoint(engine, clock, "http://127.0.0.1:9/hook")

    async def change_that_fails() -> None:
        async with write_transaction(engine) as conn:
            await record_event(conn, EventType.KEY_REVOKED, "key:k1", sample("key.revoked"))
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError, match="the change failed"):
        await change_that_fails()
    assert (await _count(engine, EventRow), await _count(engine, WebhookMessageRow)) == (0, 0)
    await _event(engine, clock)
    assert (await _count(engine, EventRow), await _count(engine, WebhookMessageRow)) == (1, 1)


async def test_a_delivery_is_signed_verified_and_recorded(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as receiver:
        _, secret = await _endpoint(engine, clock, receiver.url, headers={"X-Team": "blue"})
        receiver.secret = secret
        event_id = await _event(engine, clock)
        assert await _round(_dispatcher(engine, sender, clock)) == 1
    [delivery] = receiver.deliveries
    assert delivery.verified is True
    assert delivery.headers["x-team"] == "blue"
    body = json.loads(delivery.body)
    assert body["type"] == "key.revoked"
    assert body["event_id"] == event_id
    assert body["data"]["key_id"] == "k1"
    [message] = await _messages(engine)
    assert (message.status, message.attempts, message.id) == (
        "delivered",
        1,
        delivery.headers["webhook-id"],
    )
    assert await _count(engine, WebhookAttemptRow) == 1


async def test_a_failed_attempt_is_retried_on_schedule_with_the_same_id(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as receiver:
        _, receiver.secret = await _endpoint(engine, clock, receiver.url)
        receiver.answer(Answer(500), Answer(503, {"Retry-After": "60"}))
        await _event(engine, clock)
        dispatcher = _dispatcher(engine, sender, clock)
        assert await _round(dispatcher) == 1
        clock.advance(4.9)
        assert await _round(dispatcher) == 0  # the second attempt is due at +5 s
        clock.advance(0.1)
        assert await _round(dispatcher) == 1
        clock.advance(60)
        # A Retry-After shorter than the scheduled 5 minutes does not shorten it.
        assert await _round(dispatcher) == 0
        clock.advance(240)
        assert await _round(dispatcher) == 1
    assert [d.verified for d in receiver.deliveries] == [True, True, True]
    assert len({d.headers["webhook-id"] for d in receiver.deliveries}) == 1
    [message] = await _messages(engine)
    assert (message.status, message.attempts) == ("delivered", 3)


async def test_410_disables_the_endpoint_and_emits_an_event_other_endpoints_hear(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as gone, webhook_receiver() as watcher:
        endpoint, _ = await _endpoint(engine, clock, gone.url)
        _, watcher.secret = await _endpoint(engine, clock, watcher.url, event_types=["webhook.*"])
        gone.answer(Answer(410))
        await _event(engine, clock)
        dispatcher = _dispatcher(engine, sender, clock)
        await _round(dispatcher)
        assert dispatcher.stats.disabled == ["gone"]
        await _round(dispatcher)
        await _event(engine, clock)  # a disabled endpoint gets nothing new
        await _round(dispatcher)
    assert len(gone.deliveries) == 1
    [notice] = watcher.deliveries
    assert json.loads(notice.body)["data"] == {"endpoint_id": endpoint, "reason": "gone"}
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(WebhookEndpointRow).where(WebhookEndpointRow.id == endpoint))
        ).one()
    assert (row.enabled, row.disabled_reason) == (False, "gone")


async def test_the_last_failed_attempt_dead_letters_and_long_failure_disables(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as receiver:
        receiver.answer(*[Answer(500)] * 8)
        await _endpoint(engine, clock, receiver.url)
        await _event(engine, clock)
        dispatcher = _dispatcher(engine, sender, clock, disable_after=timedelta(days=5))
        for _ in range(8):
            assert await _round(dispatcher) == 1
            clock.advance(36000)
    [message] = await _messages(engine)
    assert (message.status, message.attempts) == ("failed", 8)
    assert dispatcher.stats.dead_lettered == 1
    # 8 attempts span ~27.5 h: failing, but not for 5 days, so still enabled.
    assert dispatcher.stats.disabled == []


async def test_an_endpoint_failing_for_the_configured_time_is_disabled(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as receiver:
        receiver.answer(*[Answer(500)] * 3)
        await _endpoint(engine, clock, receiver.url)
        dispatcher = _dispatcher(engine, sender, clock, disable_after=timedelta(hours=1))
        await _event(engine, clock)
        await _round(dispatcher)
        clock.advance(3600)
        await _event(engine, clock)
        await _round(dispatcher)
    assert dispatcher.stats.disabled == ["failing"]


async def test_an_expired_lease_is_taken_over_and_the_late_finisher_is_told(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as receiver:
        _, receiver.secret = await _endpoint(engine, clock, receiver.url)
        await _event(engine, clock)
        dead = _dispatcher(engine, sender, clock, owner="dead-worker")
        now = datetime.fromtimestamp(clock(), UTC)
        [held] = await queue.claim(engine, "dead-worker", now, limit=10, lease=dead.lease)
        live = _dispatcher(engine, sender, clock, owner="live-worker")
        assert await _round(live) == 0  # the lease is still running
        clock.advance(dead.lease.total_seconds() + 1)
        assert await _round(live) == 1
    [delivery] = receiver.deliveries
    assert delivery.headers["webhook-id"] == held.id
    # The dead worker wakes up and reports its attempt: kept, but the message is not its.
    late = queue.Outcome(held, AttemptResult(500), Decision(Next.RETRY, 5), now)
    [finished] = await queue.finish(engine, "dead-worker", [late], disable_after=timedelta(days=5))
    assert finished.held is False
    [message] = await _messages(engine)
    assert (message.status, message.attempts) == ("delivered", 1)
    assert await _count(engine, WebhookAttemptRow) == 2


async def test_concurrent_claimers_never_hold_the_same_message(
    engine: AsyncEngine,
) -> None:
    clock = ManualClock(T0)
    await _endpoint(engine, clock, "http://127.0.0.1:9/hook")
    for _ in range(40):
        await _event(engine, clock)
    now = datetime.fromtimestamp(clock(), UTC)
    lease = timedelta(seconds=60)
    batches = await asyncio.gather(
        *(queue.claim(engine, f"w{i}", now, limit=7, lease=lease) for i in range(8))
    )
    claimed = [m.id for batch in batches for m in batch]
    assert len(claimed) == len(set(claimed)) == 40


async def test_organization_consumer_and_payload_filters_pick_the_endpoints(
    engine: AsyncEngine,
) -> None:
    clock = ManualClock(T0)
    operator, _ = await _endpoint(engine, clock, "http://127.0.0.1:9/op")
    org_a, _ = await _endpoint(engine, clock, "http://127.0.0.1:9/a", organization_id="org-a")
    alice, _ = await _endpoint(engine, clock, "http://127.0.0.1:9/al", consumer="alice")
    only_k2, _ = await _endpoint(engine, clock, "http://127.0.0.1:9/k2", filters={"key_id": "k2"})
    alerts, _ = await _endpoint(engine, clock, "http://127.0.0.1:9/al", event_types=["alert.*"])
    await _event(engine, clock, organization_id="org-b")
    await _event(engine, clock, organization_id="org-a", consumer="bob")
    async with engine.connect() as conn:
        pairs = (
            await conn.execute(
                select(WebhookMessageRow.event_id, WebhookMessageRow.endpoint_id).order_by(
                    WebhookMessageRow.event_id
                )
            )
        ).all()
    first, second = sorted({e for e, _ in pairs})
    assert {ep for e, ep in pairs if e == first} == {operator, alice}
    assert {ep for e, ep in pairs if e == second} == {operator, org_a}
    assert only_k2 not in {ep for _, ep in pairs}
    assert alerts not in {ep for _, ep in pairs}


async def test_an_ordered_endpoint_gets_one_message_at_a_time_in_event_order(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as receiver:
        await _endpoint(engine, clock, receiver.url, ordered=True)
        receiver.answer(Answer(500))
        for n in range(3):
            await _event(engine, clock, n=n)
        dispatcher = _dispatcher(engine, sender, clock)
        assert await _round(dispatcher) == 1  # the first fails; the others wait behind it
        assert await _round(dispatcher) == 0
        clock.advance(5)
        for _ in range(3):
            assert await _round(dispatcher) == 1
    assert [json.loads(d.body)["data"]["n"] for d in receiver.deliveries] == [0, 0, 1, 2]


async def test_a_dead_receiver_rests_while_others_are_delivered(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as dead, webhook_receiver() as healthy:
        dead.answer(*[Answer(500)] * BREAKER_FAILURES)
        await _endpoint(engine, clock, dead.url)
        await _endpoint(engine, clock, healthy.url)
        for _ in range(BREAKER_FAILURES + 2):
            await _event(engine, clock)
        dispatcher = _dispatcher(engine, sender, clock, capacity=1)
        while await _round(dispatcher):
            pass
        # The dead endpoint took BREAKER_FAILURES attempts, then rested; the healthy one
        # got everything.
        assert len(dead.deliveries) == BREAKER_FAILURES
        assert len(healthy.deliveries) == BREAKER_FAILURES + 2


async def test_a_rotated_secret_signs_beside_the_old_one_until_the_grace_ends(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as old_side, webhook_receiver() as new_side:
        endpoint, old = await _endpoint(engine, clock, old_side.url)
        old_side.secret = old
        async with write_transaction(engine) as conn:
            new = await rotate_secret(
                conn, SERVER, endpoint, datetime.fromtimestamp(clock(), UTC), timedelta(hours=1)
            )
        await _event(engine, clock)
        await _round(_dispatcher(engine, sender, clock))
        [during] = old_side.deliveries
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        assert during.verified is True
        assert WebhookReceiver(new).verifies(during)
        clock.advance(3601)
        await _event(engine, clock)
        await _round(_dispatcher(engine, sender, clock))
        after = old_side.deliveries[1]
        assert after.headers["webhook-signature"].count("v1,") == 1
        assert after.verified is False
        assert WebhookReceiver(new).verifies(after)
    assert new_side.deliveries == []


async def test_key_lifecycle_changes_reach_subscribed_endpoints_in_their_organization(
    engine: AsyncEngine, sender: Sender
) -> None:
    from portcullis.identity.key_admin import KeySpec
    from portcullis.identity.key_repository import KeyRepository
    from portcullis.store.admin_tables import OrganizationRow

    clock = ManualClock(T0)
    org = "id-acme"
    created_at = datetime.fromtimestamp(T0, UTC)
    async with write_transaction(engine) as conn:
        await conn.execute(
            insert(OrganizationRow).values(
                id=org, name="acme", created_at=created_at, updated_at=created_at
            )
        )
    keys = KeyRepository(engine, SERVER, clock=lambda: datetime.fromtimestamp(clock(), UTC))
    async with webhook_receiver() as mine, webhook_receiver() as other:
        _, mine.secret = await _endpoint(engine, clock, mine.url, organization_id=org)
        await _endpoint(engine, clock, other.url, organization_id="another-org")
        created = await keys.create(
            "alice", KeySpec(name="ci"), created_by="t", organization="acme"
        )
        rotation = await keys.rotate(created.info.id, grace_seconds=60, created_by="t")
        await keys.suspend(rotation.new.id, "investigating")
        await keys.resume(rotation.new.id)
        await keys.revoke(rotation.new.id, "leaked")
        dispatcher = _dispatcher(engine, sender, clock)
        while await _round(dispatcher):
            pass
    received = [json.loads(d.body) for d in mine.deliveries]
    assert [(b["type"], b["data"]["key_id"]) for b in received] == [
        ("key.created", created.info.id),
        ("key.rotated", created.info.id),
        ("key.suspended", rotation.new.id),
        ("key.resumed", rotation.new.id),
        ("key.revoked", rotation.new.id),
    ]
    assert received[1]["data"]["successor_key_id"] == rotation.new.id
    assert received[4]["data"]["reason"] == "leaked"
    assert all(d.verified for d in mine.deliveries)
    assert other.deliveries == []


async def test_metrics_count_attempts_and_read_the_queue_from_the_store(
    engine: AsyncEngine, sender: Sender
) -> None:
    from prometheus_client import CollectorRegistry

    from portcullis.webhooks.metrics import WebhookMetrics, queue_families

    registry = CollectorRegistry()
    clock = ManualClock(T0)
    async with webhook_receiver() as ok, webhook_receiver() as gone:
        gone.answer(Answer(410))
        await _endpoint(engine, clock, ok.url)
        await _endpoint(engine, clock, gone.url)
        async with webhook_receiver() as closed:
            await _endpoint(engine, clock, closed.url)
        await _event(engine, clock)
        dispatcher = _dispatcher(engine, sender, clock, metrics=WebhookMetrics(registry))
        await _round(dispatcher)
    clock.advance(30)
    families = {
        f.name: f for f in await queue_families(engine, datetime.fromtimestamp(clock(), UTC))
    }

    def sample_value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample_value("portcullis_webhook_attempts_total", outcome="delivered") == 1
    assert sample_value("portcullis_webhook_attempts_total", outcome="gone") == 1
    assert sample_value("portcullis_webhook_attempts_total", outcome="retry") == 1
    assert sample_value("portcullis_webhook_attempt_seconds_count") == 3
    assert families["portcullis_webhook_queue_depth"].samples[0].value == 1
    assert families["portcullis_webhook_oldest_pending_seconds"].samples[0].value == 30
    # The message the 410 answered is dead-lettered (replayable once the endpoint is back).
    assert families["portcullis_webhook_dead_letters"].samples[0].value == 1
    states = {s.labels["state"]: s.value for s in families["portcullis_webhook_endpoints"].samples}
    assert states == {"enabled": 2, "disabled": 1}


async def test_dead_letters_are_replayed_one_by_one_or_by_time_range(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as receiver:
        endpoint, receiver.secret = await _endpoint(engine, clock, receiver.url)
        receiver.answer(*[Answer(500)] * 24)
        for n in range(3):
            await _event(engine, clock, n=n)
            clock.advance(60)
        dispatcher = _dispatcher(engine, sender, clock)
        for _ in range(8):
            await _round(dispatcher)
            clock.advance(36000)
            dispatcher = _dispatcher(engine, sender, clock)  # no breaker carried over
        assert [m.status for m in await _messages(engine)] == ["failed"] * 3
        first, second, third = await _messages(engine)
        now = datetime.fromtimestamp(clock(), UTC)
        async with write_transaction(engine) as conn:
            assert await queue.replay(conn, first.id, now) is True
            replayed = await queue.replay_failed(
                conn, endpoint, now, since=second.created_at, until=third.created_at
            )
        assert replayed == 1
        assert await _round(dispatcher) == 2
    assert [m.status for m in await _messages(engine)] == ["delivered", "delivered", "failed"]
    replays = receiver.deliveries[-2:]
    assert {d.headers["webhook-id"] for d in replays} == {first.id, second.id}
    assert all(d.verified for d in replays)
    async with write_transaction(engine) as conn:
        # A pending or unknown message is not replayed.
        assert await queue.replay(conn, "msg_unknown", now) is False


async def test_a_test_event_goes_only_to_the_endpoint_it_was_sent_to(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as target, webhook_receiver() as everything:
        endpoint, target.secret = await _endpoint(engine, clock, target.url)
        await _endpoint(engine, clock, everything.url, event_types=["*"])
        async with write_transaction(engine) as conn:
            sent = await queue.enqueue_test(conn, endpoint, datetime.fromtimestamp(clock(), UTC))
        await _round(_dispatcher(engine, sender, clock))
    [delivery] = target.deliveries
    assert delivery.verified is True
    assert delivery.headers["webhook-id"] == sent
    assert json.loads(delivery.body)["type"] == "webhook.test"
    assert everything.deliveries == []


async def test_a_rate_limited_endpoint_is_paced_and_its_waiting_messages_are_untouched(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as receiver:
        _, receiver.secret = await _endpoint(engine, clock, receiver.url, rate_limit=2)
        for _ in range(6):
            await _event(engine, clock)
        dispatcher = _dispatcher(engine, sender, clock)
        # A second's worth (2) goes now; the other 4 go back to the queue as they were.
        assert await _round(dispatcher) == 2
        waiting = [m for m in await _messages(engine) if m.status == "pending"]
        assert [(m.attempts, m.lease_owner) for m in waiting] == [(0, None)] * 4
        assert await _count(engine, WebhookAttemptRow) == 2
        assert await _round(dispatcher) == 0
        assert dispatcher.next_token_in() == pytest.approx(0.5)
        clock.advance(0.5)
        assert await _round(dispatcher) == 1
        clock.advance(0.4)
        assert await _round(dispatcher) == 0
        clock.advance(0.6)
        assert await _round(dispatcher) == 2
        clock.advance(0.5)
        assert await _round(dispatcher) == 1
    assert len(receiver.deliveries) == 6
    assert all(d.verified for d in receiver.deliveries)
    # In event order, each attempted once: waiting cost no attempt and failed nothing.
    assert [json.loads(d.body)["event_id"] for d in receiver.deliveries] == sorted(
        json.loads(d.body)["event_id"] for d in receiver.deliveries
    )
    assert [(m.status, m.attempts) for m in await _messages(engine)] == [("delivered", 1)] * 6
    assert (dispatcher.stats.attempts, dispatcher.stats.failed) == (6, 0)


async def test_a_rate_limited_backlog_does_not_delay_other_endpoints(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as limited, webhook_receiver() as other:
        await _endpoint(engine, clock, limited.url, rate_limit=1)
        for _ in range(10):
            await _event(engine, clock)  # the limited endpoint's backlog comes first
        await _endpoint(engine, clock, other.url)
        for _ in range(3):
            await _event(engine, clock)  # these reach both endpoints
        dispatcher = _dispatcher(engine, sender, clock, capacity=4)
        # Without moving the clock: the limited endpoint gets its one token's worth, and
        # the other endpoint everything, though its messages are younger.
        while await _round(dispatcher):
            pass
    assert (len(limited.deliveries), len(other.deliveries)) == (1, 3)


async def test_an_endpoint_never_has_more_attempts_in_flight_than_its_concurrency(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as receiver:
        await _endpoint(engine, clock, receiver.url, max_concurrency=2)
        for _ in range(5):
            await _event(engine, clock)
        dispatcher = _dispatcher(engine, sender, clock)
        # One claim returns all five; only two may be in flight, three go back.
        assert await dispatcher.claim_and_start() == 2
        assert dispatcher.stats.deferred == 3
        await dispatcher.drain()
        assert await _round(dispatcher) == 2
        assert await _round(dispatcher) == 1
    assert len(receiver.deliveries) == 5


async def test_a_non_positive_rate_limit_in_the_store_does_not_stop_delivery(
    engine: AsyncEngine, sender: Sender
) -> None:
    clock = ManualClock(T0)
    async with webhook_receiver() as receiver:
        await _endpoint(engine, clock, receiver.url, rate_limit=0)
        await _event(engine, clock)
        assert await _round(_dispatcher(engine, sender, clock)) == 1
    assert len(receiver.deliveries) == 1


async def test_workers_recording_failures_for_the_same_endpoints_in_any_order_never_deadlock(
    engine: AsyncEngine,
) -> None:
    # Two workers each record a group of failed attempts touching endpoints a and b,
    # listed in opposite orders. Each group updates its endpoints' failure runs; on
    # PostgreSQL, updating them in the order given made the two transactions wait on
    # each other ("deadlock detected": one group went unrecorded until its leases expired).
    clock = ManualClock(T0)
    for url in ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b"):
        await _endpoint(engine, clock, url)
    for _ in range(2):
        await _event(engine, clock)
    now = datetime.fromtimestamp(clock(), UTC)
    claimed = await queue.claim(engine, "w", now, limit=10, lease=timedelta(seconds=60))
    by_endpoint: dict[str, list[queue.Claimed]] = {}
    for message in claimed:
        by_endpoint.setdefault(message.endpoint_id, []).append(message)
    (a1, a2), (b1, b2) = by_endpoint.values()

    def failed(message: queue.Claimed) -> queue.Outcome:
        return queue.Outcome(message, AttemptResult(500), Decision(Next.RETRY, 5), now)

    for _ in range(3):  # the interleaving that deadlocks is likely, not certain
        recorded = await asyncio.gather(
            queue.finish(engine, "w", [failed(a1), failed(b1)], disable_after=timedelta(days=5)),
            queue.finish(engine, "w", [failed(b2), failed(a2)], disable_after=timedelta(days=5)),
        )
        assert [len(group) for group in recorded] == [2, 2]
        async with write_transaction(engine) as conn:  # a fresh failure run each round
            await conn.execute(update(WebhookEndpointRow).values(failing_since=None))
    assert await _count(engine, WebhookAttemptRow) == 12
