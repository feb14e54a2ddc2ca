"""The one mutable reference the data plane reads its snapshot from."""

from __future__ import annotations

import structlog

from portcullis.runtime.snapshot import Snapshot, empty_snapshot
from portcullis.upstream.transport import Transport

log = structlog.get_logger(__name__)


class SnapshotHolder:
    """Holds the current snapshot; `swap` replaces it atomically.

    Readers take `holder.current` once per request and keep using that object, so
    a swap never changes config under a request in flight.
    """

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.current: Snapshot = snapshot if snapshot is not None else empty_snapshot()

    async def swap(self, new: Snapshot, transport: Transport) -> None:
        """Install `new`, start its new pools' health checks and stop the retired ones."""
        old = self.current
        for name, pool in new.pools.items():
            if old.pools.get(name) is not pool:
                await pool.start(transport, new.schemes.get(name, "http"), new.origin_tls.get(name))
        self.current = new
        for name, pool in old.pools.items():
            if new.pools.get(name) is not pool:
                await pool.stop()
        kept = {id(s) for s in new.shippers}
        for shipper in old.shippers:
            if id(shipper) not in kept:
                shipper.retire()  # drains in the background, for its drain_timeout at most
        log.info("config.swapped", version=new.version, previous=old.version)
