"""Fixtures of the service-layer tests: a fresh store with two organizations and its
config editor (helpers in tests/support/services.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.services.config_editor import ConfigEditor
from portcullis.store.config_repository import ConfigRepository
from support.services import CONSUMERS, apply_config, migrated_store


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = await migrated_store(tmp_path)
    yield eng
    await eng.dispose()


@pytest.fixture
def editor(engine: AsyncEngine) -> ConfigEditor:
    return ConfigEditor(ConfigRepository(engine))


@pytest.fixture
async def with_consumers(engine: AsyncEngine) -> None:
    """The config holds alice (org-a) and bob (org-b)."""
    await apply_config(engine, CONSUMERS)
