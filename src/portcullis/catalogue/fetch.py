"""Fetching OpenAPI descriptions (and the documents their `$ref`s name) from URLs.

A description URL is chosen by whoever configures the API, exactly like a webhook URL,
so it goes through the same guard (webhooks/destinations.py): every address is
checked, connections go only to checked addresses (no DNS rebinding), and an IP
literal in the URL is checked before any connection. Redirects are not followed (a
redirect could point anywhere; the guard would still check it, but the final URL is
what should be configured). Bodies are capped at MAX_DOCUMENT_BYTES.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from portcullis.model.openapi import (
    INLINE_BASE,
    MAX_DOCUMENT_BYTES,
    DescriptionError,
    bundle,
    parse_document,
)
from portcullis.webhooks.destinations import (
    DestinationPolicy,
    DestinationRefused,
    guarded_session,
    refusal_in,
)

USER_AGENT = "Portcullis-Catalogue/1"


class DescriptionFetcher:
    """GETs documents over one pooled client whose every connection passes `policy`."""

    def __init__(
        self,
        policy: DestinationPolicy,
        *,
        timeout: float = 10.0,
        max_bytes: int = MAX_DOCUMENT_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = guarded_session(
                self.policy, timeout=self.timeout, user_agent=USER_AGENT
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str) -> bytes:
        """The body of a 200 answer to GET `url`; `DescriptionError` saying why not."""
        target = URL(url)
        if target.scheme not in ("http", "https") or not target.host:
            raise DescriptionError((), f"{url}: only http(s) URLs can be fetched")
        if target.user is not None or target.password is not None:
            raise DescriptionError((), f"{url}: a URL must not carry credentials")
        try:
            self.policy.check_literal(target.host)
            async with self._client().get(
                target,
                allow_redirects=False,
                ssl=self._ssl,
                headers={"Accept": "application/json, application/yaml;q=0.9, */*;q=0.5"},
            ) as response:
                if response.status != 200:
                    raise DescriptionError((), f"GET {url} answered {response.status}")
                body = await response.content.read(self.max_bytes + 1)
        except DescriptionError:
            raise
        except DestinationRefused as exc:
            raise DescriptionError((), str(exc).replace("webhook destination", "URL")) from None
        except TimeoutError:
            raise DescriptionError((), f"GET {url} timed out after {self.timeout} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            refusal = refusal_in(exc)
            if refusal is not None:
                raise DescriptionError(
                    (), str(refusal).replace("webhook destination", "URL")
                ) from None
            raise DescriptionError((), f"GET {url} failed: {type(exc).__name__}: {exc}") from None
        if len(body) > self.max_bytes:
            raise DescriptionError((), f"{url} is larger than {self.max_bytes} bytes")
        return body


async def bundle_remote(document: Any, base: str, fetcher: DescriptionFetcher) -> Any:
    """`document` (found at `base`, a URL, or INLINE_BASE for a document sent in a request
    body) with its external `$ref`s fetched through `fetcher` and bundled. Relative
    references of an inline document have nothing to be relative to, and `file:`
    references are refused: the control plane never reads its own files for a caller."""
    loop = asyncio.get_running_loop()

    def load(uri: str) -> Any:
        if urlsplit(uri).scheme not in ("http", "https"):
            where = "a document sent inline" if base == INLINE_BASE else base
            raise DescriptionError(
                (), f"{uri!r} cannot be resolved from {where}: only absolute http(s) URLs can"
            )
        future = asyncio.run_coroutine_threadsafe(fetcher.fetch(uri), loop)
        return parse_document(future.result(fetcher.timeout * 2), uri)

    if not _has_external_refs(document):
        return document
    # The bundler is synchronous (the config loader shares it); it runs in a thread whose
    # fetches run on this loop.
    return await asyncio.to_thread(bundle, document, base, load)


async def import_url(url: str, fetcher: DescriptionFetcher) -> Any:
    """The description at `url`, parsed and bundled."""
    document = parse_document(await fetcher.fetch(url), url)
    return await bundle_remote(document, url, fetcher)


def _has_external_refs(node: Any) -> bool:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


FetcherFactory = Callable[[], DescriptionFetcher]
