"""Keep checking the credential of a long-lived connection (SSE stream, WebSocket).

A request is authenticated once; a stream may stay open for days. Without a second
look, a revoked API token, a logged-out session, an expired access token, a deleted
user or a role that lost the permission would keep receiving events. `CredentialWatch`
authenticates the same credential again at most every `interval` seconds (each
transport asks at its heartbeats and before sending) and says whether the caller may
still use the stream — still the same organization scope, still holding `permission`
(None: any valid credential; the WebSocket checks each room's permission on `caller`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from portcullis.services.rbac import Caller, Permission

DEFAULT_INTERVAL = 15.0


class Authenticator(Protocol):
    async def authenticate(self, credential: str) -> Caller | None: ...


class _Checks:
    """The latest authentication of each credential, shared by every watch on one
    authenticator: thousands of streams opened with one token (a dashboard, a fan-out)
    cost one store read per interval, not one each. Keyed by the credential's digest."""

    def __init__(self) -> None:
        self.results: dict[bytes, tuple[float, Caller | None]] = {}
        self.pending: dict[bytes, asyncio.Future[Caller | None]] = {}

    async def authenticate(
        self, authenticator: Authenticator, credential: str, fresh_after: float, now: float
    ) -> Caller | None:
        key = hashlib.sha256(credential.encode()).digest()
        known = self.results.get(key)
        if known is not None and known[0] >= fresh_after:
            return known[1]
        waiting = self.pending.get(key)
        if waiting is not None:  # another stream is asking right now: share its answer
            try:
                return await asyncio.shield(waiting)
            except asyncio.CancelledError:
                if not waiting.cancelled():
                    raise  # this stream was cancelled, not the one asking
                # The one asking was cancelled half-way: ask ourselves.
        future: asyncio.Future[Caller | None] = asyncio.get_running_loop().create_future()
        self.pending[key] = future
        try:
            caller = await authenticator.authenticate(credential)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning if none waits
            raise
        else:
            future.set_result(caller)
        finally:
            del self.pending[key]
        if len(self.results) > _MAX_REMEMBERED:
            self.results = {k: v for k, v in self.results.items() if v[0] >= fresh_after}
        self.results[key] = (now, caller)
        return caller


_MAX_REMEMBERED = 10_000
_CHECKS: weakref.WeakKeyDictionary[Any, _Checks] = weakref.WeakKeyDictionary()


class CredentialWatch:
    def __init__(
        self,
        authenticator: Authenticator,
        credential: str,
        caller: Caller,
        permission: Permission | None,
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._authenticator = authenticator
        self._credential = credential
        self._organization_id = caller.organization_id
        self._permission = permission
        self._interval = interval
        self._clock = clock
        self._checked = clock()
        self.reason: str | None = None
        # The caller as last authenticated.
        self.caller = caller

    async def valid(self) -> bool:
        """False (with `reason` set) once the credential no longer grants the stream;
        authenticates again only when `interval` has passed since the last check."""
        if self.reason is not None:
            return False
        now = self._clock()
        if now - self._checked < self._interval:
            return True
        self._checked = now
        checks = _CHECKS.setdefault(self._authenticator, _Checks())
        caller = await checks.authenticate(
            self._authenticator, self._credential, now - self._interval, now
        )
        if caller is None:
            self.reason = "the credential is no longer valid (expired, revoked or logged out)"
        elif caller.organization_id != self._organization_id:
            self.reason = "the caller's organization changed"
        elif self._permission is not None and not caller.can(self._permission):
            self.reason = f"the caller no longer holds {self._permission.value!r}"
        else:
            self.caller = caller
        return self.reason is None
