"""Tests for the compiled router: each matcher, the ordering rules, and equivalence with a
naive linear-scan reference implementation over random route tables (hypothesis)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portcullis.model import Route
from portcullis.runtime import router as router_module
from portcullis.runtime.router import EMPTY_PARAMS, RouteMatch, Router, RouteSpec

Headers = Sequence[tuple[bytes, bytes]]


def route(name: str = "r", **kw: Any) -> Route:
    return Route(name=name, service="svc", **kw)


def build(*routes: Route) -> Router[str]:
    return Router([RouteSpec(route=r, payload=r.name) for r in routes])


def find(
    router: Router[str],
    path: str = "/",
    host: str = "",
    method: str = "GET",
    headers: Headers = (),
) -> RouteMatch[str] | None:
    return router.match(method, host, path, headers)


def name_of(
    router: Router[str],
    path: str = "/",
    host: str = "",
    method: str = "GET",
    headers: Headers = (),
) -> str | None:
    m = find(router, path, host, method, headers)
    return None if m is None else m.payload


class ExplodingHeaders(Sequence[tuple[bytes, bytes]]):
    """A header list that fails the test if the router looks at it."""

    def __getitem__(self, i: Any) -> Any:
        raise AssertionError("router read headers for a route without header matchers")

    def __len__(self) -> int:
        raise AssertionError("router read headers for a route without header matchers")

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        raise AssertionError("router read headers for a route without header matchers")


# --- basics ---------------------------------------------------------------------------------


def test_empty_router_matches_nothing() -> None:
    r = build()
    assert len(r) == 0
    assert find(r, "/") is None


def test_default_path_matches_everything() -> None:
    r = build(route("all"))
    for path in ("/", "/a", "/a/b/c", "//x"):
        m = find(r, path)
        assert m is not None
        assert m.payload == "all"
        assert m.route.name == "all"
        assert m.matched_length == 1


def test_no_match_returns_none() -> None:
    r = build(route("a", paths=["/a"]), route("b", paths=["=/b"]), route("c", paths=["~^/c$"]))
    assert find(r, "/x") is None
    assert find(r, "/b/") is None
    assert find(r, "/cc") is None


def test_payload_is_the_spec_payload() -> None:
    payload = object()
    r: Router[object] = Router([RouteSpec(route=route("p"), payload=payload)])
    m = r.match("GET", "", "/", [])
    assert m is not None
    assert m.payload is payload


# --- prefix paths and segment boundaries -------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "path", "matches"),
    [
        ("/api", "/api", True),
        ("/api", "/api/", True),
        ("/api", "/api/x", True),
        ("/api", "/api/x/y", True),
        ("/api", "/apix", False),
        ("/api", "/ap", False),
        ("/api", "/", False),
        ("/api", "/API", False),
        ("/api/v1", "/api/v1/users", True),
        ("/api/v1", "/api/v10", False),
        ("/api/v1", "/api", False),
        ("/api/", "/api/", True),
        ("/api/", "/api/x", True),
        ("/api/", "/api", False),
        ("/api/", "/apix", False),
        ("/", "/anything/at/all", True),
        ("/a//b", "/a//b/c", True),
        ("/a//b", "/a/b", False),
    ],
)
def test_prefix_is_segment_aware(prefix: str, path: str, matches: bool) -> None:
    r = build(route("p", paths=[prefix]))
    assert (name_of(r, path) == "p") is matches


def test_deep_prefix_is_found_beyond_shallow_ones() -> None:
    r = build(
        route("shallow", paths=["/a"]),
        route("deep", paths=["/a/b/c/d/e"]),
        route("mid", paths=["/a/b/"]),
    )
    assert name_of(r, "/a/b/c/d/e/f") == "deep"
    assert name_of(r, "/a/b/c/d/ef") == "mid"
    assert name_of(r, "/a/b") == "shallow"
    assert name_of(r, "/a/x") == "shallow"


# --- exact paths ------------------------------------------------------------------------------


def test_exact_path_matches_only_itself() -> None:
    r = build(route("e", paths=["=/health"]))
    assert name_of(r, "/health") == "e"
    assert name_of(r, "/health/") is None
    assert name_of(r, "/health/x") is None
    assert name_of(r, "/Health") is None


# --- regex paths ------------------------------------------------------------------------------


def test_regex_named_groups_become_params() -> None:
    r = build(route("u", paths=[r"~^/users/(?P<id>\d+)/posts/(?P<post>[a-z]+)$"]))
    m = find(r, "/users/42/posts/abc")
    assert m is not None
    assert m.payload == "u"
    assert dict(m.path_params) == {"id": "42", "post": "abc"}
    assert m.matched_length == len("/users/42/posts/abc")
    assert find(r, "/users/x/posts/abc") is None


def test_regex_is_anchored_at_the_start_only() -> None:
    r = build(route("v", paths=[r"~/v(?P<n>\d)"]))
    m = find(r, "/v2/rest")
    assert m is not None
    assert m.matched_length == 3
    assert dict(m.path_params) == {"n": "2"}
    assert find(r, "/x/v2") is None


def test_regex_group_that_did_not_participate_is_omitted() -> None:
    r = build(route("o", paths=[r"~^/a(?:/(?P<x>\d+))?(?:/(?P<y>[a-z]+))?$"]))
    m = find(r, "/a/zz")
    assert m is not None
    assert dict(m.path_params) == {"y": "zz"}


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        # Literal-looking starts that are not literal must not restrict the candidates.
        (r"^/items?/(?P<id>\d+)", "/item/5", True),
        (r"^/items?/(?P<id>\d+)", "/items/5", True),
        (r"^/ab*/x", "/a/x", True),
        (r"^/ab{0,2}/x", "/a/x", True),
        (r"/a/x|/b/y", "/b/y", True),
        (r"^/v\d/(?P<rest>.*)", "/v2/z", True),
        (r"(?i)^/API/x", "/api/x", True),
        (r"/svc\/x", "/svc/x", True),
        (r"^/svc/(?P<id>\d+)$", "/svc/12", True),
        (r"^/svc/(?P<id>\d+)$", "/svcx/12", False),
        (r"^/svc/(?P<id>\d+)$", "/svc", False),
    ],
)
def test_regex_literal_prefix_indexing_is_conservative(
    pattern: str, path: str, matches: bool
) -> None:
    r = build(route("rx", paths=["~" + pattern]), route("other", paths=[r"~^/zz/(?P<q>.)"]))
    assert (name_of(r, path) == "rx") is matches


def test_keyed_and_unkeyed_regexes_compete_by_rank() -> None:
    r = build(
        route("general", paths=[r"~/(?P<a>[a-z]+)/(?P<b>\d+)/long"], priority=1),
        route("keyed", paths=[r"~^/users/(?P<id>\d+)"]),
        route("general-low", paths=[r"~/.*"]),
    )
    assert name_of(r, "/users/1/long") == "general"
    assert name_of(r, "/users/1") == "keyed"
    assert name_of(r, "/other") == "general-low"


def test_regex_without_named_groups_shares_the_empty_mapping() -> None:
    r = build(route("g", paths=[r"~^/g/\d+"]))
    m = find(r, "/g/1")
    assert m is not None
    assert m.path_params is EMPTY_PARAMS
    assert dict(m.path_params) == {}


def test_non_regex_matches_share_the_empty_mapping() -> None:
    r = build(route("p", paths=["/p"]), route("e", paths=["=/e"]))
    for path in ("/p/x", "/e"):
        m = find(r, path)
        assert m is not None
        assert m.path_params is EMPTY_PARAMS


# --- strip lengths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path_rule", "path", "length"),
    [
        ("/", "/x/y", 1),
        ("/api", "/api", 4),
        ("/api", "/api/", 4),
        ("/api", "/api/users", 4),
        ("/api/", "/api/users", 5),
        ("/api/v1", "/api/v1/users/7", 7),
        ("=/exact", "/exact", 6),
        (r"~^/u/\d+", "/u/123/rest", 6),
        (r"~^/u/(?P<id>\d+)$", "/u/123", 6),
    ],
)
def test_matched_length_for_each_path_kind(path_rule: str, path: str, length: int) -> None:
    r = build(route("s", paths=[path_rule]))
    m = find(r, path)
    assert m is not None
    assert m.matched_length == length


def test_route_with_several_paths_uses_the_most_specific_one() -> None:
    r = build(route("multi", paths=["/api", "/api/v1", r"~^/api/v1/(?P<id>\d+)"]))
    m = find(r, "/api/v1/7")
    assert m is not None
    assert m.matched_length == len("/api/v1")
    assert m.path_params is EMPTY_PARAMS
    m = find(r, "/api/v2")
    assert m is not None
    assert m.matched_length == len("/api")


# --- hosts ------------------------------------------------------------------------------------


def test_exact_host_case_insensitive_and_any_port() -> None:
    r = build(route("h", hosts=["api.example.com"]))
    assert name_of(r, host="api.example.com") == "h"
    assert name_of(r, host="API.Example.COM") == "h"
    assert name_of(r, host="api.example.com:8443") == "h"
    assert name_of(r, host="api.example.com.") == "h"
    assert name_of(r, host="api.example.com.:80") == "h"
    assert name_of(r, host="www.example.com") is None
    assert name_of(r, host="xapi.example.com") is None
    assert name_of(r, host="") is None


def test_host_pattern_with_port_needs_that_port() -> None:
    r = build(route("p", hosts=["api.example.com:8080"]))
    assert name_of(r, host="api.example.com:8080") == "p"
    assert name_of(r, host="api.example.com:8081") is None
    assert name_of(r, host="api.example.com") is None


def test_wildcard_suffix_host() -> None:
    r = build(route("w", hosts=["*.example.com"]))
    assert name_of(r, host="a.example.com") == "w"
    assert name_of(r, host="a.b.example.com") == "w"
    assert name_of(r, host="A.EXAMPLE.COM:9000") == "w"
    assert name_of(r, host="example.com") is None
    assert name_of(r, host=".example.com") is None
    assert name_of(r, host="a.example.org") is None
    assert name_of(r, host="aexample.com") is None


def test_wildcard_suffix_host_with_port() -> None:
    r = build(route("w", hosts=["*.example.com:8080"]))
    assert name_of(r, host="a.example.com:8080") == "w"
    assert name_of(r, host="a.example.com:80") is None
    assert name_of(r, host="a.example.com") is None


def test_wildcard_prefix_host() -> None:
    r = build(route("w", hosts=["api.*"]))
    assert name_of(r, host="api.example.com") == "w"
    assert name_of(r, host="api.io:443") == "w"
    assert name_of(r, host="API.dev") == "w"
    assert name_of(r, host="api") is None
    assert name_of(r, host="api.") is None
    assert name_of(r, host="apix.example.com") is None
    assert name_of(r, host="www.api.example.com") is None


def test_ipv6_and_empty_hosts_only_match_hostless_routes() -> None:
    r = build(route("hosted", hosts=["api.example.com"]), route("any", paths=["/"]))
    assert name_of(r, host="[::1]:8000") == "any"
    assert name_of(r, host="[2001:db8::1]") == "any"
    assert name_of(r, host="") == "any"
    only_hosted = build(route("hosted", hosts=["*.example.com"]))
    assert name_of(only_hosted, host="[::1]:8000") is None
    assert name_of(only_hosted, host="") is None


def test_ipv4_host() -> None:
    r = build(route("ip", hosts=["127.0.0.1"]), route("ipport", hosts=["127.0.0.1:9000"]))
    assert name_of(r, host="127.0.0.1:8000") == "ip"
    assert name_of(r, host="127.0.0.1:9000") == "ipport"


def test_route_with_several_hosts_matches_any_of_them() -> None:
    r = build(route("m", hosts=["a.example.com", "*.example.org", "b.*"]))
    assert name_of(r, host="a.example.com") == "m"
    assert name_of(r, host="x.example.org") == "m"
    assert name_of(r, host="b.anything") == "m"
    assert name_of(r, host="c.example.com") is None


def test_host_cache_gives_the_same_answers_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = (
        route("exact", hosts=["api.example.com"]),
        route("wild", hosts=["*.example.com:8080"]),
        route("any", paths=["=/x"]),
    )
    cases = [
        ("api.example.com", "exact"),
        ("API.example.com:8080", "exact"),
        ("b.example.com:8080", "wild"),
        ("b.example.com", None),
        ("other.org", None),
    ]
    cached = build(*routes)
    for host, expected in cases * 2:  # second pass is answered from the cache
        assert name_of(cached, "/", host=host) == expected
    monkeypatch.setattr(router_module, "HOST_CACHE_SIZE", 2)
    bounded = build(*routes)
    for host, expected in cases * 2:
        assert name_of(bounded, "/", host=host) == expected
    assert len(bounded._host_cache) == 2


# --- methods ----------------------------------------------------------------------------------


def test_methods() -> None:
    r = build(route("rw", methods=["get", "POST"]))
    assert name_of(r, method="GET") == "rw"
    assert name_of(r, method="POST") == "rw"
    assert name_of(r, method="DELETE") is None
    assert name_of(r, method="HEAD") is None


def test_method_mismatch_falls_through_to_next_candidate() -> None:
    r = build(
        route("post", paths=["=/items"], methods=["POST"]),
        route("get", paths=["/items"], methods=["GET"]),
        route("fallback", paths=["/"]),
    )
    assert name_of(r, "/items", method="POST") == "post"
    assert name_of(r, "/items", method="GET") == "get"
    assert name_of(r, "/items", method="PUT") == "fallback"


# --- headers ----------------------------------------------------------------------------------


def test_header_matcher_present_absent_wrong_value() -> None:
    r = build(route("v2", headers={"X-Version": ["2", "two"]}))
    assert name_of(r, headers=[(b"x-version", b"2")]) == "v2"
    assert name_of(r, headers=[(b"accept", b"*/*"), (b"x-version", b"two")]) == "v2"
    assert name_of(r, headers=[(b"x-version", b"3")]) is None
    assert name_of(r, headers=[(b"x-version", b"TWO")]) is None
    assert name_of(r, headers=[]) is None
    assert name_of(r, headers=[(b"x-versionx", b"2")]) is None


def test_repeated_header_field_any_occurrence_counts() -> None:
    r = build(route("t", headers={"x-tenant": ["acme"]}))
    assert name_of(r, headers=[(b"x-tenant", b"other"), (b"x-tenant", b"acme")]) == "t"


def test_all_header_matchers_are_required() -> None:
    r = build(route("both", headers={"x-a": ["1"], "x-b": ["2"]}))
    assert name_of(r, headers=[(b"x-a", b"1"), (b"x-b", b"2")]) == "both"
    assert name_of(r, headers=[(b"x-a", b"1")]) is None
    assert name_of(r, headers=[(b"x-b", b"2")]) is None


def test_header_mismatch_falls_through() -> None:
    r = build(
        route("canary", paths=["/api"], headers={"x-canary": ["1"]}, priority=5),
        route("stable", paths=["/api"]),
    )
    assert name_of(r, "/api", headers=[(b"x-canary", b"1")]) == "canary"
    assert name_of(r, "/api", headers=[(b"x-canary", b"0")]) == "stable"


def test_headers_untouched_when_no_candidate_has_header_matchers() -> None:
    r = build(
        route("a", paths=["/a"]),
        route("e", paths=["=/e"], hosts=["x.example.com"]),
        route("re", paths=[r"~^/r/(?P<n>\d+)"], methods=["GET"]),
    )
    boom = ExplodingHeaders()
    assert name_of(r, "/a/1", headers=boom) == "a"
    assert name_of(r, "/e", host="x.example.com", headers=boom) == "e"
    assert name_of(r, "/r/1", headers=boom) == "re"
    assert name_of(r, "/nothing", headers=boom) is None


# --- combinations -----------------------------------------------------------------------------


def test_all_conditions_must_match() -> None:
    r = build(
        route(
            "full",
            hosts=["api.example.com"],
            paths=["/orders"],
            methods=["POST"],
            headers={"x-tenant": ["acme"]},
        )
    )
    good: dict[str, Any] = {
        "path": "/orders/1",
        "host": "api.example.com",
        "method": "POST",
        "headers": [(b"x-tenant", b"acme")],
    }
    assert name_of(r, **good) == "full"
    for key, bad in (
        ("path", "/order"),
        ("host", "www.example.com"),
        ("method", "GET"),
        ("headers", [(b"x-tenant", b"other")]),
    ):
        assert name_of(r, **{**good, key: bad}) is None


# --- ordering ---------------------------------------------------------------------------------


def test_priority_beats_specificity() -> None:
    r = build(
        route("specific", hosts=["api.example.com"], paths=["=/a"]),
        route("broad", paths=["/"], priority=1),
    )
    assert name_of(r, "/a", host="api.example.com") == "broad"


def test_negative_priority_loses() -> None:
    r = build(route("low", paths=["=/a"], priority=-1), route("catch", paths=["/"]))
    assert name_of(r, "/a") == "catch"


def test_host_specificity_exact_over_wildcard_over_none() -> None:
    r = build(
        route("none", paths=["=/x"]),
        route("prefix-wild", hosts=["api.*"], paths=["/"]),
        route("suffix-wild", hosts=["*.example.com"], paths=["/"]),
        route("exact", hosts=["api.example.com"], paths=["/"]),
    )
    assert name_of(r, "/x", host="api.example.com") == "exact"
    assert name_of(r, "/x", host="www.example.com") == "suffix-wild"
    assert name_of(r, "/x", host="api.example.org") == "prefix-wild"
    assert name_of(r, "/x", host="other.org") == "none"


def test_host_specificity_beats_path_specificity() -> None:
    r = build(
        route("exact-path", paths=["=/a/b"]),
        route("hosted", hosts=["*.example.com"], paths=["/"]),
    )
    assert name_of(r, "/a/b", host="x.example.com") == "hosted"


def test_longer_host_pattern_wins_within_a_kind() -> None:
    r = build(
        route("short", hosts=["*.example.com"]),
        route("long", hosts=["*.api.example.com"]),
        route("plain", hosts=["a.example.net"]),
        route("ported", hosts=["a.example.net:8080"]),
    )
    assert name_of(r, host="x.api.example.com") == "long"
    assert name_of(r, host="x.web.example.com") == "short"
    assert name_of(r, host="a.example.net:8080") == "ported"
    assert name_of(r, host="a.example.net:80") == "plain"


def test_path_specificity_exact_over_longer_prefix_over_prefix_over_regex() -> None:
    r = build(
        route("regex", paths=[r"~^/a/b/c$"]),
        route("short", paths=["/a"]),
        route("long", paths=["/a/b"]),
        route("exact", paths=["=/a/b/c"]),
    )
    assert name_of(r, "/a/b/c") == "exact"
    assert name_of(r, "/a/b/d") == "long"
    assert name_of(r, "/a/c") == "short"


def test_longer_regex_wins() -> None:
    r = build(route("short", paths=[r"~^/a"]), route("long", paths=[r"~^/a/\d+"]))
    assert name_of(r, "/a/1") == "long"
    assert name_of(r, "/a/x") == "short"


def test_declaration_order_breaks_ties() -> None:
    r = build(route("first", paths=["/a"]), route("second", paths=["/a"]))
    assert name_of(r, "/a") == "first"
    r = build(route("first", paths=[r"~^/(?P<x>a)"]), route("second", paths=[r"~^/(?P<y>b)"]))
    assert name_of(r, "/a") == "first"
    assert name_of(r, "/b") == "second"


def test_regex_in_a_host_bucket_competes_with_hostless_prefixes() -> None:
    r = build(
        route("hostless", paths=["/items"]),
        route("hosted-regex", hosts=["api.example.com"], paths=[r"~^/items/(?P<id>\d+)$"]),
    )
    m = find(r, "/items/9", host="api.example.com")
    assert m is not None
    assert m.payload == "hosted-regex"
    assert dict(m.path_params) == {"id": "9"}
    assert name_of(r, "/items/x", host="api.example.com") == "hostless"


def test_odd_paths_do_not_break_matching() -> None:
    r = build(route("root", paths=["/"]), route("star", paths=["~^\\*$"]))
    assert name_of(r, "*", method="OPTIONS") == "star"
    assert name_of(r, "") is None
    assert name_of(r, "//") == "root"


# --- equivalence with a naive reference (the key correctness proof) ---------------------------


def _reference_split_host(host: str) -> tuple[str | None, str]:
    """(hostname without trailing dot, port) or (None, "") for empty / IPv6 hosts."""
    m = re.fullmatch(r"([^:\[\]]+?)\.?(?::(\d*))?", host.lower())
    if m is None:
        return None, ""
    return m.group(1), m.group(2) or ""


def _reference_host_score(pattern: str, name: str, port: str) -> tuple[int, int] | None:
    pname, _, pport = pattern.partition(":")
    if pport and pport != port:
        return None
    if pname.startswith("*."):
        ok = name.endswith(pname[1:]) and len(name) > len(pname) - 1
        return (1, len(pattern)) if ok else None
    if pname.endswith(".*"):
        ok = name.startswith(pname[:-1]) and len(name) > len(pname) - 1
        return (1, len(pattern)) if ok else None
    return (2, len(pattern)) if name == pname else None


def _reference_path(raw: str, path: str) -> tuple[int, int, int, dict[str, str]] | None:
    """(kind score, pattern length, matched length, params) or None."""
    if raw.startswith("~"):
        m = re.match(raw[1:], path)
        if m is None:
            return None
        params = {k: v for k, v in m.groupdict().items() if v is not None}
        return 0, len(raw) - 1, m.end(), params
    if raw.startswith("="):
        return (2, len(raw) - 1, len(raw) - 1, {}) if path == raw[1:] else None
    # A prefix ending in "/" needs no boundary check; any other must end at a segment boundary.
    ok = path.startswith(raw) if raw.endswith("/") else path == raw or path.startswith(raw + "/")
    return (1, len(raw), len(raw), {}) if ok else None


def reference_match(
    routes: Sequence[Route], method: str, host: str, path: str, headers: Headers
) -> tuple[int, dict[str, str], int] | None:
    """Linear scan applying the documented rules literally: (route index, params, length)."""
    name, port = _reference_split_host(host)
    best_key: tuple[Any, ...] | None = None
    best: tuple[int, dict[str, str], int] | None = None
    for index, r in enumerate(routes):
        if r.methods and method not in r.methods:
            continue
        if not all(
            any(n == hname.encode() and v.decode() in values for n, v in headers)
            for hname, values in r.headers.items()
        ):
            continue
        if r.hosts:
            if name is None:
                continue
            scores = [s for h in r.hosts if (s := _reference_host_score(h, name, port))]
            if not scores:
                continue
            host_score = max(scores)
        else:
            host_score = (0, 0)
        paths = [
            (res, -j)
            for j, p in enumerate(r.paths)
            if (res := _reference_path(p, path)) is not None
        ]
        if not paths:
            continue
        (kind, plen, length, params), neg_j = max(paths, key=lambda t: (t[0][0], t[0][1], t[1]))
        key = (r.priority, host_score, kind, plen, -index, neg_j)
        if best_key is None or key > best_key:
            best_key, best = key, (index, params, length)
    return best


LABELS = ["a", "b", "ab"]
SEGMENTS = ["a", "b", "ab", "x1"]
REGEXES = [
    r"^/a/(?P<id>[0-9a-z]+)",
    r"/(?P<first>[ab]+)(?:/(?P<second>[ab]+))?",
    r"/a",
    r"/.*",
    r"^/(?P<x>b)$",
    r"/ab?/",
    r"/(?P<seg>[^/]+)/x1$",
    r"/ab/(?P<rest>.*)$",
    r"^/b/x1",
    r"/b/?",
]
HEADER_NAMES = ["x-v", "x-t"]
HEADER_VALUES = ["1", "2", "A", "a"]
PORTS = ["8080", "9000"]

domain = st.lists(st.sampled_from(LABELS), min_size=1, max_size=3).map(".".join)
port_suffix = st.one_of(st.just(""), st.sampled_from(PORTS).map(lambda p: ":" + p))
host_pattern = st.one_of(
    st.tuples(domain, port_suffix).map("".join),
    st.tuples(domain, port_suffix).map(lambda t: "*." + t[0] + t[1]),
    st.lists(st.sampled_from(LABELS), min_size=1, max_size=2).map(lambda ls: ".".join(ls) + ".*"),
)
segments = st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=3)
prefix = st.tuples(segments, st.booleans()).map(
    lambda t: ("/" + "/".join(t[0]) + ("/" if t[1] and t[0] else "")) or "/"
)
path_rule = st.one_of(
    prefix,
    prefix.map(lambda p: "=" + p),
    st.sampled_from(REGEXES).map(lambda rx: "~" + rx),
)
# Conditions are often left unset so that a good share of requests find a route.
route_strategy: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict,
    hosts=st.one_of(st.just([]), st.just([]), st.lists(host_pattern, min_size=1, max_size=2)),
    paths=st.lists(path_rule, min_size=1, max_size=3),
    methods=st.one_of(
        st.just([]),
        st.just([]),
        st.lists(st.sampled_from(["GET", "POST", "DELETE"]), min_size=1, max_size=2, unique=True),
    ),
    headers=st.one_of(
        st.just({}),
        st.just({}),
        st.just({}),
        st.dictionaries(
            st.sampled_from(HEADER_NAMES),
            st.lists(st.sampled_from(HEADER_VALUES), min_size=1, max_size=2),
            min_size=1,
            max_size=2,
        ),
    ),
    priority=st.sampled_from([0, 0, 0, 1, -1]),
)
request_host = st.one_of(
    st.tuples(
        st.lists(st.sampled_from([*LABELS, "A", "AB"]), min_size=1, max_size=4).map(".".join),
        st.sampled_from(["", "."]),
        st.one_of(st.just(""), st.sampled_from([*PORTS, "80"]).map(lambda p: ":" + p)),
    ).map("".join),
    st.sampled_from(["", "[::1]", "[::1]:8080", "[2001:db8::a]:9000"]),
)
request_path = st.tuples(
    st.lists(st.sampled_from([*SEGMENTS, *SEGMENTS, "", "7", "abc"]), min_size=0, max_size=4),
    st.booleans(),
).map(lambda t: "/" + "/".join(t[0]) + ("/" if t[1] else ""))
request_headers = st.lists(
    st.tuples(
        st.sampled_from([n.encode() for n in HEADER_NAMES] + [b"accept"]),
        st.sampled_from([v.encode() for v in HEADER_VALUES]),
    ),
    max_size=4,
)


@st.composite
def host_like(draw: st.DrawFn, pattern: str) -> str:
    """A Host header built to hit (or nearly hit) one route host pattern."""
    name, _, port = pattern.partition(":")
    label = st.sampled_from([*LABELS, "A"])
    if name.startswith("*."):
        name = ".".join(draw(st.lists(label, max_size=2))) + name[1:]
    elif name.endswith(".*"):
        name = name[:-1] + ".".join(draw(st.lists(label, max_size=2)))
    port = draw(st.sampled_from([port, port, "", *PORTS]))
    name = draw(st.sampled_from([name, name.upper(), name + "."]))
    return name + (":" + port if port else "")


@st.composite
def requests_for(draw: st.DrawFn, routes: Sequence[Route]) -> tuple[str, str, str, Headers]:
    """A request drawn at random, with its host often aimed at one of the routes' hosts."""
    method, host, path, headers = draw(
        st.tuples(
            st.sampled_from(["GET", "GET", "POST", "PUT"]),
            request_host,
            request_path,
            request_headers,
        )
    )
    patterns = [h for r in routes for h in r.hosts]
    aim_at_a_route: bool = draw(st.booleans())
    if patterns and aim_at_a_route:
        host = draw(host_like(draw(st.sampled_from(patterns))))
    return method, host, path, headers


