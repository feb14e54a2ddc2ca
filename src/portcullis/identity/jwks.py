"""Remote JSON Web Key Sets (RFC 7517) for jwt-auth, cached per URL and per worker.

The registry outlives config snapshots: every jwt-auth plugin naming the same
`jwks_url` shares one `JwksSource`, so a snapshot swap never refetches. Lookups
are synchronous dictionary reads while the cached set is fresh; fetching happens
on the event loop with aiohttp (never a blocking call) and is single-flight per
URL, so a burst of requests triggers at most one download.

Freshness: a set is kept for the document's `Cache-Control: max-age`, clamped to
the policy's `[min_ttl, max_ttl]` (`default_ttl` when the header says nothing).
After that it is still served while a background refresh runs (stale while
revalidate). A token naming an unknown `kid` triggers an immediate refetch, at
most once per `refetch_interval` seconds per URL, which is how key rotation is
picked up without letting a stream of made-up kids hammer the identity provider.
When the URL fails, the last good set keeps being served; only a source that was
never fetched successfully reports itself unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import structlog
from jwt import PyJWK
from jwt.exceptions import PyJWTError

log = structlog.get_logger(__name__)

_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-maxage|max-age)\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class JwksPolicy:
    """How one JWKS URL is cached and fetched (seconds)."""

    min_ttl: float = 60.0
    max_ttl: float = 86_400.0
    default_ttl: float = 300.0
    # Shortest gap between two fetches triggered by unknown kids or failures.
    refetch_interval: float = 10.0
    timeout: float = 5.0
    max_bytes: int = 512 * 1024

    def ttl_for(self, cache_control: str | None) -> float:
        """The lifetime of a freshly fetched set, from its `Cache-Control` header."""
        ttl = self.default_ttl
        if cache_control:
            if _NO_CACHE.search(cache_control):
                ttl = self.min_ttl
            elif (m := _MAX_AGE.search(cache_control)) is not None:
                ttl = float(m.group(1))
        return min(max(ttl, self.min_ttl), self.max_ttl)


DEFAULT_POLICY = JwksPolicy()


class JwksUnavailableError(Exception):
    """The set at a URL was never fetched successfully, so no token can be checked."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"JWKS {url} unavailable: {reason}")
        self.url = url
        self.reason = reason


class JwksFetchError(Exception):
    """One fetch failed (network, status, size, or an unusable document)."""


@dataclass(frozen=True, slots=True)
class RemoteKey:
    """One usable key of a fetched set."""

    kid: str | None
    # The key's own `alg` member, when it has one: it may then sign with that only.
    alg: str | None
    jwk: PyJWK


@dataclass(frozen=True, slots=True)
class KeySet:
    """One fetched set, indexed for the hot path."""

    by_kid: dict[str, RemoteKey]
    keys: tuple[RemoteKey, ...]

    @classmethod
    def parse(cls, document: object) -> KeySet:
        """Usable signature keys of a JWKS document; others are skipped (RFC 7517 §5).

        Members meant for encryption (`use: enc`) and members carrying private key
        material are skipped, as are keys PyJWT cannot load.
        """
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise JwksFetchError("document is not a JWK Set (no 'keys' array)")
        keys: list[RemoteKey] = []
        for member in document["keys"]:
            if not isinstance(member, dict) or member.get("use", "sig") != "sig" or "d" in member:
                continue
            try:
                jwk = PyJWK(member)
            except PyJWTError:
                continue
            kid = member.get("kid")
            alg = member.get("alg")
            keys.append(
                RemoteKey(
                    kid if isinstance(kid, str) else None,
                    alg if isinstance(alg, str) else None,
                    jwk,
                )
            )
        if not keys:
            raise JwksFetchError("the JWK Set holds no usable signature key")
        by_kid: dict[str, RemoteKey] = {}
        for key in keys:
            if key.kid is not None and key.kid not in by_kid:
                by_kid[key.kid] = key
        return cls(by_kid=by_kid, keys=tuple(keys))


