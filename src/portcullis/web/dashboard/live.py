"""The dashboard's live panels, as htmx partials of the overview page (home.py):
upstream health and circuit states, alerts firing, anomalies, top consumers and the
recent events. Each renders what the same service answers the REST API
(`/admin/v1/data-plane/upstreams`, `/alerts`, `/anomalies`, `/analytics/top-consumers`,
`/events`) for the session's caller.

The page reloads a panel on a timer and, for alerts, anomalies and events, as soon as
the dashboard's WebSocket (`/dashboard/ws`, rooms `alerts` and `traffic`) brings one
(static/js/dashboard-live.js): no page reload. Per-second traffic is drawn in the
browser from the `traffic` room's frames.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from portcullis.analytics.alerts import AlertState
from portcullis.services.alerts import AlertService, AnomalyFilter, anomaly_json
from portcullis.services.analytics import AnalyticsService, TopConsumersQuery
from portcullis.services.context import Operation
from portcullis.services.data_plane import DataPlaneService
from portcullis.services.rbac import Permission
from portcullis.web.dashboard.access import admin_state, operation
from portcullis.web.templating import render

router = APIRouter(prefix="/live", include_in_schema=False)
# Rows each panel shows.
PANEL_ROWS = 10


@router.get("/upstreams")
async def upstreams(
    request: Request, op: Operation = Depends(operation(Permission.CONFIG_READ))
) -> Response:
    state = admin_state(request)
    service = DataPlaneService(
        state.engine,
        state.editor,
        heartbeat_interval=state.settings.heartbeat_interval,
        poll_interval=state.settings.config_poll_interval,
    )
    health = await service.upstream_health(op)
    return render(request, "dashboard/live/upstreams.html", {"health": health})


@router.get("/alerts")
async def alerts(
    request: Request, op: Operation = Depends(operation(Permission.ALERTS_READ))
) -> Response:
    context: dict[str, Any] = {"alerts": [], "counts": {}, "limited": op.scope.limited}
    if not op.scope.limited:  # alerting is gateway-wide (AlertService)
        shown = (AlertState.FIRING, AlertState.PENDING, AlertState.RESOLVING)
        context["alerts"], context["counts"] = await AlertService(
            admin_state(request).engine
        ).alerts(op, shown)
    return render(request, "dashboard/live/alerts.html", context)


@router.get("/anomalies")
async def anomalies(
    request: Request, op: Operation = Depends(operation(Permission.ALERTS_READ))
) -> Response:
    rows: list[dict[str, Any]] = []
    if not op.scope.limited:
        found = await AlertService(admin_state(request).engine).anomalies(
            op, AnomalyFilter(), limit=PANEL_ROWS, cursor=None
        )
        rows = [anomaly_json(r) for r in found[:PANEL_ROWS]]
    return render(
        request, "dashboard/live/anomalies.html", {"anomalies": rows, "limited": op.scope.limited}
    )


@router.get("/consumers")
async def consumers(
    request: Request, op: Operation = Depends(operation(Permission.ANALYTICS_READ))
) -> Response:
    state = admin_state(request)
    service = AnalyticsService(state.engine, state.editor, state.secret, state.settings)
    top = await service.top_consumers(op, TopConsumersQuery(limit=PANEL_ROWS))
    return render(request, "dashboard/live/consumers.html", {"top": top})


@router.get("/events")
async def events(
    request: Request, op: Operation = Depends(operation(Permission.ALERTS_READ))
) -> Response:
    recent = await AlertService(admin_state(request).engine).recent_events(op, limit=PANEL_ROWS)
    return render(request, "dashboard/live/events.html", {"events": [e.as_json() for e in recent]})
