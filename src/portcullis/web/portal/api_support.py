"""What the portal's API pages (catalogue, try-it, usage, webhooks) share beyond
`access.py` (who the developer is): their services (built once per web app), what the
developer may see (`PortalAccess`, from the portal service's `consumers_of`) and the
`Operation` their service calls carry (the developer as the actor, for the audit log)."""

from __future__ import annotations

from starlette.requests import Request

from portcullis.services.context import Operation
from portcullis.services.portal import Developer
from portcullis.services.portal_api import PortalApiServices, build_portal_api
from portcullis.services.portal_catalogue import ANONYMOUS, PortalAccess, developer_access
from portcullis.web.portal.access import (
    admin_state,
    facts_of,
    portal_services,
    signed_in_developer,
)


def portal_api(request: Request) -> PortalApiServices:
    """The API pages' services of this web app (built on first use)."""
    found: PortalApiServices | None = getattr(request.app.state, "portal_api", None)
    if found is None:
        found = request.app.state.portal_api = build_portal_api(admin_state(request))
    return found


async def access_of_request(request: Request) -> PortalAccess:
    """What the request's developer may see (anonymous: public APIs only)."""
    found = await signed_in_developer(request)
    if found is None:
        return ANONYMOUS
    return await developer_access(portal_services(request).apps, found, admin_state(request).editor)


def developer_operation(request: Request, who: Developer) -> Operation:
    """The operation of a developer's page: their actor name, the request's facts."""
    return Operation(None, who.actor, facts_of(request), admin_state(request).audit)
