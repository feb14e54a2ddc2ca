"""request-validator: refuse requests that do not match the API version's OpenAPI description.

Config (model/plugins/request_validator.py):

    parameters: true            # path, query, header and cookie parameters
    body: true                  # Content-Type, and JSON / form bodies against their schema
    max_body_bytes: 1048576     # larger bodies are refused (413) on validated operations
    unknown_operations: reject  # a method/path the description lacks: 404/405 (or allow)
    validate_responses: false   # log upstream responses that differ (sandbox/staging)

Which description: the route's API version (`apis[].versions[].routes`), or on an
API's shared route the version the request selected (`ctx.api_version`, set by the
version step after auth; else the API's default version). Everything is compiled
with the snapshot (`contract.operations`); a request costs its operation lookup and
the validators of what it carries. The access phase checks parameters and the
Content-Type; the body is checked in the `request_body` phase, once it is read.

A refusal is a 400 problem (415 for an undocumented Content-Type) whose `errors`
list `{"in": body|query|header|path|cookie, "pointer": "#/...", "detail": ...}`.
It runs after auth and limits (priority 850): only admitted callers cost a
validation, and a sandbox mock (800) answers only valid requests.

With `validate_responses`, upstream responses are checked against the description
too (JSON bodies up to `max_response_bytes`) and mismatches logged
(`contract.response_mismatch`) and flagged in the request log and metrics
(`response_mismatch`); the response itself is never changed. It makes the proxy
buffer the route's responses, so it is meant for sandbox and staging traffic.
"""

from __future__ import annotations

from typing import ClassVar

import structlog

from portcullis.analytics.record import Flag
from portcullis.contract.operations import Issue, Operation, header_value, media_type_of
from portcullis.model.plugins.request_validator import RequestValidatorConfig
from portcullis.plugins.api_operations import (
    PROBLEM_HEADERS,
    Located,
    has_body,
    locate,
    unknown_operation,
)
from portcullis.plugins.base import Headers, Phase, Plugin, PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.problems import (
    INTERNAL_ERROR,
    PAYLOAD_TOO_LARGE,
    REQUEST_INVALID,
    UNSUPPORTED_MEDIA_TYPE,
    ProblemKind,
    problem_body,
)

log = structlog.get_logger(__name__)


def _refusal(kind: ProblemKind, status: int, detail: str, issues: list[Issue]) -> PluginResponse:
    body = problem_body(kind, detail, status=status, errors=[i.as_dict() for i in issues])
    return PluginResponse(status, body, list(PROBLEM_HEADERS))


