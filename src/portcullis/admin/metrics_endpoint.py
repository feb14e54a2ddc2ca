"""`GET /metrics` on the control plane: Prometheus exposition for the whole gateway.

One scrape merges the multiprocess metric files of every data-plane worker and
of this process (see `portcullis.analytics.metrics`) and adds series computed
from the store at scrape time: the config head version and the upstream health
the workers report in their heartbeats (per upstream and target, which worker
gauges cannot carry since targets come and go with the config).

Access: the series name every tenant's upstreams and routes, so `/metrics` needs a
bearer credential, as Prometheus sends with its `authorization` scrape option:
`metrics_token` (a scrape secret of its own), or an admin credential (an API token)
of a deployment-wide caller with `analytics:read`. `metrics_public` opens it to
anyone who can reach the admin port.
"""

from __future__ import annotations

import asyncio
import hmac
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from portcullis.admin.dependencies import deployment_wide_reader
from portcullis.admin.problems import FORBIDDEN, UNAUTHORIZED, ApiProblem, problem_responses
from portcullis.analytics.health import BREAKER_STATES, DEFAULT_FRESH_FOR, merge_upstream_health
from portcullis.analytics.metrics import StaticCollector, multiprocess_dir, scrape_registry
from portcullis.model.certificates import Certificate
from portcullis.services.rbac import Permission
from portcullis.settings import Settings
from portcullis.webhooks.metrics import queue_families

log = structlog.get_logger(__name__)


def upstream_families(summary: dict[str, Any]) -> list[GaugeMetricFamily]:
    """Gauges from a merged upstream health summary (`merge_upstream_health`)."""
    reporting = GaugeMetricFamily(
        "portcullis_upstream_health_reporting_workers",
        "Live data-plane workers whose heartbeat reported upstream health",
        value=summary["workers"],
    )
    upstream_available = GaugeMetricFamily(
        "portcullis_upstream_available",
        "1 while some worker can send traffic to some target of the upstream, 0 when it is down",
        labels=["upstream"],
    )
    target_available = GaugeMetricFamily(
        "portcullis_upstream_target_available",
        "1 while some worker can send traffic to the target (healthy, breaker not open)",
        labels=["upstream", "target"],
    )
    healthy = GaugeMetricFamily(
        "portcullis_upstream_target_healthy_workers",
        "Workers whose health checks consider the target healthy",
        labels=["upstream", "target"],
    )
    breakers = GaugeMetricFamily(
        "portcullis_upstream_target_breaker_workers",
        "Workers whose circuit breaker for the target is in each state",
        labels=["upstream", "target", "state"],
    )
    for upstream in summary["upstreams"]:
        name = upstream["name"]
        upstream_available.add_metric([name], 0.0 if upstream["status"] == "down" else 1.0)
        for target in upstream["targets"]:
            labels = [name, target["target"]]
            target_available.add_metric(labels, 0.0 if target["status"] == "down" else 1.0)
            healthy.add_metric(labels, target["workers"] - target["unhealthy_workers"])
            for state in BREAKER_STATES:
                breakers.add_metric([*labels, state], target["breakers"][state])
    return [reporting, upstream_available, target_available, healthy, breakers]


async def store_families(request: Request, settings: Settings) -> list[GaugeMetricFamily]:
    """Series read from the store; none (logged) when it cannot be read."""
    from portcullis.runtime.heartbeat import list_nodes

    admin = getattr(request.app.state, "admin", None)
    if admin is None:
        return []
    try:
        head = await admin.editor.repository.head()
        nodes = await list_nodes(admin.engine)
        webhooks = await queue_families(admin.engine, datetime.now(UTC))
        certificates = (await admin.editor.state()).config.certificates
    except Exception as exc:
        log.warning("metrics.store_unavailable", error=str(exc), kind=type(exc).__name__)
        return []
    version = GaugeMetricFamily(
        "portcullis_config_version", "Current config version in the store", value=head.version
    )
    fresh_for = max(DEFAULT_FRESH_FOR, 3 * settings.heartbeat_interval)
    return [
        version,
        *upstream_families(merge_upstream_health(nodes, fresh_for=fresh_for)),
        *webhooks,
        *certificate_families(certificates),
    ]


