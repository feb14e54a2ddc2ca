"""What a request is routed by: its Host and its normalized path (RFC 9112 §3.2, RFC 3986 §6).

The router, the plugins and the upstream must all see the same request, or a
request can be routed by one reading and served by another: a second Host header
(routed by the first, answered by the last) or a dot-segment (`/public/../admin`
routed to an open route, resolved by the upstream to a protected one). So both
the HTTP and the WebSocket path call `route_request` once, before anything else
looks at the request, and it either refuses the request or rewrites the scope to
the one canonical form everything after it uses:

- Host: exactly one, syntactically an RFC 3986 authority (host and optional port,
  no userinfo, no percent-encoding). A missing or empty Host is refused except on HTTP/1.0. granian
  puts the authority of an absolute-form target or of HTTP/2's `:authority` into
  the Host field when the client sent none, and otherwise keeps the client's Host.
- Path: percent-encoding normalized (escapes of unreserved characters decoded,
  the others upper-cased, bytes that may not appear in a path encoded), then
  `remove_dot_segments` (RFC 3986 §5.2.4; encoded dots are dots by then), then
  empty segments merged (`//admin` is `/admin`: many upstreams merge slashes). A
  dot-segment carrying `;` parameters (`..;`), a bad or control-character escape,
  and a target that is not an absolute path are refused.
- Encoded slashes (`%2F`), encoded backslashes (`%5C`) and raw backslashes are
  each route's choice (`Route.encoded_slashes`): `reject` (the default) refuses
  the request, `keep` forwards them encoded, `decode` turns them into `/`,
  normalizes again and routes the result.

`scope["path"]` becomes the decoded normalized path (what routes match) and
`scope["raw_path"]` the encoded one (what goes upstream).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, NamedTuple

from portcullis.asgi import Scope
from portcullis.runtime.router import RouteMatch, Router
from portcullis.runtime.snapshot import CompiledRoute

# RFC 3986 §2.3 unreserved characters: their escapes are decoded.
_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
# What makes a path need work: a byte other than "/" and pchar (unreserved,
# sub-delims, ":", "@"), such as "%", a backslash or non-ASCII; an empty segment;
# a dot-segment, also with ";" parameters. One search is cheaper than a translate
# and substring tests, and "/.well-known" needs none.
_NEEDS_WORK: Final = re.compile(rb"[^A-Za-z0-9\-._~!$&'()*+,;=:@/]|//|/\.\.?(?:[/;]|$)")
_DOT_OR_EMPTY_SEGMENT: Final = re.compile(rb"//|/\.\.?(?:/|$)")

# RFC 3986 authority without userinfo: reg-name or IPv4, or an IP literal; optional
# port. Percent-encoded reg-names are refused: no DNS name needs one, and whether a
# later hop decodes them is exactly the kind of disagreement this module removes.
_HOST: Final = re.compile(
    rb"[A-Za-z0-9\-._~!$&'()*+,;=]+(?::[0-9]{0,5})?|\[[0-9A-Fa-f:.]{2,}\](?::[0-9]{0,5})?"
)
# Hosts already found valid; bounded, since clients choose them.
_valid_hosts: set[bytes] = set()
_VALID_HOSTS_MEMO: Final = 4096


@dataclass(frozen=True, slots=True)
class Refusal:
    """The request is malformed (a 400); `detail` says why."""

    detail: str


class NormalizedPath(NamedTuple):
    """A path in canonical form: `raw` for the wire, `text` (decoded) for routing.

    A tuple, not a dataclass: one is built per request and a frozen dataclass costs
    several times more to create.
    """

    raw: bytes
    text: str
    # Whether it holds %2F, %5C (a raw backslash is encoded to %5C).
    encoded_slash: bool


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path (one starting with "/").

    Gives the result of the RFC's input-buffer loop in one pass over the
    segments: "." segments go, ".." removes the segment before it (never above
    the root), and a path ending in a dot-segment ends with "/".
    """
    segments = path.split("/")
    last = len(segments) - 1
    out: list[str] = []
    for i in range(1, last + 1):
        seg = segments[i]
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
            continue
        if i == last:
            out.append("")
    return "/" + "/".join(out)


def _canonical_escape(byte: int) -> bytes:
    if byte in _UNRESERVED:
        return bytes((byte,))
    return b"%%%02X" % byte


# Every escape ("2e", "2E"...) with its canonical form; control characters are
# missing, as are non-hex digits, so a failed lookup is a refusal.
_ESCAPES: Final = {
    spelling: _canonical_escape(byte)
    for byte in range(256)
    if 0x20 <= byte != 0x7F
    for spelling in {
        b"%02x" % byte,
        b"%02X" % byte,
        b"%x%X" % (byte >> 4, byte & 15),
        b"%X%x" % (byte >> 4, byte & 15),
    }
}
# Bytes a path may not hold as they are (not pchar, "/" or "%"): encoded.
_UNSAFE: Final = re.compile(rb"[^A-Za-z0-9\-._~!$&'()*+,;=:@/%]")
_HEX_DIGITS: Final = re.compile(rb"[0-9A-Fa-f]{2}")
# A dot-segment carrying parameters: "/..;x", "/.;x" (also at the end of the path).
_DOT_PARAMS: Final = re.compile(rb"/\.\.?;")


def _encode_unsafe(m: re.Match[bytes]) -> bytes:
    return b"%%%02X" % m.group()[0]


def _escape_refusal(part: bytes) -> Refusal:
    if _HEX_DIGITS.match(part) is None:
        return Refusal("invalid percent-encoding in the path")
    return Refusal("control character in the path")


