"""No lost updates and no unaudited changes: expected versions, write hooks, and two
ConfigEditors (two admin processes) writing to one store at once (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.model import GatewayConfig
from portcullis.model.loader import load_config_data
from portcullis.services.config_editor import ConfigEditor, ConfigState, Edit
from portcullis.services.errors import ServiceError
from portcullis.services.preconditions import check_if_match, etag_of
from portcullis.store.admin_tables import OrganizationRow
from portcullis.store.config_repository import (
    ConfigConflict,
    ConfigRepository,
    ConfigVersion,
)
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from portcullis.store.tables import ConfigVersionRow


def config_with(*names: str) -> GatewayConfig:
    return load_config_data({"services": [{"name": n, "url": f"http://{n}"} for n in names]})


@pytest.fixture
async def engines(database_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines (own pools, own connections) on one store: two processes' worth."""
    await upgrade_to_head(database_url)
    first, second = create_engine(database_url), create_engine(database_url)
    yield first, second
    await first.dispose()
    await second.dispose()


async def test_apply_with_a_stale_expected_version_is_a_conflict(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    repo = ConfigRepository(engines[0])
    with pytest.raises(ConfigConflict) as empty:
        await repo.apply(config_with("a"), author="t", comment=None, expected_version=3)
    assert (empty.value.expected, empty.value.actual) == (3, 0)
    first = await repo.apply(config_with("a"), author="t", comment=None, expected_version=0)
    assert first.version == 1
    with pytest.raises(ConfigConflict):
        await repo.apply(config_with("b"), author="t", comment=None, expected_version=0)
    with pytest.raises(ConfigConflict):
        await repo.rollback(1, author="t", expected_version=0)
    assert await repo.current_version() == 1
    second = await repo.apply(config_with("b"), author="t", comment=None, expected_version=1)
    assert second.version == 2


async def test_the_write_hook_commits_or_rolls_back_with_the_change(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    engine = engines[0]
    repo = ConfigRepository(engine)
    seen: list[int] = []

    async def record(conn: AsyncConnection, stored: ConfigVersion) -> None:
        seen.append(stored.version)
        await conn.execute(
            insert(OrganizationRow).values(
                id=f"org-{stored.version}",
                name=f"made by version {stored.version}",
                created_at=stored.created_at,
                updated_at=stored.created_at,
            )
        )

    async def fail(conn: AsyncConnection, stored: ConfigVersion) -> None:
        await record(conn, stored)
        raise RuntimeError("audit store full")

    stored = await repo.apply(config_with("a"), author="t", comment=None, on_write=record)
    assert seen == [1]
    with pytest.raises(RuntimeError, match="audit store full"):
        await repo.apply(config_with("a", "b"), author="t", comment=None, on_write=fail)
    # A hook's integrity error is not mistaken for a lost version race (no retries).
    with pytest.raises(IntegrityError):
        await repo.rollback(1, author="t", on_write=record)
    assert seen == [1, 2, 1]
    assert await repo.current_version() == stored.version
    async with engine.connect() as conn:
        names = list((await conn.execute(select(OrganizationRow.name))).scalars())
    assert names == ["made by version 1"]


class InterleavedRepository(ConfigRepository):
    """A real repository that lets another writer commit right before its next apply."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.before_apply: list[Callable[[], Awaitable[Any]]] = []

    async def apply(self, config: GatewayConfig, **kwargs: Any) -> ConfigVersion:
        if self.before_apply:
            await self.before_apply.pop(0)()
        return await super().apply(config, **kwargs)


def add_service(name: str, calls: list[int] | None = None) -> Callable[[ConfigState], Edit[str]]:
    def plan(current: ConfigState) -> Edit[str]:
        if calls is not None:
            calls.append(current.version)
        document = current.config.canonical()
        document["services"].append({"name": name, "url": f"http://{name}"})
        return Edit(document, name)

    return plan


async def test_a_writer_that_lost_the_race_replans_on_the_fresh_config(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    slow_repo = InterleavedRepository(engines[0])
    slow, fast = ConfigEditor(slow_repo), ConfigEditor(ConfigRepository(engines[1]))
    calls: list[int] = []
    slow_repo.before_apply.append(lambda: fast.mutate(add_service("b"), author="fast"))
    applied = await slow.mutate(add_service("a", calls), author="slow")
    # Planned on version 0, lost to "b" (version 1), planned again on version 1.
    assert calls == [0, 1]
    assert applied.stored is not None
    assert applied.stored.version == 2
    assert [s.name for s in applied.stored.config.services] == ["b", "a"]


async def test_if_match_is_checked_again_on_the_fresh_config(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    slow_repo = InterleavedRepository(engines[0])
    slow, fast = ConfigEditor(slow_repo), ConfigEditor(ConfigRepository(engines[1]))
    await fast.mutate(add_service("a"), author="fast")
    etag = etag_of((await slow.state()).config.canonical()["services"][0])

    def retag(tag: str) -> Callable[[ConfigState], Edit[None]]:
        def plan(current: ConfigState) -> Edit[None]:
            document = current.config.canonical()
            check_if_match(etag, etag_of(document["services"][0]))
            document["services"][0]["tags"] = [tag]
            return Edit(document, None)

        return plan

    slow_repo.before_apply.append(lambda: fast.mutate(retag("fast"), author="fast"))
    with pytest.raises(ServiceError) as problem:
        await slow.mutate(retag("slow"), author="slow")
    assert problem.value.kind.status == 412
    assert (await slow.state()).config.services[0].tags == ["fast"]


async def test_two_editors_writing_at_once_lose_nothing(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    editors = [ConfigEditor(ConfigRepository(e), max_attempts=50) for e in engines]
    names = [f"svc-{e}-{i}" for i in range(8) for e in range(2)]
    await asyncio.gather(
        *(
            editors[i % 2].mutate(add_service(name), author=f"editor-{i % 2}")
            for i, name in enumerate(names)
        )
    )
    final = await editors[0].state()
    assert sorted(s.name for s in final.config.services) == sorted(names)
    assert final.version == len(names)
    async with engines[0].connect() as conn:
        versions = await conn.scalar(select(func.count()).select_from(ConfigVersionRow))
    assert versions == len(names)


async def test_an_editor_that_always_loses_gives_up_with_a_409(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    slow_repo = InterleavedRepository(engines[0])
    slow = ConfigEditor(slow_repo, max_attempts=3)
    fast = ConfigEditor(ConfigRepository(engines[1]))
    for i in range(3):
        slow_repo.before_apply.append(
            lambda i=i: fast.mutate(add_service(f"f{i}"), author="fast")  # type: ignore[misc]
        )
    with pytest.raises(ServiceError) as problem:
        await slow.mutate(add_service("never"), author="slow")
    assert problem.value.kind.status == 409
    assert problem.value.headers == {"Retry-After": "1"}
    assert [s.name for s in (await slow.state()).config.services] == ["f0", "f1", "f2"]
