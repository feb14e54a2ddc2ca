"""Portal applications: register one, ask for API access, and manage its credentials
(API keys per environment: create, rotate with grace, revoke; OAuth client credentials).

Pages parse a form and call `services.portal_apps.PortalApps`, which scopes every call to
the developer's teams. A new secret (a key, a client secret) is rendered once, in the
response to the POST that made it (`Cache-Control: no-store`), never stored in the
session: reloading the application's page shows only the key's prefix.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portcullis.identity.key_admin import (
    DEFAULT_GRACE_SECONDS,
    MAX_GRACE_SECONDS,
    CreatedKey,
    Rotation,
)
from portcullis.identity.oauth_clients import OAuthClient
from portcullis.services.errors import ServiceError
from portcullis.services.portal import ClientType, DeveloperContext, KeyEnvironment
from portcullis.web.portal.access import developer_context, portal_services, refusal
from portcullis.web.sessions import web_app_of
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)
NO_STORE = {"Cache-Control": "no-store"}
Name = Annotated[str, Form(max_length=200)]


async def _apps_page(
    request: Request, ctx: DeveloperContext, status: int = 200, **extra: Any
) -> Response:
    portal = portal_services(request)
    context: dict[str, Any] = {
        "title": "Applications",
        "applications": await portal.apps.list_applications(ctx),
        "teams": await portal.accounts.teams(ctx),
        "client_types": [c.value for c in ClientType],
        "developer": ctx.developer,
        "error": None,
        "field_errors": {},
        "form": {},
        **extra,
    }
    return render(request, "portal/apps.html", context, status_code=status)


@router.get("/apps")
async def applications(
    request: Request, ctx: DeveloperContext = Depends(developer_context)
) -> Response:
    return await _apps_page(request, ctx)


@router.post("/apps")
async def create_application(
    request: Request,
    team_id: Annotated[str, Form(max_length=64)] = "",
    name: Name = "",
    description: Annotated[str, Form(max_length=4000)] = "",
    client_type: Annotated[str, Form(max_length=16)] = "server",
    ctx: DeveloperContext = Depends(developer_context),
) -> Response:
    try:
        app = await portal_services(request).apps.create_application(
            ctx, team_id, name, description=description, client_type=client_type
        )
    except ServiceError as exc:
        form = {"name": name, "description": description, "client_type": client_type}
        return await _apps_page(request, ctx, exc.kind.status, form=form, **refusal(exc))
    return RedirectResponse(f"{web_app_of(request).root}/apps/{app.id}", status_code=303)


async def _app_page(
    request: Request,
    ctx: DeveloperContext,
    application_id: str,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """The application's page (a 404 page for another team's or a missing one)."""
    apps = portal_services(request).apps
    app = await apps.get_application(ctx, application_id)
    keys, now = await apps.list_keys(ctx, app.id), ctx.now()
    context: dict[str, Any] = {
        "title": app.name,
        "app": app,
        "developer": ctx.developer,
        "requests": await apps.access_requests(ctx, app.id),
        "offers": await apps.offers(),
        "keys": {
            env.value: [k.as_json(now) for k in keys if KeyEnvironment.of(k.environment) is env]
            for env in KeyEnvironment
        },
        "clients": await apps.list_oauth_clients(ctx, app.id),
        "default_grace": DEFAULT_GRACE_SECONDS,
        "max_grace": MAX_GRACE_SECONDS,
        "error": None,
        "field_errors": {},
        "secret": None,
        **extra,
    }
    return render(request, "portal/app.html", context, status_code=status, headers=headers)


async def _app_or_404(request: Request, ctx: DeveloperContext, application_id: str) -> Response:
    try:
        return await _app_page(request, ctx, application_id)
    except ServiceError as exc:
        return _not_found(request, exc)


def _not_found(request: Request, exc: ServiceError) -> Response:
    context = {"title": "Not found", "status": exc.kind.status, "detail": exc.detail}
    return render(request, "error.html", context, status_code=exc.kind.status)


@router.get("/apps/{application_id}")
async def application(
    request: Request, application_id: str, ctx: DeveloperContext = Depends(developer_context)
) -> Response:
    return await _app_or_404(request, ctx, application_id)


Secret = dict[str, str]


async def _done(call: Awaitable[object]) -> Secret | None:
    await call
    return None


async def _new_key(call: Awaitable[CreatedKey | Rotation]) -> Secret:
    made = await call
    info = made.info if isinstance(made, CreatedKey) else made.new
    return {"kind": "API key", "label": info.name, "value": made.key}


async def _new_client_secret(call: Awaitable[tuple[OAuthClient, str]]) -> Secret:
    client, value = await call
    return {"kind": "Client secret", "label": client.client_id, "value": value}


async def _apply(
    request: Request, ctx: DeveloperContext, application_id: str, work: Awaitable[Secret | None]
) -> Response:
    """Run a change; then the page with its refusal, or with the new secret (once, not
    cached), or a redirect to the application's page."""
    try:
        secret = await work
    except ServiceError as exc:
        try:
            return await _app_page(request, ctx, application_id, exc.kind.status, **refusal(exc))
        except ServiceError as missing:
            return _not_found(request, missing)
    if secret is not None:
        return await _app_page(request, ctx, application_id, headers=NO_STORE, secret=secret)
    return RedirectResponse(f"{web_app_of(request).root}/apps/{application_id}", status_code=303)


