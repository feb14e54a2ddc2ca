"""Login throttling in the store: an account lockout and a per-address window, shared by
every control-plane process (admin users, portal developers).

Each attempt takes its number atomically before its password is checked (one upsert
for the address, one conditional UPDATE for the account), so parallel guesses, in
any number of processes, can't get more passwords checked than the limits allow. A
successful login gives its numbers back (`succeeded`). The account table needs the
columns `id`, `failed_logins` and `locked_until`; addresses share one table
(`admin_login_failures`), each kind of login counting under its own key prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import case, delete, literal, null, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.store.admin_tables import LoginFailureRow
from portcullis.store.engine import dialect_insert, single_statement_engine
from portcullis.store.tables import UTCDateTime


class LoginLocked(Exception):
    """Too many failed logins for this account or client address."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    """Failed logins before an account locks, and for how long (seconds); attempts per
    client address per window."""

    max_failures: int = 5
    lockout: int = 900
    ip_max_failures: int = 30
    ip_window: int = 900


class LoginThrottle:
    """The counters of one kind of account (`accounts`: a mapped table class)."""

    def __init__(
        self,
        engine: AsyncEngine,
        accounts: Any,
        *,
        limits: ThrottleLimits = ThrottleLimits(),
        address_prefix: str = "",
    ) -> None:
        self._engine = engine
        # Single-statement writes: each count is atomic without a transaction.
        self._counter = single_statement_engine(engine)
        self._accounts = accounts
        self.limits = limits
        self._prefix = address_prefix

    def address_key(self, client: str | None) -> str:
        return self._prefix + (client or "unknown")

    async def take_address_attempt(
        self,
        client: str | None,
        now: datetime,
        *,
        refusal: str = "too many failed logins from this address",
    ) -> datetime:
        """Count an attempt from `client` in its window (one upsert); the window's start.

        A window opens with the first attempt after the previous one ended. Raises
        `LoginLocked` once the window holds more than `ip_max_failures` attempts.
        """
        t = LoginFailureRow
        window = self.limits.ip_window
        window_floor = now - timedelta(seconds=window)
        insert_ = dialect_insert(self._engine)
        new = insert_(t).values(client=self.address_key(client), failures=1, window_start=now)
        # In ON CONFLICT DO UPDATE, the table's columns are the stored row's values.
        ended = t.window_start <= literal(window_floor, UTCDateTime())
        upsert = new.on_conflict_do_update(
            index_elements=[t.client],
            set_={
                "failures": case((ended, 1), else_=t.failures + 1),
                "window_start": case((ended, new.excluded.window_start), else_=t.window_start),
            },
        ).returning(t.failures, t.window_start)
        async with self._counter.begin() as conn:
            failures, window_start = (await conn.execute(upsert)).one()
            if failures == 1:
                # A window opened: a good moment to forget the windows that ended.
                await conn.execute(delete(t).where(t.window_start <= window_floor))
        if failures > self.limits.ip_max_failures:
            left = window_start + timedelta(seconds=window) - now
            raise LoginLocked(refusal, max(1, int(left.total_seconds()) + 1))
        return cast(datetime, window_start)

    async def take_account_attempt(self, account_id: str, now: datetime) -> None:
        """Number an attempt on the account before its password is checked (one UPDATE).

        The attempt that reaches `max_failures` also locks the account, so the ones
        after it (concurrent or later) are refused unchecked until the lock runs out
        or a successful login lifts it; a lock that ran out starts a new streak.
        """
        t = self._accounts
        streak = case((t.locked_until.is_(None), t.failed_logins), else_=0) + 1
        lock_end = literal(now + timedelta(seconds=self.limits.lockout), UTCDateTime())
        taken = update(t).where(
            t.id == account_id, or_(t.locked_until.is_(None), t.locked_until <= now)
        )
        taken = taken.values(
            failed_logins=streak,
            locked_until=case((streak >= self.limits.max_failures, lock_end), else_=null()),
        ).returning(t.failed_logins)
        async with self._counter.begin() as conn:
            if (await conn.execute(taken)).first() is not None:
                return
            locked_until = await conn.scalar(select(t.locked_until).where(t.id == account_id))
        wait = 1 if locked_until is None else int((locked_until - now).total_seconds()) + 1
        raise LoginLocked("the account is locked after repeated failed logins", max(1, wait))

    async def succeeded(self, account_id: str, client: str | None, window_start: datetime) -> None:
        """A login succeeded: lift the account's streak and give the address its number back."""
        t = LoginFailureRow
        async with self._counter.begin() as conn:
            await conn.execute(
                update(self._accounts)
                .where(self._accounts.id == account_id)
                .values(failed_logins=0, locked_until=None)
            )
            await conn.execute(
                update(t)
                .where(
                    t.client == self.address_key(client),
                    t.window_start == window_start,
                    t.failures > 0,
                )
                .values(failures=t.failures - 1)
            )
