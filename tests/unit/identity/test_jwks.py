"""JWKS caching rules that need no network: TTL from Cache-Control, set parsing, sharing."""

from __future__ import annotations

from typing import Any, cast

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import get_default_algorithms

from portcullis.identity.jwks import (
    JwksFetchError,
    JwksPolicy,
    JwksRegistry,
    KeySet,
)


def rsa_jwk(kid: str | None = None, **extra: Any) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    data = get_default_algorithms()["RS256"].to_jwk(key, as_dict=True)
    if kid is not None:
        data["kid"] = kid
    return {**data, **extra}


def ec_jwk(kid: str) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    data = get_default_algorithms()["ES256"].to_jwk(key, as_dict=True)
    return {**data, "kid": kid}


@pytest.mark.parametrize(
    ("header", "ttl"),
    [
        (None, 300.0),
        ("", 300.0),
        ("public, max-age=600", 600.0),
        ('max-age="900", must-revalidate', 900.0),
        ("s-maxage=1200", 1200.0),
        ("max-age=5", 60.0),  # below min_ttl
        ("max-age=999999999", 86_400.0),  # above max_ttl
        ("no-cache", 60.0),
        ("private, no-store", 60.0),
        ("max-age=oops", 300.0),
    ],
)
def test_ttl_from_cache_control(header: str | None, ttl: float) -> None:
    assert JwksPolicy().ttl_for(header) == ttl


def test_ttl_bounds_are_configurable() -> None:
    policy = JwksPolicy(min_ttl=0, max_ttl=10, default_ttl=5)
    assert policy.ttl_for("max-age=0") == 0
    assert policy.ttl_for(None) == 5
    assert policy.ttl_for("max-age=3600") == 10


def test_keyset_indexes_usable_signature_keys() -> None:
    sig = rsa_jwk("a", alg="RS256")
    doc = {
        "keys": [
            sig,
            ec_jwk("b"),
            rsa_jwk(),  # no kid: kept, only reachable by kid-less tokens
            rsa_jwk("enc", use="enc"),  # encryption key: skipped
            {**rsa_jwk("private"), "d": "AQAB"},  # private material: skipped
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},  # unloadable: skipped
            {"kty": "weird", "kid": "w"},
            "not a key",
        ]
    }
    keyset = KeySet.parse(doc)
    assert set(keyset.by_kid) == {"a", "b"}
    assert len(keyset.keys) == 3
    assert keyset.by_kid["a"].alg == "RS256"
    assert keyset.by_kid["b"].alg is None


def test_first_key_wins_on_duplicate_kid() -> None:
    first, second = rsa_jwk("dup"), ec_jwk("dup")
    keyset = KeySet.parse({"keys": [first, second]})
    assert keyset.by_kid["dup"].jwk.key_type == "RSA"


@pytest.mark.parametrize(
    "doc",
    [{}, {"keys": []}, {"keys": "x"}, [], "keys", {"keys": [{"kty": "RSA", "use": "enc"}]}],
)
def test_unusable_documents(doc: object) -> None:
    with pytest.raises(JwksFetchError):
        KeySet.parse(doc)


async def test_one_source_per_url_and_latest_policy_applies() -> None:
    async with aiohttp.ClientSession() as session:
        registry = JwksRegistry(session)
        a = registry.source("https://idp.example/jwks")
        b = registry.source("https://idp.example/jwks", JwksPolicy(refetch_interval=1))
        assert a is b
        assert a.policy.refetch_interval == 1
        assert registry.source("https://other.example/jwks") is not a
        assert len(registry) == 2
        assert not a.ready
        await registry.aclose()


def test_prefetch_without_a_running_loop_is_a_no_op() -> None:
    registry = JwksRegistry(cast(aiohttp.ClientSession, object()))
    registry.source("https://idp.example/jwks")
    registry.prefetch("https://idp.example/jwks")
    registry.prefetch("https://unknown.example/jwks")
    assert not registry.source("https://idp.example/jwks").ready
