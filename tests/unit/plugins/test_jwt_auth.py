"""jwt-auth without a network: static keys, gateway tokens, and pre-filled JWKS sources."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt import PyJWK
from jwt.algorithms import get_default_algorithms
from pydantic import ValidationError

from portcullis.identity.consumers import ConsumerIndex
from portcullis.identity.jwks import JwksRegistry, KeySet
from portcullis.model.config import Consumer, ConsumerStatus
from portcullis.model.plugins.jwt_auth import JwtAuthConfig
from portcullis.model.plugins.registry import validate_plugin
from portcullis.plugins.base import PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.jwt_auth import JwtAuth
from portcullis.plugins.registry import PLUGINS

NOW = 1_750_000_000.0
SECRETS = {"HS256": "a" * 32, "HS384": "b" * 48, "HS512": "c" * 64}
CONSUMERS = ConsumerIndex(
    [
        Consumer(username="alice", custom_id="cust-1", groups=["staff"]),
        Consumer(username="bob", status=ConsumerStatus.suspended),
        Consumer(username="guest"),
    ]
)


# -- keys ----------------------------------------------------------------------------


@dataclass
class KeyPair:
    algorithm: str
    private: Any
    public: Any

    @property
    def pem(self) -> str:
        return bytes(
            self.public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).decode()

    def jwk(self, kid: str | None = None, *, alg: bool = True) -> dict[str, Any]:
        data = get_default_algorithms()[self.algorithm].to_jwk(self.public, as_dict=True)
        if kid is not None:
            data["kid"] = kid
        if alg:
            data["alg"] = self.algorithm
        return data


def _generate(algorithm: str) -> KeyPair:
    private: Any
    if algorithm[0] in "RP":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}
        private = ec.generate_private_key(curve[algorithm])
    return KeyPair(algorithm, private, private.public_key())


ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
ASYMMETRIC.append("EdDSA")


@pytest.fixture(scope="module")
def pairs() -> dict[str, KeyPair]:
    """One key pair per asymmetric algorithm; RSA pairs are shared by RS*/PS*."""
    rsa_pair = _generate("RS256")
    out: dict[str, KeyPair] = {}
    for alg in ASYMMETRIC:
        if alg[0] in "RP":
            out[alg] = KeyPair(alg, rsa_pair.private, rsa_pair.public)
        else:
            out[alg] = _generate(alg)
    return out


def sign(claims: dict[str, Any], key: Any, algorithm: str, **header: Any) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers=header or None)


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "iat": NOW - 10, "exp": NOW + 300, **extra}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand, for what PyJWT refuses to produce."""
    h = b64(json.dumps(header).encode())
    p = b64(json.dumps(payload).encode())
    return f"{h}.{p}.{b64(signature)}"


def hs256_raw(header: dict[str, Any], payload: dict[str, Any]) -> str:
    """A correctly signed HS256 token whose claims PyJWT would refuse to encode."""
    h = b64(json.dumps(header).encode())
    p = b64(json.dumps(payload).encode())
    mac = hmac.new(SECRETS["HS256"].encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64(mac)}"


# -- plumbing ------------------------------------------------------------------------


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeIssuer:
    """`IssuerKeys` of a gateway whose OAuth2 server signs with one RSA key."""

    issuer: str
    keys: dict[str, PyJWK]
    revoked: set[str] = field(default_factory=set)

    def key_for(self, kid: str) -> PyJWK | None:
        return self.keys.get(kid)

    def is_revoked(self, jti: str) -> bool:
        return jti in self.revoked

    def client_revoked(self, client_id: str) -> bool:
        return "client:" + client_id in self.revoked


def make_ctx(
    headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b""
) -> RequestContext:
    hs = headers or []
    scope: dict[str, Any] = {"type": "http", "headers": hs, "query_string": query}
    return RequestContext(scope, cast(Any, None), "GET", "/x", "127.0.0.1", "rid", None, list(hs))


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


def build(
    config: dict[str, Any],
    *,
    clock: Clock | None = None,
    issuer: FakeIssuer | None = None,
    jwks: JwksRegistry | None = None,
) -> JwtAuth:
    config = {"gateway_tokens": issuer is not None, **config}
    env = PluginEnv(
        consumers=CONSUMERS,
        clock=clock or Clock(),
        issuer_keys=issuer,
        jwks=jwks,
    )
    return JwtAuth(JwtAuthConfig.model_validate(config), env)


def hs_key(kid: str | None = "hk", algorithm: str = "HS256") -> dict[str, Any]:
    return {"kid": kid, "algorithm": algorithm, "secret": SECRETS[algorithm]}


async def run(plugin: JwtAuth, ctx: RequestContext) -> PluginResponse | None:
    return await plugin.access(ctx)


