"""Idempotency-Key on POST: replay, 422 for another payload, 409 while in flight, scoping."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from portcullis.services.rbac import Role
from portcullis.services.state import AdminState


async def test_same_key_and_payload_replays_the_first_response(owner: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "k-1"}
    body = {"name": "orders", "url": "http://127.0.0.1:1"}
    first = await owner.post("/admin/v1/services", json=body, headers=headers)
    assert first.status_code == 201, first.text
    second = await owner.post("/admin/v1/services", json=body, headers=headers)
    assert second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["x-content-type-options"] == "nosniff"
    versions = (await owner.get("/admin/v1/config/versions")).json()["items"]
    assert len(versions) == 1
    # Without the key the same request is a real second attempt: a conflict.
    assert (await owner.post("/admin/v1/services", json=body)).status_code == 409


async def test_same_key_with_another_payload_is_422(owner: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "k-2"}
    await owner.post("/admin/v1/consumers", json={"username": "a"}, headers=headers)
    other = await owner.post("/admin/v1/consumers", json={"username": "b"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")


async def test_keys_are_scoped_per_caller_and_endpoint(
    owner: httpx.AsyncClient,
    client_for,  # type: ignore[no-untyped-def]
) -> None:
    other: httpx.AsyncClient = await client_for(Role.ADMIN)
    headers = {"Idempotency-Key": "shared"}
    assert (
        await owner.post("/admin/v1/consumers", json={"username": "a"}, headers=headers)
    ).status_code == 201
    mine = await other.post("/admin/v1/consumers", json={"username": "b"}, headers=headers)
    assert mine.status_code == 201
    assert "idempotent-replayed" not in mine.headers
    elsewhere = await owner.post("/admin/v1/upstreams", json={"name": "u"}, headers=headers)
    assert elsewhere.status_code == 201


async def test_concurrent_retry_is_409_while_the_first_runs(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    state: AdminState = app.state.admin
    original = state.editor.repository.apply
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow_apply(*args, **kwargs):  # type: ignore[no-untyped-def]
        entered.set()
        await release.wait()
        return await original(*args, **kwargs)

    state.editor.repository.apply = slow_apply  # type: ignore[method-assign]
    headers = {"Idempotency-Key": "k-3"}
    first = asyncio.create_task(
        owner.post("/admin/v1/consumers", json={"username": "a"}, headers=headers)
    )
    await asyncio.wait_for(entered.wait(), 10)
    retry = await owner.post("/admin/v1/consumers", json={"username": "a"}, headers=headers)
    assert retry.status_code == 409
    assert retry.headers["retry-after"] == "1"
    assert retry.json()["type"].endswith("/idempotency-key-in-flight")
    release.set()
    assert (await first).status_code == 201
    state.editor.repository.apply = original  # type: ignore[method-assign]
    replay = await owner.post("/admin/v1/consumers", json={"username": "a"}, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"


async def test_client_errors_are_replayed_and_bad_keys_rejected(owner: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "k-4"}
    invalid = await owner.post(
        "/admin/v1/routes", json={"name": "r", "service": "x"}, headers=headers
    )
    assert invalid.status_code == 422
    # A 4xx answer is a final answer for that payload and is replayed too.
    again = await owner.post(
        "/admin/v1/routes", json={"name": "r", "service": "x"}, headers=headers
    )
    assert again.status_code == 422
    assert again.headers["idempotent-replayed"] == "true"
    bad_key = await owner.post(
        "/admin/v1/consumers", json={"username": "z"}, headers={"Idempotency-Key": "x" * 300}
    )
    assert bad_key.status_code == 400


async def test_server_errors_are_forgotten_so_a_retry_runs(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    state: AdminState = app.state.admin
    original = state.editor.repository.apply

    async def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("store exploded")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Idempotency-Key": "k-5", "authorization": owner.headers["authorization"]}
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        state.editor.repository.apply = broken  # type: ignore[method-assign]
        failed = await client.post("/admin/v1/consumers", json={"username": "a"}, headers=headers)
        assert failed.status_code == 500
        assert failed.headers["content-type"] == "application/problem+json"
        assert "store exploded" not in failed.text
        state.editor.repository.apply = original  # type: ignore[method-assign]
        retried = await client.post("/admin/v1/consumers", json={"username": "a"}, headers=headers)
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers
