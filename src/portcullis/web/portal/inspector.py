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
from portcullis.services.state import AdminState
from portcullis.web.dashboard.inspector import page_error
from portcullis.web.errors import LoginRequired
from portcullis.web.sessions import current_session, web_app_of
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False, prefix="/inspector")


def _state(request: Request) -> AdminState:
    state: AdminState = web_app_of(request).services("admin")
    return state


async def current_developer(request: Request) -> Developer:
    """The developer of the request's portal session (sign-in first otherwise)."""
    session = await current_session(request)
    portal = _state(request).portal
    developer = None
    if session is not None and portal is not None:
        developer = await portal.accounts.principal(session.subject_id)
    if developer is None:
        raise LoginRequired(request.url.path if request.method == "GET" else "")
    request.state.principal = developer
    return developer


def _inspector(request: Request) -> DeveloperInspector:
    state = _state(request)
    assert state.portal is not None  # current_developer found it
    return DeveloperInspector(state.engine, state.portal.apps)


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
