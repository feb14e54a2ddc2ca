"""The log plugins' configs: errors name the field, header values are secret (redacted in
audit and exports), destinations make bounded, secret-free metric labels."""

from __future__ import annotations

from typing import Any

import pytest

from portcullis.model.config import GatewayConfig
from portcullis.model.plugins.log_shipping import FileLogConfig, HttpLogConfig, SyslogConfig
from portcullis.model.plugins.registry import validate_plugin
from portcullis.model.secrets import REDACTED, redact


@pytest.mark.parametrize(
    ("name", "config", "error"),
    [
        (
            "http-log",
            {"url": "ftp://x/"},
            "config.url: Value error, must be an http:// or https:// URL",
        ),
        (
            "http-log",
            {"url": "https://user:pw@x/"},
            "config.url: Value error, must not carry credentials",
        ),
        (
            "http-log",
            {"url": "https://x/", "headers": {"bad name": "v"}},
            "config.headers: Value error",
        ),
        (
            "http-log",
            {"url": "https://x/", "headers": {"Content-Length": "1"}},
            "config.headers: Value error, 'Content-Length' is set by the gateway",
        ),
        ("http-log", {"url": "https://x/", "format": "xml"}, "config.format: Input should be"),
        (
            "http-log",
            {"url": "https://x/", "batch_size": 0},
            "config.batch_size: Input should be greater than or equal to 1",
        ),
        (
            "file-log",
            {"path": "relative.log"},
            "config.path: Value error, must be an absolute path",
        ),
        (
            "file-log",
            {"path": "/var/log/../etc/x"},
            "config.path: Value error, must be a normalised file path",
        ),
        ("file-log", {"path": "/var/log/"}, "config.path: Value error, must be a normalised"),
        (
            "syslog",
            {"host": "logs", "protocol": "sctp"},
            "config.protocol: Input should be 'udp' or 'tcp'",
        ),
        ("syslog", {"host": "logs", "facility": "local9"}, "config.facility: Input should be"),
        (
            "syslog",
            {"host": "logs", "severity": {"6xx": "info"}},
            "config.severity.6xx.[key]: Input should be",
        ),
        (
            "syslog",
            {"host": "logs", "msgid": "a b"},
            "config.msgid: Value error, must be printable",
        ),
        (
            "syslog",
            {"host": "logs", "max_message_bytes": 100},
            "config.max_message_bytes: Input should be greater",
        ),
        ("syslog", {"host": "a/b"}, "config.host: Value error, must be a host name or IP address"),
    ],
)
def test_errors_name_the_field(name: str, config: dict[str, Any], error: str) -> None:
    errors = validate_plugin(name, config)
    assert any(e.startswith(error) for e in errors), errors


def test_header_values_are_redacted_in_exports() -> None:
    config = GatewayConfig.model_validate(
        {
            "plugins": [
                {
                    "name": "http-log",
                    "config": {
                        "url": "https://logs.example.com/in?tenant=1",
                        "headers": {"Authorization": "Bearer s3cret"},
                    },
                }
            ]
        }
    )
    document = redact(config.model_dump(mode="json"), GatewayConfig)
    plugin = document["plugins"][0]["config"]
    assert plugin["headers"] == {"Authorization": REDACTED}
    assert plugin["url"] == "https://logs.example.com/in?tenant=1"


def test_destinations_label_without_query_or_secrets() -> None:
    http = HttpLogConfig(url="https://logs.example.com:8443/in?token=abc")
    assert http.destination() == "https://logs.example.com:8443/in"
    assert FileLogConfig(path="/var/log/gw.log").destination() == "/var/log/gw.log"
    assert SyslogConfig(host="::1", protocol="tcp").destination() == "tcp://[::1]:514"
