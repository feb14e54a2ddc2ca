"""Gateway entities of organizations: what organization-limited admins see, create and change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from portcullis.services.rbac import Role

ScopedFactory = Callable[[str, Role], Awaitable[httpx.AsyncClient]]
ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]  # the `client_for` fixture


@pytest.fixture
def scoped(client_for: ClientFactory, orgs: dict[str, str]) -> ScopedFactory:
    """Makes a signed-in client of an admin user limited to the named organization."""

    async def make(org: str, role: Role) -> httpx.AsyncClient:
        return await client_for(role, orgs[org])

    return make


async def _seed(owner: httpx.AsyncClient) -> None:
    """Entities of globex and one shared (organization-less) service, made by the owner."""
    for path, body in (
        ("/admin/v1/upstreams", {"name": "g-up", "organization": "globex",
                                 "targets": [{"target": "10.0.0.1:80"}]}),
        ("/admin/v1/services", {"name": "g-svc", "upstream": "g-up", "organization": "globex"}),
        ("/admin/v1/routes", {"name": "g-route", "service": "g-svc", "paths": ["/g"],
                              "organization": "globex"}),
        ("/admin/v1/consumers", {"username": "g-app", "organization": "globex"}),
        ("/admin/v1/services", {"name": "shared", "url": "http://shared"}),
    ):  # fmt: skip
        created = await owner.post(path, json=body)
        assert created.status_code == 201, created.text


async def test_limited_admins_see_and_change_only_their_organization(
    owner: httpx.AsyncClient, scoped: ScopedFactory
) -> None:
    await _seed(owner)
    acme = await scoped("acme", Role.OPERATOR)
    created = await acme.post("/admin/v1/services", json={"name": "a-svc", "url": "http://a"})
    assert created.status_code == 201, created.text
    assert created.json()["organization"] == "acme"
    foreign = await acme.post(
        "/admin/v1/services", json={"name": "x", "url": "http://x", "organization": "globex"}
    )
    assert foreign.status_code == 403
    assert foreign.headers["content-type"] == "application/problem+json"
    assert "your organization 'acme'" in foreign.json()["detail"]
    listed = await acme.get("/admin/v1/services")
    assert [s["name"] for s in listed.json()["items"]] == ["a-svc"]
    assert (await acme.get("/admin/v1/consumers")).json()["items"] == []
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        body = {"name": "g-svc", "url": "http://x"} if method == "PUT" else {"tags": ["x"]}
        hidden = await acme.request(method, "/admin/v1/services/g-svc", json=body)
        assert hidden.status_code == 404, (method, hidden.text)
    assert (await acme.get("/admin/v1/upstreams/g-up/targets")).status_code == 404
    assert (
        await acme.post("/admin/v1/upstreams/g-up/targets", json={"target": "10.9.9.9:80"})
    ).status_code == 404
    # Moving an entity out of the organization is refused; null puts it back in it.
    moved = await acme.patch("/admin/v1/services/a-svc", json={"organization": "globex"})
    assert moved.status_code == 403
    reset = await acme.patch("/admin/v1/services/a-svc", json={"organization": None})
    assert reset.json()["organization"] == "acme"
    replaced = await acme.put("/admin/v1/services/a-svc", json={"name": "a-svc", "url": "http://b"})
    assert replaced.json()["organization"] == "acme"
    # The owner sees everything and can filter by organization.
    everything = (await owner.get("/admin/v1/services")).json()["items"]
    assert [s["name"] for s in everything] == ["a-svc", "g-svc", "shared"]
    only = (await owner.get("/admin/v1/services?organization=acme")).json()["items"]
    assert [s["name"] for s in only] == ["a-svc"]


async def test_references_stay_inside_the_organization(
    owner: httpx.AsyncClient, scoped: ScopedFactory
) -> None:
    await _seed(owner)
    acme = await scoped("acme", Role.OPERATOR)
    assert (
        await acme.post("/admin/v1/services", json={"name": "a-svc", "url": "http://a"})
    ).status_code == 201
    hijack = await acme.post(
        "/admin/v1/routes", json={"name": "steal", "service": "g-svc", "paths": ["/steal"]}
    )
    assert hijack.status_code == 422
    assert hijack.json()["errors"] == [
        {"pointer": "#/service", "detail": "unknown service 'g-svc' in organization 'acme'"}
    ]
    shared = await acme.post(
        "/admin/v1/routes", json={"name": "steal", "service": "shared", "paths": ["/s"]}
    )
    assert shared.status_code == 422
    plugin = await acme.post(
        "/admin/v1/plugins",
        json={"name": "request-size-limit", "route": "g-route", "config": {"max_bytes": 10}},
    )
    assert plugin.status_code == 422
    assert plugin.json()["errors"][0]["pointer"] == "#/route"
    own = await acme.post(
        "/admin/v1/routes", json={"name": "a-route", "service": "a-svc", "paths": ["/a"]}
    )
    assert own.status_code == 201, own.text
    everywhere = await acme.post(
        "/admin/v1/plugins", json={"name": "request-size-limit", "config": {"max_bytes": 10}}
    )
    assert everywhere.status_code == 403
    assert "global plugin" in everywhere.json()["detail"]
    scoped_plugin = await acme.post(
        "/admin/v1/plugins",
        json={"name": "request-size-limit", "route": "a-route", "config": {"max_bytes": 10}},
    )
    assert scoped_plugin.status_code == 201, scoped_plugin.text
    assert scoped_plugin.json()["organization"] == "acme"
    # An unlimited admin may point another tenant's route at acme's service; acme then
    # learns only that something elsewhere depends on it, not what.
    cross = await owner.post(
        "/admin/v1/routes",
        json={"name": "g-to-a", "service": "a-svc", "paths": ["/x"], "organization": "globex"},
    )
    assert cross.status_code == 201
    blocked = await acme.delete("/admin/v1/services/a-svc")
    assert blocked.status_code == 409
    assert blocked.json()["dependents"] == [{"kind": "routes", "id": "a-route", "field": "service"}]
    assert "g-to-a" not in blocked.text
    assert "1 entities of other organizations" in blocked.json()["detail"]


async def test_whole_config_operations_need_an_unlimited_admin(
    owner: httpx.AsyncClient, scoped: ScopedFactory
) -> None:
    await _seed(owner)
    acme = await scoped("acme", Role.ADMIN)
    assert (await acme.post("/admin/v1/consumers", json={"username": "a-app"})).status_code == 201
    exported = await acme.get("/admin/v1/config")
    assert exported.status_code == 200
    assert exported.json() == {
        "format_version": "1",
        "consumers": [{"username": "a-app", "organization": "acme"}],
    }
    assert "globex" not in (await acme.get("/admin/v1/config?format=yaml")).text
    assert exported.headers["etag"] != (await owner.get("/admin/v1/config")).headers["etag"]
    for method, path, body in (
        ("PUT", "/admin/v1/config", {"services": []}),
        ("POST", "/admin/v1/config/diff", {"services": []}),
        ("GET", "/admin/v1/config/versions", None),
        ("GET", "/admin/v1/config/versions/1", None),
        ("POST", "/admin/v1/config/rollback", {"version": 1}),
    ):
        refused = await acme.request(method, path, json=body)
        assert refused.status_code == 403, (method, path, refused.text)
        assert "not limited to an organization" in refused.json()["detail"]
    assert len((await owner.get("/admin/v1/config")).json()["services"]) == 2


async def test_renaming_an_organization_relabels_its_entities_in_one_change(
    owner: httpx.AsyncClient, scoped: ScopedFactory, orgs: dict[str, str]
) -> None:
    await _seed(owner)
    globex = await scoped("globex", Role.VIEWER)
    before = await owner.get(f"/admin/v1/organizations/{orgs['globex']}")
    renamed = await owner.patch(
        f"/admin/v1/organizations/{orgs['globex']}",
        json={"name": "globex-corp"},
        headers={"If-Match": before.headers["etag"]},
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "globex-corp"
    assert (
        renamed.headers["etag"]
        == (await owner.get(f"/admin/v1/organizations/{orgs['globex']}")).headers["etag"]
    )
    config = (await owner.get("/admin/v1/config")).json()
    owners = {e.get("name", e.get("username")): e.get("organization")
              for kind in ("services", "upstreams", "routes", "consumers")
              for e in config.get(kind, [])}  # fmt: skip
    assert owners == {
        "g-svc": "globex-corp",
        "g-up": "globex-corp",
        "g-route": "globex-corp",
        "g-app": "globex-corp",
        "shared": None,
    }
    # The limited admin follows the organization (by id) and still sees its entities.
    assert [s["name"] for s in (await globex.get("/admin/v1/services")).json()["items"]] == [
        "g-svc"
    ]
    [event] = (
        await owner.get("/admin/v1/audit-events?resource_type=organization&action=update")
    ).json()["items"]
    versions = (await owner.get("/admin/v1/config/versions")).json()["items"]
    assert event["config_version"] == versions[0]["version"]
    assert versions[0]["comment"] == "admin API: rename organization 'globex' to 'globex-corp'"
    taken = await owner.patch(f"/admin/v1/organizations/{orgs['globex']}", json={"name": "acme"})
    assert taken.status_code == 409
    assert (await owner.get("/admin/v1/services/g-svc")).json()["organization"] == "globex-corp"


async def test_an_organization_owning_entities_cannot_be_deleted(
    owner: httpx.AsyncClient, orgs: dict[str, str]
) -> None:
    await _seed(owner)
    blocked = await owner.delete(f"/admin/v1/organizations/{orgs['globex']}")
    assert blocked.status_code == 409
    assert blocked.json()["dependents"] == [
        {"kind": "services", "count": 1},
        {"kind": "upstreams", "count": 1},
        {"kind": "routes", "count": 1},
        {"kind": "consumers", "count": 1},
    ]
    assert (await owner.delete(f"/admin/v1/organizations/{orgs['acme']}")).status_code == 204


async def test_traffic_rules_stay_inside_the_organization(
    owner: httpx.AsyncClient, scoped: ScopedFactory
) -> None:
    await _seed(owner)
    quota = [{"name": "daily", "limit": 100, "period": "day", "timezone": "UTC"}]
    plans: list[dict[str, Any]] = [
        {"name": "shared-free", "quotas": quota},
        {"name": "g-gold", "quotas": quota, "organization": "globex"},
    ]
    for plan in plans:
        assert (await owner.post("/admin/v1/plans", json=plan)).status_code == 201
    g_key = await owner.post("/admin/v1/consumers/g-app/keys", json={"name": "g"})
    assert g_key.status_code == 201, g_key.text
    acme = await scoped("acme", Role.OPERATOR)
    entities: list[tuple[str, dict[str, Any]]] = [
        ("/admin/v1/services", {"name": "a-svc", "url": "http://a"}),
        ("/admin/v1/routes", {"name": "a-route", "service": "a-svc", "paths": ["/a"]}),
        ("/admin/v1/plans", {"name": "a-plan", "quotas": quota}),
        ("/admin/v1/consumers", {"username": "a-app", "plan": "a-plan"}),
    ]
    for path, entity in entities:
        created = await acme.post(path, json=entity)
        assert created.status_code == 201, (path, created.text)

    # Plans: their own and shared ones (no organization), never another tenant's.
    shared = await acme.patch("/admin/v1/consumers/a-app", json={"plan": "shared-free"})
    assert shared.status_code == 200, shared.text
    assert shared.json()["plan"] == "shared-free"
    foreign_plan = await acme.post("/admin/v1/consumers", json={"username": "x", "plan": "g-gold"})
    assert foreign_plan.status_code == 422
    assert foreign_plan.json()["errors"] == [
        {"pointer": "#/plan", "detail": "unknown plan 'g-gold' in organization 'acme' (nor shared)"}
    ]
    assert (
        await acme.patch("/admin/v1/consumers/a-app", json={"plan": "g-gold"})
    ).status_code == 422
    # Shared plans stay the operator's: a limited admin can't change them.
    assert (
        await acme.patch("/admin/v1/plans/shared-free", json={"description": "mine"})
    ).status_code == 404

    # Boosts: never everyone or a tag (shared by every tenant's consumers).
    window = {"starts_at": "2030-01-01T10:00:00Z", "ends_at": "2030-01-01T12:00:00Z"}
    for target, pointer in (({"everyone": True}, "everyone"), ({"tag": "peak"}, "tag")):
        boost = await acme.post(
            "/admin/v1/boosts", json={"name": "b", "multiplier": 2, "target": target, **window}
        )
        assert boost.status_code == 403, boost.text
        assert boost.json()["errors"][0]["pointer"] == f"#/target/{pointer}"
    for target, pointer in (({"route": "g-route"}, "route"), ({"consumer": "g-app"}, "consumer")):
        boost = await acme.post(
            "/admin/v1/boosts", json={"name": "b", "multiplier": 2, "target": target, **window}
        )
        assert boost.status_code == 422, boost.text
        assert boost.json()["errors"][0]["pointer"] == f"#/target/{pointer}"
    own = await acme.post(
        "/admin/v1/boosts",
        json={"name": "b", "multiplier": 2, "target": {"route": "a-route"}, **window},
    )
    assert own.status_code == 201, own.text
    assert own.json()["organization"] == "acme"
    widened = await acme.patch(
        "/admin/v1/boosts/b", json={"target": {"route": None, "everyone": True}}
    )
    assert widened.status_code == 403, widened.text
    retargeted = await acme.patch(
        "/admin/v1/boosts/b", json={"target": {"route": None, "consumer": "a-app"}}
    )
    assert retargeted.status_code == 200, retargeted.text
    # An unlimited admin may still boost everyone, for any organization.
    everyone = await owner.post(
        "/admin/v1/boosts",
        json={"name": "all", "multiplier": 2, "target": {"everyone": True}, **window},
    )
    assert everyone.status_code == 201, everyone.text

    # Overrides: their consumers and their organization's keys only.
    until = "2030-01-01T00:00:00Z"
    override = {"multiplier": 2, "reason": "launch", "expires_at": until}
    a_key = await acme.post("/admin/v1/consumers/a-app/keys", json={"name": "a"})
    assert a_key.status_code == 201, a_key.text
    for name, subject, pointer in (
        ("o1", {"credential": g_key.json()["id"]}, "#/credential"),
        ("o2", {"credential": "key_nonexistent"}, "#/credential"),
        ("o3", {"consumer": "g-app"}, "#/consumer"),
    ):
        refused = await acme.post("/admin/v1/overrides", json={"name": name, **subject, **override})
        assert refused.status_code == 422, refused.text
        assert [e["pointer"] for e in refused.json()["errors"]] == [pointer]
    mine = await acme.post(
        "/admin/v1/overrides", json={"name": "o", "credential": a_key.json()["id"], **override}
    )
    assert mine.status_code == 201, mine.text
    moved = await acme.patch("/admin/v1/overrides/o", json={"credential": g_key.json()["id"]})
    assert moved.status_code == 422
    # Unchanged fields are not re-checked: a patch of the reason keeps the key.
    reason = await acme.patch("/admin/v1/overrides/o", json={"reason": "launch, day 2"})
    assert reason.status_code == 200, reason.text
