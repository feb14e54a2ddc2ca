"""RFC 9457 problem details shared by the data plane and the control plane.

Each error kind has a stable `type` URI and title; callers supply status-specific
detail. Bodies never carry stack traces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://portcullis.dev/problems/"


@dataclass(frozen=True, slots=True)
class ProblemKind:
    """One error kind: a stable `type` URI, its one title, and its usual status.

    Every kind registers itself when it is defined; a second definition of the same
    `type` with another title is refused at import time, so a client never sees two
    titles for one type, whichever plane answers.
    """

    slug: str
    title: str
    status: int

    def __post_init__(self) -> None:
        _register(self)

    @property
    def type_uri(self) -> str:
        return TYPE_BASE + self.slug


_KINDS: dict[str, ProblemKind] = {}


def _register(kind: ProblemKind) -> None:
    known = _KINDS.setdefault(kind.type_uri, kind)
    if known.title != kind.title:
        raise ValueError(
            f"problem type {kind.type_uri} already has the title {known.title!r},"
            f" not {kind.title!r}"
        )


def problem_kinds() -> dict[str, ProblemKind]:
    """Every kind defined so far, by `type` URI (the first definition of each)."""
    return dict(_KINDS)


ROUTE_NOT_FOUND = ProblemKind("route-not-found", "No route matches the request", 404)
BAD_REQUEST = ProblemKind("bad-request", "Bad request", 400)
METHOD_NOT_ALLOWED = ProblemKind("method-not-allowed", "Method not allowed", 405)
PAYLOAD_TOO_LARGE = ProblemKind("payload-too-large", "Request body too large", 413)
URI_TOO_LONG = ProblemKind("uri-too-long", "Request URI too long", 414)
HEADERS_TOO_LARGE = ProblemKind(
    "request-header-fields-too-large", "Request header fields too large", 431
)
# The server stopped the request body (bad chunk framing) or the client stopped sending it.
INVALID_REQUEST_BODY = ProblemKind(
    "invalid-request-body", "The request body is malformed or incomplete", 400
)
# RFC 9112 §6.1: a transfer coding the server does not understand is answered 501.
TRANSFER_CODING_NOT_IMPLEMENTED = ProblemKind(
    "transfer-coding-not-implemented", "Transfer coding not implemented", 501
)
UPSTREAM_UNAVAILABLE = ProblemKind(
    "upstream-unavailable", "No healthy upstream target is available", 503
)
CIRCUIT_OPEN = ProblemKind("circuit-open", "Upstream circuit breaker is open", 503)
UPSTREAM_CONNECT_FAILED = ProblemKind(
    "upstream-connect-failed", "Could not connect to the upstream", 502
)
# The TLS handshake with an https origin failed (certificate refused, name mismatch,
# client certificate refused); the detail names the cause.
UPSTREAM_TLS_FAILED = ProblemKind(
    "upstream-tls-failed", "The TLS handshake with the upstream failed", 502
)
UPSTREAM_PROTOCOL_ERROR = ProblemKind(
    "upstream-protocol-error", "The upstream sent an invalid response", 502
)
# A WebSocket handshake the upstream answered with something other than 101.
UPSTREAM_UPGRADE_REFUSED = ProblemKind(
    "upstream-upgrade-refused", "The upstream refused the WebSocket upgrade", 502
)
UPSTREAM_TIMEOUT = ProblemKind("upstream-timeout", "The upstream did not answer in time", 504)
INTERNAL_ERROR = ProblemKind("internal-error", "Internal error", 500)
# The gateway built an upstream request that is not valid HTTP (e.g. a header value
# with CR LF from stored data) and refused to send it.
INVALID_UPSTREAM_REQUEST = ProblemKind(
    "invalid-upstream-request", "The gateway refused to send an invalid upstream request", 500
)


def problem_body(
    kind: ProblemKind,
    detail: str | None = None,
    *,
    instance: str | None = None,
    status: int | None = None,
    **extensions: Any,
) -> bytes:
    """Serialise a problem; `status` overrides the kind's default where one kind spans two."""
    body: dict[str, Any] = {
        "type": kind.type_uri,
        "title": kind.title,
        "status": status if status is not None else kind.status,
    }
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    body.update(extensions)
    return json.dumps(body, separators=(",", ":")).encode()


