"""The tenancy rule (model/tenancy.py): every name an entry writes resolves within its
organization, or to an operator-owned plan (the one shared kind).

Each case names another organization's entity where the config accepted it before the
rule: a name inside a plugin config, a traffic rule's target, a consumer's plan, a
plugin instance's scope. The error is located at the field and reads exactly like a
name that does not exist at all (nothing to learn about other tenants).
"""

from __future__ import annotations

from typing import Any

import pytest

from portcullis.model.config import GatewayConfig
from portcullis.model.loader import ConfigError, load_config_data
from portcullis.model.tenancy import resolves


def two_tenants(**extra: list[dict[str, Any]]) -> dict[str, Any]:
    """acme and globex, each with a service, a route, a consumer and a plan; plus the
    operator's service, route, consumer and (shared) plan."""
    data: dict[str, list[dict[str, Any]]] = {
        "services": [
            {"name": "acme-svc", "url": "http://127.0.0.1:9", "organization": "acme"},
            {"name": "globex-svc", "url": "http://127.0.0.1:9", "organization": "globex"},
            {"name": "shared-svc", "url": "http://127.0.0.1:9"},
        ],
        "routes": [
            {"name": "acme-r", "service": "acme-svc", "organization": "acme"},
            {"name": "globex-r", "service": "globex-svc", "organization": "globex"},
            {"name": "ops-r", "service": "shared-svc"},
        ],
        "consumers": [
            {"username": "alice", "organization": "acme"},
            {"username": "bob", "organization": "globex"},
            {"username": "ops"},
        ],
        "plans": [
            {"name": "acme-gold", "organization": "acme", "limits": [_limit()]},
            {"name": "globex-gold", "organization": "globex", "limits": [_limit()]},
            {"name": "free", "limits": [_limit()]},
        ],
    }
    for kind, entries in extra.items():
        data[kind] = data.get(kind, []) + entries
    return data


def _limit() -> dict[str, Any]:
    return {"limit": 10, "period": "1m"}


def errors_of(data: dict[str, Any]) -> set[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config_data(data)
    return {(i.location, i.message) for i in info.value.errors}


def test_the_two_tenants_base_is_valid() -> None:
    GatewayConfig.model_validate(two_tenants())


@pytest.mark.parametrize("plugin", ["key-auth", "jwt-auth"])
def test_an_auth_plugins_anonymous_consumer_resolves_in_its_organization(plugin: str) -> None:
    foreign = two_tenants(
        plugins=[{"name": plugin, "route": "acme-r", "config": {"anonymous": "bob"}}]
    )
    missing = two_tenants(
        plugins=[{"name": plugin, "route": "acme-r", "config": {"anonymous": "nobody"}}]
    )
    assert errors_of(foreign) == {
        ("plugins[0].config.anonymous", "unknown consumer 'bob' in organization 'acme'")
    }
    # Another tenant's consumer and no consumer at all are told apart by nothing.
    assert errors_of(missing) == {
        ("plugins[0].config.anonymous", "unknown consumer 'nobody' in organization 'acme'")
    }
    own = two_tenants(
        plugins=[{"name": plugin, "route": "acme-r", "config": {"anonymous": "alice"}}]
    )
    GatewayConfig.model_validate(own)


def test_an_instance_with_an_organization_names_in_it_whatever_route_it_is_on() -> None:
    def on_globex(anonymous: str) -> dict[str, Any]:
        return two_tenants(
            plugins=[
                {
                    "name": "key-auth",
                    "route": "globex-r",
                    "organization": "acme",
                    "config": {"anonymous": anonymous},
                }
            ]
        )

    assert errors_of(on_globex("bob")) == {
        ("plugins[0].config.anonymous", "unknown consumer 'bob' in organization 'acme'")
    }
    # Wiring across organizations is the operator's to do (the names inside stay acme's).
    GatewayConfig.model_validate(on_globex("alice"))


def test_a_global_operator_instance_names_the_operators_consumers() -> None:
    data = two_tenants(plugins=[{"name": "key-auth", "config": {"anonymous": "alice"}}])
    assert errors_of(data) == {
        (
            "plugins[0].config.anonymous",
            "consumer 'alice' belongs to organization 'acme'; an entity without an "
            "organization may only name the operator's",
        )
    }
    GatewayConfig.model_validate(
        two_tenants(plugins=[{"name": "key-auth", "config": {"anonymous": "ops"}}])
    )


def test_default_plan_resolves_in_the_instances_organization_or_to_a_shared_plan() -> None:
    def with_default(plan: str) -> dict[str, Any]:
        return two_tenants(
            plugins=[{"name": "plan-limits", "route": "acme-r", "config": {"default_plan": plan}}]
        )

    assert errors_of(with_default("globex-gold")) == {
        ("plugins[0].config.default_plan", "unknown plan 'globex-gold' in organization 'acme'")
    }
    GatewayConfig.model_validate(with_default("acme-gold"))
    GatewayConfig.model_validate(with_default("free"))  # the operator's plan is shared


def test_traffic_rules_name_their_own_organizations_consumers_routes_and_plans() -> None:
    data = two_tenants(
        consumers=[{"username": "alice2", "organization": "acme", "plan": "globex-gold"}],
        plans=[
            {
                "name": "acme-route-plan",
                "organization": "acme",
                "route_overrides": {"globex-r": {"limits": []}},
            }
        ],
        boosts=[
            {
                "name": "b1",
                "organization": "acme",
                "multiplier": 2,
                "starts_at": "2026-01-01T00:00:00Z",
                "ends_at": "2026-01-02T00:00:00Z",
                "target": {"consumer": "bob"},
            },
            {
                "name": "b2",
                "organization": "acme",
                "multiplier": 2,
                "starts_at": "2026-01-01T00:00:00Z",
                "ends_at": "2026-01-02T00:00:00Z",
                "target": {"route": "ops-r"},
            },
        ],
        overrides=[
            {
                "name": "o1",
                "organization": "acme",
                "consumer": "bob",
                "multiplier": 0.5,
                "expires_at": "2099-01-01T00:00:00Z",
                "reason": "r",
            }
        ],
    )
    assert errors_of(data) == {
        ("consumers[3].plan", "unknown plan 'globex-gold' in organization 'acme'"),
        ("plans[3].route_overrides.globex-r", "unknown route 'globex-r' in organization 'acme'"),
        ("boosts[0].target.consumer", "unknown consumer 'bob' in organization 'acme'"),
        # Routes are never shared by name: a boost of the operator's route raises everyone's.
        ("boosts[1].target.route", "unknown route 'ops-r' in organization 'acme'"),
        ("overrides[0].consumer", "unknown consumer 'bob' in organization 'acme'"),
    }


def test_the_wiring_of_entities_needs_only_to_exist() -> None:
    data = two_tenants(
        routes=[
            {"name": "acme-on-globex", "service": "globex-svc", "organization": "acme"},
            {"name": "ops-on-acme", "service": "acme-svc"},
            {"name": "dangling", "service": "nowhere", "organization": "acme"},
        ]
    )
    assert errors_of(data) == {("routes[5].service", "unknown service 'nowhere'")}


def test_the_rule() -> None:
    assert resolves("acme", "acme", "consumers")
    assert not resolves("acme", "globex", "plans")
    assert resolves("acme", None, "plans")  # the shared kind
    assert not resolves("acme", None, "consumers")
    assert not resolves("acme", None, "routes")
    assert not resolves(None, "acme", "plans")
    assert resolves(None, None, "routes")