def normalize_path(raw: bytes) -> NormalizedPath | Refusal:
    """The canonical form of a raw (percent-encoded) absolute path; see the module doc."""
    if not raw.startswith(b"/"):
        return Refusal("the request-target must be an absolute path")
    if _NEEDS_WORK.search(raw) is None:
        return NormalizedPath(raw, raw.decode("ascii"), False)
    if _UNSAFE.search(raw) is not None:
        # Backslashes, quotes, braces, non-ASCII bytes...: encoded, as a client should have.
        raw = _UNSAFE.sub(_encode_unsafe, raw)
    if b"%" in raw:
        # RFC 3986 §6.2.2.1-2: unreserved escapes decoded, the rest upper-cased.
        # Encoded dots are dots from here on.
        parts = raw.split(b"%")
        out = [parts[0]]
        for part in parts[1:]:
            form = _ESCAPES.get(part[:2])
            if form is None:
                return _escape_refusal(part)
            out += (form, part[2:])
        raw = b"".join(out)
    if b";" in raw and _DOT_PARAMS.search(raw) is not None:
        # Tomcat and others drop ";params" before resolving: "..;" is "..".
        return Refusal("dot-segment with parameters in the path")
    if _DOT_OR_EMPTY_SEGMENT.search(raw) is not None:
        raw = _merge_slashes(remove_dot_segments(raw.decode("ascii"))).encode("ascii")
    return NormalizedPath(raw, _percent_decode(raw), b"%2F" in raw or b"%5C" in raw)


def _merge_slashes(path: str) -> str:
    while "//" in path:
        path = path.replace("//", "/")
    return path


# Canonical (upper-case) escapes and the byte each stands for.
_BYTES: Final = {b"%02X" % byte: bytes((byte,)) for byte in range(256)}


def _percent_decode(raw: bytes) -> str:
    """Decode the canonical escapes of `raw` once (`%252E` is `%2E`), then UTF-8.

    Invalid UTF-8 is replaced (U+FFFD), as granian does for `scope["path"]`.
    """
    if b"%" not in raw:
        return raw.decode("ascii")
    parts = raw.split(b"%")
    out = [parts[0]]
    for part in parts[1:]:
        out += (_BYTES[part[:2]], part[2:])
    return b"".join(out).decode("utf-8", "replace")


def _decode_slashes(path: NormalizedPath) -> NormalizedPath | Refusal:
    """`path` with %2F and %5C turned into "/" and normalized again."""
    return normalize_path(path.raw.replace(b"%2F", b"/").replace(b"%5C", b"/"))


def check_host(host: bytes) -> bool:
    """Whether `host` is a syntactically valid Host value (RFC 9110 §7.2)."""
    if host in _valid_hosts:
        return True
    if _HOST.fullmatch(host) is None:
        return False
    if len(_valid_hosts) < _VALID_HOSTS_MEMO:
        _valid_hosts.add(host)
    return True


def request_host(scope: Scope) -> bytes | Refusal:
    """The request's one Host value; empty only for HTTP/1.0 requests without one."""
    host: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"host":
            if host is not None:
                return Refusal("more than one Host header")
            host = value
    if not host:
        # granian reports a missing Host as an empty one.
        if scope.get("http_version") == "1" or scope.get("http_version") == "1.0":
            return b""
        return Refusal("missing or empty Host header")
    if not check_host(host):
        return Refusal("invalid Host header")
    return host


_OWS: Final = (0x20, 0x09)


def _padded_field(headers: list[tuple[bytes, bytes]]) -> Refusal | None:
    """An HTTP/2 field value with leading or trailing whitespace makes the request malformed.

    RFC 9113 §8.2.1. HTTP/1.1 parsers strip that whitespace; HTTP/2 hands values
    over verbatim, so an upstream behind us could read `" admin"` and `"admin"` alike
    where a plugin compared them as different.
    """
    for name, value in headers:
        if value and (value[0] in _OWS or value[-1] in _OWS):
            return Refusal(f"whitespace around the value of {name.decode('latin-1')!r}")
    return None


def route_request(
    router: Router[CompiledRoute], method: str, scope: Scope
) -> RouteMatch[CompiledRoute] | Refusal | None:
    """Validate the Host, normalize the path and route; None when no route matches.

    Afterwards the scope's `path` and `raw_path` are the normalized ones (left as
    they are when the path already was canonical).
    """
    if scope.get("http_version") == "2":
        padded = _padded_field(scope["headers"])
        if padded is not None:
            return padded
    host = request_host(scope)
    if isinstance(host, Refusal):
        return host
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    headers = scope["headers"]
    host_text = host.decode("latin-1")
    if raw[:1] == b"/" and _NEEDS_WORK.search(raw) is None:
        # Already canonical (the common case): its text is the raw bytes; no rewrite.
        return router.match(method, host_text, raw.decode("ascii"), headers)
    path = normalize_path(raw)
    if isinstance(path, Refusal):
        return path
    match = router.match(method, host_text, path.text, headers)
    if match is not None and path.encoded_slash:
        policy = match.payload.encoded_slashes
        if policy == "reject":
            return Refusal("encoded slash or backslash in the path")
        if policy == "decode":
            decoded = _decode_slashes(path)
            if isinstance(decoded, Refusal):
                return decoded
            path = decoded
            match = router.match(method, host_text, path.text, headers)
    scope["path"] = path.text
    scope["raw_path"] = path.raw
    return match
