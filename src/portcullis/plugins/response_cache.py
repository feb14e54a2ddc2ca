"""response-cache: serve repeated GET/HEAD requests from the worker's cache (memory or Redis).

Config:

    ttl: 60                      # seconds, when the response gives no freshness of its own
    max_ttl: 3600                # cap on the freshness a response asks for
    methods: [GET, HEAD]
    statuses: [200, 203, 300, 301, 308, 404, 410]
    content_types: [application/json, text/*]   # optional; default: any
    key: [method, path, query]   # also: consumer, header:<name>
    vary_headers: [accept-language]             # request headers always in the key
    max_body_bytes: 1048576
    honour_cache_control: true
    cache_authenticated: per-consumer           # per-consumer | shared | never

Where it runs: priority 725. In `access` that is after auth (key-auth 1250,
jwt-auth 1450), acl (955), size limits (951) and rate limits/quotas (910, ~900),
so a hit is still authenticated, authorised and counted, and before the
request-transformer (700), which only matters for requests that go upstream. In
`response_body` it is after the response-transformer (750), so the final body is
what is stored (a hit is a plugin reply: no response plugin runs on it again). A
hit answers with the stored status, headers and body plus `X-Cache: HIT` and
`Age`; a miss adds `X-Cache: MISS` and stores the response in `response_body`. Bodies the
proxy does not buffer (over 8 MiB) skip that phase and are never stored. HEAD is
answered from a GET's entry (without the body) but never stored itself.

The key: `<route>|<path>|<digest>` (cache/entry.py). The digest always covers the
origin the response was made for: the scheme and the Host, lower-cased and without
the scheme's default port (a route may match several hosts, or any: one host's
response is never served to another), and the forwarding fields the upstream gets
when they name another host, scheme or port than those (`X-Forwarded-Host`,
`-Proto`, `-Port` and `Forwarded` host/proto, which only a trusted proxy can set).
Then what `key` selects: `method` (HEAD counts as GET), `path`, `query` (parameters
sorted by name, keeping the order of repeated ones; the query as forwarded, so a
key-auth `query_param` is not part of it), `header:<name>` and `vary_headers`
values, `consumer`. With `cache_authenticated: per-consumer` (default) the
consumer's name is in the key whenever an auth plugin identified one, whatever
`key` says, so one consumer's response is never served to another; `shared` keys
authenticated requests by `key` alone (for data that is the same for everyone);
`never` does not cache requests that carry a consumer (`X-Cache: BYPASS`). On an API's
routes the version the request resolved to, and whether it went to a sandbox, are
always in the key (runtime/versions.py: one shared path, a service per version).

Request fields that upstreams commonly honour to answer for another path, method,
host or scheme than the request says (`UNKEYED_OVERRIDES`: X-Original-URL,
X-Rewrite-URL, X-HTTP-Method-Override, X-Forwarded-Scheme, X-Host...) are not in
the key, so they are removed from requests of the cached methods before they go
upstream: otherwise one request could store a response for a page other clients
ask for (cache poisoning through an unkeyed input). A route that needs one of them
forwarded keys it (`header:<name>` or `vary_headers`), and then it is kept.

Cache-Control (RFC 9111), when `honour_cache_control` is on:
- request `no-store` → neither served nor stored (`X-Cache: BYPASS`); `no-cache`
  or `max-age=0` → not served, fetched and stored afresh; `max-age=N` → served only
  if at most N seconds old; `min-fresh=N` → only if fresh for N more seconds.
- response `no-store`, `private` or `no-cache` → not stored. The TTL is `s-maxage`,
  else `max-age`, else `Expires` minus `Date`, else `ttl`; capped by `max_ttl`; minus
  the response's `Age`. A response that is already stale is not stored.
- a request with `Authorization` that no gateway auth plugin resolved to a
  consumer is stored only if the response says `public`, `s-maxage` or
  `must-revalidate` (§3.5), unless `header:authorization` is part of the key.
  The same holds for a request with `Cookie` (consumer or not), unless
  `header:cookie` is part of the key or the response has `Vary: Cookie`: an
  upstream that personalises a page by its session cookie and says nothing
  would otherwise have that page served to everyone.
  With `honour_cache_control` off this rule still holds (then such responses are
  never stored), and the TTL is always `ttl`.

Always: a response with `Set-Cookie` or `Content-Range` is not stored; `Vary: *`
is not stored; other `Vary` names that are not already in the key are stored
with the entry: the entry goes under a per-variant key and a small marker under
the main key lists the names (a two-step lookup only for such responses).
Per-request headers are not stored: `Content-Length` (recomputed), `Via`,
`X-Request-Id`, `Age`, `X-Cache`, and whatever plugins added for this request
(`ctx.response_headers`: RateLimit, CORS...), which the proxy adds again to hits.
"""

