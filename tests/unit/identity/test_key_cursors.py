"""The list cursor and sort helpers of the key repository (pure functions)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from portcullis.identity.key_repository import (
    SORT_FIELDS,
    InvalidCursor,
    KeyInvalid,
    decode_cursor,
    encode_cursor,
    parse_sort_field,
    require_future,
)

WHEN = datetime(2030, 5, 1, 12, 0, 0, 5, tzinfo=UTC)


def test_sort_field_defaults_to_newest_first_and_names_allowed_fields() -> None:
    assert parse_sort_field(None) == ("created_at", True)
    assert parse_sort_field("name") == ("name", False)
    assert parse_sort_field("-last_used_at") == ("last_used_at", True)
    with pytest.raises(KeyInvalid) as caught:
        parse_sort_field("key_hash")
    assert caught.value.field == "sort"
    assert all(f in caught.value.message for f in SORT_FIELDS)


@pytest.mark.parametrize(
    ("field", "value"),
    [("created_at", WHEN), ("expires_at", None), ("name", "k-1"), ("consumer", None)],
)
def test_cursors_round_trip(field: str, value: object) -> None:
    for descending in (False, True):
        cursor = encode_cursor(field, descending, value, "AbC123")
        assert "=" not in cursor
        assert decode_cursor(cursor, field, descending) == (value, "AbC123")


def _raw(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_foreign_or_mismatched_cursors_are_refused() -> None:
    cursor = encode_cursor("name", False, "x", "id")
    with pytest.raises(InvalidCursor, match="another sort"):
        decode_cursor(cursor, "name", True)
    with pytest.raises(InvalidCursor, match="another sort"):
        decode_cursor(cursor, "created_at", False)
    for bad, field in (
        ("%%%", "name"),
        (_raw([1, 2]), "name"),
        (_raw({"s": "name", "v": "x"}), "name"),
        (_raw({"s": "name", "v": 5, "id": "i"}), "name"),
        (_raw({"s": "created_at", "v": "yesterday", "id": "i"}), "created_at"),
        (_raw({"s": "created_at", "v": "2030-01-01T00:00:00", "id": "i"}), "created_at"),
    ):
        with pytest.raises(InvalidCursor, match="not one this API issued"):
            decode_cursor(bad, field, False)


def test_require_future() -> None:
    require_future(None, WHEN)
    require_future(WHEN.replace(year=2031), WHEN)
    with pytest.raises(KeyInvalid, match="expires_at: must be in the future"):
        require_future(WHEN, WHEN)
