"""Pure helpers of the admin API: merge patch, preconditions, redaction, cursors, CSV cells."""

from __future__ import annotations

from typing import Any

import pytest

from portcullis.admin.export import csv_cell
from portcullis.services.audit import REDACTED, changes, redact
from portcullis.services.errors import ServiceError
from portcullis.services.pagination import paginate, parse_sort
from portcullis.services.preconditions import Precondition, check_if_match, etag_of, merge_patch


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        # RFC 7396 appendix A examples.
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7396_examples(target: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(target, patch) == expected


def test_if_match() -> None:
    tag = etag_of({"a": 1})
    assert tag == etag_of({"a": 1}) != etag_of({"a": 2})
    check_if_match(None, tag)
    check_if_match(tag, tag)
    check_if_match(f'"x", {tag}', tag)
    check_if_match("*", tag)
    for bad, current in (('"x"', tag), ("W/" + tag, tag), ("*", None)):
        with pytest.raises(ServiceError) as caught:
            check_if_match(bad, current)
        assert caught.value.kind.status == 412


def test_precondition_checks_the_state_the_store_hands_it_and_remembers_it() -> None:
    precondition = Precondition(etag_of({"v": 1}), lambda state: etag_of(state))
    precondition({"v": 1})
    assert precondition.seen == {"v": 1}
    for changed in ({"v": 2}, None):  # changed meanwhile, or gone
        with pytest.raises(ServiceError) as caught:
            precondition(changed)
        assert caught.value.kind.status == 412
        assert precondition.seen == changed
    unconditional = Precondition[dict[str, int]](None, etag_of)
    unconditional(None)  # no If-Match: a missing resource is the write's own 404
    unconditional({"v": 3})
    assert unconditional.seen == {"v": 3}


def test_redact_hides_secret_looking_keys_at_any_depth() -> None:
    value = {
        "name": "x",
        "config": {"client_secret": "s1", "nested": [{"password": "p"}], "key": "k"},
        "api_key": "a",
        "token": None,
        "hash_on_header": "x-user",
    }
    assert redact(value) == {
        "name": "x",
        "config": {"client_secret": REDACTED, "nested": [{"password": REDACTED}], "key": REDACTED},
        "api_key": REDACTED,
        "token": None,
        "hash_on_header": "x-user",
    }


def test_changes_lists_changed_leaves_as_pointers() -> None:
    before = {"a": 1, "b": {"c": 2, "d/e": 3}, "gone": True}
    after = {"a": 1, "b": {"c": 5, "d/e": 3}, "new": [1]}
    assert list(changes(before, after)) == [
        {"path": "/b/c", "old": 2, "new": 5},
        {"path": "/gone", "old": True, "new": None},
        {"path": "/new", "old": None, "new": [1]},
    ]


def test_sort_and_cursor_with_mixed_values() -> None:
    items = [
        {"name": "a", "priority": 5, "url": None},
        {"name": "b", "priority": 1, "url": "http://x"},
        {"name": "c", "priority": 5, "url": "http://a"},
        {"name": "d", "priority": 1, "url": None},
    ]
    keys = parse_sort("-priority,url", ("name", "priority", "url"), "name")
    pages, cursor = [], None
    while True:
        page = paginate(items, lambda i: str(i["name"]), keys, limit=1, cursor=cursor)
        pages += [i["name"] for i in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    # Descending priority; within it URLs ascending with nulls last.
    assert pages == ["c", "a", "b", "d"]
    assert parse_sort("-name,name", ("name",), "name") == parse_sort("-name", ("name",), "x")
    for bad in ("colour", "+name", "--name", ""):
        with pytest.raises(ServiceError):
            parse_sort(bad or ",", ("name",), "name")


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=SUM(A1)", "'=SUM(A1)"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@x", "'@x"),
        ("ok", "ok"),
        (None, ""),
        (7, "7"),
    ],
)
def test_csv_cells_cannot_become_formulas(value: Any, cell: str) -> None:
    assert csv_cell(value) == cell
