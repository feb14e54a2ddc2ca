"""Races on a real store (SQLite and PostgreSQL): a verification link used 20 times at
once verifies exactly once; 20 wrong passwords at once get exactly `max_failures`
passwords checked before the account locks (the right one is then refused too)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable

from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.problems import TOO_MANY_REQUESTS, UNAUTHORIZED
from portcullis.services.errors import ServiceError
from portcullis.services.portal import INVALID_TOKEN
from support.portal import PASSWORD, build, facts

CONCURRENT = 20


async def _outcome(call: Awaitable[object]) -> str:
    try:
        await call
    except ServiceError as exc:
        return exc.kind.slug
    return "ok"


async def test_a_verification_link_works_once_under_concurrency(engine: AsyncEngine) -> None:
    portal = build(engine)
    await portal.accounts.sign_up(facts(), "ada@example.com", PASSWORD, "Ada")
    (mail,) = await portal.outbox.messages(recipient="ada@example.com")
    found = re.search(r"token=([A-Za-z0-9_-]+)", mail.body)
    assert found is not None
    uses = [portal.accounts.verify_email(facts(), found.group(1)) for _ in range(CONCURRENT)]
    outcomes = await asyncio.gather(*(_outcome(u) for u in uses))
    assert sorted(outcomes) == sorted(["ok"] + [INVALID_TOKEN.slug] * (CONCURRENT - 1))
    dev = await portal.accounts.login(facts(), "ada@example.com", PASSWORD)
    assert dev.email_verified


async def test_parallel_guesses_cannot_outrun_the_lockout(engine: AsyncEngine) -> None:
    portal = build(engine)
    await portal.accounts.sign_up(facts(), "ada@example.com", PASSWORD, "Ada", verified=True)
    limit = portal.accounts.throttle.limits.max_failures
    guesses = [
        portal.accounts.login(facts(f"192.0.2.{i}"), "ada@example.com", f"guess {i}")
        for i in range(CONCURRENT)
    ]
    outcomes = await asyncio.gather(*(_outcome(g) for g in guesses))
    assert sorted(outcomes) == sorted(
        [UNAUTHORIZED.slug] * limit + [TOO_MANY_REQUESTS.slug] * (CONCURRENT - limit)
    )
    assert await _outcome(portal.accounts.login(facts(), "ada@example.com", PASSWORD)) == (
        TOO_MANY_REQUESTS.slug
    )
