"""GraphQL equivalents of the operational REST APIs (config, audit, alerts, analytics,
cache, data plane, event types, plugin schemas, webhooks), through the real `gql`
client: each family's happy path and a refusal as data, on the same services REST
calls (organization scoping and RBAC included)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from admin_support import ClientFactory, upstream_health_reporter
from fastapi import FastAPI
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport
from sqlalchemy import event
from test_admin_alerts import add_anomalies

from portcullis.services.rbac import Role
from support.threaded_upstream import eventually

Run = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def graph_for(app: FastAPI) -> Callable[[httpx.AsyncClient], Run]:
    """Runs a GraphQL document with a signed-in REST client's token, through `gql`."""

    def make(rest: httpx.AsyncClient) -> Run:
        transport = HTTPXAsyncTransport(
            url="http://admin/graphql",
            headers={"authorization": rest.headers["authorization"]},
            transport=httpx.ASGITransport(app=app),
        )
        client = Client(transport=transport)

        async def run(query: str, /, **variables: Any) -> dict[str, Any]:
            async with client as session:
                result = await session.execute(
                    GraphQLRequest(query, variable_values=variables or None)
                )
            return dict(result)

        return run

    return make


@pytest.fixture
def graph(graph_for: Callable[[httpx.AsyncClient], Run], owner: httpx.AsyncClient) -> Run:
    return graph_for(owner)


async def refused(run: Run, query: str, /, **variables: Any) -> tuple[int, list[str]]:
    """The REST status a query's refusal carries and the pointers of its field errors (a
    query answers errors, not problems as data)."""
    with pytest.raises(TransportQueryError) as caught:
        await run(query, **variables)
    assert caught.value.errors is not None
    extensions = caught.value.errors[0]["extensions"]
    return extensions["status"], [e["pointer"] for e in extensions.get("errors", [])]


SERVICE = {"name": "orders", "url": "http://orders.internal:8080"}
ROUTE = {"name": "orders", "service": "orders", "paths": ["/orders"]}

# ---------------------------------------------------------------------------- config

APPLY = """mutation($document: JSON!, $ifMatch: String, $comment: String) {
  applyConfig(document: $document, ifMatch: $ifMatch, comment: $comment) {
    __typename
    ... on ConfigAppliedPayload { result { version created comment } }
    ... on ValidationProblem { status errors { pointer detail } }
    ... on PreconditionFailedProblem { status }
  }
}"""


async def test_config_export_apply_diff_versions_and_rollback(
    graph: Run, owner: httpx.AsyncClient
) -> None:
    document = {"services": [SERVICE], "routes": [ROUTE]}
    exported = (await graph("{ config { version etag document } }"))["config"]
    diff = await graph(
        """query($d: JSON!) { configDiff(document: $d) { __typename
             ... on ConfigDiffPayload { diff { empty summary kinds { kind added } } } } }""",
        d=document,
    )
    kinds = {k["kind"]: k["added"] for k in diff["configDiff"]["diff"]["kinds"]}
    assert kinds["services"] == ["orders"]
    assert kinds["routes"] == ["orders"]
    done = (await graph(APPLY, document=document, ifMatch=exported["etag"], comment="gql"))[
        "applyConfig"
    ]
    assert done["__typename"] == "ConfigAppliedPayload", done
    assert done["result"]["created"] is True
    assert done["result"]["comment"] == "gql"
    version = done["result"]["version"]
    # REST sees what GraphQL applied, with the same ETag GraphQL exports.
    rest = await owner.get("/admin/v1/config")
    assert [s["name"] for s in rest.json()["services"]] == ["orders"]
    again = (await graph("{ config { version etag document } }"))["config"]
    assert again["etag"] == rest.headers["etag"]
    assert again["version"] == version
    # The stale ETag is refused as data.
    stale = (await graph(APPLY, document={}, ifMatch=exported["etag"]))["applyConfig"]
    assert stale == {"__typename": "PreconditionFailedProblem", "status": 412}
    listed = await graph(
        "{ configVersions(first: 1) { nodes { version } pageInfo { hasNextPage } } }"
    )
    assert listed["configVersions"]["nodes"] == [{"version": version}]
    stored = await graph(
        "query($v: Int!) { configVersion(version: $v) { info { version } etag document } }",
        v=version,
    )
    assert stored["configVersion"]["document"]["services"][0]["name"] == "orders"
    emptied = (await graph(APPLY, document={}))["applyConfig"]
    assert emptied["result"]["version"] == version + 1
    rolled = await graph(
        """mutation($v: Int!) { rollbackConfig(version: $v) { __typename
             ... on ConfigAppliedPayload { result { version sourceVersion created } } } }""",
        v=version,
    )
    assert rolled["rollbackConfig"]["result"] == {
        "version": version + 2,
        "sourceVersion": version,
        "created": True,
    }
    services = (await owner.get("/admin/v1/config")).json()["services"]
    assert [s["name"] for s in services] == ["orders"]


