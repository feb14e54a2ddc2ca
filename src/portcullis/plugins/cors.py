"""cors: Cross-Origin Resource Sharing (WHATWG Fetch, "CORS protocol") at the gateway.

Configured per route, per service or globally:

- `origins`: who may call. Exact origins (`https://app.example.com`), `*` (anyone;
  it must then be the only entry) or wildcard patterns: `https://*.example.com`
  matches any subdomain (one or more labels, never `example.com` itself nor
  `evil-example.com`), `http://localhost:*` any port. Entries are validated and
  normalised when the config is loaded (lower case, default port dropped, a trailing
  `/` removed); paths, user info, `null` and `*` anywhere else are refused.
  Patterns compile to one anchored regular expression.
- `methods`, `headers`, `exposed_headers`: what the browser may send and read.
  `headers` left unset reflects what the preflight asks for (any request header
  allowed); a list restricts it (names are case-insensitive; include `content-type`
  for JSON bodies and `authorization` for tokens: `*` never covers Authorization).
- `credentials`: emit `Access-Control-Allow-Credentials: true` (cookies, HTTP
  auth). With credentials the Fetch standard treats `*` literally, so `*` in
  `origins`, `methods`, `headers` or `exposed_headers` is a config error.
- `max_age`: how long (seconds) browsers may cache a preflight answer.
- `preflight_continue` (default false): preflights are answered here and never
  reach the upstream; when true, an allowed preflight is proxied and the CORS
  headers are added to the upstream's answer.

Preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`): an allowed
one is answered `204` with `Access-Control-Allow-Origin`, `-Allow-Methods`,
`-Allow-Headers`, `-Allow-Credentials`, `-Max-Age` and `Vary`. A disallowed origin,
method or header is answered `403` (a `forbidden` problem saying which) without any
`Access-Control-Allow-*` header. The Fetch standard only needs the CORS check to
fail (a missing Access-Control-Allow-Origin or a non-2xx status both do); a 403
makes the reason visible in the browser's network panel instead of a silent 204.
A requested method must also be one the route accepts: a route restricted by
`methods` refuses preflights for the others.

Routes restricted by `methods` must list `OPTIONS` for preflights to reach this
plugin: the router matches on the request's method (`OPTIONS`), and a route that
does not accept it answers 404 before any plugin runs.

Actual requests with an allowed `Origin` get `Access-Control-Allow-Origin` (the
origin itself, or `*` for an any-origin, no-credentials config),
`Access-Control-Allow-Credentials` and `Access-Control-Expose-Headers` through
`ctx.response_headers`: priority 2000 runs first in the chain, so replies produced
by later plugins (a 401 from key-auth, a 429 from rate-limit) carry them too and the
browser can read those errors. A disallowed origin is not refused (CORS protects
browser readers, not the server; non-browser clients send Origin too): its
response simply carries no CORS grant. Unless the config is a credential-less `*`,
every response says `Vary: Origin`, so shared caches never serve one origin's grant
to another. The gateway owns CORS on the route: `Access-Control-*` headers the
upstream sends are dropped from its responses, keeping only this plugin's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from portcullis.model.plugins.cors import (
    _TOKEN,
    CorsConfig,
    _pattern,
)
from portcullis.plugins.base import (
    Headers,
    Phase,
    Plugin,
    PluginResponse,
    RequestContext,
)
from portcullis.plugins.env import PluginEnv
from portcullis.problems import FORBIDDEN, PROBLEM_CONTENT_TYPE, problem_body

_CONTENT_TYPE = (b"content-type", PROBLEM_CONTENT_TYPE.encode())
_ACAO = b"access-control-allow-origin"
_ACAC = (b"access-control-allow-credentials", b"true")
_ACEH = b"access-control-expose-headers"
_ACAM = b"access-control-allow-methods"
_ACAH = b"access-control-allow-headers"
_MAX_AGE = b"access-control-max-age"
_VARY_ORIGIN = (b"vary", b"Origin")
_VARY_PREFLIGHT = (
    b"vary",
    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
)
_ACCESS_CONTROL = b"access-control-"


def _first(headers: Headers, name: bytes) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None


class Cors(Plugin[CorsConfig]):
    """CORS preflights answered at the gateway and grants on actual responses (module doc)."""

    name: ClassVar[str] = "cors"
    priority: ClassVar[int] = 2000
    config_model = CorsConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access", "response"})

    def __init__(self, config: CorsConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.any_origin = config.origins == ["*"]
        self._exact = frozenset(o.encode() for o in config.origins if "*" not in o)
        patterns = [_pattern(o) for o in config.origins if "*" in o and o != "*"]
        self._patterns = re.compile("(?:" + "|".join(patterns) + ")") if patterns else None
        self._credentials = config.credentials
        self._continue = config.preflight_continue
        # With a credential-less `*` the grant is the same for everyone: no Vary needed.
        self._literal_star = self.any_origin and not config.credentials
        self._vary = not self._literal_star
        self._any_method = "*" in config.methods
        self._methods = frozenset(config.methods)
        self._methods_header = (_ACAM, ", ".join(config.methods).encode())
        self._any_header = config.headers is None or "*" in config.headers
        self._header_names = frozenset(config.headers or ())
        self._headers_header = (
            (_ACAH, ", ".join(config.headers).encode()) if config.headers else None
        )
        self._max_age = (
            (_MAX_AGE, str(config.max_age).encode()) if config.max_age is not None else None
        )
        grant: Headers = []
        if config.credentials:
            grant.append(_ACAC)
        if config.exposed_headers:
            grant.append((_ACEH, ", ".join(config.exposed_headers).encode()))
        self._grant = grant
        self._star = (_ACAO, b"*")

    def origin_allowed(self, origin: bytes) -> bool:
        """True when `origin` (the request's Origin value) is granted access."""
        if self.any_origin:
            return True
        lowered = origin.lower()
        if lowered in self._exact:
            return True
        return self._patterns is not None and (
            self._patterns.fullmatch(lowered.decode("latin-1")) is not None
        )

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        origin = _first(ctx.headers, b"origin")
        if origin is None:
            if self._vary:
                ctx.response_headers.append(_VARY_ORIGIN)
            return None
        if ctx.method == "OPTIONS":
            requested = _first(ctx.headers, b"access-control-request-method")
            if requested is not None:
                return self._preflight(ctx, origin, requested)
        extra = ctx.response_headers
        if self.origin_allowed(origin):
            extra.append(self._star if self._literal_star else (_ACAO, origin))
            extra.extend(self._grant)
        if self._vary:
            extra.append(_VARY_ORIGIN)
        return None

    def _preflight(
        self, ctx: RequestContext, origin: bytes, requested: bytes
    ) -> PluginResponse | None:
        if not self.origin_allowed(origin):
            return self._refuse(f"Origin {origin.decode('latin-1')!r} is not allowed.")
        method = requested.strip().decode("latin-1")
        route_methods: Sequence[str] = ctx.route.route.methods
        if (not self._any_method and method not in self._methods) or (
            route_methods and method not in route_methods
        ):
            return self._refuse(f"Method {method!r} is not allowed.")
        asked = _first(ctx.headers, b"access-control-request-headers")
        allow_headers: tuple[bytes, bytes] | None = self._headers_header
        if asked is not None and asked.strip():
            names = [n.strip().lower() for n in asked.decode("latin-1").split(",") if n.strip()]
            if self._any_header:
                bad = [n for n in names if not _TOKEN.fullmatch(n)]
                allow_headers = (_ACAH, ", ".join(names).encode())
            else:
                bad = [n for n in names if n not in self._header_names]
            if bad:
                return self._refuse(f"Request headers not allowed: {', '.join(bad)}.")
        headers: Headers = [self._star if self._literal_star else (_ACAO, origin), *self._grant]
        headers.append(self._methods_header)
        if allow_headers is not None:
            headers.append(allow_headers)
        if self._max_age is not None:
            headers.append(self._max_age)
        headers.append(_VARY_PREFLIGHT)
        if self._continue:
            ctx.response_headers.extend(headers)
            return None
        return PluginResponse(204, b"", headers)

    @staticmethod
    def _refuse(detail: str) -> PluginResponse:
        body = problem_body(FORBIDDEN, "CORS preflight refused: " + detail)
        return PluginResponse(403, body, [_CONTENT_TYPE, _VARY_PREFLIGHT])

    def response(self, ctx: RequestContext, status: int, headers: Headers) -> None:
        """Drop the upstream's own Access-Control-* headers: this plugin's policy is the one."""
        for name, _ in headers:
            if name.startswith(_ACCESS_CONTROL):
                break
        else:
            return
        ours = {id(h) for h in ctx.response_headers}
        headers[:] = [h for h in headers if not h[0].startswith(_ACCESS_CONTROL) or id(h) in ours]
