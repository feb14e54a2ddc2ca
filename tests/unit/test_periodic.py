"""The shared background-loop helper, driven round by round with a sleep the test controls."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from portcullis.periodic import Periodic
from support.clock import DrivenSleep


class Rounds:
    """A round that records each call and fails while `failing` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = False

    async def __call__(self) -> None:
        self.calls += 1
        if self.failing:
            raise ConnectionError("store down")


async def test_it_runs_a_round_after_each_interval() -> None:
    rounds, sleep = Rounds(), DrivenSleep()
    loop = Periodic("t", rounds, interval=2.0, sleep=sleep)
    loop.start()
    assert await sleep.waiting() == 2.0
    assert rounds.calls == 0  # not immediate: the first round waits one interval
    for expected in (1, 2, 3):
        sleep.release()
        assert await sleep.waiting() == 2.0
        assert rounds.calls == expected
    await loop.stop()
    assert loop.runs == 3
    assert not loop.running


async def test_immediate_runs_the_first_round_before_waiting() -> None:
    rounds, sleep = Rounds(), DrivenSleep()
    loop = Periodic("t", rounds, interval=1.0, immediate=True, sleep=sleep)
    loop.start()
    await sleep.waiting()
    assert rounds.calls == 1
    await loop.stop()


async def test_a_failing_round_is_logged_counted_and_the_loop_goes_on() -> None:
    rounds, sleep = Rounds(), DrivenSleep()
    loop = Periodic("t", rounds, interval=1.0, failure_event="t.broke", sleep=sleep)
    rounds.failing = True
    loop.start()
    await sleep.waiting()
    with capture_logs() as logs:
        sleep.release()
        await sleep.waiting()
    assert loop.failures == 1
    assert loop.running
    assert [(e["event"], e["kind"], e["consecutive"]) for e in logs] == [
        ("t.broke", "ConnectionError", 1)
    ]
    rounds.failing = False
    sleep.release()
    await sleep.waiting()
    assert (loop.runs, loop.failures, loop.consecutive_failures) == (1, 1, 0)
    await loop.stop()


async def test_consecutive_failures_back_off_up_to_the_limit_and_a_success_resets() -> None:
    rounds, sleep = Rounds(), DrivenSleep()
    loop = Periodic("t", rounds, interval=1.0, max_backoff=5.0, sleep=sleep)
    rounds.failing = True
    loop.start()
    delays = [await sleep.waiting()]
    for _ in range(4):
        sleep.release()
        delays.append(await sleep.waiting())
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    rounds.failing = False
    sleep.release()
    assert await sleep.waiting() == 1.0
    await loop.stop()


async def test_without_max_backoff_a_failing_loop_keeps_its_interval() -> None:
    rounds, sleep = Rounds(), DrivenSleep()
    loop = Periodic("t", rounds, interval=3.0, sleep=sleep)
    rounds.failing = True
    loop.start()
    await sleep.waiting()
    sleep.release()
    assert await sleep.waiting() == 3.0
    assert loop.failures == 1
    await loop.stop()


async def test_jitter_adds_a_uniform_delay_within_its_bounds() -> None:
    asked: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        asked.append((low, high))
        return high

    sleep = DrivenSleep()
    loop = Periodic("t", Rounds(), interval=10.0, jitter=0.5, sleep=sleep, uniform=uniform)
    loop.start()
    assert await sleep.waiting() == 10.5
    assert asked == [(0.0, 0.5)]
    await loop.stop()
    real = Periodic("t", Rounds(), interval=10.0, jitter=0.5)
    assert all(10.0 <= real.next_delay() <= 10.5 for _ in range(200))


async def test_stop_during_a_round_cancels_it_and_still_runs_the_final_flush() -> None:
    entered, finals = asyncio.Event(), []
    cancelled = False

    async def slow_round() -> None:
        nonlocal cancelled
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled = True
            raise

    async def final() -> None:
        finals.append(cancelled)

    loop = Periodic("t", slow_round, interval=1.0, immediate=True, final=final)
    loop.start()
    await asyncio.wait_for(entered.wait(), 5)
    await loop.stop()
    assert finals == [True]  # the round was cancelled before the final flush ran
    assert not loop.running
    await loop.stop()  # stopping twice runs the flush again but does not fail
    assert finals == [True, True]


async def test_a_failing_final_flush_is_logged_not_raised() -> None:
    async def final() -> None:
        raise OSError("disk full")

    loop = Periodic("t", Rounds(), interval=1.0, final=final, sleep=DrivenSleep())
    loop.start()
    with capture_logs() as logs:
        await loop.stop()
    assert loop.failures == 1
    assert [(e["event"], e.get("final")) for e in logs] == [("t.failed", True)]


async def test_start_twice_keeps_one_task() -> None:
    rounds, sleep = Rounds(), DrivenSleep()
    loop = Periodic("t", rounds, interval=1.0, sleep=sleep)
    loop.start()
    loop.start()
    await sleep.waiting()
    sleep.release()
    await sleep.waiting()
    assert rounds.calls == 1
    assert len(sleep.delays) == 2  # a second task would have slept too
    await loop.stop()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        Periodic("t", Rounds(), interval=0)
    with pytest.raises(ValueError, match="jitter"):
        Periodic("t", Rounds(), interval=1, jitter=-1)
    with pytest.raises(ValueError, match="max_backoff"):
        Periodic("t", Rounds(), interval=2, max_backoff=1)
