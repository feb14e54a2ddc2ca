"""The `apis` entity: versions, lifecycle dates and the names an API writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from portcullis.model.apis import Api, ApiVersion, VersionStatus
from portcullis.model.config import GatewayConfig
from portcullis.model.loader import ConfigError, load_config_text


def config(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "services": [{"name": "svc", "url": "http://up.invalid"}],
        "routes": [
            {"name": "r1", "service": "svc", "paths": ["/v1"]},
            {"name": "r2", "service": "svc", "paths": ["/v2"]},
        ],
    }
    return base | extra


def two_versions(**v1: Any) -> dict[str, Any]:
    return {
        "name": "orders",
        "default_version": "v2",
        "versions": [
            {"name": "v1", "routes": ["r1"], **v1},
            {"name": "v2", "routes": ["r2"]},
        ],
    }


def test_an_api_with_two_versions_validates() -> None:
    cfg = GatewayConfig.model_validate(config(apis=[two_versions(successor="v2")]))
    api = cfg.apis[0]
    assert [v.name for v in api.versions] == ["v1", "v2"]
    assert api.version("v1") is not None
    assert api.version("v9") is None
    assert api.selection.header == "Api-Version"


def test_sunset_before_deprecation_is_refused() -> None:
    with pytest.raises(ValueError, match="RFC 8594"):
        ApiVersion(
            name="v1",
            status=VersionStatus.deprecated,
            deprecated_at=datetime(2027, 1, 2, tzinfo=UTC),
            sunset_at=datetime(2027, 1, 1, tzinfo=UTC),
        )


def test_a_deprecated_version_needs_its_deprecation_date() -> None:
    with pytest.raises(ValueError, match="needs deprecated_at"):
        ApiVersion(name="v1", status=VersionStatus.deprecated)


def test_brownouts_end_by_the_sunset() -> None:
    with pytest.raises(ValueError, match=r"brownouts\[0\] ends after sunset_at"):
        ApiVersion.model_validate(
            {
                "name": "v1",
                "sunset_at": "2027-01-01T00:00:00Z",
                "brownouts": [
                    {"start": "2026-12-31T00:00:00Z", "end": "2027-01-02T00:00:00Z", "share": 0.5}
                ],
            }
        )


def test_the_sunset_has_passed_once_it_is_reached_or_the_version_is_retired() -> None:
    v = ApiVersion.model_validate({"name": "v1", "sunset_at": "2027-01-01T00:00:00Z"})
    assert not v.sunset_passed(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert v.sunset_passed(datetime(2027, 1, 1, tzinfo=UTC))
    assert ApiVersion(name="v0", status=VersionStatus.retired).sunset_passed(
        datetime(2000, 1, 1, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("api", "message"),
    [
        ({"name": "a", "versions": [{"name": "v1"}, {"name": "v1"}]}, "duplicate version 'v1'"),
        ({"name": "a", "default_version": "v9", "versions": [{"name": "v1"}]}, "unknown version"),
        ({"name": "a", "versions": [{"name": "v1", "successor": "v9"}]}, "unknown version 'v9'"),
        ({"name": "a", "versions": []}, "at least 1"),
        ({"name": "a", "versions": [{"name": "v1", "sandbox": {}}]}, "either a service or mock"),
    ],
)
def test_an_api_that_contradicts_itself_is_refused(api: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Api.model_validate(api)


def test_a_route_serves_at_most_one_version() -> None:
    api = two_versions()
    api["versions"][1]["routes"] = ["r1"]
    with pytest.raises(ConfigError) as info:
        load_config_text(_yaml(config(apis=[api])), source="f.yaml")
    assert "apis[0].versions[1].routes[0] (line 1): route 'r1' already serves orders v1" in str(
        info.value
    )


def test_names_an_api_writes_resolve_within_its_organization() -> None:
    cfg = config(apis=[{**two_versions(), "organization": "acme"}])
    with pytest.raises(ConfigError) as info:
        load_config_text(_yaml(cfg), source="f.yaml")
    text = str(info.value)
    # The routes are the operator's: an organization's API cannot claim their traffic.
    assert (
        "apis[0].versions[0].routes[0] (line 1): unknown route 'r1' in organization 'acme'" in text
    )


def test_a_consumer_pins_a_version_of_an_api_that_exists() -> None:
    ok = config(
        apis=[two_versions()], consumers=[{"username": "c", "api_versions": {"orders": "v1"}}]
    )
    assert GatewayConfig.model_validate(ok).consumers[0].api_versions == {"orders": "v1"}
    bad = config(
        apis=[two_versions()], consumers=[{"username": "c", "api_versions": {"orders": "v7"}}]
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(_yaml(bad), source="f.yaml")
    assert "consumers[0].api_versions.orders (line 1): api 'orders' has no version 'v7'" in str(
        info.value
    )
    missing = config(consumers=[{"username": "c", "api_versions": {"nope": "v1"}}])
    with pytest.raises(ConfigError) as info:
        load_config_text(_yaml(missing), source="f.yaml")
    assert "unknown api 'nope'" in str(info.value)


def test_the_example_config_publishes_the_demo_api() -> None:
    from pathlib import Path

    from portcullis.model.loader import load_config_file

    cfg = load_config_file(Path(__file__).parents[3] / "examples" / "gateway.yaml")
    demo = next(a for a in cfg.apis if a.name == "demo")
    v1, v2 = demo.version("v1"), demo.version("v2")
    assert v1 is not None
    assert v1.status is VersionStatus.deprecated
    assert v1.sunset_at is not None
    assert v2 is not None
    assert v2.status is VersionStatus.stable


def _yaml(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data)  # JSON is YAML
