"""API version resolution compiled into the snapshot (runtime/versions.py), driven through
each matched route's access chain with an injected clock; the auth plugins' outcome
(consumer, key environment) is set where they would run."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from http_sfv.item import Item

from portcullis.identity.key_records import api_version_pins
from portcullis.model import GatewayConfig
from portcullis.plugins.acl import Acl
from portcullis.plugins.base import PluginResponse
from portcullis.plugins.env import DEFAULT_ENV
from portcullis.plugins.jwt_auth import JwtAuth
from portcullis.plugins.key_auth import KeyAuth
from portcullis.plugins.request_size_limit import RequestSizeLimit
from portcullis.proxy.context import ProxyContext
from portcullis.runtime.snapshot import CompiledRoute, Snapshot, build_snapshot
from portcullis.runtime.versions import VersionFromConsumer, VersionFromRequest

DEPRECATED_AT = datetime(2026, 11, 1, tzinfo=UTC)
SUNSET_AT = datetime(2027, 12, 31, tzinfo=UTC)
BEFORE_SUNSET = datetime(2027, 6, 1, tzinfo=UTC).timestamp()


def config(**api: Any) -> dict[str, Any]:
    """Services a/b/c/sandbox; /v1 and /v2 path-versioned, /items shared by the versions."""
    services = [{"name": n, "url": f"http://{n}.test"} for n in ("a", "b", "c", "sandbox")]
    return {
        "services": services,
        "routes": [
            {"name": "r-v1", "service": "a", "paths": ["/v1"]},
            {"name": "r-v2", "service": "a", "paths": ["/v2"]},
            {"name": "shared", "service": "a", "paths": ["/items"]},
            {"name": "plain", "service": "a", "paths": ["/plain"]},
        ],
        "consumers": [
            {"username": "pinned", "api_versions": {"demo": "v1"}},
            {"username": "unpinned"},
        ],
        "apis": [
            {
                "name": "demo",
                "routes": ["shared"],
                "default_version": "v2",
                "selection": {"header": "Api-Version", "query": "version", "media_type": True},
                "versions": [
                    {
                        "name": "v1",
                        "status": "deprecated",
                        "routes": ["r-v1"],
                        "service": "b",
                        "deprecated_at": DEPRECATED_AT.isoformat(),
                        "sunset_at": SUNSET_AT.isoformat(),
                        "deprecation_link": "https://docs.example.com/v1-deprecation",
                        "sunset_link": "https://docs.example.com/v1-sunset",
                        "successor": "v2",
                    },
                    {"name": "v2", "routes": ["r-v2"], "service": "c"},
                ],
                **api,
            }
        ],
    }


class Clock:
    def __init__(self, now: float = BEFORE_SUNSET) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def snapshot_of(data: dict[str, Any], clock: Clock | None = None) -> Snapshot:
    env = replace(DEFAULT_ENV, clock=clock or Clock())
    return build_snapshot(GatewayConfig.model_validate(data), 1, env=env)


class Outcome:
    def __init__(self, ctx: ProxyContext, reply: PluginResponse | None) -> None:
        self.ctx = ctx
        self.reply = reply

    @property
    def status(self) -> int:
        return self.reply.status if self.reply is not None else 200

    @property
    def problem(self) -> dict[str, Any]:
        assert self.reply is not None
        assert (b"content-type", b"application/problem+json") in self.reply.headers
        body: dict[str, Any] = json.loads(self.reply.body)
        return body

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.ctx.response_headers if n == name]

    @property
    def service(self) -> str:
        return self.ctx.route.service.name


async def request(
    snapshot: Snapshot,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
    consumer: str | None = None,
    environment: str | None = None,
    key_pins: dict[str, str] | None = None,
) -> Outcome:
    match = snapshot.router.match("GET", "", path, [])
    assert match is not None
    route: CompiledRoute = match.payload
    scope: dict[str, Any] = {"type": "http", "headers": headers or [], "query_string": query}
    ctx = ProxyContext(scope, route, "GET", path, "203.0.113.7", "rid", None, [])
    for plugin in route.chain.access:
        if plugin.priority < 1250 and consumer is not None and ctx.consumer is None:
            # Where key-auth (1250) would have identified the caller.
            known = snapshot.env.consumers.get(consumer)
            assert known is not None
            ctx.consumer, ctx.environment = known, environment
            ctx.api_pins = key_pins or {}
        reply = await plugin.access(ctx)
        if reply is not None:
            return Outcome(ctx, reply)
    return Outcome(ctx, None)


async def test_a_path_versioned_route_is_its_version_with_the_lifecycle_headers() -> None:
    snapshot = snapshot_of(config())
    v1 = await request(snapshot, "/v1/things")
    assert (v1.status, v1.ctx.api, v1.ctx.api_version) == (200, "demo", "v1")
    # The path decides: a version header on a versioned route changes nothing, nor
    # does the version's `service` (that is for the shared routes).
    assert v1.service == "a"
    assert (await request(snapshot, "/v1", [(b"api-version", b"v2")])).ctx.api_version == "v1"
    (deprecation,) = v1.header(b"deprecation")
    item = Item()
    item.parse(deprecation)
    assert item.value == DEPRECATED_AT.replace(tzinfo=None)
    (sunset,) = v1.header(b"sunset")
    assert parsedate_to_datetime(sunset.decode()) == SUNSET_AT
    assert v1.header(b"link") == [
        b'<https://docs.example.com/v1-deprecation>; rel="deprecation"',
        b'<https://docs.example.com/v1-sunset>; rel="sunset"',
    ]
    v2 = await request(snapshot, "/v2/things")
    # No lifecycle headers, and no Vary: the path alone chose the version.
    assert (v2.ctx.api, v2.ctx.api_version, v2.ctx.response_headers) == ("demo", "v2", [])


async def test_a_route_no_api_names_gets_no_version_step() -> None:
    snapshot = snapshot_of(config())
    match = snapshot.router.match("GET", "", "/plain", [])
    assert match is not None
    assert match.payload.chain.access == ()
    plain = await request(snapshot, "/plain")
    assert (plain.ctx.api, plain.ctx.api_version) == (None, None)


@pytest.mark.parametrize(
    ("headers", "query", "version"),
    [
        ([(b"api-version", b"v1")], b"", "v1"),
        ([], b"a=1&version=v1", "v1"),
        ([(b"accept", b"text/html;q=0.9, application/vnd.demo.v1+json")], b"", "v1"),
        ([(b"accept", b"Application/VND.Demo.v1+JSON; charset=utf-8")], b"", "v1"),
        # Header beats query beats media type.
        (
            [(b"api-version", b"v2"), (b"accept", b"application/vnd.demo.v1+json")],
            b"version=v1",
            "v2",
        ),
        ([(b"accept", b"application/vnd.demo.v2+json")], b"version=v1", "v1"),
        # Other vendors' media types and empty values name nothing: the default.
        ([(b"accept", b"application/vnd.other.v1+json")], b"", "v2"),
        ([(b"api-version", b" ")], b"version=", "v2"),
    ],
)
async def test_a_shared_route_reads_the_version_the_request_names(
    headers: list[tuple[bytes, bytes]], query: bytes, version: str
) -> None:
    served = await request(snapshot_of(config()), "/items", headers, query)
    assert (served.status, served.ctx.api_version) == (200, version)
    # Caches in front of the gateway must key on what selected the version.
    assert served.header(b"vary") == [b"Api-Version, Accept"]
    # The chosen version's service answers the shared route.
    assert served.service == {"v1": "b", "v2": "c"}[version]


async def test_a_consumers_pin_applies_when_the_request_names_no_version() -> None:
    snapshot = snapshot_of(config())
    pinned = await request(snapshot, "/items", consumer="pinned")
    assert (pinned.ctx.api_version, pinned.service) == ("v1", "b")
    assert pinned.header(b"deprecation")  # the pinned version's lifecycle applies
    explicit = await request(snapshot, "/items", [(b"api-version", b"v2")], consumer="pinned")
    assert explicit.ctx.api_version == "v2"
    other = await request(snapshot, "/items", consumer="unpinned")
    assert (other.ctx.api_version, other.service) == ("v2", "c")


async def test_a_keys_pin_beats_the_consumers() -> None:
    snapshot = snapshot_of(config())
    by_key = await request(snapshot, "/items", consumer="pinned", key_pins={"demo": "v2"})
    assert by_key.ctx.api_version == "v2"
    other_api = await request(snapshot, "/items", consumer="unpinned", key_pins={"x": "v1"})
    assert other_api.ctx.api_version == "v2"  # the default
    # A key pin naming no version of the API is passed over: the consumer's pin applies.
    stale = await request(snapshot, "/items", consumer="pinned", key_pins={"demo": "v9"})
    assert (stale.status, stale.ctx.api_version) == (200, "v1")
    named = await request(
        snapshot, "/items", [(b"api-version", b"v1")], consumer="unpinned", key_pins={"demo": "v2"}
    )
    assert named.ctx.api_version == "v1"


def test_key_metadata_pins_are_the_api_version_entries() -> None:
    metadata = {"api_version:demo": "v1", "api_version:x": 3, "api_version:y": "", "team": "a"}
    assert api_version_pins(metadata) == {"demo": "v1"}


async def test_an_unknown_version_is_a_400_listing_the_apis_versions() -> None:
    refused = await request(snapshot_of(config()), "/items", [(b"api-version", b"v9")])
    assert refused.status == 400
    problem = refused.problem
    assert problem["type"].endswith("/unknown-api-version")
    assert problem["versions"] == ["v1", "v2"]
    assert "'v9'" in problem["detail"]
    assert refused.ctx.error_kind == "unknown-api-version"
    assert refused.ctx.api == "demo"


async def test_no_version_and_no_default_is_a_400_naming_the_accepted_ways() -> None:
    refused = await request(snapshot_of(config(default_version=None)), "/items")
    assert refused.status == 400
    problem = refused.problem
    assert problem["type"].endswith("/api-version-required")
    assert problem["accepted"] == [
        "the Api-Version header",
        "the 'version' query parameter",
        "Accept: application/vnd.demo.<version>+json",
    ]


async def test_after_the_sunset_the_version_is_gone_naming_its_successor() -> None:
    clock = Clock(SUNSET_AT.timestamp())
    snapshot = snapshot_of(config(), clock)
    for outcome in (
        await request(snapshot, "/v1/x"),
        await request(snapshot, "/items", [(b"api-version", b"v1")]),
        await request(snapshot, "/items", consumer="pinned"),
    ):
        assert outcome.status == 410
        problem = outcome.problem
        assert problem["type"].endswith("/version-sunset")
        assert problem["successor"] == "v2"
        assert "Use version 'v2'" in problem["detail"]
        assert problem["sunset"] == "2027-12-31T00:00:00Z"
        assert outcome.reply is not None
        assert (b"link", b'</v2>; rel="successor-version"') in outcome.reply.headers
        assert outcome.header(b"sunset")  # the refusal carries the Sunset header too
        assert outcome.ctx.error_kind == "version-sunset"
    clock.now -= 1
    assert (await request(snapshot, "/v1/x")).status == 200
    assert (await request(snapshot, "/v2/x")).status == 200


async def test_a_retired_version_is_gone_whatever_its_dates() -> None:
    data = config()
    data["apis"][0]["versions"][1]["status"] = "retired"
    gone = await request(snapshot_of(data), "/v2")
    assert gone.status == 410
    assert gone.problem["detail"] == "Version 'v2' of API 'demo' is retired."


async def test_a_brownout_refuses_exactly_its_share_evenly_inside_its_window() -> None:
    start = datetime(2027, 12, 1, tzinfo=UTC).timestamp()
    data = config()
    data["apis"][0]["versions"][0]["brownouts"] = [
        {"start": "2027-12-01T00:00:00Z", "end": "2027-12-01T01:00:00Z", "share": 0.25},
        {"start": "2027-12-02T00:00:00Z", "end": "2027-12-02T01:00:00Z", "share": 1},
    ]
    clock = Clock(start - 1)
    snapshot = snapshot_of(data, clock)

    async def statuses(n: int) -> list[int]:
        return [(await request(snapshot, "/v1")).status for _ in range(n)]

    assert set(await statuses(20)) == {200}  # before the window
    clock.now = start
    inside = await statuses(100)
    assert inside.count(410) == 25
    assert inside[:8] == [200, 200, 200, 410, 200, 200, 200, 410]
    # 100 requests left the counter where it started: the fourth from now is refused.
    for _ in range(4):
        refused = await request(snapshot, "/v1")
    assert refused.status == 410
    problem = refused.problem
    assert problem["brownout"] == {
        "start": "2027-12-01T00:00:00Z",
        "end": "2027-12-01T01:00:00Z",
        "share": 0.25,
    }
    assert len(problem["brownouts"]) == 2  # every announced window
    clock.now = start + 3600  # the window ends at its `end`
    assert set(await statuses(20)) == {200}
    clock.now = start + 86400
    assert set(await statuses(5)) == {410}  # share 1: all of them
    # Other versions are untouched.
    assert (await request(snapshot, "/v2")).status == 200


async def test_a_brownout_count_carries_over_to_the_next_snapshot() -> None:
    """Config changes (a new consumer, a key) must not restart the count, or a low share
    on a quiet version would never refuse anything."""
    data = config()
    window = {"start": "2027-12-01T00:00:00Z", "end": "2027-12-01T01:00:00Z", "share": 0.25}
    data["apis"][0]["versions"][0]["brownouts"] = [window]
    clock = Clock(datetime(2027, 12, 1, tzinfo=UTC).timestamp())
    env = replace(DEFAULT_ENV, clock=clock)
    snapshot = build_snapshot(GatewayConfig.model_validate(data), 1, env=env)
    statuses = []
    for _ in range(22):  # 5.5 requests' worth of credit
        snapshot = build_snapshot(snapshot.config, snapshot.version + 1, previous=snapshot)
        statuses.append((await request(snapshot, "/v1")).status)
    assert statuses.count(410) == 5
    # Another window (here: another share) is another count.
    window["share"] = 0.5
    changed = build_snapshot(GatewayConfig.model_validate(data), 99, previous=snapshot)
    assert [(await request(changed, "/v1")).status for _ in range(2)] == [200, 410]


async def test_non_production_keys_go_to_the_versions_sandbox_service() -> None:
    data = config()
    data["apis"][0]["versions"][1]["sandbox"] = {"service": "sandbox"}
    data["apis"][0]["versions"][0]["sandbox"] = {"mock": True}
    snapshot = snapshot_of(data)
    for env in ("staging", "development"):
        for path in ("/v2", "/items"):
            sandboxed = await request(snapshot, path, consumer="unpinned", environment=env)
            assert (sandboxed.service, sandboxed.ctx.sandbox) == ("sandbox", True)
    for live_env in ("production", None):
        live = await request(snapshot, "/items", consumer="unpinned", environment=live_env)
        assert (live.service, live.ctx.sandbox) == ("c", False)
        assert (
            await request(snapshot, "/v2", consumer="unpinned", environment=live_env)
        ).service == "a"
    # A mock sandbox: marked for the request-validator to answer, the route's service kept.
    mocked = await request(snapshot, "/v1", consumer="unpinned", environment="staging")
    assert (mocked.service, mocked.ctx.sandbox) == ("a", True)


async def test_the_steps_run_around_the_auth_plugins() -> None:
    data = config()
    data["plugins"] = [
        {"name": "cors", "route": "shared", "config": {"origins": ["https://a.test"]}},
        {"name": "ip-restriction", "route": "shared", "config": {"allow": ["0.0.0.0/0"]}},
        {"name": "request-size-limit", "route": "shared", "config": {"max_bytes": 10}},
    ]
    match = snapshot_of(data).router.match("GET", "", "/items", [])
    assert match is not None
    names = [p.name for p in match.payload.chain.access]
    assert names == [
        "cors",
        "ip-restriction",
        "api-version",
        "api-version-consumer",
        "request-size-limit",
    ]
    # The request's own version before any auth plugin; pins and defaults right after
    # them, before acl and the limits.
    assert VersionFromRequest.priority > max(JwtAuth.priority, KeyAuth.priority)
    assert min(JwtAuth.priority, KeyAuth.priority) > VersionFromConsumer.priority
    assert VersionFromConsumer.priority > max(Acl.priority, RequestSizeLimit.priority)
    versioned = snapshot_of(config()).router.match("GET", "", "/v1", [])
    assert versioned is not None
    # A path-versioned route without a sandbox needs no consumer step.
    assert [type(p) for p in versioned.payload.chain.access] == [VersionFromRequest]


def test_a_stable_version_with_an_announced_deprecation_carries_it_already() -> None:
    data = config()
    data["apis"][0]["versions"][1].update(
        deprecated_at="2028-01-01T00:00:00Z", sunset_at="2028-06-30T12:00:00Z"
    )
    snapshot = snapshot_of(data)
    match = snapshot.router.match("GET", "", "/v2", [])
    assert match is not None
    (step,) = match.payload.chain.access
    assert isinstance(step, VersionFromRequest)
    assert step.plan.static is not None
    headers = dict(step.plan.static.headers)
    item = Item()
    item.parse(headers[b"deprecation"])
    assert item.value == datetime(2028, 1, 1)
    assert headers[b"sunset"] == b"Fri, 30 Jun 2028 12:00:00 GMT"
