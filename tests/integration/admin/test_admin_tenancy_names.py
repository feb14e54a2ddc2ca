"""Names inside plugin configs and traffic rules resolve within their organization, on every
admin write (the rule lives in the config model: model/tenancy.py).

Before it, acme's admin could set key-auth `anonymous` to globex's consumer (lending
globex's identity, groups and plan to acme's anonymous callers), and deleting a
consumer that a plugin named as `anonymous` succeeded, leaving the name dangling.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from portcullis.services.rbac import Role

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]  # the `client_for` fixture


@pytest.fixture
async def acme(owner: httpx.AsyncClient, client_for: ClientFactory) -> httpx.AsyncClient:
    """An operator limited to acme; globex has a consumer, acme a route."""
    ids = {}
    for name in ("acme", "globex"):
        created = await owner.post("/admin/v1/organizations", json={"name": name})
        assert created.status_code == 201, created.text
        ids[name] = created.json()["id"]
    for path, body in (
        ("/admin/v1/consumers", {"username": "g-app", "organization": "globex"}),
        ("/admin/v1/consumers", {"username": "a-app", "organization": "acme"}),
        ("/admin/v1/services", {"name": "a-svc", "url": "http://a", "organization": "acme"}),
        ("/admin/v1/routes", {"name": "a-route", "service": "a-svc", "paths": ["/a"],
                              "organization": "acme"}),
    ):  # fmt: skip
        created = await owner.post(path, json=body)
        assert created.status_code == 201, created.text
    return await client_for(Role.OPERATOR, ids["acme"])


def anonymous_plugin(consumer: str) -> dict[str, object]:
    return {"name": "key-auth", "route": "a-route", "config": {"anonymous": consumer}}


async def test_anonymous_names_a_consumer_of_the_plugins_organization(
    acme: httpx.AsyncClient,
) -> None:
    foreign = await acme.post("/admin/v1/plugins", json=anonymous_plugin("g-app"))
    assert foreign.status_code == 422, foreign.text
    assert foreign.headers["content-type"] == "application/problem+json"
    assert foreign.json()["errors"] == [
        {
            "pointer": "#/config/anonymous",
            "detail": "unknown consumer 'g-app' in organization 'acme'",
        }
    ]
    # A consumer that exists nowhere gets the same answer: nothing about globex leaks.
    missing = await acme.post("/admin/v1/plugins", json=anonymous_plugin("nobody"))
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["detail"] == (
        "unknown consumer 'nobody' in organization 'acme'"
    )
    own = await acme.post("/admin/v1/plugins", json=anonymous_plugin("a-app"))
    assert own.status_code == 201, own.text


async def test_a_consumer_named_by_a_plugin_cannot_be_deleted_from_under_it(
    acme: httpx.AsyncClient,
) -> None:
    created = await acme.post("/admin/v1/plugins", json=anonymous_plugin("a-app"))
    assert created.status_code == 201, created.text
    blocked = await acme.delete("/admin/v1/consumers/a-app")
    assert blocked.status_code == 409, blocked.text
    assert blocked.json()["dependents"] == [
        {"kind": "plugins", "id": created.json()["id"], "field": "config.anonymous"}
    ]
