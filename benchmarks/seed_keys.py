"""Seed a store with many API keys, fast, for the key-validation benchmark.

    .venv/bin/python benchmarks/seed_keys.py --database-url sqlite+aiosqlite:///DIR/bench.db \\
        --count 100000 --consumer bench --samples 1000 --samples-file DIR/keys.txt

The keys are real (`generate_key`: the production format and checksum), hashed
with the deployment secret (`PORTCULLIS_SECRET_KEY` / `PORTCULLIS_SECRET_KEY_FILE`,
the same the gateway under test must use), and inserted with executemany in
batches, in one transaction. The schema is migrated first if the store is empty.

No identity events are written: seed before starting the gateway (a running
gateway could hold negative cache entries for these keys until they expire).
The consumer is not checked against the config; the benchmark's gateway config
must declare it (`consumers: [{username: bench}]`).

Prints one sample key on stdout (for a quick `curl`); `--samples-file` gets
`--samples` keys, one per line, spread over the whole set (for cold-cache runs
that must present many distinct keys). Timings go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from portcullis.identity.key_records import KeyStatus
from portcullis.identity.keys import Environment, generate_key
from portcullis.identity.secrets import ServerSecret, load_server_secret
from portcullis.settings import Settings
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.identity_tables import ApiKeyRow
from portcullis.store.migrations import upgrade_to_head


def _rows(
    count: int,
    secret: ServerSecret,
    *,
    consumer: str,
    environment: Environment,
    scopes: list[str],
    sample_every: int,
) -> tuple[list[dict[str, Any]], list[str]]:
    """`count` rows to insert, and every `sample_every`-th full key."""
    now = datetime.now(UTC)
    scopes_json = json.dumps(scopes)
    rows = []
    samples = []
    for i in range(count):
        key_id, full_key = generate_key(environment)
        if i % sample_every == 0:
            samples.append(full_key)
        rows.append(
            {
                "id": key_id,
                "key_hash": secret.hash_credential(full_key),
                "consumer": consumer,
                "organization": None,
                "name": f"bench-{i}",
                "environment": environment.value,
                "scopes": scopes_json,
                "allowed_origins": "[]",
                "ip_allowlist": "[]",
                "plan": None,
                "metadata_json": "{}",
                "status": KeyStatus.active.value,
                "status_reason": None,
                "expires_at": None,
                "rotated_from": None,
                "replaced_by": None,
                "grace_until": None,
                "created_by": "benchmark",
                "created_at": now,
                "updated_at": now,
                "last_used_at": None,
            }
        )
    return rows, samples


async def seed(args: argparse.Namespace) -> int:
    settings = Settings()
    url = args.database_url or settings.database_url
    secret = load_server_secret(settings.secret_key, settings.secret_key_file)
    await upgrade_to_head(url)
    started = time.perf_counter()
    rows, samples = _rows(
        args.count,
        secret,
        consumer=args.consumer,
        environment=Environment(args.environment),
        scopes=args.scope,
        sample_every=max(1, args.count // max(1, args.samples)),
    )
    generated = time.perf_counter()
    engine = create_engine(url)
    try:
        async with write_transaction(engine) as conn:
            for start in range(0, len(rows), args.batch):
                await conn.execute(insert(ApiKeyRow), rows[start : start + args.batch])
        inserted = time.perf_counter()
        async with engine.connect() as conn:
            total = await conn.scalar(select(func.count()).select_from(ApiKeyRow))
    finally:
        await engine.dispose()
    print(
        f"generated and hashed {args.count} keys in {generated - started:.2f} s, "
        f"inserted in {inserted - generated:.2f} s "
        f"({args.count / max(inserted - generated, 1e-9):,.0f} rows/s); "
        f"the store now holds {total} keys",
        file=sys.stderr,
    )
    if args.samples_file is not None:
        path = Path(args.samples_file)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(samples[: args.samples]) + "\n")
        print(f"wrote {min(len(samples), args.samples)} sample keys to {path}", file=sys.stderr)
    print(samples[0])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="store URL (default: PORTCULLIS_DATABASE_URL)")
    parser.add_argument("--count", type=int, default=100_000, help="keys to insert")
    parser.add_argument("--consumer", default="bench", help="consumer username of every key")
    parser.add_argument(
        "--environment", default="production", choices=[e.value for e in Environment]
    )
    parser.add_argument("--scope", action="append", default=[], help="scope of every key")
    parser.add_argument("--batch", type=int, default=5000, help="rows per executemany")
    parser.add_argument("--samples", type=int, default=1, help="sample keys to keep")
    parser.add_argument("--samples-file", help="write the sample keys here (mode 0600)")
    args = parser.parse_args(argv)
    if args.count < 1 or args.batch < 1 or args.samples < 1:
        parser.error("--count, --batch and --samples must be positive")
    return asyncio.run(seed(args))


if __name__ == "__main__":
    sys.exit(main())
