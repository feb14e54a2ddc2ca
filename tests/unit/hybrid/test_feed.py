"""The control plane's feed and the node agent, in process on a real SQLite store: what
a node is sent (snapshot, deltas, current), how it applies it, and what its workers read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.hybrid.feed import ConfigFeed, Sync
from portcullis.hybrid.lkg import LkgStore
from portcullis.hybrid.node import NodeAgent
from portcullis.hybrid.protocol import RESYNC, Delta, parse_binary, parse_text
from portcullis.hybrid.source import LkgSource
from portcullis.model.canonical_text import canonical_text, checksum_of
from portcullis.model.loader import load_config_data
from portcullis.settings import Settings
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from support.services import migrated_store


def config(*routes: str) -> dict[str, Any]:
    return {
        "services": [{"name": "s", "url": "http://127.0.0.1:9"}],
        "routes": [{"name": r, "service": "s", "paths": [f"/{r}"]} for r in routes],
    }


class Socket:
    """What the agent sends back (resync requests)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_str(self, text: str) -> None:
        self.sent.append(text)


@pytest.fixture
async def engine(tmp_path: Path) -> Any:
    engine = await migrated_store(tmp_path, organizations=())
    yield engine
    await engine.dispose()


@pytest.fixture
async def any_engine(database_url: str) -> Any:
    """A migrated store of each kind (SQLite, and the session's PostgreSQL)."""
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def apply(repo: ConfigRepository, *routes: str) -> tuple[int, str]:
    version = await repo.apply(load_config_data(config(*routes)), author="t", comment=None)
    return version.version, version.checksum


def agent(tmp_path: Path) -> NodeAgent:
    settings = Settings(
        role="data-plane",
        control_plane_url="http://127.0.0.1:1",
        cluster_token="t" * 32,
        lkg_dir=tmp_path / "lkg",
    )
    return NodeAgent(settings)


async def deliver(node: NodeAgent, sync: Sync, socket: Socket) -> None:
    if isinstance(sync.message, bytes):
        await node._on_snapshot(parse_binary(sync.message))
    else:
        await node._on_text(socket, parse_text(sync.message))  # type: ignore[arg-type]


async def test_a_node_is_brought_up_to_date(any_engine: AsyncEngine, tmp_path: Path) -> None:
    repo = ConfigRepository(any_engine)
    feed = ConfigFeed(repo)
    assert (await feed.catch_up(0, "")).kind == "current"  # an empty store: nothing yet
    v1, sum1 = await apply(repo, "a")
    node, socket = agent(tmp_path), Socket()

    sync = await feed.catch_up(0, "")
    assert (sync.kind, sync.version, sync.checksum) == ("snapshot", v1, sum1)
    await deliver(node, sync, socket)
    assert (node.status.version, node.status.checksum) == (v1, sum1)

    v2, _ = await apply(repo, "a", "b")
    v3, sum3 = await apply(repo, "a", "b", "c")
    sync = await feed.catch_up(v1, sum1)
    assert sync.kind == "delta"
    message = parse_text(str(sync.message))
    assert isinstance(message, Delta)
    assert (message.start, message.end) == (v1, v3)
    assert len(sync.message) < 1000  # O(change): the two routes, not the document
    await deliver(node, sync, socket)
    assert socket.sent == []
    assert (node.status.version, node.status.checksum) == (v3, sum3)

    # The node's workers read what the agent wrote: the control plane's document.
    source = LkgSource(LkgStore(tmp_path / "lkg"))
    assert await source.current_version() == v3
    document = await source.document(v3)
    assert checksum_of(canonical_text(document)) == sum3
    assert document == await repo.document(v3)

    assert (await feed.catch_up(v3, sum3)).kind == "current"
    assert v2 == v1 + 1


async def test_what_deltas_cannot_reach_gets_a_snapshot(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    repo = ConfigRepository(engine)
    v1, sum1 = await apply(repo, "a")
    await apply(repo, "a", "b")
    # Another store's version 1 (different checksum), a version from the future, a resync.
    assert (await ConfigFeed(repo).catch_up(v1, "other")).kind == "snapshot"
    assert (await ConfigFeed(repo).catch_up(v1 + 5, sum1)).kind == "snapshot"
    assert (await ConfigFeed(repo).catch_up(v1, sum1, full=True)).kind == "snapshot"
    # Deltas larger than the limit: the document instead.
    assert (await ConfigFeed(repo, max_delta_bytes=10).catch_up(v1, sum1)).kind == "snapshot"


async def test_a_delta_that_does_not_match_its_checksum_asks_for_a_snapshot(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    repo = ConfigRepository(engine)
    feed = ConfigFeed(repo)
    v1, sum1 = await apply(repo, "a")
    node, socket = agent(tmp_path), Socket()
    await deliver(node, await feed.catch_up(0, ""), socket)
    v2, _ = await apply(repo, "a", "b")
    sync = await feed.catch_up(v1, sum1)
    tampered = Sync(str(sync.message).replace('"checksum": "', '"checksum": "0'), v2, "", "delta")
    await deliver(node, tampered, socket)
    assert socket.sent == [RESYNC]
    assert node.status.version == v1  # nothing applied, nothing written
    assert len(LkgStore(tmp_path / "lkg").listing()) == 1
    # A delta that does not start at the node's version: a resync too.
    socket.sent.clear()
    await apply(repo, "a", "b", "c")
    await deliver(node, await feed.catch_up(v2, (await repo.checksum(v2)) or ""), socket)
    assert socket.sent == [RESYNC]


async def test_a_restarted_agent_applies_deltas_to_its_last_known_good(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    repo = ConfigRepository(engine)
    feed = ConfigFeed(repo)
    await apply(repo, "a")
    first = agent(tmp_path)
    await deliver(first, await feed.catch_up(0, ""), Socket())
    v2, sum2 = await apply(repo, "a", "b")
    restarted = agent(tmp_path)
    await restarted.load_last_known_good()
    sync = await feed.catch_up(restarted.status.version, restarted.status.checksum)
    assert sync.kind == "delta"
    await deliver(restarted, sync, Socket())
    assert (restarted.status.version, restarted.status.checksum) == (v2, sum2)


async def test_workers_follow_the_agent_by_the_header_deltas(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    repo = ConfigRepository(engine)
    feed = ConfigFeed(repo)
    v1, sum1 = await apply(repo, "a")
    node, socket = agent(tmp_path), Socket()
    await deliver(node, await feed.catch_up(0, ""), socket)
    source = LkgSource(LkgStore(tmp_path / "lkg"))
    assert await source.current_version() == v1
    v2, _ = await apply(repo, "a", "b")
    await deliver(node, await feed.catch_up(v1, sum1), socket)
    assert await source.current_version() == v2
    assert await source.document(v2) == await repo.document(v2)
    assert source.loads == {"whole": 1, "deltas": 1}
    # A worker that missed a generation reads the newest whole.
    v3, sum3 = await apply(repo, "a", "b", "c")
    await deliver(node, await feed.catch_up(v2, node.status.checksum), socket)
    await apply(repo, "a", "b", "c", "d")
    await deliver(node, await feed.catch_up(v3, sum3), socket)
    assert await source.current_version() == v3 + 1
    assert source.loads == {"whole": 2, "deltas": 1}
    assert await source.document(v3 + 1) == await repo.document(v3 + 1)
