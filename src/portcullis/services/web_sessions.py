"""Server-side sessions of the web applications (the dashboard and the portal).

The browser's cookie holds a random token (`pcs_…`, 256 bits); the store holds only
its SHA-256, with the session's kind ("admin": dashboard, "developer": portal), its
subject (the admin user's or developer's id), its CSRF synchronizer token, when it
was last used and when it ends. A session ends at `expires_at` (absolute lifetime) or
after `idle` seconds without a request, whichever comes first; `touch` moves the idle
end at most once per `touch_every` seconds, so a busy page does not write on every
request. Everything is in the store (SQLite or PostgreSQL), so every control-plane
process sees the same sessions and a sign-out holds everywhere at once.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.services.context import Clock, utc_now
from portcullis.store.engine import write_transaction
from portcullis.store.web_tables import WebSessionRow

SESSION_PREFIX = "pcs_"
SessionKind = Literal["admin", "developer"]
KINDS: frozenset[str] = frozenset({"admin", "developer"})
# Beyond this length a presented token is refused unread (a real one is 47 characters).
_MAX_TOKEN_LENGTH = 128


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class WebSession:
    """A live session as the web layer sees it (never its token)."""

    id: str
    kind: str
    subject_id: str
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session just made: `token` goes into the cookie and nowhere else."""

    token: str
    session: WebSession


def _session(row: Any) -> WebSession:
    return WebSession(
        id=row.id,
        kind=row.kind,
        subject_id=row.subject_id,
        csrf_token=row.csrf_token,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        expires_at=row.expires_at,
    )


class WebSessions:
    """Create, look up, touch and end web sessions (store-backed)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        lifetime: int = 12 * 3600,
        idle: int = 30 * 60,
        touch_every: int = 60,
        clock: Clock = utc_now,
    ) -> None:
        self._engine = engine
        self.lifetime = lifetime
        self.idle = idle
        self.touch_every = touch_every
        self._clock = clock

    async def create(
        self, kind: SessionKind, subject_id: str, *, client_ip: str | None = None
    ) -> NewSession:
        """A new session for `subject_id` (sign-in); the caller ends any previous one."""
        if kind not in KINDS:
            raise ValueError(f"unknown session kind {kind!r}")
        now = self._clock()
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        row = WebSessionRow(
            id=str(uuid.uuid4()),
            token_hash=token_digest(token),
            kind=kind,
            subject_id=subject_id,
            csrf_token=secrets.token_urlsafe(32),
            client_ip=(client_ip or None) and client_ip[:64],
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(seconds=self.lifetime),
        )
        values = {c.key: getattr(row, c.key) for c in WebSessionRow.__table__.columns}
        async with write_transaction(self._engine) as conn:
            await conn.execute(insert(WebSessionRow).values(**values))
        return NewSession(token, _session(row))

    async def lookup(self, token: str | None, kind: SessionKind) -> WebSession | None:
        """The live session of `kind` behind a cookie token; None when there is none,
        it ended (absolute or idle) or it is of another kind. Touches it (see module)."""
        if not token or not token.startswith(SESSION_PREFIX) or len(token) > _MAX_TOKEN_LENGTH:
            return None
        query = select(WebSessionRow).where(WebSessionRow.token_hash == token_digest(token))
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.kind != kind:
            return None
        now = self._clock()
        if row.expires_at <= now or row.last_seen_at + timedelta(seconds=self.idle) <= now:
            await self._delete_id(row.id)
            return None
        session = _session(row)
        if (now - row.last_seen_at).total_seconds() >= self.touch_every:
            await self.touch(session.id, now)
            session = replace(session, last_seen_at=now)
        return session

    async def touch(self, session_id: str, now: datetime | None = None) -> None:
        """Record a request of the session now (moves its idle end)."""
        when = now or self._clock()
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                update(WebSessionRow)
                .where(WebSessionRow.id == session_id, WebSessionRow.last_seen_at < when)
                .values(last_seen_at=when)
            )

    async def delete(self, token: str | None) -> None:
        """Sign-out: the session behind `token` ends (nothing when there is none)."""
        if not token or len(token) > _MAX_TOKEN_LENGTH:
            return
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                delete(WebSessionRow).where(WebSessionRow.token_hash == token_digest(token))
            )

    async def delete_subject(
        self, kind: SessionKind, subject_id: str, *, keep: str | None = None
    ) -> int:
        """End every session of one subject (but `keep`, a session id); how many ended."""
        query = delete(WebSessionRow).where(
            WebSessionRow.kind == kind, WebSessionRow.subject_id == subject_id
        )
        if keep is not None:
            query = query.where(WebSessionRow.id != keep)
        async with write_transaction(self._engine) as conn:
            return int((await conn.execute(query)).rowcount or 0)

    async def purge(self) -> int:
        """Forget sessions that ended (absolute or idle); how many."""
        now = self._clock()
        query = delete(WebSessionRow).where(
            (WebSessionRow.expires_at <= now)
            | (WebSessionRow.last_seen_at <= now - timedelta(seconds=self.idle))
        )
        async with write_transaction(self._engine) as conn:
            return int((await conn.execute(query)).rowcount or 0)

    async def _delete_id(self, session_id: str) -> None:
        async with write_transaction(self._engine) as conn:
            await conn.execute(delete(WebSessionRow).where(WebSessionRow.id == session_id))
