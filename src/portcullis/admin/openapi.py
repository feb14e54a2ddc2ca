"""The OpenAPI 3.1 description of the control plane, completed where FastAPI leaves gaps.

FastAPI documents validation errors as its own `HTTPValidationError` JSON; the
admin API answers with problem details instead, so every error response is
rewritten to `application/problem+json` with the `Problem` schema. The result is
computed once and cached.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from portcullis.admin.idempotency import EXCLUDED_PATHS, HEADER, MAX_KEY_LENGTH, RETENTION
from portcullis.admin.problems import ErrorItem, Problem
from portcullis.problems import PROBLEM_CONTENT_TYPE

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_DESCRIPTION = """\
* **Errors** are RFC 9457 problem details (`application/problem+json`); validation
  errors (422) list `errors: [{pointer, detail}]` with JSON pointers into the body.
* **Lists** use cursor pagination: pass `limit`, then follow `next` (also sent as a
  `Link: <…>; rel="next"` header). `sort=-field,other` and field/tag filters apply.
* **Concurrency**: reads return an `ETag`; send it back in `If-Match` on PUT, PATCH and
  DELETE to get 412 instead of overwriting someone else's change.
* **PATCH** bodies are JSON Merge Patch (RFC 7396).
* **Idempotency**: POST accepts an `Idempotency-Key` header; a retry with the same key
  and body replays the first response, a different body is 422, and a retry while
  the first is still running is 409. Keys are scoped per caller and endpoint and
  kept for 24 hours.
* **Auth**: `Authorization: Bearer <token>` with an access token from
  `POST /admin/v1/auth/login` or an admin API token (`pca_…`).
"""


def _fix_responses(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if "requestBody" in operation:
        # A body that is not decodable at all (not UTF-8, not JSON) is a 400.
        responses.setdefault("400", {"description": "The body could not be parsed"})
    for status, response in responses.items():
        if not status.isdigit() or int(status) < 400:
            continue
        response["content"] = {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_REF}}
        if status == "422":
            response["description"] = "Validation failed"


def _document_idempotency(path: str, operation: dict[str, Any]) -> None:
    if path in EXCLUDED_PATHS:
        return
    operation.setdefault("parameters", []).append(
        {
            "name": HEADER,
            "in": "header",
            "required": False,
            "description": "Makes a retry safe: the same key and body replay the first response"
            f" (kept {int(RETENTION.total_seconds() // 3600)} h, per caller and endpoint);"
            " another body is 422, a retry while the first runs is 409.",
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
        }
    )
    responses = operation.setdefault("responses", {})
    for status, text in (
        ("400", "Bad request"),
        ("409", "Conflict"),
        ("422", "Validation failed"),
    ):
        responses.setdefault(status, {"description": text})


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=_DESCRIPTION,
        routes=app.routes,
        tags=[
            {"name": "Services"},
            {"name": "Upstreams"},
            {"name": "Targets"},
            {"name": "Routes"},
            {"name": "Consumers"},
            {"name": "Plugin instances"},
            {"name": "Config"},
            {"name": "Auth"},
            {"name": "Admin users"},
            {"name": "API tokens"},
            {"name": "Organizations"},
            {"name": "Audit log"},
            {"name": "Health"},
        ],
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    problem.pop("$defs", None)
    components["Problem"] = problem
    components["ErrorItem"] = ErrorItem.model_json_schema()
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for path, path_item in schema.get("paths", {}).items():
        for method, operation in path_item.items():
            if method == "post" and path.startswith("/admin/v1/"):
                _document_idempotency(path, operation)
            if method in ("get", "put", "post", "patch", "delete"):
                _fix_responses(operation)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve the completed description at /openapi.json (built on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
