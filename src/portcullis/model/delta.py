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

`revalidate` is the other half: given a validated config, its canonical document
and a changed copy of that document, it validates only the entries that changed
and reuses the models of the rest, then runs the cross-reference check over the
whole config. Admin edits (services/config_editor.py) and data-plane reloads
(runtime/watcher.py) both use it, so an edit costs O(change) plus one pass of
reference checks instead of validating 50,000 consumers again.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from portcullis.model.config import GatewayConfig
from portcullis.model.loader import ENTITY_LISTS

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
            splice = splice_of(old_value, new_value)
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


def splice_of(old: list[Any], new: list[Any]) -> list[Any] | None:
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


def revalidate(
    config: GatewayConfig, document: Document, changed: Document
) -> tuple[GatewayConfig, Document] | None:
    """The config of `changed` (an edited copy of `config`'s canonical `document`) and
    its canonical document, or None when this path can't vouch for it (an entry that
    does not validate, a broken reference, a member other than an entity list that
    changed): the caller then validates `changed` whole, which reports every problem.

    Lists that are the same object as in `document` keep their models; in a changed
    list only the slice between the common prefix and suffix is validated.
    """
    if changed.keys() != document.keys():
        return None
    fields: dict[str, Any] = {}
    canonical: Document = {}
    for key, value in changed.items():
        old = document[key]
        models = getattr(config, key)
        if value is old:
            fields[key], canonical[key] = models, old
            continue
        if key not in ENTITY_LISTS or not isinstance(old, list) or not isinstance(value, list):
            if value != old:
                return None
            fields[key], canonical[key] = models, old
            continue
        splice = splice_of(old, value)
        if splice is None:
            fields[key], canonical[key] = models, old
            continue
        start, end, entries = splice
        try:
            validated = [ENTITY_LISTS[key].model_validate(e) for e in entries]
        except ValidationError:
            return None
        fields[key] = [*models[:start], *validated, *models[end:]]
        canonical[key] = [*old[:start], *(m.model_dump(mode="json") for m in validated), *old[end:]]
    result = GatewayConfig.model_construct(**fields)
    try:
        # The pydantic mypy plugin types a model validator as its decorator proxy.
        result._references()  # type: ignore[operator]
    except ValueError:
        return None
    return result, canonical
