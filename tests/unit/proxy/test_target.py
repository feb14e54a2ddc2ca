"""proxy.target: Host validation, path normalization (RFC 3986 §6.2.2) and routing on it."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from portcullis.model import GatewayConfig
from portcullis.model.config import Route
from portcullis.proxy.target import (
    NormalizedPath,
    Refusal,
    normalize_path,
    remove_dot_segments,
    request_host,
    route_request,
)
from portcullis.runtime.snapshot import build_snapshot

# -- remove_dot_segments ------------------------------------------------------------


def _rfc_remove_dot_segments(path: str) -> str:
    """The RFC 3986 §5.2.4 algorithm, step by step, as a reference."""
    inp, out = path, ""
    while inp:
        if inp.startswith("../"):
            inp = inp[3:]
        elif inp.startswith("./"):
            inp = inp[2:]
        elif inp.startswith("/./"):
            inp = "/" + inp[3:]
        elif inp == "/.":
            inp = "/"
        elif inp.startswith("/../"):
            inp = "/" + inp[4:]
            out = out[: out.rfind("/")] if "/" in out else ""
        elif inp == "/..":
            inp = "/"
            out = out[: out.rfind("/")] if "/" in out else ""
        elif inp in (".", ".."):
            inp = ""
        else:
            start = 1 if inp.startswith("/") else 0
            end = inp.find("/", start)
            end = len(inp) if end < 0 else end
            out += inp[:end]
            inp = inp[end:]
    return out


def _resolve_path(base: str, ref: str) -> str:
    """RFC 3986 §5.2.2-5.2.3 for a path-only reference against an absolute base path."""
    if ref.startswith("/"):
        return remove_dot_segments(ref)
    if ref == "":
        return base
    return remove_dot_segments(base[: base.rfind("/") + 1] + ref)


# RFC 3986 §5.4.1 and §5.4.2 with base "http://a/b/c/d;p?q": references whose
# result is decided by the path (no scheme, authority, query or fragment).
RFC_5_4 = [
    ("g", "/b/c/g"),
    ("./g", "/b/c/g"),
    ("g/", "/b/c/g/"),
    ("/g", "/g"),
    (";x", "/b/c/;x"),
    ("g;x", "/b/c/g;x"),
    (".", "/b/c/"),
    ("./", "/b/c/"),
    ("..", "/b/"),
    ("../", "/b/"),
    ("../g", "/b/g"),
    ("../..", "/"),
    ("../../", "/"),
    ("../../g", "/g"),
    ("../../../g", "/g"),
    ("../../../../g", "/g"),
    ("/./g", "/g"),
    ("/../g", "/g"),
    ("g.", "/b/c/g."),
    (".g", "/b/c/.g"),
    ("g..", "/b/c/g.."),
    ("..g", "/b/c/..g"),
    ("./../g", "/b/g"),
    ("./g/.", "/b/c/g/"),
    ("g/./h", "/b/c/g/h"),
    ("g/../h", "/b/c/h"),
    ("g;x=1/./y", "/b/c/g;x=1/y"),
    ("g;x=1/../y", "/b/c/y"),
]


@pytest.mark.parametrize(("ref", "expected"), RFC_5_4)
def test_rfc_3986_section_5_4_examples(ref: str, expected: str) -> None:
    assert _resolve_path("/b/c/d;p", ref) == expected


def test_rfc_3986_section_5_2_4_example() -> None:
    assert remove_dot_segments("/a/b/c/./../../g") == "/a/g"


@given(st.lists(st.sampled_from(["", ".", "..", "a", "b.", ".c", "...", "%2E"]), max_size=12))
def test_remove_dot_segments_matches_the_rfc_algorithm(segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    assert remove_dot_segments(path) == _rfc_remove_dot_segments(path)


@given(st.text(alphabet="/.ab", max_size=30).map(lambda s: "/" + s))
def test_remove_dot_segments_matches_the_rfc_algorithm_on_any_text(path: str) -> None:
    assert remove_dot_segments(path) == _rfc_remove_dot_segments(path)


UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"

# -- normalize_path -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected_raw"),
    [
        (b"/public/../admin", b"/admin"),
        (b"/public/%2e%2e/admin", b"/admin"),
        (b"/public/%2E%2E/admin", b"/admin"),
        (b"/public/.%2e/admin", b"/admin"),
        (b"/public/%2e./admin", b"/admin"),
        (b"/public/./../admin", b"/admin"),
        (b"/public/%2e/../admin", b"/admin"),
        (b"/public/..", b"/"),
        (b"/public/.", b"/public/"),
        (b"//admin", b"/admin"),
        (b"/public//..//admin/", b"/public/admin/"),
        (b"/a%41%7e%5f%2d", b"/aA~_-"),
        (b"/a%3b%3f%23%25", b"/a%3B%3F%23%25"),
        (b"/public/%252e%252e/admin", b"/public/%252e%252e/admin"),
        (b"/\xc3\xa9", b"/%C3%A9"),
        (b'/a"<>{}|^`[]', b"/a%22%3C%3E%7B%7D%7C%5E%60%5B%5D"),
        (b"/a;b=c/d", b"/a;b=c/d"),
        (b"/.well-known/x", b"/.well-known/x"),
    ],
)
def test_normalized_raw_path(raw: bytes, expected_raw: bytes) -> None:
    norm = normalize_path(raw)
    assert isinstance(norm, NormalizedPath)
    assert norm.raw == expected_raw
    assert norm.text == unquote_to_bytes(expected_raw).decode("utf-8", "replace")


def test_routing_text_is_decoded_once() -> None:
    norm = normalize_path(b"/public/%252e%252e/admin")
    assert isinstance(norm, NormalizedPath)
    assert norm.text == "/public/%2e%2e/admin"


@pytest.mark.parametrize(
    "raw",
    [
        b"/public/..%2fadmin",
        b"/public/%2e%2e%2fadmin",
        b"/public/..%5cadmin",
        b"/public/..\\admin",
        b"/a%2Fb",
    ],
)
def test_encoded_slashes_are_flagged(raw: bytes) -> None:
    norm = normalize_path(raw)
    assert isinstance(norm, NormalizedPath)
    assert norm.encoded_slash
    assert b"\\" not in norm.raw


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"/public/..;/admin", "dot-segment with parameters"),
        (b"/public/.;x/admin", "dot-segment with parameters"),
        (b"/public/%2e%2e;jsessionid=1/admin", "dot-segment with parameters"),
        (b"/a%00b", "control character"),
        (b"/a%0d%0ab", "control character"),
        (b"/a%7F", "control character"),
        (b"/a\x01b", "control character"),
        (b"/a%zz", "invalid percent-encoding"),
        (b"/a%4", "invalid percent-encoding"),
        (b"/a%", "invalid percent-encoding"),
        (b"*", "absolute path"),
        (b"a/b", "absolute path"),
    ],
)
def test_refused_paths(raw: bytes, reason: str) -> None:
    refusal = normalize_path(raw)
    assert isinstance(refusal, Refusal)
    assert reason in refusal.detail


_SEGMENTS = ["", ".", "..", "%2e", "%2E%2e", ".%2E", "a", "%41", "%7e", "%2f", "%5C", "%25"]
_SEGMENTS += ["%252e", "\\", ";", "é", "%C3%A9", "~", "x;y"]
_RAW_PATHS = st.lists(
    st.sampled_from(_SEGMENTS),
    max_size=10,
).map(lambda segs: ("/" + "/".join(segs)).encode())


@given(_RAW_PATHS)
def test_normalization_is_idempotent_and_canonical(raw: bytes) -> None:
    norm = normalize_path(raw)
    if isinstance(norm, Refusal):
        return
    again = normalize_path(norm.raw)
    assert again == norm
    segments = norm.raw.split(b"/")[1:]
    assert b"." not in segments
    assert b".." not in segments
    assert b"//" not in norm.raw
    for i in range(len(norm.raw)):
        if norm.raw[i] == 0x25:
            escape = norm.raw[i + 1 : i + 3]
            assert escape == escape.upper()
            assert int(escape, 16) not in UNRESERVED


def _reference_normalize(raw: bytes) -> bytes | str:
    """normalize_path's raw result written plainly, segment by segment; str: why refused."""
    if not raw.startswith(b"/"):
        return "absolute path"
    segments: list[str] = []
    for seg in raw[1:].split(b"/"):
        out = b""
        i = 0
        while i < len(seg):
            c = seg[i]
            if c == ord("%"):
                digits = seg[i + 1 : i + 3]
                if len(digits) < 2 or not all(d in b"0123456789abcdefABCDEF" for d in digits):
                    return "invalid percent-encoding"
                byte = int(digits, 16)
                if byte < 0x20 or byte == 0x7F:
                    return "control character"
                out += bytes([byte]) if byte in UNRESERVED else b"%%%02X" % byte
                i += 3
                continue
            if c < 0x20 or c == 0x7F:
                return "control character"
            out += bytes([c]) if c in UNRESERVED + b"!$&'()*+,;=:@" else b"%%%02X" % c
            i += 1
        if out.split(b";")[0] in (b".", b"..") and b";" in out:
            return "dot-segment with parameters"
        segments.append(out.decode())
    path = _rfc_remove_dot_segments("/" + "/".join(segments))
    while "//" in path:
        path = path.replace("//", "/")
    return path.encode()


