"""Every REST operation under /admin/v1 has a GraphQL equivalent (or a listed,
deliberate exception), and every field named exists in the published schema."""

from __future__ import annotations

import httpx
from graphql_coverage import REST_TO_GRAPH

from portcullis.graph.schema import graphql_schema


async def test_every_rest_operation_has_a_graphql_equivalent(anonymous: httpx.AsyncClient) -> None:
    spec = (await anonymous.get("/openapi.json")).json()
    operations = {
        op["operationId"]
        for path, ops in spec["paths"].items()
        if path.startswith("/admin/v1/")
        for method, op in ops.items()
        if method in ("get", "post", "put", "patch", "delete")
    }
    missing = sorted(operations - REST_TO_GRAPH.keys())
    assert not missing, f"REST operations without a GraphQL equivalent: {missing}"
    stale = sorted(REST_TO_GRAPH.keys() - operations)
    assert not stale, f"rows for REST operations that no longer exist: {stale}"
    schema = graphql_schema()
    roots = {
        "Query": schema.query_type,
        "Mutation": schema.mutation_type,
        "Subscription": schema.subscription_type,
    }
    unknown = []
    for operation, target in REST_TO_GRAPH.items():
        if target.startswith("EXCEPTION: "):
            continue
        for name in target.split(","):
            root, _, field = name.strip().partition(".")
            root_type = roots.get(root)
            if root_type is None or field not in root_type.fields:
                unknown.append(f"{operation} -> {name.strip()}")
    assert not unknown, f"fields the schema does not have: {unknown}"
