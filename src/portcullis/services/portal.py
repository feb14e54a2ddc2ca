"""The developer portal's service layer: who a developer is, the context of their calls,
and the services every face builds on (docs/decisions/034-developer-portal.md).

- `portal_accounts.PortalAccounts`: sign-up, email verification, login (store-backed
  lockout), teams and their members;
- `portal_apps.PortalApps`: applications, access requests, API keys and OAuth client
  credentials, and `consumers_of(developer)`;
- `portal_admin.PortalAdmin`: what operators do (developers, applications, approvals);
- `portal_mail`: the pluggable mail sender (embedded outbox, SMTP).

Every developer-facing method takes a `DeveloperContext` and scopes its store query to
the developer's teams (`team_id IN (their memberships)`), so another team's row is
never read, listed or changed: it answers "not found", exactly as a row that does not
exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from sqlalchemy import Select, select

from portcullis.identity.keys import Environment
from portcullis.problems import ProblemKind
from portcullis.services.context import Clock, RequestFacts, utc_now
from portcullis.store.portal_tables import TeamMemberRow

if TYPE_CHECKING:
    from portcullis.identity.oauth_server import OAuthServer
    from portcullis.services.portal_accounts import PortalAccounts
    from portcullis.services.portal_admin import PortalAdmin
    from portcullis.services.portal_apps import PortalApps
    from portcullis.services.portal_mail import MailSender
    from portcullis.services.state import AdminState

EMAIL_NOT_VERIFIED = ProblemKind(
    "email-not-verified", "The developer's email address is not verified yet", 403
)
ACCESS_STATE_CONFLICT = ProblemKind(
    "access-request-state", "The access request's current state does not allow this", 409
)
INVALID_TOKEN = ProblemKind(
    "invalid-verification-token", "The verification link is unknown, used or expired", 400
)


class ClientType(StrEnum):
    """What kind of client an application is (as registered OAuth clients declare)."""

    web = "web"
    mobile = "mobile"
    server = "server"
    partner = "partner"


class TeamRole(StrEnum):
    owner = "owner"
    member = "member"


class KeyEnvironment(StrEnum):
    """The portal's two key environments; sandbox keys are the gateway's `development`
    keys (`pc_dev_…`), which an API version with a sandbox serves from it."""

    sandbox = "sandbox"
    production = "production"

    @property
    def gateway(self) -> Environment:
        return Environment.development if self is KeyEnvironment.sandbox else Environment.production

    @classmethod
    def of(cls, environment: Environment) -> KeyEnvironment:
        return cls.production if environment is Environment.production else cls.sandbox


@dataclass(frozen=True, slots=True)
class Developer:
    """A signed-in developer: the principal of every portal call."""

    id: str
    email: str
    name: str
    email_verified: bool
    created_at: datetime

    @property
    def actor(self) -> str:
        """How the audit log names them."""
        return f"developer:{self.email}"


@dataclass(frozen=True, slots=True)
class DeveloperContext:
    """One call of a developer: who, the request facts the audit log records, the clock."""

    developer: Developer
    facts: RequestFacts
    clock: Clock = field(default=utc_now)

    def now(self) -> datetime:
        return self.clock()


def teams_of(developer_id: str) -> Select[Any]:
    """The ids of the teams `developer_id` belongs to: the scope of every portal query."""
    return select(TeamMemberRow.team_id).where(TeamMemberRow.developer_id == developer_id)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class PortalServices:
    """The portal's services over one control plane's state (made once per app)."""

    accounts: PortalAccounts
    apps: PortalApps
    admin: PortalAdmin
    mail: MailSender


def build_portal(
    state: AdminState,
    hasher: PasswordHasher,
    oauth_server: Callable[[], OAuthServer],
    *,
    mail: MailSender | None = None,
) -> PortalServices:
    """The portal's services on `state` (the admin users' `hasher`; the app's OAuth server)."""
    from portcullis.services.keys import KeyService
    from portcullis.services.portal_accounts import PortalAccounts
    from portcullis.services.portal_admin import PortalAdmin
    from portcullis.services.portal_apps import PortalApps
    from portcullis.services.portal_mail import mail_sender

    settings = state.settings
    sender = mail if mail is not None else mail_sender(settings, state.engine)
    base_url = (settings.portal_url or settings.admin_url).rstrip("/")
    accounts = PortalAccounts(
        state.engine,
        state.audit,
        sender,
        hasher,
        base_url=base_url,
        verification_ttl=settings.portal_verification_ttl,
    )
    keys = KeyService(state.engine, state.secret, state.editor)
    apps = PortalApps(state.engine, state.editor, state.audit, sender, keys, oauth_server)
    return PortalServices(accounts, apps, PortalAdmin(state.engine, state.audit, apps), sender)
