"""Sorting, tag filtering and keyset (cursor) pagination over in-memory entity lists.

Gateway entities live in one config document, so a page is cut from a sorted
list rather than by SQL. The cursor is keyset-based, not an offset: it carries
the sort key of the last item returned, so inserts and deletes between two page
requests never make a client skip or repeat an item that was there all along.
The entity's identity is the final sort key, which makes the order total.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import total_ordering
from typing import Any

from portcullis.services.errors import INVALID_CURSOR, ServiceError, invalid

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class SortKey:
    field: str
    descending: bool


def sort_pattern(allowed: Sequence[str]) -> str:
    """The regular expression (for the OpenAPI description) of a valid `sort` value."""
    field = "-?(?:" + "|".join(re.escape(a) for a in allowed) + ")"
    return f"^{field}(?:,{field})*$"


def parse_sort(raw: str | None, allowed: Sequence[str], default: str) -> tuple[SortKey, ...]:
    """`-priority,name` → keys; unknown fields are a 422 naming the allowed ones.

    A field named again is ignored (its first mention decides its direction).
    """
    text = raw if raw else default
    keys: list[SortKey] = []
    seen: set[str] = set()
    for part in (p.strip() for p in text.split(",")):
        descending = part.startswith("-")
        name = part[1:] if descending else part
        if name not in allowed:
            raise invalid([("#", f"sort: unknown field {name!r} (allowed: {', '.join(allowed)})")])
        if name not in seen:
            seen.add(name)
            keys.append(SortKey(name, descending))
    return tuple(keys)


def sort_text(keys: Sequence[SortKey]) -> str:
    return ",".join(("-" if k.descending else "") + k.field for k in keys)


@total_ordering
class _Descending:
    """Inverts the order of the wrapped (comparable) value."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and self.value == other.value

    def __lt__(self, other: _Descending) -> bool:
        return bool(other.value < self.value)

    def __hash__(self) -> int:
        return hash(self.value)


def _component(value: Any, descending: bool) -> Any:
    # None sorts after every value (ascending) and before them (descending); bools and
    # numbers compare as numbers, everything else as its JSON text, so mixed types never raise.
    if value is None:
        part: tuple[Any, ...] = (1, 0, "")
    elif isinstance(value, bool | int | float):
        part = (0, 0, float(value))
    else:
        part = (0, 1, value if isinstance(value, str) else json.dumps(value, sort_keys=True))
    return _Descending(part) if descending else part


def _sort_tuple(values: Sequence[Any], identity: str, keys: Sequence[SortKey]) -> tuple[Any, ...]:
    return (*(_component(v, k.descending) for v, k in zip(values, keys, strict=True)), identity)


@dataclass(frozen=True, slots=True)
class Page:
    """One page: its items, the cursor of the next page, and (for faces that give every
    item a cursor, as GraphQL connections do) the cursor that resumes after an item."""

    items: list[dict[str, Any]]
    next_cursor: str | None
    cursor_of: Callable[[dict[str, Any]], str] | None = None


def _cursor_function(
    identity_of: Callable[[dict[str, Any]], str], keys: Sequence[SortKey]
) -> Callable[[dict[str, Any]], str]:
    def cursor_of(item: dict[str, Any]) -> str:
        return encode_cursor([item.get(k.field) for k in keys], identity_of(item), keys)

    return cursor_of


def encode_cursor(values: Sequence[Any], identity: str, keys: Sequence[SortKey]) -> str:
    raw = json.dumps({"s": sort_text(keys), "v": list(values), "id": identity}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, keys: Sequence[SortKey]) -> tuple[list[Any], str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise ServiceError(INVALID_CURSOR, "the cursor is not one this API issued") from exc
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("v"), list)
        or not isinstance(data.get("id"), str)
        or len(data["v"]) != len(keys)
    ):
        raise ServiceError(INVALID_CURSOR, "the cursor is not one this API issued")
    if data.get("s") != sort_text(keys):
        raise ServiceError(
            INVALID_CURSOR, "the cursor belongs to another sort order; repeat the same 'sort'"
        )
    return data["v"], data["id"]


