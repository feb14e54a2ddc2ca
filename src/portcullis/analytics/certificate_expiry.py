"""`certificate.expiring` events and the `portcullis_certificate_expiry_seconds` gauge.

A round (every `certificate_expiry_interval` seconds on the control plane) reads the
current config; each certificate whose leaf expires within
`certificate_expiry_warning_days` (or has expired) is announced once per certificate
and expiry date: the claim (certificate, not_after) is inserted ON CONFLICT DO NOTHING
in the transaction that records the event, so control planes running the round
together, or a restarted one, announce it once, and a renewed certificate (a new
expiry) is announced again when its own time comes. Claims whose certificate left the
config or was renewed are deleted.

The gauge is computed at scrape time from the same config: seconds until each
certificate's leaf expires (negative once expired).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.jobs import event_job
from portcullis.events.bus import Event, EventBus, NewEvent, collecting, record_events, rfc3339
from portcullis.events.catalogue import EventType
from portcullis.model.certificates import Certificate
from portcullis.model.config import GatewayConfig
from portcullis.periodic import Periodic
from portcullis.settings import Settings
from portcullis.store.analytics_tables import CertificateExpiryNoticeRow
from portcullis.store.engine import claimed, write_transaction
from portcullis.store.organizations import organization_ids_of

ConfigSource = Callable[[], Awaitable[GatewayConfig | None]]


@lru_cache(maxsize=256)
def not_after(cert: str) -> datetime:
    """When the chain's leaf expires (parsed once per certificate text)."""
    from portcullis.model.certificate_pem import not_after as parse

    return parse(cert)


def expiry_family(certificates: Iterable[Certificate], now: datetime) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "portcullis_certificate_expiry_seconds",
        "Seconds until the certificate's leaf expires (negative: expired)",
        labels=["certificate"],
    )
    for cert in certificates:
        family.add_metric([cert.name], (not_after(cert.cert) - now).total_seconds())
    return family


class CertificateExpiry:
    """One round (`run_once`) announces the certificates expiring within `warning`."""

    def __init__(
        self,
        engine: AsyncEngine,
        config: ConfigSource,
        *,
        warning: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._config = config
        self._warning = warning
        self._clock = clock

    async def run_once(self) -> list[Event]:
        """Record the events due now (committed) and return them, for delivery."""
        config = await self._config()
        if config is None:
            return []
        now = self._clock()
        current = {c.name: (c, not_after(c.cert)) for c in config.certificates}
        due = [(c, end) for c, end in current.values() if end <= now + self._warning]
        claims = select(
            CertificateExpiryNoticeRow.certificate, CertificateExpiryNoticeRow.not_after
        )
        async with self._engine.connect() as conn:
            # Claims of certificates that left the config or were renewed are forgotten.
            stale = [
                (row.certificate, row.not_after)
                for row in (await conn.execute(claims)).all()
                if row.certificate not in current or current[row.certificate][1] != row.not_after
            ]
        if not due and not stale:
            return []  # the usual round: nothing to write
        async with write_transaction(self._engine) as conn:
            with collecting(conn) as events:
                for name, end in stale:
                    await conn.execute(
                        delete(CertificateExpiryNoticeRow).where(
                            CertificateExpiryNoticeRow.certificate == name,
                            CertificateExpiryNoticeRow.not_after == end,
                        )
                    )
                organizations = await organization_ids_of(
                    conn, [c.organization for c, _ in due if c.organization]
                )
                new: list[NewEvent] = []
                for cert, end in due:
                    if not await claimed(
                        conn,
                        CertificateExpiryNoticeRow,
                        certificate=cert.name,
                        not_after=end,
                        announced_at=now,
                    ):
                        continue  # announced already (by this or another control plane)
                    new.append(
                        NewEvent(
                            EventType.CERTIFICATE_EXPIRING,
                            f"certificate:{cert.name}",
                            {
                                "certificate": cert.name,
                                "not_after": rfc3339(end),
                                "days_left": max(0, (end - now).days),
                                "expired": end <= now,
                                "snis": list(cert.snis),
                            },
                            organization_id=organizations.get(cert.organization or ""),
                        )
                    )
                await record_events(conn, new, now=now)
        return list(events)


def certificate_expiry_job(
    engine: AsyncEngine, settings: Settings, bus: EventBus, config: ConfigSource
) -> Periodic:
    """The expiry round every `certificate_expiry_interval` seconds."""
    expiry = CertificateExpiry(
        engine, config, warning=timedelta(days=settings.certificate_expiry_warning_days)
    )

    return event_job(
        "certificate-expiry", expiry.run_once, bus, settings.certificate_expiry_interval
    )
