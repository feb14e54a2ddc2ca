"""request-size-limit: a declared Content-Length over the limit is refused at once; other
bodies get the limit as the request's body limit, which the proxy enforces on streams."""

from __future__ import annotations

import json
from typing import Any, cast

from portcullis.plugins.base import RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.registry import build_plugin
from portcullis.plugins.request_size_limit import RequestSizeLimit


def limiter(max_bytes: int) -> RequestSizeLimit:
    plugin = build_plugin("request-size-limit", {"max_bytes": max_bytes}, PluginEnv())
    assert isinstance(plugin, RequestSizeLimit)
    return plugin


def context(content_length: int | None, chunked: bool = False) -> RequestContext:
    headers = [(b"transfer-encoding", b"chunked")] if chunked else []
    return RequestContext(
        {"type": "http", "headers": headers},
        cast(Any, None),
        "POST",
        "/",
        "127.0.0.1",
        "rid",
        content_length,
    )


async def test_declared_length_over_the_limit_is_refused() -> None:
    reply = await limiter(100).access(context(101))
    assert reply is not None
    assert reply.status == 413
    assert json.loads(reply.body)["type"].endswith("/payload-too-large")


async def test_other_bodies_carry_the_limit_to_the_proxy() -> None:
    ctx = context(100)
    assert await limiter(100).access(ctx) is None
    assert ctx.body_limit == 100
    chunked = context(None, chunked=True)
    assert await limiter(100).access(chunked) is None
    assert chunked.body_limit == 100


async def test_the_lowest_limit_wins() -> None:
    ctx = context(None, chunked=True)
    ctx.body_limit = 50
    assert await limiter(100).access(ctx) is None
    assert ctx.body_limit == 50
    ctx.body_limit = 500
    assert await limiter(100).access(ctx) is None
    assert ctx.body_limit == 100


async def test_a_zero_limit_refuses_streamed_bodies_up_front() -> None:
    reply = await limiter(0).access(context(None, chunked=True))
    assert reply is not None
    assert reply.status == 413
    empty = context(0)
    assert await limiter(0).access(empty) is None
    assert empty.body_limit is None