async def test_config_problems_as_data(graph: Run) -> None:
    bad = {"services": [{"name": "orders", "url": "http://a", "timeouts": {"connect": -1}}]}
    denied = (await graph(APPLY, document=bad))["applyConfig"]
    assert denied["__typename"] == "ValidationProblem", denied
    assert denied["status"] == 422
    assert [e["pointer"] for e in denied["errors"]] == ["#/services/0/timeouts/connect"]
    long = (await graph(APPLY, document={}, comment="x" * 1001))["applyConfig"]
    assert long == {
        "__typename": "ValidationProblem",
        "status": 422,
        "errors": [{"pointer": "#/comment", "detail": "at most 1000 characters"}],
    }
    missing = await graph(
        """mutation { rollbackConfig(version: 4242) { __typename
             ... on NotFoundProblem { status target } } }"""
    )
    assert missing["rollbackConfig"] == {
        "__typename": "NotFoundProblem",
        "status": 404,
        "target": "version",
    }
    zero = await graph(
        """mutation { rollbackConfig(version: 0) { __typename
             ... on ValidationProblem { errors { pointer } } } }"""
    )
    assert zero["rollbackConfig"]["errors"] == [{"pointer": "#/version"}]
    assert (await graph("{ configVersion(version: 4242) { etag } }"))["configVersion"] is None


async def test_org_limited_admins_config_and_audit_over_graphql_as_over_rest(
    graph_for: Callable[[httpx.AsyncClient], Run],
    client_for: ClientFactory,
    owner: httpx.AsyncClient,
    orgs: dict[str, str],
) -> None:
    for org in ("acme", "globex"):
        created = await owner.post(
            "/admin/v1/services",
            json={"name": f"{org}-svc", "url": "http://a.internal", "organization": org},
        )
        assert created.status_code == 201, created.text
    acme_rest = await client_for(Role.ADMIN, orgs["acme"])
    acme = graph_for(acme_rest)
    exported = (await acme("{ config { etag document } }"))["config"]
    assert [s["name"] for s in exported["document"]["services"]] == ["acme-svc"]
    rest = await acme_rest.get("/admin/v1/config")
    assert exported["etag"] == rest.headers["etag"]
    denied = (await acme(APPLY, document={}))["applyConfig"]
    assert denied["__typename"] == "ForbiddenProblem"
    # Their audit log: only the events about their organization.
    seen = (await acme(AUDIT, filter={"resourceType": "service"}))["auditEvents"]
    assert [e["resourceId"] for e in seen["nodes"]] == ["acme-svc"]
    assert {e["organizationId"] for e in seen["nodes"]} == {orgs["acme"]}
    rest = await acme_rest.get("/admin/v1/audit-events", params={"resource_type": "service"})
    assert [e["resource_id"] for e in rest.json()["items"]] == ["acme-svc"]


# ---------------------------------------------------------------------------- audit


AUDIT = """query($filter: AuditQueryInput, $first: Int, $after: String) {
  auditEvents(filter: $filter, first: $first, after: $after) {
    nodes { id action resourceType resourceId organizationId diff }
    pageInfo { hasNextPage endCursor }
  }
}"""


