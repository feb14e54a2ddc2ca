"""The outage circuit of the process's shared Redis (limits, response cache, event bus).

While the backend answers, the circuit is closed and every call goes through. A
failure opens it: for `retry_interval` seconds callers skip the backend (their own
fallback answers at once, so an outage costs no timeout per request). Then exactly
one caller makes a probe call; its success closes the circuit, its failure opens it
for another interval. Opening and recovery are logged once per outage.

The clock is injected so tests drive the retry interval instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class OutageCircuit:
    """Closed / open / one probe at a time (see the module doc).

    Callers follow one pattern::

        if circuit.blocked():
            return fallback()
        try:
            result = await backend_call()
        except BACKEND_ERRORS as exc:
            circuit.failed(exc)
            return fallback()
        except BaseException:
            circuit.abandoned()  # cancelled: free the probe slot, judge nothing
            raise
        circuit.succeeded()
    """

    __slots__ = (
        "_clock",
        "_down_until",
        "_probing",
        "errors",
        "last_error",
        "name",
        "opened",
        "recoveries",
        "retry_interval",
        "timeouts",
    )

    def __init__(
        self, name: str, retry_interval: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if retry_interval <= 0:
            raise ValueError("retry_interval must be positive")
        self.name = name
        self.retry_interval = retry_interval
        self._clock = clock
        # 0.0 while closed; else the clock time at which the next probe may go.
        self._down_until = 0.0
        self._probing = False
        self.errors = 0
        self.timeouts = 0
        self.opened = 0
        self.recoveries = 0
        self.last_error = ""

    @property
    def is_open(self) -> bool:
        return self._down_until != 0.0

    def blocked(self) -> bool:
        """True when this call must skip the backend.

        When the circuit is open and the probe is due, the first caller is let
        through (it is the probe); others stay blocked until the probe ends.
        """
        if not self._down_until:
            return False
        if self._probing or self._clock() < self._down_until:
            return True
        self._probing = True
        return False

    def succeeded(self) -> None:
        if self._down_until:
            self._down_until = 0.0
            self._probing = False
            self.recoveries += 1
            log.warning(f"{self.name}.recovered")

    def failed(self, exc: BaseException) -> None:
        self._probing = False
        self.errors += 1
        if isinstance(exc, TimeoutError):
            self.timeouts += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        if not self._down_until:
            self.opened += 1
            log.warning(
                f"{self.name}.unavailable",
                error=self.last_error,
                retry_in=self.retry_interval,
            )
        self._down_until = self._clock() + self.retry_interval

    def abandoned(self) -> None:
        """The call was cancelled: neither success nor failure; a later call probes."""
        self._probing = False
