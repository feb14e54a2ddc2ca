"""How the control plane's analytics jobs run: each is a `Periodic` with one policy.

A job runs its first round at once, then every `interval` seconds plus up to 10 %
jitter (several control planes started together do not query the store in
lockstep). A failed round is logged as `<name>.failed` and counted; while rounds keep
failing the wait doubles, up to four intervals, so a store outage is not hammered.
Several control planes may run the same job against one store, so a round must be
safe to run concurrently (cursor rows updated with an expected value, idempotent
upserts).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from portcullis.events.bus import Event, EventBus
from portcullis.periodic import Periodic, Round

JITTER = 0.1
BACKOFF_INTERVALS = 4.0


def control_job(name: str, round: Round, interval: float) -> Periodic:
    """The `Periodic` of one control-plane job (not started)."""
    return Periodic(
        name,
        round,
        interval=interval,
        jitter=interval * JITTER,
        max_backoff=interval * BACKOFF_INTERVALS,
        immediate=True,
    )


def event_job(
    name: str,
    produce: Callable[[], Awaitable[Sequence[Event]]],
    bus: EventBus,
    interval: float,
) -> Periodic:
    """A control-plane job whose round records events (committed by `produce`) and then
    hands them to the bus for delivery to streams and webhooks."""

    async def round() -> None:
        events = await produce()
        if events:
            await bus.deliver(events)

    return control_job(name, round, interval)
