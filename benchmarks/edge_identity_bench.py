"""Identity at the edge (hybrid/edge_identity.py): the size and costs of a node's set.

Builds an identity set of N keys (as the control plane sends them) and prints: its
memory (tracemalloc), the wire message and file size, writing the last-known-good file,
reading it whole (a worker's cold start), one revocation (the agent's apply + file
write; a worker's header-line read), and a key-cache hit on a worker backed by the set
(the same `CredentialCache.resolve` as in the embedded mode).

    .venv/bin/python benchmarks/edge_identity_bench.py --keys 100000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
import tracemalloc
from pathlib import Path

from portcullis.hybrid.edge_identity import EdgeIdentity, IdentitySet, identity_store, key_to_json
from portcullis.hybrid.protocol import Identity
from portcullis.identity.credential_cache import CredentialCache
from portcullis.identity.key_records import KeyRecord, KeyStatus
from portcullis.identity.keys import Environment, generate_key
from portcullis.identity.secrets import ServerSecret

SECRET = ServerSecret.from_secret(b"b" * 32)


def wire_keys(n: int) -> tuple[dict[str, list[object]], list[str]]:
    keys: dict[str, list[object]] = {}
    presented: list[str] = []
    for i in range(n):
        key_id, full = generate_key(Environment("production"))
        record = KeyRecord(
            id=key_id,
            consumer=f"consumer-{i % 50_000}",
            name=f"key {i}",
            environment=Environment("production"),
            scopes=frozenset({"orders:read"}),
            status=KeyStatus.active,
            status_reason=None,
            expires_at=None,
            grace_until=None,
            allowed_origins=frozenset(),
            ip_allowlist=(),
            plan=None,
        )
        keys[SECRET.hash_credential(full)] = key_to_json(record)
        if i < 1000:
            presented.append(full)
    return keys, presented


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def main(n: int) -> None:
    keys, presented = wire_keys(n)
    message = Identity(1, True, {"keys": keys, "credentials": {}}).encode()
    print(f"keys: {n:,}; whole-set message: {len(message) / 1e6:.1f} MB")
    sizes = []
    sets = []
    for records in (False, True):
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        one = IdentitySet(records=records)
        one.replace(1, {"keys": keys, "credentials": {}})
        gc.collect()
        sizes.append(tracemalloc.get_traced_memory()[0] - before)
        tracemalloc.stop()
        sets.append(one)
    agent, _ = sets
    print(
        f"set in memory: node agent (wire text) {sizes[0] / 2**20:.1f} MiB, "
        f"each worker (records) {sizes[1] / 2**20:.1f} MiB"
    )
    del keys, sets
    with tempfile.TemporaryDirectory() as tmp:
        store = identity_store(Path(tmp))
        t = time.perf_counter()
        first = store.save(agent.seq, agent.body())
        taken = ms(time.perf_counter() - t)
        print(f"file: {len(first.body) / 1e6:.1f} MB; agent's body + atomic write {taken}")
        edge = EdgeIdentity(store, SECRET)
        t = time.perf_counter()
        await edge.refresh()
        print(f"worker reads the whole file: {ms(time.perf_counter() - t)}")
        victim = next(iter(edge.set.keys))
        revoked = key_to_json(edge.set.keys[victim])
        revoked[5] = "revoked"
        change = {"keys": {victim: revoked}}
        t = time.perf_counter()
        agent.apply(2, change)
        store.save(agent.seq, agent.body(), (first.version, first.checksum, [change]))
        print(f"one revocation, agent (apply + rewrite the file): {ms(time.perf_counter() - t)}")
        t = time.perf_counter()
        await edge.refresh()
        print(f"one revocation, worker (header line): {ms(time.perf_counter() - t)} {edge.loads}")
        cache = CredentialCache(edge, SECRET)
        for key in presented:
            await cache.resolve(key)  # misses: fill the cache from the set
        rounds = 200
        t = time.perf_counter()
        for _ in range(rounds):
            for key in presented:
                await cache.resolve(key)
        hit = (time.perf_counter() - t) / (rounds * len(presented))
        print(f"key-cache hit on the node (same code as embedded): {hit * 1e6:.2f} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().keys))
