from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, Literal

import pytest

from portcullis.model import GatewayConfig
from portcullis.model.loader import (
    ConfigError,
    ConfigIssue,
    dump_config,
    format_location,
    load_config_data,
    load_config_file,
    load_config_text,
    parse_location,
)

VALID = textwrap.dedent(
    """\
    services:
      - name: orders
        url: http://127.0.0.1:9000
      - name: billing
        upstream: billing-pool
    upstreams:
      - name: billing-pool
        targets:
          - target: 127.0.0.1:9001
          - target: 127.0.0.1:9002
            weight: 50
    routes:
      - name: orders
        service: orders
        paths: [/orders, "=/health"]
        methods: [get, POST]
      - name: billing
        service: billing
        hosts: [Billing.Example.com]
    consumers:
      - username: acme
    plugins:
      - name: request-size-limit
        route: orders
        config: {max_bytes: 1024}
    """
)


def errors_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="test.yaml")
    assert info.value.source == "test.yaml"
    return info.value.errors


def by_location(issues: list[ConfigIssue]) -> dict[str, ConfigIssue]:
    return {i.location: i for i in issues}


def test_valid_yaml_loads_and_normalises() -> None:
    config = load_config_text(VALID, source="test.yaml")
    assert [s.name for s in config.services] == ["orders", "billing"]
    assert config.routes[0].methods == ["GET", "POST"]
    assert config.routes[1].hosts == ["billing.example.com"]
    assert config.plugins[0].config == {"max_bytes": 1024}


def test_index_paths_and_line_numbers() -> None:
    text = textwrap.dedent(
        """\
        services:
          - name: s
            url: http://a:1
        routes:
          - name: r0
            service: s
          - name: r1
            service: s
          - name: r2
            service: s
          - name: r3
            service: s
            paths:
              - 12
        """
    )
    [issue] = errors_of(text)
    assert issue.location == "routes[3].paths[0]"
    assert issue.loc == ("routes", 3, "paths", 0)
    assert issue.line == 14
    assert issue.column == 9
    assert issue.message == "Input should be a valid string"
    assert issue.pointer == "#/routes/3/paths/0"
    assert str(issue) == "routes[3].paths[0] (line 14): Input should be a valid string"


def test_every_error_is_reported_in_document_order() -> None:
    text = textwrap.dedent(
        """\
        services:
          - name: orders
            url: http://127.0.0.1:9000
          - name: broken
            url: ftp://nowhere
        routes:
          - name: r0
            service: orders
          - name: r1
            service: ghost
            srevice: orders
          - name: r2
            service: broken
          - name: r3
            service: orders
            paths: ["/ok", 12]
            priority: high
          - name: r0
            service: orders
        plugins:
          - name: request-size-limit
            route: r9
            config: {max_bytes: lots}
          - name: no-such-plugin
        timeouts: 3
        """
    )
    issues = errors_of(text)
    assert [(i.location, i.line) for i in issues] == [
        ("services[1]", 4),
        ("routes[1].service", 10),
        ("routes[1].srevice", 11),
        ("routes[3].paths[1]", 16),
        ("routes[3].priority", 17),
        ("routes[4].name", 18),
        ("plugins[0].route", 22),
        ("plugins[0].config.max_bytes", 23),
        ("plugins[1].name", 24),
        ("timeouts", 25),
    ]
    found = by_location(issues)
    assert found["services[1]"].message == "url must be an absolute http(s) URL with a host"
    assert found["routes[1].service"].message == "unknown service 'ghost'"
    assert found["routes[1].srevice"].message == "unknown field 'srevice' (did you mean 'service'?)"
    assert found["routes[4].name"].message == "duplicate name 'r0'"
    assert found["plugins[0].route"].message == "unknown route 'r9'"
    assert found["plugins[1].name"].message.startswith("unknown plugin 'no-such-plugin'")
    assert found["timeouts"].message.startswith("unknown field 'timeouts' (allowed: ")
    # r2 points at a service that is itself invalid: that is not an unknown service.
    assert "routes[2].service" not in found


