"""Dashboard sign-in and sign-out: admin users by email and password.

The password check is `AuthService.check_password`, with the same store-backed,
atomic lockout as `POST /admin/v1/auth/login` (per account and per client address).
A successful sign-in ends the browser's previous session and opens a new one (new
token, new CSRF token: no session fixation).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portcullis.services.admin_auth import InvalidCredentials, LoginLocked
from portcullis.web.dashboard.access import auth_service, signed_in
from portcullis.web.sessions import (
    clear_session_cookie,
    session_token,
    set_session_cookie,
    web_app_of,
)
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)


def safe_next(request: Request, value: str | None) -> str:
    """Where to go after sign-in: a path inside this application, else its home."""
    root = web_app_of(request).root
    if value and value.startswith(root + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return root + "/"


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
    auth = auth_service(request)
    client = request.client.host if request.client else None
    target = safe_next(request, next)
    headers: dict[str, str] = {}
    try:
        user = await auth.check_password(email, password, client)
    except LoginLocked as exc:
        error, status = f"Too many failed sign-ins. Try again in {exc.retry_after} s.", 429
        headers["Retry-After"] = str(exc.retry_after)
    except InvalidCredentials:
        error, status = "Wrong email or password.", 401
    else:
        web = web_app_of(request)
        sessions = web.sessions()
        await sessions.delete(session_token(request))
        new = await sessions.create("admin", user.id, client_ip=client)
        response = RedirectResponse(target, status_code=303)
        set_session_cookie(request, response, new.token)
        response.delete_cookie(f"{web.cookie}_csrf", path=web.root)
        return response
    context = {"next": target, "error": error, "email": email}
    return render(request, "dashboard/login.html", context, status_code=status, headers=headers)


@router.post("/logout")
async def logout(request: Request) -> Response:
    web = web_app_of(request)
    await web.sessions().delete(session_token(request))
    response = RedirectResponse(web.login_path, status_code=303)
    clear_session_cookie(request, response)
    return response
