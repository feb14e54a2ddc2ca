"""What each authentication plugin costs per request, warm and cold, against key-auth.

In process, one `access()` at a time timed with `perf_counter_ns`, credentials in an
in-memory store (a cold store lookup's own cost is key_validation_bench's subject):

- `key-auth warm`          a cached API key (the baseline);
- `basic-auth warm`        a credential verified before: one keyed HMAC of id and password
                           and a dict hit (the verified-credential cache);
- `basic-auth cold`        a credential seen for the first time: the record lookup and one
                           argon2id verify with the data-plane parameters (in a thread);
- `argon2 default verify`  for comparison, argon2-cffi's default parameters (what the
                           data plane would pay on every cold request without decision 029);
- `hmac-auth warm`         a cached key, a fresh RFC 9421 signature each request (parse,
                           signature base, HMAC-SHA256, nonce check);
- `mtls-auth warm / cold`  a chain verified before (dict hit, clock check) / not yet
                           (PEM parse and path validation).

Prints median / p99 / mean in µs. The machine is shared: compare medians.

    .venv/bin/python benchmarks/auth_plugins_bench.py
    .venv/bin/python benchmarks/auth_plugins_bench.py --samples 5000 --cold 50
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from base64 import b64encode
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from argon2 import PasswordHasher

ROOT = Path(__file__).resolve().parent.parent


def row(name: str, samples: list[int]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{name:<24} {statistics.median(ordered) / 1000:>10.1f} {p99 / 1000:>10.1f} "
        f"{statistics.fmean(ordered) / 1000:>10.1f} {len(ordered):>7}"
    )


async def timed(calls: list[Callable[[], Awaitable[Any]]]) -> list[int]:
    out = []
    for call in calls:
        start = time.perf_counter_ns()
        await call()
        out.append(time.perf_counter_ns() - start)
    return out


async def main(samples: int, cold: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from portcullis.identity.consumers import ConsumerIndex
    from portcullis.identity.credential_cache import CredentialCache
    from portcullis.identity.credential_lookup import ConsumerCredentialCache
    from portcullis.identity.credential_store import CredentialKind, CredentialRecord, hash_password
    from portcullis.identity.key_records import KeyRecord, KeyStatus
    from portcullis.identity.keys import Environment, generate_key
    from portcullis.identity.secrets import ServerSecret
    from portcullis.model.config import Consumer
    from portcullis.plugins.base import RequestContext
    from portcullis.plugins.env import PluginEnv
    from portcullis.plugins.registry import build_plugin
    from support.auth_credentials import MemoryCredentials, TestCA, sign_request

    secret = ServerSecret.from_secret(b"bench-secret-0123456789abcdef0123")
    consumers = ConsumerIndex([Consumer(username=f"c{i}") for i in range(cold + 1)])
    store = MemoryCredentials()
    cache = ConsumerCredentialCache(store, secret, verify_queue=10_000)
    now = time.time()

    class Keys:
        def __init__(self) -> None:
            self.records: dict[str, KeyRecord] = {}

        async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
            return self.records.get(key_hash)

        async def touch_used(self, stamps: Any) -> None:
            return None

    keys = Keys()
    key_id, api_key = generate_key(Environment.production, "BenchKey0001")
    keys.records[secret.hash_credential(api_key)] = KeyRecord(
        id=key_id, consumer="c0", name="b", environment=Environment.production,
        scopes=frozenset(), status=KeyStatus.active, status_reason=None, expires_at=None,
        grace_until=None, allowed_origins=frozenset(), ip_allowlist=(), plan=None,
    )  # fmt: skip
    env = PluginEnv(
        consumers=consumers.view(None),
        credentials=CredentialCache(keys, secret),
        consumer_credentials=cache,
        clock=lambda: now,
        instance="bench",
    )

    def ctx(
        headers: list[tuple[bytes, bytes]], scope: dict[str, Any] | None = None
    ) -> RequestContext:
        full = {"type": "http", "scheme": "http", "query_string": b"", "raw_path": b"/orders",
                "headers": [(b"host", b"api.test"), *headers], **(scope or {})}  # fmt: skip
        return RequestContext(
            full, cast(Any, None), "GET", "/orders", "192.0.2.1", "r", None, list(full["headers"])
        )

    def call(plugin: Any, context: RequestContext) -> Callable[[], Awaitable[Any]]:
        async def run() -> None:
            assert await plugin.access(context) is None

        return run

    print(f"{'scenario':<24} {'median µs':>10} {'p99 µs':>10} {'mean µs':>10} {'samples':>7}")

    key_auth = build_plugin("key-auth", {}, env)
    await key_auth.access(ctx([(b"x-api-key", api_key.encode())]))
    print(row("key-auth warm", await timed(
        [call(key_auth, ctx([(b"x-api-key", api_key.encode())])) for _ in range(samples)]
    )))  # fmt: skip

    basic = build_plugin("basic-auth", {}, env)

    def basic_header(user: str) -> list[tuple[bytes, bytes]]:
        return [(b"authorization", b"Basic " + b64encode(f"{user}:pw-{user}".encode()))]

    for i in range(cold + 1):
        store.add(CredentialRecord(f"cc{i}", CredentialKind.BASIC, f"c{i}", f"c{i}", None,
                                   hash_password(f"pw-c{i}")))  # fmt: skip
    await basic.access(ctx(basic_header("c0")))
    print(row("basic-auth warm", await timed(
        [call(basic, ctx(basic_header("c0"))) for _ in range(samples)]
    )))  # fmt: skip
    print(row("basic-auth cold", await timed(
        [call(basic, ctx(basic_header(f"c{i}"))) for i in range(1, cold + 1)]
    )))  # fmt: skip
    default = PasswordHasher()
    encoded = default.hash("pw")

    async def default_verify() -> None:
        await asyncio.to_thread(default.verify, encoded, "pw")

    print(row("argon2 default verify", await timed([default_verify for _ in range(cold)])))

    hmac_plugin = build_plugin("hmac-auth", {}, env)
    store.add(CredentialRecord("cch", CredentialKind.HMAC, "pch_bench", "c0", None, b"s" * 32))
    signed = []
    for _ in range(samples + 1):
        headers = sign_request("GET", "http://api.test/orders", "pch_bench", b"s" * 32,
                               created=now, nonce=uuid.uuid4().hex)  # fmt: skip
        signed.append(ctx([(k.lower().encode(), v.encode()) for k, v in headers.items()]))
    await hmac_plugin.access(signed[0])
    print(row("hmac-auth warm", await timed([call(hmac_plugin, c) for c in signed[1:]])))

    ca = TestCA()
    mtls = build_plugin("mtls-auth", {"ca_certificates": ca.pem}, env)
    mtls.__dict__["_clock"] = lambda: 1_785_000_000.0  # inside the test certificates' validity
    chains = []
    for i in range(cold + 1):
        pem = ca.issue(f"c{i}", dns=[f"c{i}.example"])
        store.add(CredentialRecord(f"ccm{i}", CredentialKind.MTLS, f"dns:c{i}.example", f"c{i}",
                                   None, b""))  # fmt: skip
        chains.append({"extensions": {"tls": {"client_cert_chain": [pem]}}})
    await mtls.access(ctx([], chains[0]))
    print(row("mtls-auth warm", await timed(
        [call(mtls, ctx([], chains[0])) for _ in range(samples)]
    )))  # fmt: skip
    print(row("mtls-auth cold", await timed([call(mtls, ctx([], c)) for c in chains[1:]])))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2000, help="warm requests per scenario")
    parser.add_argument("--cold", type=int, default=30, help="cold requests per scenario")
    args = parser.parse_args()
    asyncio.run(main(args.samples, args.cold))
