"""A clock the test drives: pass it where the code takes `clock=` and move time with
`advance` instead of sleeping."""

from __future__ import annotations

import asyncio


class ManualClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class DrivenSleep:
    """A `sleep` the test drives: each call records its delay and waits until released.

    `await sleeper.waiting()` returns once the code under test is asleep (with the delay it
    asked for); `release()` wakes it. So a test steps a loop round by round with no real
    waiting: `await waiting(); release(); await waiting()` is exactly one round.
    """

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._asleep: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
        self._current: asyncio.Future[None] | None = None

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        wake = asyncio.get_running_loop().create_future()
        self._asleep.put_nowait(wake)
        await wake

    async def waiting(self, timeout: float = 5.0) -> float:
        """Wait (up to `timeout`) until the code sleeps; the delay it asked for."""
        self._current = await asyncio.wait_for(self._asleep.get(), timeout)
        return self.delays[-1]

    def release(self) -> None:
        assert self._current is not None, "nothing is asleep"
        self._current.set_result(None)
        self._current = None
