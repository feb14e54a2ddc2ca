"""CredentialWatch: streams re-check their credential, sharing one check per credential."""

from __future__ import annotations

import asyncio

from portcullis.admin.credential_watch import CredentialWatch
from portcullis.services.rbac import Caller, Permission, Role


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Authenticator:
    def __init__(self, caller: Caller) -> None:
        self.caller: Caller | None = caller
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def authenticate(self, credential: str) -> Caller | None:
        self.calls += 1
        self.entered.set()
        await self.gate.wait()
        return self.caller if credential.startswith("good") else None


OWNER = Caller("user:o@example.com", Role.OWNER, frozenset(Permission))


def watches(auth: Authenticator, clock: Clock, credential: str, n: int) -> list[CredentialWatch]:
    return [
        CredentialWatch(auth, credential, OWNER, Permission.ALERTS_READ, interval=15, clock=clock)
        for _ in range(n)
    ]


async def test_many_streams_on_one_credential_cost_one_check_per_interval() -> None:
    auth, clock = Authenticator(OWNER), Clock()
    same = watches(auth, clock, "good-token", 1000)
    assert all([await w.valid() for w in same])
    assert auth.calls == 0  # within the interval: no check at all
    clock.now += 16
    auth.gate.clear()  # the first check is still running while the others ask
    pending = [asyncio.ensure_future(w.valid()) for w in same]
    # The first is inside the check; the others (queued before this test resumes) wait on it.
    await auth.entered.wait()
    auth.gate.set()
    assert all(await asyncio.gather(*pending))
    assert auth.calls == 1
    other = watches(auth, clock, "good-other", 1)[0]
    clock.now += 16
    assert await other.valid()
    assert auth.calls == 2


async def test_a_revoked_credential_ends_every_stream_holding_it() -> None:
    auth, clock = Authenticator(OWNER), Clock()
    same = watches(auth, clock, "good-token", 3)
    auth.caller = None
    clock.now += 16
    assert [await w.valid() for w in same] == [False, False, False]
    assert auth.calls == 1
    assert same[0].reason == "the credential is no longer valid (expired, revoked or logged out)"


async def test_a_lost_permission_ends_the_stream() -> None:
    auth, clock = Authenticator(OWNER), Clock()
    (watch,) = watches(auth, clock, "good-token", 1)
    auth.caller = Caller("user:o@example.com", Role.VIEWER, frozenset({Permission.CONFIG_READ}))
    clock.now += 16
    assert not await watch.valid()
    assert watch.reason == "the caller no longer holds 'alerts:read'"
