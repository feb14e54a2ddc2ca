"""The portal's front page (a stub until the portal's pages are in: helper "portal")."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/")
async def home(request: Request) -> Response:
    return render(request, "portal/home.html", {"title": "Developer portal"})