MAX_INSTANCE = 2048  # longer request targets (a 414) are not echoed into `instance`


def with_occurrence(body: bytes, request_id: str, instance: str | None) -> bytes:
    """A serialised problem with this occurrence's members added: `request_id` (the
    X-Request-ID the response carries) and RFC 9457 `instance` (the request path,
    never the query, which may hold credentials).

    The one place data-plane problems get them, whoever built the body (the proxy
    or a plugin's prebuilt refusal); a body that is not a JSON object is returned
    unchanged.
    """
    try:
        problem = json.loads(body)
    except ValueError:
        return body
    if not isinstance(problem, dict):
        return body
    problem["request_id"] = request_id
    if instance is not None and len(instance) <= MAX_INSTANCE:
        problem["instance"] = instance
    return json.dumps(problem, separators=(",", ":")).encode()


# Identity (key-auth, jwt-auth, acl).
UNAUTHORIZED = ProblemKind("unauthorized", "Authentication is required", 401)
FORBIDDEN = ProblemKind("forbidden", "Not allowed", 403)
INSUFFICIENT_SCOPE = ProblemKind("insufficient-scope", "Insufficient scope", 403)
CREDENTIALS_UNAVAILABLE = ProblemKind(
    "credentials-unavailable", "Credentials cannot be verified right now", 503
)


# Traffic control (rate-limit): problem types registered with IANA by
# draft-ietf-httpapi-ratelimit-headers (§5, §10.2), so their URIs are IANA's, not ours.
IANA_PROBLEM_TYPES = "https://iana.org/assignments/http-problem-types#"


@dataclass(frozen=True, slots=True)
class RegisteredProblemKind(ProblemKind):
    """A problem kind from the IANA HTTP Problem Types registry: its `type` is IANA's URI."""

    @property
    def type_uri(self) -> str:
        return IANA_PROBLEM_TYPES + self.slug


QUOTA_EXCEEDED = RegisteredProblemKind("quota-exceeded", "Quota Exceeded", 429)
TEMPORARY_REDUCED_CAPACITY = RegisteredProblemKind(
    "temporary-reduced-capacity", "Temporary Reduced Capacity", 503
)


# Load shedding (adaptive concurrency): the upstream's limit is full for the request's class.
OVERLOADED = ProblemKind("overloaded", "The service is overloaded", 503)


# The control plane's kinds (the admin API answers with these and the ones above).
MALFORMED_BODY = ProblemKind("malformed-body", "The request body could not be parsed", 400)
INVALID_CURSOR = ProblemKind("invalid-cursor", "The pagination cursor is invalid", 400)
NOT_FOUND = ProblemKind("not-found", "Resource not found", 404)
NOT_ACCEPTABLE = ProblemKind("not-acceptable", "Not acceptable", 406)
ALREADY_EXISTS = ProblemKind("already-exists", "A resource with this name already exists", 409)
HAS_DEPENDENTS = ProblemKind("has-dependents", "Other resources depend on this resource", 409)
IDEMPOTENCY_IN_FLIGHT = ProblemKind(
    "idempotency-key-in-flight", "A request with this Idempotency-Key is still being processed", 409
)
PRECONDITION_FAILED = ProblemKind(
    "precondition-failed", "The resource has changed (If-Match does not match its ETag)", 412
)
# The request-validator plugin (an API version's OpenAPI description).
REQUEST_INVALID = ProblemKind(
    "request-invalid", "The request does not match the API description", 400
)
OPERATION_NOT_FOUND = ProblemKind(
    "operation-not-found", "The API description has no such operation", 404
)
UNSUPPORTED_MEDIA_TYPE = ProblemKind("unsupported-media-type", "Unsupported media type", 415)
VALIDATION_FAILED = ProblemKind("validation-failed", "The request is not valid", 422)
IDEMPOTENCY_KEY_REUSED = ProblemKind(
    "idempotency-key-reused", "This Idempotency-Key was used with a different request", 422
)
TOO_MANY_REQUESTS = ProblemKind("too-many-requests", "Too many requests", 429)
STORE_UNAVAILABLE = ProblemKind("store-unavailable", "The store is unavailable", 503)


def http_error(status: int) -> ProblemKind:
    """The kind of an HTTP error no other kind describes (one type, the status varies)."""
    return ProblemKind("http-error", "HTTP error", status)
