"""What every authentication plugin answers with, and the identity headers it guards.

Refusals are precomputed when a snapshot compiles (`Reply`); identity headers
(`X-Consumer-*`, `X-Credential-*`, `X-Anonymous-Consumer`) are only ever the
gateway's: each auth plugin drops client-sent copies (`DropNames`) before adding
its own, so identity cannot be spoofed.
"""

from __future__ import annotations

import structlog

from portcullis.identity.consumers import ConsumerInfo
from portcullis.identity.credential_lookup import ConsumerCredentialCache
from portcullis.plugins.base import Headers, PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.problems import FORBIDDEN, PROBLEM_CONTENT_TYPE, problem_body

# Identity headers only the gateway may set; client-sent copies are dropped.
IDENTITY_HEADER_PREFIXES = (b"x-consumer-", b"x-credential-", b"x-anonymous-consumer")
CONTENT_TYPE = (b"content-type", PROBLEM_CONTENT_TYPE.encode())
log = structlog.get_logger(__name__)


class DropNames(dict[bytes, bool]):
    """Whether an upstream header name is dropped, memoised per name.

    Identity headers are matched by prefix; `bytes.startswith` with a tuple costs
    ~85 ns, a dict hit ~15 ns, and requests repeat the same few dozen names. The
    memo stops growing at a bound (clients choose header names).
    """

    __slots__ = ("_exact",)
    _BOUND = 4096

    def __init__(self, exact: frozenset[bytes]) -> None:
        super().__init__()
        self._exact = exact

    def __missing__(self, name: bytes) -> bool:
        dropped = name in self._exact or name.startswith(IDENTITY_HEADER_PREFIXES)
        if len(self) < self._BOUND:
            self[name] = dropped
        return dropped


class Reply:
    """A precomputed refusal; `response()` gives each request its own header list."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: Headers) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    def response(self) -> PluginResponse:
        return PluginResponse(self.status, self.body, list(self.headers))


def forbidden(detail: str) -> Reply:
    return Reply(403, problem_body(FORBIDDEN, detail), [CONTENT_TYPE])


def sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def set_identity(ctx: RequestContext, drop: DropNames, identity: Headers) -> None:
    """Drop spoofed identity headers (and whatever else `drop` names), add ours."""
    upstream = ctx.upstream_headers
    kept = [h for h in upstream if not drop[h[0]]]
    kept.extend(identity)
    upstream[:] = kept


def credential_cache(env: PluginEnv, plugin: str) -> ConsumerCredentialCache:
    """The worker's cache of consumer credentials, which basic, hmac and mtls auth read."""
    if env.consumer_credentials is None:
        raise ValueError(f"{plugin} needs the worker's credential cache")
    return env.consumer_credentials


def anonymous_consumer(name: str | None, env: PluginEnv, plugin: str) -> ConsumerInfo | None:
    """The consumer an auth plugin's `anonymous` names, if the route's view has it."""
    if name is None:
        return None
    found = env.consumers.get(name)
    if found is None:
        # Fail closed: without its consumer, anonymous access is simply off.
        log.warning("auth.anonymous_consumer_missing", plugin=plugin, consumer=name)
    return found


def anonymous_headers(consumer: ConsumerInfo | None) -> Headers:
    if consumer is None:
        return []
    return [*consumer.upstream_headers, (b"x-anonymous-consumer", b"true")]
