"""request-transformer and response-transformer: header, query and JSON-body edits in the
documented order, config validation, forbidden framing headers, the body phase only for
configs with body edits, and non-JSON / invalid JSON / content-coded bodies left alone."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from portcullis.model.plugins.registry import validate_plugin
from portcullis.model.plugins.transforms import JsonOps, QueryOps
from portcullis.plugins.base import Headers, PluginChain, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.registry import PLUGINS, build_plugin
from portcullis.plugins.request_transformer import RequestTransformer
from portcullis.plugins.response_transformer import ResponseTransformer
from portcullis.plugins.transforms import JsonEditor, QueryEditor, is_json

JSON = (b"content-type", b"application/json")


def request_transformer(**config: Any) -> RequestTransformer:
    plugin = build_plugin("request-transformer", config, PluginEnv())
    assert isinstance(plugin, RequestTransformer)
    return plugin


def response_transformer(**config: Any) -> ResponseTransformer:
    plugin = build_plugin("response-transformer", config, PluginEnv())
    assert isinstance(plugin, ResponseTransformer)
    return plugin


def context(query: bytes = b"", upstream: Headers | None = None) -> RequestContext:
    return RequestContext(
        {"type": "http", "headers": [], "query_string": query},
        cast(Any, None),
        "POST",
        "/",
        "127.0.0.1",
        "rid",
        None,
        upstream if upstream is not None else [(b"host", b"api.test")],
    )


def test_registered_late_in_access_and_before_a_cache_in_the_body_phase() -> None:
    assert PLUGINS["request-transformer"] is RequestTransformer
    assert PLUGINS["response-transformer"] is ResponseTransformer
    assert RequestTransformer.priority < PLUGINS["rate-limit"].priority
    assert ResponseTransformer.priority > RequestTransformer.priority


@pytest.mark.parametrize(
    ("name", "config", "error"),
    [
        ("request-transformer", {"headers": {"remove": ["Host"]}}, "managed by the gateway"),
        ("request-transformer", {"headers": {"set": {"content-length": "1"}}}, "managed"),
        ("request-transformer", {"headers": {"rename": {"a": "Transfer-Encoding"}}}, "managed"),
        ("request-transformer", {"headers": {"add": {"bad name": "x"}}}, "invalid header name"),
        ("request-transformer", {"headers": {"add": {"x-a": "line\r\nbreak"}}}, "control char"),
        ("request-transformer", {"headers": {"add": {"x-a": "snow ☃"}}}, "Latin-1"),
        ("request-transformer", {"query": {"remove": [""]}}, "cannot be empty"),
        ("request-transformer", {"body": {"remove": ["a..b"]}}, "invalid JSON path"),
        ("request-transformer", {"body": {"set": {"": 1}}}, "invalid JSON path"),
        ("request-transformer", {"cookies": {}}, "Extra inputs"),
        ("response-transformer", {"headers": {"remove": ["content-length"]}}, "managed"),
        ("response-transformer", {"headers": {"remove": ["connection"]}}, "managed"),
        ("response-transformer", {"query": {}}, "Extra inputs"),
    ],
)
def test_config_errors(name: str, config: dict[str, Any], error: str) -> None:
    errors = validate_plugin(name, config)
    assert len(errors) == 1, errors
    assert error in errors[0]


def test_the_body_phase_exists_only_with_body_edits() -> None:
    headers_only = request_transformer(headers={"add": {"x-a": "1"}})
    assert PluginChain.from_plugins([headers_only]).request_body == ()
    with_body = request_transformer(body={"remove": ["secret"]})
    assert PluginChain.from_plugins([with_body]).request_body == (with_body,)
    out_headers = response_transformer(headers={"add": {"x-a": "1"}})
    assert PluginChain.from_plugins([out_headers]).body == ()
    out_body = response_transformer(body={"add": {"v": 1}})
    assert PluginChain.from_plugins([out_body]).body == (out_body,)


async def test_request_headers_in_order_remove_rename_set_add() -> None:
    plugin = request_transformer(
        headers={
            "remove": ["X-Drop", "x-old"],
            "rename": {"X-Old": "x-never", "x-legacy": "X-Modern"},
            "set": {"X-Modern": "set", "x-tenant": "acme"},
            "add": {"x-added": "1", "x-keep": "ignored", "x-tenant": "ignored"},
        }
    )
    upstream: Headers = [
        (b"host", b"api.test"),
        (b"x-drop", b"a"),
        (b"x-old", b"b"),
        (b"x-legacy", b"c"),
        (b"x-tenant", b"client"),
        (b"x-tenant", b"client2"),
        (b"x-keep", b"kept"),
    ]
    ctx = context(upstream=upstream)
    assert await plugin.access(ctx) is None
    assert ctx.upstream_headers == [
        (b"host", b"api.test"),
        (b"x-keep", b"kept"),
        (b"x-modern", b"set"),
        (b"x-tenant", b"acme"),
        (b"x-added", b"1"),
    ]


async def test_query_edits_keep_untouched_parameters_verbatim() -> None:
    plugin = request_transformer(
        query={
            "remove": ["debug"],
            "rename": {"q": "search"},
            "set": {"page size": "50"},
            "add": {"lang": "en", "sort": "ignored"},
        }
    )
    ctx = context(query=b"q=caf%C3%A9&debug=1&sort=-date&page+size=10&&flag")
    await plugin.access(ctx)
    assert ctx.query_string == b"search=caf%C3%A9&sort=-date&flag&page+size=50&lang=en"


async def test_query_edits_start_from_a_previous_plugins_query() -> None:
    plugin = request_transformer(query={"add": {"v": "2"}})
    ctx = context(query=b"apikey=secret&x=1")
    ctx.query_string = b"x=1"  # e.g. key-auth removed its parameter
    await plugin.access(ctx)
    assert ctx.query_string == b"x=1&v=2"
    empty = context()
    await request_transformer(query={"remove": ["x"]}).access(empty)
    assert empty.query_string == b""


def test_query_names_compare_after_percent_decoding() -> None:
    editor = QueryEditor(QueryOps(remove=["a b", "é"]))
    assert editor.apply(b"a+b=1&a%20b=2&%C3%A9=3&c=4") == b"c=4"


def edit(ops: dict[str, Any], doc: Any) -> Any:
    out = JsonEditor(JsonOps.model_validate(ops)).transform(json.dumps(doc).encode())
    return None if out is None else json.loads(out)


def test_json_edits_with_dotted_paths() -> None:
    doc = {"user": {"name": "Ada", "password": "x", "tags": ["a"]}, "v": 1, "list": [{"a": 1}]}
    ops = {
        "remove": ["user.password", "missing.path", "list.a"],
        "rename": {"user.name": "profile.full_name", "nothing": "else"},
        "set": {"v": 2, "meta.source": "gateway", "user.tags.x": 1},
        "add": {"v": 3, "meta.extra": {"k": [1]}},
    }
    assert edit(ops, doc) == {
        "user": {"tags": ["a"]},
        "v": 2,
        "list": [{"a": 1}],
        "profile": {"full_name": "Ada"},
        "meta": {"source": "gateway", "extra": {"k": [1]}},
    }


def test_configured_values_are_never_shared_with_a_document() -> None:
    editor = JsonEditor(JsonOps.model_validate({"set": {"meta": {"a": 1}, "meta.b": 2}}))
    first = json.loads(editor.transform(b"{}") or b"")
    assert first == {"meta": {"a": 1, "b": 2}}
    again = json.loads(editor.transform(b"{}") or b"")
    assert again == {"meta": {"a": 1, "b": 2}}


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"{not json", b"\xff\xfe", b"1e999999"])
def test_bodies_that_are_not_json_objects_are_left_alone(body: bytes) -> None:
    editor = JsonEditor(JsonOps.model_validate({"add": {"a": 1}}))
    assert editor.transform(body) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"application/json", True),
        (b"Application/JSON; charset=utf-8", True),
        (b"application/problem+json", True),
        (b"application/vnd.api+json;v=2", True),
        (b"text/json", False),
        (b"application/jsonx", False),
        (b"text/plain", False),
        (None, False),
    ],
)
def test_json_media_types(value: bytes | None, expected: bool) -> None:
    assert is_json(value) is expected


def test_request_body_edits_json_only() -> None:
    plugin = request_transformer(body={"remove": ["secret"], "add": {"source": "gw"}})
    ctx = context(upstream=[(b"host", b"a"), JSON])
    out = plugin.request_body(ctx, b'{"secret": 1, "name": "\xc3\xa9"}')
    assert out is not None
    assert json.loads(out) == {"name": "é", "source": "gw"}
    assert out == '{"name":"é","source":"gw"}'.encode()
    text = context(upstream=[(b"host", b"a"), (b"content-type", b"text/plain")])
    assert plugin.request_body(text, b'{"secret": 1}') is None
    coded = context(upstream=[(b"host", b"a"), JSON, (b"content-encoding", b"gzip")])
    assert plugin.request_body(coded, b'{"secret": 1}') is None
    assert plugin.request_body(ctx, b"") is None
    assert plugin.request_body(ctx, b"{broken") is None


def test_response_headers_and_body() -> None:
    plugin = response_transformer(
        headers={"remove": ["server"], "rename": {"x-old": "x-new"}, "add": {"x-gw": "1"}},
        body={"remove": ["internal"], "set": {"api_version": 2}},
    )
    ctx = context()
    headers: Headers = [JSON, (b"server", b"nginx"), (b"x-old", b"v"), (b"content-length", b"9")]
    plugin.response(ctx, 200, headers)
    assert headers == [JSON, (b"x-new", b"v"), (b"content-length", b"9"), (b"x-gw", b"1")]
    out = plugin.response_body(ctx, 200, headers, b'{"internal": true, "data": [1]}')
    assert out is not None
    assert json.loads(out) == {"data": [1], "api_version": 2}
    plain: Headers = [(b"content-type", b"text/html")]
    assert plugin.response_body(ctx, 200, plain, b'{"internal": true}') is None
    assert plugin.response_body(ctx, 200, headers, b"<html>") is None
    gz: Headers = [JSON, (b"content-encoding", b"gzip")]
    assert plugin.response_body(ctx, 200, gz, b'{"internal": true}') is None
