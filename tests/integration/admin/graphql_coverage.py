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
}
