"""A clock the test drives: pass it where the code takes `clock=` and move time with
`advance` instead of sleeping."""

from __future__ import annotations

import time


class ManualClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def clear_of_window_edges(period_s: int, margin: float = 20.0) -> None:
    """Fixed and sliding windows are epoch-aligned: don't let a burst straddle an edge.

    For code that reads a clock the test cannot drive (Redis scripts read the server's
    `TIME`; a gateway subprocess its own clock): waits out the edge only when one is less
    than `margin` seconds away (20 s of a 1 h window: about 1 run in 180).
    """
    to_edge = period_s - time.time() % period_s
    if to_edge < margin:
        time.sleep(to_edge + 0.5)  # the only way past a clock the test does not own
