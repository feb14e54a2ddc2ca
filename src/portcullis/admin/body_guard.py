"""What a request must show before anything in the control plane reads its body.

FastAPI reads and JSON-decodes a body before it runs any dependency, authentication
included, and the Idempotency-Key middleware reads the body of every keyed POST.
So, before the body is touched, this plain ASGI middleware checks every request
that may have one (a `Content-Length` above 0, `Transfer-Encoding`, or an HTTP/2
stream without a length), by the rules of the route it is for (the same facts the
OpenAPI description shows):

- an operation with a request body and a security scheme answers 401 at once
  when no `Authorization: Bearer <credential>` is present: anonymous bodies are
  never read. Whether the credential is *valid* is still decided by the endpoint's
  dependencies (`dependencies.current_caller`); this is only the cheap syntactic gate;
- an operation whose body is JSON only answers 415 to another media type;
- the body may hold at most `max_body_bytes` (`x-max-body-bytes` on the operation,
  else `DEFAULT_MAX_BODY_BYTES`; requests to undocumented paths get the default):
  a larger `Content-Length` is 413 at once, and a body without one (chunked) is
  counted while it streams in and cut off with 413 at the limit, so at most the
  limit is ever held in memory.

An early refusal closes the connection (`Connection: close`), since the unread body
would otherwise have to be drained for the next request on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security.base import SecurityBase
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portcullis.admin.dependencies import missing_credential
from portcullis.admin.problems import UNSUPPORTED_MEDIA_TYPE, BodyTooLarge, problem_response
from portcullis.admin.strict_json import is_json_media_type

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# OpenAPI operation extension that raises (or lowers) the cap of one operation.
MAX_BODY_EXTENSION = "x-max-body-bytes"
_MAX_CREDENTIAL_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class BodyRule:
    """How one operation treats request bodies."""

    authenticated: bool = False
    json_only: bool = False
    max_bytes: int = DEFAULT_MAX_BODY_BYTES


DEFAULT_RULE = BodyRule()


class BodyRules:
    """Rules by method and path, for the routes of an application (matched in order)."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._routes: list[tuple[re.Pattern[str], frozenset[str], BodyRule]] = []
        for context in iter_route_contexts(routes):
            if isinstance(context.original_route, APIRoute):
                methods = frozenset(context.methods or ())
                self._routes.append((context.path_regex, methods, _rule_of(context)))

    def lookup(self, method: str, path: str) -> BodyRule:
        for pattern, methods, rule in self._routes:
            if method in methods and pattern.match(path):
                return rule
        return DEFAULT_RULE


def _rule_of(route: Any) -> BodyRule:
    """The rule of one route: its body media types come from its body parameter, or from
    `openapi_extra` for endpoints that read the body themselves (config import, CSV)."""
    extra: dict[str, Any] = route.openapi_extra or {}
    limit = int(extra.get(MAX_BODY_EXTENSION, DEFAULT_MAX_BODY_BYTES))
    if "requestBody" in extra:
        media_types = list(extra["requestBody"].get("content", {}))
    elif route.body_field is not None:
        media_types = [getattr(route.body_field.field_info, "media_type", "application/json")]
    else:
        return BodyRule(max_bytes=limit)
    return BodyRule(
        authenticated=_needs_credential(route.dependant),
        json_only=bool(media_types) and all(is_json_media_type(m) for m in media_types),
        max_bytes=limit,
    )


def _needs_credential(dependant: Dependant) -> bool:
    """True when a security scheme (a bearer token) is among the route's dependencies."""
    stack = [dependant]
    while stack:
        current = stack.pop()
        call: object = current.call  # typed as a callable; security schemes are instances
        if isinstance(call, SecurityBase):
            return True
        stack.extend(current.dependencies)
    return False


def _announced_length(scope: Scope) -> tuple[bool, int | None]:
    """(the request may have a body, its declared length if any).

    HTTP/1.x has no body without `Content-Length` or `Transfer-Encoding`; HTTP/2 and 3
    streams may carry one with neither, so there only a length of 0 rules it out.
    """
    length: int | None = None
    unframed = scope.get("http_version", "1.1") not in ("1.0", "1.1")
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None  # unknown size: count it as it comes
                unframed = True
        elif name == b"transfer-encoding":
            unframed = True
    if length is not None:
        return length > 0, length
    return unframed, None


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def has_bearer_credential(authorization: str | None) -> bool:
    """`Bearer <one non-empty token>` of a plausible length: present, not verified."""
    if not authorization:
        return False
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    return (
        scheme.lower() == "bearer"
        and 0 < len(credential) <= _MAX_CREDENTIAL_LENGTH
        and not any(c.isspace() for c in credential)
    )


class BodyGuardMiddleware:
    """See the module doc; `routes` gives the application's routes (read on first use,
    once every router is included)."""

    def __init__(self, app: ASGIApp, *, routes: Callable[[], Sequence[BaseRoute]]) -> None:
        self.app = app
        self._routes = routes
        self._rules: BodyRules | None = None

    def rules(self) -> BodyRules:
        if self._rules is None:
            self._rules = BodyRules(self._routes())
        return self._rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_body, length = _announced_length(scope)
        if not has_body:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        route_path = path[len(root) :] if root and path.startswith(root) else path
        rule = self.rules().lookup(scope["method"], route_path)
        refusal = self._refusal(scope, rule, length, path)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self._limited(scope, receive, send, rule.max_bytes)

    @staticmethod
    def _refusal(scope: Scope, rule: BodyRule, length: int | None, path: str) -> Any:
        """The response that refuses the request before its body is read, if any."""
        close = {"connection": "close"}
        if rule.authenticated and not has_bearer_credential(_header(scope, b"authorization")):
            problem = missing_credential()
            return problem_response(
                problem.kind,
                problem.detail,
                instance=path,
                headers={**problem.headers, **close},
            )
        if rule.json_only and not is_json_media_type(_header(scope, b"content-type")):
            sent = _header(scope, b"content-type")
            return problem_response(
                UNSUPPORTED_MEDIA_TYPE,
                "this endpoint takes a JSON body (application/json"
                + (")" if sent is None else f"), not {sent.split(';')[0].strip()!r}"),
                instance=path,
                headers={"accept": "application/json", **close},
            )
        if length is not None and length > rule.max_bytes:
            return BodyTooLarge(rule.max_bytes).response(path)
        return None

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        started = False

        async def receive_at_most() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive_at_most, tracking_send)
        except BodyTooLarge as exc:
            # Raised where nothing turned it into a response (e.g. a middleware reading
            # the body); the endpoints' own reads are answered by the exception handler.
            if started:
                raise
            await exc.response(scope["path"])(scope, receive, send)
