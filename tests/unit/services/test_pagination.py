"""Keyset cursors: a cursor that is not one of ours is a 400 problem, never a crash."""

from __future__ import annotations

import base64

import pytest

from portcullis.identity.key_repository import InvalidCursor, decode_cursor
from portcullis.services.errors import INVALID_CURSOR, ServiceError
from portcullis.services.pagination import SortKey, paginate

DEEP = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode().rstrip("=")
ITEMS = [{"name": "a"}, {"name": "b"}]


@pytest.mark.parametrize("cursor", ["!!!", "bm90IGpzb24", DEEP])
def test_a_foreign_cursor_is_an_invalid_cursor_problem(cursor: str) -> None:
    with pytest.raises(ServiceError) as refused:
        paginate(ITEMS, lambda i: i["name"], [SortKey("name", False)], limit=1, cursor=cursor)
    assert refused.value.kind is INVALID_CURSOR
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor, "created_at", True)
