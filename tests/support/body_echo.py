"""A tiny pure-ASGI upstream that reflects the whole request, body included, as JSON.

Run it with `support.servers.granian_app("support.body_echo:create_app", env=
{"PYTHONPATH": <tests dir>})`. The answer carries the method, path, raw query, the
request headers, the body as text, and whether it came chunked; it also sends an
`Access-Control-Allow-Origin: *` and an `X-Internal` header, so tests can check
that a gateway replaces or removes what an upstream says.
"""

from __future__ import annotations

import json
from typing import Any

from portcullis.asgi import Receive, Scope, Send


def create_app() -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        parts: list[bytes] = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        answer = json.dumps(
            {
                "method": scope["method"],
                "path": scope["path"],
                "query": scope["query_string"].decode("latin-1"),
                "headers": headers,
                "body": body.decode("utf-8", errors="replace"),
                "internal": "upstream-only",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(answer)).encode()),
                    (b"access-control-allow-origin", b"*"),
                    (b"x-internal", b"secret"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app