from __future__ import annotations

import hashlib
import re
from typing import ClassVar

from portcullis.analytics.record import Flag
from portcullis.cache.backend import CacheBackend
from portcullis.cache.entry import CacheEntry, cache_key, key_path, variant_key
from portcullis.cache.policy import INVALID, CacheControl, freshness_lifetime
from portcullis.model.plugins.response_cache import (
    ResponseCacheConfig,
)
from portcullis.plugins.base import (
    Headers,
    Phase,
    Plugin,
    PluginResponse,
    RequestContext,
)
from portcullis.plugins.env import PluginEnv

# Response headers that describe one delivery, not the stored response.
_NOT_STORED = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"via", b"x-request-id", b"age",
     b"x-cache"}
)  # fmt: skip
# Request fields upstreams commonly honour to serve another path (IIS, Symfony, Laravel),
# method (method overrides), host or scheme (Rack/Rails, Spring, IIS variants of the
# forwarding fields) than the request line, Host and the gateway's X-Forwarded-* say.
UNKEYED_OVERRIDES = frozenset(
    {b"x-original-url", b"x-rewrite-url", b"x-http-method-override", b"x-http-method",
     b"x-method-override", b"x-host", b"x-original-host", b"x-forwarded-server",
     b"x-forwarded-scheme", b"x-forwarded-ssl", b"x-url-scheme", b"front-end-https",
     b"x-forwarded-prefix"}
)  # fmt: skip
_DEFAULT_PORT = {b"http": b":80", b"https": b":443"}
_FORWARDED_PARAM = re.compile(rb'(?i)(?:^|[;,\s])(host|proto)=("[^"]*"|[^;,\s]*)')
X_CACHE_HIT = (b"x-cache", b"HIT")
X_CACHE_MISS = (b"x-cache", b"MISS")
X_CACHE_BYPASS = (b"x-cache", b"BYPASS")


def _join_values(headers: Headers, name: bytes) -> bytes | None:
    """Every value of a request header, joined by commas; None when absent."""
    values = [v for n, v in headers if n == name]
    if not values:
        return None
    return values[0] if len(values) == 1 else b",".join(values)


def normalise_host(host: bytes, scheme: bytes) -> bytes:
    """A Host as the key sees it: lower case, without the scheme's default port."""
    host = host.lower()
    port = _DEFAULT_PORT.get(scheme)
    if port is not None and host.endswith(port):
        host = host[: -len(port)]
    return host


def origin_key(ctx: RequestContext) -> bytes:
    """The origin a response is made for (see the module doc): scheme, host, forwarding."""
    scheme: bytes = ctx.scope.get("scheme", "http").encode()
    host = b""
    for name, value in ctx.headers:
        if name == b"host":
            host = value
            break
    origin = normalise_host(host, scheme)
    parts = [scheme, b"://", origin]
    for name, value in ctx.upstream_headers:
        # The gateway sets these from the Host and scheme unless a trusted proxy sent its own.
        if name == b"x-forwarded-host":
            if value != host:
                forwarded_host = normalise_host(value, scheme)
                if forwarded_host != origin:
                    parts += (b"\x00h=", forwarded_host)
        elif name == b"x-forwarded-proto":
            if value != scheme:
                parts += (b"\x00p=", value.lower())
        elif name == b"x-forwarded-port":
            parts += (b"\x00o=", value)
        elif name == b"forwarded" and b"," in value:
            # Elements before the gateway's own came from a trusted proxy; their `for`
            # names the client, so only host and proto are keyed.
            for param, param_value in _FORWARDED_PARAM.findall(value.rpartition(b",")[0]):
                parts += (b"\x00f", param.lower(), b"=", param_value.strip(b'"').lower())
    return b"".join(parts)


def normalise_query(query: bytes) -> bytes:
    """Parameters sorted by name; repeated names keep their relative order."""
    if b"&" not in query:
        return query
    parts = [p for p in query.split(b"&") if p]
    parts.sort(key=lambda p: p.partition(b"=")[0])
    return b"&".join(parts)


