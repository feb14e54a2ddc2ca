"""Header rewriting between client and upstream (RFC 9110 §7.6, RFC 7239, W3C Trace Context).

Requests: hop-by-hop fields are removed (with every field `Connection` names), the
forwarding fields are set or appended depending on whether the peer is a trusted
proxy, `Via` is appended, and `X-Request-ID` / `traceparent` are propagated or
generated. Responses: hop-by-hop fields removed, `Via` and `X-Request-ID` added.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from portcullis.http_fields import HOP_BY_HOP as HOP_BY_HOP

Headers = list[tuple[bytes, bytes]]

_FORWARDING = frozenset(
    {
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"forwarded",
        b"via",
        b"x-request-id",
        b"traceparent",
        b"content-length",
    }
)
# Method overrides: routes (and their plugins) decide on the request's method; an
# upstream framework that honours one of these would serve another method, e.g. a
# DELETE through a route that allows only GET. They never reach the upstream.
METHOD_OVERRIDES = frozenset({b"x-http-method-override", b"x-http-method", b"x-method-override"})
# Cookie is collected, not dropped: HTTP/2 clients split it into crumbs that must be
# joined into one field line before it goes out over HTTP/1.1 (RFC 9113 §8.2.3).
_DROP_REQUEST = HOP_BY_HOP | _FORWARDING | METHOD_OVERRIDES | {b"cookie"}
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,200}$")
_TRACEPARENT = re.compile(rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


class RandomHex:
    """Hex digits from the OS's CSPRNG, drawn a few KiB at a time.

    Every request takes 48 of them (its id and a span id): one `os.urandom` call per
    request was ~1.5 us of its CPU (a syscall each), a slice of a buffer is ~0.2 us.
    A forked child starts with an empty buffer, so workers never share digits.
    """

    def __init__(self, chunk: int = 4096) -> None:
        self._chunk = chunk
        self._buffer = b""
        self._at = 0
        os.register_at_fork(after_in_child=self.clear)

    def clear(self) -> None:
        self._buffer = b""
        self._at = 0

    def take(self, digits: int) -> bytes:
        at = self._at
        end = at + digits
        if end > len(self._buffer):
            self._buffer = os.urandom(max(self._chunk, digits)).hex().encode()
            at, end = 0, digits
        self._at = end
        return self._buffer[at:end]


_random_hex = RandomHex()


def new_request_id() -> bytes:
    return _random_hex.take(32)


def valid_request_id(value: bytes) -> bool:
    """Whether a client's X-Request-ID may be reused (it is echoed in responses and logs)."""
    return _REQUEST_ID.fullmatch(value) is not None


def sample_threshold(ratio: float) -> int:
    """The `TraceIdRatioBased` threshold for a sample ratio (0..1)."""
    return round(max(0.0, min(1.0, ratio)) * (1 << 64))


def trace_sampled(trace_id: int, threshold: int) -> bool:
    """Whether the gateway records (exports) a trace: its id's low 64 bits fall under the ratio.

    One rule for the exporter (analytics/tracing.py) and for the sampled flag the
    proxy sends upstream, so every worker and node agrees on it.
    """
    return (trace_id & 0xFFFFFFFFFFFFFFFF) < threshold


def valid_traceparent(value: bytes) -> bool:
    m = _TRACEPARENT.fullmatch(value)
    return bool(
        m and m.group(1) != b"ff" and m.group(2) != _ZERO_TRACE and m.group(3) != _ZERO_SPAN
    )


class TrustedProxies:
    """Decides whether a peer may set forwarding headers; results are cached per address."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def client_of(self, peer: str, forwarded_for: list[bytes]) -> str:
        """The original client: the rightmost X-Forwarded-For hop that is not a trusted proxy.

        Walking from the right stops a client from choosing its own address by
        prepending entries: only hops our trusted proxies added are believed.
        """
        hops = [h.strip() for v in forwarded_for for h in v.decode("latin-1").split(",")]
        client = peer
        for hop in reversed(hops):
            if not self.trusts(client):
                break
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break
            client = hop
        return client

    def trusts(self, ip: str) -> bool:
        hit = self._cache.get(ip)
        if hit is None:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                hit = False
            else:
                hit = any(addr in net for net in self.networks)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[ip] = hit
        return hit


def _forwarded_node(ip: str) -> str:
    return f'"[{ip}]"' if ":" in ip else ip


@dataclass(slots=True)
class IncomingRequestInfo:
    """What the single pass over the client's headers found out."""

    host: bytes
    request_id: bytes
    content_length: int | None
    chunked: bool
    invalid: str | None
    # The client's X-Forwarded-For values (only meaningful when the peer is trusted).
    forwarded_for: list[bytes]
    # The client's traceparent parent-id when the gateway gave the upstream its own
    # (`new_parent_id`); empty otherwise.
    client_parent_id: bytes = b""
    # Transfer codings other than chunked the client applied (e.g. b"gzip"): the
    # gateway does not decode them, and dropping them would corrupt the body (501).
    unsupported_coding: bytes = b""


