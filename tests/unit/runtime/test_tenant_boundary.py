"""The tenant boundary is compiled into the snapshot: a route's auth plugins find only the
consumers its organization accepts (`ConsumerIndex.view`), and acl groups belong to
their organization.

One global jwt-auth + acl pair serves routes of two organizations and the operator;
the same tokens are presented on each route. Before the boundary every route accepted
every consumer, and a consumer of any organization in a group named `staff` passed
every `allow: [staff]`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from jwt import PyJWK

from portcullis.identity.consumers import ConsumerIndex
from portcullis.model import GatewayConfig
from portcullis.model.config import Consumer
from portcullis.plugins.base import PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.runtime.snapshot import CompiledRoute, Snapshot, build_snapshot

NOW = 1_750_000_000.0
STATIC_SECRET = "s" * 32
GATEWAY_SECRET = "g" * 32
ISSUER = "https://gateway.test"


@dataclass
class GatewayIssuer:
    """The built-in OAuth2 server's keys as jwt-auth sees them (one HS256 key)."""

    issuer: str = ISSUER
    keys: dict[str, PyJWK] = field(default_factory=dict)

    def key_for(self, kid: str) -> PyJWK | None:
        return self.keys.get(kid)

    def is_revoked(self, jti: str) -> bool:
        return False

    def client_revoked(self, client_id: str) -> bool:
        return False


def gateway_issuer() -> GatewayIssuer:
    k = base64.urlsafe_b64encode(GATEWAY_SECRET.encode()).rstrip(b"=").decode()
    return GatewayIssuer(keys={"gw-1": PyJWK({"kty": "oct", "k": k, "alg": "HS256"}, "HS256")})


def config(*, allow_unmapped: bool = False) -> GatewayConfig:
    def route(name: str, org: str | None, shared: bool = False) -> dict[str, Any]:
        return {
            "name": name,
            "service": "svc",
            "paths": [f"/{name}"],
            "organization": org,
            "shared_consumers": shared,
        }

    return GatewayConfig.model_validate(
        {
            "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
            "routes": [
                route("acme", "acme"),
                route("globex", "globex"),
                route("globex-shared", "globex", shared=True),
                route("ops", None),
                route("ops-shared", None, shared=True),
            ],
            "consumers": [
                {"username": "alice", "organization": "acme", "groups": ["staff"]},
                {"username": "bob", "organization": "globex", "groups": ["staff"]},
                {"username": "ops", "groups": ["staff"]},
            ],
            "plugins": [
                {
                    "name": "jwt-auth",
                    "config": {
                        "keys": [{"kid": "hk", "algorithm": "HS256", "secret": STATIC_SECRET}],
                        "allow_unmapped": allow_unmapped,
                    },
                },
                {"name": "acl", "config": {"allow": ["staff"]}},
            ],
        }
    )


def compiled(snapshot: Snapshot, name: str) -> CompiledRoute:
    match = snapshot.router.match("GET", "", f"/{name}", [])
    assert match is not None
    assert match.payload.name == name
    return match.payload


def token(sub: str, *, gateway: bool = False) -> str:
    claims = {"sub": sub, "exp": NOW + 300, "iat": NOW}
    if gateway:
        claims |= {"iss": ISSUER, "jti": f"j-{sub}", "client_id": f"{sub}-app"}
        return jwt.encode(
            claims, GATEWAY_SECRET, algorithm="HS256", headers={"kid": "gw-1", "typ": "at+jwt"}
        )
    return jwt.encode(claims, STATIC_SECRET, algorithm="HS256", headers={"kid": "hk"})


async def present(
    route: CompiledRoute, bearer: str
) -> tuple[RequestContext, PluginResponse | None]:
    """Run the route's access chain on a request carrying `bearer`."""
    headers = [(b"authorization", f"Bearer {bearer}".encode())]
    scope: dict[str, Any] = {"type": "http", "headers": headers, "query_string": b""}
    ctx = RequestContext(scope, route, "GET", "/", "127.0.0.1", "rid", None, list(headers))
    for plugin in route.chain.access:
        reply = await plugin.access(ctx)
        if reply is not None:
            return ctx, reply
    return ctx, None


def refusal(reply: PluginResponse | None) -> tuple[int, str] | None:
    if reply is None:
        return None
    return reply.status, str(json.loads(reply.body)["detail"])


UNKNOWN = (401, "Invalid bearer token: unknown consumer.")
NOT_IN_GROUP = (403, "This consumer may not use this route.")


