from __future__ import annotations

import pytest
from pydantic import ValidationError

from portcullis.model import GatewayConfig, PathMatcher, Route, Service, Target, Upstream


def test_path_matcher_kinds() -> None:
    assert PathMatcher.parse("/api") == PathMatcher(kind="prefix", value="/api")
    assert PathMatcher.parse("=/health") == PathMatcher(kind="exact", value="/health")
    assert PathMatcher.parse(r"~^/u/(?P<id>\d+)$").kind == "regex"
    with pytest.raises(ValueError, match="must start with"):
        PathMatcher.parse("api")
    with pytest.raises(ValueError, match="invalid regex"):
        PathMatcher.parse("~(")


def test_service_needs_exactly_one_of_url_and_upstream() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        Service(name="s")
    with pytest.raises(ValidationError, match="exactly one"):
        Service(name="s", url="http://a:1", upstream="u")
    with pytest.raises(ValidationError, match="absolute"):
        Service(name="s", url="ftp://a")
    assert Service(name="s", url="http://a:81/x").url == "http://a:81/x"


def test_service_url_with_credentials_is_refused() -> None:
    # The proxy never sends user-info, and URLs are exported and audited in clear.
    for url in ("http://user:pw@10.0.0.1:8080", "https://token@api.example.com/v1"):
        with pytest.raises(ValidationError, match="must not carry credentials"):
            Service(name="s", url=url)
    assert Service(name="s", url="http://10.0.0.1:8080/v1").url == "http://10.0.0.1:8080/v1"


def test_target_format() -> None:
    assert Target(target="[::1]:80").host == "::1"
    assert Target(target="h:8080").port == 8080
    for bad in ("h", "h:0", "h:70000", "::1:80", ":80"):
        with pytest.raises(ValidationError):
            Target(target=bad)


def test_route_validation() -> None:
    r = Route(
        name="r", service="s", methods=["get"], hosts=["API.example.com"], headers={"X-V": ["1"]}
    )
    assert r.methods == ["GET"]
    assert r.hosts == ["api.example.com"]
    assert r.headers == {"x-v": ["1"]}
    with pytest.raises(ValidationError, match="unknown HTTP method"):
        Route(name="r", service="s", methods=["FETCH"])
    with pytest.raises(ValidationError, match="invalid host"):
        Route(name="r", service="s", hosts=["bad host"])
    with pytest.raises(ValidationError):
        Route(name="r", service="s", paths=[])
    with pytest.raises(ValidationError, match="host"):
        Route(name="r", service="s", headers={"host": ["x"]})


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        Route.model_validate({"name": "r", "service": "s", "pathz": ["/"]})


def test_cross_references_are_checked_with_locations() -> None:
    with pytest.raises(ValidationError) as info:
        GatewayConfig.model_validate(
            {
                "services": [{"name": "s", "upstream": "missing"}],
                "routes": [
                    {"name": "r", "service": "s"},
                    {"name": "r", "service": "nope"},
                ],
                "plugins": [{"name": "request-size-limit", "route": "ghost", "config": {}}],
            }
        )
    text = str(info.value)
    assert "services[0].upstream: unknown upstream 'missing'" in text
    assert "routes[1].name: duplicate name 'r'" in text
    assert "routes[1].service: unknown service 'nope'" in text
    assert "plugins[0].route: unknown route 'ghost'" in text
    assert "plugins[0].config.max_bytes: Field required" in text


def test_unknown_plugin_is_an_error() -> None:
    with pytest.raises(ValidationError, match="unknown plugin 'nope'"):
        GatewayConfig.model_validate({"plugins": [{"name": "nope"}]})


def test_upstream_rules() -> None:
    with pytest.raises(ValidationError, match="hash_on_header"):
        Upstream(name="u", hash_on="header")
    with pytest.raises(ValidationError, match="duplicate target"):
        Upstream(name="u", targets=[Target(target="a:1"), Target(target="a:1")])


def test_plugin_scope() -> None:
    cfg = GatewayConfig.model_validate(
        {
            "services": [{"name": "s", "url": "http://a:1"}],
            "plugins": [{"name": "request-size-limit", "service": "s", "config": {"max_bytes": 1}}],
        }
    )
    assert cfg.plugins[0].scope == ("service", "s")
