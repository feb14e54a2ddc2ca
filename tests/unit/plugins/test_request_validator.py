"""request-validator and the sandbox mock at unit level: which description a request is
checked against (a version's route, an API's shared route by `ctx.api_version`, else the
default version), config errors naming the field, the phases each config builds, fail
closed on a description that does not compile, and the mock's environment rule."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace
from typing import Any

import pytest

from portcullis.contract.index import ContractIndex
from portcullis.model.config import GatewayConfig
from portcullis.plugins.base import PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.registry import PLUGINS, build_plugin
from portcullis.plugins.request_validator import RequestValidator, ResponseCheckingValidator
from portcullis.plugins.sandbox_mock import SandboxMock, SandboxMockConfig
from portcullis.runtime.snapshot import build_snapshot
from support.openapi_docs import items_api


def _strict_v2() -> dict[str, Any]:
    """The 3.1 items API with `limit` capped at 10 (v1's cap is 100)."""
    doc = items_api("3.1.0")
    doc["paths"]["/items"]["get"]["parameters"][0]["schema"]["maximum"] = 10
    return doc


def gateway(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "services": [{"name": "shop", "url": "http://127.0.0.1:9/shop"}],
        "routes": [
            {"name": "entry", "service": "shop", "paths": ["/api"]},
            {"name": "fixed", "service": "shop", "paths": ["/v1"]},
            {"name": "health", "service": "shop", "paths": ["=/health"]},
        ],
        "plugins": [{"name": "request-validator", "route": "entry", "config": {}}],
        "apis": [
            {
                "name": "shop",
                "routes": ["entry"],
                "default_version": "v2",
                "versions": [
                    {"name": "v1", "routes": ["fixed"], "openapi": items_api("3.0.3")},
                    {"name": "v2", "openapi": _strict_v2(), "sandbox": {"mock": True}},
                ],
            }
        ],
    }
    config.update(overrides)
    return config


def env_of(config: dict[str, Any]) -> PluginEnv:
    return PluginEnv(contracts=ContractIndex.of(GatewayConfig.model_validate(config)))


def context(
    route: str,
    path: str,
    matched: int,
    *,
    method: str = "GET",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    content_length: int | None = None,
) -> RequestContext:
    scope = {"type": "http", "headers": headers or [(b"x-trace", b"ab")], "query_string": query}
    ctx = RequestContext(
        scope, SimpleNamespace(name=route), method, path, "127.0.0.1", "rid", content_length
    )
    ctx.matched_length = matched
    return ctx


async def refused(plugin: Any, ctx: RequestContext) -> list[str]:
    reply = await plugin.access(ctx)
    if reply is None:
        return []
    return [f"{e['in']} {e['pointer']}" for e in json.loads(reply.body).get("errors", [])]


async def test_a_shared_route_checks_the_selected_version_else_the_default() -> None:
    config = gateway()
    plugin = build_plugin("request-validator", {}, env_of(config))
    default = context("entry", "/api/items", 4, query=b"limit=50")
    assert await refused(plugin, default) == ["query #/limit"]  # v2 (default): max 10
    pinned = context("entry", "/api/items", 4, query=b"limit=50")
    pinned.api_version = "v1"
    assert await refused(plugin, pinned) == []  # v1: max 100
    fixed = context("fixed", "/v1/items", 3, query=b"limit=50")
    fixed.api_version = "v2"  # a version route serves its own version whatever is selected
    assert await refused(plugin, fixed) == []
    # A route that serves no API is left alone (a global instance reaches it).
    assert await plugin.access(context("health", "/health", 7)) is None


async def test_paths_are_matched_as_the_upstream_sees_them() -> None:
    config = gateway()
    config["routes"][0]["strip_path"] = False
    config["routes"][0]["paths"] = ["/items"]
    plugin = build_plugin("request-validator", {}, env_of(config))
    # Not stripped: /items/3 goes upstream as /shop/items/3, the description's /items/3.
    assert await refused(plugin, context("entry", "/items/3", 6)) == []
    reply = await plugin.access(context("entry", "/items/x", 6))
    assert reply is not None
    assert json.loads(reply.body)["errors"][0]["pointer"] == "#/item_id"


def test_a_route_with_the_plugin_needs_a_description() -> None:
    def errors(config: dict[str, Any]) -> str:
        with pytest.raises(ValueError) as info:
            GatewayConfig.model_validate(config)
        return str(info.value)

    plugin = [{"name": "request-validator", "route": "health", "config": {}}]
    assert "plugins[0].route: route 'health' serves no API version" in errors(
        gateway(plugins=plugin)
    )
    config = gateway()
    del config["apis"][0]["versions"][1]["openapi"]
    del config["apis"][0]["versions"][1]["sandbox"]
    assert (
        "plugins[0].route: route 'entry' serves apis[0].versions[1] without a description "
        "(apis[0].versions[1].openapi is not set)"
    ) in errors(config)
    service = [{"name": "request-validator", "service": "shop", "config": {}}]
    assert "plugins[0].service: route 'health' serves no API version" in errors(
        gateway(plugins=service)
    )
    # A global instance applies to the routes that serve an API only.
    GatewayConfig.model_validate(gateway(plugins=[{"name": "request-validator", "config": {}}]))


def test_response_checks_are_a_phase_only_when_asked_for() -> None:
    env = env_of(gateway())
    plain = build_plugin("request-validator", {}, env)
    assert type(plain) is RequestValidator
    assert plain.phases == {"access", "request_body"}
    checking = build_plugin("request-validator", {"validate_responses": True}, env)
    assert type(checking) is ResponseCheckingValidator
    assert "response_body" in checking.phases


async def test_a_description_that_does_not_compile_fails_closed() -> None:
    config = gateway()
    broken = copy.deepcopy(items_api("3.1.0"))
    broken["components"]["schemas"]["Item"]["properties"]["name"] = {"type": "strange"}
    config["apis"][0]["versions"][0]["openapi"] = broken
    plugin = build_plugin("request-validator", {}, env_of(config))
    reply = await plugin.access(context("fixed", "/v1/items", 3))
    assert reply is not None
    assert reply.status == 500
    assert "could not be compiled" in json.loads(reply.body)["detail"]


async def test_the_mock_answers_requests_marked_sandbox_only() -> None:
    # The version step (runtime/versions.py) marks sandbox requests: the mock answers those.
    mock = SandboxMock(SandboxMockConfig(), env_of(gateway()))
    ctx = context("entry", "/api/items/4", 4)
    assert await mock.access(ctx) is None
    ctx = context("entry", "/api/items/4", 4)
    ctx.sandbox = True
    reply = await mock.access(ctx)
    assert isinstance(reply, PluginResponse)
    assert reply.status == 200
    # v1 (the fixed route, and a shared-route request selecting it) has no mock.
    ctx = context("fixed", "/v1/items/4", 3)
    ctx.sandbox = True
    assert await mock.access(ctx) is None
    # With a body, the answer waits for the request_body phase (after validation).
    ctx = context("entry", "/api/items", 4, method="POST", content_length=2)
    ctx.sandbox = True
    assert await mock.access(ctx) is None
    reply = mock.request_body(ctx, b"{}")
    assert isinstance(reply, PluginResponse)
    assert reply.status == 201


def test_the_snapshot_adds_the_mock_to_routes_of_mocked_versions_only() -> None:
    snapshot = build_snapshot(GatewayConfig.model_validate(gateway()), 1)

    def access_chain(path: str) -> list[str]:
        match = snapshot.router.match("GET", "", path, [])
        assert match is not None
        return [p.name for p in match.payload.chain.access]

    # (api-version and api-version-consumer: the version steps, runtime/versions.py.)
    assert access_chain("/api/items") == [
        "api-version",
        "api-version-consumer",
        "request-validator",
        "sandbox-mock",
    ]
    assert access_chain("/v1/items") == ["api-version"]
    assert access_chain("/health") == []


async def test_bodies_too_large_to_check_are_refused_and_smaller_ones_bounded() -> None:
    plugin = build_plugin("request-validator", {"max_body_bytes": 64}, env_of(gateway()))
    json_type = [(b"content-type", b"application/json")]
    big = context("fixed", "/v1/items", 3, method="POST", headers=json_type, content_length=65)
    reply = await plugin.access(big)
    assert reply is not None
    assert reply.status == 413
    # A chunked body is counted by the proxy against the lowered limit.
    chunked = context(
        "fixed",
        "/v1/items",
        3,
        method="POST",
        headers=[*json_type, (b"transfer-encoding", b"chunked")],
    )
    assert await plugin.access(chunked) is None
    assert chunked.body_limit == 64
    small = context("fixed", "/v1/items", 3, method="POST", headers=json_type, content_length=10)
    small.body_limit = 8
    assert await plugin.access(small) is None
    assert small.body_limit == 8  # a lower limit set earlier is kept


async def test_a_body_needs_a_content_type_and_a_required_body_must_be_there() -> None:
    plugin = build_plugin("request-validator", {}, env_of(gateway()))
    untyped = context("fixed", "/v1/items", 3, method="POST", headers=[], content_length=2)
    assert await refused(plugin, untyped) == ["header #/content-type"]
    empty = context("fixed", "/v1/items", 3, method="POST", headers=[], content_length=0)
    assert await refused(plugin, empty) == ["body #"]
    body_checks_off = build_plugin("request-validator", {"body": False}, env_of(gateway()))
    assert await refused(body_checks_off, empty) == []


def test_validation_and_mocks_run_after_auth_and_limits_and_before_the_cache() -> None:
    config = gateway(
        consumers=[{"username": "app"}],
        plugins=[
            {"name": name, "route": "entry", "config": cfg}
            for name, cfg in [
                ("response-cache", {}),
                ("request-validator", {}),
                ("rate-limit", {"limits": [{"limit": 5, "period": "1m"}]}),
                ("acl", {"allow": ["staff"]}),
            ]
        ],
    )
    snapshot = build_snapshot(GatewayConfig.model_validate(config), 1)
    match = snapshot.router.match("GET", "", "/api/items", [])
    assert match is not None
    # (Auth plugins need the worker's credential services to build: compared by priority.)
    assert min(PLUGINS["key-auth"].priority, PLUGINS["jwt-auth"].priority) > max(
        PLUGINS["acl"].priority, PLUGINS["rate-limit"].priority, PLUGINS["plan-limits"].priority
    )
    assert PLUGINS["plan-limits"].priority > RequestValidator.priority > SandboxMock.priority
    assert [p.name for p in match.payload.chain.access] == [
        "api-version",
        "api-version-consumer",
        "acl",
        "rate-limit",
        "request-validator",
        "sandbox-mock",
        "response-cache",
    ]


async def test_the_mock_answers_another_documented_status_when_preferred() -> None:
    mock = SandboxMock(SandboxMockConfig(), env_of(gateway()))

    async def answer(prefer: bytes | None) -> PluginResponse:
        headers = [(b"prefer", prefer)] if prefer is not None else []
        ctx = context("entry", "/api/items/4", 4, headers=headers)
        ctx.sandbox = True
        reply = await mock.access(ctx)
        assert isinstance(reply, PluginResponse)
        return reply

    assert (await answer(None)).status == 200
    not_found = await answer(b"code=404")
    assert (not_found.status, not_found.body, not_found.headers) == (404, b"", [])
    assert (await answer(b'respond-async, code="404"; wait=1')).status == 404
    assert (await answer(b"code=418")).status == 200  # undocumented: the default answer
