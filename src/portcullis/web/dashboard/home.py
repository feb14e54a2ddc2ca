"""The dashboard's home: the live overview (traffic, upstreams, alerts, events)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from portcullis.services.rbac import Caller
from portcullis.web.dashboard.access import current_caller
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/")
async def home(request: Request, caller: Caller = Depends(current_caller)) -> Response:
    return render(request, "dashboard/home.html", {"title": "Overview"})
