"""The developer portal's services on a store, as the tests build them: the catalogue
they offer (an API with automatic approval, one with manual approval), the portal's
services with the cheap test hasher, a developer signed up and verified."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.oauth_server import OAuthServer
from portcullis.identity.oauth_settings import OAuthServerSettings
from portcullis.identity.secrets import ServerSecret
from portcullis.services.audit import AuditLog
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import Clock, RequestFacts, utc_now
from portcullis.services.keys import KeyService
from portcullis.services.oauth_clients import ConsumerDirectory
from portcullis.services.portal import Developer, DeveloperContext
from portcullis.services.portal_accounts import PortalAccounts
from portcullis.services.portal_admin import PortalAdmin
from portcullis.services.portal_apps import PortalApps
from portcullis.services.portal_mail import OutboxMailSender
from portcullis.store.config_repository import ConfigRepository
from support.admin_session import TEST_PASSWORD_HASHER

SECRET = ServerSecret.from_secret(b"p" * 32)
PASSWORD = "a long enough password"
# `petstore` (org-a) approves at once with plan `free`; `billing` (the operator's)
# waits for an operator.
CATALOGUE: dict[str, Any] = {
    "plans": [{"name": "free"}, {"name": "gold"}],
    "apis": [
        {
            "name": "petstore",
            "organization": "org-a",
            "versions": [{"name": "v1"}],
            "access": {"approval": "automatic", "plans": ["free", "gold"]},
        },
        {"name": "billing", "versions": [{"name": "v1"}], "access": {"approval": "manual"}},
    ],
}


@dataclass(slots=True)
class Portal:
    accounts: PortalAccounts
    apps: PortalApps
    admin: PortalAdmin
    outbox: OutboxMailSender
    keys: KeyService
    editor: ConfigEditor


def build(engine: AsyncEngine, clock: Clock = utc_now) -> Portal:
    editor = ConfigEditor(ConfigRepository(engine))
    audit = AuditLog(engine)
    outbox = OutboxMailSender(engine, clock)
    accounts = PortalAccounts(
        engine, audit, outbox, TEST_PASSWORD_HASHER, base_url="http://portal.test"
    )
    keys = KeyService(engine, SECRET, editor)
    server = OAuthServer(
        engine,
        SECRET,
        issuer="http://portal.test",
        settings=OAuthServerSettings(),
        consumer_lookup=ConsumerDirectory(editor).get,
    )
    apps = PortalApps(engine, editor, audit, outbox, keys, lambda: server)
    return Portal(accounts, apps, PortalAdmin(engine, audit, apps), outbox, keys, editor)


def facts(client_ip: str | None = "192.0.2.1") -> RequestFacts:
    return RequestFacts("req-portal", client_ip)


async def developer(
    portal: Portal, email: str, *, clock: Clock = utc_now, verified: bool = True
) -> DeveloperContext:
    """A signed-up developer's context (verified unless asked otherwise)."""
    dev: Developer = await portal.accounts.sign_up(
        facts(), email, PASSWORD, email.split("@")[0], clock=clock, verified=verified
    )
    return DeveloperContext(dev, facts(), clock)
