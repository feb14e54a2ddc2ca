"""The config watcher compiles new versions off the event loop and revalidates only changes."""

from __future__ import annotations

import asyncio
import copy
import threading
from dataclasses import dataclass
from typing import Any, cast

import pytest

from portcullis.model import GatewayConfig
from portcullis.model.loader import load_config_data
from portcullis.runtime import watcher as watcher_module
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import Snapshot
from portcullis.runtime.watcher import ConfigWatcher
from portcullis.upstream.transport import Transport


class Documents:
    """An in-memory config source: canonical documents by version."""

    def __init__(self) -> None:
        self.versions: dict[int, dict[str, Any]] = {}

    def add(self, document: dict[str, Any]) -> None:
        self.versions[len(self.versions) + 1] = load_config_data(document).canonical()

    async def current_version(self) -> int:
        return max(self.versions, default=0)

    async def document(self, version: int) -> dict[str, Any]:
        return self.versions[version]

    async def current(self) -> Loaded | None:
        """The whole current config, validated (what a reload read before deltas)."""
        version = await self.current_version()
        if not version:
            return None
        return Loaded(version, load_config_data(self.versions[version]))


@dataclass(frozen=True)
class Loaded:
    version: int
    config: GatewayConfig


def document(edit: str | None = None) -> dict[str, Any]:
    consumers = [{"username": f"u{i}", "metadata": {"n": i}} for i in range(200)]
    if edit is not None:
        consumers[5] = {"username": "u5", "metadata": {"n": edit}}
    return {
        "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
        "routes": [{"name": "r", "service": "svc", "paths": ["/r"]}],
        "consumers": consumers,
    }


async def test_new_versions_compile_in_a_thread_and_swap_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled_on: list[int] = []
    real_build = watcher_module.build_snapshot

    def recording_build(config: GatewayConfig, version: int, *args: Any) -> Snapshot:
        compiled_on.append(threading.get_ident())
        return real_build(config, version, *args)

    monkeypatch.setattr(watcher_module, "build_snapshot", recording_build)
    source = Documents()
    source.add(document())
    holder = SnapshotHolder()
    watcher = ConfigWatcher(source, holder, cast(Transport, object()))
    assert await watcher.refresh()
    source.add(document("edited"))
    assert await watcher.refresh()
    assert not await watcher.refresh()  # nothing newer
    loop_thread = threading.get_ident()
    assert len(compiled_on) == 2
    assert loop_thread not in compiled_on
    assert holder.current.version == 2
    assert holder.current.config == load_config_data(document("edited"))


async def test_a_reload_validates_only_the_entities_that_changed() -> None:
    source = Documents()
    source.add(document())
    holder = SnapshotHolder()
    watcher = ConfigWatcher(source, holder, cast(Transport, object()))
    await watcher.refresh()
    first = holder.current.config
    # The next version shares the unchanged entries with the first, as a store rebuild does.
    edited = copy.copy(source.versions[1])
    edited["consumers"] = list(edited["consumers"])
    edited["consumers"][5] = load_config_data(document("edited")).canonical()["consumers"][5]
    source.versions[2] = edited
    await watcher.refresh()
    second = holder.current.config
    assert second == load_config_data(document("edited"))
    assert second.routes is first.routes
    assert second.consumers[4] is first.consumers[4]
    assert second.consumers[5] is not first.consumers[5]


async def test_the_loop_keeps_running_while_a_version_compiles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started, release = threading.Event(), threading.Event()
    real_build = watcher_module.build_snapshot

    def slow_build(config: GatewayConfig, version: int, *args: Any) -> Snapshot:
        started.set()
        release.wait(timeout=10)
        return real_build(config, version, *args)

    monkeypatch.setattr(watcher_module, "build_snapshot", slow_build)
    source = Documents()
    source.add(document())
    watcher = ConfigWatcher(source, SnapshotHolder(), cast(Transport, object()))
    refresh = asyncio.create_task(watcher.refresh())
    # The compile is blocked in its thread; the loop still runs this coroutine.
    assert await asyncio.to_thread(started.wait, 10)
    assert not refresh.done()
    release.set()
    assert await refresh
