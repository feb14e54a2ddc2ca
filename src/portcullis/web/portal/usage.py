"""The portal's usage page: requests, errors, latency and quota remaining per
application and key (services/portal_usage.py: the admin API's analytics, scoped to
the developer's applications). The chart is drawn by the static module
`js/portal-usage.js` with the vendored uPlot, from `usage.json` on this same origin.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from portcullis.services.errors import ServiceError
from portcullis.services.portal import Developer
from portcullis.web.portal.access import current_developer
from portcullis.web.portal.api_support import access_of_request, developer_operation, portal_api
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)
WINDOW_LABELS = {
    "live": "Last 5 minutes",
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
}


async def _overview(request: Request, who: Developer, window: str) -> dict[str, Any]:
    access = await access_of_request(request)
    op = developer_operation(request, who)
    return await portal_api(request).usage.overview(op, access, window)


@router.get("/usage")
async def usage_page(
    request: Request,
    window: str = Query("live", max_length=8),
    who: Developer = Depends(current_developer),
) -> Response:
    if window not in WINDOW_LABELS:
        window = "live"
    try:
        overview = await _overview(request, who, window)
    except ServiceError as exc:
        context = {"title": "Usage", "status": exc.kind.status, "detail": exc.detail or ""}
        return render(request, "error.html", context, status_code=exc.kind.status)
    return render(
        request,
        "portal/api/usage.html",
        {"title": "Usage", "overview": overview, "window": window, "windows": WINDOW_LABELS},
    )


@router.get("/usage.json")
async def usage_json(
    request: Request,
    window: str = Query("live", max_length=8),
    who: Developer = Depends(current_developer),
) -> Response:
    """The chart's data (same origin, the session's developer only)."""
    try:
        overview = await _overview(request, who, window)
    except ServiceError as exc:
        body = {"title": exc.kind.title, "status": exc.kind.status, "detail": exc.detail}
        return JSONResponse(
            body, status_code=exc.kind.status, media_type="application/problem+json"
        )
    return JSONResponse(overview, headers={"Cache-Control": "no-store"})
