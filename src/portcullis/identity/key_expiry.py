"""`key.expiring`: announced once per expiry, `key_expiry_notice_days` before an active
key stops working.

A round claims the keys due for a notice with a conditional update (the expiry it
announces is stored on the key), so control planes running the round together, or a
restarted one, never announce an expiry twice; a changed expiry is announced again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.jobs import event_job
from portcullis.events.bus import Event, EventBus, record_event, rfc3339
from portcullis.events.catalogue import EventType
from portcullis.identity.key_records import KeyStatus
from portcullis.periodic import Periodic
from portcullis.settings import Settings
from portcullis.store.engine import write_transaction
from portcullis.store.identity_tables import ApiKeyRow as K

BATCH = 500
INTERVAL = 300.0


class ExpiryNotices:
    def __init__(
        self,
        engine: AsyncEngine,
        notice: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.notice = notice
        self.clock = clock

    async def round(self) -> list[Event]:
        now = self.clock()
        not_announced = or_(K.expiry_announced.is_(None), K.expiry_announced != K.expires_at)
        due = (
            select(K.id, K.consumer, K.name, K.environment, K.expires_at, K.organization_id)
            .where(
                K.status == KeyStatus.active.value,
                K.expires_at.is_not(None),
                K.expires_at > now,
                K.expires_at <= now + self.notice,
                not_announced,
            )
            .limit(BATCH)
        )
        events: list[Event] = []
        async with write_transaction(self.engine) as conn:
            for row in (await conn.execute(due)).all():
                claimed = await conn.execute(
                    update(K)
                    .where(K.id == row.id, K.expires_at == row.expires_at, not_announced)
                    .values(expiry_announced=row.expires_at)
                )
                if claimed.rowcount != 1:
                    continue
                data = {
                    "key_id": row.id,
                    "consumer": row.consumer,
                    "name": row.name,
                    "environment": str(row.environment),
                    "status": KeyStatus.active.value,
                    "expires_at": rfc3339(row.expires_at),
                    "days_left": round((row.expires_at - now).total_seconds() / 86400, 2),
                }
                events.append(
                    await record_event(
                        conn,
                        EventType.KEY_EXPIRING,
                        f"key:{row.id}",
                        data,
                        now=now,
                        organization_id=row.organization_id,
                    )
                )
        return events


def key_expiry_job(engine: AsyncEngine, settings: Settings, bus: EventBus) -> Periodic | None:
    """The notice round every few minutes (None when notices are off)."""
    if settings.key_expiry_notice_days <= 0:
        return None
    notices = ExpiryNotices(engine, timedelta(days=settings.key_expiry_notice_days))

    return event_job("key_expiry", notices.round, bus, INTERVAL)
