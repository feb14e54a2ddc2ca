"""A data-plane worker's config source in hybrid mode: the node's last-known-good directory.

The node agent (hybrid/node.py) holds the one connection to the control plane and
writes each snapshot it applies to `PORTCULLIS_LKG_DIR`; the node's workers read
their config from there, as the `ConfigWatcher` of the embedded mode reads the
store: `current_version` is a directory listing (no file is read unless a new
generation appeared); a new generation that follows from the worker's version is
applied from the deltas in its header line, anything else is read whole (the newest
whole snapshot). A worker therefore
starts serving the newest valid snapshot on disk even when the control plane is
unreachable, falls back to the older generation when the newest is corrupt, and
never touches the database.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from portcullis.hybrid.lkg import LkgStore
from portcullis.model.delta import apply_delta

# How often a worker lists the directory: a scandir of two entries, no file read unless
# a generation appeared, so it can be far more often than a store query.
POLL_INTERVAL = 0.05


@dataclass(frozen=True, slots=True)
class Chosen:
    version: int
    checksum: str
    document: dict[str, Any]


class LkgSource:
    def __init__(self, store: LkgStore) -> None:
        self.store = store
        self._listing: tuple[str, ...] | None = None
        self._chosen: Chosen | None = None
        # How the versions were read (tests and logs): whole files, or header deltas.
        self.loads = {"whole": 0, "deltas": 0}

    async def current_version(self) -> int:
        listing = self.store.listing()  # a scandir of a directory of two files
        if listing != self._listing:
            self._chosen = await asyncio.to_thread(self._load)
            self._listing = listing
        return self._chosen.version if self._chosen is not None else 0

    def _load(self) -> Chosen | None:
        chosen = self._chosen
        if chosen is not None:
            # The newest generation follows from ours: its header's deltas, not its body.
            step = self.store.step(chosen.version, chosen.checksum)
            if step is not None:
                document = chosen.document
                try:
                    for delta in step.deltas:
                        document = apply_delta(document, delta)
                except (KeyError, TypeError, ValueError):
                    pass  # not applicable after all: read the whole snapshot
                else:
                    self.loads["deltas"] += 1
                    return Chosen(step.version, step.checksum, document)
        newest = self.store.newest()
        if newest is None:
            return None
        if chosen is not None and chosen.checksum == newest.checksum:
            return chosen
        self.loads["whole"] += 1
        return Chosen(newest.version, newest.checksum, newest.document())

    async def document(self, version: int) -> dict[str, Any]:
        chosen = self._chosen
        if chosen is None or chosen.version != version:
            raise LookupError(f"config version {version} is not in {self.store.directory}")
        return chosen.document
