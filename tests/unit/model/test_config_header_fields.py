"""Config text the gateway copies into upstream requests is refused when it would break them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from portcullis.model.config import Consumer, GatewayConfig, Service, Target


@pytest.mark.parametrize(
    "custom_id",
    ["crm-42\r\nx-smuggled: 1", "crm\nx", "x\r\n\r\nGET /admin HTTP/1.1\r\nhost: a\r\n", "\x00"],
)
def test_custom_id_with_control_characters_is_refused_naming_the_field(custom_id: str) -> None:
    with pytest.raises(ValidationError) as info:
        Consumer(username="alice", custom_id=custom_id)
    (error,) = info.value.errors()
    assert error["loc"] == ("custom_id",)
    assert "control character" in error["msg"]


def test_surrounding_whitespace_is_trimmed_as_for_every_config_string() -> None:
    assert Consumer(username="a", custom_id=" crm-42\r\n").custom_id == "crm-42"


def test_custom_id_may_be_any_printable_text() -> None:
    assert Consumer(username="a", custom_id="CRM 42 / Zürich").custom_id == "CRM 42 / Zürich"


def test_the_error_has_a_path_in_a_whole_config() -> None:
    doc: dict[str, Any] = {"consumers": [{"username": "a", "custom_id": "x\r\ny"}]}
    with pytest.raises(ValidationError) as info:
        GatewayConfig.model_validate(doc)
    assert info.value.errors()[0]["loc"] == ("consumers", 0, "custom_id")


@pytest.mark.parametrize(
    "service",
    [
        {"name": "s", "upstream": "u", "path": "/v1\r\nx: y"},
        {"name": "s", "upstream": "u", "path": "/v1 x"},
        {"name": "s", "url": "http://up.example/v1 x"},
        {"name": "s", "url": "http://up example/"},
    ],
)
def test_service_paths_and_hosts_must_fit_a_request_line(service: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"path|host"):
        Service.model_validate(service)


def test_service_paths_may_hold_any_uri_path() -> None:
    assert Service(name="s", upstream="u", path="/v1/a;b=c/%2Fx/~@:!$&'()*+,=").path


@pytest.mark.parametrize("target", ["a\r\nb:80", "a b:80", "a/b:80", "user@a:80"])
def test_target_hosts_must_fit_a_host_header(target: str) -> None:
    with pytest.raises(ValidationError, match="invalid target host"):
        Target(target=target)


@pytest.mark.parametrize("target", ["up.example:80", "10.0.0.1:8080", "[::1]:80", "bücher.de:80"])
def test_target_hosts(target: str) -> None:
    assert Target(target=target).target == target
