"""response-cache plugin: config, keys, Cache-Control and Vary rules, TTLs, isolation."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest

from portcullis.analytics.record import Flag
from portcullis.cache import MemoryCache, PurgeScope
from portcullis.identity.consumers import ConsumerInfo
from portcullis.model.config import Consumer
from portcullis.model.plugins.registry import validate_plugin
from portcullis.plugins.base import Headers, PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.registry import PLUGINS, build_plugin
from portcullis.plugins.response_cache import UNKEYED_OVERRIDES, ResponseCache, normalise_query

ALICE = ConsumerInfo.of(Consumer(username="alice"))
BOB = ConsumerInfo.of(Consumer(username="bob"))
BODY = b'{"items": [1, 2, 3]}'


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Rig:
    """A plugin on a memory cache with a clock the test moves."""

    def __init__(self, **config: Any) -> None:
        self.clock = Clock()
        self.cache = MemoryCache(clock=self.clock)
        built = build_plugin(
            "response-cache", config, PluginEnv(cache=self.cache, clock=self.clock)
        )
        assert isinstance(built, ResponseCache)
        self.plugin = built

    def ctx(
        self,
        path: str = "/items",
        *,
        method: str = "GET",
        query: bytes = b"",
        headers: Sequence[tuple[bytes, bytes]] = (),
        consumer: ConsumerInfo | None = None,
        route: str = "items",
        host: bytes = b"api.test",
        scheme: str = "http",
        upstream: Sequence[tuple[bytes, bytes]] = (),
    ) -> RequestContext:
        scope = {
            "type": "http",
            "scheme": scheme,
            "headers": [(b"host", host), *headers],
            "query_string": query,
        }
        compiled = SimpleNamespace(name=route)
        ctx = RequestContext(
            scope, cast(Any, compiled), method, path, "203.0.113.7", "rid", None, list(upstream)
        )
        ctx.consumer = consumer
        return ctx

    async def fetch(
        self,
        ctx: RequestContext,
        *,
        status: int = 200,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes = BODY,
    ) -> PluginResponse | None:
        """The access phase; on a miss, what the proxy would do with an upstream response."""
        reply = await self.plugin.access(ctx)
        if reply is not None:
            return reply
        if ctx.method != "HEAD":
            # The proxy's response headers: upstream's, then its own, then the plugins'.
            out: Headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
                (b"via", b"1.1 portcullis"),
                (b"x-request-id", b"rid"),
                *ctx.response_headers,
            ]
            assert self.plugin.response_body(ctx, status, out, body) is None
        return None

    async def stored_after(self, **upstream: Any) -> bool:
        """Whether a response with these upstream headers/status is stored."""
        self.cache.purge_now(_ALL)
        await self.fetch(self.ctx(), **upstream)
        return len(self.cache) > 0


def header(headers: Headers, name: bytes) -> bytes | None:
    values = [v for n, v in headers if n == name]
    assert len(values) <= 1, (name, headers)
    return values[0] if values else None


_ALL = PurgeScope()


def test_registered_after_rate_limits_and_before_request_transforms() -> None:
    assert PLUGINS["response-cache"] is ResponseCache
    assert ResponseCache.priority < PLUGINS["rate-limit"].priority
    assert ResponseCache.priority < PLUGINS["acl"].priority
    assert ResponseCache.priority > PLUGINS["request-transformer"].priority
    # In the body phase the response-transformer runs first: the final body is stored.
    assert ResponseCache.priority < PLUGINS["response-transformer"].priority
    assert ResponseCache.priority < PLUGINS["request-size-limit"].priority


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"statuses": [204]}, "can't be cached"),
        ({"statuses": [304]}, "can't be cached"),
        ({"statuses": [199]}, "can't be cached"),
        ({"key": ["method", "cookie"]}, "unknown key part"),
        ({"key": ["header:bad name"]}, "invalid header name"),
        ({"key": ["path", "path"]}, "must not repeat"),
        ({"ttl": 100, "max_ttl": 10}, "ttl must not exceed max_ttl"),
        ({"methods": ["POST"]}, "config.methods[0]"),
        ({"content_types": ["json"]}, "invalid media type"),
        ({"max_body_bytes": 9 * 1024 * 1024}, "max_body_bytes"),
        ({"cache_authenticated": "sometimes"}, "cache_authenticated"),
    ],
)
def test_invalid_configs(config: dict[str, Any], error: str) -> None:
    errors = validate_plugin("response-cache", config)
    assert any(error in e for e in errors), errors


def test_query_normalisation_sorts_by_name_and_keeps_repeats_in_order() -> None:
    assert normalise_query(b"b=1&a=2") == b"a=2&b=1"
    assert normalise_query(b"x=2&a=1&x=1") == b"a=1&x=2&x=1"
    assert normalise_query(b"a=1&&b=2&") == b"a=1&b=2"
    assert normalise_query(b"single=1") == b"single=1"


def test_key_layout_and_what_changes_it() -> None:
    rig = Rig(key=["method", "path", "query", "header:accept"])
    key = rig.plugin.key_for
    base = key(rig.ctx(query=b"a=1&b=2"))
    route, path, digest = base.split("|")
    assert (route, path, len(digest)) == ("items", "/items", 32)
    assert key(rig.ctx(query=b"b=2&a=1")) == base
    assert key(rig.ctx(method="HEAD", query=b"a=1&b=2")) == base  # HEAD shares GET's entry
    assert key(rig.ctx(query=b"a=1")) != base
    assert key(rig.ctx(query=b"a=1&b=2", headers=[(b"accept", b"text/csv")])) != base
    assert key(rig.ctx(query=b"a=1&b=2", headers=[(b"x-other", b"1")])) == base
    assert key(rig.ctx("/other", query=b"a=1&b=2")) != base
    assert key(rig.ctx(query=b"a=1&b=2", route="other")).startswith("other|/items|")
    # A query a plugin rewrote (key-auth removing its parameter) is the one keyed.
    ctx = rig.ctx(query=b"apikey=secret&a=1&b=2")
    ctx.query_string = b"a=1&b=2"
    assert key(ctx) == base


def test_the_key_covers_the_normalised_host_and_the_scheme() -> None:
    rig = Rig()
    key = rig.plugin.key_for
    base = key(rig.ctx(host=b"api.test"))
    assert key(rig.ctx(host=b"evil.example")) != base
    assert key(rig.ctx(host=b"api.test:8080")) != base
    assert key(rig.ctx(host=b"api.test", scheme="https")) != base
    # The same origin spelled otherwise: case and the scheme's default port don't matter.
    assert key(rig.ctx(host=b"API.Test")) == base
    assert key(rig.ctx(host=b"api.test:80")) == base
    assert key(rig.ctx(host=b"api.test:443", scheme="https")) == key(
        rig.ctx(host=b"api.test", scheme="https")
    )
    assert key(rig.ctx(host=b"api.test:443")) != base  # not the default port of http


def test_the_key_covers_forwarding_fields_that_name_another_origin() -> None:
    rig = Rig()
    key = rig.plugin.key_for

    def forwarded(host: bytes = b"api.test", **fields: bytes) -> str:
        # As the proxy builds them: its own values unless a trusted proxy sent others.
        upstream = [
            (b"x-forwarded-host", fields.get("xfh", host)),
            (b"x-forwarded-proto", fields.get("xfp", b"http")),
            (b"x-forwarded-port", fields.get("port", b"8000")),
            (b"forwarded", fields.get("fwd", b'for=203.0.113.7;proto=http;host="' + host + b'"')),
        ]
        return key(rig.ctx(host=host, upstream=upstream))

    base = forwarded()
    assert forwarded(b"API.test") == base  # its mirror in X-Forwarded-Host is the Host
    assert forwarded(xfh=b"evil.example") != base
    assert forwarded(xfh=b"API.TEST:80") == base
    assert forwarded(xfp=b"https") != base
    assert forwarded(port=b"443") != base
    ours = b'for=203.0.113.7;proto=http;host="api.test"'
    assert forwarded(fwd=b"for=198.51.100.1;host=evil.example, " + ours) != base
    assert forwarded(fwd=b"for=198.51.100.1;proto=https, " + ours) != base
    # Who the client was (`for`) is not part of the key: it would key every client apart.
    assert forwarded(fwd=b"for=198.51.100.1;host=a.test, " + ours) == forwarded(
        fwd=b"for=198.51.100.2;host=a.test, " + ours
    )


async def test_unkeyed_override_headers_never_reach_the_upstream_of_a_cached_request() -> None:
    overrides = [
        (b"x-original-url", b"/admin"),
        (b"x-rewrite-url", b"/admin"),
        (b"x-http-method-override", b"DELETE"),
        (b"x-forwarded-scheme", b"http"),
        (b"x-host", b"evil.example"),
    ]
    rig = Rig()
    kept = [(b"accept", b"*/*"), (b"x-forwarded-for", b"203.0.113.7")]
    ctx = rig.ctx(upstream=[*kept, *overrides])
    assert await rig.plugin.access(ctx) is None
    assert ctx.upstream_headers == kept
    assert ctx.cache_key is not None
    # Methods the route does not cache are left alone (nothing of theirs is stored).
    post = rig.ctx(method="POST", upstream=[*kept, *overrides])
    assert await rig.plugin.access(post) is None
    assert post.upstream_headers == [*kept, *overrides]
    # A route that keys an override may forward it: responses are stored per value.
    keyed = Rig(key=["method", "path", "header:x-original-url"])
    ctx = keyed.ctx(upstream=[*kept, *overrides])
    assert await keyed.plugin.access(ctx) is None
    assert ctx.upstream_headers == [*kept, (b"x-original-url", b"/admin")]
    assert {name for name, _ in overrides} <= UNKEYED_OVERRIDES


def test_consumers_are_keyed_apart_unless_shared() -> None:
    per_consumer = Rig(key=["path"])
    key = per_consumer.plugin.key_for
    anonymous = key(per_consumer.ctx())
    assert (
        len({anonymous, key(per_consumer.ctx(consumer=ALICE)), key(per_consumer.ctx(consumer=BOB))})
        == 3
    )
    shared = Rig(key=["path"], cache_authenticated="shared")
    assert shared.plugin.key_for(shared.ctx(consumer=ALICE)) == shared.plugin.key_for(
        shared.ctx(consumer=BOB)
    )
    explicit = Rig(key=["path", "consumer"], cache_authenticated="shared")
    assert explicit.plugin.key_for(explicit.ctx(consumer=ALICE)) != explicit.plugin.key_for(
        explicit.ctx(consumer=BOB)
    )
    no_path = Rig(key=["query"])
    assert no_path.plugin.key_for(no_path.ctx("/a")) == no_path.plugin.key_for(no_path.ctx("/b"))
    assert no_path.plugin.key_for(no_path.ctx("/a")).startswith("items||")


async def test_miss_then_hit_with_the_stored_response() -> None:
    rig = Rig()
    ctx = rig.ctx()
    ratelimit = (b"ratelimit", b'"api";r=9;t=1')
    ctx.response_headers.append(ratelimit)
    assert await rig.fetch(ctx, headers=[(b"etag", b'"v1"')]) is None
    assert ctx.flags == Flag.CACHE_MISS
    assert header(ctx.response_headers, b"x-cache") == b"MISS"
    assert ctx.cache_key is not None
    assert ctx.cache_key in rig.cache

    rig.clock.now += 7.4
    again = rig.ctx()
    reply = await rig.fetch(again)
    assert reply is not None
    assert again.flags == Flag.CACHE_HIT
    assert (reply.status, reply.body) == (200, BODY)
    assert header(reply.headers, b"x-cache") == b"HIT"
    assert header(reply.headers, b"age") == b"7"
    assert header(reply.headers, b"etag") == b'"v1"'
    assert header(reply.headers, b"content-type") == b"application/json"
    # Per-delivery headers are not replayed (the proxy adds fresh ones).
    for name in (b"content-length", b"via", b"x-request-id", b"ratelimit"):
        assert header(reply.headers, name) is None, name
    assert again.cache_key is None


async def test_head_is_served_from_the_get_entry_but_never_stored() -> None:
    rig = Rig()
    head = rig.ctx(method="HEAD")
    assert await rig.fetch(head) is None
    assert head.cache_key is None
    assert len(rig.cache) == 0
    await rig.fetch(rig.ctx())
    reply = await rig.fetch(rig.ctx(method="HEAD"))
    assert reply is not None
    assert header(reply.headers, b"x-cache") == b"HIT"
    get_only = Rig(methods=["GET"])
    await get_only.fetch(get_only.ctx())
    assert await get_only.plugin.access(get_only.ctx(method="HEAD")) is None


async def test_other_methods_pass_through_untouched() -> None:
    rig = Rig()
    ctx = rig.ctx(method="POST")
    assert await rig.fetch(ctx) is None
    assert ctx.flags == 0
    assert ctx.response_headers == []
    assert len(rig.cache) == 0


async def test_ttl_defaults_caps_and_expiry() -> None:
    rig = Rig(ttl=30, max_ttl=100)
    await rig.fetch(rig.ctx())
    rig.clock.now += 29.9
    assert await rig.fetch(rig.ctx()) is not None
    rig.clock.now += 0.1
    assert await rig.plugin.access(rig.ctx()) is None  # expired: a miss again

    capped = Rig(ttl=30, max_ttl=100)
    await capped.fetch(capped.ctx(), headers=[(b"cache-control", b"max-age=1000")])
    [(entry, _)] = capped.cache._entries.values()
    assert entry.expires_at - entry.stored_at == 100

    aged = Rig(ttl=30, max_ttl=100)
    await aged.fetch(
        aged.ctx(), headers=[(b"cache-control", b"s-maxage=50, max-age=5"), (b"age", b"20")]
    )
    [(entry, _)] = aged.cache._entries.values()
    assert entry.expires_at - entry.stored_at == 30
    reply = await aged.fetch(aged.ctx())
    assert reply is not None
    assert header(reply.headers, b"age") == b"20"


@pytest.mark.parametrize(
    ("headers", "status", "stored"),
    [
        ([], 200, True),
        ([(b"cache-control", b"no-store")], 200, False),
        ([(b"cache-control", b"private, max-age=60")], 200, False),
        ([(b"cache-control", b"no-cache")], 200, False),
        ([(b"cache-control", b"max-age=0")], 200, False),
        ([(b"cache-control", b"max-age=oops")], 200, False),
        ([(b"expires", b"0")], 200, False),
        ([(b"cache-control", b"max-age=10"), (b"age", b"10")], 200, False),
        ([(b"set-cookie", b"session=1")], 200, False),
        ([(b"content-range", b"bytes 0-1/2")], 200, False),
        ([(b"vary", b"*")], 200, False),
        ([(b"vary", b"Accept, *")], 200, False),
        ([], 404, True),
        ([], 500, False),
        ([], 201, False),
    ],
)
async def test_what_responses_are_stored(
    headers: list[tuple[bytes, bytes]], status: int, stored: bool
) -> None:
    assert await Rig().stored_after(headers=headers, status=status) is stored


async def test_honour_cache_control_off_ignores_directives_but_not_cookies() -> None:
    rig = Rig(honour_cache_control=False, ttl=30)
    assert await rig.stored_after(headers=[(b"cache-control", b"no-store")])
    assert not await rig.stored_after(headers=[(b"set-cookie", b"a=b")])
    await rig.fetch(rig.ctx())
    reply = await rig.plugin.access(rig.ctx(headers=[(b"cache-control", b"no-cache")]))
    assert reply is not None


async def test_size_and_content_type_limits() -> None:
    small = Rig(max_body_bytes=10)
    assert not await small.stored_after(body=b"x" * 11)
    assert await small.stored_after(body=b"x" * 10)
    typed = Rig(content_types=["text/*", "application/json"])
    assert await typed.stored_after()
    assert await typed.stored_after(headers=[(b"content-type", b"TEXT/csv; charset=utf-8")])
    only_csv = Rig(content_types=["text/csv"])
    assert not await only_csv.stored_after()


async def test_request_cache_control() -> None:
    rig = Rig()
    no_store = rig.ctx(headers=[(b"cache-control", b"no-store")])
    assert await rig.fetch(no_store) is None
    assert header(no_store.response_headers, b"x-cache") == b"BYPASS"
    assert no_store.flags == 0
    assert len(rig.cache) == 0

    await rig.fetch(rig.ctx(), body=b"old")
    rig.clock.now += 10
    refresh = rig.ctx(headers=[(b"cache-control", b"no-cache")])
    assert await rig.fetch(refresh, body=b"new") is None
    assert refresh.flags == Flag.CACHE_MISS
    reply = await rig.fetch(rig.ctx())
    assert reply is not None
    assert reply.body == b"new"

    rig.clock.now += 10
    assert await rig.plugin.access(rig.ctx(headers=[(b"cache-control", b"max-age=5")])) is None
    assert await rig.plugin.access(rig.ctx(headers=[(b"cache-control", b"max-age=15")])) is not None
    assert await rig.plugin.access(rig.ctx(headers=[(b"cache-control", b"max-age=0")])) is None
    # Stored for 60 s, 10 s ago: 50 s of freshness left.
    assert await rig.plugin.access(rig.ctx(headers=[(b"cache-control", b"min-fresh=51")])) is None
    assert (
        await rig.plugin.access(rig.ctx(headers=[(b"cache-control", b"min-fresh=49")])) is not None
    )


async def test_vary_selects_variants() -> None:
    rig = Rig()
    vary = [(b"vary", b"Accept-Language, accept-encoding")]
    en = [(b"accept-language", b"en"), (b"accept-encoding", b"gzip, br")]
    fr = [(b"accept-language", b"fr"), (b"accept-encoding", b"gzip,br")]
    await rig.fetch(rig.ctx(headers=en), headers=vary, body=b"hello")
    assert len(rig.cache) == 2  # the marker and the variant
    assert await rig.plugin.access(rig.ctx(headers=fr)) is None
    await rig.fetch(rig.ctx(headers=fr), headers=vary, body=b"bonjour")
    en_again = [(b"accept-encoding", b"gzip,br"), (b"accept-language", b"en")]
    hit_en = await rig.fetch(rig.ctx(headers=en_again))
    hit_fr = await rig.fetch(rig.ctx(headers=fr))
    assert hit_en is not None
    assert hit_en.body == b"hello"
    assert hit_fr is not None
    assert hit_fr.body == b"bonjour"
    assert await rig.plugin.access(rig.ctx()) is None  # no Accept-Language: another variant


async def test_vary_on_a_keyed_header_needs_no_marker() -> None:
    rig = Rig(vary_headers=["Accept-Language"])
    await rig.fetch(
        rig.ctx(headers=[(b"accept-language", b"en")]), headers=[(b"vary", b"accept-language")]
    )
    assert len(rig.cache) == 1
    [(entry, _)] = rig.cache._entries.values()
    assert not entry.variants
    assert entry.vary == ()
    assert await rig.plugin.access(rig.ctx(headers=[(b"accept-language", b"fr")])) is None


async def test_one_consumers_response_is_never_served_to_another() -> None:
    rig = Rig()
    await rig.fetch(rig.ctx(consumer=ALICE), body=b"alice's orders")
    assert await rig.plugin.access(rig.ctx(consumer=BOB)) is None
    assert await rig.plugin.access(rig.ctx()) is None
    reply = await rig.plugin.access(rig.ctx(consumer=ALICE))
    assert reply is not None
    assert reply.body == b"alice's orders"

    never = Rig(cache_authenticated="never")
    ctx = never.ctx(consumer=ALICE)
    assert await never.fetch(ctx) is None
    assert header(ctx.response_headers, b"x-cache") == b"BYPASS"
    assert len(never.cache) == 0
    assert await never.stored_after()  # anonymous requests are still cached


async def test_a_request_with_a_cookie_needs_an_explicit_public_or_a_keyed_cookie() -> None:
    rig = Rig()
    session = [(b"cookie", b"session=alice")]
    await rig.fetch(rig.ctx(headers=session))
    assert len(rig.cache) == 0  # perhaps alice's page: never served to anyone else
    await rig.fetch(rig.ctx(headers=session, consumer=ALICE))
    assert len(rig.cache) == 0
    await rig.fetch(rig.ctx(headers=session), headers=[(b"cache-control", b"public, max-age=60")])
    assert len(rig.cache) == 1
    # A response that varies on the cookie is stored per cookie value.
    rig.cache.purge_now(_ALL)
    await rig.fetch(rig.ctx(headers=session), headers=[(b"vary", b"Cookie")])
    assert len(rig.cache) == 2  # the marker and alice's variant
    assert await rig.plugin.access(rig.ctx(headers=[(b"cookie", b"session=bob")])) is None
    # Keyed by the cookie: each cookie has its own entry anyway.
    keyed = Rig(key=["path", "header:cookie"])
    await keyed.fetch(keyed.ctx(headers=session))
    assert len(keyed.cache) == 1


async def test_upstream_credentials_without_a_consumer_need_an_explicit_public() -> None:
    rig = Rig()
    auth = [(b"authorization", b"Bearer upstream-token")]
    await rig.fetch(rig.ctx(headers=auth))
    assert len(rig.cache) == 0
    await rig.fetch(rig.ctx(headers=auth), headers=[(b"cache-control", b"public, max-age=60")])
    assert len(rig.cache) == 1
    # With a consumer the gateway knows who asked: the consumer is in the key.
    assert await rig.stored_after()
    assert len(rig.cache) == 1
    ctx = rig.ctx(headers=auth, consumer=ALICE)
    rig.cache.purge_now(_ALL)
    await rig.fetch(ctx)
    assert len(rig.cache) == 1
    # Keyed by the credential itself: each credential has its own entry anyway.
    keyed = Rig(key=["path", "header:authorization"])
    await keyed.fetch(keyed.ctx(headers=auth))
    assert len(keyed.cache) == 1
    assert (
        await keyed.plugin.access(keyed.ctx(headers=[(b"authorization", b"Bearer other")])) is None
    )
