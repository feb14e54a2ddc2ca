"""http-log's sink: batches POSTed as a JSON array (or NDJSON) through the SSRF guard.

The destination is a URL the config names, so it is reached like a webhook: through
`webhooks.destinations` (only public addresses, unless the operator allows networks in
`PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS`; resolved once, connected to the checked address).
A 2xx is success; 429, 5xx, timeouts and connection errors are retryable (with the
receiver's `Retry-After`); any other status, or a refused destination, drops the batch.
Redirects are not followed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp

from portcullis.analytics.record import RequestRecord
from portcullis.logship.records import LineEncoder
from portcullis.logship.shipper import ShipError
from portcullis.webhooks.destinations import DestinationPolicy, guarded_session, refusal_in
from portcullis.webhooks.retry import parse_retry_after

USER_AGENT = "portcullis-http-log"


class HttpSink:
    def __init__(
        self,
        url: str,
        *,
        policy: DestinationPolicy,
        headers: Mapping[str, str],
        ndjson: bool,
        timeout: float,
        encoder: LineEncoder | None = None,
    ) -> None:
        self.url = url
        self.policy = policy
        encoder = encoder or LineEncoder()
        self._encode = encoder.lines if ndjson else encoder.array
        content_type = "application/x-ndjson" if ndjson else "application/json"
        self._headers = {"Content-Type": content_type, **headers}
        self.timeout = timeout
        self._host = urlsplit(url).hostname or ""
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = guarded_session(
                self.policy, timeout=self.timeout, user_agent=USER_AGENT
            )
        return self._session

    async def send(self, batch: list[RequestRecord]) -> None:
        body = self._encode(batch)
        try:
            self.policy.check_literal(self._host)
            async with self._client().post(
                self.url, data=body, headers=self._headers, allow_redirects=False
            ) as response:
                await response.read()
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            refused = refusal_in(exc)
            if refused is not None:
                raise ShipError(str(refused), retryable=False) from exc
            raise ShipError(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        if 200 <= status < 300:
            return
        raise ShipError(
            f"the receiver answered {status}",
            retryable=status == 429 or status >= 500,
            retry_after=retry_after,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