async def test_audit_events_with_filters_and_pages_as_rest(
    graph: Run, owner: httpx.AsyncClient
) -> None:
    for name in ("a", "b", "c"):
        created = await owner.post(
            "/admin/v1/services", json={"name": name, "url": "http://a.internal"}
        )
        assert created.status_code == 201, created.text
    first = (await graph(AUDIT, filter={"resourceType": "service"}, first=2))["auditEvents"]
    assert [e["resourceId"] for e in first["nodes"]] == ["c", "b"]
    assert first["pageInfo"]["hasNextPage"] is True
    rest = await owner.get("/admin/v1/audit-events", params={"resource_type": "service"})
    assert [str(e["id"]) for e in rest.json()["items"][:2]] == [e["id"] for e in first["nodes"]]
    rest_first = rest.json()["items"][0]
    assert first["nodes"][0]["diff"] == rest_first["diff"]
    second = await graph(
        AUDIT, filter={"resourceType": "service"}, first=2, after=first["pageInfo"]["endCursor"]
    )
    assert [e["resourceId"] for e in second["auditEvents"]["nodes"]] == ["a"]
    assert await refused(graph, AUDIT, first=0) == (422, ["#/first"])


# ---------------------------------------------------------------------------- alerts

RULE = """mutation($name: String!, $input: AlertRuleSpecInput!) {
  createAlertRule(name: $name, input: $input) {
    __typename
    ... on AlertRulePayload {
      alertRule { name kind threshold windowSeconds etag status { state } }
    }
    ... on ValidationProblem { status errors { pointer } }
    ... on AlreadyExistsProblem { status }
    ... on ForbiddenProblem { status requiredPermission }
  }
}"""
UPDATE_RULE = """mutation($name: String!, $patch: AlertRuleSpecPatch!, $ifMatch: String) {
  updateAlertRule(name: $name, patch: $patch, ifMatch: $ifMatch) {
    __typename
    ... on AlertRulePayload { alertRule { threshold etag } }
    ... on PreconditionFailedProblem { status }
    ... on ForbiddenProblem { status }
  }
}"""
ERRORS_RULE = {"kind": "error_rate", "threshold": 0.05, "windowSeconds": 300}


async def test_alert_rules_crud_alerts_anomalies_and_events(
    app: FastAPI, graph: Run, owner: httpx.AsyncClient
) -> None:
    created = (await graph(RULE, name="checkout-errors", input=ERRORS_RULE))["createAlertRule"]
    assert created["__typename"] == "AlertRulePayload", created
    rule = created["alertRule"]
    assert rule["kind"] == "error_rate"
    assert rule["status"] is None
    rest = await owner.get("/admin/v1/alert-rules/checkout-errors")
    assert rest.headers["etag"] == rule["etag"]
    listed = await graph('{ alertRules(sort: "-name") { nodes { name etag } } }')
    assert listed["alertRules"]["nodes"] == [{"name": "checkout-errors", "etag": rule["etag"]}]
    changed = (
        await graph(
            UPDATE_RULE, name="checkout-errors", patch={"threshold": 0.1}, ifMatch=rule["etag"]
        )
    )["updateAlertRule"]
    assert changed["alertRule"]["threshold"] == 0.1
    stale = (
        await graph(
            UPDATE_RULE, name="checkout-errors", patch={"threshold": 0.2}, ifMatch=rule["etag"]
        )
    )["updateAlertRule"]
    assert stale == {"__typename": "PreconditionFailedProblem", "status": 412}
    alerts = (await graph("{ alerts(states: [OK]) { items { rule state threshold } counts } }"))[
        "alerts"
    ]
    assert alerts["items"] == [{"rule": "checkout-errors", "state": "ok", "threshold": 0.1}]
    assert alerts["counts"]["ok"] == 1
    await add_anomalies(app)
    anomalies = """query($filter: AnomalyConditionsInput, $after: String) {
      anomalies(first: 1, filter: $filter, after: $after) {
        nodes { credentialId signal details } pageInfo { hasNextPage endCursor } } }"""
    k1 = (await graph(anomalies, filter={"credentialId": "k1"}))["anomalies"]
    assert [a["details"]["n"] for a in k1["nodes"]] == [3]
    assert k1["pageInfo"]["hasNextPage"] is True
    after = k1["pageInfo"]["endCursor"]
    rest = await owner.get("/admin/v1/anomalies", params={"credential_id": "k1", "cursor": after})
    following = await graph(anomalies, filter={"credentialId": "k1"}, after=after)
    assert [a["details"] for a in following["anomalies"]["nodes"]] == [
        a["details"] for a in rest.json()["items"][:1]
    ]
    by_signal = (await graph(anomalies, filter={"signal": "distinct_ips"}))["anomalies"]
    assert [a["credentialId"] for a in by_signal["nodes"]] == ["k2"]
    too_long = '{ anomalies(filter: {consumer: "%s"}) { nodes { id } } }' % ("x" * 129)
    assert await refused(graph, too_long) == (422, ["#/consumer"])
    deleted = await graph(
        """mutation { deleteAlertRule(name: "checkout-errors") { __typename
             ... on Deleted { id } } }"""
    )
    assert deleted["deleteAlertRule"] == {"__typename": "Deleted", "id": "checkout-errors"}
    assert (await graph('{ alertRule(name: "checkout-errors") { name } }'))["alertRule"] is None
    # The event log, as REST replays it.
    events = (await graph("{ events(first: 500) { nodes { id kind subject } } }"))["events"]
    rest_events = (await owner.get("/admin/v1/events", params={"limit": 500})).json()["items"]
    assert [e["id"] for e in events["nodes"]] == [str(e["id"]) for e in rest_events]
    assert await refused(graph, '{ events(kind: ["alert.nope"]) { nodes { id } } }') == (
        422,
        ["#/kind/0"],
    )


