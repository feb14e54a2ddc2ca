"""Portal accounts: sign-up, sign-in, sign-out, the email verification link, the outbox
view of the embedded mail sender, and teams with their members.

Every page parses a form, calls `services.portal_accounts.PortalAccounts`, renders. The
password check is the portal's store-backed lockout (services/login_throttle.py). A
sign-in (or sign-up) ends the browser's previous session and opens a new one (new token,
new CSRF token: no session fixation). The verification link opens a page whose button
spends the token (a POST), so a mail scanner fetching the link does not use it up.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portcullis.services.errors import ServiceError
from portcullis.services.portal import DeveloperContext, TeamRole
from portcullis.services.portal_mail import OutboxMailSender
from portcullis.web import sessions
from portcullis.web.errors import LoginRequired
from portcullis.web.portal.access import (
    admin_state,
    developer_context,
    facts_of,
    portal_services,
    refusal,
    signed_in_developer,
)
from portcullis.web.sessions import (
    session_token,
    set_session_cookie,
    sign_out,
    web_app_of,
)
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Form(max_length=1024)]


def safe_next(request: Request, value: str | None) -> str:
    """After sign-in, the developer's applications unless they came from a portal page."""
    return sessions.safe_next(request, value, "/apps")


async def _start_session(request: Request, developer_id: str, target: str) -> Response:
    web = web_app_of(request)
    sessions = web.sessions()
    await sessions.delete(session_token(request))
    client = request.client.host if request.client else None
    new = await sessions.create("developer", developer_id, client_ip=client)
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(request, response, new.token)
    response.delete_cookie(f"{web.cookie}_csrf", path=web.root)
    return response


def _outbox_enabled(request: Request) -> bool:
    return bool(admin_state(request).settings.portal_outbox_view)


# ---------------------------------------------------------------------------- sign-up


@router.get("/signup")
async def signup_page(request: Request) -> Response:
    if await signed_in_developer(request) is not None:
        return RedirectResponse(web_app_of(request).root + "/apps", status_code=303)
    context: dict[str, object] = {
        "title": "Sign up",
        "error": None,
        "field_errors": {},
        "email": "",
        "name": "",
    }
    return render(request, "portal/signup.html", context)


@router.post("/signup")
async def signup(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    password: Text = "",
) -> Response:
    await signed_in_developer(request)
    accounts = portal_services(request).accounts
    try:
        developer = await accounts.sign_up(facts_of(request), email, password, name)
    except ServiceError as exc:
        context = {"title": "Sign up", "email": email, "name": name, **refusal(exc)}
        return render(request, "portal/signup.html", context, status_code=exc.kind.status)
    return await _start_session(request, developer.id, web_app_of(request).root + "/welcome")


def _welcome(
    request: Request,
    ctx: DeveloperContext,
    status: int = 200,
    *,
    error: str | None = None,
    sent: bool = False,
) -> Response:
    context = {
        "title": "Check your email",
        "developer": ctx.developer,
        "outbox": _outbox_enabled(request),
        "error": error,
        "sent": sent,
    }
    return render(request, "portal/welcome.html", context, status_code=status)


@router.get("/welcome")
async def welcome(request: Request, ctx: DeveloperContext = Depends(developer_context)) -> Response:
    return _welcome(request, ctx)


@router.post("/verify/resend")
async def resend(request: Request, ctx: DeveloperContext = Depends(developer_context)) -> Response:
    try:
        await portal_services(request).accounts.resend_verification(ctx)
    except ServiceError as exc:
        return _welcome(request, ctx, exc.kind.status, error=exc.detail, sent=False)
    return _welcome(request, ctx, sent=True)


@router.get("/verify")
async def verify_page(request: Request, token: str = "") -> Response:
    await signed_in_developer(request)  # the session's CSRF token, if there is one
    context = {"title": "Verify your email", "token": token[:128], "error": None, "done": False}
    return render(request, "portal/verify.html", context)


@router.post("/verify")
async def verify(request: Request, token: Annotated[str, Form(max_length=128)] = "") -> Response:
    await signed_in_developer(request)
    accounts = portal_services(request).accounts
    context = {"title": "Verify your email", "token": token, "error": None, "done": True}
    try:
        await accounts.verify_email(facts_of(request), token)
    except ServiceError as exc:
        context |= {"error": exc.detail, "done": False}
        return render(request, "portal/verify.html", context, status_code=exc.kind.status)
    return render(request, "portal/verify.html", context)