def certificate_families(certificates: list[Certificate]) -> list[GaugeMetricFamily]:
    """`portcullis_certificate_expiry_seconds` (none without certificates; one that will
    not parse is left out rather than failing the scrape)."""
    if not certificates:
        return []
    from portcullis.analytics.certificate_expiry import expiry_family

    try:
        return [expiry_family(certificates, datetime.now(UTC))]
    except ValueError as exc:
        log.warning("metrics.certificate_unreadable", error=str(exc))
        return []


def live_families(request: Request) -> list[GaugeMetricFamily | CounterMetricFamily]:
    """This process's live streams (leak checks count them): hub streams (all, and those
    on the live feed), WebSocket connections and rooms, presence entries, slow consumers,
    and the process's asyncio tasks. Per process: a control plane run with several
    workers reports the worker that served the scrape. Read from memory, so they are
    there when the store is not."""
    from portcullis.services.streams.rooms import COUNTERS

    admin = getattr(request.app.state, "admin", None)
    hub = None if admin is None else admin.streams
    presence = None if admin is None else admin.presence
    values = {
        "portcullis_stream_open": ("Open event streams of this process", hub and hub.streams),
        "portcullis_stream_live": (
            "Open event streams fed by the hub's live feed (the others catch up from the log)",
            hub and hub.live_streams,
        ),
        "portcullis_ws_connections": ("Open WebSocket connections", COUNTERS.open),
        "portcullis_ws_rooms": ("Rooms subscribed on open WebSockets", COUNTERS.rooms),
        "portcullis_ws_slow_closed": ("WebSockets closed as slow consumers", COUNTERS.slow_closed),
        "portcullis_ws_lagged": ("Rooms told they lagged", COUNTERS.lagged),
        "portcullis_presence_entries": (
            "Presence entries of this process's sessions",
            presence and presence.entries,
        ),
        "portcullis_control_plane_asyncio_tasks": (
            "Asyncio tasks of this control-plane process",
            len(asyncio.all_tasks()),
        ),
    }
    families: list[GaugeMetricFamily | CounterMetricFamily] = [
        GaugeMetricFamily(n, d, value=float(v or 0)) for n, (d, v) in values.items()
    ]
    lagged = CounterMetricFamily(
        "portcullis_stream_lagged",
        "Times an event stream fell behind its queue and caught up from the log",
        value=float(hub.lagged if hub is not None else 0),
    )
    return [*families, lagged]


def _has_token(request: Request, token: str | None) -> bool:
    if not token:  # unset, or empty: no token opens the metrics
        return False
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credential.strip().encode(), token.encode()
    )


async def check_scrape_access(request: Request, settings: Settings) -> None:
    """401/403 problem unless the scraper may read the metrics (see the module doc)."""
    if settings.metrics_public or _has_token(request, settings.metrics_token):
        return
    allowed = await deployment_wide_reader(request, Permission.ANALYTICS_READ)
    if allowed:
        return
    if allowed is False:
        raise ApiProblem(
            FORBIDDEN,
            "the metrics of the whole gateway need a deployment-wide caller with 'analytics:read'",
        )
    raise ApiProblem(
        UNAUTHORIZED,
        "send 'Authorization: Bearer <metrics token or admin API token>'",
        headers={"www-authenticate": 'Bearer realm="portcullis-metrics"'},
    )


def install_metrics(app: FastAPI, settings: Settings) -> None:
    """Add `GET /metrics` to the control-plane app."""

    @app.get(
        "/metrics",
        tags=["Health"],
        summary="Prometheus metrics of the gateway (all data-plane workers and this process)",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition (OpenMetrics when the Accept header "
                "asks for it)",
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "application/openmetrics-text": {"schema": {"type": "string"}},
                },
            },
            **problem_responses(401, 403),
        },
        operation_id="get_metrics",
    )
    async def metrics(request: Request) -> Response:
        await check_scrape_access(request, settings)
        families = [*await store_families(request, settings), *live_families(request)]
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        path = multiprocess_dir()

        def render() -> bytes:
            return encoder(scrape_registry(path, [StaticCollector(families)]))

        # Reading every process's files is file I/O: keep it off the event loop.
        body = await asyncio.to_thread(render)
        return Response(content=body, media_type=content_type)
