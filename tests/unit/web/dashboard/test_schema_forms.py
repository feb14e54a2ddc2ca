"""Forms generated from the plugin and entity schemas: every one renders with a label per
input, and what a browser sends back unchanged is the same config (defaults, a full
sample, secrets kept when left blank); errors land on the fields their pointers name."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel

from portcullis.model.plugins.registry import SCHEMAS
from portcullis.services.entity_kinds import KINDS
from portcullis.web.dashboard.forms import (
    attach_errors,
    build_form,
    entity_node,
    parse_form,
    plugin_node,
    render_fields,
)
from support.html_forms import submitted

# The least each plugin needs to be valid (plugins with no required field: nothing).
MINIMAL: dict[str, dict[str, Any]] = {
    "acl": {"allow": ["admins"]},
    "cors": {"origins": ["https://app.example"]},
    "file-log": {"path": "/var/log/portcullis.jsonl"},
    "http-log": {"url": "https://logs.example/in"},
    "ip-restriction": {"allow": ["10.0.0.0/8"]},
    "jwt-auth": {"issuers": ["https://issuer.example"]},
    "mtls-auth": {"ca_certificates": "placeholder"},
    "rate-limit": {"limits": [{"limit": 10, "period": "1m"}]},
    "request-size-limit": {"max_bytes": 1024},
    "syslog": {"host": "logs.example"},
}
# Configs using every widget: lists of objects, secrets (scalar and map values),
# maps, scalar-or-list, unions, enums, JSON values.
FULL: dict[str, dict[str, Any]] = {
    "rate-limit": {
        "limits": [
            {"limit": 10, "period": "1m", "key": ["consumer", "route"], "algorithm": "gcra"},
            {"limit": 1000, "period": 3600, "burst": 50, "algorithm": "token_bucket"},
        ],
        "method_costs": {"POST": 5},
        "cost_header": "X-Cost",
    },
    "jwt-auth": {
        "keys": [{"kid": "k1", "algorithm": "HS256", "secret": "s" * 40}],
        "audiences": ["orders"],
        "max_lifetime": 3600,
    },
    "http-log": {
        "url": "https://logs.example/in",
        "headers": {"Authorization": "Bearer token=="},
        "custom_fields": {"env": "prod", "shard": 3, "canary": True},
    },
    "request-transformer": {
        "headers": {"remove": ["Cookie"], "set": {"X-Api-Key": "k-123"}},
        "body": {"set": {"meta.source": {"via": "gateway", "n": 2}}, "rename": {"a": "b"}},
    },
    "syslog": {"host": "logs.example", "severity": {"5xx": "crit", "4xx": "notice"}},
    "response-cache": {"statuses": [200, 404], "methods": ["GET"], "content_types": None},
}
INPUT = re.compile(r"<(input|select|textarea)\b[^>]*>")


def round_trip(node: Any, value: Any, **typed: str) -> dict[str, Any]:
    html = render_fields(build_form(node, value))
    return parse_form(node, submitted(html, **typed), current=value)


def same(model: type[BaseModel], a: Any, b: Any) -> None:
    assert model.model_validate(a) == model.model_validate(b)


def labelled(html: str) -> None:
    """Every visible input has a <label for> naming its id."""
    for tag in INPUT.finditer(html):
        text = tag.group(0)
        if 'type="hidden"' in text:
            continue
        found = re.search(r'id="([^"]+)"', text)
        assert found is not None, text
        assert f'for="{found.group(1)}"' in html, text


@pytest.mark.parametrize("plugin", sorted(SCHEMAS))
def test_every_plugin_form_renders_and_its_defaults_come_back_unchanged(plugin: str) -> None:
    node = plugin_node(plugin)
    sample = MINIMAL.get(plugin, {})
    if plugin == "mtls-auth":
        # The form shapes input; it does not look into a PEM bundle.
        assert round_trip(node, sample)["ca_certificates"] == "placeholder"
        return
    model = SCHEMAS[plugin]
    html = render_fields(build_form(node, sample))
    labelled(html)
    same(model, round_trip(node, sample), sample)
    # A new instance (nothing stored) shows the defaults; with the required fields
    # typed in, it is the same config.
    if not sample:
        same(model, round_trip(node, None), {})


@pytest.mark.parametrize("plugin", sorted(FULL))
def test_a_full_config_comes_back_unchanged(plugin: str) -> None:
    same(SCHEMAS[plugin], round_trip(plugin_node(plugin), FULL[plugin]), FULL[plugin])


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.collection)
def test_every_entity_form_renders_its_example_and_gives_it_back(kind: Any) -> None:
    plugin = kind.example.get("name") if kind.collection == "plugins" else None
    node = entity_node(kind.collection, plugin)
    html = render_fields(build_form(node, kind.example, readonly=kind.identity_fields))
    labelled(html)
    back = round_trip(node, kind.example)
    if kind.collection == "certificates":
        # The example's PEM is a placeholder: compare documents, key kept though blank.
        assert back["key"] == kind.example["key"]
        assert back["snis"] == kind.example["snis"]
        return
    same(kind.model, back, kind.example)


def test_secrets_are_never_shown_and_blank_keeps_the_stored_one() -> None:
    config = FULL["jwt-auth"]
    node = plugin_node("jwt-auth")
    html = render_fields(build_form(node, config))
    assert "s" * 40 not in html
    assert 'type="password"' in html
    assert "leave blank to keep" in html
    assert round_trip(node, config)["keys"][0]["secret"] == "s" * 40
    assert round_trip(node, config, **{"keys/0/secret": "t" * 40})["keys"][0]["secret"] == (
        "t" * 40
    )
    # Secret map values: names shown, values not; `name =` keeps, a new value replaces.
    log = FULL["http-log"]
    html = render_fields(build_form(plugin_node("http-log"), log))
    assert "token==" not in html
    assert "Authorization =" in html
    changed = round_trip(plugin_node("http-log"), log, headers="Authorization =\nX-New = v")
    assert changed["headers"] == {"Authorization": "Bearer token==", "X-New": "v"}


def test_text_is_typed_by_the_schema_and_what_is_no_value_goes_as_it_is() -> None:
    node = plugin_node("request-termination")
    typed = round_trip(node, None, status_code="429", message="slow down", body="")
    assert typed == {"status_code": 429, "message": "slow down"}
    assert round_trip(node, None, status_code="lots")["status_code"] == "lots"
    limits = round_trip(
        plugin_node("rate-limit"),
        None,
        **{"limits/0/limit": "5", "limits/0/period": "30", "limits/0/key": "consumer"},
    )["limits"]
    assert limits == [{"limit": 5, "period": 30, "algorithm": "sliding_window", "key": "consumer"}]
    # JSON values: JSON when they parse, text otherwise.
    body = round_trip(
        plugin_node("request-transformer"), None, **{"body/set": 'a = {"x": 1}\nb = hello'}
    )
    assert body["body"]["set"] == {"a": {"x": 1}, "b": "hello"}


def test_list_items_are_removed_and_added() -> None:
    node = plugin_node("rate-limit")
    config = FULL["rate-limit"]
    html = render_fields(build_form(node, config))
    data = submitted(html, **{"limits/2/limit": "7", "limits/2/period": "1s"})
    data["remove:limits/0"] = ["1"]
    limits = parse_form(node, data, current=config)["limits"]
    assert [(x["limit"], x["period"]) for x in limits] == [(1000, 3600), (7, "1s")]


def test_a_nullable_object_is_given_only_when_its_box_is_ticked() -> None:
    node = entity_node("routes")
    route = {"name": "r", "service": "s", "paths": ["/"]}
    assert "hsts" not in round_trip(node, route)
    data = submitted(render_fields(build_form(node, route)))
    data["set:hsts"] = ["1"]
    hsts = parse_form(node, data, current=route)["hsts"]
    assert hsts == {"max_age": 31536000, "include_subdomains": False, "preload": False}


def test_errors_land_on_the_field_their_pointer_names_or_the_nearest_one() -> None:
    form = build_form(entity_node("plugins", "rate-limit"), {"name": "rate-limit"})
    attach_errors(
        form,
        [
            ("#/config/limits/0/limit", "Input should be greater than or equal to 1"),
            ("#/config/method_costs/GET", "Input should be a valid integer"),
            ("#", "a plugin is scoped to a service or a route, not both"),
        ],
    )
    assert form.named("config/limits/0/limit").errors == [
        "Input should be greater than or equal to 1"
    ]
    assert form.named("config/method_costs").errors == ["GET: Input should be a valid integer"]
    assert form.errors == ["a plugin is scoped to a service or a route, not both"]
    html = render_fields(form)
    assert 'aria-invalid="true"' in html
    assert 'role="alert"' in html


def test_id_fields_are_read_only_on_edit_and_still_sent() -> None:
    node = entity_node("routes")
    route = {"name": "orders", "service": "orders", "paths": ["/orders"]}
    html = render_fields(build_form(node, route, readonly=("name",)))
    assert re.search(r'<input type="text" id="f-name" name="name" value="orders" readonly', html)
    assert round_trip(node, route)["name"] == "orders"


def test_markup_in_values_is_escaped() -> None:
    node = entity_node("consumers")
    html = render_fields(build_form(node, {"username": "a", "custom_id": '"><script>x</script>'}))
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_fields_naming_entities_offer_their_names() -> None:
    node = entity_node("plugins", "key-auth")
    form = build_form(node, {"name": "key-auth"}, references={"route": "routes"})
    assert form.collections() == {"routes", "consumers"}
    form.suggest({"routes": ["orders"], "consumers": ["acme", "<b>"]})
    html = render_fields(form)
    assert re.search(r'id="f-route" name="route" value="" list="f-route-names"', html)
    assert '<datalist id="f-config_anonymous-names"><option value="acme">' in html
    assert "&lt;b&gt;" in html
