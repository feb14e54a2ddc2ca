"""The dashboard's home: the live overview. Traffic comes per second over the
dashboard's WebSocket (static/js/dashboard-live.js); the other panels are htmx
partials (live.py)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from portcullis.services.config import ConfigService
from portcullis.services.rbac import Permission
from portcullis.web.dashboard.access import admin_state, operation_of, signed_in
from portcullis.web.dashboard.login import login_page
from portcullis.web.errors import PageForbidden
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)
# Seconds of traffic the overview shows (and asks the stream to replay on opening).
HISTORY_SECONDS = 60


@router.get("/")
async def home(request: Request) -> Response:
    """The overview; without a session, the sign-in form itself (200, not a redirect:
    `/dashboard/` is the address people and checks open first)."""
    caller = await signed_in(request)
    if caller is None:
        return await login_page(request, None)
    if not caller.can(Permission.CONFIG_READ):
        raise PageForbidden(f"this page needs the {Permission.CONFIG_READ.value!r} permission")
    op = await operation_of(request, caller)
    config = (await ConfigService(admin_state(request).editor).export(op)).config
    # Frames name routes; the page sums them per service with this map.
    route_services = {route.name: route.service for route in config.routes}
    context = {
        "title": "Overview",
        "route_services": route_services,
        "can": {p.name.lower(): caller.can(p) for p in Permission},
        # The live view asks for the last minute the control plane keeps (by the
        # server's clock: a browser's may be off).
        "history_from": int(op.now().timestamp()) - HISTORY_SECONDS,
    }
    return render(request, "dashboard/home.html", context)