def test_cross_reference_errors_are_split_into_issues_with_lines() -> None:
    text = textwrap.dedent(
        """\
        services:
          - name: s
            upstream: nowhere
          - name: s
            url: http://a:1
        routes:
          - name: r
            service: missing
        consumers:
          - username: u
          - username: u
        plugins:
          - name: request-size-limit
            service: nope
            config: {}
        """
    )
    issues = errors_of(text)
    assert [(i.location, i.line, i.message) for i in issues] == [
        ("services[0].upstream", 3, "unknown upstream 'nowhere'"),
        ("services[1].name", 4, "duplicate name 's'"),
        ("routes[0].service", 8, "unknown service 'missing'"),
        ("consumers[1].username", 11, "duplicate username 'u'"),
        ("plugins[0].service", 14, "unknown service 'nope'"),
        ("plugins[0].config.max_bytes", 15, "Field required"),
    ]


def test_missing_field_points_at_the_entry() -> None:
    issues = errors_of("services:\n  - url: http://a:1\n")
    assert [(i.location, i.line, i.message) for i in issues] == [
        ("services[0].name", 2, "Field required")
    ]


def test_yaml_syntax_error_is_one_issue_with_line_and_column() -> None:
    [issue] = errors_of("services:\n  - name: [a\n    url: b\n")
    assert issue.location == ""
    assert issue.message.startswith("invalid YAML: ")
    assert (issue.line, issue.column) == (3, 8)
    assert str(issue).startswith("(document) (line 3): invalid YAML")


def test_tabs_are_a_syntax_error() -> None:
    [issue] = errors_of("services:\n\t- name: a\n")
    assert issue.message.startswith("invalid YAML")
    assert issue.line == 2


def test_duplicate_keys_are_errors() -> None:
    issues = errors_of("routes: []\nservices: []\nroutes: []\n")
    assert [(i.location, i.line, i.message) for i in issues] == [
        ("routes", 3, "duplicate key 'routes' (first defined on line 1)")
    ]


def test_empty_and_non_mapping_documents() -> None:
    [empty] = errors_of("# nothing here\n")
    assert "empty" in empty.message
    assert load_config_text("{}", source="x") == GatewayConfig()
    [listed] = errors_of("- services\n")
    assert listed.location == ""
    assert listed.line == 1
    assert "valid dictionary" in listed.message


def test_anchors_and_merge_keys_work_and_keep_lines() -> None:
    text = textwrap.dedent(
        """\
        services:
          - &base
            name: one
            url: http://a:1
          - <<: *base
            name: two
        """
    )
    config = load_config_text(text, source="x")
    assert [(s.name, s.url) for s in config.services] == [
        ("one", "http://a:1"),
        ("two", "http://a:1"),
    ]
    issues = errors_of(text + "    bogus: 1\nx-defaults: 1\n")
    assert [(i.location, i.line) for i in issues] == [
        ("services[1].bogus", 7),
        ("x-defaults", 8),
    ]


def test_json_files_load_and_report_lines(tmp_path: Path) -> None:
    good = tmp_path / "gateway.json"
    good.write_text(json.dumps({"services": [{"name": "s", "url": "http://a:1"}]}, indent=2))
    assert load_config_file(good).services[0].name == "s"

    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "services": [\n    {"name": "s", "url": "http://a:1", "x": 1}\n  ]\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config_file(bad)
    [issue] = info.value.errors
    assert (issue.location, issue.line) == ("services[0].x", 3)
    assert info.value.source == str(bad)

    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "services": [,]\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config_file(broken)
    [issue] = info.value.errors
    assert issue.message.startswith("invalid JSON")
    assert (issue.line, issue.column) == (2, 16)


