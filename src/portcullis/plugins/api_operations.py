"""Which operation of its API version's description a request is (request-validator
and sandbox mocks share this lookup; both read the snapshot's `ContractIndex`)."""

from __future__ import annotations

from dataclasses import dataclass

from portcullis.contract.index import VersionContract
from portcullis.contract.operations import Contract, Lookup
from portcullis.plugins.base import PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.problems import (
    METHOD_NOT_ALLOWED,
    OPERATION_NOT_FOUND,
    PROBLEM_CONTENT_TYPE,
    problem_body,
)

PROBLEM_HEADERS = ((b"content-type", PROBLEM_CONTENT_TYPE.encode()),)


@dataclass(frozen=True, slots=True)
class Located:
    """A request placed in its API version: the version, its contract and the lookup."""

    version: VersionContract
    contract: Contract | None
    lookup: Lookup | None


def locate(env: PluginEnv, ctx: RequestContext) -> Located | None:
    """The request's version and operation (None: the route serves no API version).

    Looked up once per request (kept on `ctx.operation`): the version step that sets
    `ctx.api_version` runs before every plugin that asks."""
    if ctx.operation is not None:
        return ctx.operation
    found = _locate(env, ctx)
    ctx.operation = found
    return found


def _locate(env: PluginEnv, ctx: RequestContext) -> Located | None:
    served = env.contracts.routes.get(ctx.route.name)
    if served is None:
        return None
    version = served.select(ctx.api_version)
    if version is None:
        return None
    contract = version.contract
    if contract is None:
        return Located(version, None, None)
    upstream = version.upstream_path(ctx.path, ctx.matched_length, served.strip_path)
    relative = contract.relative(upstream)
    lookup = Lookup(None) if relative is None else contract.find(ctx.method, relative)
    return Located(version, contract, lookup)


def unknown_operation(
    ctx: RequestContext, lookup: Lookup, api: str, version: str
) -> PluginResponse:
    """404 for a path the description lacks, 405 (with Allow) for a method it lacks."""
    if lookup.allowed:
        allowed = ", ".join(lookup.allowed)
        body = problem_body(
            METHOD_NOT_ALLOWED,
            f"{ctx.method} is not an operation of this path in {api} {version} "
            f"(allowed: {allowed}).",
        )
        return PluginResponse(405, body, [*PROBLEM_HEADERS, (b"allow", allowed.encode())])
    body = problem_body(
        OPERATION_NOT_FOUND, f"{api} {version} has no operation {ctx.method} {ctx.path}."
    )
    return PluginResponse(404, body, list(PROBLEM_HEADERS))


def has_body(ctx: RequestContext) -> bool | None:
    """Whether the request carries a body (None: cannot tell before reading it, HTTP/2)."""
    if ctx.content_length is not None:
        return ctx.content_length > 0
    if any(n == b"transfer-encoding" for n, _ in ctx.headers):
        return True
    return None if ctx.scope.get("http_version") == "2" else False
