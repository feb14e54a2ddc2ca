"""key-auth: where keys are read from, every refusal and its challenge, identity headers
sent upstream, spoofing and credential stripping, anonymous access and store outages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from ipaddress import ip_network
from typing import Any, cast

import pytest

from portcullis.identity.consumers import ConsumerIndex
from portcullis.identity.credential_cache import CredentialCache
from portcullis.identity.key_records import KeyRecord, KeyStatus
from portcullis.identity.keys import Environment, generate_key
from portcullis.identity.secrets import ServerSecret
from portcullis.model.config import Consumer, ConsumerStatus
from portcullis.model.plugins.registry import validate_plugin
from portcullis.plugins.base import PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.key_auth import KeyAuth
from portcullis.plugins.registry import PLUGINS, build_plugin

SECRET = ServerSecret.from_secret(b"unit-test-secret-0123456789abcdef!")
NOW = 1_750_000_000.0
KEY_ID = "Kq3ZT8wq1bXa"


class Store:
    """In-memory KeyLookup."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyRecord] = {}
        self.fail = False
        self.finds = 0

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        self.finds += 1
        if self.fail:
            raise ConnectionError("store down")
        return self.keys.get(key_hash)

    async def touch_used(self, stamps: dict[str, datetime]) -> None:
        return None


def base_record(**changes: Any) -> KeyRecord:
    rec = KeyRecord(
        id=KEY_ID,
        consumer="alice",
        name="ci",
        environment=Environment.production,
        scopes=frozenset({"orders:write", "orders:read"}),
        status=KeyStatus.active,
        status_reason=None,
        expires_at=None,
        grace_until=None,
        allowed_origins=frozenset(),
        ip_allowlist=(),
        plan=None,
    )
    return replace(rec, **changes)


class Harness:
    def __init__(self, record: KeyRecord | None = None, **config: Any) -> None:
        self.store = Store()
        self.key = generate_key(Environment.production, KEY_ID)[1]
        if record is None:
            record = base_record()
        self.store.keys[SECRET.hash_credential(self.key)] = record
        self.cache = CredentialCache(self.store, SECRET)
        consumers = ConsumerIndex(
            [
                Consumer(username="alice", custom_id="c-1", groups=["staff"]),
                Consumer(username="bob", status=ConsumerStatus.suspended),
                Consumer(username="guest"),
            ]
        )
        env = PluginEnv(consumers=consumers, credentials=self.cache, clock=lambda: NOW)
        plugin = build_plugin("key-auth", config, env)
        assert isinstance(plugin, KeyAuth)
        self.plugin = plugin

    async def call(
        self,
        headers: Sequence[tuple[bytes, bytes]] = (),
        *,
        query: bytes = b"",
        client_ip: str = "192.0.2.10",
    ) -> tuple[PluginResponse | None, RequestContext]:
        received = [(b"host", b"api.test"), *headers]
        scope = {"type": "http", "headers": received, "query_string": query}
        upstream = [*received, (b"x-forwarded-for", client_ip.encode())]
        ctx = RequestContext(
            scope, cast(Any, None), "GET", "/orders", client_ip, "rid", None, upstream
        )
        return await self.plugin.access(ctx), ctx


def bearer(key: str) -> tuple[bytes, bytes]:
    return (b"authorization", b"Bearer " + key.encode())


def problem(reply: PluginResponse | None) -> dict[str, Any]:
    assert reply is not None
    assert (b"content-type", b"application/problem+json") in reply.headers
    body: dict[str, Any] = json.loads(reply.body)
    assert body["status"] == reply.status
    return body


def refused(reply: PluginResponse | None, status: int) -> PluginResponse:
    assert reply is not None
    assert reply.status == status
    return reply


def challenges(reply: PluginResponse) -> list[str]:
    return [v.decode() for n, v in reply.headers if n == b"www-authenticate"]


def upstream_names(ctx: RequestContext) -> list[bytes]:
    return [n for n, _ in ctx.upstream_headers]


def test_registered_and_refuses_to_build_without_a_credential_cache() -> None:
    assert PLUGINS["key-auth"] is KeyAuth
    with pytest.raises(ValueError, match="credential cache"):
        build_plugin("key-auth", {}, PluginEnv())


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"header_names": ["x api key"]}, "not a valid header name"),
        ({"realm": 'a"b'}, "quotes"),
        ({"query_param": ""}, "at least 1 character"),
        ({"unknown": 1}, "Extra inputs"),
    ],
)
def test_config_errors(config: dict[str, Any], error: str) -> None:
    (message,) = validate_plugin("key-auth", config)
    assert error in message


async def test_bearer_key_sets_identity_and_sends_identity_headers_upstream() -> None:
    h = Harness()
    reply, ctx = await h.call([bearer(h.key), (b"accept", b"*/*")])
    assert reply is None
    assert ctx.consumer is not None
    assert ctx.consumer.username == "alice"
    assert ctx.credential_id == KEY_ID
    assert ctx.scopes == {"orders:read", "orders:write"}
    up = dict(ctx.upstream_headers)
    assert up[b"x-consumer-id"] == b"alice"
    assert up[b"x-consumer-name"] == b"alice"
    assert up[b"x-consumer-custom-id"] == b"c-1"
    assert up[b"x-consumer-groups"] == b"staff"
    assert up[b"x-credential-id"] == KEY_ID.encode()
    assert up[b"x-consumer-scopes"] == b"orders:read orders:write"
    assert b"authorization" not in up
    assert up[b"accept"] == b"*/*"
    assert h.cache.pending_uses == 1


