from __future__ import annotations

from portcullis.model import GatewayConfig
from portcullis.proxy.paths import upstream_target
from portcullis.runtime.snapshot import build_snapshot


def _route(strip: bool = True, base: str = "/", paths: list[str] | None = None):  # type: ignore[no-untyped-def]
    cfg = GatewayConfig.model_validate(
        {
            "services": [{"name": "s", "url": f"http://up:80{base}"}],
            "routes": [
                {"name": "r", "service": "s", "paths": paths or ["/api"], "strip_path": strip}
            ],
        }
    )
    return build_snapshot(cfg, 1)


def _target(path: str, raw: bytes | None = None, query: bytes = b"", **kw: object) -> bytes:
    snap = _route(**kw)  # type: ignore[arg-type]
    m = snap.router.match("GET", "h", path, [])
    assert m is not None
    scope = {
        "path": path,
        "raw_path": raw if raw is not None else path.encode(),
        "query_string": query,
    }
    return upstream_target(scope, m.payload, m.matched_length)


def test_strip_prefix() -> None:
    assert _target("/api/users") == b"/users"
    assert _target("/api") == b"/"
    assert _target("/api/users", query=b"a=1") == b"/users?a=1"


def test_no_strip_keeps_path() -> None:
    assert _target("/api/users", strip=False) == b"/api/users"


def test_base_path_is_prepended() -> None:
    assert _target("/api/users", base="/v2") == b"/v2/users"
    assert _target("/api", base="/v2/") == b"/v2"
    assert _target("/api/x", base="/v2", strip=False) == b"/v2/api/x"


def test_raw_encoding_survives_stripping() -> None:
    assert _target("/api/a/b c", raw=b"/api/a%2Fb%20c") == b"/a%2Fb%20c"
    assert _target("/api/\u00e9", raw=b"/api/%C3%A9") == b"/%C3%A9"


def test_encoded_prefix_is_stripped_by_its_decoded_form() -> None:
    assert _target("/api/x", raw=b"/%61pi/x") == b"/x"


def test_regex_strip_uses_matched_length() -> None:
    assert _target("/users/42/posts", paths=["~^/users/(?P<id>[0-9]+)"]) == b"/posts"


def test_a_cut_inside_a_segment_cannot_climb_above_the_base_path() -> None:
    # "/a../x" has no dot-segment, but stripping what "~^/a" matched leaves "../x".
    assert _target("/a../x", paths=["~^/a"], base="/v2") == b"/v2/x"
    assert _target("/a./x", paths=["~^/a"], base="/v2") == b"/v2/x"
    assert _target("/a..", paths=["~^/a"], base="/v2") == b"/v2/"
