"""What the portal's API pages (catalogue, try-it, usage, webhooks) share: their
services (built once per web app), the signed-in developer, what they may see
(`PortalAccess`, from the portal service's `consumers_of`) and the `Operation` their
service calls carry (the developer as the actor, for the audit log)."""

from __future__ import annotations

from starlette.requests import Request

from portcullis.services.context import Operation, RequestFacts
from portcullis.services.portal import Developer, PortalServices
from portcullis.services.portal_api import PortalApiServices, build_portal_api
from portcullis.services.portal_catalogue import ANONYMOUS, PortalAccess, developer_access
from portcullis.services.state import AdminState
from portcullis.web.errors import LoginRequired
from portcullis.web.sessions import current_session, web_app_of


def portal_services(request: Request) -> PortalServices | None:
    """The portal's services (`AdminState.portal`; None before the app has started)."""
    return admin_state(request).portal


def admin_state(request: Request) -> AdminState:
    state: AdminState = web_app_of(request).services("admin")
    return state


def portal_api(request: Request) -> PortalApiServices:
    """The API pages' services of this web app (built on first use)."""
    found: PortalApiServices | None = getattr(request.app.state, "portal_api", None)
    if found is None:
        found = request.app.state.portal_api = build_portal_api(admin_state(request))
    return found


async def signed_in_developer(request: Request) -> Developer | None:
    """The developer of the request's portal session (None: nobody signed in)."""
    if hasattr(request.state, "developer"):
        cached: Developer | None = request.state.developer
        return cached
    session = await current_session(request)
    developer = None
    services = portal_services(request)
    if session is not None and services is not None:
        developer = await services.accounts.principal(session.subject_id)
    request.state.developer = developer
    if developer is not None:
        request.state.principal = developer
    return developer


async def developer(request: Request) -> Developer:
    """Dependency: the signed-in developer; the sign-in page otherwise."""
    found = await signed_in_developer(request)
    if found is None:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(here if request.method == "GET" else "")
    return found


async def access_of_request(request: Request) -> PortalAccess:
    """What the request's developer may see (anonymous: public APIs only)."""
    found = await signed_in_developer(request)
    services = portal_services(request)
    if found is None or services is None:
        return ANONYMOUS
    return await developer_access(services.apps, found, admin_state(request).editor)


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def developer_operation(request: Request, who: Developer) -> Operation:
    """The operation of a developer's page: their actor name, the request's facts."""
    state = admin_state(request)
    facts = RequestFacts.of(request.headers.get("x-request-id", ""), client_ip(request))
    return Operation(None, who.actor, facts, state.audit)
