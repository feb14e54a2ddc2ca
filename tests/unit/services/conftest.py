"""The store most service tests start from: migrated SQLite with organizations `org-a`
and `org-b` (ids `id-org-a`, `id-org-b`) and a config with consumer `alice` of org-a
and `bob` of org-b. A test module needing another store defines its own `engine`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.model.loader import load_config_data
from portcullis.store.admin_tables import OrganizationRow
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head

CREATED = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    await upgrade_to_head(url)
    eng = create_engine(url)
    async with write_transaction(eng) as conn:
        for name in ("org-a", "org-b"):
            await conn.execute(
                insert(OrganizationRow).values(
                    id=f"id-{name}", name=name, created_at=CREATED, updated_at=CREATED
                )
            )
    await ConfigRepository(eng).apply(
        load_config_data(
            {
                "consumers": [
                    {"username": "alice", "organization": "org-a"},
                    {"username": "bob", "organization": "org-b"},
                ]
            }
        ),
        author="test",
        comment=None,
    )
    yield eng
    await eng.dispose()
