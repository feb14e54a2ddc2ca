"""The portal's API pages' services over one control plane (built once per web app):
the catalogue, the try-it console, usage and webhook self-service (decision 037)."""

from __future__ import annotations

from dataclasses import dataclass

from portcullis.services.analytics import AnalyticsService
from portcullis.services.portal_catalogue import PortalCatalogue
from portcullis.services.portal_tryit import TryItService, TryItTransport
from portcullis.services.portal_usage import PortalUsageService
from portcullis.services.portal_webhooks import PortalWebhooks
from portcullis.services.state import AdminState
from portcullis.services.usage import UsageService
from portcullis.services.webhooks import WebhookService
from portcullis.webhooks.runner import destination_policy


@dataclass(frozen=True, slots=True)
class PortalApiServices:
    catalogue: PortalCatalogue
    tryit: TryItService
    usage: PortalUsageService
    webhooks: PortalWebhooks


def build_portal_api(
    state: AdminState, *, transport: TryItTransport | None = None
) -> PortalApiServices:
    s = state
    analytics = AnalyticsService(s.engine, s.editor, s.secret, s.settings)
    usage = UsageService(s.engine, s.secret, s.editor, s.settings)
    hooks = WebhookService(s.engine, s.secret, s.editor, destination_policy(s.settings))
    return PortalApiServices(
        PortalCatalogue(s.editor, s.settings),
        TryItService(s.editor, s.settings, transport),
        PortalUsageService(s.engine, s.secret, analytics, usage),
        PortalWebhooks(hooks, s.editor),
    )