async def test_alert_rule_problems_as_data(graph: Run) -> None:
    bad = (await graph(RULE, name="x", input={**ERRORS_RULE, "threshold": -1}))["createAlertRule"]
    assert bad["__typename"] == "ValidationProblem", bad
    assert [e["pointer"] for e in bad["errors"]] == ["#/threshold"]
    bad_name = (await graph(RULE, name="no spaces", input=ERRORS_RULE))["createAlertRule"]
    assert bad_name["__typename"] == "ValidationProblem"
    assert (await graph(RULE, name="r", input=ERRORS_RULE))["createAlertRule"]["__typename"] == (
        "AlertRulePayload"
    )
    again = (await graph(RULE, name="r", input=ERRORS_RULE))["createAlertRule"]
    assert again == {"__typename": "AlreadyExistsProblem", "status": 409}
    missing = await graph(
        """mutation { deleteAlertRule(name: "nope") { __typename
             ... on NotFoundProblem { target } } }"""
    )
    assert missing["deleteAlertRule"] == {"__typename": "NotFoundProblem", "target": "name"}


async def test_alerting_refuses_viewers_changes_and_org_limited_admins(
    graph_for: Callable[[httpx.AsyncClient], Run],
    client_for: ClientFactory,
    graph: Run,
    owner: httpx.AsyncClient,
    orgs: dict[str, str],
) -> None:
    viewer = graph_for(await client_for(Role.VIEWER))
    denied = (await viewer(RULE, name="r", input=ERRORS_RULE))["createAlertRule"]
    assert denied == {
        "__typename": "ForbiddenProblem",
        "status": 403,
        "requiredPermission": "alerts:write",
    }
    assert (await viewer("{ alertRules { nodes { name } } }"))["alertRules"]["nodes"] == []
    acme_rest = await client_for(Role.ADMIN, orgs["acme"])
    acme = graph_for(acme_rest)
    limited = (await acme(RULE, name="r", input=ERRORS_RULE))["createAlertRule"]
    assert limited["__typename"] == "ForbiddenProblem"
    assert await refused(acme, "{ alertRules { nodes { name } } }") == (403, [])
    # The event log shows them their organization's events only, as REST does.
    for name, org in (("a1", "acme"), ("g1", "globex")):
        created = await owner.post(
            "/admin/v1/consumers", json={"username": name, "organization": org}
        )
        assert created.status_code == 201, created.text
    events = "{ events(first: 500) { nodes { kind subject organizationId } } }"
    everything = (await graph(events))["events"]["nodes"]
    assert {e["organizationId"] for e in everything} >= {orgs["acme"], orgs["globex"]}
    theirs = (await acme(events))["events"]["nodes"]
    assert theirs
    assert {e["organizationId"] for e in theirs} == {orgs["acme"]}
    rest = (await acme_rest.get("/admin/v1/events", params={"limit": 500})).json()["items"]
    assert [e["subject"] for e in rest] == [e["subject"] for e in theirs]


