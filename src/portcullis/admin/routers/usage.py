"""Quota usage of a consumer or an API key: used, remaining and when each quota resets.

The operations are `services.usage.UsageService`; what the numbers mean:

With Redis (`PORTCULLIS_REDIS_URL`) the numbers are read from the same counters
the `plan-limits` plugin decides on, without changing them (`LimitBackend.peek`):
every gateway node shares them, the control plane reads them exactly, and the
response says `counters: "shared"`.

Without Redis each data-plane worker counts quotas in its own memory and enforces
each quota on its own (a consumer can get up to the limit *per worker*). Workers
publish their counts to the store every 2 s and when they stop
(`limits/quota_usage.py`); the response then says `counters: "per_worker"`:
`used` is the sum over workers (stopped ones included: their requests were served
this period), up to about 2 s behind; `remaining` is `limit - used`, what is left
of the plan's allowance (the gateway may still admit requests when it is 0, until
the worker they reach has counted `limit` itself); `busiest_worker_used` is the
highest count of one live worker (the one that will refuse first) and
`live_workers` how many live workers count this quota. For exact quotas across
workers and nodes, use Redis.

The limit shown is the one in force now: an active override or boost changes it.
The consumer's usage lists the plan's quotas counted per consumer (a quota counted
per credential is per key: see the key's usage); a key's usage lists both kinds.
Permission: `credentials:read`, as for the key metadata next to it (usage tells
who calls how much, like a key's `last_used_at`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from portcullis.admin.operations import admin_state, operation
from portcullis.admin.problems import problem_responses
from portcullis.services.context import Operation
from portcullis.services.rbac import Permission
from portcullis.services.usage import QuotaUsageOut, UsageService

router = APIRouter(tags=["Usage"])
_ERRORS = problem_responses(401, 403, 404, 429, 503)


def _service(request: Request) -> UsageService:
    state = admin_state(request)
    return UsageService(state.engine, state.secret, state.editor, state.settings)


@router.get(
    "/consumers/{username}/usage",
    summary="A consumer's quota usage: used, remaining and reset time per quota",
    response_model=QuotaUsageOut,
    responses=_ERRORS,
    operation_id="get_consumer_quota_usage",
)
async def consumer_usage(
    request: Request,
    username: str,
    op: Operation = Depends(operation(Permission.CREDENTIALS_READ)),
) -> QuotaUsageOut:
    return await _service(request).of_consumer(op, username)


@router.get(
    "/keys/{key_id}/usage",
    summary="An API key's quota usage (its own quotas and its consumer's)",
    response_model=QuotaUsageOut,
    responses=_ERRORS,
    operation_id="get_api_key_quota_usage",
)
async def key_usage(
    request: Request,
    key_id: str,
    op: Operation = Depends(operation(Permission.CREDENTIALS_READ)),
) -> QuotaUsageOut:
    return await _service(request).of_key(op, key_id)
