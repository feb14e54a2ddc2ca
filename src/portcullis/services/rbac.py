"""Roles, permissions and the caller of an admin request.

Authorisation is a table: each role maps to a set of permissions, and each
endpoint requires one permission. An API token narrows its owner's permissions to
its scopes (never widens them). The table is the single source the endpoints and
the RBAC matrix test read.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


class Permission(StrEnum):
    CONFIG_READ = "config:read"
    CONFIG_WRITE = "config:write"
    AUDIT_READ = "audit:read"
    ADMINS_READ = "admins:read"
    ADMINS_WRITE = "admins:write"
    TOKENS_READ = "tokens:read"
    TOKENS_WRITE = "tokens:write"
    ORGS_READ = "orgs:read"
    ORGS_WRITE = "orgs:write"
    # Consumer credentials: API keys and OAuth clients (metadata only; secrets are never readable).
    CREDENTIALS_READ = "credentials:read"
    CREDENTIALS_WRITE = "credentials:write"
    # Traffic analytics (request log, rollups, usage reports, exports) and alerting.
    ANALYTICS_READ = "analytics:read"
    ALERTS_READ = "alerts:read"
    ALERTS_WRITE = "alerts:write"
    # Outgoing webhook endpoints, their deliveries, replays and test events.
    WEBHOOKS_READ = "webhooks:read"
    WEBHOOKS_WRITE = "webhooks:write"
    # The developer portal: developers, their applications and access requests (approvals).
    PORTAL_READ = "portal:read"
    PORTAL_WRITE = "portal:write"


ALL_PERMISSIONS = frozenset(Permission)
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: ALL_PERMISSIONS,
    # Admins manage everything, but only owners may create or change owners.
    Role.ADMIN: ALL_PERMISSIONS,
    # Operators change the gateway config and manage their own API tokens.
    Role.OPERATOR: frozenset(
        {
            Permission.CONFIG_READ,
            Permission.CONFIG_WRITE,
            Permission.AUDIT_READ,
            Permission.ORGS_READ,
            Permission.TOKENS_READ,
            Permission.TOKENS_WRITE,
            Permission.CREDENTIALS_READ,
            Permission.CREDENTIALS_WRITE,
            Permission.ANALYTICS_READ,
            Permission.ALERTS_READ,
            Permission.ALERTS_WRITE,
            Permission.WEBHOOKS_READ,
            Permission.WEBHOOKS_WRITE,
            Permission.PORTAL_READ,
            Permission.PORTAL_WRITE,
        }
    ),
    # Viewers read the gateway config, the audit log, organisations, analytics, alerts,
    # webhook endpoints and the portal's developers, applications and access requests.
    Role.VIEWER: frozenset(
        {
            Permission.CONFIG_READ,
            Permission.AUDIT_READ,
            Permission.ORGS_READ,
            Permission.CREDENTIALS_READ,
            Permission.ANALYTICS_READ,
            Permission.ALERTS_READ,
            Permission.WEBHOOKS_READ,
            Permission.PORTAL_READ,
        }
    ),
}
# The rank decides who may grant a role: nobody grants a role above their own.
ROLE_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2, Role.OWNER: 3}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is making an admin request, and what they may do.

    `actor` is the label written to the audit log (`user:alice@example.com`,
    `token:ci-deploy (alice@example.com)`, `bootstrap`).
    """

    actor: str
    role: Role
    permissions: frozenset[Permission]
    user_id: str | None = None
    token_id: str | None = None
    organization_id: str | None = None
    # The login session (refresh-token family) an access token belongs to.
    session_id: str | None = None
    # The bootstrap token (its row id) a bootstrap caller presented; spent by the
    # first user it creates.
    bootstrap_token: int | None = None

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions
