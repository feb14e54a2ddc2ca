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

from pydantic import Field, field_validator, model_validator

from portcullis.model.types import HTTP_METHODS
from portcullis.plugins.base import Headers, Plugin, PluginConfig, PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.problems import FORBIDDEN, PROBLEM_CONTENT_TYPE, problem_body

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}
# One or more DNS labels in front of a wildcard pattern's fixed suffix.
_SUBDOMAINS = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
_DEFAULT_METHODS = ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"]
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


def _normalise_origin(raw: str) -> str:
    """A configured origin or pattern in the form browsers serialise origins."""
    value = raw.strip()
    if value == "*":
        return value
    if value.lower() == "null":
        raise ValueError(
            "'null' is refused: sandboxed frames, file: pages and redirects all send it, "
            "so it names no one"
        )
    scheme, sep, rest = value.partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ValueError(f"{raw!r} is not an origin (scheme://host[:port])")
    rest = rest.removesuffix("/").lower()
    if any(c in rest for c in "/?#@\\") or not rest:
        raise ValueError(f"{raw!r}: an origin has no path, query, fragment or user info")
    if rest.startswith("["):
        host, bracket, port_part = rest.partition("]")
        if not bracket:
            raise ValueError(f"{raw!r}: unterminated IPv6 address")
        host += "]"
        if port_part and not port_part.startswith(":"):
            raise ValueError(f"{raw!r} is not an origin (scheme://host[:port])")
        port = port_part[1:] if port_part else ""
        has_port = bool(port_part)
    else:
        host, colon, port = rest.partition(":")
        has_port = bool(colon)
    if has_port and port != "*" and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{raw!r}: invalid port {port!r}")
    if not host.startswith("["):
        labels = host.split(".")
        wildcard = labels[0] == "*"
        if wildcard:
            labels = labels[1:]
            if len(labels) < 2:
                raise ValueError(
                    f"{raw!r}: a wildcard needs a suffix of two labels or more (*.example.com)"
                )
        for label in labels:
            if not _LABEL.fullmatch(label):
                raise ValueError(
                    f"{raw!r}: invalid host label {label!r} ('*' is only allowed as the first "
                    "label or as the port)"
                )
    if has_port and port == _DEFAULT_PORTS.get(scheme):
        has_port = False
    return f"{scheme}://{host}" + (f":{port}" if has_port else "")


def _pattern(origin: str) -> str:
    """The regex (without anchors) for a normalised origin containing a wildcard."""
    scheme, _, rest = origin.partition("://")
    if rest.startswith("["):
        host, _, port_part = rest.partition("]")
        host += "]"
        port = port_part[1:] if port_part else None
    else:
        host, colon, port_text = rest.partition(":")
        port = port_text if colon else None
    out = re.escape(scheme) + "://"
    out += _SUBDOMAINS + re.escape(host[2:]) if host.startswith("*.") else re.escape(host)
    if port == "*":
        out += r"(?::[0-9]{1,5})?"
    elif port is not None:
        out += re.escape(":" + port)
    return out


def _check_header_names(names: list[str], what: str) -> list[str]:
    out: list[str] = []
    for name in names:
        if name != "*" and not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid {what} name {name!r}")
        if name.lower() not in out:
            out.append(name.lower())
    return out


class CorsConfig(PluginConfig):
    origins: list[str] = Field(
        min_length=1, description="allowed origins: exact, '*', or patterns like https://*.x.com"
    )
    methods: list[str] = Field(
        default_factory=lambda: list(_DEFAULT_METHODS),
        min_length=1,
        description="methods allowed for cross-origin requests ('*' for any)",
    )
    headers: list[str] | None = Field(
        default=None,
        description="request headers allowed (unset: whatever the preflight asks for)",
    )
    exposed_headers: list[str] = Field(
        default_factory=list, description="response headers the browser may read"
    )
    credentials: bool = Field(default=False, description="allow cookies and HTTP auth")
    max_age: int | None = Field(
        default=None, ge=0, le=86400, description="seconds browsers may cache a preflight"
    )
    preflight_continue: bool = Field(
        default=False, description="proxy allowed preflights upstream instead of answering"
    )

    @field_validator("origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for raw in v:
            origin = _normalise_origin(raw)
            if origin not in out:
                out.append(origin)
        if "*" in out and len(out) > 1:
            raise ValueError("'*' allows every origin: it must be the only entry")
        return out

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for m in v:
            up = m.strip().upper()
            if up != "*" and up not in HTTP_METHODS:
                raise ValueError(f"unknown HTTP method {m!r}")
            if up not in out:
                out.append(up)
        return out

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_header_names(v, "header")

    @field_validator("exposed_headers")
    @classmethod
    def _exposed(cls, v: list[str]) -> list[str]:
        return _check_header_names(v, "exposed header")

    @model_validator(mode="after")
    def _credentials(self) -> CorsConfig:
        if self.credentials:
            for field, values in (
                ("origins", self.origins),
                ("methods", self.methods),
                ("headers", self.headers or []),
                ("exposed_headers", self.exposed_headers),
            ):
                if "*" in values:
                    raise ValueError(
                        f"'*' in {field} cannot be used with credentials (browsers read it "
                        "literally and refuse the response); list the values"
                    )
        return self


def _first(headers: Headers, name: bytes) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None


class Cors(Plugin):
    """CORS preflights answered at the gateway and grants on actual responses (module doc)."""

    name: ClassVar[str] = "cors"
    priority: ClassVar[int] = 2000
    config_model: ClassVar[type[PluginConfig]] = CorsConfig

    def __init__(self, config: PluginConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        assert isinstance(config, CorsConfig)
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
