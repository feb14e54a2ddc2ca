"""Quota usage of a consumer or an API key: used, remaining and when each quota resets.
The operations, and what the numbers mean with and without Redis, are
`services.usage` (permission: `credentials:read`)."""

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