async def test_client_sent_identity_headers_are_replaced_not_trusted() -> None:
    h = Harness()
    spoofed = [
        (b"x-consumer-id", b"admin"),
        (b"x-consumer-groups", b"root"),
        (b"x-credential-id", b"forged"),
        (b"x-anonymous-consumer", b"true"),
    ]
    reply, ctx = await h.call([*spoofed, (b"x-api-key", h.key.encode())])
    assert reply is None
    names = upstream_names(ctx)
    assert names.count(b"x-consumer-id") == names.count(b"x-credential-id") == 1
    up = dict(ctx.upstream_headers)
    assert up[b"x-consumer-id"] == b"alice"
    assert up[b"x-consumer-groups"] == b"staff"
    assert b"x-anonymous-consumer" not in up
    assert b"x-api-key" not in up


async def test_hide_credentials_off_forwards_the_key() -> None:
    h = Harness(hide_credentials=False)
    reply, ctx = await h.call([(b"x-api-key", h.key.encode())])
    assert reply is None
    assert dict(ctx.upstream_headers)[b"x-api-key"] == h.key.encode()


async def test_header_precedence_follows_the_configured_order() -> None:
    wrong = generate_key(Environment.production)[1]
    h = Harness()
    reply, _ = await h.call([(b"x-api-key", wrong.encode()), bearer(h.key)])
    assert reply is None
    h = Harness(header_names=["X-API-Key", "authorization"])
    reply, _ = await h.call([bearer(h.key), (b"x-api-key", wrong.encode())])
    reply = refused(reply, 401)


async def test_other_authorization_schemes_are_not_ours_and_are_forwarded() -> None:
    h = Harness(anonymous="guest")
    reply, ctx = await h.call([(b"authorization", b"Basic dTpw")])
    assert reply is None
    assert ctx.consumer is not None
    assert ctx.consumer.username == "guest"
    assert dict(ctx.upstream_headers)[b"authorization"] == b"Basic dTpw"


async def test_missing_key_is_401_with_a_challenge_per_way_to_send_one() -> None:
    h = Harness()
    reply, _ = await h.call([])
    body = problem(reply)
    reply = refused(reply, 401)
    assert body["type"] == "https://portcullis.dev/problems/unauthorized"
    # The refusal names where the key goes: in words, as data, and in the challenges.
    assert body["detail"] == (
        "An API key is required: send it in `Authorization: Bearer <key>` or the "
        "`X-Api-Key` header."
    )
    assert body["expected_credentials"] == [
        {"in": "header", "name": "Authorization", "scheme": "Bearer"},
        {"in": "header", "name": "X-Api-Key"},
    ]
    assert challenges(reply) == [
        'Bearer realm="portcullis"',
        'Key realm="portcullis", header="X-Api-Key"',
    ]
    only_bearer = Harness(header_names=["authorization"], realm="orders")
    reply, _ = await only_bearer.call([(b"x-api-key", only_bearer.key.encode())])
    assert challenges(refused(reply, 401)) == ['Bearer realm="orders"']
    by_query = Harness(header_names=["x-key"], query_param="apikey")
    reply, _ = await by_query.call([])
    body = problem(reply)
    assert body["detail"] == (
        "An API key is required: send it in the `X-Key` header or the `apikey` query parameter."
    )
    assert challenges(refused(reply, 401)) == [
        'Key realm="portcullis", header="X-Key", query="apikey"'
    ]


async def test_unknown_and_malformed_keys_get_the_same_answer() -> None:
    h = Harness()
    unknown = generate_key(Environment.production)[1]
    malformed = h.key[:-1] + ("x" if h.key[-1] != "x" else "y")
    replies = [(await h.call([bearer(k)]))[0] for k in (unknown, malformed, "legacy-nope")]
    first = refused(replies[0], 401)
    assert all(
        r is not None and (r.body, r.headers) == (first.body, first.headers) for r in replies
    )
    assert problem(first)["detail"] == "Invalid API key."
    assert challenges(first) == [
        'Bearer realm="portcullis", error="invalid_token", error_description="invalid API key"'
    ]
    # Sent as X-API-Key, the same refusal is issued under the Key scheme.
    reply, _ = await h.call([(b"x-api-key", unknown.encode())])
    assert challenges(refused(reply, 401))[0].startswith(
        'Key realm="portcullis", header="X-Api-Key", error='
    )


