"""The alerts API: rule CRUD with validation, ETags and audit; current alerts; anomalies and
events with filters and pagination; organization-limited admins kept out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import insert

from portcullis.analytics.alerts import AlertEvaluator
from portcullis.events.bus import InProcessBus
from portcullis.events.catalogue import EventType
from portcullis.services.rbac import Role
from portcullis.store.analytics_tables import AnomalyRow
from portcullis.store.engine import write_transaction
from support.events import sample
from support.rollups import failing_minute

RULES = "/admin/v1/alert-rules"
ERRORS = {
    "name": "checkout-errors",
    "kind": "error_rate",
    "threshold": 0.05,
    "window_seconds": 300,
    "min_requests": 10,
    "route": "checkout",
}


def pointers(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [e["pointer"] for e in response.json()["errors"]]


async def test_rule_crud_with_etags_and_audit(owner: httpx.AsyncClient) -> None:
    created = await owner.post(RULES, json=ERRORS)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"{RULES}/checkout-errors"
    body = created.json()
    assert body["status"] is None
    assert {k: body[k] for k in ERRORS} == ERRORS
    assert (body["enabled"], body["upstream"], body["description"]) == (True, None, None)
    assert body["for_seconds"] == 0
    etag = created.headers["etag"]

    fetched = await owner.get(f"{RULES}/checkout-errors")
    assert fetched.status_code == 200
    assert fetched.headers["etag"] == etag
    assert (await owner.post(RULES, json=ERRORS)).status_code == 409

    stale = await owner.patch(
        f"{RULES}/checkout-errors", json={"threshold": 0.1}, headers={"If-Match": '"nope"'}
    )
    assert stale.status_code == 412
    patched = await owner.patch(
        f"{RULES}/checkout-errors",
        json={"threshold": 0.1, "route": None, "description": "all routes"},
        headers={"If-Match": etag},
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["threshold"], patched.json()["route"]) == (0.1, None)
    assert patched.headers["etag"] != etag
    held = await owner.patch(
        f"{RULES}/checkout-errors",
        json={"for_seconds": 120},
        headers={"If-Match": patched.headers["etag"]},
    )
    assert held.status_code == 200, held.text
    assert held.json()["for_seconds"] == 120
    assert held.headers["etag"] != patched.headers["etag"]
    patched = held

    replaced = await owner.put(
        f"{RULES}/checkout-errors",
        json={"kind": "p95_latency", "threshold": 750, "window_seconds": 600},
        headers={"If-Match": patched.headers["etag"]},
    )
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["kind"], replaced.json()["description"]) == ("p95_latency", None)
    assert replaced.json()["for_seconds"] == 0  # PUT replaces every setting
    assert (
        await owner.put(f"{RULES}/nope", json={"kind": "rate_429", "threshold": 0})
    ).status_code == 404

    listed = await owner.get(RULES)
    assert [r["name"] for r in listed.json()["items"]] == ["checkout-errors"]
    assert (await owner.delete(f"{RULES}/checkout-errors")).status_code == 204
    assert (await owner.get(f"{RULES}/checkout-errors")).status_code == 404
    assert (await owner.delete(f"{RULES}/checkout-errors")).status_code == 404

    audit = await owner.get("/admin/v1/audit-events", params={"resource_type": "alert_rule"})
    assert [e["action"] for e in audit.json()["items"]] == [
        "delete",
        "update",
        "update",
        "update",
        "create",
    ]


async def test_validation_problems_name_the_field(owner: httpx.AsyncClient) -> None:
    assert pointers(await owner.post(RULES, json={**ERRORS, "threshold": 1.5})) == ["#/threshold"]
    assert pointers(await owner.post(RULES, json={**ERRORS, "window_seconds": 90})) == [
        "#/window_seconds"
    ]
    assert pointers(await owner.post(RULES, json={**ERRORS, "upstream": "orders"})) == [
        "#/upstream"
    ]
    assert pointers(await owner.post(RULES, json={**ERRORS, "kind": "cpu"})) == ["#/kind"]
    for held in (-1, 86_401, 1.5, "60", True):
        assert pointers(await owner.post(RULES, json={**ERRORS, "for_seconds": held})) == [
            "#/for_seconds"
        ], held
    assert pointers(await owner.post(RULES, json={**ERRORS, "name": "no spaces"})) == ["#/name"]
    missing = {k: v for k, v in ERRORS.items() if k != "threshold"}
    assert pointers(await owner.post(RULES, json=missing)) == ["#/threshold"]
    assert (await owner.post(RULES, json=ERRORS)).status_code == 201
    assert pointers(await owner.patch(f"{RULES}/checkout-errors", json={"threshold": -1})) == [
        "#/threshold"
    ]
    assert pointers(
        await owner.patch(f"{RULES}/checkout-errors", json={"kind": "upstream_down"})
    ) == ["#/route"]


async def test_alerts_list_the_current_states_firing_first(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    for rule in (
        {**ERRORS, "name": "b-quiet", "route": "search"},
        {**ERRORS, "name": "a-checkout"},
    ):
        assert (await owner.post(RULES, json=rule)).status_code == 201
    never = (await owner.get("/admin/v1/alerts")).json()
    assert [(a["rule"], a["state"], a["since"]) for a in never["items"]] == [
        ("a-checkout", "ok", None),
        ("b-quiet", "ok", None),
    ]
    engine = app.state.admin.engine
    await failing_minute(engine, route="checkout", service="", errors=40, latency_ms=10.0)
    await AlertEvaluator(engine, InProcessBus(engine)).run_once()
    alerts = (await owner.get("/admin/v1/alerts")).json()
    assert [(a["rule"], a["state"]) for a in alerts["items"]] == [
        ("a-checkout", "firing"),
        ("b-quiet", "ok"),
    ]
    assert alerts["items"][0]["value"] == 0.4
    assert alerts["items"][0]["scope"] == {"route": "checkout"}
    assert alerts["counts"] == {"ok": 1, "pending": 0, "firing": 1, "resolving": 0}
    firing = (await owner.get("/admin/v1/alerts", params={"state": "firing"})).json()
    assert [a["rule"] for a in firing["items"]] == ["a-checkout"]
    rule = (await owner.get(f"{RULES}/a-checkout")).json()
    assert rule["status"]["state"] == "firing"
    events = (await owner.get("/admin/v1/events", params={"kind": "alert.firing"})).json()
    assert [(e["kind"], e["subject"]) for e in events["items"]] == [("alert.firing", "a-checkout")]


async def add_anomalies(app: FastAPI) -> None:
    rows: list[dict[str, Any]] = []
    for n, (subject, signal, action) in enumerate(
        [
            ("k1", "request_rate", "none"),
            ("203.0.113.9", "ip_auth_failures", "none"),
            ("k2", "distinct_ips", "suspended"),
            ("k1", "auth_failures", "none"),
        ]
    ):
        is_ip = signal.startswith("ip_")
        rows.append(
            {
                "detected_at": datetime(2030, 1, 1, 0, n, tzinfo=UTC),
                "credential_id": None if is_ip else subject,
                "client_ip": subject if is_ip else None,
                "consumer": None if is_ip else "acme",
                "signal": signal,
                "observed": 100.0 + n,
                "baseline": 1.0,
                "score": 50.0,
                "action": action,
                "details": json.dumps({"n": n}),
            }
        )
    async with write_transaction(app.state.admin.engine) as conn:
        await conn.execute(insert(AnomalyRow), rows)


async def test_anomalies_newest_first_with_filters_and_pages(app: FastAPI, client_for: Any) -> None:
    viewer: httpx.AsyncClient = await client_for(Role.VIEWER)
    await add_anomalies(app)
    listed = (await viewer.get("/admin/v1/anomalies")).json()
    assert [a["details"]["n"] for a in listed["items"]] == [3, 2, 1, 0]
    by_ip = listed["items"][2]
    assert (by_ip["credential_id"], by_ip["client_ip"], by_ip["consumer"]) == (
        None,
        "203.0.113.9",
        None,
    )
    assert listed["items"][1]["credential_id"] == "k2"
    assert listed["items"][1]["client_ip"] is None

    def ns(response: httpx.Response) -> list[int]:
        assert response.status_code == 200, response.text
        return [a["details"]["n"] for a in response.json()["items"]]

    assert ns(await viewer.get("/admin/v1/anomalies", params={"credential_id": "k1"})) == [3, 0]
    assert ns(await viewer.get("/admin/v1/anomalies", params={"client_ip": "203.0.113.9"})) == [1]
    assert ns(await viewer.get("/admin/v1/anomalies", params={"signal": "distinct_ips"})) == [2]
    assert ns(await viewer.get("/admin/v1/anomalies", params={"action": "suspended"})) == [2]
    assert ns(
        await viewer.get(
            "/admin/v1/anomalies",
            params={"since": "2030-01-01T00:01:00Z", "until": "2030-01-01T00:03:00Z"},
        )
    ) == [2, 1]
    page = await viewer.get("/admin/v1/anomalies", params={"limit": 3})
    assert ns(page) == [3, 2, 1]
    assert page.headers["link"].endswith('rel="next"')
    assert ns(await viewer.get(page.json()["next"])) == [0]
    bad = await viewer.get("/admin/v1/anomalies", params={"cursor": "x"})
    assert bad.status_code == 400
    assert pointers(await viewer.get("/admin/v1/anomalies", params={"signal": "cpu"})) == ["#"]
    # A bare number is not read as a Unix time: the API takes RFC 3339 only.
    unix = await viewer.get("/admin/v1/anomalies", params={"since": "0.5"})
    assert unix.status_code == 422, unix.text
    assert "RFC 3339" in unix.text


async def test_events_replay_from_a_position(app: FastAPI, owner: httpx.AsyncClient) -> None:
    bus = InProcessBus(app.state.admin.engine)
    published = [
        await bus.publish(kind, f"s{n}", sample(kind, n=n))
        for n, kind in enumerate(
            [
                EventType.ALERT_FIRING,
                EventType.ANOMALY_DETECTED,
                EventType.ALERT_RESOLVED,
                EventType.KEY_AUTO_SUSPENDED,
            ]
        )
    ]
    first = await owner.get("/admin/v1/events", params={"limit": 3})
    assert first.status_code == 200
    assert [e["data"]["n"] for e in first.json()["items"]] == [0, 1, 2]
    assert first.json()["items"][0] == published[0].as_json()
    following = first.json()["next"]
    assert f"after={published[2].id}" in following
    rest = (await owner.get(following)).json()
    assert [e["kind"] for e in rest["items"]] == ["key.auto_suspended"]
    assert rest["next"] is None
    alerts = await owner.get("/admin/v1/events?kind=alert.firing&kind=alert.resolved&after=0")
    assert [e["subject"] for e in alerts.json()["items"]] == ["s0", "s2"]
    by_subject = await owner.get("/admin/v1/events", params={"subject": "s1"})
    assert [e["kind"] for e in by_subject.json()["items"]] == ["anomaly.detected"]
    assert pointers(await owner.get("/admin/v1/events", params={"kind": "alert.nope"})) == ["#"]


async def test_viewers_read_and_organization_limited_admins_are_kept_out(
    owner: httpx.AsyncClient, client_for: Any
) -> None:
    viewer: httpx.AsyncClient = await client_for(Role.VIEWER)
    assert (await viewer.get(RULES)).status_code == 200
    assert (await viewer.post(RULES, json=ERRORS)).status_code == 403
    created = await owner.post("/admin/v1/organizations", json={"name": "acme"})
    limited: httpx.AsyncClient = await client_for(Role.OPERATOR, created.json()["id"])
    for path in (RULES, "/admin/v1/alerts", "/admin/v1/anomalies"):
        response = await limited.get(path)
        assert response.status_code == 403, path
        assert "not limited to an organization" in response.json()["detail"]
    # The event log shows them their organization's events only (test_admin_events.py).
    assert (await limited.get("/admin/v1/events")).json()["items"] == []
    assert (await limited.post(RULES, json=ERRORS)).status_code == 403
