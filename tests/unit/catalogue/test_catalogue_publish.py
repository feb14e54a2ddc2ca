"""The published description: servers from the routes, security from the auth plugins,
the gateway's own responses and headers, deprecation."""

from __future__ import annotations

import copy
from typing import Any

from openapi_spec_validator import validate

from portcullis.catalogue.publish import Gateway, publish
from portcullis.model.config import GatewayConfig
from portcullis.model.loader import load_config_data

GATEWAY = Gateway("https://api.example.com", "https://admin.example.com")
DOC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Pets", "version": "1"},
    "paths": {
        "/pets": {"get": {"responses": {"200": {"description": "ok"}}, "security": [{"up": []}]}},
        "/v1/pets": {"get": {"responses": {"200": {"description": "ok"}}}},
    },
    "components": {"securitySchemes": {"up": {"type": "http", "scheme": "basic"}}},
    "security": [{"up": []}],
}


def _config(
    routes: list[dict[str, Any]], plugins: list[dict[str, Any]] | None = None, **version: Any
) -> GatewayConfig:
    return load_config_data(
        {
            "services": [{"name": "pets", "url": "http://pets.internal"}],
            "routes": [{"service": "pets", **r} for r in routes],
            "plugins": plugins or [],
            "apis": [
                {
                    "name": "pets",
                    "title": "Pet store",
                    "versions": [
                        {
                            "name": "v1",
                            "routes": [r["name"] for r in routes],
                            "openapi": copy.deepcopy(DOC),
                            **version,
                        }
                    ],
                }
            ],
        }
    )


def _published(config: GatewayConfig) -> dict[str, Any]:
    api = config.apis[0]
    document = publish(config, api, api.versions[0], GATEWAY)
    validate(document)
    return document


def test_servers_follow_the_route_prefix_and_strip_path() -> None:
    stripped = _published(_config([{"name": "r", "paths": ["/v1/", "/pets-api"]}]))
    assert [s["url"] for s in stripped["servers"]] == [
        "https://api.example.com/v1",
        "https://api.example.com/pets-api",
    ]
    assert set(stripped["paths"]) == {"/pets", "/v1/pets"}
    kept = _published(_config([{"name": "r", "paths": ["/v1"], "strip_path": False}]))
    assert [s["url"] for s in kept["servers"]] == ["https://api.example.com"]
    assert set(kept["paths"]) == {"/v1/pets"}  # only what the route's prefix reaches


def test_a_regex_route_that_strips_cannot_be_a_server() -> None:
    regex = _published(_config([{"name": "r", "paths": ["~^/p(?P<n>[0-9]+)"]}]))
    assert regex["servers"] == []
    assert regex["x-portcullis-unpublished-routes"] == ["r"]
    kept = _published(_config([{"name": "r", "paths": ["~^/v1/pets$"], "strip_path": False}]))
    assert [s["url"] for s in kept["servers"]] == ["https://api.example.com"]


def test_key_auth_gives_api_key_schemes_and_the_gateways_responses() -> None:
    document = _published(
        _config(
            [{"name": "r", "paths": ["/v1"]}],
            [
                {
                    "name": "key-auth",
                    "route": "r",
                    "config": {"header_names": ["authorization", "X-Key"], "query_param": "k"},
                }
            ],
        )
    )
    schemes = document["components"]["securitySchemes"]
    assert schemes == {
        "ApiKeyBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "Your API key as a Bearer token",
        },
        "ApiKey-x-key": {
            "type": "apiKey",
            "in": "header",
            "name": "x-key",
            "description": "Your API key",
        },
        "ApiKeyQuery-k": {"type": "apiKey", "in": "query", "name": "k"},
    }
    assert document["security"] == [
        {"ApiKeyBearer": []},
        {"ApiKey-x-key": []},
        {"ApiKeyQuery-k": []},
    ]
    operation = document["paths"]["/pets"]["get"]
    assert "security" not in operation  # the upstream's own scheme is gone
    assert set(operation["responses"]) == {"200", "400", "401", "403", "502", "503", "504"}
    assert operation["responses"]["401"] == {"$ref": "#/components/responses/Gateway401"}
    assert document["components"]["responses"]["Gateway401"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/GatewayProblem"}}
    }


def test_an_anonymous_consumer_makes_the_credential_optional() -> None:
    data = _config([{"name": "r", "paths": ["/v1"]}]).canonical()
    data["consumers"] = [{"username": "guest"}]
    data["plugins"] = [{"name": "key-auth", "route": "r", "config": {"anonymous": "guest"}}]
    document = _published(load_config_data(data))
    assert document["security"][-1] == {}


def test_basic_hmac_and_mtls_auth_give_their_schemes() -> None:
    routes = [{"name": n, "paths": [f"/{n}"]} for n in ("b", "h", "m")]
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    plugins = [
        {"name": "basic-auth", "route": "b", "config": {}},
        {"name": "hmac-auth", "route": "h", "config": {}},
        {"name": "mtls-auth", "route": "m", "config": {"ca_certificates": ca}},
    ]
    document = _published(_config(routes, plugins))
    schemes = document["components"]["securitySchemes"]
    assert schemes["BasicAuth"] == {"type": "http", "scheme": "basic"}
    assert schemes["HttpMessageSignature"]["name"] == "Signature"
    assert schemes["MutualTLS"]["type"] == "mutualTLS"
    assert {"BasicAuth": []} in document["security"]


