"""Persisted documents on `/graphql`: Apollo's automatic persisted queries over HTTP
(POST and GET), registration only after validation, documents shared by two control
planes on one store, trusted-documents-only mode, APQ switched off; each refusal a
GraphQL error with `extensions.code` and the status of its media type."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from admin_support import signed_in
from fastapi import FastAPI

from portcullis.admin.app import create_admin_app
from portcullis.services.graphql_documents import SqlDocumentStore
from portcullis.settings import Settings

GRAPHQL_RESPONSE = "application/graphql-response+json"
QUERY = "query Services { services { nodes { name } } }"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def pq(sha256: str, version: int = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": sha256}}


def documents_of(app: FastAPI) -> SqlDocumentStore:
    return SqlDocumentStore(app.state.admin.engine)


def code_of(response: httpx.Response) -> str:
    body = response.json()
    assert "data" not in body, body
    return str(body["errors"][0]["extensions"]["code"])


def app_with(database_url: str, **settings: Any) -> FastAPI:
    return create_admin_app(Settings(database_url=database_url, log_json=False, **settings))


@pytest.mark.both_stores
async def test_the_apq_round_trip(
    app: FastAPI, owner: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    post: Callable[..., Any] = owner.post
    hashed = {"extensions": pq(sha(QUERY))}
    # A credential first: an anonymous client can neither probe nor register.
    assert (await anonymous.post("/graphql", json=hashed)).status_code == 401
    assert (await anonymous.post("/graphql", json={**hashed, "query": QUERY})).status_code == 401

    missing = await post("/graphql", json=hashed)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert code_of(missing) == "PERSISTED_QUERY_NOT_FOUND"
    assert missing.json()["errors"][0]["message"] == "PersistedQueryNotFound"
    legacy = await post("/graphql", json=hashed, headers={"accept": "application/json"})
    assert (legacy.status_code, code_of(legacy)) == (200, "PERSISTED_QUERY_NOT_FOUND")

    registered = await post("/graphql", json={**hashed, "query": QUERY})
    assert registered.status_code == 200, registered.text
    assert registered.json() == {"data": {"services": {"nodes": []}}}
    served = await post("/graphql", json=hashed)
    assert served.json() == {"data": {"services": {"nodes": []}}}
    by_get = await owner.get("/graphql", params={"extensions": json.dumps(hashed["extensions"])})
    assert by_get.json() == {"data": {"services": {"nodes": []}}}
    [stored] = await documents_of(app).list_documents()
    assert (stored.sha256, stored.trusted, stored.created_by) == (
        sha(QUERY),
        False,
        "user:owner-0@example.com",
    )

    mismatch = await post("/graphql", json={"query": "{ services { nodes { id } } }", **hashed})
    assert (mismatch.status_code, code_of(mismatch)) == (400, "PERSISTED_QUERY_HASH_MISMATCH")
    version = await post("/graphql", json={"extensions": pq(sha(QUERY), version=2)})
    assert (version.status_code, code_of(version)) == (400, "UNSUPPORTED_PERSISTED_QUERY_VERSION")
    nothing = await post("/graphql", json={"variables": {}})
    assert (nothing.status_code, code_of(nothing)) == (400, "BAD_REQUEST")

    # A document that does not parse, validate or fit the limits is never registered.
    huge = "{ __typename }" + " " * 100_000  # over the bytes limit
    for junk in ("{ services { ", "{ nope }", huge):
        refused = await post("/graphql", json={"query": junk, "extensions": pq(sha(junk))})
        assert refused.status_code == 400, junk
        assert code_of(await post("/graphql", json={"extensions": pq(sha(junk))})) == (
            "PERSISTED_QUERY_NOT_FOUND"
        )
    # A mutation over GET is refused before it could be registered.
    mutation = 'mutation { deleteService(id: "x") { __typename } }'
    got = await owner.get(
        "/graphql", params={"query": mutation, "extensions": json.dumps(pq(sha(mutation)))}
    )
    assert got.status_code == 405
    assert [d.sha256 for d in await documents_of(app).list_documents()] == [sha(QUERY)]


@pytest.mark.parametrize(
    "store", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_two_control_planes_on_one_store_share_documents(database_url: str) -> None:
    one, two = app_with(database_url), app_with(database_url)
    async with signed_in(one) as first, signed_in(two, create=False) as second:
        missing = await second.post("/graphql", json={"extensions": pq(sha(QUERY))})
        assert code_of(missing) == "PERSISTED_QUERY_NOT_FOUND"
        registered = await first.post(
            "/graphql", json={"query": QUERY, "extensions": pq(sha(QUERY))}
        )
        assert registered.status_code == 200
        served = await second.post("/graphql", json={"extensions": pq(sha(QUERY))})
        assert served.json() == {"data": {"services": {"nodes": []}}}


async def test_trusted_documents_only(database_url: str) -> None:
    app = app_with(database_url, graphql_trusted_documents_only=True)
    other = "{ services { nodes { id } } }"
    async with signed_in(app) as client:
        await documents_of(app).register(QUERY, trusted=True, operation=None)
        await documents_of(app).register(other, trusted=False, operation=None)  # APQ, earlier

        for body in (
            {"query": QUERY},
            {"extensions": pq(sha(QUERY))},
            {"query": QUERY, "extensions": pq(sha(QUERY))},
        ):
            ran = await client.post("/graphql", json=body)
            assert ran.json() == {"data": {"services": {"nodes": []}}}, body
        new = "{ services { nodes { name id } } }"
        for body in (
            {"query": other},
            {"extensions": pq(sha(other))},
            {"query": new},
            {"query": new, "extensions": pq(sha(new))},
        ):
            refused = await client.post("/graphql", json=body)
            assert (refused.status_code, code_of(refused)) == (403, "TRUSTED_DOCUMENT_REQUIRED"), (
                body
            )
            assert "portcullis graphql documents add" in refused.json()["errors"][0]["message"]
        legacy = await client.post(
            "/graphql", json={"query": new}, headers={"accept": "application/json"}
        )
        assert (legacy.status_code, code_of(legacy)) == (200, "TRUSTED_DOCUMENT_REQUIRED")
        # Requests register nothing in this mode.
        assert {d.sha256 for d in await documents_of(app).list_documents()} == {
            sha(QUERY),
            sha(other),
        }


async def test_apq_switched_off(database_url: str) -> None:
    app = app_with(database_url, graphql_apq_enabled=False)
    async with signed_in(app) as client:
        for body in (
            {"extensions": pq(sha(QUERY))},
            {"query": QUERY, "extensions": pq(sha(QUERY))},
        ):
            refused = await client.post("/graphql", json=body)
            assert (refused.status_code, code_of(refused)) == (400, "PERSISTED_QUERY_NOT_SUPPORTED")
            assert refused.json()["errors"][0]["message"] == "PersistedQueryNotSupported"
        plain = await client.post("/graphql", json={"query": QUERY})
        assert plain.json() == {"data": {"services": {"nodes": []}}}
        assert await documents_of(app).list_documents() == []
