"""The developer portal's try-it console: one request through the gateway's proxy with
the developer's own key, and what came back (status, headers incl. RateLimit, body).

SSRF-proof by construction (docs/decisions/037): the request goes to one place only,
the gateway URL of the settings (`portal_tryit_url`, else the local proxy port); the
input has no URL or host field. The developer chooses an API version they may see,
a method, an absolute path, query parameters, headers and a body; the path is put in
the canonical form the proxy routes by (`proxy.target.normalize_path`) and then routed
with the data plane's own router over the current config: the route the gateway would
pick must be one of that version's routes (or the API's shared routes), else the
request is refused with a problem naming `#/path`. A route restricted to exact hosts
gets its Host header from the config, never from the developer. Headers that would
change where or how the request travels (Host, framing, hop-by-hop, forwarding) are
refused, naming the header.

The key: the secret is never stored. The developer pastes it (or the portal's static
script fills it from sessionStorage after "use in console" on the key page); it goes
in the header the route's key-auth reads (`authorization` as a Bearer token, else the
first configured header name, else its query parameter) and is redacted in what the
console shows of the request sent.

Bounds: `portal_tryit_per_minute` requests per developer and minute (per process: the
console must not turn the control plane into a load generator), at most
`MAX_REQUEST_BODY` bytes out, the first `MAX_RESPONSE_BODY` bytes
back (the rest is not read), no redirect followed (a 3xx is shown as it is), a total
timeout (`portal_tryit_timeout`), one connection per request, no decompression.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from portcullis.catalogue.publish import effective_plugins
from portcullis.model.apis import Api, ApiVersion
from portcullis.model.config import GatewayConfig, Route
from portcullis.model.plugins.key_auth import KeyAuthConfig
from portcullis.problems import TOO_MANY_REQUESTS, ProblemKind
from portcullis.proxy.target import Refusal, normalize_path
from portcullis.runtime.router import Router, RouteSpec
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.errors import ServiceError, invalid, not_found, validated
from portcullis.services.portal_catalogue import PortalAccess
from portcullis.settings import Settings

MAX_REQUEST_BODY = 64 * 1024
MAX_RESPONSE_BODY = 64 * 1024
MAX_HEADERS = 50
MAX_QUERY = 50
USER_AGENT = "Portcullis-Portal-TryIt/1"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# What the console shows of the RateLimit family (draft-ietf-httpapi-ratelimit-headers).
RATE_LIMIT_HEADERS = ("ratelimit", "ratelimit-policy", "retry-after")
# Headers a developer may not set: where the request goes and how it is framed, the
# hop-by-hop ones (RFC 9110 §7.6.1), and the forwarding ones (a trusted proxy's word).
FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "forwarded",
        "via",
        "x-real-ip",
    }
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"

TRYIT_UNREACHABLE = ProblemKind(
    "tryit-gateway-unreachable", "The gateway did not answer the try-it request", 502
)
TRYIT_TIMEOUT = ProblemKind(
    "tryit-gateway-timeout", "The gateway did not answer the try-it request in time", 504
)


def _header_value(value: str) -> str:
    if any(c in value for c in "\r\n\0") or len(value) > 8192:
        raise ValueError("no line breaks or NUL, at most 8192 characters")
    return value


class TryHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    value: str = Field("", max_length=8192)


class TryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    value: str = Field("", max_length=4096)


class TryItIn(BaseModel):
    """One try-it request as the console's form sends it. There is no URL or host."""

    model_config = ConfigDict(extra="forbid")

    api: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    method: str = Field("GET", max_length=16)
    path: str = Field(min_length=1, max_length=2048, description="absolute path, e.g. /v2/items")
    query: list[TryQuery] = Field(default_factory=list, max_length=MAX_QUERY)
    headers: list[TryHeader] = Field(default_factory=list, max_length=MAX_HEADERS)
    body: str = Field("", description=f"at most {MAX_REQUEST_BODY} bytes (UTF-8)")
    key: SecretStr | None = Field(
        None,
        description="the developer's API key; sent once, never stored",
        json_schema_extra={"writeOnly": True},
    )

    @classmethod
    def parse(cls, data: Any) -> TryItIn:
        """Validated input; a 422 naming each bad field otherwise."""
        return validated(cls, data)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """The request as it goes to the gateway (the key, if any, in its header or query)."""

    method: str
    # Kept out of repr: they may hold the developer's key.
    url: str = field(repr=False)
    headers: list[tuple[str, str]] = field(repr=False)
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class RawAnswer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    truncated: bool
    elapsed_ms: float


class TryItTransport(Protocol):
    """Sends one request and reads at most `max_body` bytes of the answer; raises
    `TimeoutError` or `ConnectionError` when there is no answer."""

    async def send(self, request: Outgoing, *, timeout: float, max_body: int) -> RawAnswer: ...


class AiohttpTransport:
    """The real transport: one aiohttp connection per request, no redirects followed,
    no decompression, the body read up to `max_body` bytes."""

    async def send(self, request: Outgoing, *, timeout: float, max_body: int) -> RawAnswer:
        import aiohttp
        from yarl import URL

        started = time.monotonic()
        connector = aiohttp.TCPConnector(limit=1, force_close=True)
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector,
                    timeout=client_timeout,
                    auto_decompress=False,
                    skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                ) as session,
                session.request(
                    request.method,
                    URL(request.url, encoded=True),
                    headers=request.headers,
                    data=request.body if request.body else None,
                    allow_redirects=False,
                ) as response,
            ):
                body = b""
                while len(body) <= max_body:
                    more = await response.content.read(max_body + 1 - len(body))
                    if not more:
                        break
                    body += more
                return RawAnswer(
                    response.status,
                    response.reason or "",
                    [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
                    body[:max_body],
                    len(body) > max_body,
                    round((time.monotonic() - started) * 1000, 3),
                )
        except TimeoutError:
            raise
        except aiohttp.ClientError as exc:
            raise ConnectionError(str(exc) or type(exc).__name__) from None


@dataclass(frozen=True, slots=True)
class BodyView:
    """What the console shows of a response body."""

    kind: Literal["empty", "json", "text", "binary"]
    text: str
    size: int
    truncated: bool
    content_type: str | None


@dataclass(frozen=True, slots=True)
class TryItResult:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    rate_limit: list[tuple[str, str]]
    body: BodyView
    elapsed_ms: float
    # The request as sent, the key redacted (for "what did I send" and a curl line).
    sent_method: str
    sent_url: str
    sent_headers: list[tuple[str, str]]
    route: str
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "headers": [[k, v] for k, v in self.headers],
            "rate_limit": dict(self.rate_limit),
            "body": {
                "kind": self.body.kind,
                "text": self.body.text,
                "size": self.body.size,
                "truncated": self.body.truncated,
                "content_type": self.body.content_type,
            },
            "elapsed_ms": self.elapsed_ms,
            "sent": {
                "method": self.sent_method,
                "url": self.sent_url,
                "headers": [[k, v] for k, v in self.sent_headers],
            },
            "route": self.route,
            "notes": self.notes,
        }


def body_view(headers: Sequence[tuple[str, str]], body: bytes, truncated: bool) -> BodyView:
    """JSON pretty-printed, text as text, anything else (or compressed) summarized."""
    found = {k.lower(): v for k, v in headers}
    content_type = found.get("content-type")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not body:
        return BodyView("empty", "", 0, truncated, content_type)
    encoded = found.get("content-encoding", "identity").lower() not in ("", "identity")
    textual = (
        media.startswith("text/")
        or media.endswith(("json", "xml"))
        or media
        in (
            "application/x-www-form-urlencoded",
            "application/javascript",
            "",
        )
    )
    if not encoded and textual:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            if not (truncated and exc.reason == "unexpected end of data"):
                return _binary(body, truncated, content_type)
            text = body[: exc.start].decode("utf-8")
        if media.endswith("json") and not truncated:
            try:
                return BodyView(
                    "json",
                    json.dumps(json.loads(text), indent=2, ensure_ascii=False),
                    len(body),
                    truncated,
                    content_type,
                )
            except ValueError:
                pass
        return BodyView("text", text, len(body), truncated, content_type)
    return _binary(body, truncated, content_type)


def _binary(body: bytes, truncated: bool, content_type: str | None) -> BodyView:
    more = "+" if truncated else ""
    what = content_type or "unknown type"
    return BodyView(
        "binary",
        f"{len(body)}{more} bytes of {what} (not shown); first bytes: {body[:16].hex(' ')}",
        len(body),
        truncated,
        content_type,
    )


def _is_rate_limit(name: str) -> bool:
    """RateLimit, RateLimit-Policy, Retry-After, and the older RateLimit-Limit/-Remaining/
    -Reset and X-RateLimit-* fields some upstreams still send."""
    lower = name.lower()
    return lower in RATE_LIMIT_HEADERS or lower.startswith(("ratelimit-", "x-ratelimit-"))


