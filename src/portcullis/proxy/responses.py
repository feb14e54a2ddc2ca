"""Small ASGI response helpers for responses the gateway itself produces."""

from __future__ import annotations

from portcullis.asgi import Send
from portcullis.problems import PROBLEM_CONTENT_TYPE, ProblemKind, problem_body

_PROBLEM_CT = PROBLEM_CONTENT_TYPE.encode()


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    length: int | None = None,
) -> None:
    """Send a whole response; `length` is the Content-Length of a HEAD reply's GET body."""
    size = len(body) if length is None else length
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(size).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_problem(
    send: Send,
    kind: ProblemKind,
    detail: str | None,
    *,
    request_id: bytes,
    via: bytes,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    head_only: bool = False,
) -> None:
    body = problem_body(kind, detail, request_id=request_id.decode())
    headers = [
        (b"content-type", _PROBLEM_CT),
        (b"x-request-id", request_id),
        (b"via", via),
        *(extra_headers or ()),
    ]
    await send_bytes(send, kind.status, b"" if head_only else body, headers)
