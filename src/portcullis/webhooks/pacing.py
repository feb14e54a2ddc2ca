"""An endpoint's rate limit: a token bucket on the worker's clock.

An endpoint with `rate_limit` r gets r tokens a second and holds at most max(1, r) (a
second's worth), so in any T seconds it is sent at most max(1, r) + r * T attempts and,
over a long run, r a second. A message that finds the bucket empty is not attempted: it
goes back to the queue as it was (no attempt counted, nothing failed) and waits its turn.
"""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate: float, now: float) -> None:
        if rate <= 0:
            raise ValueError("a rate limit is a positive number of deliveries per second")
        self.rate = rate
        self.tokens = self.capacity
        self.stamp = now

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate)

    def retune(self, rate: float, now: float) -> None:
        """Follow an endpoint whose limit changed (the tokens already earned stay, capped)."""
        if rate <= 0:
            raise ValueError("a rate limit is a positive number of deliveries per second")
        self._refill(now)
        self.rate = rate
        self.tokens = min(self.tokens, self.capacity)

    def _refill(self, now: float) -> None:
        # A clock that steps back earns nothing (and takes nothing away).
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float) -> bool:
        """Spend a token for one attempt now; False when there is none."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: one is there now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate
