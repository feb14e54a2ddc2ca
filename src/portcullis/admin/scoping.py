"""The caller's organization scope for an admin request (cached on the request).

The tenancy rule itself is `services.scoping.OrgScope`.
"""

from __future__ import annotations

from fastapi import Request

from portcullis.services import scoping
from portcullis.services.rbac import Caller
from portcullis.services.scoping import UNLIMITED, OrgScope, resolve_scope


async def scope_of(request: Request, caller: Caller) -> OrgScope:
    """The caller's scope; the organization id is resolved to its name (cached per request)."""
    if caller.organization_id is None:
        return UNLIMITED
    cached = getattr(request.state, "org_scope", None)
    if isinstance(cached, OrgScope):
        return cached
    scope = await resolve_scope(request.app.state.admin.engine, caller.organization_id)
    request.state.org_scope = scope
    return scope


async def organization_names(request: Request) -> set[str]:
    """Names of every organization (to reject entities owned by one that doesn't exist)."""
    return await scoping.organization_names(request.app.state.admin.engine)
