"""One gateway (`portcullis serve`, one worker) for every protocol suite in this package,
in front of one recording upstream that is cleared before each test.

Starting a gateway costs seconds on a loaded machine, so the package shares one:
routes are disjoint per suite (`/rec...` for the HTTP/1.1 and HTTP/2 suites, one route
per plugin for the plugin matrix) and every test marks its requests with a unique
token in the path, so what the upstream recorded can be attributed exactly.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from protocol_support import JWT_SECRET, MAX_REQUEST_BODY, Credentials, gateway_config

from portcullis.identity.credential_store import CredentialKind, CredentialRepository
from portcullis.identity.key_admin import KeySpec
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.secrets import load_server_secret
from portcullis.store.engine import create_engine
from support.recording_upstream import RecordingUpstream, recording_upstream
from support.servers import Gateway, gateway


@pytest.fixture(scope="package")
def recorder() -> Iterator[RecordingUpstream]:
    with recording_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="package")
def request_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file the `file-log` route's plugin appends to."""
    return tmp_path_factory.mktemp("protocol-log") / "requests.log"


@pytest.fixture(scope="package")
def gw(
    tmp_path_factory: pytest.TempPathFactory, recorder: RecordingUpstream, request_log: Path
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("protocol")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(gateway_config(recorder.port, request_log)))
    env = {"E2E_JWT_SECRET": JWT_SECRET, "PORTCULLIS_MAX_REQUEST_BODY": str(MAX_REQUEST_BODY)}
    with gateway(tmp, cfg, extra_env=env) as g:
        yield g


async def _create_keys(database_url: str) -> tuple[str, str]:
    engine = create_engine(database_url)
    try:
        repo = KeyRepository(
            engine, load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
        )
        keys = []
        for consumer in ("alice", "bob"):
            created = await repo.create(
                consumer,
                KeySpec(name=f"protocol-{consumer}"),
                created_by="protocol-suite",
                organization=None,
            )
            keys.append(created.key)
        return keys[0], keys[1]
    finally:
        await engine.dispose()


async def _create_credentials(database_url: str) -> tuple[str, str, str]:
    """alice's basic-auth password, hmac-auth key id and secret."""
    engine = create_engine(database_url)
    try:
        repo = CredentialRepository(
            engine, load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
        )
        password, secret = "alice-protocol-password", "alice-protocol-hmac-secret"
        common = {"consumer": "alice", "organization": None, "created_by": "protocol-suite"}
        await repo.create(kind=CredentialKind.BASIC, identifier="alice", secret=password, **common)
        key = await repo.create(
            kind=CredentialKind.HMAC, identifier="pch_protocol_alice", secret=secret, **common
        )
        return password, key.identifier, secret
    finally:
        await engine.dispose()


@pytest.fixture(scope="package")
def creds(gw: Gateway) -> Credentials:
    alice, bob = asyncio.run(_create_keys(gw.database_url))
    password, key_id, secret = asyncio.run(_create_credentials(gw.database_url))
    return Credentials(alice, bob, password, key_id, secret, gw.proxy_port)


@pytest.fixture
def up(recorder: RecordingUpstream) -> Iterator[RecordingUpstream]:
    """The recording upstream with nothing recorded and the default answer."""
    recorder.clear()
    yield recorder
    recorder.clear()


@pytest.fixture
def token() -> bytes:
    """A unique path segment for this test's requests."""
    return uuid.uuid4().hex[:16].encode()
