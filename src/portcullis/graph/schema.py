"""The schema: every area's root fields assembled into `Query`, `Mutation` and
`Subscription`.

Areas contribute plain mappings of field name to strawberry field; the schema is
built once per process (`schema()`), and its SDL is what `/graphql/schema.graphql`
serves and what client generators read.
"""

from __future__ import annotations

import functools
from typing import Any

import strawberry
from graphql import GraphQLSchema
from strawberry.schema.config import StrawberryConfig

from portcullis.graph import operational
from portcullis.graph.entities import build_entities
from portcullis.graph.models import SCALAR_OVERRIDES, resolve_member


def _root(name: str, fields: dict[str, Any], description: str) -> type[Any]:
    namespace: dict[str, Any] = {"__module__": __name__, "__annotations__": {}}
    namespace.update(fields)
    return strawberry.type(type(name, (), namespace), description=description)


@functools.cache
def schema() -> strawberry.Schema:
    queries: dict[str, Any] = {}
    mutations: dict[str, Any] = {}
    # Identity and admin access (API keys, OAuth clients, organizations, admin users).
    from portcullis.graph import admins, credentials, keys, oauth, organizations, portal

    links = {"consumers": {**keys.consumer_links(), **oauth.consumer_links()}}
    for collection, fields in operational.node_links().items():
        links[collection] = {**links.get(collection, {}), **fields}
    for kind in build_entities(links):
        queries.update(kind.queries)
        mutations.update(kind.mutations)
    for area in (keys, oauth, credentials, organizations, admins, portal):
        queries.update(area.QUERIES)
        mutations.update(area.MUTATIONS)
    # Config, observability and webhooks (graph/operational.py).
    for part in operational.areas():
        queries.update(part.queries)
        mutations.update(part.mutations)
    query = _root("Query", queries, "Everything the control plane holds, as the caller may see it")
    mutation = _root("Mutation", mutations, "Every change the control plane allows")
    from portcullis.graph.subscriptions import SUBSCRIPTIONS

    subscription = _root("Subscription", dict(SUBSCRIPTIONS), "Live streams, resumable")
    return strawberry.Schema(
        query=query,
        mutation=mutation,
        subscription=subscription,
        config=StrawberryConfig(default_resolver=resolve_member),
        scalar_overrides=SCALAR_OVERRIDES,
    )


def graphql_schema() -> GraphQLSchema:
    """The graphql-core schema the HTTP face validates and executes against."""
    return schema()._schema


def sdl() -> str:
    return schema().as_str() + "\n"