@given(st.one_of(_RAW_PATHS, st.binary(max_size=40).map(lambda b: b"/" + b)))
def test_normalize_path_matches_a_plain_reference(raw: bytes) -> None:
    norm = normalize_path(raw)
    expected = _reference_normalize(raw)
    if isinstance(expected, str):
        # Which reason is named first may differ when a path has several faults.
        assert isinstance(norm, Refusal)
    else:
        assert isinstance(norm, NormalizedPath)
        assert norm.raw == expected
        assert norm.text == unquote_to_bytes(expected).decode("utf-8", "replace")
        assert norm.encoded_slash == (b"%2F" in expected or b"%5C" in expected)


@given(_RAW_PATHS)
def test_decoded_text_never_has_a_dot_segment_the_raw_path_lacks(raw: bytes) -> None:
    """What routes match and what the upstream resolves are the same segments."""
    norm = normalize_path(raw)
    if isinstance(norm, Refusal) or norm.encoded_slash:
        return
    assert remove_dot_segments(norm.text) == norm.text


# -- Host ---------------------------------------------------------------------------


def _scope(
    headers: list[tuple[bytes, bytes]], raw_path: bytes = b"/", version: str = "1.1"
) -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": version,
        "method": "GET",
        "path": raw_path.decode("latin-1"),
        "raw_path": raw_path,
        "headers": headers,
    }