async def reject_reason(plugin: JwtAuth, token: str, status: int = 401) -> str:
    """The `error_description` of a refused token (asserting the status and challenge)."""
    reply = await plugin.access(make_ctx(bearer(token)))
    assert reply is not None, "token was accepted"
    assert reply.status == status
    assert dict(reply.headers)[b"content-type"] == b"application/problem+json"
    if status == 503:
        return str(json.loads(reply.body)["detail"])
    challenge = dict(reply.headers)[b"www-authenticate"].decode()
    assert challenge.startswith('Bearer realm="portcullis", error="invalid_token", ')
    return challenge.split('error_description="', 1)[1].rstrip('"')


# -- algorithms ----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
async def test_hmac_algorithms(algorithm: str) -> None:
    plugin = build({"keys": [hs_key("k", algorithm)]})
    token = sign(claims(), SECRETS[algorithm], algorithm, kid="k")
    ctx = make_ctx(bearer(token))
    assert await run(plugin, ctx) is None
    assert ctx.consumer is not None
    assert ctx.consumer.username == "alice"
    assert ctx.credential_id == "jwt:k"


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
@pytest.mark.parametrize("form", ["pem", "jwk"])
async def test_asymmetric_algorithms(algorithm: str, form: str, pairs: dict[str, KeyPair]) -> None:
    pair = pairs[algorithm]
    key: dict[str, Any] = {"kid": "k", "algorithm": algorithm}
    key.update({"public_key": pair.pem} if form == "pem" else {"jwk": pair.jwk()})
    plugin = build({"keys": [key]})
    ctx = make_ctx(bearer(sign(claims(), pair.private, algorithm, kid="k")))
    assert await run(plugin, ctx) is None
    assert ctx.consumer is not None
    assert ctx.consumer.username == "alice"
    # The same key with a forged signature is refused.
    other = _generate(algorithm if algorithm[0] not in "RP" else "RS256")
    forged = sign(claims(), other.private, algorithm, kid="k")
    assert await reject_reason(plugin, forged) == "bad signature"


@pytest.mark.parametrize("algorithm", ["HS256", *ASYMMETRIC])
@pytest.mark.parametrize("signature", [b"", b"x", b"\x00" * 600])
async def test_garbage_signatures(
    algorithm: str, signature: bytes, pairs: dict[str, KeyPair]
) -> None:
    if algorithm.startswith("HS"):
        key = hs_key("k", algorithm)
    else:
        key = {"kid": "k", "algorithm": algorithm, "public_key": pairs[algorithm].pem}
    plugin = build({"keys": [key]})
    token = hand_made({"alg": algorithm, "kid": "k"}, claims(), signature)
    assert await reject_reason(plugin, token) == "bad signature"


async def test_token_without_kid_uses_keys_pinned_to_its_algorithm(
    pairs: dict[str, KeyPair],
) -> None:
    plugin = build(
        {
            "keys": [
                {"algorithm": "ES256", "public_key": pairs["ES256"].pem},
                {"algorithm": "RS256", "public_key": pairs["RS256"].pem},
            ]
        }
    )
    ctx = make_ctx(bearer(sign(claims(iss="idp"), pairs["RS256"].private, "RS256")))
    assert await run(plugin, ctx) is None
    assert ctx.credential_id == "jwt:idp"
    ctx = make_ctx(bearer(sign(claims(), pairs["ES256"].private, "ES256")))
    assert await run(plugin, ctx) is None
    assert ctx.credential_id == "jwt"


# -- attacks -------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_is_always_refused(alg: str) -> None:
    plugin = build({"keys": [hs_key(None)]})
    token = hand_made({"alg": alg, "typ": "JWT"}, claims())
    assert await reject_reason(plugin, token) == "unsupported algorithm"
    assert await reject_reason(plugin, token + "AAAA") == "unsupported algorithm"