# ---------------------------------------------------------------------------- analytics


async def _traffic(app: FastAPI, rows: list[tuple[str, str, str | None, float]]) -> None:
    """Request-log rows (route, service, consumer, latency ms) of this minute, rolled up
    (by a rollup round whose clock is two minutes ahead: the minute counts as closed)."""
    from sqlalchemy import insert

    from portcullis.analytics.rollups import Rollups
    from portcullis.store.analytics_tables import RequestLogRow

    now = time.time()
    at = int(now) * 1000
    values = [
        {
            "ts_ms": at + i,
            "request_id": f"req-{i}",
            "node": "test-node",
            "method": "GET",
            "path": "/x",
            "path_template": "/x",
            "route": route,
            "service": service,
            "upstream_target": "127.0.0.1:9",
            "consumer": consumer,
            "credential_id": None,
            "status": 200,
            "bytes_in": 10,
            "bytes_out": 100,
            "client_ip": "203.0.113.9",
            "user_agent": "tests",
            "latency_ms": latency,
            "upstream_ms": latency,
            "gateway_ms": 0.0,
            "flags": 0,
            "error_kind": None,
            "trace_id": None,
            "priority": None,
        }
        for i, (route, service, consumer, latency) in enumerate(rows)
    ]
    engine = app.state.admin.engine
    async with engine.begin() as conn:
        await conn.execute(insert(RequestLogRow), values)
    # The app's own rollup job may be rolling up at the same moment (its round wins the
    # cursor and, on the real clock, leaves this minute open): go on until it is rolled up.
    rollups = Rollups(engine, max_batches=1000, clock=lambda: now + 120)
    minute_end = (int(now) // 60 + 1) * 60

    async def rolled_up() -> bool:
        await rollups.run_once()
        position = (await rollups.positions())["minute"]
        return position is not None and position >= minute_end

    await eventually(rolled_up)


USAGE = """{
  routes { nodes { name usage(range: LAST_HOUR) { requests p95 } } }
  services { nodes { name usage { requests } } }
  consumers(first: 500) { nodes { username usage(range: LAST_DAY) { requests p50 } } }
}"""


async def test_analytics_and_usage_on_routes_services_and_consumers_match_rest(
    app: FastAPI, graph: Run, owner: httpx.AsyncClient
) -> None:
    document = {
        "services": [SERVICE],
        "routes": [ROUTE, {"name": "quiet", "service": "orders", "paths": ["/quiet"]}],
        "consumers": [{"username": "alice"}] + [{"username": f"c{i:03}"} for i in range(300)],
    }
    applied = (await graph(APPLY, document=document))["applyConfig"]
    assert applied["__typename"] == "ConfigAppliedPayload", applied
    await _traffic(app, [("orders", "orders", "alice", 10.0 * (i + 1)) for i in range(20)])
    data = await graph(USAGE)
    routes = {r["name"]: r["usage"] for r in data["routes"]["nodes"]}
    assert routes["orders"]["requests"] == 20
    assert routes["quiet"] == {"requests": 0, "p95": None}
    assert data["services"]["nodes"] == [{"name": "orders", "usage": {"requests": 20}}]
    consumers = {c["username"]: c["usage"] for c in data["consumers"]["nodes"]}
    assert consumers["alice"]["requests"] == 20
    assert consumers["c299"] == {"requests": 0, "p50": None}
    # Usage is read once per request for every entity of a kind: 301 consumers cost the
    # same analytics statements as one.
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement)

    engine = app.state.admin.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        many = await graph("{ consumers(first: 500) { nodes { usage { requests p95 } } } }")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(many["consumers"]["nodes"]) == 301
    analytics = [s for s in statements if "analytics_" in s]
    assert len(analytics) <= 2, analytics
    now = datetime.now(UTC)
    rest = await owner.get(
        "/admin/v1/analytics/latency",
        params={
            "route": "orders",
            "start": (now - timedelta(hours=1)).isoformat(),
            "end": now.isoformat(),
        },
    )
    assert routes["orders"]["p95"] == rest.json()["percentiles"]["p95"]
    top = await graph(
        """{ analyticsTopEndpoints(query: {limit: 5}) { items { route requests } }
             analyticsUsage(query: {route: "orders"}) { totals { requests } }
             consumerUsageReport(consumer: "alice") { consumer totals { requests } } }"""
    )
    assert top["analyticsTopEndpoints"]["items"] == [{"route": "orders", "requests": 20}]
    assert top["analyticsUsage"]["totals"]["requests"] == 20
    assert top["consumerUsageReport"]["totals"]["requests"] == 20
    # Refusals name the field, as REST's 422s do.
    backwards = """{ analyticsLatency(query: {start: "2026-01-02T00:00:00Z",
                     end: "2026-01-01T00:00:00Z"}) { count } }"""
    assert await refused(graph, backwards) == (422, ["#"])
    bad_name = '{ analyticsRealtime(query: {route: "no spaces"}) { requests } }'
    assert await refused(graph, bad_name) == (422, ["#/route"])
    bad_consumer = '{ consumerUsageReport(consumer: "no spaces") { consumer } }'
    assert await refused(graph, bad_consumer) == (422, ["#/consumer"])
    missing = await graph('{ consumerUsageReport(consumer: "ghost") { consumer } }')
    assert missing["consumerUsageReport"]["consumer"] == "ghost"