@pytest.mark.parametrize(
    ("changes", "description"),
    [
        ({"status": KeyStatus.revoked, "status_reason": "leaked on pastebin"}, "revoked"),
        ({"status": KeyStatus.suspended, "status_reason": "unpaid"}, "suspended"),
        ({"expires_at": NOW - 1}, "has expired"),
        ({"expires_at": NOW}, "has expired"),
        ({"grace_until": NOW - 1}, "was rotated and has expired"),
        ({"consumer": "bob"}, "consumer of this API key is suspended"),
        ({"consumer": "deleted-user"}, "invalid API key"),
    ],
)
async def test_refused_keys_say_why_without_the_operators_reason(
    changes: dict[str, Any], description: str
) -> None:
    h = Harness(base_record(**changes))
    reply, ctx = await h.call([bearer(h.key)])
    body = problem(reply)
    reply = refused(reply, 401)
    assert description in challenges(reply)[0]
    assert description.lower() in body["detail"].lower()
    assert "pastebin" not in reply.body.decode()
    assert "unpaid" not in reply.body.decode()
    assert ctx.consumer is None
    assert h.cache.pending_uses == 0


async def test_keys_within_expiry_and_rotation_grace_still_work() -> None:
    h = Harness(base_record(expires_at=NOW + 60, grace_until=NOW + 1))
    reply, _ = await h.call([bearer(h.key)])
    assert reply is None


@pytest.mark.parametrize(
    ("allowlist", "client_ip", "allowed"),
    [
        (["10.0.0.0/8"], "10.1.2.3", True),
        (["10.0.0.0/8"], "192.0.2.10", False),
        (["2001:db8::/32"], "2001:db8::7", True),
        (["2001:db8::/32"], "2001:db9::7", False),
        (["192.0.2.0/24"], "::ffff:192.0.2.10", True),
        (["192.0.2.0/24"], "not-an-ip", False),
    ],
)
async def test_ip_allowlist(allowlist: list[str], client_ip: str, allowed: bool) -> None:
    nets = tuple(ip_network(n) for n in allowlist)
    h = Harness(base_record(ip_allowlist=nets))
    reply, _ = await h.call([bearer(h.key)], client_ip=client_ip)
    if allowed:
        assert reply is None
    else:
        reply = refused(reply, 403)
        assert problem(reply)["type"] == "https://portcullis.dev/problems/forbidden"
        assert challenges(reply) == []


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (b"https://app.example.com", True),
        (b"https://APP.example.com", True),
        (b"https://evil.example.com", False),
        (None, False),
    ],
)
async def test_allowed_origins(origin: bytes | None, allowed: bool) -> None:
    h = Harness(base_record(allowed_origins=frozenset({"https://app.example.com"})))
    extra = [(b"origin", origin)] if origin is not None else []
    reply, _ = await h.call([bearer(h.key), *extra])
    assert (reply is None) is allowed
    if reply is not None:
        assert reply.status == 403
        assert "origin" in problem(reply)["detail"]


async def test_query_parameter_is_opt_in_and_removed_before_proxying() -> None:
    h = Harness()
    reply, _ = await h.call([], query=b"apikey=" + h.key.encode())
    reply = refused(reply, 401)
    h = Harness(query_param="api key")
    query = b"a=1&api+key=" + h.key.encode() + b"&b=%20x&api%20key=dup"
    reply, ctx = await h.call([], query=query)
    assert reply is None
    assert ctx.credential_id == KEY_ID
    assert ctx.query_string == b"a=1&b=%20x"
    # Without hiding, the query is left as it was.
    h = Harness(query_param="k", hide_credentials=False)
    reply, ctx = await h.call([], query=b"k=" + h.key.encode())
    assert reply is None
    assert ctx.query_string is None


async def test_anonymous_consumer_is_used_only_when_no_key_is_sent() -> None:
    h = Harness(anonymous="guest")
    reply, ctx = await h.call([(b"x-consumer-id", b"admin")])
    assert reply is None
    assert ctx.consumer is not None
    assert ctx.consumer.username == "guest"
    assert ctx.credential_id is None
    assert ctx.scopes == frozenset()
    up = dict(ctx.upstream_headers)
    assert up[b"x-consumer-id"] == b"guest"
    assert up[b"x-anonymous-consumer"] == b"true"
    reply, ctx = await h.call([bearer(generate_key(Environment.production)[1])])
    reply = refused(reply, 401)
    assert ctx.consumer is None


async def test_anonymous_consumer_missing_from_config_fails_closed() -> None:
    h = Harness(anonymous="nobody")
    reply, _ = await h.call([])
    reply = refused(reply, 401)


async def test_store_outage_is_503_not_401_and_recovers() -> None:
    h = Harness()
    h.store.fail = True
    reply, _ = await h.call([bearer(h.key)])
    body = problem(reply)
    reply = refused(reply, 503)
    assert body["type"] == "https://portcullis.dev/problems/credentials-unavailable"
    assert (b"retry-after", b"1") in reply.headers
    h.store.fail = False
    reply, _ = await h.call([bearer(h.key)])
    assert reply is None


async def test_repeated_requests_hit_the_cache_and_send_the_same_identity() -> None:
    h = Harness()
    _, first = await h.call([bearer(h.key)])
    _, second = await h.call([bearer(h.key)])
    assert h.store.finds == 1
    assert first.upstream_headers[-3:] == second.upstream_headers[-3:]
