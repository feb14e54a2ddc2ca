"""Deltas between two canonical config documents, at the granularity of entities.

A canonical document (`GatewayConfig.canonical()`) is a mapping of a few scalar
members (`format_version`) and entity lists (`services`, `routes`, `consumers` …).
The delta of two documents says, per entity list, which one slice of the old list
is replaced by which entries (`splice`: `[start, end, entries]`, found by trimming
the common prefix and suffix), and which other members changed (`set`). An admin
edit changes one entity, so its delta holds that entity and two numbers; an import
that rewrites everything gives a delta as big as the document, and the repository
stores a keyframe instead.

Deltas never alias the documents they are applied to: `apply_delta` copies the
lists it changes and shares the untouched entries, which nobody mutates (canonical
documents are treated as immutable once stored or cached).
"""

from __future__ import annotations

from typing import Any

Document = dict[str, Any]
Delta = dict[str, Any]


def compute_delta(old: Document, new: Document) -> Delta | None:
    """What turns `old` into `new`; `{}` when they are equal, None when the members differ
    in a way a delta does not describe (a member added or removed: store a keyframe)."""
    if old.keys() != new.keys():
        return None
    splices: dict[str, list[Any]] = {}
    sets: dict[str, Any] = {}
    for key, new_value in new.items():
        old_value = old[key]
        if old_value is new_value:
            continue
        if isinstance(old_value, list) and isinstance(new_value, list):
            splice = _splice(old_value, new_value)
            if splice is not None:
                splices[key] = splice
        elif old_value != new_value:
            sets[key] = new_value
    delta: Delta = {}
    if splices:
        delta["splice"] = splices
    if sets:
        delta["set"] = sets
    return delta


def _splice(old: list[Any], new: list[Any]) -> list[Any] | None:
    """`[start, end, entries]` such that old[:start] + entries + old[end:] == new (None: equal)."""
    limit = min(len(old), len(new))
    start = 0
    while start < limit and (old[start] is new[start] or old[start] == new[start]):
        start += 1
    if start == len(old) == len(new):
        return None
    tail = 0
    while tail < limit - start and (
        old[-1 - tail] is new[-1 - tail] or old[-1 - tail] == new[-1 - tail]
    ):
        tail += 1
    return [start, len(old) - tail, new[start : len(new) - tail]]


def apply_delta(base: Document, delta: Delta) -> Document:
    """The document `delta` makes of `base` (a new mapping; `base` is left unchanged)."""
    out = dict(base)
    for key, (start, end, entries) in delta.get("splice", {}).items():
        items = list(out[key])
        items[start:end] = entries
        out[key] = items
    out.update(delta.get("set", {}))
    return out
