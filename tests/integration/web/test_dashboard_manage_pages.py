"""The dashboard's management pages on a real control plane (issue 19, decision 036):
a plugin form shows the REST API's own message for a bad value, a stale edit gets the
412 merge page (nothing overwritten), a rollback needs its confirmation POST, a
read-only admin gets no edit controls and is refused a POST, the audit log filters."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from html import unescape
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from portcullis.services.rbac import Role
from portcullis.store.engine import create_engine
from portcullis.web.security import CONTENT_SECURITY_POLICY
from support.dashboard_admins import admin_api, plane_with_admins
from support.html_forms import submitted
from support.portal import build, developer
from support.servers import ControlPlane
from support.web import create_admin, dashboard_sign_in, form_token

OWNER = "owner@example.com"
VIEWER = "viewer@example.com"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    admins = {OWNER: Role.OWNER, VIEWER: Role.VIEWER}
    # Webhook endpoints on this machine may be created (the receiver is never called).
    env = {"PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]'}
    with plane_with_admins(tmp_path_factory.mktemp("manage"), admins, env) as cp:
        yield cp


@pytest.fixture(scope="module")
def api(plane: ControlPlane) -> Iterator[httpx.Client]:
    with admin_api(plane.url, OWNER) as client:
        yield client


@contextmanager
def signed_in(plane: ControlPlane, email: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=plane.url, timeout=10, follow_redirects=False) as client:
        response = dashboard_sign_in(client, email)
        assert response.status_code == 303, response.text
        yield client


@pytest.fixture(scope="module")
def owner(plane: ControlPlane, api: httpx.Client) -> Iterator[httpx.Client]:
    with signed_in(plane, OWNER) as client:
        yield client


@pytest.fixture(scope="module")
def viewer(plane: ControlPlane, api: httpx.Client) -> Iterator[httpx.Client]:
    with signed_in(plane, VIEWER) as client:
        yield client


def post(client: httpx.Client, path: str, data: dict[str, list[str]]) -> httpx.Response:
    return client.post(path, data=data, headers={"origin": str(client.base_url).rstrip("/")})


def field_errors(html: str, name: str) -> str:
    """The error text shown for the form field `name`."""
    found = re.search(
        rf'<p class="field-error" id="f-{re.escape(name)}-error">(.*?)</p>', html, re.S
    )
    return unescape(found.group(1)) if found else ""


def test_a_bad_plugin_value_shows_the_rest_apis_message(
    owner: httpx.Client, api: httpx.Client
) -> None:
    page = owner.get("/dashboard/manage/plugins/new", params={"plugin": "request-termination"})
    assert page.status_code == 200, page.text
    data = submitted(page.text, route="orders", **{"config/status_code": "99"})
    shown = post(owner, "/dashboard/manage/plugins/new", data)
    assert shown.status_code == 422

    body: dict[str, Any] = {
        "name": "request-termination",
        "route": "orders",
        "config": {"status_code": 99},
    }
    rest = api.post("/admin/v1/plugins", json=body)
    assert rest.status_code == 422
    [error] = rest.json()["errors"]
    assert error["pointer"] == "#/config/status_code"
    assert field_errors(shown.text, "config_status_code") == error["detail"]

    # A value the form cannot type (text for an integer) gets the API's message too.
    data = submitted(page.text, route="orders", **{"config/status_code": "many"})
    shown = post(owner, "/dashboard/manage/plugins/new", data)
    rest = api.post("/admin/v1/plugins", json={**body, "config": {"status_code": "many"}})
    assert field_errors(shown.text, "config_status_code") == rest.json()["errors"][0]["detail"]

    # A valid one is created, with the config the form typed.
    data = submitted(page.text, route="orders", **{"config/status_code": "418"})
    created = post(owner, "/dashboard/manage/plugins/new", data)
    assert created.status_code == 303
    assert created.headers["location"].endswith(
        "/plugins/request-termination%40route%3Aorders?saved=1"
    )
    stored = api.get("/admin/v1/plugins/request-termination@route:orders").json()
    assert stored["config"]["status_code"] == 418


def test_a_stale_edit_gets_the_merge_page_and_overwrites_nothing(
    owner: httpx.Client, api: httpx.Client
) -> None:
    page = owner.get("/dashboard/manage/routes/orders")
    assert page.status_code == 200
    # The service field offers the services there are.
    assert '<datalist id="f-service-names"><option value="orders">' in page.text
    # Someone else changes the route after the page was loaded.
    current = api.get("/admin/v1/routes/orders")
    changed = api.patch(
        "/admin/v1/routes/orders",
        json={"priority": 7},
        headers={
            "content-type": "application/merge-patch+json",
            "if-match": current.headers["etag"],
        },
    )
    assert changed.status_code == 200, changed.text
    data = submitted(page.text, paths="/orders\n/v2/orders")
    conflict = post(owner, "/dashboard/manage/routes/orders", data)
    assert conflict.status_code == 412
    assert "changed meanwhile" in conflict.text
    assert 'id="reload-theirs"' in conflict.text
    assert api.get("/admin/v1/routes/orders").json()["paths"] == ["/orders"]

    # Saving the proposal (mine on top of theirs) keeps both changes.
    saved = post(owner, "/dashboard/manage/routes/orders", submitted(conflict.text))
    assert saved.status_code == 303
    route = api.get("/admin/v1/routes/orders").json()
    assert (route["paths"], route["priority"]) == (["/orders", "/v2/orders"], 7)


def test_a_rollback_needs_its_confirmation_post(owner: httpx.Client, api: httpx.Client) -> None:
    versions = api.get("/admin/v1/config/versions").json()["items"]
    newest = versions[0]["version"]
    confirm = owner.get("/dashboard/config/versions/1/rollback")
    assert confirm.status_code == 200
    assert "Roll back to version 1" in confirm.text
    # Neither the confirmation page nor a POST without its confirmation rolls back.
    token = form_token(confirm.text)
    refused = post(owner, "/dashboard/config/versions/1/rollback", {"csrf_token": [token]})
    assert refused.status_code == 400
    assert api.get("/admin/v1/config/versions").json()["items"][0]["version"] == newest

    done = post(owner, "/dashboard/config/versions/1/rollback", submitted(confirm.text))
    assert done.status_code == 303, done.text
    top = api.get("/admin/v1/config/versions").json()["items"][0]
    assert (top["version"], top["source_version"]) == (newest + 1, 1)
    diff = owner.get(f"/dashboard/config/versions/{newest + 1}")
    assert diff.status_code == 200
    assert 'class="side-by-side"' in diff.text


def test_a_read_only_admin_sees_no_edit_controls_and_is_refused_a_post(
    viewer: httpx.Client, owner: httpx.Client
) -> None:
    page = viewer.get("/dashboard/manage/services/orders")
    assert page.status_code == 200
    assert ">Save<" not in page.text
    assert "Delete service" not in page.text
    assert re.search(r'name="url" value="[^"]*" readonly', page.text)
    listing = viewer.get("/dashboard/manage/services")
    assert "New service" not in listing.text
    token = form_token(page.text)
    data = {**submitted(page.text), "csrf_token": [token]}
    assert post(viewer, "/dashboard/manage/services/orders", data).status_code == 403
    assert post(viewer, "/dashboard/config/versions/1/rollback", data).status_code == 403
    assert viewer.get("/dashboard/manage/services/new").status_code == 403
    assert "Save" in owner.get("/dashboard/manage/services/orders").text


def test_the_audit_log_filters(owner: httpx.Client, api: httpx.Client) -> None:
    page = owner.get("/dashboard/audit", params={"resource_type": "route"})
    assert page.status_code == 200
    rows = re.findall(r"<td>(create|update|replace|delete|rollback|apply)</td>", page.text)
    assert rows
    assert "<td>service: orders</td>" not in page.text
    bad = owner.get("/dashboard/audit", params={"since": "yesterday"})
    assert bad.status_code == 422
    assert 'id="filter-since-error"' in bad.text


def test_a_new_key_is_shown_once_and_webhook_forms_show_the_apis_errors(
    owner: httpx.Client, api: httpx.Client
) -> None:
    assert api.post("/admin/v1/consumers", json={"username": "acme"}).status_code == 201
    form = owner.get("/dashboard/keys/new", params={"consumer": "acme"})
    assert form.status_code == 200
    created = post(owner, "/dashboard/keys/new", submitted(form.text, name="checkout"))
    assert created.status_code == 200, created.text
    assert created.headers["cache-control"] == "no-store"
    key = re.search(r'id="new-key" type="text" readonly value="([^"]+)"', created.text)
    assert key is not None
    listing = owner.get("/dashboard/keys", params={"consumer": "acme"})
    assert "checkout" in listing.text
    assert key.group(1) not in listing.text
    [stored] = api.get("/admin/v1/consumers/acme/keys").json()["items"]
    assert stored["name"] == "checkout"
    # Suspend, resume, rotate (the successor shown once), revoke: the key service's.
    key_id, token = stored["id"], form_token(listing.text)
    actions = f"/dashboard/keys/{key_id}"
    assert post(owner, f"{actions}/suspend", {"csrf_token": [token]}).status_code == 303
    assert api.get(f"/admin/v1/keys/{key_id}").json()["status"] == "suspended"
    assert post(owner, f"{actions}/resume", {"csrf_token": [token]}).status_code == 303
    rotated = post(owner, f"{actions}/rotate", {"csrf_token": [token], "grace_hours": ["1"]})
    assert rotated.status_code == 200
    assert rotated.headers["cache-control"] == "no-store"
    assert "keeps working until" in rotated.text
    assert api.get(f"/admin/v1/keys/{key_id}").json()["state"] == "grace"
    # Its settings, edited with the page's ETag; a stale page gets 412.
    page = owner.get(f"{actions}")
    edited = post(owner, actions, submitted(page.text, name="checkout-2", scopes="orders:read"))
    assert edited.status_code == 303, edited.text
    settings = api.get(f"/admin/v1/keys/{key_id}").json()
    assert (settings["name"], settings["scopes"]) == ("checkout-2", ["orders:read"])
    stale = post(owner, actions, submitted(page.text, name="checkout-3"))
    assert stale.status_code == 412
    assert api.get(f"/admin/v1/keys/{key_id}").json()["name"] == "checkout-2"
    why = {"csrf_token": [token], "reason": ["leaked"]}
    assert post(owner, f"{actions}/revoke", why).status_code == 303
    revoked = api.get(f"/admin/v1/keys/{key_id}").json()
    assert (revoked["status"], revoked["status_reason"]) == ("revoked", "leaked")
    # The key's create form is the REST body's schema: its errors read the same.
    bad = post(owner, "/dashboard/keys/new", submitted(form.text, name="", scopes="a b"))
    assert bad.status_code == 422
    rest = api.post("/admin/v1/consumers/acme/keys", json={"scopes": ["a b"]})
    for error in rest.json()["errors"]:
        name = error["pointer"].removeprefix("#/").split("/")[0]
        assert error["detail"] in field_errors(bad.text, name)

    hooks = owner.get("/dashboard/webhooks/new")
    assert hooks.status_code == 200
    refused = post(owner, "/dashboard/webhooks/new", submitted(hooks.text, url="ftp://x"))
    assert refused.status_code == 422
    rest = api.post("/admin/v1/webhooks", json={"url": "ftp://x"})
    details = {e["pointer"]: e["detail"] for e in rest.json()["errors"]}
    assert field_errors(refused.text, "url") == details["#/url"]
    assert field_errors(refused.text, "event_types") == details["#/event_types"]


async def _pending_requests(
    database_url: str, email: str = "ada@example.com", names: tuple[str, ...] = ("shop", "till")
) -> list[str]:
    """Applications (`names`) of a developer asking for the manual-approval API `billing`."""
    engine = create_engine(database_url)
    try:
        portal = build(engine)
        ctx = await developer(portal, email)
        (team, *_) = await portal.accounts.teams(ctx)
        ids = []
        for name in names:
            app = await portal.apps.create_application(ctx, team.id, name, client_type="web")
            ids.append((await portal.apps.request_access(ctx, app.id, "billing")).id)
        return ids
    finally:
        await engine.dispose()


def test_access_requests_are_approved_and_rejected_with_reasons(
    plane: ControlPlane, owner: httpx.Client, api: httpx.Client
) -> None:
    billing = {"name": "billing", "versions": [{"name": "v1"}], "access": {"approval": "manual"}}
    assert api.post("/admin/v1/apis", json=billing).status_code == 201
    with ThreadPoolExecutor(1) as pool:
        shop, till = pool.submit(asyncio.run, _pending_requests(plane.database_url)).result()
    queue = owner.get("/dashboard/approvals")
    assert queue.status_code == 200
    assert ">shop <" in queue.text
    assert ">till <" in queue.text
    token = form_token(queue.text)
    no_reason = post(owner, f"/dashboard/approvals/{shop}/reject", {"csrf_token": [token]})
    assert no_reason.status_code == 422
    assert "a rejection needs a reason" in no_reason.text
    why = {"csrf_token": [token], "reason": ["tell us about the use case"]}
    assert post(owner, f"/dashboard/approvals/{shop}/reject", why).status_code == 303
    assert (
        post(owner, f"/dashboard/approvals/{till}/approve", {"csrf_token": [token]}).status_code
        == 303
    )
    rejected = owner.get("/dashboard/approvals", params={"status": "rejected"})
    assert "tell us about the use case" in rejected.text
    approved = owner.get("/dashboard/approvals", params={"status": "approved"})
    assert ">till <" in approved.text
    again = post(owner, f"/dashboard/approvals/{till}/approve", {"csrf_token": [token]})
    assert again.status_code == 409


def test_delete_goes_through_the_service_with_its_refusals(
    owner: httpx.Client, api: httpx.Client
) -> None:
    form = owner.get("/dashboard/manage/consumers/new")
    assert post(owner, "/dashboard/manage/consumers/new", submitted(form.text, username="gone"))
    page = owner.get("/dashboard/manage/consumers/gone")
    assert page.status_code == 200
    delete_form = re.search(r'<form class="form danger".*?</form>', page.text, re.S)
    assert delete_form is not None
    deleted = post(
        owner, "/dashboard/manage/consumers/gone/delete", submitted(delete_form.group(0))
    )
    assert deleted.status_code == 303
    assert api.get("/admin/v1/consumers/gone").status_code == 404
    # A service a route still uses: the API's 409, naming it, on the page.
    service = {"name": "used", "url": "http://127.0.0.1:9/"}
    assert api.post("/admin/v1/services", json=service).status_code == 201
    route = {"name": "user", "service": "used", "paths": ["/used"]}
    assert api.post("/admin/v1/routes", json=route).status_code == 201
    page = owner.get("/dashboard/manage/services/used")
    delete_form = re.search(r'<form class="form danger".*?</form>', page.text, re.S)
    assert delete_form is not None
    refused = post(owner, "/dashboard/manage/services/used/delete", submitted(delete_form.group(0)))
    assert refused.status_code == 409
    assert "route &#39;user&#39;" in refused.text
    assert api.get("/admin/v1/services/used").status_code == 200


class _Code(HTMLParser):
    """The URLs a page loads or links to, its inline scripts and event handler attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href", "action") and v]
        if tag == "script" and not found.get("src"):
            self.inline_scripts += 1
        self.handlers += [k for k, _ in attrs if k.startswith(("on", "hx-on"))]