async def test_hs256_signed_with_the_rsa_public_key_is_refused(
    pairs: dict[str, KeyPair],
) -> None:
    """The classic confusion attack: the attacker knows the public PEM and uses it as secret."""
    pem = pairs["RS256"].pem
    plugin = build({"keys": [{"kid": "rsa", "algorithm": "RS256", "public_key": pem}]})
    for header in ({"alg": "HS256", "kid": "rsa"}, {"alg": "HS256"}):
        h = b64(json.dumps(header).encode())
        p = b64(json.dumps(claims()).encode())
        mac = hmac.new(pem.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
        token = f"{h}.{p}.{b64(mac)}"
        reason = await reject_reason(plugin, token)
        assert reason in ("algorithm not allowed for this key", "algorithm not allowed")


async def test_rs_token_never_checked_with_an_hmac_key(pairs: dict[str, KeyPair]) -> None:
    plugin = build({"keys": [hs_key("shared")]})
    token = sign(claims(), pairs["RS256"].private, "RS256", kid="shared")
    assert await reject_reason(plugin, token) == "algorithm not allowed for this key"
    token = sign(claims(), pairs["RS256"].private, "RS256")
    assert await reject_reason(plugin, token) == "algorithm not allowed"


async def test_pinned_algorithm_within_a_family(pairs: dict[str, KeyPair]) -> None:
    """An RS256-pinned key does not verify PS256 or RS512 tokens made with the same key."""
    pair = pairs["RS256"]
    plugin = build({"keys": [{"kid": "r", "algorithm": "RS256", "public_key": pair.pem}]})
    for alg in ("PS256", "RS512"):
        token = sign(claims(), pair.private, alg, kid="r")
        assert await reject_reason(plugin, token) == "algorithm not allowed for this key"


def test_hmac_secret_that_is_a_public_key_is_refused(pairs: dict[str, KeyPair]) -> None:
    with pytest.raises(ValidationError):
        JwtAuthConfig.model_validate(
            {"keys": [{"algorithm": "HS256", "secret": pairs["RS256"].pem}]}
        )


async def test_malformed_tokens() -> None:
    plugin = build({"keys": [hs_key()]})
    good = sign(claims(), SECRETS["HS256"], "HS256", kid="hk")
    h, p, s = good.split(".")
    for token in (
        "abc",
        f"{h}.{p}",
        f"{h}.{p}.{s}.x",
        f"!!!.{p}.{s}",
        f"{b64(b'[1]')}.{p}.{s}",
        f"{h}.{b64(b'not json')}.{s}",
        "x" * 9000,
        # JSON nested past the decoder's recursion limit, in a 3 kB header.
        f"{h}.{b64(b'[' * 1100 + b']' * 1100)}.{s}",
    ):
        assert await reject_reason(plugin, token) == "malformed token"
    reply = await plugin.access(make_ctx([(b"authorization", "Bearer é.b.c".encode())]))
    assert reply is not None
    assert reply.status == 401


async def test_odd_json_types_are_refused_not_crashed() -> None:
    plugin = build({"keys": [hs_key()], "audiences": ["orders"]})
    cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({"alg": ["HS256"], "kid": "hk"}, claims(aud="orders"), "unsupported algorithm"),
        ({"alg": "HS256", "kid": 7}, claims(aud="orders"), "malformed kid"),
        ({"alg": "HS256", "kid": "hk"}, claims(aud={"orders": 1}), "wrong audience"),
        ({"alg": "HS256", "kid": "hk"}, claims(aud="orders", sub=["alice"]), "unknown consumer"),
        ({"alg": "HS256", "kid": "hk"}, claims(aud="orders", exp=math.inf), "malformed exp claim"),
        ({"alg": "HS256", "kid": "hk"}, claims(aud="orders", nbf=math.nan), "malformed nbf claim"),
    ]
    for header, payload, reason in cases:
        assert await reject_reason(plugin, hs256_raw(header, payload)) == reason


async def test_critical_header_is_refused() -> None:
    plugin = build({"keys": [hs_key()]})
    token = sign(claims(), SECRETS["HS256"], "HS256", kid="hk", crit=["exp"])
    assert await reject_reason(plugin, token) == "unsupported critical header"


async def test_unknown_kid() -> None:
    plugin = build({"keys": [hs_key()]})
    token = sign(claims(), SECRETS["HS256"], "HS256", kid="other")
    assert await reject_reason(plugin, token) == "unknown kid"


# -- claims --------------------------------------------------------------------------


async def test_expiry_and_leeway() -> None:
    clock = Clock()
    strict = build({"keys": [hs_key()]}, clock=clock)
    lenient = build({"keys": [hs_key()], "leeway": 30}, clock=clock)
    token = sign(claims(exp=NOW - 10), SECRETS["HS256"], "HS256", kid="hk")
    assert await reject_reason(strict, token) == "token expired"
    assert await run(lenient, make_ctx(bearer(token))) is None
    clock.now = NOW + 25
    assert await reject_reason(lenient, token) == "token expired"


async def test_not_before_and_issued_at_with_leeway() -> None:
    strict = build({"keys": [hs_key()]})
    lenient = build({"keys": [hs_key()], "leeway": 60})
    early = sign(claims(nbf=NOW + 30), SECRETS["HS256"], "HS256", kid="hk")
    assert await reject_reason(strict, early) == "token not yet valid"
    assert await run(lenient, make_ctx(bearer(early))) is None
    future = sign(claims(iat=NOW + 30), SECRETS["HS256"], "HS256", kid="hk")
    assert await reject_reason(strict, future) == "token issued in the future"
    assert await run(lenient, make_ctx(bearer(future))) is None


async def test_malformed_time_claims() -> None:
    plugin = build({"keys": [hs_key()]})
    for value in ("soon", True, [1]):
        token = sign(claims(exp=value), SECRETS["HS256"], "HS256", kid="hk")
        assert await reject_reason(plugin, token) == "malformed exp claim"


