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

import time
from collections.abc import Callable
from typing import Protocol

from portcullis.services.rbac import Caller, Permission

DEFAULT_INTERVAL = 15.0


class Authenticator(Protocol):
    async def authenticate(self, credential: str) -> Caller | None: ...


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
        caller = await self._authenticator.authenticate(self._credential)
        if caller is None:
            self.reason = "the credential is no longer valid (expired, revoked or logged out)"
        elif caller.organization_id != self._organization_id:
            self.reason = "the caller's organization changed"
        elif self._permission is not None and not caller.can(self._permission):
            self.reason = f"the caller no longer holds {self._permission.value!r}"
        else:
            self.caller = caller
        return self.reason is None
