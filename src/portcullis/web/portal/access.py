"""Who a portal request is: the developer of its session (`services.portal.Developer`),
the `DeveloperContext` pages pass to the portal's services, and how a page shows a
refusal of a service (its detail and the field each error names)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from portcullis.services.context import RequestFacts
from portcullis.services.errors import ServiceError
from portcullis.services.portal import Developer, DeveloperContext, PortalServices
from portcullis.services.state import AdminState
from portcullis.web.errors import LoginRequired
from portcullis.web.sessions import current_session, web_app_of


def admin_state(request: Request) -> AdminState:
    state: AdminState = web_app_of(request).services("admin")
    return state


def portal_services(request: Request) -> PortalServices:
    portal = admin_state(request).portal
    assert portal is not None, "the portal's services are made when the control plane starts"
    return portal


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def facts_of(request: Request) -> RequestFacts:
    return RequestFacts.of(request.headers.get("x-request-id", ""), client_ip(request))


async def signed_in_developer(request: Request) -> Developer | None:
    """The developer of the request's portal session (None: nobody, or a suspended one)."""
    if hasattr(request.state, "developer"):
        cached: Developer | None = request.state.developer
        return cached
    session = await current_session(request)
    developer = None
    if session is not None:
        developer = await portal_services(request).accounts.principal(session.subject_id)
    request.state.developer = developer
    if developer is not None:
        request.state.principal = developer
    return developer


async def current_developer(request: Request) -> Developer:
    """Dependency: the signed-in developer; the sign-in page otherwise (back here after
    it, for a GET)."""
    developer = await signed_in_developer(request)
    if developer is None:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(here if request.method == "GET" else "")
    return developer


async def developer_context(request: Request) -> DeveloperContext:
    """Dependency: the signed-in developer's context; the sign-in page otherwise."""
    return DeveloperContext(await current_developer(request), facts_of(request))


def refusal(exc: ServiceError) -> dict[str, Any]:
    """What a form shows for a refused call: the detail, and a message per field."""
    fields = {e.field: e.detail for e in exc.errors if e.field is not None}
    return {"error": exc.detail or exc.kind.title, "field_errors": fields}
