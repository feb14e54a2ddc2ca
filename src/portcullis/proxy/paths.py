"""The request-target sent upstream: service base path + (stripped) client path + query."""

from __future__ import annotations

from urllib.parse import quote

from portcullis.asgi import Scope
from portcullis.runtime.snapshot import CompiledRoute

_SAFE_PATH_CHARS = "/:@!$&'()*+,;=-._~"


def upstream_target(scope: Scope, route: CompiledRoute, matched_length: int) -> bytes:
    path: str = scope["path"]
    raw: bytes = scope.get("raw_path") or path.encode()
    if route.strip_path and matched_length:
        rest = path[matched_length:]
        if raw == path.encode("utf-8", "surrogateescape"):
            raw_rest = raw[matched_length:]
        else:
            raw_rest = quote(rest, safe=_SAFE_PATH_CHARS).encode()
        if raw_rest and not raw_rest.startswith(b"/"):
            raw_rest = b"/" + raw_rest
        target = route.service.base_path.encode() + raw_rest
    else:
        target = route.service.base_path.encode() + raw
    if not target:
        target = b"/"
    query: bytes = scope.get("query_string", b"")
    return target + b"?" + query if query else target
