"""The request inspector's compiled state: redaction (incl. names derived from the route's
auth plugins), sampling with an injected random source, the time box with an injected
clock, the count, and capture slots carried across snapshots."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from portcullis.identity.credential_cache import CredentialCache
from portcullis.identity.key_records import KeyRecord
from portcullis.identity.secrets import ServerSecret
from portcullis.model import GatewayConfig
from portcullis.plugins.env import PluginEnv
from portcullis.runtime.captures import (
    DEFAULT_REDACTION,
    REDACTED,
    CaptureBoard,
    CapturedExchange,
    CaptureSession,
    scrub,
)
from portcullis.runtime.snapshot import CompiledRoute, Snapshot, build_snapshot
from support.clock import ManualClock


class _NoKeys:
    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        return None

    async def touch_used(self, stamps: dict[str, datetime]) -> None:
        return None


SECRET = ServerSecret.from_secret(b"unit-test-secret-0123456789abcdef!")
ENV = PluginEnv(credentials=CredentialCache(_NoKeys(), SECRET))


def _config(**extra: Any) -> GatewayConfig:
    doc: dict[str, Any] = {
        "services": [{"name": "s", "url": "http://127.0.0.1:9"}],
        "routes": [
            {"name": "keyed", "service": "s", "paths": ["/keyed"]},
            {"name": "jwt", "service": "s", "paths": ["/jwt"]},
            {"name": "open", "service": "s", "paths": ["/open"]},
        ],
        "plugins": [
            {
                "name": "key-auth",
                "route": "keyed",
                "config": {"header_names": ["x-portal-key"], "query_param": "the_key"},
            },
            {
                "name": "jwt-auth",
                "route": "jwt",
                "config": {"header": "x-token", "query_param": "jwt", "cookie": "session"},
            },
        ],
        **extra,
    }
    return GatewayConfig.model_validate(doc)


def _route(snapshot: Snapshot, path: str) -> CompiledRoute:
    match = snapshot.router.match("GET", "", path, [])
    assert match is not None
    return match.payload


def test_redaction_adds_the_names_the_routes_auth_plugins_read() -> None:
    snapshot = build_snapshot(_config(), 1, env=ENV)
    keyed = _route(snapshot, "/keyed").redaction
    jwt = _route(snapshot, "/jwt").redaction
    assert b"x-portal-key" in keyed.headers
    assert "the_key" in keyed.query
    assert b"x-token" not in keyed.headers
    assert b"x-token" in jwt.headers
    assert "jwt" in jwt.query
    assert _route(snapshot, "/open").redaction is DEFAULT_REDACTION
    headers = keyed.header_list(
        [
            (b"authorization", b"Bearer abc.def"),
            (b"proxy-authorization", b"Basic Zm9vOmJhcg=="),
            (b"cookie", b"a=1; b=2"),
            (b"x-portal-key", b"pc_live_secret"),
            (b"x-api-key", b"bare-secret"),
            (b"accept", b"application/json"),
        ]
    )
    assert headers == [
        ["authorization", f"Bearer {REDACTED}"],
        ["proxy-authorization", f"Basic {REDACTED}"],
        ["cookie", REDACTED],
        ["x-portal-key", REDACTED],
        ["x-api-key", REDACTED],
        ["accept", "application/json"],
    ]
    assert keyed.query_string(b"q=1&the_key=s3cret&THE%5FKEY=x&access_token=t&flag") == (
        f"q=1&the_key={REDACTED}&THE%5FKEY={REDACTED}&access_token={REDACTED}&flag"
    )
    assert jwt.query_string(b"the_key=visible&jwt=e.y.j") == f"the_key=visible&jwt={REDACTED}"
    assert DEFAULT_REDACTION.header_list([(b"set-cookie", b"sid=1; HttpOnly")]) == [
        ["set-cookie", REDACTED]
    ]


def _session(clock: ManualClock, draws: list[float], **fields: Any) -> CaptureSession:
    taken: list[CapturedExchange] = []
    values: dict[str, Any] = {
        "id": "s1",
        "route": "keyed",
        "ends_at": clock.now + 60,
        "sample_rate": 0.25,
        "max_count": 10,
        "sink": taken.append,
        "clock": clock,
        "random": lambda: draws.pop(0),
    }
    return CaptureSession(**(values | fields))


def test_sampling_takes_draws_below_the_rate() -> None:
    clock = ManualClock()
    draws = [0.1, 0.25, 0.9, 0.2499]
    session = _session(clock, draws)
    assert [session.admit() for _ in range(4)] == [True, False, False, True]
    assert session.taken == 2
    everything = _session(clock, [], sample_rate=1.0)
    assert everything.admit()  # a rate of 1 takes every request without a draw


def test_the_time_box_and_the_count_end_a_session_and_clear_its_slot() -> None:
    clock = ManualClock()
    board = CaptureBoard()
    session = _session(clock, [], sample_rate=1.0, max_count=2)
    board.install([session])
    assert board.slot("keyed").session is session
    assert session.admit()
    clock.advance(60)
    assert not session.admit()
    assert board.slot("keyed").session is None
    other = _session(clock, [], id="s2", sample_rate=1.0, max_count=1, ends_at=clock.now + 5)
    board.install([other])
    assert other.admit()
    assert not other.admit()
    assert board.slot("keyed").session is None


def test_slots_survive_config_changes_and_install_replaces_sessions() -> None:
    first = build_snapshot(_config(), 1, env=ENV)
    board = first.captures
    session = _session(ManualClock(), [])
    board.install([session])
    assert board.any
    second = build_snapshot(_config(), 2, first, env=ENV)
    assert second.captures is board
    assert _route(second, "/keyed").capture.session is session
    assert _route(second, "/open").capture.session is None
    board.install([])
    assert not board.any
    assert _route(second, "/keyed").capture.session is None


def test_credential_values_are_scrubbed_from_bodies_also_when_cut() -> None:
    found: set[bytes] = set()
    DEFAULT_REDACTION.header_list(
        [(b"authorization", b"Basic dXNlcjpwYXNz"), (b"cookie", b"sid=abc123; theme=dark")],
        found,
    )
    DEFAULT_REDACTION.query_string(b"token=pc_live_S3CRET%2B1&q=1", found)
    echoed = b'{"auth": "Basic dXNlcjpwYXNz", "q": "token=pc_live_S3CRET+1", "c": "sid=abc123"}'
    assert scrub(echoed, found) == (
        b'{"auth": "Basic [redacted]", "q": "token=[redacted]", "c": "sid=[redacted]"}'
    )
    assert scrub(b"cut right inside pc_live_S3C", found) == b"cut right inside [redacted]"
    assert scrub(b"theme=dark", found) == b"theme=dark"  # short values are left alone