def vary_digest(names: tuple[str, ...], headers: Headers) -> str:
    """The variant a request selects: its values of the `Vary` names (list-normalised)."""
    h = hashlib.blake2b(digest_size=12)
    for name in names:
        value = _join_values(headers, name.encode())
        if value is None:
            h.update(b"N")
        else:
            items = b",".join(part.strip() for part in value.split(b","))
            h.update(b"S" + len(items).to_bytes(4, "big") + items)
    return h.hexdigest()


class ResponseCache(Plugin[ResponseCacheConfig]):
    """Lookup in `access`, store in `response_body` (see the module doc)."""

    name: ClassVar[str] = "response-cache"
    priority: ClassVar[int] = 725
    config_model = ResponseCacheConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access", "response_body"})

    def __init__(self, config: ResponseCacheConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.backend: CacheBackend = env.cache_backend()
        self.clock = env.clock
        self._ttl = config.ttl
        self._max_ttl = config.max_ttl
        self._methods = frozenset(config.methods)
        self._statuses = frozenset(config.statuses)
        self._max_body = config.max_body_bytes
        self._honour = config.honour_cache_control
        self._auth_mode = config.cache_authenticated
        types = config.content_types
        self._exact_types = None if types is None else frozenset(t for t in types if t[-1] != "*")
        self._type_prefixes = () if types is None else tuple(t[:-1] for t in types if t[-1] == "*")
        parts = config.key
        self._by_method = "method" in parts
        self._by_path = "path" in parts
        self._by_query = "query" in parts
        self._by_consumer = "consumer" in parts
        names = [p.partition(":")[2] for p in parts if p.startswith("header:")]
        names += [n for n in config.vary_headers if n not in names]
        self._key_headers = tuple(n.encode() for n in sorted(names))
        self._keyed_names = frozenset(names)
        self._by_authorization = "authorization" in self._keyed_names
        self._by_cookie = "cookie" in self._keyed_names
        self._strip = UNKEYED_OVERRIDES - {n.encode() for n in names}

    # ------------------------------------------------------------------ key

    def key_for(self, ctx: RequestContext) -> str:
        """The cache key of a request (see the module doc)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(origin_key(ctx))
        h.update(b"\x00")
        if self._by_method:
            h.update(b"GET" if ctx.method in ("GET", "HEAD") else ctx.method.encode())
        h.update(b"\x00")
        if self._by_query:
            query = ctx.query_string
            if query is None:
                query = ctx.scope.get("query_string", b"")
            h.update(normalise_query(query))
        h.update(b"\x00")
        for name in self._key_headers:
            value = _join_values(ctx.headers, name)
            h.update(b"N" if value is None else b"S" + len(value).to_bytes(4, "big") + value)
        consumer = ctx.consumer
        if consumer is not None and (self._by_consumer or self._auth_mode == "per-consumer"):
            h.update(b"C" + consumer.username.encode())
        # The API version and sandbox the request was resolved to (runtime/versions.py):
        # on a route an API's versions share, one path is answered by each version's
        # service, and a staging key's sandbox answer is not a production answer.
        if ctx.api_version is not None:
            h.update(b"V" + ctx.api_version.encode())
        if ctx.sandbox:
            h.update(b"X")
        path = key_path(ctx.path) if self._by_path else ""
        return cache_key(ctx.route.name, path, h.hexdigest())

    # ------------------------------------------------------------------ access

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        if ctx.method not in self._methods:
            return None
        upstream = ctx.upstream_headers
        strip = self._strip
        for name, _ in upstream:
            if name in strip:
                upstream[:] = [h for h in upstream if h[0] not in strip]
                break
        refresh = False
        max_age: int | None = None
        min_fresh = 0
        if self._honour:
            values = [v for n, v in ctx.headers if n == b"cache-control"]
            if values:
                cc = CacheControl.parse(values)
                if "no-store" in cc:
                    ctx.response_headers.append(X_CACHE_BYPASS)
                    return None
                max_age = cc.seconds("max-age")
                refresh = "no-cache" in cc or max_age == 0 or max_age == INVALID
                min_fresh = max(0, cc.seconds("min-fresh") or 0)
        if ctx.consumer is not None and self._auth_mode == "never":
            ctx.response_headers.append(X_CACHE_BYPASS)
            return None
        key = self.key_for(ctx)
        if not refresh:
            entry = await self._lookup(key, ctx.headers)
            if entry is not None:
                now = self.clock()
                age = entry.current_age(now)
                if (max_age is None or age <= max_age) and entry.expires_at - now >= min_fresh:
                    ctx.flags |= Flag.CACHE_HIT
                    return PluginResponse(
                        entry.status,
                        entry.body,
                        [*entry.headers, (b"age", str(age).encode()), X_CACHE_HIT],
                    )
        ctx.flags |= Flag.CACHE_MISS
        if ctx.method == "GET":
            ctx.cache_key = key
        ctx.response_headers.append(X_CACHE_MISS)
        return None

    async def _lookup(self, key: str, headers: Headers) -> CacheEntry | None:
        entry = await self.backend.get(key)
        if entry is None or not entry.variants:
            return entry
        entry = await self.backend.get(variant_key(key, vary_digest(entry.vary, headers)))
        return None if entry is None or entry.variants else entry

    # ------------------------------------------------------------------ store

    def response_body(
        self, ctx: RequestContext, status: int, headers: Headers, body: bytes
    ) -> bytes | None:
        key = ctx.cache_key
        if key is None or status not in self._statuses or len(body) > self._max_body:
            return None
        now = self.clock()
        decision = self._freshness(ctx, headers, now)
        if decision is None:
            return None
        ttl, age, vary = decision
        own = {id(h) for h in ctx.response_headers}
        stored = tuple(h for h in headers if h[0] not in _NOT_STORED and id(h) not in own)
        expires = now + ttl
        if not vary:
            self.backend.put([(key, CacheEntry(status, stored, body, now, expires, age))])
            return None
        entry = CacheEntry(status, stored, body, now, expires, age, vary=vary)
        self.backend.put(
            [
                (key, CacheEntry.marker(vary, now, expires)),
                (variant_key(key, vary_digest(vary, ctx.headers)), entry),
            ]
        )
        return None

    def _freshness(
        self, ctx: RequestContext, headers: Headers, now: float
    ) -> tuple[float, int, tuple[str, ...]] | None:
        """(TTL, upstream Age, extra Vary names) if the response may be stored, else None."""
        cc_values: list[bytes] = []
        vary_values: list[bytes] = []
        content_type = expires = date = None
        age = 0
        for name, value in headers:
            if name == b"set-cookie" or name == b"content-range":
                return None
            if name == b"cache-control":
                cc_values.append(value)
            elif name == b"vary":
                vary_values.append(value)
            elif name == b"content-type":
                content_type = value
            elif name == b"expires":
                expires = value
            elif name == b"date":
                date = value
            elif name == b"age":
                age = int(value) if value.isdigit() else 0
        if self._exact_types is not None and not self._type_allowed(content_type):
            return None
        vary: tuple[str, ...] = ()
        names: set[str] = set()
        if vary_values:
            names = {
                item.strip().lower().decode("latin-1")
                for value in vary_values
                for item in value.split(b",")
                if item.strip()
            }
            if "*" in names:
                return None
            vary = tuple(sorted(names - self._keyed_names))
        cc = CacheControl.parse(cc_values) if self._honour and cc_values else None
        unresolved_credentials = (
            ctx.consumer is None
            and not self._by_authorization
            and any(n == b"authorization" for n, _ in ctx.headers)
        )
        # A cookie (a session, a preference) is a credential the key does not see either,
        # unless the route keys it or the response varies on it.
        if not unresolved_credentials and not self._by_cookie and "cookie" not in names:
            unresolved_credentials = any(n == b"cookie" for n, _ in ctx.headers)
        if unresolved_credentials and not (
            cc is not None and ("public" in cc or "s-maxage" in cc or "must-revalidate" in cc)
        ):
            return None
        lifetime: float | None = None
        if self._honour:
            if cc is not None and ("no-store" in cc or "private" in cc or "no-cache" in cc):
                return None
            lifetime = freshness_lifetime(cc or _NO_DIRECTIVES, expires, date, now)
        ttl = min(self._ttl if lifetime is None else lifetime, self._max_ttl) - age
        if ttl <= 0:
            return None
        return ttl, age, vary

    def _type_allowed(self, content_type: bytes | None) -> bool:
        if content_type is None:
            return False
        media = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
        exact = self._exact_types
        if exact is not None and media in exact:
            return True
        return any(media.startswith(prefix) for prefix in self._type_prefixes)


_NO_DIRECTIVES = CacheControl({})
