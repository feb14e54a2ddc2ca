"""The built-in sandbox mock: a version with `sandbox: {mock: true}` answers requests made
with non-production keys from its OpenAPI description instead of the upstream.

Not a configurable plugin: the snapshot compiler adds it to the chains of routes that
serve such a version. It runs in the access phase after auth, limits and
request-validator (priority 800, before the response cache), so sandbox traffic is
authenticated, limited, validated and logged like real traffic and marked
`ctx.sandbox`. Production credentials (and credentials without an environment) go
upstream as usual. The answers are prepared when the description is compiled
(`contract.mock`): the documented success status, media type and example, else
schema-valid generated data.
"""

from __future__ import annotations

from typing import ClassVar

from portcullis.contract.index import SANDBOX_ENVIRONMENTS
from portcullis.model.plugins.base import PluginConfig
from portcullis.plugins.api_operations import PROBLEM_HEADERS, locate, unknown_operation
from portcullis.plugins.base import Phase, Plugin, PluginResponse, RequestContext
from portcullis.problems import INTERNAL_ERROR, problem_body


class SandboxMockConfig(PluginConfig):
    """Nothing to configure: the version's `sandbox` and `openapi` say it all."""


class SandboxMock(Plugin[SandboxMockConfig]):
    name: ClassVar[str] = "sandbox-mock"
    priority: ClassVar[int] = 800
    config_model = SandboxMockConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        if ctx.environment not in SANDBOX_ENVIRONMENTS:
            return None
        located = locate(self.env, ctx)
        if located is None or not located.version.mock:
            return None
        version = located.version
        ctx.sandbox = True
        ctx.api = ctx.api or version.api
        ctx.api_version = ctx.api_version or version.version
        lookup = located.lookup
        if located.contract is None or lookup is None:
            body = problem_body(
                INTERNAL_ERROR,
                f"The sandbox of {version.api} {version.version} has no description "
                "to answer from.",
            )
            return PluginResponse(500, body, list(PROBLEM_HEADERS))
        if lookup.operation is None:
            return unknown_operation(ctx, lookup, version.api, version.version)
        mock = lookup.operation.mock
        headers = [] if mock.media_type is None else [(b"content-type", mock.media_type.encode())]
        return PluginResponse(mock.status, mock.body, headers)
