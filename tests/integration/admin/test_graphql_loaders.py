"""DataLoaders are per request, and they batch: a query for 1,000 consumers with their
keys, plans and quota usage runs in at most 3 SQL statements (counted with a
SQLAlchemy event hook on the control plane's engine), and one request's batch never
answers another caller's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from portcullis.admin.app import create_admin_app
from portcullis.services.rbac import Role
from portcullis.settings import Settings

CONSUMERS = 1000
# A page holds at most 500 (as REST's limit): the 1,000 consumers are two pages, one per
# organization, in one document.
FIELDS = """nodes {
      username
      planEntity { name quotas { name limit period } }
      keys(first: 3) { nodes { id name consumer } pageInfo { hasNextPage } }
      quotaUsage { plan quotas { name used limit } }
    }"""
QUERY = (
    '{ acme: consumers(first: 500, filter: {organization: "acme"}) { ' + FIELDS + " }"
    ' globex: consumers(first: 500, filter: {organization: "globex"}) { ' + FIELDS + " } }"
)
ORG_QUERY = "{ consumers(first: 500) { " + FIELDS + " } }"


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    """The admin app with room for the issue's query: at the default cost limit (50,000)
    a page of 1,000 consumers with their plans' quotas, keys and usage (cost ~627,000)
    is refused before it runs; pages of up to ~80 such consumers pass."""
    settings = Settings(database_url=database_url, log_json=False, graphql_max_cost=1_000_000)
    application = create_admin_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def thousand(owner: httpx.AsyncClient, orgs: dict[str, str]) -> None:
    config = {
        "plans": [
            {
                "name": "gold",
                "quotas": [{"name": "daily", "limit": 1000, "period": "day"}],
            }
        ],
        "plugins": [{"name": "key-auth", "config": {}}, {"name": "plan-limits", "config": {}}],
        "consumers": [
            {
                "username": f"c{i:04d}",
                "plan": "gold",
                "organization": "acme" if i % 2 == 0 else "globex",
            }
            for i in range(CONSUMERS)
        ],
    }
    applied = await owner.put("/admin/v1/config", json=config)
    assert applied.status_code == 200, applied.text
    rows = "\n".join(f"c{i:04d},k{i}-{n}" for i in range(0, CONSUMERS, 5) for n in range(2))
    imported = await owner.post(
        "/admin/v1/keys/import",
        content=f"consumer,name\n{rows}\n",
        headers={"content-type": "text/csv"},
    )
    assert imported.status_code == 201, imported.text


# Set around the measured requests: the tasks a request starts inherit it, the control
# plane's background jobs (started with the app) do not, so their statements don't count.
MEASURED: ContextVar[bool] = ContextVar("measured", default=False)
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def _statements(app: FastAPI) -> list[str]:
    """The SQL statements the measured requests send (transaction control left out)."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if MEASURED.get() and not statement.lstrip().upper().startswith(TRANSACTION_CONTROL):
            seen.append(statement)

    event.listen(app.state.admin.engine.sync_engine, "before_cursor_execute", count)
    return seen


async def _run(client: httpx.AsyncClient, query: str) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body


@pytest.mark.usefixtures("thousand")
async def test_a_thousand_consumers_with_keys_plans_and_usage_in_three_statements(
    app: FastAPI, owner: httpx.AsyncClient
) -> None:
    await _run(owner, QUERY)  # the control plane's config cache is warm after any read
    statements = _statements(app)
    MEASURED.set(True)
    # What authentication and the request itself cost, without any field.
    await _run(owner, "{ __typename }")
    baseline = len(statements)
    body = await _run(owner, QUERY)
    MEASURED.set(False)
    # The query's own statements: what it cost beyond a request that resolves nothing.
    executed = len(statements) - 2 * baseline
    nodes = body["data"]["acme"]["nodes"] + body["data"]["globex"]["nodes"]
    assert len(nodes) == CONSUMERS
    first = next(n for n in nodes if n["username"] == "c0000")
    assert first["planEntity"]["name"] == "gold"
    assert sorted(k["name"] for k in first["keys"]["nodes"]) == ["k0-0", "k0-1"]
    assert first["quotaUsage"]["quotas"] == [{"name": "daily", "used": 0, "limit": 1000}]
    assert next(n for n in nodes if n["username"] == "c0001")["keys"]["nodes"] == []
    print(f"statements for {CONSUMERS} consumers: {executed}")
    assert executed <= 3, "\n".join(statements[baseline:])


@pytest.mark.usefixtures("thousand")
async def test_loaders_are_per_request_and_per_caller(
    client_for: Any, orgs: dict[str, str]
) -> None:
    acme = await client_for(Role.ADMIN, orgs["acme"])
    globex = await client_for(Role.ADMIN, orgs["globex"])
    for client, parity in ((acme, 0), (globex, 1)):
        nodes = (await _run(client, ORG_QUERY))["data"]["consumers"]["nodes"]
        assert len(nodes) == CONSUMERS // 2
        assert all(int(n["username"][1:]) % 2 == parity for n in nodes)
        keys = [k for n in nodes for k in n["keys"]["nodes"]]
        assert keys, "each organization has keys"
        assert all(int(k["consumer"][1:]) % 2 == parity for k in keys)
