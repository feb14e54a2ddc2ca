"""GraphQL over server-sent events on `/graphql`: the graphql-sse protocol's "distinct
connections" mode (one operation per request).

`POST /graphql` (or `GET` with the parameters in the query string) with
`Accept: text/event-stream` answers a `text/event-stream`: an `event: next` per
execution result (`data:` the result as JSON), then `event: complete`. A query or
mutation gets one `next`; a subscription one per item until it ends or the client
disconnects. As the protocol requires, a document refused before execution (parse,
limits, validation, persisted documents) is reported on the accepted stream as a
`next` with its `errors`, then `complete`; a request refused as HTTP (no or bad token:
401, a body that is not JSON: 400, ...) is a normal GraphQL response. Comment
heartbeats keep idle streams open; the token is authenticated again at heartbeats
(`CredentialWatch`) and a revoked one ends the stream with a `next` carrying the
error, then `complete`. The stream (and its event-log subscription) is closed when
the client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from graphql import ExecutionResult

from portcullis.admin import sse
from portcullis.admin.credential_watch import CredentialWatch
from portcullis.graph.http import (
    GRAPHQL_RESPONSE,
    GraphEndpoint,
    Prepared,
    RequestError,
    bearer,
    is_graphql_error,
)
from portcullis.graph.subscriptions import stream_permission
from portcullis.settings import Settings


def wants_event_stream(request: Request) -> bool:
    """The client asks for `text/event-stream` (and not for it with q=0)."""
    for part in request.headers.get("accept", "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() == sse.MEDIA_TYPE:
            return not any(p.replace(" ", "").lower() in ("q=0", "q=0.0") for p in params)
    return False


async def handle(
    request: Request, endpoint: GraphEndpoint, authenticator: Any, settings: Settings
) -> Response:
    try:
        prepared = await endpoint.prepare_request(request, streaming=True)
    except RequestError as exc:
        if not is_graphql_error(exc):
            return endpoint.refusal(GRAPHQL_RESPONSE, exc)
        return sse.event_stream(_single({"errors": exc.errors}))
    watch = CredentialWatch(
        authenticator,
        bearer(request.headers.get("authorization", "")) or "",
        prepared.context.caller,
        stream_permission(prepared.document, prepared.name),
        interval=settings.stream_recheck_seconds,
    )
    return sse.event_stream(_body(endpoint, prepared, watch, settings.stream_heartbeat_seconds))


async def _body(
    endpoint: GraphEndpoint, prepared: Prepared, watch: CredentialWatch, heartbeat: float
) -> AsyncIterator[str]:
    # The operation runs (and a subscription opens its stream) once the response body
    # is being sent, inside this generator: a client gone before then leaves no stream
    # open behind a body that never started.
    outcome = await endpoint.subscribe(prepared)
    if isinstance(outcome, ExecutionResult):
        yield _next(endpoint.response_body(outcome, prepared.context.facts)) + COMPLETE
        return
    frames = _frames(endpoint, prepared, outcome, watch, heartbeat)
    try:
        async for frame in frames:
            yield frame
    finally:
        await frames.aclose()  # its stream closes now, not when garbage-collected


def _next(body: dict[str, Any]) -> str:
    return sse.frame(body, event="next")


# `data:` with nothing after it: an event with no data is not dispatched (WHATWG).
COMPLETE = "event: complete\ndata:\n\n"


async def _single(body: dict[str, Any]) -> AsyncIterator[str]:
    yield _next(body) + COMPLETE


async def _frames(
    endpoint: GraphEndpoint,
    prepared: Prepared,
    results: AsyncIterator[ExecutionResult],
    watch: CredentialWatch,
    heartbeat: float,
) -> AsyncGenerator[str, None]:
    facts = prepared.context.facts
    pending: asyncio.Task[ExecutionResult] | None = None
    try:
        # The first bytes go out at once: the client knows the stream is open.
        yield sse.comment("stream open")
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(results))
            # Wait without cancelling: the subscription's generator must not be
            # interrupted by a heartbeat.
            await asyncio.wait((pending,), timeout=heartbeat)
            if not await watch.valid():
                error = {"message": watch.reason, "extensions": {"code": "UNAUTHENTICATED"}}
                yield _next({"errors": [error]}) + COMPLETE
                return
            if not pending.done():
                yield sse.comment("heartbeat")
                continue
            task, pending = pending, None
            try:
                result = task.result()
            except StopAsyncIteration:
                yield COMPLETE
                return
            yield _next(endpoint.response_body(result, facts))
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(results, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
