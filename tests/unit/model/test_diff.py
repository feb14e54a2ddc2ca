from __future__ import annotations

from typing import Any

from portcullis.model import GatewayConfig
from portcullis.model.diff import MISSING, FieldChange, diff_configs, plugin_key
from portcullis.model.loader import load_config_data


def config(**overrides: Any) -> GatewayConfig:
    base: dict[str, Any] = {
        "services": [
            {"name": "orders", "url": "http://127.0.0.1:9000"},
            {"name": "billing", "upstream": "pool"},
        ],
        "upstreams": [
            {
                "name": "pool",
                "targets": [{"target": "10.0.0.1:80"}, {"target": "10.0.0.2:80", "weight": 10}],
            }
        ],
        "routes": [
            {"name": "orders", "service": "orders", "paths": ["/orders"]},
            {"name": "billing", "service": "billing", "paths": ["/billing"]},
        ],
        "consumers": [{"username": "acme"}],
        "plugins": [
            {"name": "request-size-limit", "route": "orders", "config": {"max_bytes": 100}},
            {"name": "request-size-limit", "config": {"max_bytes": 1000}},
        ],
    }
    base.update(overrides)
    return load_config_data(base)


def test_identical_configs_have_an_empty_diff() -> None:
    d = diff_configs(config(), config())
    assert d.is_empty
    assert d.render() == "no changes"
    assert d.summary() == "no changes"
    assert [k.kind for k in d.kinds] == ["services", "upstreams", "routes", "consumers", "plugins"]


def test_added_removed_and_changed_entities_with_field_paths() -> None:
    old = config()
    new = config(
        services=[
            {
                "name": "orders",
                "url": "http://127.0.0.1:9100",
                "timeouts": {"read": 5},
            },
            {"name": "billing", "upstream": "pool"},
            {"name": "search", "url": "http://127.0.0.1:9200"},
        ],
        upstreams=[
            {
                "name": "pool",
                "targets": [
                    {"target": "10.0.0.1:80"},
                    {"target": "10.0.0.2:80", "weight": 20},
                    {"target": "10.0.0.3:80"},
                ],
            }
        ],
        routes=[
            {"name": "orders", "service": "orders", "paths": ["/orders", "/o"]},
            {"name": "billing", "service": "billing", "paths": ["/billing"]},
        ],
        consumers=[],
    )
    d = diff_configs(old, new)
    assert not d.is_empty

    services = d.kind("services")
    assert services.added == ("search",)
    assert services.removed == ()
    [orders] = services.changed
    assert orders.key == "orders"
    assert orders.fields == (
        FieldChange("url", "http://127.0.0.1:9000", "http://127.0.0.1:9100"),
        FieldChange("timeouts.read", 60.0, 5.0),
    )

    [pool] = d.kind("upstreams").changed
    assert pool.fields == (
        FieldChange("targets[1].weight", 10, 20),
        FieldChange("targets[2]", MISSING, {"target": "10.0.0.3:80", "weight": 100, "tags": []}),
    )

    [route] = d.kind("routes").changed
    assert route.fields == (FieldChange("paths", ["/orders"], ["/orders", "/o"]),)

    assert d.kind("consumers").removed == ("acme",)
    assert d.kind("plugins").is_empty
    assert d.summary() == "1 added, 1 removed, 3 changed"


def test_plugins_are_matched_by_name_instance_and_scope() -> None:
    old = config()
    new = config(
        plugins=[
            {"name": "request-size-limit", "config": {"max_bytes": 1000}},
            {"name": "request-size-limit", "route": "orders", "config": {"max_bytes": 200}},
            {"name": "request-size-limit", "route": "billing", "config": {"max_bytes": 5}},
            {
                "name": "request-size-limit",
                "instance_name": "strict",
                "service": "orders",
                "config": {"max_bytes": 1},
            },
        ]
    )
    plugins = diff_configs(old, new).kind("plugins")
    assert plugins.added == (
        "request-size-limit@route:billing",
        "request-size-limit[strict]@service:orders",
    )
    [changed] = plugins.changed
    assert changed.key == "request-size-limit@route:orders"
    assert changed.fields == (FieldChange("config.max_bytes", 100, 200),)
    # Global and route-scoped instances swapped places: that is an order change.
    assert plugins.reordered


def test_repeated_plugin_identities_are_numbered() -> None:
    twice = [
        {"name": "request-size-limit", "config": {"max_bytes": 1}},
        {"name": "request-size-limit", "config": {"max_bytes": 2}},
    ]
    d = diff_configs(config(plugins=twice[:1]), config(plugins=twice))
    assert d.kind("plugins").added == ("request-size-limit@global#2",)
    assert plugin_key(config().plugins[0]) == "request-size-limit@route:orders"


def test_order_only_change_is_not_empty() -> None:
    old = config()
    new = config(routes=list(reversed(old.model_dump(mode="json")["routes"])))
    d = diff_configs(old, new)
    routes = d.kind("routes")
    assert (routes.added, routes.removed, routes.changed) == ((), (), ())
    assert routes.reordered
    assert not d.is_empty
    assert d.summary() == "0 added, 0 removed, 0 changed, order changed in routes"
    assert "routes:\n  order changed" in d.render()


def test_render_plain_and_with_markup() -> None:
    old = config()
    new = config(
        consumers=[{"username": "acme", "tags": ["[gold]"]}, {"username": "zeta"}],
        routes=[{"name": "orders", "service": "orders", "paths": ["/orders"]}],
    )
    d = diff_configs(old, new)
    assert d.render().splitlines() == [
        "routes:",
        "  - billing",
        "consumers:",
        "  + zeta",
        "  ~ acme",
        '      tags: [] → ["[gold]"]',
    ]
    marked = d.render(markup=True)
    assert "[green]+ zeta[/green]" in marked
    assert "[red]- billing[/red]" in marked
    # Values are escaped so that rich does not read them as markup.
    assert '["\\[gold]"]' in marked


def test_count_changes_matches_entities_by_identity_not_position() -> None:
    from portcullis.model.diff import count_changes

    old = {
        "format_version": 1,
        "consumers": [{"username": f"c{i}", "tags": []} for i in range(50)],
        "routes": [{"name": "r", "paths": ["/r"]}],
    }
    edited = [dict(c) for c in old["consumers"]]
    edited.insert(10, {"username": "new", "tags": []})
    del edited[30]
    edited[20] = {"username": "c19", "tags": ["beta"]}
    assert count_changes(old, {**old, "consumers": edited}) == {"consumers": (1, 1, 1)}
    moved = [*old["consumers"][1:], old["consumers"][0]]
    assert count_changes(old, {**old, "consumers": moved}) == {}
    assert count_changes({}, old) == {"consumers": (50, 0, 0), "routes": (1, 0, 0)}
    assert count_changes(old, {"format_version": 2}) == {
        "consumers": (0, 50, 0),
        "routes": (0, 1, 0),
    }