@settings(max_examples=400, deadline=None)
@given(tables=st.lists(route_strategy, max_size=12), data=st.data())
def test_router_agrees_with_reference(tables: list[dict[str, Any]], data: st.DataObject) -> None:
    routes = [route(f"r{i}", **spec) for i, spec in enumerate(tables)]
    router: Router[int] = Router([RouteSpec(route=r, payload=i) for i, r in enumerate(routes)])
    requests = data.draw(st.lists(requests_for(routes), min_size=1, max_size=25))
    for method, host, path, headers in requests:
        expected = reference_match(routes, method, host, path, headers)
        got = router.match(method, host, path, headers)
        actual = None if got is None else (got.payload, dict(got.path_params), got.matched_length)
        assert actual == expected, (method, host, path, headers)
        if got is not None:
            assert got.route is routes[got.payload]


def test_reference_sanity() -> None:
    """The reference itself agrees with hand-checked answers (guards the property test)."""
    routes = [
        route("a", paths=["/a"]),
        route("b", hosts=["*.x.com"], paths=[r"~^/a/(?P<id>\d+)"]),
        route("c", paths=["=/a/1"], priority=-1),
    ]
    assert reference_match(routes, "GET", "", "/a/1", []) == (0, {}, 2)
    assert reference_match(routes, "GET", "q.x.com:1", "/a/1", []) == (1, {"id": "1"}, 4)
    assert reference_match(routes, "GET", "", "/ab", []) is None
    params: Mapping[str, str] = {}
    assert reference_match(routes[2:], "GET", "", "/a/1", []) == (0, params, 4)
