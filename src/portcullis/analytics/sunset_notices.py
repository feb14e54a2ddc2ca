"""`version.sunset_approaching`: each consumer still calling an API version hears of its
sunset once, `sunset_notice_days` before it.

"Still calling" means a request of the version in the last `sunset_caller_days` UTC days
(`api_callers`, written by the rollup round; sandbox requests count too: that consumer
is integrating against the version). A round looks at every version whose sunset is
within the notice period and has not passed, and claims each (api, version, consumer,
sunset) with an INSERT … ON CONFLICT DO NOTHING in the transaction that records the
event: control planes running the round together, or a restarted one, announce it once;
a moved sunset is a new key, so it is announced again. Consumers calling a version only
after the notice went out are announced in a later round. Claims of sunsets that have
passed are deleted (nothing is announced after a sunset).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.analytics.api_callers import Caller, callers_in, day_window
from portcullis.analytics.jobs import event_job
from portcullis.events.bus import Event, EventBus, NewEvent, collecting, record_events, rfc3339
from portcullis.events.catalogue import EventType
from portcullis.model.config import GatewayConfig
from portcullis.periodic import Periodic
from portcullis.settings import Settings
from portcullis.store.analytics_tables import SunsetNoticeRow
from portcullis.store.engine import claimed, write_transaction
from portcullis.store.organizations import organization_ids_of

ConfigSource = Callable[[], Awaitable[GatewayConfig | None]]


class SunsetNotices:
    """One round (`run_once`) announces the sunsets due to the consumers still calling."""

    def __init__(
        self,
        engine: AsyncEngine,
        config: ConfigSource,
        *,
        notice: timedelta,
        caller_days: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._config = config
        self._notice = notice
        self._caller_days = caller_days
        self._clock = clock

    async def run_once(self) -> list[Event]:
        """Record the events due now (committed) and return them, for delivery."""
        config = await self._config()
        if config is None:
            return []
        now = self._clock()
        start, end = day_window(now.timestamp(), self._caller_days)
        due = [
            (api, version, version.sunset_at)
            for api in config.apis
            for version in api.versions
            if version.sunset_at is not None and now < version.sunset_at <= now + self._notice
        ]
        if not due:
            await self._forget_passed(now)
            return []
        organization_of = {c.username: c.organization for c in config.consumers}
        async with write_transaction(self._engine) as conn:
            with collecting(conn) as events:
                organizations = await organization_ids_of(conn, organization_of.values())
                new: list[NewEvent] = []
                for api, version, sunset in due:
                    callers = await callers_in(conn, api.name, [version.name], start, end)
                    for caller in callers:
                        if not caller.consumer:
                            continue  # anonymous requests: nobody to tell
                        if not await _claim(conn, api.name, version.name, caller, sunset, now):
                            continue  # announced already (by this or another control plane)
                        org = organization_of.get(caller.consumer, api.organization)
                        new.append(
                            NewEvent(
                                EventType.VERSION_SUNSET_APPROACHING,
                                f"consumer:{caller.consumer}",
                                {
                                    "api": api.name,
                                    "version": version.name,
                                    "sunset_at": rfc3339(sunset),
                                    "successor": version.successor,
                                    "consumer": caller.consumer,
                                    "last_seen": rfc3339(
                                        datetime.fromtimestamp(caller.last_seen_ms / 1000, UTC)
                                    ),
                                    "requests": caller.requests,
                                    "window_days": self._caller_days,
                                },
                                organization_id=organizations.get(org or ""),
                            )
                        )
                await record_events(conn, new, now=now)
        await self._forget_passed(now)
        return list(events)

    async def _forget_passed(self, now: datetime) -> None:
        """Drop the notices of sunsets that have passed: nothing is announced after a
        sunset, so they can never be claimed again."""
        async with write_transaction(self._engine) as conn:
            await conn.execute(delete(SunsetNoticeRow).where(SunsetNoticeRow.sunset_at <= now))


async def _claim(
    conn: AsyncConnection,
    api: str,
    version: str,
    caller: Caller,
    sunset: datetime,
    now: datetime,
) -> bool:
    """Whether this round is the first to announce `sunset` of `version` to `caller`."""
    return await claimed(
        conn,
        SunsetNoticeRow,
        api=api,
        api_version=version,
        consumer=caller.consumer,
        sunset_at=sunset,
        announced_at=now,
    )


def sunset_notice_job(
    engine: AsyncEngine, settings: Settings, bus: EventBus, config: ConfigSource
) -> Periodic | None:
    """The notice round every `sunset_notice_interval` seconds (None when notices are off)."""
    if settings.sunset_notice_days <= 0:
        return None
    notices = SunsetNotices(
        engine,
        config,
        notice=timedelta(days=settings.sunset_notice_days),
        caller_days=settings.sunset_caller_days,
    )

    return event_job("sunset-notices", notices.run_once, bus, settings.sunset_notice_interval)
