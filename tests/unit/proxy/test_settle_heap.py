"""The data plane freezes its start-up heap so full GC passes skip it (decision 014)."""

from __future__ import annotations

import gc

from portcullis.proxy.server import settle_heap


def test_settle_heap_moves_the_start_up_heap_out_of_the_collectors_reach() -> None:
    assert gc.get_freeze_count() == 0
    try:
        settle_heap()
        # Everything alive was frozen: this process's modules at least.
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