@pytest.mark.parametrize(
    "host",
    [b"api.example.com", b"api.example.com:8080", b"127.0.0.1:80", b"[::1]:8000", b"a-b_c~d"],
)
def test_valid_hosts(host: bytes) -> None:
    assert request_host(_scope([(b"host", host)])) == host


@pytest.mark.parametrize(
    "host",
    [
        b"a b",
        b"user@host",
        b"host/path",
        b"host:80:80",
        b"host:port",
        b"[::1",
        b"h\\x",
        b'h"',
        b"secure%2Eexample",
    ],
)
def test_invalid_hosts_are_refused(host: bytes) -> None:
    assert request_host(_scope([(b"host", host)])) == Refusal("invalid Host header")


def test_two_hosts_are_refused_whatever_their_values() -> None:
    scope = _scope([(b"host", b"a.example"), (b"x", b"1"), (b"host", b"a.example")])
    assert request_host(scope) == Refusal("more than one Host header")


@pytest.mark.parametrize("version", ["1.1", "2"])
def test_missing_host_is_refused_from_http_1_1_on(version: str) -> None:
    # granian reports a missing Host (and a missing :authority) as an empty Host.
    assert isinstance(request_host(_scope([(b"host", b"")], version=version)), Refusal)


def test_http_1_0_may_omit_host() -> None:
    assert request_host(_scope([(b"host", b"")], version="1")) == b""


