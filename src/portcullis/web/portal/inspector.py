"""The request inspector in the portal: a developer sees the captured exchanges made with
their own applications' keys, and nothing else (`services.inspector.DeveloperInspector`
filters by `PortalApps.consumers_of(developer)`). Operators start captures in the
dashboard; the list here is polled every 2 s.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from starlette.requests import Request
from starlette.responses import Response

from portcullis.services.errors import ServiceError
from portcullis.services.inspector import DeveloperInspector
from portcullis.services.portal import Developer
from portcullis.web.errors import page_error
from portcullis.web.portal.access import admin_state, current_developer, portal_services
from portcullis.web.sessions import web_app_of
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False, prefix="/inspector")


def _inspector(request: Request) -> DeveloperInspector:
    return DeveloperInspector(admin_state(request).engine, portal_services(request).apps)


async def _rows(request: Request, developer: Developer) -> dict[str, object]:
    page = await _inspector(request).exchanges(developer, limit=100)
    root = web_app_of(request).root
    return {
        "title": "Captured requests",
        "exchanges": page.items,
        "rows_url": f"{root}/inspector/rows",
    }


@router.get("")
async def index(request: Request, developer: Developer = Depends(current_developer)) -> Response:
    return render(request, "inspector/portal_index.html", await _rows(request, developer))


@router.get("/rows")
async def rows(request: Request, developer: Developer = Depends(current_developer)) -> Response:
    return render(request, "inspector/_portal_rows.html", await _rows(request, developer))


@router.get("/exchanges/{exchange_id}")
async def exchange_page(
    request: Request,
    exchange_id: Annotated[int, Path(ge=1)],
    developer: Developer = Depends(current_developer),
) -> Response:
    try:
        exchange = await _inspector(request).exchange(developer, exchange_id)
    except ServiceError as exc:
        raise page_error(exc) from None
    back = f"{web_app_of(request).root}/inspector"
    context = {"title": f"Exchange {exchange_id}", "exchange": exchange, "back": back}
    return render(request, "inspector/portal_exchange.html", context)
