"""Concurrent requests against every guard of the control plane (issue 12, items 8-10).

Each test runs a real control plane (granian) on a store of each backend and fires
its requests at once from one `httpx.AsyncClient`: the guards must hold because the
store decides atomically, not because requests happened to arrive one by one.

- Login lockout: the failure counters (per account, per client address) live in the
  store and every attempt takes its number before the password is checked, so at
  most the threshold of attempts is ever checked, across worker processes.
- A refresh token is exchanged once; the bootstrap token creates exactly one owner.
- If-Match is a compare-and-set in the store for every resource family: of N
  writes sent with the same ETag exactly one succeeds, the others get 412.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from admin_support import PASSWORD
from sqlalchemy import func, select

from portcullis.services.admin_auth import IP_MAX_FAILURES, MAX_FAILURES, AuthService
from portcullis.services.rbac import Role
from portcullis.store.admin_tables import AdminUserRow
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from support.admin_session import TEST_PASSWORD_HASHER
from support.postgres import PostgresServer
from support.servers import ControlPlane, control_plane

PARALLEL = 8
# Rounds of PARALLEL writes per test: one round can pass by luck before the fix.
ROUNDS = 5
MERGE_PATCH = {"content-type": "application/merge-patch+json"}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _new_store(backend: str, request: pytest.FixtureRequest, directory: Path) -> str:
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{directory / 'store.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database()
    asyncio.run(upgrade_to_head(url))
    return url


async def _with_auth(url: str, use: Callable[[AuthService], Awaitable[Any]]) -> Any:
    engine = create_engine(url)
    try:
        return await use(AuthService(engine, hasher=TEST_PASSWORD_HASHER))
    finally:
        await engine.dispose()


async def _create_user(url: str, email: str, role: Role = Role.OWNER) -> str:
    async def create(auth: AuthService) -> str:
        return (await auth.create_user(email, PASSWORD, role)).id

    user_id: str = await _with_auth(url, create)
    return user_id


async def _login(plane: ControlPlane, email: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=plane.url, timeout=60) as client:
        return await client.post(
            "/admin/v1/auth/login", json={"email": email, "password": PASSWORD}
        )


@pytest.fixture
def fresh_plane(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ControlPlane]:
    """A control plane with two worker processes on a store of its own."""
    with control_plane(_new_store(backend, request, tmp_path), workers=2) as plane:
        yield plane


@pytest.fixture(scope="module")
def shared_plane(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """One control plane (two worker processes) for the If-Match tests of a backend."""
    url = _new_store(backend, request, tmp_path_factory.mktemp("races"))
    with control_plane(url, workers=2) as plane:
        yield plane


@pytest.fixture(scope="module")
def owner_email(shared_plane: ControlPlane) -> str:
    asyncio.run(_create_user(shared_plane.database_url, "owner@example.com"))
    return "owner@example.com"


@pytest.fixture
async def owner(shared_plane: ControlPlane, owner_email: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in as an owner (a login per test: access tokens are short-lived)."""
    signed_in = await _login(shared_plane, owner_email)
    assert signed_in.status_code == 200, signed_in.text
    async with httpx.AsyncClient(
        base_url=f"{shared_plane.url}/admin/v1",
        headers={"authorization": f"Bearer {signed_in.json()['access_token']}"},
        timeout=60,
        limits=httpx.Limits(max_connections=4 * PARALLEL),
    ) as client:
        yield client


async def _at_once(requests: list[Awaitable[httpx.Response]]) -> list[int]:
    return sorted(r.status_code for r in await asyncio.gather(*requests))


async def _created(response: Awaitable[httpx.Response]) -> dict[str, Any]:
    done = await response
    assert done.status_code == 201, done.text
    body: dict[str, Any] = done.json()
    return body


async def _etag(client: httpx.AsyncClient, path: str) -> str:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return response.headers["etag"]


# ---------------------------------------------------------------------------- login lockout


async def _logins(plane: ControlPlane, attempts: list[tuple[str, str]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(attempts))
    async with httpx.AsyncClient(base_url=plane.url, timeout=60, limits=limits) as client:
        return list(
            await asyncio.gather(
                *(
                    client.post("/admin/v1/auth/login", json={"email": e, "password": p})
                    for e, p in attempts
                )
            )
        )


async def test_parallel_wrong_passwords_check_at_most_the_account_limit(
    fresh_plane: ControlPlane,
) -> None:
    await _create_user(fresh_plane.database_url, "ops@example.com", Role.OPERATOR)
    responses = await _logins(fresh_plane, [("ops@example.com", "wrong password!")] * 40)
    statuses = sorted(r.status_code for r in responses)
    unexpected = [r.text for r in responses if r.status_code not in (401, 429)]
    assert statuses == [401] * MAX_FAILURES + [429] * (40 - MAX_FAILURES), unexpected
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.headers["content-type"] == "application/problem+json" for r in refused)
    assert all(int(r.headers["retry-after"]) > 0 for r in refused)
    locked = await _login(fresh_plane, "ops@example.com")  # the right password, while locked
    assert locked.status_code == 429, locked.text
    assert int(locked.headers["retry-after"]) > 0


