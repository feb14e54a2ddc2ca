"""RFC 9457 problem details for the admin API: the exception and its FastAPI handlers.

Every error the control plane answers with is `application/problem+json` with a
stable `type` URI per kind. Handlers turn FastAPI's own errors (request validation,
unknown paths, wrong methods) and any unexpected exception into problems too, so
no response ever carries a stack trace.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from portcullis.identity.keys import redact_keys
from portcullis.problems import (
    ALREADY_EXISTS,
    BAD_REQUEST,
    FORBIDDEN,
    HAS_DEPENDENTS,
    IDEMPOTENCY_IN_FLIGHT,
    IDEMPOTENCY_KEY_REUSED,
    INTERNAL_ERROR,
    INVALID_CURSOR,
    MALFORMED_BODY,
    METHOD_NOT_ALLOWED,
    NOT_ACCEPTABLE,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    PRECONDITION_FAILED,
    PROBLEM_CONTENT_TYPE,
    STORE_UNAVAILABLE,
    TOO_MANY_REQUESTS,
    UNAUTHORIZED,
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION_FAILED,
    ProblemKind,
    http_error,
    problem_body,
)
from portcullis.services.errors import ServiceError, invalid, strip_value_error
from portcullis.services.errors import errors_from_pydantic as errors_from_pydantic
from portcullis.services.errors import pointer_for as pointer_for

# The kinds live in the one registry, portcullis.problems; the admin modules may name
# them here, next to ApiProblem.
__all__ = [
    "ALREADY_EXISTS",
    "BAD_REQUEST",
    "FORBIDDEN",
    "HAS_DEPENDENTS",
    "IDEMPOTENCY_IN_FLIGHT",
    "IDEMPOTENCY_KEY_REUSED",
    "INTERNAL_ERROR",
    "INVALID_CURSOR",
    "MALFORMED_BODY",
    "METHOD_NOT_ALLOWED",
    "NOT_ACCEPTABLE",
    "NOT_FOUND",
    "PAYLOAD_TOO_LARGE",
    "PRECONDITION_FAILED",
    "STORE_UNAVAILABLE",
    "TOO_MANY_REQUESTS",
    "UNAUTHORIZED",
    "UNSUPPORTED_MEDIA_TYPE",
    "VALIDATION_FAILED",
    "ApiProblem",
    "BodyTooLarge",
    "ErrorItem",
    "Problem",
    "ProblemKind",
    "allowed_methods",
    "created_responses",
    "errors_from_pydantic",
    "install_problem_handlers",
    "json_error_position",
    "malformed_body",
    "pointer_for",
    "problem_response",
    "problem_responses",
    "validation_problem",
]

logger = logging.getLogger("portcullis.admin")

_BY_STATUS = {
    k.status: k
    for k in (
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        NOT_ACCEPTABLE,
        PRECONDITION_FAILED,
        PAYLOAD_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        VALIDATION_FAILED,
        TOO_MANY_REQUESTS,
    )
}


class ErrorItem(BaseModel):
    """One validation error: where (JSON pointer into the request body) and what."""

    pointer: str = Field(examples=["#/service"])
    detail: str = Field(examples=["unknown service 'orders'"])


class Problem(BaseModel):
    """RFC 9457 problem details, as documented in the OpenAPI description."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["https://portcullis.dev/problems/not-found"])
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[ErrorItem] | None = None


class ApiProblem(ServiceError):
    """Raised in the admin API's HTTP layer to answer with a problem response.

    The HTTP-only refusals (authentication, media types, body parsing); operations
    raise their `ServiceError` (portcullis.services), which the same handler renders.
    """