def rewrite_request_headers(
    headers: Iterable[tuple[bytes, bytes]],
    *,
    client_ip: str,
    scheme: str,
    server_port: int | None,
    upstream_host: bytes,
    preserve_host: bool,
    via: bytes,
    trusted: bool,
    websocket: bool = False,
    sample_threshold: int | None = None,
) -> tuple[Headers, IncomingRequestInfo]:
    """Build the upstream request headers in one pass over the client's headers.

    `sample_threshold` (tracing is on; see `sample_threshold()`): the gateway
    records spans, so as a W3C Trace Context participant it sends the upstream
    its own parent-id, keeping the client's trace id, and sets the sampled flag
    (trace-flags bit 0) to its own recording decision (Trace Context §3.2.2.5.1,
    "update sampled flag"); other flag bits are kept. The client's parent-id is
    returned in the info. Without tracing the client's traceparent is forwarded
    unchanged, so the upstream's spans hang off a span that exists, and a trace
    the gateway starts is sent unsampled (nothing recorded it).
    """
    out: Headers = []
    host = b""
    xff: list[bytes] = []
    xfp = xfh = xfport = b""
    forwarded: list[bytes] = []
    prior_via: list[bytes] = []
    request_id = b""
    traceparent = b""
    content_length: int | None = None
    chunked = False
    invalid: str | None = None
    codings: list[bytes] | None = None
    conn_tokens: set[bytes] | None = None
    cookies: list[bytes] = []
    for name, value in headers:
        if name not in _DROP_REQUEST:
            out.append((name, value))
            continue
        if name == b"cookie":
            cookies.append(value)
        elif name == b"host":
            if host:
                invalid = "more than one Host header"
            host = value
        elif name == b"content-length":
            try:
                n = int(value)
            except ValueError:
                invalid = "invalid Content-Length"
                continue
            if n < 0 or (content_length is not None and content_length != n):
                invalid = "conflicting or negative Content-Length"
            content_length = n
        elif name == b"transfer-encoding":
            # Several field lines form one list (RFC 9110 §5.3).
            codings = (codings or []) + [c.strip().lower() for c in value.split(b",")]
        elif name == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            tokens -= {b"keep-alive", b"close", b"upgrade"}
            if tokens:
                conn_tokens = (conn_tokens or set()) | tokens
        elif name == b"x-forwarded-for":
            xff.append(value)
        elif name == b"x-forwarded-proto":
            xfp = value
        elif name == b"x-forwarded-host":
            xfh = value
        elif name == b"x-forwarded-port":
            xfport = value
        elif name == b"forwarded":
            forwarded.append(value)
        elif name == b"via":
            prior_via.append(value)
        elif name == b"x-request-id":
            if valid_request_id(value):
                request_id = value
        elif name == b"traceparent":
            traceparent = value
        elif websocket and name == b"upgrade":
            out.append((name, value))
    unsupported = b""
    if codings is not None:
        chunked = True
        if codings[-1] != b"chunked":
            invalid = "Transfer-Encoding must end with chunked"
        elif len(codings) > 1:
            if b"chunked" in codings[:-1]:
                invalid = "chunked is applied more than once"
            else:
                unsupported = b", ".join(codings[:-1])
    if chunked and content_length is not None:
        invalid = "both Content-Length and Transfer-Encoding"
    if cookies:
        out.append((b"cookie", cookies[0] if len(cookies) == 1 else b"; ".join(cookies)))
    if conn_tokens:
        out = [(n, v) for n, v in out if n not in conn_tokens]

    if not request_id:
        request_id = new_request_id()
    client_parent = b""
    if not traceparent or not valid_traceparent(traceparent):
        # Start a trace whose id is the request id, so logs and traces correlate.
        rid = request_id if len(request_id) == 32 and request_id.isalnum() else new_request_id()
        traceparent = b"00-" + rid.lower() + b"-" + _random_hex.take(16) + b"-00"
    elif sample_threshold is not None:
        client_parent = traceparent[36:52]
    if sample_threshold is not None:
        sampled = trace_sampled(int(traceparent[3:35], 16), sample_threshold)
        flags = (int(traceparent[53:55], 16) & 0xFE) | int(sampled)
        traceparent = traceparent[:36] + _random_hex.take(16) + b"-" + b"%02x" % flags

    ip = client_ip.encode()
    out.append((b"host", host if preserve_host and host else upstream_host))
    if trusted and xff:
        out.append((b"x-forwarded-for", b", ".join([*xff, ip])))
    else:
        out.append((b"x-forwarded-for", ip))
    proto = scheme.encode()
    out.append((b"x-forwarded-proto", xfp if trusted and xfp else proto))
    if trusted and xfh:
        out.append((b"x-forwarded-host", xfh))
    elif host:
        out.append((b"x-forwarded-host", host))
    if trusted and xfport:
        out.append((b"x-forwarded-port", xfport))
    elif server_port is not None:
        out.append((b"x-forwarded-port", str(server_port).encode()))
    node = f"for={_forwarded_node(client_ip)};proto={scheme}".encode()
    if host:
        node += b';host="' + host.replace(b'"', b"") + b'"'
    out.append((b"forwarded", b", ".join([*forwarded, node]) if trusted and forwarded else node))
    out.append((b"via", b", ".join([*prior_via, via]) if prior_via else via))
    out.append((b"x-request-id", request_id))
    out.append((b"traceparent", traceparent))
    if websocket:
        out.append((b"connection", b"upgrade"))
    return out, IncomingRequestInfo(
        host, request_id, content_length, chunked, invalid, xff, client_parent, unsupported
    )


def rewrite_response_headers(headers: Iterable[tuple[bytes, bytes]], *, via: bytes) -> Headers:
    """Drop hop-by-hop fields (and those `Connection` names); append `Via`."""
    out: Headers = []
    conn_tokens: set[bytes] | None = None
    prior_via: bytes | None = None
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")}
                conn_tokens = (conn_tokens or set()) | tokens
            continue
        if lname == b"via":
            prior_via = value if prior_via is None else prior_via + b", " + value
            continue
        out.append((lname, value))
    if conn_tokens:
        out = [(n, v) for n, v in out if n not in conn_tokens]
    out.append((b"via", prior_via + b", " + via if prior_via else via))
    return out
