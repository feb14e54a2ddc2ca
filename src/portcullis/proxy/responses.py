"""Small ASGI response helpers for responses the gateway itself produces."""

from __future__ import annotations

from portcullis.asgi import Scope, Send
from portcullis.problems import PROBLEM_CONTENT_TYPE, ProblemKind, problem_body, with_occurrence

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


def request_instance(scope: Scope) -> str:
    """The problem `instance` of a request: its path as the client sent it (no query)."""
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else str(scope.get("path", ""))


def is_problem(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(n == b"content-type" and v == _PROBLEM_CT for n, v in headers)


async def send_problem(
    send: Send,
    kind: ProblemKind,
    detail: str | None,
    *,
    request_id: bytes,
    instance: str | None,
    via: bytes,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    head_only: bool = False,
) -> None:
    body = with_occurrence(problem_body(kind, detail), request_id.decode(), instance)
    headers = [
        (b"content-type", _PROBLEM_CT),
        (b"x-request-id", request_id),
        (b"via", via),
        *(extra_headers or ()),
    ]
    await send_bytes(send, kind.status, b"" if head_only else body, headers)