async def test_parallel_failures_from_one_address_check_at_most_the_address_limit(
    fresh_plane: ControlPlane,
) -> None:
    await _create_user(fresh_plane.database_url, "ops@example.com", Role.OPERATOR)
    attempts = [(f"nobody{i}@example.com", "wrong password!") for i in range(40)]
    responses = await _logins(fresh_plane, attempts)
    statuses = sorted(r.status_code for r in responses)
    unexpected = [r.text for r in responses if r.status_code not in (401, 429)]
    assert statuses == [401] * IP_MAX_FAILURES + [429] * (40 - IP_MAX_FAILURES), unexpected
    blocked = await _login(fresh_plane, "ops@example.com")  # a real account, the right password
    assert blocked.status_code == 429, blocked.text
    assert "address" in blocked.json()["detail"]


async def test_a_refresh_token_is_exchanged_once(fresh_plane: ControlPlane) -> None:
    """Parallel refreshes with one token: one new pair; the others are reuse (401)."""
    await _create_user(fresh_plane.database_url, "ops@example.com", Role.OPERATOR)
    signed_in = await _login(fresh_plane, "ops@example.com")
    assert signed_in.status_code == 200, signed_in.text
    token = {"refresh_token": signed_in.json()["refresh_token"]}
    async with httpx.AsyncClient(
        base_url=fresh_plane.url, timeout=60, limits=httpx.Limits(max_connections=PARALLEL)
    ) as client:
        statuses = await _at_once(
            [client.post("/admin/v1/auth/refresh", json=token) for _ in range(PARALLEL)]
        )
    assert statuses == [200] + [401] * (PARALLEL - 1)


# ---------------------------------------------------------------------------- bootstrap token


@pytest.fixture
def bootstrap_plane(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ControlPlane]:
    # One worker: every worker that starts on an empty store issues a new bootstrap
    # token and voids the earlier ones, so with two the test could not know which holds.
    with control_plane(_new_store(backend, request, tmp_path), workers=1) as plane:
        yield plane


async def test_the_bootstrap_token_creates_exactly_one_owner(
    bootstrap_plane: ControlPlane,
) -> None:
    async def issue(auth: AuthService) -> str | None:
        return await auth.start()

    token = await _with_auth(bootstrap_plane.database_url, issue)
    assert token is not None
    async with httpx.AsyncClient(
        base_url=f"{bootstrap_plane.url}/admin/v1",
        headers={"authorization": f"Bearer {token}"},
        timeout=60,
        limits=httpx.Limits(max_connections=10),
    ) as client:
        statuses = await _at_once(
            [
                client.post(
                    "/admin-users",
                    json={"email": f"boss{i}@example.com", "password": PASSWORD, "role": "owner"},
                )
                for i in range(10)
            ]
        )
    assert statuses == [201] + [401] * 9

    async def users(auth: AuthService) -> int:
        async with auth._engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(AdminUserRow)) or 0)

    assert await _with_auth(bootstrap_plane.database_url, users) == 1


# ---------------------------------------------------------------------------- If-Match


async def _one_wins(
    client: httpx.AsyncClient,
    path: str,
    write: Callable[[dict[str, str], int], Awaitable[httpx.Response]],
) -> None:
    """ROUNDS times: PARALLEL writes (numbered) with the current ETag; exactly one succeeds."""
    for round_ in range(ROUNDS):
        etag = {"if-match": await _etag(client, path)}
        statuses = await _at_once([write(etag, round_ * PARALLEL + i) for i in range(PARALLEL)])
        assert statuses == [200] + [412] * (PARALLEL - 1), f"round {round_}: {statuses}"


async def test_api_key_patches_with_one_etag(owner: httpx.AsyncClient) -> None:
    await _created(owner.post("/consumers", json={"username": "key-race"}))
    key = await _created(owner.post("/consumers/key-race/keys", json={"name": "main"}))
    path = f"/keys/{key['id']}"
    await _one_wins(
        owner,
        path,
        lambda etag, i: owner.patch(path, json={"name": f"k{i}"}, headers={**etag, **MERGE_PATCH}),
    )


