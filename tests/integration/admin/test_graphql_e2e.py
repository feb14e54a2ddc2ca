"""End to end over GraphQL: a service and a route created by GraphQL mutations (the
real `gql` client against the real control plane on granian) serve traffic on the
proxy (:8000), and a delete mutation takes the route away again."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import httpx
from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXTransport

from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.store.engine import create_engine
from support.admin_session import TEST_PASSWORD_HASHER
from support.servers import gateway, granian_app
from support.threaded_upstream import wait_until

PASSWORD = "graphql end to end password"

CREATE_SERVICE = """
mutation($input: ServiceInput!) {
  createService(input: $input) {
    __typename
    ... on ServicePayload { service { name url } }
    ... on Problem { status detail }
  }
}"""
CREATE_ROUTE = """
mutation($input: RouteInput!) {
  createRoute(input: $input) {
    __typename
    ... on RoutePayload { route { name paths serviceEntity { name } } }
    ... on Problem { status detail }
  }
}"""


async def _create_owner(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await AuthService(engine, hasher=TEST_PASSWORD_HASHER).create_user(
            "graph@example.com", PASSWORD, Role.OWNER
        )
    finally:
        await engine.dispose()


def test_a_route_created_through_graphql_serves_traffic(tmp_path: Path) -> None:
    with (
        granian_app("portcullis.demo.upstream:create_demo_app") as upstream_port,
        gateway(tmp_path, None) as gw,
    ):
        asyncio.run(_create_owner(gw.database_url))
        login = httpx.post(
            f"{gw.admin_url}/admin/v1/auth/login",
            json={"email": "graph@example.com", "password": PASSWORD},
        )
        assert login.status_code == 200, login.text
        transport = HTTPXTransport(
            url=f"{gw.admin_url}/graphql",
            headers={"authorization": f"Bearer {login.json()['access_token']}"},
            timeout=10,
        )
        assert httpx.get(f"{gw.url}/graphql-demo/health").status_code == 404
        with Client(transport=transport, fetch_schema_from_transport=True) as graph:
            service = graph.execute(
                GraphQLRequest(
                    CREATE_SERVICE,
                    variable_values={
                        "input": {"name": "demo", "url": f"http://127.0.0.1:{upstream_port}"}
                    },
                )
            )
            assert service["createService"]["__typename"] == "ServicePayload", service
            route = graph.execute(
                GraphQLRequest(
                    CREATE_ROUTE,
                    variable_values={
                        "input": {
                            "name": "demo",
                            "service": "demo",
                            "paths": ["/graphql-demo"],
                            "stripPath": True,
                        }
                    },
                )
            )
            assert route["createRoute"]["__typename"] == "RoutePayload", route
            assert route["createRoute"]["route"]["serviceEntity"] == {"name": "demo"}
            wait_until(lambda: httpx.get(f"{gw.url}/graphql-demo/health").status_code == 200)
            deleted = graph.execute(
                GraphQLRequest('mutation { deleteRoute(id: "demo") { __typename } }')
            )
            assert deleted["deleteRoute"]["__typename"] == "Deleted"
            wait_until(lambda: httpx.get(f"{gw.url}/graphql-demo/health").status_code == 404)
        # A real browser (Debian's Chromium) renders GraphiQL from the control plane's own
        # files, under its Content-Security-Policy, without a console error.
        dom, console = _render(f"{gw.admin_url}/graphql", tmp_path)
        assert "graphiql-container" in dom, dom[:2000]
        assert "Refused to" not in console, console
        assert "Uncaught" not in console, console


def _render(url: str, tmp_path: Path) -> tuple[str, str]:
    """The DOM Chromium built for `url` after its scripts ran, and its console output."""
    chromium = shutil.which("chromium")
    assert chromium is not None, "chromium is installed by ./dev (Debian's package)"
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = "\n".join(line for line in result.stderr.splitlines() if "CONSOLE" in line)
    return result.stdout, console
