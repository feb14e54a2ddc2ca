"""PurgeScope: matching keys, Redis SCAN patterns, event subjects (and their widening)."""

from __future__ import annotations

import fnmatch

import pytest

from portcullis.cache import PurgeScope, cache_key, key_path
from portcullis.cache.purge import SUBJECT_MAX


def test_path_and_prefix_are_exclusive() -> None:
    with pytest.raises(ValueError):
        PurgeScope.of(path="/a", path_prefix="/a")


def test_paths_are_compared_in_key_form() -> None:
    key = cache_key("r", key_path("/caf\u00e9 menu|x"), "d" * 32)
    assert key.count("|") == 2  # "|" in a path is encoded, so it never splits a key
    assert PurgeScope.of(path="/caf\u00e9 menu|x").matches(key)
    assert PurgeScope.of(path_prefix="/caf\u00e9").matches(key)
    assert not PurgeScope.of(path="/caf\u00e9").matches(key)
    assert not PurgeScope.of(route="other").matches(key)
    # Variant keys share their main key's prefix.
    assert PurgeScope.of(route="r", path="/caf\u00e9 menu|x").matches(key + "#abc")


@pytest.mark.parametrize(
    "scope",
    [
        PurgeScope.of(),
        PurgeScope.of(route="orders"),
        PurgeScope.of(path="/orders/1"),
        PurgeScope.of(route="orders", path="/orders/1"),
        PurgeScope.of(path_prefix="/orders/1"),
        PurgeScope.of(route="orders", path_prefix="/orders/"),
        PurgeScope.of(path="/a*b?[c]"),
    ],
)
def test_subjects_round_trip_and_patterns_agree_with_matches(scope: PurgeScope) -> None:
    assert PurgeScope.from_subject(scope.subject()) == scope
    keys = [
        cache_key(route, key_path(path), "0" * 32)
        for route in ("orders", "users")
        for path in ("/orders/1", "/orders/10", "/orders/2", "/a*b?[c]", "/a")
    ]
    pattern = scope.redis_pattern("pc:cache:")
    # fnmatch speaks a close enough dialect for these patterns once the escapes are
    # translated ("\\x" → "[x]"), and "[^|]" → "[!|]").
    translated = pattern.replace("[^|]", "[!|]")
    for special in "*?[]":
        translated = translated.replace("\\" + special, f"[{special}]")
    for key in keys:
        assert fnmatch.fnmatchcase("pc:cache:" + key, translated) == scope.matches(key), key


def test_long_scopes_widen_but_never_narrow() -> None:
    long_path = "/" + "p" * 200
    scope = PurgeScope.of(route="orders", path=long_path)
    assert len(scope.subject()) <= SUBJECT_MAX
    assert PurgeScope.from_subject(scope.subject()) == PurgeScope(route="orders")
    long_route = "r" * 128
    assert PurgeScope.from_subject(PurgeScope.of(route=long_route).subject()).everything
    assert PurgeScope.from_subject("garbage").everything