def test_jwt_auth_gives_bearer_jwt_and_the_gateways_oauth2_with_acl_scopes() -> None:
    document = _published(
        _config(
            [{"name": "r", "paths": ["/v1"]}],
            [
                {"name": "jwt-auth", "service": "pets", "config": {}},
                {"name": "acl", "route": "r", "config": {"required_scopes": ["pets:read"]}},
            ],
        )
    )
    schemes = document["components"]["securitySchemes"]
    assert schemes["BearerJwt"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    flow = schemes["GatewayOAuth2"]["flows"]["clientCredentials"]
    assert flow == {
        "tokenUrl": "https://admin.example.com/oauth/token",
        "scopes": {"pets:read": "scope pets:read"},
    }
    assert {"GatewayOAuth2": ["pets:read"]} in document["security"]


def test_limits_add_429_with_ratelimit_headers_and_headers_on_success() -> None:
    document = _published(
        _config(
            [{"name": "r", "paths": ["/v1"]}],
            [{"name": "rate-limit", "config": {"limits": [{"limit": 10, "period": "1m"}]}}],
        )
    )
    responses = document["paths"]["/pets"]["get"]["responses"]
    assert responses["429"] == {"$ref": "#/components/responses/Gateway429"}
    too_many = document["components"]["responses"]["Gateway429"]
    assert set(too_many["headers"]) == {"Retry-After", "RateLimit", "RateLimit-Policy"}
    assert set(responses["200"]["headers"]) == {"RateLimit", "RateLimit-Policy"}
    assert set(document["components"]["headers"]) == {
        "Retry-After",
        "RateLimit",
        "RateLimit-Policy",
    }
    assert "401" not in responses
    assert document["security"] == []


def test_a_disabled_or_overridden_plugin_does_not_count() -> None:
    document = _published(
        _config(
            [{"name": "r", "paths": ["/v1"], "encoded_slashes": "keep"}],
            [
                {
                    "name": "rate-limit",
                    "enabled": False,
                    "config": {"limits": [{"limit": 1, "period": 1}]},
                },
                {"name": "key-auth", "config": {"header_names": ["x-global"]}},
                {"name": "key-auth", "route": "r", "config": {"header_names": ["x-route"]}},
            ],
        )
    )
    assert list(document["components"]["securitySchemes"]) == ["ApiKey-x-route"]
    responses = document["paths"]["/pets"]["get"]["responses"]
    assert "429" not in responses
    assert "400" not in responses  # encoded slashes are kept, not refused


def test_a_deprecated_version_flags_operations_and_announces_its_sunset() -> None:
    document = _published(
        _config(
            [{"name": "r", "paths": ["/v1"]}],
            status="deprecated",
            deprecated_at="2026-06-01T00:00:00Z",
            sunset_at="2027-06-01T00:00:00Z",
        )
    )
    operation = document["paths"]["/pets"]["get"]
    assert operation["deprecated"] is True
    assert set(operation["responses"]["200"]["headers"]) == {"Deprecation", "Sunset"}
    assert operation["responses"]["410"] == {"$ref": "#/components/responses/Gateway410"}
    assert document["info"]["x-sunset"] == "2027-06-01T00:00:00+00:00"
    assert document["info"]["title"] == "Pet store"
    assert list(document)[:3] == ["openapi", "info", "servers"]


def test_shared_routes_add_the_version_selection_parameters() -> None:
    data = _config([{"name": "r", "paths": ["/v1"]}]).canonical()
    data["routes"].append({"name": "shared", "service": "pets", "paths": ["/pets-api"]})
    api = data["apis"][0]
    api["routes"] = ["shared"]
    api["default_version"] = "v1"
    api["selection"] = {"header": "Api-Version", "query": "api-version"}
    document = _published(load_config_data(data))
    assert [s["url"] for s in document["servers"]] == [
        "https://api.example.com/v1",
        "https://api.example.com/pets-api",
    ]
    parameters = document["components"]["parameters"]
    assert parameters["ApiVersionHeader"]["name"] == "Api-Version"
    assert parameters["ApiVersionHeader"]["schema"] == {"type": "string", "enum": ["v1"]}
    assert parameters["ApiVersionQuery"]["in"] == "query"
    assert document["paths"]["/pets"]["get"]["parameters"] == [
        {"$ref": "#/components/parameters/ApiVersionHeader"},
        {"$ref": "#/components/parameters/ApiVersionQuery"},
    ]
    # Without shared routes a version is chosen by its path: no parameter.
    assert (
        "parameters"
        not in _published(_config([{"name": "r", "paths": ["/v1"]}]))["paths"]["/pets"]["get"]
    )


def test_a_route_for_exact_hosts_is_served_on_each_host() -> None:
    hosts = _published(
        _config([{"name": "r", "paths": ["/v1"], "hosts": ["pets.example.com", "p.example.org"]}])
    )
    assert [s["url"] for s in hosts["servers"]] == [
        "https://pets.example.com/v1",
        "https://p.example.org/v1",
    ]
    wildcard = _published(_config([{"name": "r", "paths": ["/v1"], "hosts": ["*.example.com"]}]))
    assert [s["url"] for s in wildcard["servers"]] == ["https://api.example.com/v1"]