def test_encoded_slashes_is_a_route_choice_rejected_by_default() -> None:
    assert Route(name="r", service="s").encoded_slashes == "reject"
    assert Route(name="r", service="s", encoded_slashes="keep").encoded_slashes == "keep"
    with pytest.raises(ValidationError):
        Route.model_validate({"name": "r", "service": "s", "encoded_slashes": "allow"})


# -- route_request ------------------------------------------------------------------


def _router(**route: Any) -> Any:
    doc = {
        "services": [{"name": "s", "url": "http://up:80"}],
        "routes": [
            {"name": "public", "service": "s", "paths": ["/public"]},
            {"name": "admin", "service": "s", "paths": ["/admin"]},
            {"name": "files", "service": "s", "paths": ["/files"], **route},
        ],
    }
    return build_snapshot(GatewayConfig.model_validate(doc), 1).router


def _route(raw: bytes, **route: Any) -> tuple[Any, dict[str, Any]]:
    scope = _scope([(b"host", b"gw")], raw)
    return route_request(_router(**route), "GET", scope), scope


def test_routes_by_the_normalized_path_and_leaves_it_in_the_scope() -> None:
    match, scope = _route(b"/public/%2e%2e/admin")
    assert match.payload.name == "admin"
    assert scope["path"] == "/admin"
    assert scope["raw_path"] == b"/admin"


def test_encoded_slashes_are_refused_by_default() -> None:
    match, _ = _route(b"/files/a%2Fb")
    assert match == Refusal("encoded slash or backslash in the path")


def test_encoded_slashes_kept_when_the_route_says_so() -> None:
    match, scope = _route(b"/files/a%2fb", encoded_slashes="keep")
    assert match.payload.name == "files"
    assert scope["raw_path"] == b"/files/a%2Fb"
    assert scope["path"] == "/files/a/b"


def test_decoded_slashes_are_normalized_and_routed_again() -> None:
    match, scope = _route(b"/files/..%2Fadmin", encoded_slashes="decode")
    assert match.payload.name == "admin"
    assert scope["raw_path"] == b"/admin"


def test_decoded_backslashes_are_slashes() -> None:
    match, scope = _route(b"/files/a\\b%5Cc", encoded_slashes="decode")
    assert match.payload.name == "files"
    assert scope["raw_path"] == b"/files/a/b/c"


def test_decoding_can_reveal_a_dot_segment_with_parameters() -> None:
    match, _ = _route(b"/files/x%2F..;/admin", encoded_slashes="decode")
    assert match == Refusal("dot-segment with parameters in the path")


def test_a_refused_host_is_not_routed() -> None:
    scope = _scope([(b"host", b"a"), (b"host", b"b")], b"/public")
    assert route_request(_router(), "GET", scope) == Refusal("more than one Host header")


@pytest.mark.parametrize("value", [b" admin", b"admin ", b"\tadmin", b"admin\t"])
def test_http2_field_value_with_surrounding_whitespace_is_refused(value: bytes) -> None:
    scope = {
        "type": "http",
        "http_version": "2",
        "path": "/",
        "raw_path": b"/",
        "headers": [(b"host", b"gw.example"), (b"x-role", value)],
    }
    assert isinstance(route_request(_router(), "GET", scope), Refusal)
    scope["http_version"] = "1.1"
    assert not isinstance(route_request(_router(), "GET", scope), Refusal)
