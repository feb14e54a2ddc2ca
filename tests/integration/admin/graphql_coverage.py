"""Every REST operation of the admin API and its GraphQL equivalent.

Each area adds its rows here when it gains GraphQL fields. A value is
`Query.<field>` or `Mutation.<field>` (several, comma-separated, where one REST
operation maps to more than one field), or `EXCEPTION: <why>` for a deliberate
exception that the issue's closing note lists.
"""

from __future__ import annotations

_ENTITY_KINDS = {
    # REST singular / plural -> GraphQL singular / plural
    ("service", "services"): ("service", "services"),
    ("upstream", "upstreams"): ("upstream", "upstreams"),
    ("target", "targets"): ("target", "targets"),
    ("route", "routes"): ("route", "routes"),
    ("consumer", "consumers"): ("consumer", "consumers"),
    ("plugin", "plugins"): ("plugin", "plugins"),
    ("plan", "plans"): ("plan", "plans"),
    ("boost", "boosts"): ("boost", "boosts"),
    ("override", "overrides"): ("override", "overrides"),
    ("api", "apis"): ("api", "apis"),
    ("certificate", "certificates"): ("certificate", "certificates"),
}


def _entity_rows() -> dict[str, str]:
    rows: dict[str, str] = {}
    for (single, plural), (g_single, g_plural) in _ENTITY_KINDS.items():
        pascal = g_single[:1].upper() + g_single[1:]
        rows[f"list_{plural}"] = f"Query.{g_plural}"
        rows[f"get_{single}"] = f"Query.{g_single}"
        rows[f"create_{single}"] = f"Mutation.create{pascal}"
        rows[f"replace_{single}"] = f"Mutation.replace{pascal}"
        rows[f"update_{single}"] = f"Mutation.update{pascal}"
        rows[f"delete_{single}"] = f"Mutation.delete{pascal}"
    return rows


_STREAMED = (
    "a streamed CSV / JSON-lines download for bulk tools; a GraphQL response is one bounded "
    "JSON document"
)