def _redacted(secret: str) -> str:
    return f"{secret[:12]}…[redacted]" if len(secret) > 16 else "[redacted]"


@dataclass(frozen=True, slots=True)
class _Target:
    route: Route
    host: str | None  # a Host header from the config (None: the gateway URL's own)
    raw_path: str


class TryItService:
    """Sends try-it requests to the gateway of `settings` (see the module docstring)."""

    def __init__(
        self,
        editor: ConfigEditor,
        settings: Settings,
        transport: TryItTransport | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._editor = editor
        self._settings = settings
        self._transport: TryItTransport = transport or AiohttpTransport()
        self._router: tuple[GatewayConfig, Router[str]] | None = None
        # Requests per developer in the current minute (`_minute`), for the throttle.
        self._minute = -1
        self._sent: dict[str, int] = {}
        self._clock = clock
        base = (settings.portal_tryit_url or settings.proxy_url).rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ValueError(f"portal_tryit_url must be scheme://host[:port], not {base!r}")
        self.base_url = base

    def _routes(self, config: GatewayConfig) -> Router[str]:
        if self._router is None or self._router[0] is not config:
            self._router = (
                config,
                Router([RouteSpec(r, r.name) for r in config.routes]),
            )
        return self._router[1]

    def _throttle(self, requester: str) -> None:
        """429 once `requester` sent `portal_tryit_per_minute` requests this minute."""
        now = self._clock()
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._sent = minute, {}
        count = self._sent.get(requester, 0)
        if count >= self._settings.portal_tryit_per_minute:
            wait = max(1, 60 - int(now) % 60)
            raise ServiceError(
                TOO_MANY_REQUESTS,
                f"at most {self._settings.portal_tryit_per_minute} try-it requests a minute",
                headers={"Retry-After": str(wait)},
            )
        self._sent[requester] = count + 1

    async def send(
        self,
        access: PortalAccess,
        data: TryItIn,
        *,
        client_ip: str | None = None,
        requester: str | None = None,
    ) -> TryItResult:
        """Send `data` through the gateway and describe the answer; 404 for an API or
        version the developer may not see, 422 naming the field for anything refused,
        429 when `requester` (the developer) sent too many this minute."""
        config = (await self._editor.state()).config
        api = next((a for a in config.apis if a.name == data.api), None)
        if api is None or not access.sees(api):
            raise not_found(f"api {data.api!r} does not exist", target="api")
        version = api.version(data.version)
        if version is None:
            raise invalid([("#/version", f"api {api.name!r} has no version {data.version!r}")])
        method = data.method.upper()
        if method not in METHODS:
            raise invalid([("#/method", f"one of {', '.join(METHODS)}")])
        body = data.body.encode("utf-8")
        if len(body) > MAX_REQUEST_BODY:
            raise invalid([("#/body", f"at most {MAX_REQUEST_BODY} bytes ({len(body)} sent)")])
        headers = self._headers(data.headers)
        selection = self._selection(api, version, headers)
        target = self._target(config, api, version, method, data.path, [*headers, *selection])
        query = [(q.name, q.value) for q in data.query]
        notes: list[str] = []
        secret_header: str | None = None
        secret = data.key.get_secret_value().strip() if data.key is not None else ""
        if secret:
            secret_header = self._place_key(config, target.route, secret, headers, query, notes)
        headers = [*headers, *selection]
        if target.host is not None:
            headers.append(("Host", target.host))
        if client_ip:
            headers.append(("X-Forwarded-For", client_ip))
        names = {k.lower() for k, _ in headers}
        if "user-agent" not in names:
            headers.append(("User-Agent", USER_AGENT))
        if "accept-encoding" not in names:
            headers.append(("Accept-Encoding", "identity"))
        if requester is not None:
            self._throttle(requester)
        url = (
            self.base_url
            + target.raw_path
            + ("?" + urlencode(query, quote_via=quote) if query else "")
        )
        outgoing = Outgoing(method, url, headers, body)
        try:
            answer = await self._transport.send(
                outgoing,
                timeout=self._settings.portal_tryit_timeout,
                max_body=MAX_RESPONSE_BODY,
            )
        except TimeoutError:
            raise ServiceError(
                TRYIT_TIMEOUT,
                f"no answer from the gateway within {self._settings.portal_tryit_timeout:g} s",
            ) from None
        except ConnectionError as exc:
            raise ServiceError(TRYIT_UNREACHABLE, f"the gateway did not answer: {exc}") from None
        shown_url = url
        if secret and secret_header is None:
            shown_url = shown_url.replace(quote(secret, safe=""), "[redacted]")
        return TryItResult(
            status=answer.status,
            reason=answer.reason,
            headers=answer.headers,
            rate_limit=[(k, v) for k, v in answer.headers if _is_rate_limit(k)],
            body=body_view(answer.headers, answer.body, answer.truncated),
            elapsed_ms=answer.elapsed_ms,
            sent_method=method,
            sent_url=shown_url,
            sent_headers=[
                (k, v.replace(secret, _redacted(secret)) if secret else v) for k, v in headers
            ],
            route=target.route.name,
            notes=notes,
        )

    @staticmethod
    def _headers(given: Sequence[TryHeader]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        errors: list[tuple[str, str]] = []
        for i, h in enumerate(given):
            name = h.name.strip()
            lower = name.lower()
            if not _TOKEN.match(name):
                errors.append((f"#/headers/{i}/name", f"{name!r} is not a header name"))
            elif lower in FORBIDDEN_HEADERS or lower.startswith(("x-forwarded-", "proxy-")):
                errors.append(
                    (
                        f"#/headers/{i}/name",
                        f"{name!r} is set by the console (where the request goes, framing, "
                        "forwarding)",
                    )
                )
            else:
                try:
                    out.append((name, _header_value(h.value)))
                except ValueError as exc:
                    errors.append((f"#/headers/{i}/value", str(exc)))
        if errors:
            raise invalid(errors)
        return out

    @staticmethod
    def _selection(
        api: Api, version: ApiVersion, headers: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """The version-selection header naming the chosen version (for shared routes);
        a developer's own value for it is replaced."""
        name = api.selection.header
        if name is None or not api.routes:
            return []
        headers[:] = [(k, v) for k, v in headers if k.lower() != name.lower()]
        return [(name, version.name)]

    def _target(
        self,
        config: GatewayConfig,
        api: Api,
        version: ApiVersion,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
    ) -> _Target:
        if not path.startswith("/") or path.startswith("//"):
            raise invalid(
                [("#/path", "an absolute path starting with a single '/', e.g. /v2/items")]
            )
        if any(c in path for c in "?#\\") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
            raise invalid(
                [
                    (
                        "#/path",
                        "the path only: query parameters go in 'query', no '#', '\\' or controls",
                    )
                ]
            )
        normalized = normalize_path(quote(path, safe=_PATH_SAFE).encode("ascii"))
        if isinstance(normalized, Refusal):
            raise invalid([("#/path", normalized.detail)])
        if normalized.encoded_slash:
            raise invalid([("#/path", "no encoded slashes or backslashes (%2F, %5C)")])
        allowed = [*version.routes, *api.routes]
        by_name = {r.name: r for r in config.routes}
        routes = [by_name[n] for n in allowed if n in by_name]
        base_host = urlsplit(self.base_url).netloc
        hosts: list[str | None] = [None]
        hosts += sorted({h for r in routes for h in r.hosts if "*" not in h})
        router = self._routes(config)
        wire = [(k.lower().encode("latin-1"), v.encode("utf-8")) for k, v in headers]
        for host in hosts:
            match = router.match(method, host or base_host, normalized.text, wire)
            if match is not None and match.payload in allowed:
                return _Target(match.route, host, normalized.raw.decode("ascii"))
        served = ", ".join(p for r in routes for p in r.paths) or "none"
        raise invalid(
            [
                (
                    "#/path",
                    f"{method} {normalized.text} is not served by api {api.name!r} version "
                    f"{version.name!r} on the gateway (its route paths: {served})",
                )
            ]
        )

    @staticmethod
    def _place_key(
        config: GatewayConfig,
        route: Route,
        secret: str,
        headers: list[tuple[str, str]],
        query: list[tuple[str, str]],
        notes: list[str],
    ) -> str | None:
        """Put the key where the route's key-auth reads it; the header name used (None:
        the query parameter, or nowhere)."""
        inst = effective_plugins(config, route).get("key-auth")
        if inst is None:
            notes.append(
                f"route {route.name!r} takes no API key (no key-auth): the key was not sent"
            )
            return None
        auth = KeyAuthConfig.model_validate(inst.config)
        if auth.header_names:
            name = auth.header_names[0]
            headers[:] = [(k, v) for k, v in headers if k.lower() != name]
            if name == "authorization":
                headers.append(("Authorization", f"Bearer {secret}"))
                return "Authorization"
            headers.append((name, secret))
            return name
        if auth.query_param is not None:
            query[:] = [(k, v) for k, v in query if k != auth.query_param]
            query.append((auth.query_param, secret))
            return None
        return None