class BodyTooLarge(StarletteHTTPException):
    """A request body grew past its endpoint's cap while it was read (admin/body_guard.py).

    An HTTPException, so FastAPI passes it through its body reading untouched.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, detail=f"the request body is larger than this endpoint accepts ({limit} bytes)"
        )
        self.limit = limit

    def response(self, instance: str) -> Response:
        """The 413 problem, naming the limit; the rest of the body is left unread, so the
        connection closes."""
        return problem_response(
            PAYLOAD_TOO_LARGE,
            self.detail,
            instance=instance,
            headers={"connection": "close"},
            max_body_bytes=self.limit,
        )


def malformed_body(what: str, message: str, line: int | None, column: int | None) -> ApiProblem:
    """A 400 for a body that does not parse, with where it stopped (1-based)."""
    where = f" (line {line}, column {column})" if line is not None else ""
    return ApiProblem(MALFORMED_BODY, f"invalid {what}: {message}{where}", line=line, column=column)


def json_error_position(document: str | bytes, pos: int) -> tuple[int, int]:
    """1-based line and column of character offset `pos` in a JSON document."""
    text = document.decode("utf-8", "replace") if isinstance(document, bytes) else document
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def validation_problem(errors: Sequence[tuple[str, str]], detail: str | None = None) -> ApiProblem:
    """A 422 problem from `(pointer, detail)` pairs."""
    refused = invalid(errors, detail)
    return ApiProblem(refused.kind, refused.detail, errors=refused.errors)


def problem_response(
    kind: ProblemKind,
    detail: str | None = None,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> Response:
    if instance is not None:
        # A whole API key pasted into a URL must not come back in the answer.
        instance = redact_keys(instance)
    return Response(
        content=problem_body(kind, detail, instance=instance, **extensions),
        status_code=kind.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=dict(headers or {}),
    )


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI description lists for the path template matching `path`."""
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        app.state, "allowed_methods_table", None
    )
    if table is None:
        table = []
        for template, item in app.openapi().get("paths", {}).items():
            regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            table.append((re.compile(f"^{regex}$"), sorted(m.upper() for m in item)))
        app.state.allowed_methods_table = table
    for pattern, methods in table:
        if pattern.match(path):
            return methods
    return []


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error, expected or not, with problem+json."""

    async def on_problem(request: Request, exc: Exception) -> Response:
        # The one place an operation's refusal (`ServiceError`, `ApiProblem` among them)
        # becomes an HTTP answer.
        assert isinstance(exc, ServiceError)
        return problem_response(
            exc.kind,
            exc.detail,
            instance=request.url.path,
            headers=exc.headers,
            **exc.members,
        )

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        syntax = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if syntax is not None:
            # FastAPI reports where JSON decoding stopped as a character offset in `loc`.
            offset = syntax.get("loc", ("body", 0))[-1]
            line, column = json_error_position(exc.body or "", int(offset))
            message = str(syntax.get("ctx", {}).get("error", "malformed"))
            return await on_problem(request, malformed_body("JSON", message, line, column))
        items = []
        for err in errors:
            loc = tuple(err.get("loc", ()))
            where, rest = (loc[0], loc[1:]) if loc else ("body", ())
            detail = strip_value_error(str(err.get("msg", "invalid")))
            if where == "body":
                items.append({"pointer": pointer_for(rest), "detail": detail})
            else:
                # Query, path and header parameters are not in the body: name them instead.
                name = ".".join(str(p) for p in rest) or str(where)
                items.append({"pointer": "#", "detail": f"{where} parameter {name!r}: {detail}"})
        return problem_response(
            VALIDATION_FAILED,
            f"{len(items)} validation error{'s' if len(items) != 1 else ''}",
            instance=request.url.path,
            errors=items,
        )

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc, BodyTooLarge):
            return exc.response(request.url.path)
        kind = _BY_STATUS.get(exc.status_code) or http_error(exc.status_code)
        detail = exc.detail if isinstance(exc.detail, str) else None
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of one route only; list every route's at this path.
            methods = allowed_methods(app, request.url.path)
            if methods:
                headers["Allow"] = ", ".join(methods)
        return problem_response(kind, detail, instance=request.url.path, headers=headers)

    async def on_store_error(request: Request, exc: Exception) -> Response:
        # Locked, unreachable or not yet migrated: retryable, and not the client's fault.
        logger.warning("store error in the admin API: %s", type(exc).__name__)
        return problem_response(
            STORE_UNAVAILABLE,
            "the store could not be used; try again shortly",
            instance=request.url.path,
            headers={"Retry-After": "5"},
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error in the admin API", exc_info=exc)
        return problem_response(
            INTERNAL_ERROR, "an unexpected error occurred", instance=request.url.path
        )

    app.add_exception_handler(ServiceError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(OperationalError, on_store_error)
    app.add_exception_handler(Exception, on_unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses, all with the Problem schema."""
    descriptions = {
        400: "Bad request (e.g. an invalid cursor or a missing header)",
        401: "Not authenticated",
        403: "Authenticated but not allowed",
        404: "Not found",
        409: "Conflict (duplicate name, dependents, a request in flight, or a config that"
        " other writers kept changing)",
        412: "If-Match does not match the current ETag",
        413: "The request body is larger than the endpoint accepts",
        415: "Unsupported media type",
        422: "Validation failed",
        429: "Too many requests",
    }
    return {
        s: {
            "description": descriptions.get(s, "Error"),
            "model": Problem,
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for s in statuses
    }


def created_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of a create: 201 with `Location`, and the given error statuses."""
    return {
        201: {
            "headers": {
                "Location": {
                    "description": "URL of the created resource",
                    "schema": {"type": "string"},
                }
            }
        },
        **problem_responses(*statuses),
    }
