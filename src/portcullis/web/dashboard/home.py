"""The dashboard's home: the live overview. Traffic comes per second over the
dashboard's WebSocket (static/js/dashboard-live.js); the other panels are htmx
partials (live.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from portcullis.services.config import ConfigService
from portcullis.services.context import Operation
from portcullis.services.rbac import Permission
from portcullis.web.dashboard.access import admin_state, operation
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)
# Seconds of traffic the overview shows (and asks the stream to replay on opening).
HISTORY_SECONDS = 60


@router.get("/")
async def home(
    request: Request, op: Operation = Depends(operation(Permission.CONFIG_READ))
) -> Response:
    config = (await ConfigService(admin_state(request).editor).export(op)).config
    # Frames name routes; the page sums them per service with this map.
    route_services = {route.name: route.service for route in config.routes}
    caller = op.caller
    assert caller is not None
    context = {
        "title": "Overview",
        "route_services": route_services,
        "can": {p.name.lower(): caller.can(p) for p in Permission},
        # The live view asks for the last minute the control plane keeps (by the
        # server's clock: a browser's may be off).
        "history_from": int(op.now().timestamp()) - HISTORY_SECONDS,
    }
    return render(request, "dashboard/home.html", context)