class JwksSource:
    """The cached key set of one URL; shared by every plugin that names the URL."""

    __slots__ = (
        "_clock",
        "_inflight",
        "_last_attempt",
        "_session",
        "_tasks",
        "expires_at",
        "fetched_at",
        "keyset",
        "last_error",
        "policy",
        "url",
    )

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        policy: JwksPolicy,
        clock: Callable[[], float],
        tasks: set[asyncio.Task[None]],
    ) -> None:
        self.url = url
        self.policy = policy
        self._session = session
        self._clock = clock
        self._tasks = tasks
        self.keyset: KeySet | None = None
        self.fetched_at = 0.0
        self.expires_at = 0.0
        self.last_error: str | None = None
        self._last_attempt = float("-inf")
        self._inflight: asyncio.Task[None] | None = None

    # -- lookups ---------------------------------------------------------------

    async def get(self, kid: str | None) -> tuple[RemoteKey, ...]:
        """Keys that may have signed a token with this `kid` (all keys when it has none).

        Fetches when nothing was ever fetched (raising `JwksUnavailableError` if that
        fails), refetches once when the kid is unknown (rate-limited), and schedules a
        background refresh when the cached set is past its lifetime.
        """
        keyset = self.keyset
        if keyset is None:
            await self.refresh(force=False)
            keyset = self.keyset
            if keyset is None:
                raise JwksUnavailableError(self.url, self.last_error or "not fetched")
        elif self._clock() >= self.expires_at:
            self.refresh_in_background()
        if kid is None:
            return keyset.keys
        key = keyset.by_kid.get(kid)
        if key is not None:
            return (key,)
        # An unknown kid usually means the provider rotated: look again, rarely.
        if self._inflight is not None or self._may_fetch():
            await self.refresh(force=False)
            keyset = self.keyset
            if keyset is not None and (key := keyset.by_kid.get(kid)) is not None:
                return (key,)
        return ()

    @property
    def ready(self) -> bool:
        """True once a set was fetched successfully at least once."""
        return self.keyset is not None

    # -- fetching --------------------------------------------------------------

    def _may_fetch(self) -> bool:
        return self._clock() - self._last_attempt >= self.policy.refetch_interval

    def refresh_in_background(self) -> None:
        """Start a refresh unless one runs or the last attempt was too recent."""
        if self._inflight is None and self._may_fetch():
            self._start_fetch()

    def _start_fetch(self) -> asyncio.Task[None]:
        # The fetch runs as its own task so that a cancelled request (client gone)
        # never cancels a download other requests are waiting for.
        self._last_attempt = self._clock()
        task = asyncio.get_running_loop().create_task(self._run_fetch())
        self._inflight = task
        self._tasks.add(task)
        task.add_done_callback(self._fetch_done)
        return task

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._inflight is task:
            self._inflight = None

    async def refresh(self, *, force: bool = True) -> None:
        """Fetch the set now, or join the fetch already running; never raises on failure.

        `force=False` skips the fetch when the last attempt is younger than the
        refetch interval, which bounds the load a failing or rotating URL sees.
        """
        task = self._inflight
        if task is None:
            if not force and not self._may_fetch():
                return
            task = self._start_fetch()
        await asyncio.shield(task)

    async def _run_fetch(self) -> None:
        try:
            keyset, ttl = await self._fetch()
        except Exception as exc:  # any failure keeps the last good set
            self.last_error = str(exc) or type(exc).__name__
            log.warning("jwks.fetch_failed", url=self.url, error=self.last_error)
            return
        now = self._clock()
        self.keyset = keyset
        self.fetched_at = now
        self.expires_at = now + ttl
        self.last_error = None
        log.info("jwks.fetched", url=self.url, keys=len(keyset.keys), ttl=ttl)

    async def _fetch(self) -> tuple[KeySet, float]:
        policy = self.policy
        timeout = aiohttp.ClientTimeout(total=policy.timeout)
        # The shared session does not decompress: gzip is inflated below, bounded.
        headers = {
            "accept": "application/jwk-set+json, application/json",
            "accept-encoding": "gzip",
        }
        async with self._session.get(
            self.url, timeout=timeout, headers=headers, allow_redirects=True
        ) as resp:
            if resp.status != 200:
                raise JwksFetchError(f"HTTP {resp.status}")
            body = await _read_bounded(resp, policy.max_bytes)
            encoding = resp.headers.get("content-encoding", "").strip().lower()
            cache_control = resp.headers.get("cache-control")
        if encoding in ("gzip", "x-gzip", "deflate"):
            body = _decompress(body, policy.max_bytes)
        elif encoding not in ("", "identity"):
            raise JwksFetchError(f"unsupported content-encoding {encoding!r}")
        document = json.loads(body)
        return KeySet.parse(document), policy.ttl_for(cache_control)


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes (a JWKS is a few kB)."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(65_536):
        total += len(chunk)
        if total > limit:
            raise JwksFetchError(f"document larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _decompress(body: bytes, limit: int) -> bytes:
    """Inflate gzip or zlib-wrapped deflate, refusing output over `limit` bytes."""
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: auto-detect gzip or zlib header
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise JwksFetchError(f"bad compressed body: {exc}") from exc
    if len(out) > limit:
        raise JwksFetchError(f"document larger than {limit} bytes")
    return out


class JwksRegistry:
    """Every remote JWKS this worker uses, by URL; created once per worker."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._clock = clock
        self._sources: dict[str, JwksSource] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def source(self, url: str, policy: JwksPolicy = DEFAULT_POLICY) -> JwksSource:
        """The shared source for `url`; the policy of the latest caller applies."""
        src = self._sources.get(url)
        if src is None:
            src = JwksSource(url, self._session, policy, self._clock, self._tasks)
            self._sources[url] = src
        else:
            src.policy = policy
        return src

    def prefetch(self, url: str) -> None:
        """Warm `url` in the background (no-op without a running loop or once fetched)."""
        src = self._sources.get(url)
        if src is None or src.ready or self._closed:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        src.refresh_in_background()

    async def get(self, url: str, kid: str | None) -> tuple[RemoteKey, ...]:
        """Shortcut for `source(url).get(kid)` with the URL's current policy."""
        src = self._sources.get(url)
        return await (src if src is not None else self.source(url)).get(kid)

    def __len__(self) -> int:
        return len(self._sources)

    async def settled(self) -> None:
        """Wait until no fetch is in flight (background refreshes included).

        For callers that must observe a refresh's outcome, such as tests, instead of
        guessing how long it takes."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel background refreshes; the session belongs to the caller."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