def _one_succeeded(statuses: list[int], round_: int) -> None:
    """One write won; the others failed their precondition, or (after a winning
    DELETE) found nothing to write to: 404 (RFC 9110 §13.2.1)."""
    winners = [s for s in statuses if s < 300]
    assert len(winners) == 1, f"round {round_}: {statuses}"
    losers = {412, 404} if winners == [204] else {412}
    assert {s for s in statuses if s >= 300} <= losers, f"round {round_}: {statuses}"


async def test_api_key_lifecycle_changes_with_one_etag(owner: httpx.AsyncClient) -> None:
    """Suspend, revoke, rotate and update race each other: one wins, the rest see 412."""
    await _created(owner.post("/consumers", json={"username": "key-lifecycle"}))
    reason = {"reason": "race"}
    for round_ in range(ROUNDS):
        key = await _created(owner.post("/consumers/key-lifecycle/keys", json={"name": "k"}))
        path = f"/keys/{key['id']}"
        etag = {"if-match": await _etag(owner, path)}
        statuses = await _at_once(
            [
                owner.post(f"{path}/suspend", json=reason, headers=etag),
                owner.post(f"{path}/revoke", json=reason, headers=etag),
                owner.post(f"{path}/rotate", json={"grace_seconds": 0}, headers=etag),
                owner.patch(path, json={"name": "renamed"}, headers={**etag, **MERGE_PATCH}),
                owner.post(f"{path}/suspend", json=reason, headers=etag),
                owner.post(f"{path}/rotate", json={"grace_seconds": 0}, headers=etag),
            ]
        )
        _one_succeeded(statuses, round_)


async def test_api_key_patches_without_etag_lose_nothing(owner: httpx.AsyncClient) -> None:
    """Merge patches apply to the stored key, not to what each request read before."""
    await _created(owner.post("/consumers", json={"username": "key-merge"}))
    key = await _created(owner.post("/consumers/key-merge/keys", json={"name": "main"}))
    path = f"/keys/{key['id']}"
    expected: dict[str, str] = {}
    for round_ in range(ROUNDS):
        given = {f"m{round_}-{i}": str(i) for i in range(PARALLEL)}
        statuses = await _at_once(
            [
                owner.patch(path, json={"metadata": {k: v}}, headers=MERGE_PATCH)
                for k, v in given.items()
            ]
        )
        assert statuses == [200] * PARALLEL
        expected |= given
        assert (await owner.get(path)).json()["metadata"] == expected, f"round {round_}"


RULE = {
    "kind": "error_rate",
    "threshold": 0.05,
    "window_seconds": 300,
    "min_requests": 10,
    "route": "checkout",
}


async def test_alert_rule_patches_with_one_etag(owner: httpx.AsyncClient) -> None:
    await _created(owner.post("/alert-rules", json={"name": "rule-race", **RULE}))
    path = "/alert-rules/rule-race"
    await _one_wins(
        owner,
        path,
        lambda etag, i: owner.patch(
            path, json={"threshold": 0.1 + i / 1000}, headers={**etag, **MERGE_PATCH}
        ),
    )


async def test_alert_rule_replacements_and_deletes_with_one_etag(
    owner: httpx.AsyncClient,
) -> None:
    for round_ in range(ROUNDS):
        await _created(owner.post("/alert-rules", json={"name": f"rule-put-{round_}", **RULE}))
        path = f"/alert-rules/rule-put-{round_}"
        etag = {"if-match": await _etag(owner, path)}
        statuses = await _at_once(
            [owner.put(path, json={**RULE, "min_requests": 20 + i}, headers=etag) for i in range(4)]
            + [owner.delete(path, headers=etag) for _ in range(2)]
        )
        _one_succeeded(statuses, round_)


async def test_alert_rule_patches_without_etag_lose_nothing(owner: httpx.AsyncClient) -> None:
    await _created(owner.post("/alert-rules", json={"name": "rule-merge", **RULE}))
    path = "/alert-rules/rule-merge"
    for round_ in range(ROUNDS):
        changes: dict[str, Any] = {
            "threshold": 0.5 + round_ / 100,
            "min_requests": 100 + round_,
            "description": f"round {round_}",
            "for_seconds": 60 + round_,
        }
        statuses = await _at_once(
            [owner.patch(path, json={k: v}, headers=MERGE_PATCH) for k, v in changes.items()]
        )
        assert statuses == [200] * len(changes)
        rule = (await owner.get(path)).json()
        assert {k: rule[k] for k in changes} == changes, f"round {round_}"


async def test_oauth_client_patches_with_one_etag(owner: httpx.AsyncClient) -> None:
    await _created(owner.post("/consumers", json={"username": "oauth-race"}))
    client = await _created(owner.post("/consumers/oauth-race/oauth-clients", json={"name": "c"}))
    path = f"/oauth-clients/{client['client_id']}"
    await _one_wins(
        owner, path, lambda etag, i: owner.patch(path, json={"name": f"c{i}"}, headers=etag)
    )


