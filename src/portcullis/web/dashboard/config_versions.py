"""Config versions in the dashboard: the history, any two versions side by side, and a
rollback behind a confirmation step.

The pages call `ConfigService` (the REST API's `/config/versions` and `/config/rollback`
operations, with the same refusal for organization-limited admins). A rollback is two
steps: the version page links to a confirmation page showing what the rollback would
change against the current config; only its POST, carrying `confirm=yes` and the ETag of
the config it showed (If-Match), rolls back. A POST without them, or one whose ETag no
longer matches because the config changed meanwhile, shows the confirmation again.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portcullis.services.config import ConfigService
from portcullis.services.context import Operation
from portcullis.services.errors import ServiceError
from portcullis.services.rbac import Permission
from portcullis.web.dashboard.access import admin_state, operation
from portcullis.web.dashboard.manage import can_write, form_data, one
from portcullis.web.dashboard.version_diff import VersionDiff, version_diff
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)
read = operation(Permission.CONFIG_READ)
write = operation(Permission.CONFIG_WRITE)
PAGE_SIZE = 25


def config_service(request: Request) -> ConfigService:
    return ConfigService(admin_state(request).editor)


def _refused(exc: ServiceError) -> HTTPException:
    return HTTPException(exc.kind.status, exc.detail)


async def _document(service: ConfigService, op: Operation, version: int) -> dict[str, Any]:
    """The canonical document of a stored version (version 0: the empty config)."""
    if version == 0:
        return {}
    try:
        document: dict[str, Any] = (await service.version(op, version)).config.canonical()
    except ServiceError as exc:
        raise _refused(exc) from None
    return document


@router.get("/config/versions")
async def versions_page(
    request: Request, cursor: str | None = None, op: Operation = Depends(read)
) -> Response:
    service = config_service(request)
    try:
        rows = await service.versions(op, PAGE_SIZE + 1, cursor)
        current = await service.export(op)
    except ServiceError as exc:
        raise _refused(exc) from None
    next_url = None
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        next_url = "?" + urlencode({"cursor": str(rows[-1].version)})
    context = {
        "title": "Config versions",
        "rows": rows,
        "current": current.version,
        "next_url": next_url,
        "rolled_back": request.query_params.get("rolled_back"),
    }
    return render(request, "dashboard/config/versions.html", context)


@router.get("/config/versions/{version}")
async def version_page(
    request: Request, version: int, against: int | None = None, op: Operation = Depends(read)
) -> Response:
    service = config_service(request)
    old_version = version - 1 if against is None else against
    if version < 1 or old_version < 0:
        raise HTTPException(404, "there is no such version")
    new = await _document(service, op, version)
    old = await _document(service, op, old_version)
    view = version_diff(old, new, old_version=old_version, new_version=version)
    current = (await service.export(op)).version
    context = {
        "title": f"Config version {version}",
        "version": version,
        "view": view,
        "current": current,
        "can_write": can_write(request),
    }
    return render(request, "dashboard/config/version.html", context)


async def _confirmation(
    request: Request,
    op: Operation,
    version: int,
    *,
    status: int = 200,
    notice: str | None = None,
) -> Response:
    service = config_service(request)
    target = await _document(service, op, version)
    try:
        current = await service.export(op)
    except ServiceError as exc:
        raise _refused(exc) from None
    view: VersionDiff = version_diff(
        current.config.canonical(), target, old_version=current.version, new_version=version
    )
    context = {
        "title": f"Roll back to version {version}?",
        "version": version,
        "view": view,
        "current": current.version,
        "etag": current.etag,
        "notice": notice,
    }
    return render(request, "dashboard/config/rollback.html", context, status_code=status)


@router.get("/config/versions/{version}/rollback")
async def confirm_rollback(
    request: Request, version: int, op: Operation = Depends(write)
) -> Response:
    return await _confirmation(request, op, version)


@router.post("/config/versions/{version}/rollback")
async def rollback(request: Request, version: int, op: Operation = Depends(write)) -> Response:
    data = form_data(await request.form())
    confirmed = one(data, "confirm") == "yes"
    etag = one(data, "etag")
    if not confirmed or not etag:
        return await _confirmation(
            request, op, version, status=400, notice="Confirm the rollback on this page first."
        )
    try:
        stored = await config_service(request).rollback(op, version, if_match=etag)
    except ServiceError as exc:
        if exc.kind.status == 412:
            return await _confirmation(
                request,
                op,
                version,
                status=412,
                notice="The config changed since this page was shown: review the change again.",
            )
        if exc.kind.status == 422:
            detail = "; ".join(e.detail for e in exc.errors) or exc.detail or "invalid"
            return await _confirmation(request, op, version, status=422, notice=detail)
        raise _refused(exc) from None
    target = f"{request.scope.get('root_path', '')}/config/versions?" + urlencode(
        {"rolled_back": str(stored.version)}
    )
    return RedirectResponse(target, status_code=303)
