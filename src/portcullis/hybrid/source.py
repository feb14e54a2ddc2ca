"""A data-plane worker's config source in hybrid mode: the node's last-known-good directory.

The node agent (hybrid/node.py) holds the one connection to the control plane and
writes each snapshot it applies to `PORTCULLIS_LKG_DIR`; the node's workers read
their config from there, as the `ConfigWatcher` of the embedded mode reads the
store: `current_version` is a directory listing (no file is read unless a new
generation appeared), `document` the newest whole snapshot. A worker therefore
starts serving the newest valid snapshot on disk even when the control plane is
unreachable, falls back to the older generation when the newest is corrupt, and
never touches the database.
"""

from __future__ import annotations

import asyncio
from typing import Any

from portcullis.hybrid.lkg import LkgStore, StoredSnapshot

# How often a worker lists the directory: a scandir of two entries, no file read unless
# a generation appeared, so it can be far more often than a store query.
POLL_INTERVAL = 0.05


class LkgSource:
    def __init__(self, store: LkgStore) -> None:
        self.store = store
        self._listing: tuple[str, ...] | None = None
        self._chosen: tuple[StoredSnapshot, dict[str, Any]] | None = None

    async def current_version(self) -> int:
        listing = self.store.listing()  # a scandir of a directory of two files
        if listing != self._listing:
            self._chosen = await asyncio.to_thread(self._load)
            self._listing = listing
        return self._chosen[0].version if self._chosen is not None else 0

    def _load(self) -> tuple[StoredSnapshot, dict[str, Any]] | None:
        newest = self.store.newest()
        if newest is None:
            return None
        if self._chosen is not None and self._chosen[0].checksum == newest.checksum:
            return self._chosen
        return newest, newest.document()

    @property
    def snapshot(self) -> StoredSnapshot | None:
        return self._chosen[0] if self._chosen is not None else None

    async def document(self, version: int) -> dict[str, Any]:
        chosen = self._chosen
        if chosen is None or chosen[0].version != version:
            raise LookupError(f"config version {version} is not in {self.store.directory}")
        return chosen[1]