async def test_issuer_allowlist() -> None:
    plugin = build({"keys": [hs_key()], "issuers": ["https://idp.example/"]})
    ok = sign(claims(iss="https://idp.example/"), SECRETS["HS256"], "HS256", kid="hk")
    assert await run(plugin, make_ctx(bearer(ok))) is None
    for iss in ("https://evil.example/", ["https://idp.example/"], {"a": 1}, None):
        extra = {} if iss is None else {"iss": iss}
        token = hs256_raw({"alg": "HS256", "kid": "hk"}, claims(**extra))
        assert await reject_reason(plugin, token) == "wrong issuer"


async def test_audience() -> None:
    plugin = build({"keys": [hs_key()], "audiences": ["orders", "billing"]})
    for aud in ("orders", ["x", "billing"]):
        token = sign(claims(aud=aud), SECRETS["HS256"], "HS256", kid="hk")
        assert await run(plugin, make_ctx(bearer(token))) is None
    for bad in ({"aud": "other"}, {"aud": ["x", "y"]}, {}):
        token = sign(claims(**bad), SECRETS["HS256"], "HS256", kid="hk")
        assert await reject_reason(plugin, token) == "wrong audience"


async def test_required_claims() -> None:
    plugin = build({"keys": [hs_key()], "required_claims": ["exp", "tenant"]})
    token = sign(claims(), SECRETS["HS256"], "HS256", kid="hk")
    assert await reject_reason(plugin, token) == "missing claim: tenant"
    token = sign(claims(tenant="t1"), SECRETS["HS256"], "HS256", kid="hk")
    assert await run(plugin, make_ctx(bearer(token))) is None
    # exp is required by default.
    default = build({"keys": [hs_key()]})
    no_exp = sign({"sub": "alice"}, SECRETS["HS256"], "HS256", kid="hk")
    assert await reject_reason(default, no_exp) == "missing claim: exp"
    optional = build({"keys": [hs_key()], "required_claims": []})
    assert await run(optional, make_ctx(bearer(no_exp))) is None


async def test_max_lifetime() -> None:
    plugin = build({"keys": [hs_key()], "max_lifetime": 600})
    ok = sign(claims(iat=NOW, exp=NOW + 600), SECRETS["HS256"], "HS256", kid="hk")
    assert await run(plugin, make_ctx(bearer(ok))) is None
    long = sign(claims(iat=NOW, exp=NOW + 601), SECRETS["HS256"], "HS256", kid="hk")
    assert await reject_reason(plugin, long) == "token lifetime too long"
    no_iat = sign({"sub": "alice", "exp": NOW + 3600}, SECRETS["HS256"], "HS256", kid="hk")
    assert await reject_reason(plugin, no_iat) == "token lifetime too long"


# -- consumers and scopes ------------------------------------------------------------


async def test_consumer_by_custom_id_and_claim() -> None:
    plugin = build({"keys": [hs_key()], "consumer_claim": "client", "consumer_by": "custom_id"})
    ctx = make_ctx(bearer(sign(claims(client="cust-1"), SECRETS["HS256"], "HS256", kid="hk")))
    assert await run(plugin, ctx) is None
    assert ctx.consumer is not None
    assert ctx.consumer.username == "alice"
    token = sign(claims(client="alice"), SECRETS["HS256"], "HS256", kid="hk")
    assert await reject_reason(plugin, token) == "unknown consumer"


async def test_unknown_and_suspended_consumers() -> None:
    plugin = build({"keys": [hs_key()]})
    token = sign(claims(sub="mallory"), SECRETS["HS256"], "HS256", kid="hk")
    assert await reject_reason(plugin, token) == "unknown consumer"
    token = sign(claims(sub="bob"), SECRETS["HS256"], "HS256", kid="hk")
    assert await reject_reason(plugin, token) == "consumer suspended"
    unmapped = build({"keys": [hs_key()], "allow_unmapped": True})
    ctx = make_ctx(bearer(sign(claims(sub="mallory"), SECRETS["HS256"], "HS256", kid="hk")))
    assert await run(unmapped, ctx) is None
    assert ctx.consumer is None
    assert ctx.credential_id == "jwt:hk"
    # Suspension is refused even when unmapped tokens are allowed.
    assert await reject_reason(unmapped, token) == "consumer suspended"


async def test_scopes_from_scope_and_scp() -> None:
    plugin = build({"keys": [hs_key()]})
    for extra, expected in (
        ({"scope": "read write  admin"}, {"read", "write", "admin"}),
        ({"scp": ["read", "write", 3]}, {"read", "write"}),
        ({"scp": "read"}, {"read"}),
        ({}, set()),
    ):
        ctx = make_ctx(bearer(sign(claims(**extra), SECRETS["HS256"], "HS256", kid="hk")))
        assert await run(plugin, ctx) is None
        assert ctx.scopes == frozenset(expected)
        scopes = dict(ctx.upstream_headers).get(b"x-consumer-scopes")
        assert scopes == (" ".join(sorted(expected)).encode() if expected else None)