def test_every_management_page_has_the_policy_and_no_external_or_inline_code(
    owner: httpx.Client, api: httpx.Client
) -> None:
    pages = [
        "/dashboard/manage",
        "/dashboard/manage/routes",
        "/dashboard/manage/services/orders",
        "/dashboard/manage/plugins/new",
        "/dashboard/manage/plugins/new?plugin=jwt-auth",
        "/dashboard/keys",
        "/dashboard/keys/new",
        "/dashboard/webhooks",
        "/dashboard/webhooks/new",
        "/dashboard/approvals",
        "/dashboard/config/versions",
        "/dashboard/config/versions/1",
        "/dashboard/config/versions/1/rollback",
        "/dashboard/audit",
    ]
    for path in pages:
        response = owner.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        code = _Code()
        code.feed(response.text)
        assert [u for u in code.urls if u.startswith(("http:", "https:", "//"))] == [], path
        assert code.inline_scripts == 0, path
        assert code.handlers == [], path


def test_a_webhook_endpoint_is_created_with_its_secret_shown_once_then_switched_off(
    owner: httpx.Client, api: httpx.Client
) -> None:
    form = owner.get("/dashboard/webhooks/new")
    typed = {"url": "http://127.0.0.1:9/hook", "event_types": "key.*\nalert.firing"}
    created = post(owner, "/dashboard/webhooks/new", submitted(form.text, **typed))
    assert created.status_code == 200, created.text
    assert created.headers["cache-control"] == "no-store"
    secret = re.search(r'id="new-secret" type="text" readonly value="(whsec_[^"]+)"', created.text)
    assert secret is not None
    [endpoint] = api.get("/admin/v1/webhooks").json()["items"]
    assert endpoint["event_types"] == ["key.*", "alert.firing"]
    listing = owner.get("/dashboard/webhooks")
    assert secret.group(1) not in listing.text
    token = form_token(listing.text)
    where = f"/dashboard/webhooks/{endpoint['id']}"
    assert post(owner, f"{where}/disable", {"csrf_token": [token]}).status_code == 303
    assert api.get(f"/admin/v1/webhooks/{endpoint['id']}").json()["enabled"] is False
    assert post(owner, f"{where}/delete", {"csrf_token": [token]}).status_code == 303
    assert api.get(f"/admin/v1/webhooks/{endpoint['id']}").status_code == 404


