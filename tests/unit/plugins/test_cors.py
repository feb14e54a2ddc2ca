"""cors: origin validation and wildcard patterns, preflights answered at the gateway (204 or
a 403 that says why), grants on actual requests through ctx.response_headers, Vary, the
credentials rules, and upstream Access-Control-* headers being replaced."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

import pytest

from portcullis.model.plugins.cors import CorsConfig
from portcullis.model.plugins.registry import validate_plugin
from portcullis.plugins.base import Headers, PluginResponse, RequestContext
from portcullis.plugins.cors import Cors
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.registry import PLUGINS, build_plugin

APP = "https://app.example.com"


def cors(**config: Any) -> Cors:
    plugin = build_plugin("cors", config, PluginEnv())
    assert isinstance(plugin, Cors)
    return plugin


def context(
    method: str = "GET", headers: Headers | None = None, route_methods: list[str] | None = None
) -> RequestContext:
    route = SimpleNamespace(route=SimpleNamespace(methods=route_methods or []))
    return RequestContext(
        {"type": "http", "headers": headers or []},
        cast(Any, route),
        method,
        "/",
        "127.0.0.1",
        "rid",
        None,
    )


def preflight(
    origin: str = APP, method: str = "PUT", request_headers: str | None = None
) -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", origin.encode()), (b"access-control-request-method", method.encode())]
    if request_headers is not None:
        headers.append((b"access-control-request-headers", request_headers.encode()))
    return headers


def header(headers: Headers, name: str) -> str | None:
    values = [v.decode() for n, v in headers if n == name.encode()]
    assert len(values) <= 1, f"{name} appears {len(values)} times"
    return values[0] if values else None


def refused(reply: PluginResponse | None) -> str:
    assert reply is not None
    assert reply.status == 403
    assert header(reply.headers, "content-type") == "application/problem+json"
    assert header(reply.headers, "access-control-allow-origin") is None
    body: dict[str, Any] = json.loads(reply.body)
    assert body["status"] == 403
    detail: str = body["detail"]
    return detail


def test_registered_first_in_the_chain() -> None:
    assert PLUGINS["cors"] is Cors
    assert Cors.priority == max(cls.priority for cls in PLUGINS.values())


@pytest.mark.parametrize(
    ("origins", "error"),
    [
        ([], "at least 1"),
        (["null"], "'null' is refused"),
        (["app.example.com"], "is not an origin"),
        (["https://app.example.com/path"], "no path"),
        (["https://user@app.example.com"], "no path, query, fragment or user info"),
        (["https://*.com"], "two labels or more"),
        (["https://api.*.example.com"], "invalid host label"),
        (["https://*"], "two labels or more"),
        (["https://a.example.com:99999"], "invalid port"),
        (["*", APP], "must be the only entry"),
        (["https://exa mple.com"], "invalid host label"),
    ],
)
def test_origin_errors(origins: list[str], error: str) -> None:
    errors = validate_plugin("cors", {"origins": origins})
    assert len(errors) == 1, errors
    assert error in errors[0]


def test_origins_are_normalised() -> None:
    config = CorsConfig.model_validate(
        {
            "origins": [
                "HTTPS://App.Example.com:443/",
                "http://localhost:8080",
                "http://[::1]:80",
                "https://app.example.com",
            ]
        }
    )
    assert config.origins == ["https://app.example.com", "http://localhost:8080", "http://[::1]"]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"origins": ["*"]}, "origins"),
        ({"origins": [APP], "methods": ["*"]}, "methods"),
        ({"origins": [APP], "headers": ["*"]}, "headers"),
        ({"origins": [APP], "exposed_headers": ["*"]}, "exposed_headers"),
    ],
)
def test_star_with_credentials_is_refused(config: dict[str, Any], field: str) -> None:
    errors = validate_plugin("cors", {**config, "credentials": True})
    assert len(errors) == 1
    assert f"'*' in {field} cannot be used with credentials" in errors[0]
    assert validate_plugin("cors", config) == []


def test_other_config_errors() -> None:
    assert (
        "unknown HTTP method" in validate_plugin("cors", {"origins": [APP], "methods": ["GO"]})[0]
    )
    assert (
        "invalid header name" in validate_plugin("cors", {"origins": [APP], "headers": ["a b"]})[0]
    )
    assert "less than or equal" in validate_plugin("cors", {"origins": [APP], "max_age": 10**6})[0]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://a.example.com", True),
        ("https://A.Example.COM", True),
        ("https://a.b.example.com", True),
        ("https://example.com", False),
        ("https://evil-example.com", False),
        ("https://a.example.com.evil.net", False),
        ("http://a.example.com", False),
        ("https://a.example.com:8443", False),
        ("https://-a.example.com", False),
        ("http://localhost:3000", True),
        ("http://localhost", True),
        ("http://localhost:3000/", False),
        ("https://exact.test", True),
        ("https://exact.test.evil", False),
        ("https://xexact.test", False),
    ],
)
def test_origin_patterns(origin: str, allowed: bool) -> None:
    plugin = cors(origins=["https://*.example.com", "http://localhost:*", "https://exact.test"])
    assert plugin.origin_allowed(origin.encode()) is allowed


async def test_preflight_is_answered_with_204_and_the_grant() -> None:
    plugin = cors(
        origins=[APP],
        methods=["GET", "PUT"],
        headers=["Content-Type", "Authorization"],
        exposed_headers=["X-Total"],
        credentials=True,
        max_age=600,
    )
    ctx = context("OPTIONS", preflight(request_headers="content-type, Authorization"))
    reply = await plugin.access(ctx)
    assert reply is not None
    assert reply.status == 204
    assert reply.body == b""
    h = reply.headers
    assert header(h, "access-control-allow-origin") == APP
    assert header(h, "access-control-allow-credentials") == "true"
    assert header(h, "access-control-allow-methods") == "GET, PUT"
    assert header(h, "access-control-allow-headers") == "content-type, authorization"
    assert header(h, "access-control-max-age") == "600"
    assert header(h, "access-control-expose-headers") == "x-total"
    assert "Origin" in (header(h, "vary") or "")
    # The proxy adds ctx.response_headers to plugin replies: nothing may be doubled.
    assert ctx.response_headers == []


async def test_preflight_reflects_requested_headers_when_unrestricted() -> None:
    plugin = cors(origins=["*"])
    reply = await plugin.access(context("OPTIONS", preflight(request_headers="X-One,  x-two")))
    assert reply is not None
    assert reply.status == 204
    assert header(reply.headers, "access-control-allow-origin") == "*"
    assert header(reply.headers, "access-control-allow-headers") == "x-one, x-two"
    assert header(reply.headers, "access-control-allow-credentials") is None
    assert header(reply.headers, "access-control-max-age") is None


async def test_refused_preflights_say_why() -> None:
    plugin = cors(origins=[APP], methods=["GET", "PUT"], headers=["content-type"])
    assert "Origin 'https://evil.test'" in refused(
        await plugin.access(context("OPTIONS", preflight(origin="https://evil.test")))
    )
    assert "Method 'DELETE'" in refused(
        await plugin.access(context("OPTIONS", preflight(method="DELETE")))
    )
    assert "x-secret" in refused(
        await plugin.access(context("OPTIONS", preflight(request_headers="content-type,x-secret")))
    )


async def test_preflight_for_a_method_the_route_does_not_accept_is_refused() -> None:
    plugin = cors(origins=[APP])
    ctx = context("OPTIONS", preflight(method="PUT"), route_methods=["GET", "OPTIONS"])
    assert "Method 'PUT'" in refused(await plugin.access(ctx))
    ok = context("OPTIONS", preflight(method="GET"), route_methods=["GET", "OPTIONS"])
    reply = await plugin.access(ok)
    assert reply is not None
    assert reply.status == 204


async def test_preflight_continue_proxies_with_the_grant() -> None:
    plugin = cors(origins=[APP], preflight_continue=True)
    ctx = context("OPTIONS", preflight())
    assert await plugin.access(ctx) is None
    assert header(ctx.response_headers, "access-control-allow-origin") == APP
    assert header(ctx.response_headers, "access-control-allow-methods") is not None


async def test_plain_options_is_not_a_preflight() -> None:
    plugin = cors(origins=[APP])
    ctx = context("OPTIONS", [(b"origin", APP.encode())])
    assert await plugin.access(ctx) is None
    assert header(ctx.response_headers, "access-control-allow-origin") == APP


async def test_actual_request_gets_the_grant_in_response_headers() -> None:
    plugin = cors(origins=[APP], credentials=True, exposed_headers=["X-Total", "ETag"])
    ctx = context("POST", [(b"origin", APP.encode())])
    assert await plugin.access(ctx) is None
    h = ctx.response_headers
    assert header(h, "access-control-allow-origin") == APP
    assert header(h, "access-control-allow-credentials") == "true"
    assert header(h, "access-control-expose-headers") == "x-total, etag"
    assert header(h, "vary") == "Origin"


async def test_disallowed_origin_passes_without_a_grant() -> None:
    plugin = cors(origins=[APP])
    ctx = context("GET", [(b"origin", b"https://evil.test")])
    assert await plugin.access(ctx) is None
    assert ctx.response_headers == [(b"vary", b"Origin")]


async def test_vary_without_origin_unless_the_grant_never_varies() -> None:
    ctx = context("GET")
    assert await cors(origins=[APP]).access(ctx) is None
    assert ctx.response_headers == [(b"vary", b"Origin")]
    star = context("GET", [(b"origin", APP.encode())])
    assert await cors(origins=["*"]).access(star) is None
    assert star.response_headers == [(b"access-control-allow-origin", b"*")]
    none = context("GET")
    assert await cors(origins=["*"]).access(none) is None
    assert none.response_headers == []


async def test_upstream_access_control_headers_are_replaced() -> None:
    plugin = cors(origins=[APP])
    ctx = context("GET", [(b"origin", APP.encode())])
    await plugin.access(ctx)
    headers: Headers = [
        (b"content-type", b"application/json"),
        (b"access-control-allow-origin", b"*"),
        (b"access-control-allow-credentials", b"true"),
        *ctx.response_headers,
    ]
    plugin.response(ctx, 200, headers)
    assert header(headers, "access-control-allow-origin") == APP
    assert header(headers, "access-control-allow-credentials") is None
    assert header(headers, "content-type") == "application/json"
    untouched: Headers = [(b"content-type", b"text/plain")]
    plugin.response(ctx, 200, untouched)
    assert untouched == [(b"content-type", b"text/plain")]