@pytest.fixture
def snapshot() -> Snapshot:
    env = PluginEnv(clock=lambda: NOW, issuer_keys=gateway_issuer())
    return build_snapshot(config(), 1, env=env)


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        # A tenant's route: its own consumers only.
        ("acme", {"alice": None, "bob": UNKNOWN, "ops": UNKNOWN}),
        ("globex", {"alice": UNKNOWN, "bob": None, "ops": UNKNOWN}),
        # ... and with shared_consumers the operator's, in none of the route's groups.
        ("globex-shared", {"alice": UNKNOWN, "bob": None, "ops": NOT_IN_GROUP}),
        # The operator's routes: the operator's consumers; shared: everyone's, whose
        # groups are their own organization's words.
        ("ops", {"alice": UNKNOWN, "bob": UNKNOWN, "ops": None}),
        ("ops-shared", {"alice": NOT_IN_GROUP, "bob": NOT_IN_GROUP, "ops": None}),
    ],
)
@pytest.mark.parametrize("gateway", [False, True], ids=["static-key", "gateway-token"])
async def test_a_route_accepts_the_consumers_of_its_organization(
    snapshot: Snapshot, route: str, expected: dict[str, tuple[int, str] | None], gateway: bool
) -> None:
    compiled_route = compiled(snapshot, route)
    for sub, outcome in expected.items():
        ctx, reply = await present(compiled_route, token(sub, gateway=gateway))
        assert refusal(reply) == outcome, (route, sub)
        if outcome is None:
            assert ctx.consumer is not None
            assert ctx.consumer.username == sub


async def test_a_shared_consumer_carries_no_groups_upstream(snapshot: Snapshot) -> None:
    route = compiled(snapshot, "ops-shared")
    own, reply = await present(route, token("ops"))
    assert reply is None
    assert dict(own.upstream_headers)[b"x-consumer-groups"] == b"staff"
    auth = route.chain.access[0]  # jwt-auth, before acl
    ctx, reply = await present_with(auth, token("alice"), route)
    assert reply is None
    assert ctx.consumer is not None
    assert ctx.consumer.groups == frozenset()
    assert b"x-consumer-groups" not in dict(ctx.upstream_headers)


async def present_with(
    plugin: Any, bearer: str, route: CompiledRoute
) -> tuple[RequestContext, PluginResponse | None]:
    headers = [(b"authorization", f"Bearer {bearer}".encode())]
    scope: dict[str, Any] = {"type": "http", "headers": headers, "query_string": b""}
    ctx = RequestContext(scope, route, "GET", "/", "127.0.0.1", "rid", None, list(headers))
    return ctx, await plugin.access(ctx)


async def test_a_gateway_token_of_another_organization_is_refused_even_unmapped() -> None:
    env = PluginEnv(clock=lambda: NOW, issuer_keys=gateway_issuer())
    snapshot = build_snapshot(config(allow_unmapped=True), 1, env=env)
    route = compiled(snapshot, "globex")
    auth = route.chain.access[0]
    # Another issuer's unknown subject is still let through unmapped, as configured...
    ctx, reply = await present_with(auth, token("someone-else"), route)
    assert reply is None
    assert ctx.consumer is None
    # ... but the gateway's own token for acme's alice names a consumer this route does
    # not accept: refused, never downgraded to an unmapped caller.
    _, reply = await present_with(auth, token("alice", gateway=True), route)
    assert refusal(reply) == UNKNOWN


def test_one_instance_is_built_once_per_view() -> None:
    snapshot = build_snapshot(config(), 1, env=PluginEnv(issuer_keys=gateway_issuer()))
    acme, globex, shared = (
        compiled(snapshot, name).chain.access[0] for name in ("acme", "globex", "globex-shared")
    )
    assert acme is not globex
    assert globex is not shared
    assert acme.env.consumers.by_username.keys() == {"alice"}
    assert globex.env.consumers.by_username.keys() == {"bob"}
    assert shared.env.consumers.by_username.keys() == {"bob", "ops"}


def test_views_keep_the_owners_custom_ids() -> None:
    index = ConsumerIndex(
        [
            Consumer(username="own", organization="acme", custom_id="c-1"),
            Consumer(username="op", custom_id="c-1"),
        ]
    )
    view = index.view("acme", shared=True)
    assert view.by_custom_id["c-1"].username == "own"
    assert index.view("acme", shared=True) is view
    assert index.view("globex").by_username == {}
