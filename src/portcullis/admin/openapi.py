"""The OpenAPI 3.1 description of the control plane, completed where FastAPI leaves gaps.

FastAPI documents validation errors as its own `HTTPValidationError` JSON; the
admin API answers with problem details instead, so every error response is
rewritten to `application/problem+json` with the `Problem` schema. The result is
computed once and cached.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from portcullis.admin.body_guard import DEFAULT_MAX_BODY_BYTES, MAX_BODY_EXTENSION
from portcullis.admin.idempotency import EXCLUDED_PATHS, HEADER, MAX_KEY_LENGTH, RETENTION
from portcullis.admin.plugin_schemas import discriminate_plugin_instances
from portcullis.admin.problems import ErrorItem, Problem
from portcullis.admin.strict_json import is_json_media_type
from portcullis.problems import PROBLEM_CONTENT_TYPE

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
OAUTH_PREFIXES = ("/oauth/", "/.well-known/")
OAUTH_SCHEMAS: dict[str, Any] = {
    "OAuthError": {
        "type": "object",
        "description": "RFC 6749 §5.2 error response",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "error_description": {"type": "string"},
        },
    },
    "OAuthToken": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in"],
        "properties": {
            "access_token": {"type": "string"},
            "token_type": {"type": "string", "const": "Bearer"},
            "expires_in": {"type": "integer"},
            "scope": {"type": "string"},
        },
    },
    "OAuthIntrospection": {
        "type": "object",
        "required": ["active"],
        "properties": {"active": {"type": "boolean"}},
        "additionalProperties": True,
    },
}
_DESCRIPTION = """\
* **Errors** are RFC 9457 problem details (`application/problem+json`); validation
  errors (422) list `errors: [{pointer, detail}]` with JSON pointers into the body.
* **Lists** use cursor pagination: pass `limit`, then follow `next` (also sent as a
  `Link: <…>; rel="next"` header). `sort=-field,other` and field/tag filters apply.
* **Concurrency**: reads return an `ETag`; send it back in `If-Match` on PUT, PATCH and
  DELETE to get 412 instead of overwriting someone else's change.
  Changes are applied against the config version they were computed on; when another
  writer changed the config meanwhile the change is recomputed (and re-checked) on the
  new config, and only if that keeps failing is the answer a 409 to retry.
* **PATCH** bodies are JSON Merge Patch (RFC 7396).
* **Bodies** are read only from authenticated callers (an anonymous request to an
  endpoint that needs a token is 401 before its body is read), must be JSON where the
  operation takes JSON (415 otherwise) and at most 1 MiB unless the operation says
  otherwise (`x-max-body-bytes`; 413 otherwise). JSON that does not parse is a 400
  naming the line and column; values must have their JSON type (`"true"` is not a
  boolean, `"5"` not a number): 422 otherwise.
* **Organizations**: services, upstreams, routes, consumers and plugin instances may
  belong to an organization (`organization`). Admins limited to an organization see
  only its entities (others are 404), create into it (another one is 403) and may only
  reference its entities; filter with `?organization=`. For them the config export is
  filtered and import, diff, versions and rollback are 403.
* **Idempotency**: POST accepts an `Idempotency-Key` header; a retry with the same key
  and body replays the first response, a different body is 422, and a retry while
  the first is still running is 409. Keys are scoped per caller and endpoint and
  kept for 24 hours.
* **Rate limits**: each credential and each client address has a token bucket (per
  control-plane process); over it, 429 with `Retry-After`. `RateLimit-Policy` and
  `RateLimit` headers on every response say how much is left.
* **Auth**: `Authorization: Bearer <token>` with an access token from
  `POST /admin/v1/auth/login` or an admin API token (`pca_…`).
