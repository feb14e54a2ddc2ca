"""The control plane's side of config delivery: what brings a node to the current version.

One `ConfigFeed` per control-plane process, shared by every connected node. A node
that is one or a few versions behind gets the stored deltas (`ConfigRepository.
stored_deltas`, decision 007: one per version, O(change)); a new node, one whose
version is unknown here (pruned, another store) or one the deltas would not reach
gets the whole canonical document. The document text of the newest version is made
once and shared by every node that needs it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from portcullis.hybrid.protocol import Current, Snapshot
from portcullis.model.canonical_text import canonical_text, checksum_of

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from portcullis.store.config_repository import ConfigRepository

log = structlog.get_logger(__name__)

# Deltas larger than this together are sent as the document instead (a node far behind).
MAX_DELTA_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Sync:
    """A message for a node (text: current or delta; bytes: snapshot) and the version
    it brings the node to."""

    message: str | bytes
    version: int
    checksum: str
    kind: str


class ConfigFeed:
    def __init__(self, repo: ConfigRepository, *, max_delta_bytes: int = MAX_DELTA_BYTES) -> None:
        self.repo = repo
        self.max_delta_bytes = max_delta_bytes
        self._snapshot: Snapshot | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def on(cls, engine: AsyncEngine) -> ConfigFeed:
        from portcullis.store.config_repository import ConfigRepository

        return cls(ConfigRepository(engine))

    async def catch_up(self, version: int, checksum: str, *, full: bool = False) -> Sync:
        """What brings a node at `version` (with `checksum`) to the current version
        (`current` 0 while the store holds no config). `full`: a snapshot, whatever the
        node holds."""
        head = await self.repo.current_version()
        if head == 0:
            return Sync(Current(0).encode(), 0, "", "current")
        head_checksum = await self.repo.checksum(head)
        if head_checksum is None:  # pruned between the two reads: a newer head exists
            return await self.catch_up(version, checksum, full=full)
        if not full and version == head and checksum == head_checksum:
            return Sync(Current(head).encode(), head, head_checksum, "current")
        if not full and 0 < version < head and checksum == await self.repo.checksum(version):
            texts = await self.repo.stored_deltas(version, head)
            if texts is not None and sum(len(t) for t in texts) <= self.max_delta_bytes:
                message = delta_message(version, head, head_checksum, texts)
                return Sync(message, head, head_checksum, "delta")
        snapshot = await self.snapshot(head, head_checksum)
        return Sync(snapshot.encode(), head, head_checksum, "snapshot")

    async def snapshot(self, version: int, checksum: str) -> Snapshot:
        """The whole config of `version` (made once per version in this process)."""
        async with self._lock:
            cached = self._snapshot
            if cached is not None and cached.version == version:
                return cached
            document = await self.repo.document(version)
            text = await asyncio.to_thread(canonical_text, document)
            if checksum_of(text) != checksum:
                log.error("cluster.snapshot_checksum_mismatch", version=version)
            self._snapshot = Snapshot(version, checksum, text.encode())
            return self._snapshot


def delta_message(start: int, end: int, checksum: str, texts: list[str]) -> str:
    """A `delta` message from the stored delta texts, without parsing them."""
    head = json.dumps({"type": "delta", "from": start, "to": end, "checksum": checksum})
    return head[:-1] + ',"deltas":[' + ",".join(texts) + "]}"
