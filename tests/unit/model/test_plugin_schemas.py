"""Plugin schemas: validated by the model without handlers, and each schema's
`references` hook feeding the tenancy rule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import Field, ValidationError

from portcullis.model.config import GatewayConfig
from portcullis.model.plugins.base import PluginConfig, Reference
from portcullis.model.plugins.plan_limits import PlanLimitsConfig
from portcullis.model.plugins.registry import SCHEMAS, plugin_references, validate_plugin
from portcullis.model.tenancy import names


def test_marked_fields_are_the_default_references() -> None:
    config = {"default_plan": "gold", "headers": True}
    assert PlanLimitsConfig.references(config, None) == [("default_plan", "plans", "gold")]
    assert plugin_references("plan-limits", config) == [("default_plan", "plans", "gold")]
    assert plugin_references("jwt-auth", {"anonymous": "guest"}) == [
        ("anonymous", "consumers", "guest")
    ]
    assert plugin_references("no-such-plugin", {"anonymous": "guest"}) == []


def test_a_non_string_value_is_left_to_validation() -> None:
    assert PlanLimitsConfig.references({"default_plan": 3}, None) == []


class _Listed(PluginConfig):
    """Names consumers in a list: the hook says so, the default scan could not."""

    consumers: list[str] = []
    fallback: str | None = None

    @classmethod
    def references(cls, config: Mapping[str, Any], gateway: object) -> list[Reference]:
        found = super().references(config, gateway)
        found += [(f"consumers[{i}]", "consumers", n) for i, n in enumerate(config["consumers"])]
        return found


def _gateway(plugin: dict[str, Any]) -> dict[str, Any]:
    return {
        "consumers": [{"username": "alice"}, {"username": "bob", "organization": "acme"}],
        "plugins": [plugin],
    }


def test_a_schemas_own_hook_feeds_the_tenancy_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SCHEMAS, "listed", _Listed)
    GatewayConfig.model_validate(_gateway({"name": "listed", "config": {"consumers": ["alice"]}}))
    with pytest.raises(ValidationError) as caught:
        GatewayConfig.model_validate(
            _gateway({"name": "listed", "config": {"consumers": ["alice", "bob", "carol"]}})
        )
    message = str(caught.value)
    assert "plugins[0].config.consumers[1]: consumer 'bob' belongs to organization 'acme'" in (
        message
    )
    assert "plugins[0].config.consumers[2]: unknown consumer 'carol'" in message


class _Marked(PluginConfig):
    fallback: str | None = Field(default=None, json_schema_extra=names("consumers"))


def test_the_default_hook_reads_names_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SCHEMAS, "marked", _Marked)
    with pytest.raises(ValidationError, match=r"plugins\[0\]\.config\.fallback: unknown consumer"):
        GatewayConfig.model_validate(_gateway({"name": "marked", "config": {"fallback": "zed"}}))


def test_the_model_validates_a_plugin_against_its_schema_only() -> None:
    assert validate_plugin("request-termination", {"status_code": 418}) == []
    assert validate_plugin("request-termination", {"status_code": 99}) == [
        "config.status_code: Input should be greater than or equal to 200"
    ]
    (unknown,) = validate_plugin("no-such-plugin", {})
    assert unknown.startswith(
        "name: unknown plugin 'no-such-plugin' (known: acl, basic-auth, cors,"
    )