def test_an_organization_admin_reaches_no_other_organizations_entities(
    plane: ControlPlane, api: httpx.Client
) -> None:
    """The IDOR matrix of the dashboard: an admin limited to org-a, on every URL naming
    an org-b consumer, key or webhook endpoint, gets "not found" (or no such row in a
    listing), and a POST changes nothing (as the REST API: the same services)."""
    for name in ("org-a", "org-b"):
        assert api.post("/admin/v1/organizations", json={"name": name}).status_code == 201
    for user, org in (("a-user", "org-a"), ("b-user", "org-b")):
        made = api.post("/admin/v1/consumers", json={"username": user, "organization": org})
        assert made.status_code == 201, made.text
    key = api.post("/admin/v1/consumers/b-user/keys", json={"name": "b-key"}).json()["id"]
    hook = api.post(
        "/admin/v1/webhooks",
        json={"url": "http://127.0.0.1:9/b", "event_types": ["key.*"], "organization": "org-b"},
    )
    assert hook.status_code == 201, hook.text
    endpoint = hook.json()["id"]
    org_a = next(
        o["id"] for o in api.get("/admin/v1/organizations").json()["items"] if o["name"] == "org-a"
    )
    create_admin(plane.database_url, "org-a-admin@example.com", Role.ADMIN, org_a)
    with signed_in(plane, "org-a-admin@example.com") as admin:
        # Pages naming org-b's entities: not found, nothing of theirs shown.
        for url in (
            "/dashboard/manage/consumers/b-user",
            f"/dashboard/keys/{key}",
            "/dashboard/config/versions",  # the whole config's history: unlimited admins
            "/dashboard/config/versions/1",
            "/dashboard/inspector/routes/orders",  # a gateway-wide route
        ):
            page = admin.get(url)
            assert page.status_code in (403, 404), (url, page.status_code)
            assert "b-key" not in page.text, url
        # Listings: their own rows only.
        listings = {
            "/dashboard/manage/consumers": ("a-user", "b-user"),
            "/dashboard/keys?consumer=b-user": (None, "b-key"),
            "/dashboard/webhooks": (None, endpoint),
            "/dashboard/audit": (None, key),
        }
        for url, (ours, theirs) in listings.items():
            page = admin.get(url)
            assert page.status_code in (200, 404), (url, page.status_code)
            assert ours is None or ours in page.text, url
            assert theirs not in page.text, url
        # State changes on org-b's entities: refused, nothing changed.
        token = form_token(admin.get("/dashboard/keys").text)
        for url in (
            f"/dashboard/keys/{key}/revoke",
            f"/dashboard/keys/{key}/suspend",
            f"/dashboard/keys/{key}/rotate",
            f"/dashboard/webhooks/{endpoint}/disable",
            f"/dashboard/webhooks/{endpoint}/delete",
            "/dashboard/manage/consumers/b-user/delete",
            "/dashboard/config/versions/1/rollback",
        ):
            refused = post(admin, url, {"csrf_token": [token], "reason": ["x"]})
            assert refused.status_code in (403, 404), (url, refused.status_code)
        # A capture on a route that is not org-a's: refused.
        capture = {"csrf_token": [token], "route": ["orders"], "duration_seconds": ["60"]}
        assert post(admin, "/dashboard/inspector/captures", capture).status_code in (403, 404)
        # A key for org-b's consumer (the form pre-filled from the URL): refused.
        form = admin.get("/dashboard/keys/new", params={"consumer": "b-user"})
        made = post(admin, "/dashboard/keys/new", submitted(form.text, name="planted"))
        assert made.status_code in (403, 404, 422), made.status_code
        assert 'id="new-key"' not in made.text
        # An access request to a gateway-wide API: not in org-a's queue, not decidable.
        billing = {
            "name": "billing",
            "versions": [{"name": "v1"}],
            "access": {"approval": "manual"},
        }
        assert api.post("/admin/v1/apis", json=billing).status_code in (201, 409)
        with ThreadPoolExecutor(1) as pool:
            (pending,) = pool.submit(
                asyncio.run, _pending_requests(plane.database_url, "eve@example.com", ("kiosk",))
            ).result()
        assert ">kiosk <" not in admin.get("/dashboard/approvals").text
        decided = post(admin, f"/dashboard/approvals/{pending}/approve", {"csrf_token": [token]})
        assert decided.status_code in (403, 404), decided.status_code
    with signed_in(plane, OWNER) as owner:
        assert ">kiosk <" in owner.get("/dashboard/approvals").text  # still pending
    assert [k["name"] for k in api.get("/admin/v1/consumers/b-user/keys").json()["items"]] == [
        "b-key"
    ]
    stored = api.get(f"/admin/v1/keys/{key}").json()
    assert (stored["status"], stored["state"]) == ("active", "active"), stored
    assert api.get(f"/admin/v1/webhooks/{endpoint}").json()["enabled"] is True
    assert api.get("/admin/v1/consumers/b-user").status_code == 200
