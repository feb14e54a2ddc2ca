"""A version's OpenAPI description as a client sees it through the gateway.

The imported description is the upstream's contract; what a client talks to differs:

- **servers** are the gateway's public proxy URL plus each route's path prefix when
  the route strips it (`/v2` + the upstream's `/items` is `/v2/items`), or the public
  URL alone when it does not (then only the paths under the prefix are reachable, and
  only those are published). An exact route (`=/p`) is a prefix that matches one path.
  A regex route cannot be a server URL: without `strip_path` its client paths are the
  upstream's, so the public URL serves; with `strip_path` the stripped part is whatever
  the regex matched, which no server URL can express, so such a route adds no server
  (`x-portcullis-unpublished-routes` names it). The description's paths are taken as
  relative to the service's URL, its path included. A route restricted to exact hosts
  is served on each of them (the public URL's scheme, port and path); a wildcard host
  names no one URL, so the public URL stands for it.
- **security** comes from the auth plugins that apply to the routes (a route's own, its
  service's, the global ones; the most specific instance of a name wins, as in the
  data plane): key-auth gives an `apiKey` scheme per header it reads (`authorization`
  is the Bearer scheme) and for its query parameter; jwt-auth gives an http bearer JWT
  scheme (or apiKey for another header, cookie or query parameter) and, when it takes
  the gateway's own tokens, OAuth2 client credentials at the built-in token URL with
  the scopes the route's acl requires; basic-auth http basic, mtls-auth `mutualTLS`,
  hmac-auth an apiKey scheme on the `Signature` header (OpenAPI has no type for HTTP
  message signatures). A plugin with an `anonymous` consumer makes the
  credential optional. The upstream's own schemes are replaced: the gateway is what a
  client authenticates with.
- **responses** the gateway itself gives, as `components/responses/Gateway<status>`
  (all `application/problem+json`, RFC 9457): 400 (a route refusing encoded slashes),
  401 (auth plugins), 403 (auth, acl, ip-restriction), 410 (a version with a sunset
  or brownouts), 413 (request-size-limit), 429 with `RateLimit`, `RateLimit-Policy`
  and `Retry-After` (rate-limit, plan-limits; successful responses then carry the two
  RateLimit fields as well), and 502/503/504 (upstream failures, shedding). A response
  the upstream already documents for a status is kept.
- on an API with shared routes, operations take the optional version-selection header
  and query parameter (`Api.selection`), with this version as their one value.
- a **deprecated** version's operations are `deprecated: true`, its responses carry
  `Deprecation` and `Sunset`, and `info` carries `x-deprecated-at`, `x-sunset` and
  `x-successor`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from portcullis.model.apis import Api, ApiVersion, VersionStatus
from portcullis.model.config import GatewayConfig, PluginInstance, Route
from portcullis.model.plugins.acl import AclConfig
from portcullis.model.plugins.jwt_auth import JwtAuthConfig
from portcullis.model.plugins.key_auth import KeyAuthConfig
from portcullis.model.plugins.plan_limits import PlanLimitsConfig
from portcullis.model.plugins.rate_limit import RateLimitConfig

TOKEN_PATH = "/oauth/token"  # noqa: S105 (identity/oauth_server.py's path, a URL)
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PROBLEM_SCHEMA = "GatewayProblem"
_TOP_LEVEL_ORDER = ("openapi", "info", "jsonSchemaDialect", "servers", "security", "tags", "paths")
_AUTH_PLUGINS = ("key-auth", "jwt-auth", "basic-auth", "hmac-auth", "mtls-auth")
# basic-auth, hmac-auth, mtls-auth: one fixed scheme each (OpenAPI has no type for HTTP
# message signatures: the Signature header stands for them, described).
_FIXED_SCHEMES: dict[str, tuple[str, dict[str, Any]]] = {
    "basic-auth": ("BasicAuth", {"type": "http", "scheme": "basic"}),
    "hmac-auth": (
        "HttpMessageSignature",
        {
            "type": "apiKey",
            "in": "header",
            "name": "Signature",
            "description": "An RFC 9421 HTTP message signature (hmac-sha256) with its "
            "Signature-Input: see the 401's Accept-Signature for the components to cover",
        },
    ),
    "mtls-auth": ("MutualTLS", {"type": "mutualTLS", "description": "A TLS client certificate"}),
}
_FORBIDDING_PLUGINS = ("acl", "ip-restriction")
_LIMIT_PLUGINS = ("rate-limit", "plan-limits")


@dataclass(frozen=True, slots=True)
class Gateway:
    """Where clients reach the gateway: the proxy's public URL and the OAuth2 server's."""

    proxy_url: str
    oauth_url: str


def effective_plugins(config: GatewayConfig, route: Route) -> dict[str, PluginInstance]:
    """The enabled plugins that run on `route`, by name: route beats service beats global
    (the data plane's rule, runtime/snapshot.py `_chains`)."""
    merged: dict[str, PluginInstance] = {}
    for scope in (("global", None), ("service", route.service), ("route", route.name)):
        for inst in config.plugins:
            if inst.enabled and inst.scope == scope:
                merged[inst.name] = inst
    return merged


@dataclass(slots=True)
class _Surface:
    """What the routes of a version add to its description."""

    servers: list[dict[str, Any]] = field(default_factory=list)
    prefixes: list[str | None] = field(default_factory=list)  # None: every path
    unpublished: list[str] = field(default_factory=list)
    schemes: dict[str, dict[str, Any]] = field(default_factory=dict)
    requirements: list[dict[str, list[str]]] = field(default_factory=list)
    optional: bool = False
    authenticated: bool = False
    forbidding: bool = False
    limited: bool = False
    limit_headers: bool = False
    size_limited: bool = False
    rejects_encoded: bool = False

    def server(self, url: str, description: str) -> None:
        if all(s["url"] != url for s in self.servers):
            self.servers.append({"url": url, "description": description})

    def require(self, requirement: dict[str, list[str]]) -> None:
        if requirement not in self.requirements:
            self.requirements.append(requirement)


def _routes_of(config: GatewayConfig, api: Api, version: ApiVersion) -> list[Route]:
    by_name = {r.name: r for r in config.routes}
    return [by_name[n] for n in [*version.routes, *api.routes] if n in by_name]


def _bases(route: Route, base: str) -> list[str]:
    """The public URL(s) a route answers on: the public proxy URL, or, for a route
    restricted to exact hosts, each host with the public URL's scheme, port and path
    (a wildcard host names no one URL: the public URL stands for it)."""
    exact = [h for h in route.hosts if "*" not in h]
    if not exact or len(exact) < len(route.hosts):
        return [base]
    parts = urlsplit(base)
    port = f":{parts.port}" if parts.port is not None else ""
    return [f"{parts.scheme}://{host}{port}{parts.path}" for host in exact]


def _add_servers(surface: _Surface, route: Route, base: str) -> None:
    where = f"route {route.name}"
    for url in _bases(route, base):
        for matcher in route.path_matchers:
            if matcher.kind == "regex":
                if route.strip_path:
                    surface.unpublished.append(route.name)
                    continue
                surface.server(url, where)
                surface.prefixes.append(None)
                continue
            prefix = matcher.value.rstrip("/")
            if route.strip_path:
                surface.server(url + prefix, where)
                surface.prefixes.append(None)
            else:
                surface.server(url, where)
                surface.prefixes.append(prefix or None)


def _add_key_auth(surface: _Surface, config: KeyAuthConfig) -> None:
    for header in config.header_names:
        if header == "authorization":
            name, scheme = (
                "ApiKeyBearer",
                {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Your API key as a Bearer token",
                },
            )
        else:
            name, scheme = (
                f"ApiKey-{header}",
                {
                    "type": "apiKey",
                    "in": "header",
                    "name": header,
                    "description": "Your API key",
                },
            )
        surface.schemes[name] = scheme
        surface.require({name: []})
    if config.query_param is not None:
        name = f"ApiKeyQuery-{config.query_param}"
        surface.schemes[name] = {"type": "apiKey", "in": "query", "name": config.query_param}
        surface.require({name: []})
    surface.optional |= config.anonymous is not None


def _add_jwt_auth(
    surface: _Surface, config: JwtAuthConfig, scopes: list[str], gateway: Gateway
) -> None:
    if config.header == "authorization":
        name, scheme = "BearerJwt", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    else:
        name, scheme = (
            f"Jwt-{config.header}",
            {"type": "apiKey", "in": "header", "name": config.header},
        )
    surface.schemes[name] = scheme
    surface.require({name: []})
    for where, value in (("cookie", config.cookie), ("query", config.query_param)):
        if value is not None:
            key = f"Jwt-{where}-{value}"
            surface.schemes[key] = {"type": "apiKey", "in": where, "name": value}
            surface.require({key: []})
    if config.gateway_tokens and config.header == "authorization":
        existing = surface.schemes.get("GatewayOAuth2")
        known = dict(existing["flows"]["clientCredentials"]["scopes"]) if existing else {}
        known.update({s: f"scope {s}" for s in scopes})
        surface.schemes["GatewayOAuth2"] = {
            "type": "oauth2",
            "description": "Access tokens of the gateway's OAuth2 server (client credentials)",
            "flows": {
                "clientCredentials": {
                    "tokenUrl": gateway.oauth_url.rstrip("/") + TOKEN_PATH,
                    "scopes": known,
                }
            },
        }
        surface.require({"GatewayOAuth2": sorted(scopes)})
    surface.optional |= config.anonymous is not None


def _surface(config: GatewayConfig, routes: Iterable[Route], gateway: Gateway) -> _Surface:
    surface = _Surface()
    base = gateway.proxy_url.rstrip("/")
    for route in routes:
        _add_servers(surface, route, base)
        plugins = effective_plugins(config, route)
        acl = plugins.get("acl")
        scopes = (
            list(AclConfig.model_validate(acl.config).required_scopes) if acl is not None else []
        )
        for name, inst in plugins.items():
            if name == "key-auth":
                _add_key_auth(surface, KeyAuthConfig.model_validate(inst.config))
            elif name == "jwt-auth":
                _add_jwt_auth(surface, JwtAuthConfig.model_validate(inst.config), scopes, gateway)
            elif name in _FIXED_SCHEMES:
                scheme_name, scheme = _FIXED_SCHEMES[name]
                surface.schemes[scheme_name] = scheme
                surface.require({scheme_name: []})
                surface.optional |= inst.config.get("anonymous") is not None
            elif name == "rate-limit":
                surface.limit_headers |= RateLimitConfig.model_validate(inst.config).headers
            elif name == "plan-limits":
                surface.limit_headers |= PlanLimitsConfig.model_validate(inst.config).headers
        surface.authenticated |= any(n in plugins for n in _AUTH_PLUGINS)
        surface.forbidding |= any(n in plugins for n in _FORBIDDING_PLUGINS)
        surface.limited |= any(n in plugins for n in _LIMIT_PLUGINS)
        surface.size_limited |= "request-size-limit" in plugins
        surface.rejects_encoded |= route.encoded_slashes == "reject"
    return surface


_PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
}
_HEADERS = {
    "RateLimit": {
        "description": "Remaining quota of the policy closest to its limit "
        '(draft-ietf-httpapi-ratelimit-headers), e.g. `"default";r=42;t=17`',
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": 'The quota policies that apply, e.g. `"default";q=100;w=60`',
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Deprecation": {
        "description": "This version is deprecated (RFC 9745): when, as `@<epoch seconds>`",
        "schema": {"type": "string"},
    },
    "Sunset": {
        "description": "When this version stops being served (RFC 8594, an HTTP-date)",
        "schema": {"type": "string"},
    },
}


