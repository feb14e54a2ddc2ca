"""The role matrix over GraphQL: every GraphQL field that stands for a REST operation
needs the permission that operation needs (written out independently in
admin_support.ENDPOINTS), for every role.

Each field is called with generated minimal arguments (every required argument and
input member filled with a placeholder) and selects only `__typename`: a refusal
is a `ForbiddenProblem` for a mutation and a `FORBIDDEN` error for a query; any
other answer (data, a not-found, a validation problem) means the caller got past
the permission check.
"""

from __future__ import annotations

from typing import Any

import httpx
from admin_support import ENDPOINTS, ROLE_GRANTS
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    Undefined,
    get_named_type,
    is_leaf_type,
)
from graphql_coverage import REST_TO_GRAPH

from portcullis.graph.schema import graphql_schema
from portcullis.services.rbac import Role

ALL_ROLES = (Role.OWNER, Role.ADMIN, Role.OPERATOR, Role.VIEWER)
# Ending the caller's own session half-way through the matrix (as the REST matrix);
# subscriptions, which need a streaming transport (their RBAC: test_graphql_subscriptions).
SKIP = {"logout", "stream_events", "get_analytics_live"}


def _placeholder(kind: GraphQLInputType) -> Any:
    if isinstance(kind, GraphQLNonNull):
        return _placeholder(kind.of_type)
    if isinstance(kind, GraphQLList):
        return []
    if isinstance(kind, GraphQLEnumType):
        return next(iter(kind.values))
    if isinstance(kind, GraphQLInputObjectType):
        if kind.is_one_of:
            name, field = next(iter(kind.fields.items()))
            return {name: _placeholder(field.type)}
        return {
            name: _placeholder(field.type)
            for name, field in kind.fields.items()
            if isinstance(field.type, GraphQLNonNull) and field.default_value is Undefined
        }
    assert isinstance(kind, GraphQLScalarType)
    return {
        "Int": 1,
        "Float": 1.0,
        "Boolean": True,
        "JSON": {},
        "DateTime": "2026-01-01T00:00:00+00:00",
    }.get(kind.name, "placeholder")


def _document(operation: str, name: str, field: GraphQLField) -> tuple[str, dict[str, Any]]:
    required = {
        arg: spec for arg, spec in field.args.items() if isinstance(spec.type, GraphQLNonNull)
    }
    variables = {arg: _placeholder(spec.type) for arg, spec in required.items()}
    declared = ", ".join(f"${arg}: {spec.type}" for arg, spec in required.items())
    passed = ", ".join(f"{arg}: ${arg}" for arg in required)
    selection = "" if is_leaf_type(get_named_type(field.type)) else " { __typename }"
    call = f"{name}({passed})" if passed else name
    header = f"{operation}({declared})" if declared else operation
    return f"{header} {{ {call}{selection} }}", variables


def _permissions(spec: dict[str, Any]) -> dict[str, str]:
    """REST operationId -> the permission the REST table says it needs."""
    table = {(method, path): permission for method, path, permission in ENDPOINTS}
    return {
        op["operationId"]: table[(method.upper(), path)]
        for path, ops in spec["paths"].items()
        if path.startswith("/admin/v1/")
        for method, op in ops.items()
        if method in ("get", "post", "put", "patch", "delete")
    }


async def test_role_matrix_over_graphql(client_for: Any) -> None:
    """One app for the four roles (each role's client is its own signed-in user)."""
    for role in ALL_ROLES:
        await _check_role(await client_for(role), role)


async def _check_role(client: httpx.AsyncClient, role: Role) -> None:
    permissions = _permissions((await client.get("/openapi.json")).json())
    schema = graphql_schema()
    assert schema.query_type is not None
    assert schema.mutation_type is not None
    roots = {"Query": ("query", schema.query_type), "Mutation": ("mutation", schema.mutation_type)}
    failures: list[str] = []
    checked = 0
    for rest_operation, target in sorted(REST_TO_GRAPH.items()):
        if target.startswith("EXCEPTION: ") or rest_operation in SKIP:
            continue
        permission = permissions[rest_operation]
        allowed = permission in ("public", "authenticated") or permission in ROLE_GRANTS[role]
        for qualified in target.split(","):
            root, _, name = qualified.strip().partition(".")
            operation, root_type = roots[root]
            document, variables = _document(operation, name, root_type.fields[name])
            response = await client.post(
                "/graphql", json={"query": document, "variables": variables}
            )
            assert response.status_code < 500, f"{qualified}: {response.text}"
            body = response.json()
            codes = {e.get("extensions", {}).get("code") for e in body.get("errors", [])}
            refused = "FORBIDDEN" in codes or (
                operation == "mutation"
                and (body.get("data") or {}).get(name, {}).get("__typename") == "ForbiddenProblem"
            )
            invalid = codes & {
                "GRAPHQL_VALIDATION_FAILED",
                "GRAPHQL_PARSE_FAILED",
                "BAD_REQUEST",
                "BAD_USER_INPUT",
            }
            if invalid:
                failures.append(f"{qualified}: the generated document failed: {body['errors']}")
            elif allowed and refused:
                failures.append(f"{role} {qualified} ({permission}): expected allowed, refused")
            elif not allowed and not refused:
                failures.append(f"{role} {qualified} ({permission}): expected refused: {body}")
            checked += 1
    assert not failures, "\n".join(failures)
    assert checked >= 50
