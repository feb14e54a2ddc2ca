"""The portal's pages over HTTP on the in-process control plane: sign-up, the outbox and
the verification link, an application with an automatic approval, a key shown once
(never again on reload), and the IDOR matrix over every portal URL that names another
team's team, application, key or client (404 and nothing changed). Also the dashboard's
approvals page."""

from __future__ import annotations

import re

import httpx
from admin_support import PASSWORD as ADMIN_PASSWORD
from fastapi import FastAPI
from sqlalchemy import select

from portcullis.services.context import RequestFacts
from portcullis.services.portal import DeveloperContext
from portcullis.services.rbac import Role
from portcullis.store.identity_tables import ApiKeyRow, OAuthClientRow
from portcullis.store.portal_tables import AccessRequestRow, ApplicationRow, TeamMemberRow
from support.web import form_token

CATALOGUE = {
    "apis": [
        {"name": "petstore", "versions": [{"name": "v1"}], "access": {"approval": "automatic"}},
        {"name": "billing", "versions": [{"name": "v1"}], "access": {"approval": "manual"}},
    ]
}
PASSWORD = "a long enough password"
ORIGIN = {"origin": "http://admin"}


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.20", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://admin", headers=ORIGIN)


async def _post(client: httpx.AsyncClient, page: str, path: str, **data: str) -> httpx.Response:
    """Submit a form of `page` (its CSRF token) to `path`."""
    html = (await client.get(page)).text
    return await client.post(path, data={"csrf_token": form_token(html), **data})


async def _sign_up_verified(app: FastAPI, email: str) -> httpx.AsyncClient:
    client = _client(app)
    signed = await _post(
        client, "/portal/signup", "/portal/signup", email=email, name="Dev", password=PASSWORD
    )
    assert signed.status_code == 303, signed.text
    # Sign-up just mailed a link: another one only after a minute.
    again = await _post(client, "/portal/welcome", "/portal/verify/resend")
    assert again.status_code == 429
    assert "ask again in" in again.text
    outbox = await client.get("/portal/outbox")
    assert outbox.status_code == 200
    link = re.search(r'href="(http://[^"]+/portal/verify\?token=[^"]+)"', outbox.text)
    assert link is not None, outbox.text
    token = link.group(1).split("token=")[1]
    page = await client.get(f"/portal/verify?token={token}")
    done = await client.post(
        "/portal/verify", data={"csrf_token": form_token(page.text), "token": token}
    )
    assert "is verified" in done.text, done.text
    return client


async def _app_of(client: httpx.AsyncClient, name: str) -> str:
    apps = await client.get("/portal/apps")
    made = await _post(client, "/portal/apps", "/portal/apps", name=name, team_id=_team(apps.text))
    assert made.status_code == 303, made.text
    return made.headers["location"].rsplit("/", 1)[1]


