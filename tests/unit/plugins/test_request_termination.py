"""request-termination: its config rules, and the fixed reply its access phase gives."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from portcullis.model.plugins.registry import validate_plugin
from portcullis.plugins.base import RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.registry import PLUGINS, build_plugin
from portcullis.plugins.request_termination import RequestTermination


def context() -> RequestContext:
    scope = {"type": "http", "headers": []}
    return RequestContext(scope, cast(Any, None), "GET", "/", "127.0.0.1", "rid", None)


async def reply(config: dict[str, Any]) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    plugin = build_plugin("request-termination", config, PluginEnv())
    response = await plugin.access(context())
    assert response is not None
    return response.status, response.body, response.headers


def test_it_runs_last_in_the_access_phase_only() -> None:
    assert PLUGINS["request-termination"] is RequestTermination
    assert RequestTermination.priority < min(
        cls.priority for name, cls in PLUGINS.items() if name != "request-termination"
    )
    assert RequestTermination.phases == {"access"}


async def test_default_is_503_with_the_reason_phrase() -> None:
    status, body, headers = await reply({})
    assert status == 503
    assert json.loads(body) == {"message": "Service Unavailable"}
    assert headers == [(b"content-type", b"application/json; charset=utf-8")]


async def test_message_is_sent_as_json() -> None:
    status, body, _ = await reply({"status_code": 418, "message": 'a "teapot"'})
    assert status == 418
    assert json.loads(body) == {"message": 'a "teapot"'}


async def test_body_is_sent_as_is_with_its_content_type() -> None:
    status, body, headers = await reply(
        {"status_code": 200, "body": "pong", "content_type": "text/plain"}
    )
    assert (status, body) == (200, b"pong")
    assert headers == [(b"content-type", b"text/plain")]
    _, _, default = await reply({"body": "{}"})
    assert default == [(b"content-type", b"application/json; charset=utf-8")]


async def test_a_bodyless_status_sends_nothing() -> None:
    assert await reply({"status_code": 204}) == (204, b"", [])


async def test_each_reply_gets_its_own_header_list() -> None:
    plugin = build_plugin("request-termination", {}, PluginEnv())
    first, second = await plugin.access(context()), await plugin.access(context())
    assert first is not None
    assert second is not None
    first.headers.append((b"x-added", b"1"))
    assert second.headers == [(b"content-type", b"application/json; charset=utf-8")]


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"message": "a", "body": "b"}, "config: Value error, set message or body, not both"),
        ({"content_type": "text/plain"}, "config: Value error, content_type describes `body`"),
        ({"status_code": 204, "message": "x"}, "config: Value error, a 204 response has no body"),
        ({"status_code": 199}, "config.status_code: Input should be greater than or equal to 200"),
        ({"status_code": 599}, "config: Value error, 599 is not a registered HTTP status"),
        ({"body": "x", "content_type": "text/plain\r\nx: y"}, "config.content_type:"),
        ({"status": 503}, "config.status: Extra inputs are not permitted"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(config: dict[str, Any], error: str) -> None:
    errors = validate_plugin("request-termination", config)
    assert len(errors) == 1
    assert errors[0].startswith(error)