# ---------------------------------------------------------------------------- operations

PURGE = """mutation($route: String, $path: String, $pathPrefix: String) {
  purgeCache(route: $route, path: $path, pathPrefix: $pathPrefix) {
    __typename
    ... on CachePurged { route backend deleted }
    ... on ValidationProblem { errors { pointer } }
    ... on ForbiddenProblem { status }
    ... on NotFoundProblem { target }
  }
}"""


async def test_cache_purge_data_plane_event_types_and_plugin_schemas(
    app: FastAPI,
    graph_for: Callable[[httpx.AsyncClient], Run],
    client_for: ClientFactory,
    graph: Run,
    owner: httpx.AsyncClient,
    orgs: dict[str, str],
) -> None:
    done = (await graph(PURGE, route="orders"))["purgeCache"]
    assert done == {
        "__typename": "CachePurged",
        "route": "orders",
        "backend": "memory",
        "deleted": None,
    }
    both = (await graph(PURGE, path="/a", pathPrefix="/b"))["purgeCache"]
    assert both == {"__typename": "ValidationProblem", "errors": [{"pointer": "#/path_prefix"}]}
    for bad, pointer in (({"path": "relative"}, "#/path"), ({"route": "bad name"}, "#/route")):
        invalid = (await graph(PURGE, **bad))["purgeCache"]
        assert invalid == {"__typename": "ValidationProblem", "errors": [{"pointer": pointer}]}
    acme = graph_for(await client_for(Role.ADMIN, orgs["acme"]))
    assert (await acme(PURGE))["purgeCache"] == {"__typename": "ForbiddenProblem", "status": 403}
    assert (await acme(PURGE, route="orders"))["purgeCache"] == {
        "__typename": "NotFoundProblem",
        "target": "route",
    }
    viewer = graph_for(await client_for(Role.VIEWER))
    assert (await viewer(PURGE))["purgeCache"]["__typename"] == "ForbiddenProblem"
    for org, name in (("acme", "a-up"), ("globex", "g-up")):
        body = {"name": name, "organization": org, "targets": [{"target": "10.0.0.1:80"}]}
        created = await owner.post("/admin/v1/upstreams", json=body)
        assert created.status_code == 201, created.text
    assert await upstream_health_reporter(app.state.admin.engine, ["a-up", "g-up"]).beat()
    views = """{ dataPlaneNodes(sort: "-heartbeat_at") { nodes { nodeName state } }
                upstreamHealth { workers upstreams { name status } }
                upstreams { nodes { name health { name status targets { target status } } } }
                eventTypes { name version schema }
                pluginSchemas { name title }
                known: pluginSchema(name: "cors") { name schema }
                unknown: pluginSchema(name: "nope") { name } }"""
    seen = await graph(views)
    # The worker serves version 1 of a later config: behind (how far depends on time).
    [node] = seen["dataPlaneNodes"]["nodes"]
    assert node["nodeName"] == "dp"
    assert node["state"] in {"propagating", "lagging"}
    assert seen["upstreamHealth"]["upstreams"] == [
        {"name": "a-up", "status": "up"},
        {"name": "g-up", "status": "up"},
    ]
    health = {u["name"]: u["health"] for u in seen["upstreams"]["nodes"]}
    assert health["a-up"] == {
        "name": "a-up",
        "status": "up",
        "targets": [{"target": "10.0.0.1:80", "status": "up"}],
    }
    rest = (await owner.get("/admin/v1/data-plane/upstreams")).json()
    assert [u["name"] for u in rest["upstreams"]] == ["a-up", "g-up"]
    # An organization's admins see their upstreams' health only, as over REST.
    theirs = await acme(views)
    assert [u["name"] for u in theirs["upstreamHealth"]["upstreams"]] == ["a-up"]
    assert [u["name"] for u in theirs["upstreams"]["nodes"]] == ["a-up"]
    assert "key.created" in {e["name"] for e in seen["eventTypes"]}
    assert "cors" in {p["name"] for p in seen["pluginSchemas"]}
    assert seen["known"]["schema"]["$schema"].startswith("https://json-schema.org/")
    assert seen["unknown"] is None
    assert await refused(graph, '{ dataPlaneNodes(sort: "pid") { nodes { id } } }') == (422, ["#"])


