"""A SQLite connect cancelled half-way (a background job's first round when the control
plane stops right after it started) leaves no driver thread posting to a closed loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.store.engine import create_engine


async def use(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SELECT 1")


def test_a_cancelled_connect_finishes_and_closes_before_the_loop_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    for _ in range(20):
        before = set(threading.enumerate())
        loop = asyncio.new_event_loop()
        task = loop.create_task(use(create_engine(url)))
        # One turn of the loop: the task runs up to the driver's connect (its own thread).
        loop.run_until_complete(asyncio.sleep(0))
        assert not task.done()
        task.cancel()
        loop.run_until_complete(asyncio.wait([task]))
        assert task.cancelled()
        loop.close()
        for thread in set(threading.enumerate()) - before:
            thread.join(timeout=10)
            assert not thread.is_alive(), "the driver's thread outlived its cancelled connect"
    assert not failures, [f"{f.exc_type.__name__}: {f.exc_value}" for f in failures]
