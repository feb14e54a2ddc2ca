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


REST_TO_GRAPH: dict[str, str] = {
    **_entity_rows(),
    # Signing in is how a client gets the token GraphQL requires.
    "login": "EXCEPTION: signing in yields the bearer token every GraphQL request needs",
    "refresh_session": "EXCEPTION: a refresh exchanges the refresh cookie/token for a new bearer",
    # Identity and admin access (graph/keys.py, oauth.py, organizations.py, admins.py).
    "create_api_key": "Mutation.createApiKey",
    "list_consumer_api_keys": "Query.consumerApiKeys",
    "list_api_keys": "Query.apiKeys",
    "export_api_keys": "EXCEPTION: a streamed CSV / JSON-lines file download of every matching "
    "key (no page size); GraphQL answers one JSON document, and the same metadata is paged "
    "by Query.apiKeys",
    "import_api_keys": "Mutation.importApiKeys",
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
}