async def test_oauth_client_rotations_and_deletes_with_one_etag(
    owner: httpx.AsyncClient,
) -> None:
    await _created(owner.post("/consumers", json={"username": "oauth-mixed"}))
    for round_ in range(ROUNDS):
        client = await _created(
            owner.post("/consumers/oauth-mixed/oauth-clients", json={"name": "c"})
        )
        path = f"/oauth-clients/{client['client_id']}"
        etag = {"if-match": await _etag(owner, path)}
        statuses = await _at_once(
            [owner.patch(path, json={"name": f"c{i}"}, headers=etag) for i in range(2)]
            + [owner.post(f"{path}/rotate-secret", headers=etag) for _ in range(2)]
            + [owner.delete(path, headers=etag) for _ in range(2)]
        )
        _one_succeeded(statuses, round_)


async def test_organization_patches_with_one_etag(owner: httpx.AsyncClient) -> None:
    org = await _created(owner.post("/organizations", json={"name": "org-race"}))
    path = f"/organizations/{org['id']}"
    await _one_wins(
        owner,
        path,
        lambda etag, i: owner.patch(path, json={"name": f"org-race-{i}"}, headers=etag),
    )


async def test_admin_user_patches_with_one_etag(
    owner: httpx.AsyncClient, shared_plane: ControlPlane
) -> None:
    user_id = await _create_user(shared_plane.database_url, "user-race@example.com", Role.ADMIN)
    path = f"/admin-users/{user_id}"
    roles = ["viewer", "operator", "admin"]
    await _one_wins(
        owner,
        path,
        lambda etag, i: owner.patch(path, json={"role": roles[i % len(roles)]}, headers=etag),
    )


async def test_two_owners_demoting_each_other_leave_one(fresh_plane: ControlPlane) -> None:
    """The last-owner rule is a check under the write lock too: of two owners demoting
    each other at once, one succeeds and the other is refused (409), every round."""
    ids = [await _create_user(fresh_plane.database_url, f"owner{i}@example.com") for i in range(2)]
    logins = [await _login(fresh_plane, f"owner{i}@example.com") for i in range(2)]
    tokens = [r.json()["access_token"] for r in logins]
    first, second = (
        httpx.AsyncClient(
            base_url=f"{fresh_plane.url}/admin/v1",
            headers={"authorization": f"Bearer {t}"},
            timeout=60,
        )
        for t in tokens
    )
    async with first, second:
        for round_ in range(ROUNDS):
            statuses = await _at_once(
                [
                    first.patch(f"/admin-users/{ids[1]}", json={"role": "admin"}),
                    second.patch(f"/admin-users/{ids[0]}", json={"role": "admin"}),
                ]
            )
            # The loser is refused as the last owner, or (once demoted) as an admin who
            # can't manage owners.
            assert statuses[0] == 200, f"round {round_}: {statuses}"
            assert statuses[1] in (403, 409), f"round {round_}: {statuses}"
            roles = [(await first.get(f"/admin-users/{i}")).json()["role"] for i in ids]
            assert sorted(roles) == ["admin", "owner"]
            # The one still an owner makes the other an owner again for the next round.
            keeper = first if roles[0] == "owner" else second
            demoted = ids[roles.index("admin")]
            restored = await keeper.patch(f"/admin-users/{demoted}", json={"role": "owner"})
            assert restored.status_code == 200, restored.text


ENTITIES: list[tuple[str, dict[str, Any], str, Callable[[int], dict[str, Any]]]] = [
    (
        "services",
        {"name": "svc-race", "url": "http://svc"},
        "svc-race",
        lambda i: {"path": f"/v{i}"},
    ),
    (
        "plans",
        {
            "name": "plan-race",
            "quotas": [{"name": "daily", "limit": 100, "period": "day", "timezone": "UTC"}],
        },
        "plan-race",
        lambda i: {"description": f"plan {i}"},
    ),
]


@pytest.mark.parametrize(
    ("collection", "body", "entity_id", "patch"), ENTITIES, ids=[e[0] for e in ENTITIES]
)
async def test_config_entity_patches_with_one_etag(
    owner: httpx.AsyncClient,
    collection: str,
    body: dict[str, Any],
    entity_id: str,
    patch: Callable[[int], dict[str, Any]],
) -> None:
    await _created(owner.post(f"/{collection}", json=body))
    path = f"/{collection}/{entity_id}"
    await _one_wins(
        owner,
        path,
        lambda etag, i: owner.patch(path, json=patch(i), headers={**etag, **MERGE_PATCH}),
    )