def paginate(
    items: Sequence[dict[str, Any]],
    identity_of: Callable[[dict[str, Any]], str],
    keys: Sequence[SortKey],
    *,
    limit: int,
    cursor: str | None,
) -> Page:
    """Sort `items` by `keys` (then identity) and cut the page after `cursor`."""

    def values(item: dict[str, Any]) -> list[Any]:
        return [item.get(k.field) for k in keys]

    ordered = sorted(items, key=lambda i: _sort_tuple(values(i), identity_of(i), keys))
    if cursor:
        after_values, after_id = _decode_cursor(cursor, keys)
        after = _sort_tuple(after_values, after_id, keys)
        ordered = [i for i in ordered if _sort_tuple(values(i), identity_of(i), keys) > after]
    page = ordered[:limit]
    next_cursor = None
    if len(ordered) > limit:
        last = page[-1]
        next_cursor = encode_cursor(values(last), identity_of(last), keys)
    return Page(page, next_cursor, _cursor_function(identity_of, keys))


class SortedIndex:
    """Items sorted once by `keys` (then identity), for pages cut by keyset cursors.

    A page is found by bisecting to the cursor and scanning forward while items pass
    the filter, so it costs O(log n + what the filter skips), not a sort of every item.
    The items are shared: callers must not mutate them.
    """

    __slots__ = ("_cursor_of", "_identity_of", "_items", "_keys", "_tuples")

    def __init__(
        self,
        items: Sequence[dict[str, Any]],
        identity_of: Callable[[dict[str, Any]], str],
        keys: Sequence[SortKey],
    ) -> None:
        self._keys = tuple(keys)
        self._identity_of = identity_of
        self._cursor_of = _cursor_function(identity_of, self._keys)
        decorated = sorted(
            (
                (_sort_tuple([item.get(k.field) for k in keys], identity_of(item), keys), i)
                for i, item in enumerate(items)
            ),
            key=lambda pair: pair[0],
        )
        self._tuples = [t for t, _ in decorated]
        self._items = [items[i] for _, i in decorated]

    def _tuple(self, item: dict[str, Any]) -> tuple[Any, ...]:
        values = [item.get(k.field) for k in self._keys]
        return _sort_tuple(values, self._identity_of(item), self._keys)

    def changed(
        self, removed: Sequence[dict[str, Any]], added: Sequence[dict[str, Any]]
    ) -> SortedIndex | None:
        """This index without `removed` and with `added` (a new index; this one is left as
        it is): O(n) copying plus O(log n) per change instead of a sort. None when an item
        to remove is not found (identities must be unique: not for plugins)."""
        out = SortedIndex.__new__(SortedIndex)
        out._keys, out._identity_of, out._cursor_of = self._keys, self._identity_of, self._cursor_of
        tuples, items = list(self._tuples), list(self._items)
        for item in removed:
            key = self._tuple(item)
            i = bisect.bisect_left(tuples, key)
            if i == len(tuples) or tuples[i] != key:
                return None
            del tuples[i], items[i]
        for item in added:
            key = self._tuple(item)
            i = bisect.bisect_left(tuples, key)
            if i < len(tuples) and tuples[i] == key:
                return None
            tuples.insert(i, key)
            items.insert(i, item)
        out._tuples, out._items = tuples, items
        return out

    def page(
        self, matches: Callable[[dict[str, Any]], bool], *, limit: int, cursor: str | None
    ) -> Page:
        """The first `limit` matching items after `cursor`, and the next cursor if any."""
        start = 0
        if cursor:
            after_values, after_id = _decode_cursor(cursor, self._keys)
            start = bisect.bisect_right(
                self._tuples, _sort_tuple(after_values, after_id, self._keys)
            )
        page: list[dict[str, Any]] = []
        last = -1
        for i in range(start, len(self._items)):
            item = self._items[i]
            if not matches(item):
                continue
            if len(page) == limit:
                previous = self._items[last]
                values = [previous.get(k.field) for k in self._keys]
                identity = str(self._tuples[last][-1])
                return Page(page, encode_cursor(values, identity, self._keys), self._cursor_of)
            page.append(item)
            last = i
        return Page(page, None, self._cursor_of)


def parse_int_cursor(cursor: str) -> int:
    """A numeric cursor (an id or version to continue below); 400 when it is not one."""
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 18:
        raise ServiceError(INVALID_CURSOR, "the cursor is not one this API issued")
    return int(cursor)


def has_tags(item: dict[str, Any], wanted: Sequence[str]) -> bool:
    """True when the item carries every wanted tag."""
    tags = item.get("tags") or []
    return all(t in tags for t in wanted)


def split_csv(raw: str | None) -> list[str]:
    return [p.strip() for p in raw.split(",") if p.strip()] if raw else []
