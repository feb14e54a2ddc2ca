"""Fuzz the live admin API from its own /openapi.json with schemathesis.

The operations are fuzzed in two halves (`test_admin_fuzz_*.py`, split by the first letter
of the resource), so xdist can run the halves side by side: the whole run was the suite's
longest single file. Together the halves select every operation exactly once.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import httpx

from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from support.admin_session import TEST_PASSWORD_HASHER
from support.servers import granian_app

FUZZ_PASSWORD = "fuzzing password 123"
# Operations under /admin/v1/a… to /admin/v1/k… (admin users … keys); the other half is the rest.
FIRST_HALF = r"^/admin/v1/[a-k]"


async def _prepare_store(url: str) -> None:
    await upgrade_to_head(url)
    engine = create_engine(url)
    try:
        await AuthService(engine, hasher=TEST_PASSWORD_HASHER).create_user(
            "fuzz@example.com", FUZZ_PASSWORD, Role.OWNER
        )
    finally:
        await engine.dispose()


def fuzz_admin_api(tmp_path: Path, selection: list[str]) -> int:
    """Run schemathesis (every check but positive acceptance) on the operations `selection`
    (schemathesis filter options) picks; asserts it found nothing, returns the case count.

    `positive_data_acceptance` is left out: cross-field and cross-reference rules
    (unknown service, url xor upstream, opaque cursors, If-Match) can't be said in
    JSON Schema, so schema-valid requests are rightly rejected with 4xx.
    """
    url = f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}"
    asyncio.run(_prepare_store(url))
    env = {
        "PORTCULLIS_DATABASE_URL": url,
        "PORTCULLIS_LOG_JSON": "true",
        # Only the control plane runs here: readiness must not wait for a data plane.
        "PORTCULLIS_READY_REQUIRES_DATA_PLANE": "false",
        # Rate limits stay on (their headers are checked against the description) but
        # high enough that the fuzzer's burst of requests is not refused.
        "PORTCULLIS_ADMIN_RATE_LIMIT_PER_MINUTE": "1000000",
        "PORTCULLIS_ADMIN_RATE_LIMIT_BURST": "100000",
        "PORTCULLIS_ADMIN_RATE_LIMIT_IP_PER_MINUTE": "1000000",
        "PORTCULLIS_ADMIN_RATE_LIMIT_IP_BURST": "100000",
    }
    with granian_app("portcullis.admin.app:create_app", env=env) as port:
        base = f"http://127.0.0.1:{port}"
        login = httpx.post(
            f"{base}/admin/v1/auth/login",
            json={"email": "fuzz@example.com", "password": FUZZ_PASSWORD},
            timeout=30,
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        cli = Path(sys.executable).with_name("schemathesis")
        run = subprocess.run(
            [
                str(cli),
                "run",
                f"{base}/openapi.json",
                *selection,
                # A live stream's response never ends (a fuzzer would wait out its request
                # timeout on every case): test_event_stream.py checks its inputs instead.
                "--exclude-path",
                "/admin/v1/stream",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-examples",
                "10",
                "--workers",
                "1",
                "--seed",
                "20261123",
                # Catches a hung request, not a slow one: on the loaded suite machine one
                # plugin PUT took over 20 s once (ST112) and failed the run.
                "--request-timeout",
                "120",
                "--no-shrink",
            ],
            capture_output=True,
            text=True,
            timeout=840,
            cwd=tmp_path,
            check=False,
        )
    output = run.stdout + run.stderr
    generated = re.search(r"(\d+) generated", output)
    assert generated is not None, output[-3000:]
    print(f"schemathesis: {generated.group(0)} test cases")
    # The failing cases first (the tail alone cut their curl commands off once).
    failures = output.find("FAILURES")
    assert run.returncode == 0, (
        output[failures : failures + 6000] if failures >= 0 else output[-6000:]
    )
    return int(generated.group(1))
