"""Dashboard sign-in and sign-out: admin users by email and password.

The password check is `AdminAccessService.sign_in`: the same store-backed, atomic
lockout (per account and per client address) and the same audit events (`login`,
`login_failed`) as `POST /admin/v1/auth/login`.
A successful sign-in ends the browser's previous session and opens a new one (new
token, new CSRF token: no session fixation).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portcullis.services.admin_users import AdminAccessService
from portcullis.services.errors import ServiceError
from portcullis.web.dashboard.access import admin_state, auth_service, request_facts, signed_in
from portcullis.web.sessions import (
    safe_next,
    session_token,
    set_session_cookie,
    sign_out,
    web_app_of,
)
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    if await signed_in(request) is not None:
        return RedirectResponse(safe_next(request, next), status_code=303)
    return render(
        request,
        "dashboard/login.html",
        {"next": safe_next(request, next), "error": None, "email": ""},
    )


@router.post("/login")
async def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=2048)] = "",
) -> Response:
    access = AdminAccessService(auth_service(request), admin_state(request).audit)
    facts = request_facts(request)
    target = safe_next(request, next)
    headers: dict[str, str] = {}
    try:
        user = await access.sign_in(facts, email, password)
    except ServiceError as exc:
        if exc.kind.status == 429:
            wait = exc.headers.get("Retry-After", "a few")
            error, status = f"Too many failed sign-ins. Try again in {wait} s.", 429
        else:
            error, status = "Wrong email or password.", 401
        headers.update(exc.headers)
    else:
        web = web_app_of(request)
        sessions = web.sessions()
        await sessions.delete(session_token(request))
        new = await sessions.create("admin", user.id, client_ip=facts.client_ip)
        response = RedirectResponse(target, status_code=303)
        set_session_cookie(request, response, new.token)
        response.delete_cookie(f"{web.cookie}_csrf", path=web.root)
        return response
    context = {"next": target, "error": error, "email": email}
    return render(request, "dashboard/login.html", context, status_code=status, headers=headers)


@router.post("/logout")
async def logout(request: Request) -> Response:
    return await sign_out(request)