def _problem_response(description: str, headers: list[str]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {
            "application/problem+json": {
                "schema": {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA}"}
            }
        },
    }
    if headers:
        response["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in headers}
    return response


def _gateway_responses(surface: _Surface, version: ApiVersion) -> dict[str, dict[str, Any]]:
    """The responses the gateway itself may give on the version's routes, by status."""
    out: dict[str, dict[str, Any]] = {}
    if surface.rejects_encoded:
        out["400"] = _problem_response(
            "The request target is malformed (e.g. an encoded slash in the path)", []
        )
    if surface.authenticated:
        out["401"] = _problem_response("No valid credential (the gateway's auth plugins)", [])
    if surface.forbidding or surface.authenticated:
        out["403"] = _problem_response("The credential may not call this", [])
    if (
        version.sunset_at is not None
        or version.brownouts
        or version.status is VersionStatus.retired
    ):
        out["410"] = _problem_response(
            "This version is past its sunset (or in a brownout before it): use its successor", []
        )
    if surface.size_limited:
        out["413"] = _problem_response("The request body is too large", [])
    if surface.limited:
        headers = ["Retry-After"] + (
            ["RateLimit", "RateLimit-Policy"] if surface.limit_headers else []
        )
        out["429"] = _problem_response("A rate limit or quota is exhausted", headers)
    out["502"] = _problem_response("The upstream failed to answer", [])
    out["503"] = _problem_response(
        "No healthy upstream, an open circuit breaker, or the gateway sheds load", ["Retry-After"]
    )
    out["504"] = _problem_response("The upstream did not answer in time", [])
    return out


def _selection_parameters(
    config: GatewayConfig, api: Api, version: ApiVersion
) -> dict[str, dict[str, Any]]:
    """The header and query parameter that pick this version on the API's shared routes
    (`selection`), when it has any: optional, since the consumer's pin or the default
    version apply without them."""
    if not any(r.name in api.routes for r in config.routes):
        return {}
    default = " (the default when none is sent)" if api.default_version == version.name else ""
    description = (
        f"Selects version {version.name} on the API's shared routes{default}; a consumer "
        "pinned to a version gets it when none is sent"
    )
    schema = {"type": "string", "enum": [version.name]}
    out: dict[str, dict[str, Any]] = {}
    if api.selection.header is not None:
        out["ApiVersionHeader"] = {
            "name": api.selection.header,
            "in": "header",
            "required": False,
            "description": description,
            "schema": schema,
        }
    if api.selection.query is not None:
        out["ApiVersionQuery"] = {
            "name": api.selection.query,
            "in": "query",
            "required": False,
            "description": description,
            "schema": schema,
        }
    return out


def _reachable(path: str, prefixes: list[str | None]) -> bool:
    return any(p is None or path == p or path.startswith(p + "/") for p in prefixes)


def publish(
    config: GatewayConfig, api: Api, version: ApiVersion, gateway: Gateway
) -> dict[str, Any]:
    """The description of `api` `version` as a client of the gateway sees it (see the
    module docstring); the version must have an `openapi` description."""
    if version.openapi is None:
        raise ValueError(f"api {api.name!r} version {version.name!r} has no description")
    doc = copy.deepcopy(version.openapi)
    surface = _surface(config, _routes_of(config, api, version), gateway)
    doc["servers"] = surface.servers
    if surface.unpublished:
        doc["x-portcullis-unpublished-routes"] = sorted(set(surface.unpublished))
    paths = doc.get("paths") or {}
    if surface.prefixes:
        doc["paths"] = paths = {
            p: item for p, item in paths.items() if _reachable(p, surface.prefixes)
        }
    components = doc.setdefault("components", {})
    deprecated = version.status in (VersionStatus.deprecated, VersionStatus.retired)
    success_headers: list[str] = []
    if surface.limit_headers:
        success_headers += ["RateLimit", "RateLimit-Policy"]
    if version.deprecated_at is not None:
        success_headers.append("Deprecation")
    if version.sunset_at is not None:
        success_headers.append("Sunset")
    gateway_responses = _gateway_responses(surface, version)
    selectors = _selection_parameters(config, api, version)
    if selectors:
        components.setdefault("parameters", {}).update(selectors)
    used_headers = [h for r in gateway_responses.values() for h in r.get("headers", {})]
    used_headers += success_headers
    components.setdefault("responses", {}).update(
        {f"Gateway{status}": response for status, response in gateway_responses.items()}
    )
    components.setdefault("schemas", {})[PROBLEM_SCHEMA] = _PROBLEM
    for item in paths.values():
        if not isinstance(item, dict):
            continue
        for method in METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            operation.pop("security", None)
            if deprecated:
                operation["deprecated"] = True
            if selectors:
                operation["parameters"] = [
                    *operation.get("parameters", []),
                    *({"$ref": f"#/components/parameters/{n}"} for n in selectors),
                ]
            responses = operation.setdefault("responses", {})
            for status in gateway_responses:
                responses.setdefault(status, {"$ref": f"#/components/responses/Gateway{status}"})
            for status, response in responses.items():
                if str(status).startswith("2") and isinstance(response, dict) and success_headers:
                    headers = response.setdefault("headers", {})
                    for h in success_headers:
                        headers.setdefault(h, {"$ref": f"#/components/headers/{h}"})
    if used_headers:
        components.setdefault("headers", {}).update({h: _HEADERS[h] for h in used_headers})
    if not components.get("responses"):
        components.pop("responses", None)
    components.pop("securitySchemes", None)
    doc.pop("security", None)
    if surface.schemes:
        components["securitySchemes"] = surface.schemes
        doc["security"] = surface.requirements + ([{}] if surface.optional else [])
    else:
        doc["security"] = []  # said outright: the gateway asks no credential
    info = doc.setdefault("info", {})
    if api.title:
        info["title"] = api.title
    info["x-api"] = api.name
    info["x-api-version"] = version.name
    info["x-status"] = version.status.value
    if version.deprecated_at is not None:
        info["x-deprecated-at"] = version.deprecated_at.isoformat()
    if version.sunset_at is not None:
        info["x-sunset"] = version.sunset_at.isoformat()
    if version.successor is not None:
        info["x-successor"] = version.successor
    # The store keeps documents with sorted keys; a reader expects the usual order.
    first = [k for k in _TOP_LEVEL_ORDER if k in doc]
    return {**{k: doc[k] for k in first}, **{k: v for k, v in doc.items() if k not in first}}