@router.post("/apps/{application_id}/access")
async def request_access(
    request: Request,
    application_id: str,
    api: Name = "",
    plan: Name = "",
    ctx: DeveloperContext = Depends(developer_context),
) -> Response:
    apps = portal_services(request).apps
    work = _done(apps.request_access(ctx, application_id, api, plan or None))
    return await _apply(request, ctx, application_id, work)


@router.post("/apps/{application_id}/keys")
async def create_key(
    request: Request,
    application_id: str,
    environment: Annotated[str, Form(max_length=16)] = "sandbox",
    name: Name = "",
    ctx: DeveloperContext = Depends(developer_context),
) -> Response:
    apps = portal_services(request).apps
    work = _new_key(apps.create_key(ctx, application_id, environment, name))
    return await _apply(request, ctx, application_id, work)


@router.post("/apps/{application_id}/keys/{key_id}/rotate")
async def rotate_key(
    request: Request,
    application_id: str,
    key_id: str,
    grace_seconds: Annotated[int, Form(ge=0, le=MAX_GRACE_SECONDS)] = DEFAULT_GRACE_SECONDS,
    ctx: DeveloperContext = Depends(developer_context),
) -> Response:
    apps = portal_services(request).apps
    rotated = apps.rotate_key(ctx, application_id, key_id, grace_seconds=grace_seconds)
    return await _apply(request, ctx, application_id, _new_key(rotated))


@router.post("/apps/{application_id}/keys/{key_id}/revoke")
async def revoke_key(
    request: Request,
    application_id: str,
    key_id: str,
    ctx: DeveloperContext = Depends(developer_context),
) -> Response:
    apps = portal_services(request).apps
    work = _done(apps.revoke_key(ctx, application_id, key_id))
    return await _apply(request, ctx, application_id, work)


@router.post("/apps/{application_id}/oauth-clients")
async def create_oauth_client(
    request: Request,
    application_id: str,
    name: Name = "",
    ctx: DeveloperContext = Depends(developer_context),
) -> Response:
    apps = portal_services(request).apps
    work = _new_client_secret(apps.create_oauth_client(ctx, application_id, name))
    return await _apply(request, ctx, application_id, work)


@router.post("/apps/{application_id}/oauth-clients/{client_id}/rotate")
async def rotate_oauth_secret(
    request: Request,
    application_id: str,
    client_id: str,
    ctx: DeveloperContext = Depends(developer_context),
) -> Response:
    apps = portal_services(request).apps
    work = _new_client_secret(apps.rotate_oauth_secret(ctx, application_id, client_id))
    return await _apply(request, ctx, application_id, work)


@router.post("/apps/{application_id}/oauth-clients/{client_id}/delete")
async def delete_oauth_client(
    request: Request,
    application_id: str,
    client_id: str,
    ctx: DeveloperContext = Depends(developer_context),
) -> Response:
    apps = portal_services(request).apps
    work = _done(apps.delete_oauth_client(ctx, application_id, client_id))
    return await _apply(request, ctx, application_id, work)
