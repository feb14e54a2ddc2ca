"""One delivery attempt: POST the signed body, never follow a redirect, keep the first
bytes of the answer, and name what went wrong when there is no answer."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Final

import aiohttp
from yarl import URL

from portcullis.webhooks.destinations import DestinationPolicy, guarded_session, refusal_in
from portcullis.webhooks.retry import (
    RESPONSE_EXCERPT_BYTES,
    AttemptResult,
    ErrorKind,
    parse_retry_after,
)

# The spec recommends 15 to 30 s; the shorter bound keeps a slow receiver from holding a
# worker's slot for long.
DEFAULT_TIMEOUT: Final = 15.0
USER_AGENT: Final = "Portcullis-Webhooks/1"


class Sender:
    """Makes attempts over one pooled client whose every connection passes the policy."""

    def __init__(
        self,
        policy: DestinationPolicy,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self.timeout = timeout
        self._monotonic = monotonic
        self._wall = wall
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = guarded_session(
                self.policy, timeout=self.timeout, user_agent=USER_AGENT, auto_decompress=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> AttemptResult:
        started = self._monotonic()
        try:
            target = URL(url)
            if target.scheme not in ("http", "https") or not target.host:
                raise aiohttp.InvalidURL(url)
            self.policy.check_literal(target.host)
            async with self._client().post(
                target,
                data=body,
                headers={**headers, "Content-Type": "application/json"},
                allow_redirects=False,
                ssl=self._ssl,
            ) as response:
                excerpt = await _read_capped(response.content, RESPONSE_EXCERPT_BYTES)
                latency = self._monotonic() - started
                return AttemptResult(
                    status=response.status,
                    retry_after=parse_retry_after(
                        response.headers.get("Retry-After"), self._wall()
                    ),
                    latency=latency,
                    excerpt=excerpt,
                )
        except Exception as exc:
            return AttemptResult(
                status=None,
                error=_kind(exc),
                latency=self._monotonic() - started,
                detail=_describe(exc),
            )


async def _read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    # Only the excerpt is read; leaving the context drops a connection with unread bytes,
    # so a receiver cannot make the worker read a huge answer.
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _kind(exc: BaseException) -> ErrorKind:
    if refusal_in(exc) is not None:
        return ErrorKind.DESTINATION_REFUSED
    if isinstance(exc, asyncio.TimeoutError):
        return ErrorKind.TIMEOUT
    if isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        return ErrorKind.TLS
    if isinstance(exc, (aiohttp.ClientConnectorError, ConnectionError)):
        return ErrorKind.CONNECT
    return ErrorKind.PROTOCOL


def _describe(exc: BaseException) -> str:
    refusal = refusal_in(exc)
    if refusal is not None:
        return str(refusal)
    text = str(exc) or type(exc).__name__
    return text[:300]
