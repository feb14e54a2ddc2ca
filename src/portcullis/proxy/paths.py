"""The request-target sent upstream: service base path + (stripped) client path + query.

The client path is the normalized one `proxy.target.route_request` left in the scope.
"""

from __future__ import annotations

from urllib.parse import quote

from portcullis.asgi import Scope
from portcullis.proxy.target import remove_dot_segments
from portcullis.runtime.snapshot import CompiledRoute

_SAFE_PATH_CHARS = "/:@!$&'()*+,;=-._~"


def upstream_target(
    scope: Scope, route: CompiledRoute, matched_length: int, query: bytes | None = None
) -> bytes:
    """The upstream request-target; `query` replaces the client's query when not None."""
    path: str = scope["path"]
    raw: bytes = scope.get("raw_path") or path.encode()
    if route.strip_path and matched_length:
        rest = path[matched_length:]
        if raw == path.encode("utf-8", "surrogateescape"):
            raw_rest = raw[matched_length:]
        else:
            cut = _raw_prefix_length(raw, path[:matched_length].encode("utf-8", "surrogateescape"))
            raw_rest = raw[cut:] if cut is not None else quote(rest, safe=_SAFE_PATH_CHARS).encode()
        if raw_rest and not raw_rest.startswith(b"/"):
            raw_rest = b"/" + raw_rest
            if raw_rest.startswith(b"/."):
                # A cut inside a segment (a regex route) can leave a new dot-segment in
                # front ("/a../x" less "/a"): it must not climb above the base path.
                raw_rest = remove_dot_segments(raw_rest.decode("latin-1")).encode("latin-1")
        target = route.service.base_path.encode() + raw_rest
    else:
        target = route.service.base_path.encode() + raw
    if not target:
        target = b"/"
    if query is None:
        query = scope.get("query_string", b"")
    return target + b"?" + query if query else target


_HEX = frozenset(b"0123456789abcdefABCDEF")


def _raw_prefix_length(raw: bytes, decoded_prefix: bytes) -> int | None:
    """How many bytes of the percent-encoded `raw` decode to `decoded_prefix`.

    Stripping on the raw path keeps the client's encoding (`%2F` stays `%2F`).
    """
    i = 0
    produced = 0
    n = len(raw)
    want = len(decoded_prefix)
    while produced < want and i < n:
        if raw[i] == 0x25 and i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            byte = int(raw[i + 1 : i + 3], 16)
            i += 3
        else:
            byte = raw[i]
            i += 1
        if byte != decoded_prefix[produced]:
            return None
        produced += 1
    return i if produced == want else None