def test_undecodable_file_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "latin1.yaml"
    f.write_bytes(b"services: []\n# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config_file(f)
    with pytest.raises(FileNotFoundError):
        load_config_file(tmp_path / "absent.yaml")


def test_config_error_message_lists_every_issue() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("routes:\n  - name: r\n    service: s\nbogus: 1\n", source="f.yaml")
    text = str(info.value)
    assert text.splitlines() == [
        "f.yaml: 2 config errors",
        "  routes[0].service (line 3): unknown service 's'",
        "  bogus (line 4): unknown field 'bogus' (allowed: format_version, services, "
        "upstreams, routes, consumers, plugins, plans, boosts, overrides, apis, certificates)",
    ]


def test_load_config_data_has_locations_but_no_lines() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_data({"routes": [{"name": "r", "service": "s", "paths": [1]}]})
    assert [(i.location, i.line) for i in info.value.errors] == [
        ("routes[0].paths[0]", None),
        ("routes[0].service", None),
    ]


@pytest.mark.parametrize(
    ("loc", "text"),
    [
        (("routes", 3, "paths", 0), "routes[3].paths[0]"),
        (("plugins", 0, "config", "max_bytes"), "plugins[0].config.max_bytes"),
        (("routes", 0, "headers", "x.y z"), 'routes[0].headers["x.y z"]'),
        (("services",), "services"),
        ((), ""),
    ],
)
def test_location_format_round_trips(loc: tuple[str | int, ...], text: str) -> None:
    assert format_location(loc) == text
    assert parse_location(text) == loc


def test_dump_is_deterministic_and_round_trips() -> None:
    config = load_config_text(VALID, source="test.yaml")
    text = dump_config(config)
    assert text.startswith("format_version: '1'\nservices:\n  - name: orders\n")
    assert "timeouts" not in text  # defaults are left out
    again = load_config_text(text, source="dump")
    assert again == config
    assert dump_config(again) == text

    full = dump_config(config, include_defaults=True)
    assert "timeouts:" in full
    assert load_config_text(full, source="full") == config

    as_json = dump_config(config, format="json")
    assert load_config_text(as_json, source="j", format="json") == config
    assert dump_config(load_config_text(as_json, source="j", format="json"), format="json") == (
        as_json
    )


def test_dump_quotes_strings_yaml_would_retype() -> None:
    config = load_config_data(
        {
            "services": [{"name": "s", "url": "http://a:1", "tags": ["yes", "1.0", "null", "~"]}],
            "consumers": [{"username": "on", "custom_id": "0x10"}],
        }
    )
    text = dump_config(config)
    again = load_config_text(text, source="dump")
    assert again.services[0].tags == ["yes", "1.0", "null", "~"]
    assert again.consumers[0].custom_id == "0x10"
    assert again.consumers[0].username == "on"


def test_valid_json_is_not_composed_as_yaml_but_errors_still_get_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Composing a YAML node tree of a JSON text (for line numbers) costs many times the
    JSON parse at scale, so only a document with errors pays for it."""
    from portcullis.model import loader

    composed: list[str] = []
    real = loader._compose_quietly

    def recording(text: str) -> Any:
        composed.append(text)
        return real(text)

    monkeypatch.setattr(loader, "_compose_quietly", recording)
    good = '{"services": [{"name": "s", "url": "http://127.0.0.1:9"}]}'
    assert load_config_text(good, source="good.json", format="json").services[0].name == "s"
    assert composed == []
    bad = '{\n  "services": [\n    {"name": "s", "url": "nope"}\n  ]\n}'
    with pytest.raises(ConfigError) as info:
        load_config_text(bad, source="bad.json", format="json")
    assert composed == [bad]
    assert [(e.location, e.line) for e in info.value.errors] == [("services[0]", 3)]


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_a_document_nested_past_any_config_is_refused_before_parsing(
    fmt: Literal["yaml", "json"],
) -> None:
    # libyaml crashes the process (segfault) on flow collections nested ~50,000 deep.
    deep = (
        "services: " + "[" * 60_000 + "]" * 60_000 if fmt == "yaml" else "[" * 60_000 + "]" * 60_000
    )
    with pytest.raises(ConfigError) as refused:
        load_config_text(deep, source="deep", format=fmt)
    assert "nests more than 1000 levels" in str(refused.value)
