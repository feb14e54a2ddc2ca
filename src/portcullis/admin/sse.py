"""Server-sent events on the wire (WHATWG HTML, "Server-sent events"): the frames and the
response that carries them.

A frame is `id:`/`event:`/`data:` lines and a blank line; a line starting with `:` is a
comment (the heartbeat that keeps idle connections and proxies from timing out);
`retry:` tells the client how long to wait before reconnecting. Data is one line of
compact JSON, so no field ever needs splitting. The response forbids caching,
transformation (compression) and proxy buffering (`X-Accel-Buffering: no`, nginx's).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.responses import StreamingResponse

MEDIA_TYPE = "text/event-stream"
HEADERS = {
    "cache-control": "no-cache, no-transform",
    "x-accel-buffering": "no",
}


def frame(
    data: Mapping[str, Any] | None, *, event: str | None = None, id: str | None = None
) -> str:
    """One event: the JSON `data` (None: no data line), its type and id."""
    lines = []
    if id is not None:
        lines.append(f"id: {_single_line(id)}")
    if event is not None:
        lines.append(f"event: {_single_line(event)}")
    if data is not None:
        lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return "\n".join(lines) + "\n\n"


def comment(text: str) -> str:
    return f": {_single_line(text)}\n\n"


def retry(milliseconds: int) -> str:
    return f"retry: {milliseconds}\n\n"


def _single_line(text: str) -> str:
    if "\n" in text or "\r" in text:
        raise ValueError("an SSE field value cannot span lines")
    return text


def event_stream(
    body: AsyncIterator[str], headers: Mapping[str, str] | None = None
) -> StreamingResponse:
    """The `text/event-stream` response sending `body`'s frames as they come."""
    return StreamingResponse(body, media_type=MEDIA_TYPE, headers={**HEADERS, **(headers or {})})
