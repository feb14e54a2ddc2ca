"""jwt-auth verification cost per algorithm, and what the verification cache saves.

For each algorithm it builds a jwt-auth plugin with one static key (2048-bit RSA,
P-256/P-384/P-521, Ed25519, or an HMAC secret of the hash size) and times, one
operation at a time with `perf_counter_ns`:

- `sig only`    the bare signature check (PyJWT's algorithm object on the signing
                input): the crypto floor;
- `pyjwt`       `jwt.decode(token, key, algorithms=[alg], audience=..., issuer=...)`:
                what a plain PyJWT user pays (parse, verify, claim checks);
- `plugin cold` the whole jwt-auth `access()` with the cache off: token extraction,
                parsing, signature, claims, consumer mapping, upstream header rewrite;
- `plugin warm` the same with the verification cache on and the token cached
                (dictionary hit, expiry check, header rewrite; no crypto).

It prints median / p99 / mean in µs per operation. Timer overhead (~0.05-0.1 µs)
is included. The machine is shared: compare medians and rerun when p99 is noisy.

Run from the repository root:
    .venv/bin/python benchmarks/jwt_bench.py
    .venv/bin/python benchmarks/jwt_bench.py --samples 5000 --algorithms RS256,ES256
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from portcullis.identity.consumers import ConsumerIndex
from portcullis.model.config import Consumer
from portcullis.model.plugins.jwt_auth import JwtAuthConfig
from portcullis.plugins.base import RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.jwt_auth import JwtAuth

ALGORITHMS = [
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "PS256",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
]
SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


def _keys(alg: str) -> tuple[Any, dict[str, Any]]:
    """(signing key, static key config) for one algorithm."""
    if alg.startswith("HS"):
        secret = "k" * SECRET_BYTES[alg]
        return secret, {"kid": "k", "algorithm": alg, "secret": secret}
    private: Any
    if alg[0] in "RP":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}
        private = ec.generate_private_key(curve[alg])
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, {"kid": "k", "algorithm": alg, "public_key": pem.decode()}


def _stats(samples: list[int]) -> tuple[float, float, float]:
    us = sorted(s / 1000 for s in samples)
    return statistics.median(us), us[int(len(us) * 0.99) - 1], statistics.fmean(us)


def _time_sync(fn: Callable[[], object], n: int) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


async def _time_async(fn: Callable[[], Coroutine[Any, Any, object]], n: int) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        await fn()
        out.append(clock() - t0)
    return out


def _ctx(token: str) -> RequestContext:
    headers = [
        (b"host", b"api.example"),
        (b"accept", b"application/json"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"user-agent", b"bench/1"),
    ]
    scope: dict[str, Any] = {"type": "http", "headers": headers, "query_string": b""}
    return RequestContext(scope, cast(Any, None), "GET", "/", "127.0.0.1", "r", None, headers)


async def bench(alg: str, samples: int) -> list[tuple[str, tuple[float, float, float]]]:
    signing, key_cfg = _keys(alg)
    now = time.time()
    claims = {
        "iss": "https://idp.example/",
        "aud": "orders",
        "sub": "alice",
        "iat": int(now),
        "exp": int(now) + 3600,
        "scope": "orders:read orders:write",
    }
    token = jwt.encode(claims, signing, algorithm=alg, headers={"kid": "k"})
    env = PluginEnv(consumers=ConsumerIndex([Consumer(username="alice", groups=["staff"])]))
    base = {
        "gateway_tokens": False,
        "keys": [key_cfg],
        "issuers": ["https://idp.example/"],
        "audiences": ["orders"],
    }
    cold = JwtAuth(JwtAuthConfig.model_validate({**base, "verify_cache_ttl": 0}), env)
    warm = JwtAuth(JwtAuthConfig.model_validate(base), env)

    verifier = get_default_algorithms()[alg]
    key = cold._static_by_kid["k"].key
    head, body, sig = token.split(".")
    signing_input = f"{head}.{body}".encode()
    signature = jwt.utils.base64url_decode(sig)
    assert verifier.verify(signing_input, key, signature)
    decode_key: Any = key_cfg.get("secret") or key

    def pyjwt() -> object:
        return jwt.decode(
            token,
            decode_key,
            algorithms=[alg],
            audience="orders",
            issuer="https://idp.example/",
        )

    assert await cold.access(_ctx(token)) is None
    assert await warm.access(_ctx(token)) is None  # now cached

    warmup = max(samples // 10, 20)
    _time_sync(lambda: verifier.verify(signing_input, key, signature), warmup)
    return [
        (
            "sig only",
            _stats(_time_sync(lambda: verifier.verify(signing_input, key, signature), samples)),
        ),
        ("pyjwt decode", _stats(_time_sync(pyjwt, samples))),
        ("plugin cold", _stats(await _time_async(lambda: cold.access(_ctx(token)), samples))),
        ("plugin warm", _stats(await _time_async(lambda: warm.access(_ctx(token)), samples))),
    ]


async def main_async(algorithms: list[str], samples: int) -> None:
    print(f"jwt-auth verify cost, {samples} samples each, µs/op (median / p99 / mean)")
    print(f"{'alg':7} {'what':13} {'median':>9} {'p99':>9} {'mean':>9}")
    for alg in algorithms:
        for what, (med, p99, mean) in await bench(alg, samples):
            print(f"{alg:7} {what:13} {med:9.2f} {p99:9.2f} {mean:9.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    args = parser.parse_args()
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    asyncio.run(main_async(algorithms, args.samples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