# -- where the token is, and what goes upstream --------------------------------------


async def test_identity_headers_and_credential_stripping() -> None:
    plugin = build({"keys": [hs_key()]})
    token = sign(claims(scope="b a"), SECRETS["HS256"], "HS256", kid="hk")
    ctx = make_ctx(
        [
            *bearer(token),
            (b"x-consumer-id", b"root"),
            (b"x-consumer-groups", b"admins"),
            (b"x-credential-id", b"forged"),
            (b"x-anonymous-consumer", b"true"),
            (b"accept", b"*/*"),
        ]
    )
    assert await run(plugin, ctx) is None
    assert ctx.upstream_headers == [
        (b"accept", b"*/*"),
        (b"x-consumer-id", b"alice"),
        (b"x-consumer-name", b"alice"),
        (b"x-consumer-custom-id", b"cust-1"),
        (b"x-consumer-groups", b"staff"),
        (b"x-credential-id", b"jwt:hk"),
        (b"x-consumer-scopes", b"a b"),
    ]


async def test_hide_credentials_off_keeps_token_but_drops_spoofed_identity() -> None:
    plugin = build({"keys": [hs_key()], "hide_credentials": False})
    token = sign(claims(), SECRETS["HS256"], "HS256", kid="hk")
    ctx = make_ctx([*bearer(token), (b"x-consumer-name", b"root")])
    assert await run(plugin, ctx) is None
    names = [n for n, _ in ctx.upstream_headers]
    assert b"authorization" in names
    assert (b"x-consumer-name", b"root") not in ctx.upstream_headers


async def test_custom_header_cookie_and_query_sources() -> None:
    token = sign(claims(), SECRETS["HS256"], "HS256", kid="hk")
    plugin = build(
        {"keys": [hs_key()], "header": "X-Token", "cookie": "jwt", "query_param": "access_token"}
    )
    # A custom header holds the bare token (an optional Bearer prefix is tolerated).
    for value in (token, f"Bearer {token}"):
        ctx = make_ctx([(b"x-token", value.encode()), (b"authorization", b"Basic Zm9vOmJhcg==")])
        assert await run(plugin, ctx) is None
        assert [n for n, _ in ctx.upstream_headers][:1] == [b"authorization"]
        assert b"x-token" not in dict(ctx.upstream_headers)
    # Cookie: only that cookie is removed.
    ctx = make_ctx([(b"cookie", f"theme=dark; jwt={token}; lang=en".encode())])
    assert await run(plugin, ctx) is None
    assert dict(ctx.upstream_headers)[b"cookie"] == b"theme=dark; lang=en"
    ctx = make_ctx([(b"cookie", f"jwt={token}".encode())])
    assert await run(plugin, ctx) is None
    assert b"cookie" not in dict(ctx.upstream_headers)
    # Query parameter, even percent-encoded in its name.
    ctx = make_ctx(query=f"a=1&access%5Ftoken={token}&b=2".encode())
    assert await run(plugin, ctx) is None
    assert ctx.query_string == b"a=1&b=2"


async def test_query_parameter_is_opt_in() -> None:
    plugin = build({"keys": [hs_key()]})
    token = sign(claims(), SECRETS["HS256"], "HS256", kid="hk")
    reply = await plugin.access(make_ctx(query=f"access_token={token}".encode()))
    assert reply is not None
    assert reply.status == 401


async def test_missing_token_challenge_has_no_error() -> None:
    plugin = build({"keys": [hs_key()], "realm": "orders"})
    for headers in ([], [(b"authorization", b"Basic Zm9vOmJhcg==")], bearer("")):
        reply = await plugin.access(make_ctx(headers))
        assert reply is not None
        assert reply.status == 401
        assert dict(reply.headers)[b"www-authenticate"] == b'Bearer realm="orders"'
        body = json.loads(reply.body)
        assert body["type"] == "https://portcullis.dev/problems/unauthorized"
        assert body["status"] == 401
        assert body["detail"] == (
            "A bearer token is required: send it in `Authorization: Bearer <token>`."
        )
        assert body["expected_credentials"] == [
            {"in": "header", "name": "Authorization", "scheme": "Bearer"}
        ]
    # A token read from elsewhere is named there, in the challenge's auth-params too.
    elsewhere = build({"keys": [hs_key()], "header": "x-token", "cookie": "session"})
    reply = await elsewhere.access(make_ctx([]))
    assert reply is not None
    assert dict(reply.headers)[b"www-authenticate"] == (
        b'Bearer realm="portcullis", header="X-Token", cookie="session"'
    )
    detail = json.loads(reply.body)["detail"]
    assert detail == (
        "A bearer token is required: send it in the `X-Token` header or the `session` cookie."
    )


