"""The portal's operator endpoints (/admin/v1/portal/...): the approval queue, a rejection
with a reason and an approval, developers suspended, problems naming fields, audit."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from portcullis.services.context import RequestFacts
from portcullis.services.portal import DeveloperContext, PortalServices

CATALOGUE = {
    "apis": [{"name": "billing", "versions": [{"name": "v1"}], "access": {"approval": "manual"}}]
}


async def test_operators_work_the_approval_queue(owner: httpx.AsyncClient, app: FastAPI) -> None:
    assert (await owner.put("/admin/v1/config", json=CATALOGUE)).status_code == 200
    portal: PortalServices = app.state.admin.portal
    facts = RequestFacts("req-dev", "192.0.2.9")
    dev = await portal.accounts.sign_up(
        facts, "ada@example.com", "a long enough password", "Ada", verified=True
    )
    ctx = DeveloperContext(dev, facts)
    (team,) = await portal.accounts.teams(ctx)
    application = await portal.apps.create_application(ctx, team.id, "shop")
    asked = await portal.apps.request_access(ctx, application.id, "billing")

    queue = await owner.get("/admin/v1/portal/access-requests", params={"status": "pending"})
    assert queue.status_code == 200, queue.text
    assert [r["id"] for r in queue.json()["items"]] == [asked.id]

    missing = await owner.post(f"/admin/v1/portal/access-requests/{asked.id}/reject", json={})
    assert missing.status_code == 422
    assert missing.headers["content-type"] == "application/problem+json"
    assert [e["pointer"] for e in missing.json()["errors"]] == ["#/reason"]

    rejected = await owner.post(
        f"/admin/v1/portal/access-requests/{asked.id}/reject", json={"reason": "who are you?"}
    )
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["status"], rejected.json()["reason"]) == ("rejected", "who are you?")
    twice = await owner.post(f"/admin/v1/portal/access-requests/{asked.id}/approve", json={})
    assert twice.status_code == 409
    assert twice.headers["content-type"] == "application/problem+json"

    await portal.apps.request_access(ctx, application.id, "billing")
    approved = await owner.post(f"/admin/v1/portal/access-requests/{asked.id}/approve")
    assert approved.status_code == 200, approved.text
    consumer = await owner.get(f"/admin/v1/consumers/app-{application.id}")
    assert consumer.status_code == 200, consumer.text
    assert consumer.json()["groups"] == ["portal-billing"]
    apps = (await owner.get("/admin/v1/portal/applications")).json()["items"]
    assert [(a["id"], a["consumer"]) for a in apps] == [(application.id, f"app-{application.id}")]

    developers = (await owner.get("/admin/v1/portal/developers")).json()["items"]
    assert [(d["email"], d["status"]) for d in developers] == [("ada@example.com", "active")]
    suspended = await owner.post(f"/admin/v1/portal/developers/{dev.id}/suspend")
    assert suspended.json()["status"] == "suspended"
    assert await portal.accounts.principal(dev.id) is None
    unknown = await owner.post("/admin/v1/portal/developers/nope/resume")
    assert unknown.status_code == 404

    audit = (await owner.get("/admin/v1/audit-events", params={"limit": 100})).json()["items"]
    actions = {(e["action"], e["resource_type"]) for e in audit}
    assert {
        ("reject", "portal_access_request"),
        ("approve", "portal_access_request"),
        ("suspend", "portal_developer"),
        ("create", "consumer"),
    } <= actions


async def test_the_queue_over_graphql(owner: httpx.AsyncClient, app: FastAPI) -> None:
    assert (await owner.put("/admin/v1/config", json=CATALOGUE)).status_code == 200
    portal: PortalServices = app.state.admin.portal
    facts = RequestFacts("req-dev", None)
    dev = await portal.accounts.sign_up(
        facts, "bo@example.com", "a long enough pw", "Bo", verified=True
    )
    ctx = DeveloperContext(dev, facts)
    (team,) = await portal.accounts.teams(ctx)
    application = await portal.apps.create_application(ctx, team.id, "shop")
    asked = await portal.apps.request_access(ctx, application.id, "billing")

    async def graph(query: str, **variables: object) -> dict[str, object]:
        answer = await owner.post("/graphql", json={"query": query, "variables": variables})
        assert answer.status_code == 200, answer.text
        body: dict[str, object] = answer.json()
        assert "errors" not in body, body
        return body["data"]  # type: ignore[return-value]

    queue = await graph('{ portalAccessRequests(status: "pending") { nodes { id api status } } }')
    assert queue == {
        "portalAccessRequests": {"nodes": [{"id": asked.id, "api": "billing", "status": "pending"}]}
    }
    rejected = await graph(
        'mutation($id: ID!) { rejectPortalAccessRequest(id: $id, reason: "no") {'
        " ... on PortalAccessRequestPayload { request { status reason } } } }",
        id=asked.id,
    )
    assert rejected == {
        "rejectPortalAccessRequest": {"request": {"status": "rejected", "reason": "no"}}
    }
    developers = await graph("{ portalDevelopers { nodes { email status } } }")
    assert developers == {
        "portalDevelopers": {"nodes": [{"email": "bo@example.com", "status": "active"}]}
    }
