"""hmac-auth: RFC 9421 signatures made by an independent client (http-message-signatures),
every refusal and its challenge, the clock-skew window, replay protection (memory and
Redis-shaped), Content-Digest, tenant isolation and identity."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from portcullis.identity.credential_store import CredentialKind
from portcullis.plugins.base import PluginResponse
from portcullis.plugins.hmac_auth import HmacAuth, MemoryNonces
from portcullis.plugins.message_signatures import (
    Malformed,
    parse_signature_inputs,
)
from support.auth_credentials import NOW, Harness, header, problem, record, sign_request, upstream

KEY = "pch_0123456789abcdef01234567"
SECRET_BYTES = b"hmac-shared-secret-of-alice-0001"


def harness(**config: Any) -> Harness:
    h = Harness("hmac-auth", dict(config))
    h.store.add(record(CredentialKind.HMAC, KEY, "alice", SECRET_BYTES))
    h.store.add(record(CredentialKind.HMAC, "pch_bob", "bob", b"bob-secret"))
    h.store.add(record(CredentialKind.HMAC, "pch_mallory", "mallory", b"m-secret"))
    return h


def signed(
    method: str = "GET",
    url: str = "http://api.test/orders?limit=5",
    *,
    key: str = KEY,
    secret: bytes = SECRET_BYTES,
    created: float = NOW,
    **kw: Any,
) -> list[tuple[bytes, bytes]]:
    headers = sign_request(method, url, key, secret, created=created, **kw)
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()]


async def call(h: Harness, headers: list[tuple[bytes, bytes]], **kw: Any) -> tuple[Any, Any]:
    kw.setdefault("query", b"limit=5")
    return await h.call(headers, **kw)


def detail(reply: PluginResponse | None) -> str:
    return str(problem(reply)["detail"])


async def test_a_signature_from_an_independent_client_is_accepted() -> None:
    h = harness()
    assert isinstance(h.plugin, HmacAuth)
    reply, ctx = await call(h, [*signed(), (b"x-consumer-id", b"spoof")])
    assert reply is None
    assert ctx.consumer.username == "alice"
    sent = upstream(ctx)
    assert sent[b"x-consumer-id"] == b"alice"
    assert b"signature" not in sent
    assert b"signature-input" not in sent


async def test_target_uri_and_a_default_port_are_understood() -> None:
    h = harness()
    by_uri = signed(components=("@method", "@target-uri"), nonce="u")
    assert (await call(h, by_uri))[0] is None
    # The client's URL names the default port; @authority drops it on both sides.
    with_port = signed(url="http://api.test:80/orders?limit=5", nonce="p")
    assert (await call(h, with_port))[0] is None


async def test_missing_signature_names_what_is_expected() -> None:
    reply, _ = await call(harness(), [])
    body = problem(reply)
    assert reply is not None
    assert header(reply, b"www-authenticate") == [
        'Signature realm="portcullis", alg="hmac-sha256", headers="@method @authority @path"'
    ]
    assert header(reply, b"accept-signature") == [
        'sig1=("@method" "@authority" "@path");alg="hmac-sha256";created;nonce'
    ]
    assert "`Signature-Input` and `Signature`" in body["detail"]
    assert body["expected_credentials"] == [
        {"in": "header", "name": "Signature-Input"},
        {"in": "header", "name": "Signature"},
    ]


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        (lambda: signed(secret=b"wrong"), "invalid signature"),
        (lambda: signed(key="pch_unknown"), "invalid signature"),
        (lambda: signed(key="pch_mallory", secret=b"m-secret"), "invalid signature"),
        (lambda: signed(created=NOW - 301), "clock skew"),
        (lambda: signed(created=NOW + 301), "clock skew"),
        (lambda: signed(nonce=None), "no nonce"),
        (lambda: signed(components=("@method", "@path")), "required components"),
        (lambda: signed(method="POST"), "invalid signature"),  # sent as GET
        (
            lambda: [(b"signature-input", b"sig1=(@method)"), (b"signature", b"sig1=:AA==:")],
            "malformed",
        ),
    ],
)
async def test_refusals(headers: Any, words: str) -> None:
    reply, ctx = await call(harness(), headers())
    assert words in detail(reply).lower()
    assert ctx.consumer is None


async def test_skew_is_configurable_and_nonce_optional() -> None:
    h = harness(clock_skew=30, require_nonce=False)
    assert (await call(h, signed(created=NOW - 20, nonce=None)))[0] is None
    assert "clock skew" in detail((await call(h, signed(created=NOW - 40)))[0])


async def test_a_replayed_nonce_is_refused_and_a_fresh_one_accepted() -> None:
    h = harness()
    headers = signed(nonce="once")
    assert (await call(h, headers))[0] is None
    assert "already used" in detail((await call(h, headers))[0])
    assert (await call(h, signed(nonce="twice")))[0] is None
    # A bad signature never burns a nonce.
    assert "invalid" in detail((await call(h, signed(nonce="n9", secret=b"x")))[0]).lower()
    assert (await call(h, signed(nonce="n9")))[0] is None


async def test_memory_nonces_are_bounded_and_expire() -> None:
    nonces = MemoryNonces(capacity=2)
    assert await nonces.first_use("a", 0, 10)
    assert not await nonces.first_use("a", 5, 10)
    assert await nonces.first_use("a", 11, 10)  # expired
    assert await nonces.first_use("b", 12, 10)
    assert await nonces.first_use("c", 12, 10)
    assert len(nonces._seen) == 2


class FakeRedis:
    """The `SET NX PX` a Redis nonce store issues (the real one: tests/integration)."""

    pipe = None  # the redis-py path (the pipelined one: tests/integration)

    def __init__(self) -> None:
        self.client = self
        self.keys: dict[str, bytes] = {}
        self.fail = False

    async def set(self, key: str, value: bytes, *, nx: bool, px: int) -> bool | None:
        if self.fail:
            raise ConnectionError("redis down")
        assert nx
        assert px == 600_000
        if key in self.keys:
            return None
        self.keys[key] = value
        return True


async def test_redis_nonces_are_shared_and_an_outage_is_503() -> None:
    redis = FakeRedis()
    h1 = Harness("hmac-auth", {"nonce_store": "redis"}, redis=redis)
    h1.store.add(record(CredentialKind.HMAC, KEY, "alice", SECRET_BYTES))
    headers = signed(nonce="shared")
    assert (await call(h1, headers))[0] is None
    h2 = Harness("hmac-auth", {"nonce_store": "redis"}, redis=redis)
    h2.store.add(record(CredentialKind.HMAC, KEY, "alice", SECRET_BYTES))
    h2.plugin.nonces._prefix = h1.plugin.nonces._prefix  # type: ignore[attr-defined]
    assert "already used" in detail((await call(h2, headers))[0])
    redis.fail = True
    assert problem((await call(h1, signed(nonce="x")))[0], 503)
    with pytest.raises(ValueError, match="REDIS_URL"):
        Harness("hmac-auth", {"nonce_store": "redis"})


async def test_a_body_needs_a_signed_content_digest_that_matches() -> None:
    h = harness()
    body = b'{"item": 1}'
    headers = signed("POST", body=body)
    reply, ctx = await call(h, headers, method="POST", content_length=len(body))
    assert reply is None
    assert ctx.body_limit is not None
    assert h.plugin.request_body(ctx, body) is None
    assert "does not match" in detail(h.plugin.request_body(ctx, b'{"item": 2}'))  # type: ignore[arg-type]
    # A body whose digest is not signed is refused in the access phase.
    unsigned = signed("POST")
    reply, _ = await call(h, unsigned, method="POST", content_length=len(body))
    assert "content-digest" in detail(reply)


async def test_a_body_without_a_length_still_needs_its_digest() -> None:
    # HTTP/2 may send a body with neither Content-Length nor Transfer-Encoding: the
    # access phase can't see it, the body phase refuses it without a digest.
    h = harness()
    reply, ctx = await call(h, signed("POST"), method="POST")
    assert reply is None
    assert ctx.body_limit is not None
    assert "content-digest" in detail(h.plugin.request_body(ctx, b"sneaky"))  # type: ignore[arg-type]


def test_content_digest_of_sha512_is_understood() -> None:
    h = harness()
    body = b"abc"
    digest = base64.b64encode(hashlib.sha512(body).digest()).decode()
    ctx = h.context([(b"content-digest", f"sha-512=:{digest}:".encode())])
    ctx.consumer = object()  # type: ignore[assignment]
    ctx.credential_id = "cc"
    assert h.plugin.request_body(ctx, body) is None


async def test_suspended_consumer_and_store_outage() -> None:
    h = harness()
    assert "suspended" in detail((await call(h, signed(key="pch_bob", secret=b"bob-secret")))[0])
    h.store.fail = True
    assert problem((await call(h, signed(nonce="o")))[0], 503)


def test_signature_input_parsing() -> None:
    (parsed,) = parse_signature_inputs(
        'sig1=("@method" "content-digest");created=1;keyid="k";alg="hmac-sha256";nonce="n"'
    )
    assert parsed.components == ("@method", "content-digest")
    assert parsed.serialized() == (
        '("@method" "content-digest");created=1;keyid="k";alg="hmac-sha256";nonce="n"'
    )
    for bad in ['sig1=("@method";sf)', 'sig1=("a" "b"', "sig1=(a),", 'sig1=("\\x")']:
        with pytest.raises(Malformed):
            parse_signature_inputs(bad)
