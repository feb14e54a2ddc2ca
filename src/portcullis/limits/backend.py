"""The protocol every rate-limit backend implements, and what goes in and out of it.

One call decides one request against all the limits that apply to it (e.g. 10/s
and 1,000/h and 50,000/day), atomically and all-or-nothing: if any limit refuses,
no limit consumes anything, so a refused request never eats into the hour or day
budget. Backends: `memory.MemoryBackend` (exact within one process) and
`redis_backend.RedisBackend` (exact across workers and nodes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from portcullis.limits.spec import Decision, LimitSpec
from portcullis.model.types import FailurePolicy as FailurePolicy

__all__ = [
    "BackendUnavailable",
    "Decision",
    "FailurePolicy",
    "LimitBackend",
    "LimitRequest",
    "LimitSpec",
]


class BackendUnavailable(RuntimeError):
    """The shared counters cannot be read right now (peek only; decisions degrade)."""


@dataclass(frozen=True, slots=True)
class LimitRequest:
    """One limit to check for one request.

    `key` identifies the counter (policy, limit and partition, e.g. the consumer);
    the algorithm is added by the backend, so a config change of algorithm never
    misreads another algorithm's state, while a change of `limit` keeps counting on
    the same state. All requests of one `decide` call must share `slot`: the Redis
    backend puts it in a `{hash tag}` so that every key of one decision lands in one
    Redis Cluster slot (the script touches them atomically).
    """

    key: str
    spec: LimitSpec
    cost: int = 1
    slot: str = ""


class LimitBackend(Protocol):
    """Where counters live. Implementations must be safe to share by all plugins of a worker."""

    name: str

    async def decide(
        self, requests: Sequence[LimitRequest], on_failure: FailurePolicy | None = None
    ) -> list[Decision]:
        """One decision per request, in order; all allowed, or none consumed.

        `on_failure` overrides the backend's default failure policy for this call
        (backends that cannot fail ignore it).
        """
        ...

    async def peek(self, requests: Sequence[LimitRequest]) -> list[Decision]:
        """What `decide` would answer for a request of cost 0, changing nothing.

        For reports (the usage API), not for admission: it is not counted in the
        decision metrics and has no failure policy — a shared backend that cannot
        reach its store raises `BackendUnavailable`. Costs in `requests` are ignored.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and background resources."""
        ...

    @property
    def healthy(self) -> bool:
        """False while decisions are not coming from the backend's own counters."""
        ...

    def snapshot(self) -> dict[str, float]:
        """Counters and gauges for metrics (names are stable; values are numbers)."""
        ...


def all_allowed(decisions: Sequence[Decision]) -> bool:
    """True when every limit of a decision admitted the request."""
    return all(d.allowed for d in decisions)
