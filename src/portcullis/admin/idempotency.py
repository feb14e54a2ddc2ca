"""`Idempotency-Key` on POST (draft-ietf-httpapi-idempotency-key-header).

A client that retries a POST with the same key gets the first response again
instead of a second resource. Keys are scoped per caller (admin user, API token
or bootstrap) and endpoint, and kept for `RETENTION`. The request is
fingerprinted (path, query, content type, body):

- same key, same fingerprint, first request finished → the stored response is
  replayed, marked `Idempotent-Replayed: true`;
- same key, other fingerprint → 422;
- same key while the first request is still running → 409 (with Retry-After);
- a first request that failed with a 5xx, or raised, is forgotten so it can be
  retried; one abandoned in flight (a crashed process) is taken over after
  `ABANDONED_AFTER`.

Endpoints whose responses carry secrets (login, refresh, API-token creation) are
excluded: storing their responses would store the secrets.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portcullis.admin.problems import (
    BAD_REQUEST,
    IDEMPOTENCY_IN_FLIGHT,
    IDEMPOTENCY_KEY_REUSED,
    problem_response,
)
from portcullis.identity.secrets import ServerSecret
from portcullis.services.rbac import Caller
from portcullis.store.admin_tables import IdempotencyKeyRow
from portcullis.store.engine import write_transaction

HEADER = "Idempotency-Key"
RETENTION = timedelta(hours=24)
ABANDONED_AFTER = timedelta(minutes=2)
MAX_KEY_LENGTH = 255
PURGE_EVERY = 600.0  # seconds between sweeps of expired keys
# Sessions and credentials: a replay would be wrong, and the fingerprint of a body
# holding passwords (login, password change) must not be kept.
EXCLUDED_PATHS = frozenset(
    {
        "/admin/v1/auth/login",
        "/admin/v1/auth/refresh",
        "/admin/v1/auth/logout",
        "/admin/v1/auth/password",
        "/admin/v1/tokens",
    }
)
# The same for bodies that may hold a basic-auth password (creating or rotating one).
EXCLUDED_PATTERN = re.compile(r"^/admin/v1/consumers/[^/]+/basic-auth(?:/[^/]+/rotate)?/?$")
_SKIPPED_RESPONSE_HEADERS = frozenset({b"date", b"server", b"content-length"})


def _now() -> datetime:
    return datetime.now(UTC)


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


_SEALED = b"sealed:v1:"


def _no_store(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"cache-control" and b"no-store" in v.lower() for k, v in headers)


class IdempotencyMiddleware:
    """Plain ASGI middleware; only POSTs under /admin/v1 that carry the header do any work."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        engine: Callable[[], AsyncEngine],
        authenticate: Callable[[str], Any],
        secret: Callable[[], ServerSecret] | None = None,
    ) -> None:
        self.app = app
        self._engine = engine
        self._secret = secret
        self._authenticate = authenticate
        self._last_purge = float("-inf")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = dict(scope["headers"])
        raw_key = headers.get(HEADER.lower().encode())
        if (
            raw_key is None
            or not path.startswith("/admin/v1/")
            or path in EXCLUDED_PATHS
            or EXCLUDED_PATTERN.match(path)
        ):
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1").strip()
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            response = problem_response(
                BAD_REQUEST,
                f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters",
                instance=path,
            )
            await response(scope, receive, send)
            return
        caller = await self._caller(headers.get(b"authorization", b"").decode("latin-1"))
        if caller is None:  # the endpoint itself answers 401
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        fingerprint = _sha(
            path,
            scope.get("query_string", b""),
            headers.get(b"content-type", b""),
            body,
        )
        who = caller.token_id or caller.user_id or caller.actor
        scope_hash = _sha(who, "POST", path, key)
        engine = self._engine()
        await self._purge_expired(engine)
        claimed = await self._claim(engine, scope_hash, fingerprint)
        if claimed is not None:
            await claimed(scope, receive, send)
            return
        await self._run(engine, scope_hash, scope, body, send)

    async def _purge_expired(self, engine: AsyncEngine) -> None:
        """Drop expired keys now and then, so the table holds about one retention's worth."""
        now = time.monotonic()
        if now - self._last_purge < PURGE_EVERY:
            return
        self._last_purge = now
        async with write_transaction(engine) as conn:
            await conn.execute(
                delete(IdempotencyKeyRow).where(IdempotencyKeyRow.expires_at <= _now())
            )

    async def _caller(self, authorization: str) -> Caller | None:
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return None
        caller: Caller | None = await self._authenticate(credential.strip())
        return caller

    async def _claim(self, engine: AsyncEngine, scope_hash: str, fingerprint: str) -> Any:
        """Record the key as in flight; or the response to give instead (replay or problem)."""
        now = _now()
        async with write_transaction(engine) as conn:
            await conn.execute(
                delete(IdempotencyKeyRow).where(
                    IdempotencyKeyRow.scope_hash == scope_hash, IdempotencyKeyRow.expires_at <= now
                )
            )
            row = (
                await conn.execute(
                    select(IdempotencyKeyRow).where(IdempotencyKeyRow.scope_hash == scope_hash)
                )
            ).first()
            if row is None:
                try:
                    await conn.execute(
                        insert(IdempotencyKeyRow).values(
                            scope_hash=scope_hash,
                            request_hash=fingerprint,
                            created_at=now,
                            expires_at=now + RETENTION,
                        )
                    )
                except IntegrityError:
                    return problem_response(
                        IDEMPOTENCY_IN_FLIGHT, "retry later", headers={"Retry-After": "1"}
                    )
                return None
            if row.request_hash != fingerprint:
                return problem_response(
                    IDEMPOTENCY_KEY_REUSED,
                    f"the {HEADER} was first used with another request body or URL",
                )
            if row.status is None:
                if row.created_at > now - ABANDONED_AFTER:
                    return problem_response(
                        IDEMPOTENCY_IN_FLIGHT,
                        "the first request with this key is still being processed",
                        headers={"Retry-After": "1"},
                    )
                await conn.execute(
                    update(IdempotencyKeyRow)
                    .where(IdempotencyKeyRow.scope_hash == scope_hash)
                    .values(created_at=now, expires_at=now + RETENTION)
                )
                return None
            stored = row.body or b""
            if stored.startswith(_SEALED):
                stored = self._unseal(stored, scope_hash)
            return _Replay(row.status, json.loads(row.headers or "[]"), stored)

    async def _run(
        self, engine: AsyncEngine, scope_hash: str, scope: Scope, body: bytes, send: Send
    ) -> None:
        status = 500
        response_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        delivered = False

        async def replay_body() -> Message:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers.extend(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_body, capture)
        except BaseException:
            await self._forget(engine, scope_hash)
            raise
        if status >= 500:
            await self._forget(engine, scope_hash)
            return
        kept = [
            [k.decode("latin-1"), v.decode("latin-1")]
            for k, v in response_headers
            if k.lower() not in _SKIPPED_RESPONSE_HEADERS
        ]
        stored = b"".join(chunks)
        if _no_store(response_headers):
            # The response shows a secret once (a new API key, a client secret): keep it only
            # sealed with the server secret, so a retry still gets the same key replayed.
            if self._secret is None:
                await self._forget(engine, scope_hash)
                return
            stored = _SEALED + self._secret().encrypt(stored, context=scope_hash.encode())
        async with write_transaction(engine) as conn:
            await conn.execute(
                update(IdempotencyKeyRow)
                .where(IdempotencyKeyRow.scope_hash == scope_hash)
                .values(status=status, headers=json.dumps(kept), body=stored)
            )

    def _unseal(self, stored: bytes, scope_hash: str) -> bytes:
        if self._secret is None:
            raise RuntimeError("a sealed idempotent response needs the server secret")
        return self._secret().decrypt(stored[len(_SEALED) :], context=scope_hash.encode())

    async def _forget(self, engine: AsyncEngine, scope_hash: str) -> None:
        async with write_transaction(engine) as conn:
            await conn.execute(
                delete(IdempotencyKeyRow).where(IdempotencyKeyRow.scope_hash == scope_hash)
            )


class _Replay:
    """An ASGI response that repeats a stored one."""

    def __init__(self, status: int, headers: list[list[str]], body: bytes) -> None:
        self.status = status
        self.headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            *self.headers,
            (b"content-length", str(len(self.body)).encode()),
            (b"idempotent-replayed", b"true"),
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)
