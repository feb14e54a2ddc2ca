"""Organization scoping: the one tenancy rule of the control plane.

Every admin resource belongs to at most one organization, and an admin user
limited to an organization (`Caller.organization_id`) sees and changes only what
belongs to theirs; admins who are not limited (owners, typically) see everything.
Two kinds of resources, one rule (`OrgScope`):

- rows in the store (API keys, OAuth clients, admin users, their API tokens, audit
  events) hold the organization's stable id: `OrgScope.owns(organization_id)`;
- gateway entities in the declarative config hold the organization's name (the
  config is a document users edit; a rename relabels them in the same transaction,
  see routers/organizations.py): `OrgScope.sees(document)`.

What a limited admin can't see answers 404 (as if it did not exist), never 403, so
existence does not leak; resources that span every organization (alerting, signing
keys, whole-config operations) are 403 for them (`require_unlimited`).

Services, upstreams, routes, consumers and plugin instances carry an optional
`organization` (an organization's name). An admin user limited to an organization
works inside it:

- lists and gets show only entities of that organization; others answer 404, as if
  they did not exist;
- what they create or replace belongs to their organization (`organization` may be
  left out; naming another one is a 403);
- what they create may refer only to entities of their organization (a route to
  another tenant's service, or a plugin on another tenant's route, would let them
  read or change that tenant's traffic); a reference elsewhere is a 422 "unknown".
  For the same reason their plugin instances can't be global (403);
- traffic rules follow the same idea. A boost of theirs can't target everyone or a
  consumer tag (403: tags are shared by every organization's consumers, so a tag
  boost would raise other tenants' limits too); it may target their consumers and
  routes. An override may name their consumers and their organization's API keys
  (another organization's key is "unknown", 422). Their consumers may use a plan of
  their organization or a shared plan (one with no organization, which the operator
  offers to every tenant); another organization's plan is "unknown" (422);
- whole-config operations (import, diff, version history, rollback) are for
  unlimited admins (403); the export shows only their organization's entities.

Unlimited admins see everything and may filter lists with `?organization=`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.model.config import GatewayConfig
from portcullis.services.errors import FORBIDDEN, NOT_FOUND, ServiceError
from portcullis.store.admin_tables import OrganizationRow

# The config lists whose entries carry an `organization`.
SCOPED_COLLECTIONS = (
    "services",
    "upstreams",
    "routes",
    "consumers",
    "plugins",
    "plans",
    "boosts",
    "overrides",
    "apis",
    "certificates",
)


@dataclass(frozen=True, slots=True)
class OrgScope:
    """What a caller may see: `organization_id` None means everything.

    `organization` is the current name of the caller's organization (config entities
    carry names). `key_organizations`: the organization id of each API key the entity
    being written names (looked up before the config edit, whose checks can't wait
    on the store).
    """

    organization: str | None = None
    organization_id: str | None = None
    key_organizations: Mapping[str, str | None] = field(default_factory=dict, compare=False)

    @property
    def limited(self) -> bool:
        return self.organization_id is not None

    def owns(self, organization_id: str | None) -> bool:
        """True when a store row of organization `organization_id` is visible to the caller."""
        return self.organization_id is None or organization_id == self.organization_id

    def require_owned(self, organization_id: str | None, not_found: str) -> None:
        """404 (`not_found` as the detail) for a row outside the caller's organization."""
        if not self.owns(organization_id):
            raise ServiceError(NOT_FOUND, not_found)

    def sees(self, document: dict[str, Any]) -> bool:
        """True when the entity (a config document entry) is visible to the caller."""
        return self.sees_named(document.get("organization"))

    def sees_named(self, organization: str | None) -> bool:
        """True when a config entity of organization `organization` (a name) is visible."""
        return self.organization_id is None or organization == self.organization

    def filter_config(self, config: GatewayConfig) -> GatewayConfig:
        """The config with only the caller's entities (not re-validated: a visible route
        may name a service the caller can't see)."""
        org = self.organization
        if org is None:
            return config
        return config.model_copy(
            update={
                name: [e for e in getattr(config, name) if e.organization == org]
                for name in SCOPED_COLLECTIONS
            }
        )

    def require_unlimited(self, what: str) -> None:
        """403 for organization-limited callers (whole-config operations)."""
        if self.organization is not None:
            raise ServiceError(
                FORBIDDEN,
                f"{what} covers every organization; it needs an admin who is not limited to "
                f"an organization (you are limited to {self.organization!r})",
            )

    def visible_names(self, documents: Iterable[dict[str, Any]], field: str) -> set[str]:
        return {str(d[field]) for d in documents if self.sees(d)}


UNLIMITED = OrgScope()


async def resolve_scope(engine: AsyncEngine, organization_id: str | None) -> OrgScope:
    """The scope of a caller limited to `organization_id` (None: `UNLIMITED`), with the
    organization's current name; 403 when it no longer exists."""
    if organization_id is None:
        return UNLIMITED
    async with engine.connect() as conn:
        name = await conn.scalar(
            select(OrganizationRow.name).where(OrganizationRow.id == organization_id)
        )
    if name is None:
        # Organizations with users can't be deleted, so this is a race with a delete.
        raise ServiceError(FORBIDDEN, "your organization no longer exists")
    return OrgScope(str(name), organization_id)


async def organization_names(engine: AsyncEngine) -> set[str]:
    """Names of every organization (to reject entities owned by one that doesn't exist)."""
    async with engine.connect() as conn:
        return set((await conn.execute(select(OrganizationRow.name))).scalars())
