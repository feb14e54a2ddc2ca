"""The webhook chaos run (issue 15's proof), shared by the test and the full-size
benchmark (`python -m benchmarks.webhook_chaos`).

Events are recorded (with their outbox messages) into a store while real control planes
(`portcullis.admin.app:create_app` under granian, the delivery worker running in its
lifespan as in production), or the same worker alone (`python -m portcullis.webhooks`,
which starts in a fraction of the time: the test's choice) deliver them to receivers
that verify every request with the PyPI `standardwebhooks` library and answer at
random: 200, 500, a hang past the sender's timeout, or 429 with Retry-After. A
delivering process is killed with SIGKILL while it holds leases (`kills` times, round
robin over the processes) and a new one is started.

The run is fast through real settings only: `PORTCULLIS_WEBHOOK_RETRY_SCHEDULE`,
`_TIMEOUT`, `_LEASE`, `_BREAKER_REST` and `_POLL_INTERVAL` in the planes' environment.

`ChaosResult` holds what the receivers saw and what the store says; `check()` names every
broken promise: a pair (event, endpoint) never answered 2xx, a pair that came with two
`webhook-id`s, a bad signature, a message not delivered, a message leased by a killed
process that was not delivered again after its lease expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from aiohttp import web
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from portcullis.events.bus import record_event
from portcullis.events.catalogue import EventType
from portcullis.identity.secrets import ServerSecret, load_server_secret
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head
from portcullis.store.webhook_tables import WebhookAttemptRow, WebhookMessageRow
from portcullis.webhooks.__main__ import READY
from portcullis.webhooks.endpoints import NewEndpoint, create_endpoint
from support.events import sample
from support.servers import free_port
from support.threaded_aiohttp import ThreadedAiohttpServer

M = WebhookMessageRow
A = WebhookAttemptRow
ANSWERS = ("ok", "error", "hang", "throttle")


@dataclass(frozen=True)
class ChaosPlan:
    events: int = 2000
    endpoints: int = 20
    processes: int = 1
    kills: int = 3
    seed: int = 15
    # Events per recording transaction.
    batch: int = 25
    # Weights of ANSWERS for each request.
    weights: tuple[float, ...] = (0.55, 0.15, 0.15, 0.15)
    # A message is answered 200 after this many failed answers, so that the schedule
    # (8 attempts) always suffices: the run tests delivery, not dead-lettering.
    max_failures: int = 3
    timeout: float = 0.5
    lease: float = 3.0
    schedule: tuple[float, ...] = (0, 0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5)
    deadline: float = 300.0
    # Each endpoint's max_concurrency (a hanging receiver holds a slot for the timeout).
    concurrency: int = 8
    # "control-plane" (granian + the admin app) or "delivery" (python -m portcullis.webhooks)
    entry: str = "control-plane"

    def env(self, database_url: str) -> dict[str, str]:
        return {
            "PORTCULLIS_DATABASE_URL": database_url,
            "PORTCULLIS_LOG_LEVEL": "warning",
            "PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
            "PORTCULLIS_WEBHOOK_TIMEOUT": str(self.timeout),
            "PORTCULLIS_WEBHOOK_LEASE": str(self.lease),
            "PORTCULLIS_WEBHOOK_RETRY_SCHEDULE": json.dumps(list(self.schedule)),
            "PORTCULLIS_WEBHOOK_BREAKER_REST": "0.5",
            "PORTCULLIS_WEBHOOK_POLL_INTERVAL": "0.05",
        }


@dataclass(frozen=True)
class Arrival:
    endpoint: int
    webhook_id: str
    event_id: int
    answer: str
    verified: bool


class ChaosReceivers:
    """One aiohttp server on its own thread and loop; endpoint n is `/hook/n` with its own
    secret. Answers are drawn from a seeded random generator."""

    def __init__(self, plan: ChaosPlan) -> None:
        self.plan = plan
        self.secrets: dict[int, str] = {}
        self.arrivals: list[Arrival] = []
        self.delivered: set[tuple[int, int]] = set()
        self._failures: Counter[str] = Counter()
        self._random = random.Random(plan.seed)
        self._server = ThreadedAiohttpServer(
            lambda app: app.router.add_post("/hook/{n}", self._handle),
            name="chaos-receivers",
            backlog=1024,
            shutdown_timeout=0.2,
        )

    def url(self, endpoint: int) -> str:
        return f"http://127.0.0.1:{self._server.port}/hook/{endpoint}"

    def _answer(self, webhook_id: str) -> str:
        if self._failures[webhook_id] >= self.plan.max_failures:
            return "ok"
        answer = self._random.choices(ANSWERS, self.plan.weights)[0]
        if answer != "ok":
            self._failures[webhook_id] += 1
        return answer

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        endpoint = int(request.match_info["n"])
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            Webhook(self.secrets[endpoint]).verify(body, headers, json_parse=False)
            verified = True
        except WebhookVerificationError:
            verified = False
        webhook_id = headers.get("webhook-id", "")
        event_id = int(json.loads(body)["event_id"])
        answer = self._answer(webhook_id) if verified else "error"
        self.arrivals.append(Arrival(endpoint, webhook_id, event_id, answer, verified))
        if answer == "ok":
            self.delivered.add((endpoint, event_id))
            return web.Response(status=200)
        if answer == "throttle":
            return web.Response(status=429, headers={"Retry-After": "1"})
        if answer == "hang":
            # Past the sender's timeout: the attempt ends as a timeout on its side.
            stopping = self._server.stopping
            assert stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.plan.timeout * 4)
            return web.Response(status=503)
        return web.Response(status=500)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()


class Plane:
    """One delivering process in its own session, so that SIGKILL takes its whole tree at
    once: the control plane (granian serving the admin app, delivering in its lifespan)
    or `python -m portcullis.webhooks` (the same worker alone, starting in a fraction of
    the time)."""

    def __init__(self, entry: str, env: dict[str, str], log: Path) -> None:
        self.entry = entry
        self.port = free_port()
        self.log = log
        self._out = log.open("ab")
        if entry == "control-plane":
            target = "portcullis.admin.app:create_app"
            argv = [
                sys.executable, "-m", "granian", "--interface", "asgi", "--factory", target,
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                "--no-access-log", "--log-level", "warning", "--loop", "uvloop",
            ]  # fmt: skip
        else:
            argv = [sys.executable, "-m", "portcullis.webhooks"]
        self.process = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
            start_new_session=True,
        )
        self.started = time.monotonic()

    def pids(self) -> set[int]:
        try:
            tree = psutil.Process(self.process.pid)
            return {self.process.pid, *(c.pid for c in tree.children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()

    def live(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"a delivering process exited ({self.process.returncode}): {self.log}"
            )
        if self.entry != "control-plane":
            return READY in self.log.read_text(errors="replace")
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/health/live", timeout=2).is_success
        except httpx.TransportError:
            return False

    def kill(self) -> set[int]:
        """SIGKILL the whole tree; the pids it had."""
        pids = self.pids()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self._out.close()
        return pids

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        self._out.close()


@dataclass
class Kill:
    at: float
    # Messages the killed process held leases on (still pending): id -> lease expiry.
    orphaned: dict[str, datetime]


@dataclass
class ChaosResult:
    plan: ChaosPlan
    store: str
    seconds: float = 0.0
    pairs: int = 0
    arrivals: list[Arrival] = field(default_factory=list)
    delivered_pairs: int = 0
    kills: list[Kill] = field(default_factory=list)
    # Store state at the end.
    messages: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    # Orphans (leased by a killed process) attempted again at or after their lease expiry.
    orphans_retried_after_expiry: int = 0
    starts: list[float] = field(default_factory=list)
    # Lines the delivering processes logged at level error (a crashed attempt, a failed
    # claim): each is a promise broken quietly, e.g. a deadlock that left attempts
    # unrecorded until their leases expired.
    errors: list[str] = field(default_factory=list)
    # Orphans with no attempt after their lease expiry: id -> (expiry, attempt times).
    orphans_not_retried: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        answers = Counter(a.answer for a in self.arrivals)
        ok_by_pair = Counter((a.endpoint, a.event_id) for a in self.arrivals if a.answer == "ok")
        ids_by_pair: dict[tuple[int, int], set[str]] = defaultdict(set)
        for a in self.arrivals:
            ids_by_pair[(a.endpoint, a.event_id)].add(a.webhook_id)
        return {
            "store": self.store,
            "events": self.plan.events,
            "endpoints": self.plan.endpoints,
            "delivering_processes": self.plan.processes,
            "entry": self.plan.entry,
            "kills": len(self.kills),
            "pairs": self.pairs,
            "pairs_delivered_2xx": self.delivered_pairs,
            "requests": len(self.arrivals),
            "answers": dict(answers),
            "pairs_with_duplicate_2xx": sum(1 for n in ok_by_pair.values() if n > 1),
            "pairs_with_more_than_one_webhook_id": sum(
                1 for ids in ids_by_pair.values() if len(ids) > 1
            ),
            "bad_signatures": sum(1 for a in self.arrivals if not a.verified),
            "messages": self.messages,
            "message_statuses": self.statuses,
            "attempts_recorded": self.attempts,
            "leases_orphaned_by_kills": [len(k.orphaned) for k in self.kills],
            "orphans_retried_after_lease_expiry": self.orphans_retried_after_expiry,
            "plane_start_seconds": [round(s, 2) for s in self.starts],
            "errors_logged": len(self.errors),
            "seconds": round(self.seconds, 2),
        }

    def check(self) -> list[str]:
        """Every broken promise, in words (empty: none)."""
        s = self.summary()
        problems = []
        if s["pairs_delivered_2xx"] != self.pairs:
            problems.append(f"{self.pairs - s['pairs_delivered_2xx']} pairs never answered 2xx")
        if s["pairs_with_more_than_one_webhook_id"]:
            problems.append(f"{s['pairs_with_more_than_one_webhook_id']} pairs had two ids")
        if s["bad_signatures"]:
            problems.append(f"{s['bad_signatures']} requests failed standardwebhooks verification")
        if self.messages != self.pairs or self.statuses != {"delivered": self.pairs}:
            problems.append(f"{self.messages} messages for {self.pairs} pairs: {self.statuses}")
        if self.errors:
            problems.append(
                f"the delivering processes logged {len(self.errors)} errors: {self.errors[0]}"
            )
        if len(self.kills) != self.plan.kills:
            problems.append(f"{len(self.kills)} kills, not {self.plan.kills}")
        # A message can be orphaned twice (taken over, then its new holder killed too).
        orphans = len({i for k in self.kills for i in k.orphaned})
        if orphans == 0:
            problems.append("no kill left a lease behind: the lease-expiry path was not exercised")
        if self.orphans_retried_after_expiry != orphans:
            problems.append(
                f"of {orphans} messages leased by killed processes, "
                f"{self.orphans_retried_after_expiry} were retried after their lease expired: "
                f"{dict(list(self.orphans_not_retried.items())[:3])}"
            )
        return problems


class ChaosRun:
    def __init__(self, plan: ChaosPlan, database_url: str, workdir: Path) -> None:
        self.plan = plan
        self.database_url = database_url
        self.workdir = workdir
        self.receivers = ChaosReceivers(plan)
        self.planes: list[Plane | None] = [None] * plan.processes
        self._host = socket.gethostname()
        self._starts: int = 0

    async def _store(self) -> tuple[AsyncEngine, ServerSecret]:
        await upgrade_to_head(self.database_url)
        engine = create_engine(self.database_url)
        # The planes inherit the deployment secret from this environment.
        server = load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], self.workdir / "unused")
        return engine, server

    def _plane(self, slot: int) -> Plane:
        self._starts += 1
        plane = Plane(
            self.plan.entry,
            self.plan.env(self.database_url),
            self.workdir / f"plane-{slot}-{self._starts}.log",
        )
        self.planes[slot] = plane
        return plane

    async def _await_live(self, plane: Plane, result: ChaosResult) -> None:
        deadline = time.monotonic() + 120
        while not await asyncio.to_thread(plane.live):
            if time.monotonic() > deadline:
                raise TimeoutError(f"a control plane did not start: {plane.log}")
            await asyncio.sleep(0.05)  # polling a starting process, with a deadline
        result.starts.append(time.monotonic() - plane.started)

    async def _leased_by(self, engine: AsyncEngine, pids: set[int]) -> dict[str, datetime]:
        """Pending messages whose lease is held by one of `pids` (owner `host:pid:…`)."""
        owners = [M.lease_owner.like(f"{self._host}:{pid}:%") for pid in pids]
        if not owners:
            return {}
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(M.id, M.lease_expires_at).where(M.status == "pending", or_(*owners))
            )
            return {row.id: row.lease_expires_at for row in rows}

    async def _record_events(self, engine: AsyncEngine) -> None:
        data = sample(EventType.KEY_REVOKED)
        left = self.plan.events
        while left:
            n = min(self.plan.batch, left)
            async with write_transaction(engine) as conn:
                for _ in range(n):
                    await record_event(conn, EventType.KEY_REVOKED, "key:chaos", data)
            left -= n
            await asyncio.sleep(0)

    async def run(self) -> ChaosResult:
        plan = self.plan
        store = "postgresql" if self.database_url.startswith("postgresql") else "sqlite"
        result = ChaosResult(plan, store, pairs=plan.events * plan.endpoints)
        engine, server = await self._store()
        self.receivers.start()
        began = time.monotonic()
        try:
            now = datetime.now(UTC)
            async with write_transaction(engine) as conn:
                for n in range(plan.endpoints):
                    _, secret = await create_endpoint(
                        conn,
                        server,
                        NewEndpoint(
                            self.receivers.url(n), ["key.revoked"], max_concurrency=plan.concurrency
                        ),
                        now,
                    )
                    self.receivers.secrets[n] = secret
            starting = [
                asyncio.create_task(self._await_live(self._plane(slot), result))
                for slot in range(plan.processes)
            ]
            await self._record_events(engine)
            await asyncio.gather(*starting)
            deadline = began + plan.deadline
            for k in range(plan.kills):
                slot = k % plan.processes
                await self._kill_when_busy(
                    engine, slot, (k + 1) / (plan.kills + 1), result, deadline
                )
                starting.append(asyncio.create_task(self._await_live(self._plane(slot), result)))
            await asyncio.gather(*starting)
            await self._until_all_delivered(engine, result, deadline)
            result.seconds = time.monotonic() - began
        finally:
            for plane in self.planes:
                if plane is not None:
                    await asyncio.to_thread(plane.stop)
            self.receivers.stop()
        await self._read_store(engine, result)
        for log in sorted(self.workdir.glob("plane-*.log")):
            result.errors += [
                line[:300]
                for line in log.read_text(errors="replace").splitlines()
                if '"level": "error"' in line or "Traceback" in line
            ]
        await engine.dispose()
        result.arrivals = list(self.receivers.arrivals)
        result.delivered_pairs = len(self.receivers.delivered)
        return result

    async def _kill_when_busy(
        self, engine: AsyncEngine, slot: int, share: float, result: ChaosResult, deadline: float
    ) -> None:
        """Once `share` of the pairs are delivered, SIGKILL the plane in `slot` at a moment
        it holds leases."""
        plane = self.planes[slot]
        assert plane is not None
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"kill {len(result.kills) + 1}: never busy at {share:.0%}")
            if len(self.receivers.delivered) >= share * result.pairs:
                pids = plane.pids()
                if await self._leased_by(engine, pids):
                    killed = await asyncio.to_thread(plane.kill)
                    orphaned = await self._leased_by(engine, killed)
                    result.kills.append(Kill(time.monotonic(), orphaned))
                    return
            await asyncio.sleep(0.01)  # polling the store for a moment to kill, with a deadline

    async def _until_all_delivered(
        self, engine: AsyncEngine, result: ChaosResult, deadline: float
    ) -> None:
        while True:
            async with engine.connect() as conn:
                pending = (
                    await conn.execute(
                        select(func.count()).select_from(M).where(M.status != "delivered")
                    )
                ).scalar_one()
                total = (await conn.execute(select(func.count()).select_from(M))).scalar_one()
            if total == result.pairs and pending == 0:
                return
            if time.monotonic() > deadline:
                return  # check() names what is missing
            await asyncio.sleep(0.1)  # polling the store with a deadline

    async def _read_store(self, engine: AsyncEngine, result: ChaosResult) -> None:
        async with engine.connect() as conn:
            statuses = await conn.execute(select(M.status, func.count()).group_by(M.status))
            result.statuses = {status: int(n) for status, n in statuses}
            result.messages = sum(result.statuses.values())
            result.attempts = int(
                (await conn.execute(select(func.count()).select_from(A))).scalar_one()
            )
            orphans = {i: exp for k in result.kills for i, exp in k.orphaned.items()}
            attempted: dict[str, list[datetime]] = defaultdict(list)
            ids = list(orphans)
            for start in range(0, len(ids), 500):
                rows = await conn.execute(
                    select(A.message_id, A.attempted_at).where(
                        A.message_id.in_(ids[start : start + 500])
                    )
                )
                for row in rows:
                    attempted[row.message_id].append(row.attempted_at)
            later = {
                i for i, expiry in orphans.items() if max(attempted[i], default=expiry) > expiry
            }
            result.orphans_retried_after_expiry = len(later)
            result.orphans_not_retried = {
                i: (orphans[i].isoformat(), sorted(t.isoformat() for t in attempted[i]))
                for i in set(orphans) - later
            }
