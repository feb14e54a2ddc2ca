"""Cache-Control parsing, freshness lifetimes (RFC 9111) and the stored entry format."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from portcullis.cache import CacheEntry
from portcullis.cache.policy import INVALID, CacheControl, freshness_lifetime, http_date


def test_parse_directives_across_lines_quoted_values_and_case() -> None:
    cc = CacheControl.parse(
        [b'Max-Age=60, no-cache="set-cookie, x-foo"', b"PUBLIC ,s-maxage = 30", b"max-age=5"]
    )
    assert cc.directives == {
        "max-age": "60",
        "no-cache": "set-cookie, x-foo",
        "public": None,
        "s-maxage": "30",
    }
    assert cc.seconds("max-age") == 60  # the first of two values wins
    assert cc.seconds("min-fresh") is None
    assert "public" in cc
    assert "private" not in cc


def test_malformed_pieces_are_skipped_and_bad_numbers_are_invalid() -> None:
    cc = CacheControl.parse([b"max-age=ten, @@@ , no-store"])
    assert cc.seconds("max-age") == INVALID
    assert "no-store" in cc
    assert CacheControl.parse([b"max-age"]).seconds("max-age") == INVALID


@pytest.mark.parametrize(
    ("cc", "expires", "date", "lifetime"),
    [
        ([b"max-age=60, s-maxage=10"], None, None, 10.0),
        ([b"max-age=60"], None, None, 60.0),
        ([b"max-age=-1"], None, None, 0.0),
        ([], formatdate(1_000_100, usegmt=True).encode(), None, 100.0),
        (
            [],
            formatdate(1_000_100, usegmt=True).encode(),
            formatdate(1_000_050, usegmt=True).encode(),
            50.0,
        ),
        ([], b"0", None, 0.0),
        ([b"max-age=7"], b"0", None, 7.0),
        ([b"public"], None, None, None),
    ],
)
def test_freshness_lifetime(
    cc: list[bytes], expires: bytes | None, date: bytes | None, lifetime: float | None
) -> None:
    assert freshness_lifetime(CacheControl.parse(cc), expires, date, 1_000_000.0) == lifetime


def test_http_date() -> None:
    assert http_date(b"Sun, 06 Nov 1994 08:49:37 GMT") == 784111777.0
    assert http_date(b"yesterday") is None
    assert http_date(None) is None


def test_entries_round_trip_through_their_encoding() -> None:
    entry = CacheEntry(
        404,
        ((b"content-type", b"text/plain; charset=\xe9"), (b"x-a", b"1")),
        b"\x00\xffbody",
        1000.5,
        1060.5,
        age=3,
        vary=("accept-language",),
    )
    assert CacheEntry.decode(entry.encode()) == entry
    marker = CacheEntry.marker(("a", "b"), 1.0, 2.0)
    assert CacheEntry.decode(marker.encode()) == marker
    assert marker.variants
    assert marker.vary == ("a", "b")
    for junk in (b"", b"PC1", b"nonsense", entry.encode()[:10]):
        with pytest.raises(ValueError):
            CacheEntry.decode(junk)


def test_current_age_adds_time_in_cache_to_the_upstream_age() -> None:
    entry = CacheEntry(200, (), b"", 1000.0, 2000.0, age=5)
    assert entry.current_age(1000.0) == 5
    assert entry.current_age(1012.7) == 17
    assert entry.current_age(990.0) == 5  # a clock behind the writer's never goes negative
