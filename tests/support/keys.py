"""API keys for a running gateway's consumers, created straight in its store."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from portcullis.identity.key_admin import KeySpec
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.keys import Environment
from portcullis.identity.secrets import load_server_secret
from portcullis.model.types import MetadataValue
from portcullis.store.engine import create_engine


async def create_keys(
    database_url: str,
    owners: Mapping[str, str | None],
    environment: Environment = Environment.production,
    metadata: Mapping[str, MetadataValue] | None = None,
) -> dict[str, str]:
    """One new key of `environment` (with `metadata`) per consumer of `owners` (username ->
    organization): username -> key."""
    engine = create_engine(database_url)
    try:
        secret = load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
        repo = KeyRepository(engine, secret)
        keys = {}
        for consumer, organization in owners.items():
            created = await repo.create(
                consumer,
                KeySpec(
                    name=f"test-{consumer}", environment=environment, metadata=dict(metadata or {})
                ),
                created_by="test",
                organization=organization,
            )
            keys[consumer] = created.key
        return keys
    finally:
        await engine.dispose()
