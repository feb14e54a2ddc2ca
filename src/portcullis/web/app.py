"""The two web applications, as sub-applications the control plane mounts
(admin/app.py): `/dashboard` (admins) and `/portal` (developers).

Each lists its page routers (every page module exposes `router`); adding a router to
its list is the one edit a new page makes here. Every route of both applications
goes through `csrf_protect`, and every response gets the web security headers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from portcullis.services.web_sessions import DASHBOARD_COOKIE
from portcullis.web.csrf import CsrfRefused, csrf_protect
from portcullis.web.errors import LoginRequired, PageForbidden
from portcullis.web.security import WebSecurityHeaders
from portcullis.web.sessions import WebApp, clear_session_cookie, current_session
from portcullis.web.templating import STATIC, is_htmx, render

# Page modules of each application (each has `router`), in the order they are matched.
DASHBOARD_ROUTERS: tuple[str, ...] = (
    "portcullis.web.dashboard.login",
    "portcullis.web.dashboard.home",
    "portcullis.web.dashboard.live",
    "portcullis.web.dashboard.inspector",
    # Management (helper "dashmanage", decision 036): entities, config versions, audit log.
    "portcullis.web.dashboard.manage",
    "portcullis.web.dashboard.config_versions",
    "portcullis.web.dashboard.audit",
    "portcullis.web.dashboard.credentials",
    "portcullis.web.dashboard.approvals",
)
PORTAL_ROUTERS: tuple[str, ...] = (
    "portcullis.web.portal.home",
    "portcullis.web.portal.account",
    "portcullis.web.portal.apps",
    # The API pages (helper "portalapi", decision 037).
    "portcullis.web.portal.catalogue",
    "portcullis.web.portal.tryit",
    "portcullis.web.portal.usage",
    "portcullis.web.portal.webhooks",
    "portcullis.web.portal.inspector",
)


class _WebApplication(FastAPI):
    """A FastAPI application whose security headers wrap its whole middleware stack,
    Starlette's ServerErrorMiddleware included: an unhandled error's 500 gets the CSP,
    framing refusal and no-store too (as `add_middleware` they would sit inside it)."""

    def build_middleware_stack(self) -> ASGIApp:
        return WebSecurityHeaders(super().build_middleware_stack())


def _build(web: WebApp, routers: tuple[str, ...]) -> FastAPI:
    app = _WebApplication(
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(csrf_protect)],
    )
    app.state.web = web
    for module in routers:
        router: APIRouter = importlib.import_module(module).router
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(PageForbidden, _forbidden)
    app.add_exception_handler(HTTPException, _http_error)
    return app


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CsrfRefused)
    web: WebApp = request.app.state.web
    if request.url.path == f"{web.root}/logout" and await current_session(request) is None:
        # Signing out of a session that already ended (its page outlived it): nothing
        # to protect, so no error page; the stale cookie goes.
        response = RedirectResponse(web.login_path, status_code=303)
        clear_session_cookie(request, response)
        return response
    context = {"title": "Request refused", "status": 403, "detail": exc.reason}
    return render(request, "error.html", context, status_code=403)


async def _forbidden(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageForbidden)
    context = {"title": "Not allowed", "status": 403, "detail": exc.detail}
    return render(request, "error.html", context, status_code=403)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    title = "Page not found" if exc.status_code == 404 else "Request failed"
    context = {"title": title, "status": exc.status_code, "detail": str(exc.detail)}
    return render(request, "error.html", context, status_code=exc.status_code)


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    web: WebApp = request.app.state.web
    target = web.login_path
    if exc.next_path:
        target += "?" + urlencode({"next": exc.next_path})
    if is_htmx(request):  # a partial swap would put the login page inside the page
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def build_web_apps(services: Callable[[str], Any]) -> dict[str, FastAPI]:
    """The applications by mount path; `services(name)` finds the control plane's shared
    objects ("admin": AdminState, "auth": AuthService, "web_sessions": WebSessions)."""
    dashboard = WebApp(
        "dashboard", "Portcullis dashboard", "/dashboard", DASHBOARD_COOKIE, "admin", services
    )
    portal = WebApp(
        "portal", "Portcullis developer portal", "/portal", "pc_portal", "developer", services
    )
    return {
        dashboard.root: _build(dashboard, DASHBOARD_ROUTERS),
        portal.root: _build(portal, PORTAL_ROUTERS),
    }