# ---------------------------------------------------------------------------- sign-in


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    if await signed_in_developer(request) is not None:
        return RedirectResponse(safe_next(request, next), status_code=303)
    context = {"title": "Sign in", "next": safe_next(request, next), "error": None, "email": ""}
    return render(request, "portal/login.html", context)


@router.post("/login")
async def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Text = "",
    next: Annotated[str, Form(max_length=2048)] = "",
) -> Response:
    target = safe_next(request, next)
    await signed_in_developer(request)
    try:
        developer = await portal_services(request).accounts.login(
            facts_of(request), email, password
        )
    except ServiceError as exc:
        context = {"title": "Sign in", "next": target, "email": email, "error": exc.detail}
        return render(
            request,
            "portal/login.html",
            context,
            status_code=exc.kind.status,
            headers=dict(exc.headers),
        )
    return await _start_session(request, developer.id, target)


@router.post("/logout")
async def logout(request: Request) -> Response:
    return await sign_out(request)


# ---------------------------------------------------------------------------- outbox


@router.get("/outbox")
async def outbox(request: Request) -> Response:
    """The embedded mail sender's messages to the signed-in developer (only when
    `portal_outbox_view` is on). Only their own: another developer's mail holds their
    verification link, so a global outbox would let anyone verify any address."""
    sender = portal_services(request).mail
    if not _outbox_enabled(request) or not isinstance(sender, OutboxMailSender):
        raise HTTPException(404, "the outbox view is off (PORTCULLIS_PORTAL_OUTBOX_VIEW)")
    developer = await signed_in_developer(request)
    if developer is None:
        raise LoginRequired(request.url.path)
    messages = await sender.messages(recipient=developer.email, limit=50)
    prefix = str(request.base_url).rstrip("/") + web_app_of(request).root + "/verify?token="
    rendered = [
        {
            "message": m,
            "links": [w for w in m.body.split() if w.startswith(("http://", "https://"))],
        }
        for m in messages
    ]
    context = {"title": "Outbox", "messages": rendered, "verify_prefix": prefix}
    return render(request, "portal/outbox.html", context)


# ---------------------------------------------------------------------------- teams


async def _teams_page(
    request: Request, ctx: DeveloperContext, status: int = 200, **extra: object
) -> Response:
    accounts = portal_services(request).accounts
    teams = await accounts.teams(ctx)
    members = {t.id: await accounts.members(ctx, t.id) for t in teams}
    context = {
        "title": "Teams",
        "teams": teams,
        "members": members,
        "roles": [r.value for r in TeamRole],
        "error": None,
        "field_errors": {},
        **extra,
    }
    return render(request, "portal/teams.html", context, status_code=status)


@router.get("/teams")
async def teams(request: Request, ctx: DeveloperContext = Depends(developer_context)) -> Response:
    return await _teams_page(request, ctx)


@router.post("/teams")
async def create_team(
    request: Request,
    name: Annotated[str, Form(max_length=200)] = "",
    ctx: DeveloperContext = Depends(developer_context),
) -> Response:
    try:
        await portal_services(request).accounts.create_team(ctx, name)
    except ServiceError as exc:
        return await _teams_page(request, ctx, exc.kind.status, **refusal(exc))
    return RedirectResponse(web_app_of(request).root + "/teams", status_code=303)


@router.post("/teams/{team_id}/members")
async def add_member(
    request: Request,
    team_id: str,
    email: Annotated[str, Form(max_length=320)] = "",
    role: Annotated[str, Form(max_length=16)] = "member",
    ctx: DeveloperContext = Depends(developer_context),
) -> Response:
    try:
        team_role = TeamRole(role) if role in TeamRole.__members__ else TeamRole.member
        await portal_services(request).accounts.add_member(ctx, team_id, email, team_role)
    except ServiceError as exc:
        return await _teams_page(request, ctx, exc.kind.status, **refusal(exc))
    return RedirectResponse(web_app_of(request).root + "/teams", status_code=303)


@router.post("/teams/{team_id}/members/{developer_id}/remove")
async def remove_member(
    request: Request,
    team_id: str,
    developer_id: str,
    ctx: DeveloperContext = Depends(developer_context),
) -> Response:
    try:
        await portal_services(request).accounts.remove_member(ctx, team_id, developer_id)
    except ServiceError as exc:
        return await _teams_page(request, ctx, exc.kind.status, **refusal(exc))
    return RedirectResponse(web_app_of(request).root + "/teams", status_code=303)
