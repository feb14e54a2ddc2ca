"""Header, query-string and JSON-body edits shared by request- and response-transformer.

Every kind of target takes the same four operations, applied in this order:

1. `remove`: names (or dotted JSON paths) to delete;
2. `rename`: `{old: new}`; every field called `old` is renamed `new` (values kept);
3. `set`: `{name: value}`; replaces every existing value, or creates it;
4. `add`: `{name: value}`; only when nothing by that name exists yet.

Everything is validated and precompiled when the config is loaded: header names are
lower-cased tokens, values are checked for control characters, JSON paths are split
into keys. Applying an edit allocates only what it rewrites.

JSON paths are dot-separated object keys (`user.address.city`); a path walks objects
only (an array or a scalar on the way makes the operation a no-op), `set` and `add`
create missing intermediate objects. Keys containing a dot cannot be addressed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from portcullis.model.plugins.transforms import (
    HeaderOps,
    JsonOps,
    QueryOps,
    header_name,
    header_value,
)
from portcullis.plugins.base import Headers


class HeaderEditor:
    """Applies `HeaderOps` to a header list in place, in one pass plus the appends."""

    __slots__ = ("_add", "_remove", "_rename", "_set", "_set_names", "active")

    def __init__(self, ops: HeaderOps, forbidden: frozenset[str]) -> None:
        def name(n: str) -> bytes:
            return header_name(n, forbidden).encode()

        def value(v: str) -> bytes:
            return header_value(v).encode("latin-1")

        self._remove = frozenset(name(n) for n in ops.remove)
        self._rename = {name(old): name(new) for old, new in ops.rename.items()}
        self._set = [(name(n), value(v)) for n, v in ops.set.items()]
        self._set_names = frozenset(n for n, _ in self._set)
        self._add = [(name(n), value(v)) for n, v in ops.add.items()]
        self.active = bool(self._remove or self._rename or self._set or self._add)

    def apply(self, headers: Headers) -> None:
        if self._remove or self._rename or self._set_names:
            remove, rename, replaced = self._remove, self._rename, self._set_names
            out: Headers = []
            for n, v in headers:
                if n in remove:
                    continue
                new = rename.get(n)
                if new is not None:
                    n = new
                if n in replaced:
                    continue
                out.append((n, v))
            out.extend(self._set)
            headers[:] = out
        if self._add:
            present = {n for n, _ in headers}
            headers.extend(h for h in self._add if h[0] not in present)


def _encode_param(name: str) -> bytes:
    return quote_plus(name, safe="").encode("ascii")


class QueryEditor:
    """Applies `QueryOps` to a raw query string; untouched parameters keep their bytes."""

    __slots__ = ("_add", "_remove", "_rename", "_set", "_set_names", "active")

    def __init__(self, ops: QueryOps) -> None:
        self._remove = frozenset(ops.remove)
        self._rename = {old: (new, _encode_param(new)) for old, new in ops.rename.items()}
        self._set = [(n, _encode_param(n) + b"=" + _encode_param(v)) for n, v in ops.set.items()]
        self._set_names = frozenset(n for n, _ in self._set)
        self._add = [(n, _encode_param(n) + b"=" + _encode_param(v)) for n, v in ops.add.items()]
        self.active = bool(self._remove or self._rename or self._set or self._add)

    def apply(self, query: bytes) -> bytes:
        out: list[bytes] = []
        names: set[str] = set()
        for part in query.split(b"&"):
            if not part:
                continue
            raw_name, eq, raw_value = part.partition(b"=")
            name = unquote_plus(raw_name.decode("latin-1"))
            if name in self._remove:
                continue
            renamed = self._rename.get(name)
            if renamed is not None:
                name, encoded = renamed
                part = encoded + eq + raw_value
            if name in self._set_names:
                continue
            names.add(name)
            out.append(part)
        out.extend(part for _, part in self._set)
        out.extend(part for n, part in self._add if n not in names)
        return b"&".join(out)


_MISSING = object()


def _walk(doc: dict[str, Any], keys: list[str], create: bool) -> dict[str, Any] | None:
    """The object holding the last key of `keys`, or None when the path leaves objects."""
    node: Any = doc
    for key in keys[:-1]:
        nxt = node.get(key, _MISSING)
        if nxt is _MISSING:
            if not create:
                return None
            nxt = {}
            node[key] = nxt
        if not isinstance(nxt, dict):
            return None
        node = nxt
    return node if isinstance(node, dict) else None


def _fresh(value: Any) -> Any:
    """A copy of a configured value that the document may own (containers are copied)."""
    return copy.deepcopy(value) if isinstance(value, dict | list) else value


class JsonEditor:
    """Applies `JsonOps` to a parsed JSON object in place."""

    __slots__ = ("_add", "_remove", "_rename", "_set")

    def __init__(self, ops: JsonOps) -> None:
        self._remove = [p.split(".") for p in ops.remove]
        self._rename = [(old.split("."), new.split(".")) for old, new in ops.rename.items()]
        self._set = [(p.split("."), v) for p, v in ops.set.items()]
        self._add = [(p.split("."), v) for p, v in ops.add.items()]

    def apply(self, doc: dict[str, Any]) -> None:
        for keys in self._remove:
            parent = _walk(doc, keys, create=False)
            if parent is not None:
                parent.pop(keys[-1], None)
        for old, new in self._rename:
            parent = _walk(doc, old, create=False)
            if parent is None or old[-1] not in parent:
                continue
            value = parent.pop(old[-1])
            target = _walk(doc, new, create=True)
            if target is not None:
                target[new[-1]] = value
        for keys, value in self._set:
            target = _walk(doc, keys, create=True)
            if target is not None:
                target[keys[-1]] = _fresh(value)
        for keys, value in self._add:
            target = _walk(doc, keys, create=True)
            if target is not None and keys[-1] not in target:
                target[keys[-1]] = _fresh(value)

    def transform(self, body: bytes) -> bytes | None:
        """The edited body, or None when it is not a JSON object (left untouched)."""
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if not isinstance(doc, dict):
            return None
        self.apply(doc)
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def is_json(content_type: bytes | None) -> bool:
    """True for `application/json` and any `+json` media type, parameters ignored."""
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def first(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header `name` (lower-case), or None."""
    for n, v in headers:
        if n == name:
            return v
    return None


def identity_encoded(headers: Headers) -> bool:
    """True when the body is not content-coded (gzip etc.): JSON edits are possible."""
    coding = first(headers, b"content-encoding")
    return coding is None or coding.strip().lower() in (b"", b"identity")
