"""The built-in sandbox mock: a version with `sandbox: {mock: true}` answers requests made
with non-production keys from its OpenAPI description instead of the upstream.

Not a configurable plugin: the snapshot compiler adds it to the chains of routes that
serve such a version. It answers the requests the version step marked `ctx.sandbox`
(runtime/versions.py: a staging or development credential on a version with a
sandbox). It runs after auth, limits and request-validator (priority 800, before the
response cache), so sandbox traffic is authenticated, limited, validated and logged
like real traffic: a request without a body is answered in the access phase, one
with a body in the `request_body` phase, after request-validator has checked it.
Production credentials (and credentials without an environment) go upstream as usual.
The answers are prepared when the
description is compiled (`contract.mock`): the documented success status, media
type and example, else schema-valid generated data; `Prefer: code=404` picks another
documented status.
"""

from __future__ import annotations

from typing import ClassVar

from portcullis.model.plugins.base import PluginConfig
from portcullis.plugins.api_operations import (
    PROBLEM_HEADERS,
    Located,
    has_body,
    locate,
    unknown_operation,
)
from portcullis.plugins.base import BODY_BUFFER_LIMIT, Phase, Plugin, PluginResponse, RequestContext
from portcullis.problems import INTERNAL_ERROR, problem_body


class SandboxMockConfig(PluginConfig):
    """Nothing to configure: the version's `sandbox` and `openapi` say it all."""


class SandboxMock(Plugin[SandboxMockConfig]):
    name: ClassVar[str] = "sandbox-mock"
    priority: ClassVar[int] = 800
    config_model = SandboxMockConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access", "request_body"})

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        located = self._mocked(ctx)
        if located is None:
            return None
        if has_body(ctx):
            # Answered once the body is read, so request-validator checks it first; a body
            # too large for that phase is refused rather than sent to the real upstream.
            if ctx.body_limit is None or ctx.body_limit > BODY_BUFFER_LIMIT:
                ctx.body_limit = BODY_BUFFER_LIMIT
            return None
        return _answer(ctx, located)

    def request_body(self, ctx: RequestContext, body: bytes) -> bytes | PluginResponse | None:
        located = self._mocked(ctx)
        return None if located is None else _answer(ctx, located)

    def _mocked(self, ctx: RequestContext) -> Located | None:
        # `ctx.sandbox` is the version step's decision (runtime/versions.py: a version
        # with a sandbox and a staging or development credential): one rule, one place.
        if not ctx.sandbox:
            return None
        located = locate(self.env, ctx)
        if located is None or not located.version.mock:
            return None
        return located


def _answer(ctx: RequestContext, located: Located) -> PluginResponse:
    version = located.version
    lookup = located.lookup
    if located.contract is None or lookup is None:
        body = problem_body(
            INTERNAL_ERROR,
            f"The sandbox of {version.api} {version.version} has no description to answer from.",
        )
        return PluginResponse(500, body, list(PROBLEM_HEADERS))
    if lookup.operation is None:
        return unknown_operation(ctx, lookup, version.api, version.version)
    operation = lookup.operation
    mock = operation.mocks.get(_preferred_code(ctx), operation.mock)
    headers = [] if mock.media_type is None else [(b"content-type", mock.media_type.encode())]
    return PluginResponse(mock.status, mock.body, headers)


def _preferred_code(ctx: RequestContext) -> int:
    """The status a client asks the mock for with `Prefer: code=404` (RFC 7240 syntax,
    as Prism reads it); 0 when it asks for none."""
    for name, value in ctx.headers:
        if name == b"prefer":
            for part in value.replace(b";", b",").split(b","):
                key, _, code = part.strip().partition(b"=")
                if key.lower() == b"code" and code.strip(b'"').isdigit():
                    return int(code.strip(b'"'))
    return 0
