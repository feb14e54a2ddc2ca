"""Rate limiting of the admin API: token buckets per credential and per client IP.

Every request under /admin/v1 takes one token from the bucket of its client IP
and, when it carries an `Authorization` header, one from the bucket of that
credential. Buckets hold `burst` tokens and refill continuously at
`per_minute / 60` tokens a second. A request is refused when either bucket is
empty, with 429, `Retry-After` and a problem of the IANA type `quota-exceeded`
naming the violated policy; no token is taken from the other bucket then. Every
request counts, including ones that fail authentication: the per-IP limit is
what slows down token guessing.

Headers (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy` describes each
policy as `q` = burst tokens per `w` = seconds a full refill takes; `RateLimit`
gives `r` = requests left now and `t` = seconds until the bucket is full again,
or, on a 429, until the next request is allowed (equal to `Retry-After`).

State is per process and in memory (the control plane is rarely scaled out; each
process enforces its own limits). At most `max_keys` buckets are kept per kind;
the least recently used are dropped first (a dropped bucket starts full again).
Credentials are keyed by a digest, so no token is kept in the table.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portcullis.problems import PROBLEM_CONTENT_TYPE, QUOTA_EXCEEDED, problem_body

MAX_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class Policy:
    """`burst` requests at once, refilled at `per_minute` a minute; id as in the headers."""

    id: str
    per_minute: int
    burst: int

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self.per_minute / 60

    @property
    def window(self) -> int:
        """Seconds a full refill takes (the `w` of RateLimit-Policy)."""
        return max(1, math.ceil(self.burst / self.rate))

    @property
    def header_item(self) -> str:
        return f'"{self.id}";q={self.burst};w={self.window}'


class TokenBuckets:
    """One policy's buckets, by key (least recently used evicted past `max_keys`)."""

    __slots__ = ("_buckets", "max_keys", "policy")

    def __init__(self, policy: Policy, max_keys: int = MAX_KEYS) -> None:
        self.policy = policy
        self.max_keys = max_keys
        # key -> (tokens, time of that count)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def level(self, key: str, now: float) -> float:
        """Tokens in the bucket at `now` (a new bucket is full)."""
        entry = self._buckets.get(key)
        if entry is None:
            return float(self.policy.burst)
        tokens, stamp = entry
        return min(float(self.policy.burst), tokens + (now - stamp) * self.policy.rate)

    def take(self, key: str, tokens: float, now: float) -> None:
        """Store the level after taking one token (`tokens` is the level before)."""
        self._buckets[key] = (tokens - 1.0, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    headers: list[tuple[bytes, bytes]]
    retry_after: int = 0
    violated: tuple[str, ...] = ()


def _next_token(level: float, policy: Policy) -> int:
    """RateLimit `t` (draft-ietf-httpapi-ratelimit-headers §4.2.2): whole seconds until
    additional quota — the next whole token — whatever the status; 0 when full."""
    if level >= policy.burst:
        return 0
    return max(1, math.ceil((math.floor(level) + 1 - level) / policy.rate))


class AdminRateLimiter:
    """Decides per request; policies with `per_minute` 0 are switched off."""

    def __init__(
        self,
        caller: Policy,
        ip: Policy,
        *,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._caller = TokenBuckets(caller, max_keys) if caller.per_minute > 0 else None
        self._ip = TokenBuckets(ip, max_keys) if ip.per_minute > 0 else None

    @property
    def enabled(self) -> bool:
        return self._caller is not None or self._ip is not None

    def check(self, credential: bytes | None, client_ip: str | None) -> Verdict:
        """Take a token from each applicable bucket, or refuse without taking any."""
        now = self._clock()
        checks: list[tuple[TokenBuckets, str, float]] = []
        if self._caller is not None and credential:
            key = hashlib.blake2b(credential, digest_size=16).hexdigest()
            checks.append((self._caller, key, self._caller.level(key, now)))
        if self._ip is not None:
            key = client_ip or "unknown"
            checks.append((self._ip, key, self._ip.level(key, now)))
        empty = [(b, level) for b, _, level in checks if level < 1.0]
        if empty:
            wait = max(math.ceil((1.0 - level) / b.policy.rate) for b, level in empty)
            items = []
            for b, _, level in checks:
                r = 0 if level < 1.0 else math.floor(level)
                items.append(f'"{b.policy.id}";r={r};t={_next_token(level, b.policy)}')
            return Verdict(
                False,
                self._headers(checks, ", ".join(items)),
                wait,
                tuple(b.policy.id for b, _ in empty),
            )
        items = []
        for buckets, key, level in checks:
            buckets.take(key, level, now)
            left = level - 1.0
            t = _next_token(left, buckets.policy)
            items.append(f'"{buckets.policy.id}";r={math.floor(left)};t={t}')
        return Verdict(True, self._headers(checks, ", ".join(items)))

    @staticmethod
    def _headers(
        checks: list[tuple[TokenBuckets, str, float]], state: str
    ) -> list[tuple[bytes, bytes]]:
        if not checks:
            return []
        policy = ", ".join(b.policy.header_item for b, _, _ in checks)
        return [(b"ratelimit-policy", policy.encode()), (b"ratelimit", state.encode())]


class RateLimitMiddleware:
    """Applies `limiter` to HTTP requests under `prefix` (health and docs are not limited)."""

    def __init__(self, app: ASGIApp, limiter: AdminRateLimiter, prefix: str = "/admin/v1") -> None:
        self.app = app
        self.limiter = limiter
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.limiter.enabled
            or not scope.get("path", "").startswith(self.prefix)
        ):
            await self.app(scope, receive, send)
            return
        credential = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                credential = value
                break
        client = scope.get("client")
        verdict = self.limiter.check(credential, client[0] if client else None)
        if not verdict.allowed:
            await self._refuse(scope, send, verdict)
            return
        extra = verdict.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, verdict: Verdict) -> None:
        extensions: dict[str, Any] = {"violated-policies": list(verdict.violated)}
        body = problem_body(
            QUOTA_EXCEEDED,
            f"too many admin API requests ({', '.join(verdict.violated)} limit); "
            f"retry in {verdict.retry_after} s",
            instance=scope.get("path"),
            **extensions,
        )
        headers = [
            (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(verdict.retry_after).encode()),
            *verdict.headers,
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
