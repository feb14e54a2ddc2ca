"""`SortedIndex` cuts the same pages as `paginate`, for every sort, filter and cursor."""

from __future__ import annotations

import random
from typing import Any

from portcullis.services.pagination import SortedIndex, paginate, parse_sort


def items(n: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    return [
        {
            "name": f"e{i:03d}",
            "priority": rng.choice([None, 1, 2, 3]),
            "tags": rng.sample(["a", "b", "c"], rng.randint(0, 2)),
        }
        for i in range(n)
    ]


def name_of(item: dict[str, Any]) -> str:
    return str(item["name"])


def walk(fetch: Any) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = fetch(cursor)
        pages.append([i["name"] for i in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def test_pages_equal_those_of_paginate() -> None:
    data = items(120)
    for sort in ("name", "-priority,name", "priority"):
        keys = parse_sort(sort, ["name", "priority"], "name")
        index = SortedIndex(data, name_of, keys)
        for limit in (1, 7, 50, 500):
            for wanted in (None, "a"):

                def matches(item: dict[str, Any], tag: str | None = wanted) -> bool:
                    return tag is None or tag in item["tags"]

                filtered = [i for i in data if matches(i)]
                expected = walk(
                    lambda c, f=filtered, k=keys, n=limit: paginate(
                        f, name_of, k, limit=n, cursor=c
                    )
                )
                got = walk(lambda c, m=matches, n=limit, ix=index: ix.page(m, limit=n, cursor=c))
                assert got == expected, (sort, limit, wanted)