class RequestValidator(Plugin[RequestValidatorConfig]):
    """Checks each request against its operation in the API version's description."""

    name: ClassVar[str] = "request-validator"
    priority: ClassVar[int] = 850
    config_model = RequestValidatorConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access", "request_body"})
    refusal_flag: ClassVar[int] = Flag.REQUEST_INVALID

    @classmethod
    def build(
        cls, config: RequestValidatorConfig, env: PluginEnv
    ) -> Plugin[RequestValidatorConfig]:
        # Checking responses needs their bodies buffered: only routes that ask pay for it.
        if config.validate_responses:
            return ResponseCheckingValidator(config, env)
        return cls(config, env)

    def _operation(self, ctx: RequestContext) -> Located | PluginResponse | None:
        located = locate(self.env, ctx)
        if located is None:
            return None
        if located.contract is None:
            error = located.version.error
            if error is None:
                return None  # the version has no description (a global instance)
            log.error(
                "request_validator.no_contract",
                api=located.version.api,
                version=located.version.version,
                error=error,
                request_id=ctx.request_id,
            )
            body = problem_body(
                INTERNAL_ERROR,
                f"The description of {located.version.api} {located.version.version} "
                "could not be compiled.",
            )
            return PluginResponse(500, body, list(PROBLEM_HEADERS))
        lookup = located.lookup
        if lookup is not None and lookup.operation is None:
            if self.config.unknown_operations == "allow":
                return None
            return unknown_operation(ctx, lookup, located.version.api, located.version.version)
        return located

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        located = self._operation(ctx)
        if not isinstance(located, Located):
            return located
        lookup = located.lookup
        if lookup is None or lookup.operation is None:
            return None  # unknown operations allowed through
        op = lookup.operation
        limit = self.config.max_errors
        issues: list[Issue] = []
        if self.config.parameters:
            query = ctx.query_string
            if query is None:
                query = ctx.scope.get("query_string", b"")
            issues = op.check_parameters(lookup.path_params, query, ctx.headers, limit)
        if self.config.body and op.body_media:  # a requestBody with no media types: unchecked
            refusal = self._body_head(ctx, op, issues)
            if refusal is not None:
                return refusal
        if issues:
            return _refusal(REQUEST_INVALID, 400, _summary(issues), issues)
        return None

    def _body_head(
        self, ctx: RequestContext, op: Operation, issues: list[Issue]
    ) -> PluginResponse | None:
        """The Content-Type and presence of a body; lowers the body limit to what is checked."""
        carries = has_body(ctx)
        if carries is False:
            if op.body_required:
                issues.append(Issue("body", "#", "the operation requires a request body"))
            return None
        content_type = header_value(ctx.headers, b"content-type")
        if content_type is None:
            if carries:
                issues.append(
                    Issue("header", "#/content-type", "a request body needs a Content-Type")
                )
            return None
        found = op.body_media_for(content_type)
        if found is None:
            documented = ", ".join(m for m, _ in op.body_media or ())
            issue = Issue(
                "header",
                "#/content-type",
                f"{media_type_of(content_type)} is not a documented media type ({documented})",
            )
            return _refusal(UNSUPPORTED_MEDIA_TYPE, 415, issue.detail, [*issues, issue])
        if found[1] is not None:
            limit = self.config.max_body_bytes
            if ctx.content_length is not None and ctx.content_length > limit:
                body = problem_body(
                    PAYLOAD_TOO_LARGE, f"Request bodies checked here are limited to {limit} bytes."
                )
                return PluginResponse(413, body, list(PROBLEM_HEADERS))
            if ctx.body_limit is None or ctx.body_limit > limit:
                ctx.body_limit = limit
        return None

    def request_body(self, ctx: RequestContext, body: bytes) -> bytes | PluginResponse | None:
        if not self.config.body:
            return None
        located = self._operation(ctx)
        if not isinstance(located, Located) or located.lookup is None:
            return None
        op = located.lookup.operation
        content_type = header_value(ctx.headers, b"content-type")
        if op is None or content_type is None:
            return None
        issues = op.check_body(content_type, body, self.config.max_errors)
        if issues:
            return _refusal(REQUEST_INVALID, 400, _summary(issues), issues)
        return None


class ResponseCheckingValidator(RequestValidator):
    """A request-validator that also checks upstream responses (logged, never altered)."""

    phases: ClassVar[frozenset[Phase]] = frozenset({"access", "request_body", "response_body"})

    def response_body(
        self, ctx: RequestContext, status: int, headers: Headers, body: bytes
    ) -> bytes | None:
        if len(body) > self.config.max_response_bytes:
            return None
        located = locate(self.env, ctx)
        if located is None or located.lookup is None or located.lookup.operation is None:
            return None
        op = located.lookup.operation
        content_type = header_value(headers, b"content-type") or ""
        issues = op.check_response(status, content_type, body, self.config.max_errors)
        if issues:
            ctx.flags |= Flag.RESPONSE_MISMATCH
            log.warning(
                "contract.response_mismatch",
                api=located.version.api,
                version=located.version.version,
                operation=f"{op.method.upper()} {op.template}",
                status=status,
                errors=[i.as_dict() for i in issues],
                request_id=ctx.request_id,
            )
        return None


def _summary(issues: list[Issue]) -> str:
    first = issues[0]
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    return f"{first.part} {first.pointer}: {first.detail}{more}"
