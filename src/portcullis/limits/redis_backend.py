"""Redis rate-limit backend: exact across every worker and node that shares the Redis.

Each decision is one `EVALSHA` of one Lua script (`lua/*.lua`, shipped as package
data and joined into one script): it reads the server's clock (`TIME`, so node
clocks never matter), evaluates every limit of the request, and writes the new
states only when all of them admit it — atomically, since Redis runs a script
alone. Keys are `<prefix>{<slot>}:<key>:<algorithm>`: the `{slot}` hash tag puts
every key of one decision in one Redis Cluster slot. Every key written gets a TTL
after which its state no longer matters. The script is sent by its SHA1; after
`NOSCRIPT` (a restarted or flushed Redis) it is loaded once and the call retried.

Redis-py's own retries are off: a retried script after a timeout could count a
request twice. Instead every call has a deadline (`timeout`); a failure or a
timeout opens a circuit and the failure policy (`FailurePolicy`) answers: allow,
refuse, or decide with a local `MemoryBackend`. After `retry_interval` one request
probes Redis again (the others keep the policy meanwhile); success closes the
circuit. A decision that timed out may still have run on Redis: it then counts a
request that the policy answered, which can only make the shared count higher,
never lower.

Counters for metrics are plain attributes, gathered by `snapshot()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import structlog
from redis.exceptions import NoScriptError

from portcullis.limits.backend import BackendUnavailable, FailurePolicy, LimitRequest
from portcullis.limits.memory import MemoryBackend
from portcullis.limits.spec import MICROS, Decision
from portcullis.redis_client import REDIS_FAILURES, RedisUser, SharedRedis

log = structlog.get_logger(__name__)

LUA_FILES = (
    "common.lua",
    "fixed_window.lua",
    "sliding_window.lua",
    "token_bucket.lua",
    "gcra.lua",
    "calendar.lua",
    "decide.lua",
)
DEFAULT_PREFIX = "pc:rl:"


def load_script() -> str:
    """The decision script: the helper and algorithm files, then the main body."""
    lua = resources.files("portcullis.limits").joinpath("lua")
    return "\n".join(lua.joinpath(name).read_text(encoding="utf-8") for name in LUA_FILES)


class RedisBackend(RedisUser):
    """Shared counters in Redis, with a failure policy and a circuit (see the module doc)."""

    name = "redis"

    def __init__(
        self,
        redis: SharedRedis,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 0.2,
        on_failure: FailurePolicy = FailurePolicy.local,
        fallback: MemoryBackend | None = None,
        owns_redis: bool = False,
        pipelined: bool = True,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        super().__init__(redis, timeout=timeout, owns_redis=owns_redis)
        self._client = redis.client
        self.prefix = prefix
        self.on_failure = on_failure
        self.fallback = fallback if fallback is not None else MemoryBackend()
        self._script = load_script()
        self._sha = hashlib.sha1(self._script.encode(), usedforsecurity=False).hexdigest()
        # Decisions go over one pipelined connection (~6x less CPU than redis-py per call,
        # redis_pipe.py); redis-py only where the pipe can't go (TLS).
        # `pipelined=False` keeps redis-py: the benchmark's baseline.
        self._pipe = redis.pipe if pipelined else None
        # Metrics.
        self.allowed = 0
        self.denied = 0
        self.fallback_decisions = 0
        self.open_decisions = 0
        self.closed_decisions = 0
        self.script_loads = 0

    @property
    def circuit_open(self) -> bool:
        return self.circuit.is_open

    def key_for(self, request: LimitRequest) -> str:
        """The Redis key of a request's counter."""
        tag = request.slot or request.key
        return f"{self.prefix}{{{tag}}}:{request.key}{request.spec.key_suffix}"

    async def decide(
        self, requests: Sequence[LimitRequest], on_failure: FailurePolicy | None = None
    ) -> list[Decision]:
        circuit = self.circuit
        if circuit.blocked():
            return self._degraded(requests, on_failure or self.on_failure)
        try:
            decisions = await self._call(requests)
        except REDIS_FAILURES as exc:
            circuit.failed(exc)
            return self._degraded(requests, on_failure or self.on_failure)
        except BaseException:
            circuit.abandoned()
            raise
        circuit.succeeded()
        return decisions

    async def _call(self, requests: Sequence[LimitRequest]) -> list[Decision]:
        keys = [self.key_for(r) for r in requests]
        args: list[str | int] = []
        for r in requests:
            args.extend(r.spec.lua_args)
            args.append(r.cost)
        reply = await self._decision_script(keys, args)
        if reply[0]:
            self.allowed += 1
        else:
            self.denied += 1
        return [
            Decision(bool(reply[i]), reply[i + 1], reply[i + 2], reply[i + 3])
            for i in range(1, 4 * len(requests), 4)
        ]

    async def _decision_script(self, keys: list[str], args: list[str | int]) -> Any:
        """One EVALSHA within the deadline; after NOSCRIPT the script is loaded, once."""
        if self._pipe is not None:
            # The pipe keeps the deadline itself (and drops a connection that misses it).
            pipe, timeout = self._pipe, self.timeout
            try:
                return await pipe.execute(
                    "EVALSHA", self._sha, len(keys), *keys, *args, timeout=timeout
                )
            except NoScriptError:
                await self._load_script()
                return await pipe.execute(
                    "EVALSHA", self._sha, len(keys), *keys, *args, timeout=timeout
                )
        async with asyncio.timeout(self.timeout):
            try:
                return await self._command("EVALSHA", self._sha, len(keys), *keys, *args)
            except NoScriptError:
                await self._load_script()
                return await self._command("EVALSHA", self._sha, len(keys), *keys, *args)

    async def _command(self, *args: str | int) -> Any:
        if self._pipe is not None:
            return await self._pipe.execute(*args, timeout=self.timeout)
        return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]

    async def _load_script(self) -> None:
        sha = await self._command("SCRIPT", "LOAD", self._script)
        self._sha = sha.decode() if isinstance(sha, bytes) else str(sha)
        self.script_loads += 1

    async def warm(self, connections: int, *, timeout: float = 2.0) -> int:
        """Before traffic: connect to Redis and load the decision script, so the first
        burst is decided by Redis, not by the failure policy. Returns the connections
        that answered: the pipe's one (redis-py: up to `connections` pooled ones), 0
        when Redis is away (traffic then finds out)."""
        if self._pipe is None:
            ready = await self.redis.warm(connections, timeout=timeout)
        else:
            ready = 0
            with contextlib.suppress(*REDIS_FAILURES):
                async with asyncio.timeout(timeout):
                    await self._pipe.execute("PING")
                    ready = 1
        if ready:
            with contextlib.suppress(*REDIS_FAILURES):
                async with asyncio.timeout(timeout):
                    await self._load_script()
        return ready

    async def peek(self, requests: Sequence[LimitRequest]) -> list[Decision]:
        """The decision script at cost 0: it reads every limit and writes nothing.

        Ignores the circuit and the failure policy (a report must not show local
        counters as if they were the shared ones): errors raise `BackendUnavailable`.
        """
        if not requests:
            return []
        keys = [self.key_for(r) for r in requests]
        args: list[str | int] = []
        for r in requests:
            args.extend(r.spec.lua_args)
            args.append(0)
        try:
            reply = await self._decision_script(keys, args)
        except REDIS_FAILURES as exc:
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}"[:200]) from exc
        return [
            Decision(bool(reply[i]), reply[i + 1], reply[i + 2], reply[i + 3])
            for i in range(1, 4 * len(requests), 4)
        ]

    def _degraded(self, requests: Sequence[LimitRequest], policy: FailurePolicy) -> list[Decision]:
        if policy is FailurePolicy.local:
            self.fallback_decisions += 1
            return self.fallback.decide_now(requests)
        if policy is FailurePolicy.open:
            self.open_decisions += 1
            return [Decision(True, r.spec.limit, 0, 0, counted=False) for r in requests]
        self.closed_decisions += 1
        retry = round(self.retry_interval * MICROS)
        return [Decision(False, 0, 0, retry, counted=False) for _ in requests]

    async def aclose(self) -> None:
        await self._close_own_redis()

    def snapshot(self) -> dict[str, float]:
        return {
            "decisions_allowed": self.allowed,
            "decisions_denied": self.denied,
            "backend_errors": self.circuit.errors,
            "backend_timeouts": self.circuit.timeouts,
            "fallback_active": 1 if self.circuit.is_open else 0,
            "fallback_decisions": self.fallback_decisions,
            "failopen_decisions": self.open_decisions,
            "failclosed_decisions": self.closed_decisions,
            "circuit_opened": self.circuit.opened,
            "recoveries": self.circuit.recoveries,
            "script_loads": self.script_loads,
            "local_keys": len(self.fallback),
        }