"""


def _fix_responses(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if "requestBody" in operation:
        # A body that is not decodable at all (not UTF-8, not JSON) is a 400.
        responses.setdefault("400", {"description": "The body could not be parsed"})
        # Enforced before the body is read (admin/body_guard.py).
        limit = operation.get(MAX_BODY_EXTENSION, DEFAULT_MAX_BODY_BYTES)
        responses.setdefault(
            "413", {"description": f"The body is larger than this endpoint accepts ({limit} bytes)"}
        )
        media_types = list(operation["requestBody"].get("content", {}))
        if media_types and all(is_json_media_type(m) for m in media_types):
            responses.setdefault("415", {"description": "The body is not JSON"})
    for status, response in responses.items():
        if not status.isdigit() or int(status) < 400:
            continue
        response["content"] = {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_REF}}
        if status == "422":
            response["description"] = "Validation failed"


RATE_LIMIT_HEADERS: dict[str, Any] = {
    "RateLimit-Policy": {
        "description": 'Rate-limit policies: `"caller";q=<burst>;w=<seconds to refill>`'
        ' (per credential) and `"ip"` (per client address)',
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": "Requests left now (`r`) per policy and seconds (`t`) until more"
        " quota (the next token), on every status",
        "schema": {"type": "string"},
    },
}


def _document_rate_limits(operation: dict[str, Any]) -> None:
    """Every admin API operation may answer 429 and reports its limits in headers."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    limited = responses.setdefault("429", {"description": "Too many requests"})
    limited["description"] = (
        "Too many requests: a per-credential or per-IP rate limit (problem type quota-exceeded,"
        " `violated-policies` names it), or a login lockout"
    )
    limited["headers"] = {
        **limited.get("headers", {}),
        "Retry-After": {
            "description": "Seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 0},
        },
    }
    for status, response in responses.items():
        if status[:1] in "2345":
            response["headers"] = {**RATE_LIMIT_HEADERS, **response.get("headers", {})}


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


def _distinct_titles(components: dict[str, Any]) -> None:
    """Give schemas that share a title a title of their own, from the component name
    (`PluginConfig.rate-limit.Algorithm` -> `PluginConfig rate-limit Algorithm`).

    Client generators name their classes by title: openapi-python-client leaves the second
    `Algorithm` (the balancer's and rate-limit's enums) or `HeaderOps` (the request and
    response transformers', even alike) out of the client."""
    by_title: defaultdict[str, list[str]] = defaultdict(list)
    for name, schema in components.items():
        if isinstance(schema.get("title"), str):
            by_title[schema["title"]].append(name)
    for names in by_title.values():
        if len(names) < 2:
            continue
        for name in names:
            parts = re.split(r"\.|__", name.removeprefix("portcullis__"))
            components[name]["title"] = " ".join(parts)


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=_DESCRIPTION,
        routes=app.routes,
        webhooks=app.webhooks.routes,
        tags=[
            {"name": "Services"},
            {"name": "Upstreams"},
            {"name": "Targets"},
            {"name": "Routes"},
            {"name": "Consumers"},
            {"name": "API keys"},
            {"name": "OAuth clients"},
            {"name": "OAuth signing keys"},
            {"name": "Plugin instances"},
            {"name": "Plans"},
            {"name": "Boosts"},
            {"name": "Overrides"},
            {"name": "Usage"},
            {"name": "Config"},
            {"name": "Auth"},
            {"name": "Admin users"},
            {"name": "API tokens"},
            {"name": "Organizations"},
            {"name": "Audit log"},
            {"name": "Data plane"},
            {"name": "OAuth 2.0"},
            {"name": "Plugin schemas"},
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
    for webhook in schema.get("webhooks", {}).values():
        for operation in webhook.values():
            # FastAPI gives each a 422 of its (removed) HTTPValidationError: what a receiver
            # answers is described in docs/webhooks.md, not by a schema of ours.
            operation.get("responses", {}).pop("422", None)
    components.update(OAUTH_SCHEMAS)
    discriminate_plugin_instances(components)
    _distinct_titles(components)
    for path, path_item in schema.get("paths", {}).items():
        if path.startswith(OAUTH_PREFIXES):
            continue  # OAuth's own conventions (routers/oauth.py): no problem details
        for method, operation in path_item.items():
            if method == "post" and path.startswith("/admin/v1/"):
                _document_idempotency(path, operation)
            if method in ("get", "put", "post", "patch", "delete"):
                if path.startswith("/admin/v1/"):
                    _document_rate_limits(operation)
                _fix_responses(operation)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve the completed description at /openapi.json (built on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
