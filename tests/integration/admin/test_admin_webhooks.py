"""`/admin/v1/webhooks`: the endpoint resource over HTTP (contract, validation naming the
field, the SSRF check at create/update time, If-Match, Idempotency-Key, secrets shown
once and never audited, organization scoping), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import httpx
import pytest

from portcullis.services.rbac import Role

HOOK = {"url": "https://93.184.216.34/hooks/in", "event_types": ["key.*"]}
ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]  # the `client_for` fixture
MERGE_PATCH = {"content-type": "application/merge-patch+json"}


async def _create(client: httpx.AsyncClient, **extra: object) -> httpx.Response:
    return await client.post("/admin/v1/webhooks", json={**HOOK, **extra})


def _pointers(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [e["pointer"] for e in response.json()["errors"]]


@pytest.mark.both_stores
async def test_create_shows_the_secret_once_and_crud_follows_etags(
    owner: httpx.AsyncClient,
) -> None:
    created = await _create(
        owner,
        description="ops",
        headers={"X-Api-Token": "hunter2-header-value"},
        rate_limit=10,
        max_concurrency=8,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_")
    assert created.headers["location"] == f"/admin/v1/webhooks/{body['id']}"
    assert created.headers["cache-control"] == "no-store"
    assert body["header_names"] == ["X-Api-Token"]
    assert body["signature"] == "v1"
    assert body["public_key"] is None
    ident, secret = body["id"], body["secret"]

    shown = await owner.get(f"/admin/v1/webhooks/{ident}")
    assert shown.status_code == 200
    assert "secret" not in shown.json()
    assert secret not in shown.text
    assert "hunter2" not in shown.text
    assert shown.headers["etag"] == created.headers["etag"]
    etag = shown.headers["etag"]

    stale = await owner.patch(
        f"/admin/v1/webhooks/{ident}",
        content=json.dumps({"description": "x"}),
        headers={**MERGE_PATCH, "if-match": '"stale"'},
    )
    assert stale.status_code == 412, stale.text
    patched = await owner.patch(
        f"/admin/v1/webhooks/{ident}",
        content=json.dumps(
            {"event_types": ["key.revoked", "alert.*"], "headers": {"X-Extra": "v"}}
        ),
        headers={**MERGE_PATCH, "if-match": etag},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["event_types"] == ["key.revoked", "alert.*"]
    assert patched.json()["header_names"] == ["X-Api-Token", "X-Extra"]
    assert patched.json()["version"] == 2
    assert patched.headers["etag"] != etag
    removed = await owner.patch(
        f"/admin/v1/webhooks/{ident}",
        content=json.dumps({"headers": {"X-Api-Token": None}}),
        headers=MERGE_PATCH,
    )
    assert removed.json()["header_names"] == ["X-Extra"]

    disabled = await owner.post(f"/admin/v1/webhooks/{ident}/disable")
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabled_reason"] == "manual"
    enabled = await owner.post(f"/admin/v1/webhooks/{ident}/enable")
    assert enabled.json()["enabled"] is True
    assert enabled.json()["disabled_reason"] is None

    rotated = await owner.post(f"/admin/v1/webhooks/{ident}/rotate-secret", json={})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != secret
    assert rotated.json()["signing_secrets"] == 2

    listed = await owner.get("/admin/v1/webhooks", params={"event_type": "alert.firing"})
    assert [i["id"] for i in listed.json()["items"]] == [ident]
    none = await owner.get("/admin/v1/webhooks", params={"event_type": "key.created"})
    assert none.json()["items"] == []
    assert (await owner.get("/admin/v1/webhooks?enabled=false")).json()["items"] == []

    audit = await owner.get("/admin/v1/audit-events", params={"resource_type": "webhook_endpoint"})
    actions = sorted(e["action"] for e in audit.json()["items"])
    assert actions == ["create", "disable", "enable", "rotate-secret", "update", "update"]
    for leaked in (secret, rotated.json()["secret"], "hunter2-header-value"):
        assert leaked not in audit.text

    assert (await owner.delete(f"/admin/v1/webhooks/{ident}")).status_code == 204
    assert (await owner.get(f"/admin/v1/webhooks/{ident}")).status_code == 404


async def test_bad_input_is_a_problem_naming_the_field(owner: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"url": "ftp://93.184.216.34/x"}, "#/url"),
        ({"url": "https://user:pw@93.184.216.34/x"}, "#/url"),
        ({"event_types": []}, "#/event_types"),
        ({"event_types": ["key.*", "nope.*"]}, "#/event_types/1"),
        ({"event_types": ["key.rev*"]}, "#/event_types/0"),
        ({"headers": {"Connection": "close"}}, "#/headers/Connection/[key]"),
        ({"headers": {"webhook-id": "x"}}, "#/headers/webhook-id/[key]"),
        ({"filters": {"plan": "gold"}}, "#/filters/plan/[key]"),
        ({"max_concurrency": 65}, "#/max_concurrency"),
        ({"max_concurrency": 0}, "#/max_concurrency"),
        ({"rate_limit": 0}, "#/rate_limit"),
        ({"consumer": "nobody"}, "#/consumer"),
        ({"organization": "no-such-org"}, "#/organization"),
        ({"signature": "v2"}, "#/signature"),
    ]
    for extra, pointer in cases:
        assert pointer in _pointers(await _create(owner, **extra)), extra
    # Times are RFC 3339, never a number read as a Unix time.
    for query in ("until=0.5", "since=1700000000", "since=2026-01-01T00:00:00"):
        listed = await owner.get(f"/admin/v1/webhooks/deliveries?{query}")
        assert listed.status_code == 422, (query, listed.text)


async def test_private_destinations_are_refused_unless_allowlisted(
    owner: httpx.AsyncClient,
) -> None:
    for url in (
        "http://127.0.0.1:8001/admin",
        "http://localhost/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:10.0.0.1]/x",
        "https://10.1.2.3/x",
    ):
        refused = await _create(owner, url=url)
        assert _pointers(refused) == ["#/url"], url
        assert "PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS" in refused.text
    created = (await _create(owner)).json()
    moved = await owner.patch(
        f"/admin/v1/webhooks/{created['id']}",
        content=json.dumps({"url": "http://192.168.1.1/"}),
        headers=MERGE_PATCH,
    )
    assert _pointers(moved) == ["#/url"]
    # A host that does not resolve now is accepted (deliveries check every address).
    assert (await _create(owner, url="https://hooks.invalid/in")).status_code == 201


async def test_v1a_endpoints_show_the_public_key_never_the_signing_key(
    owner: httpx.AsyncClient,
) -> None:
    created = await _create(owner, signature="v1a")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whpk_")
    assert body["public_key"] == body["secret"]
    shown = await owner.get(f"/admin/v1/webhooks/{body['id']}")
    assert shown.json()["public_key"] == body["public_key"]
    rotated = await owner.post(f"/admin/v1/webhooks/{body['id']}/rotate-secret")
    assert rotated.json()["secret"].startswith("whpk_")
    assert rotated.json()["secret"] != body["secret"]
    for response in (created, shown, rotated):
        assert "whsk_" not in response.text


async def test_idempotency_key_replays_the_create(owner: httpx.AsyncClient) -> None:
    headers = {"idempotency-key": "create-hook-1"}
    first = await owner.post("/admin/v1/webhooks", json=HOOK, headers=headers)
    again = await owner.post("/admin/v1/webhooks", json=HOOK, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len((await owner.get("/admin/v1/webhooks")).json()["items"]) == 1


async def test_list_pages_with_a_cursor(owner: httpx.AsyncClient) -> None:
    ids = {(await _create(owner, description=str(i))).json()["id"] for i in range(3)}
    seen: list[str] = []
    url: str | None = "/admin/v1/webhooks?limit=2"
    while url is not None:
        page = (await owner.get(url)).json()
        seen += [i["id"] for i in page["items"]]
        url = page["next"]
    assert sorted(seen) == sorted(ids)


@pytest.mark.both_stores
async def test_organizations_see_only_their_endpoints_and_consumers(
    owner: httpx.AsyncClient, client_for: ClientFactory, orgs: dict[str, str]
) -> None:
    for name in orgs:
        made = await owner.post(
            "/admin/v1/consumers", json={"username": f"{name}-app", "organization": name}
        )
        assert made.status_code == 201, made.text
    acme = await client_for(Role.OPERATOR, orgs["acme"])
    globex = await client_for(Role.OPERATOR, orgs["globex"])
    mine = await _create(acme, consumer="acme-app")
    assert mine.status_code == 201, mine.text
    assert mine.json()["organization"] == "acme"
    # Another organization's consumer is unknown to a limited admin; naming another
    # organization is refused.
    assert _pointers(await _create(acme, consumer="globex-app")) == ["#/consumer"]
    assert (await _create(acme, organization="globex")).status_code == 403
    # The owner may not scope an endpoint of acme to globex's consumer either.
    assert _pointers(await _create(owner, organization="acme", consumer="globex-app")) == [
        "#/consumer"
    ]
    ident = mine.json()["id"]
    for method, path in (
        ("GET", f"/admin/v1/webhooks/{ident}"),
        ("DELETE", f"/admin/v1/webhooks/{ident}"),
        ("POST", f"/admin/v1/webhooks/{ident}/test"),
        ("POST", f"/admin/v1/webhooks/{ident}/replay-failed"),
        ("GET", f"/admin/v1/webhooks/{ident}/deliveries"),
    ):
        assert (await globex.request(method, path)).status_code == 404, (method, path)
    assert (await globex.get("/admin/v1/webhooks")).json()["items"] == []
    assert [i["id"] for i in (await acme.get("/admin/v1/webhooks")).json()["items"]] == [ident]
    everything = await owner.get("/admin/v1/webhooks", params={"organization": "acme"})
    assert [i["id"] for i in everything.json()["items"]] == [ident]


async def test_viewers_read_but_do_not_write(client_for: ClientFactory) -> None:
    viewer = await client_for(Role.VIEWER)
    assert (await viewer.get("/admin/v1/webhooks")).status_code == 200
    refused = await _create(viewer)
    assert refused.status_code == 403
    assert refused.json()["required_permission"] == "webhooks:write"


async def test_replay_failed_takes_rfc3339_times_in_its_body(owner: httpx.AsyncClient) -> None:
    ident = (await _create(owner)).json()["id"]
    path = f"/admin/v1/webhooks/{ident}/replay-failed"
    ok = await owner.post(path, json={"since": "2026-01-01T00:00:00+00:00"})
    assert ok.status_code == 202, ok.text
    assert ok.json() == {"replayed": 0}
    for bad in ({"since": 1700000000}, {"until": "yesterday"}, {"since": "2026-01-01T00:00:00"}):
        assert _pointers(await owner.post(path, json=bad)) == [f"#/{next(iter(bad))}"], bad
    backwards = {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    assert _pointers(await owner.post(path, json=backwards)) == ["#/until"]