def _team(html: str) -> str:
    found = re.search(r'<select id="team" name="team_id"><option value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


async def _snapshot(app: FastAPI) -> list[object]:
    out: list[object] = []
    async with app.state.admin.engine.connect() as conn:
        for table in (ApplicationRow, AccessRequestRow, TeamMemberRow, ApiKeyRow, OAuthClientRow):
            out.append(sorted(map(str, (await conn.execute(select(table))).all())))
    out.append((await app.state.admin.editor.state()).version)
    return out


async def test_portal_journey_and_idor_matrix(owner: httpx.AsyncClient, app: FastAPI) -> None:
    anonymous = _client(app)
    assert (await anonymous.get("/portal/outbox")).status_code == 404  # off unless asked for
    await anonymous.aclose()
    app.state.admin.settings.portal_outbox_view = True
    assert (await owner.put("/admin/v1/config", json=CATALOGUE)).status_code == 200
    anonymous = _client(app)  # the outbox is a developer's own: sign in first
    assert (await anonymous.get("/portal/outbox")).status_code == 303
    await anonymous.aclose()
    a = await _sign_up_verified(app, "a@example.com")
    b = await _sign_up_verified(app, "b@example.com")
    # b's outbox never shows a's mail (a's verification link would verify a's address)
    b_outbox = (await b.get("/portal/outbox")).text
    assert "b@example.com" in b_outbox
    assert "a@example.com" not in b_outbox
    app_a = await _app_of(a, "a-app")
    page_a = f"/portal/apps/{app_a}"
    asked = await _post(a, page_a, f"{page_a}/access", api="petstore")
    assert asked.status_code == 303, asked.text
    made = await _post(a, page_a, f"{page_a}/keys", environment="sandbox", name="ci")
    assert made.status_code == 200, made.text
    assert made.headers["cache-control"] == "no-store"
    key = re.search(r'id="new-secret" readonly value="(pc_dev_[^"]+)"', made.text)
    assert key is not None, made.text
    again = await a.get(page_a)
    assert key.group(1) not in again.text
    assert "_".join(key.group(1).split("_")[:3]) in again.text  # the display prefix is listed
    key_id = re.search(rf"{page_a}/keys/([^/]+)/revoke", again.text)
    assert key_id is not None
    rotated = await _post(a, page_a, f"{page_a}/keys/{key_id.group(1)}/rotate", grace_seconds="60")
    successor = re.search(r'id="new-secret" readonly value="(pc_dev_[^"]+)"', rotated.text)
    assert successor is not None, rotated.text
    assert successor.group(1) != key.group(1)
    revoked = await _post(a, page_a, f"{page_a}/keys/{key_id.group(1)}/revoke")
    assert revoked.status_code == 303
    states = re.findall(r"<td>(active|grace|revoked)", (await a.get(page_a)).text)
    assert sorted(states) == ["active", "revoked"]
    client = await _post(a, page_a, f"{page_a}/oauth-clients", name="backend")
    client_id = re.search(rf"{page_a}/oauth-clients/([^/]+)/rotate", client.text)
    assert client_id is not None
    team_a = _team((await a.get("/portal/apps")).text)
    members = await a.get("/portal/teams")
    dev_a = re.search(rf"/portal/teams/{team_a}/members/([^/]+)/remove", members.text)
    assert dev_a is not None

    app_b = await _app_of(b, "b-app")
    before = await _snapshot(app)
    own = f"/portal/apps/{app_b}"
    attempts = {
        "GET app": ("GET", page_a, {}),
        "request access": ("POST", f"{page_a}/access", {"api": "billing"}),
        "create key": ("POST", f"{page_a}/keys", {"environment": "production", "name": "x"}),
        "rotate key": ("POST", f"{page_a}/keys/{key_id.group(1)}/rotate", {}),
        "revoke key": ("POST", f"{page_a}/keys/{key_id.group(1)}/revoke", {}),
        "create client": ("POST", f"{page_a}/oauth-clients", {"name": "x"}),
        "rotate client": ("POST", f"{page_a}/oauth-clients/{client_id.group(1)}/rotate", {}),
        "delete client": ("POST", f"{page_a}/oauth-clients/{client_id.group(1)}/delete", {}),
        "add member": ("POST", f"/portal/teams/{team_a}/members", {"email": "b@example.com"}),
        "remove member": ("POST", f"/portal/teams/{team_a}/members/{dev_a.group(1)}/remove", {}),
        "app in A's team": ("POST", "/portal/apps", {"team_id": team_a, "name": "intruder"}),
        "A's key via own app": ("POST", f"{own}/keys/{key_id.group(1)}/revoke", {}),
        "A's client via own app": ("POST", f"{own}/oauth-clients/{client_id.group(1)}/delete", {}),
    }
    token = form_token((await b.get("/portal/apps")).text)
    leaks = []
    for name, (method, path, data) in attempts.items():
        sent = {"csrf_token": token, **data} if method == "POST" else None
        response = await b.request(method, path, data=sent)
        # B's own application has no approved access: "no consumer yet" (409) is no leak.
        refused = (404, 409) if name.endswith("via own app") else (404,)
        if response.status_code not in refused:
            leaks.append(f"{name}: {response.status_code}")
    assert not leaks, leaks
    assert await _snapshot(app) == before
    listing = (await b.get("/portal/apps")).text
    assert "a-app" not in listing
    assert "b-app" in listing

    # Without the session's CSRF token, nothing changes either.
    forged = await a.post(f"{page_a}/keys/{key_id.group(1)}/revoke", data={})
    assert forged.status_code == 403
    assert await _snapshot(app) == before
    for client_ in (a, b):
        await client_.aclose()


async def test_operators_decide_in_the_dashboard(app: FastAPI, owner: httpx.AsyncClient) -> None:
    assert (await owner.put("/admin/v1/config", json=CATALOGUE)).status_code == 200
    portal = app.state.admin.portal
    facts = RequestFacts("req", None)
    dev = await portal.accounts.sign_up(facts, "d@example.com", PASSWORD, "D", verified=True)
    ctx = DeveloperContext(dev, facts)
    (team,) = await portal.accounts.teams(ctx)
    made = await portal.apps.create_application(ctx, team.id, "shop")
    asked = await portal.apps.request_access(ctx, made.id, "billing")

    await app.state.authenticator.create_user("ops@example.com", ADMIN_PASSWORD, Role.OPERATOR)
    ops = _client(app)
    signed = await _post(
        ops,
        "/dashboard/login",
        "/dashboard/login",
        email="ops@example.com",
        password=ADMIN_PASSWORD,
    )
    assert signed.status_code == 303, signed.text
    page = await ops.get("/dashboard/approvals")
    assert page.status_code == 200
    assert asked.id in page.text
    no_reason = await _post(ops, "/dashboard/approvals", f"/dashboard/approvals/{asked.id}/reject")
    assert no_reason.status_code == 422
    assert "needs a reason" in no_reason.text
    rejected = await _post(
        ops,
        "/dashboard/approvals",
        f"/dashboard/approvals/{asked.id}/reject",
        reason="which shop?",
    )
    assert rejected.status_code == 303, rejected.text
    (request,) = await portal.apps.access_requests(ctx, made.id)
    assert (request.status, request.reason, request.decided_by) == (
        "rejected",
        "which shop?",
        "user:ops@example.com",
    )
    mails = await portal.mail.messages(recipient="d@example.com")
    assert any("which shop?" in m.body for m in mails)
    await ops.aclose()