REST_TO_GRAPH: dict[str, str] = {
    **_entity_rows(),
    # Signing in is how a client gets the token GraphQL requires.
    "login": "EXCEPTION: signing in yields the bearer token every GraphQL request needs",
    "refresh_session": "EXCEPTION: a refresh exchanges the refresh cookie/token for a new bearer",
    # Config, observability and webhooks.
    "export_config": "Query.config",
    "apply_config": "Mutation.applyConfig",
    "diff_config": "Query.configDiff",
    "list_config_versions": "Query.configVersions",
    "get_config_version": "Query.configVersion",
    "rollback_config": "Mutation.rollbackConfig",
    "list_audit_events": "Query.auditEvents",
    "export_audit_events": f"EXCEPTION: {_STREAMED} (page Query.auditEvents)",
    "list_alert_rules": "Query.alertRules",
    "create_alert_rule": "Mutation.createAlertRule",
    "get_alert_rule": "Query.alertRule",
    "replace_alert_rule": "Mutation.replaceAlertRule",
    "update_alert_rule": "Mutation.updateAlertRule",
    "delete_alert_rule": "Mutation.deleteAlertRule",
    "list_alerts": "Query.alerts",
    "list_anomalies": "Query.anomalies",
    "list_events": "Query.events",
    "stream_events": "Subscription.events",
    "get_analytics_usage": "Query.analyticsUsage",
    "export_analytics_usage": f"EXCEPTION: {_STREAMED} (Query.analyticsUsage has the series)",
    "get_analytics_top_endpoints": "Query.analyticsTopEndpoints",
    "get_analytics_top_consumers": "Query.analyticsTopConsumers",
    "get_analytics_errors": "Query.analyticsErrors",
    "get_analytics_latency": "Query.analyticsLatency",
    "get_analytics_realtime": "Query.analyticsRealtime",
    "get_analytics_live": "Subscription.traffic",
    "get_analytics_consumer_report": "Query.consumerUsageReport",
    "get_analytics_api_versions": "Query.apiVersionsUsage",
    "get_analytics_version_callers": "Query.apiVersionCallers",
    "purge_cache": "Mutation.purgeCache",
    "start_capture": "Mutation.startCapture",
    "list_captures": "Query.captures",
    "get_capture": "Query.capture",
    "stop_capture": "Mutation.stopCapture",
    "list_captured_exchanges": "Query.capturedExchanges",
    "get_captured_exchange": "Query.capturedExchange",
    "import_api_description": "Mutation.importApiDescription",
    "get_api_description": "Query.apiDescription",
    "diff_api_versions": "Query.apiDiff",
    "list_data_plane_nodes": "Query.dataPlaneNodes",
    "get_upstream_health": "Query.upstreamHealth",
    "list_event_types": "Query.eventTypes",
    "list_plugin_schemas": "Query.pluginSchemas",
    "get_plugin_schema": "Query.pluginSchema",
    "create_webhook": "Mutation.createWebhook",
    "list_webhooks": "Query.webhooks",
    "list_webhook_deliveries": "Query.webhookDeliveries",
    "get_webhook": "Query.webhook",
    "update_webhook": "Mutation.updateWebhook",
    "delete_webhook": "Mutation.deleteWebhook",
    "enable_webhook": "Mutation.enableWebhook",
    "disable_webhook": "Mutation.disableWebhook",
    "rotate_webhook_secret": "Mutation.rotateWebhookSecret",
    "list_webhook_endpoint_deliveries": "Query.webhookDeliveries",
    "export_webhook_attempts": f"EXCEPTION: {_STREAMED} (page Query.webhookDeliveries)",
    "replay_webhook_delivery": "Mutation.replayWebhookDelivery",
    "replay_failed_webhook_deliveries": "Mutation.replayFailedWebhookDeliveries",
    "test_webhook": "Mutation.testWebhook",
    # Identity and admin access (graph/keys.py, oauth.py, organizations.py, admins.py).
    "create_api_key": "Mutation.createApiKey",
    "list_consumer_api_keys": "Query.consumerApiKeys",
    "list_api_keys": "Query.apiKeys",
    "export_api_keys": "EXCEPTION: a streamed CSV / JSON-lines file download of every matching "
    "key (no page size); GraphQL answers one JSON document, and the same metadata is paged "
    "by Query.apiKeys",
    "import_api_keys": "Mutation.importApiKeys",
    "generate_api_sdk": "EXCEPTION: a zip archive of generated source files (binary, seconds of "
    "generator work); GraphQL answers one JSON document. Query.apiDescription gives the "
    "document to generate from",
    "get_api_key": "Query.apiKey",
    "update_api_key": "Mutation.updateApiKey",
    "delete_api_key": "Mutation.deleteApiKey",
    "rotate_api_key": "Mutation.rotateApiKey",
    "revoke_api_key": "Mutation.revokeApiKey",
    "suspend_api_key": "Mutation.suspendApiKey",
    "resume_api_key": "Mutation.resumeApiKey",
    "get_api_key_quota_usage": "Query.apiKeyQuotaUsage",
    "get_consumer_quota_usage": "Query.consumerQuotaUsage",
    "create_oauth_client": "Mutation.createOAuthClient",
    "list_oauth_clients": "Query.consumerOAuthClients",
    "get_oauth_client": "Query.oauthClient",
    "update_oauth_client": "Mutation.updateOAuthClient",
    "delete_oauth_client": "Mutation.deleteOAuthClient",
    "rotate_oauth_client_secret": "Mutation.rotateOAuthClientSecret",
    # basic-auth, hmac-auth and mtls-auth credentials (graph/credentials.py): one set of
    # fields with a `kind` argument for the three REST paths.
    **{
        f"{verb}_{kind}_credential{suffix}": field
        for kind in ("basic_auth", "hmac_auth", "mtls_auth")
        for verb, suffix, field in (
            ("create", "", "Mutation.createConsumerCredential"),
            ("list", "s", "Query.consumerCredentials"),
            ("get", "", "Query.consumerCredential"),
            ("rotate", "", "Mutation.rotateConsumerCredential"),
            ("delete", "", "Mutation.deleteConsumerCredential"),
        )
        if not (kind == "mtls_auth" and verb == "rotate")
    },
    "list_signing_keys": "Query.signingKeys",
    "rotate_signing_key": "Mutation.rotateSigningKey",
    "list_organizations": "Query.organizations",
    "create_organization": "Mutation.createOrganization",
    "get_organization": "Query.organization",
    "update_organization": "Mutation.renameOrganization",
    "delete_organization": "Mutation.deleteOrganization",
    "logout": "Mutation.logout",
    "change_own_password": "Mutation.changeOwnPassword",
    "whoami": "Query.me",
    "list_admin_users": "Query.adminUsers",
    "create_admin_user": "Mutation.createAdminUser",
    "get_admin_user": "Query.adminUser",
    "update_admin_user": "Mutation.updateAdminUser",
    "delete_admin_user": "Mutation.deleteAdminUser",
    "create_api_token": "Mutation.createApiToken",
    "list_api_tokens": "Query.apiTokens",
    "revoke_api_token": "Mutation.revokeApiToken",
    "list_portal_developers": "Query.portalDevelopers",
    "suspend_portal_developer": "Mutation.suspendPortalDeveloper",
    "resume_portal_developer": "Mutation.resumePortalDeveloper",
    "list_portal_applications": "Query.portalApplications",
    "list_portal_access_requests": "Query.portalAccessRequests",
    "approve_portal_access_request": "Mutation.approvePortalAccessRequest",
    "reject_portal_access_request": "Mutation.rejectPortalAccessRequest",
}
