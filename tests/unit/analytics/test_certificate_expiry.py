"""`certificate.expiring`: sent once per certificate and expiry date, again after a renewal
that is itself due; the expiry gauge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.certificate_expiry import CertificateExpiry, expiry_family
from portcullis.events.bus import read_events
from portcullis.model.config import GatewayConfig
from support.tls import CertificateAuthority

CA = CertificateAuthority()


def config(**days: float) -> GatewayConfig:
    entries = []
    for name, valid in days.items():
        issued = CA.issue(f"{name}.example.com", days=valid)
        entries.append(
            {"name": name, "cert": issued.cert, "key": issued.key, "snis": [f"{name}.example.com"]}
        )
    return GatewayConfig.model_validate({"certificates": entries})


async def test_a_certificate_due_is_announced_once_and_a_renewal_again(
    engine: AsyncEngine,
) -> None:
    current = config(soon=10, later=200, gone=-1)

    async def source() -> GatewayConfig:
        return current

    expiry = CertificateExpiry(engine, source, warning=timedelta(days=30))
    first = await expiry.run_once()
    assert sorted(e.data["certificate"] for e in first) == ["gone", "soon"]
    assert next(e for e in first if e.data["certificate"] == "gone").data["expired"] is True
    assert {e.kind for e in first} == {"certificate.expiring"}
    assert await expiry.run_once() == []  # claimed: not again
    current = config(soon=20)  # renewed, still due: a new expiry date
    again = await expiry.run_once()
    assert [e.data["certificate"] for e in again] == ["soon"]
    stored = await read_events(engine, kinds=["certificate.expiring"])
    assert len(stored) == 3


def test_the_gauge_counts_seconds_to_expiry() -> None:
    now = datetime.now(UTC)
    family = expiry_family(config(a=1).certificates, now)
    [sample] = family.samples
    assert sample.labels == {"certificate": "a"}
    assert 0 < sample.value <= 86400