# ---------------------------------------------------------------------------- webhooks

CREATE_HOOK = """mutation($input: WebhookCreateInput!) {
  createWebhook(input: $input) {
    __typename
    ... on WebhookSecretPayload { secret webhook { id etag url enabled organizationId } }
    ... on ValidationProblem { errors { pointer } }
    ... on ForbiddenProblem { requiredPermission }
  }
}"""
HOOK = {"url": "https://93.184.216.34/hooks/in", "eventTypes": ["key.*"]}


async def test_webhooks_crud_rotation_tests_and_deliveries(
    graph: Run, owner: httpx.AsyncClient
) -> None:
    created = (await graph(CREATE_HOOK, input=HOOK))["createWebhook"]
    assert created["__typename"] == "WebhookSecretPayload", created
    assert created["secret"].startswith("whsec_")
    hook = created["webhook"]
    rest = await owner.get(f"/admin/v1/webhooks/{hook['id']}")
    assert rest.headers["etag"] == hook["etag"]
    listed = await graph("{ webhooks { nodes { id url headerNames } } }")
    assert listed["webhooks"]["nodes"] == [
        {"id": hook["id"], "url": HOOK["url"], "headerNames": []}
    ]
    disabled = await graph(
        """mutation($id: ID!, $m: String) { disableWebhook(id: $id, ifMatch: $m) {
             __typename ... on WebhookPayload { webhook { enabled disabledReason } } } }""",
        id=hook["id"],
        m=hook["etag"],
    )
    assert disabled["disableWebhook"]["webhook"] == {"enabled": False, "disabledReason": "manual"}
    enabled = await graph(
        """mutation($id: ID!) { enableWebhook(id: $id) {
             ... on WebhookPayload { webhook { enabled } } } }""",
        id=hook["id"],
    )
    assert enabled["enableWebhook"]["webhook"]["enabled"] is True
    rotated = await graph(
        """mutation($id: ID!) { rotateWebhookSecret(id: $id, graceSeconds: 60) {
             __typename ... on WebhookSecretPayload { secret webhook { signingSecrets } } } }""",
        id=hook["id"],
    )
    assert rotated["rotateWebhookSecret"]["secret"].startswith("whsec_")
    assert rotated["rotateWebhookSecret"]["secret"] != created["secret"]
    assert rotated["rotateWebhookSecret"]["webhook"]["signingSecrets"] == 2
    tested = await graph(
        """mutation($id: ID!) { testWebhook(id: $id) {
             __typename ... on WebhookTestPayload { messageId } } }""",
        id=hook["id"],
    )
    message = tested["testWebhook"]["messageId"]
    deliveries = await graph(
        """query($id: String) { webhookDeliveries(endpointId: $id) {
             nodes { id eventType status attempts { attempt } } } }""",
        id=hook["id"],
    )
    assert deliveries["webhookDeliveries"]["nodes"] == [
        {"id": message, "eventType": "webhook.test", "status": "pending", "attempts": []}
    ]
    replayed = await graph(
        """mutation($id: ID!) { replayFailedWebhookDeliveries(id: $id) {
             __typename ... on WebhookReplayedPayload { replayed } } }""",
        id=hook["id"],
    )
    assert replayed["replayFailedWebhookDeliveries"]["replayed"] == 0
    naive = await graph(
        """mutation($id: ID!) { replayFailedWebhookDeliveries(id: $id, since: "2026-01-01T00:00:00")
             { __typename ... on ValidationProblem { errors { pointer } } } }""",
        id=hook["id"],
    )
    assert naive["replayFailedWebhookDeliveries"]["errors"] == [{"pointer": "#/since"}]
    by_status = """query($id: String, $filter: DeliveryConditionsInput) {
        webhookDeliveries(endpointId: $id, filter: $filter) { nodes { id } } }"""
    failed = await graph(by_status, id=hook["id"], filter={"status": "failed"})
    assert failed["webhookDeliveries"]["nodes"] == []
    assert await refused(graph, by_status, filter={"since": "2026-01-01T00:00:00"}) == (
        422,
        ["#/since"],
    )
    pending = await graph(
        """mutation($id: ID!, $m: String!) { replayWebhookDelivery(id: $id, messageId: $m) {
             __typename ... on Problem { status } } }""",
        id=hook["id"],
        m=message,
    )
    assert pending["replayWebhookDelivery"]["status"] == 409
    deleted = await graph(
        "mutation($id: ID!) { deleteWebhook(id: $id) { __typename ... on Deleted { id } } }",
        id=hook["id"],
    )
    assert deleted["deleteWebhook"] == {"__typename": "Deleted", "id": hook["id"]}
    # The secret is in no node type: only the two payloads carry it.
    sdl = (await owner.get("/graphql/schema.graphql")).text
    webhook_type = sdl.split("type Webhook {", 1)[1].split("}", 1)[0]
    assert "secret" not in webhook_type.replace("signingSecrets", "")


