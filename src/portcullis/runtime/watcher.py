"""Keeps a data-plane worker's snapshot in step with the store.

Each worker polls the store's current config version (one indexed single-row
query) and rebuilds its snapshot when it changes. Polling works for every store
and any number of workers and nodes with no extra infrastructure; at the default
0.25 s interval a change reaches every worker well within the 1 s target.

A new version must not pause the requests this worker is serving, so:
- the new document is rebuilt from the one the worker already has plus the stored
  deltas (`ConfigSource.document`; store/config_repository.py), not reloaded whole;
- only the entities that changed are validated (`model.delta.revalidate`; the
  whole document is validated on the first load or when that path declines);
- validation and compiling run in a worker thread (`asyncio.to_thread`), and the
  finished snapshot is swapped in on the event loop. The thread holds the GIL only
  in short stretches (pure-Python compile), so the loop keeps serving meanwhile.
  Target states carried over from the previous snapshot are updated in place by
  the compile, as they were before (weights, check settings): single attribute
  writes, each atomic under the GIL.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import structlog

from portcullis.model.delta import revalidate
from portcullis.model.loader import load_config_data
from portcullis.periodic import Periodic
from portcullis.plugins.env import PluginEnv
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import Snapshot, build_snapshot
from portcullis.upstream.transport import Transport

log = structlog.get_logger(__name__)


class ConfigSource(Protocol):
    async def current_version(self) -> int: ...

    async def document(self, version: int) -> dict[str, Any]: ...


class ConfigWatcher:
    """Polls `source` and swaps new snapshots into `holder`."""

    def __init__(
        self,
        source: ConfigSource,
        holder: SnapshotHolder,
        transport: Transport,
        interval: float = 0.25,
        env: PluginEnv | None = None,
    ) -> None:
        self.source = source
        self.env = env
        self.holder = holder
        self.transport = transport
        self.interval = interval
        # A store outage must not take the data plane down: a failed refresh is logged and
        # the last good snapshot keeps serving until the next tick.
        self._loop = Periodic(
            "config-watcher", self.refresh, interval=interval, failure_event="config.refresh_failed"
        )
        # The canonical document of the snapshot being served (None before the first load).
        self._document: dict[str, Any] | None = None

    async def refresh(self) -> bool:
        """Load the store's current config if it is newer than ours; True if swapped."""
        version = await self.source.current_version()
        if version == 0 or version == self.holder.current.version:
            return False
        document = await self.source.document(version)
        previous = self.holder.current
        base = self._document if previous.version else None
        snapshot, canonical = await asyncio.to_thread(
            self._compile, document, version, previous, base
        )
        await self.holder.swap(snapshot, self.transport)
        self._document = canonical
        return True

    def _compile(
        self,
        document: dict[str, Any],
        version: int,
        previous: Snapshot,
        base: dict[str, Any] | None,
    ) -> tuple[Snapshot, dict[str, Any]]:
        """Validate (only what changed, when the previous document is known) and compile."""
        done = revalidate(previous.config, base, document) if base is not None else None
        if done is None:
            config = load_config_data(document, source=f"config version {version}")
            done = (config, document)
        config, canonical = done
        return build_snapshot(config, version, previous, self.env), canonical

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
