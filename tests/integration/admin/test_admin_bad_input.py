"""Bad request bodies get the answer that says what is wrong: 400, 415 or a strict 422."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from portcullis.services.rbac import Role

PROBLEM = "application/problem+json"
MERGE_PATCH = "application/merge-patch+json"


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def pointers(body: dict[str, Any]) -> list[str]:
    return [e["pointer"] for e in body.get("errors", [])]


async def setup_route(owner: httpx.AsyncClient) -> None:
    service = await owner.post(
        "/admin/v1/services", json={"name": "orders", "url": "http://127.0.0.1:9000"}
    )
    assert service.status_code == 201, service.text
    route = await owner.post(
        "/admin/v1/routes", json={"name": "orders", "service": "orders", "paths": ["/o"]}
    )
    assert route.status_code == 201, route.text


# ---------------------------------------------------------------------------- malformed JSON

BROKEN = b'{\n  "name": "orders",\n  "url": "http://127.0.0.1:9000"\n  "tags": []\n}'
# The parser stops at the third line's end: line 4, column 3 is the unexpected `"tags"`.


@pytest.mark.parametrize(
    ("method", "path", "content_type"),
    [
        ("POST", "/admin/v1/services", "application/json"),
        ("PATCH", "/admin/v1/services/orders", MERGE_PATCH),
        ("PUT", "/admin/v1/config", "application/json"),
    ],
)
async def test_malformed_json_is_400_with_line_and_column(
    owner: httpx.AsyncClient, method: str, path: str, content_type: str
) -> None:
    await setup_route(owner)
    response = await owner.request(
        method, path, content=BROKEN, headers={"content-type": content_type}
    )
    body = problem(response, 400)
    assert body["type"] == "https://portcullis.dev/problems/malformed-body"
    assert (body["line"], body["column"]) == (4, 3)
    assert "line 4, column 3" in body["detail"]
    assert "Expecting ',' delimiter" in body["detail"]


async def test_malformed_yaml_import_is_400_with_line_and_column(
    owner: httpx.AsyncClient,
) -> None:
    response = await owner.put(
        "/admin/v1/config",
        content=b"services:\n  - name: a\n    url: [unclosed\n",
        headers={"content-type": "application/yaml"},
    )
    body = problem(response, 400)
    assert body["type"] == "https://portcullis.dev/problems/malformed-body"
    assert body["line"] == 4


# ---------------------------------------------------------------------------- media types


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
async def test_a_json_endpoint_refuses_other_media_types_with_415(
    owner: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    document = json.dumps({"name": "orders", "url": "http://127.0.0.1:9000"}).encode()
    request = owner.build_request("POST", "/admin/v1/services", content=document, headers=headers)
    assert request.headers.get("content-type") == content_type
    response = await owner.send(request)
    body = problem(response, 415)
    assert body["type"] == "https://portcullis.dev/problems/unsupported-media-type"
    assert "application/json" in body["detail"]
    assert (await owner.get("/admin/v1/services/orders")).status_code == 404


async def test_json_subtypes_are_json(owner: httpx.AsyncClient) -> None:
    await setup_route(owner)
    patched = await owner.patch(
        "/admin/v1/routes/orders",
        content=b'{"priority": 5}',
        headers={"content-type": MERGE_PATCH + "; charset=utf-8"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["priority"] == 5


# ---------------------------------------------------------------------------- strict types


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        ({"strip_path": "yes"}, "#/strip_path"),
        ({"strip_path": 1}, "#/strip_path"),
        ({"priority": "5"}, "#/priority"),
        ({"priority": 5.0}, "#/priority"),
        ({"paths": "/o"}, "#/paths"),
    ],
)
async def test_entity_bodies_are_strict_json(
    owner: httpx.AsyncClient, payload: dict[str, Any], pointer: str
) -> None:
    await setup_route(owner)
    created = await owner.post(
        "/admin/v1/routes", json={"name": "other", "service": "orders", **payload}
    )
    assert pointer in pointers(problem(created, 422))
    replaced = await owner.put(
        "/admin/v1/routes/orders", json={"name": "orders", "service": "orders", **payload}
    )
    assert pointer in pointers(problem(replaced, 422))
    patched = await owner.patch(
        "/admin/v1/routes/orders",
        content=json.dumps(payload),
        headers={"content-type": MERGE_PATCH},
    )
    assert pointer in pointers(problem(patched, 422))
    route = (await owner.get("/admin/v1/routes/orders")).json()
    assert (route["strip_path"], route["priority"], route["paths"]) == (True, 0, ["/o"])


async def test_strict_json_keeps_the_conversions_json_needs(owner: httpx.AsyncClient) -> None:
    # Enums, datetimes and floats given as integers are what JSON can carry: still accepted.
    upstream = await owner.post(
        "/admin/v1/upstreams",
        json={"name": "pool", "algorithm": "least-connections", "targets": [{"target": "h:1"}]},
    )
    assert upstream.status_code == 201, upstream.text
    service = await owner.post(
        "/admin/v1/services",
        json={"name": "s", "upstream": "pool", "timeouts": {"read": 30, "connect": 1.5}},
    )
    assert service.status_code == 201, service.text
    assert service.json()["timeouts"]["read"] == 30.0
    consumer = await owner.post("/admin/v1/consumers", json={"username": "acme"})
    assert consumer.status_code == 201, consumer.text
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    override = await owner.post(
        "/admin/v1/overrides",
        json={
            "name": "o",
            "consumer": "acme",
            "multiplier": 2,
            "expires_at": later,
            "reason": "launch",
        },
    )
    assert override.status_code == 201, override.text


async def test_other_routers_are_strict_too(owner: httpx.AsyncClient) -> None:
    await owner.post("/admin/v1/consumers", json={"username": "acme"})
    key = await owner.post("/admin/v1/consumers/acme/keys", json={"name": "k"})
    assert key.status_code == 201, key.text
    rotate = f"/admin/v1/keys/{key.json()['id']}/rotate"
    wrong = await owner.post(rotate, json={"grace_seconds": "60"})
    assert pointers(problem(wrong, 422)) == ["#/grace_seconds"]
    assert (await owner.get(f"/admin/v1/keys/{key.json()['id']}")).json()["replaced_by"] is None
    assert (await owner.post(rotate, json={"grace_seconds": 60})).status_code == 201


async def test_authorization_comes_before_body_validation(client_for: Any) -> None:
    viewer = await client_for(Role.VIEWER)
    response = await viewer.post(
        "/admin/v1/routes", json={"name": "r", "service": "s", "strip_path": "yes"}
    )
    problem(response, 403)


# ---------------------------------------------------------------------------- overrides


def override(expires_at: datetime, name: str = "stop") -> dict[str, Any]:
    return {
        "name": name,
        "consumer": "acme",
        "limits": {"per-second": 0},
        "expires_at": expires_at.isoformat(),
        "reason": "incident 7",
    }


async def with_plan(owner: httpx.AsyncClient) -> None:
    plan = await owner.post(
        "/admin/v1/plans",
        json={"name": "free", "limits": [{"name": "per-second", "limit": 5, "period": "1s"}]},
    )
    assert plan.status_code == 201, plan.text
    consumer = await owner.post("/admin/v1/consumers", json={"username": "acme", "plan": "free"})
    assert consumer.status_code == 201, consumer.text


async def test_an_override_that_already_expired_is_refused(owner: httpx.AsyncClient) -> None:
    await with_plan(owner)
    past = datetime.now(UTC) - timedelta(minutes=1)
    created = await owner.post("/admin/v1/overrides", json=override(past))
    body = problem(created, 422)
    assert pointers(body) == ["#/expires_at"]
    assert "future" in body["errors"][0]["detail"]
    assert (await owner.get("/admin/v1/overrides/stop")).status_code == 404

    future = datetime.now(UTC) + timedelta(hours=1)
    assert (await owner.post("/admin/v1/overrides", json=override(future))).status_code == 201
    moved_back = await owner.patch(
        "/admin/v1/overrides/stop",
        content=json.dumps({"expires_at": past.isoformat()}),
        headers={"content-type": MERGE_PATCH},
    )
    assert pointers(problem(moved_back, 422)) == ["#/expires_at"]

    current = (await owner.get("/admin/v1/config")).json()
    current["overrides"].append(override(past, "late"))
    imported = await owner.put("/admin/v1/config", json=current)
    assert pointers(problem(imported, 422)) == ["#/overrides/1/expires_at"]


async def test_an_override_that_expired_since_does_not_block_other_edits(
    owner: httpx.AsyncClient, app: Any
) -> None:
    # An override stored while it was current may lapse; editing anything else, or the
    # override's other fields, must not start failing because of it.
    await with_plan(owner)
    past = datetime.now(UTC) - timedelta(minutes=1)
    current = (await owner.get("/admin/v1/config")).json()
    current.setdefault("overrides", []).append(override(past))
    state = app.state.admin
    from portcullis.model.loader import load_config_data

    await state.editor.repository.apply(load_config_data(current), author="t", comment="lapsed")
    reason = await owner.patch(
        "/admin/v1/overrides/stop",
        content=json.dumps({"reason": "incident 7, closed"}),
        headers={"content-type": MERGE_PATCH},
    )
    assert reason.status_code == 200, reason.text
    other = await owner.post("/admin/v1/consumers", json={"username": "beta"})
    assert other.status_code == 201, other.text


@pytest.mark.parametrize(
    ("method", "path", "media"),
    [
        ("POST", "/admin/v1/config/diff", "application/json"),
        ("POST", "/admin/v1/config/diff", "application/yaml"),
        ("PUT", "/admin/v1/config", "application/json"),
        ("PUT", "/admin/v1/config", "application/yaml"),
    ],
)
async def test_a_config_nested_too_deeply_is_400_not_a_crash(
    owner: httpx.AsyncClient, method: str, path: str, media: str
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = await owner.request(method, path, content=deep, headers={"content-type": media})
    assert response.status_code == 400, response.text
    assert "nested too deeply" in response.json()["detail"]
    assert (await owner.get("/admin/v1/config")).status_code == 200