async def test_two_authorization_headers_are_a_bad_request() -> None:
    plugin = build({"keys": [hs_key()]})
    token = sign(claims(), SECRETS["HS256"], "HS256", kid="hk")
    reply = await plugin.access(make_ctx([*bearer(token), *bearer(token)]))
    assert reply is not None
    assert reply.status == 400
    assert b'error="invalid_request"' in dict(reply.headers)[b"www-authenticate"]


async def test_anonymous_consumer_when_no_token() -> None:
    plugin = build({"keys": [hs_key()], "anonymous": "guest"})
    ctx = make_ctx([(b"x-consumer-id", b"root")])
    assert await run(plugin, ctx) is None
    assert ctx.consumer is not None
    assert ctx.consumer.username == "guest"
    assert (b"x-anonymous-consumer", b"true") in ctx.upstream_headers
    assert (b"x-consumer-id", b"root") not in ctx.upstream_headers
    # A presented bad token never falls back to anonymous.
    assert await reject_reason(plugin, "a.b.c") == "malformed token"


# -- the verification cache ----------------------------------------------------------


async def test_cached_token_still_expires() -> None:
    clock = Clock()
    plugin = build({"keys": [hs_key()], "verify_cache_ttl": 3600}, clock=clock)
    token = sign(claims(exp=NOW + 5), SECRETS["HS256"], "HS256", kid="hk")
    assert await run(plugin, make_ctx(bearer(token))) is None
    clock.now = NOW + 4
    assert await run(plugin, make_ctx(bearer(token))) is None
    clock.now = NOW + 5
    assert await reject_reason(plugin, token) == "token expired"
    assert token not in plugin._cache


