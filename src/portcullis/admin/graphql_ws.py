"""GraphQL over WebSocket on `/graphql`: the `graphql-transport-ws` protocol (the npm
`graphql-ws` package's, not Apollo's legacy `subscriptions-transport-ws`).

- The client offers the `graphql-transport-ws` subprotocol (4406 otherwise) and sends
  `connection_init` within `graphql_ws_init_timeout` seconds (4408 otherwise), with its
  admin token in the payload (`{"authorization": "Bearer <token>"}`) or in the upgrade
  request's `Authorization` header; a bad or missing token closes with 4403, a second
  `connection_init` with 4429. Then `connection_ack`.
- `subscribe` before the ack closes with 4401; an id already running with 4409; a
  message that is not the protocol's (not JSON, unknown type, missing fields, a
  server-to-client type) with 4400. `ping` is answered with `pong`.
- Each operation takes the HTTP face's one path (`GraphEndpoint.prepare`: persisted
  documents, size/depth/alias/cost limits, validation); a refusal before execution is
  an `error` message. A query or mutation gets one `next` and `complete`; a
  subscription a `next` per item until it ends (`complete`) or the client completes it.
  The token is authenticated again for every operation and, while subscriptions run,
  every `stream_recheck_seconds` (`CredentialWatch`): a revoked token, an ended session
  or a lost permission closes the connection with 4403.
- Messages out go through one bounded queue per connection: a slow client holds its
  subscriptions back (their streams fall behind and catch up from the event log), the
  server never buffers without bound. Every operation and stream ends when the socket
  does, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import structlog
from graphql import ExecutionResult
from starlette.websockets import WebSocket, WebSocketDisconnect

from portcullis.admin.credential_watch import CredentialWatch
from portcullis.graph.http import GraphEndpoint, Prepared, RequestError, bearer
from portcullis.graph.subscriptions import stream_permission
from portcullis.services.context import RequestFacts
from portcullis.services.rbac import Caller
from portcullis.settings import Settings

log = structlog.get_logger("portcullis.graph.ws")

PROTOCOL = "graphql-transport-ws"
# Messages waiting to go out on one connection.
QUEUE_SIZE = 64
# A close reason is at most 123 bytes (RFC 6455).
_REASON_BYTES = 123


class Closed(Exception):
    """Close the connection with `code` and `reason` (the protocol's codes)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason.encode()[:_REASON_BYTES].decode(errors="ignore")


def _invalid(reason: str = "Invalid message received") -> Closed:
    return Closed(4400, reason)


class GraphSocket:
    """One graphql-transport-ws connection (see the module docstring)."""

    def __init__(
        self,
        websocket: WebSocket,
        endpoint: GraphEndpoint,
        authenticator: Any,
        settings: Settings,
    ) -> None:
        self.ws = websocket
        self.endpoint = endpoint
        self.authenticator = authenticator
        self.settings = settings
        self.credential: str | None = None
        self.caller: Caller | None = None
        self.init_received = False
        self.acknowledged = False
        self.operations: dict[str, asyncio.Task[None]] = {}
        # Running subscriptions' credential checks, by operation id.
        self.watches: dict[str, CredentialWatch] = {}
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self.closing: asyncio.Future[Closed | None] = asyncio.get_running_loop().create_future()
        self._send = asyncio.Lock()
        client = websocket.client
        self.facts = RequestFacts.of(
            websocket.headers.get("x-request-id", ""), client.host if client else None
        )

    async def run(self) -> None:
        if PROTOCOL not in self.ws.scope.get("subprotocols", []):
            await self.ws.accept()
            await self.ws.close(4406, "Subprotocol not acceptable")
            return
        await self.ws.accept(subprotocol=PROTOCOL)
        tasks = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._write()),
            asyncio.create_task(self._init_deadline()),
            asyncio.create_task(self._recheck()),
        ]
        try:
            outcome = await self.closing
        finally:
            for task in (*tasks, *self.operations.values()):
                task.cancel()
            await asyncio.gather(*tasks, *self.operations.values(), return_exceptions=True)
            self.operations.clear()
        if outcome is not None:
            with contextlib.suppress(Exception):  # the client may be gone already
                await self.ws.close(outcome.code, outcome.reason)

    def close(self, outcome: Closed | None) -> None:
        """End the connection (None: the client went); the first reason wins."""
        if not self.closing.done():
            self.closing.set_result(outcome)

    async def _read(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    self.close(None)
                    return
                text = message.get("text")
                if text is None:
                    raise _invalid("Binary messages are not supported")
                await self._handle(text)
        except Closed as closed:
            self.close(closed)
        except WebSocketDisconnect:
            self.close(None)
        except Exception:
            log.exception("graphql.ws.failed", request_id=self.facts.request_id)
            self.close(Closed(4500, "Internal server error"))

    async def _write(self) -> None:
        try:
            while True:
                message = await self.outbox.get()
                text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
                async with self._send:
                    await self.ws.send_text(text)
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket went: the reader hears of it too
            self.close(None)

    async def _init_deadline(self) -> None:
        await asyncio.sleep(self.settings.graphql_ws_init_timeout)
        if not self.acknowledged:
            self.close(Closed(4408, "Connection initialisation timeout"))

    async def _recheck(self) -> None:
        """While subscriptions run, is the credential still good (`CredentialWatch`)?"""
        interval = self.settings.stream_recheck_seconds
        while True:
            await asyncio.sleep(interval)
            for watch in tuple(self.watches.values()):
                if not await watch.valid():
                    self.close(Closed(4403, f"Forbidden: {watch.reason}"))
                    return

    async def send(self, message: dict[str, Any]) -> None:
        await self.outbox.put(message)

    async def _handle(self, text: str) -> None:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            raise _invalid("Message is not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise _invalid("Message is not an object with a 'type'")
        kind = message["type"]
        payload = message.get("payload")
        if kind == "connection_init":
            await self._init(payload)
        elif kind == "ping":
            pong: dict[str, Any] = {"type": "pong"}
            if isinstance(payload, dict):
                pong["payload"] = payload
            await self.send(pong)
        elif kind == "pong":
            return
        elif kind == "subscribe":
            self._subscribe(_operation_id(message), payload)
        elif kind == "complete":
            task = self.operations.pop(_operation_id(message), None)
            if task is not None:
                task.cancel()
        else:
            raise _invalid(f"Unexpected message of type {kind[:40]} received")

    async def _init(self, payload: Any) -> None:
        if self.init_received:
            raise Closed(4429, "Too many initialisation requests")
        self.init_received = True
        if payload is not None and not isinstance(payload, dict):
            raise _invalid("The connection_init payload must be an object")
        authorization = _authorization(payload or {}) or self.ws.headers.get("authorization", "")
        credential = bearer(authorization) or (
            authorization.strip() if authorization.strip() and " " not in authorization else None
        )
        caller = None if credential is None else await self.authenticator.authenticate(credential)
        if caller is None:
            raise Closed(4403, "Forbidden")
        self.credential, self.caller = credential, caller
        self.acknowledged = True
        await self.send({"type": "connection_ack"})

    def _subscribe(self, id: str, payload: Any) -> None:
        if not self.acknowledged:
            raise Closed(4401, "Unauthorized")
        if not isinstance(payload, dict):
            raise _invalid("The subscribe payload must be an object")
        if id in self.operations:
            raise Closed(4409, f"Subscriber for {id} already exists")
        if len(self.operations) >= self.settings.graphql_ws_max_operations:
            self.operations[id] = asyncio.create_task(
                self._refuse(id, "too many operations on this connection", "TOO_MANY_OPERATIONS")
            )
            return
        self.operations[id] = asyncio.create_task(self._operation(id, payload))

    async def _refuse(self, id: str, message: str, code: str) -> None:
        try:
            await self.send(_error(id, [{"message": message, "extensions": {"code": code}}]))
        finally:
            self._done(id)

    def _done(self, id: str) -> None:
        task = self.operations.get(id)
        if task is asyncio.current_task():
            del self.operations[id]

    async def _operation(self, id: str, payload: dict[str, Any]) -> None:
        try:
            await self._run(id, payload)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("graphql.ws.operation_failed", request_id=self.facts.request_id)
            errors = [
                {
                    "message": "internal error",
                    "extensions": {"code": "INTERNAL_ERROR", "request_id": self.facts.request_id},
                }
            ]
            await self.send(_error(id, errors))
        finally:
            self._done(id)

    async def _run(self, id: str, payload: dict[str, Any]) -> None:
        assert self.credential is not None
        # As every HTTP request does: the token is checked again for each operation.
        caller = await self.authenticator.authenticate(self.credential)
        if caller is None:
            self.close(Closed(4403, "Forbidden: the credential is no longer valid"))
            return
        try:
            prepared = await self.endpoint.prepare(caller, self.facts, payload)
        except RequestError as exc:
            await self.send(_error(id, exc.errors))
            return
        outcome = await self.endpoint.subscribe(prepared)
        if isinstance(outcome, ExecutionResult):
            await self._next(id, outcome)
        else:
            await self._stream(id, caller, prepared, outcome)
        await self.send({"id": id, "type": "complete"})

    async def _stream(
        self,
        id: str,
        caller: Caller,
        prepared: Prepared,
        results: AsyncIterator[ExecutionResult],
    ) -> None:
        assert self.credential is not None
        self.watches[id] = CredentialWatch(
            self.authenticator,
            self.credential,
            caller,
            stream_permission(prepared.document, prepared.name),
            interval=self.settings.stream_recheck_seconds,
        )
        try:
            async for result in results:
                await self._next(id, result)
        finally:
            self.watches.pop(id, None)
            aclose = getattr(results, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _next(self, id: str, result: ExecutionResult) -> None:
        body = self.endpoint.response_body(result, self.facts)
        await self.send({"id": id, "type": "next", "payload": body})


def _operation_id(message: dict[str, Any]) -> str:
    id = message.get("id")
    if not isinstance(id, str) or not id:
        raise _invalid("The message needs an 'id' (a non-empty string)")
    return id


def _authorization(payload: dict[str, Any]) -> str:
    for name in ("authorization", "Authorization"):
        value = payload.get(name)
        if isinstance(value, str):
            return value
    return ""


def _error(id: str, errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": id, "type": "error", "payload": errors}


async def serve(
    websocket: WebSocket, endpoint: GraphEndpoint, authenticator: Any, settings: Settings
) -> None:
    await GraphSocket(websocket, endpoint, authenticator, settings).run()