async def test_webhook_problems_and_organization_scoping(
    graph_for: Callable[[httpx.AsyncClient], Run],
    client_for: ClientFactory,
    graph: Run,
    orgs: dict[str, str],
) -> None:
    bad = (await graph(CREATE_HOOK, input={**HOOK, "url": "http://127.0.0.1/in"}))["createWebhook"]
    assert bad == {"__typename": "ValidationProblem", "errors": [{"pointer": "#/url"}]}
    globex = (await graph(CREATE_HOOK, input={**HOOK, "organization": "globex"}))["createWebhook"]
    assert globex["webhook"]["organizationId"] == orgs["globex"]
    acme_rest = await client_for(Role.ADMIN, orgs["acme"])
    acme = graph_for(acme_rest)
    own = (await acme(CREATE_HOOK, input=HOOK))["createWebhook"]
    assert own["webhook"]["organizationId"] == orgs["acme"]
    seen = (await acme("{ webhooks { nodes { id } } }"))["webhooks"]["nodes"]
    assert seen == [{"id": own["webhook"]["id"]}]
    rest = (await acme_rest.get("/admin/v1/webhooks")).json()["items"]
    assert [h["id"] for h in rest] == [own["webhook"]["id"]]
    other = globex["webhook"]["id"]
    assert (await acme("query($id: ID!) { webhook(id: $id) { id } }", id=other))["webhook"] is None
    hidden = await acme(
        """mutation($id: ID!) { disableWebhook(id: $id) { __typename
             ... on NotFoundProblem { status } } }""",
        id=other,
    )
    assert hidden["disableWebhook"] == {"__typename": "NotFoundProblem", "status": 404}
    viewer = graph_for(await client_for(Role.VIEWER))
    denied = (await viewer(CREATE_HOOK, input=HOOK))["createWebhook"]
    assert denied == {"__typename": "ForbiddenProblem", "requiredPermission": "webhooks:write"}