async def test_cache_hit_skips_signature_work(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = build({"keys": [hs_key()]})
    token = sign(claims(), SECRETS["HS256"], "HS256", kid="hk")
    calls = 0
    original = JwtAuth._verify

    async def counting(self: JwtAuth, token: str, now: float) -> Any:
        nonlocal calls
        calls += 1
        return await original(self, token, now)

    monkeypatch.setattr(JwtAuth, "_verify", counting)
    for _ in range(3):
        ctx = make_ctx(bearer(token))
        assert await run(plugin, ctx) is None
        assert ctx.consumer is not None
    assert calls == 1
    off = build({"keys": [hs_key()], "verify_cache_ttl": 0})
    for _ in range(3):
        assert await run(off, make_ctx(bearer(token))) is None
    assert calls == 4


async def test_cache_is_bounded() -> None:
    plugin = build({"keys": [hs_key()], "verify_cache_size": 2})
    for i in range(5):
        token = sign(claims(n=i), SECRETS["HS256"], "HS256", kid="hk")
        assert await run(plugin, make_ctx(bearer(token))) is None
    assert len(plugin._cache) == 2


# -- gateway tokens (RFC 9068) -------------------------------------------------------


ISSUER = "http://127.0.0.1:8001"


@pytest.fixture
def issuer(pairs: dict[str, KeyPair]) -> FakeIssuer:
    jwk = PyJWK(pairs["ES256"].jwk("gw-1"))
    return FakeIssuer(ISSUER, {"gw-1": jwk})


def gateway_token(pairs: dict[str, KeyPair], **over: Any) -> str:
    header = {"typ": "at+jwt", "kid": "gw-1", **over.pop("header", {})}
    body = {
        "iss": ISSUER,
        "sub": "alice",
        "client_id": "alice-app",
        "aud": "portcullis",
        "iat": NOW,
        "exp": NOW + 300,
        "jti": "j-1",
        "scope": "orders:read",
        **over,
    }
    return jwt.encode(body, pairs["ES256"].private, algorithm="ES256", headers=header)


async def test_gateway_token_accepted_out_of_the_box(
    pairs: dict[str, KeyPair], issuer: FakeIssuer
) -> None:
    plugin = build({}, issuer=issuer)
    ctx = make_ctx(bearer(gateway_token(pairs)))
    assert await run(plugin, ctx) is None
    assert ctx.consumer is not None
    assert ctx.consumer.username == "alice"
    assert ctx.scopes == frozenset({"orders:read"})
    assert ctx.credential_id == "jwt:gw-1"
    # `sub` is a consumer username, whatever the plugin maps for other issuers.
    by_custom_id = build({"consumer_by": "custom_id"}, issuer=issuer)
    ctx = make_ctx(bearer(gateway_token(pairs)))
    assert await run(by_custom_id, ctx) is None
    assert ctx.consumer is not None
    assert ctx.consumer.username == "alice"
    token = gateway_token(pairs, sub="cust-1")
    assert await reject_reason(by_custom_id, token) == "unknown consumer"


async def test_gateway_token_checks(pairs: dict[str, KeyPair], issuer: FakeIssuer) -> None:
    plugin = build({}, issuer=issuer)
    for header, reason in (
        ({"typ": "JWT"}, "token type must be at+jwt"),
        ({"typ": None}, "token type must be at+jwt"),
        ({"kid": "gw-9"}, "unknown kid"),
    ):
        token = gateway_token(pairs, header=header)
        assert await reject_reason(plugin, token) == reason
    assert await reject_reason(plugin, gateway_token(pairs, jti=None)) == "missing claim: jti"
    forged = jwt.encode(
        {"iss": ISSUER, "sub": "alice", "exp": NOW + 60, "jti": "x"},
        _generate("ES256").private,
        algorithm="ES256",
        headers={"typ": "at+jwt", "kid": "gw-1"},
    )
    assert await reject_reason(plugin, forged) == "bad signature"
    # An HS256 token under the gateway's kid: the key pins ES256.
    confused = hand_made(
        {"alg": "HS256", "typ": "at+jwt", "kid": "gw-1"},
        {"iss": ISSUER, "sub": "alice", "exp": NOW + 60, "jti": "x"},
        b"x" * 32,
    )
    assert await reject_reason(plugin, confused) == "algorithm not allowed for this key"


async def test_revoked_gateway_token(pairs: dict[str, KeyPair], issuer: FakeIssuer) -> None:
    plugin = build({}, issuer=issuer)
    token = gateway_token(pairs)
    assert await run(plugin, make_ctx(bearer(token))) is None
    # Revoked after it was cached: the cache does not outlive the revocation.
    issuer.revoked.add("j-1")
    assert await reject_reason(plugin, token) == "token revoked"
    fresh = build({}, issuer=issuer)
    assert await reject_reason(fresh, token) == "token revoked"


async def test_gateway_tokens_of_a_revoked_client(
    pairs: dict[str, KeyPair], issuer: FakeIssuer
) -> None:
    # A deleted OAuth client (or its consumer) revokes every token it was issued.
    plugin = build({}, issuer=issuer)
    token = gateway_token(pairs)
    other = gateway_token(pairs, client_id="other-app", jti="j-2")
    assert await run(plugin, make_ctx(bearer(token))) is None
    issuer.revoked.add("client:alice-app")
    assert await reject_reason(plugin, token) == "token revoked"  # was cached
    assert await reject_reason(build({}, issuer=issuer), token) == "token revoked"
    assert await run(plugin, make_ctx(bearer(other))) is None


async def test_gateway_trust_can_be_switched_off(
    pairs: dict[str, KeyPair], issuer: FakeIssuer
) -> None:
    plugin = build({"keys": [hs_key()], "gateway_tokens": False}, issuer=issuer)
    assert await reject_reason(plugin, gateway_token(pairs)) == "algorithm not allowed"


# -- JWKS-backed keys (source pre-filled: no network here) ---------------------------


@pytest.fixture
async def registry() -> AsyncIterator[JwksRegistry]:
    async with aiohttp.ClientSession() as session:
        reg = JwksRegistry(session, clock=lambda: 0.0)
        yield reg
        await reg.aclose()


def prefill(registry: JwksRegistry, url: str, keys: list[dict[str, Any]]) -> None:
    source = registry.source(url)
    source.keyset = KeySet.parse({"keys": keys})
    source.expires_at = math.inf


async def test_jwks_keys_with_pinned_algorithms(
    pairs: dict[str, KeyPair], registry: JwksRegistry
) -> None:
    url = "https://idp.example/jwks"
    prefill(
        registry,
        url,
        [pairs["RS256"].jwk("r1", alg=False), pairs["ES256"].jwk("e1"), pairs["EdDSA"].jwk("o1")],
    )
    plugin = build({"jwks": [{"url": url, "algorithms": ["RS256", "ES256"]}]}, jwks=registry)
    for alg, kid in (("RS256", "r1"), ("ES256", "e1")):
        ctx = make_ctx(bearer(sign(claims(), pairs[alg].private, alg, kid=kid)))
        assert await run(plugin, ctx) is None
        assert ctx.credential_id == f"jwt:{kid}"
    # Not in the source's algorithms: PS256 with the RSA key, EdDSA with its own key.
    ps = sign(claims(), pairs["PS256"].private, "PS256", kid="r1")
    assert await reject_reason(plugin, ps) == "algorithm not allowed"
    ed = sign(claims(), pairs["EdDSA"].private, "EdDSA", kid="o1")
    assert await reject_reason(plugin, ed) == "algorithm not allowed"
    # A token without kid is checked against the set's keys of that algorithm.
    ctx = make_ctx(bearer(sign(claims(), pairs["ES256"].private, "ES256")))
    assert await run(plugin, ctx) is None


async def test_jwks_key_alg_member_pins_it(
    pairs: dict[str, KeyPair], registry: JwksRegistry
) -> None:
    url = "https://idp.example/jwks"
    jwk = pairs["RS256"].jwk("r1")  # alg: RS256
    prefill(registry, url, [jwk])
    plugin = build({"jwks": [{"url": url, "algorithms": ["RS256", "PS256"]}]}, jwks=registry)
    ps = sign(claims(), pairs["PS256"].private, "PS256", kid="r1")
    assert await reject_reason(plugin, ps) == "unknown kid"


async def test_kid_less_token_falls_back_from_static_to_jwks_keys(
    pairs: dict[str, KeyPair], registry: JwksRegistry
) -> None:
    url = "https://idp.example/jwks"
    prefill(registry, url, [pairs["ES256"].jwk("remote")])
    local = _generate("ES256")
    plugin = build(
        {
            "keys": [{"algorithm": "ES256", "public_key": local.pem}],
            "jwks": [{"url": url, "algorithms": ["ES256"]}],
        },
        jwks=registry,
    )
    for private in (local.private, pairs["ES256"].private):
        ctx = make_ctx(bearer(sign(claims(), private, "ES256")))
        assert await run(plugin, ctx) is None
    stranger = sign(claims(), _generate("ES256").private, "ES256")
    assert await reject_reason(plugin, stranger) == "bad signature"


def test_jwks_needs_the_registry() -> None:
    with pytest.raises(ValueError, match="JWKS registry"):
        build({"jwks": [{"url": "https://idp.example/jwks", "algorithms": ["RS256"]}]})


# -- config --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        {"algorithm": "HS256", "secret": "short"},
        {"algorithm": "HS512", "secret": "a" * 32},
        {"algorithm": "HS256"},
        {"algorithm": "HS256", "secret": "a" * 32, "secret_env": "X"},
        {"algorithm": "RS256", "secret": "a" * 32},
        {"algorithm": "RS256"},
        {"algorithm": "RS256", "public_key": "not a pem"},
        {"algorithm": "none", "secret": "a" * 32},
        {"algorithm": "HS256", "secret": "a" * 32, "extra": 1},
    ],
)
def test_invalid_static_keys(key: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        JwtAuthConfig.model_validate({"keys": [key]})


def test_key_material_must_fit_the_algorithm(pairs: dict[str, KeyPair]) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private_pem = (
        pairs["RS256"]
        .private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    bad: list[dict[str, Any]] = [
        {"algorithm": "RS256", "public_key": KeyPair("RS256", small, small.public_key()).pem},
        {"algorithm": "RS256", "public_key": private_pem},
        {"algorithm": "ES256", "public_key": pairs["ES384"].pem},
        {"algorithm": "ES256", "public_key": pairs["RS256"].pem},
        {"algorithm": "EdDSA", "public_key": pairs["ES256"].pem},
        {"algorithm": "RS256", "jwk": pairs["ES256"].jwk()},
        {"algorithm": "PS256", "jwk": pairs["RS256"].jwk()},  # jwk says alg RS256
        {"algorithm": "RS256", "jwk": {**pairs["RS256"].jwk(), "d": "AQAB"}},
    ]
    for key in bad:
        with pytest.raises(ValidationError):
            JwtAuthConfig.model_validate({"keys": [key]})


def test_config_rules() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        JwtAuthConfig.model_validate({"gateway_tokens": False})
    with pytest.raises(ValidationError, match="unique"):
        JwtAuthConfig.model_validate({"keys": [hs_key("a"), hs_key("a", "HS384")]})
    with pytest.raises(ValidationError):
        JwtAuthConfig.model_validate(
            {"jwks": [{"url": "https://x.example/", "algorithms": ["HS256"]}]}
        )
    with pytest.raises(ValidationError):
        JwtAuthConfig.model_validate({"realm": 'a"b'})
    with pytest.raises(ValidationError):
        JwtAuthConfig.model_validate({"jwks": [{"url": "ftp://x.example/", "algorithms": []}]})


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"keys": [{"kid": "e", "algorithm": "HS256", "secret_env": "JWT_TEST_SECRET"}]}
    JwtAuthConfig.model_validate(config)  # valid without the variable: checked at build
    with pytest.raises(ValueError, match="JWT_TEST_SECRET"):
        build(config)
    monkeypatch.setenv("JWT_TEST_SECRET", "z" * 32)
    plugin = build(config)
    assert plugin._static_by_kid["e"].key == b"z" * 32


def test_registered_in_the_registry() -> None:
    assert PLUGINS["jwt-auth"] is JwtAuth
    assert validate_plugin("jwt-auth", {"keys": [hs_key()]}) == []
    errors = validate_plugin("jwt-auth", {"keys": [{"algorithm": "HS256", "secret": "x"}]})
    assert errors
    assert errors[0].startswith("config.keys[0]")


def test_secret_not_in_repr() -> None:
    config = JwtAuthConfig.model_validate({"keys": [hs_key()]})
    assert SECRETS["HS256"] not in repr(config)
