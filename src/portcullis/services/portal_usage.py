"""A developer's usage in the portal: requests, errors, latency percentiles and quota
remaining per application (gateway consumer) and per API key, over a window.

Nothing is computed here that the admin API does not serve: the series and totals are
`AnalyticsService.consumer_report` (rollups) or, for the live window,
`AnalyticsService.realtime` (the raw request log of the last minutes, which the
rollups reach only after their lateness); quotas are `UsageService.of_consumer` and
`of_key`; per-key request counts are the `api_callers` day rows (traffic to API
products only: the rollups have no key dimension). The one rule added is the scope:
a developer reads the usage of their own applications (`PortalAccess.consumers`)
and of those applications' keys, and anything else is "not found", as if it did not
exist.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics import api_callers
from portcullis.identity.key_repository import KeyFilter, KeyNotFound, KeyRepository
from portcullis.identity.secrets import ServerSecret
from portcullis.services.analytics import AnalyticsService, RealtimeQuery, SeriesQuery
from portcullis.services.context import Operation
from portcullis.services.errors import ServiceError, invalid, not_found
from portcullis.services.portal_catalogue import PortalAccess
from portcullis.services.usage import UsageService

Window = Literal["live", "24h", "7d", "30d"]
WINDOWS: dict[str, tuple[timedelta, Literal["minute", "hour", "day"]]] = {
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "hour"),
    "30d": (timedelta(days=30), "day"),
}
LIVE_SECONDS = 300
# Keys whose quota is read per application (the newest); more are listed without it.
MAX_KEYS = 20


class PortalUsageService:
    """Usage of a developer's applications (see the module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        secret: ServerSecret,
        analytics: AnalyticsService,
        usage: UsageService,
    ) -> None:
        self._keys = KeyRepository(engine, secret)
        self._engine = engine
        self._analytics = analytics
        self._usage = usage

    async def overview(self, op: Operation, access: PortalAccess, window: str) -> dict[str, Any]:
        """Every application's usage over `window` (`live`: the last 5 minutes)."""
        return {
            "window": self._window(window),
            "apps": [
                {"name": a.name, **await self._app(op, a.consumer, window)} for a in access.apps
            ],
        }

    async def app(
        self, op: Operation, access: PortalAccess, consumer: str, window: str
    ) -> dict[str, Any]:
        """One application's usage; not found unless it is one of the developer's."""
        self._window(window)
        app = access.app(consumer)
        if app is None:
            raise not_found(f"application {consumer!r} does not exist", target="app")
        return {"name": app.name, **await self._app(op, consumer, window)}

    async def key(self, op: Operation, access: PortalAccess, key_id: str) -> dict[str, Any]:
        """One key's quota usage; not found unless it is a key of the developer's apps."""
        try:
            info = await self._keys.get(key_id) if len(key_id) <= 64 else None
        except KeyNotFound:
            info = None
        if info is None or info.consumer not in access.consumers:
            raise not_found(f"API key {key_id!r} does not exist", target="key_id")
        return (await self._usage.of_key(op, key_id)).model_dump(mode="json")

    @staticmethod
    def _window(window: str) -> str:
        if window != "live" and window not in WINDOWS:
            raise invalid([("#/window", f"one of live, {', '.join(WINDOWS)}")])
        return window

    async def _app(self, op: Operation, consumer: str, window: str) -> dict[str, Any]:
        now = op.now()
        if window == "live":
            live = await self._analytics.realtime(
                op, RealtimeQuery(window=LIVE_SECONDS, consumer=consumer)
            )
            traffic = {
                "start": live["start"].isoformat(),
                "end": live["end"].isoformat(),
                "granularity": "second",
                "totals": {
                    "requests": live["requests"],
                    "errors": live["errors"],
                    "rate_limited": live["rate_limited"],
                    "error_rate": live["error_rate"],
                    "latency_p50_ms": live["latency_p50_ms"],
                    "latency_p95_ms": live["latency_p95_ms"],
                    "latency_p99_ms": live["latency_p99_ms"],
                },
                "chart": {
                    "t": [int(s["at"].timestamp()) for s in live["series"]],
                    "requests": [s["requests"] for s in live["series"]],
                    "errors": [s["errors"] for s in live["series"]],
                    "latency_p95_ms": None,
                },
            }
            days = 1
        else:
            span, granularity = WINDOWS[window]
            report = await self._analytics.consumer_report(
                op,
                consumer,
                SeriesQuery(start=now - span, end=now, granularity=granularity),
            )
            totals = report["totals"]
            traffic = {
                "start": report["start"].isoformat(),
                "end": report["end"].isoformat(),
                "granularity": granularity,
                "complete_until": report["complete_until"].isoformat(),
                "totals": {
                    k: totals[k]
                    for k in (
                        "requests",
                        "errors",
                        "rate_limited",
                        "error_rate",
                        "latency_p50_ms",
                        "latency_p95_ms",
                        "latency_p99_ms",
                    )
                },
                "chart": {
                    "t": [int(b["bucket_start"].timestamp()) for b in report["series"]],
                    "requests": [b["requests"] for b in report["series"]],
                    "errors": [b["errors"] for b in report["series"]],
                    "latency_p95_ms": [b["latency_p95_ms"] for b in report["series"]],
                },
                "by_route": [
                    {"route": r["route"], "requests": r["requests"], "errors": r["errors"]}
                    for r in report["by_route"]
                ],
            }
            days = max(1, span.days)
        try:
            quota = (await self._usage.of_consumer(op, consumer)).model_dump(mode="json")
        except ServiceError as exc:
            quota = {"unavailable": exc.detail}
        return {
            "app": consumer,
            **traffic,
            "quota": quota,
            "api_keys": await self._key_rows(op, consumer, days),
        }

    async def _key_rows(self, op: Operation, consumer: str, days: int) -> list[dict[str, Any]]:
        page = await self._keys.list_keys(KeyFilter(consumer=consumer), limit=MAX_KEYS)
        start, end = api_callers.day_window(op.now().timestamp(), days)
        calls = (await api_callers.key_calls(self._engine, [consumer], start, end)).get(consumer)
        rows = []
        for info in page.items:
            counted = calls.keys.get(info.id) if calls is not None else None
            try:
                quotas = [
                    {
                        "name": q.name,
                        "period": q.period,
                        "limit": q.limit,
                        "used": q.used,
                        "remaining": q.remaining,
                        "resets_at": q.resets_at.isoformat(),
                    }
                    for q in (await self._usage.of_key(op, info.id)).quotas
                ]
            except ServiceError:
                quotas = []
            rows.append(
                {
                    "key_id": info.id,
                    "name": info.name,
                    "environment": str(info.environment),
                    "status": str(info.status),
                    "requests": counted.requests if counted is not None else 0,
                    "days": days,
                    "last_used_at": None
                    if info.last_used_at is None
                    else info.last_used_at.isoformat(),
                    "quotas": quotas,
                }
            )
        return rows
